//! What `appctl security` shows: an app's effective sandbox and an exposure
//! score from 0 (tight) to 10 (unconfined), in the spirit of
//! `systemd-analyze security`. The score is the weight of the failed checks
//! over the total weight, so the list of checks explains it.
//!
//! Each [`Check`] is a variant, and [`passes`] matches on all of them with
//! no catch-all: a new check cannot be added without deciding how it is
//! computed. Everything is computed from what the exec helper reported of
//! the last spawn ([`LastSpawn`]: the paths as they resolved, the kernel's
//! own answers for no_new_privs and capabilities), or, before any spawn,
//! from the plan the next spawn would use.
//!
//! Pure: the app, its sandbox plan, the last spawn and the kernel's
//! Landlock ABI come in as arguments.

use std::path::{Path, PathBuf};

use appvisor_protocol::{
    AppSecurity, LandlockSecurity, SecurityCheck, SecurityLimits, SecurityPath, SecuritySeccomp,
};

use super::landlock::{decide, Enforcement, LandlockRecord};
use super::namespaces::clone_flags;
use super::rules::{app_venv, listen_ports, PathAccess, Requirement, RuleOrigin, SandboxPlan};
use super::Verified;
use crate::config::resolve::ResolvedApp;
use crate::config::security::{is_broad, WeaknessKind};
use crate::config::{LimitSpec, NetworkMode};

/// One check of the score. Weights say how much an attacker holding the
/// app gains when the check fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    LandlockEnforced,
    CodeReadOnly,
    PathsConfined,
    CapabilitiesEmpty,
    NoNewPrivs,
    Seccomp,
    OutboundRestricted,
    NoPrivilegedGroups,
    NoLoaderInjection,
    LandlockRequired,
    BindListenOnly,
    UdpConfined,
    AbstractUnixConfined,
    PrivateTmp,
    PrivateProc,
    SessionKeyring,
    PrivateUmask,
    AccessNarrow,
    OwnUser,
    MemoryLimit,
    TasksLimit,
    CpuLimit,
}

impl Check {
    /// Every check, heaviest first: the order `appctl security` lists them.
    pub const ALL: [Check; 22] = [
        Check::LandlockEnforced,
        Check::CodeReadOnly,
        Check::PathsConfined,
        Check::CapabilitiesEmpty,
        Check::NoNewPrivs,
        Check::Seccomp,
        Check::OutboundRestricted,
        Check::NoPrivilegedGroups,
        Check::NoLoaderInjection,
        Check::LandlockRequired,
        Check::BindListenOnly,
        Check::UdpConfined,
        Check::AbstractUnixConfined,
        Check::PrivateTmp,
        Check::PrivateProc,
        Check::SessionKeyring,
        Check::PrivateUmask,
        Check::AccessNarrow,
        Check::OwnUser,
        Check::MemoryLimit,
        Check::TasksLimit,
        Check::CpuLimit,
    ];

    /// (stable identifier, what passing means, weight)
    pub fn describe(self) -> (&'static str, &'static str, u32) {
        match self {
            Check::LandlockEnforced => (
                "landlock-enforced",
                "Landlock file system and network rules fully enforced",
                4,
            ),
            Check::CodeReadOnly => (
                "code-read-only",
                "the app cannot write its own directory or venv",
                3,
            ),
            Check::PathsConfined => (
                "paths-confined",
                "no granted path opens /, /etc, /proc, /home, /root, /var, /srv, ... whole",
                3,
            ),
            Check::CapabilitiesEmpty => (
                "capabilities-empty",
                "no capabilities, bounding set empty",
                2,
            ),
            Check::NoNewPrivs => (
                "no-new-privs",
                "no_new_privs: setuid binaries gain nothing",
                2,
            ),
            Check::Seccomp => (
                "seccomp",
                "seccomp filter: no io_uring, bpf, ptrace, mount, new namespaces; sockets only AF_UNIX, AF_INET, AF_INET6",
                2,
            ),
            Check::OutboundRestricted => (
                "outbound-restricted",
                "outbound TCP limited (connect_ports or network = \"none\")",
                2,
            ),
            Check::NoPrivilegedGroups => (
                "no-privileged-groups",
                "no group that reads secrets or equals root (docker, disk, adm, sudo, ...)",
                2,
            ),
            Check::NoLoaderInjection => (
                "no-loader-injection",
                "no LD_PRELOAD, no loader or Python search path the app can write",
                2,
            ),
            Check::LandlockRequired => (
                "landlock-required",
                "landlock = \"require\": no start without full enforcement",
                1,
            ),
            Check::BindListenOnly => (
                "bind-listen-only",
                "TCP bind limited to the [[listen]] ports",
                1,
            ),
            Check::UdpConfined => (
                "udp-confined",
                "UDP bind and send confined (only network = \"none\": Landlock has no UDP rules)",
                1,
            ),
            Check::AbstractUnixConfined => (
                "abstract-unix-confined",
                "abstract Unix socket names of its own (only network = \"none\": Landlock scopes connect, not bind)",
                1,
            ),
            Check::PrivateTmp => ("private-tmp", "private /tmp and /var/tmp", 1),
            Check::PrivateProc => (
                "private-proc",
                "own /proc: only the app's processes are visible",
                1,
            ),
            Check::SessionKeyring => ("session-keyring", "a session keyring of its own", 1),
            Check::PrivateUmask => (
                "private-umask",
                "umask keeps new files from being world-writable",
                1,
            ),
            Check::AccessNarrow => (
                "access-narrow",
                "[access] names no group every user is in",
                1,
            ),
            Check::OwnUser => ("own-user", "a user of its own, not nobody", 1),
            Check::MemoryLimit => ("memory-limit", "[limits] memory set", 1),
            Check::TasksLimit => (
                "tasks-limit",
                "tasks limited ([limits] tasks, or the default)",
                1,
            ),
            Check::CpuLimit => ("cpu-limit", "[limits] cpu set", 1),
        }
    }
}

/// What the exec helper reported of the app's last spawn.
#[derive(Debug, Clone, Copy, Default)]
pub struct LastSpawn<'a> {
    pub landlock: Option<&'a LandlockRecord>,
    pub verified: Option<&'a Verified>,
    /// Why the sandbox refused the last spawn (a path out of its anchor).
    pub refusal: Option<&'a str>,
}

/// What the checks look at, gathered once.
struct Facts<'a> {
    app: &'a ResolvedApp,
    plan: &'a SandboxPlan,
    last: LastSpawn<'a>,
    enforced: bool,
    /// (path as granted, where it led, access, origin) of the app's own rules.
    granted: Vec<(PathBuf, PathBuf, PathAccess, RuleOrigin)>,
    /// The limits the app gets, defaults included.
    limits: &'a SecurityLimits,
}

/// Whether `check` passes, and why not when there is more to say.
fn passes(check: Check, f: &Facts<'_>) -> Result<(), Option<String>> {
    let spec = &f.app.spec;
    let landlock = f.plan.landlock.as_ref();
    let verified = f.last.verified;
    let ok = |passed: bool| if passed { Ok(()) } else { Err(None) };
    let weakness = |kind: WeaknessKind| -> Result<(), Option<String>> {
        let found: Vec<String> = f
            .app
            .weaknesses
            .iter()
            .filter(|w| w.kind == kind)
            .map(|w| format!("{}: {}", w.key, w.message))
            .collect();
        if found.is_empty() {
            Ok(())
        } else {
            Err(Some(found.join("; ")))
        }
    };
    match check {
        Check::LandlockEnforced => ok(f.enforced),
        Check::CodeReadOnly => {
            let code: Vec<&Path> = f
                .granted
                .iter()
                .filter(|(_, _, _, origin)| {
                    matches!(origin, RuleOrigin::Directory | RuleOrigin::Venv)
                })
                .map(|(_, resolved, _, _)| resolved.as_path())
                .chain(app_venv(spec))
                .chain(std::iter::once(spec.directory.as_path()))
                .collect();
            let writable = f.granted.iter().find(|(_, resolved, access, _)| {
                *access == PathAccess::ReadWrite
                    && code
                        .iter()
                        .any(|c| c.starts_with(resolved) || resolved.starts_with(c))
            });
            match (f.enforced, writable) {
                (false, _) => Err(None),
                (true, Some((path, resolved, _, _))) => Err(Some(format!(
                    "{} (at {}) is writable",
                    path.display(),
                    resolved.display()
                ))),
                (true, None) => Ok(()),
            }
        }
        Check::PathsConfined => {
            if let Some(refusal) = f.last.refusal {
                return Err(Some(format!("the last spawn was refused: {refusal}")));
            }
            let broad: Vec<String> = f
                .granted
                .iter()
                .filter(|(_, resolved, _, _)| is_broad(resolved))
                .map(|(path, resolved, _, origin)| {
                    format!(
                        "{} ({}) grants {}",
                        path.display(),
                        origin.as_str(),
                        resolved.display()
                    )
                })
                .collect();
            if broad.is_empty() {
                Ok(())
            } else {
                Err(Some(broad.join("; ")))
            }
        }
        Check::CapabilitiesEmpty => match verified {
            Some(v) if !v.capabilities.is_empty() => Err(Some(v.capabilities.join(", "))),
            // The helper fails a spawn that keeps any capability, so the
            // plan promises none.
            _ => Ok(()),
        },
        Check::NoNewPrivs => ok(verified.map_or(f.plan.no_new_privs, |v| v.no_new_privs)),
        Check::Seccomp => ok(verified.map_or(f.plan.seccomp.is_some(), |v| v.seccomp.is_some())),
        Check::OutboundRestricted => ok(spec.sandbox.network == NetworkMode::None
            || (f.enforced && landlock.is_some_and(|l| l.connect_ports.is_some()))),
        Check::NoPrivilegedGroups => weakness(WeaknessKind::PrivilegedGroup),
        Check::NoLoaderInjection => weakness(WeaknessKind::LoaderVariable),
        Check::LandlockRequired => ok(landlock.is_some_and(|l| l.mode == Requirement::Require)),
        Check::BindListenOnly => {
            let listen = listen_ports(spec);
            ok(f.enforced
                && landlock.is_some_and(|l| l.bind_ports.iter().all(|p| listen.contains(p))))
        }
        // Landlock (up to ABI 7) has no UDP rules and scopes only connect to
        // abstract sockets, not bind: only a network namespace of the app's
        // own confines them.
        Check::UdpConfined | Check::AbstractUnixConfined => ok(f.plan.namespaces.network),
        Check::PrivateTmp => ok(f.plan.namespaces.private_tmp.is_some()),
        Check::PrivateProc => {
            ok(verified.map_or(f.plan.namespaces.private_proc, |v| v.private_proc))
        }
        Check::SessionKeyring => ok(verified.map_or(f.plan.session_keyring, |v| v.session_keyring)),
        Check::PrivateUmask => weakness(WeaknessKind::WorldWritableUmask),
        Check::AccessNarrow => weakness(WeaknessKind::AccessForEveryone),
        Check::OwnUser => weakness(WeaknessKind::SharedUser),
        Check::MemoryLimit => ok(f.limits.memory.is_some()),
        Check::TasksLimit => ok(f.limits.tasks.is_some()),
        Check::CpuLimit => ok(f.limits.cpu.is_some()),
    }
}

/// 0.0 (every check passed) to 10.0 (every check failed), one decimal.
pub fn exposure_score(checks: &[SecurityCheck]) -> f64 {
    let total: u32 = checks.iter().map(|c| c.weight).sum();
    if total == 0 {
        return 10.0;
    }
    let failed: u32 = checks.iter().filter(|c| !c.passed).map(|c| c.weight).sum();
    (f64::from(failed) * 100.0 / f64::from(total)).round() / 10.0
}

/// `[limits]` as the app's file sets them, with no default added.
pub fn configured_limits(limits: &LimitSpec) -> SecurityLimits {
    SecurityLimits {
        memory: limits.memory,
        tasks: limits.tasks,
        cpu: limits.cpu,
        open_files: limits.open_files,
        core: 0,
        defaults: Vec::new(),
    }
}

/// The security report of `app`: what its last spawn put in force, or,
/// before one, what `plan` would; `limits` are the limits it gets,
/// defaults included.
pub fn report(
    app: &ResolvedApp,
    plan: &SandboxPlan,
    last: LastSpawn<'_>,
    kernel_abi: u8,
    limits: SecurityLimits,
) -> AppSecurity {
    let spec = &app.spec;
    let landlock = landlock_security(plan, last.landlock, kernel_abi);
    let enforced = landlock.status == Enforcement::Full.as_str();
    let reported = last.landlock.filter(|r| r.abi > 0).map(|r| &r.granted);
    let rules = plan.landlock.iter().flat_map(|l| &l.paths);
    // What the app's own rules granted: as reported, else as planned.
    let granted: Vec<(PathBuf, PathBuf, PathAccess, RuleOrigin)> = match reported {
        Some(granted) => granted
            .iter()
            .map(|g| (g.path.clone(), g.resolved.clone(), g.access, g.origin))
            .collect(),
        None => rules
            .clone()
            .filter(|r| r.origin != RuleOrigin::System)
            .map(|r| (r.path.clone(), r.path.clone(), r.access, r.origin))
            .collect(),
    };
    let paths: Vec<SecurityPath> = rules
        .map(|r| SecurityPath {
            path: r.path.display().to_string(),
            access: r.access.as_str().to_owned(),
            origin: r.origin.as_str().to_owned(),
            resolved: reported.and_then(|granted| {
                granted
                    .iter()
                    .find(|g| g.path == r.path && g.origin == r.origin)
                    .map(|g| g.resolved.display().to_string())
            }),
        })
        .collect();
    let bind_ports = plan
        .landlock
        .as_ref()
        .map(|l| l.bind_ports.clone())
        .unwrap_or_default();
    let connect_ports = plan.landlock.as_ref().and_then(|l| l.connect_ports.clone());

    let facts = Facts {
        app,
        plan,
        last,
        enforced,
        granted,
        limits: &limits,
    };
    let checks: Vec<SecurityCheck> = Check::ALL
        .iter()
        .map(|check| {
            let (id, description, weight) = check.describe();
            let outcome = passes(*check, &facts);
            SecurityCheck {
                id: id.to_owned(),
                description: description.to_owned(),
                weight,
                passed: outcome.is_ok(),
                detail: outcome.err().flatten(),
            }
        })
        .collect();
    let exposure = exposure_score(&checks);
    let verified = last.verified;
    AppSecurity {
        name: spec.name.to_string(),
        user: app.user_name.clone(),
        uid: app.uid,
        gid: app.gid,
        groups: app.groups.to_vec(),
        landlock,
        paths,
        bind_ports,
        connect_ports,
        namespaces: clone_flags(&plan.namespaces)
            .1
            .into_iter()
            .map(str::to_owned)
            .collect(),
        private_tmp: plan.namespaces.private_tmp.is_some(),
        network: match spec.sandbox.network {
            NetworkMode::Host => "host",
            NetworkMode::None => "none",
        }
        .to_owned(),
        limits,
        no_new_privs: verified.map_or(plan.no_new_privs, |v| v.no_new_privs),
        capabilities: verified.map(|v| v.capabilities.clone()).unwrap_or_default(),
        hidden: plan
            .namespaces
            .hide
            .iter()
            .map(|p| p.display().to_string())
            .collect(),
        private_proc: verified.map_or(plan.namespaces.private_proc, |v| v.private_proc),
        session_keyring: verified.map_or(plan.session_keyring, |v| v.session_keyring),
        seccomp: verified
            .map_or(
                plan.seccomp.as_ref().map(|s| s.socket_families.clone()),
                |v| v.seccomp.clone(),
            )
            .map(|families| SecuritySeccomp {
                socket_families: families.iter().map(|f| f.as_str().to_owned()).collect(),
                refused: super::seccomp::refused_syscalls()
                    .into_iter()
                    .map(str::to_owned)
                    .collect(),
            }),
        refusal: last.refusal.map(str::to_owned),
        checks,
        exposure,
    }
}

fn landlock_security(
    plan: &SandboxPlan,
    record: Option<&LandlockRecord>,
    kernel_abi: u8,
) -> LandlockSecurity {
    let Some(landlock) = &plan.landlock else {
        return LandlockSecurity {
            mode: "off".into(),
            kernel_abi,
            abi: 0,
            status: Enforcement::None.as_str().into(),
            not_enforced: Vec::new(),
            reported: false,
        };
    };
    let mode = match landlock.mode {
        Requirement::Require => "require",
        Requirement::BestEffort => "best-effort",
    }
    .to_owned();
    let features = |r: &LandlockRecord| r.not_enforced.iter().map(|f| f.to_string()).collect();
    match record {
        Some(r) => LandlockSecurity {
            mode,
            kernel_abi: r.kernel_abi,
            abi: r.abi,
            status: r.status.as_str().into(),
            not_enforced: features(r),
            reported: true,
        },
        None => match decide(landlock, kernel_abi) {
            Ok(r) => LandlockSecurity {
                mode,
                kernel_abi,
                abi: r.abi,
                status: r.status.as_str().into(),
                not_enforced: features(&r),
                reported: false,
            },
            Err(refusal) => LandlockSecurity {
                mode,
                kernel_abi,
                abi: refusal.abi,
                status: "refused".into(),
                not_enforced: refusal.missing.iter().map(|f| f.to_string()).collect(),
                reported: false,
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::security::Weakness;
    use crate::config::test_spec::{app_spec, resolved_app};
    use crate::config::{LandlockMode, SandboxSpec};
    use crate::sandbox::landlock::GrantedPath;
    use crate::sandbox::rules::SandboxInputs;
    use crate::sandbox::{Feature, SpawnRecord};

    fn resolved(sandbox: impl FnOnce(&mut SandboxSpec), limits: bool) -> ResolvedApp {
        let mut spec = app_spec("shop", &["/srv/shop/venv/bin/gunicorn", "shop.wsgi"]);
        sandbox(&mut spec.sandbox);
        if limits {
            spec.limits.memory = Some(512 << 20);
            spec.limits.tasks = Some(128);
            spec.limits.cpu = Some(150);
        }
        resolved_app(spec)
    }

    fn failed(security: &AppSecurity) -> Vec<&str> {
        security
            .checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| c.id.as_str())
            .collect()
    }

    fn run(app: &ResolvedApp, kernel_abi: u8, cap: Option<u8>) -> AppSecurity {
        let inputs = SandboxInputs {
            landlock_abi_max: cap,
            ..SandboxInputs::default()
        };
        let plan = SandboxPlan::build(&app.spec, &inputs);
        report(
            app,
            &plan,
            LastSpawn::default(),
            kernel_abi,
            configured_limits(&app.spec.limits),
        )
    }

    /// What a full spawn of `plan` on ABI 7 reports, every path resolving
    /// to itself.
    fn spawned(plan: &SandboxPlan) -> SpawnRecord {
        let landlock = plan.landlock.as_ref().unwrap();
        let mut record = decide(landlock, 7).unwrap();
        record.granted = landlock
            .paths
            .iter()
            .filter(|r| r.origin != RuleOrigin::System)
            .map(|r| GrantedPath {
                path: r.path.clone(),
                resolved: r.path.clone(),
                access: r.access,
                origin: r.origin,
            })
            .collect();
        SpawnRecord {
            landlock: Some(record),
            verified: Some(Verified {
                no_new_privs: true,
                capabilities: Vec::new(),
                seccomp: plan.seccomp.as_ref().map(|s| s.socket_families.clone()),
                session_keyring: true,
                private_proc: true,
            }),
            refusal: None,
        }
    }

    /// (name, app, kernel ABI, ABI cap, failed checks, score)
    type ScoreCase = (
        &'static str,
        ResolvedApp,
        u8,
        Option<u8>,
        Vec<&'static str>,
        f64,
    );

    #[test]
    fn scores_follow_the_failed_weights() {
        #[rustfmt::skip]
        let cases: Vec<ScoreCase> = vec![
            ("default sandbox, no limits", resolved(|_| {}, false), 7, None,
             vec!["outbound-restricted", "udp-confined", "abstract-unix-confined", "memory-limit",
                  "tasks-limit", "cpu-limit"], 2.0),
            ("connect_ports: UDP and abstract sockets stay open", resolved(|s| s.connect_ports = Some(vec![5432]), true), 7, None,
             vec!["udp-confined", "abstract-unix-confined"], 0.6),
            ("network none", resolved(|s| s.network = NetworkMode::None, true), 7, None, vec![], 0.0),
            ("code writable", resolved(|s| {
                s.network = NetworkMode::None;
                s.read_write = vec!["/srv/shop".into()];
            }, true), 7, None, vec!["code-read-only"], 0.9),
            ("read_only of /etc", resolved(|s| {
                s.network = NetworkMode::None;
                s.read_only = vec!["/etc".into()];
            }, true), 7, None, vec!["paths-confined"], 0.9),
            ("best effort on ABI 3", resolved(|s| {
                s.landlock = LandlockMode::BestEffort;
                s.private_tmp = false;
                s.connect_ports = Some(vec![5432]);
            }, false), 7, Some(3),
             vec!["landlock-enforced", "code-read-only", "outbound-restricted", "landlock-required",
                  "bind-listen-only", "udp-confined", "abstract-unix-confined", "private-tmp",
                  "memory-limit", "tasks-limit", "cpu-limit"], 4.9),
        ];
        for (name, app, kernel, cap, want_failed, want_score) in cases {
            let security = run(&app, kernel, cap);
            assert_eq!(failed(&security), want_failed, "{name}");
            assert_eq!(security.exposure, want_score, "{name}");
        }
    }

    type Breaker = Box<dyn FnOnce(&mut ResolvedApp, &mut SandboxPlan, &mut SpawnRecord)>;

    /// How to make `check` fail from a sandbox where every check passes. An
    /// exhaustive match: a new check does not compile without its test.
    fn breaker(check: Check) -> Breaker {
        fn weakness(kind: WeaknessKind) -> Breaker {
            Box::new(move |app, _, _| {
                let mut weaknesses = std::mem::take(&mut app.weaknesses).into_vec();
                weaknesses.push(Weakness {
                    kind,
                    key: "user".into(),
                    message: "x".into(),
                    hint: "y".into(),
                });
                app.weaknesses = weaknesses.into();
            })
        }
        fn verified(change: fn(&mut Verified)) -> Breaker {
            Box::new(move |_, _, record| change(record.verified.as_mut().unwrap()))
        }
        match check {
            Check::LandlockEnforced => Box::new(|_, _, record| {
                let landlock = record.landlock.as_mut().unwrap();
                landlock.status = Enforcement::Partial;
                landlock.not_enforced = vec![Feature::SignalScope];
            }),
            Check::CodeReadOnly => Box::new(|_, _, record| {
                let landlock = record.landlock.as_mut().unwrap();
                landlock.granted.push(GrantedPath {
                    path: "/srv/shop/media".into(),
                    resolved: "/srv/shop/releases/1".into(),
                    access: PathAccess::ReadWrite,
                    origin: RuleOrigin::ReadWrite,
                });
                let directory = landlock
                    .granted
                    .iter_mut()
                    .find(|g| g.origin == RuleOrigin::Directory)
                    .unwrap();
                directory.resolved = "/srv/shop/releases/1".into();
            }),
            Check::PathsConfined => Box::new(|_, _, record| {
                let landlock = record.landlock.as_mut().unwrap();
                let directory = landlock
                    .granted
                    .iter_mut()
                    .find(|g| g.origin == RuleOrigin::Directory)
                    .unwrap();
                directory.resolved = "/".into();
            }),
            Check::CapabilitiesEmpty => {
                verified(|v| v.capabilities = vec!["bounding:CAP_SYS_ADMIN".into()])
            }
            Check::NoNewPrivs => verified(|v| v.no_new_privs = false),
            Check::Seccomp => verified(|v| v.seccomp = None),
            Check::OutboundRestricted | Check::UdpConfined | Check::AbstractUnixConfined => {
                Box::new(|app, plan, _| {
                    app.spec.sandbox.network = NetworkMode::Host;
                    plan.namespaces.network = false;
                })
            }
            Check::NoPrivilegedGroups => weakness(WeaknessKind::PrivilegedGroup),
            Check::NoLoaderInjection => weakness(WeaknessKind::LoaderVariable),
            Check::LandlockRequired => Box::new(|_, plan, _| {
                plan.landlock.as_mut().unwrap().mode = Requirement::BestEffort
            }),
            Check::BindListenOnly => {
                Box::new(|_, plan, _| plan.landlock.as_mut().unwrap().bind_ports = vec![9999])
            }
            Check::PrivateTmp => Box::new(|_, plan, _| plan.namespaces.private_tmp = None),
            Check::PrivateProc => verified(|v| v.private_proc = false),
            Check::SessionKeyring => verified(|v| v.session_keyring = false),
            Check::PrivateUmask => weakness(WeaknessKind::WorldWritableUmask),
            Check::AccessNarrow => weakness(WeaknessKind::AccessForEveryone),
            Check::OwnUser => weakness(WeaknessKind::SharedUser),
            Check::MemoryLimit => Box::new(|app, _, _| app.spec.limits.memory = None),
            Check::TasksLimit => Box::new(|app, _, _| app.spec.limits.tasks = None),
            Check::CpuLimit => Box::new(|app, _, _| app.spec.limits.cpu = None),
        }
    }

    #[test]
    fn every_check_can_fail() {
        let tight = || {
            let app = resolved(|s| s.network = NetworkMode::None, true);
            let plan = SandboxPlan::build(&app.spec, &SandboxInputs::default());
            let record = spawned(&plan);
            (app, plan, record)
        };
        let (app, plan, record) = tight();
        let security = report(
            &app,
            &plan,
            record.last(),
            7,
            configured_limits(&app.spec.limits),
        );
        assert_eq!(failed(&security), Vec::<&str>::new());
        assert_eq!(security.exposure, 0.0);

        for check in Check::ALL {
            let (mut app, mut plan, mut record) = tight();
            breaker(check)(&mut app, &mut plan, &mut record);
            let security = report(
                &app,
                &plan,
                record.last(),
                7,
                configured_limits(&app.spec.limits),
            );
            let (id, _, weight) = check.describe();
            assert!(
                failed(&security).contains(&id),
                "{id} still passes: {:?}",
                security.checks
            );
            assert!(
                security.exposure >= f64::from(weight) * 10.0 / 35.0 - 0.05,
                "{id}"
            );
        }
        let ids: std::collections::BTreeSet<&str> =
            Check::ALL.iter().map(|c| c.describe().0).collect();
        assert_eq!(ids.len(), Check::ALL.len(), "identifiers are unique");
    }

    #[test]
    fn a_refused_directory_shows_in_the_score() {
        let app = resolved(|s| s.network = NetworkMode::None, true);
        let plan = SandboxPlan::build(&app.spec, &SandboxInputs::default());
        let mut record = spawned(&plan);
        record.refusal = Some(
            "directory /srv/shop/current resolves to /, outside /srv/shop (the last directory \
             on its path that only root can change)"
                .into(),
        );
        let security = report(
            &app,
            &plan,
            record.last(),
            7,
            configured_limits(&app.spec.limits),
        );
        let check = security
            .checks
            .iter()
            .find(|c| c.id == "paths-confined")
            .unwrap();
        assert!(!check.passed);
        assert_eq!(
            check.detail.as_deref(),
            Some(
                "the last spawn was refused: directory /srv/shop/current resolves to /, outside \
                 /srv/shop (the last directory on its path that only root can change)"
            )
        );
        assert_eq!(security.refusal, record.refusal);
    }

    #[test]
    fn a_python_home_of_proc_or_srv_shows_in_the_score() {
        for (home, grants) in [("/proc/self", "/proc"), ("/srv/bin", "/srv")] {
            let app = resolved(|s| s.network = NetworkMode::None, true);
            let inputs = SandboxInputs {
                python_home: Some(home.into()),
                ..SandboxInputs::default()
            };
            let plan = SandboxPlan::build(&app.spec, &inputs);
            let security = report(
                &app,
                &plan,
                spawned(&plan).last(),
                7,
                configured_limits(&app.spec.limits),
            );
            let check = security
                .checks
                .iter()
                .find(|c| c.id == "paths-confined")
                .unwrap();
            assert_eq!(
                check.detail.as_deref(),
                Some(format!("{grants} (python-home) grants {grants}").as_str()),
                "{home}"
            );
        }
    }

    #[test]
    fn require_on_an_old_kernel_reports_refused() {
        let security = run(&resolved(|_| {}, true), 7, Some(3));
        assert_eq!(security.landlock.status, "refused");
        assert_eq!(security.landlock.abi, 3);
        assert_eq!(
            security.landlock.not_enforced,
            [
                "bind_ports (needs ABI 4)",
                "device ioctl (needs ABI 5)",
                "signal scope (needs ABI 6)",
                "abstract unix socket scope (needs ABI 6)"
            ]
        );
        assert!(!security.landlock.reported);
    }

    #[test]
    fn a_reported_record_wins_over_the_kernel_abi() {
        let app = resolved(|_| {}, true);
        let plan = SandboxPlan::build(&app.spec, &SandboxInputs::default());
        let mut record = spawned(&plan);
        let landlock = record.landlock.as_mut().unwrap();
        landlock.abi = 5;
        landlock.status = Enforcement::Partial;
        landlock.not_enforced = vec![Feature::SignalScope];
        let security = report(
            &app,
            &plan,
            record.last(),
            7,
            configured_limits(&app.spec.limits),
        );
        assert_eq!(security.landlock.status, "partial");
        assert_eq!(
            security.landlock.not_enforced,
            ["signal scope (needs ABI 6)"]
        );
        assert!(security.landlock.reported);
        assert!(!security.checks[0].passed);
        assert_eq!(security.namespaces, ["mount", "ipc", "uts"]);
        let directory = security
            .paths
            .iter()
            .find(|p| p.origin == "directory")
            .unwrap();
        assert_eq!(directory.resolved.as_deref(), Some("/srv/shop/current"));
    }

    #[test]
    fn score_bounds() {
        let check = |passed| SecurityCheck {
            id: "x".into(),
            description: String::new(),
            weight: 3,
            passed,
            detail: None,
        };
        assert_eq!(exposure_score(&[check(true), check(true)]), 0.0);
        assert_eq!(exposure_score(&[check(false), check(false)]), 10.0);
        assert_eq!(exposure_score(&[check(true), check(false)]), 5.0);
        assert_eq!(exposure_score(&[]), 10.0);
    }
}
