//! The owner's deploy with real app servers: switch `current` to a
//! release, `appctl restart` (or `reload`), roll back on a non-zero exit.
//! The matrix of tests/src/servers.rs: gunicorn with sync workers (READY=1
//! comes before any worker imported the app), with `--preload` (the
//! arbiter imports it before READY=1, and a reload keeps that code), with
//! gevent workers, and uWSGI (master, two workers, `--http-socket fd://3`),
//! serving Flask or Django with `[[listen]]` and readiness notify plus a
//! url, as docs/readiness.md tells users to run them.
//!
//! - A release that cannot import makes `restart` exit 1 with the import
//!   error and this attempt's log lines, never replaces a working
//!   instance, and with start-stop the working instance serves every
//!   request meanwhile; the owner's rollback then works.
//! - `reload` exits 0 only once the new code serves, failing no request,
//!   and 1 with the workers' output for a release that cannot import.
//! - A release that serves and then dies a moment later, every time,
//!   backs off and reaches `fatal` after `max_retries` instead of
//!   restarting forever.

use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use appvisor_tests::daemon::describe_output;
use appvisor_tests::load::{Load, LoadReport};
use appvisor_tests::servers::{import_error, Framework, Release, ServedApp, Server};
use appvisor_tests::{require_root, State, Strategy};

/// One load test at a time in this binary: they measure the machine they
/// share.
static LOAD_LOCK: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    LOAD_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Client threads of the load.
const CLIENTS: usize = 2;
/// The longest a load runs if a test forgets to stop it.
const LOAD_LIMIT: Duration = Duration::from_secs(120);

/// `appctl ARGS` as the app's owner, as a deploy script runs it.
fn as_owner(app: &ServedApp, args: &[&str]) -> std::process::Output {
    app.daemon.appctl_as(app.dir.owner(), args)
}

fn assert_exit(app: &ServedApp, what: &str, out: &std::process::Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{} {what}: {}\n{}\n{}",
        app.server,
        describe_output(out),
        app.app_log(),
        app.daemon.log_tail(40)
    );
}

fn assert_no_failures(app: &ServedApp, what: &str, report: &LoadReport) {
    assert!(
        report.ok > 10,
        "{} {what}: too little load: {report}",
        app.server
    );
    assert!(
        report.failed.is_empty(),
        "{} {what}: failed requests: {report}\n{}",
        app.server,
        app.daemon.log_tail(40)
    );
}

/// A broken release makes `restart` exit 1 with the import error and
/// only this attempt's log lines; with start-stop the working instance
/// serves on, without one failed request meanwhile; the owner's rollback
/// then works.
fn broken_release_fails_loudly(server: Server, framework: Framework, strategy: Strategy) {
    let app = ServedApp::start(server, framework, |app| {
        app.strategy(strategy)
            .backoff(Duration::from_secs(1), Duration::from_secs(2))
    });
    let before = app.main_pid().expect("release 1 runs");
    app.deploy(2, Release::FailsAtImport);
    let _serial = serial();
    let load = Load::start(app.port, "/", CLIENTS, LOAD_LIMIT);
    load.wait_until_answered(CLIENTS, Duration::from_secs(10));
    let out = as_owner(&app, &["restart", app.name(), "--timeout", "60s"]);
    let report = load.finish();
    assert_exit(&app, "restart into a broken release", &out, 1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("did not become ready") && stderr.contains(&import_error(2)),
        "{server} {strategy:?}: restart does not say why:\n{stderr}"
    );
    // Only this attempt's lines: not release 1's start-up, nor (with
    // stop-start) its shutdown. uWSGI's lines do not name their pid.
    let lines = stderr.split("last log lines of web:").nth(1).unwrap_or("");
    assert!(
        server.is_uwsgi() || !lines.contains(&format!("[{before}]")),
        "{server} {strategy:?}: the failure report shows the old instance's lines:\n{lines}"
    );
    if strategy == Strategy::StartStop {
        assert_no_failures(&app, "start-stop restart into a broken release", &report);
        let after = app.daemon.app(app.name());
        assert_eq!(
            (after.state, after.pid),
            (State::Running, Some(before)),
            "{server}: the working instance was not kept: {}",
            after.reason
        );
        assert_eq!(app.serving_release(), Some(1));
    }
    // The deploy script's rollback.
    app.dir.switch(1);
    let out = as_owner(&app, &["restart", app.name(), "--timeout", "60s"]);
    assert_exit(&app, "the rollback's restart", &out, 0);
    if server.is_uwsgi() && strategy == Strategy::StartStop {
        // docs/servers.md, "Requests in flight": the retiring uWSGI 2.0
        // instance still shares the socket and cuts what it accepted as
        // restart returned; the next request reaches the new instance.
        app.wait_serving(1);
    } else {
        assert_eq!(
            app.serving_release(),
            Some(1),
            "restart returned before it served"
        );
    }
}

/// `reload` exits 0 only once the new code serves, with no failed request
/// under load; a reload into a broken release exits 1 with the workers'
/// output. gunicorn --preload forks its new workers from the arbiter,
/// which imported the app once: a reload keeps release 1 serving, broken
/// release or not (docs/readiness.md: deploy it with restart).
fn reload_waits_for_the_new_code(server: Server, framework: Framework) {
    let app = ServedApp::start(server, framework, |app| app);
    let preload = server == Server::GunicornPreload;
    let serving = if preload { 1 } else { 2 };
    app.deploy(2, Release::Good);
    let load = {
        let _serial = serial();
        let load = Load::start(app.port, "/", CLIENTS, LOAD_LIMIT);
        load.wait_until_answered(CLIENTS, Duration::from_secs(10));
        let out = as_owner(&app, &["reload", app.name(), "--timeout", "60s"]);
        // Right after reload returns, every answer comes from the new
        // workers.
        let answers: Vec<Option<u32>> = (0..6).map(|_| app.serving_release()).collect();
        thread::sleep(Duration::from_millis(300));
        let report = load.finish();
        assert_exit(&app, "reload", &out, 0);
        assert!(
            answers.iter().all(|a| *a == Some(serving)),
            "{server}: reload returned before release {serving} served: {answers:?}"
        );
        report
    };
    assert_no_failures(&app, "reload", &load);

    if !preload {
        app.wait_imported(2);
    }
    app.deploy(3, Release::FailsAtImport);
    let out = as_owner(&app, &["reload", app.name(), "--timeout", "30s"]);
    if preload {
        assert_exit(&app, "reload of a preloaded app", &out, 0);
        assert_eq!(app.serving_release(), Some(1), "--preload keeps its code");
        return;
    }
    assert_exit(&app, "reload into a broken release", &out, 1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&import_error(3)),
        "{server}: a broken reload does not show the workers' output:\n{stderr}"
    );
}

/// A release that passes readiness and kills its instance two seconds
/// later, again and again: `restart` exits 0 (it was ready), then the
/// crash loop backs off and reaches `fatal` after `max_retries`, saying
/// why; a rollback and `appctl start` bring release 1 back.
fn release_that_dies_soon_after_ready_reaches_fatal(server: Server, framework: Framework) {
    let app = ServedApp::start(server, framework, |app| {
        app.max_retries(3)
            .backoff(Duration::from_secs(1), Duration::from_secs(2))
    });
    app.deploy(2, Release::CrashesAfter(Duration::from_secs(2)));
    let out = as_owner(&app, &["restart", app.name(), "--timeout", "60s"]);
    assert_exit(&app, "restart into a release that dies soon", &out, 0);
    let fatal = app
        .daemon
        .wait_for_state(app.name(), State::Fatal, Duration::from_secs(90));
    assert!(
        fatal.reason.contains("killed by signal 9 (SIGKILL)")
            && fatal.reason.contains("within 10s of becoming ready")
            && fatal
                .reason
                .ends_with("3 failed starts in a row, giving up (appctl start resets)"),
        "{server}: {}\n{}",
        fatal.reason,
        app.daemon.log_tail(30)
    );
    // It backed off between the attempts, and gave up at the third.
    let log = app.daemon.log();
    for waited in [
        "1 failed start in a row, next try in",
        "2 failed starts in a row, next try in",
    ] {
        assert!(
            log.contains(waited),
            "{server}: no backoff after {waited:?}:\n{}",
            app.daemon.log_tail(40)
        );
    }
    assert_eq!(fatal.restarts, 3, "{fatal:#?}");

    app.dir.switch(1);
    let out = as_owner(&app, &["start", app.name(), "--timeout", "60s"]);
    assert_exit(&app, "start after the rollback", &out, 0);
    assert_eq!(app.serving_release(), Some(1));
}

macro_rules! matrix {
    ($($module:ident: $server:expr, $framework:expr;)*) => {$(
        mod $module {
            use super::*;

            #[test]
            fn broken_release_fails_restart_stop_start() {
                require_root!();
                broken_release_fails_loudly($server, $framework, Strategy::StopStart);
            }

            #[test]
            fn broken_release_fails_restart_and_the_old_instance_serves_on() {
                require_root!();
                broken_release_fails_loudly($server, $framework, Strategy::StartStop);
            }

            #[test]
            fn reload_waits_for_the_new_code() {
                require_root!();
                super::reload_waits_for_the_new_code($server, $framework);
            }

            #[test]
            fn release_that_dies_soon_after_ready_reaches_fatal() {
                require_root!();
                super::release_that_dies_soon_after_ready_reaches_fatal($server, $framework);
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
