//! The audit trail: every mutating control request, who made it and how it
//! ended, written to the `audit` tracing target and published on the event
//! stream that admins follow with `GET /v1/events`.

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
}

impl Default for Events {
    fn default() -> Self {
        Events {
            tx: broadcast::channel(EVENT_BACKLOG).0,
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

    /// Writes one audit record and publishes it.
    pub fn audit(&self, peer: &Peer, app: Option<&str>, action: &str, outcome: &str) {
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
