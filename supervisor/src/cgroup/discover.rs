//! Finding the cgroup v2 tree and the daemon's place in it, from the text of
//! `/proc/self/mountinfo` and `/proc/self/cgroup`.
//!
//! Pure: callers read the files and pass their contents in, so every host
//! layout (pure v2, hybrid, v1 only, containers) is a unit test. Never
//! touches the file system.

use std::path::PathBuf;

/// A cgroup2 mount as `/proc/self/mountinfo` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct V2Mount {
    /// Where the tree is mounted, e.g. `/sys/fs/cgroup/unified`.
    pub(crate) mount_point: PathBuf,
    /// Which cgroup is the mount's root, as `/proc/self/cgroup` would name
    /// it: `/` unless a container runtime bind-mounted a subtree.
    pub(crate) root: String,
}

/// Where the cgroup v2 tree is mounted: `/sys/fs/cgroup` on pure v2 hosts,
/// `/sys/fs/cgroup/unified` on hybrid ones, `None` where only v1 exists.
pub fn find_v2_mount(mountinfo: &str) -> Option<PathBuf> {
    parse_v2_mount(mountinfo).map(|mount| mount.mount_point)
}

/// The first cgroup2 mount in `mountinfo` (proc(5)): `ID PARENT MAJ:MIN ROOT
/// MOUNT_POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER_OPTIONS`.
pub(crate) fn parse_v2_mount(mountinfo: &str) -> Option<V2Mount> {
    mountinfo.lines().find_map(|line| {
        let (before, after) = line.split_once(" - ")?;
        if after.split(' ').next()? != "cgroup2" {
            return None;
        }
        let mut fields = before.split(' ');
        let root = fields.nth(3)?;
        let mount_point = fields.next()?;
        Some(V2Mount {
            mount_point: PathBuf::from(unescape_octal(mount_point)),
            root: unescape_octal(root),
        })
    })
}

/// The daemon's own v2 cgroup: the path of the `0::PATH` line of
/// `/proc/self/cgroup`, e.g. `/` or `/system.slice/appvisor.service`.
/// `None` when the process is in no v2 hierarchy.
pub fn own_v2_path(proc_self_cgroup: &str) -> Option<String> {
    proc_self_cgroup
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .filter(|path| path.starts_with('/'))
        .map(str::to_owned)
}

/// `own` (as `/proc/self/cgroup` names it) relative to the mount's root, so it
/// can be joined to the mount point. `None` if `own` lies outside the mounted
/// subtree, where the daemon cannot reach its own cgroup.
pub(crate) fn path_under_mount<'a>(mount_root: &str, own: &'a str) -> Option<&'a str> {
    if mount_root == "/" {
        return Some(own);
    }
    let rest = own.strip_prefix(mount_root.trim_end_matches('/'))?;
    if rest.is_empty() {
        Some("/")
    } else if rest.starts_with('/') {
        Some(rest)
    } else {
        None
    }
}

/// mountinfo escapes space, tab, newline and backslash as `\NNN` octal.
fn unescape_octal(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|digits| bytes[i] == b'\\' && digits.iter().all(|d| (b'0'..=b'7').contains(d)));
        match octal {
            Some(digits) => {
                let value = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                out.push(u8::try_from(value).unwrap_or(b'?'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PURE_V2: &str = "\
22 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
25 1 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
30 25 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    const V1_ONLY: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
";

    // A container without a cgroup namespace: the runtime mounted its own
    // subtree, and a mount point with a space in it.
    const CONTAINER: &str = "\
700 650 0:26 /docker/abc /sys/fs/cgroup\\040tree ro,nosuid - cgroup2 cgroup ro
";

    #[test]
    fn finds_the_v2_mount() {
        let cases: &[(&str, &str, Option<V2Mount>)] = &[
            (
                "pure v2",
                PURE_V2,
                Some(V2Mount {
                    mount_point: "/sys/fs/cgroup".into(),
                    root: "/".into(),
                }),
            ),
            (
                "hybrid",
                HYBRID,
                Some(V2Mount {
                    mount_point: "/sys/fs/cgroup/unified".into(),
                    root: "/".into(),
                }),
            ),
            ("v1 only", V1_ONLY, None),
            ("empty", "", None),
            (
                "container subtree, escaped space",
                CONTAINER,
                Some(V2Mount {
                    mount_point: "/sys/fs/cgroup tree".into(),
                    root: "/docker/abc".into(),
                }),
            ),
        ];
        for (name, mountinfo, want) in cases {
            assert_eq!(&parse_v2_mount(mountinfo), want, "{name}");
            assert_eq!(
                find_v2_mount(mountinfo),
                want.as_ref().map(|m| m.mount_point.clone()),
                "{name}"
            );
        }
    }

    #[test]
    fn finds_the_own_v2_path() {
        let cases: &[(&str, &str, Option<&str>)] = &[
            ("pure v2, root", "0::/\n", Some("/")),
            (
                "pure v2, nested",
                "0::/system.slice/appvisor.service\n",
                Some("/system.slice/appvisor.service"),
            ),
            (
                "hybrid",
                "9:name=systemd:/\n4:memory:/process_api/8a6d\n1:cpu:/\n0::/user.slice/x\n",
                Some("/user.slice/x"),
            ),
            ("v1 only", "4:memory:/a\n1:cpu,cpuacct:/b\n", None),
            ("empty", "", None),
            ("garbage after 0::", "0::relative\n", None),
        ];
        for (name, contents, want) in cases {
            assert_eq!(own_v2_path(contents).as_deref(), *want, "{name}");
        }
    }

    #[test]
    fn places_the_own_path_under_the_mount_root() {
        let cases: &[(&str, &str, Option<&str>)] = &[
            ("/", "/a/b", Some("/a/b")),
            ("/", "/", Some("/")),
            ("/docker/abc", "/docker/abc", Some("/")),
            ("/docker/abc", "/docker/abc/x", Some("/x")),
            ("/docker/abc/", "/docker/abc/x", Some("/x")),
            ("/docker/abc", "/docker/abcd", None),
            ("/docker/abc", "/other", None),
        ];
        for (root, own, want) in cases {
            assert_eq!(path_under_mount(root, own), *want, "{root} {own}");
        }
    }

    #[test]
    fn unescapes_mountinfo_octal() {
        let cases = [
            ("/plain", "/plain"),
            ("/a\\040b", "/a b"),
            ("/tab\\011x", "/tab\tx"),
            ("/back\\134slash", "/back\\slash"),
            ("/not\\08", "/not\\08"),
            ("/short\\04", "/short\\04"),
        ];
        for (raw, want) in cases {
            assert_eq!(unescape_octal(raw), want, "{raw}");
        }
    }
}
