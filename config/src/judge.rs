//! One app file judged the same way by `check` and by the daemon: read and
//! validated, one file parsed at a time, then resolved; and the listen
//! conflicts between apps, each placed at its line. `check` judges files
//! one after the other and adds its warnings; the daemon judges several at
//! once on its blocking pool, each within a deadline. What a file comes to
//! is decided here, once.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::{ConfigError, ConfigErrors};
use crate::load::load_valid_app_named;
use crate::resolve::{check_conflicts, ResolvedApp, UserDb};
use crate::security::SecretGroups;
use crate::spec::AppName;
use crate::validate::{Defaults, ValidApp};

/// Held while a file is read and parsed: a parsed TOML table takes up to a
/// hundred times its text (`load::MAX_CONFIG_FILE`), so parsing costs one
/// file's worth of memory however many files are judged side by side.
/// User lookups, which mostly wait, are not held up by it.
static PARSING: Mutex<()> = Mutex::new(());

/// One app file, judged.
#[derive(Debug, Clone, PartialEq)]
pub struct Judged {
    pub file: PathBuf,
    /// What a file that validated came to; else why it did not.
    pub outcome: Result<Validated, ConfigErrors>,
}

/// A file that validated, and whether its users, groups and paths resolve.
#[derive(Debug, Clone, PartialEq)]
pub struct Validated {
    /// Its spec, its warnings and where its keys sit.
    pub valid: ValidApp,
    pub resolved: Result<ResolvedApp, ConfigErrors>,
}

impl Judged {
    /// The app, when the file validated and resolved; else every error.
    pub fn into_app(self) -> Result<ResolvedApp, ConfigErrors> {
        self.outcome.and_then(|validated| validated.resolved)
    }
}

/// Reads, validates and resolves the app file `path` as the app `name`,
/// merged over `defaults`, every error at its line; `secrets` are the
/// host's, scanned once for every file judged together.
pub fn judge_app(
    path: &Path,
    name: &AppName,
    defaults: &Defaults,
    db: &dyn UserDb,
    secrets: &SecretGroups,
) -> Judged {
    let valid = {
        let _parsing = PARSING.lock().unwrap_or_else(|e| e.into_inner());
        load_valid_app_named(path, name, defaults)
    };
    Judged {
        file: path.to_owned(),
        outcome: valid.map(|valid| Validated {
            resolved: valid.resolve_with(db, secrets),
            valid,
        }),
    }
}

/// The listen addresses two of `apps` claim, each reported on the later
/// app of the pair (the apps already in place go first, so the blame lands
/// on the newcomer) at the line of its `listen` key.
pub fn conflicts<'a>(apps: impl IntoIterator<Item = &'a ValidApp>) -> Vec<ConfigError> {
    let apps: Vec<&ValidApp> = apps.into_iter().collect();
    let specs: Vec<_> = apps.iter().map(|valid| valid.spec.clone()).collect();
    check_conflicts(&specs)
        .into_iter()
        .map(
            |conflict| match apps.iter().find(|valid| valid.spec.file == conflict.file) {
                Some(valid) => valid.positions.fill(conflict),
                None => conflict,
            },
        )
        .collect()
}
