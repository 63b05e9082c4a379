//! This host's systemd version and cgroup file system, as the package's
//! `debian/systemd-drop-in` reads them, and what the unit's drop-in it
//! prints must set for them (docs/handoff.md, "systemd: stop, and
//! TimeoutStopSec").

use std::process::Command;

/// Where the package's postinst writes the drop-in.
pub const DROP_IN: &str = "/usr/lib/systemd/system/appvisord.service.d/00-appvisor-crash.conf";

/// The number `systemctl --version` starts with; `None` without systemctl.
pub fn version() -> Option<u32> {
    let out = Command::new("systemctl").arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .next()?
        .strip_prefix("systemd ")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The type of `/sys/fs/cgroup` as `stat -fc %T` names it: `cgroup2fs` on
/// a pure cgroup v2 host, `tmpfs` on a hybrid or v1 one.
pub fn cgroup_fs() -> String {
    use nix::sys::statfs::{statfs, CGROUP2_SUPER_MAGIC, TMPFS_MAGIC};
    match statfs("/sys/fs/cgroup") {
        Ok(fs) if fs.filesystem_type() == CGROUP2_SUPER_MAGIC => "cgroup2fs".to_owned(),
        Ok(fs) if fs.filesystem_type() == TMPFS_MAGIC => "tmpfs".to_owned(),
        Ok(fs) => format!("{:x}", fs.filesystem_type().0),
        Err(_) => String::new(),
    }
}

/// A drop-in's lines that set something: neither comments nor blank.
pub fn settings(drop_in: &str) -> Vec<String> {
    drop_in
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// What the drop-in must set under systemd `version` (`None`: unknown)
/// with `/sys/fs/cgroup` of type `fs`: only a pure cgroup v2 host needs
/// anything; systemd 254 and later start the daemon in its leaf, older
/// ones kill the apps with a crashed daemon.
pub fn expected_settings(version: Option<u32>, fs: &str) -> Vec<&'static str> {
    match (fs, version) {
        ("cgroup2fs", Some(v)) if v >= 254 => {
            vec!["[Service]", "DelegateSubgroup=appvisor-daemon"]
        }
        ("cgroup2fs", _) => vec!["[Service]", "KillMode=mixed"],
        _ => Vec::new(),
    }
}
