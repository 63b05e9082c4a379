//! Captured stdout and stderr of each app: the pipes, the files under
//! `log_dir/NAME/`, rotation, the in-memory tail and live followers.
//!
//! Owns everything an app writes to fd 1 and 2. It must never make an app
//! block: a capture task drains its pipe until EOF whatever happens to the
//! files (a failed write is counted as dropped and reported, never retried
//! while the pipe fills), and a slow `logs -f` follower loses messages
//! instead of slowing capture. It must never lose or reorder a byte it
//! managed to write: every chunk read is appended in order, and two capture
//! tasks for the same stream (an old and a new instance during a restart)
//! are serialized per stream.
//!
//! # Why writes happen on the async worker thread
//!
//! Appends are plain `write(2)` calls on a `std::fs::File` inside the capture
//! task. A write to a local file system copies into the page cache and
//! returns; it blocks only under dirty-page throttling or a failing disk, and
//! then for the time the kernel needs to write back, which is what a writer
//! thread would wait for too. One write per chunk of up to [`READ_CHUNK`]
//! bytes keeps the syscall count low; a dedicated writer thread would add a
//! channel hop and a context switch per chunk for no gain in the common case.
//! The log directory is expected to be local (`/var/log/appvisor`), not NFS.
//!
//! # Lines
//!
//! A capture task hands over complete lines and keeps a trailing partial line
//! back until its newline arrives, [`PARTIAL_LINE_FLUSH`] passes without more
//! output, the partial line reaches [`MAX_PARTIAL_LINE`] bytes, or the pipe
//! closes. So two instances writing during a restart interleave whole lines,
//! and rotation can cut between lines.

mod file;
mod tail;

use std::fs::{DirBuilder, File};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use memchr::memrchr;
use nix::fcntl::{fcntl, FcntlArg};
use nix::unistd::pipe2;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tracing::{debug, error, Instrument};

use crate::config::LogSpec;
pub(crate) use file::DisplayChain;
use file::{Limits, LogFile};
use tail::Tail;

pub use file::READ_LAST_MAX_BYTES;

/// Bytes asked of the pipe per read.
pub const READ_CHUNK: usize = 128 * 1024;
/// A partial line held back longer than this is written as it is.
pub const PARTIAL_LINE_FLUSH: Duration = Duration::from_millis(200);
/// A partial line that grows to this size is written without waiting for its
/// newline (and may then be interleaved with another instance's output).
pub const MAX_PARTIAL_LINE: usize = 64 * 1024;
/// Pipe capacity asked for with `F_SETPIPE_SZ`.
pub const PIPE_SIZE: usize = 1024 * 1024;
/// After a read shorter than [`BATCH_BELOW`], wait this long before reading
/// again so output piles up in the pipe: an app that writes line by line
/// (`PYTHONUNBUFFERED=1`) then costs one wake-up and one read per
/// millisecond, not per line. A [`PIPE_SIZE`] pipe absorbs 1 GB/s for that
/// long, so the app does not block; with a smaller pipe there is no wait.
pub const BATCH_DELAY: Duration = Duration::from_millis(1);
/// Reads shorter than this mean the pipe was drained: the app writes slower
/// than the daemon reads, and waiting [`BATCH_DELAY`] costs it nothing.
const BATCH_BELOW: usize = READ_CHUNK / 4;
/// Chunks a `logs -f` follower may fall behind before it loses some. Each is
/// at most [`READ_CHUNK`] bytes, so this also bounds what the channel holds.
const FOLLOW_CAPACITY: usize = 64;
/// Mode of `log_dir/NAME`.
const DIR_MODE: u32 = 0o750;

/// One of the two captured streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    /// The current file's name in the app's log directory.
    pub fn file_name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout.log",
            Stream::Stderr => "stderr.log",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

impl std::fmt::Display for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("cannot create log directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot open log file {path}")]
    OpenFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot set owner root:{gid} and mode {mode:04o} on {path}")]
    SetOwner {
        path: PathBuf,
        gid: u32,
        mode: u32,
        #[source]
        source: io::Error,
    },
    #[error("cannot create output pipe")]
    Pipe {
        #[source]
        source: io::Error,
    },
}

/// Creates a pipe for one output stream: `(read end, write end)`, both
/// close-on-exec (the spawn code dup2s the write end onto fd 1 or 2, which
/// clears the flag on the copy only).
///
/// The pipe is enlarged to [`PIPE_SIZE`] so a burst does not block the app
/// while the daemon is busy. The kernel may refuse (an unprivileged daemon
/// above `/proc/sys/fs/pipe-max-size`, or a user over
/// `/proc/sys/fs/pipe-user-pages-hard`); the default size then still works.
pub fn make_pipe() -> Result<(OwnedFd, OwnedFd), LogError> {
    let (read, write) = pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|errno| LogError::Pipe {
        source: io::Error::from(errno),
    })?;
    // PIPE_SIZE is 1 MiB, far below i32::MAX.
    let size = PIPE_SIZE as libc::c_int;
    if let Err(errno) = fcntl(&read, FcntlArg::F_SETPIPE_SZ(size)) {
        debug!(%errno, size, "kept the default pipe size");
    }
    Ok((read, write))
}

/// The captured output of one app, shared by all its instances (spawns).
///
/// Open it once per app and share the `Arc`: two `AppLogs` on the same
/// directory would each rotate the files under the other. The group is fixed
/// at open; a changed `group` needs a new `AppLogs`.
#[derive(Debug)]
pub struct AppLogs {
    app: String,
    dir: PathBuf,
    max_size: AtomicU64,
    keep: AtomicU32,
    stdout: StreamLog,
    stderr: StreamLog,
}

/// Everything about one stream. Lock order: `file`, then `tail`.
#[derive(Debug)]
struct StreamLog {
    /// Held for the whole append (file write, tail, followers) so concurrent
    /// captures of the stream keep one order everywhere.
    file: Mutex<LogFile>,
    /// Separate from `file` so reading the tail never waits for a disk write.
    tail: Mutex<Tail>,
    /// Created by the first follower: the channel's ring is allocated
    /// whole, and most apps are never followed.
    followers: OnceLock<broadcast::Sender<Bytes>>,
    dropped: AtomicU64,
}

impl StreamLog {
    fn subscribe(&self) -> broadcast::Receiver<Bytes> {
        self.followers
            .get_or_init(|| broadcast::channel(FOLLOW_CAPACITY).0)
            .subscribe()
    }
}

impl AppLogs {
    /// Creates `log_dir/app` (0750 root:`gid`) and opens `stdout.log` and
    /// `stderr.log` in it (0640 root:`gid`) for appending, fixing the owner
    /// and mode of what is already there. `tail_lines` bounds what
    /// [`AppLogs::tail`] returns.
    pub fn open(
        log_dir: &Path,
        app: &str,
        spec: &LogSpec,
        gid: u32,
        tail_lines: usize,
    ) -> Result<Arc<AppLogs>, LogError> {
        let dir = log_dir.join(app);
        create_dir(log_dir, &dir, gid)?;
        let stream = |stream: Stream| -> Result<StreamLog, LogError> {
            let file = LogFile::open(dir.join(stream.file_name()), gid, spec.keep)?;
            Ok(StreamLog {
                file: Mutex::new(file),
                tail: Mutex::new(Tail::new(tail_lines)),
                followers: OnceLock::new(),
                dropped: AtomicU64::new(0),
            })
        };
        Ok(Arc::new(AppLogs {
            app: app.to_owned(),
            stdout: stream(Stream::Stdout)?,
            stderr: stream(Stream::Stderr)?,
            dir,
            max_size: AtomicU64::new(spec.max_size),
            keep: AtomicU32::new(spec.keep),
        }))
    }

    /// `log_dir/NAME`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Starts a task that drains `pipe` (a read end from [`make_pipe`]) into
    /// `stream` until EOF, that is until every holder of the write end (the
    /// app and its children) has closed it. Must be called inside a tokio
    /// runtime with the time driver enabled. Await the handle rather than
    /// abort it: an aborted task drops its held-back partial line.
    pub fn capture(self: &Arc<Self>, stream: Stream, pipe: OwnedFd) -> JoinHandle<()> {
        let logs = Arc::clone(self);
        let span = tracing::info_span!("capture", app = %self.app, %stream);
        tokio::spawn(async move { logs.run_capture(stream, pipe).await }.instrument(span))
    }

    async fn run_capture(&self, stream: Stream, pipe: OwnedFd) {
        let batch = fcntl(&pipe, FcntlArg::F_GETPIPE_SZ)
            .is_ok_and(|size| usize::try_from(size).is_ok_and(|size| size >= PIPE_SIZE));
        let mut rx = match pipe::Receiver::from_owned_fd(pipe) {
            Ok(rx) => rx,
            Err(error) => {
                // Dropping the read end makes the app's writes fail with
                // EPIPE rather than block forever.
                error!(%error, "cannot watch output pipe, output of this instance is lost");
                return;
            }
        };
        // Allocated once the pipe first has data, so an app that never
        // writes costs no buffer; then twice the read size, so the
        // held-back partial line and a full read fit and the buffer is
        // reused once the previous chunk is written.
        let mut buf = BytesMut::new();
        loop {
            if buf.capacity() == 0 {
                if let Err(error) = rx.readable().await {
                    error!(%error, "cannot watch output pipe, output of this instance is lost");
                    return;
                }
                buf.reserve(2 * READ_CHUNK);
            }
            buf.reserve(READ_CHUNK);
            let read = if buf.is_empty() {
                rx.read_buf(&mut buf).await
            } else {
                // `read_buf` is cancel safe: on timeout nothing was read.
                match tokio::time::timeout(PARTIAL_LINE_FLUSH, rx.read_buf(&mut buf)).await {
                    Ok(read) => read,
                    Err(_elapsed) => {
                        self.append(stream, buf.split().freeze());
                        continue;
                    }
                }
            };
            match read {
                Ok(0) => break,
                Ok(n) => {
                    // Only the new bytes can hold a newline: what was held
                    // back is a partial line. memrchr stops at the last one.
                    let new = buf.len() - n;
                    if let Some(i) = memrchr(b'\n', &buf[new..]) {
                        let lines = buf.split_to(new + i + 1).freeze();
                        self.append(stream, lines);
                    } else if buf.len() >= MAX_PARTIAL_LINE {
                        self.append(stream, buf.split().freeze());
                    }
                    if batch && n < BATCH_BELOW {
                        rx = match pause(rx).await {
                            Ok(rx) => rx,
                            Err(error) => {
                                error!(%error, "cannot watch output pipe again, output of this instance is lost");
                                break;
                            }
                        };
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    error!(%error, "cannot read output pipe, output of this instance is lost");
                    break;
                }
            }
        }
        if !buf.is_empty() {
            self.append(stream, buf.freeze());
        }
        debug!("output pipe closed");
    }

    /// Writes one chunk to the file, the tail and the followers, in that
    /// order, under the stream's lock.
    fn append(&self, stream: Stream, chunk: Bytes) {
        let log = self.stream(stream);
        let limits = Limits {
            max_size: self.max_size.load(Ordering::Relaxed),
            keep: self.keep.load(Ordering::Relaxed),
        };
        let mut file = lock(&log.file);
        let dropped = file.append(&chunk, limits);
        if dropped > 0 {
            log.dropped.fetch_add(dropped, Ordering::Relaxed);
        }
        lock(&log.tail).push(&chunk);
        // Fails only when nobody follows; a lagging follower is told it
        // lagged by its receiver.
        if let Some(followers) = log.followers.get() {
            let _ = followers.send(chunk);
        }
    }

    /// The last `n` complete lines in memory (at most `tail_lines`, each cut
    /// to 4 KiB), oldest first, plus the trailing partial line if any.
    /// Invalid UTF-8 is replaced with U+FFFD.
    pub fn tail(&self, stream: Stream, n: usize) -> Vec<String> {
        lock(&self.stream(stream).tail).lines(n)
    }

    /// Where both streams are now, for [`AppLogs::tail_since`].
    pub fn mark(&self) -> LogMark {
        LogMark {
            stdout: lock(&self.stdout.tail).mark(),
            stderr: lock(&self.stderr.tail).mark(),
        }
    }

    /// [`AppLogs::tail`] of what `stream` got after `mark`: the output of
    /// one attempt, for its failure report.
    pub fn tail_since(&self, stream: Stream, mark: LogMark, n: usize) -> Vec<String> {
        let at = match stream {
            Stream::Stdout => mark.stdout,
            Stream::Stderr => mark.stderr,
        };
        lock(&self.stream(stream).tail).lines_since(at, n)
    }

    /// Raw chunks of `stream` as they are written, for `logs -f`. A receiver
    /// that falls more than 64 chunks behind gets `RecvError::Lagged` and
    /// loses them; capture never waits for it.
    pub fn subscribe(&self, stream: Stream) -> broadcast::Receiver<Bytes> {
        self.stream(stream).subscribe()
    }

    /// [`AppLogs::tail`] and [`AppLogs::subscribe`] at one instant: no chunk
    /// is both in the lines and received, and none is in neither.
    pub fn tail_and_subscribe(
        &self,
        stream: Stream,
        n: usize,
    ) -> (Vec<String>, broadcast::Receiver<Bytes>) {
        let log = self.stream(stream);
        let _file = lock(&log.file);
        let lines = lock(&log.tail).lines(n);
        (lines, log.subscribe())
    }

    /// The last `n` complete lines from the files (current, then rotated as
    /// needed), oldest first, plus a trailing partial line; for requests
    /// beyond the memory tail. Reads at most [`READ_LAST_MAX_BYTES`]. Blocking
    /// file I/O: call it from `spawn_blocking`.
    pub fn read_last_lines(&self, stream: Stream, n: usize) -> io::Result<Vec<String>> {
        self.snapshot(stream)?.last_lines(n)
    }

    /// The files as they are now plus a follower of what comes next, taken
    /// at one instant under the stream's lock: every byte is either in the
    /// snapshot or received, never both, never neither (for `logs -n N -f`).
    /// Opens up to `keep + 1` files but reads none; read the snapshot with
    /// [`LogSnapshot::last_lines`] from `spawn_blocking`.
    pub fn snapshot_and_subscribe(
        &self,
        stream: Stream,
    ) -> io::Result<(LogSnapshot, broadcast::Receiver<Bytes>)> {
        let log = self.stream(stream);
        let file = lock(&log.file);
        let files = file.snapshot(self.keep.load(Ordering::Relaxed))?;
        Ok((LogSnapshot { files }, log.subscribe()))
    }

    fn snapshot(&self, stream: Stream) -> io::Result<LogSnapshot> {
        let files = lock(&self.stream(stream).file).snapshot(self.keep.load(Ordering::Relaxed))?;
        Ok(LogSnapshot { files })
    }

    /// Applies a changed `[logs]`: from the next write on, files rotate at the
    /// new `max_size`, and the next rotation keeps the new `keep` (deleting
    /// the surplus).
    pub fn update_spec(&self, spec: &LogSpec) {
        self.max_size.store(spec.max_size, Ordering::Relaxed);
        self.keep.store(spec.keep, Ordering::Relaxed);
    }

    /// Bytes of `stream` read from the app but not written to disk since the
    /// daemon started (disk full, I/O errors), for status and metrics.
    pub fn dropped_bytes(&self, stream: Stream) -> u64 {
        self.stream(stream).dropped.load(Ordering::Relaxed)
    }

    fn stream(&self, stream: Stream) -> &StreamLog {
        match stream {
            Stream::Stdout => &self.stdout,
            Stream::Stderr => &self.stderr,
        }
    }
}

/// A point in an app's output, from [`AppLogs::mark`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogMark {
    stdout: u64,
    stderr: u64,
}

/// One stream's files at an instant: open handles (immune to rotation) and
/// the length each had.
#[derive(Debug)]
pub struct LogSnapshot {
    /// Newest first.
    files: Vec<(File, u64)>,
}

impl LogSnapshot {
    /// The last `n` complete lines, oldest first, plus a trailing partial
    /// line, as [`AppLogs::read_last_lines`]. Blocking file I/O.
    pub fn last_lines(&self, n: usize) -> io::Result<Vec<String>> {
        file::read_last_lines(&self.files, n)
    }
}

/// Waits [`BATCH_DELAY`] with the pipe out of the reactor: the kernel wakes
/// epoll on every write to a pipe, so a registered pipe would wake the
/// runtime once per line of the app even while nobody reads it.
async fn pause(rx: pipe::Receiver) -> io::Result<pipe::Receiver> {
    let fd = rx.into_nonblocking_fd()?;
    tokio::time::sleep(BATCH_DELAY).await;
    pipe::Receiver::from_owned_fd_unchecked(fd)
}

/// Creates `log_dir` if needed (0755) and `dir` inside it, then gives `dir`
/// owner root:`gid` and mode 0750 whatever it had before.
fn create_dir(log_dir: &Path, dir: &Path, gid: u32) -> Result<(), LogError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(log_dir)
        .map_err(|source| LogError::CreateDir {
            path: log_dir.to_owned(),
            source,
        })?;
    match DirBuilder::new().mode(DIR_MODE).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(source) => {
            return Err(LogError::CreateDir {
                path: dir.to_owned(),
                source,
            })
        }
    }
    let handle = File::options()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(dir)
        .map_err(|source| LogError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
    file::set_owner_and_mode(&handle, dir, gid, DIR_MODE)
}

/// Locks a mutex, ignoring poisoning: every critical section here leaves its
/// state consistent at each step, so a panic elsewhere must not stop capture.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests;
