//! What the daemon records is what happened: a failed restart is audited
//! as failed, status uptime advances while nothing changes, and the start
//! time Prometheus sees stays put while the app runs.

use std::time::Duration;

use appvisor_tests::daemon::describe_output;
use appvisor_tests::testapps::sleeper;
use appvisor_tests::{
    free_port, http_get, require_root, AppBuilder, Daemon, DaemonOptions, Prefix, Readiness,
    RestartPolicy, State, TestUser,
};

fn start(prefix: &Prefix) -> (Daemon, u16) {
    let status_port = free_port();
    let daemon = Daemon::start(
        prefix,
        DaemonOptions {
            status_listen: format!("127.0.0.1:{status_port}"),
            ..DaemonOptions::default()
        },
    );
    (daemon, status_port)
}

fn metrics(daemon: &Daemon, port: u16) -> String {
    let response = http_get(port, "/metrics")
        .unwrap_or_else(|e| panic!("GET /metrics: {e}\n{}", daemon.log_tail(40)));
    assert_eq!(response.status, 200, "GET /metrics: {}", response.body);
    response.body
}

/// The value of the sample `series` (name and labels exactly as printed).
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.split(' ').next()?.parse().ok()
    })
}

#[test]
fn a_failed_restart_is_audited_as_failed() {
    require_root!();
    let user = TestUser::ensure("avt-app1");
    let prefix = Prefix::new();
    // Serves until the test breaks the release: then it exits at once.
    let dir = prefix.code_dir("flaky", &user);
    let broken = dir.join("broken");
    AppBuilder::new(
        "flaky",
        &user,
        [
            "/bin/sh",
            "-c",
            &format!(
                "if [ -e {} ]; then echo broken release >&2; exit 1; fi; exec sleep infinity",
                broken.display()
            ),
        ],
    )
    .directory(&dir)
    .readiness(Readiness::None)
    .start_secs(Duration::from_millis(300))
    .restart_policy(RestartPolicy::OnFailure)
    .backoff(Duration::from_secs(5), Duration::from_secs(5))
    .write(&prefix);
    let (daemon, port) = start(&prefix);
    daemon.wait_for_state("flaky", State::Running, Duration::from_secs(10));
    std::fs::write(&broken, "").expect("breaking the release");

    let out = daemon.appctl(["restart", "flaky", "--timeout", "10s"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    let text = metrics(&daemon, port);
    let failed = "appvisor_control_requests_total{action=\"restart\",outcome=\"failed\"}";
    let ok = "appvisor_control_requests_total{action=\"restart\",outcome=\"ok\"}";
    assert_eq!(sample(&text, failed), Some(1.0), "{text}");
    assert_eq!(sample(&text, ok), None, "{text}");
    let log = daemon.log();
    assert!(
        log.lines().any(|l| l.contains("control request")
            && l.contains("restart")
            && l.contains("failed")),
        "no audit record with outcome failed in the daemon's log:\n{}",
        daemon.log_tail(40)
    );
}

#[test]
fn uptime_advances_and_the_start_time_stays_put_while_the_app_runs() {
    require_root!();
    let user = TestUser::ensure("avt-app1");
    let prefix = Prefix::new();
    sleeper("steady", &user)
        .start_secs(Duration::from_millis(200))
        .write(&prefix);
    let (daemon, port) = start(&prefix);
    let first = daemon.wait_for_state("steady", State::Running, Duration::from_secs(10));
    let start_series = "appvisor_app_start_time_seconds{app=\"steady\"}";
    let start_first = sample(&metrics(&daemon, port), start_series).expect("a start time");

    std::thread::sleep(Duration::from_millis(1500));
    let later = daemon.app("steady");
    assert_eq!(later.pid, first.pid, "the app restarted meanwhile");
    let (before, after) = (
        first.uptime_secs.expect("uptime while running"),
        later.uptime_secs.expect("uptime while running"),
    );
    assert!(
        after >= before + 1.4,
        "uptime went from {before}s to {after}s over 1.5s without a state change"
    );
    let start_later = sample(&metrics(&daemon, port), start_series).expect("a start time");
    assert_eq!(
        start_first, start_later,
        "appvisor_app_start_time_seconds moved while the app ran"
    );
}
