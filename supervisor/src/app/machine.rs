//! [`step`]: the whole behaviour of one app, as a function of (machine,
//! event, now). It owns the restart, backoff, readiness and reload
//! decisions and the outcome of every request; it must never do I/O, read
//! the clock or log (the shell does all three).
//!
//! An app has at most one *current* instance (spawning, starting, running
//! or stopping), during a start-stop restart a *previous* instance that
//! serves until the current one is ready, and *retired* instances being
//! stopped. The [`Phase`] carries the current and previous instances, the
//! backoff timer, the reload under way and what a stop leads to, each only
//! in the phases where it can exist. Every event about an instance names it; an event about an
//! instance the machine no longer knows is ignored.
//!
//! What each event does, in order:
//!
//! 1. **Start** from stopped, exited, fatal or backoff: reset the failure
//!    count, cancel the backoff timer, spawn a new instance, enter
//!    starting. Every spawn after the first counts in `restarts`. From
//!    stopping: reset the failure count and start once the app is gone.
//!    From starting: reset the failure count. From running: answer done.
//! 2. **Stop** from starting or running: cancel the readiness probe, send
//!    the instance's own stop signal to its main process (if it exists
//!    yet), arm its stop timer, enter stopping and stay stopped once the app
//!    is gone. From backoff: cancel the timer, enter stopped. From stopped,
//!    exited or fatal: enter stopped, naming the new cause. From stopping:
//!    stay stopped once the app is gone. Entering stopped closes the app's
//!    held sockets (a restart, a reload and a start-stop restart never
//!    enter stopped, so they keep them).
//! 3. **Restart** from starting or running: as stop, but reset the failure
//!    count and start once the app is gone. With `strategy = "start-stop"`
//!    from running: keep the running instance serving as the *previous*
//!    one and spawn a new one beside it; once the new one is running, stop
//!    the previous one (its own stop signal and timeout); if the new one
//!    fails in any way, the previous one, which never stopped serving, is
//!    the current one again (running, "restart failed: …"), the restart's
//!    caller is told it failed, and no failed start is counted. From every
//!    other state: as start.
//! 4. **Reload** from running: send the reload signal (the shell notes the
//!    instance's other processes first), arm the readiness timeout; once
//!    those processes are gone (`WorkersReplaced`) probe the instance, or
//!    without a probe answer done; the probe passing answers done. The main
//!    process exiting, a stop or restart, or the timeout answer failed.
//!    From any other state: refused.
//! 5. **Replace** (the app's file changed): adopt the new settings. If
//!    the change needs a new process (`config::change`), restart an app
//!    that is up (starting, running, backoff), and instances keep the stop
//!    settings they were spawned with; otherwise the current and previous
//!    instances adopt the new stop settings and the state stays. An app
//!    that is not up starts when the change says so (`autostart`).
//! 6. **Spawned** in starting: record the pid and start time, start the
//!    readiness probe (if ready needs it) and arm the readiness timer, or,
//!    for readiness none, a `start_secs` timer (with `start_secs` zero:
//!    enter running at once). In stopping (stopped while spawning): record
//!    the pid and send the stop signal.
//! 7. **SpawnFailed** in starting: a failed start with the spawn's reason.
//!    In stopping: finish the stop.
//! 8. **Ready** in starting, once spawned: note which half arrived
//!    (`READY=1` or the probe); once every half the app needs is in, cancel
//!    the timer and the probe and enter running. During a reload, the
//!    probe passing finishes it.
//! 9. **TimerFired** with a stale generation: nothing. The backoff timer:
//!    spawn, enter starting. The current instance's timer: in starting with
//!    readiness none, enter running; in starting otherwise (readiness
//!    timeout), kill every process, enter stopping and apply the
//!    failed-start rule once the app is gone; in running, the reload
//!    failed; in stopping (stop timeout), kill every process. A retired
//!    instance's timer: kill every process of it.
//! 10. **MainExited** of the current instance in starting or running:
//!     cancel the probe and timer; if other processes of it are left, kill
//!     them all, enter stopping, and decide on the exit once they are gone;
//!     otherwise decide now. In stopping: if its cgroup is empty, finish the
//!     stop; otherwise send its stop signal to every process left. Of the
//!     previous instance (it died while its successor starts): kill what it
//!     left; nothing is left to fall back on. Of a retired instance: as in
//!     stopping.
//! 11. **CgroupEmpty** of the current instance in stopping, once its main
//!     process has exited: finish the stop. Of a retired instance whose main
//!     process exited: it is gone.
//!
//! Finishing a stop forgets the instance, then by the stopping phase's
//! `then` ([`AfterStop`]): stops a previous instance and, once no instance
//! is left, enters stopped; or spawns again; or applies the failed-start
//! rule; or decides on the exit.
//!
//! The exit decision: the exit is a failed start if the app was still
//! starting, lived less than `restart.start_secs`, or crashed (a status
//! other than 0, or a signal) within `max(start_secs, 10s)` of becoming
//! ready ([`counts_as_failed_start`]). With policy never: exited. With
//! policy on-failure and status 0: exited. Otherwise a failed start goes
//! through the failed-start rule, and any other exit (a crash of an
//! instance that was ready long enough, or a clean exit) resets the
//! failure count and spawns again at once: backoff applies only to failed
//! starts.
//!
//! The failed-start rule: count the failure. With policy never: exited.
//! With `max_retries` > 0 reached: fatal until someone starts the app.
//! Otherwise: arm the backoff timer ([`backoff_delay`], shortened by up to a
//! quarter by the machine's jitter generator, [`jittered`]) and enter
//! backoff.
//!
//! Waiting callers are answered as soon as their outcome is known: a start
//! or restart when a new instance is running (done) or the attempt ended
//! without one (failed, with the reason); a stop once nothing of the app is
//! left; a reload as above. A stop overtakes a waiting start, and a start a
//! waiting stop: the overtaken caller is told it failed.
//!
//! Every state change sets `since`; every state has a reason a person can
//! act on. Effects come in a fixed order: cancellations and forgetting,
//! then signals and kills, then spawns and probes, then timers, then
//! answers.

use std::mem;
use std::time::{Duration, Instant};

use super::reason::{exit_reason, failed_starts, opt_phrase, phrase, secs, stopped_reason};
use super::transitions::is_allowed;
use super::{
    backoff_delay, counts_as_failed_start, jittered, AfterStop, Answer, AppState, Cause, Effect,
    Event, Exit, ExitStatus, Instance, InstanceId, Machine, Main, Params, Phase, ReadySignal,
    ReloadPhase, Request, RunningInstance, TimerKey, WaitFor, Waiter,
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
        m: mut next,
        mut effects,
        ..
    } = s;
    let (from, to) = (m.state(), next.state());
    if from != to {
        next.since = now;
        if to == AppState::Stopped {
            // Entering stopped, which only a stop request leads to, closes
            // the app's held sockets: nothing will accept the connections
            // they queue, so clients and load-balancer checks are better
            // refused at once than left waiting in the backlog. The next
            // spawn binds them again.
            effects.push(Effect::CloseSockets);
        }
    }
    effects.sort_by_key(effect_rank);
    debug_assert!(
        (next == *m && effects.is_empty()) || is_allowed(from, kind, to),
        "transition {from:?} --{kind:?}--> {to:?} is not in TRANSITIONS",
    );
    debug_assert!(!next.reason.is_empty(), "state {to:?} has no reason");
    (next, effects)
}

/// The order effects are carried out in: see the module doc.
pub(crate) fn effect_rank(effect: &Effect) -> u8 {
    match effect {
        Effect::CancelTimer(_)
        | Effect::CancelProbe(_)
        | Effect::Forget(_)
        | Effect::CloseSockets => 0,
        Effect::Signal(..) | Effect::SignalAll(..) | Effect::KillAll(_) | Effect::Reload(..) => 1,
        Effect::Spawn(_) | Effect::Probe(_) => 2,
        Effect::SetTimer { .. } => 3,
        Effect::Answer(..) => 4,
    }
}

/// The machine being changed by one event, and the effects so far.
///
/// A helper that takes the phase apart (`mem::take`, which leaves
/// `Phase::Stopped` behind) hands what it took to one that enters the next
/// phase before the step ends; `step` compares the state before and after
/// the whole step only, so what is left behind in between is never read.
struct Step {
    m: Machine,
    effects: Vec<Effect>,
    now: Instant,
}

impl Step {
    fn apply(&mut self, event: Event) {
        match event {
            Event::Start(request) => self.start(request),
            Event::Stop(request) => self.stop(request),
            Event::Restart(request) => self.restart(request),
            Event::Reload(request) => self.reload(request),
            Event::Replace {
                params,
                restart,
                start,
            } => self.replace(params, restart, start),
            Event::Spawned { instance, pid } => self.spawned(instance, pid),
            Event::SpawnFailed { instance, reason } => self.spawn_failed(instance, reason),
            Event::Ready { instance, signal } => self.ready(instance, signal),
            Event::WorkersReplaced { instance } => self.workers_replaced(instance),
            Event::TimerFired { key, generation } => self.timer_fired(key, generation),
            Event::MainExited {
                instance,
                status,
                cgroup_empty,
            } => self.main_exited(instance, status, cgroup_empty),
            Event::CgroupEmpty { instance } => self.cgroup_empty(instance),
        }
    }

    fn state(&self) -> AppState {
        self.m.phase.state()
    }

    fn start(&mut self, request: Request) {
        let Request { cause, waiter } = request;
        match self.state() {
            AppState::Stopped | AppState::Exited | AppState::Fatal | AppState::Backoff => {
                self.cancel_backoff();
                self.m.failures = 0;
                let reason = format!("starting ({})", phrase(&cause));
                self.m.cause = Some(cause);
                self.wait(waiter, WaitFor::Running);
                self.spawn(reason, None);
            }
            AppState::Stopping => {
                if self.m.phase.then() != Some(&AfterStop::Start) {
                    self.answer_all(
                        WaitFor::Stopped,
                        Answer::Failed(format!(
                            "started again ({}) before it stopped",
                            phrase(&cause)
                        )),
                    );
                    self.set_then(AfterStop::Start);
                    self.m.failures = 0;
                    self.m.reason = format!("stopping, then starting ({})", phrase(&cause));
                    self.m.cause = Some(cause);
                }
                self.wait(waiter, WaitFor::Running);
                if self.m.phase == Phase::Retiring {
                    // Only retired instances are left: no need to wait.
                    let reason = format!("starting ({})", opt_phrase(self.m.cause.as_ref()));
                    self.spawn(reason, None);
                }
            }
            // Coming up: nothing to do but honour DESIGN's "a manual start
            // resets the failure count from any state", so a start during
            // a retry attempt cannot still end in fatal.
            AppState::Starting => {
                self.m.failures = 0;
                self.wait(waiter, WaitFor::Running);
            }
            AppState::Running => {
                self.m.failures = 0;
                self.answer(waiter, Answer::Done);
            }
        }
    }

    fn stop(&mut self, request: Request) {
        let Request { cause, waiter } = request;
        match self.state() {
            AppState::Starting | AppState::Running => {
                self.overtaken_by_stop(&cause);
                self.begin_stop(cause, AfterStop::Stay);
                self.wait(waiter, WaitFor::Stopped);
            }
            AppState::Backoff | AppState::Exited | AppState::Fatal
                if !self.m.retired.is_empty() =>
            {
                // A start-stop restart's previous instance is still going:
                // stopped once it is gone.
                self.cancel_backoff();
                self.enter(Phase::Retiring, format!("stopping ({})", phrase(&cause)));
                self.m.cause = Some(cause);
                self.wait(waiter, WaitFor::Stopped);
            }
            AppState::Backoff | AppState::Stopped | AppState::Exited | AppState::Fatal => {
                self.cancel_backoff();
                self.m.cause = Some(cause);
                self.enter_stopped();
                self.answer(waiter, Answer::Done);
            }
            AppState::Stopping => {
                if self.m.phase.then() != Some(&AfterStop::Stay) {
                    self.overtaken_by_stop(&cause);
                    self.set_then(AfterStop::Stay);
                    self.m.reason = format!("stopping ({})", phrase(&cause));
                    self.m.cause = Some(cause);
                }
                self.wait(waiter, WaitFor::Stopped);
            }
        }
    }

    /// A stop came before a start or reload finished: their callers are
    /// told.
    fn overtaken_by_stop(&mut self, cause: &Cause) {
        let why = format!("stopped ({}) before it was ready", phrase(cause));
        self.answer_all(WaitFor::Running, Answer::Failed(why));
        self.answer_all(
            WaitFor::Reloaded,
            Answer::Failed(format!("stopped ({}) during the reload", phrase(cause))),
        );
    }

    fn restart(&mut self, request: Request) {
        let start_stop = self.m.params.restart.strategy == RestartStrategy::StartStop;
        match self.state() {
            AppState::Running if start_stop => {
                // The running instance keeps serving until the new one is
                // ready; if the new one fails, it simply goes on.
                let Request { cause, waiter } = request;
                self.end_reload(Answer::Failed(format!(
                    "restarted ({}) during the reload",
                    phrase(&cause)
                )));
                let Phase::Running { current, .. } = mem::take(&mut self.m.phase) else {
                    unreachable!("matched running above");
                };
                self.m.failures = 0;
                let reason = format!(
                    "starting a new instance beside pid {} ({})",
                    current.pid,
                    phrase(&cause)
                );
                self.m.cause = Some(cause);
                self.wait(waiter, WaitFor::Running);
                self.spawn(reason, Some(current));
            }
            AppState::Starting | AppState::Running => {
                let Request { cause, waiter } = request;
                self.end_reload(Answer::Failed(format!(
                    "restarted ({}) during the reload",
                    phrase(&cause)
                )));
                self.begin_stop(cause, AfterStop::Start);
                self.wait(waiter, WaitFor::Running);
            }
            _ => self.start(request),
        }
    }

    fn reload(&mut self, request: Request) {
        let Request { cause, waiter } = request;
        let signal = self.m.params.reload_signal;
        let timeout = self.m.params.readiness_timeout;
        let id = match &self.m.phase {
            Phase::Running { current, .. } => current.id,
            _ => {
                let why = format!("it is {}: {}", state_name(self.state()), self.m.reason);
                self.answer(waiter, Answer::Refused(why));
                return;
            }
        };
        self.wait(waiter, WaitFor::Reloaded);
        let Phase::Running { reload, .. } = &mut self.m.phase else {
            unreachable!("matched above");
        };
        if reload.is_some() {
            // One under way: this caller waits for it too.
            return;
        }
        *reload = Some(ReloadPhase::Replacing);
        self.effects.push(Effect::Reload(id, signal));
        self.set_instance_timer(timeout);
        self.m.reason = format!("reloading ({})", phrase(&cause));
    }

    fn workers_replaced(&mut self, id: InstanceId) {
        let has_probe = self.m.params.has_probe;
        let Phase::Running { current, reload } = &mut self.m.phase else {
            return;
        };
        if current.id != id || *reload != Some(ReloadPhase::Replacing) {
            return;
        }
        if has_probe {
            *reload = Some(ReloadPhase::Probing);
            current.probing = true;
            self.effects.push(Effect::Probe(id));
        } else {
            self.end_reload(Answer::Done);
        }
    }

    /// Ends a reload under way with `answer` for its callers.
    fn end_reload(&mut self, answer: Answer) {
        let Phase::Running { current, reload } = &mut self.m.phase else {
            return;
        };
        if reload.take().is_none() {
            return;
        }
        let id = current.id;
        if current.probing {
            current.probing = false;
            self.effects.push(Effect::CancelProbe(id));
        }
        if current.timer.take().is_some() {
            self.effects
                .push(Effect::CancelTimer(TimerKey::Instance(id)));
        }
        self.m.reason = match &answer {
            Answer::Done => "ready, reloaded".to_owned(),
            Answer::Failed(why) | Answer::Refused(why) => {
                format!("running, but the last reload failed: {why}")
            }
        };
        self.answer_all(WaitFor::Reloaded, answer);
    }

    fn replace(&mut self, params: Params, restart: bool, start: bool) {
        let up = matches!(
            self.state(),
            AppState::Starting | AppState::Running | AppState::Backoff
        );
        if !restart {
            // The same processes carry on under the new settings: they
            // stop the new way too.
            if let Some(current) = self.m.phase.tracking() {
                *current.stop = params.stop;
            }
            if let Phase::Starting {
                previous: Some(previous),
                ..
            }
            | Phase::Stopping {
                previous: Some(previous),
                ..
            } = &mut self.m.phase
            {
                previous.stop = params.stop;
            }
        }
        self.m.params = params;
        if (up && restart) || (!up && start) {
            self.restart(Cause::Config.into());
        }
    }

    /// Starting or running -> stopping: ask the current instance to stop
    /// and give it its stop timeout before everything is killed.
    fn begin_stop(&mut self, cause: Cause, then: AfterStop) {
        self.stop_previous();
        let mut current = match mem::take(&mut self.m.phase) {
            Phase::Starting { current, .. } => current,
            // A reload under way ends with the running phase.
            Phase::Running { current, .. } => current.instance(),
            _ => unreachable!("begin_stop is for starting or running"),
        };
        let id = current.id;
        let stop = current.stop;
        if current.probing {
            current.probing = false;
            self.effects.push(Effect::CancelProbe(id));
        }
        if current.pid().is_some() {
            self.effects.push(Effect::Signal(id, stop.signal));
        }
        if then == AfterStop::Start {
            // A restart is a manual start: it resets the failure count.
            self.m.failures = 0;
        }
        let reason = match then {
            AfterStop::Start => format!("stopping, then starting ({})", phrase(&cause)),
            _ => format!("stopping ({})", phrase(&cause)),
        };
        self.m.cause = Some(cause);
        self.enter(
            Phase::Stopping {
                current,
                previous: None,
                then: Box::new(then),
            },
            reason,
        );
        self.set_instance_timer(stop.timeout);
    }

    fn spawned(&mut self, id: InstanceId, pid: u32) {
        let now = self.now;
        let Some(instance) = self.pending_mut(id) else {
            return;
        };
        if instance.main != Main::Spawning {
            return;
        }
        instance.main = Main::Running { pid, since: now };
        let stop_signal = instance.stop.signal;
        match self.state() {
            AppState::Starting => {
                let params = &self.m.params;
                let start_secs = params.restart.start_secs;
                if params.ready_after_start_secs && start_secs.is_zero() {
                    self.enter_running("started, no readiness check".to_owned());
                } else if params.ready_after_start_secs {
                    self.set_instance_timer(start_secs);
                    self.m.reason = format!("starting, up for less than {}", secs(start_secs));
                } else {
                    let timeout = params.readiness_timeout;
                    if params.needs_probe {
                        let instance = self.m.phase.pending_mut().expect("matched above");
                        instance.probing = true;
                        self.effects.push(Effect::Probe(id));
                    }
                    self.set_instance_timer(timeout);
                    self.m.reason =
                        format!("starting, waiting to be ready (timeout {})", secs(timeout));
                }
            }
            // Stopped while the spawn was under way: the process now
            // exists, so it gets the stop signal the stop could not send.
            _ => self.effects.push(Effect::Signal(id, stop_signal)),
        }
    }

    fn spawn_failed(&mut self, id: InstanceId, reason: String) {
        let Some(instance) = self.pending_mut(id) else {
            return;
        };
        if instance.main != Main::Spawning {
            return;
        }
        instance.main = Main::Exited;
        match self.state() {
            AppState::Starting => {
                let previous = self.forget_current();
                self.failed_start(reason, previous);
            }
            _ => self.finish_stop(),
        }
    }

    fn ready(&mut self, id: InstanceId, signal: ReadySignal) {
        let params = &self.m.params;
        let (needs_notify, needs_probe) = (params.needs_notify, params.needs_probe);
        let after_start_secs = params.ready_after_start_secs;
        let ready = match &mut self.m.phase {
            Phase::Starting { current, .. }
                if current.id == id && current.pid().is_some() && !after_start_secs =>
            {
                match signal {
                    ReadySignal::Notify if needs_notify && !current.notified => {
                        current.notified = true;
                    }
                    ReadySignal::Probe if needs_probe && !current.probed => {
                        current.probed = true;
                        current.probing = false;
                    }
                    _ => return,
                }
                (!needs_notify || current.notified) && (!needs_probe || current.probed)
            }
            Phase::Running {
                current,
                reload: Some(ReloadPhase::Probing),
            } if current.id == id && signal == ReadySignal::Probe => {
                current.probing = false;
                self.end_reload(Answer::Done);
                return;
            }
            _ => return,
        };
        if ready {
            self.cancel_instance_timer();
            self.cancel_probe();
            self.enter_running("ready".to_owned());
        } else if signal == ReadySignal::Notify {
            self.m.reason = "starting, sent READY=1, waiting for the probe".to_owned();
        }
    }

    /// Starting -> running; a start-stop restart's previous instance is
    /// stopped now that its successor serves.
    fn enter_running(&mut self, reason: String) {
        let Phase::Starting { current, previous } = mem::take(&mut self.m.phase) else {
            unreachable!("only a starting instance becomes ready");
        };
        let Main::Running { pid, since } = current.main else {
            unreachable!("only a spawned instance becomes ready");
        };
        let current = RunningInstance {
            id: current.id,
            pid,
            spawned: since,
            ready_at: self.now,
            stop: current.stop,
            notified: current.notified,
            probed: current.probed,
            probing: current.probing,
            timer: current.timer,
        };
        if let Some(previous) = previous {
            self.retire(*previous);
        }
        self.enter(
            Phase::Running {
                current,
                reload: None,
            },
            reason,
        );
        self.answer_all(WaitFor::Running, Answer::Done);
    }

    fn timer_fired(&mut self, key: TimerKey, generation: u64) {
        match key {
            TimerKey::Backoff => {
                if self.m.phase.backoff_timer() == Some(generation) {
                    let reason = format!("retrying after {}", failed_starts(self.m.failures));
                    self.spawn(reason, None);
                }
            }
            TimerKey::Instance(id) => {
                if self
                    .m
                    .current()
                    .is_some_and(|i| i.id == id && i.timer == Some(generation))
                {
                    self.current_timer_fired();
                } else if let Some(retired) = self
                    .m
                    .retired
                    .iter_mut()
                    .find(|i| i.id == id && i.timer == Some(generation))
                {
                    // A retired instance outlived its stop timeout.
                    retired.timer = None;
                    self.effects.push(Effect::KillAll(id));
                }
            }
        }
    }

    fn current_timer_fired(&mut self) {
        let instance = self.m.phase.tracking().expect("checked by the caller");
        *instance.timer = None;
        let id = instance.id;
        let stop_timeout = instance.stop.timeout;
        match self.state() {
            AppState::Starting if self.m.params.ready_after_start_secs => {
                let reason = format!("up for {}", secs(self.m.params.restart.start_secs));
                self.enter_running(reason);
            }
            AppState::Starting => {
                let reason = format!(
                    "not ready after {} (readiness timeout)",
                    secs(self.m.params.readiness_timeout)
                );
                self.cancel_probe();
                self.effects.push(Effect::KillAll(id));
                let (current, previous) = self.take_starting();
                self.enter(
                    Phase::Stopping {
                        current,
                        previous,
                        then: Box::new(AfterStop::FailStart(reason.clone())),
                    },
                    format!("{reason}, killing every process"),
                );
            }
            AppState::Running => {
                let why = format!(
                    "not serving again within {} of the reload signal",
                    secs(self.m.params.readiness_timeout)
                );
                self.end_reload(Answer::Failed(why));
            }
            AppState::Stopping => {
                self.effects.push(Effect::KillAll(id));
                self.m.reason = format!(
                    "stop timed out after {}, killing every process",
                    secs(stop_timeout)
                );
            }
            // No instance timer is armed in these states.
            AppState::Stopped | AppState::Backoff | AppState::Exited | AppState::Fatal => {}
        }
    }

    fn main_exited(&mut self, id: InstanceId, status: ExitStatus, cgroup_empty: bool) {
        if self
            .m
            .current()
            .is_some_and(|i| i.id == id && i.pid().is_some())
        {
            self.current_exited(status, cgroup_empty);
        } else if self.m.phase.previous().is_some_and(|p| p.id == id) {
            // It died while its successor starts: nothing is left to fall
            // back on; kill whatever it left behind.
            let mut previous = self.m.phase.take_previous().expect("matched").instance();
            previous.main = Main::Exited;
            if cgroup_empty {
                self.effects.push(Effect::Forget(id));
            } else {
                self.effects.push(Effect::KillAll(id));
                self.m.retired.push(previous);
            }
        } else if let Some(i) = self.m.retired.iter().position(|r| r.id == id) {
            let retired = &mut self.m.retired[i];
            if retired.main == Main::Exited {
                return;
            }
            retired.main = Main::Exited;
            if cgroup_empty {
                self.forget_retired(i);
            } else {
                let signal = retired.stop.signal;
                self.effects.push(Effect::SignalAll(id, signal));
            }
        }
    }

    fn current_exited(&mut self, status: ExitStatus, cgroup_empty: bool) {
        let uptime = self.uptime();
        let now = self.now;
        let state = self.state();
        let instance = self.m.current().expect("checked by the caller");
        let id = instance.id;
        let ready_for = instance
            .ready_at
            .filter(|_| state == AppState::Running)
            .map(|at| now.saturating_duration_since(at));
        match state {
            AppState::Starting | AppState::Running => {
                let exit = Exit {
                    status,
                    uptime,
                    failed_start: counts_as_failed_start(
                        &self.m.params.restart,
                        status,
                        uptime,
                        ready_for,
                    ),
                };
                self.end_reload(Answer::Failed(exit_reason(&exit)));
                self.cancel_probe();
                self.cancel_instance_timer();
                if cgroup_empty {
                    let previous = self.forget_current();
                    self.decide(exit, previous);
                } else {
                    self.effects.push(Effect::KillAll(id));
                    let reason = format!("{}, killing leftover processes", exit_reason(&exit));
                    let (mut current, previous) = self.take_starting();
                    current.main = Main::Exited;
                    self.enter(
                        Phase::Stopping {
                            current,
                            previous,
                            then: Box::new(AfterStop::Decide(exit)),
                        },
                        reason,
                    );
                }
            }
            AppState::Stopping => {
                if let Some(current) = self.m.phase.pending_mut() {
                    current.main = Main::Exited;
                }
                if cgroup_empty {
                    self.finish_stop();
                } else {
                    // The main process is gone but not its children (a
                    // gunicorn arbiter killed before its workers): ask them
                    // too. The stop timer is still armed for the SIGKILL.
                    let signal = instance.stop.signal;
                    self.effects.push(Effect::SignalAll(id, signal));
                }
            }
            _ => {}
        }
    }

    fn cgroup_empty(&mut self, id: InstanceId) {
        let current_gone = self.state() == AppState::Stopping
            && self.pending_mut(id).is_some_and(|i| i.main == Main::Exited);
        if current_gone {
            self.finish_stop();
        } else if let Some(i) = self
            .m
            .retired
            .iter()
            .position(|r| r.id == id && r.main == Main::Exited)
        {
            self.forget_retired(i);
        }
    }

    /// Retired instance `i` is gone. A stop that waited for it is done.
    fn forget_retired(&mut self, i: usize) {
        let retired = self.m.retired.remove(i);
        self.effects.push(Effect::Forget(retired.id));
        if self.m.phase == Phase::Retiring && self.m.retired.is_empty() {
            self.enter_stopped();
            self.answer_all(WaitFor::Stopped, Answer::Done);
        }
    }

    /// Stopping -> wherever `then` leads, once the current instance is gone.
    fn finish_stop(&mut self) {
        let Phase::Stopping {
            current,
            previous,
            then,
        } = mem::take(&mut self.m.phase)
        else {
            unreachable!("finish_stop is for stopping");
        };
        self.effects.push(Effect::Forget(current.id));
        let previous = previous.map(|previous| *previous);
        match *then {
            AfterStop::Stay => {
                // Someone asked for a stop: a start-stop restart's previous
                // instance goes too, and the app is stopped once nothing of
                // it is left.
                if let Some(previous) = previous {
                    self.retire(previous);
                }
                if self.m.retired.is_empty() {
                    self.enter_stopped();
                    self.answer_all(WaitFor::Stopped, Answer::Done);
                } else {
                    let reason = mem::take(&mut self.m.reason);
                    self.enter(Phase::Retiring, reason);
                }
            }
            AfterStop::Start => {
                if let Some(previous) = previous {
                    self.retire(previous);
                }
                let reason = format!("starting ({})", opt_phrase(self.m.cause.as_ref()));
                self.spawn(reason, None);
            }
            AfterStop::FailStart(reason) => self.failed_start(reason, previous),
            AfterStop::Decide(exit) => self.decide(exit, previous),
        }
    }

    /// What an exit of the main process leads to, once no process is left.
    /// `previous`: a start-stop restart's previous instance, to fall back
    /// on.
    fn decide(&mut self, exit: Exit, previous: Option<RunningInstance>) {
        let base = exit_reason(&exit);
        if self.restore_previous(previous, &base) {
            return;
        }
        match self.m.params.restart.policy {
            RestartPolicy::Never => {
                let reason = format!("{base}, restart policy is never");
                self.answer_all(WaitFor::Running, Answer::Failed(reason.clone()));
                self.enter(Phase::Exited, reason);
            }
            RestartPolicy::OnFailure if exit.status == ExitStatus::Code(0) => {
                self.answer_all(WaitFor::Running, Answer::Failed(base.clone()));
                self.enter(Phase::Exited, base);
            }
            _ if exit.failed_start.is_some() => self.failed_start(base, None),
            _ => {
                self.m.failures = 0;
                self.spawn(format!("{base}, restarting"), None);
            }
        }
    }

    /// A start failed for `reason`: back off, give up, or (policy never)
    /// stay exited. `previous` as in [`Step::decide`].
    fn failed_start(&mut self, reason: String, previous: Option<RunningInstance>) {
        if self.restore_previous(previous, &reason) {
            return;
        }
        self.m.failures = self.m.failures.saturating_add(1);
        let restart = &self.m.params.restart;
        let in_a_row = failed_starts(self.m.failures);
        let (phase, reason) = if restart.policy == RestartPolicy::Never {
            (Phase::Exited, format!("{reason}, restart policy is never"))
        } else if restart.max_retries > 0 && self.m.failures >= restart.max_retries {
            (
                Phase::Fatal,
                format!("{reason}, {in_a_row}, giving up (appctl start resets)"),
            )
        } else {
            let delay = jittered(
                backoff_delay(
                    self.m.failures,
                    restart.backoff_initial,
                    restart.backoff_max,
                ),
                &mut self.m.rng,
            );
            let generation = self.next_generation();
            self.effects.push(Effect::SetTimer {
                key: TimerKey::Backoff,
                after: delay,
                generation,
            });
            (
                Phase::Backoff { timer: generation },
                format!("{reason}, {in_a_row}, next try in {}", secs(delay)),
            )
        };
        self.answer_all(WaitFor::Running, Answer::Failed(reason.clone()));
        self.enter(phase, reason);
    }

    /// A start-stop restart's new instance failed for `reason`: the
    /// previous instance, still serving, becomes the current one again.
    /// Not a failed start of the app: nothing stopped serving.
    fn restore_previous(&mut self, previous: Option<RunningInstance>, reason: &str) -> bool {
        let Some(previous) = previous else {
            return false;
        };
        let reason = format!(
            "restart failed: {reason}; the previous instance (pid {}) keeps running",
            previous.pid
        );
        self.answer_all(WaitFor::Running, Answer::Failed(reason.clone()));
        self.enter(
            Phase::Running {
                current: previous,
                reload: None,
            },
            reason,
        );
        true
    }

    /// Spawns a new current instance and enters starting, beside
    /// `previous` (a start-stop restart's); the process exists once
    /// `Spawned` comes back.
    fn spawn(&mut self, reason: String, previous: Option<RunningInstance>) {
        if self.m.last_instance > 0 {
            self.m.restarts = self.m.restarts.saturating_add(1);
        }
        self.m.last_instance += 1;
        let id = InstanceId(self.m.last_instance);
        let current = Instance {
            id,
            main: Main::Spawning,
            stop: self.m.params.stop,
            notified: false,
            probed: false,
            probing: false,
            ready_at: None,
            timer: None,
        };
        self.effects.push(Effect::Spawn(id));
        let previous = previous.map(Box::new);
        self.enter(Phase::Starting { current, previous }, reason);
    }

    /// Stops a start-stop restart's previous instance, if there is one.
    fn stop_previous(&mut self) {
        if let Some(previous) = self.m.phase.take_previous() {
            self.retire(previous);
        }
    }

    /// Sends the previous instance of a start-stop restart its own stop
    /// signal and arms its own stop timeout: it becomes a retired instance.
    fn retire(&mut self, mut previous: RunningInstance) {
        let id = previous.id;
        if previous.probing {
            previous.probing = false;
            self.effects.push(Effect::CancelProbe(id));
        }
        self.effects.push(Effect::Signal(id, previous.stop.signal));
        let generation = self.next_generation();
        previous.timer = Some(generation);
        self.effects.push(Effect::SetTimer {
            key: TimerKey::Instance(id),
            after: previous.stop.timeout,
            generation,
        });
        self.m.retired.push(previous.instance());
    }

    /// Takes the current instance and the previous one out of a starting
    /// (or running) phase, to enter the next phase with.
    fn take_starting(&mut self) -> (Instance, Option<Box<RunningInstance>>) {
        match mem::take(&mut self.m.phase) {
            Phase::Starting { current, previous } => (current, previous),
            Phase::Running { current, .. } => (current.instance(), None),
            _ => unreachable!("only starting and running have a current instance to take"),
        }
    }

    /// Drops the current instance of a starting or running app, which has
    /// no process left; what comes next is decided with the previous
    /// instance it returns.
    fn forget_current(&mut self) -> Option<RunningInstance> {
        let (current, previous) = self.take_starting();
        self.effects.push(Effect::Forget(current.id));
        previous.map(|previous| *previous)
    }

    /// The current instance `id` of a starting or stopping app (a running
    /// app's main process neither spawns nor has exited).
    fn pending_mut(&mut self, id: InstanceId) -> Option<&mut Instance> {
        self.m.phase.pending_mut().filter(|i| i.id == id)
    }

    /// The new `then` of a stopping app.
    fn set_then(&mut self, next: AfterStop) {
        if let Phase::Stopping { then, .. } = &mut self.m.phase {
            **then = next;
        }
    }

    /// Enters stopped, which only a stop request leads to (`step` closes
    /// the app's held sockets on the way in).
    fn enter_stopped(&mut self) {
        self.enter(Phase::Stopped, stopped_reason(self.m.cause.as_ref()));
    }

    /// Enters `phase`; `step` sets `since` if the state changed.
    fn enter(&mut self, phase: Phase, reason: String) {
        self.m.phase = phase;
        self.m.reason = reason;
    }

    fn next_generation(&mut self) -> u64 {
        self.m.timer_generation += 1;
        self.m.timer_generation
    }

    /// Arms the current instance's timer.
    fn set_instance_timer(&mut self, after: Duration) {
        let generation = self.next_generation();
        let instance = self.m.phase.tracking().expect("a current instance");
        *instance.timer = Some(generation);
        self.effects.push(Effect::SetTimer {
            key: TimerKey::Instance(instance.id),
            after,
            generation,
        });
    }

    fn cancel_instance_timer(&mut self) {
        if let Some(instance) = self.m.phase.tracking() {
            if instance.timer.take().is_some() {
                self.effects
                    .push(Effect::CancelTimer(TimerKey::Instance(instance.id)));
            }
        }
    }

    /// Cancels the backoff timer of a backoff phase; the caller enters the
    /// next phase.
    fn cancel_backoff(&mut self) {
        if self.m.phase.backoff_timer().is_some() {
            self.effects.push(Effect::CancelTimer(TimerKey::Backoff));
        }
    }

    /// Stops the current instance's probe, if it runs.
    fn cancel_probe(&mut self) {
        if let Some(instance) = self.m.phase.tracking() {
            if *instance.probing {
                *instance.probing = false;
                self.effects.push(Effect::CancelProbe(instance.id));
            }
        }
    }

    fn wait(&mut self, waiter: Option<super::RequestId>, action: WaitFor) {
        if let Some(id) = waiter {
            self.m.waiters.push(Waiter { id, action });
        }
    }

    fn answer(&mut self, waiter: Option<super::RequestId>, answer: Answer) {
        if let Some(id) = waiter {
            self.effects.push(Effect::Answer(id, answer));
        }
    }

    /// Answers every caller waiting for `action`.
    fn answer_all(&mut self, action: WaitFor, answer: Answer) {
        let (done, left): (Vec<Waiter>, Vec<Waiter>) = mem::take(&mut self.m.waiters)
            .into_iter()
            .partition(|w| w.action == action);
        self.m.waiters = left;
        for waiter in done {
            self.effects.push(Effect::Answer(waiter.id, answer.clone()));
        }
    }

    fn uptime(&self) -> Duration {
        self.m
            .started_at()
            .map_or(Duration::ZERO, |at| self.now.saturating_duration_since(at))
    }
}

/// The state as DESIGN.md names it, for reasons.
fn state_name(state: AppState) -> &'static str {
    match state {
        AppState::Stopped => "stopped",
        AppState::Starting => "starting",
        AppState::Running => "running",
        AppState::Backoff => "in backoff",
        AppState::Stopping => "stopping",
        AppState::Exited => "exited",
        AppState::Fatal => "fatal",
    }
}
