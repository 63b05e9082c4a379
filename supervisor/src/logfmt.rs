//! The daemon's own log records: every field value escaped, so no text an
//! app, its owner or a local user controls (a path, a reason, `STATUS=`
//! text, a requested app name) can end a record, start a forged one (an
//! audit line, say) or send escape sequences to a terminal showing the log.
//!
//! Owns [`EscapedFields`], the field formatter `main` gives
//! `tracing-subscriber`; which characters are unsafe to show is
//! [`appvisor_protocol::escape`]'s one rule, which `appctl` uses too. It
//! must never pass a control character, a Unicode line separator or a
//! bidirectional override through unescaped.

use std::fmt::{self, Write as _};

use appvisor_protocol::escape::Escaping;

use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::FormatFields;

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
