//! `appvisord check` and `appctl check`: offline validation for
//! configuration management's `validate_cmd`. Validation, resolution and
//! cross-app conflicts, reported together; never talks to a daemon.

use std::fmt;
use std::path::{Path, PathBuf};

use super::error::ConfigError;
use super::load::{app_files, app_name, load_daemon_or_default, load_valid_app, DaemonConfig};
use super::resolve::{check_conflicts, resolve, UserDb};
use super::spec::AppSpec;
use super::validate::Defaults;

/// What `check` found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CheckReport {
    pub errors: Vec<ConfigError>,
    pub warnings: Vec<ConfigError>,
    /// Files read, the daemon config included when it exists.
    pub checked: Vec<PathBuf>,
}

impl CheckReport {
    /// No errors (warnings allowed).
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
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
        let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
        write!(
            f,
            "checked {}: {}",
            plural(self.checked.len(), "file"),
            plural(self.errors.len(), "error")
        )?;
        if !self.warnings.is_empty() {
            write!(f, ", {}", plural(self.warnings.len(), "warning"))?;
        }
        Ok(())
    }
}

/// Checks the daemon config and, with no `files`, every app in its
/// `apps_dir`; with `files`, those app files only (merged over the daemon
/// config's `[defaults]`), and their listen addresses against the other
/// apps in `apps_dir`, so a new file that steals a port is caught before it
/// is dropped in. A file named like an app in `apps_dir` replaces it.
pub fn check(
    daemon_config: &Path,
    explicit: bool,
    files: &[PathBuf],
    db: &dyn UserDb,
) -> CheckReport {
    let mut report = CheckReport::default();
    let daemon = match load_daemon_or_default(daemon_config, explicit) {
        Ok(daemon) => {
            if daemon_config.exists() {
                report.checked.push(daemon_config.to_owned());
            }
            Some(daemon)
        }
        Err(errors) => {
            report.checked.push(daemon_config.to_owned());
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
            Some(Err(error)) => {
                report.errors.push(error);
                Vec::new()
            }
            None => Vec::new(),
        }
    };

    let mut specs = Vec::new();
    for file in &files {
        report.checked.push(file.clone());
        match load_valid_app(file, &defaults) {
            Ok(valid) => {
                report.warnings.extend(valid.warnings);
                if let Err(errors) = resolve(&valid.spec, db) {
                    report.errors.extend(errors);
                }
                specs.push(valid.spec);
            }
            Err(errors) => report.errors.extend(errors),
        }
    }

    // Conflicts are reported on the later app of a pair: the apps already
    // in place go first, so the blame lands on the files being checked.
    let mut all = if named {
        others_in_apps_dir(daemon.as_ref(), &files, &defaults)
    } else {
        Vec::new()
    };
    all.extend(specs);
    report.errors.extend(
        check_conflicts(&all)
            .into_iter()
            .filter(|error| !named || files.contains(&error.file)),
    );
    report
}

/// The valid apps of `apps_dir` that none of `files` replaces (by name or
/// path). Their own errors are not this check's business.
fn others_in_apps_dir(
    daemon: Option<&DaemonConfig>,
    files: &[PathBuf],
    defaults: &Defaults,
) -> Vec<AppSpec> {
    let Some(Ok(present)) = daemon.map(|daemon| app_files(&daemon.spec.apps_dir)) else {
        return Vec::new();
    };
    let replaced_names: Vec<_> = files
        .iter()
        .filter_map(|file| app_name(file).ok())
        .collect();
    let same_file = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    };
    present
        .into_iter()
        .filter(|path| !files.iter().any(|file| same_file(file, path)))
        .filter(|path| app_name(path).is_ok_and(|name| !replaced_names.contains(&name)))
        .filter_map(|path| load_valid_app(&path, defaults).ok().map(|valid| valid.spec))
        .collect()
}
