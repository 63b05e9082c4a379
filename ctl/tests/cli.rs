//! Runs the real `appctl` binary against a fake control socket that answers
//! canned HTTP/1.1 responses, and checks its output and exit codes.
//!
//! The real daemon is exercised by the workspace's `tests/` crate; here the
//! CLI's own contract is pinned down: messages, rendering, exit codes.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// One request the fake daemon received.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    method: String,
    path: String,
    body: String,
}

/// A canned answer for one method and path.
struct Route {
    method: &'static str,
    path: &'static str,
    status: u16,
    content_type: &'static str,
    body: String,
    /// Send the body as one chunk and keep the connection open, like a
    /// followed log that has nothing new to say.
    hold_open: bool,
}

fn json(method: &'static str, path: &'static str, status: u16, body: &str) -> Route {
    Route {
        method,
        path,
        status,
        content_type: "application/json",
        body: body.to_owned(),
        hold_open: false,
    }
}

fn error(method: &'static str, path: &'static str, code: &str, status: u16, msg: &str) -> Route {
    let body = format!(r#"{{"error":{{"code":"{code}","message":"{msg}"}}}}"#);
    json(method, path, status, &body)
}

/// A Unix socket in a temp dir answering each connection with the route
/// that matches its request, one request a connection.
struct FakeDaemon {
    dir: TempDir,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl FakeDaemon {
    fn start(routes: Vec<Route>) -> FakeDaemon {
        let routes = Arc::new(routes);
        let dir = tempfile::tempdir().expect("a temp dir");
        let listener = UnixListener::bind(dir.path().join("ctl.sock")).expect("bind the socket");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorder = Arc::clone(&seen);
        // The thread lives until the test process exits.
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let (routes, recorder) = (Arc::clone(&routes), Arc::clone(&recorder));
                thread::spawn(move || serve(stream, &routes, &recorder));
            }
        });
        FakeDaemon { dir, seen }
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("ctl.sock")
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn appctl(&self, args: &[&str]) -> Output {
        appctl_with_socket(&self.socket(), args)
    }
}

fn serve(mut stream: UnixStream, routes: &[Route], seen: &Mutex<Vec<Seen>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let (head_len, content_length) = loop {
        let n = stream.read(&mut chunk).unwrap_or(0);
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse::<usize>().unwrap());
            break (end + 4, length);
        }
    };
    while buf.len() < head_len + content_length {
        let n = stream.read(&mut chunk).unwrap_or(0);
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf[..head_len]).into_owned();
    let mut request_line = head.lines().next().unwrap_or_default().split(' ');
    let method = request_line.next().unwrap_or_default().to_owned();
    let path = request_line.next().unwrap_or_default().to_owned();
    let body = String::from_utf8_lossy(&buf[head_len..]).into_owned();
    seen.lock().unwrap().push(Seen {
        method: method.clone(),
        path: path.clone(),
        body,
    });
    let not_found = error("", "", "not_found", 404, "no such route");
    let route = routes
        .iter()
        .find(|r| r.method == method && r.path == path)
        .unwrap_or(&not_found);
    if route.hold_open {
        let response = format!(
            "HTTP/1.1 {} Canned\r\nContent-Type: {}\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{}\r\n",
            route.status,
            route.content_type,
            route.body.len(),
            route.body
        );
        let _ = stream.write_all(response.as_bytes());
        // Nothing more to say, but the stream has not ended.
        thread::sleep(Duration::from_secs(60));
        return;
    }
    let response = format!(
        "HTTP/1.1 {} Canned\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        route.status,
        route.content_type,
        route.body.len(),
        route.body
    );
    let _ = stream.write_all(response.as_bytes());
}

fn appctl_with_socket(socket: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_appctl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .env_remove("APPVISOR_SOCKET")
        .output()
        .expect("run appctl")
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

/// One app as the daemon would send it.
fn app(name: &str, state: &str, pid: Option<u32>, uptime: Option<f64>, reason: &str) -> String {
    serde_json::json!({
        "name": name,
        "state": state,
        "reason": reason,
        "pid": pid,
        "uptime_secs": uptime,
        "since": 1_795_438_927u64,
        "restarts": 1,
        "failures": 0,
        "description": "",
        "user": name,
        "directory": format!("/srv/{name}/current"),
        "release": pid.map(|_| format!("/srv/{name}/releases/7")),
        "autostart": true,
        "stopped_by": null,
        "config_error": null,
    })
    .to_string()
}

#[test]
fn a_missing_socket_exits_5_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("ctl.sock");
    let out = appctl_with_socket(&socket, &["status"]);
    assert_eq!(out.status.code(), Some(5));
    assert_eq!(
        stderr(&out),
        format!(
            "appctl: cannot reach appvisord at {}: no such file (is the daemon running?)\n",
            socket.display()
        )
    );
    assert_eq!(stdout(&out), "");
}

#[test]
fn the_socket_comes_from_the_environment() {
    let daemon = FakeDaemon::start(vec![json(
        "GET",
        "/v1/whoami",
        200,
        r#"{"uid":0,"user":"root","groups":["root"],"role":"admin","apps":["shop"]}"#,
    )]);
    let out = Command::new(env!("CARGO_BIN_EXE_appctl"))
        .arg("whoami")
        .env("APPVISOR_SOCKET", daemon.socket())
        .output()
        .unwrap();
    assert_eq!(stderr(&out), "");
    assert_eq!(stdout(&out), "uid 0 (root), groups: root, role: admin\n");
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("ctl.sock");
    let cases: [&[&str]; 5] = [
        &[],
        &["frobnicate"],
        &["restart"],
        &["restart", "shop", "--timeout", "soon"],
        &["logs", "shop", "-n", "many"],
    ];
    for args in cases {
        let out = appctl_with_socket(&socket, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn status_renders_a_table_and_exits_3_when_an_app_is_not_running() {
    let list = format!(
        r#"{{"apps":[{},{}]}}"#,
        app("shop", "running", Some(1234), Some(11_545.0), "ready"),
        app(
            "blog",
            "backoff",
            None,
            None,
            "exited with status 1 after 0.2s, next try in 16s"
        ),
    );
    let daemon = FakeDaemon::start(vec![json("GET", "/v1/apps", 200, &list)]);
    let out = daemon.appctl(&["status"]);
    assert_eq!(stderr(&out), "");
    assert_eq!(
        stdout(&out),
        "\
NAME  STATE    PID   UPTIME  RESTARTS  INFO
shop  running  1234  3h12m   1         /srv/shop/releases/7
blog  backoff  -     -       1         exited with status 1 after 0.2s, next try in 16s
"
    );
    assert_eq!(out.status.code(), Some(3));
}

#[test]
fn status_of_named_running_apps_exits_0() {
    let daemon = FakeDaemon::start(vec![json(
        "GET",
        "/v1/apps/shop",
        200,
        &app("shop", "running", Some(7), Some(45.0), "ready"),
    )]);
    let out = daemon.appctl(&["status", "shop"]);
    assert_eq!(stderr(&out), "");
    assert_eq!(
        stdout(&out),
        "\
NAME  STATE    PID  UPTIME  RESTARTS  INFO
shop  running  7    45s     1         /srv/shop/releases/7
"
    );
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn status_json_passes_the_daemons_document_through() {
    // Keys in the daemon's order, plus a field this appctl does not know.
    let mut shop: serde_json::Value =
        serde_json::from_str(&app("shop", "running", Some(7), Some(1.5), "ready")).unwrap();
    shop["landlock"] = serde_json::json!("full");
    let body = format!(r#"{{"apps":[{shop}]}}"#);
    let daemon = FakeDaemon::start(vec![json("GET", "/v1/apps", 200, &body)]);
    let out = daemon.appctl(&["status", "--json"]);
    assert_eq!(stderr(&out), "");
    assert_eq!(
        stdout(&out),
        r#"{
  "apps": [
    {
      "name": "shop",
      "state": "running",
      "reason": "ready",
      "pid": 7,
      "uptime_secs": 1.5,
      "since": 1795438927,
      "restarts": 1,
      "failures": 0,
      "description": "",
      "user": "shop",
      "directory": "/srv/shop/current",
      "release": "/srv/shop/releases/7",
      "autostart": true,
      "stopped_by": null,
      "config_error": null,
      "landlock": "full"
    }
  ]
}
"#
    );
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn a_missing_app_exits_2_with_the_daemons_message() {
    let daemon = FakeDaemon::start(vec![error(
        "GET",
        "/v1/apps/nope",
        "not_found",
        404,
        "no app named nope",
    )]);
    let out = daemon.appctl(&["status", "nope"]);
    assert_eq!(stderr(&out), "appctl: no app named nope\n");
    assert_eq!(stdout(&out), "");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn forbidden_exits_4_with_the_daemons_message() {
    let daemon = FakeDaemon::start(vec![error(
        "POST",
        "/v1/apps/shop/restart",
        "forbidden",
        403,
        "alice may not restart shop",
    )]);
    let out = daemon.appctl(&["restart", "shop"]);
    assert_eq!(stderr(&out), "appctl: alice may not restart shop\n");
    assert_eq!(out.status.code(), Some(4));
}

fn action_result(
    app_name: &str,
    action: &str,
    outcome: &str,
    app_json: &str,
    tail: &[&str],
) -> String {
    format!(
        r#"{{"app":"{app_name}","action":"{action}","outcome":"{outcome}","status":{app_json},"log_tail":{}}}"#,
        serde_json::to_string(tail).unwrap()
    )
}

#[test]
fn a_failed_restart_prints_reason_and_log_tail_and_exits_1() {
    let failed = action_result(
        "shop",
        "restart",
        "failed",
        &app(
            "shop",
            "backoff",
            None,
            None,
            "exited with status 3 after 0.5s",
        ),
        &[
            "Traceback (most recent call last):",
            "ImportError: No module named shop",
        ],
    );
    let ok = action_result(
        "blog",
        "restart",
        "done",
        &app("blog", "running", Some(4321), Some(0.1), "ready"),
        &[],
    );
    let daemon = FakeDaemon::start(vec![
        json("POST", "/v1/apps/shop/restart", 200, &failed),
        json("POST", "/v1/apps/blog/restart", 200, &ok),
    ]);
    let out = daemon.appctl(&["restart", "shop", "blog", "--timeout", "2m"]);
    assert_eq!(stdout(&out), "blog: running (pid 4321)\n");
    assert_eq!(
        stderr(&out),
        "\
appctl: shop did not become ready: exited with status 3 after 0.5s
last log lines of shop:
    Traceback (most recent call last):
    ImportError: No module named shop
"
    );
    assert_eq!(out.status.code(), Some(1));

    let mut seen = daemon.seen();
    seen.sort_by(|a, b| a.path.cmp(&b.path));
    let want = |path: &str| Seen {
        method: "POST".into(),
        path: path.into(),
        body: r#"{"wait":true,"timeout_ms":120000}"#.into(),
    };
    assert_eq!(
        seen,
        [want("/v1/apps/blog/restart"), want("/v1/apps/shop/restart")]
    );
}

#[test]
fn stop_without_waiting_sends_wait_false() {
    let done = action_result(
        "shop",
        "stop",
        "done",
        &app("shop", "stopping", None, None, "stopping on request"),
        &[],
    );
    let daemon = FakeDaemon::start(vec![json("POST", "/v1/apps/shop/stop", 200, &done)]);
    let out = daemon.appctl(&["stop", "--no-wait", "shop"]);
    assert_eq!(stdout(&out), "shop: stopping\n");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(daemon.seen()[0].body, r#"{"wait":false,"timeout_ms":null}"#);
}

#[test]
fn signal_posts_the_signal_name() {
    let done = action_result(
        "shop",
        "signal",
        "done",
        &app("shop", "running", Some(99), Some(3.0), "ready"),
        &[],
    );
    let daemon = FakeDaemon::start(vec![json("POST", "/v1/apps/shop/signal", 200, &done)]);
    let out = daemon.appctl(&["signal", "USR1", "shop"]);
    assert_eq!(stdout(&out), "shop: sent USR1 (pid 99)\n");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(daemon.seen()[0].body, r#"{"signal":"USR1"}"#);
}

#[test]
fn update_renders_the_report_and_exits_2_on_invalid_files() {
    let report = r#"{
        "dry_run": false,
        "added": ["new"],
        "changed": ["shop", "blog"],
        "removed": [],
        "unchanged": ["wiki"],
        "invalid": [{
            "name": "api",
            "file": "/etc/appvisor/apps.d/api.toml",
            "errors": ["api.toml:4:1: unknown key `comand` (did you mean `command`?)"],
            "kept_running": true
        }]
    }"#;
    let daemon = FakeDaemon::start(vec![json("POST", "/v1/config/apply", 200, report)]);
    let out = daemon.appctl(&["update"]);
    assert_eq!(stderr(&out), "");
    assert_eq!(
        stdout(&out),
        "\
added: new
changed: shop, blog
unchanged: wiki
invalid: api (/etc/appvisor/apps.d/api.toml)
    api.toml:4:1: unknown key `comand` (did you mean `command`?)
    (still running its last valid version)
"
    );
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(daemon.seen()[0].body, r#"{"dry_run":false}"#);
}

#[test]
fn update_dry_run_says_nothing_changed() {
    let report = r#"{"dry_run":true,"added":[],"changed":["shop"],"removed":["old"],"unchanged":[],"invalid":[]}"#;
    let daemon = FakeDaemon::start(vec![json("POST", "/v1/config/apply", 200, report)]);
    let out = daemon.appctl(&["update", "--dry-run"]);
    assert_eq!(
        stdout(&out),
        "changed: shop\nremoved: old\ndry run: nothing was changed\n"
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(daemon.seen()[0].body, r#"{"dry_run":true}"#);
}

#[test]
fn logs_copy_the_plain_text_body() {
    let daemon = FakeDaemon::start(vec![Route {
        method: "GET",
        path: "/v1/apps/shop/logs?stream=stderr&lines=5&follow=false",
        status: 200,
        content_type: "text/plain; charset=utf-8",
        body: "line one\nline two\n".to_owned(),
        hold_open: false,
    }]);
    let out = daemon.appctl(&["logs", "shop", "-n", "5", "--stderr"]);
    assert_eq!(stderr(&out), "");
    assert_eq!(stdout(&out), "line one\nline two\n");
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn whoami_describes_the_caller() {
    let daemon = FakeDaemon::start(vec![json(
        "GET",
        "/v1/whoami",
        200,
        r#"{"uid":1001,"user":"alice","groups":["alice","shop-devs"],"role":"operator","apps":["shop","blog"]}"#,
    )]);
    let out = daemon.appctl(&["whoami"]);
    assert_eq!(
        stdout(&out),
        "uid 1001 (alice), groups: alice, shop-devs, role: operator of shop, blog\n"
    );
    assert_eq!(out.status.code(), Some(0));
}

fn log_route(path: &'static str, body: String, hold_open: bool) -> Route {
    Route {
        method: "GET",
        path,
        status: 200,
        content_type: "text/plain; charset=utf-8",
        body,
        hold_open,
    }
}

/// Waits for a child with a deadline, killing it if the deadline passes.
fn wait_for(mut child: Child, what: &str) -> Output {
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what}: appctl still running after 10s");
        }
        thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn logs_follow_ends_cleanly_on_ctrl_c() {
    let daemon = FakeDaemon::start(vec![log_route(
        "/v1/apps/shop/logs?stream=both&lines=100&follow=true",
        "booting\n".to_owned(),
        true,
    )]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_appctl"))
        .arg("--socket")
        .arg(daemon.socket())
        .args(["logs", "-f", "shop"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Ctrl-C only after the first chunk arrived, so the handler is armed.
    let mut first = [0u8; 8];
    child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut first)
        .unwrap();
    assert_eq!(&first, b"booting\n");
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = wait_for(child, "logs -f after SIGINT");
    assert_eq!(stderr(&out), "");
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn logs_end_quietly_when_the_reader_goes_away() {
    // Far more than a pipe holds, so appctl is still writing when the
    // reader closes its end (as `appctl logs shop | head -1` does).
    let body = "a line of captured output\n".repeat(200_000);
    let daemon = FakeDaemon::start(vec![log_route(
        "/v1/apps/shop/logs?stream=both&lines=100&follow=false",
        body,
        false,
    )]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_appctl"))
        .arg("--socket")
        .arg(daemon.socket())
        .args(["logs", "shop"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 26];
    child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut first)
        .unwrap();
    assert_eq!(&first, b"a line of captured output\n");
    drop(child.stdout.take());
    let out = wait_for(child, "logs into a closed pipe");
    assert_eq!(stderr(&out), "");
    assert_eq!(out.status.code(), Some(0));
}

/// A daemon config in a temp dir whose apps.d holds `apps` (name, TOML).
fn config_dir(apps: &[(&str, &str)]) -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    let apps_dir = dir.path().join("apps.d");
    std::fs::create_dir(&apps_dir).unwrap();
    std::fs::write(
        dir.path().join("appvisor.toml"),
        format!("apps_dir = {:?}\n", apps_dir.display().to_string()),
    )
    .unwrap();
    for (name, toml) in apps {
        std::fs::write(apps_dir.join(format!("{name}.toml")), toml).unwrap();
    }
    dir
}

fn check(dir: &TempDir, files: &[&Path]) -> Output {
    check_with(dir, &[], files)
}

fn check_with(dir: &TempDir, options: &[&str], files: &[&Path]) -> Output {
    // No daemon: a socket that does not exist proves check never needs one.
    Command::new(env!("CARGO_BIN_EXE_appctl"))
        .arg("--socket")
        .arg(dir.path().join("no-daemon.sock"))
        .arg("check")
        .arg("--config")
        .arg(dir.path().join("appvisor.toml"))
        .args(options)
        .args(files)
        .output()
        .unwrap()
}

#[test]
fn check_as_names_the_app_of_a_temporary_copy() {
    // "daemon": a user every host has that is not the shared "nobody",
    // which check warns about.
    let app = "user = \"daemon\"\ncommand = [\"/bin/sleep\", \"1000\"]\ndirectory = \"/\"\n\
               [[listen]]\naddress = \"127.0.0.1:8001\"\n[sandbox]\nnetwork = \"none\"\n";
    let dir = config_dir(&[("web", app)]);
    // Ansible validates a copy with a random name before moving it over
    // apps.d/web.toml: checked as itself, it steals web's port.
    let copy = dir.path().join("tmpq8z1x9.toml");
    std::fs::write(&copy, app).unwrap();
    assert_eq!(check(&dir, &[&copy]).status.code(), Some(2));
    let out = check_with(&dir, &["--as", "web"], &[&copy]);
    assert!(
        stdout(&out)
            .ends_with("for the apps without [limits] tasks: web\nchecked 1 app file: 1 valid\n"),
        "{}",
        stdout(&out)
    );
    assert_eq!(out.status.code(), Some(0));
    let out = check_with(&dir, &["--as", "web"], &[&copy, &copy]);
    assert!(
        stderr(&out).contains("check --as NAME takes exactly one FILE"),
        "{}",
        stderr(&out)
    );
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn check_passes_valid_files_offline_and_prints_warnings() {
    let dir = config_dir(&[(
        "web",
        "user = \"daemon\"\ncommand = [\"/bin/sleep\", \"1000\"]\ndirectory = \"/\"\n\
         [sandbox]\nnetwork = \"none\"\n",
    )]);
    let out = check(&dir, &[]);
    assert_eq!(stderr(&out), "");
    // The default limits of this host, in its own numbers.
    let note = stdout(&out);
    let summary = format!(
        " tasks) by default for the apps without [limits] tasks: web\n\
         checked {} and 1 app file: 1 valid\n",
        dir.path().join("appvisor.toml").display()
    );
    assert!(
        note.starts_with("note: tasks = ")
            && note.contains(" (15% of the host's ")
            && note.ends_with(&summary),
        "{note}"
    );
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn check_exits_2_when_a_file_does_not_validate() {
    let dir = config_dir(&[]);
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "user = \"nobody\"\ncomand = [\"/bin/sleep\"]\ndirectory = \"/\"\n",
    )
    .unwrap();
    let out = check(&dir, &[&bad]);
    let report = stdout(&out);
    assert!(
        report.starts_with(&format!(
            "error: {}:2:1: comand: unknown key",
            bad.display()
        )),
        "{report}"
    );
    assert!(
        report.ends_with("\nchecked 1 app file: 1 invalid; 1 error\n"),
        "{report}"
    );
    assert_eq!(out.status.code(), Some(2));
}

/// Check teaches. A misspelt key or value says what was meant,
/// a wrong type says what the key takes, every error has its line and
/// column, a granted path that does not exist is an error, an operator
/// nobody has is a warning, and the count says what was checked.
#[test]
fn check_says_what_was_meant_where_and_how_many() {
    let dir = config_dir(&[]);
    let base = "user = \"daemon\"\ncommand = [\"/bin/sleep\", \"1000\"]\ndirectory = \"/\"\n";
    let write = |name: &str, text: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let raw = write(
        "raw.toml",
        format!("{base}autostrat = false\n[restart]\nmax_retries = \"5\"\n"),
    );
    let policy = write(
        "policy.toml",
        format!("{base}[restart]\npolicy = \"alway\"\n[sandbox]\nnetwork = \"none\"\n"),
    );
    let shared = dir.path().join("shared");
    let paths = write(
        "paths.toml",
        format!(
            "{base}[access]\nusers = [\"avt-no-such-operator\"]\n[sandbox]\nnetwork = \"none\"\n\
             read_write = [{:?}]\n",
            shared.display().to_string()
        ),
    );
    let out = check(&dir, &[&raw, &policy, &paths]);
    assert_eq!(stderr(&out), "");
    assert_eq!(
        stdout(&out),
        format!(
            "error: {raw}:4:1: autostrat: unknown key; did you mean `autostart`?\n\
             error: {raw}:6:15: restart.max_retries: must be a whole number, like 5, not \"5\"\n\
             error: {policy}:5:10: restart.policy: unknown restart policy \"alway\"; did you mean \
             \"always\"? (use always, on-failure or never)\n\
             error: {paths}:8:15: sandbox.read_write[0]: {shared} does not exist \
             (create it before the app starts, or remove it from sandbox.read_write)\n\
             warning: {paths}:5:10: access.users[0]: user \"avt-no-such-operator\" does not exist, \
             so this grants nothing (fix the name, or create the user)\n\
             checked 3 app files: 3 invalid; 4 errors, 1 warning\n",
            raw = raw.display(),
            policy = policy.display(),
            paths = paths.display(),
            shared = shared.display(),
        )
    );
    assert_eq!(out.status.code(), Some(2));
}
