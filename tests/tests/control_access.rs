//! Who may do what through the control socket: real Unix users run the real
//! `appctl` (and curl, for the event stream) against two apps, for every
//! route of DESIGN.md's Control API, and the audit trail names them.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Output};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use appvisor_protocol::{Event, State};
use appvisor_tests::daemon::describe_output;
use appvisor_tests::{
    require_root, AppBuilder, Daemon, DaemonOptions, Prefix, Readiness, TestUser,
};

const ADMIN_GROUP: &str = "avt-ctl-admins";
const DEV_GROUP: &str = "avt-ctl-devs";

/// The people of the matrix.
struct Cast {
    admin: TestUser,
    alice: TestUser,
    bob: TestUser,
    eve: TestUser,
    app_user: TestUser,
}

fn cast() -> Cast {
    Cast {
        admin: TestUser::ensure_in_groups("avt-ctl-admin", &[ADMIN_GROUP]),
        alice: TestUser::ensure("avt-ctl-alice"),
        bob: TestUser::ensure_in_groups("avt-ctl-bob", &[DEV_GROUP]),
        eve: TestUser::ensure("avt-ctl-eve"),
        app_user: TestUser::ensure("avt-app1"),
    }
}

/// A long-running app that ignores HUP and USR1, so `reload` and `signal`
/// leave it running with the same pid.
fn patient(name: &str, user: &TestUser) -> AppBuilder {
    AppBuilder::new(
        name,
        user,
        ["/bin/sh", "-c", "trap '' HUP USR1; exec sleep infinity"],
    )
    .readiness(Readiness::None)
    .start_secs(Duration::from_millis(300))
}

/// `shop` is alice's (by name), `blog` is bob's (through DEV_GROUP).
fn two_apps(prefix: &Prefix, cast: &Cast) -> Daemon {
    patient("shop", &cast.app_user)
        .extra_toml(&format!("[access]\nusers = [\"{}\"]", cast.alice.name))
        .write(prefix);
    patient("blog", &cast.app_user)
        .extra_toml(&format!("[access]\ngroups = [\"{DEV_GROUP}\"]"))
        .write(prefix);
    let daemon = Daemon::start(
        prefix,
        DaemonOptions {
            admin_groups: vec![ADMIN_GROUP.to_owned()],
            ..DaemonOptions::default()
        },
    );
    for app in ["shop", "blog"] {
        daemon.wait_for_state(app, State::Running, Duration::from_secs(15));
    }
    daemon
}

/// Who runs a command: root (the test itself) or a test user.
struct Caller<'a> {
    name: &'a str,
    user: Option<&'a TestUser>,
    admin: bool,
    /// The apps of the pair this caller may operate.
    apps: &'a [&'a str],
}

impl Caller<'_> {
    fn appctl(&self, daemon: &Daemon, args: &[&str]) -> Output {
        match self.user {
            Some(user) => daemon.appctl_as(user, args),
            None => daemon.appctl(args),
        }
    }

    /// `curl` as this caller: the HTTP status of `GET path`, reading the
    /// body for at most `max_time`.
    fn http_status(&self, daemon: &Daemon, path: &str) -> String {
        let mut cmd = match self.user {
            Some(user) => user.command("curl"),
            None => Command::new("curl"),
        };
        cmd.args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "1",
        ])
        .arg("--unix-socket")
        .arg(daemon.socket())
        .arg(format!("http://localhost{path}"));
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

fn expect(daemon: &Daemon, caller: &Caller<'_>, args: &[&str], code: i32, out: &Output) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "appctl {} as {} should exit {code}\n{}\n{}",
        args.join(" "),
        caller.name,
        describe_output(out),
        daemon.log_tail(30)
    );
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn pid_of(daemon: &Daemon, app: &str) -> u32 {
    daemon
        .app(app)
        .pid
        .unwrap_or_else(|| panic!("{app} has no pid: {:#?}", daemon.app(app)))
}

/// Every app-scoped route, as `caller`, against one app it may not operate:
/// each answers not found (exit 2) and nothing happens to the app.
fn denied_app_routes(daemon: &Daemon, caller: &Caller<'_>, app: &str) {
    let pid = pid_of(daemon, app);
    let commands: [&[&str]; 8] = [
        &["status", app],
        &["security", app],
        &["logs", app, "-n", "5"],
        &["signal", "USR1", app],
        &["reload", app],
        &["restart", app],
        &["stop", app],
        &["start", app],
    ];
    for args in commands {
        let out = caller.appctl(daemon, args);
        expect(daemon, caller, args, 2, &out);
        let user = caller.user.map_or("root", |u| u.name.as_str());
        let verb = match args[0] {
            "status" | "security" => "see",
            "logs" => "read the logs of",
            other => other,
        };
        let want = format!(
            "appctl: no app named {app} that {user} may {verb} (if it exists, ask an admin to add you to [access] in apps.d/{app}.toml)\n"
        );
        assert_eq!(
            stderr(&out),
            want,
            "appctl {} as {}",
            args.join(" "),
            caller.name
        );
    }
    let status = daemon.app(app);
    assert_eq!(
        (status.state, status.pid),
        (State::Running, Some(pid)),
        "{}'s refused calls changed {app}",
        caller.name
    );
}

/// Every app-scoped route, as `caller`, against one app it may operate:
/// each succeeds and does what it says.
fn allowed_app_routes(daemon: &Daemon, caller: &Caller<'_>, app: &str) {
    let run = |args: &[&str]| {
        let out = caller.appctl(daemon, args);
        expect(daemon, caller, args, 0, &out);
        stdout(&out)
    };
    let pid = pid_of(daemon, app);
    let shown = run(&["status", app]);
    assert!(
        shown.lines().nth(1).is_some_and(|l| l.starts_with(app)),
        "appctl status {app} as {}:\n{shown}",
        caller.name
    );
    run(&["logs", app, "-n", "5"]);
    let security = run(&["security", app]);
    assert!(
        security.contains("exposure"),
        "appctl security {app} as {}:\n{security}",
        caller.name
    );
    assert_eq!(
        run(&["signal", "USR1", app]),
        format!("{app}: sent USR1 (pid {pid})\n")
    );
    run(&["reload", app]);
    assert_eq!(
        pid_of(daemon, app),
        pid,
        "USR1 and HUP are ignored by {app}"
    );

    let restarted = run(&["restart", app]);
    let new_pid = pid_of(daemon, app);
    assert_ne!(
        new_pid, pid,
        "restart by {} gave {app} a new pid",
        caller.name
    );
    assert_eq!(restarted, format!("{app}: running (pid {new_pid})\n"));

    assert_eq!(run(&["stop", app]), format!("{app}: stopped\n"));
    let stopped = daemon.app(app);
    assert_eq!(stopped.state, State::Stopped);
    let by = stopped
        .stopped_by
        .expect("a stopped app says who stopped it");
    assert_eq!(by.uid, caller.user.map_or(0, |u| u.uid));

    run(&["start", app]);
    let started = daemon.app(app);
    assert_eq!(started.state, State::Running, "{}", caller.name);
    assert_eq!(started.stopped_by, None);
}

fn daemon_routes(daemon: &Daemon, caller: &Caller<'_>) {
    // whoami: anyone.
    let out = caller.appctl(daemon, &["whoami"]);
    expect(daemon, caller, &["whoami"], 0, &out);
    let role = if caller.admin {
        "role: admin".to_owned()
    } else if caller.apps.is_empty() {
        "role: none".to_owned()
    } else {
        format!("role: operator of {}", caller.apps.join(", "))
    };
    assert!(
        stdout(&out).trim_end().ends_with(&role),
        "whoami as {}: {}",
        caller.name,
        stdout(&out)
    );

    // status: exactly the apps the caller may operate, none for a stranger.
    let out = caller.appctl(daemon, &["status", "--json"]);
    expect(daemon, caller, &["status", "--json"], 0, &out);
    let list: appvisor_protocol::AppList = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("status --json as {}: {e}\n{}", caller.name, stdout(&out)));
    let mut seen: Vec<&str> = list.apps.iter().map(|a| a.name.as_str()).collect();
    seen.sort_unstable();
    let mut want: Vec<&str> = caller.apps.to_vec();
    want.sort_unstable();
    assert_eq!(seen, want, "apps {} sees", caller.name);
    let out = caller.appctl(daemon, &["status"]);
    expect(daemon, caller, &["status"], 0, &out);
    assert_eq!(
        stdout(&out).lines().count(),
        1 + caller.apps.len(),
        "status table as {}:\n{}",
        caller.name,
        stdout(&out)
    );

    // events and config apply: admins only, forbidden (403, exit 4) to others.
    let code = caller.http_status(daemon, "/v1/events");
    assert_eq!(
        code,
        if caller.admin { "200" } else { "403" },
        "GET /v1/events as {}",
        caller.name
    );
    let out = caller.appctl(daemon, &["update"]);
    if caller.admin {
        expect(daemon, caller, &["update"], 0, &out);
        assert_eq!(stdout(&out), "unchanged: blog, shop\n");
    } else {
        expect(daemon, caller, &["update"], 4, &out);
        let user = caller.user.map_or("root", |u| u.name.as_str());
        assert_eq!(
            stderr(&out),
            format!("appctl: permission denied: {user} may not apply the configuration (only admins may: root, [control] admin_users or admin_groups)\n")
        );
    }
}

#[test]
fn access_matrix_for_every_route_and_role() {
    require_root!();
    let cast = cast();
    let prefix = Prefix::new();
    let daemon = two_apps(&prefix, &cast);
    let both: &[&str] = &["blog", "shop"];
    let callers = [
        Caller {
            name: "root",
            user: None,
            admin: true,
            apps: both,
        },
        Caller {
            name: "a member of admin_groups",
            user: Some(&cast.admin),
            admin: true,
            apps: both,
        },
        Caller {
            name: "an operator named in [access].users",
            user: Some(&cast.alice),
            admin: false,
            apps: &["shop"],
        },
        Caller {
            name: "an operator through [access].groups",
            user: Some(&cast.bob),
            admin: false,
            apps: &["blog"],
        },
        Caller {
            name: "a stranger",
            user: Some(&cast.eve),
            admin: false,
            apps: &[],
        },
    ];
    for caller in &callers {
        daemon_routes(&daemon, caller);
        for app in ["shop", "blog"] {
            if caller.apps.contains(&app) {
                allowed_app_routes(&daemon, caller, app);
            } else {
                denied_app_routes(&daemon, caller, app);
            }
        }
    }
    // An app that does not exist looks exactly like one the caller may not see.
    let out = daemon.appctl_as(&cast.eve, ["restart", "nosuchapp"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe_output(&out));
    assert_eq!(
        stderr(&out),
        format!("appctl: no app named nosuchapp that {} may restart (if it exists, ask an admin to add you to [access] in apps.d/nosuchapp.toml)\n", cast.eve.name)
    );
}

/// Reads `GET /v1/events` as root into a channel of events.
fn follow_events(daemon: &Daemon) -> mpsc::Receiver<Event> {
    let mut stream =
        UnixStream::connect(daemon.socket()).expect("connecting to the control socket");
    stream
        .write_all(b"GET /v1/events HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .expect("sending the events request");
    // The daemon subscribes before it answers: once the status line is
    // here, no later event is missed.
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    reader
        .read_line(&mut status)
        .expect("reading the events status line");
    assert!(
        status.starts_with("HTTP/1.1 200"),
        "GET /v1/events as root: {status}"
    );
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        // The body is chunked: chunk sizes and blank lines are not JSON, and
        // every event is one whole chunk ending in a newline.
        for line in reader.lines() {
            let Ok(line) = line else { return };
            if let Ok(event) = serde_json::from_str::<Event>(line.trim()) {
                if tx.send(event).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

#[test]
fn audit_of_a_restart_names_the_caller_uid_and_the_app() {
    require_root!();
    let cast = cast();
    let prefix = Prefix::new();
    let daemon = two_apps(&prefix, &cast);
    let events = follow_events(&daemon);

    let out = daemon.appctl_as(&cast.alice, ["restart", "shop"]);
    assert!(out.status.success(), "{}", describe_output(&out));
    let out = daemon.appctl_as(&cast.eve, ["restart", "shop"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe_output(&out));

    let mut audits = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while audits.len() < 2 {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match events.recv_timeout(left) {
            Ok(Event::Audit(record)) => audits.push(record),
            Ok(_) => {}
            Err(_) => panic!(
                "no two audit events on /v1/events within 10s; got {audits:#?}\n{}",
                daemon.log_tail(30)
            ),
        }
    }
    let summary: Vec<(u32, &str, Option<&str>, &str, &str)> = audits
        .iter()
        .map(|r| {
            (
                r.uid,
                r.user.as_str(),
                r.app.as_deref(),
                r.action.as_str(),
                r.outcome.as_str(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                cast.alice.uid,
                cast.alice.name.as_str(),
                Some("shop"),
                "restart",
                "ok"
            ),
            (
                cast.eve.uid,
                cast.eve.name.as_str(),
                Some("shop"),
                "restart",
                "not_found"
            ),
        ]
    );
    assert!(audits.iter().all(|r| r.pid.is_some()), "{audits:#?}");

    let log = daemon.log();
    let line = log
        .lines()
        .find(|l| {
            l.contains("audit")
                && l.contains(&format!("uid={}", cast.alice.uid))
                && l.contains("app=\"shop\"")
                && l.contains("action=\"restart\"")
        })
        .unwrap_or_else(|| panic!("no audit line for alice's restart\n{}", daemon.log_tail(40)));
    assert!(line.contains("outcome=\"ok\""), "{line}");
}

/// More apps in one command than the daemon lets one uid hold connections
/// (16): appctl keeps few requests in flight, so none is refused.
#[test]
fn an_operator_restarts_twenty_apps_in_one_command() {
    require_root!();
    let cast = cast();
    let prefix = Prefix::new();
    let names: Vec<String> = (0..20).map(|i| format!("app{i:02}")).collect();
    for name in &names {
        patient(name, &cast.app_user)
            .extra_toml(&format!("[access]\ngroups = [\"{DEV_GROUP}\"]"))
            .write(&prefix);
    }
    let daemon = Daemon::start(&prefix, DaemonOptions::default());
    for name in &names {
        daemon.wait_for_state(name, State::Running, Duration::from_secs(30));
    }
    let mut args = vec!["restart".to_owned()];
    args.extend(names.iter().cloned());
    let out = daemon.appctl_as(&cast.bob, &args);
    assert_eq!(out.status.code(), Some(0), "{}", describe_output(&out));
    let out = daemon.appctl_as(&cast.bob, ["status"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe_output(&out));
    assert!(daemon.status_json().iter().all(|a| a.restarts == 1));
}
