//! The daemon's one reaper: `waitpid(-1)` on every SIGCHLD.
//!
//! appvisord is a child subreaper (PR_SET_CHILD_SUBREAPER), so the
//! daemonized grandchildren of its apps are re-parented to it rather than to
//! PID 1 (which, on some hosts, never reaps them). It therefore reaps every
//! child itself and hands each app's main-process status to the task that
//! spawned it. Spawning and registering happen under one lock, so an exit
//! that arrives before registration cannot be lost, and the reaper never
//! steals the child of a spawn still in progress.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;

use crate::app::ExitStatus;
use crate::locks;

#[derive(Debug, Default)]
pub struct Reaper {
    waiting: Mutex<HashMap<i32, oneshot::Sender<ExitStatus>>>,
    /// Set for a hand-off: exits stay unreaped (zombies keep their pid)
    /// for the process that takes over.
    paused: AtomicBool,
}

/// The exit of each adopted pid, as [`Reaper::start_adopting`] registered it.
pub type Adopted = HashMap<u32, oneshot::Receiver<ExitStatus>>;

impl Reaper {
    /// Makes the daemon a subreaper and starts reaping on the current
    /// runtime.
    pub fn start() -> std::io::Result<Arc<Reaper>> {
        Reaper::start_adopting(&[]).map(|(reaper, _)| reaper)
    }

    /// Like [`start`](Self::start), with `pids` (children an earlier image
    /// of this process spawned, handed over by exec) registered before the
    /// first reap, so none of their exits is missed.
    pub fn start_adopting(pids: &[u32]) -> std::io::Result<(Arc<Reaper>, Adopted)> {
        nix::sys::prctl::set_child_subreaper(true).map_err(std::io::Error::from)?;
        let mut sigchld = signal(SignalKind::child())?;
        let reaper = Arc::new(Reaper::default());
        let adopted = {
            let mut waiting = locks::lock(&reaper.waiting);
            pids.iter()
                .map(|pid| {
                    let (tx, rx) = oneshot::channel();
                    waiting.insert(*pid as i32, tx);
                    (*pid, rx)
                })
                .collect()
        };
        let task_reaper = reaper.clone();
        tokio::spawn(async move {
            loop {
                // Signals coalesce: reap everything that is ready each time.
                task_reaper.reap_ready();
                if sigchld.recv().await.is_none() {
                    return;
                }
            }
        });
        Ok((reaper, adopted))
    }

    /// Stops reaping until [`resume`](Self::resume): for a hand-off, whose
    /// successor reaps what exits meanwhile.
    pub fn pause(&self) {
        // Under the lock: a reap under way finishes first.
        let _waiting = locks::lock(&self.waiting);
        self.paused.store(true, Ordering::SeqCst);
    }

    /// Reaps again (a hand-off that did not happen), what exited meanwhile
    /// first.
    pub fn resume(&self) {
        self.paused.store(false, Ordering::SeqCst);
        self.reap_ready();
    }

    /// Runs `spawn` (which returns the new child's pid) with the table
    /// locked, and registers the pid before any exit can be reaped.
    pub fn spawn_registered<E>(
        &self,
        spawn: impl FnOnce() -> Result<u32, E>,
    ) -> Result<(u32, oneshot::Receiver<ExitStatus>), E> {
        let mut waiting = locks::lock(&self.waiting);
        let pid = spawn()?;
        let (tx, rx) = oneshot::channel();
        waiting.insert(pid as i32, tx);
        Ok((pid, rx))
    }

    /// Reaps every exited child. The table stays locked throughout, so a
    /// child being spawned right now (whose exec may fail, in which case
    /// std's `Command::spawn` waits for it itself) is never reaped here.
    fn reap_ready(&self) {
        let mut waiting = locks::lock(&self.waiting);
        if self.paused.load(Ordering::SeqCst) {
            return;
        }
        loop {
            let status = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Err(Errno::EINTR) => continue,
                Err(err) => {
                    tracing::warn!(error = %err, "waitpid");
                    return;
                }
                Ok(status) => status,
            };
            let (pid, exit) = match status {
                WaitStatus::Exited(pid, code) => (pid, ExitStatus::Code(code)),
                WaitStatus::Signaled(pid, sig, _) => (pid, ExitStatus::Signal(sig as i32)),
                // Stops and ptrace events are not exits.
                _ => continue,
            };
            match waiting.remove(&pid.as_raw()) {
                Some(tx) => {
                    let _ = tx.send(exit);
                }
                None => tracing::debug!(pid = pid.as_raw(), ?exit, "reaped an orphaned descendant"),
            }
        }
    }
}

/// Whether `pid` is a child of this process (its exits reach the reaper).
pub fn is_child(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let after = &stat[stat.rfind(')')? + 1..];
            after.split_ascii_whitespace().nth(1)?.parse::<u32>().ok()
        })
        .is_some_and(|ppid| ppid == std::process::id())
}

/// [`watch_pidfd`] for `pid`: a process already gone ends at once.
pub fn watch_pid(pid: u32) -> oneshot::Receiver<ExitStatus> {
    match super::workers::pidfd_open(pid).and_then(watch_pidfd) {
        Ok(exit) => exit,
        Err(_) => {
            let (tx, rx) = oneshot::channel();
            let _ = tx.send(ExitStatus::Unknown);
            rx
        }
    }
}

/// The end of a process that is not the daemon's child (a main process
/// adopted after a crash of the daemon that spawned it): its pidfd turns
/// readable when it ends, but no wait status reaches this process, so the
/// end is reported as [`ExitStatus::Unknown`]. Must run inside a tokio
/// runtime.
pub fn watch_pidfd(pidfd: std::os::fd::OwnedFd) -> std::io::Result<oneshot::Receiver<ExitStatus>> {
    // SAFETY: `pidfd` is an open pidfd the AsyncFd owns from here on;
    // nothing else closes or replaces it.
    let pidfd = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE)
    }?;
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        // A pidfd stays readable once its process ended; an error means
        // the reactor is gone, and the daemon with it.
        if pidfd.readable().await.is_ok() {
            let _ = tx.send(ExitStatus::Unknown);
        }
    });
    Ok(rx)
}
