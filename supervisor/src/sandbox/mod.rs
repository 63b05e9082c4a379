//! Confinement of an app's process: what it may touch (Landlock), what it
//! sees (namespaces), what it may do (capabilities, no_new_privs, rlimits),
//! and how exposed the result leaves it.
//!
//! Two halves, kept apart:
//!
//! - pure, run in the daemon: [`rules`] computes the [`SandboxPlan`] from an
//!   app's spec, [`venv`] what a root-owned `pyvenv.cfg` says,
//!   [`landlock::decide`] what a kernel ABI can enforce, and [`exposure`]
//!   the checks and score `appctl security` shows;
//! - kernel calls, run only by the exec helper (`spawn::child`) in its fixed
//!   order: [`namespaces::enter`], [`keyring`], [`capabilities`],
//!   [`apply_rlimit`], [`set_no_new_privs`], [`landlock::apply`] (which
//!   checks every path with [`paths`]), [`seccomp::install`]. None of these
//!   may ever be called from the daemon's own process, whose privileges and
//!   limits they would change for every app.

pub mod capabilities;
pub mod exposure;
pub mod keyring;
pub mod landlock;
pub mod namespaces;
pub mod paths;
pub mod rules;
pub mod seccomp;
pub mod venv;

use nix::sys::resource::{setrlimit, Resource};
use serde::{Deserialize, Serialize};

pub use self::landlock::{Enforcement, Feature, GrantedPath, LandlockRecord, LandlockRefusal};
pub use rules::{
    app_venv, LandlockPlan, NamespacePlan, PathAccess, PathRule, Requirement, RuleOrigin,
    SandboxInputs, SandboxPlan, SeccompPlan, SocketFamily, HIDDEN_PATHS, SYSTEM_PATHS,
};

/// What the exec helper found in force just before exec, besides Landlock
/// (which has its own [`LandlockRecord`]): read back from the kernel where
/// it can be, so `appctl security` shows what was, not what was meant.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verified {
    /// PR_GET_NO_NEW_PRIVS.
    pub no_new_privs: bool,
    /// Capabilities still held in any set (none, or the spawn fails).
    pub capabilities: Vec<String>,
    /// The socket families of the seccomp filter installed; `None` when no
    /// filter was.
    pub seccomp: Option<Vec<SocketFamily>>,
    /// A session keyring of the app's own.
    pub session_keyring: bool,
    /// A procfs of the app's own with hidepid=invisible.
    pub private_proc: bool,
}

/// Files under `/etc` that hosts often make symlinks into `/run` (DHCP
/// clients, resolvconf, systemd-resolved), and replace there by rename.
const LINKED_SYSTEM_FILES: [&str; 2] = ["/etc/resolv.conf", "/etc/localtime"];

/// The directories [`LINKED_SYSTEM_FILES`] lead into, for
/// [`SandboxInputs::linked_dirs`]: the directory, not the file, so the
/// rule survives the file's replacement. Daemon side, at each spawn, in
/// `spawn::prepare` (off the async runtime): two `realpath`s of root's own
/// files.
pub fn linked_system_dirs() -> Vec<std::path::PathBuf> {
    LINKED_SYSTEM_FILES
        .iter()
        .filter(|file| std::fs::symlink_metadata(file).is_ok_and(|m| m.file_type().is_symlink()))
        .filter_map(|file| std::fs::canonicalize(file).ok())
        .filter_map(|target| target.parent().map(std::path::Path::to_path_buf))
        .filter(|dir| dir.as_os_str() != "/")
        .collect()
}

/// What the exec helper reported of an app's last spawn, kept by the app's
/// task for `appctl security`, and carried across a hand-off.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpawnRecord {
    pub landlock: Option<LandlockRecord>,
    pub verified: Option<Verified>,
    /// Why the last spawn was refused at the `paths` step, if it was.
    pub refusal: Option<String>,
}

impl SpawnRecord {
    pub fn last(&self) -> exposure::LastSpawn<'_> {
        exposure::LastSpawn {
            landlock: self.landlock.as_ref(),
            verified: self.verified.as_ref(),
            refusal: self.refusal.as_deref(),
        }
    }
}

/// `APPVISOR_LANDLOCK_ABI_MAX`: caps the Landlock ABI the exec helper uses,
/// so tests can show what an older kernel would enforce. Only a build with
/// the `test-landlock-abi-cap` feature (which `cargo test --workspace`
/// turns on through the integration tests' dev-dependency, and no release
/// build does) reads it, once, at daemon start.
pub const LANDLOCK_ABI_MAX_VAR: &str = "APPVISOR_LANDLOCK_ABI_MAX";

/// The Landlock ABI cap of a test build, read from [`LANDLOCK_ABI_MAX_VAR`].
#[cfg(feature = "test-landlock-abi-cap")]
pub fn landlock_abi_cap() -> Option<u8> {
    let value = std::env::var(LANDLOCK_ABI_MAX_VAR).ok()?;
    let cap = value.trim().parse().ok();
    match cap {
        Some(cap) => tracing::warn!(cap, "Landlock ABI capped: a test build"),
        None => tracing::error!(value, "ignoring an invalid {LANDLOCK_ABI_MAX_VAR}"),
    }
    cap
}

/// A production build never caps the Landlock ABI.
#[cfg(not(feature = "test-landlock-abi-cap"))]
pub fn landlock_abi_cap() -> Option<u8> {
    None
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
