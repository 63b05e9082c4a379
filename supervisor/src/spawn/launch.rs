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
//! runs only `close_range`, `dup2`, `execve`, `write` and `_exit`, raw
//! async-signal-safe system calls, with every signal blocked (the helper
//! resets the mask).
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
//!
//! The child also shares the daemon's file table (`CLONE_FILES`) until its
//! first system call, `close_range(FIRST, ~0, CLOSE_RANGE_UNSHARE)`, gives
//! it a table of its own holding only the fds below `FIRST` (Linux 5.9,
//! fs/file.c: the copy stops at the last open fd below the closed range).
//! Without that the kernel copied the whole table into every child, a
//! reference per open file, and the exec closed them all again: work that
//! grew with the daemon's fds, several thousand with 1,000 apps. The fds
//! the child needs are put in [`Slots`] below `FIRST`, reserved at start-up
//! so no other thread of the daemon ever opens or closes them while the
//! table is shared; where close_range is missing the table is copied at
//! the clone as before.

use std::ffi::{c_char, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::ptr;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Mutex, OnceLock};

use crate::locks;

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

/// How many fds a launch can pass through the [`Slots`]: 0, 1, 2, the
/// plan, the report pipe and up to 11 listen sockets. A launch with more
/// copies the file table at the clone, as without close_range.
const SLOT_COUNT: usize = 16;

/// The lowest fd a slot may take. Every target of a launch with at most
/// [`SLOT_COUNT`] fds is below it (targets are 0, 1, 2, …), so the child
/// can `dup2` the slots onto their targets in any order, as the moves of
/// the copying path are.
const SLOT_BASE: RawFd = SLOT_COUNT as RawFd;

/// Fds of the daemon's own table reserved for launches: while a child
/// shares the table, the fds it will keep must be ones no other thread of
/// the daemon opens, closes or reuses, and these never are. Between
/// launches each holds `/dev/null` (close-on-exec), so the number stays
/// taken; a launch `dup3`s its fds over them under the mutex, clones, and
/// puts `/dev/null` back at once: left in place, a slot would keep the
/// report pipe's write end (and the log pipes) open in the daemon, and
/// the daemon would never read the report's EOF.
#[derive(Debug)]
struct Slots {
    placeholder: OwnedFd,
    slots: Vec<RawFd>,
    /// One above the highest slot: the child keeps the fds below it.
    first_closed: RawFd,
    /// Set when close_range turned out unusable after all, or a slot
    /// could not be put back: every later launch copies the table.
    broken: bool,
}

static SLOTS: OnceLock<Option<Mutex<Slots>>> = OnceLock::new();

/// Reserves the launch slots, once; the daemon calls it at start-up,
/// before it opens its apps' fds, so the slots are low and each child
/// copies few fds (it works later too, with slots as low as are free).
/// False where close_range(2) is missing (before Linux 5.9, or filtered
/// out), or on a machine without the shared-memory clone.
pub fn reserve_slots() -> bool {
    slots().is_some()
}

fn slots() -> Option<&'static Mutex<Slots>> {
    SLOTS
        .get_or_init(|| match Slots::reserve() {
            Ok(slots) => slots.map(Mutex::new),
            Err(error) => {
                tracing::warn!(%error, "cannot reserve the exec helper's fd slots; each spawn copies the file table");
                None
            }
        })
        .as_ref()
}

impl Slots {
    fn reserve() -> io::Result<Option<Slots>> {
        if !cfg!(target_arch = "x86_64") || !close_range_works() {
            return Ok(None);
        }
        let placeholder = std::fs::File::open("/dev/null")?;
        let mut slots = Vec::with_capacity(SLOT_COUNT);
        for _ in 0..SLOT_COUNT {
            let fd = nix::fcntl::fcntl(
                &placeholder,
                nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(SLOT_BASE),
            )?;
            slots.push(fd);
        }
        let first_closed = slots.iter().max().map_or(SLOT_BASE, |fd| fd + 1);
        tracing::debug!(?slots, "exec helper fd slots reserved");
        Ok(Some(Slots {
            placeholder: placeholder.into(),
            slots,
            first_closed,
            broken: false,
        }))
    }

    /// Puts `/dev/null` back in the first `used` slots. A slot that cannot
    /// be refilled is closed (it may hold the report pipe) and the slots
    /// are given up.
    fn refill(&mut self, used: usize) {
        for &slot in &self.slots[..used] {
            // SAFETY: dup3 onto a slot, a number this struct owns and
            // nothing else in the daemon touches; the placeholder is open.
            let rc = unsafe { libc::dup3(self.placeholder.as_raw_fd(), slot, libc::O_CLOEXEC) };
            if rc < 0 {
                let error = io::Error::last_os_error();
                tracing::error!(%error, slot, "cannot put /dev/null back in an exec helper fd slot; each spawn copies the file table from now on");
                // SAFETY: the slot is this struct's own, as above; it is
                // never used again once `broken` is set.
                unsafe { libc::close(slot) };
                self.broken = true;
            }
        }
    }
}

/// Whether close_range(2), and with it CLOSE_RANGE_UNSHARE (both Linux
/// 5.9), is there: a range holding no fd closes nothing and succeeds.
fn close_range_works() -> bool {
    // SAFETY: fd u32::MAX can never be open (the kernel caps fds far
    // below), so this closes nothing.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, u32::MAX, u32::MAX, 0) };
    rc == 0
}

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
        if let Some(slots) = slots() {
            let mut slots = locks::lock(slots);
            if let Some(pid) = self.spawn_through_slots(&mut slots, cgroup)? {
                return Ok(pid);
            }
        }
        let moves: Vec<(RawFd, RawFd)> = self
            .moves
            .iter()
            .map(|(fd, target)| (fd.as_raw_fd(), *target))
            .collect();
        let pid = match self.clone_child(&moves, cgroup, None)? {
            Cloned::Pid(pid) => pid,
            Cloned::NoUnshare(error) => unreachable!("no unshare was asked for: {error}"),
        };
        // Our copies of the moved fds close here; the child has its own.
        drop(self.moves);
        Ok(pid)
    }

    /// The clone sharing the file table, its fds in `slots`. `Ok(None)`
    /// when the slots cannot take this launch (too many fds, or the
    /// kernel refused to unshare): the caller then copies the table.
    fn spawn_through_slots(
        &self,
        slots: &mut Slots,
        cgroup: BorrowedFd<'_>,
    ) -> io::Result<Option<u32>> {
        let lowest = slots.slots.iter().copied().min().unwrap_or(0);
        if slots.broken
            || self.moves.len() > slots.slots.len()
            || self.moves.iter().any(|(_, target)| *target >= lowest)
        {
            return Ok(None);
        }
        let mut moves = Vec::with_capacity(self.moves.len());
        for ((fd, target), &slot) in self.moves.iter().zip(&slots.slots) {
            // SAFETY: dup3 onto a slot, which the held mutex gives this
            // launch alone; it replaces the slot's /dev/null atomically, so
            // the number is never free for another thread to take.
            if unsafe { libc::dup3(fd.as_raw_fd(), slot, libc::O_CLOEXEC) } < 0 {
                let error = io::Error::last_os_error();
                slots.refill(moves.len());
                tracing::debug!(%error, slot, "cannot fill an exec helper fd slot; copying the file table");
                return Ok(None);
            }
            moves.push((slot, *target));
        }
        let cloned = self.clone_child(&moves, cgroup, Some(slots.first_closed));
        slots.refill(moves.len());
        match cloned? {
            Cloned::Pid(pid) => Ok(Some(pid)),
            Cloned::NoUnshare(error) => {
                // That child exited at once without touching the shared
                // table; the reaper reaps it as an unknown pid.
                if matches!(
                    error.raw_os_error(),
                    Some(libc::ENOSYS | libc::EINVAL | libc::EPERM)
                ) {
                    tracing::warn!(%error, "close_range cannot unshare the file table; each spawn copies it from now on");
                    slots.broken = true;
                } else {
                    tracing::debug!(%error, "close_range could not unshare the file table; copying it");
                }
                Ok(None)
            }
        }
    }

    /// The clone itself, the child laying out `moves`. With
    /// `unshare_below`, the child shares the daemon's file table and
    /// first unshares it keeping only the fds below that number.
    fn clone_child(
        &self,
        moves: &[(RawFd, RawFd)],
        cgroup: BorrowedFd<'_>,
        unshare_below: Option<RawFd>,
    ) -> io::Result<Cloned> {
        let mut argv: Vec<*const c_char> = self.argv.iter().map(|a| a.as_ptr()).collect();
        argv.push(ptr::null());
        let envp: [*const c_char; 1] = [ptr::null()];
        let child = Child {
            program: self.program.as_ptr(),
            argv: argv.as_ptr(),
            envp: envp.as_ptr(),
            moves: moves.as_ptr(),
            n_moves: moves.len(),
            report_target: self.report_target,
            unshare_below: unshare_below.unwrap_or(0),
            unshare_errno: AtomicI32::new(0),
        };
        let mut args = CloneArgs {
            flags: CLONE_INTO_CGROUP,
            exit_signal: libc::SIGCHLD as u64,
            cgroup: cgroup.as_raw_fd() as u64,
            ..CloneArgs::default()
        };
        if unshare_below.is_some() {
            args.flags |= libc::CLONE_FILES as u64;
        }

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
        // The child has exec'd or exited by now (CLONE_VFORK), so what it
        // wrote here is final.
        match child.unshare_errno.load(Ordering::Relaxed) {
            0 => Ok(Cloned::Pid(ret as u32)),
            errno => Ok(Cloned::NoUnshare(io::Error::from_raw_os_error(errno))),
        }
    }
}

/// What a clone gave.
#[derive(Debug)]
enum Cloned {
    /// The child, which has exec'd the helper (or reports why not).
    Pid(u32),
    /// The child could not unshare the file table and exited, untouched.
    NoUnshare(io::Error),
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
    /// Non-zero: the child shares the daemon's file table and first
    /// unshares it, closing every fd from this one up.
    unshare_below: RawFd,
    /// The child's errno when that unshare failed; 0 otherwise. Written by
    /// the child in the memory it shares with the daemon.
    unshare_errno: AtomicI32,
}

/// The child: lays out its fds and execs the helper, or reports and exits.
///
/// # Safety
///
/// `child` and everything it points to must stay valid until the child
/// execs or exits, and the caller must have blocked every signal.
unsafe extern "C" fn child_main(child: *const Child) -> ! {
    // SAFETY: close_range, dup2, execve, write and _exit are
    // async-signal-safe system calls and touch only the pointers and
    // descriptors built before the clone, which the caller keeps alive (the
    // parent is suspended until the exec, or is a copy of them without
    // CLONE_VM). With a shared file table (`unshare_below`), close_range
    // comes first and the dup2s only after it succeeded, on the child's
    // own table: nothing of the daemon's table is ever changed.
    unsafe {
        let child = &*child;
        if child.unshare_below > 0 {
            // First, before any fd is touched: a table of its own, holding
            // only the fds below `unshare_below` (the slots and whatever
            // else sits that low). On failure the table is still the
            // daemon's: say why in the shared memory and exit untouched.
            let rc = libc::syscall(
                libc::SYS_close_range,
                child.unshare_below as libc::c_uint,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_UNSHARE,
            );
            if rc != 0 {
                let errno = *libc::__errno_location();
                child.unshare_errno.store(errno.max(1), Ordering::Relaxed);
                libc::_exit(126);
            }
        }
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
    // else of the daemon's is written by it: its own stack, errno, which
    // it shares with the suspended thread (signals are blocked), and
    // `child.unshare_errno`, an atomic read only after the child is gone.
    // With CLONE_FILES it also shares the file table, which it leaves
    // untouched (see `child_main`). The parent's path clobbers only what
    // the syscall does (rax, rcx, r11).
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
    // No slots are reserved here (`Slots::reserve`): a fork-like child
    // runs alongside the daemon, which would refill the slots before the
    // child had its own table.
    debug_assert_eq!(args.flags & libc::CLONE_FILES as u64, 0);
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
