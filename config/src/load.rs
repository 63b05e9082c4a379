//! Reading configuration files from disk and handing their text to
//! `validate`. The only file reads of the config layer besides `resolve`'s
//! path checks; never interprets a value itself.
//!
//! Every read is bounded and never blocks on a FIFO (`files`): an app file
//! or `appvisor.toml` over [`MAX_CONFIG_FILE`] is refused, and an env file
//! is read only when root owns it and every directory above it, with no
//! symbolic link on the way, so an app's owner can neither swap it for
//! another app's secrets nor stall the daemon with it.

use std::fs;
use std::path::{Path, PathBuf};

use nix::errno::Errno;

use super::env_file::MAX_ENV_FILE;
use super::error::{ConfigError, ConfigErrors};
use super::spec::{AppName, AppSpec, DaemonSpec};
use super::validate::{validate_app, validate_daemon, Defaults, ValidApp};
use crate::files::{self, FileError};

/// The largest app file or `appvisor.toml` read. A real one is a few KiB;
/// a parsed TOML table takes up to a hundred times its text (an array of
/// small inline tables), so this also bounds what judging one file costs
/// the daemon: about 40 MiB at worst.
pub const MAX_CONFIG_FILE: u64 = 256 << 10;

/// `/etc/appvisor/appvisor.toml`, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonConfig {
    pub spec: DaemonSpec,
    /// `[defaults]`, checked, for merging under each app.
    pub defaults: Defaults,
    /// The file it was read from (which may not exist: all defaults).
    pub file: PathBuf,
    /// The text it was validated from (empty for a missing file): what a
    /// hand-off carries, so the binary it execs runs the same settings
    /// whatever the file says by then ([`daemon_from_text`]).
    pub text: String,
}

/// Reads the daemon config at `path`; a missing file is an error.
pub fn load_daemon(path: &Path) -> Result<DaemonConfig, ConfigErrors> {
    load_daemon_or_default(path, true)
}

/// Reads the daemon config at `path`. When the path was not given
/// explicitly (`explicit == false`, the built-in default path), a missing
/// file means every setting takes its default.
pub fn load_daemon_or_default(path: &Path, explicit: bool) -> Result<DaemonConfig, ConfigErrors> {
    let text = match read_config(path) {
        Ok(text) => text,
        Err(error) if error.is_not_found() && !explicit => String::new(),
        Err(error) => return Err(read_error(path, "daemon config", &error).into()),
    };
    daemon_from_text(path, text)
}

/// The daemon config `path` held when it read `text`, validated again
/// without reading the file.
pub fn daemon_from_text(path: &Path, text: String) -> Result<DaemonConfig, ConfigErrors> {
    let (spec, defaults) = validate_daemon(path, &text)?;
    Ok(DaemonConfig {
        spec,
        defaults,
        file: path.to_owned(),
        text,
    })
}

/// The app name a file stands for: its stem.
#[allow(
    clippy::result_large_err,
    reason = "AppFile::name keeps the one error; a cold path"
)]
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
    load_valid_app_named(path, &name, defaults)
}

/// [`load_valid_app`] for a file whose stem is not the app's name, like the
/// temporary copy a CM tool validates before moving it into place.
pub fn load_valid_app_named(
    path: &Path,
    name: &AppName,
    defaults: &Defaults,
) -> Result<ValidApp, ConfigErrors> {
    let text = read_config(path).map_err(|error| read_error(path, "app file", &error))?;
    validate_app(name, path, &text, defaults, &read_env_file)
}

/// An app file or `appvisor.toml`, bounded; symbolic links are followed
/// (CM tools link files into place, and both live in root's directories).
fn read_config(path: &Path) -> Result<String, FileError> {
    let bytes = files::read_bounded(path, MAX_CONFIG_FILE)?;
    files::into_text(path, bytes)
}

/// An env file, read only if it is root's own all the way up.
pub fn read_env_file(path: &Path) -> Result<String, FileError> {
    let bytes = files::read_root_owned(path, MAX_ENV_FILE)?;
    files::into_text(path, bytes)
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
pub fn scan_apps_dir(dir: &Path, defaults: &Defaults) -> Result<Vec<AppFile>, ConfigErrors> {
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

/// Checks that `dir` is a directory the daemon can list: a missing or
/// unreadable `apps_dir` is a mistake to report, never "no apps".
pub fn check_apps_dir(dir: &Path) -> Result<(), ConfigErrors> {
    app_files(dir).map(drop)
}

/// The app files in `dir`: every `*.toml` entry but a directory, not
/// hidden, sorted by file name. Editor leftovers (`.shop.toml.swp`,
/// `shop.toml~`) do not end in `.toml` or are hidden, so they are skipped.
///
/// A link counts whatever it points to (CM tools link files into place):
/// one that dangles, or a FIFO, is an app file that cannot be read, so its
/// app keeps its last valid version like any invalid file, instead of
/// looking removed and being stopped.
pub fn app_files(dir: &Path) -> Result<Vec<PathBuf>, ConfigErrors> {
    let io_error = |error| read_error(dir, "apps directory", &FileError::from_io(dir, &error));
    let entries = fs::read_dir(dir).map_err(io_error)?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_error)?;
        let file_name = entry.file_name();
        let file_name = file_name.to_string_lossy();
        if file_name.starts_with('.') || !file_name.ends_with(".toml") {
            continue;
        }
        if !entry.file_type().is_ok_and(|kind| kind.is_dir()) {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

fn read_error(path: &Path, what: &str, error: &FileError) -> ConfigError {
    let hint = match error {
        _ if error.is_not_found() => "create it or give the right path".to_owned(),
        FileError::Os {
            errno: Errno::EACCES,
            ..
        } => "let the daemon's user read it".to_owned(),
        FileError::TooBig { .. } => format!(
            "keep it under {}: fix whatever generated it",
            bytesize::ByteSize::b(MAX_CONFIG_FILE)
        ),
        FileError::WrongKind { .. } => "make it a regular file".to_owned(),
        FileError::NotUtf8 { .. } => "save it as UTF-8".to_owned(),
        _ => "check the file".to_owned(),
    };
    ConfigError::new(
        path,
        format!("cannot read {what}: {}", error.describe(path)),
    )
    .with_hint(hint)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    const APP: &str = "user = \"shop\"\ncommand = [\"/bin/true\"]\ndirectory = \"/srv/shop\"\n";

    #[test]
    fn daemon_config_missing_at_default_path_means_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("appvisor.toml");
        let config = load_daemon_or_default(&path, false).unwrap();
        assert_eq!(config.spec.apps_dir, PathBuf::from("/etc/appvisor/apps.d"));
        assert_eq!(config.defaults.file(), None);
        let errors = load_daemon(&path).unwrap_err();
        assert_eq!(
            errors.to_string(),
            format!(
                "{}: cannot read daemon config: No such file or directory (os error 2) (create it or give the right path)",
                path.display()
            )
        );
    }

    #[test]
    fn load_app_reads_env_files_and_applies_defaults() {
        if !nix::unistd::geteuid().is_root() {
            appvisor_tests::skip("needs root (an env file root owns)");
            return;
        }
        // Under /run (root's, 0755): the only writer above the file is root.
        let dir = tempfile::Builder::new()
            .prefix("avt-load-")
            .tempdir_in("/run")
            .unwrap();
        let env = dir.path().join("secrets.env");
        fs::write(&env, "SECRET=1\n").unwrap();
        let daemon = dir.path().join("appvisor.toml");
        fs::write(&daemon, "[defaults]\numask = \"0077\"\n").unwrap();
        let app = dir.path().join("shop.toml");
        fs::write(&app, format!("{APP}env_files = [\"{}\"]\n", env.display())).unwrap();
        let config = load_daemon(&daemon).unwrap();
        let spec = load_app(&app, &config.defaults).unwrap();
        assert_eq!(spec.name.as_str(), "shop");
        assert_eq!(spec.umask, 0o077);
        assert_eq!(
            spec.environment.get("SECRET").map(String::as_str),
            Some("1")
        );
    }

    #[test]
    fn env_files_others_could_swap_are_refused() {
        // A temp dir under /tmp: anyone may create names in /tmp.
        let dir = tempfile::tempdir().unwrap();
        let env = dir.path().join("secrets.env");
        fs::write(&env, "SECRET=1\n").unwrap();
        let app = dir.path().join("shop.toml");
        fs::write(&app, format!("{APP}env_files = [\"{}\"]\n", env.display())).unwrap();
        let errors = load_app(&app, &Defaults::none()).unwrap_err();
        let tmp_mode = fs::metadata("/tmp").unwrap().permissions().mode() & 0o7777;
        assert_eq!(
            errors.to_string(),
            format!(
                "{}:4:14: env_files[0]: cannot use env file {}: /tmp is writable by others (mode {tmp_mode:04o}) \
                 (env files are read by root: keep each one, and every directory above it, owned by root \
                 and writable by nobody else (as sshd's StrictModes asks))",
                app.display(),
                env.display()
            )
        );
    }

    #[test]
    fn an_app_file_over_the_cap_is_refused_unread() {
        let dir = tempfile::tempdir().unwrap();
        let app = dir.path().join("shop.toml");
        // Sparse: 20 MiB by its size, never read.
        fs::File::create(&app).unwrap().set_len(20 << 20).unwrap();
        let errors = load_app(&app, &Defaults::none()).unwrap_err();
        assert_eq!(
            errors.to_string(),
            format!(
                "{}: cannot read app file: it is 20.0 MiB, more than the 256.0 KiB allowed \
                 (keep it under 256.0 KiB: fix whatever generated it)",
                app.display()
            )
        );
    }

    #[test]
    fn scan_lists_toml_files_sorted_and_flags_bad_names() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "web.toml",
            "api.toml",
            "Bad.toml",
            ".hidden.toml",
            "shop.toml~",
            ".shop.toml.swp",
            "notes.txt",
        ] {
            fs::write(dir.path().join(name), APP).unwrap();
        }
        fs::write(dir.path().join("broken.toml"), "user = \n").unwrap();
        fs::create_dir(dir.path().join("dir.toml")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("gone"), dir.path().join("linked.toml"))
            .unwrap();
        let files = scan_apps_dir(dir.path(), &Defaults::none()).unwrap();
        let names: Vec<_> = files
            .iter()
            .map(|f| f.path.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "Bad.toml",
                "api.toml",
                "broken.toml",
                "linked.toml",
                "web.toml"
            ]
        );
        // A dangling link is an app file that cannot be read, not a
        // removed one.
        assert_eq!(
            files[3].spec.as_ref().unwrap_err().to_string(),
            format!(
                "{}: cannot read app file: No such file or directory (os error 2) \
                 (create it or give the right path)",
                dir.path().join("linked.toml").display()
            )
        );
        let bad = dir.path().join("Bad.toml");
        assert_eq!(
            files[0].name.as_ref().unwrap_err().to_string(),
            format!(
                "{}: invalid app name \"Bad\" (name the file after the app: [a-z0-9][a-z0-9_-]{{0,63}}.toml, like shop.toml)",
                bad.display()
            )
        );
        assert!(files[0].spec.is_err());
        assert!(files[1].spec.is_ok());
        assert_eq!(files[2].name.as_ref().unwrap().as_str(), "broken");
        assert_eq!(files[2].spec.as_ref().unwrap_err().len(), 1);
        assert!(files[4].spec.is_ok());
    }

    #[test]
    fn unreadable_apps_dir_is_an_error_not_an_empty_list() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("apps.d");
        let error = scan_apps_dir(&missing, &Defaults::none()).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "{}: cannot read apps directory: No such file or directory (os error 2) (create it or give the right path)",
                missing.display()
            )
        );
    }
}
