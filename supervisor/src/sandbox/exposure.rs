//! What `appctl security` shows: an app's effective sandbox and an exposure
//! score from 0 (tight) to 10 (unconfined), in the spirit of
//! `systemd-analyze security`. The score is the weight of the failed checks
//! over the total weight, so the list of checks explains it.
//!
//! Pure: the app, its sandbox plan, the helper's record of the last spawn
//! and the kernel's Landlock ABI come in as arguments.

use appvisor_protocol::{
    AppSecurity, LandlockSecurity, SecurityCheck, SecurityLimits, SecurityPath,
};

use super::landlock::{decide, Enforcement, LandlockRecord};
use super::namespaces::clone_flags;
use super::rules::{app_venv, PathAccess, Requirement, SandboxPlan};
use crate::config::resolve::ResolvedApp;
use crate::config::{ListenAddress, NetworkMode};

/// One check: identifier, what passing means, weight.
struct Check {
    id: &'static str,
    description: &'static str,
    weight: u32,
}

/// Every check, heaviest first. Weights say how much an attacker holding
/// the app gains when the check fails.
const CHECKS: [Check; 11] = [
    Check {
        id: "landlock-enforced",
        description: "Landlock file system and network rules fully enforced",
        weight: 4,
    },
    Check {
        id: "code-read-only",
        description: "the app cannot write its own directory or venv",
        weight: 3,
    },
    Check {
        id: "capabilities-empty",
        description: "no capabilities, bounding set empty",
        weight: 2,
    },
    Check {
        id: "no-new-privs",
        description: "no_new_privs: setuid binaries gain nothing",
        weight: 2,
    },
    Check {
        id: "outbound-restricted",
        description: "outbound TCP limited (connect_ports or network = \"none\")",
        weight: 2,
    },
    Check {
        id: "landlock-required",
        description: "landlock = \"require\": no start without full enforcement",
        weight: 1,
    },
    Check {
        id: "bind-listen-only",
        description: "TCP bind limited to the [[listen]] ports",
        weight: 1,
    },
    Check {
        id: "private-tmp",
        description: "private /tmp and /var/tmp",
        weight: 1,
    },
    Check {
        id: "memory-limit",
        description: "[limits] memory set",
        weight: 1,
    },
    Check {
        id: "tasks-limit",
        description: "[limits] tasks set",
        weight: 1,
    },
    Check {
        id: "cpu-limit",
        description: "[limits] cpu set",
        weight: 1,
    },
];

/// 0.0 (every check passed) to 10.0 (every check failed), one decimal.
pub fn exposure_score(checks: &[SecurityCheck]) -> f64 {
    let total: u32 = checks.iter().map(|c| c.weight).sum();
    if total == 0 {
        return 10.0;
    }
    let failed: u32 = checks.iter().filter(|c| !c.passed).map(|c| c.weight).sum();
    (f64::from(failed) * 100.0 / f64::from(total)).round() / 10.0
}

/// The security report of `app`. `record` is the helper's report of the
/// last spawn, if the app was spawned since the daemon started.
pub fn report(
    app: &ResolvedApp,
    plan: &SandboxPlan,
    record: Option<&LandlockRecord>,
    kernel_abi: u8,
) -> AppSecurity {
    let spec = &app.spec;
    let landlock = landlock_security(plan, record, kernel_abi);
    let enforced = landlock.status == Enforcement::Full.as_str();
    let paths: Vec<SecurityPath> = plan
        .landlock
        .iter()
        .flat_map(|l| &l.paths)
        .map(|r| SecurityPath {
            path: r.path.display().to_string(),
            access: r.access.as_str().to_owned(),
            origin: r.origin.as_str().to_owned(),
        })
        .collect();
    let bind_ports = plan
        .landlock
        .as_ref()
        .map(|l| l.bind_ports.clone())
        .unwrap_or_default();
    let connect_ports = plan.landlock.as_ref().and_then(|l| l.connect_ports.clone());

    let code = [Some(spec.directory.as_path()), app_venv(spec)];
    let code_writable = plan.landlock.iter().flat_map(|l| &l.paths).any(|r| {
        r.access == PathAccess::ReadWrite
            && code
                .iter()
                .flatten()
                .any(|c| c.starts_with(&r.path) || r.path.starts_with(c))
    });
    let listen_ports: Vec<u16> = spec
        .listen
        .iter()
        .filter_map(|l| match &l.address {
            ListenAddress::Tcp(addr) => Some(addr.port()),
            ListenAddress::Unix(_) => None,
        })
        .collect();
    let passed = |id: &str| match id {
        "landlock-enforced" => enforced,
        "code-read-only" => enforced && !code_writable,
        "capabilities-empty" | "no-new-privs" => true,
        "outbound-restricted" => {
            spec.sandbox.network == NetworkMode::None || (enforced && connect_ports.is_some())
        }
        "landlock-required" => plan
            .landlock
            .as_ref()
            .is_some_and(|l| l.mode == Requirement::Require),
        "bind-listen-only" => enforced && bind_ports.iter().all(|p| listen_ports.contains(p)),
        "private-tmp" => plan.namespaces.private_tmp.is_some(),
        "memory-limit" => spec.limits.memory.is_some(),
        "tasks-limit" => spec.limits.tasks.is_some(),
        "cpu-limit" => spec.limits.cpu.is_some(),
        _ => false,
    };
    let checks: Vec<SecurityCheck> = CHECKS
        .iter()
        .map(|c| SecurityCheck {
            id: c.id.to_owned(),
            description: c.description.to_owned(),
            weight: c.weight,
            passed: passed(c.id),
        })
        .collect();
    let exposure = exposure_score(&checks);
    AppSecurity {
        name: spec.name.to_string(),
        user: app.user_name.clone(),
        uid: app.uid,
        gid: app.gid,
        groups: app.groups.clone(),
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
        limits: SecurityLimits {
            memory: spec.limits.memory,
            tasks: spec.limits.tasks,
            cpu: spec.limits.cpu,
            open_files: spec.limits.open_files,
            core: 0,
        },
        no_new_privs: true,
        capabilities: Vec::new(),
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
    use crate::config::test_spec::app_spec;
    use crate::config::{LandlockMode, SandboxSpec};
    use crate::sandbox::rules::SandboxInputs;

    fn resolved(sandbox: impl FnOnce(&mut SandboxSpec), limits: bool) -> ResolvedApp {
        let mut spec = app_spec("shop", &["/srv/shop/venv/bin/gunicorn", "shop.wsgi"]);
        sandbox(&mut spec.sandbox);
        if limits {
            spec.limits.memory = Some(512 << 20);
            spec.limits.tasks = Some(128);
            spec.limits.cpu = Some(150);
        }
        ResolvedApp {
            spec,
            uid: 1001,
            gid: 1001,
            groups: vec![1001],
            user_name: "shop".into(),
            home: "/srv/shop".into(),
            shell: "/bin/sh".into(),
        }
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
        report(app, &plan, None, kernel_abi)
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
             vec!["outbound-restricted", "memory-limit", "tasks-limit", "cpu-limit"], 2.6),
            ("tight", resolved(|s| s.connect_ports = Some(vec![5432]), true), 7, None, vec![], 0.0),
            ("network none", resolved(|s| s.network = NetworkMode::None, true), 7, None, vec![], 0.0),
            ("code writable", resolved(|s| {
                s.connect_ports = Some(vec![5432]);
                s.read_write = vec!["/srv/shop".into()];
            }, true), 7, None, vec!["code-read-only"], 1.6),
            ("best effort on ABI 3", resolved(|s| {
                s.landlock = LandlockMode::BestEffort;
                s.private_tmp = false;
                s.connect_ports = Some(vec![5432]);
            }, false), 7, Some(3),
             vec!["landlock-enforced", "code-read-only", "outbound-restricted", "landlock-required",
                  "bind-listen-only", "private-tmp", "memory-limit", "tasks-limit", "cpu-limit"], 7.9),
        ];
        for (name, app, kernel, cap, want_failed, want_score) in cases {
            let security = run(&app, kernel, cap);
            assert_eq!(failed(&security), want_failed, "{name}");
            assert_eq!(security.exposure, want_score, "{name}");
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
        let record = LandlockRecord {
            kernel_abi: 7,
            abi: 5,
            status: Enforcement::Partial,
            not_enforced: vec![crate::sandbox::Feature::SignalScope],
        };
        let security = report(&app, &plan, Some(&record), 7);
        assert_eq!(security.landlock.status, "partial");
        assert_eq!(
            security.landlock.not_enforced,
            ["signal scope (needs ABI 6)"]
        );
        assert!(security.landlock.reported);
        assert!(!security.checks[0].passed);
        assert_eq!(security.namespaces, ["mount", "ipc", "uts"]);
    }

    #[test]
    fn score_bounds() {
        let check = |passed| SecurityCheck {
            id: "x".into(),
            description: String::new(),
            weight: 3,
            passed,
        };
        assert_eq!(exposure_score(&[check(true), check(true)]), 0.0);
        assert_eq!(exposure_score(&[check(false), check(false)]), 10.0);
        assert_eq!(exposure_score(&[check(true), check(false)]), 5.0);
        assert_eq!(exposure_score(&[]), 10.0);
    }
}
