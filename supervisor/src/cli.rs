//! The command line of `appvisord`: flags, subcommands and their `--help`
//! text.
//!
//! In the library rather than in `main.rs` so that the man page and the
//! shell completions (`cargo xtask`) come from the same definitions as the
//! binary. Owns parsing only.

use std::path::PathBuf;
use std::str::FromStr;

use clap::{Parser, Subcommand};

use crate::config::AppName;

/// Daemon settings read when `--config` is not given.
pub const DEFAULT_CONFIG: &str = crate::config::builtin::CONFIG_FILE;

/// The appvisor daemon: supervises the apps of apps.d, each as its own user.
///
/// Runs in the foreground and logs to standard error (`APPVISOR_LOG` sets
/// what: `info` by default, e.g. `info,appvisor::supervise=debug`). SIGTERM
/// or SIGINT stops every app and exits; SIGHUP re-reads apps.d, like
/// `appctl update`. Exits 2 when the daemon settings do not validate.
#[derive(Debug, Parser)]
#[command(name = "appvisord", version)]
pub struct Cli {
    /// Daemon settings (appvisor.toml) [default: /etc/appvisor/appvisor.toml].
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Name of this daemon's cgroup subtree, created under the daemon's own
    /// cgroup. Two daemons on one host need different names.
    #[arg(long, value_name = "NAME", default_value = "appvisor")]
    pub cgroup: String,

    /// The binary `appctl reexec` and SIGUSR2 execute in place [default:
    /// the path appvisord was started from, resolved at start, so a
    /// package upgrade's new binary is what runs next].
    #[arg(long, value_name = "PATH")]
    pub reexec_binary: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate the configuration offline and exit: 0 valid, 2 invalid.
    ///
    /// With FILEs, checks those app files; without, the daemon settings and
    /// every file of their apps_dir. Suitable as a CM validate command;
    /// with --settings-only, as a service's ExecStartPre.
    Check {
        /// Check only what the daemon itself needs to start: the daemon
        /// settings, and that apps_dir can be read. For a service manager's
        /// pre-start check: an invalid app file is that app's problem (it
        /// does not start, the others do), never a reason to keep the
        /// daemon down.
        #[arg(long, conflicts_with_all = ["files", "as_name"])]
        settings_only: bool,
        /// Check the one FILE as the app NAME, whatever the file is called:
        /// for a CM tool's temporary copy, e.g. Ansible's
        /// `validate: appvisord check --as shop %s`.
        #[arg(long = "as", value_name = "NAME", value_parser = AppName::from_str, requires = "files")]
        as_name: Option<AppName>,
        /// App files to check (default: every file of apps_dir).
        #[arg(value_name = "FILE")]
        files: Vec<PathBuf>,
    },
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn check_help_lists_only_what_check_reads() {
        let mut command = Cli::command();
        command.build();
        let check = command.find_subcommand_mut("check").expect("check exists");
        let help = check.render_long_help().to_string();
        assert!(help.contains("--config"), "{help}");
        assert!(help.contains("--as"), "{help}");
        assert!(!help.contains("--cgroup"), "{help}");
    }
}
