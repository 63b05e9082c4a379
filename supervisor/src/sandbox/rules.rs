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

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{venv_of, AppSpec, LandlockMode, ListenAddress, NetworkMode};

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
    /// A cap on the ABI used, below the kernel's: only a test build sets it
    /// (`sandbox::landlock_abi_cap`).
    #[serde(default)]
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

/// The namespaces the helper unshares, and what it mounts in the new mount
/// namespace. Mount, IPC and UTS are always new.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespacePlan {
    /// A new mount namespace, whose mounts are slaves of the host's: it
    /// carries the private `/proc`, the hidden paths and the private `/tmp`.
    pub mount: bool,
    /// Fresh tmpfs mounts of this many bytes on `/tmp` and `/var/tmp`.
    pub private_tmp: Option<u64>,
    /// A procfs of the app's own on `/proc`, with `hidepid=invisible`.
    pub private_proc: bool,
    /// Paths hidden under the granted system paths (see [`HIDDEN_PATHS`]);
    /// those the host lacks are skipped.
    pub hide: Vec<PathBuf>,
    pub ipc: bool,
    pub uts: bool,
    /// `network = "none"`: a new, empty network namespace.
    pub network: bool,
}

impl NamespacePlan {
    /// No namespace at all: for the helper's own tests.
    pub fn none() -> NamespacePlan {
        NamespacePlan {
            mount: false,
            private_tmp: None,
            private_proc: false,
            hide: Vec::new(),
            ipc: false,
            uts: false,
            network: false,
        }
    }
}

/// The seccomp filter: the deny list of `sandbox::seccomp` and the socket
/// families the app may create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeccompPlan {
    pub socket_families: Vec<SocketFamily>,
}

/// A socket family an app may create sockets of; every other one is
/// refused with EAFNOSUPPORT, as if the kernel lacked it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SocketFamily {
    Unix,
    Inet,
    Inet6,
}

impl SocketFamily {
    pub fn as_str(self) -> &'static str {
        match self {
            SocketFamily::Unix => "AF_UNIX",
            SocketFamily::Inet => "AF_INET",
            SocketFamily::Inet6 => "AF_INET6",
        }
    }
}

/// Everything that confines the app beyond its user and rlimits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxPlan {
    /// `None` only in tests of the helper's other steps.
    pub landlock: Option<LandlockPlan>,
    pub namespaces: NamespacePlan,
    /// PR_SET_NO_NEW_PRIVS before exec.
    pub no_new_privs: bool,
    /// A fresh session keyring of the app's own, instead of the daemon's.
    pub session_keyring: bool,
    /// `None` only in tests of the helper's other steps.
    pub seccomp: Option<SeccompPlan>,
}

impl SandboxPlan {
    /// No Landlock, no namespaces, no seccomp filter (capabilities are
    /// dropped and no_new_privs set regardless): for tests of the helper's
    /// other steps.
    pub fn unconfined() -> SandboxPlan {
        SandboxPlan {
            landlock: None,
            namespaces: NamespacePlan::none(),
            no_new_privs: true,
            session_keyring: false,
            seccomp: None,
        }
    }
}

/// What the daemon contributes to the sandbox besides the app's spec.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SandboxInputs {
    /// A cap on the Landlock ABI, for tests only (see
    /// `sandbox::landlock_abi_cap`); always `None` in a production build.
    pub landlock_abi_max: Option<u8>,
    /// `home` from the venv's `pyvenv.cfg` (the base interpreter's `bin`),
    /// only when that file is root's own (see [`super::venv`]).
    pub python_home: Option<PathBuf>,
    /// More paths to hide besides [`HIDDEN_PATHS`]: the daemon's own
    /// configuration file and apps directory.
    pub hide: Vec<PathBuf>,
    /// Directories outside the system paths that files under `/etc` link
    /// into (`/etc/resolv.conf -> /run/systemd/resolve/stub-resolv.conf`),
    /// granted read as system paths: see `sandbox::linked_system_dirs`.
    pub linked_dirs: Vec<PathBuf>,
}

/// The paths every app may read to run a dynamically linked Python:
/// programs and libraries, the host's configuration under `/etc` (less
/// [`HIDDEN_PATHS`]), a few device nodes, the app's own `/proc`, and the
/// CPU count.
///
/// Directories, not files, wherever the host replaces files: Landlock binds
/// a rule to an inode, and `useradd`, `ldconfig`, DHCP clients, tzdata and
/// CA updates write a new file and rename it over the old one, so a rule on
/// `/etc/passwd` itself would deny the new file to every running app.
///
/// Not here on purpose: `/home`, `/root`, `/var`, `/srv`, `/run` (other
/// apps' sockets and files), the host's `/proc` (each app gets its own,
/// showing only its processes), `/dev/shm` (shared with the host).
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
    // The loader's cache, name service (passwd, group, hosts, resolv.conf,
    // nsswitch.conf), TLS trust stores, localtime, mime.types, Debian's
    // sitecustomize.py: all replaced by rename on a living host. What must
    // stay secret in it is hidden by the app's mount namespace
    // (HIDDEN_PATHS) or by its mode (shadow is root:shadow 0640, and apps
    // in groups that read it are refused).
    ("/etc", PathAccess::Read),
    // Devices.
    ("/dev/null", PathAccess::ReadWrite),
    ("/dev/zero", PathAccess::Read),
    ("/dev/full", PathAccess::ReadWrite),
    ("/dev/random", PathAccess::Read),
    ("/dev/urandom", PathAccess::Read),
    // The app's own procfs (hidepid=invisible, mounted by the helper), so
    // every process of the app, workers included, reads its own /proc/self,
    // and no process of another app or user is even listed; plus host-wide
    // figures (meminfo, stat, loadavg) that psutil and prometheus_client read.
    ("/proc", PathAccess::Read),
    // os.cpu_count() and glibc's sysconf(_SC_NPROCESSORS_*).
    ("/sys/devices/system/cpu", PathAccess::Read),
];

/// What the app's mount namespace hides under the granted [`SYSTEM_PATHS`]:
/// each directory gets an empty, mode-0000 directory mounted over it, each
/// file an empty mode-0000 file, so opening one fails with EACCES.
///
/// A mount over a directory holds while the host changes files inside it.
/// A mount over a file is detached by the kernel when the host renames a
/// new file over it (`useradd` rewriting `/etc/shadow`): for those files the
/// mask is a second line behind their root-only mode, which is why groups
/// that can read them are refused (`config::security`).
pub const HIDDEN_PATHS: &[&str] = &[
    // Password and group hashes, sudo rules.
    "/etc/shadow",
    "/etc/shadow-",
    "/etc/gshadow",
    "/etc/gshadow-",
    "/etc/sudoers",
    "/etc/sudoers.d",
    "/etc/security/opasswd",
    // Private keys and credentials of host services.
    "/etc/ssh",
    "/etc/ssl/private",
    "/etc/credstore",
    "/etc/credstore.encrypted",
    "/etc/letsencrypt",
    "/etc/wireguard",
    "/etc/NetworkManager/system-connections",
    "/etc/ppp",
    // appvisor's own configuration: every app's file and settings.
    "/etc/appvisor",
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
        for dir in &inputs.linked_dirs {
            if !is_under_system_read(dir) {
                paths.push(rule(dir, PathAccess::Read, RuleOrigin::System));
            }
        }

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
        let hide = HIDDEN_PATHS
            .iter()
            .map(PathBuf::from)
            .chain(inputs.hide.iter().cloned())
            .filter(|path| is_under_system_read(path))
            .collect::<Vec<_>>();
        let hide = outermost(hide);
        let namespaces = NamespacePlan {
            mount: true,
            private_tmp: sandbox
                .private_tmp
                .then(|| spec.limits.memory.unwrap_or(DEFAULT_TMPFS_SIZE)),
            private_proc: true,
            hide,
            ipc: true,
            uts: true,
            network: sandbox.network == NetworkMode::None,
        };
        SandboxPlan {
            landlock: Some(landlock),
            namespaces,
            no_new_privs: true,
            session_keyring: true,
            seccomp: Some(SeccompPlan {
                socket_families: vec![SocketFamily::Unix, SocketFamily::Inet, SocketFamily::Inet6],
            }),
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

/// The installation prefix of a base interpreter whose `bin` is `home`.
fn python_prefix(home: &Path) -> Option<&Path> {
    let prefix = home.parent()?;
    (prefix != Path::new("/")).then_some(prefix)
}

/// Whether `path` lies under a system path every app may read: only there
/// does hiding it change what an app can see.
fn is_under_system_read(path: &Path) -> bool {
    SYSTEM_PATHS
        .iter()
        .any(|(system, _)| path.starts_with(system))
}

/// `paths` less those under another of them (gone with it already, and
/// mounting over one would fail inside the empty stand-in) and less
/// repeats, in their order. Each path looks up its own ancestors rather
/// than being compared with every other path: this runs for every spawn's
/// plan, and again for an app's security view and exposure score.
fn outermost(paths: Vec<PathBuf>) -> Vec<PathBuf> {
    let all: HashSet<&Path> = paths.iter().map(PathBuf::as_path).collect();
    let mut kept: HashSet<&Path> = HashSet::with_capacity(paths.len());
    let mut out = Vec::with_capacity(paths.len());
    for path in &paths {
        let nested = path.ancestors().skip(1).any(|above| all.contains(above));
        if !nested && kept.insert(path.as_path()) {
            out.push(path.clone());
        }
    }
    out
}

/// Whether a read-execute rule already covers `path`.
fn is_covered(path: &Path, rules: &[PathRule]) -> bool {
    rules
        .iter()
        .any(|r| r.access == PathAccess::ReadExecute && path.starts_with(&r.path))
}

/// The TCP ports of `[[listen]]`, the default `bind_ports`.
pub(crate) fn listen_ports(spec: &AppSpec) -> Vec<u16> {
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
                mount: true,
                private_tmp: Some(DEFAULT_TMPFS_SIZE),
                private_proc: true,
                hide: HIDDEN_PATHS.iter().map(PathBuf::from).collect(),
                ipc: true,
                uts: true,
                network: false,
            }
        );
        assert!(plan.no_new_privs && plan.session_keyring);
        assert_eq!(
            plan.seccomp.unwrap().socket_families,
            [SocketFamily::Unix, SocketFamily::Inet, SocketFamily::Inet6]
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
            hide: vec![
                "/etc/appvisor/appvisor.toml".into(),
                "/etc/apps.d".into(),
                "/srv/apps.d".into(),
            ],
            linked_dirs: Vec::new(),
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
        // Only what the app could read is hidden, and nothing twice.
        let mut hide: Vec<PathBuf> = HIDDEN_PATHS.iter().map(PathBuf::from).collect();
        hide.push("/etc/apps.d".into());
        assert_eq!(
            plan.namespaces,
            NamespacePlan {
                mount: true,
                private_tmp: None,
                private_proc: true,
                hide,
                ipc: true,
                uts: true,
                network: true,
            }
        );
    }

    #[test]
    fn hidden_paths_keep_the_outermost_once_in_their_order() {
        // The definition, comparing every path with every other.
        fn by_definition(paths: &[PathBuf]) -> Vec<PathBuf> {
            let mut kept: Vec<PathBuf> = Vec::new();
            for path in paths {
                let nested = paths
                    .iter()
                    .any(|other| other != path && path.starts_with(other));
                if !nested && !kept.contains(path) {
                    kept.push(path.clone());
                }
            }
            kept
        }
        let cases: &[&[&str]] = &[
            &[],
            &["/etc/ssh", "/etc/ssh/ssh_host_key", "/etc/shadow"],
            // The nested one first, then what holds it.
            &["/etc/ssl/private/key.pem", "/etc/ssl/private"],
            // Repeats, also spelled differently: the first spelling stays.
            &[
                "/etc/apps.d/",
                "/etc/shadow",
                "/etc/apps.d",
                "/etc//apps.d/./",
            ],
            // A shared prefix of the text is not a parent.
            &["/etc/ssl", "/etc/ssl-private", "/etc/ssl/private"],
            &["/etc", "/etc/shadow", "/etc/ssh/moduli"],
        ];
        for case in cases {
            let paths: Vec<PathBuf> = case.iter().map(PathBuf::from).collect();
            assert_eq!(outermost(paths.clone()), by_definition(&paths), "{case:?}");
        }
        let expected: &[&[&str]] = &[
            &[],
            &["/etc/ssh", "/etc/shadow"],
            &["/etc/ssl/private"],
            &["/etc/apps.d/", "/etc/shadow"],
            &["/etc/ssl", "/etc/ssl-private"],
            &["/etc"],
        ];
        for (case, want) in cases.iter().zip(expected) {
            let paths = case.iter().map(PathBuf::from).collect();
            // As written, not only as equal paths: the spelling kept too.
            let got: Vec<String> = outermost(paths)
                .iter()
                .map(|path| path.to_str().unwrap().to_owned())
                .collect();
            assert_eq!(got, *want, "{case:?}");
        }
        // The list every app starts from: nothing in it is nested or
        // repeated.
        let hidden: Vec<PathBuf> = HIDDEN_PATHS.iter().map(PathBuf::from).collect();
        assert_eq!(outermost(hidden.clone()), hidden);
    }

    #[test]
    fn explicit_bind_ports_replace_the_listen_ports() {
        let mut spec = app_spec("shop", &["/srv/shop/venv/bin/gunicorn"]);
        spec.sandbox.bind_ports = Some(vec![9000, 9001]);
        let plan = SandboxPlan::build(&spec, &SandboxInputs::default());
        assert_eq!(plan.landlock.unwrap().bind_ports, vec![9000, 9001]);
    }

    #[test]
    fn directories_etc_links_into_are_granted_read() {
        let spec = app_spec("shop", &["/srv/shop/venv/bin/gunicorn"]);
        let inputs = SandboxInputs {
            linked_dirs: vec![
                "/run/systemd/resolve".into(),
                "/usr/share/zoneinfo/Europe".into(),
            ],
            ..SandboxInputs::default()
        };
        let plan = SandboxPlan::build(&spec, &inputs);
        let system: Vec<&PathRule> = plan
            .landlock
            .as_ref()
            .unwrap()
            .paths
            .iter()
            .filter(|r| r.origin == RuleOrigin::System)
            .collect();
        assert_eq!(system.len(), SYSTEM_PATHS.len() + 1);
        assert_eq!(
            system.last().unwrap().path,
            PathBuf::from("/run/systemd/resolve")
        );
        assert_eq!(system.last().unwrap().access, PathAccess::Read);
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
    fn system_paths_are_absolute_and_never_widen_to_secrets() {
        for (path, access) in SYSTEM_PATHS {
            assert!(path.starts_with('/'), "{path}");
            for secret in ["/", "/var", "/home", "/root", "/run", "/srv"] {
                assert_ne!(*path, secret, "{secret} must not be readable by default");
            }
            // /etc and /proc are granted whole, but hidden paths and the
            // app's own procfs keep them from being the host's.
            if ["/etc", "/proc"].contains(path) {
                assert_eq!(*access, PathAccess::Read, "{path}");
            }
        }
        for path in ["/etc/shadow", "/etc/gshadow", "/etc/appvisor", "/etc/ssh"] {
            assert!(HIDDEN_PATHS.contains(&path), "{path} must be hidden");
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
