//! What each `appctl` subcommand does: the requests it sends, what it prints
//! and the [`Exit`] it ends with.
//!
//! Owns talking to the daemon through [`Client`] and writing to stdout and
//! stderr. It never formats output itself (that is [`crate::render`]) and
//! never picks exit numbers by looking at message text.

use std::future::Future;
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use appvisor_protocol::client::{Client, ClientError, JsonBody};
use appvisor_protocol::{
    routes, Action, ActionRequest, ActionResult, AppList, ApplyReport, ApplyRequest, LogStream,
    Outcome, SignalRequest, State, WhoAmI,
};
use http_body_util::BodyExt;
use hyper::Method;
use serde::Deserialize as _;
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::appfile::AppFile;
use crate::cli::ActionArgs;
use crate::escape::{self, TerminalOutput};
use crate::exit::Exit;
use crate::render;
use crate::rows::{StatusAnswer, StatusAnswerSeed, StatusRow};
use crate::select::{self, SelectError, Selector};

/// Requests in flight at once for commands that name many apps: the daemon
/// holds each uid to a few connections (16), and a deploy restarting forty
/// apps must not be refused for it.
const MAX_IN_FLIGHT: usize = 8;

/// Why a command could not finish.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The request did not produce an answer we could use.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The daemon answered with JSON of another shape.
    #[error("unexpected answer from appvisord for {path}: {source}")]
    Unexpected {
        path: String,
        source: serde_json::Error,
    },
    /// Writing our own output failed (other than a closed pipe).
    #[error("writing to stdout: {source}")]
    Stdout { source: io::Error },
    /// A selector named no app, or is not a selector.
    #[error(transparent)]
    Select(#[from] SelectError),
    /// `reexec`: the daemon did not report the hand-off in time.
    #[error("appvisord did not report the hand-off within {}", humantime::format_duration(*.waited))]
    HandoffUnreported { waited: Duration },
}

impl CommandError {
    /// The exit code this error ends `appctl` with.
    pub fn exit(&self) -> Exit {
        match self {
            CommandError::Client(err) => Exit::for_client_error(err),
            CommandError::Select(_) => Exit::Usage,
            CommandError::Unexpected { .. }
            | CommandError::Stdout { .. }
            | CommandError::HandoffUnreported { .. } => Exit::Failed,
        }
    }
}

/// Writes to stdout; a reader that went away (`appctl logs | head`) is not
/// an error, so output just ends.
pub(crate) fn print(text: &str) -> Result<(), CommandError> {
    print_bytes(text.as_bytes())
}

fn print_bytes(bytes: &[u8]) -> Result<(), CommandError> {
    let mut stdout = io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(source) => Err(CommandError::Stdout { source }),
    }
}

/// Prints an error the way every `appctl` error looks: "appctl: MESSAGE",
/// escaped: it may repeat what the daemon or a request named.
pub fn print_error(err: &dyn std::fmt::Display) {
    eprintln!("appctl: {}", escape::text(&err.to_string()));
}

/// Runs `task` for every name concurrently, at most [`MAX_IN_FLIGHT`] at a
/// time, and returns the results in the order of `names`.
async fn for_each_app<T, F, Fut>(client: &Client, names: &[String], task: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(Client, String) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut set = JoinSet::new();
    for (index, name) in names.iter().enumerate() {
        let fut = task(client.clone(), name.clone());
        let slots = slots.clone();
        set.spawn(async move {
            // The semaphore is never closed, so acquiring cannot fail.
            let _slot = slots.acquire_owned().await;
            (index, fut.await)
        });
    }
    let mut results: Vec<Option<T>> = names.iter().map(|_| None).collect();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((index, result)) => results[index] = Some(result),
            // Our tasks only await requests; a panic in one is a bug to surface.
            Err(err) => std::panic::resume_unwind(err.into_panic()),
        }
    }
    results.into_iter().flatten().collect()
}

/// `GET /v1/apps` as the daemon wrote it and as [`AppList`].
async fn visible_apps(client: &Client) -> Result<(Value, AppList), CommandError> {
    let document = client.get::<Value>(routes::APPS).await?;
    let list = app_list(&document)?;
    Ok((document, list))
}

fn app_list(document: &Value) -> Result<AppList, CommandError> {
    AppList::deserialize(document).map_err(|source| CommandError::Unexpected {
        path: routes::APPS.to_owned(),
        source,
    })
}

/// The app names `words` select ([`select`]), asking the daemon for the
/// list of visible apps only when a word is more than a name.
async fn selected(client: &Client, words: &[String]) -> Result<Vec<String>, CommandError> {
    let selectors = select::parse_all(words)?;
    let visible = if selectors.iter().any(Selector::needs_list) {
        visible_apps(client).await?.1.apps
    } else {
        Vec::new()
    };
    Ok(select::expand(&selectors, &visible)?)
}

/// `appctl status [APP...] [--json]`.
pub async fn status(client: &Client, apps: &[String], json: bool) -> Result<Exit, CommandError> {
    let selectors = select::parse_all(apps)?;
    let every_app = selectors.is_empty() || selectors == [Selector::All];
    if every_app && !json {
        // Every app, even none: what `status` has always shown. Decoded
        // straight into the table's rows, borrowing from the answer: with
        // a thousand apps, a generic JSON document first, or a whole
        // status of copied strings per app, is most of the command's time.
        let status = status_table(&client.get_json(routes::APPS).await?)?;
        return status_output(&status.table, &status.notices, status.all_running);
    }
    if every_app {
        let (shown, all_running) = shown_list(&client.get_json(routes::APPS).await?)?;
        print_bytes(&shown)?;
        return Ok(status_exit(all_running));
    }
    let document = if selectors.iter().any(Selector::needs_list) {
        // One snapshot for every selected app; a name not in it is asked
        // for, so the daemon says why it is not there.
        let (document, list) = visible_apps(client).await?;
        let names = select::expand(&selectors, &list.apps)?;
        let listed = document["apps"].as_array().cloned().unwrap_or_default();
        let answers = for_each_app(client, &names, |client, name| {
            let known = listed
                .iter()
                .find(|app| app["name"] == name.as_str())
                .cloned();
            async move {
                match known {
                    Some(app) => Ok(app),
                    None => client.get::<Value>(&routes::app(&name)).await,
                }
            }
        })
        .await;
        let apps = answers.into_iter().collect::<Result<Vec<_>, _>>()?;
        serde_json::json!({ "apps": apps })
    } else {
        let answers = for_each_app(client, apps, |client, name| async move {
            client.get::<Value>(&routes::app(&name)).await
        })
        .await;
        let apps = answers.into_iter().collect::<Result<Vec<_>, _>>()?;
        serde_json::json!({ "apps": apps })
    };
    let list = app_list(&document)?;
    if !json {
        let rows: Vec<_> = list.apps.iter().map(StatusRow::of).collect();
        let all_running = all_running(list.apps.iter().map(|app| app.state));
        return status_output(&render::status_table(&rows), &list.notices, all_running);
    }
    print_bytes(&shown_document(&document))?;
    Ok(status_exit(all_running(
        list.apps.iter().map(|app| app.state),
    )))
}

/// How `status --json` shows a document: pretty, escaped for a terminal.
fn shown_document(document: &Value) -> Vec<u8> {
    let pretty = serde_json::to_string_pretty(document).expect("a JSON value serializes");
    format!("{}\n", escape::json(&pretty)).into_bytes()
}

/// The status table of every app, from `GET /v1/apps`.
fn status_table(answer: &JsonBody) -> Result<StatusAnswer, ClientError> {
    answer.decode_seed(StatusAnswerSeed {
        bytes: answer.len(),
    })
}

/// `status --json` of every app: the answer as it is shown, and whether
/// every app runs.
fn shown_list(answer: &JsonBody) -> Result<(Vec<u8>, bool), CommandError> {
    let document = answer.decode::<Value>()?;
    let list = app_list(&document)?;
    let all_running = all_running(list.apps.iter().map(|app| app.state));
    Ok((shown_document(&document), all_running))
}

/// The status table, the daemon's notices, and the exit code.
fn status_output(table: &str, notices: &[String], all_running: bool) -> Result<Exit, CommandError> {
    print(table)?;
    // stderr: they are about the daemon, not a row of the table.
    for notice in notices {
        print_error(&format_args!("warning: {notice}"));
    }
    Ok(status_exit(all_running))
}

/// Whether every app (of `states`) runs.
fn all_running(mut states: impl Iterator<Item = State>) -> bool {
    states.all(|state| state == State::Running)
}

/// Done when every app runs.
fn status_exit(all_running: bool) -> Exit {
    if all_running {
        Exit::Done
    } else {
        Exit::NotRunning
    }
}

/// `appctl start|stop|restart|reload APP...`: acts on every selected app
/// at once, prints each outcome in the order selected, and ends with the
/// worst exit: the highest code of any app ([`Exit`]'s order).
pub async fn act(client: &Client, action: Action, args: &ActionArgs) -> Result<Exit, CommandError> {
    let names = selected(client, &args.apps).await?;
    let wait = !args.no_wait;
    let timeout = args.timeout;
    let request = ActionRequest {
        wait,
        timeout_ms: wait.then(|| u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX)),
    };
    // The daemon answers once the outcome is known: allow for that.
    let client = if wait {
        waiting(client, timeout)
    } else {
        client.clone()
    };
    let answers = for_each_app(&client, &names, |client, name| {
        let request = request.clone();
        async move {
            let path = routes::action(&name, action);
            client
                .post::<_, ActionResult>(&path, &request)
                .await
                .map_err(CommandError::from)
        }
    })
    .await;

    let mut exit = Exit::Done;
    for answer in answers {
        let this = match answer {
            Ok(result) if result.outcome == Outcome::Done && result.intent_error.is_some() => {
                print(&render::action_done(&result))?;
                eprint!("{}", render::intent_not_saved(&result));
                Exit::Failed
            }
            Ok(result) if result.outcome == Outcome::Done => {
                print(&render::action_done(&result))?;
                Exit::Done
            }
            Ok(result) => {
                eprint!("{}", render::action_failure(&result, timeout));
                Exit::Failed
            }
            Err(err) => {
                print_error(&err);
                err.exit()
            }
        };
        exit = exit.max(this);
    }
    Ok(exit)
}

/// `client`, allowing the daemon `wait` more to answer, for requests it
/// answers only once something has happened to apps.
fn waiting(client: &Client, wait: Duration) -> Client {
    let timeout = client.timeout().map(|t| t.saturating_add(wait));
    client.clone().with_timeout(timeout)
}

/// `appctl signal SIGNAL APP`.
pub async fn signal(client: &Client, signal: &str, app: &str) -> Result<Exit, CommandError> {
    let request = SignalRequest {
        signal: signal.to_owned(),
    };
    let result: ActionResult = client.post(&routes::signal(app), &request).await?;
    if result.outcome == Outcome::Done {
        print(&render::signal_sent(&result, signal))?;
        Ok(Exit::Done)
    } else {
        eprint!("{}", render::action_failure(&result, Duration::ZERO));
        Ok(Exit::Failed)
    }
}

/// What `appctl logs` shows and how.
#[derive(Debug, Clone, Copy)]
pub struct LogOptions {
    pub follow: bool,
    pub lines: usize,
    pub stream: LogStream,
    /// Bytes as they are, even on a terminal.
    pub raw: bool,
}

/// `appctl logs APP [-f] [-n LINES] [--stdout|--stderr] [--raw]`: copies
/// the daemon's bytes to stdout as they arrive, escaped when stdout is a
/// terminal (unless `raw`). With `follow`, Ctrl-C ends it cleanly.
pub async fn logs(client: &Client, app: &str, options: LogOptions) -> Result<Exit, CommandError> {
    let path = routes::logs(app, options.stream, options.lines, options.follow);
    let response = client.send(Method::GET, &path, None).await?;
    let mut body = response.into_body();
    let mut terminal = (!options.raw && io::stdout().is_terminal()).then(TerminalOutput::default);
    let mut shown = String::new();
    // Without follow, a daemon that stops sending mid-way is not answering;
    // the time spent writing to a slow reader (`| less`) does not count.
    let idle = client.timeout().filter(|_| !options.follow);
    let copy = async {
        loop {
            let next = body.frame();
            let frame =
                match idle {
                    None => next.await,
                    Some(waited) => tokio::time::timeout(waited, next).await.map_err(|_| {
                        ClientError::Timeout {
                            socket: client.socket().to_owned(),
                            waited,
                        }
                    })?,
                };
            let Some(frame) = frame else {
                break;
            };
            let frame = frame.map_err(|source| ClientError::Http {
                socket: client.socket().to_owned(),
                source,
            })?;
            if let Some(data) = frame.data_ref() {
                let written = match terminal.as_mut() {
                    Some(terminal) => {
                        shown.clear();
                        terminal.escape(data, &mut shown);
                        write_stdout(shown.as_bytes())
                    }
                    None => write_stdout(data),
                };
                match written {
                    Ok(()) => {}
                    // The reader went away (`| head`): stop quietly.
                    Err(err) if err.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
                    Err(source) => return Err(CommandError::Stdout { source }),
                }
            }
        }
        if let Some(terminal) = terminal.as_mut() {
            shown.clear();
            terminal.finish(&mut shown);
            let _ = write_stdout(shown.as_bytes());
        }
        Ok(())
    };
    if options.follow {
        tokio::select! {
            // Polled first, so the SIGINT handler is installed before any
            // output appears.
            biased;
            // Ctrl-C is how a person ends `logs -f`: not a failure.
            _ = tokio::signal::ctrl_c() => {}
            copied = copy => copied?,
        }
    } else {
        copy.await?;
    }
    Ok(Exit::Done)
}

fn write_stdout(bytes: &[u8]) -> io::Result<()> {
    let mut stdout = io::stdout().lock();
    stdout.write_all(bytes).and_then(|()| stdout.flush())
}

/// `appctl update [--dry-run] [--timeout DURATION]`.
pub async fn update(
    client: &Client,
    dry_run: bool,
    timeout: Duration,
) -> Result<Exit, CommandError> {
    let report: ApplyReport = waiting(client, timeout)
        .post(routes::CONFIG_APPLY, &ApplyRequest { dry_run })
        .await?;
    print(&render::apply_report(&report))?;
    Ok(
        if !report.invalid.is_empty() || !report.ignored.is_empty() {
            Exit::Usage
        } else if !report.not_started.is_empty() {
            Exit::Failed
        } else {
            Exit::Done
        },
    )
}

/// How long `appctl reexec` waits for the daemon to report the hand-off.
const REEXEC_WAIT: Duration = Duration::from_secs(90);

/// `appctl reexec`: asks for a hand-off with an id of our own, then asks
/// the daemon (the new one, or the old one again) how the hand-off with
/// that id went. The answer to the request itself may be lost to the
/// exec: the connection then just closes.
pub async fn reexec(client: &Client) -> Result<Exit, CommandError> {
    let id = reexec_id();
    let request = appvisor_protocol::ReexecRequest { id };
    match client
        .post::<_, appvisor_protocol::ReexecRequest>(routes::REEXEC, &request)
        .await
    {
        // The connection may close or time out under the exec.
        Ok(_) | Err(ClientError::Http { .. } | ClientError::Timeout { .. }) => {}
        Err(err) => return Err(err.into()),
    }
    let deadline = std::time::Instant::now() + REEXEC_WAIT;
    loop {
        match client
            .get::<appvisor_protocol::DaemonStatus>(routes::DAEMON)
            .await
        {
            Ok(status) => {
                if let Some(report) = status.handoff.filter(|h| h.id == id) {
                    print(&render::handoff(&report))?;
                    return Ok(if report.error.is_none() {
                        Exit::Done
                    } else {
                        Exit::Failed
                    });
                }
            }
            Err(ClientError::Http { .. } | ClientError::Timeout { .. }) => {}
            Err(err) => return Err(err.into()),
        }
        if std::time::Instant::now() > deadline {
            return Err(CommandError::HandoffUnreported {
                waited: REEXEC_WAIT,
            });
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn reexec_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.finish()
}

/// `appctl whoami`.
pub async fn whoami(client: &Client) -> Result<Exit, CommandError> {
    let who: WhoAmI = client.get(routes::WHOAMI).await?;
    print(&render::whoami(&who))?;
    Ok(Exit::Done)
}

/// `appctl check [FILE...]`: offline validation, no daemon involved. The
/// report goes to stdout; errors exit 2, warnings alone exit 0.
pub fn check(
    daemon_config: &Path,
    explicit: bool,
    files: &[PathBuf],
    as_name: Option<&appvisor_config::AppName>,
) -> Result<Exit, CommandError> {
    let report = appvisor_config::check(
        daemon_config,
        explicit,
        files,
        as_name,
        &appvisor_config::SystemUserDb,
    )
    .with_default_limits(&appvisor_config::DefaultLimits::for_host(
        appvisor_config::default_limits::host_max_tasks(),
    ));
    print(&format!("{}\n", escape::text(&report.to_string())))?;
    Ok(if report.is_ok() {
        Exit::Done
    } else {
        Exit::Usage
    })
}

/// `appctl import-supervisord FILE... [--out DIR]`.
pub fn import_supervisord(
    files: &[PathBuf],
    out: Option<&Path>,
    daemon_config: &Path,
    explicit: bool,
) -> Result<Exit, CommandError> {
    let import = crate::supervisord::import(files, &crate::supervisord::Context::current());
    let problems: Vec<String> = import.problems.iter().map(ToString::to_string).collect();
    let warnings: Vec<String> = import.warnings.iter().map(ToString::to_string).collect();
    write_imported(
        &import.apps,
        &problems,
        &warnings,
        out,
        daemon_config,
        explicit,
    )
}

/// `appctl import-uwsgi FILE... [--out DIR]`.
pub fn import_uwsgi(
    files: &[PathBuf],
    uwsgi: Option<&Path>,
    out: Option<&Path>,
    daemon_config: &Path,
    explicit: bool,
) -> Result<Exit, CommandError> {
    let import = crate::uwsgi::import(files, uwsgi);
    write_imported(
        &import.apps,
        &import.problems,
        &[],
        out,
        daemon_config,
        explicit,
    )
}

/// What both importers do with their apps: the TOML of each on stdout, or
/// one file per app in `out` (never overwriting one), each followed on
/// stderr by what `appctl check` says of it. Problems and files that would
/// not start exit 2, and the apps that could be converted are still
/// written; warnings alone exit 0, unless no app was found at all.
fn write_imported(
    apps: &[AppFile],
    problems: &[String],
    warnings: &[String],
    out: Option<&Path>,
    daemon_config: &Path,
    explicit: bool,
) -> Result<Exit, CommandError> {
    let defaults = match appvisor_config::load_daemon_or_default(daemon_config, explicit) {
        Ok(daemon) => daemon.defaults,
        Err(errors) => {
            print_error(&format_args!(
                "{}: checking the imported files without its [defaults]:\n{errors}",
                daemon_config.display()
            ));
            appvisor_config::Defaults::none()
        }
    };
    let mut failed = false;
    for app in apps {
        let text = app.toml();
        let shown_as = match out {
            None => {
                print(&format!("# ---- apps.d/{}.toml ----\n{text}\n", app.name))?;
                PathBuf::from(format!("apps.d/{}.toml", app.name))
            }
            Some(dir) => {
                let path = dir.join(format!("{}.toml", app.name));
                let written = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .and_then(|mut file| file.write_all(text.as_bytes()));
                match written {
                    Ok(()) => eprintln!("wrote {} (from {})", path.display(), app.origin),
                    Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                        print_error(&format_args!(
                            "{} exists, not overwritten (from {}): remove it or choose another --out",
                            path.display(),
                            app.origin
                        ));
                        failed = true;
                        continue;
                    }
                    Err(err) => {
                        print_error(&format_args!("writing {}: {err}", path.display()));
                        failed = true;
                        continue;
                    }
                }
                path
            }
        };
        let (errors, warnings) = crate::appfile::check(app, &shown_as, &defaults);
        for error in &errors {
            eprintln!("    would fail at start: {error}");
        }
        for warning in &warnings {
            eprintln!("    warning: {warning}");
        }
        failed |= !errors.is_empty();
    }
    for problem in problems {
        print_error(problem);
    }
    for warning in warnings {
        eprintln!("appctl: warning: {warning}");
    }
    if apps.is_empty() && problems.is_empty() {
        print_error(&"no program found to import");
    }
    if let (Some(dir), false) = (out, apps.is_empty()) {
        eprintln!(
            "check them before the daemon reads them: appctl check {}/*.toml",
            dir.display()
        );
    }
    Ok(if failed || !problems.is_empty() || apps.is_empty() {
        Exit::Usage
    } else {
        Exit::Done
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An answer of `GET /v1/apps`: text to escape, a key a newer daemon
    /// may add, an app stopped by someone, a notice.
    const ANSWER: &str = concat!(
        r#"{"apps":[{"name":"shop","state":"running","#,
        r#""reason":"ready: \"ok\" \u001b[2K é \u009b\u202e","pid":1234,"#,
        r#""uptime_secs":11520.5,"since":1764567890,"restarts":2,"failures":0,"#,
        r#""description":"The shop","app_groups":["web"],"user":"shop","#,
        r#""directory":"/srv/shop/current","release":"/srv/shop/releases/7","#,
        r#""autostart":true,"stopped_by":null,"config_error":null,"log_error":null,"#,
        r#""log_dropped_bytes":0,"future":{"z":[],"a":[1,-2,0.5]}},"#,
        r#"{"name":"blog","state":"stopped","reason":"","pid":null,"uptime_secs":null,"#,
        r#""since":0,"restarts":0,"failures":0,"description":"","app_groups":[],"#,
        r#""user":"blog","directory":"/srv/blog","release":null,"autostart":false,"#,
        r#""stopped_by":{"user":"alice","uid":1000,"at":1764567890},"#,
        r#""config_error":"line 3: \"x\"","log_error":null,"log_dropped_bytes":0}],"#,
        r#""notices":["apps.d/x.toml: ignored"]}"#,
    );

    /// What `appctl status` has always printed for [`ANSWER`].
    const TABLE: &str = "\
NAME  STATE    PID   UPTIME  RESTARTS  INFO
shop  running  1234  3h12m   2         /srv/shop/releases/7
blog  stopped  -     -       0         stopped by alice at 2025-12-01 05:44; newest file does not validate, running the last valid version: line 3: \"x\"
";

    /// What `appctl status --json` has always printed for [`ANSWER`]: the
    /// daemon's keys in its order, C1 controls and overrides escaped.
    const SHOWN: &str = r#"{
  "apps": [
    {
      "name": "shop",
      "state": "running",
      "reason": "ready: \"ok\" \u001b[2K é \u009b\u202e",
      "pid": 1234,
      "uptime_secs": 11520.5,
      "since": 1764567890,
      "restarts": 2,
      "failures": 0,
      "description": "The shop",
      "app_groups": [
        "web"
      ],
      "user": "shop",
      "directory": "/srv/shop/current",
      "release": "/srv/shop/releases/7",
      "autostart": true,
      "stopped_by": null,
      "config_error": null,
      "log_error": null,
      "log_dropped_bytes": 0,
      "future": {
        "z": [],
        "a": [
          1,
          -2,
          0.5
        ]
      }
    },
    {
      "name": "blog",
      "state": "stopped",
      "reason": "",
      "pid": null,
      "uptime_secs": null,
      "since": 0,
      "restarts": 0,
      "failures": 0,
      "description": "",
      "app_groups": [],
      "user": "blog",
      "directory": "/srv/blog",
      "release": null,
      "autostart": false,
      "stopped_by": {
        "user": "alice",
        "uid": 1000,
        "at": 1764567890
      },
      "config_error": "line 3: \"x\"",
      "log_error": null,
      "log_dropped_bytes": 0
    }
  ],
  "notices": [
    "apps.d/x.toml: ignored"
  ]
}
"#;

    /// `status` and `status --json` of every app print exactly what they
    /// always have, and exit 3: not every app runs.
    #[test]
    fn status_of_every_app_prints_what_it_always_has() {
        let answer = JsonBody::new(200, ANSWER);
        let status = status_table(&answer).unwrap();
        assert_eq!(status.table, TABLE);
        assert_eq!(status.notices, ["apps.d/x.toml: ignored"]);
        assert!(!status.all_running);
        let (shown, all_running) = shown_list(&answer).unwrap();
        assert_eq!(String::from_utf8(shown).unwrap(), SHOWN);
        assert!(!all_running);
        let running = ANSWER.replace(r#""state":"stopped""#, r#""state":"running""#);
        let (_, all_running) = shown_list(&JsonBody::new(200, running)).unwrap();
        assert!(all_running);
    }

    /// An answer that is not a list of apps fails `status --json` as it
    /// always has.
    #[test]
    fn status_json_of_what_is_not_a_list_fails_as_it_did() {
        let cases = [
            (
                ANSWER.replace(r#""name":"blog","#, ""),
                "unexpected answer from appvisord for /v1/apps: missing field `name`",
            ),
            (
                ANSWER.replace(r#""pid":1234"#, r#""pid":"1234""#),
                "unexpected answer from appvisord for /v1/apps: \
                 invalid type: string \"1234\", expected u32",
            ),
            (
                format!("{ANSWER} x"),
                "unexpected answer from appvisord (200): trailing characters at line 1 column 807",
            ),
            (
                ANSWER[1..].to_owned(),
                "unexpected answer from appvisord (200): trailing characters at line 1 column 7",
            ),
            (
                r#"{"apps":[{"name":"\ud800"}]}"#.to_owned(),
                "unexpected answer from appvisord (200): \
                 unexpected end of hex escape at line 1 column 25",
            ),
        ];
        for (bad, want) in cases {
            let err = shown_list(&JsonBody::new(200, bad.clone())).unwrap_err();
            assert_eq!(err.to_string(), want, "{bad}");
            assert_eq!(err.exit(), Exit::Failed, "{bad}");
        }
    }

    /// A key repeated inside an app: the `Value` round trip keeps its last
    /// value, in its first place.
    #[test]
    fn status_json_of_a_repeated_key_keeps_the_last() {
        let answer = ANSWER.replace(r#""z":[],"#, r#""z":[],"a":7,"#);
        let (shown, _) = shown_list(&JsonBody::new(200, answer)).unwrap();
        let shown = String::from_utf8(shown).unwrap();
        assert!(
            shown.contains(
                r#"        "z": [],
        "a": [
          1,"#
            ),
            "{shown}"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn many_apps_keep_few_requests_in_flight() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let now = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let names: Vec<String> = (0..40).map(|i| format!("app{i}")).collect();
        let client = Client::new("/nonexistent/ctl.sock");
        let got = for_each_app(&client, &names, |_client, name| {
            let (now, peak) = (now.clone(), peak.clone());
            async move {
                let running = now.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(running, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
                now.fetch_sub(1, Ordering::SeqCst);
                name
            }
        })
        .await;
        assert_eq!(got, names, "results come back in the order asked");
        assert_eq!(peak.load(Ordering::SeqCst), MAX_IN_FLIGHT);
    }

    #[test]
    fn status_exits_3_unless_every_app_runs() {
        let table = [
            (vec![], Exit::Done),
            (vec![State::Running, State::Running], Exit::Done),
            (vec![State::Running, State::Starting], Exit::NotRunning),
            (vec![State::Stopped], Exit::NotRunning),
        ];
        for (states, want) in table {
            let all_running = all_running(states.iter().copied());
            assert_eq!(status_exit(all_running), want, "{states:?}");
        }
    }
}
