//! Validation: raw TOML values to [`AppSpec`] and [`DaemonSpec`], with
//! `[defaults]` merged under each app, gathering every error with the file,
//! line and column of the value at fault. Pure: file contents come in as
//! arguments (env files through a reader the caller passes); users, groups
//! and paths on disk are `resolve`'s business, never checked here.
//!
//! Merging: for every key the app's value wins, then `[defaults]`, then the
//! built-in default ([`crate::builtin`]). Nested tables merge key by key
//! (`restart.backoff.initial` can come from the app and `max` from
//! `[defaults]`), and so does `environment`, variable by variable. Arrays
//! (`command`, `env_files`, `[[listen]]`, ...) are replaced whole. An error
//! in a value taken from `[defaults]` points at `appvisor.toml` and names the
//! key `defaults.…`.
//!
//! The built-in defaults are [`crate::builtin`]'s, the table
//! docs/configuration.md is held to; the defaults that are not one value
//! (`stop.signal` for uWSGI, `group`, `venv`, `readiness.address`,
//! `sandbox.bind_ports`) are worked out below, and `limits.tasks` by the
//! daemon (`default_limits`).
//!
//! Paths in `appvisor.toml` must be absolute.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::Probe;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use toml::Spanned;

use crate::files::FileError;

use super::builtin;
use super::env_file::{check_name, parse_env_file, MAX_ENV_FILE};
use super::error::{ConfigError, ConfigErrors, Gathered, LineIndex, SourceFile};
use super::raw::{self, RawApp, RawDaemon};
use super::spec::{
    AccessSpec, AppName, AppSpec, Choice, ControlSpec, DaemonSpec, LandlockMode, LimitSpec,
    ListenAddress, ListenSpec, LogSpec, NetworkMode, ReadinessKind, ReadinessSpec, RestartPolicy,
    RestartSpec, RestartStrategy, SandboxSpec, Signal, StatusSpec, StopSpec,
};
use super::suggest;
use super::uwsgi;

/// The longest path a `sockaddr_un` holds, without its terminating NUL.
const MAX_UNIX_PATH: usize = 107;

const DURATION_HINT: &str = "use forms like 500ms, 30s, 2m";
const SIZE_HINT: &str = "use forms like 512MiB, 50MiB, 2GiB";

/// A key of the raw file `R`: its dotted name, as errors and the docs name
/// it, and where `R` holds it. Made by `key!` from the one path, so the
/// two cannot disagree.
struct Key<T: 'static, R: 'static = RawApp> {
    name: &'static str,
    get: for<'r> fn(&'r R) -> Option<&'r Spanned<T>>,
}

impl<T, R> Clone for Key<T, R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T, R> Copy for Key<T, R> {}

/// `key!(restart.backoff.initial)`: the [`Key`] at that path of the raw
/// file the [`Builder`] it is given to reads ([`RawApp`] or [`RawDaemon`]).
macro_rules! key {
    ($field:ident) => {
        Key {
            name: stringify!($field),
            get: |r| r.$field.as_ref(),
        }
    };
    ($table:ident . $field:ident) => {
        Key {
            name: concat!(stringify!($table), ".", stringify!($field)),
            get: |r| r.$table.as_ref()?.$field.as_ref(),
        }
    };
    ($table:ident . $inner:ident . $field:ident) => {
        Key {
            name: concat!(
                stringify!($table),
                ".",
                stringify!($inner),
                ".",
                stringify!($field)
            ),
            get: |r| r.$table.as_ref()?.$inner.as_ref()?.$field.as_ref(),
        }
    };
}

/// `[defaults]` from `appvisor.toml`, already checked on its own, kept raw
/// (with its file and text) so each app can be merged over it and errors
/// still point at `appvisor.toml`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Defaults {
    raw: RawApp,
    file: PathBuf,
    text: String,
    lines: LineIndex,
}

impl Defaults {
    /// No `[defaults]`: only the built-in defaults apply.
    pub fn none() -> Defaults {
        Defaults::default()
    }

    /// The `appvisor.toml` they came from; `None` when there are none.
    pub fn file(&self) -> Option<&Path> {
        (self.raw != RawApp::default()).then_some(self.file.as_path())
    }

    fn layer(&self) -> Option<Layer<'_>> {
        self.file().map(|file| Layer {
            raw: &self.raw,
            source: SourceFile::new(file, &self.text, &self.lines),
            prefix: "defaults.",
        })
    }
}

/// A valid app and what deserves a second look in it.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidApp {
    pub spec: AppSpec,
    pub warnings: Vec<ConfigError>,
    /// Where the keys `config::security` reports on sit, for warnings found
    /// once users and groups are resolved.
    pub positions: super::positions::Positions,
}

/// Validates `appvisor.toml`'s text, including its `[defaults]`.
pub fn validate_daemon(file: &Path, text: &str) -> Result<(DaemonSpec, Defaults), ConfigErrors> {
    let lines = LineIndex::new(text);
    let source = SourceFile::new(file, text, &lines);
    let raw: RawDaemon = raw::parse(source).map_err(|errors| ConfigErrors(errors.finish(file)))?;
    let own = Layer {
        raw: &raw,
        source,
        prefix: "",
    };
    let mut daemon = Builder::new(Mode::Daemon, vec![own], file);
    let apps_dir = daemon.value(key!(apps_dir), |s| absolute_path(s));
    let log_dir = daemon.value(key!(log_dir), |s| absolute_path(s));
    let state_dir = daemon.value(key!(state_dir), |s| absolute_path(s));
    let socket = daemon.value(key!(control.socket), |s| absolute_path(s));
    let admin_users = daemon.names(key!(control.admin_users));
    let admin_groups = daemon.names(key!(control.admin_groups));
    // `Some(None)`: set to "", the status server off.
    let listen = daemon.value(key!(status.listen), |s| {
        if s.is_empty() {
            return Ok(None);
        }
        parse_socket_addr(s)
            .map(Some)
            .map_err(|invalid| invalid.with_hint_suffix(", or \"\" to turn the status server off"))
    });
    let mut errors = daemon.errors;

    let defaults = Defaults {
        raw: raw.defaults.clone().unwrap_or_default(),
        file: file.to_owned(),
        text: text.to_owned(),
        lines,
    };
    if let Some(layer) = defaults.layer() {
        let mut builder = Builder::new(Mode::Defaults, vec![layer], file);
        builder.build(&unreachable_reader);
        errors.append(builder.errors);
    }

    if !errors.is_empty() {
        return Err(ConfigErrors(errors.finish(file)));
    }
    let or_builtin = |names: Option<Vec<String>>, builtin: &[&str]| {
        names.unwrap_or_else(|| builtin.iter().map(|name| name.to_string()).collect())
    };
    let spec = DaemonSpec {
        apps_dir: apps_dir.unwrap_or_else(|| builtin::APPS_DIR.into()),
        log_dir: log_dir.unwrap_or_else(|| builtin::LOG_DIR.into()),
        state_dir: state_dir.unwrap_or_else(|| builtin::STATE_DIR.into()),
        control: ControlSpec {
            socket: socket.unwrap_or_else(|| builtin::CONTROL_SOCKET.into()),
            admin_users: or_builtin(admin_users, builtin::ADMIN_USERS),
            admin_groups: or_builtin(admin_groups, builtin::ADMIN_GROUPS),
        },
        status: StatusSpec {
            listen: listen.unwrap_or(Some(builtin::STATUS_LISTEN)),
        },
    };
    Ok((spec, defaults))
}

/// Env files are never read for `[defaults]` alone: they are read per app.
fn unreachable_reader(path: &Path) -> Result<String, FileError> {
    Err(FileError::Os {
        path: path.to_owned(),
        errno: nix::errno::Errno::ENOTSUP,
    })
}

/// What would fix an env file that cannot be used.
fn env_file_hint(error: &FileError) -> String {
    match error {
        FileError::Untrusted { .. } => {
            "env files are read by root: keep each one, and every directory \
             above it, owned by root and writable by nobody else (as sshd's StrictModes asks)"
                .to_owned()
        }
        FileError::Symlink { .. } => {
            "name the file itself: env files are never read through a symbolic link".to_owned()
        }
        FileError::TooBig { .. } => format!(
            "an env file may be at most {}",
            bytesize::ByteSize::b(MAX_ENV_FILE)
        ),
        _ if error.is_not_found() => "create it or remove it from env_files".to_owned(),
        _ => "point it at a readable regular file of NAME=VALUE lines".to_owned(),
    }
}

/// Validates one app file's text, merged over `defaults`. `read_env_file`
/// supplies the contents of each `env_files` entry.
pub fn validate_app(
    name: &AppName,
    file: &Path,
    text: &str,
    defaults: &Defaults,
    read_env_file: &dyn Fn(&Path) -> Result<String, FileError>,
) -> Result<ValidApp, ConfigErrors> {
    let lines = LineIndex::new(text);
    let source = SourceFile::new(file, text, &lines);
    let raw: RawApp = raw::parse(source).map_err(|errors| ConfigErrors(errors.finish(file)))?;
    let app = Layer {
        raw: &raw,
        source,
        prefix: "",
    };
    let layers: Vec<Layer<'_>> = std::iter::once(app).chain(defaults.layer()).collect();
    let positions = super::positions::Positions::of(
        &layers
            .iter()
            .map(|layer: &Layer<'_>| (layer.source, layer.prefix))
            .collect::<Vec<_>>(),
    );
    let mut builder = Builder::new(Mode::App(name.clone()), layers, file);
    let spec = builder.build(read_env_file);
    match spec {
        Some(spec) if builder.errors.is_empty() => {
            let mut warnings: Vec<ConfigError> = builder
                .warnings
                .into_iter()
                .map(|warning| positions.fill(warning))
                .collect();
            warnings.extend(
                super::security::spec_weaknesses(&spec)
                    .iter()
                    .map(|weakness| positions.locate(file, weakness)),
            );
            Ok(ValidApp {
                spec,
                warnings,
                positions,
            })
        }
        // In file order, the defaults' and env files' errors after the app
        // file's own.
        _ => Err(ConfigErrors(
            builder
                .errors
                .map(|error| positions.fill(error))
                .finish(file),
        )),
    }
}

/// A value that does not parse: what is wrong and what would fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub message: String,
    pub hint: String,
}

impl Invalid {
    fn new(message: impl Into<String>, hint: impl Into<String>) -> Invalid {
        Invalid {
            message: message.into(),
            hint: hint.into(),
        }
    }

    fn with_hint_suffix(mut self, suffix: &str) -> Invalid {
        self.hint.push_str(suffix);
        self
    }

    fn at(self, source: SourceFile<'_>, span: &Range<usize>, key: &str) -> ConfigError {
        source
            .error(span, self.message)
            .with_key(key)
            .with_hint(self.hint)
    }
}

/// `"30s"`, `"2m"`, `"500ms"`.
pub fn parse_duration(text: &str) -> Result<Duration, Invalid> {
    humantime::parse_duration(text)
        .map_err(|_| Invalid::new(format!("invalid duration {text:?}"), DURATION_HINT))
}

/// `"512MiB"`, `"50MiB"`; in bytes.
pub fn parse_size(text: &str) -> Result<u64, Invalid> {
    let invalid = || Invalid::new(format!("invalid size {text:?}"), SIZE_HINT);
    // bytesize takes "-1" and "" as parse errors, but also "1e3"; insist on a
    // leading digit so a size always reads as one.
    if !text.trim_start().starts_with(|c: char| c.is_ascii_digit()) {
        return Err(invalid());
    }
    text.parse::<bytesize::ByteSize>()
        .map(|size| size.as_u64())
        .map_err(|_| invalid())
}

/// [`parse_size`]'s inverse: `512MiB`, `1GiB`, `1536KiB`, `1000B`, in the
/// largest binary unit that divides `bytes`, the form sizes are written in.
pub fn size_text(bytes: u64) -> String {
    for (unit, shift) in [("GiB", 30), ("MiB", 20), ("KiB", 10)] {
        if bytes >= 1 << shift && bytes % (1 << shift) == 0 {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    format!("{bytes}B")
}

/// `"TERM"`, `"SIGTERM"`, `"term"`.
pub fn parse_signal(text: &str) -> Result<Signal, Invalid> {
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    nix::sys::signal::Signal::from_str(&name)
        .map(Signal)
        .map_err(|_| {
            let names: Vec<&str> = nix::sys::signal::Signal::iterator()
                .map(|signal| signal.as_str().trim_start_matches("SIG"))
                .collect();
            let near = suggest::nearest(name.trim_start_matches("SIG"), &names);
            Invalid::new(
                match near {
                    Some(near) => format!("unknown signal {text:?}; did you mean {near:?}?"),
                    None => format!("unknown signal {text:?}"),
                },
                "use a name like TERM, INT, QUIT, HUP or USR1",
            )
        })
}

/// The value of an enum key: one of `T`'s names, or what was probably meant.
fn choice<T: Choice>(text: &str) -> Result<T, Invalid> {
    T::parse(text).ok_or_else(|| {
        let names: Vec<&str> = T::NAMES.iter().map(|(name, _)| *name).collect();
        let (message, hint) = suggest::unknown_value(T::WHAT, text, &names);
        Invalid::new(message, hint)
    })
}

/// An octal string like `"0027"`.
pub fn parse_umask(text: &str) -> Result<u32, Invalid> {
    let invalid = || {
        Invalid::new(
            format!("invalid umask {text:?}"),
            "use 3 or 4 octal digits like \"0027\"",
        )
    };
    if !(3..=4).contains(&text.len()) || !text.chars().all(|c| c.is_digit(8)) {
        return Err(invalid());
    }
    match u32::from_str_radix(text, 8) {
        Ok(mask) if mask <= 0o777 => Ok(mask),
        _ => Err(invalid()),
    }
}

/// `"150%"` of one CPU, as 150.
pub fn parse_cpu(text: &str) -> Result<u32, Invalid> {
    let invalid = || {
        Invalid::new(
            format!("invalid cpu limit {text:?}"),
            "use a percentage of one cpu like \"50%\" or \"150%\"",
        )
    };
    let number = text.strip_suffix('%').ok_or_else(invalid)?;
    match number.parse::<u32>() {
        Ok(percent) if percent > 0 => Ok(percent),
        _ => Err(invalid()),
    }
}

/// `"IP:PORT"` with a port in 1..=65535. Host names are not looked up: the
/// daemon binds before any resolver is trustworthy, and a name could change
/// what an unchanged file means.
pub fn parse_socket_addr(text: &str) -> Result<SocketAddr, Invalid> {
    match text.parse::<SocketAddr>() {
        Ok(addr) if addr.port() != 0 => Ok(addr),
        Ok(_) => Err(Invalid::new(
            format!("port 0 in {text:?}"),
            "use a fixed port between 1 and 65535",
        )),
        Err(_) => Err(Invalid::new(
            format!("invalid address {text:?}"),
            "use IP:PORT like 127.0.0.1:8001 or [::1]:8001",
        )),
    }
}

/// `"HOST:PORT"` or `"unix:/absolute/path"`.
pub fn parse_listen_address(text: &str) -> Result<ListenAddress, Invalid> {
    if let Some(path) = text.strip_prefix("unix:") {
        let hint = "use unix: followed by an absolute path, like unix:/run/shop/http.sock";
        if !path.starts_with('/') {
            return Err(Invalid::new(
                format!("unix socket path {path:?} is not absolute"),
                hint,
            ));
        }
        if path.len() > MAX_UNIX_PATH {
            return Err(Invalid::new(
                format!(
                    "unix socket path is {} bytes long, the kernel takes at most {MAX_UNIX_PATH}",
                    path.len()
                ),
                "use a shorter path",
            ));
        }
        if path.contains('\0') {
            return Err(Invalid::new("unix socket path contains a NUL byte", hint));
        }
        return Ok(ListenAddress::Unix(PathBuf::from(path)));
    }
    parse_socket_addr(text)
        .map(ListenAddress::Tcp)
        .map_err(|invalid| invalid.with_hint_suffix(", or unix:/absolute/path"))
}

/// A plain `http://` URL with a host.
pub fn parse_http_url(text: &str) -> Result<String, Invalid> {
    let hint = "use a plain http url like http://127.0.0.1:8001/health";
    let Some(rest) = text.strip_prefix("http://") else {
        return Err(if text.starts_with("https://") {
            Invalid::new(format!("https is not supported for probes: {text:?}"), hint)
        } else {
            Invalid::new(format!("invalid readiness url {text:?}"), hint)
        });
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() || text.contains(char::is_whitespace) {
        return Err(Invalid::new(
            format!("invalid readiness url {text:?}"),
            hint,
        ));
    }
    Ok(text.to_owned())
}

/// A TCP port, 1..=65535.
pub fn parse_port(port: i64) -> Result<u16, Invalid> {
    match u16::try_from(port) {
        Ok(port) if port != 0 => Ok(port),
        _ => Err(Invalid::new(
            format!("invalid port {port}"),
            "use a port between 1 and 65535",
        )),
    }
}

fn absolute_path(text: &str) -> Result<PathBuf, Invalid> {
    if text.contains('\0') {
        return Err(Invalid::new("path contains a NUL byte", "remove it"));
    }
    if !text.starts_with('/') {
        return Err(Invalid::new(
            format!("path {text:?} is not absolute"),
            "use a path starting with /",
        ));
    }
    Ok(PathBuf::from(text))
}

fn non_empty(text: &str) -> Result<String, Invalid> {
    if text.trim().is_empty() {
        Err(Invalid::new("empty name", "remove it or fill it in"))
    } else {
        Ok(text.to_owned())
    }
}

fn count<T: TryFrom<i64>>(value: i64, min: i64, what: &str) -> Result<T, Invalid> {
    match T::try_from(value) {
        Ok(n) if value >= min => Ok(n),
        _ => Err(Invalid::new(
            format!("invalid {what} {value}"),
            format!("use a whole number of at least {min}"),
        )),
    }
}

/// One file's contribution to an app (the app file itself, or
/// `[defaults]`), or `appvisor.toml` read for its own keys.
struct Layer<'a, R = RawApp> {
    raw: &'a R,
    source: SourceFile<'a>,
    /// Prepended to keys in errors: `[defaults]` keys live under `defaults.`.
    prefix: &'static str,
}

impl<R> Clone for Layer<'_, R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<R> Copy for Layer<'_, R> {}

/// A value picked from the first layer that has it.
struct Val<'a, T> {
    value: &'a T,
    span: Range<usize>,
    /// The file of the layer it came from.
    source: SourceFile<'a>,
    key: String,
}

impl<T> Val<'_, T> {
    fn error(&self, invalid: Invalid) -> ConfigError {
        invalid.at(self.source, &self.span, &self.key)
    }

    fn error_in(&self, span: &Range<usize>, suffix: &str, invalid: Invalid) -> ConfigError {
        invalid.at(self.source, span, &format!("{}{suffix}", self.key))
    }

    fn warning(
        &self,
        span: &Range<usize>,
        suffix: &str,
        message: String,
        hint: &str,
    ) -> ConfigError {
        self.source
            .error(span, message)
            .with_key(format!("{}{suffix}", self.key))
            .with_hint(hint)
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Mode {
    /// A whole app: required keys must be there, env files are read.
    App(AppName),
    /// `[defaults]` checked on its own: only the values present.
    Defaults,
    /// `appvisor.toml`'s own keys: every one has a built-in default.
    Daemon,
}

/// Reads the keys of `R` (an app's [`RawApp`] or [`RawDaemon`]) from its
/// layers, gathering every error.
struct Builder<'a, R = RawApp> {
    mode: Mode,
    /// Highest priority first.
    layers: Vec<Layer<'a, R>>,
    /// The app file, for errors about keys no layer has.
    file: &'a Path,
    errors: Gathered,
    warnings: Vec<ConfigError>,
}

impl<'a, R> Builder<'a, R> {
    fn new(mode: Mode, layers: Vec<Layer<'a, R>>, file: &'a Path) -> Builder<'a, R> {
        Builder {
            mode,
            layers,
            file,
            errors: Gathered::default(),
            warnings: Vec::new(),
        }
    }

    fn pick<T: 'a>(&self, key: Key<T, R>) -> Option<Val<'a, T>> {
        self.layers.iter().find_map(|layer| {
            (key.get)(layer.raw).map(|spanned| Val {
                value: spanned.get_ref(),
                span: spanned.span(),
                source: layer.source,
                key: format!("{}{}", layer.prefix, key.name),
            })
        })
    }

    /// The parsed value at `key`, or `None` when absent or invalid (the
    /// error is recorded).
    fn value<T: 'a, U>(
        &mut self,
        key: Key<T, R>,
        parse: impl FnOnce(&T) -> Result<U, Invalid>,
    ) -> Option<U> {
        let val = self.pick(key)?;
        match parse(val.value) {
            Ok(value) => Some(value),
            Err(invalid) => {
                self.errors.push(val.error(invalid));
                None
            }
        }
    }

    fn duration(&mut self, key: Key<String, R>, default: Duration, positive: bool) -> Duration {
        self.value(key, |text| {
            let duration = parse_duration(text)?;
            if positive && duration.is_zero() {
                return Err(Invalid::new(
                    format!("{} must be longer than 0s", key.name),
                    DURATION_HINT,
                ));
            }
            Ok(duration)
        })
        .unwrap_or(default)
    }

    /// Records a missing required key when no layer has it. `value` is
    /// `None` also when the key is there but invalid (already reported).
    fn required<T>(&mut self, key: &str, present: bool, value: Option<T>, hint: &str) -> Option<T> {
        if !present && matches!(self.mode, Mode::App(_)) {
            self.errors.push(
                ConfigError::new(self.file, "missing required key")
                    .with_key(key)
                    .with_hint(hint),
            );
        }
        value
    }

    fn paths(&mut self, key: Key<Vec<Spanned<String>>, R>) -> Vec<(PathBuf, Range<usize>)> {
        let Some(list) = self.pick(key) else {
            return Vec::new();
        };
        let mut paths = Vec::new();
        for (i, item) in list.value.iter().enumerate() {
            match absolute_path(item.get_ref()) {
                Ok(path) => paths.push((path, item.span())),
                Err(invalid) => {
                    self.errors
                        .push(list.error_in(&item.span(), &format!("[{i}]"), invalid))
                }
            }
        }
        paths
    }

    /// Each non-empty; `None` when the key is absent.
    fn names(&mut self, key: Key<Vec<Spanned<String>>, R>) -> Option<Vec<String>> {
        let list = self.pick(key)?;
        let mut names = Vec::new();
        for (i, item) in list.value.iter().enumerate() {
            match non_empty(item.get_ref()) {
                Ok(name) => names.push(name),
                Err(invalid) => {
                    self.errors
                        .push(list.error_in(&item.span(), &format!("[{i}]"), invalid))
                }
            }
        }
        Some(names)
    }

    fn ports(&mut self, key: Key<Vec<Spanned<i64>>, R>) -> Option<Vec<u16>> {
        let list = self.pick(key)?;
        let mut ports = Vec::new();
        for (i, item) in list.value.iter().enumerate() {
            match parse_port(*item.get_ref()) {
                Ok(port) => ports.push(port),
                Err(invalid) => {
                    self.errors
                        .push(list.error_in(&item.span(), &format!("[{i}]"), invalid))
                }
            }
        }
        Some(ports)
    }
}

/// The app keys that need more than one value's parse.
impl<'a> Builder<'a> {
    /// `app_groups`: each named like an app, so `group:NAME` on appctl's
    /// command line is unambiguous; sorted and without repeats.
    fn app_groups(&mut self) -> Vec<String> {
        let Some(list) = self.pick(key!(app_groups)) else {
            return Vec::new();
        };
        let mut groups = Vec::new();
        for (i, item) in list.value.iter().enumerate() {
            match AppName::new(item.get_ref()) {
                Some(name) => groups.push(name.as_str().to_owned()),
                None => self.errors.push(list.error_in(
                    &item.span(),
                    &format!("[{i}]"),
                    Invalid::new(
                        format!("invalid app group name {:?}", item.get_ref()),
                        "use [a-z0-9][a-z0-9_-]{0,63}, like app names",
                    ),
                )),
            }
        }
        groups.sort();
        groups.dedup();
        groups
    }

    /// Checks every present value; in [`Mode::App`] also assembles the spec
    /// (`None` when a required key is missing or invalid).
    fn build(
        &mut self,
        read_env_file: &dyn Fn(&Path) -> Result<String, FileError>,
    ) -> Option<AppSpec> {
        let description = self.value(key!(description), |s| Ok(s.clone()));
        let app_groups = self.app_groups();
        let user = self.value(key!(user), |s| check_user(s));
        let has_user = self.pick(key!(user)).is_some();
        let user = self.required(
            "user",
            has_user,
            user,
            "add user = \"NAME\", the unix user the app runs as",
        );
        let group = self.value(key!(group), |s| non_empty(s));
        let has_command = self.pick(key!(command)).is_some();
        let command = self.command();
        let command = self.required(
            "command",
            has_command,
            command,
            "add command = [\"/absolute/path/to/program\", \"arg\", ...]",
        );
        let directory = self.value(key!(directory), |s| absolute_path(s));
        let has_directory = self.pick(key!(directory)).is_some();
        let directory = self.required(
            "directory",
            has_directory,
            directory,
            "add directory = \"/absolute/path\", where the app runs",
        );
        let venv = self.value(key!(venv), |s| absolute_path(s));
        let environment = self.environment();
        let env_files = self.paths(key!(env_files));
        let umask = self
            .value(key!(umask), |s| parse_umask(s))
            .unwrap_or(builtin::UMASK);
        let autostart = self
            .value(key!(autostart), |b| Ok(*b))
            .unwrap_or(builtin::AUTOSTART);
        let listen = self.listen();
        let readiness = self.readiness(&listen);
        let restart = self.restart();
        let stop = self.stop(command.as_deref());
        let logs = LogSpec {
            max_size: self
                .value(key!(logs.max_size), |s| {
                    parse_size(s).and_then(|size| match size {
                        0 => Err(Invalid::new(
                            "logs.max_size must be more than 0 bytes",
                            SIZE_HINT,
                        )),
                        size => Ok(size),
                    })
                })
                .unwrap_or(builtin::LOG_MAX_SIZE),
            keep: self
                .value(key!(logs.keep), |n| count(*n, 0, "number of files to keep"))
                .unwrap_or(builtin::LOG_KEEP),
        };
        let access = AccessSpec {
            users: self.names(key!(access.users)).unwrap_or_default(),
            groups: self.names(key!(access.groups)).unwrap_or_default(),
        };
        let sandbox = self.sandbox(directory.as_deref());
        if sandbox.private_tmp {
            self.hidden_by_private_tmp(command.as_deref(), directory.as_deref());
        }
        let limits = LimitSpec {
            memory: self.value(key!(limits.memory), |s| {
                parse_size(s).and_then(|size| match size {
                    0 => Err(Invalid::new(
                        "limits.memory must be more than 0 bytes",
                        SIZE_HINT,
                    )),
                    size => Ok(size),
                })
            }),
            tasks: self.value(key!(limits.tasks), |n| count(*n, 1, "task limit")),
            cpu: self.value(key!(limits.cpu), |s| parse_cpu(s)),
            open_files: self.value(key!(limits.open_files), |n| count(*n, 1, "open file limit")),
        };

        let Mode::App(name) = self.mode.clone() else {
            return None;
        };
        let env_files_paths: Vec<PathBuf> =
            env_files.iter().map(|(path, _)| path.clone()).collect();
        let environment = self.merge_env_files(&env_files, environment, read_env_file);
        if let Some(command) = &command {
            self.uwsgi_warning(command, listen.len(), &environment);
        }
        let listen = listen
            .into_iter()
            .map(|(address, listen_name)| ListenSpec {
                address,
                name: listen_name.unwrap_or_else(|| name.to_string()),
            })
            .collect();
        Some(AppSpec {
            name,
            file: self.file.to_owned(),
            description: description.unwrap_or_default(),
            app_groups,
            user: user?,
            group,
            command: command?,
            directory: directory?,
            venv,
            environment,
            env_files: env_files_paths,
            umask,
            autostart,
            listen,
            readiness: readiness?,
            restart,
            stop,
            logs,
            access,
            sandbox,
            limits,
        })
    }

    fn command(&mut self) -> Option<Vec<String>> {
        let list = self.pick(key!(command))?;
        if list.value.is_empty() {
            self.errors.push(list.error(Invalid::new(
                "command is empty",
                "give the program and its arguments, like [\"/srv/shop/venv/bin/gunicorn\", \"shop.wsgi\"]",
            )));
            return None;
        }
        let mut ok = true;
        for (i, arg) in list.value.iter().enumerate() {
            let invalid = if arg.get_ref().contains('\0') {
                Some(Invalid::new("argument contains a NUL byte", "remove it"))
            } else if i == 0 && !arg.get_ref().starts_with('/') {
                Some(Invalid::new(
                    format!("program {:?} is not an absolute path", arg.get_ref()),
                    "use the full path, like /srv/shop/venv/bin/gunicorn; there is no PATH search",
                ))
            } else {
                None
            };
            if let Some(invalid) = invalid {
                self.errors
                    .push(list.error_in(&arg.span(), &format!("[{i}]"), invalid));
                ok = false;
            }
        }
        ok.then(|| list.value.iter().map(|arg| arg.get_ref().clone()).collect())
    }

    fn environment(&mut self) -> BTreeMap<String, String> {
        let mut merged = BTreeMap::new();
        // Lowest priority first, so higher layers overwrite.
        for layer in self.layers.clone().iter().rev() {
            let Some(table) = &layer.raw.environment else {
                continue;
            };
            for (name, value) in table.get_ref() {
                let key = format!("{}environment.{}", layer.prefix, name.get_ref());
                if let Some((message, hint)) = check_name(name.get_ref()) {
                    self.errors.push(Invalid::new(message, hint).at(
                        layer.source,
                        &name.span(),
                        &key,
                    ));
                } else if value.get_ref().contains('\0') {
                    self.errors
                        .push(Invalid::new("value contains a NUL byte", "remove it").at(
                            layer.source,
                            &value.span(),
                            &key,
                        ));
                } else {
                    merged.insert(name.get_ref().clone(), value.get_ref().clone());
                }
            }
        }
        merged
    }

    /// Env files in order, then `environment` over them.
    fn merge_env_files(
        &mut self,
        env_files: &[(PathBuf, Range<usize>)],
        environment: BTreeMap<String, String>,
        read_env_file: &dyn Fn(&Path) -> Result<String, FileError>,
    ) -> BTreeMap<String, String> {
        let mut merged = BTreeMap::new();
        let list = self.pick(key!(env_files));
        for (i, (path, span)) in env_files.iter().enumerate() {
            let text = match read_env_file(path) {
                Ok(text) => text,
                Err(error) => {
                    if let Some(list) = &list {
                        self.errors.push(list.error_in(
                            span,
                            &format!("[{i}]"),
                            Invalid::new(
                                format!(
                                    "cannot use env file {}: {}",
                                    path.display(),
                                    error.describe(path)
                                ),
                                env_file_hint(&error),
                            ),
                        ));
                    }
                    continue;
                }
            };
            match parse_env_file(path, &text) {
                Ok(vars) => merged.extend(vars),
                Err(errors) => self.errors.extend(errors),
            }
        }
        merged.extend(environment);
        merged
    }

    fn listen(&mut self) -> Vec<(ListenAddress, Option<String>)> {
        let Some(list) = self.pick(key!(listen)) else {
            return Vec::new();
        };
        let mut out: Vec<(ListenAddress, Option<String>)> = Vec::new();
        for (i, entry) in list.value.iter().enumerate() {
            let suffix = format!("[{i}]");
            match &entry.address {
                None => self.errors.push(list.error_in(
                    &list.span,
                    &format!("{suffix}.address"),
                    Invalid::new(
                        "missing required key",
                        "add address = \"127.0.0.1:8001\" or \"unix:/run/NAME/http.sock\"",
                    ),
                )),
                Some(address) => match parse_listen_address(address.get_ref()) {
                    Err(invalid) => {
                        self.errors.push(list.error_in(
                            &address.span(),
                            &format!("{suffix}.address"),
                            invalid,
                        ));
                    }
                    Ok(parsed) if out.iter().any(|(seen, _)| *seen == parsed) => {
                        self.errors.push(list.error_in(
                            &address.span(),
                            &format!("{suffix}.address"),
                            Invalid::new(
                                format!("{parsed} is listed twice"),
                                "remove the duplicate [[listen]]",
                            ),
                        ));
                    }
                    Ok(parsed) => {
                        let name = entry.name.as_ref().and_then(|name| {
                            match check_fd_name(name.get_ref()) {
                                Ok(()) => Some(Some(name.get_ref().clone())),
                                Err(invalid) => {
                                    self.errors.push(list.error_in(
                                        &name.span(),
                                        &format!("{suffix}.name"),
                                        invalid,
                                    ));
                                    None
                                }
                            }
                        });
                        out.push((parsed, name.flatten()));
                    }
                },
            }
        }
        out
    }

    fn readiness(&mut self, listen: &[(ListenAddress, Option<String>)]) -> Option<ReadinessSpec> {
        let timeout = self.duration(key!(readiness.timeout), builtin::READINESS_TIMEOUT, true);
        let kind = self.pick(key!(readiness.kind));
        let url = self.pick(key!(readiness.url));
        let address = self.pick(key!(readiness.address));
        let kind_name = kind
            .as_ref()
            .map_or(builtin::READINESS_KIND, |kind| kind.value.as_str());
        // `url` and `address` are checked whatever the kind: DESIGN.md's own
        // example gives a url with kind = "notify", the probe a reload needs
        // because gunicorn sends READY=1 only once.
        let parsed_url = url
            .as_ref()
            .and_then(|url| match parse_http_url(url.value) {
                Ok(url) => Some(url),
                Err(invalid) => {
                    self.errors.push(url.error(invalid));
                    None
                }
            });
        let parsed_address =
            address
                .as_ref()
                .and_then(|address| match parse_socket_addr(address.value) {
                    Ok(addr) => Some(addr),
                    Err(invalid) => {
                        self.errors.push(address.error(invalid));
                        None
                    }
                });
        let side_probe = parsed_url
            .clone()
            .map(Probe::Http)
            .or(parsed_address.map(Probe::Tcp));
        let kind = match kind_name {
            "none" => Some(ReadinessKind::None),
            "notify" => Some(ReadinessKind::Notify),
            "http" => match (&url, parsed_url) {
                (_, Some(url)) => Some(ReadinessKind::Probe(Probe::Http(url))),
                (Some(_), None) => None,
                (None, _) => {
                    if let (Some(kind), Mode::App(_)) = (&kind, &self.mode) {
                        self.errors.push(kind.error(Invalid::new(
                            "readiness kind \"http\" needs a url",
                            "add readiness.url = \"http://127.0.0.1:PORT/health\"",
                        )));
                    }
                    None
                }
            },
            "tcp" => match (&address, parsed_address) {
                (_, Some(address)) => Some(ReadinessKind::Probe(Probe::Tcp(address))),
                (Some(_), None) => None,
                (None, _) => {
                    let first_tcp = listen.iter().find_map(|(address, _)| match address {
                        ListenAddress::Tcp(addr) => Some(probe_address(*addr)),
                        ListenAddress::Unix(_) => None,
                    });
                    if first_tcp.is_none()
                        && matches!(self.mode, Mode::App(_))
                        && !self.listen_was_invalid()
                    {
                        if let Some(kind) = &kind {
                            self.errors.push(kind.error(Invalid::new(
                                "readiness kind \"tcp\" needs an address",
                                "add readiness.address = \"HOST:PORT\" or a TCP [[listen]] address",
                            )));
                        }
                    }
                    first_tcp.map(|address| ReadinessKind::Probe(Probe::Tcp(address)))
                }
            },
            other => {
                if let Some(kind) = &kind {
                    let (message, hint) = suggest::unknown_value(
                        "readiness kind",
                        other,
                        &["notify", "http", "tcp", "none"],
                    );
                    self.errors.push(kind.error(Invalid::new(message, hint)));
                }
                None
            }
        };
        kind.map(|kind| {
            let probe = match &kind {
                ReadinessKind::Probe(probe) => Some(probe.clone()),
                ReadinessKind::Notify | ReadinessKind::None => side_probe,
            };
            ReadinessSpec {
                kind,
                timeout,
                probe,
            }
        })
    }

    /// Whether `[[listen]]` had errors already reported (so a missing probe
    /// address is not reported twice).
    fn listen_was_invalid(&self) -> bool {
        self.errors.iter().any(|error| {
            error.key.as_deref().is_some_and(|key| {
                key.starts_with("listen[") || key.starts_with("defaults.listen[")
            })
        })
    }

    fn restart(&mut self) -> RestartSpec {
        let policy = self
            .value(key!(restart.policy), |s| choice::<RestartPolicy>(s))
            .unwrap_or(builtin::RESTART_POLICY);
        let start_secs = self.duration(key!(restart.start_secs), builtin::START_SECS, false);
        let max_retries = self
            .value(key!(restart.max_retries), |n| count(*n, 0, "max_retries"))
            .unwrap_or(builtin::MAX_RETRIES);
        let initial_val = self.pick(key!(restart.backoff.initial));
        let backoff_initial = self.duration(
            key!(restart.backoff.initial),
            builtin::BACKOFF_INITIAL,
            true,
        );
        let backoff_max = self.duration(key!(restart.backoff.max), builtin::BACKOFF_MAX, true);
        let max_val = self.pick(key!(restart.backoff.max));
        // `[defaults]` alone is compared with itself only: an app may set the other.
        let comparable =
            matches!(self.mode, Mode::App(_)) || (initial_val.is_some() && max_val.is_some());
        if comparable && backoff_initial > backoff_max {
            let error = Invalid::new(
                format!(
                    "backoff initial {} is longer than max {}",
                    humantime::format_duration(backoff_initial),
                    humantime::format_duration(backoff_max)
                ),
                "make initial at most max",
            );
            match initial_val.or(max_val) {
                Some(val) => self.errors.push(val.error(error)),
                None => self
                    .errors
                    .push(ConfigError::new(self.file, error.message).with_hint(error.hint)),
            }
        }
        let strategy = self
            .value(key!(restart.strategy), |s| choice::<RestartStrategy>(s))
            .unwrap_or(builtin::RESTART_STRATEGY);
        RestartSpec {
            policy,
            start_secs,
            max_retries,
            backoff_initial,
            backoff_max,
            strategy,
        }
    }

    fn stop(&mut self, command: Option<&[String]>) -> StopSpec {
        let default_signal = match command.and_then(uwsgi::uwsgi_args) {
            Some(args) if !uwsgi::stops_gracefully_on_term(&args) => builtin::STOP_SIGNAL_UWSGI,
            _ => builtin::STOP_SIGNAL,
        };
        StopSpec {
            signal: self
                .value(key!(stop.signal), |s| parse_signal(s))
                .unwrap_or(default_signal),
            timeout: self.duration(key!(stop.timeout), builtin::STOP_TIMEOUT, true),
            reload_signal: self
                .value(key!(stop.reload_signal), |s| parse_signal(s))
                .unwrap_or(builtin::RELOAD_SIGNAL),
        }
    }

    fn sandbox(&mut self, directory: Option<&Path>) -> SandboxSpec {
        let read_only = self.paths(key!(sandbox.read_only));
        let read_write = self.paths(key!(sandbox.read_write));
        let network_val = self.pick(key!(sandbox.network));
        let network = self
            .value(key!(sandbox.network), |s| choice::<NetworkMode>(s))
            .unwrap_or(builtin::NETWORK);
        let connect_ports = self.ports(key!(sandbox.connect_ports));
        let sandbox = SandboxSpec {
            read_only: read_only.into_iter().map(|(path, _)| path).collect(),
            read_write: Vec::new(),
            private_tmp: self
                .value(key!(sandbox.private_tmp), |b| Ok(*b))
                .unwrap_or(builtin::PRIVATE_TMP),
            bind_ports: self.ports(key!(sandbox.bind_ports)),
            connect_ports,
            network,
            landlock: self
                .value(key!(sandbox.landlock), |s| choice::<LandlockMode>(s))
                .unwrap_or(builtin::LANDLOCK),
        };
        if matches!(self.mode, Mode::App(_)) {
            self.sandbox_warnings(&sandbox, &read_write, directory, network_val);
        }
        SandboxSpec {
            read_write: read_write.into_iter().map(|(path, _)| path).collect(),
            ..sandbox
        }
    }

    /// With `private_tmp`, the app sees a fresh, empty `/tmp` and
    /// `/var/tmp`: code or a directory there would vanish at spawn with a
    /// puzzling "No such file or directory". Say so at validation instead.
    fn hidden_by_private_tmp(&mut self, command: Option<&[String]>, directory: Option<&Path>) {
        let hint = "move it out of /tmp and /var/tmp (e.g. to /srv or /var/lib), or set sandbox.private_tmp = false";
        if let Some(dir) = directory.filter(|d| under_private_tmp(d)) {
            if let Some(val) = self.pick(key!(directory)) {
                let message = format!(
                    "directory {} is under a temporary directory that sandbox.private_tmp replaces with an empty one for the app",
                    dir.display()
                );
                self.errors.push(val.error(Invalid::new(message, hint)));
            }
        }
        if let Some(program) = command
            .and_then(|c| c.first())
            .filter(|p| under_private_tmp(Path::new(p)))
        {
            if let Some(val) = self.pick(key!(command)) {
                let message = format!(
                    "command {program} is under a temporary directory that sandbox.private_tmp replaces with an empty one for the app"
                );
                self.errors.push(val.error(Invalid::new(message, hint)));
            }
        }
    }

    /// A uWSGI command that serves held sockets with the wrong protocol.
    fn uwsgi_warning(
        &mut self,
        command: &[String],
        listen: usize,
        environment: &BTreeMap<String, String>,
    ) {
        let Some((message, hint)) = uwsgi::missing_fd_socket(command, listen, environment) else {
            return;
        };
        if let Some(val) = self.pick(key!(command)) {
            self.warnings
                .push(val.warning(&val.span, "", message, hint.as_str()));
        }
    }

    fn sandbox_warnings(
        &mut self,
        sandbox: &SandboxSpec,
        read_write: &[(PathBuf, Range<usize>)],
        directory: Option<&Path>,
        network: Option<Val<'a, String>>,
    ) {
        if let (Some(directory), Some(list)) = (directory, self.pick(key!(sandbox.read_write))) {
            for (i, (path, span)) in read_write.iter().enumerate() {
                if directory.starts_with(path) {
                    self.warnings.push(list.warning(
                        span,
                        &format!("[{i}]"),
                        format!(
                            "{} holds the app's directory {}, so the app can rewrite its own code",
                            path.display(),
                            directory.display()
                        ),
                        "grant only the paths it writes to, like /srv/shop/shared",
                    ));
                }
            }
        }
        if sandbox.network == NetworkMode::Host && sandbox.connect_ports.is_none() {
            let message =
                "network = \"host\" without connect_ports lets the app connect to any tcp port"
                    .to_owned();
            let hint = "list the ports it needs, like connect_ports = [5432, 6379], or set network = \"none\"";
            self.warnings.push(match network {
                Some(val) => val.warning(&val.span, "", message, hint),
                None => ConfigError::new(self.file, message)
                    .with_key("sandbox.connect_ports")
                    .with_hint(hint),
            });
        }
    }
}

/// Whether `path` lies in what `private_tmp` replaces for the app.
fn under_private_tmp(path: &Path) -> bool {
    path.starts_with("/tmp") || path.starts_with("/var/tmp")
}

fn check_user(user: &str) -> Result<String, Invalid> {
    if user == "root" {
        return Err(Invalid::new(
            "user \"root\" is refused: appvisor never runs app code as root",
            "create a dedicated user, like `useradd --system --home-dir /srv/shop shop`",
        ));
    }
    non_empty(user)
}

/// systemd's rule for `LISTEN_FDNAMES` entries: the list is `:`-separated.
fn check_fd_name(name: &str) -> Result<(), Invalid> {
    if name.is_empty()
        || name.len() > 255
        || name.contains(':')
        || name.chars().any(char::is_control)
    {
        return Err(Invalid::new(
            format!("invalid listen name {name:?}"),
            "use 1 to 255 printable characters without ':'",
        ));
    }
    Ok(())
}

/// A wildcard listen address is probed on loopback of the same family.
fn probe_address(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), addr.port())
        }
        _ => addr,
    }
}

#[cfg(test)]
mod tests {
    use nix::sys::signal::Signal as Sig;

    use super::*;

    const FILE: &str = "apps.d/shop.toml";
    const BASE: &str = "\
user = \"shop\"
command = [\"/srv/shop/venv/bin/gunicorn\", \"shop.wsgi\"]
directory = \"/srv/shop/current\"
";

    fn no_env_files(path: &Path) -> Result<String, FileError> {
        Err(FileError::Os {
            path: path.to_owned(),
            errno: nix::errno::Errno::ENOENT,
        })
    }

    fn validate_with(
        text: &str,
        defaults: &Defaults,
        env: &dyn Fn(&Path) -> Result<String, FileError>,
    ) -> Result<ValidApp, ConfigErrors> {
        validate_app(
            &AppName::new("shop").unwrap(),
            Path::new(FILE),
            text,
            defaults,
            env,
        )
    }

    fn spec(text: &str) -> AppSpec {
        match validate_with(text, &Defaults::none(), &no_env_files) {
            Ok(valid) => valid.spec,
            Err(errors) => panic!("unexpected errors:\n{errors}"),
        }
    }

    fn errors(text: &str) -> Vec<String> {
        match validate_with(text, &Defaults::none(), &no_env_files) {
            Ok(valid) => panic!("expected errors, got {:?}", valid.spec),
            Err(errors) => errors.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn app_groups_are_app_names_sorted_once_each() {
        let got = spec(&format!(
            "{BASE}app_groups = [\"workers\", \"celery\", \"workers\"]\n"
        ));
        assert_eq!(got.app_groups, ["celery", "workers"]);
        assert_eq!(spec(BASE).app_groups, Vec::<String>::new());
        assert_eq!(
            errors(&format!("{BASE}app_groups = [\"celery\", \"group:x\"]\n")),
            [
                "apps.d/shop.toml:4:25: app_groups[1]: invalid app group name \"group:x\" \
              (use [a-z0-9][a-z0-9_-]{0,63}, like app names)"
            ]
        );
    }

    fn daemon_defaults(text: &str) -> Defaults {
        match validate_daemon(Path::new("appvisor.toml"), text) {
            Ok((_, defaults)) => defaults,
            Err(errors) => panic!("unexpected errors:\n{errors}"),
        }
    }

    #[test]
    fn design_example_validates_to_the_full_spec() {
        let text = include_str!("testdata/shop.toml");
        let env = |path: &Path| {
            assert_eq!(path, Path::new("/etc/shop/secrets.env"));
            Ok("SECRET_KEY=s3cret\nDJANGO_SETTINGS_MODULE=from.file\n".to_owned())
        };
        let valid = validate_with(text, &Defaults::none(), &env).unwrap();
        let want = AppSpec {
            name: AppName::new("shop").unwrap(),
            file: PathBuf::from(FILE),
            description: "Shop storefront".to_owned(),
            app_groups: Vec::new(),
            venv: None,
            user: "shop".to_owned(),
            group: Some("shop".to_owned()),
            command: ["/srv/shop/venv/bin/gunicorn", "--workers", "4", "shop.wsgi"]
                .map(String::from)
                .to_vec(),
            directory: PathBuf::from("/srv/shop/current"),
            environment: BTreeMap::from([
                (
                    "DJANGO_SETTINGS_MODULE".to_owned(),
                    "shop.settings".to_owned(),
                ),
                ("SECRET_KEY".to_owned(), "s3cret".to_owned()),
            ]),
            env_files: vec![PathBuf::from("/etc/shop/secrets.env")],
            umask: 0o027,
            autostart: true,
            listen: vec![ListenSpec {
                address: ListenAddress::Tcp("127.0.0.1:8001".parse().unwrap()),
                name: "http".to_owned(),
            }],
            readiness: ReadinessSpec {
                kind: ReadinessKind::Notify,
                timeout: Duration::from_secs(60),
                // DESIGN's example gives a url beside kind notify.
                probe: Some(Probe::Http("http://127.0.0.1:8001/health".to_owned())),
            },
            restart: RestartSpec {
                policy: RestartPolicy::OnFailure,
                start_secs: Duration::from_secs(1),
                max_retries: 0,
                backoff_initial: Duration::from_secs(1),
                backoff_max: Duration::from_secs(60),
                strategy: RestartStrategy::StopStart,
            },
            stop: StopSpec {
                signal: Signal(Sig::SIGTERM),
                timeout: Duration::from_secs(30),
                reload_signal: Signal(Sig::SIGHUP),
            },
            logs: LogSpec {
                max_size: 50 * 1024 * 1024,
                keep: 5,
            },
            access: AccessSpec {
                users: vec!["alice".to_owned()],
                groups: vec!["shop-devs".to_owned()],
            },
            sandbox: SandboxSpec {
                read_only: vec![PathBuf::from("/srv/shop")],
                read_write: vec![
                    PathBuf::from("/srv/shop/shared"),
                    PathBuf::from("/var/lib/shop"),
                ],
                private_tmp: true,
                bind_ports: Some(vec![8001]),
                connect_ports: Some(vec![5432, 6379]),
                network: NetworkMode::Host,
                landlock: LandlockMode::Require,
            },
            limits: LimitSpec {
                memory: Some(512 * 1024 * 1024),
                tasks: Some(128),
                cpu: Some(150),
                open_files: Some(4096),
            },
        };
        assert_eq!(valid.spec, want);
        assert_eq!(valid.warnings, []);
    }

    #[test]
    fn minimal_app_gets_the_built_in_defaults() {
        let got = spec(BASE);
        assert_eq!(got.description, "");
        assert_eq!(got.group, None);
        assert_eq!(got.environment, BTreeMap::new());
        assert_eq!(got.umask, 0o022);
        assert!(got.autostart);
        assert_eq!(got.listen, []);
        assert_eq!(
            got.readiness,
            ReadinessSpec {
                kind: ReadinessKind::None,
                timeout: Duration::from_secs(60),
                probe: None,
            }
        );
        assert_eq!(got.restart.policy, RestartPolicy::OnFailure);
        assert_eq!(got.restart.start_secs, Duration::from_secs(1));
        assert_eq!(got.restart.max_retries, 0);
        assert_eq!(
            (got.restart.backoff_initial, got.restart.backoff_max),
            (Duration::from_secs(1), Duration::from_secs(60))
        );
        assert_eq!(got.restart.strategy, RestartStrategy::StopStart);
        assert_eq!(
            got.stop,
            StopSpec {
                signal: Signal(Sig::SIGTERM),
                timeout: Duration::from_secs(30),
                reload_signal: Signal(Sig::SIGHUP)
            }
        );
        assert_eq!(
            got.logs,
            LogSpec {
                max_size: 52_428_800,
                keep: 5
            }
        );
        assert_eq!(got.access, AccessSpec::default());
        assert_eq!(
            got.sandbox,
            SandboxSpec {
                read_only: vec![],
                read_write: vec![],
                private_tmp: true,
                bind_ports: None,
                connect_ports: None,
                network: NetworkMode::Host,
                landlock: LandlockMode::Require,
            }
        );
        assert_eq!(got.limits, LimitSpec::default());
    }

    #[test]
    fn value_errors_name_line_column_key_and_fix() {
        let cases: &[(&str, &str)] = &[
            (
                "[restart.backoff]\ninitial = \"1 fortnight\"\n",
                "apps.d/shop.toml:5:11: restart.backoff.initial: invalid duration \"1 fortnight\" (use forms like 500ms, 30s, 2m)",
            ),
            (
                "[restart]\nstart_secs = \"\"\n",
                "apps.d/shop.toml:5:14: restart.start_secs: invalid duration \"\" (use forms like 500ms, 30s, 2m)",
            ),
            (
                "[stop]\ntimeout = \"0s\"\n",
                "apps.d/shop.toml:5:11: stop.timeout: stop.timeout must be longer than 0s (use forms like 500ms, 30s, 2m)",
            ),
            (
                "readiness = { timeout = \"0ms\" }\n",
                "apps.d/shop.toml:4:25: readiness.timeout: readiness.timeout must be longer than 0s (use forms like 500ms, 30s, 2m)",
            ),
            (
                "[logs]\nmax_size = \"lots\"\n",
                "apps.d/shop.toml:5:12: logs.max_size: invalid size \"lots\" (use forms like 512MiB, 50MiB, 2GiB)",
            ),
            (
                "[logs]\nmax_size = \"0MiB\"\n",
                "apps.d/shop.toml:5:12: logs.max_size: logs.max_size must be more than 0 bytes (use forms like 512MiB, 50MiB, 2GiB)",
            ),
            (
                "[logs]\nkeep = -1\n",
                "apps.d/shop.toml:5:8: logs.keep: invalid number of files to keep -1 (use a whole number of at least 0)",
            ),
            ("umask = \"0928\"\n", "apps.d/shop.toml:4:9: umask: invalid umask \"0928\" (use 3 or 4 octal digits like \"0027\")"),
            ("umask = \"27\"\n", "apps.d/shop.toml:4:9: umask: invalid umask \"27\" (use 3 or 4 octal digits like \"0027\")"),
            (
                "[stop]\nsignal = \"TERMINATE\"\n",
                "apps.d/shop.toml:5:10: stop.signal: unknown signal \"TERMINATE\" (use a name like TERM, INT, QUIT, HUP or USR1)",
            ),
            (
                "[stop]\nreload_signal = \"SIGFOO\"\n",
                "apps.d/shop.toml:5:17: stop.reload_signal: unknown signal \"SIGFOO\" (use a name like TERM, INT, QUIT, HUP or USR1)",
            ),
            (
                "[limits]\ncpu = \"150\"\n",
                "apps.d/shop.toml:5:7: limits.cpu: invalid cpu limit \"150\" (use a percentage of one cpu like \"50%\" or \"150%\")",
            ),
            (
                "[limits]\ncpu = \"0%\"\n",
                "apps.d/shop.toml:5:7: limits.cpu: invalid cpu limit \"0%\" (use a percentage of one cpu like \"50%\" or \"150%\")",
            ),
            (
                "[limits]\ntasks = 0\n",
                "apps.d/shop.toml:5:9: limits.tasks: invalid task limit 0 (use a whole number of at least 1)",
            ),
            (
                "[limits]\nopen_files = -5\n",
                "apps.d/shop.toml:5:14: limits.open_files: invalid open file limit -5 (use a whole number of at least 1)",
            ),
            (
                "[limits]\nmemory = \"512 potatoes\"\n",
                "apps.d/shop.toml:5:10: limits.memory: invalid size \"512 potatoes\" (use forms like 512MiB, 50MiB, 2GiB)",
            ),
            (
                "[[listen]]\naddress = \"localhost:8001\"\n",
                "apps.d/shop.toml:5:11: listen[0].address: invalid address \"localhost:8001\" \
                 (use IP:PORT like 127.0.0.1:8001 or [::1]:8001, or unix:/absolute/path)",
            ),
            (
                "[[listen]]\naddress = \"127.0.0.1:0\"\n",
                "apps.d/shop.toml:5:11: listen[0].address: port 0 in \"127.0.0.1:0\" \
                 (use a fixed port between 1 and 65535, or unix:/absolute/path)",
            ),
            (
                "[[listen]]\naddress = \"127.0.0.1:70000\"\n",
                "apps.d/shop.toml:5:11: listen[0].address: invalid address \"127.0.0.1:70000\" \
                 (use IP:PORT like 127.0.0.1:8001 or [::1]:8001, or unix:/absolute/path)",
            ),
            (
                "[[listen]]\naddress = \"unix:run/shop.sock\"\n",
                "apps.d/shop.toml:5:11: listen[0].address: unix socket path \"run/shop.sock\" is not absolute \
                 (use unix: followed by an absolute path, like unix:/run/shop/http.sock)",
            ),
            (
                "[[listen]]\nname = \"http\"\n",
                "apps.d/shop.toml:4:1: listen[0].address: missing required key \
                 (add address = \"127.0.0.1:8001\" or \"unix:/run/NAME/http.sock\")",
            ),
            (
                "[[listen]]\naddress = \"127.0.0.1:8001\"\nname = \"a:b\"\n",
                "apps.d/shop.toml:6:8: listen[0].name: invalid listen name \"a:b\" (use 1 to 255 printable characters without ':')",
            ),
            (
                "[[listen]]\naddress = \"127.0.0.1:8001\"\n[[listen]]\naddress = \"127.0.0.1:8001\"\n",
                "apps.d/shop.toml:7:11: listen[1].address: 127.0.0.1:8001 is listed twice (remove the duplicate [[listen]])",
            ),
            (
                "[readiness]\nkind = \"http\"\n",
                "apps.d/shop.toml:5:8: readiness.kind: readiness kind \"http\" needs a url \
                 (add readiness.url = \"http://127.0.0.1:PORT/health\")",
            ),
            (
                "[readiness]\nkind = \"http\"\nurl = \"https://127.0.0.1/health\"\n",
                "apps.d/shop.toml:6:7: readiness.url: https is not supported for probes: \"https://127.0.0.1/health\" \
                 (use a plain http url like http://127.0.0.1:8001/health)",
            ),
            (
                "[readiness]\nkind = \"http\"\nurl = \"http:///health\"\n",
                "apps.d/shop.toml:6:7: readiness.url: invalid readiness url \"http:///health\" \
                 (use a plain http url like http://127.0.0.1:8001/health)",
            ),
            (
                "[readiness]\nkind = \"notify\"\nurl = \"https://127.0.0.1/health\"\n",
                "apps.d/shop.toml:6:7: readiness.url: https is not supported for probes: \"https://127.0.0.1/health\" \
                 (use a plain http url like http://127.0.0.1:8001/health)",
            ),
            (
                "[readiness]\naddress = \"127.0.0.1\"\n",
                "apps.d/shop.toml:5:11: readiness.address: invalid address \"127.0.0.1\" \
                 (use IP:PORT like 127.0.0.1:8001 or [::1]:8001)",
            ),
            (
                "[readiness]\nkind = \"tcp\"\n",
                "apps.d/shop.toml:5:8: readiness.kind: readiness kind \"tcp\" needs an address \
                 (add readiness.address = \"HOST:PORT\" or a TCP [[listen]] address)",
            ),
            (
                "[readiness]\nkind = \"tcp\"\naddress = \"127.0.0.1\"\n",
                "apps.d/shop.toml:6:11: readiness.address: invalid address \"127.0.0.1\" \
                 (use IP:PORT like 127.0.0.1:8001 or [::1]:8001)",
            ),
            (
                "[readiness]\nkind = \"ping\"\n",
                "apps.d/shop.toml:5:8: readiness.kind: unknown readiness kind \"ping\" (use notify, http, tcp or none)",
            ),
            (
                "[restart]\npolicy = \"sometimes\"\n",
                "apps.d/shop.toml:5:10: restart.policy: unknown restart policy \"sometimes\" (use always, on-failure or never)",
            ),
            (
                "[restart]\npolicy = \"alway\"\n",
                "apps.d/shop.toml:5:10: restart.policy: unknown restart policy \"alway\"; did you mean \"always\"? \
                 (use always, on-failure or never)",
            ),
            (
                "[restart]\nstrategy = \"start_stop\"\n",
                "apps.d/shop.toml:5:12: restart.strategy: unknown restart strategy \"start_stop\"; did you mean \
                 \"start-stop\"? (use stop-start or start-stop)",
            ),
            (
                "[readiness]\nkind = \"notfy\"\n",
                "apps.d/shop.toml:5:8: readiness.kind: unknown readiness kind \"notfy\"; did you mean \"notify\"? \
                 (use notify, http, tcp or none)",
            ),
            (
                "[sandbox]\nlandlock = \"best_effort\"\n",
                "apps.d/shop.toml:5:12: sandbox.landlock: unknown landlock mode \"best_effort\"; did you mean \
                 \"best-effort\"? (use require or best-effort)",
            ),
            (
                "[stop]\nsignal = \"SIGTREM\"\n",
                "apps.d/shop.toml:5:10: stop.signal: unknown signal \"SIGTREM\"; did you mean \"TERM\"? \
                 (use a name like TERM, INT, QUIT, HUP or USR1)",
            ),
            (
                "[restart]\nstrategy = \"blue-green\"\n",
                "apps.d/shop.toml:5:12: restart.strategy: unknown restart strategy \"blue-green\" (use stop-start or start-stop)",
            ),
            (
                "[restart]\nmax_retries = -1\n",
                "apps.d/shop.toml:5:15: restart.max_retries: invalid max_retries -1 (use a whole number of at least 0)",
            ),
            (
                "[restart]\nbackoff = { initial = \"2m\", max = \"1m\" }\n",
                "apps.d/shop.toml:5:23: restart.backoff.initial: backoff initial 2m is longer than max 1m (make initial at most max)",
            ),
            (
                "[restart.backoff]\nmax = \"500ms\"\n",
                "apps.d/shop.toml:5:7: restart.backoff.max: backoff initial 1s is longer than max 500ms (make initial at most max)",
            ),
            (
                "venv = \"srv/shop/venv\"\n",
                "apps.d/shop.toml:4:8: venv: path \"srv/shop/venv\" is not absolute (use a path starting with /)",
            ),
            (
                "[sandbox]\nread_only = [\"/srv/shop\", \"srv/other\"]\n",
                "apps.d/shop.toml:5:27: sandbox.read_only[1]: path \"srv/other\" is not absolute (use a path starting with /)",
            ),
            (
                "[sandbox]\nbind_ports = [8001, 0]\n",
                "apps.d/shop.toml:5:21: sandbox.bind_ports[1]: invalid port 0 (use a port between 1 and 65535)",
            ),
            (
                "[sandbox]\nconnect_ports = [65536]\n",
                "apps.d/shop.toml:5:18: sandbox.connect_ports[0]: invalid port 65536 (use a port between 1 and 65535)",
            ),
            (
                "[sandbox]\nnetwork = \"bridge\"\n",
                "apps.d/shop.toml:5:11: sandbox.network: unknown network mode \"bridge\" (use host or none)",
            ),
            (
                "[sandbox]\nlandlock = \"maybe\"\n",
                "apps.d/shop.toml:5:12: sandbox.landlock: unknown landlock mode \"maybe\" (use require or best-effort)",
            ),
            (
                "[access]\nusers = [\"\"]\n",
                "apps.d/shop.toml:5:10: access.users[0]: empty name (remove it or fill it in)",
            ),
            (
                "environment = { LISTEN_FDS = \"3\" }\n",
                "apps.d/shop.toml:4:17: environment.LISTEN_FDS: LISTEN_FDS is set by the daemon for each start \
                 (remove it; LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES and NOTIFY_SOCKET come from [[listen]] and [readiness])",
            ),
            (
                "environment = { \"MY-VAR\" = \"3\" }\n",
                "apps.d/shop.toml:4:17: environment.MY-VAR: invalid environment variable name \"MY-VAR\" \
                 (use letters, digits and _, not starting with a digit)",
            ),
            (
                "env_files = [\"secrets.env\"]\n",
                "apps.d/shop.toml:4:14: env_files[0]: path \"secrets.env\" is not absolute (use a path starting with /)",
            ),
            (
                "env_files = [\"/etc/shop/missing.env\"]\n",
                "apps.d/shop.toml:4:14: env_files[0]: cannot use env file /etc/shop/missing.env: \
                 No such file or directory (os error 2) (create it or remove it from env_files)",
            ),
        ];
        for (extra, want) in cases {
            let text = format!("{BASE}{extra}");
            assert_eq!(errors(&text), [*want], "for {extra:?}");
        }
    }

    #[test]
    fn required_keys_and_their_own_errors() {
        let cases: &[(&str, &[&str])] = &[
            (
                "",
                &[
                    "apps.d/shop.toml:1:1: user: missing required key (add user = \"NAME\", the unix user the app runs as)",
                    "apps.d/shop.toml:1:1: command: missing required key (add command = [\"/absolute/path/to/program\", \"arg\", ...])",
                    "apps.d/shop.toml:1:1: directory: missing required key (add directory = \"/absolute/path\", where the app runs)",
                ],
            ),
            (
                "user = \"root\"\ncommand = []\ndirectory = \"srv/shop\"\n",
                &[
                    "apps.d/shop.toml:1:8: user: user \"root\" is refused: appvisor never runs app code as root \
                     (create a dedicated user, like `useradd --system --home-dir /srv/shop shop`)",
                    "apps.d/shop.toml:2:11: command: command is empty \
                     (give the program and its arguments, like [\"/srv/shop/venv/bin/gunicorn\", \"shop.wsgi\"])",
                    "apps.d/shop.toml:3:13: directory: path \"srv/shop\" is not absolute (use a path starting with /)",
                ],
            ),
            (
                "user = \"shop\"\ncommand = [\"gunicorn\", \"shop.wsgi\"]\ndirectory = \"/srv/shop\"\n",
                &["apps.d/shop.toml:2:12: command[0]: program \"gunicorn\" is not an absolute path \
                   (use the full path, like /srv/shop/venv/bin/gunicorn; there is no PATH search)"],
            ),
        ];
        for (text, want) in cases {
            assert_eq!(errors(text), *want, "for {text:?}");
        }
    }

    #[test]
    fn every_error_is_gathered_in_file_order() {
        let text = "\
user = \"shop\"
umask = \"999\"
[readiness]
kind = \"http\"
url = \"ftp://x\"
[restart]
policy = \"sometimes\"
backoff = { initial = \"soon\" }
[limits]
cpu = \"lots\"
";
        assert_eq!(
            errors(text),
            [
                "apps.d/shop.toml:1:1: command: missing required key (add command = [\"/absolute/path/to/program\", \"arg\", ...])",
                "apps.d/shop.toml:1:1: directory: missing required key (add directory = \"/absolute/path\", where the app runs)",
                "apps.d/shop.toml:2:9: umask: invalid umask \"999\" (use 3 or 4 octal digits like \"0027\")",
                "apps.d/shop.toml:5:7: readiness.url: invalid readiness url \"ftp://x\" (use a plain http url like http://127.0.0.1:8001/health)",
                "apps.d/shop.toml:7:10: restart.policy: unknown restart policy \"sometimes\" (use always, on-failure or never)",
                "apps.d/shop.toml:8:23: restart.backoff.initial: invalid duration \"soon\" (use forms like 500ms, 30s, 2m)",
                "apps.d/shop.toml:10:7: limits.cpu: invalid cpu limit \"lots\" (use a percentage of one cpu like \"50%\" or \"150%\")",
            ]
        );
    }

    #[test]
    fn unknown_keys_and_type_errors_come_from_the_raw_layer() {
        let text = format!("{BASE}colour = \"blue\"\n[stop]\nsignal = 15\n");
        assert_eq!(
            errors(&text),
            [
                "apps.d/shop.toml:4:1: colour: unknown key (remove it or use one of: description, app_groups, user, group, \
                 command, directory, venv, environment, env_files, umask, autostart, listen, readiness, restart, stop, logs, access, \
                 sandbox, limits)",
                "apps.d/shop.toml:6:10: stop.signal: must be a string in quotes, like \"TERM\", not 15",
            ]
        );
    }

    #[test]
    fn defaults_merge_under_the_app_field_by_field() {
        let defaults = daemon_defaults(
            "\
[defaults]
umask = \"0077\"
environment = { LANG_X = \"C.UTF-8\", SHARED = \"defaults\" }
[defaults.restart]
policy = \"always\"
backoff = { initial = \"2s\", max = \"5m\" }
[defaults.stop]
timeout = \"10s\"
[defaults.sandbox]
connect_ports = [5432]
",
        );
        let text = format!("{BASE}environment = {{ SHARED = \"app\" }}\n[restart.backoff]\nmax = \"30s\"\n[sandbox]\nnetwork = \"none\"\n");
        let got = validate_with(&text, &defaults, &no_env_files).unwrap().spec;
        assert_eq!(got.umask, 0o077);
        assert_eq!(
            got.environment,
            BTreeMap::from([
                ("LANG_X".to_owned(), "C.UTF-8".to_owned()),
                ("SHARED".to_owned(), "app".to_owned())
            ])
        );
        assert_eq!(got.restart.policy, RestartPolicy::Always);
        assert_eq!(got.restart.backoff_initial, Duration::from_secs(2));
        assert_eq!(got.restart.backoff_max, Duration::from_secs(30));
        assert_eq!(got.stop.timeout, Duration::from_secs(10));
        assert_eq!(got.sandbox.connect_ports, Some(vec![5432]));
        assert_eq!(got.sandbox.network, NetworkMode::None);
        // The app's own value wins over the default.
        let text = format!("{BASE}umask = \"0002\"\n");
        assert_eq!(
            validate_with(&text, &defaults, &no_env_files)
                .unwrap()
                .spec
                .umask,
            0o002
        );
    }

    #[test]
    fn defaults_errors_point_at_appvisor_toml() {
        // Checked on their own when the daemon config loads ...
        let errors = validate_daemon(
            Path::new("appvisor.toml"),
            "[defaults.restart]\nstart_secs = \"soon\"\n",
        )
        .unwrap_err();
        assert_eq!(
            errors.to_string(),
            "appvisor.toml:2:14: defaults.restart.start_secs: invalid duration \"soon\" (use forms like 500ms, 30s, 2m)"
        );
        // ... and, merged into an app, still blamed on appvisor.toml.
        let defaults = daemon_defaults("[defaults.restart]\nbackoff = { initial = \"2m\" }\n");
        let text = format!("{BASE}[restart.backoff]\nmax = \"1m\"\n");
        let errors = validate_with(&text, &defaults, &no_env_files).unwrap_err();
        assert_eq!(
            errors.to_string(),
            "appvisor.toml:2:23: defaults.restart.backoff.initial: backoff initial 2m is longer than max 1m \
             (make initial at most max)"
        );
        let text = "[stop]\nsignal = \"NOPE\"\n";
        let lines = LineIndex::new(text);
        let defaults = Defaults {
            raw: raw::parse(SourceFile::new(Path::new("x"), text, &lines)).unwrap(),
            file: PathBuf::from("/etc/appvisor/appvisor.toml"),
            text: text.to_owned(),
            lines,
        };
        assert_eq!(
            validate_with(BASE, &defaults, &no_env_files)
                .unwrap_err()
                .to_string(),
            "/etc/appvisor/appvisor.toml:2:10: defaults.stop.signal: unknown signal \"NOPE\" \
             (use a name like TERM, INT, QUIT, HUP or USR1)"
        );
    }

    #[test]
    fn defaults_alone_skip_what_only_an_app_can_tell() {
        // No user, no command, a url without a kind: fine in [defaults].
        let defaults = daemon_defaults(
            "[defaults.readiness]\nurl = \"http://127.0.0.1:8001/health\"\ntimeout = \"5s\"\n",
        );
        assert_eq!(defaults.file(), Some(Path::new("appvisor.toml")));
        let text = format!("{BASE}[readiness]\nkind = \"http\"\n");
        let got = validate_with(&text, &defaults, &no_env_files).unwrap().spec;
        assert_eq!(
            got.readiness,
            ReadinessSpec {
                kind: ReadinessKind::Probe(Probe::Http("http://127.0.0.1:8001/health".to_owned())),
                timeout: Duration::from_secs(5),
                probe: Some(Probe::Http("http://127.0.0.1:8001/health".to_owned())),
            }
        );
    }

    #[test]
    fn uwsgi_stops_with_int_unless_told_otherwise() {
        let cases = [
            (
                "[\"/srv/x/venv/bin/uwsgi\", \"--ini\", \"x.ini\"]",
                "",
                Sig::SIGINT,
            ),
            (
                "[\"/usr/bin/uwsgi_python3\", \"--ini\", \"x.ini\"]",
                "",
                Sig::SIGINT,
            ),
            (
                "[\"/srv/x/venv/bin/uwsgi\"]",
                "[stop]\nsignal = \"QUIT\"\n",
                Sig::SIGQUIT,
            ),
            (
                "[\"/srv/x/venv/bin/uwsgi\"]",
                "[stop]\nsignal = \"SIGTERM\"\n",
                Sig::SIGTERM,
            ),
            ("[\"/srv/uwsgi/venv/bin/gunicorn\"]", "", Sig::SIGTERM),
            // Through a wrapper: env, or a shell's -c script that runs it.
            (
                "[\"/usr/bin/env\", \"LANG=C.UTF-8\", \"/srv/x/venv/bin/uwsgi\"]",
                "",
                Sig::SIGINT,
            ),
            (
                "[\"/bin/sh\", \"-c\", \"cd /srv/x/current && exec /srv/x/venv/bin/uwsgi --ini x.ini\"]",
                "",
                Sig::SIGINT,
            ),
            (
                "[\"/bin/sh\", \"-c\", \"exec /srv/x/venv/bin/gunicorn x.wsgi\"]",
                "",
                Sig::SIGTERM,
            ),
        ];
        for (command, extra, want) in cases {
            let text =
                format!("user = \"x\"\ndirectory = \"/srv/x\"\ncommand = {command}\n{extra}");
            assert_eq!(
                spec(&text).stop.signal,
                Signal(want),
                "for {command} {extra:?}"
            );
        }
    }

    #[test]
    fn listen_names_default_to_the_app_and_tcp_probes_to_the_first_tcp_listen() {
        let text = format!(
            "{BASE}[[listen]]\naddress = \"unix:/run/shop/http.sock\"\n[[listen]]\naddress = \"0.0.0.0:8001\"\nname = \"web\"\n\
             [readiness]\nkind = \"tcp\"\n"
        );
        let got = spec(&text);
        assert_eq!(
            got.listen,
            [
                ListenSpec {
                    address: ListenAddress::Unix(PathBuf::from("/run/shop/http.sock")),
                    name: "shop".to_owned()
                },
                ListenSpec {
                    address: ListenAddress::Tcp("0.0.0.0:8001".parse().unwrap()),
                    name: "web".to_owned()
                },
            ]
        );
        assert_eq!(
            got.readiness.kind,
            ReadinessKind::Probe(Probe::Tcp("127.0.0.1:8001".parse().unwrap()))
        );
    }

    #[test]
    fn environment_wins_over_env_files_and_later_files_over_earlier() {
        let text = format!(
            "{BASE}env_files = [\"/etc/shop/a.env\", \"/etc/shop/b.env\"]\nenvironment = {{ FROM_APP = \"app\", BOTH = \"app\" }}\n"
        );
        let env = |path: &Path| match path.to_str() {
            Some("/etc/shop/a.env") => Ok("A=1\nAB=a\nBOTH=a\n".to_owned()),
            Some("/etc/shop/b.env") => Ok("export AB=b\nB='2'\n".to_owned()),
            _ => no_env_files(path),
        };
        let got = validate_with(&text, &Defaults::none(), &env).unwrap().spec;
        let want = [
            ("A", "1"),
            ("AB", "b"),
            ("B", "2"),
            ("BOTH", "app"),
            ("FROM_APP", "app"),
        ];
        assert_eq!(
            got.environment,
            want.map(|(k, v)| (k.to_owned(), v.to_owned()))
                .into_iter()
                .collect()
        );
        assert_eq!(
            got.env_files,
            [
                PathBuf::from("/etc/shop/a.env"),
                PathBuf::from("/etc/shop/b.env")
            ]
        );
    }

    #[test]
    fn env_file_errors_name_the_env_file() {
        let text = format!("{BASE}env_files = [\"/etc/shop/secrets.env\"]\n");
        let env = |_: &Path| Ok("OK=1\nNOTIFY_SOCKET=/tmp/x\n".to_owned());
        let errors = validate_with(&text, &Defaults::none(), &env).unwrap_err();
        assert_eq!(
            errors.to_string(),
            "/etc/shop/secrets.env:2:1: NOTIFY_SOCKET is set by the daemon for each start \
             (remove it; LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES and NOTIFY_SOCKET come from [[listen]] and [readiness])"
        );
    }

    #[test]
    fn code_under_a_private_tmp_is_refused() {
        let text = "user = \"shop\"\ncommand = [\"/tmp/demo/venv/bin/gunicorn\"]\ndirectory = \"/tmp/demo\"\n";
        let hint = "move it out of /tmp and /var/tmp (e.g. to /srv or /var/lib), or set sandbox.private_tmp = false";
        assert_eq!(
            errors(text),
            [
                format!("apps.d/shop.toml:2:11: command: command /tmp/demo/venv/bin/gunicorn is under a temporary directory that sandbox.private_tmp replaces with an empty one for the app ({hint})"),
                format!("apps.d/shop.toml:3:13: directory: directory /tmp/demo is under a temporary directory that sandbox.private_tmp replaces with an empty one for the app ({hint})"),
            ]
        );
        let allowed = format!("{text}[sandbox]\nprivate_tmp = false\n");
        assert!(validate_with(&allowed, &Defaults::none(), &no_env_files).is_ok());
    }

    #[test]
    fn warnings_for_writable_code_and_unrestricted_connect() {
        let text = format!("{BASE}[sandbox]\nread_write = [\"/srv/shop/shared\", \"/srv/shop\"]\nnetwork = \"host\"\n");
        let valid = validate_with(&text, &Defaults::none(), &no_env_files).unwrap();
        let got: Vec<String> = valid.warnings.iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            [
                "apps.d/shop.toml:5:35: sandbox.read_write[1]: /srv/shop holds the app's directory /srv/shop/current, \
                 so the app can rewrite its own code (grant only the paths it writes to, like /srv/shop/shared)",
                "apps.d/shop.toml:6:11: sandbox.network: network = \"host\" without connect_ports lets the app connect \
                 to any tcp port (list the ports it needs, like connect_ports = [5432, 6379], or set network = \"none\")",
            ]
        );
        // The built-in network default warns at the [sandbox] table, or
        // at the file's start without one.
        for (text, at) in [
            (BASE.to_owned(), "1:1"),
            (format!("{BASE}[sandbox]\nprivate_tmp = true\n"), "4:1"),
        ] {
            let valid = validate_with(&text, &Defaults::none(), &no_env_files).unwrap();
            assert_eq!(
                valid.warnings.iter().map(ToString::to_string).collect::<Vec<_>>(),
                [format!(
                    "apps.d/shop.toml:{at}: sandbox.connect_ports: network = \"host\" without connect_ports \
                     lets the app connect to any tcp port (list the ports it needs, like \
                     connect_ports = [5432, 6379], or set network = \"none\")"
                )]
            );
        }
        let quiet = format!(
            "{BASE}[sandbox]\nread_write = [\"/srv/shop/current-data\"]\nconnect_ports = [5432]\n"
        );
        assert_eq!(
            validate_with(&quiet, &Defaults::none(), &no_env_files)
                .unwrap()
                .warnings,
            []
        );
    }

    #[test]
    fn warns_about_uwsgi_without_an_fd_socket_on_held_sockets() {
        let file = |args: &str, environment: &str| {
            format!(
                "user = \"shop\"\ndirectory = \"/srv/shop/current\"\n\
                 command = [\"/srv/shop/venv/bin/uwsgi\", {args}]\n{environment}\
                 [sandbox]\nconnect_ports = []\n[[listen]]\naddress = \"127.0.0.1:8001\"\n"
            )
        };
        let warnings = |text: &str| {
            validate_with(text, &Defaults::none(), &no_env_files)
                .unwrap()
                .warnings
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            warnings(&file("\"--master\", \"--module\", \"shop.wsgi\"", "")),
            ["apps.d/shop.toml:3:11: command: uWSGI serves the [[listen]] socket (fd 3) with the uwsgi \
              protocol unless an fd:// socket option says otherwise, and this command has none \
              (add \"--http-socket\", \"fd://3\" to serve HTTP, or \"--socket\", \"fd://3\" behind \
              nginx's uwsgi_pass)"]
        );
        assert_eq!(
            warnings(&file("\"--http-socket\", \"fd://3\"", "")),
            Vec::<String>::new()
        );
        // uWSGI reads UWSGI_* variables as options.
        let env = "environment = { UWSGI_HTTP_SOCKET = \"fd://3\" }\n";
        assert_eq!(warnings(&file("\"--master\"", env)), Vec::<String>::new());
    }

    #[test]
    fn identical_files_give_equal_specs() {
        let text = include_str!("testdata/shop.toml");
        let env = |_: &Path| Ok("SECRET_KEY=x\n".to_owned());
        let a = validate_with(text, &Defaults::none(), &env).unwrap().spec;
        let b = validate_with(text, &Defaults::none(), &env).unwrap().spec;
        assert_eq!(a, b);
        // Comments, layout and key order do not matter; values do.
        let reordered = "# moved around\ndirectory = \"/srv/shop/current\"\ncommand = [ \"/srv/shop/venv/bin/gunicorn\",\"shop.wsgi\" ]\nuser=\"shop\"\n";
        assert_eq!(spec(BASE), spec(reordered));
        assert_ne!(spec(BASE), spec(&format!("{BASE}umask = \"0027\"\n")));
    }

    #[test]
    fn sizes_take_the_largest_unit_and_read_back() {
        let table: &[(u64, &str)] = &[
            (50 << 20, "50MiB"),
            (3 << 30, "3GiB"),
            (1536 << 10, "1536KiB"),
            (1000, "1000B"),
            (0, "0B"),
        ];
        for &(bytes, text) in table {
            assert_eq!(size_text(bytes), text);
            assert_eq!(parse_size(text), Ok(bytes), "{text}");
        }
    }

    #[test]
    fn value_parsers() {
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_size("512MiB"), Ok(536_870_912));
        assert_eq!(parse_size("50MiB"), Ok(52_428_800));
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_signal("term"), Ok(Signal(Sig::SIGTERM)));
        assert_eq!(parse_signal("SIGUSR1"), Ok(Signal(Sig::SIGUSR1)));
        assert_eq!(parse_umask("0027"), Ok(0o027));
        assert_eq!(parse_umask("077"), Ok(0o077));
        assert_eq!(parse_cpu("150%"), Ok(150));
        assert_eq!(
            parse_listen_address("[::1]:8001"),
            Ok(ListenAddress::Tcp("[::1]:8001".parse().unwrap()))
        );
        assert_eq!(
            parse_listen_address(&format!("unix:/{}", "x".repeat(107)))
                .unwrap_err()
                .message,
            "unix socket path is 108 bytes long, the kernel takes at most 107"
        );
        assert_eq!(
            parse_http_url("http://127.0.0.1:8001/health"),
            Ok("http://127.0.0.1:8001/health".to_owned())
        );
        assert_eq!(parse_port(65535), Ok(65535));
    }

    #[test]
    fn daemon_settings() {
        let (spec, defaults) = validate_daemon(Path::new("appvisor.toml"), "").unwrap();
        assert_eq!(
            spec,
            DaemonSpec {
                apps_dir: PathBuf::from("/etc/appvisor/apps.d"),
                log_dir: PathBuf::from("/var/log/appvisor"),
                state_dir: PathBuf::from("/var/lib/appvisor"),
                control: ControlSpec {
                    socket: PathBuf::from("/run/appvisor/ctl.sock"),
                    admin_users: vec![],
                    admin_groups: vec!["appvisor-admin".to_owned()],
                },
                status: StatusSpec {
                    listen: Some("127.0.0.1:9750".parse().unwrap())
                },
            }
        );
        assert_eq!(defaults.file(), None);

        let text = "apps_dir = \"/tmp/t/apps.d\"\n[control]\nadmin_users = [\"ops\"]\nadmin_groups = []\n[status]\nlisten = \"\"\n";
        let (spec, _) = validate_daemon(Path::new("appvisor.toml"), text).unwrap();
        assert_eq!(spec.apps_dir, PathBuf::from("/tmp/t/apps.d"));
        assert_eq!(spec.control.admin_users, ["ops"]);
        assert_eq!(spec.control.admin_groups, Vec::<String>::new());
        assert_eq!(spec.status.listen, None);

        let text = "log_dir = \"logs\"\n[control]\nsocket = \"ctl.sock\"\nadmins = []\n[status]\nlisten = \"*:9750\"\n";
        let errors = validate_daemon(Path::new("appvisor.toml"), text).unwrap_err();
        assert_eq!(
            errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["appvisor.toml:4:1: control.admins: unknown key (remove it or use one of: socket, admin_users, admin_groups)"]
        );
        let text = "log_dir = \"logs\"\n[control]\nsocket = \"ctl.sock\"\n\
                    admin_groups = [\"ops\", \"\"]\n[status]\nlisten = \"*:9750\"\n";
        let errors = validate_daemon(Path::new("appvisor.toml"), text).unwrap_err();
        assert_eq!(
            errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
            [
                "appvisor.toml:1:11: log_dir: path \"logs\" is not absolute (use a path starting with /)",
                "appvisor.toml:3:10: control.socket: path \"ctl.sock\" is not absolute (use a path starting with /)",
                "appvisor.toml:4:24: control.admin_groups[1]: empty name (remove it or fill it in)",
                "appvisor.toml:6:10: status.listen: invalid address \"*:9750\" \
                 (use IP:PORT like 127.0.0.1:8001 or [::1]:8001, or \"\" to turn the status server off)",
            ]
        );
    }
}
