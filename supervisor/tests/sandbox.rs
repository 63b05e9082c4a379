//! The sandbox's irreversible steps, each run in a forked child that exits
//! with a status the test asserts (as rust-landlock and youki test them).
//! Root only: they unshare, mount and drop capabilities.

use std::fs;
use std::path::{Path, PathBuf};

use appvisor::sandbox::landlock::{apply, decide, kernel_abi};
use appvisor::sandbox::{
    capabilities, namespaces, LandlockPlan, NamespacePlan, PathAccess, PathRule, Requirement,
    RuleOrigin,
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
            Ok(()) => 0,
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
            private_tmp: Some(1 << 20),
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
