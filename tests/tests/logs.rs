//! Captured output: every line an app writes lands in its log files, in
//! order, across rotation.

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use appvisor_tests::testapps::python;
use appvisor_tests::{require_root, Daemon, DaemonOptions, Prefix, State, TestUser};

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
