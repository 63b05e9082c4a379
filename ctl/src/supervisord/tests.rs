use std::fs;
use std::time::Duration;

use appvisor::config::{load_app, Defaults, RestartPolicy};

use super::*;

fn ctx() -> Context {
    Context {
        env: [
            ("HOME", "/root"),
            ("PATH", "/usr/bin:/bin"),
            ("STAGE", "prod"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .into(),
        host: "web1".to_owned(),
    }
}

/// Writes `files` under a temp dir and imports the first.
fn run(files: &[(&str, &str)]) -> (tempfile::TempDir, Import) {
    let tmp = tempfile::tempdir().unwrap();
    for (name, text) in files {
        let path = tmp.path().join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }
    let import = import(&[tmp.path().join(files[0].0)], &ctx());
    (tmp, import)
}

#[test]
fn expands_like_python_percent_formatting() {
    let vars = expansions(&ctx(), Path::new("/etc/supervisor"), Some("shop"));
    let cases = [
        ("%(here)s/x", "/etc/supervisor/x"),
        ("%(program_name)s-%(process_num)02d", "shop-00"),
        ("%(ENV_STAGE)s on %(host_node_name)s", "prod on web1"),
        ("100%% sure", "100% sure"),
        ("plain", "plain"),
    ];
    for (input, want) in cases {
        assert_eq!(expand(input, &vars).unwrap(), want, "{input}");
    }
    assert_eq!(
        expand("%(nope)s", &vars).unwrap_err(),
        "%(nope)s names nothing supervisord knows"
    );
    assert!(expand("50%", &vars).is_err());
}

#[test]
fn converts_sizes_signals_and_booleans() {
    assert_eq!(byte_size("50MB").unwrap(), 50 << 20);
    assert_eq!(byte_size("1kb").unwrap(), 1024);
    assert_eq!(byte_size("123").unwrap(), 123);
    assert!(byte_size("lots").is_err());
    assert_eq!(size_text(50 << 20), "50MiB");
    assert_eq!(size_text(3 << 30), "3GiB");
    assert_eq!(size_text(1000), "1000B");
    assert_eq!(signal_name("SIGQUIT").unwrap(), "QUIT");
    assert_eq!(signal_name("int").unwrap(), "INT");
    assert!(signal_name("WINCH").is_err());
    assert!(boolean("autostart", "Yes").unwrap());
    assert!(!boolean("autostart", "off").unwrap());
}

#[test]
fn a_program_becomes_an_app_file_that_keeps_what_supervisord_did() {
    let (tmp, import) = run(&[
        (
            "supervisord.conf",
            "[supervisord]\nlogfile=/var/log/supervisord.log\n\
             environment=LANG=C.UTF-8,STAGE=dev\n\
             [include]\nfiles = conf.d/*.conf\n",
        ),
        (
            "conf.d/shop.conf",
            "[program:shop]\n\
             command=env gunicorn --workers 4 --bind 'unix:/run/shop.sock' shop.wsgi ; the app\n\
             directory=/srv/shop/current\n\
             user=shop\n\
             environment=DJANGO_SETTINGS_MODULE=\"shop.settings\",STAGE=%(ENV_STAGE)s\n\
             umask=022\n\
             autorestart=true\n\
             startsecs=5\n\
             startretries=2\n\
             stopsignal=QUIT\n\
             stopwaitsecs=60\n\
             stdout_logfile_maxbytes=20MB\n\
             stdout_logfile_backups=3\n\
             redirect_stderr=true\n\
             stdout_events_enabled=true\n\
             [group:web]\nprograms=shop\n",
        ),
    ]);
    assert_eq!(import.problems, []);
    assert_eq!(import.apps.len(), 1);
    let app = &import.apps[0];
    assert_eq!(app.name, "shop");
    assert!(
        app.origin.ends_with("conf.d/shop.conf:1 [program:shop]"),
        "{}",
        app.origin
    );
    assert!(
        app.toml
            .contains("# note: redirect_stderr: appvisor keeps stderr apart, in stderr.log\n")
            && app
                .toml
                .contains("# note: no appvisor equivalent, left out: stdout_events_enabled\n"),
        "{}",
        app.toml
    );

    // The file is a valid app file, with supervisord's behaviour in it.
    let file = tmp.path().join("shop.toml");
    fs::write(&file, &app.toml).unwrap();
    let spec =
        load_app(&file, &Defaults::default()).unwrap_or_else(|e| panic!("{e}\n{}", app.toml));
    assert_eq!(spec.user, "shop");
    assert_eq!(
        spec.command,
        [
            "/usr/bin/env",
            "gunicorn",
            "--workers",
            "4",
            "--bind",
            "unix:/run/shop.sock",
            "shop.wsgi"
        ]
        .map(String::from),
        "a bare command is found in PATH, as supervisord does"
    );
    assert_eq!(spec.directory, Path::new("/srv/shop/current"));
    assert_eq!(spec.environment["DJANGO_SETTINGS_MODULE"], "shop.settings");
    assert_eq!(spec.environment["STAGE"], "prod", "the program's wins");
    assert_eq!(
        spec.environment["LANG"], "C.UTF-8",
        "supervisord's own is inherited"
    );
    assert_eq!(spec.umask, 0o022);
    assert_eq!(spec.restart.policy, RestartPolicy::Always);
    assert_eq!(spec.restart.start_secs, Duration::from_secs(5));
    assert_eq!(
        spec.restart.max_retries, 3,
        "startretries 2 = 3 failed starts"
    );
    assert_eq!(spec.stop.signal.0, nix::sys::signal::Signal::SIGQUIT);
    assert_eq!(spec.stop.timeout, Duration::from_secs(60));
    assert_eq!((spec.logs.max_size, spec.logs.keep), (20 << 20, 3));
}

#[test]
fn supervisord_defaults_are_written_out() {
    let (tmp, import) = run(&[(
        "one.conf",
        "[program:worker]\ncommand=/usr/bin/python3 -m worker\nuser=app\n",
    )]);
    assert_eq!(import.problems, []);
    let toml = &import.apps[0].toml;
    assert!(toml.contains(
        "# note: no directory: supervisord ran it in its own working directory; / is assumed\n"
    ));
    let file = tmp.path().join("worker.toml");
    fs::write(&file, toml).unwrap();
    let spec = load_app(&file, &Defaults::default()).unwrap_or_else(|e| panic!("{e}\n{toml}"));
    assert_eq!(
        spec.restart.policy,
        RestartPolicy::OnFailure,
        "autorestart=unexpected"
    );
    assert_eq!(spec.restart.start_secs, Duration::from_secs(1));
    assert_eq!(
        spec.restart.max_retries, 4,
        "startretries 3 = 4 failed starts"
    );
    assert_eq!(spec.stop.timeout, Duration::from_secs(10));
    assert_eq!((spec.logs.max_size, spec.logs.keep), (50 << 20, 10));
    assert_eq!(spec.umask, 0o022, "supervisord's default umask");
    assert!(spec.autostart);
}

#[test]
fn what_cannot_be_imported_is_a_problem_that_names_the_place() {
    let (tmp, import) = run(&[(
        "bad.conf",
        "[program:asroot]\ncommand=/bin/true\n\
         [program:Caps]\ncommand=/bin/true\nuser=app\n\
         [program:quote]\ncommand=/bin/echo 'open\nuser=app\n\
         [program:good]\ncommand=/bin/sleep 1\nuser=app\n\
         [eventlistener:mem]\ncommand=/bin/true\n",
    )]);
    let file = tmp.path().join("bad.conf").display().to_string();
    let said: Vec<String> = import.problems.iter().map(ToString::to_string).collect();
    assert_eq!(
        said,
        [
            format!("{file}:1 [program:asroot]: no user (or root): supervisord would run it as root, which appvisor never does; add user = NAME to the section and import again"),
            format!("{file}:3 [program:Caps]: \"Caps\" is not a valid app name ([a-z0-9][a-z0-9_-]{{0,63}}): rename the program and import again"),
            format!("{file}:6 [program:quote]: command: no closing quotation in \"/bin/echo 'open\""),
            format!("{file}:12 [eventlistener:mem]: not imported: appvisor runs no eventlistener sections, only programs"),
        ]
    );
    assert_eq!(import.apps.len(), 1, "the good program is still imported");

    let (_tmp, import) = run(&[("broken.conf", "[program:x]\nnot an option\n")]);
    assert_eq!(import.problems.len(), 1);
    assert!(import.problems[0]
        .to_string()
        .ends_with("broken.conf:2: expected NAME = VALUE, found \"not an option\""));
}
