//! Start-up after a crash (SIGKILL, OOM kill, panic) of the previous
//! daemon: instead of killing what it left in the app cgroups, take over
//! each app whose record (`handoff::crash`) still holds: the app is in
//! apps.d and valid, and a running app's main process is where and what
//! the record says. Such an app keeps running under the new daemon, as
//! after a planned hand-off but without fds; one whose configuration
//! changed while no daemon ran is then restarted as `appctl update` would.
//! Everything else is left to the usual start-up: leftover cgroups are
//! killed, apps started.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use appvisor_protocol::HandoffReport;

use super::{handoff, Daemon, Entry};
use crate::audit::unix_now;
use crate::cgroup::CgroupRoot;
use crate::config::change::Change;
use crate::handoff::crash::{self, CrashRecord, Heartbeat, Previous};
use crate::handoff::state::{AppRecord, RecordState};
use crate::judge::Candidate;
use crate::listen::recover::{recover, RecoverError};
use crate::listen::HandedOver;
use crate::locks;
use crate::supervise::{self, Command};

/// Who "asked" for an adoption, in status and the audit trail.
pub const CRASH_RECOVERY: &str = "crash recovery";

/// What start-up takes over from a crashed daemon.
#[derive(Debug, Default)]
pub struct Plan {
    pub heartbeat: Option<Heartbeat>,
    pub adopt: Vec<Adoption>,
    /// Records not used, and why.
    pub refused: Vec<(String, String)>,
}

/// One app to take over.
#[derive(Debug)]
pub struct Adoption {
    pub record: CrashRecord,
    /// A running app's main process, verified.
    pub pidfd: Option<OwnedFd>,
    /// Its configuration changed while no daemon ran: restart it.
    pub changed: bool,
    /// Its held listen sockets, taken back from the main process (when
    /// it has any configured), for when the fd store has none.
    pub recovered: Option<Result<Vec<HandedOver>, RecoverError>>,
}

impl Plan {
    /// The adopted apps that run, each with its instance's leaf: what
    /// start-up must not kill.
    pub fn keep(&self) -> BTreeMap<String, String> {
        self.adopt
            .iter()
            .filter(|a| a.pidfd.is_some())
            .filter_map(|a| {
                let current = a.record.app.current.as_ref()?;
                Some((
                    a.record.app.name.clone(),
                    crate::app::InstanceId(current.id).to_string(),
                ))
            })
            .collect()
    }
}

/// What apps.d says of a recorded app now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Candidacy {
    Missing,
    Invalid,
    /// Valid; whether its fingerprint is the recorded one.
    Valid {
        same: bool,
    },
}

/// What to do with one record (pure).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Take it over; `process`: its main process must be verified first;
    /// `restart`: then restart it (configuration changed).
    Adopt {
        process: bool,
        restart: bool,
    },
    Refuse(&'static str),
}

pub fn decide(state: RecordState, has_process: bool, candidacy: Candidacy) -> Decision {
    let same = match candidacy {
        Candidacy::Missing => return Decision::Refuse("no longer in apps.d"),
        // The last valid version is not known to this daemon: as at any
        // start, an invalid file starts nothing.
        Candidacy::Invalid => return Decision::Refuse("its file does not validate"),
        Candidacy::Valid { same } => same,
    };
    match (state, has_process) {
        (RecordState::Running, true) => Decision::Adopt {
            process: true,
            restart: !same,
        },
        (RecordState::Running, false) => Decision::Refuse("running with no main process"),
        (_, true) => Decision::Refuse("not running, yet with a main process"),
        // Stopped, backoff, exited, fatal: their state, counts, schedule
        // and who stopped them carry over; nothing runs to restart.
        (_, false) => Decision::Adopt {
            process: false,
            restart: false,
        },
    }
}

/// Decides on every record of `previous` against apps.d (`candidates`)
/// and, for a running app, the live cgroup tree. Blocking (procfs).
pub fn plan(
    previous: Previous,
    root: Option<&CgroupRoot>,
    candidates: &BTreeMap<String, Candidate>,
) -> Plan {
    let mut plan = Plan {
        heartbeat: previous.heartbeat,
        ..Plan::default()
    };
    for (name, record) in previous.records {
        let record = match record {
            Ok(record) => record,
            Err(why) => {
                plan.refused
                    .push((name, format!("unreadable record: {why}")));
                continue;
            }
        };
        let candidacy = match candidates.get(&name).map(|c| &c.app) {
            None => Candidacy::Missing,
            Some(Err(_)) => Candidacy::Invalid,
            Some(Ok(app)) => Candidacy::Valid {
                same: crash::fingerprint(app) == record.fingerprint,
            },
        };
        let decision = decide(record.app.state, record.app.current.is_some(), candidacy);
        let (process, restart) = match decision {
            Decision::Refuse(why) => {
                plan.refused.push((name, why.to_owned()));
                continue;
            }
            Decision::Adopt { process, restart } => (process, restart),
        };
        let pidfd = if process {
            let verified = match root {
                None => Err("no cgroup v2 tree to find its main process in".to_owned()),
                Some(root) => root
                    .app(&name)
                    .map_err(|e| e.to_string())
                    .and_then(|cg| crash::verify_main(&record, &cg).map_err(|e| e.to_string())),
            };
            match verified {
                Ok(pidfd) => Some(pidfd),
                Err(why) => {
                    plan.refused.push((name, why));
                    continue;
                }
            }
        } else {
            None
        };
        // Here, off the runtime: it reads the app's /proc entries.
        let recovered = match (&pidfd, &record.app.current, candidates.get(&name)) {
            (Some(pidfd), Some(current), Some(Candidate { app: Ok(app), .. }))
                if !app.spec.listen.is_empty() =>
            {
                use std::os::fd::AsFd;
                Some(recover(pidfd.as_fd(), current.pid, &app.spec.listen))
            }
            _ => None,
        };
        plan.adopt.push(Adoption {
            record,
            pidfd,
            changed: restart,
            recovered,
        });
    }
    plan
}

impl Daemon {
    /// Takes over the apps of `plan` (before the first `apply_config`,
    /// which then finds them in place), restarts those whose configuration
    /// changed, and reports the adoption in status and the audit trail.
    pub(super) async fn adopt(
        &self,
        plan: Plan,
        candidates: &BTreeMap<String, Candidate>,
        mut passed: BTreeMap<String, OwnedFd>,
        log_dir: &std::path::Path,
    ) {
        for (app, why) in &plan.refused {
            tracing::warn!(app = %app, reason = %why, "not adopted after a crash: stopped, then started afresh");
        }
        self.adopt_apps(plan, candidates, &mut passed, log_dir)
            .await;
        // What no adopted app claimed: closed, and out of the store.
        for (name, fd) in passed {
            drop(fd);
            if let Some(store) = &self.shared.fd_store {
                store.remove(&name);
            }
        }
    }

    async fn adopt_apps(
        &self,
        plan: Plan,
        candidates: &BTreeMap<String, Candidate>,
        passed: &mut BTreeMap<String, OwnedFd>,
        log_dir: &std::path::Path,
    ) {
        if plan.adopt.is_empty() {
            return;
        }
        let _guard = self.apply_lock.lock().await;
        let from_version = plan
            .heartbeat
            .as_ref()
            .map(|h| h.daemon_version.clone())
            .or_else(|| plan.adopt.first().map(|a| a.record.daemon_version.clone()))
            .unwrap_or_default();
        let mut chosen = Vec::with_capacity(plan.adopt.len());
        for adoption in plan.adopt {
            let name = adoption.record.app.name.clone();
            let Some(Candidate { file, app: Ok(app) }) = candidates.get(&name) else {
                continue;
            };
            // Operator intent is kept on disk, synchronously: a record of a
            // stop that intent no longer has is older than a start not yet
            // recorded, and that start wins.
            if adoption.record.app.state == RecordState::Stopped
                && app.spec.autostart
                && self.intents.get(&name).is_none()
            {
                tracing::info!(app = %name, "not adopted as stopped: no operator stopped it; started as usual");
                continue;
            }
            chosen.push((adoption, file, app));
        }
        let wanted = chosen
            .iter()
            .map(|(adoption, _, app)| (adoption.record.app.name.clone(), Arc::clone(app)))
            .collect();
        let opened = match self.running_apps_logs(log_dir, wanted).await {
            Ok(opened) => opened,
            Err(error) => std::panic::resume_unwind(error.into_panic()),
        };
        let records: Vec<&AppRecord> = chosen
            .iter()
            .map(|(adoption, _, _)| &adoption.record.app)
            .collect();
        let found = supervise::find_again(&self.shared, &records).await;
        let mut adopted = 0;
        let mut restarted = Vec::new();
        {
            let mut entries = locks::write(&self.apps);
            for (((adoption, file, app), logs), found) in chosen.into_iter().zip(opened).zip(found)
            {
                let name = adoption.record.app.name.clone();
                let process = adoption.pidfd.is_some();
                let mut record = adoption.record.app;
                let mut fds = BTreeMap::new();
                let mut attached = false;
                if process {
                    attached = stored_pipes(passed, &mut record, &mut fds);
                }
                // An app in backoff holds its sockets too (connections
                // wait in their backlog for the next try).
                if !app.spec.listen.is_empty() && !stored_listen(passed, app, &mut record, &mut fds)
                {
                    take_recovered(adoption.recovered, app, &mut record, &mut fds);
                }
                let exit = match adoption.pidfd.map(supervise::reaper::watch_pidfd) {
                    None => None,
                    Some(Ok(exit)) => Some(exit),
                    Some(Err(error)) => {
                        tracing::error!(app = %name, %error, "cannot watch an adopted main process");
                        continue;
                    }
                };
                if process && !attached {
                    // No fd store gave the pipes back.
                    logs.set_detached(true);
                }
                let handle = match supervise::restore(
                    app.clone(),
                    logs,
                    self.shared.clone(),
                    record,
                    found,
                    &mut fds,
                    exit,
                ) {
                    Ok(handle) => handle,
                    Err(error) => {
                        tracing::error!(app = %name, %error, "cannot adopt an app after a crash");
                        continue;
                    }
                };
                if adoption.changed {
                    // As `appctl update` would: the settings it runs with
                    // are not the file's.
                    let (reply, _) = tokio::sync::oneshot::channel();
                    let change = Change {
                        keys: vec!["(changed while no appvisord ran)"],
                        restart: true,
                        start: false,
                    };
                    let _ = handle.commands.send(Command::Replace {
                        app: app.clone(),
                        change,
                        reply,
                    });
                    restarted.push(name.clone());
                }
                adopted += 1;
                entries.insert(
                    name,
                    Entry {
                        file: file.clone(),
                        app: Some(Arc::clone(app)),
                        error: None,
                        handle: Some(handle),
                        refused: None,
                        since: unix_now(),
                    },
                );
            }
        }
        let now_ns = supervise::monotonic_ns();
        let unsupervised_ms = match &plan.heartbeat {
            Some(beat) => now_ns.saturating_sub(beat.at_ns) / 1_000_000,
            None => 0,
        };
        let report = HandoffReport {
            id: handoff::fresh_id(),
            requested_by: CRASH_RECOVERY.to_owned(),
            requested_at: unix_now(),
            from_version,
            to_version: handoff::VERSION.to_owned(),
            unsupervised_ms,
            apps: adopted,
            error: None,
        };
        tracing::warn!(
            target: "audit",
            by = CRASH_RECOVERY,
            from = %report.from_version,
            to = %report.to_version,
            apps = adopted,
            restarted = ?restarted,
            unsupervised_ms,
            "adopted the apps of a daemon that ended without stopping them"
        );
        self.handoff.report(report);
    }
}

/// The adopted instance's output pipes, from the fd store, into `record`
/// (by number) and `fds`: whether both were there.
fn stored_pipes(
    passed: &mut BTreeMap<String, OwnedFd>,
    record: &mut crate::handoff::state::AppRecord,
    fds: &mut BTreeMap<i32, OwnedFd>,
) -> bool {
    use crate::handoff::fdstore::pipe_name;
    use std::os::fd::AsRawFd;
    let Some(current) = record.current.as_mut() else {
        return false;
    };
    let instance = crate::app::InstanceId(current.id).to_string();
    let names = [
        pipe_name(&record.name, "stdout", &instance),
        pipe_name(&record.name, "stderr", &instance),
    ];
    if !names.iter().all(|name| passed.contains_key(name)) {
        return false;
    }
    let [stdout, stderr] = names.map(|name| passed.remove(&name).expect("checked"));
    current.stdout_fd = Some(stdout.as_raw_fd());
    current.stderr_fd = Some(stderr.as_raw_fd());
    fds.insert(stdout.as_raw_fd(), stdout);
    fds.insert(stderr.as_raw_fd(), stderr);
    true
}

/// The app's held listen sockets, from the fd store, into `record` and
/// `fds`, each checked to listen on its configured address: whether all
/// were there.
fn stored_listen(
    passed: &mut BTreeMap<String, OwnedFd>,
    app: &crate::config::resolve::ResolvedApp,
    record: &mut crate::handoff::state::AppRecord,
    fds: &mut BTreeMap<i32, OwnedFd>,
) -> bool {
    use crate::handoff::fdstore::listen_name;
    use std::os::fd::AsRawFd;
    let name = app.spec.name.to_string();
    let all = app.spec.listen.iter().enumerate().all(|(n, spec)| {
        passed
            .get(&listen_name(&name, n))
            .is_some_and(|fd| crate::listen::recover::listens_on(fd, &spec.address))
    });
    if !all {
        return false;
    }
    record.listen = app
        .spec
        .listen
        .iter()
        .enumerate()
        .map(|(n, spec)| {
            let fd = passed.remove(&listen_name(&name, n)).expect("checked");
            let raw = fd.as_raw_fd();
            fds.insert(raw, fd);
            crate::handoff::state::ListenRecord {
                fd: raw,
                address: spec.address.to_string(),
                unix_file: None,
            }
        })
        .collect();
    record.listen_owner = (app.uid, app.gid);
    true
}

/// Puts the held listen sockets `recovered` from `app`'s adopted main
/// process (`plan`) into `record` (by number) and `fds`: the next spawn
/// then inherits the very sockets, with no gap. Without them, the
/// sockets are bound afresh at the app's next spawn.
fn take_recovered(
    recovered: Option<Result<Vec<HandedOver>, RecoverError>>,
    app: &crate::config::resolve::ResolvedApp,
    record: &mut crate::handoff::state::AppRecord,
    fds: &mut BTreeMap<i32, OwnedFd>,
) {
    use std::os::fd::AsRawFd;
    let pid = record.current.as_ref().map_or(0, |c| c.pid);
    match recovered {
        None => {}
        Some(Ok(sockets)) => {
            record.listen = sockets
                .into_iter()
                .map(|socket| {
                    let fd = socket.fd.as_raw_fd();
                    fds.insert(fd, socket.fd);
                    crate::handoff::state::ListenRecord {
                        fd,
                        address: socket.address,
                        unix_file: None,
                    }
                })
                .collect();
            record.listen_owner = (app.uid, app.gid);
            tracing::info!(app = %app.spec.name, pid, "took the listen sockets back from the adopted main process");
        }
        Some(Err(error)) => {
            tracing::warn!(app = %app.spec.name, %error, "listen sockets not taken back: bound afresh at the next spawn");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_adopted() {
        use Candidacy::{Invalid, Missing, Valid};
        use RecordState::{Backoff, Exited, Fatal, Running, Stopped};
        let adopt = |process, restart| Decision::Adopt { process, restart };
        let cases: &[(RecordState, bool, Candidacy, Decision)] = &[
            (Running, true, Valid { same: true }, adopt(true, false)),
            (Running, true, Valid { same: false }, adopt(true, true)),
            (
                Running,
                true,
                Missing,
                Decision::Refuse("no longer in apps.d"),
            ),
            (
                Running,
                true,
                Invalid,
                Decision::Refuse("its file does not validate"),
            ),
            (
                Running,
                false,
                Valid { same: true },
                Decision::Refuse("running with no main process"),
            ),
            (
                Stopped,
                true,
                Valid { same: true },
                Decision::Refuse("not running, yet with a main process"),
            ),
            (Stopped, false, Valid { same: true }, adopt(false, false)),
            (Stopped, false, Valid { same: false }, adopt(false, false)),
            (Backoff, false, Valid { same: true }, adopt(false, false)),
            (Exited, false, Valid { same: true }, adopt(false, false)),
            (Fatal, false, Valid { same: false }, adopt(false, false)),
            (
                Backoff,
                false,
                Missing,
                Decision::Refuse("no longer in apps.d"),
            ),
        ];
        for (state, process, candidacy, expected) in cases {
            assert_eq!(
                &decide(*state, *process, *candidacy),
                expected,
                "{state:?}, process {process}, {candidacy:?}"
            );
        }
    }
}
