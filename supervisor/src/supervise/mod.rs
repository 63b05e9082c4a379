//! The task per app: it owns the app's processes, pipes, timer, readiness
//! check and cgroup watch, feeds what happens to the pure state machine in
//! `app`, and carries out the effects the machine returns.
//!
//! Nothing here decides policy: every decision is `app::step`'s. One app's
//! task never touches another app's resources, so a failure in one (a
//! spawn error, a hung stop, a flood of output) stays with that app.
//!
//! This file has the task's loop, its commands and the effects; spawning
//! is in `spawning`, publishing the status in `status`, freezing and
//! thawing for a hand-off in `handoff`.

mod handoff;
mod inbox;
pub mod reaper;
mod spawning;
mod status;
pub(crate) mod workers;

pub use handoff::{find_again, monotonic_ns, restore, Found, Frozen, RestoreError};
pub use inbox::Commands;
use inbox::Inbox;
pub use spawning::SpawnError;
pub use status::{bare_status, security, Snapshot, SnapshotCell};
use status::{placeholder_snapshot, sandbox_inputs};

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use appvisor_protocol::{Action, AppStatus, StoppedBy};
use nix::sys::signal::{kill, killpg, Signal as NixSignal};
use nix::unistd::Pid;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Sleep;
use tracing::Instrument;

use crate::app::{
    self, Answer, AppState, Cause, Effect, Event, ExitStatus, InstanceId, Machine, Params,
    ReadySignal, Request, RequestId, StopParams, TimerKey,
};
use crate::audit::Events;
use crate::cgroup::{AppCgroup, AppLimits, CgroupRoot, CgroupWatcher, LimitRoot, Populated};
use crate::config::change::Change;
use crate::config::resolve::ResolvedApp;
use crate::config::{ReadinessKind, Signal};
use crate::listen::{HeldSockets, ProbeSocket};
use crate::logs::{AppLogs, LogMark};
use crate::readiness::{self, Check, NotifySocket};
use crate::sandbox::SpawnRecord;
use crate::spawn::{self, Preparation, Prepared, Preparer};
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
    /// What the last spawn's file reads and exec helper reported, for
    /// apps whose spawns report the same to share.
    pub latest_prepared: Latest<Prepared>,
    pub latest_sandbox: Latest<SpawnRecord>,
}

/// The value the last app kept, for the next app whose value is the same
/// to share rather than copy: a thousand apps of one kind (one venv, one
/// sandbox) would otherwise each hold the same few hundred bytes. Holds
/// only a weak reference: the value goes with the last app that holds it.
#[derive(Debug)]
pub struct Latest<T>(std::sync::Mutex<std::sync::Weak<T>>);

impl<T> Default for Latest<T> {
    fn default() -> Latest<T> {
        Latest(std::sync::Mutex::new(std::sync::Weak::new()))
    }
}

impl<T: PartialEq> Latest<T> {
    /// `value`, shared with the last value kept if the two are equal.
    pub fn share(&self, value: T) -> Arc<T> {
        // The weak pointer is replaced whole.
        let mut latest = crate::locks::lock(&self.0);
        if let Some(kept) = latest.upgrade().filter(|kept| **kept == value) {
            return kept;
        }
        let value = Arc::new(value);
        *latest = Arc::downgrade(&value);
        value
    }
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
        reply: oneshot::Sender<Result<(), SignalError>>,
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

/// Why `Command::Signal` sent nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignalError {
    /// The app has no main process (it is not running).
    #[error("{app} has no running process")]
    NoProcess { app: String },
    /// kill(2) refused.
    #[error("{}", .0.desc())]
    Kill(nix::errno::Errno),
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

/// The app's task has ended; nothing can be sent to it any more.
#[derive(Debug)]
pub struct TaskGone;

/// The control plane's end of an app's task.
#[derive(Debug)]
pub struct Handle {
    pub commands: Commands,
    pub snapshot: SnapshotCell,
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
    let (commands, rx) = inbox::channel();
    let app_for_snapshot = app.clone();
    let sup = Supervisor {
        machine,
        pending: VecDeque::new(),
        app,
        shared,
        logs: logs.clone(),
        instances: Vec::new(),
        timers: Vec::new(),
        held: Held::default(),
        spawns: Spawns::default(),
        callers: Callers::default(),
        shown: Shown {
            since_wall: SystemTime::now(),
            readiness_failures: 0,
            stopped_by,
            notify_status: None,
        },
        shutdown: false,
        freeze: None,
        saved: None,
        snapshot: SnapshotCell::new(placeholder_snapshot(&app_for_snapshot)),
    };
    let span = app_span(&sup.app);
    launch(sup, commands, rx, autostart, logs, span)
}

/// The span of app `app`'s task, which its output capture shares.
fn app_span(app: &ResolvedApp) -> tracing::Span {
    tracing::info_span!("app", app = %app.spec.name)
}

/// Publishes the first status of `sup` and starts its task in `span`.
fn launch(
    mut sup: Supervisor,
    commands: Commands,
    rx: Inbox,
    autostart: bool,
    logs: Arc<AppLogs>,
    span: tracing::Span,
) -> Handle {
    sup.publish(false);
    let snapshot = sup.snapshot.clone();
    let guard = PanicGuard {
        name: sup.app.spec.name.to_string(),
        shared: sup.shared.clone(),
        snapshot: sup.snapshot.clone(),
    };
    // One task per app, the guard around `run`: a second task to await
    // the first would cost every app another task. `run` boxed, not
    // moved into the guard's future: that could keep two copies of it.
    // The supervisor boxed too: an async fn's future keeps a value moved
    // into it both as the argument and as the body's local, so `run`
    // takes a pointer to it rather than its kilobyte.
    let run: Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(Box::new(sup).run(rx, autostart));
    let task = tokio::spawn(guard.watch(run).instrument(span));
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

/// Resolves once a spawn's file reads (and the listen sockets' rebind
/// that needs the file system, and its cgroupfs work) are done (see
/// `spawn::prepare`).
type PrepareFuture = Pin<Box<dyn Future<Output = Preparation<Box<spawning::Made>>> + Send>>;

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
    /// The capture of its output, until it ended or was handed over.
    output: Option<crate::logs::Capture>,
    leaf: Option<Leaf>,
    /// Its private socket for the readiness probe: apps with `[[listen]]`
    /// sockets and a probe.
    probe_socket: Option<ProbeSocket>,
    /// The leaf's `populated`; `None` without a watcher, or once it ended.
    populated: Option<Populated>,
    probe: Option<JoinHandle<Result<(), readiness::ProbeError>>>,
    /// A reload under way: resolves once the processes noted before the
    /// reload signal are gone.
    reload: Option<JoinHandle<()>>,
    /// READY=1 came before the exec helper's report was read: the machine
    /// learns of the spawn from the report, so the readiness waits for it.
    ready_before_report: bool,
}

impl Instance {
    /// Instance `id`, whose main process is `pid`, with what its spawn (or
    /// a hand-off) gave it; nothing reported, probed or reloading yet.
    fn new(
        id: InstanceId,
        pid: u32,
        exit: Option<oneshot::Receiver<ExitStatus>>,
        output: Option<crate::logs::Capture>,
        leaf: Option<Leaf>,
        probe_socket: Option<ProbeSocket>,
        populated: Option<Populated>,
    ) -> Instance {
        Instance {
            id,
            pid: Some(pid),
            started: None,
            exit,
            report: None,
            output,
            leaf,
            probe_socket,
            populated,
            probe: None,
            reload: None,
            ready_before_report: false,
        }
    }
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

/// An app's task: the machine, and the shell's parts around it.
struct Supervisor {
    machine: Machine,
    /// Events produced by effects, fed after the current step.
    pending: VecDeque<Event>,
    app: Arc<ResolvedApp>,
    shared: Arc<Shared>,
    logs: Arc<AppLogs>,
    /// Every instance the machine knows.
    instances: Vec<Instance>,
    /// The machine's armed timers.
    timers: Vec<Timer>,
    held: Held,
    spawns: Spawns,
    callers: Callers,
    shown: Shown,
    /// Stopping for good: the task ends once nothing of the app is left.
    shutdown: bool,
    /// A hand-off waits for this task to freeze.
    freeze: Option<oneshot::Sender<Frozen>>,
    /// The fingerprint of the record last saved for a crash
    /// (`save_record`).
    saved: Option<u64>,
    /// Shared with the task's guard, which reports a panic here.
    snapshot: SnapshotCell,
}

/// What the app holds across spawns, set up by the first spawn that needs
/// it.
#[derive(Default)]
struct Held {
    /// The app's cgroup; each instance runs in a leaf below it.
    cgroup: Option<AppCgroup>,
    /// Where the app's `[limits]` are written.
    limits: Option<AppLimits>,
    /// The memory cgroup's OOM-kill count at the last spawn.
    oom_baseline: Option<u64>,
    /// Boxed, as is `retired_notify`: most apps have none, and inline each
    /// would widen every app's `Supervisor` by its 120 bytes (into malloc's
    /// next size class).
    notify: Option<Box<NotifySocket>>,
    /// A notify socket given up (new settings, or it failed), to be closed
    /// and its file removed off the runtime: by the next spawn's
    /// preparation job, before that spawn binds the next one at the same
    /// path, or by [`Supervisor::removed`].
    retired_notify: Option<Box<NotifySocket>>,
    /// The `[[listen]]` sockets, bound at the first spawn and kept across
    /// restarts and reloads until the app is stopped by request
    /// (`Effect::CloseSockets`), removed, or its listen set changes.
    listen: Option<HeldSockets>,
    /// While the listen sockets are out with a spawn's preparation, to be
    /// rebound off the runtime (`listen::Rebind`): whether to keep what
    /// comes back; `false` once the app was stopped by request meanwhile.
    rebinding: Option<bool>,
    /// The held listen sockets in the fd store, by fd number.
    stored: Vec<i32>,
    /// Forgotten instances' leaf cgroups and probe socket files being
    /// removed on the blocking pool ([`Supervisor::forget`]): the app's
    /// cgroup can go, and a hand-off can begin, only once they are done.
    removing: Vec<JoinHandle<()>>,
}

/// The spawn under way and what the last one learnt.
#[derive(Default)]
struct Spawns {
    preparer: Preparer,
    /// The instance waiting for its spawn's file reads; its process is
    /// made once they are in.
    preparing: Option<(InstanceId, PrepareFuture)>,
    /// What the last spawn learnt from the file system.
    prepared: Option<Arc<Prepared>>,
    /// What the exec helper enforced at the last spawn.
    /// Shared with every snapshot: republished at each state change,
    /// changed only by a spawn's report.
    sandbox: Arc<SpawnRecord>,
    /// The release directory the last spawn ran from.
    release: Option<String>,
    /// Spawns so far, and where the output stood at the latest.
    count: u64,
    spawned_at: Option<LogMark>,
}

/// Callers waiting for the machine's answer.
#[derive(Default)]
struct Callers {
    waiting: Vec<Waiting>,
    /// The id of the last request.
    last: u64,
}

/// What status shows beside the machine's state and reason.
struct Shown {
    /// When the state began, by the wall clock.
    since_wall: SystemTime,
    /// Starts that did not become ready within the readiness timeout.
    readiness_failures: u64,
    stopped_by: Option<StoppedBy>,
    /// The app's last `STATUS=` while it runs.
    notify_status: Option<String>,
}

/// What woke the task up.
enum Wake {
    Command(Option<Box<Command>>),
    Prepared(InstanceId, Preparation<Box<spawning::Made>>),
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
    async fn run(mut self: Box<Self>, mut commands: Inbox, autostart: bool) {
        // Before anything runs that could write output: what comes before
        // the files are open is dropped. Commands wait in the channel.
        open_log_files(&self.logs).await;
        if autostart {
            self.feed(Event::Start(Cause::Autostart.into()));
        }
        loop {
            if self.shutdown && self.is_down() {
                Box::pin(self.cleanup()).await;
                return;
            }
            self.save_record();
            // A hand-off that gave up waiting withdraws its request.
            if self.freeze.as_ref().is_some_and(|reply| reply.is_closed()) {
                self.freeze = None;
            }
            if self.freeze.is_some() && self.is_settled() {
                // The successor finds no leaf of a forgotten instance.
                Box::pin(self.removed()).await;
                // Boxed, as the exit below: awaited once or rarely, they
                // would otherwise widen every app's task by their size.
                let frozen = Box::pin(self.freeze_now()).await;
                if let Some(reply) = self.freeze.take() {
                    if reply.send(frozen).is_err() {
                        tracing::error!("a hand-off gave up while this app froze; it runs unsupervised until appvisord restarts");
                    }
                }
                return;
            }
            // The exit is awaited outside the match: a `Wake` (the largest
            // of its variants, a spawn's report) kept across that await
            // would sit in every app's task future.
            let exited = match self.next(&mut commands).await {
                Wake::Exited(id, status) => Some((id, status)),
                wake => {
                    self.woke(wake);
                    None
                }
            };
            if let Some((id, status)) = exited {
                Box::pin(self.exited(id, status)).await;
            }
        }
    }

    /// Handles what woke the task up, but an exit (awaited in `run`).
    fn woke(&mut self, wake: Wake) {
        match wake {
            Wake::Command(None) => {
                // The daemon dropped the handle: treat as shutdown.
                self.begin_shutdown(Cause::Shutdown);
            }
            Wake::Command(Some(cmd)) => self.command(*cmd),
            Wake::Prepared(id, preparation) => {
                self.spawns.preparing = None;
                self.prepared(id, preparation);
            }
            Wake::Reported(id, outcome) => self.reported(id, outcome),
            Wake::Exited(..) => unreachable!("awaited in run"),
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
                self.retire_notify();
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

    /// Waits for the next thing that needs handling.
    async fn next(&mut self, commands: &mut Inbox) -> Wake {
        let Supervisor {
            instances,
            timers,
            held: Held { notify, .. },
            shutdown,
            spawns: Spawns { preparing, .. },
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
            (id, preparation) = prepared => Wake::Prepared(id, preparation),
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
                self.callers.last += 1;
                let id = RequestId(self.callers.last);
                self.callers.waiting.retain(|w| !w.reply.is_closed());
                let attempt = matches!(action, Action::Start | Action::Restart).then(|| {
                    let under_way = self.machine.state() == AppState::Starting;
                    (
                        self.spawns.count,
                        self.spawns.spawned_at.filter(|_| under_way),
                    )
                });
                self.callers.waiting.push(Waiting { id, reply, attempt });
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
                    Action::Stop => self.shown.stopped_by = stopped_by,
                    Action::Start | Action::Restart => self.shown.stopped_by = None,
                    Action::Reload | Action::Signal => {}
                }
                self.feed(event);
                if !wait {
                    // Taken: the status the caller reads now shows it. A
                    // refusal was answered by the step itself.
                    if let Some(i) = self.callers.waiting.iter().position(|w| w.id == id) {
                        let waiting = self.callers.waiting.swap_remove(i);
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
                        kill(Pid::from_raw(pid as i32), signal.0).map_err(SignalError::Kill)
                    }
                    None => Err(SignalError::NoProcess {
                        app: self.app.spec.name.to_string(),
                    }),
                };
                let _ = reply.send(result);
            }
            Command::Replace { app, change, reply } => {
                self.app = app;
                if change.restart {
                    // Bound again at the next spawn, for the new file's user.
                    self.retire_notify();
                }
                self.logs.update_spec(&self.app.spec.logs);
                tracing::info!(keys = ?change.keys, restart = change.restart, "settings changed");
                // Feeding publishes the new settings (description, app
                // groups) even when the state stays as it was.
                self.feed(Event::Replace {
                    params: params(&self.app),
                    restart: change.restart,
                    start: change.start && self.shown.stopped_by.is_none(),
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
                self.machine.state(),
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
        let release = self.spawns.release.clone();
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
                self.spawns.sandbox = self.shared.latest_sandbox.share(SpawnRecord {
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
                    Arc::make_mut(&mut self.spawns.sandbox).refusal = Some(failure.detail.clone());
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
            // Nobody holds the write ends any more: let the capture
            // read what the app wrote last (often the traceback that says
            // why it died) before the exit becomes a reason and a failure
            // report with the last log lines.
            if let Some(output) = instance.output.take() {
                drain_output(output).await;
            }
        }
        // Otherwise a daemonized grandchild may keep the pipes open: the
        // capture ends by itself once it has gone.
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
        let now = self.held.limits.as_ref().and_then(AppLimits::oom_kills);
        match (now, self.held.oom_baseline) {
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
            if let Some(notify) = &self.held.notify {
                notify.ignored_sender(&msg);
            }
            return;
        };
        let current = self.machine.is_current(id);
        if let Some(status) = msg.status().filter(|_| current) {
            self.shown.notify_status = Some(status.to_owned());
        }
        if msg.is_ready() {
            // The helper writes its report before it execs the app, but the
            // two arrive on different descriptors and either may be read
            // first; a READY=1 the machine saw before the spawn would be
            // lost, and the start would time out.
            if let Some(instance) = self.instance_mut(id).filter(|i| i.report.is_some()) {
                tracing::debug!(instance = %id, "READY=1 before the exec helper's report: kept for it");
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
        let before = self.machine.state();
        let mut answers = Vec::new();
        self.pending.push_back(event);
        while let Some(event) = self.pending.pop_front() {
            let (machine, effects) = app::step(&self.machine, event, Instant::now());
            // Only the readiness timeout stops a start to fail it.
            if !self.machine.failing_start() && machine.failing_start() {
                self.shown.readiness_failures += 1;
            }
            self.machine = machine;
            for effect in effects {
                match effect {
                    Effect::Answer(id, answer) => answers.push((id, answer)),
                    effect => self.effect(effect),
                }
            }
        }
        // Its few slots freed: kept, they would sit in every idle app's task.
        self.pending = VecDeque::new();
        let changed = self.machine.state() != before;
        if changed {
            self.shown.since_wall = SystemTime::now();
            if self.machine.state() != AppState::Running {
                self.shown.notify_status = None;
            }
            tracing::info!(from = ?before, to = ?self.machine.state(), reason = %self.machine.reason(), "state changed");
        }
        self.publish(changed);
        for (id, answer) in answers {
            if let Some(i) = self.callers.waiting.iter().position(|w| w.id == id) {
                let waiting = self.callers.waiting.swap_remove(i);
                let attempt_began =
                    attempt_began(waiting.attempt, self.spawns.count, self.spawns.spawned_at);
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
                if let Some(sockets) = self.held.listen.take() {
                    // Their files go on the blocking pool; nothing waits.
                    drop(sockets.close());
                    tracing::debug!("stopped: closed the listen sockets");
                }
                if let Some(keep) = self.held.rebinding.as_mut() {
                    *keep = false;
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
    /// send the reload signal, and watch those processes go. The noting
    /// reads the leaf's `cgroup.procs`: on the blocking pool, and the
    /// signal after it, through a pidfd opened now, so that it never
    /// reaches a process that took the main process's pid over meanwhile.
    fn reload(&mut self, id: InstanceId, signal: Signal) {
        let Some(instance) = self.instance_mut(id) else {
            return;
        };
        let Some(pid) = instance.pid else {
            return;
        };
        let main = workers::pidfd_open(pid)
            .map_err(|err| tracing::warn!(error = %err, "sending the reload signal"))
            .ok();
        let leaf = instance.leaf.as_ref().map(|leaf| leaf.cgroup.clone());
        let span = tracing::Span::current();
        let noted = tokio::task::spawn_blocking(move || {
            let _span = span.enter();
            let before: Vec<u32> = leaf
                .and_then(|cgroup| cgroup.pids().ok())
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
            if let Some(main) = main {
                if let Err(err) = workers::pidfd_send_signal(&main, signal.0) {
                    tracing::warn!(error = %err, "sending the reload signal");
                }
            }
            workers
        });
        instance.reload = Some(tokio::spawn(async move {
            // A job that panicked noted nothing to wait for.
            if let Ok(workers) = noted.await {
                workers.gone().await;
            }
        }));
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
        if let Some(leaf) = &instance.leaf {
            self.unwatch_leaf(leaf);
        }
        if instance.leaf.is_none() && instance.probe_socket.is_none() {
            return;
        }
        // An rmdir in cgroupfs and an unlink in the probe directory.
        let (leaf, probe_socket) = (instance.leaf, instance.probe_socket);
        self.remove_off_runtime(move || {
            drop(probe_socket);
            if let Some(leaf) = leaf {
                remove_leaf(leaf);
            }
        });
    }

    /// Runs `remove` (file system work: rmdirs in cgroupfs, unlinks) on the
    /// blocking pool rather than the runtime, in the app's span;
    /// [`Self::removed`] waits for it.
    fn remove_off_runtime(&mut self, remove: impl FnOnce() + Send + 'static) {
        let span = tracing::Span::current();
        self.held.removing.retain(|job| !job.is_finished());
        self.held
            .removing
            .push(tokio::task::spawn_blocking(move || {
                let _span = span.enter();
                remove();
            }));
    }

    fn unwatch_leaf(&self, leaf: &Leaf) {
        if let Some(watcher) = &self.shared.watcher {
            watcher.unwatch(&leaf.cgroup);
        }
    }

    /// Gives the notify socket up; see [`Held::retired_notify`].
    fn retire_notify(&mut self) {
        if let Some(socket) = self.held.notify.take() {
            // One retired already was never bound over: this one's file
            // is newer, and its drop leaves that alone.
            self.held.retired_notify = Some(socket);
        }
    }

    /// Waits until the removals [`Self::forget`] began are done, and a
    /// retired notify socket's.
    async fn removed(&mut self) {
        if let Some(socket) = self.held.retired_notify.take() {
            let span = tracing::Span::current();
            self.held
                .removing
                .push(tokio::task::spawn_blocking(move || {
                    let _span = span.enter();
                    drop(socket);
                }));
        }
        for job in std::mem::take(&mut self.held.removing) {
            if let Err(err) = job.await {
                tracing::warn!(error = %err, "removing a forgotten instance's files");
            }
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

    /// The app is gone: what it held is released, its files and cgroups
    /// removed on the blocking pool (socket files in directories its owner
    /// may have put on a hung mount, rmdirs in cgroupfs), and waited for,
    /// so the daemon exits only once they are.
    async fn cleanup(&mut self) {
        if let Some(records) = &self.shared.records {
            records.remove(&self.app.spec.name.to_string());
        }
        let ids: Vec<InstanceId> = self.instances.iter().map(|i| i.id).collect();
        for id in ids {
            self.unstore_pipes(id);
        }
        let listen = self.held.listen.take();
        self.store_listen();
        let notify = self.held.notify.take();
        let (mut leaves, mut probe_sockets) = (Vec::new(), Vec::new());
        for mut instance in std::mem::take(&mut self.instances) {
            if let Some(leaf) = instance.leaf.take() {
                self.unwatch_leaf(&leaf);
                leaves.push(leaf);
            }
            probe_sockets.extend(instance.probe_socket.take());
        }
        let cgroup = self.held.cgroup.take();
        if let (Some(cg), Some(watcher)) = (&cgroup, &self.shared.watcher) {
            watcher.unwatch(cg);
        }
        let limits = self.held.limits.take();
        // The app's cgroup goes after every leaf below it.
        self.removed().await;
        if let Some(files) = listen.and_then(HeldSockets::close) {
            let _ = files.await;
        }
        let span = tracing::Span::current();
        let released = tokio::task::spawn_blocking(move || {
            let _span = span.enter();
            drop(notify);
            drop(probe_sockets);
            leaves.into_iter().for_each(remove_leaf);
            if let Some(cg) = cgroup {
                if let Err(err) = cg.remove() {
                    tracing::debug!(error = %err, "removing the app's cgroup");
                }
            }
            if let Some(limits) = limits {
                if let Err(err) = limits.remove() {
                    tracing::debug!(error = %err, "removing the app's limit cgroups");
                }
            }
        });
        if let Err(err) = released.await {
            tracing::warn!(error = %err, "removing the app's files and cgroups");
        }
    }
}

/// Removes an instance's leaf cgroup: an rmdir in cgroupfs, for the
/// blocking pool.
fn remove_leaf(leaf: Leaf) {
    if let Err(err) = leaf.cgroup.remove() {
        tracing::debug!(error = %err, "removing an instance cgroup");
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
            if let Poll::Ready(value) = populated.poll_changed(cx) {
                if value.is_none() {
                    instance.populated = None;
                }
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

/// What is left to do if an app's task panics (a bug in appvisord): its
/// processes would run on unsupervised and its status would freeze, so
/// kill them and say so in the status. No other app is touched.
struct PanicGuard {
    name: String,
    shared: Arc<Shared>,
    snapshot: SnapshotCell,
}

impl PanicGuard {
    /// Runs `run` to its end; if it panics, kills the app's processes
    /// and says so in its status.
    async fn watch(self, run: Pin<Box<dyn Future<Output = ()> + Send>>) {
        let Some(message) = catch_panic(run).await else {
            return;
        };
        tracing::error!(panic = %message, "the app's supervisor task panicked (a bug in appvisord); killing its processes");
        if let Some(root) = &self.shared.cgroups {
            if let Err(err) = root.app(&self.name).and_then(|cg| cg.kill()) {
                tracing::error!(error = %err, "killing the processes of an app whose supervisor panicked");
            }
        }
        self.snapshot.modify(|snapshot| {
            snapshot.state = AppState::Fatal;
            snapshot.started = None;
            snapshot.set_status(AppStatus {
                state: appvisor_protocol::State::Fatal,
                pid: None,
                reason: format!(
                    "appvisord bug: supervising {} failed ({message}); its processes were killed; restart appvisord and report the bug",
                    self.name
                ),
                ..snapshot.status()
            });
        });
    }
}

/// Polls `run` to its end, catching a panic as tokio would for a task of
/// its own: `None` if it ended, else the panic's message. What is left of
/// `run` is dropped before this returns.
async fn catch_panic(mut run: Pin<Box<dyn Future<Output = ()> + Send>>) -> Option<String> {
    let payload = poll_fn(|cx| {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(())) => Poll::Ready(None),
            Err(payload) => Poll::Ready(Some(payload)),
        }
    })
    .await?;
    drop(run);
    Some(match payload.downcast::<String>() {
        Ok(text) => *text,
        Err(payload) => payload
            .downcast::<&str>()
            .map(|text| (*text).to_owned())
            .unwrap_or_else(|_| "no message".to_owned()),
    })
}

/// Sends `signal` to every process of one instance: its leaf cgroup's, or
/// without cgroups its process group (`pid` leads it: the exec helper
/// calls setsid). The cgroup's are found, or killed, in cgroupfs (a read of
/// `cgroup.procs`, a write of `cgroup.kill`; on a kernel without it, passes
/// over `cgroup.procs` for up to about 100 ms): on the blocking pool, and
/// nothing waits for it.
fn kill_instance(leaf: Option<&Leaf>, pid: u32, signal: NixSignal) {
    let Some(leaf) = leaf else {
        if pid > 0 {
            let _ = killpg(Pid::from_raw(pid as i32), signal);
        }
        return;
    };
    let cgroup = leaf.cgroup.clone();
    let span = tracing::Span::current();
    drop(tokio::task::spawn_blocking(move || {
        let _span = span.enter();
        let result = match signal {
            NixSignal::SIGKILL => cgroup.kill(),
            signal => cgroup.signal_all(signal).map(|_| ()),
        };
        if let Err(err) = result {
            tracing::warn!(error = %err, ?signal, "signalling an instance's processes");
        }
    }));
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
/// captures reach EOF within a few milliseconds once the instance's
/// cgroup is empty; the bound only matters if the daemon is starved.
const DRAIN_OUTPUT: Duration = Duration::from_secs(1);

/// Waits, at most [`DRAIN_OUTPUT`], until the capture of an instance has
/// read both its pipes to EOF.
async fn drain_output(output: crate::logs::Capture) {
    if tokio::time::timeout(DRAIN_OUTPUT, output.ended())
        .await
        .is_err()
    {
        tracing::warn!(
            "the app's last output was not captured within {DRAIN_OUTPUT:?}; the failure report may miss it"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::attempt_began;

    #[tokio::test]
    async fn a_panic_in_the_task_is_caught_with_its_message() {
        let ended = super::catch_panic(Box::pin(async {
            tokio::task::yield_now().await;
        }));
        assert_eq!(ended.await, None);
        let panicked = super::catch_panic(Box::pin(async {
            tokio::task::yield_now().await;
            panic!("boom {}", 7);
        }));
        assert_eq!(panicked.await.as_deref(), Some("boom 7"));
        let with_str = super::catch_panic(Box::pin(async { panic!("plain") }));
        assert_eq!(with_str.await.as_deref(), Some("plain"));
    }

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
