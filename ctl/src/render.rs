//! How `appctl` shows the daemon's answers to a person: the status table,
//! action outcomes, the update report and whoami.
//!
//! Pure: every function turns protocol values into a `String` and never
//! prints, reads the clock or talks to the daemon, so the output is
//! unit-tested exactly. Every field from the daemon goes through
//! [`escape::field`]: an app's `STATUS=` text, names and paths must not
//! drive the terminal or fake a row.

use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

#[cfg(test)]
use appvisor_protocol::AppStatus;
use appvisor_protocol::{Action, ActionResult, ApplyReport, Outcome, Role, State, WhoAmI};

use crate::escape;
use crate::rows::{StatusRow, Text};

/// Spaces between table columns.
const GUTTER: &str = "  ";

/// An uptime in its two largest units: "45s", "12m5s", "3h12m", "2d3h".
#[cfg(test)]
fn uptime(secs: f64) -> String {
    let mut out = String::new();
    write_uptime(&mut out, secs);
    out
}

/// [`uptime`], appended to `out`.
fn write_uptime(out: &mut String, secs: f64) {
    // Truncation is intended: a person reads whole seconds.
    let total = if secs.is_finite() && secs > 0.0 {
        secs as u64
    } else {
        0
    };
    let (days, hours, minutes, seconds) = (
        total / 86_400,
        total / 3_600 % 24,
        total / 60 % 60,
        total % 60,
    );
    let (big, big_unit, small, small_unit) = if days > 0 {
        (days, 'd', hours, 'h')
    } else if hours > 0 {
        (hours, 'h', minutes, 'm')
    } else if minutes > 0 {
        (minutes, 'm', seconds, 's')
    } else {
        write_number(out, seconds);
        out.push('s');
        return;
    };
    write_number(out, big);
    out.push(big_unit);
    if small != 0 {
        write_number(out, small);
        out.push(small_unit);
    }
}

/// Seconds since the Unix epoch as "2026-11-23 13:02" (UTC).
pub fn utc_minute(epoch_secs: u64) -> String {
    let rfc3339 =
        humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(epoch_secs)).to_string();
    // "2026-11-23T13:02:07Z": keep the date and the minute.
    rfc3339
        .get(..16)
        .map(|minute| minute.replacen('T', " ", 1))
        .unwrap_or(rfc3339)
}

fn stopped_by(user: &str, at: u64) -> String {
    format!("stopped by {user} at {}", utc_minute(at))
}

/// The last column of the status table: for a running app the release its
/// directory resolved to, when that differs; who stopped a stopped app;
/// otherwise the reason; then what is wrong with its files. Escaped.
#[cfg(test)]
fn status_info(app: &AppStatus) -> String {
    let mut out = String::new();
    write_info(&mut out, &StatusRow::of(app));
    out
}

/// [`status_info`] of `app`, appended to `out`: each piece escaped as it
/// is written, which escapes the whole as [`escape::field`] would.
fn write_info(out: &mut String, app: &StatusRow<'_>) {
    let start = out.len();
    let release = app
        .release
        .as_ref()
        .map(Text::as_str)
        .filter(|release| app.state == State::Running && *release != app.directory);
    match (release, &app.stopped_by) {
        (Some(release), _) => write_field(out, release),
        (None, Some(by)) if app.state == State::Stopped => {
            write_field(out, &stopped_by(&by.user, by.at))
        }
        _ => write_field(out, &app.reason),
    }
    if let Some(error) = &app.config_error {
        if out.len() > start {
            out.push_str("; ");
        }
        out.push_str("newest file does not validate, running the last valid version: ");
        write_field(out, error.as_str());
    }
    if let Some(error) = &app.log_error {
        if out.len() > start {
            out.push_str("; ");
        }
        out.push_str("logs: ");
        write_field(out, error.as_str());
    }
    if out.len() == start {
        out.push('-');
    }
}

/// `text` escaped as [`escape::field`] escapes it, appended to `out`;
/// printable ASCII, what nearly every field is, is copied as it is.
fn write_field(out: &mut String, text: &str) {
    if text.bytes().all(|b| matches!(b, b' '..=b'~')) {
        out.push_str(text);
    } else {
        let _ = appvisor_protocol::escape::Escaping(out).write_str(text);
    }
}

/// `n` in decimal, appended to `out`, without the formatting machinery
/// (three numbers a row of a thousand).
fn write_number(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.push_str(std::str::from_utf8(&digits[at..]).expect("ASCII digits"));
}

/// The status table: NAME STATE PID UPTIME RESTARTS INFO, columns aligned,
/// no trailing spaces, one line per app.
pub fn status_table(apps: &[StatusRow<'_>]) -> String {
    let mut table = StatusTable::with_rows(apps.len());
    for app in apps {
        table.push(app);
    }
    table.finish()
}

/// [`status_table`] built a row at a time, as the rows are decoded.
#[derive(Debug)]
pub struct StatusTable(Cells<6>);

impl StatusTable {
    /// A table with room for about `rows` apps.
    pub fn with_rows(rows: usize) -> StatusTable {
        let mut cells = Cells::<6>::with_rows(rows + 1);
        for header in ["NAME", "STATE", "PID", "UPTIME", "RESTARTS", "INFO"] {
            cells.push(|text| text.push_str(header));
        }
        StatusTable(cells)
    }

    pub fn push(&mut self, app: &StatusRow<'_>) {
        let cells = &mut self.0;
        cells.push(|text| write_field(text, &app.name));
        cells.push(|text| text.push_str(app.state.as_str()));
        cells.push(|text| match app.pid {
            Some(pid) => write_number(text, pid.into()),
            None => text.push('-'),
        });
        cells.push(|text| match app.uptime_secs {
            Some(secs) => write_uptime(text, secs),
            None => text.push('-'),
        });
        cells.push(|text| write_number(text, app.restarts.into()));
        cells.push(|text| write_info(text, app));
    }

    /// The table's text.
    pub fn finish(self) -> String {
        self.0.table()
    }
}

/// The cells of a table, row by row, in one buffer: a table of a thousand
/// apps is built without an allocation per cell or per line.
#[derive(Debug)]
struct Cells<const COLUMNS: usize> {
    text: String,
    /// Where each cell ends in `text`, and its width in characters.
    ends: Vec<(usize, usize)>,
    widths: [usize; COLUMNS],
}

impl<const COLUMNS: usize> Cells<COLUMNS> {
    fn with_rows(rows: usize) -> Self {
        Cells {
            text: String::with_capacity(rows * 16 * COLUMNS),
            ends: Vec::with_capacity(rows * COLUMNS),
            widths: [0; COLUMNS],
        }
    }

    /// Adds the next cell, which `write` appends to the buffer.
    fn push(&mut self, write: impl FnOnce(&mut String)) {
        let start = self.text.len();
        write(&mut self.text);
        let cell = &self.text[start..];
        let width = if cell.is_ascii() {
            cell.len()
        } else {
            cell.chars().count()
        };
        let column = self.ends.len() % COLUMNS;
        self.widths[column] = self.widths[column].max(width);
        self.ends.push((self.text.len(), width));
    }

    /// The rows, columns aligned, the last one unpadded, each line
    /// without trailing spaces.
    fn table(&self) -> String {
        let padded: usize =
            self.widths[..COLUMNS - 1].iter().sum::<usize>() + (COLUMNS - 1) * GUTTER.len();
        let rows = self.ends.len() / COLUMNS;
        let mut out = String::with_capacity(self.text.len() + rows * (padded + 1));
        let mut start = 0;
        for row in self.ends.chunks(COLUMNS) {
            let line = out.len();
            for (column, &(end, width)) in row.iter().enumerate() {
                out.push_str(&self.text[start..end]);
                start = end;
                if column + 1 < COLUMNS {
                    out.extend(std::iter::repeat_n(' ', self.widths[column] - width));
                    out.push_str(GUTTER);
                }
            }
            let kept = out[line..].trim_end().len();
            out.truncate(line + kept);
            out.push('\n');
        }
        out
    }
}

/// One line for an action that went as asked: "shop: running (pid 1234)".
pub fn action_done(result: &ActionResult) -> String {
    let status = &result.status;
    let app = escape::field(&result.app);
    match status.pid {
        Some(pid) => format!("{app}: {} (pid {pid})\n", status.state),
        None => format!("{app}: {}\n", status.state),
    }
}

/// What a failed or timed-out action prints on stderr: the reason, then the
/// app's last log lines.
/// A start or stop that was done but not saved, and what that means.
pub fn intent_not_saved(result: &ActionResult) -> String {
    let (done, undone) = match result.action {
        appvisor_protocol::Action::Stop => ("stopped", "start it again"),
        _ => ("started", "leave it stopped"),
    };
    format!(
        "appctl: {app} was {done}, but appvisord could not save that: {error}\n\
         appctl: appvisord saves again at the next start, stop, update or shutdown; until \
         then, a crash or kill of appvisord would {undone}\n",
        app = result.app,
        error = result.intent_error.as_deref().unwrap_or("unknown error"),
    )
}

pub fn action_failure(result: &ActionResult, waited: Duration) -> String {
    let what = match result.action {
        Action::Stop => "did not stop",
        Action::Signal => "did not take the signal",
        Action::Start | Action::Restart | Action::Reload => "did not become ready",
    };
    let within = match result.outcome {
        Outcome::Timeout => format!(" within {}", humantime::format_duration(waited)),
        Outcome::Done | Outcome::Failed => String::new(),
    };
    let app = escape::field(&result.app);
    let mut out = format!(
        "appctl: {app} {what}{within}: {}\n",
        escape::field(&result.status.reason)
    );
    if result.log_tail.is_empty() {
        let _ = writeln!(out, "no log lines of {app}");
    } else {
        let _ = writeln!(out, "last log lines of {app}:");
        for line in &result.log_tail {
            let _ = writeln!(out, "    {}", escape::field(line));
        }
    }
    out
}

/// One line for a delivered signal: "shop: sent USR1 (pid 1234)".
pub fn signal_sent(result: &ActionResult, signal: &str) -> String {
    let (app, signal) = (escape::field(&result.app), escape::field(signal));
    match result.status.pid {
        Some(pid) => format!("{app}: sent {signal} (pid {pid})\n"),
        None => format!("{app}: sent {signal}\n"),
    }
}

/// The answer to `update`: one line per non-empty section, then each
/// invalid app with its errors indented.
pub fn apply_report(report: &ApplyReport) -> String {
    let mut out = String::new();
    let sections = [
        ("added", &report.added),
        ("changed", &report.changed),
        ("changed, applied without restart", &report.changed_in_place),
        ("removed", &report.removed),
        ("unchanged", &report.unchanged),
    ];
    for (title, names) in sections {
        if !names.is_empty() {
            let _ = writeln!(out, "{title}: {}", list(names));
        }
    }
    for app in &report.invalid {
        let _ = writeln!(
            out,
            "invalid: {} ({})",
            escape::field(&app.name),
            escape::field(&app.file)
        );
        for error in &app.errors {
            let _ = writeln!(out, "    {}", escape::field(error));
        }
        if app.kept_running {
            out.push_str("    (still running its last valid version)\n");
        }
    }
    for ignored in &report.ignored {
        let _ = writeln!(out, "ignored: {}\n    {}", ignored.file, ignored.reason);
    }
    if !report.not_started.is_empty() {
        let _ = writeln!(
            out,
            "not started: {}\n    (no room in appvisord's open-file limit: appctl status says more)",
            report.not_started.join(", ")
        );
    }
    if out.is_empty() {
        out.push_str("no apps in apps.d\n");
    }
    if report.dry_run {
        out.push_str("dry run: nothing was changed\n");
    }
    out
}

/// "uid 1001 (alice), groups: alice, shop-devs, role: operator of shop, blog".
pub fn whoami(who: &WhoAmI) -> String {
    let groups = if who.groups.is_empty() {
        "none".to_owned()
    } else {
        list(&who.groups)
    };
    let role = match who.role {
        Role::Admin => "admin".to_owned(),
        Role::Operator if who.apps.is_empty() => "operator".to_owned(),
        Role::Operator => format!("operator of {}", list(&who.apps)),
        Role::None => "none".to_owned(),
    };
    format!(
        "uid {} ({}), groups: {groups}, role: {role}\n",
        who.uid,
        escape::field(&who.user)
    )
}

/// Names joined with ", ", each escaped.
pub fn list(names: &[String]) -> String {
    let escaped: Vec<_> = names.iter().map(|name| escape::field(name)).collect();
    escaped.join(", ")
}

/// `appctl reexec`: how the hand-off went.
pub fn handoff(report: &appvisor_protocol::HandoffReport) -> String {
    match &report.error {
        None => format!(
            "handed over {} apps from appvisord {} to {}; apps unsupervised for {} ms\n",
            report.apps, report.from_version, report.to_version, report.unsupervised_ms
        ),
        Some(error) => format!(
            "no hand-off: {error}\nappvisord {} runs on; every app untouched\n",
            report.to_version
        ),
    }
}

#[cfg(test)]
mod tests {
    use appvisor_protocol::{IgnoredFile, InvalidApp, StoppedBy};

    use super::*;

    fn app(name: &str, state: State) -> AppStatus {
        AppStatus {
            user: name.to_owned(),
            directory: format!("/srv/{name}/current"),
            autostart: true,
            ..AppStatus::bare(name, state, String::new())
        }
    }

    #[test]
    fn action_failures_escape_the_reason_and_the_log_lines() {
        let mut failed = result(Action::Restart, Outcome::Failed, State::Backoff);
        failed.status.reason = "exited: \u{1b}[31mred".into();
        failed.log_tail = vec!["\u{1b}]52;c;cHduZWQ=\u{7}".into()];
        assert_eq!(
            action_failure(&failed, Duration::from_secs(60)),
            "\
appctl: shop did not become ready: exited: \\u{1b}[31mred
last log lines of shop:
    \\u{1b}]52;c;cHduZWQ=\\u{7}
"
        );
    }

    #[test]
    fn uptimes_show_two_units() {
        let table = [
            (0.0, "0s"),
            (-3.0, "0s"),
            (f64::NAN, "0s"),
            (45.9, "45s"),
            (60.0, "1m"),
            (725.0, "12m5s"),
            (3_600.0, "1h"),
            (3.0 * 3_600.0 + 12.0 * 60.0 + 59.0, "3h12m"),
            (86_400.0, "1d"),
            (2.0 * 86_400.0 + 3.0 * 3_600.0 + 5.0, "2d3h"),
        ];
        for (secs, want) in table {
            assert_eq!(uptime(secs), want, "{secs}");
        }
    }

    #[test]
    fn fields_are_escaped_as_escape_field_escapes_them() {
        let fields = [
            "",
            "plain /srv/shop/current ~!",
            "\u{7f}",
            "\u{1b}[2K\rshop  running\n\t",
            "\u{9b}31m é ✓ \u{2028} evil\u{202e}txt \u{0}",
        ];
        for field in fields {
            let mut out = "x".to_owned();
            write_field(&mut out, field);
            assert_eq!(out[1..], *escape::field(field), "{field:?}");
        }
    }

    /// The info column as it was first written: the whole text, then
    /// escaped.
    fn info_as_written_whole(app: &AppStatus) -> String {
        let release = app
            .release
            .as_deref()
            .filter(|release| app.state == State::Running && *release != app.directory);
        let mut info = match (release, &app.stopped_by) {
            (Some(release), _) => release.to_owned(),
            (None, Some(by)) if app.state == State::Stopped => stopped_by(&by.user, by.at),
            _ => app.reason.clone(),
        };
        if let Some(error) = &app.config_error {
            if !info.is_empty() {
                info.push_str("; ");
            }
            let _ = write!(
                info,
                "newest file does not validate, running the last valid version: {error}"
            );
        }
        if let Some(error) = &app.log_error {
            if !info.is_empty() {
                info.push_str("; ");
            }
            let _ = write!(info, "logs: {error}");
        }
        if info.is_empty() {
            info.push('-');
        }
        escape::field(&info).into_owned()
    }

    #[test]
    fn info_escaped_piece_by_piece_is_info_escaped_whole() {
        let hostile = "\u{1b}[2K\rshop  running\n é \u{9b} \u{202e}";
        let texts = [None, Some(""), Some("plain"), Some(hostile)];
        for state in State::ALL {
            for reason in ["", "ready", hostile] {
                for release in texts {
                    for error in texts {
                        let mut status = app("shop", state);
                        status.reason = reason.into();
                        status.release = release.map(Into::into);
                        status.config_error = error.map(Into::into);
                        status.log_error = error.map(|e| format!("{e}!"));
                        status.stopped_by = release.map(|user| StoppedBy {
                            user: user.into(),
                            uid: 1,
                            at: 1_795_438_927,
                        });
                        assert_eq!(
                            status_info(&status),
                            info_as_written_whole(&status),
                            "{status:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn numbers_are_decimal() {
        for n in [0, 7, 10, 1234, u64::from(u32::MAX), u64::MAX] {
            let mut out = String::new();
            write_number(&mut out, n);
            assert_eq!(out, n.to_string());
        }
    }

    #[test]
    fn times_are_utc_minutes() {
        assert_eq!(utc_minute(0), "1970-01-01 00:00");
        assert_eq!(utc_minute(1_795_438_927), "2026-11-23 13:02");
    }

    #[test]
    fn status_info_prefers_release_then_stopper_then_reason() {
        let mut running = app("shop", State::Running);
        running.reason = "ready".into();
        running.release = Some("/srv/shop/releases/42".into());
        let mut same_release = running.clone();
        same_release.release = Some(same_release.directory.clone());
        let mut stopped = app("shop", State::Stopped);
        stopped.reason = "stopped by hand".into();
        stopped.stopped_by = Some(StoppedBy {
            user: "alice".into(),
            uid: 1001,
            at: 1_795_438_927,
        });
        let mut backoff = app("shop", State::Backoff);
        backoff.reason = "exited with status 1 after 0.2s, next try in 16s".into();
        backoff.release = Some("/srv/shop/releases/41".into());
        let mut stale = running.clone();
        stale.config_error = Some("shop.toml:3:1: unknown key `foo`".into());
        let empty = app("shop", State::Exited);

        let table = [
            (running, "/srv/shop/releases/42"),
            (same_release, "ready"),
            (stopped, "stopped by alice at 2026-11-23 13:02"),
            (backoff, "exited with status 1 after 0.2s, next try in 16s"),
            (
                stale,
                "/srv/shop/releases/42; newest file does not validate, running the last valid \
                 version: shop.toml:3:1: unknown key `foo`",
            ),
            (empty, "-"),
        ];
        for (app, want) in table {
            assert_eq!(status_info(&app), want, "{app:?}");
        }
    }

    #[test]
    fn status_table_aligns_columns() {
        let mut shop = app("shop", State::Running);
        shop.pid = Some(1234);
        shop.uptime_secs = Some(11_520.0);
        shop.restarts = 2;
        shop.reason = "ready".into();
        let mut blog = app("blog-admin", State::Fatal);
        blog.restarts = 15;
        blog.reason = "exited with status 1 after 0.2s, 5 failed starts in a row".into();
        assert_eq!(
            status_table(&[StatusRow::of(&shop), StatusRow::of(&blog)]),
            "\
NAME        STATE    PID   UPTIME  RESTARTS  INFO
shop        running  1234  3h12m   2         ready
blog-admin  fatal    -     -       15        exited with status 1 after 0.2s, 5 failed starts in a row
"
        );
    }

    #[test]
    fn status_fields_cannot_drive_the_terminal_or_fake_a_row() {
        let mut shop = app("shop", State::Running);
        shop.pid = Some(1234);
        shop.uptime_secs = Some(5.0);
        // What an app can put in STATUS=: erase its row, forge another,
        // set the window title.
        shop.reason =
            "\u{1b}[2K\rshop  running  1  1s  0  all good\nevil  running\u{1b}]0;pwned\u{7}".into();
        shop.log_error = Some("cannot write /x/stdout.log: No space left on device".into());
        let table = status_table(&[StatusRow::of(&shop)]);
        assert_eq!(table.lines().count(), 2, "{table}");
        assert!(
            !table.contains('\u{1b}') && !table.contains('\r'),
            "{table:?}"
        );
        assert!(table.ends_with(
            "\\u{1b}[2K\\rshop  running  1  1s  0  all good\\nevil  running\\u{1b}]0;pwned\\u{7}; \
             logs: cannot write /x/stdout.log: No space left on device\n"
        ), "{table}");
    }

    #[test]
    fn an_empty_table_is_its_header() {
        assert_eq!(
            status_table(&[]),
            "NAME  STATE  PID  UPTIME  RESTARTS  INFO\n"
        );
    }

    fn result(action: Action, outcome: Outcome, state: State) -> ActionResult {
        let mut status = app("shop", state);
        status.reason = "exited with status 3 after 0.5s".into();
        ActionResult {
            app: "shop".into(),
            action,
            outcome,
            status,
            log_tail: vec![
                "Traceback (most recent call last):".into(),
                "ImportError: x".into(),
            ],
            intent_error: None,
        }
    }

    #[test]
    fn done_actions_show_state_and_pid() {
        let mut running = result(Action::Restart, Outcome::Done, State::Running);
        running.status.pid = Some(1234);
        assert_eq!(action_done(&running), "shop: running (pid 1234)\n");
        let stopped = result(Action::Stop, Outcome::Done, State::Stopped);
        assert_eq!(action_done(&stopped), "shop: stopped\n");
    }

    #[test]
    fn an_unsaved_stop_says_what_a_daemon_restart_would_undo() {
        let mut stopped = result(Action::Stop, Outcome::Done, State::Stopped);
        stopped.intent_error =
            Some("creating /var/lib/appvisor/.stopped.json.tmp: Read-only file system".into());
        assert_eq!(
            intent_not_saved(&stopped),
            "\
appctl: shop was stopped, but appvisord could not save that: creating /var/lib/appvisor/.stopped.json.tmp: Read-only file system
appctl: appvisord saves again at the next start, stop, update or shutdown; until then, a crash or kill of appvisord would start it again
"
        );
    }

    #[test]
    fn failures_show_reason_and_log_tail() {
        let failed = result(Action::Restart, Outcome::Failed, State::Backoff);
        assert_eq!(
            action_failure(&failed, Duration::from_secs(60)),
            "\
appctl: shop did not become ready: exited with status 3 after 0.5s
last log lines of shop:
    Traceback (most recent call last):
    ImportError: x
"
        );
        let mut hung = result(Action::Stop, Outcome::Timeout, State::Stopping);
        hung.status.reason = "waiting for 3 processes to exit".into();
        hung.log_tail.clear();
        assert_eq!(
            action_failure(&hung, Duration::from_secs(90)),
            "\
appctl: shop did not stop within 1m 30s: waiting for 3 processes to exit
no log lines of shop
"
        );
    }

    #[test]
    fn apply_report_lists_sections_and_invalid_apps() {
        let report = ApplyReport {
            dry_run: true,
            added: vec!["a".into(), "b".into()],
            changed: vec!["c".into()],
            changed_in_place: vec!["e".into(), "f".into()],
            removed: vec![],
            unchanged: vec!["d".into()],
            invalid: vec![
                InvalidApp {
                    name: "shop".into(),
                    file: "/etc/appvisor/apps.d/shop.toml".into(),
                    errors: vec![
                        "shop.toml:3:1: unknown key `foo`".into(),
                        "shop.toml:5:8: user `nobody2` does not exist".into(),
                    ],
                    kept_running: true,
                },
                InvalidApp {
                    name: "new".into(),
                    file: "/etc/appvisor/apps.d/new.toml".into(),
                    errors: vec!["new.toml:1:1: missing key `user`".into()],
                    kept_running: false,
                },
            ],
            ignored: vec![IgnoredFile {
                file: "/etc/appvisor/apps.d/Shop.toml".into(),
                reason: "invalid app name \"Shop\" (name the file after the app)".into(),
            }],
            not_started: vec!["e".into(), "f".into()],
        };
        assert_eq!(
            apply_report(&report),
            "\
added: a, b
changed: c
changed, applied without restart: e, f
unchanged: d
invalid: shop (/etc/appvisor/apps.d/shop.toml)
    shop.toml:3:1: unknown key `foo`
    shop.toml:5:8: user `nobody2` does not exist
    (still running its last valid version)
invalid: new (/etc/appvisor/apps.d/new.toml)
    new.toml:1:1: missing key `user`
ignored: /etc/appvisor/apps.d/Shop.toml
    invalid app name \"Shop\" (name the file after the app)
not started: e, f
    (no room in appvisord's open-file limit: appctl status says more)
dry run: nothing was changed
"
        );
        assert_eq!(apply_report(&ApplyReport::default()), "no apps in apps.d\n");
    }

    #[test]
    fn whoami_names_role_and_apps() {
        let mut who = WhoAmI {
            uid: 1001,
            user: "alice".into(),
            groups: vec!["alice".into(), "shop-devs".into()],
            role: Role::Operator,
            apps: vec!["shop".into(), "blog".into()],
        };
        assert_eq!(
            whoami(&who),
            "uid 1001 (alice), groups: alice, shop-devs, role: operator of shop, blog\n"
        );
        who.role = Role::Admin;
        assert_eq!(
            whoami(&who),
            "uid 1001 (alice), groups: alice, shop-devs, role: admin\n"
        );
        who.role = Role::None;
        who.groups.clear();
        assert_eq!(whoami(&who), "uid 1001 (alice), groups: none, role: none\n");
    }
}
