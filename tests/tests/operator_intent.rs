//! Operator intent: an app stopped with `appctl stop` stays stopped across
//! `appctl update`, SIGHUP and a daemon restart until someone starts it,
//! and status shows who stopped it and when.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use appvisor_protocol::StoppedBy;
use appvisor_tests::daemon::describe_output;
use appvisor_tests::{
    require_root, AppBuilder, Daemon, DaemonOptions, Prefix, Readiness, State, TestUser,
};
use nix::sys::signal::Signal;

fn sleeper(name: &str, user: &TestUser) -> AppBuilder {
    AppBuilder::new(name, user, ["/bin/sleep", "infinity"])
        .readiness(Readiness::None)
        .start_secs(Duration::from_millis(300))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// `held` is still stopped by `by`, and `other` still runs.
fn still_stopped(daemon: &Daemon, by: &StoppedBy, when: &str) {
    let held = daemon.app("held");
    assert_eq!(held.state, State::Stopped, "held after {when}: {held:#?}");
    assert_eq!(held.pid, None, "held after {when}");
    assert_eq!(held.stopped_by.as_ref(), Some(by), "held after {when}");
    assert_eq!(
        daemon.app("other").state,
        State::Running,
        "other after {when}"
    );
}

#[test]
fn a_stopped_app_stays_stopped_across_update_sighup_and_a_daemon_restart() {
    require_root!();
    let user = TestUser::ensure("avt-app3");
    let alice = TestUser::ensure("avt-ctl-alice");
    let prefix = Prefix::new();
    let held =
        sleeper("held", &user).extra_toml(&format!("[access]\nusers = [\"{}\"]", alice.name));
    held.write(&prefix);
    sleeper("other", &user).write(&prefix);
    let mut daemon = Daemon::start(&prefix, DaemonOptions::default());
    for app in ["held", "other"] {
        daemon.wait_for_state(app, State::Running, Duration::from_secs(15));
    }

    let before = now();
    let out = daemon.appctl_as(&alice, ["stop", "held"]);
    assert!(out.status.success(), "{}", describe_output(&out));
    let by = daemon
        .app("held")
        .stopped_by
        .expect("status says who stopped held");
    assert_eq!((by.user.as_str(), by.uid), (alice.name.as_str(), alice.uid));
    assert!(
        (before..=now()).contains(&by.at),
        "stopped at {} (between {before} and now)",
        by.at
    );
    let out = daemon.appctl_as(&alice, ["status", "held"]);
    assert_eq!(out.status.code(), Some(3), "{}", describe_output(&out));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains(&format!("stopped by {} at 20", alice.name)),
        "{table}"
    );

    // update with nothing new, then with held's own file changed.
    assert_eq!(daemon.appctl_ok(["update"]), "unchanged: held, other\n");
    still_stopped(&daemon, &by, "an update");
    // A change the process was started with: what would restart it if it
    // ran.
    held.clone().env("EDITED", "1").write(&prefix);
    assert_eq!(
        daemon.appctl_ok(["update"]),
        "changed: held\nunchanged: other\n"
    );
    std::thread::sleep(Duration::from_millis(500));
    still_stopped(&daemon, &by, "an update that changed its file");

    daemon.signal(Signal::SIGHUP);
    std::thread::sleep(Duration::from_millis(800));
    still_stopped(&daemon, &by, "SIGHUP");

    let status = daemon.terminate(Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "{}", daemon.log_tail(30));
    let daemon = Daemon::start(&prefix, DaemonOptions::default());
    daemon.wait_for_state("other", State::Running, Duration::from_secs(15));
    std::thread::sleep(Duration::from_millis(500));
    still_stopped(&daemon, &by, "a daemon restart");

    // Starting it ends the intent, for this daemon and the next.
    let out = daemon.appctl_as(&alice, ["start", "held"]);
    assert!(out.status.success(), "{}", describe_output(&out));
    assert_eq!(daemon.app("held").stopped_by, None);
    let mut daemon = daemon;
    daemon.terminate(Duration::from_secs(20));
    let daemon = Daemon::start(&prefix, DaemonOptions::default());
    let held = daemon.wait_for_state("held", State::Running, Duration::from_secs(15));
    assert_eq!(held.stopped_by, None);
}
