//! The failure report the exec helper sends back: which step failed, the
//! errno, and the path or value involved.
//!
//! Both sides use these types. The helper writes JSON lines to its
//! close-on-exec report pipe: just before exec, one [`Applied`] record of
//! what confinement is in force; on a failure, one [`SpawnFailure`], after
//! which it exits. The daemon reads the pipe to EOF: a failure line means
//! the spawn failed; otherwise the exec succeeded (the kernel closed the
//! pipe), with the applied record if one came. Pure: no I/O here.

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
    /// unshare and the private /tmp mounts.
    Namespaces,
    /// Emptying the capability sets, and the check that they are empty.
    Capabilities,
    /// Joining the app's own session keyring.
    Keyring,
    /// A rule's path that cannot be resolved safely or leads out of the
    /// directories its owner may change (`sandbox::paths`).
    Paths,
    Landlock,
    /// Installing the seccomp filter.
    Seccomp,
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
            SpawnStep::Namespaces => "namespaces",
            SpawnStep::Capabilities => "capabilities",
            SpawnStep::Keyring => "keyring",
            SpawnStep::Paths => "paths",
            SpawnStep::Landlock => "landlock",
            SpawnStep::Seccomp => "seccomp",
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

/// What the helper put in force, sent just before exec.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// `None` when the plan had no Landlock rules.
    pub landlock: Option<crate::sandbox::LandlockRecord>,
    /// The rest of the confinement, read back from the kernel.
    #[serde(default)]
    pub verified: crate::sandbox::Verified,
}

/// The marker of an [`Applied`] line: `{"kind":"applied",...}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum LineKind {
    Applied,
}

#[derive(Debug, Serialize, Deserialize)]
struct AppliedLine {
    kind: LineKind,
    #[serde(flatten)]
    applied: Applied,
}

impl Applied {
    /// The JSON line the helper writes, newline included.
    pub fn to_line(&self) -> Vec<u8> {
        let line = AppliedLine {
            kind: LineKind::Applied,
            applied: self.clone(),
        };
        let mut bytes = serde_json::to_vec(&line).expect("an Applied record always serializes");
        bytes.push(b'\n');
        bytes
    }
}

/// Reads everything the helper wrote: a failure line wins; otherwise the
/// applied record, or the default when the helper sent none.
pub fn parse_report(bytes: &[u8]) -> Result<Applied, SpawnFailure> {
    let mut applied = Applied::default();
    for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        if let Ok(record) = serde_json::from_slice::<AppliedLine>(line) {
            applied = record.applied;
            continue;
        }
        return Err(
            serde_json::from_slice(line).unwrap_or_else(|_| SpawnFailure {
                step: SpawnStep::Report,
                errno: 0,
                detail: format!(
                    "malformed report from the exec helper: {:?}",
                    String::from_utf8_lossy(bytes)
                ),
            }),
        );
    }
    Ok(applied)
}

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
    fn reports_parse_to_applied_or_failure() {
        use crate::sandbox::{Enforcement, LandlockRecord};
        let applied = Applied {
            landlock: Some(LandlockRecord {
                kernel_abi: 7,
                abi: 7,
                status: Enforcement::Full,
                not_enforced: Vec::new(),
                granted: Vec::new(),
            }),
            verified: crate::sandbox::Verified::default(),
        };
        let failure = SpawnFailure::new(SpawnStep::Exec, Errno::ENOENT, "/x");
        let mut failure_line = serde_json::to_vec(&failure).unwrap();
        failure_line.push(b'\n');
        assert_eq!(
            String::from_utf8(applied.to_line()).unwrap(),
            "{\"kind\":\"applied\",\"landlock\":{\"kernel_abi\":7,\"abi\":7,\"status\":\"full\",\"not_enforced\":[],\"granted\":[]},\
             \"verified\":{\"no_new_privs\":false,\"capabilities\":[],\"seccomp\":null,\"session_keyring\":false,\"private_proc\":false}}\n"
        );
        assert_eq!(parse_report(b""), Ok(Applied::default()));
        assert_eq!(parse_report(&applied.to_line()), Ok(applied.clone()));
        assert_eq!(parse_report(&failure_line), Err(failure.clone()));
        let both = [applied.to_line(), failure_line].concat();
        assert_eq!(parse_report(&both), Err(failure));
        assert_eq!(
            parse_report(b"garbage").unwrap_err().to_string(),
            "spawn failed at report: malformed report from the exec helper: \"garbage\""
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
            SpawnStep::Namespaces,
            SpawnStep::Capabilities,
            SpawnStep::Keyring,
            SpawnStep::Paths,
            SpawnStep::Landlock,
            SpawnStep::Seccomp,
            SpawnStep::Exec,
            SpawnStep::Helper,
            SpawnStep::Report,
        ];
        for step in steps {
            assert_eq!(serde_json::to_string(&step).unwrap(), format!("\"{step}\""));
        }
    }
}
