//! App servers that bind their own port, recognized on an imported command
//! line and moved onto sockets appvisord holds: gunicorn (`-b/--bind`),
//! uWSGI (`--http`, `--http-socket`, `--socket`), daphne (`-b/-p/-u`) and
//! uvicorn (`--host/--port/--uds`).
//!
//! Under supervisord the server bound its port itself, often below 1024 or
//! as root; under appvisor the app's user and Landlock forbid that, so the
//! address becomes a `[[listen]]` and the server is pointed at the held
//! socket in its own way: gunicorn takes `LISTEN_FDS` without any bind,
//! uWSGI takes `fd://3`, daphne and uvicorn `--fd 3`. A server started
//! through a shell (`sh -c "... gunicorn -b ..."`) is not rewritten: its
//! ports become `bind_ports` and a note says what to change. Any other
//! program given `--port N` binds N itself, so N goes to `bind_ports` too,
//! as does uWSGI's stats server (`--stats`), which takes no inherited socket.
//!
//! Binds in a config file count too ([`config_file`]): gunicorn's `bind`
//! in its `-c` file (or `./gunicorn.conf.py`) becomes `[[listen]]`, since
//! gunicorn serves `LISTEN_FDS` whatever its file says; uWSGI's sockets in
//! its `--ini` file go to `bind_ports`, since no command line can take
//! them back.
//!
//! Pure: the caller reads the config file.

use crate::supervisord::ini::split_command;

/// A recognized server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    Gunicorn,
    Uwsgi,
    Daphne,
    Uvicorn,
}

impl Server {
    fn name(self) -> &'static str {
        match self {
            Server::Gunicorn => "gunicorn",
            Server::Uwsgi => "uWSGI",
            Server::Daphne => "daphne",
            Server::Uvicorn => "uvicorn",
        }
    }

    /// Whether it sends READY=1 on NOTIFY_SOCKET by itself.
    pub fn notifies(self) -> bool {
        matches!(self, Server::Gunicorn | Server::Uwsgi)
    }
}

/// What moving a command's server onto held sockets changes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Moved {
    pub server: Option<Server>,
    /// The command, rewritten to serve the held sockets.
    pub command: Vec<String>,
    /// `[[listen]]` addresses, in fd order (3, 4, ...).
    pub listen: Vec<String>,
    /// Ports the server still binds itself.
    pub bind_ports: Vec<u16>,
    pub notes: Vec<String>,
}

/// The word of `argv` that runs `server`, and which server: a program
/// named like one (`/srv/venv/bin/gunicorn`, `uwsgi_python3`), or
/// `python -m gunicorn`.
pub fn find_server(argv: &[String]) -> Option<(usize, Server)> {
    let by_name = |word: &str| {
        let base = word.rsplit('/').next().unwrap_or(word);
        match base {
            "gunicorn" => Some(Server::Gunicorn),
            "daphne" => Some(Server::Daphne),
            "uvicorn" => Some(Server::Uvicorn),
            b if b == "uwsgi" || b.starts_with("uwsgi_") => Some(Server::Uwsgi),
            _ => None,
        }
    };
    argv.iter().enumerate().find_map(|(i, word)| {
        if let Some(server) = by_name(word) {
            return Some((i, server));
        }
        (word == "-m")
            .then(|| argv.get(i + 1).and_then(|m| by_name(m)).map(|s| (i + 1, s)))
            .flatten()
    })
}

/// The script of `sh -c SCRIPT` (or bash, dash, zsh).
pub fn shell_script(argv: &[String]) -> Option<&str> {
    let base = argv.first()?.rsplit('/').next()?;
    if !matches!(base, "sh" | "bash" | "dash" | "zsh") {
        return None;
    }
    let c = argv.iter().position(|a| {
        a == "-c" || (a.starts_with('-') && !a.starts_with("--") && a.ends_with('c'))
    })?;
    argv.get(c + 1).map(String::as_str)
}

/// A file a server reads more of its options from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigFile {
    pub server: Server,
    /// As the command gives it: relative to the program's directory.
    pub path: String,
    /// gunicorn's `gunicorn.conf.py`, which it reads from its directory
    /// only when it exists and no `-c` names another.
    pub optional: bool,
}

/// The binds a server's config file sets, as the importer read them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigBinds {
    /// The file, as notes name it.
    pub file: String,
    /// `(option, address)` as the file gives them, or why they could not
    /// be read.
    pub binds: Result<Vec<(String, String)>, String>,
}

/// The config file the server of `argv` reads its binds from: gunicorn's
/// `-c/--config FILE` (else its default `gunicorn.conf.py`), uWSGI's
/// `--ini FILE` or a bare `FILE.ini`.
pub fn config_file(argv: &[String]) -> Option<ConfigFile> {
    let (at, server) = find_server(argv)?;
    let args = &argv[at + 1..];
    let value_of = |options: &[&str]| {
        args.iter().enumerate().find_map(|(i, word)| {
            options.iter().find_map(|opt| {
                if word == opt {
                    args.get(i + 1).cloned()
                } else {
                    word.strip_prefix(&format!("{opt}=")).map(str::to_owned)
                }
            })
        })
    };
    match server {
        Server::Gunicorn => Some(match value_of(&["-c", "--config"]) {
            Some(path) => ConfigFile {
                server,
                path,
                optional: false,
            },
            None => ConfigFile {
                server,
                path: "gunicorn.conf.py".to_owned(),
                optional: true,
            },
        }),
        Server::Uwsgi => value_of(&["--ini"])
            .or_else(|| {
                args.iter()
                    .find(|a| !a.starts_with('-') && a.ends_with(".ini"))
                    .cloned()
            })
            .map(|path| ConfigFile {
                server,
                path,
                optional: false,
            }),
        Server::Daphne | Server::Uvicorn => None,
    }
}

/// The binds `text`, a config file of `server`, sets: gunicorn's `bind`
/// (a string or a list of strings; the last assignment wins), uWSGI's
/// socket options in `[uwsgi]`.
pub fn binds_in_config(server: Server, text: &str) -> Result<Vec<(String, String)>, String> {
    match server {
        Server::Gunicorn => {
            let mut found = Vec::new();
            for line in text.lines() {
                // Only top-level assignments: `bind = ...`, not `bind_x`.
                let Some(value) = line
                    .strip_prefix("bind")
                    .map(str::trim_start)
                    .and_then(|rest| rest.strip_prefix('='))
                    .filter(|rest| !rest.starts_with('='))
                else {
                    continue;
                };
                found = python_strings(value.trim())
                    .ok_or_else(|| {
                        format!(
                            "bind = {} is not a string or a list of strings",
                            value.trim()
                        )
                    })?
                    .into_iter()
                    .map(|b| ("bind".to_owned(), b))
                    .collect();
            }
            Ok(found)
        }
        Server::Uwsgi => {
            const SOCKETS: &[&str] = &[
                "socket",
                "uwsgi-socket",
                "http-socket",
                "http",
                "https",
                "fastcgi-socket",
                "scgi-socket",
                "shared-socket",
                "stats",
                "stats-server",
            ];
            let options = crate::uwsgi::options(text);
            Ok(options
                .into_iter()
                .filter(|(key, _, _)| SOCKETS.contains(&key.as_str()))
                .map(|(key, value, _)| {
                    // https = ADDR,CERT,KEY
                    let addr = value.split(',').next().unwrap_or_default().to_owned();
                    (key, addr)
                })
                .collect())
        }
        Server::Daphne | Server::Uvicorn => Ok(Vec::new()),
    }
}

/// A Python string literal or a list or tuple of them, with an optional
/// trailing comment: `"a"`, `['a', "b"]`, `("a",)`.
fn python_strings(value: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut chars = value.chars().peekable();
    let list_end = match chars.peek() {
        Some('[') => Some(']'),
        Some('(') => Some(')'),
        _ => None,
    };
    if list_end.is_some() {
        chars.next();
    }
    loop {
        while chars.next_if(|c| c.is_whitespace() || *c == ',').is_some() {}
        match chars.next() {
            Some(q @ ('"' | '\'')) => {
                let s: String = chars.by_ref().take_while(|c| *c != q).collect();
                if s.contains('\\') {
                    return None;
                }
                out.push(s);
                if list_end.is_none() {
                    break;
                }
            }
            Some(c) if Some(c) == list_end => break,
            _ => return None,
        }
    }
    let rest: String = chars.collect();
    let rest = rest.trim();
    (rest.is_empty() || rest.starts_with('#')).then_some(out)
}

/// Moves the server of `argv` onto held sockets. `config` is what the
/// importer read of the server's config file ([`config_file`]), if it
/// reads one.
pub fn move_to_held_sockets(argv: &[String], config: Option<&ConfigBinds>) -> Moved {
    let mut moved = Moved {
        command: argv.to_vec(),
        ..Moved::default()
    };
    if let Some((at, server)) = find_server(argv) {
        moved.server = Some(server);
        let (head, args) = argv.split_at(at + 1);
        let (args, binds) = take_binds(server, args, config);
        config_notes(server, &binds, config, &mut moved);
        let mut command = head.to_vec();
        let to_fd = |fd: usize, bind: &Bind| -> Option<Vec<String>> {
            match (server, bind.kind) {
                // gunicorn serves LISTEN_FDS and ignores its binds.
                (Server::Gunicorn, _) => Some(Vec::new()),
                (Server::Uwsgi, BindKind::UwsgiHttp) => {
                    Some(vec!["--http-socket".into(), format!("fd://{fd}")])
                }
                (Server::Uwsgi, BindKind::UwsgiHttpSocket) => {
                    Some(vec!["--http-socket".into(), format!("fd://{fd}")])
                }
                (Server::Uwsgi, BindKind::UwsgiSocket) => {
                    Some(vec!["--socket".into(), format!("fd://{fd}")])
                }
                // daphne and uvicorn take one fd.
                (Server::Daphne | Server::Uvicorn, _) if fd == 3 => {
                    Some(vec!["--fd".into(), "3".into()])
                }
                _ => None,
            }
        };
        let mut kept: Vec<String> = Vec::new();
        for bind in &binds {
            match address(&bind.address) {
                Ok(addr) => {
                    let fd = 3 + moved.listen.len();
                    match to_fd(fd, bind) {
                        Some(words) => {
                            command.extend(words);
                            moved.listen.push(addr);
                        }
                        None => {
                            kept.extend(bind.words.iter().cloned());
                            moved.bind_ports.extend(port_of(&addr));
                            moved.notes.push(format!(
                                "{} binds {} itself: appvisor passes it only one held socket",
                                server.name(),
                                bind.address
                            ));
                        }
                    }
                }
                Err(why) => {
                    kept.extend(bind.words.iter().cloned());
                    moved.notes.push(format!(
                        "{} {}: {why}; left as it was",
                        bind.words[0], bind.address
                    ));
                }
            }
        }
        command.extend(kept);
        if server == Server::Uwsgi {
            stats_server(&args, &mut moved);
        }
        command.extend(args);
        if server == Server::Uwsgi
            && binds.iter().any(|b| b.kind == BindKind::UwsgiHttp)
            && !moved.listen.is_empty()
        {
            moved.notes.push(
                "uWSGI's --http router became --http-socket on the held socket: the workers \
                 speak HTTP themselves"
                    .to_owned(),
            );
        }
        if !moved.listen.is_empty() {
            moved.notes.push(format!(
                "{} binds none of its sockets itself: appvisord holds {} and passes {}",
                server.name(),
                moved.listen.join(", "),
                if server == Server::Gunicorn {
                    "them as LISTEN_FDS".to_owned()
                } else {
                    "them from fd 3 on".to_owned()
                }
            ));
        }
        moved.command = command;
        return moved;
    }
    // A server inside a shell script is not rewritten, only found.
    let script_words = shell_script(argv).and_then(split_command);
    if let Some(words) = &script_words {
        if let Some((at, server)) = find_server(words) {
            moved.server = Some(server);
            let (_, binds) = take_binds(server, &words[at + 1..], None);
            for bind in binds {
                if let Ok(addr) = address(&bind.address) {
                    moved.bind_ports.extend(port_of(&addr));
                }
            }
            moved.notes.push(format!(
                "{} runs through a shell, so its binds are left as they are and its ports \
                 are in bind_ports; run it directly with [[listen]] to get held sockets",
                server.name()
            ));
            return moved;
        }
    }
    // Any other program given --port binds that port itself (a Tornado or
    // aiohttp app, a Flask dev server): Landlock lets it only ports in
    // bind_ports.
    for port in own_ports(script_words.as_deref().unwrap_or(argv)) {
        moved.bind_ports.push(port);
        moved.notes.push(bind_port_note(
            &format!("--port {port}: the program binds it itself, so"),
            port,
        ));
    }
    moved
}

/// uWSGI's stats server (`--stats ADDR`), which it binds itself and
/// which takes no inherited socket: a TCP port goes to `bind_ports`, a
/// Unix socket needs its directory writable.
fn stats_server(args: &[String], moved: &mut Moved) {
    for (i, word) in args.iter().enumerate() {
        let value = match word.as_str() {
            "--stats" | "--stats-server" => args.get(i + 1).map(String::as_str),
            _ => word
                .strip_prefix("--stats=")
                .or_else(|| word.strip_prefix("--stats-server=")),
        };
        if let Some(value) = value {
            uwsgi_binds_itself(&format!("--stats {value}"), value, moved);
        }
    }
}

/// A socket uWSGI binds itself (its stats server, a socket in its ini),
/// given as `what`: a TCP port goes to `bind_ports`; a Unix socket's
/// directory must be writable.
fn uwsgi_binds_itself(what: &str, value: &str, moved: &mut Moved) {
    match address(value) {
        Ok(addr) if addr.starts_with("unix:") => moved.notes.push(format!(
            "{what}: uWSGI creates the socket itself, in a directory the app must be able to \
             write (sandbox read_write)"
        )),
        Ok(addr) => {
            if let Some(port) = port_of(&addr) {
                moved.bind_ports.push(port);
                moved.notes.push(bind_port_note(
                    &format!("{what}: uWSGI binds it itself, so"),
                    port,
                ));
            }
        }
        Err(why) => moved
            .notes
            .push(format!("{what}: {why}; uWSGI binds it itself")),
    }
}

/// The ports a program is given as `--port N` or `--port=N`.
fn own_ports(argv: &[String]) -> Vec<u16> {
    let mut ports = Vec::new();
    for (i, word) in argv.iter().enumerate() {
        let value = match word.strip_prefix("--port") {
            Some("") => argv.get(i + 1).map(String::as_str),
            Some(rest) => rest.strip_prefix('='),
            None => None,
        };
        if let Some(port) = value.and_then(|v| v.parse::<u16>().ok()) {
            if !ports.contains(&port) {
                ports.push(port);
            }
        }
    }
    ports
}

/// The note on a port the app binds itself: `bind_ports` lets Landlock
/// allow it, but a port below 1024 also needs root, which the app is not.
fn bind_port_note(what: &str, port: u16) -> String {
    if port < 1024 {
        format!(
            "{what} bind_ports = [{port}]; but {port} is below 1024, which only root may bind: \
             give the app a port of 1024 or more, or [[listen]] if it can take a socket"
        )
    } else {
        format!("{what} bind_ports = [{port}] lets it (Landlock refuses any other bind)")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BindKind {
    Gunicorn,
    UwsgiHttp,
    UwsgiHttpSocket,
    UwsgiSocket,
    /// daphne's or uvicorn's host and port, put together.
    HostPort,
    /// daphne `-u`, uvicorn `--uds`.
    Unix,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Bind {
    kind: BindKind,
    /// `HOST:PORT`, `:PORT`, `unix:PATH` or a path.
    address: String,
    /// The words it was given as, to keep them when it cannot move.
    words: Vec<String>,
}

/// Splits the server's arguments into the rest and its binds, in order;
/// gunicorn's come from its config file when its command line has none.
fn take_binds(
    server: Server,
    args: &[String],
    config: Option<&ConfigBinds>,
) -> (Vec<String>, Vec<Bind>) {
    let options: &[(&str, BindKind)] = match server {
        Server::Gunicorn => &[("-b", BindKind::Gunicorn), ("--bind", BindKind::Gunicorn)],
        Server::Uwsgi => &[
            ("--http", BindKind::UwsgiHttp),
            ("--http-socket", BindKind::UwsgiHttpSocket),
            ("--socket", BindKind::UwsgiSocket),
            ("--uwsgi-socket", BindKind::UwsgiSocket),
            ("-s", BindKind::UwsgiSocket),
        ],
        Server::Daphne => &[
            ("-b", BindKind::HostPort),
            ("--bind", BindKind::HostPort),
            ("-p", BindKind::HostPort),
            ("--port", BindKind::HostPort),
            ("-u", BindKind::Unix),
            ("--unix-socket", BindKind::Unix),
        ],
        Server::Uvicorn => &[
            ("--host", BindKind::HostPort),
            ("--port", BindKind::HostPort),
            ("--uds", BindKind::Unix),
        ],
    };
    let mut rest = Vec::new();
    let mut binds = Vec::new();
    let (mut host, mut port): (Option<String>, Option<String>) = (None, None);
    let mut host_port_words = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let word = &args[i];
        let found = options.iter().find_map(|(opt, kind)| {
            if word == opt {
                args.get(i + 1)
                    .map(|v| (v.clone(), vec![word.clone(), v.clone()], 2, *opt, *kind))
            } else if let Some(v) = word.strip_prefix(&format!("{opt}=")) {
                Some((v.to_owned(), vec![word.clone()], 1, *opt, *kind))
            } else if opt.len() == 2
                && word.starts_with(opt)
                && word.len() > 2
                && !word.starts_with("--")
            {
                Some((word[2..].to_owned(), vec![word.clone()], 1, *opt, *kind))
            } else {
                None
            }
        });
        match found {
            Some((value, words, used, opt, BindKind::HostPort)) => {
                if opt.ends_with('p') || opt.ends_with("port") {
                    port = Some(value);
                } else {
                    host = Some(value);
                }
                host_port_words.extend(words);
                i += used;
            }
            Some((value, words, used, _, kind)) => {
                let address = if kind == BindKind::Unix {
                    format!("unix:{value}")
                } else {
                    value
                };
                binds.push(Bind {
                    kind,
                    address,
                    words,
                });
                i += used;
            }
            None => {
                rest.push(word.clone());
                i += 1;
            }
        }
    }
    let serves_by_default = binds.is_empty()
        && !rest
            .iter()
            .any(|a| a == "--fd" || a.starts_with("--fd=") || a == "-e" || a == "--endpoint");
    if matches!(server, Server::Daphne | Server::Uvicorn)
        && (host.is_some() || port.is_some() || serves_by_default)
    {
        // Both default to 127.0.0.1:8000.
        binds.push(Bind {
            kind: BindKind::HostPort,
            address: format!(
                "{}:{}",
                host.unwrap_or_else(|| "127.0.0.1".into()),
                port.unwrap_or_else(|| "8000".into())
            ),
            words: host_port_words,
        });
    }
    if server == Server::Gunicorn && binds.is_empty() {
        let from_config: &[(String, String)] = match config.map(|c| &c.binds) {
            Some(Ok(found)) => found,
            // Unread: config_notes says so.
            Some(Err(_)) => return (rest, binds),
            // A -c file nobody read may bind elsewhere.
            None if rest.iter().any(|a| a == "-c" || a.starts_with("--config")) => {
                return (rest, binds)
            }
            None => &[],
        };
        if from_config.is_empty() {
            // gunicorn's default.
            binds.push(Bind {
                kind: BindKind::Gunicorn,
                address: "127.0.0.1:8000".into(),
                words: Vec::new(),
            });
        }
        for (_, address) in from_config {
            binds.push(Bind {
                kind: BindKind::Gunicorn,
                address: address.clone(),
                words: Vec::new(),
            });
        }
    }
    (rest, binds)
}

/// What a server's config file means for its sockets: gunicorn serves the
/// held sockets instead of its `bind`; uWSGI binds its file's sockets
/// itself, since a command line cannot take them back, so their ports go
/// to `bind_ports`.
fn config_notes(server: Server, binds: &[Bind], config: Option<&ConfigBinds>, moved: &mut Moved) {
    let Some(ConfigBinds { file, binds: read }) = config else {
        return;
    };
    match (server, read) {
        (Server::Gunicorn, Err(why)) if binds.is_empty() => moved.notes.push(format!(
            "gunicorn's binds are in {file}, which could not be read ({why}): give each as \
             [[listen]], and gunicorn serves those instead of binding"
        )),
        (Server::Gunicorn, Ok(found))
            if !found.is_empty() && binds.iter().all(|b| b.words.is_empty()) =>
        {
            let addresses: Vec<&str> = found.iter().map(|(_, a)| a.as_str()).collect();
            moved.notes.push(format!(
                "bind = {} is in {file}: gunicorn serves the held sockets instead, as it does \
                 whenever LISTEN_FDS is set",
                addresses.join(", ")
            ));
        }
        (Server::Uwsgi, Err(why)) => moved.notes.push(format!(
            "uWSGI reads options from {file}, which could not be read ({why}): a socket it \
             binds there needs bind_ports"
        )),
        (Server::Uwsgi, Ok(found)) => {
            for (option, value) in found {
                uwsgi_binds_itself(&format!("{option} = {value} in {file}"), value, moved);
            }
        }
        _ => {}
    }
}

/// A bind as a `[[listen]]` address: `HOST:PORT` with an IP (`localhost`
/// is 127.0.0.1, an empty host or `*` every address), or `unix:PATH`.
fn address(bind: &str) -> Result<String, String> {
    let bind = bind.strip_prefix("tcp://").unwrap_or(bind);
    if let Some(path) = bind.strip_prefix("unix:") {
        let path = path.trim_start_matches("//");
        return if path.starts_with('/') {
            Ok(format!("unix:{path}"))
        } else {
            Err("a relative socket path".to_owned())
        };
    }
    if bind.starts_with('/') {
        return Ok(format!("unix:{bind}"));
    }
    if bind.starts_with("fd://") || bind.starts_with('=') {
        return Err("already an inherited socket".to_owned());
    }
    let (host, port) = match bind.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(':') || host.starts_with('[') => (host, port),
        _ => (bind, "8000"),
    };
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{port:?} is not a port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip = match host {
        "" | "*" | "0.0.0.0" => "0.0.0.0".to_owned(),
        "localhost" => "127.0.0.1".to_owned(),
        other => other
            .parse::<std::net::IpAddr>()
            .map(|ip| ip.to_string())
            .map_err(|_| format!("{other:?} is not an IP address (give one)"))?,
    };
    Ok(if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    })
}

fn port_of(address: &str) -> Option<u16> {
    if address.starts_with("unix:") {
        return None;
    }
    address.rsplit_once(':')?.1.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn binds_become_listen_addresses() {
        let table = [
            ("127.0.0.1:8000", Ok("127.0.0.1:8000")),
            (":80", Ok("0.0.0.0:80")),
            ("0.0.0.0:8001", Ok("0.0.0.0:8001")),
            ("localhost:9000", Ok("127.0.0.1:9000")),
            ("[::1]:8000", Ok("[::1]:8000")),
            ("unix:/run/shop.sock", Ok("unix:/run/shop.sock")),
            ("/run/uwsgi/shop.sock", Ok("unix:/run/uwsgi/shop.sock")),
            ("tcp://127.0.0.1:8000", Ok("127.0.0.1:8000")),
            ("web.example.com:80", Err(())),
            ("fd://3", Err(())),
        ];
        for (bind, want) in table {
            assert_eq!(
                address(bind).map_err(|_| ()),
                want.map(str::to_owned),
                "{bind}"
            );
        }
    }

    #[test]
    fn servers_move_onto_held_sockets_in_their_own_way() {
        let table: &[(&str, &str, &[&str])] = &[
            (
                "/srv/venv/bin/gunicorn -w 4 -b 0.0.0.0:8000 --bind=unix:/run/x.sock shop.wsgi",
                "/srv/venv/bin/gunicorn -w 4 shop.wsgi",
                &["0.0.0.0:8000", "unix:/run/x.sock"],
            ),
            (
                "/srv/venv/bin/python -m gunicorn shop.wsgi",
                "/srv/venv/bin/python -m gunicorn shop.wsgi",
                &["127.0.0.1:8000"],
            ),
            (
                "/usr/bin/uwsgi --master --http :8000 --module shop.wsgi",
                "/usr/bin/uwsgi --http-socket fd://3 --master --module shop.wsgi",
                &["0.0.0.0:8000"],
            ),
            (
                "/usr/bin/uwsgi --socket=127.0.0.1:3031 --http-socket :8080",
                "/usr/bin/uwsgi --socket fd://3 --http-socket fd://4",
                &["127.0.0.1:3031", "0.0.0.0:8080"],
            ),
            (
                "/srv/venv/bin/daphne -b 0.0.0.0 -p 8001 shop.asgi:application",
                "/srv/venv/bin/daphne --fd 3 shop.asgi:application",
                &["0.0.0.0:8001"],
            ),
            (
                "/srv/venv/bin/uvicorn main:app --port 8080",
                "/srv/venv/bin/uvicorn --fd 3 main:app",
                &["127.0.0.1:8080"],
            ),
            (
                "/srv/venv/bin/celery -A proj worker",
                "/srv/venv/bin/celery -A proj worker",
                &[],
            ),
        ];
        for (given, command, listen) in table {
            let moved = move_to_held_sockets(&words(given), None);
            assert_eq!(moved.command, words(command), "{given}");
            assert_eq!(moved.listen, *listen, "{given}");
            assert!(moved.bind_ports.is_empty(), "{given}");
        }
    }

    #[test]
    fn finds_the_config_file_a_server_reads() {
        let table: &[(&str, Option<(&str, bool)>)] = &[
            (
                "/v/bin/gunicorn app:app -c /srv/gunicorn.py",
                Some(("/srv/gunicorn.py", false)),
            ),
            (
                "/v/bin/gunicorn --config=conf/g.py app:app",
                Some(("conf/g.py", false)),
            ),
            ("/v/bin/gunicorn app:app", Some(("gunicorn.conf.py", true))),
            (
                "/usr/bin/uwsgi --ini /srv/amo/uwsgi.ini",
                Some(("/srv/amo/uwsgi.ini", false)),
            ),
            (
                "/usr/bin/uwsgi vassal.ini --master",
                Some(("vassal.ini", false)),
            ),
            ("/usr/bin/uwsgi --http :8000 --module app", None),
            ("/v/bin/daphne -p 8001 app.asgi:application", None),
            ("/v/bin/celery -A app worker -c 4", None),
        ];
        for (given, want) in table {
            let found = config_file(&words(given));
            assert_eq!(
                found.as_ref().map(|f| (f.path.as_str(), f.optional)),
                *want,
                "{given}"
            );
        }
    }

    #[test]
    fn reads_the_binds_of_config_files() {
        let pairs = |v: &[&str]| -> Vec<(String, String)> {
            v.iter()
                .map(|a| ("bind".to_owned(), (*a).to_owned()))
                .collect()
        };
        type Binds = Result<Vec<(String, String)>, ()>;
        let table: &[(&str, Binds)] = &[
            (
                "bind = \"127.0.0.1:8001\"\nworkers = 2\n",
                Ok(pairs(&["127.0.0.1:8001"])),
            ),
            (
                "bind = ['unix:/run/a.sock', \"0.0.0.0:80\"]  # both\n",
                Ok(pairs(&["unix:/run/a.sock", "0.0.0.0:80"])),
            ),
            ("bind=('127.0.0.1:1',)\n", Ok(pairs(&["127.0.0.1:1"]))),
            ("bind = 'a:1'\nbind = 'b:2'\n", Ok(pairs(&["b:2"]))),
            ("workers = 4\nbind_address = 'x'\n", Ok(Vec::new())),
            ("def f():\n    bind = 'inside:1'\n", Ok(Vec::new())),
            ("bind = os.environ['BIND']\n", Err(())),
            ("bind = f\"0.0.0.0:{PORT}\"\n", Err(())),
        ];
        for (text, want) in table {
            assert_eq!(
                binds_in_config(Server::Gunicorn, text).map_err(|_| ()),
                *want,
                "{text}"
            );
        }
        let ini = "[uwsgi]\nbase = /srv\nsocket = :8001\nhttps = :443,c.pem,k.pem\nmaster = true\n\
                   [other]\nsocket = :9\n";
        assert_eq!(
            binds_in_config(Server::Uwsgi, ini).unwrap(),
            [
                ("socket".to_owned(), ":8001".to_owned()),
                ("https".to_owned(), ":443".to_owned())
            ]
        );
    }

    #[test]
    fn gunicorn_serves_its_config_files_binds_on_held_sockets() {
        let argv = words("/v/bin/gunicorn app.wsgi:application --config /srv/g.py");
        let config = ConfigBinds {
            file: "/srv/g.py".to_owned(),
            binds: Ok(vec![("bind".to_owned(), "127.0.0.1:8001".to_owned())]),
        };
        let moved = move_to_held_sockets(&argv, Some(&config));
        assert_eq!(
            moved.command, argv,
            "gunicorn still reads the rest of its config"
        );
        assert_eq!(moved.listen, ["127.0.0.1:8001"]);
        assert_eq!(
            moved.notes[0],
            "bind = 127.0.0.1:8001 is in /srv/g.py: gunicorn serves the held sockets instead, \
             as it does whenever LISTEN_FDS is set"
        );
        // A bind on the command line wins over the file's, as in gunicorn.
        let argv = words("/v/bin/gunicorn -b :9000 app:app -c /srv/g.py");
        let moved = move_to_held_sockets(&argv, Some(&config));
        assert_eq!(moved.listen, ["0.0.0.0:9000"]);
        // A file with no bind: gunicorn's default.
        let none = ConfigBinds {
            binds: Ok(Vec::new()),
            ..config.clone()
        };
        let argv = words("/v/bin/gunicorn app:app -c /srv/g.py");
        let moved = move_to_held_sockets(&argv, Some(&none));
        assert_eq!(moved.listen, ["127.0.0.1:8000"]);
        // One it could not read: nothing held, and a note that says so.
        let unread = ConfigBinds {
            binds: Err("bind = x is not a string or a list of strings".to_owned()),
            ..config
        };
        let moved = move_to_held_sockets(
            &words("/v/bin/gunicorn app:app -c /srv/g.py"),
            Some(&unread),
        );
        assert!(moved.listen.is_empty());
        assert_eq!(
            moved.notes,
            [
                "gunicorn's binds are in /srv/g.py, which could not be read (bind = x is not a \
              string or a list of strings): give each as [[listen]], and gunicorn serves those \
              instead of binding"
            ]
        );
    }

    #[test]
    fn uwsgi_binds_its_ini_files_sockets_itself_through_bind_ports() {
        let argv = words("/usr/bin/uwsgi --ini /srv/amo/uwsgi.ini");
        let config = ConfigBinds {
            file: "/srv/amo/uwsgi.ini".to_owned(),
            binds: Ok(vec![
                ("http-socket".to_owned(), ":8001".to_owned()),
                ("socket".to_owned(), "/run/amo/uwsgi.sock".to_owned()),
            ]),
        };
        let moved = move_to_held_sockets(&argv, Some(&config));
        assert_eq!(moved.command, argv);
        assert!(moved.listen.is_empty());
        assert_eq!(moved.bind_ports, [8001]);
        assert_eq!(
            moved.notes,
            [
                "http-socket = :8001 in /srv/amo/uwsgi.ini: uWSGI binds it itself, so \
                 bind_ports = [8001] lets it (Landlock refuses any other bind)",
                "socket = /run/amo/uwsgi.sock in /srv/amo/uwsgi.ini: uWSGI creates the socket \
                 itself, in a directory the app must be able to write (sandbox read_write)",
            ]
        );
    }

    #[test]
    fn uwsgi_binds_its_stats_server_itself_through_bind_ports() {
        let argv = words(
            "/srv/venv/bin/uwsgi --http 0.0.0.0:8030 --wsgi-file www/web.py \
             --stats 127.0.0.1:9191 --stats-http",
        );
        let moved = move_to_held_sockets(&argv, None);
        assert_eq!(
            moved.command,
            words(
                "/srv/venv/bin/uwsgi --http-socket fd://3 --wsgi-file www/web.py \
                 --stats 127.0.0.1:9191 --stats-http"
            )
        );
        assert_eq!(moved.listen, ["0.0.0.0:8030"]);
        assert_eq!(moved.bind_ports, [9191], "{:?}", moved.notes);
        assert!(
            moved.notes.contains(
                &"--stats 127.0.0.1:9191: uWSGI binds it itself, so bind_ports = [9191] lets \
                  it (Landlock refuses any other bind)"
                    .to_owned()
            ),
            "{:?}",
            moved.notes
        );
        let moved = move_to_held_sockets(
            &words("/srv/venv/bin/uwsgi --socket :3031 --stats=/run/shop/stats.sock"),
            None,
        );
        assert!(moved.bind_ports.is_empty());
        assert!(
            moved.notes[0].starts_with("--stats /run/shop/stats.sock: uWSGI creates the socket"),
            "{:?}",
            moved.notes
        );
    }

    #[test]
    fn a_program_given_a_port_binds_it_itself_through_bind_ports() {
        let table: &[(&str, &[u16])] = &[
            ("/usr/bin/python3 /srv/hello/app.py --port=8020", &[8020]),
            (
                "/srv/venv/bin/python -m aiohttp.web --port 8080 app:init",
                &[8080],
            ),
            ("/bin/sh -c 'exec python3 app.py --port=9000'", &[9000]),
            ("/usr/bin/python3 app.py --port-file /run/x --port=x", &[]),
            ("/srv/venv/bin/celery -A proj worker", &[]),
        ];
        for (given, ports) in table {
            let argv = crate::supervisord::ini::split_command(given).expect("a command");
            let moved = move_to_held_sockets(&argv, None);
            assert_eq!(moved.command, argv, "{given}: the command is left as it is");
            assert_eq!(moved.bind_ports, *ports, "{given}");
            assert!(moved.listen.is_empty(), "{given}");
            assert_eq!(moved.notes.len(), ports.len(), "{given}: {:?}", moved.notes);
        }
        let moved = move_to_held_sockets(&words("/usr/bin/python3 app.py --port 80"), None);
        assert_eq!(
            moved.notes,
            [
                "--port 80: the program binds it itself, so bind_ports = [80]; but 80 is below \
              1024, which only root may bind: give the app a port of 1024 or more, or \
              [[listen]] if it can take a socket"
            ]
        );
    }

    #[test]
    fn a_server_in_a_shell_keeps_its_binds_and_gets_bind_ports() {
        let argv: Vec<String> = [
            "/bin/bash",
            "-c",
            "cd /srv && exec gunicorn -b :8000 app:app",
        ]
        .map(String::from)
        .into();
        let moved = move_to_held_sockets(&argv, None);
        assert_eq!(moved.command, argv);
        assert_eq!(moved.server, Some(Server::Gunicorn));
        assert_eq!(moved.bind_ports, [8000]);
        assert!(moved.listen.is_empty());
        assert!(
            moved.notes[0].contains("runs through a shell"),
            "{:?}",
            moved.notes
        );
    }
}
