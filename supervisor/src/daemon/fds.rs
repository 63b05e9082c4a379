//! The daemon's open-file limit: raised to the hard limit at start, so that
//! apps, not the soft default of 1024, decide how many the host runs.
//!
//! Apps do not inherit the raised limit: they get the soft limit the daemon
//! was started with (1024 under systemd's default `1024:524288`, which
//! keeps `select()` working in apps that use it), unless their `[limits]
//! open_files` says otherwise.

use std::io;

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// RLIMIT_NOFILE before and after [`raise`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NofileLimit {
    /// The soft limit the daemon was started with: what apps get.
    pub inherited: u64,
    /// The soft limit now: the daemon's own budget.
    pub soft: u64,
    pub hard: u64,
}

/// Raises the soft RLIMIT_NOFILE to the hard limit. A failure leaves the
/// limit as it was, and is returned with that limit for the caller to log.
pub fn raise() -> Result<NofileLimit, (NofileLimit, io::Error)> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)
        .map_err(|errno| (NofileLimit::unknown(), io::Error::from(errno)))?;
    let before = NofileLimit {
        inherited: soft,
        soft,
        hard,
    };
    if soft >= hard {
        return Ok(before);
    }
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
        .map_err(|errno| (before, io::Error::from(errno)))?;
    Ok(NofileLimit {
        soft: hard,
        ..before
    })
}

impl NofileLimit {
    /// What Linux starts processes with, for when even getrlimit fails.
    fn unknown() -> NofileLimit {
        NofileLimit {
            inherited: 1024,
            soft: 1024,
            hard: 1024,
        }
    }
}
