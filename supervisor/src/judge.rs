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
// Poisoning ignored: the cache, the remembered lookups and a pool's queue
// and answers are left consistent at every step.
use crate::locks::lock;

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
    // What each answer is for, as the pool answers in order.
    let keys = misses.clone();
    let outcomes = each_on_the_pool(misses, JUDGES, JUDGE_TIMEOUT, move |(_, app, file)| {
        let secrets = secrets
            .clone()
            .unwrap_or_else(|| Arc::new(SecretGroups::scan(Path::new("/"))));
        // Stamped before the file is read: a write after the stamp
        // changes it, so the next scan reads the file again.
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
    .await;
    let judged = keys
        .into_iter()
        .zip(outcomes)
        .map(|((index, name, path), outcome)| {
            let judged = outcome.unwrap_or_else(|unjudged| {
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
        });

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
        lock(&self.state)
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
    if let Some(answer) = lock(answers).get(&key) {
        return Ok(answer.clone());
    }
    let answer = look_up()?;
    lock(answers).insert(key, answer.clone());
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

/// Runs `work` on every item on at most `limit` threads of the blocking
/// pool, each taking the next item as soon as it is done with one, and
/// returns the answers in the items' order.
///
/// Each item has `deadline` from when a thread took it. One past it is
/// answered [`Unjudged::Timeout`]; its thread is left to finish it,
/// counted in [`HUNG`] until it does (its answer is then dropped), and
/// another thread takes its place unless [`MAX_HUNG`] are hung: items no
/// thread is left to take are answered [`Unjudged::TooManyHung`]. A panic
/// answers its item [`Unjudged::Failed`] and the thread goes on.
///
/// This is [`run_blocking`] per item without a job per item: a job per
/// file cost two hand-offs between threads per file (a wake-up of a
/// blocking thread, then one of the runtime's for the answer), which for
/// an `apps.d` of 1,000 small files was most of the CPU its scan took.
/// Here the threads keep the answers, and the runtime is woken once, for
/// the last (or for a deadline).
async fn each_on_the_pool<I, T>(
    items: Vec<I>,
    limit: usize,
    deadline: Duration,
    work: impl Fn(I) -> T + Send + Sync + 'static,
) -> Vec<Result<T, Unjudged>>
where
    I: Send + 'static,
    T: Send + 'static,
{
    let count = items.len();
    let pool = Arc::new(Pool {
        work: Box::new(work),
        shared: Mutex::new(Shared {
            queue: items.into_iter().enumerate().collect(),
            threads: Vec::new(),
            answers: (0..count).map(|_| None).collect(),
            left: count,
        }),
        finished: tokio::sync::Notify::new(),
    });
    // Dropped (the scan with it), the pool's threads take no more items.
    let _unqueue = Unqueue(&pool);
    {
        let mut shared = lock(&pool.shared);
        for _ in 0..limit.min(count) {
            start_thread(&pool, &mut shared);
        }
        shared.refuse_untaken();
    }
    loop {
        let due = {
            let shared = lock(&pool.shared);
            if shared.left == 0 {
                break;
            }
            shared.next_due(deadline)
        };
        tokio::select! {
            () = pool.finished.notified() => {}
            () = sleep_until(due) => {
                let mut shared = lock(&pool.shared);
                for _ in 0..shared.give_up_on_overdue(deadline) {
                    start_thread(&pool, &mut shared);
                }
                shared.refuse_untaken();
            }
        }
    }
    let answers = std::mem::take(&mut lock(&pool.shared).answers);
    answers
        .into_iter()
        .map(|answer| answer.unwrap_or(Err(Unjudged::Failed("no answer".to_owned()))))
        .collect()
}

/// Empties the pool's queue when dropped.
struct Unqueue<'a, I, T>(&'a Pool<I, T>);

impl<I, T> Drop for Unqueue<'_, I, T> {
    fn drop(&mut self) {
        lock(&self.0.shared).queue.clear();
    }
}

/// What [`each_on_the_pool`]'s threads share.
struct Pool<I, T> {
    work: Box<dyn Fn(I) -> T + Send + Sync>,
    shared: Mutex<Shared<I, T>>,
    /// Notified when the last item is answered.
    finished: tokio::sync::Notify,
}

struct Shared<I, T> {
    /// The items no thread has taken yet, with their places.
    queue: std::collections::VecDeque<(usize, I)>,
    /// Per thread started, by its number.
    threads: Vec<PoolThread>,
    /// Per item, its answer once it has one.
    answers: Vec<Option<Result<T, Unjudged>>>,
    /// Items without an answer yet.
    left: usize,
}

#[derive(Debug, Clone, Copy)]
struct PoolThread {
    /// The item it works on and since when.
    on: Option<(usize, std::time::Instant)>,
    /// Given up on: it answers nothing more and leaves after its item.
    given_up: bool,
    /// It has left (the queue was empty).
    gone: bool,
}

impl<I, T> Shared<I, T> {
    fn answer(&mut self, index: usize, answer: Result<T, Unjudged>) {
        debug_assert!(self.answers[index].is_none());
        self.answers[index] = Some(answer);
        self.left -= 1;
    }

    /// When the first item worked on now is overdue (far off if none is).
    fn next_due(&self, deadline: Duration) -> std::time::Instant {
        self.threads
            .iter()
            .filter(|thread| !thread.given_up)
            .filter_map(|thread| thread.on.map(|(_, since)| since + deadline))
            .min()
            .unwrap_or_else(|| std::time::Instant::now() + deadline)
    }

    /// Gives up on every thread whose item is overdue, answering the item
    /// [`Unjudged::Timeout`]; returns how many.
    fn give_up_on_overdue(&mut self, deadline: Duration) -> usize {
        let now = std::time::Instant::now();
        let mut overdue = Vec::new();
        for thread in self.threads.iter_mut().filter(|thread| !thread.given_up) {
            if let Some((index, since)) = thread.on {
                if now >= since + deadline {
                    thread.given_up = true;
                    HUNG.fetch_add(1, Ordering::AcqRel);
                    overdue.push(index);
                }
            }
        }
        for &index in &overdue {
            self.answer(index, Err(Unjudged::Timeout(deadline)));
        }
        overdue.len()
    }

    /// Answers [`Unjudged::TooManyHung`] for the items left when no thread
    /// will take them.
    fn refuse_untaken(&mut self) {
        let takers = self
            .threads
            .iter()
            .any(|thread| !thread.given_up && !thread.gone);
        if takers {
            return;
        }
        let hung = HUNG.load(Ordering::Acquire);
        while let Some((index, _)) = self.queue.pop_front() {
            self.answer(index, Err(Unjudged::TooManyHung(hung)));
        }
    }
}

/// Starts a thread for `pool` unless it has no items left or too many
/// threads are hung.
fn start_thread<I: Send + 'static, T: Send + 'static>(
    pool: &Arc<Pool<I, T>>,
    shared: &mut Shared<I, T>,
) {
    if shared.queue.is_empty() || HUNG.load(Ordering::Acquire) >= MAX_HUNG {
        return;
    }
    let number = shared.threads.len();
    shared.threads.push(PoolThread {
        on: None,
        given_up: false,
        gone: false,
    });
    let pool = Arc::clone(pool);
    tokio::task::spawn_blocking(move || serve(&pool, number));
}

/// One thread of [`each_on_the_pool`]: takes items until none is left or
/// it has been given up on.
fn serve<I, T>(pool: &Pool<I, T>, number: usize) {
    loop {
        let (index, item) = {
            let mut shared = lock(&pool.shared);
            let Some(next) = shared.queue.pop_front() else {
                shared.threads[number].gone = true;
                return;
            };
            shared.threads[number].on = Some((next.0, std::time::Instant::now()));
            next
        };
        let answer = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (pool.work)(item)))
            .map_err(|panic| Unjudged::Failed(panic_text(&*panic)));
        let mut shared = lock(&pool.shared);
        let thread = &mut shared.threads[number];
        thread.on = None;
        if thread.given_up {
            // Its item was answered as overdue.
            thread.gone = true;
            HUNG.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        shared.answer(index, answer);
        if shared.left == 0 {
            pool.finished.notify_one();
        }
    }
}

/// A panic's message, as far as it has one.
fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|text| (*text).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_owned())
}

async fn sleep_until(due: std::time::Instant) {
    tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Held by the tests that count [`HUNG`], so they do not count each
    /// other's hung jobs.
    static COUNTING_HUNG: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hung_job_fails_after_its_deadline_and_is_counted_until_it_returns() {
        let _alone = COUNTING_HUNG.lock().await;
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_pool_answers_in_order_with_at_most_its_limit_at_once() {
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let items: Vec<u64> = (0..20).collect();
        let (now, top) = (running.clone(), most.clone());
        let out = each_on_the_pool(items, 3, JUDGE_TIMEOUT, move |i| {
            let at_once = now.fetch_add(1, Ordering::AcqRel) + 1;
            top.fetch_max(at_once, Ordering::AcqRel);
            std::thread::sleep(Duration::from_millis(20 - i));
            now.fetch_sub(1, Ordering::AcqRel);
            i * 2
        })
        .await;
        assert_eq!(out, (0..20).map(|i| Ok(i * 2)).collect::<Vec<_>>());
        assert_eq!(most.load(Ordering::Acquire), 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_overdue_item_is_answered_as_such_and_holds_up_no_other() {
        let _alone = COUNTING_HUNG.lock().await;
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let wait = Mutex::new(wait);
        let before = HUNG.load(Ordering::Acquire);
        let deadline = Duration::from_millis(100);
        // Two threads, the first of which hangs on item 0: the other
        // items are answered by the second and by the one that replaces
        // the hung one.
        let out = each_on_the_pool((0..10).collect(), 2, deadline, move |i: u32| {
            if i == 0 {
                let _ = lock(&wait).recv();
            }
            i
        })
        .await;
        assert_eq!(out[0], Err(Unjudged::Timeout(deadline)));
        assert_eq!(out[1..], (1..10).map(Ok).collect::<Vec<_>>()[..]);
        assert!(
            HUNG.load(Ordering::Acquire) > before,
            "the hung thread is counted"
        );
        release.send(()).unwrap();
        let back = eventually(|| HUNG.load(Ordering::Acquire) == before).await;
        assert!(back, "the hung thread's return is counted");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panic_fails_its_item_and_the_thread_goes_on() {
        let out = each_on_the_pool((0..4).collect(), 1, JUDGE_TIMEOUT, |i: u32| {
            assert_ne!(i, 1, "item one");
            i
        })
        .await;
        assert_eq!(out[0], Ok(0));
        assert!(
            matches!(&out[1], Err(Unjudged::Failed(text)) if text.contains("item one")),
            "{:?}",
            out[1]
        );
        assert_eq!(out[2..], [Ok(2), Ok(3)]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dropped_pool_takes_no_more_items() {
        let done = Arc::new(AtomicUsize::new(0));
        let counted = done.clone();
        let pool = each_on_the_pool((0..100).collect(), 1, JUDGE_TIMEOUT, move |_: u32| {
            std::thread::sleep(Duration::from_millis(10));
            counted.fetch_add(1, Ordering::AcqRel);
        });
        assert!(tokio::time::timeout(Duration::from_millis(50), pool)
            .await
            .is_err());
        let then = done.load(Ordering::Acquire);
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The item in hand when it was dropped is finished, no other.
        assert!(done.load(Ordering::Acquire) <= then + 1, "{then} then");
    }

    #[test]
    fn items_no_thread_will_take_are_refused_as_too_many_hung() {
        let hung = PoolThread {
            on: Some((0, std::time::Instant::now())),
            given_up: true,
            gone: false,
        };
        let mut shared: Shared<&str, u32> = Shared {
            queue: [(1, "b"), (2, "c")].into_iter().collect(),
            threads: vec![hung],
            answers: vec![Some(Err(Unjudged::Timeout(JUDGE_TIMEOUT))), None, None],
            left: 2,
        };
        shared.refuse_untaken();
        assert!(shared.queue.is_empty());
        assert_eq!(shared.left, 0);
        assert!(matches!(
            shared.answers[1],
            Some(Err(Unjudged::TooManyHung(_)))
        ));
        assert!(matches!(
            shared.answers[2],
            Some(Err(Unjudged::TooManyHung(_)))
        ));

        // With a thread that will still take items, nothing is refused.
        let taker = PoolThread {
            on: None,
            given_up: false,
            gone: false,
        };
        let mut shared: Shared<&str, u32> = Shared {
            queue: [(1, "b")].into_iter().collect(),
            threads: vec![hung, taker],
            answers: vec![None, None],
            left: 2,
        };
        shared.refuse_untaken();
        assert_eq!((shared.queue.len(), shared.left), (1, 2));
    }
}
