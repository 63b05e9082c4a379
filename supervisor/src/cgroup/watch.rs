//! Event-driven emptiness: one inotify instance for all app cgroups, and a
//! task that turns `cgroup.events` modifications into `populated` values,
//! each cgroup's on a [`Populated`] (a value and its watchers' wakers under
//! a mutex: every instance of every app has one, and a tokio watch channel
//! was three times its size). Never polls.
//!
//! The kernel signals every change of `populated` (and `frozen`) as a
//! file-modified event on `cgroup.events` (cgroup-v2.rst, "Core Interface
//! Files"), at most every 20 ms per file: a burst is delayed, not lost.
//! Each event makes the task re-read the file, so an event that is merged or
//! reordered never leaves a stale value behind.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, InotifyEvent, WatchDescriptor};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::task::JoinHandle;

use super::tree::read_populated;
use super::{AppCgroup, CgroupError};
use crate::locks;

/// Follows `populated` of any number of app cgroups.
///
/// Dropping the watcher stops its task; every receiver then reports the
/// watch ended. A receiver whose watch ends while its cgroup still
/// exists must not be taken as "empty": ask [`AppCgroup::is_populated`].
#[derive(Debug)]
pub struct CgroupWatcher {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

#[derive(Debug)]
struct Shared {
    inotify: AsyncFd<InotifyFd>,
    /// Taken by `watch` across add-watch, first read and insert, so the task
    /// never sees an event for a watch whose channel is not there yet.
    watches: Mutex<Watches>,
}

/// The watches by descriptor, for events, and by file, for `unwatch`: one
/// app's stop costs a lookup, not a walk over every app's watch.
#[derive(Debug, Default)]
struct Watches {
    by_wd: HashMap<WatchDescriptor, Watched>,
    /// Keyed by the same path `by_wd`'s entry holds: one copy per watch.
    by_path: HashMap<Arc<Path>, WatchDescriptor>,
    /// How many watches the last sweep for unwatched ones left: the next
    /// sweep waits until there are twice as many ([`Watches::due`]).
    swept: usize,
}

/// No sweep for unwatched watches below this many watches.
pub(super) const SWEEP_FLOOR: usize = 64;

impl Watches {
    fn insert(&mut self, wd: WatchDescriptor, watched: Watched) {
        self.by_path.insert(watched.events.clone(), wd);
        self.by_wd.insert(wd, watched);
    }

    fn remove(&mut self, wd: &WatchDescriptor) -> Option<Watched> {
        let watched = self.by_wd.remove(wd)?;
        if self.by_path.get(&watched.events) == Some(wd) {
            self.by_path.remove(&watched.events);
        }
        Some(watched)
    }

    fn clear(&mut self) {
        self.by_wd.clear();
        self.by_path.clear();
    }

    /// Whether a sweep for watches no receiver listens to is due: once
    /// their number doubled since the last. Sweeping at every call, as
    /// before, looked at every app's watch for each app started: work
    /// that grew with the square of the number of apps. Watches without
    /// receivers are rare (the supervisor unwatches a cgroup it removes),
    /// and this way they never outnumber the others by more than the floor.
    fn due(&self) -> bool {
        self.by_wd.len() >= (2 * self.swept).max(SWEEP_FLOOR)
    }
}

#[derive(Debug)]
struct Watched {
    events: Arc<Path>,
    populated: Publisher,
}

/// A cgroup's `populated` as the watcher last read it, for one receiver:
/// [`Populated::changed`] resolves at each change since this receiver
/// last saw the value, and with `None` once the watch has ended and no
/// change is left unseen.
#[derive(Debug)]
pub struct Populated {
    cell: Arc<Mutex<Cell>>,
    /// The version this receiver saw last.
    seen: u64,
}

/// What the watcher and a cgroup's receivers share.
#[derive(Debug)]
struct Cell {
    value: bool,
    /// Counts the changes of `value`.
    version: u64,
    /// The watch has ended: no change comes any more.
    ended: bool,
    receivers: usize,
    /// The tasks waiting for a change.
    wakers: Vec<Waker>,
}

fn lock_cell(cell: &Mutex<Cell>) -> MutexGuard<'_, Cell> {
    // Each change under the lock leaves the cell consistent.
    locks::lock(cell)
}

impl Populated {
    /// The value as last read.
    pub fn get(&self) -> bool {
        lock_cell(&self.cell).value
    }

    /// The value after a change this receiver has not seen yet (which it
    /// then has); `None` once the watch has ended with nothing unseen.
    pub async fn changed(&mut self) -> Option<bool> {
        std::future::poll_fn(|cx| self.poll_changed(cx)).await
    }

    /// Resolves once the value is `want`, at once if it is: `true`; or
    /// `false` once the watch has ended without it.
    pub async fn wait_for(&mut self, want: bool) -> bool {
        if self.get() == want {
            return true;
        }
        while let Some(value) = self.changed().await {
            if value == want {
                return true;
            }
        }
        false
    }

    /// [`Populated::changed`] as a poll.
    pub fn poll_changed(&mut self, cx: &mut Context<'_>) -> Poll<Option<bool>> {
        let mut cell = lock_cell(&self.cell);
        if cell.version != self.seen {
            self.seen = cell.version;
            return Poll::Ready(Some(cell.value));
        }
        if cell.ended {
            return Poll::Ready(None);
        }
        if !cell.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            cell.wakers.reserve_exact(1);
            cell.wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

impl Drop for Populated {
    fn drop(&mut self) {
        lock_cell(&self.cell).receivers -= 1;
    }
}

/// The watcher's end of a cgroup's [`Populated`]; dropping it ends the
/// watch for every receiver.
#[derive(Debug)]
struct Publisher(Arc<Mutex<Cell>>);

impl Publisher {
    /// A publisher of `value`, and its first receiver.
    fn new(value: bool) -> (Publisher, Populated) {
        let cell = Arc::new(Mutex::new(Cell {
            value,
            version: 0,
            ended: false,
            receivers: 1,
            wakers: Vec::new(),
        }));
        let receiver = Populated {
            cell: Arc::clone(&cell),
            seen: 0,
        };
        (Publisher(cell), receiver)
    }

    /// Another receiver, which has seen the current value.
    fn subscribe(&self) -> Populated {
        let mut cell = lock_cell(&self.0);
        cell.receivers += 1;
        Populated {
            cell: Arc::clone(&self.0),
            seen: cell.version,
        }
    }

    /// Whether no receiver is left.
    fn is_closed(&self) -> bool {
        lock_cell(&self.0).receivers == 0
    }

    /// Sets the value; the receivers wake only if it changed.
    fn publish(&self, value: bool) {
        let wakers = {
            let mut cell = lock_cell(&self.0);
            if cell.value == value {
                return;
            }
            cell.value = value;
            cell.version += 1;
            std::mem::take(&mut cell.wakers)
        };
        wakers.into_iter().for_each(Waker::wake);
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        let wakers = {
            let mut cell = lock_cell(&self.0);
            cell.ended = true;
            std::mem::take(&mut cell.wakers)
        };
        wakers.into_iter().for_each(Waker::wake);
    }
}

/// `AsyncFd` wants `AsRawFd`; nix's `Inotify` offers `AsFd`.
#[derive(Debug)]
struct InotifyFd(Inotify);

impl AsRawFd for InotifyFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

impl CgroupWatcher {
    /// Creates the inotify instance and spawns the task reading it on the
    /// current tokio runtime.
    pub fn start() -> Result<CgroupWatcher, CgroupError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| CgroupError::NoRuntime)?;
        let inotify =
            Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).map_err(|errno| {
                CgroupError::Inotify {
                    operation: "create",
                    source: errno.into(),
                }
            })?;
        let inotify = {
            let _entered = runtime.enter();
            // SAFETY: `InotifyFd` owns the descriptor (an `OwnedFd` inside
            // nix's `Inotify`), never replaces it, and closes it only when
            // dropped with the `AsyncFd`, so it stays open and the same for
            // the registration's whole life.
            unsafe { AsyncFd::register_with_interest(InotifyFd(inotify), Interest::READABLE) }
                .map_err(|error| CgroupError::Inotify {
                    operation: "register",
                    source: error.into(),
                })?
        };
        let shared = Arc::new(Shared {
            inotify,
            watches: Mutex::new(Watches::default()),
        });
        let task = runtime.spawn(run(Arc::clone(&shared)));
        Ok(CgroupWatcher { shared, task })
    }

    /// A receiver of `populated` for `app`, starting with its current value.
    ///
    /// Watching the same cgroup again shares the existing watch. A watch
    /// lasts until [`CgroupWatcher::unwatch`], or until every receiver of it
    /// has been dropped (noticed at its next event, or by a sweep of a
    /// `watch` call once the number of watches doubled since the last).
    /// Removing the cgroup does not end it: cgroupfs sends no `IN_IGNORED`
    /// on rmdir while the watch pins the inode.
    pub fn watch(&self, app: &AppCgroup) -> Result<Populated, CgroupError> {
        if self.task.is_finished() {
            return Err(CgroupError::WatcherGone);
        }
        let events = app.events_path();
        let mut watches = self.shared.lock();
        if watches.due() {
            self.shared.forget_unwatched(&mut watches);
        }
        let wd = self
            .shared
            .inotify
            .get_ref()
            .0
            .add_watch(&events, AddWatchFlags::IN_MODIFY)
            .map_err(|source| CgroupError::Watch {
                path: events.clone(),
                source,
            })?;
        // Read after the watch exists: a change from here on raises an event.
        let populated = match read_populated(&events) {
            Ok(populated) => populated,
            Err(error) => {
                if !watches.by_wd.contains_key(&wd) {
                    let _ = self.shared.inotify.get_ref().0.rm_watch(wd);
                }
                return Err(error);
            }
        };
        let receiver = match watches.by_wd.get(&wd) {
            Some(watched) => {
                watched.populated.publish(populated);
                watched.populated.subscribe()
            }
            None => {
                let (sender, receiver) = Publisher::new(populated);
                watches.insert(
                    wd,
                    Watched {
                        events: events.into(),
                        populated: sender,
                    },
                );
                receiver
            }
        };
        tracing::debug!(cgroup = %app.dir().display(), populated, "watching cgroup");
        Ok(receiver)
    }

    /// Ends the watch of `app`: its receivers see the watch end. Call it
    /// after [`AppCgroup::remove`]; a cgroup not watched is no error.
    pub fn unwatch(&self, app: &AppCgroup) {
        let events = app.events_path();
        let mut watches = self.shared.lock();
        let Some(wd) = watches.by_path.get(events.as_path()).copied() else {
            return;
        };
        watches.remove(&wd);
        // Fails only if the kernel already dropped the watch.
        let _ = self.shared.inotify.get_ref().0.rm_watch(wd);
    }

    #[cfg(test)]
    pub(super) fn watch_count(&self) -> usize {
        self.shared.lock().by_wd.len()
    }
}

impl Drop for CgroupWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Watches> {
        // The map stays consistent whatever panicked while holding it.
        locks::lock(&self.watches)
    }

    fn handle(&self, events: Vec<InotifyEvent>) {
        let mut watches = self.lock();
        for event in events {
            if event.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                tracing::warn!("cgroup inotify queue overflowed, re-reading every cgroup");
                watches.by_wd.values().for_each(refresh);
            } else if event.mask.contains(AddWatchFlags::IN_IGNORED) {
                // The kernel dropped the watch: receivers see the channel
                // close. After our own rm_watch the entry is already gone,
                // and the kernel hands out watch descriptors cyclically, so
                // this one cannot belong to a newer watch yet.
                watches.remove(&event.wd);
            } else if let Some(watched) = watches.by_wd.get(&event.wd) {
                if watched.populated.is_closed() {
                    // No one listens any more: the watch goes.
                    watches.remove(&event.wd);
                    let _ = self.inotify.get_ref().0.rm_watch(event.wd);
                } else {
                    refresh(watched);
                }
            }
        }
    }

    /// Drops the watches no receiver listens to any more.
    fn forget_unwatched(&self, watches: &mut Watches) {
        let inotify = &self.inotify.get_ref().0;
        let Watches {
            by_wd,
            by_path,
            swept,
        } = watches;
        by_wd.retain(|wd, watched| {
            let keep = !watched.populated.is_closed();
            if !keep {
                let _ = inotify.rm_watch(*wd);
                if by_path.get(&watched.events) == Some(wd) {
                    by_path.remove(&watched.events);
                }
            }
            keep
        });
        *swept = by_wd.len();
    }
}

fn refresh(watched: &Watched) {
    match read_populated(&watched.events) {
        Ok(populated) => watched.populated.publish(populated),
        // Gone between the event and the read: a removed cgroup is empty.
        Err(CgroupError::Read { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            watched.populated.publish(false);
        }
        Err(error) => {
            tracing::warn!(error = %error, "cannot re-read cgroup events");
        }
    }
}

async fn run(shared: Arc<Shared>) {
    loop {
        let mut ready = match shared.inotify.readable().await {
            Ok(ready) => ready,
            Err(error) => {
                tracing::error!(error = %error, "cgroup inotify failed, no longer watching cgroups");
                break;
            }
        };
        match ready.try_io(|inotify| inotify.get_ref().0.read_events().map_err(io::Error::from)) {
            Ok(Ok(events)) => shared.handle(events),
            Ok(Err(error)) => {
                tracing::error!(error = %error, "cannot read cgroup inotify events, no longer watching cgroups");
                break;
            }
            Err(_would_block) => {}
        }
    }
    // Close every channel so no one waits for an event that will not come.
    shared.lock().clear();
}
