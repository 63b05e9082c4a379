//! The daemon: start-up, the registry of apps, configuration changes,
//! operator intent, signals and shutdown.
//!
//! - `start`: start-up wiring, the signal loop and shutdown;
//! - `registry`: the apps as the control and status servers read them;
//! - `actions`: start, stop, restart, reload and signal, and waiting for
//!   their outcome;
//! - `apply`: configuration changes (`appctl update`, SIGHUP), from
//!   `diff`'s pure verdict of which apps to add, remove, restart or update
//!   in place;
//! - `intents`: operator intent, kept on disk;
//! - `fds`: the open-file limit and its budget per app;
//! - `handoff`: `appctl reexec`/SIGUSR2 and taking apps over after one.

mod actions;
mod adopt;
mod apply;
mod diff;
mod fds;
mod handoff;
mod intents;
mod registry;
mod start;

pub use handoff::VERSION;
pub use registry::AppRef;
pub use start::run;

use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use appvisor_protocol::{Action, ActionRequest, ActionResult, AppStatus, ApplyReport, IgnoredFile};

use crate::acl::{AdminRules, Operation, Peer};
use crate::audit::Events;
use crate::config::resolve::ResolvedApp;
use crate::config::{self, DaemonConfig};
use crate::control::{ActError, ApplyError, ControlTarget, Denied, ReexecError};
use crate::logs::AppLogs;
use crate::supervise::{self, Handle, Shared, SnapshotCell};

use intents::Intents;

/// Lines of memory tail kept per stream for fast `logs` and failure reports.
const TAIL_LINES: usize = 200;

/// How the daemon was invoked.
#[derive(Debug, Clone)]
pub struct Options {
    pub config: PathBuf,
    /// The config path was given on the command line (so it must exist).
    pub config_explicit: bool,
    /// Name of this daemon's cgroup subtree, under its own cgroup.
    pub cgroup_name: String,
    /// The binary `appctl reexec` executes; default: this one's path.
    pub reexec_binary: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("invalid configuration:\n{0}")]
    Config(#[from] config::ConfigErrors),
    #[error("creating {}: {source}", path.display())]
    Dir { path: PathBuf, source: io::Error },
    #[error("starting the reaper: {0}")]
    Reaper(io::Error),
    #[error("setting up cgroups: {0}")]
    Cgroup(#[from] crate::cgroup::CgroupError),
    #[error(transparent)]
    Socket(#[from] crate::control::SocketError),
    #[error("installing signal handlers: {0}")]
    Signals(io::Error),
    #[error("taking over from the previous appvisord: {0}")]
    Handoff(String),
}

impl DaemonError {
    /// Exit status of `appvisord`: 2 for configuration errors, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            DaemonError::Config(_) => 2,
            _ => 1,
        }
    }
}

/// What the control plane needs to talk to one app's task.
struct AppChannels {
    commands: supervise::Commands,
    snapshot: SnapshotCell,
    logs: Arc<AppLogs>,
}

/// One file of `apps.d`, as the daemon holds it.
#[derive(Debug)]
struct Entry {
    file: PathBuf,
    /// The version that runs (the last one that validated).
    app: Option<Arc<ResolvedApp>>,
    /// Why the newest version of the file does not validate.
    error: Option<String>,
    handle: Option<Handle>,
    /// Why a valid app has no task: no room in the open-file limit.
    refused: Option<String>,
    since: u64,
}

/// The running daemon, as the control server sees it.
#[derive(Debug)]
pub struct Daemon {
    options: Options,
    config: RwLock<DaemonConfig>,
    apps: RwLock<registry::Apps>,
    shared: Arc<Shared>,
    intents: Arc<Intents>,
    /// Files of `apps_dir` not loaded for their names, as of the last apply.
    ignored: RwLock<Vec<IgnoredFile>>,
    /// The open-file limit, shared out between apps. Taken after `apps`.
    fds: Mutex<fds::FdBudget>,
    /// The judgements of unchanged files of `apps_dir`, kept between
    /// updates.
    judged: crate::judge::JudgeCache,
    /// Serializes configuration changes.
    apply_lock: tokio::sync::Mutex<()>,
    handoff: handoff::HandoffControl,
}

impl ControlTarget for Daemon {
    fn events(&self) -> &Events {
        Daemon::events(self)
    }

    fn admin_rules(&self) -> AdminRules {
        Daemon::admin_rules(self)
    }

    type App = AppRef;

    fn authorize(&self, peer: &Peer, name: &str, op: Operation) -> Result<AppRef, Denied> {
        Daemon::authorize(self, peer, name, op)
    }

    fn visible_apps(&self, peer: &Peer) -> Vec<String> {
        Daemon::visible_apps(self, peer)
    }

    fn write_statuses(&self, peer: &Peer, out: &mut Vec<u8>) {
        Daemon::write_statuses(self, peer, out)
    }

    fn notices(&self, peer: &Peer) -> Vec<String> {
        Daemon::notices(self, peer)
    }

    fn status(&self, app: &AppRef) -> Option<AppStatus> {
        Daemon::status(self, app)
    }

    fn security(&self, app: &AppRef) -> Option<appvisor_protocol::AppSecurity> {
        Daemon::security(self, app)
    }

    fn logs(&self, app: &AppRef) -> Option<Arc<AppLogs>> {
        Daemon::logs(self, app)
    }

    async fn act(
        &self,
        app: &AppRef,
        action: Action,
        peer: &Peer,
        request: &ActionRequest,
    ) -> Result<ActionResult, ActError> {
        Daemon::act(self, app, action, peer, request).await
    }

    async fn signal(&self, app: &AppRef, signal: &str) -> Result<AppStatus, ActError> {
        Daemon::signal(self, app, signal).await
    }

    async fn apply_config(
        &self,
        dry_run: bool,
        peer: Option<&Peer>,
    ) -> Result<ApplyReport, ApplyError> {
        Daemon::apply_config(self, dry_run, peer).await
    }

    fn daemon_status(&self) -> appvisor_protocol::DaemonStatus {
        Daemon::daemon_status(self)
    }

    async fn request_reexec(&self, by: &str, id: u64) -> Result<(), ReexecError> {
        Daemon::request_reexec(self, by, id).await
    }
}

/// "1 app", "3 apps".
fn plural(n: usize, word: &str) -> String {
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
}
