//! Memory and CPU of one app, read from its cgroup when the scrape asks.
//!
//! CPU is `usage_usec` of the app's cgroup v2 `cpu.stat`, which the kernel
//! keeps whether or not the cpu controller is enabled. Memory is, in order:
//! 1. `memory.current` of the v2 cgroup, where the memory controller is on;
//! 2. `memory.usage_in_bytes` of the main process's v1 memory cgroup, on
//!    hybrid hosts, where every app's exec helper joins one of its own
//!    (`AppLimits::extra_procs`);
//! 3. otherwise the sum of the PSS of the processes in the app's cgroup
//!    and its instance leaves (proportional, so pages shared between
//!    gunicorn workers count once): an app adopted from a daemon that did
//!    not yet put it in a v1 memory cgroup, a host without a memory
//!    controller.
//!
//! Every path is under a [`Roots`] so tests use a fake tree. Nothing here
//! writes, and an unreadable file means "unknown", never an error.
//!
//! A scrape reads these files for every app, so the files of 1 and 2 stay
//! open between scrapes ([`OpenFiles`]): each is then one `pread`, a
//! microsecond or two, where opening a cgroup file costs 20 to 25 µs of
//! path walk. They are kernel files of cgroups that root made: the app
//! can neither rename nor replace them, and a descriptor of a removed
//! cgroup fails its reads (`ENODEV`), which opens the path again. Which
//! v1 cgroup holds an app is read from its main process's
//! `/proc/PID/cgroup` once per main process, not per scrape. Nothing is
//! read that can be known not to be there: `memory.current` only where
//! the apps' parent enables the v2 memory controller (read once per
//! scrape).

use std::collections::HashMap;
use std::fs::File;
use std::io::Read as _;
use std::os::unix::fs::{FileExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::locks;

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
}

/// The usage files of every app, kept open from one scrape to the next.
/// At most two descriptors per app (`cpu.stat` and the memory file),
/// which the daemon's open-file budget counts (`fds::app_cost`); an app
/// no longer scraped has its files closed at the end of the next scrape.
#[derive(Debug, Default)]
pub struct OpenFiles {
    apps: Mutex<HashMap<PathBuf, AppFiles>>,
}

/// One app's open files, keyed by its v2 cgroup.
#[derive(Debug, Default)]
struct AppFiles {
    cpu: Option<File>,
    memory: Option<MemoryFile>,
}

/// The file that counts an app's memory, and what it was chosen for.
#[derive(Debug)]
struct MemoryFile {
    source: MemorySource,
    file: Option<File>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MemorySource {
    /// `memory.current` of the app's v2 cgroup.
    V2,
    /// `memory.usage_in_bytes` of the v1 memory cgroup this main process
    /// is in, or `None` (`file` too): it is in none of its own, so its
    /// processes' PSS is summed.
    V1 { pid: Option<u32> },
}

impl Roots {
    /// The usage of one app.
    pub fn usage(&self, app: AppUsageOf<'_>) -> Usage {
        let files = OpenFiles::default();
        let mut reader = self.reader(&files);
        reader.usage(app)
    }

    /// Reads the usage of many apps: what is the same for all of them (the
    /// daemon's own v1 memory cgroup, whether the apps' parent cgroup
    /// enables the memory controller) is read once, and the files of each
    /// app come from `files` and go back there when the reader is dropped.
    pub fn reader<'a>(&'a self, files: &'a OpenFiles) -> UsageReader<'a> {
        let mut buf = Vec::new();
        // Taken out, not locked for the scrape: a scrape that hangs on a
        // hostile app's /proc file keeps no other from running; a scrape
        // beside it opens its own and the last to finish keeps its files.
        let open = std::mem::take(&mut *locks::lock(&files.apps));
        UsageReader {
            roots: self,
            daemon_v1_memory: read_small(&self.proc.join("self/cgroup"), &mut buf)
                .and_then(v1_memory_path),
            v2_memory: None,
            buf,
            files,
            open,
            kept: HashMap::new(),
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
    v2_memory: Option<(PathBuf, bool)>,
    /// One buffer for every file read.
    buf: Vec<u8>,
    /// Where the files go back at the end.
    files: &'a OpenFiles,
    /// The files the last scrape left open.
    open: HashMap<PathBuf, AppFiles>,
    /// The files of the apps this scrape read.
    kept: HashMap<PathBuf, AppFiles>,
}

impl Drop for UsageReader<'_> {
    fn drop(&mut self) {
        // The apps not read this time are gone: their files close here.
        let kept = std::mem::take(&mut self.kept);
        *locks::lock(&self.files.apps) = kept;
    }
}

impl UsageReader<'_> {
    /// See [`Roots::usage`].
    pub fn usage(&mut self, app: AppUsageOf<'_>) -> Usage {
        let Some(cgroup) = app.cgroup else {
            // No cgroup: the main process alone.
            let pids: Vec<u32> = app.pid.into_iter().collect();
            return Usage {
                memory_bytes: self.roots.pss_sum(&pids, &mut self.buf),
                cpu_seconds: None,
            };
        };
        let mut files = self
            .kept
            .remove(cgroup)
            .or_else(|| self.open.remove(cgroup))
            .unwrap_or_default();
        let cpu_seconds = read_kept(&mut files.cpu, &cgroup.join("cpu.stat"), &mut self.buf)
            .and_then(parse_cpu_seconds);
        let memory_bytes = self.memory(cgroup, app.pid, &mut files).or_else(|| {
            let pids = read_app_pids(cgroup, &mut self.buf)?;
            self.roots.pss_sum(&pids, &mut self.buf)
        });
        self.kept.insert(cgroup.to_owned(), files);
        Usage {
            memory_bytes,
            cpu_seconds,
        }
    }

    /// The app's memory from its memory cgroup's own count, if it has
    /// one: `None` sends the caller to the PSS sum.
    fn memory(&mut self, cgroup: &Path, pid: Option<u32>, files: &mut AppFiles) -> Option<u64> {
        let source = if self.has_v2_memory(cgroup) {
            MemorySource::V2
        } else {
            MemorySource::V1 { pid }
        };
        if files.memory.as_ref().map(|m| m.source) != Some(source) {
            let path = match source {
                MemorySource::V2 => Some(cgroup.join("memory.current")),
                MemorySource::V1 { pid } => self.v1_memory_file(pid?),
            };
            files.memory = Some(MemoryFile {
                source,
                file: path.as_deref().and_then(open_kernel_file),
            });
        }
        let memory = files.memory.as_mut()?;
        let file = memory.file.as_ref()?;
        match pread_small(file, &mut self.buf).and_then(|text| text.trim().parse().ok()) {
            Some(bytes) => Some(bytes),
            None => {
                // A cgroup removed since (ENODEV): choose again next time.
                files.memory = None;
                None
            }
        }
    }

    /// Whether the parent of `cgroup` enables the memory controller for
    /// its children, so that `cgroup` has a `memory.current`.
    fn has_v2_memory(&mut self, cgroup: &Path) -> bool {
        let Some(parent) = cgroup.parent() else {
            return false;
        };
        if let Some((dir, enabled)) = &self.v2_memory {
            if dir == parent {
                return *enabled;
            }
        }
        let enabled = read_small(&parent.join("cgroup.subtree_control"), &mut self.buf)
            .is_some_and(|text| text.split_whitespace().any(|c| c == "memory"));
        self.v2_memory = Some((parent.to_owned(), enabled));
        enabled
    }

    /// `memory.usage_in_bytes` of `pid`'s v1 memory cgroup, if that is not
    /// the daemon's own (then it would count the daemon and every app).
    fn v1_memory_file(&mut self, pid: u32) -> Option<PathBuf> {
        let daemon = self.daemon_v1_memory.as_deref()?;
        let path = self.roots.proc.join(pid.to_string()).join("cgroup");
        let app = read_small(&path, &mut self.buf).and_then(v1_memory_path)?;
        if app == daemon {
            return None;
        }
        let dir = self
            .roots
            .cgroup_v1
            .join("memory")
            .join(app.trim_start_matches('/'));
        Some(dir.join("memory.usage_in_bytes"))
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

fn parse_cpu_seconds(text: &str) -> Option<f64> {
    let usec: u64 = text
        .lines()
        .find_map(|line| line.strip_prefix("usage_usec ")?.trim().parse().ok())?;
    Some(usec as f64 / 1e6)
}

/// Opens a cgroup file to keep: read-only, closed across exec (the exec
/// helper's clone copies the daemon's descriptors), no symlink followed,
/// never blocking.
fn open_kernel_file(path: &Path) -> Option<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .ok()
}

/// The contents of the file kept in `slot`, opening `path` when there is
/// none or the one kept fails (its cgroup was removed and made again).
fn read_kept<'b>(slot: &mut Option<File>, path: &Path, buf: &'b mut Vec<u8>) -> Option<&'b str> {
    let kept_works = match slot {
        Some(file) => pread_small(file, buf).is_some(),
        None => false,
    };
    if !kept_works {
        *slot = open_kernel_file(path);
        pread_small(slot.as_ref()?, buf)?;
    }
    std::str::from_utf8(buf).ok()
}

/// What one read asks for: every file read here fits.
const CHUNK: usize = 4096;

/// The contents of a small kernel file kept open, read from its start
/// with `pread`: no path walk, no open. A kernel file's read fills the
/// buffer until the file ends (seq_file), so a read shorter than asked
/// is the end, and most files take one system call.
fn pread_small<'b>(file: &File, buf: &'b mut Vec<u8>) -> Option<&'b str> {
    buf.clear();
    loop {
        let len = buf.len();
        buf.resize(len + CHUNK, 0);
        match file.read_at(&mut buf[len..], len as u64) {
            Ok(n) if n < CHUNK => {
                buf.truncate(len + n);
                break;
            }
            Ok(n) => buf.truncate(len + n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => buf.truncate(len),
            Err(_) => return None,
        }
    }
    std::str::from_utf8(buf).ok()
}

/// The contents of a small kernel file, read into `buf` with plain reads:
/// no size query (cgroup and proc files report none) and no allocation
/// once `buf` has grown to the largest file. `None` if it cannot be read
/// or is not text.
fn read_small<'b>(path: &Path, buf: &'b mut Vec<u8>) -> Option<&'b str> {
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
        });
        assert_eq!(usage.memory_bytes, Some(4096));
    }

    /// What a scrape of a thousand apps must not read for each: a
    /// `memory.current` left where the parent does not enable the
    /// controller is not consulted; a main process in the daemon's own v1
    /// memory cgroup (an app adopted from an older daemon) is counted by
    /// its PSS.
    #[test]
    fn files_that_cannot_be_the_apps_own_are_not_read() {
        let tree = Tree::new();
        let rollup = "00400000-7fff [rollup]\nRss:  900 kB\nPss:  300 kB\n";
        tree.write("v2/cgroup.subtree_control", "cpu pids\n")
            .write("v2/shop/cpu.stat", CPU_STAT)
            .write("v2/shop/memory.current", "1048576\n")
            .write("v2/shop/cgroup.procs", "10\n")
            .write("proc/self/cgroup", "4:memory:/avd\n")
            .write("proc/10/cgroup", "4:memory:/avd\n")
            .write("sys/memory/avd/memory.usage_in_bytes", "4096\n")
            .write("proc/10/smaps_rollup", rollup);
        let roots = tree.roots();
        let files = OpenFiles::default();
        for _ in 0..2 {
            let usage = roots.reader(&files).usage(AppUsageOf {
                cgroup: Some(&tree.path("v2/shop")),
                pid: Some(10),
            });
            assert_eq!(usage.memory_bytes, Some(300 * 1024));
        }
    }

    /// The memory and CPU files stay open between scrapes: the second
    /// scrape reads them again from their start (new values), without
    /// the main process's cgroup file, which only a new main process
    /// makes it read again. An app not scraped has its files closed.
    #[test]
    fn files_stay_open_between_scrapes_until_the_app_goes() {
        let tree = Tree::new();
        tree.write("v2/shop/cpu.stat", CPU_STAT)
            .write("v2/blog/cpu.stat", CPU_STAT)
            .write("proc/self/cgroup", "4:memory:/avd\n")
            .write("proc/10/cgroup", "4:memory:/avd/i/shop\n")
            .write("sys/memory/avd/i/shop/memory.usage_in_bytes", "4096\n");
        let roots = tree.roots();
        let files = OpenFiles::default();
        let (shop_cgroup, blog_cgroup) = (tree.path("v2/shop"), tree.path("v2/blog"));
        let shop = |pid| AppUsageOf {
            cgroup: Some(&shop_cgroup),
            pid: Some(pid),
        };
        let blog = AppUsageOf {
            cgroup: Some(&blog_cgroup),
            pid: None,
        };
        {
            let mut reader = roots.reader(&files);
            assert_eq!(reader.usage(shop(10)).memory_bytes, Some(4096));
            assert_eq!(reader.usage(blog).cpu_seconds, Some(2.5));
        }
        assert_eq!(files.apps.lock().unwrap().len(), 2);

        std::fs::remove_file(tree.path("proc/10/cgroup")).unwrap();
        // Written in place, as the kernel's files change under a reader.
        tree.write("sys/memory/avd/i/shop/memory.usage_in_bytes", "8192\n")
            .write("v2/shop/cpu.stat", "usage_usec 3000000\n");
        let usage = roots.reader(&files).usage(shop(10));
        assert_eq!(
            usage,
            Usage {
                memory_bytes: Some(8192),
                cpu_seconds: Some(3.0)
            }
        );
        assert_eq!(
            files.apps.lock().unwrap().len(),
            1,
            "blog was not scraped: its files are closed"
        );

        // A new main process: its cgroup is read again.
        tree.write("proc/11/cgroup", "4:memory:/avd/i/shop2\n")
            .write("sys/memory/avd/i/shop2/memory.usage_in_bytes", "512\n");
        assert_eq!(roots.reader(&files).usage(shop(11)).memory_bytes, Some(512));
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
