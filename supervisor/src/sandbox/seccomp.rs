//! The seccomp filter every app runs under: a deny list in the spirit of
//! systemd's `@system-service` (what a web app never needs and an attacker
//! would use to reach more of the kernel), and the socket families the app
//! may create.
//!
//! Built with `seccompiler` (rust-vmm's, Firecracker's): pure Rust, so the
//! static musl build links no C libseccomp, and small enough to read. It
//! compiles one action per filter, so the helper installs three small
//! filters; the kernel runs all of them and the strictest answer wins.
//!
//! A deny list, not an allow list: a syscall the kernel adds later is
//! allowed until it is reviewed here, as it is under systemd's default.
//! Denied calls fail with an errno the caller already handles (ENOSYS for
//! what a library probes and falls back from, EAFNOSUPPORT for a socket
//! family, EPERM for the rest), never with a kill.
//!
//! [`install`] restricts the calling process for good: it must never run in
//! the daemon's own process.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use super::rules::{SeccompPlan, SocketFamily};

/// A syscall by number, with its name for docs and messages.
/// (seccompiler and every target it builds for have 64-bit syscall numbers.)
type Syscall = (i64, &'static str);

macro_rules! syscalls {
    ($($name:ident),* $(,)?) => {
        &[$((nix::libc::$name, stringify!($name))),*]
    };
}

/// Refused with EPERM: changing the host (clock, modules, kexec, reboot,
/// swap, mounts, host names, quotas), reaching into other processes
/// (ptrace and its relatives), and kernel surfaces a web app never needs
/// (bpf, perf events, userfaultfd, handles that bypass paths, kernel log).
const DENIED: &[Syscall] = syscalls![
    SYS_acct,
    SYS_adjtimex,
    SYS_bpf,
    SYS_chroot,
    SYS_clock_adjtime,
    SYS_clock_settime,
    SYS_delete_module,
    SYS_finit_module,
    SYS_fsconfig,
    SYS_fsmount,
    SYS_fsopen,
    SYS_fspick,
    SYS_init_module,
    SYS_kexec_file_load,
    SYS_kexec_load,
    SYS_mount,
    SYS_mount_setattr,
    SYS_move_mount,
    SYS_open_by_handle_at,
    SYS_open_tree,
    SYS_perf_event_open,
    SYS_pidfd_getfd,
    SYS_pivot_root,
    SYS_process_vm_readv,
    SYS_process_vm_writev,
    SYS_ptrace,
    SYS_quotactl,
    SYS_quotactl_fd,
    SYS_reboot,
    SYS_setdomainname,
    SYS_sethostname,
    SYS_setns,
    SYS_settimeofday,
    SYS_swapoff,
    SYS_swapon,
    SYS_syslog,
    SYS_umount2,
    SYS_userfaultfd,
    SYS_vhangup,
];

/// x86 only: port I/O, the LDT, and calls kept for old binaries.
#[cfg(target_arch = "x86_64")]
const DENIED_ARCH: &[Syscall] = syscalls![
    SYS__sysctl,
    SYS_ioperm,
    SYS_iopl,
    SYS_modify_ldt,
    SYS_sysfs,
    SYS_uselib,
    SYS_ustat,
];
#[cfg(not(target_arch = "x86_64"))]
const DENIED_ARCH: &[Syscall] = &[];

/// Refused with ENOSYS, as if the kernel were older: io_uring (a large,
/// often-exploited surface; every library falls back to plain I/O), and
/// clone3, whose flags live in memory a filter cannot read (glibc falls
/// back to clone, whose flags the filter checks).
const UNAVAILABLE: &[Syscall] = syscalls![
    SYS_clone3,
    SYS_io_uring_enter,
    SYS_io_uring_register,
    SYS_io_uring_setup,
];

/// The namespace flags of clone(2) and unshare(2): with them an app could
/// make a user namespace and, inside it, reach code paths that otherwise
/// need privileges.
const NAMESPACE_FLAGS: [u64; 7] = [
    nix::libc::CLONE_NEWNS as u64,
    nix::libc::CLONE_NEWCGROUP as u64,
    nix::libc::CLONE_NEWUTS as u64,
    nix::libc::CLONE_NEWIPC as u64,
    nix::libc::CLONE_NEWUSER as u64,
    nix::libc::CLONE_NEWPID as u64,
    nix::libc::CLONE_NEWNET as u64,
];

/// unshare only: for clone this bit is part of the exit signal.
const CLONE_NEWTIME: u64 = 0x80;

/// The x32 ABI's syscall numbers are the x86-64 ones with this bit set: a
/// deny list by number must refuse all of them, or every entry has a twin.
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("seccomp filters are not built for this architecture")]
    UnsupportedArch,
    #[error("building the filter")]
    Build(#[source] seccompiler::BackendError),
    #[error("installing the filter")]
    Install(#[source] seccompiler::Error),
}

impl SeccompError {
    /// The errno to report, 0 when none applies.
    pub fn errno(&self) -> i32 {
        match self {
            SeccompError::Install(seccompiler::Error::Seccomp(e)) => e.raw_os_error().unwrap_or(0),
            _ => 0,
        }
    }
}

fn target_arch() -> Result<TargetArch, SeccompError> {
    if cfg!(target_arch = "x86_64") {
        Ok(TargetArch::x86_64)
    } else if cfg!(target_arch = "aarch64") {
        Ok(TargetArch::aarch64)
    } else if cfg!(target_arch = "riscv64") {
        Ok(TargetArch::riscv64)
    } else {
        Err(SeccompError::UnsupportedArch)
    }
}

/// The names of the syscalls the filter refuses, for `appctl security` and
/// the docs.
pub fn refused_syscalls() -> Vec<&'static str> {
    let mut names: Vec<&str> = DENIED
        .iter()
        .chain(DENIED_ARCH)
        .chain(UNAVAILABLE)
        .map(|(_, name)| name.trim_start_matches("SYS_"))
        .chain(["clone (namespace flags)", "unshare (namespace flags)"])
        .collect();
    names.sort_unstable();
    names
}

/// The filters of `plan`, compiled, in the order the helper installs them.
pub fn filters(plan: &SeccompPlan) -> Result<Vec<BpfProgram>, SeccompError> {
    let arch = target_arch()?;
    let build = |rules, errno: i32| -> Result<BpfProgram, SeccompError> {
        let filter = SeccompFilter::new(
            rules,
            SeccompAction::Allow,
            SeccompAction::Errno(errno as u32),
            arch,
        )
        .map_err(SeccompError::Build)?;
        BpfProgram::try_from(filter).map_err(SeccompError::Build)
    };
    let unconditional = |list: &[Syscall]| -> BTreeMap<i64, Vec<SeccompRule>> {
        list.iter().map(|(nr, _)| (*nr, Vec::new())).collect()
    };

    let mut denied = unconditional(DENIED);
    denied.extend(unconditional(DENIED_ARCH));
    denied.insert(nix::libc::SYS_clone, namespace_rules(false)?);
    denied.insert(nix::libc::SYS_unshare, namespace_rules(true)?);

    let mut unavailable = build(unconditional(UNAVAILABLE), nix::libc::ENOSYS)?;
    refuse_x32(&mut unavailable);

    let families = family_rules(&plan.socket_families)?;
    let sockets: BTreeMap<i64, Vec<SeccompRule>> = [
        (nix::libc::SYS_socket, families.clone()),
        (nix::libc::SYS_socketpair, families),
    ]
    .into();

    Ok(vec![
        unavailable,
        build(denied, nix::libc::EPERM)?,
        build(sockets, nix::libc::EAFNOSUPPORT)?,
    ])
}

/// One rule per namespace flag in the first argument: any of them set.
fn namespace_rules(unshare: bool) -> Result<Vec<SeccompRule>, SeccompError> {
    let time = unshare.then_some(CLONE_NEWTIME);
    NAMESPACE_FLAGS
        .iter()
        .copied()
        .chain(time)
        .map(|flag| {
            let set = SeccompCondition::new(
                0,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(flag),
                flag,
            )
            .map_err(SeccompError::Build)?;
            SeccompRule::new(vec![set]).map_err(SeccompError::Build)
        })
        .collect()
}

/// Rules matching every socket family (the first argument, an int) not in
/// `allowed`: the ranges between the allowed values.
fn family_rules(allowed: &[SocketFamily]) -> Result<Vec<SeccompRule>, SeccompError> {
    let mut values: Vec<u64> = allowed.iter().map(|f| family_number(*f)).collect();
    values.sort_unstable();
    values.dedup();
    let condition = |op, value| {
        SeccompCondition::new(0, SeccompCmpArgLen::Dword, op, value).map_err(SeccompError::Build)
    };
    let mut rules = Vec::new();
    let mut low = 0u64;
    for value in values {
        if value > low {
            rules.push(
                SeccompRule::new(vec![
                    condition(SeccompCmpOp::Ge, low)?,
                    condition(SeccompCmpOp::Le, value - 1)?,
                ])
                .map_err(SeccompError::Build)?,
            );
        }
        low = value + 1;
    }
    rules.push(
        SeccompRule::new(vec![condition(SeccompCmpOp::Ge, low)?]).map_err(SeccompError::Build)?,
    );
    Ok(rules)
}

fn family_number(family: SocketFamily) -> u64 {
    let number = match family {
        SocketFamily::Unix => nix::libc::AF_UNIX,
        SocketFamily::Inet => nix::libc::AF_INET,
        SocketFamily::Inet6 => nix::libc::AF_INET6,
    };
    number as u64
}

/// Refuses (ENOSYS) every x32 syscall. Inserted right after seccompiler's
/// architecture check (its first three instructions), so the relative
/// jumps of both parts stay valid.
#[cfg(target_arch = "x86_64")]
fn refuse_x32(program: &mut BpfProgram) {
    use seccompiler::sock_filter;
    const BPF_LD_W_ABS: u16 = 0x20;
    const BPF_JMP_JGE_K: u16 = 0x05 | 0x30;
    const BPF_RET_K: u16 = 0x06;
    const SECCOMP_DATA_NR_OFFSET: u32 = 0;
    let guard = [
        sock_filter {
            code: BPF_LD_W_ABS,
            jt: 0,
            jf: 0,
            k: SECCOMP_DATA_NR_OFFSET,
        },
        sock_filter {
            code: BPF_JMP_JGE_K,
            jt: 0,
            jf: 1,
            k: X32_SYSCALL_BIT,
        },
        sock_filter {
            code: BPF_RET_K,
            jt: 0,
            jf: 0,
            k: nix::libc::SECCOMP_RET_ERRNO | nix::libc::ENOSYS as u32,
        },
    ];
    program.splice(3..3, guard);
}

#[cfg(not(target_arch = "x86_64"))]
fn refuse_x32(_program: &mut BpfProgram) {}

/// Installs the filters of `plan` on the calling thread; with no_new_privs
/// set, as the kernel requires of a process without CAP_SYS_ADMIN.
pub fn install(plan: &SeccompPlan) -> Result<(), SeccompError> {
    for program in filters(plan)? {
        seccompiler::apply_filter(&program).map_err(SeccompError::Install)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> SeccompPlan {
        SeccompPlan {
            socket_families: vec![SocketFamily::Inet6, SocketFamily::Unix, SocketFamily::Inet],
        }
    }

    #[test]
    fn three_filters_compile() {
        let programs = filters(&plan()).unwrap();
        assert_eq!(programs.len(), 3);
        // The x32 guard sits right after the architecture check.
        #[cfg(target_arch = "x86_64")]
        assert_eq!(programs[0][4].k, X32_SYSCALL_BIT);
    }

    #[test]
    fn families_outside_the_plan_are_the_gaps_between_allowed_ones() {
        // AF_UNIX 1, AF_INET 2, AF_INET6 10: refuse 0, 3..=9, 11..
        let rules = family_rules(&plan().socket_families).unwrap();
        let rendered = format!("{rules:?}");
        assert_eq!(rules.len(), 3, "{rendered}");
        let only_unix = family_rules(&[SocketFamily::Unix]).unwrap();
        assert_eq!(only_unix.len(), 2);
    }

    #[test]
    fn the_refused_list_names_what_the_docs_promise() {
        let names = refused_syscalls();
        for name in [
            "bpf",
            "io_uring_setup",
            "kexec_load",
            "mount",
            "ptrace",
            "setns",
            "clone3",
            "unshare (namespace flags)",
        ] {
            assert!(names.contains(&name), "{name} missing from {names:?}");
        }
    }
}
