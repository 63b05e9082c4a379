//! No refused connection and no failed request while a gunicorn app
//! restarts or reloads under load from a real load generator (wrk, from
//! Debian's packages), because appvisord holds the app's listen socket; and
//! the same restart of a gunicorn that binds its own port, which refuses
//! connections, so the tests show the difference the held socket makes.
//!
//! The app takes 2 s to boot: with `--preload` the arbiter imports the app,
//! which sleeps `WSGI_IMPORT_DELAY`, before it takes the sockets and sends
//! READY=1.

use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use appvisor_tests::{
    bins, free_port, http_get, poll_until, require_root, AppBuilder, Daemon, DaemonOptions, Prefix,
    Readiness, State, TestUser,
};

/// Debian's wrk (`.ci/run` installs it).
const WRK: &str = "/usr/bin/wrk";
/// How long the app takes to boot.
const BOOT_DELAY: &str = "2";
/// How long wrk runs: load before, during and after the action.
const LOAD: Duration = Duration::from_secs(9);
/// When the action starts, after wrk began.
const ACTION_AFTER: Duration = Duration::from_millis(1500);

/// One load test at a time: two of them on two cores would measure each
/// other.
static LOAD_LOCK: Mutex<()> = Mutex::new(());

/// gunicorn from the test venv serving `wsgi_app:application` with two
/// workers, booting in [`BOOT_DELAY`] seconds, on the socket appvisord holds
/// (`held`) or on one it binds itself.
fn slow_gunicorn(
    prefix: &Prefix,
    name: &str,
    user: &TestUser,
    port: u16,
    held: bool,
) -> AppBuilder {
    let dir = prefix.install_app(name, user, &["wsgi_app.py"]);
    let mut command = vec![
        bins::gunicorn().display().to_string(),
        "--preload".to_owned(),
        "--workers".to_owned(),
        "2".to_owned(),
    ];
    if !held {
        command.extend(["--bind".to_owned(), format!("127.0.0.1:{port}")]);
    }
    command.push("wsgi_app:application".to_owned());
    let app = AppBuilder::new(name, user, command)
        .directory(&dir)
        .env("WSGI_IMPORT_DELAY", BOOT_DELAY)
        .readiness(Readiness::Notify)
        .readiness_timeout(Duration::from_secs(30))
        .read_only(bins::venv())
        .read_only(&dir);
    if held {
        app.listen(&format!("127.0.0.1:{port}"), Some("http"))
    } else {
        // Binding its own port needs Landlock's leave: by default an app
        // may bind only the ports of its [[listen]] sockets.
        app.bind_ports(&[port])
    }
}

/// What wrk saw.
#[derive(Debug, Default, PartialEq)]
struct Load {
    requests: u64,
    connect_errors: u64,
    read_errors: u64,
    write_errors: u64,
    timeouts: u64,
    non_2xx: u64,
    max_latency: Duration,
}

impl Load {
    fn failures(&self) -> u64 {
        self.connect_errors + self.read_errors + self.write_errors + self.timeouts + self.non_2xx
    }
}

/// `1.5ms`, `880.35us`, `2.01s`, `1.2m`.
fn parse_wrk_duration(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let seconds = match unit {
        "us" => number / 1e6,
        "ms" => number / 1e3,
        "s" => number,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        _ => return None,
    };
    Some(Duration::from_secs_f64(seconds))
}

fn parse_wrk(output: &str) -> Load {
    let mut load = Load::default();
    for line in output.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("Latency") {
            // Avg, Stdev, Max, +/- Stdev.
            let max = rest.split_whitespace().nth(2).unwrap_or_default();
            load.max_latency = parse_wrk_duration(max)
                .unwrap_or_else(|| panic!("unreadable wrk latency line {line:?}"));
        } else if let Some(rest) = line.strip_prefix("Socket errors:") {
            for part in rest.split(',') {
                let mut words = part.split_whitespace();
                let (Some(kind), Some(n)) = (words.next(), words.next()) else {
                    continue;
                };
                let n: u64 = n.parse().expect("wrk error counts are numbers");
                match kind {
                    "connect" => load.connect_errors = n,
                    "read" => load.read_errors = n,
                    "write" => load.write_errors = n,
                    "timeout" => load.timeouts = n,
                    _ => {}
                }
            }
        } else if let Some(rest) = line.strip_prefix("Non-2xx or 3xx responses:") {
            load.non_2xx = rest.trim().parse().expect("a count");
        } else if let Some((n, _)) = line.split_once(" requests in ") {
            load.requests = n.trim().parse().expect("a request count");
        }
    }
    load
}

fn start_wrk(port: u16) -> Child {
    assert!(
        std::path::Path::new(WRK).is_file(),
        "{WRK} not found: run .ci/run (it installs Debian's wrk)"
    );
    Command::new(WRK)
        .args(["--threads", "2", "--connections", "16", "--timeout", "10s"])
        .arg(format!("--duration={}s", LOAD.as_secs()))
        .arg(format!("http://127.0.0.1:{port}/"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting wrk")
}

/// Runs wrk against `port` and `action` during the load; returns what wrk
/// saw and wrk's own report for messages.
fn under_load(port: u16, action: impl FnOnce()) -> (Load, String) {
    let wrk = start_wrk(port);
    std::thread::sleep(ACTION_AFTER);
    let started = Instant::now();
    action();
    assert!(
        started.elapsed() + ACTION_AFTER + Duration::from_secs(1) < LOAD,
        "the action took {:?}, longer than the load lasts",
        started.elapsed()
    );
    let out = wrk.wait_with_output().expect("waiting for wrk");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "wrk failed: {report}");
    (parse_wrk(&report), report)
}

/// Starts a daemon with `app` and waits until it serves.
fn serving(prefix: &Prefix, app: &AppBuilder, port: u16) -> Daemon {
    app.write(prefix);
    let daemon = Daemon::start(prefix, DaemonOptions::default());
    daemon.wait_for_state(app.name(), State::Running, Duration::from_secs(30));
    daemon.wait_until(Duration::from_secs(15), "the app to answer GET /", || {
        http_get(port, "/").is_ok_and(|r| r.status == 200)
    });
    daemon
}

fn assert_no_failures(what: &str, load: &Load, report: &str, daemon: &Daemon) {
    assert!(load.requests > 100, "{what}: too little load: {report}");
    assert_eq!(
        load.failures(),
        0,
        "{what}: refused or failed requests: {load:?}\n{report}\n{}",
        daemon.log_tail(30)
    );
}

fn lock() -> std::sync::MutexGuard<'static, ()> {
    LOAD_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn stop_start_restart_with_held_socket_refuses_nothing() {
    require_root!();
    let _serial = lock();
    let user = TestUser::ensure("avt-app1");
    let prefix = Prefix::new();
    let port = free_port();
    let app = slow_gunicorn(&prefix, "web", &user, port, true);
    let daemon = serving(&prefix, &app, port);
    let before = daemon.app("web").pid;

    let (load, report) = under_load(port, || {
        daemon.appctl_ok(["restart", "web"]);
    });
    assert_no_failures("stop-start restart", &load, &report, &daemon);
    let after = daemon.app("web");
    assert_eq!(after.restarts, 1);
    assert_ne!(after.pid, before, "a new main process");
}

#[test]
fn start_stop_restart_serves_while_the_new_instance_boots() {
    require_root!();
    let _serial = lock();
    let user = TestUser::ensure("avt-app1");
    let prefix = Prefix::new();
    let port = free_port();
    let app = slow_gunicorn(&prefix, "web", &user, port, true)
        .extra_toml("[restart]\nstrategy = \"start-stop\"");
    let daemon = serving(&prefix, &app, port);
    let before = daemon.app("web").pid;

    let (load, report) = under_load(port, || {
        daemon.appctl_ok(["restart", "web"]);
    });
    assert_no_failures("start-stop restart", &load, &report, &daemon);
    // The old instance answers until the new one is ready, so no request
    // waits for the 2 s boot as it does with stop-start.
    assert!(
        load.max_latency < Duration::from_millis(1500),
        "start-stop restart: a request waited {:?}, as long as a boot: the old instance \
         stopped before the new one was ready\n{report}\n{}",
        load.max_latency,
        daemon.log_tail(30)
    );
    let after = daemon.app("web");
    assert_ne!(after.pid, before, "a new main process");
}

#[test]
fn reload_refuses_nothing() {
    require_root!();
    let _serial = lock();
    let user = TestUser::ensure("avt-app1");
    let prefix = Prefix::new();
    let port = free_port();
    let app = slow_gunicorn(&prefix, "web", &user, port, true);
    let daemon = serving(&prefix, &app, port);
    let arbiter = daemon.app("web").pid;
    let worker_before = http_get(port, "/pid").expect("GET /pid").body;

    let (load, report) = under_load(port, || {
        daemon.appctl_ok(["reload", "web"]);
    });
    assert_no_failures("reload", &load, &report, &daemon);
    assert_eq!(daemon.app("web").pid, arbiter, "reload keeps the arbiter");
    let worker_after = http_get(port, "/pid").expect("GET /pid").body;
    assert_ne!(worker_after, worker_before, "HUP replaced the workers");
}

/// `appctl stop` closes the held sockets: a client (or a load balancer's
/// check) is refused at once instead of waiting in the backlog for an app
/// that is not coming back. `start` binds them again, on the same address,
/// and a restart after that still refuses nothing.
#[test]
fn a_stopped_app_refuses_connections_at_once_and_serves_again_after_start() {
    require_root!();
    let _serial = lock();
    let user = TestUser::ensure("avt-app1");
    let prefix = Prefix::new();
    let port = free_port();
    let socket_dir = prefix.code_dir("web-sockets", &user);
    let unix = socket_dir.join("web.sock");
    let app = slow_gunicorn(&prefix, "web", &user, port, true)
        .listen(&format!("unix:{}", unix.display()), Some("unix"));
    let daemon = serving(&prefix, &app, port);

    daemon.appctl_ok(["stop", "web"]);
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let asked = Instant::now();
    let tcp = TcpStream::connect_timeout(&address, Duration::from_secs(5));
    let waited = asked.elapsed();
    assert!(
        matches!(&tcp, Err(e) if e.kind() == ErrorKind::ConnectionRefused),
        "after stop, a connection to {address} was {tcp:?} after {waited:?}, not refused"
    );
    assert!(
        waited < Duration::from_millis(500),
        "refused only after {waited:?}"
    );
    let unix_client = UnixStream::connect(&unix);
    assert!(
        unix_client.is_err() && !unix.exists(),
        "after stop, {} still accepts: {unix_client:?}",
        unix.display()
    );

    daemon.appctl_ok(["start", "web"]);
    let body = http_get(port, "/").expect("serving again after start");
    assert_eq!(body.status, 200, "{body:?}");
    UnixStream::connect(&unix).expect("the unix socket is back after start");

    let (load, report) = under_load(port, || {
        daemon.appctl_ok(["restart", "web"]);
    });
    assert_no_failures("restart after a stop and a start", &load, &report, &daemon);
}

#[test]
fn without_a_held_socket_a_restart_refuses_connections() {
    require_root!();
    let _serial = lock();
    let user = TestUser::ensure("avt-app1");
    let prefix = Prefix::new();
    let port = free_port();
    let app = slow_gunicorn(&prefix, "web", &user, port, false);
    let daemon = serving(&prefix, &app, port);

    let (load, report) = under_load(port, || {
        daemon.appctl_ok(["restart", "web"]);
    });
    // wrk connects without blocking, so a refused connection shows when it
    // first writes: as a write error, not a connect error.
    assert!(
        load.connect_errors + load.write_errors > 0,
        "a gunicorn that binds its own port refuses connections while it restarts, \
         yet wrk saw none: the load test cannot tell held sockets apart\n{report}"
    );
}

#[test]
fn a_port_below_1024_for_an_app_that_is_not_root() {
    require_root!();
    let user = TestUser::ensure("avt-app1");
    let prefix = Prefix::new();
    let Some(port) = (900..1000).find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
    else {
        panic!("no free port between 900 and 999 on 127.0.0.1");
    };
    let dir = prefix.install_app("low", &user, &["wsgi_app.py"]);
    let app = AppBuilder::new(
        "low",
        &user,
        [
            bins::gunicorn().display().to_string(),
            "--workers".to_owned(),
            "1".to_owned(),
            "wsgi_app:application".to_owned(),
        ],
    )
    .directory(&dir)
    .readiness(Readiness::Notify)
    .readiness_timeout(Duration::from_secs(30))
    .read_only(bins::venv())
    .read_only(&dir)
    .listen(&format!("127.0.0.1:{port}"), Some("http"));
    let daemon = serving(&prefix, &app, port);
    assert_eq!(
        http_get(port, "/").expect("GET /").body,
        "hello from avt-app1\n"
    );
    let env: serde_json::Value =
        serde_json::from_str(&http_get(port, "/env").expect("GET /env").body).unwrap();
    assert_eq!(env["LISTEN_FDNAMES"], "http", "{env}");
    assert_eq!(daemon.app("low").user, "avt-app1");
}

#[test]
fn an_address_in_use_fails_that_app_alone() {
    require_root!();
    let user = TestUser::ensure("avt-app1");
    let prefix = Prefix::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    appvisor_tests::testapps::sleeper("busy", &user)
        .listen(&format!("127.0.0.1:{port}"), Some("http"))
        .write(&prefix);
    appvisor_tests::testapps::sleeper("fine", &user).write(&prefix);
    let daemon = Daemon::start(&prefix, DaemonOptions::default());
    daemon.wait_for_state("fine", State::Running, Duration::from_secs(10));
    let mut busy = daemon.app("busy");
    assert!(poll_until(Duration::from_secs(10), || {
        busy = daemon.app("busy");
        busy.state == State::Backoff
    }));
    let want = format!(
        "spawn failed at listen 127.0.0.1:{port}: address already in use (another process holds it: find it with `ss -ltnp 'sport = :{port}'`)"
    );
    assert!(
        busy.reason.starts_with(&want),
        "reason {:?} does not start with {want:?}",
        busy.reason
    );
    // Once the port is free, the next try takes it.
    drop(taken);
    daemon.wait_for_state("busy", State::Running, Duration::from_secs(30));
}

#[test]
fn reads_wrk_reports() {
    let report = "Running 9s test @ http://127.0.0.1:1/\n  2 threads and 16 connections\n  Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency     1.50ms  300.00us    2.01s    90.00%\n    Req/Sec     1.00k   100.00     1.20k    70.00%\n  18000 requests in 9.00s, 2.00MB read\n  Socket errors: connect 12, read 3, write 0, timeout 1\n  Non-2xx or 3xx responses: 7\nRequests/sec:   2000.00\n";
    assert_eq!(
        parse_wrk(report),
        Load {
            requests: 18000,
            connect_errors: 12,
            read_errors: 3,
            write_errors: 0,
            timeouts: 1,
            non_2xx: 7,
            max_latency: Duration::from_millis(2010),
        }
    );
}
