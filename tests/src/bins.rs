//! Where the binaries under test, the test apps and the test venv are.
//!
//! Never builds anything: `cargo test --workspace` builds `appvisord` and
//! `appctl` next to the test binaries, and `.ci/run` makes the venv.

use std::path::{Path, PathBuf};

/// The default test venv, made by `.ci/run` with Debian's python3 so that
/// app users can read it; `APPVISOR_TEST_VENV` overrides it.
pub const DEFAULT_VENV: &str = "/opt/appvisor-test/venv";

/// Debian's python3: readable by every user, unlike a pyenv build under /root.
pub const SYSTEM_PYTHON: &str = "/usr/bin/python3";

/// `target/debug`: the test binary is `target/debug/deps/<test>-<hash>`.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("test binary has a parent directory");
    if deps.file_name().is_some_and(|n| n == "deps") {
        deps.parent().expect("deps has a parent").to_path_buf()
    } else {
        deps.to_path_buf()
    }
}

fn binary(name: &str) -> PathBuf {
    let path = target_dir().join(name);
    assert!(
        path.is_file(),
        "{} not found: build it first (`cargo test --workspace` builds it; \
         or `cargo build --workspace --bins`)",
        path.display()
    );
    path
}

/// The daemon under test.
pub fn appvisord() -> PathBuf {
    binary("appvisord")
}

/// The CLI under test.
pub fn appctl() -> PathBuf {
    binary("appctl")
}

/// The test venv; panics with the fix when it is missing.
pub fn venv() -> PathBuf {
    let venv = std::env::var_os("APPVISOR_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_VENV));
    assert!(
        venv.join("bin/gunicorn").is_file(),
        "no gunicorn in the test venv {}: run .ci/run (or: /usr/bin/python3 -m venv {0} && \
         {0}/bin/pip install gunicorn), or set APPVISOR_TEST_VENV",
        venv.display()
    );
    venv
}

/// `<venv>/bin/gunicorn`.
pub fn gunicorn() -> PathBuf {
    venv().join("bin/gunicorn")
}

/// `<venv>/lib/python3.X/site-packages`: the test venv's packages, for an
/// app run by another interpreter with them on `PYTHONPATH`.
pub fn venv_site_packages() -> PathBuf {
    let lib = venv().join("lib");
    let entries =
        std::fs::read_dir(&lib).unwrap_or_else(|e| panic!("reading {}: {e}", lib.display()));
    let python = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with("python3."))
        })
        .unwrap_or_else(|| panic!("no python3.X under {}", lib.display()));
    python.join("site-packages")
}

/// `<venv>/bin/uwsgi`; panics with the fix when it is missing.
pub fn uwsgi() -> PathBuf {
    let uwsgi = venv().join("bin/uwsgi");
    assert!(
        uwsgi.is_file(),
        "no uwsgi in the test venv: run .ci/run (it installs tests/requirements.txt, \
         which builds uWSGI against Debian's python3-dev)"
    );
    uwsgi
}

/// Debian's nginx (`.ci/run` installs it), run by the tests in front of
/// uWSGI's uwsgi protocol.
pub const NGINX: &str = "/usr/sbin/nginx";

/// `<venv>/bin/python`.
pub fn venv_python() -> PathBuf {
    venv().join("bin/python")
}

/// `tests/apps`, the test apps' sources. Apps never run from here (the
/// checkout may sit under /root): [`crate::Prefix::install_app`] copies them.
pub fn apps_src() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/apps"))
}
