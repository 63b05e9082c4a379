//! `appvisord check` and `appctl check`: offline validation for
//! configuration management's `validate_cmd`. Validation, resolution and
//! cross-app conflicts, reported together; never talks to a daemon.

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::default_limits::DefaultLimits;
use super::error::ConfigError;
use super::judge::{conflicts, judge_app, Validated};
use super::load::{
    app_files, app_name, check_apps_dir, load_daemon_or_default, load_valid_app, DaemonConfig,
};
use super::resolve::UserDb;
use super::security::SecretGroups;
use super::spec::{AppName, AppSpec, Signal};
use super::uwsgi;
use super::validate::{Defaults, ValidApp};

/// What `check` found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CheckReport {
    pub errors: Vec<ConfigError>,
    pub warnings: Vec<ConfigError>,
    /// Files read, the daemon config included when it exists.
    pub checked: Vec<PathBuf>,
    /// The daemon config, when it was read, and whether it is valid.
    pub settings: Option<(PathBuf, bool)>,
    /// Whether the daemon config was itself what was asked to be checked
    /// (no files named), rather than read for its `[defaults]`.
    pub whole_host: bool,
    /// Each app file checked, and whether it is valid: it validates,
    /// resolves, and holds no address another app holds.
    pub apps: Vec<(PathBuf, bool)>,
    /// Valid apps checked whose limits (with `[defaults]`) set no `tasks`.
    pub without_tasks_limit: Vec<String>,
    /// Valid apps checked whose stop cuts uWSGI's requests in flight
    /// ([`uwsgi::stop_cuts_requests`]).
    pub uwsgi_cutting_stop: Vec<String>,
    /// What else a person should know, e.g. the default limits.
    pub notes: Vec<String>,
}

impl CheckReport {
    /// No errors (warnings allowed).
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }

    /// The last line: what was checked and what it came to, e.g.
    /// `checked 2 app files: 1 valid, 1 invalid; 3 errors, 1 warning`.
    /// The daemon config is named when it was checked for itself, or
    /// when it is invalid.
    pub fn summary(&self) -> String {
        let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
        let mut out = String::from("checked ");
        if let Some((path, valid)) = &self.settings {
            if self.whole_host || !valid {
                out.push_str(&path.display().to_string());
                if !valid {
                    out.push_str(" (invalid)");
                }
                out.push_str(" and ");
            }
        }
        out.push_str(&plural(self.apps.len(), "app file"));
        let valid = self.apps.iter().filter(|(_, valid)| *valid).count();
        let outcomes: Vec<String> = [(valid, "valid"), (self.apps.len() - valid, "invalid")]
            .into_iter()
            .filter(|(n, _)| *n > 0)
            .map(|(n, what)| format!("{n} {what}"))
            .collect();
        if !outcomes.is_empty() {
            out.push_str(": ");
            out.push_str(&outcomes.join(", "));
        }
        let counts: Vec<String> = [
            (self.errors.len(), "error"),
            (self.warnings.len(), "warning"),
        ]
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, word)| plural(n, word))
        .collect();
        if !counts.is_empty() {
            out.push_str("; ");
            out.push_str(&counts.join(", "));
        }
        out
    }

    /// Notes the limits the daemon's `defaults` give the apps checked.
    pub fn with_default_limits(mut self, defaults: &DefaultLimits) -> CheckReport {
        if let (false, Some(what)) = (self.without_tasks_limit.is_empty(), defaults.describe()) {
            self.notes.push(format!(
                "{what} by default for the apps without [limits] tasks: {}",
                self.without_tasks_limit.join(", ")
            ));
        }
        self
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for error in &self.errors {
            writeln!(f, "error: {error}")?;
        }
        for warning in &self.warnings {
            writeln!(f, "warning: {warning}")?;
        }
        for note in &self.notes {
            writeln!(f, "note: {note}")?;
        }
        f.write_str(&self.summary())
    }
}

/// Checks what the daemon itself needs to start, and nothing else:
/// `appvisor.toml`, and that its `apps_dir` can be listed. App files are
/// not read: an invalid app file is that app's problem, never the
/// daemon's, so a service manager's pre-start check must not fail on one.
pub fn check_settings(daemon_config: &Path, explicit: bool) -> CheckReport {
    let mut report = CheckReport::default();
    match load_daemon_or_default(daemon_config, explicit) {
        Ok(daemon) => {
            if daemon_config.exists() {
                report.checked.push(daemon_config.to_owned());
            }
            if let Err(errors) = check_apps_dir(&daemon.spec.apps_dir) {
                report.errors.extend(errors);
            }
        }
        Err(errors) => {
            report.checked.push(daemon_config.to_owned());
            report.errors.extend(errors);
        }
    }
    report
}

/// Checks the daemon config and, with no `files`, every app in its
/// `apps_dir`; with `files`, those app files only (merged over the daemon
/// config's `[defaults]`), and their listen addresses against the other
/// apps in `apps_dir`, so a new file that steals a port is caught before it
/// is dropped in. A file named like an app in `apps_dir` replaces it.
///
/// `as_name` names the app of the one file given, whatever its file name:
/// Ansible's `validate` runs on a temporary copy with a random name, which
/// would otherwise look like a new app clashing with the file it replaces.
pub fn check(
    daemon_config: &Path,
    explicit: bool,
    files: &[PathBuf],
    as_name: Option<&AppName>,
    db: &dyn UserDb,
) -> CheckReport {
    let mut report = CheckReport {
        whole_host: files.is_empty(),
        ..CheckReport::default()
    };
    let daemon = match load_daemon_or_default(daemon_config, explicit) {
        Ok(daemon) => {
            if daemon_config.exists() {
                report.checked.push(daemon_config.to_owned());
                report.settings = Some((daemon_config.to_owned(), true));
            }
            Some(daemon)
        }
        Err(errors) => {
            report.checked.push(daemon_config.to_owned());
            report.settings = Some((daemon_config.to_owned(), false));
            report.errors.extend(errors);
            None
        }
    };
    // With a broken daemon config, apps are still checked, against no
    // defaults: the daemon config's own errors are already reported.
    let defaults = daemon
        .as_ref()
        .map_or_else(Defaults::none, |daemon| daemon.defaults.clone());

    let named = !files.is_empty();
    let files = if named {
        files.to_vec()
    } else {
        match daemon
            .as_ref()
            .map(|daemon| app_files(&daemon.spec.apps_dir))
        {
            Some(Ok(files)) => files,
            Some(Err(errors)) => {
                report.errors.extend(errors);
                Vec::new()
            }
            None => Vec::new(),
        }
    };

    let secrets = SecretGroups::scan(Path::new("/"));
    let mut specs = Vec::new();
    for file in &files {
        report.checked.push(file.clone());
        let errors_before = report.errors.len();
        let name = match as_name {
            Some(name) => Ok(name.clone()),
            None => app_name(file),
        };
        let judged = match name {
            Ok(name) => judge_app(file, &name, &defaults, db, &secrets).outcome,
            Err(error) => Err(error.into()),
        };
        match judged {
            Ok(Validated { valid, resolved }) => {
                report.warnings.extend(valid.warnings.iter().cloned());
                report.warnings.extend(
                    uwsgi_script_warnings(&valid.spec)
                        .into_iter()
                        .map(|warning| valid.positions.fill(warning)),
                );
                report.warnings.extend(valid.unknown_operators(db));
                match resolved {
                    Ok(resolved) => {
                        report.warnings.extend(
                            resolved
                                .weaknesses
                                .iter()
                                .filter(|weakness| weakness.kind.needs_identity())
                                .map(|weakness| valid.positions.locate(file, weakness)),
                        );
                        if valid.spec.limits.tasks.is_none() {
                            report.without_tasks_limit.push(valid.spec.name.to_string());
                        }
                        if uwsgi::stop_cuts_requests(&valid.spec.command, valid.spec.stop.signal.0)
                        {
                            report.uwsgi_cutting_stop.push(valid.spec.name.to_string());
                        }
                    }
                    Err(errors) => report.errors.extend(errors),
                }
                specs.push(valid);
            }
            Err(errors) => report.errors.extend(errors),
        }
        report
            .apps
            .push((file.clone(), report.errors.len() == errors_before));
    }

    // Conflicts are reported on the later app of a pair: the apps already
    // in place go first, so the blame lands on the files being checked.
    let mut all = if named {
        others_in_apps_dir(daemon.as_ref(), &files, as_name, &defaults)
    } else {
        Vec::new()
    };
    all.extend(specs);
    for conflict in conflicts(&all) {
        if named && !files.contains(&conflict.file) {
            continue;
        }
        for (file, valid) in &mut report.apps {
            if *file == conflict.file {
                *valid = false;
            }
        }
        report.errors.push(conflict);
    }
    if !report.uwsgi_cutting_stop.is_empty() {
        report.notes.push(format!(
            "uWSGI stops with INT, which cuts the requests its workers are answering, in: {}; \
             \"--hook-master-start\", \"{}\" in the command makes TERM, then its stop \
             signal, a graceful stop (docs/servers.md)",
            report.uwsgi_cutting_stop.join(", "),
            uwsgi::GRACEFUL_TERM_HOOK
        ));
    }
    report
}

/// The most of a program `check` reads to see whether it is a script that
/// runs uWSGI: a wrapper's `exec` line comes early.
const SCRIPT_HEAD: u64 = 64 * 1024;

/// What the daemon cannot know about a `command[0]` that is a script
/// running uWSGI: it decides from the configuration alone (`uwsgi`), so
/// such an app stops with TERM, which uWSGI takes as "reload" unless the
/// script gives it the graceful TERM hook, and its socket options go
/// unchecked. `check` reads the script, which the daemon
/// never does, to say so.
fn uwsgi_script_warnings(spec: &AppSpec) -> Vec<ConfigError> {
    let Some(program) = spec.command.first() else {
        return Vec::new();
    };
    if uwsgi::runs_uwsgi(&spec.command) {
        return Vec::new();
    }
    let Some(args) = read_script_head(Path::new(program))
        .as_deref()
        .and_then(uwsgi::script_uwsgi_args)
    else {
        return Vec::new();
    };
    let warning = |message: String, hint: &str| {
        ConfigError::new(&spec.file, message)
            .with_key("command[0]")
            .with_hint(hint)
    };
    let mut warnings = Vec::new();
    if spec.stop.signal == Signal(nix::sys::signal::Signal::SIGTERM)
        && !args.iter().any(|a| a == "--die-on-term")
        && !uwsgi::stops_gracefully_on_term(&args)
    {
        warnings.push(warning(
            format!(
                "{program} is a script that runs uWSGI, which reloads on TERM; the daemon does \
                 not read scripts, so it stops this app with TERM and kills it at the stop timeout"
            ),
            "add [stop] signal = \"INT\", or name the script uwsgi-… so the daemon knows",
        ));
    }
    if let Some((message, hint)) =
        uwsgi::missing_fd_socket_in(&args, spec.listen.len(), &spec.environment)
    {
        warnings.push(warning(
            format!("{program} runs uWSGI: {message}"),
            &format!("in the script, {hint}"),
        ));
    }
    warnings
}

/// The first [`SCRIPT_HEAD`] bytes of `path` when it is a regular file
/// starting with `#!`. The file is the app owner's, so hostile: the last
/// component is never followed (O_NOFOLLOW), a FIFO or device never blocks
/// the open (O_NONBLOCK) and is refused, and the read is bounded.
fn read_script_head(path: &Path) -> Option<String> {
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut head = Vec::new();
    file.take(SCRIPT_HEAD).read_to_end(&mut head).ok()?;
    head.starts_with(b"#!")
        .then(|| String::from_utf8_lossy(&head).into_owned())
}

/// The valid apps of `apps_dir` that none of `files` replaces (by name or
/// path). Their own errors are not this check's business.
fn others_in_apps_dir(
    daemon: Option<&DaemonConfig>,
    files: &[PathBuf],
    as_name: Option<&AppName>,
    defaults: &Defaults,
) -> Vec<ValidApp> {
    let Some(Ok(present)) = daemon.map(|daemon| app_files(&daemon.spec.apps_dir)) else {
        return Vec::new();
    };
    let replaced_names: Vec<_> = match as_name {
        Some(name) => vec![name.clone()],
        None => files
            .iter()
            .filter_map(|file| app_name(file).ok())
            .collect(),
    };
    let same_file = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    };
    present
        .into_iter()
        .filter(|path| !files.iter().any(|file| same_file(file, path)))
        .filter(|path| app_name(path).is_ok_and(|name| !replaced_names.contains(&name)))
        .filter_map(|path| load_valid_app(&path, defaults).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::resolve::FakeUserDb;

    struct Host {
        dir: tempfile::TempDir,
    }

    impl Host {
        /// A daemon config, an apps.d and a program and directory that
        /// resolve for user "shop".
        fn new() -> Host {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path();
            fs::create_dir_all(root.join("apps.d")).unwrap();
            fs::create_dir_all(root.join("srv")).unwrap();
            fs::write(root.join("prog"), "#!/bin/sh\n").unwrap();
            fs::set_permissions(root.join("prog"), fs::Permissions::from_mode(0o755)).unwrap();
            fs::write(
                root.join("appvisor.toml"),
                format!("apps_dir = \"{}\"\n", root.join("apps.d").display()),
            )
            .unwrap();
            Host { dir }
        }

        fn path(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }

        /// The fixtures live in a temp dir under /tmp, which private_tmp
        /// would hide from the app: turn it off.
        fn app_text(&self, extra: &str) -> String {
            format!(
                "user = \"shop\"\ncommand = [\"{}\"]\ndirectory = \"{}\"\nsandbox = {{ connect_ports = [], private_tmp = false }}\n{extra}",
                self.path("prog").display(),
                self.path("srv").display()
            )
        }

        fn write(&self, name: &str, text: &str) -> PathBuf {
            let path = self.path(name);
            fs::write(&path, text).unwrap();
            path
        }

        fn check(&self, files: &[PathBuf]) -> CheckReport {
            self.check_as(files, None)
        }

        fn check_as(&self, files: &[PathBuf], as_name: Option<&str>) -> CheckReport {
            let db = FakeUserDb::new().with_user("shop", 1001, 1001);
            let name = as_name.map(|n| AppName::new(n).unwrap());
            check(&self.path("appvisor.toml"), true, files, name.as_ref(), &db)
        }
    }

    /// uWSGI 2.0 has no graceful stop signal of its own: check says which
    /// apps would cut requests in flight, and what fixes it.
    #[test]
    fn the_report_notes_uwsgi_apps_whose_stop_cuts_requests() {
        let host = Host::new();
        let program = host.path("uwsgi");
        fs::copy(host.path("prog"), &program).unwrap();
        let uwsgi = |extra: &str| {
            host.app_text("[limits]\ntasks = 64\n").replace(
                &format!("[\"{}\"]", host.path("prog").display()),
                &format!(
                    "[\"{}\", \"--http-socket\", \"fd://3\"{extra}]",
                    program.display()
                ),
            )
        };
        host.write("apps.d/shop.toml", &uwsgi(""));
        host.write(
            "apps.d/blog.toml",
            &uwsgi(", \"--hook-master-start\", \"unix_signal:15 gracefully_kill_them_all\""),
        );
        host.write(
            "apps.d/wiki.toml",
            &uwsgi(", \"--ini\", \"/srv/wiki/uwsgi.ini\""),
        );
        let report = host.check(&[]);
        assert_eq!(
            report.notes,
            [
                "uWSGI stops with INT, which cuts the requests its workers are answering, in: \
                 shop; \"--hook-master-start\", \"unix_signal:15 gracefully_kill_them_all\" in \
                 the command makes TERM, then its stop signal, a graceful stop (docs/servers.md)"
            ],
            "{report}"
        );
    }

    #[test]
    fn the_report_notes_the_default_tasks_limit_of_apps_without_one() {
        let host = Host::new();
        host.write("apps.d/shop.toml", &host.app_text(""));
        host.write("apps.d/blog.toml", &host.app_text("[limits]\ntasks = 64\n"));
        let report = host
            .check(&[])
            .with_default_limits(&DefaultLimits::for_host(Some(32_768)));
        assert_eq!(
            report.to_string(),
            format!(
                "note: tasks = 4915 (15% of the host's 32768 tasks) by default for the apps \
                 without [limits] tasks: shop\nchecked {} and 2 app files: 2 valid",
                host.path("appvisor.toml").display()
            )
        );
        fs::write(
            host.path("appvisor.toml"),
            format!(
                "apps_dir = \"{}\"\n[defaults.limits]\ntasks = 100\n",
                host.path("apps.d").display()
            ),
        )
        .unwrap();
        let report = host
            .check(&[])
            .with_default_limits(&DefaultLimits::for_host(Some(32_768)));
        assert!(report.notes.is_empty(), "[defaults] sets it: {report}");
    }

    #[test]
    fn settings_only_ignores_app_files_but_not_a_missing_apps_dir() {
        let host = Host::new();
        host.write("apps.d/shop.toml", "user = \"shop\"\nno_such_key = 1\n");
        let settings = check_settings(&host.path("appvisor.toml"), true);
        assert!(settings.is_ok(), "{settings}");
        assert_eq!(settings.checked, [host.path("appvisor.toml")]);
        assert!(!host.check(&[]).is_ok(), "the full check still sees it");

        fs::remove_dir_all(host.path("apps.d")).unwrap();
        let settings = check_settings(&host.path("appvisor.toml"), true);
        assert_eq!(
            settings
                .errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            [format!(
                "{}: cannot read apps directory: No such file or directory (os error 2) \
                 (create it or give the right path)",
                host.path("apps.d").display()
            )]
        );
        fs::write(host.path("appvisor.toml"), "apps_dir = 3\n").unwrap();
        assert!(!check_settings(&host.path("appvisor.toml"), true).is_ok());
    }

    #[test]
    fn whole_host_ok() {
        let host = Host::new();
        host.write(
            "apps.d/shop.toml",
            &host.app_text("[[listen]]\naddress = \"127.0.0.1:8001\"\n"),
        );
        host.write(
            "apps.d/blog.toml",
            &host.app_text("[[listen]]\naddress = \"127.0.0.1:8002\"\n"),
        );
        let report = host.check(&[]);
        assert!(report.is_ok(), "{report}");
        assert_eq!(
            report.checked,
            [
                host.path("appvisor.toml"),
                host.path("apps.d/blog.toml"),
                host.path("apps.d/shop.toml")
            ]
        );
        assert_eq!(
            report.to_string(),
            format!(
                "checked {} and 2 app files: 2 valid",
                host.path("appvisor.toml").display()
            )
        );
    }

    #[test]
    fn whole_host_reports_every_file_and_conflicts() {
        let host = Host::new();
        host.write(
            "apps.d/shop.toml",
            &host.app_text("[[listen]]\naddress = \"127.0.0.1:8001\"\n"),
        );
        host.write(
            "apps.d/web.toml",
            &host.app_text("[[listen]]\naddress = \"0.0.0.0:8001\"\n"),
        );
        host.write("apps.d/api.toml", &host.app_text("umask = \"9\"\n"));
        host.write(
            "apps.d/ops.toml",
            &host
                .app_text("user = \"ops\"\n")
                .replace("user = \"shop\"\n", ""),
        );
        let report = host.check(&[]);
        let shop = host.path("apps.d/shop.toml");
        let web = host.path("apps.d/web.toml");
        let api = host.path("apps.d/api.toml");
        let ops = host.path("apps.d/ops.toml");
        assert_eq!(
            report.to_string(),
            format!(
                "error: {}:5:9: umask: invalid umask \"9\" (use 3 or 4 octal digits like \"0027\")\n\
                 error: {}:4:8: user: user \"ops\" does not exist (create it, like `useradd --system shop`, or fix the name)\n\
                 error: {}:6:11: listen[0].address: 0.0.0.0:8001 overlaps 127.0.0.1:8001 of app \"shop\" ({}) \
                 (give each app its own port or socket path)\n\
                 checked {} and 4 app files: 1 valid, 3 invalid; 3 errors",
                api.display(),
                ops.display(),
                web.display(),
                shop.display(),
                host.path("appvisor.toml").display(),
            )
        );
    }

    /// "checked 2 files" when given one, once; the count now says
    /// what was checked and what it came to.
    #[test]
    fn the_summary_says_what_was_checked() {
        let error = ConfigError::new("x.toml", "bad");
        let report = |settings: Option<bool>, whole_host, apps: &[bool], errors, warnings| {
            CheckReport {
                errors: vec![error.clone(); errors],
                warnings: vec![error.clone(); warnings],
                checked: Vec::new(),
                settings: settings
                    .map(|valid| (PathBuf::from("/etc/appvisor/appvisor.toml"), valid)),
                whole_host,
                apps: apps
                    .iter()
                    .enumerate()
                    .map(|(i, valid)| (PathBuf::from(format!("{i}.toml")), *valid))
                    .collect(),
                ..CheckReport::default()
            }
            .summary()
        };
        let cases = [
            (
                report(Some(true), false, &[true], 0, 0),
                "checked 1 app file: 1 valid",
            ),
            (
                report(None, false, &[true], 0, 0),
                "checked 1 app file: 1 valid",
            ),
            (
                report(Some(true), false, &[true, false], 3, 1),
                "checked 2 app files: 1 valid, 1 invalid; 3 errors, 1 warning",
            ),
            (
                report(Some(true), false, &[false], 1, 0),
                "checked 1 app file: 1 invalid; 1 error",
            ),
            (
                report(Some(true), true, &[true, true], 0, 2),
                "checked /etc/appvisor/appvisor.toml and 2 app files: 2 valid; 2 warnings",
            ),
            (
                report(Some(false), false, &[true], 2, 0),
                "checked /etc/appvisor/appvisor.toml (invalid) and 1 app file: 1 valid; 2 errors",
            ),
            (
                report(Some(true), true, &[], 0, 0),
                "checked /etc/appvisor/appvisor.toml and 0 app files",
            ),
            (
                report(None, true, &[], 1, 0),
                "checked 0 app files; 1 error",
            ),
        ];
        for (got, want) in cases {
            assert_eq!(got, want);
        }
    }

    #[test]
    fn a_named_file_is_checked_against_the_apps_in_place() {
        let host = Host::new();
        host.write(
            "apps.d/shop.toml",
            &host.app_text("[[listen]]\naddress = \"127.0.0.1:8001\"\n"),
        );
        // A new app stealing shop's port is refused before it is dropped in.
        let thief = host.write(
            "thief.toml",
            &host.app_text("[[listen]]\naddress = \"127.0.0.1:8001\"\n"),
        );
        let report = host.check(std::slice::from_ref(&thief));
        assert_eq!(
            report
                .errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            [format!(
                "{}:6:11: listen[0].address: 127.0.0.1:8001 is already taken by app \"shop\" ({}) \
                 (give each app its own port or socket path)",
                thief.display(),
                host.path("apps.d/shop.toml").display()
            )]
        );
        assert_eq!(report.checked, [host.path("appvisor.toml"), thief.clone()]);
        // A new version of shop itself (same name) replaces it: no conflict.
        let update = host.write(
            "shop.toml",
            &host.app_text("[[listen]]\naddress = \"127.0.0.1:8001\"\n"),
        );
        assert!(host.check(&[update]).is_ok());
    }

    #[test]
    fn a_temporary_copy_is_checked_as_the_app_it_replaces() {
        let host = Host::new();
        let listen = "[[listen]]\naddress = \"127.0.0.1:8001\"\n";
        host.write("apps.d/shop.toml", &host.app_text(listen));
        // What Ansible's `validate: appctl check --as shop %s` checks: a new
        // version of shop under a random name.
        let copy = host.write(".ansible_tmpa1b2c3shop.toml", &host.app_text(listen));
        assert!(!host.check(std::slice::from_ref(&copy)).is_ok());
        let report = host.check_as(std::slice::from_ref(&copy), Some("shop"));
        assert!(report.is_ok(), "{report}");
    }

    #[test]
    fn named_files_use_the_daemon_defaults_and_collect_warnings() {
        let host = Host::new();
        host.write(
            "appvisor.toml",
            &format!(
                "apps_dir = \"{}\"\n[defaults]\numask = \"0077\"\n",
                host.path("apps.d").display()
            ),
        );
        let text = host.app_text("").replace(
            "sandbox = { connect_ports = [], private_tmp = false }",
            &format!(
                "sandbox = {{ read_write = [\"{}\"], private_tmp = false }}",
                host.path("srv").display()
            ),
        );
        let app = host.write("new.toml", &text);
        let report = host.check(std::slice::from_ref(&app));
        assert!(report.is_ok(), "{report}");
        assert_eq!(report.warnings.len(), 2, "{report}");
        assert!(
            report
                .to_string()
                .ends_with("\nchecked 1 app file: 1 valid; 2 warnings"),
            "{report}"
        );
    }

    /// Each weakness of the sandbox is a warning naming the file,
    /// line and key, and a group that reads /etc/shadow is refused.
    #[test]
    fn every_sandbox_weakness_is_a_warning_at_its_key() {
        let host = Host::new();
        let db = FakeUserDb::new()
            .with_user("shop", 1001, 1001)
            .with_user("nobody", 65534, 65534)
            .with_user("deployer", 1002, 1002)
            .with_group("shop", 1001, &[])
            .with_group("docker", 999, &["deployer"])
            .with_group("shadow", 42, &[])
            .with_group("users", 100, &[])
            .with_group("nogroup", 65534, &[]);
        // `sandbox.` keys go into the fixture's inline [sandbox] table.
        let check_one = |name: &str, extra: &str| -> (CheckReport, PathBuf) {
            let text = match extra.strip_prefix("sandbox.") {
                Some(key) => host.app_text("").replace(
                    "private_tmp = false }",
                    &format!("private_tmp = false, {} }}", key.trim_end()),
                ),
                None => host.app_text(extra),
            };
            let file = host.write(&format!("{name}.toml"), &text);
            let report = check(
                &host.path("appvisor.toml"),
                true,
                std::slice::from_ref(&file),
                None,
                &db,
            );
            (report, file)
        };
        // (file name, text added to the app, the one warning or error)
        let table: Vec<(&str, String, String)> = vec![
            (
                "root",
                "sandbox.read_only = [\"/\"]\n".into(),
                "4:67: sandbox.read_only[0]: / lets the app read files of other users, apps or the kernel \
                 (grant only the directories the app needs, like /srv/shop/shared)".into(),
            ),
            (
                "etc",
                "sandbox.read_only = [\"/etc\"]\n".into(),
                "4:67: sandbox.read_only[0]: /etc lets the app read files of other users, apps or the kernel \
                 (grant only the directories the app needs, like /srv/shop/shared)".into(),
            ),
            (
                "home",
                "sandbox.read_write = [\"/home\"]\n".into(),
                "4:68: sandbox.read_write[0]: /home lets the app write files of other users, apps or the kernel \
                 (grant only the directories the app needs, like /srv/shop/shared)".into(),
            ),
            (
                "umask",
                "umask = \"0000\"\n".into(),
                "5:9: umask: umask 0000 makes the app's new files writable by every user (use \"0027\" or \"0022\")".into(),
            ),
            (
                "preload",
                "environment = { LD_PRELOAD = \"/opt/evil.so\" }\n".into(),
                "5:30: environment.LD_PRELOAD: LD_PRELOAD loads /opt/evil.so into every process of the app \
                 (link the library into the app or its venv instead)".into(),
            ),
            (
                "pythonpath",
                "environment = { PYTHONPATH = \"/tmp/lib\" }\n".into(),
                "5:30: environment.PYTHONPATH: PYTHONPATH searches /tmp/lib, which the app can write: code planted \
                 there runs at the next start (point it only at read-only paths, like the app's own code or venv)".into(),
            ),
            (
                "access",
                "access = { groups = [\"users\"] }\n".into(),
                "5:22: access.groups[0]: group \"users\" holds every user: any of them may control the app \
                 (name the app's operators, or a group of them like shop-devs)".into(),
            ),
            (
                "docker",
                "group = \"docker\"\n".into(),
                "5:9: group: the app's group \"docker\" is a privileged group \
                 (run the app without that group (remove the user from it, or set `group`))".into(),
            ),
        ];
        let mut failures = Vec::new();
        for (name, extra, want) in &table {
            let (report, file) = check_one(name, extra);
            let want = format!("{}:{want}", file.display());
            let got: Vec<String> = report
                .warnings
                .iter()
                .map(ToString::to_string)
                .filter(|w| !w.contains("without connect_ports"))
                .collect();
            if got != [want.clone()] || !report.is_ok() {
                failures.push(format!(
                    "{name}: got {got:?} (ok: {}), want {want:?}",
                    report.is_ok()
                ));
            }
        }
        // Users: nobody, and a user whose supplementary group is docker.
        let (report, file) = check_one("nobody", "");
        let nobody = host.write(
            "nobody.toml",
            &std::fs::read_to_string(&file)
                .unwrap()
                .replace("user = \"shop\"", "user = \"nobody\""),
        );
        let report_nobody = check(
            &host.path("appvisor.toml"),
            true,
            std::slice::from_ref(&nobody),
            None,
            &db,
        );
        assert!(report.is_ok(), "{report}");
        let warnings: Vec<String> = report_nobody
            .warnings
            .iter()
            .map(ToString::to_string)
            .collect();
        assert!(
            warnings.contains(&format!(
                "{}:1:8: user: user \"nobody\" is shared by every service that runs as nobody: they can \
                 signal and read each other (create a dedicated user, like `useradd --system shop`)",
                nobody.display()
            )),
            "{warnings:?}"
        );
        let deployer = host.write(
            "deployer.toml",
            &host
                .app_text("")
                .replace("user = \"shop\"", "user = \"deployer\""),
        );
        let report = check(
            &host.path("appvisor.toml"),
            true,
            std::slice::from_ref(&deployer),
            None,
            &db,
        );
        let warnings: Vec<String> = report.warnings.iter().map(ToString::to_string).collect();
        assert!(
            warnings.contains(&format!(
                "{}:1:8: user: a supplementary group of the user \"docker\" is a privileged group \
                 (run the app without that group (remove the user from it, or set `group`))",
                deployer.display()
            )),
            "{warnings:?}"
        );
        // The shadow group is refused: an error, not a warning.
        let (report, file) = check_one("shadow", "group = \"shadow\"\n");
        assert_eq!(
            report.errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
            [format!(
                "{}:5:9: group: the app's group \"shadow\" can read the password hashes in /etc/shadow, \
                 which the sandbox cannot keep hidden once the host replaces the file \
                 (run the app without that group (remove the user from it, or set `group`))",
                file.display()
            )]
        );
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn a_script_that_runs_uwsgi_is_read_and_warned_about() {
        let host = Host::new();
        let script = |name: &str, text: &str| {
            let path = host.write(name, text);
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
            path
        };
        let start = script(
            "start",
            "#!/bin/sh\ncd /srv/shop/current\nexec /srv/shop/venv/bin/uwsgi --master\n",
        );
        let app = |program: &Path, extra: &str| {
            host.app_text(&format!(
                "[[listen]]\naddress = \"127.0.0.1:8001\"\n{extra}"
            ))
            .replace(
                &host.path("prog").display().to_string(),
                &program.display().to_string(),
            )
        };
        let file = host.write("shop.toml", &app(&start, ""));
        let report = host.check(std::slice::from_ref(&file));
        assert!(report.is_ok(), "{report}");
        let file_name = file.display();
        let start_name = start.display();
        assert_eq!(
            report
                .warnings
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            [
                format!(
                    "{file_name}:2:12: command[0]: {start_name} is a script that runs uWSGI, which \
                     reloads on TERM; the daemon does not read scripts, so it stops this app with \
                     TERM and kills it at the stop timeout (add [stop] signal = \"INT\", or name \
                     the script uwsgi-… so the daemon knows)"
                ),
                format!(
                    "{file_name}:2:12: command[0]: {start_name} runs uWSGI: uWSGI serves the \
                     [[listen]] socket (fd 3) with the uwsgi protocol unless an fd:// socket \
                     option says otherwise, and this command has none (in the script, add \
                     \"--http-socket\", \"fd://3\" to serve HTTP, or \"--socket\", \"fd://3\" \
                     behind nginx's uwsgi_pass)"
                ),
            ]
        );
        // Told to stop with INT, mapping fd 3: nothing to say.
        let good = script(
            "good",
            "#!/bin/sh\nexec /srv/shop/venv/bin/uwsgi --http-socket fd://3\n",
        );
        let file = host.write("shop.toml", &app(&good, "[stop]\nsignal = \"INT\"\n"));
        assert_eq!(host.check(std::slice::from_ref(&file)).warnings, []);
        // Stopped gracefully by TERM, as the hook makes it: right as it is.
        let hooked = script(
            "hooked",
            "#!/bin/sh\nexec /srv/shop/venv/bin/uwsgi --http-socket fd://3 \\\n  \
             --hook-master-start 'unix_signal:15 gracefully_kill_them_all'\n",
        );
        let file = host.write("shop.toml", &app(&hooked, ""));
        assert_eq!(host.check(std::slice::from_ref(&file)).warnings, []);
        // Not a script, or not a regular file: not read.
        let fifo = host.path("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o755)).unwrap();
        assert_eq!(read_script_head(&fifo), None);
        assert_eq!(
            read_script_head(&host.path("prog")).as_deref(),
            Some("#!/bin/sh\n")
        );
        std::os::unix::fs::symlink(&start, host.path("link")).unwrap();
        assert_eq!(read_script_head(&host.path("link")), None);
    }

    #[test]
    fn broken_daemon_config_is_reported_and_apps_still_checked() {
        let host = Host::new();
        host.write("appvisor.toml", "apps_dir = 3\n");
        let app = host.write("x.toml", "user = \"shop\"\n");
        let report = host.check(std::slice::from_ref(&app));
        assert_eq!(report.errors.len(), 3, "{report}");
        assert_eq!(
            report.errors[0].to_string(),
            format!(
                "{}:1:12: apps_dir: must be a string in quotes, like \"/etc/appvisor/apps.d\", not 3",
                host.path("appvisor.toml").display()
            )
        );
    }
}
