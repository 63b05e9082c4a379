//! The command line of `appctl`: flags, subcommands and their `--help` text.
//!
//! A library module so that the man pages and shell completions
//! (`cargo xtask`) come from the same definitions as the binary. Owns
//! parsing only; it never talks to the daemon or prints anything that clap
//! does not print itself (help, version, usage errors with exit 2).
//!
//! Each subcommand carries only the options it uses, so its `--help` lists
//! nothing that does not apply: the commands that talk to the daemon take
//! `--socket` (also accepted before the command), the offline ones that
//! read the daemon settings (`check`, the importers) take `--config`.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// Daemon settings `check` reads when `--config` is not given.
pub const DEFAULT_CONFIG: &str = appvisor_config::builtin::CONFIG_FILE;

/// Control the appvisord process supervisor and validate its configuration.
///
/// Exit codes: 0 done; 1 the action failed (the app did not become ready;
/// its last log lines are printed); 2 usage or invalid configuration;
/// 3 `status` found an app not running; 4 permission denied; 5 cannot reach
/// the daemon. A command over several apps exits with the highest code of
/// any of them.
///
/// Where a command takes APP..., each APP is an app's name, `group:NAME`
/// (the apps whose `app_groups` include NAME), a glob pattern such as
/// 'celery-*' (quoted, so the shell leaves it alone) or `all`, each
/// standing for the apps you may see.
#[derive(Debug, Parser)]
#[command(name = "appctl", version)]
pub struct Cli {
    /// The daemon's control socket, for the commands that talk to the
    /// daemon (also accepted after the command).
    #[arg(
        long,
        env = "APPVISOR_SOCKET",
        value_name = "PATH",
        default_value = appvisor_protocol::DEFAULT_SOCKET
    )]
    pub socket: PathBuf,

    /// How long appvisord may take to answer before appctl gives up and
    /// exits 5, for the commands that talk to the daemon (also accepted
    /// after the command); 0 waits forever.
    #[arg(
        long,
        env = "APPVISOR_DAEMON_TIMEOUT",
        value_name = "DURATION",
        default_value = "30s",
        value_parser = humantime::parse_duration
    )]
    pub daemon_timeout: Duration,

    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The control socket: `--socket` after the command, else before it,
    /// else `APPVISOR_SOCKET`, else the default.
    pub fn socket(&self) -> &Path {
        self.command
            .daemon()
            .and_then(|daemon| daemon.socket.as_deref())
            .unwrap_or(&self.socket)
    }

    /// How long the daemon may take to answer: `--daemon-timeout` after the
    /// command, else before it, else `APPVISOR_DAEMON_TIMEOUT`, else 30s.
    pub fn daemon_timeout(&self) -> Duration {
        self.command
            .daemon()
            .and_then(|daemon| daemon.daemon_timeout)
            .unwrap_or(self.daemon_timeout)
    }
}

/// The option of every command that talks to the daemon.
#[derive(Debug, Clone, Default, Args)]
pub struct DaemonArgs {
    /// The daemon's control socket [default: $APPVISOR_SOCKET, else
    /// /run/appvisor/ctl.sock].
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// How long appvisord may take to answer before appctl gives up and
    /// exits 5; 0 waits forever. Actions that wait for apps get it on top
    /// of their --timeout [default: $APPVISOR_DAEMON_TIMEOUT, else 30s].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub daemon_timeout: Option<Duration>,
}

/// The option of the offline commands that read the daemon settings.
#[derive(Debug, Clone, Default, Args)]
pub struct SettingsArgs {
    /// The daemon settings that name apps_dir and the [defaults] files are
    /// checked against [default: /etc/appvisor/appvisor.toml].
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
}

impl SettingsArgs {
    /// The settings file: `--config`, else the default.
    pub fn path(&self) -> &Path {
        self.config.as_deref().unwrap_or(Path::new(DEFAULT_CONFIG))
    }

    /// Whether `--config` named it: a named file must exist, while a
    /// missing default means every setting takes its default.
    pub fn explicit(&self) -> bool {
        self.config.is_some()
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the state of every app you may see, or of the named apps.
    ///
    /// Exits 3 when any app shown is not running, so monitoring scripts can
    /// use it as a check.
    Status {
        /// Apps to show: names, group:NAME, patterns or all (default: all
        /// you may see).
        #[arg(value_name = "APP")]
        apps: Vec<String>,
        /// Print the daemon's JSON document instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        daemon: DaemonArgs,
    },
    /// Start apps and wait until they are ready.
    ///
    /// Exits 1 and prints the app's last log lines when it does not become
    /// ready, so a deploy script can roll back on a non-zero exit.
    Start(ActionArgs),
    /// Stop apps and wait until every process of each has exited.
    ///
    /// A stopped app stays stopped across `appctl update` and daemon
    /// restarts until someone starts it.
    Stop(ActionArgs),
    /// Restart apps and wait until they are ready again.
    ///
    /// Exits 1 and prints the app's last log lines when it does not become
    /// ready, so a deploy script can roll back on a non-zero exit.
    Restart(ActionArgs),
    /// Send apps their reload signal (HUP by default) and wait until they
    /// are ready again.
    ///
    /// Exits 1 and prints the app's last log lines when it does not become
    /// ready, so a deploy script can roll back on a non-zero exit.
    Reload(ActionArgs),
    /// Send a signal to an app's main process.
    Signal {
        /// A signal name such as USR1 or SIGUSR1.
        signal: String,
        /// The app to signal.
        app: String,
        #[command(flatten)]
        daemon: DaemonArgs,
    },
    /// Print an app's captured output: stdout and stderr interleaved in the
    /// order the daemon read them (gunicorn and uWSGI log to stderr).
    ///
    /// On a terminal, control characters in the output are shown escaped
    /// (\u{1b}, \r) so the app cannot drive your terminal; --raw, or a
    /// pipe, passes the bytes through.
    Logs {
        /// The app whose output to print.
        app: String,
        /// Keep printing new output until the app's log ends or Ctrl-C.
        #[arg(short, long)]
        follow: bool,
        /// How many of the last lines to print first.
        #[arg(short = 'n', long, default_value_t = 100, value_name = "LINES")]
        lines: usize,
        /// Print standard output only.
        #[arg(long, conflicts_with = "stderr")]
        stdout: bool,
        /// Print standard error only.
        #[arg(long)]
        stderr: bool,
        /// Pass the app's bytes through as they are, escape sequences
        /// included, even on a terminal.
        #[arg(long)]
        raw: bool,
        #[command(flatten)]
        daemon: DaemonArgs,
    },
    /// Apply apps.d: start added apps, restart changed ones, stop removed
    /// ones (admin only).
    ///
    /// A file that does not validate leaves its app's running version
    /// untouched and is reported, and so is a *.toml file whose name is not
    /// an app name; the exit code is then 2. It is 1 when an app was not
    /// started because the daemon's open-file limit has no room for it.
    Update {
        /// Show what would change without changing anything.
        #[arg(long)]
        dry_run: bool,
        /// How long applying may take: the daemon answers once removed
        /// apps have stopped, each within its [stop] timeout.
        #[arg(long, default_value = "5m", value_parser = humantime::parse_duration, value_name = "DURATION")]
        timeout: Duration,
        #[command(flatten)]
        daemon: DaemonArgs,
    },
    /// Hand every app over to a new appvisord, exec'd in place (admin).
    ///
    /// The daemon executes its binary again (after a package upgrade, the
    /// new version) with the same pid, handing over every app as it is:
    /// processes, held sockets, output pipes, backoff, who stopped what. No
    /// app restarts. A new binary that cannot take over executes the old
    /// one again; the apps are untouched either way. Waits until the
    /// daemon reports the hand-off; exits 1 if it did not happen.
    Reexec {
        #[command(flatten)]
        daemon: DaemonArgs,
    },
    /// Validate the daemon settings and app files without a daemon.
    ///
    /// For configuration management (`validate_cmd`): exits 2 when a file
    /// does not validate; warnings are printed but exit 0.
    Check {
        #[command(flatten)]
        settings: SettingsArgs,
        /// Check the one FILE as the app NAME, whatever the file is called:
        /// for a CM tool's temporary copy, e.g. Ansible's
        /// `validate: appctl check --as shop %s`.
        #[arg(long = "as", value_name = "NAME", value_parser = appvisor_config::AppName::from_str, requires = "files")]
        as_name: Option<appvisor_config::AppName>,
        /// App files to check (default: every file in apps.d).
        #[arg(value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Show who the daemon thinks you are and which apps you may control.
    Whoami(DaemonArgs),
    /// Turn supervisord's [program:x] sections into apps.d TOML files.
    ///
    /// Reads each FILE as supervisord reads its config, [include]s and
    /// [supervisord] settings included, and writes one app per process
    /// (numprocs), grouped as supervisord grouped them, that keeps what
    /// supervisord did; servers that bound their own port get held
    /// sockets. What differs is noted at the top of each file, and what
    /// `appctl check` finds is printed beside it. A program without a user
    /// (root) or that does not parse is not imported; that, a file that
    /// would not start, or no program at all exits 2. Offline: no daemon
    /// involved. docs/migration.md has the details.
    ImportSupervisord {
        /// Write DIR/NAME.toml for each app (never overwriting) instead of
        /// printing them.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// supervisord config files, e.g. /etc/supervisor/supervisord.conf.
        #[arg(value_name = "FILE", required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        settings: SettingsArgs,
    },
    /// Turn uWSGI emperor vassals (.ini) into apps.d TOML files.
    ///
    /// Each vassal runs the same uWSGI under appvisord, on sockets
    /// appvisord holds (fd://3, ...), with notify readiness, and stops
    /// gracefully on TERM (the hook it adds, see docs/servers.md). What `appctl
    /// check` finds is printed beside each file; a vassal without a uid
    /// (root) or with options this importer does not follow is not
    /// imported, and exits 2. Offline: no daemon involved.
    ImportUwsgi {
        /// Write DIR/NAME.toml for each app (never overwriting) instead of
        /// printing them.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// The uwsgi to run when the vassal's virtualenv has none
        /// [default: /usr/local/bin/uwsgi or /usr/bin/uwsgi].
        #[arg(long, value_name = "PATH")]
        uwsgi: Option<PathBuf>,
        /// Vassal files, e.g. /etc/uwsgi/vassals/*.ini.
        #[arg(value_name = "FILE", required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        settings: SettingsArgs,
    },
    /// Show what confines each app and its exposure score (0 best, 10 worst).
    ///
    /// The score weighs checks (Landlock enforced, code read-only, limits
    /// set, ...); each is listed with its weight and whether it passed.
    Security {
        /// The apps to show (default: every app you may see).
        #[arg(value_name = "APP")]
        apps: Vec<String>,
        /// Print the reports as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        daemon: DaemonArgs,
    },
}

/// Flags shared by start, stop, restart and reload.
#[derive(Debug, Args)]
pub struct ActionArgs {
    /// The apps to act on, in parallel: names, group:NAME, patterns such
    /// as 'celery-*', or all.
    #[arg(required = true, value_name = "APP")]
    pub apps: Vec<String>,
    /// Return once the daemon has accepted the request, without waiting
    /// for the outcome.
    #[arg(long)]
    pub no_wait: bool,
    /// How long to wait for the outcome (the daemon may cap it).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub timeout: Duration,
    #[command(flatten)]
    pub daemon: DaemonArgs,
}

impl Command {
    /// The daemon options of a command that talks to the daemon; `None`
    /// for the offline ones (`check` and the importers).
    pub fn daemon(&self) -> Option<&DaemonArgs> {
        match self {
            Command::Status { daemon, .. }
            | Command::Signal { daemon, .. }
            | Command::Logs { daemon, .. }
            | Command::Update { daemon, .. }
            | Command::Reexec { daemon }
            | Command::Whoami(daemon)
            | Command::Security { daemon, .. } => Some(daemon),
            Command::Start(args)
            | Command::Stop(args)
            | Command::Restart(args)
            | Command::Reload(args) => Some(&args.daemon),
            Command::Check { .. }
            | Command::ImportSupervisord { .. }
            | Command::ImportUwsgi { .. } => None,
        }
    }
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
    fn timeout_takes_human_durations() {
        let cli = Cli::try_parse_from(["appctl", "restart", "shop", "--timeout", "2m"]).unwrap();
        match cli.command {
            Command::Restart(args) => {
                assert_eq!(args.apps, ["shop"]);
                assert_eq!(args.timeout, Duration::from_secs(120));
                assert!(!args.no_wait);
            }
            other => panic!("parsed as {other:?}"),
        }
    }

    /// A subcommand's help lists `--socket` and `--config` only where it
    /// uses them (every one once listed both).
    #[test]
    fn each_subcommand_takes_only_the_options_it_uses() {
        let daemon = ["socket", "daemon_timeout"];
        let expected: &[(&str, &[&str])] = &[
            ("status", &["apps", "json", "socket", "daemon_timeout"]),
            (
                "start",
                &["apps", "no_wait", "timeout", "socket", "daemon_timeout"],
            ),
            (
                "stop",
                &["apps", "no_wait", "timeout", "socket", "daemon_timeout"],
            ),
            (
                "restart",
                &["apps", "no_wait", "timeout", "socket", "daemon_timeout"],
            ),
            (
                "reload",
                &["apps", "no_wait", "timeout", "socket", "daemon_timeout"],
            ),
            ("signal", &["signal", "app", "socket", "daemon_timeout"]),
            (
                "logs",
                &[
                    "app",
                    "follow",
                    "lines",
                    "stdout",
                    "stderr",
                    "raw",
                    "socket",
                    "daemon_timeout",
                ],
            ),
            (
                "update",
                &["dry_run", "timeout", "socket", "daemon_timeout"],
            ),
            ("reexec", &["socket", "daemon_timeout"]),
            ("check", &["config", "as_name", "files"]),
            ("whoami", &daemon),
            ("import-supervisord", &["out", "files", "config"]),
            ("import-uwsgi", &["out", "uwsgi", "files", "config"]),
            ("security", &["apps", "json", "socket", "daemon_timeout"]),
        ];
        let mut command = Cli::command();
        command.build();
        let names: Vec<&str> = command
            .get_subcommands()
            .map(|sub| sub.get_name())
            .filter(|name| *name != "help")
            .collect();
        let listed: Vec<&str> = expected.iter().map(|(name, _)| *name).collect();
        assert_eq!(names, listed, "every subcommand is in this table");
        for (name, options) in expected {
            let sub = command.find_subcommand(name).expect("listed above");
            let ids: Vec<&str> = sub
                .get_arguments()
                .map(|arg| arg.get_id().as_str())
                .filter(|id| !["help", "version"].contains(id))
                .collect();
            assert_eq!(&ids, options, "options of appctl {name}");
            let help = sub.clone().render_long_help().to_string();
            for option in ["--socket", "--config"] {
                let takes = options.contains(&option.trim_start_matches('-'));
                assert_eq!(
                    help.contains(option),
                    takes,
                    "appctl {name} --help and {option}:\n{help}"
                );
            }
        }
    }

    #[test]
    fn the_socket_after_the_command_wins_over_the_one_before() {
        let cases: &[(&[&str], &str)] = &[
            (&["appctl", "status"], appvisor_protocol::DEFAULT_SOCKET),
            (&["appctl", "--socket", "/a", "status"], "/a"),
            (&["appctl", "status", "--socket", "/b"], "/b"),
            (
                &[
                    "appctl", "--socket", "/a", "restart", "shop", "--socket", "/b",
                ],
                "/b",
            ),
            (&["appctl", "--socket", "/a", "whoami"], "/a"),
        ];
        for (args, socket) in cases {
            let cli = Cli::try_parse_from(*args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            assert_eq!(cli.socket(), Path::new(socket), "for {args:?}");
        }
        for args in [
            &["appctl", "check", "--socket", "/a"][..],
            &["appctl", "import-supervisord", "--socket", "/a", "x.conf"],
            &["appctl", "--config", "/etc/x.toml", "check"],
        ] {
            let err = Cli::try_parse_from(args).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?} is a usage error");
        }
    }

    /// The names in the synopsis lines (`appctl start|stop ...`) of a
    /// docs/cli.md code block.
    fn documented_commands(program: &str) -> Vec<String> {
        let doc = include_str!("../../docs/cli.md");
        let prefix = format!("{program} ");
        let mut names: Vec<String> = doc
            .lines()
            .filter_map(|line| line.strip_prefix(&prefix))
            .filter_map(|rest| rest.split_whitespace().next())
            .filter(|word| !word.starts_with(['-', '[']))
            .flat_map(|word| word.split('|').map(str::to_owned))
            .collect();
        names.sort();
        names.dedup();
        names
    }

    #[test]
    fn every_command_is_in_the_contract() {
        let commands = [
            ("appctl", Cli::command()),
            ("appvisord", appvisor::cli::Cli::command()),
        ];
        for (program, command) in commands {
            let mut names: Vec<String> = command
                .get_subcommands()
                .map(|sub| sub.get_name().to_owned())
                .collect();
            names.sort();
            assert_eq!(
                documented_commands(program),
                names,
                "the synopsis of {program} in docs/cli.md"
            );
        }
    }

    #[test]
    fn logs_select_one_stream_or_both() {
        let parse = |args: &[&str]| match Cli::try_parse_from(args).map(|cli| cli.command) {
            Ok(Command::Logs {
                stdout,
                stderr,
                raw,
                ..
            }) => Ok((stdout, stderr, raw)),
            Ok(other) => panic!("parsed as {other:?}"),
            Err(err) => Err(err.exit_code()),
        };
        assert_eq!(
            parse(&["appctl", "logs", "shop"]),
            Ok((false, false, false))
        );
        assert_eq!(
            parse(&["appctl", "logs", "shop", "--stderr", "--raw"]),
            Ok((false, true, true))
        );
        assert_eq!(
            parse(&["appctl", "logs", "shop", "--stdout", "--stderr"]),
            Err(2)
        );
    }

    #[test]
    fn the_daemon_timeout_is_on_by_default_and_takes_human_durations() {
        let cases: &[(&[&str], Duration)] = &[
            (&["appctl", "status"], Duration::from_secs(30)),
            (
                &["appctl", "--daemon-timeout", "2s", "status"],
                Duration::from_secs(2),
            ),
            (
                &["appctl", "status", "--daemon-timeout", "0"],
                Duration::ZERO,
            ),
            (
                &[
                    "appctl",
                    "--daemon-timeout",
                    "2s",
                    "restart",
                    "shop",
                    "--daemon-timeout",
                    "1m",
                ],
                Duration::from_secs(60),
            ),
        ];
        for (args, timeout) in cases {
            let cli = Cli::try_parse_from(*args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            assert_eq!(cli.daemon_timeout(), *timeout, "for {args:?}");
        }
        let err = Cli::try_parse_from(["appctl", "check", "--daemon-timeout", "1s"]).unwrap_err();
        assert_eq!(err.exit_code(), 2, "check never talks to the daemon");
    }

    #[test]
    fn actions_need_an_app() {
        let err = Cli::try_parse_from(["appctl", "start"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }
}
