//! The built-in defaults: what a key is when neither its file nor
//! `[defaults]` sets it.
//!
//! [`DAEMON`] and [`APP`] are the defaults as docs/configuration.md shows
//! them, one TOML value per key; a test holds the document's tables to
//! them. The typed constants below are what validation uses, and a test
//! holds them to the tables by validating files that set every key to its
//! table value. Defaults that are not one value (`stop.signal`'s INT for
//! uWSGI, `limits.tasks`' share of the host, a `group` or `venv` found from
//! other keys) are in neither: the document describes them in words.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use nix::sys::signal::Signal as Sig;

use crate::spec::{LandlockMode, NetworkMode, RestartPolicy, RestartStrategy, Signal};

/// `appvisor.toml`'s keys and their defaults, as TOML values.
pub const DAEMON: &[(&str, &str)] = &[
    ("apps_dir", "\"/etc/appvisor/apps.d\""),
    ("log_dir", "\"/var/log/appvisor\""),
    ("state_dir", "\"/var/lib/appvisor\""),
    ("control.socket", "\"/run/appvisor/ctl.sock\""),
    ("control.admin_users", "[]"),
    ("control.admin_groups", "[\"appvisor-admin\"]"),
    ("status.listen", "\"127.0.0.1:9750\""),
];

/// An app file's keys that default to one value, and that value as TOML.
pub const APP: &[(&str, &str)] = &[
    ("description", "\"\""),
    ("app_groups", "[]"),
    ("environment", "{}"),
    ("env_files", "[]"),
    ("umask", "\"0022\""),
    ("autostart", "true"),
    ("readiness.kind", "\"none\""),
    ("readiness.timeout", "\"60s\""),
    ("restart.policy", "\"on-failure\""),
    ("restart.start_secs", "\"1s\""),
    ("restart.max_retries", "0"),
    ("restart.backoff.initial", "\"1s\""),
    ("restart.backoff.max", "\"60s\""),
    ("restart.strategy", "\"stop-start\""),
    ("stop.timeout", "\"30s\""),
    ("stop.reload_signal", "\"HUP\""),
    ("logs.max_size", "\"50MiB\""),
    ("logs.keep", "5"),
    ("access.users", "[]"),
    ("access.groups", "[]"),
    ("sandbox.read_only", "[]"),
    ("sandbox.read_write", "[]"),
    ("sandbox.private_tmp", "true"),
    ("sandbox.network", "\"host\""),
    ("sandbox.landlock", "\"require\""),
];

/// The daemon settings file read when `--config` is not given.
pub const CONFIG_FILE: &str = "/etc/appvisor/appvisor.toml";
pub const APPS_DIR: &str = "/etc/appvisor/apps.d";
pub const LOG_DIR: &str = "/var/log/appvisor";
pub const STATE_DIR: &str = "/var/lib/appvisor";
pub const CONTROL_SOCKET: &str = "/run/appvisor/ctl.sock";
/// `control.admin_users`, when unset: nobody by name.
pub const ADMIN_USERS: &[&str] = &[];
/// `control.admin_groups`, when unset: this one group.
pub const ADMIN_GROUPS: &[&str] = &["appvisor-admin"];
pub const STATUS_LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9750));

pub const UMASK: u32 = 0o022;
pub const AUTOSTART: bool = true;
/// `readiness.kind` when unset.
pub const READINESS_KIND: &str = "none";
pub const READINESS_TIMEOUT: Duration = Duration::from_secs(60);
pub const RESTART_POLICY: RestartPolicy = RestartPolicy::OnFailure;
pub const START_SECS: Duration = Duration::from_secs(1);
pub const MAX_RETRIES: u32 = 0;
pub const BACKOFF_INITIAL: Duration = Duration::from_secs(1);
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);
pub const RESTART_STRATEGY: RestartStrategy = RestartStrategy::StopStart;
/// `stop.signal`, unless the command runs uWSGI ([`STOP_SIGNAL_UWSGI`]);
/// also for uWSGI when its arguments make TERM a graceful stop
/// ([`crate::uwsgi::GRACEFUL_TERM_HOOK`]).
pub const STOP_SIGNAL: Signal = Signal(Sig::SIGTERM);
/// `stop.signal` for uWSGI, which reloads on TERM.
pub const STOP_SIGNAL_UWSGI: Signal = Signal(Sig::SIGINT);
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);
pub const RELOAD_SIGNAL: Signal = Signal(Sig::SIGHUP);
pub const LOG_MAX_SIZE: u64 = 50 * 1024 * 1024;
pub const LOG_KEEP: u32 = 5;
pub const PRIVATE_TMP: bool = true;
pub const NETWORK: NetworkMode = NetworkMode::Host;
pub const LANDLOCK: LandlockMode = LandlockMode::Require;

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use super::*;
    use crate::spec::AppName;
    use crate::validate::{validate_app, validate_daemon, Defaults};

    const CONFIGURATION: &str = include_str!("../../docs/configuration.md");

    /// The rows of the `## HEADING` section of docs/configuration.md whose
    /// default is one value, written as one code span: key to value.
    fn documented_defaults(heading: &str) -> BTreeMap<String, String> {
        let start = format!("## {heading}");
        CONFIGURATION
            .lines()
            .skip_while(|line| *line != start)
            .skip(1)
            .take_while(|line| !line.starts_with("## "))
            .filter_map(|line| {
                let mut cells = line.strip_prefix("| ")?.split(" | ");
                let key = cells.next()?.strip_prefix('`')?.strip_suffix('`')?;
                let value = cells.next()?.strip_prefix('`')?.strip_suffix('`')?;
                (!value.contains('`')).then(|| (key.to_owned(), value.to_owned()))
            })
            .collect()
    }

    fn table(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
        entries
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect()
    }

    #[test]
    fn the_documented_defaults_are_the_builtin_table() {
        for (heading, entries) in [("Daemon settings", DAEMON), ("Applications", APP)] {
            assert_eq!(
                documented_defaults(heading),
                table(entries),
                "docs/configuration.md, \"## {heading}\": the default column and \
                 config::builtin must agree"
            );
        }
    }

    /// `entries` as TOML lines, with dotted keys.
    fn toml_of(entries: &[(&str, &str)]) -> String {
        entries
            .iter()
            .map(|(key, value)| format!("{key} = {value}\n"))
            .collect()
    }

    #[test]
    fn validation_gives_an_unset_key_its_value_in_the_table() {
        let file = Path::new("appvisor.toml");
        let (unset, _) = validate_daemon(file, "").expect("no settings are valid");
        let (set, _) = validate_daemon(file, &toml_of(DAEMON))
            .unwrap_or_else(|errors| panic!("the daemon table: {errors}"));
        assert_eq!(set, unset, "config::builtin::DAEMON");

        let name = AppName::new("shop").expect("a valid name");
        let file = Path::new("apps.d/shop.toml");
        let required = "user = \"shop\"\ncommand = [\"/srv/shop/venv/bin/gunicorn\"]\n\
                        directory = \"/srv/shop\"\n";
        let read_env_file = |_: &Path| Ok(String::new());
        let validate = |text: &str| {
            validate_app(&name, file, text, &Defaults::none(), &read_env_file)
                .unwrap_or_else(|errors| panic!("{errors}\n{text}"))
                .spec
        };
        let with_table = format!("{required}{}", toml_of(APP));
        assert_eq!(
            validate(&with_table),
            validate(required),
            "config::builtin::APP"
        );
        let uwsgi = "user = \"shop\"\ncommand = [\"/srv/shop/venv/bin/uwsgi\"]\n\
                     directory = \"/srv/shop\"\n";
        assert_eq!(validate(uwsgi).stop.signal, STOP_SIGNAL_UWSGI);
        let graceful = "user = \"shop\"\ndirectory = \"/srv/shop\"\n\
                        command = [\"/srv/shop/venv/bin/uwsgi\", \"--hook-master-start\", \
                        \"unix_signal:15 gracefully_kill_them_all\"]\n";
        assert_eq!(validate(graceful).stop.signal, STOP_SIGNAL);
        assert_eq!(validate(required).stop.signal, STOP_SIGNAL);
    }
}
