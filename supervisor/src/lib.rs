//! appvisord: one supervisor per host for Python web applications.
//!
//! The pure core (`config`, `app`, `acl`, `spawn::plan`) does no I/O and is
//! unit-tested without root; the shell around it (`supervise`, `daemon`,
//! `control`, `status`, `spawn::child`, `cgroup`, `logs`, `readiness`) owns
//! processes, sockets, files and timers.

pub mod acl; // who may do what to which app (pure)
pub mod app; // per-app state machine, restart and backoff decisions (pure)
pub mod audit; // the audit trail of control actions
pub mod cgroup; // one cgroup per app: create, kill, watch for empty, limits
pub mod cli; // appvisord's command line (also read by the man page generator)
pub use appvisor_config as config; // appvisor.toml and apps.d: raw TOML -> AppSpec -> resolved users
pub mod control; // the control server: HTTP over the Unix socket, peer credentials
pub mod daemon; // start-up, signals, the registry of apps, shutdown
pub use appvisor_config::files; // bounded, non-blocking reads; StrictModes trust of files others can touch
pub mod handoff; // the planned hand-off: state document (pure), exec, taking over
pub mod httpd; // what the control and status servers share: the accept loop, caps, error bodies
pub mod judge; // apps.d judged off the runtime: blocking pool, deadlines, one parse at a time
pub mod listen; // held listen sockets, bound as root and kept across restarts
pub mod locks; // taking a lock whatever panicked while it was held
pub mod logfmt; // the daemon's own log records: fields escaped so no app text forges one
pub mod logs; // captured stdout/stderr: files, rotation, in-memory tail, both streams in order
pub mod ratelimit; // rate limits for log records strangers can cause (pure)
pub mod readiness; // notify socket, http and tcp probes
pub mod sandbox; // landlock, namespaces, capabilities, rlimits (from spawn only)
pub mod spawn; // SpawnPlan (pure) and the exec helper that applies it
pub mod status; // read-only HTTP status and Prometheus metrics on [status] listen
pub mod supervise; // the task per app that feeds events to `app` and runs effects
