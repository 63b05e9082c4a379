//! Restart policy, backoff and fatal: what happens after an app exits.

use std::time::{Duration, Instant};

use appvisor_tests::daemon::describe_output;
use appvisor_tests::testapps::python;
use appvisor_tests::{require_root, Daemon, DaemonOptions, Prefix, RestartPolicy, State, TestUser};

fn started_times(logs: &str) -> Vec<f64> {
    logs.lines()
        .filter_map(|l| l.strip_prefix("started at "))
        .filter_map(|rest| rest.split_whitespace().next())
        .filter_map(|t| t.parse().ok())
        .collect()
}

#[test]
fn failing_app_goes_fatal_after_max_retries_and_start_revives_it() {
    require_root!();
    let user = TestUser::ensure("avt-app1");
    let prefix = Prefix::new();
    python(&prefix, "failer", &user, "crash.py", &["--status", "1"])
        .restart_policy(RestartPolicy::OnFailure)
        .start_secs(Duration::from_secs(1))
        .max_retries(3)
        .backoff(Duration::from_millis(100), Duration::from_millis(400))
        .write(&prefix);
    let daemon = Daemon::start(&prefix, DaemonOptions::default());

    let fatal = daemon.wait_for_state("failer", State::Fatal, Duration::from_secs(20));
    // DESIGN: max_retries is the number of consecutive failed starts before fatal.
    assert_eq!(fatal.failures, 3, "failed starts counted: {fatal:#?}");
    assert!(
        fatal.pid.is_none(),
        "a fatal app has no process: {fatal:#?}"
    );
    assert!(
        fatal.reason.contains("status 1"),
        "the reason gives the exit status: {:?}",
        fatal.reason
    );
    assert!(
        fatal.reason.contains('3'),
        "the reason counts the failed starts: {:?}",
        fatal.reason
    );
    let runs = started_times(&daemon.app_logs("failer", 100, false));
    assert_eq!(
        runs.len(),
        3,
        "three spawns in the log before fatal: {runs:?}"
    );

    // A manual start works from fatal and resets the failure count.
    daemon.appctl_ok(["start", "failer", "--no-wait"]);
    let revived = daemon.app("failer");
    assert!(
        matches!(revived.state, State::Starting | State::Backoff),
        "after start it tries again: {revived:#?}"
    );
    assert!(
        revived.failures < 3,
        "start resets the failure count: {revived:#?}"
    );

    // Waiting for it reports the failure: exit 1 with the reason.
    let out = daemon.appctl(["start", "failer", "--timeout", "20s"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "start of a crashing app\n{}",
        describe_output(&out)
    );
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("status 1"),
        "appctl start prints the reason\n{said}"
    );
    assert!(
        said.contains("crashing with status 1"),
        "and the last log lines\n{said}"
    );
    daemon.wait_for_state("failer", State::Fatal, Duration::from_secs(20));
}

/// The line an app writes just before it dies (its traceback's last line,
/// usually the one that says why) is in the failure report even when the
/// daemon's capture of its output was behind at the exit.
#[test]
fn the_failure_report_ends_with_the_last_line_the_app_wrote() {
    require_root!();
    let user = TestUser::ensure("avt-app1");
    let prefix = Prefix::new();
    python(
        &prefix,
        "trickler",
        &user,
        "crash.py",
        &["--status", "3", "--trickle", "50"],
    )
    .restart_policy(RestartPolicy::Never)
    .start_secs(Duration::from_secs(5))
    .autostart(false)
    .write(&prefix);
    let daemon = Daemon::start(&prefix, DaemonOptions::default());
    for attempt in 1..=10 {
        let out = daemon.appctl(["start", "trickler", "--timeout", "20s"]);
        assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("status 3"),
            "attempt {attempt}: the reason\n{stderr}"
        );
        assert_eq!(
            stderr.lines().last().map(str::trim),
            Some("crashing with status 3"),
            "attempt {attempt}: the report ends with the app's last line\n{stderr}"
        );
    }
}

#[test]
fn max_retries_zero_keeps_retrying_at_growing_intervals() {
    require_root!();
    let user = TestUser::ensure("avt-app1");
    let prefix = Prefix::new();
    python(&prefix, "looper", &user, "crash.py", &["--status", "1"])
        .restart_policy(RestartPolicy::OnFailure)
        .start_secs(Duration::from_secs(1))
        .max_retries(0)
        .backoff(Duration::from_millis(100), Duration::from_secs(2))
        .write(&prefix);
    let daemon = Daemon::start(&prefix, DaemonOptions::default());

    let watch = Instant::now();
    let mut states = Vec::new();
    while watch.elapsed() < Duration::from_millis(6500) {
        let app = daemon.app("looper");
        assert_ne!(
            app.state,
            State::Fatal,
            "max_retries = 0 never gives up: {app:#?}"
        );
        states.push(app.state);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        states.contains(&State::Backoff),
        "it waits in backoff: {states:?}"
    );

    // The app prints the time of each spawn: the gaps between them are the
    // backoff delays (plus python's start-up, about the same each time).
    let times = started_times(&daemon.app_logs("looper", 200, false));
    assert!(times.len() >= 5, "at least 5 spawns in 6.5 s: {times:?}");
    let gaps: Vec<f64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    // Each delay is the doubled one shortened by up to a quarter (jitter,
    // so that apps failing together do not retry together): once capped,
    // a gap may be 3/4 of the one before, give or take python's start-up.
    for pair in gaps.windows(2) {
        assert!(
            pair[1] >= pair[0] * 0.75 - 0.15,
            "the delay between spawns does not shrink beyond its jitter: gaps {gaps:?}"
        );
    }
    let (first, last) = (gaps[0], *gaps.last().expect("gaps"));
    assert!(
        last >= first * 4.0,
        "the delay grows (doubling): gaps {gaps:?}"
    );
    assert!(
        gaps.iter().all(|g| *g < 2.0 + 1.0),
        "the delay is capped by backoff.max = 2s: gaps {gaps:?}"
    );
    let app = daemon.app("looper");
    assert!(
        app.failures as usize >= times.len() - 1,
        "failures count up: {app:#?}"
    );
}

#[test]
fn clean_exit_with_policy_always_comes_back() {
    require_root!();
    let user = TestUser::ensure("avt-app1");
    let prefix = Prefix::new();
    python(
        &prefix,
        "phoenix",
        &user,
        "crash.py",
        &["--after", "1.5", "--status", "0"],
    )
    .restart_policy(RestartPolicy::Always)
    .start_secs(Duration::from_millis(500))
    .backoff(Duration::from_millis(100), Duration::from_secs(1))
    .write(&prefix);
    let daemon = Daemon::start(&prefix, DaemonOptions::default());

    let first = daemon.wait_for_state("phoenix", State::Running, Duration::from_secs(10));
    let pid = first.pid.expect("pid");
    daemon.wait_until(
        Duration::from_secs(10),
        "phoenix to come back with a new pid",
        || {
            let app = daemon.app("phoenix");
            app.pid.is_some_and(|p| p != pid) && app.restarts >= 1
        },
    );
    let app = daemon.app("phoenix");
    assert_eq!(
        app.failures, 0,
        "a clean exit after start_secs is no failure: {app:#?}"
    );
}

#[test]
fn clean_exit_with_policy_on_failure_stays_exited() {
    require_root!();
    let user = TestUser::ensure("avt-app1");
    let prefix = Prefix::new();
    python(
        &prefix,
        "oneshot",
        &user,
        "crash.py",
        &["--after", "1.5", "--status", "0"],
    )
    .restart_policy(RestartPolicy::OnFailure)
    .start_secs(Duration::from_millis(500))
    .backoff(Duration::from_millis(100), Duration::from_secs(1))
    .write(&prefix);
    let daemon = Daemon::start(&prefix, DaemonOptions::default());

    daemon.wait_for_state("oneshot", State::Running, Duration::from_secs(10));
    let exited = daemon.wait_for_state("oneshot", State::Exited, Duration::from_secs(10));
    assert!(exited.pid.is_none(), "{exited:#?}");
    assert!(
        exited.reason.contains("status 0"),
        "reason: {:?}",
        exited.reason
    );
    std::thread::sleep(Duration::from_secs(2));
    let later = daemon.app("oneshot");
    assert_eq!(
        later.state,
        State::Exited,
        "on-failure does not restart a clean exit: {later:#?}"
    );
    assert_eq!(later.restarts, 0, "{later:#?}");
    let runs = started_times(&daemon.app_logs("oneshot", 100, false));
    assert_eq!(runs.len(), 1, "spawned once: {runs:?}");
}
