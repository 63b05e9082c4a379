//! The machine, event by event: table-driven where the cases are alike,
//! and a random walk that checks `step` against [`TRANSITIONS`].

use std::collections::HashSet;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};

use super::machine::effect_rank;
use super::reason::secs;
use super::*;
use crate::config::{RestartPolicy, RestartSpec, RestartStrategy, Signal};

const TERM: Signal = Signal(SIGTERM);
const HUP: Signal = Signal(SIGHUP);
const ENOENT: &str = "spawn failed at chdir /srv/shop/current: No such file or directory";

fn s(secs: u64) -> Duration {
    Duration::from_secs(secs)
}

fn alice() -> Cause {
    Cause::Operator("alice".to_owned())
}

/// A request nobody waits on.
fn req(cause: Cause) -> Request {
    cause.into()
}

/// A request caller `n` waits on.
fn waiting(cause: Cause, n: u64) -> Request {
    Request {
        cause,
        waiter: Some(RequestId(n)),
    }
}

fn i(n: u64) -> InstanceId {
    InstanceId(n)
}

/// notify readiness, policy always, start_secs 1s, backoff 1s..60s,
/// max_retries 0, stop TERM with 30s timeout, reload HUP, no probe.
fn params() -> Params {
    Params {
        restart: RestartSpec {
            policy: RestartPolicy::Always,
            start_secs: s(1),
            max_retries: 0,
            backoff_initial: s(1),
            backoff_max: s(60),
            strategy: RestartStrategy::StopStart,
        },
        ready_after_start_secs: false,
        needs_notify: true,
        needs_probe: false,
        has_probe: false,
        readiness_timeout: s(60),
        stop: StopParams {
            signal: TERM,
            timeout: s(30),
        },
        reload_signal: HUP,
    }
}

fn with(f: impl FnOnce(&mut Params)) -> Params {
    let mut p = params();
    f(&mut p);
    p
}

/// The timer of instance `n`.
fn timer(n: u64, secs: u64, generation: u64) -> Effect {
    Effect::SetTimer {
        key: TimerKey::Instance(i(n)),
        after: s(secs),
        generation,
    }
}

fn backoff(secs: u64, generation: u64) -> Effect {
    Effect::SetTimer {
        key: TimerKey::Backoff,
        after: s(secs),
        generation,
    }
}

fn cancel(n: u64) -> Effect {
    Effect::CancelTimer(TimerKey::Instance(i(n)))
}

fn exited(n: u64, code: i32, cgroup_empty: bool) -> Event {
    Event::MainExited {
        instance: i(n),
        status: ExitStatus::Code(code),
        cgroup_empty,
    }
}

fn spawned(n: u64, pid: u32) -> Event {
    Event::Spawned {
        instance: i(n),
        pid,
    }
}

fn notified(n: u64) -> Event {
    Event::Ready {
        instance: i(n),
        signal: ReadySignal::Notify,
    }
}

fn probed(n: u64) -> Event {
    Event::Ready {
        instance: i(n),
        signal: ReadySignal::Probe,
    }
}

fn empty(n: u64) -> Event {
    Event::CgroupEmpty { instance: i(n) }
}

fn failed(n: u64) -> Event {
    Event::SpawnFailed {
        instance: i(n),
        reason: ENOENT.to_owned(),
    }
}

fn answer(n: u64, answer: Answer) -> Effect {
    Effect::Answer(RequestId(n), answer)
}

/// A machine and a clock that tests move forward.
struct Run {
    m: Machine,
    now: Instant,
}

impl Run {
    fn new(params: Params) -> Run {
        let now = Instant::now();
        Run {
            m: Machine::new(params, now, 0),
            now,
        }
    }

    fn wait(&mut self, d: Duration) -> &mut Run {
        self.now += d;
        self
    }

    fn ev(&mut self, event: Event) -> Vec<Effect> {
        let (m, effects) = step(&self.m, event, self.now);
        self.m = m;
        effects
    }

    /// The armed timer of the current instance fires.
    fn fire(&mut self) -> Vec<Effect> {
        let event = self.fire_event();
        self.ev(event)
    }

    fn fire_event(&self) -> Event {
        if let Some(generation) = self.m.phase.backoff_timer() {
            return Event::TimerFired {
                key: TimerKey::Backoff,
                generation,
            };
        }
        let instance = self.m.current().expect("a current instance");
        Event::TimerFired {
            key: TimerKey::Instance(instance.id),
            generation: instance
                .timer
                .unwrap_or_else(|| panic!("no timer armed in {:?}", self.m.state())),
        }
    }

    /// Feeds `event` and checks the effects, the state and the reason.
    #[track_caller]
    fn expect(&mut self, event: Event, effects: &[Effect], state: AppState, reason: &str) {
        let what = format!("{event:?} in {:?}", self.m.state());
        let got = self.ev(event);
        assert_eq!(got, effects, "effects of {what}");
        assert_eq!(
            (self.m.state(), self.m.reason.as_str()),
            (state, reason),
            "after {what}"
        );
    }

    #[track_caller]
    fn expect_fire(&mut self, effects: &[Effect], state: AppState, reason: &str) {
        let event = self.fire_event();
        self.expect(event, effects, state, reason);
    }

    /// Start, spawn instance 1 as pid 100, become ready.
    fn running(&mut self) -> &mut Run {
        self.ev(Event::Start(req(Cause::Autostart)));
        let id = self.m.current().unwrap().id;
        self.ev(Event::Spawned {
            instance: id,
            pid: 100,
        });
        self.ev(Event::Ready {
            instance: id,
            signal: ReadySignal::Notify,
        });
        self.ev(Event::Ready {
            instance: id,
            signal: ReadySignal::Probe,
        });
        assert_eq!(self.m.state(), AppState::Running);
        self
    }
}

#[test]
fn new_machine_is_stopped_and_not_started() {
    let now = Instant::now();
    let m = Machine::new(params(), now, 0);
    assert_eq!(
        (m.state(), m.reason.as_str(), m.since, m.pid(), m.restarts),
        (AppState::Stopped, "not started", now, None, 0)
    );
}

#[test]
fn start_spawn_ready_stop() {
    let mut r = Run::new(params());
    let t0 = r.now;
    r.expect(
        Event::Start(waiting(alice(), 1)),
        &[Effect::Spawn(i(1))],
        AppState::Starting,
        "starting (requested by alice)",
    );
    assert_eq!((r.m.started_at(), r.m.pid(), r.m.restarts), (None, None, 0));
    r.wait(s(1)).expect(
        spawned(1, 42),
        &[timer(1, 60, 1)],
        AppState::Starting,
        "starting, waiting to be ready (timeout 60s)",
    );
    assert_eq!(
        (r.m.pid(), r.m.started_at(), r.m.since),
        (Some(42), Some(t0 + s(1)), t0)
    );
    r.wait(s(2)).expect(
        notified(1),
        &[cancel(1), answer(1, Answer::Done)],
        AppState::Running,
        "ready",
    );
    assert_eq!(r.m.since, t0 + s(3));
    r.expect(
        Event::Start(waiting(alice(), 2)),
        &[answer(2, Answer::Done)],
        AppState::Running,
        "ready",
    );
    r.expect(
        Event::Stop(waiting(alice(), 3)),
        &[Effect::Signal(i(1), TERM), timer(1, 30, 2)],
        AppState::Stopping,
        "stopping (requested by alice)",
    );
    r.expect(
        exited(1, 0, false),
        &[Effect::SignalAll(i(1), TERM)],
        AppState::Stopping,
        "stopping (requested by alice)",
    );
    assert_eq!(r.m.pid(), None);
    r.expect(
        empty(1),
        &[
            Effect::Forget(i(1)),
            Effect::CloseSockets,
            answer(3, Answer::Done),
        ],
        AppState::Stopped,
        "stopped by alice",
    );
    r.expect(
        Event::Start(req(Cause::Config)),
        &[Effect::Spawn(i(2))],
        AppState::Starting,
        "starting (configuration changed)",
    );
    assert_eq!(r.m.restarts, 1);
}

/// Builds a machine in `state` through ordinary events.
fn machine_in(state: AppState) -> Run {
    let mut r = Run::new(params());
    match state {
        AppState::Stopped => {}
        AppState::Starting => {
            r.ev(Event::Start(req(Cause::Autostart)));
            r.ev(spawned(1, 100));
        }
        AppState::Running => {
            r.running();
        }
        AppState::Backoff => {
            r.ev(Event::Start(req(Cause::Autostart)));
            r.ev(failed(1));
        }
        AppState::Stopping => {
            r.running().ev(Event::Stop(req(Cause::Config)));
        }
        AppState::Exited => {
            r.m.params.restart.policy = RestartPolicy::Never;
            r.running().ev(exited(1, 1, true));
            r.m.params.restart.policy = RestartPolicy::Always;
        }
        AppState::Fatal => {
            r.m.params.restart.max_retries = 1;
            r.ev(Event::Start(req(Cause::Autostart)));
            r.ev(failed(1));
            r.m.params.restart.max_retries = 0;
        }
    }
    assert_eq!(r.m.state(), state);
    r
}

/// (from, request, effects, to, reason)
type RequestCase<'a> = (
    AppState,
    fn(Request) -> Event,
    &'a [Effect],
    AppState,
    &'a str,
);

#[test]
fn requests_in_every_state() {
    use AppState::*;
    let stopped_by_alice = "stopped by alice";
    let start = "starting (requested by alice)";
    let stop_effects = [Effect::Signal(i(1), TERM), timer(1, 30, 2)];
    let refused = |why: &str| answer(9, Answer::Refused(why.to_owned()));
    #[rustfmt::skip]
    let cases: &[RequestCase<'_>] = &[
        // (from, event, effects, to, reason); the caller is request 9.
        (Stopped, Event::Start, &[Effect::Spawn(i(1))], Starting, start),
        (Starting, Event::Start, &[], Starting, "starting, waiting to be ready (timeout 60s)"),
        (Running, Event::Start, &[answer(9, Answer::Done)], Running, "ready"),
        (Backoff, Event::Start, &[Effect::CancelTimer(TimerKey::Backoff), Effect::Spawn(i(2))], Starting, start),
        (Stopping, Event::Start, &[], Stopping, "stopping, then starting (requested by alice)"),
        (Exited, Event::Start, &[Effect::Spawn(i(2))], Starting, start),
        (Fatal, Event::Start, &[Effect::Spawn(i(2))], Starting, start),
        (Stopped, Event::Stop, &[answer(9, Answer::Done)], Stopped, stopped_by_alice),
        (Starting, Event::Stop, &stop_effects, Stopping, "stopping (requested by alice)"),
        (Running, Event::Stop, &stop_effects, Stopping, "stopping (requested by alice)"),
        (Backoff, Event::Stop, &[Effect::CancelTimer(TimerKey::Backoff), Effect::CloseSockets, answer(9, Answer::Done)], Stopped, stopped_by_alice),
        (Stopping, Event::Stop, &[], Stopping, "stopping (configuration changed)"),
        (Exited, Event::Stop, &[Effect::CloseSockets, answer(9, Answer::Done)], Stopped, stopped_by_alice),
        (Fatal, Event::Stop, &[Effect::CloseSockets, answer(9, Answer::Done)], Stopped, stopped_by_alice),
        (Stopped, Event::Restart, &[Effect::Spawn(i(1))], Starting, start),
        (Starting, Event::Restart, &stop_effects, Stopping, "stopping, then starting (requested by alice)"),
        (Running, Event::Restart, &stop_effects, Stopping, "stopping, then starting (requested by alice)"),
        (Backoff, Event::Restart, &[Effect::CancelTimer(TimerKey::Backoff), Effect::Spawn(i(2))], Starting, start),
        (Stopping, Event::Restart, &[], Stopping, "stopping, then starting (requested by alice)"),
        (Exited, Event::Restart, &[Effect::Spawn(i(2))], Starting, start),
        (Fatal, Event::Restart, &[Effect::Spawn(i(2))], Starting, start),
        (Stopped, Event::Reload, &[refused("it is stopped: not started")], Stopped, "not started"),
        (Starting, Event::Reload, &[refused("it is starting: starting, waiting to be ready (timeout 60s)")], Starting, "starting, waiting to be ready (timeout 60s)"),
        (Running, Event::Reload, &[Effect::Reload(i(1), HUP), timer(1, 60, 2)], Running, "reloading (requested by alice)"),
        (Exited, Event::Reload, &[refused("it is exited: exited with status 1 after 0.0s, restart policy is never")], Exited, "exited with status 1 after 0.0s, restart policy is never"),
    ];
    for (from, event, effects, to, reason) in cases {
        let mut r = machine_in(*from);
        r.m.failures = 7;
        let before = r.m.clone();
        let event = event(waiting(alice(), 9));
        r.wait(s(5)).expect(event.clone(), effects, *to, reason);
        let changed_state = before.state() != r.m.state();
        let since = if changed_state { r.now } else { before.since };
        assert_eq!(r.m.since, since, "since after {event:?} in {from:?}");
        // DESIGN.md: a manual start or restart resets the count from any
        // state.
        let resets = matches!(event, Event::Restart(_) | Event::Start(_));
        let failures = if resets { 0 } else { 7 };
        assert_eq!(
            r.m.failures, failures,
            "failures after {event:?} in {from:?}"
        );
    }
}

#[test]
fn backoff_doubles_and_caps_while_max_retries_is_zero() {
    let mut r = Run::new(with(|p| p.restart.backoff_max = s(16)));
    r.ev(Event::Start(req(Cause::Autostart)));
    let delays = [1, 2, 4, 8, 16, 16, 16];
    for (n, delay) in delays.into_iter().enumerate() {
        let failures = n as u32 + 1;
        let in_a_row = if failures == 1 {
            "1 failed start in a row".to_owned()
        } else {
            format!("{failures} failed starts in a row")
        };
        let generation = r.m.timer_generation + 1;
        let id = u64::from(failures);
        r.expect(
            failed(id),
            &[Effect::Forget(i(id)), backoff(delay, generation)],
            AppState::Backoff,
            &format!("{ENOENT}, {in_a_row}, next try in {delay}s"),
        );
        r.wait(s(delay)).expect_fire(
            &[Effect::Spawn(i(id + 1))],
            AppState::Starting,
            &format!("retrying after {in_a_row}"),
        );
        assert_eq!(r.m.restarts, failures);
    }
}

#[test]
fn max_retries_gives_up_and_a_manual_start_revives() {
    let mut r = Run::new(with(|p| p.restart.max_retries = 3));
    r.ev(Event::Start(waiting(Cause::Autostart, 1)));
    for n in 1..=2 {
        r.ev(spawned(n, 7));
        let effects = r.wait(Duration::from_millis(200)).ev(exited(n, 1, true));
        assert_eq!(r.m.state(), AppState::Backoff);
        if n == 1 {
            // The start's caller learns it failed at the first failure.
            assert!(
                effects.contains(&answer(
                    1,
                    Answer::Failed(
                        "exited with status 1 after 0.2s, 1 failed start in a row, next try in 1s"
                            .to_owned()
                    )
                )),
                "{effects:?}"
            );
        }
        r.fire();
    }
    r.ev(spawned(3, 7));
    r.wait(Duration::from_millis(200)).expect(
        exited(3, 1, true),
        &[cancel(3), Effect::Forget(i(3))],
        AppState::Fatal,
        "exited with status 1 after 0.2s, 3 failed starts in a row, giving up (appctl start resets)",
    );
    assert_eq!((r.m.failures, r.m.restarts), (3, 2));
    r.expect(
        Event::Start(req(alice())),
        &[Effect::Spawn(i(4))],
        AppState::Starting,
        "starting (requested by alice)",
    );
    assert_eq!((r.m.failures, r.m.restarts), (0, 3));
    r.ev(spawned(4, 8));
    r.ev(notified(4));
    assert_eq!(r.m.state(), AppState::Running);
}

/// (policy, became ready, lived in whole seconds, status, effects, state, reason)
type ExitCase<'a> = (
    RestartPolicy,
    bool,
    u64,
    ExitStatus,
    &'a [Effect],
    AppState,
    String,
);

#[test]
fn exit_decisions() {
    use ExitStatus::{Code, Signal as Sig};
    use RestartPolicy::*;
    let respawn = |reason: &str| format!("{reason}, restarting");
    let gone = Effect::Forget(i(1));
    let only_gone = [Effect::Forget(i(1))];
    let spawn = Effect::Spawn(i(2));
    #[rustfmt::skip]
    let cases: &[ExitCase<'_>] = &[
        (Always, true, 12, Code(0), &[gone.clone(), spawn.clone()], AppState::Starting, respawn("exited with status 0 after 12.5s")),
        (Always, true, 0, Code(0), &[gone.clone(), backoff(1, 2)], AppState::Backoff, "exited with status 0 after 0.5s, 1 failed start in a row, next try in 1s".to_owned()),
        (Always, false, 0, Code(0), &[cancel(1), gone.clone(), backoff(1, 2)], AppState::Backoff, "exited with status 0 after 0.5s, 1 failed start in a row, next try in 1s".to_owned()),
        (Always, false, 12, Sig(9), &[cancel(1), gone.clone(), backoff(1, 2)], AppState::Backoff, "killed by signal 9 (SIGKILL) after 12.5s, 1 failed start in a row, next try in 1s".to_owned()),
        (OnFailure, true, 12, Code(0), &only_gone, AppState::Exited, "exited with status 0 after 12.5s".to_owned()),
        (OnFailure, true, 0, Code(0), &only_gone, AppState::Exited, "exited with status 0 after 0.5s".to_owned()),
        (OnFailure, true, 12, Code(1), &[gone.clone(), spawn.clone()], AppState::Starting, respawn("exited with status 1 after 12.5s")),
        (OnFailure, true, 12, Sig(15), &[gone.clone(), spawn.clone()], AppState::Starting, respawn("killed by signal 15 (SIGTERM) after 12.5s")),
        (OnFailure, true, 0, Code(3), &[gone.clone(), backoff(1, 2)], AppState::Backoff, "exited with status 3 after 0.5s, 1 failed start in a row, next try in 1s".to_owned()),
        (Never, true, 12, Code(1), &only_gone, AppState::Exited, "exited with status 1 after 12.5s, restart policy is never".to_owned()),
        (Never, false, 0, Code(0), &[cancel(1), gone.clone()], AppState::Exited, "exited with status 0 after 0.5s, restart policy is never".to_owned()),
        (Always, true, 12, Sig(70), &[gone.clone(), spawn.clone()], AppState::Starting, respawn("killed by signal 70 after 12.5s")),
        (OnFailure, true, 12, ExitStatus::MemoryLimit { limit: 512 << 20 }, &[gone.clone(), spawn.clone()], AppState::Starting, respawn("killed: memory limit 512MiB reached after 12.5s")),
    ];
    for (policy, ready, lived, status, effects, state, reason) in cases {
        let mut r = Run::new(with(|p| p.restart.policy = *policy));
        r.m.failures = 2;
        r.ev(Event::Start(req(Cause::Autostart)));
        r.ev(spawned(1, 5));
        if *ready {
            r.ev(notified(1));
        }
        r.wait(s(*lived) + Duration::from_millis(500));
        r.expect(
            Event::MainExited {
                instance: i(1),
                status: *status,
                cgroup_empty: true,
            },
            effects,
            *state,
            reason,
        );
        assert_eq!(r.m.pid(), None);
        if *state == AppState::Starting {
            assert_eq!((r.m.failures, r.m.restarts), (0, 1), "{reason}");
        }
    }
}

#[test]
fn crash_after_a_good_start_resets_failures() {
    let mut r = Run::new(params());
    r.ev(Event::Start(req(Cause::Autostart)));
    r.ev(failed(1));
    r.fire();
    r.ev(failed(2));
    r.fire();
    assert_eq!(r.m.failures, 2);
    r.ev(spawned(3, 9));
    r.ev(notified(3));
    r.wait(s(12)).expect(
        Event::MainExited {
            instance: i(3),
            status: ExitStatus::Signal(11),
            cgroup_empty: true,
        },
        &[Effect::Forget(i(3)), Effect::Spawn(i(4))],
        AppState::Starting,
        "killed by signal 11 (SIGSEGV) after 12.0s, restarting",
    );
    assert_eq!((r.m.failures, r.m.restarts), (0, 3));
}

/// (readiness none, start_secs, ready after, dies after ready, status,
/// failures before, effects, state, reason)
type SoonCase<'a> = (
    bool,
    u64,
    u64,
    u64,
    ExitStatus,
    u32,
    &'a [Effect],
    AppState,
    &'a str,
);

#[test]
fn a_crash_soon_after_ready_is_a_failed_start() {
    use ExitStatus::{Code, Signal as Sig};
    let gone = Effect::Forget(i(1));
    let spawn = Effect::Spawn(i(2));
    #[rustfmt::skip]
    let cases: &[SoonCase<'_>] = &[
        // The broken-release loop: ready, then dead a moment later.
        (false, 1, 2, 3, Code(3), 0, &[gone.clone(), backoff(1, 2)], AppState::Backoff,
         "exited with status 3 after 5.0s, within 10s of becoming ready, 1 failed start in a row, next try in 1s"),
        (false, 1, 2, 9, Sig(9), 3, &[gone.clone(), backoff(8, 2)], AppState::Backoff,
         "killed by signal 9 (SIGKILL) after 11.0s, within 10s of becoming ready, 4 failed starts in a row, next try in 8s"),
        // Ready long enough: a crash, respawned at once.
        (false, 1, 2, 10, Sig(9), 3, &[gone.clone(), spawn.clone()], AppState::Starting,
         "killed by signal 9 (SIGKILL) after 12.0s, restarting"),
        // A clean exit is the app's own decision.
        (false, 1, 2, 3, Code(0), 3, &[gone.clone(), spawn.clone()], AppState::Starting,
         "exited with status 0 after 5.0s, restarting"),
        // start_secs longer than 10s is the window.
        (false, 30, 2, 29, Code(1), 0, &[gone.clone(), backoff(1, 2)], AppState::Backoff,
         "exited with status 1 after 31.0s, within 30s of becoming ready, 1 failed start in a row, next try in 1s"),
        (false, 30, 2, 30, Code(1), 0, &[gone.clone(), spawn.clone()], AppState::Starting,
         "exited with status 1 after 32.0s, restarting"),
        // Readiness none: ready at start_secs, the window follows.
        (true, 1, 1, 4, Code(1), 0, &[gone.clone(), backoff(1, 2)], AppState::Backoff,
         "exited with status 1 after 5.0s, within 10s of becoming ready, 1 failed start in a row, next try in 1s"),
        (true, 1, 1, 11, Code(1), 0, &[gone.clone(), spawn.clone()], AppState::Starting,
         "exited with status 1 after 12.0s, restarting"),
    ];
    for (none, start_secs, ready_after, dies_after, status, failures, effects, state, reason) in
        cases
    {
        let mut r = Run::new(with(|p| {
            p.ready_after_start_secs = *none;
            p.needs_notify = !*none;
            p.restart.start_secs = s(*start_secs);
        }));
        r.ev(Event::Start(req(Cause::Autostart)));
        r.ev(spawned(1, 5));
        r.m.failures = *failures;
        r.wait(s(*ready_after));
        if *none {
            r.fire();
        } else {
            r.ev(notified(1));
        }
        assert_eq!(r.m.state(), AppState::Running, "{reason}");
        r.wait(s(*dies_after)).expect(
            Event::MainExited {
                instance: i(1),
                status: *status,
                cgroup_empty: true,
            },
            effects,
            *state,
            reason,
        );
    }
}

#[test]
fn a_release_that_dies_soon_after_ready_reaches_fatal_after_max_retries() {
    let mut r = Run::new(with(|p| {
        p.restart.max_retries = 3;
        p.needs_probe = true;
        p.has_probe = true;
    }));
    r.ev(Event::Start(waiting(alice(), 1)));
    for n in 1..=3 {
        r.ev(spawned(n, 10 + n as u32));
        r.wait(s(1)).ev(notified(n));
        let effects = r.ev(probed(n));
        assert_eq!(r.m.state(), AppState::Running);
        if n == 1 {
            // The start's caller was told: it was ready.
            assert!(effects.contains(&answer(1, Answer::Done)), "{effects:?}");
        }
        // The arbiter dies a moment later, its workers with it.
        r.wait(s(2)).ev(exited(n, 3, false));
        assert_eq!(r.m.state(), AppState::Stopping);
        r.ev(empty(n));
        if n < 3 {
            assert_eq!((r.m.state(), r.m.failures), (AppState::Backoff, n as u32));
            r.fire();
        }
    }
    assert_eq!(
        (r.m.state(), r.m.reason.as_str(), r.m.failures),
        (
            AppState::Fatal,
            "exited with status 3 after 3.0s, within 10s of becoming ready, 3 failed starts in a row, giving up (appctl start resets)",
            3
        )
    );
    // A manual start tries again from scratch.
    r.ev(Event::Start(req(alice())));
    assert_eq!((r.m.state(), r.m.failures), (AppState::Starting, 0));
}

#[test]
fn backoff_delays_are_jittered_by_the_machines_seed() {
    // Two apps failing the same way at the same time, seeded differently,
    // do not retry at the same moment; each stays within [3/4, 1] of the
    // nominal delay, and the same seed gives the same delays.
    let delays = |seed: u64| -> Vec<Duration> {
        let now = Instant::now();
        let mut r = Run {
            m: Machine::new(with(|p| p.restart.backoff_max = s(16)), now, seed),
            now,
        };
        r.ev(Event::Start(req(Cause::Autostart)));
        (1..=6)
            .map(|n| {
                let effects = r.ev(failed(n));
                let delay = effects
                    .iter()
                    .find_map(|e| match e {
                        Effect::SetTimer {
                            key: TimerKey::Backoff,
                            after,
                            ..
                        } => Some(*after),
                        _ => None,
                    })
                    .expect("a backoff timer");
                assert!(
                    r.m.reason
                        .ends_with(&format!("next try in {}", secs(delay))),
                    "{}",
                    r.m.reason
                );
                r.fire();
                delay
            })
            .collect()
    };
    let nominal = [1, 2, 4, 8, 16, 16].map(s);
    let (a, b) = (delays(0x1234_5679), delays(0x9876_5433));
    for got in [&a, &b] {
        for (d, n) in got.iter().zip(nominal) {
            assert!(*d <= n && *d >= n * 3 / 4, "{got:?}");
        }
    }
    assert_ne!(a, b);
    assert_eq!(a, delays(0x1234_5679));
    assert_eq!(delays(0), nominal.to_vec(), "seed 0: no jitter");
}

#[test]
fn a_manual_start_during_a_retry_resets_the_failure_count() {
    // DESIGN.md: a manual start works from any state and resets the
    // count, so an operator's start cannot still end in fatal.
    let mut r = Run::new(params());
    r.ev(Event::Start(req(Cause::Autostart)));
    r.ev(failed(1));
    r.fire();
    assert_eq!((r.m.state(), r.m.failures), (AppState::Starting, 1));
    let effects = r.ev(Event::Start(req(alice())));
    assert_eq!(
        (effects, r.m.state(), r.m.failures),
        (vec![], AppState::Starting, 0)
    );
}

#[test]
fn ready_needs_every_half_the_app_asks_for() {
    // notify with a probe: READY=1 alone is not ready.
    let mut r = Run::new(with(|p| {
        p.needs_probe = true;
        p.has_probe = true;
    }));
    r.ev(Event::Start(waiting(alice(), 1)));
    r.expect(
        spawned(1, 10),
        &[Effect::Probe(i(1)), timer(1, 60, 1)],
        AppState::Starting,
        "starting, waiting to be ready (timeout 60s)",
    );
    r.expect(
        notified(1),
        &[],
        AppState::Starting,
        "starting, sent READY=1, waiting for the probe",
    );
    // A second READY=1 changes nothing.
    assert_eq!(r.ev(notified(1)), []);
    r.expect(
        probed(1),
        &[cancel(1), answer(1, Answer::Done)],
        AppState::Running,
        "ready",
    );
    // The probe alone (kind http) is enough when notify is not asked for.
    let mut r = Run::new(with(|p| {
        p.needs_notify = false;
        p.needs_probe = true;
        p.has_probe = true;
    }));
    r.ev(Event::Start(req(alice())));
    r.ev(spawned(1, 10));
    assert_eq!(r.ev(notified(1)), []);
    r.expect(probed(1), &[cancel(1)], AppState::Running, "ready");
}

fn running_start_stop() -> Run {
    let mut r = Run::new(with(|p| p.restart.strategy = RestartStrategy::StartStop));
    r.ev(Event::Start(req(Cause::Autostart)));
    r.ev(spawned(1, 42));
    r.ev(notified(1));
    assert_eq!((r.m.state(), r.m.pid()), (AppState::Running, Some(42)));
    r
}

#[test]
fn start_stop_restart_stops_the_old_instance_once_the_new_one_is_ready() {
    let mut r = running_start_stop();
    r.wait(s(10)).expect(
        Event::Restart(waiting(alice(), 1)),
        &[Effect::Spawn(i(2))],
        AppState::Starting,
        "starting a new instance beside pid 42 (requested by alice)",
    );
    assert_eq!(r.m.phase.previous().map(|p| p.pid), Some(42));
    r.ev(spawned(2, 43));
    r.expect(
        notified(2),
        &[
            cancel(2),
            Effect::Signal(i(1), TERM),
            timer(1, 30, 3),
            answer(1, Answer::Done),
        ],
        AppState::Running,
        "ready",
    );
    assert_eq!((r.m.pid(), r.m.restarts), (Some(43), 1));
    assert_eq!(r.m.phase.previous(), None);
    assert_eq!(r.m.retired.iter().map(|r| r.id).collect::<Vec<_>>(), [i(1)]);
    // The retired instance goes its own way: SIGKILL at its timeout, then
    // forgotten once its cgroup is empty.
    r.wait(s(30));
    r.expect(
        Event::TimerFired {
            key: TimerKey::Instance(i(1)),
            generation: 3,
        },
        &[Effect::KillAll(i(1))],
        AppState::Running,
        "ready",
    );
    r.ev(Event::MainExited {
        instance: i(1),
        status: ExitStatus::Signal(9),
        cgroup_empty: false,
    });
    r.expect(
        empty(1),
        &[Effect::Forget(i(1))],
        AppState::Running,
        "ready",
    );
    assert!(r.m.retired.is_empty());
}

#[test]
fn start_stop_restart_that_fails_keeps_the_old_instance_serving() {
    let mut r = running_start_stop();
    let started = r.m.started_at();
    r.ev(Event::Restart(waiting(alice(), 1)));
    let reason = format!("restart failed: {ENOENT}; the previous instance (pid 42) keeps running");
    r.expect(
        failed(2),
        &[
            Effect::Forget(i(2)),
            answer(1, Answer::Failed(reason.clone())),
        ],
        AppState::Running,
        &reason,
    );
    assert_eq!(
        (r.m.pid(), r.m.started_at(), r.m.failures),
        (Some(42), started, 0)
    );

    // A new instance that dies while starting falls back the same way.
    r.ev(Event::Restart(req(alice())));
    r.ev(spawned(3, 44));
    r.wait(s(1)).expect(
        exited(3, 1, true),
        &[cancel(3), Effect::Forget(i(3))],
        AppState::Running,
        "restart failed: exited with status 1 after 1.0s; the previous instance (pid 42) keeps running",
    );
    // And one that never becomes ready: killed at the readiness timeout.
    r.ev(Event::Restart(req(alice())));
    r.ev(spawned(4, 45));
    r.wait(s(60)).expect_fire(
        &[Effect::KillAll(i(4))],
        AppState::Stopping,
        "not ready after 60s (readiness timeout), killing every process",
    );
    r.ev(Event::MainExited {
        instance: i(4),
        status: ExitStatus::Signal(9),
        cgroup_empty: true,
    });
    assert_eq!(
        (r.m.state(), r.m.pid(), r.m.failures),
        (AppState::Running, Some(42), 0)
    );
}

#[test]
fn start_stop_without_a_previous_instance_left_is_an_ordinary_failed_start() {
    let mut r = running_start_stop();
    r.ev(Event::Restart(req(alice())));
    assert_eq!(r.ev(exited(1, 0, true)), [Effect::Forget(i(1))]);
    assert_eq!(r.m.phase.previous(), None);
    r.expect(
        failed(2),
        &[Effect::Forget(i(2)), backoff(1, 2)],
        AppState::Backoff,
        &format!("{ENOENT}, 1 failed start in a row, next try in 1s"),
    );
}

#[test]
fn stopping_during_a_start_stop_restart_stops_both_instances() {
    let mut r = running_start_stop();
    r.ev(Event::Restart(waiting(alice(), 1)));
    r.ev(spawned(2, 43));
    let effects = r.ev(Event::Stop(waiting(alice(), 2)));
    assert!(effects.contains(&Effect::Signal(i(1), TERM)), "{effects:?}");
    assert!(effects.contains(&Effect::Signal(i(2), TERM)), "{effects:?}");
    assert!(
        effects.contains(&answer(
            1,
            Answer::Failed("stopped (requested by alice) before it was ready".to_owned())
        )),
        "{effects:?}"
    );
    assert_eq!(
        (r.m.state(), r.m.phase.previous()),
        (AppState::Stopping, None)
    );
    // Stopped only once both are gone.
    r.ev(exited(2, 0, true));
    assert_eq!(r.m.state(), AppState::Stopping);
    r.expect(
        exited(1, 0, true),
        &[
            Effect::Forget(i(1)),
            Effect::CloseSockets,
            answer(2, Answer::Done),
        ],
        AppState::Stopped,
        "stopped by alice",
    );
}

#[test]
fn a_config_change_stops_the_previous_instance_with_its_own_stop_settings() {
    let quit = Signal(SIGQUIT);
    for strategy in [RestartStrategy::StopStart, RestartStrategy::StartStop] {
        let mut r = Run::new(with(|p| p.restart.strategy = strategy));
        r.running();
        let new = with(|p| {
            p.restart.strategy = strategy;
            p.stop = StopParams {
                signal: quit,
                timeout: s(5),
            };
        });
        let effects = r.ev(Event::Replace {
            params: new.clone(),
            restart: true,
            start: true,
        });
        let generation = r.m.timer_generation;
        let expected = match strategy {
            // Stopped first, with the old file's TERM and 30s.
            RestartStrategy::StopStart => {
                vec![Effect::Signal(i(1), TERM), timer(1, 30, generation)]
            }
            // Started beside; stopped once the new one is ready.
            RestartStrategy::StartStop => vec![Effect::Spawn(i(2))],
        };
        assert_eq!(effects, expected, "{strategy:?}");
        assert_eq!(r.m.params, new);
        if strategy == RestartStrategy::StartStop {
            r.ev(spawned(2, 200));
            let effects = r.ev(notified(2));
            assert!(effects.contains(&Effect::Signal(i(1), TERM)), "{effects:?}");
            assert!(
                effects.contains(&timer(1, 30, r.m.timer_generation)),
                "{effects:?}"
            );
            // The new instance stops the new way.
            let effects = r.ev(Event::Stop(req(alice())));
            assert!(effects.contains(&Effect::Signal(i(2), quit)), "{effects:?}");
        }
    }
}

#[test]
fn replace_restarts_what_is_up_or_starts_what_autostarts() {
    use AppState::*;
    #[rustfmt::skip]
    let cases = [
        // (from, restart, start, to)
        (Stopped,  true,  false, Stopped),
        (Stopped,  true,  true,  Starting),
        (Running,  true,  false, Stopping),
        (Starting, true,  false, Stopping),
        (Backoff,  true,  false, Starting),
        (Fatal,    true,  false, Fatal),
        (Exited,   true,  true,  Starting),
        // Adopted in place: what is up stays as it is.
        (Running,  false, true,  Running),
        (Starting, false, true,  Starting),
        (Backoff,  false, true,  Backoff),
        (Stopping, false, true,  Stopping),
        (Stopped,  false, false, Stopped),
        (Exited,   false, false, Exited),
        (Fatal,    false, false, Fatal),
        // Autostart turned on starts what is not up.
        (Stopped,  false, true,  Starting),
        (Exited,   false, true,  Starting),
    ];
    for (from, restart, start, to) in cases {
        let mut r = machine_in(from);
        let pid = r.m.pid();
        r.ev(Event::Replace {
            params: with(|p| p.readiness_timeout = s(9)),
            restart,
            start,
        });
        assert_eq!(r.m.state(), to, "{from:?} restart {restart} start {start}");
        assert_eq!(r.m.params.readiness_timeout, s(9));
        if to == from && from == Running {
            assert_eq!(r.m.pid(), pid, "the same process runs on");
        }
    }
}

/// A change that needs no new process leaves the running one
/// alone, and the new stop settings reach it: its next stop is the new
/// signal and timeout.
#[test]
fn a_change_in_place_keeps_the_process_and_stops_it_the_new_way() {
    let quit = Signal(SIGQUIT);
    let mut r = Run::new(params());
    r.running();
    let new = with(|p| {
        p.restart.max_retries = 3;
        p.stop = StopParams {
            signal: quit,
            timeout: s(5),
        };
    });
    let effects = r.ev(Event::Replace {
        params: new.clone(),
        restart: false,
        start: true,
    });
    assert_eq!(effects, []);
    assert_eq!((r.m.state(), r.m.pid()), (AppState::Running, Some(100)));
    assert_eq!(r.m.params, new);
    let effects = r.ev(Event::Stop(req(alice())));
    assert_eq!(
        effects,
        [
            Effect::Signal(i(1), quit),
            timer(1, 5, r.m.timer_generation)
        ]
    );
}

#[test]
fn reload_waits_for_new_workers_and_the_probe() {
    let mut r = Run::new(with(|p| {
        p.needs_probe = true;
        p.has_probe = true;
    }));
    r.running();
    r.expect(
        Event::Reload(waiting(alice(), 1)),
        &[Effect::Reload(i(1), HUP), timer(1, 60, 2)],
        AppState::Running,
        "reloading (requested by alice)",
    );
    // A second caller waits for the same reload.
    assert_eq!(r.ev(Event::Reload(waiting(alice(), 2))), []);
    // The old probe result or READY=1 from the reloaded server mean nothing
    // before the old workers are gone.
    assert_eq!(r.ev(probed(1)), []);
    assert_eq!(r.ev(notified(1)), []);
    r.expect(
        Event::WorkersReplaced { instance: i(1) },
        &[Effect::Probe(i(1))],
        AppState::Running,
        "reloading (requested by alice)",
    );
    r.expect(
        probed(1),
        &[cancel(1), answer(1, Answer::Done), answer(2, Answer::Done)],
        AppState::Running,
        "ready, reloaded",
    );

    // New workers that never answer: failed at the timeout, still running.
    r.ev(Event::Reload(waiting(alice(), 3)));
    r.ev(Event::WorkersReplaced { instance: i(1) });
    let why = "not serving again within 60s of the reload signal";
    r.wait(s(60)).expect_fire(
        &[
            Effect::CancelProbe(i(1)),
            answer(3, Answer::Failed(why.to_owned())),
        ],
        AppState::Running,
        &format!("running, but the last reload failed: {why}"),
    );

    // A server that dies of the reload: failed, then the usual decision.
    r.ev(Event::Reload(waiting(alice(), 4)));
    let effects = r.wait(s(30)).ev(exited(1, 3, true));
    assert!(
        effects.contains(&answer(
            4,
            Answer::Failed("exited with status 3 after 90.0s".to_owned())
        )),
        "{effects:?}"
    );
    assert_eq!(r.m.state(), AppState::Starting);
}

#[test]
fn reload_without_a_probe_is_done_once_the_old_workers_are_gone() {
    let mut r = Run::new(params());
    r.running();
    r.ev(Event::Reload(waiting(alice(), 1)));
    r.expect(
        Event::WorkersReplaced { instance: i(1) },
        &[cancel(1), answer(1, Answer::Done)],
        AppState::Running,
        "ready, reloaded",
    );
}

#[test]
fn a_start_overtakes_a_waiting_stop_and_a_stop_a_waiting_start() {
    let mut r = Run::new(params());
    r.running();
    r.ev(Event::Stop(waiting(alice(), 1)));
    let effects = r.ev(Event::Start(waiting(Cause::Operator("bob".into()), 2)));
    assert_eq!(
        effects,
        [answer(
            1,
            Answer::Failed("started again (requested by bob) before it stopped".to_owned())
        )]
    );
    let effects = r.ev(exited(1, 0, true));
    assert_eq!(effects, [Effect::Forget(i(1)), Effect::Spawn(i(2))]);
    r.ev(spawned(2, 5));
    assert_eq!(r.ev(notified(2)), [cancel(2), answer(2, Answer::Done)]);
}

#[test]
fn events_about_unknown_instances_are_ignored() {
    let mut r = Run::new(params());
    r.running();
    let before = r.m.clone();
    for event in [
        spawned(7, 1),
        notified(7),
        exited(7, 1, true),
        empty(7),
        failed(7),
        Event::WorkersReplaced { instance: i(7) },
        Event::TimerFired {
            key: TimerKey::Instance(i(7)),
            generation: 1,
        },
    ] {
        assert_eq!(r.ev(event.clone()), [], "{event:?}");
        assert_eq!(r.m, before, "{event:?}");
    }
}

#[test]
fn stale_timers_are_ignored() {
    let mut r = Run::new(params());
    r.ev(Event::Start(req(Cause::Autostart)));
    r.ev(spawned(1, 3));
    let readiness = r.m.timer_generation;
    r.ev(notified(1));
    // The readiness timer fired before the shell saw the cancel.
    let before = r.m.clone();
    let stale = Event::TimerFired {
        key: TimerKey::Instance(i(1)),
        generation: readiness,
    };
    assert_eq!(r.ev(stale.clone()), []);
    assert_eq!(r.m, before);
    r.ev(Event::Stop(req(alice())));
    // The stop timer replaced an older generation.
    assert_eq!(r.ev(stale), []);
    assert_eq!(r.m.state(), AppState::Stopping);
    r.expect_fire(
        &[Effect::KillAll(i(1))],
        AppState::Stopping,
        "stop timed out after 30s, killing every process",
    );
    // A timer fires once.
    let before = r.m.clone();
    let again = Event::TimerFired {
        key: TimerKey::Instance(i(1)),
        generation: r.m.timer_generation,
    };
    assert_eq!(r.ev(again), []);
    assert_eq!(r.m, before);
}

#[test]
fn restart_from_running_stops_then_spawns() {
    let mut r = Run::new(params());
    r.running();
    r.expect(
        Event::Restart(waiting(alice(), 1)),
        &[Effect::Signal(i(1), TERM), timer(1, 30, 2)],
        AppState::Stopping,
        "stopping, then starting (requested by alice)",
    );
    r.wait(s(1)).expect(
        exited(1, 0, true),
        &[Effect::Forget(i(1)), Effect::Spawn(i(2))],
        AppState::Starting,
        "starting (requested by alice)",
    );
    assert_eq!(
        (r.m.restarts, r.m.pid(), r.m.phase.then().cloned()),
        (1, None, None)
    );
    r.expect(
        spawned(2, 101),
        &[timer(2, 60, 3)],
        AppState::Starting,
        "starting, waiting to be ready (timeout 60s)",
    );
    r.expect(
        notified(2),
        &[cancel(2), answer(1, Answer::Done)],
        AppState::Running,
        "ready",
    );
}

#[test]
fn leftover_processes_are_killed_before_deciding() {
    let mut r = Run::new(params());
    r.running();
    r.wait(s(12)).expect(
        exited(1, 1, false),
        &[Effect::KillAll(i(1))],
        AppState::Stopping,
        "exited with status 1 after 12.0s, killing leftover processes",
    );
    // The main process is gone, so CgroupEmpty finishes the stop; a
    // second MainExited cannot come and would be ignored.
    let before = r.m.clone();
    assert_eq!(r.ev(exited(1, 1, true)), []);
    assert_eq!(r.m, before);
    r.expect(
        empty(1),
        &[Effect::Forget(i(1)), Effect::Spawn(i(2))],
        AppState::Starting,
        "exited with status 1 after 12.0s, restarting",
    );
    assert_eq!((r.m.failures, r.m.restarts), (0, 1));
}

#[test]
fn cgroup_empty_is_ignored_while_the_main_process_lives() {
    let mut r = Run::new(params());
    r.running();
    r.ev(Event::Stop(req(alice())));
    let before = r.m.clone();
    assert_eq!(r.ev(empty(1)), []);
    assert_eq!(r.m, before);
}

#[test]
fn readiness_timeout_kills_and_counts_a_failed_start() {
    let mut r = Run::new(params());
    r.ev(Event::Start(waiting(Cause::Autostart, 1)));
    r.ev(spawned(1, 4));
    r.wait(s(60)).expect_fire(
        &[Effect::KillAll(i(1))],
        AppState::Stopping,
        "not ready after 60s (readiness timeout), killing every process",
    );
    let reason = "not ready after 60s (readiness timeout)".to_owned();
    assert_eq!(r.m.phase.then(), Some(&AfterStop::FailStart(reason)));
    // Ready after the timeout changes nothing.
    assert_eq!(r.ev(notified(1)), []);
    let reason = "not ready after 60s (readiness timeout), 1 failed start in a row, next try in 1s";
    r.expect(
        Event::MainExited {
            instance: i(1),
            status: ExitStatus::Signal(9),
            cgroup_empty: true,
        },
        &[
            Effect::Forget(i(1)),
            backoff(1, 2),
            answer(1, Answer::Failed(reason.to_owned())),
        ],
        AppState::Backoff,
        reason,
    );
}

#[test]
fn start_while_stopping_starts_once_stopped() {
    let mut r = Run::new(params());
    r.running();
    r.ev(Event::Stop(req(alice())));
    r.m.failures = 4;
    r.expect(
        Event::Start(req(Cause::Operator("bob".to_owned()))),
        &[],
        AppState::Stopping,
        "stopping, then starting (requested by bob)",
    );
    assert_eq!(r.m.failures, 0);
    r.expect(
        exited(1, 0, false),
        &[Effect::SignalAll(i(1), TERM)],
        AppState::Stopping,
        "stopping, then starting (requested by bob)",
    );
    r.expect(
        empty(1),
        &[Effect::Forget(i(1)), Effect::Spawn(i(2))],
        AppState::Starting,
        "starting (requested by bob)",
    );
    // And a stop after the start wins again.
    let mut r = Run::new(params());
    r.running();
    r.ev(Event::Restart(req(alice())));
    r.ev(Event::Stop(req(Cause::Shutdown)));
    r.expect(
        exited(1, 0, true),
        &[Effect::Forget(i(1)), Effect::CloseSockets],
        AppState::Stopped,
        "stopped (daemon shutting down)",
    );
}

#[test]
fn stop_while_spawning_signals_once_spawned() {
    let int = Signal(SIGINT);
    let mut r = Run::new(with(|p| p.stop.signal = int));
    r.ev(Event::Start(req(Cause::Autostart)));
    r.expect(
        Event::Stop(req(alice())),
        &[timer(1, 30, 1)],
        AppState::Stopping,
        "stopping (requested by alice)",
    );
    // The cgroup may look empty before the spawned process joins it.
    assert_eq!(r.ev(empty(1)), []);
    r.expect(
        spawned(1, 77),
        &[Effect::Signal(i(1), int)],
        AppState::Stopping,
        "stopping (requested by alice)",
    );
    r.expect(
        exited(1, 0, true),
        &[Effect::Forget(i(1)), Effect::CloseSockets],
        AppState::Stopped,
        "stopped by alice",
    );

    let mut r = Run::new(params());
    r.ev(Event::Start(req(Cause::Autostart)));
    r.ev(Event::Restart(req(alice())));
    r.expect(
        failed(1),
        &[Effect::Forget(i(1)), Effect::Spawn(i(2))],
        AppState::Starting,
        "starting (requested by alice)",
    );
    assert_eq!((r.m.failures, r.m.restarts), (0, 1));
}

#[test]
fn readiness_none_runs_after_start_secs() {
    let mut r = Run::new(with(|p| {
        p.ready_after_start_secs = true;
        p.needs_notify = false;
    }));
    r.ev(Event::Start(req(Cause::Autostart)));
    r.expect(
        spawned(1, 1),
        &[timer(1, 1, 1)],
        AppState::Starting,
        "starting, up for less than 1s",
    );
    r.wait(s(1))
        .expect_fire(&[], AppState::Running, "up for 1s");

    let mut r = Run::new(with(|p| {
        p.ready_after_start_secs = true;
        p.needs_notify = false;
        p.restart.start_secs = Duration::ZERO;
    }));
    r.ev(Event::Start(req(Cause::Autostart)));
    r.expect(
        spawned(1, 1),
        &[],
        AppState::Running,
        "started, no readiness check",
    );
    // start_secs 0: running at once, but a crash within 10s of that is
    // still a failed start, so a crash loop backs off.
    r.expect(
        exited(1, 1, true),
        &[Effect::Forget(i(1)), backoff(1, 1)],
        AppState::Backoff,
        "exited with status 1 after 0.0s, within 10s of becoming ready, 1 failed start in a row, next try in 1s",
    );
    r.wait(s(1)).fire();
    r.ev(spawned(2, 2));
    r.wait(s(10)).expect(
        exited(2, 1, true),
        &[Effect::Forget(i(2)), Effect::Spawn(i(3))],
        AppState::Starting,
        "exited with status 1 after 10.0s, restarting",
    );
}

#[test]
fn spawn_failure_with_policy_never_exits() {
    let mut r = Run::new(with(|p| p.restart.policy = RestartPolicy::Never));
    r.ev(Event::Start(req(Cause::Autostart)));
    r.expect(
        failed(1),
        &[Effect::Forget(i(1))],
        AppState::Exited,
        &format!("{ENOENT}, restart policy is never"),
    );
}

/// A small deterministic generator, so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize].clone()
    }
}

/// Every instance the machine knows, with its armed timer.
fn known(m: &Machine) -> Vec<Instance> {
    m.current()
        .into_iter()
        .chain(m.phase.previous().map(RunningInstance::instance))
        .chain(m.retired.iter().copied())
        .collect()
}

/// A plausible next event: mostly what the shell would send now, some
/// requests, and some noise (stale timers, events in the wrong state,
/// unknown instances).
fn random_event(rng: &mut Rng, m: &Machine, base: &Params) -> Event {
    let cause = rng.pick(&[alice(), Cause::Config, Cause::Autostart, Cause::Shutdown]);
    let request = Request {
        cause,
        waiter: (rng.below(2) == 0).then(|| RequestId(rng.below(1000))),
    };
    let status = rng.pick(&[
        ExitStatus::Code(0),
        ExitStatus::Code(1),
        ExitStatus::Signal(9),
    ]);
    let instances = known(m);
    let id = match instances.len() {
        0 => InstanceId(m.last_instance + 1),
        n => instances[rng.below(n as u64) as usize].id,
    };
    let mut choices = vec![
        Event::Start(request.clone()),
        Event::Stop(request.clone()),
        Event::Restart(request.clone()),
        Event::Reload(request),
        Event::Replace {
            params: Params {
                readiness_timeout: rng.pick(&[s(30), s(60)]),
                ..base.clone()
            },
            restart: rng.below(2) == 0,
            start: rng.below(2) == 0,
        },
        Event::TimerFired {
            key: TimerKey::Instance(id),
            generation: m.timer_generation.saturating_sub(1),
        },
        Event::CgroupEmpty { instance: id },
        Event::Spawned {
            instance: InstanceId(m.last_instance + 1),
            pid: 9,
        },
    ];
    for instance in instances {
        let id = instance.id;
        let likely = match instance.main {
            Main::Spawning => vec![
                Event::Spawned {
                    instance: id,
                    pid: 10,
                },
                Event::SpawnFailed {
                    instance: id,
                    reason: ENOENT.to_owned(),
                },
            ],
            Main::Running { .. } => vec![
                Event::Ready {
                    instance: id,
                    signal: ReadySignal::Notify,
                },
                Event::Ready {
                    instance: id,
                    signal: ReadySignal::Probe,
                },
                Event::WorkersReplaced { instance: id },
                Event::MainExited {
                    instance: id,
                    status,
                    cgroup_empty: rng.below(2) == 0,
                },
            ],
            Main::Exited => vec![Event::CgroupEmpty { instance: id }],
        };
        for _ in 0..4 {
            choices.extend(likely.iter().cloned());
        }
        if let Some(generation) = instance.timer {
            let fire = Event::TimerFired {
                key: TimerKey::Instance(id),
                generation,
            };
            choices.extend([fire.clone(), fire.clone(), fire.clone(), fire]);
        }
    }
    if let Some(generation) = m.phase.backoff_timer() {
        let fire = Event::TimerFired {
            key: TimerKey::Backoff,
            generation,
        };
        choices.extend([fire.clone(), fire]);
    }
    rng.pick(&choices)
}

/// What must hold after every step, whatever led there.
fn check_step(m: &Machine, event: &Event, next: &Machine, effects: &[Effect], now: Instant) {
    let what = format!(
        "{:?} --{event:?}--> {:?} {effects:?}",
        m.state(),
        next.state()
    );
    assert!(!next.reason.is_empty(), "{what}: empty reason");
    if next == m {
        assert!(
            effects.iter().all(|e| matches!(e, Effect::Answer(..))),
            "{what}: effects without a change"
        );
    }
    let since = if next.state() != m.state() {
        now
    } else {
        m.since
    };
    assert_eq!(next.since, since, "{what}: since");
    assert!(
        effects
            .windows(2)
            .all(|w| effect_rank(&w[0]) <= effect_rank(&w[1])),
        "{what}: effects out of order"
    );
    let mut generation = m.timer_generation;
    for effect in effects {
        if let Effect::SetTimer { generation: g, .. } = effect {
            generation += 1;
            assert_eq!(*g, generation, "{what}: timer generations");
        }
    }
    assert_eq!(next.timer_generation, generation, "{what}");
    let spawns = effects
        .iter()
        .filter(|e| matches!(e, Effect::Spawn(_)))
        .count();
    assert!(spawns <= 1, "{what}: more than one spawn");
    if spawns == 1 {
        let current = next.current().expect("spawned");
        assert!(
            next.state() == AppState::Starting && current.main == Main::Spawning,
            "{what}"
        );
        assert_eq!(
            effects.iter().find(|e| matches!(e, Effect::Spawn(_))),
            Some(&Effect::Spawn(current.id)),
            "{what}"
        );
    }
    // Entering stopped, and nothing else, closes the app's held sockets.
    assert_eq!(
        effects.contains(&Effect::CloseSockets),
        next.state() == AppState::Stopped && m.state() != AppState::Stopped,
        "{what}: held sockets"
    );
    // Every instance forgotten was known, and is known no more.
    for effect in effects {
        if let Effect::Forget(id) = effect {
            assert!(
                known(m).iter().any(|i| i.id == *id),
                "{what}: forgot an unknown instance"
            );
            assert!(
                !known(next).iter().any(|i| i.id == *id),
                "{what}: forgot a known instance"
            );
        }
    }
    // Every instance that left the machine was forgotten.
    for instance in known(m) {
        if !known(next).iter().any(|i| i.id == instance.id) {
            assert!(
                effects.contains(&Effect::Forget(instance.id)),
                "{what}: {} lost",
                instance.id
            );
        }
    }
    // Answers go to callers that were waiting, or to this event's.
    let mut waiters: Vec<RequestId> = m.waiters.iter().map(|w| w.id).collect();
    let this = match event {
        Event::Start(r) | Event::Stop(r) | Event::Restart(r) | Event::Reload(r) => r.waiter,
        _ => None,
    };
    waiters.extend(this);
    for effect in effects {
        if let Effect::Answer(id, _) = effect {
            assert!(
                waiters.contains(id),
                "{what}: answered {id:?}, who did not ask"
            );
        }
    }
    let current = next.current();
    match next.state() {
        AppState::Starting => assert!(current.is_some_and(|c| c.main != Main::Exited), "{what}"),
        AppState::Running => {
            let c = current.expect("running has an instance");
            assert!(next.phase.previous().is_none(), "{what}");
            assert_eq!(c.timer.is_some(), next.phase.reload().is_some(), "{what}");
        }
        AppState::Backoff => assert!(
            current.is_none() && next.phase.backoff_timer().is_some(),
            "{what}"
        ),
        AppState::Stopped => assert!(
            known(next).is_empty(),
            "{what}: stopped with instances left"
        ),
        AppState::Exited | AppState::Fatal => assert!(current.is_none(), "{what}"),
        AppState::Stopping => {}
    }
    // A backoff timer outside backoff, a `then` outside stopping and a
    // previous instance outside a restart (starting or stopping, beside a
    // current one) cannot be written down: `Phase` carries each only where
    // it is valid. Nor can a running or previous instance without a main
    // process or a ready time: both are a `RunningInstance`. So a machine
    // with nothing pending always settles, and thaws as it was frozen.
    let pending = !next.waiters.is_empty()
        || !next.retired.is_empty()
        || next.phase.reload().is_some()
        || next.current().is_some_and(|c| c.timer.is_some());
    let between = matches!(
        next.phase,
        Phase::Stopped
            | Phase::Running { .. }
            | Phase::Backoff { .. }
            | Phase::Exited
            | Phase::Fatal
    );
    let settled = next.settled();
    assert_eq!(settled.is_some(), between && !pending, "{what}: settled");
    if let Some(settled) = settled {
        assert_eq!(
            Machine::thaw(next.params.clone(), settled),
            *next,
            "{what}: thawed"
        );
    }
}

#[test]
fn every_step_stays_in_the_table_and_every_row_is_reached() {
    let mut rng = Rng(0x5eed_0a99_7150_4242);
    let mut reached = HashSet::new();
    for _ in 0..10000 {
        let params = with(|p| {
            p.restart.policy = rng.pick(&[
                RestartPolicy::Always,
                RestartPolicy::OnFailure,
                RestartPolicy::Never,
            ]);
            p.restart.start_secs = rng.pick(&[Duration::ZERO, s(1), s(5)]);
            p.restart.max_retries = rng.pick(&[0, 1, 2, 3]);
            p.ready_after_start_secs = rng.below(3) == 0;
            p.needs_notify = !p.ready_after_start_secs && rng.below(3) != 0;
            p.has_probe = rng.below(2) == 0;
            p.needs_probe = p.has_probe && !p.ready_after_start_secs && rng.below(2) == 0;
            p.restart.strategy =
                rng.pick(&[RestartStrategy::StopStart, RestartStrategy::StartStop]);
        });
        let mut r = Run::new(params.clone());
        for _ in 0..80 {
            r.wait(rng.pick(&[Duration::ZERO, Duration::from_millis(300), s(2), s(10)]));
            let event = random_event(&mut rng, &r.m, &params);
            let (next, effects) = step(&r.m, event.clone(), r.now);
            check_step(&r.m, &event, &next, &effects, r.now);
            if next != r.m || !effects.is_empty() {
                let row = (r.m.state(), event.kind(), next.state());
                assert!(TRANSITIONS.contains(&row), "{row:?} is not in TRANSITIONS");
                reached.insert(row);
            }
            r.m = next;
        }
    }
    let never: Vec<_> = TRANSITIONS
        .iter()
        .filter(|row| !reached.contains(*row))
        .collect();
    assert!(never.is_empty(), "rows never reached: {never:?}");
    let rows: HashSet<_> = TRANSITIONS.iter().collect();
    assert_eq!(
        rows.len(),
        TRANSITIONS.len(),
        "TRANSITIONS has duplicate rows"
    );
}

/// `appctl status` shows the machine's state by the name the machine gives
/// it: the conversion to the wire type keeps every state's name.
#[test]
fn every_machine_state_keeps_its_name_on_the_wire() {
    for &(from, _, to) in TRANSITIONS {
        for state in [from, to] {
            let wire = appvisor_protocol::State::from(state);
            assert_eq!(serde_json::to_value(state).unwrap(), wire.as_str());
        }
    }
}

/// A hand-off freezes a machine only between transitions, and thawing what
/// it froze gives the same machine back.
#[test]
fn a_settled_machine_thaws_as_it_was_frozen() {
    let mut r = Run::new(params());
    assert_eq!(Machine::thaw(params(), r.m.settled().unwrap()), r.m);
    r.running();
    let settled = r.m.settled().expect("running, nothing pending");
    assert!(matches!(settled.state, SettledState::Running(i) if i.pid == 100));
    assert_eq!(Machine::thaw(params(), settled), r.m);
    // A reload under way is a transition.
    r.ev(Event::Reload(req(alice())));
    assert_eq!(r.m.settled(), None);
    r.ev(Event::WorkersReplaced { instance: i(1) });
    assert_eq!(r.m.state(), AppState::Running);
    // So is a stop, and so is a caller waiting.
    r.ev(Event::Stop(waiting(alice(), 1)));
    assert_eq!(r.m.settled(), None);
    r.ev(exited(1, 0, true));
    assert_eq!(r.m.state(), AppState::Stopped);
    // Backoff carries its timer across.
    r.ev(Event::Start(req(alice())));
    r.ev(failed(2));
    let settled = r.m.settled().expect("in backoff");
    assert!(matches!(settled.state, SettledState::Backoff { .. }));
    assert_eq!(Machine::thaw(params(), settled), r.m);
}

/// No daemon hands over a running instance without its ready time, but the
/// document allows it: such an instance is ready since its spawn, so a
/// running machine always knows when it became ready.
#[test]
fn a_running_instance_handed_over_without_a_ready_time_is_ready_since_its_spawn() {
    let mut r = Run::new(params());
    r.running();
    let mut settled = r.m.settled().expect("running, nothing pending");
    let SettledState::Running(instance) = &mut settled.state else {
        panic!("running: {settled:?}");
    };
    let spawned = instance.spawned;
    instance.ready_at = None;
    let m = Machine::thaw(params(), settled);
    assert_eq!(m.state(), AppState::Running);
    assert_eq!(m.current().and_then(|c| c.ready_at), Some(spawned));
    let SettledState::Running(again) = m.settled().expect("settled").state else {
        panic!("running");
    };
    assert_eq!((again.pid, again.ready_at), (100, Some(spawned)));
}
