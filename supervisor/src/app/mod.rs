//! The per-app state machine: pure, no I/O, no clock of its own.
//!
//! [`step`] maps (machine, event, now) to (machine', effects). The shell in
//! `supervise` carries out the effects and feeds back the events they lead
//! to. The allowed transitions are listed whole in [`TRANSITIONS`]; a test
//! checks that `step` never leaves that table. The behaviour, step by step,
//! is described in the `machine` module; [`backoff_delay`] is the delay
//! between failed starts.
//!
//! This module must never do I/O, read the clock or log: time comes in as
//! `now`, and everything the outside world should see goes out as an
//! [`Effect`] or in the returned [`Machine`].

mod backoff;
mod machine;
mod transitions;

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::{RestartSpec, Signal};

pub use backoff::backoff_delay;
pub use machine::step;
pub use transitions::{EventKind, TRANSITIONS};

/// DESIGN.md's states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AppState {
    Stopped,
    Starting,
    Running,
    Backoff,
    Stopping,
    Exited,
    Fatal,
    Invalid,
}

/// Who or what asked for a change, for reasons and the audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// `autostart = true` at load.
    Autostart,
    /// A person through the control socket: their user name.
    Operator(String),
    /// A configuration change (`appctl update`, SIGHUP).
    Config,
    /// The daemon is shutting down.
    Shutdown,
}

/// How the main process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
    /// Killed by the kernel because the app reached `[limits] memory`
    /// (bytes); the shell tells this apart from a plain SIGKILL through the
    /// memory cgroup's OOM-kill counter.
    MemoryLimit {
        limit: u64,
    },
}

/// The parts of an app's settings that drive its state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    pub restart: RestartSpec,
    /// `readiness.kind = "none"`: running once the process has lived
    /// `start_secs`. Otherwise running on `Event::Ready`.
    pub ready_after_start_secs: bool,
    pub readiness_timeout: Duration,
    pub stop_signal: Signal,
    pub stop_timeout: Duration,
}

/// Inputs to the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Start(Cause),
    Stop(Cause),
    Restart(Cause),
    /// The exec helper exec'd the app: it is process `pid`.
    Spawned {
        pid: u32,
    },
    /// The spawn failed before exec; `reason` is e.g.
    /// "spawn failed at chdir /srv/x: No such file or directory".
    SpawnFailed {
        reason: String,
    },
    /// The readiness check passed (READY=1, or the http/tcp probe).
    Ready,
    /// The main process ended. `cgroup_empty` says whether any other
    /// process of the app is left.
    MainExited {
        status: ExitStatus,
        cgroup_empty: bool,
    },
    /// The app's cgroup became empty.
    CgroupEmpty,
    /// The timer armed by `Effect::SetTimer { generation }` fired.
    TimerFired {
        generation: u64,
    },
    /// The previous instance of a start-stop restart ended on its own.
    PreviousExited,
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// The new instance failed: discard it and make the previous instance
    /// (kept running by a start-stop restart) the current one again.
    Restore,
    /// Keep the current instance running as the *previous* one while a new
    /// instance starts beside it (start-stop restart).
    Retire,
    /// Stop the previous instance: its stop signal, then SIGKILL to all of
    /// it after the stop timeout. Answer with nothing; it is gone when its
    /// cgroup is empty.
    StopPrevious,
    /// Spawn the app; answer with `Spawned` or `SpawnFailed`.
    Spawn,
    /// Start the http/tcp readiness probe (no-op for notify and none).
    ProbeReadiness,
    /// Stop probing.
    CancelProbe,
    /// Send `signal` to the main process.
    Signal(Signal),
    /// Send `signal` to every process of the app.
    SignalAll(Signal),
    /// SIGKILL every process of the app (cgroup.kill).
    KillAll,
    /// Arm the app's single timer, replacing any armed one.
    SetTimer { after: Duration, generation: u64 },
    /// Disarm the timer.
    CancelTimer,
}

/// The state of one app, as the machine sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    pub params: Params,
    pub state: AppState,
    /// Why it is in this state, in words a person can act on.
    pub reason: String,
    pub since: Instant,
    /// The main process, while there is one.
    pub pid: Option<u32>,
    /// When the current process was spawned.
    pub started_at: Option<Instant>,
    /// Consecutive failed starts.
    pub failures: u32,
    /// Times the app was started again since it was loaded.
    pub restarts: u32,
    /// The generation of the last timer armed; a `TimerFired` with any other
    /// generation, or while no timer is armed, is stale.
    pub timer_generation: u64,
    /// Whether the shell's timer is armed (set by `SetTimer`, cleared by
    /// `CancelTimer` and by the timer firing).
    pub timer_armed: bool,
    /// Whether `Spawn` was ever emitted: the first spawn is a start, every
    /// later one counts in `restarts`.
    pub ever_spawned: bool,
    /// `Spawn` was emitted and neither `Spawned` nor `SpawnFailed` has come
    /// back yet: a process may be about to exist.
    pub spawn_pending: bool,
    /// What to do once the app is gone; meaningful in `Stopping` only, and
    /// `AfterStop::Stay` everywhere else.
    pub then: AfterStop,
    /// The request (start, stop, restart) that last changed the machine, so
    /// status can say who stopped the app.
    pub cause: Option<Cause>,
    /// During a start-stop restart: the instance that keeps serving until
    /// the new one is ready.
    pub previous: Option<Previous>,
}

/// The instance a start-stop restart keeps running until its successor is
/// ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Previous {
    pub pid: u32,
    pub started_at: Option<Instant>,
}

/// What a `Stopping` app does once its main process has exited and its
/// cgroup is empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterStop {
    /// Become `Stopped`; the reason names `Machine::cause`.
    Stay,
    /// Spawn again (a restart, or a start that came while stopping).
    Start,
    /// Apply the failed-start rule with this reason (readiness timed out).
    FailStart(String),
    /// The main process exited on its own while other processes of the app
    /// were left; decide on restarting once they are gone.
    Decide(Exit),
}

/// How the main process ended, remembered until the exit is decided on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub status: ExitStatus,
    /// From `Spawned` to `MainExited`.
    pub uptime: Duration,
    /// It exited while starting, or sooner than `restart.start_secs`.
    pub failed_start: bool,
}

impl Machine {
    /// A freshly loaded app: `Stopped`, "not started".
    pub fn new(params: Params, now: Instant) -> Machine {
        Machine {
            params,
            state: AppState::Stopped,
            reason: "not started".to_owned(),
            since: now,
            pid: None,
            started_at: None,
            failures: 0,
            restarts: 0,
            timer_generation: 0,
            timer_armed: false,
            ever_spawned: false,
            spawn_pending: false,
            then: AfterStop::Stay,
            cause: None,
            previous: None,
        }
    }
}

impl Event {
    /// The event's kind, as [`TRANSITIONS`] names it.
    pub fn kind(&self) -> EventKind {
        match self {
            Event::Start(_) => EventKind::Start,
            Event::Stop(_) => EventKind::Stop,
            Event::Restart(_) => EventKind::Restart,
            Event::Spawned { .. } => EventKind::Spawned,
            Event::SpawnFailed { .. } => EventKind::SpawnFailed,
            Event::Ready => EventKind::Ready,
            Event::MainExited { .. } => EventKind::MainExited,
            Event::CgroupEmpty => EventKind::CgroupEmpty,
            Event::TimerFired { .. } => EventKind::TimerFired,
            Event::PreviousExited => EventKind::PreviousExited,
        }
    }
}
