//! The system calls of a hand-off: the binary to exec and the old one kept
//! open, the document's memfd, the fds left open across exec (exactly
//! those the document names), the signals held back meanwhile, execve and
//! fexecve.

use std::ffi::{CString, OsString};
use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow, Signal};

use super::state::{FALLBACK_VAR, STATE_FD_VAR};

/// The binaries of a hand-off.
#[derive(Debug)]
pub struct Binary {
    /// What `appctl reexec` execs: `--reexec-binary`, or the path this
    /// process was started from, resolved at start (so a package upgrade
    /// that replaces the file there is what runs next).
    pub path: PathBuf,
    /// This process's own binary, open since start: still there when an
    /// upgrade replaced or removed the file, to exec again if the new
    /// binary cannot take over.
    pub fallback: OwnedFd,
    /// The command line to exec with.
    pub argv: Vec<OsString>,
}

impl Binary {
    /// Resolves the binary at start. `path` overrides where the next one is.
    pub fn at_start(path: Option<PathBuf>) -> io::Result<Binary> {
        let fallback = File::open("/proc/self/exe")?.into();
        let path = match path {
            Some(path) => path,
            None => std::fs::read_link("/proc/self/exe")?,
        };
        Ok(Binary {
            path,
            fallback,
            argv: std::env::args_os().collect(),
        })
    }
}

/// The document in a close-on-exec memfd, rewound for the reader.
pub fn write_memfd(bytes: &[u8]) -> io::Result<OwnedFd> {
    let fd = memfd_create(c"appvisor-handoff", MFdFlags::MFD_CLOEXEC).map_err(io::Error::from)?;
    let mut file = File::from(fd);
    file.write_all(bytes)?;
    file.rewind()?;
    Ok(file.into())
}

/// Reads the whole memfd (from its start) without closing it.
pub fn read_memfd(fd: &OwnedFd, limit: u64) -> io::Result<Vec<u8>> {
    let mut file = File::from(fd.try_clone()?);
    file.rewind()?;
    let mut bytes = Vec::new();
    file.take(limit).read_to_end(&mut bytes)?;
    Ok(bytes)
}

fn set_cloexec(fd: BorrowedFd<'_>, cloexec: bool) -> io::Result<()> {
    let flags = if cloexec {
        FdFlag::FD_CLOEXEC
    } else {
        FdFlag::empty()
    };
    fcntl(fd, FcntlArg::F_SETFD(flags))
        .map(drop)
        .map_err(io::Error::from)
}

/// Whether `fd` is open.
pub fn is_open(fd: i32) -> bool {
    // SAFETY: F_GETFD only reads the fd's flags; an fd that is not open
    // gives EBADF. The borrow does not outlive the call.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    fcntl(fd, FcntlArg::F_GETFD).is_ok()
}

/// Marks every fd in `fds` close-on-exec (`true`) or not.
///
/// # Safety
/// Every fd in `fds` must be open and owned by the caller for the call.
pub unsafe fn mark(fds: &[i32], cloexec: bool) -> io::Result<()> {
    for fd in fds {
        // SAFETY: the caller guarantees the fd is open and owned.
        set_cloexec(unsafe { BorrowedFd::borrow_raw(*fd) }, cloexec)?;
    }
    Ok(())
}

/// The signals that would end the daemon (SIGUSR2's default action) or
/// that it must not miss (TERM, INT, HUP) while no handler is installed:
/// blocked across exec, they wait pending until the new image unblocks
/// them once its handlers are in place.
fn held_signals() -> SigSet {
    let mut set = SigSet::empty();
    for signal in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGUSR2,
    ] {
        set.add(signal);
    }
    set
}

/// Unblocks what [`exec`] held back: called once the signal handlers are
/// installed (a no-op for a daemon not started by a hand-off).
pub fn unblock_signals() {
    if let Err(error) = pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&held_signals()), None) {
        tracing::warn!(%error, "unblocking signals after a hand-off");
    }
}

fn cstrings(
    argv: &[OsString],
    env: &[(OsString, OsString)],
) -> io::Result<(Vec<CString>, Vec<CString>)> {
    let invalid = |_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in argv or env");
    let argv = argv
        .iter()
        .map(|a| CString::new(a.as_bytes()).map_err(invalid))
        .collect::<Result<_, _>>()?;
    let env = env
        .iter()
        .map(|(k, v)| {
            let mut pair = k.as_bytes().to_vec();
            pair.push(b'=');
            pair.extend_from_slice(v.as_bytes());
            CString::new(pair).map_err(invalid)
        })
        .collect::<Result<_, _>>()?;
    Ok((argv, env))
}

/// This process's environment without the hand-off's own variables, plus
/// `extra`.
fn environment(extra: &[(&str, String)]) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = std::env::vars_os()
        // LISTEN_* were for the first image (`fdstore`): this pid would
        // read them again as fds it was passed.
        .filter(|(k, _)| {
            k != STATE_FD_VAR
                && k != FALLBACK_VAR
                && k != "LISTEN_PID"
                && k != "LISTEN_FDS"
                && k != "LISTEN_FDNAMES"
        })
        .collect();
    env.extend(
        extra
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v))),
    );
    env
}

/// Where an exec goes.
#[derive(Debug)]
pub enum Target<'a> {
    Path(&'a std::path::Path),
    Fd(BorrowedFd<'a>),
}

/// Execs `target` with `argv`, the document in `memfd` and `fds` left
/// open; returns only if the exec failed, with every fd close-on-exec
/// again and the signals unblocked, so the caller carries on.
///
/// `fds` must be open and owned by the caller (the document's fds).
pub fn exec(
    target: Target<'_>,
    argv: &[OsString],
    memfd: &OwnedFd,
    fds: &[i32],
    fallback_error: Option<&str>,
) -> io::Error {
    let mut extra = vec![(STATE_FD_VAR, memfd.as_raw_fd().to_string())];
    if let Some(error) = fallback_error {
        extra.push((FALLBACK_VAR, error.replace('\0', " ")));
    }
    let (argv, env) = match cstrings(argv, &environment(&extra)) {
        Ok(pair) => pair,
        Err(error) => return error,
    };
    let mut all: Vec<i32> = fds.to_vec();
    all.push(memfd.as_raw_fd());
    // SAFETY: the caller owns `fds` and keeps them open; `memfd` is ours.
    if let Err(error) = unsafe { mark(&all, false) } {
        // SAFETY: as above.
        let _ = unsafe { mark(&all, true) };
        return error;
    }
    let mut old_mask = SigSet::empty();
    let _ = pthread_sigmask(
        SigmaskHow::SIG_BLOCK,
        Some(&held_signals()),
        Some(&mut old_mask),
    );
    let error = match target {
        Target::Path(path) => match CString::new(path.as_os_str().as_bytes()) {
            Ok(path) => nix::unistd::execve(&path, &argv, &env)
                .map(|never| match never {})
                .unwrap_or_else(io::Error::from),
            Err(_) => io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in the binary's path"),
        },
        Target::Fd(fd) => nix::unistd::fexecve(fd.as_fd(), &argv, &env)
            .map(|never| match never {})
            .unwrap_or_else(io::Error::from),
    };
    let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old_mask), None);
    // SAFETY: as above.
    let _ = unsafe { mark(&all, true) };
    error
}
