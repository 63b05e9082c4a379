//! The three little languages of a supervisord config, read the way
//! supervisord 4 reads them, so an import means what supervisord meant:
//!
//! - the file: Python's `configparser.RawConfigParser` with supervisord's
//!   settings (`;` and `#` start inline comments after whitespace, option
//!   names are lower-cased, indented lines continue a value, a repeated
//!   section merges);
//! - `command`: Python's `shlex.split` (POSIX quoting, no comments);
//! - `environment`: supervisord's `dict_of_key_value_pairs`, a non-POSIX
//!   `shlex` whose words also take `/.+-():`.
//!
//! Hand-written because the crates for these formats differ from Python in
//! exactly the corners configs use: the `shlex` crate drops a word that
//! starts with `#` as a comment, and INI crates strip `;` anywhere in a
//! value (`sh -c 'a;b'`). The differential test against supervisord's own
//! parser (tests/tests/import_supervisord.rs) keeps them honest.

use std::fmt;

use super::error::EnvironmentError;

/// One `[section]` with its options in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub name: String,
    /// 1-based line of the header.
    pub line: usize,
    pub options: Vec<Opt>,
}

/// `name = value`, the value's continuation lines joined with `\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opt {
    pub name: String,
    pub value: String,
    pub line: usize,
}

impl Section {
    /// The last value of `name`, as configparser keeps the last one.
    pub fn get(&self, name: &str) -> Option<&Opt> {
        self.options.iter().rev().find(|o| o.name == name)
    }
}

/// A line the INI reader cannot place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IniError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for IniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// Parses `text` into sections, merging repeated ones.
pub fn parse(text: &str) -> Result<Vec<Section>, IniError> {
    let mut sections: Vec<Section> = Vec::new();
    // The section being read, and (section, option) of the option whose
    // value indented lines continue.
    let mut current: Option<usize> = None;
    let mut option: Option<(usize, usize)> = None;
    let mut indent_level = usize::MAX;
    // Blank lines since the option's last line: part of its value only if
    // an indented line follows (configparser strips trailing ones).
    let mut pending_blank = 0usize;
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let (value, had_comment) = strip_comment(raw);
        let value = value.trim();
        if value.is_empty() {
            // A blank line inside a value is kept if more of it follows,
            // but ends nothing; a comment-only line is skipped entirely.
            if !had_comment && option.is_some() {
                pending_blank += 1;
            }
            continue;
        }
        let indent = raw.len() - raw.trim_start().len();
        if let (Some((s, o)), true) = (option, indent > indent_level) {
            let opt = &mut sections[s].options[o];
            for _ in 0..pending_blank {
                opt.value.push('\n');
            }
            pending_blank = 0;
            opt.value.push('\n');
            opt.value.push_str(value);
            continue;
        }
        pending_blank = 0;
        indent_level = indent;
        if let Some(header) = value.strip_prefix('[').and_then(|v| v.strip_suffix(']')) {
            let index = match sections.iter().position(|s| s.name == header) {
                Some(index) => index,
                None => {
                    sections.push(Section {
                        name: header.to_owned(),
                        line: line_no,
                        options: Vec::new(),
                    });
                    sections.len() - 1
                }
            };
            current = Some(index);
            option = None;
            continue;
        }
        let Some(s) = current else {
            return Err(IniError {
                line: line_no,
                message: "an option before any [section]".to_owned(),
            });
        };
        let Some(at) = value.find(['=', ':']) else {
            return Err(IniError {
                line: line_no,
                message: format!("expected NAME = VALUE, found {value:?}"),
            });
        };
        let name = value[..at].trim_end().to_lowercase();
        if name.is_empty() {
            return Err(IniError {
                line: line_no,
                message: format!("an option without a name: {value:?}"),
            });
        }
        sections[s].options.push(Opt {
            name,
            value: value[at + 1..].trim().to_owned(),
            line: line_no,
        });
        option = Some((s, sections[s].options.len() - 1));
    }
    Ok(sections)
}

/// The part of `line` before a comment: a line whose first non-blank is
/// `;` or `#`, or `;`/`#` after whitespace. Returns it and whether a
/// comment was cut.
fn strip_comment(line: &str) -> (&str, bool) {
    let trimmed = line.trim_start();
    if trimmed.starts_with(';') || trimmed.starts_with('#') {
        return ("", true);
    }
    let bytes = line.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if (*b == b';' || *b == b'#') && i > 0 && bytes[i - 1].is_ascii_whitespace() {
            return (&line[..i], true);
        }
    }
    (line, false)
}

/// Python's `shlex.split(s)`: POSIX words, `'…'` literal, `"…"` in which
/// `\` escapes only `\` and `"`, `\` outside quotes escaping any
/// character; `#` is an ordinary character. `None` on an open quote or a
/// trailing backslash, as Python raises.
pub fn split_command(s: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\r' | '\n' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '\'' => break,
                        c => word.push(c),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' => match chars.next()? {
                            c @ ('\\' | '"') => word.push(c),
                            c => {
                                word.push('\\');
                                word.push(c);
                            }
                        },
                        c => word.push(c),
                    }
                }
            }
            '\\' => {
                in_word = true;
                word.push(chars.next()?);
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Some(words)
}

/// supervisord's `environment = KEY="v",KEY2=v2`. Values lose their
/// surrounding quotes; a value with characters outside the word set must
/// be quoted, as in supervisord. `Err` names what was unexpected.
pub fn parse_environment(s: &str) -> Result<Vec<(String, String)>, EnvironmentError> {
    let tokens = non_posix_tokens(s)?;
    let mut out = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        match &tokens[i..] {
            [key, eq, value, ..] if eq == "=" => {
                let value = value.trim_matches(|c| c == '\'' || c == '"');
                out.push((key.clone(), value.to_owned()));
                // KEY = VALUE and the comma after it.
                i += 4;
            }
            _ => return Err(EnvironmentError::Unpaired { text: s.to_owned() }),
        }
    }
    Ok(out)
}

/// Python's non-POSIX `shlex.shlex` with `wordchars += '/.+-():'`: words,
/// quoted strings kept with their quotes, any other character alone, `#`
/// to the end of the line a comment.
fn non_posix_tokens(s: &str) -> Result<Vec<String>, EnvironmentError> {
    let is_word = |c: char| c.is_ascii_alphanumeric() || "_/.+-():".contains(c);
    let mut tokens = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_whitespace() {
            continue;
        }
        if c == '#' {
            for c in chars.by_ref() {
                if c == '\n' {
                    break;
                }
            }
            continue;
        }
        let mut token = String::from(c);
        if c == '\'' || c == '"' {
            loop {
                match chars.next() {
                    Some(q) if q == c => {
                        token.push(q);
                        break;
                    }
                    Some(other) => token.push(other),
                    None => return Err(EnvironmentError::Unquoted { text: s.to_owned() }),
                }
            }
        } else if is_word(c) {
            while let Some(&next) = chars.peek() {
                if !is_word(next) {
                    break;
                }
                token.push(next);
                chars.next();
            }
        }
        tokens.push(token);
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_sections_options_comments_and_continuations() {
        let text = "; a comment\n\
                    [program:shop]\n\
                    command = /srv/shop/venv/bin/gunicorn\n\
                    \x20   --workers 4   ; inline\n\
                    \n\
                    \x20   shop.wsgi\n\
                    Directory: /srv/shop\n\
                    url=http://x/#frag\n\
                    shell=sh -c 'a;b' # why\n\
                    [other]\n\
                    [program:shop]\n\
                    user = shop\n";
        let sections = parse(text).unwrap();
        assert_eq!(sections.len(), 2, "a repeated section merges");
        let shop = &sections[0];
        assert_eq!((shop.name.as_str(), shop.line), ("program:shop", 2));
        assert_eq!(
            shop.get("command").unwrap().value,
            "/srv/shop/venv/bin/gunicorn\n--workers 4\n\nshop.wsgi"
        );
        assert_eq!(shop.get("directory").unwrap().value, "/srv/shop");
        assert_eq!(shop.get("url").unwrap().value, "http://x/#frag");
        assert_eq!(shop.get("shell").unwrap().value, "sh -c 'a;b'");
        assert_eq!(shop.get("user").unwrap().line, 12);
    }

    #[test]
    fn says_which_line_it_cannot_read() {
        assert_eq!(
            parse("x = 1\n").unwrap_err().to_string(),
            "line 1: an option before any [section]"
        );
        assert_eq!(
            parse("[a]\njust words\n").unwrap_err().to_string(),
            "line 2: expected NAME = VALUE, found \"just words\""
        );
    }

    #[test]
    fn splits_commands_like_python_shlex_split() {
        let cases: &[(&str, &[&str])] = &[
            ("a b  c", &["a", "b", "c"]),
            (
                "gunicorn -b '127.0.0.1:80' \"x y\"",
                &["gunicorn", "-b", "127.0.0.1:80", "x y"],
            ),
            (
                "sh -c 'echo $HOME; exit 1'",
                &["sh", "-c", "echo $HOME; exit 1"],
            ),
            (
                r#"a "q\"uote" 'lit\eral' b\ c"#,
                &["a", "q\"uote", "lit\\eral", "b c"],
            ),
            (r#""\$x \n""#, &["\\$x \\n"]),
            ("run #notacomment", &["run", "#notacomment"]),
            ("a''b \"\"", &["ab", ""]),
            ("line1\nline2", &["line1", "line2"]),
        ];
        for (input, want) in cases {
            assert_eq!(split_command(input).unwrap(), *want, "{input:?}");
        }
        assert_eq!(split_command("'open"), None);
        assert_eq!(split_command("trailing\\"), None);
    }

    #[test]
    fn reads_environment_like_supervisord() {
        let env =
            parse_environment("A=1,PATH=/usr/bin:/bin, URL=\"http://x/?a=b\",Q='x, y',EMPTY=\"\"")
                .unwrap();
        assert_eq!(
            env,
            [
                ("A", "1"),
                ("PATH", "/usr/bin:/bin"),
                ("URL", "http://x/?a=b"),
                ("Q", "x, y"),
                ("EMPTY", ""),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        assert!(
            parse_environment("A=x@y").is_err(),
            "supervisord refuses it too"
        );
        assert!(parse_environment("A=\"open").is_err());
        assert_eq!(parse_environment("").unwrap(), []);
    }
}
