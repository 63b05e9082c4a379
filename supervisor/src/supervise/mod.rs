//! The task per app: it owns the app's processes, pipes, timer, readiness
//! check and cgroup watch, feeds what happens to the pure state machine in
//! `app`, and carries out the effects the machine returns.
//!
//! Nothing here decides policy: every decision is `app::step`'s. One app's
//! task never touches another app's resources, so a failure in one (a
//! spawn error, a hung stop, a flood of output) stays with that app.

mod handoff;
pub mod reaper;
pub(crate) mod workers;

pub use handoff::{monotonic_ns, restore, Frozen, RestoreError};

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use appvisor_protocol::{Action, AppStatus, StoppedBy};
use nix::sys::signal::{kill, killpg, Signal as NixSignal};
use nix::unistd::Pid;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Sleep;
use tracing::Instrument;

use crate::app::{
    self, AfterStop, Answer, AppState, Cause, Effect, Event, ExitStatus, InstanceId, Machine,
    Params, ReadySignal, Request, RequestId, StopParams, TimerKey,
};
use crate::audit::{unix_now, Events};
use crate::cgroup::{AppCgroup, AppLimits, CgroupRoot, CgroupWatcher, LimitRoot};
use crate::config::change::Change;
use crate::config::resolve::ResolvedApp;
use crate::config::{LimitSpec, ReadinessKind, Signal};
use crate::handoff::fdstore;
use crate::listen::{HeldSockets, ProbeSocket};
use crate::logs::{AppLogs, LogMark, Stream};
use crate::readiness::{self, Check, NotifySocket};
use crate::sandbox::{self, SandboxInputs, SandboxPlan, SpawnRecord};
use crate::spawn::{self, PlanInputs, PlanUser, PrepareError, Prepared, Preparer, SpawnPlan};
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
    /// Where each instance's private probe socket lives: root's alone.
    pub probe_dir: PathBuf,
    /// The daemon's LANG, passed on to apps.
    pub lang: Option<String>,
    /// Where `[limits]` go besides the v2 cgroup (v1 hierarchies).
    pub limits: LimitRoot,
    /// Limits for the keys an app's `[limits]` leaves unset.
    pub default_limits: crate::config::DefaultLimits,
    /// The Landlock ABI cap of a test build (`sandbox::landlock_abi_cap`).
    pub landlock_abi_max: Option<u8>,
    /// What apps must not read besides `sandbox::HIDDEN_PATHS`: the daemon's
    /// own configuration file and apps directory.
    pub hide: Vec<PathBuf>,
    /// RLIMIT_NOFILE of an app without `[limits] open_files`: the soft
    /// limit the daemon was started with, before it raised its own.
    pub app_open_files: crate::sandbox::Rlimit,
    /// Where each settled app's record goes, for a successor after a
    /// crash (`handoff::crash`); `None` in tests that need none.
    pub records: Option<crate::handoff::crash::RecordWriter>,
    /// The service manager's fd store (`handoff::fdstore`), if any.
    pub fd_store: Option<crate::handoff::fdstore::FdStore>,
}

/// Requests from the control plane and the daemon.
#[derive(Debug)]
pub enum Command {
    /// start, stop, restart or reload; `reply` gets the outcome once the
    /// state machine knows it, or, for a caller that does not `wait`, as
    /// soon as the machine has taken the request.
    Control {
        action: Action,
        cause: Cause,
        stopped_by: Option<StoppedBy>,
        wait: bool,
        reply: oneshot::Sender<Reply>,
    },
    /// Send a signal to the main process.
    Signal {
        signal: Signal,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// Adopt new settings as `change` says: in place, or with a restart if
    /// the app is up.
    Replace {
        app: Arc<ResolvedApp>,
        change: Change,
        reply: oneshot::Sender<()>,
    },
    /// Stop for good and end the task once nothing of the app is left.
    Shutdown { cause: Cause },
    /// End the task, leaving the app as it is, once no transition is under
    /// way, and hand over what it holds (a hand-off to a new binary).
    Freeze { reply: oneshot::Sender<Frozen> },
}

/// The machine's answer to a control request.
#[derive(Debug)]
pub struct Reply {
    /// `None`: the request was taken, and its caller does not wait for the
    /// outcome.
    pub answer: Option<Answer>,
    /// For a start or restart: where the app's output stood when the
    /// attempt the answer is about was spawned (the first spawn after the
    /// request, or the one under way that the request joined). A failure
    /// report starts there: a stop-start restart's does not open with the
    /// old instance's shutdown, and a start that joined an attempt keeps
    /// what that attempt wrote before the request came.
    pub attempt_began: Option<LogMark>,
}

/// A caller waiting for the machine's answer.
struct Waiting {
    id: RequestId,
    reply: oneshot::Sender<Reply>,
    /// For a start or restart: the spawns before the request, and where
    /// the attempt under way then (if the app was starting) began.
    attempt: Option<(u64, Option<LogMark>)>,
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

/// What the control plane reads: the public status and what the status
/// server counts.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub state: AppState,
    /// The status as of the last change; `uptime_secs` is filled in by
    /// [`Snapshot::status_now`].
    pub status: AppStatus,
    /// When the current instance's main process was exec'd: for its
    /// uptime, and as a wall-clock time that stays put while it runs.
    pub started: Option<(Instant, SystemTime)>,
    /// Starts that did not become ready within the readiness timeout.
    pub readiness_failures: u64,
    /// The settings the app runs with.
    pub app: Arc<ResolvedApp>,
    /// What the exec helper enforced at the last spawn.
    pub sandbox: Arc<SpawnRecord>,
    /// What the last spawn learnt from the file system (the venv and what
    /// it may grant, the release, where /etc links lead): the facts its
    /// sandbox was built on.
    pub prepared: Option<Arc<Prepared>>,
    /// The exposure score of `app`, `sandbox` and `prepared`, worked out at
    /// the first scrape that asks and kept while the three stay the same:
    /// a scrape of a thousand apps must not build a thousand sandbox plans.
    exposure: Arc<OnceLock<f64>>,
}

impl Snapshot {
    /// `appctl security`'s exposure score for this snapshot's app.
    pub fn exposure(&self, shared: &Shared) -> f64 {
        *self
            .exposure
            .get_or_init(|| security(self, shared).exposure)
    }

    /// The status with the uptime as of now.
    pub fn status_now(&self) -> AppStatus {
        AppStatus {
            uptime_secs: self.started.map(|(at, _)| at.elapsed().as_secs_f64()),
            ..self.status.clone()
        }
    }

    /// When the current instance started, in seconds since the Unix epoch.
    pub fn start_time(&self) -> Option<f64> {
        let (_, wall) = self.started?;
        wall.duration_since(SystemTime::UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs_f64())
    }
}

/// What confines the app of `snapshot` (`GET /v1/apps/NAME/security`):
/// built from what its last spawn learnt, never from reading the app's
/// files again here, on the caller's (async) thread.
pub fn security(snapshot: &Snapshot, shared: &Shared) -> appvisor_protocol::AppSecurity {
    let inputs = sandbox_inputs(snapshot.prepared.as_deref(), shared);
    let plan = SandboxPlan::build(&snapshot.app.spec, &inputs);
    sandbox::exposure::report(
        &snapshot.app,
        &plan,
        snapshot.sandbox.last(),
        sandbox::landlock::kernel_abi(),
        applied_limits(&snapshot.app.spec.limits, shared),
    )
}

/// The limits an app gets: its `[limits]`, and the defaults where it sets
/// none (tasks, and the open-file limit the daemon was started with).
fn applied_limits(configured: &LimitSpec, shared: &Shared) -> appvisor_protocol::SecurityLimits {
    let defaults = &shared.default_limits;
    let mut limits = sandbox::exposure::configured_limits(&defaults.fill(configured));
    limits.defaults = defaults
        .defaulted(configured)
        .into_iter()
        .map(str::to_owned)
        .collect();
    if configured.open_files.is_none() {
        limits.open_files = Some(shared.app_open_files.soft);
        limits.defaults.push("open_files".to_owned());
    }
    limits
}

fn sandbox_inputs(prepared: Option<&Prepared>, shared: &Shared) -> SandboxInputs {
    SandboxInputs {
        landlock_abi_max: shared.landlock_abi_max,
        python_home: prepared.and_then(|p| p.venv.home.home().map(ToOwned::to_owned)),
        hide: shared.hide.clone(),
        linked_dirs: prepared.map(|p| p.linked_dirs.clone()).unwrap_or_default(),
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
    let machine = Machine::new(params(&app), now, jitter_seed());
    let (commands, rx) = mpsc::unbounded_channel();
    let commands = Commands(commands);
    let app_for_snapshot = app.clone();
    let sup = Supervisor {
        machine,
        since_wall: SystemTime::now(),
        app,
        shared,
        logs: logs.clone(),
        cgroup: None,
        instances: Vec::new(),
        limits: None,
        oom_baseline: None,
        sandbox: Arc::default(),
        preparer: Preparer::default(),
        preparing: None,
        prepared: None,
        notify: None,
        listen: None,
        timers: Vec::new(),
        readiness_failures: 0,
        stopped_by,
        release: None,
        notify_status: None,
        shutdown: false,
        freeze: None,
        saved: None,
        stored: Vec::new(),
        snapshot: Arc::new(watch::channel(placeholder_snapshot(&app_for_snapshot)).0),
        pending: VecDeque::new(),
        waiting: Vec::new(),
        spawns: 0,
        spawned_at: None,
        last_request: 0,
    };
    launch(sup, commands, rx, autostart, logs)
}

/// Publishes the first status of `sup` and starts its task.
fn launch(
    mut sup: Supervisor,
    commands: Commands,
    rx: mpsc::UnboundedReceiver<Box<Command>>,
    autostart: bool,
    logs: Arc<AppLogs>,
) -> Handle {
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
        commands,
        snapshot,
        logs,
        task,
    }
}

fn params(app: &ResolvedApp) -> Params {
    let spec = &app.spec;
    let kind = &spec.readiness.kind;
    Params {
        restart: spec.restart.clone(),
        ready_after_start_secs: *kind == ReadinessKind::None,
        needs_notify: *kind == ReadinessKind::Notify,
        // notify with a url or address beside it: READY=1 says the server
        // is up, the probe that its workers serve (gunicorn sends READY=1
        // before a worker has imported the app).
        needs_probe: *kind != ReadinessKind::None && spec.readiness.probe.is_some(),
        has_probe: spec.readiness.probe.is_some(),
        readiness_timeout: spec.readiness.timeout,
        stop: StopParams {
            signal: spec.stop.signal,
            timeout: spec.stop.timeout,
        },
        reload_signal: spec.stop.reload_signal,
    }
}

/// A seed for the machine's backoff jitter, different for every app and
/// every daemon start (the hasher's keys are random per process).
fn jitter_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    );
    hasher.finish() | 1
}

fn placeholder_snapshot(app: &Arc<ResolvedApp>) -> Snapshot {
    Snapshot {
        state: AppState::Stopped,
        started: None,
        readiness_failures: 0,
        app: app.clone(),
        sandbox: Arc::default(),
        prepared: None,
        exposure: Arc::default(),
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
        log_error: None,
        log_dropped_bytes: 0,
    }
}

/// Apps opening their log files at the same time: a thousand apps starting
/// together must not take a thousand threads of the blocking pool for it.
static LOG_OPENERS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(8);

/// Opens `logs`' files (made by `AppLogs::unopened`) on the blocking pool.
async fn open_log_files(logs: &Arc<AppLogs>) {
    let _permit = LOG_OPENERS.acquire().await;
    let logs = logs.clone();
    if let Err(error) = tokio::task::spawn_blocking(move || logs.open_files()).await {
        tracing::error!(%error, "opening the log files failed; they are retried at the first output");
    }
}

/// Resolves once the exec helper has exec'd the app or reported why not.
type ReportFuture =
    Pin<Box<dyn Future<Output = Result<spawn::Applied, spawn::SpawnFailure>> + Send>>;

/// Resolves once a spawn's file reads are done (see `spawn::prepare`).
type PrepareFuture = Pin<Box<dyn Future<Output = Result<Prepared, PrepareError>> + Send>>;

/// The next value of a leaf's `populated` watch, with the receiver back.
type PopulatedFuture = Pin<Box<dyn Future<Output = (watch::Receiver<bool>, Option<bool>)> + Send>>;

/// One instance of the app: what the shell holds for it, from its spawn
/// until the machine forgets it. The same type serves the current
/// instance, a start-stop restart's previous one and retired ones.
struct Instance {
    id: InstanceId,
    /// The main process, once spawned.
    pid: Option<u32>,
    /// When the exec helper reported that the app runs.
    started: Option<SystemTime>,
    /// Until the main process is reaped.
    exit: Option<oneshot::Receiver<ExitStatus>>,
    /// Until the exec helper reports: `Ok` once the app's program runs.
    report: Option<ReportFuture>,
    pipes: Vec<crate::logs::Capture>,
    leaf: Option<Leaf>,
    /// Its private socket for the readiness probe: apps with `[[listen]]`
    /// sockets and a probe.
    probe_socket: Option<ProbeSocket>,
    /// The next change of the leaf's `populated`; `None` without a watcher.
    populated: Option<PopulatedFuture>,
    probe: Option<JoinHandle<Result<(), readiness::ProbeError>>>,
    /// A reload under way: resolves once the processes noted before the
    /// reload signal are gone.
    reload: Option<JoinHandle<()>>,
    /// READY=1 came before the exec helper's report was read: the machine
    /// learns of the spawn from the report, so the readiness waits for it.
    ready_before_report: bool,
}

/// The cgroup of one instance.
struct Leaf {
    cgroup: AppCgroup,
    /// The cgroup's directory, open, for `clone3(CLONE_INTO_CGROUP)`.
    dir: OwnedFd,
}

/// An armed timer of the machine's.
struct Timer {
    key: TimerKey,
    generation: u64,
    sleep: Pin<Box<Sleep>>,
}

struct Supervisor {
    machine: Machine,
    since_wall: SystemTime,
    app: Arc<ResolvedApp>,
    shared: Arc<Shared>,
    logs: Arc<AppLogs>,
    /// The app's cgroup; each instance runs in a leaf below it.
    cgroup: Option<AppCgroup>,
    /// Every instance the machine knows.
    instances: Vec<Instance>,
    /// Where the app's `[limits]` are written.
    limits: Option<AppLimits>,
    /// The memory cgroup's OOM-kill count at the last spawn.
    oom_baseline: Option<u64>,
    /// What the exec helper enforced at the last spawn.
    /// Shared with every snapshot: republished at each state change,
    /// changed only by a spawn's report.
    sandbox: Arc<SpawnRecord>,
    preparer: Preparer,
    /// The instance waiting for its spawn's file reads; its process is
    /// made once they are in.
    preparing: Option<(InstanceId, PrepareFuture)>,
    /// What the last spawn learnt from the file system.
    prepared: Option<Arc<Prepared>>,
    notify: Option<NotifySocket>,
    /// The `[[listen]]` sockets, bound at the first spawn and kept across
    /// restarts and reloads until the app is stopped by request
    /// (`Effect::CloseSockets`), removed, or its listen set changes.
    listen: Option<HeldSockets>,
    timers: Vec<Timer>,
    readiness_failures: u64,
    stopped_by: Option<StoppedBy>,
    release: Option<String>,
    notify_status: Option<String>,
    shutdown: bool,
    /// A hand-off waits for this task to freeze.
    freeze: Option<oneshot::Sender<Frozen>>,
    /// The record last saved for a crash (`save_record`).
    saved: Option<crate::handoff::state::AppRecord>,
    /// The held listen sockets in the fd store, by fd number.
    stored: Vec<i32>,
    /// Shared with the task's guard, which reports a panic here.
    snapshot: Arc<watch::Sender<Snapshot>>,
    /// Events produced by effects, fed after the current step.
    pending: VecDeque<Event>,
    /// Callers waiting for the machine's answer.
    waiting: Vec<Waiting>,
    /// Spawns so far, and where the output stood at the latest.
    spawns: u64,
    spawned_at: Option<LogMark>,
    last_request: u64,
}

/// What woke the task up.
enum Wake {
    Command(Option<Box<Command>>),
    Prepared(InstanceId, Result<Prepared, PrepareError>),
    Notify(Result<readiness::NotifyMessage, readiness::ReadinessError>),
    Reported(InstanceId, Result<spawn::Applied, spawn::SpawnFailure>),
    Exited(InstanceId, ExitStatus),
    /// The leaf's `populated` changed; `None`: the watcher is gone.
    Populated(InstanceId, Option<bool>),
    /// `None`: the probe task was cancelled.
    Probe(InstanceId, Option<Result<(), readiness::ProbeError>>),
    WorkersGone(InstanceId),
    Timer(TimerKey, u64),
}

impl Supervisor {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Box<Command>>, autostart: bool) {
        // Before anything runs that could write output: what comes before
        // the files are open is dropped. Commands wait in the channel.
        open_log_files(&self.logs).await;
        if autostart {
            self.feed(Event::Start(Cause::Autostart.into()));
        }
        loop {
            if self.shutdown && self.is_down() {
                self.cleanup();
                return;
            }
            self.save_record();
            // A hand-off that gave up waiting withdraws its request.
            if self.freeze.as_ref().is_some_and(|reply| reply.is_closed()) {
                self.freeze = None;
            }
            if self.freeze.is_some() && self.is_settled() {
                let frozen = self.freeze_now().await;
                if let Some(reply) = self.freeze.take() {
                    if reply.send(frozen).is_err() {
                        tracing::error!("a hand-off gave up while this app froze; it runs unsupervised until appvisord restarts");
                    }
                }
                return;
            }
            let wake = self.next(&mut commands).await;
            match wake {
                Wake::Command(None) => {
                    // The daemon dropped the handle: treat as shutdown.
                    self.begin_shutdown(Cause::Shutdown);
                }
                Wake::Command(Some(cmd)) => self.command(*cmd),
                Wake::Prepared(id, result) => {
                    self.preparing = None;
                    self.prepared(id, result);
                }
                Wake::Reported(id, outcome) => self.reported(id, outcome),
                Wake::Exited(id, status) => self.exited(id, status).await,
                Wake::Timer(key, generation) => {
                    self.timers.retain(|t| t.key != key);
                    self.feed(Event::TimerFired { key, generation });
                }
                Wake::Probe(id, result) => match result {
                    Some(Ok(())) => self.feed(Event::Ready {
                        instance: id,
                        signal: ReadySignal::Probe,
                    }),
                    Some(Err(err)) => {
                        tracing::info!(instance = %id, error = %err, "readiness probe gave up")
                    }
                    None => {}
                },
                Wake::WorkersGone(id) => self.feed(Event::WorkersReplaced { instance: id }),
                Wake::Notify(Ok(msg)) => self.notified(msg),
                // NotifySocket::recv logged it, rate-limited.
                Wake::Notify(Err(err)) if err.is_refused_message() => {}
                Wake::Notify(Err(err)) => {
                    tracing::warn!(error = %err, "notify socket failed; readiness must come from the timeout");
                    self.notify = None;
                }
                Wake::Populated(id, Some(false)) => self.feed(Event::CgroupEmpty { instance: id }),
                Wake::Populated(_, Some(true)) => {}
                Wake::Populated(id, None) => {
                    tracing::error!("the cgroup watcher stopped; checking emptiness on exit only");
                    let empty = self
                        .instance(id)
                        .and_then(|i| i.leaf.as_ref())
                        .is_some_and(|leaf| !leaf.cgroup.is_populated().unwrap_or(true));
                    if empty {
                        self.feed(Event::CgroupEmpty { instance: id });
                    }
                }
            }
        }
    }

    /// Waits for the next thing that needs handling.
    async fn next(&mut self, commands: &mut mpsc::UnboundedReceiver<Box<Command>>) -> Wake {
        let Supervisor {
            instances,
            timers,
            notify,
            shutdown,
            preparing,
            ..
        } = self;
        let notify = async {
            match notify {
                Some(socket) => socket.recv().await,
                None => std::future::pending().await,
            }
        };
        let prepared = async {
            match preparing {
                Some((id, reads)) => (*id, reads.as_mut().await),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            cmd = commands.recv(), if !*shutdown => Wake::Command(cmd),
            msg = notify => Wake::Notify(msg),
            (id, result) = prepared => Wake::Prepared(id, result),
            wake = poll_fn(|cx| poll_instances(instances, timers, cx)) => wake,
        }
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Control {
                action,
                cause,
                stopped_by,
                wait,
                reply,
            } => {
                self.last_request += 1;
                let id = RequestId(self.last_request);
                self.waiting.retain(|w| !w.reply.is_closed());
                let attempt = matches!(action, Action::Start | Action::Restart).then(|| {
                    let under_way = self.machine.state == AppState::Starting;
                    (self.spawns, self.spawned_at.filter(|_| under_way))
                });
                self.waiting.push(Waiting { id, reply, attempt });
                let request = Request {
                    cause,
                    waiter: Some(id),
                };
                let event = match action {
                    Action::Start => Event::Start(request),
                    Action::Restart => Event::Restart(request),
                    Action::Reload => Event::Reload(request),
                    Action::Stop | Action::Signal => Event::Stop(request),
                };
                match action {
                    Action::Stop => self.stopped_by = stopped_by,
                    Action::Start | Action::Restart => self.stopped_by = None,
                    Action::Reload | Action::Signal => {}
                }
                self.feed(event);
                if !wait {
                    // Taken: the status the caller reads now shows it. A
                    // refusal was answered by the step itself.
                    if let Some(i) = self.waiting.iter().position(|w| w.id == id) {
                        let waiting = self.waiting.swap_remove(i);
                        let _ = waiting.reply.send(Reply {
                            answer: None,
                            attempt_began: None,
                        });
                    }
                }
            }
            Command::Signal { signal, reply } => {
                let result = match self.machine.pid() {
                    Some(pid) => {
                        kill(Pid::from_raw(pid as i32), signal.0).map_err(|e| e.desc().to_owned())
                    }
                    None => Err(format!("{} has no running process", self.app.spec.name)),
                };
                let _ = reply.send(result);
            }
            Command::Replace { app, change, reply } => {
                self.app = app;
                if change.restart {
                    // Bound again at the next spawn, for the new file's user.
                    self.notify = None;
                }
                self.logs.update_spec(&self.app.spec.logs);
                tracing::info!(keys = ?change.keys, restart = change.restart, "settings changed");
                // Feeding publishes the new settings (description, app
                // groups) even when the state stays as it was.
                self.feed(Event::Replace {
                    params: params(&self.app),
                    restart: change.restart,
                    start: change.start && self.stopped_by.is_none(),
                });
                let _ = reply.send(());
            }
            Command::Shutdown { cause } => self.begin_shutdown(cause),
            Command::Freeze { reply } => self.freeze = Some(reply),
        }
    }

    fn begin_shutdown(&mut self, cause: Cause) {
        self.shutdown = true;
        self.feed(Event::Stop(cause.into()));
    }

    fn is_down(&self) -> bool {
        self.instances.is_empty()
            && !matches!(
                self.machine.state,
                AppState::Stopping | AppState::Starting | AppState::Running
            )
    }

    fn instance(&self, id: InstanceId) -> Option<&Instance> {
        self.instances.iter().find(|i| i.id == id)
    }

    fn instance_mut(&mut self, id: InstanceId) -> Option<&mut Instance> {
        self.instances.iter_mut().find(|i| i.id == id)
    }

    fn reported(&mut self, id: InstanceId, outcome: Result<spawn::Applied, spawn::SpawnFailure>) {
        let release = self.release.clone();
        let Some(instance) = self.instance_mut(id) else {
            return;
        };
        instance.report = None;
        let ready_before_report = std::mem::take(&mut instance.ready_before_report);
        match outcome {
            Ok(applied) => {
                instance.started = Some(SystemTime::now());
                let pid = instance.pid.unwrap_or_default();
                tracing::info!(pid, instance = %id, release = release.as_deref(), "spawned");
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
                self.sandbox = Arc::new(SpawnRecord {
                    landlock: applied.landlock,
                    verified: Some(applied.verified),
                    refusal: None,
                });
                self.feed(Event::Spawned { instance: id, pid });
                if ready_before_report {
                    self.feed(Event::Ready {
                        instance: id,
                        signal: ReadySignal::Notify,
                    });
                }
            }
            Err(failure) => {
                // The helper exits at once after reporting; its exit is
                // reaped but means nothing more.
                instance.exit = None;
                instance.pid = None;
                if failure.step == spawn::SpawnStep::Paths {
                    Arc::make_mut(&mut self.sandbox).refusal = Some(failure.detail.clone());
                }
                self.feed(Event::SpawnFailed {
                    instance: id,
                    reason: failure.to_string(),
                });
            }
        }
    }

    async fn exited(&mut self, id: InstanceId, status: ExitStatus) {
        let Some(instance) = self.instance_mut(id) else {
            return;
        };
        instance.exit = None;
        let pid = instance.pid.unwrap_or_default();
        let cgroup_empty = match &instance.leaf {
            Some(leaf) => !leaf.cgroup.is_populated().unwrap_or(false),
            None => {
                // Without a cgroup the process group is all we can find.
                let _ = killpg(Pid::from_raw(pid as i32), NixSignal::SIGKILL);
                true
            }
        };
        if cgroup_empty {
            // Nobody holds the write ends any more: let the capture tasks
            // read what the app wrote last (often the traceback that says
            // why it died) before the exit becomes a reason and a failure
            // report with the last log lines.
            drain_output(std::mem::take(&mut instance.pipes)).await;
        }
        // Otherwise a daemonized grandchild may keep the pipes open: the
        // capture tasks end by themselves once it has gone.
        let status = self.memory_limit_kill(status);
        tracing::info!(pid, instance = %id, ?status, cgroup_empty, "main process exited");
        self.feed(Event::MainExited {
            instance: id,
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
        // Only a process of an instance may speak for it: during a
        // start-stop restart the previous instance is still around.
        let sender = self.instances.iter().find(|i| match &i.leaf {
            Some(leaf) => leaf.cgroup.contains_pid(msg.pid),
            None => i.pid == Some(msg.pid),
        });
        let Some(id) = sender.map(|i| i.id) else {
            if let Some(notify) = &self.notify {
                notify.ignored_sender(&msg);
            }
            return;
        };
        let current = self.machine.current.as_ref().map(|i| i.id) == Some(id);
        if let Some(status) = msg.status().filter(|_| current) {
            self.notify_status = Some(status.to_owned());
        }
        if msg.is_ready() {
            // The helper writes its report before it execs the app, but the
            // two arrive on different descriptors and either may be read
            // first; a READY=1 the machine saw before the spawn would be
            // lost, and the start would time out.
            if let Some(instance) = self.instance_mut(id).filter(|i| i.report.is_some()) {
                instance.ready_before_report = true;
                self.publish(false);
                return;
            }
            self.feed(Event::Ready {
                instance: id,
                signal: ReadySignal::Notify,
            });
        } else {
            self.publish(false);
        }
    }

    /// Steps the state machine with `event` and carries out its effects,
    /// then any events those effects produced (a spawn that failed at once);
    /// then publishes the status and answers the callers whose outcome is
    /// known, so a caller reads the status its answer came with.
    fn feed(&mut self, event: Event) {
        let before = self.machine.state;
        let mut answers = Vec::new();
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
                match effect {
                    Effect::Answer(id, answer) => answers.push((id, answer)),
                    effect => self.effect(effect),
                }
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
        for (id, answer) in answers {
            if let Some(i) = self.waiting.iter().position(|w| w.id == id) {
                let waiting = self.waiting.swap_remove(i);
                let attempt_began = attempt_began(waiting.attempt, self.spawns, self.spawned_at);
                let _ = waiting.reply.send(Reply {
                    answer: Some(answer),
                    attempt_began,
                });
            }
        }
    }

    fn effect(&mut self, effect: Effect) {
        match effect {
            Effect::Spawn(id) => self.spawn(id),
            Effect::Probe(id) => self.start_probe(id),
            Effect::CancelProbe(id) => {
                if let Some(probe) = self.instance_mut(id).and_then(|i| i.probe.take()) {
                    probe.abort();
                }
            }
            Effect::Signal(id, signal) => {
                if let Some(pid) = self.instance(id).and_then(|i| i.pid) {
                    let _ = kill(Pid::from_raw(pid as i32), signal.0);
                }
            }
            Effect::SignalAll(id, signal) => self.signal_all(id, signal.0),
            Effect::KillAll(id) => self.signal_all(id, NixSignal::SIGKILL),
            Effect::Reload(id, signal) => self.reload(id, signal),
            Effect::Forget(id) => self.forget(id),
            Effect::CloseSockets => {
                if self.listen.take().is_some() {
                    tracing::debug!("stopped: closed the listen sockets");
                }
            }
            Effect::SetTimer {
                key,
                after,
                generation,
            } => {
                self.timers.retain(|t| t.key != key);
                self.timers.push(Timer {
                    key,
                    generation,
                    sleep: Box::pin(tokio::time::sleep(after)),
                });
            }
            Effect::CancelTimer(key) => self.timers.retain(|t| t.key != key),
            Effect::Answer(..) => unreachable!("answered by feed"),
        }
    }

    /// Signals every process of an instance.
    fn signal_all(&self, id: InstanceId, signal: NixSignal) {
        if let Some(instance) = self.instance(id) {
            kill_instance(instance.leaf.as_ref(), instance.pid.unwrap_or(0), signal);
        }
    }

    /// `Effect::Reload`: note the instance's processes but the main one,
    /// send the reload signal, and watch those processes go.
    fn reload(&mut self, id: InstanceId, signal: Signal) {
        let Some(instance) = self.instance_mut(id) else {
            return;
        };
        let Some(pid) = instance.pid else {
            return;
        };
        let before: Vec<u32> = instance
            .leaf
            .as_ref()
            .and_then(|leaf| leaf.cgroup.pids().ok())
            .unwrap_or_default()
            .into_iter()
            .filter(|p| *p != pid)
            .collect();
        let workers = match workers::Workers::note(before) {
            Ok(workers) => workers,
            Err(err) => {
                tracing::warn!(error = %err, "cannot watch the workers of a reload; it waits for the probe only");
                workers::Workers::note([]).unwrap_or_else(|_| unreachable!("no pid, no pidfd"))
            }
        };
        tracing::info!(pid, instance = %id, workers = workers.len(), %signal, "reloading");
        if let Err(err) = kill(Pid::from_raw(pid as i32), signal.0) {
            tracing::warn!(error = %err, "sending the reload signal");
        }
        instance.reload = Some(tokio::spawn(workers.gone()));
    }

    /// `Effect::Forget`: nothing of the instance is left.
    fn forget(&mut self, id: InstanceId) {
        let Some(i) = self.instances.iter().position(|i| i.id == id) else {
            return;
        };
        let instance = self.instances.swap_remove(i);
        self.unstore_pipes(id);
        if let Some(probe) = instance.probe {
            probe.abort();
        }
        if let Some(reload) = instance.reload {
            reload.abort();
        }
        if let Some(leaf) = instance.leaf {
            self.remove_leaf(leaf);
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

    /// Probes instance `id`: through its private socket when it has one,
    /// so that no other instance can answer for it.
    fn start_probe(&mut self, id: InstanceId) {
        let probe = self.app.spec.readiness.probe.clone();
        let deadline = tokio::time::Instant::now() + self.app.spec.readiness.timeout;
        let Some(instance) = self.instance_mut(id) else {
            return;
        };
        let via = instance.probe_socket.as_ref().map(|s| s.path().to_owned());
        let Some(probe) = probe else {
            return;
        };
        let check = Check { probe, via };
        tracing::debug!(instance = %id, %check, "probing");
        instance.probe = Some(tokio::spawn(readiness::wait_until_ready(check, deadline)));
    }

    /// `Effect::Spawn`: first the file reads a spawn needs, off the
    /// runtime (`spawn::prepare`); the process follows in [`Self::prepared`].
    fn spawn(&mut self, id: InstanceId) {
        self.spawns += 1;
        self.spawned_at = Some(self.logs.mark());
        let reads = self.preparer.prepare(&self.app.spec);
        self.preparing = Some((id, Box::pin(reads)));
    }

    /// Instance `id`'s file reads are in: spawn it, unless the machine has
    /// stopped wanting it meanwhile (it then only waits to hear that no
    /// process was made).
    fn prepared(&mut self, id: InstanceId, result: Result<Prepared, PrepareError>) {
        let wanted = self.machine.state == AppState::Starting
            && self.machine.current.as_ref().map(|i| i.id) == Some(id);
        if !wanted {
            tracing::debug!(instance = %id, "stopped before the process was made");
            self.feed(Event::SpawnFailed {
                instance: id,
                reason: "stopped before the process was made".to_owned(),
            });
            return;
        }
        let spawned = match result {
            Ok(prepared) => self.try_spawn(id, Arc::new(prepared)),
            Err(error) => Err(format!("spawn failed at {error}")),
        };
        match spawned {
            Ok(instance) => self.instances.push(instance),
            Err(reason) => {
                tracing::warn!(%reason, "spawn failed");
                self.feed(Event::SpawnFailed {
                    instance: id,
                    reason,
                });
            }
        }
    }

    /// Sets up what a spawn needs that lives across spawns (cgroup, notify
    /// socket, listen sockets), then spawns instance `id` through the exec
    /// helper.
    fn try_spawn(&mut self, id: InstanceId, prepared: Arc<Prepared>) -> Result<Instance, String> {
        let spec = &self.app.spec;
        if self.cgroup.is_none() {
            if let Some(root) = &self.shared.cgroups {
                let cg = root
                    .app(spec.name.as_str())
                    .map_err(|e| format!("spawn failed at cgroup: {e}"))?;
                self.cgroup = Some(cg);
            }
        }
        // Each instance gets a leaf of its own, so that a start-stop
        // restart's previous instance can be stopped without touching
        // this one.
        let (leaf, populated) = match &self.cgroup {
            Some(cg) => {
                let leaf = cg
                    .child(&id.to_string())
                    .map_err(|e| format!("spawn failed at cgroup: {e}"))?;
                let populated = match &self.shared.watcher {
                    Some(watcher) => Some(
                        watcher
                            .watch(&leaf)
                            .map_err(|e| format!("spawn failed at cgroup watch: {e}"))?,
                    ),
                    None => None,
                };
                // Kept open so the spawn can clone straight into it.
                let dir = std::fs::File::open(leaf.dir())
                    .map(OwnedFd::from)
                    .map_err(|e| format!("spawn failed at cgroup {}: {e}", leaf.dir().display()))?;
                (
                    Some(Leaf { cgroup: leaf, dir }),
                    populated.map(watch_populated),
                )
            }
            None => (None, None),
        };
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
        let probe_socket = if !spec.listen.is_empty() && spec.readiness.probe.is_some() {
            let path = self
                .shared
                .probe_dir
                .join(format!("{}.{id}.sock", spec.name));
            Some(
                ProbeSocket::bind(&path)
                    .map_err(|e| format!("spawn failed at probe socket: {e}"))?,
            )
        } else {
            None
        };
        self.release = prepared.release.as_ref().map(|p| p.display().to_string());
        let limits = self
            .shared
            .limits
            .app(spec.name.as_str(), self.cgroup.as_ref().map(AppCgroup::dir))
            .map_err(|e| format!("spawn failed at cgroup limits: {e}"))?;
        let mut applied = self.shared.default_limits.fill(&spec.limits);
        if spec.limits.tasks.is_none() && !limits.carries(crate::cgroup::Controller::Pids) {
            // A default is best effort: it never keeps an app from starting.
            applied.tasks = None;
        }
        limits
            .apply(&applied)
            .map_err(|e| format!("spawn failed at cgroup limits: {e}"))?;
        self.oom_baseline = limits.oom_kills();
        let extra_cgroup_procs = limits.extra_procs(&applied);
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
            probe_socket: probe_socket.is_some(),
            cgroup_procs: leaf.as_ref().map(|leaf| leaf.cgroup.procs_path()),
            extra_cgroup_procs,
            sandbox: sandbox_inputs(Some(&prepared), &self.shared),
            open_files: Some(self.shared.app_open_files),
        };
        self.prepared = Some(prepared);
        let plan = SpawnPlan::build(spec, &user, &inputs);
        let (out_r, out_w) =
            crate::logs::make_pipe().map_err(|e| format!("spawn failed at pipe: {e}"))?;
        let (err_r, err_w) =
            crate::logs::make_pipe().map_err(|e| format!("spawn failed at pipe: {e}"))?;
        let (pid, exit, report) =
            self.spawn_registered(&plan, leaf.as_ref(), probe_socket.as_ref(), out_w, err_w)?;
        if let Some(store) = &self.shared.fd_store {
            let app = self.app.spec.name.to_string();
            let instance = id.to_string();
            store.push(
                &fdstore::pipe_name(&app, "stdout", &instance),
                out_r.as_fd(),
            );
            store.push(
                &fdstore::pipe_name(&app, "stderr", &instance),
                err_r.as_fd(),
            );
        }
        let pipes = vec![
            self.logs.capture_handing_over(Stream::Stdout, out_r),
            self.logs.capture_handing_over(Stream::Stderr, err_r),
        ];
        Ok(Instance {
            id,
            pid: Some(pid),
            started: None,
            exit: Some(exit),
            report: Some(Box::pin(report.applied())),
            pipes,
            leaf,
            probe_socket,
            populated,
            probe: None,
            reload: None,
            ready_before_report: false,
        })
    }

    fn spawn_registered(
        &self,
        plan: &SpawnPlan,
        leaf: Option<&Leaf>,
        probe_socket: Option<&ProbeSocket>,
        stdout: OwnedFd,
        stderr: OwnedFd,
    ) -> Result<(u32, oneshot::Receiver<ExitStatus>, spawn::ReportReader), String> {
        let mut report = None;
        let (pid, exit) = self.shared.reaper.spawn_registered(|| {
            let mut listen_fds = self
                .listen
                .as_ref()
                .map(HeldSockets::fds)
                .unwrap_or_default();
            listen_fds.extend(probe_socket.map(ProbeSocket::fd));
            let spawned = match leaf {
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
            state: m.state.into(),
            reason,
            pid: m.pid(),
            uptime_secs: None,
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
            log_error: None,
            log_dropped_bytes: 0,
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
        let started_wall = m
            .current
            .as_ref()
            .and_then(|c| self.instances.iter().find(|i| i.id == c.id))
            .and_then(|i| i.started);
        let exposure = {
            let previous = self.snapshot.borrow();
            let same_prepared = match (&previous.prepared, &self.prepared) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            };
            if Arc::ptr_eq(&previous.app, &self.app)
                && Arc::ptr_eq(&previous.sandbox, &self.sandbox)
                && same_prepared
            {
                previous.exposure.clone()
            } else {
                Arc::default()
            }
        };
        self.snapshot.send_replace(Snapshot {
            state: m.state,
            started: m.started_at().zip(started_wall),
            status,
            readiness_failures: self.readiness_failures,
            app: self.app.clone(),
            sandbox: self.sandbox.clone(),
            prepared: self.prepared.clone(),
            exposure,
        });
    }

    fn cleanup(&mut self) {
        if let Some(records) = &self.shared.records {
            records.remove(&self.app.spec.name.to_string());
        }
        let ids: Vec<InstanceId> = self.instances.iter().map(|i| i.id).collect();
        for id in ids {
            self.unstore_pipes(id);
        }
        self.listen = None;
        self.store_listen();
        self.notify = None;
        for instance in std::mem::take(&mut self.instances) {
            if let Some(leaf) = instance.leaf {
                self.remove_leaf(leaf);
            }
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

/// The first instance or timer with something to report, if any.
fn poll_instances(
    instances: &mut [Instance],
    timers: &mut [Timer],
    cx: &mut Context<'_>,
) -> Poll<Wake> {
    for instance in instances.iter_mut() {
        let id = instance.id;
        // The exit waits until the report is in: an app that dies at once
        // must still be seen as spawned (or as a failed spawn) first.
        if let Some(report) = instance.report.as_mut() {
            if let Poll::Ready(outcome) = report.as_mut().poll(cx) {
                return Poll::Ready(Wake::Reported(id, outcome));
            }
        } else if let Some(exit) = instance.exit.as_mut() {
            if let Poll::Ready(status) = Pin::new(exit).poll(cx) {
                // A dropped sender means the reaper is gone: assume the worst.
                let status = status.unwrap_or(ExitStatus::Signal(libc::SIGKILL));
                return Poll::Ready(Wake::Exited(id, status));
            }
        }
        if let Some(populated) = instance.populated.as_mut() {
            if let Poll::Ready((rx, value)) = populated.as_mut().poll(cx) {
                instance.populated = value.map(|_| watch_populated(rx));
                return Poll::Ready(Wake::Populated(id, value));
            }
        }
        if let Some(probe) = instance.probe.as_mut() {
            if let Poll::Ready(result) = Pin::new(probe).poll(cx) {
                instance.probe = None;
                return Poll::Ready(Wake::Probe(id, result.ok()));
            }
        }
        if let Some(reload) = instance.reload.as_mut() {
            if Pin::new(reload).poll(cx).is_ready() {
                instance.reload = None;
                return Poll::Ready(Wake::WorkersGone(id));
            }
        }
    }
    for timer in timers.iter_mut() {
        if timer.sleep.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Wake::Timer(timer.key, timer.generation));
        }
    }
    Poll::Pending
}

/// The next value of a leaf's `populated` watch, with the receiver to
/// watch again; `None` once the watcher is gone.
fn watch_populated(mut rx: watch::Receiver<bool>) -> PopulatedFuture {
    Box::pin(async move {
        let value = match rx.changed().await {
            Ok(()) => Some(*rx.borrow_and_update()),
            Err(_) => None,
        };
        (rx, value)
    })
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
            snapshot.started = None;
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

/// Where the failure report of a request begins: for a start or restart
/// (`attempt`: the spawns before it, and where the attempt under way then
/// began), the latest spawn if one came after the request, else the
/// attempt it joined; `None` for anything else.
fn attempt_began<M: Copy>(
    attempt: Option<(u64, Option<M>)>,
    spawns: u64,
    spawned_at: Option<M>,
) -> Option<M> {
    let (before, joined) = attempt?;
    if spawns > before {
        spawned_at
    } else {
        joined
    }
}

/// How long an exit waits for the app's last output to be captured. The
/// capture tasks reach EOF within a few milliseconds once the instance's
/// cgroup is empty; the bound only matters if the daemon is starved.
const DRAIN_OUTPUT: Duration = Duration::from_secs(1);

/// Waits, at most [`DRAIN_OUTPUT`], until every capture task of an
/// instance has read its pipe to EOF.
async fn drain_output(pipes: Vec<crate::logs::Capture>) {
    let all = async {
        for pipe in pipes {
            // A capture task that panicked has nothing more to give.
            let _ = pipe.task.await;
        }
    };
    if tokio::time::timeout(DRAIN_OUTPUT, all).await.is_err() {
        tracing::warn!(
            "the app's last output was not captured within {DRAIN_OUTPUT:?}; the failure report may miss it"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::attempt_began;

    #[test]
    fn a_failure_report_begins_at_the_attempt_it_is_about() {
        #[rustfmt::skip]
        let cases = [
            // (request: spawns before, attempt under way; spawns now, latest spawn's mark; begins)
            (None, 5, Some(50), None),                    // reload, stop: the request's own mark
            (Some((4, None)), 5, Some(50), Some(50)),      // stop-start restart: the new spawn
            (Some((4, Some(40))), 6, Some(60), Some(60)),  // joined one, failed, retried: the latest
            (Some((5, Some(50))), 5, Some(50), Some(50)),  // a start that joined the attempt under way
            (Some((5, None)), 5, Some(50), None),          // no spawn since, none under way (overtaken)
            (Some((0, None)), 0, None, None),
        ];
        for (attempt, spawns, spawned_at, begins) in cases {
            assert_eq!(
                attempt_began(attempt, spawns, spawned_at),
                begins,
                "{attempt:?}, {spawns} spawns, latest at {spawned_at:?}"
            );
        }
    }
}
