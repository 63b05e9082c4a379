//! [`SpawnPlan`]: every value the exec helper needs to start one app,
//! computed in the daemon before anything forks.
//!
//! Pure: no I/O, no clock, no user lookups. User records, the daemon's
//! `LANG`, the notify socket and the cgroup come in as arguments, so the
//! exact environment an app sees is unit-tested here without root. The plan
//! travels to the helper as JSON; it must never hold anything that only makes
//! sense inside the daemon's process (file descriptors, pointers).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::AppSpec;
use crate::listen::PROBE_FD_NAME;
use crate::sandbox::{Rlimit, RlimitResource, SandboxInputs, SandboxPlan};

/// `PATH` after the command's own `bin` directory.
pub const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// The socket-activation and notify variables. The daemon owns them: values
/// an app file sets for them are dropped, since a stale `LISTEN_FDS` would
/// make an app server look for sockets it was not given.
pub const PROTOCOL_VARS: [&str; 4] = [
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "NOTIFY_SOCKET",
];

/// Everything the helper applies, in the form it applies it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpawnPlan {
    /// The app's name, for the helper's messages.
    pub app: String,
    /// The file to execute: `command[0]`, absolute.
    pub program: PathBuf,
    /// The whole command, `argv[0]` included.
    pub argv: Vec<String>,
    /// The final environment, in order, except `LISTEN_PID`: only the
    /// process that execs the app knows its pid, so the helper appends it.
    pub env: Vec<(String, String)>,
    /// As configured; a symlink is followed at each spawn, so switching a
    /// `current` link to a new release takes effect on the next start.
    pub directory: PathBuf,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups, exactly (the helper calls setgroups with them).
    pub groups: Vec<u32>,
    pub umask: u32,
    /// The app cgroup's `cgroup.procs`; the helper moves itself there first.
    pub cgroup_procs: Option<PathBuf>,
    pub rlimits: Vec<Rlimit>,
    /// One name per held listen socket, in fd order (`LISTEN_FDNAMES`).
    pub listen_names: Vec<String>,
    /// More cgroups to join besides `cgroup_procs`: the `tasks` files of the
    /// app's cgroups in the v1 hierarchies that carry its limits, and its
    /// v1 memory cgroup, on hybrid hosts (`AppLimits::extra_procs` says why
    /// not `cgroup.procs`).
    #[serde(default)]
    pub extra_cgroup_procs: Vec<PathBuf>,
    /// Landlock, namespaces, no_new_privs, the keyring, seccomp.
    pub sandbox: SandboxPlan,
}

/// The app's user as the user database describes it, resolved by `config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanUser {
    pub name: String,
    pub uid: u32,
    /// The app's group: `group` from the app file, else the user's primary.
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
    pub home: PathBuf,
    pub shell: PathBuf,
}

/// What the daemon contributes to a spawn besides the app's own spec.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PlanInputs {
    /// The daemon's own `LANG`, passed on when set.
    pub lang: Option<String>,
    /// Set as `NOTIFY_SOCKET` when the app's readiness kind is `notify`.
    pub notify_socket: Option<PathBuf>,
    /// One name per listen socket the caller passes to `spawn`, in order.
    pub listen_names: Vec<String>,
    /// The caller passes one more socket after those: the instance's
    /// private probe socket (`listen::ProbeSocket`).
    pub probe_socket: bool,
    pub cgroup_procs: Option<PathBuf>,
    /// `tasks` of the app's v1 limit cgroups (hybrid hosts).
    pub extra_cgroup_procs: Vec<PathBuf>,
    pub sandbox: SandboxInputs,
    /// RLIMIT_NOFILE when `[limits] open_files` is not set: what the daemon
    /// was started with, since it raises its own.
    pub open_files: Option<Rlimit>,
}

impl SpawnPlan {
    pub fn build(spec: &AppSpec, user: &PlanUser, inputs: &PlanInputs) -> SpawnPlan {
        let mut rlimits: Vec<Rlimit> = spec
            .limits
            .open_files
            .map(|n| Rlimit {
                resource: RlimitResource::OpenFiles,
                soft: n,
                hard: n,
            })
            .or(inputs.open_files)
            .into_iter()
            .collect();
        rlimits.push(Rlimit {
            resource: RlimitResource::Core,
            soft: 0,
            hard: 0,
        });
        SpawnPlan {
            app: spec.name.to_string(),
            program: PathBuf::from(&spec.command[0]),
            argv: spec.command.clone(),
            env: build_env(spec, user, inputs),
            directory: spec.directory.clone(),
            uid: user.uid,
            gid: user.gid,
            groups: user.groups.clone(),
            umask: spec.umask,
            cgroup_procs: inputs.cgroup_procs.clone(),
            rlimits,
            listen_names: all_listen_names(inputs),
            extra_cgroup_procs: inputs.extra_cgroup_procs.clone(),
            sandbox: SandboxPlan::build(spec, &inputs.sandbox),
        }
    }

    /// How many listen sockets the helper expects at fds 5 and up.
    pub fn listen_fds(&self) -> usize {
        self.listen_names.len()
    }
}

/// The `LISTEN_FDNAMES` entries, the probe socket's last.
fn all_listen_names(inputs: &PlanInputs) -> Vec<String> {
    let mut names = inputs.listen_names.clone();
    if inputs.probe_socket {
        names.push(PROBE_FD_NAME.to_owned());
    }
    names
}

/// uWSGI's `--http-socket` option, as an environment variable.
const UWSGI_HTTP_SOCKET: &str = "UWSGI_HTTP_SOCKET";

/// The login-like base, then the app's variables over it, then the protocol
/// variables. Base keys keep their position when the app overrides them;
/// the app's other keys follow in name order.
fn build_env(spec: &AppSpec, user: &PlanUser, inputs: &PlanInputs) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vec![
        ("HOME".into(), path_string(&user.home)),
        ("USER".into(), user.name.clone()),
        ("LOGNAME".into(), user.name.clone()),
        ("SHELL".into(), path_string(&user.shell)),
        ("PATH".into(), search_path(spec)),
    ];
    if let Some(lang) = &inputs.lang {
        env.push(("LANG".into(), lang.clone()));
    }
    env.push(("PYTHONUNBUFFERED".into(), "1".into()));

    for (key, value) in &spec.environment {
        if PROTOCOL_VARS.contains(&key.as_str()) {
            continue;
        }
        match env.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value.clone(),
            None => env.push((key.clone(), value.clone())),
        }
    }

    let names = all_listen_names(inputs);
    if !names.is_empty() {
        env.push(("LISTEN_FDS".into(), names.len().to_string()));
        env.push(("LISTEN_FDNAMES".into(), names.join(":")));
    }
    if inputs.probe_socket && !spec.environment.contains_key(UWSGI_HTTP_SOCKET) {
        // uWSGI takes every LISTEN_FDS socket in its default protocol
        // (uwsgi), but reads options from UWSGI_* variables: this one makes
        // the probe socket speak HTTP. gunicorn serves it as it is.
        let fd = 3 + names.len() - 1;
        env.push((UWSGI_HTTP_SOCKET.into(), format!("fd://{fd}")));
    }
    if let Some(socket) = &inputs.notify_socket {
        env.push(("NOTIFY_SOCKET".into(), path_string(socket)));
    }
    env
}

/// `DEFAULT_PATH`, with the file's `venv`'s `bin` first, or else the
/// command's directory when it is a `bin` directory outside the system
/// ones: `/srv/shop/venv/bin/gunicorn` finds the venv's `python` and
/// console scripts without an activated venv.
fn search_path(spec: &AppSpec) -> String {
    if let Some(venv) = &spec.venv {
        return format!("{}:{DEFAULT_PATH}", venv.join("bin").display());
    }
    let dir = Path::new(&spec.command[0]).parent().filter(|dir| {
        dir.file_name().is_some_and(|name| name == "bin")
            && !DEFAULT_PATH
                .split(':')
                .any(|system| Path::new(system) == *dir)
    });
    match dir {
        Some(dir) => format!("{}:{DEFAULT_PATH}", dir.display()),
        None => DEFAULT_PATH.to_owned(),
    }
}

fn path_string(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn spec(command: &[&str], environment: &[(&str, &str)]) -> AppSpec {
        let mut spec = crate::config::test_spec::app_spec("shop", command);
        spec.umask = 0o027;
        spec.environment = environment
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>();
        spec
    }

    fn user() -> PlanUser {
        PlanUser {
            name: "shop".into(),
            uid: 1001,
            gid: 1001,
            groups: vec![1001, 2000],
            home: "/home/shop".into(),
            shell: "/bin/bash".into(),
        }
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const GUNICORN: &[&str] = &["/srv/shop/venv/bin/gunicorn", "--workers", "4", "shop.wsgi"];

    #[test]
    fn environment_is_the_login_base_without_inputs() {
        let plan = SpawnPlan::build(&spec(GUNICORN, &[]), &user(), &PlanInputs::default());
        assert_eq!(
            plan.env,
            env(&[
                ("HOME", "/home/shop"),
                ("USER", "shop"),
                ("LOGNAME", "shop"),
                ("SHELL", "/bin/bash"),
                ("PATH", "/srv/shop/venv/bin:/usr/local/bin:/usr/bin:/bin"),
                ("PYTHONUNBUFFERED", "1"),
            ])
        );
    }

    #[test]
    fn the_probe_socket_is_the_last_fd_and_speaks_http_to_uwsgi() {
        let inputs = PlanInputs {
            listen_names: vec!["http".into()],
            probe_socket: true,
            ..PlanInputs::default()
        };
        let plan = SpawnPlan::build(&spec(GUNICORN, &[]), &user(), &inputs);
        assert_eq!(plan.listen_fds(), 2);
        let tail: Vec<_> = plan.env[plan.env.len() - 3..].to_vec();
        assert_eq!(
            tail,
            env(&[
                ("LISTEN_FDS", "2"),
                ("LISTEN_FDNAMES", "http:appvisor-probe"),
                ("UWSGI_HTTP_SOCKET", "fd://4"),
            ])
        );
        // An app that configures uWSGI's http-socket itself keeps it.
        let own = spec(GUNICORN, &[("UWSGI_HTTP_SOCKET", "fd://3")]);
        let plan = SpawnPlan::build(&own, &user(), &inputs);
        let values: Vec<_> = plan
            .env
            .iter()
            .filter(|(k, _)| k == "UWSGI_HTTP_SOCKET")
            .collect();
        assert_eq!(
            values,
            [&("UWSGI_HTTP_SOCKET".to_owned(), "fd://3".to_owned())]
        );
    }

    #[test]
    fn environment_with_everything() {
        let spec = spec(
            GUNICORN,
            &[
                ("DJANGO_SETTINGS_MODULE", "shop.settings"),
                ("PYTHONUNBUFFERED", "0"),
                ("HOME", "/srv/shop"),
                ("LISTEN_FDS", "7"),
                ("NOTIFY_SOCKET", "/tmp/evil"),
                ("A_FIRST", "x"),
            ],
        );
        let inputs = PlanInputs {
            lang: Some("C.UTF-8".into()),
            notify_socket: Some("/run/appvisor/notify/shop.sock".into()),
            listen_names: vec!["http".into(), "admin".into()],
            ..PlanInputs::default()
        };
        let plan = SpawnPlan::build(&spec, &user(), &inputs);
        assert_eq!(
            plan.env,
            env(&[
                ("HOME", "/srv/shop"),
                ("USER", "shop"),
                ("LOGNAME", "shop"),
                ("SHELL", "/bin/bash"),
                ("PATH", "/srv/shop/venv/bin:/usr/local/bin:/usr/bin:/bin"),
                ("LANG", "C.UTF-8"),
                ("PYTHONUNBUFFERED", "0"),
                ("A_FIRST", "x"),
                ("DJANGO_SETTINGS_MODULE", "shop.settings"),
                ("LISTEN_FDS", "2"),
                ("LISTEN_FDNAMES", "http:admin"),
                ("NOTIFY_SOCKET", "/run/appvisor/notify/shop.sock"),
            ])
        );
        assert_eq!(plan.listen_fds(), 2);
    }

    #[test]
    fn app_path_replaces_the_computed_one() {
        let plan = SpawnPlan::build(
            &spec(GUNICORN, &[("PATH", "/opt/bin")]),
            &user(),
            &PlanInputs::default(),
        );
        let path = plan.env.iter().find(|(k, _)| k == "PATH").unwrap();
        assert_eq!(path.1, "/opt/bin");
    }

    #[test]
    fn search_path_puts_only_a_non_system_bin_first() {
        let cases = [
            (
                "/srv/shop/venv/bin/gunicorn",
                "/srv/shop/venv/bin:/usr/local/bin:/usr/bin:/bin",
            ),
            (
                "/opt/app/bin/uwsgi",
                "/opt/app/bin:/usr/local/bin:/usr/bin:/bin",
            ),
            ("/usr/bin/python3", "/usr/local/bin:/usr/bin:/bin"),
            ("/usr/local/bin/gunicorn", "/usr/local/bin:/usr/bin:/bin"),
            ("/bin/sh", "/usr/local/bin:/usr/bin:/bin"),
            ("/srv/shop/run.sh", "/usr/local/bin:/usr/bin:/bin"),
            ("/srv/binary/run", "/usr/local/bin:/usr/bin:/bin"),
        ];
        for (program, want) in cases {
            assert_eq!(search_path(&spec(&[program], &[])), want, "{program}");
        }
        let mut wrapped = spec(&["/bin/sh", "-c", "exec gunicorn shop.wsgi"], &[]);
        wrapped.venv = Some("/srv/shop/venv".into());
        assert_eq!(
            search_path(&wrapped),
            "/srv/shop/venv/bin:/usr/local/bin:/usr/bin:/bin",
            "the file's venv leads, whatever command[0] is"
        );
    }

    #[test]
    fn plan_carries_identity_limits_and_paths() {
        let mut spec = spec(GUNICORN, &[]);
        spec.limits.open_files = Some(4096);
        let inputs = PlanInputs {
            cgroup_procs: Some("/sys/fs/cgroup/appvisor/shop/cgroup.procs".into()),
            ..PlanInputs::default()
        };
        let plan = SpawnPlan::build(&spec, &user(), &inputs);
        let want = SpawnPlan {
            app: "shop".into(),
            program: "/srv/shop/venv/bin/gunicorn".into(),
            argv: GUNICORN.iter().map(|s| s.to_string()).collect(),
            env: plan.env.clone(),
            directory: "/srv/shop/current".into(),
            uid: 1001,
            gid: 1001,
            groups: vec![1001, 2000],
            umask: 0o027,
            cgroup_procs: Some("/sys/fs/cgroup/appvisor/shop/cgroup.procs".into()),
            rlimits: vec![
                Rlimit {
                    resource: RlimitResource::OpenFiles,
                    soft: 4096,
                    hard: 4096,
                },
                Rlimit {
                    resource: RlimitResource::Core,
                    soft: 0,
                    hard: 0,
                },
            ],
            listen_names: Vec::new(),
            extra_cgroup_procs: Vec::new(),
            sandbox: SandboxPlan::build(&spec, &SandboxInputs::default()),
        };
        assert_eq!(plan, want);
    }

    #[test]
    fn apps_keep_the_open_file_limit_the_daemon_was_started_with() {
        let inherited = Rlimit {
            resource: RlimitResource::OpenFiles,
            soft: 1024,
            hard: 524_288,
        };
        let inputs = PlanInputs {
            open_files: Some(inherited),
            ..PlanInputs::default()
        };
        let mut spec = spec(GUNICORN, &[]);
        let open_files = |spec: &AppSpec| {
            SpawnPlan::build(spec, &user(), &inputs)
                .rlimits
                .into_iter()
                .filter(|r| r.resource == RlimitResource::OpenFiles)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            open_files(&spec),
            [inherited],
            "not the daemon's raised limit"
        );
        spec.limits.open_files = Some(4096);
        assert_eq!(
            open_files(&spec),
            [Rlimit {
                resource: RlimitResource::OpenFiles,
                soft: 4096,
                hard: 4096,
            }],
            "[limits] open_files wins"
        );
    }

    #[test]
    fn plan_round_trips_through_json() {
        let inputs = PlanInputs {
            listen_names: vec!["http".into()],
            ..PlanInputs::default()
        };
        let plan = SpawnPlan::build(&spec(GUNICORN, &[("K", "v=1 ü")]), &user(), &inputs);
        let json = serde_json::to_vec(&plan).unwrap();
        assert_eq!(serde_json::from_slice::<SpawnPlan>(&json).unwrap(), plan);
    }
}
