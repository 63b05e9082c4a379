//! The real-server matrix: gunicorn (sync workers with and without
//! `--preload`, gevent workers) and uWSGI (master, several workers), each
//! serving a Flask app or a Django project from the test venv on a
//! `[[listen]]` socket appvisord holds, with readiness `notify` and a
//! health `url`; and the owner's app directory they serve from, with
//! `releases/N` and a `current` symlink that a deploy switches.
//!
//! A test reads like this:
//!
//! ```no_run
//! use appvisor_tests::servers::{Framework, Release, Server, ServedApp};
//!
//! let app = ServedApp::start(Server::Uwsgi, Framework::Django, |app| app);
//! app.deploy(2, Release::FailsAtImport);
//! let out = app.daemon.appctl(["restart", app.name()]);
//! ```
//!
//! The apps (`tests/apps/flask_app.py`, `tests/apps/djsite/`) import
//! `release.py`, which [`AppDir::release`] writes per release: it names the
//! release, or fails at import, or kills the instance a while after it
//! started, and says which process imported it. Everything is copied into
//! the test's prefix, owned by the owner; nothing runs from the checkout.

use std::fmt;
use std::fs;
use std::os::unix::fs::{chown, lchown, symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::app::{AppBuilder, Readiness};
use crate::bins;
use crate::daemon::{describe_output, Daemon, DaemonOptions};
use crate::net::{free_port, http_get};
use crate::prefix::Prefix;
use crate::users::TestUser;
use appvisor_protocol::State;

/// Workers per server: enough to show several, few enough for CI's two
/// cores.
pub const WORKERS: u32 = 2;

/// How the matrix's servers are run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Server {
    /// gunicorn, sync workers, no `--preload`: each worker imports the app
    /// after the arbiter sent READY=1.
    GunicornSync,
    /// gunicorn `--preload`: the arbiter imports the app before READY=1.
    GunicornPreload,
    /// gunicorn `--worker-class gevent`.
    GunicornGevent,
    /// uWSGI `--master --workers 2 --http-socket fd://3 --need-app`.
    Uwsgi,
}

impl Server {
    pub const ALL: [Server; 4] = [
        Server::GunicornSync,
        Server::GunicornPreload,
        Server::GunicornGevent,
        Server::Uwsgi,
    ];

    pub fn is_uwsgi(self) -> bool {
        self == Server::Uwsgi
    }

    /// How many processes import the app at a start or a reload: each
    /// gunicorn worker without `--preload`; the arbiter, or uWSGI's
    /// master, once otherwise.
    pub fn importers(self) -> usize {
        match self {
            Server::GunicornSync | Server::GunicornGevent => WORKERS as usize,
            Server::GunicornPreload | Server::Uwsgi => 1,
        }
    }

    /// The command that serves `framework` from `directory` (the `current`
    /// symlink) on the held socket, fd 3, with the test venv's server.
    pub fn command(self, framework: Framework, directory: &Path) -> Vec<String> {
        self.command_in(&bins::venv(), framework, directory)
    }

    fn command_in(self, venv: &Path, framework: Framework, directory: &Path) -> Vec<String> {
        let gunicorn = |extra| gunicorn_command_in(venv, framework, directory, extra);
        match self {
            Server::GunicornSync => gunicorn(&[]),
            Server::GunicornPreload => gunicorn(&["--preload"]),
            Server::GunicornGevent => gunicorn(&["--worker-class", "gevent"]),
            Server::Uwsgi => {
                uwsgi_command_in(venv, framework, directory, &["--http-socket", "fd://3"])
            }
        }
    }
}

impl fmt::Display for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Server::GunicornSync => "gunicorn (sync)",
            Server::GunicornPreload => "gunicorn --preload",
            Server::GunicornGevent => "gunicorn (gevent)",
            Server::Uwsgi => "uWSGI",
        })
    }
}

fn strings(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| (*w).to_owned()).collect()
}

/// `gunicorn --workers 2 --chdir DIR EXTRA… MODULE`. No `--bind`: gunicorn
/// takes the sockets of LISTEN_FDS. `--chdir` names the symlink, so a
/// reload (HUP) imports from the release `current` points to then; without
/// it gunicorn keeps the directory it resolved at start.
pub fn gunicorn_command(framework: Framework, directory: &Path, extra: &[&str]) -> Vec<String> {
    gunicorn_command_in(&bins::venv(), framework, directory, extra)
}

fn gunicorn_command_in(
    venv: &Path,
    framework: Framework,
    directory: &Path,
    extra: &[&str],
) -> Vec<String> {
    let mut command = vec![
        venv.join("bin/gunicorn").display().to_string(),
        "--workers".to_owned(),
        WORKERS.to_string(),
        "--chdir".to_owned(),
        directory.display().to_string(),
    ];
    command.extend(strings(extra));
    command.push(framework.wsgi().to_owned());
    command
}

/// `uwsgi --master --workers 2 --chdir DIR --module MODULE --need-app
/// SOCKETS…`, where `sockets` maps the held sockets, e.g. `--http-socket
/// fd://3`. `--need-app` makes a release that fails at import exit instead
/// of serving errors; `--chdir` names the symlink, so a reload (HUP, which
/// re-executes the master) imports the release `current` points to then.
pub fn uwsgi_command(framework: Framework, directory: &Path, sockets: &[&str]) -> Vec<String> {
    bins::uwsgi();
    uwsgi_command_in(&bins::venv(), framework, directory, sockets)
}

fn uwsgi_command_in(
    venv: &Path,
    framework: Framework,
    directory: &Path,
    sockets: &[&str],
) -> Vec<String> {
    let mut command = vec![
        venv.join("bin/uwsgi").display().to_string(),
        "--master".to_owned(),
        "--workers".to_owned(),
        WORKERS.to_string(),
        "--chdir".to_owned(),
        directory.display().to_string(),
        "--module".to_owned(),
        framework.wsgi().to_owned(),
        "--need-app".to_owned(),
    ];
    command.extend(strings(sockets));
    command
}

/// The frameworks of the test apps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Framework {
    /// `tests/apps/flask_app.py`.
    Flask,
    /// `tests/apps/djsite/`.
    Django,
}

impl Framework {
    /// The files of a release, relative to `tests/apps` and to the release.
    fn files(self) -> &'static [&'static str] {
        match self {
            Framework::Flask => &["flask_app.py"],
            Framework::Django => &[
                "djsite/__init__.py",
                "djsite/settings.py",
                "djsite/urls.py",
                "djsite/wsgi.py",
            ],
        }
    }

    /// The WSGI callable, as `module:name`.
    pub fn wsgi(self) -> &'static str {
        match self {
            Framework::Flask => "flask_app:app",
            Framework::Django => "djsite.wsgi:application",
        }
    }
}

impl fmt::Display for Framework {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Framework::Flask => "Flask",
            Framework::Django => "Django",
        })
    }
}

/// What a release's `release.py` does when the app imports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// Serves.
    Good,
    /// Raises `ModuleNotFoundError` (see [`import_error`]).
    FailsAtImport,
    /// Imports fine, so the server becomes ready, then after this long
    /// SIGKILLs the instance's main process (appvisord makes it a session
    /// leader, so that is `getsid(0)`), from whichever of its processes
    /// imported the app: a crash after readiness, every time it starts.
    CrashesAfter(Duration),
}

/// The error line a [`Release::FailsAtImport`] release `n` logs.
pub fn import_error(n: u32) -> String {
    format!("ModuleNotFoundError: No module named 'missing_module_of_release_{n}'")
}

fn release_py(n: u32, kind: Release) -> String {
    let mut text =
        format!("\"\"\"Release {n}, written by the test harness.\"\"\"\n\nRELEASE = \"{n}\"\n");
    match kind {
        Release::Good => {}
        Release::FailsAtImport => {
            text.push_str(&format!("\nimport missing_module_of_release_{n}  # noqa\n"));
        }
        Release::CrashesAfter(after) => {
            text.push_str(&format!(
                "\nimport os, signal, threading, time\n\n\
                 def _crash():\n    \
                     time.sleep({secs})\n    \
                     print('release {n} kills its instance', flush=True)\n    \
                     os.kill(os.getsid(0), signal.SIGKILL)\n\n\
                 threading.Thread(target=_crash, daemon=True).start()\n",
                secs = after.as_secs_f64()
            ));
        }
    }
    // Last: a release that fails at import never says it.
    text.push_str(&format!(
        "\nimport os as _os\n\nprint(\"release {n} imported by pid %d\" % _os.getpid(), flush=True)\n"
    ));
    text
}

fn chown_to(path: &Path, owner: &TestUser) {
    lchown(path, Some(owner.uid), Some(owner.gid))
        .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
}

fn make_dir(path: &Path, owner: &TestUser) {
    fs::create_dir_all(path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
    chown(path, Some(owner.uid), Some(owner.gid))
        .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
}

fn write_file(path: &Path, contents: &[u8], owner: &TestUser) {
    fs::write(path, contents).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(0o644))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
    chown_to(path, owner);
}

/// An owner's app directory, `PREFIX/code/NAME`: `releases/N` and a
/// `current` symlink, all owned by the owner, as a deploy leaves them.
#[derive(Debug, Clone)]
pub struct AppDir {
    root: PathBuf,
    owner: TestUser,
    framework: Framework,
}

impl AppDir {
    /// An empty app directory owned by `owner` (no release, no `current`).
    pub fn new(prefix: &Prefix, app: &str, owner: &TestUser, framework: Framework) -> AppDir {
        let root = prefix.code_dir(app, owner);
        make_dir(&root.join("releases"), owner);
        AppDir {
            root,
            owner: owner.clone(),
            framework,
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn framework(&self) -> Framework {
        self.framework
    }

    pub fn owner(&self) -> &TestUser {
        &self.owner
    }

    /// `ROOT/current`, the app's `directory`.
    pub fn current(&self) -> PathBuf {
        self.root.join("current")
    }

    /// `ROOT/releases/N`.
    pub fn release_dir(&self, n: u32) -> PathBuf {
        self.root.join("releases").join(n.to_string())
    }

    /// Writes `releases/N` (replacing it): the framework's files and a
    /// `release.py` of `kind`. Returns its path.
    pub fn release(&self, n: u32, kind: Release) -> PathBuf {
        let dir = self.release_dir(n);
        if dir.exists() {
            fs::remove_dir_all(&dir).unwrap_or_else(|e| panic!("removing {}: {e}", dir.display()));
        }
        make_dir(&dir, &self.owner);
        for file in self.framework.files() {
            let src = bins::apps_src().join(file);
            let dst = dir.join(file);
            if let Some(parent) = dst.parent() {
                make_dir(parent, &self.owner);
            }
            let contents =
                fs::read(&src).unwrap_or_else(|e| panic!("reading {}: {e}", src.display()));
            write_file(&dst, &contents, &self.owner);
        }
        write_file(
            &dir.join("release.py"),
            release_py(n, kind).as_bytes(),
            &self.owner,
        );
        dir
    }

    /// Points `current` at `releases/N` the way a deploy script does, as
    /// the owner: `ln -sfn releases/N current.new && mv -T current.new
    /// current` (rename(2) replaces the link atomically).
    pub fn switch(&self, n: u32) {
        let out = self
            .owner
            .command("/bin/sh")
            .arg("-c")
            .arg(format!(
                "ln -sfn releases/{n} current.new && mv -T current.new current"
            ))
            .current_dir(&self.root)
            .output()
            .unwrap_or_else(|e| panic!("running the switch to release {n}: {e}"));
        assert!(
            out.status.success(),
            "switching {} to release {n}: {}",
            self.current().display(),
            describe_output(&out)
        );
    }

    /// Writes release `n` of `kind` and switches `current` to it.
    pub fn deploy(&self, n: u32, kind: Release) {
        self.release(n, kind);
        self.switch(n);
    }

    /// Creates `current` for the first release, without a shell (no deploy
    /// has run yet).
    fn link_first(&self, n: u32) {
        let link = self.current();
        symlink(format!("releases/{n}"), &link)
            .unwrap_or_else(|e| panic!("symlink {}: {e}", link.display()));
        chown_to(&link, &self.owner);
    }
}

/// The app file for `command` serving from `dir`'s `current` on a held
/// socket 127.0.0.1:`port` (named `http`), readiness `notify` with `url`
/// `http://127.0.0.1:PORT/health`, confined to reading the venv and the app
/// directory.
pub fn held_socket_app(
    name: &str,
    user: &TestUser,
    dir: &AppDir,
    command: Vec<String>,
    port: u16,
) -> AppBuilder {
    AppBuilder::new(name, user, command)
        .directory(dir.current())
        .listen(&format!("127.0.0.1:{port}"), Some("http"))
        .readiness(Readiness::Notify)
        .readiness_url(&health_url(port))
        .readiness_timeout(Duration::from_secs(30))
        .stop_timeout(Duration::from_secs(20))
        .read_only(bins::venv())
        .read_only(dir.root())
}

/// `http://127.0.0.1:PORT/health`.
pub fn health_url(port: u16) -> String {
    format!("http://127.0.0.1:{port}/health")
}

/// `server` serving `dir`'s framework: [`held_socket_app`] with
/// [`Server::command`].
pub fn server_app(
    name: &str,
    user: &TestUser,
    dir: &AppDir,
    server: Server,
    port: u16,
) -> AppBuilder {
    let command = server.command(dir.framework(), &dir.current());
    held_socket_app(name, user, dir, command, port)
}

/// The app user of the matrix's apps.
pub const APP_USER: &str = "avt-srv-app";
/// The owner who deploys them (named in `[access] users`).
pub const OWNER: &str = "avt-srv-owner";

/// One server serving release 1 of a framework under a real appvisord:
/// the daemon, the app directory and the prefix, dropped in that order.
#[derive(Debug)]
pub struct ServedApp {
    pub daemon: Daemon,
    pub dir: AppDir,
    pub server: Server,
    pub port: u16,
    pub user: TestUser,
    /// The app file as written.
    pub app: AppBuilder,
    name: String,
    // Last: dropped after the daemon, which runs from it.
    pub prefix: Prefix,
}

impl ServedApp {
    /// Writes release 1 (good), the app file `web` (adjusted by
    /// `configure`), starts the daemon and waits until the app is running
    /// and answers `GET /` from release 1.
    pub fn start(
        server: Server,
        framework: Framework,
        configure: impl FnOnce(AppBuilder) -> AppBuilder,
    ) -> ServedApp {
        ServedApp::start_with(server, framework, DaemonOptions::default(), configure)
    }

    /// [`ServedApp::start`] with daemon options.
    pub fn start_with(
        server: Server,
        framework: Framework,
        options: DaemonOptions,
        configure: impl FnOnce(AppBuilder) -> AppBuilder,
    ) -> ServedApp {
        let served = ServedApp::launch(server, framework, options, configure);
        served.wait_serving(1);
        served.wait_imported(1);
        served
    }

    /// [`ServedApp::start_with`] without waiting for `GET /` to answer
    /// (for apps that do not speak HTTP on their socket): waits until
    /// appvisord says it is running.
    pub fn launch(
        server: Server,
        framework: Framework,
        options: DaemonOptions,
        configure: impl FnOnce(AppBuilder) -> AppBuilder,
    ) -> ServedApp {
        // A venv made before the matrix has gunicorn but not the rest:
        // say so now rather than as an import error in the app's log.
        bins::uwsgi();
        let user = TestUser::ensure(APP_USER);
        let owner = TestUser::ensure(OWNER);
        let prefix = Prefix::new();
        let name = "web".to_owned();
        let dir = AppDir::new(&prefix, &name, &owner, framework);
        dir.release(1, Release::Good);
        dir.link_first(1);
        let port = free_port();
        let app = server_app(&name, &user, &dir, server, port)
            .extra_toml(&format!("[access]\nusers = [\"{}\"]", owner.name));
        let app = configure(app);
        app.write(&prefix);
        let daemon = Daemon::start(&prefix, options);
        let served = ServedApp {
            daemon,
            dir,
            server,
            port,
            user,
            app,
            name,
            prefix,
        };
        served
            .daemon
            .wait_for_state(&served.name, State::Running, Duration::from_secs(60));
        served
    }

    /// The app's name in appvisord.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Writes release `n` of `kind` and switches `current` to it, as the
    /// owner.
    pub fn deploy(&self, n: u32, kind: Release) {
        self.dir.deploy(n, kind);
    }

    /// `GET path`'s body; panics on anything but a 200.
    pub fn get(&self, path: &str) -> String {
        match http_get(self.port, path) {
            Ok(r) if r.status == 200 => r.body,
            other => panic!(
                "{} on 127.0.0.1:{}: GET {path}: {other:?}\n{}",
                self.server,
                self.port,
                self.daemon.log_tail(40)
            ),
        }
    }

    /// Which release answers `GET /release`, if one does.
    pub fn serving_release(&self) -> Option<u32> {
        http_get(self.port, "/release")
            .ok()
            .filter(|r| r.status == 200)
            .and_then(|r| r.body.trim().parse().ok())
    }

    /// Waits (at most 30 s) until `GET /release` answers `n`.
    pub fn wait_serving(&self, n: u32) {
        let mut last = None;
        let served = crate::poll_until(Duration::from_secs(30), || {
            last = self.serving_release();
            last == Some(n)
        });
        assert!(
            served,
            "{} did not serve release {n} within 30s (last answer: {last:?}); its log:\n{}\n{}",
            self.server,
            self.app_log(),
            self.daemon.log_tail(40)
        );
    }

    /// Waits (at most 30 s) until every process that imports the app (see
    /// [`Server::importers`]) has imported release `n`. Ready means one
    /// worker answers; the others may still be reading `current`, and a
    /// gunicorn worker that imports a broken release switched to meanwhile
    /// halts its whole arbiter, so a test deploys only once they all have.
    pub fn wait_imported(&self, n: u32) {
        let needle = format!("release {n} imported by pid ");
        let want = self.server.importers();
        let mut seen = 0;
        let dir = self.prefix.app_log_dir(&self.name);
        let imported = crate::poll_until(Duration::from_secs(30), || {
            // The whole files, both streams: uWSGI points Python's stdout
            // at its log, stderr, where it also logs every request.
            seen = ["stdout.log", "stderr.log"]
                .into_iter()
                .map(|file| {
                    let text = fs::read(dir.join(file)).unwrap_or_default();
                    String::from_utf8_lossy(&text).matches(&needle).count()
                })
                .sum();
            seen >= want
        });
        assert!(
            imported,
            "{}: {seen} of {want} processes imported release {n} within 30s\n{}",
            self.server,
            self.app_log()
        );
    }

    /// The app's captured output (stdout and stderr), last 60 lines each.
    pub fn app_log(&self) -> String {
        let out = self
            .daemon
            .appctl(["logs", &self.name, "-n", "60", "--stdout"]);
        let err = self
            .daemon
            .appctl(["logs", &self.name, "-n", "60", "--stderr"]);
        format!(
            "--- stdout of {} ---\n{}--- stderr ---\n{}--- end ---",
            self.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&err.stdout)
        )
    }

    /// The main pid appvisord reports.
    pub fn main_pid(&self) -> Option<u32> {
        self.daemon.app(&self.name).pid
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_take_the_held_socket_and_name_the_symlink() {
        let (venv, dir) = (Path::new("/v"), Path::new("/srv/shop/current"));
        let gunicorn = Server::GunicornGevent.command_in(venv, Framework::Django, dir);
        assert_eq!(
            gunicorn,
            [
                "/v/bin/gunicorn",
                "--workers",
                "2",
                "--chdir",
                "/srv/shop/current",
                "--worker-class",
                "gevent",
                "djsite.wsgi:application"
            ]
        );
        let uwsgi = Server::Uwsgi.command_in(venv, Framework::Flask, dir);
        assert_eq!(
            uwsgi.join(" "),
            "/v/bin/uwsgi --master --workers 2 --chdir /srv/shop/current \
             --module flask_app:app --need-app --http-socket fd://3"
        );
    }

    #[test]
    fn release_files_say_what_they_do() {
        assert_eq!(
            release_py(3, Release::Good),
            "\"\"\"Release 3, written by the test harness.\"\"\"\n\nRELEASE = \"3\"\n\n\
             import os as _os\n\n\
             print(\"release 3 imported by pid %d\" % _os.getpid(), flush=True)\n"
        );
        let broken = release_py(4, Release::FailsAtImport);
        assert!(
            broken.contains("\nimport missing_module_of_release_4  # noqa\n\nimport os as _os\n"),
            "{broken}"
        );
        assert_eq!(
            import_error(4),
            "ModuleNotFoundError: No module named 'missing_module_of_release_4'"
        );
        let crash = release_py(5, Release::CrashesAfter(Duration::from_millis(1500)));
        assert!(crash.contains("    time.sleep(1.5)\n"), "{crash}");
        assert!(
            crash.contains("    os.kill(os.getsid(0), signal.SIGKILL)\n"),
            "{crash}"
        );
    }
}
