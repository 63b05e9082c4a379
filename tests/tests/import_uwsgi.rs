//! `appctl import-uwsgi`: emperor vassal files become apps.d files that
//! real uWSGI (from the test venv) serves on sockets appvisord holds, with
//! notify readiness. The vassals use the options emperor hosts use: `uid`,
//! `chdir`, `virtualenv`, `module`/`wsgi-file`, `master`, `processes`,
//! `http-socket` and `http`, `env`, `%d`/`%n` and `%(option)`.

use std::process::Command;
use std::time::Duration;

use appvisor_tests::daemon::describe_output;
use appvisor_tests::{
    bins, free_port, http_get, require_root, Daemon, DaemonOptions, Prefix, State, TestUser,
};

#[test]
fn emperor_vassals_are_served_by_uwsgi_on_held_sockets() {
    require_root!();
    let uwsgi = bins::venv().join("bin/uwsgi");
    assert!(
        uwsgi.is_file(),
        "{} is missing: run .ci/run (tests/requirements.txt pins uwsgi)",
        uwsgi.display()
    );
    let user = TestUser::ensure("avt-app5");
    let prefix = Prefix::new();
    let (port1, port2) = (free_port(), free_port());
    let shop = prefix.install_app("shop", &user, &["wsgi_app.py"]);
    let blog = prefix.install_app("blog", &user, &["wsgi_app.py"]);
    let venv = bins::venv();
    // Modelled on the vassal layout of uWSGI's Emperor docs ("the uWSGI
    // Emperor – multi-app deployment"): one .ini per app, uid and chdir per
    // vassal, the app's virtualenv, a master with several workers.
    let vassals = [
        prefix.write(
            "vassals/shop.ini",
            &format!(
                "[uwsgi]\n\
                 ; the storefront\n\
                 uid = {user}\n\
                 chdir = {shop}\n\
                 virtualenv = {venv}\n\
                 module = wsgi_app:application\n\
                 master = true\n\
                 processes = 2\n\
                 http-socket = 127.0.0.1:{port1}\n\
                 env = GREETING=from-%n\n\
                 pidfile = /run/uwsgi/%n.pid\n\
                 vacuum = true\n",
                user = user.name,
                shop = shop.display(),
                venv = venv.display(),
            ),
        ),
        prefix.write(
            "vassals/blog.ini",
            &format!(
                "[uwsgi]\n\
                 uid = {user}\n\
                 base = {blog}\n\
                 chdir = %(base)\n\
                 home = {venv}\n\
                 wsgi-file = %(base)/wsgi_app.py\n\
                 master = true\n\
                 processes = 1\n\
                 http = 127.0.0.1:{port2}\n\
                 logto = %d%n.log\n",
                user = user.name,
                blog = blog.display(),
                venv = venv.display(),
            ),
        ),
    ];

    let imported = prefix.path().join("imported");
    std::fs::create_dir(&imported).expect("creating the output dir");
    let out = Command::new(bins::appctl())
        .arg("import-uwsgi")
        .arg("--config")
        .arg(prefix.config_path())
        .arg("--out")
        .arg(&imported)
        .args(&vassals)
        .output()
        .expect("running appctl import-uwsgi");
    assert_eq!(out.status.code(), Some(0), "{}", describe_output(&out));
    for name in ["shop", "blog"] {
        let text = std::fs::read_to_string(imported.join(format!("{name}.toml")))
            .unwrap_or_else(|e| panic!("{name}.toml: {e}"));
        assert!(text.contains("kind = \"notify\""), "{text}");
        assert!(text.contains("fd://3"), "{text}");
        assert!(text.contains("gracefully_kill_them_all"), "{text}");
        std::fs::copy(imported.join(format!("{name}.toml")), prefix.app_file(name))
            .expect("copying into apps.d");
    }

    let daemon = Daemon::start(&prefix, DaemonOptions::default());
    for (name, port) in [("shop", port1), ("blog", port2)] {
        daemon.wait_for_state(name, State::Running, Duration::from_secs(60));
        let response = http_get(port, "/").unwrap_or_else(|e| {
            panic!("{name} on {port}: {e}\n{}", daemon.app_logs(name, 30, true))
        });
        assert_eq!(
            response.status,
            200,
            "{name}: {}\n{}",
            response.body,
            daemon.app_logs(name, 30, true)
        );
    }
    // The held socket outlives a restart, and TERM, made a graceful stop
    // by the hook the import adds, stops uWSGI well within the stop
    // timeout (without the hook TERM would have reloaded it).
    let out = daemon.appctl(["restart", "shop"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe_output(&out));
    let out = daemon.appctl(["stop", "--timeout", "20s", "blog"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe_output(&out));
    assert_eq!(daemon.app("blog").state, State::Stopped);
}
