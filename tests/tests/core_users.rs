//! Apps run as their own user and groups, never as root.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use appvisor_tests::daemon::describe_output;
use appvisor_tests::testapps::sleeper;
use appvisor_tests::{
    bins, require_root, Daemon, DaemonOptions, Prefix, ProcStatus, State, TestGroup, TestUser,
};

const DEADLINE: Duration = Duration::from_secs(15);

#[test]
fn app_runs_as_its_user_with_its_groups() {
    require_root!();
    let user = TestUser::ensure_in_groups("avt-app2", &["avt-grp"]);
    let grp = TestGroup::ensure("avt-grp");
    let prefix = Prefix::new();
    sleeper("plain", &user).write(&prefix);
    sleeper("grouped", &user).group("avt-grp").write(&prefix);
    let daemon = Daemon::start(&prefix, DaemonOptions::default());

    let plain = daemon.wait_for_state("plain", State::Running, DEADLINE);
    assert_eq!(plain.user, "avt-app2");
    let pid = plain.pid.expect("a running app has a pid");
    let proc = ProcStatus::read(pid).expect("the app's process exists");
    assert_eq!(
        proc.uid, [user.uid; 4],
        "Uid of {pid} (real, effective, saved, fs)"
    );
    assert_eq!(
        proc.gid, [user.gid; 4],
        "Gid of {pid} (real, effective, saved, fs)"
    );
    // setgroups may or may not list the primary group again: compare with it added.
    let mut have: BTreeSet<u32> = proc.groups.iter().copied().collect();
    have.insert(user.gid);
    let want: BTreeSet<u32> = user.group_ids().into_iter().collect();
    assert_eq!(
        have, want,
        "supplementary groups of {pid}: {:?}",
        proc.groups
    );
    assert!(
        have.contains(&grp.gid),
        "avt-grp ({}) missing from {have:?}",
        grp.gid
    );

    let grouped = daemon.wait_for_state("grouped", State::Running, DEADLINE);
    let proc = ProcStatus::read(grouped.pid.expect("pid")).expect("process exists");
    assert_eq!(proc.uid, [user.uid; 4]);
    assert_eq!(
        proc.gid, [grp.gid; 4],
        "`group = \"avt-grp\"` sets every gid"
    );
    assert!(
        !proc.groups.contains(&0),
        "no process of an app is in group root"
    );
}

fn rooty_file(prefix: &Prefix) -> std::path::PathBuf {
    prefix.write(
        "apps.d/rooty.toml",
        "user = \"root\"\ncommand = [\"/bin/sleep\", \"infinity\"]\ndirectory = \"/\"\n",
    )
}

#[test]
fn appvisord_check_refuses_user_root() {
    require_root!();
    let prefix = Prefix::new();
    let file = rooty_file(&prefix);
    std::fs::write(prefix.config_path(), "").expect("writing an empty appvisor.toml");
    let out = Command::new(bins::appvisord())
        .arg("check")
        .arg("--config")
        .arg(prefix.config_path())
        .arg(&file)
        .output()
        .expect("running appvisord check");
    let text = describe_output(&out);
    assert_eq!(
        out.status.code(),
        Some(2),
        "appvisord check of user = root\n{text}"
    );
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains(&file.display().to_string()),
        "message names the file\n{text}"
    );
    assert!(said.contains("user"), "message names the key\n{text}");
    assert!(said.contains("root"), "message says why\n{text}");
}

#[test]
fn appctl_check_refuses_user_root() {
    require_root!();
    let prefix = Prefix::new();
    let file = rooty_file(&prefix);
    let out = Command::new(bins::appctl())
        .arg("check")
        .arg(&file)
        .output()
        .expect("running appctl check");
    let text = describe_output(&out);
    assert_eq!(
        out.status.code(),
        Some(2),
        "appctl check of user = root\n{text}"
    );
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains(&file.display().to_string()),
        "message names the file\n{text}"
    );
    assert!(said.contains("user"), "message names the key\n{text}");
}

#[test]
fn daemon_marks_user_root_invalid_and_runs_the_others() {
    require_root!();
    let user = TestUser::ensure("avt-app1");
    let prefix = Prefix::new();
    rooty_file(&prefix);
    sleeper("fine", &user).write(&prefix);
    let daemon = Daemon::start(&prefix, DaemonOptions::default());

    daemon.wait_for_state("fine", State::Running, DEADLINE);
    let rooty = daemon.wait_for_state("rooty", State::Invalid, DEADLINE);
    assert!(
        rooty.pid.is_none(),
        "an invalid app has no process: {rooty:#?}"
    );
    assert!(
        rooty.reason.contains("root"),
        "the reason says root is refused: {:?}",
        rooty.reason
    );
    let out = daemon.appctl(["start", "rooty"]);
    assert_ne!(
        out.status.code(),
        Some(0),
        "starting an app with user = root must fail\n{}",
        describe_output(&out)
    );
    assert!(
        daemon.app("rooty").pid.is_none(),
        "no process was started as root"
    );
    assert_eq!(daemon.app("fine").restarts, 0);
}
