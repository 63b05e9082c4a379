//! `env_files` contents and environment variable names. Parses text that
//! the loading layer read; never reads a file itself.
//!
//! Format, one variable a line:
//!
//! ```text
//! # comment
//! KEY=value                 # the whole rest of the line, trailing blanks cut
//! export KEY=value          # `export ` is allowed and ignored
//! KEY = "double quoted"     # \" \\ \n \$ are unescaped inside double quotes
//! KEY='single quoted'       # taken literally
//! ```
//!
//! There are no inline comments, no variable expansion and no multi-line
//! values: a secrets file should mean exactly what it says.
//!
//! An env file holds secrets, and its errors reach operators (`appctl
//! status`) who may not read it: they give the line and column and what
//! is wrong, never a name or value from the file.

use std::path::Path;

use super::error::{ConfigError, ConfigErrors, Gathered};

/// The largest env file read: far beyond any real one, and bounded well
/// below what the kernel lets a process's environment hold anyway.
pub const MAX_ENV_FILE: u64 = 1 << 20;

/// Variables the daemon sets per spawn to pass sockets and readiness; an
/// app that set them itself would break socket activation.
pub const PROTOCOL_VARIABLES: [&str; 4] = [
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "NOTIFY_SOCKET",
];

const NAME_HINT: &str = "use letters, digits and _, not starting with a digit";
const PROTOCOL_HINT: &str = "remove it; LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES and NOTIFY_SOCKET come from [[listen]] and [readiness]";

/// What is wrong with a variable name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NameProblem {
    /// Not letters, digits and `_`, or starts with a digit.
    Invalid,
    /// One of [`PROTOCOL_VARIABLES`], named by the daemon's own text.
    Protocol(&'static str),
}

fn name_problem(name: &str) -> Option<NameProblem> {
    let mut chars = name.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Some(NameProblem::Invalid);
    }
    PROTOCOL_VARIABLES
        .iter()
        .find(|protocol| **protocol == name)
        .map(|protocol| NameProblem::Protocol(protocol))
}

/// Why a variable name in an app file is refused, quoting it, or `None`
/// when it is fine.
pub(crate) fn check_name(name: &str) -> Option<(String, &'static str)> {
    match name_problem(name)? {
        NameProblem::Invalid => Some((
            format!("invalid environment variable name {name:?}"),
            NAME_HINT,
        )),
        NameProblem::Protocol(name) => Some((
            format!("{name} is set by the daemon for each start"),
            PROTOCOL_HINT,
        )),
    }
}

/// Parses one env file. `path` is only used in errors. Every bad line is
/// reported, by position only; a later line for the same name overrides an
/// earlier one when the caller collects the pairs into a map.
pub fn parse_env_file(path: &Path, text: &str) -> Result<Vec<(String, String)>, ConfigErrors> {
    let mut vars = Vec::new();
    let mut errors = Gathered::default();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let indent = line.len() - line.trim_start().len();
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let error = |column: usize, message: String, hint: &str| {
            ConfigError::new(path, message)
                .with_position(number, column)
                .with_hint(hint)
        };
        let body = trimmed
            .strip_prefix("export")
            .filter(|rest| rest.starts_with([' ', '\t']));
        let (body, body_column) = match body {
            Some(rest) => (
                rest.trim_start(),
                indent + trimmed.len() - rest.trim_start().len() + 1,
            ),
            None => (trimmed, indent + 1),
        };
        let Some(eq) = body.find('=') else {
            errors.push(error(
                body_column,
                "expected NAME=VALUE".to_owned(),
                "write NAME=VALUE or comment the line out with #",
            ));
            continue;
        };
        let name = body[..eq].trim_end();
        match name_problem(name) {
            None => {}
            Some(NameProblem::Invalid) => {
                let message = "invalid environment variable name".to_owned();
                errors.push(error(body_column, message, NAME_HINT));
                continue;
            }
            Some(NameProblem::Protocol(name)) => {
                let message = format!("{name} is set by the daemon for each start");
                errors.push(error(body_column, message, PROTOCOL_HINT));
                continue;
            }
        }
        let value = body[eq + 1..].trim();
        let lead = body[eq + 1..].len() - body[eq + 1..].trim_start().len();
        let value_column = body_column + body[..eq + 1 + lead].chars().count();
        match unquote(value) {
            Ok(value) if value.contains('\0') => errors.push(error(
                value_column,
                "value contains a NUL byte".to_owned(),
                "remove it",
            )),
            Ok(value) => vars.push((name.to_owned(), value)),
            Err(message) => errors.push(error(
                value_column,
                message.to_owned(),
                "close the quote; values cannot span lines",
            )),
        }
    }
    if errors.is_empty() {
        Ok(vars)
    } else {
        Err(ConfigErrors(errors.finish(path)))
    }
}

fn unquote(value: &str) -> Result<String, &'static str> {
    if let Some(rest) = value.strip_prefix('\'') {
        return match rest.strip_suffix('\'') {
            Some(inner) => Ok(inner.to_owned()),
            None => Err("unterminated single quote"),
        };
    }
    let Some(rest) = value.strip_prefix('"') else {
        return Ok(value.to_owned());
    };
    let mut out = String::with_capacity(rest.len());
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                return if chars.as_str().is_empty() {
                    Ok(out)
                } else {
                    Err("text after the closing double quote")
                };
            }
            '\\' => match chars.next() {
                Some('n') => out.push('\n'),
                Some(c @ ('"' | '\\' | '$' | '`')) => out.push(c),
                Some(c) => {
                    out.push('\\');
                    out.push(c);
                }
                None => break,
            },
            c => out.push(c),
        }
    }
    Err("unterminated double quote")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_valid_lines() {
        let text = "\
# secrets for shop
DATABASE_URL=postgres://shop@db/shop

export SECRET_KEY = 'a b#c'
  QUOTED=\"say \\\"hi\\\"\\n\"
EMPTY=
TRAILING=value   
HASH=a # not a comment
DATABASE_URL=override
";
        let got = parse_env_file(Path::new("/etc/shop/secrets.env"), text).unwrap();
        assert_eq!(
            got,
            pairs(&[
                ("DATABASE_URL", "postgres://shop@db/shop"),
                ("SECRET_KEY", "a b#c"),
                ("QUOTED", "say \"hi\"\n"),
                ("EMPTY", ""),
                ("TRAILING", "value"),
                ("HASH", "a # not a comment"),
                ("DATABASE_URL", "override"),
            ])
        );
    }

    #[test]
    fn reports_every_bad_line() {
        let text = "\
GOOD=1
no equals sign
1BAD=x
export LISTEN_FDS=3
  NOTIFY_SOCKET=/x
OPEN=\"abc
SINGLE='abc
AFTER=\"abc\"def
NUL=a\0b
";
        let errors = parse_env_file(Path::new("/etc/shop/secrets.env"), text).unwrap_err();
        let got: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            [
                "/etc/shop/secrets.env:2:1: expected NAME=VALUE (write NAME=VALUE or comment the line out with #)",
                "/etc/shop/secrets.env:3:1: invalid environment variable name (use letters, digits and _, not starting with a digit)",
                "/etc/shop/secrets.env:4:8: LISTEN_FDS is set by the daemon for each start (remove it; LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES and NOTIFY_SOCKET come from [[listen]] and [readiness])",
                "/etc/shop/secrets.env:5:3: NOTIFY_SOCKET is set by the daemon for each start (remove it; LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES and NOTIFY_SOCKET come from [[listen]] and [readiness])",
                "/etc/shop/secrets.env:6:6: unterminated double quote (close the quote; values cannot span lines)",
                "/etc/shop/secrets.env:7:8: unterminated single quote (close the quote; values cannot span lines)",
                "/etc/shop/secrets.env:8:7: text after the closing double quote (close the quote; values cannot span lines)",
                "/etc/shop/secrets.env:9:5: value contains a NUL byte (remove it)",
            ]
        );
    }

    #[test]
    fn errors_never_quote_the_file() {
        let text = "\
S3CRET-LINE without an equals sign
S3CRET-NAME!=x
export S3CRET NAME=x
OK1=\"S3CRET-VALUE
OK2='S3CRET-VALUE
OK3=\"a\"S3CRET-TAIL
";
        let errors = parse_env_file(Path::new("/etc/other/secrets.env"), text).unwrap_err();
        assert_eq!(errors.len(), 6, "{errors}");
        for error in errors.iter() {
            let shown = error.to_string();
            assert!(!shown.contains("S3CRET"), "{shown}");
            assert_eq!(error.key, None, "{shown}");
        }
    }

    #[test]
    fn names() {
        let cases = [
            ("PATH", None),
            ("_x1", None),
            ("", Some("invalid environment variable name \"\"")),
            ("A-B", Some("invalid environment variable name \"A-B\"")),
            (
                "NOTIFY_SOCKET",
                Some("NOTIFY_SOCKET is set by the daemon for each start"),
            ),
        ];
        for (name, want) in cases {
            assert_eq!(
                check_name(name).map(|(message, _)| message).as_deref(),
                want,
                "{name}"
            );
        }
    }
}
