//! The seccomp filter every app runs under: a deny list in the spirit of
//! systemd's `@system-service` (what a web app never needs and an attacker
//! would use to reach more of the kernel), and the socket families the app
//! may create.
//!
//! One classic BPF program, assembled in [`program`] from the lists below
//! and installed with `seccompiler` (rust-vmm's, Firecracker's).
//! seccompiler's own compiler takes one action per program and spends five
//! instructions on each listed syscall: it built this filter as three
//! programs of 449 instructions in all, which the kernel translated and
//! JIT-compiled at every spawn (about 0.3 ms of each spawn's CPU) and ran
//! on every system call of every app. This one finds the syscall number
//! among the listed ones by binary search, comparing one by one only in
//! groups of at most [`GROUP`]: a call is decided in at most 15
//! instructions on x86_64 (104 in all), where comparing each listed number
//! in turn took up to 63 (of 74). That counts at every spawn too: when the
//! filter is installed, the kernel runs it once for every syscall number,
//! with interrupts off, to find the calls it always allows (those then skip
//! it); along the straight line that was about a tenth of a millisecond of
//! each spawn's CPU. A test runs both through a BPF interpreter and checks
//! they answer alike on every syscall number and on the arguments that are
//! checked.
//!
//! A deny list, not an allow list: a syscall the kernel adds later is
//! allowed until it is reviewed here, as it is under systemd's default.
//! Denied calls fail with an errno the caller already handles (ENOSYS for
//! what a library probes and falls back from, EAFNOSUPPORT for a socket
//! family, EPERM for the rest), never with a kill. A call through another
//! architecture's ABI kills the process.
//!
//! [`install`] restricts the calling process for good: it must never run in
//! the daemon's own process.

use seccompiler::{sock_filter, BpfProgram};

use super::rules::{SeccompPlan, SocketFamily};

/// A syscall by number, with its name for docs and messages.
/// (Every target this builds for has 64-bit syscall numbers.)
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
    #[error("the filter does not fit classic BPF's jumps ({0} instructions)")]
    TooLong(usize),
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

/// `AUDIT_ARCH_*` of `<linux/audit.h>`: what the kernel puts in
/// `seccomp_data.arch` for a call through this architecture's native ABI.
fn audit_arch() -> Result<u32, SeccompError> {
    if cfg!(target_arch = "x86_64") {
        Ok(0xC000_003E)
    } else if cfg!(target_arch = "aarch64") {
        Ok(0xC000_00B7)
    } else if cfg!(target_arch = "riscv64") {
        Ok(0xC000_00F3)
    } else {
        Err(SeccompError::UnsupportedArch)
    }
}

/// Offsets in `struct seccomp_data`: the syscall number, the architecture,
/// and the low 32 bits of the first argument, where every flag and family
/// checked lives.
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;
const DATA_ARG0_LOW: u32 = if cfg!(target_endian = "little") {
    16
} else {
    20
};

const RET_ALLOW: u32 = nix::libc::SECCOMP_RET_ALLOW;
const RET_KILL_PROCESS: u32 = nix::libc::SECCOMP_RET_KILL_PROCESS;

const fn ret_errno(errno: i32) -> u32 {
    nix::libc::SECCOMP_RET_ERRNO | (errno as u32 & nix::libc::SECCOMP_RET_DATA)
}

/// Where a comparison that holds jumps to: the next [`Insn::Here`] of that
/// label after it (classic BPF jumps only forward, at most 255
/// instructions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Label {
    Native,
    Allow,
    Eperm,
    Enosys,
    Clone,
    Unshare,
    Family,
    /// The upper half of a binary search's range, numbered in the order
    /// the search makes them.
    Upper(u16),
}

/// The most syscall numbers compared one by one, at the end of the search.
const GROUP: usize = 4;

#[derive(Debug, Clone, Copy)]
enum Insn {
    /// The 32-bit word at this offset of `seccomp_data`.
    Load(u32),
    /// Jump to the label if the loaded word equals the constant.
    IfEqual(u32, Label),
    /// Jump to the label if the loaded word is at least the constant.
    IfAtLeast(u32, Label),
    /// Jump to the label if the loaded word has any bit of the constant.
    IfAnyBit(u32, Label),
    Return(u32),
    /// Where a label points; emits nothing.
    Here(Label),
}

/// The whole filter for `plan`, as the kernel takes it:
///
/// ```text
///     arch is not this one's         -> kill the process
///     nr >= the x32 bit (x86_64)     -> ENOSYS
///     nr in UNAVAILABLE              -> ENOSYS
///     nr in DENIED or DENIED_ARCH    -> EPERM
///     clone with a namespace flag in its first argument,
///     unshare with one or CLONE_NEWTIME                -> EPERM
///     socket or socketpair of a family not in the plan -> EAFNOSUPPORT
///     anything else                  -> allow
/// ```
pub fn program(plan: &SeccompPlan) -> Result<BpfProgram, SeccompError> {
    use Insn::{Here, IfAnyBit, IfEqual, Load, Return};
    let nr = |nr: i64| u32::try_from(nr).expect("syscall numbers fit in 32 bits");
    let mut code = vec![
        Load(DATA_ARCH),
        IfEqual(audit_arch()?, Label::Native),
        Return(RET_KILL_PROCESS),
        Here(Label::Native),
        Load(DATA_NR),
    ];
    #[cfg(target_arch = "x86_64")]
    code.push(Insn::IfAtLeast(X32_SYSCALL_BIT, Label::Enosys));
    let listed: Vec<(u32, Label)> = UNAVAILABLE
        .iter()
        .map(|(n, _)| (nr(*n), Label::Enosys))
        .chain(
            DENIED
                .iter()
                .chain(DENIED_ARCH)
                .map(|(n, _)| (nr(*n), Label::Eperm)),
        )
        .chain([
            (nr(nix::libc::SYS_clone), Label::Clone),
            (nr(nix::libc::SYS_unshare), Label::Unshare),
            (nr(nix::libc::SYS_socket), Label::Family),
            (nr(nix::libc::SYS_socketpair), Label::Family),
        ])
        .collect();
    search(&by_number(listed), &mut code, &mut 0);
    let low = |flag: u64| u32::try_from(flag).expect("namespace flags are in the low 32 bits");
    let namespaces = low(NAMESPACE_FLAGS.iter().fold(0, |all, flag| all | flag));
    code.extend([
        Here(Label::Clone),
        Load(DATA_ARG0_LOW),
        IfAnyBit(namespaces, Label::Eperm),
        Return(RET_ALLOW),
        Here(Label::Unshare),
        Load(DATA_ARG0_LOW),
        IfAnyBit(namespaces | low(CLONE_NEWTIME), Label::Eperm),
        Return(RET_ALLOW),
        Here(Label::Family),
        Load(DATA_ARG0_LOW),
    ]);
    let mut families: Vec<u32> = plan
        .socket_families
        .iter()
        .map(|family| family_number(*family))
        .collect();
    families.sort_unstable();
    families.dedup();
    code.extend(families.into_iter().map(|f| IfEqual(f, Label::Allow)));
    code.extend([
        Return(ret_errno(nix::libc::EAFNOSUPPORT)),
        Here(Label::Allow),
        Return(RET_ALLOW),
        Here(Label::Eperm),
        Return(ret_errno(nix::libc::EPERM)),
        Here(Label::Enosys),
        Return(ret_errno(nix::libc::ENOSYS)),
    ]);
    assemble(&code)
}

/// `listed` sorted by syscall number, each number once: where a number is
/// listed twice, the first listing counts, as it did when each was
/// compared in turn.
fn by_number(mut listed: Vec<(u32, Label)>) -> Vec<(u32, Label)> {
    // Stable: of equal numbers, the first listed stays first.
    listed.sort_by_key(|(nr, _)| *nr);
    listed.dedup_by_key(|(nr, _)| *nr);
    listed
}

/// The syscall number (already loaded) looked up in `sorted`: jumps to the
/// label of the number found, allows any other. A binary search on ranges
/// (`IfAtLeast` the middle number jumps to the upper half) down to groups
/// of at most [`GROUP`] numbers, compared in turn. `uppers` numbers the
/// upper halves' labels.
fn search(sorted: &[(u32, Label)], code: &mut Vec<Insn>, uppers: &mut u16) {
    if sorted.len() <= GROUP {
        code.extend(sorted.iter().map(|&(nr, label)| Insn::IfEqual(nr, label)));
        code.push(Insn::Return(RET_ALLOW));
        return;
    }
    let (lower, upper) = sorted.split_at(sorted.len() / 2);
    let label = Label::Upper(*uppers);
    *uppers += 1;
    code.push(Insn::IfAtLeast(upper[0].0, label));
    search(lower, code, uppers);
    code.push(Insn::Here(label));
    search(upper, code, uppers);
}

/// Classic BPF from `code`, each jump resolved to the next `Here` of its
/// label; fails if that label is not ahead or more than 255 instructions
/// ahead.
fn assemble(code: &[Insn]) -> Result<BpfProgram, SeccompError> {
    let emitted = |insn: &&Insn| !matches!(insn, Insn::Here(_));
    let length = code.iter().filter(emitted).count();
    let mut program = Vec::with_capacity(length);
    for (at, insn) in code.iter().enumerate() {
        let jump = |op: u32, k: u32, label: Label| -> Result<sock_filter, SeccompError> {
            let ahead = &code[at + 1..];
            let target = ahead
                .iter()
                .position(|later| matches!(later, Insn::Here(l) if *l == label))
                .ok_or(SeccompError::TooLong(length))?;
            let skip = ahead[..target].iter().filter(emitted).count();
            let jt = u8::try_from(skip).map_err(|_| SeccompError::TooLong(length))?;
            Ok(instruction(
                nix::libc::BPF_JMP | op | nix::libc::BPF_K,
                jt,
                0,
                k,
            ))
        };
        program.push(match *insn {
            Insn::Load(offset) => instruction(
                nix::libc::BPF_LD | nix::libc::BPF_W | nix::libc::BPF_ABS,
                0,
                0,
                offset,
            ),
            Insn::IfEqual(k, label) => jump(nix::libc::BPF_JEQ, k, label)?,
            Insn::IfAtLeast(k, label) => jump(nix::libc::BPF_JGE, k, label)?,
            Insn::IfAnyBit(k, label) => jump(nix::libc::BPF_JSET, k, label)?,
            Insn::Return(k) => instruction(nix::libc::BPF_RET | nix::libc::BPF_K, 0, 0, k),
            Insn::Here(_) => continue,
        });
    }
    Ok(program)
}

fn instruction(code: u32, jt: u8, jf: u8, k: u32) -> sock_filter {
    sock_filter {
        code: u16::try_from(code).expect("BPF opcodes fit in 16 bits"),
        jt,
        jf,
        k,
    }
}

fn family_number(family: SocketFamily) -> u32 {
    let number = match family {
        SocketFamily::Unix => nix::libc::AF_UNIX,
        SocketFamily::Inet => nix::libc::AF_INET,
        SocketFamily::Inet6 => nix::libc::AF_INET6,
    };
    u32::try_from(number).expect("address families are small")
}

/// Installs the filter of `plan` on the calling thread; with no_new_privs
/// set, as the kernel requires of a process without CAP_SYS_ADMIN.
pub fn install(plan: &SeccompPlan) -> Result<(), SeccompError> {
    seccompiler::apply_filter(&program(plan)?).map_err(SeccompError::Install)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use seccompiler::{
        SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
        SeccompRule, TargetArch,
    };

    use super::*;

    fn plan() -> SeccompPlan {
        SeccompPlan {
            socket_families: vec![SocketFamily::Inet6, SocketFamily::Unix, SocketFamily::Inet],
        }
    }

    /// The filter as seccompiler compiled it before: three programs, one
    /// per errno, each checking the architecture, the first with the x32
    /// guard. The oracle [`program`] is checked against.
    fn seccompiler_programs(plan: &SeccompPlan) -> Vec<BpfProgram> {
        let arch = if cfg!(target_arch = "x86_64") {
            TargetArch::x86_64
        } else if cfg!(target_arch = "aarch64") {
            TargetArch::aarch64
        } else {
            TargetArch::riscv64
        };
        let build = |rules, errno: i32| -> BpfProgram {
            let filter = SeccompFilter::new(
                rules,
                SeccompAction::Allow,
                SeccompAction::Errno(errno as u32),
                arch,
            )
            .unwrap();
            BpfProgram::try_from(filter).unwrap()
        };
        let unconditional = |list: &[Syscall]| -> BTreeMap<i64, Vec<SeccompRule>> {
            list.iter().map(|(nr, _)| (*nr, Vec::new())).collect()
        };
        let flag_rules = |unshare: bool| -> Vec<SeccompRule> {
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
                    .unwrap();
                    SeccompRule::new(vec![set]).unwrap()
                })
                .collect()
        };
        let family_rules = |allowed: &[SocketFamily]| -> Vec<SeccompRule> {
            let mut values: Vec<u64> = allowed
                .iter()
                .map(|f| u64::from(family_number(*f)))
                .collect();
            values.sort_unstable();
            values.dedup();
            let condition =
                |op, value| SeccompCondition::new(0, SeccompCmpArgLen::Dword, op, value).unwrap();
            let mut rules = Vec::new();
            let mut low = 0u64;
            for value in values {
                if value > low {
                    rules.push(
                        SeccompRule::new(vec![
                            condition(SeccompCmpOp::Ge, low),
                            condition(SeccompCmpOp::Le, value - 1),
                        ])
                        .unwrap(),
                    );
                }
                low = value + 1;
            }
            rules.push(SeccompRule::new(vec![condition(SeccompCmpOp::Ge, low)]).unwrap());
            rules
        };

        let mut denied = unconditional(DENIED);
        denied.extend(unconditional(DENIED_ARCH));
        denied.insert(nix::libc::SYS_clone, flag_rules(false));
        denied.insert(nix::libc::SYS_unshare, flag_rules(true));
        let mut unavailable = build(unconditional(UNAVAILABLE), nix::libc::ENOSYS);
        #[cfg(target_arch = "x86_64")]
        {
            let guard = [
                instruction(
                    nix::libc::BPF_LD | nix::libc::BPF_W | nix::libc::BPF_ABS,
                    0,
                    0,
                    0,
                ),
                instruction(
                    nix::libc::BPF_JMP | nix::libc::BPF_JGE,
                    0,
                    1,
                    X32_SYSCALL_BIT,
                ),
                instruction(nix::libc::BPF_RET, 0, 0, ret_errno(nix::libc::ENOSYS)),
            ];
            unavailable.splice(3..3, guard);
        }
        let families = family_rules(&plan.socket_families);
        let sockets: BTreeMap<i64, Vec<SeccompRule>> = [
            (nix::libc::SYS_socket, families.clone()),
            (nix::libc::SYS_socketpair, families),
        ]
        .into();
        vec![
            unavailable,
            build(denied, nix::libc::EPERM),
            build(sockets, nix::libc::EAFNOSUPPORT),
        ]
    }

    /// `struct seccomp_data` as the kernel lays it out (little-endian).
    fn data(arch: u32, nr: u32, arg0: u64) -> [u8; 64] {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&nr.to_le_bytes());
        data[4..8].copy_from_slice(&arch.to_le_bytes());
        data[16..24].copy_from_slice(&arg0.to_le_bytes());
        data
    }

    /// Runs a classic BPF program as the kernel's seccomp does, for the
    /// instructions either builder emits.
    fn run(program: &[sock_filter], data: &[u8; 64]) -> u32 {
        run_counted(program, data).0
    }

    /// As [`run`], with the number of instructions it ran.
    fn run_counted(program: &[sock_filter], data: &[u8; 64]) -> (u32, usize) {
        let (mut a, mut pc, mut ran) = (0u32, 0usize, 0usize);
        loop {
            ran += 1;
            let insn = &program[pc];
            let code = u32::from(insn.code);
            let op = code & 0xf0;
            pc += 1;
            match code & 0x07 {
                c if c == nix::libc::BPF_LD => {
                    assert_eq!(
                        code,
                        nix::libc::BPF_LD | nix::libc::BPF_W | nix::libc::BPF_ABS
                    );
                    let at = insn.k as usize;
                    a = u32::from_le_bytes(data[at..at + 4].try_into().unwrap());
                }
                c if c == nix::libc::BPF_ALU => {
                    assert_eq!(op, nix::libc::BPF_AND, "ALU op {code:#x}");
                    a &= insn.k;
                }
                c if c == nix::libc::BPF_JMP => {
                    let taken = match op {
                        o if o == nix::libc::BPF_JA => {
                            pc += insn.k as usize;
                            continue;
                        }
                        o if o == nix::libc::BPF_JEQ => a == insn.k,
                        o if o == nix::libc::BPF_JGT => a > insn.k,
                        o if o == nix::libc::BPF_JGE => a >= insn.k,
                        o if o == nix::libc::BPF_JSET => a & insn.k != 0,
                        _ => panic!("jump op {code:#x}"),
                    };
                    pc += usize::from(if taken { insn.jt } else { insn.jf });
                }
                c if c == nix::libc::BPF_RET => return (insn.k, ran),
                _ => panic!("instruction {code:#x}"),
            }
        }
    }

    /// What the kernel returns when several filters are installed: the
    /// action of highest precedence (lowest as a signed action value).
    fn run_all(programs: &[BpfProgram], data: &[u8; 64]) -> u32 {
        let action = |ret: u32| (ret & nix::libc::SECCOMP_RET_ACTION_FULL) as i32;
        let mut answers = programs.iter().rev().map(|p| run(p, data));
        let first = answers.next().unwrap();
        answers.fold(first, |kept, ret| {
            if action(ret) < action(kept) {
                ret
            } else {
                kept
            }
        })
    }

    /// Every syscall number, the x32 ones, another architecture, and for
    /// the calls whose argument is checked, every flag and family: the one
    /// program answers as seccompiler's three did.
    #[test]
    fn one_program_answers_as_seccompilers_three() {
        let arch = audit_arch().unwrap();
        let mut args: Vec<u64> = vec![0, u64::MAX, 1 << 32, 0x11 /* SIGCHLD */, CLONE_NEWTIME];
        args.extend(NAMESPACE_FLAGS);
        args.extend(NAMESPACE_FLAGS.iter().map(|flag| flag | (1 << 40)));
        args.extend(0..64); // socket families, and the low flag bits
        args.extend((0..64).map(|f| f | (7 << 32)));
        let checked = [
            nix::libc::SYS_clone,
            nix::libc::SYS_unshare,
            nix::libc::SYS_socket,
            nix::libc::SYS_socketpair,
        ]
        .map(|n| u32::try_from(n).unwrap());
        let mut numbers: Vec<u32> = (0..1024).collect();
        numbers.extend([0x4000_0000, 0x4000_0001, 0x4000_0000 + 101, u32::MAX]);
        for plan in [
            plan(),
            SeccompPlan {
                socket_families: vec![SocketFamily::Unix],
            },
            SeccompPlan {
                socket_families: vec![],
            },
        ] {
            let old = seccompiler_programs(&plan);
            let new = program(&plan).unwrap();
            for &nr in &numbers {
                let args: &[u64] = if checked.contains(&nr) {
                    &args
                } else {
                    &[0, 42]
                };
                for &arg in args {
                    for which in [arch, 0x4000_0003 /* i386 */] {
                        let data = data(which, nr, arg);
                        assert_eq!(
                            run(&new, &data),
                            run_all(&old, &data),
                            "arch {which:#x} nr {nr} arg {arg:#x} families {:?}",
                            plan.socket_families
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn the_program_is_short() {
        let program = program(&plan()).unwrap();
        let old: usize = seccompiler_programs(&plan()).iter().map(Vec::len).sum();
        assert!(program.len() < 128, "{} instructions", program.len());
        assert!(old > 3 * program.len(), "{old} against {}", program.len());
    }

    /// The kernel runs the filter for every syscall number when it is
    /// installed (and the app's every call it cannot tell in advance): a
    /// call is decided after a handful of comparisons, not after one per
    /// listed syscall.
    #[test]
    fn every_call_is_decided_in_a_few_instructions() {
        let arch = audit_arch().unwrap();
        let program = program(&plan()).unwrap();
        let listed = DENIED.len() + DENIED_ARCH.len() + UNAVAILABLE.len() + 4;
        let mut longest = 0;
        for nr in 0..1024 {
            for arg in [0, u64::MAX] {
                longest = longest.max(run_counted(&program, &data(arch, nr, arg)).1);
            }
        }
        // Two loads, the architecture, the x32 range, a search of depth
        // log2(listed / GROUP) + 1, a group, a return, and for socket the
        // family's load and comparisons: 15 on x86_64, where comparing
        // each listed number in turn took up to 63.
        assert!(longest <= 16, "{longest} instructions for {listed} listed");
        assert!(
            listed > 3 * longest,
            "{longest} instructions for {listed} listed"
        );
    }

    #[test]
    fn a_number_listed_twice_counts_as_first_listed() {
        let sorted = by_number(vec![
            (9, Label::Enosys),
            (3, Label::Eperm),
            (9, Label::Eperm),
            (1, Label::Clone),
        ]);
        assert_eq!(
            sorted,
            [(1, Label::Clone), (3, Label::Eperm), (9, Label::Enosys)]
        );
    }

    #[test]
    fn a_jump_without_its_label_ahead_is_refused() {
        let code = [Insn::Here(Label::Eperm), Insn::IfEqual(1, Label::Eperm)];
        assert!(matches!(assemble(&code), Err(SeccompError::TooLong(1))));
        let mut far = vec![Insn::IfEqual(1, Label::Eperm)];
        far.extend(std::iter::repeat_n(Insn::Return(RET_ALLOW), 256));
        far.push(Insn::Here(Label::Eperm));
        assert!(assemble(&far).is_err());
        far.remove(1);
        assert_eq!(assemble(&far).unwrap()[0].jt, 255);
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
