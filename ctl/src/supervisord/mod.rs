//! `appctl import-supervisord FILE...`: the programs of supervisord
//! configs as apps.d files that run the way supervisord ran them, each
//! FILE read the way supervisord 4 reads its `-c` file:
//!
//! 1. the file, then (only its own) `[include] files`, globs relative to
//!    its directory, in sorted order; `%(here)s` is the absolute directory
//!    of the file a value was read from;
//! 2. `[supervisord]`: its `environment` goes under every program's, its
//!    `user` is the user of programs without one (supervisord switched to
//!    it), its `umask` and `directory` are the programs' own when
//!    supervisord daemonized (`nodaemon` false), as it set them then;
//! 3. `[group:x] programs` name the groups; every other program is a group
//!    of its own;
//! 4. each `[program:x]` is `numprocs` processes (from `numprocs_start`),
//!    each named by `process_name` and expanded with its `process_num`:
//!    one app each, in app_groups of its group (and of the program, when
//!    it has several processes), for `appctl restart group:NAME`.
//!
//! What supervisord did that appvisor does differently is a note at the
//! top of the file (and ports, wrappers and uWSGI's stop signal are
//! converted: [`crate::servers`]); what cannot be imported (root, a
//! command that does not parse) is a problem, and that program is left
//! out.
//!
//! Pure but for reading the files, globbing includes and looking bare
//! commands up; [`Context`] carries what supervisord would take from its
//! own process.

mod error;
pub mod ini;

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use error::{ExpandError, ImportError};
use ini::Section;

use crate::appfile::{self, AppFile, Restart};
use crate::servers::{self, Server};

/// `PATH` of supervisord started by systemd or Debian's init script,
/// where a bare command is looked up when neither the program nor
/// `[supervisord]` sets one: not the importing shell's, whose pyenv or
/// venv shims supervisord never saw.
pub const SERVICE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What every app's environment lacked under appvisor that supervisord
/// passed on: said once per file.
const INHERITED_ENV_NOTE: &str = "supervisord passed its own environment (from systemd or its \
     init script) and SUPERVISOR_* on; appvisor passes only HOME, USER, LOGNAME, SHELL, PATH, LANG \
     and environment below";

/// What supervisord takes from its process: `%(ENV_X)s` and the host name.
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

/// Something that kept a file or a program from being imported, or that
/// is worth a warning.
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
    pub apps: Vec<AppFile>,
    /// Programs or files not imported.
    pub problems: Vec<Problem>,
    /// Worth saying, but nothing was lost (an include matching no file).
    pub warnings: Vec<Problem>,
}

/// A section with the file it was read from.
struct Found {
    section: Section,
    file: PathBuf,
}

/// Reads every FILE as supervisord's own config and converts its programs.
pub fn import(files: &[PathBuf], ctx: &Context) -> Import {
    let mut out = Import::default();
    for file in files {
        import_one(file, ctx, &mut out);
    }
    // Two programs (or a rename) may give the same app name.
    let mut seen: Vec<String> = Vec::new();
    let mut apps = Vec::new();
    for app in std::mem::take(&mut out.apps) {
        if seen.contains(&app.name) {
            out.problems.push(problem(
                &app.origin,
                format!(
                    "an app named {} was imported already: rename this one",
                    app.name
                ),
            ));
        } else {
            seen.push(app.name.clone());
            apps.push(app);
        }
    }
    out.apps = apps;
    out
}

fn read(file: &Path, out: &mut Import) -> Option<Vec<Section>> {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) => {
            out.problems
                .push(problem(file.display(), format!("cannot read: {e}")));
            return None;
        }
    };
    match ini::parse(&text) {
        Ok(parsed) => Some(parsed),
        Err(e) => {
            out.problems
                .push(problem(format!("{}:{}", file.display(), e.line), e.message));
            None
        }
    }
}

fn import_one(main: &Path, ctx: &Context, out: &mut Import) {
    let main = std::path::absolute(main).unwrap_or_else(|_| main.to_owned());
    let Some(parsed) = read(&main, out) else {
        return;
    };
    let here = main.parent().unwrap_or(Path::new("/")).to_owned();
    let mut sections: Vec<Found> = Vec::new();
    let mut include: Option<Section> = None;
    merge(&mut sections, parsed, &main, &mut include);
    // supervisord reads the [include] of its -c file only: one in an
    // included file is merged into it after it was read, and so ignored.
    if let Some(include) = include {
        let origin = format!("{}:{} [include]", main.display(), include.line);
        match includes(&include, &here, ctx) {
            Ok((files, unmatched)) => {
                for pattern in unmatched {
                    out.warnings
                        .push(problem(&origin, format!("no file matches {pattern}")));
                }
                for file in files {
                    let Some(parsed) = read(&file, out) else {
                        continue;
                    };
                    let mut nested = None;
                    merge(&mut sections, parsed, &file, &mut nested);
                    if let Some(nested) = nested {
                        out.warnings.push(problem(
                            format!("{}:{} [include]", file.display(), nested.line),
                            "ignored, as supervisord ignores an [include] in an included file"
                                .to_owned(),
                        ));
                    }
                }
            }
            Err(error) => out.problems.push(problem(origin, error.to_string())),
        }
    }
    let daemon = sections.iter().find(|f| f.section.name == "supervisord");
    let inherited = match daemon.map(|d| inherited(d, ctx)).transpose() {
        Ok(inherited) => inherited.unwrap_or_default(),
        Err(error) => {
            let daemon = daemon.expect("an error comes from a section");
            out.problems.push(problem(
                format!(
                    "{}:{} [supervisord]",
                    daemon.file.display(),
                    daemon.section.line
                ),
                error.to_string(),
            ));
            return;
        }
    };
    // [group:x] programs = a,b: the group of each.
    let mut group_of: BTreeMap<String, String> = BTreeMap::new();
    for found in &sections {
        if let Some(group) = found.section.name.strip_prefix("group:") {
            if let Some(programs) = found.section.get("programs") {
                for program in programs
                    .value
                    .split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                {
                    group_of.insert(program.to_owned(), group.to_owned());
                }
            }
        }
    }
    for found in &sections {
        let origin = format!(
            "{}:{} [{}]",
            found.file.display(),
            found.section.line,
            found.section.name
        );
        let kind = found.section.name.split(':').next().unwrap_or_default();
        match kind {
            "program" => {
                let name = found.section.name["program:".len()..].to_owned();
                let group = group_of.get(&name).cloned();
                match program(found, &name, group, &inherited, ctx) {
                    Ok(apps) => out.apps.extend(apps),
                    Err(error) => out.problems.push(problem(origin, error.to_string())),
                }
            }
            "fcgi-program" | "eventlistener" => out.problems.push(problem(
                origin,
                format!("not imported: appvisor runs no {kind} sections, only programs"),
            )),
            _ => {}
        }
    }
}

/// Adds `parsed` to `sections`, merging a section read again as
/// configparser does; the `[include]` goes to `include`.
fn merge(
    sections: &mut Vec<Found>,
    parsed: Vec<Section>,
    file: &Path,
    include: &mut Option<Section>,
) {
    for section in parsed {
        if section.name == "include" {
            *include = Some(section);
            continue;
        }
        match sections.iter_mut().find(|f| f.section.name == section.name) {
            Some(found) => {
                found.section.options.extend(section.options);
                file.clone_into(&mut found.file);
            }
            None => sections.push(Found {
                section,
                file: file.to_owned(),
            }),
        }
    }
}

fn problem(origin: impl fmt::Display, message: String) -> Problem {
    Problem {
        origin: origin.to_string(),
        message,
    }
}

/// The files an `[include]` names, and the patterns that match none: its
/// `files`, space-separated globs relative to the including file's
/// directory.
fn includes(
    section: &Section,
    here: &Path,
    ctx: &Context,
) -> Result<(Vec<PathBuf>, Vec<String>), ImportError> {
    let Some(files) = section.get("files") else {
        return Err(ImportError::NoIncludeFiles);
    };
    let vars = expansions(ctx, here, None);
    let files = expand(&files.value, &vars).map_err(|e| keyed("files", None, e))?;
    let mut out = Vec::new();
    let mut unmatched = Vec::new();
    for pattern in files.split_whitespace() {
        let pattern = here.join(pattern);
        let pattern = pattern.to_string_lossy();
        let mut matched: Vec<PathBuf> = glob::glob(&pattern)
            .map_err(|source| ImportError::Glob {
                pattern: pattern.clone().into_owned(),
                source,
            })?
            .filter_map(Result::ok)
            .collect();
        if matched.is_empty() {
            unmatched.push(pattern.into_owned());
        }
        matched.sort();
        out.extend(matched);
    }
    Ok((out, unmatched))
}

/// `%(name)s` values for a section: supervisord's `here`, `ENV_X`,
/// `host_node_name`, and for a program its name, group and process.
fn expansions(ctx: &Context, here: &Path, process: Option<&Process>) -> BTreeMap<String, String> {
    let mut vars: BTreeMap<String, String> = ctx
        .env
        .iter()
        .map(|(k, v)| (format!("ENV_{k}"), v.clone()))
        .collect();
    vars.insert("here".into(), here.display().to_string());
    vars.insert("host_node_name".into(), ctx.host.clone());
    if let Some(p) = process {
        vars.insert("program_name".into(), p.program.clone());
        vars.insert("group_name".into(), p.group.clone());
        vars.insert("process_num".into(), p.num.to_string());
        vars.insert("numprocs".into(), p.numprocs.to_string());
    }
    vars
}

/// One process of a program.
struct Process {
    program: String,
    group: String,
    num: u64,
    numprocs: u64,
}

/// Python's `value % vars` for the forms configs use: `%(name)s`,
/// `%(name)d` with an optional zero-padded width (`%(process_num)02d`),
/// and `%%`.
fn expand(value: &str, vars: &BTreeMap<String, String>) -> Result<String, ExpandError> {
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
            return Err(ExpandError::Stray {
                value: value.to_owned(),
            });
        };
        let Some(close) = inner.find(')') else {
            return Err(ExpandError::Unclosed {
                value: value.to_owned(),
            });
        };
        let name = &inner[..close];
        let spec_end = inner[close + 1..]
            .find(|c: char| c.is_ascii_alphabetic())
            .ok_or_else(|| ExpandError::NoConversion {
                name: name.to_owned(),
                value: value.to_owned(),
            })?;
        let flags = &inner[close + 1..close + 1 + spec_end];
        let conversion = inner[close + 1 + spec_end..].chars().next().unwrap_or('s');
        let Some(var) = vars.get(name) else {
            return Err(ExpandError::Unknown {
                name: name.to_owned(),
                flags: flags.to_owned(),
                conversion,
            });
        };
        match conversion {
            's' | 'r' => out.push_str(var),
            'd' | 'i' => {
                let width: usize = flags.trim_start_matches('0').parse().unwrap_or(0);
                let n: i64 = var.parse().map_err(|_| ExpandError::NotANumber {
                    name: name.to_owned(),
                    flags: flags.to_owned(),
                    var: var.clone(),
                })?;
                if flags.starts_with('0') {
                    let _ = write!(out, "{n:0width$}");
                } else {
                    let _ = write!(out, "{n:width$}");
                }
            }
            other => {
                return Err(ExpandError::Conversion {
                    name: name.to_owned(),
                    flags: flags.to_owned(),
                    conversion: other,
                })
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
    /// supervisord's own user, which it switched to at start.
    user: Option<String>,
    /// The umask and directory supervisord set when it daemonized.
    umask: Option<String>,
    directory: Option<String>,
    /// What `umask` or `directory` did not do because of `nodaemon`.
    notes: Vec<String>,
}

fn inherited(daemon: &Found, ctx: &Context) -> Result<Inherited, ImportError> {
    let here = daemon.file.parent().unwrap_or(Path::new("/"));
    let vars = expansions(ctx, here, None);
    let get = |key: &str| -> Result<Option<String>, ImportError> {
        daemon
            .section
            .get(key)
            .map(|o| expand(&o.value, &vars).map_err(|e| keyed(key, None, e)))
            .transpose()
    };
    let environment = match get("environment")? {
        Some(env) => ini::parse_environment(&env)?,
        None => Vec::new(),
    };
    let nodaemon = get("nodaemon")?
        .map(|v| boolean("nodaemon", &v))
        .transpose()?
        .unwrap_or(false);
    let mut inherited = Inherited {
        environment,
        user: get("user")?,
        ..Inherited::default()
    };
    let (umask, directory) = (get("umask")?, get("directory")?);
    if nodaemon {
        for (key, value) in [("umask", &umask), ("directory", &directory)] {
            if let Some(value) = value {
                inherited.notes.push(format!(
                    "[supervisord] {key} = {value} was not used: supervisord sets it only when it \
                     daemonizes, and nodaemon = true"
                ));
            }
        }
    } else {
        inherited.umask = Some(umask.unwrap_or_else(|| "022".to_owned()));
        inherited.directory = directory;
    }
    Ok(inherited)
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
    "numprocs_start",
    "process_name",
    "stopasgroup",
    "killasgroup",
];

/// Commands that run another program: the venv of the program they run is
/// the app's `venv`, since `command[0]`'s is not it.
const WRAPPERS: &[&str] = &[
    "sh",
    "bash",
    "dash",
    "zsh",
    "env",
    "nice",
    "ionice",
    "nohup",
    "setsid",
    "stdbuf",
    "timeout",
    "chpst",
    "watchmedo",
    "newrelic-admin",
    "ddtrace-run",
    "dumb-init",
    "tini",
];

/// One `[program:x]` as one app per process.
fn program(
    found: &Found,
    name: &str,
    group: Option<String>,
    inherited: &Inherited,
    ctx: &Context,
) -> Result<Vec<AppFile>, ImportError> {
    let section = &found.section;
    let here = found.file.parent().unwrap_or(Path::new("/"));
    let common = expansions(ctx, here, None);
    let get_common = |key: &str| -> Result<Option<String>, ImportError> {
        section
            .get(key)
            .map(|o| expand(&o.value, &common).map_err(|e| keyed(key, Some(o.line), e)))
            .transpose()
    };
    let numprocs = number(&get_common("numprocs")?, "numprocs", 1)?;
    let numprocs_start = number(&get_common("numprocs_start")?, "numprocs_start", 0)?;
    let process_name = section
        .get("process_name")
        .map_or_else(|| "%(program_name)s".to_owned(), |o| o.value.clone());
    if numprocs > 1 && !process_name.contains("%(process_num)") {
        return Err(ImportError::NoProcessNum);
    }
    let group_name = group.clone().unwrap_or_else(|| name.to_owned());
    let mut app_groups: Vec<String> = Vec::new();
    for g in [group.as_deref(), (numprocs > 1).then_some(name)]
        .into_iter()
        .flatten()
    {
        let mapped = appfile::app_name_from(g).ok_or_else(|| ImportError::GroupName {
            group: g.to_owned(),
        })?;
        if !app_groups.contains(&mapped) {
            app_groups.push(mapped);
        }
    }
    let mut apps = Vec::new();
    for num in numprocs_start..numprocs_start + numprocs {
        let process = Process {
            program: name.to_owned(),
            group: group_name.clone(),
            num,
            numprocs,
        };
        let mut app = process_app(found, &process, &process_name, inherited, ctx)?;
        app.app_groups.clone_from(&app_groups);
        apps.push(app);
    }
    Ok(apps)
}

/// One process of a program as an app.
fn process_app(
    found: &Found,
    process: &Process,
    process_name: &str,
    inherited: &Inherited,
    ctx: &Context,
) -> Result<AppFile, ImportError> {
    let section = &found.section;
    let here = found.file.parent().unwrap_or(Path::new("/"));
    let mut vars = expansions(ctx, here, Some(process));
    let mut notes: Vec<String> = inherited.notes.clone();

    // %(ENV_X)s is read from supervisord's environment, which the importer
    // is not: say which values came from this shell. The program's and
    // [supervisord]'s own environment are known, and not this shell's.
    let own_env: Vec<&str> = inherited
        .environment
        .iter()
        .map(|(k, _)| k.as_str())
        .collect();
    let mut from_shell: Vec<String> = Vec::new();
    for option in &section.options {
        let mut rest = option.value.as_str();
        while let Some(at) = rest.find("%(ENV_") {
            rest = &rest[at + 6..];
            let var = rest.split(')').next().unwrap_or_default();
            if !own_env.contains(&var) && !from_shell.iter().any(|v| v == var) {
                from_shell.push(var.to_owned());
            }
        }
    }
    for (k, v) in &inherited.environment {
        vars.insert(format!("ENV_{k}"), v.clone());
    }

    let get = |key: &str, vars: &BTreeMap<String, String>| -> Result<Option<String>, ImportError> {
        section
            .get(key)
            .map(|o| expand(&o.value, vars).map_err(|e| keyed(key, Some(o.line), e)))
            .transpose()
    };
    let raw_name = expand(process_name, &vars).map_err(|e| keyed("process_name", None, e))?;
    let name = appfile::app_name_from(&raw_name).ok_or_else(|| ImportError::AppName {
        name: raw_name.clone(),
    })?;
    if name != raw_name {
        notes.push(format!("named {name}: supervisord called it {raw_name}"));
    }

    // The program's environment over supervisord's; its keys are ENV_
    // names for what follows, as supervisord expands them.
    let mut environment = inherited.environment.clone();
    if let Some(env) = get("environment", &vars)? {
        for (key, value) in ini::parse_environment(&env)? {
            vars.insert(format!("ENV_{key}"), value.clone());
            from_shell.retain(|v| *v != key);
            environment.retain(|(k, _)| *k != key);
            environment.push((key, value));
        }
    }
    for var in &from_shell {
        let value = ctx.env.get(var).map_or("unset", String::as_str);
        notes.push(format!(
            "%(ENV_{var})s is {value:?} from this shell's environment: supervisord read its own"
        ));
    }
    notes.push(INHERITED_ENV_NOTE.to_owned());

    let Some(command) = get("command", &vars)? else {
        return Err(ImportError::NoCommand);
    };
    let mut argv = ini::split_command(&command).ok_or_else(|| ImportError::UnclosedCommand {
        command: command.clone(),
    })?;
    if argv.is_empty() {
        return Err(ImportError::EmptyCommand);
    }
    // supervisord looks a bare command up in the program's PATH, else
    // [supervisord]'s, else its own process's.
    let search = environment
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map_or(SERVICE_PATH, |(_, v)| v.as_str());
    if !argv[0].contains('/') {
        match find_in_path(&argv[0], search) {
            Some(path) => {
                if let Some(owner) = not_root_owned(Path::new(&path)) {
                    notes.push(format!(
                        "{} is {path}, in a directory {owner}: whoever can write there \
                         chooses what the app runs",
                        argv[0]
                    ));
                }
                argv[0] = path;
            }
            None => notes.push(format!(
                "{} is not found in PATH {search}: supervisord would not have started it either; \
                 give its absolute path",
                argv[0]
            )),
        }
    }

    let user = match get("user", &vars)?.or_else(|| inherited.user.clone()) {
        Some(user) if user != "root" && user != "0" => user,
        _ => return Err(ImportError::Root),
    };
    if let (Some(own), Some(daemon)) = (section.get("user"), &inherited.user) {
        if own.value != *daemon && daemon != "root" {
            notes.push(format!(
                "supervisord ran as {daemon} and could not switch to user {}: it never started \
                 this program",
                own.value
            ));
        }
    }
    let directory = match get("directory", &vars)?.or_else(|| inherited.directory.clone()) {
        Some(dir) => dir,
        None => {
            notes.push(
                "no directory: supervisord ran it in its own working directory; / is assumed"
                    .to_owned(),
            );
            "/".to_owned()
        }
    };
    let umask = match get("umask", &vars)?.or_else(|| inherited.umask.clone()) {
        Some(umask) => umask,
        None => "022".to_owned(),
    };
    let umask = u32::from_str_radix(umask.trim_start_matches("0o"), 8)
        .map(|m| format!("{m:04o}"))
        .map_err(|_| ImportError::Umask {
            umask: umask.clone(),
        })?;
    let autostart = get("autostart", &vars)?
        .map(|v| boolean("autostart", &v))
        .transpose()?
        .unwrap_or(true);
    let policy = match get("autorestart", &vars)?
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
    if let Some(codes) = get("exitcodes", &vars)? {
        if codes.replace(' ', "") != "0" {
            notes.push(format!(
                "exitcodes = {codes}: appvisor counts only status 0 as a clean exit"
            ));
        }
    }
    let start_secs = number(&get("startsecs", &vars)?, "startsecs", 1)?;
    let start_retries = number(&get("startretries", &vars)?, "startretries", 3)?;
    let mut stop_signal = get("stopsignal", &vars)?
        .map(|s| signal_name(&s))
        .transpose()?
        .unwrap_or("TERM");
    let stop_wait = number(&get("stopwaitsecs", &vars)?, "stopwaitsecs", 10)?;
    let max_size = match get("stdout_logfile_maxbytes", &vars)? {
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
        &get("stdout_logfile_backups", &vars)?,
        "stdout_logfile_backups",
        10,
    )?;
    if get("redirect_stderr", &vars)?
        .map(|v| boolean("redirect_stderr", &v))
        .transpose()?
        == Some(true)
    {
        notes.push("redirect_stderr: appvisor keeps stderr apart, in stderr.log".to_owned());
    }
    for key in ["stdout_logfile", "stderr_logfile"] {
        if let Some(path) = get(key, &vars)? {
            if path != "AUTO" {
                notes.push(format!(
                    "{key} = {path}: appvisor writes log_dir/{name}/{}.log",
                    &key[..6]
                ));
            }
        }
    }
    if let Some(priority) = get("priority", &vars)? {
        notes.push(format!(
            "priority = {priority}: appvisor starts and stops apps all at once, in no order"
        ));
    }
    let mut unknown: Vec<&str> = section
        .options
        .iter()
        .map(|o| o.name.as_str())
        .filter(|k| !KNOWN.contains(k) && *k != "priority")
        .collect();
    unknown.sort_unstable();
    unknown.dedup();
    if !unknown.is_empty() {
        notes.push(format!(
            "no appvisor equivalent, left out: {}",
            unknown.join(", ")
        ));
    }

    // Servers that bound their own port get held sockets.
    let config = config_binds(&argv, &directory);
    let moved = servers::move_to_held_sockets(&argv, config.as_ref());
    notes.extend(moved.notes.iter().cloned());
    let argv = moved.command;
    let script_words = servers::shell_script(&argv)
        .and_then(ini::split_command)
        .unwrap_or_default();
    let runs_uwsgi = moved.server == Some(Server::Uwsgi);
    if runs_uwsgi && stop_signal == "TERM" {
        let all_words: Vec<String> = argv.iter().chain(&script_words).cloned().collect();
        if !all_words.iter().any(|w| w == "--die-on-term")
            && !appvisor_config::uwsgi::stops_gracefully_on_term(&all_words)
        {
            stop_signal = "INT";
            notes.push(
                "stop signal INT, not supervisord's TERM: uWSGI reloads on TERM, so every stop \
                 ran into the kill timeout"
                    .to_owned(),
            );
        }
    }
    // A wrapper's venv is the venv of the program it runs.
    let command0 = argv[0].rsplit('/').next().unwrap_or_default();
    let venv = (WRAPPERS.contains(&command0) || venv_of(&argv[0]).is_none())
        .then(|| {
            argv.iter()
                .skip(1)
                .chain(&script_words)
                .filter(|w| w.starts_with('/'))
                .find_map(|w| venv_of(w))
                .or_else(|| {
                    // PATH=/srv/x/venv/bin:... in the program's environment.
                    search.split(':').find_map(|dir| {
                        venv_of(&format!("{dir}/x"))
                            .filter(|v| Path::new(v).join("pyvenv.cfg").is_file())
                    })
                })
        })
        .flatten();
    if let Some(venv) = &venv {
        notes.push(format!(
            "{command0} runs a program of {venv}: venv = {venv} grants it read and execute"
        ));
    }
    let readiness = match moved.server {
        Some(server) if server.notifies() && !moved.listen.is_empty() => "notify",
        _ => "none",
    };

    Ok(AppFile {
        name,
        origin: format!(
            "{}:{} [{}]",
            found.file.display(),
            section.line,
            section.name
        ),
        importer: "import-supervisord",
        notes,
        user,
        group: None,
        app_groups: Vec::new(),
        command: argv,
        directory,
        venv,
        environment,
        umask: Some(umask),
        autostart,
        listen: moved.listen,
        readiness,
        restart: Some(Restart {
            policy,
            start_secs,
            start_retries: Some(start_retries),
        }),
        stop_signal: stop_signal.to_owned(),
        stop_timeout_secs: Some(stop_wait),
        logs: Some((max_size, keep)),
        bind_ports: moved.bind_ports,
    })
}

/// The binds in the config file the server of `argv` reads (gunicorn's
/// `-c`, uWSGI's `--ini`), a relative one from the program's `directory`.
fn config_binds(argv: &[String], directory: &str) -> Option<servers::ConfigBinds> {
    use std::io::Read as _;
    let file = servers::config_file(argv)?;
    let path = Path::new(directory).join(&file.path);
    if file.optional && !path.is_file() {
        return None;
    }
    // A config file is small; a bigger one is not what it seems.
    let mut text = String::new();
    let read = std::fs::File::open(&path)
        .and_then(|f| f.take(CONFIG_FILE_MAX).read_to_string(&mut text))
        .map_err(|e| e.to_string())
        .and_then(|n| {
            if n as u64 == CONFIG_FILE_MAX {
                Err(format!("larger than {CONFIG_FILE_MAX} bytes"))
            } else {
                Ok(())
            }
        });
    Some(servers::ConfigBinds {
        file: path.display().to_string(),
        binds: read.and_then(|()| servers::binds_in_config(file.server, &text)),
    })
}

/// How much of a server's config file the importer reads.
const CONFIG_FILE_MAX: u64 = 1 << 20;

/// The venv of a program path, as appvisord finds it ([`appvisor_config::venv_of`]).
fn venv_of(program: &str) -> Option<String> {
    appvisor_config::venv_of(Path::new(program)).map(|v| v.display().to_string())
}

/// The first executable file named `program` in `path`'s absolute
/// directories.
fn find_in_path(program: &str, path: &str) -> Option<String> {
    path.split(':')
        .filter(|dir| dir.starts_with('/'))
        .map(|dir| Path::new(dir).join(program))
        .find(|candidate| {
            candidate
                .metadata()
                .is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0)
        })
        .map(|p| p.display().to_string())
}

/// Why `path` is not safe from everyone but root: the first of it and its
/// directories that is not root's or that others may write.
fn not_root_owned(path: &Path) -> Option<String> {
    for p in path.ancestors() {
        let Ok(meta) = p.metadata() else {
            return Some(format!("{} cannot be read", p.display()));
        };
        if meta.uid() != 0 {
            return Some(format!("owned by uid {} ({})", meta.uid(), p.display()));
        }
        if meta.mode() & 0o022 != 0 && meta.mode() & 0o1000 == 0 {
            return Some(format!("that others may write ({})", p.display()));
        }
    }
    None
}

/// An option's value that does not expand, naming the option (and its
/// line, where the report's origin is the section's).
fn keyed(key: &str, line: Option<usize>, source: ExpandError) -> ImportError {
    ImportError::Expand {
        key: key.to_owned(),
        line,
        source,
    }
}

/// supervisord's booleans: true/yes/on/1 and false/no/off/0.
fn boolean(key: &str, value: &str) -> Result<bool, ImportError> {
    match value.to_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Ok(true),
        "false" | "no" | "off" | "0" => Ok(false),
        _ => Err(ImportError::Boolean {
            key: key.to_owned(),
            value: value.to_owned(),
        }),
    }
}

fn number(value: &Option<String>, key: &str, default: u64) -> Result<u64, ImportError> {
    match value {
        None => Ok(default),
        Some(v) => v.trim().parse().map_err(|_| ImportError::Number {
            key: key.to_owned(),
            value: v.clone(),
        }),
    }
}

/// supervisord's `byte_size`: a number with an optional KB, MB or GB
/// (powers of 1024).
fn byte_size(value: &str) -> Result<u64, ImportError> {
    let upper = value.trim().to_uppercase();
    let (digits, factor) = [("GB", 1u64 << 30), ("MB", 1 << 20), ("KB", 1 << 10)]
        .into_iter()
        .find_map(|(suffix, factor)| upper.strip_suffix(suffix).map(|d| (d, factor)))
        .unwrap_or((upper.as_str(), 1));
    digits
        .trim()
        .parse::<u64>()
        .map(|n| n * factor)
        .map_err(|_| ImportError::Size {
            value: value.to_owned(),
        })
}

/// supervisord's stop signals, as appvisor names them.
fn signal_name(value: &str) -> Result<&'static str, ImportError> {
    let upper = value.trim().to_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    ["TERM", "HUP", "INT", "QUIT", "KILL", "USR1", "USR2"]
        .into_iter()
        .find(|s| *s == name)
        .ok_or_else(|| ImportError::Signal {
            value: value.to_owned(),
        })
}

#[cfg(test)]
mod tests;
