//! The one rule of which characters of text others control (an app's
//! output, a `STATUS=` reason, a path from an app file) are unsafe to show
//! on a terminal or in a log record, and how they are shown instead. The
//! daemon's log (`appvisor::logfmt`) and `appctl`'s output both use it, so
//! they can never disagree. It must never pass a control character, a
//! Unicode line separator or a bidirectional override through unescaped.

use std::fmt::{self, Write as _};

/// Whether `c` must not reach a log record or a terminal as it is: control
/// characters (C0, DEL, C1), Unicode line and paragraph separators, and the
/// bidirectional controls that reorder what a reader sees.
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// Writes `c`, which [`is_unsafe`], visibly: `\n`, `\r`, `\t`, else
/// `\u{1b}`.
pub fn write_escaped(out: &mut impl fmt::Write, c: char) -> fmt::Result {
    match c {
        '\n' => out.write_str("\\n"),
        '\r' => out.write_str("\\r"),
        '\t' => out.write_str("\\t"),
        c => write!(out, "\\u{{{:x}}}", u32::from(c)),
    }
}

/// `text` with every character that [`is_unsafe`] escaped.
pub fn escape(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return text.into();
    }
    let mut out = String::with_capacity(text.len() + 8);
    let _ = Escaping(&mut out).write_str(text);
    out.into()
}

/// A `fmt::Write` that escapes what it passes on.
#[derive(Debug)]
pub struct Escaping<'a, W>(pub &'a mut W);

impl<W: fmt::Write> fmt::Write for Escaping<'_, W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let mut rest = text;
        while let Some(at) = rest.find(is_unsafe) {
            self.0.write_str(&rest[..at])?;
            let c = rest[at..].chars().next().expect("found a char there");
            write_escaped(self.0, c)?;
            rest = &rest[at + c.len_utf8()..];
        }
        self.0.write_str(rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_table() {
        let table = [
            ("plain /srv/shop/current", "plain /srv/shop/current"),
            ("a\nb\r\tc", "a\\nb\\r\\tc"),
            ("\u{1b}]52;c;aGk=\u{7}", "\\u{1b}]52;c;aGk=\\u{7}"),
            ("\u{9b}2J csi", "\\u{9b}2J csi"),
            ("\u{7f}", "\\u{7f}"),
            ("evil\u{202e}txt.exe", "evil\\u{202e}txt.exe"),
            ("line\u{2028}sep", "line\\u{2028}sep"),
            ("ünïcödé ✓", "ünïcödé ✓"),
        ];
        for (text, want) in table {
            assert_eq!(escape(text), want, "{text:?}");
        }
    }
}
