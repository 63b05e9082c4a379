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
//! The socket's directory may be one the app's owner can write (an
//! app-owned `/run/shop`), so its entries may change under the daemon at
//! any time: a `chmod` or `chown` by path, as root, would change whatever
//! the owner put at that name, a link to `/etc/shadow` included. So the
//! file is never changed or removed by path ([`SocketFile`]):
//!
//! 1. the directory is opened once (`O_PATH`) and every later step names
//!    the file through it, so a link swapped in for the directory itself
//!    redirects nothing;
//! 2. after `bind`, the file is opened without following links (`O_PATH |
//!    O_NOFOLLOW`) and must be a socket owned by root with a single link.
//!    The owner cannot make a file root's; the one root-owned socket they
//!    could put there, a hard link to one elsewhere (`/dev/log`, mode
//!    0666), has two links. Anything else fails the bind and changes
//!    nothing;
//! 3. mode and owner are set through that descriptor (`/proc/self/fd/N`);
//! 4. later (a kept socket whose owner changes, removal on drop) the file
//!    at the name must still be that one, by device and inode.
//!
//! `bind` itself takes the configured path, the address the app, its
//! clients and `ss` see: a directory swapped in that instant makes the
//! daemon create a new socket file elsewhere (never touch an existing
//! one), and step 2 then fails the bind.
//!
//! This module never accepts a connection, never reads or writes on a
//! socket, and never decides when to bind (that is `supervise`).

pub mod recover;

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode, SFlag};
use nix::unistd::UnlinkatFlags;
use socket2::{Domain, SockAddr, Socket, Type};

use crate::config::resolve::ResolvedApp;
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
    #[error("listen {address}: {} is not the socket appvisord bound any more (replaced by someone who can write its directory); nothing was changed", path.display())]
    Replaced {
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
    Open,
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
            Step::Open => "open the socket file",
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
    /// For a Unix socket: its file, removed on drop while it is still ours.
    unix_file: Option<SocketFile>,
}

/// The file of a Unix socket the daemon bound, as only a descriptor names
/// it: the directory it was bound in, opened once, and the file's name and
/// identity there (see the module's doc).
#[derive(Debug)]
struct SocketFile {
    dir: OwnedFd,
    name: OsString,
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    /// The file now at the socket's name, opened without following a link;
    /// `None` when none is there.
    fn open_entry(dir: &OwnedFd, name: &OsString) -> io::Result<Option<(OwnedFd, FileStat)>> {
        let fd = match nix::fcntl::openat(
            dir,
            name.as_os_str(),
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(nix::errno::Errno::ENOENT) => return Ok(None),
            Err(errno) => return Err(errno.into()),
        };
        let stat = nix::sys::stat::fstat(&fd)?;
        Ok(Some((fd, stat)))
    }

    /// The socket just bound at `name` in `dir`: it must be a socket of
    /// the daemon's own user with a single link, or someone replaced it.
    fn claim(
        address: &ListenAddress,
        dir: OwnedFd,
        name: OsString,
        path: &Path,
    ) -> Result<(SocketFile, OwnedFd), ListenError> {
        let io_error = |source| ListenError::Io {
            address: address.clone(),
            step: Step::Open,
            source,
        };
        let replaced = || ListenError::Replaced {
            address: address.clone(),
            path: path.to_owned(),
        };
        let (fd, stat) = SocketFile::open_entry(&dir, &name)
            .map_err(io_error)?
            .ok_or_else(replaced)?;
        let daemon = nix::unistd::geteuid().as_raw();
        if !is_socket(&stat) || stat.st_uid != daemon || stat.st_nlink != 1 {
            return Err(replaced());
        }
        let file = SocketFile {
            dir,
            name,
            path: path.to_owned(),
            dev: stat.st_dev,
            ino: stat.st_ino,
        };
        Ok((file, fd))
    }

    /// The file at the socket's name, opened, if it is still this one.
    fn reopen(&self, address: &ListenAddress) -> Result<OwnedFd, ListenError> {
        let entry =
            SocketFile::open_entry(&self.dir, &self.name).map_err(|source| ListenError::Io {
                address: address.clone(),
                step: Step::Open,
                source,
            })?;
        match entry {
            Some((fd, stat)) if self.is(&stat) => Ok(fd),
            _ => Err(ListenError::Replaced {
                address: address.clone(),
                path: self.path.clone(),
            }),
        }
    }

    fn is(&self, stat: &FileStat) -> bool {
        stat.st_dev == self.dev && stat.st_ino == self.ino
    }

    /// What names the file, for a hand-off: the file stays in place.
    fn disown(mut self) -> io::Result<HandedFile> {
        let dir = self.dir.try_clone()?;
        // An empty name is no directory entry: the drop removes nothing.
        let name = std::mem::take(&mut self.name);
        Ok(HandedFile {
            dir,
            name,
            path: self.path.clone(),
            dev: self.dev,
            ino: self.ino,
        })
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        // Removes the name only while it is still our socket's. The owner
        // may swap it in between; what goes then is an entry of a
        // directory they may change anyway, and never one elsewhere.
        match SocketFile::open_entry(&self.dir, &self.name) {
            Ok(Some((_, stat))) if self.is(&stat) => {
                if let Err(err) = nix::unistd::unlinkat(
                    &self.dir,
                    self.name.as_os_str(),
                    UnlinkatFlags::NoRemoveDir,
                ) {
                    tracing::debug!(path = %self.path.display(), error = %err, "removing a listen socket file");
                }
            }
            _ => {}
        }
    }
}

fn is_socket(stat: &FileStat) -> bool {
    SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFSOCK
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
                    if let Some(file) = &held.unix_file {
                        let fd = file.reopen(&spec.address)?;
                        set_owner_and_mode(&spec.address, &fd, uid, gid)?;
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

    /// Whether any of these sockets has a file (a Unix socket's): closing
    /// or replacing it works on the file system.
    pub fn has_files(&self) -> bool {
        self.sockets.iter().any(|h| h.unix_file.is_some())
    }

    /// Closes the sockets at once, so connections are refused from now
    /// on, and removes the Unix sockets' files on the blocking pool: a
    /// file's directory is one the app's owner may have put on a mount
    /// that hangs, and an unlink there on the async runtime would stall
    /// every app and the control socket. The handle says when the files
    /// are gone; `None` when there was nothing to remove, or no runtime to
    /// hand it to (then it was done on this thread).
    pub fn close(self) -> Option<tokio::task::JoinHandle<()>> {
        let files: Vec<SocketFile> = self
            .sockets
            .into_iter()
            .filter_map(|held| {
                let Held {
                    socket, unix_file, ..
                } = held;
                drop(socket);
                unix_file
            })
            .collect();
        if files.is_empty() {
            return None;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => Some(runtime.spawn_blocking(move || drop(files))),
            Err(_) => {
                drop(files);
                None
            }
        }
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

    /// The sockets for a hand-off, in `[[listen]]` order: each one's fd,
    /// address and Unix socket file, which stays in place for the process
    /// that takes them over ([`HeldSockets::taken_over`]).
    pub fn hand_over(self) -> io::Result<(Vec<HandedOver>, (u32, u32))> {
        let mut out = Vec::with_capacity(self.sockets.len());
        for mut held in self.sockets {
            let fd = held.socket.as_fd().try_clone_to_owned()?;
            let unix_file = match held.unix_file.take() {
                Some(file) => Some(file.disown()?),
                None => None,
            };
            out.push(HandedOver {
                fd,
                address: held.spec.address.to_string(),
                unix_file,
            });
        }
        Ok((out, self.owner))
    }

    /// Sockets handed over by [`HeldSockets::hand_over`], for `listen` (the
    /// same addresses, in the same order: the caller checks).
    pub fn taken_over(
        listen: &[ListenSpec],
        sockets: Vec<HandedOver>,
        owner: (u32, u32),
    ) -> HeldSockets {
        HeldSockets {
            sockets: listen
                .iter()
                .zip(sockets)
                .map(|(spec, handed)| Held {
                    spec: spec.clone(),
                    socket: Socket::from(handed.fd),
                    unix_file: handed.unix_file.map(|file| SocketFile {
                        dir: file.dir,
                        name: file.name,
                        path: file.path,
                        dev: file.dev,
                        ino: file.ino,
                    }),
                })
                .collect(),
            owner,
        }
    }
}

/// A [`HeldSockets::rebind`] for the blocking pool: one that works on
/// the file system (a Unix socket's file bound, replaced or removed), whose
/// directory may sit on a mount that hangs.
#[derive(Debug)]
pub struct Rebind {
    app: Arc<ResolvedApp>,
    previous: Option<HeldSockets>,
}

impl Rebind {
    /// The rebind `app` needs when `held` does not serve it and either
    /// side has a Unix socket: it takes `held`'s sockets along. `None`
    /// when `held` serves `app`, or when only TCP sockets are involved
    /// (bound at once: no path is touched).
    pub fn needed(app: &Arc<ResolvedApp>, held: &mut Option<HeldSockets>) -> Option<Rebind> {
        let listen = &app.spec.listen;
        if held
            .as_ref()
            .is_some_and(|h| h.serves(listen, app.uid, app.gid))
        {
            return None;
        }
        let files = listen
            .iter()
            .any(|l| matches!(l.address, ListenAddress::Unix(_)))
            || held.as_ref().is_some_and(HeldSockets::has_files);
        files.then(|| Rebind {
            app: Arc::clone(app),
            previous: held.take(),
        })
    }

    /// Binds, on the calling thread: call it on the blocking pool.
    pub fn run(self) -> Result<HeldSockets, ListenError> {
        let app = &self.app;
        HeldSockets::rebind(&app.spec, app.uid, app.gid, self.previous)
    }

    /// The sockets it was given, untouched: for a rebind that is not run.
    pub fn give_back(self) -> Option<HeldSockets> {
        self.previous
    }
}

/// One held socket in a hand-off.
#[derive(Debug)]
pub struct HandedOver {
    pub fd: std::os::fd::OwnedFd,
    /// The address as configured (its `Display`).
    pub address: String,
    pub unix_file: Option<HandedFile>,
}

/// A Unix socket's file in a hand-off: the directory it was bound in (an
/// fd, so the owner cannot swap the path under it), its name there and
/// identity.
#[derive(Debug)]
pub struct HandedFile {
    pub dir: OwnedFd,
    pub name: OsString,
    pub path: PathBuf,
    pub dev: u64,
    pub ino: u64,
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
    /// False once handed over: the file outlives this value.
    remove_on_drop: bool,
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
            remove_on_drop: true,
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

    /// The socket's fd for a hand-off; the file stays.
    pub fn hand_over(mut self) -> io::Result<std::os::fd::OwnedFd> {
        let fd = self.socket.as_fd().try_clone_to_owned()?;
        self.remove_on_drop = false;
        Ok(fd)
    }

    /// A socket handed over by [`ProbeSocket::hand_over`], bound at `path`.
    pub fn taken_over(fd: std::os::fd::OwnedFd, path: PathBuf) -> ProbeSocket {
        ProbeSocket {
            socket: Socket::from(fd),
            path,
            remove_on_drop: true,
        }
    }
}

impl Drop for ProbeSocket {
    fn drop(&mut self) {
        if !self.remove_on_drop {
            return;
        }
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
        ListenAddress::Unix(path) => BoundUnix::bind(spec, path)?.hold(uid, gid),
    }
}

/// A Unix listen socket bound but not yet handed to the app's user: its
/// file is still root's, mode as the daemon's umask left it.
struct BoundUnix {
    spec: ListenSpec,
    socket: Socket,
    path: PathBuf,
    dir: OwnedFd,
    name: OsString,
}

impl BoundUnix {
    /// Opens the directory of `path` once, replaces a stale socket file
    /// there and binds.
    fn bind(spec: &ListenSpec, path: &Path) -> Result<BoundUnix, ListenError> {
        let address = &spec.address;
        let io_err = |step| {
            move |source| ListenError::Io {
                address: address.clone(),
                step,
                source,
            }
        };
        let parent = path.parent().unwrap_or(Path::new("/"));
        let name = path
            .file_name()
            .ok_or_else(|| io_err(Step::Bind)(io::Error::from_raw_os_error(libc::EINVAL)))?
            .to_owned();
        let dir = nix::fcntl::open(
            parent,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|errno| match errno {
            nix::errno::Errno::ENOENT | nix::errno::Errno::ENOTDIR => ListenError::NoDirectory {
                address: address.clone(),
                dir: parent.to_owned(),
            },
            errno => io_err(Step::Bind)(errno.into()),
        })?;
        remove_stale(address, path, &dir, &name)?;
        let socket = Socket::new(Domain::UNIX, Type::STREAM, None).map_err(io_err(Step::Create))?;
        let sockaddr = SockAddr::unix(path).map_err(io_err(Step::Bind))?;
        socket.bind(&sockaddr).map_err(|source| {
            if source.kind() == io::ErrorKind::AddrInUse {
                unix_in_use(address, path)
            } else {
                io_err(Step::Bind)(source)
            }
        })?;
        Ok(BoundUnix {
            spec: spec.clone(),
            socket,
            path: path.to_owned(),
            dir,
            name,
        })
    }

    /// Checks the file bound is still the socket, hands it to `uid`:`gid`
    /// with mode 0660 through its descriptor, and listens.
    fn hold(self, uid: u32, gid: u32) -> Result<Held, ListenError> {
        let address = &self.spec.address;
        let (file, fd) = SocketFile::claim(address, self.dir, self.name, &self.path)?;
        // Owned from here on, so an error below removes the file.
        let held = Held {
            spec: self.spec,
            socket: self.socket,
            unix_file: Some(file),
        };
        set_owner_and_mode(&held.spec.address, &fd, uid, gid)?;
        held.socket
            .listen(BACKLOG)
            .map_err(|source| ListenError::Io {
                address: held.spec.address.clone(),
                step: Step::Listen,
                source,
            })?;
        Ok(held)
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

/// Removes a socket file named `name` in `dir` (the directory of `path`)
/// that nobody listens on (a crashed daemon's); refuses to touch a live
/// socket or anything else.
fn remove_stale(
    address: &ListenAddress,
    path: &Path,
    dir: &OwnedFd,
    name: &OsString,
) -> Result<(), ListenError> {
    let io_error = |source: io::Error| ListenError::Io {
        address: address.clone(),
        step: Step::RemoveStale,
        source,
    };
    let stat = match nix::sys::stat::fstatat(dir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(stat) => stat,
        Err(nix::errno::Errno::ENOENT) => return Ok(()),
        Err(errno) => return Err(io_error(errno.into())),
    };
    if !is_socket(&stat) {
        return Err(ListenError::NotASocket {
            address: address.clone(),
            path: path.to_owned(),
        });
    }
    // Whether someone listens, asked through the path: connecting changes
    // nothing, whatever the path reaches. Without blocking: a listener
    // whose backlog is full (one that never accepts, put there by whoever
    // may write the directory) would hold a blocking connect forever.
    match connect_nonblocking(path) {
        Ok(()) => Err(unix_in_use(address, path)),
        Err(err) if err.kind() == io::ErrorKind::WouldBlock => Err(unix_in_use(address, path)),
        Err(_) => nix::unistd::unlinkat(dir, name.as_os_str(), UnlinkatFlags::NoRemoveDir)
            .map_err(|errno| io_error(errno.into())),
    }
}

/// Connects a non-blocking Unix stream socket to `path`: `WouldBlock`
/// when a listener is there but its backlog is full.
fn connect_nonblocking(path: &Path) -> io::Result<()> {
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    socket.connect(&SockAddr::unix(path)?)
}

/// Mode 0660, then owner `uid`:`gid`, of the open socket file `fd`,
/// through `/proc/self/fd/N`: the kernel follows that link to the opened
/// file itself, whatever is at its name by now. (An `O_PATH` descriptor
/// takes no `fchmod`, and `fchmodat2` with `AT_EMPTY_PATH` needs Linux 6.6.)
fn set_owner_and_mode(
    address: &ListenAddress,
    fd: &OwnedFd,
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
    let opened = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    std::fs::set_permissions(&opened, std::fs::Permissions::from_mode(UNIX_SOCKET_MODE))
        .map_err(io_err(Step::Chmod))?;
    std::os::unix::fs::chown(&opened, Some(uid), Some(gid)).map_err(io_err(Step::Chown))
}

#[cfg(test)]
mod tests;
