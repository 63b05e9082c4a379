//! Serde structs that mirror `appvisor.toml` and `apps.d/NAME.toml` key for
//! key, and the TOML parse that reports every syntax, type and unknown-key
//! error with its position. Values keep their byte spans so validation can
//! point at them. Nothing here interprets a value: that is `validate`'s job.

use std::collections::BTreeMap;
use std::ops::Range;

use serde::de::{self, DeserializeOwned, Visitor};
use serde::Deserialize;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::error::{ConfigError, Gathered, SourceFile};
use super::suggest;

/// `appvisor.toml`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table of daemon settings")]
pub struct RawDaemon {
    pub apps_dir: Option<Spanned<String>>,
    pub log_dir: Option<Spanned<String>>,
    pub state_dir: Option<Spanned<String>>,
    pub control: Option<RawControl>,
    pub status: Option<RawStatus>,
    /// Any app key, applied where an app file is silent.
    pub defaults: Option<RawApp>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [control] table")]
pub struct RawControl {
    pub socket: Option<Spanned<String>>,
    pub admin_users: Option<Spanned<Vec<Spanned<String>>>>,
    pub admin_groups: Option<Spanned<Vec<Spanned<String>>>>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [status] table")]
pub struct RawStatus {
    pub listen: Option<Spanned<String>>,
}

/// `apps.d/NAME.toml`, and `[defaults]` in `appvisor.toml`. Every key is
/// optional here; validation decides which ones an app must have.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table of app settings")]
pub struct RawApp {
    pub description: Option<Spanned<String>>,
    /// Groups of apps this one belongs to, for `appctl restart group:NAME`.
    pub app_groups: Option<Spanned<Vec<Spanned<String>>>>,
    pub user: Option<Spanned<String>>,
    pub group: Option<Spanned<String>>,
    pub command: Option<Spanned<Vec<Spanned<String>>>>,
    pub directory: Option<Spanned<String>>,
    /// The venv the app runs from when `command[0]` is not in it.
    pub venv: Option<Spanned<String>>,
    pub environment: Option<Spanned<BTreeMap<Spanned<String>, Spanned<String>>>>,
    pub env_files: Option<Spanned<Vec<Spanned<String>>>>,
    pub umask: Option<Spanned<String>>,
    pub autostart: Option<Spanned<bool>>,
    pub listen: Option<Spanned<Vec<RawListen>>>,
    pub readiness: Option<RawReadiness>,
    pub restart: Option<RawRestart>,
    pub stop: Option<RawStop>,
    pub logs: Option<RawLogs>,
    pub access: Option<RawAccess>,
    pub sandbox: Option<RawSandbox>,
    pub limits: Option<RawLimits>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [[listen]] table")]
pub struct RawListen {
    pub address: Option<Spanned<String>>,
    pub name: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [readiness] table")]
pub struct RawReadiness {
    pub kind: Option<Spanned<String>>,
    pub url: Option<Spanned<String>>,
    /// For `kind = "tcp"`; an addition to DESIGN.md's example.
    pub address: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [restart] table")]
pub struct RawRestart {
    pub policy: Option<Spanned<String>>,
    pub start_secs: Option<Spanned<String>>,
    pub max_retries: Option<Spanned<i64>>,
    pub backoff: Option<RawBackoff>,
    pub strategy: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a backoff table like { initial = \"1s\", max = \"60s\" }"
)]
pub struct RawBackoff {
    pub initial: Option<Spanned<String>>,
    pub max: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [stop] table")]
pub struct RawStop {
    pub signal: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub reload_signal: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [logs] table")]
pub struct RawLogs {
    pub max_size: Option<Spanned<String>>,
    pub keep: Option<Spanned<i64>>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, expecting = "an [access] table")]
pub struct RawAccess {
    pub users: Option<Spanned<Vec<Spanned<String>>>>,
    pub groups: Option<Spanned<Vec<Spanned<String>>>>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [sandbox] table")]
pub struct RawSandbox {
    pub read_only: Option<Spanned<Vec<Spanned<String>>>>,
    pub read_write: Option<Spanned<Vec<Spanned<String>>>>,
    pub private_tmp: Option<Spanned<bool>>,
    pub bind_ports: Option<Spanned<Vec<Spanned<i64>>>>,
    pub connect_ports: Option<Spanned<Vec<Spanned<i64>>>>,
    pub network: Option<Spanned<String>>,
    pub landlock: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [limits] table")]
pub struct RawLimits {
    pub memory: Option<Spanned<String>>,
    pub tasks: Option<Spanned<i64>>,
    pub cpu: Option<Spanned<String>>,
    pub open_files: Option<Spanned<i64>>,
}

/// A file the raw structs can be parsed from.
pub(crate) trait RawFile: DeserializeOwned {
    /// The keys allowed in the table at `path` (table names, no array
    /// indices), for the hint of an unknown-key error.
    fn known_keys(path: &[&str]) -> Option<&'static [&'static str]>;

    /// Whether the table at `path` maps any key to a string (`environment`).
    fn is_string_map(path: &[&str]) -> bool;
}

impl RawFile for RawApp {
    fn known_keys(path: &[&str]) -> Option<&'static [&'static str]> {
        app_keys(path)
    }

    fn is_string_map(path: &[&str]) -> bool {
        path == ["environment"]
    }
}

impl RawFile for RawDaemon {
    fn known_keys(path: &[&str]) -> Option<&'static [&'static str]> {
        match path {
            [] => Some(fields_of::<RawDaemon>()),
            ["control"] => Some(fields_of::<RawControl>()),
            ["status"] => Some(fields_of::<RawStatus>()),
            ["defaults", rest @ ..] => app_keys(rest),
            _ => None,
        }
    }

    fn is_string_map(path: &[&str]) -> bool {
        path == ["defaults", "environment"]
    }
}

/// Every key of `appvisor.toml`, dotted as errors name it
/// (`control.socket`); `defaults` is one key, as it takes any app key.
/// What the documentation of the file must cover.
pub fn daemon_file_keys() -> Vec<String> {
    leaf_keys(RawDaemon::known_keys, &["defaults"])
}

/// Every key of an app file, dotted as errors name it without array
/// indices (`listen.address`, `restart.backoff.initial`). What the
/// documentation of the file must cover.
pub fn app_file_keys() -> Vec<String> {
    leaf_keys(RawApp::known_keys, &[])
}

/// The keys below the tables `known` describes, in declaration order; a
/// key in `opaque` is listed rather than descended into.
fn leaf_keys(
    known: fn(&[&str]) -> Option<&'static [&'static str]>,
    opaque: &[&str],
) -> Vec<String> {
    fn walk(
        known: fn(&[&str]) -> Option<&'static [&'static str]>,
        opaque: &[&str],
        path: &mut Vec<&'static str>,
        out: &mut Vec<String>,
    ) {
        for key in known(path).unwrap_or_default() {
            path.push(key);
            let dotted = path.join(".");
            if opaque.contains(&dotted.as_str()) || known(path).is_none() {
                out.push(dotted);
            } else {
                walk(known, opaque, path, out);
            }
            path.pop();
        }
    }
    let mut out = Vec::new();
    walk(known, opaque, &mut Vec::new(), &mut out);
    out
}

fn app_keys(path: &[&str]) -> Option<&'static [&'static str]> {
    match path {
        [] => Some(fields_of::<RawApp>()),
        ["listen"] => Some(fields_of::<RawListen>()),
        ["readiness"] => Some(fields_of::<RawReadiness>()),
        ["restart"] => Some(fields_of::<RawRestart>()),
        ["restart", "backoff"] => Some(fields_of::<RawBackoff>()),
        ["stop"] => Some(fields_of::<RawStop>()),
        ["logs"] => Some(fields_of::<RawLogs>()),
        ["access"] => Some(fields_of::<RawAccess>()),
        ["sandbox"] => Some(fields_of::<RawSandbox>()),
        ["limits"] => Some(fields_of::<RawLimits>()),
        _ => None,
    }
}

/// Parses `source` as `T`, reporting every error rather than the first
/// (up to [`super::error::MAX_ERRORS_PER_FILE`], the rest counted), in time
/// linear in the file.
///
/// TOML syntax errors are all reported and stop there. Otherwise one walk
/// of the parsed table against the schema ([`RawFile::known_keys`])
/// removes and reports every unknown key and every `environment` value
/// that is not a string: the entries a generated file can hold by the
/// thousand. Serde then stops at the first remaining wrong type, so after
/// each such error the offending entry is removed and deserialization is
/// tried again; what is left to fail is one of the schema's few dozen
/// fixed keys, so the retries are bounded by the schema, not the file.
pub(crate) fn parse<T: RawFile>(source: SourceFile<'_>) -> Result<T, Gathered> {
    let (mut table, syntax_errors) = DeTable::parse_recoverable(source.text);
    if !syntax_errors.is_empty() {
        let mut spans: Vec<(Range<usize>, &toml::de::Error)> = syntax_errors
            .iter()
            .map(|error| (error.span().unwrap_or(0..0), error))
            .collect();
        spans.sort_by_key(|(span, _)| span.start);
        let mut errors = Gathered::default();
        for (span, error) in spans {
            if errors.is_full() {
                errors.count_more(1);
                continue;
            }
            errors.push(
                source
                    .error(
                        &span,
                        format!("invalid toml: {}", error.message().trim_end_matches('.')),
                    )
                    .with_hint("fix the toml syntax"),
            );
        }
        return Err(errors);
    }
    table.get_mut().make_owned();
    let mut errors = Gathered::default();
    let mut found = Vec::new();
    prune_schema::<T>(table.get_mut(), &mut Vec::new(), &mut found);
    found.sort_by_key(|found| found.span.start);
    for found in found {
        if errors.is_full() {
            errors.count_more(1);
            continue;
        }
        errors.push(found.into_error::<T>(source));
    }
    loop {
        let attempt = T::deserialize(toml::de::Deserializer::from(table.clone()));
        let error = match attempt {
            Ok(value) if errors.is_empty() => return Ok(value),
            Ok(_) => return Err(errors),
            Err(error) => error,
        };
        let span = error.span();
        let found = span
            .as_ref()
            .and_then(|span| prune(table.get_mut(), span, &mut Vec::new()));
        let Some(found) = found else {
            // Not attributable to one entry: report it and give up on the rest.
            let span = span.unwrap_or(0..0);
            errors.push(source.error(&span, error.message().to_owned()));
            return Err(errors);
        };
        let key = found.dotted();
        errors.push(if found.unknown_key {
            Found {
                span: found.span,
                key,
                what: What::UnknownKey {
                    table: table_path(&found.path),
                    name: match found.path.last() {
                        Some(Segment::Key(name)) => name.clone(),
                        _ => String::new(),
                    },
                },
            }
            .into_error::<T>(source)
        } else {
            let value = source.text.get(found.span.clone()).unwrap_or_default();
            source
                .error(
                    &found.span,
                    suggest::wrong_type(&key, value, error.message()),
                )
                .with_key(key)
        });
    }
}

/// A problem the schema walk found, kept cheap until it is known to be
/// among the errors reported.
struct Found {
    span: Range<usize>,
    key: String,
    what: What,
}

enum What {
    /// In the table at this path (no indices).
    UnknownKey { table: Vec<String>, name: String },
    /// A value of the wrong type: serde's own message.
    Invalid(String),
}

impl Found {
    fn into_error<T: RawFile>(self, source: SourceFile<'_>) -> ConfigError {
        match self.what {
            What::UnknownKey { table, name } => {
                let table: Vec<&str> = table.iter().map(String::as_str).collect();
                let (message, hint) = suggest::unknown_key(T::known_keys, &table, &name);
                let unknown = source.error(&self.span, message).with_key(self.key);
                match hint {
                    Some(hint) => unknown.with_hint(hint),
                    None => unknown,
                }
            }
            What::Invalid(message) => {
                let value = source.text.get(self.span.clone()).unwrap_or_default();
                let message = suggest::wrong_type(&self.key, value, &message);
                source.error(&self.span, message).with_key(self.key)
            }
        }
    }
}

/// The table names of a path to a key, without the key and indices.
fn table_path(path: &[Segment]) -> Vec<String> {
    keys_of(&path[..path.len().saturating_sub(1)])
}

/// The keys of a path, without indices.
fn keys_of(path: &[Segment]) -> Vec<String> {
    path.iter()
        .filter_map(|segment| match segment {
            Segment::Key(key) => Some(key.clone()),
            Segment::Index(_) => None,
        })
        .collect()
}

/// One walk of `table` (at `path`) against `T`'s schema: removes every
/// unknown key and every value of a string map that is not a string,
/// recording each in `found`. It only descends into the schema's own
/// tables, so its depth is the schema's, whatever the file nests.
fn prune_schema<T: RawFile>(
    table: &mut DeTable<'_>,
    path: &mut Vec<Segment>,
    found: &mut Vec<Found>,
) {
    let names: Vec<String> = keys_of(path);
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let known = T::known_keys(&names);
    let string_map = T::is_string_map(&names);
    let mut doomed = Vec::new();
    for (key, value) in table.iter_mut() {
        let name: &str = key.get_ref().as_ref();
        path.push(Segment::Key(name.to_owned()));
        if known.is_some_and(|known| !known.contains(&name)) {
            found.push(Found {
                span: key.span(),
                key: dotted(path),
                what: What::UnknownKey {
                    table: names.iter().map(|n| n.to_string()).collect(),
                    name: name.to_owned(),
                },
            });
            doomed.push(name.to_owned());
        } else if string_map && !matches!(value.get_ref(), DeValue::String(_)) {
            let message =
                match String::deserialize(toml::de::ValueDeserializer::from(value.clone())) {
                    Err(error) => error.message().to_owned(),
                    Ok(_) => "expected a string".to_owned(),
                };
            found.push(Found {
                span: value.span(),
                key: dotted(path),
                what: What::Invalid(message),
            });
            doomed.push(name.to_owned());
        } else {
            let mut child: Vec<&str> = names.clone();
            child.push(name);
            if T::known_keys(&child).is_some() || T::is_string_map(&child) {
                match value.get_mut() {
                    DeValue::Table(inner) => prune_schema::<T>(inner, path, found),
                    DeValue::Array(items) => {
                        for (i, item) in items.iter_mut().enumerate() {
                            if let DeValue::Table(inner) = item.get_mut() {
                                path.push(Segment::Index(i));
                                prune_schema::<T>(inner, path, found);
                                path.pop();
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        path.pop();
    }
    for name in doomed {
        table.remove(name.as_str());
    }
}

fn dotted(path: &[Segment]) -> String {
    let mut out = String::new();
    for segment in path {
        match segment {
            Segment::Key(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

#[derive(Debug)]
enum Segment {
    Key(String),
    Index(usize),
}

#[derive(Debug)]
struct Pruned {
    path: Vec<Segment>,
    span: Range<usize>,
    /// The error's span is the key itself, not its value: serde's way of
    /// pointing at a key `deny_unknown_fields` refused.
    unknown_key: bool,
}

impl Pruned {
    fn dotted(&self) -> String {
        dotted(&self.path)
    }
}

/// Removes the innermost table entry whose key is `span` or whose value
/// holds it. Children are searched first and regardless of their parent's
/// span: a `[header]` table's span covers the header, not its keys.
fn prune(table: &mut DeTable<'_>, span: &Range<usize>, path: &mut Vec<Segment>) -> Option<Pruned> {
    let contains = |outer: &Range<usize>| outer.start <= span.start && span.end <= outer.end;
    let mut target = None;
    for (key, value) in table.iter_mut() {
        let name = key.get_ref().to_string();
        let depth = path.len();
        path.push(Segment::Key(name.clone()));
        let value_span = value.span();
        let mut in_item = false;
        match value.get_mut() {
            DeValue::Table(inner) => {
                if let Some(found) = prune(inner, span, path) {
                    return Some(found);
                }
            }
            DeValue::Array(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    let item_span = item.span();
                    path.push(Segment::Index(i));
                    if let DeValue::Table(inner) = item.get_mut() {
                        if let Some(found) = prune(inner, span, path) {
                            return Some(found);
                        }
                    }
                    if contains(&item_span) {
                        in_item = true;
                        break;
                    }
                    path.pop();
                }
            }
            _ => {}
        }
        if key.span() == *span {
            target = Some((name, key.span(), true));
            break;
        }
        if in_item || contains(&value_span) {
            // Blame the narrowest thing serde named: usually the value itself.
            let blamed = if span.start < span.end {
                span.clone()
            } else {
                value_span
            };
            target = Some((name, blamed, false));
            break;
        }
        path.truncate(depth);
    }
    let (name, blamed, unknown_key) = target?;
    // The whole entry goes, even when the error was in one array element:
    // the raw structs have no partial arrays.
    table.remove(name.as_str())?;
    Some(Pruned {
        path: std::mem::take(path),
        span: blamed,
        unknown_key,
    })
}

/// The field names serde's derive gave `T`, read by asking `T` to
/// deserialize itself from a probe that records them and then fails.
fn fields_of<T: DeserializeOwned>() -> &'static [&'static str] {
    struct Probe<'a>(&'a mut &'static [&'static str]);

    impl<'de> de::Deserializer<'de> for Probe<'_> {
        type Error = de::value::Error;

        fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("field probe"))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(de::Error::custom("field probe"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }

    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Probe(&mut fields));
    fields
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    use crate::error::{LineIndex, MAX_ERRORS_PER_FILE};

    fn errors_of<T: RawFile + std::fmt::Debug>(text: &str) -> Vec<String> {
        let file = Path::new("apps.d/shop.toml");
        let lines = LineIndex::new(text);
        let source = SourceFile::new(file, text, &lines);
        match parse::<T>(source) {
            Ok(value) => panic!("expected errors, parsed {value:?}"),
            Err(errors) => errors
                .finish(file)
                .iter()
                .map(ToString::to_string)
                .collect(),
        }
    }

    #[test]
    fn parses_design_example() {
        let text = include_str!("testdata/shop.toml");
        let lines = LineIndex::new(text);
        let source = SourceFile::new(Path::new("apps.d/shop.toml"), text, &lines);
        let raw: RawApp = parse(source).unwrap();
        assert_eq!(raw.user.unwrap().into_inner(), "shop");
        assert_eq!(raw.listen.unwrap().into_inner().len(), 1);
        assert_eq!(
            raw.restart
                .unwrap()
                .backoff
                .unwrap()
                .max
                .unwrap()
                .into_inner(),
            "60s"
        );
    }

    /// What froze the daemon for seconds to hours: thousands of
    /// errors in one file, each of which once cost a copy of the whole
    /// table. Now one walk finds them all; the first hundred are kept.
    #[test]
    fn thousands_of_errors_are_gathered_in_linear_time() {
        let head = "user = \"shop\"\ncommand = [\"/bin/true\"]\n";
        let unknown: String = (0..16_000).map(|i| format!("key_{i:05} = 1\n")).collect();
        let nested: String = (0..16_000).map(|i| format!("key_{i:05} = 1\n")).collect();
        let env: String = (0..16_000).map(|i| format!("V{i:05} = {i}\n")).collect();
        let syntax: String = (0..16_000).map(|i| format!("key_{i:05} = \n")).collect();
        let cases = [
            (format!("{head}{unknown}"), 3, "key_00000: unknown key"),
            (
                format!("{head}[sandbox]\n{nested}"),
                4,
                "sandbox.key_00000: unknown key",
            ),
            (
                format!("{head}[environment]\n{env}"),
                4,
                "environment.V00000: must be a string in quotes, like \"shop.settings\", not 0",
            ),
            (
                format!("{head}{syntax}"),
                3,
                "invalid toml: string values must be quoted",
            ),
        ];
        for (text, first_line, first) in cases {
            let began = std::time::Instant::now();
            let errors = errors_of::<RawApp>(&text);
            let took = began.elapsed();
            // Quadratic took minutes; linear takes milliseconds (a debug
            // build on a loaded machine: well under this).
            assert!(took < std::time::Duration::from_secs(10), "took {took:?}");
            assert_eq!(errors.len(), MAX_ERRORS_PER_FILE + 1, "{first}");
            assert!(
                errors[0].starts_with(&format!("apps.d/shop.toml:{first_line}:")),
                "{}",
                errors[0]
            );
            assert!(errors[0].contains(first), "{}", errors[0]);
            assert_eq!(
                errors[MAX_ERRORS_PER_FILE],
                "apps.d/shop.toml: 15900 more errors not shown \
                 (fix the ones above first: each check shows the first hundred)"
            );
        }
    }

    #[test]
    fn field_names_come_from_the_derive() {
        assert_eq!(fields_of::<RawBackoff>(), ["initial", "max"]);
        assert_eq!(fields_of::<RawListen>(), ["address", "name"]);
    }

    #[test]
    fn every_error_is_reported_with_its_position() {
        let app_keys =
            "description, app_groups, user, group, command, directory, venv, environment, env_files, umask, \
                        autostart, listen, readiness, restart, stop, logs, access, sandbox, limits";
        let cases: &[(&str, &[String])] = &[
            (
                "user = \"shop\"\nbogus = 1\n",
                &[format!("apps.d/shop.toml:2:1: bogus: unknown key (remove it or use one of: {app_keys})")],
            ),
            (
                "[sandbox]\nprivate_tmp = true\nread_only_paths = []\n",
                &["apps.d/shop.toml:3:1: sandbox.read_only_paths: unknown key; did you mean `read_only`?"
                    .to_owned()],
            ),
            (
                "restart = { backoff = { initial = \"1s\", maximum = \"2s\" } }\n",
                &["apps.d/shop.toml:1:41: restart.backoff.maximum: unknown key (remove it or use one of: initial, max)"
                    .to_owned()],
            ),
            (
                "[[listen]]\naddress = \"127.0.0.1:8001\"\n[[listen]]\nport = 8002\n",
                &["apps.d/shop.toml:4:1: listen[1].port: unknown key (remove it or use one of: address, name)"
                    .to_owned()],
            ),
            (
                "user = 3\nautostart = \"yes\"\n[logs]\nkeep = \"five\"\n",
                &[
                    "apps.d/shop.toml:1:8: user: must be a string in quotes, like \"shop\", not 3".to_owned(),
                    "apps.d/shop.toml:2:13: autostart: must be true or false, not \"yes\"".to_owned(),
                    "apps.d/shop.toml:4:8: logs.keep: must be a whole number, like 5, not \"five\"".to_owned(),
                ],
            ),
            (
                "autostrat = false\n[restart]\nsignal = \"INT\"\nmax_retries = \"5\"\n",
                &[
                    "apps.d/shop.toml:1:1: autostrat: unknown key; did you mean `autostart`?".to_owned(),
                    "apps.d/shop.toml:3:1: restart.signal: unknown key here; `signal` is a key of [stop] \
                     (move it there)"
                        .to_owned(),
                    "apps.d/shop.toml:4:15: restart.max_retries: must be a whole number, like 5, not \"5\""
                        .to_owned(),
                ],
            ),
            (
                "stopsignal = \"INT\"\ncommand = \"/srv/shop/venv/bin/gunicorn\"\n",
                &[
                    "apps.d/shop.toml:1:1: stopsignal: unknown key; supervisord's `stopsignal` is `signal` in \
                     [stop] here (docs/migration.md maps supervisord's settings)"
                        .to_owned(),
                    "apps.d/shop.toml:2:11: command: must be a list of strings, like \
                     [\"/srv/shop/venv/bin/gunicorn\", \"shop.wsgi\"], not \"/srv/shop/venv/bin/gunicorn\""
                        .to_owned(),
                ],
            ),
            (
                "sandbox = 3\n",
                &["apps.d/shop.toml:1:11: sandbox: must be a table, like [sandbox], not 3".to_owned()],
            ),
            (
                "environment = { A = 1, B = \"x\", C = true }\n",
                &[
                    "apps.d/shop.toml:1:21: environment.A: must be a string in quotes, like \"shop.settings\", not 1"
                        .to_owned(),
                    "apps.d/shop.toml:1:37: environment.C: must be a string in quotes, like \"shop.settings\", not true"
                        .to_owned(),
                ],
            ),
            (
                "user = \"a\"\nuser = \"b\"\n",
                &["apps.d/shop.toml:2:1: invalid toml: duplicate key (fix the toml syntax)".to_owned()],
            ),
            (
                "user = \n",
                &["apps.d/shop.toml:1:8: invalid toml: string values must be quoted, expected literal string \
                   (fix the toml syntax)"
                    .to_owned()],
            ),
        ];
        for (text, want) in cases {
            assert_eq!(&errors_of::<RawApp>(text), want, "for {text:?}");
        }
    }

    #[test]
    fn daemon_file_hints_know_defaults_keys() {
        let text = "[defaults.stop]\nsignall = \"INT\"\n[defaults.environment]\nA = 1\n";
        let lines = LineIndex::new(text);
        let source = SourceFile::new(Path::new("appvisor.toml"), text, &lines);
        let errors = parse::<RawDaemon>(source)
            .unwrap_err()
            .finish(Path::new("appvisor.toml"));
        assert_eq!(
            errors[1].to_string(),
            "appvisor.toml:4:5: defaults.environment.A: must be a string in quotes, like \"shop.settings\", not 1"
        );
        assert_eq!(
            errors[0].to_string(),
            "appvisor.toml:2:1: defaults.stop.signall: unknown key; did you mean `signal`?"
        );
    }
}
