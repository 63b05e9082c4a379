//! `appctl` gives up on a daemon that accepts connections but never
//! answers (`appctl status` once hung for minutes): it exits 5 with a
//! message within its timeout, on by default and set by `--daemon-timeout`
//! or `APPVISOR_DAEMON_TIMEOUT`.

use std::process::Command;
use std::time::{Duration, Instant};

use appvisor_tests::daemon::describe_output;
use appvisor_tests::{require_root, testapps, Daemon, DaemonOptions, Prefix, State, TestUser};
use nix::sys::signal::Signal;

/// SIGSTOPs the daemon, and SIGCONTs it on drop, whatever happens.
struct Stopped<'a>(&'a Daemon);

impl<'a> Stopped<'a> {
    fn new(daemon: &'a Daemon) -> Stopped<'a> {
        daemon.signal(Signal::SIGSTOP);
        Stopped(daemon)
    }
}

impl Drop for Stopped<'_> {
    fn drop(&mut self) {
        self.0.signal(Signal::SIGCONT);
    }
}

/// Runs `appctl ARGS` against `daemon` with `env`, returning its output and
/// how long it took.
fn timed(daemon: &Daemon, env: &[(&str, &str)], args: &[&str]) -> (std::process::Output, Duration) {
    let mut cmd = Command::new(daemon.public_appctl());
    cmd.arg("--socket").arg(daemon.socket()).args(args);
    cmd.env_remove("APPVISOR_DAEMON_TIMEOUT")
        .envs(env.iter().copied());
    let began = Instant::now();
    let out = cmd.output().expect("running appctl");
    (out, began.elapsed())
}

#[test]
fn appctl_exits_5_within_its_timeout_when_the_daemon_does_not_answer() {
    require_root!();
    let user = TestUser::ensure("avt-app1");
    let prefix = Prefix::new();
    testapps::sleeper("sleeper", &user).write(&prefix);
    let daemon = Daemon::start(&prefix, DaemonOptions::default());
    daemon.wait_for_state("sleeper", State::Running, Duration::from_secs(15));

    let stopped = Stopped::new(&daemon);
    struct Case {
        what: &'static str,
        env: &'static [(&'static str, &'static str)],
        args: &'static [&'static str],
        /// How long appctl should wait before giving up.
        within: Duration,
    }
    let cases = [
        Case {
            what: "the flag",
            env: &[],
            args: &["--daemon-timeout", "1s", "status"],
            within: Duration::from_secs(1),
        },
        Case {
            what: "the variable",
            env: &[("APPVISOR_DAEMON_TIMEOUT", "1s")],
            args: &["status", "--json"],
            within: Duration::from_secs(1),
        },
        // A waiting action allows for its own --timeout on top.
        Case {
            what: "a waiting restart",
            env: &[("APPVISOR_DAEMON_TIMEOUT", "1s")],
            args: &["restart", "sleeper", "--timeout", "1s"],
            within: Duration::from_secs(2),
        },
        Case {
            what: "logs",
            env: &[],
            args: &["--daemon-timeout", "500ms", "logs", "sleeper"],
            within: Duration::from_millis(500),
        },
    ];
    for Case {
        what,
        env,
        args,
        within,
    } in cases
    {
        let (out, took) = timed(&daemon, env, args);
        assert_eq!(
            out.status.code(),
            Some(5),
            "{what}\n{}",
            describe_output(&out)
        );
        assert!(
            took >= within && took < within + Duration::from_millis(1500),
            "{what}: gave up after {took:?}, expected {within:?}"
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!(
                "appctl: appvisord at {} did not answer within",
                daemon.socket().display()
            )),
            "{what}\n{}",
            describe_output(&out)
        );
    }
    drop(stopped);

    // Answering again: the same command answers at once. (The restart
    // appctl gave up on was queued in the socket, so the daemon may carry it
    // out now: 3, an app not running yet, is an answer too.)
    let (out, took) = timed(&daemon, &[("APPVISOR_DAEMON_TIMEOUT", "1s")], &["status"]);
    assert!(
        matches!(out.status.code(), Some(0 | 3)) && took < Duration::from_secs(1),
        "{took:?}\n{}",
        describe_output(&out)
    );
}
