//! New namespaces for the app, entered by the exec helper while it is still
//! root: mount, IPC, UTS, and an empty network namespace for
//! `network = "none"`. In the new mount namespace: a private `/tmp` and
//! `/var/tmp`, the hidden paths, and a procfs of the app's own.
//!
//! Must never run in the daemon's own process: unshare changes the calling
//! process for good.

use std::fs::{self, DirBuilder, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};

use super::rules::{NamespacePlan, TMP_DIRS};

#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    #[error("unshare {flags}")]
    Unshare {
        flags: String,
        #[source]
        source: Errno,
    },
    #[error("mount {target}")]
    Mount {
        target: String,
        #[source]
        source: Errno,
    },
}

impl NamespaceError {
    pub fn errno(&self) -> Errno {
        match self {
            NamespaceError::Unshare { source, .. } | NamespaceError::Mount { source, .. } => {
                *source
            }
        }
    }

    /// The namespaces or mount point involved, for the failure report.
    pub fn detail(&self) -> String {
        match self {
            NamespaceError::Unshare { flags, .. } => flags.clone(),
            NamespaceError::Mount { target, .. } => target.clone(),
        }
    }
}

/// The clone flags of `plan`, and their names for messages.
pub fn clone_flags(plan: &NamespacePlan) -> (CloneFlags, Vec<&'static str>) {
    let mut flags = CloneFlags::empty();
    let mut names = Vec::new();
    let wanted = [
        (plan.mount, CloneFlags::CLONE_NEWNS, "mount"),
        (plan.ipc, CloneFlags::CLONE_NEWIPC, "ipc"),
        (plan.uts, CloneFlags::CLONE_NEWUTS, "uts"),
        (plan.network, CloneFlags::CLONE_NEWNET, "network"),
    ];
    for (on, flag, name) in wanted {
        if on {
            flags |= flag;
            names.push(name);
        }
    }
    (flags, names)
}

/// The procfs options of the app's `/proc`: processes the caller may not
/// ptrace-read (other users', and, through Landlock's ptrace rule, other
/// apps' of the same user) are not listed at all. Without a PID namespace
/// of its own the app keeps seeing host-wide figures (`/proc/meminfo`),
/// which `subset=pid` would hide.
pub const PROC_OPTIONS: &str = "hidepid=invisible";

/// Where the empty, mode-0000 stand-ins for hidden paths are made. A tmpfs
/// mounted here for a moment, before the app's own procfs covers it.
const STAGING: &str = "/proc";

/// Unshares the planned namespaces and makes the planned mounts: slave
/// propagation, the private tmp directories, the hidden paths, the app's
/// own `/proc`.
pub fn enter(plan: &NamespacePlan) -> Result<(), NamespaceError> {
    let (flags, names) = clone_flags(plan);
    if flags.is_empty() {
        return Ok(());
    }
    unshare(flags).map_err(|source| NamespaceError::Unshare {
        flags: names.join(","),
        source,
    })?;
    if !plan.mount {
        return Ok(());
    }
    // The new mount namespace starts as a copy whose mounts may still share
    // propagation with the host's: make every mount a slave first, so our
    // mounts never appear on the host while the host's later mounts (an NFS
    // share coming back) still reach the app.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .map_err(|source| mount_error("/ (rslave)", source))?;
    if let Some(size) = plan.private_tmp {
        let options = format!("mode=1777,size={size}");
        for dir in TMP_DIRS {
            if !Path::new(dir).is_dir() {
                continue;
            }
            mount(
                Some("tmpfs"),
                dir,
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                Some(options.as_str()),
            )
            .map_err(|source| mount_error(dir, source))?;
        }
    }
    hide(&plan.hide)?;
    if plan.private_proc {
        // Mounted over the host's /proc: a fresh procfs instance (Linux 5.8
        // and later) with its own options, of the host's PID namespace.
        mount(
            Some("proc"),
            "/proc",
            Some("proc"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some(PROC_OPTIONS),
        )
        .map_err(|source| mount_error("/proc", source))?;
    }
    Ok(())
}

/// Mounts an empty, root-owned, mode-0000 directory over each directory of
/// `paths`, and such a file over every other kind; skips what is missing.
/// The stand-ins are made on a tmpfs mounted at [`STAGING`] and detached
/// again once bound, so nothing of it stays reachable.
fn hide(paths: &[std::path::PathBuf]) -> Result<(), NamespaceError> {
    let present: Vec<(&Path, bool)> = paths
        .iter()
        .filter_map(|path| {
            fs::metadata(path)
                .ok()
                .map(|m| (path.as_path(), m.is_dir()))
        })
        .collect();
    if present.is_empty() {
        return Ok(());
    }
    mount(
        Some("tmpfs"),
        STAGING,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=0700,size=16k,nr_inodes=8"),
    )
    .map_err(|source| mount_error(STAGING, source))?;
    let staging = Path::new(STAGING);
    let (dir, file) = (staging.join("hidden-dir"), staging.join("hidden-file"));
    let io = |target: &Path| {
        let target = target.display().to_string();
        move |e: std::io::Error| {
            mount_error(&target, Errno::from_raw(e.raw_os_error().unwrap_or(0)))
        }
    };
    DirBuilder::new()
        .mode(0o000)
        .create(&dir)
        .map_err(io(&dir))?;
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o000)
        .open(&file)
        .map_err(io(&file))?;
    for (path, is_dir) in present {
        let source = if is_dir { &dir } else { &file };
        mount(
            Some(source.as_path()),
            path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|source| mount_error(&path.display().to_string(), source))?;
    }
    // The binds keep the tmpfs alive; its mount point goes.
    umount2(STAGING, MntFlags::MNT_DETACH).map_err(|source| mount_error(STAGING, source))
}

fn mount_error(target: &str, source: Errno) -> NamespaceError {
    NamespaceError::Mount {
        target: target.into(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_planned_namespaces() {
        let plan = NamespacePlan {
            mount: true,
            private_tmp: Some(1 << 20),
            private_proc: true,
            hide: Vec::new(),
            ipc: true,
            uts: true,
            network: true,
        };
        let (flags, names) = clone_flags(&plan);
        assert_eq!(names, ["mount", "ipc", "uts", "network"]);
        assert_eq!(
            flags,
            CloneFlags::CLONE_NEWNS
                | CloneFlags::CLONE_NEWIPC
                | CloneFlags::CLONE_NEWUTS
                | CloneFlags::CLONE_NEWNET
        );
        let (flags, names) = clone_flags(&NamespacePlan::none());
        assert!(flags.is_empty());
        assert!(names.is_empty());
    }
}
