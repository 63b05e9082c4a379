//! Taking an app's `[[listen]]` sockets back from its running main process
//! after a crash of the daemon that held them (no fd store gave them
//! back): the app inherited them, so it still has them, at fd numbers of
//! its own choosing (gunicorn dups them elsewhere). Each socket of the
//! process is looked at through `pidfd_getfd(2)` and kept only if it is
//! listening (`SO_ACCEPTCONN`) on a configured address (`getsockname`).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

use socket2::SockRef;

use super::HandedOver;
use crate::config::{ListenAddress, ListenSpec};

/// At most this many of the process's fds are looked at.
const MAX_FDS: usize = 4096;

/// Why the sockets could not all be taken back.
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    #[error("listing the fds of pid {pid}: {source}")]
    List { pid: u32, source: io::Error },
    #[error("pid {pid} holds no socket listening on {address}")]
    Missing { pid: u32, address: String },
}

/// The sockets of `listen`, in its order, taken from process `pid` (open
/// as `pidfd`).
pub fn recover(
    pidfd: BorrowedFd<'_>,
    pid: u32,
    listen: &[ListenSpec],
) -> Result<Vec<HandedOver>, RecoverError> {
    let dir = Path::new("/proc").join(pid.to_string()).join("fd");
    let entries = std::fs::read_dir(&dir).map_err(|source| RecoverError::List { pid, source })?;
    let mut found: Vec<Option<OwnedFd>> = listen.iter().map(|_| None).collect();
    for entry in entries.flatten().take(MAX_FDS) {
        if found.iter().all(Option::is_some) {
            break;
        }
        let Some(number) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let is_socket = std::fs::read_link(entry.path()).is_ok_and(|target| {
            target
                .as_os_str()
                .as_encoded_bytes()
                .starts_with(b"socket:")
        });
        if !is_socket {
            continue;
        }
        let Ok(fd) = pidfd_getfd(pidfd, number) else {
            continue;
        };
        let Some(i) = matching(&fd, listen, &found) else {
            continue;
        };
        found[i] = Some(fd);
    }
    listen
        .iter()
        .zip(found)
        .map(|(spec, fd)| match fd {
            Some(fd) => Ok(HandedOver {
                fd,
                address: spec.address.to_string(),
                unix_file: None,
            }),
            None => Err(RecoverError::Missing {
                pid,
                address: spec.address.to_string(),
            }),
        })
        .collect()
}

/// The index of the not yet found spec of `listen` that `fd` listens on.
fn matching(fd: &OwnedFd, listen: &[ListenSpec], found: &[Option<OwnedFd>]) -> Option<usize> {
    listen
        .iter()
        .enumerate()
        .position(|(i, spec)| found[i].is_none() && listens_on(fd, &spec.address))
}

/// Whether `fd` is a socket listening on `address`.
pub fn listens_on(fd: &OwnedFd, address: &ListenAddress) -> bool {
    let socket = SockRef::from(fd);
    if !socket.is_listener().unwrap_or(false) {
        return false;
    }
    let Ok(local) = socket.local_addr() else {
        return false;
    };
    match address {
        ListenAddress::Tcp(address) => local.as_socket() == Some(*address),
        ListenAddress::Unix(path) => local.as_pathname() == Some(path.as_path()),
    }
}

/// `pidfd_getfd(pidfd, fd, 0)`: a close-on-exec duplicate, in this
/// process, of fd `fd` of the process `pidfd` names.
fn pidfd_getfd(pidfd: BorrowedFd<'_>, fd: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_getfd takes two fds and flags and returns a new fd or
    // -1; it touches no memory of ours.
    let new = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    let new = i32::try_from(new).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: the kernel just returned `new`, open and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_listening_socket_is_found_and_others_are_not() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        // A connected socket on the same address family: not a listener.
        let _client = std::net::TcpStream::connect(address).unwrap();
        let pid = std::process::id();
        let pidfd = crate::supervise::workers::pidfd_open(pid).unwrap();
        let spec = |address| ListenSpec {
            address,
            name: "web".to_owned(),
        };
        let found = recover(
            std::os::fd::AsFd::as_fd(&pidfd),
            pid,
            &[spec(ListenAddress::Tcp(address))],
        )
        .expect("found");
        assert_eq!(found.len(), 1);
        assert_eq!(
            SockRef::from(&found[0].fd)
                .local_addr()
                .unwrap()
                .as_socket(),
            Some(address)
        );
        let elsewhere: std::net::SocketAddr = "127.0.0.1:1".parse().unwrap();
        let missing = recover(
            std::os::fd::AsFd::as_fd(&pidfd),
            pid,
            &[spec(ListenAddress::Tcp(elsewhere))],
        );
        assert!(matches!(missing, Err(RecoverError::Missing { .. })));
    }
}
