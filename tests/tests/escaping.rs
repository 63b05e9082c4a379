//! What an app controls reaches an operator's terminal escaped:
//! its `STATUS=` text in `appctl status`, its output in `appctl logs` on a
//! terminal; `--raw`, or a pipe, passes the bytes through. And what its
//! owner controls reaches the daemon's log escaped, never as a record of
//! its own.

use std::fs::File;
use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use appvisor_tests::testapps::python;
use appvisor_tests::{
    require_root, AppBuilder, Daemon, DaemonOptions, Prefix, Readiness, State, TestUser,
};
use nix::pty::openpty;
use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};

/// What `noisy.py escapes` prints between "before " and " after", and sends
/// as `STATUS=`.
const ESCAPES: &str = "\u{1b}]52;c;cHduZWQ=\u{7}\u{1b}[1A\u{1b}[2K\rother  running  1  1s  0  forged row\u{1b}]0;pwned\u{7}";
/// The same, as appctl shows it.
const SHOWN: &str = "\\u{1b}]52;c;cHduZWQ=\\u{7}\\u{1b}[1A\\u{1b}[2K\\rother  running  1  1s  0  forged row\\u{1b}]0;pwned\\u{7}";

/// Runs `command` with its stdout on a pseudo-terminal in raw mode (so the
/// terminal adds no carriage returns of its own) and returns what it wrote.
fn on_terminal(mut command: Command) -> (ExitStatus, Vec<u8>) {
    let pty = openpty(None, None).expect("openpty");
    let mut termios = tcgetattr(&pty.slave).expect("tcgetattr");
    cfmakeraw(&mut termios);
    tcsetattr(&pty.slave, SetArg::TCSANOW, &termios).expect("tcsetattr");
    command
        .stdin(Stdio::null())
        .stdout(Stdio::from(pty.slave))
        .stderr(Stdio::inherit());
    let mut child = command.spawn().expect("spawn on a pty");
    // The command holds the other copy of the terminal's slave side: drop
    // it, so reading the master ends once the child is gone.
    drop(command);
    let mut master = File::from(pty.master);
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        // EIO once the slave side is closed.
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        let _ = tx.send(out);
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("appctl on a terminal still running after 20s");
        }
        thread::sleep(Duration::from_millis(20));
    };
    let out = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the terminal's output");
    (status, out)
}

fn appctl(daemon: &Daemon, args: &[&str]) -> Command {
    let mut command = Command::new(appvisor_tests::bins::appctl());
    command.arg("--socket").arg(daemon.socket()).args(args);
    command
}

fn assert_nothing_drives_the_terminal(what: &str, out: &[u8]) {
    for (byte, name) in [(0x1b, "ESC"), (0x07, "BEL"), (b'\r', "CR"), (0x9b, "CSI")] {
        assert!(
            !out.contains(&byte),
            "{what} wrote {name} to the terminal: {:?}",
            String::from_utf8_lossy(out)
        );
    }
}

#[test]
fn an_apps_escape_sequences_reach_the_terminal_escaped_and_raw_only_with_raw() {
    require_root!();
    let user = TestUser::ensure("avt-app1");
    let prefix = Prefix::new();
    python(&prefix, "evil", &user, "noisy.py", &["escapes"])
        .readiness(Readiness::Notify)
        .write(&prefix);
    let daemon = Daemon::start(&prefix, DaemonOptions::default());
    daemon.wait_for_state("evil", State::Running, Duration::from_secs(15));
    let stdout_log = prefix.app_log_dir("evil").join("stdout.log");
    daemon.wait_until(Duration::from_secs(10), "the app's output", || {
        std::fs::read_to_string(&stdout_log).is_ok_and(|text| text.contains(" after"))
    });

    let (status, out) = on_terminal(appctl(&daemon, &["status"]));
    assert!(status.success(), "appctl status: {status}");
    assert_nothing_drives_the_terminal("appctl status", &out);
    let table = String::from_utf8(out).expect("UTF-8");
    assert_eq!(table.lines().count(), 2, "no forged row:\n{table}");
    assert!(table.contains(SHOWN), "the STATUS= text, escaped:\n{table}");

    let (status, out) = on_terminal(appctl(&daemon, &["logs", "evil"]));
    assert!(status.success(), "appctl logs: {status}");
    assert_nothing_drives_the_terminal("appctl logs", &out);
    let shown = String::from_utf8(out).expect("UTF-8");
    assert!(
        shown.contains(&format!("before {SHOWN} after\n")),
        "{shown:?}"
    );

    let (status, out) = on_terminal(appctl(&daemon, &["logs", "evil", "--raw"]));
    assert!(status.success(), "appctl logs --raw: {status}");
    let raw = String::from_utf8(out).expect("UTF-8");
    assert!(
        raw.contains(&format!("before {ESCAPES} after\n")),
        "--raw passes the bytes through: {raw:?}"
    );

    // Into a pipe, as scripts read it, the bytes are the app's.
    let piped = daemon.app_logs("evil", 10, false);
    assert!(
        piped.contains(&format!("before {ESCAPES} after\n")),
        "{piped:?}"
    );
}

#[test]
fn an_owners_path_text_cannot_forge_a_daemon_log_record() {
    require_root!();
    let user = TestUser::ensure("avt-app1");
    let prefix = Prefix::new();
    let code = prefix.code_dir("forger", &user);
    // What the owner may do: point `current` at a directory whose name
    // carries a newline and what reads as an audit record. It lies outside
    // the code directory, so the refusal names it in the daemon's log.
    let forged = "FORGED INFO appvisor::audit: uid=0 action=stop app=neighbour outcome=ok";
    let target = prefix.path().join(format!("evil\n{forged}\r\u{1b}[2K"));
    std::fs::create_dir_all(&target).unwrap();
    let current = code.join("current");
    std::os::unix::fs::symlink(&target, &current).unwrap();
    AppBuilder::new("forger", &user, ["/bin/sleep", "infinity"])
        .directory(&current)
        .readiness(Readiness::None)
        .start_secs(Duration::from_millis(300))
        .max_retries(1)
        .write(&prefix);
    let daemon = Daemon::start(&prefix, DaemonOptions::default());
    daemon.wait_until(
        Duration::from_secs(20),
        "the refusal in the daemon's log",
        || {
            daemon
                .log()
                .contains(&format!("evil\\n{forged}\\r\\u{{1b}}[2K"))
        },
    );
    let log = daemon.log();
    for line in log.lines() {
        assert!(
            !line.starts_with("FORGED"),
            "the owner's text started a record of its own:\n{log}"
        );
    }
    assert!(
        !log.contains('\r') && !log.contains('\u{1b}'),
        "control characters reached the log:\n{log:?}"
    );
}
