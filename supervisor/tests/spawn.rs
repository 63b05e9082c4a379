//! The exec helper for real: the built `appvisord` in `__exec-app` mode
//! starts commands as `nobody` and the tests look at the result from
//! outside, through /proc and the commands' own output.
//!
//! Root only (setuid, setgroups, cgroups); each test reaps its own child.

use std::fs;
use std::io::Read;
use std::net::TcpListener;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use appvisor::sandbox::{Rlimit, RlimitResource, SandboxPlan};
use appvisor::spawn::{spawn_with_helper, SpawnFailure, SpawnPlan, SpawnStep};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

const NOBODY: u32 = 65534;

fn helper() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_appvisord"))
}

fn is_root() -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        appvisor_tests::skip("needs root (it changes uid, groups and cgroups)");
    }
    root
}

/// A fresh cgroup v2 directory for one test, named PREFIX-PID: its name and
/// path, or `None` (skipped, saying why) where the tree is not writable.
fn test_cgroup(prefix: &str) -> Option<(String, PathBuf)> {
    let name = format!("{prefix}-{}", std::process::id());
    let cgroup = Path::new("/sys/fs/cgroup/unified").join(&name);
    match fs::create_dir(&cgroup) {
        Ok(()) => Some((name, cgroup)),
        Err(e) => {
            appvisor_tests::skip(format_args!("needs a writable cgroup v2 tree ({e})"));
            None
        }
    }
}

/// A directory `nobody` may enter.
fn open_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn plan(argv: &[&str], directory: &Path) -> SpawnPlan {
    SpawnPlan {
        app: "probe".into(),
        program: PathBuf::from(argv[0]),
        argv: argv.iter().map(|s| s.to_string()).collect(),
        env: vec![
            ("HOME".into(), "/nonexistent".into()),
            ("PATH".into(), "/usr/bin:/bin".into()),
        ],
        directory: directory.to_owned(),
        uid: NOBODY,
        gid: NOBODY,
        groups: vec![NOBODY],
        umask: 0o022,
        cgroup_procs: None,
        rlimits: Vec::new(),
        listen_names: Vec::new(),
        extra_cgroup_procs: Vec::new(),
        sandbox: SandboxPlan::unconfined(),
    }
}

fn pipe() -> (OwnedFd, OwnedFd) {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).unwrap()
}

fn read_all(fd: OwnedFd) -> String {
    let mut out = String::new();
    fs::File::from(fd).read_to_string(&mut out).unwrap();
    out
}

/// A finished run: the helper's outcome, the command's output and status.
struct Run {
    pid: Pid,
    outcome: Result<(), SpawnFailure>,
    stdout: String,
    stderr: String,
    status: WaitStatus,
}

/// Spawns `plan`, reads the report, both outputs to EOF, and reaps.
fn run(plan: &SpawnPlan, listen: &[std::os::fd::BorrowedFd<'_>]) -> Run {
    let (out_r, out_w) = pipe();
    let (err_r, err_w) = pipe();
    let spawned = spawn_with_helper(helper(), plan, out_w, err_w, listen).unwrap();
    let pid = Pid::from_raw(spawned.pid as i32);
    let outcome = spawned.report.outcome_blocking();
    let stdout = read_all(out_r);
    let stderr = read_all(err_r);
    let status = waitpid(pid, None).unwrap();
    Run {
        pid,
        outcome,
        stdout,
        stderr,
        status,
    }
}

/// A command that keeps running until the guard kills and reaps it.
struct Running(Pid);

impl Running {
    fn start(plan: &SpawnPlan) -> Running {
        let (_, out_w) = pipe();
        let (_, err_w) = pipe();
        let spawned = spawn_with_helper(helper(), plan, out_w, err_w, &[]).unwrap();
        let running = Running(Pid::from_raw(spawned.pid as i32));
        spawned
            .report
            .outcome_blocking()
            .expect("the command execs");
        running
    }

    fn proc_file(&self, name: &str) -> String {
        fs::read_to_string(format!("/proc/{}/{name}", self.0)).unwrap()
    }

    /// The whitespace-separated values of one `/proc/PID/status` line.
    fn status_field(&self, key: &str) -> Vec<String> {
        let status = self.proc_file("status");
        let line = status
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{key}:")))
            .unwrap_or_else(|| panic!("no {key} in /proc/{}/status", self.0));
        line.split_whitespace().map(str::to_owned).collect()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = kill(self.0, Signal::SIGKILL);
        let _ = waitpid(self.0, None);
    }
}

fn strings(values: &[&str]) -> Vec<String> {
    values.iter().map(|s| s.to_string()).collect()
}

#[test]
fn runs_as_the_planned_user_groups_and_limits() {
    if !is_root() {
        return;
    }
    let dir = open_dir();
    let mut plan = plan(&["/usr/bin/sleep", "30"], dir.path());
    plan.groups = vec![NOBODY, 4242];
    plan.rlimits = vec![Rlimit {
        resource: RlimitResource::OpenFiles,
        soft: 1234,
        hard: 1234,
    }];
    let app = Running::start(&plan);

    assert_eq!(app.status_field("Uid"), strings(&["65534"; 4]));
    assert_eq!(app.status_field("Gid"), strings(&["65534"; 4]));
    assert_eq!(app.status_field("Groups"), strings(&["4242", "65534"]));
    assert_eq!(app.status_field("NoNewPrivs"), strings(&["1"]));
    assert_eq!(app.status_field("CapEff"), strings(&["0000000000000000"]));
    assert_eq!(app.status_field("CapPrm"), strings(&["0000000000000000"]));
    // Rust ignores SIGPIPE in the helper; the app must start from defaults.
    // glibc keeps signals 32 and 33 for itself and will not reset them
    // (some test runners leave 32 ignored), so they are left out.
    let glibc_internal = (1u64 << 31) | (1u64 << 32);
    for field in ["SigIgn", "SigBlk"] {
        let mask = u64::from_str_radix(&app.status_field(field)[0], 16).unwrap();
        assert_eq!(mask & !glibc_internal, 0, "{field} {mask:016x}");
    }

    let limits = app.proc_file("limits");
    let open_files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    assert_eq!(
        open_files.split_whitespace().collect::<Vec<_>>(),
        ["Max", "open", "files", "1234", "1234", "files"]
    );

    let cwd = fs::read_link(format!("/proc/{}/cwd", app.0)).unwrap();
    assert_eq!(cwd, dir.path().canonicalize().unwrap());
}

#[test]
fn runs_in_its_own_session() {
    if !is_root() {
        return;
    }
    let dir = open_dir();
    let app = Running::start(&plan(&["/usr/bin/sleep", "30"], dir.path()));
    // /proc/PID/stat: "pid (comm) state ppid pgrp session ..."; comm is
    // "sleep", so splitting on whitespace is safe.
    let stat = app.proc_file("stat");
    let fields: Vec<&str> = stat.split_whitespace().collect();
    let pid = app.0.to_string();
    assert_eq!(
        (fields[4], fields[5]),
        (pid.as_str(), pid.as_str()),
        "pgrp and session of {stat}"
    );
}

#[test]
fn environment_is_exactly_the_plan() {
    if !is_root() {
        return;
    }
    let dir = open_dir();
    let mut plan = plan(&["/usr/bin/env"], dir.path());
    plan.env.push(("EMPTY".into(), String::new()));
    plan.env.push(("SPACED".into(), "a b=c".into()));
    let run = run(&plan, &[]);

    assert_eq!(run.outcome, Ok(()));
    assert_eq!(
        run.status,
        WaitStatus::Exited(run.pid, 0),
        "stderr: {}",
        run.stderr
    );
    let want: Vec<String> = plan.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    assert_eq!(run.stdout.lines().collect::<Vec<_>>(), want);
}

#[test]
fn listen_sockets_arrive_at_3_with_listen_pid_set_to_the_app() {
    if !is_root() {
        return;
    }
    let dir = open_dir();
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let unix = UnixListener::bind(dir.path().join("admin.sock")).unwrap();
    // An fd the daemon leaked (no close-on-exec) must not reach the app.
    let _leaked =
        nix::fcntl::open("/dev/null", OFlag::O_RDONLY, nix::sys::stat::Mode::empty()).unwrap();
    // `ls` runs as a plain command, not in a pipeline: a shell that forks
    // a pipeline holds the pipe's ends until both sides are forked, and an
    // `ls` that reads /proc/$$/fd meanwhile lists them too (about 1 run in
    // 3 saw a 3 or 4 that was a pipe, not a listen socket).
    let script = r#"echo "$LISTEN_PID $$ $LISTEN_FDS $LISTEN_FDNAMES"
ls /proc/$$/fd
readlink /proc/$$/fd/3 /proc/$$/fd/4"#;
    let mut plan = plan(&["/bin/sh", "-c", script], dir.path());
    plan.listen_names = vec!["http".into(), "admin".into()];
    // As SpawnPlan::build sets them; the helper adds only LISTEN_PID.
    plan.env.push(("LISTEN_FDS".into(), "2".into()));
    plan.env
        .push(("LISTEN_FDNAMES".into(), "http:admin".into()));
    let run = run(&plan, &[tcp.as_fd(), unix.as_fd()]);

    assert_eq!(run.outcome, Ok(()));
    assert_eq!(
        run.status,
        WaitStatus::Exited(run.pid, 0),
        "stderr: {}",
        run.stderr
    );
    let inode = |fd: i32| {
        fs::read_link(format!("/proc/self/fd/{fd}"))
            .unwrap()
            .display()
            .to_string()
    };
    let want = format!(
        "{pid} {pid} 2 http:admin\n0\n1\n2\n3\n4\n{}\n{}\n",
        inode(tcp.as_raw_fd()),
        inode(unix.as_raw_fd()),
        pid = run.pid
    );
    assert_eq!(run.stdout, want);
}

#[test]
fn umask_is_applied() {
    if !is_root() {
        return;
    }
    let dir = open_dir();
    let mut plan = plan(&["/bin/sh", "-c", "umask"], dir.path());
    plan.umask = 0o027;
    let run = run(&plan, &[]);
    assert_eq!(run.outcome, Ok(()));
    assert_eq!(run.stdout, "0027\n");
}

#[test]
fn joins_the_planned_cgroup() {
    if !is_root() {
        return;
    }
    let Some((name, cgroup)) = test_cgroup("appvisor-spawn-test") else {
        return;
    };
    let dir = open_dir();
    let mut plan = plan(&["/usr/bin/sleep", "30"], dir.path());
    plan.cgroup_procs = Some(cgroup.join("cgroup.procs"));
    {
        let app = Running::start(&plan);
        let membership = app.proc_file("cgroup");
        assert!(
            membership.lines().any(|line| line == format!("0::/{name}")),
            "{membership}"
        );
    }
    fs::remove_dir(&cgroup).unwrap();
}

#[test]
fn starts_inside_its_cgroup_with_clone3() {
    if !is_root() {
        return;
    }
    let Some((name, cgroup)) = test_cgroup("appvisor-clone3-test") else {
        return;
    };
    let dir = open_dir();
    let mut plan = plan(
        &[
            "/bin/sh",
            "-c",
            "echo $$; readlink /proc/self/fd/3 | cut -c1-7; grep ^0:: /proc/self/cgroup",
        ],
        dir.path(),
    );
    // The helper would join this file itself; started inside, it must not.
    plan.cgroup_procs = Some(cgroup.join("cgroup.procs"));
    plan.listen_names = vec!["http".to_owned()];
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let cgroup_dir = fs::File::open(&cgroup).unwrap();
    let (out_r, out_w) = pipe();
    let (_err_r, err_w) = pipe();
    let spawned = appvisor::spawn::spawn_with_helper_into(
        helper(),
        &plan,
        out_w,
        err_w,
        &[listener.as_fd()],
        cgroup_dir.as_fd(),
    )
    .unwrap();
    let pid = spawned.pid;
    spawned
        .report
        .outcome_blocking()
        .expect("the command execs");
    let stdout = read_all(out_r);
    waitpid(Pid::from_raw(pid as i32), None).unwrap();
    // Its own pid, the held socket at fd 3, and the cgroup it was cloned into.
    assert_eq!(stdout, format!("{pid}\nsocket:\n0::/{name}\n"));
    fs::remove_dir(&cgroup).unwrap();
}

/// The clone's child, which shares the daemon's memory until it execs
/// (spawn/launch.rs), reports a helper it cannot execute and exits, and
/// the caller carries on with its memory, fds and signal mask intact.
#[test]
fn an_unexecutable_helper_is_reported_from_the_clone() {
    if !is_root() {
        return;
    }
    let Some((_, cgroup)) = test_cgroup("appvisor-clone3-fail") else {
        return;
    };
    let dir = open_dir();
    let plan = plan(&["/usr/bin/true"], dir.path());
    let cgroup_dir = fs::File::open(&cgroup).unwrap();
    let mask_before = fs::read_to_string("/proc/thread-self/status").unwrap();
    let mask = |status: &str| {
        status
            .lines()
            .find(|line| line.starts_with("SigBlk:"))
            .unwrap()
            .to_owned()
    };
    for _ in 0..3 {
        let (_out_r, out_w) = pipe();
        let (_err_r, err_w) = pipe();
        let spawned = appvisor::spawn::spawn_with_helper_into(
            Path::new("/nonexistent/appvisord"),
            &plan,
            out_w,
            err_w,
            &[],
            cgroup_dir.as_fd(),
        )
        .unwrap();
        let pid = Pid::from_raw(spawned.pid as i32);
        let failure = spawned.report.outcome_blocking().unwrap_err();
        assert_eq!(failure.step, SpawnStep::Helper);
        assert_eq!(failure.detail, "cannot execute the appvisord exec helper");
        assert_eq!(waitpid(pid, None).unwrap(), WaitStatus::Exited(pid, 127));
    }
    let mask_after = fs::read_to_string("/proc/thread-self/status").unwrap();
    assert_eq!(mask(&mask_after), mask(&mask_before));
    fs::remove_dir(&cgroup).unwrap();
}

/// The clone's child shares the caller's file table until it unshares it
/// (spawn/launch.rs). With thousands of fds open, like a daemon with 1,000
/// apps, and other threads opening and closing fds all the while, every
/// helper started from several threads at once still gets exactly its own
/// fds at their numbers and its own pipes, and its report's EOF arrives
/// (no copy of the report pipe stays behind in the caller).
#[test]
fn spawns_from_a_busy_file_table_get_only_their_own_fds() {
    use std::sync::atomic::{AtomicBool, Ordering};
    if !is_root() {
        return;
    }
    let Some((_, cgroup)) = test_cgroup("appvisor-clone-files") else {
        return;
    };
    let (_, hard) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    let held: Vec<fs::File> = (0..3000)
        .map(|_| fs::File::open("/dev/null").unwrap())
        .collect();
    let dir = open_dir();
    let cgroup_dir = fs::File::open(&cgroup).unwrap();
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                let files: Vec<fs::File> = (0..20)
                    .map(|_| fs::File::open("/dev/null").unwrap())
                    .collect();
                drop(files);
            }
        });
        let spawners: Vec<_> = (0..4)
            .map(|thread| {
                let (dir, cgroup_dir) = (&dir, &cgroup_dir);
                scope.spawn(move || {
                    for round in 0..5 {
                        let tag = format!("{thread}.{round}");
                        let mut plan = plan(
                            &["/bin/sh", "-c", "echo \"$0\"; ls /proc/$$/fd", &tag],
                            dir.path(),
                        );
                        plan.listen_names = vec!["http".to_owned()];
                        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
                        let (out_r, out_w) = pipe();
                        let (_err_r, err_w) = pipe();
                        let spawned = appvisor::spawn::spawn_with_helper_into(
                            helper(),
                            &plan,
                            out_w,
                            err_w,
                            &[listener.as_fd()],
                            cgroup_dir.as_fd(),
                        )
                        .unwrap();
                        let pid = Pid::from_raw(spawned.pid as i32);
                        spawned
                            .report
                            .outcome_blocking()
                            .expect("the command execs");
                        let stdout = read_all(out_r);
                        assert_eq!(waitpid(pid, None).unwrap(), WaitStatus::Exited(pid, 0));
                        assert_eq!(stdout, format!("{tag}\n0\n1\n2\n3\n"));
                    }
                })
            })
            .collect();
        let results: Vec<_> = spawners.into_iter().map(|s| s.join()).collect();
        stop.store(true, Ordering::Relaxed);
        for result in results {
            if let Err(panic) = result {
                std::panic::resume_unwind(panic);
            }
        }
    });
    drop(held);
    fs::remove_dir(&cgroup).unwrap();
}

#[test]
fn missing_directory_fails_at_chdir() {
    if !is_root() {
        return;
    }
    let run = run(&plan(&["/usr/bin/true"], Path::new("/nonexistent")), &[]);
    let failure = run.outcome.unwrap_err();
    assert_eq!(
        failure,
        SpawnFailure::new(SpawnStep::Chdir, Errno::ENOENT, "/nonexistent")
    );
    assert_eq!(
        failure.to_string(),
        "spawn failed at chdir /nonexistent: No such file or directory"
    );
    assert_eq!(run.status, WaitStatus::Exited(run.pid, 127));
    assert_eq!(run.stdout, "");
}

#[test]
fn directory_the_user_cannot_enter_fails_at_chdir() {
    if !is_root() {
        return;
    }
    // Root could enter it, nobody cannot, and chdir runs as the app's user.
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
    let run = run(&plan(&["/usr/bin/true"], dir.path()), &[]);
    let failure = run.outcome.unwrap_err();
    assert_eq!(
        failure.to_string(),
        format!(
            "spawn failed at chdir {}: Permission denied",
            dir.path().display()
        )
    );
}

#[test]
fn missing_program_fails_at_exec() {
    if !is_root() {
        return;
    }
    let dir = open_dir();
    let run = run(&plan(&["/nonexistent/prog", "--flag"], dir.path()), &[]);
    let failure = run.outcome.unwrap_err();
    assert_eq!(
        failure,
        SpawnFailure::new(SpawnStep::Exec, Errno::ENOENT, "/nonexistent/prog")
    );
    assert_eq!(
        failure.to_string(),
        "spawn failed at exec /nonexistent/prog: No such file or directory"
    );
    assert_eq!(run.status, WaitStatus::Exited(run.pid, 127));
}

#[test]
fn uid_0_is_refused() {
    if !is_root() {
        return;
    }
    let dir = open_dir();
    let mut plan = plan(&["/usr/bin/true"], dir.path());
    plan.uid = 0;
    let run = run(&plan, &[]);
    assert_eq!(
        run.outcome.unwrap_err().to_string(),
        "spawn failed at setuid: uid 0 is refused"
    );
}

#[test]
fn outcome_is_awaitable_in_tokio() {
    if !is_root() {
        return;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    let plan = plan(&["/usr/bin/true"], Path::new("/nonexistent"));
    let (_, out_w) = pipe();
    let (_, err_w) = pipe();
    let spawned = spawn_with_helper(helper(), &plan, out_w, err_w, &[]).unwrap();
    let outcome = runtime.block_on(spawned.report.outcome());
    waitpid(Pid::from_raw(spawned.pid as i32), None).unwrap();
    assert_eq!(outcome.unwrap_err().step, SpawnStep::Chdir);
}

#[test]
fn helper_mode_refuses_to_run_by_hand() {
    let output = Command::new(helper())
        .args(["__exec-app", "probe"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "appvisord: __exec-app is internal to appvisord and is not run by hand\n"
    );
}
