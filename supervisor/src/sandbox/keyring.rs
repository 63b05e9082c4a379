//! The app's own session keyring. Without one, every app shares the
//! daemon's (or its user's) session keyring, and one app can read,
//! overwrite and plant keys another app finds there.
//!
//! Run only by the exec helper, while still root: it replaces the calling
//! process's session keyring for good.
//!
//! The keyring stays root's. Its possessors (the app's processes, which
//! inherit it as their session keyring) have every right on it, nobody
//! else has any, and it is charged to root's key quota
//! (`kernel.keys.root_maxkeys`) rather than the app's user's
//! (`kernel.keys.maxkeys`, 200 by default): one user may run more apps
//! than that quota. Keys the app adds to it are its user's, as always.

use nix::errno::Errno;

const KEYCTL_JOIN_SESSION_KEYRING: nix::libc::c_long = 1;
const KEYCTL_SETPERM: nix::libc::c_long = 5;

/// Every right for a process that possesses the keyring (has it as its
/// session keyring) and none for anyone else: another app, of the same
/// user or not, can neither see, read, search nor join it.
const PERMISSIONS: nix::libc::c_long = 0x3f00_0000;

/// Joins a new, anonymous session keyring, which the app's processes
/// inherit across fork and exec.
pub fn join_own_session() -> Result<(), Errno> {
    // SAFETY: a null name asks for a new anonymous keyring; the kernel reads
    // no memory of ours.
    let serial = Errno::result(unsafe {
        nix::libc::syscall(
            nix::libc::SYS_keyctl,
            KEYCTL_JOIN_SESSION_KEYRING,
            std::ptr::null::<nix::libc::c_char>(),
        )
    })?;
    // SAFETY: integer arguments only.
    Errno::result(unsafe {
        nix::libc::syscall(nix::libc::SYS_keyctl, KEYCTL_SETPERM, serial, PERMISSIONS)
    })?;
    Ok(())
}
