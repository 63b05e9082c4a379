//! The chaos suite, the daemon's own state and limits: a garbled
//! and a read-only operator-intent file, a 500-app host under a soft limit
//! of 1024 open files, a fork bomb in an app without `[limits]`. Each
//! beside a healthy neighbour, checked with
//! `appvisor_tests::chaos` while the trouble lasts and after it, and each
//! ends by checking that nothing an operator did was undone.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use appvisor_config::default_limits::DEFAULT_TASKS_PERCENT;
use appvisor_protocol::AppList;
use appvisor_tests::chaos::{self, NEIGHBOUR};
use appvisor_tests::daemon::describe_output;
use nix::sys::resource::{getrlimit, Resource};

use appvisor_tests::{
    poll_until, require_root, testapps, AppStatus, Daemon, DaemonOptions, Prefix, State, TestUser,
};

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

/// Apps on the crowded host, the neighbour included.
const CROWD: usize = 500;

/// One crowded host at a time: two starting 500 apps at once on a small CI
/// machine would be a test of the machine, not of the daemon.
static CROWDED: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_crowd_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    CROWDED.lock().unwrap_or_else(|e| e.into_inner())
}

/// Users the crowd runs as: the kernel gives each user 200 keys
/// (`kernel.keys.maxkeys`) and every app a session keyring of its own, so
/// one user cannot hold 500 apps; a host this crowded has many users.
const CROWD_USERS: usize = 10;

/// `CROWD - 1` sleepers named `sNNN` (after the neighbour, by name) beside
/// the neighbour, as cheap as an app gets, spread over [`CROWD_USERS`].
fn crowded_host(prefix: &Prefix, user: &TestUser) -> Vec<String> {
    chaos::neighbour(user).write(prefix);
    let users: Vec<TestUser> = (0..CROWD_USERS)
        .map(|i| TestUser::ensure(&format!("avt-crowd{i}")))
        .collect();
    let names: Vec<String> = (0..CROWD - 1).map(|i| format!("s{i:03}")).collect();
    for (i, name) in names.iter().enumerate() {
        testapps::sleeper(name, &users[i % CROWD_USERS])
            .start_secs(Duration::ZERO)
            .write(prefix);
    }
    names
}

/// Open descriptors of `pid`.
fn open_fds(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| dir.count())
        .unwrap_or(0)
}

/// `Max open files` of `pid` as (soft, hard), from `/proc/PID/limits`.
fn open_file_limit(pid: u32) -> (String, String) {
    let limits = fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a Max open files line");
    let mut fields = line["Max open files".len()..].split_whitespace();
    (
        fields.next().unwrap().to_owned(),
        fields.next().unwrap().to_owned(),
    )
}

fn count(apps: &[AppStatus], state: State) -> usize {
    apps.iter().filter(|a| a.state == state).count()
}

/// No spawn, accept or log write failed for want of descriptors.
fn assert_no_emfile(daemon: &Daemon) {
    let log = daemon.log();
    let emfile: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("Too many open files") || l.contains("os error 24"))
        .take(5)
        .collect();
    assert!(
        emfile.is_empty(),
        "the daemon ran out of descriptors: {emfile:#?}"
    );
}

#[test]
fn five_hundred_apps_all_run_under_a_soft_open_file_limit_of_1024() {
    require_root!();
    let user = TestUser::ensure("avt-app1");
    let prefix = Prefix::new();
    // The test's own hard limit: raising it needs CAP_SYS_RESOURCE, which
    // a container may not give even to root.
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    let needed = 704 + 10 * CROWD as u64;
    if hard < needed {
        appvisor_tests::skip(format!(
            "needs a hard open-file limit of {needed} for {CROWD} apps (the test has {hard})"
        ));
        return;
    }
    let _crowd = one_crowd_at_a_time();
    let names = crowded_host(&prefix, &user);
    let began = Instant::now();
    let daemon = Daemon::start(
        &prefix,
        DaemonOptions {
            open_files: Some((1024, hard)),
            ready_timeout: Duration::from_secs(60),
            ..DaemonOptions::default()
        },
    );
    // An operator stops one app while the rest are still starting.
    daemon.appctl_ok(["stop", "s250"]);
    let mut apps = Vec::new();
    let all_up = poll_until(Duration::from_secs(120), || {
        apps = daemon.try_status().unwrap_or_default();
        count(&apps, State::Running) == CROWD - 1
    });
    let took = began.elapsed();
    assert!(
        all_up,
        "{} of {} apps running after {took:?}\n{}",
        count(&apps, State::Running),
        CROWD - 1,
        daemon.log_tail(40)
    );
    eprintln!("{CROWD} apps running {took:?} after the daemon started");
    chaos::assert_no_cascade(&daemon);

    // The daemon raised its own limit; the apps kept the one it was given.
    assert_eq!(
        open_file_limit(daemon.pid()),
        (hard.to_string(), hard.to_string())
    );
    let app = daemon.app(&names[0]);
    assert_eq!(
        open_file_limit(app.pid.expect("a running app has a pid")),
        ("1024".into(), hard.to_string())
    );
    // The budget per app is what the daemon holds: 7 each once running,
    // and 2 more once /metrics was scraped (none here).
    let fds = open_fds(daemon.pid());
    eprintln!("appvisord holds {fds} descriptors for {CROWD} apps");
    assert!(
        fds <= 64 + 10 * CROWD,
        "{fds} descriptors for {CROWD} apps: more than the budget of 10 an app"
    );
    assert_no_emfile(&daemon);
    chaos::assert_no_cascade(&daemon);
    let stopped = daemon.app("s250");
    assert_eq!(stopped.state, State::Stopped, "{stopped:#?}");
    assert!(stopped.stopped_by.is_some());
}

#[test]
fn a_hard_open_file_limit_of_1024_refuses_the_apps_that_do_not_fit_and_runs_the_rest() {
    require_root!();
    let user = TestUser::ensure("avt-app1");
    let prefix = Prefix::new();
    let _crowd = one_crowd_at_a_time();
    let names = crowded_host(&prefix, &user);
    let began = Instant::now();
    let daemon = Daemon::start(
        &prefix,
        DaemonOptions {
            open_files: Some((1024, 1024)),
            ready_timeout: Duration::from_secs(60),
            ..DaemonOptions::default()
        },
    );
    daemon.wait_for_state(NEIGHBOUR, State::Running, START);
    // 1024, less 704 kept for the daemon and its connections, at 10 an app.
    let fit = (1024 - 704) / 10;
    let mut apps = Vec::new();
    let settled = poll_until(Duration::from_secs(60), || {
        apps = daemon.try_status().unwrap_or_default();
        count(&apps, State::Running) == fit && count(&apps, State::Fatal) == CROWD - fit
    });
    assert!(
        settled,
        "{} running, {} fatal after {:?} (want {fit} and {})\n{}",
        count(&apps, State::Running),
        count(&apps, State::Fatal),
        began.elapsed(),
        CROWD - fit,
        daemon.log_tail(40)
    );
    eprintln!(
        "{fit} of {CROWD} apps running, the rest refused, {:?} after the start",
        began.elapsed()
    );
    chaos::assert_no_cascade(&daemon);
    let refused = daemon.app("s400");
    assert!(
        refused.reason.starts_with(
            "not started: appvisord's open-file limit of 1024 has room for 0 more descriptors \
             and this app needs 10"
        ) && refused.reason.contains("raise the hard limit (LimitNOFILE"),
        "{refused:#?}"
    );
    let out = daemon.appctl(["status"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!(
            "warning: {} apps not started for want of open files (appvisord's limit is 1024)",
            CROWD - fit
        )),
        "{}",
        describe_output(&out)
    );
    let out = daemon.appctl(["start", "s400"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe_output(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("s400 was not started: appvisord's open-file limit"),
        "{}",
        describe_output(&out)
    );
    assert_no_emfile(&daemon);
    chaos::assert_no_cascade(&daemon);

    // An operator removes two running apps: there is room for one more,
    // which a manual start takes.
    for name in &names[..2] {
        fs::remove_file(prefix.app_file(name)).unwrap();
    }
    let out = daemon.appctl(["update"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "still some not started\n{}",
        describe_output(&out)
    );
    daemon.appctl_ok(["start", "s400"]);
    assert_eq!(daemon.app("s400").state, State::Running);
    chaos::assert_no_cascade(&daemon);
    assert_no_emfile(&daemon);
}

/// The default tasks limit on this host: its share of the smaller of
/// `kernel.pid_max` and `kernel.threads-max`, as systemd's DefaultTasksMax.
fn default_tasks_limit() -> u64 {
    let read = |name: &str| -> u64 {
        fs::read_to_string(format!("/proc/sys/kernel/{name}"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    read("pid_max").min(read("threads-max")) * DEFAULT_TASKS_PERCENT / 100
}

#[test]
fn a_fork_bomb_without_limits_is_stopped_by_the_default_tasks_limit() {
    require_root!();
    let user = TestUser::ensure("avt-app1");
    let prefix = Prefix::new();
    chaos::neighbour(&user).write(&prefix);
    // Started only once the limit is seen in place: unbounded, it would
    // take every process id of the host.
    testapps::python(&prefix, "bomb", &user, "forkbomb.py", &[])
        .readiness(appvisor_tests::Readiness::None)
        .start_secs(Duration::ZERO)
        .autostart(false)
        .write(&prefix);
    let daemon = Daemon::start(&prefix, DaemonOptions::default());
    daemon.wait_for_state(NEIGHBOUR, State::Running, START);
    let limit = default_tasks_limit();

    // The app sets no limits; security shows the default it gets.
    let out = daemon.appctl(["security", "bomb", "--json"]);
    let security: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("security --json: {e}\n{}", describe_output(&out)));
    let limits = &security[0]["limits"];
    if limits["tasks"].is_null() && daemon.log().contains("no pids controller for apps") {
        appvisor_tests::skip("needs a pids cgroup controller (v2 delegated, or v1)");
        return;
    }
    assert_eq!(limits["tasks"], limit, "{security:#}");
    assert_eq!(
        limits["defaults"],
        serde_json::json!(["tasks", "open_files"]),
        "{security:#}"
    );
    let text = daemon.appctl_ok(["security", "bomb"]);
    assert!(text.contains(&format!("tasks {limit} (default)")), "{text}");

    let began = Instant::now();
    daemon.appctl_ok(["start", "bomb"]);
    daemon.wait_until(Duration::from_secs(120), "the bomb's forks refused", || {
        daemon
            .app_logs("bomb", 20, false)
            .contains("fork refused after")
    });
    eprintln!(
        "the bomb reached the default limit of {limit} tasks in {:?}",
        began.elapsed()
    );
    let cgroup = daemon
        .cgroup_dir()
        .expect("the daemon's cgroup subtree")
        .join("bomb");
    let tasks = appvisor_tests::cgroup_procs(&cgroup).len() as u64;
    assert!(
        tasks <= limit && tasks + 10 >= limit,
        "the bomb holds {tasks} processes under a limit of {limit}"
    );
    // At its limit, the bomb keeps trying: nothing else may notice.
    chaos::assert_no_cascade(&daemon);
    assert_eq!(daemon.app("bomb").state, State::Running);
    chaos::assert_no_cascade(&daemon);

    // Stopped, every one of its processes goes, and it stays stopped.
    daemon.appctl_ok(["stop", "bomb"]);
    assert!(appvisor_tests::cgroup_procs(&cgroup).is_empty());
    chaos::assert_no_cascade(&daemon);
    assert_eq!(daemon.app("bomb").state, State::Stopped);
}
