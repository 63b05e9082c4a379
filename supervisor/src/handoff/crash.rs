//! What a crashed appvisord leaves for its successor: one record per app,
//! the hand-off's [`AppRecord`] without fds, plus a fingerprint of the
//! judged app configuration and the start time of the main process, and a
//! heartbeat of the daemon itself. All live in a root-only directory of
//! the run directory (`/run/appvisor/records`, tmpfs: it survives a crash
//! of the daemon, not a reboot).
//!
//! A record is rewritten by one writer thread, off the runtime, each time
//! an app settles in a new state, and removed when its task ends (the app
//! removed, the daemon stopped). The heartbeat is rewritten with each of
//! them. What queues up while the thread writes is taken together: each
//! app's file once, for its latest state, and the heartbeat once.
//!
//! A file is made by writing a temporary file and renaming it, so it
//! never exists half written. Once it exists it is rewritten in place:
//! one `pwrite` at offset 0 of the new JSON padded with spaces to the
//! file's length (JSON allows whitespace after a value; the file never
//! shrinks), so a rewrite makes and frees no inode, which is most of its
//! cost on a disk file system. This is safe because only a crash of the
//! daemon's process matters: a record is read back only by a successor,
//! after this daemon is gone, and never across a boot (a record of another
//! boot is refused, so a power cut that tears a write is harmless). A
//! write of at most one page at offset 0 is copied by the kernel in one
//! step that a dying process does not interrupt (a fatal signal is only
//! acted on between pages, or on the return to user space), so after a
//! crash the file holds the old record or the new one, whole. A record or
//! file larger than a page, or a short write, goes through a temporary
//! file and a rename again.
//!
//! The successor trusts none of it: the directory must be root's and
//! private, each file is bounded, read without following links, and must
//! parse; a running app's main process must still be in the leaf cgroup
//! the record names, with the start time the record names (a reused pid
//! has another), opened as a pidfd before that check so it cannot change
//! under it. docs/handoff.md ("Crash") describes what is adopted.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::state::AppRecord;
use crate::cgroup::AppCgroup;
use crate::config::resolve::ResolvedApp;

/// The layout this binary writes and reads.
pub const RECORD_VERSION: u32 = 1;

/// The largest record read: one app's record is about 1 KiB.
const MAX_RECORD: u64 = 1024 * 1024;

/// The heartbeat's file in the directory (not a valid app file name:
/// app names have no leading dot).
const HEARTBEAT: &str = ".daemon.json";

/// One app, as the daemon that ran it last saw it settled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrashRecord {
    pub version: u32,
    /// The kernel's boot id: a record of another boot is stale.
    pub boot_id: String,
    /// The writing daemon's version.
    pub daemon_version: String,
    /// [`fingerprint`] of the app configuration it ran under.
    pub fingerprint: String,
    /// The main process's start time (`/proc/PID/stat` field 22, clock
    /// ticks after boot), read when the record was written.
    pub main_start: Option<u64>,
    /// When it was written (Unix ms).
    pub written_unix_ms: u64,
    /// The state, without fds (each fd field empty).
    pub app: AppRecord,
}

/// The writing daemon, rewritten at its start and with every record
/// written or removed (never on a timer: an idle daemon sleeps), so the
/// last one tells when the daemon was last known alive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub boot_id: String,
    pub daemon_version: String,
    pub pid: u32,
    /// Unix ms.
    pub at_unix_ms: u64,
    /// CLOCK_MONOTONIC ns (the host's, the same for every process of a
    /// boot): what "unsupervised for" is measured from.
    pub at_ns: u64,
}

/// A fingerprint of the judged configuration of an app: equal for two
/// configurations that are equal (`ResolvedApp`'s `Debug` text is a
/// function of its value: no hash maps in it), different otherwise, as
/// far as 64-bit FNV-1a tells. It guards against running an app under a
/// stale configuration after a crash, not against an adversary: whoever
/// could craft a colliding file can change the configuration anyway.
/// Another daemon version may print the same value differently: the app
/// is then restarted, never wrongly adopted.
pub fn fingerprint(app: &ResolvedApp) -> String {
    let text = format!("{app:?}");
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("fnv1a64:{hash:016x}")
}

/// Field 22 of `/proc/PID/stat` (the start time): counted after the last
/// `)`, as the command name before it is the app's to choose.
pub fn parse_start_time(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    // Fields 3.. follow the name: the start time is the 20th of them.
    after.split_ascii_whitespace().nth(19)?.parse().ok()
}

/// The start time of process `pid`.
pub fn start_time(pid: u32) -> io::Result<u64> {
    let mut text = String::new();
    File::open(format!("/proc/{pid}/stat"))?
        .take(4096)
        .read_to_string(&mut text)?;
    parse_start_time(&text)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no start time in stat"))
}

/// This boot's id.
pub fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

enum Message {
    Write(Box<CrashRecord>),
    Remove(String),
    /// Answered once everything sent before is on disk.
    Flush(mpsc::Sender<()>),
    /// A clean exit: as `Flush`, then the heartbeat goes too if no record
    /// is left, and the thread ends.
    Close(mpsc::Sender<()>),
}

/// The writer thread's inbox.
#[derive(Debug, Clone)]
pub struct RecordWriter {
    tx: mpsc::Sender<Message>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Message::Write(record) => write!(f, "Write({})", record.app.name),
            Message::Remove(name) => write!(f, "Remove({name})"),
            Message::Flush(_) => write!(f, "Flush"),
            Message::Close(_) => write!(f, "Close"),
        }
    }
}

impl RecordWriter {
    /// Creates `dir` (root's alone) and starts the writer thread, which
    /// also writes the heartbeat.
    pub fn start(dir: PathBuf, daemon_version: &str) -> io::Result<RecordWriter> {
        private_dir(&dir)?;
        let (tx, rx) = mpsc::channel::<Message>();
        let heartbeat = Heartbeat {
            boot_id: boot_id(),
            daemon_version: daemon_version.to_owned(),
            pid: std::process::id(),
            at_unix_ms: 0,
            at_ns: 0,
        };
        std::thread::Builder::new()
            .name("crash-records".to_owned())
            .spawn(move || writer(&dir, &rx, heartbeat))?;
        Ok(RecordWriter { tx })
    }

    /// Saves `app`, run under `fingerprint`, as the record of its app.
    pub fn write(&self, app: AppRecord, fingerprint: String) {
        let record = CrashRecord {
            version: RECORD_VERSION,
            boot_id: String::new(),
            daemon_version: String::new(),
            fingerprint,
            main_start: None,
            written_unix_ms: 0,
            app,
        };
        let _ = self.tx.send(Message::Write(Box::new(record)));
    }

    /// Forgets app `name`: its task ended.
    pub fn remove(&self, name: &str) {
        let _ = self.tx.send(Message::Remove(name.to_owned()));
    }

    /// Waits (at most `within`) until everything sent so far is done.
    pub fn flush(&self, within: Duration) {
        let (tx, rx) = mpsc::channel();
        if self.tx.send(Message::Flush(tx)).is_ok() && rx.recv_timeout(within).is_err() {
            tracing::warn!("the crash records were not all written in time");
        }
    }

    /// At a clean exit, once every app's task has ended: waits (at most
    /// `within`) until everything sent so far is done, so that no record
    /// of a stopped app outlives the daemon; then, when no record is left
    /// (nothing runs for a successor to adopt), removes the heartbeat and
    /// the directory, so a daemon stopped cleanly leaves nothing behind.
    pub fn close(&self, within: Duration) {
        let (tx, rx) = mpsc::channel();
        if self.tx.send(Message::Close(tx)).is_ok() && rx.recv_timeout(within).is_err() {
            tracing::warn!("the crash records were not all removed at exit");
        }
    }
}

/// Creates `dir` as a directory only root may read, or checks that it is
/// one: records are read back as root.
fn private_dir(dir: &Path) -> io::Result<()> {
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
            check_private(dir)?;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        }
        Err(error) => Err(error),
    }
}

/// `dir` is a directory of this user's that nobody else may write to:
/// what is in it was written by this user.
fn check_private(dir: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(dir)?;
    if !meta.is_dir()
        || meta.uid() != nix::unistd::geteuid().as_raw()
        || meta.permissions().mode() & 0o022 != 0
    {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is not a directory of this user's that only it may write to",
                dir.display()
            ),
        ));
    }
    Ok(())
}

/// Rewrites the heartbeat: this daemon was alive now.
fn beat(dir: &Path, heartbeat: &mut Heartbeat) {
    heartbeat.at_unix_ms = unix_ms();
    heartbeat.at_ns = crate::supervise::monotonic_ns();
    let bytes = serde_json::to_vec(&heartbeat).expect("a heartbeat serializes");
    if let Err(error) = replace(dir, HEARTBEAT, &bytes) {
        tracing::warn!(%error, dir = %dir.display(), "writing the daemon's heartbeat");
    }
}

fn writer(dir: &Path, rx: &mpsc::Receiver<Message>, mut heartbeat: Heartbeat) {
    beat(dir, &mut heartbeat);
    // No timer: an idle daemon does not wake up (docs/benchmarks.md).
    while let Ok(first) = rx.recv() {
        // Whatever queued up behind it is taken at once: while many apps
        // start, each file is written once for the app's latest state and
        // the heartbeat once for all, rather than once per message. A flush or close still waits for
        // everything sent before it.
        let mut pending = Vec::new();
        for message in std::iter::once(first).chain(rx.try_iter()) {
            match message {
                Message::Write(_) | Message::Remove(_) => pending.push(message),
                Message::Flush(done) => {
                    save(dir, std::mem::take(&mut pending), &mut heartbeat);
                    let _ = done.send(());
                }
                Message::Close(done) => {
                    save(dir, std::mem::take(&mut pending), &mut heartbeat);
                    close(dir);
                    let _ = done.send(());
                    return;
                }
            }
        }
        save(dir, pending, &mut heartbeat);
    }
}

/// Carries out writes and removals (each app's last one), then beats.
fn save(dir: &Path, messages: Vec<Message>, heartbeat: &mut Heartbeat) {
    if messages.is_empty() {
        return;
    }
    for message in latest_per_app(messages) {
        let (name, result) = match message {
            Message::Write(mut record) => {
                record.boot_id.clone_from(&heartbeat.boot_id);
                record.daemon_version.clone_from(&heartbeat.daemon_version);
                record.written_unix_ms = unix_ms();
                record.main_start = record
                    .app
                    .current
                    .as_ref()
                    .and_then(|c| start_time(c.pid).ok());
                let bytes = serde_json::to_vec(&record).expect("a record serializes");
                let file = format!("{}.json", record.app.name);
                (record.app.name.clone(), replace(dir, &file, &bytes))
            }
            Message::Remove(name) => {
                let result = match fs::remove_file(dir.join(format!("{name}.json"))) {
                    Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
                    other => other,
                };
                (name, result)
            }
            Message::Flush(_) | Message::Close(_) => continue,
        };
        if let Err(error) = result {
            tracing::warn!(app = %name, %error, "saving the app's record for a crash");
        }
    }
    beat(dir, heartbeat);
}

/// A clean exit: without a record left, the heartbeat and the directory go.
fn close(dir: &Path) {
    if !holds_records(dir) {
        if let Err(error) = fs::remove_file(dir.join(HEARTBEAT)) {
            if error.kind() != io::ErrorKind::NotFound {
                tracing::warn!(%error, dir = %dir.display(), "removing the daemon's heartbeat");
            }
        }
        // Empty now, unless someone put something else there.
        let _ = fs::remove_dir(dir);
    }
}

/// Of writes and removals sent one after the other, the last of each app,
/// in the order sent: the earlier ones would be overwritten at once.
fn latest_per_app(messages: Vec<Message>) -> Vec<Message> {
    let app = |message: &Message| match message {
        Message::Write(record) => Some(record.app.name.clone()),
        Message::Remove(name) => Some(name.clone()),
        Message::Flush(_) | Message::Close(_) => None,
    };
    let mut last = std::collections::HashMap::new();
    for (index, message) in messages.iter().enumerate() {
        last.insert(app(message), index);
    }
    messages
        .into_iter()
        .enumerate()
        .filter(|(index, message)| last.get(&app(message)) == Some(index))
        .map(|(_, message)| message)
        .collect()
}

/// Whether `dir` holds an app's record (or cannot be listed, when it
/// might).
fn holds_records(dir: &Path) -> bool {
    let Ok(entries) = fs::read_dir(dir) else {
        return true;
    };
    entries.flatten().any(|entry| {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        !name.starts_with('.') && name.ends_with(".json")
    })
}

/// The largest file rewritten in place: a write within one page at offset
/// 0 is whole or absent after a crash of the process (module docs).
const IN_PLACE_MAX: usize = 4096;

/// Writes `bytes` to `dir/name` so that a crash leaves the old contents or
/// the new, whole: in place when the file exists and both fit a page,
/// otherwise a temporary file, renamed.
fn replace(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let path = dir.join(name);
    if bytes.len() <= IN_PLACE_MAX {
        match fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
        {
            Ok(file) => {
                if rewrite_in_place(&file, bytes)? {
                    return Ok(());
                }
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
    }
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)?;
    file.write_all(bytes)?;
    drop(file);
    fs::rename(&tmp, path)
}

/// Overwrites `file` from offset 0 with `bytes` padded with spaces to the
/// file's length, in one write; `false` (nothing or part written) when
/// the file is not a regular one of at most [`IN_PLACE_MAX`] bytes or
/// the write came short, so the caller renames a whole file over it.
fn rewrite_in_place(file: &File, bytes: &[u8]) -> io::Result<bool> {
    use std::os::unix::fs::FileExt;
    let meta = file.metadata()?;
    let Ok(old) = usize::try_from(meta.len()) else {
        return Ok(false);
    };
    if !meta.is_file() || old > IN_PLACE_MAX {
        return Ok(false);
    }
    let mut padded = Vec::with_capacity(old.max(bytes.len()));
    padded.extend_from_slice(bytes);
    padded.resize(old.max(bytes.len()), b' ');
    Ok(file.write_at(&padded, 0)? == padded.len())
}

/// What the previous daemon left.
#[derive(Debug, Default)]
pub struct Previous {
    pub heartbeat: Option<Heartbeat>,
    /// Each app's record, or why it cannot be used.
    pub records: BTreeMap<String, Result<CrashRecord, String>>,
}

/// Reads what a previous daemon left in `dir`. A directory that is not
/// root's and private yields nothing (and is said in the log); records of
/// another boot or layout are refused.
pub fn read_previous(dir: &Path) -> Previous {
    let mut previous = Previous::default();
    if !dir.exists() {
        return previous;
    }
    if let Err(error) = check_private(dir) {
        tracing::error!(%error, "ignoring every crash record");
        return previous;
    }
    let boot = boot_id();
    previous.heartbeat = read_bounded(&dir.join(HEARTBEAT))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Heartbeat>(&bytes).ok())
        .filter(|h| h.boot_id == boot);
    let Ok(entries) = fs::read_dir(dir) else {
        return previous;
    };
    for entry in entries.flatten() {
        let file = entry.file_name();
        let Some(name) = file.to_str().and_then(|f| f.strip_suffix(".json")) else {
            continue;
        };
        if name.starts_with('.') || name.is_empty() {
            continue;
        }
        let record = read_bounded(&entry.path())
            .map_err(|e| e.to_string())
            .and_then(|bytes| parse_record(&bytes, &boot))
            .and_then(|record| {
                if record.app.name == name {
                    Ok(record)
                } else {
                    Err(format!("the record names app {:?}", record.app.name))
                }
            });
        previous.records.insert(name.to_owned(), record);
    }
    previous
}

/// A record of this layout and boot (pure).
pub fn parse_record(bytes: &[u8], boot_id: &str) -> Result<CrashRecord, String> {
    #[derive(Deserialize)]
    struct Header {
        version: u32,
    }
    let header: Header = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if header.version != RECORD_VERSION {
        return Err(format!(
            "record version {} is not {RECORD_VERSION}",
            header.version
        ));
    }
    let record: CrashRecord = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if record.boot_id != boot_id {
        return Err("written before the last boot".to_owned());
    }
    Ok(record)
}

fn read_bounded(path: &Path) -> io::Result<Vec<u8>> {
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() || meta.uid() != nix::unistd::geteuid().as_raw() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a regular file of this user's",
        ));
    }
    let mut bytes = Vec::new();
    file.take(MAX_RECORD + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_RECORD {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "too large"));
    }
    Ok(bytes)
}

/// Why a running app's main process cannot be adopted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Unadoptable {
    #[error("its record names no running main process")]
    NoProcess,
    #[error("its main process ran in no leaf cgroup of its own")]
    NoLeaf,
    #[error("its main process {pid} is gone")]
    Gone { pid: u32 },
    #[error("pid {pid} is not in its leaf cgroup {leaf}")]
    NotInLeaf { pid: u32, leaf: String },
    #[error("pid {pid} started at another time than the recorded one (a reused pid)")]
    Reused { pid: u32 },
    #[error("{0}")]
    System(String),
}

/// The pidfd of the main process `record` names, once checked: it is in
/// its instance's leaf cgroup under `app_cgroup`, with the start time
/// recorded. The pidfd is opened first, so the process checked is the one
/// it names.
pub fn verify_main(record: &CrashRecord, app_cgroup: &AppCgroup) -> Result<OwnedFd, Unadoptable> {
    let current = record.app.current.as_ref().ok_or(Unadoptable::NoProcess)?;
    if !current.leaf {
        return Err(Unadoptable::NoLeaf);
    }
    let pid = current.pid;
    let pidfd = crate::supervise::workers::pidfd_open(pid).map_err(|error| {
        if error.raw_os_error() == Some(libc::ESRCH) {
            Unadoptable::Gone { pid }
        } else {
            Unadoptable::System(error.to_string())
        }
    })?;
    let leaf = app_cgroup
        .child(&crate::app::InstanceId(current.id).to_string())
        .map_err(|e| Unadoptable::System(e.to_string()))?;
    let in_leaf = leaf.pids().map(|pids| pids.contains(&pid)).unwrap_or(false);
    if !in_leaf {
        return Err(Unadoptable::NotInLeaf {
            pid,
            leaf: leaf.dir().display().to_string(),
        });
    }
    match (start_time(pid), record.main_start) {
        (Ok(now), Some(then)) if now == then => Ok(pidfd),
        (Err(_), _) => Err(Unadoptable::Gone { pid }),
        _ => Err(Unadoptable::Reused { pid }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_time_is_counted_after_the_last_parenthesis() {
        let stat =
            "1234 (a) b) c) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 100";
        assert_eq!(parse_start_time(stat), Some(987_654));
        let plain = "1 (init) S 0 1 1 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 42 0 0";
        assert_eq!(parse_start_time(plain), Some(42));
        assert_eq!(parse_start_time("1 (x) S 0"), None);
        assert_eq!(parse_start_time("no parenthesis"), None);
    }

    #[test]
    fn our_own_start_time_reads() {
        let me = start_time(std::process::id()).expect("own stat");
        assert!(me > 0);
        assert_eq!(start_time(std::process::id()).unwrap(), me);
    }

    fn record(name: &str) -> AppRecord {
        AppRecord::stopped_for_test(name)
    }

    fn wait_for(what: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !what() {
            assert!(std::time::Instant::now() < deadline, "timed out");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn of_messages_queued_together_each_app_keeps_its_last() {
        let write = |name: &str| {
            Message::Write(Box::new(CrashRecord {
                version: RECORD_VERSION,
                boot_id: String::new(),
                daemon_version: String::new(),
                fingerprint: String::new(),
                main_start: None,
                written_unix_ms: 0,
                app: record(name),
            }))
        };
        let kept = latest_per_app(vec![
            write("shop"),
            write("blog"),
            write("shop"),
            Message::Remove("blog".to_owned()),
            write("wiki"),
        ]);
        let kept: Vec<String> = kept.iter().map(|m| format!("{m:?}")).collect();
        assert_eq!(kept, ["Write(shop)", "Remove(blog)", "Write(wiki)"]);
    }

    #[test]
    fn a_file_is_rewritten_in_place_padded_and_renamed_over_when_large() {
        use std::os::unix::fs::MetadataExt;
        let scratch = tempfile::tempdir().unwrap();
        let dir = scratch.path();
        replace(dir, "a.json", br#"{"version":1,"name":"long value"}"#).unwrap();
        let inode = fs::metadata(dir.join("a.json")).unwrap().ino();
        replace(dir, "a.json", br#"{"version":2}"#).unwrap();
        let meta = fs::metadata(dir.join("a.json")).unwrap();
        assert_eq!(meta.ino(), inode, "rewritten in place");
        assert_eq!(meta.mode() & 0o777, 0o600);
        let bytes = fs::read(dir.join("a.json")).unwrap();
        assert_eq!(bytes.len(), r#"{"version":1,"name":"long value"}"#.len());
        let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(value["version"], 2);
        // Beyond a page, a whole new file replaces it, and replaces
        // that file too, so it does not stay larger than a page.
        let large = format!(r#"{{"version":3,"pad":"{}"}}"#, "x".repeat(IN_PLACE_MAX));
        replace(dir, "a.json", large.as_bytes()).unwrap();
        assert_ne!(fs::metadata(dir.join("a.json")).unwrap().ino(), inode);
        assert_eq!(fs::read(dir.join("a.json")).unwrap(), large.as_bytes());
        replace(dir, "a.json", br#"{"version":4}"#).unwrap();
        let bytes = fs::read(dir.join("a.json")).unwrap();
        assert_eq!(bytes.len(), r#"{"version":4}"#.len());
        let names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["a.json"], "no temporary file left");
    }

    #[test]
    fn records_written_are_read_back_and_removed_ones_are_gone() {
        let scratch = tempfile::tempdir().unwrap();
        let dir = scratch.path().join("records");
        let writer = RecordWriter::start(dir.clone(), "9.9.9").unwrap();
        writer.write(record("shop"), "fp-shop".to_owned());
        writer.write(record("blog"), "fp-blog".to_owned());
        writer.remove("blog");
        writer.flush(Duration::from_secs(5));
        wait_for(|| dir.join(HEARTBEAT).exists());
        let previous = read_previous(&dir);
        assert_eq!(previous.heartbeat.unwrap().daemon_version, "9.9.9");
        let names: Vec<&String> = previous.records.keys().collect();
        assert_eq!(names, ["shop"]);
        let shop = previous.records["shop"].as_ref().unwrap();
        assert_eq!(shop.fingerprint, "fp-shop");
        assert_eq!(shop.app, record("shop"));
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
    }

    #[test]
    fn a_clean_close_leaves_the_heartbeat_only_beside_a_record() {
        let scratch = tempfile::tempdir().unwrap();
        let dir = scratch.path().join("records");
        let writer = RecordWriter::start(dir.clone(), "9.9.9").unwrap();
        writer.write(record("shop"), "fp-shop".to_owned());
        writer.remove("shop");
        writer.flush(Duration::from_secs(5));
        assert!(dir.join(HEARTBEAT).exists());
        writer.close(Duration::from_secs(5));
        assert!(!dir.exists(), "{:?}", fs::read_dir(&dir).map(|d| d.count()));

        let writer = RecordWriter::start(dir.clone(), "9.9.9").unwrap();
        writer.write(record("blog"), "fp-blog".to_owned());
        writer.close(Duration::from_secs(5));
        assert!(dir.join(HEARTBEAT).exists(), "kept beside blog's record");
        assert!(dir.join("blog.json").exists());
    }

    #[test]
    fn a_directory_others_may_write_to_is_not_trusted() {
        let scratch = tempfile::tempdir().unwrap();
        let dir = scratch.path().join("records");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        let forged = CrashRecord {
            version: RECORD_VERSION,
            boot_id: boot_id(),
            daemon_version: "0".to_owned(),
            fingerprint: "x".to_owned(),
            main_start: None,
            written_unix_ms: 0,
            app: record("shop"),
        };
        fs::write(dir.join("shop.json"), serde_json::to_vec(&forged).unwrap()).unwrap();
        assert!(read_previous(&dir).records.is_empty());
        // Private again: the same file is read.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        assert!(read_previous(&dir).records["shop"].is_ok());
        // A record under another app's name is refused.
        fs::rename(dir.join("shop.json"), dir.join("blog.json")).unwrap();
        assert!(read_previous(&dir).records["blog"].is_err());
    }

    #[test]
    fn a_main_process_is_adopted_only_where_and_as_its_record_says() {
        use super::super::state::{InstanceRecord, RecordState};
        if !nix::unistd::geteuid().is_root() {
            appvisor_tests::skip("needs root (creates cgroups)");
            return;
        }
        let instance = format!("appvisor-test-{}-adopt", std::process::id());
        let Some(root) = crate::cgroup::CgroupRoot::detect(&instance).unwrap() else {
            appvisor_tests::skip("needs a cgroup v2 tree (none found)");
            return;
        };
        let app = root.app("shop").unwrap();
        let leaf = app.child("i3").unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("100")
            .spawn()
            .unwrap();
        leaf.add_pid(child.id()).unwrap();
        let mut record = CrashRecord {
            version: RECORD_VERSION,
            boot_id: boot_id(),
            daemon_version: "0".to_owned(),
            fingerprint: "x".to_owned(),
            main_start: Some(start_time(child.id()).unwrap()),
            written_unix_ms: 0,
            app: AppRecord {
                state: RecordState::Running,
                current: Some(InstanceRecord {
                    id: 3,
                    pid: child.id(),
                    spawned_ns: 0,
                    started_unix_ms: None,
                    ready_ns: None,
                    notified: false,
                    probed: false,
                    stop_signal: 15,
                    stop_timeout_ms: 1000,
                    stdout_fd: None,
                    stderr_fd: None,
                    probe: None,
                    leaf: true,
                    exit: None,
                }),
                ..record("shop")
            },
        };
        let verdicts = {
            let mut verdicts = vec![verify_main(&record, &app).map(drop)];
            // A pid reused since: another start time.
            record.main_start = record.main_start.map(|t| t + 1);
            verdicts.push(verify_main(&record, &app).map(drop));
            // Another process, in no leaf of the app's.
            record.main_start = Some(start_time(std::process::id()).unwrap());
            record.app.current.as_mut().unwrap().pid = std::process::id();
            verdicts.push(verify_main(&record, &app).map(drop));
            verdicts
        };
        let _ = child.kill();
        let _ = child.wait();
        std::thread::sleep(Duration::from_millis(100));
        let _ = app.remove();
        let _ = root.remove();
        assert_eq!(verdicts[0], Ok(()));
        assert!(
            matches!(verdicts[1], Err(Unadoptable::Reused { .. })),
            "{:?}",
            verdicts[1]
        );
        assert!(
            matches!(verdicts[2], Err(Unadoptable::NotInLeaf { .. })),
            "{:?}",
            verdicts[2]
        );
    }

    #[test]
    fn records_of_another_layout_or_boot_are_refused() {
        assert!(parse_record(br#"{"version": 2}"#, "b")
            .unwrap_err()
            .contains("version 2"));
        assert!(parse_record(b"garbage", "b").is_err());
        assert!(parse_record(br#"{"version": 1, "boot_id": "b"}"#, "b").is_err());
    }
}
