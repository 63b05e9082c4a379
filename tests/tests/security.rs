//! Issue 4: every app is confined. A hostile app (tests/apps/hostile.py,
//! under real gunicorn) attacks its sandbox next to a second app run by the
//! same user, so each refusal is the sandbox's doing and not plain Unix
//! permissions; each attack must fail with the expected errno.

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use appvisor_tests::testapps::{gunicorn, python};
use appvisor_tests::{
    bins, free_port, http_get, poll_until, require_root, AppBuilder, Daemon, DaemonOptions, Prefix,
    Readiness, RestartPolicy, State, TestUser,
};

/// The hostile app under gunicorn on `port`, with the default sandbox
/// except the port it binds itself and `extra`.
fn hostile(prefix: &Prefix, user: &TestUser, port: u16) -> AppBuilder {
    let dir = prefix.install_app("hostile", user, &["hostile.py"]);
    AppBuilder::new(
        "hostile",
        user,
        [
            bins::gunicorn().display().to_string(),
            "--bind".to_owned(),
            format!("127.0.0.1:{port}"),
            "--workers".to_owned(),
            "1".to_owned(),
            "hostile:application".to_owned(),
        ],
    )
    .directory(&dir)
    .readiness(Readiness::Notify)
    .readiness_timeout(Duration::from_secs(30))
    .bind_ports(&[port])
}

/// GET `path` until gunicorn's worker answers, then its body.
fn ask(port: u16, path: &str) -> String {
    let mut last = None;
    let answered = poll_until(Duration::from_secs(15), || {
        last = Some(http_get(port, path));
        matches!(&last, Some(Ok(r)) if r.status == 200)
    });
    assert!(answered, "GET {path} on 127.0.0.1:{port}: {last:?}");
    last.unwrap().unwrap().body.trim().to_owned()
}

fn q(path: &Path) -> String {
    path.display().to_string().replace('/', "%2F")
}

/// A setuid-root copy of `/usr/bin/id` under `/usr/local/bin` (where the
/// default sandbox allows execution), removed on drop.
struct SetuidId(PathBuf);

impl SetuidId {
    fn install() -> SetuidId {
        let path = PathBuf::from(format!(
            "/usr/local/bin/avt-setuid-id-{}",
            std::process::id()
        ));
        fs::copy("/usr/bin/id", &path).expect("copying /usr/bin/id");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o4755)).expect("chmod 4755");
        SetuidId(path)
    }
}

impl Drop for SetuidId {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

#[test]
fn hostile_app_is_refused_every_attack_under_the_default_sandbox() {
    require_root!();
    let user = TestUser::ensure("avt-app1");
    let prefix = Prefix::new();
    let (port, other_port) = (free_port(), free_port());
    let setuid = SetuidId::install();
    // A port that listens but is not in connect_ports.
    let forbidden = TcpListener::bind("127.0.0.1:0").unwrap();
    let forbidden_port = forbidden.local_addr().unwrap().port();

    gunicorn(&prefix, "other", &user, other_port).write(&prefix);
    hostile(&prefix, &user, port)
        .sandbox("connect_ports", &format!("[{other_port}]"))
        .limit("tasks", "32")
        .write(&prefix);
    let daemon = Daemon::start(&prefix, DaemonOptions::default());
    let other = daemon.wait_for_state("other", State::Running, Duration::from_secs(30));
    daemon.wait_for_state("hostile", State::Running, Duration::from_secs(30));
    assert_eq!(ask(other_port, "/health"), "ok");
    let other_pid = other.pid.expect("running app has a pid");

    let own_dir = prefix.code_dir("hostile", &user);
    let other_dir = prefix.code_dir("other", &user);
    let other_logs = prefix.app_log_dir("other");
    let tmp_name = format!("avt-hostile-{}", std::process::id());
    let cases: Vec<(&str, String, String)> = vec![
        (
            "read /etc/shadow",
            format!("/read?path={}", q(Path::new("/etc/shadow"))),
            "err EACCES".into(),
        ),
        (
            "read the other app's code",
            format!("/read?path={}", q(&other_dir.join("wsgi_app.py"))),
            "err EACCES".into(),
        ),
        (
            "list the other app's directory",
            format!("/list?path={}", q(&other_dir)),
            "err EACCES".into(),
        ),
        (
            "list the other app's logs",
            format!("/list?path={}", q(&other_logs)),
            "err EACCES".into(),
        ),
        (
            "write into its own directory",
            format!("/write?path={}", q(&own_dir.join("evil.py"))),
            "err EACCES".into(),
        ),
        (
            "write into its venv",
            format!("/write?path={}", q(&bins::venv().join("evil.py"))),
            "err EACCES".into(),
        ),
        (
            "write its private /tmp",
            format!("/write?path={}", q(&Path::new("/tmp").join(&tmp_name))),
            "ok".into(),
        ),
        (
            "bind TCP 9999",
            "/bind?port=9999".into(),
            "err EACCES".into(),
        ),
        (
            "connect to a port not in connect_ports",
            format!("/connect?port={forbidden_port}"),
            "err EACCES".into(),
        ),
        (
            "connect to a port in connect_ports",
            format!("/connect?port={other_port}"),
            "ok".into(),
        ),
        (
            "signal the other app",
            format!("/kill?pid={other_pid}&sig=0"),
            "err EPERM".into(),
        ),
        (
            "signal the daemon",
            format!("/kill?pid={}&sig=0", daemon.pid()),
            "err EPERM".into(),
        ),
        (
            "fork past tasks",
            "/fork?max=200".into(),
            "err EAGAIN".into(),
        ),
    ];
    let mut failures = Vec::new();
    for (attack, path, want) in &cases {
        let got = ask(port, path);
        // The fork answer carries how many forks succeeded.
        let matches = if *attack == "fork past tasks" {
            got.starts_with(want.as_str())
        } else {
            got == *want
        };
        if !matches {
            failures.push(format!(
                "{attack}: GET {path} answered {got:?}, want {want:?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "attacks not refused as expected:\n{}\n{}",
        failures.join("\n"),
        daemon.log_tail(40)
    );
    assert!(
        !Path::new("/tmp").join(&tmp_name).exists(),
        "the app's /tmp is private"
    );
    assert!(!own_dir.join("evil.py").exists());

    // no_new_privs: the setuid-root binary runs, but gains nothing.
    let id = ask(port, &format!("/exec?path={}", q(&setuid.0)));
    assert!(
        id.starts_with(&format!("ok uid={}(", user.uid)) && !id.contains("euid=0"),
        "setuid root binary ran with {id:?}"
    );

    // The neighbour never noticed.
    assert_eq!(ask(other_port, "/health"), "ok");
    assert_eq!(daemon.app("other").pid, Some(other_pid));
    drop(forbidden);
}

#[test]
fn memory_hog_is_killed_by_its_limit_while_the_other_app_keeps_serving() {
    require_root!();
    let user = TestUser::ensure("avt-app1");
    let prefix = Prefix::new();
    let other_port = free_port();
    gunicorn(&prefix, "other", &user, other_port).write(&prefix);
    python(&prefix, "hog", &user, "hog.py", &[])
        .limit("memory", "\"64MiB\"")
        .restart_policy(RestartPolicy::OnFailure)
        .backoff(Duration::from_millis(200), Duration::from_secs(1))
        .write(&prefix);
    let daemon = Daemon::start(&prefix, DaemonOptions::default());
    let other = daemon.wait_for_state("other", State::Running, Duration::from_secs(30));

    let mut last = None;
    let reported = poll_until(Duration::from_secs(30), || {
        let hog = daemon.app("hog");
        let seen = hog.reason.contains("killed: memory limit 64MiB reached");
        last = Some(hog);
        seen
    });
    assert!(
        reported,
        "hog's reason never named its memory limit: {last:#?}\n{}",
        daemon.log_tail(30)
    );
    // Restarted by its policy: it spawns again and is killed again.
    let restarts = daemon.app("hog").restarts;
    daemon.wait_until(Duration::from_secs(20), "hog restarted", || {
        daemon.app("hog").restarts > restarts
    });
    assert_eq!(ask(other_port, "/health"), "ok");
    assert_eq!(daemon.app("other").pid, other.pid);
}

#[test]
fn landlock_abi_capped_below_the_rules_refuses_require_and_reports_best_effort() {
    require_root!();
    let user = TestUser::ensure("avt-app1");
    let prefix = Prefix::new();
    let port = free_port();
    hostile(&prefix, &user, port)
        .sandbox("landlock", "\"best-effort\"")
        .write(&prefix);
    AppBuilder::new("strict", &user, ["/bin/sleep", "infinity"])
        .readiness(Readiness::None)
        .start_secs(Duration::from_millis(500))
        .write(&prefix);
    let options = DaemonOptions {
        env: vec![("APPVISOR_LANDLOCK_ABI_MAX".into(), "3".into())],
        ..DaemonOptions::default()
    };
    let daemon = Daemon::start(&prefix, options);

    let refusal = "spawn failed at landlock: kernel Landlock ABI 3 (capped by \
                   APPVISOR_LANDLOCK_ABI_MAX) cannot enforce bind_ports (needs ABI 4), \
                   device ioctl (needs ABI 5), signal scope (needs ABI 6), abstract unix \
                   socket scope (needs ABI 6)";
    daemon.wait_until(Duration::from_secs(20), "strict refused", || {
        daemon.app("strict").reason.starts_with(refusal)
    });
    assert_eq!(daemon.app("strict").pid, None);

    daemon.wait_for_state("hostile", State::Running, Duration::from_secs(30));
    // ABI 3 still enforces the file system rules, not the network ones.
    assert_eq!(ask(port, "/read?path=%2Fetc%2Fshadow"), "err EACCES");
    assert_eq!(ask(port, "/bind?port=9999"), "ok");

    let out = daemon.appctl_ok(["security", "hostile", "--json"]);
    let reports: Vec<appvisor_protocol::AppSecurity> =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let landlock = &reports[0].landlock;
    assert_eq!(
        (landlock.status.as_str(), landlock.abi, landlock.reported),
        ("partial", 3, true),
        "{out}"
    );
    assert_eq!(
        landlock.not_enforced,
        [
            "bind_ports (needs ABI 4)",
            "device ioctl (needs ABI 5)",
            "signal scope (needs ABI 6)",
            "abstract unix socket scope (needs ABI 6)"
        ]
    );
    let failed: Vec<&str> = reports[0]
        .checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| c.id.as_str())
        .collect();
    assert!(failed.contains(&"landlock-enforced"), "{out}");

    let table = daemon.appctl_ok(["security", "strict"]);
    assert!(
        table.contains("landlock    refused (require), ABI 3 of kernel's"),
        "{table}"
    );
}

#[test]
fn security_shows_a_tight_app_as_exposure_0() {
    require_root!();
    let user = TestUser::ensure("avt-app1");
    let prefix = Prefix::new();
    AppBuilder::new("tight", &user, ["/bin/sleep", "infinity"])
        .directory(prefix.code_dir("tight", &user))
        .readiness(Readiness::None)
        .sandbox("network", "\"none\"")
        .limit("memory", "\"64MiB\"")
        .limit("tasks", "16")
        .limit("cpu", "\"50%\"")
        .write(&prefix);
    let daemon = Daemon::start(&prefix, DaemonOptions::default());
    daemon.wait_for_state("tight", State::Running, Duration::from_secs(10));
    let out = daemon.appctl_ok(["security", "tight", "--json"]);
    let reports: Vec<appvisor_protocol::AppSecurity> = serde_json::from_str(&out).unwrap();
    let report = &reports[0];
    assert_eq!(report.exposure, 0.0, "{out}");
    assert_eq!(report.landlock.status, "full");
    assert_eq!(report.namespaces, ["mount", "ipc", "uts", "network"]);
    let table = daemon.appctl_ok(["security", "tight"]);
    assert!(table.starts_with("tight: exposure 0.0/10\n"), "{table}");
}
