//! The symlink deploy, end to end, by an app's owner without root and with
//! real gunicorn: switch `current` to a new release, `appctl restart`, see
//! the release in status and in what the app serves; a release that cannot
//! import makes `restart` exit 1 with the reason and this attempt's log
//! lines, so the deploy script switches back. And the README's own deploy
//! script, run as the owner against the quickstart's own app file, rolls a
//! broken release back by itself.

use std::fs;
use std::os::unix::fs::{lchown, symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use appvisor_tests::daemon::describe_output;
use appvisor_tests::servers::{import_error, Framework, Release, ServedApp, Server};
use appvisor_tests::{
    bins, free_port, http_get, require_root, Daemon, DaemonOptions, Prefix, State, TestUser,
};

/// A release whose settings module is missing: it fails at import, in
/// gunicorn's workers (without --preload, after the arbiter sent READY=1).
const BROKEN_APP: &str = "import shop_settings_that_do_not_exist\n";
const IMPORT_ERROR: &str = "ModuleNotFoundError: No module named 'shop_settings_that_do_not_exist'";

/// `dir/releases/N/FILE`, owned by `owner` like everything a deploy writes.
fn release(dir: &Path, n: u32, file: &str, code: &str, owner: &TestUser) {
    let rel = dir.join("releases").join(n.to_string());
    fs::create_dir_all(&rel).expect("creating a release");
    fs::write(rel.join(file), code).expect("writing the release");
    fs::set_permissions(rel.join(file), fs::Permissions::from_mode(0o644)).expect("chmod");
    for path in [dir.join("releases"), rel.clone(), rel.join(file)] {
        lchown(&path, Some(owner.uid), Some(owner.gid)).expect("chown to the owner");
    }
}

fn body(port: u16) -> String {
    match http_get(port, "/") {
        Ok(r) if r.status == 200 => r.body,
        Ok(r) => format!("status {}: {}", r.status, r.body),
        Err(e) => e.to_string(),
    }
}

/// gunicorn (sync workers, Flask) as docs/readiness.md says to run it: on
/// the held socket, `--chdir` through the symlink, readiness notify with a
/// url; the owner deploys through `current` and restarts as themselves.
#[test]
fn an_owner_switches_releases_and_restarts_without_root() {
    require_root!();
    let app = ServedApp::start(Server::GunicornSync, Framework::Flask, |app| {
        app.backoff(Duration::from_secs(1), Duration::from_secs(5))
    });
    let owner = app.dir.owner();
    let release_dir = |n: u32| app.dir.release_dir(n).display().to_string();
    let first = app.daemon.app(app.name());
    assert_eq!(first.release, Some(release_dir(1)));

    // Release 2: switch, restart, and status shows where current points
    // now; restart returned once release 2 serves.
    app.deploy(2, Release::Good);
    let out = app.daemon.appctl_as(owner, ["restart", app.name()]);
    assert_eq!(out.status.code(), Some(0), "{}", describe_output(&out));
    assert_eq!(
        app.serving_release(),
        Some(2),
        "restart returned before release 2 served"
    );
    let out = app.daemon.appctl_as(owner, ["status", app.name()]);
    assert_eq!(out.status.code(), Some(0), "{}", describe_output(&out));
    let table = String::from_utf8_lossy(&out.stdout);
    let row = table.lines().nth(1).unwrap_or_default();
    assert!(
        row.starts_with(app.name()) && row.ends_with(&release_dir(2)),
        "status as the owner:\n{table}"
    );

    // Release 3 cannot import: gunicorn's arbiter says READY=1 all the
    // same, but its workers never answer, so restart says why, with this
    // attempt's log, and exits 1.
    app.wait_imported(2);
    app.deploy(3, Release::FailsAtImport);
    let out = app
        .daemon
        .appctl_as(owner, ["restart", app.name(), "--timeout", "40s"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("appctl: web did not become ready: "),
        "{stderr}"
    );
    assert!(stderr.contains("last log lines of web:\n"), "{stderr}");
    assert!(stderr.contains(&import_error(3)), "{stderr}");

    // The script switches back and restarts.
    app.dir.switch(2);
    let out = app.daemon.appctl_as(owner, ["restart", app.name()]);
    assert_eq!(out.status.code(), Some(0), "{}", describe_output(&out));
    let status = app.daemon.app(app.name());
    assert_eq!(status.state, State::Running);
    assert_eq!(status.release, Some(release_dir(2)));
    assert_eq!(app.serving_release(), Some(2));
}

/// `link` -> `releases/N`, owned by `owner`.
fn link(dir: &Path, link: &str, n: u32, owner: &TestUser) {
    symlink(format!("releases/{n}"), dir.join(link)).expect("symlink");
    lchown(dir.join(link), Some(owner.uid), Some(owner.gid)).expect("chown the symlink");
}

/// The `sh` block after "An owner's deploy, as alice:" in README.md.
fn readme_deploy_script() -> String {
    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let text =
        fs::read_to_string(&readme).unwrap_or_else(|e| panic!("reading {}: {e}", readme.display()));
    let after = text
        .split_once("An owner's deploy, as alice:")
        .map(|(_, after)| after)
        .expect("README has \"An owner's deploy, as alice:\"");
    let script = after
        .split_once("```sh\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .map(|(script, _)| script)
        .expect("a ```sh block after it");
    script.to_owned()
}

/// The quickstart's app file as `run.sh` writes it (`@PREFIX@`, `@VENV@`,
/// `@USER@`, `@PORT@`), with the test's users and venv, and the owner in
/// `[access] users` as its comment says to.
fn quickstart_app_file(prefix: &Path, port: u16, app_user: &TestUser, owner: &TestUser) -> String {
    let file =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/quickstart/apps.d/hello.toml");
    let text =
        fs::read_to_string(&file).unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
    let replaced = text
        .replace("@VENV@", &bins::venv().display().to_string())
        .replace("@PREFIX@", &prefix.display().to_string())
        .replace("@PORT@", &port.to_string())
        .replace("@USER@", &app_user.name)
        .replace("users = []", &format!("users = [\"{}\"]", owner.name));
    let owner_line = format!("users = [\"{}\"]", owner.name);
    assert!(
        replaced.contains(&owner_line) && !replaced.contains('@'),
        "{} changed: run.sh's placeholders or `users = []` are not what this test fills in:\n{replaced}",
        file.display()
    );
    replaced
}

#[test]
fn the_readme_deploy_script_rolls_back_a_release_that_cannot_import() {
    require_root!();
    let owner = TestUser::ensure("avt-ctl-alice");
    let app_user = TestUser::ensure("avt-app3");
    let prefix = Prefix::new();
    // The quickstart's layout, with its app directory `srv/hello` a
    // symlink to a release, as the README's deploy makes `current`.
    let srv = prefix.path().join("srv");
    fs::create_dir_all(&srv).expect("creating srv");
    fs::set_permissions(&srv, fs::Permissions::from_mode(0o755)).expect("chmod srv");
    lchown(&srv, Some(owner.uid), Some(owner.gid)).expect("chown srv");
    let quickstart_app = fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/quickstart/hello.py"),
    )
    .expect("reading the quickstart's hello.py");
    release(&srv, 41, "hello.py", &quickstart_app, &owner);
    release(&srv, 42, "hello.py", BROKEN_APP, &owner);
    link(&srv, "hello", 41, &owner);
    let port = free_port();
    let app_file = prefix.app_file("hello");
    fs::write(
        &app_file,
        quickstart_app_file(prefix.path(), port, &app_user, &owner),
    )
    .expect("writing the app file");
    let daemon = Daemon::start(&prefix, DaemonOptions::default());
    let first = daemon.wait_for_state("hello", State::Running, Duration::from_secs(30));
    let served = body(port);
    assert!(
        served.starts_with(&format!("hello from {} ", app_user.name)),
        "{served}"
    );

    // The README's script, word for word but for the names: the app is
    // `hello`, its releases live in PREFIX/srv, and `current` is
    // `srv/hello`.
    let script = readme_deploy_script()
        .replace("/srv/shop", &srv.display().to_string())
        .replace("current", "hello")
        .replace(" shop", " hello");
    let bin: PathBuf = daemon
        .public_appctl()
        .parent()
        .expect("appctl's directory")
        .to_owned();
    let out = owner
        .command("/bin/sh")
        .arg("-c")
        .arg(format!("set -x\n{script}"))
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .env("APPVISOR_SOCKET", daemon.socket())
        .output()
        .expect("running the README's deploy script");
    let shown = describe_output(&out);
    assert_eq!(out.status.code(), Some(0), "the deploy script:\n{shown}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("appctl: hello did not become ready: ") && stderr.contains(IMPORT_ERROR),
        "the failed restart does not say why:\n{shown}"
    );
    // It rolled back: release 41 serves again, and status says so.
    let after = daemon.app("hello");
    assert_eq!(after.state, State::Running, "{after:#?}");
    assert_ne!(after.pid, first.pid, "the rollback restarted the app");
    assert_eq!(
        after.release.as_deref(),
        Some(srv.join("releases/41").to_str().expect("utf-8 path")),
    );
    let served = body(port);
    assert!(
        served.starts_with(&format!("hello from {} ", app_user.name)),
        "{served}"
    );
    assert_eq!(
        fs::read_link(srv.join("hello")).expect("reading srv/hello"),
        Path::new("releases/41")
    );
}
