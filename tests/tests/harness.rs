//! The harness and the test apps on their own, without appvisord: users,
//! the venv's gunicorn run by hand as an app user, the misbehaving apps.
//! When a daemon test fails, these say whether the fault is in the setup.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use appvisor_tests::testapps::{dumped_env, printed_pids};
use appvisor_tests::{
    bins, http_get, poll_until, process_exists, require_root, Prefix, TestGroup, TestUser,
};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Runs `argv` as `user` in `dir` with exactly `env`, in its own process group.
fn spawn_as(
    user: &TestUser,
    dir: &std::path::Path,
    argv: &[String],
    env: &[(&str, &str)],
) -> Child {
    Command::new(&argv[0])
        .args(&argv[1..])
        .current_dir(dir)
        .env_clear()
        .envs(env.iter().copied())
        .uid(user.uid)
        .gid(user.gid)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {argv:?} as {}: {e}", user.name))
}

fn kill_group(child: &mut Child) {
    let _ = kill(Pid::from_raw(-(child.id() as i32)), Signal::SIGKILL);
    let _ = child.wait();
}

#[test]
fn test_users_are_idempotent_and_carry_their_groups() {
    require_root!();
    let a = TestUser::ensure_in_groups("avt-app2", &["avt-grp"]);
    let b = TestUser::ensure_in_groups("avt-app2", &["avt-grp"]);
    assert_eq!((a.uid, a.gid), (b.uid, b.gid));
    assert_ne!(a.uid, 0);
    let grp = TestGroup::ensure("avt-grp");
    assert!(a.group_ids().contains(&grp.gid), "{:?}", a.group_ids());
    assert!(a.group_ids().contains(&a.gid));
    assert_eq!(a.shell.to_str(), Some("/usr/sbin/nologin"));
}

#[test]
fn venv_gunicorn_serves_as_an_app_user_and_sends_ready() {
    require_root!();
    let user = TestUser::ensure("avt-app1");
    let prefix = Prefix::new();
    let dir = prefix.install_app("web", &user, &["wsgi_app.py"]);
    let notify_path = prefix.path().join("run/notify.sock");
    let notify = UnixDatagram::bind(&notify_path).expect("binding the notify socket");
    std::fs::set_permissions(&notify_path, std::fs::Permissions::from_mode(0o666)).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let port = appvisor_tests::free_port();
    let argv: Vec<String> = vec![
        bins::gunicorn().display().to_string(),
        "--bind".into(),
        format!("127.0.0.1:{port}"),
        "--workers".into(),
        "1".into(),
        "wsgi_app:application".into(),
    ];
    let notify_env = notify_path.display().to_string();
    let mut child = spawn_as(
        &user,
        &dir,
        &argv,
        &[("PATH", "/usr/bin:/bin"), ("NOTIFY_SOCKET", &notify_env)],
    );
    let mut buf = [0u8; 256];
    let got = notify.recv(&mut buf);
    let message = got.map(|n| String::from_utf8_lossy(&buf[..n]).into_owned());
    let served = poll_until(Duration::from_secs(15), || {
        http_get(port, "/").is_ok_and(|r| r.status == 200)
    });
    let body = http_get(port, "/").map(|r| r.body);
    kill_group(&mut child);
    let message = message.expect("gunicorn sends a notify message");
    assert!(message.contains("READY=1"), "{message:?}");
    assert!(served, "gunicorn served GET /");
    assert_eq!(body.expect("GET /"), "hello from avt-app1\n");
}

#[test]
fn stubborn_app_ignores_sigterm_and_leaves_a_grandchild() {
    require_root!();
    let user = TestUser::ensure("avt-app1");
    let prefix = Prefix::new();
    let dir = prefix.install_app("stubborn", &user, &["stubborn.py"]);
    let argv = vec![
        bins::SYSTEM_PYTHON.to_owned(),
        dir.join("stubborn.py").display().to_string(),
    ];
    let mut child = spawn_as(&user, &dir, &argv, &[("PYTHONUNBUFFERED", "1")]);
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut text = String::new();
    for _ in 0..2 {
        out.read_line(&mut text).expect("reading stubborn's pids");
    }
    let main = printed_pids(&text, "main");
    let grandchild = printed_pids(&text, "grandchild");
    assert_eq!(main, vec![child.id()], "{text}");
    assert_eq!(grandchild.len(), 1, "{text}");
    let grandchild = grandchild[0];
    let status = appvisor_tests::ProcStatus::read(grandchild).expect("grandchild exists");
    assert_ne!(
        status.ppid,
        child.id(),
        "the grandchild left the main process's tree"
    );

    for pid in [child.id(), grandchild] {
        kill(Pid::from_raw(pid as i32), Signal::SIGTERM).unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        process_exists(child.id()) && process_exists(grandchild),
        "both ignore SIGTERM"
    );
    for pid in [child.id(), grandchild] {
        kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    }
    let _ = child.wait();
    assert!(poll_until(Duration::from_secs(5), || !process_exists(
        grandchild
    )));
}

#[test]
fn envdump_prints_exactly_its_environment() {
    require_root!();
    let user = TestUser::ensure("avt-app3");
    let prefix = Prefix::new();
    let dir = prefix.install_app("envdump", &user, &["envdump.py"]);
    let argv = vec![
        bins::SYSTEM_PYTHON.to_owned(),
        dir.join("envdump.py").display().to_string(),
    ];
    let mut child = spawn_as(&user, &dir, &argv, &[("LANG", "C.UTF-8"), ("X", "a=b")]);
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut text = String::new();
    while !text.contains("--- env end") {
        assert_ne!(out.read_line(&mut text).expect("reading"), 0, "eof: {text}");
    }
    kill_group(&mut child);
    assert_eq!(
        dumped_env(&text).expect("a dump"),
        vec![
            ("LANG".into(), "C.UTF-8".into()),
            ("X".into(), "a=b".into())
        ]
    );
}

#[test]
fn flood_writes_numbered_lines_then_says_done() {
    require_root!();
    let user = TestUser::ensure("avt-app4");
    let prefix = Prefix::new();
    let dir = prefix.install_app("flood", &user, &["flood.py"]);
    let argv = vec![
        bins::SYSTEM_PYTHON.to_owned(),
        dir.join("flood.py").display().to_string(),
        "1".to_owned(),
    ];
    let mut child = spawn_as(&user, &dir, &argv, &[]);
    let out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut n = 0u64;
    for line in out.lines() {
        let line = line.expect("utf-8 line");
        if let Some(total) = line.strip_prefix("flood done ") {
            assert_eq!(total.parse::<u64>().unwrap(), n);
            break;
        }
        n += 1;
        assert_eq!(line.len(), 63);
        assert_eq!(line[5..14].parse::<u64>().unwrap(), n, "{line}");
    }
    kill_group(&mut child);
    assert_eq!(n, 1024 * 1024 / 64);
}
