//! Reading processes and cgroups from /proc and the cgroup v2 tree.
//!
//! Read-only, except [`kill_cgroup_tree`] and [`remove_cgroup_tree`], which
//! the harness uses on subtrees it named itself.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The fields of `/proc/PID/status` the tests check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcStatus {
    pub pid: u32,
    pub name: String,
    /// `R`, `S`, `Z`, ... (the first letter of `State:`).
    pub state: char,
    pub ppid: u32,
    /// Real, effective, saved, file-system.
    pub uid: [u32; 4],
    pub gid: [u32; 4],
    /// Supplementary groups.
    pub groups: Vec<u32>,
    pub voluntary_ctxt_switches: u64,
    pub nonvoluntary_ctxt_switches: u64,
    /// Resident set size in KiB (0 for kernel threads and zombies).
    pub vm_rss_kib: u64,
}

fn ids<const N: usize>(value: &str) -> [u32; N] {
    let mut out = [0; N];
    for (slot, field) in out.iter_mut().zip(value.split_whitespace()) {
        *slot = field.parse().unwrap_or(0);
    }
    out
}

impl ProcStatus {
    /// Parses `/proc/PID/status`; `None` once the process is gone.
    pub fn read(pid: u32) -> Option<ProcStatus> {
        let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        Some(ProcStatus::parse(pid, &text))
    }

    /// Parses the text of a `/proc/PID/status` file.
    pub fn parse(pid: u32, text: &str) -> ProcStatus {
        let mut status = ProcStatus {
            pid,
            name: String::new(),
            state: '?',
            ppid: 0,
            uid: [0; 4],
            gid: [0; 4],
            groups: Vec::new(),
            voluntary_ctxt_switches: 0,
            nonvoluntary_ctxt_switches: 0,
            vm_rss_kib: 0,
        };
        for line in text.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match key {
                "Name" => status.name = value.to_owned(),
                "State" => status.state = value.chars().next().unwrap_or('?'),
                "PPid" => status.ppid = value.parse().unwrap_or(0),
                "Uid" => status.uid = ids(value),
                "Gid" => status.gid = ids(value),
                "Groups" => {
                    status.groups = value
                        .split_whitespace()
                        .filter_map(|g| g.parse().ok())
                        .collect()
                }
                "voluntary_ctxt_switches" => {
                    status.voluntary_ctxt_switches = value.parse().unwrap_or(0)
                }
                "nonvoluntary_ctxt_switches" => {
                    status.nonvoluntary_ctxt_switches = value.parse().unwrap_or(0)
                }
                "VmRSS" => {
                    status.vm_rss_kib = value
                        .split_whitespace()
                        .next()
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0)
                }
                _ => {}
            }
        }
        status
    }
}

/// Whether `pid` is a live process. A zombie counts as gone: on this
/// machine PID 1 does not reap orphans, so a killed orphan stays a zombie.
pub fn process_exists(pid: u32) -> bool {
    ProcStatus::read(pid).is_some_and(|s| !matches!(s.state, 'Z' | 'X'))
}

/// `/proc/PID/cmdline`, arguments joined by spaces; empty once gone.
pub fn cmdline(pid: u32) -> String {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| {
            raw.split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

/// Every live process: pid to parent pid.
pub fn all_processes() -> BTreeMap<u32, u32> {
    let mut out = BTreeMap::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return out;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        if let Some(status) = ProcStatus::read(pid) {
            if !matches!(status.state, 'Z' | 'X') {
                out.insert(pid, status.ppid);
            }
        }
    }
    out
}

/// Live processes whose command line contains `needle`.
pub fn pids_with_cmdline(needle: &str) -> Vec<u32> {
    all_processes()
        .into_keys()
        .filter(|pid| cmdline(*pid).contains(needle))
        .collect()
}

/// The live descendants of `pid` (not `pid` itself), by parent links. A
/// daemonized grandchild has left this tree: use [`cgroup_procs`] for it.
pub fn descendants(pid: u32) -> Vec<u32> {
    let procs = all_processes();
    let mut found = BTreeSet::from([pid]);
    loop {
        let before = found.len();
        for (child, parent) in &procs {
            if found.contains(parent) {
                found.insert(*child);
            }
        }
        if found.len() == before {
            break;
        }
    }
    found.remove(&pid);
    found.into_iter().collect()
}

/// Where the cgroup v2 tree is mounted (`/sys/fs/cgroup` on pure v2 hosts,
/// `/sys/fs/cgroup/unified` on hybrid ones), from `/proc/self/mountinfo`.
pub fn cgroup2_root() -> Option<PathBuf> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").ok()?;
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let fstype = right.split_whitespace().next()?;
        let mount_point = left.split_whitespace().nth(4)?;
        (fstype == "cgroup2").then(|| PathBuf::from(mount_point))
    })
}

/// The cgroup v2 path of `pid` (the `0::` line), relative to the v2 root.
pub fn cgroup_of(pid: u32) -> Option<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| p.trim_start_matches('/').to_owned())
}

/// Every pid in the cgroup at `dir` and below; empty when it does not exist.
pub fn cgroup_procs(dir: &Path) -> Vec<u32> {
    let mut pids = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        if let Ok(text) = fs::read_to_string(dir.join("cgroup.procs")) {
            pids.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
        }
        if let Ok(entries) = fs::read_dir(&dir) {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(entry.path());
                }
            }
        }
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// SIGKILLs every process in the cgroup subtree at `dir` until it is empty
/// or `within` has passed; returns what is left.
pub fn kill_cgroup_tree(dir: &Path, within: Duration) -> Vec<u32> {
    let deadline = Instant::now() + within;
    loop {
        let left: Vec<u32> = cgroup_procs(dir)
            .into_iter()
            .filter(|p| process_exists(*p))
            .collect();
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        for pid in &left {
            let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Removes the cgroup directories at `dir` and below, deepest first;
/// returns the ones that could not be removed.
pub fn remove_cgroup_tree(dir: &Path) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(entries) = fs::read_dir(&d) {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(entry.path());
                }
            }
        }
        dirs.push(d);
    }
    let mut failed = Vec::new();
    for d in dirs.into_iter().rev() {
        if d.exists() && fs::remove_dir(&d).is_err() {
            failed.push(d);
        }
    }
    failed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_fields_tests_check() {
        let text = "Name:\tgunicorn\nState:\tS (sleeping)\nPPid:\t12\n\
                    Uid:\t998\t998\t998\t998\nGid:\t997\t997\t997\t996\n\
                    Groups:\t996 997 \nVmRSS:\t  2048 kB\n\
                    voluntary_ctxt_switches:\t5\nnonvoluntary_ctxt_switches:\t1\n";
        assert_eq!(
            ProcStatus::parse(42, text),
            ProcStatus {
                pid: 42,
                name: "gunicorn".into(),
                state: 'S',
                ppid: 12,
                uid: [998; 4],
                gid: [997, 997, 997, 996],
                groups: vec![996, 997],
                voluntary_ctxt_switches: 5,
                nonvoluntary_ctxt_switches: 1,
                vm_rss_kib: 2048,
            }
        );
    }

    #[test]
    fn sees_itself_and_its_children() {
        let me = std::process::id();
        assert!(process_exists(me));
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        assert!(descendants(me).contains(&child.id()));
        // Between fork and exec the child still shows the test's cmdline.
        assert!(crate::wait::poll_until(Duration::from_secs(5), || cmdline(
            child.id()
        )
        .starts_with("sleep 5")));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!process_exists(child.id()));
    }

    #[test]
    fn finds_the_cgroup2_mount() {
        if let Some(root) = cgroup2_root() {
            assert!(root.join("cgroup.procs").exists(), "{}", root.display());
        }
    }
}
