//! uWSGI as users run it on appvisord's held sockets (docs/servers.md):
//! `--http-socket fd://3` with a master and several workers and notify
//! readiness; `--socket fd://3` behind Debian's nginx; started through a
//! wrapper, which still stops with INT (uWSGI 2.0 reloads on TERM); with
//! the hook that makes TERM a graceful stop, so no request in flight is
//! cut; and without an `fd://` option, which serves the held socket with
//! the uwsgi protocol: what `appctl check` warns about.

use std::fs;
use std::os::unix::fs::{chown, PermissionsExt};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use appvisor_config::uwsgi::GRACEFUL_TERM_HOOK;
use appvisor_tests::daemon::{daemon_config, describe_output};
use appvisor_tests::load::{Ending, InFlight};
use appvisor_tests::nginx::Nginx;
use appvisor_tests::servers::{
    health_url, server_app, uwsgi_command, AppDir, Framework, Release, ServedApp, Server, APP_USER,
    OWNER, WORKERS,
};
use appvisor_tests::{
    bins, free_port, http_get, require_root, Daemon, DaemonOptions, Prefix, ProcStatus, State,
    Strategy, TestUser,
};

#[test]
fn http_socket_fd_3_serves_from_a_master_and_its_workers_after_ready() {
    require_root!();
    let app = ServedApp::start(Server::Uwsgi, Framework::Flask, |app| app);
    let status = app.daemon.app(app.name());
    assert!(
        status.reason.to_lowercase().contains("ready"),
        "running once uWSGI said READY=1: {status:#?}"
    );
    let master = status.pid.expect("a running app has a pid");
    // Two slow requests at once: one per worker, each a child of the
    // master appvisord supervises, running as the app's user.
    let in_flight = InFlight::open(app.port, WORKERS as usize, 1);
    let mut workers = in_flight.workers.clone();
    in_flight.finish();
    workers.sort_unstable();
    workers.dedup();
    assert_eq!(workers.len(), WORKERS as usize, "answered by {workers:?}");
    for worker in workers {
        let proc = ProcStatus::read(worker).expect("the worker that answered exists");
        assert_eq!(proc.ppid, master, "worker {worker} is the master's child");
        assert_eq!(proc.uid, [app.user.uid; 4]);
    }
    assert_eq!(
        app.get("/"),
        "hello from avt-srv-app, flask, release 1\n",
        "HTTP on the held socket"
    );
}

/// docs/servers.md, "Requests in flight": uWSGI 2.0 kills its workers at
/// once on INT and QUIT, cutting requests in flight, unless
/// `--hook-master-start "unix_signal:15 gracefully_kill_them_all"` makes
/// TERM a graceful stop. With it (as `appctl import-uwsgi` writes it) the
/// stop signal defaults to TERM, and a restart of either strategy or a
/// stop lets the requests it was answering finish.
#[test]
fn with_the_graceful_term_hook_stop_and_restart_finish_requests_in_flight() {
    require_root!();
    for (strategy, actions) in [
        (Strategy::StopStart, &["restart", "stop"][..]),
        (Strategy::StartStop, &["restart"][..]),
    ] {
        let app = ServedApp::start(Server::Uwsgi, Framework::Flask, |app| {
            app.args(["--hook-master-start", GRACEFUL_TERM_HOOK])
                .strategy(strategy)
        });
        for action in actions {
            let in_flight = InFlight::open(app.port, WORKERS as usize, 2);
            let out = app.daemon.appctl([action, app.name()]);
            assert!(
                out.status.success(),
                "{strategy:?} {action}: {}",
                describe_output(&out)
            );
            let endings = in_flight.finish();
            assert!(
                endings.iter().all(|e| *e == Ending::Completed),
                "{strategy:?} {action}: requests in flight should complete, but ended \
                 {endings:?}\n{}\n{}",
                app.app_log(),
                app.daemon.log_tail(40)
            );
        }
    }
}

#[test]
fn socket_fd_3_serves_nginx_uwsgi_pass() {
    require_root!();
    let nginx_port = free_port();
    let app = ServedApp::launch(
        Server::Uwsgi,
        Framework::Django,
        DaemonOptions::default(),
        |app| app,
    );
    let nginx = Nginx::uwsgi_pass(&app.prefix, nginx_port, &format!("127.0.0.1:{}", app.port));
    // The builder's command is --http-socket: rewrite the app to the
    // uwsgi protocol, with its health url behind nginx, and apply it.
    let command = uwsgi_command(
        Framework::Django,
        &app.dir.current(),
        &["--socket", "fd://3"],
    );
    app.app
        .clone()
        .command(command)
        .readiness_url(&health_url(nginx_port))
        .write(&app.prefix);
    let out = app.daemon.appctl(["update"]);
    assert!(out.status.success(), "{}", describe_output(&out));
    let mut last = None;
    app.daemon.wait_until(
        Duration::from_secs(30),
        "GET / through nginx to answer from uWSGI's uwsgi protocol",
        || {
            last = Some(http_get(nginx_port, "/"));
            matches!(&last, Some(Ok(r)) if r.status == 200)
        },
    );
    assert_eq!(
        last.unwrap().unwrap().body,
        "hello from avt-srv-app, django, release 1\n",
        "{}",
        nginx.error_log()
    );
    // Serving through nginx comes first: the readiness probe, through the
    // instance's own socket, may pass a moment later.
    app.daemon
        .wait_for_state(app.name(), State::Running, Duration::from_secs(30));
    // The held socket speaks the uwsgi protocol now, not HTTP.
    assert!(
        !http_get(app.port, "/").is_ok_and(|r| r.status == 200),
        "uWSGI answered HTTP on a --socket"
    );
    // And reload keeps nginx's upstream serving.
    let out = app.daemon.appctl(["reload", app.name()]);
    assert!(out.status.success(), "{}", describe_output(&out));
    app.daemon
        .wait_until(Duration::from_secs(30), "GET /health through nginx", || {
            http_get(nginx_port, "/health").is_ok_and(|r| r.status == 200)
        });
}

/// `words` quoted for sh.
fn shell_words(words: &[String]) -> String {
    let quoted: Vec<String> = words
        .iter()
        .map(|w| format!("'{}'", w.replace('\'', r"'\''")))
        .collect();
    quoted.join(" ")
}

/// The owner's own venv for app `name`, `ROOT/venv`, with a copy of the
/// test venv's uwsgi and a wrapper script `bin/SCRIPT` that execs it
/// (serving Flask from `current`, Python packages from the test venv):
/// the one kind of wrapper the default sandbox lets run a venv's program,
/// which is command[0]'s venv. Returns the script's path.
fn venv_script(dir: &AppDir, script: &str) -> String {
    let bin = dir.root().join("venv/bin");
    fs::create_dir_all(&bin).expect("creating the app's venv");
    let owner = dir.owner();
    let install = |path: &std::path::Path, contents: &[u8]| {
        fs::write(path, contents).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        fs::set_permissions(path, fs::Permissions::from_mode(0o755)).expect("chmod");
        chown(path, Some(owner.uid), Some(owner.gid)).expect("chown");
    };
    for d in [dir.root().join("venv"), bin.clone()] {
        chown(&d, Some(owner.uid), Some(owner.gid)).expect("chown");
    }
    let uwsgi = bin.join("uwsgi");
    install(&uwsgi, &fs::read(bins::uwsgi()).expect("reading uwsgi"));
    let mut command = uwsgi_command(
        Framework::Flask,
        &dir.current(),
        &["--http-socket", "fd://3"],
    );
    command[0] = uwsgi.display().to_string();
    command.extend([
        "--virtualenv".to_owned(),
        bins::venv().display().to_string(),
    ]);
    let path = bin.join(script);
    install(
        &path,
        format!(
            "#!/bin/sh\ncd {} || exit 1\nexec {}\n",
            dir.current().display(),
            shell_words(&command)
        )
        .as_bytes(),
    );
    path.display().to_string()
}

/// App `name`: uWSGI through the script `script` of its own venv.
fn wrapped(prefix: &Prefix, name: &str, script: &str, stop_signal: Option<&str>) -> (u16, PathBuf) {
    let user = TestUser::ensure(APP_USER);
    let owner = TestUser::ensure(OWNER);
    let dir = AppDir::new(prefix, name, &owner, Framework::Flask);
    dir.deploy(1, Release::Good);
    let port = free_port();
    let mut app = server_app(name, &user, &dir, Server::Uwsgi, port)
        .command([venv_script(&dir, script)])
        .stop_timeout(STOP_TIMEOUT);
    if let Some(signal) = stop_signal {
        app = app.stop_signal(signal);
    }
    (port, app.write(prefix))
}

const STOP_TIMEOUT: Duration = Duration::from_secs(4);

fn check_report(prefix: &Prefix, file: &std::path::Path) -> String {
    fs::write(
        prefix.config_path(),
        daemon_config(prefix, &DaemonOptions::default()),
    )
    .expect("writing appvisor.toml");
    let out = std::process::Command::new(bins::appctl())
        .arg("check")
        .arg("--config")
        .arg(prefix.config_path())
        .arg(file)
        .output()
        .expect("running appctl check");
    assert_eq!(out.status.code(), Some(0), "{}", describe_output(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn uwsgi_through_a_venv_script_stops_with_int_when_named_or_told() {
    require_root!();
    let prefix = Prefix::new();
    // Named uwsgi-…: the daemon knows from the configuration.
    let (named, _) = wrapped(&prefix, "named", "uwsgi-web", None);
    // Named otherwise: check reads the script and says what to set...
    let (plain, plain_file) = wrapped(&prefix, "plain", "start", None);
    let report = check_report(&prefix, &plain_file);
    // `warning: FILE:LINE:COL: command[0]: SCRIPT is a script that runs uWSGI…`
    let warning = report
        .lines()
        .find(|line| line.contains(": command[0]: "))
        .unwrap_or_else(|| panic!("no command[0] warning in:\n{report}"));
    assert!(
        warning.starts_with(&format!("warning: {}:", plain_file.display()))
            && warning.contains(&format!(
                ": command[0]: {} is a script that runs uWSGI, which reloads on TERM",
                prefix.path().join("code/plain/venv/bin/start").display()
            )),
        "{report}"
    );
    // ... and once it is set, check has nothing to say about uWSGI.
    let (told, told_file) = wrapped(&prefix, "told", "start", Some("INT"));
    let report = check_report(&prefix, &told_file);
    assert!(!report.contains("uWSGI"), "{report}");

    let daemon = Daemon::start(&prefix, DaemonOptions::default());
    let mut took = Vec::new();
    for (name, port) in [("named", named), ("told", told), ("plain", plain)] {
        daemon.wait_for_state(name, State::Running, Duration::from_secs(60));
        daemon.wait_until(
            Duration::from_secs(30),
            "the wrapped uWSGI to serve",
            || http_get(port, "/health").is_ok_and(|r| r.status == 200),
        );
        let started = Instant::now();
        let out = daemon.appctl(["stop", name]);
        took.push(started.elapsed());
        assert!(out.status.success(), "{}", describe_output(&out));
        assert_eq!(daemon.app(name).state, State::Stopped);
    }
    let log = |name| daemon.app_logs(name, 200, true);
    for (name, took) in [("named", took[0]), ("told", took[1])] {
        // INT: uWSGI kills its workers and says goodbye, at once.
        let log = log(name);
        assert!(
            took < STOP_TIMEOUT && log.contains("goodbye to uWSGI"),
            "{name}: the stop took {took:?}; uWSGI's log:\n{log}"
        );
    }
    // TERM: uWSGI reloads, so the stop waits for the stop timeout and ends
    // in SIGKILL: what the warning is about.
    let plain_log = log("plain");
    assert!(
        took[2] >= STOP_TIMEOUT && plain_log.contains("brutally killing workers"),
        "plain: the stop took {:?}; uWSGI's log:\n{plain_log}",
        took[2]
    );
}

#[test]
fn uwsgi_through_sh_c_stops_with_int_by_default() {
    require_root!();
    let prefix = Prefix::new();
    let user = TestUser::ensure(APP_USER);
    let owner = TestUser::ensure(OWNER);
    let dir = AppDir::new(&prefix, "shell", &owner, Framework::Flask);
    dir.deploy(1, Release::Good);
    let port = free_port();
    let uwsgi = Server::Uwsgi.command(Framework::Flask, &dir.current());
    // As a hand-written file or a supervisord import has it; `venv` lets
    // the shell execute the venv's uwsgi.
    let script = format!(
        "cd {} && exec {}",
        dir.current().display(),
        shell_words(&uwsgi)
    );
    server_app("shell", &user, &dir, Server::Uwsgi, port)
        .command(["/bin/sh", "-c", &script])
        .venv(bins::venv())
        .stop_timeout(STOP_TIMEOUT)
        .write(&prefix);
    let daemon = Daemon::start(&prefix, DaemonOptions::default());
    daemon.wait_for_state("shell", State::Running, Duration::from_secs(60));
    daemon.wait_until(
        Duration::from_secs(30),
        "uWSGI under sh -c to serve",
        || http_get(port, "/health").is_ok_and(|r| r.status == 200),
    );
    let started = Instant::now();
    let out = daemon.appctl(["stop", "shell"]);
    let took = started.elapsed();
    assert!(out.status.success(), "{}", describe_output(&out));
    let log = daemon.app_logs("shell", 40, true);
    assert!(
        took < STOP_TIMEOUT && log.contains("goodbye to uWSGI"),
        "the stop took {took:?} (TERM would reload uWSGI, then SIGKILL); uWSGI's log:\n{log}"
    );
}

#[test]
fn without_an_fd_socket_option_uwsgi_speaks_its_own_protocol_and_check_says_so() {
    require_root!();
    let prefix = Prefix::new();
    let user = TestUser::ensure(APP_USER);
    let owner = TestUser::ensure(OWNER);
    let dir = AppDir::new(&prefix, "bare", &owner, Framework::Flask);
    dir.deploy(1, Release::Good);
    let port = free_port();
    // The README's old advice: the held socket "without any --bind".
    let bare = uwsgi_command(Framework::Flask, &dir.current(), &[]);
    let file = server_app("bare", &user, &dir, Server::Uwsgi, port)
        .command(bare)
        .write(&prefix);

    let report = check_report(&prefix, &file);
    assert!(
        report.contains(&format!(
            "warning: {}:2:11: command: uWSGI serves the [[listen]] socket (fd 3) with the uwsgi \
             protocol unless an fd:// socket option says otherwise, and this command has none \
             (add \"--http-socket\", \"fd://3\" to serve HTTP, or \"--socket\", \"fd://3\" behind \
             nginx's uwsgi_pass)",
            file.display()
        )),
        "{report}"
    );

    // What the warning is about: uWSGI runs and is ready, yet a browser
    // gets no HTTP answer from it.
    let daemon = Daemon::start(&prefix, DaemonOptions::default());
    daemon.wait_for_state("bare", State::Running, Duration::from_secs(60));
    let answer = http_get(port, "/");
    assert!(
        !answer.as_ref().is_ok_and(|r| r.status == 200),
        "a bare uWSGI answered HTTP on the held socket: {answer:?}"
    );
    daemon.wait_until(
        Duration::from_secs(10),
        "uWSGI to log the HTTP request it read as a uwsgi packet",
        || {
            daemon
                .app_logs("bare", 40, true)
                .contains("invalid request block size")
        },
    );
}
