//! Memory and CPU of one app, read from its cgroup when the scrape asks.
//!
//! CPU is `usage_usec` of the app's cgroup v2 `cpu.stat`, which the kernel
//! keeps whether or not the cpu controller is enabled. Memory is, in order:
//! 1. `memory.current` of the v2 cgroup, where the memory controller is on;
//! 2. `memory.usage_in_bytes` of the main process's v1 memory cgroup, on
//!    hybrid hosts where a limit put the app in one of its own;
//! 3. otherwise the sum of the PSS of the processes in the app's cgroup
//!    (proportional, so pages shared between gunicorn workers count once).
//!
//! Every path is under a [`Roots`] so tests use a fake tree. Nothing here
//! writes, and an unreadable file means "unknown", never an error.

use std::path::{Path, PathBuf};

/// Where `/proc` and the v1 cgroup hierarchies are.
#[derive(Debug, Clone)]
pub struct Roots {
    pub proc: PathBuf,
    /// Holds the v1 hierarchies (`memory/`, `pids/`) on hybrid hosts.
    pub cgroup_v1: PathBuf,
}

impl Default for Roots {
    fn default() -> Roots {
        Roots {
            proc: PathBuf::from("/proc"),
            cgroup_v1: PathBuf::from("/sys/fs/cgroup"),
        }
    }
}

/// What an app uses now; `None` when it cannot be known.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    pub memory_bytes: Option<u64>,
    pub cpu_seconds: Option<f64>,
}

impl Roots {
    /// The usage of the app whose v2 cgroup is `cgroup` (if it has one) and
    /// whose main process is `pid` (if it runs).
    pub fn usage(&self, cgroup: Option<&Path>, pid: Option<u32>) -> Usage {
        self.reader().usage(cgroup, pid)
    }

    /// Reads the usage of many apps: what is the same for all of them (the
    /// daemon's own v1 memory cgroup) is read once.
    pub fn reader(&self) -> UsageReader<'_> {
        UsageReader {
            roots: self,
            daemon_v1_memory: v1_memory_path(&self.proc.join("self/cgroup")),
        }
    }
}

/// [`Roots`] with what every app's usage is compared against, read once.
#[derive(Debug)]
pub struct UsageReader<'a> {
    roots: &'a Roots,
    daemon_v1_memory: Option<String>,
}

impl UsageReader<'_> {
    /// See [`Roots::usage`].
    pub fn usage(&self, cgroup: Option<&Path>, pid: Option<u32>) -> Usage {
        let cpu_seconds = cgroup.and_then(cpu_seconds);
        let memory_bytes = cgroup
            .and_then(|cg| read_u64(&cg.join("memory.current")))
            .or_else(|| pid.and_then(|pid| self.v1_memory(pid)))
            .or_else(|| {
                let pids = match cgroup {
                    Some(cg) => read_tree_pids(cg)?,
                    None => pid.into_iter().collect(),
                };
                self.roots.pss_sum(&pids)
            });
        Usage {
            memory_bytes,
            cpu_seconds,
        }
    }

    /// `memory.usage_in_bytes` of `pid`'s v1 memory cgroup, if that is not
    /// the daemon's own (then it would count the daemon and every app).
    fn v1_memory(&self, pid: u32) -> Option<u64> {
        let daemon = self.daemon_v1_memory.as_deref()?;
        let app = v1_memory_path(&self.roots.proc.join(pid.to_string()).join("cgroup"))?;
        if app == daemon {
            return None;
        }
        let dir = self
            .roots
            .cgroup_v1
            .join("memory")
            .join(app.trim_start_matches('/'));
        read_u64(&dir.join("memory.usage_in_bytes"))
    }
}

impl Roots {
    /// Sum of `Pss` from each process's `smaps_rollup`; `None` if none of
    /// them could be read (all gone, or no process).
    fn pss_sum(&self, pids: &[u32]) -> Option<u64> {
        let mut total = None;
        for pid in pids {
            let path = self.proc.join(pid.to_string()).join("smaps_rollup");
            let Ok(text) = std::fs::read_to_string(&path) else {
                // The process ended between listing and reading.
                continue;
            };
            let kib = text.lines().find_map(|line| {
                let rest = line.strip_prefix("Pss:")?;
                rest.trim().strip_suffix("kB")?.trim().parse::<u64>().ok()
            });
            if let Some(kib) = kib {
                *total.get_or_insert(0) += kib * 1024;
            }
        }
        total
    }
}

fn cpu_seconds(cgroup: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(cgroup.join("cpu.stat")).ok()?;
    let usec: u64 = text
        .lines()
        .find_map(|line| line.strip_prefix("usage_usec ")?.trim().parse().ok())?;
    Some(usec as f64 / 1e6)
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The processes of a cgroup and of every cgroup below it (each instance
/// of an app runs in a leaf under the app's cgroup).
fn read_tree_pids(dir: &Path) -> Option<Vec<u32>> {
    let text = std::fs::read_to_string(dir.join("cgroup.procs")).ok()?;
    let mut pids: Vec<u32> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            pids.extend(read_tree_pids(&entry.path()).unwrap_or_default());
        }
    }
    Some(pids)
}

/// The path of the v1 memory hierarchy in a `/proc/PID/cgroup` file
/// (`4:memory:/some/path`).
fn v1_memory_path(file: &Path) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        controllers
            .split(',')
            .any(|c| c == "memory")
            .then(|| path.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Tree {
        dir: tempfile::TempDir,
    }

    impl Tree {
        fn new() -> Tree {
            Tree {
                dir: tempfile::tempdir().unwrap(),
            }
        }

        fn write(&self, path: &str, contents: &str) -> &Tree {
            let path = self.dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, contents).unwrap();
            self
        }

        fn roots(&self) -> Roots {
            Roots {
                proc: self.dir.path().join("proc"),
                cgroup_v1: self.dir.path().join("sys"),
            }
        }

        fn path(&self, path: &str) -> PathBuf {
            self.dir.path().join(path)
        }
    }

    const CPU_STAT: &str = "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n";

    #[test]
    fn v2_memory_controller_wins() {
        let tree = Tree::new();
        tree.write("v2/shop/cpu.stat", CPU_STAT)
            .write("v2/shop/memory.current", "1048576\n")
            .write("v2/shop/cgroup.procs", "10\n");
        let usage = tree.roots().usage(Some(&tree.path("v2/shop")), Some(10));
        assert_eq!(
            usage,
            Usage {
                memory_bytes: Some(1_048_576),
                cpu_seconds: Some(2.5)
            }
        );
    }

    #[test]
    fn hybrid_host_uses_the_apps_own_v1_memory_cgroup() {
        let tree = Tree::new();
        tree.write("v2/shop/cpu.stat", CPU_STAT)
            .write("v2/shop/cgroup.procs", "10\n")
            .write("proc/self/cgroup", "4:memory:/\n0::/appvisor\n")
            .write(
                "proc/10/cgroup",
                "4:memory:/appvisor/shop\n0::/appvisor/shop\n",
            )
            .write("sys/memory/appvisor/shop/memory.usage_in_bytes", "4096\n");
        let usage = tree.roots().usage(Some(&tree.path("v2/shop")), Some(10));
        assert_eq!(usage.memory_bytes, Some(4096));
    }

    #[test]
    fn without_a_memory_cgroup_sums_pss_of_the_cgroups_processes() {
        let tree = Tree::new();
        let rollup = |pss: u64| format!("00400000-7fff [rollup]\nRss:  900 kB\nPss:  {pss} kB\n");
        tree.write("v2/shop/cpu.stat", CPU_STAT)
            // 12 ended after the listing: it is skipped, not an error.
            .write("v2/shop/cgroup.procs", "10\n11\n12\n")
            .write("proc/self/cgroup", "4:memory:/\n")
            .write("proc/10/cgroup", "4:memory:/\n")
            .write("proc/10/smaps_rollup", &rollup(300))
            .write("proc/11/smaps_rollup", &rollup(200));
        let usage = tree.roots().usage(Some(&tree.path("v2/shop")), Some(10));
        assert_eq!(usage.memory_bytes, Some(500 * 1024));
        assert_eq!(usage.cpu_seconds, Some(2.5));
    }

    #[test]
    fn nothing_readable_is_unknown() {
        let tree = Tree::new();
        assert_eq!(
            tree.roots().usage(Some(&tree.path("v2/gone")), None),
            Usage::default()
        );
        assert_eq!(tree.roots().usage(None, None), Usage::default());
    }

    #[test]
    fn reads_this_hosts_own_process() {
        // The real /proc: this test process has a PSS.
        let usage = Roots::default().usage(None, Some(std::process::id()));
        assert!(usage.memory_bytes.unwrap_or(0) > 0, "{usage:?}");
        assert_eq!(usage.cpu_seconds, None, "no cgroup given");
    }
}
