//! Captured stdout and stderr of each app: the pipes, the files under
//! `log_dir/NAME/`, rotation, the in-memory tail, the order of the two
//! streams, live followers and bounded reads.
//!
//! Owns everything an app writes to fd 1 and 2. It must never make an app
//! block: the output thread drains every pipe until EOF whatever happens to
//! the files (a failed write, a full disk or a log directory that cannot be
//! created is counted as dropped and reported, never retried while the pipe
//! fills), and a slow `logs -f` follower loses messages instead of slowing
//! capture. It must never lose or reorder a byte it managed to write: every
//! chunk read is appended in order, and two captures of the same stream (an
//! old and a new instance during a restart) are serialized per stream. And
//! it must never hold more than a fixed amount per app or per reader,
//! whatever the app writes or an operator asks for.
//!
//! # One output thread
//!
//! Every app's pipes are read, and appended to its files, by one thread with
//! its own epoll set (`capture`), not by tokio tasks: an idle app then costs
//! an entry in a table rather than a task and two reactor registrations
//! (about 1.8 KB an app), and the appends, plain `write(2)` calls on a
//! `std::fs::File`, never run on the async runtime's workers. A write to a
//! local file system copies into the page cache and returns; it blocks only
//! under dirty-page throttling or a failing disk, and then the output thread
//! waits while every app's [`PIPE_SIZE`] pipe absorbs what it writes; the
//! control socket and supervision go on. One write per chunk of up to
//! [`READ_CHUNK`] bytes keeps the syscall count low. The log directory is
//! expected to be local (`/var/log/appvisor`), not NFS.
//!
//! # Lines
//!
//! A capture appends complete lines and keeps a trailing partial line back
//! until its newline arrives, [`PARTIAL_LINE_FLUSH`] passes without more
//! output, the partial line reaches [`MAX_PARTIAL_LINE`] bytes, or the pipe
//! closes. So two instances writing during a restart interleave whole lines,
//! and rotation can cut between lines. A line longer than [`MAX_LINE`] is cut
//! and marked [`CONTINUED`] (see `split`), so every file stays within its
//! size whatever the app writes.
//!
//! # Both streams
//!
//! Each append takes a stamp under the app's order lock, which also feeds
//! the tail and the followers, so the tail, `logs -f` and the files' index
//! all see one order (see `order`; docs/logs.md for the whole design).
//! Lock order: stdout's file, stderr's file, then the order lock.

mod capture;
mod file;
mod order;
mod read;
mod split;
mod tail;

use std::fs::{DirBuilder, File};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use nix::fcntl::{fcntl, FcntlArg};
use nix::unistd::pipe2;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn, Instrument};

use crate::config::LogSpec;
// Poisoning ignored: every critical section here leaves its state
// consistent at each step, so a panic elsewhere must not stop capture.
use crate::locks::lock;
pub(crate) use file::DisplayChain;
use file::{Limits, LogFile, Stamp};
use order::Clock;
use split::LineSplitter;
use tail::Tail;

pub use capture::{Capture, Ends};
pub use order::{Interleave, Selection};
pub use read::{LogReader, LogSnapshot, PIECE, READ_LAST_MAX_BYTES};
pub use split::{CONTINUED, MAX_LINE};
pub use tail::LogMark;

/// Bytes asked of the pipe per read.
pub const READ_CHUNK: usize = 128 * 1024;
/// A partial line held back longer than this is written as it is.
pub const PARTIAL_LINE_FLUSH: Duration = Duration::from_millis(200);
/// A partial line that grows to this size is written without waiting for its
/// newline (and may then be interleaved with another instance's output).
pub const MAX_PARTIAL_LINE: usize = 64 * 1024;
/// A capture's read buffer ([`READ_CHUNK`] twice over) is freed once its
/// app has written nothing for this long, and allocated again at the next
/// output: an app that wrote once must not keep a quarter of a megabyte
/// of the daemon's memory for the rest of its life.
pub const BUFFER_IDLE: Duration = Duration::from_secs(1);
/// The first read into an idle capture, on the stack: an end of file (the
/// app exited) needs no buffer.
const FIRST_READ: usize = 512;
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
/// at most [`READ_CHUNK`] bytes (plus continuation marks), so this also
/// bounds what the channel holds.
const FOLLOW_CAPACITY: usize = 64;
/// Mode of `log_dir/NAME` and of its index directory.
const DIR_MODE: u32 = 0o750;
/// The first retry of log files that cannot be opened; each failed retry
/// doubles the wait, up to [`REOPEN_MAX`].
pub const REOPEN_FIRST: Duration = Duration::from_secs(1);
/// The longest wait between retries of log files that cannot be opened.
pub const REOPEN_MAX: Duration = Duration::from_secs(60);

/// One captured chunk, as `logs -f` followers receive it.
pub type Chunk = (Stream, Bytes);

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
    /// `log_dir/NAME`, exactly sized; its parent is `log_dir` (a name is
    /// one path component). Neither is kept apart: a thousand apps would
    /// hold a thousand copies of `log_dir`.
    dir: Box<Path>,
    gid: u32,
    max_size: AtomicU64,
    keep: AtomicU32,
    stdout: StreamLog,
    stderr: StreamLog,
    order: Mutex<Order>,
    reopen: Mutex<Reopen>,
    /// The running instance's output pipes died with a crashed daemon:
    /// nothing reads them until the app's next spawn.
    detached: std::sync::atomic::AtomicBool,
}

/// Everything about one stream's files.
#[derive(Debug)]
struct StreamLog {
    /// Held for the whole append (split, stamp, file write) so concurrent
    /// captures of the stream keep one order everywhere.
    file: Mutex<StreamFile>,
    /// Bytes read from the app but not written to its files.
    dropped: AtomicU64,
    /// A copy of the file's problem, for status: reading it must not wait
    /// for a write in progress (a disk under writeback pressure).
    problem: Mutex<Option<String>>,
    /// Whether `problem` holds one: a status of a thousand apps, nearly
    /// all without, then takes no lock.
    has_problem: AtomicBool,
}

impl StreamLog {
    /// Copies the file's problem for [`AppLogs::health`]; called under the
    /// file's lock after anything that may change it.
    fn publish_problem(&self, file: &LogFile) {
        let mut shown = lock(&self.problem);
        if shown.as_deref() != file.problem() {
            *shown = file.problem().map(str::to_owned);
            // Under the lock: the flag follows the problem in order.
            self.has_problem.store(shown.is_some(), Ordering::Release);
        }
    }
}

#[derive(Debug)]
struct StreamFile {
    log: LogFile,
    splitter: LineSplitter,
}

/// What both streams share, under the order lock: the stamps, the tail and
/// the followers, so all three see one order. Separate from the files so
/// reading the tail never waits for a disk write.
#[derive(Debug)]
struct Order {
    clock: Clock,
    /// The stream that wrote last, and the stamp of its run.
    last: Option<Stream>,
    run: u64,
    tail: Tail,
    /// Created by the first follower: the channel's ring is allocated
    /// whole, and most apps are never followed.
    followers: Option<broadcast::Sender<Chunk>>,
}

/// Retrying log files that cannot be opened.
#[derive(Debug, Default)]
struct Reopen {
    /// A retry task runs.
    running: bool,
    /// When it tries next.
    next: Option<Instant>,
}

/// How an app's log files are doing, for status and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogHealth {
    /// Bytes of output read from the app but not written to its files since
    /// the daemon loaded it.
    pub dropped_bytes: u64,
    /// Why output is being dropped now, while it is.
    pub error: Option<String>,
}

/// `log_error` of an app whose output pipes died with a crashed daemon.
pub const DETACHED: &str = "output detached: the appvisord that read this instance's output ended \
     without handing it over (a crash); what the app writes is lost until its next start";

impl AppLogs {
    /// Creates `log_dir/app` (0750 root:`gid`) and opens `stdout.log` and
    /// `stderr.log` in it (0640 root:`gid`) for appending, fixing the owner
    /// and mode of what is already there. `tail_lines` bounds what
    /// [`AppLogs::tail`] returns. Blocking file I/O: [`AppLogs::unopened`]
    /// and [`AppLogs::open_files`] do the same in two steps.
    ///
    /// Never fails: when the directory or a file cannot be created, the
    /// app's output is counted as dropped (and kept in the tail), the
    /// reason is in [`AppLogs::health`], and a task retries with backoff
    /// from [`REOPEN_FIRST`] to [`REOPEN_MAX`] (inside a tokio runtime).
    pub fn open(
        log_dir: &Path,
        app: &str,
        spec: &LogSpec,
        gid: u32,
        tail_lines: usize,
    ) -> Arc<AppLogs> {
        let logs = AppLogs::unopened(log_dir, app, spec, gid, tail_lines);
        logs.open_files();
        logs
    }

    /// The logs of `app` with no file open yet, and no file touched: what
    /// the daemon registers at once, while [`AppLogs::open_files`] runs
    /// off the async runtime. Output appended before that is dropped and
    /// counted, so the app must not run before its files are open.
    pub fn unopened(
        log_dir: &Path,
        app: &str,
        spec: &LogSpec,
        gid: u32,
        tail_lines: usize,
    ) -> Arc<AppLogs> {
        let dir = log_dir.join(app);
        let stream = |stream: Stream| StreamLog {
            problem: Mutex::new(None),
            has_problem: AtomicBool::new(false),
            file: Mutex::new(StreamFile {
                log: LogFile::closed(exact(dir.join(stream.file_name())), gid, None),
                splitter: LineSplitter::default(),
            }),
            dropped: AtomicU64::new(0),
        };
        Arc::new(AppLogs {
            app: app.to_owned(),
            stdout: stream(Stream::Stdout),
            stderr: stream(Stream::Stderr),
            dir: dir.into_boxed_path(),
            gid,
            max_size: AtomicU64::new(spec.max_size),
            keep: AtomicU32::new(spec.keep),
            detached: std::sync::atomic::AtomicBool::new(false),
            order: Mutex::new(Order {
                clock: Clock::default(),
                last: None,
                run: 0,
                tail: Tail::new(tail_lines),
                followers: None,
            }),
            reopen: Mutex::default(),
        })
    }

    /// Creates the directory and opens the files of logs made by
    /// [`AppLogs::unopened`]; what cannot be opened is retried as
    /// [`AppLogs::open`] says. Blocking file I/O.
    pub fn open_files(self: &Arc<Self>) {
        if !self.open_closed_files(false) {
            if let Some(error) = self.health().error {
                warn!(
                    app = %self.app,
                    %error,
                    "cannot open the app's log files; it runs, and its output is dropped until they open"
                );
            }
            self.reopen_later();
        }
    }

    /// `log_dir/NAME`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Drains `pipe` (a read end from [`make_pipe`]) into `stream` on the
    /// output thread until EOF, that is until every holder of the write end
    /// (the app and its children) has closed it. The task it returns ends
    /// then; it must be called inside a tokio runtime.
    pub fn capture(self: &Arc<Self>, stream: Stream, pipe: OwnedFd) -> JoinHandle<()> {
        let pipes = match stream {
            Stream::Stdout => [Some(pipe), None],
            Stream::Stderr => [None, Some(pipe)],
        };
        let span = tracing::info_span!("capture", app = %self.app);
        let capture = capture::start(Arc::clone(self), pipes, span);
        tokio::spawn(async move {
            capture.ended().await;
        })
    }

    /// Drains both streams of one instance on the output thread (see
    /// `capture.rs`) until EOF, or until [`Capture::hand_over`] stops it
    /// between two reads to hand the pipes over (to the binary a hand-off
    /// execs). Each stream is read and appended in order. The thread logs
    /// about these pipes in `span`, the app's own.
    pub fn capture_handing_over(
        self: &Arc<Self>,
        stdout: Option<OwnedFd>,
        stderr: Option<OwnedFd>,
        span: tracing::Span,
    ) -> Capture {
        self.set_detached(false);
        capture::start(Arc::clone(self), [stdout, stderr], span)
    }

    /// Writes one chunk to the tail, the followers and the file, under the
    /// stream's lock, with its stamp taken under the order lock.
    fn append(self: &Arc<Self>, stream: Stream, chunk: Bytes) {
        let log = self.stream(stream);
        let limits = Limits {
            max_size: self.max_size.load(Ordering::Relaxed),
            keep: self.keep.load(Ordering::Relaxed),
        };
        let mut file = lock(&log.file);
        let chunk = file.splitter.split(chunk);
        let stamp = {
            let mut order = lock(&self.order);
            let new_run = order.last != Some(stream);
            if new_run {
                order.run = order.clock.next();
                order.last = Some(stream);
            }
            order.tail.push(stream, &chunk);
            // Fails only when nobody follows; a lagging follower is told it
            // lagged by its receiver.
            if let Some(followers) = &order.followers {
                let _ = followers.send((stream, chunk.clone()));
            }
            Stamp {
                run: order.run,
                new_run,
            }
        };
        let dropped = file.log.append(&chunk, limits, stamp);
        if dropped > 0 {
            log.dropped.fetch_add(dropped, Ordering::Relaxed);
        }
        log.publish_problem(&file.log);
        let closed = !file.log.is_open();
        drop(file);
        if closed {
            self.reopen_later();
        }
    }

    /// Starts the retry task unless it runs: it tries again after
    /// [`REOPEN_FIRST`], doubling the wait up to [`REOPEN_MAX`], until every
    /// file is open. Without a tokio runtime (unit tests) there is no retry.
    fn reopen_later(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        {
            let mut reopen = lock(&self.reopen);
            if reopen.running {
                return;
            }
            reopen.running = true;
            reopen.next = Some(Instant::now() + REOPEN_FIRST);
        }
        let logs = Arc::downgrade(self);
        let span = tracing::info_span!("logs", app = %self.app);
        runtime.spawn(
            async move {
                let mut delay = REOPEN_FIRST;
                loop {
                    tokio::time::sleep(delay).await;
                    let Some(strong) = logs.upgrade() else { return };
                    let reopened = tokio::task::spawn_blocking(move || strong.reopen_now()).await;
                    if reopened.unwrap_or(false) {
                        return;
                    }
                    delay = (delay * 2).min(REOPEN_MAX);
                    match logs.upgrade() {
                        Some(strong) => lock(&strong.reopen).next = Some(Instant::now() + delay),
                        None => return,
                    }
                }
            }
            .instrument(span),
        );
    }

    /// One retry: creates the directory and opens the files that are not
    /// open. True, and the retry task ends, once every file is open.
    /// Blocking file I/O.
    fn reopen_now(&self) -> bool {
        self.open_closed_files(true)
    }

    /// Creates the directory and opens the files that are not open (`retry`:
    /// after a failure, which is logged when it is over). True once every
    /// file is open.
    fn open_closed_files(&self, retry: bool) -> bool {
        let keep = self.keep.load(Ordering::Relaxed);
        let created = create_dir(&self.dir, self.gid);
        for stream in [Stream::Stdout, Stream::Stderr] {
            let log = self.stream(stream);
            let mut file = lock(&log.file);
            if file.log.is_open() {
                continue;
            }
            match &created {
                Ok(()) => match file.log.reopen(keep) {
                    Ok(()) if retry => info!(%stream, "log file open again"),
                    Ok(()) => {}
                    Err(error) => {
                        debug!(%stream, error = %DisplayChain(&error), "log file still cannot be opened");
                    }
                },
                Err(error) => file.log.set_problem(error),
            }
            log.publish_problem(&file.log);
        }
        // Decided under the retry lock: an append that finds a file closed
        // after this check sees `running` false and starts a new task.
        let mut reopen = lock(&self.reopen);
        let all_open = [Stream::Stdout, Stream::Stderr]
            .into_iter()
            .all(|stream| lock(&self.stream(stream).file).log.is_open());
        if all_open {
            reopen.running = false;
            reopen.next = None;
        }
        all_open
    }

    /// Dropped bytes and what is wrong now, if anything. Never waits for a
    /// write in progress.
    /// Says (`true`) that the running instance's output reaches no log:
    /// its pipes died with a crashed daemon. A capture (the next spawn's)
    /// clears it.
    pub fn set_detached(&self, detached: bool) {
        self.detached
            .store(detached, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn health(&self) -> LogHealth {
        let problem = [Stream::Stdout, Stream::Stderr]
            .into_iter()
            .map(|stream| self.stream(stream))
            .filter(|log| log.has_problem.load(Ordering::Acquire))
            .find_map(|log| lock(&log.problem).clone());
        let error = problem.map(|problem| {
            let next = lock(&self.reopen).next;
            match next {
                Some(next) => {
                    let secs = next.saturating_duration_since(Instant::now()).as_secs_f64();
                    format!("{problem}; output is dropped, next try in {}s", secs.ceil())
                }
                None => format!("{problem}; output is dropped"),
            }
        });
        let error = error.or_else(|| {
            self.detached
                .load(std::sync::atomic::Ordering::Relaxed)
                .then(|| DETACHED.to_owned())
        });
        LogHealth {
            dropped_bytes: self.dropped_bytes(Stream::Stdout) + self.dropped_bytes(Stream::Stderr),
            error,
        }
    }

    /// The last `n` complete lines in memory of the selected streams,
    /// interleaved in arrival order (at most `tail_lines`, each cut to
    /// 4 KiB), oldest first, plus the trailing partial line if any. Invalid
    /// UTF-8 is replaced with U+FFFD.
    pub fn tail(&self, selection: Selection, n: usize) -> Vec<String> {
        lock(&self.order).tail.lines(selection, n)
    }

    /// Where the output stands now, for [`AppLogs::tail_since`].
    pub fn mark(&self) -> LogMark {
        lock(&self.order).tail.mark()
    }

    /// [`AppLogs::tail`] of the output after `mark` only: what one start
    /// attempt wrote, say.
    pub fn tail_since(&self, selection: Selection, mark: LogMark, n: usize) -> Vec<String> {
        lock(&self.order).tail.lines_since(selection, mark, n)
    }

    /// Raw chunks of both streams as they are captured, for `logs -f`. A
    /// receiver that falls more than 64 chunks behind gets
    /// `RecvError::Lagged` and loses them; capture never waits for it.
    pub fn subscribe(&self) -> broadcast::Receiver<Chunk> {
        subscribe(&mut lock(&self.order))
    }

    /// The selected streams' files as they are now, to read with
    /// [`LogSnapshot::last_lines`] from `spawn_blocking`. Opens up to
    /// `2 * (keep + 1)` files (and their indexes) but reads none.
    pub fn snapshot(&self, selection: Selection) -> io::Result<LogSnapshot> {
        self.snapshot_inner(selection, false)
            .map(|(snapshot, _)| snapshot)
    }

    /// [`AppLogs::snapshot`] plus a follower of what comes next, taken at
    /// one instant: every byte is either in the snapshot or received, never
    /// both, never neither (for `logs -n N -f`).
    pub fn snapshot_and_subscribe(
        &self,
        selection: Selection,
    ) -> io::Result<(LogSnapshot, broadcast::Receiver<Chunk>)> {
        let (snapshot, live) = self.snapshot_inner(selection, true)?;
        Ok((snapshot, live.expect("asked to subscribe")))
    }

    fn snapshot_inner(
        &self,
        selection: Selection,
        follow: bool,
    ) -> io::Result<(LogSnapshot, Option<broadcast::Receiver<Chunk>>)> {
        let keep = self.keep.load(Ordering::Relaxed);
        // Lock order: stdout, stderr, order. Holding the files' locks means
        // no append is half done.
        let files: Vec<(Stream, MutexGuard<'_, StreamFile>)> = selection
            .streams()
            .iter()
            .map(|&stream| (stream, lock(&self.stream(stream).file)))
            .collect();
        let with_index = selection == Selection::Both;
        let mut streams = Vec::with_capacity(files.len());
        for (stream, file) in &files {
            streams.push((*stream, file.log.snapshot(keep, with_index)?));
        }
        let live = follow.then(|| subscribe(&mut lock(&self.order)));
        Ok((LogSnapshot::new(streams), live))
    }

    /// Applies a changed `[logs]`: from the next write on, files rotate at the
    /// new `max_size`, and the next rotation keeps the new `keep` (deleting
    /// the surplus).
    pub fn update_spec(&self, spec: &LogSpec) {
        self.max_size.store(spec.max_size, Ordering::Relaxed);
        self.keep.store(spec.keep, Ordering::Relaxed);
    }

    /// Bytes of `stream` read from the app but not written to disk since the
    /// daemon loaded it (disk full, I/O errors, no log directory), for
    /// status and metrics.
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

fn subscribe(order: &mut Order) -> broadcast::Receiver<Chunk> {
    order
        .followers
        .get_or_insert_with(|| broadcast::channel(FOLLOW_CAPACITY).0)
        .subscribe()
}

/// `path` with no spare capacity: `join` leaves some, and every app keeps
/// its paths for as long as it is loaded.
fn exact(mut path: PathBuf) -> PathBuf {
    path.shrink_to_fit();
    path
}

/// Creates `log_dir` (`dir`'s parent) if needed (0755) and `dir` inside
/// it, then gives `dir` owner root:`gid` and mode 0750 whatever it had
/// before; then the same for its index directory, whose absence only costs
/// the order of the streams.
fn create_dir(dir: &Path, gid: u32) -> Result<(), LogError> {
    let log_dir = dir.parent().unwrap_or(dir);
    DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(log_dir)
        .map_err(|source| LogError::CreateDir {
            path: log_dir.to_owned(),
            source,
        })?;
    make_private_dir(dir, gid)?;
    if let Err(error) = make_private_dir(&dir.join(file::INDEX_DIR), gid) {
        debug!(error = %DisplayChain(&error), "no index directory: the two streams keep no common order on disk");
    }
    Ok(())
}

/// Creates `dir` (0750) unless it exists, then makes it root:`gid` 0750,
/// never through a symlink.
fn make_private_dir(dir: &Path, gid: u32) -> Result<(), LogError> {
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

#[cfg(test)]
mod tests;
