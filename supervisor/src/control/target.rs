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

use crate::acl::{AdminRules, Decision, Operation, Peer};
use crate::audit::Events;
use crate::config::ConfigErrors;
use crate::logs::AppLogs;
use crate::supervise::SignalError;

/// The daemon, as the control server sees it.
pub trait ControlTarget: Send + Sync + 'static {
    /// The event bus, which also carries the audit trail.
    fn events(&self) -> &Events;

    /// `[control]`'s admin users and groups, now.
    fn admin_rules(&self) -> AdminRules;

    /// An app a request was let reach: the version of it whose `[access]`
    /// allowed the request.
    type App: Send + Sync;

    /// Decides whether `peer` may do `op` to app `name` and, if so,
    /// returns the app as it was when that was decided, from the same look
    /// at the registry: every later call with it acts on that version or
    /// fails with [`ActError::Changed`], so an app replaced or removed
    /// after the check is never reached on the strength of the check.
    fn authorize(&self, peer: &Peer, name: &str, op: Operation) -> Result<Self::App, Denied>;

    /// Names of the apps `peer` may operate, sorted.
    fn visible_apps(&self, peer: &Peer) -> Vec<String>;

    /// Appends the status of every app `peer` may see to `out`, as the
    /// JSON array `serde_json` writes for a `Vec<AppStatus>` (`AppList`'s
    /// `apps`).
    fn write_statuses(&self, peer: &Peer, out: &mut Vec<u8>);

    /// What an admin should know about the daemon (`AppList::notices`);
    /// nothing for anyone else.
    fn notices(&self, peer: &Peer) -> Vec<String>;

    /// Status of an authorized app; `None` if it changed since.
    fn status(&self, app: &Self::App) -> Option<AppStatus>;

    /// What confines an authorized app; `None` if it has no task or
    /// changed since.
    fn security(&self, app: &Self::App) -> Option<AppSecurity>;

    /// An authorized app's captured output; `None` if it has no task or
    /// changed since.
    fn logs(&self, app: &Self::App) -> Option<Arc<AppLogs>>;

    /// start, stop, restart or reload, waiting for the outcome if asked.
    fn act(
        &self,
        app: &Self::App,
        action: Action,
        peer: &Peer,
        request: &ActionRequest,
    ) -> impl Future<Output = Result<ActionResult, ActError>> + Send;

    /// Sends `signal` (a name such as `USR1`) to an authorized app's
    /// processes.
    fn signal(
        &self,
        app: &Self::App,
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

/// Why a request may not reach an app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No such app, or one the caller may not see: the same answer, so
    /// names do not leak.
    Hidden,
    /// Only admins may do this.
    AdminOnly,
}

impl Denied {
    /// What [`crate::acl::decide`] said, as the answer to an app-scoped request.
    pub fn check(decision: Decision) -> Result<(), Denied> {
        match decision {
            Decision::Allow => Ok(()),
            Decision::Hide => Err(Denied::Hidden),
            Decision::Forbid => Err(Denied::AdminOnly),
        }
    }
}

/// Why an action on one app was not carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActError {
    /// It changed or went away between the access check and the action:
    /// the check was about another version, so nothing was done.
    #[error("{app} changed while the request was checked: nothing was done, try again")]
    Changed { app: String },
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
    /// The app's state machine said no.
    #[error("cannot {action} {app}: {why}")]
    Refused {
        app: String,
        action: Action,
        why: String,
    },
    /// The app's task sent no signal.
    #[error("cannot signal {app}: {source}")]
    Signal {
        app: String,
        #[source]
        source: SignalError,
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
