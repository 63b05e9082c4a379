//! Files an app's owner writes never widen its sandbox nor carry
//! another app's secrets. As real users: an owner who made their own venv
//! and writes its `pyvenv.cfg`, an owner who can write the directory of an
//! env file, and an operator reading status.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use appvisor_tests::daemon::describe_output;
use appvisor_tests::testapps::{self, owner_venv, probed, readprobe};
use appvisor_tests::{
    bins, require_root, AppBuilder, Daemon, DaemonOptions, Prefix, State, TestGroup, TestUser,
};

/// What `readprobe` printed in `app`'s log, once it is all there.
fn probe_results(daemon: &Daemon, app: &str) -> Vec<(String, String)> {
    let mut results = None;
    daemon.wait_until(Duration::from_secs(20), &format!("{app}'s probe"), || {
        results = probed(&daemon.app_logs(app, 100, false));
        results.is_some()
    });
    results.expect("checked by wait_until")
}

/// Writes `text` as root's own file, mode `mode`, in root's own directory
/// `PREFIX/secrets`.
fn root_file(prefix: &Prefix, name: &str, text: &str, mode: u32) -> PathBuf {
    let path = prefix.write(&format!("secrets/{name}"), text);
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
    path
}

#[test]
fn an_owner_written_pyvenv_cfg_widens_nothing() {
    require_root!();
    let user = TestUser::ensure("avt-app1");
    let prefix = Prefix::new();
    // The other app's code: readable by Unix permissions (0644, and by the
    // same user), so only the sandbox stands in the way.
    let other = testapps::sleeper("other", &user).directory(prefix.install_app(
        "other",
        &user,
        &["crash.py"],
    ));
    other.write(&prefix);
    let other_code = prefix.code_dir("other", &user).join("crash.py");

    // Two owners' tricks, each in the owner's own venv. CPython takes the
    // first `home` in any case (/usr/bin: Python works); appvisor once took
    // the lowercase one and granted its parent: /proc, or the other app's
    // directory.
    let tricks = [
        ("proc", "HOME = /usr/bin\nhome = /proc/self\n".to_owned()),
        (
            "neighbour",
            format!(
                "HOME = /usr/bin\nhome = {}\n",
                prefix.code_dir("other", &user).join("bin").display()
            ),
        ),
    ];
    for (name, cfg) in &tricks {
        let venv = owner_venv(&prefix, name, &user);
        let written = venv.join("pyvenv.cfg.new");
        user.run(
            "/bin/sh",
            &[
                "-c",
                &format!("printf '%s' \"$1\" > {}", written.display()),
                "sh",
                cfg,
            ],
        );
        user.run(
            "/bin/mv",
            &[
                &written.display().to_string(),
                &venv.join("pyvenv.cfg").display().to_string(),
            ],
        );
        readprobe(
            &prefix,
            name,
            &user,
            &venv.join("bin/python"),
            &[Path::new("/proc/1/cmdline"), &other_code],
        )
        .write(&prefix);
    }

    let daemon = Daemon::start(&prefix, DaemonOptions::default());
    for (name, _) in &tricks {
        daemon.wait_for_state(name, State::Running, Duration::from_secs(20));
        let results = probe_results(&daemon, name);
        // PID 1 is refused by Landlock, or not even there in the app's own
        // procfs (hidepid=invisible); the other app's code by Landlock.
        let refused = |(path, result): &(String, String)| match path.as_str() {
            "/proc/1/cmdline" => result == "err EACCES" || result == "err ENOENT",
            _ => result == "err EACCES",
        };
        assert!(
            results.len() == 2 && results.iter().all(refused),
            "the owner's pyvenv.cfg ({name}) widened the sandbox: {results:?}\n{}",
            daemon.log_tail(40)
        );
        let security = daemon.appctl_ok(["security", name, "--json"]);
        assert!(
            !security.contains("python-home"),
            "nothing was granted from an owner's pyvenv.cfg: {security}"
        );
    }
}

/// An app that prints its environment: what reached it.
fn envdump(prefix: &Prefix, name: &str, user: &TestUser) -> AppBuilder {
    testapps::python(prefix, name, user, "envdump.py", &[])
        .readiness(appvisor_tests::Readiness::Notify)
        .readiness_timeout(Duration::from_secs(20))
}

#[test]
fn an_env_file_an_owner_can_swap_for_another_apps_secret_is_refused() {
    require_root!();
    let owner = TestUser::ensure("avt-app1");
    let vault_user = TestUser::ensure("avt-app2");
    let operator = TestUser::ensure("avt-ctl-alice");
    let prefix = Prefix::new();
    const SECRET: &str = "avt-vault-s3cret-8c1f";

    // The victim: its secret in a root-only env file, in root's directory.
    let vault_env = root_file(&prefix, "vault.env", &format!("SECRET={SECRET}\n"), 0o600);
    envdump(&prefix, "vault", &vault_user)
        .env_file(&vault_env)
        .write(&prefix);
    // The thief, first without env_files; alice operates it.
    let access = format!("[access]\nusers = [\"{}\"]", operator.name);
    let thief = envdump(&prefix, "thief", &owner).extra_toml(&access);
    thief.write(&prefix);
    let daemon = Daemon::start(&prefix, DaemonOptions::default());
    daemon.wait_for_state("vault", State::Running, Duration::from_secs(20));
    let running = daemon.wait_for_state("thief", State::Running, Duration::from_secs(20));

    // CM names an env file in a directory the owner may write: the owner
    // could swap it at will. check refuses it, and so does the daemon.
    let owner_dir = prefix.code_dir("thief", &owner);
    let owner_env = owner_dir.join("app.env");
    owner.run(
        "/bin/sh",
        &["-c", &format!("echo GREETING=hi > {}", owner_env.display())],
    );
    let app_file = thief.clone().env_file(&owner_env).write(&prefix);
    let check = daemon.appctl([
        "check",
        "--config",
        &daemon.config_path().display().to_string(),
        &app_file.display().to_string(),
    ]);
    let refusal = format!(
        "{} is owned by uid {}, not root",
        owner_dir.display(),
        owner.uid
    );
    assert_eq!(check.status.code(), Some(2), "{}", describe_output(&check));
    assert!(
        String::from_utf8_lossy(&check.stdout).contains(&refusal),
        "check names the directory at fault\n{}",
        describe_output(&check)
    );

    // The owner swaps it for a link to the vault's secrets; the update that
    // follows refuses it, and the last valid version keeps running.
    let link = owner_dir.join("app.env.new");
    owner.run(
        "/bin/ln",
        &[
            "-s",
            &vault_env.display().to_string(),
            &link.display().to_string(),
        ],
    );
    owner.run(
        "/bin/mv",
        &[
            "-T",
            &link.display().to_string(),
            &owner_env.display().to_string(),
        ],
    );
    let update = daemon.appctl(["update"]);
    // A root-owned directory holding a link is no better: links are never
    // followed, wherever they are.
    let root_link = prefix.path().join("secrets/thief.env");
    std::os::unix::fs::symlink(&vault_env, &root_link).expect("symlink");
    thief.clone().env_file(&root_link).write(&prefix);
    let second = daemon.appctl(["update"]);

    let status = daemon.appctl_as(&operator, ["status", "--json"]);
    assert!(status.status.code().is_some_and(|c| c == 0 || c == 3));
    let after = daemon.app("thief");
    assert_eq!(
        after.pid, running.pid,
        "the last valid version kept running"
    );
    let config_error = after.config_error.clone().unwrap_or_default();
    assert!(
        config_error.contains(&format!(
            "cannot use env file {}: it is a symbolic link, which is never followed here",
            root_link.display()
        )),
        "status says why: {config_error}"
    );

    // The secret reached no one: not the thief (restarted by its operator
    // on its last valid version), not its operator, not the admin, not the
    // daemon's log.
    let restart = daemon.appctl_as(&operator, ["restart", "thief"]);
    assert!(restart.status.success(), "{}", describe_output(&restart));
    let mut env = None;
    daemon.wait_until(Duration::from_secs(20), "thief's environment", || {
        env = testapps::dumped_env(&daemon.app_logs("thief", 200, false));
        env.is_some()
    });
    let env = env.expect("checked by wait_until");
    assert!(
        !env.iter().any(|(k, _)| k == "SECRET" || k == "GREETING"),
        "{env:?}"
    );
    for (what, text) in [
        (
            "the first update",
            String::from_utf8_lossy(&update.stdout).into_owned(),
        ),
        (
            "the second update",
            String::from_utf8_lossy(&second.stdout).into_owned(),
        ),
        (
            "the operator's status",
            String::from_utf8_lossy(&status.stdout).into_owned(),
        ),
        ("the thief's output", daemon.app_logs("thief", 200, false)),
        ("the daemon log", daemon.log()),
    ] {
        assert!(
            !text.contains(SECRET),
            "{what} shows the vault's secret:\n{text}"
        );
    }
    // The vault itself still has it.
    let vault_env_seen = testapps::dumped_env(&daemon.app_logs("vault", 200, false))
        .expect("vault printed its environment");
    assert!(vault_env_seen.contains(&("SECRET".to_owned(), SECRET.to_owned())));
}

#[test]
fn an_env_file_that_does_not_parse_shows_no_line_of_it_to_an_operator() {
    require_root!();
    let user = TestUser::ensure("avt-app1");
    let operator = TestUser::ensure("avt-ctl-alice");
    let prefix = Prefix::new();
    let env = root_file(&prefix, "shop.env", "GOOD=1\n", 0o600);
    envdump(&prefix, "shop", &user)
        .env_file(&env)
        .extra_toml(&format!("[access]\nusers = [\"{}\"]", operator.name))
        .write(&prefix);
    let daemon = Daemon::start(&prefix, DaemonOptions::default());
    daemon.wait_for_state("shop", State::Running, Duration::from_secs(20));

    // Root edits the file badly: every line is an error, and every line
    // holds something only root may read.
    fs::write(
        &env,
        "S3CRET-ONE this line has no equals sign\n\
         S3CRET-TWO=value after a bad name\n\
         export S3CRET THREE=x\n\
         OK=\"S3CRET-FOUR unterminated\n\
         OK2='S3CRET-FIVE\n\
         OK3=\"ok\"S3CRET-SIX\n",
    )
    .expect("writing the env file");
    let update = daemon.appctl(["update"]);
    let status = daemon.appctl_as(&operator, ["status", "--json"]);
    let shown = String::from_utf8_lossy(&status.stdout).into_owned();
    let app = serde_json::from_str::<appvisor_tests::AppList>(&shown)
        .unwrap_or_else(|e| panic!("{e}: {}", describe_output(&status)))
        .apps
        .into_iter()
        .find(|a| a.name == "shop")
        .expect("the operator sees shop");
    let config_error = app.config_error.unwrap_or_default();
    for line in 1..=6 {
        assert!(
            config_error.contains(&format!("{}:{line}:", env.display())),
            "line {line} is named: {config_error}"
        );
    }
    for (what, text) in [
        ("the operator's status", shown.as_str()),
        ("the update", &String::from_utf8_lossy(&update.stdout)),
        ("the daemon log", &daemon.log()),
    ] {
        assert!(
            !text.contains("S3CRET"),
            "{what} shows the env file's text:\n{text}"
        );
    }
}

/// A venv root made for the app, with a `pyvenv.cfg` that is no file.
#[test]
fn a_root_owned_venv_whose_pyvenv_cfg_is_a_fifo_fails_only_its_own_start() {
    require_root!();
    let user = TestUser::ensure("avt-app1");
    let prefix = Prefix::new();
    let venv = prefix.path().join("venvs/shop");
    let out = std::process::Command::new(bins::SYSTEM_PYTHON)
        .args(["-m", "venv", "--without-pip"])
        .arg(&venv)
        .output()
        .expect("python3 -m venv");
    assert!(out.status.success(), "{}", describe_output(&out));
    fs::remove_file(venv.join("pyvenv.cfg")).expect("rm pyvenv.cfg");
    nix::unistd::mkfifo(
        &venv.join("pyvenv.cfg"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .expect("mkfifo");
    readprobe(&prefix, "shop", &user, &venv.join("bin/python"), &[])
        .backoff(Duration::from_secs(5), Duration::from_secs(5))
        .write(&prefix);
    let daemon = Daemon::start(&prefix, DaemonOptions::default());
    let status = daemon.wait_for_state("shop", State::Backoff, Duration::from_secs(10));
    assert!(
        status.reason.contains(&format!(
            "spawn failed at pyvenv.cfg: {} is a FIFO, not a regular file",
            venv.join("pyvenv.cfg").display()
        )),
        "{}",
        status.reason
    );
}

/// (mode, uid, gid) of `path`, not following a link.
fn file_state(path: &Path) -> (u32, u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::symlink_metadata(path).expect("stat");
    (meta.mode() & 0o7777, meta.uid(), meta.gid())
}

/// A `[[listen]]` Unix socket in a directory the app's owner may write (a
/// `run` directory of the app's user). The owner replaces the socket file
/// by a link to a root-only file; root then moves the app to another
/// group, so the daemon chowns and chmods the socket it kept. It once did
/// so by path and made the link's target 0660; now the file must still be
/// the socket it bound: the start fails saying so, and the root file keeps
/// its mode and owner.
#[test]
fn a_listen_socket_replaced_by_a_link_never_chmods_what_it_leads_to() {
    require_root!();
    let user = TestUser::ensure("avt-app1");
    TestGroup::ensure("avt-grp");
    let prefix = Prefix::new();
    let run = prefix.code_dir("shop", &user).join("run");
    user.run("/bin/mkdir", &[&run]);
    let socket = run.join("http.sock");
    let secret = root_file(&prefix, "secret", "SECRET=1\n", 0o600);
    let app = testapps::sleeper("shop", &user)
        .listen(&format!("unix:{}", socket.display()), Some("http"))
        .max_retries(1);
    app.clone().write(&prefix);
    let daemon = Daemon::start(&prefix, DaemonOptions::default());
    daemon.wait_for_state("shop", State::Running, Duration::from_secs(20));
    assert_eq!(file_state(&socket), (0o660, user.uid, user.gid));

    user.run(
        "/bin/ln",
        &[
            "-sfn",
            &secret.display().to_string(),
            &socket.display().to_string(),
        ],
    );
    app.group("avt-grp").write(&prefix);
    daemon.appctl_ok(["update"]);
    let says = format!(
        "{} is not the socket appvisord bound any more",
        socket.display()
    );
    daemon.wait_until(Duration::from_secs(20), "the start refused", || {
        daemon.app("shop").reason.contains(&says)
    });
    assert_eq!(
        file_state(&secret),
        (0o600, 0, 0),
        "the daemon changed the file the owner's link led to"
    );
    assert_eq!(fs::read_link(&socket).unwrap(), secret);
}

/// Holds a Unix socket at `path` that listens and never accepts, its
/// backlog full, as `user`; killed on drop.
struct FullBacklog(std::process::Child);

impl FullBacklog {
    fn hold(user: &TestUser, path: &Path) -> FullBacklog {
        use std::io::{BufRead, BufReader};
        const SCRIPT: &str = r#"
import socket, sys, time
listener = socket.socket(socket.AF_UNIX)
listener.bind(sys.argv[1])
listener.listen(0)
clients = []
while True:
    client = socket.socket(socket.AF_UNIX)
    client.setblocking(False)
    try:
        client.connect(sys.argv[1])
    except BlockingIOError:
        break
    clients.append(client)
print("full", flush=True)
time.sleep(3600)
"#;
        let mut child = user
            .command("/usr/bin/python3")
            .args(["-c", SCRIPT])
            .arg(path)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped"))
            .read_line(&mut line)
            .expect("read");
        assert_eq!(line.trim(), "full", "the owner's listener did not fill up");
        FullBacklog(child)
    }
}

impl Drop for FullBacklog {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The app's owner puts a socket that listens and never accepts, its
/// backlog full, at the app's `[[listen]]` path. The daemon once asked
/// whether anyone listens there with a blocking connect, which never
/// returned: now the start fails at once saying the address is in use,
/// the daemon serves on, and once the owner's socket is gone the next
/// start replaces the stale file.
#[test]
fn a_listener_that_never_accepts_at_the_listen_path_fails_only_its_start() {
    require_root!();
    let user = TestUser::ensure("avt-app1");
    let prefix = Prefix::new();
    let run = prefix.code_dir("shop", &user).join("run");
    user.run("/bin/mkdir", &[&run]);
    let socket = run.join("http.sock");
    let hog = FullBacklog::hold(&user, &socket);
    testapps::sleeper("shop", &user)
        .listen(&format!("unix:{}", socket.display()), Some("http"))
        .max_retries(1)
        .write(&prefix);
    testapps::sleeper("blog", &user).write(&prefix);
    let daemon = Daemon::start(&prefix, DaemonOptions::default());
    daemon.wait_for_state("blog", State::Running, Duration::from_secs(20));
    let status = daemon.wait_for_state("shop", State::Fatal, Duration::from_secs(20));
    assert!(
        status.reason.contains(&format!(
            "listen unix:{}: address already in use",
            socket.display()
        )),
        "{}",
        status.reason
    );
    // Answered (exit 3: an app is not running), the neighbour untouched.
    let out = daemon.appctl(["status"]);
    assert_eq!(out.status.code(), Some(3), "{}", describe_output(&out));
    assert_eq!(daemon.app("blog").state, State::Running);

    drop(hog);
    daemon.appctl_ok(["start", "shop"]);
    daemon.wait_for_state("shop", State::Running, Duration::from_secs(20));
    assert_eq!(file_state(&socket), (0o660, user.uid, user.gid));
}
