//! Against the real cgroup v2 tree, as root: each test makes its own
//! instance cgroup (named after the test and this process) and removes it,
//! whatever the outcome, when its `TestRoot` drops.

use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::*;

struct TestRoot {
    root: CgroupRoot,
}

impl TestRoot {
    /// `None`, after saying why, when the test cannot run here.
    fn new(test: &str) -> Option<TestRoot> {
        if !nix::unistd::geteuid().is_root() {
            appvisor_tests::skip("needs root (creates cgroups)");
            return None;
        }
        let instance = format!("appvisor-test-{}-{test}", std::process::id());
        match CgroupRoot::detect(&instance).expect("detect the cgroup root") {
            Some(root) => Some(TestRoot { root }),
            None => {
                appvisor_tests::skip("needs a cgroup v2 tree (none found)");
                None
            }
        }
    }
}

impl Drop for TestRoot {
    fn drop(&mut self) {
        for name in self.root.existing_apps().unwrap_or_default() {
            let Ok(app) = self.root.app(&name) else {
                continue;
            };
            let _ = app.kill();
            let deadline = Instant::now() + Duration::from_secs(2);
            while app.is_populated().unwrap_or(false) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = app.remove();
        }
        if let Err(error) = self.root.remove() {
            eprintln!("cannot clean up test cgroup: {error}");
        }
    }
}

/// `sleep 100`, moved into `app` by the test.
fn sleep_in(app: &AppCgroup) -> Child {
    let child = Command::new("sleep")
        .arg("100")
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn sleep");
    app.add_pid(child.id()).expect("move sleep into its cgroup");
    child
}

async fn wait_populated(receiver: &mut Populated, want: bool) {
    let reached = tokio::time::timeout(Duration::from_secs(1), receiver.wait_for(want))
        .await
        .unwrap_or_else(|_| panic!("populated did not become {want} within 1s"));
    assert!(reached, "the watch ended");
}

fn wait_for_pids(app: &AppCgroup, count: usize) -> Vec<u32> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let pids = app.pids().unwrap();
        if pids.len() == count {
            return pids;
        }
        assert!(
            Instant::now() < deadline,
            "expected {count} processes in {}, found {pids:?}",
            app.dir().display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn detect_creates_the_instance_under_the_own_cgroup() {
    let Some(test) = TestRoot::new("detect") else {
        return;
    };
    let mount = find_v2_mount(&std::fs::read_to_string("/proc/self/mountinfo").unwrap()).unwrap();
    let own = own_v2_path(&std::fs::read_to_string("/proc/self/cgroup").unwrap()).unwrap();
    let instance = format!("appvisor-test-{}-detect", std::process::id());
    let want_path = format!("{}/{instance}", own.trim_end_matches('/'));
    assert_eq!(test.root.cgroup_path(), want_path);
    assert_eq!(
        test.root.dir(),
        mount.join(want_path.trim_start_matches('/'))
    );
    assert!(test.root.dir().join("cgroup.events").is_file());
    assert!(test.root.existing_apps().unwrap().is_empty());
}

#[tokio::test]
async fn watch_sees_populated_and_kill_empties() {
    let Some(test) = TestRoot::new("kill") else {
        return;
    };
    let watcher = CgroupWatcher::start().unwrap();
    let app = test.root.app("web").unwrap();
    let mut populated = watcher.watch(&app).unwrap();
    assert!(!populated.get());

    let mut child = sleep_in(&app);
    wait_populated(&mut populated, true).await;
    assert_eq!(app.pids().unwrap(), [child.id()]);
    assert!(app.contains_pid(child.id()));
    assert!(!app.contains_pid(std::process::id()));
    assert!(!app.contains_pid(u32::MAX));

    app.kill().unwrap();
    wait_populated(&mut populated, false).await;
    assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
    app.remove().unwrap();
    assert!(!app.dir().exists());
    watcher.unwatch(&app);
    assert_eq!(watcher.watch_count(), 0);
    assert_eq!(populated.changed().await, None, "the watch ends");
}

#[tokio::test]
async fn kill_reaches_daemonized_grandchildren() {
    let Some(test) = TestRoot::new("grandchild") else {
        return;
    };
    let watcher = CgroupWatcher::start().unwrap();
    let app = test.root.app("web").unwrap();
    let mut populated = watcher.watch(&app).unwrap();
    let script = format!(
        "echo $$ > {}; setsid sleep 100 </dev/null >/dev/null 2>&1 & exec sleep 100",
        app.procs_path().display()
    );
    let mut child = Command::new("sh").arg("-c").arg(script).spawn().unwrap();
    let pids = wait_for_pids(&app, 2);
    assert!(pids.contains(&child.id()));
    wait_populated(&mut populated, true).await;

    app.kill().unwrap();
    wait_populated(&mut populated, false).await;
    assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
    assert_eq!(app.pids().unwrap(), Vec::<u32>::new());
    app.remove().unwrap();
}

#[tokio::test]
async fn signal_all_reaches_every_process() {
    let Some(test) = TestRoot::new("signal") else {
        return;
    };
    let app = test.root.app("web").unwrap();
    let mut children = [sleep_in(&app), sleep_in(&app)];
    assert_eq!(app.signal_all(Signal::SIGTERM).unwrap(), 2);
    for child in &mut children {
        assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGTERM));
    }
    assert_eq!(app.signal_all(Signal::SIGTERM).unwrap(), 0);
}

#[tokio::test]
async fn remove_refuses_a_populated_cgroup() {
    let Some(test) = TestRoot::new("remove") else {
        return;
    };
    let app = test.root.app("web").unwrap();
    let mut child = sleep_in(&app);
    let error = app.remove().unwrap_err();
    assert_eq!(
        error.to_string(),
        format!("cannot remove cgroup {}", app.dir().display())
    );
    let CgroupError::Remove { source, .. } = error else {
        panic!("expected a remove error, got {error:?}");
    };
    assert_eq!(source.raw_os_error(), Some(libc::EBUSY));
    app.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test]
async fn reap_leftovers_kills_and_removes() {
    let Some(test) = TestRoot::new("reap") else {
        return;
    };
    let watcher = CgroupWatcher::start().unwrap();
    let api = test.root.app("api").unwrap();
    let web = test.root.app("web").unwrap();
    test.root.app("idle").unwrap();
    let mut children = [sleep_in(&api), sleep_in(&web), sleep_in(&web)];
    assert_eq!(test.root.existing_apps().unwrap(), ["api", "idle", "web"]);

    let report = test
        .root
        .reap_leftovers(&watcher, Duration::from_secs(5), &Default::default())
        .await
        .unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    let reaped: Vec<_> = report
        .reaped
        .iter()
        .map(|r| (r.name.as_str(), r.killed))
        .collect();
    assert_eq!(reaped, [("api", 1), ("idle", 0), ("web", 2)]);
    assert!(test.root.existing_apps().unwrap().is_empty());
    for child in &mut children {
        assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
    }
}

#[tokio::test]
async fn watching_twice_shares_one_watch() {
    let Some(test) = TestRoot::new("twice") else {
        return;
    };
    let watcher = CgroupWatcher::start().unwrap();
    let app = test.root.app("web").unwrap();
    let mut first = watcher.watch(&app).unwrap();
    let mut second = watcher.watch(&app).unwrap();
    let mut child = sleep_in(&app);
    wait_populated(&mut first, true).await;
    wait_populated(&mut second, true).await;
    assert_eq!(watcher.watch_count(), 1);
    drop(first);
    app.kill().unwrap();
    wait_populated(&mut second, false).await;
    child.wait().unwrap();

    // Once no receiver listens, the watch goes at its next event.
    drop(second);
    let mut child = sleep_in(&app);
    wait_watch_count(&watcher, 0).await;
    app.kill().unwrap();
    child.wait().unwrap();
}

/// Watches no one listens to and that see no event are swept by a `watch`
/// call once there are twice as many watches as the last sweep left (and
/// at least `SWEEP_FLOOR`), not at every call: that looked at every app's
/// watch for each app started.
#[tokio::test]
async fn watches_no_one_listens_to_are_swept_once_their_number_doubled() {
    let Some(test) = TestRoot::new("sweep") else {
        return;
    };
    let watcher = CgroupWatcher::start().unwrap();
    let quiet = test.root.app("quiet").unwrap();
    drop(watcher.watch(&quiet).unwrap());
    let mut kept = Vec::new();
    for i in 1..watch::SWEEP_FLOOR {
        let app = test.root.app(&format!("app{i}")).unwrap();
        kept.push(watcher.watch(&app).unwrap());
    }
    assert_eq!(watcher.watch_count(), watch::SWEEP_FLOOR, "no sweep yet");
    let last = test.root.app("last").unwrap();
    kept.push(watcher.watch(&last).unwrap());
    assert_eq!(
        watcher.watch_count(),
        watch::SWEEP_FLOOR,
        "the quiet one's watch swept before the last was added"
    );
}

async fn wait_watch_count(watcher: &CgroupWatcher, want: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while watcher.watch_count() != want {
        assert!(
            Instant::now() < deadline,
            "{} watches after 5 s, want {want}",
            watcher.watch_count()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[test]
fn remove_takes_the_child_cgroups_with_it() {
    let Some(test) = TestRoot::new("children") else {
        return;
    };
    let app = test.root.app("web").unwrap();
    let leaf = app.child("i1").unwrap();
    leaf.child("deeper").unwrap();
    app.remove().unwrap();
    assert!(!app.dir().exists());
    // Gone already: still no error.
    app.remove().unwrap();
}

#[tokio::test]
async fn unwatch_ends_only_that_cgroups_watch() {
    let Some(test) = TestRoot::new("unwatch") else {
        return;
    };
    let watcher = CgroupWatcher::start().unwrap();
    let gone = test.root.app("gone").unwrap();
    let kept = test.root.app("kept").unwrap();
    let mut gone_populated = watcher.watch(&gone).unwrap();
    let mut kept_populated = watcher.watch(&kept).unwrap();
    assert_eq!(watcher.watch_count(), 2);

    watcher.unwatch(&gone);
    assert_eq!(watcher.watch_count(), 1);
    assert_eq!(gone_populated.changed().await, None, "the watch ends");
    // Unwatching again, or a cgroup never watched, is no error.
    watcher.unwatch(&gone);
    assert_eq!(watcher.watch_count(), 1);

    let mut child = sleep_in(&kept);
    wait_populated(&mut kept_populated, true).await;
    kept.kill().unwrap();
    wait_populated(&mut kept_populated, false).await;
    child.wait().unwrap();
}

#[test]
fn watcher_needs_a_runtime() {
    let error = CgroupWatcher::start().unwrap_err();
    assert_eq!(
        error.to_string(),
        "the cgroup watcher must be started inside a tokio runtime"
    );
}
