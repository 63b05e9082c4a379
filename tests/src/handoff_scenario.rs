//! The scenario of the hand-off test, against any appvisord: the
//! one `cargo test` built (tests/tests/handoff.rs, `appctl reexec`) or the
//! one a Debian package installed (tests/tests/package.rs, upgrades).
//!
//! Next to a running web app it adds a chatty app writing numbered lines
//! to stdout, a sleeper in backoff and an app an operator stopped; the
//! caller hands the daemon over as often as it likes, with load on the web
//! app; then [`Scenario::check`] proves that nothing was restarted, no
//! line lost, the backoff kept its schedule and the stopped app stayed
//! stopped. The load is the caller's, and so is judging it.

use std::path::PathBuf;
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use appvisor_protocol::{AppList, AppStatus, State};

use crate::app::AppBuilder;
use crate::daemon::{describe_output, Daemon};
use crate::users::TestUser;
use crate::wait::poll_until;

/// The sleeper's first backoff: the hand-offs must take longer than this,
/// so a hand-off that restarted the backoff timer would keep it from
/// firing.
pub const SLEEPER_BACKOFF: Duration = Duration::from_secs(4);

/// The sleeper's longest backoff.
const SLEEPER_BACKOFF_MAX: Duration = Duration::from_secs(60);
/// How often the sleeper is watched during the hand-offs.
const WATCH: Duration = Duration::from_millis(100);

/// Writes lines `line N` to stdout, flushing each, 2 ms apart.
pub const CHATTY: &str = "import sys, time\nn = 0\nwhile True:\n    n += 1\n    sys.stdout.write('line %d\\n' % n)\n    sys.stdout.flush()\n    time.sleep(0.002)\n";

/// What the scenario needs of a running appvisord.
pub trait Supervisor {
    /// Runs the real `appctl ARGS…` against this daemon.
    fn appctl(&self, args: &[&str]) -> Output;
    /// Writes `app`'s file into the daemon's apps.d; returns its path.
    fn write_app(&self, app: &AppBuilder) -> PathBuf;
    /// The directory the daemon keeps `app`'s output in.
    fn app_log_dir(&self, app: &str) -> PathBuf;
    /// The daemon's pid.
    fn pid(&self) -> u32;
    /// The daemon's recent log, for failure messages.
    fn log_tail(&self) -> String;

    /// `appctl ARGS…`, asserted to exit 0: its stdout.
    fn appctl_ok(&self, args: &[&str]) -> String {
        let out = self.appctl(args);
        assert!(
            out.status.success(),
            "appctl {}: {}\n{}",
            args.join(" "),
            describe_output(&out),
            self.log_tail()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `appctl status APP --json`, parsed; `None` when it did not answer
    /// with the app.
    fn try_app(&self, name: &str) -> Option<AppStatus> {
        let out = self.appctl(&["status", name, "--json"]);
        let list: AppList = serde_json::from_slice(&out.stdout).ok()?;
        list.apps.into_iter().find(|app| app.name == name)
    }

    /// One app's status; panics when the daemon does not list it.
    fn app(&self, name: &str) -> AppStatus {
        self.try_app(name).unwrap_or_else(|| {
            panic!(
                "appvisord does not list app {name:?}: {}\n{}",
                describe_output(&self.appctl(&["status", name, "--json"])),
                self.log_tail()
            )
        })
    }

    /// Waits until app `name` is in `state`, returning its status.
    fn wait_for_state(&self, name: &str, state: State, deadline: Duration) -> AppStatus {
        let mut last = None;
        if !poll_until(deadline, || {
            last = self.try_app(name);
            last.as_ref().is_some_and(|app| app.state == state)
        }) {
            panic!(
                "timed out after {deadline:?} waiting for app {name:?} to be {state}; \
                 its last status: {last:#?}\n{}",
                self.log_tail()
            );
        }
        last.expect("a status after the poll")
    }
}

impl Supervisor for Daemon {
    fn appctl(&self, args: &[&str]) -> Output {
        Daemon::appctl(self, args)
    }

    fn write_app(&self, app: &AppBuilder) -> PathBuf {
        let path = self.apps_dir().join(format!("{}.toml", app.name()));
        std::fs::write(&path, app.to_toml())
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        path
    }

    fn app_log_dir(&self, app: &str) -> PathBuf {
        self.log_dir().join(app)
    }

    fn pid(&self) -> u32 {
        Daemon::pid(self)
    }

    fn log_tail(&self) -> String {
        Daemon::log_tail(self, 60)
    }

    fn appctl_ok(&self, args: &[&str]) -> String {
        Daemon::appctl_ok(self, args)
    }

    fn app(&self, name: &str) -> AppStatus {
        Daemon::app(self, name)
    }

    fn wait_for_state(&self, name: &str, state: State, deadline: Duration) -> AppStatus {
        Daemon::wait_for_state(self, name, state, deadline)
    }
}

/// The scenario's apps, set up and waiting for hand-offs.
#[derive(Debug)]
pub struct Scenario {
    web: String,
    chatty: String,
    sleeper: String,
    parked: String,
    daemon_pid: u32,
    web_pid: u32,
    chatty_pid: u32,
    /// The sleeper when its backoff began.
    sleeper_before: AppStatus,
    backoff_began: Instant,
    /// How long before `backoff_began` the second began in which the
    /// daemon says the backoff began (the status's `since`): it began no
    /// earlier than that, and was seen late by up to all of it.
    backoff_lead: Duration,
    /// When each of the sleeper's next tries was seen, after its backoff
    /// began.
    sleeper_retries: Vec<Duration>,
    /// How long the hand-offs took, from the backoff's start.
    took: Option<Duration>,
}

impl Scenario {
    /// Adds `PREFIXchatty`, `PREFIXsleeper` and `PREFIXparked` (run as
    /// `user`) next to `web`, which runs; waits until chatty runs, parked
    /// is stopped by the operator and the sleeper is in backoff.
    pub fn set_up(sup: &impl Supervisor, user: &TestUser, web: &str, prefix: &str) -> Scenario {
        let chatty = format!("{prefix}chatty");
        let sleeper = format!("{prefix}sleeper");
        let parked = format!("{prefix}parked");
        sup.write_app(&AppBuilder::new(
            &chatty,
            user,
            ["/usr/bin/python3", "-c", CHATTY],
        ));
        // Fails at once every time: the next try 3 to 4 s later (a quarter
        // of jitter), then 6 to 8 s after that.
        sup.write_app(
            &AppBuilder::new(&sleeper, user, ["/bin/sh", "-c", "exit 3"])
                .start_secs(Duration::from_secs(1))
                .backoff(SLEEPER_BACKOFF, SLEEPER_BACKOFF_MAX),
        );
        sup.write_app(&AppBuilder::new(&parked, user, ["/bin/sleep", "infinity"]));
        sup.appctl_ok(&["update"]);
        sup.wait_for_state(&chatty, State::Running, Duration::from_secs(30));
        sup.wait_for_state(&parked, State::Running, Duration::from_secs(30));
        sup.appctl_ok(&["stop", &parked]);

        let web_pid = sup.app(web).pid.expect("web runs");
        let chatty_pid = sup.app(&chatty).pid.expect("chatty runs");
        let daemon_pid = sup.pid();
        let sleeper_before = sup.wait_for_state(&sleeper, State::Backoff, Duration::from_secs(30));
        let backoff_lead = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH + Duration::from_secs(sleeper_before.since))
            .unwrap_or_default();
        Scenario {
            web: web.to_owned(),
            chatty,
            sleeper,
            parked,
            daemon_pid,
            web_pid,
            chatty_pid,
            sleeper_before,
            backoff_began: Instant::now(),
            backoff_lead,
            sleeper_retries: Vec::new(),
            took: None,
        }
    }

    /// How many apps a hand-off hands over: web and the three added.
    pub fn apps(&self) -> usize {
        4
    }

    /// Runs `hand_off(N)` for N in `0..count`, `pause` apart, while a
    /// thread watches for the sleeper's tries (every 100 ms, through the
    /// hand-offs: one that takes seconds, like a package upgrade, must
    /// not hide when a try came).
    pub fn hand_offs<S: Supervisor + Sync>(
        &mut self,
        sup: &S,
        count: usize,
        pause: Duration,
        mut hand_off: impl FnMut(usize),
    ) {
        let stop = AtomicBool::new(false);
        let (sleeper, began) = (&self.sleeper, self.backoff_began);
        let mut failures = self.sleeper_before.failures;
        let retries = std::thread::scope(|scope| {
            let watcher = scope.spawn(|| {
                let mut retries = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    // A status asked for during a hand-off may fail: the
                    // next one answers.
                    if let Some(now) = sup.try_app(sleeper) {
                        for _ in failures..now.failures {
                            retries.push(began.elapsed());
                        }
                        failures = failures.max(now.failures);
                    }
                    std::thread::sleep(WATCH);
                }
                retries
            });
            for n in 0..count {
                hand_off(n);
                std::thread::sleep(pause);
            }
            stop.store(true, Ordering::Relaxed);
            watcher.join().expect("the sleeper's watcher panicked")
        });
        self.sleeper_retries = retries;
        self.took = Some(self.backoff_began.elapsed());
    }

    /// How long the hand-offs took, from the sleeper's backoff on.
    pub fn took(&self) -> Duration {
        self.took.expect("the hand-offs ran")
    }

    /// After the hand-offs: the daemon and every app kept their pids and
    /// states, the sleeper its schedule, and chatty's log has every line
    /// once and in order.
    pub fn check(&self, sup: &impl Supervisor) {
        let took = self.took();
        assert_eq!(sup.pid(), self.daemon_pid);
        let web = sup.app(&self.web);
        assert_eq!(web.pid, Some(self.web_pid), "web kept its pid");
        assert_eq!(web.state, State::Running);
        let chatty = sup.app(&self.chatty);
        assert_eq!(chatty.pid, Some(self.chatty_pid), "chatty kept its pid");
        assert_eq!(chatty.restarts, 0);
        let parked = sup.app(&self.parked);
        assert_eq!(
            parked.state,
            State::Stopped,
            "the stopped app stays stopped"
        );
        assert!(parked.stopped_by.is_some(), "and says who stopped it");
        self.check_schedule(sup, took);
        self.check_lines(sup);
    }

    /// The sleeper's backoff kept its schedule across the hand-offs:
    /// every try it made came when due (the first 3 to 4 s after the
    /// backoff began, each next wait twice as long, less up to a quarter),
    /// at least one came while they ran, and the failure count went on
    /// from where it was.
    fn check_schedule(&self, sup: &impl Supervisor, took: Duration) {
        let retries = &self.sleeper_retries;
        assert!(
            took > SLEEPER_BACKOFF + Duration::from_secs(1),
            "the hand-offs took only {took:?}"
        );
        assert!(
            !retries.is_empty(),
            "the sleeper never retried during the hand-offs ({took:?})"
        );
        let mut last = Duration::ZERO;
        let mut wait = SLEEPER_BACKOFF;
        for (n, &at) in retries.iter().enumerate() {
            // Seen within a poll and an `appctl status` of when it came.
            // The first wait counts from when the backoff was seen, late
            // by up to `backoff_lead` (the set-up waits for other apps
            // first); each next one from when the previous try was seen,
            // a little late, so a second of slack below.
            let shortest = wait * 3 / 4;
            let earliest = if n == 0 {
                shortest.saturating_sub(self.backoff_lead)
            } else {
                last + shortest - Duration::from_secs(1).min(shortest)
            };
            let latest = last + wait + Duration::from_millis(1500);
            assert!(
                (earliest..=latest).contains(&at),
                "the sleeper's try {} came {at:?} after its backoff began, \
                 due between {earliest:?} and {latest:?} (all tries: {retries:?})",
                n + 1
            );
            last = at;
            wait = (wait * 2).min(SLEEPER_BACKOFF_MAX);
        }
        let sleeper_now = sup.app(&self.sleeper);
        assert_eq!(sleeper_now.state, State::Backoff, "{sleeper_now:?}");
        // One more try may have come since the watcher stopped, if due.
        let seen = self.sleeper_before.failures + retries.len() as u32;
        let next_due = self.backoff_began.elapsed() >= last + wait * 3 / 4;
        assert!(
            sleeper_now.failures == seen || (next_due && sleeper_now.failures == seen + 1),
            "the sleeper's failures go on from {} through {} tries: {sleeper_now:?}",
            self.sleeper_before.failures,
            retries.len()
        );
    }

    /// Every numbered line in chatty's log once and in order.
    fn check_lines(&self, sup: &impl Supervisor) {
        let path = sup.app_log_dir(&self.chatty).join("stdout.log");
        let log = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading chatty's log {}: {e}", path.display()));
        let mut expected = 1u64;
        for line in log.lines() {
            let n: u64 = line
                .strip_prefix("line ")
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("a mangled line {line:?} in chatty's log"));
            assert_eq!(n, expected, "line {expected} missing or repeated");
            expected += 1;
        }
        assert!(expected > 100, "chatty wrote only {expected} lines");
    }
}
