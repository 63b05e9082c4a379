//! The per-app state machine: pure, no I/O, no clock of its own.
//!
//! [`step`] maps (machine, event, now) to (machine', effects). The shell in
//! `supervise` carries out the effects and feeds back the events they lead
//! to. The allowed transitions are listed whole in [`TRANSITIONS`]; a test
//! checks that `step` never leaves that table. The behaviour, step by step,
//! is described in the `machine` module; [`counts_as_failed_start`] says which exits
//! are failed starts and [`backoff_delay`] is the delay between them.
//!
//! This module must never do I/O, read the clock or log: time comes in as
//! `now`, and everything the outside world should see goes out as an
//! [`Effect`] or in the returned [`Machine`].

mod backoff;
mod machine;
mod reason;
#[cfg(test)]
mod reason_tests;
#[cfg(test)]
mod tests;
mod transitions;

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::{RestartSpec, Signal};

pub use backoff::{
    backoff_delay, counts_as_failed_start, jittered, FailedStart, STABLE_AFTER_READY,
};
pub use machine::step;
pub use transitions::{EventKind, TRANSITIONS};

/// DESIGN.md's states that the machine enters. The eighth, `invalid`, is
/// not one of them: an app whose file never validated has no machine, and
/// the daemon reports it as [`appvisor_protocol::State::Invalid`] itself.
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
}

impl From<AppState> for appvisor_protocol::State {
    fn from(state: AppState) -> appvisor_protocol::State {
        use appvisor_protocol::State as P;
        match state {
            AppState::Stopped => P::Stopped,
            AppState::Starting => P::Starting,
            AppState::Running => P::Running,
            AppState::Backoff => P::Backoff,
            AppState::Stopping => P::Stopping,
            AppState::Exited => P::Exited,
            AppState::Fatal => P::Fatal,
        }
    }
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
    /// Gone, how unknown: a main process adopted after a crash of the
    /// daemon that spawned it is not this daemon's child, so no wait
    /// status reaches it (its pidfd only says it ended). Counts as a
    /// failure.
    Unknown,
}

/// How one instance is stopped: the stop settings it was spawned with, so
/// a configuration change stops the previous instance its own way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopParams {
    pub signal: Signal,
    pub timeout: Duration,
}

/// The parts of an app's settings that drive its state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    pub restart: RestartSpec,
    /// `readiness.kind = "none"`: running once the process has lived
    /// `start_secs`. Otherwise running once ready (see `needs_notify` and
    /// `needs_probe`).
    pub ready_after_start_secs: bool,
    /// Ready needs `READY=1` from a process of the instance.
    pub needs_notify: bool,
    /// Ready needs the http/tcp probe to pass.
    pub needs_probe: bool,
    /// A probe is configured (as the kind, or as `url`/`address` beside
    /// notify): what `reload` waits for.
    pub has_probe: bool,
    pub readiness_timeout: Duration,
    pub stop: StopParams,
    pub reload_signal: Signal,
}

/// One spawn of the app, from `Effect::Spawn` until its cgroup is empty.
/// Ids grow from 1 and are never reused, so an event about an instance
/// that is gone is recognised and ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InstanceId(pub u64);

impl std::fmt::Display for InstanceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "i{}", self.0)
    }
}

/// A caller waiting for the outcome of its request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

/// A request from the control plane or the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub cause: Cause,
    /// Who waits for the outcome: answered by `Effect::Answer`.
    pub waiter: Option<RequestId>,
}

impl From<Cause> for Request {
    fn from(cause: Cause) -> Request {
        Request {
            cause,
            waiter: None,
        }
    }
}

/// What made an instance ready, one half of [`Params::needs_notify`] and
/// [`Params::needs_probe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadySignal {
    /// `READY=1` from a process of the instance.
    Notify,
    /// The http/tcp probe passed.
    Probe,
}

/// Whose timer: the app's backoff, or one instance's (readiness,
/// `start_secs`, stop or reload timeout).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimerKey {
    Backoff,
    Instance(InstanceId),
}

/// Inputs to the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Start(Request),
    Stop(Request),
    Restart(Request),
    /// `appctl reload`: the reload signal, then wait until the instance's
    /// workers are replaced and it answers again.
    Reload(Request),
    /// The app's file changed: adopt `params` (`config::change` decides
    /// the two flags). `restart`: the change needs a new process, so an
    /// app that is up restarts; otherwise its instances adopt the new stop
    /// settings in place. `start`: an app that is not up starts (its file
    /// autostarts and nobody stopped it by hand).
    Replace {
        params: Params,
        restart: bool,
        start: bool,
    },
    /// The exec helper exec'd the app: it is process `pid`.
    Spawned {
        instance: InstanceId,
        pid: u32,
    },
    /// The spawn failed before exec; `reason` is e.g.
    /// "spawn failed at chdir /srv/x: No such file or directory".
    SpawnFailed {
        instance: InstanceId,
        reason: String,
    },
    /// One half of readiness for `instance`.
    Ready {
        instance: InstanceId,
        signal: ReadySignal,
    },
    /// The processes an instance had when it got the reload signal (all
    /// but its main process) are gone.
    WorkersReplaced {
        instance: InstanceId,
    },
    /// The main process of `instance` ended. `cgroup_empty` says whether
    /// any other process of the instance is left.
    MainExited {
        instance: InstanceId,
        status: ExitStatus,
        cgroup_empty: bool,
    },
    /// The cgroup of `instance` became empty.
    CgroupEmpty {
        instance: InstanceId,
    },
    /// The timer armed by `Effect::SetTimer { key, generation }` fired.
    TimerFired {
        key: TimerKey,
        generation: u64,
    },
}

/// How a request ended, for the caller waiting on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Done as asked.
    Done,
    /// Tried, and it did not go as asked: why.
    Failed(String),
    /// Not tried: the request does not apply in this state (a reload of an
    /// app that does not run).
    Refused(String),
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Spawn a new instance; answer with `Spawned` or `SpawnFailed`.
    Spawn(InstanceId),
    /// Start the http/tcp readiness probe of `instance`; answer with
    /// `Ready { signal: Probe }` once it passes.
    Probe(InstanceId),
    /// Stop probing `instance`.
    CancelProbe(InstanceId),
    /// Send `signal` to the main process of `instance`.
    Signal(InstanceId, Signal),
    /// Send `signal` to every process of `instance`.
    SignalAll(InstanceId, Signal),
    /// SIGKILL every process of `instance` (cgroup.kill).
    KillAll(InstanceId),
    /// Send `signal` to the main process of `instance` after noting its
    /// other processes; answer with `WorkersReplaced` once those are gone.
    Reload(InstanceId, Signal),
    /// Nothing of `instance` is left: release what the shell holds for it
    /// (its cgroup, its probe socket).
    Forget(InstanceId),
    /// Close the app's held `[[listen]]` sockets: it was stopped by
    /// request, and connections must be refused rather than queued. The
    /// next spawn binds them again.
    CloseSockets,
    /// Arm the timer `key`, replacing the one armed under that key.
    SetTimer {
        key: TimerKey,
        after: Duration,
        generation: u64,
    },
    /// Disarm the timer `key`.
    CancelTimer(TimerKey),
    /// Resolve the waiting request.
    Answer(RequestId, Answer),
}

/// The state of one app, as the machine sees it. Its fields are the
/// machine's alone: the shell reads them through the accessors below, and
/// a hand-off freezes and thaws them through [`Machine::settled`] and
/// [`Machine::thaw`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    params: Params,
    /// Where the app is, with what is valid only there.
    phase: Phase,
    /// Why it is in this state, in words a person can act on.
    reason: String,
    since: Instant,
    /// Consecutive failed starts.
    failures: u32,
    /// Times the app was started again since it was loaded.
    restarts: u32,
    /// Instances being stopped beside the phase's: a start-stop restart's
    /// previous one once its successor is ready (or the restart was
    /// overtaken by a stop), and one that died while its successor
    /// started, with processes left. Empty in stopped.
    retired: Vec<Instance>,
    /// The request (start, stop, restart) that last changed the machine, so
    /// status can say who stopped the app.
    cause: Option<Cause>,
    /// Callers waiting for the outcome of their request.
    waiters: Vec<Waiter>,
    /// The id of the last instance spawned (0: none yet).
    last_instance: u64,
    /// The generation of the last timer armed, under any key.
    timer_generation: u64,
    /// Jitter for backoff delays: the state of a small generator seeded by
    /// the shell (0 gives no jitter), so the machine stays deterministic.
    rng: u64,
}

/// Where an app is, carrying what exists only there: [`AppState`] is its
/// projection (what status shows, and what [`TRANSITIONS`] is written in).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Phase {
    /// Nothing of the app is left, by request (or never started). The
    /// default only so `step` can take a phase apart (`mem::take`).
    #[default]
    Stopped,
    /// `current` is spawning or waiting to be ready. `previous`: a
    /// start-stop restart's running instance, serving until `current` is
    /// ready and taking over again if it fails.
    Starting {
        current: Instance,
        previous: Option<Box<RunningInstance>>,
    },
    /// `current` serves; `reload`: a reload under way.
    Running {
        current: RunningInstance,
        reload: Option<ReloadPhase>,
    },
    /// Waiting for the backoff timer of this generation to retry.
    Backoff { timer: u64 },
    /// Waiting for `current`'s processes to be gone, then doing `then`.
    /// `previous`: as in starting, while a start-stop restart's new
    /// instance is being killed.
    ///
    /// `previous` and `then` are boxed (here and in starting): both phases
    /// are brief, and inline they made the phase 232 bytes, which put
    /// every app's `Supervisor` into malloc's next size class.
    Stopping {
        current: Instance,
        previous: Option<Box<RunningInstance>>,
        then: Box<AfterStop>,
    },
    /// Stopping with no current instance left: stopped once the retired
    /// instances are gone (a stop that came while only a start-stop
    /// restart's previous instance was left). Shown as stopping.
    Retiring,
    /// The main process exited and the restart policy says no more.
    Exited,
    /// Too many failed starts in a row (`max_retries`).
    Fatal,
}

impl Phase {
    /// The state status shows.
    pub fn state(&self) -> AppState {
        match self {
            Phase::Stopped => AppState::Stopped,
            Phase::Starting { .. } => AppState::Starting,
            Phase::Running { .. } => AppState::Running,
            Phase::Backoff { .. } => AppState::Backoff,
            Phase::Stopping { .. } | Phase::Retiring => AppState::Stopping,
            Phase::Exited => AppState::Exited,
            Phase::Fatal => AppState::Fatal,
        }
    }

    /// The instance the state is about: spawning or starting in starting,
    /// serving in running, going away in stopping.
    pub fn current(&self) -> Option<Instance> {
        match self {
            Phase::Starting { current, .. } | Phase::Stopping { current, .. } => Some(*current),
            Phase::Running { current, .. } => Some(current.instance()),
            _ => None,
        }
    }

    /// The current instance of a starting or stopping app, whose main
    /// process may still be spawning or have exited (a running app's
    /// cannot).
    fn pending_mut(&mut self) -> Option<&mut Instance> {
        match self {
            Phase::Starting { current, .. } | Phase::Stopping { current, .. } => Some(current),
            _ => None,
        }
    }

    /// The bookkeeping of the current instance, whatever the phase.
    fn tracking(&mut self) -> Option<Tracking<'_>> {
        match self {
            Phase::Starting { current, .. } | Phase::Stopping { current, .. } => Some(Tracking {
                id: current.id,
                stop: &mut current.stop,
                probing: &mut current.probing,
                timer: &mut current.timer,
            }),
            Phase::Running { current, .. } => Some(Tracking {
                id: current.id,
                stop: &mut current.stop,
                probing: &mut current.probing,
                timer: &mut current.timer,
            }),
            _ => None,
        }
    }

    /// A start-stop restart's previous instance, while its successor
    /// starts (or is being killed).
    pub fn previous(&self) -> Option<&RunningInstance> {
        match self {
            Phase::Starting { previous, .. } | Phase::Stopping { previous, .. } => {
                previous.as_deref()
            }
            _ => None,
        }
    }

    fn take_previous(&mut self) -> Option<RunningInstance> {
        match self {
            Phase::Starting { previous, .. } | Phase::Stopping { previous, .. } => {
                previous.take().map(|previous| *previous)
            }
            _ => None,
        }
    }

    /// What a stopping app does once it is gone (retiring: stays
    /// stopped).
    pub fn then(&self) -> Option<&AfterStop> {
        match self {
            Phase::Stopping { then, .. } => Some(then.as_ref()),
            Phase::Retiring => Some(&AfterStop::Stay),
            _ => None,
        }
    }

    /// The generation of the armed backoff timer.
    pub fn backoff_timer(&self) -> Option<u64> {
        match self {
            Phase::Backoff { timer } => Some(*timer),
            _ => None,
        }
    }

    /// The reload under way.
    pub fn reload(&self) -> Option<ReloadPhase> {
        match self {
            Phase::Running { reload, .. } => *reload,
            _ => None,
        }
    }
}

/// A machine with no transition under way, as a hand-off carries it:
/// stopped, exited, fatal, backoff, or running one instance with nothing
/// pending (no waiter, no previous or retired instance, no reload, no
/// timer but the backoff's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    pub state: SettledState,
    pub reason: String,
    pub since: Instant,
    pub failures: u32,
    pub restarts: u32,
    pub cause: Option<Cause>,
    pub last_instance: u64,
    pub timer_generation: u64,
    pub rng: u64,
}

/// The phases a machine can be settled in, with what each carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettledState {
    Stopped,
    Running(SettledInstance),
    /// The backoff timer of this generation is armed.
    Backoff {
        timer: u64,
    },
    Exited,
    Fatal,
}

/// The running instance of a settled machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SettledInstance {
    pub id: InstanceId,
    pub pid: u32,
    /// When its main process was exec'd.
    pub spawned: Instant,
    pub ready_at: Option<Instant>,
    pub notified: bool,
    pub probed: bool,
    pub stop: StopParams,
}

/// The fields of the current instance that timers, probes and stop
/// settings touch, whichever type the phase holds it as.
struct Tracking<'a> {
    id: InstanceId,
    stop: &'a mut StopParams,
    probing: &'a mut bool,
    timer: &'a mut Option<u64>,
}

/// One instance of the app, in any phase of its life: spawning, running or
/// exited (see [`RunningInstance`] for the one phase where only a running,
/// ready instance is valid).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Instance {
    pub id: InstanceId,
    pub main: Main,
    /// The stop settings it was spawned with.
    pub stop: StopParams,
    /// `READY=1` came from it.
    pub notified: bool,
    /// Its probe passed.
    pub probed: bool,
    /// Its probe runs.
    pub probing: bool,
    /// When it became running.
    pub ready_at: Option<Instant>,
    /// The generation of its armed timer (readiness, start_secs, stop or
    /// reload timeout).
    pub timer: Option<u64>,
}

/// An instance whose main process runs and that became ready: what
/// running holds, and so what a start-stop restart's previous instance is
/// (it served until its successor was spawned). Its type says what an
/// [`Instance`] can only claim: a pid, an exec time and a ready time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunningInstance {
    pub id: InstanceId,
    /// Its main process.
    pub pid: u32,
    /// When its main process was exec'd.
    pub spawned: Instant,
    /// When it became running.
    pub ready_at: Instant,
    /// The stop settings it was spawned with.
    pub stop: StopParams,
    /// `READY=1` came from it.
    pub notified: bool,
    /// Its probe passed.
    pub probed: bool,
    /// Its probe runs (a reload's).
    pub probing: bool,
    /// The generation of its armed timer (the reload timeout).
    pub timer: Option<u64>,
}

impl RunningInstance {
    /// The same instance, in the type every phase can hold: for stopping
    /// it, retiring it, or showing it.
    pub fn instance(&self) -> Instance {
        Instance {
            id: self.id,
            main: Main::Running {
                pid: self.pid,
                since: self.spawned,
            },
            stop: self.stop,
            notified: self.notified,
            probed: self.probed,
            probing: self.probing,
            ready_at: Some(self.ready_at),
            timer: self.timer,
        }
    }
}

/// The main process of an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Main {
    /// `Spawn` was emitted; neither `Spawned` nor `SpawnFailed` came back.
    Spawning,
    /// Process `pid`, exec'd at `since`.
    Running { pid: u32, since: Instant },
    /// It exited (or the spawn failed); other processes may be left.
    Exited,
}

/// Where a reload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadPhase {
    /// Signalled; the workers it had are not all gone.
    Replacing,
    /// They are gone; waiting for the probe to pass.
    Probing,
}

/// A caller waiting on a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Waiter {
    pub id: RequestId,
    pub action: WaitFor,
}

/// What a waiting caller asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitFor {
    /// start or restart: a new instance running.
    Running,
    /// stop: stopped.
    Stopped,
    /// reload: the instance's workers replaced and serving.
    Reloaded,
}

/// What a stopping app does once its main process has exited and its
/// cgroup is empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterStop {
    /// Become stopped; the reason names the cause of the stop.
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
    /// Whether, and why, it counts as a failed start ([`counts_as_failed_start`]).
    pub failed_start: Option<FailedStart>,
}

impl Machine {
    /// A freshly loaded app: `Stopped`, "not started". `seed` drives the
    /// backoff jitter (0: none).
    pub fn new(params: Params, now: Instant, seed: u64) -> Machine {
        Machine {
            params,
            phase: Phase::Stopped,
            reason: "not started".to_owned(),
            since: now,
            failures: 0,
            restarts: 0,
            retired: Vec::new(),
            cause: None,
            waiters: Vec::new(),
            last_instance: 0,
            timer_generation: 0,
            rng: seed,
        }
    }

    /// A machine handed over settled (see [`Machine::settled`]), under
    /// `params`. A running instance handed over with no ready time (no
    /// daemon writes one so, but the document allows it) counts as ready
    /// since its spawn.
    pub fn thaw(params: Params, settled: Settled) -> Machine {
        let phase = match settled.state {
            SettledState::Stopped => Phase::Stopped,
            SettledState::Exited => Phase::Exited,
            SettledState::Fatal => Phase::Fatal,
            SettledState::Backoff { timer } => Phase::Backoff { timer },
            SettledState::Running(i) => Phase::Running {
                current: RunningInstance {
                    id: i.id,
                    pid: i.pid,
                    spawned: i.spawned,
                    ready_at: i.ready_at.unwrap_or(i.spawned),
                    stop: i.stop,
                    notified: i.notified,
                    probed: i.probed,
                    probing: false,
                    timer: None,
                },
                reload: None,
            },
        };
        Machine {
            params,
            phase,
            reason: settled.reason,
            since: settled.since,
            failures: settled.failures,
            restarts: settled.restarts,
            retired: Vec::new(),
            cause: settled.cause,
            waiters: Vec::new(),
            last_instance: settled.last_instance,
            timer_generation: settled.timer_generation,
            rng: settled.rng,
        }
    }

    /// The machine as a hand-off carries it, if no transition is under
    /// way; `None` otherwise.
    pub fn settled(&self) -> Option<Settled> {
        if !self.waiters.is_empty() || !self.retired.is_empty() {
            return None;
        }
        let state = match &self.phase {
            Phase::Stopped => SettledState::Stopped,
            Phase::Exited => SettledState::Exited,
            Phase::Fatal => SettledState::Fatal,
            Phase::Backoff { timer } => SettledState::Backoff { timer: *timer },
            Phase::Running {
                current,
                reload: None,
            } if current.timer.is_none() => SettledState::Running(SettledInstance {
                id: current.id,
                pid: current.pid,
                spawned: current.spawned,
                ready_at: Some(current.ready_at),
                notified: current.notified,
                probed: current.probed,
                stop: current.stop,
            }),
            Phase::Running { .. }
            | Phase::Starting { .. }
            | Phase::Stopping { .. }
            | Phase::Retiring => return None,
        };
        Some(Settled {
            state,
            reason: self.reason.clone(),
            since: self.since,
            failures: self.failures,
            restarts: self.restarts,
            cause: self.cause.clone(),
            last_instance: self.last_instance,
            timer_generation: self.timer_generation,
            rng: self.rng,
        })
    }

    /// The state status shows.
    pub fn state(&self) -> AppState {
        self.phase.state()
    }

    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// When the state began.
    pub fn since(&self) -> Instant {
        self.since
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }

    pub fn restarts(&self) -> u32 {
        self.restarts
    }

    /// The instance the state is about (see [`Phase::current`]).
    pub fn current(&self) -> Option<Instance> {
        self.phase.current()
    }

    /// Whether `id` is the current instance.
    pub fn is_current(&self, id: InstanceId) -> bool {
        self.current().is_some_and(|i| i.id == id)
    }

    /// Whether the app is stopping in order to fail its start (readiness
    /// timed out).
    pub fn failing_start(&self) -> bool {
        matches!(self.phase.then(), Some(AfterStop::FailStart(_)))
    }

    /// The main process of the current instance, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.current()?.pid()
    }

    /// When the current instance's main process was exec'd, while it runs.
    pub fn started_at(&self) -> Option<Instant> {
        match self.current()?.main {
            Main::Running { since, .. } => Some(since),
            Main::Spawning | Main::Exited => None,
        }
    }
}

impl Instance {
    /// Its main process, while it runs.
    pub fn pid(&self) -> Option<u32> {
        match self.main {
            Main::Running { pid, .. } => Some(pid),
            Main::Spawning | Main::Exited => None,
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
            Event::Reload(_) => EventKind::Reload,
            Event::Replace { .. } => EventKind::Replace,
            Event::Spawned { .. } => EventKind::Spawned,
            Event::SpawnFailed { .. } => EventKind::SpawnFailed,
            Event::Ready { .. } => EventKind::Ready,
            Event::WorkersReplaced { .. } => EventKind::WorkersReplaced,
            Event::MainExited { .. } => EventKind::MainExited,
            Event::CgroupEmpty { .. } => EventKind::CgroupEmpty,
            Event::TimerFired { .. } => EventKind::TimerFired,
        }
    }
}
