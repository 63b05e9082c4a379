//! A temp prefix standing in for `/etc/appvisor`, `/var/log/appvisor`,
//! `/var/lib/appvisor` and `/run/appvisor`, plus the apps' code.
//!
//! It lives under [`BASE`] with mode 0755 so app users can traverse it, and
//! is removed on drop unless the test is failing, when it is kept for a
//! look. Not under /tmp: an app's private /tmp would hide its own code,
//! logs and notify socket there.
//! It never writes outside its own directory.

use std::fs;
use std::os::unix::fs::{chown, PermissionsExt};
use std::path::{Path, PathBuf};

use tempfile::TempDir;

use crate::bins;
use crate::users::TestUser;

/// Where prefixes are made.
pub const BASE: &str = "/var/lib/appvisor-tests";

/// One test's file tree.
#[derive(Debug)]
pub struct Prefix {
    dir: Option<TempDir>,
    root: PathBuf,
}

fn mkdir(path: &Path, mode: u32) {
    fs::create_dir_all(path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

impl Prefix {
    /// Makes `BASE/avt-XXXXXX` with `apps.d`, `logs`, `state`, `run` and `code`.
    pub fn new() -> Prefix {
        mkdir(Path::new(BASE), 0o755);
        let dir = tempfile::Builder::new()
            .prefix("avt-")
            .tempdir_in(BASE)
            .unwrap_or_else(|e| panic!("creating a temp prefix in {BASE}: {e}"));
        let root = dir.path().to_path_buf();
        mkdir(&root, 0o755);
        for sub in ["apps.d", "logs", "state", "run", "code"] {
            mkdir(&root.join(sub), 0o755);
        }
        Prefix {
            dir: Some(dir),
            root,
        }
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    /// `appvisor.toml`, written by [`crate::Daemon::start`].
    pub fn config_path(&self) -> PathBuf {
        self.root.join("appvisor.toml")
    }

    pub fn apps_dir(&self) -> PathBuf {
        self.root.join("apps.d")
    }

    pub fn log_dir(&self) -> PathBuf {
        self.root.join("logs")
    }

    /// Where the daemon keeps one app's captured output.
    pub fn app_log_dir(&self, app: &str) -> PathBuf {
        self.log_dir().join(app)
    }

    pub fn state_dir(&self) -> PathBuf {
        self.root.join("state")
    }

    pub fn socket(&self) -> PathBuf {
        self.root.join("run/ctl.sock")
    }

    /// `apps.d/NAME.toml`.
    pub fn app_file(&self, app: &str) -> PathBuf {
        self.apps_dir().join(format!("{app}.toml"))
    }

    /// `code/NAME`, owned by `user`, mode 0755: the app's `directory`.
    pub fn code_dir(&self, app: &str, user: &TestUser) -> PathBuf {
        let dir = self.root.join("code").join(app);
        mkdir(&dir, 0o755);
        chown(&dir, Some(user.uid), Some(user.gid))
            .unwrap_or_else(|e| panic!("chown {}: {e}", dir.display()));
        dir
    }

    /// Copies test apps from `tests/apps` into the app's code dir (files
    /// 0644, owned by `user`) and returns the dir.
    pub fn install_app(&self, app: &str, user: &TestUser, files: &[&str]) -> PathBuf {
        let dir = self.code_dir(app, user);
        for file in files {
            let src = bins::apps_src().join(file);
            let dst = dir.join(file);
            fs::copy(&src, &dst)
                .unwrap_or_else(|e| panic!("copying {} to {}: {e}", src.display(), dst.display()));
            fs::set_permissions(&dst, fs::Permissions::from_mode(0o644))
                .unwrap_or_else(|e| panic!("chmod {}: {e}", dst.display()));
            chown(&dst, Some(user.uid), Some(user.gid))
                .unwrap_or_else(|e| panic!("chown {}: {e}", dst.display()));
        }
        dir
    }

    /// Writes `contents` to `rel` under the prefix (mode 0644, root-owned).
    pub fn write(&self, rel: &str, contents: &str) -> PathBuf {
        let path = self.root.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)
                .unwrap_or_else(|e| panic!("creating {}: {e}", parent.display()));
        }
        fs::write(&path, contents).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        path
    }
}

impl Default for Prefix {
    fn default() -> Prefix {
        Prefix::new()
    }
}

impl Drop for Prefix {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(dir) = self.dir.take() {
                let kept = dir.keep();
                eprintln!("kept the failing test's prefix: {}", kept.display());
            }
        }
    }
}
