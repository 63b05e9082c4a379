//! The read-only status server of a real appvisord: `/healthz`, `/v1/apps`
//! and `/metrics`, checked against the daemon's state and parsed by
//! Prometheus's own `promtool`.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use appvisor_tests::testapps::gunicorn;
use appvisor_tests::{
    free_port, http_get, poll_until, require_root, AppList, AppStatus, Daemon, DaemonOptions,
    Prefix, State, TestUser,
};

/// Where Debian's `prometheus` package puts promtool (`.ci/run` installs it).
const PROMTOOL: &str = "/usr/bin/promtool";

fn start(prefix: &Prefix) -> (Daemon, u16) {
    let status_port = free_port();
    let daemon = Daemon::start(
        prefix,
        DaemonOptions {
            status_listen: format!("127.0.0.1:{status_port}"),
            ..DaemonOptions::default()
        },
    );
    (daemon, status_port)
}

fn get_ok(daemon: &Daemon, port: u16, path: &str) -> String {
    let response = http_get(port, path).unwrap_or_else(|e| {
        panic!(
            "GET {path} on the status port: {e}\n{}",
            daemon.log_tail(40)
        )
    });
    assert_eq!(response.status, 200, "GET {path}: {}", response.body);
    response.body
}

/// The value of the sample `series` (name and labels exactly as printed).
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.split(' ').next()?.parse().ok()
    })
}

fn must_sample(metrics: &str, series: &str) -> f64 {
    sample(metrics, series).unwrap_or_else(|| panic!("no sample {series} in\n{metrics}"))
}

/// `promtool check metrics` on `text`: Prometheus's own parser and linter.
///
/// promtool parses with the classic text-format parser: a parse error exits
/// 1 ("error while linting: text format parsing error …"). Its linter (exit
/// 3) knows only the classic naming, where a counter's HELP names the
/// sample itself; OpenMetrics, which Prometheus scrapes natively, names the
/// family without `_total`. That one complaint, for a family whose HELP is
/// there, is accepted; any other problem fails the test.
fn promtool_check(text: &str) {
    assert!(
        std::path::Path::new(PROMTOOL).is_file(),
        "{PROMTOOL} not found: run .ci/run (it installs Debian's prometheus package)"
    );
    let mut child = Command::new(PROMTOOL)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    // promtool prints its findings on stderr.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let openmetrics_counter_naming = |problem: &str| {
        problem
            .strip_suffix(" no help text")
            .and_then(|sample| sample.strip_suffix("_total"))
            .is_some_and(|family| text.contains(&format!("# HELP {family} ")))
    };
    let only_naming = out.status.code() == Some(3)
        && stdout.trim().is_empty()
        && stderr.lines().all(openmetrics_counter_naming);
    assert!(
        out.status.success() || only_naming,
        "promtool check metrics failed ({}):\n{}{}\n--- metrics ---\n{text}",
        out.status,
        stdout,
        stderr
    );
}

/// Statuses without what moves between two reads.
fn settled(mut apps: Vec<AppStatus>) -> Vec<AppStatus> {
    for app in &mut apps {
        app.uptime_secs = None;
    }
    apps
}

#[test]
fn healthz_and_apps_agree_with_appctl() {
    require_root!();
    let user = TestUser::ensure("avt-app1");
    let prefix = Prefix::new();
    let port = free_port();
    gunicorn(&prefix, "web", &user, port).write(&prefix);
    appvisor_tests::testapps::sleeper("idle", &user)
        .autostart(false)
        .write(&prefix);
    let (daemon, status_port) = start(&prefix);
    daemon.wait_for_state("web", State::Running, Duration::from_secs(30));

    assert_eq!(get_ok(&daemon, status_port, "/healthz"), "ok\n");

    let over_http: AppList = serde_json::from_str(&get_ok(&daemon, status_port, "/v1/apps"))
        .expect("/v1/apps is an AppList");
    let over_socket = daemon.status_json();
    assert_eq!(settled(over_http.apps.clone()), settled(over_socket));
    let names: Vec<&str> = over_http.apps.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["idle", "web"]);
    assert!(over_http.apps[1].uptime_secs.is_some());

    let refused = http_get(status_port, "/v1/apps/web/stop").expect("an answer");
    assert_eq!(refused.status, 404, "{}", refused.body);
}

#[test]
fn metrics_parse_and_follow_the_state() {
    require_root!();
    let user = TestUser::ensure("avt-app1");
    let prefix = Prefix::new();
    let port = free_port();
    gunicorn(&prefix, "web", &user, port).write(&prefix);
    let (daemon, status_port) = start(&prefix);
    daemon.wait_for_state("web", State::Running, Duration::from_secs(30));
    // The workers boot after READY=1; let them so memory covers them too.
    assert!(poll_until(Duration::from_secs(15), || http_get(port, "/")
        .is_ok_and(|r| r.status == 200)));

    let before = get_ok(&daemon, status_port, "/metrics");
    promtool_check(&before);
    assert_eq!(must_sample(&before, "appvisor_app_up{app=\"web\"}"), 1.0);
    assert_eq!(
        must_sample(&before, "appvisor_app_state{app=\"web\",state=\"running\"}"),
        1.0
    );
    assert_eq!(
        must_sample(&before, "appvisor_app_state{app=\"web\",state=\"stopped\"}"),
        0.0
    );
    assert_eq!(
        must_sample(&before, "appvisor_app_restarts_total{app=\"web\"}"),
        0.0
    );
    let memory = must_sample(&before, "appvisor_app_memory_bytes{app=\"web\"}");
    assert!(
        memory > 1_000_000.0,
        "a running gunicorn uses more than 1 MB: {memory}"
    );
    let cpu = must_sample(&before, "appvisor_app_cpu_seconds_total{app=\"web\"}");
    assert!(cpu > 0.0, "booting python used some CPU: {cpu}");
    let started = must_sample(&before, "appvisor_app_start_time_seconds{app=\"web\"}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        (now - 120.0..=now + 1.0).contains(&started),
        "start time {started} is not within the last two minutes of {now}"
    );
    assert_eq!(
        must_sample(
            &before,
            "appvisor_app_readiness_failures_total{app=\"web\"}"
        ),
        0.0
    );

    daemon.appctl_ok(["restart", "web"]);
    let after = get_ok(&daemon, status_port, "/metrics");
    promtool_check(&after);
    assert_eq!(
        must_sample(&after, "appvisor_app_restarts_total{app=\"web\"}"),
        1.0
    );
    assert_eq!(
        must_sample(
            &after,
            "appvisor_control_requests_total{action=\"restart\",outcome=\"ok\"}"
        ),
        1.0
    );
    assert!(
        must_sample(&after, "appvisor_app_start_time_seconds{app=\"web\"}") > started,
        "the restart moved the start time"
    );

    daemon.appctl_ok(["stop", "web"]);
    let stopped = get_ok(&daemon, status_port, "/metrics");
    assert_eq!(must_sample(&stopped, "appvisor_app_up{app=\"web\"}"), 0.0);
    assert_eq!(
        must_sample(
            &stopped,
            "appvisor_app_state{app=\"web\",state=\"stopped\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(&stopped, "appvisor_app_start_time_seconds{app=\"web\"}"),
        None,
        "no start time without a process"
    );
}

#[test]
fn example_prometheus_config_and_alert_rules_pass_promtool() {
    let dir = std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/prometheus"
    ));
    for args in [
        vec!["check", "config", "prometheus.yml"],
        vec!["test", "rules", "appvisor-alerts.test.yml"],
    ] {
        let out = Command::new(PROMTOOL)
            .args(&args)
            .current_dir(dir)
            .output()
            .unwrap_or_else(|e| panic!("running {PROMTOOL} (run .ci/run to install it): {e}"));
        assert!(
            out.status.success(),
            "promtool {} failed:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The mount point of the v1 memory hierarchy, if this host has one
/// (a hybrid host) mounted at its root.
fn v1_memory_mount() -> Option<std::path::PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mountinfo.lines().find_map(|line| {
        let (before, after) = line.split_once(" - ")?;
        let mut after = after.split(' ');
        let options = after.nth(2)?;
        let mut fields = before.split(' ');
        let root = fields.nth(3)?;
        let mount_point = fields.next()?;
        (after.next().is_none()
            && root == "/"
            && line.contains(" - cgroup ")
            && options.split(',').any(|o| o == "memory"))
        .then(|| mount_point.into())
    })
}

/// The v1 memory cgroup of `pid`, from `/proc/PID/cgroup`.
fn v1_memory_cgroup(pid: u32) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    text.lines()
        .find_map(|line| {
            let mut fields = line.splitn(3, ':');
            let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
            controllers
                .split(',')
                .any(|c| c == "memory")
                .then(|| path.to_owned())
        })
        .unwrap_or_else(|| panic!("no memory line in /proc/{pid}/cgroup:\n{text}"))
}

/// On a hybrid host an app without a memory limit is in a v1
/// memory cgroup of its own, and `appvisor_app_memory_bytes` is that
/// cgroup's count, page cache included: 48 MiB written to the app's
/// private /tmp (a tmpfs, charged to the writer's cgroup, mapped by no
/// process) count. The PSS sum it replaces saw only the interpreter's
/// mapped pages, about 10 MiB.
#[test]
fn memory_of_an_app_without_a_limit_is_its_own_cgroups_count() {
    require_root!();
    let Some(mount) = v1_memory_mount() else {
        appvisor_tests::skip("no v1 memory hierarchy: on cgroup v2 memory.current counts");
        return;
    };
    let user = TestUser::ensure("avt-app1");
    let prefix = Prefix::new();
    let fill = "open('/tmp/fill', 'wb').write(b'x' * (48 << 20)); \
                print('filled', flush=True); \
                import time; time.sleep(3600)";
    appvisor_tests::AppBuilder::new("filler", &user, ["/usr/bin/python3", "-c", fill])
        .directory(prefix.code_dir("filler", &user))
        .readiness(appvisor_tests::Readiness::None)
        .write(&prefix);
    let (daemon, status_port) = start(&prefix);
    daemon.wait_for_state("filler", State::Running, Duration::from_secs(30));
    let pid = daemon.app("filler").pid.expect("a running app has a pid");

    let own = v1_memory_cgroup(pid);
    assert_ne!(
        own,
        v1_memory_cgroup(daemon.pid()),
        "the app is in a memory cgroup of its own"
    );
    assert!(own.ends_with("/filler"), "{own}");
    let usage_file = mount
        .join(own.trim_start_matches('/'))
        .join("memory.usage_in_bytes");
    let usage = || -> f64 {
        std::fs::read_to_string(&usage_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };

    let series = "appvisor_app_memory_bytes{app=\"filler\"}";
    let mut memory = 0.0;
    let filled = poll_until(Duration::from_secs(30), || {
        memory = sample(&get_ok(&daemon, status_port, "/metrics"), series).unwrap_or(0.0);
        memory >= f64::from(48 << 20)
    });
    assert!(
        filled,
        "the 48 MiB in the app's /tmp are not counted: {memory}\n{}",
        daemon.log_tail(20)
    );
    // The same count as the cgroup's own, read around the scrape (the
    // interpreter's few pages may come and go in between).
    let before = usage();
    let memory = must_sample(&get_ok(&daemon, status_port, "/metrics"), series);
    let after = usage();
    let slack = f64::from(1 << 20);
    assert!(
        before.min(after) - slack <= memory && memory <= before.max(after) + slack,
        "/metrics says {memory}, the cgroup {before} then {after}"
    );
}
