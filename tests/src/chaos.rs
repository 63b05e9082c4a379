//! The chaos suite's yardstick: a healthy neighbour app beside one hostile
//! input at a time, and the checks that prove the input stayed with its
//! app ("no cascade, ever": docs/contract.md).
//!
//! While a hostile input is at work, [`assert_no_cascade`] checks what an
//! operator relies on: root's `appctl status` answers within
//! [`STATUS_WITHIN`], a SIGKILLed neighbour is running again within
//! [`RESPAWN_WITHIN`], and the daemon stays under [`DAEMON_RSS_BOUND`].
//! A test calls it as often as it likes, typically once while the attack
//! runs and once after.

use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::app::AppBuilder;
use crate::daemon::{describe_output, Daemon};
use crate::procfs::ProcStatus;
use crate::testapps;
use crate::users::TestUser;
use crate::wait::poll_until;
use crate::State;

/// The neighbour's app name.
pub const NEIGHBOUR: &str = "neighbour";
/// How long root's `appctl status` may take, hostile input or not.
pub const STATUS_WITHIN: Duration = Duration::from_secs(1);
/// How soon a SIGKILLed neighbour must be running again.
pub const RESPAWN_WITHIN: Duration = Duration::from_secs(1);
/// The daemon's resident memory may never exceed this.
pub const DAEMON_RSS_BOUND: u64 = 64 << 20;

/// The healthy neighbour: a sleeper, running as soon as it is spawned and
/// restarted at once (a short backoff, in case the crash counts as a
/// failed start), with the default sandbox. Write it with the hostile app.
pub fn neighbour(user: &TestUser) -> AppBuilder {
    testapps::sleeper(NEIGHBOUR, user)
        .start_secs(Duration::ZERO)
        .backoff(Duration::from_millis(50), Duration::from_millis(200))
}

/// Checks, now, that nothing cascaded from whatever else the daemon is
/// going through; panics naming the broken promise, with the daemon log.
pub fn assert_no_cascade(daemon: &Daemon) {
    assert_status_answers(daemon);
    assert_neighbour_respawns(daemon);
    assert_daemon_rss_bounded(daemon);
}

/// Root's `appctl status --json` answers, completely, within
/// [`STATUS_WITHIN`].
pub fn assert_status_answers(daemon: &Daemon) {
    let began = Instant::now();
    let out = daemon.appctl(["status", "--json"]);
    let took = began.elapsed();
    assert!(
        matches!(out.status.code(), Some(0) | Some(3)),
        "root's appctl status failed while a hostile input was at work\n{}\n{}",
        describe_output(&out),
        daemon.log_tail(40)
    );
    assert!(
        took <= STATUS_WITHIN,
        "root's appctl status took {took:?} (at most {STATUS_WITHIN:?}) while a hostile input was at work\n{}",
        daemon.log_tail(40)
    );
}

/// SIGKILLs the neighbour's main process and checks it runs again, as a
/// new process, within [`RESPAWN_WITHIN`].
pub fn assert_neighbour_respawns(daemon: &Daemon) {
    let before = daemon.wait_for_state(NEIGHBOUR, State::Running, Duration::from_secs(10));
    let pid = before.pid.expect("a running neighbour has a pid");
    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
    let killed = Instant::now();
    let back = poll_until(RESPAWN_WITHIN, || {
        daemon.try_status().is_ok_and(|apps| {
            apps.iter().any(|app| {
                app.name == NEIGHBOUR
                    && app.state == State::Running
                    && app.pid.is_some_and(|p| p != pid)
            })
        })
    });
    assert!(
        back,
        "the neighbour (pid {pid}, SIGKILLed) was not running again within {RESPAWN_WITHIN:?} \
         ({:?} later: {:?})\n{}",
        killed.elapsed(),
        daemon.try_status().map(|apps| apps
            .into_iter()
            .find(|a| a.name == NEIGHBOUR)
            .map(|a| (a.state, a.reason))),
        daemon.log_tail(40)
    );
}

/// The daemon's resident memory is under [`DAEMON_RSS_BOUND`].
pub fn assert_daemon_rss_bounded(daemon: &Daemon) {
    let rss = daemon_rss(daemon);
    assert!(
        rss <= DAEMON_RSS_BOUND,
        "appvisord's resident memory is {} MiB, over the bound of {} MiB\n{}",
        rss >> 20,
        DAEMON_RSS_BOUND >> 20,
        daemon.log_tail(40)
    );
}

/// The daemon's resident memory in bytes, now.
pub fn daemon_rss(daemon: &Daemon) -> u64 {
    ProcStatus::read(daemon.pid())
        .map(|status| status.vm_rss_kib << 10)
        .expect("appvisord is running")
}
