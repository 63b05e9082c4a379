//! Spawn preparation: what a spawn needs that lives across spawns (the
//! app's cgroup, its notify and listen sockets, its limits), the
//! instance's own leaf cgroup, probe socket and pipes, and the exec
//! helper started through the reaper. What fails here fails in the daemon,
//! before the app's program runs, and is a [`SpawnError`]; what fails in
//! the exec helper comes back in its report.

use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::oneshot;

use super::{sandbox_inputs, watch_populated, Instance, Leaf, Supervisor};
use crate::app::{AppState, Event, ExitStatus, InstanceId};
use crate::cgroup::{AppCgroup, CgroupError};
use crate::config::ReadinessKind;
use crate::handoff::fdstore;
use crate::listen::{HeldSockets, ListenError, ProbeSocket, Rebind};
use crate::logs::LogError;
use crate::readiness::{NotifySocket, ReadinessError};
use crate::spawn::{self, PlanInputs, PlanUser, Preparation, PrepareError, Prepared, SpawnPlan};

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
    /// `Effect::Spawn`: first the file reads a spawn needs, and the listen
    /// sockets' rebind when it works on paths, off the runtime
    /// (`spawn::prepare`); the process follows in [`Self::prepared`].
    pub(super) fn spawn(&mut self, id: InstanceId) {
        self.spawns.count += 1;
        self.spawns.spawned_at = Some(self.logs.mark());
        let rebind = Rebind::needed(&self.app, &mut self.held.listen);
        self.held.rebinding = rebind.is_some().then_some(true);
        let reads = self.spawns.preparer.prepare(&self.app.spec, rebind);
        self.spawns.preparing = Some((id, Box::pin(reads)));
    }

    /// Instance `id`'s file reads are in: spawn it, unless the machine has
    /// stopped wanting it meanwhile (it then only waits to hear that no
    /// process was made).
    pub(super) fn prepared(&mut self, id: InstanceId, preparation: Preparation) {
        let Preparation { prepared, listen } = preparation;
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
            tracing::debug!(instance = %id, "stopped before the process was made");
            self.feed(Event::SpawnFailed {
                instance: id,
                reason: "stopped before the process was made".to_owned(),
            });
            return;
        }
        let spawned = match (prepared, rebound) {
            (Ok(prepared), Ok(())) => self.try_spawn(id, Arc::new(prepared)),
            (Err(error), _) => Err(SpawnError::Prepare(error)),
            (Ok(_), Err(error)) => Err(error),
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

    /// Sets up what a spawn needs that lives across spawns (cgroup, notify
    /// socket, listen sockets), then spawns instance `id` through the exec
    /// helper.
    fn try_spawn(
        &mut self,
        id: InstanceId,
        prepared: Arc<Prepared>,
    ) -> Result<Instance, SpawnError> {
        let spec = &self.app.spec;
        if self.held.cgroup.is_none() {
            if let Some(root) = &self.shared.cgroups {
                let cg = root.app(spec.name.as_str()).map_err(SpawnError::Cgroup)?;
                self.held.cgroup = Some(cg);
            }
        }
        // Each instance gets a leaf of its own, so that a start-stop
        // restart's previous instance can be stopped without touching
        // this one.
        let (leaf, populated) = match &self.held.cgroup {
            Some(cg) => {
                let leaf = cg.child(&id.to_string()).map_err(SpawnError::Cgroup)?;
                let populated = match &self.shared.watcher {
                    Some(watcher) => Some(watcher.watch(&leaf).map_err(SpawnError::CgroupWatch)?),
                    None => None,
                };
                // Kept open so the spawn can clone straight into it.
                let dir = std::fs::File::open(leaf.dir())
                    .map(OwnedFd::from)
                    .map_err(|source| SpawnError::Leaf {
                        path: leaf.dir().to_owned(),
                        source,
                    })?;
                (
                    Some(Leaf { cgroup: leaf, dir }),
                    populated.map(watch_populated),
                )
            }
            None => (None, None),
        };
        let notify_path = if spec.readiness.kind == ReadinessKind::Notify {
            let path = self.shared.notify_dir.join(format!("{}.sock", spec.name));
            if self.held.notify.is_none() {
                self.held.notify = Some(
                    NotifySocket::bind(&path, self.app.uid, self.app.gid).map_err(|source| {
                        SpawnError::Notify {
                            path: path.clone(),
                            source,
                        }
                    })?,
                );
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
        let limits = self
            .shared
            .limits
            .app(
                spec.name.as_str(),
                self.held.cgroup.as_ref().map(AppCgroup::dir),
            )
            .map_err(SpawnError::Limits)?;
        let mut applied = self.shared.default_limits.fill(&spec.limits);
        if spec.limits.tasks.is_none() && !limits.carries(crate::cgroup::Controller::Pids) {
            // A default is best effort: it never keeps an app from starting.
            applied.tasks = None;
        }
        limits.apply(&applied).map_err(SpawnError::Limits)?;
        self.held.oom_baseline = limits.oom_kills();
        let extra_cgroup_procs = limits.extra_procs(&applied);
        self.held.limits = Some(limits);
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
        let output = self.logs.capture_handing_over(Some(out_r), Some(err_r));
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
