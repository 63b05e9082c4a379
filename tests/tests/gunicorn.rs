//! A real gunicorn from the test venv, run by appvisord, serving requests.

use std::time::{Duration, Instant};

use appvisor_tests::testapps::gunicorn;
use appvisor_tests::{
    free_port, http_get, poll_until, require_root, Daemon, DaemonOptions, Prefix, ProcStatus,
    State, TestUser,
};

#[test]
fn gunicorn_serves_requests_as_its_user() {
    require_root!();
    let user = TestUser::ensure("avt-app1");
    let prefix = Prefix::new();
    let port = free_port();
    gunicorn(&prefix, "web", &user, port).write(&prefix);
    let daemon = Daemon::start(&prefix, DaemonOptions::default());

    let web = daemon.wait_for_state("web", State::Running, Duration::from_secs(30));
    let arbiter = web.pid.expect("running gunicorn has a pid");
    // READY=1 comes once the arbiter is bound; workers may still be booting.
    let mut last = None;
    let served = poll_until(Duration::from_secs(15), || {
        last = Some(http_get(port, "/"));
        matches!(&last, Some(Ok(r)) if r.status == 200)
    });
    assert!(served, "GET / on 127.0.0.1:{port}: {last:?}");
    let body = last.unwrap().unwrap().body;
    assert_eq!(body, "hello from avt-app1\n");
    assert_eq!(http_get(port, "/health").expect("GET /health").status, 200);

    let worker: u32 = http_get(port, "/pid")
        .expect("GET /pid")
        .body
        .trim()
        .parse()
        .expect("/pid answers a number");
    let proc = ProcStatus::read(worker).expect("the worker that answered exists");
    assert_eq!(
        proc.ppid, arbiter,
        "the worker is a child of the supervised arbiter"
    );
    assert_eq!(proc.uid, [user.uid; 4]);
}

#[test]
fn gunicorn_is_running_only_after_ready() {
    require_root!();
    let user = TestUser::ensure("avt-app1");
    let prefix = Prefix::new();
    let port = free_port();
    // With --preload the arbiter imports the app before binding, so the
    // import delay holds back READY=1 by 3 s.
    let app = gunicorn(&prefix, "slow", &user, port);
    let mut toml = app.env("WSGI_IMPORT_DELAY", "3").to_toml();
    toml = toml.replacen("\"--workers\"", "\"--preload\", \"--workers\"", 1);
    prefix.write("apps.d/slow.toml", &toml);
    let started = Instant::now();
    let daemon = Daemon::start(&prefix, DaemonOptions::default());

    // Starting begins with the spawn's file reads (spawn::prepare), a few
    // milliseconds before the process exists: wait for its pid too.
    let mut starting = None;
    daemon.wait_until(Duration::from_secs(5), "slow starting with a pid", || {
        let status = daemon.app("slow");
        let spawned = status.state == State::Starting && status.pid.is_some();
        starting = Some(status);
        spawned
    });
    let starting = starting.expect("set by wait_until");
    assert!(
        !starting.reason.is_empty(),
        "starting has a reason: {starting:#?}"
    );
    std::thread::sleep(Duration::from_millis(1500));
    let still = daemon.app("slow");
    assert_eq!(
        still.state,
        State::Starting,
        "no READY=1 yet (import sleeps 3 s), so not running after {:?}: {still:#?}",
        started.elapsed()
    );
    assert!(
        http_get(port, "/health").is_err(),
        "nothing listens before READY=1"
    );

    let running = daemon.wait_for_state("slow", State::Running, Duration::from_secs(30));
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "running before the 3 s import finished"
    );
    assert_eq!(running.pid, starting.pid, "the same process became ready");
    assert!(
        running.reason.to_lowercase().contains("ready"),
        "the running reason says what made it ready: {:?}",
        running.reason
    );
    assert_eq!(running.restarts, 0);
}

/// The exec helper writes its report before it execs the app, but the
/// report and the app's READY=1 come on different descriptors and the
/// daemon may read the datagram first (d2a291b: one gunicorn in three timed
/// out in CI). A test build holds the report until the test releases it,
/// so gunicorn's READY=1 is read first every time; it must be kept for the
/// spawn, making the app running at once rather than at its readiness
/// timeout.
#[test]
fn ready_read_before_the_helpers_report_is_kept() {
    require_root!();
    let user = TestUser::ensure("avt-app1");
    let prefix = Prefix::new();
    let port = free_port();
    let release = prefix.path().join("release-report");
    gunicorn(&prefix, "web", &user, port)
        .readiness_timeout(Duration::from_secs(120))
        .write(&prefix);
    let options = DaemonOptions {
        env: vec![(
            "APPVISOR_TEST_HOLD_REPORT_UNTIL".into(),
            release.display().to_string(),
        )],
        ..DaemonOptions::default()
    };
    let daemon = Daemon::start(&prefix, options);
    daemon.wait_until(
        Duration::from_secs(10),
        "the daemon to hold web's report (a daemon built without the test-report-hold \
         feature ignores APPVISOR_TEST_HOLD_REPORT_UNTIL: build it with `cargo test \
         --workspace`)",
        || daemon.log().contains("holding the exec helper's report"),
    );
    daemon.wait_until(
        Duration::from_secs(30),
        "gunicorn's READY=1 read while its report is held",
        || {
            daemon
                .log()
                .contains("READY=1 before the exec helper's report")
        },
    );
    let held = daemon.app("web");
    assert_eq!(held.state, State::Starting, "{held:#?}");

    std::fs::write(&release, "").unwrap_or_else(|e| panic!("writing {}: {e}", release.display()));
    // Far inside the 120 s readiness timeout a lost READY=1 would wait out.
    let running = daemon.wait_for_state("web", State::Running, Duration::from_secs(10));
    assert_eq!(
        running.restarts, 0,
        "the first gunicorn became ready: {running:#?}"
    );
}
