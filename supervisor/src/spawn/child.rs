//! The exec helper: `appvisord __exec-app NAME`, run by the daemon for each
//! spawn. It applies a [`SpawnPlan`] to its own process, then execs the app
//! in place, so the app keeps the helper's pid (which is why the helper, not
//! the daemon, sets `LISTEN_PID`).
//!
//! The daemon is multi-threaded, so it never runs this code between fork and
//! exec; the helper is a fresh single-threaded process and may allocate. It
//! must never start threads, install signal handlers, initialise tracing or
//! touch anything of the daemon's state: its only outputs are the exec, or
//! one [`SpawnFailure`] line on the report pipe followed by exit status 127.
//!
//! File descriptors on entry (set up by `spawn::spawn_with_helper`):
//! 0 /dev/null, 1 and 2 the log pipes, 3 the plan (read to EOF, JSON),
//! 4 the report pipe's write end, 5.. the held listen sockets.

use std::convert::Infallible;
use std::ffi::{CString, OsStr};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg};
use nix::sys::signal::{sigprocmask, SigHandler, SigSet, SigmaskHow, Signal};
use nix::sys::stat::{fstat, umask, Mode, SFlag};
use nix::unistd::{chdir, getpid, setgroups, setresgid, setresuid, setsid, setuid, Gid, Uid};

use super::plan::SpawnPlan;
use super::report::{Applied, SpawnFailure, SpawnStep};
use super::{FIRST_LISTEN_FD, HELPER_ARG, PLAN_FD, REPORT_FD};
use crate::sandbox;

/// The exit status of a helper that failed before exec, as a shell reports
/// a command it could not run.
pub const EXIT_SPAWN_FAILED: i32 = 127;

/// Exit status when `__exec-app` is run by hand rather than by the daemon.
const EXIT_USAGE: i32 = 2;

/// Fds the helper keeps for itself are moved to this number or above, clear
/// of 0..=2 and of the 3.. range the listen sockets end up in.
const HIGH_FD: RawFd = 100;

/// For `main`, before anything else: when the process was started as the
/// exec helper (`argv[1] == "__exec-app"`) it runs the helper and never
/// returns; otherwise it returns at once.
pub fn dispatch_from_args() {
    if std::env::args_os().nth(1).as_deref() == Some(OsStr::new(HELPER_ARG)) {
        run_exec_helper()
    }
}

/// Applies the plan on fd 3 and execs the app; on failure reports on fd 4
/// and exits with [`EXIT_SPAWN_FAILED`].
pub fn run_exec_helper() -> ! {
    if !is_fifo(REPORT_FD) {
        // Run by hand: fd 4 is not our report pipe, so write nothing to it.
        eprintln!("appvisord: {HELPER_ARG} is internal to appvisord and is not run by hand");
        exit_now(EXIT_USAGE);
    }
    // SAFETY: the daemon's fd layout puts the report pipe at fd 4 (checked to
    // be a pipe just above) and nothing else in this fresh process owns it.
    let mut report = unsafe { OwnedFd::from_raw_fd(REPORT_FD) };
    let outcome =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| apply_and_exec(&mut report)));
    let failure = match outcome {
        Ok(Err(failure)) => failure,
        Ok(Ok(never)) => match never {},
        Err(_) => SpawnFailure {
            step: SpawnStep::Helper,
            errno: 0,
            detail: "the exec helper panicked (its message is in the app's stderr log)".into(),
        },
    };
    send_report(&report, &failure);
    exit_now(EXIT_SPAWN_FAILED)
}

/// The plan in the form the syscalls take, converted before the first
/// privileged step so a bad string fails early and alone.
struct Prepared {
    plan: SpawnPlan,
    program: CString,
    argv: Vec<CString>,
    env: Vec<CString>,
}

/// The steps, in their fixed order. Each comment says why the step sits
/// where it does.
fn apply_and_exec(report: &mut OwnedFd) -> Result<Infallible, SpawnFailure> {
    // 1. Read the plan first: every later step needs it, and it is the only
    //    input. The plan fd is closed once read, so the app never sees it.
    let prepared = read_plan()?;
    let plan = &prepared.plan;

    // 2. Move our own fds out of the way before anything else can open one:
    //    the report pipe and the listen sockets go to 100 and above, close-on-
    //    exec, so the exec closes the report pipe (the daemon reads EOF as
    //    success) and fds 3.. are free for the listen sockets. Every other
    //    inherited fd is marked close-on-exec too: the app gets exactly
    //    0, 1, 2 and its listen sockets, whatever the daemon leaked.
    let listen = move_fds(report, plan.listen_fds())?;

    // 3. Signals: dispositions set to "ignore" survive exec, and the Rust
    //    runtime of this very helper ignores SIGPIPE; the blocked mask
    //    survives exec too. The app must start from the defaults.
    reset_signals()?;

    // 4. Join the app's cgroup while still root (cgroup.procs is the
    //    daemon's) and before anything can fork, so every process the app
    //    ever starts is born inside it and a stop can empty it.
    if let Some(procs) = &plan.cgroup_procs {
        join_cgroup(procs)?;
    }
    // The v1 memory, pids and cpu cgroups that carry the app's limits on a
    // hybrid host: joined at the same point for the same reason, through
    // their `tasks` files (this thread only, which is all of this
    // single-threaded helper, without the kernel's global lock).
    for procs in &plan.extra_cgroup_procs {
        join_cgroup(procs)?;
    }

    // 5. A new session: own process group, no controlling terminal. A fresh
    //    child of the daemon is never a group leader, so this cannot fail
    //    with EPERM; signals sent to the daemon's group no longer reach apps.
    setsid().map_err(|e| SpawnFailure::new(SpawnStep::Setsid, e, ""))?;

    // 6. Resource limits while still root: raising a hard limit needs
    //    CAP_SYS_RESOURCE, gone after setuid.
    for limit in &plan.rlimits {
        sandbox::apply_rlimit(limit).map_err(|e| {
            let detail = format!("{}={}", limit.resource.kernel_name(), limit.hard);
            SpawnFailure::new(SpawnStep::Rlimit, e, detail)
        })?;
    }

    // 7. Namespaces while still root: unshare and mounting need
    //    CAP_SYS_ADMIN. Mount, IPC, UTS and (network = "none") network
    //    namespaces, then the private /tmp and /var/tmp, the hidden paths
    //    and the app's own /proc. Before chdir, which then resolves the
    //    directory in the new mount view, and before Landlock, whose /tmp
    //    and /proc rules must name the new mounts.
    sandbox::namespaces::enter(&plan.sandbox.namespaces)
        .map_err(|e| SpawnFailure::new(SpawnStep::Namespaces, e.errno(), e.detail()))?;

    // 8. A session keyring of the app's own, replacing the daemon's that
    //    every app would otherwise share. While still root, so the
    //    keyring is root's and counts against root's key quota, not the
    //    app's user's. Before seccomp, which leaves keyctl open but would
    //    be the wrong place to fail.
    if plan.sandbox.session_keyring {
        sandbox::keyring::join_own_session()
            .map_err(|e| SpawnFailure::new(SpawnStep::Keyring, e, ""))?;
    }

    // 9. umask: inherited across exec, and set before the app can create
    //    anything.
    let mask = Mode::from_bits(plan.umask as nix::libc::mode_t)
        .filter(|_| plan.umask <= 0o777)
        .ok_or_else(|| {
            SpawnFailure::new(
                SpawnStep::Umask,
                Errno::EINVAL,
                format!("{:04o}", plan.umask),
            )
        })?;
    umask(mask);

    // 10. Capabilities: empty the bounding set here, before setuid, because
    //    PR_CAPBSET_DROP needs CAP_SETPCAP; also the inheritable and ambient
    //    sets. setuid below then clears the permitted and effective sets.
    sandbox::capabilities::drop_all()
        .map_err(|e| SpawnFailure::new(SpawnStep::Capabilities, Errno::EPERM, e.to_string()))?;

    // 11-13. Identity: groups, then gid, then uid. setgroups and setgid need
    //    root, so they come before setuid, which gives root up for good.
    //    setres[ug]id set real, effective and saved ids alike, so no saved
    //    id is left to switch back to.
    drop_to_user(plan)?;

    // 14. Prove it: a process that still has any root id (or CAP_SETUID)
    //    could get root back. If setuid(0) works, the spawn fails.
    check_root_is_gone(plan.uid)?;

    // 15. chdir as the app's user, after setuid: the kernel then checks the
    //    app user's own search permission along the path, so an app never
    //    starts in a directory it could not reach by itself (and root-squashed
    //    network file systems work). The path is followed as a whole at
    //    each spawn, so switching a `current` symlink to a new release takes
    //    effect on the next start.
    chdir(&plan.directory)
        .map_err(|e| SpawnFailure::new(SpawnStep::Chdir, e, path_detail(&plan.directory)))?;

    // 16. no_new_privs: no later exec may gain privileges through setuid
    //    bits or file capabilities. Landlock requires it of an unprivileged
    //    process, so it precedes Landlock.
    if plan.sandbox.no_new_privs {
        sandbox::set_no_new_privs().map_err(|e| SpawnFailure::new(SpawnStep::NoNewPrivs, e, ""))?;
    }

    // 17. Prove the capability sets are all empty now, as the kernel
    //    promises for setuid from root without keep-caps.
    let capabilities = sandbox::capabilities::check_all_empty().map_err(|e| SpawnFailure {
        step: SpawnStep::Capabilities,
        errno: 0,
        detail: e.to_string(),
    })?;

    // 18. Landlock, after chdir and last but seccomp, because it restricts
    //    this helper too: what the exec needs (the program, its interpreter
    //    and libraries) must be allowed by the rules, and nothing after this
    //    opens a path. Every path is checked to stay inside its anchor
    //    (sandbox::paths) and the rule built on exactly what was checked, or
    //    to lead only to what the system rules grant already (no rule of its
    //    own then); the directory rule on the current directory, entered in
    //    step 15.
    let landlock = match &plan.sandbox.landlock {
        Some(landlock) => {
            let mut record = sandbox::landlock::decide(landlock, sandbox::landlock::kernel_abi())
                .map_err(|refusal| SpawnFailure {
                step: SpawnStep::Landlock,
                errno: 0,
                detail: refusal.to_string(),
            })?;
            record.granted = sandbox::landlock::apply(landlock, &record).map_err(|e| match e {
                // Out of its anchor (or a loop): the sandbox refuses.
                sandbox::landlock::LandlockError::Confine { .. } => SpawnFailure {
                    step: SpawnStep::Paths,
                    errno: 0,
                    detail: e.to_string(),
                },
                _ => match e.errno() {
                    Errno::UnknownErrno => SpawnFailure {
                        step: SpawnStep::Landlock,
                        errno: 0,
                        detail: error_chain(&e),
                    },
                    errno => SpawnFailure::new(SpawnStep::Landlock, errno, e.to_string()),
                },
            })?;
            Some(record)
        }
        None => None,
    };

    // 19. seccomp, last: after it, the helper only moves fds and execs,
    //    none of which the filter refuses. It needs no_new_privs (step 16).
    if let Some(seccomp) = &plan.sandbox.seccomp {
        sandbox::seccomp::install(seccomp).map_err(|e| SpawnFailure {
            step: SpawnStep::Seccomp,
            errno: e.errno(),
            detail: error_chain(&e),
        })?;
    }

    // 20. What is in force goes to the daemon now, read back from the
    //    kernel where it can be; a later failure adds a failure line.
    let verified = sandbox::Verified {
        no_new_privs: nix::sys::prctl::get_no_new_privs().unwrap_or(false),
        // Read back at step 17; nothing since changes a capability.
        capabilities,
        seccomp: plan
            .sandbox
            .seccomp
            .as_ref()
            .map(|s| s.socket_families.clone()),
        session_keyring: plan.sandbox.session_keyring,
        private_proc: plan.sandbox.namespaces.private_proc,
    };
    send_line(report, &Applied { landlock, verified }.to_line());

    // 21. Listen sockets to 3.. without close-on-exec, and LISTEN_PID: our
    //    pid is the app's pid, as exec keeps it. Last, so no step above
    //    could have clobbered fds 3.. in between.
    let mut env = prepared.env;
    if !listen.is_empty() {
        install_listen_fds(&listen)?;
        let pid = format!("LISTEN_PID={}", getpid());
        env.push(CString::new(pid).expect("a decimal pid has no NUL byte"));
    }

    // 22. Exec. On success the kernel closes the report pipe (close-on-exec)
    //    and the daemon reads EOF.
    let errno = nix::unistd::execve(&prepared.program, &prepared.argv, &env).unwrap_err();
    Err(SpawnFailure::new(
        SpawnStep::Exec,
        errno,
        path_detail(&plan.program),
    ))
}

fn read_plan() -> Result<Prepared, SpawnFailure> {
    let fail = |errno: Errno, detail: String| SpawnFailure::new(SpawnStep::ReadPlan, errno, detail);
    if !is_open(PLAN_FD) {
        return Err(fail(Errno::EBADF, format!("fd {PLAN_FD}")));
    }
    // SAFETY: the daemon's fd layout puts the plan at fd 3 (checked open just
    // above) and nothing else in this process owns it.
    let mut file = File::from(unsafe { OwnedFd::from_raw_fd(PLAN_FD) });
    let mut json = Vec::new();
    file.read_to_end(&mut json)
        .map_err(|e| fail(io_errno(&e), format!("fd {PLAN_FD}")))?;
    drop(file);
    let plan: SpawnPlan =
        serde_json::from_slice(&json).map_err(|e| fail(Errno::EINVAL, e.to_string()))?;

    let cstring = |what: &str, s: &[u8]| {
        CString::new(s).map_err(|_| fail(Errno::EINVAL, format!("{what} contains a NUL byte")))
    };
    let program = cstring("program", plan.program.as_os_str().as_bytes())?;
    if plan.argv.is_empty() {
        return Err(fail(Errno::EINVAL, "empty command".into()));
    }
    let argv = plan
        .argv
        .iter()
        .map(|arg| cstring("command", arg.as_bytes()))
        .collect::<Result<_, _>>()?;
    let env = plan
        .env
        .iter()
        .map(|(key, value)| {
            if key.is_empty() || key.contains('=') {
                return Err(fail(Errno::EINVAL, format!("environment name {key:?}")));
            }
            cstring("environment", format!("{key}={value}").as_bytes())
        })
        .collect::<Result<_, _>>()?;
    Ok(Prepared {
        plan,
        program,
        argv,
        env,
    })
}

/// Moves the report fd and the `n` listen sockets to [`HIGH_FD`] or above,
/// close-on-exec, and marks every other fd from 3 up close-on-exec.
fn move_fds(report: &mut OwnedFd, n: usize) -> Result<Vec<OwnedFd>, SpawnFailure> {
    let fail = |errno, detail: String| SpawnFailure::new(SpawnStep::Fds, errno, detail);
    let first_listen = FIRST_LISTEN_FD as usize;
    // Above every target fd 3..3+n, even with many sockets.
    let high = HIGH_FD.max(
        RawFd::try_from(first_listen + n)
            .map_err(|_| fail(Errno::EMFILE, format!("{n} listen fds")))?,
    );

    *report = dup_high(report, high).map_err(|e| fail(e, format!("report fd {REPORT_FD}")))?;

    let mut listen = Vec::with_capacity(n);
    for fd in (0..n).map(|i| FIRST_LISTEN_FD + i as RawFd) {
        if !is_open(fd) {
            return Err(SpawnFailure::new(
                SpawnStep::ListenFds,
                Errno::EBADF,
                format!("fd {fd}"),
            ));
        }
        // SAFETY: the daemon's fd layout puts the listen sockets at 5..5+n
        // (checked open just above); nothing else in this process owns them.
        let inherited = unsafe { OwnedFd::from_raw_fd(fd) };
        listen.push(dup_high(&inherited, high).map_err(|e| fail(e, format!("listen fd {fd}")))?);
    }

    mark_cloexec_from(3).map_err(|e| fail(e, "close_range".into()))?;
    Ok(listen)
}

/// `F_DUPFD_CLOEXEC`: a close-on-exec copy at `min` or above; the original
/// is closed when the caller drops it.
fn dup_high(fd: &OwnedFd, min: RawFd) -> Result<OwnedFd, Errno> {
    let new = fcntl(fd, FcntlArg::F_DUPFD_CLOEXEC(min))?;
    // SAFETY: fcntl just created `new`; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// Marks every fd from `first` up close-on-exec: close_range(2) with
/// CLOSE_RANGE_CLOEXEC (Linux 5.11); on older kernels, each fd listed in
/// /proc/self/fd.
fn mark_cloexec_from(first: RawFd) -> Result<(), Errno> {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets a flag on
    // descriptors; it closes nothing, so no owned fd is invalidated.
    let rc = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_close_range,
            first as nix::libc::c_uint,
            nix::libc::c_uint::MAX,
            nix::libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    match Errno::result(rc) {
        Ok(_) => Ok(()),
        Err(Errno::ENOSYS | Errno::EINVAL) => {
            let entries = std::fs::read_dir("/proc/self/fd").map_err(|e| io_errno(&e))?;
            for entry in entries {
                let entry = entry.map_err(|e| io_errno(&e))?;
                let Some(fd) = entry
                    .file_name()
                    .to_str()
                    .and_then(|s| s.parse::<RawFd>().ok())
                else {
                    continue;
                };
                if fd >= first {
                    set_cloexec_raw(fd)?;
                }
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}

fn set_cloexec_raw(fd: RawFd) -> Result<(), Errno> {
    // SAFETY: F_GETFD/F_SETFD only read and set the descriptor's flags; an fd
    // that closed meanwhile (the read_dir handle) just gives EBADF.
    let flags = unsafe { nix::libc::fcntl(fd, nix::libc::F_GETFD) };
    if flags < 0 {
        return Ok(());
    }
    // SAFETY: as above.
    let rc = unsafe { nix::libc::fcntl(fd, nix::libc::F_SETFD, flags | nix::libc::FD_CLOEXEC) };
    Errno::result(rc).map(drop)
}

/// Every signal back to its default disposition, nothing blocked.
fn reset_signals() -> Result<(), SpawnFailure> {
    for signal in Signal::iterator() {
        if matches!(signal, Signal::SIGKILL | Signal::SIGSTOP) {
            continue;
        }
        // SAFETY: SIG_DFL installs no handler, so no code of ours can run
        // asynchronously; the helper is single-threaded.
        unsafe { nix::sys::signal::signal(signal, SigHandler::SigDfl) }
            .map_err(|e| SpawnFailure::new(SpawnStep::Signals, e, signal.as_str()))?;
    }
    // Realtime signals, which nix's Signal does not cover. glibc keeps 32
    // and 33 for itself (SIGRTMIN() is above them) and refuses to touch them.
    for signal in nix::libc::SIGRTMIN()..=nix::libc::SIGRTMAX() {
        // SAFETY: as above, SIG_DFL installs no handler.
        let previous = unsafe { nix::libc::signal(signal, nix::libc::SIG_DFL) };
        if previous == nix::libc::SIG_ERR {
            return Err(SpawnFailure::new(
                SpawnStep::Signals,
                Errno::last(),
                format!("signal {signal}"),
            ));
        }
    }
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
        .map_err(|e| SpawnFailure::new(SpawnStep::Signals, e, "sigprocmask"))
}

fn join_cgroup(procs: &Path) -> Result<(), SpawnFailure> {
    let fail =
        |e: std::io::Error| SpawnFailure::new(SpawnStep::Cgroup, io_errno(&e), path_detail(procs));
    // "0" means the writing process itself.
    let mut file = OpenOptions::new().write(true).open(procs).map_err(fail)?;
    file.write_all(b"0").map_err(fail)
}

fn drop_to_user(plan: &SpawnPlan) -> Result<(), SpawnFailure> {
    if plan.uid == 0 {
        return Err(SpawnFailure {
            step: SpawnStep::Setuid,
            errno: 0,
            detail: "uid 0 is refused".into(),
        });
    }
    let groups: Vec<Gid> = plan.groups.iter().copied().map(Gid::from_raw).collect();
    setgroups(&groups).map_err(|e| {
        let list: Vec<String> = plan.groups.iter().map(u32::to_string).collect();
        SpawnFailure::new(
            SpawnStep::Setgroups,
            e,
            format!("groups {}", list.join(",")),
        )
    })?;
    let gid = Gid::from_raw(plan.gid);
    setresgid(gid, gid, gid)
        .map_err(|e| SpawnFailure::new(SpawnStep::Setgid, e, format!("gid {gid}")))?;
    let uid = Uid::from_raw(plan.uid);
    setresuid(uid, uid, uid)
        .map_err(|e| SpawnFailure::new(SpawnStep::Setuid, e, format!("uid {uid}")))
}

fn check_root_is_gone(uid: u32) -> Result<(), SpawnFailure> {
    match setuid(Uid::from_raw(0)) {
        Err(Errno::EPERM) => Ok(()),
        Ok(()) => Err(SpawnFailure {
            step: SpawnStep::RegainRoot,
            errno: 0,
            detail: format!("setuid(0) succeeded after dropping to uid {uid}"),
        }),
        Err(e) => Err(SpawnFailure::new(SpawnStep::RegainRoot, e, "setuid(0)")),
    }
}

/// dup2 each socket to 3, 4, ...: dup2 leaves the new fd without
/// close-on-exec, so exactly these survive the exec. The high copies stay
/// close-on-exec and vanish with it.
fn install_listen_fds(listen: &[OwnedFd]) -> Result<(), SpawnFailure> {
    for (i, socket) in listen.iter().enumerate() {
        let target = 3 + i as RawFd;
        // SAFETY: dup2 on plain integers has no memory-safety effect; `target`
        // (3..3+n) is owned by nothing in this process: the plan fd was
        // closed, the inherited listen and report fds were moved above it.
        let rc = unsafe { nix::libc::dup2(socket.as_raw_fd(), target) };
        Errno::result(rc)
            .map_err(|e| SpawnFailure::new(SpawnStep::ListenFds, e, format!("fd {target}")))?;
    }
    Ok(())
}

fn send_report(report: &OwnedFd, failure: &SpawnFailure) {
    let mut line = serde_json::to_vec(failure).expect("a SpawnFailure always serializes");
    line.push(b'\n');
    send_line(report, &line);
}

fn send_line(report: &OwnedFd, mut line: &[u8]) {
    // Best effort: if the daemon is gone there is no one left to tell. The
    // helper is the pipe's only writer, so a record longer than PIPE_BUF
    // (an app with many paths) may take several writes.
    while !line.is_empty() {
        match nix::unistd::write(report.as_fd(), line) {
            Ok(0) | Err(_) => return,
            Ok(n) => line = &line[n..],
        }
    }
}

/// An error and its sources, "a: b: c".
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn exit_now(code: i32) -> ! {
    // SAFETY: _exit has no preconditions; skipping atexit handlers and stdio
    // flushing is the point, as the helper has nothing to clean up.
    unsafe { nix::libc::_exit(code) }
}

fn is_fifo(fd: RawFd) -> bool {
    if !is_open(fd) {
        return false;
    }
    // SAFETY: `fd` is open (checked just above) and stays open while borrowed:
    // the helper is single-threaded and closes nothing here.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    fstat(fd)
        .is_ok_and(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFIFO)
}

fn is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only reads the descriptor's flags; a closed fd gives
    // EBADF.
    unsafe { nix::libc::fcntl(fd, nix::libc::F_GETFD) >= 0 }
}

fn io_errno(e: &std::io::Error) -> Errno {
    e.raw_os_error().map_or(Errno::EIO, Errno::from_raw)
}

fn path_detail(path: &Path) -> String {
    path.display().to_string()
}
