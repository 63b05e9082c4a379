//! Validated configuration: what the rest of the daemon works with.
//!
//! Every value here has passed validation: names match DESIGN.md's pattern,
//! durations and sizes are parsed, defaults are merged. User and group
//! *names* are kept as names; `resolve` turns them into ids. Nothing in this
//! module does I/O.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

/// An application's name: the stem of its file in `apps.d`,
/// `[a-z0-9][a-z0-9_-]{0,63}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct AppName(String);

impl AppName {
    /// Checks `name` against `[a-z0-9][a-z0-9_-]{0,63}`.
    pub fn new(name: &str) -> Option<AppName> {
        let mut chars = name.chars();
        let first_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        let rest_ok =
            chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        (first_ok && rest_ok && name.len() <= 64).then(|| AppName(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Checked as [`AppName::new`] checks a name, wherever one is read from.
impl<'de> Deserialize<'de> for AppName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<AppName, D::Error> {
        let name = String::deserialize(deserializer)?;
        AppName::new(&name).ok_or_else(|| serde::de::Error::custom(InvalidAppName(name)))
    }
}

impl fmt::Display for AppName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A name that is not an app name, as both command lines report it
/// (`--as NAME`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid app name {0:?}: use [a-z0-9][a-z0-9_-]{{0,63}}")]
pub struct InvalidAppName(pub String);

impl std::str::FromStr for AppName {
    type Err = InvalidAppName;

    fn from_str(name: &str) -> Result<AppName, InvalidAppName> {
        AppName::new(name).ok_or_else(|| InvalidAppName(name.to_owned()))
    }
}

/// The venv holding `program`: the parent of its `bin` directory, unless
/// that is a system prefix (`/usr/bin/python3` has no venv).
pub fn venv_of(program: &Path) -> Option<&Path> {
    let bin = program.parent()?;
    if bin.file_name()? != "bin" {
        return None;
    }
    let venv = bin.parent()?;
    let system = ["/", "/usr", "/usr/local"];
    (!system.iter().any(|s| venv == Path::new(s))).then_some(venv)
}

/// Daemon settings from `appvisor.toml`, with every default filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonSpec {
    pub apps_dir: PathBuf,
    pub log_dir: PathBuf,
    pub state_dir: PathBuf,
    pub control: ControlSpec,
    pub status: StatusSpec,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ControlSpec {
    pub socket: PathBuf,
    pub admin_users: Vec<String>,
    pub admin_groups: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StatusSpec {
    /// `None` when `listen = ""` turns the status server off.
    pub listen: Option<SocketAddr>,
}

/// One application, validated. Two specs compare equal exactly when the
/// files mean the same; `config::change` says what a difference asks of
/// a running app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppSpec {
    pub name: AppName,
    /// The file it came from, for messages.
    pub file: PathBuf,
    pub description: String,
    /// The app groups it belongs to (`appctl restart group:NAME`): sorted,
    /// each an app name.
    pub app_groups: Vec<String>,
    pub user: String,
    /// `None`: the user's primary group.
    pub group: Option<String>,
    /// Non-empty; `command[0]` is an absolute path.
    pub command: Vec<String>,
    /// Absolute; may be a symlink to a release (resolved at each spawn).
    pub directory: PathBuf,
    /// Absolute: the venv named in the file, for a command that is a
    /// wrapper (`sh -c`, `nice`, a start script) rather than a program in
    /// its venv. `None`: the venv holding `command[0]`, if any
    /// (`sandbox::rules::app_venv` decides).
    pub venv: Option<PathBuf>,
    /// `environment` merged over the contents of `env_files`, in file order.
    pub environment: BTreeMap<String, String>,
    pub env_files: Vec<PathBuf>,
    pub umask: u32,
    pub autostart: bool,
    pub listen: Vec<ListenSpec>,
    pub readiness: ReadinessSpec,
    pub restart: RestartSpec,
    pub stop: StopSpec,
    pub logs: LogSpec,
    pub access: AccessSpec,
    pub sandbox: SandboxSpec,
    pub limits: LimitSpec,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenSpec {
    pub address: ListenAddress,
    /// `LISTEN_FDNAMES` entry; defaults to the app's name.
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ListenAddress {
    Tcp(SocketAddr),
    /// `unix:/path`.
    Unix(PathBuf),
}

impl fmt::Display for ListenAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddress::Tcp(addr) => write!(f, "{addr}"),
            ListenAddress::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadinessSpec {
    pub kind: ReadinessKind,
    pub timeout: Duration,
    /// The check that tells an app is ready again after `appctl reload`:
    /// the kind's own for `http` and `tcp`; for `notify` and `none`, the
    /// `url` or `address` given beside it (gunicorn sends READY=1 only
    /// once, so a reload cannot wait for another).
    pub probe: Option<Probe>,
}

/// An active readiness check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Probe {
    /// A `GET` answered with a 2xx status.
    Http(String),
    /// A TCP connection accepted.
    Tcp(SocketAddr),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReadinessKind {
    /// `READY=1` on `NOTIFY_SOCKET`.
    Notify,
    /// `http` or `tcp`: the probe passes. A tcp probe's address defaults
    /// to the first TCP `[[listen]]` address.
    Probe(Probe),
    /// Running once the process has lived `restart.start_secs`.
    None,
}

/// An enum key's values: each name as a file writes it (and as the status
/// shows it, serde's kebab-case), beside the value it stands for, so the
/// names are written once, with the type, and parsed by one function.
pub trait Choice: Copy + 'static {
    /// What a value is, for errors: "restart policy".
    const WHAT: &'static str;
    const NAMES: &'static [(&'static str, Self)];

    fn parse(text: &str) -> Option<Self> {
        Self::NAMES
            .iter()
            .find(|(name, _)| *name == text)
            .map(|(_, value)| *value)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

impl Choice for RestartPolicy {
    const WHAT: &'static str = "restart policy";
    const NAMES: &'static [(&'static str, Self)] = &[
        ("always", RestartPolicy::Always),
        ("on-failure", RestartPolicy::OnFailure),
        ("never", RestartPolicy::Never),
    ];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartStrategy {
    StopStart,
    StartStop,
}

impl Choice for RestartStrategy {
    const WHAT: &'static str = "restart strategy";
    const NAMES: &'static [(&'static str, Self)] = &[
        ("stop-start", RestartStrategy::StopStart),
        ("start-stop", RestartStrategy::StartStop),
    ];
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartSpec {
    pub policy: RestartPolicy,
    pub start_secs: Duration,
    /// 0 keeps trying.
    pub max_retries: u32,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub strategy: RestartStrategy,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopSpec {
    pub signal: Signal,
    pub timeout: Duration,
    pub reload_signal: Signal,
}

/// A signal by its number, parsed from names like `TERM` or `SIGTERM`;
/// serialized as its name (`SIGTERM`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signal(pub nix::sys::signal::Signal);

impl Serialize for Signal {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.0.as_str())
    }
}

impl<'de> Deserialize<'de> for Signal {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Signal, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse::<nix::sys::signal::Signal>()
            .map(Signal)
            .map_err(|_| serde::de::Error::custom(format!("unknown signal {name:?}")))
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.0.as_str();
        f.write_str(name.strip_prefix("SIG").unwrap_or(name))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogSpec {
    pub max_size: u64,
    pub keep: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AccessSpec {
    pub users: Vec<String>,
    pub groups: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NetworkMode {
    Host,
    None,
}

impl Choice for NetworkMode {
    const WHAT: &'static str = "network mode";
    const NAMES: &'static [(&'static str, Self)] =
        &[("host", NetworkMode::Host), ("none", NetworkMode::None)];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LandlockMode {
    Require,
    BestEffort,
}

impl Choice for LandlockMode {
    const WHAT: &'static str = "landlock mode";
    const NAMES: &'static [(&'static str, Self)] = &[
        ("require", LandlockMode::Require),
        ("best-effort", LandlockMode::BestEffort),
    ];
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxSpec {
    pub read_only: Vec<PathBuf>,
    pub read_write: Vec<PathBuf>,
    pub private_tmp: bool,
    /// `None`: the TCP ports of `[[listen]]` only.
    pub bind_ports: Option<Vec<u16>>,
    /// `None`: any port.
    pub connect_ports: Option<Vec<u16>>,
    pub network: NetworkMode,
    pub landlock: LandlockMode,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LimitSpec {
    /// Bytes.
    pub memory: Option<u64>,
    pub tasks: Option<u64>,
    /// Percent of one CPU: `150%` is 150.
    pub cpu: Option<u32>,
    pub open_files: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_venv_of_a_command() {
        let cases = [
            ("/srv/shop/venv/bin/gunicorn", Some("/srv/shop/venv")),
            ("/opt/app/bin/uwsgi", Some("/opt/app")),
            ("/usr/bin/python3", None),
            ("/usr/local/bin/gunicorn", None),
            ("/bin/sh", None),
            ("/srv/shop/run.sh", None),
        ];
        for (program, want) in cases {
            assert_eq!(
                venv_of(Path::new(program)),
                want.map(Path::new),
                "{program}"
            );
        }
    }

    fn names_are_what_the_status_shows<T: Choice + Serialize + PartialEq + fmt::Debug>() {
        for (name, value) in T::NAMES {
            assert_eq!(T::parse(name), Some(*value));
            let shown = serde_json::to_value(value).expect("serializable");
            assert_eq!(shown, serde_json::Value::from(*name), "{}", T::WHAT);
        }
    }

    #[test]
    fn an_enum_key_is_spelt_as_the_status_shows_it() {
        names_are_what_the_status_shows::<RestartPolicy>();
        names_are_what_the_status_shows::<RestartStrategy>();
        names_are_what_the_status_shows::<NetworkMode>();
        names_are_what_the_status_shows::<LandlockMode>();
    }

    #[test]
    fn an_app_name_argument_is_checked_with_its_rule_in_the_error() {
        assert_eq!("shop".parse::<AppName>(), Ok(AppName::new("shop").unwrap()));
        assert_eq!(
            "Shop".parse::<AppName>().unwrap_err().to_string(),
            "invalid app name \"Shop\": use [a-z0-9][a-z0-9_-]{0,63}"
        );
    }
}
