//! systemd's file-descriptor store, for a crash: with `NOTIFY_SOCKET` set
//! the daemon pushes each app's held listen sockets and each instance's
//! output pipe read ends to the service manager (`FDSTORE=1`, `FDNAME=`,
//! the fd as SCM_RIGHTS), and takes them out again (`FDSTOREREMOVE=1`)
//! when it closes them. A daemon that crashed and is started again gets
//! them back as `LISTEN_FDS` (fds 3 and up) named by `LISTEN_FDNAMES`, for
//! itself only (`LISTEN_PID`): the pipes then never lost their reader, so
//! no output is lost (the writers block once a pipe's 64 KiB are full,
//! until the successor reads).
//!
//! Names: `APP/listen/N` (the N-th `[[listen]]` socket), `APP/stdout/iID`
//! and `APP/stderr/iID` (instance ID's pipes). App names are
//! `[a-z0-9][a-z0-9_-]*`, so every name is ASCII without ':' or control
//! characters, and short (`valid_name`).

use std::collections::BTreeMap;
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::PathBuf;

use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};

/// Where the service manager listens.
#[derive(Debug)]
pub struct FdStore {
    socket: std::os::unix::net::UnixDatagram,
    address: UnixAddr,
}

/// The store's name of an app's `n`-th listen socket.
pub fn listen_name(app: &str, n: usize) -> String {
    format!("{app}/listen/{n}")
}

/// The store's name of an instance's pipe (`stream`: stdout or stderr).
pub fn pipe_name(app: &str, stream: &str, instance: &str) -> String {
    format!("{app}/{stream}/{instance}")
}

/// What systemd accepts as `FDNAME=`: ASCII, printable, no ':', at most
/// 255 bytes.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 255 && name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
}

impl FdStore {
    /// The store of the service manager `NOTIFY_SOCKET` names, if any.
    pub fn from_env() -> Option<FdStore> {
        let path = std::env::var_os("NOTIFY_SOCKET")?;
        let bytes = path.as_encoded_bytes();
        let address = match bytes.strip_prefix(b"@") {
            Some(name) => UnixAddr::new_abstract(name),
            None => UnixAddr::new(&PathBuf::from(&path)),
        };
        let address = address
            .map_err(|error| tracing::warn!(%error, "NOTIFY_SOCKET: no fd store"))
            .ok()?;
        let socket = std::os::unix::net::UnixDatagram::unbound()
            .and_then(|s| s.set_nonblocking(true).map(|()| s))
            .map_err(|error| tracing::warn!(%error, "no socket for the fd store"))
            .ok()?;
        Some(FdStore { socket, address })
    }

    fn send(&self, text: &str, fd: Option<BorrowedFd<'_>>) -> io::Result<()> {
        let raw = fd.map(|fd| [fd.as_raw_fd()]);
        let cmsgs: Vec<ControlMessage<'_>> = raw
            .as_ref()
            .map(|fds| ControlMessage::ScmRights(fds))
            .into_iter()
            .collect();
        sendmsg(
            self.socket.as_raw_fd(),
            &[IoSlice::new(text.as_bytes())],
            &cmsgs,
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
            Some(&self.address),
        )
        .map(drop)
        .map_err(io::Error::from)
    }

    /// Stores (a duplicate of) `fd` as `name`, replacing what had that
    /// name. Failures are logged: the store only matters after a crash.
    pub fn push(&self, name: &str, fd: BorrowedFd<'_>) {
        if !valid_name(name) {
            tracing::warn!(name, "not a name the fd store takes");
            return;
        }
        self.remove(name);
        if let Err(error) = self.send(&format!("FDSTORE=1\nFDNAME={name}"), Some(fd)) {
            tracing::warn!(name, %error, "cannot push an fd to the service manager's store");
        }
    }

    /// Takes every fd named `name` out of the store.
    pub fn remove(&self, name: &str) {
        if !valid_name(name) {
            return;
        }
        if let Err(error) = self.send(&format!("FDSTOREREMOVE=1\nFDNAME={name}"), None) {
            tracing::debug!(name, %error, "cannot remove an fd from the service manager's store");
        }
    }
}

/// Why `LISTEN_FDS` was not taken.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PassedError {
    #[error("LISTEN_PID={0} is not this process")]
    OtherPid(String),
    #[error("LISTEN_FDS={0} is not a count of fds")]
    BadCount(String),
    #[error("LISTEN_FDNAMES names {names} fds, LISTEN_FDS says {count}")]
    Names { names: usize, count: usize },
}

/// The names of the fds passed to process `me` (3, 4, ...), from
/// `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES` (pure). `Ok(None)`:
/// none passed.
pub fn parse_passed(
    pid: Option<&str>,
    count: Option<&str>,
    names: Option<&str>,
    me: u32,
) -> Result<Option<Vec<String>>, PassedError> {
    let (Some(pid), Some(count)) = (pid, count) else {
        return Ok(None);
    };
    if pid.parse::<u32>().ok() != Some(me) {
        return Err(PassedError::OtherPid(pid.to_owned()));
    }
    let count: usize = count
        .parse()
        .ok()
        .filter(|n| *n <= 65_536)
        .ok_or_else(|| PassedError::BadCount(count.to_owned()))?;
    let names: Vec<String> = match names {
        Some(names) if count > 0 => names.split(':').map(str::to_owned).collect(),
        _ => vec![String::new(); count],
    };
    if names.len() != count {
        return Err(PassedError::Names {
            names: names.len(),
            count,
        });
    }
    Ok(Some(names))
}

/// The fds the service manager passed to this process, by name, each
/// close-on-exec. Fds of a `LISTEN_PID` not ours are left alone.
pub fn take_passed() -> BTreeMap<String, OwnedFd> {
    let var = |name: &str| std::env::var(name).ok();
    let names = match parse_passed(
        var("LISTEN_PID").as_deref(),
        var("LISTEN_FDS").as_deref(),
        var("LISTEN_FDNAMES").as_deref(),
        std::process::id(),
    ) {
        Ok(Some(names)) => names,
        Ok(None) => return BTreeMap::new(),
        Err(error) => {
            tracing::warn!(%error, "ignoring the fds passed by the service manager");
            return BTreeMap::new();
        }
    };
    let mut passed = BTreeMap::new();
    for (i, name) in names.into_iter().enumerate() {
        let Ok(raw) = i32::try_from(3 + i) else {
            break;
        };
        if !super::exec::is_open(raw) {
            tracing::warn!(
                fd = raw,
                name,
                "the service manager passed an fd that is not open"
            );
            continue;
        }
        // SAFETY: LISTEN_PID is this process: fds 3..3+LISTEN_FDS were
        // passed to it by the service manager, open (checked), and
        // nothing else in this process knows them; each is taken once.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: ours, just taken.
        let _ = unsafe { super::exec::mark(&[raw], true) };
        passed.insert(name, fd);
    }
    passed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passed_fds_are_for_this_process_only_and_named_each() {
        let me = 42;
        // LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES, and how many fds (Err:
        // refused).
        type Case<'a> = (
            Option<&'a str>,
            Option<&'a str>,
            Option<&'a str>,
            Result<Option<usize>, ()>,
        );
        let cases: &[Case<'_>] = &[
            (None, None, None, Ok(None)),
            (
                Some("42"),
                Some("2"),
                Some("a/listen/0:a/stdout/i1"),
                Ok(Some(2)),
            ),
            (Some("42"), Some("0"), None, Ok(Some(0))),
            (Some("42"), Some("2"), None, Ok(Some(2))),
            (Some("43"), Some("2"), Some("a:b"), Err(())),
            (Some("42"), Some("x"), None, Err(())),
            (Some("42"), Some("3"), Some("a:b"), Err(())),
            (Some("42"), Some("99999999"), None, Err(())),
        ];
        for (pid, count, names, expected) in cases {
            let got = parse_passed(*pid, *count, *names, me)
                .map(|names| names.map(|n| n.len()))
                .map_err(drop);
            assert_eq!(&got, expected, "{pid:?} {count:?} {names:?}");
        }
        assert_eq!(
            parse_passed(Some("42"), Some("2"), Some("a/listen/0:web/stdout/i3"), me),
            Ok(Some(vec![
                "a/listen/0".to_owned(),
                "web/stdout/i3".to_owned()
            ]))
        );
    }

    #[test]
    fn names_systemd_takes() {
        assert!(valid_name("web/listen/0"));
        assert!(valid_name(&pipe_name("web", "stdout", "i3")));
        assert!(!valid_name("a:b"));
        assert!(!valid_name("a b"));
        assert!(!valid_name("a\nb"));
        assert!(!valid_name(""));
        assert!(!valid_name(&"x".repeat(256)));
        assert!(valid_name(&"x".repeat(255)));
    }
}
