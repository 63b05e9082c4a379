//! `[limits]` memory, tasks and cpu, written to the app's cgroups, and the
//! memory cgroup's count of OOM kills.
//!
//! Each controller is set where the kernel offers it: in the app's v2
//! cgroup when the v2 tree has the controller enabled there, otherwise in
//! the v1 hierarchy of that controller (hybrid hosts, whose v2 tree has no
//! controllers). v1 app cgroups mirror the v2 layout,
//! `<v1 mount><daemon's own v1 cgroup>/<instance>/<app>`; the exec helper
//! joins them through the plan's `extra_cgroup_procs` (their `tasks` files).
//!
//! This module never kills (the v2 cgroup's `cgroup.kill` empties the v1
//! cgroups too, since they hold the same processes) and never touches a
//! cgroup outside its instance directories.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::tree::{check_name, create_dir, read_to_string, remove_dir, write_file};
use super::CgroupError;
use crate::config::LimitSpec;

/// The CFS period used for `cpu`: 100 ms, the kernel's default.
pub const CPU_PERIOD_US: u64 = 100_000;

/// A controller appvisor sets limits with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Controller {
    Memory,
    Pids,
    Cpu,
}

impl Controller {
    const ALL: [Controller; 3] = [Controller::Memory, Controller::Pids, Controller::Cpu];

    pub fn as_str(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Pids => "pids",
            Controller::Cpu => "cpu",
        }
    }
}

/// A v1 hierarchy as `/proc/self/mountinfo` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct V1Mount {
    pub(crate) mount_point: PathBuf,
    pub(crate) root: String,
    pub(crate) controllers: Vec<String>,
}

/// The v1 `cgroup` mounts of `mountinfo`, with their controllers (the
/// super options other than `rw`, `ro` and `name=`).
pub(crate) fn parse_v1_mounts(mountinfo: &str) -> Vec<V1Mount> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let mut after = after.split(' ');
            if after.next()? != "cgroup" {
                return None;
            }
            let super_options = after.nth(1)?;
            let mut fields = before.split(' ');
            let root = fields.nth(3)?.to_owned();
            let mount_point = PathBuf::from(fields.next()?);
            let controllers = super_options
                .split(',')
                .filter(|o| !matches!(*o, "rw" | "ro") && !o.starts_with("name="))
                .map(str::to_owned)
                .collect();
            Some(V1Mount {
                mount_point,
                root,
                controllers,
            })
        })
        .collect()
}

/// The daemon's cgroup in the v1 hierarchy carrying `controller`, from
/// `/proc/self/cgroup` (`4:memory:/path`, `1:cpu,cpuacct:/path`).
pub(crate) fn own_v1_path(proc_self_cgroup: &str, controller: &str) -> Option<String> {
    proc_self_cgroup.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let _id = parts.next()?;
        let controllers = parts.next()?;
        let path = parts.next()?;
        controllers
            .split(',')
            .any(|c| c == controller)
            .then(|| path.to_owned())
    })
}

/// Where limits can be written: the v1 instance directories found at
/// start-up. Empty on pure v2 hosts.
#[derive(Debug, Clone, Default)]
pub struct LimitRoot {
    /// Shared with every app's [`AppLimits`].
    v1: Vec<(Controller, Arc<Path>)>,
}

impl LimitRoot {
    /// Finds the v1 memory, pids and cpu hierarchies the daemon is in and
    /// creates `<instance>` in each. A hierarchy that cannot be used is
    /// logged and skipped: its limits then fail at spawn, with the reason.
    pub fn detect(instance: &str) -> Result<LimitRoot, CgroupError> {
        check_name(instance)?;
        let mountinfo = read_to_string("/proc/self/mountinfo")?;
        let own = read_to_string("/proc/self/cgroup")?;
        let mounts = parse_v1_mounts(&mountinfo);
        let mut v1 = Vec::new();
        for controller in Controller::ALL {
            let name = controller.as_str();
            let Some(mount) = mounts
                .iter()
                .find(|m| m.controllers.iter().any(|c| c == name))
            else {
                continue;
            };
            let Some(own_path) = own_v1_path(&own, name) else {
                continue;
            };
            let Some(under) = super::discover::path_under_mount(&mount.root, &own_path) else {
                tracing::info!(
                    controller = name,
                    own_path,
                    "own v1 cgroup outside its mount"
                );
                continue;
            };
            let dir = mount
                .mount_point
                .join(under.trim_start_matches('/'))
                .join(instance);
            match create_dir(&dir) {
                Ok(_) => v1.push((controller, Arc::from(dir))),
                Err(error) => tracing::info!(controller = name, %error, "v1 hierarchy unusable"),
            }
        }
        tracing::debug!(?v1, "v1 limit hierarchies");
        Ok(LimitRoot { v1 })
    }

    /// Whether a v1 hierarchy carries `controller`.
    pub fn has_v1(&self, controller: Controller) -> bool {
        self.v1.iter().any(|(c, _)| *c == controller)
    }

    /// A root over the given v1 instance directories; no I/O (tests).
    pub fn at(v1: Vec<(Controller, PathBuf)>) -> LimitRoot {
        LimitRoot {
            v1: v1
                .into_iter()
                .map(|(controller, dir)| (controller, Arc::from(dir)))
                .collect(),
        }
    }

    /// Removes the instance directories [`LimitRoot::detect`] made, at a
    /// clean exit once every app's limit cgroups are gone. Each is tried;
    /// the first failure (a directory still holding an app's cgroup) is
    /// returned.
    pub fn remove(&self) -> Result<(), CgroupError> {
        let mut first = Ok(());
        for (_, dir) in &self.v1 {
            if let Err(error) = remove_dir(dir) {
                if first.is_ok() {
                    first = Err(error);
                }
            }
        }
        first
    }

    /// The limit cgroups of app `name`, whose v2 cgroup is `v2_dir`.
    /// Creates nothing yet; see [`AppLimits::apply`].
    pub fn app(&self, name: &str, v2_dir: Option<&Path>) -> Result<AppLimits, CgroupError> {
        check_name(name)?;
        let v2_controllers = match v2_dir {
            Some(dir) => fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default(),
            None => String::new(),
        };
        // One copy of the v2 directory for the controllers there, if any.
        let mut v2: Option<Arc<Path>> = None;
        let mut places = Vec::with_capacity(Controller::ALL.len());
        for controller in Controller::ALL {
            let in_v2 = v2_controllers
                .split_whitespace()
                .any(|c| c == controller.as_str());
            let place = match (in_v2, v2_dir) {
                (true, Some(dir)) => {
                    Some(Place::V2(v2.get_or_insert_with(|| Arc::from(dir)).clone()))
                }
                _ => self
                    .v1
                    .iter()
                    .find(|(c, _)| *c == controller)
                    .map(|(_, root)| Place::V1(root.clone())),
            };
            if let Some(place) = place {
                places.push((controller, place));
            }
        }
        Ok(AppLimits {
            name: name.into(),
            places: places.into_boxed_slice(),
        })
    }
}

/// Where a controller of one app is. Shared paths rather than each app's
/// own: a thousand apps would otherwise hold three long paths each.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Place {
    /// The app's v2 cgroup.
    V2(Arc<Path>),
    /// The daemon's instance directory in a v1 hierarchy
    /// ([`LimitRoot`]); the app's cgroup is its name below it.
    V1(Arc<Path>),
}

/// A [`Place`] with the app's directory in it.
enum Dir<'a> {
    V2(&'a Path),
    V1(PathBuf),
}

/// Where one app's limits live, controller by controller.
#[derive(Debug, Clone)]
pub struct AppLimits {
    /// The app's name: its cgroup's in each v1 hierarchy.
    name: Box<str>,
    places: Box<[(Controller, Place)]>,
}

impl AppLimits {
    /// Writes `limits` (or "no limit" for an unset key, so a removed key
    /// takes effect at the next start, except to a v1 cgroup made by this
    /// call, which has none), creating the v1 cgroups. Fails when a limit
    /// is set and no hierarchy can carry it.
    pub fn apply(&self, limits: &LimitSpec) -> Result<(), CgroupError> {
        let wanted = [
            (Controller::Memory, limits.memory.is_some()),
            (Controller::Pids, limits.tasks.is_some()),
            (Controller::Cpu, limits.cpu.is_some()),
        ];
        for (controller, set) in wanted {
            if set && self.place(controller).is_none() {
                return Err(CgroupError::NoController {
                    controller: controller.as_str(),
                });
            }
        }
        for (controller, place) in &self.places {
            let place = self.dir(place);
            let set = match controller {
                Controller::Memory => limits.memory.is_some(),
                Controller::Pids => limits.tasks.is_some(),
                Controller::Cpu => limits.cpu.is_some(),
            };
            let made_now = match &place {
                // Without a CPU limit the exec helper joins no v1 cpu
                // cgroup (`extra_procs`), so none is made: a cgroup
                // directory is one of the dearest things a spawn makes.
                // One made for a limit removed since gets "no limit"
                // below, as before.
                Dir::V1(dir) if *controller == Controller::Cpu && !set => {
                    if !dir.exists() {
                        continue;
                    }
                    false
                }
                Dir::V1(dir) => create_dir(dir)?,
                Dir::V2(_) => false,
            };
            // A v1 cgroup made a moment ago has no limit: "no limit" need
            // not be written (for memory, a stat and three writes an app).
            if made_now && !set {
                continue;
            }
            match (controller, place) {
                (Controller::Memory, Dir::V2(dir)) => {
                    let max = limits.memory.map_or("max".to_owned(), |b| b.to_string());
                    write_file(&dir.join("memory.max"), &max)?;
                    // Swap would let the app exceed its limit unnoticed.
                    let swap = dir.join("memory.swap.max");
                    if swap.exists() {
                        let value = if limits.memory.is_some() { "0" } else { "max" };
                        write_file(&swap, value)?;
                    }
                }
                (Controller::Memory, Dir::V1(dir)) => {
                    let limit = limits.memory.map_or("-1".to_owned(), |b| b.to_string());
                    // memsw must never be below the memory limit: lift it,
                    // set the limit, then tie memsw to it.
                    let memsw = dir.join("memory.memsw.limit_in_bytes");
                    let has_memsw = memsw.exists();
                    if has_memsw {
                        write_file(&memsw, "-1")?;
                    }
                    write_file(&dir.join("memory.limit_in_bytes"), &limit)?;
                    if has_memsw {
                        write_file(&memsw, &limit)?;
                    }
                }
                (Controller::Pids, place) => {
                    let max = limits.tasks.map_or("max".to_owned(), |n| n.to_string());
                    let dir = match &place {
                        Dir::V2(dir) => dir,
                        Dir::V1(dir) => dir.as_path(),
                    };
                    write_file(&dir.join("pids.max"), &max)?;
                }
                (Controller::Cpu, Dir::V2(dir)) => {
                    let quota = limits
                        .cpu
                        .map_or("max".to_owned(), |p| cpu_quota(p).to_string());
                    write_file(&dir.join("cpu.max"), &format!("{quota} {CPU_PERIOD_US}"))?;
                }
                (Controller::Cpu, Dir::V1(dir)) => {
                    write_file(&dir.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
                    let quota = limits
                        .cpu
                        .map_or("-1".to_owned(), |p| cpu_quota(p).to_string());
                    write_file(&dir.join("cpu.cfs_quota_us"), &quota)?;
                }
            }
        }
        Ok(())
    }

    /// Whether some hierarchy can carry `controller`'s limits for this app.
    pub fn carries(&self, controller: Controller) -> bool {
        self.place(controller).is_some()
    }

    /// The files the exec helper joins besides the v2 cgroup: the `tasks`
    /// file of the app's cgroup in each v1 hierarchy of a limit that is
    /// set, and in the v1 memory hierarchy always, limit or not: the
    /// app's own memory cgroup is what counts its memory
    /// (`appvisor_app_memory_bytes` reads its `memory.usage_in_bytes`, far
    /// cheaper than summing the PSS of every process). The helper writes
    /// "0" there, which moves the writing thread only: the kernel then
    /// takes no global lock, where moving a whole process
    /// (`cgroup.procs`) waits for an RCU grace period, 8 ms and more on a
    /// busy host, at every spawn. The helper is single-threaded, so moving
    /// its thread moves all of it.
    pub fn extra_procs(&self, limits: &LimitSpec) -> Vec<PathBuf> {
        self.places
            .iter()
            .filter(|(controller, _)| match controller {
                Controller::Memory => true,
                Controller::Pids => limits.tasks.is_some(),
                Controller::Cpu => limits.cpu.is_some(),
            })
            .filter_map(|(_, place)| match self.dir(place) {
                Dir::V1(dir) => Some(dir.join("tasks")),
                Dir::V2(_) => None,
            })
            .collect()
    }

    /// How many processes the memory limit has OOM-killed so far; `None`
    /// when unknown (no memory cgroup, or a kernel without the counter).
    pub fn oom_kills(&self) -> Option<u64> {
        let (file, contents) = match self.dir(self.place(Controller::Memory)?) {
            Dir::V2(dir) => (
                "memory.events",
                fs::read_to_string(dir.join("memory.events")),
            ),
            Dir::V1(dir) => (
                "memory.oom_control",
                fs::read_to_string(dir.join("memory.oom_control")),
            ),
        };
        let contents = contents.ok()?;
        let count = parse_oom_kill(&contents);
        if count.is_none() {
            tracing::debug!(file, "no oom_kill counter");
        }
        count
    }

    /// Removes the v1 cgroups; call once the app's processes are gone.
    pub fn remove(&self) -> Result<(), CgroupError> {
        for (_, place) in &self.places {
            if let Dir::V1(dir) = self.dir(place) {
                remove_dir(&dir)?;
            }
        }
        Ok(())
    }

    /// The app's directory at `place`.
    fn dir<'a>(&'a self, place: &'a Place) -> Dir<'a> {
        match place {
            Place::V2(dir) => Dir::V2(dir),
            Place::V1(root) => Dir::V1(root.join(&*self.name)),
        }
    }

    fn place(&self, controller: Controller) -> Option<&Place> {
        self.places
            .iter()
            .find(|(c, _)| *c == controller)
            .map(|(_, p)| p)
    }
}

/// `150` (percent of one CPU) as microseconds per [`CPU_PERIOD_US`].
pub fn cpu_quota(percent: u32) -> u64 {
    u64::from(percent) * CPU_PERIOD_US / 100
}

/// The `oom_kill N` line of `memory.events` (v2) or `memory.oom_control`
/// (v1, Linux 4.13+).
pub fn parse_oom_kill(contents: &str) -> Option<u64> {
    contents.lines().find_map(|line| {
        let (key, value) = line.trim().split_once(' ')?;
        (key == "oom_kill").then(|| value.trim().parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The v1 instance directories go at a clean exit (they were once left
    /// behind).
    #[test]
    fn remove_takes_the_instance_directories_and_reports_what_stays() {
        let tmp = tempfile::tempdir().unwrap();
        let dirs: Vec<(Controller, PathBuf)> = Controller::ALL
            .into_iter()
            .map(|c| (c, tmp.path().join(c.as_str()).join("avi")))
            .collect();
        for (_, dir) in &dirs {
            fs::create_dir_all(dir).unwrap();
        }
        // An app's cgroup still in the pids one.
        fs::create_dir(dirs[1].1.join("shop")).unwrap();
        let root = LimitRoot::at(dirs.clone());
        let error = root.remove().unwrap_err();
        assert!(
            matches!(&error, CgroupError::Remove { path, .. } if *path == dirs[1].1),
            "{error}"
        );
        let left: Vec<bool> = dirs.iter().map(|(_, dir)| dir.exists()).collect();
        assert_eq!(left, [false, true, false], "the others are removed");
        fs::remove_dir(dirs[1].1.join("shop")).unwrap();
        root.remove().unwrap();
        assert!(!dirs[1].1.exists());
        root.remove().unwrap();
    }

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn parses_v1_mounts() {
        let mounts = parse_v1_mounts(HYBRID);
        let got: Vec<(&str, Vec<&str>)> = mounts
            .iter()
            .map(|m| {
                (
                    m.mount_point.to_str().unwrap(),
                    m.controllers.iter().map(String::as_str).collect(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("/sys/fs/cgroup/cpu,cpuacct", vec!["cpu", "cpuacct"]),
                ("/sys/fs/cgroup/memory", vec!["memory"]),
                ("/sys/fs/cgroup/pids", vec!["pids"]),
                ("/sys/fs/cgroup/systemd", vec!["xattr"]),
            ]
        );
    }

    #[test]
    fn finds_the_own_v1_path() {
        let own = "9:name=systemd:/\n4:memory:/process_api/abc\n1:cpu,cpuacct:/x\n0::/\n";
        assert_eq!(
            own_v1_path(own, "memory").as_deref(),
            Some("/process_api/abc")
        );
        assert_eq!(own_v1_path(own, "cpu").as_deref(), Some("/x"));
        assert_eq!(own_v1_path(own, "pids"), None);
    }

    #[test]
    fn parses_oom_kill_counters() {
        let cases = [
            ("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n", Some(3)),
            (
                "low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\noom_group_kill 0\n",
                Some(1),
            ),
            ("oom_kill_disable 0\nunder_oom 0\n", None),
        ];
        for (contents, want) in cases {
            assert_eq!(parse_oom_kill(contents), want, "{contents:?}");
        }
        assert_eq!(cpu_quota(150), 150_000);
        assert_eq!(cpu_quota(50), 50_000);
    }

    /// A fake v1 tree and a fake v2 cgroup with only `pids` enabled.
    #[test]
    fn writes_limits_where_each_controller_lives() {
        let tmp = tempfile::tempdir().unwrap();
        let v1_memory = tmp.path().join("memory/appvisor");
        let v1_cpu = tmp.path().join("cpu/appvisor");
        let v2 = tmp.path().join("unified/appvisor/shop");
        for dir in [&v1_memory, &v1_cpu, &v2] {
            fs::create_dir_all(dir).unwrap();
        }
        fs::write(v2.join("cgroup.controllers"), "pids\n").unwrap();
        fs::write(v2.join("pids.max"), "").unwrap();
        let root = LimitRoot::at(vec![
            (Controller::Memory, v1_memory.clone()),
            (Controller::Cpu, v1_cpu.clone()),
        ]);
        let app = root.app("shop", Some(&v2)).unwrap();
        // Kernel files exist in a real cgroup; the fake needs them made.
        for (dir, files) in [
            (
                v1_memory.join("shop"),
                &["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"][..],
            ),
            (
                v1_cpu.join("shop"),
                &["cpu.cfs_period_us", "cpu.cfs_quota_us"][..],
            ),
        ] {
            fs::create_dir_all(&dir).unwrap();
            for file in files {
                fs::write(dir.join(file), "").unwrap();
            }
        }
        let limits = LimitSpec {
            memory: Some(512 << 20),
            tasks: Some(64),
            cpu: Some(150),
            open_files: None,
        };
        app.apply(&limits).unwrap();
        let read = |p: PathBuf| fs::read_to_string(p).unwrap();
        assert_eq!(
            read(v1_memory.join("shop/memory.limit_in_bytes")),
            "536870912"
        );
        assert_eq!(
            read(v1_memory.join("shop/memory.memsw.limit_in_bytes")),
            "536870912"
        );
        assert_eq!(read(v2.join("pids.max")), "64");
        assert_eq!(read(v1_cpu.join("shop/cpu.cfs_quota_us")), "150000");
        assert_eq!(read(v1_cpu.join("shop/cpu.cfs_period_us")), "100000");
        assert_eq!(
            app.extra_procs(&limits),
            vec![v1_memory.join("shop/tasks"), v1_cpu.join("shop/tasks")]
        );

        // A regular file, unlike a kernel one, keeps old bytes past a short
        // write: empty the fakes first.
        for file in [
            v1_memory.join("shop/memory.limit_in_bytes"),
            v1_memory.join("shop/memory.memsw.limit_in_bytes"),
            v2.join("pids.max"),
            v1_cpu.join("shop/cpu.cfs_quota_us"),
        ] {
            fs::write(file, "").unwrap();
        }
        app.apply(&LimitSpec::default()).unwrap();
        assert_eq!(read(v1_memory.join("shop/memory.limit_in_bytes")), "-1");
        assert_eq!(read(v2.join("pids.max")), "max");
        assert_eq!(read(v1_cpu.join("shop/cpu.cfs_quota_us")), "-1");

        fs::write(
            v1_memory.join("shop/memory.oom_control"),
            "under_oom 0\noom_kill 2\n",
        )
        .unwrap();
        assert_eq!(app.oom_kills(), Some(2));
    }

    /// A v1 cgroup made by this call starts without limits: only the
    /// limits that are set are written to it. (The fake's kernel files do
    /// not exist, so any other write fails.) Made before, it gets "no
    /// limit" written for an unset key, so a removed key takes effect.
    #[test]
    fn a_v1_cgroup_made_now_gets_only_the_limits_that_are_set() {
        let tmp = tempfile::tempdir().unwrap();
        let (memory, pids) = (tmp.path().join("memory/avi"), tmp.path().join("pids/avi"));
        for dir in [&memory, &pids] {
            fs::create_dir_all(dir).unwrap();
        }
        let app = LimitRoot::at(vec![
            (Controller::Memory, memory.clone()),
            (Controller::Pids, pids.clone()),
        ])
        .app("shop", None)
        .unwrap();
        app.apply(&LimitSpec::default()).unwrap();
        for dir in [memory.join("shop"), pids.join("shop")] {
            assert!(dir.is_dir(), "{}", dir.display());
            assert_eq!(fs::read_dir(&dir).unwrap().count(), 0, "{}", dir.display());
        }

        for file in [
            memory.join("shop/memory.limit_in_bytes"),
            memory.join("shop/memory.memsw.limit_in_bytes"),
            pids.join("shop/pids.max"),
        ] {
            fs::write(file, "").unwrap();
        }
        app.apply(&LimitSpec::default()).unwrap();
        let read = |p: PathBuf| fs::read_to_string(p).unwrap();
        assert_eq!(read(memory.join("shop/memory.limit_in_bytes")), "-1");
        assert_eq!(read(memory.join("shop/memory.memsw.limit_in_bytes")), "-1");
        assert_eq!(read(pids.join("shop/pids.max")), "max");
    }

    /// Without a CPU limit no v1 cpu cgroup is made (the helper would not
    /// join it). One left from a limit removed since gets "no limit"
    /// written, so the removal takes effect.
    #[test]
    fn a_v1_cpu_cgroup_is_made_only_for_a_limit() {
        let tmp = tempfile::tempdir().unwrap();
        let v1_cpu = tmp.path().join("cpu/appvisor");
        fs::create_dir_all(&v1_cpu).unwrap();
        let app = LimitRoot::at(vec![(Controller::Cpu, v1_cpu.clone())])
            .app("shop", None)
            .unwrap();
        let quota = v1_cpu.join("shop/cpu.cfs_quota_us");
        let period = v1_cpu.join("shop/cpu.cfs_period_us");
        app.apply(&LimitSpec::default()).unwrap();
        assert!(!v1_cpu.join("shop").exists());

        fs::create_dir(v1_cpu.join("shop")).unwrap();
        fs::write(&quota, "").unwrap();
        fs::write(&period, "").unwrap();
        app.apply(&LimitSpec::default()).unwrap();
        assert_eq!(fs::read_to_string(&quota).unwrap(), "-1");
        assert_eq!(fs::read_to_string(&period).unwrap(), "100000");
    }

    #[test]
    fn a_limit_without_a_hierarchy_is_an_error() {
        let app = LimitRoot::default().app("shop", None).unwrap();
        let limits = LimitSpec {
            tasks: Some(10),
            ..LimitSpec::default()
        };
        assert_eq!(
            app.apply(&limits).unwrap_err().to_string(),
            "no cgroup hierarchy offers the pids controller (on cgroup v2 appvisord hands \
             controllers to apps only as the one process of its cgroup: run it as a systemd \
             service with Delegate=yes)"
        );
        app.apply(&LimitSpec::default()).unwrap();
        assert!(app.extra_procs(&LimitSpec::default()).is_empty());
    }

    /// Every app joins its v1 memory cgroup, limit or not: it is what
    /// counts the app's memory for `/metrics`. The other v1 hierarchies
    /// only for a limit that is set.
    #[test]
    fn every_app_joins_its_v1_memory_cgroup() {
        let tmp = tempfile::tempdir().unwrap();
        let (memory, pids) = (tmp.path().join("memory/avi"), tmp.path().join("pids/avi"));
        let root = LimitRoot::at(vec![
            (Controller::Memory, memory.clone()),
            (Controller::Pids, pids.clone()),
        ]);
        let app = root.app("shop", None).unwrap();
        assert_eq!(
            app.extra_procs(&LimitSpec::default()),
            vec![memory.join("shop/tasks")]
        );
        let tasks = LimitSpec {
            tasks: Some(64),
            ..LimitSpec::default()
        };
        assert_eq!(
            app.extra_procs(&tasks),
            vec![memory.join("shop/tasks"), pids.join("shop/tasks")]
        );
    }
}
