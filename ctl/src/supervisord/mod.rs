//! `appctl import-supervisord FILE...`: every `[program:x]` of supervisord
//! configs (following their `[include]`s) as an apps.d TOML file that keeps
//! what supervisord did: the same command, user, directory, environment,
//! umask, restart policy and limits on retries, stop signal and timeout,
//! log rotation. What has no equivalent is said in a comment at the top of
//! the file; what cannot be imported (no `user`, so root; a command that
//! does not parse) is a problem, and that program is left out.
//!
//! Pure but for reading the files and globbing includes; [`Context`]
//! carries what supervisord would take from its own process.

pub mod ini;

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::path::{Path, PathBuf};

use ini::Section;

/// What supervisord takes from its process: `%(ENV_X)s`, the host name,
/// and `PATH` for a command that is not an absolute path.
#[derive(Debug, Clone, Default)]
pub struct Context {
    pub env: BTreeMap<String, String>,
    pub host: String,
}

impl Context {
    /// This process's environment and host name.
    pub fn current() -> Context {
        Context {
            env: std::env::vars().collect(),
            host: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_default(),
        }
    }
}

/// One imported program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedApp {
    pub name: String,
    /// `FILE:LINE [program:x]`.
    pub origin: String,
    /// The apps.d file's text.
    pub toml: String,
}

/// Something that kept a file or a program from being imported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `FILE`, `FILE:LINE` or `FILE:LINE [program:x]`.
    pub origin: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.origin, self.message)
    }
}

#[derive(Debug, Default)]
pub struct Import {
    pub apps: Vec<ImportedApp>,
    pub problems: Vec<Problem>,
}

/// A section with the file it was read from.
struct Found {
    section: Section,
    file: PathBuf,
}

/// Reads `files` and what they include, and converts every program.
pub fn import(files: &[PathBuf], ctx: &Context) -> Import {
    let mut out = Import::default();
    let mut sections: Vec<Found> = Vec::new();
    let mut queue: Vec<PathBuf> = files.to_vec();
    queue.reverse();
    let mut seen: Vec<PathBuf> = Vec::new();
    while let Some(file) = queue.pop() {
        let key = file.canonicalize().unwrap_or_else(|_| file.clone());
        if seen.contains(&key) {
            continue;
        }
        seen.push(key);
        let text = match std::fs::read_to_string(&file) {
            Ok(text) => text,
            Err(e) => {
                out.problems
                    .push(problem(file.display(), format!("cannot read: {e}")));
                continue;
            }
        };
        let parsed = match ini::parse(&text) {
            Ok(parsed) => parsed,
            Err(e) => {
                let origin = format!("{}:{}", file.display(), e.line);
                out.problems.push(problem(origin, e.message));
                continue;
            }
        };
        let here = file.parent().unwrap_or(Path::new(".")).to_owned();
        let mut included = Vec::new();
        for section in parsed {
            if section.name == "include" {
                match includes(&section, &here, ctx) {
                    Ok(files) => included.extend(files),
                    Err(message) => out.problems.push(problem(
                        format!("{}:{} [include]", file.display(), section.line),
                        message,
                    )),
                }
                continue;
            }
            // configparser merges a section read again, from any file.
            match sections.iter_mut().find(|f| f.section.name == section.name) {
                Some(found) => {
                    found.section.options.extend(section.options);
                    found.file.clone_from(&file);
                }
                None => sections.push(Found {
                    section,
                    file: file.clone(),
                }),
            }
        }
        // Included files are read after the one that includes them, in
        // glob order, like supervisord.
        queue.extend(included.into_iter().rev());
    }
    // What supervisord passes on to every program: its own environment
    // and umask.
    let daemon = sections.iter().find(|f| f.section.name == "supervisord");
    let inherited = match daemon.map(|d| inherited(d, ctx)).transpose() {
        Ok(inherited) => inherited.unwrap_or_default(),
        Err(message) => {
            let daemon = daemon.expect("an error comes from a section");
            out.problems.push(problem(
                format!(
                    "{}:{} [supervisord]",
                    daemon.file.display(),
                    daemon.section.line
                ),
                message,
            ));
            return out;
        }
    };
    for found in &sections {
        let origin = format!(
            "{}:{} [{}]",
            found.file.display(),
            found.section.line,
            found.section.name
        );
        let kind = found.section.name.split(':').next().unwrap_or_default();
        match kind {
            "program" => match program(found, &inherited, ctx) {
                Ok(app) => out.apps.push(ImportedApp {
                    name: app.0,
                    origin,
                    toml: app.1,
                }),
                Err(message) => out.problems.push(problem(origin, message)),
            },
            "fcgi-program" | "eventlistener" => out.problems.push(problem(
                origin,
                format!("not imported: appvisor runs no {kind} sections, only programs"),
            )),
            _ => {}
        }
    }
    out
}

fn problem(origin: impl fmt::Display, message: String) -> Problem {
    Problem {
        origin: origin.to_string(),
        message,
    }
}

/// The files an `[include]` names: its `files`, space-separated globs
/// relative to the including file's directory.
fn includes(section: &Section, here: &Path, ctx: &Context) -> Result<Vec<PathBuf>, String> {
    let Some(files) = section.get("files") else {
        return Err("no files = …".to_owned());
    };
    let vars = expansions(ctx, here, None);
    let files = expand(&files.value, &vars).map_err(|e| format!("files: {e}"))?;
    let mut out = Vec::new();
    for pattern in files.split_whitespace() {
        let pattern = here.join(pattern);
        let pattern = pattern.to_string_lossy();
        let mut matched: Vec<PathBuf> = glob::glob(&pattern)
            .map_err(|e| format!("files: {pattern}: {e}"))?
            .filter_map(Result::ok)
            .collect();
        matched.sort();
        out.extend(matched);
    }
    Ok(out)
}

/// `%(name)s` values for a section: supervisord's `here`, `ENV_X`,
/// `host_node_name`, and for a program its name, group and process number.
fn expansions(ctx: &Context, here: &Path, program: Option<&str>) -> BTreeMap<String, String> {
    let mut vars: BTreeMap<String, String> = ctx
        .env
        .iter()
        .map(|(k, v)| (format!("ENV_{k}"), v.clone()))
        .collect();
    vars.insert("here".into(), here.display().to_string());
    vars.insert("host_node_name".into(), ctx.host.clone());
    if let Some(name) = program {
        vars.insert("program_name".into(), name.into());
        vars.insert("group_name".into(), name.into());
        vars.insert("process_num".into(), "0".into());
        vars.insert("numprocs".into(), "1".into());
    }
    vars
}

/// Python's `value % vars` for the forms configs use: `%(name)s`,
/// `%(name)d` with an optional zero-padded width (`%(process_num)02d`),
/// and `%%`.
fn expand(value: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = value;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        rest = &rest[at + 1..];
        if let Some(after) = rest.strip_prefix('%') {
            out.push('%');
            rest = after;
            continue;
        }
        let Some(inner) = rest.strip_prefix('(') else {
            return Err(format!("a '%' in {value:?} that is not %(name)s or %%"));
        };
        let Some(close) = inner.find(')') else {
            return Err(format!("an unclosed %( in {value:?}"));
        };
        let name = &inner[..close];
        let spec_end = inner[close + 1..]
            .find(|c: char| c.is_ascii_alphabetic())
            .ok_or_else(|| format!("%({name}) without a conversion (s or d) in {value:?}"))?;
        let flags = &inner[close + 1..close + 1 + spec_end];
        let conversion = inner[close + 1 + spec_end..].chars().next().unwrap_or('s');
        let Some(var) = vars.get(name) else {
            return Err(format!(
                "%({name}){flags}{conversion} names nothing supervisord knows"
            ));
        };
        match conversion {
            's' | 'r' => out.push_str(var),
            'd' | 'i' => {
                let width: usize = flags.trim_start_matches('0').parse().unwrap_or(0);
                let n: i64 = var
                    .parse()
                    .map_err(|_| format!("%({name}){flags}d of a non-number {var:?}"))?;
                if flags.starts_with('0') {
                    let _ = write!(out, "{n:0width$}");
                } else {
                    let _ = write!(out, "{n:width$}");
                }
            }
            other => {
                return Err(format!(
                    "%({name}){flags}{other}: only s and d are supported"
                ))
            }
        }
        rest = &inner[close + 1 + spec_end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The `[supervisord]` settings every program inherits.
#[derive(Debug, Default)]
struct Inherited {
    environment: Vec<(String, String)>,
    /// supervisord's own umask, 022 unless set.
    umask: Option<String>,
}

fn inherited(daemon: &Found, ctx: &Context) -> Result<Inherited, String> {
    let here = daemon.file.parent().unwrap_or(Path::new("."));
    let vars = expansions(ctx, here, None);
    let environment = match daemon.section.get("environment") {
        Some(o) => {
            let env = expand(&o.value, &vars).map_err(|e| format!("environment: {e}"))?;
            ini::parse_environment(&env).map_err(|e| format!("environment: {e}"))?
        }
        None => Vec::new(),
    };
    Ok(Inherited {
        environment,
        umask: daemon.section.get("umask").map(|o| o.value.clone()),
    })
}

/// Options of a program that map onto appvisor keys, or are dropped on
/// purpose without a note (appvisor always does what they ask for).
const KNOWN: &[&str] = &[
    "command",
    "user",
    "directory",
    "environment",
    "umask",
    "autostart",
    "autorestart",
    "exitcodes",
    "startsecs",
    "startretries",
    "stopsignal",
    "stopwaitsecs",
    "stdout_logfile_maxbytes",
    "stdout_logfile_backups",
    "stdout_logfile",
    "stderr_logfile",
    "redirect_stderr",
    "numprocs",
    "process_name",
    "priority",
    "stopasgroup",
    "killasgroup",
];

/// One `[program:x]` as `(name, toml)`.
fn program(
    found: &Found,
    inherited: &Inherited,
    ctx: &Context,
) -> Result<(String, String), String> {
    let section = &found.section;
    let name = section
        .name
        .strip_prefix("program:")
        .unwrap_or_default()
        .to_owned();
    if appvisor::config::AppName::new(&name).is_none() {
        return Err(format!(
            "{name:?} is not a valid app name ([a-z0-9][a-z0-9_-]{{0,63}}): rename the program and import again"
        ));
    }
    let here = found.file.parent().unwrap_or(Path::new("."));
    let vars = expansions(ctx, here, Some(&name));
    let get = |key: &str| -> Result<Option<String>, String> {
        section
            .get(key)
            .map(|o| expand(&o.value, &vars).map_err(|e| format!("{key} (line {}): {e}", o.line)))
            .transpose()
    };
    let mut notes: Vec<String> = Vec::new();

    let Some(command) = get("command")? else {
        return Err("no command".to_owned());
    };
    let mut argv = ini::split_command(&command)
        .ok_or_else(|| format!("command: no closing quotation in {command:?}"))?;
    if argv.is_empty() {
        return Err("command is empty".to_owned());
    }
    if !argv[0].starts_with('/') {
        match find_in_path(&argv[0], ctx) {
            Some(path) => argv[0] = path,
            None => notes.push(format!(
                "{} is not an absolute path and is not in PATH here: make it one",
                argv[0]
            )),
        }
    }
    let user =
        match get("user")? {
            Some(user) if user != "root" && user != "0" => user,
            _ => return Err(
                "no user (or root): supervisord would run it as root, which appvisor never does; \
                 add user = NAME to the section and import again"
                    .to_owned(),
            ),
        };
    let directory = match get("directory")? {
        Some(dir) => dir,
        None => {
            notes.push(
                "no directory: supervisord ran it in its own working directory; / is assumed"
                    .to_owned(),
            );
            "/".to_owned()
        }
    };
    // supervisord's environment under the program's.
    let mut environment = inherited.environment.clone();
    if let Some(env) = get("environment")? {
        for (key, value) in ini::parse_environment(&env).map_err(|e| format!("environment: {e}"))? {
            environment.retain(|(k, _)| *k != key);
            environment.push((key, value));
        }
    }
    let umask = get("umask")?
        .or_else(|| inherited.umask.clone())
        .unwrap_or_else(|| "022".to_owned());
    let umask = u32::from_str_radix(umask.trim_start_matches("0o"), 8)
        .map(|m| format!("{m:04o}"))
        .map_err(|_| format!("umask: {umask:?} is not an octal number"))?;
    let autostart = get("autostart")?
        .map(|v| boolean("autostart", &v))
        .transpose()?
        .unwrap_or(true);
    let policy = match get("autorestart")?
        .as_deref()
        .map(str::to_lowercase)
        .as_deref()
    {
        None | Some("unexpected") => "on-failure",
        Some(v) => {
            if boolean("autorestart", v)? {
                "always"
            } else {
                "never"
            }
        }
    };
    if let Some(codes) = get("exitcodes")? {
        if codes.replace(' ', "") != "0" {
            notes.push(format!(
                "exitcodes = {codes}: appvisor counts only status 0 as a clean exit"
            ));
        }
    }
    let start_secs = number(&get("startsecs")?, "startsecs", 1)?;
    let start_retries = number(&get("startretries")?, "startretries", 3)?;
    let stop_signal = get("stopsignal")?
        .map(|s| signal_name(&s))
        .transpose()?
        .unwrap_or("TERM");
    let stop_wait = number(&get("stopwaitsecs")?, "stopwaitsecs", 10)?;
    let max_size = match get("stdout_logfile_maxbytes")? {
        Some(size) => match byte_size(&size)? {
            0 => {
                notes.push(
                    "stdout_logfile_maxbytes = 0 (never rotate): appvisor always rotates; 50MiB kept"
                        .to_owned(),
                );
                50 << 20
            }
            n => n,
        },
        None => 50 << 20,
    };
    let keep = number(
        &get("stdout_logfile_backups")?,
        "stdout_logfile_backups",
        10,
    )?;
    if get("redirect_stderr")?
        .map(|v| boolean("redirect_stderr", &v))
        .transpose()?
        == Some(true)
    {
        notes.push("redirect_stderr: appvisor keeps stderr apart, in stderr.log".to_owned());
    }
    for key in ["stdout_logfile", "stderr_logfile"] {
        if let Some(path) = get(key)? {
            if path != "AUTO" {
                notes.push(format!(
                    "{key} = {path}: appvisor writes log_dir/{name}/{}.log",
                    &key[..6]
                ));
            }
        }
    }
    if number(&get("numprocs")?, "numprocs", 1)? > 1 {
        notes.push(
            "numprocs > 1: one instance is imported; let the app server run the workers".to_owned(),
        );
    }
    let mut unknown: Vec<&str> = section
        .options
        .iter()
        .map(|o| o.name.as_str())
        .filter(|k| !KNOWN.contains(k))
        .collect();
    unknown.sort_unstable();
    unknown.dedup();
    if !unknown.is_empty() {
        notes.push(format!(
            "no appvisor equivalent, left out: {}",
            unknown.join(", ")
        ));
    }

    let mut toml = String::new();
    let _ = writeln!(
        toml,
        "# Imported from {}:{} [{}] by appctl import-supervisord.",
        found.file.display(),
        section.line,
        section.name
    );
    for note in &notes {
        let _ = writeln!(toml, "# note: {note}");
    }
    let _ = writeln!(toml, "user = {}", quote(&user));
    let _ = writeln!(
        toml,
        "command = [{}]",
        argv.iter().map(|a| quote(a)).collect::<Vec<_>>().join(", ")
    );
    let _ = writeln!(toml, "directory = {}", quote(&directory));
    if !environment.is_empty() {
        let pairs: Vec<String> = environment
            .iter()
            .map(|(k, v)| format!("{} = {}", key(k), quote(v)))
            .collect();
        let _ = writeln!(toml, "environment = {{ {} }}", pairs.join(", "));
    }
    let _ = writeln!(toml, "umask = {}", quote(&umask));
    let _ = writeln!(toml, "autostart = {autostart}");
    let _ = writeln!(
        toml,
        "\n[readiness]\n# supervisord has no readiness: running once up for start_secs.\nkind = \"none\""
    );
    let _ = writeln!(
        toml,
        "\n[restart]\npolicy = \"{policy}\"\nstart_secs = \"{start_secs}s\"\n\
         # supervisord's startretries = {start_retries}: fatal after {} failed starts in a row.\n\
         max_retries = {}",
        start_retries + 1,
        start_retries + 1
    );
    let _ = writeln!(
        toml,
        "\n[stop]\nsignal = \"{stop_signal}\"\ntimeout = \"{stop_wait}s\""
    );
    let _ = writeln!(
        toml,
        "\n[logs]\nmax_size = \"{}\"\nkeep = {keep}",
        size_text(max_size)
    );
    let _ = writeln!(
        toml,
        "\n# appvisor confines every app (docs/security.md): it may read its directory\n\
         # and its venv and write nothing else. List what it writes, e.g.:\n\
         # [sandbox]\n# read_write = [\"/var/lib/{name}\"]"
    );
    Ok((name, toml))
}

fn find_in_path(program: &str, ctx: &Context) -> Option<String> {
    if program.contains('/') {
        return None;
    }
    let path = ctx.env.get("PATH")?;
    path.split(':')
        .filter(|dir| dir.starts_with('/'))
        .map(|dir| Path::new(dir).join(program))
        .find(|candidate| candidate.is_file())
        .map(|p| p.display().to_string())
}

/// supervisord's booleans: true/yes/on/1 and false/no/off/0.
fn boolean(key: &str, value: &str) -> Result<bool, String> {
    match value.to_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Ok(true),
        "false" | "no" | "off" | "0" => Ok(false),
        _ => Err(format!("{key}: {value:?} is not true or false")),
    }
}

fn number(value: &Option<String>, key: &str, default: u64) -> Result<u64, String> {
    match value {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| format!("{key}: {v:?} is not a whole number")),
    }
}

/// supervisord's `byte_size`: a number with an optional KB, MB or GB
/// (powers of 1024).
fn byte_size(value: &str) -> Result<u64, String> {
    let upper = value.trim().to_uppercase();
    let (digits, factor) = [("GB", 1u64 << 30), ("MB", 1 << 20), ("KB", 1 << 10)]
        .into_iter()
        .find_map(|(suffix, factor)| upper.strip_suffix(suffix).map(|d| (d, factor)))
        .unwrap_or((upper.as_str(), 1));
    digits
        .trim()
        .parse::<u64>()
        .map(|n| n * factor)
        .map_err(|_| format!("{value:?} is not a size like 50MB"))
}

fn size_text(bytes: u64) -> String {
    for (unit, factor) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if bytes % factor == 0 {
            return format!("{}{unit}", bytes / factor);
        }
    }
    format!("{bytes}B")
}

/// supervisord's stop signals, as appvisor names them.
fn signal_name(value: &str) -> Result<&'static str, String> {
    let upper = value.trim().to_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    ["TERM", "HUP", "INT", "QUIT", "KILL", "USR1", "USR2"]
        .into_iter()
        .find(|s| *s == name)
        .ok_or_else(|| {
            format!("stopsignal: {value:?} is not TERM, HUP, INT, QUIT, KILL, USR1 or USR2")
        })
}

/// A TOML string.
fn quote(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
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

#[cfg(test)]
mod tests;
