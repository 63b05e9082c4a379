//! The daemon's own life: SIGTERM stops every app; a daemon killed hard and
//! started again leaves no duplicate instance behind.

use std::path::{Path, PathBuf};
use std::time::Duration;

use appvisor_tests::procfs::{cgroup_procs, pids_with_cmdline};
use appvisor_tests::testapps::{gunicorn, printed_pids, python, sleeper};
use appvisor_tests::{
    free_port, http_get, poll_until, process_exists, require_root, Daemon, DaemonOptions, Prefix,
    ProcStatus, State, TestUser,
};

#[test]
fn sigterm_stops_every_app_and_leaves_no_process() {
    require_root!();
    let user = TestUser::ensure("avt-app1");
    let prefix = Prefix::new();
    let port = free_port();
    sleeper("sleeper", &user).write(&prefix);
    gunicorn(&prefix, "web", &user, port).write(&prefix);
    python(&prefix, "stubborn", &user, "stubborn.py", &[])
        .stop_timeout(Duration::from_secs(2))
        .write(&prefix);
    let mut daemon = Daemon::start(&prefix, DaemonOptions::default());
    for app in ["sleeper", "web", "stubborn"] {
        daemon.wait_for_state(app, State::Running, Duration::from_secs(30));
    }
    daemon.wait_until(Duration::from_secs(10), "stubborn's grandchild", || {
        !printed_pids(&daemon.app_logs("stubborn", 50, false), "grandchild").is_empty()
    });
    let cgroup = daemon
        .cgroup_dir()
        .expect("the daemon made its cgroup subtree");
    let pids = daemon.app_processes();
    assert!(
        pids.len() >= 6,
        "sleeper, gunicorn and 2 workers, stubborn and its grandchild: {pids:?}"
    );

    let status = daemon.terminate(Duration::from_secs(20));
    assert_eq!(
        status.code(),
        Some(0),
        "appvisord exits 0 on SIGTERM\n{}",
        daemon.log_tail(40)
    );
    let alive: Vec<u32> = pids
        .iter()
        .copied()
        .filter(|p| process_exists(*p))
        .collect();
    assert!(
        alive.is_empty(),
        "app processes outlived the daemon: {alive:?}"
    );
    let left: Vec<u32> = cgroup_procs(&cgroup)
        .into_iter()
        .filter(|p| process_exists(*p))
        .collect();
    assert!(left.is_empty(), "{} still holds {left:?}", cgroup.display());
    assert!(
        http_get(port, "/health").is_err(),
        "nothing serves on {port} after shutdown"
    );
}

/// A clean exit removes every cgroup directory the daemon made:
/// the app cgroups and their instance leaves in the v2 tree, its own
/// subtree, and the limit cgroups of the v1 hierarchies (hybrid hosts).
#[test]
fn sigterm_leaves_no_cgroup_directory_behind() {
    require_root!();
    let user = TestUser::ensure("avt-app1");
    let prefix = Prefix::new();
    sleeper("plain", &user).write(&prefix);
    sleeper("limited", &user)
        .limit("memory", "\"256MiB\"")
        .limit("tasks", "64")
        .limit("cpu", "\"50%\"")
        .write(&prefix);
    let mut daemon = Daemon::start(&prefix, DaemonOptions::default());
    for app in ["plain", "limited"] {
        daemon.wait_for_state(app, State::Running, Duration::from_secs(30));
    }
    // A second instance leaf, the first one gone.
    daemon.appctl_ok(["restart", "limited"]);
    let made = daemon.cgroup_dirs();
    let subtree = daemon
        .cgroup_dir()
        .expect("the daemon made its cgroup subtree");
    for app in ["plain", "limited"] {
        assert!(
            made.contains(&subtree.join(app)),
            "{app}'s cgroup in {made:#?}"
        );
    }
    // On a hybrid host the limits live in v1 hierarchies too: those must
    // have been made for their removal to be tested.
    for controller in ["memory", "pids"] {
        let root = Path::new("/sys/fs/cgroup").join(controller);
        if root.join("cgroup.procs").exists() {
            assert!(
                made.iter().any(|dir| dir.starts_with(&root)),
                "no {controller} v1 cgroup made in {made:#?}"
            );
        }
    }

    let status = daemon.terminate(Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "{}", daemon.log_tail(40));
    let left: Vec<&PathBuf> = made.iter().filter(|dir| dir.exists()).collect();
    assert!(
        left.is_empty(),
        "left after a clean exit: {left:#?}\n{}",
        daemon.log_tail(40)
    );
}

#[test]
fn daemon_killed_hard_and_restarted_leaves_no_duplicate() {
    require_root!();
    let user = TestUser::ensure("avt-app1");
    let prefix = Prefix::new();
    let port = free_port();
    gunicorn(&prefix, "web", &user, port).write(&prefix);
    let bind = format!("127.0.0.1:{port}");

    let first = Daemon::start(&prefix, DaemonOptions::default());
    let old = first.wait_for_state("web", State::Running, Duration::from_secs(30));
    let old_arbiter = old.pid.expect("pid");
    assert!(poll_until(Duration::from_secs(15), || http_get(
        port, "/health"
    )
    .is_ok()));
    let old_pids = first.app_processes();
    assert!(old_pids.contains(&old_arbiter), "{old_pids:?}");

    let cgroup = first.kill_hard();
    assert!(
        process_exists(old_arbiter),
        "apps outlive a SIGKILLed daemon (nothing killed them)"
    );

    let second = Daemon::start(
        &prefix,
        DaemonOptions {
            cgroup: Some(cgroup),
            ..DaemonOptions::default()
        },
    );
    // Adopted, not started twice: the same arbiter, supervised.
    let new = second.wait_for_state("web", State::Running, Duration::from_secs(30));
    let new_arbiter = new.pid.expect("pid");
    assert_eq!(new_arbiter, old_arbiter, "the running instance was adopted");

    // Exactly one gunicorn serves the port: every process bound to it
    // belongs to the new arbiter's tree.
    let instances: Vec<u32> = pids_with_cmdline(&bind)
        .into_iter()
        .filter(|p| *p != new_arbiter)
        .filter(|p| ProcStatus::read(*p).is_some_and(|s| s.ppid != new_arbiter))
        .collect();
    assert!(
        instances.is_empty(),
        "processes for {bind} outside the new instance: {instances:?}"
    );
    assert!(
        poll_until(Duration::from_secs(15), || {
            http_get(port, "/pid")
                .ok()
                .and_then(|r| r.body.trim().parse::<u32>().ok())
                .and_then(ProcStatus::read)
                .is_some_and(|w| w.ppid == new_arbiter)
        }),
        "the new instance serves 127.0.0.1:{port}"
    );
}
