//! [`SandboxPlan`]: the confinement of one spawn, computed in the daemon
//! from the app's `[sandbox]` and `[limits]` and carried to the exec helper
//! inside the `SpawnPlan`.
//!
//! Pure: no I/O. What the daemon learnt from the file system (the venv's
//! base interpreter) comes in as [`SandboxInputs`]. Paths are kept as
//! configured; the helper opens them when it builds the Landlock ruleset, so
//! a `current` symlink is followed at each spawn.
//!
//! [`SYSTEM_PATHS`] is the one reviewed list of what every app may read (or
//! execute) to run Python. Change it only with a reason in its comment: each
//! entry widens every app's sandbox.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{AppSpec, LandlockMode, ListenAddress, NetworkMode};

/// The size of a private `/tmp` when `[limits] memory` does not set one.
/// tmpfs pages are charged to the memory cgroup of the process that writes
/// them, so the memory limit bounds it anyway where one is set.
pub const DEFAULT_TMPFS_SIZE: u64 = 64 << 20;

/// The highest Landlock ABI appvisor uses. Rights a later ABI adds (e.g.
/// resolving Unix socket paths) would be denied by default once handled and
/// break `NOTIFY_SOCKET`, so they wait until they are reviewed here.
pub const MAX_LANDLOCK_ABI: u8 = 7;

/// What a rule lets the app do beneath a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PathAccess {
    /// Read files, list directories, execute programs.
    ReadExecute,
    /// Read files and list directories; nothing is executed from here.
    Read,
    /// Read, create, write, truncate, rename and remove; never execute, so
    /// nothing the app writes can be run directly.
    ReadWrite,
}

impl PathAccess {
    pub fn as_str(self) -> &'static str {
        match self {
            PathAccess::ReadExecute => "read-execute",
            PathAccess::Read => "read",
            PathAccess::ReadWrite => "read-write",
        }
    }
}

/// Why a path is in the ruleset: shown by `appctl security`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RuleOrigin {
    /// [`SYSTEM_PATHS`]; skipped when the host does not have it.
    System,
    /// `command[0]` itself, so a script outside any venv can be executed.
    Command,
    /// The venv holding `command[0]`.
    Venv,
    /// The Python installation the venv's `pyvenv.cfg` names.
    PythonHome,
    /// `directory`.
    Directory,
    /// `sandbox.read_only`.
    ReadOnly,
    /// `sandbox.read_write`.
    ReadWrite,
    /// `/tmp` and `/var/tmp`: private tmpfs mounts, or the host's when
    /// `private_tmp = false`.
    Tmp,
}

impl RuleOrigin {
    pub fn as_str(self) -> &'static str {
        match self {
            RuleOrigin::System => "system",
            RuleOrigin::Command => "command",
            RuleOrigin::Venv => "venv",
            RuleOrigin::PythonHome => "python-home",
            RuleOrigin::Directory => "directory",
            RuleOrigin::ReadOnly => "read_only",
            RuleOrigin::ReadWrite => "read_write",
            RuleOrigin::Tmp => "tmp",
        }
    }

    /// A missing path of this origin is skipped rather than failing the
    /// spawn: the system list covers several distributions.
    pub fn optional(self) -> bool {
        matches!(self, RuleOrigin::System | RuleOrigin::Tmp)
    }
}

/// One Landlock path-beneath rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathRule {
    pub path: PathBuf,
    pub access: PathAccess,
    pub origin: RuleOrigin,
}

/// What the app's Landlock domain allows; everything else the ABI can
/// express is denied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LandlockPlan {
    pub mode: Requirement,
    /// A cap on the ABI used, below the kernel's: `APPVISOR_LANDLOCK_ABI_MAX`,
    /// which exists for tests.
    pub abi_max: Option<u8>,
    pub paths: Vec<PathRule>,
    /// TCP ports the app may bind; empty denies every bind.
    pub bind_ports: Vec<u16>,
    /// TCP ports the app may connect to; `None` leaves connect unrestricted.
    pub connect_ports: Option<Vec<u16>>,
}

/// `landlock = "require" | "best-effort"`, on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Requirement {
    Require,
    BestEffort,
}

/// The namespaces the helper unshares; IPC and UTS are always new.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespacePlan {
    /// A new mount namespace with fresh tmpfs mounts of this many bytes on
    /// `/tmp` and `/var/tmp`.
    pub private_tmp: Option<u64>,
    pub ipc: bool,
    pub uts: bool,
    /// `network = "none"`: a new, empty network namespace.
    pub network: bool,
}

impl NamespacePlan {
    /// No namespace at all: for the helper's own tests.
    pub fn none() -> NamespacePlan {
        NamespacePlan {
            private_tmp: None,
            ipc: false,
            uts: false,
            network: false,
        }
    }
}

/// Everything that confines the app beyond its user and rlimits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxPlan {
    /// `None` only in tests of the helper's other steps.
    pub landlock: Option<LandlockPlan>,
    pub namespaces: NamespacePlan,
}

impl SandboxPlan {
    /// No Landlock and no namespaces (capabilities are dropped regardless):
    /// for tests of the helper's other steps.
    pub fn unconfined() -> SandboxPlan {
        SandboxPlan {
            landlock: None,
            namespaces: NamespacePlan::none(),
        }
    }
}

/// What the daemon contributes to the sandbox besides the app's spec.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SandboxInputs {
    /// `APPVISOR_LANDLOCK_ABI_MAX`, read once at daemon start.
    pub landlock_abi_max: Option<u8>,
    /// `home` from the venv's `pyvenv.cfg` (the base interpreter's `bin`).
    pub python_home: Option<PathBuf>,
}

/// The paths every app may read to run a dynamically linked Python:
/// programs and libraries, the loader's cache, name-service and TLS
/// configuration, time zones, a few device nodes, and the CPU count.
///
/// Not here on purpose: `/etc` as a whole (`shadow`, other apps'
/// configuration), `/home`, `/root`, `/var`, `/srv`, `/run` (other apps'
/// sockets and files), `/proc` as a whole (other processes' command lines),
/// `/dev/shm` (shared with the host).
pub const SYSTEM_PATHS: &[(&str, PathAccess)] = &[
    // Programs, the interpreter, shared libraries, zoneinfo, certificates
    // under /usr/share.
    ("/usr", PathAccess::ReadExecute),
    ("/bin", PathAccess::ReadExecute),
    ("/sbin", PathAccess::ReadExecute),
    ("/lib", PathAccess::ReadExecute),
    ("/lib64", PathAccess::ReadExecute),
    ("/lib32", PathAccess::ReadExecute),
    ("/libx32", PathAccess::ReadExecute),
    // The dynamic loader.
    ("/etc/ld.so.cache", PathAccess::Read),
    ("/etc/ld.so.conf", PathAccess::Read),
    ("/etc/ld.so.conf.d", PathAccess::Read),
    // Name service: getpwuid (Python's `pwd`, `~` expansion), getaddrinfo.
    ("/etc/passwd", PathAccess::Read),
    ("/etc/group", PathAccess::Read),
    ("/etc/nsswitch.conf", PathAccess::Read),
    ("/etc/hosts", PathAccess::Read),
    ("/etc/host.conf", PathAccess::Read),
    ("/etc/resolv.conf", PathAccess::Read),
    ("/etc/gai.conf", PathAccess::Read),
    ("/etc/services", PathAccess::Read),
    ("/etc/protocols", PathAccess::Read),
    // TLS trust stores (Debian, Red Hat).
    ("/etc/ssl", PathAccess::Read),
    ("/etc/ca-certificates", PathAccess::Read),
    ("/etc/ca-certificates.conf", PathAccess::Read),
    ("/etc/pki", PathAccess::Read),
    // Time, MIME types (Python's `mimetypes`), `platform`.
    ("/etc/localtime", PathAccess::Read),
    ("/etc/timezone", PathAccess::Read),
    ("/etc/mime.types", PathAccess::Read),
    ("/etc/os-release", PathAccess::Read),
    // Debian's Python reads sitecustomize.py from here.
    ("/etc/python3", PathAccess::Read),
    ("/etc/python3.8", PathAccess::Read),
    ("/etc/python3.9", PathAccess::Read),
    ("/etc/python3.10", PathAccess::Read),
    ("/etc/python3.11", PathAccess::Read),
    ("/etc/python3.12", PathAccess::Read),
    ("/etc/python3.13", PathAccess::Read),
    ("/etc/python3.14", PathAccess::Read),
    // Devices.
    ("/dev/null", PathAccess::ReadWrite),
    ("/dev/zero", PathAccess::Read),
    ("/dev/full", PathAccess::ReadWrite),
    ("/dev/random", PathAccess::Read),
    ("/dev/urandom", PathAccess::Read),
    // The main process's own /proc/PID (opened when the rule is built, so
    // it is that process's, not its workers'), and host-wide figures.
    ("/proc/self", PathAccess::Read),
    ("/proc/cpuinfo", PathAccess::Read),
    ("/proc/meminfo", PathAccess::Read),
    ("/proc/stat", PathAccess::Read),
    ("/proc/loadavg", PathAccess::Read),
    ("/proc/uptime", PathAccess::Read),
    // os.cpu_count() and glibc's sysconf(_SC_NPROCESSORS_*).
    ("/sys/devices/system/cpu", PathAccess::Read),
];

/// Where a private `/tmp` is mounted, and granted read-write.
pub const TMP_DIRS: [&str; 2] = ["/tmp", "/var/tmp"];

impl SandboxPlan {
    /// The sandbox of `spec`.
    pub fn build(spec: &AppSpec, inputs: &SandboxInputs) -> SandboxPlan {
        let sandbox = &spec.sandbox;
        let mut paths: Vec<PathRule> = SYSTEM_PATHS
            .iter()
            .map(|(path, access)| rule(path, *access, RuleOrigin::System))
            .collect();

        let program = Path::new(&spec.command[0]);
        paths.push(rule(program, PathAccess::ReadExecute, RuleOrigin::Command));
        if let Some(venv) = app_venv(spec) {
            paths.push(rule(venv, PathAccess::ReadExecute, RuleOrigin::Venv));
        }
        if let Some(prefix) = inputs
            .python_home
            .as_deref()
            .and_then(python_prefix)
            .filter(|prefix| !is_covered(prefix, &paths))
        {
            paths.push(rule(
                prefix,
                PathAccess::ReadExecute,
                RuleOrigin::PythonHome,
            ));
        }
        paths.push(rule(
            &spec.directory,
            PathAccess::Read,
            RuleOrigin::Directory,
        ));
        for path in &sandbox.read_only {
            paths.push(rule(path, PathAccess::Read, RuleOrigin::ReadOnly));
        }
        for path in &sandbox.read_write {
            paths.push(rule(path, PathAccess::ReadWrite, RuleOrigin::ReadWrite));
        }
        // Private or not, /tmp is where gunicorn keeps its heartbeat files.
        for dir in TMP_DIRS {
            paths.push(rule(dir, PathAccess::ReadWrite, RuleOrigin::Tmp));
        }

        let bind_ports = match &sandbox.bind_ports {
            Some(ports) => ports.clone(),
            None => listen_ports(spec),
        };
        let landlock = LandlockPlan {
            mode: match sandbox.landlock {
                LandlockMode::Require => Requirement::Require,
                LandlockMode::BestEffort => Requirement::BestEffort,
            },
            abi_max: inputs.landlock_abi_max,
            paths,
            bind_ports,
            connect_ports: sandbox.connect_ports.clone(),
        };
        let namespaces = NamespacePlan {
            private_tmp: sandbox
                .private_tmp
                .then(|| spec.limits.memory.unwrap_or(DEFAULT_TMPFS_SIZE)),
            ipc: true,
            uts: true,
            network: sandbox.network == NetworkMode::None,
        };
        SandboxPlan {
            landlock: Some(landlock),
            namespaces,
        }
    }
}

fn rule(path: impl AsRef<Path>, access: PathAccess, origin: RuleOrigin) -> PathRule {
    PathRule {
        path: path.as_ref().to_owned(),
        access,
        origin,
    }
}

/// The app's venv: `venv` from its file, else the one holding
/// `command[0]`. Granted read and execute, and its `bin` leads `PATH`.
pub fn app_venv(spec: &AppSpec) -> Option<&Path> {
    spec.venv
        .as_deref()
        .or_else(|| venv_of(Path::new(&spec.command[0])))
}

/// The venv holding `program`: the parent of its `bin` directory, unless
/// that is a system prefix (`/usr/bin/python3` has no venv).
pub fn venv_of(program: &Path) -> Option<&Path> {
    let bin = program.parent()?;
    if bin.file_name()? != "bin" {
        return None;
    }
    let venv = bin.parent()?;
    let system = ["/", "/usr", "/usr/local"];
    (!system.iter().any(|s| venv == Path::new(s))).then_some(venv)
}

/// The installation prefix of a base interpreter whose `bin` is `home`.
fn python_prefix(home: &Path) -> Option<&Path> {
    let prefix = home.parent()?;
    (prefix != Path::new("/")).then_some(prefix)
}

/// Whether a read-execute rule already covers `path`.
fn is_covered(path: &Path, rules: &[PathRule]) -> bool {
    rules
        .iter()
        .any(|r| r.access == PathAccess::ReadExecute && path.starts_with(&r.path))
}

/// The TCP ports of `[[listen]]`, the default `bind_ports`.
fn listen_ports(spec: &AppSpec) -> Vec<u16> {
    let mut ports: Vec<u16> = spec
        .listen
        .iter()
        .filter_map(|l| match &l.address {
            ListenAddress::Tcp(addr) => Some(addr.port()),
            ListenAddress::Unix(_) => None,
        })
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// `home` from the text of a venv's `pyvenv.cfg`.
pub fn parse_pyvenv_home(pyvenv_cfg: &str) -> Option<PathBuf> {
    pyvenv_cfg.lines().find_map(|line| {
        let (key, value) = line.split_once('=')?;
        (key.trim() == "home")
            .then(|| PathBuf::from(value.trim()))
            .filter(|p| p.is_absolute())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_spec::app_spec;
    use crate::config::ListenSpec;

    fn user_rules(plan: &SandboxPlan) -> Vec<(String, PathAccess, RuleOrigin)> {
        plan.landlock
            .as_ref()
            .unwrap()
            .paths
            .iter()
            .filter(|r| r.origin != RuleOrigin::System)
            .map(|r| (r.path.display().to_string(), r.access, r.origin))
            .collect()
    }

    #[test]
    fn default_sandbox_of_a_gunicorn_app() {
        let spec = app_spec("shop", &["/srv/shop/venv/bin/gunicorn", "shop.wsgi"]);
        let plan = SandboxPlan::build(&spec, &SandboxInputs::default());
        use PathAccess::*;
        use RuleOrigin as O;
        assert_eq!(
            user_rules(&plan),
            vec![
                (
                    "/srv/shop/venv/bin/gunicorn".into(),
                    ReadExecute,
                    O::Command
                ),
                ("/srv/shop/venv".into(), ReadExecute, O::Venv),
                ("/srv/shop/current".into(), Read, O::Directory),
                ("/tmp".into(), ReadWrite, O::Tmp),
                ("/var/tmp".into(), ReadWrite, O::Tmp),
            ]
        );
        let landlock = plan.landlock.unwrap();
        assert_eq!(landlock.mode, Requirement::Require);
        assert_eq!(landlock.bind_ports, Vec::<u16>::new());
        assert_eq!(landlock.connect_ports, None);
        assert_eq!(
            plan.namespaces,
            NamespacePlan {
                private_tmp: Some(DEFAULT_TMPFS_SIZE),
                ipc: true,
                uts: true,
                network: false,
            }
        );
    }

    #[test]
    fn configured_paths_ports_and_namespaces() {
        let mut spec = app_spec("shop", &["/usr/bin/python3", "-m", "shop"]);
        spec.sandbox.read_only = vec!["/srv/shop".into()];
        spec.sandbox.read_write = vec!["/var/lib/shop".into()];
        spec.sandbox.private_tmp = false;
        spec.sandbox.connect_ports = Some(vec![5432]);
        spec.sandbox.network = NetworkMode::None;
        spec.sandbox.landlock = LandlockMode::BestEffort;
        spec.limits.memory = Some(512 << 20);
        spec.listen = vec![
            ListenSpec {
                address: ListenAddress::Tcp("127.0.0.1:8001".parse().unwrap()),
                name: "http".into(),
            },
            ListenSpec {
                address: ListenAddress::Unix("/run/shop.sock".into()),
                name: "unix".into(),
            },
        ];
        let inputs = SandboxInputs {
            landlock_abi_max: Some(3),
            python_home: Some("/opt/python3.12/bin".into()),
        };
        let plan = SandboxPlan::build(&spec, &inputs);
        use PathAccess::*;
        use RuleOrigin as O;
        assert_eq!(
            user_rules(&plan),
            vec![
                ("/usr/bin/python3".into(), ReadExecute, O::Command),
                ("/opt/python3.12".into(), ReadExecute, O::PythonHome),
                ("/srv/shop/current".into(), Read, O::Directory),
                ("/srv/shop".into(), Read, O::ReadOnly),
                ("/var/lib/shop".into(), ReadWrite, O::ReadWrite),
                ("/tmp".into(), ReadWrite, O::Tmp),
                ("/var/tmp".into(), ReadWrite, O::Tmp),
            ]
        );
        let landlock = plan.landlock.unwrap();
        assert_eq!(landlock.mode, Requirement::BestEffort);
        assert_eq!(landlock.abi_max, Some(3));
        assert_eq!(landlock.bind_ports, vec![8001]);
        assert_eq!(landlock.connect_ports, Some(vec![5432]));
        assert_eq!(
            plan.namespaces,
            NamespacePlan {
                private_tmp: None,
                ipc: true,
                uts: true,
                network: true,
            }
        );
    }

    #[test]
    fn explicit_bind_ports_replace_the_listen_ports() {
        let mut spec = app_spec("shop", &["/srv/shop/venv/bin/gunicorn"]);
        spec.sandbox.bind_ports = Some(vec![9000, 9001]);
        let plan = SandboxPlan::build(&spec, &SandboxInputs::default());
        assert_eq!(plan.landlock.unwrap().bind_ports, vec![9000, 9001]);
    }

    #[test]
    fn python_home_under_usr_adds_no_rule() {
        let spec = app_spec("shop", &["/srv/shop/venv/bin/gunicorn"]);
        let inputs = SandboxInputs {
            python_home: Some("/usr/bin".into()),
            ..SandboxInputs::default()
        };
        let plan = SandboxPlan::build(&spec, &inputs);
        assert!(!user_rules(&plan)
            .iter()
            .any(|(_, _, origin)| *origin == RuleOrigin::PythonHome));
    }

    #[test]
    fn a_wrapper_gets_the_venv_its_file_names() {
        let mut spec = app_spec("shop", &["/usr/bin/nice", "-n", "5", "gunicorn"]);
        spec.venv = Some("/srv/shop/venv".into());
        let plan = SandboxPlan::build(&spec, &SandboxInputs::default());
        use PathAccess::*;
        use RuleOrigin as O;
        let rules = user_rules(&plan);
        assert_eq!(
            rules[..2],
            [
                ("/usr/bin/nice".into(), ReadExecute, O::Command),
                ("/srv/shop/venv".into(), ReadExecute, O::Venv),
            ]
        );
    }

    #[test]
    fn finds_the_venv_of_a_command() {
        let cases = [
            ("/srv/shop/venv/bin/gunicorn", Some("/srv/shop/venv")),
            ("/opt/app/bin/uwsgi", Some("/opt/app")),
            ("/usr/bin/python3", None),
            ("/usr/local/bin/gunicorn", None),
            ("/bin/sh", None),
            ("/srv/shop/run.sh", None),
        ];
        for (program, want) in cases {
            assert_eq!(
                venv_of(Path::new(program)),
                want.map(Path::new),
                "{program}"
            );
        }
    }

    #[test]
    fn parses_pyvenv_home() {
        let cases = [
            ("home = /usr/bin\nversion = 3.11.2\n", Some("/usr/bin")),
            ("version = 3.12\nhome=/opt/py/bin\n", Some("/opt/py/bin")),
            ("home = relative/bin\n", None),
            ("", None),
        ];
        for (cfg, want) in cases {
            assert_eq!(parse_pyvenv_home(cfg), want.map(PathBuf::from), "{cfg:?}");
        }
    }

    #[test]
    fn system_paths_are_absolute_and_never_widen_to_secrets() {
        for (path, _) in SYSTEM_PATHS {
            assert!(path.starts_with('/'), "{path}");
            for secret in [
                "/etc",
                "/etc/shadow",
                "/proc",
                "/var",
                "/home",
                "/root",
                "/run",
            ] {
                assert_ne!(*path, secret, "{secret} must not be readable by default");
            }
        }
    }

    #[test]
    fn plan_round_trips_through_json() {
        let spec = app_spec("shop", &["/srv/shop/venv/bin/gunicorn"]);
        let plan = SandboxPlan::build(&spec, &SandboxInputs::default());
        let json = serde_json::to_string(&plan).unwrap();
        assert_eq!(serde_json::from_str::<SandboxPlan>(&json).unwrap(), plan);
    }
}
