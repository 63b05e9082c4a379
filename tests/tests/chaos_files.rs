//! The chaos suite, files an app's owner or a CM tool controls:
//! a FIFO and a huge sparse `pyvenv.cfg`, a FIFO and a symlinked
//! `env_files` entry, a 20 MB app file and one with 16,000 errors, at
//! start-up and at `appctl update`. Each beside a healthy neighbour, held
//! to `appvisor_tests::chaos`'s yardstick while the attack runs and after;
//! and each hostile file fails only its own app, with a reason.

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use appvisor_tests::chaos::{self, NEIGHBOUR};
use appvisor_tests::daemon::describe_output;
use appvisor_tests::testapps::{owner_venv, sleeper};
use appvisor_tests::{
    bins, require_root, AppBuilder, AppStatus, Daemon, DaemonOptions, Prefix, State, TestUser,
};

/// How long a hostile `appctl update` may take: its files are judged in
/// milliseconds, or refused unread.
const UPDATE_WITHIN: Duration = Duration::from_secs(10);

/// `appctl ARGS` started in the background, for the yardstick to run
/// while it is at work.
fn appctl_in_background(daemon: &Daemon, args: &[&str]) -> Child {
    Command::new(bins::appctl())
        .arg("--socket")
        .arg(daemon.socket())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting appctl")
}

/// Waits for a background `appctl` to finish within `within`.
fn finished(mut child: Child, within: Duration, daemon: &Daemon) -> Output {
    let began = Instant::now();
    while began.elapsed() < within {
        if child.try_wait().expect("waiting for appctl").is_some() {
            return child.wait_with_output().expect("appctl output");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let out = child.wait_with_output().expect("appctl output");
    panic!(
        "appctl did not finish within {within:?}\n{}\n{}",
        describe_output(&out),
        daemon.log_tail(40)
    );
}

/// An app run by its owner's own venv's python, which its owner operates.
fn venv_app(prefix: &Prefix, name: &str, user: &TestUser, venv: &Path) -> AppBuilder {
    AppBuilder::new(
        name,
        user,
        [
            venv.join("bin/python").display().to_string(),
            "-c".to_owned(),
            "import time; time.sleep(3600)".to_owned(),
        ],
    )
    .directory(prefix.code_dir(name, user))
    .readiness(appvisor_tests::Readiness::None)
    .start_secs(Duration::ZERO)
    .extra_toml(&format!("[access]\nusers = [\"{}\"]", user.name))
}

/// The daemon with the neighbour running, and whatever else `prefix` has.
fn start_beside_the_neighbour(prefix: &Prefix, user: &TestUser) -> Daemon {
    chaos::neighbour(user).write(prefix);
    let daemon = Daemon::start(prefix, DaemonOptions::default());
    daemon.wait_for_state(NEIGHBOUR, State::Running, Duration::from_secs(10));
    daemon
}

/// A plain `hostile` app running beside the neighbour: its file is what
/// the test then makes hostile. Returns its builder and running status.
fn start_hostile_beside_the_neighbour(
    prefix: &Prefix,
    user: &TestUser,
) -> (Daemon, AppBuilder, AppStatus) {
    let hostile = sleeper("hostile", user);
    hostile.write(prefix);
    let daemon = start_beside_the_neighbour(prefix, user);
    let running = daemon.wait_for_state("hostile", State::Running, Duration::from_secs(10));
    (daemon, hostile, running)
}

/// `appctl update` once the hostile app's files are hostile, with the
/// yardstick held while it runs: it ends in time and says a file does not
/// validate; the last valid version of `hostile` runs on, its status
/// saying `says`.
fn update_refuses(daemon: &Daemon, running: &AppStatus, says: &str) {
    let update = appctl_in_background(daemon, &["update"]);
    chaos::assert_no_cascade(daemon);
    let out = finished(update, UPDATE_WITHIN, daemon);
    // 2: a file does not validate.
    assert_eq!(out.status.code(), Some(2), "{}", describe_output(&out));
    let status = daemon.app("hostile");
    assert_eq!(status.pid, running.pid, "the last valid version runs on");
    let reason = status.config_error.unwrap_or_default();
    assert!(
        reason.contains(says),
        "status says {reason:?}, not {says:?}"
    );
    chaos::assert_no_cascade(daemon);
}

/// The owner does `attack` to their venv's pyvenv.cfg (given its path),
/// then restarts the app again and again, as its operator: the daemon
/// never opens the file.
fn owner_attacks_pyvenv_cfg(attack: impl Fn(&TestUser, &str)) {
    let user = TestUser::ensure("avt-app1");
    let prefix = Prefix::new();
    let venv = owner_venv(&prefix, "hostile", &user);
    venv_app(&prefix, "hostile", &user, &venv).write(&prefix);
    let daemon = start_beside_the_neighbour(&prefix, &user);

    attack(&user, &venv.join("pyvenv.cfg").display().to_string());
    for _ in 0..3 {
        let restart = daemon.appctl_as(&user, ["restart", "hostile", "--no-wait"]);
        assert!(restart.status.success(), "{}", describe_output(&restart));
        chaos::assert_no_cascade(&daemon);
    }
    daemon.appctl_ok(["security", "hostile"]);
    chaos::assert_no_cascade(&daemon);
}

#[test]
fn a_fifo_pyvenv_cfg_stalls_nothing() {
    require_root!();
    owner_attacks_pyvenv_cfg(|user, cfg| {
        user.run("/bin/rm", &[cfg]);
        user.run("/usr/bin/mkfifo", &[cfg]);
    });
}

#[test]
fn a_huge_sparse_pyvenv_cfg_costs_no_memory() {
    require_root!();
    owner_attacks_pyvenv_cfg(|user, cfg| user.run("/usr/bin/truncate", &["-s", "2G", cfg]));
}

/// `env_files` in a directory the owner may write: the owner makes the
/// file a FIFO, then a link to /dev/zero. Each `appctl update` refuses it
/// at once, the app keeps its last valid version, and nothing waits.
#[test]
fn a_fifo_or_symlinked_env_file_stalls_nothing() {
    require_root!();
    let user = TestUser::ensure("avt-app1");
    let prefix = Prefix::new();
    let (daemon, hostile, running) = start_hostile_beside_the_neighbour(&prefix, &user);

    let dir = prefix.code_dir("hostile", &user);
    let env = dir.join("app.env");
    hostile.clone().env_file(&env).write(&prefix);
    let env_shown = env.display().to_string();
    let attacks: [(&str, &[&str]); 2] = [
        ("/usr/bin/mkfifo", &[&env_shown]),
        ("/bin/ln", &["-sfn", "/dev/zero", &env_shown]),
    ];
    let says = format!(
        "cannot use env file {env_shown}: {} is owned by uid {}, not root",
        dir.display(),
        user.uid
    );
    for (program, args) in attacks {
        let _ = fs::remove_file(&env);
        user.run(program, args);
        update_refuses(&daemon, &running, &says);
    }
}

/// 20 MB of a generated app file: refused by its size, unread.
fn twenty_megabytes(user: &TestUser) -> String {
    let mut text = format!(
        "user = \"{}\"\ncommand = [\"/bin/sleep\", \"infinity\"]\ndirectory = \"/\"\n",
        user.name
    );
    let mut i = 0u64;
    while text.len() < 20 << 20 {
        text.push_str(&format!("generated_key_{i:09} = \"{:0>40}\"\n", i));
        i += 1;
    }
    text
}

/// 16,000 errors in a file under the size cap: each judged, the first
/// hundred kept.
fn sixteen_thousand_errors(user: &TestUser) -> String {
    let mut text = format!(
        "user = \"{}\"\ncommand = [\"/bin/sleep\", \"infinity\"]\ndirectory = \"/\"\n",
        user.name
    );
    for i in 0..16_000 {
        text.push_str(&format!("k{i:04x}=1\n"));
    }
    text
}

/// The hostile files, with what status says of each.
fn hostile_files(user: &TestUser) -> [(&'static str, String, &'static str); 2] {
    [
        (
            "20 MB",
            twenty_megabytes(user),
            "cannot read app file: it is 20.0 MiB, more than the 256.0 KiB allowed",
        ),
        (
            "16,000 errors",
            sixteen_thousand_errors(user),
            "15900 more errors not shown",
        ),
    ]
}

#[test]
fn a_huge_app_file_or_one_of_16000_errors_at_start_up_delays_no_app() {
    require_root!();
    let user = TestUser::ensure("avt-app1");
    for (what, text, says) in hostile_files(&user) {
        let prefix = Prefix::new();
        chaos::neighbour(&user).write(&prefix);
        fs::write(prefix.app_file("hostile"), &text).expect("writing the hostile file");
        let began = Instant::now();
        let daemon = Daemon::start(&prefix, DaemonOptions::default());
        daemon.wait_for_state(NEIGHBOUR, State::Running, Duration::from_secs(5));
        assert!(
            began.elapsed() < Duration::from_secs(5),
            "with a {what} app file the neighbour ran only after {:?}",
            began.elapsed()
        );
        chaos::assert_no_cascade(&daemon);
        let hostile = daemon.app("hostile");
        assert_eq!(hostile.state, State::Invalid, "{what}");
        assert!(hostile.reason.contains(says), "{what}: {}", hostile.reason);
        chaos::assert_no_cascade(&daemon);
    }
}

#[test]
fn a_huge_app_file_or_one_of_16000_errors_at_update_stalls_nothing() {
    require_root!();
    let user = TestUser::ensure("avt-app1");
    let prefix = Prefix::new();
    let (daemon, _, running) = start_hostile_beside_the_neighbour(&prefix, &user);
    for (what, text, says) in hostile_files(&user) {
        eprintln!("the hostile app file: {what}");
        fs::write(prefix.app_file("hostile"), &text).expect("writing the hostile file");
        update_refuses(&daemon, &running, says);
    }
}
