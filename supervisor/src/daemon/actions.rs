//! Actions on one app (start, stop, restart, reload, signal) and waiting
//! for their outcome.

use std::time::Duration;

use appvisor_protocol::{Action, ActionRequest, ActionResult, AppStatus, Outcome, StoppedBy};
use tokio::sync::oneshot;

use crate::acl::Peer;
use crate::app::{Answer, Cause};
use crate::audit::unix_now;
use crate::config;
use crate::control::ActError;
use crate::locks;
use crate::logs::{AppLogs, LogMark, Selection};
use crate::supervise::{self, Command, SnapshotCell};

use super::registry::{with_current, with_current_mut, AppRef};
use super::{AppChannels, Daemon};

/// Longest an action may wait for its outcome.
const MAX_WAIT: Duration = Duration::from_secs(3600);

/// Default wait when a request asks to wait without a timeout.
const DEFAULT_WAIT: Duration = Duration::from_secs(60);

/// Log lines attached to a failed action, all from this attempt: enough for
/// a gunicorn whose workers failed to boot, whose own traceback on the way
/// out follows the workers' import error.
const FAILURE_LOG_LINES: usize = 60;

impl Daemon {
    /// start, stop, restart or reload, optionally waiting for the outcome
    /// the app's state machine gives.
    pub async fn act(
        &self,
        app: &AppRef,
        action: Action,
        peer: &Peer,
        request: &ActionRequest,
    ) -> Result<ActionResult, ActError> {
        if self.handoff.busy() {
            return Err(ActError::HandingOver);
        }
        let name = app.name();
        if matches!(action, Action::Start | Action::Restart) {
            self.start_refused(app)?;
        }
        let AppChannels {
            commands,
            snapshot,
            logs,
        } = self.channels(app)?;
        let stopped_by = (action == Action::Stop).then(|| StoppedBy {
            user: peer.user.clone(),
            uid: peer.uid,
            at: unix_now(),
        });
        let intent_error = match action {
            Action::Start | Action::Restart | Action::Stop => self
                .record_intent(name, stopped_by.clone())
                .await
                .err()
                .map(|error| error.to_string()),
            Action::Reload | Action::Signal => None,
        };
        // This attempt's output only: not the lines of earlier attempts.
        let mark = logs.mark();
        let (reply, answer) = oneshot::channel();
        let control = Command::Control {
            action,
            cause: Cause::Operator(peer.user.clone()),
            stopped_by,
            wait: request.wait,
            reply,
        };
        self.send_if_current(app, &commands, control)?;
        // Without --no-wait, until the outcome; with it, until the machine
        // has taken the request, so the status returned shows it.
        let (outcome, mark) = match tokio::time::timeout(wait_timeout(request), answer).await {
            Ok(Ok(reply)) => {
                // The lines of the attempt that failed, from its spawn.
                let mark = reply.attempt_began.unwrap_or(mark);
                match reply.answer {
                    None | Some(Answer::Done) => (Outcome::Done, mark),
                    Some(Answer::Failed(_)) => (Outcome::Failed, mark),
                    Some(Answer::Refused(why)) => {
                        return Err(ActError::Refused {
                            app: name.to_owned(),
                            action,
                            why,
                        })
                    }
                }
            }
            Ok(Err(_)) => return Err(gone(name)),
            Err(_elapsed) => (Outcome::Timeout, mark),
        };
        Ok(ActionResult {
            intent_error,
            ..action_result(name, action, outcome, &snapshot, &logs, mark)
        })
    }

    /// A manual start works from any state: an app refused for want of
    /// open files gets its task now if there is room.
    fn start_refused(&self, app: &AppRef) -> Result<(), ActError> {
        let log_dir = locks::read(&self.config).spec.log_dir.clone();
        with_current_mut(&self.apps, app, |entry| {
            if entry.handle.is_none() && entry.refused.is_some() {
                self.admit_and_start(app.name(), entry, &log_dir);
            }
        })
    }

    /// Sends `command` to an authorized app's task, under the registry's
    /// lock, if the app is still the version authorized: a new version
    /// reaches the task (`Command::Replace`, sent under the same lock)
    /// only after the command, so the task carries it out with the
    /// settings that allowed it.
    fn send_if_current(
        &self,
        app: &AppRef,
        commands: &supervise::Commands,
        command: Command,
    ) -> Result<(), ActError> {
        with_current(&self.apps, app, |_| commands.send(command))?.map_err(|_| gone(app.name()))
    }

    /// `appctl signal`.
    pub async fn signal(&self, app: &AppRef, signal: &str) -> Result<AppStatus, ActError> {
        let signal =
            config::validate::parse_signal(signal).map_err(|_| ActError::UnknownSignal {
                signal: signal.to_owned(),
            })?;
        let AppChannels {
            commands, snapshot, ..
        } = self.channels(app)?;
        let (reply, result) = oneshot::channel();
        self.send_if_current(app, &commands, Command::Signal { signal, reply })?;
        result
            .await
            .map_err(|_| gone(app.name()))?
            .map_err(|source| ActError::Signal {
                app: app.name().to_owned(),
                source,
            })?;
        let status = snapshot.borrow().status();
        Ok(status)
    }
}

fn gone(name: &str) -> ActError {
    ActError::Gone {
        app: name.to_owned(),
    }
}

/// How long a waiting action may wait: the caller's timeout, capped.
fn wait_timeout(request: &ActionRequest) -> Duration {
    request
        .timeout_ms
        .map(Duration::from_millis)
        .unwrap_or(DEFAULT_WAIT)
        .min(MAX_WAIT)
}

/// The answer to an action: the app's status now and, unless it went as
/// asked, its last log lines.
fn action_result(
    name: &str,
    action: Action,
    outcome: Outcome,
    snapshot: &SnapshotCell,
    logs: &AppLogs,
    mark: LogMark,
) -> ActionResult {
    let log_tail = if outcome == Outcome::Done {
        Vec::new()
    } else {
        failure_log_tail(logs, mark)
    };
    ActionResult {
        app: name.to_owned(),
        action,
        outcome,
        status: snapshot.borrow().status_now(),
        log_tail,
        intent_error: None,
    }
}

/// The last lines the app wrote since `mark`, both streams in the order
/// they came.
fn failure_log_tail(logs: &AppLogs, mark: LogMark) -> Vec<String> {
    logs.tail_since(Selection::Both, mark, FAILURE_LOG_LINES)
}
