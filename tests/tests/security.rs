//! Every app is confined, against its own owner too, and
//! host maintenance never breaks it. A hostile app (tests/apps/hostile.py,
//! under real gunicorn) attacks its sandbox next to a second app run by the
//! same user, so each refusal is the sandbox's doing and not plain Unix
//! permissions; each attack must fail with the expected errno.

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use appvisor_tests::testapps::{gunicorn, owner_venv, owner_venv_copied, python};
use appvisor_tests::{
    bins, free_port, http_get, poll_until, require_root, AppBuilder, Daemon, DaemonOptions, Prefix,
    Readiness, RestartPolicy, State, TestUser,
};

/// The hostile app under gunicorn on `port`, with the default sandbox
/// except the port it binds itself.
fn hostile(prefix: &Prefix, user: &TestUser, port: u16) -> AppBuilder {
    hostile_app(prefix, "hostile", user, port, 1)
}

/// hostile.py as app `name`, with `workers` gunicorn workers.
fn hostile_app(
    prefix: &Prefix,
    name: &str,
    user: &TestUser,
    port: u16,
    workers: u32,
) -> AppBuilder {
    let dir = prefix.install_app(name, user, &["hostile.py"]);
    AppBuilder::new(
        name,
        user,
        [
            bins::gunicorn().display().to_string(),
            "--bind".to_owned(),
            format!("127.0.0.1:{port}"),
            "--workers".to_owned(),
            workers.to_string(),
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
    // Only a test build reads the cap (supervisor's test-landlock-abi-cap
    // feature, which `cargo test --workspace` turns on).
    daemon.wait_until(
        Duration::from_secs(5),
        "the daemon to log its Landlock ABI cap (a daemon built without the \
         test-landlock-abi-cap feature ignores APPVISOR_LANDLOCK_ABI_MAX: build it with \
         `cargo test --workspace`)",
        || daemon.log().contains("Landlock ABI capped: a test build"),
    );

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

fn security_of(daemon: &Daemon, app: &str) -> appvisor_protocol::AppSecurity {
    let out = daemon.appctl_ok(["security", app, "--json"]);
    let mut reports: Vec<appvisor_protocol::AppSecurity> =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    reports.remove(0)
}

fn check<'a>(
    security: &'a appvisor_protocol::AppSecurity,
    id: &str,
) -> &'a appvisor_protocol::SecurityCheck {
    security
        .checks
        .iter()
        .find(|c| c.id == id)
        .unwrap_or_else(|| panic!("no check {id} in {:?}", security.checks))
}

/// Replaces `path` the way a DHCP client or resolvconf does, with identical
/// content, owner and mode: a new file renamed over it. A symlink is
/// replaced by an identical symlink.
fn replace_by_rename(path: &Path) {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::symlink_metadata(path).unwrap();
    let new = path.with_extension(format!("avt-{}", std::process::id()));
    if meta.file_type().is_symlink() {
        std::os::unix::fs::symlink(fs::read_link(path).unwrap(), &new).unwrap();
    } else {
        fs::write(&new, fs::read(path).unwrap()).unwrap();
        fs::set_permissions(&new, meta.permissions()).unwrap();
        std::os::unix::fs::chown(&new, Some(meta.uid()), Some(meta.gid())).unwrap();
    }
    fs::rename(&new, path).unwrap();
}

/// What a running app must still do after each piece of host maintenance.
fn still_resolves(port: u16, user: &TestUser, after: &str) -> Vec<String> {
    let cases = [
        ("/user", format!("ok {}", user.name)),
        ("/host?name=localhost", "ok 127.0.0.1".to_owned()),
        ("/read?path=%2Fetc%2Fpasswd", "ok".to_owned()),
        ("/read?path=%2Fetc%2Fgroup", "ok".to_owned()),
        ("/read?path=%2Fetc%2Fld.so.cache", "ok".to_owned()),
        ("/read?path=%2Fetc%2Fresolv.conf", "ok".to_owned()),
        ("/read?path=%2Fetc%2Fshadow", "err EACCES".to_owned()),
    ];
    cases
        .iter()
        .filter_map(|(path, want)| {
            let got = ask(port, path);
            (got != *want)
                .then(|| format!("after {after}: GET {path} answered {got:?}, want {want:?}"))
        })
        .collect()
}

#[test]
fn host_maintenance_never_breaks_running_apps() {
    require_root!();
    let user = TestUser::ensure("avt-app1");
    let prefix = Prefix::new();
    let port = free_port();
    hostile(&prefix, &user, port).write(&prefix);
    let daemon = Daemon::start(&prefix, DaemonOptions::default());
    let pid = daemon
        .wait_for_state("hostile", State::Running, Duration::from_secs(30))
        .pid;
    let mut failures = still_resolves(port, &user, "start");

    // useradd renames new passwd, group, shadow and gshadow files into
    // place; the running app reads the new user at once.
    let throwaway = format!("avt-maint-{}", std::process::id() % 100_000);
    appvisor_tests::users::with_throwaway_user(&throwaway, |new| {
        let got = ask(port, &format!("/user?name={throwaway}"));
        if got != format!("ok {}", new.uid) {
            failures.push(format!("the app does not see the new user: {got:?}"));
        }
        failures.extend(still_resolves(port, &user, "useradd"));
    });
    failures.extend(still_resolves(port, &user, "userdel"));

    let ldconfig = std::process::Command::new("ldconfig").status().unwrap();
    assert!(ldconfig.success(), "ldconfig: {ldconfig}");
    failures.extend(still_resolves(port, &user, "ldconfig"));

    replace_by_rename(Path::new("/etc/resolv.conf"));
    replace_by_rename(Path::new("/etc/hosts"));
    failures.extend(still_resolves(
        port,
        &user,
        "replacing resolv.conf and hosts",
    ));

    assert!(
        failures.is_empty(),
        "host maintenance broke the running app:\n{}\n{}",
        failures.join("\n"),
        daemon.log_tail(20)
    );
    assert_eq!(daemon.app("hostile").pid, pid, "the app never restarted");
}

#[test]
fn every_worker_reads_its_own_proc_and_sees_no_other_app() {
    require_root!();
    let user = TestUser::ensure("avt-app1");
    let stranger = TestUser::ensure("avt-app2");
    let prefix = Prefix::new();
    let (port, same_user_port, other_port) = (free_port(), free_port(), free_port());
    hostile_app(&prefix, "hostile", &user, port, 2).write(&prefix);
    gunicorn(&prefix, "neighbour", &user, same_user_port).write(&prefix);
    gunicorn(&prefix, "stranger", &stranger, other_port).write(&prefix);
    let daemon = Daemon::start(&prefix, DaemonOptions::default());
    let arbiter = daemon
        .wait_for_state("hostile", State::Running, Duration::from_secs(30))
        .pid
        .unwrap();
    let neighbour = daemon
        .wait_for_state("neighbour", State::Running, Duration::from_secs(30))
        .pid
        .unwrap();
    let stranger = daemon
        .wait_for_state("stranger", State::Running, Duration::from_secs(30))
        .pid
        .unwrap();

    // Ask until both workers have answered.
    let mut seen = std::collections::BTreeMap::new();
    let answered = poll_until(Duration::from_secs(20), || {
        let body = ask(port, "/proc");
        let field = |key: &str| {
            body.split(' ')
                .find_map(|f| f.strip_prefix(&format!("{key}=")))
                .unwrap_or_default()
                .to_owned()
        };
        seen.insert(field("pid"), (field("uids"), field("pids"), body.clone()));
        seen.len() >= 2
    });
    assert!(answered, "only one worker answered: {seen:?}");
    for (worker, (uids, pids, body)) in &seen {
        assert!(body.starts_with("ok "), "worker {worker}: {body}");
        assert_eq!(
            *uids,
            user.uid.to_string(),
            "worker {worker} sees other uids: {body}"
        );
        let pids: Vec<u32> = pids.split(',').map(|p| p.parse().unwrap()).collect();
        assert!(
            pids.contains(&arbiter),
            "worker {worker} cannot see its arbiter: {body}"
        );
        for (who, pid) in [
            ("the same user's other app", neighbour),
            ("another user's app", stranger),
            ("the daemon", daemon.pid()),
        ] {
            assert!(
                !pids.contains(&pid),
                "worker {worker} sees {who} ({pid}): {body}"
            );
        }
    }
    let security = security_of(&daemon, "hostile");
    assert!(security.private_proc);
    assert!(check(&security, "private-proc").passed);
}

#[test]
fn a_directory_symlinked_out_of_its_owners_directory_is_refused_and_scored() {
    require_root!();
    let user = TestUser::ensure("avt-app1");
    let prefix = Prefix::new();
    let code = prefix.code_dir("trick", &user);
    let release = code.join("releases/1");
    fs::create_dir_all(&release).unwrap();
    for dir in [code.join("releases"), release.clone()] {
        std::os::unix::fs::chown(&dir, Some(user.uid), Some(user.gid)).unwrap();
    }
    let current = code.join("current");
    // What the owner may do: point `current` anywhere, here at /.
    std::os::unix::fs::symlink("/", &current).unwrap();
    AppBuilder::new("trick", &user, ["/bin/sleep", "infinity"])
        .directory(&current)
        .readiness(Readiness::None)
        .start_secs(Duration::from_millis(300))
        .max_retries(1)
        .write(&prefix);
    let daemon = Daemon::start(&prefix, DaemonOptions::default());
    let refusal = format!(
        "directory {} resolves to /, outside {} (the last directory on its path that only root can change)",
        current.display(),
        code.display()
    );
    daemon.wait_until(Duration::from_secs(20), "trick refused", || {
        daemon.app("trick").reason.contains(&refusal)
    });
    let app = daemon.app("trick");
    assert_eq!(app.pid, None, "{app:?}");
    assert!(
        app.reason
            .starts_with(&format!("spawn failed at paths: {refusal}")),
        "{}",
        app.reason
    );
    let security = security_of(&daemon, "trick");
    assert_eq!(security.refusal.as_deref(), Some(refusal.as_str()));
    let confined = check(&security, "paths-confined");
    assert!(!confined.passed);
    assert_eq!(
        confined.detail.as_deref(),
        Some(format!("the last spawn was refused: {refusal}").as_str())
    );
    let table = daemon.appctl_ok(["security", "trick"]);
    assert!(
        table.contains(&format!("  refused     {refusal}")),
        "{table}"
    );

    // Pointed back inside, the app starts and the score shows where the
    // directory really led.
    fs::remove_file(&current).unwrap();
    std::os::unix::fs::symlink("releases/1", &current).unwrap();
    daemon.appctl_ok(["restart", "trick"]);
    daemon.wait_for_state("trick", State::Running, Duration::from_secs(10));
    let security = security_of(&daemon, "trick");
    assert_eq!(security.refusal, None);
    assert!(check(&security, "paths-confined").passed);
    let directory = security
        .paths
        .iter()
        .find(|p| p.origin == "directory")
        .unwrap();
    assert_eq!(
        directory.resolved.as_deref(),
        Some(release.to_str().unwrap())
    );
}

/// The README's layout as `python3 -m venv` makes it by default, run by
/// its owner: the venv in the owner's directory, its `bin/python` a
/// symlink to Debian's interpreter under /usr. The link leaves the owner's
/// directory, but only for what every app may execute anyway, so it widens
/// nothing and the app starts and serves (it once failed: "command
/// .../venv/bin/python resolves to /usr/bin/python3.11, outside ...").
/// gunicorn comes from the test venv through `PYTHONPATH`.
#[test]
fn an_owners_default_venv_with_a_symlinked_interpreter_starts_and_serves() {
    require_root!();
    let user = TestUser::ensure("avt-app1");
    let prefix = Prefix::new();
    let dir = prefix.install_app("shop", &user, &["wsgi_app.py"]);
    let venv = owner_venv(&prefix, "shop", &user);
    let python = venv.join("bin/python");
    let interpreter = fs::canonicalize(&python).unwrap();
    assert!(
        fs::symlink_metadata(&python).unwrap().is_symlink() && interpreter.starts_with("/usr"),
        "python3 -m venv made {} a link to /usr, not {}",
        python.display(),
        interpreter.display()
    );
    let port = free_port();
    AppBuilder::new(
        "shop",
        &user,
        [
            python.display().to_string(),
            "-m".to_owned(),
            "gunicorn".to_owned(),
            "--bind".to_owned(),
            format!("127.0.0.1:{port}"),
            "--workers".to_owned(),
            "2".to_owned(),
            "wsgi_app:application".to_owned(),
        ],
    )
    .directory(&dir)
    .env(
        "PYTHONPATH",
        &bins::venv_site_packages().display().to_string(),
    )
    .read_only(bins::venv())
    .readiness(Readiness::Notify)
    .readiness_timeout(Duration::from_secs(30))
    .bind_ports(&[port])
    .write(&prefix);
    let daemon = Daemon::start(&prefix, DaemonOptions::default());
    daemon.wait_for_state("shop", State::Running, Duration::from_secs(30));
    let answer = http_get(port, "/").expect("GET / of the owner's venv app");
    assert_eq!(answer.status, 200, "{answer:?}");

    let security = security_of(&daemon, "shop");
    assert_eq!(security.refusal, None);
    assert!(check(&security, "paths-confined").passed);
    let command = security
        .paths
        .iter()
        .find(|p| p.origin == "command")
        .unwrap();
    assert_eq!(
        command.resolved.as_deref(),
        Some(interpreter.to_str().unwrap()),
        "{command:?}"
    );
}

/// An owner's venv whose `bin/python` links into another app's code (that
/// app's own interpreter, a real file, as `--copies` makes it): executing
/// it is not granted by the system rules, so the link would widen the
/// sandbox, and the spawn is refused.
#[test]
fn a_venv_python_linked_into_another_apps_code_is_refused() {
    require_root!();
    let (user, other) = (TestUser::ensure("avt-app1"), TestUser::ensure("avt-app2"));
    let prefix = Prefix::new();
    let theirs = owner_venv_copied(&prefix, "victim", &other).join("bin/python");
    let code = prefix.code_dir("hostile", &user);
    let python = owner_venv(&prefix, "hostile", &user).join("bin/python");
    user.run(
        "/bin/ln",
        &[
            "-sfn",
            &theirs.display().to_string(),
            &python.display().to_string(),
        ],
    );
    AppBuilder::new(
        "hostile",
        &user,
        [
            python.display().to_string(),
            "-c".to_owned(),
            "import time; time.sleep(3600)".to_owned(),
        ],
    )
    .directory(&code)
    .readiness(Readiness::None)
    .start_secs(Duration::from_millis(300))
    .max_retries(1)
    .write(&prefix);
    let daemon = Daemon::start(&prefix, DaemonOptions::default());
    let refusal = format!(
        "command {} resolves to {}, outside {} (the last directory on its path that only root can change)",
        python.display(),
        theirs.display(),
        code.display()
    );
    daemon.wait_until(Duration::from_secs(20), "hostile refused", || {
        daemon.app("hostile").reason.contains(&refusal)
    });
    let app = daemon.app("hostile");
    assert_eq!(app.pid, None, "{app:?}");
    assert!(
        app.reason
            .starts_with(&format!("spawn failed at paths: {refusal}")),
        "{}",
        app.reason
    );
    let security = security_of(&daemon, "hostile");
    assert_eq!(security.refusal.as_deref(), Some(refusal.as_str()));
    assert!(!check(&security, "paths-confined").passed);
}

#[test]
fn keyring_abstract_sockets_syscalls_and_socket_families_are_the_apps_own() {
    require_root!();
    let user = TestUser::ensure("avt-app1");
    let prefix = Prefix::new();
    let (port, neighbour_port) = (free_port(), free_port());
    hostile(&prefix, &user, port).write(&prefix);
    hostile_app(&prefix, "neighbour", &user, neighbour_port, 1).write(&prefix);
    let daemon = Daemon::start(&prefix, DaemonOptions::default());
    daemon.wait_for_state("hostile", State::Running, Duration::from_secs(30));
    daemon.wait_for_state("neighbour", State::Running, Duration::from_secs(30));

    let key = format!("avt-key-{}", std::process::id());
    let own = ask(port, "/keyring");
    let theirs = ask(neighbour_port, "/keyring");
    assert!(
        own.starts_with("ok ") && theirs.starts_with("ok "),
        "{own} {theirs}"
    );
    assert_ne!(own, theirs, "both apps share a session keyring");
    assert!(ask(neighbour_port, &format!("/key_add?name={key}")).starts_with("ok "));
    assert!(ask(neighbour_port, &format!("/key_find?name={key}")).starts_with("ok "));

    let name = format!("avt-abstract-{}", std::process::id());
    assert_eq!(
        ask(neighbour_port, &format!("/abstract_listen?name={name}")),
        "ok"
    );
    assert_eq!(
        ask(neighbour_port, &format!("/abstract_connect?name={name}")),
        "ok"
    );

    let cases: Vec<(&str, String, &str)> = vec![
        (
            "find the neighbour's key",
            format!("/key_find?name={key}"),
            "err ENOKEY",
        ),
        (
            "connect to the neighbour's abstract socket",
            format!("/abstract_connect?name={name}"),
            "err EPERM",
        ),
        (
            "io_uring_setup",
            "/sys?name=io_uring_setup".into(),
            "err ENOSYS",
        ),
        ("bpf", "/sys?name=bpf".into(), "err EPERM"),
        (
            "unshare a user namespace",
            "/sys?name=unshare".into(),
            "err EPERM",
        ),
        ("ptrace", "/sys?name=ptrace".into(), "err EPERM"),
        (
            "an AF_NETLINK socket",
            "/socket?family=16".into(),
            "err EAFNOSUPPORT",
        ),
        (
            "an AF_PACKET socket",
            "/socket?family=17".into(),
            "err EAFNOSUPPORT",
        ),
        (
            "an AF_ALG socket",
            "/socket?family=38&type=5".into(),
            "err EAFNOSUPPORT",
        ),
        ("a UDP socket", "/socket?family=2&type=2".into(), "ok"),
    ];
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|(attack, path, want)| {
            let got = ask(port, path);
            (got != *want).then(|| format!("{attack}: GET {path} answered {got:?}, want {want:?}"))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "not refused as expected:\n{}",
        failures.join("\n")
    );

    let security = security_of(&daemon, "hostile");
    assert!(security.session_keyring);
    let seccomp = security.seccomp.as_ref().expect("a seccomp filter");
    assert_eq!(seccomp.socket_families, ["AF_UNIX", "AF_INET", "AF_INET6"]);
    for name in [
        "io_uring_setup",
        "bpf",
        "ptrace",
        "unshare (namespace flags)",
    ] {
        assert!(
            seccomp.refused.iter().any(|r| r == name),
            "{name}: {seccomp:?}"
        );
    }
    for id in ["seccomp", "session-keyring"] {
        assert!(check(&security, id).passed, "{id}");
    }
    // Landlock has no UDP rules and scopes only connecting to abstract
    // sockets: with the host's network, the score says so.
    for id in ["udp-confined", "abstract-unix-confined"] {
        assert!(!check(&security, id).passed, "{id}");
    }
}
