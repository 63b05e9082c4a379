//! An [`AppSpec`] with DESIGN.md's defaults, for unit tests that need one.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::{
    AccessSpec, AppName, AppSpec, LandlockMode, LimitSpec, LogSpec, NetworkMode, ReadinessKind,
    ReadinessSpec, RestartPolicy, RestartSpec, RestartStrategy, SandboxSpec, Signal, StopSpec,
};

pub fn app_spec(name: &str, command: &[&str]) -> AppSpec {
    AppSpec {
        name: AppName::new(name).unwrap(),
        file: format!("/etc/appvisor/apps.d/{name}.toml").into(),
        description: String::new(),
        app_groups: Vec::new(),
        venv: None,
        user: name.into(),
        group: None,
        command: command.iter().map(|s| s.to_string()).collect(),
        directory: format!("/srv/{name}/current").into(),
        environment: BTreeMap::new(),
        env_files: Vec::new(),
        umask: 0o027,
        autostart: true,
        listen: Vec::new(),
        readiness: ReadinessSpec {
            kind: ReadinessKind::None,
            timeout: Duration::from_secs(60),
            probe: None,
        },
        restart: RestartSpec {
            policy: RestartPolicy::OnFailure,
            start_secs: Duration::from_secs(1),
            max_retries: 0,
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            strategy: RestartStrategy::StopStart,
        },
        stop: StopSpec {
            signal: Signal(nix::sys::signal::Signal::SIGTERM),
            timeout: Duration::from_secs(30),
            reload_signal: Signal(nix::sys::signal::Signal::SIGHUP),
        },
        logs: LogSpec {
            max_size: 50 << 20,
            keep: 5,
        },
        access: AccessSpec::default(),
        sandbox: SandboxSpec {
            read_only: Vec::new(),
            read_write: Vec::new(),
            private_tmp: true,
            bind_ports: None,
            connect_ports: None,
            network: NetworkMode::Host,
            landlock: LandlockMode::Require,
        },
        limits: LimitSpec::default(),
    }
}

/// `spec` resolved as the user `shop` (uid and gid 1001, home
/// `/srv/shop`), with the weaknesses of its settings.
pub fn resolved_app(spec: AppSpec) -> crate::ResolvedApp {
    crate::ResolvedApp {
        weaknesses: crate::security::spec_weaknesses(&spec),
        spec,
        uid: 1001,
        gid: 1001,
        groups: vec![1001],
        user_name: "shop".into(),
        home: "/srv/shop".into(),
        shell: "/bin/sh".into(),
    }
}
