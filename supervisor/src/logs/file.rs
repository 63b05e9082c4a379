//! One stream's log file on disk: appending, size-based rotation at line
//! boundaries, the order index beside it, ownership and modes, what is
//! dropped while the file cannot be written, and handles for readers.
//!
//! Owns `NAME/stdout.log`, `stdout.log.1` (newest) … `stdout.log.KEEP`
//! (oldest) and their index files `NAME/.index/stdout.log` … (see
//! [`super::order`]). It must never fail an append: a write that the kernel
//! refuses (disk full, I/O error) or a file that cannot be opened is counted
//! as dropped and reported, the caller keeps draining the pipe so the app
//! never blocks, and the first write that succeeds again is preceded by a
//! line saying how much was lost.

use std::ffi::OsString;
use std::fs::{File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use memchr::{memchr, memrchr};
use tracing::{debug, warn};

use super::order::{self, RECORD};
use super::LogError;

/// Mode of every log file: the app's group reads, nobody else.
pub(crate) const FILE_MODE: u32 = 0o640;
/// The directory of index files, inside the app's log directory; hidden, so
/// globs such as `NAME/*` or `*.log` see only the logs.
pub(crate) const INDEX_DIR: &str = ".index";

/// Rotation settings, read once per append so a config change applies to the
/// next write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    pub max_size: u64,
    pub keep: u32,
}

/// Where an appended chunk belongs in the app's arrival order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    /// The stamp of the chunk's run.
    pub run: u64,
    /// The other stream wrote since this stream last did: a new run begins.
    pub new_run: bool,
}

/// The open current file of one stream and what rotation needs to know.
#[derive(Debug)]
pub(crate) struct LogFile {
    /// `DIR/stdout.log`; rotated files append `.N`.
    path: PathBuf,
    gid: u32,
    /// `None` while the file cannot be opened; the owner retries with
    /// [`LogFile::reopen`] and output is dropped meanwhile.
    file: Option<File>,
    /// The current file's index, `None` when it cannot be written (output
    /// then loses its order, never its bytes).
    index: Option<File>,
    /// Bytes in the current file.
    size: u64,
    /// Bytes of the current file and its index that rotation ignores: those
    /// before a rotation that failed, so the next attempt comes `max_size`
    /// later.
    deferred: u64,
    /// Whether the file ends with a newline (or is empty): rotation only
    /// cuts between lines.
    at_line_start: bool,
    /// The stamp of the run the bytes after `recorded` belong to.
    run: Option<u64>,
    /// End of the last index record in the current file.
    recorded: u64,
    /// Bytes of the current file's index: they count toward `max_size`, so
    /// a file and its index stay within it whatever the output's pattern
    /// (one record per two-byte line, in the worst case).
    index_len: u64,
    /// Why output is being dropped now; `None` while writes succeed.
    problem: Option<String>,
    /// Output dropped since the last successful write, still to be marked.
    lost: u64,
    /// Why that output was dropped, for the mark.
    lost_because: Option<String>,
}

impl LogFile {
    /// Opens (creating if needed) `path` for appending and gives it, and any
    /// rotated files up to `keep`, owner root:`gid` and mode 0640. Opens its
    /// index too if the index directory exists.
    #[cfg(test)]
    pub(crate) fn open(path: PathBuf, gid: u32, keep: u32) -> Result<Self, LogError> {
        let mut log = LogFile::closed(path, gid, None);
        log.reopen(keep)?;
        Ok(log)
    }

    /// A file that could not be opened: everything appended is dropped until
    /// [`LogFile::reopen`] succeeds.
    pub(crate) fn closed(path: PathBuf, gid: u32, problem: Option<&LogError>) -> Self {
        LogFile {
            path,
            gid,
            file: None,
            index: None,
            size: 0,
            deferred: 0,
            at_line_start: true,
            run: None,
            recorded: 0,
            index_len: 0,
            problem: problem.map(|error| DisplayChain(error).to_string()),
            lost: 0,
            lost_because: None,
        }
    }

    pub(crate) fn is_open(&self) -> bool {
        self.file.is_some()
    }

    /// Why output is being dropped now, if it is.
    pub(crate) fn problem(&self) -> Option<&str> {
        self.problem.as_deref()
    }

    /// Records why the file is still closed (a retry failed before it got
    /// to the file, e.g. at its directory).
    pub(crate) fn set_problem(&mut self, error: &LogError) {
        self.problem = Some(DisplayChain(error).to_string());
    }

    /// Opens the current file (and its index) if it is not open, and fixes
    /// the owner and mode of the rotated ones.
    pub(crate) fn reopen(&mut self, keep: u32) -> Result<(), LogError> {
        if self.file.is_some() {
            return Ok(());
        }
        let opened = self.open_current(keep);
        if let Err(error) = &opened {
            self.problem = Some(DisplayChain(error).to_string());
        }
        opened
    }

    fn open_current(&mut self, keep: u32) -> Result<(), LogError> {
        let file = open_append(&self.path, self.gid)?;
        let size = file
            .metadata()
            .map_err(|source| LogError::OpenFile {
                path: self.path.clone(),
                source,
            })?
            .len();
        let at_line_start = size == 0 || {
            let mut last = [0u8; 1];
            // A failed read only means rotation may cut one line early.
            file.read_exact_at(&mut last, size - 1).is_err() || last[0] == b'\n'
        };
        for k in 1..=keep {
            let rotated = rotated_path(&self.path, k);
            match OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&rotated)
            {
                Ok(old) => set_owner_and_mode(&old, &rotated, self.gid, FILE_MODE)?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(LogError::OpenFile {
                        path: rotated,
                        source,
                    })
                }
            }
        }
        self.file = Some(file);
        self.size = size;
        self.deferred = 0;
        self.at_line_start = at_line_start;
        self.problem = None;
        self.open_index();
        Ok(())
    }

    /// Opens the current file's index, dropping records that do not fit the
    /// file (a partial record, or an index left from another file) and
    /// recording bytes written without an index as the last run's.
    fn open_index(&mut self) {
        self.index = None;
        self.recorded = 0;
        self.index_len = 0;
        let path = index_path(&self.path);
        let index = match open_append(&path, self.gid) {
            Ok(index) => index,
            Err(error) => {
                debug!(error = %DisplayChain(&error), "no index: output of this file keeps no order");
                return;
            }
        };
        let len = index.metadata().map_or(0, |m| m.len());
        let records = len / RECORD as u64;
        let mut last = None;
        if records > 0 {
            let mut record = [0u8; RECORD];
            if index
                .read_exact_at(&mut record, (records - 1) * RECORD as u64)
                .is_ok()
            {
                last = Some(order::decode(&record));
            }
        }
        let valid = match last {
            Some((_, end)) => end <= self.size,
            None => records == 0,
        };
        let kept = if valid { records * RECORD as u64 } else { 0 };
        // Truncating to the length it has already is not free: a file
        // system transaction, at every start of every app.
        if kept != len && index.set_len(kept).is_err() {
            return;
        }
        self.index = Some(index);
        self.index_len = kept;
        let (stamp, end) = last.filter(|_| valid).unwrap_or((order::UNKNOWN, 0));
        self.recorded = end;
        if self.size > end {
            self.run = Some(stamp);
            self.close_run();
        }
    }

    /// Appends `data`, rotating when the file would exceed `limits.max_size`.
    ///
    /// Rotation cuts at the last newline that fits; a line longer than
    /// `max_size` is written whole, then the file rotates. A file rotates
    /// when the next write would not fit, so the current file is never left
    /// empty by rotation alone. Returns the number of bytes that could not be
    /// written.
    pub(crate) fn append(&mut self, mut data: &[u8], limits: Limits, stamp: Stamp) -> u64 {
        if stamp.new_run || self.run.is_none() {
            self.close_run();
            self.run = Some(stamp.run);
        }
        let mut dropped = 0;
        while !data.is_empty() {
            let counted = (self.size + self.index_len).saturating_sub(self.deferred);
            let room =
                usize::try_from(limits.max_size.saturating_sub(counted)).unwrap_or(usize::MAX);
            if data.len() <= room {
                dropped += self.write(data);
                break;
            }
            let cut = if self.at_line_start {
                memrchr(b'\n', &data[..room]).map(|i| i + 1)
            } else {
                None
            };
            let cut = match cut {
                Some(cut) => cut,
                // The next line does not fit and the file already has
                // lines: start a new file for it.
                None if self.at_line_start && counted > 0 && self.file.is_some() => {
                    self.rotate(limits.keep);
                    continue;
                }
                // Either the file ends inside a line, which is finished here,
                // or one line is longer than max_size and gets a file of its
                // own. Without a newline in `data` the line continues in the
                // next append.
                None => memchr(b'\n', data).map_or(data.len(), |i| i + 1),
            };
            dropped += self.write(&data[..cut]);
            data = &data[cut..];
        }
        dropped
    }

    /// Writes one piece without rotating, preceded by the mark of what was
    /// lost if writes failed before. Returns the bytes dropped.
    fn write(&mut self, piece: &[u8]) -> u64 {
        if self.lost > 0 && self.file.is_some() {
            let mark = self.lost_mark();
            if !self.write_bytes(mark.as_bytes()) {
                return self.drop_bytes(piece.len());
            }
            warn!(
                path = %self.path.display(),
                dropped_bytes = self.lost,
                "log writes recovered"
            );
            self.lost = 0;
        }
        let Some(file) = self.file.as_mut() else {
            return self.drop_bytes(piece.len());
        };
        let (written, error) = write_fully(file, piece);
        self.wrote(&piece[..written]);
        match error {
            None => {
                self.problem = None;
                0
            }
            Some(error) => {
                if self.lost == 0 && self.problem.is_none() {
                    // Once per failure episode: a full disk must not also
                    // flood the daemon's own log.
                    warn!(
                        path = %self.path.display(),
                        %error,
                        "log write failed, dropping output until writes succeed again"
                    );
                }
                self.problem = Some(format!("cannot write {}: {error}", self.path.display()));
                self.drop_bytes(piece.len() - written)
            }
        }
    }

    /// Writes all of `bytes` or reports that it could not (a partial write
    /// still counts toward the size).
    fn write_bytes(&mut self, bytes: &[u8]) -> bool {
        let Some(file) = self.file.as_mut() else {
            return false;
        };
        let (written, error) = write_fully(file, bytes);
        self.wrote(&bytes[..written]);
        error.is_none()
    }

    fn wrote(&mut self, bytes: &[u8]) {
        if let Some(&last) = bytes.last() {
            self.size += bytes.len() as u64;
            self.at_line_start = last == b'\n';
        }
    }

    fn drop_bytes(&mut self, len: usize) -> u64 {
        if self.lost == 0 {
            self.lost_because = self.problem.clone();
        }
        self.lost += len as u64;
        len as u64
    }

    /// The line that stands for output lost since the last successful write.
    fn lost_mark(&self) -> String {
        let newline = if self.at_line_start { "" } else { "\n" };
        let why = self
            .lost_because
            .as_deref()
            .unwrap_or("the log file could not be written");
        format!(
            "{newline}[appvisord: {} bytes of output dropped here: {why}]\n",
            self.lost
        )
    }

    /// Ends the open run: records which bytes of the current file it holds.
    fn close_run(&mut self) {
        let Some(run) = self.run else { return };
        if self.size <= self.recorded {
            return;
        }
        let Some(index) = self.index.as_mut() else {
            return;
        };
        match index.write_all(&order::encode(run, self.size)) {
            Ok(()) => {
                self.recorded = self.size;
                self.index_len += RECORD as u64;
            }
            Err(error) => {
                debug!(%error, path = %self.path.display(), "cannot write the index: output of this file loses its order");
                self.index = None;
            }
        }
    }

    /// Shifts `.N` to `.N+1`, the current file to `.1`, deletes what falls
    /// beyond `keep`, and opens a fresh current file; the index files follow
    /// their logs.
    fn rotate(&mut self, keep: u32) {
        self.close_run();
        // Beyond `keep` (also files left by a larger `keep` before a config
        // change): delete until the first gap.
        let mut k = keep.max(1);
        loop {
            let old = rotated_path(&self.path, k);
            let removed = std::fs::remove_file(&old);
            let _ = std::fs::remove_file(index_path(&old));
            match removed {
                Ok(()) => k += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(error) => {
                    self.rotation_failed(&old, &error);
                    return;
                }
            }
        }
        for k in (1..keep).rev() {
            let from = rotated_path(&self.path, k);
            let to = rotated_path(&self.path, k + 1);
            match std::fs::rename(&from, &to) {
                Ok(()) => shift_index(&from, &to),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(error) => {
                    self.rotation_failed(&from, &error);
                    return;
                }
            }
        }
        let first = rotated_path(&self.path, 1);
        let shifted = match keep {
            0 => std::fs::remove_file(&self.path),
            _ => std::fs::rename(&self.path, &first),
        };
        match shifted {
            Ok(()) if keep == 0 => {
                let _ = std::fs::remove_file(index_path(&self.path));
            }
            Ok(()) => shift_index(&self.path, &first),
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => {
                let path = self.path.clone();
                self.rotation_failed(&path, &error);
                return;
            }
        }
        debug!(path = %self.path.display(), keep, "rotated log file");
        self.size = 0;
        self.deferred = 0;
        self.at_line_start = true;
        self.index = None;
        self.recorded = 0;
        self.index_len = 0;
        self.file = match open_append(&self.path, self.gid) {
            Ok(file) => Some(file),
            Err(error) => {
                // The owner retries the open and counts what it cannot write.
                warn!(error = %DisplayChain(&error), "cannot open log file after rotation");
                self.problem = Some(DisplayChain(&error).to_string());
                return;
            }
        };
        self.open_index();
    }

    /// Keeps writing to the current file; the next attempt comes after
    /// another `max_size` bytes, so a broken rotation cannot loop or flood.
    fn rotation_failed(&mut self, path: &Path, error: &io::Error) {
        warn!(path = %path.display(), %error, "log rotation failed, appending to the current file");
        self.deferred = self.size + self.index_len;
    }

    /// Handles on the current file and the rotated ones, newest first, each
    /// with its length now (and, `with_index`, its index and record count),
    /// plus the stamp of the open run, so a reader sees one consistent set
    /// even if rotation renames them or the app writes more before it reads.
    /// Called under the stream's lock, so no write is half done.
    pub(crate) fn snapshot(&self, keep: u32, with_index: bool) -> io::Result<FilesSnapshot> {
        let mut files = Vec::with_capacity(keep as usize + 1);
        let current = match &self.file {
            Some(file) => Some(file.try_clone()?),
            None => open_existing(&self.path)?,
        };
        if let Some(file) = current {
            let index = match (&self.index, with_index) {
                (Some(index), true) => index.try_clone().ok(),
                (None, true) => open_existing(&index_path(&self.path)).ok().flatten(),
                (_, false) => None,
            };
            files.push(FileSnapshot::new(file, index)?);
        }
        for k in 1..=keep {
            let path = rotated_path(&self.path, k);
            let Some(file) = open_existing(&path)? else {
                break;
            };
            let index = if with_index {
                open_existing(&index_path(&path)).ok().flatten()
            } else {
                None
            };
            files.push(FileSnapshot::new(file, index)?);
        }
        Ok(FilesSnapshot {
            files,
            open_run: self.run.filter(|_| self.file.is_some()),
        })
    }
}

impl Drop for LogFile {
    fn drop(&mut self) {
        self.close_run();
    }
}

/// One stream's files at an instant, newest first.
#[derive(Debug)]
pub(crate) struct FilesSnapshot {
    pub files: Vec<FileSnapshot>,
    /// The stamp of the current file's bytes after its last index record.
    pub open_run: Option<u64>,
}

/// One log file at an instant: an open handle (immune to rotation), its
/// length then, and its index with the number of whole records then.
#[derive(Debug)]
pub(crate) struct FileSnapshot {
    pub file: File,
    pub len: u64,
    pub index: Option<(File, u64)>,
}

impl FileSnapshot {
    fn new(file: File, index: Option<File>) -> io::Result<FileSnapshot> {
        let len = file.metadata()?.len();
        let index = index.and_then(|index| {
            let records = index.metadata().ok()?.len() / RECORD as u64;
            Some((index, records))
        });
        Ok(FileSnapshot { file, len, index })
    }
}

/// Opens `path` for reading without following a symlink; `None` if it does
/// not exist.
fn open_existing(path: &Path) -> io::Result<Option<File>> {
    match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(file) => Ok(Some(file)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Moves the index of log `from` to that of log `to`, or removes `to`'s if
/// `from` has none (a stale index must not describe another file).
fn shift_index(from: &Path, to: &Path) {
    let (from, to) = (index_path(from), index_path(to));
    if std::fs::rename(&from, &to).is_err() {
        let _ = std::fs::remove_file(&to);
    }
}

/// Writes as much of `piece` as the kernel takes: the count written, and the
/// error that stopped it short.
fn write_fully(file: &mut File, piece: &[u8]) -> (usize, Option<io::Error>) {
    let mut written = 0;
    while written < piece.len() {
        match file.write(&piece[written..]) {
            Ok(0) => return (written, Some(io::ErrorKind::WriteZero.into())),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (written, Some(e)),
        }
    }
    (written, None)
}

/// `path` with `.k` appended: `stdout.log.3`.
pub(crate) fn rotated_path(path: &Path, k: u32) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(format!(".{k}"));
    PathBuf::from(name)
}

/// The index of log file `DIR/NAME`: `DIR/.index/NAME`.
pub(crate) fn index_path(path: &Path) -> PathBuf {
    let dir = path.parent().unwrap_or(Path::new(""));
    let name = path.file_name().unwrap_or_default();
    dir.join(INDEX_DIR).join(name)
}

/// Opens a log or index file for appending, created 0640, never through a
/// symlink, then makes it root:`gid` 0640 whatever it was before.
fn open_append(path: &Path, gid: u32) -> Result<File, LogError> {
    // Readable too: `open` reads the last byte, and `snapshot` hands a
    // duplicate of this descriptor to readers.
    let file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|source| LogError::OpenFile {
            path: path.to_owned(),
            source,
        })?;
    set_owner_and_mode(&file, path, gid, FILE_MODE)?;
    Ok(file)
}

/// Gives an open file or directory owner root:`gid` (the daemon's own uid
/// when it is not root, as in unprivileged tests) and `mode`, through the
/// descriptor so a rename cannot redirect it.
pub(crate) fn set_owner_and_mode(
    fd: &File,
    path: &Path,
    gid: u32,
    mode: u32,
) -> Result<(), LogError> {
    let uid = nix::unistd::geteuid().as_raw();
    std::os::unix::fs::fchown(fd.as_fd(), Some(uid), Some(gid))
        .and_then(|()| fd.set_permissions(Permissions::from_mode(mode)))
        .map_err(|source| LogError::SetOwner {
            path: path.to_owned(),
            gid,
            mode,
            source,
        })
}

/// Formats an error with its sources: `a: b: c`.
pub(crate) struct DisplayChain<'a>(pub &'a dyn std::error::Error);

impl std::fmt::Display for DisplayChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(error) = source {
            write!(f, ": {error}")?;
            source = error.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gid() -> u32 {
        nix::unistd::getegid().as_raw()
    }

    fn files_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    fn read(path: &Path) -> String {
        String::from_utf8(std::fs::read(path).unwrap()).unwrap()
    }

    /// Appends of one run: what a single stream's output gets.
    const STAMP: Stamp = Stamp {
        run: 7,
        new_run: false,
    };

    fn records(path: &Path) -> Vec<(u64, u64)> {
        std::fs::read(index_path(path))
            .unwrap()
            .chunks(RECORD)
            .map(order::decode)
            .collect()
    }

    #[test]
    fn rotation_cuts_at_the_last_newline_that_fits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stdout.log");
        let mut log = LogFile::open(path.clone(), gid(), 3).unwrap();
        let limits = Limits {
            max_size: 10,
            keep: 3,
        };
        assert_eq!(log.append(b"aaa\nbbb\nccc\nddd\n", limits, STAMP), 0);
        assert_eq!(files_in(dir.path()), ["stdout.log", "stdout.log.1"]);
        assert_eq!(read(&rotated_path(&path, 1)), "aaa\nbbb\n");
        assert_eq!(read(&path), "ccc\nddd\n");
    }

    #[test]
    fn a_line_longer_than_max_size_is_written_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stdout.log");
        let mut log = LogFile::open(path.clone(), gid(), 5).unwrap();
        let limits = Limits {
            max_size: 8,
            keep: 5,
        };
        log.append(b"ab\n", limits, STAMP);
        // The long line arrives in pieces, as a capture with a capped carry
        // would hand it over.
        log.append(b"0123456789", limits, STAMP);
        log.append(b"0123456789\nxy\n", limits, STAMP);
        assert_eq!(read(&rotated_path(&path, 2)), "ab\n");
        assert_eq!(read(&rotated_path(&path, 1)), "01234567890123456789\n");
        assert_eq!(read(&path), "xy\n");
    }

    #[test]
    fn keep_bounds_the_file_count_and_deletes_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stdout.log");
        let mut log = LogFile::open(path.clone(), gid(), 2).unwrap();
        let limits = Limits {
            max_size: 4,
            keep: 2,
        };
        for line in ["one\n", "two\n", "six\n", "ten\n"] {
            log.append(line.as_bytes(), limits, STAMP);
        }
        // Each 4-byte line fills a file; the next one rotates it.
        assert_eq!(
            files_in(dir.path()),
            ["stdout.log", "stdout.log.1", "stdout.log.2"]
        );
        assert_eq!(read(&rotated_path(&path, 2)), "two\n");
        assert_eq!(read(&rotated_path(&path, 1)), "six\n");
        assert_eq!(read(&path), "ten\n");
    }

    #[test]
    fn keep_zero_truncates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stdout.log");
        let mut log = LogFile::open(path.clone(), gid(), 0).unwrap();
        let limits = Limits {
            max_size: 6,
            keep: 0,
        };
        log.append(b"abc\ndef\nghi\n", limits, STAMP);
        assert_eq!(files_in(dir.path()), ["stdout.log"]);
        assert_eq!(read(&path), "ghi\n");
    }

    #[test]
    fn a_smaller_keep_deletes_the_surplus_at_the_next_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stdout.log");
        let mut log = LogFile::open(path.clone(), gid(), 4).unwrap();
        let mut limits = Limits {
            max_size: 2,
            keep: 4,
        };
        for line in ["a\n", "b\n", "c\n", "d\n", "e\n"] {
            log.append(line.as_bytes(), limits, STAMP);
        }
        assert_eq!(files_in(dir.path()).len(), 5);
        limits.keep = 1;
        log.append(b"f\n", limits, STAMP);
        assert_eq!(files_in(dir.path()), ["stdout.log", "stdout.log.1"]);
        assert_eq!(read(&rotated_path(&path, 1)), "e\n");
        assert_eq!(read(&path), "f\n");
    }

    #[test]
    fn reopening_continues_the_size_and_line_state() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stdout.log");
        std::fs::write(&path, "12345678\npartial").unwrap();
        let mut log = LogFile::open(path.clone(), gid(), 1).unwrap();
        assert_eq!((log.size, log.at_line_start), (16, false));
        log.append(
            b" end\nnext\n",
            Limits {
                max_size: 10,
                keep: 1,
            },
            STAMP,
        );
        // The unfinished line is finished in the old file before rotating.
        assert_eq!(read(&rotated_path(&path, 1)), "12345678\npartial end\n");
        assert_eq!(read(&path), "next\n");
    }

    #[test]
    fn a_failing_write_is_counted_then_marked_when_writes_succeed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stdout.log");
        let mut log = LogFile::open(path.clone(), gid(), 1).unwrap();
        let limits = Limits {
            max_size: u64::MAX,
            keep: 1,
        };
        log.append(b"before\nhalf a li", limits, STAMP);
        // /dev/full fails every write with ENOSPC, as a full disk does.
        let real = log
            .file
            .replace(OpenOptions::new().append(true).open("/dev/full").unwrap());
        assert_eq!(log.append(b"lost\n", limits, STAMP), 5);
        assert_eq!(log.append(b"also lost\n", limits, STAMP), 10);
        let problem = log.problem().expect("the problem is reported").to_owned();
        assert!(problem.starts_with("cannot write "), "{problem}");
        // Space is back.
        log.file = real;
        assert_eq!(log.append(b"after\n", limits, STAMP), 0);
        assert_eq!(log.problem(), None);
        assert_eq!(
            read(&path),
            format!("before\nhalf a li\n[appvisord: 15 bytes of output dropped here: {problem}]\nafter\n")
        );
        // Once only.
        log.append(b"more\n", limits, STAMP);
        assert!(read(&path).ends_with("]\nafter\nmore\n"));
    }

    #[test]
    fn a_closed_file_drops_until_it_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("stdout.log");
        let mut log = LogFile::open(path.clone(), gid(), 1)
            .unwrap_or_else(|error| LogFile::closed(path.clone(), gid(), Some(&error)));
        let limits = Limits {
            max_size: 100,
            keep: 1,
        };
        assert!(!log.is_open());
        assert_eq!(log.append(b"lost\n", limits, STAMP), 5);
        assert!(log
            .problem()
            .is_some_and(|p| p.starts_with("cannot open log file")));
        std::fs::create_dir(dir.path().join("missing")).unwrap();
        log.reopen(1).unwrap();
        assert_eq!(log.problem(), None, "open again: nothing is wrong now");
        log.append(b"kept\n", limits, STAMP);
        let text = read(&path);
        assert!(
            text.starts_with("[appvisord: 5 bytes of output dropped here: cannot open log file "),
            "{text}"
        );
        assert!(text.ends_with("]\nkept\n"), "{text}");
    }

    #[test]
    fn index_records_follow_runs_and_rotation() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(INDEX_DIR)).unwrap();
        let path = dir.path().join("stdout.log");
        let mut log = LogFile::open(path.clone(), gid(), 2).unwrap();
        // The index counts toward max_size: 6 bytes of log and a record fit,
        // 17 and a record do not.
        let limits = Limits {
            max_size: 24,
            keep: 2,
        };
        let run = |stamp| Stamp {
            run: stamp,
            new_run: true,
        };
        log.append(b"a\n", limits, run(10));
        log.append(b"b\n", limits, same_run(10));
        // The other stream wrote: a new run.
        log.append(b"c\n", limits, run(20));
        // Nothing is written for the open run until it ends.
        assert_eq!(records(&path), [(10, 4)]);
        // Rotation ends it in the old file; it goes on in the new one.
        log.append(b"0123456789\n", limits, same_run(20));
        assert_eq!(records(&rotated_path(&path, 1)), [(10, 4), (20, 6)]);
        assert_eq!(records(&path), []);
        let snapshot = log.snapshot(2, true).unwrap();
        assert_eq!(snapshot.open_run, Some(20));
        assert_eq!(snapshot.files.len(), 2);
        assert_eq!(snapshot.files[1].index.as_ref().map(|(_, n)| *n), Some(2));
        // Letting go of the file records the open run.
        drop(log);
        assert_eq!(records(&path), [(20, 11)]);
        // Opened again, the file and its index go on; rotated away with its
        // log, an index never describes another file.
        let mut log = LogFile::open(path.clone(), gid(), 2).unwrap();
        log.append(b"0123456789\n", limits, run(30));
        log.append(b"0123456789\n", limits, same_run(30));
        drop(log);
        assert_eq!(records(&rotated_path(&path, 2)), [(10, 4), (20, 6)]);
        assert_eq!(records(&rotated_path(&path, 1)), [(20, 11)]);
        assert_eq!(records(&path), [(30, 22)]);
    }

    /// Opening a file keeps its index only as far as it fits: whole
    /// records, ending within the file.
    #[test]
    fn an_index_that_does_not_fit_its_file_is_cut_at_open() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(INDEX_DIR)).unwrap();
        let path = dir.path().join("stdout.log");
        let index = index_path(&path);
        let mut log = LogFile::open(path.clone(), gid(), 2).unwrap();
        let limits = Limits {
            max_size: 1000,
            keep: 2,
        };
        log.append(
            b"a
", limits, STAMP,
        );
        drop(log);
        assert_eq!(records(&path), [(7, 2)]);
        let whole = std::fs::read(&index).unwrap();

        // A record cut short by a crash goes; the whole one stays.
        let mut torn = whole.clone();
        torn.extend_from_slice(&whole[..3]);
        std::fs::write(&index, &torn).unwrap();
        drop(LogFile::open(path.clone(), gid(), 2).unwrap());
        assert_eq!(std::fs::read(&index).unwrap(), whole);

        // Reopened as it is, the index is left alone.
        drop(LogFile::open(path.clone(), gid(), 2).unwrap());
        assert_eq!(std::fs::read(&index).unwrap(), whole);

        // An index that describes more than the file (another file's) goes.
        std::fs::write(&path, "").unwrap();
        let log = LogFile::open(path.clone(), gid(), 2).unwrap();
        assert_eq!(std::fs::metadata(&index).unwrap().len(), 0);
        drop(log);
    }

    #[test]
    fn a_file_and_its_index_stay_within_max_size_whatever_the_pattern() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(INDEX_DIR)).unwrap();
        let path = dir.path().join("stdout.log");
        let mut log = LogFile::open(path.clone(), gid(), 3).unwrap();
        let limits = Limits {
            max_size: 1000,
            keep: 3,
        };
        // Two-byte lines, each a run of its own: a record per line.
        for stamp in 1..2000 {
            log.append(
                b"a\n",
                limits,
                Stamp {
                    run: stamp,
                    new_run: true,
                },
            );
        }
        drop(log);
        for k in 0..=3 {
            let log = if k == 0 {
                path.clone()
            } else {
                rotated_path(&path, k)
            };
            let size = std::fs::metadata(&log).unwrap().len()
                + std::fs::metadata(index_path(&log)).unwrap().len();
            // The record that ends a run comes after the size check.
            assert!(
                size <= 1000 + RECORD as u64,
                "{} and its index: {size} bytes",
                log.display()
            );
        }
    }

    fn same_run(run: u64) -> Stamp {
        Stamp {
            run,
            new_run: false,
        }
    }
}
