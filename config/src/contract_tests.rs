//! The documented contract and the packaged settings agree with the
//! parser: every key the daemon accepts is in `docs/configuration.md` (the
//! source of appvisor.toml(5)) and every key there is one it accepts; the
//! document's examples validate; the `appvisor.toml` the package installs
//! is the built-in defaults, every key of them, commented out.

use std::collections::BTreeSet;
use std::path::Path;

use super::raw::{app_file_keys, daemon_file_keys};
use super::spec::AppName;
use super::validate::{validate_app, validate_daemon, Defaults};

const CONFIGURATION: &str = include_str!("../../docs/configuration.md");
const PACKAGED_SETTINGS: &str = include_str!("../../debian/appvisor.toml");

/// The lines of the `## HEADING` section of `markdown`.
fn section<'a>(markdown: &'a str, heading: &str) -> Vec<&'a str> {
    let start = format!("## {heading}");
    markdown
        .lines()
        .skip_while(|line| *line != start)
        .skip(1)
        .take_while(|line| !line.starts_with("## "))
        .collect()
}

/// The keys of the reference tables in a section: each row's first cell.
fn documented_keys(lines: &[&str]) -> BTreeSet<String> {
    lines
        .iter()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split_once("` |"))
        .map(|(key, _)| key.to_owned())
        .collect()
}

/// The ```toml blocks of `markdown`.
fn toml_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match (&mut current, line) {
            (None, "```toml") => current = Some(String::new()),
            (Some(_), "```") => blocks.extend(current.take()),
            (Some(block), line) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

#[test]
fn every_key_the_parser_accepts_is_documented_and_no_other() {
    let files = [
        ("Daemon settings", daemon_file_keys()),
        ("Applications", app_file_keys()),
    ];
    for (heading, keys) in files {
        let parser: BTreeSet<String> = keys.into_iter().collect();
        let documented = documented_keys(&section(CONFIGURATION, heading));
        let undocumented: Vec<_> = parser.difference(&documented).collect();
        let unknown: Vec<_> = documented.difference(&parser).collect();
        assert!(
            undocumented.is_empty() && unknown.is_empty(),
            "docs/configuration.md, \"## {heading}\": add a row for each key the parser \
             accepts {undocumented:?}, remove each row the parser refuses {unknown:?}"
        );
    }
}

#[test]
fn the_documented_examples_validate_and_the_settings_one_is_the_defaults() {
    let blocks = toml_blocks(CONFIGURATION);
    assert_eq!(blocks.len(), 2, "docs/configuration.md has two examples");
    let file = Path::new("docs/configuration.md");
    let (spec, defaults) = validate_daemon(file, &blocks[0])
        .unwrap_or_else(|errors| panic!("the settings example: {errors}"));
    let (builtin, _) = validate_daemon(file, "").expect("no settings are valid");
    assert_eq!(spec, builtin, "the settings example shows the defaults");
    assert_eq!(defaults.file(), None, "its [defaults] is empty");

    let name = AppName::new("shop").expect("a valid name");
    let read_env_file = |_: &Path| Ok(String::new());
    validate_app(&name, file, &blocks[1], &Defaults::none(), &read_env_file)
        .unwrap_or_else(|errors| panic!("the app example: {errors}"));
}

/// `#key = value` and `#[table]` lines are settings commented out; `# ...`
/// is prose.
fn uncomment(text: &str) -> String {
    text.lines()
        .map(|line| match line.strip_prefix('#') {
            Some(rest) if !rest.is_empty() && !rest.starts_with([' ', '#']) => rest,
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The dotted keys set in `table`; an empty table is a key of its own.
fn keys_of(table: &toml::Table, prefix: &str, out: &mut BTreeSet<String>) {
    for (key, value) in table {
        let dotted = format!("{prefix}{key}");
        match value {
            toml::Value::Table(inner) if !inner.is_empty() => {
                keys_of(inner, &format!("{dotted}."), out)
            }
            _ => {
                out.insert(dotted);
            }
        }
    }
}

#[test]
fn the_packaged_settings_are_every_default_commented_out() {
    let file = Path::new("debian/appvisor.toml");
    let (commented, _) = validate_daemon(file, PACKAGED_SETTINGS)
        .unwrap_or_else(|errors| panic!("as shipped: {errors}"));
    let (builtin, _) = validate_daemon(file, "").expect("no settings are valid");
    assert_eq!(
        commented, builtin,
        "as shipped, everything is commented out"
    );

    let uncommented = uncomment(PACKAGED_SETTINGS);
    let (spec, defaults) = validate_daemon(file, &uncommented)
        .unwrap_or_else(|errors| panic!("uncommented: {errors}\n{uncommented}"));
    assert_eq!(spec, builtin, "each commented line shows the default");
    assert_eq!(defaults.file(), None, "[defaults] is empty");

    let table: toml::Table = uncommented.parse().expect("valid toml");
    let mut shown = BTreeSet::new();
    keys_of(&table, "", &mut shown);
    let every: BTreeSet<String> = daemon_file_keys().into_iter().collect();
    assert_eq!(shown, every, "debian/appvisor.toml shows every key");
}
