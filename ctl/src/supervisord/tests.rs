use std::fs;
use std::time::Duration;

use appvisor_config::{load_app, Defaults, RestartPolicy};

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
    let process = Process {
        program: "shop".into(),
        group: "shop".into(),
        num: 0,
        numprocs: 1,
    };
    let vars = expansions(&ctx(), Path::new("/etc/supervisor"), Some(&process));
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
    let unknown = expand("%(nope)s", &vars).unwrap_err();
    assert_eq!(
        unknown,
        ExpandError::Unknown {
            name: "nope".into(),
            flags: String::new(),
            conversion: 's',
        }
    );
    assert_eq!(
        unknown.to_string(),
        "%(nope)s names nothing supervisord knows"
    );
    assert!(matches!(
        expand("50%", &vars),
        Err(ExpandError::Stray { .. })
    ));
}

#[test]
fn converts_sizes_signals_and_booleans() {
    assert_eq!(byte_size("50MB").unwrap(), 50 << 20);
    assert_eq!(byte_size("1kb").unwrap(), 1024);
    assert_eq!(byte_size("123").unwrap(), 123);
    assert!(byte_size("lots").is_err());
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
    let toml = app.toml();
    assert_eq!(app.name, "shop");
    assert!(
        app.origin.ends_with("conf.d/shop.conf:1 [program:shop]"),
        "{}",
        app.origin
    );
    assert!(
        toml.contains("# note: redirect_stderr: appvisor keeps stderr apart, in stderr.log\n")
            && toml.contains("# note: no appvisor equivalent, left out: stdout_events_enabled\n"),
        "{toml}"
    );

    // The file is a valid app file, with supervisord's behaviour in it.
    let file = tmp.path().join("shop.toml");
    fs::write(&file, &toml).unwrap();
    let spec = load_app(&file, &Defaults::default()).unwrap_or_else(|e| panic!("{e}\n{toml}"));
    assert_eq!(spec.user, "shop");
    assert_eq!(
        spec.command,
        ["/usr/bin/env", "gunicorn", "--workers", "4", "shop.wsgi"].map(String::from),
        "a bare command is found in PATH, as supervisord does, and gunicorn's bind is held"
    );
    assert_eq!(spec.listen.len(), 1);
    assert_eq!(spec.listen[0].address.to_string(), "unix:/run/shop.sock");
    assert_eq!(spec.directory, Path::new("/srv/shop/current"));
    assert_eq!(spec.environment["DJANGO_SETTINGS_MODULE"], "shop.settings");
    assert_eq!(
        spec.environment["STAGE"], "dev",
        "%(ENV_STAGE)s reads [supervisord]'s environment first, as supervisord does"
    );
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
    let toml = &import.apps[0].toml();
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
            format!("{file}:6 [program:quote]: command: no closing quotation in \"/bin/echo 'open\""),
            format!("{file}:12 [eventlistener:mem]: not imported: appvisor runs no eventlistener sections, only programs"),
        ]
    );
    let names: Vec<&str> = import.apps.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(
        names,
        ["caps", "good"],
        "the good programs are still imported"
    );
    assert!(import.apps[0]
        .notes
        .contains(&"named caps: supervisord called it Caps".to_owned()));

    let (_tmp, import) = run(&[("broken.conf", "[program:x]\nnot an option\n")]);
    assert_eq!(import.problems.len(), 1);
    assert!(import.problems[0]
        .to_string()
        .ends_with("broken.conf:2: expected NAME = VALUE, found \"not an option\""));
}

#[test]
fn numprocs_groups_and_supervisord_settings_come_through() {
    let (tmp, import) = run(&[
        (
            "etc/supervisord.conf",
            "[supervisord]\nuser=olympia\numask=027\ndirectory=/srv/olympia\n\
             environment=PATH=\"/usr/bin:/bin\"\n\
             [include]\nfiles = conf.d/*.conf missing/*.conf\n",
        ),
        (
            "etc/conf.d/celery.conf",
            "[program:worker]\n\
             command=/srv/venv/bin/celery -A proj worker -n w%(process_num)d@%(host_node_name)s\n\
             process_name=%(program_name)s_%(process_num)02d\n\
             numprocs=3\nnumprocs_start=1\npriority=5\n\
             environment=SLOT=\"%(process_num)d\",CONF=\"%(here)s/celery.py\"\n\
             [program:beat]\ncommand=nice -n 5 /srv/venv/bin/celery -A proj beat\n\
             [group:celery]\nprograms=worker,beat\n\
             [include]\nfiles=nested/*.conf\n",
        ),
    ]);
    let conf_d = std::path::absolute(tmp.path().join("etc/conf.d")).unwrap();
    let names: Vec<&str> = import.apps.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["worker_01", "worker_02", "worker_03", "beat"]);
    let w2 = &import.apps[1];
    assert_eq!(w2.app_groups, ["celery", "worker"]);
    assert_eq!(import.apps[3].app_groups, ["celery"]);
    assert_eq!(
        w2.user, "olympia",
        "[supervisord] user runs what names none"
    );
    assert_eq!(w2.umask.as_deref(), Some("0027"));
    assert_eq!(w2.directory, "/srv/olympia");
    assert_eq!(w2.command[5], "w2@web1");
    assert_eq!(
        w2.environment,
        [
            ("PATH".to_owned(), "/usr/bin:/bin".to_owned()),
            ("SLOT".to_owned(), "2".to_owned()),
            ("CONF".to_owned(), format!("{}/celery.py", conf_d.display())),
        ],
        "%(here)s is the included file's absolute directory"
    );
    assert!(
        w2.notes.iter().any(|n| n.starts_with("priority = 5")),
        "{:?}",
        w2.notes
    );
    let beat = &import.apps[3];
    assert_eq!(beat.command[..3], ["/usr/bin/nice", "-n", "5"]);
    assert_eq!(
        beat.venv.as_deref(),
        Some("/srv/venv"),
        "a wrapper gets the venv"
    );
    let warned: Vec<String> = import.warnings.iter().map(|w| w.message.clone()).collect();
    assert_eq!(warned.len(), 2, "{warned:?}");
    assert!(warned[0].starts_with("no file matches ") && warned[0].ends_with("missing/*.conf"));
    assert!(warned[1].starts_with("ignored, as supervisord ignores"));
    assert_eq!(import.problems, []);
}

#[test]
fn uwsgi_through_a_wrapper_stops_with_int_and_nodaemon_keeps_no_umask() {
    let (_tmp, import) = run(&[(
        "supervisord.conf",
        "[supervisord]\nnodaemon=true\numask=077\n\
         [program:web]\nuser=www\ndirectory=/srv/web\n\
         command=/bin/sh -c \"exec /srv/venv/bin/uwsgi --http :8000 --module app\"\n",
    )]);
    let web = &import.apps[0];
    assert_eq!(web.stop_signal, "INT");
    assert_eq!(web.umask.as_deref(), Some("0022"));
    assert_eq!(web.venv.as_deref(), Some("/srv/venv"));
    assert_eq!(web.bind_ports, [8000]);
    assert!(
        web.notes
            .iter()
            .any(|n| n.contains("umask = 077 was not used")),
        "{:?}",
        web.notes
    );
}

/// The hook that makes TERM a graceful stop for uWSGI keeps supervisord's
/// TERM, the right signal then.
#[test]
fn uwsgi_with_the_graceful_term_hook_keeps_term() {
    let (_tmp, import) = run(&[(
        "supervisord.conf",
        "[program:web]\nuser=www\ndirectory=/srv/web\n\
         command=/srv/venv/bin/uwsgi --http :8000 --module app \
         --hook-master-start \"unix_signal:15 gracefully_kill_them_all\"\n",
    )]);
    let web = &import.apps[0];
    assert_eq!(web.stop_signal, "TERM", "{:?}", web.command);
}

#[test]
fn servers_config_files_are_read_for_their_binds() {
    let (tmp, import) = run(&[
        (
            "supervisord.conf",
            "[program:web]\nuser=app\ndirectory=%(here)s/src\n\
             command=/srv/venv/bin/gunicorn app.wsgi -c conf/gunicorn.py\n\
             [program:plain]\nuser=app\ndirectory=%(here)s/src\n\
             command=/srv/venv/bin/gunicorn app.wsgi\n\
             [program:api]\nuser=app\ndirectory=%(here)s\n\
             command=/srv/venv/bin/uwsgi --ini %(here)s/uwsgi.ini\n",
        ),
        (
            "src/conf/gunicorn.py",
            "workers = 2\nbind = \"127.0.0.1:8001\"\n",
        ),
        // gunicorn reads ./gunicorn.conf.py by itself.
        ("src/gunicorn.conf.py", "bind = ['unix:/run/app.sock']\n"),
        ("uwsgi.ini", "[uwsgi]\nhttp-socket = :8002\nmaster = true\n"),
    ]);
    assert_eq!(import.problems, []);
    let dir = std::path::absolute(tmp.path()).unwrap();
    let [web, plain, api] = &import.apps[..] else {
        panic!("{:?}", import.apps);
    };
    assert_eq!(web.listen, ["127.0.0.1:8001"], "{:?}", web.notes);
    assert_eq!(web.readiness, "notify");
    assert!(
        web.notes.iter().any(|n| n.starts_with(&format!(
            "bind = 127.0.0.1:8001 is in {}/src/conf/gunicorn.py",
            dir.display()
        ))),
        "{:?}",
        web.notes
    );
    assert_eq!(plain.listen, ["unix:/run/app.sock"], "{:?}", plain.notes);
    assert!(api.listen.is_empty());
    assert_eq!(api.bind_ports, [8002], "{:?}", api.notes);
}
