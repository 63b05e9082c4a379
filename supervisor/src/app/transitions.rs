//! Every transition `step` may make, in one table a reviewer reads whole.
//!
//! A row is (from, event, to). An event that changes nothing (no effect, no
//! field) is ignored and has no row; everything else, self-transitions
//! included, must match a row. The tests in `machine` drive many event
//! sequences and check both directions: `step` never leaves the table, and
//! every row is reached.

use super::AppState;

/// The kind of an [`Event`](super::Event), without its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    Start,
    Stop,
    Restart,
    Spawned,
    SpawnFailed,
    Ready,
    MainExited,
    CgroupEmpty,
    TimerFired,
    PreviousExited,
}

/// (from, event, to) for every allowed transition.
#[rustfmt::skip]
pub const TRANSITIONS: &[(AppState, EventKind, AppState)] = {
    use AppState::*;
    use EventKind::*;
    &[
        // Requests. A start or restart works from every state but invalid.
        (Stopped,  Start,       Starting),
        (Exited,   Start,       Starting),
        (Fatal,    Start,       Starting),
        (Backoff,  Start,       Starting),
        (Stopping, Start,       Stopping), // start once the app is gone
        (Starting, Start,       Starting), // only resets the failure count
        (Running,  Start,       Running),  // only resets the failure count
        (Stopped,  Restart,     Starting),
        (Exited,   Restart,     Starting),
        (Fatal,    Restart,     Starting),
        (Backoff,  Restart,     Starting),
        (Starting, Restart,     Stopping), // stop, then start
        (Running,  Restart,     Starting), // start-stop: new instance beside the old
        (Starting, SpawnFailed, Running),  // start-stop: the previous instance serves on
        (Starting, MainExited,  Running),  // start-stop: the previous instance serves on
        (Stopping, CgroupEmpty, Running),  // start-stop: the previous instance serves on
        (Stopping, MainExited,  Running),  // start-stop: the previous instance serves on
        (Starting, PreviousExited, Starting), // start-stop: nothing left to fall back on
        (Stopping, PreviousExited, Stopping), // start-stop: nothing left to fall back on
        (Running,  Restart,     Stopping),
        (Stopping, Restart,     Stopping),
        (Starting, Stop,        Stopping),
        (Running,  Stop,        Stopping),
        (Stopping, Stop,        Stopping), // stay stopped once the app is gone
        (Backoff,  Stop,        Stopped),
        (Stopped,  Stop,        Stopped),  // the reason names the new cause
        (Exited,   Stop,        Stopped),
        (Fatal,    Stop,        Stopped),

        // Spawning.
        (Starting, Spawned,     Starting), // wait for readiness or start_secs
        (Starting, Spawned,     Running),  // readiness none, start_secs 0
        (Stopping, Spawned,     Stopping), // stopped while spawning: signal it now
        (Starting, SpawnFailed, Backoff),
        (Starting, SpawnFailed, Fatal),
        (Starting, SpawnFailed, Exited),   // restart policy never
        (Stopping, SpawnFailed, Stopped),  // stopped while spawning
        (Stopping, SpawnFailed, Starting), // restarted while spawning

        // Readiness and timers.
        (Starting, Ready,       Running),
        (Starting, TimerFired,  Running),  // readiness none: lived start_secs
        (Starting, TimerFired,  Stopping), // readiness timeout: kill, then fail the start
        (Backoff,  TimerFired,  Starting),
        (Stopping, TimerFired,  Stopping), // stop timeout: kill every process

        // The main process exits. Leftover processes are killed first
        // (-> Stopping); otherwise the exit is decided on at once.
        (Starting, MainExited,  Stopping),
        (Starting, MainExited,  Backoff),
        (Starting, MainExited,  Fatal),
        (Starting, MainExited,  Exited),
        (Running,  MainExited,  Stopping),
        (Running,  MainExited,  Starting), // crash after a good start: respawn at once
        (Running,  MainExited,  Backoff),  // died sooner than start_secs
        (Running,  MainExited,  Fatal),
        (Running,  MainExited,  Exited),

        // Finishing a stop: the main process is gone and so is every other
        // process of the app. Then stay stopped, start again, or apply the
        // failed-start rule or the exit decision.
        (Stopping, MainExited,  Stopping), // others left: signal them, keep waiting
        (Stopping, MainExited,  Stopped),
        (Stopping, MainExited,  Starting),
        (Stopping, MainExited,  Backoff),
        (Stopping, MainExited,  Fatal),
        (Stopping, MainExited,  Exited),
        (Stopping, CgroupEmpty, Stopped),
        (Stopping, CgroupEmpty, Starting),
        (Stopping, CgroupEmpty, Backoff),
        (Stopping, CgroupEmpty, Fatal),
        (Stopping, CgroupEmpty, Exited),
    ]
};

/// Whether (from, event, to) is a row of [`TRANSITIONS`].
pub(crate) fn is_allowed(from: AppState, event: EventKind, to: AppState) -> bool {
    TRANSITIONS.contains(&(from, event, to))
}
