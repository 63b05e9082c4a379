//! The audit trail: every mutating control request, who made it and how it
//! ended, written to the `audit` tracing target and published on the event
//! stream that admins follow with `GET /v1/events`, and counted by action
//! and outcome for the status server's metrics.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use appvisor_protocol::{AuditRecord, Event};
use tokio::sync::broadcast;

use crate::acl::Peer;

/// How many events a slow `/v1/events` follower may lag before it misses some.
const EVENT_BACKLOG: usize = 1024;

/// The daemon's event bus: state changes and audit records.
#[derive(Debug, Clone)]
pub struct Events {
    tx: broadcast::Sender<Event>,
    /// Audited requests so far, by (action, outcome); both come from small
    /// fixed sets (verbs, error codes), so the map stays small.
    counts: Arc<Mutex<BTreeMap<(String, String), u64>>>,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            tx: broadcast::channel(EVENT_BACKLOG).0,
            counts: Arc::default(),
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

    /// Audited control requests so far: ((action, outcome), count), sorted.
    pub fn control_requests(&self) -> Vec<((String, String), u64)> {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    /// Writes one audit record, counts it and publishes it.
    pub fn audit(&self, peer: &Peer, app: Option<&str>, action: &str, outcome: &str) {
        *self
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((action.to_owned(), outcome.to_owned()))
            .or_default() += 1;
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

/// Seconds since the Unix epoch, for records people read.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
