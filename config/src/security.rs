//! What in an app's settings weakens its sandbox: the warnings (and the one
//! refusal) `appctl check` and the daemon's load report, and the typed
//! [`Weakness`]es the exposure score counts.
//!
//! Two stages, as the rest of `config`: [`spec_weaknesses`] looks at the
//! validated spec alone (pure); [`identity_weaknesses`] at the user and
//! groups it resolved to and at which groups own the host's secrets (read
//! once per resolve by [`SecretGroups::scan`]). `config::positions` puts
//! each finding at its key's file, line and column.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::spec::AppSpec;

/// What kind of weakness: each lowers one exposure check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WeaknessKind {
    /// A group that reads secrets or is as good as root.
    PrivilegedGroup,
    /// `read_only` or `read_write` of `/`, `/etc`, `/proc`, `/home`, ...
    BroadGrant,
    /// A `umask` that lets every user write the app's new files.
    WorldWritableUmask,
    /// `LD_PRELOAD`, or a search path of the loader or Python in a place
    /// the app can write: code an attacker plants there runs at the next
    /// start.
    LoaderVariable,
    /// `[access]` to a group every user is in.
    AccessForEveryone,
    /// The shared `nobody` user, whose files every such service shares.
    SharedUser,
}

impl WeaknessKind {
    /// Found only once the user and groups are resolved
    /// ([`identity_weaknesses`]), not by validation.
    pub fn needs_identity(self) -> bool {
        matches!(
            self,
            WeaknessKind::PrivilegedGroup
                | WeaknessKind::SharedUser
                | WeaknessKind::AccessForEveryone
        )
    }
}

/// One weakness, with the key it comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Weakness {
    pub kind: WeaknessKind,
    /// Dotted key, as in errors: `sandbox.read_only[0]`, `environment.LD_PRELOAD`.
    pub key: String,
    pub message: String,
    pub hint: String,
}

impl Weakness {
    fn new(
        kind: WeaknessKind,
        key: impl Into<String>,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> Weakness {
        Weakness {
            kind,
            key: key.into(),
            message: message.into(),
            hint: hint.into(),
        }
    }
}

/// Paths whose grant opens the host: what is under them belongs to other
/// users, other apps or the kernel.
pub const BROAD_PATHS: &[&str] = &[
    "/", "/etc", "/proc", "/home", "/root", "/var", "/run", "/srv", "/sys", "/dev", "/boot",
];

/// Whether granting `path` grants one of [`BROAD_PATHS`] whole.
pub fn is_broad(path: &Path) -> bool {
    BROAD_PATHS
        .iter()
        .any(|broad| Path::new(broad).starts_with(path))
}

/// Loader and interpreter variables that make every start run code from
/// wherever they point.
const LOADER_ALWAYS: &[&str] = &["LD_PRELOAD", "LD_AUDIT"];
/// Search paths: dangerous when an entry is somewhere the app can write.
const LOADER_PATHS: &[&str] = &[
    "LD_LIBRARY_PATH",
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONUSERBASE",
];

/// Where every app may write whatever its `read_write` says.
const ALWAYS_WRITABLE: &[&str] = &["/tmp", "/var/tmp", "/dev/shm"];

/// Groups that are as good as root or read what only root should: by name,
/// for hosts where the group owns nothing yet (docker before its socket).
const PRIVILEGED_GROUPS: &[&str] = &[
    "adm",
    "admin",
    "disk",
    "docker",
    "incus-admin",
    "kmem",
    "libvirt",
    "lxd",
    "shadow",
    "staff",
    "sudo",
    "systemd-journal",
    "wheel",
];

/// Groups every user is in on common hosts.
const EVERYONE_GROUPS: &[&str] = &["users", "everyone", "domain users"];
/// Debian's `users` group, every user's primary group without user groups.
const USERS_GID: u32 = 100;

/// The shared unprivileged user of NFS and many daemons.
const NOBODY: (&str, u32) = ("nobody", 65534);

/// Weaknesses of the spec alone.
pub fn spec_weaknesses(spec: &AppSpec) -> Vec<Weakness> {
    let mut found = Vec::new();
    let lists = [
        ("sandbox.read_only", &spec.sandbox.read_only, "read"),
        ("sandbox.read_write", &spec.sandbox.read_write, "write"),
    ];
    for (key, paths, verb) in lists {
        for (i, path) in paths.iter().enumerate() {
            if is_broad(path) {
                found.push(Weakness::new(
                    WeaknessKind::BroadGrant,
                    format!("{key}[{i}]"),
                    format!(
                        "{} lets the app {verb} files of other users, apps or the kernel",
                        path.display()
                    ),
                    "grant only the directories the app needs, like /srv/shop/shared",
                ));
            }
        }
    }
    if spec.umask & 0o002 == 0 {
        found.push(Weakness::new(
            WeaknessKind::WorldWritableUmask,
            "umask",
            format!(
                "umask {:04o} makes the app's new files writable by every user",
                spec.umask
            ),
            "use \"0027\" or \"0022\"",
        ));
    }
    let writable: Vec<&Path> = spec
        .sandbox
        .read_write
        .iter()
        .map(PathBuf::as_path)
        .chain(ALWAYS_WRITABLE.iter().map(Path::new))
        .collect();
    for (name, value) in &spec.environment {
        let key = format!("environment.{name}");
        if LOADER_ALWAYS.contains(&name.as_str()) {
            found.push(Weakness::new(
                WeaknessKind::LoaderVariable,
                key,
                format!("{name} loads {value} into every process of the app"),
                "link the library into the app or its venv instead",
            ));
        } else if LOADER_PATHS.contains(&name.as_str()) {
            let separator = ':';
            let bad = value.split(separator).find(|entry| {
                let entry = Path::new(entry);
                !entry.is_absolute() || writable.iter().any(|w| entry.starts_with(w))
            });
            if let Some(entry) = bad {
                let place = if Path::new(entry).is_absolute() {
                    format!("{entry}, which the app can write")
                } else {
                    format!("{entry:?}, relative to the app's directory")
                };
                found.push(Weakness::new(
                    WeaknessKind::LoaderVariable,
                    key,
                    format!("{name} searches {place}: code planted there runs at the next start"),
                    "point it only at read-only paths, like the app's own code or venv",
                ));
            }
        }
    }
    found
}

/// Which groups can read or write which of the host's secrets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretGroups {
    /// gid → the secrets its members reach through the group bits.
    by_gid: BTreeMap<u32, Vec<PathBuf>>,
    /// gids whose members can read `/etc/shadow` or `/etc/gshadow`.
    shadow: Vec<u32>,
}

/// Files and sockets only root should reach; a group whose bits open one
/// of them to its members is privileged.
const SECRETS: &[&str] = &[
    "/etc/shadow",
    "/etc/gshadow",
    "/etc/shadow-",
    "/etc/gshadow-",
    "/etc/sudoers",
    "/etc/ssl/private",
    "/etc/ssh/ssh_host_ed25519_key",
    "/etc/ssh/ssh_host_ecdsa_key",
    "/etc/ssh/ssh_host_rsa_key",
    "/var/log/auth.log",
    "/var/log/syslog",
    "/var/log/journal",
    "/run/docker.sock",
    "/run/containerd/containerd.sock",
    "/run/podman/podman.sock",
    "/var/lib/lxd/unix.socket",
    "/var/snap/lxd/common/lxd/unix.socket",
    "/var/lib/incus/unix.socket",
    "/dev/mem",
    "/dev/kmem",
    "/dev/port",
];

/// Hash files: a group reading them is refused outright.
const SHADOW: &[&str] = &["/etc/shadow", "/etc/gshadow"];

impl SecretGroups {
    /// Looks at [`SECRETS`] and the host's block devices, under `root`.
    pub fn scan(root: &Path) -> SecretGroups {
        let under = |path: &str| root.join(path.trim_start_matches('/'));
        let mut secrets = SecretGroups::default();
        let mut paths: Vec<PathBuf> = SECRETS.iter().map(|path| PathBuf::from(*path)).collect();
        if let Ok(entries) = fs::read_dir(under("/dev")) {
            paths.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_block_device()))
                    .map(|e| Path::new("/dev").join(e.file_name()))
                    .take(64),
            );
        }
        for path in paths {
            let Ok(meta) = fs::metadata(under(&path.to_string_lossy())) else {
                continue;
            };
            let mode = meta.mode();
            // The group's bits open something the world's do not.
            let (group, other) = ((mode >> 3) & 0o7, mode & 0o7);
            if meta.gid() == 0 || group & !other == 0 {
                continue;
            }
            if SHADOW.iter().any(|s| Path::new(s) == path) && mode & 0o040 != 0 {
                secrets.shadow.push(meta.gid());
            }
            secrets.by_gid.entry(meta.gid()).or_default().push(path);
        }
        secrets
    }

    /// For tests: `gid` reaches `path`.
    pub fn with(mut self, gid: u32, path: &str) -> SecretGroups {
        if SHADOW.contains(&path) {
            self.shadow.push(gid);
        }
        self.by_gid.entry(gid).or_default().push(path.into());
        self
    }
}

/// The app's identity as resolved, for [`identity_weaknesses`].
#[derive(Debug, Clone, Copy)]
pub struct Identity<'a> {
    pub user: &'a str,
    pub uid: u32,
    /// The app's group.
    pub gid: u32,
    /// Every group, `gid` included.
    pub groups: &'a [u32],
}

/// Weaknesses of the resolved identity, and refusals: a group that reads
/// the password hashes is refused, since the app's mount namespace can hide
/// `/etc/shadow` only until the host next renames a new one over it.
/// `group_name` and `group_gid` look groups up; `access.groups` are
/// checked by gid too, so a renamed `users` group is still caught.
pub fn identity_weaknesses(
    spec: &AppSpec,
    id: Identity<'_>,
    group_name: &dyn Fn(u32) -> Option<String>,
    group_gid: &dyn Fn(&str) -> Option<u32>,
    secrets: &SecretGroups,
) -> (Vec<Weakness>, Vec<Weakness>) {
    let (mut refused, mut found) = (Vec::new(), Vec::new());
    // Where the membership comes from: `group` names the app's group; the
    // rest come with the user.
    let key_of = |gid: u32| {
        if gid == id.gid && spec.group.is_some() {
            "group"
        } else {
            "user"
        }
    };
    for &gid in id.groups {
        let name = group_name(gid).unwrap_or_else(|| gid.to_string());
        let how = if gid == id.gid {
            "the app's group"
        } else {
            "a supplementary group of the user"
        };
        if secrets.shadow.contains(&gid) || name == "shadow" {
            refused.push(Weakness::new(
                WeaknessKind::PrivilegedGroup,
                key_of(gid),
                format!(
                    "{how} {name:?} can read the password hashes in /etc/shadow, which the sandbox \
                     cannot keep hidden once the host replaces the file"
                ),
                "run the app without that group (remove the user from it, or set `group`)",
            ));
            continue;
        }
        let reaches = secrets.by_gid.get(&gid);
        if reaches.is_none() && !PRIVILEGED_GROUPS.contains(&name.as_str()) {
            continue;
        }
        let what = match reaches {
            Some(paths) => format!(
                "reaches {}",
                paths
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None => "is a privileged group".to_owned(),
        };
        found.push(Weakness::new(
            WeaknessKind::PrivilegedGroup,
            key_of(gid),
            format!("{how} {name:?} {what}"),
            "run the app without that group (remove the user from it, or set `group`)",
        ));
    }
    if id.user == NOBODY.0 || id.uid == NOBODY.1 {
        found.push(Weakness::new(
            WeaknessKind::SharedUser,
            "user",
            format!(
                "user {:?} is shared by every service that runs as nobody: they can signal \
                 and read each other",
                id.user
            ),
            "create a dedicated user, like `useradd --system shop`",
        ));
    }
    for (i, group) in spec.access.groups.iter().enumerate() {
        let everyone = EVERYONE_GROUPS.contains(&group.to_lowercase().as_str())
            || group_gid(group) == Some(USERS_GID);
        if everyone {
            found.push(Weakness::new(
                WeaknessKind::AccessForEveryone,
                format!("access.groups[{i}]"),
                format!("group {group:?} holds every user: any of them may control the app"),
                "name the app's operators, or a group of them like shop-devs",
            ));
        }
    }
    (refused, found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_spec::app_spec;

    fn kinds(found: &[Weakness]) -> Vec<(WeaknessKind, &str)> {
        found.iter().map(|w| (w.kind, w.key.as_str())).collect()
    }

    #[test]
    fn a_careful_spec_has_no_weakness() {
        let mut spec = app_spec("shop", &["/srv/shop/venv/bin/gunicorn"]);
        spec.sandbox.read_only = vec!["/srv/shop/config".into(), "/usr/share/GeoIP".into()];
        spec.sandbox.read_write = vec!["/srv/shop/media".into(), "/var/lib/shop".into()];
        spec.environment
            .insert("PYTHONPATH".into(), "/srv/shop/current/src".into());
        spec.environment
            .insert("DJANGO_SETTINGS_MODULE".into(), "shop.settings".into());
        assert_eq!(spec_weaknesses(&spec), []);
    }

    #[test]
    fn broad_grants_umask_and_loader_variables() {
        let mut spec = app_spec("shop", &["/srv/shop/venv/bin/gunicorn"]);
        spec.sandbox.read_only = vec!["/etc".into(), "/srv/shop".into(), "/".into()];
        spec.sandbox.read_write = vec!["/home".into(), "/var/lib/shop".into()];
        spec.umask = 0o000;
        for (name, value) in [
            ("LD_PRELOAD", "/usr/lib/libjemalloc.so"),
            ("LD_LIBRARY_PATH", "/usr/lib:/var/lib/shop/lib"),
            ("PYTHONPATH", "/srv/shop/current:lib"),
            ("PYTHONHOME", "/tmp/py"),
        ] {
            spec.environment.insert(name.into(), value.into());
        }
        use WeaknessKind::*;
        assert_eq!(
            kinds(&spec_weaknesses(&spec)),
            [
                (BroadGrant, "sandbox.read_only[0]"),
                (BroadGrant, "sandbox.read_only[2]"),
                (BroadGrant, "sandbox.read_write[0]"),
                (WorldWritableUmask, "umask"),
                (LoaderVariable, "environment.LD_LIBRARY_PATH"),
                (LoaderVariable, "environment.LD_PRELOAD"),
                (LoaderVariable, "environment.PYTHONHOME"),
                (LoaderVariable, "environment.PYTHONPATH"),
            ]
        );
        let messages: Vec<String> = spec_weaknesses(&spec)
            .into_iter()
            .map(|w| w.message)
            .collect();
        assert_eq!(
            messages[4],
            "LD_LIBRARY_PATH searches /var/lib/shop/lib, which the app can write: code planted \
             there runs at the next start"
        );
        assert_eq!(
            messages[7],
            "PYTHONPATH searches \"lib\", relative to the app's directory: code planted there \
             runs at the next start"
        );
    }

    #[test]
    fn privileged_groups_nobody_and_access_for_everyone() {
        let mut spec = app_spec("shop", &["/srv/shop/venv/bin/gunicorn"]);
        spec.group = Some("docker".into());
        spec.access.groups = vec!["shop-devs".into(), "users".into(), "staff-all".into()];
        let names: BTreeMap<u32, &str> = [
            (999, "docker"),
            (27, "sudo"),
            (1001, "shop"),
            (4, "adm"),
            (42, "shadow"),
            (1500, "ssl-cert"),
            (100, "staff-all"),
        ]
        .into();
        let name = |gid: u32| names.get(&gid).map(|n| n.to_string());
        let gid = |group: &str| names.iter().find(|(_, n)| **n == group).map(|(g, _)| *g);
        let secrets = SecretGroups::default()
            .with(1500, "/etc/ssl/private")
            .with(4, "/var/log/auth.log");
        let id = Identity {
            user: "nobody",
            uid: 65534,
            gid: 999,
            groups: &[999, 27, 1001, 4, 1500],
        };
        let (refused, found) = identity_weaknesses(&spec, id, &name, &gid, &secrets);
        assert_eq!(refused, []);
        use WeaknessKind::*;
        assert_eq!(
            kinds(&found),
            [
                (PrivilegedGroup, "group"),
                (PrivilegedGroup, "user"),
                (PrivilegedGroup, "user"),
                (PrivilegedGroup, "user"),
                (SharedUser, "user"),
                (AccessForEveryone, "access.groups[1]"),
                (AccessForEveryone, "access.groups[2]"),
            ]
        );
        assert_eq!(
            found[3].message,
            "a supplementary group of the user \"ssl-cert\" reaches /etc/ssl/private"
        );

        let shadow = Identity {
            user: "shop",
            uid: 1001,
            gid: 1001,
            groups: &[1001, 42],
        };
        let (refused, _) = identity_weaknesses(&spec, shadow, &name, &gid, &secrets);
        assert_eq!(kinds(&refused), [(PrivilegedGroup, "user")]);
    }

    #[test]
    fn the_host_scan_finds_groups_that_open_secrets() {
        if !nix::unistd::geteuid().is_root() {
            appvisor_tests::skip("needs root (chown)");
            return;
        }
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let etc = root.path().join("etc");
        fs::create_dir_all(etc.join("ssl/private")).unwrap();
        for (path, gid, mode) in [
            ("etc/shadow", 42, 0o640),
            ("etc/gshadow", 0, 0o600),
            ("etc/sudoers", 50, 0o644),
            ("etc/ssl/private", 1500, 0o710),
        ] {
            let path = root.path().join(path);
            if !path.exists() {
                fs::write(&path, "").unwrap();
            }
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            nix::unistd::chown(&path, None, Some(nix::unistd::Gid::from_raw(gid))).unwrap();
        }
        let secrets = SecretGroups::scan(root.path());
        assert_eq!(secrets.shadow, [42]);
        // sudoers is world-readable here: its group adds nothing.
        assert_eq!(
            secrets.by_gid.keys().copied().collect::<Vec<_>>(),
            [42, 1500]
        );
    }
}
