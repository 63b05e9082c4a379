//! [`step`]: the whole behaviour of one app, as a function of (machine,
//! event, now). It owns the restart and backoff decisions; it must never do
//! I/O, read the clock or log (the shell does all three).
//!
//! What each event does, in order:
//!
//! 1. **Start** from stopped, exited, fatal or backoff: reset the failure
//!    count, cancel the backoff timer (from backoff), emit `Spawn`, enter
//!    starting. Every spawn after the first counts in `restarts`. From
//!    stopping: reset the failure count and start once the app is gone.
//!    From starting, running or invalid: nothing.
//! 2. **Stop** from starting or running: cancel the readiness probe, send
//!    the stop signal to the main process (if it exists yet), arm the stop
//!    timer, enter stopping and stay stopped once the app is gone. From
//!    backoff: cancel the timer, enter stopped. From stopped, exited or
//!    fatal: enter stopped, naming the new cause. From stopping: stay
//!    stopped once the app is gone. From invalid: nothing.
//! 3. **Restart** from starting or running: as stop, but reset the failure
//!    count and start once the app is gone. With `strategy = "start-stop"`
//!    from running: keep the running instance as the *previous* one
//!    (`Retire`) and spawn a new one beside it; once the new one is
//!    running, stop the previous one (`StopPrevious`); if the new one fails
//!    in any way, the previous one, which never stopped serving, is the
//!    current one again (`Restore`, running, "restart failed: …"), and no
//!    failed start is counted. From every other state but invalid: as
//!    start.
//! 4. **Spawned** in starting: record the pid and start time, start the
//!    readiness probe and arm the readiness timer, or, for readiness none,
//!    a `start_secs` timer (with `start_secs` zero: enter running at once).
//!    In stopping (stopped while spawning): record the pid and send the stop
//!    signal.
//! 5. **SpawnFailed** in starting: a failed start with the spawn's reason
//!    (no process exists, so nothing to kill). In stopping: finish the stop.
//! 6. **Ready** in starting, once spawned: cancel the timer and the probe,
//!    enter running.
//! 7. **TimerFired** with a stale generation, or while no timer is armed:
//!    nothing. In starting with readiness none: enter running. In starting
//!    otherwise (readiness timeout): cancel the probe, kill every process,
//!    enter stopping and apply the failed-start rule once the app is gone.
//!    In backoff: emit `Spawn`, enter starting. In stopping (stop timeout):
//!    kill every process and keep waiting.
//! 8. **MainExited** in starting or running: cancel the probe and timer; if
//!    other processes of the app are left, kill them all, enter stopping,
//!    and decide on the exit once they are gone; otherwise decide now. In
//!    stopping: if the cgroup is empty, finish the stop; otherwise send the
//!    stop signal to every process left and keep waiting.
//! 9. **CgroupEmpty** in stopping, once the main process has exited (and no
//!    spawn is pending): finish the stop. Elsewhere: nothing (`MainExited`
//!    says whether the cgroup was empty).
//!
//! Finishing a stop cancels the timer, then by `Machine::then`: stays
//! stopped; or spawns again; or applies the failed-start rule; or decides on
//! the exit.
//!
//! The exit decision: the exit is a failed start if the app was still
//! starting, or lived less than `restart.start_secs`. With policy never:
//! exited. With policy on-failure and status 0: exited. Otherwise a failed
//! start goes through the failed-start rule, and any other exit (a crash
//! after a good start) resets the failure count and spawns again at once:
//! backoff applies only to failed starts.
//!
//! The failed-start rule: count the failure. With policy never: exited.
//! With `max_retries` > 0 reached: fatal until someone starts the app.
//! Otherwise: arm the backoff timer ([`backoff_delay`]) and enter backoff.
//!
//! Every state change sets `since`; every state has a reason a person can
//! act on. Effects come in a fixed order: cancellations, then signals and
//! kills, then `Spawn` and `ProbeReadiness`, then `SetTimer`.

use std::mem;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal as NixSignal;

use super::transitions::is_allowed;
use super::{
    backoff_delay, AfterStop, AppState, Cause, Effect, Event, Exit, ExitStatus, Machine, Previous,
};
use crate::config::{RestartPolicy, RestartStrategy};

/// One step of the machine: the machine after `event` at `now`, and what the
/// shell must do, in order.
pub fn step(m: &Machine, event: Event, now: Instant) -> (Machine, Vec<Effect>) {
    let kind = event.kind();
    let mut s = Step {
        m: m.clone(),
        effects: Vec::new(),
        now,
    };
    s.apply(event);
    let Step {
        m: next, effects, ..
    } = s;
    debug_assert!(
        (next == *m && effects.is_empty()) || is_allowed(m.state, kind, next.state),
        "transition {:?} --{kind:?}--> {:?} is not in TRANSITIONS",
        m.state,
        next.state,
    );
    debug_assert!(
        !next.reason.is_empty(),
        "state {:?} has no reason",
        next.state
    );
    (next, effects)
}

/// The machine being changed by one event, and the effects so far.
struct Step {
    m: Machine,
    effects: Vec<Effect>,
    now: Instant,
}

impl Step {
    fn apply(&mut self, event: Event) {
        match event {
            Event::Start(cause) => self.start(cause),
            Event::Stop(cause) => self.stop(cause),
            Event::Restart(cause) => self.restart(cause),
            Event::Spawned { pid } => self.spawned(pid),
            Event::SpawnFailed { reason } => self.spawn_failed(reason),
            Event::Ready => self.ready(),
            Event::TimerFired { generation } => self.timer_fired(generation),
            Event::MainExited {
                status,
                cgroup_empty,
            } => self.main_exited(status, cgroup_empty),
            Event::CgroupEmpty => self.cgroup_empty(),
            Event::PreviousExited => self.m.previous = None,
        }
    }

    fn start(&mut self, cause: Cause) {
        match self.m.state {
            AppState::Stopped | AppState::Exited | AppState::Fatal | AppState::Backoff => {
                self.cancel_timer();
                self.m.failures = 0;
                let reason = format!("starting ({})", phrase(&cause));
                self.m.cause = Some(cause);
                self.spawn(reason);
            }
            AppState::Stopping => {
                if self.m.then != AfterStop::Start {
                    self.m.then = AfterStop::Start;
                    self.m.failures = 0;
                    self.m.reason = format!("stopping, then starting ({})", phrase(&cause));
                    self.m.cause = Some(cause);
                }
            }
            // Already up or coming up: nothing to do but honour DESIGN's
            // "a manual start resets the failure count from any state", so
            // a start during a retry attempt cannot still end in fatal.
            AppState::Starting | AppState::Running => self.m.failures = 0,
            AppState::Invalid => {}
        }
    }

    fn stop(&mut self, cause: Cause) {
        match self.m.state {
            AppState::Starting | AppState::Running => self.begin_stop(cause, AfterStop::Stay),
            AppState::Backoff | AppState::Stopped | AppState::Exited | AppState::Fatal => {
                self.cancel_timer();
                self.enter(AppState::Stopped, stopped_reason(Some(&cause)));
                self.m.cause = Some(cause);
            }
            AppState::Stopping => {
                if self.m.then != AfterStop::Stay {
                    self.m.then = AfterStop::Stay;
                    self.m.reason = format!("stopping ({})", phrase(&cause));
                    self.m.cause = Some(cause);
                }
            }
            AppState::Invalid => {}
        }
    }

    fn restart(&mut self, cause: Cause) {
        match (self.m.state, self.m.pid) {
            (AppState::Running, Some(pid))
                if self.m.params.restart.strategy == RestartStrategy::StartStop =>
            {
                // The running instance keeps serving until the new one is
                // ready; if the new one fails, it simply goes on.
                self.m.previous = Some(Previous {
                    pid,
                    started_at: self.m.started_at,
                });
                self.m.failures = 0;
                self.effects.push(Effect::Retire);
                let reason = format!(
                    "starting a new instance beside pid {pid} ({})",
                    phrase(&cause)
                );
                self.m.cause = Some(cause);
                self.spawn(reason);
            }
            (AppState::Starting | AppState::Running, _) => self.begin_stop(cause, AfterStop::Start),
            _ => self.start(cause),
        }
    }

    /// Starting or running -> stopping: ask the main process to stop and
    /// give it `stop.timeout` before everything is killed.
    fn begin_stop(&mut self, cause: Cause, then: AfterStop) {
        self.cancel_probe();
        if self.m.previous.take().is_some() {
            self.effects.push(Effect::StopPrevious);
        }
        if self.m.pid.is_some() {
            self.effects.push(Effect::Signal(self.m.params.stop_signal));
        }
        self.set_timer(self.m.params.stop_timeout);
        if then == AfterStop::Start {
            // A restart is a manual start: it resets the failure count.
            self.m.failures = 0;
        }
        let reason = match then {
            AfterStop::Start => format!("stopping, then starting ({})", phrase(&cause)),
            _ => format!("stopping ({})", phrase(&cause)),
        };
        self.m.then = then;
        self.m.cause = Some(cause);
        self.enter(AppState::Stopping, reason);
    }

    fn spawned(&mut self, pid: u32) {
        if !self.m.spawn_pending {
            return;
        }
        match self.m.state {
            AppState::Starting => {
                self.m.spawn_pending = false;
                self.m.pid = Some(pid);
                self.m.started_at = Some(self.now);
                let params = &self.m.params;
                let start_secs = params.restart.start_secs;
                if params.ready_after_start_secs && start_secs.is_zero() {
                    self.enter_running("started, no readiness check".to_owned());
                } else if params.ready_after_start_secs {
                    self.effects.push(Effect::ProbeReadiness);
                    self.set_timer(start_secs);
                    self.m.reason = format!("starting, up for less than {}", secs(start_secs));
                } else {
                    let timeout = params.readiness_timeout;
                    self.effects.push(Effect::ProbeReadiness);
                    self.set_timer(timeout);
                    self.m.reason =
                        format!("starting, waiting to be ready (timeout {})", secs(timeout));
                }
            }
            AppState::Stopping => {
                // Stopped while the spawn was under way: the process now
                // exists, so it gets the stop signal the stop could not send.
                self.m.spawn_pending = false;
                self.m.pid = Some(pid);
                self.m.started_at = Some(self.now);
                self.effects.push(Effect::Signal(self.m.params.stop_signal));
            }
            _ => {}
        }
    }

    fn spawn_failed(&mut self, reason: String) {
        if !self.m.spawn_pending {
            return;
        }
        match self.m.state {
            AppState::Starting => {
                self.m.spawn_pending = false;
                self.failed_start(reason);
            }
            AppState::Stopping => {
                self.m.spawn_pending = false;
                self.finish_stop();
            }
            _ => {}
        }
    }

    fn ready(&mut self) {
        if self.m.state != AppState::Starting || self.m.pid.is_none() {
            return;
        }
        self.cancel_timer();
        self.cancel_probe();
        self.enter_running(self.running_reason());
    }

    /// Starting -> running; a start-stop restart's previous instance is
    /// stopped now that its successor serves.
    fn enter_running(&mut self, reason: String) {
        if self.m.previous.take().is_some() {
            self.effects.push(Effect::StopPrevious);
        }
        self.enter(AppState::Running, reason);
    }

    fn timer_fired(&mut self, generation: u64) {
        if !self.m.timer_armed || generation != self.m.timer_generation {
            return;
        }
        match self.m.state {
            AppState::Starting if self.m.params.ready_after_start_secs => {
                self.m.timer_armed = false;
                self.cancel_probe();
                self.enter_running(self.running_reason());
            }
            AppState::Starting => {
                self.m.timer_armed = false;
                let reason = format!(
                    "not ready after {} (readiness timeout)",
                    secs(self.m.params.readiness_timeout)
                );
                self.cancel_probe();
                self.effects.push(Effect::KillAll);
                self.enter(
                    AppState::Stopping,
                    format!("{reason}, killing every process"),
                );
                self.m.then = AfterStop::FailStart(reason);
            }
            AppState::Backoff => {
                self.m.timer_armed = false;
                let reason = format!("retrying after {}", failed_starts(self.m.failures));
                self.spawn(reason);
            }
            AppState::Stopping => {
                self.m.timer_armed = false;
                self.effects.push(Effect::KillAll);
                self.m.reason = format!(
                    "stop timed out after {}, killing every process",
                    secs(self.m.params.stop_timeout)
                );
            }
            // No timer is armed in these states; a fire here is stale.
            AppState::Stopped
            | AppState::Running
            | AppState::Exited
            | AppState::Fatal
            | AppState::Invalid => {}
        }
    }

    fn main_exited(&mut self, status: ExitStatus, cgroup_empty: bool) {
        if self.m.pid.is_none() {
            return;
        }
        match self.m.state {
            AppState::Starting | AppState::Running => {
                let uptime = self.uptime();
                let exit = Exit {
                    status,
                    uptime,
                    failed_start: self.m.state == AppState::Starting
                        || uptime < self.m.params.restart.start_secs,
                };
                self.cancel_probe();
                self.cancel_timer();
                self.m.pid = None;
                self.m.started_at = None;
                if cgroup_empty {
                    self.decide(exit);
                } else {
                    self.effects.push(Effect::KillAll);
                    let reason = format!("{}, killing leftover processes", exit_reason(&exit));
                    self.enter(AppState::Stopping, reason);
                    self.m.then = AfterStop::Decide(exit);
                }
            }
            AppState::Stopping => {
                self.m.pid = None;
                self.m.started_at = None;
                if cgroup_empty {
                    self.finish_stop();
                } else {
                    // The main process is gone but not its children (a
                    // gunicorn arbiter killed before its workers): ask them
                    // too. The stop timer is still armed for the SIGKILL.
                    self.effects
                        .push(Effect::SignalAll(self.m.params.stop_signal));
                }
            }
            _ => {}
        }
    }

    fn cgroup_empty(&mut self) {
        if self.m.state == AppState::Stopping && self.m.pid.is_none() && !self.m.spawn_pending {
            self.finish_stop();
        }
    }

    /// Stopping -> wherever `then` leads, once no process of the app is left.
    fn finish_stop(&mut self) {
        self.cancel_timer();
        let then = mem::replace(&mut self.m.then, AfterStop::Stay);
        if matches!(then, AfterStop::Stay | AfterStop::Start) && self.m.previous.take().is_some() {
            // Someone asked for a stop or a plain restart meanwhile: the
            // previous instance of a start-stop restart goes too.
            self.effects.push(Effect::StopPrevious);
        }
        match then {
            AfterStop::Stay => self.enter(AppState::Stopped, stopped_reason(self.m.cause.as_ref())),
            AfterStop::Start => {
                let reason = format!("starting ({})", opt_phrase(self.m.cause.as_ref()));
                self.spawn(reason);
            }
            AfterStop::FailStart(reason) => self.failed_start(reason),
            AfterStop::Decide(exit) => self.decide(exit),
        }
    }

    /// What an exit of the main process leads to, once no process is left.
    fn decide(&mut self, exit: Exit) {
        let base = exit_reason(&exit);
        if self.restore_previous(&base) {
            return;
        }
        match self.m.params.restart.policy {
            RestartPolicy::Never => {
                self.enter(AppState::Exited, format!("{base}, restart policy is never"));
            }
            RestartPolicy::OnFailure if exit.status == ExitStatus::Code(0) => {
                self.enter(AppState::Exited, base);
            }
            _ if exit.failed_start => self.failed_start(base),
            _ => {
                self.m.failures = 0;
                self.spawn(format!("{base}, restarting"));
            }
        }
    }

    /// A start failed for `reason`: back off, give up, or (policy never)
    /// stay exited.
    fn failed_start(&mut self, reason: String) {
        if self.restore_previous(&reason) {
            return;
        }
        self.m.failures = self.m.failures.saturating_add(1);
        let restart = &self.m.params.restart;
        let in_a_row = failed_starts(self.m.failures);
        if restart.policy == RestartPolicy::Never {
            self.enter(
                AppState::Exited,
                format!("{reason}, restart policy is never"),
            );
        } else if restart.max_retries > 0 && self.m.failures >= restart.max_retries {
            self.enter(
                AppState::Fatal,
                format!("{reason}, {in_a_row}, giving up (appctl start resets)"),
            );
        } else {
            let delay = backoff_delay(
                self.m.failures,
                restart.backoff_initial,
                restart.backoff_max,
            );
            self.set_timer(delay);
            self.enter(
                AppState::Backoff,
                format!("{reason}, {in_a_row}, next try in {}", secs(delay)),
            );
        }
    }

    /// A start-stop restart's new instance failed for `reason`: the
    /// previous instance, still serving, becomes the current one again.
    /// Not a failed start of the app: nothing stopped serving.
    fn restore_previous(&mut self, reason: &str) -> bool {
        let Some(previous) = self.m.previous.take() else {
            return false;
        };
        self.effects.insert(0, Effect::Restore);
        self.m.pid = Some(previous.pid);
        self.m.started_at = previous.started_at;
        self.enter(
            AppState::Running,
            format!(
                "restart failed: {reason}; the previous instance (pid {}) keeps running",
                previous.pid
            ),
        );
        true
    }

    /// Emit `Spawn` and enter starting; the process exists once `Spawned`
    /// comes back.
    fn spawn(&mut self, reason: String) {
        if self.m.ever_spawned {
            self.m.restarts = self.m.restarts.saturating_add(1);
        }
        self.m.ever_spawned = true;
        self.m.spawn_pending = true;
        self.m.pid = None;
        self.m.started_at = None;
        self.effects.push(Effect::Spawn);
        self.enter(AppState::Starting, reason);
    }

    fn enter(&mut self, state: AppState, reason: String) {
        if self.m.state != state {
            self.m.state = state;
            self.m.since = self.now;
        }
        self.m.reason = reason;
    }

    fn set_timer(&mut self, after: Duration) {
        self.m.timer_generation += 1;
        self.m.timer_armed = true;
        self.effects.push(Effect::SetTimer {
            after,
            generation: self.m.timer_generation,
        });
    }

    fn cancel_timer(&mut self) {
        if self.m.timer_armed {
            self.m.timer_armed = false;
            self.effects.push(Effect::CancelTimer);
        }
    }

    /// The readiness probe runs from `Spawned` until the app leaves starting.
    fn cancel_probe(&mut self) {
        if self.m.state == AppState::Starting && self.m.pid.is_some() {
            self.effects.push(Effect::CancelProbe);
        }
    }

    fn running_reason(&self) -> String {
        if self.m.params.ready_after_start_secs {
            format!("up for {}", secs(self.m.params.restart.start_secs))
        } else {
            "ready".to_owned()
        }
    }

    fn uptime(&self) -> Duration {
        self.m
            .started_at
            .map_or(Duration::ZERO, |at| self.now.saturating_duration_since(at))
    }
}

/// "requested by alice", "configuration changed", ...
fn phrase(cause: &Cause) -> String {
    match cause {
        Cause::Autostart => "autostart".to_owned(),
        Cause::Operator(user) => format!("requested by {user}"),
        Cause::Config => "configuration changed".to_owned(),
        Cause::Shutdown => "daemon shutting down".to_owned(),
    }
}

fn opt_phrase(cause: Option<&Cause>) -> String {
    cause.map_or_else(|| "requested".to_owned(), phrase)
}

/// "stopped by alice", "stopped (configuration changed)".
fn stopped_reason(cause: Option<&Cause>) -> String {
    match cause {
        Some(Cause::Operator(user)) => format!("stopped by {user}"),
        Some(cause) => format!("stopped ({})", phrase(cause)),
        None => "stopped".to_owned(),
    }
}

/// "1 failed start in a row", "5 failed starts in a row".
fn failed_starts(failures: u32) -> String {
    let s = if failures == 1 { "" } else { "s" };
    format!("{failures} failed start{s} in a row")
}

/// "exited with status 1 after 0.2s", "killed by signal 9 (SIGKILL) after 3.0s".
fn exit_reason(exit: &Exit) -> String {
    let uptime = exit.uptime.as_secs_f64();
    match exit.status {
        ExitStatus::Code(code) => format!("exited with status {code} after {uptime:.1}s"),
        ExitStatus::Signal(number) => match NixSignal::try_from(number) {
            Ok(signal) => format!(
                "killed by signal {number} ({}) after {uptime:.1}s",
                signal.as_str()
            ),
            Err(_) => format!("killed by signal {number} after {uptime:.1}s"),
        },
        ExitStatus::MemoryLimit { limit } => format!(
            "killed: memory limit {} reached after {uptime:.1}s",
            binary_size(limit)
        ),
    }
}

/// `512MiB`, `1GiB`, `1536KiB`, `1000B`: the largest binary unit that
/// divides `bytes`, the form `[limits] memory` is written in.
fn binary_size(bytes: u64) -> String {
    for (unit, shift) in [("GiB", 30), ("MiB", 20), ("KiB", 10)] {
        if bytes >= 1 << shift && bytes % (1 << shift) == 0 {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    format!("{bytes}B")
}

/// A configured duration in seconds: "60s", "0.5s", "1.25s".
fn secs(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        let text = format!("{:.3}", d.as_secs_f64());
        format!("{}s", text.trim_end_matches('0'))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use nix::sys::signal::Signal::{SIGINT, SIGTERM};

    use super::*;
    use crate::app::{Params, TRANSITIONS};
    use crate::config::{RestartSpec, RestartStrategy, Signal};

    const TERM: Signal = Signal(SIGTERM);
    const ENOENT: &str = "spawn failed at chdir /srv/shop/current: No such file or directory";

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    fn alice() -> Cause {
        Cause::Operator("alice".to_owned())
    }

    /// notify readiness, policy always, start_secs 1s, backoff 1s..60s,
    /// max_retries 0, stop TERM with 30s timeout.
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
            readiness_timeout: s(60),
            stop_signal: TERM,
            stop_timeout: s(30),
        }
    }

    fn with(f: impl FnOnce(&mut Params)) -> Params {
        let mut p = params();
        f(&mut p);
        p
    }

    fn timer(secs: u64, generation: u64) -> Effect {
        Effect::SetTimer {
            after: s(secs),
            generation,
        }
    }

    fn exited(code: i32, cgroup_empty: bool) -> Event {
        Event::MainExited {
            status: ExitStatus::Code(code),
            cgroup_empty,
        }
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
                m: Machine::new(params, now),
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

        /// The armed timer fires.
        fn fire(&mut self) -> Vec<Effect> {
            assert!(self.m.timer_armed, "no timer armed in {:?}", self.m.state);
            self.ev(Event::TimerFired {
                generation: self.m.timer_generation,
            })
        }

        /// Feeds `event` and checks the effects, the state and the reason.
        #[track_caller]
        fn expect(&mut self, event: Event, effects: &[Effect], state: AppState, reason: &str) {
            let what = format!("{event:?} in {:?}", self.m.state);
            let got = self.ev(event);
            assert_eq!(got, effects, "effects of {what}");
            assert_eq!(
                (self.m.state, self.m.reason.as_str()),
                (state, reason),
                "after {what}"
            );
        }

        #[track_caller]
        fn expect_fire(&mut self, effects: &[Effect], state: AppState, reason: &str) {
            self.expect(
                Event::TimerFired {
                    generation: self.m.timer_generation,
                },
                effects,
                state,
                reason,
            );
        }

        /// Start, spawn as pid 100, become ready.
        fn running(&mut self) -> &mut Run {
            self.ev(Event::Start(Cause::Autostart));
            self.ev(Event::Spawned { pid: 100 });
            self.ev(Event::Ready);
            assert_eq!(self.m.state, AppState::Running);
            self
        }
    }

    #[test]
    fn new_machine_is_stopped_and_not_started() {
        let now = Instant::now();
        let m = Machine::new(params(), now);
        assert_eq!(
            (m.state, m.reason.as_str(), m.since, m.pid, m.restarts),
            (AppState::Stopped, "not started", now, None, 0)
        );
    }

    #[test]
    fn start_spawn_ready_stop() {
        let mut r = Run::new(params());
        let t0 = r.now;
        r.expect(
            Event::Start(alice()),
            &[Effect::Spawn],
            AppState::Starting,
            "starting (requested by alice)",
        );
        assert_eq!((r.m.started_at, r.m.pid, r.m.restarts), (None, None, 0));
        r.wait(s(1)).expect(
            Event::Spawned { pid: 42 },
            &[Effect::ProbeReadiness, timer(60, 1)],
            AppState::Starting,
            "starting, waiting to be ready (timeout 60s)",
        );
        assert_eq!(
            (r.m.pid, r.m.started_at, r.m.since),
            (Some(42), Some(t0 + s(1)), t0)
        );
        r.wait(s(2)).expect(
            Event::Ready,
            &[Effect::CancelTimer, Effect::CancelProbe],
            AppState::Running,
            "ready",
        );
        assert_eq!(r.m.since, t0 + s(3));
        r.expect(Event::Start(alice()), &[], AppState::Running, "ready");
        r.expect(
            Event::Stop(alice()),
            &[Effect::Signal(TERM), timer(30, 2)],
            AppState::Stopping,
            "stopping (requested by alice)",
        );
        r.expect(
            exited(0, false),
            &[Effect::SignalAll(TERM)],
            AppState::Stopping,
            "stopping (requested by alice)",
        );
        assert_eq!(r.m.pid, None);
        r.expect(
            Event::CgroupEmpty,
            &[Effect::CancelTimer],
            AppState::Stopped,
            "stopped by alice",
        );
        r.expect(
            Event::Start(Cause::Config),
            &[Effect::Spawn],
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
                r.ev(Event::Start(Cause::Autostart));
                r.ev(Event::Spawned { pid: 100 });
            }
            AppState::Running => {
                r.running();
            }
            AppState::Backoff => {
                r.ev(Event::Start(Cause::Autostart));
                r.ev(Event::SpawnFailed {
                    reason: ENOENT.to_owned(),
                });
            }
            AppState::Stopping => {
                r.running().ev(Event::Stop(Cause::Config));
            }
            AppState::Exited => {
                r.m.params.restart.policy = RestartPolicy::Never;
                r.running().ev(exited(1, true));
                r.m.params.restart.policy = RestartPolicy::Always;
            }
            AppState::Fatal => {
                r.m.params.restart.max_retries = 1;
                r.ev(Event::Start(Cause::Autostart));
                r.ev(Event::SpawnFailed {
                    reason: ENOENT.to_owned(),
                });
                r.m.params.restart.max_retries = 0;
            }
            AppState::Invalid => {
                r.m.state = AppState::Invalid;
                r.m.reason = "invalid configuration".to_owned();
            }
        }
        assert_eq!(r.m.state, state);
        r
    }

    #[test]
    fn requests_in_every_state() {
        use AppState::*;
        let stopped_by_alice = "stopped by alice";
        let start = "starting (requested by alice)";
        #[rustfmt::skip]
        let cases: &[(AppState, Event, &[Effect], AppState, &str)] = &[
            // (from, event, effects, to, reason)
            (Stopped, Event::Start(alice()), &[Effect::Spawn], Starting, start),
            (Starting, Event::Start(alice()), &[], Starting, "starting, waiting to be ready (timeout 60s)"),
            (Running, Event::Start(alice()), &[], Running, "ready"),
            (Backoff, Event::Start(alice()), &[Effect::CancelTimer, Effect::Spawn], Starting, start),
            (Stopping, Event::Start(alice()), &[], Stopping, "stopping, then starting (requested by alice)"),
            (Exited, Event::Start(alice()), &[Effect::Spawn], Starting, start),
            (Fatal, Event::Start(alice()), &[Effect::Spawn], Starting, start),
            (Invalid, Event::Start(alice()), &[], Invalid, "invalid configuration"),
            (Stopped, Event::Stop(alice()), &[], Stopped, stopped_by_alice),
            (Starting, Event::Stop(alice()), &[Effect::CancelProbe, Effect::Signal(TERM), timer(30, 2)], Stopping, "stopping (requested by alice)"),
            (Running, Event::Stop(alice()), &[Effect::Signal(TERM), timer(30, 2)], Stopping, "stopping (requested by alice)"),
            (Backoff, Event::Stop(alice()), &[Effect::CancelTimer], Stopped, stopped_by_alice),
            (Stopping, Event::Stop(alice()), &[], Stopping, "stopping (configuration changed)"),
            (Exited, Event::Stop(alice()), &[], Stopped, stopped_by_alice),
            (Fatal, Event::Stop(alice()), &[], Stopped, stopped_by_alice),
            (Invalid, Event::Stop(alice()), &[], Invalid, "invalid configuration"),
            (Stopped, Event::Restart(alice()), &[Effect::Spawn], Starting, start),
            (Starting, Event::Restart(alice()), &[Effect::CancelProbe, Effect::Signal(TERM), timer(30, 2)], Stopping, "stopping, then starting (requested by alice)"),
            (Running, Event::Restart(alice()), &[Effect::Signal(TERM), timer(30, 2)], Stopping, "stopping, then starting (requested by alice)"),
            (Backoff, Event::Restart(alice()), &[Effect::CancelTimer, Effect::Spawn], Starting, start),
            (Stopping, Event::Restart(alice()), &[], Stopping, "stopping, then starting (requested by alice)"),
            (Exited, Event::Restart(alice()), &[Effect::Spawn], Starting, start),
            (Fatal, Event::Restart(alice()), &[Effect::Spawn], Starting, start),
            (Invalid, Event::Restart(alice()), &[], Invalid, "invalid configuration"),
        ];
        for (from, event, effects, to, reason) in cases {
            let mut r = machine_in(*from);
            r.m.failures = 7;
            let before = r.m.clone();
            r.wait(s(5)).expect(event.clone(), effects, *to, reason);
            let changed_state = before.state != r.m.state;
            let since = if changed_state { r.now } else { before.since };
            assert_eq!(r.m.since, since, "since after {event:?} in {from:?}");
            let resets = match event {
                Event::Restart(_) => *from != Invalid,
                // DESIGN.md: a manual start resets the count from any state.
                Event::Start(_) => *from != Invalid,
                _ => false,
            };
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
        r.ev(Event::Start(Cause::Autostart));
        let delays = [1, 2, 4, 8, 16, 16, 16];
        for (i, delay) in delays.into_iter().enumerate() {
            let failures = i as u32 + 1;
            let in_a_row = if failures == 1 {
                "1 failed start in a row".to_owned()
            } else {
                format!("{failures} failed starts in a row")
            };
            let generation = r.m.timer_generation + 1;
            r.expect(
                Event::SpawnFailed {
                    reason: ENOENT.to_owned(),
                },
                &[timer(delay, generation)],
                AppState::Backoff,
                &format!("{ENOENT}, {in_a_row}, next try in {delay}s"),
            );
            r.wait(s(delay)).expect_fire(
                &[Effect::Spawn],
                AppState::Starting,
                &format!("retrying after {in_a_row}"),
            );
            assert_eq!(r.m.restarts, failures);
        }
    }

    #[test]
    fn max_retries_gives_up_and_a_manual_start_revives() {
        let mut r = Run::new(with(|p| p.restart.max_retries = 3));
        r.ev(Event::Start(Cause::Autostart));
        for _ in 0..2 {
            r.ev(Event::Spawned { pid: 7 });
            r.wait(Duration::from_millis(200)).ev(exited(1, true));
            assert_eq!(r.m.state, AppState::Backoff);
            r.fire();
        }
        r.ev(Event::Spawned { pid: 7 });
        r.wait(Duration::from_millis(200)).expect(
            exited(1, true),
            &[Effect::CancelProbe, Effect::CancelTimer],
            AppState::Fatal,
            "exited with status 1 after 0.2s, 3 failed starts in a row, giving up (appctl start resets)",
        );
        assert_eq!((r.m.failures, r.m.restarts, r.m.timer_armed), (3, 2, false));
        r.expect(
            Event::Start(alice()),
            &[Effect::Spawn],
            AppState::Starting,
            "starting (requested by alice)",
        );
        assert_eq!((r.m.failures, r.m.restarts), (0, 3));
        r.ev(Event::Spawned { pid: 8 });
        r.ev(Event::Ready);
        assert_eq!(r.m.state, AppState::Running);
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
        #[rustfmt::skip]
        let cases: &[ExitCase<'_>] = &[
            (Always, true, 12, Code(0), &[Effect::Spawn], AppState::Starting, respawn("exited with status 0 after 12.5s")),
            (Always, true, 0, Code(0), &[timer(1, 2)], AppState::Backoff, "exited with status 0 after 0.5s, 1 failed start in a row, next try in 1s".to_owned()),
            (Always, false, 0, Code(0), &[Effect::CancelProbe, Effect::CancelTimer, timer(1, 2)], AppState::Backoff, "exited with status 0 after 0.5s, 1 failed start in a row, next try in 1s".to_owned()),
            (Always, false, 12, Sig(9), &[Effect::CancelProbe, Effect::CancelTimer, timer(1, 2)], AppState::Backoff, "killed by signal 9 (SIGKILL) after 12.5s, 1 failed start in a row, next try in 1s".to_owned()),
            (OnFailure, true, 12, Code(0), &[], AppState::Exited, "exited with status 0 after 12.5s".to_owned()),
            (OnFailure, true, 0, Code(0), &[], AppState::Exited, "exited with status 0 after 0.5s".to_owned()),
            (OnFailure, true, 12, Code(1), &[Effect::Spawn], AppState::Starting, respawn("exited with status 1 after 12.5s")),
            (OnFailure, true, 12, Sig(15), &[Effect::Spawn], AppState::Starting, respawn("killed by signal 15 (SIGTERM) after 12.5s")),
            (OnFailure, true, 0, Code(3), &[timer(1, 2)], AppState::Backoff, "exited with status 3 after 0.5s, 1 failed start in a row, next try in 1s".to_owned()),
            (Never, true, 12, Code(1), &[], AppState::Exited, "exited with status 1 after 12.5s, restart policy is never".to_owned()),
            (Never, false, 0, Code(0), &[Effect::CancelProbe, Effect::CancelTimer], AppState::Exited, "exited with status 0 after 0.5s, restart policy is never".to_owned()),
            (Always, true, 12, Sig(70), &[Effect::Spawn], AppState::Starting, respawn("killed by signal 70 after 12.5s")),
            (OnFailure, true, 12, ExitStatus::MemoryLimit { limit: 512 << 20 }, &[Effect::Spawn], AppState::Starting, respawn("killed: memory limit 512MiB reached after 12.5s")),
        ];
        for (policy, ready, lived, status, effects, state, reason) in cases {
            let mut r = Run::new(with(|p| p.restart.policy = *policy));
            r.m.failures = 2;
            r.ev(Event::Start(Cause::Autostart));
            r.ev(Event::Spawned { pid: 5 });
            if *ready {
                r.ev(Event::Ready);
            }
            r.wait(s(*lived) + Duration::from_millis(500));
            r.expect(
                Event::MainExited {
                    status: *status,
                    cgroup_empty: true,
                },
                effects,
                *state,
                reason,
            );
            assert_eq!(r.m.pid, None);
            if *state == AppState::Starting {
                assert_eq!((r.m.failures, r.m.restarts), (0, 1), "{reason}");
            }
        }
    }

    #[test]
    fn crash_after_a_good_start_resets_failures() {
        let mut r = Run::new(params());
        r.ev(Event::Start(Cause::Autostart));
        r.ev(Event::SpawnFailed {
            reason: ENOENT.to_owned(),
        });
        r.fire();
        r.ev(Event::SpawnFailed {
            reason: ENOENT.to_owned(),
        });
        r.fire();
        assert_eq!(r.m.failures, 2);
        r.ev(Event::Spawned { pid: 9 });
        r.ev(Event::Ready);
        r.wait(s(5)).expect(
            Event::MainExited {
                status: ExitStatus::Signal(11),
                cgroup_empty: true,
            },
            &[Effect::Spawn],
            AppState::Starting,
            "killed by signal 11 (SIGSEGV) after 5.0s, restarting",
        );
        assert_eq!((r.m.failures, r.m.restarts), (0, 3));
    }

    #[test]
    fn a_manual_start_during_a_retry_resets_the_failure_count() {
        // DESIGN.md: a manual start works from any state and resets the
        // count, so an operator's start cannot still end in fatal.
        let mut r = Run::new(params());
        r.ev(Event::Start(Cause::Autostart));
        r.ev(Event::SpawnFailed {
            reason: ENOENT.to_owned(),
        });
        r.fire();
        assert_eq!((r.m.state, r.m.failures), (AppState::Starting, 1));
        let effects = r.ev(Event::Start(alice()));
        assert_eq!(
            (effects, r.m.state, r.m.failures),
            (vec![], AppState::Starting, 0)
        );
    }

    fn running_start_stop() -> Run {
        let mut r = Run::new(with(|p| p.restart.strategy = RestartStrategy::StartStop));
        r.ev(Event::Start(Cause::Autostart));
        r.ev(Event::Spawned { pid: 42 });
        r.ev(Event::Ready);
        assert_eq!((r.m.state, r.m.pid), (AppState::Running, Some(42)));
        r
    }

    #[test]
    fn start_stop_restart_stops_the_old_instance_once_the_new_one_is_ready() {
        let mut r = running_start_stop();
        r.wait(s(10)).expect(
            Event::Restart(alice()),
            &[Effect::Retire, Effect::Spawn],
            AppState::Starting,
            "starting a new instance beside pid 42 (requested by alice)",
        );
        assert_eq!(r.m.previous.map(|p| p.pid), Some(42));
        r.ev(Event::Spawned { pid: 43 });
        r.expect(
            Event::Ready,
            &[
                Effect::CancelTimer,
                Effect::CancelProbe,
                Effect::StopPrevious,
            ],
            AppState::Running,
            "ready",
        );
        assert_eq!((r.m.pid, r.m.previous, r.m.restarts), (Some(43), None, 1));
    }

    #[test]
    fn start_stop_restart_that_fails_keeps_the_old_instance_serving() {
        let mut r = running_start_stop();
        let started = r.m.started_at;
        r.ev(Event::Restart(alice()));
        r.expect(
            Event::SpawnFailed {
                reason: ENOENT.to_owned(),
            },
            &[Effect::Restore],
            AppState::Running,
            &format!("restart failed: {ENOENT}; the previous instance (pid 42) keeps running"),
        );
        assert_eq!(
            (r.m.pid, r.m.started_at, r.m.failures),
            (Some(42), started, 0)
        );

        // A new instance that dies while starting falls back the same way.
        r.ev(Event::Restart(alice()));
        r.ev(Event::Spawned { pid: 44 });
        r.wait(s(1)).expect(
            Event::MainExited {
                status: ExitStatus::Code(1),
                cgroup_empty: true,
            },
            &[Effect::Restore, Effect::CancelProbe, Effect::CancelTimer],
            AppState::Running,
            "restart failed: exited with status 1 after 1.0s; the previous instance (pid 42) keeps running",
        );
    }

    #[test]
    fn start_stop_without_a_previous_instance_left_is_an_ordinary_failed_start() {
        let mut r = running_start_stop();
        r.ev(Event::Restart(alice()));
        assert_eq!(r.ev(Event::PreviousExited), []);
        assert_eq!(r.m.previous, None);
        r.expect(
            Event::SpawnFailed {
                reason: ENOENT.to_owned(),
            },
            &[timer(1, 2)],
            AppState::Backoff,
            &format!("{ENOENT}, 1 failed start in a row, next try in 1s"),
        );
    }

    #[test]
    fn stopping_during_a_start_stop_restart_stops_both_instances() {
        let mut r = running_start_stop();
        r.ev(Event::Restart(alice()));
        r.ev(Event::Spawned { pid: 43 });
        let effects = r.ev(Event::Stop(alice()));
        assert!(effects.contains(&Effect::StopPrevious), "{effects:?}");
        assert!(effects.contains(&Effect::Signal(TERM)), "{effects:?}");
        assert_eq!((r.m.state, r.m.previous), (AppState::Stopping, None));
    }

    #[test]
    fn stale_timers_are_ignored() {
        let mut r = Run::new(params());
        r.ev(Event::Start(Cause::Autostart));
        // No timer armed yet: even the current generation is stale.
        let before = r.m.clone();
        assert_eq!(r.ev(Event::TimerFired { generation: 0 }), []);
        assert_eq!(r.m, before);
        r.ev(Event::Spawned { pid: 3 });
        let readiness = r.m.timer_generation;
        r.ev(Event::Ready);
        // The readiness timer fired before the shell saw the cancel.
        let before = r.m.clone();
        assert_eq!(
            r.ev(Event::TimerFired {
                generation: readiness
            }),
            []
        );
        assert_eq!(r.m, before);
        r.ev(Event::Stop(alice()));
        // The stop timer replaced an older generation.
        assert_eq!(
            r.ev(Event::TimerFired {
                generation: readiness
            }),
            []
        );
        assert_eq!(r.m.state, AppState::Stopping);
        r.expect_fire(
            &[Effect::KillAll],
            AppState::Stopping,
            "stop timed out after 30s, killing every process",
        );
        // A timer fires once.
        let before = r.m.clone();
        assert_eq!(
            r.ev(Event::TimerFired {
                generation: before.timer_generation
            }),
            []
        );
        assert_eq!(r.m, before);
    }

    #[test]
    fn stop_timeout_kills_every_process() {
        let mut r = Run::new(params());
        r.running();
        r.ev(Event::Stop(alice()));
        r.wait(s(30)).expect_fire(
            &[Effect::KillAll],
            AppState::Stopping,
            "stop timed out after 30s, killing every process",
        );
        r.expect(
            Event::MainExited {
                status: ExitStatus::Signal(9),
                cgroup_empty: true,
            },
            &[],
            AppState::Stopped,
            "stopped by alice",
        );
        assert_eq!(r.m.since, r.now);
    }

    #[test]
    fn restart_from_running_stops_then_spawns() {
        let mut r = Run::new(params());
        r.running();
        r.expect(
            Event::Restart(alice()),
            &[Effect::Signal(TERM), timer(30, 2)],
            AppState::Stopping,
            "stopping, then starting (requested by alice)",
        );
        r.wait(s(1)).expect(
            exited(0, true),
            &[Effect::CancelTimer, Effect::Spawn],
            AppState::Starting,
            "starting (requested by alice)",
        );
        assert_eq!(
            (r.m.restarts, r.m.pid, r.m.then.clone()),
            (1, None, AfterStop::Stay)
        );
        r.expect(
            Event::Spawned { pid: 101 },
            &[Effect::ProbeReadiness, timer(60, 3)],
            AppState::Starting,
            "starting, waiting to be ready (timeout 60s)",
        );
    }

    #[test]
    fn leftover_processes_are_killed_before_deciding() {
        let mut r = Run::new(params());
        r.running();
        r.wait(s(12)).expect(
            exited(1, false),
            &[Effect::KillAll],
            AppState::Stopping,
            "exited with status 1 after 12.0s, killing leftover processes",
        );
        // The main process is gone, so CgroupEmpty finishes the stop; a
        // second MainExited cannot come and would be ignored.
        let before = r.m.clone();
        assert_eq!(r.ev(exited(1, true)), []);
        assert_eq!(r.m, before);
        r.expect(
            Event::CgroupEmpty,
            &[Effect::Spawn],
            AppState::Starting,
            "exited with status 1 after 12.0s, restarting",
        );
        assert_eq!((r.m.failures, r.m.restarts), (0, 1));
    }

    #[test]
    fn cgroup_empty_is_ignored_while_the_main_process_lives() {
        let mut r = Run::new(params());
        r.running();
        r.ev(Event::Stop(alice()));
        let before = r.m.clone();
        assert_eq!(r.ev(Event::CgroupEmpty), []);
        assert_eq!(r.m, before);
    }

    #[test]
    fn readiness_timeout_kills_and_counts_a_failed_start() {
        let mut r = Run::new(params());
        r.ev(Event::Start(Cause::Autostart));
        r.ev(Event::Spawned { pid: 4 });
        r.wait(s(60)).expect_fire(
            &[Effect::CancelProbe, Effect::KillAll],
            AppState::Stopping,
            "not ready after 60s (readiness timeout), killing every process",
        );
        let reason = "not ready after 60s (readiness timeout)".to_owned();
        assert_eq!(r.m.then, AfterStop::FailStart(reason));
        // Ready after the timeout changes nothing.
        assert_eq!(r.ev(Event::Ready), []);
        r.expect(
            Event::MainExited {
                status: ExitStatus::Signal(9),
                cgroup_empty: true,
            },
            &[timer(1, 2)],
            AppState::Backoff,
            "not ready after 60s (readiness timeout), 1 failed start in a row, next try in 1s",
        );
    }

    #[test]
    fn start_while_stopping_starts_once_stopped() {
        let mut r = Run::new(params());
        r.running();
        r.ev(Event::Stop(alice()));
        r.m.failures = 4;
        r.expect(
            Event::Start(Cause::Operator("bob".to_owned())),
            &[],
            AppState::Stopping,
            "stopping, then starting (requested by bob)",
        );
        assert_eq!(r.m.failures, 0);
        r.expect(
            exited(0, false),
            &[Effect::SignalAll(TERM)],
            AppState::Stopping,
            "stopping, then starting (requested by bob)",
        );
        r.expect(
            Event::CgroupEmpty,
            &[Effect::CancelTimer, Effect::Spawn],
            AppState::Starting,
            "starting (requested by bob)",
        );
        // And a stop after the start wins again.
        let mut r = Run::new(params());
        r.running();
        r.ev(Event::Restart(alice()));
        r.ev(Event::Stop(Cause::Shutdown));
        r.expect(
            exited(0, true),
            &[Effect::CancelTimer],
            AppState::Stopped,
            "stopped (daemon shutting down)",
        );
    }

    #[test]
    fn stop_while_spawning_signals_once_spawned() {
        let mut r = Run::new(with(|p| p.stop_signal = Signal(SIGINT)));
        r.ev(Event::Start(Cause::Autostart));
        r.expect(
            Event::Stop(alice()),
            &[timer(30, 1)],
            AppState::Stopping,
            "stopping (requested by alice)",
        );
        // The cgroup may look empty before the spawned process joins it.
        assert_eq!(r.ev(Event::CgroupEmpty), []);
        r.expect(
            Event::Spawned { pid: 77 },
            &[Effect::Signal(Signal(SIGINT))],
            AppState::Stopping,
            "stopping (requested by alice)",
        );
        r.expect(
            exited(0, true),
            &[Effect::CancelTimer],
            AppState::Stopped,
            "stopped by alice",
        );

        let mut r = Run::new(params());
        r.ev(Event::Start(Cause::Autostart));
        r.ev(Event::Restart(alice()));
        r.expect(
            Event::SpawnFailed {
                reason: ENOENT.to_owned(),
            },
            &[Effect::CancelTimer, Effect::Spawn],
            AppState::Starting,
            "starting (requested by alice)",
        );
        assert_eq!((r.m.failures, r.m.restarts), (0, 1));
    }

    #[test]
    fn readiness_none_runs_after_start_secs() {
        let mut r = Run::new(with(|p| p.ready_after_start_secs = true));
        r.ev(Event::Start(Cause::Autostart));
        r.expect(
            Event::Spawned { pid: 1 },
            &[Effect::ProbeReadiness, timer(1, 1)],
            AppState::Starting,
            "starting, up for less than 1s",
        );
        r.wait(s(1))
            .expect_fire(&[Effect::CancelProbe], AppState::Running, "up for 1s");

        let mut r = Run::new(with(|p| {
            p.ready_after_start_secs = true;
            p.restart.start_secs = Duration::ZERO;
        }));
        r.ev(Event::Start(Cause::Autostart));
        r.expect(
            Event::Spawned { pid: 1 },
            &[],
            AppState::Running,
            "started, no readiness check",
        );
        // start_secs 0: no exit is a failed start.
        r.expect(
            exited(1, true),
            &[Effect::Spawn],
            AppState::Starting,
            "exited with status 1 after 0.0s, restarting",
        );
    }

    #[test]
    fn spawn_failure_with_policy_never_exits() {
        let mut r = Run::new(with(|p| p.restart.policy = RestartPolicy::Never));
        r.ev(Event::Start(Cause::Autostart));
        r.expect(
            Event::SpawnFailed {
                reason: ENOENT.to_owned(),
            },
            &[],
            AppState::Exited,
            &format!("{ENOENT}, restart policy is never"),
        );
    }

    #[test]
    fn durations_read_as_seconds() {
        let cases = [
            (s(60), "60s"),
            (s(0), "0s"),
            (Duration::from_millis(500), "0.5s"),
            (Duration::from_millis(1250), "1.25s"),
            (Duration::from_millis(1), "0.001s"),
        ];
        for (d, text) in cases {
            assert_eq!(secs(d), text);
        }
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

    /// A plausible next event: mostly what the shell would send now, some
    /// requests, and some noise (stale timers, events in the wrong state).
    fn random_event(rng: &mut Rng, m: &Machine) -> Event {
        let cause = rng.pick(&[alice(), Cause::Config, Cause::Autostart, Cause::Shutdown]);
        let status = rng.pick(&[
            ExitStatus::Code(0),
            ExitStatus::Code(1),
            ExitStatus::Signal(9),
        ]);
        let mut choices = vec![
            Event::Start(cause.clone()),
            Event::Stop(cause.clone()),
            Event::Restart(cause),
            Event::TimerFired {
                generation: m.timer_generation.saturating_sub(1),
            },
            rng.pick(&[Event::Ready, Event::CgroupEmpty, Event::Spawned { pid: 9 }]),
        ];
        if m.previous.is_some() {
            choices.push(Event::PreviousExited);
        }
        let likely = if m.spawn_pending {
            vec![
                Event::Spawned { pid: 10 },
                Event::Spawned { pid: 10 },
                Event::SpawnFailed {
                    reason: ENOENT.to_owned(),
                },
            ]
        } else if m.pid.is_some() {
            vec![
                Event::Ready,
                Event::MainExited {
                    status,
                    cgroup_empty: rng.below(2) == 0,
                },
            ]
        } else if m.state == AppState::Stopping {
            vec![Event::CgroupEmpty]
        } else {
            vec![]
        };
        for _ in 0..2 {
            choices.extend(likely.iter().cloned());
        }
        if m.timer_armed {
            let fire = Event::TimerFired {
                generation: m.timer_generation,
            };
            choices.extend([fire.clone(), fire]);
        }
        rng.pick(&choices)
    }

    fn effect_rank(effect: &Effect) -> u8 {
        match effect {
            Effect::Restore => 0,
            Effect::CancelTimer | Effect::CancelProbe => 0,
            Effect::Retire | Effect::StopPrevious => 1,
            Effect::Signal(_) | Effect::SignalAll(_) | Effect::KillAll => 1,
            Effect::Spawn | Effect::ProbeReadiness => 2,
            Effect::SetTimer { .. } => 3,
        }
    }

    /// What must hold after every step, whatever led there.
    fn check_step(m: &Machine, event: &Event, next: &Machine, effects: &[Effect], now: Instant) {
        let what = format!("{:?} --{event:?}--> {:?} {effects:?}", m.state, next.state);
        assert!(!next.reason.is_empty(), "{what}: empty reason");
        if next == m {
            assert_eq!(effects, [], "{what}: effects without a change");
        }
        let since = if next.state != m.state { now } else { m.since };
        assert_eq!(next.since, since, "{what}: since");
        assert!(
            effects
                .windows(2)
                .all(|w| effect_rank(&w[0]) <= effect_rank(&w[1])),
            "{what}: effects out of order"
        );
        for effect in effects {
            if let Effect::SetTimer { generation, .. } = effect {
                assert_eq!(*generation, m.timer_generation + 1, "{what}");
                assert_eq!(*generation, next.timer_generation, "{what}");
            }
        }
        let spawns = effects.iter().filter(|e| **e == Effect::Spawn).count();
        assert!(spawns <= 1, "{what}: more than one spawn");
        if spawns == 1 {
            assert!(
                next.state == AppState::Starting && next.spawn_pending && next.pid.is_none(),
                "{what}"
            );
        }
        if next.spawn_pending && !m.spawn_pending {
            assert_eq!(spawns, 1, "{what}: spawn pending without a spawn");
        }
        match next.state {
            AppState::Starting => {
                assert_eq!(next.pid.is_some(), !next.spawn_pending, "{what}");
                assert_eq!(next.pid.is_some(), next.started_at.is_some(), "{what}");
            }
            AppState::Running => {
                assert!(
                    next.pid.is_some() && !next.spawn_pending && !next.timer_armed,
                    "{what}"
                )
            }
            AppState::Backoff => assert!(next.pid.is_none() && next.timer_armed, "{what}"),
            AppState::Stopped | AppState::Exited | AppState::Fatal => {
                assert!(
                    next.pid.is_none() && !next.spawn_pending && !next.timer_armed,
                    "{what}"
                )
            }
            AppState::Stopping | AppState::Invalid => {}
        }
        if next.state != AppState::Stopping {
            assert_eq!(next.then, AfterStop::Stay, "{what}");
        }
    }

    #[test]
    fn every_step_stays_in_the_table_and_every_row_is_reached() {
        let mut rng = Rng(0x5eed_0a99_7150_4242);
        let mut reached = HashSet::new();
        for walk in 0..3000 {
            let params = with(|p| {
                p.restart.policy = rng.pick(&[
                    RestartPolicy::Always,
                    RestartPolicy::OnFailure,
                    RestartPolicy::Never,
                ]);
                p.restart.start_secs = rng.pick(&[Duration::ZERO, s(1), s(5)]);
                p.restart.max_retries = rng.pick(&[0, 1, 2, 3]);
                p.ready_after_start_secs = rng.below(3) == 0;
                p.restart.strategy =
                    rng.pick(&[RestartStrategy::StopStart, RestartStrategy::StartStop]);
            });
            let mut r = Run::new(params);
            if walk % 50 == 0 {
                r.m.state = AppState::Invalid;
                r.m.reason = "invalid configuration".to_owned();
            }
            for _ in 0..40 {
                r.wait(rng.pick(&[Duration::ZERO, Duration::from_millis(300), s(2), s(10)]));
                let event = random_event(&mut rng, &r.m);
                let (next, effects) = step(&r.m, event.clone(), r.now);
                check_step(&r.m, &event, &next, &effects, r.now);
                if next != r.m {
                    let row = (r.m.state, event.kind(), next.state);
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
}
