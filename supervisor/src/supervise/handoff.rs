//! An app's task frozen for a hand-off, and a task started again from what
//! a frozen one handed over (in the binary a hand-off execs, or in the same
//! process when the exec did not happen).
//!
//! A task freezes only between two events and with no transition under
//! way (`Supervisor::is_settled`): stopped, exited, fatal, backoff, or
//! running with exactly one instance and nothing pending. So a hand-off
//! never carries a half-done spawn, stop, probe or reload, and the state
//! machine restarts from a state it reached by itself.

use std::collections::{BTreeMap, VecDeque};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::oneshot;

use super::{
    launch, params, placeholder_snapshot, Callers, Handle, Held, Instance, Leaf, Shared, Shown,
    SnapshotCell, Spawns, Supervisor, Timer,
};
use crate::app::{
    Cause, ExitStatus, InstanceId, Machine, Settled, SettledInstance, SettledState, StopParams,
    TimerKey,
};
use crate::cgroup::{AppCgroup, AppLimits, Populated};
use crate::config::resolve::ResolvedApp;
use crate::config::Signal;
use crate::handoff::fdstore;
use crate::handoff::state::{
    self, AppRecord, CauseRecord, ExitRecord, InstanceRecord, ListenRecord, RecordState,
    UnixFileRecord,
};
use crate::listen::{HandedFile, HandedOver, HeldSockets, ProbeSocket};
use crate::logs::AppLogs;
use crate::readiness::NotifySocket;

/// What a frozen task handed over: its record, the fds the record names
/// (owned here until they are passed on), and the exit of its main process
/// if the reaper still has to report it.
#[derive(Debug)]
pub struct Frozen {
    pub record: AppRecord,
    pub fds: Vec<OwnedFd>,
    pub exit: Option<oneshot::Receiver<ExitStatus>>,
}

impl Frozen {
    /// The main process whose exit the reaper must keep for the successor.
    pub fn pid(&self) -> Option<u32> {
        self.record.current.as_ref().map(|c| c.pid)
    }

    /// Called once the reaper is paused: an exit reaped between the freeze
    /// and the pause goes into the record, for the successor to feed.
    pub fn note_exit(&mut self) {
        let Some(exit) = self.exit.as_mut() else {
            return;
        };
        if let Ok(status) = exit.try_recv() {
            if let Some(current) = self.record.current.as_mut() {
                current.exit = Some(exit_record(status));
            }
            self.exit = None;
        }
    }
}

/// Why a record cannot become a task again.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("{app}: fd {fd} named in the hand-off state is not open")]
    MissingFd { app: String, fd: i32 },
    #[error("{app}: the instance cgroup {}: {source}", path.display())]
    Leaf {
        app: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{app}: {source}")]
    Cgroup {
        app: String,
        source: crate::cgroup::CgroupError,
    },
    #[error("{app}: the hand-off state says {state:?} with a running instance: {instance}, with a backoff timer: {backoff}")]
    Inconsistent {
        app: String,
        state: RecordState,
        instance: bool,
        backoff: bool,
    },
}

/// CLOCK_MONOTONIC now, in ns: the clock std's `Instant` reads, shared
/// by the process before and after exec.
pub fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| {
            u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000_000
                + u64::try_from(t.tv_nsec()).unwrap_or(0)
        })
        .unwrap_or(0)
}

fn to_ns(now: (Instant, u64), at: Instant) -> u64 {
    state::instant_to_ns(now.1, now.0.saturating_duration_since(at))
}

fn from_ns(now: (Instant, u64), at_ns: u64) -> Instant {
    now.0
        .checked_sub(state::age_of(now.1, at_ns))
        .unwrap_or(now.0)
}

fn unix_ms(at: SystemTime) -> Option<u64> {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .ok()
        .and_then(|d| u64::try_from(d.as_millis()).ok())
}

fn exit_record(status: ExitStatus) -> ExitRecord {
    match status {
        ExitStatus::Code(code) => ExitRecord::Code(code),
        ExitStatus::Signal(signal) => ExitRecord::Signal(signal),
        ExitStatus::MemoryLimit { limit } => ExitRecord::MemoryLimit(limit),
        ExitStatus::Unknown => ExitRecord::Unknown,
    }
}

fn exit_status(record: ExitRecord) -> ExitStatus {
    match record {
        ExitRecord::Code(code) => ExitStatus::Code(code),
        ExitRecord::Signal(signal) => ExitStatus::Signal(signal),
        ExitRecord::MemoryLimit(limit) => ExitStatus::MemoryLimit { limit },
        ExitRecord::Unknown => ExitStatus::Unknown,
    }
}

fn cause_record(cause: &Cause) -> CauseRecord {
    match cause {
        Cause::Autostart => CauseRecord::Autostart,
        Cause::Operator(user) => CauseRecord::Operator(user.clone()),
        Cause::Config => CauseRecord::Config,
        Cause::Shutdown => CauseRecord::Shutdown,
    }
}

fn cause(record: &CauseRecord) -> Cause {
    match record {
        CauseRecord::Autostart => Cause::Autostart,
        CauseRecord::Operator(user) => Cause::Operator(user.clone()),
        CauseRecord::Config => Cause::Config,
        CauseRecord::Shutdown => Cause::Shutdown,
    }
}

fn record_state(state: &SettledState) -> RecordState {
    match state {
        SettledState::Stopped => RecordState::Stopped,
        SettledState::Running(_) => RecordState::Running,
        SettledState::Backoff { .. } => RecordState::Backoff,
        SettledState::Exited => RecordState::Exited,
        SettledState::Fatal => RecordState::Fatal,
    }
}

/// The machine `record` describes, as of `now`; `stop_signal` is the
/// app's, for an instance whose recorded one is not a signal. A record
/// names a running instance exactly when it is in `running`, and a backoff
/// schedule whenever it is in `backoff`: the freeze writes nothing else.
fn settled(
    record: &AppRecord,
    stop_signal: Signal,
    now: (Instant, u64),
) -> Result<Settled, RestoreError> {
    let state = match (record.state, &record.current, record.backoff) {
        (RecordState::Running, Some(current), _) => SettledState::Running(SettledInstance {
            id: InstanceId(current.id),
            pid: current.pid,
            spawned: from_ns(now, current.spawned_ns),
            ready_at: current.ready_ns.map(|ns| from_ns(now, ns)),
            notified: current.notified,
            probed: current.probed,
            stop: StopParams {
                signal: nix::sys::signal::Signal::try_from(current.stop_signal)
                    .map(Signal)
                    .unwrap_or(stop_signal),
                timeout: Duration::from_millis(current.stop_timeout_ms),
            },
        }),
        (RecordState::Backoff, None, Some((timer, _))) => SettledState::Backoff { timer },
        (RecordState::Stopped, None, _) => SettledState::Stopped,
        (RecordState::Exited, None, _) => SettledState::Exited,
        (RecordState::Fatal, None, _) => SettledState::Fatal,
        (state, current, backoff) => {
            return Err(RestoreError::Inconsistent {
                app: record.name.clone(),
                state,
                instance: current.is_some(),
                backoff: backoff.is_some(),
            })
        }
    };
    Ok(Settled {
        state,
        reason: record.reason.clone(),
        since: from_ns(now, record.since_ns),
        failures: record.failures,
        restarts: record.restarts,
        cause: record.cause.as_ref().map(cause),
        last_instance: record.last_instance,
        timer_generation: record.timer_generation,
        rng: record.rng,
    })
}

/// Hands `fd` over: its number goes in the record, the fd in `fds`.
fn keep(fds: &mut Vec<OwnedFd>, fd: OwnedFd) -> i32 {
    let raw = fd.as_raw_fd();
    fds.push(fd);
    raw
}

impl Supervisor {
    /// No transition is under way: the app can be handed over as it is.
    pub(super) fn is_settled(&self) -> bool {
        if self.spawns.preparing.is_some() || !self.pending.is_empty() {
            return false;
        }
        match self.machine.settled().map(|s| s.state) {
            None => false,
            Some(SettledState::Running(current)) => {
                self.instances.len() == 1
                    && self.instances.iter().all(|i| {
                        i.id == current.id
                            && i.report.is_none()
                            && i.exit.is_some()
                            && i.probe.is_none()
                            && i.reload.is_none()
                    })
            }
            Some(_) => self.instances.is_empty(),
        }
    }

    /// The app's record as it stands, naming no fd: what a hand-off
    /// carries, before the fds are taken (`freeze_now`), and what a crash
    /// leaves for a successor (`save_record`). Only for a settled task
    /// (`is_settled`).
    pub(super) fn record(&self, now: (Instant, u64)) -> AppRecord {
        let settled = self.machine.settled().expect("recorded only once settled");
        let backoff = self
            .timers
            .iter()
            .find(|t| t.key == TimerKey::Backoff)
            .map(|t| {
                let due = t.sleep.deadline().into_std();
                let due_ns = now.1
                    + u64::try_from(due.saturating_duration_since(now.0).as_nanos()).unwrap_or(0);
                (t.generation, due_ns)
            });
        let current = match &settled.state {
            SettledState::Running(machine_instance) => self
                .instances
                .iter()
                .find(|i| i.id == machine_instance.id)
                .map(|instance| InstanceRecord {
                    id: machine_instance.id.0,
                    pid: machine_instance.pid,
                    spawned_ns: to_ns(now, machine_instance.spawned),
                    started_unix_ms: instance.started.and_then(unix_ms),
                    ready_ns: machine_instance.ready_at.map(|at| to_ns(now, at)),
                    notified: machine_instance.notified,
                    probed: machine_instance.probed,
                    stop_signal: machine_instance.stop.signal.0 as i32,
                    stop_timeout_ms: u64::try_from(machine_instance.stop.timeout.as_millis())
                        .unwrap_or(u64::MAX),
                    stdout_fd: None,
                    stderr_fd: None,
                    probe: None,
                    leaf: instance.leaf.is_some(),
                    exit: None,
                }),
            _ => None,
        };
        AppRecord {
            name: self.app.spec.name.to_string(),
            state: record_state(&settled.state),
            reason: settled.reason.clone(),
            since_ns: to_ns(now, settled.since),
            since_unix: self
                .shown
                .since_wall
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            failures: settled.failures,
            restarts: settled.restarts,
            last_instance: settled.last_instance,
            timer_generation: settled.timer_generation,
            rng: settled.rng,
            cause: settled.cause.as_ref().map(cause_record),
            backoff: backoff.filter(|_| matches!(settled.state, SettledState::Backoff { .. })),
            current,
            readiness_failures: self.shown.readiness_failures,
            stopped_by: self.shown.stopped_by.clone(),
            release: self.spawns.release.clone(),
            notify_status: self.shown.notify_status.clone(),
            oom_baseline: self.held.oom_baseline,
            notify: None,
            listen: Vec::new(),
            listen_owner: (self.app.uid, self.app.gid),
            sandbox: (*self.spawns.sandbox).clone(),
            prepared: self.spawns.prepared.as_deref().cloned(),
        }
    }

    /// Saves the app's record for a successor after a crash, when the
    /// app is settled and the record differs from the one saved last.
    pub(super) fn save_record(&mut self) {
        if !self.is_settled() {
            return;
        }
        self.store_listen();
        // A daemon stopping removes every record: none is written anew.
        if self.shared.records.is_none() || self.shutdown {
            return;
        }
        let record = self.record((Instant::now(), monotonic_ns()));
        let fingerprint = record.steady_fingerprint();
        if self.saved == Some(fingerprint) {
            return;
        }
        self.saved = Some(fingerprint);
        if let Some(records) = &self.shared.records {
            records.write(record, crate::handoff::crash::fingerprint(&self.app));
        }
    }

    /// Puts the held listen sockets in the service manager's fd store, and
    /// takes out those no longer held.
    pub(super) fn store_listen(&mut self) {
        let Some(store) = &self.shared.fd_store else {
            return;
        };
        let held: Vec<BorrowedFd<'_>> = self
            .held
            .listen
            .as_ref()
            .map(|l| l.fds())
            .unwrap_or_default();
        let now: Vec<i32> = held.iter().map(|fd| fd.as_raw_fd()).collect();
        if now == self.held.stored {
            return;
        }
        let app = self.app.spec.name.to_string();
        for n in now.len()..self.held.stored.len() {
            store.remove(&fdstore::listen_name(&app, n));
        }
        for (n, fd) in held.iter().enumerate() {
            if self.held.stored.get(n) != Some(&fd.as_raw_fd()) {
                store.push(&fdstore::listen_name(&app, n), *fd);
            }
        }
        self.held.stored = now;
    }

    /// Takes instance `id`'s pipes out of the fd store.
    pub(super) fn unstore_pipes(&self, id: InstanceId) {
        if let Some(store) = &self.shared.fd_store {
            let app = self.app.spec.name.to_string();
            for stream in ["stdout", "stderr"] {
                store.remove(&fdstore::pipe_name(&app, stream, &id.to_string()));
            }
        }
    }

    /// Ends supervision of the app without touching it: stops the output
    /// captures (what they read is written; the rest stays in the pipes)
    /// and takes every fd the app's processes rely on out of this task.
    pub(super) async fn freeze_now(&mut self) -> Frozen {
        let now = (Instant::now(), monotonic_ns());
        let mut record = self.record(now);
        let mut fds = Vec::new();
        let mut exit = None;
        if let (Some(current), Some(mut instance)) = (record.current.as_mut(), self.instances.pop())
        {
            let mut pipes = [None, None];
            if let Some(capture) = instance.output.take() {
                let ends = capture.hand_over().await;
                for (kept, fd) in pipes.iter_mut().zip(ends) {
                    *kept = fd.map(|fd| keep(&mut fds, fd));
                }
            }
            if let (Some(leaf), Some(watcher)) = (&instance.leaf, &self.shared.watcher) {
                watcher.unwatch(&leaf.cgroup);
            }
            let probe = instance.probe_socket.take().and_then(|socket| {
                let path = socket.path().to_owned();
                match socket.hand_over() {
                    Ok(fd) => Some((keep(&mut fds, fd), path)),
                    Err(error) => {
                        tracing::warn!(%error, "cannot hand the probe socket over; reloads probe the shared sockets");
                        None
                    }
                }
            });
            exit = instance.exit.take();
            current.stdout_fd = pipes[0];
            current.stderr_fd = pipes[1];
            current.probe = probe;
        }
        record.notify = self.held.notify.take().and_then(|socket| {
            let path = socket.path().to_owned();
            match socket.hand_over() {
                Ok(fd) => Some((keep(&mut fds, fd), path)),
                Err(error) => {
                    tracing::warn!(%error, "cannot hand the notify socket over; it is bound again at the next spawn");
                    None
                }
            }
        });
        match self.held.listen.take().map(HeldSockets::hand_over) {
            Some(Ok((sockets, owner))) => {
                record.listen = sockets
                    .into_iter()
                    .map(|handed| ListenRecord {
                        fd: keep(&mut fds, handed.fd),
                        address: handed.address,
                        unix_file: handed.unix_file.map(|file| UnixFileRecord {
                            dir_fd: keep(&mut fds, file.dir),
                            name: file.name.to_string_lossy().into_owned(),
                            path: file.path,
                            dev: file.dev,
                            ino: file.ino,
                        }),
                    })
                    .collect();
                record.listen_owner = owner;
            }
            // Cannot happen short of running out of fds; the sockets are
            // bound again at the next spawn.
            Some(Err(error)) => tracing::error!(%error, "cannot hand the listen sockets over"),
            None => {}
        }
        tracing::debug!(fds = fds.len(), "frozen for a hand-off");
        Frozen { record, fds, exit }
    }
}

/// Takes the fd numbered `fd` out of `fds`.
fn take(fds: &mut BTreeMap<i32, OwnedFd>, app: &str, fd: i32) -> Result<OwnedFd, RestoreError> {
    fds.remove(&fd).ok_or_else(|| RestoreError::MissingFd {
        app: app.to_owned(),
        fd,
    })
}

/// What a restored app holds in cgroupfs, found again
/// ([`find_again`]): its cgroup, the leaf of its current instance (opened,
/// and watched) and its limit cgroups.
pub struct Found {
    cgroup: Option<AppCgroup>,
    leaf: Option<(Leaf, Option<Populated>)>,
    limits: Option<AppLimits>,
}

impl std::fmt::Debug for Found {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Found")
            .field("cgroup", &self.cgroup)
            .field(
                "leaf",
                &self.leaf.as_ref().map(|(leaf, _)| leaf.cgroup.dir()),
            )
            .field("limits", &self.limits)
            .finish()
    }
}

/// Finds again what each of `records`' apps holds in cgroupfs, all in one
/// job on the blocking pool, for [`restore`].
pub async fn find_again(
    shared: &Arc<Shared>,
    records: &[&AppRecord],
) -> Vec<Result<Found, RestoreError>> {
    let shared = shared.clone();
    let wanted: Vec<(String, Option<u64>)> = records
        .iter()
        .map(|record| (record.name.clone(), leaf_of(record)))
        .collect();
    let span = tracing::Span::current();
    let job = tokio::task::spawn_blocking(move || {
        let _span = span.enter();
        wanted
            .iter()
            .map(|(name, leaf)| found_again(&shared, name, *leaf))
            .collect()
    });
    match job.await {
        Ok(found) => found,
        Err(error) => std::panic::resume_unwind(error.into_panic()),
    }
}

/// The id of `record`'s current instance if it runs in a leaf.
fn leaf_of(record: &AppRecord) -> Option<u64> {
    record
        .current
        .as_ref()
        .filter(|current| current.leaf)
        .map(|current| current.id)
}

/// App `name`'s cgroup, the leaf of instance `leaf` (opened, and watched)
/// and its limit cgroups: cgroupfs work, for the blocking pool.
fn found_again(shared: &Shared, name: &str, leaf: Option<u64>) -> Result<Found, RestoreError> {
    let cgroup = match &shared.cgroups {
        Some(root) => Some(root.app(name).map_err(|source| RestoreError::Cgroup {
            app: name.to_owned(),
            source,
        })?),
        None => None,
    };
    let mut found_leaf = None;
    if let (Some(id), Some(cg)) = (leaf, &cgroup) {
        let child =
            cg.child(&InstanceId(id).to_string())
                .map_err(|source| RestoreError::Cgroup {
                    app: name.to_owned(),
                    source,
                })?;
        let dir = std::fs::File::open(child.dir())
            .map(OwnedFd::from)
            .map_err(|source| RestoreError::Leaf {
                app: name.to_owned(),
                path: child.dir().to_owned(),
                source,
            })?;
        let populated = match &shared.watcher {
            Some(watcher) => {
                Some(
                    watcher
                        .watch(&child)
                        .map_err(|source| RestoreError::Cgroup {
                            app: name.to_owned(),
                            source,
                        })?,
                )
            }
            None => None,
        };
        found_leaf = Some((Leaf { cgroup: child, dir }, populated));
    }
    let limits = shared
        .limits
        .app(name, cgroup.as_ref().map(|cg| cg.dir()))
        .map_err(
            |e| tracing::warn!(app = name, error = %e, "the app's limit cgroups after a hand-off"),
        )
        .ok();
    Ok(Found {
        cgroup,
        leaf: found_leaf,
        limits,
    })
}

/// Starts app `app`'s task again from `record`: the same state, counts,
/// backoff schedule and instance, with the fds `record` names taken from
/// `fds`, and what [`find_again`] found of it in cgroups. `exit` reports
/// the main process's exit (the reaper's registration). Every check that
/// can fail comes before the first fd is taken, so a failure leaves `fds`
/// whole.
pub fn restore(
    app: Arc<ResolvedApp>,
    logs: Arc<AppLogs>,
    shared: Arc<Shared>,
    record: AppRecord,
    found: Result<Found, RestoreError>,
    fds: &mut BTreeMap<i32, OwnedFd>,
    exit: Option<oneshot::Receiver<ExitStatus>>,
) -> Result<Handle, RestoreError> {
    let name = record.name.clone();
    let span = super::app_span(&app);
    for fd in record.fds() {
        if !fds.contains_key(&fd) {
            return Err(RestoreError::MissingFd { app: name, fd });
        }
    }
    let now = (Instant::now(), monotonic_ns());
    let params = params(&app);
    let settled = settled(&record, params.stop.signal, now)?;
    // The leaf and its watch first: they can fail, and nothing is taken yet.
    let Found {
        cgroup,
        leaf,
        limits,
    } = found?;
    let mut leaf = leaf;

    // From here on nothing fails: the fds are taken.
    let notify = match &record.notify {
        Some((fd, path)) => {
            let fd = take(fds, &name, *fd)?;
            match NotifySocket::taken_over(fd, path.clone()) {
                Ok(socket) => Some(Box::new(socket)),
                Err(error) => {
                    tracing::warn!(%error, "cannot watch the handed-over notify socket; it is bound again at the next spawn");
                    None
                }
            }
        }
        None => None,
    };
    let listen = if record.listen.is_empty() {
        None
    } else {
        let mut handed = Vec::with_capacity(record.listen.len());
        for l in &record.listen {
            let unix_file = match &l.unix_file {
                Some(file) => Some(HandedFile {
                    dir: take(fds, &name, file.dir_fd)?,
                    name: file.name.clone().into(),
                    path: file.path.clone(),
                    dev: file.dev,
                    ino: file.ino,
                }),
                None => None,
            };
            handed.push(HandedOver {
                fd: take(fds, &name, l.fd)?,
                address: l.address.clone(),
                unix_file,
            });
        }
        Some(HeldSockets::taken_over(
            &app.spec.listen,
            handed,
            record.listen_owner,
        ))
    };
    let mut instances = Vec::with_capacity(1);
    if let Some(current) = &record.current {
        let pid = current.pid;
        let probe_socket = match &current.probe {
            Some((fd, path)) => Some(ProbeSocket::taken_over(
                take(fds, &name, *fd)?,
                path.clone(),
            )),
            None => None,
        };
        let stdout = current
            .stdout_fd
            .map(|fd| take(fds, &name, fd))
            .transpose()?;
        let stderr = current
            .stderr_fd
            .map(|fd| take(fds, &name, fd))
            .transpose()?;
        let output = (stdout.is_some() || stderr.is_some())
            .then(|| logs.capture_handing_over(stdout, stderr, span.clone()));
        let exit = match (current.exit, exit) {
            (Some(status), _) => {
                let (tx, rx) = oneshot::channel();
                let _ = tx.send(exit_status(status));
                Some(rx)
            }
            (None, exit) => exit,
        };
        let (leaf, populated) = match leaf.take() {
            Some((leaf, populated)) => (Some(leaf), populated),
            None => (None, None),
        };
        let mut instance = Instance::new(
            InstanceId(current.id),
            pid,
            exit,
            output,
            leaf,
            probe_socket,
            populated,
        );
        instance.started = current
            .started_unix_ms
            .map(|ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms));
        instances.push(instance);
    }
    let machine = Machine::thaw(params, settled);
    let timers = record
        .backoff
        .map(|(generation, due_ns)| Timer {
            key: TimerKey::Backoff,
            generation,
            sleep: Box::pin(tokio::time::sleep(state::time_until(now.1, due_ns))),
        })
        .into_iter()
        .collect();
    let (commands, rx) = super::inbox::channel();
    let sandbox = shared.latest_sandbox.share(record.sandbox);
    let prepared = record.prepared.map(|p| shared.latest_prepared.share(p));
    let sup = Supervisor {
        machine,
        pending: VecDeque::new(),
        snapshot: SnapshotCell::new(placeholder_snapshot(&app)),
        app,
        shared,
        logs: logs.clone(),
        instances,
        timers,
        held: Held {
            cgroup,
            limits,
            oom_baseline: record.oom_baseline,
            notify,
            retired_notify: None,
            listen,
            rebinding: None,
            stored: Vec::new(),
            removing: Vec::new(),
        },
        spawns: Spawns {
            release: record.release,
            // What the exec helper verified at the last spawn survives, so
            // the next spawn judges against it as the old daemon would have.
            sandbox,
            prepared,
            // Counted afresh: only a start or restart under way reads the
            // count, and none is (the app was settled).
            ..Spawns::default()
        },
        callers: Callers::default(),
        shown: Shown {
            since_wall: SystemTime::UNIX_EPOCH + Duration::from_secs(record.since_unix),
            readiness_failures: record.readiness_failures,
            stopped_by: record.stopped_by,
            notify_status: record.notify_status,
        },
        shutdown: false,
        freeze: None,
        saved: None,
    };
    Ok(launch(sup, commands, rx, false, logs, span))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(state: RecordState, running: bool, backoff: bool) -> AppRecord {
        AppRecord {
            state,
            reason: "why".to_owned(),
            since_ns: 5,
            since_unix: 6,
            failures: 1,
            restarts: 2,
            last_instance: 3,
            timer_generation: 4,
            rng: 7,
            backoff: backoff.then_some((4, 100)),
            current: running.then_some(InstanceRecord {
                id: 3,
                pid: 1234,
                spawned_ns: 1,
                started_unix_ms: None,
                ready_ns: Some(2),
                notified: true,
                probed: false,
                stop_signal: 15,
                stop_timeout_ms: 10_000,
                stdout_fd: None,
                stderr_fd: None,
                probe: None,
                leaf: false,
                exit: None,
            }),
            ..AppRecord::stopped_for_test("shop")
        }
    }

    /// Only what a freeze writes thaws: a running record names its
    /// instance, a backoff record its timer, and no other names an
    /// instance. Anything else would thaw a machine that cannot exist.
    #[test]
    fn a_record_thaws_only_as_a_freeze_writes_it() {
        use RecordState::*;
        let now = (Instant::now(), 1_000);
        let term = Signal(nix::sys::signal::Signal::SIGTERM);
        #[rustfmt::skip]
        let cases = [
            // (state, running instance, backoff timer, thaws)
            (Running, true,  false, true),
            (Running, false, false, false),
            (Backoff, false, true,  true),
            (Backoff, false, false, false),
            (Stopped, false, false, true),
            (Stopped, false, true,  true), // a stale schedule fires into nothing
            (Stopped, true,  false, false),
            (Exited,  true,  false, false),
            (Fatal,   false, false, true),
        ];
        for (state, running, backoff, thaws) in cases {
            let result = settled(&record(state, running, backoff), term, now);
            assert_eq!(
                result.is_ok(),
                thaws,
                "{state:?} {running} {backoff}: {result:?}"
            );
        }
        let Ok(Settled {
            state: SettledState::Running(instance),
            ..
        }) = settled(&record(Running, true, false), term, now)
        else {
            panic!("running thaws running");
        };
        assert_eq!((instance.id, instance.pid), (InstanceId(3), 1234));
    }
}
