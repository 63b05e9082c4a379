//! Reading configuration files from disk and handing their text to
//! `validate`. The only file reads of the config layer besides `resolve`'s
//! path checks; never interprets a value itself.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::error::{ConfigError, ConfigErrors};
use super::spec::{AppName, AppSpec, DaemonSpec};
use super::validate::{validate_app, validate_daemon, Defaults, ValidApp};

/// `/etc/appvisor/appvisor.toml`, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonConfig {
    pub spec: DaemonSpec,
    /// `[defaults]`, checked, for merging under each app.
    pub defaults: Defaults,
    /// The file it was read from (which may not exist: all defaults).
    pub file: PathBuf,
}

/// Reads the daemon config at `path`; a missing file is an error.
pub fn load_daemon(path: &Path) -> Result<DaemonConfig, ConfigErrors> {
    load_daemon_or_default(path, true)
}

/// Reads the daemon config at `path`. When the path was not given
/// explicitly (`explicit == false`, the built-in default path), a missing
/// file means every setting takes its default.
pub fn load_daemon_or_default(path: &Path, explicit: bool) -> Result<DaemonConfig, ConfigErrors> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == io::ErrorKind::NotFound && !explicit => String::new(),
        Err(error) => return Err(read_error(path, "daemon config", &error).into()),
    };
    let (spec, defaults) = validate_daemon(path, &text)?;
    Ok(DaemonConfig {
        spec,
        defaults,
        file: path.to_owned(),
    })
}

/// The app name a file stands for: its stem.
pub fn app_name(path: &Path) -> Result<AppName, ConfigError> {
    let stem = path
        .file_stem()
        .map(|stem| stem.to_string_lossy())
        .unwrap_or_default();
    AppName::new(&stem).ok_or_else(|| {
        ConfigError::new(path, format!("invalid app name {stem:?}"))
            .with_hint("name the file after the app: [a-z0-9][a-z0-9_-]{0,63}.toml, like shop.toml")
    })
}

/// Reads and validates one app file (and its `env_files`), merged over
/// `defaults`. The app's name is the file's stem.
pub fn load_app(path: &Path, defaults: &Defaults) -> Result<AppSpec, ConfigErrors> {
    load_valid_app(path, defaults).map(|valid| valid.spec)
}

/// [`load_app`], keeping the warnings for `check`.
pub fn load_valid_app(path: &Path, defaults: &Defaults) -> Result<ValidApp, ConfigErrors> {
    let name = app_name(path)?;
    let text = fs::read_to_string(path).map_err(|error| read_error(path, "app file", &error))?;
    validate_app(&name, path, &text, defaults, &|env_file: &Path| {
        fs::read_to_string(env_file)
    })
}

/// One `*.toml` file found in `apps_dir`.
#[derive(Debug, Clone, PartialEq)]
pub struct AppFile {
    pub name: Result<AppName, ConfigError>,
    pub path: PathBuf,
    pub spec: Result<AppSpec, ConfigErrors>,
}

/// Loads every app file in `dir`, sorted by file name. A directory that
/// cannot be read is an error, never an empty list: an empty list would
/// mean "remove every app".
pub fn scan_apps_dir(dir: &Path, defaults: &Defaults) -> Result<Vec<AppFile>, ConfigError> {
    Ok(app_files(dir)?
        .into_iter()
        .map(|path| {
            let name = app_name(&path);
            let spec = match &name {
                Ok(_) => load_app(&path, defaults),
                Err(error) => Err(error.clone().into()),
            };
            AppFile { name, path, spec }
        })
        .collect())
}

/// The app files in `dir`: `*.toml` regular files (or links to them), not
/// hidden, sorted by file name. Editor leftovers (`.shop.toml.swp`,
/// `shop.toml~`) do not end in `.toml` or are hidden, so they are skipped.
pub fn app_files(dir: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let entries = fs::read_dir(dir).map_err(|error| read_error(dir, "apps directory", &error))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|error| read_error(dir, "apps directory", &error))?;
        let file_name = entry.file_name();
        let file_name = file_name.to_string_lossy();
        if file_name.starts_with('.') || !file_name.ends_with(".toml") {
            continue;
        }
        let path = entry.path();
        // Follows symlinks: CM tools may link files into place.
        if fs::metadata(&path).is_ok_and(|meta| meta.is_file()) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn read_error(path: &Path, what: &str, error: &io::Error) -> ConfigError {
    let hint = match error.kind() {
        io::ErrorKind::NotFound => "create it or give the right path",
        io::ErrorKind::PermissionDenied => "let the daemon's user read it",
        _ => "check the file",
    };
    ConfigError::new(path, format!("cannot read {what}: {error}")).with_hint(hint)
}
