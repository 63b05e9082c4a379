//! Judging `apps.d` without holding up the daemon: every file is read,
//! validated and resolved (user lookups may go to LDAP) on the blocking
//! pool, a few files at a time, each within [`JUDGE_TIMEOUT`]. While a
//! file is judged the async runtime goes on serving the control socket,
//! reaping and restarting apps; a file that takes too long is reported as
//! invalid (its app keeps its last valid version) and holds up no other.
//!
//! What a file comes to is `config::judge`'s, as for `check`: one file is
//! parsed at a time, so what parsing costs the daemon in memory is one
//! file's worth (`config::load::MAX_CONFIG_FILE` bounds it); user lookups,
//! which mostly wait, run side by side.
//!
//! A read or lookup that never returns keeps its thread. At most
//! [`MAX_HUNG`] such jobs are let pile up; past that, files are reported
//! as not judged until the hung ones return, rather than taking every
//! thread of the blocking pool the apps' spawns need too.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::hash::Hash;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::judge::{self, Judged};
use crate::config::resolve::{ResolvedApp, SystemUserDb, UserDb, UserDbError, UserRecord};
use crate::config::{self, ConfigError, ConfigErrors, DaemonConfig};

/// How long one file (or `appvisor.toml`) may take to be judged: reading,
/// parsing and validating take milliseconds, so this is for a hung file
/// system or user database.
pub const JUDGE_TIMEOUT: Duration = Duration::from_secs(5);

/// Files judged at the same time.
const JUDGES: usize = 4;

/// Jobs past their deadline that may still hold a blocking thread.
pub const MAX_HUNG: usize = 8;

/// Jobs past their deadline, still running.
static HUNG: AtomicUsize = AtomicUsize::new(0);

/// One file of `apps.d` after validation and resolution.
#[derive(Debug)]
pub struct Candidate {
    pub file: PathBuf,
    pub app: Result<Arc<ResolvedApp>, ConfigErrors>,
}

/// Why a blocking job gave no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unjudged {
    #[error("no answer within {0:?} (a hung file system or user database?)")]
    Timeout(Duration),
    #[error("{0} earlier reads or lookups are still hung; not starting more until they return")]
    TooManyHung(usize),
    #[error("judging failed: {0}")]
    Failed(String),
}

/// Runs `job` on the blocking pool and waits at most `deadline` for it.
async fn run_blocking<T: Send + 'static>(
    deadline: Duration,
    job: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Unjudged> {
    let hung = HUNG.load(Ordering::Acquire);
    if hung >= MAX_HUNG {
        return Err(Unjudged::TooManyHung(hung));
    }
    // Set by whichever comes second: the deadline or the job's end.
    let late = Arc::new(AtomicBool::new(false));
    let job_late = late.clone();
    let handle = tokio::task::spawn_blocking(move || {
        let result = job();
        if job_late.swap(true, Ordering::AcqRel) {
            HUNG.fetch_sub(1, Ordering::AcqRel);
        }
        result
    });
    match tokio::time::timeout(deadline, handle).await {
        Ok(Ok(result)) => Ok(result),
        Ok(Err(join)) => Err(Unjudged::Failed(join.to_string())),
        Err(_) => {
            if !late.swap(true, Ordering::AcqRel) {
                HUNG.fetch_add(1, Ordering::AcqRel);
            }
            Err(Unjudged::Timeout(deadline))
        }
    }
}

/// `appvisor.toml` (see [`config::load_daemon_or_default`]), off the runtime.
pub async fn daemon_config(path: &Path, explicit: bool) -> Result<DaemonConfig, ConfigErrors> {
    let owned = path.to_owned();
    run_blocking(JUDGE_TIMEOUT, move || {
        config::load_daemon_or_default(&owned, explicit)
    })
    .await
    .unwrap_or_else(|unjudged| {
        Err(ConfigError::new(path, format!("cannot read daemon config: {unjudged}")).into())
    })
}

/// `apps_dir`, judged.
#[derive(Debug)]
pub struct Scan {
    pub candidates: BTreeMap<String, Candidate>,
    /// `*.toml` files not loaded because of their names, each with why.
    pub ignored: Vec<ConfigError>,
}

/// That `dir` can be listed ([`config::check_apps_dir`]), off the runtime.
pub async fn check_apps_dir(dir: &Path) -> Result<(), ConfigErrors> {
    let owned = dir.to_owned();
    run_blocking(JUDGE_TIMEOUT, move || config::check_apps_dir(&owned))
        .await
        .unwrap_or_else(|unjudged| {
            Err(ConfigError::new(dir, format!("cannot read apps directory: {unjudged}")).into())
        })
}

/// Validates and resolves every file of `apps_dir`, then checks that no two
/// valid apps claim the same listen address. A directory that cannot be
/// listed is an error, never an empty list: that would remove every app.
pub async fn scan(daemon_config: &DaemonConfig) -> Result<Scan, ConfigErrors> {
    let dir = daemon_config.spec.apps_dir.clone();
    let files = run_blocking(JUDGE_TIMEOUT, move || config::load::app_files(&dir))
        .await
        .unwrap_or_else(|unjudged| {
            Err(ConfigError::new(
                &daemon_config.spec.apps_dir,
                format!("cannot read apps directory: {unjudged}"),
            )
            .into())
        })?;

    let mut named = Vec::new();
    let mut ignored = Vec::new();
    for path in files {
        match config::load::app_name(&path) {
            Ok(name) => named.push((name, path)),
            Err(err) => ignored.push(err),
        }
    }
    let defaults = Arc::new(daemon_config.defaults.clone());
    let users = Arc::new(ScanUserDb::<SystemUserDb>::default());
    let judged = in_parallel(named, JUDGES, |(name, path)| {
        let defaults = defaults.clone();
        let users = users.clone();
        async move {
            let (file, app) = (path.clone(), name.clone());
            let judged = run_blocking(JUDGE_TIMEOUT, move || {
                judge::judge_app(&file, &app, &defaults, &*users)
            })
            .await
            .unwrap_or_else(|unjudged| Judged {
                outcome: Err(ConfigError::new(
                    &path,
                    format!("not judged: {unjudged}; the running version is kept"),
                )
                .into()),
                file: path,
            });
            (name, judged)
        }
    })
    .await;

    // Only apps that resolved hold their addresses.
    let resolved = judged
        .iter()
        .filter_map(|(_, judged)| match &judged.outcome {
            Ok(validated) if validated.resolved.is_ok() => Some(&validated.valid),
            _ => None,
        });
    let conflicts = judge::conflicts(resolved);
    let candidates = judged
        .into_iter()
        .map(|(name, judged)| {
            let file = judged.file.clone();
            let mut app = judged.into_app().map(Arc::new);
            let theirs: Vec<ConfigError> = conflicts
                .iter()
                .filter(|conflict| conflict.file == file)
                .cloned()
                .collect();
            if !theirs.is_empty() {
                let mut errors = app.err().unwrap_or_default();
                errors.0.extend(theirs);
                app = Err(errors);
            }
            (name.to_string(), Candidate { file, app })
        })
        .collect();
    Ok(Scan {
        candidates,
        ignored,
    })
}

/// The host's user database as one scan sees it: each user, group and
/// membership looked up once however many files name it (a thousand apps
/// of one user cost one lookup, not a thousand reads of /etc/passwd and
/// /etc/group). Answers are kept for this scan only, so the next `update`
/// sees a user added or changed since. Failed lookups are not kept, and no
/// lock is held during a lookup, so one that hangs holds up no other.
#[derive(Debug, Default)]
struct ScanUserDb<D> {
    db: D,
    users: Mutex<HashMap<String, Option<UserRecord>>>,
    users_by_id: Mutex<HashMap<u32, Option<UserRecord>>>,
    groups: Mutex<HashMap<String, Option<u32>>>,
    group_names: Mutex<HashMap<u32, Option<String>>>,
    memberships: Mutex<HashMap<(String, u32), Vec<u32>>>,
}

/// `key`'s answer from `answers`, or from `look_up` (then kept).
fn remembered<K: Eq + Hash, V: Clone>(
    answers: &Mutex<HashMap<K, V>>,
    key: K,
    look_up: impl FnOnce() -> Result<V, UserDbError>,
) -> Result<V, UserDbError> {
    let lock = || answers.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(answer) = lock().get(&key) {
        return Ok(answer.clone());
    }
    let answer = look_up()?;
    lock().insert(key, answer.clone());
    Ok(answer)
}

impl<D: UserDb> UserDb for ScanUserDb<D> {
    fn user_by_name(&self, name: &str) -> Result<Option<UserRecord>, UserDbError> {
        remembered(&self.users, name.to_owned(), || self.db.user_by_name(name))
    }

    fn user_by_uid(&self, uid: u32) -> Result<Option<UserRecord>, UserDbError> {
        remembered(&self.users_by_id, uid, || self.db.user_by_uid(uid))
    }

    fn group_by_name(&self, name: &str) -> Result<Option<u32>, UserDbError> {
        remembered(&self.groups, name.to_owned(), || {
            self.db.group_by_name(name)
        })
    }

    fn group_name(&self, gid: u32) -> Result<Option<String>, UserDbError> {
        remembered(&self.group_names, gid, || self.db.group_name(gid))
    }

    fn supplementary_groups(&self, user: &str, gid: u32) -> Result<Vec<u32>, UserDbError> {
        remembered(&self.memberships, (user.to_owned(), gid), || {
            self.db.supplementary_groups(user, gid)
        })
    }
}

/// Runs `work` on every item, at most `limit` at a time, and returns the
/// results in the items' order.
async fn in_parallel<I, F, T>(items: Vec<I>, limit: usize, work: impl Fn(I) -> F) -> Vec<T>
where
    F: Future<Output = T>,
{
    use std::collections::VecDeque;
    let mut queue: VecDeque<(usize, I)> = items.into_iter().enumerate().collect();
    let mut running = Vec::new();
    let mut done: Vec<(usize, T)> = Vec::new();
    loop {
        while running.len() < limit {
            let Some((index, item)) = queue.pop_front() else {
                break;
            };
            let fut = work(item);
            running.push(Box::pin(async move { (index, fut.await) }));
        }
        if running.is_empty() {
            break;
        }
        let (result, _, rest) = select_all(running).await;
        running = rest;
        done.push(result);
    }
    done.sort_by_key(|(index, _)| *index);
    done.into_iter().map(|(_, result)| result).collect()
}

/// The first of `futures` to finish, its index and the others.
async fn select_all<F: Future + Unpin>(mut futures: Vec<F>) -> (F::Output, usize, Vec<F>) {
    let (output, index) = std::future::poll_fn(|cx| {
        for (index, future) in futures.iter_mut().enumerate() {
            if let std::task::Poll::Ready(output) = std::pin::Pin::new(future).poll(cx) {
                return std::task::Poll::Ready((output, index));
            }
        }
        std::task::Poll::Pending
    })
    .await;
    futures.swap_remove(index);
    (output, index, futures)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hung_job_fails_after_its_deadline_and_is_counted_until_it_returns() {
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let before = HUNG.load(Ordering::Acquire);
        let result = run_blocking(Duration::from_millis(50), move || {
            let _ = wait.recv();
        })
        .await;
        assert_eq!(result, Err(Unjudged::Timeout(Duration::from_millis(50))));
        assert_eq!(HUNG.load(Ordering::Acquire), before + 1);
        release.send(()).unwrap();
        let back = eventually(|| HUNG.load(Ordering::Acquire) == before).await;
        assert!(back, "the hung job's return is counted");
        assert_eq!(run_blocking(JUDGE_TIMEOUT, || 7).await, Ok(7));
    }

    async fn eventually(mut cond: impl FnMut() -> bool) -> bool {
        for _ in 0..200 {
            if cond() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    /// A user database that counts the lookups that reach it.
    #[derive(Debug, Default)]
    struct Counting {
        db: crate::config::resolve::FakeUserDb,
        lookups: AtomicUsize,
    }

    impl UserDb for Counting {
        fn user_by_name(&self, name: &str) -> Result<Option<UserRecord>, UserDbError> {
            self.lookups.fetch_add(1, Ordering::Relaxed);
            self.db.user_by_name(name)
        }
        fn user_by_uid(&self, uid: u32) -> Result<Option<UserRecord>, UserDbError> {
            self.lookups.fetch_add(1, Ordering::Relaxed);
            self.db.user_by_uid(uid)
        }
        fn group_by_name(&self, name: &str) -> Result<Option<u32>, UserDbError> {
            self.lookups.fetch_add(1, Ordering::Relaxed);
            self.db.group_by_name(name)
        }
        fn group_name(&self, gid: u32) -> Result<Option<String>, UserDbError> {
            self.lookups.fetch_add(1, Ordering::Relaxed);
            self.db.group_name(gid)
        }
        fn supplementary_groups(&self, user: &str, gid: u32) -> Result<Vec<u32>, UserDbError> {
            self.lookups.fetch_add(1, Ordering::Relaxed);
            self.db.supplementary_groups(user, gid)
        }
    }

    #[test]
    fn a_scan_looks_each_user_and_group_up_once() {
        let scan = ScanUserDb {
            db: Counting {
                db: crate::config::resolve::FakeUserDb::new()
                    .with_user("shop", 1000, 1000)
                    .with_group("web", 2000, &["shop"]),
                lookups: AtomicUsize::new(0),
            },
            ..ScanUserDb::default()
        };
        for _ in 0..3 {
            let user = scan.user_by_name("shop").unwrap().unwrap();
            assert_eq!((user.uid, user.gid), (1000, 1000));
            assert_eq!(scan.user_by_name("nobody-here").unwrap(), None);
            assert_eq!(scan.user_by_uid(1000).unwrap(), Some(user));
            assert_eq!(scan.group_by_name("web").unwrap(), Some(2000));
            assert_eq!(scan.group_name(2000).unwrap().as_deref(), Some("web"));
            assert_eq!(
                scan.supplementary_groups("shop", 1000).unwrap(),
                scan.db.db.supplementary_groups("shop", 1000).unwrap()
            );
        }
        // Six questions, each asked three times: six lookups.
        assert_eq!(scan.db.lookups.load(Ordering::Relaxed), 6);
    }

    #[tokio::test]
    async fn in_parallel_keeps_order_and_limit() {
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let items: Vec<u64> = (0..20).collect();
        let out = in_parallel(items, 3, |i| {
            let running = running.clone();
            let most = most.clone();
            async move {
                let now = running.fetch_add(1, Ordering::AcqRel) + 1;
                most.fetch_max(now, Ordering::AcqRel);
                tokio::time::sleep(Duration::from_millis(20 - i)).await;
                running.fetch_sub(1, Ordering::AcqRel);
                i * 2
            }
        })
        .await;
        assert_eq!(out, (0..20).map(|i| i * 2).collect::<Vec<_>>());
        assert_eq!(most.load(Ordering::Acquire), 3);
    }
}
