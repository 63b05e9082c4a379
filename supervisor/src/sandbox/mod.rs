//! Confinement applied to an app's process by the exec helper
//! (`spawn::child`), between dropping to the app's user and exec.
//!
//! Today this module owns resource limits and no_new_privs; Landlock,
//! namespaces and capability bounding come later and slot into the helper's
//! ordered steps where `spawn::child` marks them. Everything here is a thin,
//! single-purpose wrapper around one kernel call, run only by the helper:
//! nothing here may be called from the daemon's own process, whose
//! privileges and limits it would change for every app.

use nix::sys::resource::{setrlimit, Resource};
use serde::{Deserialize, Serialize};

/// A resource limit the helper sets before dropping privileges (raising a
/// hard limit needs root).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rlimit {
    pub resource: RlimitResource,
    pub soft: u64,
    pub hard: u64,
}

/// The limits an app file can set; one variant per `[limits]` key that maps
/// to a per-process rlimit rather than to the cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RlimitResource {
    /// `open_files`: RLIMIT_NOFILE.
    OpenFiles,
}

impl RlimitResource {
    /// The kernel's name, for failure reports.
    pub fn kernel_name(self) -> &'static str {
        match self {
            RlimitResource::OpenFiles => "RLIMIT_NOFILE",
        }
    }

    fn resource(self) -> Resource {
        match self {
            RlimitResource::OpenFiles => Resource::RLIMIT_NOFILE,
        }
    }
}

/// Sets one limit on the calling process.
pub fn apply_rlimit(limit: &Rlimit) -> nix::Result<()> {
    setrlimit(limit.resource.resource(), limit.soft, limit.hard)
}

/// Sets no_new_privs on the calling process: from here on, execve can never
/// grant privileges (setuid bits and file capabilities are ignored). It is
/// inherited by every descendant and cannot be unset.
pub fn set_no_new_privs() -> nix::Result<()> {
    nix::sys::prctl::set_no_new_privs()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rlimit_has_a_stable_wire_form() {
        let limit = Rlimit {
            resource: RlimitResource::OpenFiles,
            soft: 4096,
            hard: 4096,
        };
        let json = serde_json::to_string(&limit).unwrap();
        assert_eq!(json, r#"{"resource":"open-files","soft":4096,"hard":4096}"#);
        assert_eq!(serde_json::from_str::<Rlimit>(&json).unwrap(), limit);
    }
}
