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
        // SAFETY: clone3 with no CLONE_VM and no stack behaves like fork: the
        // child gets a copy of this thread's memory and runs on from here.
        // `args` is a valid clone_args of the size given.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_clone3,
                &mut args as *mut CloneArgs,
                std::mem::size_of::<CloneArgs>(),
            )
        };
        if ret == 0 {
            // The child: only raw system calls on memory prepared above.
            // SAFETY: dup2, execve, write and _exit are async-signal-safe and
            // touch only the pointers and descriptors built before the clone,
            // which the child's copy of memory still holds.
            unsafe {
                for &(source, target) in &moves {
                    if libc::dup2(source, target) < 0 {
                        libc::_exit(126);
                    }
                }
                libc::execve(self.program.as_ptr(), argv.as_ptr(), envp.as_ptr());
                libc::write(
                    self.report_target,
                    EXEC_FAILED_REPORT.as_ptr().cast(),
                    EXEC_FAILED_REPORT.len(),
                );
                libc::_exit(127);
            }
        }
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
