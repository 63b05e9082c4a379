//! Writing `apps.d/NAME.toml` from a few fields, in DESIGN.md's keys.
//!
//! Writes only the keys a test sets (plus `user`, `command` and
//! `directory`), so every other key takes the daemon's default. Does not
//! validate: tests of validation write what they need, invalid files included.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::prefix::Prefix;
use crate::users::TestUser;

/// `[readiness] kind`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    None,
    Notify,
    /// `url`.
    Http(String),
    /// `address`, e.g. `127.0.0.1:8001`.
    Tcp(String),
}

/// `[restart] strategy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    StopStart,
    StartStop,
}

impl Strategy {
    fn as_str(self) -> &'static str {
        match self {
            Strategy::StopStart => "stop-start",
            Strategy::StartStop => "start-stop",
        }
    }
}

/// `[restart] policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

impl RestartPolicy {
    fn as_str(self) -> &'static str {
        match self {
            RestartPolicy::Always => "always",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::Never => "never",
        }
    }
}

/// One app file under construction.
#[derive(Debug, Clone)]
pub struct AppBuilder {
    name: String,
    user: String,
    group: Option<String>,
    command: Vec<String>,
    directory: PathBuf,
    venv: Option<PathBuf>,
    description: Option<String>,
    app_groups: Vec<String>,
    environment: BTreeMap<String, String>,
    env_files: Vec<PathBuf>,
    autostart: Option<bool>,
    listen: Vec<(String, Option<String>)>,
    readiness: Option<Readiness>,
    readiness_timeout: Option<Duration>,
    /// `[readiness] url` beside kind `notify`.
    readiness_url: Option<String>,
    policy: Option<RestartPolicy>,
    strategy: Option<Strategy>,
    start_secs: Option<Duration>,
    max_retries: Option<u32>,
    backoff: Option<(Duration, Duration)>,
    stop_signal: Option<String>,
    stop_timeout: Option<Duration>,
    log_max_size: Option<String>,
    log_keep: Option<u32>,
    read_only: Vec<PathBuf>,
    read_write: Vec<PathBuf>,
    /// Raw `key = value` lines for `[sandbox]` and `[limits]`.
    sandbox_lines: Vec<String>,
    limit_lines: Vec<String>,
    extra: String,
}

/// A TOML basic string: JSON's escapes are a subset of TOML's.
fn quote(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

fn quote_list<S: AsRef<str>>(items: &[S]) -> String {
    let items: Vec<String> = items.iter().map(|s| quote(s.as_ref())).collect();
    format!("[{}]", items.join(", "))
}

fn path_list(items: &[PathBuf]) -> String {
    let items: Vec<String> = items.iter().map(|p| p.display().to_string()).collect();
    quote_list(&items)
}

/// `1500ms`, `2s`: forms humantime parses.
pub fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

impl AppBuilder {
    /// An app run as `user` in `/`, every other key at its default.
    pub fn new<I, S>(name: &str, user: &TestUser, command: I) -> AppBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        AppBuilder::for_user_name(name, &user.name, command)
    }

    /// Like [`AppBuilder::new`] with a user that need not exist.
    pub fn for_user_name<I, S>(name: &str, user: &str, command: I) -> AppBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        AppBuilder {
            name: name.to_owned(),
            user: user.to_owned(),
            group: None,
            command: command.into_iter().map(Into::into).collect(),
            directory: PathBuf::from("/"),
            venv: None,
            description: None,
            app_groups: Vec::new(),
            environment: BTreeMap::new(),
            env_files: Vec::new(),
            autostart: None,
            listen: Vec::new(),
            readiness: None,
            readiness_timeout: None,
            readiness_url: None,
            policy: None,
            strategy: None,
            start_secs: None,
            max_retries: None,
            backoff: None,
            stop_signal: None,
            stop_timeout: None,
            log_max_size: None,
            log_keep: None,
            read_only: Vec::new(),
            read_write: Vec::new(),
            sandbox_lines: Vec::new(),
            limit_lines: Vec::new(),
            extra: String::new(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Replaces the command.
    pub fn command<I, S>(mut self, command: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.command = command.into_iter().map(Into::into).collect();
        self
    }

    /// Appends arguments to the command.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.command.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn group(mut self, group: &str) -> Self {
        self.group = Some(group.to_owned());
        self
    }

    pub fn directory(mut self, dir: impl AsRef<Path>) -> Self {
        self.directory = dir.as_ref().to_path_buf();
        self
    }

    /// `app_groups`: the groups `appctl ... group:NAME` selects by.
    pub fn app_groups(mut self, groups: &[&str]) -> Self {
        self.app_groups = groups.iter().map(|g| (*g).to_owned()).collect();
        self
    }

    /// `venv`: the venv a wrapper command runs a program from.
    pub fn venv(mut self, venv: impl AsRef<Path>) -> Self {
        self.venv = Some(venv.as_ref().to_path_buf());
        self
    }

    pub fn description(mut self, text: &str) -> Self {
        self.description = Some(text.to_owned());
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.environment.insert(key.to_owned(), value.to_owned());
        self
    }

    pub fn env_file(mut self, path: impl AsRef<Path>) -> Self {
        self.env_files.push(path.as_ref().to_path_buf());
        self
    }

    pub fn autostart(mut self, on: bool) -> Self {
        self.autostart = Some(on);
        self
    }

    /// A `[[listen]]` socket; `name` is its `LISTEN_FDNAMES` entry.
    pub fn listen(mut self, address: &str, name: Option<&str>) -> Self {
        self.listen
            .push((address.to_owned(), name.map(str::to_owned)));
        self
    }

    pub fn readiness(mut self, readiness: Readiness) -> Self {
        self.readiness = Some(readiness);
        self
    }

    pub fn readiness_timeout(mut self, timeout: Duration) -> Self {
        self.readiness_timeout = Some(timeout);
        self
    }

    /// `[readiness] url` beside kind `notify` (for kind `http`, give the
    /// url in [`Readiness::Http`]).
    pub fn readiness_url(mut self, url: &str) -> Self {
        self.readiness_url = Some(url.to_owned());
        self
    }

    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = Some(strategy);
        self
    }

    pub fn restart_policy(mut self, policy: RestartPolicy) -> Self {
        self.policy = Some(policy);
        self
    }

    pub fn start_secs(mut self, d: Duration) -> Self {
        self.start_secs = Some(d);
        self
    }

    pub fn max_retries(mut self, n: u32) -> Self {
        self.max_retries = Some(n);
        self
    }

    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.backoff = Some((initial, max));
        self
    }

    /// `[stop] signal`, e.g. `"TERM"`.
    pub fn stop_signal(mut self, signal: &str) -> Self {
        self.stop_signal = Some(signal.to_owned());
        self
    }

    pub fn stop_timeout(mut self, d: Duration) -> Self {
        self.stop_timeout = Some(d);
        self
    }

    /// `[logs]`: `max_size` in the human form (`"10MiB"`) and `keep`.
    pub fn logs(mut self, max_size: &str, keep: u32) -> Self {
        self.log_max_size = Some(max_size.to_owned());
        self.log_keep = Some(keep);
        self
    }

    /// `[sandbox] read_only`: e.g. the venv, outside the system paths.
    pub fn read_only(mut self, path: impl AsRef<Path>) -> Self {
        self.read_only.push(path.as_ref().to_path_buf());
        self
    }

    pub fn read_write(mut self, path: impl AsRef<Path>) -> Self {
        self.read_write.push(path.as_ref().to_path_buf());
        self
    }

    /// One `[sandbox]` key as raw TOML, e.g. `("bind_ports", "[8001]")`.
    pub fn sandbox(mut self, key: &str, value_toml: &str) -> Self {
        self.sandbox_lines.push(format!("{key} = {value_toml}"));
        self
    }

    /// `[sandbox] bind_ports`: the test apps bind their own ports.
    pub fn bind_ports(self, ports: &[u16]) -> Self {
        let list: Vec<String> = ports.iter().map(u16::to_string).collect();
        self.sandbox("bind_ports", &format!("[{}]", list.join(", ")))
    }

    /// One `[limits]` key as raw TOML, e.g. `("memory", "\"64MiB\"")`.
    pub fn limit(mut self, key: &str, value_toml: &str) -> Self {
        self.limit_lines.push(format!("{key} = {value_toml}"));
        self
    }

    /// Raw TOML appended as is, for keys this builder does not know.
    pub fn extra_toml(mut self, toml: &str) -> Self {
        self.extra.push_str(toml);
        self.extra.push('\n');
        self
    }

    /// The file's text.
    pub fn to_toml(&self) -> String {
        let mut t = String::new();
        if let Some(d) = &self.description {
            let _ = writeln!(t, "description = {}", quote(d));
        }
        if !self.app_groups.is_empty() {
            let _ = writeln!(t, "app_groups = {}", quote_list(&self.app_groups));
        }
        let _ = writeln!(t, "user = {}", quote(&self.user));
        if let Some(g) = &self.group {
            let _ = writeln!(t, "group = {}", quote(g));
        }
        let _ = writeln!(t, "command = {}", quote_list(&self.command));
        let _ = writeln!(
            t,
            "directory = {}",
            quote(&self.directory.display().to_string())
        );
        if let Some(venv) = &self.venv {
            let _ = writeln!(t, "venv = {}", quote(&venv.display().to_string()));
        }
        if !self.environment.is_empty() {
            let pairs: Vec<String> = self
                .environment
                .iter()
                .map(|(k, v)| format!("{} = {}", quote(k), quote(v)))
                .collect();
            let _ = writeln!(t, "environment = {{ {} }}", pairs.join(", "));
        }
        if !self.env_files.is_empty() {
            let _ = writeln!(t, "env_files = {}", path_list(&self.env_files));
        }
        if let Some(on) = self.autostart {
            let _ = writeln!(t, "autostart = {on}");
        }
        for (address, name) in &self.listen {
            let _ = writeln!(t, "\n[[listen]]\naddress = {}", quote(address));
            if let Some(name) = name {
                let _ = writeln!(t, "name = {}", quote(name));
            }
        }
        if self.readiness.is_some()
            || self.readiness_timeout.is_some()
            || self.readiness_url.is_some()
        {
            t.push_str("\n[readiness]\n");
            match &self.readiness {
                Some(Readiness::None) => t.push_str("kind = \"none\"\n"),
                Some(Readiness::Notify) => t.push_str("kind = \"notify\"\n"),
                Some(Readiness::Http(url)) => {
                    let _ = writeln!(t, "kind = \"http\"\nurl = {}", quote(url));
                }
                Some(Readiness::Tcp(address)) => {
                    let _ = writeln!(t, "kind = \"tcp\"\naddress = {}", quote(address));
                }
                None => {}
            }
            if let Some(url) = &self.readiness_url {
                let _ = writeln!(t, "url = {}", quote(url));
            }
            if let Some(d) = self.readiness_timeout {
                let _ = writeln!(t, "timeout = {}", quote(&duration(d)));
            }
        }
        if self.policy.is_some()
            || self.strategy.is_some()
            || self.start_secs.is_some()
            || self.max_retries.is_some()
            || self.backoff.is_some()
        {
            t.push_str("\n[restart]\n");
            if let Some(p) = self.policy {
                let _ = writeln!(t, "policy = {}", quote(p.as_str()));
            }
            if let Some(s) = self.strategy {
                let _ = writeln!(t, "strategy = {}", quote(s.as_str()));
            }
            if let Some(d) = self.start_secs {
                let _ = writeln!(t, "start_secs = {}", quote(&duration(d)));
            }
            if let Some(n) = self.max_retries {
                let _ = writeln!(t, "max_retries = {n}");
            }
            if let Some((initial, max)) = self.backoff {
                let _ = writeln!(
                    t,
                    "backoff = {{ initial = {}, max = {} }}",
                    quote(&duration(initial)),
                    quote(&duration(max))
                );
            }
        }
        if self.stop_signal.is_some() || self.stop_timeout.is_some() {
            t.push_str("\n[stop]\n");
            if let Some(s) = &self.stop_signal {
                let _ = writeln!(t, "signal = {}", quote(s));
            }
            if let Some(d) = self.stop_timeout {
                let _ = writeln!(t, "timeout = {}", quote(&duration(d)));
            }
        }
        if self.log_max_size.is_some() || self.log_keep.is_some() {
            t.push_str("\n[logs]\n");
            if let Some(s) = &self.log_max_size {
                let _ = writeln!(t, "max_size = {}", quote(s));
            }
            if let Some(k) = self.log_keep {
                let _ = writeln!(t, "keep = {k}");
            }
        }
        if !self.read_only.is_empty()
            || !self.read_write.is_empty()
            || !self.sandbox_lines.is_empty()
        {
            t.push_str("\n[sandbox]\n");
            if !self.read_only.is_empty() {
                let _ = writeln!(t, "read_only = {}", path_list(&self.read_only));
            }
            if !self.read_write.is_empty() {
                let _ = writeln!(t, "read_write = {}", path_list(&self.read_write));
            }
            for line in &self.sandbox_lines {
                let _ = writeln!(t, "{line}");
            }
        }
        if !self.limit_lines.is_empty() {
            t.push_str("\n[limits]\n");
            for line in &self.limit_lines {
                let _ = writeln!(t, "{line}");
            }
        }
        if !self.extra.is_empty() {
            t.push('\n');
            t.push_str(&self.extra);
        }
        t
    }

    /// Writes `apps.d/NAME.toml` into `prefix` and returns its path.
    pub fn write(&self, prefix: &Prefix) -> PathBuf {
        let path = prefix.app_file(&self.name);
        std::fs::write(&path, self.to_toml())
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_only_the_keys_set() {
        let toml =
            AppBuilder::for_user_name("shop", "avt-app1", ["/bin/sleep", "infinity"]).to_toml();
        assert_eq!(
            toml,
            "user = \"avt-app1\"\ncommand = [\"/bin/sleep\", \"infinity\"]\ndirectory = \"/\"\n"
        );
    }

    #[test]
    fn writes_a_url_beside_notify() {
        let toml = AppBuilder::for_user_name("shop", "avt-app1", ["/srv/gunicorn"])
            .readiness(Readiness::Notify)
            .readiness_url("http://127.0.0.1:8001/health")
            .to_toml();
        assert!(
            toml.ends_with(
                "\n[readiness]\nkind = \"notify\"\nurl = \"http://127.0.0.1:8001/health\"\n"
            ),
            "{toml}"
        );
    }

    #[test]
    fn writes_every_table_in_design_keys() {
        let toml = AppBuilder::for_user_name("shop", "avt-app1", ["/srv/gunicorn", "a:b"])
            .group("avt-grp")
            .directory("/srv/shop")
            .env("A", "1 \"q\"")
            .env_file("/etc/shop.env")
            .autostart(false)
            .listen("127.0.0.1:8001", Some("http"))
            .readiness(Readiness::Tcp("127.0.0.1:8001".into()))
            .readiness_timeout(Duration::from_secs(30))
            .restart_policy(RestartPolicy::OnFailure)
            .strategy(Strategy::StartStop)
            .start_secs(Duration::from_secs(1))
            .max_retries(3)
            .backoff(Duration::from_millis(100), Duration::from_secs(2))
            .stop_signal("INT")
            .stop_timeout(Duration::from_millis(2500))
            .logs("10MiB", 10)
            .read_only("/opt/venv")
            .to_toml();
        assert_eq!(
            toml,
            r#"user = "avt-app1"
group = "avt-grp"
command = ["/srv/gunicorn", "a:b"]
directory = "/srv/shop"
environment = { "A" = "1 \"q\"" }
env_files = ["/etc/shop.env"]
autostart = false

[[listen]]
address = "127.0.0.1:8001"
name = "http"

[readiness]
kind = "tcp"
address = "127.0.0.1:8001"
timeout = "30s"

[restart]
policy = "on-failure"
strategy = "start-stop"
start_secs = "1s"
max_retries = 3
backoff = { initial = "100ms", max = "2s" }

[stop]
signal = "INT"
timeout = "2500ms"

[logs]
max_size = "10MiB"
keep = 10

[sandbox]
read_only = ["/opt/venv"]
"#
        );
    }
}
