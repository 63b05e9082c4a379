//! Which paths a rule may reach: a path named in root's app file may pass
//! through directories the app's owner (or anyone but root) can change, and
//! from there a symlink could lead anywhere, `current -> /` included. So a
//! rule's path, fully resolved, must stay inside its *anchor*: the last
//! directory on the path that was reached through directories only root can
//! change. `/srv/shop/current`, with `/srv/shop` owned by `shop`, is anchored
//! at `/srv/shop`: the owner may point `current` at any release below it,
//! never above.
//!
//! [`anchor`] is pure: the file system comes in as a [`Lookup`]. The exec
//! helper uses [`open_anchored`], which opens the path once and reports
//! where the opened file really is beside its anchor, so the rule it builds
//! is on exactly what was checked. A path that leaves its anchor is refused
//! unless it leads only to what the system rules grant already; that
//! judgement needs the rules' rights and is `sandbox::landlock`'s.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

/// Symlinks followed before giving up, as the kernel's own limit.
const MAX_SYMLINKS: usize = 40;

/// One directory entry, as `lstat` and `readlink` see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: EntryKind,
    pub uid: u32,
    pub mode: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    Directory,
    Symlink(PathBuf),
    Other,
}

impl Entry {
    /// Only root can add, remove or rename entries in it: root owns it and
    /// neither its group nor others may write it. (ACLs are not read.)
    fn is_root_controlled(&self) -> bool {
        self.kind == EntryKind::Directory && self.uid == 0 && self.mode & 0o022 == 0
    }
}

/// The file system as [`anchor`] sees it.
pub trait Lookup {
    /// `lstat`, and `readlink` for a symlink.
    fn entry(&self, path: &Path) -> io::Result<Entry>;
}

/// The real file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealFs;

impl Lookup for RealFs {
    fn entry(&self, path: &Path) -> io::Result<Entry> {
        let meta = std::fs::symlink_metadata(path)?;
        let kind = if meta.file_type().is_symlink() {
            EntryKind::Symlink(std::fs::read_link(path)?)
        } else if meta.is_dir() {
            EntryKind::Directory
        } else {
            EntryKind::Other
        };
        Ok(Entry {
            kind,
            uid: meta.uid(),
            mode: meta.mode(),
        })
    }
}

/// The real file system, each path looked up once: one Landlock pass
/// resolves a few dozen rules whose paths share their first directories
/// (`/`, `/usr`, `/srv/shop`, …), and [`anchor`] looks at each directory
/// on a path twice (as the entry it follows, then as the directory it
/// reads). Only entries of root-controlled directories are looked at, and
/// no one but root can change those, so an answer given once stays true
/// for the pass; what a rule is built on is what the open then finds.
#[derive(Debug, Default)]
pub struct OnceFs {
    seen: std::cell::RefCell<std::collections::HashMap<PathBuf, Result<Entry, i32>>>,
}

impl Lookup for OnceFs {
    fn entry(&self, path: &Path) -> io::Result<Entry> {
        if let Some(seen) = self.seen.borrow().get(path) {
            return seen.clone().map_err(io::Error::from_raw_os_error);
        }
        let entry = RealFs.entry(path);
        let remembered = match &entry {
            Ok(entry) => Ok(entry.clone()),
            Err(error) => match error.raw_os_error() {
                Some(errno) => Err(errno),
                None => return entry,
            },
        };
        self.seen.borrow_mut().insert(path.to_owned(), remembered);
        entry
    }
}

/// Why a rule's path was refused.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not absolute")]
    Relative { path: PathBuf },
    #[error("{path}: too many symlinks")]
    Loop { path: PathBuf },
    #[error(
        "{path} resolves to {resolved}, outside {anchor} (the last directory on its path that only root can change)"
    )]
    Escapes {
        path: PathBuf,
        resolved: PathBuf,
        anchor: PathBuf,
    },
}

impl PathError {
    /// The errno to report, 0 when none applies.
    pub fn errno(&self) -> i32 {
        match self {
            PathError::Io { source, .. } => source.raw_os_error().unwrap_or(0),
            PathError::Loop { .. } => nix::libc::ELOOP,
            PathError::Relative { .. } | PathError::Escapes { .. } => 0,
        }
    }
}

/// The anchor of `path`: follows it from `/` as the kernel would, and stops
/// at the first directory whose entries someone other than root can change.
/// When every directory on the way is root's, the anchor is the resolved
/// path itself.
pub fn anchor(path: &Path, fs: &dyn Lookup) -> Result<PathBuf, PathError> {
    walk(path, fs).map(|walk| walk.anchor)
}

/// Where [`walk`] stopped.
#[derive(Debug)]
struct Walk {
    anchor: PathBuf,
    /// Every directory on the way was root-controlled and no link in
    /// `/proc` was followed, so `anchor` is the path resolved in full, and
    /// only root can make it lead elsewhere.
    resolved: bool,
}

/// [`anchor`], telling also whether the walk resolved the whole path.
fn walk(path: &Path, fs: &dyn Lookup) -> Result<Walk, PathError> {
    if !path.is_absolute() {
        return Err(PathError::Relative { path: path.into() });
    }
    let io_error = |at: &Path, source| PathError::Io {
        path: at.to_owned(),
        source,
    };
    let mut todo: VecDeque<OsString> = VecDeque::new();
    push_front(&mut todo, path);
    let mut current = PathBuf::from("/");
    let mut links = 0;
    // procfs's links (`/proc/self/cwd`, `/proc/PID/root`, `fd/N`) lead to
    // a process's file, which their text need not name: a walk through
    // one is not the kernel's answer.
    let mut through_proc = false;
    while let Some(name) = todo.pop_front() {
        match name.to_str() {
            Some("/") => {
                current = PathBuf::from("/");
                continue;
            }
            Some(".") => continue,
            Some("..") => {
                current.pop();
                continue;
            }
            _ => {}
        }
        let dir = fs.entry(&current).map_err(|e| io_error(&current, e))?;
        if !dir.is_root_controlled() {
            return Ok(Walk {
                anchor: current,
                resolved: false,
            });
        }
        let next = current.join(&name);
        match fs.entry(&next).map_err(|e| io_error(&next, e))?.kind {
            EntryKind::Symlink(target) => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(PathError::Loop { path: path.into() });
                }
                through_proc |= next.starts_with("/proc");
                push_front(&mut todo, &target);
            }
            EntryKind::Directory | EntryKind::Other => current = next,
        }
    }
    Ok(Walk {
        anchor: current,
        resolved: !through_proc,
    })
}

/// Queues the components of `path` before what is left to resolve; an
/// absolute path restarts at `/`.
fn push_front(todo: &mut VecDeque<OsString>, path: &Path) {
    for component in path.components().rev() {
        let name = match component {
            Component::RootDir => OsString::from("/"),
            Component::CurDir => OsString::from("."),
            Component::ParentDir => OsString::from(".."),
            Component::Normal(name) => name.to_owned(),
            Component::Prefix(_) => continue,
        };
        todo.push_front(name);
    }
}

/// Fails unless `resolved` lies inside `anchor`.
pub fn check_inside(path: &Path, resolved: &Path, anchor: &Path) -> Result<(), PathError> {
    if resolved.starts_with(anchor) {
        Ok(())
    } else {
        Err(PathError::Escapes {
            path: path.into(),
            resolved: resolved.into(),
            anchor: anchor.into(),
        })
    }
}

/// A rule's path, opened (`O_PATH`, following symlinks): where the opened
/// file really is, and the anchor it was meant to stay inside.
#[derive(Debug)]
pub struct Opened {
    pub fd: OwnedFd,
    /// Where the opened file really is.
    pub resolved: PathBuf,
    /// The anchor of the path as named (see [`anchor`]).
    pub anchor: PathBuf,
}

impl Opened {
    /// Whether the opened file lies inside the anchor.
    pub fn is_inside(&self) -> bool {
        self.resolved.starts_with(&self.anchor)
    }

    /// Fails unless the opened file, reached through `path`, lies inside
    /// the anchor.
    pub fn check_inside(&self, path: &Path) -> Result<(), PathError> {
        check_inside(path, &self.resolved, &self.anchor)
    }
}

impl fmt::Display for Opened {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.resolved.display())
    }
}

/// Opens `path` for a Landlock rule: computes its anchor (looking up
/// directories through `fs`) and opens it once. Whatever is swapped
/// afterwards, a rule built on the returned descriptor is on the file whose
/// place was reported.
pub fn open_anchored(path: &Path, fs: &dyn Lookup) -> Result<Opened, PathError> {
    open(path, path, nix::fcntl::OFlag::empty(), fs)
}

/// Opens the current directory, entered through `path`, the same way.
pub fn open_cwd_anchored(path: &Path, fs: &dyn Lookup) -> Result<Opened, PathError> {
    open(path, Path::new("."), nix::fcntl::OFlag::O_DIRECTORY, fs)
}

/// [`open_anchored`], failing unless the file opened is inside the anchor.
pub fn open_confined(path: &Path) -> Result<Opened, PathError> {
    let opened = open_anchored(path, &RealFs)?;
    opened.check_inside(path)?;
    Ok(opened)
}

/// Opens `open` (`O_PATH`, following symlinks) and computes the anchor of
/// `path`.
fn open(
    path: &Path,
    open: &Path,
    flags: nix::fcntl::OFlag,
    fs: &dyn Lookup,
) -> Result<Opened, PathError> {
    let walk = walk(path, fs)?;
    let io = |source: io::Error| PathError::Io {
        path: path.into(),
        source,
    };
    let fd = nix::fcntl::open(
        open,
        flags | nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| io(io::Error::from(e)))?;
    // A path resolved in full through root's directories alone (`/usr`,
    // `/etc/ssl`, most system rules) led the open where the walk went:
    // no one else can change an entry on the way. Any other is asked of
    // the kernel, a path lookup in /proc that cost more than the open.
    let resolved = if walk.resolved && open == path {
        walk.anchor.clone()
    } else {
        fd_path(&fd).map_err(io)?
    };
    Ok(Opened {
        fd,
        resolved,
        anchor: walk.anchor,
    })
}

/// The path the kernel gives for an open file: `/proc/self/fd/N`. A file
/// deleted since (the kernel appends " (deleted)") is refused.
fn fd_path(fd: &OwnedFd) -> io::Result<PathBuf> {
    let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
    if !link.is_absolute() || link.to_string_lossy().ends_with(" (deleted)") {
        return Err(io::Error::from_raw_os_error(nix::libc::ENOENT));
    }
    Ok(link)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// A file system of (path, owner, mode, symlink target): directories
    /// and symlinks.
    struct FakeFs(BTreeMap<PathBuf, Entry>);

    impl FakeFs {
        fn new(entries: &[(&str, u32, u32, Option<&str>)]) -> FakeFs {
            let mut map = BTreeMap::new();
            map.insert(
                PathBuf::from("/"),
                Entry {
                    kind: EntryKind::Directory,
                    uid: 0,
                    mode: 0o755,
                },
            );
            for (path, uid, mode, link) in entries {
                let kind = match link {
                    Some(target) => EntryKind::Symlink(target.into()),
                    None => EntryKind::Directory,
                };
                map.insert(
                    PathBuf::from(path),
                    Entry {
                        kind,
                        uid: *uid,
                        mode: *mode,
                    },
                );
            }
            FakeFs(map)
        }
    }

    impl Lookup for FakeFs {
        fn entry(&self, path: &Path) -> io::Result<Entry> {
            self.0
                .get(path)
                .cloned()
                .ok_or_else(|| io::Error::from_raw_os_error(nix::libc::ENOENT))
        }
    }

    const SHOP: u32 = 1001;

    fn host() -> FakeFs {
        FakeFs::new(&[
            ("/srv", 0, 0o755, None),
            ("/srv/shop", SHOP, 0o755, None),
            ("/srv/shop/releases", SHOP, 0o755, None),
            ("/srv/shop/releases/42", SHOP, 0o755, None),
            ("/srv/shop/current", SHOP, 0o777, Some("releases/42")),
            ("/srv/shop/root", SHOP, 0o777, Some("/")),
            ("/srv/shop/up", SHOP, 0o777, Some("../blog")),
            ("/srv/blog", 0, 0o755, None),
            ("/srv/group", 0, 0o775, None),
            ("/srv/group/app", 0, 0o755, None),
            ("/data", 0, 0o755, None),
            ("/data/shop", SHOP, 0o755, None),
            ("/srv/linked", 0, 0o777, Some("/data/shop")),
            ("/usr", 0, 0o755, None),
            ("/loop", 0, 0o777, Some("/loop")),
        ])
    }

    #[test]
    fn anchors_stop_at_the_first_directory_root_does_not_control() {
        let fs = host();
        let cases = [
            // The owner's directory: everything below is theirs to change.
            ("/srv/shop/current", Ok("/srv/shop")),
            ("/srv/shop/root", Ok("/srv/shop")),
            ("/srv/shop/up", Ok("/srv/shop")),
            // Only root's directories: the path itself.
            ("/usr", Ok("/usr")),
            ("/srv/blog", Ok("/srv/blog")),
            // A group-writable directory is not root's alone.
            ("/srv/group/app", Ok("/srv/group")),
            // Root's symlink is followed: its target is root's choice.
            ("/srv/linked", Ok("/data/shop")),
            ("/srv/./shop/../shop/current", Ok("/srv/shop")),
            ("/loop", Err("/loop: too many symlinks")),
            (
                "/srv/missing",
                Err("/srv/missing: No such file or directory (os error 2)"),
            ),
            ("srv/shop", Err("srv/shop is not absolute")),
        ];
        for (path, want) in cases {
            let got = anchor(Path::new(path), &fs).map_err(|e| e.to_string());
            assert_eq!(
                got,
                want.map(PathBuf::from).map_err(str::to_owned),
                "{path}"
            );
        }
    }

    #[test]
    fn a_resolved_path_must_stay_inside_its_anchor() {
        let anchor = Path::new("/srv/shop");
        assert!(check_inside(
            Path::new("/srv/shop/current"),
            Path::new("/srv/shop/releases/42"),
            anchor
        )
        .is_ok());
        assert!(check_inside(Path::new("/srv/shop/x"), anchor, anchor).is_ok());
        for resolved in ["/", "/srv", "/srv/shopping", "/etc"] {
            let error = check_inside(Path::new("/srv/shop/current"), Path::new(resolved), anchor)
                .unwrap_err();
            assert_eq!(
                error.to_string(),
                format!(
                    "/srv/shop/current resolves to {resolved}, outside /srv/shop \
                     (the last directory on its path that only root can change)"
                )
            );
        }
    }

    /// Through root's directories alone, the walk's answer is taken
    /// without asking the kernel: it must be the kernel's.
    #[test]
    fn a_path_resolved_through_roots_directories_is_where_the_kernel_opens() {
        for path in [
            "/usr/lib",
            "/etc/passwd",
            "/tmp",
            "/bin",
            "/usr/bin/env",
            "/proc",
        ] {
            let path = Path::new(path);
            let walked = walk(path, &RealFs).unwrap();
            assert!(walked.resolved, "{}: {walked:?}", path.display());
            let opened = open_anchored(path, &RealFs).unwrap();
            assert_eq!(opened.resolved, walked.anchor);
            assert_eq!(
                opened.resolved,
                fd_path(&opened.fd).unwrap(),
                "{}",
                path.display()
            );
        }
    }

    /// Through a link in /proc, the kernel says where the open went: the
    /// link's text need not name the file it leads to.
    #[test]
    fn a_path_through_a_proc_link_is_asked_of_the_kernel() {
        for path in ["/proc/self/cwd", "/proc/self/fd"] {
            let path = Path::new(path);
            assert!(!walk(path, &RealFs).unwrap().resolved, "{}", path.display());
            let opened = open_anchored(path, &RealFs).unwrap();
            assert_eq!(opened.resolved, fd_path(&opened.fd).unwrap());
        }
        let cwd = open_anchored(Path::new("/proc/self/cwd"), &RealFs).unwrap();
        assert_eq!(cwd.resolved, std::env::current_dir().unwrap());
    }

    /// Through a directory someone else may change, the kernel says where
    /// the open went.
    #[test]
    fn a_path_through_someone_elses_directory_is_asked_of_the_kernel() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("release")).unwrap();
        let link = dir.path().join("current");
        std::os::unix::fs::symlink("release", &link).unwrap();
        let walked = walk(&link, &RealFs).unwrap();
        assert!(!walked.resolved, "{walked:?}");
        let opened = open_anchored(&link, &RealFs).unwrap();
        assert_eq!(
            opened.resolved,
            dir.path().canonicalize().unwrap().join("release")
        );
    }

    #[test]
    fn once_fs_answers_each_path_once_and_as_the_real_one_does() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("gone");
        std::fs::create_dir(&gone).unwrap();
        let missing = dir.path().join("missing");
        let fs = OnceFs::default();
        assert_eq!(fs.entry(&gone).unwrap(), RealFs.entry(&gone).unwrap());
        assert_eq!(
            fs.entry(&missing).unwrap_err().raw_os_error(),
            Some(nix::libc::ENOENT)
        );
        // Changed since: the pass keeps its first answer for both.
        std::fs::remove_dir(&gone).unwrap();
        std::fs::create_dir(&missing).unwrap();
        assert_eq!(fs.entry(&gone).unwrap().kind, EntryKind::Directory);
        assert_eq!(
            fs.entry(&missing).unwrap_err().raw_os_error(),
            Some(nix::libc::ENOENT)
        );
        // Anchors through it are the real file system's.
        for path in ["/usr/lib", "/proc/self/fd", "/etc/passwd", "/tmp"] {
            let path = Path::new(path);
            assert_eq!(
                anchor(path, &OnceFs::default()).unwrap(),
                anchor(path, &RealFs).unwrap(),
                "{}",
                path.display()
            );
        }
    }
}
