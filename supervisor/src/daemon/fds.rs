//! The daemon's open-file limit and its budget.
//!
//! At start the soft RLIMIT_NOFILE is raised to the hard limit ([`raise`]).
//! Apps do not inherit the raised limit: they get the soft limit the daemon
//! was started with (1024 under systemd's default `1024:524288`, which
//! keeps `select()` working in apps that use it), unless their `[limits]
//! open_files` says otherwise.
//!
//! Every app then costs the daemon a known number of descriptors
//! ([`app_cost`]), and [`FdBudget`] admits an app only when its cost fits
//! beside the other apps' and a fixed reserve for the daemon itself and its
//! connections ([`reserve`]). An app that does not fit is refused with the
//! reason in its status; without the budget every spawn past the limit
//! failed with EMFILE, for every app, the control socket included. The
//! arithmetic is pure; only [`raise`] makes a system call.

use std::collections::BTreeMap;
use std::io;

use nix::sys::resource::{getrlimit, setrlimit, Resource};

use crate::config::{AppSpec, ReadinessKind, RestartStrategy};

/// Descriptors the daemon holds whatever its apps: stdio, the runtime's
/// epoll and wakers, signal pipes, the control and status listeners, the
/// reaper, the cgroup watcher, the notify directory, config files being
/// read, the operator-intent files being written, a spawn in progress
/// on each runtime thread (its pipes, plan and report pipe), and the 17
/// fds the exec helper's launches pass their fds through (spawn/launch.rs).
/// About 40 are open at any time; the rest is margin.
pub const DAEMON_FDS: u64 = 64;
/// What a control or status connection may hold: its socket and a file it
/// reads (a log, a cgroup's statistics).
pub const PER_CONNECTION: u64 = 2;

/// What an app holds while it runs: the read ends of its stdout and stderr
/// pipes, its two log files and their two index files (`logs::order`), and
/// its cgroup leaf (kept open to clone the next instance straight into it).
const PER_APP: u64 = 7;
/// The status server's usage files of the app, kept open between scrapes
/// (`status::OpenFiles`): its cgroup's `cpu.stat` and memory count.
const PER_APP_USAGE: u64 = 2;
/// While the exec helper runs: the pipe it reports on.
const PER_SPAWN: u64 = 1;
/// A `start-stop` restart keeps the previous instance's leaf and pipes
/// (and its probe socket) while the new one starts.
const PER_PREVIOUS_INSTANCE: u64 = 3;

/// The descriptors kept for the daemon and its connections, out of the
/// limit, whatever the apps.
pub fn reserve() -> u64 {
    let connections = crate::control::MAX_CONNECTIONS + crate::status::MAX_CONNECTIONS;
    DAEMON_FDS + PER_CONNECTION * connections as u64
}

/// The most descriptors the daemon holds for app `spec` at any time.
pub fn app_cost(spec: &AppSpec) -> u64 {
    let notify = u64::from(spec.readiness.kind == ReadinessKind::Notify);
    // A probe's socket, while it connects (http and tcp readiness, or the
    // check `reload` waits for).
    let probe = u64::from(
        matches!(spec.readiness.kind, ReadinessKind::Probe(_)) || spec.readiness.probe.is_some(),
    );
    // An instance's private socket the probe goes through, beside held
    // sockets (`listen::ProbeSocket`).
    let probe_socket = u64::from(!spec.listen.is_empty() && spec.readiness.probe.is_some());
    let previous = match spec.restart.strategy {
        RestartStrategy::StartStop => PER_PREVIOUS_INSTANCE + probe_socket,
        RestartStrategy::StopStart => 0,
    };
    PER_APP
        + PER_APP_USAGE
        + PER_SPAWN
        + notify
        + probe
        + probe_socket
        + spec.listen.len() as u64
        + previous
}

/// The open-file limit, shared out between apps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdBudget {
    limit: u64,
    reserve: u64,
    /// Admitted apps and what each may hold.
    apps: BTreeMap<String, u64>,
}

/// Why an app was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "appvisord's open-file limit of {limit} has room for {room} more descriptors and this app \
     needs {cost} ({apps} apps hold {used}, {reserve} are kept for the daemon and its \
     connections): raise the hard limit (LimitNOFILE in appvisord.service) and restart \
     appvisord, or remove apps and run appctl update"
)]
pub struct Refusal {
    pub limit: u64,
    pub reserve: u64,
    pub apps: usize,
    pub used: u64,
    pub room: u64,
    pub cost: u64,
}

impl FdBudget {
    /// A budget for a daemon whose soft limit is `limit`.
    pub fn new(limit: u64) -> FdBudget {
        FdBudget {
            limit,
            reserve: reserve(),
            apps: BTreeMap::new(),
        }
    }

    /// Admits `app` at `cost`, or says why not; an app admitted before is
    /// admitted again at its new cost, or keeps its old one.
    pub fn admit(&mut self, app: &str, cost: u64) -> Result<(), Refusal> {
        let others: u64 = self
            .apps
            .iter()
            .filter(|(name, _)| *name != app)
            .map(|(_, cost)| cost)
            .sum();
        let room = self
            .limit
            .saturating_sub(self.reserve)
            .saturating_sub(others);
        if cost > room {
            return Err(Refusal {
                limit: self.limit,
                reserve: self.reserve,
                apps: self.apps.len() - usize::from(self.apps.contains_key(app)),
                used: others,
                room,
                cost,
            });
        }
        self.apps.insert(app.to_owned(), cost);
        Ok(())
    }

    /// Gives back what `app` held.
    pub fn release(&mut self, app: &str) {
        self.apps.remove(app);
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }
}

/// RLIMIT_NOFILE before and after [`raise`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NofileLimit {
    /// The soft limit the daemon was started with: what apps get.
    pub inherited: u64,
    /// The soft limit now: the daemon's own budget.
    pub soft: u64,
    pub hard: u64,
}

/// Raises the soft RLIMIT_NOFILE to the hard limit. A failure leaves the
/// limit as it was, and is returned with that limit for the caller to log.
pub fn raise() -> Result<NofileLimit, (NofileLimit, io::Error)> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)
        .map_err(|errno| (NofileLimit::unknown(), io::Error::from(errno)))?;
    let before = NofileLimit {
        inherited: soft,
        soft,
        hard,
    };
    if soft >= hard {
        return Ok(before);
    }
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
        .map_err(|errno| (before, io::Error::from(errno)))?;
    Ok(NofileLimit {
        soft: hard,
        ..before
    })
}

impl NofileLimit {
    /// What Linux starts processes with, for when even getrlimit fails.
    fn unknown() -> NofileLimit {
        NofileLimit {
            inherited: 1024,
            soft: 1024,
            hard: 1024,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{test_spec, ListenAddress, ListenSpec};

    #[test]
    fn an_app_costs_its_pipes_logs_leaf_and_whatever_it_adds() {
        let mut spec = test_spec::app_spec("shop", &["/bin/sleep", "infinity"]);
        assert_eq!(
            app_cost(&spec),
            10,
            "7 while it runs, 2 for /metrics, 1 while it spawns"
        );
        spec.readiness.kind = ReadinessKind::Notify;
        assert_eq!(app_cost(&spec), 11, "its NOTIFY_SOCKET");
        spec.readiness.probe = Some(crate::config::Probe::Tcp("127.0.0.1:8001".parse().unwrap()));
        assert_eq!(app_cost(&spec), 12, "and a probe for reload");
        spec.listen = ["127.0.0.1:8001", "127.0.0.1:8002"]
            .map(|address| ListenSpec {
                address: ListenAddress::Tcp(address.parse().unwrap()),
                name: "http".into(),
            })
            .into();
        assert_eq!(
            app_cost(&spec),
            15,
            "and two held sockets, and the instance's own socket for the probe"
        );
        spec.restart.strategy = RestartStrategy::StartStop;
        assert_eq!(
            app_cost(&spec),
            19,
            "and the previous instance during a restart"
        );
    }

    #[test]
    fn the_reserve_covers_every_connection_the_daemon_admits() {
        assert_eq!(reserve(), 64 + 2 * (256 + 64));
    }

    #[test]
    fn apps_are_admitted_until_the_limit_less_the_reserve_is_used() {
        let reserve = reserve();
        let mut budget = FdBudget::new(reserve + 20);
        // (app, cost, admitted)
        let steps: [(&str, u64, bool); 6] = [
            ("a", 6, true),
            ("b", 6, true),
            ("c", 9, false),
            ("c", 8, true),
            // Admitted again at a new cost: its old one does not count.
            ("a", 6, true),
            ("d", 1, false),
        ];
        for (app, cost, admitted) in steps {
            assert_eq!(
                budget.admit(app, cost).is_ok(),
                admitted,
                "{app} at {cost}: {budget:?}"
            );
        }
        assert_eq!(
            budget.admit("d", 1),
            Err(Refusal {
                limit: reserve + 20,
                reserve,
                apps: 3,
                used: 20,
                room: 0,
                cost: 1,
            })
        );
        // A changed app that no longer fits keeps what it had.
        assert!(budget.admit("b", 7).is_err());
        budget.release("b");
        assert!(budget.admit("d", 6).is_ok());
        assert!(budget.admit("b", 1).is_err());
    }

    #[test]
    fn a_limit_below_the_reserve_admits_nothing_and_says_why() {
        let mut budget = FdBudget::new(256);
        let refusal = budget.admit("shop", 6).unwrap_err();
        assert_eq!(refusal.room, 0);
        assert_eq!(
            refusal.to_string(),
            "appvisord's open-file limit of 256 has room for 0 more descriptors and this app \
             needs 6 (0 apps hold 0, 704 are kept for the daemon and its connections): raise the \
             hard limit (LimitNOFILE in appvisord.service) and restart appvisord, or remove apps \
             and run appctl update"
        );
    }
}
