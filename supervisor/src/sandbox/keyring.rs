//! The app's own session keyring. Without one, every app shares the
//! daemon's (or its user's) session keyring, and one app can read,
//! overwrite and plant keys another app finds there.
//!
//! Run only by the exec helper, while still root (KEYCTL_CHOWN needs
//! CAP_SYS_ADMIN): it replaces the calling process's session keyring for
//! good.

use nix::errno::Errno;

const KEYCTL_JOIN_SESSION_KEYRING: nix::libc::c_long = 1;
const KEYCTL_CHOWN: nix::libc::c_long = 4;
const KEYCTL_SETPERM: nix::libc::c_long = 5;

/// Every right for a process that possesses the keyring (has it as its
/// session keyring), and only "view" for other processes of its user:
/// another app of the same user can neither read, search nor join it.
const PERMISSIONS: nix::libc::c_long = 0x3f00_0000 | 0x0001_0000;

/// Joins a new, anonymous session keyring owned by `uid`:`gid`, which the
/// app's processes inherit across fork and exec.
pub fn join_own_session(uid: u32, gid: u32) -> Result<(), Errno> {
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
    // SAFETY: integer arguments only. The keyring is charged to the app's
    // user from here on.
    Errno::result(unsafe {
        nix::libc::syscall(
            nix::libc::SYS_keyctl,
            KEYCTL_CHOWN,
            serial,
            uid as nix::libc::c_long,
            gid as nix::libc::c_long,
        )
    })?;
    Ok(())
}
