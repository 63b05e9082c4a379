#![forbid(unsafe_code)]
//! The control API of appvisord: routes, request and response bodies, error
//! codes, and a small client over the Unix socket.
//!
//! The daemon serves HTTP/1.1 with JSON bodies on its control socket, the
//! way Docker and Incus do, so `curl --unix-socket /run/appvisor/ctl.sock
//! http://localhost/v1/apps` works for anyone debugging. Every JSON name
//! here is part of the contract: add fields, never rename them.
//!
//! This crate does no I/O beyond [`client`].

pub mod client;
pub mod escape;
pub mod status_json;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The API version, the first segment of every route.
pub const API_VERSION: &str = "v1";

/// The default control socket.
pub const DEFAULT_SOCKET: &str = "/run/appvisor/ctl.sock";

/// Routes of the control socket: each path is written here once, and both
/// the daemon (which parses it) and the client (which builds it) use
/// [`routes::Route`].
pub mod routes {
    use hyper::Method;

    use crate::Action;

    /// `GET`: who the caller is and what it may do.
    pub const WHOAMI: &str = "/v1/whoami";
    /// `GET`: the apps the caller may see.
    pub const APPS: &str = "/v1/apps";
    /// `GET`: state changes and control actions, one JSON [`crate::Event`] a line (admin).
    pub const EVENTS: &str = "/v1/events";
    /// `POST` with [`crate::ApplyRequest`]: re-read `apps.d` (admin).
    pub const CONFIG_APPLY: &str = "/v1/config/apply";
    /// `GET`: the daemon's version and its last hand-off ([`crate::DaemonStatus`], admin).
    pub const DAEMON: &str = "/v1/daemon";
    /// `POST` with [`crate::ReexecRequest`]: hand the running apps over to
    /// the daemon's binary, exec'd in place (admin).
    pub const REEXEC: &str = "/v1/daemon/reexec";

    /// One route, with the app it names.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Route<'a> {
        /// [`WHOAMI`].
        WhoAmI,
        /// [`APPS`].
        Apps,
        /// [`EVENTS`].
        Events,
        /// [`CONFIG_APPLY`].
        ConfigApply,
        /// [`DAEMON`].
        Daemon,
        /// [`REEXEC`].
        Reexec,
        /// `GET /v1/apps/NAME`.
        App(&'a str),
        /// `POST /v1/apps/NAME/{start,stop,restart,reload}` with
        /// [`crate::ActionRequest`], or `POST /v1/apps/NAME/signal` with
        /// [`crate::SignalRequest`].
        Action(&'a str, Action),
        /// `GET /v1/apps/NAME/security`: what confines the app ([`crate::AppSecurity`]).
        Security(&'a str),
        /// `GET /v1/apps/NAME/logs?stream=both&lines=100&follow=true`: the
        /// app's output as it wrote it (bytes, not necessarily UTF-8).
        Logs(&'a str),
    }

    impl<'a> Route<'a> {
        /// Every route, those of an app for app `app`.
        pub fn every(app: &'a str) -> Vec<Route<'a>> {
            let mut routes = vec![
                Route::WhoAmI,
                Route::Apps,
                Route::Events,
                Route::ConfigApply,
                Route::Daemon,
                Route::Reexec,
                Route::App(app),
                Route::Security(app),
                Route::Logs(app),
            ];
            routes.extend(Action::ALL.map(|action| Route::Action(app, action)));
            for route in &routes {
                // A new route fails to compile here until it is listed above.
                match route {
                    Route::WhoAmI
                    | Route::Apps
                    | Route::Events
                    | Route::ConfigApply
                    | Route::Daemon
                    | Route::Reexec
                    | Route::App(_)
                    | Route::Security(_)
                    | Route::Logs(_)
                    | Route::Action(..) => {}
                }
            }
            routes
        }

        /// The route `path` names (without its query), whatever the
        /// method; a trailing `/` is ignored.
        pub fn parse(path: &'a str) -> Option<Route<'a>> {
            let mut segments = path.trim_end_matches('/').split('/').skip(1);
            let segments: [Option<&str>; 5] = std::array::from_fn(|_| segments.next());
            Some(match segments {
                [Some("v1"), Some("whoami"), None, ..] => Route::WhoAmI,
                [Some("v1"), Some("apps"), None, ..] => Route::Apps,
                [Some("v1"), Some("events"), None, ..] => Route::Events,
                [Some("v1"), Some("config"), Some("apply"), None, _] => Route::ConfigApply,
                [Some("v1"), Some("daemon"), None, ..] => Route::Daemon,
                [Some("v1"), Some("daemon"), Some("reexec"), None, _] => Route::Reexec,
                [Some("v1"), Some("apps"), Some(name), None, _] => Route::App(name),
                [Some("v1"), Some("apps"), Some(name), Some("logs"), None] => Route::Logs(name),
                [Some("v1"), Some("apps"), Some(name), Some("security"), None] => {
                    Route::Security(name)
                }
                [Some("v1"), Some("apps"), Some(name), Some(action), None] => {
                    Route::Action(name, action.parse().ok()?)
                }
                _ => return None,
            })
        }

        /// What the route changes, if it changes anything: the daemon
        /// audits exactly these routes, under these names.
        pub fn mutation(&self) -> Option<Mutation<'a>> {
            // No `_` arm: a new route must say whether it mutates.
            match *self {
                Route::Action(app, action) => Some(Mutation {
                    app: Some(app),
                    action: action.as_str(),
                }),
                Route::ConfigApply => Some(Mutation {
                    app: None,
                    action: "config/apply",
                }),
                Route::Reexec => Some(Mutation {
                    app: None,
                    action: "reexec",
                }),
                Route::WhoAmI
                | Route::Daemon
                | Route::Apps
                | Route::Events
                | Route::App(_)
                | Route::Security(_)
                | Route::Logs(_) => None,
            }
        }

        /// Whether the route changes something.
        pub fn mutates(&self) -> bool {
            self.mutation().is_some()
        }

        /// The one method the route takes: `POST` if it mutates, else `GET`.
        pub fn method(&self) -> Method {
            if self.mutates() {
                Method::POST
            } else {
                Method::GET
            }
        }

        /// The route's path, without a query.
        pub fn path(&self) -> String {
            match self {
                Route::WhoAmI => WHOAMI.to_owned(),
                Route::Apps => APPS.to_owned(),
                Route::Events => EVENTS.to_owned(),
                Route::ConfigApply => CONFIG_APPLY.to_owned(),
                Route::Daemon => DAEMON.to_owned(),
                Route::Reexec => REEXEC.to_owned(),
                Route::App(name) => format!("{APPS}/{name}"),
                Route::Action(name, action) => format!("{APPS}/{name}/{action}"),
                Route::Security(name) => format!("{APPS}/{name}/security"),
                Route::Logs(name) => format!("{APPS}/{name}/logs"),
            }
        }
    }

    /// What a mutating route changes, as its [`crate::AuditRecord`] names it.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Mutation<'a> {
        /// The app acted on; `None` for daemon-wide actions.
        pub app: Option<&'a str>,
        /// [`crate::AuditRecord::action`]: the action's name, or `config/apply`.
        pub action: &'static str,
    }

    /// `GET /v1/apps/NAME`.
    pub fn app(name: &str) -> String {
        Route::App(name).path()
    }

    /// `POST /v1/apps/NAME/{start,stop,restart,reload}` with [`crate::ActionRequest`].
    pub fn action(name: &str, action: Action) -> String {
        Route::Action(name, action).path()
    }

    /// `POST /v1/apps/NAME/signal` with [`crate::SignalRequest`].
    pub fn signal(name: &str) -> String {
        Route::Action(name, Action::Signal).path()
    }

    /// `GET /v1/apps/NAME/security`: what confines the app ([`crate::AppSecurity`]).
    pub fn security(name: &str) -> String {
        Route::Security(name).path()
    }

    /// `GET /v1/apps/NAME/logs?stream=both&lines=100&follow=true`: the
    /// app's output as it wrote it (bytes, not necessarily UTF-8).
    pub fn logs(name: &str, stream: crate::LogStream, lines: usize, follow: bool) -> String {
        format!(
            "{}?stream={stream}&lines={lines}&follow={follow}",
            Route::Logs(name).path()
        )
    }
}

/// DESIGN.md's states of an app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Stopped,
    Starting,
    Running,
    Backoff,
    Stopping,
    Exited,
    Fatal,
    /// The app's file does not validate and there is no earlier valid version.
    Invalid,
}

impl State {
    /// Every state, in the order above.
    pub const ALL: [State; 8] = [
        State::Stopped,
        State::Starting,
        State::Running,
        State::Backoff,
        State::Stopping,
        State::Exited,
        State::Fatal,
        State::Invalid,
    ];

    /// The lowercase name used in JSON and tables.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Stopped => "stopped",
            State::Starting => "starting",
            State::Running => "running",
            State::Backoff => "backoff",
            State::Stopping => "stopping",
            State::Exited => "exited",
            State::Fatal => "fatal",
            State::Invalid => "invalid",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who stopped an app by hand, kept across updates and daemon restarts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoppedBy {
    /// The caller's user name (or `#UID` when it has none).
    pub user: String,
    pub uid: u32,
    /// Seconds since the Unix epoch.
    pub at: u64,
}

/// One app as the control socket and the status server report it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppStatus {
    pub name: String,
    pub state: State,
    /// Why the app is in this state, in words a person can act on.
    pub reason: String,
    /// The main process, while there is one.
    pub pid: Option<u32>,
    /// Seconds since the main process was spawned, while there is one.
    pub uptime_secs: Option<f64>,
    /// Seconds since the Unix epoch when the app entered its state.
    pub since: u64,
    /// Times the app was started again since the daemon loaded it.
    pub restarts: u32,
    /// Consecutive failed starts.
    pub failures: u32,
    pub description: String,
    /// The app groups it belongs to (its file's `app_groups`), which
    /// `appctl start group:NAME` selects by.
    #[serde(default)]
    pub app_groups: Vec<String>,
    /// The Unix user it runs as.
    pub user: String,
    /// `directory` as configured.
    pub directory: String,
    /// What `directory` resolved to at the last spawn (the release, when it
    /// is a symlink).
    pub release: Option<String>,
    pub autostart: bool,
    /// Set while the app is stopped by hand.
    pub stopped_by: Option<StoppedBy>,
    /// The newest file did not validate: the app runs its last valid version.
    pub config_error: Option<String>,
    /// Why the app's output does not reach its log files now (the log
    /// directory cannot be created, the disk is full), while it does not;
    /// the app runs anyway and the daemon retries.
    #[serde(default)]
    pub log_error: Option<String>,
    /// Bytes of the app's output that could not be written to its log
    /// files since the daemon loaded it.
    #[serde(default)]
    pub log_dropped_bytes: u64,
}

impl AppStatus {
    /// A status with no process, no history and no settings: an app known
    /// only by its name, and the base that tests fill in.
    pub fn bare(name: &str, state: State, reason: String) -> AppStatus {
        AppStatus {
            name: name.to_owned(),
            state,
            reason,
            pid: None,
            uptime_secs: None,
            since: 0,
            restarts: 0,
            failures: 0,
            description: String::new(),
            app_groups: Vec::new(),
            user: String::new(),
            directory: String::new(),
            release: None,
            autostart: false,
            stopped_by: None,
            config_error: None,
            log_error: None,
            log_dropped_bytes: 0,
        }
    }
}

/// `GET /v1/apps/NAME/security`: the effective sandbox of one app and its
/// exposure score, in the spirit of `systemd-analyze security`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppSecurity {
    pub name: String,
    pub user: String,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
    pub landlock: LandlockSecurity,
    /// Landlock path rules, system paths included.
    pub paths: Vec<SecurityPath>,
    /// TCP ports the app may bind (Landlock); empty: none.
    pub bind_ports: Vec<u16>,
    /// TCP ports the app may connect to (Landlock); `None`: any.
    pub connect_ports: Option<Vec<u16>>,
    /// Namespaces of its own: `mount`, `ipc`, `uts`, `network`.
    pub namespaces: Vec<String>,
    pub private_tmp: bool,
    /// `host` or `none`.
    pub network: String,
    pub limits: SecurityLimits,
    pub no_new_privs: bool,
    /// Capabilities the app's processes hold: always empty.
    pub capabilities: Vec<String>,
    /// Paths hidden in the app's mount namespace (an empty mode-0000 file
    /// or directory over each), under the system paths it may read.
    #[serde(default)]
    pub hidden: Vec<String>,
    /// A procfs of the app's own, listing only its processes.
    #[serde(default)]
    pub private_proc: bool,
    /// A session keyring of the app's own.
    #[serde(default)]
    pub session_keyring: bool,
    /// The seccomp filter; `None`: no filter.
    #[serde(default)]
    pub seccomp: Option<SecuritySeccomp>,
    /// Why the sandbox refused the last spawn, e.g. a `directory` that
    /// resolved outside the directories its owner may change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    /// Every check, each with its weight and result.
    pub checks: Vec<SecurityCheck>,
    /// 0.0 (tight) to 10.0 (unconfined): the weight of failed checks over
    /// the total weight, times 10.
    pub exposure: f64,
}

/// Landlock as configured and as last enforced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LandlockSecurity {
    /// `require` or `best-effort`.
    pub mode: String,
    /// What the kernel supports.
    pub kernel_abi: u8,
    /// The ABI used at the last spawn, or that would be used now.
    pub abi: u8,
    /// `full`, `partial` or `none`; `refused` when `require` cannot be met.
    pub status: String,
    /// Features not enforced, e.g. `connect_ports (needs ABI 4)`.
    pub not_enforced: Vec<String>,
    /// Whether the fields come from the helper's report of the last spawn
    /// (`true`) or from the kernel's ABI now (`false`, never started).
    pub reported: bool,
}

/// One Landlock path rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityPath {
    pub path: String,
    /// `read-execute`, `read` or `read-write`.
    pub access: String,
    /// Why it is there: `system`, `command`, `venv`, `python-home`,
    /// `directory`, `read_only`, `read_write`, `tmp`.
    pub origin: String,
    /// Where the rule really led at the last spawn (symlinks followed),
    /// when it was built; the system paths are not reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved: Option<String>,
}

/// The seccomp filter every app runs under.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecuritySeccomp {
    /// Socket families the app may create, e.g. `AF_UNIX`.
    pub socket_families: Vec<String>,
    /// Syscalls refused.
    pub refused: Vec<String>,
}

/// `[limits]`, as applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityLimits {
    /// Bytes.
    pub memory: Option<u64>,
    pub tasks: Option<u64>,
    /// Percent of one CPU.
    pub cpu: Option<u32>,
    pub open_files: Option<u64>,
    /// RLIMIT_CORE: always 0.
    pub core: u64,
    /// The limits above that are appvisord's defaults rather than the
    /// app's `[limits]`, e.g. `tasks`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub defaults: Vec<String>,
}

/// One weighted check of the exposure score.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityCheck {
    /// Stable identifier, e.g. `landlock-enforced`.
    pub id: String,
    /// What passing means, e.g. "Landlock rules fully enforced".
    pub description: String,
    pub weight: u32,
    pub passed: bool,
    /// Why a check failed, when there is more to say than its description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// `GET /v1/apps`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppList {
    pub apps: Vec<AppStatus>,
    /// What an admin should know about the daemon itself, one sentence
    /// each: an operator-intent file it could not read, files in `apps_dir`
    /// it ignores, apps it did not start. Empty for everyone else.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notices: Vec<String>,
}

/// The caller's role, as `GET /v1/whoami` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// root, `admin_users` and members of `admin_groups`: everything.
    Admin,
    /// Named in at least one app's `[access]`.
    Operator,
    /// Nothing beyond `whoami`.
    None,
}

/// `GET /v1/whoami`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhoAmI {
    pub uid: u32,
    pub user: String,
    pub groups: Vec<String>,
    pub role: Role,
    /// The apps the caller may operate (every app for an admin).
    pub apps: Vec<String>,
}

/// What an operator can do to an app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Start,
    Stop,
    Restart,
    Reload,
    Signal,
}

impl Action {
    /// Every action, in the order `appctl --help` lists them.
    pub const ALL: [Action; 5] = [
        Action::Start,
        Action::Stop,
        Action::Restart,
        Action::Reload,
        Action::Signal,
    ];

    /// The name used in routes, JSON and audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Start => "start",
            Action::Stop => "stop",
            Action::Restart => "restart",
            Action::Reload => "reload",
            Action::Signal => "signal",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Action {
    type Err = UnknownName;

    fn from_str(name: &str) -> Result<Action, UnknownName> {
        Action::ALL
            .into_iter()
            .find(|action| action.as_str() == name)
            .ok_or(UnknownName)
    }
}

/// A name that is not one of an enum's: the caller says which, and where.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unknown name")]
pub struct UnknownName;

/// Body of `POST /v1/apps/NAME/{start,stop,restart,reload}`; an empty body
/// means `{"wait": false}`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionRequest {
    /// Answer only once the outcome is known: running (start, restart,
    /// reload) or stopped (stop).
    #[serde(default)]
    pub wait: bool,
    /// How long to wait, in milliseconds; the daemon caps it. Default 60 s.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// Body of `POST /v1/apps/NAME/signal`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalRequest {
    /// A name such as `USR1` or `SIGUSR1`.
    pub signal: String,
}

/// How an action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Done (or, without `wait`, accepted).
    Done,
    /// The app did not reach the wanted state; see `status.reason`.
    Failed,
    /// The wait timed out before an outcome was known.
    Timeout,
}

/// Answer to an action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionResult {
    pub app: String,
    pub action: Action,
    pub outcome: Outcome,
    pub status: AppStatus,
    /// On failure, the app's last log lines, stdout and stderr interleaved
    /// in arrival order.
    pub log_tail: Vec<String>,
    /// Set when a start or stop was carried out but could not be saved in
    /// `state_dir`: it holds only until the daemon restarts, unless a later
    /// save succeeds first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent_error: Option<String>,
}

/// Body of `POST /v1/config/apply`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplyRequest {
    /// Report the plan without acting on it.
    #[serde(default)]
    pub dry_run: bool,
}

/// An app whose file does not validate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvalidApp {
    pub name: String,
    pub file: String,
    /// One message a line, each naming file, line and key.
    pub errors: Vec<String>,
    /// Whether a last valid version keeps running.
    pub kept_running: bool,
}

/// A file in `apps_dir` the daemon does not load because of its name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IgnoredFile {
    pub file: String,
    /// Why, and what name would be loaded.
    pub reason: String,
}

/// Answer to `POST /v1/config/apply`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ApplyReport {
    pub dry_run: bool,
    pub added: Vec<String>,
    /// Changed in what the app's process was started with (its command,
    /// environment, sandbox, ...): restarted if it was up.
    pub changed: Vec<String>,
    /// Changed only in what the daemon reads while the app runs (`[access]`,
    /// `description`, `[logs]`, ...): applied without a restart.
    #[serde(default)]
    pub changed_in_place: Vec<String>,
    pub removed: Vec<String>,
    pub unchanged: Vec<String>,
    pub invalid: Vec<InvalidApp>,
    /// `*.toml` files whose names are not app names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignored: Vec<IgnoredFile>,
    /// Valid apps the daemon did not start: its open-file limit has no
    /// room for them (their status says why; `appctl start` tries again).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_started: Vec<String>,
}

/// Which captured stream `GET /v1/apps/NAME/logs` shows: `stream=both`
/// (the default), `stdout` or `stderr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    /// stdout and stderr interleaved in the order the daemon read them
    /// (docs/logs.md says how exact that is).
    Both,
    Stdout,
    Stderr,
}

impl LogStream {
    /// Every stream selection.
    pub const ALL: [LogStream; 3] = [LogStream::Both, LogStream::Stdout, LogStream::Stderr];

    /// The value of the `stream` parameter.
    pub fn as_str(self) -> &'static str {
        match self {
            LogStream::Both => "both",
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
        }
    }
}

impl fmt::Display for LogStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LogStream {
    type Err = UnknownName;

    fn from_str(name: &str) -> Result<LogStream, UnknownName> {
        LogStream::ALL
            .into_iter()
            .find(|stream| stream.as_str() == name)
            .ok_or(UnknownName)
    }
}

/// `POST /v1/daemon/reexec`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReexecRequest {
    /// Chosen by the caller: [`DaemonStatus::handoff`] carries it once the
    /// hand-off is over, however it ended.
    pub id: u64,
}

/// `GET /v1/daemon`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonStatus {
    /// The running binary's version.
    pub version: String,
    pub pid: u32,
    /// What the next `appctl reexec` executes.
    pub binary: String,
    /// The last hand-off, planned or refused.
    pub handoff: Option<HandoffReport>,
}

/// How a hand-off went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandoffReport {
    pub id: u64,
    /// The user who asked, or `SIGUSR2`.
    pub requested_by: String,
    /// Seconds since the Unix epoch.
    pub requested_at: u64,
    pub from_version: String,
    /// The version that runs now (the old one after a fallback).
    pub to_version: String,
    /// How long no daemon supervised the apps, in milliseconds.
    pub unsupervised_ms: u64,
    /// Apps handed over.
    pub apps: usize,
    /// Why the hand-off did not happen or fell back; `None`: it happened.
    pub error: Option<String>,
}

/// One line of `GET /v1/events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Event {
    /// An app changed state.
    State {
        /// Seconds since the Unix epoch.
        time: u64,
        app: String,
        state: State,
        reason: String,
        pid: Option<u32>,
    },
    /// A mutating control request, as written to the audit log.
    Audit(AuditRecord),
}

/// Who did what to which app, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub time: u64,
    pub uid: u32,
    pub user: String,
    pub pid: Option<u32>,
    /// `None` for daemon-wide actions such as `config/apply`.
    pub app: Option<String>,
    pub action: String,
    /// `ok`, or the error code.
    pub outcome: String,
}

/// Machine-readable error codes; each maps to one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 400: the request is malformed.
    BadRequest,
    /// 403: the caller may not do this.
    Forbidden,
    /// 404: no such app (or not one the caller may see), or no such route.
    NotFound,
    /// 405: the route exists with another method.
    MethodNotAllowed,
    /// 409: the app's state does not allow this (e.g. it is invalid).
    Conflict,
    /// 413: the body is too large.
    PayloadTooLarge,
    /// 422: the configuration does not validate.
    InvalidConfig,
    /// 503: the daemon is shutting down or too busy.
    Unavailable,
    /// 500: a bug or an unexpected system error.
    Internal,
}

impl ErrorCode {
    /// The HTTP status that carries this code.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 400,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::Conflict => 409,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::InvalidConfig => 422,
            ErrorCode::Unavailable => 503,
            ErrorCode::Internal => 500,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::Conflict => "conflict",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::InvalidConfig => "invalid_config",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The body of every error response: `{"error":{"code":"forbidden","message":"…"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ApiError,
}

/// An error the daemon answered with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A state added to the enum stops this compiling until it has a
    /// place here, the reminder that `State::ALL` needs it at that place.
    #[test]
    fn all_states_holds_each_state_once_in_order() {
        let place = |state: State| match state {
            State::Stopped => 0,
            State::Starting => 1,
            State::Running => 2,
            State::Backoff => 3,
            State::Stopping => 4,
            State::Exited => 5,
            State::Fatal => 6,
            State::Invalid => 7,
        };
        for (i, state) in State::ALL.into_iter().enumerate() {
            assert_eq!(place(state), i, "{state}");
        }
    }

    #[test]
    fn error_body_has_the_documented_shape() {
        let body = ErrorBody {
            error: ApiError::new(ErrorCode::Forbidden, "no"),
        };
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"{"error":{"code":"forbidden","message":"no"}}"#
        );
    }

    #[test]
    fn routes_match_design() {
        assert_eq!(
            routes::action("shop", Action::Restart),
            "/v1/apps/shop/restart"
        );
        assert_eq!(
            routes::logs("shop", LogStream::Stderr, 100, true),
            "/v1/apps/shop/logs?stream=stderr&lines=100&follow=true"
        );
    }

    #[test]
    fn every_route_parses_back_from_its_path() {
        use routes::Route;
        for route in Route::every("shop") {
            assert_eq!(Route::parse(&route.path()), Some(route), "{route:?}");
            assert_eq!(
                Route::parse(&format!("{}/", route.path())),
                Some(route),
                "{route:?} with a trailing /"
            );
        }
        for path in [
            "/",
            "/v1",
            "/v2/apps",
            "/v1/apps/shop/explode",
            "/v1/apps/shop/logs/more",
            "/v1/config",
            "/v1/whoami/me",
        ] {
            assert_eq!(Route::parse(path), None, "{path}");
        }
    }

    #[test]
    fn only_actions_and_config_apply_mutate_and_take_post() {
        use routes::Route;
        assert!(Route::Action("shop", Action::Signal).mutates());
        assert!(Route::ConfigApply.mutates());
        assert_eq!(Route::ConfigApply.method(), hyper::Method::POST);
        assert!(!Route::Logs("shop").mutates());
        assert_eq!(Route::Apps.method(), hyper::Method::GET);
    }

    #[test]
    fn names_parse_back() {
        for action in Action::ALL {
            assert_eq!(action.as_str().parse(), Ok(action));
            assert_eq!(
                serde_json::to_value(action).unwrap(),
                action.as_str(),
                "serde and as_str agree"
            );
        }
        for stream in LogStream::ALL {
            assert_eq!(stream.as_str().parse(), Ok(stream));
        }
        assert_eq!("explode".parse::<Action>(), Err(UnknownName));
        assert_eq!("stdin".parse::<LogStream>(), Err(UnknownName));
    }

    /// docs/control-api.md, the contract, names every route and error code.
    #[test]
    fn every_route_and_error_code_is_in_the_contract() {
        let doc = include_str!("../../docs/control-api.md");
        let name = "NAME";
        let mut routes = vec![
            routes::WHOAMI.to_owned(),
            routes::APPS.to_owned(),
            routes::EVENTS.to_owned(),
            routes::CONFIG_APPLY.to_owned(),
            routes::app(name),
            routes::signal(name),
            routes::security(name),
            routes::logs(name, LogStream::Both, 100, true),
        ];
        for action in [Action::Start, Action::Stop, Action::Restart, Action::Reload] {
            routes.push(routes::action(name, action));
        }
        for route in routes {
            assert!(
                doc.contains(&format!("{route}`")),
                "{route} in docs/control-api.md"
            );
        }
        use ErrorCode::*;
        let codes = [
            BadRequest,
            Forbidden,
            NotFound,
            MethodNotAllowed,
            Conflict,
            PayloadTooLarge,
            InvalidConfig,
            Unavailable,
            Internal,
        ];
        for code in codes {
            // A new code fails to compile here until it is listed above.
            match code {
                BadRequest | Forbidden | NotFound | MethodNotAllowed | Conflict
                | PayloadTooLarge | InvalidConfig | Unavailable | Internal => {}
            }
            let row = format!("| `{code}` | {} |", code.http_status());
            assert!(doc.contains(&row), "{row} in docs/control-api.md");
        }
    }

    #[test]
    fn empty_action_body_means_no_wait() {
        let req: ActionRequest = serde_json::from_str("{}").unwrap();
        assert_eq!(req, ActionRequest::default());
        assert!(serde_json::from_str::<ActionRequest>(r#"{"wiat":true}"#).is_err());
    }

    #[test]
    fn events_are_tagged_by_kind() {
        let ev = Event::State {
            time: 1,
            app: "shop".into(),
            state: State::Running,
            reason: "ready".into(),
            pid: Some(7),
        };
        let json = serde_json::to_value(&ev).unwrap();
        assert_eq!(json["kind"], "state");
        assert_eq!(json["state"], "running");
    }
}
