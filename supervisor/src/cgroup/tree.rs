//! The daemon's instance directory and the app cgroups in it: creation,
//! membership, signals, removal. Emptiness is learnt from `watch`.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::discover::{own_v2_path, parse_v2_mount, path_under_mount};
use super::{CgroupError, CgroupWatcher};

/// The daemon's instance cgroup, parent of one cgroup per app.
#[derive(Debug, Clone)]
pub struct CgroupRoot {
    /// Where the instance cgroup is in the file system.
    dir: PathBuf,
    /// The same cgroup as `/proc/PID/cgroup` names it (`0::` line).
    cgroup_path: String,
    /// The daemon's own cgroup when it found the tree, before it moved
    /// (see [`crash_restart_blocked`]).
    started_in: String,
}

/// What [`CgroupRoot::reap_leftovers`] found and did.
#[derive(Debug, Default)]
pub struct ReapReport {
    /// Cgroups emptied and removed.
    pub reaped: Vec<Reaped>,
    /// Cgroups that could not be emptied or removed; the rest were still
    /// handled.
    pub failed: Vec<CgroupError>,
}

/// A leftover app cgroup that was emptied and removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reaped {
    pub name: String,
    /// How many processes it held when it was killed.
    pub killed: usize,
}

impl CgroupRoot {
    /// Finds the v2 tree and the daemon's own cgroup in `/proc/self`, and
    /// creates `<mount><own cgroup>/<instance>`.
    ///
    /// `Ok(None)` when there is no usable v2 tree (the reason is logged at
    /// `info`); the caller then falls back as the module docs describe and
    /// says so in the log.
    pub fn detect(instance: &str) -> Result<Option<CgroupRoot>, CgroupError> {
        check_name(instance)?;
        let mountinfo = read_to_string("/proc/self/mountinfo")?;
        let own_cgroup = read_to_string("/proc/self/cgroup")?;
        let Some(mount) = parse_v2_mount(&mountinfo) else {
            tracing::info!("no cgroup2 file system in /proc/self/mountinfo");
            return Ok(None);
        };
        let Some(own) = own_v2_path(&own_cgroup) else {
            tracing::info!("the daemon is in no cgroup v2 (no 0:: line in /proc/self/cgroup)");
            return Ok(None);
        };
        let started_in = own.clone();
        let own = owning_cgroup(&own, instance).to_owned();
        let Some(under_mount) = path_under_mount(&mount.root, &own) else {
            tracing::info!(
                own,
                mount_root = mount.root,
                "the daemon's cgroup is outside the mounted cgroup2 subtree"
            );
            return Ok(None);
        };
        let root = CgroupRoot {
            dir: join_cgroup(&mount.mount_point, under_mount).join(instance),
            cgroup_path: join_cgroup_path(&own, instance),
            started_in,
        };
        create_dir(&root.dir)?;
        tracing::debug!(dir = %root.dir.display(), cgroup = root.cgroup_path, "cgroup root ready");
        Ok(Some(root))
    }

    /// A root at `dir`, which `/proc/PID/cgroup` calls `cgroup_path`;
    /// no I/O. For tests and for callers that found the tree themselves.
    /// The daemon is taken to have started in the parent of `cgroup_path`.
    pub fn at(dir: impl Into<PathBuf>, cgroup_path: impl Into<String>) -> CgroupRoot {
        let cgroup_path = cgroup_path.into();
        let started_in = match cgroup_path.rsplit_once('/') {
            Some(("", _)) | None => "/".to_owned(),
            Some((parent, _)) => parent.to_owned(),
        };
        CgroupRoot {
            dir: dir.into(),
            cgroup_path,
            started_in,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// This cgroup as `/proc/PID/cgroup` names it.
    pub fn cgroup_path(&self) -> &str {
        &self.cgroup_path
    }

    /// The daemon's own cgroup when it found the tree (before
    /// [`CgroupRoot::delegate_controllers`] moved it), as
    /// `/proc/PID/cgroup` names it.
    pub fn started_in(&self) -> &str {
        &self.started_in
    }

    /// The instance's name: the last component of its cgroup.
    pub fn instance(&self) -> &str {
        self.cgroup_path
            .rsplit_once('/')
            .map_or(self.cgroup_path.as_str(), |(_, name)| name)
    }

    /// Creates, or opens if it exists, the cgroup of app `name`.
    pub fn app(&self, name: &str) -> Result<AppCgroup, CgroupError> {
        open_child(&self.dir, &self.cgroup_path, name)
    }

    /// App cgroups already present, sorted: at start-up these are what an
    /// earlier daemon left behind.
    pub fn existing_apps(&self) -> Result<Vec<String>, CgroupError> {
        let mut names = child_names(&self.dir)?;
        names.sort();
        Ok(names)
    }

    /// Kills every leftover app cgroup, waits up to `within` (e.g. 5 s) for
    /// all of them to empty, and removes them. One stuck cgroup does not
    /// keep the others from being reaped; it is reported in `failed`.
    /// An app of `keep` (adopted after a crash) keeps its cgroup and the
    /// leaf `keep` names for it: only its other leaves go.
    pub async fn reap_leftovers(
        &self,
        watcher: &CgroupWatcher,
        within: Duration,
        keep: &BTreeMap<String, String>,
    ) -> Result<ReapReport, CgroupError> {
        let mut report = ReapReport::default();
        let mut pending = Vec::new();
        let mut doomed = Vec::new();
        for name in self.existing_apps()? {
            match keep.get(&name) {
                // An adopted app: only its other leaves go.
                Some(leaf) => match self.app(&name).and_then(|app| app.children()) {
                    Ok(children) => doomed.extend(
                        children
                            .into_iter()
                            .filter(|c| c.name() != *leaf)
                            .map(|c| (format!("{name}/{}", c.name()), c)),
                    ),
                    Err(error) => report.failed.push(error),
                },
                None => match self.app(&name) {
                    Ok(app) => doomed.push((name, app)),
                    Err(error) => report.failed.push(error),
                },
            }
        }
        for (name, app) in doomed {
            let kill = || {
                // Watch before killing so the transition to empty is not missed.
                let populated = watcher.watch(&app)?;
                let killed = app.all_pids()?.len();
                app.kill()?;
                tracing::debug!(app = name, killed, "killing a leftover app cgroup");
                Ok::<_, CgroupError>((name.clone(), app, populated, killed))
            };
            match kill() {
                Ok(entry) => pending.push(entry),
                Err(error) => report.failed.push(error),
            }
        }
        let deadline = tokio::time::Instant::now() + within;
        for (name, app, mut populated, killed) in pending {
            let emptied = tokio::time::timeout_at(deadline, populated.wait_for(false)).await;
            let outcome = match emptied {
                Ok(true) => app.remove(),
                // The watcher went away: ask the kernel directly.
                Ok(false) => match app.is_populated() {
                    Ok(false) => app.remove(),
                    Ok(true) => Err(CgroupError::WatcherGone),
                    Err(error) => Err(error),
                },
                Err(_elapsed) => Err(CgroupError::StillPopulated {
                    path: app.dir.to_path_buf(),
                    after: within,
                }),
            };
            match outcome {
                Ok(()) => report.reaped.push(Reaped { name, killed }),
                Err(error) => report.failed.push(error),
            }
        }
        Ok(report)
    }

    /// Removes the instance cgroup; fails while app cgroups remain in it.
    pub fn remove(&self) -> Result<(), CgroupError> {
        remove_dir(&self.dir)
    }

    /// Makes `[limits]` possible on cgroup v2: enables the controllers of
    /// [`V2_CONTROLLERS`] that the daemon's own cgroup offers for the app
    /// cgroups, in the own cgroup's `cgroup.subtree_control` and then the
    /// instance's. The kernel allows that only in a cgroup with no
    /// processes of its own (the root excepted), so the daemon first moves
    /// itself into a leaf beside the instance, `<instance>-daemon`: the
    /// layout systemd expects of a service with `Delegate=yes`.
    ///
    /// Returns the controllers app cgroups now have; none, and nothing
    /// touched, when the own cgroup offers none (a hybrid host, whose
    /// limits go to the v1 hierarchies).
    pub fn delegate_controllers(&self) -> Result<Vec<&'static str>, CgroupError> {
        let own = self.dir.parent().ok_or_else(|| CgroupError::Malformed {
            path: self.dir.clone(),
            contents: "an instance cgroup without a parent".to_owned(),
        })?;
        let offered = read_to_string(own.join("cgroup.controllers"))?;
        let wanted = missing_controllers(&offered, "");
        if wanted.is_empty() {
            return Ok(wanted);
        }
        let own_missing = missing_controllers(
            &offered,
            &read_to_string(own.join("cgroup.subtree_control"))?,
        );
        if !own_missing.is_empty() {
            if self
                .cgroup_path
                .rsplit_once('/')
                .is_some_and(|(parent, _)| !parent.is_empty())
            {
                let name = format!(
                    "{}-daemon",
                    self.dir.file_name().unwrap_or_default().to_string_lossy()
                );
                let leaf = own.join(name);
                create_dir(&leaf)?;
                write_file(&leaf.join("cgroup.procs"), &std::process::id().to_string())?;
                tracing::info!(leaf = %leaf.display(), "moved the daemon into its own leaf cgroup");
            }
            write_file(
                &own.join("cgroup.subtree_control"),
                &enable_line(&own_missing),
            )?;
        }
        let instance_missing = missing_controllers(
            &offered,
            &read_to_string(self.dir.join("cgroup.subtree_control"))?,
        );
        if !instance_missing.is_empty() {
            write_file(
                &self.dir.join("cgroup.subtree_control"),
                &enable_line(&instance_missing),
            )?;
        }
        Ok(wanted)
    }
}

/// Whether a service manager restarting this daemon after a crash would
/// have to put it where the kernel refuses it, so that the restart fails
/// (systemd: status 219/CGROUP) while the apps run on unsupervised,
/// unless the unit kills them with the daemon (`KillMode=mixed`).
///
/// That is the case when the daemon runs under systemd (`under_systemd`:
/// `INVOCATION_ID` or `NOTIFY_SOCKET` set), hands the apps v2
/// `controllers` (enabled in the cgroup the apps' subtree hangs from,
/// which the kernel's no-internal-process rule then closes to processes),
/// and systemd started it in that very cgroup, `started_in`, rather than
/// in the leaf `<instance>-daemon` beside the subtree, where systemd 254's
/// `DelegateSubgroup=` starts it. A daemon that a hand-off started
/// (`handed_over`) inherits the leaf its predecessor moved into, which
/// says nothing of where systemd starts one: it is not asked.
pub fn crash_restart_blocked(
    under_systemd: bool,
    handed_over: bool,
    started_in: &str,
    instance: &str,
    controllers: &[&str],
) -> bool {
    under_systemd
        && !handed_over
        && !controllers.is_empty()
        && started_in != "/"
        && owning_cgroup(started_in, instance) == started_in
}

/// The cgroup v2 controllers `[limits]` uses, in the kernel's order.
pub const V2_CONTROLLERS: [&str; 3] = ["cpu", "memory", "pids"];

/// Those of [`V2_CONTROLLERS`] that `offered` (a `cgroup.controllers`) has
/// and `enabled` (a `cgroup.subtree_control`) lacks.
fn missing_controllers(offered: &str, enabled: &str) -> Vec<&'static str> {
    V2_CONTROLLERS
        .into_iter()
        .filter(|c| offered.split_whitespace().any(|o| o == *c))
        .filter(|c| !enabled.split_whitespace().any(|e| e == *c))
        .collect()
}

/// `+cpu +memory`: what `cgroup.subtree_control` takes, in one write.
fn enable_line(controllers: &[&str]) -> String {
    controllers
        .iter()
        .map(|c| format!("+{c}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// One app's cgroup. Dropping it leaves the cgroup in place; see
/// [`AppCgroup::remove`].
///
/// Boxed paths, without spare capacity, and no copy of the name (the
/// last component of `dir`): every app holds two, its own and its
/// instance's.
#[derive(Debug, Clone)]
pub struct AppCgroup {
    dir: Box<Path>,
    /// The same cgroup as `/proc/PID/cgroup` names it.
    cgroup_path: Box<str>,
}

impl AppCgroup {
    /// Made of a checked name ([`check_name`]): ASCII, the last
    /// component of `dir`.
    pub fn name(&self) -> &str {
        self.dir
            .file_name()
            .and_then(|name| name.to_str())
            .unwrap_or_default()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// This cgroup as `/proc/PID/cgroup` names it.
    pub fn cgroup_path(&self) -> &str {
        &self.cgroup_path
    }

    /// `cgroup.procs`: writing a pid there moves that process in.
    pub fn procs_path(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }

    /// `cgroup.events`, whose `populated` line [`CgroupWatcher`] follows.
    pub fn events_path(&self) -> PathBuf {
        self.dir.join("cgroup.events")
    }

    /// Moves process `pid` (and, later, its children) into this cgroup.
    pub fn add_pid(&self, pid: u32) -> Result<(), CgroupError> {
        write_file(&self.procs_path(), &pid.to_string())
    }

    /// Whether any process is left in this cgroup or below it.
    pub fn is_populated(&self) -> Result<bool, CgroupError> {
        read_populated(&self.events_path())
    }

    /// Creates, or opens if it exists, the child cgroup `name`: each
    /// instance of an app runs in its own, so that during a start-stop
    /// restart the old one can be stopped without touching the new one.
    pub fn child(&self, name: &str) -> Result<AppCgroup, CgroupError> {
        open_child(&self.dir, &self.cgroup_path, name)
    }

    /// The child cgroups that exist now.
    pub fn children(&self) -> Result<Vec<AppCgroup>, CgroupError> {
        Ok(child_names(&self.dir)?
            .into_iter()
            .map(|name| AppCgroup {
                dir: self.dir.join(&name).into(),
                cgroup_path: join_cgroup_path(&self.cgroup_path, &name).into(),
            })
            .collect())
    }

    /// Every process in this cgroup and the cgroups below it.
    pub fn all_pids(&self) -> Result<Vec<u32>, CgroupError> {
        let mut pids = self.pids()?;
        for child in self.children()? {
            pids.extend(child.all_pids()?);
        }
        Ok(pids)
    }

    /// The processes directly in this cgroup.
    pub fn pids(&self) -> Result<Vec<u32>, CgroupError> {
        let path = self.procs_path();
        let contents = read_to_string(&path)?;
        contents
            .lines()
            .map(|line| {
                line.trim().parse().map_err(|_| CgroupError::Malformed {
                    path: path.clone(),
                    contents: contents.clone(),
                })
            })
            .collect()
    }

    /// SIGKILLs every process in the cgroup, forks in flight included.
    ///
    /// Uses `cgroup.kill` (Linux 5.14+), which the kernel applies to the
    /// whole subtree atomically. Older kernels get repeated passes over
    /// `cgroup.procs` until it reads empty; that fallback may block for up
    /// to about 100 ms. Either way, wait for emptiness with
    /// [`CgroupWatcher::watch`] before [`AppCgroup::remove`].
    pub fn kill(&self) -> Result<(), CgroupError> {
        let kill_file = self.dir.join("cgroup.kill");
        match write_file(&kill_file, "1") {
            Ok(()) => return Ok(()),
            Err(CgroupError::Write { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                tracing::debug!(cgroup = %self.dir.display(), "no cgroup.kill, killing pid by pid");
            }
            Err(error) => return Err(error),
        }
        // A process can fork between our read of cgroup.procs and its
        // SIGKILL; its child is in the cgroup before fork returns, so the
        // next pass sees it. Once SIGKILL is pending, fork fails.
        for _ in 0..100 {
            if self.signal_all(Signal::SIGKILL)? == 0 {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }

    /// Sends `signal` to every process in the cgroup and below it; returns
    /// how many were signalled. Processes that exit meanwhile are skipped.
    pub fn signal_all(&self, signal: Signal) -> Result<usize, CgroupError> {
        let mut signalled = 0;
        for pid in self.all_pids()? {
            let raw = i32::try_from(pid).map_err(|_| CgroupError::Malformed {
                path: self.procs_path(),
                contents: pid.to_string(),
            })?;
            match kill(Pid::from_raw(raw), signal) {
                Ok(()) => signalled += 1,
                Err(Errno::ESRCH) => {}
                Err(source) => {
                    return Err(CgroupError::Signal {
                        path: self.dir.to_path_buf(),
                        pid,
                        signal,
                        source,
                    })
                }
            }
        }
        Ok(signalled)
    }

    /// Whether process `pid` is in this cgroup or below it, from
    /// `/proc/PID/cgroup`. `false` when the process is gone. Used to accept a
    /// `NOTIFY_SOCKET` datagram only from the app it was meant for.
    pub fn contains_pid(&self, pid: u32) -> bool {
        fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .ok()
            .and_then(|contents| own_v2_path(&contents))
            .is_some_and(|path| is_same_or_below(&path, &self.cgroup_path))
    }

    /// Removes the cgroup and its (empty) child cgroups; the kernel refuses
    /// while a process is left (`EBUSY`). Removing one that is already gone
    /// succeeds.
    pub fn remove(&self) -> Result<(), CgroupError> {
        // Usually the leaves went first and one rmdir does it; the kernel
        // says EBUSY while a child cgroup (or a process) is left.
        match fs::remove_dir(&self.dir) {
            Ok(()) => return Ok(()),
            Err(source) if source.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(source) if matches!(source.raw_os_error(), Some(libc::EBUSY | libc::ENOTEMPTY)) => {
            }
            Err(source) => {
                return Err(CgroupError::Remove {
                    path: self.dir.to_path_buf(),
                    source,
                })
            }
        }
        match self.children() {
            Ok(children) => {
                for child in children {
                    child.remove()?;
                }
            }
            // Already gone: nothing below it either.
            Err(CgroupError::Read { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
        remove_dir(&self.dir)
    }
}

/// Instance and app names become directory names next to the kernel's
/// interface files, which all contain a dot: allow no dot, no slash.
pub(super) fn check_name(name: &str) -> Result<(), CgroupError> {
    let valid = !name.is_empty()
        && name.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(CgroupError::InvalidName {
            name: name.to_owned(),
        })
    }
}

/// Creates, or opens if it exists, the cgroup `name` under `dir`, which
/// `/proc/PID/cgroup` calls `cgroup_path`.
fn open_child(dir: &Path, cgroup_path: &str, name: &str) -> Result<AppCgroup, CgroupError> {
    check_name(name)?;
    let child = AppCgroup {
        dir: dir.join(name).into(),
        cgroup_path: join_cgroup_path(cgroup_path, name).into(),
    };
    create_dir(&child.dir)?;
    Ok(child)
}

/// The names of the cgroups directly under `dir`, in directory order.
/// Interface files all contain a dot and a valid name never does, so
/// anything else is a cgroup someone else made: it is left out.
fn child_names(dir: &Path) -> Result<Vec<String>, CgroupError> {
    let read_error = |source| CgroupError::Read {
        path: dir.to_owned(),
        source,
    };
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(read_error)? {
        let entry = entry.map_err(read_error)?;
        if !entry.file_type().map_err(read_error)?.is_dir() {
            continue;
        }
        match entry.file_name().into_string() {
            Ok(name) if check_name(&name).is_ok() => names.push(name),
            _ => tracing::debug!(entry = ?entry.file_name(), "ignoring foreign cgroup"),
        }
    }
    Ok(names)
}

/// `path` (from `/proc/PID/cgroup`) is `cgroup` or one of its descendants.
fn is_same_or_below(path: &str, cgroup: &str) -> bool {
    match path.strip_prefix(cgroup) {
        Some(rest) => rest.is_empty() || rest.starts_with('/') || cgroup == "/",
        None => false,
    }
}

fn join_cgroup(mount_point: &Path, cgroup: &str) -> PathBuf {
    mount_point.join(cgroup.trim_start_matches('/'))
}

/// The cgroup the instance's subtree hangs from, given the daemon's own:
/// its parent when the daemon already sits in the leaf
/// `<instance>-daemon` beside the subtree (it moved there itself before
/// a hand-off exec'd it again, or systemd's `DelegateSubgroup=` put a
/// restarted daemon there), otherwise the own cgroup itself.
fn owning_cgroup<'a>(own: &'a str, instance: &str) -> &'a str {
    match own.rsplit_once('/') {
        Some((parent, leaf)) if leaf == format!("{instance}-daemon") => {
            if parent.is_empty() {
                "/"
            } else {
                parent
            }
        }
        _ => own,
    }
}

fn join_cgroup_path(parent: &str, name: &str) -> String {
    format!("{}/{name}", parent.trim_end_matches('/'))
}

/// Parses the `populated 0|1` line of a `cgroup.events` file.
pub(super) fn read_populated(events: &Path) -> Result<bool, CgroupError> {
    let contents = read_to_string(events)?;
    parse_populated(&contents).ok_or_else(|| CgroupError::Malformed {
        path: events.to_owned(),
        contents,
    })
}

fn parse_populated(events: &str) -> Option<bool> {
    events.lines().find_map(|line| match line.trim() {
        "populated 0" => Some(false),
        "populated 1" => Some(true),
        _ => None,
    })
}

pub(super) fn read_to_string(path: impl AsRef<Path>) -> Result<String, CgroupError> {
    fs::read_to_string(path.as_ref()).map_err(|source| CgroupError::Read {
        path: path.as_ref().to_owned(),
        source,
    })
}

/// Writes to an existing kernel file: never creates it, and writes the value
/// in one `write(2)` as cgroupfs expects.
pub(super) fn write_file(path: &Path, value: &str) -> Result<(), CgroupError> {
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut file| file.write_all(value.as_bytes()))
        .map_err(|source| CgroupError::Write {
            path: path.to_owned(),
            source,
        })
}

/// Creates the cgroup `path`, or finds it there: true when made now.
pub(super) fn create_dir(path: &Path) -> Result<bool, CgroupError> {
    match fs::create_dir(path) {
        Ok(()) => Ok(true),
        Err(source) if source.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(source) => Err(CgroupError::Create {
            path: path.to_owned(),
            source,
        }),
    }
}

pub(super) fn remove_dir(path: &Path) -> Result<(), CgroupError> {
    match fs::remove_dir(path) {
        Err(source) if source.kind() != io::ErrorKind::NotFound => Err(CgroupError::Remove {
            path: path.to_owned(),
            source,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_daemon_in_its_own_leaf_hangs_the_subtree_from_the_parent() {
        let cases = [
            (
                "/system.slice/appvisord.service",
                "appvisor",
                "/system.slice/appvisord.service",
            ),
            (
                "/system.slice/appvisord.service/appvisor-daemon",
                "appvisor",
                "/system.slice/appvisord.service",
            ),
            ("/x/other-daemon", "appvisor", "/x/other-daemon"),
            ("/appvisor-daemon", "appvisor", "/"),
            ("/", "appvisor", "/"),
        ];
        for (own, instance, expected) in cases {
            assert_eq!(owning_cgroup(own, instance), expected, "{own}");
        }
    }

    #[test]
    fn a_restart_is_blocked_only_for_a_daemon_systemd_put_beside_delegated_apps() {
        let unit = "/system.slice/appvisord.service";
        let leaf = "/system.slice/appvisord.service/appvisor-daemon";
        let all = ["cpu", "memory", "pids"];
        // Debian 12 on pure cgroup v2: systemd 252 starts the daemon in
        // the unit's cgroup, which it must leave to enable controllers.
        assert!(crash_restart_blocked(true, false, unit, "appvisor", &all));
        assert!(crash_restart_blocked(
            true,
            false,
            unit,
            "appvisor",
            &["pids"]
        ));
        // DelegateSubgroup=appvisor-daemon (systemd 254+).
        assert!(!crash_restart_blocked(true, false, leaf, "appvisor", &all));
        // Hybrid: controllers in v1, nothing enabled in the v2 unit cgroup.
        assert!(!crash_restart_blocked(true, false, unit, "appvisor", &[]));
        // Not under systemd: whatever restarts it is not systemd.
        assert!(!crash_restart_blocked(false, false, unit, "appvisor", &all));
        // Started by a hand-off: in the leaf its predecessor moved into.
        assert!(!crash_restart_blocked(true, true, leaf, "appvisor", &all));
        assert!(!crash_restart_blocked(true, true, unit, "appvisor", &all));
        // Another instance's leaf is not this daemon's.
        assert!(crash_restart_blocked(true, false, leaf, "other", &all));
        // The root cgroup takes processes whatever it enables.
        assert!(!crash_restart_blocked(true, false, "/", "appvisor", &all));
    }

    #[test]
    fn a_root_knows_where_the_daemon_started() {
        let root = CgroupRoot::at("/x", "/system.slice/appvisord.service/appvisor");
        assert_eq!(root.started_in(), "/system.slice/appvisord.service");
        assert_eq!(root.instance(), "appvisor");
        assert_eq!(CgroupRoot::at("/x", "/avi").started_in(), "/");
    }

    #[test]
    fn finds_the_controllers_to_enable() {
        assert_eq!(
            missing_controllers("cpuset cpu io memory hugetlb pids rdma misc\n", ""),
            ["cpu", "memory", "pids"]
        );
        assert_eq!(
            missing_controllers("cpu io memory pids", "memory io"),
            ["cpu", "pids"]
        );
        assert_eq!(missing_controllers("io memory", ""), ["memory"]);
        assert!(
            missing_controllers("", "").is_empty(),
            "a hybrid host offers none"
        );
        assert!(missing_controllers("cpu memory pids", "cpu memory pids\n").is_empty());
        assert_eq!(enable_line(&["cpu", "pids"]), "+cpu +pids");
    }

    /// A directory tree shaped like cgroupfs (regular files stand in for
    /// the kernel's): `own/cgroup.*`, `own/<instance>/cgroup.*` and the
    /// leaf's `cgroup.procs`, as the kernel would create them.
    fn fake_tree(offered: &str, own_enabled: &str) -> (tempfile::TempDir, CgroupRoot) {
        let tmp = tempfile::tempdir().unwrap();
        let own = tmp.path().join("system.slice/appvisord.service");
        for dir in [own.join("avi"), own.join("avi-daemon")] {
            fs::create_dir_all(&dir).unwrap();
            for file in [
                "cgroup.procs",
                "cgroup.subtree_control",
                "cgroup.controllers",
            ] {
                fs::write(dir.join(file), "").unwrap();
            }
        }
        fs::write(own.join("cgroup.controllers"), offered).unwrap();
        fs::write(own.join("cgroup.subtree_control"), own_enabled).unwrap();
        let root = CgroupRoot::at(own.join("avi"), "/system.slice/appvisord.service/avi");
        (tmp, root)
    }

    #[test]
    fn delegation_moves_the_daemon_out_and_enables_controllers_on_the_way_down() {
        let (tmp, root) = fake_tree("cpuset cpu io memory pids\n", "");
        assert_eq!(
            root.delegate_controllers().unwrap(),
            ["cpu", "memory", "pids"]
        );
        let own = tmp.path().join("system.slice/appvisord.service");
        let read = |path: &str| fs::read_to_string(own.join(path)).unwrap();
        assert_eq!(
            read("avi-daemon/cgroup.procs"),
            std::process::id().to_string()
        );
        assert_eq!(read("cgroup.subtree_control"), "+cpu +memory +pids");
        assert_eq!(read("avi/cgroup.subtree_control"), "+cpu +memory +pids");
    }

    #[test]
    fn delegation_stays_put_where_the_controllers_are_enabled_already() {
        let (tmp, root) = fake_tree("cpu memory pids\n", "cpu memory pids\n");
        assert_eq!(
            root.delegate_controllers().unwrap(),
            ["cpu", "memory", "pids"]
        );
        let own = tmp.path().join("system.slice/appvisord.service");
        let read = |path: &str| fs::read_to_string(own.join(path)).unwrap();
        assert_eq!(
            read("avi-daemon/cgroup.procs"),
            "",
            "the daemon did not move"
        );
        assert_eq!(read("avi/cgroup.subtree_control"), "+cpu +memory +pids");
    }

    #[test]
    fn delegation_does_nothing_on_a_hybrid_host() {
        let (tmp, root) = fake_tree("", "");
        assert!(root.delegate_controllers().unwrap().is_empty());
        let own = tmp.path().join("system.slice/appvisord.service");
        for file in [
            "avi-daemon/cgroup.procs",
            "cgroup.subtree_control",
            "avi/cgroup.subtree_control",
        ] {
            assert_eq!(fs::read_to_string(own.join(file)).unwrap(), "", "{file}");
        }
    }

    #[test]
    fn delegation_under_the_root_cgroup_needs_no_move() {
        let tmp = tempfile::tempdir().unwrap();
        let instance = tmp.path().join("avi");
        fs::create_dir(&instance).unwrap();
        for file in ["cgroup.controllers", "cgroup.subtree_control"] {
            fs::write(
                tmp.path().join(file),
                if file == "cgroup.controllers" {
                    "memory pids"
                } else {
                    ""
                },
            )
            .unwrap();
            fs::write(instance.join(file), "").unwrap();
        }
        let root = CgroupRoot::at(&instance, "/avi");
        assert_eq!(root.delegate_controllers().unwrap(), ["memory", "pids"]);
        assert!(
            !tmp.path().join("avi-daemon").exists(),
            "no leaf under the root"
        );
        assert_eq!(
            fs::read_to_string(tmp.path().join("cgroup.subtree_control")).unwrap(),
            "+memory +pids"
        );
    }

    #[test]
    fn parses_populated() {
        let cases = [
            ("populated 1\nfrozen 0\n", Some(true)),
            ("populated 0\nfrozen 0\n", Some(false)),
            ("frozen 0\npopulated 1\n", Some(true)),
            ("frozen 0\n", None),
            ("populated 2\n", None),
            ("", None),
        ];
        for (contents, want) in cases {
            assert_eq!(parse_populated(contents), want, "{contents:?}");
        }
    }

    #[test]
    fn checks_names() {
        for good in ["shop", "a", "my_app-2", "appvisor-test-123", "Upper"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", ".", "..", "a/b", "cgroup.procs", "a b", "é"] {
            assert_eq!(
                check_name(bad).unwrap_err().to_string(),
                format!("invalid cgroup name {bad:?}: use letters, digits, '_' and '-' only"),
            );
        }
        assert!(check_name(&"a".repeat(256)).is_err());
    }

    #[test]
    fn compares_cgroup_paths() {
        let cases = [
            ("/appvisor/shop", "/appvisor/shop", true),
            ("/appvisor/shop/sub", "/appvisor/shop", true),
            ("/appvisor/shopping", "/appvisor/shop", false),
            ("/appvisor", "/appvisor/shop", false),
            ("/", "/appvisor/shop", false),
            ("/anything", "/", true),
        ];
        for (path, cgroup, want) in cases {
            assert_eq!(is_same_or_below(path, cgroup), want, "{path} in {cgroup}");
        }
    }

    #[test]
    fn joins_paths() {
        assert_eq!(
            join_cgroup(Path::new("/sys/fs/cgroup/unified"), "/"),
            PathBuf::from("/sys/fs/cgroup/unified")
        );
        assert_eq!(
            join_cgroup(Path::new("/sys/fs/cgroup"), "/system.slice/a.service"),
            PathBuf::from("/sys/fs/cgroup/system.slice/a.service")
        );
        assert_eq!(join_cgroup_path("/", "appvisor"), "/appvisor");
        assert_eq!(join_cgroup_path("/a/b", "appvisor"), "/a/b/appvisor");
    }

    /// A fake tree in a temp dir: the file-system half of the API works on
    /// any directory, which keeps these tests free of root.
    #[test]
    fn lists_and_opens_app_cgroups_in_a_fake_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let root = CgroupRoot::at(tmp.path(), "/appvisor");
        for name in ["web", "api"] {
            fs::create_dir(tmp.path().join(name)).unwrap();
        }
        fs::write(tmp.path().join("cgroup.procs"), "").unwrap();
        fs::create_dir(tmp.path().join("foreign.scope")).unwrap();
        assert_eq!(root.existing_apps().unwrap(), ["api", "web"]);

        let web = root.app("web").unwrap();
        assert_eq!(web.cgroup_path(), "/appvisor/web");
        assert_eq!(web.procs_path(), tmp.path().join("web/cgroup.procs"));
        fs::write(web.procs_path(), "12\n345\n").unwrap();
        fs::write(web.events_path(), "populated 1\nfrozen 0\n").unwrap();
        assert_eq!(web.pids().unwrap(), [12, 345]);
        assert!(web.is_populated().unwrap());

        fs::write(web.procs_path(), "12\nx\n").unwrap();
        assert_eq!(
            web.pids().unwrap_err().to_string(),
            format!(
                "unexpected contents in {}: \"12\\nx\\n\"",
                web.procs_path().display()
            )
        );

        let new = root.app("new").unwrap();
        assert!(new.dir().is_dir());
        new.remove().unwrap();
        new.remove().unwrap();
        assert!(!new.dir().exists());
    }
}
