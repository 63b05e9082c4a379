//! An [`AppStatus`] rendered as JSON ahead of time, for `GET /v1/apps`.
//!
//! With a thousand apps, building each status again and serializing it on
//! every request was most of the daemon's time for `appctl status`. The
//! daemon renders an app's status when it changes, off the request path,
//! and a request copies the rendered bytes, filling in only the fields it
//! knows better: the uptime as of the request, and what the daemon holds
//! beside the app's status (its configuration error and the health of its
//! logs). The bytes are exactly what `serde_json` writes for the same
//! [`AppStatus`]: a test holds the two together.

use std::sync::Arc;

use serde::Serialize;

use crate::AppStatus;

/// The JSON of one [`AppStatus`] but for the fields of [`StatusNow`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusJson {
    /// `{"name":…` up to `"uptime_secs":`, then `,"since":…` up to
    /// `"stopped_by":VALUE`.
    text: Arc<str>,
    /// Where the uptime goes in `text`.
    split: usize,
}

/// The fields of an [`AppStatus`] a request fills in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StatusNow<'a> {
    pub uptime_secs: Option<f64>,
    pub config_error: Option<&'a str>,
    pub log_error: Option<&'a str>,
    pub log_dropped_bytes: u64,
}

impl StatusJson {
    /// `status` rendered, but for the fields of [`StatusNow`].
    pub fn new(status: &AppStatus) -> StatusJson {
        // The fields in `AppStatus`'s order, as serde writes them.
        let AppStatus {
            name,
            state,
            reason,
            pid,
            uptime_secs: _,
            since,
            restarts,
            failures,
            description,
            app_groups,
            user,
            directory,
            release,
            autostart,
            stopped_by,
            config_error: _,
            log_error: _,
            log_dropped_bytes: _,
        } = status;
        let mut out = Vec::with_capacity(256);
        field(&mut out, "{\"name\":", name);
        field(&mut out, ",\"state\":", state);
        field(&mut out, ",\"reason\":", reason);
        field(&mut out, ",\"pid\":", pid);
        out.extend_from_slice(b",\"uptime_secs\":");
        let split = out.len();
        field(&mut out, ",\"since\":", since);
        field(&mut out, ",\"restarts\":", restarts);
        field(&mut out, ",\"failures\":", failures);
        field(&mut out, ",\"description\":", description);
        field(&mut out, ",\"app_groups\":", app_groups);
        field(&mut out, ",\"user\":", user);
        field(&mut out, ",\"directory\":", directory);
        field(&mut out, ",\"release\":", release);
        field(&mut out, ",\"autostart\":", autostart);
        field(&mut out, ",\"stopped_by\":", stopped_by);
        let text = String::from_utf8(out).expect("serde_json writes UTF-8");
        StatusJson {
            text: text.into(),
            split,
        }
    }

    /// Bytes of the rendered part: what [`StatusJson::write`] appends,
    /// less the request's fields.
    pub fn len(&self) -> usize {
        self.text.len()
    }

    /// Never: a rendered status has at least its name.
    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    /// The status it was made of, read back, with the fields of
    /// [`StatusNow`] left empty: a holder of the rendering needs no second
    /// copy of the same status.
    pub fn status(&self) -> AppStatus {
        let mut out = Vec::with_capacity(self.text.len() + 96);
        self.write(
            &mut out,
            StatusNow {
                uptime_secs: None,
                config_error: None,
                log_error: None,
                log_dropped_bytes: 0,
            },
        );
        serde_json::from_slice(&out).expect("a rendered status reads back")
    }

    /// Appends the status, with the fields of `now`, to `out`: what
    /// `serde_json` writes for the whole [`AppStatus`].
    pub fn write(&self, out: &mut Vec<u8>, now: StatusNow<'_>) {
        let (head, tail) = self.text.as_bytes().split_at(self.split);
        out.extend_from_slice(head);
        value(out, &now.uptime_secs);
        out.extend_from_slice(tail);
        field(out, ",\"config_error\":", &now.config_error);
        field(out, ",\"log_error\":", &now.log_error);
        field(out, ",\"log_dropped_bytes\":", &now.log_dropped_bytes);
        out.push(b'}');
    }
}

fn field<T: Serialize + ?Sized>(out: &mut Vec<u8>, key: &str, v: &T) {
    out.extend_from_slice(key.as_bytes());
    value(out, v);
}

fn value<T: Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) {
    serde_json::to_writer(out, v).expect("status fields serialize");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{State, StoppedBy};

    fn bare() -> AppStatus {
        AppStatus::bare("shop", State::Stopped, String::new())
    }

    fn full() -> AppStatus {
        AppStatus {
            name: "blog-admin".into(),
            state: State::Running,
            // What an app can put in STATUS=: quotes, escapes, controls,
            // and text that looks like the next key.
            reason: "ready: \"ok\",\"pid\":1 \\ \u{1b}[2K\r\n\u{7} é ✓ \u{2028}".into(),
            pid: Some(u32::MAX),
            uptime_secs: Some(11_520.123_456_789),
            since: u64::MAX,
            restarts: 7,
            failures: 3,
            description: "The \"blog\"\tadmin".into(),
            app_groups: vec!["web".into(), "g\"2".into()],
            user: "blog".into(),
            directory: "/srv/blog/current".into(),
            release: Some("/srv/blog/releases/2026-12-01".into()),
            autostart: true,
            stopped_by: Some(StoppedBy {
                user: "#1002".into(),
                uid: 1002,
                at: 1_764_567_890,
            }),
            config_error: Some("line 3: key \"x\"\nline 4: y".into()),
            log_error: Some("cannot write: No space left on device".into()),
            log_dropped_bytes: 123_456,
        }
    }

    fn now(status: &AppStatus) -> StatusNow<'_> {
        StatusNow {
            uptime_secs: status.uptime_secs,
            config_error: status.config_error.as_deref(),
            log_error: status.log_error.as_deref(),
            log_dropped_bytes: status.log_dropped_bytes,
        }
    }

    /// What `write` appends is what serde writes for the same status,
    /// whatever the request fills in: the two can never drift (a field
    /// added to `AppStatus` fails here until `new` or `write` writes it).
    #[test]
    fn the_rendered_status_is_serdes_rendering() {
        let mut cases = vec![bare(), full()];
        for state in [
            State::Starting,
            State::Backoff,
            State::Stopping,
            State::Exited,
            State::Fatal,
            State::Invalid,
        ] {
            cases.push(AppStatus { state, ..full() });
        }
        for uptime in [0.0, 0.1, 1e-7, 5.0, 1e21, f64::MAX, f64::NAN, f64::INFINITY] {
            cases.push(AppStatus {
                uptime_secs: Some(uptime),
                ..bare()
            });
        }
        for status in cases {
            let json = StatusJson::new(&status);
            let mut out = b"[".to_vec();
            json.write(&mut out, now(&status));
            let want = serde_json::to_vec(&status).unwrap();
            assert_eq!(
                String::from_utf8_lossy(&out[1..]),
                String::from_utf8_lossy(&want)
            );
            assert!(json.len() < want.len());
        }
    }

    /// What a rendering reads back is the status it was made of, but for
    /// the request's fields.
    #[test]
    fn the_rendered_status_reads_back() {
        let mut cases = vec![bare(), full()];
        for state in [State::Starting, State::Fatal, State::Invalid] {
            cases.push(AppStatus { state, ..full() });
        }
        cases.push(AppStatus {
            release: None,
            stopped_by: None,
            pid: None,
            ..full()
        });
        for status in cases {
            let want = AppStatus {
                uptime_secs: None,
                config_error: None,
                log_error: None,
                log_dropped_bytes: 0,
                ..status.clone()
            };
            assert_eq!(StatusJson::new(&status).status(), want);
        }
    }

    /// A rendering made without the request's fields takes them from the
    /// request, not from the status it was made of.
    #[test]
    fn the_request_fills_in_its_fields() {
        let json = StatusJson::new(&bare());
        let status = full();
        let mut out = Vec::new();
        json.write(&mut out, now(&status));
        let back: AppStatus = serde_json::from_slice(&out).unwrap();
        assert_eq!(back.uptime_secs, status.uptime_secs);
        assert_eq!(back.config_error, status.config_error);
        assert_eq!(back.log_error, status.log_error);
        assert_eq!(back.log_dropped_bytes, status.log_dropped_bytes);
        assert_eq!(back.reason, "");
    }
}
