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
//! use appvisor_tests::{require_root, AppBuilder, Daemon, DaemonOptions, Prefix, State, TestUser};
//!
//! require_root!();
//! let user = TestUser::ensure("avt-app1");
//! let prefix = Prefix::new();
//! AppBuilder::new("sleeper", &user, ["/bin/sleep", "infinity"]).write(&prefix);
//! let daemon = Daemon::start(&prefix, DaemonOptions::default());
//! daemon.wait_for_state("sleeper", State::Running, Duration::from_secs(10));
//! ```

pub mod app;
pub mod bins;
pub mod chaos;
pub mod daemon;
pub mod fdstore;
pub mod handoff_scenario;
pub mod load;
pub mod net;
pub mod nginx;
pub mod prefix;
pub mod procfs;
pub mod quickstart;
pub mod servers;
pub mod systemd;
pub mod testapps;
pub mod users;
pub mod wait;

pub use app::{AppBuilder, Readiness, RestartPolicy, Strategy};
pub use appvisor_protocol::{AppList, AppStatus, State};
pub use daemon::{Daemon, DaemonOptions};
pub use net::{free_port, http_get, HttpResponse};
pub use prefix::Prefix;
pub use procfs::{cgroup_procs, descendants, process_exists, ProcStatus};
pub use users::{TestGroup, TestUser};
pub use wait::{poll_until, wait_until};

/// Says, in plain sight, that the running test tests nothing here and why:
/// `skipped: TEST WHY` straight to the process's stderr. libtest captures
/// `eprintln!` and shows it only for failing tests, so a skip printed that
/// way is invisible in a green run; `.ci/run` counts these lines.
///
/// The test's name is the test thread's, which libtest sets to the test's
/// path.
pub fn skip(why: impl std::fmt::Display) {
    use std::io::Write as _;
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a test");
    let _ = writeln!(std::io::stderr().lock(), "skipped: {test} {why}");
}

/// Returns from the calling test, after saying so with [`skip`], when not
/// run as root.
#[macro_export]
macro_rules! require_root {
    () => {
        if !::nix::unistd::geteuid().is_root() {
            $crate::skip("needs root (creates Unix users and runs appvisord)");
            return;
        }
    };
}
