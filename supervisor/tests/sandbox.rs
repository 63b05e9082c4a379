//! The sandbox's irreversible steps, each run in a forked child that exits
//! with a status the test asserts (as rust-landlock and youki test them).
//! Root only: they unshare, mount and drop capabilities.

use std::fs;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use appvisor::sandbox::landlock::{apply, decide, kernel_abi};
use appvisor::sandbox::{
    capabilities, keyring, namespaces, paths, seccomp, LandlockPlan, NamespacePlan, PathAccess,
    PathRule, Requirement, RuleOrigin, SeccompPlan, SocketFamily,
};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult};

fn is_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    appvisor_tests::skip("needs root (unshare, mount, capabilities)");
    false
}

/// Runs `body` in a forked child; returns its exit code. The child must
/// only do what `body` does, then `_exit`.
fn in_child(body: impl FnOnce() -> i32) -> i32 {
    // SAFETY: the test binary may be multi-threaded; the child only runs
    // `body`, which makes direct syscalls and small allocations, then
    // exits without unwinding into the harness.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).unwrap_or(101);
            // SAFETY: _exit has no preconditions.
            unsafe { nix::libc::_exit(code) }
        }
        ForkResult::Parent { child } => match waitpid(child, None).expect("waitpid") {
            WaitStatus::Exited(_, code) => code,
            other => panic!("child ended with {other:?}"),
        },
    }
}

fn errno_of(result: std::io::Result<impl Sized>) -> i32 {
    match result {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1),
    }
}

fn plan(paths: Vec<(PathBuf, PathAccess)>) -> LandlockPlan {
    LandlockPlan {
        mode: Requirement::Require,
        abi_max: None,
        paths: paths
            .into_iter()
            .map(|(path, access)| PathRule {
                path,
                access,
                origin: RuleOrigin::ReadOnly,
            })
            .collect(),
        bind_ports: Vec::new(),
        connect_ports: Some(Vec::new()),
    }
}

#[test]
fn landlock_allows_only_the_planned_paths() {
    if !is_root() {
        return;
    }
    if kernel_abi() < 6 {
        appvisor_tests::skip(format_args!(
            "needs Landlock ABI 6 (this kernel has {})",
            kernel_abi()
        ));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (readable, writable, hidden) = (
        dir.path().join("r"),
        dir.path().join("w"),
        dir.path().join("h"),
    );
    for d in [&readable, &writable, &hidden] {
        fs::create_dir(d).unwrap();
        fs::write(d.join("f"), "x").unwrap();
    }
    let plan = plan(vec![
        (readable.clone(), PathAccess::Read),
        (writable.clone(), PathAccess::ReadWrite),
    ]);
    let code = in_child(|| {
        let record = decide(&plan, kernel_abi()).expect("ABI 6 enforces everything");
        nix::sys::prctl::set_no_new_privs().unwrap();
        apply(&plan, &record).unwrap();
        let checks = [
            errno_of(fs::read(readable.join("f"))) == 0,
            errno_of(fs::write(readable.join("f"), "y")) == nix::libc::EACCES,
            errno_of(fs::write(writable.join("new"), "y")) == 0,
            errno_of(fs::read(hidden.join("f"))) == nix::libc::EACCES,
            errno_of(fs::read("/etc/passwd")) == nix::libc::EACCES,
            // Every TCP bind and connect is denied by this plan.
            errno_of(std::net::TcpListener::bind("127.0.0.1:0")) == nix::libc::EACCES,
        ];
        checks
            .iter()
            .position(|ok| !ok)
            .map_or(0, |i| 10 + i as i32)
    });
    assert_eq!(code, 0, "check {} failed", code - 10);
}

#[test]
fn capabilities_are_all_gone_after_setuid() {
    if !is_root() {
        return;
    }
    let code = in_child(|| {
        if capabilities::check_all_empty().is_ok() {
            return 10; // root holds capabilities: the check must see them
        }
        capabilities::drop_all().unwrap();
        let nobody = nix::unistd::Uid::from_raw(65534);
        nix::unistd::setresgid(65534.into(), 65534.into(), 65534.into()).unwrap();
        nix::unistd::setresuid(nobody, nobody, nobody).unwrap();
        match capabilities::check_all_empty() {
            Ok(held) if held.is_empty() => 0,
            Ok(_) => 12,
            Err(_) => 11,
        }
    });
    assert_eq!(code, 0);
}

#[test]
fn private_tmp_is_invisible_to_the_host() {
    if !is_root() {
        return;
    }
    let name = format!("avt-private-tmp-{}", std::process::id());
    let host_path = Path::new("/tmp").join(&name);
    let code = in_child(|| {
        let plan = NamespacePlan {
            mount: true,
            private_tmp: Some(1 << 20),
            private_proc: false,
            hide: Vec::new(),
            ipc: true,
            uts: true,
            network: true,
        };
        namespaces::enter(&plan).unwrap();
        let fresh = fs::read_dir("/tmp").unwrap().next().is_none();
        let wrote = fs::write(Path::new("/tmp").join(&name), "x").is_ok();
        // An empty network namespace has only a down loopback.
        let no_network = std::net::TcpStream::connect("1.1.1.1:53").is_err();
        match (fresh, wrote, no_network) {
            (true, true, true) => 0,
            (false, _, _) => 10,
            (_, false, _) => 11,
            (_, _, false) => 12,
        }
    });
    assert_eq!(code, 0);
    assert!(
        !host_path.exists(),
        "{} leaked to the host",
        host_path.display()
    );
}

fn become_nobody() {
    let nobody = nix::unistd::Uid::from_raw(65534);
    nix::unistd::setgroups(&[]).unwrap();
    nix::unistd::setresgid(65534.into(), 65534.into(), 65534.into()).unwrap();
    nix::unistd::setresuid(nobody, nobody, nobody).unwrap();
}

/// Kernel facts the app's mount namespace relies on (Linux 5.8+): a fresh
/// procfs with hidepid=invisible needs no PID namespace and lists only
/// what the caller may ptrace; a mode-0000 stand-in hides a path.
#[test]
fn hidden_paths_and_the_private_proc() {
    if !is_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (secret_dir, secret_file) = (dir.path().join("keys"), dir.path().join("shadow"));
    fs::create_dir(&secret_dir).unwrap();
    fs::write(secret_dir.join("k"), "x").unwrap();
    fs::write(&secret_file, "x").unwrap();
    for path in [dir.path(), secret_dir.as_path(), secret_file.as_path()] {
        fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    let code = in_child(|| {
        let plan = NamespacePlan {
            mount: true,
            private_tmp: None,
            private_proc: true,
            hide: vec![
                secret_dir.clone(),
                secret_file.clone(),
                dir.path().join("missing"),
            ],
            ipc: false,
            uts: false,
            network: false,
        };
        namespaces::enter(&plan).unwrap();
        become_nobody();
        let pids = || -> Vec<String> {
            fs::read_dir("/proc")
                .unwrap()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
                .collect()
        };
        let me = std::process::id().to_string();
        let checks = [
            errno_of(fs::read(&secret_file)) == nix::libc::EACCES,
            errno_of(fs::read_dir(&secret_dir)) == nix::libc::EACCES,
            errno_of(fs::read(secret_dir.join("k"))) == nix::libc::EACCES,
            fs::read_to_string("/proc/self/status").is_ok_and(|s| s.contains("Uid:\t65534")),
            errno_of(fs::metadata("/proc/1")) == nix::libc::ENOENT,
            pids() == [me],
            fs::read_to_string("/proc/meminfo").is_ok_and(|s| s.starts_with("MemTotal")),
        ];
        checks
            .iter()
            .position(|ok| !ok)
            .map_or(0, |i| 10 + i as i32)
    });
    assert_eq!(code, 0, "check {} failed", code - 10);
    // Nothing of it reached the host.
    assert_eq!(fs::read_to_string(&secret_file).unwrap(), "x");
}

/// The kernel fact behind refusing groups that read /etc/shadow: a mount
/// over a file is detached when another namespace renames a new file over
/// it, as `useradd` does.
#[test]
fn a_hidden_file_reappears_when_the_host_renames_over_it() {
    if !is_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("shadow");
    fs::write(&file, "old").unwrap();
    let (ready_r, ready_w) = nix::unistd::pipe().unwrap();
    let (go_r, go_w) = nix::unistd::pipe().unwrap();
    // SAFETY: as in_child; the child only makes syscalls and small
    // allocations, then exits.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            let plan = NamespacePlan {
                mount: true,
                hide: vec![file.clone()],
                ..NamespacePlan::none()
            };
            namespaces::enter(&plan).unwrap();
            let hidden = fs::metadata(&file).map(|m| m.len()).unwrap_or(99) == 0;
            nix::unistd::write(&ready_w, b"x").unwrap();
            let mut byte = [0u8];
            nix::unistd::read(&go_r, &mut byte).unwrap();
            let back = fs::read_to_string(&file).is_ok_and(|s| s == "new");
            let code = match (hidden, back) {
                (true, true) => 0,
                (false, _) => 10,
                (_, false) => 11,
            };
            // SAFETY: _exit has no preconditions.
            unsafe { nix::libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            let mut byte = [0u8];
            nix::unistd::read(&ready_r, &mut byte).unwrap();
            fs::write(dir.path().join("shadow+"), "new").unwrap();
            fs::rename(dir.path().join("shadow+"), &file).unwrap();
            nix::unistd::write(&go_w, b"x").unwrap();
            match waitpid(child, None).expect("waitpid") {
                WaitStatus::Exited(_, code) => assert_eq!(code, 0),
                other => panic!("child ended with {other:?}"),
            }
        }
    }
}

const KEYCTL_GET_KEYRING_ID: nix::libc::c_long = 0;
const KEY_SPEC_SESSION_KEYRING: nix::libc::c_long = -3;

fn session_keyring() -> nix::libc::c_long {
    // SAFETY: integer arguments only.
    unsafe {
        nix::libc::syscall(
            nix::libc::SYS_keyctl,
            KEYCTL_GET_KEYRING_ID,
            KEY_SPEC_SESSION_KEYRING,
            1,
        )
    }
}

#[test]
fn the_app_gets_a_session_keyring_of_its_own() {
    if !is_root() {
        return;
    }
    let before = session_keyring();
    let code = in_child(|| {
        keyring::join_own_session().unwrap();
        become_nobody();
        let own = session_keyring();
        let key = b"k\0";
        let kind = b"user\0";
        // SAFETY: NUL-terminated strings and a payload of the given length.
        let added = unsafe {
            nix::libc::syscall(
                nix::libc::SYS_add_key,
                kind.as_ptr(),
                key.as_ptr(),
                b"v".as_ptr(),
                1usize,
                KEY_SPEC_SESSION_KEYRING,
            )
        };
        match (own > 0 && own != before, added > 0) {
            (true, true) => 0,
            (false, _) => 10,
            (_, false) => 11,
        }
    });
    assert_eq!(code, 0, "check {} failed", code - 10);
    assert_eq!(session_keyring(), before);
}

/// More apps of one user than the kernel's per-user key quota
/// (`kernel.keys.maxkeys`, 200 by default) each get their own session
/// keyring: the keyrings are not charged to the app's user, so a user's
/// 201st app starts like its first.
#[test]
fn more_apps_of_one_user_than_its_key_quota_each_get_a_keyring() {
    if !is_root() {
        return;
    }
    let quota: usize = std::fs::read_to_string("/proc/sys/kernel/keys/maxkeys")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(200);
    let apps = quota + 20;
    let (release_r, release_w) = nix::unistd::pipe().expect("pipe");
    let (report_r, report_w) = nix::unistd::pipe().expect("pipe");
    let mut children = Vec::with_capacity(apps);
    for _ in 0..apps {
        // SAFETY: as in_child: the child makes direct syscalls only, then
        // _exits.
        match unsafe { fork() }.expect("fork") {
            ForkResult::Child => {
                // Only the parent may hold the release pipe's write end.
                // SAFETY: closes this process's copy of a descriptor it
                // owns no other handle to use.
                unsafe { nix::libc::close(release_w.as_raw_fd()) };
                let ok = keyring::join_own_session().is_ok();
                let _ = nix::unistd::write(&report_w, if ok { b"y" } else { b"n" });
                // Holds its keyring until the parent closes the pipe.
                let mut byte = [0u8; 1];
                let _ = nix::unistd::read(&release_r, &mut byte);
                // SAFETY: _exit has no preconditions.
                unsafe { nix::libc::_exit(0) }
            }
            ForkResult::Parent { child } => children.push(child),
        }
    }
    drop(report_w);
    let mut joined = 0;
    let mut refused = 0;
    let mut byte = [0u8; 1];
    while joined + refused < apps {
        match nix::unistd::read(&report_r, &mut byte) {
            Ok(1) if byte[0] == b'y' => joined += 1,
            Ok(1) => refused += 1,
            Ok(_) => break,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => panic!("reading the reports: {e}"),
        }
    }
    drop(release_w);
    for child in children {
        let _ = waitpid(child, None);
    }
    assert_eq!(
        (joined, refused),
        (apps, 0),
        "{apps} keyrings of one user at once (quota {quota})"
    );
}

/// Each refusal of the filter, and what it must leave alone.
#[test]
fn seccomp_refuses_the_deny_list_and_foreign_socket_families() {
    if !is_root() {
        return;
    }
    let plan = SeccompPlan {
        socket_families: vec![SocketFamily::Unix, SocketFamily::Inet, SocketFamily::Inet6],
    };
    let code = in_child(|| {
        nix::sys::prctl::set_no_new_privs().unwrap();
        seccomp::install(&plan).unwrap();
        // The errno of a syscall with integer (or null) arguments: refused
        // ones never run, allowed ones change nothing shared.
        let sys = |nr: nix::libc::c_long, a: nix::libc::c_long, b: nix::libc::c_long| {
            // SAFETY: integer arguments only; null pointers where the
            // kernel reads memory, which the refused calls never reach.
            let rc = unsafe { nix::libc::syscall(nr, a, b, 0, 0, 0) };
            if rc < 0 {
                nix::errno::Errno::last_raw()
            } else {
                0
            }
        };
        // The sockets made stay open until the child exits.
        let socket = |family: i32| {
            sys(
                nix::libc::SYS_socket,
                family.into(),
                nix::libc::SOCK_DGRAM.into(),
            )
        };
        let forked = || match unsafe_fork() {
            Some(child) => matches!(waitpid(child, None), Ok(WaitStatus::Exited(_, 0))),
            None => false,
        };
        let checks = [
            sys(nix::libc::SYS_io_uring_setup, 1, 0) == nix::libc::ENOSYS,
            sys(nix::libc::SYS_bpf, 0, 0) == nix::libc::EPERM,
            sys(nix::libc::SYS_unshare, nix::libc::CLONE_NEWUSER.into(), 0) == nix::libc::EPERM,
            sys(nix::libc::SYS_unshare, nix::libc::CLONE_NEWNET.into(), 0) == nix::libc::EPERM,
            sys(nix::libc::SYS_unshare, nix::libc::CLONE_FILES.into(), 0) == 0,
            sys(nix::libc::SYS_clone3, 0, 0) == nix::libc::ENOSYS,
            sys(nix::libc::SYS_ptrace, 0, 0) == nix::libc::EPERM,
            sys(nix::libc::SYS_mount, 0, 0) == nix::libc::EPERM,
            socket(nix::libc::AF_NETLINK) == nix::libc::EAFNOSUPPORT,
            socket(nix::libc::AF_PACKET) == nix::libc::EAFNOSUPPORT,
            socket(nix::libc::AF_ALG) == nix::libc::EAFNOSUPPORT,
            socket(nix::libc::AF_INET) == 0,
            socket(nix::libc::AF_INET6) == 0,
            socket(nix::libc::AF_UNIX) == 0,
            // The x32 twin of getpid.
            !cfg!(target_arch = "x86_64")
                || sys(0x4000_0000 | nix::libc::SYS_getpid, 0, 0) == nix::libc::ENOSYS,
            // fork (clone without namespace flags) still works.
            forked(),
        ];
        checks
            .iter()
            .position(|ok| !ok)
            .map_or(0, |i| 10 + i as i32)
    });
    assert_eq!(code, 0, "check {} failed", code - 10);
}

/// fork(2): the child exits at once; `None` when fork fails.
fn unsafe_fork() -> Option<nix::unistd::Pid> {
    // SAFETY: the child only calls _exit.
    match unsafe { fork() } {
        // SAFETY: _exit has no preconditions.
        Ok(ForkResult::Child) => unsafe { nix::libc::_exit(0) },
        Ok(ForkResult::Parent { child }) => Some(child),
        Err(_) => None,
    }
}

/// A path through a directory its owner controls may not lead out of it.
#[test]
fn a_symlink_in_an_owners_directory_cannot_lead_out_of_it() {
    if !is_root() {
        return;
    }
    // Under a root-owned, non-world-writable parent, unlike /tmp.
    let base = Path::new("/var/lib").join(format!("avt-paths-{}", std::process::id()));
    let _ = fs::remove_dir_all(&base);
    let owner = base.join("shop");
    fs::create_dir_all(owner.join("releases/1")).unwrap();
    for path in [&owner, &owner.join("releases"), &owner.join("releases/1")] {
        nix::unistd::chown(
            path,
            Some(nix::unistd::Uid::from_raw(65534)),
            Some(nix::unistd::Gid::from_raw(65534)),
        )
        .unwrap();
    }
    std::os::unix::fs::symlink("releases/1", owner.join("current")).unwrap();
    std::os::unix::fs::symlink("/", owner.join("root")).unwrap();
    std::os::unix::fs::symlink("../../../../etc", owner.join("etc")).unwrap();

    let good = paths::open_confined(&owner.join("current")).unwrap();
    assert_eq!(good.resolved, owner.join("releases/1"));
    for name in ["root", "etc"] {
        let error = paths::open_confined(&owner.join(name)).unwrap_err();
        assert!(
            matches!(error, paths::PathError::Escapes { ref anchor, .. } if *anchor == owner),
            "{name}: {error}"
        );
    }
    // Root's own paths are taken as they are.
    assert_eq!(
        paths::open_confined(Path::new("/usr/bin"))
            .unwrap()
            .resolved,
        fs::canonicalize("/usr/bin").unwrap()
    );
    fs::remove_dir_all(&base).unwrap();
}

/// An owner's link that leaves its anchor only for what the system rules
/// grant already (a default venv's `bin/python -> /usr/bin/python3`) is
/// accepted without a rule of its own, and runs; one that would need more
/// (executing under the read-only /etc) fails the whole ruleset.
#[test]
fn a_link_out_of_its_anchor_into_the_system_rules_adds_nothing_and_runs() {
    if !is_root() {
        return;
    }
    let base = Path::new("/var/lib").join(format!("avt-system-link-{}", std::process::id()));
    let _ = fs::remove_dir_all(&base);
    let owner = base.join("shop");
    fs::create_dir_all(owner.join("venv/bin")).unwrap();
    for path in [&owner, &owner.join("venv"), &owner.join("venv/bin")] {
        nix::unistd::chown(
            path,
            Some(nix::unistd::Uid::from_raw(65534)),
            Some(nix::unistd::Gid::from_raw(65534)),
        )
        .unwrap();
    }
    let python = owner.join("venv/bin/python");
    std::os::unix::fs::symlink("/usr/bin/python3", &python).unwrap();
    let etc = owner.join("venv/bin/etc-tool");
    std::os::unix::fs::symlink("/etc/hostname", &etc).unwrap();

    let rule = |path: &Path, access, origin| PathRule {
        path: path.to_owned(),
        access,
        origin,
    };
    let system: Vec<PathRule> = ["/usr", "/lib", "/lib64"]
        .iter()
        .map(|p| rule(Path::new(p), PathAccess::ReadExecute, RuleOrigin::System))
        .chain([rule(
            Path::new("/etc"),
            PathAccess::Read,
            RuleOrigin::System,
        )])
        .collect();
    let with = |own: Vec<PathRule>| LandlockPlan {
        paths: system.iter().cloned().chain(own).collect(),
        ..plan(Vec::new())
    };
    let runs = with(vec![
        rule(&python, PathAccess::ReadExecute, RuleOrigin::Command),
        rule(
            &owner.join("venv"),
            PathAccess::ReadExecute,
            RuleOrigin::Venv,
        ),
        rule(&etc, PathAccess::Read, RuleOrigin::ReadOnly),
    ]);
    let interpreter = fs::canonicalize(&python).unwrap();
    let code = in_child(|| {
        let record = decide(&runs, kernel_abi()).unwrap();
        nix::sys::prctl::set_no_new_privs().unwrap();
        let granted = apply(&runs, &record).unwrap();
        let resolved: Vec<&Path> = granted.iter().map(|g| g.resolved.as_path()).collect();
        let checks = [
            resolved
                == [
                    interpreter.as_path(),
                    owner.join("venv").as_path(),
                    Path::new("/etc/hostname"),
                ],
            std::process::Command::new(&python)
                .args(["-c", "pass"])
                .status()
                .is_ok_and(|s| s.success()),
            // A link gives nothing of its own: no write where it led
            // (opened for appending, nothing written even if it opened).
            // Not tried on the interpreter: while anyone on the host runs
            // it, the open fails with ETXTBSY before Landlock is asked.
            errno_of(fs::OpenOptions::new().append(true).open(&etc)) == nix::libc::EACCES,
        ];
        checks
            .iter()
            .position(|ok| !ok)
            .map_or(0, |i| 10 + i as i32)
    });
    assert_eq!(code, 0, "check {} failed", code - 10);

    let widens = with(vec![rule(
        &etc,
        PathAccess::ReadExecute,
        RuleOrigin::Command,
    )]);
    let code = in_child(|| {
        let record = decide(&widens, kernel_abi()).unwrap();
        nix::sys::prctl::set_no_new_privs().unwrap();
        match apply(&widens, &record) {
            Err(error) if error.to_string().starts_with("command ") => 0,
            other => {
                eprintln!("{other:?}");
                1
            }
        }
    });
    assert_eq!(code, 0, "executing under /etc was not refused");
    fs::remove_dir_all(&base).unwrap();
}
