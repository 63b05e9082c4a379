//! `appctl import-uwsgi FILE...`: uWSGI emperor vassals (`.ini`) as
//! apps.d files that run the same vassal under appvisord, on sockets
//! appvisord holds and with notify readiness (uWSGI sends READY=1 on
//! NOTIFY_SOCKET by itself).
//!
//! Each vassal's `[uwsgi]` options become uWSGI's command line, read the
//! way uWSGI reads the file: repeated options kept in order, the magic
//! variables `%d` (the file's directory, with a slash), `%n` (its name
//! without extension), `%s`, `%p`, `%e`, `%c`, `%h`, `%%`, `%(option)` of
//! an option set above, and `$(VAR)` of the environment. What the emperor
//! or appvisor does instead is taken out: `uid`/`gid` become `user` and
//! `group`, `chdir` the directory, `env` the environment, `virtualenv`
//! (`home`, `venv`, `pyhome`) the venv and the uwsgi it runs,
//! `daemonize`, `pidfile` and `logto` go; sockets go to [`crate::servers`].
//!
//! Pure but for reading the files and finding the uwsgi binary.

use std::path::{Path, PathBuf};

use appvisor_config::uwsgi;

use crate::appfile::{self, AppFile, Restart};
use crate::servers;

/// Options that take no value: `master = true` is `--master`, and a false
/// one is left out, as uWSGI would leave it unset.
const FLAGS: &[&str] = &[
    "master",
    "vacuum",
    "enable-threads",
    "die-on-term",
    "lazy-apps",
    "lazy",
    "single-interpreter",
    "need-app",
    "strict",
    "thunder-lock",
    "harakiri-verbose",
    "no-orphans",
    "disable-logging",
    "log-master",
    "memory-report",
    "auto-procname",
    "manage-script-name",
    "stats-http",
    "reload-on-exception",
    "catch-exceptions",
    "no-default-app",
    "log-x-forwarded-for",
    "ignore-sigpipe",
    "ignore-write-errors",
    "disable-write-exception",
    "http-auto-chunked",
    "py-call-osafterfork",
    "skip-atexit",
    "honour-stdin",
    "cheaper-busyness-verbose",
    "enable-metrics",
];

/// Options the emperor or appvisor does, with why they go.
const DROPPED: &[(&str, &str)] = &[
    (
        "daemonize",
        "appvisor supervises it in the foreground and captures its output",
    ),
    (
        "daemonize2",
        "appvisor supervises it in the foreground and captures its output",
    ),
    ("logto", "appvisor captures its output in log_dir"),
    ("logto2", "appvisor captures its output in log_dir"),
    ("pidfile", "appvisor knows its pid (appctl status)"),
    ("pidfile2", "appvisor knows its pid (appctl status)"),
    ("chmod-socket", "appvisord creates the held sockets"),
    ("chown-socket", "appvisord creates the held sockets"),
];

/// Options that take a value, as vassals commonly set them: anything else
/// that a later value names as `%(key)` is a placeholder of the file's
/// own (`base = /srv/shop`), expanded here and not passed on, since uWSGI
/// refuses an option it does not know.
const VALUE_OPTIONS: &[&str] = &[
    "module",
    "wsgi-file",
    "callable",
    "processes",
    "workers",
    "threads",
    "plugins",
    "plugin",
    "socket",
    "http-socket",
    "http",
    "uwsgi-socket",
    "harakiri",
    "max-requests",
    "buffer-size",
    "post-buffering",
    "static-map",
    "touch-reload",
    "pythonpath",
    "stats",
    "listen",
    "cheaper",
    "offload-threads",
    "mount",
    "env",
];

/// Options whose logic this importer does not follow.
const UNSUPPORTED: &[&str] = &[
    "ini",
    "include",
    "inherit",
    "for",
    "endfor",
    "if-env",
    "if-exists",
    "if-file",
    "if-dir",
    "if-opt",
    "endif",
    "xml",
    "yaml",
    "json",
];

#[derive(Debug, Default)]
pub struct Import {
    pub apps: Vec<AppFile>,
    /// `FILE: why`, for vassals not imported.
    pub problems: Vec<String>,
}

/// Converts every vassal; `uwsgi` is the binary to run when the vassal's
/// venv has none (default: the first of /usr/local/bin/uwsgi and
/// /usr/bin/uwsgi that exists).
pub fn import(files: &[PathBuf], uwsgi: Option<&Path>) -> Import {
    let mut out = Import::default();
    for file in files {
        let file = std::path::absolute(file).unwrap_or_else(|_| file.clone());
        let text = match std::fs::read_to_string(&file) {
            Ok(text) => text,
            Err(e) => {
                out.problems
                    .push(format!("{}: cannot read: {e}", file.display()));
                continue;
            }
        };
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_default();
        let env: Vec<(String, String)> = std::env::vars().collect();
        match vassal(&file, &text, &host, &env, uwsgi) {
            Ok(app) => out.apps.push(app),
            Err(why) => out.problems.push(format!("{}: {why}", file.display())),
        }
    }
    out
}

/// The `[uwsgi]` options of an ini file, in order, with their lines.
pub fn options(text: &str) -> Vec<(String, String, usize)> {
    let mut out = Vec::new();
    let mut in_uwsgi = false;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
            continue;
        }
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            in_uwsgi = section.trim() == "uwsgi";
            continue;
        }
        if !in_uwsgi {
            continue;
        }
        match line.split_once('=') {
            Some((key, value)) => out.push((key.trim().to_owned(), value.trim().to_owned(), i + 1)),
            None => out.push((line.to_owned(), "true".to_owned(), i + 1)),
        }
    }
    out
}

/// Why a vassal is not imported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VassalError {
    #[error("{stem:?} cannot be made an app name: rename the file")]
    AppName { stem: String },
    #[error("line {line}: {key} is not supported by this importer: write the vassal out whole")]
    Unsupported { line: usize, key: String },
    #[error("line {line}: {key}: {source}")]
    Expand {
        line: usize,
        key: String,
        source: ExpandError,
    },
    #[error("line {line}: env = {value}: expected NAME=VALUE")]
    Env { line: usize, value: String },
    #[error(
        "no uid (or root): the emperor ran it as root, which appvisor never does; add uid = NAME"
    )]
    Root,
    #[error(
        "no uwsgi binary: the venv has none and none is installed; name one with --uwsgi PATH"
    )]
    NoBinary,
}

/// A value whose magic variables this importer cannot expand as uWSGI
/// would.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpandError {
    #[error("%({key}) names no option set above it")]
    Unset { key: String },
    #[error("%{magic} is not a magic variable this importer knows")]
    Magic { magic: char },
    #[error("@(file) is not supported: put the value in")]
    FileInclude,
}

/// uWSGI's magic variables in `value`.
fn expand(
    value: &str,
    file: &Path,
    set: &[(String, String)],
    host: &str,
    env: &[(String, String)],
) -> Result<String, ExpandError> {
    let dir = file.parent().unwrap_or(Path::new("/"));
    let name = file
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let stem = file
        .file_stem()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let mut out = String::new();
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek().copied()) {
            ('%', Some('(')) => {
                chars.next();
                let key: String = chars.by_ref().take_while(|&c| c != ')').collect();
                let (_, v) = set
                    .iter()
                    .rev()
                    .find(|(k, _)| *k == key)
                    .ok_or_else(|| ExpandError::Unset { key: key.clone() })?;
                out.push_str(v);
            }
            ('%', Some(m)) => {
                chars.next();
                match m {
                    'd' => out.push_str(&format!("{}/", dir.display())),
                    'n' => out.push_str(stem),
                    's' => out.push_str(name),
                    'p' => out.push_str(&file.display().to_string()),
                    'e' => out.push_str(
                        file.extension()
                            .and_then(|e| e.to_str())
                            .unwrap_or_default(),
                    ),
                    'c' => {
                        out.push_str(dir.file_name().and_then(|n| n.to_str()).unwrap_or_default())
                    }
                    'h' => out.push_str(host),
                    '%' => out.push('%'),
                    other => return Err(ExpandError::Magic { magic: other }),
                }
            }
            ('$', Some('(')) => {
                chars.next();
                let var: String = chars.by_ref().take_while(|&c| c != ')').collect();
                let v = env
                    .iter()
                    .find(|(k, _)| *k == var)
                    .map_or("", |(_, v)| v.as_str());
                out.push_str(v);
            }
            ('@', Some('(')) => return Err(ExpandError::FileInclude),
            _ => out.push(c),
        }
    }
    Ok(out)
}

fn is_true(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Some(true),
        "false" | "no" | "off" | "0" => Some(false),
        _ => None,
    }
}

fn vassal(
    file: &Path,
    text: &str,
    host: &str,
    env: &[(String, String)],
    uwsgi: Option<&Path>,
) -> Result<AppFile, VassalError> {
    let stem = file
        .file_stem()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let name = appfile::app_name_from(stem).ok_or_else(|| VassalError::AppName {
        stem: stem.to_owned(),
    })?;
    let mut notes = Vec::new();
    if name != stem {
        notes.push(format!("named {name}: the vassal is {stem}"));
    }
    let mut set: Vec<(String, String)> = Vec::new();
    let (mut user, mut group, mut directory, mut venv, mut umask) = (None, None, None, None, None);
    let mut environment = Vec::new();
    let mut args: Vec<String> = Vec::new();
    let mut used_env = Vec::new();
    let options = options(text);
    let placeholders: Vec<&str> = options
        .iter()
        .flat_map(|(_, raw, _)| raw.split("%(").skip(1))
        .filter_map(|rest| rest.split(')').next())
        .collect();
    for (key, raw, line) in &options {
        let (key, line) = (key.clone(), *line);
        if UNSUPPORTED.contains(&key.as_str()) {
            return Err(VassalError::Unsupported { line, key });
        }
        if raw.contains("$(") {
            used_env.push(key.clone());
        }
        let value = expand(raw, file, &set, host, env).map_err(|source| VassalError::Expand {
            line,
            key: key.clone(),
            source,
        })?;
        set.push((key.clone(), value.clone()));
        match key.as_str() {
            "uid" => user = Some(value),
            "gid" => group = Some(value),
            "chdir" => directory = Some(value.trim_end_matches('/').to_owned()),
            "umask" => umask = Some(value),
            "virtualenv" | "venv" | "home" | "pyhome" | "virtualenvs" => {
                venv = Some(value.trim_end_matches('/').to_owned());
                args.extend(["--virtualenv".to_owned(), value]);
            }
            "env" => match value.split_once('=') {
                Some((k, v)) => environment.push((k.to_owned(), v.to_owned())),
                None => return Err(VassalError::Env { line, value }),
            },
            k if placeholders.contains(&k)
                && !VALUE_OPTIONS.contains(&k)
                && !FLAGS.contains(&k) => {}
            k if DROPPED.iter().any(|(d, _)| *d == k) => {
                let why = DROPPED.iter().find(|(d, _)| *d == k).map_or("", |(_, w)| w);
                notes.push(format!("{k} = {value} left out: {why}"));
            }
            k if FLAGS.contains(&k) || (is_true(&value) == Some(true) && value != "1") => {
                match is_true(&value) {
                    Some(true) => args.push(format!("--{k}")),
                    Some(false) => {}
                    None => args.extend([format!("--{k}"), value]),
                }
            }
            k => args.extend([format!("--{k}"), value]),
        }
    }
    for key in used_env {
        notes.push(format!(
            "{key} uses $(...) of this shell's environment: the emperor expanded its own"
        ));
    }
    let Some(user) = user.filter(|u| u != "root" && u != "0") else {
        return Err(VassalError::Root);
    };
    let directory = directory.unwrap_or_else(|| {
        notes.push("no chdir: the vassal's own directory is assumed".to_owned());
        file.parent()
            .unwrap_or(Path::new("/"))
            .display()
            .to_string()
    });
    let binary = venv
        .as_ref()
        .map(|v| PathBuf::from(v).join("bin/uwsgi"))
        .filter(|b| b.is_file())
        .or_else(|| uwsgi.map(Path::to_owned))
        .or_else(|| {
            ["/usr/local/bin/uwsgi", "/usr/bin/uwsgi"]
                .map(PathBuf::from)
                .into_iter()
                .find(|b| b.is_file())
        })
        .ok_or(VassalError::NoBinary)?;
    let mut argv = vec![binary.display().to_string()];
    argv.extend(args);
    let moved = servers::move_to_held_sockets(&argv, None);
    notes.extend(moved.notes);
    if moved.listen.is_empty() {
        notes.push("no socket option: the vassal serves nothing appvisord holds".to_owned());
    }
    let mut command = moved.command;
    // Without the graceful TERM hook uWSGI 2.0 has no graceful stop: INT
    // and QUIT kill the workers at once, cutting the requests they answer
    // at every stop and restart. A vassal that chose --die-on-term stops
    // as it chose.
    let die_on_term = command.iter().any(|a| a == "--die-on-term");
    if !die_on_term && !uwsgi::stops_gracefully_on_term(&command) {
        command.extend([
            "--hook-master-start".to_owned(),
            uwsgi::GRACEFUL_TERM_HOOK.to_owned(),
        ]);
        notes.push(format!(
            "added --hook-master-start \"{}\" and stop signal TERM: uWSGI then lets requests \
             in flight finish at a stop or restart (docs/servers.md)",
            uwsgi::GRACEFUL_TERM_HOOK
        ));
    }
    let own_venv = appvisor_config::venv_of(&binary).map(|v| v.display().to_string());
    Ok(AppFile {
        name,
        origin: file.display().to_string(),
        importer: "import-uwsgi",
        notes,
        user,
        group,
        app_groups: Vec::new(),
        command,
        directory,
        // The venv of uwsgi itself needs no naming.
        venv: venv.filter(|v| own_venv.as_deref() != Some(v.as_str())),
        environment,
        umask,
        autostart: true,
        listen: moved.listen,
        readiness: "notify",
        // The emperor respawns a vassal whatever its exit.
        restart: Some(Restart {
            policy: "always",
            start_secs: 1,
            start_retries: None,
        }),
        // TERM: a graceful stop with the hook, or the vassal's own choice.
        stop_signal: "TERM".to_owned(),
        stop_timeout_secs: None,
        logs: None,
        bind_ports: moved.bind_ports,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vassal_becomes_uwsgi_on_held_sockets() {
        let text = "\
; the shop vassal
[uwsgi]
project = shop
base = /srv/%(project)
uid = shop
gid = www-data
chdir = %(base)/current
virtualenv = %(base)/venv
module = %(project).wsgi:application
master = true
vacuum = false
processes = 4
http-socket = 127.0.0.1:8001
socket = %d%n.sock
chmod-socket = 660
env = DJANGO_SETTINGS_MODULE=%(project).settings
env = STAGE=prod
logto = /var/log/uwsgi/%n.log

[other]
socket = :9
";
        let app = vassal(
            Path::new("/etc/uwsgi/vassals/shop.ini"),
            text,
            "web1",
            &[],
            Some(Path::new("/usr/bin/uwsgi")),
        )
        .unwrap();
        assert_eq!(app.name, "shop");
        assert_eq!(app.user, "shop");
        assert_eq!(app.group.as_deref(), Some("www-data"));
        assert_eq!(app.directory, "/srv/shop/current");
        assert_eq!(app.venv.as_deref(), Some("/srv/shop/venv"));
        assert_eq!(
            app.command,
            [
                "/usr/bin/uwsgi",
                "--http-socket",
                "fd://3",
                "--socket",
                "fd://4",
                "--virtualenv",
                "/srv/shop/venv",
                "--module",
                "shop.wsgi:application",
                "--master",
                "--processes",
                "4",
                "--hook-master-start",
                "unix_signal:15 gracefully_kill_them_all",
            ]
        );
        assert_eq!(
            app.listen,
            ["127.0.0.1:8001", "unix:/etc/uwsgi/vassals/shop.sock"]
        );
        assert_eq!(
            app.environment,
            [
                (
                    "DJANGO_SETTINGS_MODULE".to_owned(),
                    "shop.settings".to_owned()
                ),
                ("STAGE".to_owned(), "prod".to_owned())
            ]
        );
        assert_eq!(
            (app.readiness, app.stop_signal.as_str()),
            ("notify", "TERM")
        );
        assert!(
            app.notes
                .iter()
                .any(|n| n.starts_with("logto = /var/log/uwsgi/shop.log left out")),
            "{:?}",
            app.notes
        );
    }

    /// uWSGI 2.0 cuts requests in flight on INT: an imported vassal stops
    /// gracefully on TERM through the hook, added once, and one that chose
    /// --die-on-term keeps its choice.
    #[test]
    fn a_vassal_stops_gracefully_on_term() {
        let import = |options: &str| {
            let text = format!("[uwsgi]\nuid = shop\nchdir = /srv/shop\n{options}");
            vassal(
                Path::new("/etc/uwsgi/vassals/shop.ini"),
                &text,
                "web1",
                &[],
                Some(Path::new("/usr/bin/uwsgi")),
            )
            .unwrap()
        };
        let hooks = |app: &AppFile| {
            app.command
                .iter()
                .filter(|a| *a == "--hook-master-start")
                .count()
        };
        let plain = import("master = true\n");
        assert_eq!((hooks(&plain), plain.stop_signal.as_str()), (1, "TERM"));
        assert!(
            plain
                .notes
                .iter()
                .any(|n| n.starts_with("added --hook-master-start")),
            "{:?}",
            plain.notes
        );
        let hooked =
            import("master = true\nhook-master-start = unix_signal:15 gracefully_kill_them_all\n");
        assert_eq!((hooks(&hooked), hooked.stop_signal.as_str()), (1, "TERM"));
        let dies = import("master = true\ndie-on-term = true\n");
        assert_eq!((hooks(&dies), dies.stop_signal.as_str()), (0, "TERM"));
    }

    #[test]
    fn what_a_vassal_cannot_be_is_said() {
        let file = Path::new("/etc/uwsgi/vassals/x.ini");
        let uwsgi = Some(Path::new("/usr/bin/uwsgi"));
        let cases = [
            (
                "[uwsgi]\nmodule = x\n",
                VassalError::Root,
                "no uid (or root)",
            ),
            (
                "[uwsgi]\nuid = x\nini = other.ini\n",
                VassalError::Unsupported {
                    line: 3,
                    key: "ini".into(),
                },
                "line 3: ini is not supported",
            ),
            (
                "[uwsgi]\nuid = x\nchdir = %(nope)\n",
                VassalError::Expand {
                    line: 3,
                    key: "chdir".into(),
                    source: ExpandError::Unset { key: "nope".into() },
                },
                "line 3: chdir: %(nope) names no option",
            ),
        ];
        for (text, error, said) in cases {
            let err = vassal(file, text, "h", &[], uwsgi).unwrap_err();
            assert_eq!(err, error, "{text:?}");
            assert!(err.to_string().starts_with(said), "{text:?}: {err}");
        }
    }
}
