//! The chaos suite, output and noise: an app's output, its notify
//! socket, a stranger's requests, an operator's log reads and the log disk,
//! each at its worst, beside a healthy neighbour measured with
//! `appvisor_tests::chaos`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use appvisor_tests::chaos::{self, NEIGHBOUR};
use appvisor_tests::daemon::describe_output;
use appvisor_tests::testapps::python;
use appvisor_tests::{
    bins, free_port, http_get, poll_until, require_root, AppStatus, Daemon, DaemonOptions, Prefix,
    Readiness, State, TestUser,
};

/// appvisor's `logs::MAX_LINE` and `CONTINUED`: the longest line kept whole,
/// and the mark after each piece of a longer one.
const MAX_LINE: u64 = 64 * 1024;
const CONTINUED: &str = "…\n";

/// The app `noisy.py MODE ARGS…` as `user`, started at once.
fn noisy(
    prefix: &Prefix,
    name: &str,
    user: &TestUser,
    args: &[&str],
) -> appvisor_tests::AppBuilder {
    python(prefix, name, user, "noisy.py", args)
        .readiness(Readiness::None)
        .start_secs(Duration::ZERO)
}

/// Waits until `noisy.py` said it wrote everything.
fn wait_for_noisy_done(daemon: &Daemon, prefix: &Prefix, app: &str, within: Duration) {
    let stderr = prefix.app_log_dir(app).join("stderr.log");
    daemon.wait_until(within, &format!("{app} to finish writing"), || {
        fs::read_to_string(&stderr).is_ok_and(|text| text.contains("noisy done"))
    });
}

fn status_of(daemon: &Daemon, app: &str) -> AppStatus {
    daemon.app(app)
}

/// `(file name, size)` of every regular file in `dir`.
fn files_with_sizes(dir: &Path) -> Vec<(String, u64)> {
    let mut files: Vec<(String, u64)> = fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|entry| {
                    let meta = entry.metadata().ok()?;
                    meta.is_file()
                        .then(|| (entry.file_name().to_string_lossy().into_owned(), meta.len()))
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// Lines of the daemon's log containing every one of `needles`.
fn log_lines_with(daemon: &Daemon, needles: &[&str]) -> usize {
    daemon
        .log()
        .lines()
        .filter(|line| needles.iter().all(|needle| line.contains(needle)))
        .count()
}

#[test]
fn three_hundred_mb_without_a_newline_stay_within_max_size_and_keep() {
    require_root!();
    let user = TestUser::ensure("avt-app1");
    let prefix = Prefix::new();
    chaos::neighbour(&user).write(&prefix);
    noisy(&prefix, "flood", &user, &["noline", "300"])
        .logs("1MiB", 2)
        .write(&prefix);
    let daemon = Daemon::start(&prefix, DaemonOptions::default());
    daemon.wait_for_state(NEIGHBOUR, State::Running, Duration::from_secs(10));

    let dir = prefix.app_log_dir("flood");
    // Each file is at most max_size plus one line, and a line is at most
    // MAX_LINE plus its mark; keep = 2 allows three stdout files.
    let file_bound = (1 << 20) + MAX_LINE + CONTINUED.len() as u64;
    let check_files = || {
        let stdout: Vec<(String, u64)> = files_with_sizes(&dir)
            .into_iter()
            .filter(|(name, _)| name.starts_with("stdout"))
            .collect();
        assert!(
            stdout.len() <= 3,
            "keep = 2 allows stdout.log, .1 and .2: {stdout:?}"
        );
        for (name, size) in &stdout {
            assert!(*size <= file_bound, "{name} is {size} bytes: {stdout:?}");
        }
    };
    chaos::assert_no_cascade(&daemon);
    check_files();
    wait_for_noisy_done(&daemon, &prefix, "flood", Duration::from_secs(240));
    check_files();
    chaos::assert_no_cascade(&daemon);

    let current = fs::read(dir.join("stdout.log")).expect("stdout.log");
    let text = String::from_utf8(current).expect("cut on character boundaries");
    let pieces: Vec<&str> = text.split_inclusive('\n').collect();
    assert!(pieces.len() > 1, "the line was cut: {} bytes", text.len());
    for piece in &pieces[..pieces.len() - 1] {
        assert_eq!(
            piece.len() as u64,
            MAX_LINE + CONTINUED.len() as u64,
            "every full piece is MAX_LINE bytes and the mark"
        );
        assert!(piece.ends_with(CONTINUED));
    }
    let flood = status_of(&daemon, "flood");
    assert_eq!(flood.state, State::Running, "{flood:?}");
    assert_eq!(flood.log_dropped_bytes, 0, "nothing was dropped: {flood:?}");
}

#[test]
fn a_notify_garbage_flood_is_logged_with_a_rate_limit() {
    require_root!();
    let user = TestUser::ensure("avt-app1");
    let prefix = Prefix::new();
    chaos::neighbour(&user).write(&prefix);
    python(
        &prefix,
        "flooder",
        &user,
        "noisy.py",
        &["notify-flood", "5"],
    )
    .readiness(Readiness::Notify)
    .write(&prefix);
    let daemon = Daemon::start(&prefix, DaemonOptions::default());
    daemon.wait_for_state(NEIGHBOUR, State::Running, Duration::from_secs(10));
    daemon.wait_for_state("flooder", State::Running, Duration::from_secs(10));

    chaos::assert_no_cascade(&daemon);
    wait_for_noisy_done(&daemon, &prefix, "flooder", Duration::from_secs(30));
    chaos::assert_no_cascade(&daemon);

    // A burst of 5 per 10-second window: the flood lasted 5 seconds.
    let refused = log_lines_with(&daemon, &["refused a notify message"]);
    assert!(
        (1..=10).contains(&refused),
        "{refused} refusals logged one by one\n{}",
        daemon.log_tail(30)
    );
    daemon.wait_until(
        Duration::from_secs(15),
        "the summary of suppressed notify messages",
        || {
            log_lines_with(
                &daemon,
                &["notify messages refused or ignored", "more suppressed"],
            ) > 0
        },
    );
    let log = daemon.log();
    let summary = log
        .lines()
        .find(|line| line.contains("more suppressed"))
        .expect("found above");
    let suppressed: u64 = summary
        .split("suppressed=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {summary:?}"));
    assert!(suppressed > 100, "a flood, summarized: {summary}");
    assert_eq!(
        status_of(&daemon, "flooder").state,
        State::Running,
        "garbage is refused, not fatal"
    );
}

/// Sends `rounds` batches of 300 pipelined `POST /v1/apps/neighbour/stop`
/// as `user`, printing how many 404 answers each batch got.
const PIPELINED_REFUSALS: &str = r#"
import socket, sys
path, rounds = sys.argv[1], int(sys.argv[2])
request = b"POST /v1/apps/neighbour/stop HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
for _ in range(rounds):
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    s.sendall(request * 300)
    data = b""
    while data.count(b"HTTP/1.1 ") < 300:
        chunk = s.recv(1 << 16)
        if not chunk:
            break
        data += chunk
    print(data.count(b"HTTP/1.1 404 "), flush=True)
    s.close()
"#;

#[test]
fn pipelined_refused_requests_from_a_stranger_are_audited_with_a_rate_limit() {
    require_root!();
    let user = TestUser::ensure("avt-app1");
    let stranger = TestUser::ensure("avt-ctl-eve");
    let prefix = Prefix::new();
    chaos::neighbour(&user).write(&prefix);
    let port = free_port();
    let daemon = Daemon::start(
        &prefix,
        DaemonOptions {
            status_listen: format!("127.0.0.1:{port}"),
            ..DaemonOptions::default()
        },
    );
    daemon.wait_for_state(NEIGHBOUR, State::Running, Duration::from_secs(10));

    let rounds = 5;
    let flood = stranger
        .command(bins::SYSTEM_PYTHON)
        .arg("-c")
        .arg(PIPELINED_REFUSALS)
        .arg(daemon.socket())
        .arg(rounds.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 as the stranger");
    chaos::assert_no_cascade(&daemon);
    let out = wait_with_deadline(flood, Duration::from_secs(120), "the pipelined requests");
    assert!(out.status.success(), "{}", describe_output(&out));
    let answered: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
    assert_eq!(
        answered,
        vec!["300"; rounds],
        "every pipelined request got its 404"
    );
    chaos::assert_no_cascade(&daemon);

    let uid = format!("uid={}", stranger.uid);
    let recorded = log_lines_with(&daemon, &["audit", "control request", &uid]);
    assert!(
        (1..=20).contains(&recorded),
        "{recorded} of {} refusals recorded one by one (a burst of 10 per 10 s)\n{}",
        300 * rounds,
        daemon.log_tail(30)
    );
    daemon.wait_until(
        Duration::from_secs(15),
        "the audit summary of suppressed refusals",
        || log_lines_with(&daemon, &["audit", &uid, "more suppressed"]) > 0,
    );
    // Every request still counts.
    let metrics = http_get(port, "/metrics").expect("GET /metrics").body;
    let count = format!(
        "appvisor_control_requests_total{{action=\"stop\",outcome=\"not_found\"}} {}",
        300 * rounds
    );
    assert!(metrics.contains(&count), "{count} in\n{metrics}");
    assert_eq!(
        status_of(&daemon, NEIGHBOUR).state,
        State::Running,
        "no refused request acted"
    );
}

#[test]
fn sixteen_parallel_huge_log_reads_keep_the_daemon_small() {
    require_root!();
    let user = TestUser::ensure("avt-app1");
    let prefix = Prefix::new();
    chaos::neighbour(&user).write(&prefix);
    // 60 MiB in lines of 48 KiB.
    noisy(&prefix, "chatty", &user, &["longlines", "60", "48"])
        .logs("50MiB", 5)
        .write(&prefix);
    let daemon = Daemon::start(&prefix, DaemonOptions::default());
    daemon.wait_for_state(NEIGHBOUR, State::Running, Duration::from_secs(10));
    wait_for_noisy_done(&daemon, &prefix, "chatty", Duration::from_secs(120));

    let readers: Vec<Child> = (0..16)
        .map(|_| {
            Command::new(bins::appctl())
                .arg("--socket")
                .arg(daemon.socket())
                .args(["logs", "chatty", "-n", "100000"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("appctl logs")
        })
        .collect();
    let mut peak = 0;
    let began = Instant::now();
    let mut readers: Vec<Option<Child>> = readers.into_iter().map(Some).collect();
    let mut checked_cascade = false;
    while readers.iter().any(Option::is_some) {
        assert!(
            began.elapsed() < Duration::from_secs(300),
            "16 log reads still running after 5 minutes"
        );
        peak = peak.max(chaos::daemon_rss(&daemon));
        chaos::assert_daemon_rss_bounded(&daemon);
        if !checked_cascade {
            chaos::assert_no_cascade(&daemon);
            checked_cascade = true;
        }
        for slot in readers.iter_mut() {
            let exited = match slot {
                Some(child) => child.try_wait().expect("try_wait").is_some(),
                None => false,
            };
            if exited {
                let out = slot
                    .take()
                    .expect("some")
                    .wait_with_output()
                    .expect("output");
                assert!(out.status.success(), "{}", describe_output(&out));
            }
        }
        thread::sleep(Duration::from_millis(50));
    }
    chaos::assert_no_cascade(&daemon);
    eprintln!(
        "16 reads of 60 MiB in {:?}, daemon peak RSS {} MiB",
        began.elapsed(),
        peak >> 20
    );

    // And a read gives the whole log, every line intact.
    let out = Command::new(bins::appctl())
        .arg("--socket")
        .arg(daemon.socket())
        .args(["logs", "chatty", "-n", "100000", "--stdout"])
        .output()
        .expect("appctl logs");
    assert!(out.status.success(), "{}", describe_output(&out));
    let lines: Vec<&[u8]> = out.stdout.split(|&b| b == b'\n').collect();
    assert_eq!(
        lines.len(),
        60 * 1024 / 48 + 1,
        "all lines, and nothing after the last"
    );
    assert!(lines[..lines.len() - 1]
        .iter()
        .all(|line| line.len() == 48 * 1024 - 1 && line.iter().all(|&b| b == b'y')));
}

/// A tmpfs mounted over a directory for a test, unmounted (lazily: the
/// daemon may still hold files) when dropped.
struct Tmpfs {
    at: PathBuf,
}

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(at)
            .status()
            .expect("mount");
        assert!(status.success(), "mounting a tmpfs on {}", at.display());
        Tmpfs { at: at.to_owned() }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.at).status();
    }
}

/// Writes `path` until the file system is full.
fn fill(path: &Path) {
    let mut file = fs::File::create(path).expect("filler");
    let block = vec![0u8; 64 * 1024];
    while file.write_all(&block).is_ok() {}
}

#[test]
fn a_full_log_disk_drops_output_then_marks_it_and_counts_it() {
    require_root!();
    let user = TestUser::ensure("avt-app1");
    let prefix = Prefix::new();
    let _tmpfs = Tmpfs::mount(&prefix.log_dir(), "4m");
    chaos::neighbour(&user).write(&prefix);
    // Lines of 1 KiB: a small append may fit in the last page of the file
    // even on a full tmpfs, and the test should not wait for that to fill.
    noisy(&prefix, "writer", &user, &["ticker", "20", "1024"]).write(&prefix);
    let port = free_port();
    let mut daemon = Daemon::start(
        &prefix,
        DaemonOptions {
            status_listen: format!("127.0.0.1:{port}"),
            ..DaemonOptions::default()
        },
    );
    daemon.wait_for_state(NEIGHBOUR, State::Running, Duration::from_secs(10));
    let running = daemon.wait_for_state("writer", State::Running, Duration::from_secs(10));
    let stdout = prefix.app_log_dir("writer").join("stdout.log");
    daemon.wait_until(Duration::from_secs(10), "the first ticks", || {
        fs::read_to_string(&stdout).is_ok_and(|text| text.contains("tick 3 "))
    });

    let filler = prefix.log_dir().join("filler");
    fill(&filler);
    let mut full = None;
    daemon.wait_until(
        Duration::from_secs(10),
        "status to say the log disk is full",
        || {
            let status = status_of(&daemon, "writer");
            let is_full = status
                .log_error
                .as_deref()
                .is_some_and(|error| error.contains("No space left on device"));
            full = is_full.then_some(status);
            is_full
        },
    );
    let full = full.expect("set when the wait ended");
    assert_eq!(full.state, State::Running, "the app goes on: {full:?}");
    assert_eq!(full.pid, running.pid, "and is not restarted");
    chaos::assert_no_cascade(&daemon);
    assert!(
        poll_until(Duration::from_secs(5), || status_of(&daemon, "writer")
            .log_dropped_bytes
            > 100),
        "dropped output is counted"
    );
    let table = daemon.appctl_ok(["status", "writer"]);
    assert!(
        table.contains("logs: cannot write ") && table.contains("No space left on device"),
        "{table}"
    );

    fs::remove_file(&filler).expect("rm filler");
    daemon.wait_until(
        Duration::from_secs(10),
        "the mark of what was dropped",
        || {
            fs::read_to_string(&stdout).is_ok_and(|text| {
                text.contains("bytes of output dropped here: cannot write ")
                    && text.contains("No space left on device")
            })
        },
    );
    let text = fs::read_to_string(&stdout).expect("stdout.log");
    let marks = text.matches("[appvisord: ").count();
    assert_eq!(marks, 1, "one mark for the whole episode\n{text}");
    let after = status_of(&daemon, "writer");
    assert_eq!(after.log_error, None, "{after:?}");
    assert!(after.log_dropped_bytes > 100, "{after:?}");
    let metrics = http_get(port, "/metrics").expect("GET /metrics").body;
    let dropped = metrics
        .lines()
        .find_map(|line| line.strip_prefix("appvisor_app_log_dropped_bytes_total{app=\"writer\"} "))
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no dropped-bytes metric for writer in\n{metrics}"));
    assert_eq!(dropped, after.log_dropped_bytes);
    chaos::assert_no_cascade(&daemon);
    daemon.terminate(Duration::from_secs(20));
}

#[test]
fn a_log_directory_that_cannot_be_created_is_retried_and_the_app_runs() {
    require_root!();
    let user = TestUser::ensure("avt-app1");
    let prefix = Prefix::new();
    chaos::neighbour(&user).write(&prefix);
    noisy(&prefix, "writer", &user, &["ticker", "50"]).write(&prefix);
    // A file where the app's log directory belongs.
    let dir = prefix.app_log_dir("writer");
    fs::write(&dir, "in the way\n").expect("blocker");
    let daemon = Daemon::start(&prefix, DaemonOptions::default());
    daemon.wait_for_state(NEIGHBOUR, State::Running, Duration::from_secs(10));
    let running = daemon.wait_for_state("writer", State::Running, Duration::from_secs(10));
    let error = running.log_error.clone().unwrap_or_default();
    assert!(
        error.starts_with(&format!("cannot create log directory {}: ", dir.display()))
            && error.contains("next try in"),
        "status says why and when it retries: {running:?}"
    );
    assert!(
        log_lines_with(&daemon, &["cannot open the app's log files", "writer"]) == 1,
        "and the daemon log says so once\n{}",
        daemon.log_tail(20)
    );
    chaos::assert_no_cascade(&daemon);
    assert!(
        poll_until(Duration::from_secs(5), || status_of(&daemon, "writer")
            .log_dropped_bytes
            > 0),
        "its output is counted as dropped"
    );

    fs::remove_file(&dir).expect("rm blocker");
    let stdout = dir.join("stdout.log");
    daemon.wait_until(
        Duration::from_secs(30),
        "the log directory, retried, and output in it",
        || fs::read_to_string(&stdout).is_ok_and(|text| text.contains("tick")),
    );
    let text = fs::read_to_string(&stdout).expect("stdout.log");
    assert!(
        text.starts_with("[appvisord: ") && text.contains("cannot create log directory"),
        "{text}"
    );
    let after = status_of(&daemon, "writer");
    assert_eq!(after.log_error, None, "{after:?}");
    assert_eq!(after.pid, running.pid, "the app ran all along");
    chaos::assert_no_cascade(&daemon);
}

/// Waits for `child` at most `within`, killing it past that.
fn wait_with_deadline(mut child: Child, within: Duration, what: &str) -> std::process::Output {
    let deadline = Instant::now() + within;
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what}: still running after {within:?}");
        }
        thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}
