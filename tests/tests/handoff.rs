//! The planned hand-off: `appctl reexec` execs appvisord in
//! place and restarts no app. Real gunicorn on held sockets under load, a
//! chatty app writing numbered lines to stdout, a sleeper in backoff and an
//! app an operator stopped, through 20 hand-offs in a row; and a hand-off
//! to a binary that cannot read the state, which falls back to the old one.

use std::time::Duration;

use appvisor_tests::handoff_scenario::{Scenario, CHATTY};
use appvisor_tests::load::Load;
use appvisor_tests::servers::{Framework, ServedApp, Server};
use appvisor_tests::testapps::sleeper;
use appvisor_tests::{
    bins, require_root, AppBuilder, Daemon, DaemonOptions, Prefix, State, TestUser,
};

const HANDOFFS: usize = 20;
/// Between two hand-offs.
const PAUSE: Duration = Duration::from_millis(250);

/// `appctl reexec`, which must hand `apps` apps over: what it printed.
fn reexec(daemon: &Daemon, apps: usize, what: &str) -> String {
    let out = daemon.appctl(["reexec"]);
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        appvisor_tests::daemon::describe_output(&out),
        daemon.log_tail(60)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let handed = format!("handed over {apps} apps");
    assert!(text.contains(&handed), "{what}: {text}");
    text
}

/// The ms `appctl reexec` reports the apps were unsupervised.
fn unsupervised_ms(text: &str) -> u64 {
    text.split("unsupervised for ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no time in {text:?}"))
}

/// `appctl security APP --json`, checked to carry what the exec helper
/// verified at the last spawn (shown only once a spawn reported it).
fn security(daemon: &Daemon, app: &str) -> serde_json::Value {
    let text = daemon.appctl_ok(["security", app, "--json"]);
    let report: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("appctl security {app} --json: {e}: {text}"));
    let report = report.get(0).cloned().unwrap_or(report);
    assert_eq!(
        report["landlock"]["reported"], true,
        "the helper's report of the last spawn is shown: {report:#}"
    );
    report
}

fn options() -> DaemonOptions {
    DaemonOptions {
        status_listen: format!("127.0.0.1:{}", appvisor_tests::free_port()),
        ..DaemonOptions::default()
    }
}

#[test]
fn reexec_twenty_times_under_load_restarts_no_app_and_loses_no_line() {
    require_root!();
    let served =
        ServedApp::start_with(Server::GunicornSync, Framework::Flask, options(), |app| app);
    let daemon = &served.daemon;
    let mut scenario = Scenario::set_up(daemon, &served.user, served.name(), "");
    let web_security = security(daemon, "web");

    let load = Load::start(served.port, "/", 4, Duration::from_secs(120));
    let mut unsupervised = Vec::new();
    let apps = scenario.apps();
    scenario.hand_offs(daemon, HANDOFFS, PAUSE, |n| {
        let text = reexec(daemon, apps, &format!("reexec {n}"));
        unsupervised.push(unsupervised_ms(&text));
    });
    unsupervised.sort_unstable();
    eprintln!(
        "{HANDOFFS} hand-offs in {:?}; apps unsupervised: median {} ms, max {} ms",
        scenario.took(),
        unsupervised[HANDOFFS / 2],
        unsupervised[HANDOFFS - 1]
    );
    let report = load.finish();
    assert!(
        report.failed.is_empty(),
        "requests failed across the hand-offs:\n{report}"
    );
    assert!(report.ok > 0, "the load sent nothing: {report}");

    scenario.check(daemon);
    assert_eq!(
        security(daemon, "web"),
        web_security,
        "what the exec helper verified at web's spawn is shown the same after the hand-offs"
    );
}

#[test]
fn reexec_to_a_binary_that_cannot_read_the_state_falls_back_untouched() {
    require_root!();
    let scratch = tempfile::tempdir().expect("tempdir");
    let unreadable = scratch.path().join("appvisord-new");
    std::fs::copy(bins::appvisord(), &unreadable).expect("copying appvisord");
    let mut options = options();
    options.env.push((
        "APPVISOR_TEST_HANDOFF_UNREADABLE_BY".to_owned(),
        unreadable.display().to_string(),
    ));
    options.extra_args = vec![
        "--reexec-binary".to_owned(),
        unreadable.display().to_string(),
    ];
    let served = ServedApp::start_with(Server::GunicornSync, Framework::Flask, options, |app| app);
    let daemon = &served.daemon;
    let web_pid = daemon.app("web").pid;

    let out = daemon.appctl(["reexec"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        appvisor_tests::daemon::describe_output(&out)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let refused = format!(
        "hand-off state version {} is not one this appvisord reads",
        appvisor::handoff::state::STATE_VERSION
    );
    assert!(text.contains(&refused), "{text}");
    assert_eq!(daemon.app("web").pid, web_pid, "web untouched");
    assert_eq!(daemon.app("web").state, State::Running);
    served.get("/");
    assert!(
        daemon
            .log()
            .contains("cannot read the previous appvisord's hand-off state"),
        "{}",
        daemon.log_tail(40)
    );
}

#[test]
fn reexec_of_a_binary_that_is_gone_carries_on_with_every_app() {
    require_root!();
    let scratch = tempfile::tempdir().expect("tempdir");
    let gone = scratch.path().join("appvisord-gone");
    let mut options = options();
    options.extra_args = vec!["--reexec-binary".to_owned(), gone.display().to_string()];
    let served = ServedApp::start_with(Server::GunicornSync, Framework::Flask, options, |app| app);
    let user = served.user.clone();
    AppBuilder::new("chatty", &user, ["/usr/bin/python3", "-c", CHATTY]).write(&served.prefix);
    served.daemon.appctl_ok(["update"]);
    let daemon = &served.daemon;
    daemon.wait_for_state("chatty", State::Running, Duration::from_secs(30));
    let (web_pid, chatty_pid) = (daemon.app("web").pid, daemon.app("chatty").pid);

    // The exec fails (no such file): the apps are taken back in-process.
    let out = daemon.appctl(["reexec"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        appvisor_tests::daemon::describe_output(&out)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("No such file or directory"), "{text}");
    assert_eq!(daemon.app("web").pid, web_pid, "web untouched");
    assert_eq!(daemon.app("chatty").pid, chatty_pid, "chatty untouched");
    served.get("/");
    // Supervised again: a stop and start work, and the output is read.
    std::thread::sleep(Duration::from_millis(300));
    daemon.appctl_ok(["restart", "chatty"]);
    assert_ne!(daemon.app("chatty").pid, chatty_pid, "restarted");
    let log = std::fs::read_to_string(served.prefix.log_dir().join("chatty/stdout.log"))
        .expect("chatty's log");
    let numbers: Vec<u64> = log
        .lines()
        .map(|line| {
            line.strip_prefix("line ")
                .and_then(|n| n.parse().ok())
                .expect("a line")
        })
        .collect();
    let first_run_end = numbers
        .windows(2)
        .position(|w| w[1] != w[0] + 1)
        .expect("two runs");
    assert!(
        numbers[..=first_run_end]
            .iter()
            .enumerate()
            .all(|(i, n)| *n == i as u64 + 1),
        "the first run's lines are all there, in order"
    );
    assert!(
        numbers[first_run_end] > 100,
        "chatty wrote across the failed hand-off"
    );
}

#[test]
fn reexec_adopts_the_configuration_that_runs_and_leaves_apps_d_changes_to_update() {
    require_root!();
    let user = TestUser::ensure("avt-hand1");
    let prefix = Prefix::new();
    sleeper("shop", &user).write(&prefix);
    sleeper("blog", &user).write(&prefix);
    let daemon = Daemon::start(&prefix, DaemonOptions::default());
    let shop = daemon.wait_for_state("shop", State::Running, Duration::from_secs(30));
    let blog = daemon.wait_for_state("blog", State::Running, Duration::from_secs(30));

    // apps.d moves on without an update: a changed app, a new one, a
    // removed one.
    sleeper("shop", &user).env("RELEASE", "2").write(&prefix);
    sleeper("news", &user).write(&prefix);
    std::fs::remove_file(prefix.app_file("blog")).expect("removing blog's file");

    reexec(&daemon, 2, "reexec");
    // The new image runs what ran, as it ran; it read neither apps.d nor
    // appvisor.toml.
    let names: Vec<String> = daemon.status_json().into_iter().map(|a| a.name).collect();
    assert_eq!(names, ["blog", "shop"], "the registry as it was");
    assert_eq!(daemon.app("shop").pid, shop.pid);
    assert_eq!(daemon.app("blog").pid, blog.pid);
    assert!(
        !daemon
            .log()
            .contains("judging appvisor.toml and apps.d instead"),
        "{}",
        daemon.log_tail(40)
    );

    // The changes wait for `appctl update`, which applies them as ever.
    let pending = daemon.appctl_ok(["update", "--dry-run"]);
    assert_eq!(
        pending,
        "added: news\nchanged: shop\nremoved: blog\ndry run: nothing was changed\n"
    );
    daemon.appctl_ok(["update"]);
    daemon.wait_for_state("news", State::Running, Duration::from_secs(30));
    let shop_now = daemon.wait_for_state("shop", State::Running, Duration::from_secs(30));
    assert_ne!(
        shop_now.pid, shop.pid,
        "shop restarted for its new environment"
    );
    let names: Vec<String> = daemon.status_json().into_iter().map(|a| a.name).collect();
    assert_eq!(names, ["news", "shop"]);
}

#[test]
fn reexec_to_a_binary_that_cannot_read_the_carried_configuration_judges_apps_d_and_says_so() {
    require_root!();
    let user = TestUser::ensure("avt-hand1");
    let scratch = tempfile::tempdir().expect("tempdir");
    let other = scratch.path().join("appvisord-other");
    std::fs::copy(bins::appvisord(), &other).expect("copying appvisord");
    let prefix = Prefix::new();
    sleeper("shop", &user).write(&prefix);
    let mut options = DaemonOptions::default();
    options.env.push((
        "APPVISOR_TEST_HANDOFF_CONFIG_UNREADABLE_BY".to_owned(),
        other.display().to_string(),
    ));
    options.extra_args = vec!["--reexec-binary".to_owned(), other.display().to_string()];
    let daemon = Daemon::start(&prefix, options);
    let shop = daemon.wait_for_state("shop", State::Running, Duration::from_secs(30));
    sleeper("news", &user).write(&prefix);

    reexec(&daemon, 1, "reexec");
    assert_eq!(daemon.app("shop").pid, shop.pid, "shop taken over");
    assert!(
        daemon.log().contains(
            "cannot read the configuration the previous appvisord ran; judging appvisor.toml and apps.d instead"
        ),
        "{}",
        daemon.log_tail(40)
    );
    // As at start-up: what apps.d gained starts.
    daemon.wait_for_state("news", State::Running, Duration::from_secs(30));
}
