//! Configuration: `appvisor.toml` and `apps.d/NAME.toml`.
//!
//! Three layers, as DESIGN.md asks: `raw` mirrors the files exactly and
//! rejects unknown keys; `validate` turns raw values into [`AppSpec`] and
//! [`DaemonSpec`], gathering every error; `resolve` looks users and groups
//! up behind the [`resolve::UserDb`] trait and checks the paths an app
//! needs. `default_limits` has the limits of apps that set none. Only
//! `load`, `check` and `resolve` touch the file system, and
//! `default_limits` reads the host's task ceiling from `/proc/sys`.
//! `files` has the bounded, non-blocking reads all of them use.
//!
//! Its own crate so that `appctl check` judges files exactly as the daemon
//! does without linking the daemon: no async runtime, no logging.

pub mod builtin;
pub mod change;
pub mod check;
#[cfg(test)]
mod contract_tests;
pub mod default_limits;
pub mod env_file;
pub mod error;
pub mod files;
pub mod judge;
pub mod load;
pub mod positions;
pub mod raw;
pub mod resolve;
pub mod security;
pub mod spec;
pub mod suggest;
#[cfg(any(test, feature = "test-support"))]
pub mod test_spec;
pub mod uwsgi;
pub mod validate;

pub use check::{check, check_settings, CheckReport};
pub use default_limits::DefaultLimits;
pub use error::{ConfigError, ConfigErrors};
pub use load::{
    check_apps_dir, load_app, load_daemon, load_daemon_or_default, scan_apps_dir, AppFile,
    DaemonConfig,
};
pub use resolve::{check_conflicts, resolve, ResolvedApp, SystemUserDb, UserDb};
pub use spec::*;
pub use validate::Defaults;
