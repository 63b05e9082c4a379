//! The limits an app gets where neither its file nor `[defaults]` sets
//! one: a cap on tasks, like systemd's `DefaultTasksMax`, so that a fork
//! bomb stays in its app and leaves process ids for the others. No other
//! key gets a default (docs/daemon.md, "Default limits").
//!
//! Pure but for [`host_max_tasks`], the one read of `/proc`.

use std::fs;

use super::spec::LimitSpec;

/// The share of the host's tasks one app may use without `[limits] tasks`:
/// systemd's `DefaultTasksMax=15%`.
pub const DEFAULT_TASKS_PERCENT: u64 = 15;

/// Built-in limits, for the keys an app leaves unset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DefaultLimits {
    /// `tasks`, and the host's ceiling it is a share of.
    pub tasks: Option<DefaultTasks>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefaultTasks {
    pub limit: u64,
    /// The host's ceiling on tasks ([`host_max_tasks`]).
    pub of: u64,
}

impl DefaultLimits {
    /// The defaults on a host whose kernel allows `max_tasks` tasks in all
    /// (`None`: unknown, so no default).
    pub fn for_host(max_tasks: Option<u64>) -> DefaultLimits {
        DefaultLimits {
            tasks: max_tasks.map(|of| DefaultTasks {
                limit: (of * DEFAULT_TASKS_PERCENT / 100).max(1),
                of,
            }),
        }
    }

    /// `configured` with the defaults filled in where it is silent.
    pub fn fill(&self, configured: &LimitSpec) -> LimitSpec {
        LimitSpec {
            tasks: configured.tasks.or(self.tasks.map(|t| t.limit)),
            ..configured.clone()
        }
    }

    /// The keys [`DefaultLimits::fill`] sets for `configured`.
    pub fn defaulted(&self, configured: &LimitSpec) -> Vec<&'static str> {
        let tasks = configured.tasks.is_none() && self.tasks.is_some();
        tasks.then_some("tasks").into_iter().collect()
    }

    /// One line for a person: "tasks = 4915 (15% of the host's 32768 tasks)".
    pub fn describe(&self) -> Option<String> {
        self.tasks.map(|t| {
            format!(
                "tasks = {} ({DEFAULT_TASKS_PERCENT}% of the host's {} tasks)",
                t.limit, t.of
            )
        })
    }
}

/// How many tasks (processes and threads) the kernel allows in all: the
/// smaller of `kernel.pid_max` and `kernel.threads-max`, as systemd reckons
/// `DefaultTasksMax`.
pub fn host_max_tasks() -> Option<u64> {
    let read = |path: &str| fs::read_to_string(path).ok()?.trim().parse::<u64>().ok();
    smaller(
        read("/proc/sys/kernel/pid_max"),
        read("/proc/sys/kernel/threads-max"),
    )
}

fn smaller(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tasks_default_is_15_percent_of_the_smaller_kernel_ceiling() {
        // (pid_max, threads-max) -> tasks
        let table = [
            (Some(32_768), Some(192_731), Some(4915)),
            (Some(4_194_304), Some(63_432), Some(9514)),
            (Some(4_194_304), None, Some(629_145)),
            (None, Some(1000), Some(150)),
            (Some(5), None, Some(1)),
            (None, None, None),
        ];
        for (pid_max, threads_max, want) in table {
            let defaults = DefaultLimits::for_host(smaller(pid_max, threads_max));
            assert_eq!(
                defaults.tasks.map(|t| t.limit),
                want,
                "{pid_max:?} {threads_max:?}"
            );
        }
    }

    #[test]
    fn defaults_fill_only_what_the_app_leaves_unset() {
        let defaults = DefaultLimits::for_host(Some(32_768));
        let none = LimitSpec::default();
        assert_eq!(defaults.fill(&none).tasks, Some(4915));
        assert_eq!(defaults.defaulted(&none), ["tasks"]);
        let set = LimitSpec {
            tasks: Some(64),
            memory: Some(512 << 20),
            ..LimitSpec::default()
        };
        assert_eq!(defaults.fill(&set), set, "the app's own limits win");
        assert!(defaults.defaulted(&set).is_empty());
        // Only tasks has a default.
        assert_eq!(
            defaults.fill(&none),
            LimitSpec {
                tasks: Some(4915),
                ..LimitSpec::default()
            }
        );
        let unknown = DefaultLimits::for_host(None);
        assert_eq!(unknown.fill(&none), none);
        assert!(unknown.defaulted(&none).is_empty());
        assert_eq!(
            defaults.describe().as_deref(),
            Some("tasks = 4915 (15% of the host's 32768 tasks)")
        );
    }
}
