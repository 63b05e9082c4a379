//! The environment an app sees is exactly DESIGN.md's, and nothing of the
//! daemon's leaks through.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use appvisor_tests::testapps::{dumped_env, venv_python};
use appvisor_tests::{
    bins, require_root, AppBuilder, Daemon, DaemonOptions, Prefix, Readiness, State, TestUser,
};

/// Runs envdump.py as `avt-app3` with an `environment` and an env file,
/// with the daemon's own environment salted, and returns what it printed.
fn dump(readiness: Readiness) -> (TestUser, BTreeMap<String, String>) {
    let user = TestUser::ensure("avt-app3");
    let prefix = Prefix::new();
    // Readable by root only: the daemon reads env files, not the app.
    let secrets = prefix.write("secrets.env", "# comment\nFROM_FILE=1\nSHARED=from-file\n");
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o600))
        .expect("chmod secrets.env");
    let app: AppBuilder = venv_python(&prefix, "envdump", &user, "envdump.py")
        .env("APP_MODE", "test")
        .env("SHARED", "from-app")
        .env_file(&secrets)
        .readiness(readiness)
        .start_secs(Duration::from_millis(500));
    app.write(&prefix);
    let daemon = Daemon::start(
        &prefix,
        DaemonOptions {
            env: vec![
                ("APPVISOR_LEAK_CHECK".into(), "1".into()),
                ("PYTHONPATH".into(), "/leak".into()),
                ("LD_PRELOAD".into(), "".into()),
            ],
            ..DaemonOptions::default()
        },
    );
    daemon.wait_for_state("envdump", State::Running, Duration::from_secs(15));
    let mut env = None;
    daemon.wait_until(Duration::from_secs(10), "envdump's dump in its log", || {
        env = dumped_env(&daemon.app_logs("envdump", 200, false));
        env.is_some()
    });
    (user, env.expect("dump").into_iter().collect())
}

fn assert_base(user: &TestUser, env: &BTreeMap<String, String>) {
    let get = |k: &str| env.get(k).map(String::as_str);
    assert_eq!(
        get("HOME"),
        Some(user.home.to_str().expect("utf-8 home")),
        "{env:#?}"
    );
    assert_eq!(get("USER"), Some(user.name.as_str()), "{env:#?}");
    assert_eq!(get("LOGNAME"), Some(user.name.as_str()), "{env:#?}");
    assert_eq!(
        get("SHELL"),
        Some(user.shell.to_str().expect("utf-8 shell")),
        "{env:#?}"
    );
    assert_eq!(
        get("LANG"),
        Some("C.UTF-8"),
        "LANG comes from the daemon: {env:#?}"
    );
    assert_eq!(get("PYTHONUNBUFFERED"), Some("1"), "{env:#?}");
    let venv_bin = bins::venv().join("bin").display().to_string();
    let path = get("PATH").expect("PATH is set");
    assert_eq!(
        path.split(':').next(),
        Some(venv_bin.as_str()),
        "the command's venv bin comes first in PATH: {path}"
    );
    assert!(
        path.split(':').any(|p| p == "/usr/bin"),
        "PATH has the system dirs: {path}"
    );
    assert_eq!(
        get("APP_MODE"),
        Some("test"),
        "`environment` is applied: {env:#?}"
    );
    assert_eq!(
        get("FROM_FILE"),
        Some("1"),
        "`env_files` are applied: {env:#?}"
    );
    assert_eq!(
        get("SHARED"),
        Some("from-app"),
        "`environment` wins over env_files: {env:#?}"
    );
    for leak in [
        "APPVISOR_LEAK_CHECK",
        "PYTHONPATH",
        "LD_PRELOAD",
        "APPVISOR_LOG",
        "NO_COLOR",
        "CARGO",
        "PWD",
    ] {
        assert!(
            !env.contains_key(leak),
            "{leak} leaked from the daemon: {env:#?}"
        );
    }
    for listen in ["LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"] {
        assert!(
            !env.contains_key(listen),
            "{listen} without [[listen]]: {env:#?}"
        );
    }
}

const BASE: [&str; 10] = [
    "APP_MODE",
    "FROM_FILE",
    "HOME",
    "LANG",
    "LOGNAME",
    "PATH",
    "PYTHONUNBUFFERED",
    "SHARED",
    "SHELL",
    "USER",
];

#[test]
fn environment_is_exactly_the_documented_one() {
    require_root!();
    let (user, env) = dump(Readiness::None);
    assert_base(&user, &env);
    let keys: Vec<&str> = env.keys().map(String::as_str).collect();
    assert_eq!(keys, BASE, "nothing else: {env:#?}");
}

#[test]
fn readiness_notify_adds_notify_socket_only() {
    require_root!();
    let (user, env) = dump(Readiness::Notify);
    assert_base(&user, &env);
    let socket = env
        .get("NOTIFY_SOCKET")
        .expect("NOTIFY_SOCKET with readiness notify");
    assert!(!socket.is_empty());
    let mut want: Vec<&str> = BASE.to_vec();
    want.push("NOTIFY_SOCKET");
    want.sort_unstable();
    let keys: Vec<&str> = env.keys().map(String::as_str).collect();
    assert_eq!(keys, want, "nothing else: {env:#?}");
}
