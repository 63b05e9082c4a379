//! The real-server matrix: gunicorn (sync, `--preload`, gevent) and uWSGI,
//! each serving a Flask app or a Django project on a socket appvisord
//! holds, started, stopped, restarted (both strategies) and reloaded by
//! the real `appctl`, with requests in flight and under load.
//!
//! What each server does to requests in flight is a fact about the server,
//! not a promise appvisord can make; [`in_flight_complete`] is the table
//! docs/servers.md shows, and these tests hold it true.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use appvisor_tests::daemon::describe_output;
use appvisor_tests::load::{under_load, Ending, Failure, InFlight, LoadReport};
use appvisor_tests::servers::{
    gunicorn_command, import_error, Framework, Release, ServedApp, Server, WORKERS,
};
use appvisor_tests::{descendants, process_exists, require_root, ProcStatus, State, Strategy};

/// One load test at a time in this binary: two of them on CI's two cores
/// would measure each other.
static LOAD_LOCK: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    LOAD_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Load: client threads, and how long before and after the action.
const CLIENTS: usize = 4;
const AROUND: (Duration, Duration) = (Duration::from_millis(700), Duration::from_millis(1500));
/// Requests held in flight across an action, and how long each takes.
const IN_FLIGHT: usize = 2;
const SLOW_SECS: u32 = 2;

/// What is done to a serving app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Stop,
    Restart(Strategy),
    Reload,
}

/// docs/servers.md, "Requests in flight": whether requests a server is
/// answering when the action begins are answered in full. gunicorn's stop
/// signal (TERM) is a graceful shutdown and its HUP a graceful reload;
/// uWSGI 2.0 has no graceful shutdown signal of its own (INT and QUIT kill
/// the workers at once), so without the hook that makes TERM one (not
/// given here; tests/tests/uwsgi.rs has it) a stop, and a restart of
/// either strategy (which stops an instance), cuts them; its HUP waits for
/// them.
fn in_flight_complete(server: Server, action: Action) -> bool {
    match (server, action) {
        (Server::Uwsgi, Action::Stop | Action::Restart(_)) => false,
        (_, Action::Stop | Action::Restart(_) | Action::Reload) => true,
    }
}

fn assert_in_flight(app: &ServedApp, action: Action, endings: &[Ending]) {
    let complete = in_flight_complete(app.server, action);
    let ok = if complete {
        endings.iter().all(|e| *e == Ending::Completed)
    } else {
        endings.iter().all(|e| matches!(e, Ending::Dropped(_)))
    };
    assert!(
        ok,
        "{} {action:?}: requests in flight should {}, but ended {endings:?}\n{}\n{}",
        app.server,
        if complete {
            "complete"
        } else {
            "be dropped (docs/servers.md)"
        },
        app.app_log(),
        app.daemon.log_tail(40)
    );
}

fn appctl_ok(app: &ServedApp, args: &[&str]) {
    let out = app.daemon.appctl(args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}: appctl {}\n{}\n{}\n{}",
        app.server,
        args.join(" "),
        describe_output(&out),
        app.app_log(),
        app.daemon.log_tail(40)
    );
}

fn assert_no_failures(app: &ServedApp, what: &str, report: &LoadReport) {
    assert!(
        report.ok > 20,
        "{} {what}: too little load: {report}",
        app.server
    );
    assert!(
        report.failed.is_empty(),
        "{} {what}: failed requests: {report}\n{}\n{}",
        app.server,
        app.app_log(),
        app.daemon.log_tail(40)
    );
}

/// `start`, `stop`, `start` and `restart` exit 0, and the app serves after
/// each, from a new main process after the restart.
fn start_and_restart(server: Server, framework: Framework, strategy: Strategy) {
    let app = ServedApp::start(server, framework, |app| app.strategy(strategy));
    appctl_ok(&app, &["stop", app.name()]);
    assert_eq!(app.daemon.app(app.name()).state, State::Stopped);
    appctl_ok(&app, &["start", app.name()]);
    assert!(app.get("/").starts_with("hello from avt-srv-app"));
    let before = app.main_pid();
    appctl_ok(&app, &["restart", app.name()]);
    previous_instance_gone(&app, before);
    assert_eq!(app.get("/release"), "1\n");
    let after = app.daemon.app(app.name());
    assert_eq!(after.state, State::Running, "{after:#?}");
    assert_ne!(
        after.pid, before,
        "{server}: restart made a new main process"
    );
}

/// Requests in flight across `action`, which exits 0; then the app serves
/// (but after a stop).
fn with_requests_in_flight(server: Server, framework: Framework, action: Action) {
    let strategy = match action {
        Action::Restart(strategy) => strategy,
        _ => Strategy::StopStart,
    };
    let app = ServedApp::start(server, framework, |app| app.strategy(strategy));
    let before = app.main_pid();
    let in_flight = InFlight::open(app.port, IN_FLIGHT, SLOW_SECS);
    let verb = match action {
        Action::Stop => "stop",
        Action::Restart(_) => "restart",
        Action::Reload => "reload",
    };
    appctl_ok(&app, &[verb, app.name()]);
    let endings = in_flight.finish();
    assert_in_flight(&app, action, &endings);
    if action == Action::Stop {
        assert_eq!(app.daemon.app(app.name()).state, State::Stopped);
    } else {
        previous_instance_gone(&app, before);
        assert_eq!(app.get("/release"), "1\n");
    }
}

/// Waits until the main process of the instance that ran before a restart
/// has exited. `restart` returns once the new instance is ready; with
/// start-stop the previous one is still stopping then, and a uWSGI that
/// stops kills its workers with whatever they accepted, requests sent just
/// after the restart returned included (docs/servers.md).
fn previous_instance_gone(app: &ServedApp, before: Option<u32>) {
    let Some(before) = before else {
        return;
    };
    app.daemon.wait_until(
        Duration::from_secs(30),
        "the previous instance to exit",
        || !process_exists(before),
    );
}

/// Under load, with requests in flight, the owner deploys release 2 and
/// reloads: no request fails, the requests in flight complete, and release
/// 2 serves (but on gunicorn `--preload`, whose arbiter keeps the code it
/// imported: docs/servers.md).
fn reload_under_load(server: Server, framework: Framework) {
    let app = ServedApp::start(server, framework, |app| app);
    let _serial = serial();
    app.deploy(2, Release::Good);
    let ((), report) = under_load(app.port, "/", CLIENTS, AROUND, || {
        let in_flight = InFlight::open(app.port, IN_FLIGHT, SLOW_SECS);
        appctl_ok(&app, &["reload", app.name()]);
        assert_in_flight(&app, Action::Reload, &in_flight.finish());
    });
    assert_no_failures(&app, "reload", &report);
    if server == Server::GunicornPreload {
        assert_eq!(app.get("/release"), "1\n", "--preload keeps the old code");
    } else {
        app.wait_serving(2);
    }
}

/// Under load, a restart refuses nothing: gunicorn fails no request at
/// all; uWSGI fails only requests it was answering (dropped, never refused
/// or timed out).
fn restart_under_load(server: Server, framework: Framework, strategy: Strategy) {
    let app = ServedApp::start(server, framework, |app| app.strategy(strategy));
    let _serial = serial();
    let ((), report) = under_load(app.port, "/", CLIENTS, AROUND, || {
        appctl_ok(&app, &["restart", app.name()]);
    });
    if in_flight_complete(server, Action::Restart(strategy)) {
        assert_no_failures(&app, "restart", &report);
    } else {
        assert!(
            report.ok > 20,
            "{server} restart: too little load: {report}"
        );
        assert_eq!(
            report.count(|f| !matches!(f, Failure::Dropped(_))),
            0,
            "{server} restart: only requests in flight may fail: {report}"
        );
    }
}

/// Why the matrix's commands name `--chdir /srv/…/current`: gunicorn and
/// uWSGI keep the directory they resolved at start, so without it a reload
/// after the switch serves the release that was current at start.
#[test]
fn reload_without_chdir_keeps_serving_the_old_release() {
    require_root!();
    let server = Server::GunicornSync;
    let app = ServedApp::start(server, Framework::Flask, |app| {
        // gunicorn --workers 2 flask_app:app, in `current` (the app's
        // directory) at start.
        let command = gunicorn_command(Framework::Flask, Path::new("unused"), &[]);
        let command = [&command[..3], &command[5..]].concat();
        assert!(!command.contains(&"--chdir".to_owned()), "{command:?}");
        app.command(command)
    });
    app.deploy(2, Release::Good);
    let arbiter = app.main_pid().expect("a running app has a pid");
    let old_workers = workers(arbiter);
    appctl_ok(&app, &["reload", app.name()]);
    app.daemon
        .wait_until(Duration::from_secs(30), "every worker replaced", || {
            let now = workers(arbiter);
            now.len() == WORKERS as usize && now.iter().all(|w| !old_workers.contains(w))
        });
    assert_eq!(
        app.get("/release"),
        "1\n",
        "{server} kept the old directory"
    );
    // A restart spawns in the new `current`.
    appctl_ok(&app, &["restart", app.name()]);
    assert_eq!(app.get("/release"), "2\n");
}

/// docs/servers.md, "Switch, then restart or reload at once": with
/// `--chdir` naming the symlink, a worker the running arbiter boots after
/// the switch imports the new release beside the old workers, and one
/// that cannot import it halts the arbiter, the working release with it.
#[test]
fn a_worker_booted_after_the_switch_imports_the_new_release() {
    require_root!();
    let server = Server::GunicornSync;
    let app = ServedApp::start(server, Framework::Flask, |app| app);
    let arbiter = app.main_pid().expect("a running app has a pid");
    // Kills one worker; returns the other, which keeps what it imported.
    let kill_a_worker = || {
        let [killed, kept] = workers(arbiter)[..] else {
            panic!("{server}: {WORKERS} workers expected");
        };
        kill(Pid::from_raw(killed as i32), Signal::SIGKILL)
            .unwrap_or_else(|e| panic!("killing worker {killed}: {e}"));
        kept
    };

    app.deploy(2, Release::Good);
    let kept = kill_a_worker();
    app.daemon.wait_until(
        Duration::from_secs(30),
        "the new worker serving release 2",
        || app.serving_release() == Some(2),
    );
    assert_eq!(app.main_pid(), Some(arbiter), "the same instance serves it");
    assert!(
        workers(arbiter).contains(&kept),
        "{server}: worker {kept} (release 1) gone"
    );

    app.deploy(3, Release::FailsAtImport);
    kill_a_worker();
    app.daemon
        .wait_until(Duration::from_secs(30), "the arbiter halting", || {
            !process_exists(arbiter)
        });
    let log = app.app_log();
    assert!(log.contains(&import_error(3)), "{server}: {log}");
}

/// The main process's children.
fn workers(main: u32) -> Vec<u32> {
    descendants(main)
        .into_iter()
        .filter(|p| ProcStatus::read(*p).is_some_and(|s| s.ppid == main))
        .collect()
}

macro_rules! matrix {
    ($($module:ident: $server:expr, $framework:expr;)*) => {$(
        mod $module {
            use super::*;

            #[test]
            fn start_and_restart_stop_start_exit_0_and_serve() {
                require_root!();
                start_and_restart($server, $framework, Strategy::StopStart);
            }

            #[test]
            fn start_and_restart_start_stop_exit_0_and_serve() {
                require_root!();
                start_and_restart($server, $framework, Strategy::StartStop);
            }

            #[test]
            fn stop_with_requests_in_flight() {
                require_root!();
                with_requests_in_flight($server, $framework, Action::Stop);
            }

            #[test]
            fn restart_stop_start_with_requests_in_flight() {
                require_root!();
                with_requests_in_flight($server, $framework, Action::Restart(Strategy::StopStart));
            }

            #[test]
            fn restart_start_stop_with_requests_in_flight() {
                require_root!();
                with_requests_in_flight($server, $framework, Action::Restart(Strategy::StartStop));
            }

            #[test]
            fn reload_under_load_fails_no_request_and_loads_the_new_release() {
                require_root!();
                reload_under_load($server, $framework);
            }

            #[test]
            fn restart_under_load_refuses_nothing() {
                require_root!();
                restart_under_load($server, $framework, Strategy::StopStart);
            }
        }
    )*};
}

matrix! {
    gunicorn_sync_flask: Server::GunicornSync, Framework::Flask;
    gunicorn_preload_django: Server::GunicornPreload, Framework::Django;
    gunicorn_gevent_flask: Server::GunicornGevent, Framework::Flask;
    uwsgi_django: Server::Uwsgi, Framework::Django;
}
