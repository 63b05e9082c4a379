//! Resolution: user and group names to ids, and the checks on disk an app
//! needs before it can start (its program, directory, venv and the paths
//! its sandbox grants). Users come from a [`UserDb`] so tests can use a
//! fake one (`FakeUserDb`, built only for tests and `test-support`); paths are looked up under
//! a root prefix so tests can use a temp dir. Never changes anything on
//! disk.

use std::ffi::CString;
use std::fs;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Group, Uid, User};

use super::error::{ConfigError, ConfigErrors};
use super::security::{identity_weaknesses, spec_weaknesses, Identity, SecretGroups, Weakness};
use super::spec::{AppSpec, ListenAddress};
use super::validate::ValidApp;

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
    #[error("looking up user id {uid}: {source}")]
    UserId { uid: u32, source: nix::Error },
    #[error("looking up group {name:?}: {source}")]
    Group { name: String, source: nix::Error },
    #[error("looking up group id {gid}: {source}")]
    GroupId { gid: u32, source: nix::Error },
    #[error("listing the groups of user {name:?}: {source}")]
    Groups { name: String, source: nix::Error },
}

/// The narrow view of the user database the daemon needs.
///
/// Every method may block (NSS can ask LDAP over the network): call it
/// off the async runtime's worker threads.
pub trait UserDb: Send + Sync {
    fn user_by_name(&self, name: &str) -> Result<Option<UserRecord>, UserDbError>;
    fn user_by_uid(&self, uid: u32) -> Result<Option<UserRecord>, UserDbError>;
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
        Ok(user.map(user_record))
    }

    fn user_by_uid(&self, uid: u32) -> Result<Option<UserRecord>, UserDbError> {
        let user = User::from_uid(Uid::from_raw(uid))
            .map_err(|source| UserDbError::UserId { uid, source })?;
        Ok(user.map(user_record))
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

fn user_record(user: User) -> UserRecord {
    UserRecord {
        name: user.name,
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
        home: user.dir,
        shell: user.shell,
    }
}

#[cfg(any(test, feature = "test-support"))]
pub use fake::FakeUserDb;

#[cfg(any(test, feature = "test-support"))]
mod fake {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::PathBuf;

    use super::{UserDb, UserDbError, UserRecord};

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

        fn user_by_uid(&self, uid: u32) -> Result<Option<UserRecord>, UserDbError> {
            Ok(self.users.values().find(|user| user.uid == uid).cloned())
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
}

/// An app with its user and groups looked up: what a spawn needs. A
/// hand-off carries it as JSON to the binary it execs, which takes it as
/// judged (a document of root's own process, not a file to validate).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ResolvedApp {
    pub spec: AppSpec,
    pub uid: u32,
    /// `group`'s gid, or the user's primary group.
    pub gid: u32,
    /// For setgroups(2): getgrouplist(3) of the user with `gid`.
    pub groups: Box<[u32]>,
    pub user_name: String,
    pub home: Box<Path>,
    pub shell: Box<Path>,
    /// What weakens the app's sandbox (`config::security`), for the
    /// exposure score.
    pub weaknesses: Box<[Weakness]>,
}

// The daemon holds one of these per app for as long as the app is
// configured. Boxed slices and paths (no spare capacity word each) keep it
// under 780 bytes, so with its `Arc` counts it takes musl's 800-byte
// allocation class instead of the 1,008-byte one: about 200 bytes an app.
const _: () = assert!(std::mem::size_of::<ResolvedApp>() <= 780);

impl ValidApp {
    /// [`resolve`], every error at the file, line and key it is about.
    pub fn resolve(&self, db: &dyn UserDb) -> Result<ResolvedApp, ConfigErrors> {
        self.resolve_with(db, &SecretGroups::scan(Path::new("/")))
    }

    /// [`ValidApp::resolve`] with the host's secrets already scanned: one
    /// scan serves every file judged together.
    pub fn resolve_with(
        &self,
        db: &dyn UserDb,
        secrets: &SecretGroups,
    ) -> Result<ResolvedApp, ConfigErrors> {
        resolve_with(&self.spec, db, Path::new("/"), secrets).map_err(|errors| {
            errors
                .into_iter()
                .map(|error| self.positions.fill(error))
                .collect::<Vec<_>>()
                .into()
        })
    }

    /// [`unknown_operators`], each at its file, line and key.
    pub fn unknown_operators(&self, db: &dyn UserDb) -> Vec<ConfigError> {
        unknown_operators(&self.spec, db)
            .into_iter()
            .map(|warning| self.positions.fill(warning))
            .collect()
    }
}

/// Looks up `spec`'s user and group and checks its program and directory.
/// Errors name the key but no line: [`ValidApp::resolve`] adds it.
pub fn resolve(spec: &AppSpec, db: &dyn UserDb) -> Result<ResolvedApp, ConfigErrors> {
    resolve_under(spec, db, Path::new("/"))
}

/// [`resolve`] with the file system checks done under `root` instead of `/`.
pub fn resolve_under(
    spec: &AppSpec,
    db: &dyn UserDb,
    root: &Path,
) -> Result<ResolvedApp, ConfigErrors> {
    resolve_with(spec, db, root, &SecretGroups::scan(root))
}

/// [`resolve_under`] with `secrets`, the host's as [`SecretGroups::scan`]
/// found them under `root`.
pub fn resolve_with(
    spec: &AppSpec,
    db: &dyn UserDb,
    root: &Path,
    secrets: &SecretGroups,
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
    errors.extend(check_granted_paths(spec, root));

    let mut weaknesses = spec_weaknesses(spec);
    if let (Some(user), Some((uid, gid, groups))) = (&user, ids) {
        let identity = Identity {
            user: &user.name,
            uid,
            gid,
            groups,
        };
        let (refused, found) = identity_weaknesses(
            spec,
            identity,
            &|gid| db.group_name(gid).ok().flatten(),
            &|name| db.group_by_name(name).ok().flatten(),
            secrets,
        );
        errors.extend(refused.into_iter().map(|refusal| {
            ConfigError::new(&spec.file, refusal.message)
                .with_key(refusal.key)
                .with_hint(refusal.hint)
        }));
        weaknesses.extend(found);
    }

    match (user, gid, groups) {
        (Some(user), Some(gid), Some(groups)) if errors.is_empty() => Ok(ResolvedApp {
            spec: spec.clone(),
            uid: user.uid,
            gid,
            groups: groups.into(),
            user_name: user.name,
            home: user.home.into(),
            shell: user.shell.into(),
            weaknesses: weaknesses.into(),
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

/// The paths the sandbox grants (`sandbox.read_only`, `sandbox.read_write`)
/// and `venv` must exist: each becomes a Landlock rule at spawn, and a
/// rule on a missing path fails every start, so a running app would go
/// from healthy to a crash loop at the next `appctl update`.
fn check_granted_paths(spec: &AppSpec, root: &Path) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    let lists = [
        ("sandbox.read_only", &spec.sandbox.read_only),
        ("sandbox.read_write", &spec.sandbox.read_write),
    ];
    for (list, paths) in lists {
        for (i, path) in paths.iter().enumerate() {
            let key = format!("{list}[{i}]");
            match fs::metadata(under(root, path)) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => errors.push(
                    ConfigError::new(&spec.file, format!("{} does not exist", path.display()))
                        .with_key(key)
                        .with_hint(format!(
                            "create it before the app starts, or remove it from {list}"
                        )),
                ),
                Err(e) => errors.push(
                    ConfigError::new(&spec.file, format!("cannot check {}: {e}", path.display()))
                        .with_key(key)
                        .with_hint(format!("fix {list}")),
                ),
            }
        }
    }
    if let Some(venv) = &spec.venv {
        let error = |message: String, hint: &str| {
            ConfigError::new(&spec.file, message)
                .with_key("venv")
                .with_hint(hint)
        };
        match fs::metadata(under(root, venv)) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => errors.push(error(
                format!("venv {} is not a directory", venv.display()),
                "point it at the virtualenv's directory",
            )),
            Err(e) if e.kind() == io::ErrorKind::NotFound => errors.push(error(
                format!("venv {} does not exist", venv.display()),
                "create the virtualenv, or fix venv",
            )),
            Err(e) => errors.push(error(
                format!("cannot check venv {}: {e}", venv.display()),
                "fix venv",
            )),
        }
    }
    errors
}

/// `[access]` users and groups the user database does not know. Warnings,
/// not errors: an operator's account may come and go without the app's
/// file changing, and a name nobody has grants nothing. Errors name the
/// key but no line: [`ValidApp::unknown_operators`] adds it.
pub fn unknown_operators(spec: &AppSpec, db: &dyn UserDb) -> Vec<ConfigError> {
    let mut warnings = Vec::new();
    let mut warn = |key: String, message: String, hint: &str| {
        warnings.push(
            ConfigError::new(&spec.file, message)
                .with_key(key)
                .with_hint(hint),
        )
    };
    for (i, user) in spec.access.users.iter().enumerate() {
        let key = format!("access.users[{i}]");
        match db.user_by_name(user) {
            Ok(Some(_)) => {}
            Ok(None) => warn(
                key,
                format!("user {user:?} does not exist, so this grants nothing"),
                "fix the name, or create the user",
            ),
            Err(source) => warn(
                key,
                format!("cannot read the user database: {source}"),
                "check NSS (/etc/nsswitch.conf) and try again",
            ),
        }
    }
    for (i, group) in spec.access.groups.iter().enumerate() {
        let key = format!("access.groups[{i}]");
        match db.group_by_name(group) {
            Ok(Some(_)) => {}
            Ok(None) => warn(
                key,
                format!("group {group:?} does not exist, so this grants nothing"),
                "fix the name, or create the group",
            ),
            Err(source) => warn(
                key,
                format!("cannot read the user database: {source}"),
                "check NSS (/etc/nsswitch.conf) and try again",
            ),
        }
    }
    warnings
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

/// `0.0.0.0` and `[::]` (which on Linux also takes IPv4 by default) hold the
/// port on every address.
fn is_wildcard(addr: &SocketAddr) -> bool {
    addr.ip().is_unspecified()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use nix::unistd::Uid;

    use super::*;
    use crate::validate::{validate_app, Defaults};
    use crate::AppName;

    fn app(name: &str, extra: &str) -> AppSpec {
        let text = format!(
            "user = \"shop\"\ncommand = [\"/srv/shop/venv/bin/gunicorn\"]\ndirectory = \"/srv/shop/current\"\n{extra}"
        );
        let file = PathBuf::from(format!("apps.d/{name}.toml"));
        let no_env = |path: &Path| {
            Err(crate::files::FileError::from_io(
                path,
                &io::Error::from_raw_os_error(libc::ENOENT),
            ))
        };
        validate_app(
            &AppName::new(name).unwrap(),
            &file,
            &text,
            &Defaults::none(),
            &no_env,
        )
        .unwrap()
        .spec
    }

    /// A root with the program (mode `mode`, owned by the test's uid/gid)
    /// and the directory as a symlink to a release.
    fn tree(mode: u32) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let bin = root.path().join("srv/shop/venv/bin");
        fs::create_dir_all(&bin).unwrap();
        fs::create_dir_all(root.path().join("srv/shop/releases/1")).unwrap();
        symlink("releases/1", root.path().join("srv/shop/current")).unwrap();
        fs::write(bin.join("gunicorn"), "#!/bin/sh\n").unwrap();
        fs::set_permissions(bin.join("gunicorn"), fs::Permissions::from_mode(mode)).unwrap();
        root
    }

    fn db() -> FakeUserDb {
        FakeUserDb::new()
            .with_user("shop", 1001, 1001)
            .with_user("toor", 0, 1001)
            .with_user("wheel", 1003, 0)
            .with_user("sneaky", 1004, 1004)
            .with_group("shop", 1001, &[])
            .with_group("shop-devs", 1002, &["shop"])
            .with_group("root", 0, &["sneaky"])
            .with_group("sneaky", 1004, &[])
    }

    fn messages(result: Result<ResolvedApp, ConfigErrors>) -> Vec<String> {
        match result {
            Ok(resolved) => panic!("expected errors, got {resolved:?}"),
            Err(errors) => errors.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn resolves_user_groups_and_paths() {
        let root = tree(0o755);
        let spec = app("shop", "");
        let resolved = resolve_under(&spec, &db(), root.path()).unwrap();
        assert_eq!(
            resolved,
            ResolvedApp {
                spec: spec.clone(),
                uid: 1001,
                gid: 1001,
                groups: Box::new([1001, 1002]),
                user_name: "shop".to_owned(),
                home: Path::new("/home/shop").into(),
                shell: Path::new("/bin/sh").into(),
                weaknesses: Box::default(),
            }
        );
        let with_group = app("shop", "group = \"shop-devs\"\n");
        assert_eq!(
            resolve_under(&with_group, &db(), root.path()).unwrap().gid,
            1002
        );
    }

    #[test]
    fn user_and_group_errors() {
        let root = tree(0o755);
        let cases: &[(&str, &str)] = &[
            (
                "user = \"nobody-here\"\n",
                "apps.d/shop.toml: user: user \"nobody-here\" does not exist (create it, like `useradd --system shop`, or fix the name)",
            ),
            (
                "user = \"toor\"\n",
                "apps.d/shop.toml: user: user \"toor\" has uid 0: appvisor never runs app code as root \
                 (run the app as an unprivileged user)",
            ),
            (
                "group = \"ghosts\"\n",
                "apps.d/shop.toml: group: group \"ghosts\" does not exist \
                 (create it, or remove `group` to use the user's primary group)",
            ),
            (
                "group = \"root\"\n",
                "apps.d/shop.toml: group: group \"root\" has gid 0: apps never run with the root group (use the app's own group)",
            ),
            (
                "user = \"wheel\"\n",
                "apps.d/shop.toml: group: the primary group of user \"wheel\" has gid 0: apps never run with the root group \
                 (set `group` to the app's own group, or change the user's primary group)",
            ),
            (
                "user = \"sneaky\"\n",
                "apps.d/shop.toml: user: user \"sneaky\" is a member of the root group (gid 0) (remove the user from that group)",
            ),
        ];
        for (extra, want) in cases {
            // The base text sets `user`, and TOML refuses a second one.
            let mut spec = app(
                "shop",
                if extra.starts_with("group") {
                    extra
                } else {
                    ""
                },
            );
            if let Some(user) = extra.strip_prefix("user = \"") {
                spec.user = user.trim_end().trim_end_matches('"').to_owned();
            }
            assert_eq!(
                messages(resolve_under(&spec, &db(), root.path())),
                [*want],
                "for {extra:?}"
            );
        }
    }

    #[test]
    fn program_and_directory_errors() {
        let cases: &[(u32, &str, &[&str])] = &[
            (
                0o644,
                "",
                &["apps.d/shop.toml: command[0]: program /srv/shop/venv/bin/gunicorn is not executable by user \"shop\" \
                   (mode 0644) (make it executable with chmod, or fix its owner or group)"],
            ),
            (
                0o755,
                "missing",
                &[
                    "apps.d/shop.toml: command[0]: program /srv/shop/venv/bin/gunicorn does not exist \
                     (install it (create the virtualenv) or fix command[0])",
                    "apps.d/shop.toml: directory: directory /srv/shop/current does not exist \
                     (create it or deploy a release there first)",
                ],
            ),
            (
                0o755,
                "swapped",
                &[
                    "apps.d/shop.toml: command[0]: program /srv/shop/venv/bin/gunicorn is not a regular file \
                     (point command[0] at the program itself)",
                    "apps.d/shop.toml: directory: directory /srv/shop/current is not a directory (point it at a directory)",
                ],
            ),
        ];
        for (mode, damage, want) in cases {
            let root = tree(*mode);
            match *damage {
                "missing" => {
                    fs::remove_dir_all(root.path().join("srv/shop")).unwrap();
                }
                "swapped" => {
                    let bin = root.path().join("srv/shop/venv/bin/gunicorn");
                    fs::remove_file(&bin).unwrap();
                    fs::create_dir(&bin).unwrap();
                    fs::remove_file(root.path().join("srv/shop/current")).unwrap();
                    fs::write(root.path().join("srv/shop/current"), "").unwrap();
                }
                _ => {}
            }
            let spec = app("shop", "");
            assert_eq!(
                messages(resolve_under(&spec, &db(), root.path())),
                *want,
                "for {damage:?}"
            );
        }
    }

    /// A `read_write` path that does not exist is an error: it once passed,
    /// then every start failed at its Landlock rule.
    #[test]
    fn granted_paths_and_venv_must_exist() {
        let root = tree(0o755);
        fs::write(root.path().join("srv/shop/venv.txt"), "").unwrap();
        let cases: &[(&str, &[&str])] = &[
            (
                "[sandbox]\nread_only = [\"/srv/shop/releases\", \"/srv/shop/config\"]\n\
                 read_write = [\"/srv/shop/shared\"]\n",
                &[
                    "apps.d/shop.toml: sandbox.read_only[1]: /srv/shop/config does not exist \
                     (create it before the app starts, or remove it from sandbox.read_only)",
                    "apps.d/shop.toml: sandbox.read_write[0]: /srv/shop/shared does not exist \
                     (create it before the app starts, or remove it from sandbox.read_write)",
                ],
            ),
            (
                "venv = \"/srv/shop/env\"\n",
                &["apps.d/shop.toml: venv: venv /srv/shop/env does not exist \
                   (create the virtualenv, or fix venv)"],
            ),
            (
                "venv = \"/srv/shop/venv.txt\"\n",
                &[
                    "apps.d/shop.toml: venv: venv /srv/shop/venv.txt is not a directory \
                   (point it at the virtualenv's directory)",
                ],
            ),
        ];
        for (extra, want) in cases {
            let spec = app("shop", extra);
            assert_eq!(
                messages(resolve_under(&spec, &db(), root.path())),
                *want,
                "for {extra:?}"
            );
        }
        let granted = app(
            "shop",
            "venv = \"/srv/shop/venv\"\n[sandbox]\nread_write = [\"/srv/shop/releases/1\"]\n",
        );
        assert!(resolve_under(&granted, &db(), root.path()).is_ok());
    }

    #[test]
    fn access_to_users_and_groups_that_do_not_exist_is_a_warning() {
        let spec = app(
            "shop",
            "[access]\nusers = [\"shop\", \"alcie\"]\ngroups = [\"shop-devs\", \"shop-dev\"]\n",
        );
        let warnings: Vec<String> = unknown_operators(&spec, &db())
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            warnings,
            [
                "apps.d/shop.toml: access.users[1]: user \"alcie\" does not exist, so this grants nothing \
                 (fix the name, or create the user)",
                "apps.d/shop.toml: access.groups[1]: group \"shop-dev\" does not exist, so this grants \
                 nothing (fix the name, or create the group)",
            ]
        );
        assert!(unknown_operators(&app("shop", ""), &db()).is_empty());
    }

    #[test]
    fn execute_bit_is_the_one_execve_would_use() {
        let root = tree(0o705);
        let program = root.path().join("srv/shop/venv/bin/gunicorn");
        let (uid, gid) = if nix::unistd::geteuid().is_root() {
            nix::unistd::chown(
                &program,
                Some(Uid::from_raw(2001)),
                Some(Gid::from_raw(2002)),
            )
            .unwrap();
            (2001, 2002)
        } else {
            let meta = fs::metadata(&program).unwrap();
            (meta.uid(), meta.gid())
        };
        let spec = app("shop", "");
        let refused = "apps.d/shop.toml: command[0]: program /srv/shop/venv/bin/gunicorn is not executable by \
                       user \"shop\" (mode 0705) (make it executable with chmod, or fix its owner or group)";
        let cases = [
            (
                "owner",
                FakeUserDb::new().with_user("shop", uid, 4242),
                None,
            ),
            (
                "other",
                FakeUserDb::new().with_user("shop", uid + 1, 4242),
                None,
            ),
            (
                "primary group",
                FakeUserDb::new().with_user("shop", uid + 1, gid),
                Some(refused),
            ),
            (
                "supplementary group",
                FakeUserDb::new()
                    .with_user("shop", uid + 1, 4242)
                    .with_group("g", gid, &["shop"]),
                Some(refused),
            ),
        ];
        for (who, db, want) in cases {
            let got = resolve_under(&spec, &db, root.path())
                .err()
                .map(|errors| errors.to_string());
            assert_eq!(got.as_deref(), want, "for {who}");
        }
    }

    #[test]
    fn conflicts_between_apps() {
        let listen = |address: &str| format!("[[listen]]\naddress = \"{address}\"\n");
        let cases: &[(&str, &str, Option<&str>)] = &[
            (
                "127.0.0.1:8001",
                "127.0.0.1:8001",
                Some("apps.d/blog.toml: listen[0].address: 127.0.0.1:8001 is already taken by app \"shop\" (apps.d/shop.toml) \
                      (give each app its own port or socket path)"),
            ),
            (
                "0.0.0.0:8001",
                "127.0.0.1:8001",
                Some("apps.d/blog.toml: listen[0].address: 127.0.0.1:8001 overlaps 0.0.0.0:8001 of app \"shop\" (apps.d/shop.toml) \
                      (give each app its own port or socket path)"),
            ),
            (
                "10.0.0.1:8001",
                "[::]:8001",
                Some("apps.d/blog.toml: listen[0].address: [::]:8001 overlaps 10.0.0.1:8001 of app \"shop\" (apps.d/shop.toml) \
                      (give each app its own port or socket path)"),
            ),
            (
                "unix:/run/shop.sock",
                "unix:/run/shop.sock",
                Some("apps.d/blog.toml: listen[0].address: unix:/run/shop.sock is already taken by app \"shop\" (apps.d/shop.toml) \
                      (give each app its own port or socket path)"),
            ),
            ("127.0.0.1:8001", "127.0.0.2:8001", None),
            ("127.0.0.1:8001", "127.0.0.1:8002", None),
            ("unix:/run/a.sock", "unix:/run/b.sock", None),
        ];
        for (first, second, want) in cases {
            let apps = [app("shop", &listen(first)), app("blog", &listen(second))];
            let got: Vec<String> = check_conflicts(&apps)
                .iter()
                .map(ToString::to_string)
                .collect();
            assert_eq!(
                got,
                want.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                "for {first} {second}"
            );
        }
    }

    #[test]
    fn system_user_db_finds_root() {
        let db = SystemUserDb;
        let root = db.user_by_name("root").unwrap().unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        assert_eq!(db.group_by_name("root").unwrap(), Some(0));
        assert_eq!(db.group_name(0).unwrap().as_deref(), Some("root"));
        assert!(db.supplementary_groups("root", 0).unwrap().contains(&0));
        assert_eq!(db.user_by_name("no-such-user-appvisor").unwrap(), None);
    }
}
