//! The symlink deploy, end to end, by an app's owner without root: switch
//! `current` to a new release, `appctl restart`, see the release in status;
//! a release that fails to start makes `restart` exit 1 with the reason and
//! the last log lines, so the deploy script switches back.

use std::fs;
use std::os::unix::fs::{lchown, symlink, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use appvisor_tests::daemon::describe_output;
use appvisor_tests::{
    bins, require_root, AppBuilder, Daemon, DaemonOptions, Prefix, Readiness, RestartPolicy, State,
    TestUser,
};

const GOOD_APP: &str = "import os, sys, time\n\
    print('serving', os.path.basename(os.getcwd()), flush=True)\n\
    time.sleep(86400)\n";
const BROKEN_APP: &str = "import shop_settings_that_do_not_exist\n";

/// `dir/releases/N/app.py`, owned by `owner` like everything a deploy writes.
fn release(dir: &Path, n: u32, code: &str, owner: &TestUser) {
    let rel = dir.join("releases").join(n.to_string());
    fs::create_dir_all(&rel).expect("creating a release");
    fs::write(rel.join("app.py"), code).expect("writing app.py");
    fs::set_permissions(rel.join("app.py"), fs::Permissions::from_mode(0o644)).expect("chmod");
    for path in [dir.join("releases"), rel.clone(), rel.join("app.py")] {
        lchown(&path, Some(owner.uid), Some(owner.gid)).expect("chown to the owner");
    }
}

/// What a deploy script does, as the owner: point `current` at release `n`
/// atomically.
fn switch(dir: &Path, n: u32, owner: &TestUser) {
    let out = owner
        .command("/bin/sh")
        .arg("-c")
        .arg(format!(
            "ln -sfn releases/{n} current.new && mv -T current.new current"
        ))
        .current_dir(dir)
        .output()
        .expect("running the switch");
    assert!(
        out.status.success(),
        "switching to release {n}: {}",
        describe_output(&out)
    );
}

#[test]
fn an_owner_switches_releases_and_restarts_without_root() {
    require_root!();
    let owner = TestUser::ensure("avt-ctl-alice");
    let app_user = TestUser::ensure("avt-app3");
    let prefix = Prefix::new();
    let dir = prefix.code_dir("shop", &owner);
    release(&dir, 1, GOOD_APP, &owner);
    release(&dir, 2, GOOD_APP, &owner);
    release(&dir, 3, BROKEN_APP, &owner);
    symlink("releases/1", dir.join("current")).expect("symlink current");
    lchown(dir.join("current"), Some(owner.uid), Some(owner.gid)).expect("chown current");
    AppBuilder::new("shop", &app_user, [bins::SYSTEM_PYTHON, "app.py"])
        .directory(dir.join("current"))
        .readiness(Readiness::None)
        .start_secs(Duration::from_millis(500))
        .restart_policy(RestartPolicy::OnFailure)
        .backoff(Duration::from_secs(1), Duration::from_secs(5))
        .extra_toml(&format!("[access]\nusers = [\"{}\"]", owner.name))
        .write(&prefix);
    let daemon = Daemon::start(&prefix, DaemonOptions::default());
    let first = daemon.wait_for_state("shop", State::Running, Duration::from_secs(15));
    let releases = dir.join("releases");
    assert_eq!(
        first.release.as_deref(),
        Some(releases.join("1").to_str().expect("utf-8 path"))
    );

    // Release 2: switch, restart, and status shows where current points now.
    switch(&dir, 2, &owner);
    let out = daemon.appctl_as(&owner, ["restart", "shop"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe_output(&out));
    let out = daemon.appctl_as(&owner, ["status", "shop"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe_output(&out));
    let table = String::from_utf8_lossy(&out.stdout);
    let row = table.lines().nth(1).unwrap_or_default();
    assert!(
        row.starts_with("shop") && row.ends_with(&releases.join("2").display().to_string()),
        "status shop as the owner:\n{table}"
    );
    daemon.wait_until(Duration::from_secs(5), "release 2's output", || {
        daemon.app_logs("shop", 5, false).contains("serving 2")
    });

    // Release 3 does not start: restart says why, with the log, and exits 1.
    switch(&dir, 3, &owner);
    let out = daemon.appctl_as(&owner, ["restart", "shop", "--timeout", "20s"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("appctl: shop did not become ready: exited with status 1"),
        "{stderr}"
    );
    assert!(stderr.contains("last log lines of shop:\n"), "{stderr}");
    assert!(
        stderr.contains("ModuleNotFoundError: No module named 'shop_settings_that_do_not_exist'"),
        "{stderr}"
    );

    // The script switches back and restarts.
    switch(&dir, 2, &owner);
    let out = daemon.appctl_as(&owner, ["restart", "shop"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe_output(&out));
    let status = daemon.app("shop");
    assert_eq!(status.state, State::Running);
    assert_eq!(
        status.release.as_deref(),
        Some(releases.join("2").to_str().expect("utf-8 path"))
    );
}
