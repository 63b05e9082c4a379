//! Harness for appvisor's integration tests: real Unix users, a temp prefix,
//! the real `appvisord` and `appctl`, and deadline-bound waits.
//!
//! Everything here panics with a message a person can act on instead of
//! returning errors: it runs only inside tests, where a panic is the report.
//! It must never touch anything outside its temp prefixes, its own cgroup
//! subtrees and the `avt*` users and groups it creates.
//!
//! A test reads like this:
//!
//! ```no_run
//! use std::time::Duration;
//! use appvisor_tests::{require_root, AppBuilder, Daemon, DaemonOptions, Prefix, TestUser};
//!
//! require_root!();
//! let user = TestUser::ensure("avt-app1");
//! let prefix = Prefix::new();
//! AppBuilder::new("sleeper", &user, ["/bin/sleep", "infinity"]).write(&prefix);
//! let daemon = Daemon::start(&prefix, DaemonOptions::default());
//! daemon.wait_for_state("sleeper", "running", Duration::from_secs(10));
//! ```

pub mod app;
pub mod bins;
pub mod daemon;
pub mod net;
pub mod prefix;
pub mod procfs;
pub mod testapps;
pub mod users;
pub mod wait;

pub use app::{AppBuilder, Readiness, RestartPolicy};
pub use appvisor_protocol::{AppStatus, State};
pub use daemon::{Daemon, DaemonOptions};
pub use net::{free_port, http_get, HttpResponse};
pub use prefix::Prefix;
pub use procfs::{cgroup_procs, descendants, process_exists, ProcStatus};
pub use users::{TestGroup, TestUser};
pub use wait::{poll_until, wait_until};

/// Returns from the calling test, after saying so, when not run as root.
///
/// The name printed is the test thread's, which libtest sets to the test's
/// path.
#[macro_export]
macro_rules! require_root {
    () => {
        if !::nix::unistd::geteuid().is_root() {
            eprintln!(
                "skipped: {} needs root (creates Unix users and runs appvisord)",
                ::std::thread::current().name().unwrap_or(module_path!())
            );
            return;
        }
    };
}
