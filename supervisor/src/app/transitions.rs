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
    Reload,
    Replace,
    Spawned,
    SpawnFailed,
    Ready,
    WorkersReplaced,
    MainExited,
    CgroupEmpty,
    TimerFired,
}

/// (from, event, to) for every allowed transition.
#[rustfmt::skip]
pub const TRANSITIONS: &[(AppState, EventKind, AppState)] = {
    use AppState::*;
    use EventKind::*;
    &[
        // Requests. A start or restart works from every state but invalid;
        // a request that changes nothing but answers its caller is a
        // self-transition.
        (Stopped,  Start,       Starting),
        (Exited,   Start,       Starting),
        (Fatal,    Start,       Starting),
        (Backoff,  Start,       Starting),
        (Stopping, Start,       Stopping), // start once the app is gone
        (Stopping, Start,       Starting), // only retired instances left
        (Starting, Start,       Starting), // only resets the failure count
        (Running,  Start,       Running),  // answers done
        (Stopped,  Restart,     Starting),
        (Exited,   Restart,     Starting),
        (Fatal,    Restart,     Starting),
        (Backoff,  Restart,     Starting),
        (Starting, Restart,     Stopping), // stop, then start
        (Running,  Restart,     Starting), // start-stop: new instance beside the old
        (Running,  Restart,     Stopping),
        (Stopping, Restart,     Stopping),
        (Stopping, Restart,     Starting), // only retired instances left
        (Starting, Stop,        Stopping),
        (Running,  Stop,        Stopping),
        (Stopping, Stop,        Stopping), // stay stopped once the app is gone
        (Backoff,  Stop,        Stopped),
        (Stopped,  Stop,        Stopped),  // the reason names the new cause
        (Exited,   Stop,        Stopped),
        (Fatal,    Stop,        Stopped),
        (Backoff,  Stop,        Stopping), // retired instances left
        (Exited,   Stop,        Stopping),
        (Fatal,    Stop,        Stopping),
        (Running,  Reload,      Running),
        (Stopped,  Reload,      Stopped),  // refused: not running
        (Starting, Reload,      Starting),
        (Backoff,  Reload,      Backoff),
        (Stopping, Reload,      Stopping),
        (Exited,   Reload,      Exited),
        (Fatal,    Reload,      Fatal),

        // A changed file: restart what is up, start what autostarts, and
        // otherwise only adopt the settings.
        (Starting, Replace,     Starting), // adopted in place
        (Running,  Replace,     Running),  // adopted in place
        (Backoff,  Replace,     Backoff),  // adopted in place
        (Stopped,  Replace,     Stopped),
        (Exited,   Replace,     Exited),
        (Fatal,    Replace,     Fatal),
        (Stopping, Replace,     Stopping),
        (Stopped,  Replace,     Starting),
        (Exited,   Replace,     Starting),
        (Fatal,    Replace,     Starting),
        (Backoff,  Replace,     Starting),
        (Stopping, Replace,     Starting), // only retired instances left
        (Starting, Replace,     Stopping),
        (Running,  Replace,     Stopping),
        (Running,  Replace,     Starting), // start-stop

        // Spawning.
        (Starting, Spawned,     Starting), // wait for readiness or start_secs
        (Starting, Spawned,     Running),  // readiness none, start_secs 0
        (Stopping, Spawned,     Stopping), // stopped while spawning: signal it now
        (Starting, SpawnFailed, Backoff),
        (Starting, SpawnFailed, Fatal),
        (Starting, SpawnFailed, Exited),   // restart policy never
        (Starting, SpawnFailed, Running),  // start-stop: the previous instance serves on
        (Stopping, SpawnFailed, Stopped),  // stopped while spawning
        (Stopping, SpawnFailed, Stopping), // stopped while spawning, retired instances left
        (Stopping, SpawnFailed, Starting), // restarted while spawning

        // Readiness, reload and timers.
        (Starting, Ready,       Running),
        (Starting, Ready,       Starting), // one half of readiness
        (Running,  Ready,       Running),  // the probe after a reload
        (Running,  WorkersReplaced, Running),
        (Starting, TimerFired,  Running),  // readiness none: lived start_secs
        (Starting, TimerFired,  Stopping), // readiness timeout: kill, then fail the start
        (Running,  TimerFired,  Running),  // reload timeout; a retired instance's stop timeout
        (Backoff,  TimerFired,  Starting),
        (Stopping, TimerFired,  Stopping), // stop timeout: kill every process
        (Starting, TimerFired,  Starting), // a retired instance's stop timeout
        (Backoff,  TimerFired,  Backoff),
        (Exited,   TimerFired,  Exited),
        (Fatal,    TimerFired,  Fatal),

        // The main process exits. Leftover processes are killed first
        // (-> Stopping); otherwise the exit is decided on at once.
        (Starting, MainExited,  Stopping),
        (Starting, MainExited,  Backoff),
        (Starting, MainExited,  Fatal),
        (Starting, MainExited,  Exited),
        (Starting, MainExited,  Running),  // start-stop: the previous instance serves on
        (Running,  MainExited,  Stopping),
        (Running,  MainExited,  Starting), // crash after a good start: respawn at once
        (Running,  MainExited,  Backoff),  // died sooner than start_secs
        (Running,  MainExited,  Fatal),
        (Running,  MainExited,  Exited),

        // Finishing a stop: the main process is gone and so is every other
        // process of the instance. Then stay stopped, start again, or apply
        // the failed-start rule or the exit decision.
        (Stopping, MainExited,  Stopping), // others left: signal them, keep waiting
        (Stopping, MainExited,  Stopped),
        (Stopping, MainExited,  Starting),
        (Stopping, MainExited,  Backoff),
        (Stopping, MainExited,  Fatal),
        (Stopping, MainExited,  Exited),
        (Stopping, MainExited,  Running),  // start-stop: the previous instance serves on
        (Stopping, CgroupEmpty, Stopping), // retired instances left
        (Stopping, CgroupEmpty, Stopped),
        (Stopping, CgroupEmpty, Starting),
        (Stopping, CgroupEmpty, Backoff),
        (Stopping, CgroupEmpty, Fatal),
        (Stopping, CgroupEmpty, Exited),
        (Stopping, CgroupEmpty, Running),  // start-stop: the previous instance serves on

        // The previous and retired instances come and go beside the
        // current one.
        (Starting, MainExited,  Starting),
        (Starting, CgroupEmpty, Starting),
        (Running,  CgroupEmpty, Running),
        (Running,  MainExited,  Running),
        (Backoff,  MainExited,  Backoff),
        (Backoff,  CgroupEmpty, Backoff),
        (Exited,   MainExited,  Exited),
        (Exited,   CgroupEmpty, Exited),
        (Fatal,    MainExited,  Fatal),
        (Fatal,    CgroupEmpty, Fatal),
    ]
};

/// Whether (from, event, to) is a row of [`TRANSITIONS`].
pub(crate) fn is_allowed(from: AppState, event: EventKind, to: AppState) -> bool {
    TRANSITIONS.contains(&(from, event, to))
}
