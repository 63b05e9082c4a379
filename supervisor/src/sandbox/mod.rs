//! Confinement of an app's process: what it may touch (Landlock), what it
//! sees (namespaces), what it may do (capabilities, no_new_privs, rlimits),
//! and how exposed the result leaves it.
//!
//! Two halves, kept apart:
//!
//! - pure, run in the daemon: [`rules`] computes the [`SandboxPlan`] from an
//!   app's spec, [`landlock::decide`] what a kernel ABI can enforce, and
//!   [`exposure`] the checks and score `appctl security` shows;
//! - kernel calls, run only by the exec helper (`spawn::child`) in its fixed
//!   order: [`namespaces::enter`], [`capabilities`], [`apply_rlimit`],
//!   [`set_no_new_privs`], [`landlock::apply`]. None of these may ever be
//!   called from the daemon's own process, whose privileges and limits they
//!   would change for every app.

pub mod capabilities;
pub mod exposure;
pub mod landlock;
pub mod namespaces;
pub mod rules;

use nix::sys::resource::{setrlimit, Resource};
use serde::{Deserialize, Serialize};

pub use self::landlock::{Enforcement, Feature, LandlockRecord, LandlockRefusal};
pub use rules::{
    app_venv, LandlockPlan, NamespacePlan, PathAccess, PathRule, Requirement, RuleOrigin,
    SandboxInputs, SandboxPlan, SYSTEM_PATHS,
};

/// The base interpreter's `bin` of `venv` ([`rules::app_venv`]), from its
/// `pyvenv.cfg`. Daemon side: reads one small file before the plan is built.
pub fn python_home(venv: &std::path::Path) -> Option<std::path::PathBuf> {
    let cfg = std::fs::read_to_string(venv.join("pyvenv.cfg")).ok()?;
    rules::parse_pyvenv_home(&cfg)
}

/// `APPVISOR_LANDLOCK_ABI_MAX`: caps the Landlock ABI the exec helper uses,
/// so tests can show what an older kernel would enforce. Read once, at
/// daemon start; not meant for production.
pub const LANDLOCK_ABI_MAX_VAR: &str = "APPVISOR_LANDLOCK_ABI_MAX";

/// Parses the value of [`LANDLOCK_ABI_MAX_VAR`].
pub fn parse_landlock_abi_max(value: &str) -> Option<u8> {
    value.trim().parse().ok()
}

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
    /// Core dump size: always 0, since a dump holds the app's secrets and
    /// is written where the app no longer decides.
    Core,
}

impl RlimitResource {
    /// The kernel's name, for failure reports.
    pub fn kernel_name(self) -> &'static str {
        match self {
            RlimitResource::OpenFiles => "RLIMIT_NOFILE",
            RlimitResource::Core => "RLIMIT_CORE",
        }
    }

    fn resource(self) -> Resource {
        match self {
            RlimitResource::OpenFiles => Resource::RLIMIT_NOFILE,
            RlimitResource::Core => Resource::RLIMIT_CORE,
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
