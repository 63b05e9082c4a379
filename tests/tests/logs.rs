//! Captured output: every line an app writes lands in its log files, in
//! order, across rotation; `appctl logs` shows both streams in the order
//! they arrived.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use appvisor_tests::testapps::{gunicorn, python};
use appvisor_tests::{
    bins, free_port, http_get, poll_until, require_root, Daemon, DaemonOptions, Prefix, State,
    TestUser,
};

const MIB: u64 = 50;

/// The app's stdout files, whatever the daemon names them.
fn stdout_files(dir: &std::path::Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.is_file()
                        && p.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.contains("stdout"))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn line_number(line: &str) -> Option<u64> {
    line.strip_prefix("line ")?.get(..9)?.parse().ok()
}

#[test]
fn fifty_mib_written_fast_land_whole_and_in_order_across_rotation() {
    require_root!();
    let user = TestUser::ensure("avt-app4");
    let prefix = Prefix::new();
    python(&prefix, "flood", &user, "flood.py", &[&MIB.to_string()])
        .logs("10MiB", 10)
        .write(&prefix);
    let daemon = Daemon::start(&prefix, DaemonOptions::default());
    daemon.wait_for_state("flood", State::Running, Duration::from_secs(15));

    let dir = prefix.app_log_dir("flood");
    let total = MIB * 1024 * 1024 / 64;
    let done = format!("flood done {total}");
    daemon.wait_until(
        Duration::from_secs(90),
        &format!("{done:?} in {}", dir.display()),
        || {
            stdout_files(&dir)
                .iter()
                .any(|f| fs::read_to_string(f).is_ok_and(|t| t.contains(&done)))
        },
    );

    let files = stdout_files(&dir);
    assert!(
        files.len() >= 5,
        "50 MiB at max_size 10MiB rotates into several files: {files:?}"
    );
    for f in &files {
        let size = fs::metadata(f).expect("stat").len();
        assert!(
            size <= 10 * 1024 * 1024 + 4096,
            "{} is {size} bytes, over max_size",
            f.display()
        );
    }
    // Order the files by their first numbered line, whatever their names.
    let mut texts: Vec<(u64, PathBuf, String)> = files
        .into_iter()
        .map(|f| {
            let text = fs::read_to_string(&f).expect("log file is utf-8");
            let first = text.lines().find_map(line_number).unwrap_or(u64::MAX);
            (first, f, text)
        })
        .collect();
    texts.sort_by_key(|(first, _, _)| *first);

    let mut expected = 1u64;
    for (_, file, text) in &texts {
        for line in text.lines() {
            let Some(n) = line_number(line) else {
                assert!(
                    line.starts_with("flood done "),
                    "unexpected line in {}: {line:?}",
                    file.display()
                );
                continue;
            };
            assert_eq!(
                n,
                expected,
                "line {expected} missing, duplicated or out of order (found {n}) in {}",
                file.display()
            );
            assert_eq!(line.len(), 63, "line {n} was cut or merged: {line:?}");
            expected += 1;
        }
    }
    assert_eq!(
        expected - 1,
        total,
        "every line from 1 to {total} landed exactly once"
    );
}

/// The lines of `text` that a `/say` request wrote, in order.
fn said(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|line| line.starts_with("said-"))
        .collect()
}

#[test]
fn gunicorn_output_on_both_streams_shows_in_arrival_order() {
    require_root!();
    let user = TestUser::ensure("avt-app1");
    let prefix = Prefix::new();
    let port = free_port();
    gunicorn(&prefix, "web", &user, port).write(&prefix);
    let daemon = Daemon::start(&prefix, DaemonOptions::default());
    daemon.wait_for_state("web", State::Running, Duration::from_secs(30));
    assert!(
        poll_until(Duration::from_secs(15), || http_get(port, "/health")
            .is_ok_and(|r| r.status == 200)),
        "gunicorn serves"
    );

    // `logs -f` of both streams, from the last line written so far.
    let mut follower = Command::new(bins::appctl())
        .arg("--socket")
        .arg(daemon.socket())
        .args(["logs", "web", "-f", "-n", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("appctl logs -f");
    let (tx, followed) = mpsc::channel();
    let stdout = follower.stdout.take().expect("piped");
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // The daemon takes the history and subscribes the follower in one step:
    // once the last line of history (gunicorn's own) is shown, every later
    // line will be.
    followed
        .recv_timeout(Duration::from_secs(10))
        .expect("logs -f showed no line of history within 10s");

    // The app writes to stdout and stderr in turn, each line well after the
    // one before (arrival order is as fine as the daemon's reads: about a
    // millisecond).
    let expected: Vec<String> = (0..8).map(|i| format!("said-{i}")).collect();
    for (i, text) in expected.iter().enumerate() {
        let stream = if i % 2 == 0 { "out" } else { "err" };
        let answer =
            http_get(port, &format!("/say?stream={stream}&text={text}")).expect("GET /say");
        assert_eq!(answer.status, 200);
        thread::sleep(Duration::from_millis(30));
    }

    // gunicorn logs to stderr: by default `logs` shows it, then the lines
    // of both streams in the order they came.
    let both = daemon.app_output("web", 1000);
    assert_eq!(said(&both), expected, "{both}");
    let booted = both
        .find("Booting worker")
        .expect("gunicorn's own log lines");
    assert!(booted < both.find("said-0").expect("said-0"), "{both}");
    // One stream at a time.
    let stdout_only = daemon.app_logs("web", 1000, false);
    assert_eq!(said(&stdout_only), ["said-0", "said-2", "said-4", "said-6"]);
    assert!(!stdout_only.contains("Booting worker"), "{stdout_only}");
    let stderr_only = daemon.app_logs("web", 1000, true);
    assert_eq!(said(&stderr_only), ["said-1", "said-3", "said-5", "said-7"]);
    assert!(stderr_only.contains("Booting worker"), "{stderr_only}");
    // The last lines count across both streams.
    assert_eq!(
        said(&daemon.app_output("web", 3)),
        ["said-5", "said-6", "said-7"]
    );

    // The follower saw the same, as it happened.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    while seen.len() < expected.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        match followed.recv_timeout(left) {
            Ok(line) if line.starts_with("said-") => seen.push(line),
            Ok(_) => {}
            Err(_) => panic!("logs -f showed only {seen:?} within 10s"),
        }
    }
    let _ = follower.kill();
    let _ = follower.wait();
    assert_eq!(seen, expected);
}
