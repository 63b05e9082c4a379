//! The Debian package, built with the one documented command
//! (`cargo xtask deb`) and installed on this machine as an operator does
//! (`apt-get install ./appvisor_*.deb`), then used: its man pages render,
//! bash completes `appctl`, the unit verifies, the daemon started the
//! documented way without systemd supervises an app dropped into
//! `/etc/appvisor/apps.d`, the quickstart runs on the installed binaries,
//! three upgrades in a row restart nothing (handoff.rs's scenario, under
//! load: tests/src/handoff_scenario.rs), the unit's drop-in suits this
//! host's systemd, and a purge leaves nothing of it.
//!
//! Needs root, the `x86_64-unknown-linux-musl` Rust target, cargo-deb,
//! lintian and bash-completion (`.ci/run` installs them all); skipped with
//! the reason printed without root, the target or cargo-deb. The static
//! build goes to the same target directory as tests/tests/static_build.rs,
//! with the same command, so the suite builds it once.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use appvisor_config::builtin;
use appvisor_tests::daemon::{daemon_status_at, describe_output};
use appvisor_tests::handoff_scenario::{Scenario, Supervisor};
use appvisor_tests::load::Load;
use appvisor_tests::quickstart::{run_printed, Quickstart};
use appvisor_tests::{
    bins, free_port, http_get, procfs, require_root, systemd, wait_until, AppBuilder, AppList,
    Prefix, State, TestUser,
};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const MUSL: &str = "x86_64-unknown-linux-musl";
const DEADLINE: Duration = Duration::from_secs(30);
const SETTINGS: &str = builtin::CONFIG_FILE;
const APPS_DIR: &str = builtin::APPS_DIR;
const APPVISORD: &str = "/usr/bin/appvisord";
const APPCTL: &str = "/usr/bin/appctl";
const APP: &str = "avt-pkg-hello";
/// Upgrades in a row, under load.
const UPGRADES: usize = 3;
/// After each upgrade: however fast the upgrades, they span the sleeper's
/// first retry (due 3 to 4 s after its backoff began).
const UPGRADE_PAUSE: Duration = Duration::from_secs(2);

/// Where install.md's way of running the daemon without systemd logs.
fn daemon_log() -> PathBuf {
    Path::new(builtin::LOG_DIR).join("appvisord.log")
}

/// The directory of the control socket, which the unit's
/// RuntimeDirectory makes.
fn control_dir() -> &'static str {
    Path::new(builtin::CONTROL_SOCKET)
        .parent()
        .and_then(Path::to_str)
        .expect("the control socket is in a directory")
}

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
}

/// Why the package cannot be built here, if it cannot.
fn missing_tools() -> Option<String> {
    let sysroot = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))?;
    if !sysroot.join("lib/rustlib").join(MUSL).join("lib").is_dir() {
        return Some(format!(
            "needs the {MUSL} Rust target (rustup target add {MUSL}; .ci/run installs it)"
        ));
    }
    let cargo_deb = cargo().args(["deb", "--version"]).output();
    if !cargo_deb.is_ok_and(|out| out.status.success()) {
        return Some("needs cargo-deb (.ci/run installs the tested version)".to_owned());
    }
    None
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Builds the package once for every test of this file: README's command,
/// into the static build's target directory.
fn package() -> &'static Path {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    DEB.get_or_init(|| {
        let target_dir = bins::target_dir()
            .parent()
            .expect("target/debug has a parent")
            .join("static-release");
        let out = cargo()
            .current_dir(workspace())
            .args(["xtask", "deb", "--target-dir"])
            .arg(&target_dir)
            .output()
            .expect("running cargo xtask deb");
        assert!(
            out.status.success(),
            "cargo xtask deb: {}",
            describe_output(&out)
        );
        let printed = String::from_utf8_lossy(&out.stdout);
        let deb = PathBuf::from(printed.trim());
        assert!(
            deb.is_file() && deb.starts_with(target_dir.join("debian")),
            "cargo xtask deb printed the package's path: {printed:?}"
        );
        deb
    })
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"))
}

fn run_ok(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{program} {}: {}",
        args.join(" "),
        describe_output(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn installed() -> bool {
    run("dpkg-query", &["-W", "-f=${db:Status-Status}", "appvisor"]).stdout == b"installed"
}

/// The package, installed for one test: on drop the daemon it started is
/// stopped, its cgroup removed, and the package purged.
struct Installed {
    daemon: Option<Child>,
    /// The app files the test dropped into apps.d.
    apps: Mutex<Vec<PathBuf>>,
}

impl Installed {
    fn install(deb: &Path) -> Installed {
        assert!(
            !installed(),
            "the appvisor package is installed already: purge it first (apt-get purge appvisor)"
        );
        let deb = deb.to_str().expect("utf-8 path");
        run_ok("apt-get", &["install", "-y", "-q", deb]);
        Installed {
            daemon: None,
            apps: Mutex::new(Vec::new()),
        }
    }

    /// Notes an app file dropped into apps.d, to be removed at the end.
    fn dropped(&self, file: PathBuf) {
        self.apps.lock().expect("the app list").push(file);
    }

    /// Removes the app files dropped into apps.d.
    fn remove_apps(&self) {
        for file in self.apps.lock().expect("the app list").drain(..) {
            let _ = fs::remove_file(file);
        }
    }

    /// install.md, "Running it" without systemd: check, then the daemon in
    /// the background with its log in /var/log/appvisor.
    fn start_daemon(&mut self) {
        run_ok(APPVISORD, &["check"]);
        let log = fs::File::options()
            .create(true)
            .append(true)
            .open(daemon_log())
            .expect("opening the daemon's log");
        let daemon = Command::new(APPVISORD)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .expect("starting appvisord");
        self.daemon = Some(daemon);
        wait_until(DEADLINE, "the installed daemon to answer", || {
            run(APPCTL, &["whoami"]).status.success()
        });
    }

    fn daemon_pid(&self) -> u32 {
        self.daemon.as_ref().expect("the daemon was started").id()
    }

    /// SIGTERM, as install.md says; returns the daemon's exit code.
    fn stop_daemon(&mut self) -> Option<i32> {
        let mut daemon = self.daemon.take()?;
        let pid = Pid::from_raw(i32::try_from(daemon.id()).expect("pid fits"));
        kill(pid, Signal::SIGTERM).expect("signalling appvisord");
        let mut code = None;
        wait_until(DEADLINE, "appvisord to exit after SIGTERM", || match daemon
            .try_wait()
            .expect("waiting for appvisord")
        {
            Some(status) => {
                code = status.code();
                true
            }
            None => false,
        });
        code
    }

    fn log(&self) -> String {
        fs::read_to_string(daemon_log()).unwrap_or_default()
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("the installed daemon's log:\n{}", self.log());
        }
        if let Some(mut daemon) = self.daemon.take() {
            let _ = daemon.kill();
            let _ = daemon.wait();
        }
        if let (Some(root), Some(own)) = (
            procfs::cgroup2_root(),
            procfs::cgroup_of(std::process::id()),
        ) {
            let dir = root.join(own).join("appvisor");
            procfs::kill_cgroup_tree(&dir, Duration::from_secs(5));
            procfs::remove_cgroup_tree(&dir);
        }
        self.remove_apps();
        let _ = run("apt-get", &["purge", "-y", "-q", "appvisor"]);
    }
}

/// The installed daemon, driven with the installed appctl on the default
/// socket, for handoff.rs's scenario.
impl Supervisor for Installed {
    fn appctl(&self, args: &[&str]) -> Output {
        run(APPCTL, args)
    }

    fn write_app(&self, app: &AppBuilder) -> PathBuf {
        let file = Path::new(APPS_DIR).join(format!("{}.toml", app.name()));
        self.dropped(file.clone());
        fs::write(&file, app.to_toml())
            .unwrap_or_else(|e| panic!("writing {}: {e}", file.display()));
        file
    }

    fn app_log_dir(&self, app: &str) -> PathBuf {
        Path::new(builtin::LOG_DIR).join(app)
    }

    /// The pid the daemon reports (`GET /v1/daemon`).
    fn pid(&self) -> u32 {
        daemon_status_at(Path::new(builtin::CONTROL_SOCKET)).pid
    }

    fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }
}

/// Upgrades (reinstalls) the installed package [`UPGRADES`] times while
/// `port` (the app `APP`, whose pid is `web_pid`) is under load, with
/// handoff.rs's scenario around it; each upgrade must hand every app over.
fn upgrade_under_load(
    installed: &Installed,
    deb: &Path,
    user: &TestUser,
    port: u16,
    web_pid: Option<u32>,
) {
    let mut scenario = Scenario::set_up(installed, user, APP, "avt-pkg-");
    let apps = scenario.apps();
    let daemon_pid = installed.daemon_pid();
    let deb = deb.to_str().expect("utf-8 path");
    let load = Load::start(port, "/", 4, Duration::from_secs(120));
    load.wait_until_answered(10, DEADLINE);
    let mut last_id = daemon_status_at(Path::new(builtin::CONTROL_SOCKET))
        .handoff
        .map(|report| report.id);
    scenario.hand_offs(installed, UPGRADES, UPGRADE_PAUSE, |n| {
        let printed = run_ok("apt-get", &["install", "-y", "-q", "--reinstall", deb]);
        // What postinst's `appctl reexec` printed, and what the daemon
        // reports: a hand-off root asked for, of every app, to the
        // packaged version.
        assert!(
            printed.contains(&format!("handed over {apps} apps")),
            "upgrade {n}: postinst handed the apps over:\n{printed}\n{}",
            installed.log_tail()
        );
        let status = daemon_status_at(Path::new(builtin::CONTROL_SOCKET));
        let report = status.handoff.expect("the daemon reports the hand-off");
        assert_ne!(Some(report.id), last_id, "upgrade {n}: a new hand-off");
        last_id = Some(report.id);
        assert_eq!(report.error, None, "upgrade {n}: {report:?}");
        assert_eq!(report.requested_by, "root", "dpkg runs postinst as root");
        assert_eq!(report.apps, apps, "upgrade {n}: {report:?}");
        let version = env!("CARGO_PKG_VERSION");
        assert_eq!(
            (
                report.from_version.as_str(),
                report.to_version.as_str(),
                status.version.as_str()
            ),
            (version, version, version),
            "upgrade {n}: {report:?}"
        );
        assert_eq!(status.pid, daemon_pid, "upgrade {n}: in place");
        assert!(
            procfs::process_exists(daemon_pid),
            "upgrade {n}: the daemon still runs"
        );
        let exe = fs::read_link(format!("/proc/{daemon_pid}/exe")).expect("the daemon's exe");
        assert_eq!(
            exe,
            Path::new(APPVISORD),
            "upgrade {n}: the daemon runs the upgraded binary, handed over in place"
        );
    });
    let report = load.finish();
    eprintln!(
        "{UPGRADES} upgrades in {:?} under load: {report}",
        scenario.took()
    );
    assert!(
        report.failed.is_empty(),
        "requests failed across the upgrades:\n{report}"
    );
    scenario.check(installed);
    let web = installed.app(APP);
    assert_eq!(
        (web.pid, web.restarts),
        (web_pid, 0),
        "the app was not restarted"
    );
    let done = installed.log().matches("hand-off done").count();
    assert_eq!(
        done,
        UPGRADES,
        "one hand-off per upgrade:\n{}",
        installed.log()
    );
}

fn app_status(name: &str) -> Option<appvisor_tests::AppStatus> {
    let out = run(APPCTL, &["status", name, "--json"]);
    let list: AppList = serde_json::from_slice(&out.stdout).ok()?;
    list.apps.into_iter().next()
}

fn wait_running(name: &str) -> appvisor_tests::AppStatus {
    let mut last = None;
    wait_until(DEADLINE, &format!("{name} to be running"), || {
        last = app_status(name);
        last.as_ref().is_some_and(|s| s.state == State::Running)
    });
    last.expect("a status")
}

#[test]
fn the_package_is_lintian_clean_but_for_explained_overrides() {
    require_root!();
    if let Some(why) = missing_tools() {
        appvisor_tests::skip(why);
        return;
    }
    let deb = package();
    let out = Command::new("lintian")
        .args(["--pedantic", "--display-info"])
        .arg(deb)
        .output()
        .expect("running lintian (apt-get install lintian; .ci/run does)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let tags: Vec<&str> = stdout
        .lines()
        .filter(|line| line.len() > 2 && "EWIPX".contains(&line[..1]) && &line[1..2] == ":")
        .collect();
    assert!(
        out.status.success() && tags.is_empty(),
        "lintian tags not overridden: {tags:#?}\n{}",
        describe_output(&out)
    );

    // Every override says why, in the comment just above it.
    let overrides = fs::read_to_string(workspace().join("debian/lintian-overrides"))
        .expect("debian/lintian-overrides");
    let mut explained = false;
    for line in overrides.lines() {
        if line.starts_with('#') {
            explained = true;
        } else if line.trim().is_empty() {
            explained = false;
        } else {
            assert!(explained, "override without a reason above it: {line}");
        }
    }
}

#[test]
fn the_installed_package_supervises_apps_d_renders_man_pages_completes_and_upgrades_in_place() {
    require_root!();
    if let Some(why) = missing_tools() {
        appvisor_tests::skip(why);
        return;
    }
    let deb = package();
    let mut installed = Installed::install(deb);

    // What postinst makes, and the conffile.
    for dir in [APPS_DIR, builtin::LOG_DIR, builtin::STATE_DIR] {
        assert!(Path::new(dir).is_dir(), "{dir} exists");
    }
    for group in builtin::ADMIN_GROUPS {
        run_ok("getent", &["group", group]);
    }
    let conffiles = run_ok("dpkg-query", &["-W", "-f=${Conffiles}", "appvisor"]);
    assert!(conffiles.contains(SETTINGS), "conffiles: {conffiles}");
    let verify = run_ok("dpkg", &["--verify", "appvisor"]);
    assert_eq!(verify, "", "dpkg --verify finds every file as packaged");
    // The unit's drop-in for a daemon crash, chosen for this host's
    // systemd and cgroup file system (debian/systemd-drop-in).
    let drop_in = fs::read_to_string(systemd::DROP_IN).expect("postinst wrote the unit's drop-in");
    let (version, cgroup_fs) = (systemd::version(), systemd::cgroup_fs());
    assert_eq!(
        systemd::settings(&drop_in),
        systemd::expected_settings(version, &cgroup_fs),
        "{} for systemd {version:?} on {cgroup_fs}:\n{drop_in}",
        systemd::DROP_IN
    );
    // An upgrade of systemd (debian/triggers) chooses it again.
    fs::write(systemd::DROP_IN, "stale\n").expect("spoiling the drop-in");
    run_ok("dpkg-trigger", &["--no-await", "/lib/systemd/systemd"]);
    run_ok("dpkg", &["--triggers-only", "--pending"]);
    assert_eq!(
        fs::read_to_string(systemd::DROP_IN).expect("the drop-in"),
        drop_in,
        "postinst triggered by systemd wrote the drop-in again"
    );

    // The unit, as systemd would read it.
    if Path::new("/usr/bin/systemd-analyze").exists() {
        let out = run(
            "systemd-analyze",
            &["verify", "/usr/lib/systemd/system/appvisord.service"],
        );
        assert!(
            out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
            "systemd-analyze verify: {}",
            describe_output(&out)
        );
    } else {
        appvisor_tests::skip("(its systemd-analyze part: systemd-analyze is not installed)");
    }

    // Every man page renders without a warning, and man finds them by name.
    let files = run_ok("dpkg-query", &["-L", "appvisor"]);
    let pages: Vec<&str> = files
        .lines()
        .filter(|path| path.starts_with("/usr/share/man/") && path.ends_with(".gz"))
        .collect();
    assert!(pages.len() >= 16, "man pages: {pages:?}");
    for page in &pages {
        let out = Command::new("man")
            .args(["--warnings", "-l", page])
            .env("MANWIDTH", "80")
            .output()
            .expect("running man (apt-get install man-db)");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && out.stderr.is_empty() && text.contains("NAME"),
            "man -l {page}: {}",
            describe_output(&out)
        );
    }
    for (section, page) in [("1", "appctl"), ("8", "appvisord"), ("5", "appvisor.toml")] {
        let found = run_ok("man", &["-w", section, page]);
        assert!(found.contains(page), "man -w {section} {page}: {found}");
    }

    // bash-completion loads appctl's completion on demand and completes a
    // subcommand, and an option of that subcommand only.
    let script = "source /usr/share/bash-completion/bash_completion || exit 9
        _completion_loader appctl
        complete_with() {
            COMP_WORDS=(\"$@\"); COMP_CWORD=$(( $# - 1 )); COMP_LINE=\"$*\"; COMP_POINT=${#COMP_LINE}
            COMPREPLY=()
            fn=$(complete -p appctl | sed -n 's/.*-F \\([^ ]*\\) .*/\\1/p')
            \"$fn\" appctl \"${COMP_WORDS[COMP_CWORD]}\" \"${COMP_WORDS[COMP_CWORD-1]}\"
            printf '%s\\n' \"${COMPREPLY[@]}\"
        }
        complete_with appctl rest
        echo --
        complete_with appctl check --";
    let out = Command::new("bash")
        .args(["-c", script])
        .output()
        .expect("running bash");
    assert_ne!(
        out.status.code(),
        Some(9),
        "bash-completion is not installed (apt-get install bash-completion; .ci/run does)"
    );
    let completions = String::from_utf8_lossy(&out.stdout);
    let (subcommands, options) = completions.split_once("--\n").unwrap_or_default();
    assert_eq!(
        subcommands.trim(),
        "restart",
        "appctl rest<TAB>: {completions}"
    );
    assert!(
        options.contains("--config") && !options.contains("--socket"),
        "appctl check --<TAB> offers check's options only: {options}"
    );

    // The daemon, started the documented way without systemd, runs an app
    // dropped into apps.d, on a status port an operator set in the conffile.
    let status_port = free_port();
    let settings = fs::read_to_string(SETTINGS).expect("the conffile");
    let edited = settings.replace("#[status]", "[status]").replace(
        &format!("#listen = \"{}\"", builtin::STATUS_LISTEN),
        &format!("listen = \"127.0.0.1:{status_port}\""),
    );
    assert_ne!(edited, settings, "the conffile shows [status] listen");
    fs::write(SETTINGS, &edited).expect("editing the conffile");
    installed.start_daemon();

    let user = TestUser::ensure("avt-pkg");
    let code = Prefix::new();
    let hello = code.path().join("hello");
    fs::create_dir_all(&hello).expect("creating the app's directory");
    fs::copy(
        workspace().join("examples/quickstart/hello.py"),
        hello.join("hello.py"),
    )
    .expect("copying hello.py");
    let port = free_port();
    let app_file = Path::new(APPS_DIR).join(format!("{APP}.toml"));
    fs::write(
        &app_file,
        format!(
            "user = \"{user}\"\ncommand = [\"{gunicorn}\", \"hello:application\"]\n\
             directory = \"{dir}\"\n[[listen]]\naddress = \"127.0.0.1:{port}\"\n\
             [readiness]\nkind = \"notify\"\nurl = \"http://127.0.0.1:{port}/\"\n\
             [sandbox]\nread_only = [\"{venv}\"]\nconnect_ports = []\n",
            user = user.name,
            gunicorn = bins::gunicorn().display(),
            dir = hello.display(),
            venv = bins::venv().display(),
        ),
    )
    .expect("dropping the app into apps.d");
    installed.dropped(app_file.clone());
    let app_file = app_file.to_str().expect("utf-8 path");
    run_ok(APPCTL, &["check", app_file]);
    let update = run_ok(APPCTL, &["update"]);
    assert!(update.contains(APP), "appctl update: {update}");
    let before = wait_running(APP);
    let answer = http_get(port, "/").expect("GET the app");
    assert!(
        answer.body.starts_with("hello from avt-pkg"),
        "the app answers: {answer:?}"
    );
    let metrics = http_get(status_port, "/metrics").expect("GET /metrics");
    assert!(
        metrics
            .body
            .contains(&format!("appvisor_app_up{{app=\"{APP}\"}} 1")),
        "the status port from the conffile serves this daemon: {}",
        metrics.body
    );

    // The quickstart, on the installed binaries.
    let quick_user = TestUser::ensure("avt-quickstart");
    let quick_prefix = Prefix::new();
    let demo = quick_prefix.path().join("demo");
    let venv = bins::venv();
    let cgroup = format!("avt-pkgqs-{}", std::process::id());
    let mut quickstart = Quickstart::start(
        &[
            "--prefix",
            demo.to_str().expect("utf-8 prefix"),
            "--venv",
            venv.to_str().expect("utf-8 venv"),
            "--user",
            &quick_user.name,
            "--port",
            &free_port().to_string(),
            "--status-port",
            &free_port().to_string(),
        ],
        Path::new("/usr/bin"),
        &cgroup,
    );
    quickstart.wait_for("its ready line", Duration::from_secs(60), |line| {
        line.starts_with("==> ready:")
    });
    for command in quickstart.printed_commands() {
        assert!(
            !command.contains("appctl") || command.starts_with(APPCTL),
            "the installed appctl: {command}"
        );
        run_printed(&command);
    }
    assert_eq!(quickstart.stop(), Some(0), "the quickstart exits 0");
    drop(quickstart);

    // Upgrades (the same package again) restart nothing, under load:
    // postinst hands the apps over to the new binary (appctl reexec), so
    // the daemon keeps its pid and runs the new file, and handoff.rs's
    // scenario holds (every app keeps its pid, no request fails, no line
    // is lost, the backoff keeps its schedule, the stopped app stays
    // stopped); the edited conffile is kept.
    upgrade_under_load(&installed, deb, &user, port, before.pid);
    assert_eq!(
        fs::read_to_string(SETTINGS).expect("the conffile"),
        edited,
        "the edited conffile is kept"
    );
    run_ok(APPCTL, &["restart", APP]);
    let restarted = wait_running(APP);
    assert_ne!(restarted.pid, before.pid, "restart spawned a new instance");

    // SIGTERM stops the app and the daemon; purge leaves nothing of them.
    assert_eq!(installed.stop_daemon(), Some(0), "appvisord's exit status");
    let pid = restarted.pid.expect("a running app has a pid");
    assert!(!procfs::process_exists(pid), "the app ({pid}) was stopped");
    installed.remove_apps();
    run_ok("apt-get", &["purge", "-y", "-q", "appvisor"]);
    for path in [
        APPVISORD,
        APPCTL,
        SETTINGS,
        APPS_DIR,
        builtin::LOG_DIR,
        builtin::STATE_DIR,
        systemd::DROP_IN,
        "/usr/lib/systemd/system/appvisord.service.d",
        control_dir(),
    ] {
        assert!(!Path::new(path).exists(), "{path} is gone after purge");
    }
}
