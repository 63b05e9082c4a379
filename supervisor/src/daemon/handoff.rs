//! The daemon's side of a hand-off: `appctl reexec` and SIGUSR2 in the old
//! process (quiesce, freeze every app's task, write the document, exec),
//! and taking the apps over in the new one. The document and the system
//! calls are `crate::handoff`'s.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use appvisor_protocol::{DaemonStatus, HandoffReport};
use tokio::sync::{mpsc, oneshot};

use super::{Daemon, Entry};
use crate::audit::unix_now;
use crate::config::resolve::ResolvedApp;
use crate::control::ReexecError;
use crate::handoff::exec::{self, Binary, Target};
use crate::handoff::incoming::Incoming;
use crate::handoff::state::{
    self, AppRecord, CarriedApp, CarriedConfig, Document, Handoff, RequestCount, STATE_VERSION,
};
use crate::locks;
use crate::logs::AppLogs;
use crate::supervise::{self, reaper::Adopted, Command, Found, Frozen, RestoreError};

/// How long a hand-off waits for every app to finish what it is doing (a
/// start, a stop) before it gives up and leaves everything as it was.
const SETTLE: Duration = Duration::from_secs(30);

/// The version of this binary.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// A request to hand over.
#[derive(Debug)]
pub struct Order {
    pub by: String,
    pub id: u64,
    pub at: u64,
}

/// What the daemon keeps for hand-offs.
#[derive(Debug)]
pub struct HandoffControl {
    /// `None` when this process's binary could not be opened at start:
    /// no hand-off is possible then.
    pub binary: Option<Binary>,
    busy: AtomicBool,
    last: Mutex<Option<HandoffReport>>,
    orders: mpsc::UnboundedSender<Order>,
    /// Dups of the control and status listeners, passed on by exec.
    pub listeners: (OwnedFd, Option<OwnedFd>),
}

impl HandoffControl {
    pub fn new(
        binary: Option<Binary>,
        listeners: (OwnedFd, Option<OwnedFd>),
        last: Option<HandoffReport>,
    ) -> (HandoffControl, mpsc::UnboundedReceiver<Order>) {
        let (orders, rx) = mpsc::unbounded_channel();
        (
            HandoffControl {
                binary,
                busy: AtomicBool::new(false),
                last: Mutex::new(last),
                orders,
                listeners,
            },
            rx,
        )
    }

    /// Whether a hand-off is under way: actions are refused meanwhile.
    pub fn busy(&self) -> bool {
        self.busy.load(Ordering::SeqCst)
    }

    pub(super) fn report(&self, report: HandoffReport) {
        if let Some(error) = &report.error {
            tracing::error!(id = report.id, by = %report.requested_by, %error, "hand-off did not happen");
        }
        *locks::lock(&self.last) = Some(report);
    }
}

/// Logs (at debug) how far a hand-off is, in ms since `since_ns`
/// (CLOCK_MONOTONIC, the same in the image before and after exec): the
/// old image counts from the request, the new one from the freeze.
pub fn phase(since_ns: u64, phase: &str) {
    let ms = state::age_of(supervise::monotonic_ns(), since_ns).as_secs_f64() * 1000.0;
    tracing::debug!(ms = format_args!("{ms:.1}"), "hand-off: {phase}");
}

/// A hand-off id for a request that did not bring one (SIGUSR2).
pub fn fresh_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(crate::supervise::monotonic_ns());
    hasher.finish()
}

impl Daemon {
    /// `GET /v1/daemon`.
    pub fn daemon_status(&self) -> DaemonStatus {
        DaemonStatus {
            version: VERSION.to_owned(),
            pid: std::process::id(),
            binary: self
                .handoff
                .binary
                .as_ref()
                .map(|b| b.path.display().to_string())
                .unwrap_or_default(),
            handoff: locks::lock(&self.handoff.last).clone(),
        }
    }

    /// `appctl reexec`: refused while another hand-off is under way, or
    /// when no binary is known. The hand-off itself runs in the daemon's
    /// main loop. Changes in apps.d not applied yet stay so: the new binary
    /// adopts the configuration that runs, carried in the document.
    pub async fn request_reexec(&self, by: &str, id: u64) -> Result<(), ReexecError> {
        if self.handoff.binary.is_none() {
            return Err(ReexecError::Refused(
                "no binary to re-execute: /proc/self/exe could not be opened at start".to_owned(),
            ));
        }
        if self.handoff.busy.swap(true, Ordering::SeqCst) {
            return Err(ReexecError::Refused(
                "a hand-off is already under way".to_owned(),
            ));
        }
        let order = Order {
            by: by.to_owned(),
            id,
            at: unix_now(),
        };
        if self.handoff.orders.send(order).is_err() {
            self.handoff.busy.store(false, Ordering::SeqCst);
            return Err(ReexecError::Stopping);
        }
        Ok(())
    }

    /// Carries out `order`: freezes every app, execs the new binary with
    /// the document; if any step fails, takes the apps back and carries on.
    /// Returns only if the exec did not happen.
    pub async fn hand_off(self: &Arc<Self>, order: Order) {
        let _guard = self.apply_lock.lock().await;
        let binary = self
            .handoff
            .binary
            .as_ref()
            .expect("checked at the request");
        tracing::info!(id = order.id, by = %order.by, binary = %binary.path.display(), "hand-off: freezing every app");
        let began = supervise::monotonic_ns();
        let frozen = self.freeze_all().await;
        phase(began, "every app frozen");
        let (mut frozen, unsettled): (Vec<_>, Vec<_>) =
            frozen.into_iter().partition(|(_, f)| f.is_some());
        let error = if unsettled.is_empty() {
            self.shared.reaper.pause();
            for (_, f) in frozen.iter_mut() {
                if let Some(f) = f.as_mut() {
                    f.note_exit();
                }
            }
            let document = self.document(&order, &frozen);
            let bytes = document.to_bytes();
            phase(began, "state serialized");
            let error = match exec::write_memfd(&bytes) {
                Ok(memfd) => {
                    tracing::info!(
                        apps = document.apps.len(),
                        fds = document.fds().len(),
                        bytes = bytes.len(),
                        "hand-off: exec"
                    );
                    let error = exec::exec(
                        Target::Path(&binary.path),
                        &binary.argv,
                        &memfd,
                        &document.fds(),
                        None,
                    );
                    format!("executing {}: {error}", binary.path.display())
                }
                Err(error) => format!("writing the hand-off state: {error}"),
            };
            self.shared.reaper.resume();
            error
        } else {
            let names: Vec<&str> = unsettled.iter().map(|(n, _)| n.as_str()).collect();
            format!(
                "{} did not settle within {}s (a start or stop under way): try again",
                names.join(", "),
                SETTLE.as_secs()
            )
        };
        // Still here: the apps are taken back as they were.
        let apps = frozen.len();
        let frozen: Vec<(String, Frozen)> = frozen
            .into_iter()
            .filter_map(|(name, f)| Some((name, f?)))
            .collect();
        let records: Vec<&AppRecord> = frozen.iter().map(|(_, f)| &f.record).collect();
        let found = supervise::find_again(&self.shared, &records).await;
        for ((name, f), found) in frozen.into_iter().zip(found) {
            self.thaw(&name, f, found);
        }
        self.handoff.report(HandoffReport {
            id: order.id,
            requested_by: order.by,
            requested_at: order.at,
            from_version: VERSION.to_owned(),
            to_version: VERSION.to_owned(),
            unsupervised_ms: 0,
            apps,
            error: Some(error),
        });
        self.handoff.busy.store(false, Ordering::SeqCst);
    }

    /// Asks every app's task to freeze once settled; waits at most
    /// [`SETTLE`] for all. An app that did not freeze in time is `None`;
    /// its request is withdrawn (the task sees the closed channel).
    async fn freeze_all(&self) -> Vec<(String, Option<Frozen>)> {
        let mut waits = Vec::new();
        {
            let apps = locks::read(&self.apps);
            for (name, entry) in apps.iter() {
                if let Some(handle) = &entry.handle {
                    let (reply, frozen) = oneshot::channel();
                    if handle.commands.send(Command::Freeze { reply }).is_ok() {
                        waits.push((name.clone(), frozen));
                    }
                }
            }
        }
        let deadline = tokio::time::Instant::now() + SETTLE;
        let mut out = Vec::new();
        for (name, frozen) in waits {
            let frozen = tokio::time::timeout_at(deadline, frozen)
                .await
                .ok()
                .and_then(Result::ok);
            out.push((name, frozen));
        }
        out
    }

    /// The document for `frozen`, naming their fds by number.
    fn document(&self, order: &Order, frozen: &[(String, Option<Frozen>)]) -> Document {
        let binary = self
            .handoff
            .binary
            .as_ref()
            .expect("checked at the request");
        Document {
            version: STATE_VERSION,
            handoff: Handoff {
                id: order.id,
                requested_by: order.by.clone(),
                from_version: VERSION.to_owned(),
                frozen_at_ns: supervise::monotonic_ns(),
                requested_at: order.at,
            },
            fallback_fd: binary.fallback.as_raw_fd(),
            apps_open_files: Some(self.shared.app_open_files.soft),
            control_fd: self.handoff.listeners.0.as_raw_fd(),
            status_fd: self.handoff.listeners.1.as_ref().map(|fd| fd.as_raw_fd()),
            control_requests: self
                .events()
                .control_requests()
                .into_iter()
                .map(|(key, count)| RequestCount {
                    route: key.action.to_owned(),
                    outcome: key.outcome.as_str().to_owned(),
                    count,
                })
                .collect(),
            apps: frozen
                .iter()
                .filter_map(|(_, f)| f.as_ref().map(|f| f.record.clone()))
                .collect(),
            config: Some(
                serde_json::to_value(self.carried_config())
                    .expect("a configuration always serializes"),
            ),
        }
    }

    /// The configuration this daemon runs, for the document.
    fn carried_config(&self) -> CarriedConfig {
        let (daemon_file, daemon_text) = {
            let config = locks::read(&self.config);
            (config.file.clone(), config.text.clone())
        };
        let apps = locks::read(&self.apps)
            .iter()
            .map(|(name, entry)| CarriedApp {
                name: name.clone(),
                file: entry.file.clone(),
                app: entry.app.as_deref().cloned(),
                error: entry.error.clone(),
                refused: entry.refused.clone(),
                since: entry.since,
            })
            .collect();
        CarriedConfig {
            daemon_file,
            daemon_text,
            apps,
            ignored: locks::read(&self.ignored).clone(),
        }
    }

    /// Takes a frozen app back in this process (the exec did not happen),
    /// with what [`supervise::find_again`] found of it in cgroups.
    fn thaw(&self, name: &str, frozen: Frozen, found: Result<Found, RestoreError>) {
        let Frozen { record, fds, exit } = frozen;
        let mut fds: BTreeMap<i32, OwnedFd> =
            fds.into_iter().map(|fd| (fd.as_raw_fd(), fd)).collect();
        let mut apps = locks::write(&self.apps);
        let Some(entry) = apps.get_mut(name) else {
            return;
        };
        let (Some(app), Some(old)) = (entry.app.clone(), entry.handle.take()) else {
            return;
        };
        match supervise::restore(
            app,
            old.logs.clone(),
            self.shared.clone(),
            record,
            found,
            &mut fds,
            exit,
        ) {
            Ok(handle) => entry.handle = Some(handle),
            Err(error) => {
                tracing::error!(app = name, %error, "cannot take an app back after a failed hand-off; it runs unsupervised");
            }
        }
    }

    /// In a daemon started by a hand-off: takes every app of `incoming`
    /// over with the configuration it runs. `carried` is that
    /// configuration, from the document; without it (a document before
    /// version 2, or one this binary cannot read) apps.d is judged instead,
    /// and each handed-over app must be there and valid. Each must have
    /// the listen addresses it was handed over with. Every check comes
    /// before the first fd is taken, so a mismatch can still fall back:
    /// `Err` is the reason to.
    pub async fn take_over(
        &self,
        incoming: &Incoming,
        carried: Option<CarriedConfig>,
        adopted: &mut Adopted,
        log_dir: &std::path::Path,
    ) -> Result<(), String> {
        let _guard = self.apply_lock.lock().await;
        let mut registry = match carried {
            Some(carried) => {
                *locks::write(&self.ignored) = carried.ignored;
                carried
                    .apps
                    .into_iter()
                    .map(|app| {
                        let entry = Entry {
                            file: app.file,
                            app: app.app.map(Arc::new),
                            error: app.error,
                            handle: None,
                            refused: app.refused,
                            since: app.since,
                        };
                        (app.name, entry)
                    })
                    .collect()
            }
            None => self.judge_apps_d().await?,
        };
        for record in &incoming.document.apps {
            let entry = registry
                .get(&record.name)
                .ok_or_else(|| format!("{} is handed over but not in apps.d", record.name))?;
            let app = entry.app.as_ref().ok_or_else(|| {
                format!(
                    "{} is handed over but its file does not validate: {}",
                    record.name,
                    entry.error.as_deref().unwrap_or("no valid version")
                )
            })?;
            let addresses: Vec<String> = app
                .spec
                .listen
                .iter()
                .map(|l| l.address.to_string())
                .collect();
            let handed: Vec<String> = record.listen.iter().map(|l| l.address.clone()).collect();
            if !handed.is_empty() && handed != addresses {
                return Err(format!(
                    "{}: listen sockets {handed:?} handed over, the configuration lists {addresses:?}",
                    record.name
                ));
            }
        }
        // Each app's log directory and files, opened before its output is
        // read again, so that nothing read is dropped.
        let wanted: Vec<(String, Arc<ResolvedApp>)> = incoming
            .document
            .apps
            .iter()
            .map(|record| {
                let app = registry[&record.name].app.as_ref().expect("checked above");
                (record.name.clone(), Arc::clone(app))
            })
            .collect();
        let opened = self
            .running_apps_logs(log_dir, wanted)
            .await
            .map_err(|error| format!("opening the apps' log files: {error}"))?;
        let records: Vec<&AppRecord> = incoming.document.apps.iter().collect();
        let found = supervise::find_again(&self.shared, &records).await;
        // Nothing can fall back from here on: the fds are taken.
        let mut fds = incoming.take_fds();
        for ((record, logs), found) in incoming
            .document
            .apps
            .iter()
            .cloned()
            .zip(opened)
            .zip(found)
        {
            let name = record.name.clone();
            let entry = registry.get_mut(&name).expect("checked above");
            let app = entry.app.clone().expect("checked above");
            // A main process adopted after a crash is not our child: its
            // end comes from a pidfd.
            let exit = record.current.as_ref().and_then(|c| {
                adopted.remove(&c.pid).or_else(|| {
                    c.exit
                        .is_none()
                        .then(|| supervise::reaper::watch_pid(c.pid))
                })
            });
            match supervise::restore(
                app,
                logs,
                self.shared.clone(),
                record,
                found,
                &mut fds,
                exit,
            ) {
                Ok(handle) => {
                    entry.handle = Some(handle);
                    entry.refused = None;
                }
                Err(error) => {
                    tracing::error!(app = %name, %error, "cannot take over a handed-over app");
                }
            }
        }
        // The apps without a task: invalid files and apps refused for want
        // of open files stay so; with apps.d judged, files it gained since
        // the hand-off was asked for start as at start-up.
        for (name, entry) in registry.iter_mut() {
            if entry.handle.is_none() && entry.refused.is_none() {
                self.admit_and_start(name, entry, log_dir);
            }
        }
        *locks::write(&self.apps) = registry;
        Ok(())
    }

    /// The registry as apps.d says, for a hand-off that carried no
    /// configuration this binary reads.
    async fn judge_apps_d(&self) -> Result<BTreeMap<String, Entry>, String> {
        let config = locks::read(&self.config).clone();
        let scan = crate::judge::scan(&config, &self.judged)
            .await
            .map_err(|e| e.to_string())?;
        Ok(scan
            .candidates
            .into_iter()
            .map(|(name, candidate)| {
                let entry = Entry {
                    file: candidate.file,
                    error: candidate.app.as_ref().err().map(ToString::to_string),
                    app: candidate.app.ok(),
                    handle: None,
                    refused: None,
                    since: unix_now(),
                };
                (name, entry)
            })
            .collect())
    }

    /// The logs of apps taken over running (after a hand-off or a crash),
    /// in the order given, their directories made and files opened in one
    /// job on the blocking pool (call it before taking the registry's
    /// lock), and their open files counted: each runs, whatever the budget
    /// says, and is said to be over it if it is.
    pub(super) async fn running_apps_logs(
        &self,
        log_dir: &std::path::Path,
        apps: Vec<(String, Arc<ResolvedApp>)>,
    ) -> Result<Vec<Arc<AppLogs>>, tokio::task::JoinError> {
        for (name, app) in &apps {
            if let Err(refusal) = self.fds().admit(name, super::fds::app_cost(&app.spec)) {
                tracing::warn!(app = %name, %refusal, "an app taken over does not fit the open-file budget");
            }
        }
        let dir = log_dir.to_owned();
        tokio::task::spawn_blocking(move || {
            apps.iter()
                .map(|(name, app)| {
                    AppLogs::open(&dir, name, &app.spec.logs, app.gid, super::TAIL_LINES)
                })
                .collect()
        })
        .await
    }

    /// Records how the hand-off that started this process went.
    pub fn handed_over(&self, incoming: &Incoming) {
        let handoff = &incoming.document.handoff;
        let unsupervised = state::age_of(supervise::monotonic_ns(), handoff.frozen_at_ns);
        let report = HandoffReport {
            id: handoff.id,
            requested_by: handoff.requested_by.clone(),
            requested_at: handoff.requested_at,
            from_version: handoff.from_version.clone(),
            to_version: VERSION.to_owned(),
            unsupervised_ms: u64::try_from(unsupervised.as_millis()).unwrap_or(u64::MAX),
            apps: incoming.document.apps.len(),
            error: incoming.fallback_error.clone(),
        };
        self.events().restore_counts(
            incoming
                .document
                .control_requests
                .iter()
                .map(|c| (c.route.as_str(), c.outcome.as_str(), c.count)),
        );
        match &report.error {
            None => tracing::info!(
                target: "audit",
                id = report.id,
                by = %report.requested_by,
                from = %report.from_version,
                to = %report.to_version,
                apps = report.apps,
                unsupervised_ms = report.unsupervised_ms,
                "hand-off done"
            ),
            Some(error) => tracing::error!(
                target: "audit",
                id = report.id,
                by = %report.requested_by,
                %error,
                "hand-off fell back: the new binary could not take over; the previous one runs again"
            ),
        }
        self.handoff.report(report);
    }
}

/// The configuration `incoming` carries, if this binary can read it; when
/// it cannot, the log says so and the daemon judges apps.d instead.
pub fn carried_config(incoming: &Incoming) -> Option<CarriedConfig> {
    match incoming.carried_config() {
        Some(Ok(carried)) => Some(carried),
        Some(Err(error)) => {
            tracing::warn!(
                %error,
                "cannot read the configuration the previous appvisord ran; judging appvisor.toml and apps.d instead, \
                 so changes made there since the last update apply to the apps handed over"
            );
            None
        }
        None => {
            tracing::warn!(
                version = incoming.document.version,
                "the previous appvisord carried no configuration; judging appvisor.toml and apps.d instead"
            );
            None
        }
    }
}

/// The fds of the listeners, dup'd, for a later hand-off.
pub fn listener_fds(
    control: &tokio::net::UnixListener,
    status: Option<&tokio::net::TcpListener>,
) -> std::io::Result<(OwnedFd, Option<OwnedFd>)> {
    let control = control.as_fd().try_clone_to_owned()?;
    let status = match status {
        Some(listener) => Some(listener.as_fd().try_clone_to_owned()?),
        None => None,
    };
    Ok((control, status))
}
