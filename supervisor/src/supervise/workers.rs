//! Waiting for a set of processes to be gone, without polling: one pidfd
//! per process (Linux 5.3), readable once the process has exited.
//!
//! A reload notes the processes of an instance (all but its main process)
//! before it sends the reload signal; the reload is not done until every
//! one of them is gone. A pidfd names one process, so a pid reused by a new
//! worker cannot be mistaken for an old one.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// Pidfds of the processes to wait for.
#[derive(Debug)]
pub struct Workers {
    pidfds: Vec<AsyncFd<OwnedFd>>,
}

impl Workers {
    /// Opens a pidfd for each of `pids`; a process that is already gone is
    /// left out. Must run inside a tokio runtime.
    pub fn note(pids: impl IntoIterator<Item = u32>) -> io::Result<Workers> {
        let mut pidfds = Vec::new();
        for pid in pids {
            match pidfd_open(pid) {
                Ok(fd) => {
                    // SAFETY: `fd` is an open pidfd the AsyncFd owns from
                    // here on; nothing else closes or replaces it.
                    let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
                        .map_err(io::Error::from)?;
                    pidfds.push(fd);
                }
                Err(err) if err.raw_os_error() == Some(libc::ESRCH) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(Workers { pidfds })
    }

    /// How many processes are waited for.
    pub fn len(&self) -> usize {
        self.pidfds.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.pidfds.is_empty()
    }

    /// Resolves once every noted process has exited.
    pub async fn gone(self) {
        for pidfd in &self.pidfds {
            // A pidfd stays readable once its process exited; an error
            // here means the reactor is gone, and then so is the daemon.
            let _ = pidfd.readable().await;
        }
    }
}

/// `pidfd_open(pid, 0)`: close-on-exec by definition.
pub(crate) fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))?;
    // SAFETY: pidfd_open takes a pid and flags and returns a new file
    // descriptor or -1; it touches no memory of ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: the kernel just returned `fd`, open and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `pidfd_send_signal(pidfd, signal, NULL, 0)`: `signal` to the process
/// `pidfd` names, never to one that took its pid over since it was opened.
pub(crate) fn pidfd_send_signal(
    pidfd: &OwnedFd,
    signal: nix::sys::signal::Signal,
) -> io::Result<()> {
    // SAFETY: pidfd_send_signal takes an fd we hold open, a signal number,
    // a null siginfo (the kernel fills one in as kill(2) would) and flags
    // 0; it touches no memory of ours.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal as libc::c_int,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::process::Command;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn resolves_once_every_process_is_gone() {
        let mut short = Command::new("/bin/sleep").arg("0.2").spawn().unwrap();
        let mut long = Command::new("/bin/sleep").arg("0.6").spawn().unwrap();
        let workers = Workers::note([short.id(), long.id()]).unwrap();
        assert_eq!(workers.len(), 2);
        // Reap them as they end, as the daemon's reaper would.
        let reaper = std::thread::spawn(move || {
            short.wait().unwrap();
            long.wait().unwrap();
        });
        let started = std::time::Instant::now();
        tokio::time::timeout(Duration::from_secs(5), workers.gone())
            .await
            .expect("both gone within 5s");
        assert!(started.elapsed() >= Duration::from_millis(500));
        reaper.join().unwrap();
    }

    #[tokio::test]
    async fn a_process_already_gone_is_left_out() {
        let mut child = Command::new("/bin/true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let workers = Workers::note([pid]).unwrap();
        assert!(workers.is_empty());
        workers.gone().await;
    }
}
