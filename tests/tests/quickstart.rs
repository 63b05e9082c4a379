//! The quickstart, `examples/quickstart/run.sh`, run the way a new user
//! runs it, without a terminal: it picks or checks its ports, installs its
//! pinned venv, starts the daemon, and the commands it prints reach that
//! daemon (its own socket, its own status port) and nothing else.
//!
//! Needs root (the script creates the app's user and runs appvisord), and
//! PyPI for the venv's pinned packages, as `.ci/run` does.

use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use appvisor_tests::daemon::describe_output;
use appvisor_tests::quickstart::{run_printed, script, Quickstart};
use appvisor_tests::{bins, free_port, procfs, require_root, Prefix, TestUser};

/// Creating the venv and installing its pinned packages comes first.
const READY_DEADLINE: Duration = Duration::from_secs(240);

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
        &bins::target_dir(),
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
        &bins::target_dir(),
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
