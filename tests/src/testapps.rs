//! App files for the programs in `tests/apps`, ready to adjust and write.
//!
//! Each helper installs the program into the prefix (readable by the app
//! user) and returns an [`AppBuilder`]; nothing is written to `apps.d`
//! until the test calls `write`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::app::{AppBuilder, Readiness};
use crate::bins;
use crate::prefix::Prefix;
use crate::users::TestUser;

/// `sleep infinity`: the lightest long-running app, running after 1 s.
pub fn sleeper(name: &str, user: &TestUser) -> AppBuilder {
    AppBuilder::new(name, user, ["/bin/sleep", "infinity"])
        .readiness(Readiness::None)
        .start_secs(Duration::from_secs(1))
}

/// `/usr/bin/python3 CODE/SCRIPT ARGS…` in the app's code dir.
pub fn python(
    prefix: &Prefix,
    name: &str,
    user: &TestUser,
    script: &str,
    args: &[&str],
) -> AppBuilder {
    let dir = prefix.install_app(name, user, &[script]);
    let mut command = vec![
        bins::SYSTEM_PYTHON.to_owned(),
        dir.join(script).display().to_string(),
    ];
    command.extend(args.iter().map(|a| (*a).to_owned()));
    AppBuilder::new(name, user, command).directory(&dir)
}

/// Like [`python`] with the test venv's python, so the command's venv `bin`
/// is known.
pub fn venv_python(prefix: &Prefix, name: &str, user: &TestUser, script: &str) -> AppBuilder {
    let dir = prefix.install_app(name, user, &[script]);
    let venv = bins::venv();
    AppBuilder::new(
        name,
        user,
        [
            bins::venv_python().display().to_string(),
            dir.join(script).display().to_string(),
        ],
    )
    .directory(&dir)
    .read_only(venv)
}

/// gunicorn from the test venv serving `wsgi_app:application` on
/// 127.0.0.1:`port` with 2 workers, readiness `notify` (gunicorn's arbiter
/// sends `READY=1` once bound).
pub fn gunicorn(prefix: &Prefix, name: &str, user: &TestUser, port: u16) -> AppBuilder {
    let dir = prefix.install_app(name, user, &["wsgi_app.py"]);
    AppBuilder::new(
        name,
        user,
        [
            bins::gunicorn().display().to_string(),
            "--bind".to_owned(),
            format!("127.0.0.1:{port}"),
            "--workers".to_owned(),
            "2".to_owned(),
            "wsgi_app:application".to_owned(),
        ],
    )
    .directory(&dir)
    .readiness(Readiness::Notify)
    .readiness_timeout(Duration::from_secs(30))
    .read_only(bins::venv())
    .read_only(&dir)
    // gunicorn binds its own port until the daemon holds listen sockets.
    .bind_ports(&[port])
}

/// A venv its owner made, as an owner would: `python3 -m venv` run as
/// `user` in the app's code dir (`CODE/NAME/venv`, owned by `user`), with
/// no pip. Its `bin/python` is what `python3 -m venv` makes by default, a
/// symlink to Debian's interpreter under /usr; whatever the owner writes in
/// its `pyvenv.cfg` is the owner's doing.
pub fn owner_venv(prefix: &Prefix, name: &str, user: &TestUser) -> PathBuf {
    make_owner_venv(prefix, name, user, &[])
}

/// Like [`owner_venv`], with `--copies`: its `bin/python` is a real file
/// inside the owner's directory rather than a link to /usr.
pub fn owner_venv_copied(prefix: &Prefix, name: &str, user: &TestUser) -> PathBuf {
    make_owner_venv(prefix, name, user, &["--copies"])
}

fn make_owner_venv(prefix: &Prefix, name: &str, user: &TestUser, options: &[&str]) -> PathBuf {
    let venv = prefix.code_dir(name, user).join("venv");
    let out = user
        .command(bins::SYSTEM_PYTHON)
        .args(["-m", "venv", "--without-pip"])
        .args(options)
        .arg(&venv)
        .output()
        .unwrap_or_else(|e| panic!("running python3 -m venv as {}: {e}", user.name));
    assert!(
        out.status.success(),
        "python3 -m venv {} as {} failed: {}",
        venv.display(),
        user.name,
        String::from_utf8_lossy(&out.stderr)
    );
    venv
}

/// `readprobe.py PATH…` run by `python` (e.g. an owner's venv's
/// `bin/python`), in the app's code dir: it prints whether each path can
/// be read from inside the sandbox (see [`probed`]).
pub fn readprobe(
    prefix: &Prefix,
    name: &str,
    user: &TestUser,
    python: &Path,
    paths: &[&Path],
) -> AppBuilder {
    let dir = prefix.install_app(name, user, &["readprobe.py"]);
    let mut command = vec![
        python.display().to_string(),
        dir.join("readprobe.py").display().to_string(),
    ];
    command.extend(paths.iter().map(|p| p.display().to_string()));
    AppBuilder::new(name, user, command)
        .directory(&dir)
        .readiness(Readiness::None)
        .start_secs(Duration::from_secs(1))
}

/// What `readprobe.py` printed for each path (`ok` or `err ERRNO`), once it
/// has printed them all.
pub fn probed(output: &str) -> Option<Vec<(String, String)>> {
    let end = output.rfind("--- probe done")?;
    let parse = |line: &str| {
        let line = line.strip_prefix("read ")?;
        if let Some(path) = line.strip_suffix(" ok") {
            return Some((path.to_owned(), "ok".to_owned()));
        }
        let at = line.rfind(" err ")?;
        Some((line[..at].to_owned(), line[at + 1..].to_owned()))
    };
    Some(output[..end].lines().filter_map(parse).collect())
}

/// Pids printed by the test apps as `LABEL pid N` (e.g. `main`,
/// `grandchild`), in order.
pub fn printed_pids(output: &str, label: &str) -> Vec<u32> {
    let prefix = format!("{label} pid ");
    output
        .lines()
        .filter_map(|l| l.trim().strip_prefix(&prefix))
        .filter_map(|n| n.trim().parse().ok())
        .collect()
}

/// The `KEY=VALUE` lines `envdump.py` printed, the last dump in `output`.
pub fn dumped_env(output: &str) -> Option<Vec<(String, String)>> {
    let start = output.rfind("--- env begin")?;
    let rest = &output[start..];
    let end = rest.find("--- env end")?;
    Some(
        rest[..end]
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_the_probe_printed() {
        let out = "noise\nread /proc/1/cmdline err EACCES\nread /a b ok\n--- probe done\n";
        assert_eq!(
            probed(out).unwrap(),
            [
                ("/proc/1/cmdline".to_owned(), "err EACCES".to_owned()),
                ("/a b".to_owned(), "ok".to_owned())
            ]
        );
        assert_eq!(probed("read /x ok\n"), None);
    }

    #[test]
    fn reads_printed_pids() {
        let out = "main pid 10\nnoise\ngrandchild pid 12\nmain pid 20\n";
        assert_eq!(printed_pids(out, "main"), vec![10, 20]);
        assert_eq!(printed_pids(out, "grandchild"), vec![12]);
    }

    #[test]
    fn reads_the_last_env_dump() {
        let out = "--- env begin\nA=0\n--- env end\n--- env begin\nA=1\nB=x=y\n--- env end\n";
        assert_eq!(
            dumped_env(out).unwrap(),
            vec![("A".into(), "1".into()), ("B".into(), "x=y".into())]
        );
        assert_eq!(dumped_env("--- env begin\nA=1\n"), None);
    }
}
