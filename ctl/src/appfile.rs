//! The apps.d file an importer writes (`import-supervisord`,
//! `import-uwsgi`): what it says, its TOML text, and the check of it that
//! `appctl check` would run, so the importer can say what would still fail
//! at start beside each file.
//!
//! Pure but for [`check`], which looks users, groups and paths up.

use std::fmt::Write as _;
use std::path::Path;

use appvisor_config::{self as config, AppName, ConfigError, Defaults};

/// One app, as an importer made it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AppFile {
    pub name: String,
    /// Where it came from: `FILE:LINE [program:x]` or `FILE`.
    pub origin: String,
    /// The command that wrote it, e.g. `import-supervisord`.
    pub importer: &'static str,
    /// What differs from the source, or needs a person's look: the file's
    /// leading comments.
    pub notes: Vec<String>,
    pub user: String,
    pub group: Option<String>,
    pub app_groups: Vec<String>,
    pub command: Vec<String>,
    pub directory: String,
    pub venv: Option<String>,
    pub environment: Vec<(String, String)>,
    pub umask: Option<String>,
    pub autostart: bool,
    /// `[[listen]]` addresses (`127.0.0.1:8000`, `unix:/run/x.sock`).
    pub listen: Vec<String>,
    /// `notify` or `none`.
    pub readiness: &'static str,
    pub restart: Option<Restart>,
    pub stop_signal: String,
    pub stop_timeout_secs: Option<u64>,
    /// `(max_size bytes, keep)`.
    pub logs: Option<(u64, u64)>,
    /// `[sandbox] bind_ports`, for a server that binds its own port.
    pub bind_ports: Vec<u16>,
}

/// `[restart]`, as supervisord's options map onto it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restart {
    pub policy: &'static str,
    pub start_secs: u64,
    /// supervisord's `startretries`, N retries = N + 1 failed starts;
    /// `None` keeps trying, as uWSGI's emperor does.
    pub start_retries: Option<u64>,
}

impl AppFile {
    /// The file's text.
    pub fn toml(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(
            t,
            "# Imported from {} by appctl {}.",
            self.origin, self.importer
        );
        for note in &self.notes {
            let _ = writeln!(t, "# note: {note}");
        }
        let _ = writeln!(t, "user = {}", quote(&self.user));
        if let Some(group) = &self.group {
            let _ = writeln!(t, "group = {}", quote(group));
        }
        if !self.app_groups.is_empty() {
            let _ = writeln!(t, "app_groups = [{}]", list(&self.app_groups));
        }
        let _ = writeln!(t, "command = [{}]", list(&self.command));
        let _ = writeln!(t, "directory = {}", quote(&self.directory));
        if let Some(venv) = &self.venv {
            let _ = writeln!(t, "venv = {}", quote(venv));
        }
        if !self.environment.is_empty() {
            let pairs: Vec<String> = self
                .environment
                .iter()
                .map(|(k, v)| format!("{} = {}", key(k), quote(v)))
                .collect();
            let _ = writeln!(t, "environment = {{ {} }}", pairs.join(", "));
        }
        if let Some(umask) = &self.umask {
            let _ = writeln!(t, "umask = {}", quote(umask));
        }
        let _ = writeln!(t, "autostart = {}", self.autostart);
        for address in &self.listen {
            let _ = writeln!(t, "\n[[listen]]\naddress = {}", quote(address));
        }
        let _ = write!(t, "\n[readiness]\n");
        if self.readiness == "none" {
            let _ = writeln!(
                t,
                "# running once up for start_secs, as supervisord judged it."
            );
        }
        let _ = writeln!(t, "kind = \"{}\"", self.readiness);
        if let Some(r) = &self.restart {
            let _ = writeln!(
                t,
                "\n[restart]\npolicy = \"{}\"\nstart_secs = \"{}s\"",
                r.policy, r.start_secs
            );
            if let Some(retries) = r.start_retries {
                let _ = writeln!(
                    t,
                    "# supervisord's startretries = {retries}: fatal after {} failed starts in a row.\n\
                     max_retries = {}",
                    retries + 1,
                    retries + 1
                );
            }
        }
        let _ = write!(t, "\n[stop]\nsignal = \"{}\"\n", self.stop_signal);
        if let Some(timeout) = self.stop_timeout_secs {
            let _ = writeln!(t, "timeout = \"{timeout}s\"");
        }
        if let Some((max_size, keep)) = self.logs {
            let _ = writeln!(
                t,
                "\n[logs]\nmax_size = \"{}\"\nkeep = {keep}",
                config::validate::size_text(max_size)
            );
        }
        let _ = writeln!(
            t,
            "\n# appvisor confines every app (docs/security.md): it may read its directory\n\
             # and its venv and write nothing else. List what it writes, e.g.:\n\
             # read_write = [\"/var/lib/{}\"]\n[sandbox]",
            self.name
        );
        if !self.bind_ports.is_empty() {
            let ports: Vec<String> = self.bind_ports.iter().map(u16::to_string).collect();
            let _ = writeln!(t, "bind_ports = [{}]", ports.join(", "));
        }
        t
    }
}

/// What `appctl check` says of an imported file: errors are what would
/// fail at start (a missing user, directory or program), warnings what
/// `check` warns about. `shown_as` is the path messages name.
pub fn check(app: &AppFile, shown_as: &Path, defaults: &Defaults) -> (Vec<String>, Vec<String>) {
    let Some(name) = AppName::new(&app.name) else {
        return (
            vec![format!("{:?} is not a valid app name", app.name)],
            Vec::new(),
        );
    };
    // As the daemon reads them: root's own, never through a link.
    let env_file = config::load::read_env_file;
    let show = |errors: &mut dyn Iterator<Item = &ConfigError>| -> Vec<String> {
        errors.map(ToString::to_string).collect()
    };
    match config::validate::validate_app(&name, shown_as, &app.toml(), defaults, &env_file) {
        Ok(valid) => {
            let warnings = show(&mut valid.warnings.iter());
            let errors = match valid.resolve(&config::SystemUserDb) {
                Ok(_) => Vec::new(),
                Err(errors) => show(&mut errors.iter()),
            };
            (errors, warnings)
        }
        Err(errors) => (show(&mut errors.iter()), Vec::new()),
    }
}

/// A TOML string.
pub fn quote(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

fn list(items: &[String]) -> String {
    items
        .iter()
        .map(|a| quote(a))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A TOML key: bare when it can be.
fn key(k: &str) -> String {
    if !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        k.to_owned()
    } else {
        quote(k)
    }
}

/// `name` as an app name: lower-cased, other characters than
/// `[a-z0-9_-]` as `-`. `None` when nothing usable is left.
pub fn app_name_from(name: &str) -> Option<String> {
    let mapped: String = name
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let trimmed = mapped.trim_start_matches(['-', '_']);
    AppName::new(trimmed).map(|n| n.as_str().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_app_names() {
        let table = [
            ("celery_00", Some("celery_00")),
            ("Celery-Worker", Some("celery-worker")),
            ("mysite.asgi0", Some("mysite-asgi0")),
            ("_x", Some("x")),
            ("...", None),
        ];
        for (given, want) in table {
            assert_eq!(app_name_from(given).as_deref(), want, "{given}");
        }
    }
}
