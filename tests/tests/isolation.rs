//! One app's failure changes nothing for the others, and the daemon keeps
//! answering: 40 healthy apps beside broken ones of every kind.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use appvisor_tests::testapps::{gunicorn, python, sleeper};
use appvisor_tests::{
    free_port, http_get, poll_until, require_root, AppBuilder, Daemon, DaemonOptions, Prefix,
    Readiness, RestartPolicy, State, TestUser,
};

const HEALTHY_SLEEPERS: usize = 37;
const GUNICORNS: usize = 3;

#[test]
fn broken_apps_change_nothing_for_forty_healthy_ones() {
    require_root!();
    let users: Vec<TestUser> = (1..=4)
        .map(|i| TestUser::ensure(&format!("avt-app{i}")))
        .collect();
    let prefix = Prefix::new();

    let mut healthy = Vec::new();
    for i in 0..HEALTHY_SLEEPERS {
        let name = format!("ok{i:02}");
        sleeper(&name, &users[i % users.len()]).write(&prefix);
        healthy.push(name);
    }
    let mut ports = BTreeMap::new();
    for i in 0..GUNICORNS {
        let name = format!("web{i}");
        let port = free_port();
        gunicorn(&prefix, &name, &users[i % users.len()], port).write(&prefix);
        ports.insert(name.clone(), port);
        healthy.push(name);
    }
    assert_eq!(healthy.len(), 40);

    let fast_backoff = |b: AppBuilder| {
        b.restart_policy(RestartPolicy::Always)
            .max_retries(0)
            .start_secs(Duration::from_secs(1))
            .backoff(Duration::from_millis(100), Duration::from_secs(1))
    };
    let u = &users[0];
    AppBuilder::for_user_name("bad-nouser", "avt-nosuchuser", ["/bin/sleep", "infinity"])
        .write(&prefix);
    sleeper("bad-nogroup", u)
        .group("avt-nosuchgroup")
        .write(&prefix);
    fast_backoff(sleeper("bad-nodir", u).directory("/nonexistent/avt")).write(&prefix);
    fast_backoff(AppBuilder::new("bad-nobin", u, ["/nonexistent/bin/app"])).write(&prefix);
    fast_backoff(python(
        &prefix,
        "bad-crash",
        u,
        "crash.py",
        &["--status", "1"],
    ))
    .write(&prefix);
    fast_backoff(python(
        &prefix,
        "bad-crash2s",
        u,
        "crash.py",
        &["--after", "2", "--status", "3"],
    ))
    .write(&prefix);
    python(&prefix, "bad-hang", u, "stubborn.py", &["--no-grandchild"])
        .stop_timeout(Duration::from_secs(30))
        .write(&prefix);
    fast_backoff(python(
        &prefix,
        "bad-leaker",
        u,
        "stubborn.py",
        &["--exit-after", "1.5"],
    ))
    .write(&prefix);
    python(&prefix, "bad-flood", u, "flood.py", &["100"])
        .logs("10MiB", 3)
        .write(&prefix);
    AppBuilder::new("bad-neverready", u, ["/bin/sleep", "infinity"])
        .readiness(Readiness::Notify)
        .readiness_timeout(Duration::from_secs(2))
        .restart_policy(RestartPolicy::Always)
        .backoff(Duration::from_millis(100), Duration::from_secs(1))
        .write(&prefix);
    prefix.write(
        "apps.d/bad-toml.toml",
        "user = \"avt-app1\"\ncommand = [\"/bin/sleep\", \"infinity\"]\nno_such_key = 1\n",
    );

    let daemon = Daemon::start(&prefix, DaemonOptions::default());
    daemon.wait_for_running(&healthy, Duration::from_secs(90));
    for (name, port) in &ports {
        let served = poll_until(Duration::from_secs(15), || {
            http_get(*port, "/health").is_ok_and(|r| r.status == 200)
        });
        assert!(served, "{name} answers on 127.0.0.1:{port}");
    }
    let before: BTreeMap<String, Option<u32>> = daemon
        .status_json()
        .into_iter()
        .filter(|a| healthy.contains(&a.name))
        .map(|a| (a.name, a.pid))
        .collect();
    // The hung stop runs (30 s timeout) while we watch.
    let out = daemon.appctl(["stop", "bad-hang", "--no-wait"]);
    assert!(out.status.success(), "stop --no-wait of bad-hang: {out:?}");

    // Watch for 10 s: status answers fast every 200 ms, nothing healthy moves.
    let watch = Instant::now();
    let mut worst = Duration::ZERO;
    while watch.elapsed() < Duration::from_secs(10) {
        let asked = Instant::now();
        let apps = daemon.try_status().unwrap_or_else(|e| {
            panic!(
                "status failed {:?} into the watch: {e}\n{}",
                watch.elapsed(),
                daemon.log_tail(60)
            )
        });
        let took = asked.elapsed();
        worst = worst.max(took);
        assert!(
            took < Duration::from_secs(1),
            "appctl status took {took:?} {:?} into the watch\n{}",
            watch.elapsed(),
            daemon.log_tail(60)
        );
        for app in apps.iter().filter(|a| healthy.contains(&a.name)) {
            assert_eq!(app.state, State::Running, "healthy app moved: {app:#?}");
            assert_eq!(app.restarts, 0, "healthy app restarted: {app:#?}");
            assert_eq!(
                app.pid, before[&app.name],
                "healthy app's pid changed: {app:#?}"
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("worst appctl status latency over 10 s: {worst:?}");

    // The broken ones are reported as broken, each with a reason.
    let apps = daemon.status_json();
    let broken: Vec<_> = apps.iter().filter(|a| a.name.starts_with("bad-")).collect();
    assert_eq!(broken.len(), 11, "every broken app is listed: {broken:#?}");
    for app in &broken {
        assert!(
            !app.reason.is_empty(),
            "{} has a reason: {app:#?}",
            app.name
        );
    }
    let state = |name: &str| apps.iter().find(|a| a.name == name).map(|a| a.state);
    assert_eq!(state("bad-toml"), Some(State::Invalid));
    assert_eq!(state("bad-nouser"), Some(State::Invalid));
    assert_ne!(state("bad-nodir"), Some(State::Running));
    assert_ne!(state("bad-nobin"), Some(State::Running));
    assert_ne!(state("bad-neverready"), Some(State::Running));
    assert_eq!(
        state("bad-hang"),
        Some(State::Stopping),
        "a 30 s stop timeout is still running"
    );
    for (name, port) in &ports {
        assert_eq!(
            http_get(*port, "/health").map(|r| r.status).ok(),
            Some(200),
            "{name} still serves"
        );
    }
}
