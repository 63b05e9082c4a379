//! The output thread: one thread with its own epoll set reads every app's
//! stdout and stderr pipes and appends what it reads.
//!
//! A tokio task and two reactor registrations per app cost about 1.8 KB of
//! the daemon's memory per app while the app sits idle; here an app costs
//! its entry in one table. And the appends, which are blocking `write(2)`s
//! to log files, no longer run on the async runtime's two workers, so a disk
//! under writeback pressure slows the output thread, never the control
//! socket or the supervision of other apps.
//!
//! Each pipe is read as a capture task read it before, one read at a time:
//!
//! - a pipe is in the epoll set with `EPOLLONESHOT`, so each readiness gives
//!   one read and the pipe is armed again only after it;
//! - after a read shorter than [`BATCH_BELOW`] from a [`PIPE_SIZE`] pipe, it
//!   rests [`BATCH_DELAY`] unarmed, so an app that writes line by line
//!   costs a wake-up per millisecond, not per line;
//! - a held-back partial line is written after [`PARTIAL_LINE_FLUSH`]
//!   without output, and an empty buffer freed after [`BUFFER_IDLE`];
//! - the first read of an idle pipe goes to the stack ([`FIRST_READ`]), so
//!   an end of file needs no buffer.
//!
//! Commands (a new capture, a stop for a hand-off) arrive through a queue
//! and an eventfd in the same epoll set. With no output and no deadline the
//! thread sleeps in `epoll_wait` without a timeout: no idle wake-ups.

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use memchr::memrchr;
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use tokio::sync::oneshot;
use tracing::{debug, error, Span};

use super::{
    lock, AppLogs, Stream, BATCH_BELOW, BATCH_DELAY, BUFFER_IDLE, FIRST_READ, MAX_PARTIAL_LINE,
    PARTIAL_LINE_FLUSH, PIPE_SIZE, READ_CHUNK,
};

/// The read ends a capture gives back, stdout's then stderr's: `None` for
/// a stream that was not given, ended at end of file, or was lost.
pub type Ends = [Option<OwnedFd>; 2];

/// A capture of an instance's streams on the output thread.
#[derive(Debug)]
pub struct Capture {
    id: u64,
    ended: oneshot::Receiver<Ends>,
}

impl Capture {
    /// Resolves once every stream ended (at end of file, when the app and
    /// its children have all closed their write ends) or was handed over.
    /// Dropping a `Capture` does not stop it.
    pub async fn ended(self) -> Ends {
        self.ended.await.unwrap_or_default()
    }

    /// Stops the capture between two reads to hand the pipes over (to the
    /// binary a hand-off execs): what it read of a partial line is written
    /// first, what is still in the pipes stays there. Returns the read ends
    /// (non-blocking), stdout's then stderr's.
    pub async fn hand_over(self) -> Ends {
        if let Ok(hub) = hub() {
            hub.send(Command::Stop(self.id));
        }
        self.ended.await.unwrap_or_default()
    }
}

/// Starts capturing `pipes` (stdout's and stderr's read ends from
/// [`make_pipe`](super::make_pipe)) into `logs`. `span` is the app's: the
/// thread logs about these pipes inside it.
pub(super) fn start(logs: Arc<AppLogs>, pipes: [Option<OwnedFd>; 2], span: Span) -> Capture {
    static NEXT_ID: AtomicU64 = AtomicU64::new(0);
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let (done, ended) = oneshot::channel();
    match hub() {
        Ok(hub) => hub.send(Command::Add(Group {
            id,
            logs,
            span,
            // For what an append starts on the runtime (the retry of log
            // files that cannot be opened).
            runtime: tokio::runtime::Handle::try_current().ok(),
            pipes: pipes.map(|fd| fd.map(Pipe::new)),
            ends: [None, None],
            done: Some(done),
        })),
        Err(why) => {
            // Dropping the read ends makes the app's writes fail with EPIPE
            // rather than block forever.
            span.in_scope(|| error!(why, "no output thread, output of this instance is lost"));
            let _ = done.send(Ends::default());
        }
    }
    Capture { id, ended }
}

enum Command {
    Add(Group),
    Stop(u64),
}

/// What the daemon's side holds: the command queue and the eventfd that
/// wakes the thread for it.
struct Hub {
    queue: Mutex<Vec<Command>>,
    wake: EventFd,
}

impl Hub {
    fn send(&self, command: Command) {
        let first = {
            let mut queue = lock(&self.queue);
            queue.push(command);
            queue.len() == 1
        };
        // The thread reads the eventfd before it takes the queue: a command
        // pushed after it took the queue finds it empty and wakes it again.
        if first {
            if let Err(errno) = self.wake.write(1) {
                error!(%errno, "cannot wake the output thread");
            }
        }
    }
}

/// The output thread, started with the first capture. The error, if it
/// cannot start, is kept: each capture then reports it.
fn hub() -> Result<&'static Hub, &'static str> {
    static HUB: OnceLock<Result<Arc<Hub>, String>> = OnceLock::new();
    HUB.get_or_init(|| {
        Reader::start().map_err(|error| format!("cannot start the output thread: {error}"))
    })
    .as_deref()
    .map_err(String::as_str)
}

/// The epoll data of the eventfd; a pipe's is its slot and stream.
const WAKE: u64 = u64::MAX;

/// Everything of one capture, owned by the output thread.
struct Group {
    id: u64,
    logs: Arc<AppLogs>,
    span: Span,
    runtime: Option<tokio::runtime::Handle>,
    /// Stdout's and stderr's pipes while they are read.
    pipes: [Option<Pipe>; 2],
    /// Read ends stopped for a hand-over.
    ends: Ends,
    done: Option<oneshot::Sender<Ends>>,
}

/// Enters a group's span (the app's), for what the thread logs about its
/// pipes, and its runtime, for what an append starts there. Takes the two
/// fields rather than the group so its pipes stay free to change.
fn enter<'a>(
    span: &'a Span,
    runtime: &'a Option<tokio::runtime::Handle>,
) -> (
    tracing::span::Entered<'a>,
    Option<tokio::runtime::EnterGuard<'a>>,
) {
    (
        span.enter(),
        runtime.as_ref().map(tokio::runtime::Handle::enter),
    )
}

/// One pipe being read.
struct Pipe {
    fd: OwnedFd,
    /// Empty (no allocation) while the pipe is idle; see the module docs.
    buf: BytesMut,
    /// The pipe is large enough to rest [`BATCH_DELAY`] after a short read.
    batch: bool,
    /// Out of the epoll set's armed pipes until its deadline.
    resting: bool,
    deadline: Option<Instant>,
}

impl Pipe {
    fn new(fd: OwnedFd) -> Pipe {
        let batch = fcntl(&fd, FcntlArg::F_GETPIPE_SZ)
            .is_ok_and(|size| usize::try_from(size).is_ok_and(|size| size >= PIPE_SIZE));
        Pipe {
            fd,
            buf: BytesMut::new(),
            batch,
            resting: false,
            deadline: None,
        }
    }

    /// When this pipe's buffer needs attention without output: a partial
    /// line to write, or an empty buffer to free.
    fn idle_deadline(&self, now: Instant) -> Option<Instant> {
        if self.buf.capacity() == 0 {
            None
        } else if self.buf.is_empty() {
            Some(now + BUFFER_IDLE)
        } else {
            Some(now + PARTIAL_LINE_FLUSH)
        }
    }
}

/// What one read did.
enum Read {
    /// Read `rest`: whether the pipe rests before it is armed again.
    Some { rest: bool },
    /// Nothing there after all: arm it again.
    Nothing,
    /// End of file, or an error that ends the capture of this pipe.
    Ended,
}

/// The output thread's own state.
struct Reader {
    epoll: Epoll,
    hub: Arc<Hub>,
    /// Indexed by slot; a freed slot is reused.
    groups: Vec<Option<Group>>,
    free: Vec<usize>,
    slots: HashMap<u64, usize>,
    /// Every pipe's deadline, with its key.
    deadlines: BTreeSet<(Instant, u64)>,
}

/// A pipe's key in the epoll set and the deadlines: its group's slot and
/// its stream's index (0 stdout, 1 stderr).
fn key_of(slot: usize, index: usize) -> u64 {
    (slot as u64) << 1 | index as u64
}

/// The slot and stream index of a pipe's key.
fn slot_of(key: u64) -> (usize, usize) {
    ((key >> 1) as usize, (key & 1) as usize)
}

fn stream_of(index: usize) -> Stream {
    if index == 0 {
        Stream::Stdout
    } else {
        Stream::Stderr
    }
}

impl Reader {
    fn start() -> io::Result<Arc<Hub>> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        let wake = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?;
        epoll.add(&wake, EpollEvent::new(EpollFlags::EPOLLIN, WAKE))?;
        let hub = Arc::new(Hub {
            queue: Mutex::new(Vec::new()),
            wake,
        });
        let reader = Reader {
            epoll,
            hub: Arc::clone(&hub),
            groups: Vec::new(),
            free: Vec::new(),
            slots: HashMap::new(),
            deadlines: BTreeSet::new(),
        };
        std::thread::Builder::new()
            .name("output".to_owned())
            .spawn(move || reader.run())?;
        Ok(hub)
    }

    fn run(mut self) {
        let mut events = [EpollEvent::empty(); 64];
        loop {
            let timeout = match self.deadlines.first() {
                None => EpollTimeout::NONE,
                Some(&(at, _)) => wait_for(at.saturating_duration_since(Instant::now())),
            };
            let n = match self.epoll.wait(&mut events, timeout) {
                Ok(n) => n,
                Err(Errno::EINTR) => 0,
                Err(errno) => {
                    error!(%errno, "the output thread cannot wait for output; trying again");
                    std::thread::sleep(Duration::from_millis(100));
                    0
                }
            };
            let mut woken = false;
            for event in &events[..n] {
                match event.data() {
                    WAKE => woken = true,
                    key => self.guarded(key, |reader| reader.readable(key)),
                }
            }
            self.expire(Instant::now());
            // After the events: a slot freed by a stop and reused by a new
            // capture must not get an event of the pipe it held before.
            if woken {
                self.commands();
            }
        }
    }

    /// Runs `work` for the pipe `key`; if it panics (a bug), that app's
    /// capture ends and its output is lost until its next start, while
    /// every other app's goes on.
    fn guarded(&mut self, key: u64, work: impl FnOnce(&mut Reader)) {
        if catch_unwind(AssertUnwindSafe(|| work(self))).is_err() {
            let (slot, _) = slot_of(key);
            if let Some(group) = self.groups.get(slot).and_then(Option::as_ref) {
                group.span.in_scope(|| {
                    error!("output capture failed (a bug), output of this instance is lost");
                });
            }
            self.remove(slot, false);
        }
    }

    fn commands(&mut self) {
        // Read before taking the queue: see `Hub::send`.
        let _ = self.hub.wake.read();
        let commands = std::mem::take(&mut *lock(&self.hub.queue));
        for command in commands {
            match command {
                Command::Add(group) => self.add(group),
                Command::Stop(id) => {
                    if let Some(&slot) = self.slots.get(&id) {
                        self.guarded(key_of(slot, 0), |reader| reader.remove(slot, true));
                    }
                }
            }
        }
    }

    fn add(&mut self, mut group: Group) {
        let slot = self.free.pop().unwrap_or_else(|| {
            self.groups.push(None);
            self.groups.len() - 1
        });
        for (index, pipe) in group.pipes.iter_mut().enumerate() {
            let Some(watched) = pipe.as_ref() else {
                continue;
            };
            if let Err(errno) = watch(&self.epoll, &watched.fd, key_of(slot, index)) {
                // Dropping the read end makes the app's writes fail with
                // EPIPE rather than block forever.
                let stream = stream_of(index);
                group.span.in_scope(|| {
                    error!(%errno, %stream, "cannot watch output pipe, output of this instance is lost");
                });
                *pipe = None;
            }
        }
        self.slots.insert(group.id, slot);
        self.groups[slot] = Some(group);
        self.finish_if_done(slot);
    }

    /// Reads the pipe `key` once, then arms it again, rests it, or ends it.
    fn readable(&mut self, key: u64) {
        let (slot, index) = slot_of(key);
        let stream = stream_of(index);
        let (read, now) = {
            let Some(group) = self.groups.get_mut(slot).and_then(Option::as_mut) else {
                return;
            };
            let Some(pipe) = group.pipes[index].as_mut() else {
                return;
            };
            let _entered = enter(&group.span, &group.runtime);
            let read = read_once(&group.logs, stream, pipe);
            let now = Instant::now();
            match read {
                Read::Ended => {
                    set_deadline(&mut self.deadlines, key, pipe, None);
                    let _ = self.epoll.delete(&pipe.fd);
                    group.pipes[index] = None;
                    debug!(%stream, "output pipe closed");
                }
                Read::Some { rest: true } => {
                    pipe.resting = true;
                    set_deadline(&mut self.deadlines, key, pipe, Some(now + BATCH_DELAY));
                }
                Read::Some { rest: false } | Read::Nothing => {}
            }
            (read, now)
        };
        match read {
            Read::Ended => self.finish_if_done(slot),
            Read::Some { rest: true } => {}
            Read::Some { rest: false } => {
                self.arm(key);
                self.after_read(key, now);
            }
            // A spurious wake-up: the pipe's deadline stands.
            Read::Nothing => self.arm(key),
        }
    }

    /// Sets the idle deadline of the pipe `key` after a read.
    fn after_read(&mut self, key: u64, now: Instant) {
        let (slot, index) = slot_of(key);
        if let Some(pipe) = self.groups[slot]
            .as_mut()
            .and_then(|g| g.pipes[index].as_mut())
        {
            let deadline = pipe.idle_deadline(now);
            set_deadline(&mut self.deadlines, key, pipe, deadline);
        }
    }

    /// Arms the pipe `key` for its next readiness; a pipe that cannot be
    /// armed is lost.
    fn arm(&mut self, key: u64) {
        let (slot, index) = slot_of(key);
        let stream = stream_of(index);
        let Some(group) = self.groups[slot].as_mut() else {
            return;
        };
        let Some(pipe) = group.pipes[index].as_mut() else {
            return;
        };
        let mut event = EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLONESHOT, key);
        if let Err(errno) = self.epoll.modify(&pipe.fd, &mut event) {
            group.span.in_scope(|| {
                error!(%errno, %stream, "cannot watch output pipe again, output of this instance is lost");
            });
            let logs = Arc::clone(&group.logs);
            if let Some(pipe) = group.pipes[index].take() {
                set_deadline_of(&mut self.deadlines, key, pipe.deadline, None);
                if !pipe.buf.is_empty() {
                    logs.append(stream, pipe.buf.freeze());
                }
            }
            self.finish_if_done(slot);
        }
    }

    /// Handles every deadline up to `now`.
    fn expire(&mut self, now: Instant) {
        while let Some(&(at, key)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.deadlines.pop_first();
            self.guarded(key, |reader| reader.deadline(key, now));
        }
    }

    /// The pipe `key` reached its deadline: it rested enough, or it has
    /// been idle with a partial line or an empty buffer.
    fn deadline(&mut self, key: u64, now: Instant) {
        let (slot, index) = slot_of(key);
        let stream = stream_of(index);
        let Some(group) = self.groups.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        let Some(pipe) = group.pipes[index].as_mut() else {
            return;
        };
        pipe.deadline = None;
        if pipe.resting {
            pipe.resting = false;
            self.arm(key);
            self.after_read(key, now);
            return;
        }
        if pipe.buf.is_empty() {
            // An empty buffer idle for BUFFER_IDLE goes.
            pipe.buf = BytesMut::new();
            return;
        }
        let _entered = enter(&group.span, &group.runtime);
        group.logs.append(stream, pipe.buf.split().freeze());
        let deadline = pipe.idle_deadline(now);
        set_deadline(&mut self.deadlines, key, pipe, deadline);
    }

    /// Ends the capture in `slot`. `hand_over`: what was read is written
    /// and the read ends go back to the daemon; otherwise they are closed.
    fn remove(&mut self, slot: usize, hand_over: bool) {
        let Some(mut group) = self.groups.get_mut(slot).and_then(Option::take) else {
            return;
        };
        self.slots.remove(&group.id);
        self.free.push(slot);
        let _entered = enter(&group.span, &group.runtime);
        for index in 0..2 {
            let Some(pipe) = group.pipes[index].take() else {
                continue;
            };
            set_deadline_of(
                &mut self.deadlines,
                key_of(slot, index),
                pipe.deadline,
                None,
            );
            let _ = self.epoll.delete(&pipe.fd);
            if hand_over {
                let stream = stream_of(index);
                if !pipe.buf.is_empty() {
                    group.logs.append(stream, pipe.buf.freeze());
                }
                debug!(%stream, "output pipe handed over");
                group.ends[index] = Some(pipe.fd);
            }
        }
        if let Some(done) = group.done.take() {
            let _ = done.send(std::mem::take(&mut group.ends));
        }
    }

    /// Ends the capture in `slot` once none of its pipes is read any more.
    fn finish_if_done(&mut self, slot: usize) {
        if self.groups[slot]
            .as_ref()
            .is_some_and(|group| group.pipes.iter().all(Option::is_none))
        {
            self.remove(slot, true);
        }
    }
}

/// Puts a pipe in the epoll set, armed for one readiness, non-blocking.
fn watch(epoll: &Epoll, fd: &OwnedFd, key: u64) -> nix::Result<()> {
    let flags = OFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    epoll.add(
        fd,
        EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLONESHOT, key),
    )
}

/// One read of `pipe`, and the append of the complete lines it finished.
fn read_once(logs: &Arc<AppLogs>, stream: Stream, pipe: &mut Pipe) -> Read {
    let read = if pipe.buf.capacity() == 0 {
        // A first read on the stack: most often the pipe turned readable
        // because the app exited, and its end of file then costs no buffer
        // (an mmap and munmap of the whole buffer per stream, when 1,000
        // apps stop at once).
        let mut first = [0u8; FIRST_READ];
        match nix::unistd::read(&pipe.fd, &mut first) {
            Ok(0) => return Read::Ended,
            Ok(n) => {
                // Twice the read size: the held-back partial line and a
                // full read fit, and the buffer is reused once the previous
                // chunk is written.
                pipe.buf.reserve(2 * READ_CHUNK);
                pipe.buf.extend_from_slice(&first[..n]);
                Ok(n)
            }
            Err(errno) => Err(io::Error::from(errno)),
        }
    } else {
        pipe.buf.reserve(READ_CHUNK);
        read_into(&pipe.fd, &mut pipe.buf)
    };
    match read {
        Ok(0) => {
            if !pipe.buf.is_empty() {
                logs.append(stream, pipe.buf.split().freeze());
            }
            Read::Ended
        }
        Ok(n) => {
            // Only the new bytes can hold a newline: what was held back is
            // a partial line. memrchr stops at the last one.
            let new = pipe.buf.len() - n;
            if let Some(i) = memrchr(b'\n', &pipe.buf[new..]) {
                let lines = pipe.buf.split_to(new + i + 1).freeze();
                logs.append(stream, lines);
            } else if pipe.buf.len() >= MAX_PARTIAL_LINE {
                logs.append(stream, pipe.buf.split().freeze());
            }
            Read::Some {
                rest: pipe.batch && n < BATCH_BELOW,
            }
        }
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ) =>
        {
            Read::Nothing
        }
        Err(error) => {
            error!(%error, %stream, "cannot read output pipe, output of this instance is lost");
            if !pipe.buf.is_empty() {
                logs.append(stream, pipe.buf.split().freeze());
            }
            Read::Ended
        }
    }
}

/// One `read(2)` into `buf`'s spare capacity.
fn read_into(fd: &OwnedFd, buf: &mut BytesMut) -> io::Result<usize> {
    let spare: &mut [MaybeUninit<u8>] = buf.spare_capacity_mut();
    // SAFETY: read(2) writes at most `spare.len()` bytes to the start of
    // `spare`, which is valid for writes of that many bytes, and returns how
    // many it wrote (or -1).
    let n = unsafe { libc::read(fd.as_raw_fd(), spare.as_mut_ptr().cast(), spare.len()) };
    let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
    // SAFETY: the first `n` bytes of the spare capacity were just written,
    // and `n <= spare.len()`, so the new length is within the capacity.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

/// The `epoll_wait` timeout for a deadline `left` from now, rounded up to
/// whole milliseconds so the thread never spins until it.
fn wait_for(left: Duration) -> EpollTimeout {
    let ms = left.as_nanos().div_ceil(1_000_000);
    EpollTimeout::try_from(i32::try_from(ms).unwrap_or(i32::MAX)).unwrap_or(EpollTimeout::MAX)
}

fn set_deadline(
    deadlines: &mut BTreeSet<(Instant, u64)>,
    key: u64,
    pipe: &mut Pipe,
    at: Option<Instant>,
) {
    set_deadline_of(deadlines, key, pipe.deadline, at);
    pipe.deadline = at;
}

fn set_deadline_of(
    deadlines: &mut BTreeSet<(Instant, u64)>,
    key: u64,
    old: Option<Instant>,
    new: Option<Instant>,
) {
    if let Some(old) = old {
        deadlines.remove(&(old, key));
    }
    if let Some(new) = new {
        deadlines.insert((new, key));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::wait_for;
    use nix::sys::epoll::EpollTimeout;

    #[test]
    fn waits_round_up_to_whole_milliseconds() {
        assert_eq!(wait_for(Duration::ZERO), EpollTimeout::ZERO);
        assert_eq!(
            wait_for(Duration::from_micros(1)),
            EpollTimeout::try_from(1).unwrap()
        );
        assert_eq!(
            wait_for(Duration::from_millis(200)),
            EpollTimeout::try_from(200).unwrap()
        );
        assert_eq!(
            wait_for(Duration::from_micros(200_001)),
            EpollTimeout::try_from(201).unwrap()
        );
    }
}
