//! Starting an app's process: the daemon's side of a spawn.
//!
//! The daemon is multi-threaded, so it never runs Rust code between fork and
//! exec beyond std's own fd plumbing. Instead it execs a single-threaded
//! helper, the daemon binary itself in a hidden mode
//! (`appvisord __exec-app NAME`, see [`child`]), hands it a [`SpawnPlan`],
//! and the helper applies the plan to itself and execs the app in place.
//!
//! This module owns that hand-over: the fd layout, writing the plan,
//! launching the helper and reading its report. It never waits for the
//! child: the daemon's SIGCHLD reaper owns every exit status.
//!
//! The plan goes through a memfd rather than a pipe: a memfd is written in
//! full before the fork, never blocks the calling (tokio) thread whatever
//! the plan's size, and needs no writer thread; the helper reads it to EOF
//! like a pipe.

pub mod child;
mod launch;
pub mod plan;
pub mod prepare;
pub mod report;

use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::fd::{BorrowedFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use command_fds::{CommandFdExt, FdMapping};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::memfd::{memfd_create, MFdFlags};
use tokio::io::AsyncReadExt;

use report::parse_report;

pub use plan::{PlanInputs, PlanUser, SpawnPlan};
pub use prepare::{Followup, Preparation, PrepareError, Prepared, Preparer};
pub use report::{Applied, SpawnFailure, SpawnStep};

/// `argv[1]` that puts `appvisord` in exec-helper mode.
pub const HELPER_ARG: &str = "__exec-app";

/// The helper's fd layout (0, 1, 2 are /dev/null and the log pipes).
pub(crate) const PLAN_FD: RawFd = 3;
pub(crate) const REPORT_FD: RawFd = 4;
pub(crate) const FIRST_LISTEN_FD: RawFd = 5;

/// The running daemon's own binary. Executing this path, rather than the
/// file it points to, runs the very image the daemon runs even after a
/// package upgrade replaced or removed the file, so the helper always
/// understands the daemon's plan format.
const SELF_EXE: &str = "/proc/self/exe";

/// A report is one short JSON line; anything longer is not from the helper.
const MAX_REPORT: u64 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("cannot find the exec helper {path}")]
    HelperPath {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot encode the spawn plan of {app}")]
    EncodePlan {
        app: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot write the spawn plan of {app} to a memfd")]
    WritePlan {
        app: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot create the report pipe for {app}")]
    ReportPipe {
        app: String,
        #[source]
        source: io::Error,
    },
    #[error("{app} plans {planned} listen sockets but {given} were passed")]
    ListenFdCount {
        app: String,
        planned: usize,
        given: usize,
    },
    #[error("cannot duplicate listen socket {index} of {app}")]
    ListenFd {
        app: String,
        index: usize,
        #[source]
        source: io::Error,
    },
    #[error("cannot start the exec helper {helper} for {app}")]
    Launch {
        app: String,
        helper: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The path the daemon execs as its helper: `/proc/self/exe`, checked once.
///
/// Call it at start-up so a missing /proc fails there rather than at the
/// first spawn.
pub fn exec_helper_path() -> Result<PathBuf, SpawnError> {
    static CHECKED: OnceLock<PathBuf> = OnceLock::new();
    if let Some(path) = CHECKED.get() {
        return Ok(path.clone());
    }
    let binary = std::fs::read_link(SELF_EXE).map_err(|source| SpawnError::HelperPath {
        path: SELF_EXE.into(),
        source,
    })?;
    tracing::debug!(binary = %binary.display(), "exec helper is the running daemon binary");
    Ok(CHECKED.get_or_init(|| PathBuf::from(SELF_EXE)).clone())
}

/// Reserves the low fds each helper launch passes its fds through, so the
/// launch need not copy the daemon's whole file table ([`launch`]). The
/// daemon calls it at start-up, before it opens its apps' fds; a launch
/// reserves them itself otherwise. False where the kernel cannot unshare
/// a file table with close_range (before Linux 5.9): launches then copy it.
pub fn reserve_launch_slots() -> bool {
    launch::reserve_slots()
}

/// A started helper: its pid (the app's pid once it execs) and the reader
/// that tells whether the exec happened.
#[derive(Debug)]
pub struct Spawned {
    pub pid: u32,
    pub report: ReportReader,
}

/// The read end of the helper's close-on-exec report pipe.
#[derive(Debug)]
pub struct ReportReader {
    fd: OwnedFd,
}

impl ReportReader {
    /// Waits for the helper to exec (`Ok`) or to report why it could not.
    /// Must run inside a tokio runtime.
    pub async fn outcome(self) -> Result<(), SpawnFailure> {
        self.applied().await.map(drop)
    }

    /// [`outcome`](Self::outcome) with what the helper put in force.
    pub async fn applied(self) -> Result<Applied, SpawnFailure> {
        let receiver =
            tokio::net::unix::pipe::Receiver::from_owned_fd(self.fd).map_err(report_error)?;
        let mut bytes = Vec::new();
        receiver
            .take(MAX_REPORT)
            .read_to_end(&mut bytes)
            .await
            .map_err(report_error)?;
        #[cfg(feature = "test-report-hold")]
        hold_report().await;
        parse_report(&bytes)
    }

    /// [`outcome`](Self::outcome) for callers outside a runtime, and tests.
    pub fn outcome_blocking(self) -> Result<(), SpawnFailure> {
        self.applied_blocking().map(drop)
    }

    /// [`applied`](Self::applied) for callers outside a runtime, and tests.
    pub fn applied_blocking(self) -> Result<Applied, SpawnFailure> {
        let mut bytes = Vec::new();
        File::from(self.fd)
            .take(MAX_REPORT)
            .read_to_end(&mut bytes)
            .map_err(report_error)?;
        parse_report(&bytes)
    }
}

/// `APPVISOR_TEST_HOLD_REPORT_UNTIL`: a test build holds each exec helper's
/// report, once read, until the file it names exists, so a test can make
/// the app's first messages (READY=1) arrive before the report. Only a
/// build with the `test-report-hold` feature (turned on by the integration
/// tests' dev-dependency, by no release build) reads it.
pub const HOLD_REPORT_VAR: &str = "APPVISOR_TEST_HOLD_REPORT_UNTIL";

/// How long a report is held at most: a test that never releases it fails
/// on its own deadline, not by hanging the daemon.
#[cfg(feature = "test-report-hold")]
const MAX_HOLD: std::time::Duration = std::time::Duration::from_secs(60);

/// Waits until [`HOLD_REPORT_VAR`]'s file exists, or [`MAX_HOLD`].
#[cfg(feature = "test-report-hold")]
async fn hold_report() {
    let Some(release) = std::env::var_os(HOLD_REPORT_VAR) else {
        return;
    };
    tracing::warn!(release = ?release, "holding the exec helper's report: a test build");
    let deadline = tokio::time::Instant::now() + MAX_HOLD;
    while !tokio::fs::try_exists(&release).await.unwrap_or(false) {
        if tokio::time::Instant::now() >= deadline {
            tracing::error!("the held report was never released; going on");
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    tracing::info!("the exec helper's report released");
}

fn report_error(e: io::Error) -> SpawnFailure {
    SpawnFailure::new(
        SpawnStep::Report,
        e.raw_os_error().map_or(Errno::EIO, Errno::from_raw),
        "reading the exec helper's report",
    )
}

/// Starts `plan` through the running daemon binary ([`exec_helper_path`]).
pub fn spawn(
    plan: &SpawnPlan,
    stdout: OwnedFd,
    stderr: OwnedFd,
    listen_fds: &[BorrowedFd<'_>],
) -> Result<Spawned, SpawnError> {
    spawn_with_helper(&exec_helper_path()?, plan, stdout, stderr, listen_fds)
}

/// Like [`spawn`], but the helper starts inside the v2 cgroup whose
/// directory `cgroup_dir` is open (`clone3` with `CLONE_INTO_CGROUP`)
/// instead of moving itself there, which costs the kernel an RCU grace
/// period per spawn (see [`launch`]). Falls back to [`spawn`], the helper
/// joining the plan's cgroup itself, where the kernel lacks clone3.
pub fn spawn_into_cgroup(
    plan: &SpawnPlan,
    stdout: OwnedFd,
    stderr: OwnedFd,
    listen_fds: &[BorrowedFd<'_>],
    cgroup_dir: BorrowedFd<'_>,
) -> Result<Spawned, SpawnError> {
    spawn_with_helper_into(
        &exec_helper_path()?,
        plan,
        stdout,
        stderr,
        listen_fds,
        cgroup_dir,
    )
}

/// [`spawn_into_cgroup`] through `helper`, for tests.
pub fn spawn_with_helper_into(
    helper: &Path,
    plan: &SpawnPlan,
    stdout: OwnedFd,
    stderr: OwnedFd,
    listen_fds: &[BorrowedFd<'_>],
    cgroup_dir: BorrowedFd<'_>,
) -> Result<Spawned, SpawnError> {
    use std::os::fd::AsFd;
    use std::os::unix::ffi::OsStrExt;

    let app = || plan.app.clone();
    if listen_fds.len() != plan.listen_fds() {
        return Err(SpawnError::ListenFdCount {
            app: app(),
            planned: plan.listen_fds(),
            given: listen_fds.len(),
        });
    }
    // Already in its cgroup: the helper must not write cgroup.procs, which
    // would take the very lock this path avoids.
    let inside = SpawnPlan {
        cgroup_procs: None,
        ..plan.clone()
    };
    let plan_fd = write_plan(&inside)?;
    let (report_read, report_write) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| SpawnError::ReportPipe {
            app: app(),
            source: e.into(),
        })?;
    let launch_error = |source: io::Error| SpawnError::Launch {
        app: app(),
        helper: helper.to_owned(),
        source,
    };
    let devnull = File::open("/dev/null").map_err(launch_error)?;
    let mut fds = vec![
        (devnull.as_fd(), 0),
        (stdout.as_fd(), 1),
        (stderr.as_fd(), 2),
        (plan_fd.as_fd(), PLAN_FD),
        (report_write.as_fd(), REPORT_FD),
    ];
    for (index, fd) in listen_fds.iter().enumerate() {
        fds.push((*fd, FIRST_LISTEN_FD + index as RawFd));
    }
    let c_string = |bytes: &[u8]| {
        std::ffi::CString::new(bytes)
            .map_err(|e| launch_error(io::Error::new(io::ErrorKind::InvalidInput, e)))
    };
    let program = c_string(helper.as_os_str().as_bytes())?;
    let argv = vec![
        c_string(b"appvisord")?,
        c_string(HELPER_ARG.as_bytes())?,
        c_string(plan.app.as_bytes())?,
    ];
    let launch = launch::Launch::new(program, argv, &fds, REPORT_FD).map_err(launch_error)?;
    match launch.spawn_into(cgroup_dir) {
        Ok(pid) => {
            tracing::debug!(app = %plan.app, pid, "exec helper started in its cgroup");
            // Our ends of the child's fds close when this returns; the report
            // pipe reaches EOF once the helper execs or exits.
            Ok(Spawned {
                pid,
                report: ReportReader { fd: report_read },
            })
        }
        Err(err)
            if matches!(
                err.raw_os_error(),
                Some(libc::ENOSYS | libc::E2BIG | libc::EINVAL)
            ) =>
        {
            tracing::debug!(error = %err, "clone3 into a cgroup is unavailable; the helper joins its cgroup itself");
            drop(fds);
            spawn_with_helper(helper, plan, stdout, stderr, listen_fds)
        }
        Err(err) => Err(launch_error(err)),
    }
}

/// Starts `plan` through `helper`, an `appvisord` binary; tests pass the
/// built binary since the test executable is not one.
///
/// Returns once the helper is running, without waiting for it to exec:
/// await [`ReportReader::outcome`] for that. The child is never waited for
/// here; whoever reaps the daemon's children gets its exit status.
pub fn spawn_with_helper(
    helper: &Path,
    plan: &SpawnPlan,
    stdout: OwnedFd,
    stderr: OwnedFd,
    listen_fds: &[BorrowedFd<'_>],
) -> Result<Spawned, SpawnError> {
    let app = || plan.app.clone();
    if listen_fds.len() != plan.listen_fds() {
        return Err(SpawnError::ListenFdCount {
            app: app(),
            planned: plan.listen_fds(),
            given: listen_fds.len(),
        });
    }

    let plan_fd = write_plan(plan)?;
    let (report_read, report_write) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| SpawnError::ReportPipe {
            app: app(),
            source: e.into(),
        })?;

    let mut mappings = vec![
        FdMapping {
            parent_fd: plan_fd,
            child_fd: PLAN_FD,
        },
        FdMapping {
            parent_fd: report_write,
            child_fd: REPORT_FD,
        },
    ];
    for (index, fd) in listen_fds.iter().enumerate() {
        // A close-on-exec copy the Command owns and closes when dropped.
        let parent_fd = fd
            .try_clone_to_owned()
            .map_err(|source| SpawnError::ListenFd {
                app: app(),
                index,
                source,
            })?;
        mappings.push(FdMapping {
            parent_fd,
            child_fd: FIRST_LISTEN_FD + index as RawFd,
        });
    }

    let mut command = Command::new(helper);
    command
        .arg0("appvisord")
        .arg(HELPER_ARG)
        .arg(&plan.app)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(stderr))
        .fd_mappings(mappings)
        .expect("the fd layout maps each child fd once");

    let child = command.spawn().map_err(|source| SpawnError::Launch {
        app: app(),
        helper: helper.to_owned(),
        source,
    })?;
    let pid = child.id();
    // Dropping a Child neither waits nor kills: the daemon's reaper owns the
    // exit status. Dropping the Command closes our copies of the report
    // pipe's write end and of the mapped fds; without that the report pipe
    // would never reach EOF.
    drop(child);
    drop(command);
    tracing::debug!(app = %plan.app, pid, "exec helper started");

    Ok(Spawned {
        pid,
        report: ReportReader { fd: report_read },
    })
}

/// The plan as JSON in a close-on-exec memfd, rewound for the helper.
fn write_plan(plan: &SpawnPlan) -> Result<OwnedFd, SpawnError> {
    let json = serde_json::to_vec(plan).map_err(|source| SpawnError::EncodePlan {
        app: plan.app.clone(),
        source,
    })?;
    let write_err = |source: io::Error| SpawnError::WritePlan {
        app: plan.app.clone(),
        source,
    };
    let fd =
        memfd_create(c"appvisor-plan", MFdFlags::MFD_CLOEXEC).map_err(|e| write_err(e.into()))?;
    let mut file = File::from(fd);
    file.write_all(&json).map_err(write_err)?;
    file.rewind().map_err(write_err)?;
    Ok(file.into())
}
