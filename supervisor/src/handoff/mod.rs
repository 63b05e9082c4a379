//! The planned hand-off (`appctl reexec`, SIGUSR2): the daemon execs a new
//! binary in place (same pid) and hands it every app as it is.
//!
//! - `state`: the versioned document and the decisions about it (pure);
//! - `exec`: the system calls: the memfd, CLOEXEC, the fallback binary,
//!   execve and fexecve;
//! - `incoming`: what a daemon started by a hand-off reads and checks
//!   before it takes anything over.
//!
//! docs/handoff.md describes the design and its guarantees.

pub mod crash;
pub mod exec;
pub mod fdstore;
pub mod incoming;
pub mod state;
