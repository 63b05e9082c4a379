//! The control socket under abuse, and absent: garbage, huge bodies, slow
//! clients and floods of connections get error answers or are cut off,
//! while the daemon keeps serving everyone else and every app keeps running;
//! `appctl` without a daemon says so and exits 5.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use appvisor_tests::daemon::describe_output;
use appvisor_tests::{
    bins, poll_until, require_root, AppBuilder, Daemon, DaemonOptions, Prefix, Readiness, State,
    TestUser,
};

fn sleeper(name: &str, user: &TestUser) -> AppBuilder {
    AppBuilder::new(name, user, ["/bin/sleep", "infinity"])
        .readiness(Readiness::None)
        .start_secs(Duration::from_millis(300))
}

/// A daemon with two running apps, `shop` operated by `alice`; their pids.
fn daemon_with_apps(prefix: &Prefix, alice: &TestUser) -> (Daemon, Vec<(String, u32)>) {
    let user = TestUser::ensure("avt-app4");
    sleeper("shop", &user)
        .extra_toml(&format!("[access]\nusers = [\"{}\"]", alice.name))
        .write(prefix);
    sleeper("blog", &user).write(prefix);
    let daemon = Daemon::start(prefix, DaemonOptions::default());
    // Place the operator's `appctl` now, not inside the first timed call.
    daemon.public_appctl();
    let pids = ["blog", "shop"]
        .iter()
        .map(|app| {
            let status = daemon.wait_for_state(app, State::Running, Duration::from_secs(15));
            ((*app).to_owned(), status.pid.expect("pid"))
        })
        .collect();
    (daemon, pids)
}

/// `appctl status` works, as root and as an operator, within a second each.
fn serves_legitimate_requests(daemon: &Daemon, alice: &TestUser, during: &str) {
    for who in [None, Some(alice)] {
        let start = Instant::now();
        let out = match who {
            Some(user) => daemon.appctl_as(user, ["status"]),
            None => daemon.appctl(["status"]),
        };
        let took = start.elapsed();
        let name = who.map_or("root", |u| u.name.as_str());
        assert!(
            out.status.success(),
            "appctl status as {name} during {during}\n{}\n{}",
            describe_output(&out),
            daemon.log_tail(20)
        );
        assert!(
            took < Duration::from_secs(1),
            "appctl status as {name} took {took:?} during {during}"
        );
    }
}

/// Every app runs with the pid it had.
fn apps_untouched(daemon: &mut Daemon, pids: &[(String, u32)], after: &str) {
    assert!(
        daemon.try_wait().is_none(),
        "appvisord exited after {after}"
    );
    let now: Vec<(String, u32)> = daemon
        .status_json()
        .into_iter()
        .filter(|a| a.state == State::Running)
        .filter_map(|a| Some((a.name, a.pid?)))
        .collect();
    assert_eq!(now, pids, "apps after {after}");
}

/// Sends `request` (from another thread, so a daemon that stops reading
/// cannot block us) and returns what the daemon answered within `within`.
fn exchange(socket: &Path, request: Vec<u8>, within: Duration) -> String {
    let mut stream = UnixStream::connect(socket).expect("connecting to the control socket");
    let mut writer = stream.try_clone().expect("cloning the stream");
    let sender = thread::spawn(move || {
        // The daemon may answer and close before all of it is sent.
        let _ = writer.write_all(&request);
    });
    stream
        .set_read_timeout(Some(within))
        .expect("setting a read timeout");
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
    }
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let _ = sender.join();
    String::from_utf8_lossy(&answer).into_owned()
}

fn status_line(answer: &str) -> &str {
    answer.lines().next().unwrap_or("")
}

#[test]
fn garbage_and_malformed_requests_get_error_answers() {
    require_root!();
    let alice = TestUser::ensure("avt-ctl-alice");
    let prefix = Prefix::new();
    let (mut daemon, pids) = daemon_with_apps(&prefix, &alice);
    let mut garbage: Vec<u8> = (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect();
    garbage.extend_from_slice(b"\r\n\r\n");
    let long_header = format!(
        "GET /v1/apps HTTP/1.1\r\nHost: x\r\nX-Junk: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("binary garbage", garbage, "HTTP/1.1 400"),
        ("a text line", b"HELLO appvisord\r\n\r\n".to_vec(), "HTTP/1.1 400"),
        (
            "a bad content-length",
            b"POST /v1/apps/shop/restart HTTP/1.1\r\nHost: x\r\nContent-Length: many\r\n\r\n"
                .to_vec(),
            "HTTP/1.1 400",
        ),
        ("a 64 KiB header", long_header.into_bytes(), "HTTP/1.1 431"),
        (
            "a JSON body that is not JSON",
            b"POST /v1/apps/shop/signal HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 9\r\n\r\n{not json"
                .to_vec(),
            "HTTP/1.1 400",
        ),
        (
            "an unknown signal",
            b"POST /v1/apps/shop/signal HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 19\r\n\r\n{\"signal\":\"NOPE1\"}\n"
                .to_vec(),
            "HTTP/1.1 400",
        ),
        (
            "an unknown route",
            b"GET /v1/apps/shop/../../etc HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
            "HTTP/1.1 404",
        ),
        (
            "a wrong method",
            b"DELETE /v1/apps/shop HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
            "HTTP/1.1 405",
        ),
        (
            "an app name with a NUL",
            b"GET /v1/apps/sh%00op HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
            "HTTP/1.1 404",
        ),
    ];
    for (what, request, want) in cases {
        let answer = exchange(daemon.socket(), request, Duration::from_secs(5));
        assert!(
            status_line(&answer).starts_with(want),
            "{what}: want {want}, got {:?}\n{}",
            status_line(&answer),
            daemon.log_tail(20)
        );
        serves_legitimate_requests(&daemon, &alice, what);
    }
    apps_untouched(&mut daemon, &pids, "malformed requests");
}

#[test]
fn a_ten_mib_body_is_refused_without_acting() {
    require_root!();
    let alice = TestUser::ensure("avt-ctl-alice");
    let prefix = Prefix::new();
    let (mut daemon, pids) = daemon_with_apps(&prefix, &alice);
    let size = 10 * 1024 * 1024;
    let mut body = b"{\"wait\":true,\"pad\":\"".to_vec();
    body.resize(size - 2, b'x');
    body.extend_from_slice(b"\"}");
    for path in ["/v1/apps/shop/restart", "/v1/config/apply"] {
        let mut request =
            format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n")
                .into_bytes();
        request.extend_from_slice(&body);
        let answer = exchange(daemon.socket(), request, Duration::from_secs(10));
        assert!(
            status_line(&answer).starts_with("HTTP/1.1 413"),
            "10 MiB to {path}: {:?}",
            status_line(&answer)
        );
        assert!(
            answer.contains("\"code\":\"payload_too_large\""),
            "{answer}"
        );
        // The same without a length: chunked.
        let mut request =
            format!("POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
                .into_bytes();
        for chunk in body.chunks(64 * 1024) {
            request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            request.extend_from_slice(chunk);
            request.extend_from_slice(b"\r\n");
        }
        request.extend_from_slice(b"0\r\n\r\n");
        let answer = exchange(daemon.socket(), request, Duration::from_secs(10));
        assert!(
            status_line(&answer).starts_with("HTTP/1.1 413"),
            "10 MiB chunked to {path}: {:?}",
            status_line(&answer)
        );
        serves_legitimate_requests(&daemon, &alice, "a 10 MiB body");
    }
    apps_untouched(&mut daemon, &pids, "10 MiB bodies");
}

#[test]
fn a_client_sending_headers_one_byte_a_second_is_cut_off() {
    require_root!();
    let alice = TestUser::ensure("avt-ctl-alice");
    let prefix = Prefix::new();
    let (mut daemon, pids) = daemon_with_apps(&prefix, &alice);
    let mut slow = UnixStream::connect(daemon.socket()).expect("connecting");
    slow.set_write_timeout(Some(Duration::from_secs(2)))
        .expect("write timeout");
    let start = Instant::now();
    let mut cut_off = None;
    for byte in b"GET /v1/apps HTTP/1.1\r\nHost: localhost\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n" {
        if slow.write_all(&[*byte]).is_err() {
            cut_off = Some(start.elapsed());
            break;
        }
        serves_legitimate_requests(&daemon, &alice, "a slow client");
        thread::sleep(Duration::from_secs(1));
        if start.elapsed() > Duration::from_secs(20) {
            break;
        }
    }
    // A write may still succeed after the daemon closed (into the buffer);
    // reading says for sure.
    let cut_off = cut_off.unwrap_or_else(|| {
        slow.set_read_timeout(Some(Duration::from_secs(1)))
            .expect("read timeout");
        let mut buf = [0u8; 512];
        match slow.read(&mut buf) {
            Ok(_) | Err(_) if start.elapsed() < Duration::from_secs(20) => start.elapsed(),
            _ => panic!("the slow client was still connected after 20s"),
        }
    });
    assert!(
        cut_off < Duration::from_secs(12),
        "the slow client was cut off after {cut_off:?}"
    );
    apps_untouched(&mut daemon, &pids, "a slow client");
}

#[test]
fn a_client_sending_its_body_one_byte_a_second_gets_an_error() {
    require_root!();
    let alice = TestUser::ensure("avt-ctl-alice");
    let prefix = Prefix::new();
    let (mut daemon, pids) = daemon_with_apps(&prefix, &alice);
    let mut stream = UnixStream::connect(daemon.socket()).expect("connecting");
    stream
        .write_all(b"POST /v1/apps/shop/signal HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 40\r\n\r\n")
        .expect("sending the head");
    let mut writer = stream.try_clone().expect("cloning the stream");
    let start = Instant::now();
    let dripper = thread::spawn(move || {
        for byte in b"{\"signal\":\"USR1\"}                      " {
            if writer.write_all(&[*byte]).is_err() {
                return;
            }
            thread::sleep(Duration::from_secs(1));
        }
    });
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .expect("read timeout");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let took = start.elapsed();
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let _ = dripper.join();
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        status_line(&answer).starts_with("HTTP/1.1 400"),
        "a body dripped a byte a second: {answer:?}"
    );
    assert!(
        answer.contains("request body not received within 5s"),
        "{answer}"
    );
    assert!(took < Duration::from_secs(10), "answered after {took:?}");
    serves_legitimate_requests(&daemon, &alice, "a slow body");
    apps_untouched(&mut daemon, &pids, "a slow body");
}

/// Python's http.client sends a request's head and its body in two writes;
/// it sends `rounds` refused requests of each kind as the caller and prints
/// `STATUS CODE COUNT` for the answers it got. A broken pipe or a reset
/// instead of an answer ends it with a traceback.
const HTTP_CLIENT_REFUSED: &str = r#"
import collections, http.client, json, socket, sys

class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("appvisord", timeout=10)
        self.unix_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(10)
        self.sock.connect(self.unix_path)

path, rounds = sys.argv[1], int(sys.argv[2])
answers = collections.Counter()
for route, body in [("/v1/apps/shop/stop", {"wait": True}), ("/v1/config/apply", {"dry_run": False})]:
    for _ in range(rounds):
        connection = UnixConnection(path)
        connection.request("POST", route, body=json.dumps(body), headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        code = json.loads(response.read())["error"]["code"]
        answers[(response.status, code)] += 1
        connection.close()
for (status, code), count in sorted(answers.items()):
    print(status, code, count)
"#;

#[test]
fn python_http_client_sending_a_body_to_a_refused_route_gets_the_answer() {
    require_root!();
    let alice = TestUser::ensure("avt-ctl-alice");
    let eve = TestUser::ensure("avt-ctl-eve");
    let prefix = Prefix::new();
    let (mut daemon, pids) = daemon_with_apps(&prefix, &alice);
    let out = eve
        .command(bins::SYSTEM_PYTHON)
        .arg("-c")
        .arg(HTTP_CLIENT_REFUSED)
        .arg(daemon.socket())
        .arg("100")
        .output()
        .expect("python3 as eve");
    assert!(
        out.status.success(),
        "http.client got no answer to a refused request\n{}",
        describe_output(&out)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "403 forbidden 100\n404 not_found 100\n"
    );
    serves_legitimate_requests(&daemon, &alice, "refused requests with bodies");
    apps_untouched(&mut daemon, &pids, "refused requests with bodies");
}

/// A stranger's process holding `n` connections open; dropped, it is killed.
struct Flood(Child);

impl Flood {
    fn start(as_user: &TestUser, socket: &Path, n: usize) -> Flood {
        // A refused connection may be closed before the partial head is
        // sent: that is part of the flood, not a failure of it.
        let script = "import socket, sys, time\n\
            held = []\n\
            for _ in range(int(sys.argv[2])):\n\
            \x20   s = socket.socket(socket.AF_UNIX)\n\
            \x20   s.connect(sys.argv[1])\n\
            \x20   try:\n\
            \x20       s.send(b'GET /v1/apps HTTP/1.1\\r\\n')\n\
            \x20   except OSError:\n\
            \x20       pass\n\
            \x20   held.append(s)\n\
            print('connected', len(held), flush=True)\n\
            time.sleep(60)\n";
        let mut child = as_user
            .command(bins::SYSTEM_PYTHON)
            .arg("-c")
            .arg(script)
            .arg(socket)
            .arg(n.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting the flood");
        let mut stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        let mut buf = [0u8; 64];
        while !line.contains('\n') {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => panic!("the flood ended before connecting: {line:?}"),
                Ok(n) => line.push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
        assert_eq!(line.trim(), format!("connected {n}"));
        Flood(child)
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn five_hundred_connections_from_a_stranger_do_not_lock_others_out() {
    require_root!();
    let alice = TestUser::ensure("avt-ctl-alice");
    let eve = TestUser::ensure("avt-ctl-eve");
    let prefix = Prefix::new();
    let (mut daemon, pids) = daemon_with_apps(&prefix, &alice);
    let flood = Flood::start(&eve, daemon.socket(), 500);
    // Throughout the flood, and past the head timeout of the first wave.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(7) {
        serves_legitimate_requests(&daemon, &alice, "500 connections from a stranger");
        thread::sleep(Duration::from_millis(500));
    }
    drop(flood);
    assert!(
        poll_until(Duration::from_secs(5), || daemon.try_status().is_ok()),
        "the daemon answers after the flood\n{}",
        daemon.log_tail(20)
    );
    apps_untouched(&mut daemon, &pids, "500 connections");
}

#[test]
fn appctl_against_a_stopped_daemon_exits_5() {
    require_root!();
    let alice = TestUser::ensure("avt-ctl-alice");
    let prefix = Prefix::new();
    let mut daemon = Daemon::start(&prefix, DaemonOptions::default());
    let appctl = daemon.public_appctl();
    daemon.terminate(Duration::from_secs(20));
    let socket = prefix.socket();
    for who in [None, Some(&alice)] {
        for args in [&["status"][..], &["restart", "shop"], &["whoami"]] {
            let out = match who {
                Some(user) => user
                    .command(&appctl)
                    .arg("--socket")
                    .arg(&socket)
                    .args(args)
                    .output()
                    .expect("running appctl"),
                None => daemon.appctl(args),
            };
            assert_eq!(out.status.code(), Some(5), "{}", describe_output(&out));
            assert_eq!(
                String::from_utf8_lossy(&out.stderr),
                format!(
                    "appctl: cannot reach appvisord at {}: no such file (is the daemon running?)\n",
                    socket.display()
                ),
                "appctl {} as {}",
                args.join(" "),
                who.map_or("root", |u| u.name.as_str())
            );
        }
    }
}
