//! What a person most likely meant, for the messages of config errors: the
//! known key or value nearest a misspelt one, the table a key belongs in,
//! the name supervisord gave a setting, and how each key's value is
//! written. Pure: the schema comes in as the raw layer's `known_keys`.
//!
//! Nearness is `strsim`'s optimal string alignment distance (one edit per
//! wrong, missing, extra or swapped character), compared without case,
//! plus "one is the start of the other" for keys like `read_only_paths`.
//! Words longer than [`MAX_WORD`] get no suggestion: no key or value is
//! that long, and the distance costs the product of the two lengths.

/// The longest word compared with the known ones.
const MAX_WORD: usize = 64;

/// The candidate nearest `word`, when near enough to be a slip of the
/// keyboard: at most one edit in four characters of the candidate (at
/// least one), or one being the start of the other and at least half as
/// long. Ties go to the earlier candidate.
pub fn nearest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    if word.is_empty() || word.len() > MAX_WORD {
        return None;
    }
    let word = word.to_lowercase();
    let mut best: Option<(usize, &'a str)> = None;
    for candidate in candidates {
        let lower = candidate.to_lowercase();
        let distance = strsim::osa_distance(&word, &lower);
        let (short, long) = if word.len() < lower.len() {
            (&word, &lower)
        } else {
            (&lower, &word)
        };
        let near = distance * 4 <= lower.chars().count().max(4)
            || (short.len() * 2 >= long.len() && long.starts_with(short.as_str()));
        if near && best.is_none_or(|(shortest, _)| distance < shortest) {
            best = Some((distance, candidate));
        }
    }
    best.map(|(_, candidate)| candidate)
}

/// `"use a, b or c"`: the hint that lists an enum's values.
pub fn use_one_of(choices: &[&str]) -> String {
    match choices {
        [] => "remove it".to_owned(),
        [only] => format!("use {only}"),
        [rest @ .., last] => format!("use {} or {last}", rest.join(", ")),
    }
}

/// `unknown {what} "{value}"`, with the nearest of `choices` when there
/// is one, and the hint that lists them.
pub fn unknown_value(what: &str, value: &str, choices: &[&str]) -> (String, String) {
    let message = match nearest(value, choices) {
        Some(near) => format!("unknown {what} {value:?}; did you mean {near:?}?"),
        None => format!("unknown {what} {value:?}"),
    };
    (message, use_one_of(choices))
}

/// Which keys a table of a file takes: `RawFile::known_keys`.
pub type KnownKeys = fn(&[&str]) -> Option<&'static [&'static str]>;

/// Settings supervisord users write, and where each lives here.
const SUPERVISORD_NAMES: [(&str, &str); 7] = [
    ("autorestart", "restart.policy"),
    ("startsecs", "restart.start_secs"),
    ("startretries", "restart.max_retries"),
    ("stopsignal", "stop.signal"),
    ("stopwaitsecs", "stop.timeout"),
    ("stdout_logfile_maxbytes", "logs.max_size"),
    ("stdout_logfile_backups", "logs.keep"),
];

/// The message and hint for `key`, which the table at `table` (names
/// without indices; `[]` for the file's top level) does not take.
///
/// In order: the setting a supervisord name stands for, a key of this
/// table it is near (`autostrat`: did you mean `autostart`?), a table it
/// belongs in (`signal` in `[restart]` belongs in `[stop]`), or else the
/// list of this table's keys.
pub fn unknown_key(known: KnownKeys, table: &[&str], key: &str) -> (String, Option<String>) {
    if let Some((_, ours)) = SUPERVISORD_NAMES.iter().find(|(theirs, _)| *theirs == key) {
        let (section, name) = ours.split_once('.').unwrap_or(("", ours));
        return (
            format!("unknown key; supervisord's `{key}` is `{name}` in [{section}] here"),
            Some("docs/migration.md maps supervisord's settings".to_owned()),
        );
    }
    let own = known(table).unwrap_or_default();
    if let Some(near) = nearest(key, own) {
        return (format!("unknown key; did you mean `{near}`?"), None);
    }
    let homes: Vec<String> = tables(known, table_root(table))
        .into_iter()
        .filter(|other| other.as_slice() != table)
        .filter(|other| known(other).is_some_and(|keys| keys.contains(&key)))
        .map(|other| header(&other))
        .collect();
    if !homes.is_empty() {
        return (
            format!(
                "unknown key here; `{key}` is a key of {}",
                homes.join(" and ")
            ),
            Some("move it there".to_owned()),
        );
    }
    let hint = match own {
        [] => "remove it".to_owned(),
        keys => format!("remove it or use one of: {}", keys.join(", ")),
    };
    (String::from("unknown key"), Some(hint))
}

/// Where the tables of the file `table` is in start: `["defaults"]` for
/// `[defaults]` and the tables under it in `appvisor.toml`, so a key is
/// sent to `[defaults.stop]`, not to the daemon's own tables.
fn table_root<'t>(table: &'t [&'t str]) -> &'t [&'t str] {
    match table.first() {
        Some(&"defaults") => &table[..1],
        _ => &[],
    }
}

/// `root` and every table below it.
fn tables(known: KnownKeys, root: &[&str]) -> Vec<Vec<&'static str>> {
    fn walk(known: KnownKeys, path: &mut Vec<&'static str>, out: &mut Vec<Vec<&'static str>>) {
        out.push(path.clone());
        for key in known(path).unwrap_or_default() {
            path.push(key);
            if known(path).is_some() {
                walk(known, path, out);
            }
            path.pop();
        }
    }
    let mut out = Vec::new();
    // The root's own names are among the schema's keys: find them there so
    // the walk holds only 'static names.
    let mut path: Vec<&'static str> = Vec::new();
    for name in root {
        let Some(own) = known(&path)
            .unwrap_or_default()
            .iter()
            .find(|key| *key == name)
        else {
            return out;
        };
        path.push(own);
    }
    walk(known, &mut path, &mut out);
    out
}

/// A table as its header is written: `[stop]`, `[restart.backoff]`,
/// `[[listen]]`, `[defaults.stop]`; the top level is `the top level`.
fn header(table: &[&str]) -> String {
    match table {
        [] => "the top level".to_owned(),
        [.., "listen"] => format!("[[{}]]", table.join(".")),
        ["defaults"] => "[defaults] itself".to_owned(),
        _ => format!("[{}]", table.join(".")),
    }
}

/// How a key's value is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    WholeNumber,
    Boolean,
    Texts,
    WholeNumbers,
    /// A table of strings, like `environment`.
    TextTable,
    Table,
    /// `[[listen]]`.
    Tables,
}

/// An example value of every key, written as in the file, for the message
/// of a value of the wrong type. App keys serve `[defaults]` too.
const EXAMPLES: &[(&str, Kind, &str)] = &[
    ("description", Kind::Text, "\"Shop storefront\""),
    ("app_groups", Kind::Texts, "[\"web\"]"),
    ("user", Kind::Text, "\"shop\""),
    ("group", Kind::Text, "\"shop\""),
    (
        "command",
        Kind::Texts,
        "[\"/srv/shop/venv/bin/gunicorn\", \"shop.wsgi\"]",
    ),
    ("directory", Kind::Text, "\"/srv/shop/current\""),
    ("venv", Kind::Text, "\"/srv/shop/venv\""),
    (
        "environment",
        Kind::TextTable,
        "{ DJANGO_SETTINGS_MODULE = \"shop.settings\" }",
    ),
    ("environment.*", Kind::Text, "\"shop.settings\""),
    ("env_files", Kind::Texts, "[\"/etc/shop/secrets.env\"]"),
    ("umask", Kind::Text, "\"0027\""),
    ("autostart", Kind::Boolean, "true"),
    ("listen", Kind::Tables, "[[listen]]"),
    ("listen.address", Kind::Text, "\"127.0.0.1:8001\""),
    ("listen.name", Kind::Text, "\"http\""),
    ("readiness", Kind::Table, "[readiness]"),
    ("readiness.kind", Kind::Text, "\"notify\""),
    (
        "readiness.url",
        Kind::Text,
        "\"http://127.0.0.1:8001/health\"",
    ),
    ("readiness.address", Kind::Text, "\"127.0.0.1:8001\""),
    ("readiness.timeout", Kind::Text, "\"60s\""),
    ("restart", Kind::Table, "[restart]"),
    ("restart.policy", Kind::Text, "\"on-failure\""),
    ("restart.start_secs", Kind::Text, "\"1s\""),
    ("restart.max_retries", Kind::WholeNumber, "5"),
    (
        "restart.backoff",
        Kind::Table,
        "{ initial = \"1s\", max = \"60s\" }",
    ),
    ("restart.backoff.initial", Kind::Text, "\"1s\""),
    ("restart.backoff.max", Kind::Text, "\"60s\""),
    ("restart.strategy", Kind::Text, "\"stop-start\""),
    ("stop", Kind::Table, "[stop]"),
    ("stop.signal", Kind::Text, "\"TERM\""),
    ("stop.timeout", Kind::Text, "\"30s\""),
    ("stop.reload_signal", Kind::Text, "\"HUP\""),
    ("logs", Kind::Table, "[logs]"),
    ("logs.max_size", Kind::Text, "\"50MiB\""),
    ("logs.keep", Kind::WholeNumber, "5"),
    ("access", Kind::Table, "[access]"),
    ("access.users", Kind::Texts, "[\"alice\"]"),
    ("access.groups", Kind::Texts, "[\"shop-devs\"]"),
    ("sandbox", Kind::Table, "[sandbox]"),
    ("sandbox.read_only", Kind::Texts, "[\"/srv/shop/config\"]"),
    ("sandbox.read_write", Kind::Texts, "[\"/srv/shop/shared\"]"),
    ("sandbox.private_tmp", Kind::Boolean, "true"),
    ("sandbox.bind_ports", Kind::WholeNumbers, "[8001]"),
    ("sandbox.connect_ports", Kind::WholeNumbers, "[5432, 6379]"),
    ("sandbox.network", Kind::Text, "\"host\""),
    ("sandbox.landlock", Kind::Text, "\"require\""),
    ("limits", Kind::Table, "[limits]"),
    ("limits.memory", Kind::Text, "\"512MiB\""),
    ("limits.tasks", Kind::WholeNumber, "128"),
    ("limits.cpu", Kind::Text, "\"150%\""),
    ("limits.open_files", Kind::WholeNumber, "4096"),
    // appvisor.toml's own.
    ("apps_dir", Kind::Text, "\"/etc/appvisor/apps.d\""),
    ("log_dir", Kind::Text, "\"/var/log/appvisor\""),
    ("state_dir", Kind::Text, "\"/var/lib/appvisor\""),
    ("control", Kind::Table, "[control]"),
    ("control.socket", Kind::Text, "\"/run/appvisor/ctl.sock\""),
    ("control.admin_users", Kind::Texts, "[\"alice\"]"),
    ("control.admin_groups", Kind::Texts, "[\"appvisor-admin\"]"),
    ("status", Kind::Table, "[status]"),
    ("status.listen", Kind::Text, "\"127.0.0.1:9750\""),
    ("defaults", Kind::Table, "[defaults]"),
];

/// The schema key of a dotted key: no indices, no `defaults.` prefix
/// (`[defaults]` takes app keys), and `environment.*` for a variable.
fn schema_key(key: &str) -> String {
    let mut plain = String::with_capacity(key.len());
    let mut in_index = false;
    for c in key.chars() {
        match c {
            '[' => in_index = true,
            ']' => in_index = false,
            c if !in_index => plain.push(c),
            _ => {}
        }
    }
    let plain = match plain.strip_prefix("defaults.") {
        Some(rest) => rest.to_owned(),
        None => plain,
    };
    match plain.strip_prefix("environment.") {
        Some(_) => "environment.*".to_owned(),
        None => plain,
    }
}

/// The longest text of a wrong value quoted back in a message.
const MAX_QUOTED: usize = 40;

/// The message for a value of the wrong type at `key`, in the words of the
/// file: `must be a whole number, like 5, not "five"`. `found` is the
/// value's text in the file, quoted back when it is short and on one line;
/// `fallback` (serde's message) serves a key with no example.
pub fn wrong_type(key: &str, found: &str, fallback: &str) -> String {
    let Some((_, kind, example)) = EXAMPLES
        .iter()
        .find(|(name, _, _)| *name == schema_key(key))
    else {
        return fallback.to_owned();
    };
    let expected = match kind {
        Kind::Text => format!("a string in quotes, like {example}"),
        Kind::WholeNumber => format!("a whole number, like {example}"),
        Kind::Boolean => "true or false".to_owned(),
        Kind::Texts => format!("a list of strings, like {example}"),
        Kind::WholeNumbers => format!("a list of whole numbers, like {example}"),
        Kind::TextTable => format!("a table of strings, like {example}"),
        Kind::Table => format!("a table, like {example}"),
        Kind::Tables => format!("one or more {example} tables"),
    };
    let found = found.trim();
    if found.is_empty() || found.len() > MAX_QUOTED || found.contains('\n') {
        format!("must be {expected}")
    } else {
        format!("must be {expected}, not {found}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raw::{RawApp, RawDaemon, RawFile};

    #[test]
    fn nearest_catches_slips_and_nothing_else() {
        let keys = RawApp::known_keys(&[]).unwrap();
        let cases: &[(&str, &[&str], Option<&str>)] = &[
            ("autostrat", keys, Some("autostart")),
            ("comand", keys, Some("command")),
            ("Directory", keys, Some("directory")),
            ("env_file", keys, Some("env_files")),
            ("colour", keys, None),
            ("bogus", keys, None),
            ("a", keys, None),
            ("", keys, None),
            ("alway", &["always", "on-failure", "never"], Some("always")),
            (
                "on_failure",
                &["always", "on-failure", "never"],
                Some("on-failure"),
            ),
            (
                "onfailure",
                &["always", "on-failure", "never"],
                Some("on-failure"),
            ),
            ("sometimes", &["always", "on-failure", "never"], None),
            (
                "read_only_paths",
                &["read_only", "read_write"],
                Some("read_only"),
            ),
            ("readonly", &["read_only", "read_write"], Some("read_only")),
            (
                "max_retires",
                &["policy", "start_secs", "max_retries"],
                Some("max_retries"),
            ),
            ("maximum", &["initial", "max"], None),
            ("ping", &["notify", "http", "tcp", "none"], None),
            ("bridge", &["host", "none"], None),
            ("TREM", &["TERM", "INT", "HUP"], Some("TERM")),
            ("SIGTERM", &["TERM", "INT", "HUP"], None),
        ];
        for (word, candidates, want) in cases {
            assert_eq!(nearest(word, candidates), *want, "{word}");
        }
        let long = "autostart".repeat(10);
        assert_eq!(nearest(&long, keys), None, "longer than any key");
    }

    #[test]
    fn unknown_keys_say_what_was_meant() {
        let app: KnownKeys = RawApp::known_keys;
        let daemon: KnownKeys = RawDaemon::known_keys;
        let all = "remove it or use one of: description, app_groups, user, group, command, \
                   directory, venv, environment, env_files, umask, autostart, listen, readiness, \
                   restart, stop, logs, access, sandbox, limits";
        // (schema, table, key, message, hint)
        type Case<'a> = (KnownKeys, &'a [&'a str], &'a str, &'a str, Option<&'a str>);
        let cases: &[Case] = &[
            (
                app,
                &[],
                "autostrat",
                "unknown key; did you mean `autostart`?",
                None,
            ),
            (
                app,
                &["restart"],
                "signal",
                "unknown key here; `signal` is a key of [stop]",
                Some("move it there"),
            ),
            (
                app,
                &[],
                "policy",
                "unknown key here; `policy` is a key of [restart]",
                Some("move it there"),
            ),
            (
                app,
                &["sandbox"],
                "timeout",
                "unknown key here; `timeout` is a key of [readiness] and [stop]",
                Some("move it there"),
            ),
            (
                app,
                &[],
                "address",
                "unknown key here; `address` is a key of [[listen]] and [readiness]",
                Some("move it there"),
            ),
            (
                app,
                &[],
                "stopwaitsecs",
                "unknown key; supervisord's `stopwaitsecs` is `timeout` in [stop] here",
                Some("docs/migration.md maps supervisord's settings"),
            ),
            (
                app,
                &[],
                "autorestart",
                "unknown key; supervisord's `autorestart` is `policy` in [restart] here",
                Some("docs/migration.md maps supervisord's settings"),
            ),
            (app, &[], "colour", "unknown key", Some(all)),
            (
                app,
                &["listen"],
                "port",
                "unknown key",
                Some("remove it or use one of: address, name"),
            ),
            (
                daemon,
                &["defaults"],
                "signal",
                "unknown key here; `signal` is a key of [defaults.stop]",
                Some("move it there"),
            ),
            (
                daemon,
                &[],
                "socket",
                "unknown key here; `socket` is a key of [control]",
                Some("move it there"),
            ),
            (
                daemon,
                &["defaults", "stop"],
                "signall",
                "unknown key; did you mean `signal`?",
                None,
            ),
        ];
        for (known, table, key, message, hint) in cases {
            assert_eq!(
                unknown_key(*known, table, key),
                (message.to_string(), hint.map(str::to_owned)),
                "{table:?} {key}"
            );
        }
    }

    #[test]
    fn wrong_types_in_the_words_of_the_file() {
        let cases = [
            ("restart.max_retries", "\"five\"", "must be a whole number, like 5, not \"five\""),
            ("logs.keep", "5.5", "must be a whole number, like 5, not 5.5"),
            ("user", "3", "must be a string in quotes, like \"shop\", not 3"),
            ("umask", "27", "must be a string in quotes, like \"0027\", not 27"),
            ("autostart", "\"yes\"", "must be true or false, not \"yes\""),
            (
                "command",
                "\"/srv/shop/venv/bin/gunicorn shop.wsgi\"",
                "must be a list of strings, like [\"/srv/shop/venv/bin/gunicorn\", \"shop.wsgi\"], \
                 not \"/srv/shop/venv/bin/gunicorn shop.wsgi\"",
            ),
            (
                "command",
                "\"/srv/shop/venv/bin/gunicorn --workers 4 shop.wsgi\"",
                "must be a list of strings, like [\"/srv/shop/venv/bin/gunicorn\", \"shop.wsgi\"]",
            ),
            ("command", "3", "must be a list of strings, like [\"/srv/shop/venv/bin/gunicorn\", \"shop.wsgi\"], not 3"),
            ("sandbox.connect_ports", "[\"5432\"]", "must be a list of whole numbers, like [5432, 6379], not [\"5432\"]"),
            ("sandbox", "3", "must be a table, like [sandbox], not 3"),
            ("listen", "\"127.0.0.1:8001\"", "must be one or more [[listen]] tables, not \"127.0.0.1:8001\""),
            ("listen[1].address", "8001", "must be a string in quotes, like \"127.0.0.1:8001\", not 8001"),
            ("environment.PORT", "8001", "must be a string in quotes, like \"shop.settings\", not 8001"),
            ("defaults.environment.PORT", "8001", "must be a string in quotes, like \"shop.settings\", not 8001"),
            ("defaults.restart.backoff", "\"1s\"", "must be a table, like { initial = \"1s\", max = \"60s\" }, not \"1s\""),
            ("control.admin_users", "\"alice\"", "must be a list of strings, like [\"alice\"], not \"alice\""),
            ("no.such.key", "1", "serde's words"),
        ];
        for (key, found, want) in cases {
            assert_eq!(wrong_type(key, found, "serde's words"), want, "{key}");
        }
    }

    /// Every key of both files has an example, and every example of a
    /// value is one the key takes.
    #[test]
    fn every_key_has_an_example_its_key_takes() {
        for known in [RawApp::known_keys as KnownKeys, RawDaemon::known_keys] {
            for table in tables(known, &[]) {
                if table.first() == Some(&"defaults") {
                    continue;
                }
                for key in known(&table).unwrap_or_default() {
                    let dotted = [table.as_slice(), &[key]].concat().join(".");
                    assert!(
                        EXAMPLES.iter().any(|(name, _, _)| *name == dotted),
                        "no example for {dotted}"
                    );
                }
            }
        }
        let app_base = "user = \"shop\"\ncommand = [\"/srv/shop/venv/bin/gunicorn\"]\n\
                        directory = \"/srv/shop/current\"\n[[listen]]\naddress = \"127.0.0.1:8001\"\n";
        let daemon_keys = RawDaemon::known_keys(&[]).unwrap();
        for (key, kind, example) in EXAMPLES {
            // A header is not a value; a variable has no key of its own.
            let header = matches!(kind, Kind::Table | Kind::Tables) && example.starts_with('[');
            if header || key.contains('*') {
                continue;
            }
            let top = key.split('.').next().unwrap_or_default();
            let result = if daemon_keys.contains(&top) {
                let text = with_value("", key, example);
                crate::validate::validate_daemon(std::path::Path::new("appvisor.toml"), &text)
                    .map(drop)
                    .map_err(|errors| format!("{text}\n{errors}"))
            } else {
                let text = with_value(app_base, key, example);
                crate::validate::validate_app(
                    &crate::AppName::new("shop").unwrap(),
                    std::path::Path::new("shop.toml"),
                    &text,
                    &crate::Defaults::none(),
                    &|_| Ok(String::new()),
                )
                .map(drop)
                .map_err(|errors| format!("{text}\n{errors}"))
            };
            assert!(result.is_ok(), "{key} = {example}: {}", result.unwrap_err());
        }
    }

    /// `base` with `key` (dotted; into the first `[[listen]]` for its
    /// keys) set to the TOML value `example`.
    fn with_value(base: &str, key: &str, example: &str) -> String {
        let mut doc: toml::Table = base.parse().unwrap();
        let value = format!("v = {example}")
            .parse::<toml::Table>()
            .unwrap()
            .remove("v")
            .unwrap();
        let parts: Vec<&str> = key.split('.').collect();
        let (last, tables) = parts.split_last().unwrap();
        let mut table = &mut doc;
        for part in tables {
            let entry = table
                .entry(part.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            table = match entry {
                toml::Value::Table(inner) => inner,
                toml::Value::Array(items) => items[0].as_table_mut().unwrap(),
                other => panic!("{part} is {other}"),
            };
        }
        table.insert(last.to_string(), value);
        doc.to_string()
    }
}
