//! One stream's log file on disk: appending, size-based rotation at line
//! boundaries, ownership and modes, and reading the last lines back.
//!
//! Owns `NAME/stdout.log`, `stdout.log.1` (newest) … `stdout.log.KEEP`
//! (oldest). It must never fail an append: a write that the kernel refuses
//! (disk full, I/O error) is counted as dropped and reported, and the caller
//! keeps draining the pipe so the app never blocks.

use std::ffi::OsString;
use std::fs::{File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use memchr::{memchr, memrchr};
use tracing::{debug, warn};

use super::LogError;

/// Mode of every log file: the app's group reads, nobody else.
pub(crate) const FILE_MODE: u32 = 0o640;
/// Block size when reading files backwards.
const READ_BLOCK: usize = 64 * 1024;
/// The most bytes [`read_last_lines`] reads, so a request for a million lines
/// of a chatty app cannot make the daemon buffer all its files.
pub const READ_LAST_MAX_BYTES: usize = 64 * 1024 * 1024;

/// Rotation settings, read once per append so a config change applies to the
/// next write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    pub max_size: u64,
    pub keep: u32,
}

/// The open current file of one stream and what rotation needs to know.
#[derive(Debug)]
pub(crate) struct LogFile {
    /// `DIR/stdout.log`; rotated files append `.N`.
    path: PathBuf,
    gid: u32,
    /// `None` after a rotation could not open the new file; every append
    /// retries the open.
    file: Option<File>,
    /// Bytes in the current file as far as rotation is concerned.
    size: u64,
    /// Whether the last byte written was a newline (or the file is empty):
    /// rotation only cuts between lines.
    at_line_start: bool,
    /// Bytes dropped since writes started failing; `0` while healthy.
    dropped_since_failure: u64,
}

impl LogFile {
    /// Opens (creating if needed) `path` for appending and gives it, and any
    /// rotated files up to `keep`, owner root:`gid` and mode 0640.
    pub(crate) fn open(path: PathBuf, gid: u32, keep: u32) -> Result<Self, LogError> {
        let file = open_append(&path, gid)?;
        let size = file
            .metadata()
            .map_err(|source| LogError::OpenFile {
                path: path.clone(),
                source,
            })?
            .len();
        let at_line_start = size == 0 || {
            let mut last = [0u8; 1];
            // A failed read only means rotation may cut one line early.
            file.read_exact_at(&mut last, size - 1).is_err() || last[0] == b'\n'
        };
        for k in 1..=keep {
            let rotated = rotated_path(&path, k);
            match OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&rotated)
            {
                Ok(old) => set_owner_and_mode(&old, &rotated, gid, FILE_MODE)?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(LogError::OpenFile {
                        path: rotated,
                        source,
                    })
                }
            }
        }
        Ok(LogFile {
            path,
            gid,
            file: Some(file),
            size,
            at_line_start,
            dropped_since_failure: 0,
        })
    }

    /// Appends `data`, rotating when the file would exceed `limits.max_size`.
    ///
    /// Rotation cuts at the last newline that fits; a line longer than
    /// `max_size` is written whole, then the file rotates. A file rotates
    /// when the next write would not fit, so the current file is never left
    /// empty by rotation alone. Returns the number of bytes that could not be
    /// written.
    pub(crate) fn append(&mut self, mut data: &[u8], limits: Limits) -> u64 {
        let mut dropped = 0;
        while !data.is_empty() {
            let room =
                usize::try_from(limits.max_size.saturating_sub(self.size)).unwrap_or(usize::MAX);
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
                None if self.at_line_start && self.size > 0 => {
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

    /// Writes one piece without rotating. Returns the bytes dropped.
    fn write(&mut self, piece: &[u8]) -> u64 {
        self.at_line_start = piece.last() == Some(&b'\n');
        if self.file.is_none() {
            match open_append(&self.path, self.gid) {
                Ok(file) => self.file = Some(file),
                Err(error) => {
                    return self.record_failure(piece.len(), &error as &dyn std::error::Error)
                }
            }
        }
        let Some(file) = self.file.as_mut() else {
            return 0;
        };
        let (written, error) = write_fully(file, piece);
        self.size += written as u64;
        if let Some(error) = error {
            return self.record_failure(piece.len() - written, &error);
        }
        if self.dropped_since_failure > 0 {
            warn!(
                path = %self.path.display(),
                dropped_bytes = self.dropped_since_failure,
                "log writes recovered"
            );
            self.dropped_since_failure = 0;
        }
        0
    }

    fn record_failure(&mut self, len: usize, error: &dyn std::error::Error) -> u64 {
        if self.dropped_since_failure == 0 {
            // Once per failure episode: a full disk must not also flood the
            // daemon's own log.
            warn!(
                path = %self.path.display(),
                error = %DisplayChain(error),
                "log write failed, dropping output until writes succeed again"
            );
        }
        self.dropped_since_failure += len as u64;
        len as u64
    }

    /// Shifts `.N` to `.N+1`, the current file to `.1`, deletes what falls
    /// beyond `keep`, and opens a fresh current file.
    fn rotate(&mut self, keep: u32) {
        // Beyond `keep` (also files left by a larger `keep` before a config
        // change): delete until the first gap.
        let mut k = keep.max(1);
        loop {
            match std::fs::remove_file(rotated_path(&self.path, k)) {
                Ok(()) => k += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(error) => {
                    self.rotation_failed(&rotated_path(&self.path, k), &error);
                    return;
                }
            }
        }
        for k in (1..keep).rev() {
            let from = rotated_path(&self.path, k);
            match std::fs::rename(&from, rotated_path(&self.path, k + 1)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(error) => {
                    self.rotation_failed(&from, &error);
                    return;
                }
            }
        }
        let shifted = match keep {
            0 => std::fs::remove_file(&self.path),
            _ => std::fs::rename(&self.path, rotated_path(&self.path, 1)),
        };
        if let Err(error) = shifted {
            if error.kind() != io::ErrorKind::NotFound {
                let path = self.path.clone();
                self.rotation_failed(&path, &error);
                return;
            }
        }
        debug!(path = %self.path.display(), keep, "rotated log file");
        self.size = 0;
        self.at_line_start = true;
        self.file = match open_append(&self.path, self.gid) {
            Ok(file) => Some(file),
            Err(error) => {
                // `write` retries the open and counts what it cannot write.
                warn!(error = %DisplayChain(&error), "cannot open log file after rotation");
                None
            }
        };
    }

    /// Keeps writing to the current file; the next attempt comes after
    /// another `max_size` bytes, so a broken rotation cannot loop or flood.
    fn rotation_failed(&mut self, path: &Path, error: &io::Error) {
        warn!(path = %path.display(), %error, "log rotation failed, appending to the current file");
        self.size = 0;
    }

    /// Handles on the current file and the rotated ones, newest first, each
    /// with its length now, so a reader sees one consistent set even if
    /// rotation renames them or the app writes more before it reads. Called
    /// under the stream's lock, so no write is half done.
    pub(crate) fn snapshot(&self, keep: u32) -> io::Result<Vec<(File, u64)>> {
        let mut files = Vec::with_capacity(keep as usize + 1);
        let current = match &self.file {
            Some(file) => Some(file.try_clone()?),
            None => match File::open(&self.path) {
                Ok(file) => Some(file),
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => return Err(e),
            },
        };
        if let Some(file) = current {
            let len = file.metadata()?.len();
            files.push((file, len));
        }
        for k in 1..=keep {
            match File::open(rotated_path(&self.path, k)) {
                Ok(file) => {
                    let len = file.metadata()?.len();
                    files.push((file, len));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(e) => return Err(e),
            }
        }
        Ok(files)
    }
}

/// The last `n` complete lines of `files` (newest first, each read up to its
/// length, as from [`LogFile::snapshot`]), oldest line first, plus a trailing
/// partial line if the newest file does not end with a newline. Reads
/// backwards and stops as soon as it has enough, or after
/// [`READ_LAST_MAX_BYTES`].
pub(crate) fn read_last_lines(files: &[(File, u64)], n: usize) -> io::Result<Vec<String>> {
    // Blocks newest first; `newlines` counts across all of them.
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    let mut newlines = 0;
    let mut total = 0;
    let mut reached_start = true;
    'files: for (file, len) in files {
        let mut end = *len;
        while end > 0 {
            if newlines > n || total >= READ_LAST_MAX_BYTES {
                reached_start = false;
                break 'files;
            }
            let len = (end.min(READ_BLOCK as u64)) as usize;
            let mut block = vec![0u8; len];
            let start = end - len as u64;
            file.read_exact_at(&mut block, start)?;
            newlines += memchr::memchr_iter(b'\n', &block).count();
            total += len;
            blocks.push(block);
            end = start;
        }
    }
    let mut text = Vec::with_capacity(total);
    for block in blocks.iter().rev() {
        text.extend_from_slice(block);
    }
    drop(blocks);

    let partial_start = memrchr(b'\n', &text).map_or(0, |i| i + 1);
    let (complete, partial) = text.split_at(partial_start);
    let mut lines: Vec<&[u8]> = match complete.split_last() {
        Some((_newline, body)) => body.split(|&b| b == b'\n').collect(),
        None => Vec::new(),
    };
    if !reached_start && !lines.is_empty() {
        // The first piece may begin inside a line: the read stopped there.
        lines.remove(0);
    }
    let skip = lines.len().saturating_sub(n);
    let mut out: Vec<String> = lines[skip..]
        .iter()
        .map(|line| String::from_utf8_lossy(line).into_owned())
        .collect();
    if !partial.is_empty() && (reached_start || !complete.is_empty()) {
        out.push(String::from_utf8_lossy(partial).into_owned());
    }
    Ok(out)
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

/// Opens a log file for appending, created 0640, never through a symlink,
/// then makes it root:`gid` 0640 whatever it was before.
fn open_append(path: &Path, gid: u32) -> Result<File, LogError> {
    // Readable too: `open` reads the last byte, and `snapshot` hands a
    // duplicate of this descriptor to `read_last_lines`.
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

    #[test]
    fn rotation_cuts_at_the_last_newline_that_fits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stdout.log");
        let mut log = LogFile::open(path.clone(), gid(), 3).unwrap();
        let limits = Limits {
            max_size: 10,
            keep: 3,
        };
        assert_eq!(log.append(b"aaa\nbbb\nccc\nddd\n", limits), 0);
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
        log.append(b"ab\n", limits);
        // The long line arrives in pieces, as a capture with a capped carry
        // would hand it over.
        log.append(b"0123456789", limits);
        log.append(b"0123456789\nxy\n", limits);
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
            log.append(line.as_bytes(), limits);
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
        log.append(b"abc\ndef\nghi\n", limits);
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
            log.append(line.as_bytes(), limits);
        }
        assert_eq!(files_in(dir.path()).len(), 5);
        limits.keep = 1;
        log.append(b"f\n", limits);
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
        );
        // The unfinished line is finished in the old file before rotating.
        assert_eq!(read(&rotated_path(&path, 1)), "12345678\npartial end\n");
        assert_eq!(read(&path), "next\n");
    }

    #[test]
    fn a_failing_write_is_counted_not_fatal() {
        // /dev/full fails every write with ENOSPC, as a full disk does.
        let mut log = LogFile {
            path: PathBuf::from("/dev/full"),
            gid: gid(),
            file: Some(OpenOptions::new().append(true).open("/dev/full").unwrap()),
            size: 0,
            at_line_start: true,
            dropped_since_failure: 0,
        };
        let limits = Limits {
            max_size: u64::MAX,
            keep: 1,
        };
        assert_eq!(log.append(b"lost\n", limits), 5);
        assert_eq!(log.append(b"also lost\n", limits), 10);
        assert_eq!(log.dropped_since_failure, 15);
    }

    #[test]
    fn read_last_lines_table() {
        struct Case {
            name: &'static str,
            files: &'static [&'static [u8]], // newest first
            n: usize,
            want: &'static [&'static str],
        }
        let cases = [
            Case {
                name: "no files",
                files: &[],
                n: 3,
                want: &[],
            },
            Case {
                name: "fewer lines than asked",
                files: &[b"a\nb\n"],
                n: 10,
                want: &["a", "b"],
            },
            Case {
                name: "across a rotation boundary",
                files: &[b"e\nf\n", b"c\nd\n", b"a\nb\n"],
                n: 3,
                want: &["d", "e", "f"],
            },
            Case {
                name: "partial trailing line comes after n lines",
                files: &[b"c\npar", b"a\nb\n"],
                n: 2,
                want: &["b", "c", "par"],
            },
            Case {
                name: "a line continued across files",
                files: &[b"tail\nz\n", b"x\nhead-"],
                n: 2,
                want: &["head-tail", "z"],
            },
            Case {
                name: "empty current file",
                files: &[b"", b"a\nb\n"],
                n: 1,
                want: &["b"],
            },
            Case {
                name: "invalid utf-8",
                files: &[b"\xff\n"],
                n: 1,
                want: &["\u{fffd}"],
            },
        ];
        for case in cases {
            let dir = tempfile::tempdir().unwrap();
            let files: Vec<(File, u64)> = case
                .files
                .iter()
                .enumerate()
                .map(|(i, content)| {
                    let path = dir.path().join(format!("f{i}"));
                    std::fs::write(&path, content).unwrap();
                    (File::open(&path).unwrap(), content.len() as u64)
                })
                .collect();
            assert_eq!(
                read_last_lines(&files, case.n).unwrap(),
                case.want,
                "case {:?}",
                case.name
            );
        }
    }

    #[test]
    fn read_last_lines_reads_across_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        let mut content = String::new();
        for i in 0..100_000 {
            content.push_str(&format!("line {i}\n"));
        }
        std::fs::write(&path, &content).unwrap();
        let files = [(File::open(&path).unwrap(), content.len() as u64)];
        let lines = read_last_lines(&files, 20_000).unwrap();
        assert_eq!(lines.len(), 20_000);
        assert_eq!(lines[0], "line 80000");
        assert_eq!(lines[19_999], "line 99999");
    }
}
