//! The owner's deploy with real app servers: switch `current` to a
//! release, `appctl restart` (or `reload`), roll back on a non-zero exit.
//! A release that cannot import its app makes the action exit 1 with the
//! import error, never replaces a working instance, and while it fails the
//! working instance serves every request; a good release is reported done
//! only once it serves.
//!
//! gunicorn (sync workers, no --preload: READY=1 comes before any worker
//! imported the app) and uWSGI (master, two workers, `--http-socket
//! fd://3`), each with `[[listen]]` and readiness notify plus a url, as
//! docs/readiness.md tells users to run them.

use std::fs;
use std::os::unix::fs::{lchown, symlink, PermissionsExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use appvisor_tests::daemon::describe_output;
use appvisor_tests::{
    bins, free_port, http_get, require_root, AppBuilder, Daemon, DaemonOptions, Prefix, State,
    TestUser,
};

/// One load test at a time: they measure the machine they share.
static LOAD_LOCK: Mutex<()> = Mutex::new(());

/// A WSGI app that says which release and which process answered.
const GOOD: &str = r#"import os
RELEASE = os.path.basename(os.getcwd())


def application(environ, start_response):
    body = ("release %s pid %d\n" % (RELEASE, os.getpid())).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"#;
/// A release whose settings module is missing: it fails at import.
const BROKEN: &str = "import shop_settings_that_do_not_exist\n";
const IMPORT_ERROR: &str = "No module named 'shop_settings_that_do_not_exist'";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Server {
    Gunicorn,
    Uwsgi,
}

struct Shop {
    dir: PathBuf,
    owner: TestUser,
    port: u16,
}

impl Shop {
    /// `dir/releases/N/hello.py`, owned by the owner.
    fn release(&self, n: u32, code: &str) {
        let rel = self.dir.join("releases").join(n.to_string());
        fs::create_dir_all(&rel).expect("creating a release");
        let file = rel.join("hello.py");
        fs::write(&file, code).expect("writing hello.py");
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).expect("chmod");
        for path in [self.dir.join("releases"), rel, file] {
            lchown(&path, Some(self.owner.uid), Some(self.owner.gid)).expect("chown");
        }
    }

    /// Points `current` at release `n`, atomically.
    fn switch(&self, n: u32) {
        let new = self.dir.join("current.new");
        let _ = fs::remove_file(&new);
        symlink(format!("releases/{n}"), &new).expect("symlink");
        lchown(&new, Some(self.owner.uid), Some(self.owner.gid)).expect("chown");
        fs::rename(&new, self.dir.join("current")).expect("switching current");
    }

    fn get(&self) -> Result<String, String> {
        match http_get(self.port, "/") {
            Ok(r) if r.status == 200 => Ok(r.body),
            Ok(r) => Err(format!("status {}: {}", r.status, r.body)),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// The shop app served by `server` from `dir/current`, release 1 running.
fn shop(prefix: &Prefix, server: Server, strategy: &str) -> (Daemon, Shop) {
    let owner = TestUser::ensure("avt-ctl-alice");
    let app_user = TestUser::ensure("avt-app3");
    let dir = prefix.code_dir("shop", &owner);
    let shop = Shop {
        dir,
        owner,
        port: free_port(),
    };
    shop.release(1, GOOD);
    shop.switch(1);
    let venv = bins::venv();
    // `--chdir` through the symlink: a reload follows `current` to the new
    // release (otherwise the server stays in the directory it started in).
    let current = shop.dir.join("current").display().to_string();
    let command: Vec<String> = match server {
        Server::Gunicorn => vec![
            venv.join("bin/gunicorn").display().to_string(),
            "--chdir".into(),
            current,
            "--workers".into(),
            "2".into(),
            "hello:application".into(),
        ],
        Server::Uwsgi => vec![
            venv.join("bin/uwsgi").display().to_string(),
            "--master".into(),
            "--processes".into(),
            "2".into(),
            "--http-socket".into(),
            "fd://3".into(),
            "--need-app".into(),
            "--chdir".into(),
            current,
            "--wsgi-file".into(),
            "hello.py".into(),
        ],
    };
    AppBuilder::new("shop", &app_user, command)
        .directory(shop.dir.join("current"))
        .listen(&format!("127.0.0.1:{}", shop.port), Some("http"))
        .read_only(&venv)
        .read_only(&shop.dir)
        .extra_toml(&format!(
            "[readiness]\nkind = \"notify\"\nurl = \"http://127.0.0.1:{port}/\"\ntimeout = \"20s\"\n\n\
             [restart]\nstrategy = \"{strategy}\"\nbackoff = {{ initial = \"1s\", max = \"2s\" }}\n\n\
             [access]\nusers = [\"{owner}\"]\n",
            port = shop.port,
            owner = shop.owner.name,
        ))
        .write(prefix);
    let daemon = Daemon::start(prefix, DaemonOptions::default());
    daemon.wait_for_state("shop", State::Running, Duration::from_secs(30));
    let body = shop.get().unwrap_or_else(|e| {
        panic!(
            "release 1 does not serve: {e}\n{}\n{}",
            daemon.app_logs("shop", 30, true),
            daemon.log_tail(30)
        )
    });
    assert!(body.starts_with("release 1 "), "{body}");
    (daemon, shop)
}

/// Sequential requests to `port` until stopped: (requests, failures).
struct Load {
    stop: Arc<AtomicBool>,
    thread: thread::JoinHandle<(u64, Vec<String>)>,
}

impl Load {
    fn start(port: u16) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = thread::spawn(move || {
            let mut requests = 0;
            let mut failures = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(120);
            while !flag.load(Ordering::Relaxed) && Instant::now() < deadline {
                requests += 1;
                match http_get(port, "/") {
                    Ok(r) if r.status == 200 => {}
                    Ok(r) => failures.push(format!("status {}", r.status)),
                    Err(e) => failures.push(e.to_string()),
                }
            }
            (requests, failures)
        });
        Load { stop, thread }
    }

    fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the load thread")
    }
}

/// A broken release makes `restart` exit 1 with the import error and
/// only this attempt's log lines; with start-stop the working instance
/// serves on, without one failed request meanwhile; the owner's rollback
/// then works.
fn broken_release_fails_loudly(server: Server, strategy: &str) {
    require_root!();
    let _one = LOAD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let prefix = Prefix::new();
    let (daemon, shop) = shop(&prefix, server, strategy);
    let before = daemon.app("shop");
    shop.release(2, BROKEN);
    shop.switch(2);
    let load = Load::start(shop.port);
    thread::sleep(Duration::from_millis(300));
    let out = daemon.appctl_as(&shop.owner, ["restart", "shop", "--timeout", "60s"]);
    let (requests, failures) = load.finish();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{server:?} {strategy}: {}",
        describe_output(&out)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("did not become ready") && stderr.contains(IMPORT_ERROR),
        "{server:?} {strategy}: restart does not say why:\n{stderr}"
    );
    // Only this attempt's lines: release 1's start-up is not in them.
    let lines = stderr.split("last log lines of shop:").nth(1).unwrap_or("");
    assert!(
        !lines.contains(&format!("{}", before.pid.unwrap_or(0))) || server == Server::Uwsgi,
        "{server:?} {strategy}: the failure report shows earlier lines:\n{lines}"
    );
    if strategy == "start-stop" {
        assert!(
            failures.is_empty(),
            "{server:?} start-stop: {} of {requests} requests failed during the failed restart: {:?}",
            failures.len(),
            &failures[..failures.len().min(5)]
        );
        let after = daemon.app("shop");
        assert_eq!(
            (after.state, after.pid),
            (State::Running, before.pid),
            "{server:?}: the working instance was not kept: {}",
            after.reason
        );
        let body = shop.get().expect("the old instance serves");
        assert!(body.starts_with("release 1 "), "{body}");
    }
    // The deploy script's rollback.
    shop.switch(1);
    let out = daemon.appctl_as(&shop.owner, ["restart", "shop", "--timeout", "60s"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe_output(&out));
    let body = shop.get().expect("release 1 serves again");
    assert!(body.starts_with("release 1 "), "{body}");
}

#[test]
fn gunicorn_broken_release_fails_restart_stop_start() {
    broken_release_fails_loudly(Server::Gunicorn, "stop-start");
}

#[test]
fn gunicorn_broken_release_fails_restart_and_the_old_instance_serves_on() {
    broken_release_fails_loudly(Server::Gunicorn, "start-stop");
}

#[test]
fn uwsgi_broken_release_fails_restart_stop_start() {
    broken_release_fails_loudly(Server::Uwsgi, "stop-start");
}

#[test]
fn uwsgi_broken_release_fails_restart_and_the_old_instance_serves_on() {
    broken_release_fails_loudly(Server::Uwsgi, "start-stop");
}

/// `reload` exits 0 only once the new code serves, with no failed request
/// under load; a reload into a broken release exits 1 with the workers'
/// output.
fn reload_waits_for_the_new_code(server: Server) {
    require_root!();
    let _one = LOAD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let prefix = Prefix::new();
    let (daemon, shop) = shop(&prefix, server, "stop-start");
    shop.release(2, GOOD);
    shop.switch(2);
    let load = Load::start(shop.port);
    thread::sleep(Duration::from_millis(300));
    let out = daemon.appctl_as(&shop.owner, ["reload", "shop", "--timeout", "60s"]);
    // Right after reload returns, every answer comes from the new code.
    let bodies: Vec<String> = (0..6).map(|_| shop.get().unwrap_or_else(|e| e)).collect();
    thread::sleep(Duration::from_millis(300));
    let (requests, failures) = load.finish();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{server:?}: {}",
        describe_output(&out)
    );
    assert!(
        bodies.iter().all(|b| b.starts_with("release 2 ")),
        "{server:?}: reload returned before the new code served: {bodies:?}"
    );
    assert!(
        failures.is_empty(),
        "{server:?}: {} of {requests} requests failed during the reload: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );

    shop.release(3, BROKEN);
    shop.switch(3);
    let out = daemon.appctl_as(&shop.owner, ["reload", "shop", "--timeout", "30s"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{server:?}: {}",
        describe_output(&out)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(IMPORT_ERROR),
        "{server:?}: a broken reload does not show the workers' output:\n{stderr}"
    );
}

#[test]
fn gunicorn_reload_waits_for_the_new_code() {
    reload_waits_for_the_new_code(Server::Gunicorn);
}

#[test]
fn uwsgi_reload_waits_for_the_new_code() {
    reload_waits_for_the_new_code(Server::Uwsgi);
}
