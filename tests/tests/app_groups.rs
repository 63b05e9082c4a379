//! `appctl start|stop|restart|reload|status` with `group:NAME`, glob
//! patterns and `all`, run by real users against a real daemon: each
//! selects only the apps its caller may see, acts on them concurrently,
//! reports each, and exits with the worst outcome.

use std::time::Duration;

use appvisor_tests::daemon::describe_output;
use appvisor_tests::{
    require_root, AppBuilder, Daemon, DaemonOptions, Prefix, Readiness, State, TestUser,
};

fn worker(name: &str, user: &TestUser, groups: &[&str], operator: &TestUser) -> AppBuilder {
    AppBuilder::new(name, user, ["/bin/sleep", "infinity"])
        .readiness(Readiness::None)
        .start_secs(Duration::from_millis(300))
        .app_groups(groups)
        .extra_toml(&format!("[access]\nusers = [\"{}\"]", operator.name))
}

fn pids(daemon: &Daemon, names: &[&str]) -> Vec<Option<u32>> {
    names.iter().map(|n| daemon.app(n).pid).collect()
}

#[test]
fn an_operators_restart_all_touches_only_their_apps_and_patterns_reveal_nothing() {
    require_root!();
    let app_user = TestUser::ensure("avt-app1");
    let alice = TestUser::ensure("avt-grp-alice");
    let bob = TestUser::ensure("avt-grp-bob");
    let prefix = Prefix::new();
    // alice operates the Celery workers; bob the web app and a hidden
    // worker whose name alice's pattern would match.
    worker("celery-w-00", &app_user, &["celery", "workers"], &alice).write(&prefix);
    worker("celery-w-01", &app_user, &["celery", "workers"], &alice).write(&prefix);
    worker("celery-beat", &app_user, &["celery"], &alice).write(&prefix);
    worker("celery-secret", &app_user, &["celery"], &bob).write(&prefix);
    worker("web", &app_user, &[], &bob).write(&prefix);
    let daemon = Daemon::start(&prefix, DaemonOptions::default());
    let all = [
        "celery-w-00",
        "celery-w-01",
        "celery-beat",
        "celery-secret",
        "web",
    ];
    for app in all {
        daemon.wait_for_state(app, State::Running, Duration::from_secs(15));
    }
    let before = pids(&daemon, &all);

    // alice's `restart all` restarts her three apps, each reported.
    let out = daemon.appctl_as(&alice, ["restart", "all"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe_output(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    for app in ["celery-w-00", "celery-w-01", "celery-beat"] {
        assert!(said.contains(&format!("{app}: running")), "{app}: {said}");
    }
    assert!(!said.contains("secret") && !said.contains("web"), "{said}");
    let after = pids(&daemon, &all);
    for (i, app) in all.iter().enumerate() {
        let restarted = before[i] != after[i];
        assert_eq!(
            restarted,
            i < 3,
            "{app}: restarted {restarted}, pids {:?} -> {:?}",
            before[i],
            after[i]
        );
    }

    // A pattern matching only an app alice may not see says what a
    // pattern matching nothing says, and exits 2.
    let hidden = daemon.appctl_as(&alice, ["restart", "celery-s*"]);
    let nothing = daemon.appctl_as(&alice, ["restart", "nothing-*"]);
    assert_eq!(
        hidden.status.code(),
        Some(2),
        "{}",
        describe_output(&hidden)
    );
    assert_eq!(
        String::from_utf8_lossy(&hidden.stderr),
        "appctl: no app you may see matches \"celery-s*\"\n"
    );
    assert_eq!(
        String::from_utf8_lossy(&nothing.stderr),
        "appctl: no app you may see matches \"nothing-*\"\n"
    );
    assert_eq!(daemon.app("celery-secret").pid, after[3], "untouched");

    // group:NAME selects by app_groups, within what the caller sees.
    let out = daemon.appctl_as(&alice, ["stop", "group:workers"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe_output(&out));
    assert_eq!(daemon.app("celery-w-00").state, State::Stopped);
    assert_eq!(daemon.app("celery-w-01").state, State::Stopped);
    assert_eq!(daemon.app("celery-beat").state, State::Running);
    let out = daemon.appctl_as(&alice, ["status", "group:celery", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "two are stopped: {}",
        describe_output(&out)
    );
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let names: Vec<&str> = shown["apps"]
        .as_array()
        .expect("apps")
        .iter()
        .map(|a| a["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["celery-beat", "celery-w-00", "celery-w-01"]);
    assert_eq!(
        shown["apps"][0]["app_groups"],
        serde_json::json!(["celery"])
    );

    // The worst outcome wins: one app started, one refused.
    let out = daemon.appctl_as(&alice, ["start", "celery-w-00", "web"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe_output(&out));
    assert_eq!(daemon.app("celery-w-00").state, State::Running);
}
