//! An [`AppSpec`] with the built-in defaults ([`crate::builtin`]), for unit
//! tests that need one.

use std::collections::BTreeMap;

use crate::builtin;
use crate::{
    AccessSpec, AppName, AppSpec, LimitSpec, LogSpec, ReadinessKind, ReadinessSpec, RestartSpec,
    SandboxSpec, StopSpec,
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
        umask: builtin::UMASK,
        autostart: builtin::AUTOSTART,
        listen: Vec::new(),
        readiness: ReadinessSpec {
            kind: ReadinessKind::None,
            timeout: builtin::READINESS_TIMEOUT,
            probe: None,
        },
        restart: RestartSpec {
            policy: builtin::RESTART_POLICY,
            start_secs: builtin::START_SECS,
            max_retries: builtin::MAX_RETRIES,
            backoff_initial: builtin::BACKOFF_INITIAL,
            backoff_max: builtin::BACKOFF_MAX,
            strategy: builtin::RESTART_STRATEGY,
        },
        stop: StopSpec {
            signal: builtin::STOP_SIGNAL,
            timeout: builtin::STOP_TIMEOUT,
            reload_signal: builtin::RELOAD_SIGNAL,
        },
        logs: LogSpec {
            max_size: builtin::LOG_MAX_SIZE,
            keep: builtin::LOG_KEEP,
        },
        access: AccessSpec::default(),
        sandbox: SandboxSpec {
            read_only: Vec::new(),
            read_write: Vec::new(),
            private_tmp: builtin::PRIVATE_TMP,
            bind_ports: None,
            connect_ports: None,
            network: builtin::NETWORK,
            landlock: builtin::LANDLOCK,
        },
        limits: LimitSpec::default(),
    }
}

/// `spec` resolved as the user `shop` (uid and gid 1001, home
/// `/srv/shop`), with the weaknesses of its settings.
pub fn resolved_app(spec: AppSpec) -> crate::ResolvedApp {
    crate::ResolvedApp {
        weaknesses: crate::security::spec_weaknesses(&spec).into(),
        spec,
        uid: 1001,
        gid: 1001,
        groups: Box::new([1001]),
        user_name: "shop".into(),
        home: std::path::Path::new("/srv/shop").into(),
        shell: std::path::Path::new("/bin/sh").into(),
    }
}
