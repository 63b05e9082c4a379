//! The chaos suite: one hostile input at a time beside a healthy
//! neighbour, each checked with `appvisor_tests::chaos`. Each group of
//! hostile inputs has its own file, `chaos_*.rs`; this one checks the
//! yardstick itself on a quiet daemon.

use appvisor_tests::chaos::{self, NEIGHBOUR};
use appvisor_tests::{require_root, Daemon, DaemonOptions, Prefix, State, TestUser};
use std::time::Duration;

#[test]
fn a_quiet_daemon_meets_the_yardstick() {
    require_root!();
    let user = TestUser::ensure("avt-app1");
    let prefix = Prefix::new();
    chaos::neighbour(&user).write(&prefix);
    let daemon = Daemon::start(&prefix, DaemonOptions::default());
    daemon.wait_for_state(NEIGHBOUR, State::Running, Duration::from_secs(10));
    for _ in 0..3 {
        chaos::assert_no_cascade(&daemon);
    }
}
