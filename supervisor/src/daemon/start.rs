//! Start-up, the signal loop and shutdown.
//!
//! Start-up, in order:
//! 1. raise the soft open-file limit to the hard one (`fds`);
//! 2. read `appvisor.toml` and check that `apps_dir` can be listed (an
//!    error ends the daemon with exit status 2);
//! 3. become a child subreaper and start reaping;
//! 4. find the cgroup v2 tree; decide which apps a crashed daemon left
//!    running can be adopted (its records, `adopt`), and kill whatever
//!    else it left in its app cgroups, so no duplicate fights for a port;
//! 5. bind the control socket; read operator intent (`intents`);
//! 6. adopt what step 4 decided; load `apps.d` and start every autostart
//!    app at once, each in its own task, as far as the open-file budget
//!    goes (an app stopped by hand stays stopped);
//! 7. tell a service manager READY=1, then serve until SIGTERM or SIGINT
//!    (SIGHUP re-reads `appvisor.toml` and `apps.d`).
//!
//! Shutdown stops every app in parallel and returns once all are gone.
//!
//! Started by a hand-off (`handoff`), steps 3 and 5 differ: nothing is
//! killed, the control socket is the one handed over, and the apps are
//! taken over as they run; a hand-off this binary cannot take execs the
//! previous binary again.

use std::collections::BTreeMap;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use appvisor_protocol::ApplyReport;
use tokio::signal::unix::{signal, SignalKind};

use crate::app::Cause;
use crate::audit::Events;
use crate::cgroup::{CgroupRoot, CgroupWatcher, Controller};
use crate::config;
use crate::locks;
use crate::supervise::{reaper::Reaper, Handle, Shared};

use super::apply::{stop_all, Judging};
use super::intents::Intents;
use super::{adopt, fds, handoff, Daemon, DaemonError, Options};

/// How long connections still open once every app has stopped (followers
/// of logs or events) may take to end before the daemon exits.
const SERVER_GRACE: Duration = Duration::from_secs(1);

/// How long start-up may take to create its directories.
const DIRS_TIMEOUT: Duration = Duration::from_secs(10);

/// How long start-up waits for an earlier daemon's leftovers to die.
const LEFTOVER_GRACE: Duration = Duration::from_secs(5);

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(options: Options) -> Result<(), DaemonError> {
    let mut nofile = raise_open_file_limit();
    // Before the apps' fds, so the slots are low (each spawn's child keeps
    // the fds below the highest slot).
    if !crate::spawn::reserve_launch_slots() {
        tracing::info!(
            "close_range cannot unshare a file table here: each spawn copies the daemon's"
        );
    }
    // Started by a hand-off? A document this binary cannot read sends the
    // process back to the previous binary at once.
    let incoming = match crate::handoff::incoming::take() {
        None => None,
        Some(Ok(incoming)) => Some(incoming),
        Some(Err((error, memfd))) => {
            let why = error.to_string();
            if let Some(memfd) = memfd {
                let exec_error = crate::handoff::incoming::fall_back_unread(&memfd, &why);
                tracing::error!(error = %exec_error, "cannot exec the previous appvisord either; its apps run on unsupervised");
            }
            return Err(DaemonError::Handoff(why));
        }
    };
    let frozen_at = incoming.as_ref().map(|i| i.document.handoff.frozen_at_ns);
    if let Some(frozen_at) = frozen_at {
        handoff::phase(frozen_at, "state read by the new image");
    }
    // The configuration the previous image ran, adopted as it is.
    let mut carried = incoming.as_ref().and_then(handoff::carried_config);
    let daemon_config = match carried.as_mut() {
        Some(carried) => {
            let text = std::mem::take(&mut carried.daemon_text);
            config::load::daemon_from_text(&carried.daemon_file, text)
        }
        None => crate::judge::daemon_config(&options.config, options.config_explicit).await,
    };
    let config = match daemon_config {
        Ok(config) => config,
        Err(errors) => {
            if let Some(incoming) = &incoming {
                incoming.fall_back(&format!("invalid configuration: {errors}"));
            }
            return Err(errors.into());
        }
    };
    if let Some(frozen_at) = frozen_at {
        handoff::phase(frozen_at, "configuration read");
    }
    // Apps keep the limit the first daemon of a line of hand-offs was
    // started with, not the one it raised.
    if let Some(soft) = incoming.as_ref().and_then(|i| i.document.apps_open_files) {
        nofile.inherited = soft;
    }
    let spec = config.spec.clone();
    // A missing apps_dir is a mistake, never "no apps".
    crate::judge::check_apps_dir(&spec.apps_dir).await?;
    let (notify_dir, probe_dir) = make_dirs(&spec).await?;

    // The main processes handed over are this process's children still:
    // registered before the first reap.
    let adopted_pids: Vec<u32> = incoming
        .iter()
        .flat_map(|i| i.document.apps.iter())
        .filter_map(|app| app.current.as_ref())
        .filter(|current| current.exit.is_none())
        .map(|current| current.pid)
        // Not those adopted after a crash: no exit of theirs reaches us.
        .filter(|pid| crate::supervise::reaper::is_child(*pid))
        .collect();
    let (reaper, mut adopted) =
        Reaper::start_adopting(&adopted_pids).map_err(DaemonError::Reaper)?;
    // Reads in /proc and a mkdir in cgroupfs: for the blocking pool, as
    // the rest of the start-up's cgroup work below.
    let cgroup_name = options.cgroup_name.clone();
    let cgroups = tokio::task::spawn_blocking(move || CgroupRoot::detect(&cgroup_name))
        .await
        .expect("detecting the cgroup tree does not panic")?;
    // Started afresh: what a crashed predecessor left may be adopted, with
    // the fds it put in the service manager's store.
    let passed = match &incoming {
        Some(_) => BTreeMap::new(),
        None => crate::handoff::fdstore::take_passed(),
    };
    let records_dir = run_dir(&spec).join("records");
    let (adoption, adoptable) = match &incoming {
        Some(_) => (adopt::Plan::default(), BTreeMap::new()),
        None => adoption_plan(&records_dir, cgroups.clone(), &config).await,
    };
    let v2_controllers = match cgroups.clone() {
        None => Vec::new(),
        Some(root) => {
            let handed_over = incoming.is_some();
            tokio::task::spawn_blocking(move || {
                let controllers = delegated_controllers(&root);
                warn_if_crash_restart_blocked(&root, handed_over, &controllers);
                controllers
            })
            .await
            .expect("enabling the cgroup controllers does not panic")
        }
    };
    let watcher = match &cgroups {
        Some(root) => {
            let watcher = CgroupWatcher::start()?;
            // After a hand-off what runs in the app cgroups is handed over,
            // not left over.
            if incoming.is_none() {
                let report = root
                    .reap_leftovers(&watcher, LEFTOVER_GRACE, &adoption.keep())
                    .await?;
                for reaped in &report.reaped {
                    tracing::warn!(app = %reaped.name, killed = reaped.killed, "killed processes left by an earlier appvisord");
                }
                for failure in &report.failed {
                    tracing::error!(error = %failure, "could not clean up after an earlier appvisord");
                }
            }
            Some(watcher)
        }
        None => {
            tracing::warn!("no cgroup v2 tree: tracking apps by process group; daemonized grandchildren may escape stop");
            None
        }
    };
    let listener = match &incoming {
        Some(incoming) => handed_listener(incoming.document.control_fd)?,
        None => {
            // Checks its directory, tries a stale socket, unlinks and
            // binds: file system work, for the blocking pool.
            let path = spec.control.socket.clone();
            tokio::task::spawn_blocking(move || crate::control::bind_control_socket(&path))
                .await
                .expect("binding the control socket does not panic")?
        }
    };
    // The sandbox's view of the host: v1 limit hierarchies and the Landlock
    // ABI cap.
    // Reads in /proc and mkdirs in cgroupfs.
    let cgroup_name = options.cgroup_name.clone();
    let limits = tokio::task::spawn_blocking(move || {
        crate::cgroup::LimitRoot::detect(&cgroup_name).unwrap_or_else(|error| {
            tracing::warn!(%error, "no v1 hierarchies for limits");
            crate::cgroup::LimitRoot::default()
        })
    })
    .await
    .expect("finding the v1 hierarchies does not panic");
    let default_limits = default_limits(
        v2_controllers.contains(&Controller::Pids.as_str()) || limits.has_v1(Controller::Pids),
    );
    let shared = Arc::new(Shared {
        reaper,
        cgroups,
        watcher,
        events: Events::default(),
        notify_dir,
        probe_dir,
        lang: std::env::var("LANG").ok(),
        limits,
        default_limits,
        landlock_abi_max: crate::sandbox::landlock_abi_cap(),
        hide: vec![options.config.clone(), spec.apps_dir.clone()],
        app_open_files: crate::sandbox::Rlimit {
            resource: crate::sandbox::RlimitResource::OpenFiles,
            soft: nofile.inherited,
            hard: nofile.hard,
        },
        fd_store: crate::handoff::fdstore::FdStore::from_env(),
        records: crate::handoff::crash::RecordWriter::start(records_dir, handoff::VERSION)
            .map_err(|error| tracing::error!(%error, "no records for a crash: a crash of appvisord will restart every app"))
            .ok(),
        latest_prepared: Default::default(),
        latest_sandbox: Default::default(),
    });
    let state_dir = spec.state_dir.clone();
    let intents = tokio::task::spawn_blocking(move || Intents::load(&state_dir))
        .await
        .expect("loading operator intent does not panic");
    let status_listener = match &incoming {
        Some(incoming) => incoming
            .document
            .status_fd
            .and_then(|fd| handed_status_listener(fd).ok()),
        None => bind_status(&spec.status).await,
    };
    let binary = crate::handoff::exec::Binary::at_start(options.reexec_binary.clone())
        .map_err(|error| tracing::warn!(%error, "no hand-off possible: cannot open this binary"))
        .ok();
    let listener_fds =
        handoff::listener_fds(&listener, status_listener.as_ref()).map_err(DaemonError::Signals)?;
    let (handoff_control, mut orders) = handoff::HandoffControl::new(binary, listener_fds, None);
    let daemon = Arc::new(Daemon {
        intents: Arc::new(intents),
        options,
        config: RwLock::new(config),
        apps: RwLock::new(BTreeMap::new()),
        ignored: RwLock::new(Vec::new()),
        fds: Mutex::new(fds::FdBudget::new(nofile.soft)),
        shared,
        judged: crate::judge::JudgeCache::default(),
        apply_lock: tokio::sync::Mutex::new(()),
        handoff: handoff_control,
    });

    let mut terminate = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;
    let mut hangup = signal(SignalKind::hangup()).map_err(DaemonError::Signals)?;
    let mut user2 = signal(SignalKind::user_defined2()).map_err(DaemonError::Signals)?;
    // Held back across a hand-off's exec; the handlers are in place now.
    crate::handoff::exec::unblock_signals();

    let report = match &incoming {
        Some(incoming) => {
            handoff::phase(
                incoming.document.handoff.frozen_at_ns,
                "taking the apps over",
            );
            if let Err(why) = daemon
                .take_over(incoming, carried, &mut adopted, &spec.log_dir)
                .await
            {
                incoming.fall_back(&why);
                return Err(DaemonError::Handoff(why));
            }
            handoff::phase(incoming.document.handoff.frozen_at_ns, "apps taken over");
            daemon.handed_over(incoming);
            ApplyReport::default()
        }
        None => {
            daemon
                .adopt(adoption, &adoptable, passed, &spec.log_dir)
                .await;
            daemon
                .apply_config(false, None)
                .await
                .unwrap_or_else(|error| {
                    tracing::error!("no app started: {}", error);
                    ApplyReport::default()
                })
        }
    };
    drop(incoming);
    tracing::info!(
        apps = locks::read(&daemon.apps).len(),
        invalid = report.invalid.len(),
        socket = %spec.control.socket.display(),
        "appvisord ready"
    );
    let servers = crate::httpd::Shutdown::default();
    tokio::spawn(crate::control::serve(
        listener,
        daemon.clone(),
        Arc::new(crate::config::SystemUserDb),
        servers.closing(),
    ));
    if let Some(listener) = status_listener {
        tokio::spawn(crate::status::serve(
            listener,
            daemon.clone(),
            crate::status::Roots::default(),
            servers.closing(),
        ));
    }
    notify_service_manager();

    loop {
        tokio::select! {
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
            _ = hangup.recv() => {
                tracing::info!("SIGHUP: re-reading appvisor.toml and every file of apps.d");
                // Whatever changed outside the files (a directory service's
                // users and groups) is seen: every file is judged again.
                if let Err(error) = daemon.apply(false, None, Judging::Every).await {
                    tracing::error!(
                        "SIGHUP changed nothing, the running configuration stays: {}",
                        error
                    );
                }
            }
            _ = user2.recv() => {
                tracing::info!("SIGUSR2: hand-off to {}", daemon.daemon_status().binary);
                if let Err(err) = daemon.request_reexec("SIGUSR2", handoff::fresh_id()).await {
                    tracing::error!(error = %err, "SIGUSR2: no hand-off");
                }
            }
            Some(order) = orders.recv() => daemon.hand_off(order).await,
        }
    }
    tracing::info!("stopping every app");
    // No new connection from here; a request in flight (a waiting stop,
    // say) is still answered, and its connection closed then.
    servers.begin();
    daemon.shutdown().await;
    if let Some(records) = &daemon.shared.records {
        let records = records.clone();
        let _ = tokio::task::spawn_blocking(move || records.close(Duration::from_secs(5))).await;
    }
    servers.finish(SERVER_GRACE).await;
    let socket = spec.control.socket.clone();
    let _ = tokio::task::spawn_blocking(move || std::fs::remove_file(socket)).await;
    tracing::info!("all apps stopped");
    Ok(())
}

/// What a crashed predecessor left in `records_dir`, decided against
/// apps.d and the live cgroup tree (`adopt`), with the apps.d it was
/// decided against. Nothing to adopt when apps.d cannot be read.
async fn adoption_plan(
    records_dir: &Path,
    cgroups: Option<CgroupRoot>,
    config: &config::DaemonConfig,
) -> (adopt::Plan, BTreeMap<String, crate::judge::Candidate>) {
    let dir = records_dir.to_owned();
    let previous = tokio::task::spawn_blocking(move || crate::handoff::crash::read_previous(&dir))
        .await
        .unwrap_or_default();
    if previous.records.is_empty() {
        return Default::default();
    }
    // A cache of its own: judged once, before the daemon's exists.
    let candidates = match crate::judge::scan(config, &crate::judge::JudgeCache::default()).await {
        Ok(scan) => scan.candidates,
        Err(error) => {
            tracing::error!(%error, "cannot read apps.d: nothing adopted after a crash");
            return Default::default();
        }
    };
    tokio::task::spawn_blocking(move || {
        let plan = adopt::plan(previous, cgroups.as_ref(), &candidates);
        (plan, candidates)
    })
    .await
    .unwrap_or_default()
}

/// The limits of apps that set none, where a controller can enforce them.
fn default_limits(pids_controller: bool) -> config::DefaultLimits {
    let defaults = config::DefaultLimits::for_host(config::default_limits::host_max_tasks());
    match (defaults.describe(), pids_controller) {
        (Some(what), true) => {
            tracing::info!("apps without [limits] get {what}");
            defaults
        }
        (Some(what), false) => {
            tracing::warn!("no pids controller for apps: no default {what}");
            config::DefaultLimits::default()
        }
        (None, _) => defaults,
    }
}

/// Raises the daemon's soft open-file limit to the hard one, and says so.
fn raise_open_file_limit() -> fds::NofileLimit {
    match fds::raise() {
        Ok(limit) => {
            if limit.soft > limit.inherited {
                tracing::info!(
                    from = limit.inherited,
                    to = limit.soft,
                    "raised the open-file limit (apps keep {})",
                    limit.inherited
                );
            }
            limit
        }
        Err((limit, error)) => {
            tracing::warn!(%error, soft = limit.soft, hard = limit.hard, "cannot raise the open-file limit");
            limit
        }
    }
}

/// The control listener a hand-off passed on.
fn handed_listener(fd: i32) -> Result<tokio::net::UnixListener, DaemonError> {
    use std::os::fd::FromRawFd;
    // SAFETY: `handoff::incoming::take` checked that the document names
    // this fd once and that it is open; the document's fds are taken only
    // here, in `handed_status_listener` and in `Incoming::take_fds`, each
    // a different fd.
    let listener = unsafe { std::os::unix::net::UnixListener::from_raw_fd(fd) };
    listener
        .set_nonblocking(true)
        .and_then(|()| tokio::net::UnixListener::from_std(listener))
        .map_err(DaemonError::Signals)
}

fn handed_status_listener(fd: i32) -> std::io::Result<tokio::net::TcpListener> {
    use std::os::fd::FromRawFd;
    // SAFETY: as for `handed_listener`.
    let listener = unsafe { std::net::TcpListener::from_raw_fd(fd) };
    listener.set_nonblocking(true)?;
    tokio::net::TcpListener::from_std(listener)
}

/// Binds `[status] listen`, if set. An address that cannot be bound is
/// logged and leaves the status server off: the apps matter more than
/// their metrics, and the failed scrapes tell monitoring.
async fn bind_status(spec: &config::StatusSpec) -> Option<tokio::net::TcpListener> {
    let address = spec.listen?;
    match crate::status::bind(address).await {
        Ok(listener) => {
            tracing::info!(%address, "status server listening");
            Some(listener)
        }
        Err(err) => {
            tracing::error!(error = %err, "status server off");
            None
        }
    }
}

/// The directory of the control socket, which holds the daemon's other
/// run-time files.
fn run_dir(spec: &config::DaemonSpec) -> PathBuf {
    spec.control
        .socket
        .parent()
        .unwrap_or(Path::new("/run/appvisor"))
        .to_owned()
}

/// Creates `log_dir`, `state_dir` and the run directory's `notify/` and
/// `probe/`, on the blocking pool within [`DIRS_TIMEOUT`] (a hung file
/// system under one of them ends start-up with its name, rather than
/// holding a worker thread); returns `notify/` and `probe/`.
async fn make_dirs(spec: &config::DaemonSpec) -> Result<(PathBuf, PathBuf), DaemonError> {
    let (log_dir, state_dir) = (spec.log_dir.clone(), spec.state_dir.clone());
    let run_dir = run_dir(spec);
    let notify_dir = run_dir.join("notify");
    // Each instance's private probe socket: only root may connect, so only
    // the daemon's probe reaches an instance this way.
    let probe_dir = run_dir.join("probe");
    let (notify, probe) = (notify_dir.clone(), probe_dir.clone());
    let make = tokio::task::spawn_blocking(move || {
        for dir in [&log_dir, &state_dir, &notify] {
            make_dir(dir, 0o755)?;
        }
        make_dir(&probe, 0o700)?;
        std::fs::set_permissions(&probe, std::fs::Permissions::from_mode(0o700)).map_err(|source| {
            DaemonError::Dir {
                path: probe,
                source,
            }
        })
    });
    match tokio::time::timeout(DIRS_TIMEOUT, make).await {
        Ok(Ok(made)) => made.map(|()| (notify_dir, probe_dir)),
        Ok(Err(join)) => Err(DaemonError::Dir {
            path: run_dir,
            source: std::io::Error::other(join.to_string()),
        }),
        Err(_elapsed) => Err(DaemonError::Dir {
            path: spec.log_dir.clone(),
            source: std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "no answer within {DIRS_TIMEOUT:?} (a hung file system under it, state_dir or {}?)",
                    run_dir.display()
                ),
            ),
        }),
    }
}

fn make_dir(path: &Path, mode: u32) -> Result<(), DaemonError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .map_err(|source| DaemonError::Dir {
            path: path.to_owned(),
            source,
        })
}

/// Says once, at a start that was no hand-off, that a crash of this
/// daemon will kill every app or leave them unsupervised, when systemd put
/// it where a restart cannot go ([`crate::cgroup::crash_restart_blocked`]).
/// Enables the cgroup v2 controllers `root` can hand to apps, and says
/// which: none when it cannot. Writes in cgroupfs, for the blocking pool.
fn delegated_controllers(root: &CgroupRoot) -> Vec<&'static str> {
    match root.delegate_controllers() {
        Ok(controllers) if controllers.is_empty() => {
            tracing::debug!(
                "no cgroup v2 controllers to hand to apps; [limits] use v1 hierarchies"
            );
            controllers
        }
        Ok(controllers) => {
            tracing::info!(
                ?controllers,
                "cgroup v2 controllers enabled for app [limits]"
            );
            controllers
        }
        Err(error) => {
            tracing::warn!(
                error = %error,
                cause = std::error::Error::source(&error).map(ToString::to_string).unwrap_or_default(),
                "cannot enable cgroup v2 controllers for apps, so [limits] can only use v1 hierarchies \
                 (run appvisord as the only process of its cgroup, e.g. a systemd service with Delegate=yes)"
            );
            Vec::new()
        }
    }
}

fn warn_if_crash_restart_blocked(root: &CgroupRoot, handed_over: bool, controllers: &[&str]) {
    let under_systemd =
        std::env::var_os("INVOCATION_ID").is_some() || std::env::var_os("NOTIFY_SOCKET").is_some();
    if crate::cgroup::crash_restart_blocked(
        under_systemd,
        handed_over,
        root.started_in(),
        root.instance(),
        controllers,
    ) {
        tracing::warn!(
            cgroup = root.started_in(),
            ?controllers,
            "systemd started appvisord in its unit's cgroup, which now enables cgroup v2 controllers \
             for the apps: if appvisord crashes, systemd cannot start the next one there \
             (status 219/CGROUP) and the apps run on unsupervised, or, with KillMode=mixed (what the \
             Debian package sets before systemd 254), every app is killed with it; systemd 254 and \
             later adopt them with DelegateSubgroup={}-daemon (docs/handoff.md, \"systemd: stop, and \
             TimeoutStopSec\")",
            root.instance()
        );
    }
}

/// READY=1 to the service manager's NOTIFY_SOCKET, if there is one.
fn notify_service_manager() {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let socket = match std::os::unix::net::UnixDatagram::unbound() {
        Ok(socket) => socket,
        Err(err) => {
            tracing::warn!(error = %err, "creating a socket to notify the service manager");
            return;
        }
    };
    let bytes = path.as_encoded_bytes();
    let result = if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|addr| socket.send_to_addr(b"READY=1", &addr))
    } else {
        socket.send_to(b"READY=1", Path::new(&path))
    };
    if let Err(err) = result {
        tracing::warn!(error = %err, "notifying the service manager");
    }
}

impl Daemon {
    async fn shutdown(&self) {
        self.save_pending_intent().await;
        let handles: Vec<Handle> = {
            let mut apps = locks::write(&self.apps);
            apps.values_mut().filter_map(|e| e.handle.take()).collect()
        };
        stop_all(handles.into_iter(), Cause::Shutdown).await;
        // Each app's task removed its cgroups as it ended; what is left
        // is the daemon's own: rmdirs in cgroupfs, for the blocking pool.
        let shared = Arc::clone(&self.shared);
        let removed = tokio::task::spawn_blocking(move || {
            if let Some(root) = &shared.cgroups {
                if let Err(err) = root.remove() {
                    tracing::warn!(error = %err, "removing the daemon's cgroup");
                }
            }
            if let Err(err) = shared.limits.remove() {
                tracing::warn!(error = %err, "removing the daemon's v1 limit cgroups");
            }
        });
        if let Err(err) = removed.await {
            tracing::warn!(error = %err, "removing the daemon's cgroups");
        }
    }
}
