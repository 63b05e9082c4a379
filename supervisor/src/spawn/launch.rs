//! Starting the exec helper directly inside the app's cgroup, with
//! `clone3(CLONE_INTO_CGROUP)`.
//!
//! Why: moving a running process into a cgroup (a write to `cgroup.procs`)
//! takes the kernel's cgroup threadgroup lock for writing, which waits for
//! an RCU grace period, several milliseconds, on every spawn. A process
//! cloned into its cgroup is never moved, so a crash is respawned in well
//! under 5 ms.
//!
//! Why it is safe in a multi-threaded daemon: every byte the child needs
//! (paths, argv, the fd moves) is prepared before the clone, and the child
//! runs only `dup2`, `execve`, `write` and `_exit`, raw async-signal-safe
//! system calls, with every signal blocked (the helper resets the mask).
//! This file holds the only `unsafe` of the daemon's side of a spawn.
//!
//! On x86_64 the child shares the daemon's memory until it execs
//! (`CLONE_VM | CLONE_VFORK`, as `posix_spawn` does): the kernel then copies
//! none of the daemon's page tables into a child that would throw them away
//! at its exec, and the daemon takes no copy-on-write fault afterwards on
//! every page it writes, work that grew with the daemon's memory, so with
//! the number of apps. The cloning thread waits, suspended, until the exec;
//! the child runs on a stack of its own ([`CHILD_STACK`]) and writes nothing
//! of the daemon's but that stack (and the suspended thread's `errno`).

use std::ffi::{c_char, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::ptr;

/// `struct clone_args` of `<linux/sched.h>`, as far as `cgroup`
/// (CLONE_ARGS_SIZE_VER2, Linux 5.7).
#[repr(C)]
#[derive(Debug, Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// The child's own stack while it shares the daemon's memory: it makes a
/// few system calls through libc and nothing else.
#[cfg(target_arch = "x86_64")]
const CHILD_STACK: usize = 64 * 1024;

/// What the child writes to the report pipe when the helper itself cannot
/// be executed (the step and message the daemon's report parser knows).
const EXEC_FAILED_REPORT: &[u8] =
    b"{\"step\":\"helper\",\"errno\":0,\"detail\":\"cannot execute the appvisord exec helper\"}\n";

/// A helper launch, prepared in full before the clone.
#[derive(Debug)]
pub struct Launch {
    program: CString,
    argv: Vec<CString>,
    /// (source, target): the child `dup2`s each source onto its target.
    /// Sources are close-on-exec copies numbered above every target, so no
    /// move can clobber a source still to come.
    moves: Vec<(OwnedFd, RawFd)>,
    report_target: RawFd,
}

impl Launch {
    /// `fds` maps each target fd of the helper (0, 1, 2, …) to the fd that
    /// should appear there.
    pub fn new(
        program: CString,
        argv: Vec<CString>,
        fds: &[(BorrowedFd<'_>, RawFd)],
        report_target: RawFd,
    ) -> io::Result<Launch> {
        let above = fds.iter().map(|(_, target)| *target).max().unwrap_or(2) + 1;
        let moves = fds
            .iter()
            .map(|(fd, target)| {
                let copy = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(above))?;
                // SAFETY: F_DUPFD_CLOEXEC just returned this new descriptor,
                // which nothing else owns.
                let copy = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(copy) };
                Ok((copy, *target))
            })
            .collect::<Result<Vec<_>, nix::errno::Errno>>()?;
        Ok(Launch {
            program,
            argv,
            moves,
            report_target,
        })
    }

    /// Clones a child into the cgroup `cgroup` (a directory fd of a v2
    /// cgroup) that lays out its fds and execs the helper. Returns the
    /// child's pid; its exit belongs to the daemon's reaper.
    pub fn spawn_into(self, cgroup: BorrowedFd<'_>) -> io::Result<u32> {
        let mut argv: Vec<*const c_char> = self.argv.iter().map(|a| a.as_ptr()).collect();
        argv.push(ptr::null());
        let envp: [*const c_char; 1] = [ptr::null()];
        let moves: Vec<(RawFd, RawFd)> = self
            .moves
            .iter()
            .map(|(fd, target)| (fd.as_raw_fd(), *target))
            .collect();
        let child = Child {
            program: self.program.as_ptr(),
            argv: argv.as_ptr(),
            envp: envp.as_ptr(),
            moves: moves.as_ptr(),
            n_moves: moves.len(),
            report_target: self.report_target,
        };
        let mut args = CloneArgs {
            flags: CLONE_INTO_CGROUP,
            exit_signal: libc::SIGCHLD as u64,
            cgroup: cgroup.as_raw_fd() as u64,
            ..CloneArgs::default()
        };

        // Block every signal around the clone: a handler of the daemon's
        // (tokio's signal pipe) must never run in the child before exec.
        let all = nix::sys::signal::SigSet::all();
        let mut previous = nix::sys::signal::SigSet::empty();
        nix::sys::signal::pthread_sigmask(
            nix::sys::signal::SigmaskHow::SIG_SETMASK,
            Some(&all),
            Some(&mut previous),
        )?;
        let ret = clone_and_exec(&mut args, &child);
        let clone_error = io::Error::last_os_error();
        nix::sys::signal::pthread_sigmask(
            nix::sys::signal::SigmaskHow::SIG_SETMASK,
            Some(&previous),
            None,
        )?;
        if ret < 0 {
            return Err(clone_error);
        }
        // Our copies of the moved fds close here; the child has its own.
        drop(self.moves);
        Ok(ret as u32)
    }
}

/// What the child reads, every pointer into memory built before the clone.
#[derive(Debug)]
#[repr(C)]
struct Child {
    program: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
    moves: *const (RawFd, RawFd),
    n_moves: usize,
    report_target: RawFd,
}

/// The child: lays out its fds and execs the helper, or reports and exits.
///
/// # Safety
///
/// `child` and everything it points to must stay valid until the child
/// execs or exits, and the caller must have blocked every signal.
unsafe extern "C" fn child_main(child: *const Child) -> ! {
    // SAFETY: dup2, execve, write and _exit are async-signal-safe and touch
    // only the pointers and descriptors built before the clone, which the
    // caller keeps alive (the parent is suspended until the exec, or is a
    // copy of them without CLONE_VM).
    unsafe {
        let child = &*child;
        for i in 0..child.n_moves {
            let (source, target) = *child.moves.add(i);
            if libc::dup2(source, target) < 0 {
                libc::_exit(126);
            }
        }
        libc::execve(child.program, child.argv, child.envp);
        libc::write(
            child.report_target,
            EXEC_FAILED_REPORT.as_ptr().cast(),
            EXEC_FAILED_REPORT.len(),
        );
        libc::_exit(127)
    }
}

/// `clone3` sharing the daemon's memory until the child execs
/// (`CLONE_VM | CLONE_VFORK`), the child on a stack of its own running
/// [`child_main`]. Returns in the parent only: the pid, or -1 and errno.
#[cfg(target_arch = "x86_64")]
fn clone_and_exec(args: &mut CloneArgs, child: &Child) -> i64 {
    const CLONE_VM: u64 = libc::CLONE_VM as u64;
    const CLONE_VFORK: u64 = libc::CLONE_VFORK as u64;
    let mut stack = vec![0u8; CHILD_STACK];
    let base = stack.as_mut_ptr() as u64;
    // The ABI wants the stack 16-byte aligned at a call.
    let top = (base + CHILD_STACK as u64) & !15;
    args.flags |= CLONE_VM | CLONE_VFORK;
    args.stack = base;
    args.stack_size = top - base;
    let entry: unsafe extern "C" fn(*const Child) -> ! = child_main;
    let ret: i64;
    // SAFETY: clone3 with CLONE_VM and a stack of its own starts the child
    // at the instruction after `syscall` on that stack (its top, `top`),
    // every other register as the parent's; the child calls `child_main`
    // at once and never returns to this code (`ud2` marks that). With
    // CLONE_VFORK this thread is suspended until the child execs or exits,
    // so `stack` and `child` outlive the child's use of them, and nothing
    // else of the daemon's is written by it: its own stack and errno,
    // which it shares with the suspended thread (signals are blocked).
    // The parent's path clobbers only what the syscall does (rax, rcx,
    // r11).
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "mov rdi, r12",
            "call r13",
            "ud2",
            "2:",
            inlateout("rax") libc::SYS_clone3 => ret,
            in("rdi") args as *mut CloneArgs,
            in("rsi") std::mem::size_of::<CloneArgs>(),
            in("r12") child as *const Child,
            in("r13") entry,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    drop(stack);
    if ret < 0 {
        // The raw syscall returns -errno and sets no errno.
        // SAFETY: __errno_location returns this thread's errno slot.
        unsafe { *libc::__errno_location() = (-ret) as i32 };
        return -1;
    }
    ret
}

/// `clone3` like `fork`: the child gets a copy of the daemon's memory.
#[cfg(not(target_arch = "x86_64"))]
fn clone_and_exec(args: &mut CloneArgs, child: &Child) -> i64 {
    // SAFETY: clone3 with no CLONE_VM and no stack behaves like fork: the
    // child gets a copy of this thread's memory and runs on from here.
    // `args` is a valid clone_args of the size given.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            args as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if ret == 0 {
        // SAFETY: the child's copy of memory holds `child` and all it
        // points to; signals are blocked.
        unsafe { child_main(child) }
    }
    ret
}
