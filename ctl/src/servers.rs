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
//! Pure.

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

/// Moves the server of `argv` onto held sockets.
pub fn move_to_held_sockets(argv: &[String]) -> Moved {
    let mut moved = Moved {
        command: argv.to_vec(),
        ..Moved::default()
    };
    if let Some((at, server)) = find_server(argv) {
        moved.server = Some(server);
        let (head, args) = argv.split_at(at + 1);
        let (args, binds) = take_binds(server, args);
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
            let (_, binds) = take_binds(server, &words[at + 1..]);
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
        let Some(value) = value else { continue };
        match address(value) {
            Ok(addr) if addr.starts_with("unix:") => moved.notes.push(format!(
                "--stats {value}: uWSGI creates its stats socket itself, in a directory the \
                 app must be able to write (sandbox read_write)"
            )),
            Ok(addr) => {
                if let Some(port) = port_of(&addr) {
                    moved.bind_ports.push(port);
                    moved.notes.push(bind_port_note(
                        &format!("--stats {value}: uWSGI binds its stats server itself, so"),
                        port,
                    ));
                }
            }
            Err(why) => moved
                .notes
                .push(format!("--stats {value}: {why}; uWSGI binds it itself")),
        }
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

/// Splits the server's arguments into the rest and its binds, in order.
fn take_binds(server: Server, args: &[String]) -> (Vec<String>, Vec<Bind>) {
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
    if server == Server::Gunicorn
        && binds.is_empty()
        && !rest.iter().any(|a| a == "-c" || a.starts_with("--config"))
    {
        // gunicorn's default; with -c the config file may bind elsewhere.
        binds.push(Bind {
            kind: BindKind::Gunicorn,
            address: "127.0.0.1:8000".into(),
            words: Vec::new(),
        });
    }
    (rest, binds)
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
            let moved = move_to_held_sockets(&words(given));
            assert_eq!(moved.command, words(command), "{given}");
            assert_eq!(moved.listen, *listen, "{given}");
            assert!(moved.bind_ports.is_empty(), "{given}");
        }
    }

    #[test]
    fn uwsgi_binds_its_stats_server_itself_through_bind_ports() {
        let argv = words(
            "/srv/venv/bin/uwsgi --http 0.0.0.0:8030 --wsgi-file www/web.py \
             --stats 127.0.0.1:9191 --stats-http",
        );
        let moved = move_to_held_sockets(&argv);
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
                &"--stats 127.0.0.1:9191: uWSGI binds its stats server itself, so bind_ports = \
                  [9191] lets it (Landlock refuses any other bind)"
                    .to_owned()
            ),
            "{:?}",
            moved.notes
        );
        let moved = move_to_held_sockets(&words(
            "/srv/venv/bin/uwsgi --socket :3031 --stats=/run/shop/stats.sock",
        ));
        assert!(moved.bind_ports.is_empty());
        assert!(
            moved.notes[0].starts_with("--stats /run/shop/stats.sock: uWSGI creates"),
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
            let moved = move_to_held_sockets(&argv);
            assert_eq!(moved.command, argv, "{given}: the command is left as it is");
            assert_eq!(moved.bind_ports, *ports, "{given}");
            assert!(moved.listen.is_empty(), "{given}");
            assert_eq!(moved.notes.len(), ports.len(), "{given}: {:?}", moved.notes);
        }
        let moved = move_to_held_sockets(&words("/usr/bin/python3 app.py --port 80"));
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
        let moved = move_to_held_sockets(&argv);
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
