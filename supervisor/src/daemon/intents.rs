//! Operator intent: which apps were stopped by hand, and by whom, kept in
//! `state_dir` so it survives updates and daemon restarts.
//!
//! The intent is kept twice with the same content, `stopped.json` and
//! `stopped.json.bak`. Each copy is written whole to a temporary file,
//! fsynced, renamed over the copy and the directory fsynced, `stopped.json`
//! first. So at every instant a complete copy is on disk, and
//! `stopped.json`, when it reads, is never older than the backup:
//!
//! - loading believes `stopped.json`, else the backup, and says so in the
//!   log and in the admins' status: an unreadable file (garbled, cut short,
//!   a directory) never silently restarts an app an operator stopped;
//! - an unreadable `stopped.json` is renamed aside, kept for a person to
//!   look at, so the next save can take its place;
//! - a save that fails is the caller's error (`appctl stop` exits non-zero);
//!   the intent still holds in memory, and the next save (any start or
//!   stop, `appctl update`, SIGHUP, shutdown) writes it again.
//!
//! [`choose`] (which copy to believe) is pure. Everything else here is
//! blocking file I/O: the daemon runs it off the async runtime.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use appvisor_protocol::StoppedBy;

use super::plural;
use crate::audit::unix_now;
use crate::locks;

/// The file name of the intent in `state_dir`.
const FILE_NAME: &str = "stopped.json";
/// The file name of its backup copy.
const BACKUP_NAME: &str = "stopped.json.bak";
/// Larger copies are not read: a few dozen bytes an app, so this is far
/// beyond any host.
const MAX_SIZE: u64 = 16 << 20;

/// Apps stopped by hand, by name.
pub(super) type Stopped = BTreeMap<String, StoppedBy>;

/// What reading one copy gave.
#[derive(Debug, Clone, PartialEq)]
enum Found {
    Missing,
    Read(Stopped),
    /// Why it could not be believed.
    Unreadable(String),
}

/// What loading decided: the intent to hold, and what to tell an admin.
#[derive(Debug, Clone, PartialEq)]
struct Choice {
    stopped: Stopped,
    /// For the log and the admins' status; `None` when all is well.
    notice: Option<Notice>,
    /// Copies that exist but cannot be believed: moved aside, kept for a
    /// person to look at, so that saving can replace them.
    set_aside: Vec<&'static str>,
    /// Write both copies from the one believed now, so the disk holds two
    /// good copies again.
    repair: bool,
}

#[derive(Debug, Clone, PartialEq)]
struct Notice {
    /// No copy could be read: apps stopped by hand may have been started.
    lost: bool,
    message: String,
}

/// Which copy to believe. `stopped.json` is written first, so when it
/// reads it is the newest; the backup stands in when it does not.
fn choose(primary: Found, backup: Found) -> Choice {
    let set_aside = [(FILE_NAME, &primary), (BACKUP_NAME, &backup)]
        .into_iter()
        .filter(|(_, copy)| matches!(copy, Found::Unreadable(_)))
        .map(|(name, _)| name)
        .collect();
    let problem = match &primary {
        Found::Read(_) => String::new(),
        Found::Missing => "is missing".to_owned(),
        Found::Unreadable(why) => format!("is unreadable ({why})"),
    };
    match (primary, backup) {
        (Found::Read(stopped), backup) => Choice {
            // A crash between the two renames leaves an older backup.
            repair: backup != Found::Read(stopped.clone()),
            stopped,
            notice: None,
            set_aside,
        },
        // A host where nothing was ever stopped by hand.
        (Found::Missing, Found::Missing) => Choice {
            stopped: Stopped::new(),
            notice: None,
            set_aside,
            repair: false,
        },
        (_, Found::Read(stopped)) => Choice {
            notice: Some(Notice {
                lost: false,
                message: format!(
                    "{FILE_NAME} {problem}: operator intent read from its backup {BACKUP_NAME} \
                     ({} stopped by hand)",
                    plural(stopped.len(), "app")
                ),
            }),
            stopped,
            set_aside,
            repair: true,
        },
        (_, backup) => {
            let backup = match backup {
                Found::Unreadable(why) => format!("its backup {BACKUP_NAME} is unreadable ({why})"),
                _ => format!("it has no backup {BACKUP_NAME}"),
            };
            Choice {
                stopped: Stopped::new(),
                notice: Some(Notice {
                    lost: true,
                    message: format!(
                        "{FILE_NAME} {problem} and {backup}: apps stopped by hand before this \
                         start may have been started; stop them again"
                    ),
                }),
                set_aside,
                // Nothing to write from: the next start or stop saves.
                repair: false,
            }
        }
    }
}

/// A save that did not reach the disk.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{step} {}: {message}", path.display())]
pub(super) struct SaveError {
    step: &'static str,
    path: PathBuf,
    /// The OS error, as text: the error is kept as the reason a later
    /// status shows.
    message: String,
}

impl SaveError {
    fn new(step: &'static str, path: &Path, error: &io::Error) -> SaveError {
        SaveError {
            step,
            path: path.to_owned(),
            message: error.to_string(),
        }
    }
}

/// Operator intent, in memory and in `state_dir`.
#[derive(Debug)]
pub(super) struct Intents {
    dir: PathBuf,
    state: Mutex<State>,
    /// What loading found, when it was not all well.
    loaded: Option<String>,
}

#[derive(Debug, Default)]
struct State {
    stopped: Stopped,
    /// Why the last save failed, while the disk is behind memory.
    unsaved: Option<SaveError>,
}

impl Intents {
    /// Reads the intent from `state_dir` (see the module docs). Blocking.
    pub(super) fn load(state_dir: &Path) -> Intents {
        let choice = choose(
            read_copy(&state_dir.join(FILE_NAME)),
            read_copy(&state_dir.join(BACKUP_NAME)),
        );
        let mut message = choice.notice.as_ref().map(|n| n.message.clone());
        for name in &choice.set_aside {
            let aside = aside_name(state_dir, name);
            let outcome = match fs::rename(state_dir.join(name), state_dir.join(&aside)) {
                Ok(()) => format!("the unreadable {name} is kept as {aside}"),
                Err(error) => format!(
                    "moving the unreadable {name} aside to {aside} failed ({error}): saving \
                     operator intent fails until it is removed"
                ),
            };
            match &mut message {
                Some(message) => message.push_str(&format!("; {outcome}")),
                None => tracing::warn!(dir = %state_dir.display(), "{outcome}"),
            }
        }
        if let (Some(message), Some(notice)) = (&message, &choice.notice) {
            if notice.lost {
                tracing::error!(dir = %state_dir.display(), "{message}");
            } else {
                tracing::warn!(dir = %state_dir.display(), "{message}");
            }
        }
        let intents = Intents {
            dir: state_dir.to_owned(),
            state: Mutex::new(State {
                stopped: choice.stopped,
                unsaved: None,
            }),
            loaded: message,
        };
        if choice.repair {
            // An error is logged and kept for status by save itself.
            let _ = intents.save(&mut intents.lock());
        }
        intents
    }

    pub(super) fn get(&self, app: &str) -> Option<StoppedBy> {
        self.lock().stopped.get(app).cloned()
    }

    /// Records that `app` was stopped by hand (`Some`) or started (`None`)
    /// and saves the intent when it changed (or an earlier save failed).
    /// On error the intent still holds in memory. Blocking.
    pub(super) fn record(&self, app: &str, stopped_by: Option<StoppedBy>) -> Result<(), SaveError> {
        let mut state = self.lock();
        let changed = match stopped_by {
            Some(by) => {
                state.stopped.insert(app.to_owned(), by);
                true
            }
            None => state.stopped.remove(app).is_some(),
        };
        if changed || state.unsaved.is_some() {
            self.save(&mut state)
        } else {
            Ok(())
        }
    }

    /// Saves the intent again if an earlier save failed. Blocking.
    pub(super) fn save_pending(&self) -> Result<(), SaveError> {
        let mut state = self.lock();
        if state.unsaved.is_some() {
            self.save(&mut state)
        } else {
            Ok(())
        }
    }

    /// What an admin should know about the intent file: what loading found,
    /// and a save that has not reached the disk.
    pub(super) fn notices(&self) -> Vec<String> {
        let state = self.lock();
        let unsaved = state.unsaved.as_ref().map(|error| {
            format!(
                "operator intent is not saved ({error}): apps stopped or started by hand since \
                 then revert if appvisord restarts before a later save succeeds"
            )
        });
        self.loaded.iter().cloned().chain(unsaved).collect()
    }

    fn save(&self, state: &mut State) -> Result<(), SaveError> {
        let bytes = serde_json::to_vec_pretty(&state.stopped).expect("intent serializes");
        let saved = [FILE_NAME, BACKUP_NAME]
            .iter()
            .try_for_each(|name| write_copy(&self.dir, name, &bytes));
        match &saved {
            Ok(()) => {
                if state.unsaved.take().is_some() {
                    tracing::info!(dir = %self.dir.display(), "operator intent saved again");
                }
            }
            Err(error) => {
                tracing::error!(%error, "saving operator intent");
                state.unsaved = Some(error.clone());
            }
        }
        saved
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        locks::lock(&self.state)
    }
}

/// A free name to keep an unreadable copy under:
/// `NAME.unreadable-SECONDS`, with `.N` added if that one is taken.
fn aside_name(dir: &Path, name: &str) -> String {
    let base = format!("{name}.unreadable-{}", unix_now());
    std::iter::once(base.clone())
        .chain((1..).map(|n| format!("{base}.{n}")))
        .find(|candidate| fs::symlink_metadata(dir.join(candidate)).is_err())
        .expect("an unbounded list of names has a free one")
}

/// Reads one copy, believing only a regular file of sane size that parses.
fn read_copy(path: &Path) -> Found {
    // O_NONBLOCK: a FIFO put in its place must not hang the read.
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
    {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Found::Missing,
        Err(error) => return Found::Unreadable(error.to_string()),
    };
    let meta = match file.metadata() {
        Ok(meta) => meta,
        Err(error) => return Found::Unreadable(error.to_string()),
    };
    if meta.is_dir() {
        return Found::Unreadable("a directory".to_owned());
    }
    if !meta.is_file() {
        return Found::Unreadable("not a regular file".to_owned());
    }
    let mut bytes = Vec::new();
    if let Err(error) = file.take(MAX_SIZE + 1).read_to_end(&mut bytes) {
        return Found::Unreadable(error.to_string());
    }
    if bytes.len() as u64 > MAX_SIZE {
        return Found::Unreadable(format!("larger than {} MiB", MAX_SIZE >> 20));
    }
    match serde_json::from_slice(&bytes) {
        Ok(stopped) => Found::Read(stopped),
        Err(error) => Found::Unreadable(format!("not the JSON appvisord writes: {error}")),
    }
}

/// Replaces `dir/name` with `bytes`: a temporary file, written and
/// fsynced, renamed over it, then the directory fsynced so the rename
/// itself survives a crash.
fn write_copy(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), SaveError> {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
            .map_err(|e| SaveError::new("creating", &tmp, &e))?;
        file.write_all(bytes)
            .map_err(|e| SaveError::new("writing", &tmp, &e))?;
        file.sync_all()
            .map_err(|e| SaveError::new("syncing", &tmp, &e))?;
        fs::rename(&tmp, &path).map_err(|e| SaveError::new("renaming into", &path, &e))
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written?;
    File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(|e| SaveError::new("syncing the directory", dir, &e))
}

impl super::Daemon {
    /// Records a stop (`Some`) or start (`None`) by hand, saved in
    /// `state_dir` off the runtime (it fsyncs).
    pub(super) async fn record_intent(
        &self,
        name: &str,
        stopped_by: Option<StoppedBy>,
    ) -> Result<(), SaveError> {
        let intents = self.intents.clone();
        let name = name.to_owned();
        tokio::task::spawn_blocking(move || intents.record(&name, stopped_by))
            .await
            .expect("saving operator intent does not panic")
    }

    /// Saves operator intent again if an earlier save failed; the error is
    /// logged and shown in status.
    pub(super) async fn save_pending_intent(&self) {
        let intents = self.intents.clone();
        let _ = tokio::task::spawn_blocking(move || intents.save_pending()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn by(user: &str) -> StoppedBy {
        StoppedBy {
            user: user.to_owned(),
            uid: 1000,
            at: 1_700_000_000,
        }
    }

    fn stopped(apps: &[&str]) -> Stopped {
        apps.iter()
            .map(|a| ((*a).to_owned(), by("alice")))
            .collect()
    }

    /// One row of the decision table.
    struct Case {
        primary: Found,
        backup: Found,
        /// The apps held stopped.
        held: &'static [&'static str],
        notice: Option<&'static str>,
        lost: bool,
        set_aside: &'static [&'static str],
        repair: bool,
    }

    #[test]
    fn choose_believes_the_primary_then_the_backup_and_says_so() {
        let garbled = || Found::Unreadable("not the JSON appvisord writes: EOF".to_owned());
        let dir = || Found::Unreadable("a directory".to_owned());
        let quiet = |primary, backup, held, set_aside, repair| Case {
            primary,
            backup,
            held,
            notice: None,
            lost: false,
            set_aside,
            repair,
        };
        let table = [
            quiet(Found::Missing, Found::Missing, &[], &[], false),
            quiet(
                Found::Read(stopped(&["shop"])),
                Found::Read(stopped(&["shop"])),
                &["shop"],
                &[],
                false,
            ),
            // Written by a daemon that kept no backup yet.
            quiet(Found::Read(stopped(&["shop"])), Found::Missing, &["shop"], &[], true),
            // The primary is written first: a crash between the renames.
            quiet(
                Found::Read(stopped(&["shop"])),
                Found::Read(stopped(&[])),
                &["shop"],
                &[],
                true,
            ),
            quiet(Found::Read(stopped(&[])), garbled(), &[], &["stopped.json.bak"], true),
            Case {
                primary: garbled(),
                backup: Found::Read(stopped(&["shop", "blog"])),
                held: &["blog", "shop"],
                notice: Some("stopped.json is unreadable (not the JSON appvisord writes: EOF): operator intent read from its backup stopped.json.bak (2 apps stopped by hand)"),
                lost: false,
                set_aside: &["stopped.json"],
                repair: true,
            },
            Case {
                primary: dir(),
                backup: Found::Read(stopped(&["shop"])),
                held: &["shop"],
                notice: Some("stopped.json is unreadable (a directory): operator intent read from its backup stopped.json.bak (1 app stopped by hand)"),
                lost: false,
                set_aside: &["stopped.json"],
                repair: true,
            },
            Case {
                primary: Found::Missing,
                backup: Found::Read(stopped(&["shop"])),
                held: &["shop"],
                notice: Some("stopped.json is missing: operator intent read from its backup stopped.json.bak (1 app stopped by hand)"),
                lost: false,
                set_aside: &[],
                repair: true,
            },
            Case {
                primary: garbled(),
                backup: Found::Missing,
                held: &[],
                notice: Some("stopped.json is unreadable (not the JSON appvisord writes: EOF) and it has no backup stopped.json.bak: apps stopped by hand before this start may have been started; stop them again"),
                lost: true,
                set_aside: &["stopped.json"],
                repair: false,
            },
            Case {
                primary: garbled(),
                backup: dir(),
                held: &[],
                notice: Some("stopped.json is unreadable (not the JSON appvisord writes: EOF) and its backup stopped.json.bak is unreadable (a directory): apps stopped by hand before this start may have been started; stop them again"),
                lost: true,
                set_aside: &["stopped.json", "stopped.json.bak"],
                repair: false,
            },
            Case {
                primary: Found::Missing,
                backup: garbled(),
                held: &[],
                notice: Some("stopped.json is missing and its backup stopped.json.bak is unreadable (not the JSON appvisord writes: EOF): apps stopped by hand before this start may have been started; stop them again"),
                lost: true,
                set_aside: &["stopped.json.bak"],
                repair: false,
            },
        ];
        for case in table {
            let name = format!("{:?} / {:?}", case.primary, case.backup);
            let choice = choose(case.primary, case.backup);
            let apps: Vec<&str> = choice.stopped.keys().map(String::as_str).collect();
            assert_eq!(apps, case.held, "{name}");
            assert_eq!(
                choice.notice.as_ref().map(|n| n.message.as_str()),
                case.notice,
                "{name}"
            );
            assert_eq!(
                choice.notice.as_ref().is_some_and(|n| n.lost),
                case.lost,
                "{name}"
            );
            assert_eq!(choice.set_aside, case.set_aside, "{name}");
            assert_eq!(choice.repair, case.repair, "{name}");
        }
    }

    #[test]
    fn read_copy_believes_only_a_regular_file_that_parses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stopped.json");
        assert_eq!(read_copy(&path), Found::Missing);
        fs::write(
            &path,
            r#"{"shop":{"user":"alice","uid":1000,"at":1700000000}}"#,
        )
        .unwrap();
        assert_eq!(read_copy(&path), Found::Read(stopped(&["shop"])));
        fs::write(&path, r#"{"shop":{"user":"al"#).unwrap();
        assert!(
            matches!(read_copy(&path), Found::Unreadable(why) if why.starts_with("not the JSON appvisord writes")),
            "cut short"
        );
        fs::remove_file(&path).unwrap();
        fs::create_dir(&path).unwrap();
        assert_eq!(
            read_copy(&path),
            Found::Unreadable("a directory".to_owned())
        );
        fs::remove_dir(&path).unwrap();
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert_eq!(
            read_copy(&path),
            Found::Unreadable("not a regular file".to_owned())
        );
    }

    #[test]
    fn a_save_writes_both_copies_and_a_garbled_primary_falls_back() {
        let dir = tempfile::tempdir().unwrap();
        let intents = Intents::load(dir.path());
        assert!(intents.notices().is_empty());
        intents.record("shop", Some(by("alice"))).unwrap();
        intents.record("blog", Some(by("bob"))).unwrap();
        intents.record("blog", None).unwrap();
        for name in [FILE_NAME, BACKUP_NAME] {
            assert_eq!(
                read_copy(&dir.path().join(name)),
                Found::Read(stopped(&["shop"])),
                "{name}"
            );
        }
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");

        fs::write(dir.path().join(FILE_NAME), "{\"shop\": {\"us").unwrap();
        let intents = Intents::load(dir.path());
        assert_eq!(intents.get("shop"), Some(by("alice")), "the stop holds");
        let notices = intents.notices();
        assert_eq!(notices.len(), 1, "{notices:?}");
        assert!(notices[0].contains("read from its backup"), "{notices:?}");
        assert!(
            notices[0].contains("the unreadable stopped.json is kept as stopped.json.unreadable-"),
            "{notices:?}"
        );
        // Set aside and written again from the backup at once.
        assert_eq!(
            read_copy(&dir.path().join(FILE_NAME)),
            Found::Read(stopped(&["shop"]))
        );
        intents.record("blog", Some(by("bob"))).unwrap();
        assert_eq!(
            read_copy(&dir.path().join(FILE_NAME)),
            Found::Read(
                [
                    ("blog".to_owned(), by("bob")),
                    ("shop".to_owned(), by("alice"))
                ]
                .into_iter()
                .collect()
            )
        );
    }

    #[test]
    fn a_failed_save_is_an_error_kept_until_a_later_save_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().join("state");
        fs::create_dir(&state_dir).unwrap();
        let intents = Intents::load(&state_dir);
        // A directory where the temporary file goes makes every save fail,
        // for root too.
        fs::create_dir(state_dir.join(".stopped.json.tmp")).unwrap();
        let error = intents.record("shop", Some(by("alice"))).unwrap_err();
        assert!(error.to_string().starts_with("creating "), "{error}");
        assert_eq!(intents.get("shop"), Some(by("alice")), "held in memory");
        assert_eq!(intents.notices().len(), 1);
        assert!(intents.save_pending().is_err());

        fs::remove_dir(state_dir.join(".stopped.json.tmp")).unwrap();
        intents.save_pending().unwrap();
        assert!(intents.notices().is_empty());
        assert_eq!(
            read_copy(&state_dir.join(FILE_NAME)),
            Found::Read(stopped(&["shop"]))
        );
        // Nothing pending: no write at all.
        intents.save_pending().unwrap();
    }
}
