//! New namespaces for the app, entered by the exec helper while it is still
//! root: mount (for a private `/tmp` and `/var/tmp`), IPC, UTS, and an
//! empty network namespace for `network = "none"`.
//!
//! Must never run in the daemon's own process: unshare changes the calling
//! process for good.

use std::path::Path;

use nix::errno::Errno;
use nix::mount::{mount, MsFlags};
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
        (plan.private_tmp.is_some(), CloneFlags::CLONE_NEWNS, "mount"),
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

/// Unshares the planned namespaces and mounts the private tmp directories.
pub fn enter(plan: &NamespacePlan) -> Result<(), NamespaceError> {
    let (flags, names) = clone_flags(plan);
    if flags.is_empty() {
        return Ok(());
    }
    unshare(flags).map_err(|source| NamespaceError::Unshare {
        flags: names.join(","),
        source,
    })?;
    let Some(size) = plan.private_tmp else {
        return Ok(());
    };
    // The new mount namespace starts as a copy whose mounts may still share
    // propagation with the host's: make every mount a slave first, so our
    // tmpfs never appears on the host while the host's later mounts (an NFS
    // share coming back) still reach the app.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .map_err(|source| NamespaceError::Mount {
        target: "/ (rslave)".into(),
        source,
    })?;
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
        .map_err(|source| NamespaceError::Mount {
            target: dir.into(),
            source,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_planned_namespaces() {
        let plan = NamespacePlan {
            private_tmp: Some(1 << 20),
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
