//! The failure report the exec helper sends back: which step failed, the
//! errno, and the path or value involved.
//!
//! Both sides use these types: the helper writes one JSON line to its
//! close-on-exec report pipe and exits; the daemon reads the pipe to EOF.
//! Nothing written at all means the exec succeeded (the kernel closed the
//! pipe). Pure: no I/O here.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The helper's steps, in the order it runs them (see `spawn::child`), plus
/// the two ways the protocol itself can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SpawnStep {
    ReadPlan,
    Fds,
    Signals,
    Cgroup,
    Setsid,
    Rlimit,
    Umask,
    Setgroups,
    Setgid,
    Setuid,
    /// The check that root cannot be regained after setuid.
    RegainRoot,
    Chdir,
    NoNewPrivs,
    ListenFds,
    Exec,
    /// The helper panicked.
    Helper,
    /// The daemon could not read or parse the helper's report.
    Report,
}

impl SpawnStep {
    /// The name used in state reasons and in the wire format.
    pub fn as_str(self) -> &'static str {
        match self {
            SpawnStep::ReadPlan => "read-plan",
            SpawnStep::Fds => "fds",
            SpawnStep::Signals => "signals",
            SpawnStep::Cgroup => "cgroup",
            SpawnStep::Setsid => "setsid",
            SpawnStep::Rlimit => "rlimit",
            SpawnStep::Umask => "umask",
            SpawnStep::Setgroups => "setgroups",
            SpawnStep::Setgid => "setgid",
            SpawnStep::Setuid => "setuid",
            SpawnStep::RegainRoot => "regain-root",
            SpawnStep::Chdir => "chdir",
            SpawnStep::NoNewPrivs => "no-new-privs",
            SpawnStep::ListenFds => "listen-fds",
            SpawnStep::Exec => "exec",
            SpawnStep::Helper => "helper",
            SpawnStep::Report => "report",
        }
    }
}

impl fmt::Display for SpawnStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an app's process never started running the app's command.
///
/// `errno` 0 means the step did not fail in a syscall (the helper found
/// something wrong itself); `detail` then says what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpawnFailure {
    pub step: SpawnStep,
    pub errno: i32,
    /// The path or value the step worked on; may be empty.
    pub detail: String,
}

impl SpawnFailure {
    pub fn new(
        step: SpawnStep,
        errno: nix::errno::Errno,
        detail: impl Into<String>,
    ) -> SpawnFailure {
        SpawnFailure {
            step,
            errno: errno as i32,
            detail: detail.into(),
        }
    }

    pub fn errno(&self) -> nix::errno::Errno {
        nix::errno::Errno::from_raw(self.errno)
    }
}

impl fmt::Display for SpawnFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "spawn failed at {}", self.step)?;
        match (self.errno, self.detail.is_empty()) {
            (0, _) => write!(f, ": {}", self.detail),
            (_, true) => write!(f, ": {}", self.errno().desc()),
            (_, false) => write!(f, " {}: {}", self.detail, self.errno().desc()),
        }
    }
}

impl std::error::Error for SpawnFailure {}

#[cfg(test)]
mod tests {
    use nix::errno::Errno;

    use super::*;

    #[test]
    fn failure_messages() {
        let cases = [
            (
                SpawnFailure::new(SpawnStep::Chdir, Errno::ENOENT, "/srv/shop/current"),
                "spawn failed at chdir /srv/shop/current: No such file or directory",
            ),
            (
                SpawnFailure::new(SpawnStep::Setsid, Errno::EPERM, ""),
                "spawn failed at setsid: Operation not permitted",
            ),
            (
                SpawnFailure {
                    step: SpawnStep::RegainRoot,
                    errno: 0,
                    detail: "setuid(0) succeeded after dropping to uid 1001".into(),
                },
                "spawn failed at regain-root: setuid(0) succeeded after dropping to uid 1001",
            ),
            (
                SpawnFailure::new(SpawnStep::Rlimit, Errno::EPERM, "RLIMIT_NOFILE=4096"),
                "spawn failed at rlimit RLIMIT_NOFILE=4096: Operation not permitted",
            ),
        ];
        for (failure, want) in cases {
            assert_eq!(failure.to_string(), want);
        }
    }

    #[test]
    fn wire_form_is_one_json_object() {
        let failure = SpawnFailure::new(SpawnStep::NoNewPrivs, Errno::EINVAL, "");
        let json = serde_json::to_string(&failure).unwrap();
        assert_eq!(json, r#"{"step":"no-new-privs","errno":22,"detail":""}"#);
        assert_eq!(
            serde_json::from_str::<SpawnFailure>(&json).unwrap(),
            failure
        );
    }

    #[test]
    fn wire_names_match_display_names() {
        let steps = [
            SpawnStep::ReadPlan,
            SpawnStep::Fds,
            SpawnStep::Signals,
            SpawnStep::Cgroup,
            SpawnStep::Setsid,
            SpawnStep::Rlimit,
            SpawnStep::Umask,
            SpawnStep::Setgroups,
            SpawnStep::Setgid,
            SpawnStep::Setuid,
            SpawnStep::RegainRoot,
            SpawnStep::Chdir,
            SpawnStep::NoNewPrivs,
            SpawnStep::ListenFds,
            SpawnStep::Exec,
            SpawnStep::Helper,
            SpawnStep::Report,
        ];
        for step in steps {
            assert_eq!(serde_json::to_string(&step).unwrap(), format!("\"{step}\""));
        }
    }
}
