//! The `NOTIFY_SOCKET` of one app: a Unix datagram socket that only the
//! app's user (and root) may send to, each datagram stamped by the kernel
//! with the sender's pid, uid and gid.
//!
//! This module receives and parses; it never decides whom to believe. The
//! supervise layer accepts a message only if
//! [`AppCgroup::contains_pid`](crate::cgroup::AppCgroup::contains_pid) holds
//! for its `pid` (or, without cgroups, if `pid` is the app's main pid), since
//! the file mode alone lets every process of the app's user in, other apps
//! of that user included.

use std::fs;
use std::future::{poll_fn, Future as _};
use std::io::{self, IoSliceMut};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::task::Poll;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{self, sockopt, ControlMessageOwned, MsgFlags, UnixCredentials};
use tokio::io::Interest;
use tokio::net::UnixDatagram;

use crate::ratelimit::{Limit, Verdict, Window};
// Poisoning ignored: the window stays consistent whatever panicked.
use crate::locks::lock;

/// systemd reads at most this much of a notification (`NOTIFY_BUFFER_MAX`);
/// longer datagrams are refused rather than cut.
const MAX_MESSAGE: usize = 4096;
/// What one socket logs about refused or ignored datagrams: a burst, then a
/// summary per window, whatever the app sends.
const NOISE: Limit = Limit {
    burst: 5,
    per: Duration::from_secs(10),
};

/// Why a notify socket could not be set up, or a datagram was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReadinessError {
    #[error("the notify socket {path} must be bound inside a tokio runtime")]
    NoRuntime { path: PathBuf },
    #[error("cannot replace {path}: it exists and is not a socket")]
    NotASocket { path: PathBuf },
    #[error("cannot remove the stale notify socket {path}")]
    RemoveStale {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot bind the notify socket {path}")]
    Bind {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot give the notify socket {path} to uid {uid} gid {gid}")]
    Chown {
        path: PathBuf,
        uid: u32,
        gid: u32,
        #[source]
        source: io::Error,
    },
    #[error("cannot set mode 0600 on the notify socket {path}")]
    Chmod {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot enable SO_PASSCRED on the notify socket {path}")]
    PassCred {
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("cannot receive on the notify socket {path}")]
    Receive {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("refused a datagram on {path}: it carries no sender credentials")]
    NoCredentials { path: PathBuf },
    #[error("refused a datagram on {path} from pid {pid}: longer than {MAX_MESSAGE} bytes")]
    TooLong { path: PathBuf, pid: u32 },
    #[error("refused a datagram on {path}: it carries file descriptors or other ancillary data")]
    Ancillary { path: PathBuf },
    #[error("refused a datagram on {path} from pid {pid}: not UTF-8")]
    NotUtf8 { path: PathBuf, pid: u32 },
}

impl ReadinessError {
    /// One datagram was refused; the socket is fine and `recv` can go on.
    pub fn is_refused_message(&self) -> bool {
        matches!(
            self,
            ReadinessError::NoCredentials { .. }
                | ReadinessError::TooLong { .. }
                | ReadinessError::Ancillary { .. }
                | ReadinessError::NotUtf8 { .. }
        )
    }
}

/// One notification, in the `sd_notify(3)` format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyMessage {
    /// The sender, as the kernel saw it (`SCM_CREDENTIALS`), in the daemon's
    /// pid namespace.
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
    /// `KEY=VALUE` lines in the order sent; lines without `=` are dropped.
    pub fields: Vec<(String, String)>,
}

impl NotifyMessage {
    /// The last value sent for `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// `READY=1`.
    pub fn is_ready(&self) -> bool {
        self.get("READY") == Some("1")
    }

    /// `STATUS=...`, free text for `appctl status`.
    pub fn status(&self) -> Option<&str> {
        self.get("STATUS")
    }

    /// `MAINPID=...`, when it parses as a pid.
    pub fn main_pid(&self) -> Option<u32> {
        self.get("MAINPID")?.parse().ok().filter(|pid| *pid > 0)
    }
}

/// A bound notify socket; the path is unlinked on drop.
#[derive(Debug)]
pub struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
    /// (device, inode) of the socket file we made, so drop never unlinks a
    /// socket bound at the same path by someone else since; `None` once
    /// handed over, when the file outlives this value.
    file_id: Option<(u64, u64)>,
    /// The rate limit of what this socket logs about datagrams it refuses
    /// or the caller ignores: the app's user can send them as fast as it
    /// likes.
    noise: Mutex<Window>,
}

impl NotifySocket {
    /// Binds `path` (replacing a stale socket file there), owned by
    /// `owner_uid:owner_gid` with mode 0600 so only that user and root can
    /// send, with `SO_PASSCRED` on. Must run inside a tokio runtime.
    ///
    /// Between `bind` and `chmod` the file has the daemon's umask applied
    /// (0755 under the usual 022, which lets nobody but root send); the
    /// sender check in the supervise layer covers the rest of that window.
    pub fn bind(
        path: &Path,
        owner_uid: u32,
        owner_gid: u32,
    ) -> Result<NotifySocket, ReadinessError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(ReadinessError::NoRuntime {
                path: path.to_owned(),
            });
        }
        remove_stale(path)?;
        let socket = std::os::unix::net::UnixDatagram::bind(path).map_err(|source| {
            ReadinessError::Bind {
                path: path.to_owned(),
                source,
            }
        })?;
        let metadata = fs::symlink_metadata(path).map_err(|source| ReadinessError::Bind {
            path: path.to_owned(),
            source,
        })?;
        // Narrow first, then hand over: the file is never writable by a
        // user other than root and the owner.
        fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(|source| {
            ReadinessError::Chmod {
                path: path.to_owned(),
                source,
            }
        })?;
        std::os::unix::fs::lchown(path, Some(owner_uid), Some(owner_gid)).map_err(|source| {
            ReadinessError::Chown {
                path: path.to_owned(),
                uid: owner_uid,
                gid: owner_gid,
                source,
            }
        })?;
        socket::setsockopt(&socket, sockopt::PassCred, &true).map_err(|source| {
            ReadinessError::PassCred {
                path: path.to_owned(),
                source,
            }
        })?;
        let socket = socket
            .set_nonblocking(true)
            .and_then(|()| UnixDatagram::from_std(socket))
            .map_err(|source| ReadinessError::Bind {
                path: path.to_owned(),
                source,
            })?;
        tracing::debug!(path = %path.display(), uid = owner_uid, gid = owner_gid, "notify socket bound");
        Ok(NotifySocket {
            socket,
            path: path.to_owned(),
            file_id: Some((metadata.dev(), metadata.ino())),
            noise: Mutex::default(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The socket's fd for a hand-off, leaving the file in place for the
    /// process that takes the fd over ([`NotifySocket::taken_over`]).
    pub fn hand_over(mut self) -> io::Result<std::os::fd::OwnedFd> {
        use std::os::fd::AsFd;
        let fd = self.socket.as_fd().try_clone_to_owned()?;
        self.file_id = None;
        Ok(fd)
    }

    /// A socket handed over by [`NotifySocket::hand_over`], still bound at
    /// `path`. Must run inside a tokio runtime.
    pub fn taken_over(fd: std::os::fd::OwnedFd, path: PathBuf) -> io::Result<NotifySocket> {
        let socket = std::os::unix::net::UnixDatagram::from(fd);
        socket.set_nonblocking(true)?;
        let socket = UnixDatagram::from_std(socket)?;
        let file_id = fs::symlink_metadata(&path)
            .ok()
            .map(|metadata| (metadata.dev(), metadata.ino()));
        Ok(NotifySocket {
            socket,
            path,
            file_id,
            noise: Mutex::default(),
        })
    }

    /// The next datagram. An error for which
    /// [`ReadinessError::is_refused_message`] holds concerns that datagram
    /// only (it is logged here, rate-limited): call `recv` again.
    /// Cancel-safe.
    pub async fn recv(&self) -> Result<NotifyMessage, ReadinessError> {
        let receive_error = |source| ReadinessError::Receive {
            path: self.path.clone(),
            source,
        };
        // The buffer lives on the stack only between the wake-up and the
        // parse, never across an await: every app's task waits here while
        // idle, and a buffer held across the await would sit in each task's
        // future (4 KiB an app).
        loop {
            self.readable().await.map_err(receive_error)?;
            let mut buffer = [0u8; MAX_MESSAGE + 1];
            let datagram = match self.socket.try_io(Interest::READABLE, || {
                receive(self.socket.as_raw_fd(), &mut buffer)
            }) {
                Ok(datagram) => datagram,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(source) => return Err(receive_error(source)),
            };
            let message = self.message(datagram, &buffer);
            if let Err(error) = &message {
                if error.is_refused_message() {
                    self.noisy(|| tracing::warn!(%error, "refused a notify message"));
                }
            }
            return message;
        }
    }

    /// Logs that a message from `msg.pid`, outside the app, was ignored,
    /// within this socket's rate limit.
    pub fn ignored_sender(&self, msg: &NotifyMessage) {
        self.noisy(|| {
            tracing::warn!(
                sender.pid = msg.pid,
                sender.uid = msg.uid,
                "ignoring a notify message from outside the app"
            );
        });
    }

    /// Waits until a datagram is queued, writing the summary of suppressed
    /// records when one is due.
    ///
    /// Every app's task waits in `recv` (inside its `select!`, notify
    /// socket or not), so what this future holds widens every app's task.
    /// Readiness is polled in place (`poll_recv_ready` keeps the waker in
    /// the socket's registration, where `readable()` would keep a waiter of
    /// about a hundred bytes in this future, twice), and the timer for a
    /// summary, rarely due, is boxed. This task is the socket's only
    /// reader, as `poll_recv_ready` requires.
    async fn readable(&self) -> io::Result<()> {
        loop {
            let due = lock(&self.noise).summary_due(NOISE);
            let Some(due) = due else {
                return poll_fn(|cx| self.socket.poll_recv_ready(cx)).await;
            };
            let mut summary = Box::pin(tokio::time::sleep_until(due.into()));
            let ready = poll_fn(|cx| match self.socket.poll_recv_ready(cx) {
                Poll::Ready(ready) => Poll::Ready(Some(ready)),
                Poll::Pending => summary.as_mut().poll(cx).map(|()| None),
            })
            .await;
            match ready {
                Some(ready) => return ready,
                None => self.summarize(),
            }
        }
    }

    /// Runs `record` (which logs) unless this socket's records are over
    /// [`NOISE`], after the summary of those suppressed before.
    fn noisy(&self, record: impl FnOnce()) {
        let verdict = lock(&self.noise).check(NOISE, Instant::now());
        if let Verdict::Log { suppressed } = verdict {
            self.log_summary(suppressed);
            record();
        }
    }

    fn summarize(&self) {
        let suppressed = lock(&self.noise).take_summary(NOISE, Instant::now());
        self.log_summary(suppressed);
    }

    fn log_summary(&self, suppressed: u64) {
        if suppressed > 0 {
            tracing::warn!(
                path = %self.path.display(),
                suppressed,
                "notify messages refused or ignored: {suppressed} more suppressed"
            );
        }
    }

    /// Checks one received datagram and parses its fields.
    fn message(&self, datagram: Datagram, buffer: &[u8]) -> Result<NotifyMessage, ReadinessError> {
        if datagram.ancillary_refused {
            return Err(ReadinessError::Ancillary {
                path: self.path.clone(),
            });
        }
        let Some(credentials) = datagram.credentials else {
            return Err(ReadinessError::NoCredentials {
                path: self.path.clone(),
            });
        };
        let pid = u32::try_from(credentials.pid()).unwrap_or(0);
        if datagram.len > MAX_MESSAGE {
            return Err(ReadinessError::TooLong {
                path: self.path.clone(),
                pid,
            });
        }
        let fields =
            parse_fields(&buffer[..datagram.len]).ok_or_else(|| ReadinessError::NotUtf8 {
                path: self.path.clone(),
                pid,
            })?;
        Ok(NotifyMessage {
            pid,
            uid: credentials.uid(),
            gid: credentials.gid(),
            fields,
        })
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let ours = fs::symlink_metadata(&self.path)
            .is_ok_and(|metadata| Some((metadata.dev(), metadata.ino())) == self.file_id);
        if ours {
            if let Err(error) = fs::remove_file(&self.path) {
                tracing::warn!(path = %self.path.display(), error = %error, "cannot remove the notify socket");
            }
        }
    }
}

fn remove_stale(path: &Path) -> Result<(), ReadinessError> {
    use std::os::unix::fs::FileTypeExt;
    match fs::symlink_metadata(path) {
        Err(source) if source.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(ReadinessError::RemoveStale {
            path: path.to_owned(),
            source,
        }),
        Ok(metadata) if !metadata.file_type().is_socket() => Err(ReadinessError::NotASocket {
            path: path.to_owned(),
        }),
        Ok(_) => fs::remove_file(path).map_err(|source| ReadinessError::RemoveStale {
            path: path.to_owned(),
            source,
        }),
    }
}

/// What one `recvmsg` brought.
struct Datagram {
    /// The datagram's full length (`MSG_TRUNC` reports it even when cut).
    len: usize,
    credentials: Option<UnixCredentials>,
    /// File descriptors or other control data came along (and were closed).
    ancillary_refused: bool,
}

/// One non-blocking `recvmsg`; `WouldBlock` when the queue is empty.
fn receive(fd: std::os::fd::RawFd, buffer: &mut [u8]) -> io::Result<Datagram> {
    // Room for one `ucred` only. The kernel puts the credentials first, so
    // descriptors sent along do not fit: it sets MSG_CTRUNC and never
    // installs them in our table.
    let mut control = nix::cmsg_space!(UnixCredentials);
    let mut iov = [IoSliceMut::new(buffer)];
    let message = socket::recvmsg::<()>(
        fd,
        &mut iov,
        Some(&mut control),
        MsgFlags::MSG_TRUNC | MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut datagram = Datagram {
        len: message.bytes,
        credentials: None,
        ancillary_refused: message.flags.contains(MsgFlags::MSG_CTRUNC),
    };
    let Ok(control_messages) = message.cmsgs() else {
        datagram.ancillary_refused = true;
        return Ok(datagram);
    };
    for control_message in control_messages {
        match control_message {
            ControlMessageOwned::ScmCredentials(credentials) => {
                datagram.credentials = Some(credentials);
            }
            ControlMessageOwned::ScmRights(fds) => {
                datagram.ancillary_refused = true;
                for fd in fds {
                    let _ = nix::unistd::close(fd);
                }
            }
            _ => datagram.ancillary_refused = true,
        }
    }
    Ok(datagram)
}

/// `KEY=VALUE` lines; `None` if the datagram is not UTF-8 (systemd ignores
/// such messages too).
fn parse_fields(datagram: &[u8]) -> Option<Vec<(String, String)>> {
    let text = std::str::from_utf8(datagram).ok()?;
    Some(
        text.split('\n')
            .filter_map(|line| line.split_once('='))
            .map(|(key, value)| (key.to_owned(), value.to_owned()))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixDatagram as StdDatagram;

    use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr};
    use nix::sys::wait::{waitpid, WaitStatus};
    use nix::unistd::{fork, ForkResult, Gid, Uid};

    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn message(pairs: &[(&str, &str)]) -> NotifyMessage {
        NotifyMessage {
            pid: 1,
            uid: 2,
            gid: 3,
            fields: fields(pairs),
        }
    }

    #[test]
    fn parses_sd_notify_datagrams() {
        type Fields = &'static [(&'static str, &'static str)];
        let cases: &[(&[u8], Option<Fields>)] = &[
            (b"READY=1", Some(&[("READY", "1")])),
            (
                b"READY=1\nSTATUS=booted, 4 workers\n",
                Some(&[("READY", "1"), ("STATUS", "booted, 4 workers")]),
            ),
            (b"STATUS=a=b", Some(&[("STATUS", "a=b")])),
            (b"\n\nnoequals\nMAINPID=42", Some(&[("MAINPID", "42")])),
            (b"", Some(&[])),
            (b"STATUS=\xff", None),
        ];
        for (datagram, want) in cases {
            assert_eq!(
                parse_fields(datagram),
                want.map(fields),
                "{:?}",
                String::from_utf8_lossy(datagram)
            );
        }
    }

    #[test]
    fn reads_well_known_keys() {
        let msg = message(&[
            ("STATUS", "first"),
            ("READY", "1"),
            ("STATUS", "second"),
            ("MAINPID", "77"),
        ]);
        assert!(msg.is_ready());
        assert_eq!(msg.status(), Some("second"));
        assert_eq!(msg.main_pid(), Some(77));

        let msg = message(&[("READY", "0"), ("MAINPID", "x"), ("RELOADING", "1")]);
        assert!(!msg.is_ready());
        assert_eq!(msg.status(), None);
        assert_eq!(msg.main_pid(), None);
        assert_eq!(msg.get("RELOADING"), Some("1"));
        assert_eq!(message(&[("MAINPID", "0")]).main_pid(), None);
    }

    async fn recv_within(socket: &NotifySocket) -> Result<NotifyMessage, ReadinessError> {
        tokio::time::timeout(Duration::from_secs(2), socket.recv())
            .await
            .expect("a datagram within 2s")
    }

    /// Every idle app's task waits in `recv`: its future must not carry the
    /// receive buffer (it did, 4 KiB an app).
    #[tokio::test]
    async fn waiting_for_a_datagram_holds_no_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let socket =
            NotifySocket::bind(&path, Uid::current().as_raw(), Gid::current().as_raw()).unwrap();
        let waiting = socket.recv();
        assert!(
            std::mem::size_of_val(&waiting) < 512,
            "recv's future is {} bytes",
            std::mem::size_of_val(&waiting)
        );
    }

    #[tokio::test]
    async fn receives_fields_and_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let socket =
            NotifySocket::bind(&path, Uid::current().as_raw(), Gid::current().as_raw()).unwrap();
        let sender = StdDatagram::unbound().unwrap();
        sender.send_to(b"READY=1\nSTATUS=booted", &path).unwrap();

        let msg = recv_within(&socket).await.unwrap();
        assert_eq!(
            msg,
            NotifyMessage {
                pid: std::process::id(),
                uid: Uid::current().as_raw(),
                gid: Gid::current().as_raw(),
                fields: fields(&[("READY", "1"), ("STATUS", "booted")]),
            }
        );
        assert!(msg.is_ready());
        assert_eq!(msg.status(), Some("booted"));

        let metadata = fs::metadata(&path).unwrap();
        assert_eq!(metadata.mode() & 0o7777, 0o600);
    }

    #[tokio::test]
    async fn refuses_oversized_and_non_utf8_datagrams() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let socket =
            NotifySocket::bind(&path, Uid::current().as_raw(), Gid::current().as_raw()).unwrap();
        let sender = StdDatagram::unbound().unwrap();
        let pid = std::process::id();

        sender.send_to(&[b'x'; MAX_MESSAGE + 1], &path).unwrap();
        let error = recv_within(&socket).await.unwrap_err();
        assert!(error.is_refused_message());
        assert_eq!(
            error.to_string(),
            format!(
                "refused a datagram on {} from pid {pid}: longer than 4096 bytes",
                path.display()
            )
        );

        sender.send_to(b"STATUS=\xff", &path).unwrap();
        let error = recv_within(&socket).await.unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "refused a datagram on {} from pid {pid}: not UTF-8",
                path.display()
            )
        );

        // The socket still works after refusing.
        sender.send_to(&[b'x'; MAX_MESSAGE], &path).unwrap();
        assert_eq!(recv_within(&socket).await.unwrap().fields, []);
    }

    #[tokio::test]
    async fn refuses_file_descriptors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let socket =
            NotifySocket::bind(&path, Uid::current().as_raw(), Gid::current().as_raw()).unwrap();
        let sender = StdDatagram::unbound().unwrap();
        let passed = std::fs::File::open("/dev/null").unwrap();
        let fds = [passed.as_raw_fd()];
        let iov = [io::IoSlice::new(b"FDSTORE=1")];
        let addr = UnixAddr::new(&path).unwrap();
        socket::sendmsg(
            sender.as_raw_fd(),
            &iov,
            &[socket::ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            Some(&addr),
        )
        .unwrap();
        let error = recv_within(&socket).await.unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "refused a datagram on {}: it carries file descriptors or other ancillary data",
                path.display()
            )
        );
    }

    #[tokio::test]
    async fn replaces_stale_sockets_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        drop(StdDatagram::bind(&path).unwrap());
        assert!(path.exists());
        let (uid, gid) = (Uid::current().as_raw(), Gid::current().as_raw());
        let socket = NotifySocket::bind(&path, uid, gid).unwrap();
        drop(socket);
        assert!(!path.exists(), "drop unlinks the socket");

        let file = dir.path().join("file");
        fs::write(&file, "keep me").unwrap();
        let error = NotifySocket::bind(&file, uid, gid).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "cannot replace {}: it exists and is not a socket",
                file.display()
            )
        );
        assert_eq!(fs::read_to_string(&file).unwrap(), "keep me");
    }

    #[tokio::test]
    async fn drop_leaves_a_newer_socket_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let (uid, gid) = (Uid::current().as_raw(), Gid::current().as_raw());
        let old = NotifySocket::bind(&path, uid, gid).unwrap();
        let new = NotifySocket::bind(&path, uid, gid).unwrap();
        drop(old);
        assert!(path.exists());
        drop(new);
        assert!(!path.exists());
    }

    #[test]
    fn bind_needs_a_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let error = NotifySocket::bind(&path, 0, 0).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "the notify socket {} must be bound inside a tokio runtime",
                path.display()
            )
        );
        assert!(!path.exists());
    }

    /// Forks a child that becomes `uid:gid` and sends `READY=1` to `path`;
    /// returns its pid and what happened, as the child's exit status.
    fn send_as(uid: u32, gid: u32, path: &Path) -> (u32, SendOutcome) {
        // Built before fork: the child only makes raw syscalls.
        let addr = UnixAddr::new(path).unwrap();
        // SAFETY: the test binary is multi-threaded; the child calls only
        // async-signal-safe functions (setgid, setuid, socket, sendto,
        // _exit) and allocates nothing.
        match unsafe { fork() }.expect("fork") {
            ForkResult::Child => {
                let code = (|| {
                    // Supplementary groups stay root's; the socket is 0600,
                    // so only the owner uid matters.
                    if nix::unistd::setgid(Gid::from_raw(gid)).is_err() {
                        return 10;
                    }
                    if nix::unistd::setuid(Uid::from_raw(uid)).is_err() {
                        return 11;
                    }
                    let Ok(fd) = socket::socket(
                        AddressFamily::Unix,
                        SockType::Datagram,
                        SockFlag::empty(),
                        None,
                    ) else {
                        return 12;
                    };
                    match socket::sendto(fd.as_raw_fd(), b"READY=1", &addr, MsgFlags::empty()) {
                        Ok(_) => 0,
                        Err(Errno::EACCES) => 1,
                        Err(_) => 13,
                    }
                })();
                // SAFETY: _exit ends the forked child without running the
                // parent's destructors or atexit handlers.
                unsafe { libc::_exit(code) }
            }
            ForkResult::Parent { child } => {
                let outcome = match waitpid(child, None).expect("waitpid") {
                    WaitStatus::Exited(_, 0) => SendOutcome::Sent,
                    WaitStatus::Exited(_, 1) => SendOutcome::PermissionDenied,
                    other => panic!("sender child failed: {other:?}"),
                };
                (child.as_raw() as u32, outcome)
            }
        }
    }

    #[derive(Debug, PartialEq, Eq)]
    enum SendOutcome {
        Sent,
        PermissionDenied,
    }

    #[tokio::test]
    async fn only_the_owner_may_send() {
        if !Uid::effective().is_root() {
            appvisor_tests::skip("needs root (chown and setuid)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        // Let other users reach the socket; its own mode must stop them.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let path = dir.path().join("notify.sock");
        let (owner, other) = (65534, 65533);
        let socket = NotifySocket::bind(&path, owner, owner).unwrap();
        let metadata = fs::metadata(&path).unwrap();
        assert_eq!((metadata.uid(), metadata.gid()), (owner, owner));

        let (_, outcome) = send_as(other, other, &path);
        assert_eq!(outcome, SendOutcome::PermissionDenied);

        let (pid, outcome) = send_as(owner, owner, &path);
        assert_eq!(outcome, SendOutcome::Sent);
        let msg = recv_within(&socket).await.unwrap();
        assert_eq!((msg.pid, msg.uid, msg.gid), (pid, owner, owner));
        assert!(msg.is_ready());
    }
}
