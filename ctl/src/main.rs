#![forbid(unsafe_code)]
//! `appctl`: control appvisord over its Unix socket and validate its
//! configuration offline.
//!
//! This file parses the command line, runs one command and turns its
//! outcome into an exit status; it must never decide an exit code itself
//! (that is [`exit`]) or render output (that is [`render`]).

mod appfile;
mod commands;
mod escape;
mod exit;
mod render;
mod rows;
mod security;
mod select;
mod servers;
mod supervisord;
mod uwsgi;

use std::process::ExitCode;

use anyhow::Context as _;
use appvisor_ctl::cli;
use appvisor_protocol::client::Client;
use appvisor_protocol::{Action, LogStream};
use clap::Parser as _;

use crate::cli::{Cli, Command};
use crate::commands::CommandError;
use crate::exit::Exit;

fn main() -> ExitCode {
    // clap prints usage errors itself and exits 2, as DESIGN.md wants.
    let cli = Cli::parse();
    if let Command::Check {
        as_name: Some(_),
        files,
        ..
    } = &cli.command
    {
        if files.len() != 1 {
            use clap::CommandFactory as _;
            Cli::command()
                .error(
                    clap::error::ErrorKind::WrongNumberOfValues,
                    "check --as NAME takes exactly one FILE",
                )
                .exit();
        }
    }
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(err) => {
            commands::print_error(&format_args!("{err:#}"));
            return Exit::Failed.into();
        }
    };
    match run(&runtime, cli) {
        Ok(exit) => exit.into(),
        Err(err) => {
            commands::print_error(&err);
            err.exit().into()
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    // One thread is plenty: the work is waiting on the daemon.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Runs one command to its exit code.
fn run(runtime: &tokio::runtime::Runtime, cli: Cli) -> Result<Exit, CommandError> {
    // Zero: wait forever.
    let timeout = Some(cli.daemon_timeout()).filter(|t| !t.is_zero());
    let client = Client::new(cli.socket()).with_timeout(timeout);
    match &cli.command {
        Command::Status { apps, json, .. } => {
            runtime.block_on(commands::status(&client, apps, *json))
        }
        Command::Start(args) => runtime.block_on(commands::act(&client, Action::Start, args)),
        Command::Stop(args) => runtime.block_on(commands::act(&client, Action::Stop, args)),
        Command::Restart(args) => runtime.block_on(commands::act(&client, Action::Restart, args)),
        Command::Reload(args) => runtime.block_on(commands::act(&client, Action::Reload, args)),
        Command::Signal { signal, app, .. } => {
            runtime.block_on(commands::signal(&client, signal, app))
        }
        Command::Logs {
            app,
            follow,
            lines,
            stdout,
            stderr,
            raw,
            ..
        } => {
            let stream = match (stdout, stderr) {
                (true, _) => LogStream::Stdout,
                (_, true) => LogStream::Stderr,
                _ => LogStream::Both,
            };
            let options = commands::LogOptions {
                follow: *follow,
                lines: *lines,
                stream,
                raw: *raw,
            };
            runtime.block_on(commands::logs(&client, app, options))
        }
        Command::Update {
            dry_run, timeout, ..
        } => runtime.block_on(commands::update(&client, *dry_run, *timeout)),
        Command::Reexec { .. } => runtime.block_on(commands::reexec(&client)),
        Command::Whoami(_) => runtime.block_on(commands::whoami(&client)),
        Command::Security { apps, json, .. } => {
            runtime.block_on(security::security(&client, apps, *json))
        }
        Command::ImportSupervisord {
            files,
            out,
            settings,
        } => commands::import_supervisord(
            files,
            out.as_deref(),
            settings.path(),
            settings.explicit(),
        ),
        Command::ImportUwsgi {
            files,
            uwsgi,
            out,
            settings,
        } => commands::import_uwsgi(
            files,
            uwsgi.as_deref(),
            out.as_deref(),
            settings.path(),
            settings.explicit(),
        ),
        Command::Check {
            settings,
            files,
            as_name,
        } => commands::check(
            settings.path(),
            settings.explicit(),
            files,
            as_name.as_ref(),
        ),
    }
}
