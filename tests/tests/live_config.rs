//! Live configuration: `appctl update` and SIGHUP apply the difference of
//! `apps.d` to a running daemon, touching only the apps whose file changed.

use std::fs;
use std::time::Duration;

use appvisor_tests::daemon::describe_output;
use appvisor_tests::testapps::{dumped_env, python};
use appvisor_tests::{
    process_exists, require_root, AppBuilder, Daemon, DaemonOptions, Prefix, Readiness, State,
    TestUser,
};
use nix::sys::signal::Signal;

/// How the change reaches the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    Update,
    Sighup,
}

fn sleeper(name: &str, user: &TestUser) -> AppBuilder {
    AppBuilder::new(name, user, ["/bin/sleep", "infinity"])
        .readiness(Readiness::None)
        .start_secs(Duration::from_millis(300))
}

fn envdump(prefix: &Prefix, user: &TestUser, flavour: &str) -> AppBuilder {
    python(prefix, "change", user, "envdump.py", &[])
        .readiness(Readiness::None)
        .start_secs(Duration::from_millis(300))
        .env("FLAVOUR", flavour)
}

fn pid_of(daemon: &Daemon, app: &str) -> u32 {
    daemon
        .app(app)
        .pid
        .unwrap_or_else(|| panic!("{app} has no pid: {:#?}", daemon.app(app)))
}

fn flavour(daemon: &Daemon) -> Option<String> {
    let logs = daemon.app_logs("change", 200, false);
    dumped_env(&logs)?
        .into_iter()
        .find(|(k, _)| k == "FLAVOUR")
        .map(|(_, v)| v)
}

/// keep, change and gone running; returns their pids.
fn three_apps(prefix: &Prefix, user: &TestUser) -> (Daemon, [u32; 3]) {
    sleeper("keep", user).write(prefix);
    envdump(prefix, user, "one").write(prefix);
    sleeper("gone", user).write(prefix);
    let daemon = Daemon::start(prefix, DaemonOptions::default());
    for app in ["keep", "change", "gone"] {
        daemon.wait_for_state(app, State::Running, Duration::from_secs(15));
    }
    daemon.wait_until(Duration::from_secs(10), "change's first env dump", || {
        flavour(&daemon).as_deref() == Some("one")
    });
    let pids = ["keep", "change", "gone"].map(|app| pid_of(&daemon, app));
    (daemon, pids)
}

/// Adds `fresh`, changes `change`'s environment and removes `gone`.
fn edit_apps_d(prefix: &Prefix, user: &TestUser) {
    sleeper("fresh", user).write(prefix);
    envdump(prefix, user, "two").write(prefix);
    fs::remove_file(prefix.app_file("gone")).expect("removing gone.toml");
}

fn add_change_remove_unchanged(trigger: Trigger) {
    let user = TestUser::ensure("avt-app2");
    let prefix = Prefix::new();
    let (mut daemon, [keep, change, gone]) = three_apps(&prefix, &user);
    edit_apps_d(&prefix, &user);

    match trigger {
        Trigger::Update => {
            let out = daemon.appctl_ok(["update"]);
            assert_eq!(
                out,
                "added: fresh\nchanged: change\nremoved: gone\nunchanged: keep\n"
            );
            // update answers once removed apps are gone.
            assert!(
                !process_exists(gone),
                "gone's process {gone} outlived update"
            );
        }
        Trigger::Sighup => daemon.signal(Signal::SIGHUP),
    }

    daemon.wait_for_state("fresh", State::Running, Duration::from_secs(15));
    daemon.wait_until(Duration::from_secs(15), "gone to disappear", || {
        daemon.status_json().iter().all(|a| a.name != "gone")
    });
    daemon.wait_until(Duration::from_secs(15), "gone's process to exit", || {
        !process_exists(gone)
    });
    daemon.wait_until(Duration::from_secs(15), "change to restart", || {
        let status = daemon.app("change");
        status.state == State::Running && status.pid.is_some_and(|p| p != change)
    });
    daemon.wait_until(Duration::from_secs(10), "change's new environment", || {
        flavour(&daemon).as_deref() == Some("two")
    });
    assert!(
        !process_exists(change),
        "change's old process {change} still runs"
    );
    let status = daemon.app("keep");
    assert_eq!(
        (status.state, status.pid, status.restarts),
        (State::Running, Some(keep), 0),
        "keep was not touched"
    );
    let mut names: Vec<String> = daemon.status_json().into_iter().map(|a| a.name).collect();
    names.sort();
    assert_eq!(names, ["change", "fresh", "keep"]);
    assert!(daemon.try_wait().is_none(), "appvisord exited");
}

#[test]
fn update_adds_changes_removes_and_leaves_unchanged_apps_alone() {
    require_root!();
    add_change_remove_unchanged(Trigger::Update);
}

#[test]
fn sighup_adds_changes_removes_and_leaves_unchanged_apps_alone() {
    require_root!();
    add_change_remove_unchanged(Trigger::Sighup);
}

fn invalid_files(trigger: Trigger) {
    let user = TestUser::ensure("avt-app2");
    let prefix = Prefix::new();
    let steady = sleeper("steady", &user);
    let steady_file = steady.write(&prefix);
    let daemon = Daemon::start(&prefix, DaemonOptions::default());
    let pid = daemon
        .wait_for_state("steady", State::Running, Duration::from_secs(15))
        .pid
        .expect("pid");

    // A broken edit of a running app, and a broken new app.
    fs::write(&steady_file, format!("bogus = 1\n{}", steady.to_toml())).expect("editing steady");
    let broken_file = prefix.write("apps.d/broken.toml", "user = \"avt-app2\"\n");

    match trigger {
        Trigger::Update => {
            let out = daemon.appctl(["update"]);
            assert_eq!(out.status.code(), Some(2), "{}", describe_output(&out));
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let broken_at = text
                .find(&format!("invalid: broken ({})\n", broken_file.display()))
                .unwrap_or_else(|| panic!("update does not list broken as invalid:\n{text}"));
            let steady_at = text
                .find(&format!("invalid: steady ({})\n", steady_file.display()))
                .unwrap_or_else(|| panic!("update does not list steady as invalid:\n{text}"));
            assert!(broken_at < steady_at, "{text}");
            assert!(
                text[steady_at..].contains("bogus")
                    && text[steady_at..].ends_with("    (still running its last valid version)\n"),
                "{text}"
            );
            assert!(
                !text[broken_at..steady_at].contains("still running"),
                "{text}"
            );
        }
        Trigger::Sighup => daemon.signal(Signal::SIGHUP),
    }

    let broken = daemon.wait_for_state("broken", State::Invalid, Duration::from_secs(10));
    assert!(
        broken.reason.contains("command"),
        "broken's reason names the missing key: {broken:#?}"
    );
    daemon.wait_until(Duration::from_secs(10), "steady's config_error", || {
        daemon.app("steady").config_error.is_some()
    });
    let status = daemon.app("steady");
    assert_eq!(
        (status.state, status.pid),
        (State::Running, Some(pid)),
        "the broken edit left steady's running version alone"
    );
    let error = status.config_error.expect("config_error");
    assert!(error.contains("bogus"), "{error}");
    let table = daemon.appctl(["status", "steady"]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("newest file does not validate, running the last valid version"),
        "{table}"
    );
    let log = daemon.log();
    assert!(
        log.lines()
            .any(|l| l.contains("app file does not validate") && l.contains("app=steady")),
        "the daemon log reports steady's file\n{}",
        daemon.log_tail(30)
    );

    // Fixing the file clears the error and still leaves the process alone.
    steady.write(&prefix);
    match trigger {
        Trigger::Update => {
            let out = daemon.appctl(["update"]);
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(text.contains("unchanged: steady\n"), "{text}");
        }
        Trigger::Sighup => daemon.signal(Signal::SIGHUP),
    }
    daemon.wait_until(
        Duration::from_secs(10),
        "steady's config_error to clear",
        || daemon.app("steady").config_error.is_none(),
    );
    assert_eq!(daemon.app("steady").pid, Some(pid));
}

#[test]
fn update_keeps_the_old_version_of_an_invalid_edit_and_shows_a_new_invalid_app() {
    require_root!();
    invalid_files(Trigger::Update);
}

#[test]
fn sighup_keeps_the_old_version_of_an_invalid_edit_and_shows_a_new_invalid_app() {
    require_root!();
    invalid_files(Trigger::Sighup);
}

#[test]
fn update_dry_run_changes_nothing() {
    require_root!();
    let user = TestUser::ensure("avt-app2");
    let prefix = Prefix::new();
    let (daemon, pids) = three_apps(&prefix, &user);
    edit_apps_d(&prefix, &user);

    let out = daemon.appctl_ok(["update", "--dry-run"]);
    assert_eq!(
        out,
        "added: fresh\nchanged: change\nremoved: gone\nunchanged: keep\ndry run: nothing was changed\n"
    );
    // Give a wrongly acting daemon time to act.
    std::thread::sleep(Duration::from_millis(500));
    let apps = daemon.status_json();
    let now: Vec<(String, State, Option<u32>)> = apps
        .iter()
        .map(|a| (a.name.clone(), a.state, a.pid))
        .collect();
    assert_eq!(
        now,
        [
            ("change".to_owned(), State::Running, Some(pids[1])),
            ("gone".to_owned(), State::Running, Some(pids[2])),
            ("keep".to_owned(), State::Running, Some(pids[0])),
        ]
    );
    assert_eq!(flavour(&daemon).as_deref(), Some("one"));
}

/// An app that ignores HUP and USR1 and prints about 40 KB a second.
fn chatty(name: &str, user: &TestUser) -> AppBuilder {
    let line = "x".repeat(100);
    AppBuilder::new(
        name,
        user,
        [
            "/bin/sh".to_owned(),
            "-c".to_owned(),
            format!(
                "trap '' HUP USR1; while :; do i=0; while [ $i -lt 20 ]; do echo {line}; \
                 i=$((i+1)); done; sleep 0.05; done"
            ),
        ],
    )
    .readiness(Readiness::None)
    .start_secs(Duration::from_millis(300))
}

/// A change of `[access]` alone is applied to the running app,
/// whose process goes on: the new operator may act on it at once, the old
/// one no longer may.
#[test]
fn update_applies_access_without_a_restart() {
    require_root!();
    let user = TestUser::ensure("avt-app2");
    let old = TestUser::ensure("avt-live-old");
    let new = TestUser::ensure("avt-live-new");
    let prefix = Prefix::new();
    let shop = |operator: &TestUser| {
        chatty("shop", &user).extra_toml(&format!("[access]\nusers = [\"{}\"]", operator.name))
    };
    shop(&old).write(&prefix);
    let daemon = Daemon::start(&prefix, DaemonOptions::default());
    let pid = daemon
        .wait_for_state("shop", State::Running, Duration::from_secs(15))
        .pid
        .expect("a pid");
    let signal = |who: &TestUser| daemon.appctl_as(who, ["signal", "USR1", "shop"]);
    let out = signal(&old);
    assert_eq!(out.status.code(), Some(0), "{}", describe_output(&out));
    assert_eq!(signal(&new).status.code(), Some(2));

    shop(&new).write(&prefix);
    assert_eq!(
        daemon.appctl_ok(["update"]),
        "changed, applied without restart: shop\n"
    );
    let status = daemon.app("shop");
    assert_eq!(
        (status.state, status.pid, status.restarts),
        (State::Running, Some(pid), 0),
        "the same process runs on"
    );
    let out = signal(&new);
    assert_eq!(
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
        ),
        (Some(0), format!("shop: sent USR1 (pid {pid})\n")),
        "{}",
        describe_output(&out)
    );
    let out = signal(&old);
    assert_eq!(out.status.code(), Some(2), "{}", describe_output(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "appctl: no app named shop that {} may signal (if it exists, ask an admin to add \
             you to [access] in apps.d/shop.toml)\n",
            old.name
        )
    );
    assert_eq!(pid_of(&daemon, "shop"), pid);
}

/// A new description and log retention are applied to the
/// running app (the next write rotates at the new size and keeps the new
/// count); a new command restarts it.
#[test]
fn update_applies_description_and_log_retention_without_a_restart_and_restarts_for_a_command() {
    require_root!();
    let user = TestUser::ensure("avt-app2");
    let prefix = Prefix::new();
    let app = chatty("chatty", &user).description("before");
    app.clone().logs("1MiB", 5).write(&prefix);
    let daemon = Daemon::start(&prefix, DaemonOptions::default());
    let pid = daemon
        .wait_for_state("chatty", State::Running, Duration::from_secs(15))
        .pid
        .expect("a pid");
    let dir = prefix.log_dir().join("chatty");
    let size = |name: &str| fs::metadata(dir.join(name)).map(|m| m.len()).ok();

    app.clone()
        .description("after")
        .logs("8KiB", 1)
        .write(&prefix);
    assert_eq!(
        daemon.appctl_ok(["update"]),
        "changed, applied without restart: chatty\n"
    );
    let status = daemon.app("chatty");
    assert_eq!(
        (status.pid, status.restarts, status.description.as_str()),
        (Some(pid), 0, "after")
    );
    // At 40 KB/s, 1 MiB would take 25 s: a rotation within seconds is the
    // new size's.
    daemon.wait_until(Duration::from_secs(10), "a rotation at 8KiB", || {
        size("stdout.log.1").is_some()
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        size("stdout.log.2"),
        None,
        "keep = 1 keeps one rotated file"
    );
    for file in ["stdout.log", "stdout.log.1"] {
        let bytes = size(file).unwrap_or_default();
        // Rotation cuts between lines, before the size is passed.
        assert!(bytes <= 8192, "{file} is {bytes} bytes");
    }
    assert_eq!(pid_of(&daemon, "chatty"), pid, "the same process runs on");

    app.command(["/bin/sh", "-c", "trap '' HUP USR1; exec sleep infinity"])
        .description("after")
        .logs("8KiB", 1)
        .write(&prefix);
    assert_eq!(daemon.appctl_ok(["update"]), "changed: chatty\n");
    daemon.wait_until(Duration::from_secs(15), "chatty to restart", || {
        let status = daemon.app("chatty");
        status.state == State::Running && status.pid.is_some_and(|p| p != pid)
    });
    assert!(!process_exists(pid), "the old process {pid} is gone");
}

/// `app_groups` is appctl's selection, no part of the process:
/// moving a running app to another group is applied in place, and the new
/// group selects it at once.
#[test]
fn update_applies_app_groups_without_a_restart() {
    require_root!();
    let user = TestUser::ensure("avt-app2");
    let prefix = Prefix::new();
    let app = sleeper("grouped", &user);
    app.clone().app_groups(&["before"]).write(&prefix);
    let daemon = Daemon::start(&prefix, DaemonOptions::default());
    let pid = daemon
        .wait_for_state("grouped", State::Running, Duration::from_secs(15))
        .pid
        .expect("a pid");

    app.app_groups(&["after"]).write(&prefix);
    assert_eq!(
        daemon.appctl_ok(["update"]),
        "changed, applied without restart: grouped\n"
    );
    let selected = |group: &str| {
        let out = daemon.appctl(["status", &format!("group:{group}"), "--json"]);
        let shown: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| serde_json::json!({ "apps": [] }));
        let apps: Vec<(String, Option<u64>)> = shown["apps"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| {
                (
                    a["name"].as_str().unwrap_or("").to_owned(),
                    a["pid"].as_u64(),
                )
            })
            .collect();
        (out.status.code(), apps)
    };
    assert_eq!(
        selected("after"),
        (Some(0), vec![("grouped".to_owned(), Some(u64::from(pid)))]),
        "the new group selects the running app"
    );
    let (code, apps) = selected("before");
    assert!(
        code != Some(0) && apps.is_empty(),
        "the old group selects nothing: {code:?} {apps:?}"
    );
    let status = daemon.app("grouped");
    assert_eq!(
        (status.state, status.pid, status.restarts),
        (State::Running, Some(pid), 0),
        "the same process runs on"
    );
}

/// An edit that grants a path that does not exist is refused
/// with the file, line and column of the path, and the app runs on in its
/// last valid version: before, update adopted it and every start failed
/// at its Landlock rule, a healthy app taken into a crash loop.
#[test]
fn update_refuses_a_granted_path_that_does_not_exist_and_keeps_the_app_running() {
    require_root!();
    let user = TestUser::ensure("avt-app2");
    let prefix = Prefix::new();
    let app = sleeper("guarded", &user).sandbox("network", "\"none\"");
    let file = app.write(&prefix);
    let daemon = Daemon::start(&prefix, DaemonOptions::default());
    let pid = daemon
        .wait_for_state("guarded", State::Running, Duration::from_secs(15))
        .pid
        .expect("a pid");

    let missing = prefix.path().join("no-such-dir");
    let edit = app.read_write(&missing);
    edit.write(&prefix);
    let (line, column) = edit
        .to_toml()
        .lines()
        .enumerate()
        .find_map(|(i, l)| {
            let at = l.find(&*missing.to_string_lossy())?;
            Some((i + 1, at))
        })
        .expect("the path in the file");
    let out = daemon.appctl(["update"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe_output(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let at = format!("{}:{line}:{column}: sandbox.read_write[0]:", file.display());
    assert!(
        text.contains(&at) && text.contains("does not exist"),
        "update names {at}\n{text}"
    );
    assert!(
        text.ends_with("    (still running its last valid version)\n"),
        "{text}"
    );
    std::thread::sleep(Duration::from_millis(500));
    let status = daemon.app("guarded");
    assert_eq!(
        (status.state, status.pid, status.restarts),
        (State::Running, Some(pid), 0),
        "the refused edit left the running version alone"
    );
}

/// `appctl update` reads only the files that changed since they last
/// validated, telling them by their stamps: an edit in place
/// that keeps the file's size and puts its mtime back (`touch -d`, `cp
/// -p`, rsync) still moves its ctime, and is read.
#[test]
fn update_reads_a_file_edited_in_place_with_its_size_and_mtime_unchanged() {
    require_root!();
    let user = TestUser::ensure("avt-app2");
    let prefix = Prefix::new();
    let path = sleeper("shop", &user)
        .description("version one")
        .write(&prefix);
    let daemon = Daemon::start(&prefix, DaemonOptions::default());
    let pid = daemon
        .wait_for_state("shop", State::Running, Duration::from_secs(15))
        .pid
        .expect("a pid");
    // A file changed in the last two seconds is read at every update: past
    // that, this update keeps its judgement.
    let written = fs::metadata(&path).expect("shop.toml").modified().unwrap();
    let settled = written + Duration::from_millis(2500);
    if let Ok(wait) = settled.duration_since(std::time::SystemTime::now()) {
        std::thread::sleep(wait);
    }
    assert_eq!(daemon.appctl_ok(["update"]), "unchanged: shop\n");

    let text = fs::read_to_string(&path).expect("reading shop.toml");
    let edited = text.replace("version one", "version two");
    assert_eq!(edited.len(), text.len());
    {
        use std::io::Write;
        let mut file = fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("opening shop.toml");
        file.write_all(edited.as_bytes())
            .expect("editing shop.toml");
        file.set_modified(written).expect("putting the mtime back");
    }
    let meta = fs::metadata(&path).unwrap();
    assert_eq!(
        (meta.len(), meta.modified().unwrap()),
        (text.len() as u64, written)
    );

    assert_eq!(
        daemon.appctl_ok(["update"]),
        "changed, applied without restart: shop\n"
    );
    let status = daemon.app("shop");
    assert_eq!(
        (status.description.as_str(), status.pid),
        ("version two", Some(pid))
    );
}
