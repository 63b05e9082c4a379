//! Held listen sockets: the `[[listen]]` addresses of an app, bound by the
//! daemon and passed to every instance of the app as `LISTEN_FDS`.
//!
//! The daemon binds as root, so ports below 1024 work for apps that never
//! run as root, and keeps the sockets open across restarts: while the app
//! restarts, connections wait in the kernel's backlog instead of being
//! refused. The supervise task of the app owns its [`HeldSockets`]; they
//! close when the app is stopped by request (so connections are refused
//! rather than queued for an app that is not coming back), removed, or its
//! listen set changes.
//!
//! Unix sockets are created with owner the app's user, group the app's
//! group, mode 0660, so the app and members of its group (a front proxy
//! added to it) may connect; the parent directory must exist. A leftover
//! socket file nobody listens on is replaced; a socket someone listens on,
//! or a file that is not a socket, is an error.
//!
//! This module never accepts a connection, never reads or writes on a
//! socket, and never decides when to bind (that is `supervise`).

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use socket2::{Domain, SockAddr, Socket, Type};

use crate::config::{AppSpec, ListenAddress, ListenSpec};

/// Backlog asked of listen(2); the kernel caps it at `net.core.somaxconn`
/// (4096 by default since Linux 5.4). A long backlog is what lets clients
/// wait through a restart instead of being refused.
const BACKLOG: i32 = 4096;

/// Mode of a Unix listen socket: the app's user and group may connect.
const UNIX_SOCKET_MODE: u32 = 0o660;

/// Why an app's listen socket could not be bound; the message becomes the
/// app's state reason.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("listen {address}: address already in use (another process holds it: find it with `{hint}`)")]
    InUse {
        address: ListenAddress,
        hint: String,
    },
    #[error("listen {address}: directory {} does not exist (create it, owned by the app's user or root)", dir.display())]
    NoDirectory {
        address: ListenAddress,
        dir: PathBuf,
    },
    #[error("listen {address}: {} exists and is not a socket (remove it or choose another path)", path.display())]
    NotASocket {
        address: ListenAddress,
        path: PathBuf,
    },
    #[error("listen {address}: cannot {step}: {source}")]
    Io {
        address: ListenAddress,
        step: Step,
        #[source]
        source: io::Error,
    },
}

/// What was being done to a listen socket when it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Create,
    SetReuseAddress,
    Bind,
    Listen,
    RemoveStale,
    Chown,
    Chmod,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::Create => "create the socket",
            Step::SetReuseAddress => "set SO_REUSEADDR",
            Step::Bind => "bind",
            Step::Listen => "listen",
            Step::RemoveStale => "remove the stale socket file",
            Step::Chown => "chown the socket file",
            Step::Chmod => "chmod the socket file",
        })
    }
}

/// The bound sockets of one app, in `[[listen]]` order.
#[derive(Debug)]
pub struct HeldSockets {
    sockets: Vec<Held>,
    /// Owner of the Unix socket files.
    owner: (u32, u32),
}

#[derive(Debug)]
struct Held {
    spec: ListenSpec,
    socket: Socket,
    /// For a Unix socket: the file's (dev, inode), to remove it on drop only
    /// while it is still ours.
    unix_file: Option<(PathBuf, u64, u64)>,
}

impl Drop for Held {
    fn drop(&mut self) {
        let Some((path, dev, ino)) = &self.unix_file else {
            return;
        };
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.dev() == *dev && meta.ino() == *ino => {
                if let Err(err) = std::fs::remove_file(path) {
                    tracing::debug!(path = %path.display(), error = %err, "removing a listen socket file");
                }
            }
            _ => {}
        }
    }
}

impl HeldSockets {
    /// Binds every `[[listen]]` address of `app`; Unix socket files get
    /// owner `uid`, group `gid`.
    pub fn bind(app: &AppSpec, uid: u32, gid: u32) -> Result<HeldSockets, ListenError> {
        HeldSockets::rebind(app, uid, gid, None)
    }

    /// Like [`bind`](Self::bind), but keeps the sockets of `previous` whose
    /// address is still listed, so a changed listen set does not close (and
    /// refuse connections on) the addresses that stayed. The rest of
    /// `previous` closes.
    pub fn rebind(
        app: &AppSpec,
        uid: u32,
        gid: u32,
        previous: Option<HeldSockets>,
    ) -> Result<HeldSockets, ListenError> {
        let mut previous = previous.map(|p| p.sockets).unwrap_or_default();
        let mut sockets = Vec::with_capacity(app.listen.len());
        for spec in &app.listen {
            let kept = previous
                .iter()
                .position(|held| held.spec.address == spec.address)
                .map(|i| previous.swap_remove(i));
            let held = match kept {
                Some(mut held) => {
                    held.spec = spec.clone();
                    if let Some((path, ..)) = &held.unix_file {
                        set_owner_and_mode(&spec.address, path, uid, gid)?;
                    }
                    held
                }
                None => bind_one(spec, uid, gid)?,
            };
            sockets.push(held);
        }
        Ok(HeldSockets {
            sockets,
            owner: (uid, gid),
        })
    }

    /// Whether these sockets serve exactly `listen` (addresses and names,
    /// in order) with Unix socket files owned by `uid`:`gid`.
    pub fn serves(&self, listen: &[ListenSpec], uid: u32, gid: u32) -> bool {
        self.owner == (uid, gid)
            && self.sockets.len() == listen.len()
            && self.sockets.iter().zip(listen).all(|(h, s)| h.spec == *s)
    }

    /// The sockets in `[[listen]]` order, for the spawn's fds 3 and up.
    pub fn fds(&self) -> Vec<BorrowedFd<'_>> {
        self.sockets.iter().map(|h| h.socket.as_fd()).collect()
    }

    /// The `LISTEN_FDNAMES` entries, in the order of [`fds`](Self::fds).
    pub fn names(&self) -> Vec<String> {
        self.sockets.iter().map(|h| h.spec.name.clone()).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }
}

/// The `LISTEN_FDNAMES` entry of an instance's [`ProbeSocket`].
pub const PROBE_FD_NAME: &str = "appvisor-probe";

/// One instance's private socket: a Unix stream socket in a directory only
/// root may enter, passed to that instance alone after the app's
/// `[[listen]]` sockets. App servers serve every inherited socket, so the
/// readiness probe sent through it reaches this instance's workers and no
/// other instance's (the shared sockets reach whichever accepts first).
/// The file is removed on drop.
#[derive(Debug)]
pub struct ProbeSocket {
    socket: Socket,
    path: PathBuf,
}

impl ProbeSocket {
    /// Binds and listens at `path`, replacing a stale file there. The
    /// directory must exist and be root's alone.
    pub fn bind(path: &Path) -> Result<ProbeSocket, ListenError> {
        let address = ListenAddress::Unix(path.to_owned());
        let io_err = |step| {
            let address = address.clone();
            move |source| ListenError::Io {
                address,
                step,
                source,
            }
        };
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(io_err(Step::RemoveStale)(source)),
        }
        let socket = Socket::new(Domain::UNIX, Type::STREAM, None).map_err(io_err(Step::Create))?;
        let sockaddr = SockAddr::unix(path).map_err(io_err(Step::Bind))?;
        socket.bind(&sockaddr).map_err(io_err(Step::Bind))?;
        let probe = ProbeSocket {
            socket,
            path: path.to_owned(),
        };
        // A probe connects once at a time; a short backlog is plenty.
        probe.socket.listen(16).map_err(io_err(Step::Listen))?;
        Ok(probe)
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ProbeSocket {
    fn drop(&mut self) {
        if let Err(err) = std::fs::remove_file(&self.path) {
            tracing::debug!(path = %self.path.display(), error = %err, "removing a probe socket file");
        }
    }
}

fn bind_one(spec: &ListenSpec, uid: u32, gid: u32) -> Result<Held, ListenError> {
    let address = &spec.address;
    let io_err = |step| {
        move |source| ListenError::Io {
            address: address.clone(),
            step,
            source,
        }
    };
    match address {
        ListenAddress::Tcp(addr) => {
            let socket = Socket::new(Domain::for_address(*addr), Type::STREAM, None)
                .map_err(io_err(Step::Create))?;
            // Lets the daemon bind again right after an earlier instance of
            // the address closed, despite connections left in TIME_WAIT.
            socket
                .set_reuse_address(true)
                .map_err(io_err(Step::SetReuseAddress))?;
            socket
                .bind(&SockAddr::from(*addr))
                .map_err(|source| tcp_bind_error(address, *addr, source))?;
            socket.listen(BACKLOG).map_err(io_err(Step::Listen))?;
            Ok(Held {
                spec: spec.clone(),
                socket,
                unix_file: None,
            })
        }
        ListenAddress::Unix(path) => {
            let dir = path.parent().unwrap_or(Path::new("/"));
            if !dir.is_dir() {
                return Err(ListenError::NoDirectory {
                    address: address.clone(),
                    dir: dir.to_owned(),
                });
            }
            remove_stale(address, path)?;
            let socket =
                Socket::new(Domain::UNIX, Type::STREAM, None).map_err(io_err(Step::Create))?;
            let sockaddr = SockAddr::unix(path).map_err(io_err(Step::Bind))?;
            socket.bind(&sockaddr).map_err(|source| {
                if source.kind() == io::ErrorKind::AddrInUse {
                    unix_in_use(address, path)
                } else {
                    io_err(Step::Bind)(source)
                }
            })?;
            let meta = std::fs::symlink_metadata(path).map_err(io_err(Step::Bind))?;
            // Owned from here on, so an error below removes the file.
            let held = Held {
                spec: spec.clone(),
                socket,
                unix_file: Some((path.clone(), meta.dev(), meta.ino())),
            };
            set_owner_and_mode(address, path, uid, gid)?;
            held.socket.listen(BACKLOG).map_err(io_err(Step::Listen))?;
            Ok(held)
        }
    }
}

fn tcp_bind_error(address: &ListenAddress, addr: SocketAddr, source: io::Error) -> ListenError {
    if source.kind() == io::ErrorKind::AddrInUse {
        ListenError::InUse {
            address: address.clone(),
            hint: format!("ss -ltnp 'sport = :{}'", addr.port()),
        }
    } else {
        ListenError::Io {
            address: address.clone(),
            step: Step::Bind,
            source,
        }
    }
}

fn unix_in_use(address: &ListenAddress, path: &Path) -> ListenError {
    ListenError::InUse {
        address: address.clone(),
        hint: format!("ss -lxp src {}", path.display()),
    }
}

/// Removes a socket file at `path` that nobody listens on (a crashed
/// daemon's); refuses to touch a live socket or anything else.
fn remove_stale(address: &ListenAddress, path: &Path) -> Result<(), ListenError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(ListenError::Io {
                address: address.clone(),
                step: Step::RemoveStale,
                source,
            })
        }
    };
    if !meta.file_type().is_socket() {
        return Err(ListenError::NotASocket {
            address: address.clone(),
            path: path.to_owned(),
        });
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(unix_in_use(address, path)),
        Err(_) => std::fs::remove_file(path).map_err(|source| ListenError::Io {
            address: address.clone(),
            step: Step::RemoveStale,
            source,
        }),
    }
}

fn set_owner_and_mode(
    address: &ListenAddress,
    path: &Path,
    uid: u32,
    gid: u32,
) -> Result<(), ListenError> {
    let io_err = |step| {
        move |source| ListenError::Io {
            address: address.clone(),
            step,
            source,
        }
    };
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(io_err(Step::Chown))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(UNIX_SOCKET_MODE))
        .map_err(io_err(Step::Chmod))
}

#[cfg(test)]
mod tests;
