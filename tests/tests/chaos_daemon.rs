//! The chaos suite (issue 9), the daemon's own state and limits: a garbled
//! and a read-only operator-intent file, a 500-app host under a soft limit
//! of 1024 open files. Each beside a healthy neighbour, checked with
//! `appvisor_tests::chaos` while the trouble lasts and after it, and each
//! ends by checking that nothing an operator did was undone.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use appvisor_protocol::AppList;
use appvisor_tests::chaos::{self, NEIGHBOUR};
use appvisor_tests::daemon::describe_output;
use appvisor_tests::{require_root, testapps, Daemon, DaemonOptions, Prefix, State, TestUser};

const START: Duration = Duration::from_secs(15);

/// The notices root's `appctl status --json` carries.
fn admin_notices(daemon: &Daemon) -> Vec<String> {
    let out = daemon.appctl(["status", "--json"]);
    let list: AppList = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("status --json: {e}\n{}", describe_output(&out)));
    list.notices
}

/// A daemon beside the neighbour and `held`, a sleeper root stops by hand.
fn with_held_app(prefix: &Prefix, user: &TestUser) -> Daemon {
    chaos::neighbour(user).write(prefix);
    testapps::sleeper("held", user)
        .start_secs(Duration::ZERO)
        .write(prefix);
    let daemon = Daemon::start(prefix, DaemonOptions::default());
    for app in [NEIGHBOUR, "held"] {
        daemon.wait_for_state(app, State::Running, START);
    }
    daemon
}

/// `held` is stopped by root, and the neighbour runs.
fn assert_held_stopped(daemon: &Daemon, when: &str) {
    let held = daemon.app("held");
    assert_eq!(
        (held.state, held.pid),
        (State::Stopped, None),
        "held after {when}: {held:#?}\n{}",
        daemon.log_tail(40)
    );
    let by = held
        .stopped_by
        .unwrap_or_else(|| panic!("held after {when}: status says who stopped it"));
    assert_eq!(by.uid, 0, "held after {when}");
    daemon.wait_for_state(NEIGHBOUR, State::Running, START);
}

#[test]
fn a_garbled_intent_file_falls_back_to_its_backup_and_keeps_the_stop() {
    require_root!();
    let user = TestUser::ensure("avt-app1");
    let prefix = Prefix::new();
    let mut daemon = with_held_app(&prefix, &user);
    daemon.appctl_ok(["stop", "held"]);
    let intent = prefix.state_dir().join("stopped.json");

    // Half-written, garbage, and a directory where the file should be.
    type Damage = fn(&Path);
    let damages: [(&str, Damage); 3] = [
        ("cut short", |path| {
            let text = fs::read(path).unwrap();
            fs::write(path, &text[..text.len() / 2]).unwrap();
        }),
        ("garbage", |path| {
            fs::write(path, [0xff, 0x00, 0x13, 0x37]).unwrap()
        }),
        ("a directory", |path| {
            fs::remove_file(path).unwrap();
            fs::create_dir(path).unwrap();
        }),
    ];
    for (what, damage) in damages {
        daemon.terminate(Duration::from_secs(20));
        damage(&intent);
        daemon = Daemon::start(&prefix, DaemonOptions::default());
        daemon.wait_for_state(NEIGHBOUR, State::Running, START);
        chaos::assert_no_cascade(&daemon);
        assert_held_stopped(&daemon, &format!("a restart with stopped.json {what}"));
        let notices = admin_notices(&daemon);
        assert!(
            notices
                .iter()
                .any(|n| n.contains("stopped.json is unreadable")
                    && n.contains("read from its backup stopped.json.bak")),
            "status tells admins ({what}): {notices:?}"
        );
        let out = daemon.appctl(["status"]);
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("warning: stopped.json is unreadable"),
            "the table comes with the warning ({what})\n{}",
            describe_output(&out)
        );
        assert!(
            daemon.log().contains("stopped.json is unreadable"),
            "the log says it ({what})\n{}",
            daemon.log_tail(40)
        );
        chaos::assert_no_cascade(&daemon);
    }

    // The unreadable files were moved aside: the intent file is good again.
    let kept: Vec<_> = fs::read_dir(prefix.state_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("stopped.json.unreadable-"))
        .collect();
    assert!(!kept.is_empty(), "unreadable copies kept for a person");
    daemon.terminate(Duration::from_secs(20));
    let daemon = Daemon::start(&prefix, DaemonOptions::default());
    daemon.wait_for_state(NEIGHBOUR, State::Running, START);
    assert_held_stopped(&daemon, "a clean restart");
    let after = admin_notices(&daemon);
    assert!(after.is_empty(), "{after:?}");
}

/// Makes paths immutable (`chattr +i`), so even root cannot write them,
/// and lifts that again on drop, before the prefix is removed.
struct Immutable(Vec<PathBuf>);

impl Immutable {
    fn set(path: &Path) -> Immutable {
        chattr("+i", path);
        Immutable(vec![path.to_owned()])
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        for path in &self.0 {
            chattr("-i", path);
        }
    }
}

fn chattr(flag: &str, path: &Path) {
    let out = Command::new("chattr")
        .arg(flag)
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("running chattr: {e}"));
    assert!(
        out.status.success(),
        "chattr {flag} {}: {}",
        path.display(),
        describe_output(&out)
    );
}

#[test]
fn a_read_only_intent_file_makes_stop_fail_loudly_and_the_stop_is_kept() {
    require_root!();
    let user = TestUser::ensure("avt-app1");
    let prefix = Prefix::new();
    let mut daemon = with_held_app(&prefix, &user);
    // Something to save, so the intent file exists.
    daemon.appctl_ok(["stop", "held"]);
    daemon.appctl_ok(["start", "held"]);

    let state_dir = prefix.state_dir();
    for (what, path) in [
        ("the intent file", state_dir.join("stopped.json")),
        ("state_dir", state_dir.clone()),
    ] {
        let immutable = Immutable::set(&path);
        let out = daemon.appctl(["stop", "held"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(1),
            "stop exits 1 when {what} is read-only\n{}",
            describe_output(&out)
        );
        assert!(
            stderr.contains("held was stopped, but appvisord could not save that")
                && stderr.contains("Operation not permitted"),
            "and says why ({what})\n{}",
            describe_output(&out)
        );
        assert_held_stopped(&daemon, &format!("a stop with {what} read-only"));
        chaos::assert_no_cascade(&daemon);
        let notices = admin_notices(&daemon);
        assert!(
            notices
                .iter()
                .any(|n| n.contains("operator intent is not saved")),
            "status tells admins ({what}): {notices:?}"
        );

        // Writable again: shutdown saves what could not be saved, and the
        // next daemon keeps held stopped.
        drop(immutable);
        daemon.terminate(Duration::from_secs(20));
        daemon = Daemon::start(&prefix, DaemonOptions::default());
        daemon.wait_for_state(NEIGHBOUR, State::Running, START);
        assert_held_stopped(
            &daemon,
            &format!("a daemon restart once {what} was writable"),
        );
        let after = admin_notices(&daemon);
        assert!(after.is_empty(), "{after:?}");
        chaos::assert_no_cascade(&daemon);
        daemon.appctl_ok(["start", "held"]);
    }
}
