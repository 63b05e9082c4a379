//! Landlock: which of an app's rules the kernel can enforce ([`decide`],
//! pure), and building and entering the app's Landlock domain ([`apply`],
//! run only by the exec helper, last before exec).
//!
//! Each ABI adds what Landlock can restrict; a right the ABI does not know
//! is simply not restricted. [`Feature`] lists what appvisor's rules need
//! and from which ABI. With `landlock = "require"` a missing feature fails
//! the spawn; with `best-effort` the app starts and the record says what was
//! not enforced.
//!
//! [`apply`] restricts the calling process for good: it must never run in
//! the daemon's own process.

use std::fmt;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use landlock::{
    Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, NetPort, PathBeneath, Ruleset,
    RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope, ABI,
};
use nix::sys::stat::{fstat, SFlag};
use serde::{Deserialize, Serialize};

use super::paths::{self, Opened, PathError};
use super::rules::{LandlockPlan, PathAccess, PathRule, Requirement, RuleOrigin, MAX_LANDLOCK_ABI};

/// What appvisor's rules ask of Landlock, in ABI order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Feature {
    /// Path rules for reading, writing and executing.
    Filesystem,
    /// Truncating files the app may not write.
    Truncate,
    /// TCP bind restricted to `bind_ports`.
    BindPorts,
    /// TCP connect restricted to `connect_ports`.
    ConnectPorts,
    /// ioctl on device files.
    DeviceIoctl,
    /// Signals only to processes of the app's own domain.
    SignalScope,
    /// Abstract Unix sockets only of the app's own domain.
    AbstractUnixScope,
}

impl Feature {
    /// The first ABI that can enforce it.
    pub fn min_abi(self) -> u8 {
        match self {
            Feature::Filesystem => 1,
            Feature::Truncate => 3,
            Feature::BindPorts | Feature::ConnectPorts => 4,
            Feature::DeviceIoctl => 5,
            Feature::SignalScope | Feature::AbstractUnixScope => 6,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Feature::Filesystem => "filesystem rules",
            Feature::Truncate => "truncate",
            Feature::BindPorts => "bind_ports",
            Feature::ConnectPorts => "connect_ports",
            Feature::DeviceIoctl => "device ioctl",
            Feature::SignalScope => "signal scope",
            Feature::AbstractUnixScope => "abstract unix socket scope",
        }
    }
}

impl fmt::Display for Feature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (needs ABI {})", self.as_str(), self.min_abi())
    }
}

/// How much of the app's Landlock rules is in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Enforcement {
    Full,
    Partial,
    None,
}

impl Enforcement {
    pub fn as_str(self) -> &'static str {
        match self {
            Enforcement::Full => "full",
            Enforcement::Partial => "partial",
            Enforcement::None => "none",
        }
    }
}

/// What the exec helper enforced for one spawn, sent back to the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LandlockRecord {
    /// What the kernel supports.
    pub kernel_abi: u8,
    /// What was used: the kernel's, capped by `APPVISOR_LANDLOCK_ABI_MAX`
    /// and [`MAX_LANDLOCK_ABI`].
    pub abi: u8,
    pub status: Enforcement,
    pub not_enforced: Vec<Feature>,
    /// The app's own rules (every origin but the system list) as granted:
    /// each path resolved to where it really led at this spawn.
    #[serde(default)]
    pub granted: Vec<GrantedPath>,
}

/// One rule as the helper built it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantedPath {
    /// As planned (as the app file names it).
    pub path: std::path::PathBuf,
    /// What the rule was built on.
    pub resolved: std::path::PathBuf,
    pub access: PathAccess,
    pub origin: RuleOrigin,
}

/// Why `landlock = "require"` refused to start the app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LandlockRefusal {
    pub abi: u8,
    pub capped: bool,
    pub missing: Vec<Feature>,
}

impl fmt::Display for LandlockRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "kernel Landlock ABI {}", self.abi)?;
        if self.capped {
            f.write_str(" (capped by APPVISOR_LANDLOCK_ABI_MAX)")?;
        }
        f.write_str(" cannot enforce ")?;
        for (i, feature) in self.missing.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{feature}")?;
        }
        Ok(())
    }
}

/// The features `plan` needs, in ABI order.
pub fn needed(plan: &LandlockPlan) -> Vec<Feature> {
    let mut features = vec![
        Feature::Filesystem,
        Feature::Truncate,
        Feature::BindPorts,
        Feature::DeviceIoctl,
        Feature::SignalScope,
        Feature::AbstractUnixScope,
    ];
    if plan.connect_ports.is_some() {
        features.push(Feature::ConnectPorts);
    }
    features.sort();
    features
}

/// The ABI to use and what it leaves unenforced; `Err` when `require`
/// cannot be met. Pure: the kernel's ABI comes in.
pub fn decide(plan: &LandlockPlan, kernel_abi: u8) -> Result<LandlockRecord, LandlockRefusal> {
    let cap = plan.abi_max.unwrap_or(u8::MAX);
    let abi = kernel_abi.min(cap).min(MAX_LANDLOCK_ABI);
    let capped = cap < kernel_abi.min(MAX_LANDLOCK_ABI);
    let missing: Vec<Feature> = needed(plan)
        .into_iter()
        .filter(|f| f.min_abi() > abi)
        .collect();
    if !missing.is_empty() && plan.mode == Requirement::Require {
        return Err(LandlockRefusal {
            abi,
            capped,
            missing,
        });
    }
    let status = if abi == 0 {
        Enforcement::None
    } else if missing.is_empty() {
        Enforcement::Full
    } else {
        Enforcement::Partial
    };
    Ok(LandlockRecord {
        kernel_abi,
        abi,
        status,
        not_enforced: missing,
        granted: Vec::new(),
    })
}

/// The Landlock ABI of the running kernel; 0 when Landlock is unsupported
/// or disabled at boot.
pub fn kernel_abi() -> u8 {
    const LANDLOCK_CREATE_RULESET_VERSION: nix::libc::c_uint = 1;
    // SAFETY: with a null attribute, size 0 and the VERSION flag the kernel
    // reads no memory and returns the ABI number (or -1 with errno).
    let rc = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    u8::try_from(rc.max(0)).unwrap_or(u8::MAX)
}

/// Why the helper could not enter the planned domain.
#[derive(Debug, thiserror::Error)]
pub enum LandlockError {
    #[error("{path}")]
    Path {
        path: String,
        #[source]
        source: nix::errno::Errno,
    },
    /// A path that could not be resolved safely, or led out of its anchor
    /// for more than the system rules grant.
    #[error("{origin} {error}")]
    Confine {
        origin: &'static str,
        error: PathError,
    },
    #[error("building the ruleset")]
    Ruleset {
        #[source]
        source: landlock::RulesetError,
    },
    #[error("the kernel enforced the ruleset only partly")]
    NotFullyEnforced,
}

impl LandlockError {
    /// The errno to report, 0 when none applies.
    pub fn errno(&self) -> nix::errno::Errno {
        match self {
            LandlockError::Path { source, .. } => *source,
            LandlockError::Confine { error, .. } => nix::errno::Errno::from_raw(error.errno()),
            _ => nix::errno::Errno::UnknownErrno,
        }
    }
}

/// Builds the ruleset `record` says the kernel can enforce and restricts
/// the calling process (and every process it will start) to it; returns
/// the app's own rules as granted.
///
/// Every path is opened once and checked to stay inside its anchor
/// ([`paths`]); the `directory` rule is built on the current directory,
/// which the helper entered through it. A path that leads out of its
/// anchor fails, unless the system rules already grant everything its rule
/// would ([`granted_by_system`]): then it gets no rule of its own, so the
/// ruleset is exactly what it would be without the link (a default venv's
/// `bin/python -> /usr/bin/python3.11`). Call once, as the last step before
/// exec and after chdir: it needs no_new_privs (or CAP_SYS_ADMIN) and
/// applies to this very process.
pub fn apply(
    plan: &LandlockPlan,
    record: &LandlockRecord,
) -> Result<Vec<GrantedPath>, LandlockError> {
    if record.abi == 0 {
        return Ok(Vec::new());
    }
    let abi = ABI::from(i32::from(record.abi));
    let ruleset_error = |source| LandlockError::Ruleset { source };
    // Hard requirement: `decide` already chose an ABI the kernel supports,
    // so anything the crate would silently drop is a bug to report.
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(AccessFs::from_all(abi))
        .map_err(ruleset_error)?;
    if record.abi >= Feature::BindPorts.min_abi() {
        ruleset = ruleset
            .handle_access(AccessNet::BindTcp)
            .map_err(ruleset_error)?;
        if plan.connect_ports.is_some() {
            ruleset = ruleset
                .handle_access(AccessNet::ConnectTcp)
                .map_err(ruleset_error)?;
        }
    }
    if record.abi >= Feature::SignalScope.min_abi() {
        ruleset = ruleset.scope(Scope::from_all(abi)).map_err(ruleset_error)?;
    }
    let mut created = ruleset.create().map_err(ruleset_error)?;

    // The system rules first: a path that leaves its anchor is judged by
    // what they grant.
    let (system_rules, own_rules): (Vec<&PathRule>, Vec<&PathRule>) = plan
        .paths
        .iter()
        .partition(|rule| rule.origin == RuleOrigin::System);
    let mut system = Vec::new();
    let mut granted = Vec::new();
    let fs = paths::OnceFs::default();
    for rule in system_rules.into_iter().chain(own_rules) {
        let opened = match rule.origin {
            RuleOrigin::Directory => paths::open_cwd_anchored(&rule.path, &fs),
            _ => paths::open_anchored(&rule.path, &fs),
        };
        let opened = match opened {
            Ok(opened) => opened,
            Err(PathError::Io { source, .. })
                if rule.origin.optional() && source.kind() == std::io::ErrorKind::NotFound =>
            {
                continue
            }
            Err(PathError::Io { path, source }) => {
                return Err(LandlockError::Path {
                    path: path.display().to_string(),
                    source: nix::errno::Errno::from_raw(source.raw_os_error().unwrap_or(0)),
                })
            }
            Err(error) => {
                return Err(LandlockError::Confine {
                    origin: rule.origin.as_str(),
                    error,
                })
            }
        };
        let is_dir = fstat(opened.fd.as_fd())
            .map(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR)
            .map_err(|source| LandlockError::Path {
                path: rule.path.display().to_string(),
                source,
            })?;
        let rights = access_bits(rule.access, abi, is_dir);
        let inside = opened.is_inside();
        let Opened {
            fd,
            resolved,
            anchor,
        } = opened;
        if inside {
            if rule.origin == RuleOrigin::System {
                system.push(SystemGrant {
                    resolved: resolved.clone(),
                    rights,
                });
            }
            created = created
                .add_rule(PathBeneath::new(fd, rights))
                .map_err(ruleset_error)?;
        } else if !granted_by_system(&resolved, rights, &system) {
            return Err(LandlockError::Confine {
                origin: rule.origin.as_str(),
                error: PathError::Escapes {
                    path: rule.path.clone(),
                    resolved,
                    anchor,
                },
            });
        }
        // Otherwise it left its anchor only for what the system rules grant
        // already: a rule of its own would add nothing, and none is added.
        if rule.origin != RuleOrigin::System {
            granted.push(GrantedPath {
                path: rule.path.clone(),
                resolved,
                access: rule.access,
                origin: rule.origin,
            });
        }
    }
    if record.abi >= Feature::BindPorts.min_abi() {
        for port in &plan.bind_ports {
            created = created
                .add_rule(NetPort::new(*port, AccessNet::BindTcp))
                .map_err(ruleset_error)?;
        }
        for port in plan.connect_ports.iter().flatten() {
            created = created
                .add_rule(NetPort::new(*port, AccessNet::ConnectTcp))
                .map_err(ruleset_error)?;
        }
    }
    let status = created.restrict_self().map_err(ruleset_error)?;
    if status.ruleset != RulesetStatus::FullyEnforced {
        return Err(LandlockError::NotFullyEnforced);
    }
    Ok(granted)
}

/// The rights of `access` that `abi` knows, narrowed to what a rule on a
/// file (rather than a directory) may carry.
pub fn access_bits(access: PathAccess, abi: ABI, is_dir: bool) -> BitFlags<AccessFs> {
    let read = AccessFs::ReadFile | AccessFs::ReadDir;
    let bits = match access {
        PathAccess::ReadExecute => read | AccessFs::Execute,
        PathAccess::Read => read,
        // Never execute what may have been written; device nodes and device
        // ioctls are not the app's business.
        PathAccess::ReadWrite => {
            AccessFs::from_all(abi)
                & !(AccessFs::Execute
                    | AccessFs::MakeChar
                    | AccessFs::MakeBlock
                    | AccessFs::IoctlDev)
        }
    };
    let bits = bits & AccessFs::from_all(abi);
    if is_dir {
        bits
    } else {
        bits & AccessFs::from_file(abi)
    }
}

/// What one system rule grants, as the helper built it: on the directory
/// (or file) it really opened, these rights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemGrant {
    pub resolved: PathBuf,
    pub rights: BitFlags<AccessFs>,
}

/// Whether the system rules already grant every right of `rights` on
/// `resolved`: Landlock gives a file the union of the rights of the rules
/// on it and on every directory above it, so a rule there that asks no more
/// than that union widens nothing.
///
/// This is what lets an owner's link leave its anchor: `venv/bin/python ->
/// /usr/bin/python3.11` asks read and execute beneath `/usr`, which every
/// app has. Executing anything under `/etc` (read only), writing under
/// `/usr`, or reading `/`, `/srv` or another app's directory (not system
/// paths at all) is more than they grant.
pub fn granted_by_system(
    resolved: &Path,
    rights: BitFlags<AccessFs>,
    system: &[SystemGrant],
) -> bool {
    let union = system
        .iter()
        .filter(|grant| resolved.starts_with(&grant.resolved))
        .fold(BitFlags::<AccessFs>::empty(), |union, grant| {
            union | grant.rights
        });
    union.contains(rights)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_spec::app_spec;
    use crate::sandbox::rules::{SandboxInputs, SandboxPlan};

    fn plan(mode: Requirement, connect: Option<Vec<u16>>, cap: Option<u8>) -> LandlockPlan {
        let mut spec = app_spec("shop", &["/srv/shop/venv/bin/gunicorn"]);
        spec.sandbox.connect_ports = connect;
        let mut plan = SandboxPlan::build(&spec, &SandboxInputs::default())
            .landlock
            .unwrap();
        plan.mode = mode;
        plan.abi_max = cap;
        plan
    }

    /// (mode, connect_ports, ABI cap, kernel ABI, (ABI, status, not enforced) or refusal)
    type DecideCase = (
        Requirement,
        Option<Vec<u16>>,
        Option<u8>,
        u8,
        Result<(u8, Enforcement, Vec<Feature>), &'static str>,
    );

    #[test]
    fn decides_what_each_abi_enforces() {
        use Enforcement::{Full, Partial};
        use Feature::*;
        use Requirement::*;
        #[rustfmt::skip]
        let cases: Vec<DecideCase> = vec![
            (Require, None, None, 7, Ok((7, Full, vec![]))),
            (Require, Some(vec![5432]), None, 6, Ok((6, Full, vec![]))),
            (Require, None, None, 9, Ok((7, Full, vec![]))),
            (Require, Some(vec![5432]), Some(3), 7, Err("kernel Landlock ABI 3 (capped by APPVISOR_LANDLOCK_ABI_MAX) cannot enforce bind_ports (needs ABI 4), connect_ports (needs ABI 4), device ioctl (needs ABI 5), signal scope (needs ABI 6), abstract unix socket scope (needs ABI 6)")),
            (Require, None, None, 5, Err("kernel Landlock ABI 5 cannot enforce signal scope (needs ABI 6), abstract unix socket scope (needs ABI 6)")),
            (Require, None, None, 0, Err("kernel Landlock ABI 0 cannot enforce filesystem rules (needs ABI 1), truncate (needs ABI 3), bind_ports (needs ABI 4), device ioctl (needs ABI 5), signal scope (needs ABI 6), abstract unix socket scope (needs ABI 6)")),
            (BestEffort, Some(vec![5432]), Some(3), 7, Ok((3, Partial, vec![BindPorts, ConnectPorts, DeviceIoctl, SignalScope, AbstractUnixScope]))),
            (BestEffort, None, Some(5), 7, Ok((5, Partial, vec![SignalScope, AbstractUnixScope]))),
            (BestEffort, None, Some(9), 7, Ok((7, Full, vec![]))),
            (BestEffort, None, None, 0, Ok((0, Enforcement::None, vec![Filesystem, Truncate, BindPorts, DeviceIoctl, SignalScope, AbstractUnixScope]))),
        ];
        for (mode, connect, cap, kernel, want) in cases {
            let got = decide(&plan(mode, connect.clone(), cap), kernel);
            let case = format!("{mode:?} connect={connect:?} cap={cap:?} kernel={kernel}");
            match (got, want) {
                (Ok(record), Ok((abi, status, missing))) => assert_eq!(
                    record,
                    LandlockRecord {
                        kernel_abi: kernel,
                        abi,
                        status,
                        not_enforced: missing,
                        granted: Vec::new(),
                    },
                    "{case}"
                ),
                (Err(refusal), Err(message)) => assert_eq!(refusal.to_string(), message, "{case}"),
                (got, want) => panic!("{case}: got {got:?}, want {want:?}"),
            }
        }
    }

    /// The system list as the helper builds it (device nodes are files).
    fn system_grants(abi: ABI) -> Vec<SystemGrant> {
        crate::sandbox::rules::SYSTEM_PATHS
            .iter()
            .map(|(path, access)| SystemGrant {
                resolved: PathBuf::from(path),
                rights: access_bits(*access, abi, !path.starts_with("/dev/")),
            })
            .collect()
    }

    #[test]
    fn a_path_out_of_its_anchor_widens_nothing_only_within_the_system_rules() {
        use PathAccess::*;
        // (where an owner's link led, the rule's access, a directory?, allowed)
        #[rustfmt::skip]
        let cases = [
            // A default venv's interpreter, and venvs or code under /usr.
            ("/usr/bin/python3.11", ReadExecute, false, true),
            ("/usr/local/venvs/shop", ReadExecute, true, true),
            ("/usr/lib/python3/dist-packages", Read, true, true),
            ("/usr", ReadExecute, true, true),
            ("/etc/ssl/certs", Read, true, true),
            ("/sys/devices/system/cpu/cpu0", Read, true, true),
            ("/dev/null", ReadWrite, false, true),
            // More rights than the system rules give there.
            ("/etc/cron.daily/logrotate", ReadExecute, false, false),
            ("/etc", ReadExecute, true, false),
            ("/usr/share/shop", ReadWrite, true, false),
            ("/dev/zero", ReadWrite, false, false),
            ("/proc/self", ReadExecute, true, false),
            // Not a system path at all: the whole tree, /srv, another
            // app's code, the app's own /tmp.
            ("/", Read, true, false),
            ("/srv", Read, true, false),
            ("/srv/other/venv/bin/python", ReadExecute, false, false),
            ("/var/lib/other", Read, true, false),
            ("/tmp/code", Read, true, false),
            // Paths compare by component: /usrx is not under /usr.
            ("/usrx/bin/python3", ReadExecute, false, false),
        ];
        for abi in [ABI::V1, ABI::V7] {
            let system = system_grants(abi);
            for (resolved, access, is_dir, want) in cases {
                assert_eq!(
                    granted_by_system(
                        Path::new(resolved),
                        access_bits(access, abi, is_dir),
                        &system
                    ),
                    want,
                    "{resolved} {} on {abi:?}",
                    access.as_str()
                );
            }
        }
        // Nothing is granted where no system rule was built.
        let rx = access_bits(ReadExecute, ABI::V7, false);
        assert!(!granted_by_system(Path::new("/usr/bin/python3"), rx, &[]));
    }

    #[test]
    fn the_rights_of_nested_system_rules_add_up() {
        let system = [
            SystemGrant {
                resolved: "/opt".into(),
                rights: AccessFs::ReadFile | AccessFs::ReadDir,
            },
            SystemGrant {
                resolved: "/opt/tools".into(),
                rights: AccessFs::Execute.into(),
            },
        ];
        let rx = AccessFs::ReadFile | AccessFs::Execute;
        assert!(granted_by_system(Path::new("/opt/tools/run"), rx, &system));
        assert!(!granted_by_system(Path::new("/opt/other/run"), rx, &system));
    }

    #[test]
    fn access_bits_never_grant_execute_with_write() {
        for abi in [ABI::V1, ABI::V3, ABI::V5, ABI::V7] {
            for is_dir in [true, false] {
                let rw = access_bits(PathAccess::ReadWrite, abi, is_dir);
                assert!(!rw.contains(AccessFs::Execute), "{abi:?} dir={is_dir}");
                assert!(rw.contains(AccessFs::WriteFile), "{abi:?} dir={is_dir}");
                let ro = access_bits(PathAccess::Read, abi, is_dir);
                assert!(!ro.intersects(AccessFs::WriteFile | AccessFs::Execute));
            }
        }
        assert!(!access_bits(PathAccess::ReadWrite, ABI::V2, false).contains(AccessFs::MakeReg));
        assert!(access_bits(PathAccess::ReadWrite, ABI::V3, false).contains(AccessFs::Truncate));
        assert!(!access_bits(PathAccess::ReadWrite, ABI::V2, true).contains(AccessFs::Truncate));
    }

    #[test]
    fn record_has_a_stable_wire_form() {
        let record = LandlockRecord {
            kernel_abi: 7,
            abi: 3,
            status: Enforcement::Partial,
            not_enforced: vec![Feature::BindPorts, Feature::SignalScope],
            granted: Vec::new(),
        };
        let json = serde_json::to_string(&record).unwrap();
        assert_eq!(
            json,
            r#"{"kernel_abi":7,"abi":3,"status":"partial","not_enforced":["bind-ports","signal-scope"],"granted":[]}"#
        );
        assert_eq!(
            serde_json::from_str::<LandlockRecord>(&json).unwrap(),
            record
        );
    }
}
