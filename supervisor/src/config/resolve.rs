//! Resolution: user and group names to ids, and the checks on disk an app
//! needs before it can start (its program and directory). Users come from a
//! [`UserDb`] so tests can use [`FakeUserDb`]; paths are looked up under a
//! root prefix so tests can use a temp dir. Never changes anything on disk.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::fs;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Group, User};

use super::error::{ConfigError, ConfigErrors};
use super::spec::{AppSpec, ListenAddress};

/// One user's record from the user database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub name: String,
    pub uid: u32,
    /// Primary group.
    pub gid: u32,
    pub home: PathBuf,
    pub shell: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum UserDbError {
    #[error("looking up user {name:?}: {source}")]
    User { name: String, source: nix::Error },
    #[error("looking up group {name:?}: {source}")]
    Group { name: String, source: nix::Error },
    #[error("looking up group id {gid}: {source}")]
    GroupId { gid: u32, source: nix::Error },
    #[error("listing the groups of user {name:?}: {source}")]
    Groups { name: String, source: nix::Error },
}

/// The narrow view of the user database the daemon needs.
pub trait UserDb: Send + Sync {
    fn user_by_name(&self, name: &str) -> Result<Option<UserRecord>, UserDbError>;
    fn group_by_name(&self, name: &str) -> Result<Option<u32>, UserDbError>;
    fn group_name(&self, gid: u32) -> Result<Option<String>, UserDbError>;
    /// Every group `user` is in, `gid` included (getgrouplist(3)).
    fn supplementary_groups(&self, user: &str, gid: u32) -> Result<Vec<u32>, UserDbError>;
}

/// The host's user database through NSS (getpwnam_r, getgrnam_r,
/// getgrouplist).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemUserDb;

impl UserDb for SystemUserDb {
    fn user_by_name(&self, name: &str) -> Result<Option<UserRecord>, UserDbError> {
        let user = User::from_name(name).map_err(|source| UserDbError::User {
            name: name.to_owned(),
            source,
        })?;
        Ok(user.map(|user| UserRecord {
            name: user.name,
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
            home: user.dir,
            shell: user.shell,
        }))
    }

    fn group_by_name(&self, name: &str) -> Result<Option<u32>, UserDbError> {
        let group = Group::from_name(name).map_err(|source| UserDbError::Group {
            name: name.to_owned(),
            source,
        })?;
        Ok(group.map(|group| group.gid.as_raw()))
    }

    fn group_name(&self, gid: u32) -> Result<Option<String>, UserDbError> {
        let group = Group::from_gid(Gid::from_raw(gid))
            .map_err(|source| UserDbError::GroupId { gid, source })?;
        Ok(group.map(|group| group.name))
    }

    fn supplementary_groups(&self, user: &str, gid: u32) -> Result<Vec<u32>, UserDbError> {
        let groups_error = |source| UserDbError::Groups {
            name: user.to_owned(),
            source,
        };
        let name = CString::new(user).map_err(|_| groups_error(nix::Error::EINVAL))?;
        let groups = nix::unistd::getgrouplist(&name, Gid::from_raw(gid)).map_err(groups_error)?;
        Ok(groups.into_iter().map(Gid::as_raw).collect())
    }
}

/// An in-memory user database for tests.
#[derive(Debug, Clone, Default)]
pub struct FakeUserDb {
    users: BTreeMap<String, UserRecord>,
    groups: BTreeMap<String, u32>,
    /// Group name -> member user names (like /etc/group's last field).
    members: BTreeMap<String, BTreeSet<String>>,
}

impl FakeUserDb {
    pub fn new() -> FakeUserDb {
        FakeUserDb::default()
    }

    /// Adds a user whose home is `/home/NAME` and shell `/bin/sh`.
    pub fn with_user(mut self, name: &str, uid: u32, gid: u32) -> FakeUserDb {
        let record = UserRecord {
            name: name.to_owned(),
            uid,
            gid,
            home: PathBuf::from(format!("/home/{name}")),
            shell: PathBuf::from("/bin/sh"),
        };
        self.users.insert(name.to_owned(), record);
        self
    }

    pub fn with_group(mut self, name: &str, gid: u32, members: &[&str]) -> FakeUserDb {
        self.groups.insert(name.to_owned(), gid);
        self.members.insert(
            name.to_owned(),
            members.iter().map(|member| member.to_string()).collect(),
        );
        self
    }
}

impl UserDb for FakeUserDb {
    fn user_by_name(&self, name: &str) -> Result<Option<UserRecord>, UserDbError> {
        Ok(self.users.get(name).cloned())
    }

    fn group_by_name(&self, name: &str) -> Result<Option<u32>, UserDbError> {
        Ok(self.groups.get(name).copied())
    }

    fn group_name(&self, gid: u32) -> Result<Option<String>, UserDbError> {
        Ok(self
            .groups
            .iter()
            .find(|(_, id)| **id == gid)
            .map(|(name, _)| name.clone()))
    }

    fn supplementary_groups(&self, user: &str, gid: u32) -> Result<Vec<u32>, UserDbError> {
        let mut groups = vec![gid];
        for (group, members) in &self.members {
            let id = self.groups[group];
            if members.contains(user) && !groups.contains(&id) {
                groups.push(id);
            }
        }
        Ok(groups)
    }
}

/// An app with its user and groups looked up: what a spawn needs.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedApp {
    pub spec: AppSpec,
    pub uid: u32,
    /// `group`'s gid, or the user's primary group.
    pub gid: u32,
    /// For setgroups(2): getgrouplist(3) of the user with `gid`.
    pub groups: Vec<u32>,
    pub user_name: String,
    pub home: PathBuf,
    pub shell: PathBuf,
}

/// Looks up `spec`'s user and group and checks its program and directory.
pub fn resolve(spec: &AppSpec, db: &dyn UserDb) -> Result<ResolvedApp, ConfigErrors> {
    resolve_under(spec, db, Path::new("/"))
}

/// [`resolve`] with the file system checks done under `root` instead of `/`.
pub fn resolve_under(
    spec: &AppSpec,
    db: &dyn UserDb,
    root: &Path,
) -> Result<ResolvedApp, ConfigErrors> {
    let mut errors = Vec::new();
    let error = |key: &str, message: String, hint: &str| {
        ConfigError::new(&spec.file, message)
            .with_key(key)
            .with_hint(hint)
    };
    let lookup_error = |key: &str, source: UserDbError| {
        error(
            key,
            format!("cannot read the user database: {source}"),
            "check NSS (/etc/nsswitch.conf) and try again",
        )
    };

    let user = match db.user_by_name(&spec.user) {
        Ok(Some(user)) if user.uid == 0 => {
            errors.push(error(
                "user",
                format!(
                    "user {:?} has uid 0: appvisor never runs app code as root",
                    spec.user
                ),
                "run the app as an unprivileged user",
            ));
            None
        }
        Ok(Some(user)) => Some(user),
        Ok(None) => {
            errors.push(error(
                "user",
                format!("user {:?} does not exist", spec.user),
                "create it, like `useradd --system shop`, or fix the name",
            ));
            None
        }
        Err(source) => {
            errors.push(lookup_error("user", source));
            None
        }
    };

    let gid = match (&spec.group, &user) {
        (Some(group), _) => match db.group_by_name(group) {
            Ok(Some(0)) => {
                errors.push(error(
                    "group",
                    format!("group {group:?} has gid 0: apps never run with the root group"),
                    "use the app's own group",
                ));
                None
            }
            Ok(Some(gid)) => Some(gid),
            Ok(None) => {
                errors.push(error(
                    "group",
                    format!("group {group:?} does not exist"),
                    "create it, or remove `group` to use the user's primary group",
                ));
                None
            }
            Err(source) => {
                errors.push(lookup_error("group", source));
                None
            }
        },
        (None, Some(user)) if user.gid == 0 => {
            errors.push(error(
                "group",
                format!(
                    "the primary group of user {:?} has gid 0: apps never run with the root group",
                    spec.user
                ),
                "set `group` to the app's own group, or change the user's primary group",
            ));
            None
        }
        (None, Some(user)) => Some(user.gid),
        (None, None) => None,
    };

    let groups = match (&user, gid) {
        (Some(user), Some(gid)) => match db.supplementary_groups(&user.name, gid) {
            Ok(groups) if groups.contains(&0) => {
                errors.push(error(
                    "user",
                    format!("user {:?} is a member of the root group (gid 0)", spec.user),
                    "remove the user from that group",
                ));
                None
            }
            Ok(groups) => Some(groups),
            Err(source) => {
                errors.push(lookup_error("user", source));
                None
            }
        },
        _ => None,
    };

    let ids = match (&user, gid, &groups) {
        (Some(user), Some(gid), Some(groups)) => Some((user.uid, gid, groups.as_slice())),
        _ => None,
    };
    errors.extend(check_program(spec, root, ids));
    errors.extend(check_directory(spec, root));

    match (user, gid, groups) {
        (Some(user), Some(gid), Some(groups)) if errors.is_empty() => Ok(ResolvedApp {
            spec: spec.clone(),
            uid: user.uid,
            gid,
            groups,
            user_name: user.name,
            home: user.home,
            shell: user.shell,
        }),
        _ => Err(ConfigErrors(errors)),
    }
}

fn under(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

/// `command[0]` must be a regular file the app's user may execute. The
/// execute bit checked is the one execve(2) would use for `ids` (owner,
/// group, other); without ids, any execute bit will do.
fn check_program(
    spec: &AppSpec,
    root: &Path,
    ids: Option<(u32, u32, &[u32])>,
) -> Option<ConfigError> {
    let program = Path::new(spec.command.first()?);
    let error = |message: String, hint: &str| {
        Some(
            ConfigError::new(&spec.file, message)
                .with_key("command[0]")
                .with_hint(hint),
        )
    };
    let meta = match fs::metadata(under(root, program)) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return error(
                format!("program {} does not exist", program.display()),
                "install it (create the virtualenv) or fix command[0]",
            );
        }
        Err(e) => {
            return error(
                format!("cannot check program {}: {e}", program.display()),
                "fix command[0]",
            )
        }
    };
    if !meta.is_file() {
        return error(
            format!("program {} is not a regular file", program.display()),
            "point command[0] at the program itself",
        );
    }
    let mode = meta.permissions().mode();
    let bit = match ids {
        Some((uid, _, _)) if meta.uid() == uid => 0o100,
        Some((_, gid, groups)) if meta.gid() == gid || groups.contains(&meta.gid()) => 0o010,
        Some(_) => 0o001,
        None => 0o111,
    };
    if mode & bit == 0 {
        let who = match ids {
            Some(_) => format!("by user {:?}", spec.user),
            None => "by anyone".to_owned(),
        };
        return error(
            format!(
                "program {} is not executable {who} (mode {:04o})",
                program.display(),
                mode & 0o7777
            ),
            "make it executable with chmod, or fix its owner or group",
        );
    }
    None
}

fn check_directory(spec: &AppSpec, root: &Path) -> Option<ConfigError> {
    let error = |message: String, hint: &str| {
        Some(
            ConfigError::new(&spec.file, message)
                .with_key("directory")
                .with_hint(hint),
        )
    };
    match fs::metadata(under(root, &spec.directory)) {
        Ok(meta) if meta.is_dir() => None,
        Ok(_) => error(
            format!("directory {} is not a directory", spec.directory.display()),
            "point it at a directory",
        ),
        Err(e) if e.kind() == io::ErrorKind::NotFound => error(
            format!("directory {} does not exist", spec.directory.display()),
            "create it or deploy a release there first",
        ),
        Err(e) => error(
            format!("cannot check directory {}: {e}", spec.directory.display()),
            "fix directory",
        ),
    }
}

/// Listen addresses two apps cannot both hold: each conflict is reported on
/// the later app of the pair, naming the earlier one.
pub fn check_conflicts(apps: &[AppSpec]) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    for (j, app) in apps.iter().enumerate() {
        for (k, listen) in app.listen.iter().enumerate() {
            let earlier = apps[..j]
                .iter()
                .flat_map(|other| other.listen.iter().map(move |l| (other, &l.address)));
            if let Some((other, address)) = earlier
                .into_iter()
                .find(|(_, address)| overlaps(&listen.address, address))
            {
                let taken = if *address == listen.address {
                    format!("{} is already taken by", listen.address)
                } else {
                    format!("{} overlaps {address} of", listen.address)
                };
                errors.push(
                    ConfigError::new(
                        &app.file,
                        format!(
                            "{taken} app {:?} ({})",
                            other.name.as_str(),
                            other.file.display()
                        ),
                    )
                    .with_key(format!("listen[{k}].address"))
                    .with_hint("give each app its own port or socket path"),
                );
            }
        }
    }
    errors
}

fn overlaps(a: &ListenAddress, b: &ListenAddress) -> bool {
    match (a, b) {
        (ListenAddress::Unix(a), ListenAddress::Unix(b)) => a == b,
        (ListenAddress::Tcp(a), ListenAddress::Tcp(b)) => {
            a.port() == b.port() && (a.ip() == b.ip() || is_wildcard(a) || is_wildcard(b))
        }
        _ => false,
    }
}

/// 0.0.0.0 and [::] (which on Linux also takes IPv4 by default) hold the
/// port on every address.
fn is_wildcard(addr: &SocketAddr) -> bool {
    addr.ip().is_unspecified()
}
