//! How "starting" becomes "running": the app's `NOTIFY_SOCKET`, and HTTP
//! and TCP probes retried until a deadline.
//!
//! This module reports what it received or observed; it never changes an
//! app's state, never signals a process, and never decides which sender to
//! trust (the supervise layer checks a notify sender's cgroup).

mod notify;
mod probe;

pub use notify::{NotifyMessage, NotifySocket, ReadinessError};
pub use probe::{probe_http, probe_tcp, wait_until_ready, Check, ProbeError};
