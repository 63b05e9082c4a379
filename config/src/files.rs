//! Reading files a root daemon cannot take on faith: app files that a CM
//! tool links into place, and files an app's owner can touch (`env_files`,
//! a venv's `pyvenv.cfg`).
//!
//! Two readers, both blocking (callers run them off the async runtime, with
//! a deadline):
//!
//! - [`read_bounded`] opens with `O_NONBLOCK`, so a FIFO never blocks the
//!   open, checks with `fstat` that it got a regular file, and reads at most
//!   a given size, so a sparse 2 GiB file costs nothing;
//! - [`read_root_owned`] also refuses every symbolic link on the way and
//!   trusts the file only the way sshd's `StrictModes` does: the file and
//!   every directory above it owned by root and writable by neither group
//!   nor others. It walks from `/` one directory fd at a time, judging each
//!   directory before looking inside it, so nobody but root can swap what
//!   it opens next.
//!
//! Never interprets contents, and never puts any of them in an error: an
//! error names the path at fault and what is wrong with it.

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, OFlag, AT_FDCWD};
use nix::sys::stat::{fstat, fstatat, FileStat, Mode, SFlag};

/// Why a file (or a directory above it) is not trusted as root's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Distrust {
    /// Owned by someone other than root.
    Owner { uid: u32 },
    /// Its group may write it (mode shown).
    GroupWritable { mode: u32 },
    /// Anyone may write it (mode shown).
    WorldWritable { mode: u32 },
}

impl std::fmt::Display for Distrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Distrust::Owner { uid } => write!(f, "is owned by uid {uid}, not root"),
            Distrust::GroupWritable { mode } => {
                write!(f, "is writable by its group (mode {:04o})", mode & 0o7777)
            }
            Distrust::WorldWritable { mode } => {
                write!(f, "is writable by others (mode {:04o})", mode & 0o7777)
            }
        }
    }
}

/// sshd's `StrictModes` judgement of one file or directory: root's own, and
/// writable by nobody else. A sticky world-writable directory such as
/// `/tmp` is refused too: anyone may create names in it.
pub fn distrust(uid: u32, mode: u32) -> Option<Distrust> {
    if uid != 0 {
        Some(Distrust::Owner { uid })
    } else if mode & 0o002 != 0 {
        Some(Distrust::WorldWritable { mode })
    } else if mode & 0o020 != 0 {
        Some(Distrust::GroupWritable { mode })
    } else {
        None
    }
}

/// What a file system object is, in words.
pub fn kind(mode: u32) -> &'static str {
    match SFlag::from_bits_truncate(mode & SFlag::S_IFMT.bits()) {
        SFlag::S_IFREG => "regular file",
        SFlag::S_IFDIR => "directory",
        SFlag::S_IFLNK => "symbolic link",
        SFlag::S_IFIFO => "FIFO",
        SFlag::S_IFSOCK => "socket",
        SFlag::S_IFCHR => "character device",
        SFlag::S_IFBLK => "block device",
        _ => "file of unknown type",
    }
}

/// A file that could not be read as asked. Each names the path at fault,
/// which may be a directory above the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileError {
    Os {
        path: PathBuf,
        errno: Errno,
    },
    Symlink {
        path: PathBuf,
    },
    WrongKind {
        path: PathBuf,
        kind: &'static str,
        wanted: &'static str,
    },
    TooBig {
        path: PathBuf,
        size: u64,
        max: u64,
    },
    Untrusted {
        path: PathBuf,
        why: Distrust,
    },
    NotPlain {
        path: PathBuf,
    },
    NotUtf8 {
        path: PathBuf,
    },
}

impl FileError {
    /// The file (or a directory on the way to it) does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            FileError::Os {
                errno: Errno::ENOENT,
                ..
            }
        )
    }

    /// The file is there but not trusted as root's own.
    pub fn is_untrusted(&self) -> bool {
        matches!(
            self,
            FileError::Untrusted { .. } | FileError::Symlink { .. }
        )
    }

    /// An error of std's file API on `path`.
    pub fn from_io(path: &Path, error: &std::io::Error) -> FileError {
        FileError::Os {
            path: path.to_owned(),
            errno: error.raw_os_error().map_or(Errno::EIO, Errno::from_raw),
        }
    }

    /// The path at fault: the file, or a directory above it.
    pub fn path(&self) -> &Path {
        match self {
            FileError::Os { path, .. }
            | FileError::Symlink { path }
            | FileError::WrongKind { path, .. }
            | FileError::TooBig { path, .. }
            | FileError::Untrusted { path, .. }
            | FileError::NotPlain { path }
            | FileError::NotUtf8 { path } => path,
        }
    }

    /// This error inside a message that already names `file`: "it is a
    /// FIFO, not a regular file" when `file` is at fault, or naming the
    /// directory that is.
    pub fn describe(&self, file: &Path) -> String {
        let predicate = self.predicate();
        match (self, self.path() == file) {
            (FileError::Os { .. }, true) => predicate,
            (FileError::Os { .. }, false) => format!("{}: {predicate}", self.path().display()),
            (_, true) => format!("it {predicate}"),
            (_, false) => format!("{} {predicate}", self.path().display()),
        }
    }

    fn predicate(&self) -> String {
        match self {
            FileError::Os { errno, .. } => format!("{} (os error {})", errno.desc(), *errno as i32),
            FileError::Symlink { .. } => {
                "is a symbolic link, which is never followed here".to_owned()
            }
            FileError::WrongKind { kind, wanted, .. } => format!("is a {kind}, not a {wanted}"),
            FileError::TooBig { size, max, .. } => {
                format!("is {}, more than the {} allowed", human(*size), human(*max))
            }
            FileError::Untrusted { why, .. } => why.to_string(),
            FileError::NotPlain { .. } => {
                "is not an absolute path without . or .. in it".to_owned()
            }
            FileError::NotUtf8 { .. } => "is not UTF-8 text".to_owned(),
        }
    }
}

impl std::fmt::Display for FileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FileError::Os { .. } => write!(f, "{}: {}", self.path().display(), self.predicate()),
            _ => write!(f, "{} {}", self.path().display(), self.predicate()),
        }
    }
}

impl std::error::Error for FileError {}

/// `bytes` read from `path` as text.
pub fn into_text(path: &Path, bytes: Vec<u8>) -> Result<String, FileError> {
    String::from_utf8(bytes).map_err(|_| FileError::NotUtf8 {
        path: path.to_owned(),
    })
}

fn human(bytes: u64) -> String {
    bytesize::ByteSize::b(bytes).to_string()
}

/// Reads the regular file at `path`, following symbolic links, without ever
/// blocking on a FIFO and refusing files over `max` bytes.
pub fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, FileError> {
    let fd = open_regular(AT_FDCWD, path, path, OFlag::empty())?;
    read_to_max(fd, path, max)
}

/// Reads the regular file at `path` if it, and every directory above it, is
/// root's own and writable by nobody else, with no symbolic link anywhere
/// on the way; refuses files over `max` bytes.
pub fn read_root_owned(path: &Path, max: u64) -> Result<Vec<u8>, FileError> {
    let (parents, name) = plain_components(path)?;
    let mut walked = PathBuf::from("/");
    let mut dir = open_dir(AT_FDCWD, Path::new("/"), &walked)?;
    for component in parents {
        walked.push(component);
        dir = open_dir(dir.as_fd(), Path::new(component), &walked)?;
    }
    walked.push(name);
    let fd = open_regular(dir.as_fd(), Path::new(name), &walked, OFlag::O_NOFOLLOW)?;
    let stat = fstat(&fd).map_err(|errno| os(&walked, errno))?;
    trust(&stat, &walked)?;
    read_to_max(fd, &walked, max)
}

/// `/a/b/c` as (["a", "b"], "c"); refuses relative paths and `.` or `..`,
/// whose meaning would depend on links the walk never follows.
fn plain_components(path: &Path) -> Result<(Vec<&OsStr>, &OsStr), FileError> {
    let not_plain = || FileError::NotPlain {
        path: path.to_owned(),
    };
    let mut components = path.components();
    if components.next() != Some(Component::RootDir) {
        return Err(not_plain());
    }
    let mut names = Vec::new();
    for component in components {
        match component {
            Component::Normal(name) => names.push(name),
            _ => return Err(not_plain()),
        }
    }
    // `Path::components` drops interior `.`s; the text must not have any.
    if path
        .as_os_str()
        .as_encoded_bytes()
        .split(|b| *b == b'/')
        .any(|part| part == b".")
    {
        return Err(not_plain());
    }
    let name = names.pop().ok_or_else(not_plain)?;
    Ok((names, name))
}

fn os(path: &Path, errno: Errno) -> FileError {
    FileError::Os {
        path: path.to_owned(),
        errno,
    }
}

/// The directory `name` under `dir`, not through a symbolic link, once it
/// is judged root's own.
fn open_dir<Fd: AsFd>(dir: Fd, name: &Path, shown: &Path) -> Result<OwnedFd, FileError> {
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = match openat(dir.as_fd(), name, flags, Mode::empty()) {
        Ok(fd) => fd,
        // ENOTDIR: a symbolic link (O_NOFOLLOW) or no directory at all.
        Err(Errno::ENOTDIR) => return Err(wrong_kind(dir, name, shown, "directory")),
        Err(errno) => return Err(os(shown, errno)),
    };
    let stat = fstat(&fd).map_err(|errno| os(shown, errno))?;
    trust(&stat, shown)?;
    Ok(fd)
}

/// Opens `name` under `dir` for reading without blocking, after checking
/// (without following a final link when `O_NOFOLLOW` is given) that it is
/// a regular file: opening a device node can have effects of its own.
fn open_regular<Fd: AsFd>(
    dir: Fd,
    name: &Path,
    shown: &Path,
    nofollow: OFlag,
) -> Result<OwnedFd, FileError> {
    let at_flags = if nofollow.is_empty() {
        nix::fcntl::AtFlags::empty()
    } else {
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW
    };
    let before = fstatat(dir.as_fd(), name, at_flags).map_err(|errno| os(shown, errno))?;
    check_kind(&before, shown, "regular file")?;
    let flags = OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC | nofollow;
    let fd = match openat(dir.as_fd(), name, flags, Mode::empty()) {
        Ok(fd) => fd,
        // Replaced by a link since the fstatat.
        Err(Errno::ELOOP) if !nofollow.is_empty() => {
            return Err(FileError::Symlink {
                path: shown.to_owned(),
            })
        }
        Err(errno) => return Err(os(shown, errno)),
    };
    // What was opened may differ from what was judged a moment ago.
    let after = fstat(&fd).map_err(|errno| os(shown, errno))?;
    check_kind(&after, shown, "regular file")?;
    Ok(fd)
}

/// A `WrongKind` (or `Symlink`) error for `name` under `dir`, saying what
/// it is instead.
fn wrong_kind<Fd: AsFd>(dir: Fd, name: &Path, shown: &Path, wanted: &'static str) -> FileError {
    match fstatat(dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(stat) => check_kind(&stat, shown, wanted)
            .err()
            .unwrap_or_else(|| os(shown, Errno::ENOTDIR)),
        Err(errno) => os(shown, errno),
    }
}

fn check_kind(stat: &FileStat, shown: &Path, wanted: &'static str) -> Result<(), FileError> {
    let found = kind(stat.st_mode);
    if found == wanted {
        Ok(())
    } else if found == "symbolic link" {
        Err(FileError::Symlink {
            path: shown.to_owned(),
        })
    } else {
        Err(FileError::WrongKind {
            path: shown.to_owned(),
            kind: found,
            wanted,
        })
    }
}

fn trust(stat: &FileStat, shown: &Path) -> Result<(), FileError> {
    match distrust(stat.st_uid, stat.st_mode) {
        None => Ok(()),
        Some(why) => Err(FileError::Untrusted {
            path: shown.to_owned(),
            why,
        }),
    }
}

/// Reads an open regular file to its end, refusing it once it is larger
/// than `max`: by its size first, then by what is actually read (a file
/// can grow while it is read).
fn read_to_max(fd: OwnedFd, shown: &Path, max: u64) -> Result<Vec<u8>, FileError> {
    let size = fstat(&fd).map_err(|errno| os(shown, errno))?.st_size;
    let size = u64::try_from(size).unwrap_or(0);
    let too_big = |size| FileError::TooBig {
        path: shown.to_owned(),
        size,
        max,
    };
    if size > max {
        return Err(too_big(size));
    }
    let mut bytes = vec![0; usize::try_from(size).unwrap_or(0)];
    let mut filled = 0;
    loop {
        if filled == bytes.len() {
            if bytes.len() as u64 > max {
                return Err(too_big(bytes.len() as u64));
            }
            // One byte past the expected end tells growth from EOF.
            bytes.resize(bytes.len() + 4096, 0);
        }
        match nix::unistd::read(&fd, &mut bytes[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(Errno::EINTR) => continue,
            Err(errno) => return Err(os(shown, errno)),
        }
    }
    if filled as u64 > max {
        return Err(too_big(filled as u64));
    }
    bytes.truncate(filled);
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::{symlink, PermissionsExt};

    use super::*;

    #[test]
    fn strict_modes_judgements() {
        let cases = [
            (0, 0o040755, None),
            (0, 0o100644, None),
            (0, 0o100600, None),
            (0, 0o101755, None),
            (1001, 0o040755, Some(Distrust::Owner { uid: 1001 })),
            (1001, 0o100600, Some(Distrust::Owner { uid: 1001 })),
            (
                0,
                0o040775,
                Some(Distrust::GroupWritable { mode: 0o040775 }),
            ),
            (
                0,
                0o100664,
                Some(Distrust::GroupWritable { mode: 0o100664 }),
            ),
            (
                0,
                0o040757,
                Some(Distrust::WorldWritable { mode: 0o040757 }),
            ),
            // /tmp: sticky does not make a world-writable directory safe.
            (
                0,
                0o041777,
                Some(Distrust::WorldWritable { mode: 0o041777 }),
            ),
        ];
        for (uid, mode, want) in cases {
            assert_eq!(distrust(uid, mode), want, "uid {uid} mode {mode:o}");
        }
        assert_eq!(
            Distrust::GroupWritable { mode: 0o040775 }.to_string(),
            "is writable by its group (mode 0775)"
        );
        assert_eq!(
            Distrust::WorldWritable { mode: 0o041777 }.to_string(),
            "is writable by others (mode 1777)"
        );
        assert_eq!(
            Distrust::Owner { uid: 7 }.to_string(),
            "is owned by uid 7, not root"
        );
    }

    #[test]
    fn plain_paths_only() {
        let ok = |p: &str| plain_components(Path::new(p)).is_ok();
        assert!(ok("/etc/shop/secrets.env"));
        assert!(ok("/x"));
        for bad in ["relative.env", "/etc/../x", "/etc/./x", "/", "./x", ""] {
            assert!(!ok(bad), "{bad}");
        }
    }

    #[test]
    fn bounded_read_refuses_fifos_big_files_and_directories() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("small");
        fs::write(&file, "home = /usr/bin\n").unwrap();
        assert_eq!(read_bounded(&file, 100).unwrap(), b"home = /usr/bin\n");
        // A link is followed by the bounded reader (apps.d links).
        let link = dir.path().join("link");
        symlink(&file, &link).unwrap();
        assert_eq!(read_bounded(&link, 100).unwrap().len(), 16);

        assert_eq!(
            read_bounded(&file, 10).unwrap_err(),
            FileError::TooBig {
                path: file.clone(),
                size: 16,
                max: 10
            }
        );
        // Sparse: 2 GiB by its size, nothing read.
        let sparse = dir.path().join("sparse");
        fs::File::create(&sparse).unwrap().set_len(2 << 30).unwrap();
        let error = read_bounded(&sparse, 1 << 20).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "{} is 2.0 GiB, more than the 1.0 MiB allowed",
                sparse.display()
            )
        );

        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o644)).unwrap();
        assert_eq!(
            read_bounded(&fifo, 100).unwrap_err().to_string(),
            format!("{} is a FIFO, not a regular file", fifo.display())
        );
        assert_eq!(
            read_bounded(dir.path(), 100).unwrap_err().to_string(),
            format!(
                "{} is a directory, not a regular file",
                dir.path().display()
            )
        );
        let missing = dir.path().join("missing");
        let error = read_bounded(&missing, 100).unwrap_err();
        assert!(error.is_not_found(), "{error}");
        assert_eq!(
            error.to_string(),
            format!(
                "{}: No such file or directory (os error 2)",
                missing.display()
            )
        );
        assert_eq!(
            error.describe(&missing),
            "No such file or directory (os error 2)"
        );
        assert_eq!(
            read_bounded(&fifo, 100).unwrap_err().describe(&fifo),
            "it is a FIFO, not a regular file"
        );
    }

    #[test]
    fn root_owned_read_refuses_what_others_control() {
        // tempdir lives under /tmp, world-writable: never trusted.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secrets.env");
        fs::write(&file, "SECRET=1\n").unwrap();
        let error = read_root_owned(&file, 100).unwrap_err();
        assert!(error.is_untrusted(), "{error}");

        // Root's own files in root's own directories are read: /etc/passwd
        // is on every test host.
        if nix::unistd::geteuid().is_root() {
            let passwd = read_root_owned(Path::new("/etc/passwd"), 1 << 20).unwrap();
            assert!(passwd.starts_with(b"root:"));
        }
        // A link is refused wherever it is, even in a trusted directory.
        let error = read_root_owned(Path::new("/proc/self/status"), 1 << 20).unwrap_err();
        assert!(
            matches!(error, FileError::Symlink { ref path } if path == Path::new("/proc/self")),
            "{error:?}"
        );
        assert_eq!(
            read_root_owned(Path::new("/etc/../etc/passwd"), 100)
                .unwrap_err()
                .to_string(),
            "/etc/../etc/passwd is not an absolute path without . or .. in it"
        );
    }

    #[test]
    fn root_owned_read_names_the_directory_at_fault() {
        if !nix::unistd::geteuid().is_root() {
            appvisor_tests::skip("needs root (a tree root owns)");
            return;
        }
        // A root-owned tree outside /tmp, so only the modes we set decide.
        let base = Path::new("/var/tmp");
        let dir = tempfile::Builder::new()
            .prefix("avt-files-")
            .tempdir_in(base)
            .unwrap();
        // /var/tmp itself is world-writable: everything under it is refused,
        // and the error names /var/tmp, not the file.
        let file = dir.path().join("x.env");
        fs::write(&file, "A=1\n").unwrap();
        let error = read_root_owned(&file, 100).unwrap_err();
        assert_eq!(
            error.describe(&file),
            format!(
                "/var/tmp is writable by others (mode {:04o})",
                fs::metadata(base).unwrap().permissions().mode() & 0o7777
            )
        );
        assert_eq!(
            error,
            FileError::Untrusted {
                path: base.to_owned(),
                why: Distrust::WorldWritable {
                    mode: fs::metadata(base).unwrap().permissions().mode()
                },
            }
        );
    }
}
