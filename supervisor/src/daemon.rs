//! The daemon: start-up, the registry of apps, configuration changes,
//! operator intent, signals and shutdown.
//!
//! Start-up, in order:
//! 1. raise the soft open-file limit to the hard one (`fds`);
//! 2. read `appvisor.toml` and check that `apps_dir` can be listed (an
//!    error ends the daemon with exit status 2);
//! 3. become a child subreaper and start reaping;
//! 4. find the cgroup v2 tree, and kill whatever an earlier daemon that
//!    died left in its app cgroups, so no duplicate fights for a port;
//! 5. bind the control socket; read operator intent (`intents`);
//! 6. load `apps.d` and start every autostart app at once, each in its own
//!    task, as far as the open-file budget goes (an app stopped by hand
//!    stays stopped);
//! 7. tell a service manager READY=1, then serve until SIGTERM or SIGINT
//!    (SIGHUP re-reads `appvisor.toml` and `apps.d`).
//!
//! Shutdown stops every app in parallel and returns once all are gone.
//!
//! Started by a hand-off (`handoff`), steps 3 and 5 differ: nothing is
//! killed, the control socket is the one handed over, and the apps are
//! taken over as they run; a hand-off this binary cannot take execs the
//! previous binary again.

mod adopt;
mod handoff;

pub use handoff::VERSION;

mod fds;
mod intents;

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use appvisor_protocol::{
    Action, ActionRequest, ActionResult, AppStatus, ApplyReport, IgnoredFile, InvalidApp, Outcome,
    State, StoppedBy,
};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;

use crate::acl::{self, AdminRules, Operation, Peer};
use crate::app::{Answer, Cause};
use crate::audit::{unix_now, Events};
use crate::cgroup::{CgroupRoot, CgroupWatcher, Controller};
use crate::config::change::{self, Change};
use crate::config::resolve::ResolvedApp;
use crate::config::{self, AccessSpec, DaemonConfig};
use crate::control::{ActError, ApplyError, ControlTarget, ReexecError};
use crate::logs::{AppLogs, LogMark, Selection};
use crate::supervise::{self, reaper::Reaper, Command, Handle, Shared, Snapshot};

use intents::Intents;

/// Lines of memory tail kept per stream for fast `logs` and failure reports.
const TAIL_LINES: usize = 200;
/// Longest an action may wait for its outcome.
const MAX_WAIT: Duration = Duration::from_secs(3600);
/// Default wait when a request asks to wait without a timeout.
const DEFAULT_WAIT: Duration = Duration::from_secs(60);
/// How long connections still open once every app has stopped (followers
/// of logs or events) may take to end before the daemon exits.
const SERVER_GRACE: Duration = Duration::from_secs(1);
/// How long start-up waits for an earlier daemon's leftovers to die.
const LEFTOVER_GRACE: Duration = Duration::from_secs(5);
/// Log lines attached to a failed action, all from this attempt: enough for
/// a gunicorn whose workers failed to boot, whose own traceback on the way
/// out follows the workers' import error.
const FAILURE_LOG_LINES: usize = 60;

/// How the daemon was invoked.
#[derive(Debug, Clone)]
pub struct Options {
    pub config: PathBuf,
    /// The config path was given on the command line (so it must exist).
    pub config_explicit: bool,
    /// Name of this daemon's cgroup subtree, under its own cgroup.
    pub cgroup_name: String,
    /// The binary `appctl reexec` executes; default: this one's path.
    pub reexec_binary: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("invalid configuration:\n{0}")]
    Config(#[from] config::ConfigErrors),
    #[error("creating {}: {source}", path.display())]
    Dir { path: PathBuf, source: io::Error },
    #[error("starting the reaper: {0}")]
    Reaper(io::Error),
    #[error("setting up cgroups: {0}")]
    Cgroup(#[from] crate::cgroup::CgroupError),
    #[error(transparent)]
    Socket(#[from] crate::control::SocketError),
    #[error("installing signal handlers: {0}")]
    Signals(io::Error),
    #[error("taking over from the previous appvisord: {0}")]
    Handoff(String),
}

impl DaemonError {
    /// Exit status of `appvisord`: 2 for configuration errors, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            DaemonError::Config(_) => 2,
            _ => 1,
        }
    }
}

/// What the control plane needs to talk to one app's task.
struct AppChannels {
    commands: supervise::Commands,
    snapshot: tokio::sync::watch::Receiver<Snapshot>,
    logs: Arc<AppLogs>,
}

/// One file of `apps.d`, as the daemon holds it.
#[derive(Debug)]
struct Entry {
    file: PathBuf,
    /// The version that runs (the last one that validated).
    app: Option<Arc<ResolvedApp>>,
    /// Why the newest version of the file does not validate.
    error: Option<String>,
    handle: Option<Handle>,
    /// Why a valid app has no task: no room in the open-file limit.
    refused: Option<String>,
    since: u64,
}

/// The running daemon, as the control server sees it.
#[derive(Debug)]
pub struct Daemon {
    options: Options,
    config: RwLock<DaemonConfig>,
    apps: RwLock<BTreeMap<String, Entry>>,
    shared: Arc<Shared>,
    intents: Arc<Intents>,
    /// Files of `apps_dir` not loaded for their names, as of the last apply.
    ignored: RwLock<Vec<IgnoredFile>>,
    /// The open-file limit, shared out between apps. Taken after `apps`.
    fds: Mutex<fds::FdBudget>,
    /// Serializes configuration changes.
    apply_lock: tokio::sync::Mutex<()>,
    handoff: handoff::HandoffControl,
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(options: Options) -> Result<(), DaemonError> {
    let mut nofile = raise_open_file_limit();
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
    for dir in [&spec.log_dir, &spec.state_dir] {
        make_dir(dir, 0o755)?;
    }
    let run_dir = spec
        .control
        .socket
        .parent()
        .unwrap_or(Path::new("/run/appvisor"))
        .to_owned();
    let notify_dir = run_dir.join("notify");
    make_dir(&notify_dir, 0o755)?;
    // Each instance's private probe socket: only root may connect, so only
    // the daemon's probe reaches an instance this way.
    let probe_dir = run_dir.join("probe");
    make_dir(&probe_dir, 0o700)?;
    std::fs::set_permissions(&probe_dir, std::fs::Permissions::from_mode(0o700)).map_err(
        |source| DaemonError::Dir {
            path: probe_dir.clone(),
            source,
        },
    )?;

    // The main processes handed over are this process's children still:
    // registered before the first reap.
    let adopted_pids: Vec<u32> = incoming
        .iter()
        .flat_map(|i| i.document.apps.iter())
        .filter_map(|app| app.current.as_ref())
        .filter(|current| current.exit.is_none())
        .map(|current| current.pid)
        // Not those adopted after a crash: no exit of theirs reaches us.
        .filter(|pid| supervise::reaper::is_child(*pid))
        .collect();
    let (reaper, mut adopted) =
        Reaper::start_adopting(&adopted_pids).map_err(DaemonError::Reaper)?;
    let cgroups = CgroupRoot::detect(&options.cgroup_name)?;
    // Started afresh: what a crashed predecessor left may be adopted, with
    // the fds it put in the service manager's store.
    let passed = match &incoming {
        Some(_) => BTreeMap::new(),
        None => crate::handoff::fdstore::take_passed(),
    };
    let records_dir = run_dir.join("records");
    let (adoption, adoptable) = match &incoming {
        Some(_) => (adopt::Plan::default(), BTreeMap::new()),
        None => adoption_plan(&records_dir, cgroups.clone(), &config).await,
    };
    let v2_controllers = match &cgroups {
        None => Vec::new(),
        Some(root) => match root.delegate_controllers() {
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
        },
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
        None => crate::control::bind_control_socket(&spec.control.socket)?,
    };
    // The sandbox's view of the host: v1 limit hierarchies and the Landlock
    // ABI cap.
    let limits = crate::cgroup::LimitRoot::detect(&options.cgroup_name).unwrap_or_else(|error| {
        tracing::warn!(%error, "no v1 hierarchies for limits");
        crate::cgroup::LimitRoot::default()
    });
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
        records: crate::handoff::crash::RecordWriter::start(records_dir, VERSION)
            .map_err(|error| tracing::error!(%error, "no records for a crash: a crash of appvisord will restart every app"))
            .ok(),
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
        apps = daemon.apps.read().unwrap_or_else(|e| e.into_inner()).len(),
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
                tracing::info!("SIGHUP: re-reading appvisor.toml and apps.d");
                if let Err(error) = daemon.apply_config(false, None).await {
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
        let _ = tokio::task::spawn_blocking(move || records.flush(Duration::from_secs(5))).await;
    }
    servers.finish(SERVER_GRACE).await;
    let _ = std::fs::remove_file(&spec.control.socket);
    tracing::info!("all apps stopped");
    Ok(())
}

/// What a crashed predecessor left in `records_dir`, decided against
/// apps.d and the live cgroup tree (`adopt`), with the apps.d it was
/// decided against. Nothing to adopt when apps.d cannot be read.
async fn adoption_plan(
    records_dir: &Path,
    cgroups: Option<CgroupRoot>,
    config: &DaemonConfig,
) -> (adopt::Plan, BTreeMap<String, crate::judge::Candidate>) {
    let dir = records_dir.to_owned();
    let previous = tokio::task::spawn_blocking(move || crate::handoff::crash::read_previous(&dir))
        .await
        .unwrap_or_default();
    if previous.records.is_empty() {
        return Default::default();
    }
    let candidates = match crate::judge::scan(config).await {
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

/// Parsing and validating app files (every one at start-up, or a huge
/// hostile one at an update) leaves freed heap that glibc keeps mapped; a
/// daemon that then idles for months should give it back. (musl's
/// allocator returns free memory by itself.)
fn release_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory at the top of glibc's
    // heaps back to the kernel; it touches no memory in use and is safe to
    // call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
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
    pub fn events(&self) -> &Events {
        &self.shared.events
    }

    pub fn admin_rules(&self) -> AdminRules {
        let config = self.config.read().unwrap_or_else(|e| e.into_inner());
        AdminRules {
            users: config.spec.control.admin_users.clone(),
            groups: config.spec.control.admin_groups.clone(),
        }
    }

    /// The `[access]` of app `name`, if it exists (an app known only as an
    /// invalid file has none, so only admins see it).
    pub fn access(&self, name: &str) -> Option<AccessSpec> {
        let apps = self.apps.read().unwrap_or_else(|e| e.into_inner());
        let entry = apps.get(name)?;
        Some(
            entry
                .app
                .as_ref()
                .map(|a| a.spec.access.clone())
                .unwrap_or_default(),
        )
    }

    /// Names of the apps `peer` may operate.
    pub fn visible_apps(&self, peer: &Peer) -> Vec<String> {
        let rules = self.admin_rules();
        let apps = self.apps.read().unwrap_or_else(|e| e.into_inner());
        apps.iter()
            .filter(|(_, entry)| may_view(peer, &rules, entry))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Status of every app `peer` may see, from one look at the registry.
    pub fn statuses(&self, peer: &Peer) -> Vec<AppStatus> {
        let rules = self.admin_rules();
        let apps = self.apps.read().unwrap_or_else(|e| e.into_inner());
        apps.iter()
            .filter(|(_, entry)| may_view(peer, &rules, entry))
            .map(|(name, entry)| entry_status(name, entry))
            .collect()
    }

    /// Status of one app, whoever asks (the caller checks access).
    pub fn status(&self, name: &str) -> Option<AppStatus> {
        let apps = self.apps.read().unwrap_or_else(|e| e.into_inner());
        let entry = apps.get(name)?;
        Some(entry_status(name, entry))
    }

    /// What confines app `name`, whoever asks (the caller checks access).
    pub fn security(&self, name: &str) -> Option<appvisor_protocol::AppSecurity> {
        let apps = self.apps.read().unwrap_or_else(|e| e.into_inner());
        let handle = apps.get(name)?.handle.as_ref()?;
        let snapshot = handle.snapshot.borrow();
        Some(crate::supervise::security(&snapshot, &self.shared))
    }

    pub fn logs(&self, name: &str) -> Option<Arc<AppLogs>> {
        let apps = self.apps.read().unwrap_or_else(|e| e.into_inner());
        apps.get(name)?.handle.as_ref().map(|h| h.logs.clone())
    }

    /// The channels to app `name`'s task, or why there is none.
    fn channels(&self, name: &str) -> Result<AppChannels, ActError> {
        let apps = self.apps.read().unwrap_or_else(|e| e.into_inner());
        let entry = apps.get(name).ok_or_else(|| ActError::NoSuchApp {
            app: name.to_owned(),
        })?;
        match &entry.handle {
            Some(h) => Ok(AppChannels {
                commands: h.commands.clone(),
                snapshot: h.snapshot.clone(),
                logs: h.logs.clone(),
            }),
            None if entry.refused.is_some() => Err(ActError::NotStarted {
                app: name.to_owned(),
                why: entry
                    .refused
                    .clone()
                    .unwrap_or_else(|| "not started".to_owned()),
            }),
            None => Err(ActError::Invalid {
                app: name.to_owned(),
                errors: entry
                    .error
                    .as_deref()
                    .unwrap_or("invalid")
                    .replace('\n', "; "),
                file: entry.file.clone(),
            }),
        }
    }

    /// start, stop, restart or reload, optionally waiting for the outcome
    /// the app's state machine gives.
    pub async fn act(
        &self,
        name: &str,
        action: Action,
        peer: &Peer,
        request: &ActionRequest,
    ) -> Result<ActionResult, ActError> {
        if self.handoff.busy() {
            return Err(ActError::HandingOver);
        }
        if matches!(action, Action::Start | Action::Restart) {
            self.start_refused(name);
        }
        let AppChannels {
            commands,
            snapshot,
            logs,
        } = self.channels(name)?;
        let stopped_by = (action == Action::Stop).then(|| StoppedBy {
            user: peer.user.clone(),
            uid: peer.uid,
            at: unix_now(),
        });
        let intent_error = match action {
            Action::Start | Action::Restart | Action::Stop => self
                .record_intent(name, stopped_by.clone())
                .await
                .err()
                .map(|error| error.to_string()),
            Action::Reload | Action::Signal => None,
        };
        // This attempt's output only: not the lines of earlier attempts.
        let mark = logs.mark();
        let (reply, answer) = oneshot::channel();
        commands
            .send(Command::Control {
                action,
                cause: Cause::Operator(peer.user.clone()),
                stopped_by,
                wait: request.wait,
                reply,
            })
            .map_err(|_| gone(name))?;
        // Without --no-wait, until the outcome; with it, until the machine
        // has taken the request, so the status returned shows it.
        let (outcome, mark) = match tokio::time::timeout(wait_timeout(request), answer).await {
            Ok(Ok(reply)) => {
                // The lines of the attempt that failed, from its spawn.
                let mark = reply.attempt_began.unwrap_or(mark);
                match reply.answer {
                    None | Some(Answer::Done) => (Outcome::Done, mark),
                    Some(Answer::Failed(_)) => (Outcome::Failed, mark),
                    Some(Answer::Refused(why)) => {
                        return Err(ActError::Refused {
                            app: name.to_owned(),
                            action,
                            why,
                        })
                    }
                }
            }
            Ok(Err(_)) => return Err(gone(name)),
            Err(_elapsed) => (Outcome::Timeout, mark),
        };
        Ok(ActionResult {
            intent_error,
            ..action_result(name, action, outcome, &snapshot, &logs, mark)
        })
    }

    /// Records a stop (`Some`) or start (`None`) by hand, saved in
    /// `state_dir` off the runtime (it fsyncs).
    async fn record_intent(
        &self,
        name: &str,
        stopped_by: Option<StoppedBy>,
    ) -> Result<(), intents::SaveError> {
        let intents = self.intents.clone();
        let name = name.to_owned();
        tokio::task::spawn_blocking(move || intents.record(&name, stopped_by))
            .await
            .expect("saving operator intent does not panic")
    }

    /// Saves operator intent again if an earlier save failed; the error is
    /// logged and shown in status.
    async fn save_pending_intent(&self) {
        let intents = self.intents.clone();
        let _ = tokio::task::spawn_blocking(move || intents.save_pending()).await;
    }

    /// What an admin should know about the daemon (`AppList::notices`).
    pub fn notices(&self, peer: &Peer) -> Vec<String> {
        if !acl::is_admin(peer, &self.admin_rules()) {
            return Vec::new();
        }
        let ignored = self.ignored.read().unwrap_or_else(|e| e.into_inner());
        let refused = self.refused_apps();
        let refused = (!refused.is_empty()).then(|| {
            format!(
                "{} not started for want of open files (appvisord's limit is {}): {}",
                plural(refused.len(), "app"),
                self.fds().limit(),
                refused.join(", ")
            )
        });
        self.intents
            .notices()
            .into_iter()
            .chain(
                ignored
                    .iter()
                    .map(|i| format!("{} is ignored: {}", i.file, i.reason)),
            )
            .chain(refused)
            .collect()
    }

    /// Valid apps without a task: no room in the open-file limit.
    fn refused_apps(&self) -> Vec<String> {
        let apps = self.apps.read().unwrap_or_else(|e| e.into_inner());
        apps.iter()
            .filter(|(_, entry)| entry.handle.is_none() && entry.refused.is_some())
            .map(|(name, _)| name.clone())
            .collect()
    }

    fn fds(&self) -> MutexGuard<'_, fds::FdBudget> {
        self.fds.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A manual start works from any state: an app refused for want of
    /// open files gets its task now if there is room.
    fn start_refused(&self, name: &str) {
        let log_dir = self
            .config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .spec
            .log_dir
            .clone();
        let mut apps = self.apps.write().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = apps.get_mut(name) {
            if entry.handle.is_none() && entry.refused.is_some() {
                self.admit_and_start(name, entry, &log_dir);
            }
        }
    }

    /// Starts the task of `entry`'s valid app if the open-file budget has
    /// room for it, else records why not.
    fn admit_and_start(&self, name: &str, entry: &mut Entry, log_dir: &Path) {
        let Some(app) = entry.app.clone() else {
            return;
        };
        if let Err(refusal) = self.fds().admit(name, fds::app_cost(&app.spec)) {
            entry.refused = Some(format!("not started: {refusal}"));
            return;
        }
        entry.refused = None;
        entry.handle = Some(self.start_app(name, app, log_dir));
    }

    /// `appctl signal`.
    pub async fn signal(&self, name: &str, signal: &str) -> Result<AppStatus, ActError> {
        let signal =
            config::validate::parse_signal(signal).map_err(|_| ActError::UnknownSignal {
                signal: signal.to_owned(),
            })?;
        let AppChannels {
            commands, snapshot, ..
        } = self.channels(name)?;
        self.send_signal(&commands, &snapshot, signal).await
    }

    async fn send_signal(
        &self,
        commands: &supervise::Commands,
        snapshot: &tokio::sync::watch::Receiver<Snapshot>,
        signal: config::Signal,
    ) -> Result<AppStatus, ActError> {
        let name = snapshot.borrow().status.name.clone();
        let (reply, result) = oneshot::channel();
        commands
            .send(Command::Signal { signal, reply })
            .map_err(|_| gone(&name))?;
        result
            .await
            .map_err(|_| gone(&name))?
            .map_err(|why| ActError::Refused {
                app: name.clone(),
                action: Action::Signal,
                why,
            })?;
        Ok(snapshot.borrow().status.clone())
    }

    /// Re-reads `appvisor.toml`'s defaults and admin rules and `apps.d`, and
    /// applies the difference: new apps start, removed apps stop, changed
    /// apps restart, or adopt the new settings in place when no new
    /// process needs them (`config::change`), unchanged apps are not
    /// touched, and a file that does not validate leaves its app's last
    /// valid version running.
    pub async fn apply_config(
        &self,
        dry_run: bool,
        peer: Option<&Peer>,
    ) -> Result<ApplyReport, ApplyError> {
        let _guard = self.apply_lock.lock().await;
        let daemon_config =
            crate::judge::daemon_config(&self.options.config, self.options.config_explicit).await?;
        // An unreadable apps_dir must not look like "no apps": that would
        // stop every app.
        let scan = crate::judge::scan(&daemon_config).await;
        release_freed_memory();
        let crate::judge::Scan {
            candidates,
            ignored,
        } = scan?;
        let ignored = ignored
            .into_iter()
            .map(|err| IgnoredFile {
                file: err.file.display().to_string(),
                reason: match &err.hint {
                    Some(hint) => format!("{} ({hint})", err.message),
                    None => err.message.clone(),
                },
            })
            .collect();
        let mut report = ApplyReport {
            dry_run,
            ignored,
            ..ApplyReport::default()
        };
        let current: BTreeMap<String, Option<Arc<ResolvedApp>>> = self
            .apps
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(name, entry)| (name.clone(), entry.app.clone()))
            .collect();
        for (name, candidate) in &candidates {
            match (&candidate.app, current.get(name)) {
                (Ok(_), None) => report.added.push(name.clone()),
                (Ok(new), Some(Some(old))) => match change::resolved_change(old, new) {
                    None => report.unchanged.push(name.clone()),
                    Some(change) if change.restart => report.changed.push(name.clone()),
                    Some(_) => report.changed_in_place.push(name.clone()),
                },
                (Ok(_), Some(None)) => report.changed.push(name.clone()),
                (Err(errors), existing) => report.invalid.push(InvalidApp {
                    name: name.clone(),
                    file: candidate.file.display().to_string(),
                    errors: errors.iter().map(ToString::to_string).collect(),
                    kept_running: matches!(existing, Some(Some(_))),
                }),
            }
        }
        report.removed = current
            .keys()
            .filter(|n| !candidates.contains_key(*n))
            .cloned()
            .collect();
        if dry_run {
            return Ok(report);
        }
        self.save_pending_intent().await;
        let who = peer.map(|p| p.user.as_str()).unwrap_or("the daemon");
        tracing::info!(
            by = who,
            added = ?report.added,
            changed = ?report.changed,
            changed_in_place = ?report.changed_in_place,
            removed = ?report.removed,
            invalid = report.invalid.len(),
            "applying configuration"
        );
        for invalid in &report.invalid {
            tracing::warn!(app = %invalid.name, errors = %invalid.errors.join("; "), "app file does not validate");
        }
        for ignored in &report.ignored {
            tracing::warn!(file = %ignored.file, reason = %ignored.reason, "ignoring a file in apps.d");
        }
        report
            .ignored
            .clone_into(&mut self.ignored.write().unwrap_or_else(|e| e.into_inner()));
        let log_dir = daemon_config.spec.log_dir.clone();
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = daemon_config;

        let mut removed = Vec::new();
        {
            let mut apps = self.apps.write().unwrap_or_else(|e| e.into_inner());
            for name in &report.removed {
                if let Some(entry) = apps.remove(name) {
                    removed.push(entry);
                }
            }
        }
        let mut replies = Vec::new();
        for (name, candidate) in candidates {
            let mut apps = self.apps.write().unwrap_or_else(|e| e.into_inner());
            let entry = apps.entry(name.clone()).or_insert_with(|| Entry {
                file: candidate.file.clone(),
                app: None,
                error: None,
                handle: None,
                refused: None,
                since: unix_now(),
            });
            entry.file = candidate.file;
            match candidate.app {
                Err(errors) => entry.error = Some(errors.to_string()),
                Ok(app) => {
                    entry.error = None;
                    let change = match &entry.app {
                        // Unchanged and running: nothing to do. Unchanged
                        // but refused for want of open files: tried again.
                        Some(old) if **old == *app && entry.handle.is_some() => continue,
                        // What differs derives from the settings (the
                        // exposure checks): adopted, nothing else to do.
                        Some(old) => change::resolved_change(old, &app).unwrap_or(Change {
                            keys: Vec::new(),
                            restart: false,
                            start: false,
                        }),
                        None => Change {
                            keys: Vec::new(),
                            restart: true,
                            start: app.spec.autostart,
                        },
                    };
                    match &entry.handle {
                        Some(handle) => {
                            // The running version keeps what it holds when
                            // the new one needs more than there is.
                            if let Err(refusal) = self.fds().admit(&name, fds::app_cost(&app.spec))
                            {
                                entry.error = Some(format!("not applied: {refusal}"));
                                continue;
                            }
                            entry.app = Some(app.clone());
                            let (reply, done) = oneshot::channel();
                            let replace = Command::Replace { app, change, reply };
                            if handle.commands.send(replace).is_ok() {
                                replies.push(done);
                            }
                        }
                        None => {
                            entry.app = Some(app);
                            self.admit_and_start(&name, entry, &log_dir);
                            if entry.refused.is_some() {
                                report.not_started.push(name.clone());
                            }
                        }
                    }
                }
            }
        }
        if !report.not_started.is_empty() {
            tracing::error!(
                limit = self.fds().limit(),
                apps = ?report.not_started,
                "no room in the open-file limit: {} not started (raise LimitNOFILE and restart appvisord)",
                plural(report.not_started.len(), "app")
            );
        }
        for reply in replies {
            let _ = reply.await;
        }
        stop_all(removed.into_iter().filter_map(|e| e.handle), Cause::Config).await;
        for name in &report.removed {
            self.fds().release(name);
        }
        Ok(report)
    }

    /// Starts app `name`'s task. Log files that cannot be opened do not
    /// stop it: they are retried while the app runs, and show in its status.
    fn start_app(&self, name: &str, app: Arc<ResolvedApp>, log_dir: &Path) -> Handle {
        // The files are opened by the app's task, off the runtime, before
        // it spawns anything: at start-up that is a thousand directories
        // and files that must not hold up the registration of the others.
        let logs = AppLogs::unopened(log_dir, name, &app.spec.logs, app.gid, TAIL_LINES);
        let stopped_by = self.intents.get(name);
        let autostart = app.spec.autostart && stopped_by.is_none();
        supervise::start(app, logs, self.shared.clone(), autostart, stopped_by)
    }

    async fn shutdown(&self) {
        self.save_pending_intent().await;
        let handles: Vec<Handle> = {
            let mut apps = self.apps.write().unwrap_or_else(|e| e.into_inner());
            apps.values_mut().filter_map(|e| e.handle.take()).collect()
        };
        stop_all(handles.into_iter(), Cause::Shutdown).await;
        // Each app's task removed its cgroups as it ended; what is left
        // is the daemon's own.
        if let Some(root) = &self.shared.cgroups {
            if let Err(err) = root.remove() {
                tracing::warn!(error = %err, "removing the daemon's cgroup");
            }
        }
        if let Err(err) = self.shared.limits.remove() {
            tracing::warn!(error = %err, "removing the daemon's v1 limit cgroups");
        }
    }
}

impl crate::status::StatusSource for Daemon {
    fn apps(&self) -> Vec<crate::status::AppSample> {
        let apps = self.apps.read().unwrap_or_else(|e| e.into_inner());
        apps.iter()
            .map(|(name, entry)| crate::status::AppSample {
                status: entry_status(name, entry),
                readiness_failures: entry
                    .handle
                    .as_ref()
                    .map_or(0, |h| h.snapshot.borrow().readiness_failures),
                start_time: entry
                    .handle
                    .as_ref()
                    .and_then(|h| h.snapshot.borrow().start_time()),
                memory_limit: entry.app.as_ref().and_then(|a| a.spec.limits.memory),
                cgroup: self
                    .shared
                    .cgroups
                    .as_ref()
                    .map(|root| root.dir().join(name)),
                exposure: entry
                    .handle
                    .as_ref()
                    .map(|h| h.snapshot.borrow().exposure(&self.shared)),
            })
            .collect()
    }

    fn control_requests(&self) -> Vec<(crate::audit::RequestKey, u64)> {
        self.events().control_requests()
    }
}

impl ControlTarget for Daemon {
    fn events(&self) -> &Events {
        Daemon::events(self)
    }

    fn admin_rules(&self) -> AdminRules {
        Daemon::admin_rules(self)
    }

    fn access(&self, name: &str) -> Option<AccessSpec> {
        Daemon::access(self, name)
    }

    fn visible_apps(&self, peer: &Peer) -> Vec<String> {
        Daemon::visible_apps(self, peer)
    }

    fn statuses(&self, peer: &Peer) -> Vec<AppStatus> {
        Daemon::statuses(self, peer)
    }

    fn notices(&self, peer: &Peer) -> Vec<String> {
        Daemon::notices(self, peer)
    }

    fn status(&self, name: &str) -> Option<AppStatus> {
        Daemon::status(self, name)
    }

    fn security(&self, name: &str) -> Option<appvisor_protocol::AppSecurity> {
        Daemon::security(self, name)
    }

    fn logs(&self, name: &str) -> Option<Arc<AppLogs>> {
        Daemon::logs(self, name)
    }

    async fn act(
        &self,
        name: &str,
        action: Action,
        peer: &Peer,
        request: &ActionRequest,
    ) -> Result<ActionResult, ActError> {
        Daemon::act(self, name, action, peer, request).await
    }

    async fn signal(&self, name: &str, signal: &str) -> Result<AppStatus, ActError> {
        Daemon::signal(self, name, signal).await
    }

    async fn apply_config(
        &self,
        dry_run: bool,
        peer: Option<&Peer>,
    ) -> Result<ApplyReport, ApplyError> {
        Daemon::apply_config(self, dry_run, peer).await
    }

    fn daemon_status(&self) -> appvisor_protocol::DaemonStatus {
        Daemon::daemon_status(self)
    }

    async fn request_reexec(&self, by: &str, id: u64) -> Result<(), ReexecError> {
        Daemon::request_reexec(self, by, id).await
    }
}

/// Stops apps in parallel and waits until each task has ended.
async fn stop_all(handles: impl Iterator<Item = Handle>, cause: Cause) {
    let tasks: Vec<_> = handles
        .map(|handle| {
            let _ = handle.commands.send(Command::Shutdown {
                cause: cause.clone(),
            });
            handle.task
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
}

/// "1 app", "3 apps".
fn plural(n: usize, word: &str) -> String {
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
}

fn gone(name: &str) -> ActError {
    ActError::Gone {
        app: name.to_owned(),
    }
}

/// How long a waiting action may wait: the caller's timeout, capped.
fn wait_timeout(request: &ActionRequest) -> Duration {
    request
        .timeout_ms
        .map(Duration::from_millis)
        .unwrap_or(DEFAULT_WAIT)
        .min(MAX_WAIT)
}

/// The answer to an action: the app's status now and, unless it went as
/// asked, its last log lines.
fn action_result(
    name: &str,
    action: Action,
    outcome: Outcome,
    snapshot: &tokio::sync::watch::Receiver<Snapshot>,
    logs: &AppLogs,
    mark: LogMark,
) -> ActionResult {
    let log_tail = if outcome == Outcome::Done {
        Vec::new()
    } else {
        failure_log_tail(logs, mark)
    };
    ActionResult {
        app: name.to_owned(),
        action,
        outcome,
        status: snapshot.borrow().status_now(),
        log_tail,
        intent_error: None,
    }
}

/// The last lines the app wrote since `mark`, both streams in the order
/// they came.
fn failure_log_tail(logs: &AppLogs, mark: LogMark) -> Vec<String> {
    logs.tail_since(Selection::Both, mark, FAILURE_LOG_LINES)
}

/// Whether `peer` may see the app of `entry` (an app known only as an
/// invalid file has no `[access]`, so only admins see it).
fn may_view(peer: &Peer, rules: &AdminRules, entry: &Entry) -> bool {
    static NO_ACCESS: std::sync::LazyLock<AccessSpec> =
        std::sync::LazyLock::new(AccessSpec::default);
    let access = entry.app.as_ref().map_or(&*NO_ACCESS, |a| &a.spec.access);
    acl::decide(peer, rules, Operation::View, Some(access)) == acl::Decision::Allow
}

fn entry_status(name: &str, entry: &Entry) -> AppStatus {
    match &entry.handle {
        Some(handle) => {
            let mut status = handle.snapshot.borrow().status_now();
            status.config_error = entry.error.clone();
            let logs = handle.logs.health();
            status.log_error = logs.error;
            status.log_dropped_bytes = logs.dropped_bytes;
            status
        }
        None if entry.refused.is_some() => {
            let app = entry.app.as_ref().map(|app| (&app.spec, &app.user_name));
            AppStatus {
                since: entry.since,
                description: app.map(|(s, _)| s.description.clone()).unwrap_or_default(),
                user: app.map(|(_, u)| (*u).clone()).unwrap_or_default(),
                directory: app
                    .map(|(s, _)| s.directory.display().to_string())
                    .unwrap_or_default(),
                config_error: entry.error.clone(),
                // A manual start tries again, as for any fatal app.
                ..supervise::bare_status(
                    name,
                    State::Fatal,
                    entry.refused.clone().unwrap_or_default(),
                )
            }
        }
        None => AppStatus {
            since: entry.since,
            // The reason says it all: there is no last valid version.
            ..supervise::bare_status(
                name,
                State::Invalid,
                entry
                    .error
                    .clone()
                    .unwrap_or_else(|| "invalid".to_owned())
                    .replace('\n', "; "),
            )
        },
    }
}
