//! The quickstart, `examples/quickstart/run.sh`, run the way a new user
//! runs it, without a terminal: it picks or checks its ports, installs its
//! pinned venv, starts the daemon, and the commands it prints reach that
//! daemon (its own socket, its own status port) and nothing else.
//!
//! Needs root (the script creates the app's user and runs appvisord), and
//! PyPI for the venv's pinned packages, as `.ci/run` does.

use std::io::{BufRead as _, BufReader};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use appvisor_tests::daemon::describe_output;
use appvisor_tests::{bins, free_port, procfs, require_root, Prefix, TestUser};
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

/// Creating the venv and installing its pinned packages comes first.
const READY_DEADLINE: Duration = Duration::from_secs(240);
const STOP_DEADLINE: Duration = Duration::from_secs(30);

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/quickstart/run.sh")
}

/// A running `run.sh`, in its own process group, killed with its daemon
/// and their cgroup on drop.
struct Quickstart {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
    cgroup: String,
}

impl Quickstart {
    fn start(args: &[&str], cgroup: &str) -> Quickstart {
        let mut child = Command::new(script())
            .args(args)
            .args(["--bin-dir"])
            .arg(bins::target_dir())
            .args(["--cgroup", cgroup])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("NO_COLOR", "1")
            .process_group(0)
            .spawn()
            .expect("running examples/quickstart/run.sh");
        let (send, lines) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().expect("piped")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("piped")),
        ] {
            let send = send.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if send.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Quickstart {
            child,
            lines,
            seen: Vec::new(),
            cgroup: cgroup.to_owned(),
        }
    }

    /// Reads output until a line satisfies `done`, or panics with all of it.
    fn wait_for(&mut self, what: &str, deadline: Duration, done: impl Fn(&str) -> bool) -> String {
        let end = Instant::now() + deadline;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if done(&line) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "run.sh: no {what} within {deadline:?}; its output:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// The commands printed after "In another terminal, try:".
    fn printed_commands(&mut self) -> Vec<String> {
        self.wait_for("commands", Duration::from_secs(10), |line| {
            line.starts_with("In another terminal")
        });
        let mut commands = Vec::new();
        loop {
            let line = self.wait_for("the end of the commands", Duration::from_secs(10), |_| true);
            if line.starts_with("Stop the daemon") {
                return commands;
            }
            if let Some(command) = line.strip_prefix("  ") {
                commands.push(command.to_owned());
            }
        }
    }

    /// SIGTERM, as Ctrl-C would: the script stops the daemon, which stops
    /// the app. Returns the script's exit code.
    fn stop(&mut self) -> Option<i32> {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).expect("pid fits"));
        kill(pid, Signal::SIGTERM).expect("signalling run.sh");
        let end = Instant::now() + STOP_DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting for run.sh") {
                return status.code();
            }
            assert!(
                Instant::now() < end,
                "run.sh still running {STOP_DEADLINE:?} after SIGTERM; its output:\n{}",
                self.seen.join("\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Quickstart {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let group = Pid::from_raw(i32::try_from(self.child.id()).expect("pid fits"));
            let _ = killpg(group, Signal::SIGKILL);
            let _ = self.child.wait();
        }
        let Some(root) = procfs::cgroup2_root() else {
            return;
        };
        let own = procfs::cgroup_of(std::process::id()).unwrap_or_default();
        let dir = root.join(own).join(&self.cgroup);
        procfs::kill_cgroup_tree(&dir, Duration::from_secs(5));
        procfs::remove_cgroup_tree(&dir);
    }
}

/// Runs a printed command as the user would paste it; panics unless it
/// succeeds.
fn run_printed(command: &str) -> String {
    let out = Command::new("sh")
        .args(["-c", command])
        .output()
        .expect("running sh");
    assert!(
        out.status.success(),
        "the printed command `{command}` failed: {}",
        describe_output(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The value of `--flag VALUE` in a printed command line.
fn socket_of(command: &str) -> &str {
    command
        .split_whitespace()
        .skip_while(|word| *word != "--socket")
        .nth(1)
        .unwrap_or_else(|| panic!("no --socket in `{command}`"))
}

#[test]
fn quickstart_runs_on_the_ports_it_is_given_and_its_commands_reach_its_own_daemon() {
    require_root!();
    let user = TestUser::ensure("avt-quickstart");
    let prefix = Prefix::new();
    let demo = prefix.path().join("demo");
    let port = free_port();
    let status_port = loop {
        let candidate = free_port();
        if candidate != port {
            break candidate;
        }
    };
    let cgroup = format!("avt-qs-{}", std::process::id());
    let (port_arg, status_arg) = (port.to_string(), status_port.to_string());
    let mut quickstart = Quickstart::start(
        &[
            "--port",
            &port_arg,
            "--status-port",
            &status_arg,
            "--prefix",
            demo.to_str().expect("utf-8 prefix"),
            "--user",
            &user.name,
        ],
        &cgroup,
    );
    quickstart.wait_for("ready line", READY_DEADLINE, |line| {
        line.starts_with("==> ready:")
    });
    let commands = quickstart.printed_commands();

    // The pinned versions, and nothing else, are in the venv it made.
    let freeze = Command::new(demo.join("venv/bin/pip"))
        .args(["freeze", "--disable-pip-version-check"])
        .output()
        .expect("pip freeze");
    let installed = String::from_utf8_lossy(&freeze.stdout);
    let pinned = std::fs::read_to_string(script().with_file_name("requirements.txt"))
        .expect("requirements.txt");
    let pinned: Vec<&str> = pinned.lines().filter(|l| !l.starts_with('#')).collect();
    let installed: Vec<&str> = installed.lines().collect();
    assert_eq!(installed, pinned, "the venv holds exactly the pins");

    // Every printed command works and reaches this daemon.
    let socket = demo.join("run/ctl.sock");
    let appctl: Vec<&String> = commands.iter().filter(|c| c.contains("appctl")).collect();
    assert!(appctl.len() >= 3, "appctl commands printed: {commands:?}");
    for command in &appctl {
        assert_eq!(
            Path::new(socket_of(command)),
            socket,
            "`{command}` names this daemon's socket"
        );
    }
    let curls: Vec<&String> = commands.iter().filter(|c| c.starts_with("curl ")).collect();
    assert_eq!(
        curls.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
        [
            format!("curl http://127.0.0.1:{port}/"),
            format!("curl http://127.0.0.1:{status_port}/metrics")
        ],
        "curl commands name the ports given"
    );
    for command in &commands {
        let out = run_printed(command);
        if command.ends_with(" status") {
            assert!(
                out.contains("hello") && out.contains("running"),
                "{command}:\n{out}"
            );
        } else if command.ends_with(&format!(":{port}/")) {
            assert!(
                out.starts_with(&format!("hello from {}", user.name)),
                "{command}:\n{out}"
            );
        } else if command.ends_with("/metrics") {
            assert!(
                out.contains("appvisor_app_up{app=\"hello\"} 1"),
                "{command}:\n{out}"
            );
        }
    }

    // Ctrl-C (SIGTERM here) stops the app and the daemon, and run.sh exits 0.
    let status = Command::new(bins::appctl())
        .arg("--socket")
        .arg(&socket)
        .args(["status", "hello", "--json"])
        .output()
        .expect("appctl status --json");
    let list: appvisor_tests::AppList =
        serde_json::from_slice(&status.stdout).expect("status --json");
    let pid = list.apps[0].pid.expect("hello runs");
    assert_eq!(quickstart.stop(), Some(0), "run.sh exit status");
    assert!(!procfs::process_exists(pid), "hello ({pid}) was stopped");
}

#[test]
fn quickstart_refuses_a_port_in_use_and_names_the_flag_to_change() {
    require_root!();
    let held = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("binding a port");
    let busy = held.local_addr().expect("local address").port().to_string();
    let free = free_port().to_string();
    for (args, flag) in [
        (["--port", &busy, "--status-port", &free], "--port"),
        (["--port", &free, "--status-port", &busy], "--status-port"),
    ] {
        let out = Command::new(script())
            .args(args)
            .args(["--bin-dir", "/nonexistent", "--user", "avt-quickstart"])
            .output()
            .expect("running run.sh");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{}", describe_output(&out));
        assert!(
            stderr.contains(&format!(
                "port {busy} is in use: choose another with {flag}"
            )),
            "{}",
            describe_output(&out)
        );
    }
    drop(held);
}

#[test]
fn quickstart_moves_off_default_ports_that_are_taken() {
    require_root!();
    let user = TestUser::ensure("avt-quickstart");
    // 8000 and 9750 are the defaults: held here, or by someone else.
    let held: Vec<TcpListener> = [8000, 9750]
        .into_iter()
        .filter_map(|port| TcpListener::bind((Ipv4Addr::LOCALHOST, port)).ok())
        .collect();
    let prefix = Prefix::new();
    let demo = prefix.path().join("demo");
    let venv = bins::venv();
    let cgroup = format!("avt-qsd-{}", std::process::id());
    let mut quickstart = Quickstart::start(
        &[
            "--prefix",
            demo.to_str().expect("utf-8 prefix"),
            "--venv",
            venv.to_str().expect("utf-8 venv"),
            "--user",
            &user.name,
        ],
        &cgroup,
    );
    let starting = quickstart.wait_for("start line", READY_DEADLINE, |line| {
        line.starts_with("==> starting appvisord")
    });
    quickstart.wait_for("ready line", READY_DEADLINE, |line| {
        line.starts_with("==> ready:")
    });
    let commands = quickstart.printed_commands();
    let port_of = |prefix: &str| -> u16 {
        let rest = starting
            .split(prefix)
            .nth(1)
            .unwrap_or_else(|| panic!("{prefix} in {starting:?}"));
        rest.trim_end_matches(')')
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|digits| digits.parse().ok())
            .unwrap_or_else(|| panic!("a port after {prefix} in {starting:?}"))
    };
    let (status_port, port) = (port_of("status port "), port_of("app port "));
    assert!((8001..=8020).contains(&port), "app port {port}");
    assert!(
        (9751..=9770).contains(&status_port),
        "status port {status_port}"
    );
    for command in &commands {
        if command.starts_with("curl ") {
            let out = run_printed(command);
            assert!(!out.is_empty(), "{command} answers");
        }
    }
    assert!(commands
        .iter()
        .any(|c| c == &format!("curl http://127.0.0.1:{status_port}/metrics")));
    assert_eq!(quickstart.stop(), Some(0), "run.sh exit status");
    drop(held);
}
