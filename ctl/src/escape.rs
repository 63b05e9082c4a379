//! Showing text that others control on the caller's terminal: an app's
//! output, and every field of the daemon's answers (a status reason carries
//! the app's `STATUS=` text, names and paths come from app files, error
//! messages repeat what a request named).
//!
//! Owns how `appctl` escapes; which characters are unsafe is
//! [`appvisor_protocol::escape::is_unsafe`], the rule the daemon's own log uses. It
//! must never let a control character, an invalid UTF-8 byte (an 8-bit C1
//! control to some terminals) or a bidirectional override through, except
//! the newlines (and tabs) of multi-line text and of app output.

use std::borrow::Cow;
use std::fmt::Write as _;

use appvisor_protocol::escape::{is_unsafe, write_escaped};

/// One field of a table or a line (a name, a reason, a path): everything
/// unsafe escaped, newlines included, so it stays on its line.
pub fn field(text: &str) -> Cow<'_, str> {
    appvisor_protocol::escape::escape(text)
}

/// Text of several lines (a report, an error message): like [`field`], but
/// newlines and tabs are kept.
pub fn text(text: &str) -> Cow<'_, str> {
    escape_except(text, |c| matches!(c, '\n' | '\t'))
}

/// A JSON document for a terminal: serde_json escapes the C0 controls in
/// strings; this escapes what it leaves (DEL, C1 controls, line separators,
/// bidirectional overrides) the JSON way, `\u009b`. Only strings hold
/// non-ASCII, so the document stays valid and means the same.
pub fn json(document: &str) -> Cow<'_, str> {
    let unsafe_in_json = |c: char| is_unsafe(c) && u32::from(c) >= 0x7f;
    if !document.chars().any(unsafe_in_json) {
        return document.into();
    }
    let mut out = String::with_capacity(document.len() + 16);
    for c in document.chars() {
        if unsafe_in_json(c) {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                let _ = write!(out, "\\u{unit:04x}");
            }
        } else {
            out.push(c);
        }
    }
    out.into()
}

fn escape_except(text: &str, keep: impl Fn(char) -> bool) -> Cow<'_, str> {
    let needs = |c: char| is_unsafe(c) && !keep(c);
    if !text.chars().any(needs) {
        return text.into();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if needs(c) {
            let _ = write_escaped(&mut out, c);
        } else {
            out.push(c);
        }
    }
    out.into()
}

/// An app's output, escaped for a terminal as it streams: newlines and tabs
/// pass, other unsafe characters are escaped as in [`field`], and bytes
/// that are not UTF-8 are shown as `\xff`. A character split between two
/// chunks is held back until its end arrives.
#[derive(Debug, Default)]
pub struct TerminalOutput {
    /// The start of a UTF-8 sequence the last chunk ended inside.
    pending: Vec<u8>,
}

impl TerminalOutput {
    /// Appends `chunk`, escaped, to `out`.
    pub fn escape(&mut self, chunk: &[u8], out: &mut String) {
        let joined;
        let mut rest: &[u8] = if self.pending.is_empty() {
            chunk
        } else {
            self.pending.extend_from_slice(chunk);
            joined = std::mem::take(&mut self.pending);
            &joined
        };
        loop {
            match std::str::from_utf8(rest) {
                Ok(valid) => {
                    out.push_str(&text(valid));
                    return;
                }
                Err(error) => {
                    let (valid, after) = rest.split_at(error.valid_up_to());
                    // `valid` is UTF-8 up to `valid_up_to`.
                    out.push_str(&text(std::str::from_utf8(valid).unwrap_or_default()));
                    match error.error_len() {
                        Some(bad) => {
                            for byte in &after[..bad] {
                                let _ = write!(out, "\\x{byte:02x}");
                            }
                            rest = &after[bad..];
                        }
                        None => {
                            // A sequence cut by the chunk's end.
                            self.pending.extend_from_slice(after);
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Appends what is held back (an incomplete sequence at the very end).
    pub fn finish(&mut self, out: &mut String) {
        for byte in std::mem::take(&mut self.pending) {
            let _ = write!(out, "\\x{byte:02x}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_stay_on_their_line() {
        let table = [
            ("ready", "ready"),
            (
                "\u{1b}[2K\rshop  running  ok\n",
                "\\u{1b}[2K\\rshop  running  ok\\n",
            ),
            ("\u{1b}]0;pwned\u{7}", "\\u{1b}]0;pwned\\u{7}"),
            ("\u{9b}31m", "\\u{9b}31m"),
        ];
        for (raw, want) in table {
            assert_eq!(field(raw), want, "{raw:?}");
        }
        assert_eq!(text("two\nlines\ttab\r"), "two\nlines\ttab\\r");
    }

    #[test]
    fn json_stays_valid_and_means_the_same() {
        let value = serde_json::json!({
            "reason": "\u{1b}[31m red \u{9b}2J \u{7f} \u{202e} 😀 é",
        });
        let document = serde_json::to_string_pretty(&value).unwrap();
        let shown = json(&document);
        assert!(shown.chars().all(|c| !is_unsafe(c) || c == '\n'), "{shown}");
        let back: serde_json::Value = serde_json::from_str(&shown).unwrap();
        assert_eq!(back, value);
    }

    fn shown(chunks: &[&[u8]]) -> String {
        let mut terminal = TerminalOutput::default();
        let mut out = String::new();
        for chunk in chunks {
            terminal.escape(chunk, &mut out);
        }
        terminal.finish(&mut out);
        out
    }

    #[test]
    fn app_output_is_escaped_whatever_the_chunks() {
        let osc52 = b"\x1b]52;c;cHduZWQ=\x07copied?\n";
        assert_eq!(shown(&[osc52]), "\\u{1b}]52;c;cHduZWQ=\\u{7}copied?\n");
        assert_eq!(
            shown(&[b"progress 50%\rprogress 100%\n\tdone\n"]),
            "progress 50%\\rprogress 100%\n\tdone\n"
        );
        assert_eq!(shown(&[b"\x1b[1A\x1b[2K"]), "\\u{1b}[1A\\u{1b}[2K");
        // Raw 8-bit C1 (CSI) and other bytes that are not UTF-8.
        assert_eq!(shown(&[b"a\x9b2Jb\xff\n"]), "a\\x9b2Jb\\xff\n");
        // A character split across chunks is whole.
        let e = "é".as_bytes();
        assert_eq!(shown(&[b"caf", &e[..1], &e[1..], b"\n"]), "café\n");
        // Cut at the very end: shown as bytes.
        assert_eq!(shown(&[b"x", &e[..1]]), "x\\xc3");
        // UTF-8-encoded C1 controls too.
        assert_eq!(shown(&["\u{9b}0m".as_bytes()]), "\\u{9b}0m");
    }
}
