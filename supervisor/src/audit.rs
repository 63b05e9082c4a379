//! The audit trail: every mutating control request, who made it and how it
//! ended, written to the `audit` tracing target and published on the event
//! stream that admins follow with `GET /v1/events`, and counted by action
//! and outcome for the status server's metrics.
//!
//! Refused requests are rate-limited per uid (see [`crate::ratelimit`]):
//! any local user can send thousands a second, and each would otherwise be
//! a record that buries the real ones. Past the burst they are counted, and
//! one record per window says how many were suppressed. Every request still
//! counts in the metrics.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use appvisor_protocol::{AuditRecord, ErrorCode, Event, Outcome};
use tokio::sync::broadcast;

use crate::acl::Peer;
// Poisoning ignored: the counters stay usable whatever panicked.
use crate::locks::lock;
use crate::ratelimit::{Limit, Verdict, Windows};

/// How many events a slow `/v1/events` follower may lag before it misses some.
const EVENT_BACKLOG: usize = 1024;
/// Refused requests recorded one by one, per uid.
const REFUSALS: Limit = Limit {
    burst: 10,
    per: Duration::from_secs(10),
};
/// Uids with a refusal window of their own; more share one.
const REFUSAL_UIDS: usize = 256;
/// The longest requested app name a record repeats; names that long are
/// invalid anyway, and a refused request must not make a long record.
const MAX_NAME: usize = 80;

/// How an audited request ended: the `outcome` of its record and of
/// `appvisor_control_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuditOutcome {
    /// Done as asked.
    Ok,
    /// An action tried and failed (a restart whose new instance did not
    /// become ready).
    Failed,
    /// An action still under way when the caller's timeout came.
    Timeout,
    /// Answered with this error.
    Error(ErrorCode),
}

impl AuditOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditOutcome::Ok => "ok",
            AuditOutcome::Failed => "failed",
            AuditOutcome::Timeout => "timeout",
            AuditOutcome::Error(code) => code.as_str(),
        }
    }
}

impl From<Outcome> for AuditOutcome {
    fn from(outcome: Outcome) -> AuditOutcome {
        match outcome {
            Outcome::Done => AuditOutcome::Ok,
            Outcome::Failed => AuditOutcome::Failed,
            Outcome::Timeout => AuditOutcome::Timeout,
        }
    }
}

impl From<ErrorCode> for AuditOutcome {
    fn from(code: ErrorCode) -> AuditOutcome {
        AuditOutcome::Error(code)
    }
}

/// Ordered by name, as the metrics list them.
impl Ord for AuditOutcome {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl PartialOrd for AuditOutcome {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// What one count of audited requests is about: a mutating route's action
/// (`Route::mutation`, a fixed set) and how it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestKey {
    pub action: &'static str,
    pub outcome: AuditOutcome,
}

impl RequestKey {
    /// The key named by `action` and `outcome` as [`AuditOutcome::as_str`]
    /// and `Route::mutation` spell them (how a hand-off document carries
    /// them); `None` for a name this build does not know.
    pub fn from_names(action: &str, outcome: &str) -> Option<RequestKey> {
        let action = appvisor_protocol::routes::Route::every("")
            .iter()
            .filter_map(|route| route.mutation())
            .map(|mutation| mutation.action)
            .find(|known| *known == action)?;
        let outcome = match outcome {
            "ok" => AuditOutcome::Ok,
            "failed" => AuditOutcome::Failed,
            "timeout" => AuditOutcome::Timeout,
            code => AuditOutcome::Error(
                serde_json::from_value(serde_json::Value::String(code.to_owned())).ok()?,
            ),
        };
        Some(RequestKey { action, outcome })
    }
}

/// The daemon's event bus: state changes and audit records.
#[derive(Debug, Clone)]
pub struct Events {
    tx: broadcast::Sender<Event>,
    /// Audited requests so far; actions and outcomes come from small fixed
    /// sets (verbs, error codes), so the map stays small.
    counts: Arc<Mutex<BTreeMap<RequestKey, u64>>>,
    /// Refusals recorded per uid in the current window.
    refusals: Arc<Mutex<Windows<u32>>>,
    /// A task waits to write the summaries of suppressed refusals.
    summarizing: Arc<AtomicBool>,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            tx: broadcast::channel(EVENT_BACKLOG).0,
            counts: Arc::default(),
            refusals: Arc::new(Mutex::new(Windows::new(REFUSALS, REFUSAL_UIDS))),
            summarizing: Arc::default(),
        }
    }
}

impl Events {
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }

    pub fn publish(&self, event: Event) {
        // No subscriber is the normal case; nothing to do then.
        let _ = self.tx.send(event);
    }

    /// Audited control requests so far, with their counts, sorted.
    pub fn control_requests(&self) -> Vec<(RequestKey, u64)> {
        let counts = lock(&self.counts);
        counts.iter().map(|(k, v)| (*k, *v)).collect()
    }

    /// Takes over the counts of a daemon this one replaced by a hand-off,
    /// so the metrics' counters do not go back to zero.
    /// Counts under a name this build does not know are left out, with a
    /// warning.
    pub fn restore_counts<'a>(&self, counts: impl IntoIterator<Item = (&'a str, &'a str, u64)>) {
        let mut mine = lock(&self.counts);
        for (action, outcome, count) in counts {
            match RequestKey::from_names(action, outcome) {
                Some(key) => *mine.entry(key).or_default() += count,
                None => tracing::warn!(
                    action,
                    outcome,
                    count,
                    "a handed-over request count this version does not know is left out"
                ),
            }
        }
    }

    /// Writes one audit record, counts it and publishes it.
    pub fn audit(
        &self,
        peer: &Peer,
        app: Option<&str>,
        action: &'static str,
        outcome: AuditOutcome,
    ) {
        self.count(action, outcome);
        self.record(peer, app, action, outcome);
    }

    /// [`Events::audit`] for a request refused before it was looked at
    /// (forbidden, or an app the caller may not see): counted always,
    /// recorded within the caller's rate limit.
    pub fn audit_refusal(
        &self,
        peer: &Peer,
        app: Option<&str>,
        action: &'static str,
        outcome: AuditOutcome,
    ) {
        self.count(action, outcome);
        let verdict = lock(&self.refusals).check(peer.uid, Instant::now());
        match verdict {
            Verdict::Log { suppressed } => {
                log_suppressed(Some(peer.uid), suppressed);
                let app = app.map(|name| truncate(name, MAX_NAME));
                self.record(peer, app, action, outcome);
            }
            Verdict::Suppress { first: true } => self.summarize_later(),
            Verdict::Suppress { first: false } => {}
        }
    }

    fn count(&self, action: &'static str, outcome: AuditOutcome) {
        *lock(&self.counts)
            .entry(RequestKey { action, outcome })
            .or_default() += 1;
    }

    /// Starts the task that writes each summary when its window ends,
    /// unless it runs. Outside a tokio runtime the summaries come with the
    /// next record instead.
    fn summarize_later(&self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.summarizing.swap(true, Ordering::AcqRel) {
            return;
        }
        let refusals = Arc::clone(&self.refusals);
        let summarizing = Arc::clone(&self.summarizing);
        runtime.spawn(async move {
            loop {
                let due = lock(&refusals).summary_due();
                let Some(due) = due else {
                    summarizing.store(false, Ordering::Release);
                    // A suppression between the check and the store would
                    // have found the flag set: look once more.
                    if lock(&refusals).summary_due().is_none()
                        || summarizing.swap(true, Ordering::AcqRel)
                    {
                        return;
                    }
                    continue;
                };
                tokio::time::sleep_until(due.into()).await;
                let summaries = lock(&refusals).take_summaries(Instant::now());
                for (uid, suppressed) in summaries {
                    log_suppressed(uid, suppressed);
                }
            }
        });
    }

    fn record(&self, peer: &Peer, app: Option<&str>, action: &str, outcome: AuditOutcome) {
        let outcome = outcome.as_str();
        tracing::info!(
            target: "audit",
            uid = peer.uid,
            user = %peer.user,
            pid = peer.pid,
            app = app.unwrap_or("-"),
            action,
            outcome,
            "control request"
        );
        self.publish(Event::Audit(AuditRecord {
            time: unix_now(),
            uid: peer.uid,
            user: peer.user.clone(),
            pid: peer.pid,
            app: app.map(str::to_owned),
            action: action.to_owned(),
            outcome: outcome.to_owned(),
        }));
    }
}

/// The summary record of refusals suppressed in a window: `uid` is `None`
/// for the uids beyond [`REFUSAL_UIDS`], which share one window.
fn log_suppressed(uid: Option<u32>, suppressed: u64) {
    if suppressed > 0 {
        tracing::info!(
            target: "audit",
            uid,
            suppressed,
            "refused control requests: {suppressed} more suppressed"
        );
    }
}

/// `text` cut to at most `max` bytes, on a character boundary.
fn truncate(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Seconds since the Unix epoch, for records people read.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use appvisor_protocol::routes::Route;

    /// A hand-off carries request counts by name; every key this build can
    /// count must come back as itself, and an unknown name as nothing.
    #[test]
    fn every_request_key_reads_back_from_its_names() {
        let codes = [
            ErrorCode::BadRequest,
            ErrorCode::Forbidden,
            ErrorCode::NotFound,
            ErrorCode::MethodNotAllowed,
            ErrorCode::Conflict,
            ErrorCode::PayloadTooLarge,
            ErrorCode::InvalidConfig,
            ErrorCode::Unavailable,
            ErrorCode::Internal,
        ];
        let outcomes = [
            AuditOutcome::Ok,
            AuditOutcome::Failed,
            AuditOutcome::Timeout,
        ]
        .into_iter()
        .chain(codes.into_iter().map(AuditOutcome::Error));
        let actions: Vec<&'static str> = Route::every("shop")
            .iter()
            .filter_map(|route| route.mutation())
            .map(|mutation| mutation.action)
            .collect();
        assert!(!actions.is_empty());
        for outcome in outcomes {
            for action in &actions {
                let key = RequestKey { action, outcome };
                assert_eq!(
                    RequestKey::from_names(key.action, key.outcome.as_str()),
                    Some(key)
                );
            }
        }
        assert_eq!(RequestKey::from_names("explode", "ok"), None);
        assert_eq!(RequestKey::from_names(actions[0], "exploded"), None);
    }
}
