//! Stopping an app leaves no process behind, daemonized grandchildren
//! that ignore SIGTERM included, within the stop timeout.

use std::time::{Duration, Instant};

use appvisor_tests::testapps::{printed_pids, python};
use appvisor_tests::{
    process_exists, require_root, Daemon, DaemonOptions, Prefix, State, TestUser,
};

#[test]
fn stop_kills_a_daemonized_grandchild_that_ignores_sigterm() {
    require_root!();
    let user = TestUser::ensure("avt-app1");
    let prefix = Prefix::new();
    python(&prefix, "stubborn", &user, "stubborn.py", &[])
        .start_secs(Duration::from_secs(1))
        .stop_timeout(Duration::from_secs(2))
        .write(&prefix);
    let daemon = Daemon::start(&prefix, DaemonOptions::default());

    let running = daemon.wait_for_state("stubborn", State::Running, Duration::from_secs(15));
    let main = running.pid.expect("pid");
    let mut grandchild = Vec::new();
    daemon.wait_until(
        Duration::from_secs(10),
        "the grandchild to print its pid",
        || {
            grandchild = printed_pids(&daemon.app_logs("stubborn", 50, false), "grandchild");
            !grandchild.is_empty()
        },
    );
    let grandchild = grandchild[0];
    assert!(
        process_exists(grandchild),
        "grandchild {grandchild} is alive before stop"
    );
    let in_cgroup = daemon.app_processes();
    assert!(
        in_cgroup.contains(&main) && in_cgroup.contains(&grandchild),
        "both are in the daemon's cgroup subtree: {in_cgroup:?} (main {main}, grandchild {grandchild})"
    );

    let began = Instant::now();
    daemon.appctl_ok(["stop", "stubborn"]);
    let took = began.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "stop took {took:?}: stop timeout 2 s, then SIGKILL to every process"
    );
    assert!(!process_exists(main), "main process {main} survived stop");
    assert!(
        !process_exists(grandchild),
        "daemonized grandchild {grandchild} survived stop"
    );
    let stopped = daemon.app("stubborn");
    assert_eq!(stopped.state, State::Stopped, "{stopped:#?}");
    assert!(stopped.pid.is_none(), "{stopped:#?}");
    let by = stopped.stopped_by.expect("status says who stopped it");
    assert_eq!(by.uid, 0);
    assert!(
        !daemon.app_processes().contains(&grandchild),
        "the app's cgroup is empty: {:?}",
        daemon.app_processes()
    );
}
