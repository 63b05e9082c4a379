//! The one step of a spawn that reads the file system: what an app's owner
//! controls (the venv's `pyvenv.cfg`, the release `directory` resolves to)
//! and where the host's `/etc` links lead.
//!
//! Those reads can block (a FIFO, a hung NFS or FUSE mount) and must never
//! do so on the async runtime, where they would stall every app and the
//! control socket. [`Preparer::prepare`] runs them on the blocking pool with
//! a deadline; past it, the spawn fails with a reason and nothing else
//! waits. Each app has one `Preparer`, which lets at most one such job run
//! at a time, so a file system that never answers holds one thread per app
//! rather than one per restart.
//!
//! What is learnt comes back as [`Prepared`], the facts the spawn plan (and
//! `appctl security`) build on. The same job binds the app's listen
//! sockets when that works on paths (a [`Rebind`]: a Unix socket's file),
//! and then the spawn's own blocking work (a [`Followup`]: the instance's
//! cgroup, its limits), so that a spawn takes one job on the blocking pool,
//! not one per step.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::config::AppSpec;
use crate::files::{self, FileError};
use crate::listen::{HeldSockets, ListenError, Rebind};
use crate::sandbox::rules::app_venv;
use crate::sandbox::venv::{parse_pyvenv_home, PythonHome, VenvFacts, PYVENV_CFG_MAX};

/// How long a spawn's file reads may take. They read one small file and
/// resolve one path: anything near this is a file system that hangs.
pub const PREPARE_TIMEOUT: Duration = Duration::from_secs(5);

/// What a spawn learnt from the file system before its plan was built.
/// Carried across a hand-off (`handoff::state::AppRecord::prepared`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Prepared {
    /// The venv of `command[0]` and the interpreter home it may grant.
    pub venv: VenvFacts,
    /// `directory` with every link resolved (the release a `current` link
    /// points at); `None` when it does not resolve.
    pub release: Option<PathBuf>,
    /// The directories `/etc/resolv.conf` and the like link into
    /// ([`crate::sandbox::linked_system_dirs`]).
    pub linked_dirs: Vec<PathBuf>,
}

/// Why a spawn could not be prepared; shown as "spawn failed at …".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrepareError {
    #[error("pyvenv.cfg: {0}")]
    PyvenvCfg(FileError),
    #[error("reading the venv and directory: no answer within {0:?} (a hung file system?)")]
    Timeout(Duration),
    #[error(
        "reading the venv and directory: an earlier start's reads are still blocked (a hung file system?)"
    )]
    StillBlocked,
    #[error("reading the venv and directory: {0}")]
    Failed(String),
}

/// Blocking work a spawn adds to its preparation's job, run there once the
/// reads succeeded (and the rebind ran): file system work that needs no
/// deadline of its own, as no path of it is one an app's owner controls.
pub trait Followup: Send + 'static {
    type Output: Send + 'static;
    /// Does the work, on the blocking pool.
    fn run(self, prepared: &Prepared) -> Self::Output;
    /// Undoes what [`Self::run`] made when nobody will take it (the job
    /// missed its deadline); on the blocking pool.
    fn abandon(output: Self::Output);
}

/// No work beyond the reads.
impl Followup for () {
    type Output = ();
    fn run(self, _: &Prepared) {}
    fn abandon((): ()) {}
}

/// What a spawn's preparation came to.
#[derive(Debug)]
pub struct Preparation<T = ()> {
    pub prepared: Result<Prepared, PrepareError>,
    /// With a [`Rebind`]: the listen sockets it bound, or those it was
    /// given, untouched, when it did not run (the reads failed, or the job
    /// could not start); `None` when the job missed its deadline (they
    /// close when it ends). `None` without a rebind.
    pub listen: Option<Result<HeldSockets, ListenError>>,
    /// What the [`Followup`] made; `None` when it did not run (the reads
    /// failed, or the job could not start or missed its deadline).
    pub followup: Option<T>,
}

/// Where a preparation's job stands, between it and its waiter: whoever
/// moves it from [`RUNNING`] decides whether the job's work is taken.
const RUNNING: u8 = 0;
/// The job is done and its waiter takes what it made.
const DELIVERED: u8 = 1;
/// The waiter gave up at the deadline: the job undoes its follow-up.
const ABANDONED: u8 = 2;

/// One app's spawn preparations; at most one runs at a time.
#[derive(Debug, Default)]
pub struct Preparer {
    /// Set while a blocking job runs, even one whose deadline has passed.
    busy: Arc<AtomicBool>,
}

impl Preparer {
    /// Reads what a spawn of `spec` needs, then runs `rebind` (the listen
    /// sockets' file system work) and, if the reads succeeded, `followup`,
    /// all in one job off the runtime, within [`PREPARE_TIMEOUT`]. The
    /// blocking job starts now, so dropping the future unpolled leaves
    /// nothing claimed; call it on the runtime.
    pub fn prepare<F: Followup>(
        &self,
        spec: &AppSpec,
        rebind: Option<Rebind>,
        followup: F,
    ) -> impl Future<Output = Preparation<F::Output>> + Send + 'static {
        let claimed = self
            .busy
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        let state = Arc::new(AtomicU8::new(RUNNING));
        let (job, unrun) = if claimed {
            let venv = app_venv(spec).map(ToOwned::to_owned);
            let directory = spec.directory.clone();
            let busy = self.busy.clone();
            let state = state.clone();
            let job = tokio::task::spawn_blocking(move || {
                let _done = Done(busy);
                let prepared = prepare_blocking(venv.as_deref(), &directory);
                let listen = rebind.map(|rebind| match &prepared {
                    Ok(_) => Some(rebind.run()),
                    Err(_) => rebind.give_back().map(Ok),
                });
                // Nothing to make for a waiter that is gone.
                let made = match &prepared {
                    Ok(prepared) if state.load(Ordering::Acquire) == RUNNING => {
                        Some(followup.run(prepared))
                    }
                    _ => None,
                };
                let made = match state.compare_exchange(
                    RUNNING,
                    DELIVERED,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => made,
                    Err(_) => {
                        if let Some(made) = made {
                            F::abandon(made);
                        }
                        None
                    }
                };
                Preparation {
                    prepared,
                    listen: listen.flatten(),
                    followup: made,
                }
            });
            (Some(job), None)
        } else {
            (None, rebind)
        };
        // Dropped unfinished, even unpolled (the app's task ended
        // meanwhile), the future leaves the job to undo its follow-up too.
        let waiter = Waiter(state);
        async move {
            let Some(mut job) = job else {
                return Preparation {
                    prepared: Err(PrepareError::StillBlocked),
                    listen: unrun.and_then(Rebind::give_back).map(Ok),
                    followup: None,
                };
            };
            let failed = |error| Preparation {
                prepared: Err(error),
                listen: None,
                followup: None,
            };
            let joined = match tokio::time::timeout(PREPARE_TIMEOUT, &mut job).await {
                Ok(joined) => joined,
                Err(_) => {
                    if waiter.abandon() {
                        return failed(PrepareError::Timeout(PREPARE_TIMEOUT));
                    }
                    // Done at the deadline: what it made is taken, as it
                    // would have been a moment earlier.
                    job.await
                }
            };
            match joined {
                Ok(preparation) => preparation,
                Err(join) => failed(PrepareError::Failed(join.to_string())),
            }
        }
    }
}

/// The waiting end of a preparation's job: it gives up what the job makes
/// when it gives up waiting, or is dropped before the job is done.
struct Waiter(Arc<AtomicU8>);

impl Waiter {
    /// Gives up, unless the job is done: then what it made is taken.
    fn abandon(&self) -> bool {
        self.0
            .compare_exchange(RUNNING, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        self.abandon();
    }
}

/// Clears a `Preparer`'s busy flag when its job ends, panic included.
struct Done(Arc<AtomicBool>);

impl Drop for Done {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// The blocking reads of [`Preparer::prepare`], for the app's venv
/// ([`app_venv`]) and `directory`.
pub fn prepare_blocking(venv: Option<&Path>, directory: &Path) -> Result<Prepared, PrepareError> {
    let venv = venv_facts(venv).map_err(PrepareError::PyvenvCfg)?;
    let release = std::fs::canonicalize(directory).ok();
    Ok(Prepared {
        venv,
        release,
        linked_dirs: crate::sandbox::linked_system_dirs(),
    })
}

/// What the `pyvenv.cfg` of `venv` may grant. CPython reads
/// `VENV/pyvenv.cfg`, or `VENV/bin/pyvenv.cfg` when that is missing;
/// either is believed only when root owns it and everything above it. One
/// that someone else could have written is not even opened.
fn venv_facts(venv: Option<&Path>) -> Result<VenvFacts, FileError> {
    let Some(venv) = venv else {
        return Ok(VenvFacts::none());
    };
    let candidates = [venv.join("pyvenv.cfg"), venv.join("bin/pyvenv.cfg")];
    let mut home = PythonHome::Absent;
    for cfg in candidates {
        match files::read_root_owned(&cfg, PYVENV_CFG_MAX) {
            Ok(bytes) => {
                if let Some(found) = parse_pyvenv_home(&bytes) {
                    home = PythonHome::Trusted { cfg, home: found };
                }
                break;
            }
            Err(error) if error.is_not_found() => continue,
            Err(error) if error.is_untrusted() => {
                home = PythonHome::Ignored {
                    cfg,
                    why: error.to_string(),
                };
                break;
            }
            Err(error) => return Err(error),
        }
    }
    Ok(VenvFacts {
        venv: Some(venv.to_owned()),
        home,
    })
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    #[test]
    fn outside_a_venv_nothing_is_read() {
        let prepared = prepare_blocking(None, Path::new("/")).unwrap();
        assert_eq!(prepared.venv, VenvFacts::none());
        assert_eq!(prepared.release, Some(PathBuf::from("/")));
    }

    #[test]
    fn a_venv_others_can_write_widens_nothing() {
        // Under /tmp: world-writable above, so never believed, whatever
        // pyvenv.cfg says.
        let dir = tempfile::tempdir().unwrap();
        let venv = dir.path().join("venv");
        fs::create_dir_all(venv.join("bin")).unwrap();
        fs::write(
            venv.join("pyvenv.cfg"),
            "HOME = /usr/bin\nhome = /proc/self\n",
        )
        .unwrap();
        let prepared = prepare_blocking(Some(&venv), dir.path()).unwrap();
        assert_eq!(prepared.venv.venv.as_deref(), Some(venv.as_path()));
        assert_eq!(prepared.venv.home.home(), None);
        assert!(
            matches!(&prepared.venv.home, PythonHome::Ignored { cfg, why }
                if *cfg == venv.join("pyvenv.cfg") && why.contains("writable by others")),
            "{:?}",
            prepared.venv.home
        );
    }

    #[test]
    fn a_missing_pyvenv_cfg_is_no_venv_home() {
        let venv = Path::new("/nonexistent-appvisor-venv");
        let prepared =
            prepare_blocking(Some(venv), Path::new("/nonexistent-appvisor-dir")).unwrap();
        assert_eq!(prepared.venv.home, PythonHome::Absent);
        assert_eq!(prepared.release, None);
    }

    /// A venv root owns, in a directory nobody else may write (under
    /// /run, root's 0755).
    fn root_venv() -> Option<(tempfile::TempDir, PathBuf)> {
        if !nix::unistd::geteuid().is_root() {
            appvisor_tests::skip("needs root (a venv root owns)");
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("avt-prepare-")
            .tempdir_in("/run")
            .unwrap();
        let venv = dir.path().join("venv");
        fs::create_dir_all(venv.join("bin")).unwrap();
        Some((dir, venv))
    }

    #[test]
    fn a_root_owned_pyvenv_cfg_is_read_as_cpython_reads_it() {
        let Some((_dir, venv)) = root_venv() else {
            return;
        };
        let cfg = venv.join("pyvenv.cfg");
        fs::write(&cfg, "HOME = /opt/py/bin\nhome = /proc/self\n").unwrap();
        let prepared = prepare_blocking(Some(&venv), Path::new("/")).unwrap();
        assert_eq!(
            prepared.venv.home,
            PythonHome::Trusted {
                cfg,
                home: "/opt/py/bin".into()
            }
        );
    }

    #[test]
    fn a_pyvenv_cfg_beside_the_interpreter_counts_when_the_venv_has_none() {
        let Some((_dir, venv)) = root_venv() else {
            return;
        };
        let cfg = venv.join("bin/pyvenv.cfg");
        fs::write(&cfg, "home = /opt/py/bin\n").unwrap();
        let prepared = prepare_blocking(Some(&venv), Path::new("/")).unwrap();
        assert_eq!(prepared.venv.home.home(), Some(Path::new("/opt/py/bin")));
    }

    #[test]
    fn a_fifo_or_huge_pyvenv_cfg_fails_the_spawn_with_a_reason() {
        let Some((_dir, venv)) = root_venv() else {
            return;
        };
        let cfg = venv.join("pyvenv.cfg");
        nix::unistd::mkfifo(&cfg, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        let error = prepare_blocking(Some(&venv), Path::new("/")).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "pyvenv.cfg: {} is a FIFO, not a regular file",
                cfg.display()
            )
        );
        fs::remove_file(&cfg).unwrap();
        fs::File::create(&cfg).unwrap().set_len(2 << 30).unwrap();
        let error = prepare_blocking(Some(&venv), Path::new("/")).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "pyvenv.cfg: {} is 2.0 GiB, more than the 32.0 KiB allowed",
                cfg.display()
            )
        );
    }

    /// A follow-up that says when it runs and takes its time, and whether
    /// what it made was undone.
    struct Slow {
        started: std::sync::mpsc::Sender<()>,
        undone: Arc<AtomicBool>,
    }

    impl Slow {
        /// A follow-up, what says it started, and whether it was undone.
        fn new() -> (Slow, std::sync::mpsc::Receiver<()>, Arc<AtomicBool>) {
            let (started, running) = std::sync::mpsc::channel();
            let undone = Arc::new(AtomicBool::new(false));
            let slow = Slow {
                started,
                undone: undone.clone(),
            };
            (slow, running, undone)
        }
    }

    impl Followup for Slow {
        type Output = Arc<AtomicBool>;
        fn run(self, _: &Prepared) -> Arc<AtomicBool> {
            let _ = self.started.send(());
            std::thread::sleep(Duration::from_millis(50));
            self.undone
        }
        fn abandon(undone: Arc<AtomicBool>) {
            undone.store(true, Ordering::Release);
        }
    }

    #[tokio::test]
    async fn a_preparation_dropped_unfinished_undoes_its_follow_up() {
        let preparer = Preparer::default();
        let spec = crate::config::test_spec::app_spec("shop", &["/bin/sleep"]);
        let (slow, running, undone) = Slow::new();
        let preparing = preparer.prepare(&spec, None, slow);
        // The job runs on a thread of its own meanwhile.
        running.recv_timeout(Duration::from_secs(10)).unwrap();
        drop(preparing);
        while preparer.busy.load(Ordering::Acquire) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(undone.load(Ordering::Acquire));
    }

    #[tokio::test]
    async fn a_follow_up_waited_for_is_taken() {
        let preparer = Preparer::default();
        let spec = crate::config::test_spec::app_spec("shop", &["/bin/sleep"]);
        let (slow, _running, undone) = Slow::new();
        let preparation = preparer.prepare(&spec, None, slow).await;
        assert!(preparation.prepared.is_ok());
        assert!(preparation.followup.is_some());
        assert!(!undone.load(Ordering::Acquire));
    }

    #[tokio::test]
    async fn one_blocking_job_per_app_at_a_time() {
        let preparer = Preparer::default();
        let spec = crate::config::test_spec::app_spec("shop", &["/bin/sleep"]);
        preparer.busy.store(true, Ordering::Release);
        assert_eq!(
            preparer.prepare(&spec, None, ()).await.prepared,
            Err(PrepareError::StillBlocked)
        );
        preparer.busy.store(false, Ordering::Release);
        assert!(preparer.prepare(&spec, None, ()).await.prepared.is_ok());
        assert!(!preparer.busy.load(Ordering::Acquire));
    }
}
