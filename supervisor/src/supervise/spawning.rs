//! Spawn preparation: what a spawn needs that lives across spawns (the
//! app's cgroup, its notify and listen sockets, its limits), the
//! instance's own leaf cgroup, probe socket and pipes, and the exec
//! helper started through the reaper. The cgroupfs work (the app's cgroup,
//! the instance's leaf, the limits) joins the spawn's preparation job on
//! the blocking pool ([`CgroupWork`]). What fails here fails in the daemon,
//! before the app's program runs, and is a [`SpawnError`]; what fails in
//! the exec helper comes back in its report.

use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::oneshot;

use super::{remove_leaf, sandbox_inputs, Instance, Leaf, Shared, Supervisor};
use crate::app::{AppState, Event, ExitStatus, InstanceId};
use crate::cgroup::{AppCgroup, AppLimits, CgroupError, Populated};
use crate::config::{LimitSpec, ReadinessKind};
use crate::handoff::fdstore;
use crate::listen::{HeldSockets, ListenError, ProbeSocket, Rebind};
use crate::logs::LogError;
use crate::readiness::{NotifySocket, ReadinessError};
use crate::spawn::{
    self, Followup, PlanInputs, PlanUser, Preparation, PrepareError, Prepared, SpawnPlan,
};

/// A spawn that failed in the daemon. Its text is the machine's reason
/// (`Event::SpawnFailed`), so each names the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// The file reads before the spawn (`spawn::prepare`).
    #[error("spawn failed at {0}")]
    Prepare(#[source] PrepareError),
    #[error("spawn failed at cgroup: {0}")]
    Cgroup(#[source] CgroupError),
    #[error("spawn failed at cgroup watch: {0}")]
    CgroupWatch(#[source] CgroupError),
    #[error("spawn failed at cgroup {}: {source}", path.display())]
    Leaf {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("spawn failed at notify socket {}: {source}", path.display())]
    Notify {
        path: PathBuf,
        source: ReadinessError,
    },
    #[error("spawn failed at {0}")]
    Listen(#[source] ListenError),
    #[error("spawn failed at probe socket: {0}")]
    ProbeSocket(#[source] ListenError),
    #[error("spawn failed at cgroup limits: {0}")]
    Limits(#[source] CgroupError),
    #[error("spawn failed at pipe: {0}")]
    Pipe(#[source] LogError),
    /// Starting the exec helper.
    #[error("spawn failed: {0}")]
    Helper(#[source] spawn::SpawnError),
}

impl Supervisor {
    /// `Effect::Spawn`: first the file reads a spawn needs, the listen
    /// sockets' rebind when it works on paths, and the cgroupfs work
    /// ([`CgroupWork`]), in one job off the runtime (`spawn::prepare`); the
    /// process follows in [`Self::prepared`].
    pub(super) fn spawn(&mut self, id: InstanceId) {
        self.spawns.count += 1;
        self.spawns.spawned_at = Some(self.logs.mark());
        let rebind = Rebind::needed(&self.app, &mut self.held.listen);
        self.held.rebinding = rebind.is_some().then_some(true);
        let work = CgroupWork {
            shared: self.shared.clone(),
            name: self.app.spec.name.to_string(),
            id,
            cgroup: self.held.cgroup.clone(),
            limits: self.app.spec.limits.clone(),
            retired: self.held.retired_notify.take(),
        };
        let reads = self.spawns.preparer.prepare(&self.app.spec, rebind, work);
        self.spawns.preparing = Some((id, Box::pin(reads)));
    }

    /// Instance `id`'s file reads and cgroupfs work are in: spawn it,
    /// unless the machine has stopped wanting it meanwhile (it then only
    /// waits to hear that no process was made).
    pub(super) fn prepared(&mut self, id: InstanceId, preparation: Preparation<Box<Made>>) {
        let Preparation {
            prepared,
            listen,
            followup: made,
        } = preparation;
        let mut rebound = Ok(());
        if let Some(keep) = self.held.rebinding.take() {
            match listen {
                Some(Ok(sockets)) if keep => self.held.listen = Some(sockets),
                // Stopped by request meanwhile: closed, and their files
                // removed, off the runtime.
                Some(Ok(sockets)) => drop(tokio::task::spawn_blocking(move || drop(sockets))),
                Some(Err(error)) => rebound = Err(SpawnError::Listen(error)),
                None => {}
            }
        }
        let wanted = self.machine.state() == AppState::Starting && self.machine.is_current(id);
        if !wanted {
            self.unmade(made);
            tracing::debug!(instance = %id, "stopped before the process was made");
            self.feed(Event::SpawnFailed {
                instance: id,
                reason: "stopped before the process was made".to_owned(),
            });
            return;
        }
        let spawned = match (prepared, rebound, made) {
            (Ok(prepared), Ok(()), Some(made)) => {
                let prepared = self.shared.latest_prepared.share(prepared);
                self.try_spawn(id, prepared, *made)
            }
            (Err(error), _, made) => {
                self.unmade(made);
                Err(SpawnError::Prepare(error))
            }
            (Ok(_), Err(error), made) => {
                self.unmade(made);
                Err(error)
            }
            // The job runs the cgroupfs work whenever the reads succeed.
            (Ok(_), Ok(()), None) => Err(SpawnError::Prepare(PrepareError::Failed(
                "the cgroup work did not run".to_owned(),
            ))),
        };
        match spawned {
            Ok(instance) => {
                // One instance at a time but during a restart: a plain
                // push would reserve room for four in every app's task.
                self.instances.reserve_exact(1);
                self.instances.push(instance);
            }
            Err(error) => {
                tracing::warn!(reason = %error, "spawn failed");
                self.feed(Event::SpawnFailed {
                    instance: id,
                    reason: error.to_string(),
                });
            }
        }
    }

    /// What a spawn's cgroupfs work made for a spawn that does not happen:
    /// the app's cgroup and limits are held (they exist now), the leaf is
    /// unwatched and removed on the blocking pool.
    fn unmade(&mut self, made: Option<Box<Made>>) {
        let Some(made) = made else {
            return;
        };
        if made.cgroup.is_some() {
            self.held.cgroup = made.cgroup;
        }
        let Ok(MadeLeaf { leaf, limits }) = made.leaf else {
            return;
        };
        if let Ok(applied) = limits {
            self.held.limits = Some(applied.limits);
        }
        if let Some((leaf, _)) = leaf {
            self.unwatch_leaf(&leaf);
            self.remove_off_runtime(move || remove_leaf(leaf));
        }
    }

    /// Sets up what a spawn needs that lives across spawns (notify socket,
    /// listen sockets) besides what `made` holds (the app's cgroup and
    /// limits, the instance's leaf), then spawns instance `id` through the
    /// exec helper.
    fn try_spawn(
        &mut self,
        id: InstanceId,
        prepared: Arc<Prepared>,
        made: Made,
    ) -> Result<Instance, SpawnError> {
        let spec = &self.app.spec;
        if made.cgroup.is_some() {
            self.held.cgroup = made.cgroup;
        }
        let MadeLeaf { leaf, limits } = made.leaf?;
        let (leaf, populated) = match leaf {
            Some((leaf, populated)) => (Some(leaf), populated),
            None => (None, None),
        };
        // Written already; a failure is the spawn's after the sockets'.
        let extra_cgroup_procs = limits.map(|applied| {
            self.held.oom_baseline = applied.oom_baseline;
            self.held.limits = Some(applied.limits);
            applied.extra_procs
        });
        let notify_path = if spec.readiness.kind == ReadinessKind::Notify {
            let path = self.shared.notify_dir.join(format!("{}.sock", spec.name));
            if self.held.notify.is_none() {
                self.held.notify = Some(Box::new(
                    NotifySocket::bind(&path, self.app.uid, self.app.gid).map_err(|source| {
                        SpawnError::Notify {
                            path: path.clone(),
                            source,
                        }
                    })?,
                ));
            }
            Some(path)
        } else {
            None
        };
        let (uid, gid) = (self.app.uid, self.app.gid);
        // Only TCP sockets are bound here, on the runtime (no path is
        // touched): the rest was bound with the file reads, unless the
        // settings changed meanwhile (and a restart follows).
        if !self
            .held
            .listen
            .as_ref()
            .is_some_and(|h| h.serves(&spec.listen, uid, gid))
        {
            let previous = self.held.listen.take();
            self.held.listen =
                Some(HeldSockets::rebind(spec, uid, gid, previous).map_err(SpawnError::Listen)?);
        }
        let probe_socket = if !spec.listen.is_empty() && spec.readiness.probe.is_some() {
            let path = self
                .shared
                .probe_dir
                .join(format!("{}.{id}.sock", spec.name));
            Some(ProbeSocket::bind(&path).map_err(SpawnError::ProbeSocket)?)
        } else {
            None
        };
        self.spawns.release = prepared.release.as_ref().map(|p| p.display().to_string());
        let extra_cgroup_procs = extra_cgroup_procs?;
        let user = PlanUser {
            name: self.app.user_name.clone(),
            uid: self.app.uid,
            gid: self.app.gid,
            groups: self.app.groups.to_vec(),
            home: self.app.home.to_path_buf(),
            shell: self.app.shell.to_path_buf(),
        };
        let inputs = PlanInputs {
            lang: self.shared.lang.clone(),
            notify_socket: notify_path,
            listen_names: self
                .held
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
        self.spawns.prepared = Some(prepared);
        let plan = SpawnPlan::build(spec, &user, &inputs);
        let (out_r, out_w) = crate::logs::make_pipe().map_err(SpawnError::Pipe)?;
        let (err_r, err_w) = crate::logs::make_pipe().map_err(SpawnError::Pipe)?;
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
        let output = self.logs.capture_handing_over(
            Some(out_r),
            Some(err_r),
            // The app's span: this runs in its task.
            tracing::Span::current(),
        );
        let mut instance = Instance::new(
            id,
            pid,
            Some(exit),
            Some(output),
            leaf,
            probe_socket,
            populated,
        );
        instance.report = Some(Box::pin(report.applied()));
        Ok(instance)
    }

    fn spawn_registered(
        &self,
        plan: &SpawnPlan,
        leaf: Option<&Leaf>,
        probe_socket: Option<&ProbeSocket>,
        stdout: OwnedFd,
        stderr: OwnedFd,
    ) -> Result<(u32, oneshot::Receiver<ExitStatus>, spawn::ReportReader), SpawnError> {
        let mut report = None;
        let (pid, exit) = self.shared.reaper.spawn_registered(|| {
            let mut listen_fds = self
                .held
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
            .map_err(SpawnError::Helper)?;
            report = Some(spawned.report);
            Ok::<u32, SpawnError>(spawned.pid)
        })?;
        Ok((pid, exit, report.expect("set on success")))
    }
}

/// A spawn's cgroupfs work, joined to its preparation's job on the blocking
/// pool (`spawn::Followup`): the app's cgroup (made at its first spawn),
/// the instance's leaf (made, watched and opened), the app's `[limits]`
/// (written); first, a notify socket given up since the last spawn is
/// closed and its file removed, before the spawn binds the next.
pub(super) struct CgroupWork {
    pub(super) shared: Arc<Shared>,
    pub(super) name: String,
    pub(super) id: InstanceId,
    /// The app's cgroup, if a spawn made it already.
    pub(super) cgroup: Option<AppCgroup>,
    pub(super) limits: LimitSpec,
    pub(super) retired: Option<Box<NotifySocket>>,
}

/// What [`CgroupWork`] made, each step's failure the spawn's.
pub(super) struct Made {
    /// For the leaf's watch, should nobody take it.
    shared: Arc<Shared>,
    /// The app's cgroup: the one held, or made now.
    cgroup: Option<AppCgroup>,
    /// The instance's leaf and the limits, or why the app's cgroup or the
    /// leaf failed (then nothing later ran).
    leaf: Result<MadeLeaf, SpawnError>,
}

/// What [`CgroupWork`] made once the app's cgroup was there.
pub(super) struct MadeLeaf {
    /// The instance's leaf and its `populated` watch; `None` without
    /// cgroups.
    leaf: Option<(Leaf, Option<Populated>)>,
    /// The limits written, or why not.
    limits: Result<AppliedLimits, SpawnError>,
}

/// The app's limits, written for a spawn.
pub(super) struct AppliedLimits {
    limits: AppLimits,
    /// The memory cgroup's OOM-kill count once they were written.
    oom_baseline: Option<u64>,
    /// The v1 hierarchies' `cgroup.procs` the exec helper joins.
    extra_procs: Vec<PathBuf>,
}

impl Followup for CgroupWork {
    /// Boxed: it passes through every app's task, most of the time unused.
    type Output = Box<Made>;

    fn run(self, _: &Prepared) -> Box<Made> {
        drop(self.retired);
        let shared = &self.shared;
        let cgroup = match (self.cgroup, &shared.cgroups) {
            (Some(cg), _) => Some(cg),
            (None, Some(root)) => match root.app(&self.name) {
                Ok(cg) => Some(cg),
                Err(error) => {
                    return Box::new(Made {
                        shared: self.shared,
                        cgroup: None,
                        leaf: Err(SpawnError::Cgroup(error)),
                    })
                }
            },
            (None, None) => None,
        };
        // Each instance gets a leaf of its own, so that a start-stop
        // restart's previous instance can be stopped without touching
        // this one.
        let leaf = match &cgroup {
            Some(cg) => made_leaf(shared, cg, self.id).map(Some),
            None => Ok(None),
        };
        let leaf = leaf.map(|leaf| MadeLeaf {
            leaf,
            limits: apply_limits(shared, &self.name, cgroup.as_ref(), &self.limits),
        });
        Box::new(Made {
            shared: self.shared,
            cgroup,
            leaf,
        })
    }

    fn abandon(made: Box<Made>) {
        if let Ok(MadeLeaf {
            leaf: Some((leaf, _)),
            ..
        }) = made.leaf
        {
            if let Some(watcher) = &made.shared.watcher {
                watcher.unwatch(&leaf.cgroup);
            }
            remove_leaf(leaf);
        }
    }
}

/// Instance `id`'s leaf below `cg`: made, watched, and opened so the spawn
/// can clone straight into it.
fn made_leaf(
    shared: &Shared,
    cg: &AppCgroup,
    id: InstanceId,
) -> Result<(Leaf, Option<Populated>), SpawnError> {
    let leaf = cg.child(&id.to_string()).map_err(SpawnError::Cgroup)?;
    let populated = match &shared.watcher {
        Some(watcher) => Some(watcher.watch(&leaf).map_err(SpawnError::CgroupWatch)?),
        None => None,
    };
    let dir = std::fs::File::open(leaf.dir())
        .map(OwnedFd::from)
        .map_err(|source| SpawnError::Leaf {
            path: leaf.dir().to_owned(),
            source,
        })?;
    Ok((Leaf { cgroup: leaf, dir }, populated))
}

/// Writes app `name`'s `[limits]` (`configured`, the defaults filling the
/// keys it leaves unset).
fn apply_limits(
    shared: &Shared,
    name: &str,
    cgroup: Option<&AppCgroup>,
    configured: &LimitSpec,
) -> Result<AppliedLimits, SpawnError> {
    let limits = shared
        .limits
        .app(name, cgroup.map(AppCgroup::dir))
        .map_err(SpawnError::Limits)?;
    let mut applied = shared.default_limits.fill(configured);
    if configured.tasks.is_none() && !limits.carries(crate::cgroup::Controller::Pids) {
        // A default is best effort: it never keeps an app from starting.
        applied.tasks = None;
    }
    limits.apply(&applied).map_err(SpawnError::Limits)?;
    Ok(AppliedLimits {
        oom_baseline: limits.oom_kills(),
        extra_procs: limits.extra_procs(&applied),
        limits,
    })
}
