//! What a daemon started by a hand-off does before it takes anything over:
//! find the document, decide whether it can read it, and otherwise exec
//! the old binary again with the same document (the fallback).

use std::collections::BTreeMap;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};

use super::exec::{self, Target};
use super::state::{self, CarriedConfig, Document, StateError, FALLBACK_VAR, STATE_FD_VAR};

/// Largest document read: 100 apps take about 100 KiB.
const MAX_DOCUMENT: u64 = 64 * 1024 * 1024;

/// A hand-off to this process.
#[derive(Debug)]
pub struct Incoming {
    pub document: Document,
    /// The memfd, kept for a fallback exec.
    memfd: OwnedFd,
    /// Set when this is the old binary again: why the new one refused.
    pub fallback_error: Option<String>,
}

/// Why a hand-off cannot be taken over.
#[derive(Debug, thiserror::Error)]
pub enum IncomingError {
    #[error("{STATE_FD_VAR}={value} is not an open fd")]
    BadFd { value: String },
    #[error("reading the hand-off state: {0}")]
    Read(std::io::Error),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("hand-off state names fd {fd}, which is not open")]
    ClosedFd { fd: i32 },
}

/// Whether this is a test build (feature `test-handoff`) running as the
/// binary the environment variable `var` names: so tests can hand off to
/// a binary that cannot read (part of) the state. A release build never
/// reads such a variable.
#[cfg(feature = "test-handoff")]
fn test_build_named_by(var: &str) -> bool {
    match (std::env::var_os(var), std::fs::read_link("/proc/self/exe")) {
        (Some(named), Ok(me)) => me.as_os_str() == named,
        _ => false,
    }
}

/// The versions this binary reads; none for a test build named by
/// `APPVISOR_TEST_HANDOFF_UNREADABLE_BY`.
fn reads() -> std::ops::RangeInclusive<u32> {
    #[cfg(feature = "test-handoff")]
    if test_build_named_by("APPVISOR_TEST_HANDOFF_UNREADABLE_BY") {
        tracing::warn!("a test build that reads no hand-off state");
        #[allow(clippy::reversed_empty_ranges)]
        return 1..=0;
    }
    state::READS
}

/// The hand-off this process was started with, if any. `Err` carries the
/// memfd when one was found, for [`fall_back_unread`].
pub fn take() -> Option<Result<Incoming, (IncomingError, Option<OwnedFd>)>> {
    let value = std::env::var(STATE_FD_VAR).ok()?;
    let fd: i32 = match value.parse() {
        Ok(fd) if fd > 2 && exec::is_open(fd) => fd,
        _ => return Some(Err((IncomingError::BadFd { value }, None))),
    };
    // SAFETY: the previous image of this process left fd `fd` open for us,
    // named in the environment: it is the document's memfd and nothing
    // else in this process knows or owns it; taken once.
    let memfd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ours, just taken.
    let _ = unsafe { exec::mark(&[fd], true) };
    let fallback_error = std::env::var(FALLBACK_VAR).ok();
    let result = exec::read_memfd(&memfd, MAX_DOCUMENT)
        .map_err(IncomingError::Read)
        .and_then(|bytes| Ok(Document::parse(&bytes, &reads())?))
        .and_then(
            |document| match document.fds().into_iter().find(|fd| !exec::is_open(*fd)) {
                Some(fd) => Err(IncomingError::ClosedFd { fd }),
                None => Ok(document),
            },
        );
    Some(match result {
        Ok(document) => {
            // SAFETY: the document names these fds, checked open, left
            // for us by our previous image; nothing else here uses them.
            let _ = unsafe { exec::mark(&document.fds(), true) };
            Ok(Incoming {
                document,
                memfd,
                fallback_error,
            })
        }
        Err(error) => Err((error, Some(memfd))),
    })
}

impl Incoming {
    /// Takes ownership of the apps' fds, by number, and closes the old
    /// binary's (this process keeps its own). The listeners are taken by
    /// the daemon's start-up. Once called, a fallback is no longer
    /// possible.
    pub fn take_fds(&self) -> BTreeMap<i32, OwnedFd> {
        // SAFETY: `take` checked that the fallback fd is open and named
        // once; nothing else takes it.
        drop(unsafe { OwnedFd::from_raw_fd(self.document.fallback_fd) });
        self.document
            .apps
            .iter()
            .flat_map(|app| app.fds())
            .map(|fd| {
                // SAFETY: `take` checked that each is open and named once;
                // the document is the only record of them in this process,
                // and this is the only place that takes the apps' fds.
                (fd, unsafe { OwnedFd::from_raw_fd(fd) })
            })
            .collect()
    }

    /// The configuration the document carries
    /// ([`Document::carried_config`]); one it cannot read for a test build
    /// named by `APPVISOR_TEST_HANDOFF_CONFIG_UNREADABLE_BY`.
    pub fn carried_config(&self) -> Option<Result<CarriedConfig, String>> {
        #[cfg(feature = "test-handoff")]
        if test_build_named_by("APPVISOR_TEST_HANDOFF_CONFIG_UNREADABLE_BY") {
            let why = "a test build that reads no carried configuration";
            return self.document.config.as_ref().map(|_| Err(why.to_owned()));
        }
        self.document.carried_config()
    }

    /// Execs the old binary again with the same document, telling it why;
    /// returns only if that exec failed.
    pub fn fall_back(&self, why: &str) -> std::io::Error {
        fall_back_with(&self.memfd, &self.document, why)
    }
}

/// Execs the binary the document's fallback fd holds; returns only if that
/// exec failed.
pub fn fall_back_with(memfd: &OwnedFd, document: &Document, why: &str) -> std::io::Error {
    tracing::error!(
        error = why,
        "cannot take over from the previous appvisord; execing it again"
    );
    // SAFETY: the document's fds were checked open and are not yet owned
    // by anything in this process (no `take_fds` before a fallback).
    let fallback = unsafe { std::os::fd::BorrowedFd::borrow_raw(document.fallback_fd) };
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    exec::exec(
        Target::Fd(fallback.as_fd()),
        &argv,
        memfd,
        &document.fds(),
        Some(why),
    )
}

/// A document this binary cannot read: only its fallback fd can be found
/// without parsing it, so the old binary is exec'd through the raw JSON's
/// `fallback_fd` field, which every version keeps.
pub fn fall_back_unread(memfd: &OwnedFd, why: &str) -> std::io::Error {
    #[derive(serde::Deserialize)]
    struct Minimal {
        fallback_fd: i32,
    }
    let bytes = match exec::read_memfd(memfd, MAX_DOCUMENT) {
        Ok(bytes) => bytes,
        Err(error) => return error,
    };
    let minimal: Minimal = match serde_json::from_slice(&bytes) {
        Ok(minimal) => minimal,
        Err(error) => return std::io::Error::new(std::io::ErrorKind::InvalidData, error),
    };
    if minimal.fallback_fd < 3 || !exec::is_open(minimal.fallback_fd) {
        return std::io::Error::new(std::io::ErrorKind::NotFound, "no fallback binary open");
    }
    tracing::error!(
        error = why,
        "cannot read the previous appvisord's hand-off state; execing it again"
    );
    // SAFETY: checked open; the fd is the old binary, left for us, and
    // nothing in this process owns it.
    let fallback = unsafe { std::os::fd::BorrowedFd::borrow_raw(minimal.fallback_fd) };
    // The fds the old document names are unknown to this binary: the old
    // one left them open (not close-on-exec) and they still are, as
    // nothing here marked them; only the memfd needs passing.
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    exec::exec(
        Target::Fd(fallback),
        &argv,
        memfd,
        &[minimal.fallback_fd],
        Some(why),
    )
}
