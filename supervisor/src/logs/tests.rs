use std::fs::Permissions;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Instant;

use tokio::sync::broadcast::error::RecvError;

use super::*;
use crate::logs::file::{index_path, rotated_path, INDEX_DIR};

const OUT: Selection = Selection::Only(Stream::Stdout);
const ERR: Selection = Selection::Only(Stream::Stderr);

fn spec(max_size: u64, keep: u32) -> LogSpec {
    LogSpec { max_size, keep }
}

/// A gid the test may chown to: any gid as root, else our own.
fn test_gid() -> u32 {
    if nix::unistd::geteuid().is_root() {
        54_321
    } else {
        nix::unistd::getegid().as_raw()
    }
}

/// Writes `data` to `write` in pieces of `piece` bytes from a thread, as an
/// app would, then closes it.
fn spawn_writer(write: OwnedFd, data: Vec<u8>, piece: usize) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut out = File::from(write);
        for part in data.chunks(piece) {
            out.write_all(part).unwrap();
        }
    })
}

/// `count` numbered lines, `prefix` first: "p 0000000\n", 10 + prefix bytes.
fn numbered_lines(prefix: &str, count: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(count * (prefix.len() + 9));
    for i in 0..count {
        out.extend_from_slice(prefix.as_bytes());
        out.extend_from_slice(format!("{i:07}\n").as_bytes());
    }
    out
}

/// The app's files for `stream`, oldest first, concatenated.
fn read_all(dir: &Path, stream: Stream, keep: u32) -> Vec<u8> {
    let current = dir.join(stream.file_name());
    let mut out = Vec::new();
    for k in (1..=keep).rev() {
        if let Ok(bytes) = std::fs::read(rotated_path(&current, k)) {
            out.extend_from_slice(&bytes);
        }
    }
    out.extend_from_slice(&std::fs::read(&current).unwrap());
    out
}

/// The log files in `dir` (not the index directory).
fn log_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

/// What `logs -n n` of `selection` shows, read from the files.
fn read_last(logs: &AppLogs, selection: Selection, n: usize) -> Vec<u8> {
    logs.snapshot(selection)
        .unwrap()
        .last_lines(n)
        .unwrap()
        .read_to_end()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_keeps_every_line_in_order() {
    let root = tempfile::tempdir().unwrap();
    let logs = AppLogs::open(root.path(), "shop", &spec(u64::MAX, 5), test_gid(), 200);
    let data = numbered_lines("out ", 200_000);
    let (read, write) = make_pipe().unwrap();
    // An odd piece size so reads end mid-line.
    let writer = spawn_writer(write, data.clone(), 4093);
    logs.capture(Stream::Stdout, read).await.unwrap();
    writer.join().unwrap();
    assert!(std::fs::read(logs.dir().join("stdout.log")).unwrap() == data);
    assert_eq!(std::fs::read(logs.dir().join("stderr.log")).unwrap(), b"");
    assert_eq!(logs.dropped_bytes(Stream::Stdout), 0);
}

/// Writes `mib` MiB as fast as a thread can and checks rotation kept every
/// line once, in order, at line boundaries. 50 MiB runs in a few seconds in
/// a debug build.
async fn rotate_under_load(mib: usize, max_size: u64, keep: u32) {
    let root = tempfile::tempdir().unwrap();
    let logs = AppLogs::open(
        root.path(),
        "chatty",
        &spec(max_size, keep),
        test_gid(),
        200,
    );
    let data = numbered_lines("", mib * 1024 * 1024 / 8);
    let (read, write) = make_pipe().unwrap();
    let started = Instant::now();
    let writer = spawn_writer(write, data.clone(), 64 * 1024 + 3);
    logs.capture(Stream::Stdout, read).await.unwrap();
    writer.join().unwrap();
    eprintln!("{mib} MiB captured in {:?}", started.elapsed());

    let files = log_files(logs.dir());
    assert!(
        files.len() <= keep as usize + 2, // + stderr.log
        "{} files for keep {keep}",
        files.len()
    );
    for path in &files {
        let bytes = std::fs::read(path).unwrap();
        assert!(bytes.len() as u64 <= max_size, "{} too big", path.display());
        assert!(
            bytes.is_empty() || bytes.ends_with(b"\n"),
            "{} ends inside a line",
            path.display()
        );
    }
    let kept = read_all(logs.dir(), Stream::Stdout, keep);
    // Whatever survived is the end of the output, cut at a line boundary.
    assert!(data.ends_with(&kept), "kept output is not a suffix");
    assert!(kept.len() == data.len() || data[data.len() - kept.len() - 1] == b'\n');
    if (keep as u64 + 1) * max_size >= data.len() as u64 + max_size {
        assert_eq!(kept.len(), data.len(), "lines were lost");
    } else {
        assert_eq!(files.len(), keep as usize + 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_keeps_every_line_once_and_in_order_for_50_mib() {
    rotate_under_load(50, 1024 * 1024, 60).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_deletes_beyond_keep() {
    rotate_under_load(4, 100_000, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_has_partial_line_and_survives_invalid_utf8() {
    let root = tempfile::tempdir().unwrap();
    let logs = AppLogs::open(root.path(), "shop", &spec(u64::MAX, 1), test_gid(), 3);
    let (read, write) = make_pipe().unwrap();
    let writer = spawn_writer(write, b"one\ntwo\n\xffbad\xfe\nfour\npartial".to_vec(), 5);
    logs.capture(Stream::Stderr, read).await.unwrap();
    writer.join().unwrap();
    assert_eq!(
        logs.tail(ERR, 100),
        ["two", "\u{fffd}bad\u{fffd}", "four", "partial"]
    );
    assert_eq!(logs.tail(ERR, 1), ["four", "partial"]);
    assert_eq!(logs.tail(OUT, 10), Vec::<String>::new());
    assert_eq!(logs.tail(Selection::Both, 1), ["four", "partial"]);
    // The file has the raw bytes.
    assert_eq!(
        std::fs::read(logs.dir().join("stderr.log")).unwrap(),
        b"one\ntwo\n\xffbad\xfe\nfour\npartial"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_line_is_written_after_a_pause() {
    let root = tempfile::tempdir().unwrap();
    let logs = AppLogs::open(root.path(), "shop", &spec(u64::MAX, 1), test_gid(), 10);
    let (read, write) = make_pipe().unwrap();
    let task = logs.capture(Stream::Stdout, read);
    let mut out = File::from(write);
    out.write_all(b"done\nEnter value: ").unwrap();
    tokio::time::sleep(PARTIAL_LINE_FLUSH * 3).await;
    assert_eq!(logs.tail(OUT, 10), ["done", "Enter value: "]);
    assert_eq!(
        std::fs::read(logs.dir().join("stdout.log")).unwrap(),
        b"done\nEnter value: "
    );
    drop(out);
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dir_and_files_get_group_read_modes_and_owner() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("shop");
    // Wrong modes from before must be fixed.
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, Permissions::from_mode(0o777)).unwrap();
    std::fs::write(dir.join("stdout.log"), "old\n").unwrap();
    std::fs::set_permissions(dir.join("stdout.log"), Permissions::from_mode(0o666)).unwrap();
    std::fs::write(dir.join("stdout.log.1"), "older\n").unwrap();

    let gid = test_gid();
    let logs = AppLogs::open(root.path(), "shop", &spec(8, 2), gid, 10);
    let (read, write) = make_pipe().unwrap();
    let writer = spawn_writer(write, b"new line\nrotated\n".to_vec(), 100);
    logs.capture(Stream::Stdout, read).await.unwrap();
    writer.join().unwrap();

    let check = |path: &Path, mode: u32| {
        let meta = std::fs::symlink_metadata(path).unwrap();
        assert_eq!(meta.mode() & 0o7777, mode, "mode of {}", path.display());
        if nix::unistd::geteuid().is_root() {
            assert_eq!(
                (meta.uid(), meta.gid()),
                (0, gid),
                "owner of {}",
                path.display()
            );
        }
    };
    check(&dir, 0o750);
    check(&dir.join(INDEX_DIR), 0o750);
    for name in ["stdout.log", "stdout.log.1", "stdout.log.2", "stderr.log"] {
        check(&dir.join(name), 0o640);
    }
    for name in ["stdout.log", "stdout.log.1", "stderr.log"] {
        check(&index_path(&dir.join(name)), 0o640);
    }
    if !nix::unistd::geteuid().is_root() {
        appvisor_tests::skip("checks the owner only as root (chown to another group)");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_captures_interleave_whole_lines() {
    let root = tempfile::tempdir().unwrap();
    let logs = AppLogs::open(root.path(), "shop", &spec(u64::MAX, 1), test_gid(), 10);
    let count = 100_000;
    let (read_a, write_a) = make_pipe().unwrap();
    let (read_b, write_b) = make_pipe().unwrap();
    // Piece sizes that are not line multiples, so reads end mid-line.
    let writer_a = spawn_writer(write_a, numbered_lines("old ", count), 1021);
    let writer_b = spawn_writer(write_b, numbered_lines("new ", count), 3001);
    let task_a = logs.capture(Stream::Stdout, read_a);
    let task_b = logs.capture(Stream::Stdout, read_b);
    task_a.await.unwrap();
    task_b.await.unwrap();
    writer_a.join().unwrap();
    writer_b.join().unwrap();

    let text = String::from_utf8(std::fs::read(logs.dir().join("stdout.log")).unwrap()).unwrap();
    let (mut next_old, mut next_new) = (0, 0);
    for line in text.lines() {
        let (prefix, number) = line.split_at(4);
        let number: usize = number
            .parse()
            .unwrap_or_else(|_| panic!("broken line {line:?}"));
        let next = match prefix {
            "old " => &mut next_old,
            "new " => &mut next_new,
            _ => panic!("broken line {line:?}"),
        };
        assert_eq!(number, *next, "out of order: {line:?}");
        *next += 1;
    }
    assert_eq!((next_old, next_new), (count, count));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_last_lines_crosses_a_rotation_boundary() {
    let root = tempfile::tempdir().unwrap();
    let logs = AppLogs::open(root.path(), "shop", &spec(1000, 5), test_gid(), 10);
    let (read, write) = make_pipe().unwrap();
    // 300 lines of 10 bytes: three full files of 100 lines each.
    let writer = spawn_writer(write, numbered_lines("l ", 300), 777);
    logs.capture(Stream::Stdout, read).await.unwrap();
    writer.join().unwrap();
    assert_eq!(
        std::fs::read(rotated_path(&logs.dir().join("stdout.log"), 1))
            .unwrap()
            .len(),
        1000
    );
    let expected: String = (150..300).map(|i| format!("l {i:07}\n")).collect();
    assert_eq!(read_last(&logs, OUT, 150), expected.as_bytes());
    assert_eq!(read_last(&logs, Selection::Both, 150), expected.as_bytes());
    let all = read_last(&logs, OUT, 10_000);
    assert_eq!(all, numbered_lines("l ", 300));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_spec_applies_to_the_next_write() {
    let root = tempfile::tempdir().unwrap();
    let logs = AppLogs::open(root.path(), "shop", &spec(u64::MAX, 3), test_gid(), 10);
    logs.append(Stream::Stdout, Bytes::from_static(b"first\n"));
    logs.update_spec(&spec(6, 3));
    logs.append(Stream::Stdout, Bytes::from_static(b"second\n"));
    let current = logs.dir().join("stdout.log");
    assert_eq!(
        std::fs::read(rotated_path(&current, 1)).unwrap(),
        b"first\n"
    );
    assert_eq!(std::fs::read(&current).unwrap(), b"second\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_receive_the_bytes() {
    let root = tempfile::tempdir().unwrap();
    let logs = AppLogs::open(root.path(), "shop", &spec(u64::MAX, 1), test_gid(), 10);
    let mut follower = logs.subscribe();
    let (read, write) = make_pipe().unwrap();
    let writer = spawn_writer(write, b"hello\nworld\n".to_vec(), 3);
    logs.capture(Stream::Stderr, read).await.unwrap();
    writer.join().unwrap();
    let mut got = Vec::new();
    while let Ok((stream, chunk)) = follower.try_recv() {
        assert_eq!(stream, Stream::Stderr);
        got.extend_from_slice(&chunk);
    }
    assert_eq!(got, b"hello\nworld\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_follower_loses_chunks_and_capture_goes_on() {
    let root = tempfile::tempdir().unwrap();
    let logs = AppLogs::open(root.path(), "shop", &spec(u64::MAX, 1), test_gid(), 10);
    let mut follower = logs.subscribe();
    for i in 0..FOLLOW_CAPACITY + 10 {
        logs.append(Stream::Stdout, Bytes::from(format!("{i}\n")));
    }
    assert!(matches!(follower.recv().await, Err(RecvError::Lagged(10))));
    assert_eq!(follower.recv().await.unwrap().1, "10\n");
    assert_eq!(logs.tail(OUT, 1), [format!("{}", FOLLOW_CAPACITY + 9)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_and_subscribe_neither_misses_nor_repeats() {
    let root = tempfile::tempdir().unwrap();
    let logs = AppLogs::open(root.path(), "shop", &spec(12, 3), test_gid(), 10);
    for line in ["one\n", "two\n", "three\n", "four\n"] {
        logs.append(Stream::Stdout, Bytes::from_static(line.as_bytes()));
    }
    let (snapshot, mut follower) = logs.snapshot_and_subscribe(Selection::Both).unwrap();
    // Written and rotated after the snapshot: only the follower sees it.
    logs.append(Stream::Stdout, Bytes::from_static(b"five\nsix\n"));
    assert_eq!(
        snapshot.last_lines(10).unwrap().read_to_end().unwrap(),
        b"one\ntwo\nthree\nfour\n"
    );
    assert_eq!(
        follower.recv().await.unwrap(),
        (Stream::Stdout, Bytes::from_static(b"five\nsix\n"))
    );
    assert_eq!(read_last(&logs, OUT, 3), b"four\nfive\nsix\n");
}

#[test]
fn make_pipe_is_cloexec_and_large() {
    let (read, write) = make_pipe().unwrap();
    for fd in [&read, &write] {
        let flags = fcntl(fd, FcntlArg::F_GETFD).unwrap();
        assert_ne!(
            flags & libc::FD_CLOEXEC,
            0,
            "fd {} lacks FD_CLOEXEC",
            fd.as_raw_fd()
        );
    }
    let size = fcntl(&read, FcntlArg::F_GETPIPE_SZ).unwrap();
    let max: usize = std::fs::read_to_string("/proc/sys/fs/pipe-max-size")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    if nix::unistd::geteuid().is_root() || max >= PIPE_SIZE {
        assert_eq!(size as usize, PIPE_SIZE);
    } else {
        appvisor_tests::skip(format_args!(
            "checks the size only as root (pipe-max-size is {max})"
        ));
    }
}

#[test]
fn stream_names() {
    assert_eq!(
        serde_json::to_string(&Stream::Stdout).unwrap(),
        r#""stdout""#
    );
    assert_eq!(
        serde_json::from_str::<Stream>(r#""stderr""#).unwrap(),
        Stream::Stderr
    );
    assert_eq!(Stream::Stderr.to_string(), "stderr");
    assert_eq!(Stream::Stdout.file_name(), "stdout.log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_directory_that_cannot_be_created_is_retried_and_nothing_blocks() {
    let root = tempfile::tempdir().unwrap();
    // A file where the app's directory should be.
    std::fs::write(root.path().join("shop"), "in the way").unwrap();
    let logs = AppLogs::open(root.path(), "shop", &spec(u64::MAX, 1), test_gid(), 10);
    logs.append(Stream::Stdout, Bytes::from_static(b"lost\n"));
    logs.append(Stream::Stderr, Bytes::from_static(b"lost too\n"));
    let health = logs.health();
    assert_eq!(health.dropped_bytes, 14);
    let error = health.error.expect("the problem is reported");
    assert!(
        error.starts_with(&format!(
            "cannot create log directory {}/shop: ",
            root.path().display()
        )) && error.contains("output is dropped, next try in"),
        "{error}"
    );
    // The tail still has the output.
    assert_eq!(logs.tail(Selection::Both, 10), ["lost", "lost too"]);

    std::fs::remove_file(root.path().join("shop")).unwrap();
    let reopened = Instant::now();
    while logs.health().error.is_some() {
        assert!(
            reopened.elapsed() < REOPEN_FIRST * 3,
            "not reopened: {:?}",
            logs.health()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    logs.append(Stream::Stdout, Bytes::from_static(b"kept\n"));
    let text = String::from_utf8(std::fs::read(logs.dir().join("stdout.log")).unwrap()).unwrap();
    assert!(
        text.starts_with(
            "[appvisord: 5 bytes of output dropped here: cannot create log directory "
        ),
        "{text}"
    );
    assert!(text.ends_with("]\nkept\n"), "{text}");
    assert_eq!(logs.health().dropped_bytes, 14);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_without_newlines_stays_within_the_size_limits() {
    let root = tempfile::tempdir().unwrap();
    let max_size = 1024 * 1024;
    let keep = 2;
    let logs = AppLogs::open(root.path(), "shop", &spec(max_size, keep), test_gid(), 10);
    let (read, write) = make_pipe().unwrap();
    let writer = spawn_writer(write, vec![0u8; 20 * 1024 * 1024], 65_536 + 7);
    logs.capture(Stream::Stdout, read).await.unwrap();
    writer.join().unwrap();
    let files = log_files(logs.dir());
    assert_eq!(files.len(), keep as usize + 2, "{files:?}"); // + stderr.log
    for path in &files {
        let len = std::fs::metadata(path).unwrap().len();
        assert!(
            len <= max_size + (MAX_LINE + CONTINUED.len()) as u64,
            "{} is {len} bytes",
            path.display()
        );
    }
    let current = std::fs::read(logs.dir().join("stdout.log")).unwrap();
    for line in current.split_inclusive(|&b| b == b'\n') {
        assert!(line.len() <= MAX_LINE + CONTINUED.len());
    }
    assert_eq!(logs.dropped_bytes(Stream::Stdout), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_streams_read_back_in_arrival_order_across_rotation() {
    let root = tempfile::tempdir().unwrap();
    // Small files, so the runs cross rotations of both streams.
    let logs = AppLogs::open(root.path(), "shop", &spec(64, 50), test_gid(), 200);
    let mut expected = Vec::new();
    for i in 0..200 {
        let (stream, line) = match i % 5 {
            0 | 1 => (Stream::Stderr, format!("err {i}\n")),
            _ => (Stream::Stdout, format!("out {i}\n")),
        };
        logs.append(stream, Bytes::from(line.clone()));
        expected.extend_from_slice(line.as_bytes());
    }
    assert_eq!(read_last(&logs, Selection::Both, 1000), expected);
    let last: Vec<&[u8]> = expected.split_inclusive(|&b| b == b'\n').collect();
    assert_eq!(
        read_last(&logs, Selection::Both, 7),
        last[last.len() - 7..].concat()
    );
    // And after the daemon lets go of the files and opens them again.
    drop(logs);
    let logs = AppLogs::open(root.path(), "shop", &spec(64, 50), test_gid(), 200);
    logs.append(Stream::Stdout, Bytes::from_static(b"after\n"));
    expected.extend_from_slice(b"after\n");
    assert_eq!(read_last(&logs, Selection::Both, 1000), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_of_both_streams_sees_one_order() {
    let root = tempfile::tempdir().unwrap();
    let logs = AppLogs::open(root.path(), "shop", &spec(u64::MAX, 1), test_gid(), 10);
    let mut follower = logs.subscribe();
    logs.append(Stream::Stdout, Bytes::from_static(b"50%"));
    logs.append(Stream::Stderr, Bytes::from_static(b"warning\n"));
    logs.append(Stream::Stdout, Bytes::from_static(b" done\n"));
    let mut interleave = Interleave::default();
    let mut shown = Vec::new();
    while let Ok((stream, chunk)) = follower.try_recv() {
        if interleave.push(stream, &chunk) {
            shown.push(b'\n');
        }
        shown.extend_from_slice(&chunk);
    }
    assert_eq!(shown, b"50%\nwarning\n done\n");
    assert_eq!(read_last(&logs, Selection::Both, 10), shown);
    assert_eq!(logs.tail(Selection::Both, 10), ["50%", "warning", " done"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marks_select_the_lines_of_one_attempt() {
    let root = tempfile::tempdir().unwrap();
    let logs = AppLogs::open(root.path(), "shop", &spec(u64::MAX, 1), test_gid(), 10);
    logs.append(Stream::Stderr, Bytes::from_static(b"attempt 1 failed\n"));
    let mark = logs.mark();
    logs.append(Stream::Stdout, Bytes::from_static(b"booting\n"));
    logs.append(Stream::Stderr, Bytes::from_static(b"attempt 2 failed\n"));
    assert_eq!(
        logs.tail_since(Selection::Both, mark, 10),
        ["booting", "attempt 2 failed"]
    );
}

/// Polls `done` every 10 ms for up to 5 s, from the calling thread.
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let began = Instant::now();
    while !done() {
        assert!(
            began.elapsed() < Duration::from_secs(5),
            "waited 5 s for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn output_is_captured_while_the_async_runtime_is_blocked() {
    // One runtime thread, and this test holds it: nothing async runs while
    // the app writes. Capture happens on the output thread anyway, so a
    // runtime busy or stuck elsewhere never fills an app's pipe.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let root = tempfile::tempdir().unwrap();
    let logs = AppLogs::open(root.path(), "shop", &spec(u64::MAX, 1), test_gid(), 10);
    let (read, write) = make_pipe().unwrap();
    let (err_read, err_write) = make_pipe().unwrap();
    let capture = runtime.block_on(async {
        logs.capture_handing_over(Some(read), Some(err_read), tracing::Span::none())
    });
    let mut out = File::from(write);
    out.write_all(b"served\n").unwrap();
    File::from(err_write).write_all(b"warned\n").unwrap();
    wait_for("both lines in the files", || {
        std::fs::read(logs.dir().join("stdout.log")).unwrap() == b"served\n"
            && std::fs::read(logs.dir().join("stderr.log")).unwrap() == b"warned\n"
    });
    drop(out);
    let ends = runtime.block_on(capture.ended());
    assert!(ends.iter().all(Option::is_none), "both ended at EOF");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_over_writes_what_was_read_and_leaves_the_rest_in_the_pipe() {
    let root = tempfile::tempdir().unwrap();
    let logs = AppLogs::open(root.path(), "shop", &spec(u64::MAX, 1), test_gid(), 10);
    let (read, write) = make_pipe().unwrap();
    let capture = logs.capture_handing_over(Some(read), None, tracing::Span::none());
    let mut out = File::from(write);
    out.write_all(b"one\npart").unwrap();
    wait_for("the first line read", || logs.tail(OUT, 10).len() == 1);
    let [stdout, stderr] = capture.hand_over().await;
    assert!(stderr.is_none(), "no stderr was given");
    let stdout = stdout.expect("stdout's read end comes back");
    // The held-back partial line was written at the hand-over, once.
    assert_eq!(
        std::fs::read(logs.dir().join("stdout.log")).unwrap(),
        b"one\npart"
    );
    // What the app writes now stays in the pipe for the next reader.
    out.write_all(b" two\n").unwrap();
    let mut next = [0u8; 16];
    let n = nix::unistd::read(&stdout, &mut next).unwrap();
    assert_eq!(&next[..n], b" two\n");
    assert_eq!(
        std::fs::read(logs.dir().join("stdout.log")).unwrap(),
        b"one\npart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_captures_at_once_each_keep_their_own_lines() {
    // The output thread serves every app: 50 apps writing at once, each
    // in pieces that split lines, each file gets exactly its own lines.
    let root = tempfile::tempdir().unwrap();
    let mut apps = Vec::new();
    for i in 0..50 {
        let logs = AppLogs::open(
            root.path(),
            &format!("app{i}"),
            &spec(u64::MAX, 1),
            test_gid(),
            10,
        );
        let (read, write) = make_pipe().unwrap();
        let capture = logs.capture_handing_over(Some(read), None, tracing::Span::none());
        let data = numbered_lines(&format!("app{i} "), 2_000);
        let writer = spawn_writer(write, data.clone(), 7);
        apps.push((logs, capture, writer, data));
    }
    for (logs, capture, writer, data) in apps {
        writer.join().unwrap();
        capture.ended().await;
        assert!(
            read_all(logs.dir(), Stream::Stdout, 1) == data,
            "{}",
            logs.dir().display()
        );
    }
}
