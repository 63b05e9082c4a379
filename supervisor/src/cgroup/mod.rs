//! One cgroup v2 per app: create it, kill everything in it (daemonized
//! grandchildren included), learn without polling when it is empty, check
//! that a pid belongs to it, and remove it; and its `[limits]` (`limits`),
//! in v2 where the controllers are enabled, else in the v1 hierarchies.
//!
//! Layout: `<v2 mount><daemon's own cgroup>/<instance>/<app>`, e.g.
//! `/sys/fs/cgroup/unified/appvisor/shop` on a hybrid host whose daemon runs
//! in the root cgroup. The instance directory (a daemon flag, default
//! `appvisor`) lets several daemons (tests) run side by side.
//!
//! This module never decides when to kill or restart (that is `app` and
//! `supervise`), never forks, and never touches a cgroup outside its
//! instance directory.
//!
//! # Without cgroup v2
//!
//! [`CgroupRoot::detect`] returns `Ok(None)` when the host has no v2 tree or
//! the daemon is not in one. The supervise layer then falls back, and says so
//! once at start-up in the log:
//!
//! - each app's main process leads its own session and so its own process
//!   group (`setsid()` in the exec helper), and stopping signals the group
//!   (`kill(-pgid, sig)`);
//! - the daemon is a child subreaper (`PR_SET_CHILD_SUBREAPER`, set anyway), so
//!   daemonized grandchildren that left the group are reparented to it and are
//!   at least reaped, though they cannot be attributed to an app;
//! - "empty" means the main process has been reaped; `NOTIFY_SOCKET` senders
//!   are accepted from the main pid only instead of
//!   [`AppCgroup::contains_pid`] (a `MAINPID=` field is not followed).

mod discover;
mod limits;
#[cfg(test)]
mod root_tests;
mod tree;
mod watch;

use std::path::PathBuf;
use std::time::Duration;

pub use discover::{find_v2_mount, own_v2_path};
pub use limits::{cpu_quota, parse_oom_kill, AppLimits, Controller, LimitRoot, CPU_PERIOD_US};
pub use tree::{crash_restart_blocked, AppCgroup, CgroupRoot, ReapReport, Reaped};
pub use watch::{CgroupWatcher, Populated};

/// What went wrong with which cgroup file, and doing what.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create cgroup {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot remove cgroup {path}")]
    Remove {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("unexpected contents in {path}: {contents:?}")]
    Malformed { path: PathBuf, contents: String },
    #[error("invalid cgroup name {name:?}: use letters, digits, '_' and '-' only")]
    InvalidName { name: String },
    #[error("cannot send {signal} to pid {pid} of cgroup {path}")]
    Signal {
        path: PathBuf,
        pid: u32,
        signal: nix::sys::signal::Signal,
        #[source]
        source: nix::errno::Errno,
    },
    #[error("cgroup {path} still has processes after {}", humantime::format_duration(*after))]
    StillPopulated { path: PathBuf, after: Duration },
    #[error("cannot {operation} inotify for cgroup events")]
    Inotify {
        operation: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot watch {path}")]
    Watch {
        path: PathBuf,
        #[source]
        source: nix::errno::Errno,
    },
    #[error(
        "no cgroup hierarchy offers the {controller} controller (on cgroup v2 appvisord \
         hands controllers to apps only as the one process of its cgroup: run it as a \
         systemd service with Delegate=yes)"
    )]
    NoController { controller: &'static str },
    #[error("the cgroup watcher lost its inotify instance")]
    WatcherGone,
    #[error("the cgroup watcher must be started inside a tokio runtime")]
    NoRuntime,
}
