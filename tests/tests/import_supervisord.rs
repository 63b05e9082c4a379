//! `appctl import-supervisord`, checked against supervisord itself: the
//! same config is read by supervisord 4's own parser (from the test venv,
//! where `.ci/run` installs it) and by `appctl`, and what each says the
//! program is must agree; then the imported file runs under appvisord.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use appvisor_tests::daemon::describe_output;
use appvisor_tests::{
    bins, free_port, http_get, require_root, Daemon, DaemonOptions, Prefix, ProcStatus, State,
    TestUser,
};

/// What supervisord 4's parser makes of a config: one entry per process,
/// in its own order, as JSON. Run with the environment the importer gets,
/// so `%(ENV_X)s` and the bare-command lookup read the same values.
const SUPERVISORD_PROCESSES: &str = r#"
import json, shlex, signal, sys
from supervisor.options import ServerOptions, FastCGIGroupConfig, EventListenerPoolConfig
from supervisor.process import Subprocess
import supervisor.datatypes, supervisor.options
# Whether the log directories exist on this host says nothing about what
# the programs run.
for module in (supervisor.datatypes, supervisor.options):
    module.existing_dirpath = module.existing_directory = lambda path: path
o = ServerOptions()
o.configfile = sys.argv[1]
o.process_config(do_usage=False)
# The user supervisord switches to at start (what ServerOptions.realize
# sets from [supervisord] user).
own = o.configroot.supervisord.user
own_uid = supervisor.datatypes.name_to_uid(own) if own else None
out = []
for g in o.process_group_configs:
    kind = ("fcgi-program" if isinstance(g, FastCGIGroupConfig)
            else "eventlistener" if isinstance(g, EventListenerPoolConfig) else "program")
    for p in g.process_configs:
        try:
            filename, argv = Subprocess(p).get_execv_args()
        except Exception:
            filename, argv = None, shlex.split(p.command)
        out.append(dict(
            group=g.name, name=p.name, kind=kind, filename=filename, command=argv,
            # supervisord switched to its own user at start, and chdir'd and
            # set its umask when it daemonized: what a program without its
            # own ran with.
            uid=p.uid if p.uid is not None else own_uid,
            directory=p.directory or (None if o.nodaemon else o.directory),
            umask=p.umask if p.umask is not None else (None if o.nodaemon else o.umask),
            environment=p.environment or {},
            autostart=p.autostart,
            autorestart={"RestartUnconditionally": "always",
                         "RestartWhenExitUnexpected": "on-failure"}.get(
                getattr(p.autorestart, "__name__", ""), "never"),
            startsecs=p.startsecs, startretries=p.startretries,
            stopsignal=signal.Signals(p.stopsignal).name[3:], stopwaitsecs=p.stopwaitsecs,
            maxbytes=p.stdout_logfile_maxbytes, backups=p.stdout_logfile_backups,
            priority=p.priority))
print(json.dumps(out))
"#;

/// The environment both supervisord's parser and the importer run with:
/// supervisord's PATH under systemd or an init script, which the importer
/// assumes for bare commands.
const SERVICE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What supervisord's parser says `main` runs, and how the importer
/// converts it: both with the environment supervisord had as a service.
fn supervisord_processes(main: &Path) -> Vec<serde_json::Value> {
    let python = bins::venv_python();
    let out = Command::new(&python)
        .args(["-c", SUPERVISORD_PROCESSES])
        .arg(main)
        .env_clear()
        .env("PATH", SERVICE_PATH)
        .env("HOME", "/root")
        .output()
        .expect("running supervisord's parser");
    assert!(
        out.status.success(),
        "{}: {}\n(supervisor is in the test venv {}: .ci/run installs it)",
        main.display(),
        describe_output(&out),
        python.display()
    );
    serde_json::from_slice(&out.stdout).expect("JSON from supervisord's parser")
}

/// `appctl import-supervisord --out DIR MAINS...`, with the environment
/// [`supervisord_processes`] gives supervisord.
fn import_supervisord(out_dir: &Path, mains: &[PathBuf]) -> std::process::Output {
    Command::new(bins::appctl())
        .arg("import-supervisord")
        .arg("--out")
        .arg(out_dir)
        .args(mains)
        .env_clear()
        .env("PATH", SERVICE_PATH)
        .env("HOME", "/root")
        .output()
        .expect("running appctl import-supervisord")
}

#[test]
fn imported_programs_mean_what_they_meant_to_supervisord_and_run() {
    require_root!();
    let user = TestUser::ensure("avt-app4");
    let prefix = Prefix::new();
    let code = prefix.code_dir("shop", &user);
    let main = prefix.write(
        "supervisor/supervisord.conf",
        &format!(
            "[supervisord]\nlogfile={}/supervisord.log ; not used\n\n\
             [include]\nfiles = conf.d/*.conf\n",
            prefix.path().display()
        ),
    );
    prefix.write(
        "supervisor/conf.d/shop.conf",
        &format!(
            "[program:shop]\n\
             command = {python} -c \"import os, sys, time; print(os.environ['GREETING'], sys.argv[1:], flush=True); time.sleep(100000)\"\n\
             \x20   %(program_name)s 'two words'   ; continued, with a comment\n\
             directory = {code}\n\
             user = {user}\n\
             environment = GREETING=\"hello, world\",FROM=%(here)s,HOME_WAS=%(ENV_HOME)s\n\
             autorestart = true\n\
             startsecs = 1\n\
             startretries = 5\n\
             stopsignal = INT\n\
             stopwaitsecs = 7\n\
             umask = 027\n\
             stdout_logfile_maxbytes = 10MB\n\
             stdout_logfile_backups = 2\n\
             priority = 10\n\
             \n\
             [program:cron]\n\
             command = /bin/sleep 100000\n\
             user = {user}\n\
             directory = /\n\
             autostart = false\n\
             autorestart = unexpected\n\
             stopsignal = TERM\n",
            python = bins::SYSTEM_PYTHON,
            code = code.display(),
            user = user.name,
        ),
    );

    let supervisord = supervisord_processes(&main);
    let mut names: Vec<&str> = supervisord
        .iter()
        .map(|p| p["name"].as_str().expect("a name"))
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["cron", "shop"]);

    let imported = prefix.path().join("imported");
    std::fs::create_dir(&imported).expect("creating the output dir");
    let out = import_supervisord(&imported, std::slice::from_ref(&main));
    assert_eq!(out.status.code(), Some(0), "{}", describe_output(&out));
    for theirs in &supervisord {
        let name = theirs["name"].as_str().expect("a name");
        let text = std::fs::read_to_string(imported.join(format!("{name}.toml")))
            .unwrap_or_else(|e| panic!("{name}.toml: {e}"));
        compare(name, &text, theirs, &user);
    }

    // The imported files validate, and run as supervisord ran them.
    for name in ["shop", "cron"] {
        std::fs::copy(imported.join(format!("{name}.toml")), prefix.app_file(name))
            .expect("copying into apps.d");
    }
    let daemon = Daemon::start(&prefix, DaemonOptions::default());
    let out = Command::new(bins::appctl())
        .arg("check")
        .arg("--config")
        .arg(prefix.config_path())
        .output()
        .expect("running appctl check");
    assert_eq!(out.status.code(), Some(0), "{}", describe_output(&out));
    let shop = daemon.wait_for_state("shop", State::Running, Duration::from_secs(20));
    let proc = ProcStatus::read(shop.pid.expect("pid")).expect("the app's process");
    assert_eq!(proc.uid, [user.uid; 4]);
    daemon.wait_until(Duration::from_secs(10), "the app's greeting", || {
        daemon
            .app_logs("shop", 5, false)
            .contains("hello, world ['shop', 'two words']")
    });
    assert_eq!(
        daemon.app("cron").state,
        State::Stopped,
        "autostart = false"
    );
}

#[test]
fn import_says_what_it_could_not_import_and_exits_2() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let conf = tmp.path().join("supervisord.conf");
    std::fs::write(&conf, "[program:web]\ncommand=/bin/true\n").expect("writing the config");
    let out = Command::new(bins::appctl())
        .arg("import-supervisord")
        .arg(&conf)
        .output()
        .expect("running appctl");
    assert_eq!(out.status.code(), Some(2), "{}", describe_output(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "appctl: {}:1 [program:web]: no user (or root): supervisord would run it as root, \
             which appvisor never does; add user = NAME to the section and import again\n",
            conf.display()
        )
    );
    assert!(out.stdout.is_empty());
}

// --- the corpus ---------------------------------------------------------------
//
// tests/corpus/supervisord/ holds supervisord setups modelled on public
// deployments (each file names the repository and file it models). Each
// case below puts a corpus setup on a relocated host under a prefix, asks
// supervisord 4's own parser what it would run, imports the same files,
// compares the two program by program, and then runs the imported apps
// under appvisord with the servers they name: gunicorn, uWSGI and uvicorn
// from the test venv, and small stubs (tests/corpus/stubs) for Celery,
// daphne and watchmedo, which are not installed.

/// A program a corpus venv provides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tool {
    /// Real, from the test venv.
    Gunicorn,
    Uwsgi,
    Uvicorn,
    /// Stubs from tests/corpus/stubs.
    Celery,
    Daphne,
    Watchmedo,
}

/// A file the deployment has besides its supervisord config.
#[derive(Debug, Clone, Copy)]
enum Source {
    /// Copied from tests/apps.
    TestApp(&'static str),
    /// Copied from tests/corpus/apps.
    CorpusApp(&'static str),
    Empty,
}

/// One corpus setup and what it needs to run. Paths are the deployment's
/// own; each lives under `PREFIX/root` in the test.
struct Case {
    /// Its directory under tests/corpus/supervisord.
    dir: &'static str,
    /// (file in that directory, where the deployment keeps it).
    files: &'static [(&'static str, &'static str)],
    /// The files supervisord is started with (`-c`), in `files`.
    mains: &'static [&'static str],
    /// Absolute paths in the files that are the deployment's, relocated
    /// under the prefix in their text.
    roots: &'static [&'static str],
    /// Ports the files name, each given a free one in their text.
    ports: &'static [u16],
    /// Venvs and what each provides in its bin.
    venvs: &'static [(&'static str, &'static [Tool])],
    /// The apps' code.
    code: &'static [(&'static str, Source)],
    /// Other directories the programs use (their `directory`, logs).
    dirs: &'static [&'static str],
    /// What the import says would fail at start, and the operator's fix:
    /// (app, in the message, text in its file, replaced by).
    would_fail: &'static [(&'static str, &'static str, &'static str, &'static str)],
}

/// A corpus case imported and started.
struct Ran {
    prefix: Prefix,
    daemon: Daemon,
    /// The corpus port → the free port it became.
    ports: BTreeMap<u16, u16>,
    /// What supervisord runs, across the case's files.
    processes: Vec<serde_json::Value>,
    /// The importer's stdout and stderr.
    said: String,
    /// The imported files' text by app name.
    imported: BTreeMap<String, String>,
}

impl Ran {
    fn port(&self, corpus_port: u16) -> u16 {
        self.ports[&corpus_port]
    }

    /// `GET /` on a corpus port answers 200 with `body` in it.
    fn serves(&self, app: &str, corpus_port: u16, body: &str) {
        let port = self.port(corpus_port);
        let mut last = String::new();
        let ok =
            appvisor_tests::poll_until(Duration::from_secs(20), || match http_get(port, "/") {
                Ok(r) if r.status == 200 && r.body.contains(body) => true,
                Ok(r) => {
                    last = format!("{} {}", r.status, r.body);
                    false
                }
                Err(e) => {
                    last = e.to_string();
                    false
                }
            });
        assert!(
            ok,
            "{app} on port {port} (corpus {corpus_port}) does not answer GET / with {body:?}: \
             {last}\n{}\n{}",
            self.daemon.app_logs(app, 20, false),
            self.daemon.app_logs(app, 20, true)
        );
    }

    /// The imported file of `app`.
    fn file(&self, app: &str) -> &str {
        self.imported
            .get(app)
            .unwrap_or_else(|| panic!("no {app}.toml imported; {:?}", self.imported.keys()))
    }

    /// `appctl stop APP` returns within `limit`: the stop signal stops it,
    /// rather than the kill after the stop timeout.
    fn stops_within(&self, app: &str, limit: Duration) {
        let started = std::time::Instant::now();
        let out = self.daemon.appctl(["stop", app]);
        assert_eq!(out.status.code(), Some(0), "{}", describe_output(&out));
        assert!(
            started.elapsed() < limit,
            "stopping {app} took {:?}\n{}",
            started.elapsed(),
            self.daemon.app_logs(app, 20, true)
        );
    }

    fn pid(&self, app: &str) -> u32 {
        self.daemon
            .app(app)
            .pid
            .unwrap_or_else(|| panic!("{app} has no pid"))
    }
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus")
}

/// `text` with every `from` that is a whole number (no digit either side)
/// replaced by `to`.
fn replace_number(text: &str, from: u16, to: u16) -> String {
    let from = from.to_string();
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find(&from) {
        let before = rest[..at].chars().next_back();
        let after = rest[at + from.len()..].chars().next();
        out.push_str(&rest[..at]);
        if before.is_some_and(|c| c.is_ascii_digit()) || after.is_some_and(|c| c.is_ascii_digit()) {
            out.push_str(&from);
        } else {
            out.push_str(&to.to_string());
        }
        rest = &rest[at + from.len()..];
    }
    out.push_str(rest);
    out
}

/// A corpus file's text on the test host: the deployment's paths under
/// `root`, its ports free ones, and every `user` option but root the test
/// user.
fn relocate(
    text: &str,
    case: &Case,
    root: &Path,
    ports: &BTreeMap<u16, u16>,
    user: &str,
) -> String {
    let mut text = text.to_owned();
    for r in case.roots {
        text = text.replace(r, &format!("{}{r}", root.display()));
    }
    for (from, to) in ports {
        text = replace_number(&text, *from, *to);
    }
    text.lines()
        .map(|line| {
            let trimmed = line.trim_start();
            match trimmed.strip_prefix("user").map(str::trim_start) {
                Some(value) if value.starts_with('=') => {
                    let name = value[1..]
                        .split([';', '#'])
                        .next()
                        .unwrap_or_default()
                        .trim();
                    if name == "root" {
                        line.to_owned()
                    } else {
                        format!("user={user}")
                    }
                }
                _ => line.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

fn run_ok(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", describe_output(&out));
}

fn write_mode(path: &Path, text: &str, mode: u32) {
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("creating its directory");
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// A venv at `dir` made as a deployment makes one (Debian's python3 -m
/// venv), with what `tools` need copied from the test venv (not linked:
/// Landlock grants the app its own venv, so a link out of it would not
/// resolve) or the stub installed as a console script.
fn make_venv(dir: &Path, tools: &[Tool]) {
    run_ok(
        Command::new(bins::SYSTEM_PYTHON)
            .args(["-m", "venv", "--without-pip"])
            .arg(dir),
    );
    let test_venv = bins::venv();
    let site = |venv: &Path| venv.join("lib/python3.11/site-packages");
    let python = dir.join("bin/python");
    let script = |name: &str, body: &str| {
        write_mode(
            &dir.join("bin").join(name),
            &format!("#!{}\n{body}", python.display()),
            0o755,
        );
    };
    for tool in tools {
        let packages: &[&str] = match tool {
            Tool::Gunicorn => &["gunicorn", "packaging"],
            Tool::Uvicorn => &["uvicorn", "click", "h11"],
            _ => &[],
        };
        for package in packages {
            run_ok(
                Command::new("cp")
                    .arg("-r")
                    .arg(site(&test_venv).join(package))
                    .arg(site(dir)),
            );
        }
        match tool {
            // As pip writes console scripts: uvicorn's workers re-run
            // __main__ (multiprocessing's spawn), which must not serve.
            Tool::Gunicorn => script(
                "gunicorn",
                "import sys\nfrom gunicorn.app.wsgiapp import run\n\
                 if __name__ == \"__main__\":\n    sys.exit(run())\n",
            ),
            Tool::Uvicorn => script(
                "uvicorn",
                "import sys\nfrom uvicorn.main import main\n\
                 if __name__ == \"__main__\":\n    sys.exit(main())\n",
            ),
            Tool::Uwsgi => run_ok(
                Command::new("cp")
                    .arg(test_venv.join("bin/uwsgi"))
                    .arg(dir.join("bin/uwsgi")),
            ),
            Tool::Celery | Tool::Daphne | Tool::Watchmedo => {
                let name = format!("{tool:?}").to_lowercase();
                let stub = std::fs::read_to_string(corpus_dir().join("stubs").join(&name))
                    .unwrap_or_else(|e| panic!("stub {name}: {e}"));
                let body = stub.split_once('\n').map_or("", |(_, rest)| rest);
                script(&name, body);
            }
        }
    }
    run_ok(Command::new("chmod").args(["-R", "a+rX"]).arg(dir));
}

/// Words a server's bind options are given as, which the importer moves
/// to [[listen]].
const BIND_WORDS: &[&str] = &[
    "-b",
    "--bind",
    "-p",
    "--port",
    "--host",
    "-u",
    "--uds",
    "--http",
    "--http-socket",
    "--socket",
    "-s",
];

/// Asserts that `ours` (the imported command) is supervisord's `theirs`
/// but for binds moved to held sockets: the words dropped are bind options
/// with their values, the words added a held socket's fd.
fn assert_same_command(app: &str, ours: &[String], theirs: &[String], text: &str) {
    let is_bind = |word: &str| {
        let option = word.split('=').next().unwrap_or_default();
        BIND_WORDS.contains(&option)
    };
    let mut binds: Vec<&String> = Vec::new();
    let mut rest: Vec<&String> = Vec::new();
    let mut i = 0;
    while i < theirs.len() {
        let word = &theirs[i];
        let value = theirs.get(i + 1).filter(|_| !word.contains('='));
        let moved = match value {
            Some(value) => !ours.contains(value),
            None => !ours.contains(word),
        };
        if is_bind(word) && moved {
            binds.push(word);
            if let Some(value) = value {
                binds.push(value);
                i += 1;
            }
        } else {
            rest.push(word);
        }
        i += 1;
    }
    // The held sockets the import added: `--fd N`, `--socket fd://N`.
    let mut ours_rest: Vec<&String> = Vec::new();
    let mut i = 0;
    while i < ours.len() {
        let next = ours.get(i + 1).map(String::as_str).unwrap_or_default();
        let added = match ours[i].as_str() {
            "--fd" => !theirs.contains(&ours[i]) && next.parse::<u32>().is_ok(),
            "--http-socket" | "--socket" => next.starts_with("fd://"),
            _ => false,
        };
        if added {
            i += 2;
        } else {
            ours_rest.push(&ours[i]);
            i += 1;
        }
    }
    assert_eq!(
        ours_rest, rest,
        "{app}: the command is supervisord's {theirs:?} but for the binds {binds:?} moved to \
         held sockets\n{text}"
    );
}

/// Puts `case` on a relocated host, compares the import with supervisord
/// process by process, and starts the imported apps under appvisord.
fn run_case(case: &Case) -> Ran {
    let user = TestUser::ensure("avt-app4");
    let prefix = Prefix::new();
    let root = prefix.path().join("root");
    let ports: BTreeMap<u16, u16> = case.ports.iter().map(|p| (*p, free_port())).collect();
    let at = |path: &str| root.join(path.trim_start_matches('/'));
    let source = corpus_dir().join("supervisord").join(case.dir);
    for (file, deployed) in case.files {
        let text = std::fs::read_to_string(source.join(file))
            .unwrap_or_else(|e| panic!("{}/{file}: {e}", case.dir));
        write_mode(
            &at(deployed),
            &relocate(&text, case, &root, &ports, &user.name),
            0o644,
        );
    }
    for (path, what) in case.code {
        let text = match what {
            Source::TestApp(name) => std::fs::read_to_string(bins::apps_src().join(name)),
            Source::CorpusApp(name) => {
                std::fs::read_to_string(corpus_dir().join("apps").join(name))
            }
            Source::Empty => Ok(String::new()),
        }
        .unwrap_or_else(|e| panic!("{what:?}: {e}"));
        write_mode(&at(path), &text, 0o644);
    }
    for dir in case.dirs {
        std::fs::create_dir_all(at(dir)).expect("creating a program's directory");
    }
    for (venv, tools) in case.venvs {
        make_venv(&at(venv), tools);
    }
    // Every directory down to the deployment is traversable, as on a host.
    run_ok(Command::new("chmod").args(["-R", "a+rX"]).arg(&root));
    let mains: Vec<PathBuf> = case.mains.iter().map(|m| at(m)).collect();

    // What supervisord would run, and what the importer makes of it.
    let processes: Vec<serde_json::Value> = mains
        .iter()
        .flat_map(|m| supervisord_processes(m))
        .collect();
    let imported_dir = prefix.path().join("imported");
    std::fs::create_dir(&imported_dir).expect("creating the output dir");
    let out = import_supervisord(&imported_dir, &mains);
    let said = describe_output(&out);
    let not_imported: Vec<&serde_json::Value> = processes
        .iter()
        .filter(|p| p["kind"] != "program")
        .collect();
    let expected_exit = if not_imported.is_empty() && case.would_fail.is_empty() {
        0
    } else {
        2
    };
    assert_eq!(out.status.code(), Some(expected_exit), "{said}");
    let failing: Vec<&str> = said
        .lines()
        .filter(|l| l.contains("would fail at start"))
        .collect();
    assert_eq!(failing.len(), case.would_fail.len(), "{said}");
    for (app, message, _, _) in case.would_fail {
        assert!(
            failing
                .iter()
                .any(|l| l.contains(&format!("/{app}.toml")) && l.contains(message)),
            "the import says {app} would fail at start with {message:?}: {said}"
        );
    }
    for p in &not_imported {
        assert!(
            said.contains(&format!(
                "[{}:{}]",
                p["kind"].as_str().unwrap_or_default(),
                p["group"].as_str().unwrap_or_default()
            )) && said.contains("not imported"),
            "supervisord runs {}, which the import must report: {said}",
            p["name"]
        );
    }
    let mut imported: BTreeMap<String, String> = BTreeMap::new();
    for entry in std::fs::read_dir(&imported_dir).expect("reading the output dir") {
        let path = entry.expect("a dir entry").path();
        let name = path
            .file_stem()
            .expect("a name")
            .to_string_lossy()
            .into_owned();
        imported.insert(
            name,
            std::fs::read_to_string(&path).expect("reading an imported file"),
        );
    }

    // Process by process, as supervisord would have run it.
    let programs: Vec<&serde_json::Value> = processes
        .iter()
        .filter(|p| p["kind"] == "program")
        .collect();
    // The corpus's names are app names already: none is renamed.
    let names: Vec<String> = programs
        .iter()
        .map(|p| p["name"].as_str().expect("a name").to_owned())
        .collect();
    assert_eq!(
        imported.keys().cloned().collect::<Vec<_>>(),
        {
            let mut sorted = names.clone();
            sorted.sort();
            sorted
        },
        "one app per process supervisord runs\n{said}"
    );
    for (theirs, name) in programs.iter().zip(&names) {
        compare(name, &imported[name], theirs, &user);
    }

    // The imported files, fixed as the import said, validate and run.
    for (app, _, from, to) in case.would_fail {
        let text = imported.get_mut(*app).expect("an imported app");
        assert!(text.contains(from), "{app}: {from:?} in\n{text}");
        *text = text.replace(from, to);
    }
    for (name, text) in &imported {
        std::fs::write(prefix.app_file(name), text).expect("writing into apps.d");
    }
    let daemon = Daemon::start(&prefix, DaemonOptions::default());
    let out = Command::new(bins::appctl())
        .arg("check")
        .arg("--config")
        .arg(prefix.config_path())
        .output()
        .expect("running appctl check");
    assert_eq!(out.status.code(), Some(0), "{}", describe_output(&out));
    for (theirs, name) in programs.iter().zip(&names) {
        let want = if theirs["autostart"] == true {
            State::Running
        } else {
            State::Stopped
        };
        let status = daemon.wait_for_state(name, want, Duration::from_secs(60));
        if want == State::Running {
            let proc = ProcStatus::read(status.pid.expect("a pid")).expect("the app's process");
            assert_eq!(proc.uid, [user.uid; 4], "{name} runs as the test user");
        }
    }
    Ran {
        prefix,
        daemon,
        ports,
        processes,
        said,
        imported,
    }
}

/// One imported file against supervisord's view of the process.
fn compare(name: &str, text: &str, theirs: &serde_json::Value, user: &TestUser) {
    let ours: toml::Table = text
        .parse()
        .unwrap_or_else(|e| panic!("{name}: {e}\n{text}"));
    let say = |what: &str| format!("{name}: {what}\n{text}");
    let str_of = |v: &toml::Value| v.as_str().unwrap_or_default().to_owned();
    let strings = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .map(|w| w.as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let has_note = |note: &str| {
        text.lines()
            .any(|l| l.starts_with("# note:") && l.contains(note))
    };

    // Group: `supervisorctl restart GROUP:*` is `appctl restart group:GROUP`.
    let group = theirs["group"].as_str().expect("a group");
    let app_groups: Vec<String> = ours
        .get("app_groups")
        .and_then(toml::Value::as_array)
        .map(|a| a.iter().map(str_of).collect())
        .unwrap_or_default();
    if group != theirs["name"] {
        assert!(
            app_groups.iter().any(|g| g == group),
            "{}",
            say(&format!("in group {group}"))
        );
    }

    // Command: supervisord's, with the program it found for a bare name,
    // but for binds moved to held sockets.
    let command: Vec<String> = ours["command"]
        .as_array()
        .expect("command")
        .iter()
        .map(str_of)
        .collect();
    let mut their_command = strings(&theirs["command"]);
    match theirs["filename"].as_str() {
        Some(found) => their_command[0] = found.to_owned(),
        None => panic!("{}", say("supervisord finds no program to run")),
    }
    assert_same_command(name, &command, &their_command, text);

    assert_eq!(
        theirs["uid"].as_u64(),
        Some(u64::from(user.uid)),
        "{}",
        say("supervisord's uid")
    );
    assert_eq!(str_of(&ours["user"]), user.name, "{}", say("user"));
    match theirs["directory"].as_str() {
        Some(dir) => assert_eq!(str_of(&ours["directory"]), dir, "{}", say("directory")),
        None => {
            assert_eq!(str_of(&ours["directory"]), "/", "{}", say("directory"));
            assert!(
                has_note("no directory"),
                "{}",
                say("the note on no directory")
            );
        }
    }
    let umask = theirs["umask"].as_u64().unwrap_or(0o022);
    assert_eq!(
        ours.get("umask").map(str_of),
        Some(format!("{umask:04o}")),
        "{}",
        say("umask")
    );
    let env: BTreeMap<String, String> = ours
        .get("environment")
        .and_then(toml::Value::as_table)
        .map(|t| t.iter().map(|(k, v)| (k.clone(), str_of(v))).collect())
        .unwrap_or_default();
    let their_env: BTreeMap<String, String> =
        serde_json::from_value(theirs["environment"].clone()).expect("environment");
    assert_eq!(env, their_env, "{}", say("environment"));
    assert_eq!(
        ours["autostart"].as_bool(),
        theirs["autostart"].as_bool(),
        "{}",
        say("autostart")
    );
    let restart = ours["restart"].as_table().expect("[restart]");
    assert_eq!(
        str_of(&restart["policy"]),
        theirs["autorestart"],
        "{}",
        say("policy")
    );
    assert_eq!(
        str_of(&restart["start_secs"]),
        format!("{}s", theirs["startsecs"]),
        "{}",
        say("start_secs")
    );
    assert_eq!(
        restart["max_retries"].as_integer(),
        theirs["startretries"].as_i64().map(|n| n + 1),
        "{}",
        say("startretries N is N + 1 failed starts")
    );
    let stop = ours["stop"].as_table().expect("[stop]");
    let signal = str_of(&stop["signal"]);
    if signal != theirs["stopsignal"] {
        // The one change on purpose: uWSGI reloads on TERM.
        assert!(
            signal == "INT" && theirs["stopsignal"] == "TERM" && has_note("uWSGI reloads on TERM"),
            "{}",
            say("stop signal")
        );
    }
    assert_eq!(
        str_of(&stop["timeout"]),
        format!("{}s", theirs["stopwaitsecs"]),
        "{}",
        say("stop timeout")
    );
    if theirs["priority"] != 999 {
        assert!(has_note("priority = "), "{}", say("the note on priority"));
    }
    let logs = ours["logs"].as_table().expect("[logs]");
    let max_size = str_of(&logs["max_size"]);
    let (digits, unit) =
        max_size.split_at(max_size.find(|c: char| !c.is_ascii_digit()).unwrap_or(0));
    let factor = match unit {
        "GiB" => 1 << 30,
        "MiB" => 1 << 20,
        "KiB" => 1 << 10,
        _ => 1,
    };
    let bytes = digits.parse::<u64>().expect("a size") * factor;
    match theirs["maxbytes"].as_u64().expect("maxbytes") {
        // supervisord's "never rotate": appvisor always rotates.
        0 => assert!(
            bytes == 50 << 20 && has_note("stdout_logfile_maxbytes = 0"),
            "{}",
            say("max_size")
        ),
        maxbytes => assert_eq!(bytes, maxbytes, "{}", say("max_size")),
    }
    assert_eq!(
        logs["keep"].as_integer(),
        theirs["backups"].as_i64(),
        "{}",
        say("keep")
    );
}

const ADDONS_SERVER: Case = Case {
    dir: "addons-server",
    files: &[
        ("supervisord.conf", "/srv/amo/docker/supervisord.conf"),
        (
            "supervisord-worker.conf",
            "/srv/amo/docker/supervisord-worker.conf",
        ),
        ("uwsgi.ini", "/srv/amo/docker/uwsgi.ini"),
    ],
    mains: &[
        "/srv/amo/docker/supervisord.conf",
        "/srv/amo/docker/supervisord-worker.conf",
    ],
    roots: &["/srv/amo"],
    ports: &[8001],
    venvs: &[(
        "/srv/amo/venv",
        &[Tool::Uwsgi, Tool::Watchmedo, Tool::Celery],
    )],
    code: &[("/srv/amo/src/amo/wsgi.py", Source::TestApp("wsgi_app.py"))],
    dirs: &["/srv/amo/logs"],
    // The reloader ran in the shared /tmp; appvisor gives each app its own.
    would_fail: &[(
        "reloader",
        "directory /tmp is under a temporary directory",
        "directory = \"/tmp\"",
        "directory = \"/\"",
    )],
};

#[test]
fn corpus_addons_server_runs_as_supervisords_user_with_bare_uwsgi_and_watchmedo() {
    require_root!();
    let ran = run_case(&ADDONS_SERVER);
    // uWSGI's socket is in its ini, which it still binds itself.
    let web = ran.file("web");
    assert!(
        web.contains(&format!("bind_ports = [{}]", ran.port(8001))),
        "{web}"
    );
    ran.serves("web", 8001, "hello from");
    let worker = ran.file("worker");
    assert!(
        worker.contains("venv = "),
        "watchmedo's venv is Celery's:\n{worker}"
    );
    ran.daemon
        .wait_until(Duration::from_secs(10), "the worker's celery", || {
            ran.daemon
                .app_logs("worker", 10, false)
                .contains("celery stub pid")
        });
}

const CELERY_EXTRA: Case = Case {
    dir: "celery-extra",
    files: &[
        ("supervisord.conf", "/etc/supervisor-tasks/supervisord.conf"),
        ("celeryd.conf", "/etc/supervisor-tasks/celeryd.conf"),
        ("celerybeat.conf", "/etc/supervisor-tasks/celerybeat.conf"),
    ],
    mains: &["/etc/supervisor-tasks/supervisord.conf"],
    roots: &["/srv/tasks"],
    ports: &[],
    venvs: &[("/srv/tasks/venv", &[Tool::Celery])],
    code: &[],
    dirs: &["/srv/tasks/current", "/srv/tasks/state"],
    would_fail: &[],
};

#[test]
fn corpus_celery_extra_relative_includes_run_worker_and_beat() {
    require_root!();
    let ran = run_case(&CELERY_EXTRA);
    assert_eq!(ran.imported.len(), 2, "{}", ran.said);
    // The worker's warm shutdown is TERM's, well within its 300 s.
    ran.stops_within("tasks-worker", Duration::from_secs(10));
}

const CELERY_NUMPROCS: Case = Case {
    dir: "celery-numprocs",
    files: &[("supervisord.conf", "/etc/supervisor/supervisord.conf")],
    mains: &["/etc/supervisor/supervisord.conf"],
    roots: &["/opt/keryu"],
    ports: &[],
    venvs: &[("/opt/keryu/env", &[Tool::Celery])],
    code: &[],
    dirs: &["/opt/keryu/app", "/opt/keryu/logs"],
    would_fail: &[],
};

#[test]
fn corpus_celery_numprocs_are_one_app_each_and_groups_act_on_them_all() {
    require_root!();
    let ran = run_case(&CELERY_NUMPROCS);
    let workers = ["jobs_worker_00", "jobs_worker_01", "jobs_worker_02"];
    assert_eq!(
        ran.imported.keys().collect::<Vec<_>>(),
        [
            "jobs_beat",
            "jobs_worker_00",
            "jobs_worker_01",
            "jobs_worker_02"
        ]
    );
    assert_eq!(
        ran.processes
            .iter()
            .filter(|p| p["group"] == "jobs")
            .count(),
        4,
        "supervisord's jobs:*"
    );
    // Each process has its own node name, as supervisord expanded it.
    ran.daemon
        .wait_until(Duration::from_secs(10), "worker 01's node name", || {
            ran.daemon
                .app_logs("jobs_worker_01", 5, false)
                .contains("--hostname=worker01@%h")
        });

    // supervisorctl restart jobs:*
    let before: Vec<u32> = ran.imported.keys().map(|a| ran.pid(a)).collect();
    let out = ran.daemon.appctl(["restart", "group:jobs"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe_output(&out));
    let after: Vec<u32> = ran.imported.keys().map(|a| ran.pid(a)).collect();
    for (i, app) in ran.imported.keys().enumerate() {
        assert_ne!(before[i], after[i], "{app} was restarted");
    }
    // supervisorctl stop jobs_worker:*: the workers, not beat.
    let out = ran.daemon.appctl(["stop", "group:jobs_worker"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe_output(&out));
    for app in workers {
        assert_eq!(ran.daemon.app(app).state, State::Stopped, "{app}");
    }
    assert_eq!(ran.daemon.app("jobs_beat").state, State::Running);
}

const RESTAURANT: Case = Case {
    dir: "restaurant",
    files: &[
        ("supervisord.conf", "/etc/supervisor/supervisord.conf"),
        ("conf.d/group.conf", "/etc/supervisor/conf.d/group.conf"),
        ("conf.d/web.conf", "/etc/supervisor/conf.d/web.conf"),
        ("conf.d/ws.conf", "/etc/supervisor/conf.d/ws.conf"),
        ("conf.d/worker.conf", "/etc/supervisor/conf.d/worker.conf"),
        ("conf.d/beat.conf", "/etc/supervisor/conf.d/beat.conf"),
        ("gunicorn_conf.py", "/home/bistro/site/src/gunicorn_conf.py"),
    ],
    mains: &["/etc/supervisor/supervisord.conf"],
    roots: &["/home/bistro"],
    ports: &[8001, 8002],
    venvs: &[(
        "/home/bistro/site/venv",
        &[Tool::Gunicorn, Tool::Daphne, Tool::Celery],
    )],
    code: &[
        ("/home/bistro/site/src/bistro/__init__.py", Source::Empty),
        (
            "/home/bistro/site/src/bistro/wsgi.py",
            Source::TestApp("wsgi_app.py"),
        ),
    ],
    dirs: &["/home/bistro/site/logs"],
    would_fail: &[],
};

#[test]
fn corpus_django_gunicorn_daphne_and_celery_in_one_group_serve_on_held_sockets() {
    require_root!();
    let ran = run_case(&RESTAURANT);
    // gunicorn's bind is in its --config file: held, and served from
    // LISTEN_FDS.
    let web = ran.file("web");
    assert!(
        web.contains(&format!("address = \"127.0.0.1:{}\"", ran.port(8001)))
            && web.contains("kind = \"notify\""),
        "{web}"
    );
    ran.serves("web", 8001, "hello from");
    ran.serves("ws", 8002, "daphne stub bistro.asgi:application");
    let before: Vec<u32> = ran.imported.keys().map(|a| ran.pid(a)).collect();
    let out = ran.daemon.appctl(["restart", "group:bistro"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe_output(&out));
    let after: Vec<u32> = ran.imported.keys().map(|a| ran.pid(a)).collect();
    for (i, app) in ran.imported.keys().enumerate() {
        assert_ne!(before[i], after[i], "{app} was restarted");
    }
    ran.serves("web", 8001, "hello from");
    ran.serves("ws", 8002, "daphne stub");
}

const HELLO: Case = Case {
    dir: "hello",
    files: &[
        ("supervisord.conf", "/etc/supervisord.conf"),
        ("supervisord.d/hello.ini", "/etc/supervisord.d/hello.ini"),
    ],
    mains: &["/etc/supervisord.conf"],
    roots: &["/srv/hello"],
    ports: &[8020, 8021],
    venvs: &[],
    code: &[("/srv/hello/app.py", Source::CorpusApp("port_app.py"))],
    dirs: &[],
    would_fail: &[],
};

#[test]
fn corpus_an_app_binding_its_own_port_still_binds_it() {
    require_root!();
    let ran = run_case(&HELLO);
    for (app, port) in [("hello-a", 8020), ("hello-b", 8021)] {
        let file = ran.file(app);
        assert!(
            file.contains(&format!("bind_ports = [{}]", ran.port(port))),
            "{file}"
        );
    }
    ran.serves("hello-a", 8020, "port app on");
    ran.serves("hello-b", 8021, "port app on");
}

const SENTIMENT_UWSGI: Case = Case {
    dir: "sentiment-uwsgi",
    files: &[("supervisord.conf", "/etc/supervisor/classifier.conf")],
    mains: &["/etc/supervisor/classifier.conf"],
    roots: &["/srv/classifier"],
    ports: &[8030, 9391],
    venvs: &[("/srv/classifier/venv", &[Tool::Uwsgi])],
    code: &[("/srv/classifier/www/web.py", Source::TestApp("wsgi_app.py"))],
    dirs: &[],
    would_fail: &[],
};

#[test]
fn corpus_uwsgi_http_router_becomes_a_held_http_socket() {
    require_root!();
    let ran = run_case(&SENTIMENT_UWSGI);
    // --http on a held socket; the stats server it binds itself.
    let file = ran.file("classifier");
    assert!(
        file.contains(&format!("address = \"0.0.0.0:{}\"", ran.port(8030)))
            && file.contains(&format!("bind_ports = [{}]", ran.port(9391))),
        "{file}"
    );
    assert!(file.contains("signal = \"INT\""), "{file}");
    ran.serves("classifier", 8030, "hello from");
    // supervisord's TERM would have made uWSGI reload; the import's INT
    // stops it at once. Once every
    // worker accepts, as its stats server says: a worker still starting
    // up when INT comes holds the master up to its reload mercy.
    let stats = ran.port(9391);
    ran.daemon.wait_until(
        Duration::from_secs(20),
        "every uWSGI worker accepting",
        || {
            uwsgi_stats(stats).is_ok_and(|s| {
                s["workers"]
                    .as_array()
                    .is_some_and(|w| w.iter().all(|w| w["accepting"] == 1))
            })
        },
    );
    ran.stops_within("classifier", Duration::from_secs(8));
}

/// What uWSGI's stats server on 127.0.0.1:`port` says (its JSON, sent
/// on connect).
fn uwsgi_stats(port: u16) -> std::io::Result<serde_json::Value> {
    use std::io::Read as _;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    serde_json::from_str(&text).map_err(std::io::Error::other)
}

const WEBSHOP: Case = Case {
    dir: "webshop",
    files: &[("supervisor.cfg", "/srv/webshop/deploy/supervisor.cfg")],
    mains: &["/srv/webshop/deploy/supervisor.cfg"],
    roots: &[],
    ports: &[],
    venvs: &[("/srv/webshop/deploy/env", &[Tool::Uwsgi])],
    code: &[(
        "/srv/webshop/deploy/code/shop_wsgi.py",
        Source::TestApp("wsgi_app.py"),
    )],
    dirs: &["/srv/webshop/deploy/run", "/srv/webshop/deploy/logs"],
    would_fail: &[],
};

/// A GET / in the uwsgi protocol on a Unix socket: the response's text.
fn uwsgi_get(socket: &Path) -> std::io::Result<String> {
    use std::io::{Read as _, Write as _};
    let vars = [
        ("REQUEST_METHOD", "GET"),
        ("PATH_INFO", "/"),
        ("SERVER_PROTOCOL", "HTTP/1.0"),
        ("SERVER_NAME", "localhost"),
        ("SERVER_PORT", "80"),
    ];
    let mut body = Vec::new();
    for (k, v) in vars {
        for s in [k, v] {
            body.extend((s.len() as u16).to_le_bytes());
            body.extend(s.as_bytes());
        }
    }
    let mut packet = vec![0u8];
    packet.extend((body.len() as u16).to_le_bytes());
    packet.push(0);
    packet.extend(body);
    let mut stream = std::os::unix::net::UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(&packet)?;
    let mut out = String::new();
    stream.read_to_string(&mut out)?;
    Ok(out)
}

#[test]
fn corpus_here_relative_deployment_serves_uwsgi_on_held_unix_sockets() {
    require_root!();
    let ran = run_case(&WEBSHOP);
    let run = ran.prefix.path().join("root/srv/webshop/deploy/run");
    for (app, socket) in [("shop1", "shop.1.sock"), ("shop2", "shop.2.sock")] {
        let said = uwsgi_get(&run.join(socket))
            .unwrap_or_else(|e| panic!("{app}: {e}\n{}", ran.daemon.app_logs(app, 20, true)));
        assert!(said.contains("hello from"), "{app}: {said}");
    }
    assert!(
        ran.file("shop1").contains("app_groups = [\"front\"]"),
        "{}",
        ran.file("shop1")
    );
}

const CHANNELS_FCGI: Case = Case {
    dir: "channels-fcgi",
    files: &[("supervisord.conf", "/etc/supervisor/supervisord.conf")],
    mains: &["/etc/supervisor/supervisord.conf"],
    roots: &["/srv/chat"],
    ports: &[8040],
    venvs: &[],
    code: &[],
    dirs: &[],
    would_fail: &[],
};

#[test]
fn corpus_fcgi_program_daphne_is_reported_not_imported() {
    require_root!();
    let ran = run_case(&CHANNELS_FCGI);
    assert_eq!(ran.processes.len(), 2, "supervisord runs chat0 and chat1");
    assert!(ran.imported.is_empty(), "{:?}", ran.imported.keys());
}

const FASTAPI_UVICORN: Case = Case {
    dir: "fastapi-uvicorn",
    files: &[("supervisord.conf", "/etc/supervisor/supervisord.conf")],
    mains: &["/etc/supervisor/supervisord.conf"],
    roots: &["/srv/parser"],
    ports: &[8050],
    venvs: &[("/srv/parser/venv", &[Tool::Uvicorn])],
    code: &[("/srv/parser/app/main.py", Source::CorpusApp("asgi_app.py"))],
    dirs: &[],
    would_fail: &[],
};

#[test]
fn corpus_uvicorn_serves_its_held_socket_with_fd_3_across_a_restart() {
    require_root!();
    let ran = run_case(&FASTAPI_UVICORN);
    assert!(
        ran.file("parser-api").contains("\"--fd\", \"3\""),
        "{}",
        ran.file("parser-api")
    );
    ran.serves("parser-api", 8050, "asgi app");
    let out = ran.daemon.appctl(["restart", "parser-api"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe_output(&out));
    ran.serves("parser-api", 8050, "asgi app");
}
