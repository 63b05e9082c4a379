//! The hand-off document: everything one appvisord tells the binary it
//! execs in its place, as a versioned serde document, and the decisions
//! about it that need no system call (which versions a binary reads, which
//! fds the document names, how monotonic instants travel).
//!
//! Pure: no I/O, no clock. The shell (`handoff::exec`, `handoff::incoming`)
//! writes it to a memfd and reads it back.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use appvisor_protocol::{IgnoredFile, StoppedBy};
use serde::{Deserialize, Serialize};

use crate::config::ResolvedApp;
use crate::sandbox::SpawnRecord;
use crate::spawn::Prepared;

/// The version this binary writes. Bump it whenever a change to the types
/// below would make an older or newer binary misread the document, and
/// keep reading the older ones in [`READS`] as long as practical.
///
/// 2: each app's last spawn report (`sandbox`, `prepared`) and the
/// configuration the daemon runs (`config`).
pub const STATE_VERSION: u32 = 2;

/// The versions this binary can read.
pub const READS: std::ops::RangeInclusive<u32> = 1..=STATE_VERSION;

/// The environment variable naming the memfd that holds the document.
pub const STATE_FD_VAR: &str = "APPVISOR_HANDOFF_FD";

/// Set by a new binary that could not take over when it execs the old one
/// back: why (shown in status and the daemon log).
pub const FALLBACK_VAR: &str = "APPVISOR_HANDOFF_ERROR";

/// The one field every version has, read before the rest.
#[derive(Debug, Deserialize)]
pub struct Header {
    pub version: u32,
}

/// The whole document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Document {
    pub version: u32,
    /// This hand-off.
    pub handoff: Handoff,
    /// The old binary, open (O_PATH is not enough for fexecve: O_RDONLY),
    /// to exec again if the new one cannot take over.
    pub fallback_fd: i32,
    /// The soft RLIMIT_NOFILE the first daemon was started with, which
    /// apps get: every later image starts with the raised limit.
    pub apps_open_files: Option<u64>,
    /// The control socket's listener: connections queue in its backlog
    /// while no process accepts.
    pub control_fd: i32,
    /// `[status] listen`'s listener, when it was bound.
    pub status_fd: Option<i32>,
    /// The control-request counters of the status server's metrics.
    pub control_requests: Vec<RequestCount>,
    pub apps: Vec<AppRecord>,
    /// The configuration the old daemon runs, a [`CarriedConfig`] (since
    /// version 2). Read apart from the rest ([`Document::carried_config`]):
    /// a binary that cannot read it still takes the apps over, judging
    /// apps.d instead.
    #[serde(default)]
    pub config: Option<serde_json::Value>,
}

/// The configuration a daemon runs, as judged when it was last applied:
/// the binary a hand-off execs adopts it as it is, so a hand-off applies
/// no change to `appvisor.toml` or apps.d by itself (`appctl update` and
/// SIGHUP do, as before).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CarriedConfig {
    /// `appvisor.toml`: its path and the text the daemon validated.
    pub daemon_file: PathBuf,
    pub daemon_text: String,
    /// Every app of the registry, with or without a task.
    pub apps: Vec<CarriedApp>,
    /// Files of apps.d not loaded for their names, as of the last apply.
    pub ignored: Vec<IgnoredFile>,
}

/// One app of the registry: the version that runs, and why the newest
/// version of its file does not (`error`) or why it has no task
/// (`refused`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CarriedApp {
    pub name: String,
    pub file: PathBuf,
    pub app: Option<ResolvedApp>,
    pub error: Option<String>,
    pub refused: Option<String>,
    /// Unix seconds: when the registry last changed it.
    pub since: u64,
}

/// Who asked for a hand-off and when: what status and the audit trail say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handoff {
    /// Unique per hand-off: the caller waits for the daemon to report this id.
    pub id: u64,
    /// The user who asked, or `SIGUSR2`.
    pub requested_by: String,
    /// The version of the binary that wrote the document.
    pub from_version: String,
    /// CLOCK_MONOTONIC when the apps' tasks stopped supervising (ns).
    pub frozen_at_ns: u64,
    /// Seconds since the Unix epoch when the request came in.
    pub requested_at: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestCount {
    pub route: String,
    pub outcome: String,
    pub count: u64,
}

/// The states an app can be handed over in: those without a transition
/// under way (see `Supervisor::is_settled` in supervise/handoff.rs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordState {
    Stopped,
    Running,
    Backoff,
    Exited,
    Fatal,
}

/// Who last changed an app, as `app::Cause` says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CauseRecord {
    Autostart,
    Operator(String),
    Config,
    Shutdown,
}

/// One app's task, stopped between two events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppRecord {
    pub name: String,
    pub state: RecordState,
    pub reason: String,
    /// When the state began: monotonic ns (for the machine) and Unix
    /// seconds (for status).
    pub since_ns: u64,
    pub since_unix: u64,
    pub failures: u32,
    pub restarts: u32,
    pub last_instance: u64,
    pub timer_generation: u64,
    pub rng: u64,
    pub cause: Option<CauseRecord>,
    /// The armed backoff timer: its generation and when it fires
    /// (monotonic ns).
    pub backoff: Option<(u64, u64)>,
    pub current: Option<InstanceRecord>,
    pub readiness_failures: u64,
    pub stopped_by: Option<StoppedBy>,
    pub release: Option<String>,
    pub notify_status: Option<String>,
    pub oom_baseline: Option<u64>,
    /// The bound NOTIFY_SOCKET: fd and path.
    pub notify: Option<(i32, PathBuf)>,
    pub listen: Vec<ListenRecord>,
    /// Owner of the Unix listen socket files.
    pub listen_owner: (u32, u32),
    /// What the exec helper enforced and verified at the app's last spawn
    /// (`appctl security`'s Landlock and verified sets), or why that spawn
    /// was refused. Since version 2.
    #[serde(default)]
    pub sandbox: SpawnRecord,
    /// What the last spawn read of the app's venv and directory, which
    /// its sandbox plan was built on. Since version 2.
    #[serde(default)]
    pub prepared: Option<Prepared>,
}

/// One held `[[listen]]` socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenRecord {
    pub fd: i32,
    /// The address as configured, to check against the new configuration.
    pub address: String,
    /// A Unix socket's file, removed only while ours.
    pub unix_file: Option<UnixFileRecord>,
}

/// A Unix listen socket's file: the directory it was bound in (an fd),
/// its name there, its path (for messages) and identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnixFileRecord {
    pub dir_fd: i32,
    pub name: String,
    pub path: PathBuf,
    pub dev: u64,
    pub ino: u64,
}

/// The running instance of an app handed over in `running`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceRecord {
    pub id: u64,
    pub pid: u32,
    /// When its main process was exec'd (monotonic ns) and the wall clock
    /// then (Unix ms).
    pub spawned_ns: u64,
    pub started_unix_ms: Option<u64>,
    pub ready_ns: Option<u64>,
    /// Which halves of ready it gave (`READY=1`, the probe).
    pub notified: bool,
    pub probed: bool,
    /// The stop settings it was spawned with.
    pub stop_signal: i32,
    pub stop_timeout_ms: u64,
    /// Read ends of its output pipes.
    pub stdout_fd: Option<i32>,
    pub stderr_fd: Option<i32>,
    /// Its private probe socket: fd and path.
    pub probe: Option<(i32, PathBuf)>,
    /// Whether it runs in a leaf cgroup of its own (`i<id>`).
    pub leaf: bool,
    /// Its main process exited after the task stopped and before the
    /// reaper was paused: the status, for the new task to feed.
    pub exit: Option<ExitRecord>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExitRecord {
    Code(i32),
    Signal(i32),
    MemoryLimit(u64),
    /// An adopted main process (not the daemon's child) ended.
    Unknown,
}

/// Why a document cannot be taken over.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StateError {
    #[error("hand-off state version {found} is not one this appvisord reads ({min}..={max})")]
    Version { found: u32, min: u32, max: u32 },
    #[error("hand-off state does not parse: {0}")]
    Parse(String),
    #[error("hand-off state names fd {fd} twice")]
    DuplicateFd { fd: i32 },
    #[error("hand-off state names fd {fd}, which is not one a hand-off passes (3 and up)")]
    BadFd { fd: i32 },
}

/// Whether a binary that reads `reads` can take over a document of
/// `version`.
pub fn check_version(
    version: u32,
    reads: &std::ops::RangeInclusive<u32>,
) -> Result<(), StateError> {
    if reads.contains(&version) {
        Ok(())
    } else {
        Err(StateError::Version {
            found: version,
            min: *reads.start(),
            max: *reads.end(),
        })
    }
}

impl Document {
    /// Parses a document of a version in `reads`: the version first, so a
    /// newer layout is reported as a version, not as a parse error.
    pub fn parse(
        bytes: &[u8],
        reads: &std::ops::RangeInclusive<u32>,
    ) -> Result<Document, StateError> {
        let header: Header =
            serde_json::from_slice(bytes).map_err(|e| StateError::Parse(e.to_string()))?;
        check_version(header.version, reads)?;
        let document: Document =
            serde_json::from_slice(bytes).map_err(|e| StateError::Parse(e.to_string()))?;
        document.check_fds()?;
        Ok(document)
    }

    /// The configuration the document carries: `None` in a document
    /// before version 2, `Err` when this binary cannot read it (a newer
    /// or older shape of the configuration's types).
    pub fn carried_config(&self) -> Option<Result<CarriedConfig, String>> {
        let value = self.config.as_ref()?;
        Some(CarriedConfig::deserialize(value).map_err(|e| e.to_string()))
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a document always serializes")
    }

    /// Every fd the document names, in a fixed order: exactly the fds the
    /// old process leaves open across exec.
    pub fn fds(&self) -> Vec<i32> {
        let mut fds = vec![self.fallback_fd, self.control_fd];
        fds.extend(self.status_fd);
        for app in &self.apps {
            fds.extend(app.fds());
        }
        fds
    }

    /// Each named fd is 3 or above (0-2 are the daemon's own stdio) and
    /// named once: a document that names one twice would have two owners
    /// close it.
    pub fn check_fds(&self) -> Result<(), StateError> {
        let mut seen = BTreeSet::new();
        for fd in self.fds() {
            if fd < 3 {
                return Err(StateError::BadFd { fd });
            }
            if !seen.insert(fd) {
                return Err(StateError::DuplicateFd { fd });
            }
        }
        Ok(())
    }
}

impl AppRecord {
    /// A stopped app's record, for tests to change what they need.
    #[cfg(test)]
    pub(crate) fn stopped_for_test(name: &str) -> AppRecord {
        AppRecord {
            name: name.to_owned(),
            state: RecordState::Stopped,
            reason: "stopped".to_owned(),
            since_ns: 1,
            since_unix: 2,
            failures: 0,
            restarts: 0,
            last_instance: 0,
            timer_generation: 0,
            rng: 3,
            cause: None,
            backoff: None,
            current: None,
            readiness_failures: 0,
            stopped_by: None,
            release: None,
            notify_status: None,
            oom_baseline: None,
            notify: None,
            listen: Vec::new(),
            listen_owner: (0, 0),
            sandbox: SpawnRecord::default(),
            prepared: None,
        }
    }

    /// A fingerprint of what the record says, but for the instants, which
    /// each conversion from `Instant` reads afresh (a few ns apart): two
    /// records with the same fingerprint say the same thing, short of a
    /// 64-bit hash collision. An app's task keeps this rather than a copy
    /// of the record it saved last, which costs about a kilobyte per app.
    pub fn steady_fingerprint(&self) -> u64 {
        /// Feeds the JSON text to the hasher as it is written.
        struct Hashing(std::collections::hash_map::DefaultHasher);
        impl std::io::Write for Hashing {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                std::hash::Hasher::write(&mut self.0, bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut record = self.clone();
        record.since_ns = 0;
        if let Some(backoff) = record.backoff.as_mut() {
            backoff.1 = 0;
        }
        if let Some(current) = record.current.as_mut() {
            current.spawned_ns = 0;
            current.ready_ns = current.ready_ns.map(|_| 0);
        }
        // Fixed keys: the same record gives the same fingerprint.
        let mut hashing = Hashing(std::collections::hash_map::DefaultHasher::new());
        serde_json::to_writer(&mut hashing, &record).expect("a record serializes");
        std::hash::Hasher::finish(&hashing.0)
    }

    /// The fds of this app the document names.
    pub fn fds(&self) -> Vec<i32> {
        let mut fds: Vec<i32> = self.notify.iter().map(|(fd, _)| *fd).collect();
        for listen in &self.listen {
            fds.push(listen.fd);
            fds.extend(listen.unix_file.as_ref().map(|f| f.dir_fd));
        }
        if let Some(current) = &self.current {
            fds.extend(current.stdout_fd);
            fds.extend(current.stderr_fd);
            fds.extend(current.probe.as_ref().map(|(fd, _)| *fd));
        }
        fds
    }
}

/// A monotonic instant as it travels: ns on CLOCK_MONOTONIC, which the
/// whole host shares, so the same number means the same instant in the
/// process after exec. `age` is how long before `now_ns` the instant was.
pub fn instant_to_ns(now_ns: u64, age: Duration) -> u64 {
    now_ns.saturating_sub(u64::try_from(age.as_nanos()).unwrap_or(u64::MAX))
}

/// How long before `now_ns` the instant `at_ns` was (zero if after).
pub fn age_of(now_ns: u64, at_ns: u64) -> Duration {
    Duration::from_nanos(now_ns.saturating_sub(at_ns))
}

/// How long from `now_ns` until `at_ns` (zero if past).
pub fn time_until(now_ns: u64, at_ns: u64) -> Duration {
    Duration::from_nanos(at_ns.saturating_sub(now_ns))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(name: &str, fds: &[i32]) -> AppRecord {
        AppRecord {
            name: name.to_owned(),
            state: RecordState::Running,
            reason: "running".to_owned(),
            since_ns: 5,
            since_unix: 6,
            failures: 0,
            restarts: 2,
            last_instance: 3,
            timer_generation: 4,
            rng: 7,
            cause: Some(CauseRecord::Operator("alice".to_owned())),
            backoff: None,
            current: Some(InstanceRecord {
                id: 3,
                pid: 1234,
                spawned_ns: 1,
                started_unix_ms: Some(2),
                ready_ns: Some(3),
                notified: true,
                probed: false,
                stop_signal: 15,
                stop_timeout_ms: 10_000,
                stdout_fd: fds.first().copied(),
                stderr_fd: fds.get(1).copied(),
                probe: None,
                leaf: true,
                exit: None,
            }),
            readiness_failures: 0,
            stopped_by: None,
            release: None,
            notify_status: None,
            oom_baseline: None,
            notify: fds
                .get(2)
                .map(|fd| (*fd, PathBuf::from("/run/appvisor/notify/a.sock"))),
            listen: fds
                .iter()
                .skip(3)
                .map(|fd| ListenRecord {
                    fd: *fd,
                    address: "127.0.0.1:8000".to_owned(),
                    unix_file: None,
                })
                .collect(),
            listen_owner: (1000, 1000),
            sandbox: SpawnRecord {
                landlock: None,
                verified: Some(crate::sandbox::Verified {
                    no_new_privs: true,
                    ..Default::default()
                }),
                refusal: None,
            },
            prepared: Some(Prepared {
                venv: crate::sandbox::venv::VenvFacts::none(),
                release: Some(PathBuf::from("/srv/shop/releases/7")),
                linked_dirs: vec![PathBuf::from("/run/systemd/resolve")],
            }),
        }
    }

    fn document(apps: Vec<AppRecord>) -> Document {
        Document {
            version: STATE_VERSION,
            handoff: Handoff {
                id: 1,
                requested_by: "root".to_owned(),
                from_version: "0.1.0".to_owned(),
                frozen_at_ns: 10,
                requested_at: 11,
            },
            fallback_fd: 3,
            apps_open_files: Some(1024),
            control_fd: 4,
            status_fd: Some(5),
            control_requests: vec![RequestCount {
                route: "start".to_owned(),
                outcome: "ok".to_owned(),
                count: 9,
            }],
            apps,
            config: Some(serde_json::to_value(carried()).unwrap()),
        }
    }

    fn carried() -> CarriedConfig {
        use crate::config::test_spec::app_spec;
        use crate::config::{ListenAddress, ListenSpec, Probe, ReadinessKind};
        let mut spec = app_spec("shop", &["/srv/shop/venv/bin/gunicorn", "app:app"]);
        spec.listen.push(ListenSpec {
            address: ListenAddress::Unix(PathBuf::from("/run/shop/web.sock")),
            name: "web".to_owned(),
        });
        spec.readiness.kind = ReadinessKind::Probe(Probe::Tcp("127.0.0.1:8000".parse().unwrap()));
        spec.environment
            .insert("LANG".to_owned(), "C.UTF-8".to_owned());
        spec.sandbox.bind_ports = Some(vec![8000]);
        spec.limits.memory = Some(256 << 20);
        let app = ResolvedApp {
            spec,
            uid: 1000,
            gid: 1000,
            groups: Box::new([1000, 27]),
            user_name: "shop".to_owned(),
            home: std::path::Path::new("/home/shop").into(),
            shell: std::path::Path::new("/bin/sh").into(),
            weaknesses: Box::default(),
        };
        CarriedConfig {
            daemon_file: PathBuf::from("/etc/appvisor/appvisor.toml"),
            daemon_text: "[defaults]\numask = \"027\"\n".to_owned(),
            apps: vec![
                CarriedApp {
                    name: "shop".to_owned(),
                    file: PathBuf::from("/etc/appvisor/apps.d/shop.toml"),
                    app: Some(app),
                    error: Some("shop.toml:3: a newer version that does not validate".to_owned()),
                    refused: None,
                    since: 12,
                },
                CarriedApp {
                    name: "broken".to_owned(),
                    file: PathBuf::from("/etc/appvisor/apps.d/broken.toml"),
                    app: None,
                    error: Some("broken.toml:1: expected a table".to_owned()),
                    refused: None,
                    since: 13,
                },
            ],
            ignored: vec![IgnoredFile {
                file: "/etc/appvisor/apps.d/Shop.toml".to_owned(),
                reason: "invalid app name".to_owned(),
            }],
        }
    }

    #[test]
    fn a_fingerprint_tells_records_apart_but_not_by_their_instants() {
        let saved = app("shop", &[6, 7]);
        let mut later = saved.clone();
        later.since_ns += 1;
        let current = later.current.as_mut().expect("running");
        current.spawned_ns += 1;
        current.ready_ns = Some(99);
        assert_eq!(saved.steady_fingerprint(), later.steady_fingerprint());
        let mut changed = saved.clone();
        changed.reason = "running, restarted".to_owned();
        assert_ne!(saved.steady_fingerprint(), changed.steady_fingerprint());
        let mut stopped = saved.clone();
        stopped.current = None;
        assert_ne!(saved.steady_fingerprint(), stopped.steady_fingerprint());
    }

    #[test]
    fn a_document_survives_the_trip_through_bytes() {
        let doc = document(vec![app("shop", &[6, 7, 8, 9]), app("blog", &[10, 11])]);
        let back = Document::parse(&doc.to_bytes(), &READS).expect("parses");
        assert_eq!(back, doc);
    }

    #[test]
    fn the_configuration_that_runs_is_carried_exactly() {
        let doc = document(vec![app("shop", &[6, 7])]);
        let back = Document::parse(&doc.to_bytes(), &READS).expect("parses");
        assert_eq!(back.carried_config(), Some(Ok(carried())));
    }

    #[test]
    fn a_configuration_this_binary_cannot_read_leaves_the_rest_readable() {
        let mut doc = document(vec![app("shop", &[6, 7])]);
        // Another binary's shape of the configuration: a key missing.
        let mut config = serde_json::to_value(carried()).unwrap();
        config["apps"][0]["app"]["spec"]
            .as_object_mut()
            .unwrap()
            .remove("restart");
        doc.config = Some(config);
        let back = Document::parse(&doc.to_bytes(), &READS).expect("the document parses");
        assert_eq!(back.apps, doc.apps);
        let error = back.carried_config().expect("carried").unwrap_err();
        assert!(error.contains("missing field `restart`"), "{error}");
        // A name no app may have is refused, not carried.
        let mut config = serde_json::to_value(carried()).unwrap();
        config["apps"][0]["app"]["spec"]["name"] = "../etc".into();
        doc.config = Some(config);
        assert!(doc.carried_config().expect("carried").is_err());
    }

    #[test]
    fn a_version_1_document_is_read_without_what_version_2_added() {
        let mut v1 = serde_json::to_value(document(vec![app("shop", &[6, 7])])).unwrap();
        v1["version"] = 1.into();
        let object = v1.as_object_mut().unwrap();
        object.remove("config");
        for app in object["apps"].as_array_mut().unwrap() {
            let app = app.as_object_mut().unwrap();
            app.remove("sandbox");
            app.remove("prepared");
        }
        let back = Document::parse(&serde_json::to_vec(&v1).unwrap(), &READS).expect("reads v1");
        assert_eq!(back.version, 1);
        assert_eq!(back.carried_config(), None);
        assert_eq!(back.apps[0].sandbox, SpawnRecord::default());
        assert_eq!(back.apps[0].prepared, None);
    }

    #[test]
    fn version_decisions() {
        let cases: &[(u32, std::ops::RangeInclusive<u32>, bool)] = &[
            (1, 1..=1, true),
            (1, 1..=2, true),
            (2, 1..=2, true),
            (2, 1..=1, false),
            (0, 1..=1, false),
            (7, 3..=5, false),
        ];
        for (version, reads, ok) in cases {
            assert_eq!(
                check_version(*version, reads).is_ok(),
                *ok,
                "version {version} with reads {reads:?}"
            );
        }
    }

    #[test]
    fn a_newer_layout_is_refused_by_its_version_not_as_garbage() {
        let bytes = br#"{"version": 99, "something": "new"}"#;
        assert_eq!(
            Document::parse(bytes, &READS),
            Err(StateError::Version {
                found: 99,
                min: 1,
                max: STATE_VERSION
            })
        );
        assert!(matches!(
            Document::parse(b"not json", &READS),
            Err(StateError::Parse(_))
        ));
    }

    #[test]
    fn fds_are_listed_once_each_in_a_fixed_order() {
        let doc = document(vec![app("shop", &[6, 7, 8, 9])]);
        assert_eq!(doc.fds(), vec![3, 4, 5, 8, 9, 6, 7]);
        assert_eq!(doc.check_fds(), Ok(()));
    }

    #[test]
    fn a_document_naming_an_fd_twice_or_stdio_is_refused() {
        let doc = document(vec![app("shop", &[6, 7]), app("blog", &[7])]);
        assert_eq!(doc.check_fds(), Err(StateError::DuplicateFd { fd: 7 }));
        let doc = document(vec![app("shop", &[2])]);
        assert_eq!(doc.check_fds(), Err(StateError::BadFd { fd: 2 }));
        let bytes = doc.to_bytes();
        assert_eq!(
            Document::parse(&bytes, &READS),
            Err(StateError::BadFd { fd: 2 })
        );
    }

    #[test]
    fn instants_travel_as_monotonic_ns() {
        let now = 1_000_000_000;
        let at = instant_to_ns(now, Duration::from_millis(250));
        assert_eq!(at, 750_000_000);
        // Later, in the new process: the same instant, 100 ms older.
        assert_eq!(age_of(now + 100_000_000, at), Duration::from_millis(350));
        assert_eq!(time_until(now, now + 5), Duration::from_nanos(5));
        assert_eq!(time_until(now, now - 5), Duration::ZERO);
        // An age beyond the clock's start saturates instead of wrapping.
        assert_eq!(instant_to_ns(10, Duration::from_secs(1)), 0);
    }
}
