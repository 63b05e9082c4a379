//! `appvisord`: parse flags, start tracing, build the runtime, run the daemon.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use appvisor::cli::{Cli, Command, DEFAULT_CONFIG};
use clap::Parser as _;
use tracing_subscriber::filter::{LevelFilter, ParseError, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The daemon's log filter from `APPVISOR_LOG`: directives such as
/// `info,appvisor=debug,audit=warn` (a default level and levels per target
/// prefix), `info` when unset. A value that does not parse also gives
/// `info`, with the error to report once logging works.
fn log_filter(value: Option<&str>) -> (Targets, Option<ParseError>) {
    let default = || Targets::new().with_default(LevelFilter::INFO);
    match value.map(str::trim).filter(|value| !value.is_empty()) {
        None => (default(), None),
        Some(value) => match value.parse() {
            Ok(targets) => (targets, None),
            Err(error) => (default(), Some(error)),
        },
    }
}

fn main() -> ExitCode {
    // The exec helper runs before anything else: it is single-threaded and
    // must not start a runtime or tracing.
    appvisor::spawn::child::dispatch_from_args();
    let cli = Cli::parse();
    let config_explicit = cli.config.is_some();
    let config = cli.config.unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));

    if let Some(Command::Check {
        files,
        as_name,
        settings_only,
    }) = cli.command
    {
        if as_name.is_some() && files.len() != 1 {
            use clap::CommandFactory as _;
            Cli::command()
                .error(
                    clap::error::ErrorKind::WrongNumberOfValues,
                    "check --as NAME takes exactly one FILE",
                )
                .exit();
        }
        let report = if settings_only {
            appvisor::config::check_settings(&config, config_explicit)
        } else {
            appvisor::config::check(
                &config,
                config_explicit,
                &files,
                as_name.as_ref(),
                &appvisor::config::resolve::SystemUserDb,
            )
            .with_default_limits(&appvisor::config::DefaultLimits::for_host(
                appvisor::config::default_limits::host_max_tasks(),
            ))
        };
        print!("{report}");
        return if report.is_ok() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(2)
        };
    }

    let (filter, bad_filter) = log_filter(std::env::var("APPVISOR_LOG").ok().as_deref());
    tracing_subscriber::fmt()
        // The builder's own default, INFO, would cap whatever `filter`
        // lets through: APPVISOR_LOG=debug logged nothing at debug.
        .with_max_level(LevelFilter::TRACE)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        // App and owner text reaches the log: escape it so it cannot forge
        // records.
        .fmt_fields(appvisor::logfmt::EscapedFields)
        .finish()
        .with(filter)
        .init();
    if let Some(error) = bad_filter {
        tracing::warn!(%error, "ignoring APPVISOR_LOG, logging at info");
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("appvisord: starting the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let options = appvisor::daemon::Options {
        config,
        config_explicit,
        cgroup_name: cli.cgroup,
        reexec_binary: cli.reexec_binary,
    };
    match runtime.block_on(appvisor::daemon::run(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err}");
            eprintln!("appvisord: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}

#[cfg(test)]
mod tests {
    use tracing::Level;

    use super::log_filter;

    #[test]
    fn log_filter_defaults_to_info_and_reads_directives_per_target() {
        let (filter, error) = log_filter(None);
        assert!(error.is_none());
        assert!(filter.would_enable("appvisor::daemon", &Level::INFO));
        assert!(!filter.would_enable("appvisor::daemon", &Level::DEBUG));

        let (filter, error) = log_filter(Some("warn,appvisor::supervise=debug"));
        assert!(error.is_none());
        assert!(filter.would_enable("appvisor::supervise", &Level::DEBUG));
        assert!(!filter.would_enable("appvisor::daemon", &Level::INFO));
        assert!(filter.would_enable("audit", &Level::WARN));

        let (filter, error) = log_filter(Some("appvisor=loud"));
        assert!(error.is_some(), "a bad level is reported");
        assert!(
            filter.would_enable("audit", &Level::INFO),
            "and info is used"
        );
        assert!(log_filter(Some("  ")).1.is_none(), "blank means unset");
    }
}
