//! Running the real `appvisord` on a [`Prefix`] and driving it with the
//! real `appctl`, in the manner of Horust's kill-on-timeout test runner.
//!
//! Each daemon gets its own cgroup subtree name (`avt-<pid>-<n>`), because
//! tests run in parallel threads and processes. On drop the daemon gets
//! SIGTERM, then SIGKILL as a last resort, and its cgroup subtree is
//! emptied and removed; a failing test prints the daemon's log. This module
//! never touches a cgroup it did not name.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use appvisor_protocol::{AppList, AppStatus, State};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::bins;
use crate::prefix::Prefix;
use crate::procfs;
use crate::users::TestUser;
use crate::wait::poll_until;

/// How a test wants its daemon configured and run.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// `[status] listen`; `""` (the default here) turns it off.
    pub status_listen: String,
    pub admin_users: Vec<String>,
    pub admin_groups: Vec<String>,
    /// Raw TOML appended to `appvisor.toml` (e.g. a `[defaults]` table).
    pub extra_config: String,
    /// Extra environment for the daemon (besides the test's own, which it
    /// inherits, `LANG=C.UTF-8` and `NO_COLOR=1`).
    pub env: Vec<(String, String)>,
    /// The `--cgroup` name; `None` picks a fresh `avt-<pid>-<n>`. Set it to
    /// a killed daemon's name to start its successor on the same subtree.
    pub cgroup: Option<String>,
    /// How long the daemon may take to answer on its socket.
    pub ready_timeout: Duration,
    /// The directory holding the `appvisord` and `appctl` to run; `None`
    /// runs the ones `cargo test` built.
    pub bin_dir: Option<PathBuf>,
    /// RLIMIT_NOFILE (soft, hard) to start the daemon under, set by
    /// `prlimit(1)`; `None` keeps the test's own.
    pub open_files: Option<(u64, u64)>,
    /// More arguments for `appvisord` (e.g. `--reexec-binary PATH`).
    pub extra_args: Vec<String>,
    /// Fds a service manager passes (its fd store, [`crate::fdstore`]):
    /// the daemon gets them as fds 3 and up with `LISTEN_FDS`,
    /// `LISTEN_FDNAMES` and `LISTEN_PID` set to its own pid.
    pub passed_fds: Vec<(String, std::sync::Arc<std::os::fd::OwnedFd>)>,
}

impl Default for DaemonOptions {
    fn default() -> DaemonOptions {
        DaemonOptions {
            status_listen: String::new(),
            admin_users: Vec::new(),
            admin_groups: Vec::new(),
            extra_config: String::new(),
            env: Vec::new(),
            cgroup: None,
            ready_timeout: Duration::from_secs(20),
            bin_dir: None,
            open_files: None,
            extra_args: Vec::new(),
            passed_fds: Vec::new(),
        }
    }
}

/// A running `appvisord`.
#[derive(Debug)]
pub struct Daemon {
    child: Option<Child>,
    pid: u32,
    socket: PathBuf,
    config: PathBuf,
    /// The prefix's apps.d and log directory, as in `appvisor.toml`.
    apps_dir: PathBuf,
    log_dir: PathBuf,
    log_path: PathBuf,
    cgroup: String,
    /// The `appctl` that goes with this daemon.
    appctl: PathBuf,
    /// cgroup v2 directories the subtree may be at, best guess first.
    cgroup_candidates: Vec<PathBuf>,
    /// Set by [`Daemon::kill_hard`]: a successor owns the subtree.
    leave_cgroup: bool,
}

static NEXT_DAEMON: AtomicU32 = AtomicU32::new(0);

fn quote(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

fn quote_list(items: &[String]) -> String {
    let items: Vec<String> = items.iter().map(|s| quote(s)).collect();
    format!("[{}]", items.join(", "))
}

/// The text of `appvisor.toml` for `prefix`.
pub fn daemon_config(prefix: &Prefix, options: &DaemonOptions) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "apps_dir = {}",
        quote(&prefix.apps_dir().display().to_string())
    );
    let _ = writeln!(
        t,
        "log_dir = {}",
        quote(&prefix.log_dir().display().to_string())
    );
    let _ = writeln!(
        t,
        "state_dir = {}",
        quote(&prefix.state_dir().display().to_string())
    );
    let _ = writeln!(
        t,
        "\n[control]\nsocket = {}\nadmin_users = {}\nadmin_groups = {}",
        quote(&prefix.socket().display().to_string()),
        quote_list(&options.admin_users),
        quote_list(&options.admin_groups),
    );
    let _ = writeln!(t, "\n[status]\nlisten = {}", quote(&options.status_listen));
    if !options.extra_config.is_empty() {
        t.push('\n');
        t.push_str(&options.extra_config);
        t.push('\n');
    }
    t
}

/// Whether something answers HTTP on the control socket.
fn socket_answers(socket: &Path) -> bool {
    let Ok(mut stream) = UnixStream::connect(socket) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET /v1/whoami HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 8];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.")
}

/// Where a subtree called `name` may sit in the v2 tree: under the
/// daemon's own cgroup, under the test's, or at the root.
fn cgroup_candidates(name: &str, daemon_pid: u32) -> Vec<PathBuf> {
    let Some(root) = procfs::cgroup2_root() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if let Some(path) = procfs::cgroup_of(daemon_pid) {
        // The daemon may have moved itself into its subtree (NAME/daemon).
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        if let Some(i) = parts.iter().position(|p| *p == name) {
            out.push(root.join(parts[..=i].join("/")));
        }
        out.push(root.join(&path).join(name));
    }
    if let Some(own) = procfs::cgroup_of(std::process::id()) {
        out.push(root.join(own).join(name));
    }
    out.push(root.join(name));
    out.dedup();
    out
}

/// Subtrees called `name` in the v1 hierarchies (memory, pids, cpu) that
/// hybrid hosts use for limits, at their roots or under the test's own
/// cgroups.
fn v1_cgroup_dirs(name: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    for controller in ["memory", "pids", "cpu"] {
        let base = Path::new("/sys/fs/cgroup").join(controller);
        if !base.join("cgroup.procs").exists() {
            continue;
        }
        let own_path = own.lines().find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
            ctrls
                .split(',')
                .any(|c| c == controller)
                .then(|| path.trim_start_matches('/').to_owned())
        });
        for dir in [
            own_path.map(|p| base.join(p).join(name)),
            Some(base.join(name)),
        ]
        .into_iter()
        .flatten()
        {
            if dir.is_dir() && !out.contains(&dir) {
                out.push(dir);
            }
        }
    }
    out
}

impl Daemon {
    /// Writes `appvisor.toml`, starts `appvisord --config … --cgroup …` with
    /// stdout and stderr in `PREFIX/daemon.log`, and waits until its socket
    /// answers.
    pub fn start(prefix: &Prefix, options: DaemonOptions) -> Daemon {
        let config = prefix.config_path();
        fs::write(&config, daemon_config(prefix, &options))
            .unwrap_or_else(|e| panic!("writing {}: {e}", config.display()));
        let cgroup = options.cgroup.clone().unwrap_or_else(|| {
            format!(
                "avt-{}-{}",
                std::process::id(),
                NEXT_DAEMON.fetch_add(1, Ordering::Relaxed)
            )
        });
        let log_path = prefix.path().join("daemon.log");
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap_or_else(|e| panic!("opening {}: {e}", log_path.display()));
        let log_err = log.try_clone().expect("dup of the log file");
        let (appvisord, appctl) = match &options.bin_dir {
            Some(dir) => (dir.join("appvisord"), dir.join("appctl")),
            None => (bins::appvisord(), bins::appctl()),
        };
        let mut cmd = match options.open_files {
            // As systemd does: LISTEN_PID is the daemon's own pid, known
            // only in the child, so a shell sets it and execs the daemon.
            None if !options.passed_fds.is_empty() => {
                let mut cmd = Command::new("/bin/sh");
                cmd.arg("-c")
                    .arg("LISTEN_PID=$$ exec \"$0\" \"$@\"")
                    .arg(appvisord);
                cmd
            }
            None => Command::new(appvisord),
            // prlimit execs the daemon: the pid stays the daemon's.
            Some((soft, hard)) => {
                let mut cmd = Command::new("prlimit");
                cmd.arg(format!("--nofile={soft}:{hard}"))
                    .arg("--")
                    .arg(appvisord);
                cmd
            }
        };
        cmd.arg("--config")
            .arg(&config)
            .arg("--cgroup")
            .arg(&cgroup)
            .args(&options.extra_args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .env("LANG", "C.UTF-8")
            // A plain log file to print on failure; also one more variable
            // that must not leak into apps.
            .env("NO_COLOR", "1");
        if std::env::var_os("APPVISOR_LOG").is_none() {
            cmd.env("APPVISOR_LOG", "info,appvisor=debug");
        }
        cmd.envs(options.env.iter().map(|(k, v)| (k, v)));
        if !options.passed_fds.is_empty() {
            use command_fds::{CommandFdExt, FdMapping};
            let names: Vec<&str> = options.passed_fds.iter().map(|(n, _)| n.as_str()).collect();
            cmd.env("LISTEN_FDS", names.len().to_string())
                .env("LISTEN_FDNAMES", names.join(":"));
            let mappings = options
                .passed_fds
                .iter()
                .enumerate()
                .map(|(i, (_, fd))| FdMapping {
                    parent_fd: fd.try_clone().expect("dup of a passed fd"),
                    child_fd: 3 + i as i32,
                })
                .collect();
            cmd.fd_mappings(mappings).expect("fd mappings");
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
        let pid = child.id();
        let mut daemon = Daemon {
            child: Some(child),
            pid,
            socket: prefix.socket(),
            config,
            apps_dir: prefix.apps_dir(),
            log_dir: prefix.log_dir(),
            log_path,
            cgroup_candidates: Vec::new(),
            cgroup,
            appctl,
            leave_cgroup: false,
        };
        let answered = poll_until(options.ready_timeout, || {
            if let Some(status) = daemon.try_wait() {
                panic!(
                    "appvisord exited with {status} before its socket answered\n{}",
                    daemon.log_tail(60)
                );
            }
            socket_answers(&daemon.socket)
        });
        daemon.cgroup_candidates = cgroup_candidates(&daemon.cgroup, pid);
        if !answered {
            panic!(
                "appvisord did not answer on {} within {:?}\n{}",
                daemon.socket.display(),
                options.ready_timeout,
                daemon.log_tail(60)
            );
        }
        daemon
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// The `apps_dir` of its `appvisor.toml`.
    pub fn apps_dir(&self) -> &Path {
        &self.apps_dir
    }

    /// The `log_dir` of its `appvisor.toml`.
    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    /// The `--cgroup` name.
    pub fn cgroup_name(&self) -> &str {
        &self.cgroup
    }

    /// The daemon's cgroup v2 subtree, if it exists (now).
    pub fn cgroup_dir(&self) -> Option<PathBuf> {
        self.cgroup_candidates.iter().find(|d| d.is_dir()).cloned()
    }

    /// Every cgroup directory of the daemon's subtree that exists now, in
    /// the v2 tree and the v1 limit hierarchies, each subtree's root
    /// first.
    pub fn cgroup_dirs(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            out.push(dir.to_owned());
            let Ok(entries) = fs::read_dir(dir) else {
                return;
            };
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    walk(&entry.path(), out);
                }
            }
        }
        let mut out = Vec::new();
        for root in self
            .cgroup_dir()
            .into_iter()
            .chain(v1_cgroup_dirs(&self.cgroup))
        {
            walk(&root, &mut out);
        }
        out
    }

    /// Every live process in the daemon's subtree except the daemon itself.
    pub fn app_processes(&self) -> Vec<u32> {
        self.cgroup_dir()
            .map(|dir| procfs::cgroup_procs(&dir))
            .unwrap_or_default()
            .into_iter()
            .filter(|p| *p != self.pid && procfs::process_exists(*p))
            .collect()
    }

    /// The whole daemon log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The last `n` lines of the daemon log, with a header.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let tail = &lines[lines.len().saturating_sub(n)..];
        format!(
            "--- appvisord log ({}, last {} lines) ---\n{}\n--- end of log ---",
            self.log_path.display(),
            tail.len(),
            tail.join("\n")
        )
    }

    /// The exit status, if the daemon has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Runs the real `appctl --socket SOCKET ARGS…`.
    pub fn appctl<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = Command::new(&self.appctl);
        cmd.arg("--socket").arg(&self.socket).args(args);
        cmd.stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
    }

    /// `appctl` at `PREFIX/bin/appctl`, where every test user can run it:
    /// the build tree may sit under a private home.
    ///
    /// A hard link to the build's binary where it is on the same file system
    /// and everyone may run it; a copy (mode 0755) otherwise. The debug
    /// binary is tens of MB: copying it took over a second on a loaded CI
    /// machine, inside a test that times `appctl` as an operator.
    pub fn public_appctl(&self) -> PathBuf {
        let root = self
            .socket
            .parent()
            .and_then(Path::parent)
            .expect("the control socket lives in PREFIX/run");
        let dir = root.join("bin");
        let path = dir.join("appctl");
        if !path.is_file() {
            fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
            let tmp = dir.join(format!(".appctl-{:?}", thread::current().id()));
            let everyone_runs =
                |p: &Path| fs::metadata(p).is_ok_and(|m| m.permissions().mode() & 0o005 == 0o005);
            let linked = everyone_runs(&self.appctl) && fs::hard_link(&self.appctl, &tmp).is_ok();
            if !linked {
                fs::copy(&self.appctl, &tmp)
                    .unwrap_or_else(|e| panic!("copying appctl to {}: {e}", tmp.display()));
                fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))
                    .unwrap_or_else(|e| panic!("chmod {}: {e}", tmp.display()));
            }
            fs::rename(&tmp, &path).unwrap_or_else(|e| {
                panic!("renaming {} to {}: {e}", tmp.display(), path.display())
            });
        }
        path
    }

    /// Runs the real `appctl --socket SOCKET ARGS…` as `user` (see
    /// [`TestUser::command`]).
    pub fn appctl_as<I, S>(&self, user: &TestUser, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = user.command(self.public_appctl());
        cmd.arg("--socket").arg(&self.socket).args(args);
        // A copy may just have been written: a process another test thread
        // forked meanwhile holds its write fd until it execs (ETXTBSY),
        // briefly.
        let mut tries = 0;
        loop {
            match cmd.output() {
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 50 => {
                    tries += 1;
                    thread::sleep(Duration::from_millis(20));
                }
                result => {
                    return result
                        .unwrap_or_else(|e| panic!("running {cmd:?} as {}: {e}", user.name))
                }
            }
        }
    }

    /// Runs `appctl ARGS…`, asserts exit 0 and returns stdout.
    pub fn appctl_ok<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let args: Vec<S> = args.into_iter().collect();
        let shown: Vec<String> = args
            .iter()
            .map(|a| a.as_ref().to_string_lossy().into_owned())
            .collect();
        let out = self.appctl(args);
        assert!(
            out.status.success(),
            "appctl {} exited with {}\n{}\n{}",
            shown.join(" "),
            out.status,
            describe_output(&out),
            self.log_tail(40)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `appctl status --json`, parsed; `Err` says why not.
    pub fn try_status(&self) -> Result<Vec<AppStatus>, String> {
        let out = self.appctl(["status", "--json"]);
        // 3: some app is not running; the JSON is still complete.
        if !matches!(out.status.code(), Some(0) | Some(3)) {
            return Err(format!(
                "appctl status --json exited with {}\n{}",
                out.status,
                describe_output(&out)
            ));
        }
        serde_json::from_slice::<AppList>(&out.stdout)
            .map(|list| list.apps)
            .map_err(|e| {
                format!(
                    "appctl status --json printed no app list: {e}\n{}",
                    describe_output(&out)
                )
            })
    }

    /// `appctl status --json`; panics with the daemon log when it fails.
    pub fn status_json(&self) -> Vec<AppStatus> {
        self.try_status()
            .unwrap_or_else(|e| panic!("{e}\n{}", self.log_tail(40)))
    }

    /// One app's status; panics when the daemon does not list it.
    pub fn app(&self, name: &str) -> AppStatus {
        let apps = self.status_json();
        apps.iter()
            .find(|a| a.name == name)
            .cloned()
            .unwrap_or_else(|| {
                let names: Vec<&str> = apps.iter().map(|a| a.name.as_str()).collect();
                panic!("appvisord does not list app {name:?}; it lists {names:?}")
            })
    }

    /// `appctl logs APP -n N --stdout` (or `--stderr`): stdout of the command.
    pub fn app_logs(&self, app: &str, lines: usize, stderr: bool) -> String {
        let n = lines.to_string();
        let stream = if stderr { "--stderr" } else { "--stdout" };
        self.appctl_ok(["logs", app, "-n", &n, stream])
    }

    /// `appctl logs APP -n N`: both streams, interleaved.
    pub fn app_output(&self, app: &str, lines: usize) -> String {
        let n = lines.to_string();
        self.appctl_ok(["logs", app, "-n", &n])
    }

    /// Polls `cond` until it holds; on the deadline panics naming `what`
    /// with `appctl status` (every app's state and reason) and the daemon's
    /// recent log.
    pub fn wait_until(&self, deadline: Duration, what: &str, cond: impl FnMut() -> bool) {
        if !poll_until(deadline, cond) {
            let status = self.appctl(["status"]);
            panic!(
                "timed out after {deadline:?} waiting for {what}\n\
                 --- appctl status ---\n{}\n{}",
                describe_output(&status),
                self.log_tail(60)
            );
        }
    }

    /// The daemon's log lines about app `name` (its tracing span), the last
    /// `n` of them: what a failure in a busy log is about.
    pub fn app_log_tail(&self, name: &str, n: usize) -> String {
        let span = format!("app{{app={name}}}");
        let log = self.log();
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(&span)).collect();
        let tail = &lines[lines.len().saturating_sub(n)..];
        format!(
            "--- appvisord log about {name} (last {} lines) ---\n{}\n--- end ---",
            tail.len(),
            tail.join("\n")
        )
    }

    /// Waits until every app of `names` is running. On the deadline panics
    /// with, for each app that is not, its last status, the daemon's lines
    /// about it and its own output: why it is not, where a busy daemon log
    /// has long scrolled past it.
    pub fn wait_for_running(&self, names: &[String], deadline: Duration) {
        // Each app not running, with its status when the daemon lists it.
        let not_running = || -> Result<Vec<(&String, Option<AppStatus>)>, String> {
            let apps = self.try_status()?;
            Ok(names
                .iter()
                .filter_map(|name| match apps.iter().find(|a| &a.name == name) {
                    Some(app) if app.state == State::Running => None,
                    app => Some((name, app.cloned())),
                })
                .collect())
        };
        if poll_until(deadline, || not_running().is_ok_and(|left| left.is_empty())) {
            return;
        }
        let why = match not_running() {
            Err(e) => e,
            Ok(left) => left
                .iter()
                .map(|(name, app)| {
                    let status = match app {
                        Some(app) => format!("{app:#?}"),
                        None => format!("{name}: not listed"),
                    };
                    let output = self.appctl(["logs", name.as_str(), "-n", "30"]);
                    format!(
                        "{status}\n{}\n--- its output ---\n{}",
                        self.app_log_tail(name, 30),
                        describe_output(&output)
                    )
                })
                .collect::<Vec<_>>()
                .join("\n"),
        };
        panic!(
            "timed out after {deadline:?} waiting for {} apps to be running; not running:\n{why}\n{}",
            names.len(),
            self.log_tail(30)
        );
    }

    /// Waits until app `name` is in `state`, returning its status; on the
    /// deadline panics with the app's last status and the daemon log.
    pub fn wait_for_state(&self, name: &str, state: State, deadline: Duration) -> AppStatus {
        let mut last: Result<Option<AppStatus>, String> = Ok(None);
        let reached = poll_until(deadline, || {
            last = self
                .try_status()
                .map(|apps| apps.into_iter().find(|a| a.name == name));
            matches!(&last, Ok(Some(app)) if app.state == state)
        });
        match last {
            Ok(Some(app)) if reached => app,
            last => panic!(
                "timed out after {deadline:?} waiting for app {name:?} to be {state}; \
                 its last status: {}\n{}",
                match last {
                    Ok(Some(app)) => format!("{app:#?}"),
                    Ok(None) => "not listed".to_owned(),
                    Err(e) => e,
                },
                self.log_tail(60)
            ),
        }
    }

    /// Sends SIGTERM and waits up to `within` for the daemon to exit.
    pub fn terminate(&mut self, within: Duration) -> ExitStatus {
        self.signal(Signal::SIGTERM);
        let mut status = None;
        if !poll_until(within, || {
            status = self.try_wait();
            status.is_some()
        }) {
            panic!(
                "appvisord did not exit within {within:?} of SIGTERM\n{}",
                self.log_tail(60)
            );
        }
        status.expect("exit status after poll")
    }

    /// Sends `signal` to the daemon.
    pub fn signal(&self, signal: Signal) {
        let _ = kill(Pid::from_raw(self.pid as i32), signal);
    }

    /// SIGKILLs the daemon and reaps it, leaving its apps and cgroup
    /// subtree for a successor started with [`DaemonOptions::cgroup`] set to
    /// the returned name.
    pub fn kill_hard(mut self) -> String {
        self.signal(Signal::SIGKILL);
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
        self.leave_cgroup = true;
        self.cgroup.clone()
    }

    /// SIGKILLs the daemon (a crash: nothing is handed over), reaps it,
    /// runs `meanwhile`, and starts a successor on the same prefix and
    /// cgroup subtree with `options`, in its place.
    pub fn crash_and_restart(
        &mut self,
        prefix: &Prefix,
        options: DaemonOptions,
        meanwhile: impl FnOnce(),
    ) {
        self.signal(Signal::SIGKILL);
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
        self.leave_cgroup = true;
        meanwhile();
        let successor = Daemon::start(
            prefix,
            DaemonOptions {
                cgroup: Some(self.cgroup.clone()),
                ..options
            },
        );
        // The old value has no child left and leaves the cgroups alone.
        drop(std::mem::replace(self, successor));
    }

    /// `GET /v1/daemon`, over the control socket as root.
    pub fn daemon_status(&self) -> appvisor_protocol::DaemonStatus {
        daemon_status_at(&self.socket)
    }

    fn stop_process(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        self.signal(Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if child.try_wait().ok().flatten().is_some() {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        eprintln!(
            "appvisord (pid {}) ignored SIGTERM for 30s: SIGKILL",
            self.pid
        );
        let _ = child.kill();
        let _ = child.wait();
    }

    fn clean_cgroups(&self) {
        let mut dirs: Vec<PathBuf> = self
            .cgroup_candidates
            .iter()
            .filter(|d| d.is_dir())
            .cloned()
            .collect();
        dirs.extend(v1_cgroup_dirs(&self.cgroup));
        for dir in dirs {
            let left = procfs::kill_cgroup_tree(&dir, Duration::from_secs(5));
            if !left.is_empty() {
                eprintln!(
                    "processes left in {} after SIGKILL: {left:?}",
                    dir.display()
                );
            }
            let failed = procfs::remove_cgroup_tree(&dir);
            if !failed.is_empty() {
                eprintln!("could not remove cgroups: {failed:?}");
            }
        }
    }
}

/// `GET /v1/daemon` from the daemon listening on `socket`, as root.
pub fn daemon_status_at(socket: &Path) -> appvisor_protocol::DaemonStatus {
    let mut stream = UnixStream::connect(socket)
        .unwrap_or_else(|e| panic!("connecting to {}: {e}", socket.display()));
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    stream
        .write_all(b"GET /v1/daemon HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .expect("sending GET /v1/daemon");
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .expect("reading GET /v1/daemon");
    let text = String::from_utf8_lossy(&response);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body)
        .unwrap_or_else(|| panic!("no body in {text:?}"));
    let json = &body[body.find('{').unwrap_or(0)..=body.rfind('}').unwrap_or(0)];
    serde_json::from_str(json).unwrap_or_else(|e| panic!("GET /v1/daemon: {e}: {text:?}"))
}

/// A command's exit status, stdout and stderr, for failure messages.
pub fn describe_output(out: &Output) -> String {
    format!(
        "status: {}{}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        out.status
            .signal()
            .map(|s| format!(" (signal {s})"))
            .unwrap_or_default(),
        String::from_utf8_lossy(&out.stdout).trim_end(),
        String::from_utf8_lossy(&out.stderr).trim_end()
    )
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop_process();
        if !self.leave_cgroup {
            self.clean_cgroups();
        }
        if thread::panicking() {
            eprintln!("{}", self.log_tail(200));
        }
    }
}
