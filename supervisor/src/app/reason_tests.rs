//! The words of reasons, one phrase at a time; the machine's tests check
//! which reason each state gets.

use std::time::Duration;

use super::reason::{exit_reason, failed_starts, phrase, secs, stopped_reason};
use super::{Cause, Exit, ExitStatus, FailedStart};

#[test]
fn durations_read_as_seconds() {
    let cases = [
        (Duration::from_secs(60), "60s"),
        (Duration::ZERO, "0s"),
        (Duration::from_millis(500), "0.5s"),
        (Duration::from_millis(1250), "1.25s"),
        (Duration::from_millis(1), "0.001s"),
    ];
    for (d, text) in cases {
        assert_eq!(secs(d), text);
    }
}

#[test]
fn causes_name_who_asked() {
    let alice = Cause::Operator("alice".to_owned());
    assert_eq!(phrase(&alice), "requested by alice");
    assert_eq!(phrase(&Cause::Config), "configuration changed");
    assert_eq!(stopped_reason(Some(&alice)), "stopped by alice");
    assert_eq!(
        stopped_reason(Some(&Cause::Shutdown)),
        "stopped (daemon shutting down)"
    );
    assert_eq!(stopped_reason(None), "stopped");
    assert_eq!(failed_starts(1), "1 failed start in a row");
    assert_eq!(failed_starts(5), "5 failed starts in a row");
}

#[test]
fn exits_say_how_and_when() {
    let exit = |status, failed_start| Exit {
        status,
        uptime: Duration::from_millis(3000),
        failed_start,
    };
    let cases = [
        (
            exit(ExitStatus::Code(1), None),
            "exited with status 1 after 3.0s",
        ),
        (
            exit(ExitStatus::Signal(9), None),
            "killed by signal 9 (SIGKILL) after 3.0s",
        ),
        (
            exit(ExitStatus::Signal(99), None),
            "killed by signal 99 after 3.0s",
        ),
        (
            exit(ExitStatus::MemoryLimit { limit: 512 << 20 }, None),
            "killed: memory limit 512MiB reached after 3.0s",
        ),
        (
            exit(
                ExitStatus::Code(3),
                Some(FailedStart::CrashedSoonAfterReady {
                    window: Duration::from_secs(10),
                }),
            ),
            "exited with status 3 after 3.0s, within 10s of becoming ready",
        ),
        (
            exit(ExitStatus::Code(3), Some(FailedStart::TooShort)),
            "exited with status 3 after 3.0s",
        ),
    ];
    for (exit, want) in cases {
        assert_eq!(exit_reason(&exit), want, "{exit:?}");
    }
}
