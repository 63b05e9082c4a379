//! Say what is wrong: a missing `apps_dir` is an error at start,
//! not "ready apps=0"; a broken `appvisor.toml` on SIGHUP is logged with
//! its file and line and changes nothing; files in `apps_dir` ignored for
//! their names are listed by `appctl update` and `appctl status`.

use std::fs;
use std::process::{Command, Stdio};
use std::time::Duration;

use appvisor_protocol::AppList;
use appvisor_tests::daemon::{daemon_config, describe_output};
use appvisor_tests::{
    bins, poll_until, require_root, testapps, Daemon, DaemonOptions, Prefix, State, TestUser,
};
use nix::sys::signal::Signal;

#[test]
fn a_missing_apps_dir_stops_the_start_with_exit_2() {
    require_root!();
    let prefix = Prefix::new();
    let config = prefix.config_path();
    fs::write(&config, daemon_config(&prefix, &DaemonOptions::default())).unwrap();
    fs::remove_dir(prefix.apps_dir()).unwrap();
    let mut child = Command::new(bins::appvisord())
        .arg("--config")
        .arg(&config)
        .args(["--cgroup", &format!("avt-{}-noapps", std::process::id())])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting appvisord");
    let exited = poll_until(Duration::from_secs(10), || {
        child.try_wait().ok().flatten().is_some()
    });
    if !exited {
        let _ = child.kill();
    }
    let out = child.wait_with_output().expect("appvisord's output");
    assert!(
        exited,
        "appvisord kept running without apps_dir\n{}",
        describe_output(&out)
    );
    assert_eq!(out.status.code(), Some(2), "{}", describe_output(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{}: cannot read apps directory: No such file or directory",
            prefix.apps_dir().display()
        )),
        "{}",
        describe_output(&out)
    );
    assert!(!prefix.socket().exists(), "no control socket was bound");
}

#[test]
fn a_broken_appvisor_toml_on_sighup_is_logged_with_its_line_and_changes_nothing() {
    require_root!();
    let user = TestUser::ensure("avt-app1");
    let prefix = Prefix::new();
    testapps::sleeper("sleeper", &user).write(&prefix);
    let daemon = Daemon::start(&prefix, DaemonOptions::default());
    let before = daemon.wait_for_state("sleeper", State::Running, Duration::from_secs(15));

    let good = fs::read_to_string(prefix.config_path()).unwrap();
    // Line 4: a key the daemon does not know.
    let broken: String = good
        .lines()
        .take(3)
        .chain(["no_such_setting = 1"])
        .chain(good.lines().skip(3))
        .map(|line| format!("{line}\n"))
        .collect();
    fs::write(prefix.config_path(), &broken).unwrap();
    daemon.signal(Signal::SIGHUP);
    let expected = format!("{}:4:", prefix.config_path().display());
    daemon.wait_until(
        Duration::from_secs(10),
        "the SIGHUP error in the log",
        || {
            daemon
                .log()
                .lines()
                .any(|l| l.contains("SIGHUP changed nothing") && l.contains(&expected))
        },
    );
    let after = daemon.app("sleeper");
    assert_eq!(
        (after.state, after.pid),
        (State::Running, before.pid),
        "the app is untouched"
    );
    let out = daemon.appctl(["update"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe_output(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&expected),
        "{}",
        describe_output(&out)
    );

    // Fixed: the next SIGHUP applies again.
    fs::write(prefix.config_path(), &good).unwrap();
    testapps::sleeper("second", &user).write(&prefix);
    daemon.signal(Signal::SIGHUP);
    daemon.wait_for_state("second", State::Running, Duration::from_secs(15));
}

#[test]
fn files_ignored_for_their_names_are_listed_by_update_and_status() {
    require_root!();
    let user = TestUser::ensure("avt-app1");
    let prefix = Prefix::new();
    testapps::sleeper("sleeper", &user).write(&prefix);
    let daemon = Daemon::start(&prefix, DaemonOptions::default());
    daemon.wait_for_state("sleeper", State::Running, Duration::from_secs(15));
    let valid = fs::read_to_string(prefix.app_file("sleeper")).unwrap();
    for name in ["Shop.toml", "my.app.toml"] {
        fs::write(prefix.apps_dir().join(name), &valid).unwrap();
    }

    let out = daemon.appctl(["update"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe_output(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for (file, stem) in [("Shop.toml", "Shop"), ("my.app.toml", "my.app")] {
        let path = prefix.apps_dir().join(file);
        assert!(
            stdout.contains(&format!(
                "ignored: {}\n    invalid app name \"{stem}\" (name the file after the app",
                path.display()
            )),
            "update lists {file}\n{}",
            describe_output(&out)
        );
    }

    let out = daemon.appctl(["status"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe_output(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "appctl: warning: {} is ignored: invalid app name \"Shop\"",
            prefix.apps_dir().join("Shop.toml").display()
        )),
        "status lists it\n{}",
        describe_output(&out)
    );
    let out = daemon.appctl(["status", "--json"]);
    let list: AppList = serde_json::from_slice(&out.stdout).expect("status JSON");
    assert_eq!(list.notices.len(), 2, "{:?}", list.notices);

    // Renamed: nothing is ignored any more.
    fs::remove_file(prefix.apps_dir().join("my.app.toml")).unwrap();
    fs::rename(
        prefix.apps_dir().join("Shop.toml"),
        prefix.apps_dir().join("shop.toml"),
    )
    .unwrap();
    let out = daemon.appctl(["update"]);
    assert!(out.status.success(), "{}", describe_output(&out));
    let out = daemon.appctl(["status", "--json"]);
    let list: AppList = serde_json::from_slice(&out.stdout).expect("status JSON");
    assert!(list.notices.is_empty(), "{:?}", list.notices);
}
