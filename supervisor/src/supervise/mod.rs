//! The task per app: it owns the app's processes, pipes, timer, readiness
//! check and cgroup watch, feeds what happens to the pure state machine in
//! `app`, and carries out the effects the machine returns.
//!
//! Nothing here decides policy: every decision is `app::step`'s. One app's
//! task never touches another app's resources, so a failure in one (a
//! spawn error, a hung stop, a flood of output) stays with that app.

pub mod reaper;

use std::collections::VecDeque;
use std::future::Future;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use appvisor_protocol::{AppStatus, StoppedBy};
use nix::sys::signal::{kill, killpg, Signal as NixSignal};
use nix::unistd::Pid;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Sleep;
use tracing::Instrument;

use crate::app::{self, AfterStop, AppState, Cause, Effect, Event, ExitStatus, Machine, Params};
use crate::audit::{unix_now, Events};
use crate::cgroup::{AppCgroup, AppLimits, CgroupRoot, CgroupWatcher, LimitRoot};
use crate::config::resolve::ResolvedApp;
use crate::config::{ReadinessKind, Signal};
use crate::listen::HeldSockets;
use crate::logs::{AppLogs, Stream};
use crate::readiness::{self, Check, NotifySocket};
use crate::sandbox::{self, LandlockRecord, SandboxInputs, SandboxPlan};
use crate::spawn::{self, PlanInputs, PlanUser, SpawnPlan};
use reaper::Reaper;

/// What every app's task shares with the daemon.
#[derive(Debug)]
pub struct Shared {
    pub reaper: Arc<Reaper>,
    pub cgroups: Option<CgroupRoot>,
    pub watcher: Option<CgroupWatcher>,
    pub events: Events,
    /// Where per-app NOTIFY_SOCKETs live.
    pub notify_dir: PathBuf,
    /// The daemon's LANG, passed on to apps.
    pub lang: Option<String>,
    /// Where `[limits]` go besides the v2 cgroup (v1 hierarchies).
    pub limits: LimitRoot,
    /// `APPVISOR_LANDLOCK_ABI_MAX`, read once at start (for tests).
    pub landlock_abi_max: Option<u8>,
}

/// Requests from the control plane and the daemon.
#[derive(Debug)]
pub enum Command {
    /// start, stop or restart; answers with the `starts` count whose arrival
    /// means the action's spawn happened (see [`Snapshot::starts`]).
    Control {
        event: Event,
        stopped_by: Option<StoppedBy>,
        reply: oneshot::Sender<u64>,
    },
    /// Send a signal to the main process.
    Signal {
        signal: Signal,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// Adopt new settings; restart if the app is up.
    Replace {
        app: Arc<ResolvedApp>,
        reply: oneshot::Sender<()>,
    },
    /// Stop for good and end the task once nothing of the app is left.
    Shutdown { cause: Cause },
}

/// The sending side of an app task's commands. Commands travel boxed: the
/// channel allocates its slots 32 at a time as soon as it exists, for every
/// app, and a boxed slot is a tenth of a `Command`.
#[derive(Debug, Clone)]
pub struct Commands(mpsc::UnboundedSender<Box<Command>>);

/// The app's task has ended; nothing can be sent to it any more.
#[derive(Debug)]
pub struct TaskGone;

impl Commands {
    pub fn send(&self, command: Command) -> Result<(), TaskGone> {
        self.0.send(Box::new(command)).map_err(|_| TaskGone)
    }
}

/// What the control plane reads: the public status plus counters for
/// waiting on outcomes.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub state: AppState,
    pub status: AppStatus,
    /// Spawns so far; an action waits for this to reach its target.
    pub starts: u64,
    /// Starts that did not become ready within the readiness timeout.
    pub readiness_failures: u64,
    /// The settings the app runs with.
    pub app: Arc<ResolvedApp>,
    /// What the exec helper enforced at the last spawn.
    pub landlock: Option<LandlockRecord>,
}

/// What confines the app of `snapshot` (`GET /v1/apps/NAME/security`).
pub fn security(snapshot: &Snapshot, shared: &Shared) -> appvisor_protocol::AppSecurity {
    let plan = SandboxPlan::build(&snapshot.app.spec, &sandbox_inputs(&snapshot.app, shared));
    sandbox::exposure::report(
        &snapshot.app,
        &plan,
        snapshot.landlock.as_ref(),
        sandbox::landlock::kernel_abi(),
    )
}

fn sandbox_inputs(app: &ResolvedApp, shared: &Shared) -> SandboxInputs {
    SandboxInputs {
        landlock_abi_max: shared.landlock_abi_max,
        python_home: sandbox::app_venv(&app.spec).and_then(sandbox::python_home),
    }
}

/// The control plane's end of an app's task.
#[derive(Debug)]
pub struct Handle {
    pub commands: Commands,
    pub snapshot: watch::Receiver<Snapshot>,
    pub logs: Arc<AppLogs>,
    pub task: JoinHandle<()>,
}

/// Starts the task of one app. `autostart` starts it at once.
pub fn start(
    app: Arc<ResolvedApp>,
    logs: Arc<AppLogs>,
    shared: Arc<Shared>,
    autostart: bool,
    stopped_by: Option<StoppedBy>,
) -> Handle {
    let now = Instant::now();
    let machine = Machine::new(params(&app), now);
    let (commands, rx) = mpsc::unbounded_channel();
    let app_for_snapshot = app.clone();
    let mut sup = Supervisor {
        machine,
        since_wall: SystemTime::now(),
        app,
        shared,
        logs: logs.clone(),
        cgroup: None,
        leaf: None,
        previous: None,
        limits: None,
        oom_baseline: None,
        landlock: None,
        notify: None,
        listen: None,
        child: None,
        timer: None,
        probe: None,
        starts: 0,
        readiness_failures: 0,
        stopped_by,
        release: None,
        notify_status: None,
        shutdown: false,
        snapshot: Arc::new(watch::channel(placeholder_snapshot(&app_for_snapshot)).0),
        pending: VecDeque::new(),
    };
    sup.publish(false);
    let snapshot = sup.snapshot.subscribe();
    let span = tracing::info_span!("app", app = %sup.app.spec.name);
    let guard = PanicGuard {
        name: sup.app.spec.name.to_string(),
        shared: sup.shared.clone(),
        snapshot: sup.snapshot.clone(),
    };
    // `run` itself, not an async block around it: a block would keep its
    // own copy of the moved-in `Supervisor` beside `run`'s.
    let inner = tokio::spawn(sup.run(rx, autostart).instrument(span.clone()));
    let task = tokio::spawn(guard.watch(inner).instrument(span));
    Handle {
        commands: Commands(commands),
        snapshot,
        logs,
        task,
    }
}

fn params(app: &ResolvedApp) -> Params {
    let spec = &app.spec;
    Params {
        restart: spec.restart.clone(),
        ready_after_start_secs: spec.readiness.kind == ReadinessKind::None,
        readiness_timeout: spec.readiness.timeout,
        stop_signal: spec.stop.signal,
        stop_timeout: spec.stop.timeout,
    }
}

fn placeholder_snapshot(app: &Arc<ResolvedApp>) -> Snapshot {
    Snapshot {
        state: AppState::Stopped,
        starts: 0,
        readiness_failures: 0,
        app: app.clone(),
        landlock: None,
        status: bare_status("", appvisor_protocol::State::Stopped, String::new()),
    }
}

/// A status with no process, no history and no settings: for an app known
/// only by name (an invalid file), and before a task publishes its first.
pub fn bare_status(name: &str, state: appvisor_protocol::State, reason: String) -> AppStatus {
    AppStatus {
        name: name.to_owned(),
        state,
        reason,
        pid: None,
        uptime_secs: None,
        since: 0,
        restarts: 0,
        failures: 0,
        description: String::new(),
        app_groups: Vec::new(),
        user: String::new(),
        directory: String::new(),
        release: None,
        autostart: false,
        stopped_by: None,
        config_error: None,
    }
}

/// Resolves once the exec helper has exec'd the app or reported why not.
type ReportFuture =
    Pin<Box<dyn Future<Output = Result<spawn::Applied, spawn::SpawnFailure>> + Send>>;

/// The live process of an app.
struct Child {
    pid: u32,
    exit: oneshot::Receiver<ExitStatus>,
    /// Until the exec helper reports: `Ok` once the app's program runs.
    report: Option<ReportFuture>,
    pipes: Vec<JoinHandle<()>>,
}

struct Supervisor {
    machine: Machine,
    since_wall: SystemTime,
    app: Arc<ResolvedApp>,
    shared: Arc<Shared>,
    logs: Arc<AppLogs>,
    /// The app's cgroup; each instance runs in a leaf below it.
    cgroup: Option<AppCgroup>,
    /// The current instance's cgroup, until the next spawn replaces it.
    leaf: Option<Leaf>,
    /// During and just after a start-stop restart: the instance that served
    /// while its successor started.
    previous: Option<PreviousInstance>,
    /// Where the app's `[limits]` are written.
    limits: Option<AppLimits>,
    /// The memory cgroup's OOM-kill count at the last spawn.
    oom_baseline: Option<u64>,
    /// What the exec helper enforced at the last spawn.
    landlock: Option<LandlockRecord>,
    notify: Option<NotifySocket>,
    /// The `[[listen]]` sockets, bound at the first spawn and kept across
    /// restarts until the app is removed or its listen set changes.
    listen: Option<HeldSockets>,
    child: Option<Child>,
    timer: Option<(u64, Pin<Box<Sleep>>)>,
    probe: Option<JoinHandle<Result<(), readiness::ProbeError>>>,
    starts: u64,
    readiness_failures: u64,
    stopped_by: Option<StoppedBy>,
    release: Option<String>,
    notify_status: Option<String>,
    shutdown: bool,
    /// Shared with the task's guard, which reports a panic here.
    snapshot: Arc<watch::Sender<Snapshot>>,
    /// Events produced by effects, fed after the current step.
    pending: VecDeque<Event>,
}

/// The cgroup of one instance and the watch on its emptiness.
struct Leaf {
    cgroup: AppCgroup,
    /// The cgroup's directory, open, for `clone3(CLONE_INTO_CGROUP)`.
    dir: OwnedFd,
    /// `None` without a watcher, or once the watcher is gone.
    populated: Option<watch::Receiver<bool>>,
}

/// The instance a start-stop restart keeps serving.
struct PreviousInstance {
    pid: u32,
    /// Until the main process exits.
    exit: Option<oneshot::Receiver<ExitStatus>>,
    leaf: Option<Leaf>,
    /// Armed by `StopPrevious`: SIGKILL to all of it when it fires.
    kill_at: Option<Pin<Box<Sleep>>>,
    /// `StopPrevious` was carried out.
    stopping: bool,
}

/// What woke the task up.
enum Wake {
    Command(Option<Box<Command>>),
    Exited(ExitStatus),
    Reported(Result<spawn::Applied, spawn::SpawnFailure>),
    Timer(u64),
    /// `None`: the probe task was cancelled.
    Probe(Option<Result<(), readiness::ProbeError>>),
    Notify(Result<readiness::NotifyMessage, readiness::ReadinessError>),
    /// `None`: the watcher is gone.
    Populated(Option<bool>),
    PreviousExited(ExitStatus),
    /// The previous instance's cgroup emptied (`Some(false)`), or its watch
    /// ended (`None`).
    PreviousPopulated(Option<bool>),
    PreviousKillTime,
}

impl Supervisor {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Box<Command>>, autostart: bool) {
        if autostart {
            self.feed(Event::Start(Cause::Autostart));
        }
        loop {
            if self.shutdown && self.is_down() {
                self.cleanup();
                return;
            }
            let wake = self.next(&mut commands).await;
            match wake {
                Wake::Command(None) => {
                    // The daemon dropped the handle: treat as shutdown.
                    self.begin_shutdown(Cause::Shutdown);
                }
                Wake::Command(Some(cmd)) => self.command(*cmd),
                Wake::Reported(outcome) => self.reported(outcome),
                Wake::Exited(status) => self.exited(status).await,
                Wake::Timer(generation) => {
                    self.timer = None;
                    self.feed(Event::TimerFired { generation });
                }
                Wake::Probe(result) => {
                    self.probe = None;
                    match result {
                        Some(Ok(())) => self.feed(Event::Ready),
                        Some(Err(err)) => tracing::info!(error = %err, "readiness probe gave up"),
                        None => {}
                    }
                }
                Wake::Notify(Ok(msg)) => self.notified(msg),
                Wake::Notify(Err(err)) if err.is_refused_message() => {
                    tracing::warn!(error = %err, "refused a notify message");
                }
                Wake::Notify(Err(err)) => {
                    tracing::warn!(error = %err, "notify socket failed; readiness must come from the timeout");
                    self.notify = None;
                }
                Wake::Populated(Some(false)) => self.feed(Event::CgroupEmpty),
                Wake::Populated(Some(true)) => {}
                Wake::Populated(None) => {
                    tracing::error!("the cgroup watcher stopped; checking emptiness on exit only");
                    let empty = self.leaf.as_mut().is_some_and(|leaf| {
                        leaf.populated = None;
                        !leaf.cgroup.is_populated().unwrap_or(true)
                    });
                    if empty {
                        self.feed(Event::CgroupEmpty);
                    }
                }
                Wake::PreviousExited(status) => self.previous_exited(status),
                Wake::PreviousPopulated(populated) => self.previous_populated(populated),
                Wake::PreviousKillTime => {
                    if let Some(previous) = self.previous.as_mut() {
                        previous.kill_at = None;
                        tracing::warn!(
                            pid = previous.pid,
                            "the previous instance did not stop in time, killing it"
                        );
                        kill_instance(previous.leaf.as_ref(), previous.pid, NixSignal::SIGKILL);
                    }
                }
            }
        }
    }

    /// Waits for the next thing that needs handling.
    async fn next(&mut self, commands: &mut mpsc::UnboundedReceiver<Box<Command>>) -> Wake {
        let (mut report, mut exit) = match self.child.as_mut() {
            Some(Child { report, exit, .. }) => (report.as_mut(), Some(exit)),
            None => (None, None),
        };
        // The exit waits until the report is in: an app that dies at once
        // must still be seen as spawned (or as a failed spawn) first.
        let has_report = report.is_some();
        let has_exit = exit.is_some() && !has_report;
        let mut populated = self.leaf.as_mut().and_then(|leaf| leaf.populated.as_mut());
        let (mut prev_exit, mut prev_populated, mut prev_kill) = match self.previous.as_mut() {
            Some(p) => (
                p.exit.as_mut(),
                p.leaf.as_mut().and_then(|leaf| leaf.populated.as_mut()),
                p.kill_at.as_mut(),
            ),
            None => (None, None, None),
        };
        tokio::select! {
            cmd = commands.recv(), if !self.shutdown => Wake::Command(cmd),
            outcome = async { report.as_mut().expect("guarded").await }, if has_report => Wake::Reported(outcome),
            status = async { exit.as_mut().expect("guarded").await }, if has_exit => {
                // A dropped sender means the reaper is gone: assume the worst.
                Wake::Exited(status.unwrap_or(ExitStatus::Signal(libc::SIGKILL)))
            }
            generation = async {
                let (generation, sleep) = self.timer.as_mut().expect("guarded");
                sleep.as_mut().await;
                *generation
            }, if self.timer.is_some() => Wake::Timer(generation),
            result = async {
                self.probe.as_mut().expect("guarded").await
            }, if self.probe.is_some() => Wake::Probe(result.ok()),
            msg = async { self.notify.as_ref().expect("guarded").recv().await }, if self.notify.is_some() => Wake::Notify(msg),
            // Each branch's future is built even when its guard is false:
            // the `expect`s must sit inside `async` blocks, which only run
            // when polled.
            populated = async { watch_changed(populated.as_mut().expect("guarded")).await }, if populated.is_some() => {
                Wake::Populated(populated)
            }
            status = async { prev_exit.as_mut().expect("guarded").await }, if prev_exit.is_some() => {
                Wake::PreviousExited(status.unwrap_or(ExitStatus::Signal(libc::SIGKILL)))
            }
            populated = async { watch_changed(prev_populated.as_mut().expect("guarded")).await }, if prev_populated.is_some() => {
                Wake::PreviousPopulated(populated)
            }
            () = async { prev_kill.as_mut().expect("guarded").as_mut().await }, if prev_kill.is_some() => {
                Wake::PreviousKillTime
            }
        }
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Control {
                event,
                stopped_by,
                reply,
            } => {
                match &event {
                    Event::Stop(_) => self.stopped_by = stopped_by,
                    Event::Start(_) | Event::Restart(_) => self.stopped_by = None,
                    _ => {}
                }
                self.feed(event);
                let _ = reply.send(self.target_starts());
            }
            Command::Signal { signal, reply } => {
                let result = match self.machine.pid {
                    Some(pid) => {
                        kill(Pid::from_raw(pid as i32), signal.0).map_err(|e| e.desc().to_owned())
                    }
                    None => Err(format!("{} has no running process", self.app.spec.name)),
                };
                let _ = reply.send(result);
            }
            Command::Replace { app, reply } => {
                let was_up = matches!(
                    self.machine.state,
                    AppState::Starting | AppState::Running | AppState::Backoff
                );
                let start_now = was_up || (app.spec.autostart && self.stopped_by.is_none());
                self.app = app;
                self.machine.params = params(&self.app);
                self.notify = None;
                self.logs.update_spec(&self.app.spec.logs);
                if start_now {
                    self.feed(Event::Restart(Cause::Config));
                } else {
                    self.publish(false);
                }
                let _ = reply.send(());
            }
            Command::Shutdown { cause } => self.begin_shutdown(cause),
        }
    }

    /// The `starts` value that means the last control event's spawn has
    /// happened: now if it spawned already, one more if it waits for a stop.
    fn target_starts(&self) -> u64 {
        match self.machine.state {
            AppState::Stopping => self.starts + 1,
            _ => self.starts,
        }
    }

    fn begin_shutdown(&mut self, cause: Cause) {
        self.shutdown = true;
        self.feed(Event::Stop(cause));
    }

    fn is_down(&self) -> bool {
        self.child.is_none()
            && self.previous.is_none()
            && !matches!(
                self.machine.state,
                AppState::Stopping | AppState::Starting | AppState::Running
            )
    }

    fn reported(&mut self, outcome: Result<spawn::Applied, spawn::SpawnFailure>) {
        let Some(child) = self.child.as_mut() else {
            return;
        };
        child.report = None;
        match outcome {
            Ok(applied) => {
                let pid = child.pid;
                tracing::info!(pid, release = self.release.as_deref(), "spawned");
                if let Some(record) = applied
                    .landlock
                    .as_ref()
                    .filter(|r| !r.not_enforced.is_empty())
                {
                    let missing: Vec<String> =
                        record.not_enforced.iter().map(|f| f.to_string()).collect();
                    tracing::warn!(
                        abi = record.abi,
                        status = record.status.as_str(),
                        not_enforced = missing.join(", "),
                        "landlock is not fully enforced (landlock = \"best-effort\")"
                    );
                }
                self.landlock = applied.landlock;
                self.feed(Event::Spawned { pid });
            }
            Err(failure) => {
                // The helper exits at once after reporting; its exit is
                // reaped but means nothing more.
                self.child = None;
                self.feed(Event::SpawnFailed {
                    reason: failure.to_string(),
                });
            }
        }
    }

    async fn exited(&mut self, status: ExitStatus) {
        let Some(child) = self.child.take() else {
            return;
        };
        let cgroup_empty = match &self.leaf {
            Some(leaf) => !leaf.cgroup.is_populated().unwrap_or(false),
            None => {
                // Without a cgroup the process group is all we can find.
                let _ = killpg(Pid::from_raw(child.pid as i32), NixSignal::SIGKILL);
                true
            }
        };
        if cgroup_empty {
            // Nobody holds the write ends any more: let the capture tasks
            // read what the app wrote last (often the traceback that says
            // why it died) before the exit becomes a reason and a failure
            // report with the last log lines.
            drain_output(child.pipes).await;
        }
        // Otherwise a daemonized grandchild may keep the pipes open: the
        // capture tasks end by themselves once it has gone.
        let status = self.memory_limit_kill(status);
        tracing::info!(
            pid = child.pid,
            ?status,
            cgroup_empty,
            "main process exited"
        );
        self.feed(Event::MainExited {
            status,
            cgroup_empty,
        });
    }

    /// A SIGKILL while the memory cgroup's OOM-kill count rose since the
    /// spawn is the memory limit's doing.
    fn memory_limit_kill(&self, status: ExitStatus) -> ExitStatus {
        let (ExitStatus::Signal(libc::SIGKILL), Some(limit)) =
            (status, self.app.spec.limits.memory)
        else {
            return status;
        };
        let now = self.limits.as_ref().and_then(AppLimits::oom_kills);
        match (now, self.oom_baseline) {
            (Some(now), Some(before)) if now > before => ExitStatus::MemoryLimit { limit },
            (Some(now), None) if now > 0 => ExitStatus::MemoryLimit { limit },
            _ => status,
        }
    }

    fn notified(&mut self, msg: readiness::NotifyMessage) {
        // Only the current instance may say it is ready: during a
        // start-stop restart the previous one is still around.
        let from_app = match &self.leaf {
            Some(leaf) => leaf.cgroup.contains_pid(msg.pid),
            None => Some(msg.pid) == self.machine.pid,
        };
        if !from_app {
            tracing::warn!(
                sender.pid = msg.pid,
                sender.uid = msg.uid,
                "ignoring a notify message from outside the app"
            );
            return;
        }
        if let Some(status) = msg.status() {
            self.notify_status = Some(status.to_owned());
        }
        if msg.is_ready() {
            self.feed(Event::Ready);
        } else {
            self.publish(false);
        }
    }

    /// Steps the state machine with `event` and carries out its effects,
    /// then any events those effects produced (a spawn that failed at once).
    fn feed(&mut self, event: Event) {
        let before = self.machine.state;
        self.pending.push_back(event);
        while let Some(event) = self.pending.pop_front() {
            let (machine, effects) = app::step(&self.machine, event, Instant::now());
            // Only the readiness timeout stops a start to fail it.
            if !matches!(self.machine.then, AfterStop::FailStart(_))
                && matches!(machine.then, AfterStop::FailStart(_))
            {
                self.readiness_failures += 1;
            }
            self.machine = machine;
            for effect in effects {
                self.effect(effect);
            }
        }
        let changed = self.machine.state != before;
        if changed {
            self.since_wall = SystemTime::now();
            if self.machine.state != AppState::Running {
                self.notify_status = None;
            }
            tracing::info!(from = ?before, to = ?self.machine.state, reason = %self.machine.reason, "state changed");
        }
        self.publish(changed);
    }

    fn effect(&mut self, effect: Effect) {
        match effect {
            Effect::Restore => self.restore(),
            Effect::Retire => self.retire(),
            Effect::StopPrevious => self.stop_previous(),
            Effect::Spawn => self.spawn(),
            Effect::ProbeReadiness => self.start_probe(),
            Effect::CancelProbe => {
                if let Some(probe) = self.probe.take() {
                    probe.abort();
                }
            }
            Effect::Signal(signal) => {
                if let Some(pid) = self.machine.pid {
                    let _ = kill(Pid::from_raw(pid as i32), signal.0);
                }
            }
            Effect::SignalAll(signal) => self.signal_all(signal.0),
            Effect::KillAll => self.signal_all(NixSignal::SIGKILL),
            Effect::SetTimer { after, generation } => {
                self.timer = Some((generation, Box::pin(tokio::time::sleep(after))));
            }
            Effect::CancelTimer => self.timer = None,
        }
    }

    /// Signals every process of the current instance.
    fn signal_all(&mut self, signal: NixSignal) {
        if let Some(pid) = self.machine.pid.or(self.child.as_ref().map(|c| c.pid)) {
            kill_instance(self.leaf.as_ref(), pid, signal);
        } else if let Some(leaf) = &self.leaf {
            kill_instance(Some(leaf), 0, signal);
        }
    }

    /// `Effect::Retire`: the current instance keeps running as the previous
    /// one; the next spawn gets a new leaf.
    fn retire(&mut self) {
        let Some(child) = self.child.take() else {
            return;
        };
        self.previous = Some(PreviousInstance {
            pid: child.pid,
            exit: Some(child.exit),
            leaf: self.leaf.take(),
            kill_at: None,
            stopping: false,
        });
    }

    /// `Effect::StopPrevious`: the stop signal now, SIGKILL after the stop
    /// timeout.
    fn stop_previous(&mut self) {
        let signal = self.app.spec.stop.signal.0;
        let timeout = self.app.spec.stop.timeout;
        let Some(previous) = self.previous.as_mut() else {
            return;
        };
        previous.stopping = true;
        if previous.exit.is_some() {
            // Like any stop: the signal goes to the main process, which
            // stops its workers its own way.
            let _ = kill(Pid::from_raw(previous.pid as i32), signal);
        } else {
            kill_instance(previous.leaf.as_ref(), previous.pid, signal);
        }
        previous.kill_at = Some(Box::pin(tokio::time::sleep(timeout)));
        tracing::info!(pid = previous.pid, "stopping the previous instance");
        self.forget_previous_if_gone();
    }

    /// `Effect::Restore`: the new instance failed; the previous one, still
    /// serving, is the current one again.
    fn restore(&mut self) {
        let Some(previous) = self.previous.take() else {
            return;
        };
        self.child = None;
        if let Some(failed) = self.leaf.take() {
            self.remove_leaf(failed);
        }
        self.leaf = previous.leaf;
        match previous.exit {
            Some(exit) => {
                self.child = Some(Child {
                    pid: previous.pid,
                    exit,
                    report: None,
                    pipes: Vec::new(),
                })
            }
            None => tracing::error!(
                pid = previous.pid,
                "restored an instance whose exit was already seen"
            ),
        }
    }

    fn previous_exited(&mut self, status: ExitStatus) {
        let Some(previous) = self.previous.as_mut() else {
            return;
        };
        previous.exit = None;
        tracing::info!(pid = previous.pid, ?status, "the previous instance exited");
        if !previous.stopping {
            // It died while its successor was starting: nothing is left to
            // fall back on; kill whatever it left behind.
            previous.stopping = true;
            kill_instance(previous.leaf.as_ref(), previous.pid, NixSignal::SIGKILL);
            self.feed(Event::PreviousExited);
        }
        self.forget_previous_if_gone();
    }

    fn previous_populated(&mut self, populated: Option<bool>) {
        if let Some(leaf) = self.previous.as_mut().and_then(|p| p.leaf.as_mut()) {
            if populated.is_none() {
                leaf.populated = None;
            }
        }
        self.forget_previous_if_gone();
    }

    /// Drops the previous instance once its main process has exited and
    /// its cgroup is empty.
    fn forget_previous_if_gone(&mut self) {
        let gone = self.previous.as_ref().is_some_and(|p| {
            p.stopping
                && p.exit.is_none()
                && p.leaf
                    .as_ref()
                    .is_none_or(|leaf| !leaf.cgroup.is_populated().unwrap_or(false))
        });
        if gone {
            if let Some(leaf) = self.previous.take().and_then(|p| p.leaf) {
                self.remove_leaf(leaf);
            }
        }
    }

    fn remove_leaf(&self, leaf: Leaf) {
        if let Some(watcher) = &self.shared.watcher {
            watcher.unwatch(&leaf.cgroup);
        }
        if let Err(err) = leaf.cgroup.remove() {
            tracing::debug!(error = %err, "removing an instance cgroup");
        }
    }

    fn start_probe(&mut self) {
        let check = match &self.app.spec.readiness.kind {
            ReadinessKind::Http { url } => Check::Http(url.clone()),
            ReadinessKind::Tcp { address } => Check::Tcp(*address),
            ReadinessKind::Notify | ReadinessKind::None => return,
        };
        let deadline = tokio::time::Instant::now() + self.app.spec.readiness.timeout;
        self.probe = Some(tokio::spawn(readiness::wait_until_ready(check, deadline)));
    }

    /// Sets up what a spawn needs that lives across spawns (cgroup, notify
    /// socket), then spawns through the exec helper.
    fn spawn(&mut self) {
        self.starts += 1;
        match self.try_spawn() {
            Ok(child) => self.child = Some(child),
            Err(reason) => {
                tracing::warn!(%reason, "spawn failed");
                self.pending.push_back(Event::SpawnFailed { reason });
            }
        }
    }

    fn try_spawn(&mut self) -> Result<Child, String> {
        let spec = &self.app.spec;
        if self.cgroup.is_none() {
            if let Some(root) = &self.shared.cgroups {
                let cg = root
                    .app(spec.name.as_str())
                    .map_err(|e| format!("spawn failed at cgroup: {e}"))?;
                self.cgroup = Some(cg);
            }
        }
        // Each instance gets a fresh leaf, so that the previous one of a
        // start-stop restart can be stopped without touching this one. The
        // last instance's leaf is empty by now (the machine spawns only
        // once nothing of the app is left, or after Retire moved it).
        if let Some(old) = self.leaf.take() {
            self.remove_leaf(old);
        }
        if let Some(cg) = &self.cgroup {
            let leaf = cg
                .child(&format!("i{}", self.starts))
                .map_err(|e| format!("spawn failed at cgroup: {e}"))?;
            let populated = match &self.shared.watcher {
                Some(watcher) => Some(
                    watcher
                        .watch(&leaf)
                        .map_err(|e| format!("spawn failed at cgroup watch: {e}"))?,
                ),
                None => None,
            };
            // Kept open so the next spawn can clone straight into it.
            let dir = std::fs::File::open(leaf.dir())
                .map(OwnedFd::from)
                .map_err(|e| format!("spawn failed at cgroup {}: {e}", leaf.dir().display()))?;
            self.leaf = Some(Leaf {
                cgroup: leaf,
                populated,
                dir,
            });
        }
        let notify_path = if spec.readiness.kind == ReadinessKind::Notify {
            let path = self.shared.notify_dir.join(format!("{}.sock", spec.name));
            if self.notify.is_none() {
                self.notify = Some(
                    NotifySocket::bind(&path, self.app.uid, self.app.gid).map_err(|e| {
                        format!("spawn failed at notify socket {}: {e}", path.display())
                    })?,
                );
            }
            Some(path)
        } else {
            None
        };
        let (uid, gid) = (self.app.uid, self.app.gid);
        if !self
            .listen
            .as_ref()
            .is_some_and(|h| h.serves(&spec.listen, uid, gid))
        {
            let previous = self.listen.take();
            self.listen = Some(
                HeldSockets::rebind(spec, uid, gid, previous)
                    .map_err(|e| format!("spawn failed at {e}"))?,
            );
        }
        self.release = std::fs::canonicalize(&spec.directory)
            .ok()
            .map(|p| p.display().to_string());
        let limits = self
            .shared
            .limits
            .app(spec.name.as_str(), self.cgroup.as_ref().map(AppCgroup::dir))
            .map_err(|e| format!("spawn failed at cgroup limits: {e}"))?;
        limits
            .apply(&spec.limits)
            .map_err(|e| format!("spawn failed at cgroup limits: {e}"))?;
        self.oom_baseline = limits.oom_kills();
        let extra_cgroup_procs = limits.extra_procs(&spec.limits);
        self.limits = Some(limits);
        let user = PlanUser {
            name: self.app.user_name.clone(),
            uid: self.app.uid,
            gid: self.app.gid,
            groups: self.app.groups.clone(),
            home: self.app.home.clone(),
            shell: self.app.shell.clone(),
        };
        let inputs = PlanInputs {
            lang: self.shared.lang.clone(),
            notify_socket: notify_path,
            listen_names: self
                .listen
                .as_ref()
                .map(HeldSockets::names)
                .unwrap_or_default(),
            cgroup_procs: self.leaf.as_ref().map(|leaf| leaf.cgroup.procs_path()),
            extra_cgroup_procs,
            sandbox: sandbox_inputs(&self.app, &self.shared),
        };
        let plan = SpawnPlan::build(spec, &user, &inputs);
        let (out_r, out_w) =
            crate::logs::make_pipe().map_err(|e| format!("spawn failed at pipe: {e}"))?;
        let (err_r, err_w) =
            crate::logs::make_pipe().map_err(|e| format!("spawn failed at pipe: {e}"))?;
        let (pid, exit, report) = self.spawn_registered(&plan, out_w, err_w)?;
        let pipes = vec![
            self.logs.capture(Stream::Stdout, out_r),
            self.logs.capture(Stream::Stderr, err_r),
        ];
        Ok(Child {
            pid,
            exit,
            report: Some(Box::pin(report.applied())),
            pipes,
        })
    }

    fn spawn_registered(
        &self,
        plan: &SpawnPlan,
        stdout: OwnedFd,
        stderr: OwnedFd,
    ) -> Result<(u32, oneshot::Receiver<ExitStatus>, spawn::ReportReader), String> {
        let mut report = None;
        let (pid, exit) = self.shared.reaper.spawn_registered(|| {
            let listen_fds = self
                .listen
                .as_ref()
                .map(HeldSockets::fds)
                .unwrap_or_default();
            let spawned = match &self.leaf {
                Some(leaf) => {
                    use std::os::fd::AsFd;
                    spawn::spawn_into_cgroup(plan, stdout, stderr, &listen_fds, leaf.dir.as_fd())
                }
                None => spawn::spawn(plan, stdout, stderr, &listen_fds),
            }
            .map_err(|e| format!("spawn failed: {e}"))?;
            report = Some(spawned.report);
            Ok::<u32, String>(spawned.pid)
        })?;
        Ok((pid, exit, report.expect("set on success")))
    }

    fn publish(&mut self, state_changed: bool) {
        let m = &self.machine;
        let spec = &self.app.spec;
        let mut reason = m.reason.clone();
        if let (AppState::Running, Some(status)) = (m.state, &self.notify_status) {
            reason = format!("{reason}: {status}");
        }
        let status = AppStatus {
            name: spec.name.to_string(),
            state: protocol_state(m.state),
            reason,
            pid: m.pid,
            uptime_secs: m
                .started_at
                .filter(|_| m.pid.is_some())
                .map(|t| t.elapsed().as_secs_f64()),
            since: self
                .since_wall
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            restarts: m.restarts,
            failures: m.failures,
            description: spec.description.clone(),
            app_groups: spec.app_groups.clone(),
            user: self.app.user_name.clone(),
            directory: spec.directory.display().to_string(),
            release: self.release.clone(),
            autostart: spec.autostart,
            stopped_by: self
                .stopped_by
                .clone()
                .filter(|_| m.state == AppState::Stopped),
            config_error: None,
        };
        if state_changed {
            self.shared.events.publish(appvisor_protocol::Event::State {
                time: unix_now(),
                app: status.name.clone(),
                state: status.state,
                reason: status.reason.clone(),
                pid: status.pid,
            });
        }
        self.snapshot.send_replace(Snapshot {
            state: m.state,
            status,
            starts: self.starts,
            readiness_failures: self.readiness_failures,
            app: self.app.clone(),
            landlock: self.landlock.clone(),
        });
    }

    fn cleanup(&mut self) {
        self.notify = None;
        if let Some(leaf) = self.leaf.take() {
            self.remove_leaf(leaf);
        }
        if let Some(cg) = self.cgroup.take() {
            if let Some(watcher) = &self.shared.watcher {
                watcher.unwatch(&cg);
            }
            if let Err(err) = cg.remove() {
                tracing::debug!(error = %err, "removing the app's cgroup");
            }
        }
        if let Some(limits) = self.limits.take() {
            if let Err(err) = limits.remove() {
                tracing::debug!(error = %err, "removing the app's limit cgroups");
            }
        }
    }
}

/// What is left to do if an app's task panics (a bug in appvisord): its
/// processes would run on unsupervised and its status would freeze, so
/// kill them and say so in the status. No other app is touched.
struct PanicGuard {
    name: String,
    shared: Arc<Shared>,
    snapshot: Arc<watch::Sender<Snapshot>>,
}

impl PanicGuard {
    async fn watch(self, task: JoinHandle<()>) {
        let Err(err) = task.await else { return };
        if !err.is_panic() {
            return;
        }
        let message = match err.into_panic().downcast::<String>() {
            Ok(text) => *text,
            Err(payload) => payload
                .downcast::<&str>()
                .map(|text| (*text).to_owned())
                .unwrap_or_else(|_| "no message".to_owned()),
        };
        tracing::error!(panic = %message, "the app's supervisor task panicked (a bug in appvisord); killing its processes");
        if let Some(root) = &self.shared.cgroups {
            if let Err(err) = root.app(&self.name).and_then(|cg| cg.kill()) {
                tracing::error!(error = %err, "killing the processes of an app whose supervisor panicked");
            }
        }
        self.snapshot.send_modify(|snapshot| {
            snapshot.state = AppState::Fatal;
            snapshot.status.state = appvisor_protocol::State::Fatal;
            snapshot.status.pid = None;
            snapshot.status.uptime_secs = None;
            snapshot.status.reason = format!(
                "appvisord bug: supervising {} failed ({message}); its processes were killed; restart appvisord and report the bug",
                self.name
            );
        });
    }
}

/// Sends `signal` to every process of one instance: its leaf cgroup's, or
/// without cgroups its process group (`pid` leads it: the exec helper
/// calls setsid).
fn kill_instance(leaf: Option<&Leaf>, pid: u32, signal: NixSignal) {
    let result = match leaf {
        Some(leaf) if signal == NixSignal::SIGKILL => leaf.cgroup.kill(),
        Some(leaf) => leaf.cgroup.signal_all(signal).map(|_| ()),
        None => {
            if pid > 0 {
                let _ = killpg(Pid::from_raw(pid as i32), signal);
            }
            Ok(())
        }
    };
    if let Err(err) = result {
        tracing::warn!(error = %err, ?signal, "signalling an instance's processes");
    }
}

/// How long an exit waits for the app's last output to be captured. The
/// capture tasks reach EOF within a few milliseconds once the instance's
/// cgroup is empty; the bound only matters if the daemon is starved.
const DRAIN_OUTPUT: Duration = Duration::from_secs(1);

/// Waits, at most [`DRAIN_OUTPUT`], until every capture task of an
/// instance has read its pipe to EOF.
async fn drain_output(pipes: Vec<JoinHandle<()>>) {
    let all = async {
        for pipe in pipes {
            // A capture task that panicked has nothing more to give.
            let _ = pipe.await;
        }
    };
    if tokio::time::timeout(DRAIN_OUTPUT, all).await.is_err() {
        tracing::warn!(
            "the app's last output was not captured within {DRAIN_OUTPUT:?}; the failure report may miss it"
        );
    }
}

/// The next value of a cgroup's `populated` watch; `None` once the watcher
/// is gone (emptiness must then be asked for).
async fn watch_changed(rx: &mut watch::Receiver<bool>) -> Option<bool> {
    match rx.changed().await {
        Ok(()) => Some(*rx.borrow_and_update()),
        Err(_) => None,
    }
}

/// The protocol's name for a machine state.
pub fn protocol_state(state: AppState) -> appvisor_protocol::State {
    use appvisor_protocol::State as P;
    match state {
        AppState::Stopped => P::Stopped,
        AppState::Starting => P::Starting,
        AppState::Running => P::Running,
        AppState::Backoff => P::Backoff,
        AppState::Stopping => P::Stopping,
        AppState::Exited => P::Exited,
        AppState::Fatal => P::Fatal,
        AppState::Invalid => P::Invalid,
    }
}
