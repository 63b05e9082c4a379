//! The daemon's own log records: every field value escaped, so no text an
//! app, its owner or a local user controls (a path, a reason, `STATUS=`
//! text, a requested app name) can end a record, start a forged one (an
//! audit line, say) or send escape sequences to a terminal showing the log.
//!
//! Owns [`EscapedFields`], the field formatter `main` gives
//! `tracing-subscriber`, and the one rule of which characters are unsafe to
//! show, which `appctl` uses too. It must never pass a control character,
//! a Unicode line separator or a bidirectional override through unescaped.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::FormatFields;

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
struct Escaping<'a, W>(&'a mut W);

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

/// Formats fields like `tracing-subscriber`'s default (`message` first and
/// bare, then `name=value`, strings quoted), with every value escaped.
#[derive(Debug, Default, Clone, Copy)]
pub struct EscapedFields;

impl<'writer> FormatFields<'writer> for EscapedFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut visitor = Visitor {
            writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct Visitor<'writer> {
    writer: Writer<'writer>,
    first: bool,
    result: fmt::Result,
}

impl Visitor<'_> {
    fn write(&mut self, field: &Field, value: &dyn fmt::Display) {
        if self.result.is_err() {
            return;
        }
        let separator = if std::mem::take(&mut self.first) {
            ""
        } else {
            " "
        };
        self.result = match field.name() {
            "message" => write!(self.writer, "{separator}"),
            name => write!(
                self.writer,
                "{separator}{}=",
                name.strip_prefix("r#").unwrap_or(name)
            ),
        }
        .and_then(|()| write!(Escaping(&mut self.writer), "{value}"));
    }
}

impl Visit for Visitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.write(field, &value);
        } else {
            self.write(field, &format_args!("{value:?}"));
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.write(field, &crate::logs::DisplayChain(value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.write(field, &format_args!("{value:?}"));
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

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

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// What the daemon's subscriber writes for the records `emit` makes.
    fn log_of(emit: impl FnOnce()) -> String {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .without_time()
            .fmt_fields(EscapedFields)
            .finish();
        tracing::subscriber::with_default(subscriber, emit);
        let bytes = captured.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn no_field_can_start_a_record_of_its_own() {
        let forged = "x\n2026-11-23T13:02:07Z  INFO audit: control request uid=0 user=\"root\" \
                      app=\"shop\" action=\"stop\" outcome=\"ok\"";
        let path = std::path::PathBuf::from(format!("/srv/{forged}"));
        let error = io::Error::other(format!("no such file {forged}"));
        let log = log_of(|| {
            tracing::warn!(
                reason = %forged,
                path = %path.display(),
                text = forged,
                error = &error as &dyn std::error::Error,
                "spawn failed"
            );
            tracing::error!("{forged}");
            tracing::info_span!("capture", app = %forged).in_scope(|| tracing::info!("in a span"));
        });
        assert_eq!(log.lines().count(), 3, "one line per record:\n{log}");
        for line in log.lines() {
            assert!(
                [" WARN appvisor", "ERROR appvisor", " INFO capture"]
                    .iter()
                    .any(|start| line.starts_with(start)),
                "a forged record: {line}"
            );
            assert!(!line.contains('\u{1b}') && !line.contains('\r'));
        }
        assert!(log.contains("reason=x\\n2026"), "{log}");
        assert!(log.contains("text=\"x\\n2026"), "{log}");
        assert!(
            log.contains("ERROR appvisor::logfmt::tests: x\\n2026"),
            "{log}"
        );
    }

    #[test]
    fn fields_look_like_the_default_format() {
        let log = log_of(|| {
            tracing::info!(app = "shop", pid = 42, from = ?Some(1), "state changed");
        });
        assert_eq!(
            log,
            " INFO appvisor::logfmt::tests: state changed app=\"shop\" pid=42 from=Some(1)\n"
        );
    }
}
