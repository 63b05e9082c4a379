//! How the machine words its reasons: every state has one a person can act
//! on ("exited with status 1 after 0.2s, 3 failed starts in a row, next try
//! in 4s").

use std::time::Duration;

use nix::sys::signal::Signal as NixSignal;

use super::{Cause, Exit, ExitStatus, FailedStart};
use crate::config::validate::size_text;

/// "requested by alice", "configuration changed", ...
pub(super) fn phrase(cause: &Cause) -> String {
    match cause {
        Cause::Autostart => "autostart".to_owned(),
        Cause::Operator(user) => format!("requested by {user}"),
        Cause::Config => "configuration changed".to_owned(),
        Cause::Shutdown => "daemon shutting down".to_owned(),
    }
}

pub(super) fn opt_phrase(cause: Option<&Cause>) -> String {
    cause.map_or_else(|| "requested".to_owned(), phrase)
}

/// "stopped by alice", "stopped (configuration changed)".
pub(super) fn stopped_reason(cause: Option<&Cause>) -> String {
    match cause {
        Some(Cause::Operator(user)) => format!("stopped by {user}"),
        Some(cause) => format!("stopped ({})", phrase(cause)),
        None => "stopped".to_owned(),
    }
}

/// "1 failed start in a row", "5 failed starts in a row".
pub(super) fn failed_starts(failures: u32) -> String {
    let s = if failures == 1 { "" } else { "s" };
    format!("{failures} failed start{s} in a row")
}

/// "exited with status 1 after 0.2s", "killed by signal 9 (SIGKILL) after
/// 3.0s", "exited with status 3 after 4.1s, within 10s of becoming ready".
pub(super) fn exit_reason(exit: &Exit) -> String {
    let how = exit_status(exit);
    match exit.failed_start {
        Some(FailedStart::CrashedSoonAfterReady { window }) => {
            format!("{how}, within {} of becoming ready", secs(window))
        }
        _ => how,
    }
}

fn exit_status(exit: &Exit) -> String {
    let uptime = exit.uptime.as_secs_f64();
    match exit.status {
        ExitStatus::Code(code) => format!("exited with status {code} after {uptime:.1}s"),
        ExitStatus::Signal(number) => match NixSignal::try_from(number) {
            Ok(signal) => format!(
                "killed by signal {number} ({}) after {uptime:.1}s",
                signal.as_str()
            ),
            Err(_) => format!("killed by signal {number} after {uptime:.1}s"),
        },
        ExitStatus::MemoryLimit { limit } => format!(
            "killed: memory limit {} reached after {uptime:.1}s",
            size_text(limit)
        ),
        ExitStatus::Unknown => {
            format!("ended after {uptime:.1}s (status unknown: adopted after a daemon crash)")
        }
    }
}

/// A configured duration in seconds: "60s", "0.5s", "1.25s".
pub(super) fn secs(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        let text = format!("{:.3}", d.as_secs_f64());
        format!("{}s", text.trim_end_matches('0'))
    }
}
