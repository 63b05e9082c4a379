//! `GET /v1/apps` as the status table reads it: only the fields the table
//! and the exit code use, their text borrowed from the answer wherever
//! JSON wrote it without escapes.
//!
//! With a thousand apps, decoding every [`AppStatus`] (eight strings and
//! a vector each, all copied out of the answer and freed again) was most
//! of `appctl status`'s own work.

use std::borrow::Cow;
use std::fmt;

use appvisor_protocol::{AppStatus, State};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use crate::render::StatusTable;

/// [`appvisor_protocol::AppList`] decoded straight into the status table:
/// each row is rendered as it is decoded, and dropped, so a thousand rows
/// are never held at once.
#[derive(Debug)]
pub struct StatusAnswer {
    pub table: String,
    /// Whether every app listed runs.
    pub all_running: bool,
    pub notices: Vec<String>,
}

/// Decodes an answer of about `bytes` bytes into a [`StatusAnswer`].
#[derive(Debug, Clone, Copy)]
pub struct StatusAnswerSeed {
    pub bytes: usize,
}

/// Bytes of the smallest status the daemon writes, near enough: what
/// sizes the table from the answer's length.
const STATUS_BYTES: usize = 256;

impl<'de> DeserializeSeed<'de> for StatusAnswerSeed {
    type Value = StatusAnswer;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<StatusAnswer, D::Error> {
        deserializer.deserialize_map(self)
    }
}

/// The keys of [`appvisor_protocol::AppList`].
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum ListKey {
    Apps,
    Notices,
    #[serde(other)]
    Other,
}

impl<'de> Visitor<'de> for StatusAnswerSeed {
    type Value = StatusAnswer;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("struct AppList")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StatusAnswer, A::Error> {
        let mut rows = None;
        let mut notices = None;
        while let Some(key) = map.next_key()? {
            match key {
                ListKey::Apps if rows.is_some() => return Err(de::Error::duplicate_field("apps")),
                ListKey::Apps => {
                    let mut table = StatusTable::with_rows(self.bytes / STATUS_BYTES);
                    let all_running = map.next_value_seed(Rows(&mut table))?;
                    rows = Some((table, all_running));
                }
                ListKey::Notices if notices.is_some() => {
                    return Err(de::Error::duplicate_field("notices"))
                }
                ListKey::Notices => notices = Some(map.next_value()?),
                ListKey::Other => {
                    map.next_value::<de::IgnoredAny>()?;
                }
            }
        }
        let (table, all_running) = rows.ok_or_else(|| de::Error::missing_field("apps"))?;
        Ok(StatusAnswer {
            table: table.finish(),
            all_running,
            notices: notices.unwrap_or_default(),
        })
    }
}

/// `apps`, each row pushed onto the table; whether every app runs.
struct Rows<'t>(&'t mut StatusTable);

impl<'de> DeserializeSeed<'de> for Rows<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Rows<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a sequence of AppStatus")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        let mut all_running = true;
        while let Some(row) = seq.next_element::<StatusRow<'de>>()? {
            all_running &= row.state == State::Running;
            self.0.push(&row);
        }
        Ok(all_running)
    }
}

/// The fields of an [`AppStatus`] the status table shows. What it leaves
/// out is skipped, not checked: `status --json` shows the whole answer.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct StatusRow<'a> {
    #[serde(borrow)]
    pub name: Cow<'a, str>,
    pub state: State,
    #[serde(borrow)]
    pub reason: Cow<'a, str>,
    pub pid: Option<u32>,
    pub uptime_secs: Option<f64>,
    pub restarts: u32,
    #[serde(borrow)]
    pub directory: Cow<'a, str>,
    #[serde(borrow)]
    pub release: Option<Text<'a>>,
    #[serde(borrow)]
    pub stopped_by: Option<StopperRow<'a>>,
    #[serde(borrow)]
    pub config_error: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub log_error: Option<Text<'a>>,
}

/// [`appvisor_protocol::StoppedBy`] for the table.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct StopperRow<'a> {
    #[serde(borrow)]
    pub user: Cow<'a, str>,
    pub at: u64,
}

/// A string of the answer, borrowed unless JSON escaped something in it.
/// (serde borrows a `Cow<str>` field only when it is the field's whole
/// type, not inside an `Option`: this newtype carries the borrow there.)
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Text<'a>(#[serde(borrow)] pub Cow<'a, str>);

impl Text<'_> {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'a> StatusRow<'a> {
    /// The row of a status decoded whole (`status APP...`).
    pub fn of(app: &'a AppStatus) -> StatusRow<'a> {
        let text = |s: &'a Option<String>| s.as_deref().map(|s| Text(s.into()));
        StatusRow {
            name: app.name.as_str().into(),
            state: app.state,
            reason: app.reason.as_str().into(),
            pid: app.pid,
            uptime_secs: app.uptime_secs,
            restarts: app.restarts,
            directory: app.directory.as_str().into(),
            release: text(&app.release),
            stopped_by: app.stopped_by.as_ref().map(|by| StopperRow {
                user: by.user.as_str().into(),
                at: by.at,
            }),
            config_error: text(&app.config_error),
            log_error: text(&app.log_error),
        }
    }
}

#[cfg(test)]
mod tests {
    use appvisor_protocol::{AppList, StoppedBy};

    use super::*;

    fn full(state: State) -> AppStatus {
        AppStatus {
            name: "blog-admin".into(),
            state,
            // What an app can put in STATUS=: quotes, escapes, controls,
            // text that looks like the next key, and what is not ASCII.
            reason: "ready: \"ok\",\"pid\":1 \\ \u{1b}[2K\r\n\u{7} é ✓ \u{2028} \u{202e}".into(),
            pid: Some(u32::MAX),
            uptime_secs: Some(11_520.123_456_789),
            since: u64::MAX,
            restarts: 7,
            failures: 3,
            description: "The \"blog\"\tadmin".into(),
            app_groups: vec!["web".into(), "g\"2".into()],
            user: "blog".into(),
            directory: "/srv/blog/current \\ \"x\"".into(),
            release: Some("/srv/blog/releases/\u{0}2026".into()),
            autostart: true,
            stopped_by: Some(StoppedBy {
                user: "#1002\u{1b}]0;x\u{7}".into(),
                uid: 1002,
                at: 1_764_567_890,
            }),
            config_error: Some("line 3: key \"x\"\nline 4: y".into()),
            log_error: Some("cannot write: \"No space\" left on device".into()),
            log_dropped_bytes: 123_456,
        }
    }

    /// `AppList` with its rows.
    #[derive(Deserialize)]
    struct List<'a> {
        #[serde(borrow)]
        apps: Vec<StatusRow<'a>>,
    }

    fn answer_of(apps: Vec<AppStatus>) -> (AppList, String) {
        let list = AppList {
            apps,
            notices: vec!["apps.d/x.toml: \"ignored\"".into()],
        };
        let answer = serde_json::to_string(&list).unwrap();
        (list, answer)
    }

    /// Whatever the daemon writes, a row decoded from its answer is the
    /// row of the status decoded whole.
    #[test]
    fn rows_decode_as_the_whole_status_does() {
        let mut apps = Vec::new();
        for state in State::ALL {
            apps.push(full(state));
            apps.push(AppStatus::bare("shop", state, String::new()));
        }
        let (list, answer) = answer_of(apps);
        let rows: List<'_> = serde_json::from_str(&answer).unwrap();
        let want: Vec<_> = list.apps.iter().map(StatusRow::of).collect();
        assert_eq!(rows.apps, want);
    }

    fn status_answer(answer: &str) -> serde_json::Result<StatusAnswer> {
        let mut de = serde_json::Deserializer::from_str(answer);
        let status = StatusAnswerSeed {
            bytes: answer.len(),
        }
        .deserialize(&mut de)?;
        de.end()?;
        Ok(status)
    }

    /// The table decoded row by row is the table of the statuses decoded
    /// whole, with the same notices and exit.
    #[test]
    fn the_table_decoded_row_by_row_is_the_table_of_the_whole_answer() {
        for running in [false, true] {
            let mut apps: Vec<_> = State::ALL
                .into_iter()
                .filter(|&state| !running || state == State::Running)
                .flat_map(|state| [full(state), AppStatus::bare("shop", state, String::new())])
                .collect();
            apps[0].name = "\u{1b}]0;x\u{7}\n".into();
            let (list, answer) = answer_of(apps);
            let status = status_answer(&answer).unwrap();
            let rows: Vec<_> = list.apps.iter().map(StatusRow::of).collect();
            assert_eq!(status.table, crate::render::status_table(&rows));
            assert_eq!(status.notices, list.notices);
            assert_eq!(status.all_running, running);
        }
        let empty = status_answer(r#"{"apps":[]}"#).unwrap();
        assert_eq!(empty.table, crate::render::status_table(&[]));
        assert!(empty.all_running && empty.notices.is_empty());
    }

    /// As serde decodes `AppList`: unknown keys skipped, `apps` required
    /// and once only.
    #[test]
    fn an_answer_has_its_apps_once() {
        let row = r#"{"name":"shop","state":"running","reason":"","restarts":0,"directory":"/"}"#;
        let other = format!(r#"{{"later":{{"apps":[1]}},"apps":[{row}],"notices":[]}}"#);
        assert_eq!(status_answer(&other).unwrap().table.lines().count(), 2);
        for bad in [
            r#"{"notices":[]}"#.to_owned(),
            format!(r#"{{"apps":[{row}],"apps":[]}}"#),
            r#"{"apps":[],"notices":[],"notices":[]}"#.to_owned(),
            r#"{"apps":{}}"#.to_owned(),
            r#"[]"#.to_owned(),
            r#"{"apps":[]} x"#.to_owned(),
        ] {
            assert!(status_answer(&bad).is_err(), "{bad}");
        }
    }

    /// Text without escapes is borrowed from the answer; escaped text is
    /// decoded, escapes and all.
    #[test]
    fn plain_text_is_borrowed_and_escaped_text_decoded() {
        let answer = r#"{"apps":[{"name":"shop","state":"running","reason":"a\"b\u001b\\n","pid":1,
            "uptime_secs":1.5,"restarts":0,"directory":"/srv/shop","release":"/srv/r\/1",
            "stopped_by":null,"config_error":"plain","log_error":null,"extra":{"x":[1]}}]}"#;
        let list: List<'_> = serde_json::from_str(answer).unwrap();
        let row = &list.apps[0];
        assert!(matches!(row.name, Cow::Borrowed("shop")));
        assert!(matches!(row.directory, Cow::Borrowed("/srv/shop")));
        assert_eq!(row.reason, "a\"b\u{1b}\\n");
        assert_eq!(row.release.as_ref().map(Text::as_str), Some("/srv/r/1"));
        assert!(matches!(
            row.config_error,
            Some(Text(Cow::Borrowed("plain")))
        ));
        assert_eq!(row.log_error, None);
    }

    /// Fields of a newer or older daemon's answer: the optional ones may
    /// be missing, unknown ones are skipped; a missing field the table
    /// shows is an error.
    #[test]
    fn optional_fields_may_be_missing() {
        let answer = r#"{"apps":[{"name":"shop","state":"stopped","reason":"","restarts":0,
            "directory":"/"}]}"#;
        let list: List<'_> = serde_json::from_str(answer).unwrap();
        let row = &list.apps[0];
        assert_eq!(
            (row.pid, row.uptime_secs, &row.release, &row.stopped_by),
            (None, None, &None, &None)
        );
        let answer = r#"{"apps":[{"name":"shop","state":"stopped","reason":""}]}"#;
        assert!(serde_json::from_str::<List<'_>>(answer).is_err());
        let answer = r#"{"apps":[{"name":"shop","state":"gone","reason":"","restarts":0,
            "directory":"/"}]}"#;
        assert!(serde_json::from_str::<List<'_>>(answer).is_err());
    }
}
