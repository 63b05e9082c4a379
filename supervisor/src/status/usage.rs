//! Memory and CPU of one app, read from its cgroup when the scrape asks.
//!
//! CPU is `usage_usec` of the app's cgroup v2 `cpu.stat`, which the kernel
//! keeps whether or not the cpu controller is enabled. Memory is, in order:
//! 1. `memory.current` of the v2 cgroup, where the memory controller is on;
//! 2. `memory.usage_in_bytes` of the main process's v1 memory cgroup, on
//!    hybrid hosts where a limit put the app in one of its own;
//! 3. otherwise the sum of the PSS of the processes in the app's cgroup
//!    and its instance leaves (proportional, so pages shared between
//!    gunicorn workers count once).
//!
//! Every path is under a [`Roots`] so tests use a fake tree. Nothing here
//! writes, and an unreadable file means "unknown", never an error.
//!
//! A scrape reads these files for every app, so it reads no file it can
//! know is not there: `memory.current` only where the apps' parent enables
//! the v2 memory controller (read once per scrape), the main process's v1
//! memory cgroup only for an app with a memory limit (the only apps the
//! exec helper puts in one of their own).

use std::cell::RefCell;
use std::io::Read as _;
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

/// The app whose usage is read.
#[derive(Debug, Clone, Copy, Default)]
pub struct AppUsageOf<'a> {
    /// Its v2 cgroup, if the daemon uses cgroups.
    pub cgroup: Option<&'a Path>,
    /// Its main process, if it runs.
    pub pid: Option<u32>,
    /// Whether it has a memory limit: on a hybrid host only such an app
    /// has a v1 memory cgroup of its own.
    pub memory_limited: bool,
}

impl Roots {
    /// The usage of one app.
    pub fn usage(&self, app: AppUsageOf<'_>) -> Usage {
        self.reader().usage(app)
    }

    /// Reads the usage of many apps: what is the same for all of them (the
    /// daemon's own v1 memory cgroup, whether the apps' parent cgroup
    /// enables the memory controller) is read once.
    pub fn reader(&self) -> UsageReader<'_> {
        let mut buf = Vec::new();
        UsageReader {
            roots: self,
            daemon_v1_memory: read_small(&self.proc.join("self/cgroup"), &mut buf)
                .and_then(v1_memory_path),
            v2_memory: RefCell::default(),
            buf: RefCell::new(buf),
        }
    }
}

/// [`Roots`] with what every app's usage is compared against, read once.
#[derive(Debug)]
pub struct UsageReader<'a> {
    roots: &'a Roots,
    daemon_v1_memory: Option<String>,
    /// The last parent cgroup asked about, and whether it enables the
    /// memory controller for its children (every app has the same parent).
    v2_memory: RefCell<Option<(PathBuf, bool)>>,
    /// One buffer for every file read.
    buf: RefCell<Vec<u8>>,
}

impl UsageReader<'_> {
    /// See [`Roots::usage`].
    pub fn usage(&self, app: AppUsageOf<'_>) -> Usage {
        let buf = &mut *self.buf.borrow_mut();
        let cpu_seconds = app.cgroup.and_then(|cg| cpu_seconds(cg, buf));
        let memory_bytes = app
            .cgroup
            .filter(|cg| self.has_v2_memory(cg, buf))
            .and_then(|cg| read_u64(&cg.join("memory.current"), buf))
            .or_else(|| {
                let pid = app.pid.filter(|_| app.memory_limited)?;
                self.v1_memory(pid, buf)
            })
            .or_else(|| {
                let pids = match app.cgroup {
                    Some(cg) => read_app_pids(cg, buf)?,
                    None => app.pid.into_iter().collect(),
                };
                self.roots.pss_sum(&pids, buf)
            });
        Usage {
            memory_bytes,
            cpu_seconds,
        }
    }

    /// Whether the parent of `cgroup` enables the memory controller for
    /// its children, so that `cgroup` has a `memory.current`.
    fn has_v2_memory(&self, cgroup: &Path, buf: &mut Vec<u8>) -> bool {
        let Some(parent) = cgroup.parent() else {
            return false;
        };
        let mut known = self.v2_memory.borrow_mut();
        if let Some((dir, enabled)) = &*known {
            if dir == parent {
                return *enabled;
            }
        }
        let enabled = read_small(&parent.join("cgroup.subtree_control"), buf)
            .is_some_and(|text| text.split_whitespace().any(|c| c == "memory"));
        *known = Some((parent.to_owned(), enabled));
        enabled
    }

    /// `memory.usage_in_bytes` of `pid`'s v1 memory cgroup, if that is not
    /// the daemon's own (then it would count the daemon and every app).
    fn v1_memory(&self, pid: u32, buf: &mut Vec<u8>) -> Option<u64> {
        let daemon = self.daemon_v1_memory.as_deref()?;
        let app = read_small(&self.roots.proc.join(pid.to_string()).join("cgroup"), buf)
            .and_then(v1_memory_path)?;
        if app == daemon {
            return None;
        }
        let dir = self
            .roots
            .cgroup_v1
            .join("memory")
            .join(app.trim_start_matches('/'));
        read_u64(&dir.join("memory.usage_in_bytes"), buf)
    }
}

impl Roots {
    /// Sum of `Pss` from each process's `smaps_rollup`; `None` if none of
    /// them could be read (all gone, or no process).
    fn pss_sum(&self, pids: &[u32], buf: &mut Vec<u8>) -> Option<u64> {
        let mut total = None;
        for pid in pids {
            let path = self.proc.join(pid.to_string()).join("smaps_rollup");
            let Some(text) = read_small(&path, buf) else {
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

fn cpu_seconds(cgroup: &Path, buf: &mut Vec<u8>) -> Option<f64> {
    let text = read_small(&cgroup.join("cpu.stat"), buf)?;
    let usec: u64 = text
        .lines()
        .find_map(|line| line.strip_prefix("usage_usec ")?.trim().parse().ok())?;
    Some(usec as f64 / 1e6)
}

fn read_u64(path: &Path, buf: &mut Vec<u8>) -> Option<u64> {
    read_small(path, buf)?.trim().parse().ok()
}

/// The contents of a small kernel file, read into `buf` with plain reads:
/// no size query (cgroup and proc files report none) and no allocation
/// once `buf` has grown to the largest file. `None` if it cannot be read
/// or is not text.
fn read_small<'b>(path: &Path, buf: &'b mut Vec<u8>) -> Option<&'b str> {
    /// What one read asks for: every file read here fits.
    const CHUNK: usize = 4096;
    let mut file = std::fs::File::open(path).ok()?;
    buf.clear();
    loop {
        let len = buf.len();
        buf.resize(len + CHUNK, 0);
        match file.read(&mut buf[len..]) {
            Ok(0) => {
                buf.truncate(len);
                break;
            }
            Ok(n) => buf.truncate(len + n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => buf.truncate(len),
            Err(_) => return None,
        }
    }
    std::str::from_utf8(buf).ok()
}

/// The processes of an app: in its cgroup and in the instance leaves one
/// level below it. The leaves are not listed in turn: the daemon makes
/// nothing below them and only root could, and a listing of a cgroup
/// directory costs as much as reading two of its files.
fn read_app_pids(dir: &Path, buf: &mut Vec<u8>) -> Option<Vec<u32>> {
    let mut pids = procs(dir, buf)?;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            pids.extend(procs(&entry.path(), buf).unwrap_or_default());
        }
    }
    Some(pids)
}

/// The processes in cgroup `dir` itself.
fn procs(dir: &Path, buf: &mut Vec<u8>) -> Option<Vec<u32>> {
    let text = read_small(&dir.join("cgroup.procs"), buf)?;
    Some(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
}

/// The path of the v1 memory hierarchy in the text of a `/proc/PID/cgroup`
/// file (`4:memory:/some/path`).
fn v1_memory_path(text: &str) -> Option<String> {
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
        tree.write("v2/cgroup.subtree_control", "cpu memory pids\n")
            .write("v2/shop/cpu.stat", CPU_STAT)
            .write("v2/shop/memory.current", "1048576\n")
            .write("v2/shop/cgroup.procs", "10\n");
        let usage = tree.roots().usage(AppUsageOf {
            cgroup: Some(&tree.path("v2/shop")),
            pid: Some(10),
            memory_limited: false,
        });
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
        let usage = tree.roots().usage(AppUsageOf {
            cgroup: Some(&tree.path("v2/shop")),
            pid: Some(10),
            memory_limited: true,
        });
        assert_eq!(usage.memory_bytes, Some(4096));
    }

    /// What a scrape of a thousand apps must not read for each: files it
    /// can know are not the app's (a `memory.current` left where the
    /// parent does not enable the controller, a v1 cgroup of an app
    /// without a memory limit) are not consulted; the PSS sum is.
    #[test]
    fn files_that_cannot_be_the_apps_own_are_not_read() {
        let tree = Tree::new();
        let rollup = "00400000-7fff [rollup]\nRss:  900 kB\nPss:  300 kB\n";
        tree.write("v2/cgroup.subtree_control", "cpu pids\n")
            .write("v2/shop/cpu.stat", CPU_STAT)
            .write("v2/shop/memory.current", "1048576\n")
            .write("v2/shop/cgroup.procs", "10\n")
            .write("proc/self/cgroup", "4:memory:/\n")
            .write("proc/10/cgroup", "4:memory:/appvisor/shop\n")
            .write("sys/memory/appvisor/shop/memory.usage_in_bytes", "4096\n")
            .write("proc/10/smaps_rollup", rollup);
        let roots = tree.roots();
        let reader = roots.reader();
        for _ in 0..2 {
            let usage = reader.usage(AppUsageOf {
                cgroup: Some(&tree.path("v2/shop")),
                pid: Some(10),
                memory_limited: false,
            });
            assert_eq!(usage.memory_bytes, Some(300 * 1024));
        }
    }

    #[test]
    fn without_a_memory_cgroup_sums_pss_of_the_cgroups_processes() {
        let tree = Tree::new();
        let rollup = |pss: u64| format!("00400000-7fff [rollup]\nRss:  900 kB\nPss:  {pss} kB\n");
        tree.write("v2/shop/cpu.stat", CPU_STAT)
            // Processes live in the instance leaves (a start-stop restart
            // has two); 12 ended after the listing: it is skipped, not an
            // error.
            .write("v2/shop/cgroup.procs", "")
            .write("v2/shop/i1/cgroup.procs", "10\n12\n")
            .write("v2/shop/i2/cgroup.procs", "11\n")
            .write("proc/self/cgroup", "4:memory:/\n")
            .write("proc/10/cgroup", "4:memory:/\n")
            .write("proc/10/smaps_rollup", &rollup(300))
            .write("proc/11/smaps_rollup", &rollup(200));
        let usage = tree.roots().usage(AppUsageOf {
            cgroup: Some(&tree.path("v2/shop")),
            pid: Some(10),
            memory_limited: true,
        });
        assert_eq!(usage.memory_bytes, Some(500 * 1024));
        assert_eq!(usage.cpu_seconds, Some(2.5));
    }

    #[test]
    fn nothing_readable_is_unknown() {
        let tree = Tree::new();
        assert_eq!(
            tree.roots().usage(AppUsageOf {
                cgroup: Some(&tree.path("v2/gone")),
                ..AppUsageOf::default()
            }),
            Usage::default()
        );
        assert_eq!(tree.roots().usage(AppUsageOf::default()), Usage::default());
    }

    #[test]
    fn reads_this_hosts_own_process() {
        // The real /proc: this test process has a PSS.
        let usage = Roots::default().usage(AppUsageOf {
            pid: Some(std::process::id()),
            ..AppUsageOf::default()
        });
        assert!(usage.memory_bytes.unwrap_or(0) > 0, "{usage:?}");
        assert_eq!(usage.cpu_seconds, None, "no cgroup given");
    }
}
