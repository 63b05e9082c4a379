//! What the control server asks of the daemon, and how each ask can fail.
//!
//! The server depends on [`ControlTarget`], not on the daemon: the daemon
//! implements it, and the server's tests implement it with a fake, as the
//! status server does with `StatusSource`. The errors are the daemon's
//! words for what went wrong; `control::error` alone turns them into wire
//! errors.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use appvisor_protocol::{Action, ActionRequest, ActionResult, AppSecurity, AppStatus, ApplyReport};

use crate::acl::{AdminRules, Peer};
use crate::audit::Events;
use crate::config::{AccessSpec, ConfigErrors};
use crate::logs::AppLogs;

/// The daemon, as the control server sees it.
pub trait ControlTarget: Send + Sync + 'static {
    /// The event bus, which also carries the audit trail.
    fn events(&self) -> &Events;

    /// `[control]`'s admin users and groups, now.
    fn admin_rules(&self) -> AdminRules;

    /// The `[access]` of app `name`, if it exists (an app known only as an
    /// invalid file has none, so only admins see it).
    fn access(&self, name: &str) -> Option<AccessSpec>;

    /// Names of the apps `peer` may operate, sorted.
    fn visible_apps(&self, peer: &Peer) -> Vec<String>;

    /// Status of every app `peer` may see.
    fn statuses(&self, peer: &Peer) -> Vec<AppStatus>;

    /// What an admin should know about the daemon (`AppList::notices`);
    /// nothing for anyone else.
    fn notices(&self, peer: &Peer) -> Vec<String>;

    /// Status of one app, whoever asks (the server checks access first).
    fn status(&self, name: &str) -> Option<AppStatus>;

    /// What confines app `name`, whoever asks (the server checks access).
    fn security(&self, name: &str) -> Option<AppSecurity>;

    /// App `name`'s captured output, whoever asks (the server checks access).
    fn logs(&self, name: &str) -> Option<Arc<AppLogs>>;

    /// start, stop, restart or reload, waiting for the outcome if asked.
    fn act(
        &self,
        name: &str,
        action: Action,
        peer: &Peer,
        request: &ActionRequest,
    ) -> impl Future<Output = Result<ActionResult, ActError>> + Send;

    /// Sends `signal` (a name such as `USR1`) to app `name`'s processes.
    fn signal(
        &self,
        name: &str,
        signal: &str,
    ) -> impl Future<Output = Result<AppStatus, ActError>> + Send;

    /// `GET /v1/daemon`: the version, the binary a hand-off executes and
    /// the last hand-off.
    fn daemon_status(&self) -> appvisor_protocol::DaemonStatus;

    /// `appctl reexec`: starts a hand-off of every app to the daemon's
    /// binary, executed in place; `id` names it in
    /// [`ControlTarget::daemon_status`] once it is over.
    fn request_reexec(
        &self,
        by: &str,
        id: u64,
    ) -> impl Future<Output = Result<(), ReexecError>> + Send;

    /// Re-reads the configuration and applies the difference (or, with
    /// `dry_run`, only reports it).
    fn apply_config(
        &self,
        dry_run: bool,
        peer: Option<&Peer>,
    ) -> impl Future<Output = Result<ApplyReport, ApplyError>> + Send;
}

/// Why an action on one app was not carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActError {
    /// It went away between the access check and the action.
    #[error("no app named {app}")]
    NoSuchApp { app: String },
    /// The daemon did not start it (for want of open files), and still
    /// cannot.
    #[error("{app} was {why}")]
    NotStarted { app: String, why: String },
    /// Its file never validated, so there is nothing to run.
    #[error("{app} has no valid configuration: {errors} (fix {} and run appctl update)", file.display())]
    Invalid {
        app: String,
        /// The file's errors, `; `-separated.
        errors: String,
        file: PathBuf,
    },
    /// The app's state machine, or the kernel, said no.
    #[error("cannot {action} {app}: {why}")]
    Refused {
        app: String,
        action: Action,
        why: String,
    },
    #[error("unknown signal {signal:?} (use a name such as HUP, USR1 or TERM)")]
    UnknownSignal { signal: String },
    /// A hand-off to a new binary is under way.
    #[error("the daemon is handing over to a new binary: try again in a moment")]
    HandingOver,
    /// Its task has ended: the app is being removed or the daemon stops.
    #[error("{app} is being removed or the daemon is stopping")]
    Gone { app: String },
}

/// Why the configuration was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// `appvisor.toml` does not validate, or `apps_dir` cannot be read (an
    /// unreadable `apps_dir` must not look like "no apps": that would stop
    /// every app).
    #[error(transparent)]
    Config(#[from] ConfigErrors),
}

/// Why a hand-off was not started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReexecError {
    /// Another is under way, no binary is known, or apps.d has changes the
    /// daemon has not applied.
    #[error("{0}")]
    Refused(String),
    #[error("the daemon is stopping")]
    Stopping,
}
