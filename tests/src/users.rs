//! Real Unix users and groups for tests, created once and kept.
//!
//! Names start with `avt` so a person can tell them apart and remove them
//! (`userdel avt-app1`). Creation is serialized across threads and across
//! processes with an flock, because cargo runs test binaries in parallel
//! and `useradd` fails while another holds `/etc/passwd`'s lock. This module
//! never deletes or changes a user it did not create.

use std::ffi::{CString, OsStr};
use std::fs::{File, OpenOptions};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use nix::fcntl::{Flock, FlockArg};
use nix::unistd::{getgrouplist, Gid, Group, Uid, User};

const LOCK_FILE: &str = "/tmp/appvisor-tests-users.lock";

/// A Unix user as the user database records it.
#[derive(Debug, Clone)]
pub struct TestUser {
    pub name: String,
    pub uid: u32,
    /// The primary group.
    pub gid: u32,
    pub home: PathBuf,
    pub shell: PathBuf,
}

/// A Unix group.
#[derive(Debug, Clone)]
pub struct TestGroup {
    pub name: String,
    pub gid: u32,
}

fn lock() -> Flock<File> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK_FILE)
        .unwrap_or_else(|e| panic!("opening {LOCK_FILE}: {e}"));
    Flock::lock(file, FlockArg::LockExclusive)
        .unwrap_or_else(|(_, e)| panic!("locking {LOCK_FILE}: {e}"))
}

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

fn check_name(name: &str) {
    assert!(
        name.starts_with("avt") && name.len() <= 32,
        "test users and groups are named avt*, at most 32 bytes: {name:?}"
    );
}

impl TestGroup {
    /// Creates the system group `name` unless it exists.
    pub fn ensure(name: &str) -> TestGroup {
        check_name(name);
        let _lock = lock();
        if Group::from_name(name).expect("getgrnam").is_none() {
            run(Command::new("groupadd").args(["--system", name]));
        }
        TestGroup::lookup(name).expect("group exists after groupadd")
    }

    /// The group's record, if it exists.
    pub fn lookup(name: &str) -> Option<TestGroup> {
        Group::from_name(name)
            .expect("getgrnam")
            .map(|g| TestGroup {
                name: g.name,
                gid: g.gid.as_raw(),
            })
    }
}

/// `useradd` of a system user: no home, shell nologin, its own group.
fn useradd(name: &str) {
    run(Command::new("useradd").args([
        "--system",
        "--no-create-home",
        "--home-dir",
        "/nonexistent",
        "--shell",
        "/usr/sbin/nologin",
        "--user-group",
        name,
    ]));
}

/// Creates the throwaway system user `name` with `useradd`, runs `during`,
/// and removes the user with `userdel`, under the lock that serializes the
/// tests' changes to the user database. Both tools replace `/etc/passwd`,
/// `/etc/group`, `/etc/shadow` and `/etc/gshadow` by renaming a new file
/// over each, as host maintenance does.
pub fn with_throwaway_user<T>(name: &str, during: impl FnOnce(&TestUser) -> T) -> T {
    check_name(name);
    let _lock = lock();
    useradd(name);
    struct Remove<'a>(&'a str);
    impl Drop for Remove<'_> {
        fn drop(&mut self) {
            let _ = Command::new("userdel").arg(self.0).output();
        }
    }
    let remove = Remove(name);
    let user = TestUser::lookup(name).expect("user exists after useradd");
    let result = during(&user);
    drop(remove);
    result
}

impl TestUser {
    /// Creates the system user `name` (no home, shell nologin, its own
    /// primary group) unless it exists.
    pub fn ensure(name: &str) -> TestUser {
        TestUser::ensure_in_groups(name, &[])
    }

    /// Like [`TestUser::ensure`], and makes the user a member of each of
    /// `groups` (created when missing), keeping memberships it already has.
    pub fn ensure_in_groups(name: &str, groups: &[&str]) -> TestUser {
        check_name(name);
        for group in groups {
            TestGroup::ensure(group);
        }
        let _lock = lock();
        if User::from_name(name).expect("getpwnam").is_none() {
            useradd(name);
        }
        let user = TestUser::lookup(name).expect("user exists after useradd");
        let have = user.group_names();
        for group in groups {
            if !have.iter().any(|g| g == group) {
                run(Command::new("usermod").args(["--append", "--groups", group, name]));
            }
        }
        user
    }

    /// The user's record, if it exists.
    pub fn lookup(name: &str) -> Option<TestUser> {
        User::from_name(name).expect("getpwnam").map(|u| TestUser {
            name: u.name,
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
            home: u.dir,
            shell: u.shell,
        })
    }

    /// Every group the user is in, the primary one included, as the group
    /// database says (what `initgroups` gives a process).
    pub fn group_ids(&self) -> Vec<u32> {
        let name = CString::new(self.name.clone()).expect("user name has no NUL");
        let mut gids: Vec<u32> = getgrouplist(&name, Gid::from_raw(self.gid))
            .expect("getgrouplist")
            .into_iter()
            .map(Gid::as_raw)
            .collect();
        gids.sort_unstable();
        gids.dedup();
        gids
    }

    /// Names of [`TestUser::group_ids`].
    pub fn group_names(&self) -> Vec<String> {
        self.group_ids()
            .into_iter()
            .filter_map(|gid| Group::from_gid(Gid::from_raw(gid)).ok().flatten())
            .map(|g| g.name)
            .collect()
    }

    pub fn uid(&self) -> Uid {
        Uid::from_raw(self.uid)
    }

    pub fn gid(&self) -> Gid {
        Gid::from_raw(self.gid)
    }

    /// A command that runs `program` as this user: its uid and primary gid,
    /// no supplementary groups (std drops them when root sets a uid), stdin
    /// closed. appvisord reads a caller's groups from the group database,
    /// not from the process, so this is enough to act as the user.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.uid(self.uid)
            .gid(self.gid)
            .env("HOME", "/")
            .env("USER", &self.name)
            .current_dir("/")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `program ARGS…` as this user (see [`TestUser::command`]) and
    /// panics with its output unless it succeeds: what an app's owner does
    /// to their own files, done by the owner.
    pub fn run<S: AsRef<OsStr>>(&self, program: &str, args: &[S]) {
        let out = self
            .command(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running {program} as {}: {e}", self.name));
        assert!(
            out.status.success(),
            "{program} {:?} as {} exited with {}\nstdout:\n{}\nstderr:\n{}",
            args.iter()
                .map(|a| a.as_ref().to_string_lossy())
                .collect::<Vec<_>>(),
            self.name,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
