//! Event-driven emptiness: one inotify instance for all app cgroups, and a
//! task that turns `cgroup.events` modifications into `populated` values on
//! `tokio::sync::watch` channels. Never polls.
//!
//! The kernel signals every change of `populated` (and `frozen`) as a
//! file-modified event on `cgroup.events` (cgroup-v2.rst, "Core Interface
//! Files"), at most every 20 ms per file: a burst is delayed, not lost.
//! Each event makes the task re-read the file, so an event that is merged or
//! reordered never leaves a stale value behind.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, InotifyEvent, WatchDescriptor};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::tree::read_populated;
use super::{AppCgroup, CgroupError};

/// Follows `populated` of any number of app cgroups.
///
/// Dropping the watcher stops its task; every receiver then reports the
/// channel closed. A receiver whose channel closes while its cgroup still
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
    by_path: HashMap<PathBuf, WatchDescriptor>,
}

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
}

#[derive(Debug)]
struct Watched {
    events: PathBuf,
    populated: watch::Sender<bool>,
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
    /// has been dropped (noticed at the next event or `watch` call).
    /// Removing the cgroup does not end it: cgroupfs sends no `IN_IGNORED`
    /// on rmdir while the watch pins the inode.
    pub fn watch(&self, app: &AppCgroup) -> Result<watch::Receiver<bool>, CgroupError> {
        if self.task.is_finished() {
            return Err(CgroupError::WatcherGone);
        }
        let events = app.events_path();
        let mut watches = self.shared.lock();
        self.shared.forget_unwatched(&mut watches);
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
                publish(&watched.populated, populated);
                watched.populated.subscribe()
            }
            None => {
                let (sender, receiver) = watch::channel(populated);
                watches.insert(
                    wd,
                    Watched {
                        events,
                        populated: sender,
                    },
                );
                receiver
            }
        };
        tracing::debug!(cgroup = %app.dir().display(), populated, "watching cgroup");
        Ok(receiver)
    }

    /// Ends the watch of `app`: its receivers see the channel close. Call it
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
        self.watches.lock().unwrap_or_else(PoisonError::into_inner)
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
                refresh(watched);
            }
        }
        self.forget_unwatched(&mut watches);
    }

    /// Drops the watches no receiver listens to any more.
    fn forget_unwatched(&self, watches: &mut Watches) {
        let inotify = &self.inotify.get_ref().0;
        let Watches { by_wd, by_path } = watches;
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
    }
}

fn refresh(watched: &Watched) {
    match read_populated(&watched.events) {
        Ok(populated) => publish(&watched.populated, populated),
        // Gone between the event and the read: a removed cgroup is empty.
        Err(CgroupError::Read { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            publish(&watched.populated, false);
        }
        Err(error) => {
            tracing::warn!(error = %error, "cannot re-read cgroup events");
        }
    }
}

fn publish(sender: &watch::Sender<bool>, populated: bool) {
    sender.send_if_modified(|current| {
        let changed = *current != populated;
        *current = populated;
        changed
    });
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
