//! Recognising uWSGI in an app's `command`, from the command's words alone.
//!
//! uWSGI 2.0 treats SIGTERM as "reload", so an app that runs it gets `INT`
//! as its default stop signal, unless its arguments bind TERM to a graceful
//! stop ([`GRACEFUL_TERM_HOOK`]); and uWSGI takes every inherited LISTEN_FDS
//! socket as a *uwsgi-protocol* socket unless an `fd://N` socket option
//! says otherwise, so `check` warns when one is missing. Both decisions
//! are made here, from the configuration only: never from a file the app's
//! owner controls (a wrapper script's text can change with every deploy,
//! without the daemon seeing a change, and is hostile input to root).
//!
//! The rule, in order (docs/servers.md repeats it):
//!
//! 1. A program whose file name starts with `uwsgi` is uWSGI (`uwsgi`,
//!    Debian's `uwsgi_python3`, a wrapper named `uwsgi-shop`).
//! 2. `env [OPTION]... [NAME=VALUE]... PROGRAM ARG...` runs PROGRAM: the
//!    rule applies to it.
//! 3. A shell (`sh`, `bash`, `dash`, `ash`, `ksh`, `mksh`, `zsh`) with `-c
//!    SCRIPT` runs uWSGI when a simple command of SCRIPT does: its first
//!    word, after `NAME=VALUE` assignments and the words `exec`, `command`,
//!    `nohup` and `env` (with rule 2's options), is uWSGI by rule 1, e.g.
//!    `cd /srv/shop/current && exec uwsgi --ini uwsgi.ini`. The script is
//!    split into words the way sh does for quotes, backslashes and the
//!    operators `; & | ( ) { }` and newlines; expansions are not expanded,
//!    so `"$VENV"/bin/uwsgi` is the word `$VENV/bin/uwsgi`, file name
//!    `uwsgi`.
//!
//! Anything else, a script run directly included, is not recognised: give
//! it `[stop] signal = "INT"`, or name it `uwsgi-…`. `appctl check`, a
//! separate process run by configuration management, does read such a
//! script (bounded, see `check`) and warns with [`script_uwsgi_args`].

use std::collections::BTreeMap;
use std::path::Path;

/// Shells whose `-c SCRIPT` is read for rule 3.
const SHELLS: [&str; 7] = ["sh", "bash", "dash", "ash", "ksh", "mksh", "zsh"];

/// Options of uWSGI that load a configuration file (which may well name
/// the `fd://` sockets), and the extensions uWSGI loads as one when given
/// as a bare argument.
const CONFIG_OPTIONS: [&str; 9] = [
    "--ini",
    "--yaml",
    "--yml",
    "--json",
    "--js",
    "--xml",
    "--sqlite3",
    "--ldap",
    "--config",
];
const CONFIG_EXTENSIONS: [&str; 6] = ["ini", "yaml", "yml", "json", "js", "xml"];

/// The arguments uWSGI gets, when `command` runs uWSGI by the module's
/// rule; `None` otherwise.
pub fn uwsgi_args(command: &[String]) -> Option<Vec<String>> {
    let words: Vec<&str> = command.iter().map(String::as_str).collect();
    program_args(&words)
}

/// Whether `command` runs uWSGI (the module's rule).
pub fn runs_uwsgi(command: &[String]) -> bool {
    uwsgi_args(command).is_some()
}

/// Whether uWSGI's argument `arg` loads a configuration file, which may
/// set any option the command line does not show.
fn loads_config(arg: &str) -> bool {
    let option = arg.split_once('=').map_or(arg, |(option, _)| option);
    CONFIG_OPTIONS.contains(&option)
        || (!arg.starts_with('-')
            && Path::new(arg)
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| CONFIG_EXTENSIONS.contains(&e)))
}

/// Whether a stop with `signal` cuts the requests in flight of the uWSGI
/// that `command` runs: INT and QUIT kill its workers at once, and nothing
/// in its arguments (the [`GRACEFUL_TERM_HOOK`], a configuration file that
/// may hold it) says otherwise. `false` when `command` does not run uWSGI.
pub fn stop_cuts_requests(command: &[String], signal: nix::sys::signal::Signal) -> bool {
    use nix::sys::signal::Signal::{SIGINT, SIGQUIT};
    let Some(args) = uwsgi_args(command) else {
        return false;
    };
    matches!(signal, SIGINT | SIGQUIT)
        && !stops_gracefully_on_term(&args)
        && !args.iter().any(|arg| loads_config(arg))
}

/// The `--hook-master-start` action that makes uWSGI 2.0 stop gracefully
/// on TERM: the master asks each worker to finish the request it is
/// answering and exit (as on a reload), then exits itself, where INT and
/// QUIT kill the workers at once.
pub const GRACEFUL_TERM_HOOK: &str = "unix_signal:15 gracefully_kill_them_all";

/// Whether uWSGI's `args` bind TERM to a graceful stop with
/// [`GRACEFUL_TERM_HOOK`], as `--hook-master-start ACTION` or
/// `--hook-master-start=ACTION`: TERM is then the signal to stop it with.
pub fn stops_gracefully_on_term(args: &[String]) -> bool {
    let is_hook = |action: &str| {
        action
            .split_whitespace()
            .eq(GRACEFUL_TERM_HOOK.split_whitespace())
    };
    args.iter()
        .enumerate()
        .any(|(i, arg)| match arg.strip_prefix("--hook-master-start") {
            Some("") => args.get(i + 1).is_some_and(|action| is_hook(action)),
            Some(rest) => rest.strip_prefix('=').is_some_and(is_hook),
            None => false,
        })
}

fn file_name(word: &str) -> &str {
    Path::new(word)
        .file_name()
        .and_then(|name| name.to_str())
        .unwrap_or(word)
}

/// Rules 1 to 3 for `words[0]` and its arguments.
fn program_args(words: &[&str]) -> Option<Vec<String>> {
    let (program, args) = words.split_first()?;
    let name = file_name(program);
    if name.starts_with("uwsgi") {
        return Some(args.iter().map(|a| (*a).to_owned()).collect());
    }
    if name == "env" {
        return program_args(skip_env(args));
    }
    if SHELLS.contains(&name) {
        return shell_script(args).and_then(|script| script_args(&script));
    }
    None
}

/// `env`'s arguments after its options and assignments: the command.
fn skip_env<'a, 'w>(args: &'a [&'w str]) -> &'a [&'w str] {
    let mut i = 0;
    while let Some(word) = args.get(i) {
        match *word {
            "--" => return &args[i + 1..],
            // Options that take the next word as their value.
            "-u" | "-C" | "--unset" | "--chdir" => i += 2,
            w if w.starts_with('-') => i += 1,
            w if is_assignment(w) => i += 1,
            _ => break,
        }
    }
    args.get(i..).unwrap_or_default()
}

/// `NAME=VALUE`, NAME a shell variable name.
fn is_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(name, _)| {
        !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.chars().all(|c| c == '_' || c.is_ascii_alphanumeric())
    })
}

/// The SCRIPT of `sh [OPTION]... -c SCRIPT [NAME [ARG]...]`: the first
/// operand after an option cluster with `c` in it (`-c`, `-ec`, `-lc`).
fn shell_script(args: &[&str]) -> Option<String> {
    let mut command_string = false;
    let mut i = 0;
    while let Some(word) = args.get(i) {
        if *word == "--" {
            i += 1;
            break;
        }
        match word.strip_prefix('-').or_else(|| word.strip_prefix('+')) {
            Some(flags) if !flags.is_empty() && !word.starts_with("--") => {
                command_string |= word.starts_with('-') && flags.contains('c');
                // `-o OPTION` takes the next word.
                if flags.ends_with('o') {
                    i += 1;
                }
                i += 1;
            }
            // Long options (`--login`, `--norc`).
            Some(_) if word.starts_with("--") => i += 1,
            _ => break,
        }
    }
    command_string.then(|| args.get(i).map(|s| (*s).to_owned()))?
}

/// The arguments of the first simple command of `script` that runs uWSGI.
fn script_args(script: &str) -> Option<Vec<String>> {
    for command in simple_commands(script) {
        let mut words: &[String] = &command;
        loop {
            match words.first().map(String::as_str) {
                Some(w) if is_assignment(w) => words = &words[1..],
                Some("exec" | "command" | "nohup") => words = &words[1..],
                Some("env") => {
                    let borrowed: Vec<&str> = words[1..].iter().map(String::as_str).collect();
                    let skipped = borrowed.len() - skip_env(&borrowed).len();
                    words = &words[1 + skipped..];
                }
                _ => break,
            }
        }
        let Some((program, args)) = words.split_first() else {
            continue;
        };
        if file_name(program).starts_with("uwsgi") {
            return Some(args.to_vec());
        }
    }
    None
}

/// Reserved words after which the next word starts a command.
const RESERVED: [&str; 9] = [
    "if", "then", "else", "elif", "do", "while", "until", "!", "time",
];

/// `script` as sh splits it: simple commands, each a list of words with
/// quotes and backslashes removed. Expansions stay as written.
fn simple_commands(script: &str) -> Vec<Vec<String>> {
    let mut commands = Vec::new();
    let mut words: Vec<String> = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = script.chars().peekable();
    let end_word = |word: &mut Option<String>, words: &mut Vec<String>| {
        if let Some(w) = word.take() {
            words.push(w);
        }
    };
    let end_command = |words: &mut Vec<String>, commands: &mut Vec<Vec<String>>| {
        if !words.is_empty() {
            commands.push(std::mem::take(words));
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    w.push(c);
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => match chars.next() {
                            Some(n @ ('"' | '\\' | '$' | '`')) => w.push(n),
                            Some('\n') => {}
                            Some(n) => {
                                w.push('\\');
                                w.push(n);
                            }
                            None => w.push('\\'),
                        },
                        c => w.push(c),
                    }
                }
            }
            '\\' => match chars.next() {
                Some('\n') | None => {}
                Some(n) => word.get_or_insert_with(String::new).push(n),
            },
            '#' if word.is_none() => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
                end_word(&mut word, &mut words);
                end_command(&mut words, &mut commands);
            }
            ';' | '&' | '|' | '(' | ')' | '\n' => {
                end_word(&mut word, &mut words);
                end_command(&mut words, &mut commands);
            }
            c if c.is_whitespace() => {
                end_word(&mut word, &mut words);
                // `{`, `}` and reserved words count only as whole words in
                // command position.
                if let [only] = words.as_slice() {
                    if only == "{" || only == "}" || RESERVED.contains(&only.as_str()) {
                        words.clear();
                    }
                }
            }
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    end_word(&mut word, &mut words);
    end_command(&mut words, &mut commands);
    commands
}

/// The arguments uWSGI gets from a `#!` script for a shell (rule 3 applied
/// to the script's text), `None` when it is no such script or runs no
/// uWSGI.
pub fn script_uwsgi_args(text: &str) -> Option<Vec<String>> {
    let shebang = text.lines().next()?.strip_prefix("#!")?;
    let mut words = shebang.split_whitespace();
    let mut interpreter = file_name(words.next()?);
    if interpreter == "env" {
        interpreter = file_name(words.find(|w| !w.starts_with('-'))?);
    }
    SHELLS
        .contains(&interpreter)
        .then(|| script_args(text))
        .flatten()
}

/// `check`'s warning for a uWSGI command given `listen` held sockets: the
/// problem and what to write, or `None` when the command maps them with an
/// `fd://` socket option (in its arguments or a `UWSGI_*` variable of the
/// environment) or loads a configuration file, which may.
pub fn missing_fd_socket(
    command: &[String],
    listen: usize,
    environment: &BTreeMap<String, String>,
) -> Option<(String, String)> {
    missing_fd_socket_in(&uwsgi_args(command)?, listen, environment)
}

/// [`missing_fd_socket`] for the arguments uWSGI gets.
pub fn missing_fd_socket_in(
    args: &[String],
    listen: usize,
    environment: &BTreeMap<String, String>,
) -> Option<(String, String)> {
    if listen == 0 {
        return None;
    }
    let names_fd = |s: &str| s.contains("fd://");
    let uwsgi_env = environment
        .iter()
        .filter(|(key, _)| key.starts_with("UWSGI_"));
    if args.iter().any(|a| names_fd(a) || loads_config(a))
        || uwsgi_env
            .clone()
            .any(|(key, value)| names_fd(value) || key == "UWSGI_INI")
    {
        return None;
    }
    let sockets = if listen == 1 {
        "the [[listen]] socket (fd 3)".to_owned()
    } else {
        format!("the {listen} [[listen]] sockets (fd 3 to {})", listen + 2)
    };
    let message = format!(
        "uWSGI serves {sockets} with the uwsgi protocol unless an fd:// socket option says otherwise, and this command has none"
    );
    let hint = if listen == 1 {
        "add \"--http-socket\", \"fd://3\" to serve HTTP, or \"--socket\", \"fd://3\" behind nginx's uwsgi_pass".to_owned()
    } else {
        format!(
            "add one option per socket, in [[listen]] order from fd://3 to fd://{}: \"--http-socket\", \"fd://3\" to serve HTTP, \"--socket\", \"fd://N\" behind nginx's uwsgi_pass",
            listen + 2
        )
    };
    Some((message, hint))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(command: &[&str]) -> Vec<String> {
        command.iter().map(|w| (*w).to_owned()).collect()
    }

    #[test]
    fn the_graceful_term_hook_is_found_in_either_form() {
        let hook = |args: &[&str]| stops_gracefully_on_term(&words(args));
        assert!(hook(&[
            "--master",
            "--hook-master-start",
            "unix_signal:15 gracefully_kill_them_all"
        ]));
        assert!(hook(&[
            "--hook-master-start=unix_signal:15  gracefully_kill_them_all"
        ]));
        assert!(!hook(&["--hook-master-start"]));
        assert!(!hook(&[
            "--hook-master-start",
            "unix_signal:2 gracefully_kill_them_all"
        ]));
        assert!(!hook(&[
            "--hook-master-start",
            "unix_signal:15 kill_them_all"
        ]));
        assert!(!hook(&[
            "--hook-master-start-x",
            "unix_signal:15 gracefully_kill_them_all"
        ]));
        assert!(!hook(&["unix_signal:15 gracefully_kill_them_all"]));
    }

    #[test]
    fn recognises_uwsgi_from_the_command_words() {
        let cases: &[(&[&str], Option<&[&str]>)] = &[
            (&["/srv/x/venv/bin/uwsgi", "--ini", "x.ini"], Some(&["--ini", "x.ini"])),
            (&["/usr/bin/uwsgi_python3", "--http-socket", "fd://3"], Some(&["--http-socket", "fd://3"])),
            (&["/srv/x/bin/uwsgi-shop"], Some(&[])),
            (&["/srv/uwsgi/venv/bin/gunicorn", "shop.wsgi"], None),
            (&["/usr/bin/env", "uwsgi", "--master"], Some(&["--master"])),
            (&["/usr/bin/env", "-i", "A=1", "-u", "B", "/v/bin/uwsgi", "x.ini"], Some(&["x.ini"])),
            (&["/usr/bin/env", "--", "uwsgi"], Some(&[])),
            (&["/usr/bin/env", "PYTHONPATH=/x", "gunicorn"], None),
            (&["/usr/bin/env"], None),
            (
                &["/bin/sh", "-c", "cd /srv/shop/current && exec /srv/shop/venv/bin/uwsgi --ini uwsgi.ini"],
                Some(&["--ini", "uwsgi.ini"]),
            ),
            (
                &["/bin/bash", "-ec", ". venv/bin/activate; A=1 exec uwsgi --http-socket 'fd://3' --module \"shop.wsgi\""],
                Some(&["--http-socket", "fd://3", "--module", "shop.wsgi"]),
            ),
            (&["/bin/sh", "-c", "exec \"$VENV\"/bin/uwsgi --master", "sh"], Some(&["--master"])),
            (&["/bin/dash", "-o", "errexit", "-c", "exec env X=1 uwsgi"], Some(&[])),
            (&["/bin/sh", "-c", "if true; then exec uwsgi --a; fi"], Some(&["--a"])),
            (&["/bin/sh", "-c", "{ exec uwsgi --b; }"], Some(&["--b"])),
            (&["/bin/sh", "-c", "# exec uwsgi\nexec gunicorn shop.wsgi"], None),
            (&["/bin/sh", "-c", "echo uwsgi && exec gunicorn shop.wsgi"], None),
            (&["/bin/sh", "-c", "exec gunicorn --name 'uwsgi x'"], None),
            // A script run directly, or by a shell without -c: not read.
            (&["/bin/sh", "/srv/shop/start-uwsgi.sh"], None),
            (&["/srv/shop/venv/bin/start"], None),
            (&["/bin/sh", "-e"], None),
        ];
        for (command, want) in cases {
            let want = want.map(words);
            assert_eq!(uwsgi_args(&words(command)), want, "for {command:?}");
        }
    }

    #[test]
    fn reads_shell_scripts_that_run_uwsgi() {
        let cases: &[(&str, Option<&[&str]>)] = &[
            ("#!/bin/sh\nset -e\ncd /srv/shop/current\nexec /srv/shop/venv/bin/uwsgi --ini u.ini\n", Some(&["--ini", "u.ini"])),
            ("#!/usr/bin/env bash\nexec uwsgi \\\n  --http-socket fd://3\n", Some(&["--http-socket", "fd://3"])),
            ("#!/bin/sh -e\n# runs uwsgi\nexec gunicorn shop.wsgi\n", None),
            ("#!/srv/shop/venv/bin/python\nimport uwsgi\n", None),
            ("exec uwsgi\n", None),
            ("", None),
        ];
        for (text, want) in cases {
            let want = want.map(words);
            assert_eq!(script_uwsgi_args(text), want, "for {text:?}");
        }
    }

    #[test]
    fn warns_only_when_no_socket_option_maps_a_held_socket() {
        let env = BTreeMap::new();
        let check = |command: &[&str], listen, env: &BTreeMap<String, String>| {
            missing_fd_socket(&words(command), listen, env).is_some()
        };
        let uwsgi = "/v/bin/uwsgi";
        assert!(check(
            &[uwsgi, "--master", "--module", "shop.wsgi"],
            1,
            &env
        ));
        assert!(check(&[uwsgi, "--protocol", "http"], 2, &env));
        assert!(check(&["/bin/sh", "-c", "exec uwsgi --master"], 1, &env));
        // Mapped, or maybe mapped by a config file: no warning.
        assert!(!check(&[uwsgi, "--http-socket", "fd://3"], 1, &env));
        assert!(!check(&[uwsgi, "--socket=fd://3"], 1, &env));
        assert!(!check(&[uwsgi, "--ini", "/srv/shop/uwsgi.ini"], 1, &env));
        assert!(!check(&[uwsgi, "--yaml=shop.yml"], 1, &env));
        assert!(!check(&[uwsgi, "shop.ini"], 1, &env));
        let mapped: BTreeMap<_, _> = [("UWSGI_HTTP_SOCKET".to_owned(), "fd://3".to_owned())].into();
        assert!(!check(&[uwsgi, "--master"], 1, &mapped));
        let ini: BTreeMap<_, _> = [("UWSGI_INI".to_owned(), "/srv/shop/u.ini".to_owned())].into();
        assert!(!check(&[uwsgi, "--master"], 1, &ini));
        // No held socket, or not uWSGI: nothing to say.
        assert!(!check(&[uwsgi, "--http-socket", ":8001"], 0, &env));
        assert!(!check(&["/v/bin/gunicorn", "shop.wsgi"], 1, &env));
    }

    #[test]
    fn the_warning_says_what_to_write() {
        let env = BTreeMap::new();
        let (message, hint) = missing_fd_socket(&words(&["/v/bin/uwsgi"]), 1, &env).unwrap();
        assert_eq!(
            message,
            "uWSGI serves the [[listen]] socket (fd 3) with the uwsgi protocol unless an fd:// socket option says otherwise, and this command has none"
        );
        assert_eq!(
            hint,
            "add \"--http-socket\", \"fd://3\" to serve HTTP, or \"--socket\", \"fd://3\" behind nginx's uwsgi_pass"
        );
        let (message, hint) = missing_fd_socket(&words(&["/v/bin/uwsgi"]), 2, &env).unwrap();
        assert!(
            message.contains("the 2 [[listen]] sockets (fd 3 to 4)"),
            "{message}"
        );
        assert!(
            hint.starts_with(
                "add one option per socket, in [[listen]] order from fd://3 to fd://4"
            ),
            "{hint}"
        );
    }
}
