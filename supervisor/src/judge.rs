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
//!
//! A file judged valid is kept ([`JudgeCache`]) with the stamps it was
//! judged under, and judged again only once they change: an update with
//! one changed file among a thousand stats a thousand files, in one job,
//! and reads one.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::hash::Hash;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::judge::{self, Judged};
use crate::config::positions::Positions;
use crate::config::resolve::{ResolvedApp, SystemUserDb, UserDb, UserDbError, UserRecord};
use crate::config::security::SecretGroups;
use crate::config::validate::ValidApp;
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
/// The status server's reads of cgroup and /proc files run here too, so
/// they share [`MAX_HUNG`] with the judging of files.
pub(crate) async fn run_blocking<T: Send + 'static>(
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

/// Validates and resolves every file of `apps_dir` that changed since
/// `cache` last saw it (every file, with an empty cache), then checks that
/// no two valid apps claim the same listen address. A directory that
/// cannot be listed is an error, never an empty list: that would remove
/// every app.
pub async fn scan(daemon_config: &DaemonConfig, cache: &JudgeCache) -> Result<Scan, ConfigErrors> {
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

    // What is kept and still holds: one job stats every file and the
    // world; a hung one (a hung file system) costs the cache, not the
    // update, which judges every file then, each within its deadline.
    let kept = cache.look_up(named.iter().map(|(_, path)| path.as_path()));
    let defaults = daemon_config.defaults.clone();
    let stamped = {
        let paths: Vec<(PathBuf, Vec<PathBuf>)> = named
            .iter()
            .zip(&kept)
            .filter_map(|((_, path), kept)| {
                kept.as_ref()
                    .map(|kept| (path.clone(), kept.app.spec.env_files.clone()))
            })
            .collect();
        run_blocking(JUDGE_TIMEOUT, move || {
            let world = World::now(defaults);
            let stamps: Vec<Option<Stamps>> = paths
                .iter()
                .map(|(path, env_files)| Stamps::now(path, env_files))
                .collect();
            (world, stamps)
        })
        .await
        .ok()
    };
    let (world, mut stamps) = match stamped {
        Some((world, stamps)) => (Some(world), stamps.into_iter()),
        None => (None, Vec::new().into_iter()),
    };
    let same_world = world.is_some() && cache.world_is(world.as_ref());
    let mut hits = Vec::new();
    let mut misses = Vec::new();
    // Each with its place in the directory's order, which the conflicts'
    // blame follows.
    for (index, ((name, path), kept)) in named.into_iter().zip(kept).enumerate() {
        let Some(kept) = kept else {
            misses.push((index, name, path));
            continue;
        };
        match stamps.next().flatten() {
            Some(now) if same_world && now == kept.stamps => hits.push((index, name, kept)),
            _ => misses.push((index, name, path)),
        }
    }

    let defaults = Arc::new(daemon_config.defaults.clone());
    let users = Arc::new(ScanUserDb::<SystemUserDb>::default());
    // The world's scan of the host's secrets serves every file; without
    // a world (its job hung), each job scans for itself.
    let secrets = world.as_ref().map(|world| Arc::clone(&world.secrets));
    let settle = cache.settle;
    let judged = in_parallel(misses, JUDGES, |(index, name, path)| {
        let defaults = defaults.clone();
        let users = users.clone();
        let secrets = secrets.clone();
        async move {
            let (file, app) = (path.clone(), name.clone());
            let judged = run_blocking(JUDGE_TIMEOUT, move || {
                let secrets =
                    secrets.unwrap_or_else(|| Arc::new(SecretGroups::scan(Path::new("/"))));
                // Stamped before the file is read: a write after the
                // stamp changes it, so the next scan reads the file again.
                let before = Stamp::of(&file);
                let judged = judge::judge_app(&file, &app, &defaults, &*users, &secrets);
                let stamps = match (&judged.outcome, before) {
                    (Ok(validated), Some(file)) => {
                        Stamps::settled(file, &validated.valid.spec.env_files, settle)
                    }
                    _ => None,
                };
                (judged, stamps)
            })
            .await
            .unwrap_or_else(|unjudged| {
                let judged = Judged {
                    outcome: Err(ConfigError::new(
                        &path,
                        format!("not judged: {unjudged}; the running version is kept"),
                    )
                    .into()),
                    file: path,
                };
                (judged, None)
            });
            (index, name, judged)
        }
    })
    .await;

    let held: Vec<PathBuf> = hits.iter().map(|(_, _, kept)| kept.file.clone()).collect();
    let mut read: Vec<(usize, String, Read)> = hits
        .into_iter()
        .map(|(index, name, kept)| {
            let listens = (!kept.app.spec.listen.is_empty()).then(|| ValidApp {
                spec: kept.app.spec.clone(),
                warnings: Vec::new(),
                positions: kept.positions.clone(),
            });
            let read = Read {
                file: kept.file.clone(),
                listens,
                app: Ok(kept.app.clone()),
            };
            (index, name.to_string(), read)
        })
        .collect();
    let mut keep = Vec::new();
    for (index, name, (judged, stamps)) in judged {
        let file = judged.file;
        let (listens, app) = match judged.outcome {
            Ok(validated) => {
                let valid = validated.valid;
                let app = validated.resolved.map(Arc::new);
                if let (Ok(app), Some(stamps)) = (&app, stamps) {
                    keep.push(Kept {
                        file: file.clone(),
                        stamps,
                        positions: valid.positions.only("listen"),
                        app: app.clone(),
                    });
                }
                let listens = (app.is_ok() && !valid.spec.listen.is_empty()).then_some(valid);
                (listens, app)
            }
            Err(errors) => (None, Err(errors)),
        };
        read.push((index, name.to_string(), Read { file, listens, app }));
    }
    cache.store(world, &held, keep);
    read.sort_unstable_by_key(|(index, _, _)| *index);

    // Only apps that resolved hold their addresses.
    let conflicts = judge::conflicts(read.iter().filter_map(|(_, _, read)| read.listens.as_ref()));
    let candidates = read
        .into_iter()
        .map(|(_, name, read)| {
            let Read { file, app, .. } = read;
            let theirs: Vec<ConfigError> = conflicts
                .iter()
                .filter(|conflict| conflict.file == file)
                .cloned()
                .collect();
            let app = if theirs.is_empty() {
                app
            } else {
                let mut errors = app.err().unwrap_or_default();
                errors.0.extend(theirs);
                Err(errors)
            };
            (name, Candidate { file, app })
        })
        .collect();
    Ok(Scan {
        candidates,
        ignored,
    })
}

/// One file of `apps_dir` as a scan found it.
struct Read {
    file: PathBuf,
    /// Its spec, when it resolved and has `[[listen]]` addresses that may
    /// conflict with another app's.
    listens: Option<ValidApp>,
    app: Result<Arc<ResolvedApp>, ConfigErrors>,
}

/// How long after a file's last change its stamp is trusted to change
/// with its content (by default). Timestamps come from a coarse clock (a few ms), so a
/// file written twice within one tick, with the same size, would keep its
/// stamp; a file changed this recently is judged again at the next scan.
const SETTLE: Duration = Duration::from_secs(2);

/// What identifies one version of a file without reading it. Any write
/// moves ctime, which no system call can set back (mtime can be: `touch
/// -d`, `cp -p`, rsync), and a file renamed into place has another inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl Stamp {
    /// `path`'s stamp, through symbolic links (as the file is read).
    fn of(path: &Path) -> Option<Stamp> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path).ok()?;
        let ns = |secs: i64, nsecs: i64| i128::from(secs) * 1_000_000_000 + i128::from(nsecs);
        Some(Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
            ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
        })
    }

    /// Whether the file last changed longer than `settle` before `now`
    /// (a change "after" now, from a clock set back, is not settled).
    fn settled(&self, now: i128, settle: Duration) -> bool {
        let settle = i128::try_from(settle.as_nanos()).unwrap_or(i128::MAX);
        self.mtime_ns.max(self.ctime_ns) <= now - settle
    }
}

/// The stamps of an app file and of the `env_files` it reads.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamps {
    file: Stamp,
    env_files: Vec<Option<Stamp>>,
}

impl Stamps {
    fn now(path: &Path, env_files: &[PathBuf]) -> Option<Stamps> {
        Some(Stamps {
            file: Stamp::of(path)?,
            env_files: env_files.iter().map(|path| Stamp::of(path)).collect(),
        })
    }

    /// `file` and the env files' stamps now, if all are settled: else the
    /// file is not kept, and is judged again next time.
    fn settled(file: Stamp, env_files: &[PathBuf], settle: Duration) -> Option<Stamps> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()
            .and_then(|since| i128::try_from(since.as_nanos()).ok())?;
        let env_files: Vec<Option<Stamp>> = env_files.iter().map(|path| Stamp::of(path)).collect();
        let all_settled = file.settled(now, settle)
            && env_files
                .iter()
                .all(|stamp| stamp.is_some_and(|stamp| stamp.settled(now, settle)));
        all_settled.then_some(Stamps { file, env_files })
    }
}

/// What every app's judgement depends on besides its own files:
/// `[defaults]`, the user database's files, and which groups reach the
/// host's secrets. When it changes every file is judged again.
#[derive(Debug, Clone, PartialEq)]
struct World {
    defaults: config::Defaults,
    user_db: Vec<Option<Stamp>>,
    secrets: Arc<SecretGroups>,
}

/// The files of the user database NSS reads on most hosts. A directory
/// service (LDAP, sssd) changes nothing here: SIGHUP judges every file
/// again (docs/configuration.md).
const USER_DB_FILES: [&str; 3] = ["/etc/passwd", "/etc/group", "/etc/nsswitch.conf"];

impl World {
    fn now(defaults: config::Defaults) -> World {
        World {
            defaults,
            user_db: USER_DB_FILES
                .iter()
                .map(|path| Stamp::of(Path::new(path)))
                .collect(),
            secrets: Arc::new(SecretGroups::scan(Path::new("/"))),
        }
    }
}

/// A file that validated and resolved, as judged, with the stamps it was
/// judged under.
#[derive(Debug, Clone)]
struct Kept {
    file: PathBuf,
    stamps: Stamps,
    /// Where its `[[listen]]` keys sit, for a conflict found later; not
    /// every key's, which would cost memory for each app kept.
    positions: Positions,
    app: Arc<ResolvedApp>,
}

/// The judgements of `apps_dir`'s valid files, kept between scans so an
/// update judges again only the files that changed (docs/benchmarks.md:
/// one changed file among a thousand). A file that did not validate or
/// resolve is never kept: it is judged again at every scan, so a user or
/// directory created since is seen.
#[derive(Debug)]
pub struct JudgeCache {
    state: Mutex<CacheState>,
    /// Files changed more recently than this are not kept ([`SETTLE`]).
    settle: Duration,
}

impl Default for JudgeCache {
    fn default() -> JudgeCache {
        JudgeCache {
            state: Mutex::default(),
            settle: SETTLE,
        }
    }
}

#[derive(Debug, Default)]
struct CacheState {
    world: Option<World>,
    kept: HashMap<PathBuf, Kept>,
}

impl JudgeCache {
    /// Forgets every judgement: the next scan judges every file.
    pub fn clear(&self) {
        *self.lock() = CacheState::default();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn look_up<'a>(&self, paths: impl Iterator<Item = &'a Path>) -> Vec<Option<Kept>> {
        let state = self.lock();
        paths.map(|path| state.kept.get(path).cloned()).collect()
    }

    fn world_is(&self, world: Option<&World>) -> bool {
        self.lock().world.as_ref() == world
    }

    /// What a scan found: the world it saw (`None`: it could not look, so
    /// nothing is kept), the files whose kept judgement still held, and
    /// the files it judged that may be kept. Every other file was judged
    /// again and did not validate, or is gone: it is forgotten.
    fn store(&self, world: Option<World>, held: &[PathBuf], judged: Vec<Kept>) {
        let mut state = self.lock();
        let Some(world) = world else {
            *state = CacheState::default();
            return;
        };
        state.world = Some(world);
        let held: std::collections::HashSet<&Path> = held.iter().map(PathBuf::as_path).collect();
        state.kept.retain(|path, _| held.contains(path.as_path()));
        for kept in judged {
            state.kept.insert(kept.file.clone(), kept);
        }
    }
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

    /// `apps_dir` in a temporary directory, and its daemon config.
    fn apps_dir(defaults: &str) -> (tempfile::TempDir, DaemonConfig) {
        let root = tempfile::tempdir().unwrap();
        let apps = root.path().join("apps.d");
        std::fs::create_dir(&apps).unwrap();
        let conf = root.path().join("appvisor.toml");
        std::fs::write(
            &conf,
            format!("apps_dir = \"{}\"\n{defaults}", apps.display()),
        )
        .unwrap();
        let config = config::load_daemon_or_default(&conf, true).unwrap();
        (root, config)
    }

    /// An app of `nobody` sleeping `secs` (5 characters, so versions of the
    /// file have the same size).
    fn write_app(dir: &tempfile::TempDir, name: &str, secs: &str) -> PathBuf {
        assert_eq!(secs.len(), 5);
        let path = dir.path().join("apps.d").join(format!("{name}.toml"));
        let text = format!(
            "user = \"nobody\"\ncommand = [\"/bin/sleep\", \"{secs}\"]\ndirectory = \"/\"\n"
        );
        // In place: the same inode, as an editor that rewrites a file does.
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&path)
            .unwrap();
        std::io::Write::write_all(&mut file, text.as_bytes()).unwrap();
        path
    }

    fn app(scan: &Scan, name: &str) -> Arc<ResolvedApp> {
        match &scan.candidates[name].app {
            Ok(app) => app.clone(),
            Err(errors) => panic!("{name} does not validate: {errors}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unchanged_file_is_not_judged_again_and_an_edited_one_is_even_with_its_size_and_mtime(
    ) {
        let (dir, config) = apps_dir("");
        let cache = JudgeCache {
            settle: Duration::ZERO,
            ..JudgeCache::default()
        };
        let shop = write_app(&dir, "shop", "10000");
        write_app(&dir, "blog", "20000");
        let first = scan(&config, &cache).await.unwrap();
        let again = scan(&config, &cache).await.unwrap();
        // Kept: the very judgement of the first scan.
        assert!(Arc::ptr_eq(&app(&first, "shop"), &app(&again, "shop")));
        assert!(Arc::ptr_eq(&app(&first, "blog"), &app(&again, "blog")));

        // Edited in place past a clock tick, to the same size, its mtime
        // put back: only its ctime tells.
        let mtime = std::fs::metadata(&shop).unwrap().modified().unwrap();
        std::thread::sleep(Duration::from_millis(50));
        write_app(&dir, "shop", "30000");
        std::fs::File::options()
            .write(true)
            .open(&shop)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        assert_eq!(std::fs::metadata(&shop).unwrap().modified().unwrap(), mtime);
        let edited = scan(&config, &cache).await.unwrap();
        assert_eq!(app(&edited, "shop").spec.command[1], "30000");
        assert!(Arc::ptr_eq(&app(&again, "blog"), &app(&edited, "blog")));

        // A file removed is gone from the scan; a file renamed into place
        // is read.
        std::fs::remove_file(dir.path().join("apps.d/blog.toml")).unwrap();
        let tmp = dir.path().join("shop.toml.new");
        std::fs::write(
            &tmp,
            "user = \"nobody\"\ncommand = [\"/bin/sleep\", \"40000\"]\ndirectory = \"/\"\n",
        )
        .unwrap();
        std::fs::rename(&tmp, &shop).unwrap();
        let renamed = scan(&config, &cache).await.unwrap();
        assert!(!renamed.candidates.contains_key("blog"));
        assert_eq!(app(&renamed, "shop").spec.command[1], "40000");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_edited_env_file_judges_its_app_file_again() {
        if !nix::unistd::geteuid().is_root() {
            return appvisor_tests::skip(
                "needs root (env files are read only when root owns them)",
            );
        }
        // Root's own all the way up, as env files must be.
        let root = tempfile::tempdir_in("/run").unwrap();
        let apps = root.path().join("apps.d");
        std::fs::create_dir(&apps).unwrap();
        let conf = root.path().join("appvisor.toml");
        std::fs::write(&conf, format!("apps_dir = \"{}\"\n", apps.display())).unwrap();
        let config = config::load_daemon_or_default(&conf, true).unwrap();
        let env = root.path().join("shop.env");
        std::fs::write(&env, "FLAVOUR=one\n").unwrap();
        std::fs::write(
            apps.join("shop.toml"),
            format!(
                "user = \"nobody\"\ncommand = [\"/bin/sleep\", \"10000\"]\ndirectory = \"/\"\nenv_files = [\"{}\"]\n",
                env.display()
            ),
        )
        .unwrap();
        let cache = JudgeCache {
            settle: Duration::ZERO,
            ..JudgeCache::default()
        };
        let first = scan(&config, &cache).await.unwrap();
        let again = scan(&config, &cache).await.unwrap();
        assert!(Arc::ptr_eq(&app(&first, "shop"), &app(&again, "shop")));

        let mtime = std::fs::metadata(&env).unwrap().modified().unwrap();
        std::thread::sleep(Duration::from_millis(50));
        std::fs::write(&env, "FLAVOUR=two\n").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&env)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        let edited = scan(&config, &cache).await.unwrap();
        assert_eq!(
            app(&edited, "shop")
                .spec
                .environment
                .get("FLAVOUR")
                .map(String::as_str),
            Some("two")
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn new_defaults_or_a_recent_change_judge_a_file_again() {
        let (dir, config) = apps_dir("");
        write_app(&dir, "shop", "10000");
        let cache = JudgeCache {
            settle: Duration::ZERO,
            ..JudgeCache::default()
        };
        let first = scan(&config, &cache).await.unwrap();
        let (_other, mut changed) = apps_dir("[defaults]\numask = \"0027\"\n");
        changed.spec.apps_dir = config.spec.apps_dir.clone();
        let with_defaults = scan(&changed, &cache).await.unwrap();
        assert!(!Arc::ptr_eq(
            &app(&first, "shop"),
            &app(&with_defaults, "shop")
        ));
        assert_ne!(
            app(&first, "shop").spec.umask,
            app(&with_defaults, "shop").spec.umask
        );

        // Written just now: a second write in the same clock tick could
        // keep every stamp, so it is not kept.
        let settling = JudgeCache::default();
        let first = scan(&config, &settling).await.unwrap();
        let again = scan(&config, &settling).await.unwrap();
        assert!(!Arc::ptr_eq(&app(&first, "shop"), &app(&again, "shop")));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_kept_file_still_conflicts_with_a_new_one() {
        let (dir, config) = apps_dir("");
        let cache = JudgeCache {
            settle: Duration::ZERO,
            ..JudgeCache::default()
        };
        let listen = "[[listen]]\naddress = \"127.0.0.1:18080\"\n";
        let app_text = |secs: &str| {
            format!("user = \"nobody\"\ncommand = [\"/bin/sleep\", \"{secs}\"]\ndirectory = \"/\"\n{listen}")
        };
        std::fs::write(dir.path().join("apps.d/b-shop.toml"), app_text("10000")).unwrap();
        let first = scan(&config, &cache).await.unwrap();
        app(&first, "b-shop");
        // A new file before the kept one in the directory's order: the
        // kept one is the later of the pair, and blamed at its line.
        std::fs::write(dir.path().join("apps.d/a-blog.toml"), app_text("20000")).unwrap();
        let both = scan(&config, &cache).await.unwrap();
        app(&both, "a-blog");
        let errors = both.candidates["b-shop"].app.as_ref().unwrap_err();
        let text = errors.to_string();
        assert!(
            text.contains("b-shop.toml:5:") && text.contains("127.0.0.1:18080"),
            "the kept file is blamed at its listen address: {text}"
        );
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
