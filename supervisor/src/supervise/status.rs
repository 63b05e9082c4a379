//! Publishing an app's status: the [`Snapshot`] the control and status
//! servers read, built from the machine and what the task holds, and what
//! confines the app as its last spawn learnt it.

use std::sync::{Arc, OnceLock, RwLock, RwLockReadGuard};
use std::time::{Instant, SystemTime};

use appvisor_protocol::status_json::StatusJson;
use appvisor_protocol::AppStatus;

use super::{Shared, Supervisor};
use crate::app::AppState;
use crate::audit::unix_now;
use crate::config::resolve::ResolvedApp;
use crate::config::LimitSpec;
use crate::locks;
use crate::sandbox::{self, SandboxInputs, SandboxPlan, SpawnRecord};
use crate::spawn::Prepared;

/// What the control plane reads: the public status and what the status
/// server counts.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub state: AppState,
    /// The status as of the last change, rendered as JSON when it changed,
    /// for `GET /v1/apps`; the only copy of it ([`Snapshot::status`] reads
    /// it back): a second, as an `AppStatus`, cost every app a few hundred
    /// bytes.
    json: StatusJson,
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

    /// The status as of the last change, without an uptime.
    pub fn status(&self) -> AppStatus {
        self.json.status()
    }

    /// Changes the status, and its JSON with it.
    pub(super) fn set_status(&mut self, status: AppStatus) {
        self.json = StatusJson::new(&status);
    }

    /// The status as JSON, but for the fields a request fills in.
    pub fn json(&self) -> &StatusJson {
        &self.json
    }

    /// Seconds since the current instance's main process was exec'd.
    pub fn uptime_secs(&self) -> Option<f64> {
        self.uptime_secs_at(Instant::now())
    }

    /// [`Snapshot::uptime_secs`] as of `now`: one reading of the clock
    /// for a whole list of statuses.
    pub fn uptime_secs_at(&self, now: Instant) -> Option<f64> {
        self.started
            .map(|(at, _)| now.saturating_duration_since(at).as_secs_f64())
    }

    /// The status with the uptime as of now.
    pub fn status_now(&self) -> AppStatus {
        AppStatus {
            uptime_secs: self.uptime_secs(),
            ..self.status()
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

/// An app's latest [`Snapshot`]: written by its task, read by the control
/// and status servers. A lock rather than a watch channel: nobody waits
/// for a change, and a watch channel's notifiers cost every app about half
/// a kilobyte for nothing.
#[derive(Debug, Clone)]
pub struct SnapshotCell(Arc<RwLock<Snapshot>>);

impl SnapshotCell {
    pub(super) fn new(snapshot: Snapshot) -> SnapshotCell {
        SnapshotCell(Arc::new(RwLock::new(snapshot)))
    }

    /// The latest snapshot; hold the guard briefly, as the task waits for
    /// it to publish the next.
    pub fn borrow(&self) -> RwLockReadGuard<'_, Snapshot> {
        // A snapshot is replaced or modified whole: a panic under the lock
        // leaves a consistent one.
        locks::read(&self.0)
    }

    /// Publishes `snapshot`; the previous one is dropped after the lock.
    pub(super) fn replace(&self, snapshot: Snapshot) {
        let previous = std::mem::replace(&mut *locks::write(&self.0), snapshot);
        drop(previous);
    }

    /// Changes the published snapshot in place.
    pub(super) fn modify(&self, change: impl FnOnce(&mut Snapshot)) {
        change(&mut locks::write(&self.0));
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

pub(super) fn sandbox_inputs(prepared: Option<&Prepared>, shared: &Shared) -> SandboxInputs {
    SandboxInputs {
        landlock_abi_max: shared.landlock_abi_max,
        python_home: prepared.and_then(|p| p.venv.home.home().map(ToOwned::to_owned)),
        hide: shared.hide.clone(),
        linked_dirs: prepared.map(|p| p.linked_dirs.clone()).unwrap_or_default(),
    }
}

pub(super) fn placeholder_snapshot(app: &Arc<ResolvedApp>) -> Snapshot {
    let status = bare_status("", appvisor_protocol::State::Stopped, String::new());
    Snapshot {
        state: AppState::Stopped,
        started: None,
        readiness_failures: 0,
        app: app.clone(),
        sandbox: Arc::default(),
        prepared: None,
        exposure: Arc::default(),
        json: StatusJson::new(&status),
    }
}

/// A status with no process, no history and no settings: for an app known
/// only by name (an invalid file), and before a task publishes its first.
pub fn bare_status(name: &str, state: appvisor_protocol::State, reason: String) -> AppStatus {
    AppStatus::bare(name, state, reason)
}

impl Supervisor {
    /// Publishes the app's status to its snapshot, and to the event
    /// stream when the state changed.
    pub(super) fn publish(&mut self, state_changed: bool) {
        let m = &self.machine;
        let spec = &self.app.spec;
        let mut reason = m.reason().to_owned();
        if let (AppState::Running, Some(status)) = (m.state(), &self.shown.notify_status) {
            reason = format!("{reason}: {status}");
        }
        let status = AppStatus {
            name: spec.name.to_string(),
            state: m.state().into(),
            reason,
            pid: m.pid(),
            uptime_secs: None,
            since: self
                .shown
                .since_wall
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            restarts: m.restarts(),
            failures: m.failures(),
            description: spec.description.clone(),
            app_groups: spec.app_groups.clone(),
            user: self.app.user_name.clone(),
            directory: spec.directory.display().to_string(),
            release: self.spawns.release.clone(),
            autostart: spec.autostart,
            stopped_by: self
                .shown
                .stopped_by
                .clone()
                .filter(|_| m.state() == AppState::Stopped),
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
            .current()
            .and_then(|c| self.instances.iter().find(|i| i.id == c.id))
            .and_then(|i| i.started);
        let exposure = {
            let previous = self.snapshot.borrow();
            let same_prepared = match (&previous.prepared, &self.spawns.prepared) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            };
            if Arc::ptr_eq(&previous.app, &self.app)
                && Arc::ptr_eq(&previous.sandbox, &self.spawns.sandbox)
                && same_prepared
            {
                previous.exposure.clone()
            } else {
                Arc::default()
            }
        };
        // Rendered here, in the app's task, so that requests only copy it.
        let json = StatusJson::new(&status);
        self.snapshot.replace(Snapshot {
            state: m.state(),
            started: m.started_at().zip(started_wall),
            json,
            readiness_failures: self.shown.readiness_failures,
            app: self.app.clone(),
            sandbox: self.spawns.sandbox.clone(),
            prepared: self.spawns.prepared.clone(),
            exposure,
        });
    }
}
