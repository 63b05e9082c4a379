//! Where each key of an app sits, in its file or in `[defaults]`, so that
//! an error found after validation (a user that does not exist, a listen
//! address another app holds, a weak sandbox) names the file, line, column
//! and key like one found while parsing. Pure: works on the files' text.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use toml::de::{DeTable, DeValue};

use super::error::{ConfigError, SourceFile};
use super::security::Weakness;

/// Where each key of an app sits, in the app file or in `[defaults]`.
///
/// Keys are dotted as errors name them (`listen[0].address`,
/// `environment.DJANGO_SETTINGS_MODULE`, `sandbox`), without the
/// `defaults.` prefix: the key an app's setting has, wherever it came from.
/// Tables merge key by key across the layers and everything else is taken
/// whole from the first layer that has it, as `validate` merges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Positions {
    /// Each layer's file and the prefix its keys are shown with, highest
    /// priority first: the app file is layer 0.
    layers: Vec<(PathBuf, &'static str)>,
    keys: BTreeMap<String, Place>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Place {
    layer: usize,
    line: usize,
    column: usize,
    table: bool,
}

impl Positions {
    /// From the layers, highest priority first: each file's text, and the
    /// table its keys sit in (`"defaults."` for `[defaults]` in
    /// `appvisor.toml`, `""` for a whole app file). A text that does not
    /// parse contributes nothing.
    pub(super) fn of(layers: &[(SourceFile<'_>, &'static str)]) -> Positions {
        let mut positions = Positions {
            layers: layers
                .iter()
                .map(|(source, prefix)| (source.path.to_owned(), *prefix))
                .collect(),
            keys: BTreeMap::new(),
        };
        for (layer, (source, prefix)) in layers.iter().enumerate() {
            let Ok(document) = DeTable::parse(source.text) else {
                continue;
            };
            let table = match prefix.strip_suffix('.') {
                None => Some(document.get_ref()),
                Some(name) => document
                    .get_ref()
                    .get(name)
                    .and_then(|value| value.get_ref().as_table()),
            };
            let mut found = Vec::new();
            if let Some(table) = table {
                walk(table, "", &mut found);
            }
            for (key, offset, table) in found {
                if positions.shadowed(&key, layer) {
                    continue;
                }
                let (line, column) = source.position(offset);
                positions.keys.insert(
                    key,
                    Place {
                        layer,
                        line,
                        column,
                        table,
                    },
                );
            }
        }
        positions
    }

    /// Whether a higher layer than `layer` already decides `key`: it has
    /// the key itself, or has one of its ancestors as a value taken whole
    /// (an array: `command`, `[[listen]]`).
    fn shadowed(&self, key: &str, layer: usize) -> bool {
        let higher = |key: &str| self.keys.get(key).filter(|place| place.layer < layer);
        higher(key).is_some()
            || ancestors(key).any(|ancestor| higher(ancestor).is_some_and(|place| !place.table))
    }

    /// The place of `key`, or of the nearest key that holds it (the
    /// `[sandbox]` table for a `sandbox.connect_ports` the file leaves
    /// out); a variable that is in no `environment` table came from
    /// `env_files`.
    fn find(&self, key: &str) -> Option<&Place> {
        if let Some(place) = self.keys.get(key) {
            return Some(place);
        }
        if key.starts_with("environment.") {
            if let Some(place) = self.keys.get("env_files") {
                return Some(place);
            }
        }
        ancestors(key).find_map(|ancestor| self.keys.get(ancestor))
    }

    /// Only the places of `key` and of the keys below it (`listen` keeps
    /// `listen[0].address`): all a judgement kept for later needs to place
    /// an error about that key, without every key of the file.
    pub fn only(&self, key: &str) -> Positions {
        let below = |name: &str| {
            name.strip_prefix(key)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
        };
        Positions {
            layers: self.layers.clone(),
            keys: self
                .keys
                .iter()
                .filter(|(name, _)| below(name))
                .map(|(name, place)| (name.clone(), *place))
                .collect(),
        }
    }

    /// `error`, about the app file, at the position of its key: in the
    /// file that sets the key (`appvisor.toml`, as `defaults.KEY`, for a
    /// key from `[defaults]`), or at the start of the app file when no
    /// file has it (a required key left out). Errors that have a position
    /// already, or are about another file, are returned as they are.
    pub fn fill(&self, error: ConfigError) -> ConfigError {
        let Some((app_file, _)) = self.layers.first() else {
            return error;
        };
        if error.line.is_some() || error.file != *app_file {
            return error;
        }
        let Some(key) = error.key.clone() else {
            return error;
        };
        match self.find(&key) {
            Some(place) => {
                let (file, prefix) = &self.layers[place.layer];
                ConfigError {
                    file: file.clone(),
                    key: Some(format!("{prefix}{key}")),
                    ..error
                }
                .with_position(place.line, place.column)
            }
            None => error.with_position(1, 1),
        }
    }

    /// `weakness` as a message at the position of its key (see
    /// [`Positions::fill`]); `file` is the app file.
    pub fn locate(&self, file: &Path, weakness: &Weakness) -> ConfigError {
        self.fill(
            ConfigError::new(file, &weakness.message)
                .with_key(&weakness.key)
                .with_hint(&weakness.hint),
        )
    }
}

/// The keys that hold `key`, nearest first: `listen[0].address` is held by
/// `listen[0]`, then `listen`.
fn ancestors(key: &str) -> impl Iterator<Item = &str> {
    let mut rest = key;
    std::iter::from_fn(move || {
        let cut = rest.rfind(['.', '['])?;
        rest = &rest[..cut];
        Some(rest)
    })
}

/// Every key below `table`, dotted under `prefix`, with the byte offset of
/// its value (a table's header) and whether it is a table.
fn walk(table: &DeTable<'_>, prefix: &str, found: &mut Vec<(String, usize, bool)>) {
    for (key, value) in table.iter() {
        let name = if prefix.is_empty() {
            key.get_ref().to_string()
        } else {
            format!("{prefix}.{}", key.get_ref())
        };
        value_keys(value.get_ref(), value.span().start, name, found);
    }
}

fn value_keys(
    value: &DeValue<'_>,
    offset: usize,
    name: String,
    found: &mut Vec<(String, usize, bool)>,
) {
    match value {
        DeValue::Table(inner) => {
            found.push((name.clone(), offset, true));
            walk(inner, &name, found);
        }
        DeValue::Array(items) => {
            found.push((name.clone(), offset, false));
            for (i, item) in items.iter().enumerate() {
                value_keys(
                    item.get_ref(),
                    item.span().start,
                    format!("{name}[{i}]"),
                    found,
                );
            }
        }
        _ => found.push((name, offset, false)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::LineIndex;

    const APP: &str = "\
user = \"shop\"
command = [\"/srv/shop/venv/bin/gunicorn\", \"shop.wsgi\"]
environment = { A = \"1\" }
[[listen]]
address = \"127.0.0.1:8001\"
[sandbox]
read_write = [\"/srv/shop/shared\"]
";

    const DAEMON: &str = "\
apps_dir = \"/etc/appvisor/apps.d\"
[defaults]
group = \"web\"
command = [\"/bin/false\", \"a\", \"b\"]
environment = { B = \"2\", A = \"0\" }
[defaults.sandbox]
read_only = [\"/srv/common\"]
";

    fn positions() -> Positions {
        let (app_lines, daemon_lines) = (LineIndex::new(APP), LineIndex::new(DAEMON));
        let app = SourceFile::new(Path::new("apps.d/shop.toml"), APP, &app_lines);
        let daemon = SourceFile::new(Path::new("appvisor.toml"), DAEMON, &daemon_lines);
        Positions::of(&[(app, ""), (daemon, "defaults.")])
    }

    #[test]
    fn errors_go_to_the_key_in_the_file_that_sets_it() {
        let positions = positions();
        let error = |key: &str| {
            positions
                .fill(
                    ConfigError::new("apps.d/shop.toml", "something is wrong")
                        .with_key(key)
                        .with_hint("fix it"),
                )
                .to_string()
        };
        let cases = [
            ("user", "apps.d/shop.toml:1:8: user"),
            ("command[1]", "apps.d/shop.toml:2:43: command[1]"),
            (
                "listen[0].address",
                "apps.d/shop.toml:5:11: listen[0].address",
            ),
            (
                "sandbox.read_write[0]",
                "apps.d/shop.toml:7:15: sandbox.read_write[0]",
            ),
            // From [defaults], where the app is silent.
            ("group", "appvisor.toml:3:9: defaults.group"),
            (
                "environment.B",
                "appvisor.toml:5:21: defaults.environment.B",
            ),
            (
                "sandbox.read_only[0]",
                "appvisor.toml:7:14: defaults.sandbox.read_only[0]",
            ),
            // The app's own wins, and its command is taken whole.
            ("environment.A", "apps.d/shop.toml:3:21: environment.A"),
            ("command[2]", "apps.d/shop.toml:2:11: command[2]"),
            // Left out: the table that would hold it, or the file's start.
            (
                "sandbox.connect_ports",
                "apps.d/shop.toml:6:1: sandbox.connect_ports",
            ),
            ("directory", "apps.d/shop.toml:1:1: directory"),
        ];
        for (key, want) in cases {
            assert_eq!(
                error(key),
                format!("{want}: something is wrong (fix it)"),
                "{key}"
            );
        }
    }

    #[test]
    fn errors_with_a_position_or_about_another_file_are_kept() {
        let positions = positions();
        let placed = ConfigError::new("apps.d/shop.toml", "x")
            .with_key("user")
            .with_position(9, 9);
        assert_eq!(positions.fill(placed.clone()), placed);
        let env_file = ConfigError::new("/etc/shop.env", "x").with_key("user");
        assert_eq!(positions.fill(env_file.clone()), env_file);
        assert_eq!(
            Positions::default().fill(env_file.clone()),
            env_file,
            "no layers"
        );
    }

    #[test]
    fn ancestors_nearest_first() {
        assert_eq!(
            ancestors("listen[0].address").collect::<Vec<_>>(),
            ["listen[0]", "listen"]
        );
        assert_eq!(ancestors("user").count(), 0);
    }
}
