//! `appctl import-supervisord`, checked against supervisord itself: the
//! same config is read by supervisord 4's own parser (from the test venv,
//! where `.ci/run` installs it) and by `appctl`, and what each says the
//! program is must agree; then the imported file runs under appvisord.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use appvisor_tests::daemon::describe_output;
use appvisor_tests::{
    bins, require_root, Daemon, DaemonOptions, Prefix, ProcStatus, State, TestUser,
};

/// What supervisord made of every program, as JSON, from its own parser.
const SUPERVISORD_SAYS: &str = r#"
import json, shlex, signal, sys
from supervisor.options import ServerOptions
o = ServerOptions()
o.configfile = sys.argv[1]
o.process_config(do_usage=False)
out = {}
for g in o.process_group_configs:
    for p in g.process_configs:
        out[p.name] = dict(
            command=shlex.split(p.command), directory=p.directory,
            environment=p.environment or {}, uid=p.uid,
            autorestart={"RestartUnconditionally": "always",
                         "RestartWhenExitUnexpected": "on-failure"}.get(
                getattr(p.autorestart, "__name__", ""), "never"),
            startsecs=p.startsecs, startretries=p.startretries,
            stopsignal=signal.Signals(p.stopsignal).name[3:], stopwaitsecs=p.stopwaitsecs,
            umask=p.umask, maxbytes=p.stdout_logfile_maxbytes,
            backups=p.stdout_logfile_backups, autostart=p.autostart)
print(json.dumps(out))
"#;

#[test]
fn imported_programs_mean_what_they_meant_to_supervisord_and_run() {
    require_root!();
    let python = bins::venv().join("bin/python");
    let has_supervisor = Command::new(&python)
        .args(["-c", "import supervisor"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        has_supervisor,
        "supervisor is not installed in the test venv: run .ci/run, or {} -m pip install supervisor",
        python.display()
    );
    let user = TestUser::ensure("avt-app4");
    let prefix = Prefix::new();
    let code = prefix.code_dir("shop", &user);
    let main = prefix.write(
        "supervisor/supervisord.conf",
        &format!(
            "[supervisord]\nlogfile={}/supervisord.log ; not used\n\n\
             [include]\nfiles = conf.d/*.conf\n",
            prefix.path().display()
        ),
    );
    prefix.write(
        "supervisor/conf.d/shop.conf",
        &format!(
            "[program:shop]\n\
             command = {python} -c \"import os, sys, time; print(os.environ['GREETING'], sys.argv[1:], flush=True); time.sleep(100000)\"\n\
             \x20   %(program_name)s 'two words'   ; continued, with a comment\n\
             directory = {code}\n\
             user = {user}\n\
             environment = GREETING=\"hello, world\",FROM=%(here)s,HOME_WAS=%(ENV_HOME)s\n\
             autorestart = true\n\
             startsecs = 1\n\
             startretries = 5\n\
             stopsignal = INT\n\
             stopwaitsecs = 7\n\
             umask = 027\n\
             stdout_logfile_maxbytes = 10MB\n\
             stdout_logfile_backups = 2\n\
             priority = 10\n\
             \n\
             [program:cron]\n\
             command = /bin/sleep 100000\n\
             user = {user}\n\
             directory = /\n\
             autostart = false\n\
             autorestart = unexpected\n\
             stopsignal = TERM\n",
            python = bins::SYSTEM_PYTHON,
            code = code.display(),
            user = user.name,
        ),
    );

    let out = Command::new(&python)
        .args(["-c", SUPERVISORD_SAYS])
        .arg(&main)
        .output()
        .expect("running supervisord's parser");
    assert!(out.status.success(), "{}", describe_output(&out));
    let supervisord: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(&out.stdout).expect("JSON from the parser");
    assert_eq!(supervisord.keys().collect::<Vec<_>>(), ["cron", "shop"]);

    let imported = prefix.path().join("imported");
    std::fs::create_dir(&imported).expect("creating the output dir");
    let out = Command::new(bins::appctl())
        .arg("import-supervisord")
        .arg("--out")
        .arg(&imported)
        .arg(&main)
        .output()
        .expect("running appctl import-supervisord");
    assert_eq!(out.status.code(), Some(0), "{}", describe_output(&out));

    for (name, theirs) in &supervisord {
        let text = std::fs::read_to_string(imported.join(format!("{name}.toml")))
            .unwrap_or_else(|e| panic!("{name}.toml: {e}"));
        let ours: toml::Table = text.parse().unwrap_or_else(|e| panic!("{e}\n{text}"));
        let say = |what: &str| format!("{name}: {what}\n{text}");
        let str_of = |v: &toml::Value| v.as_str().unwrap_or_default().to_owned();
        assert_eq!(
            ours["command"]
                .as_array()
                .expect("command array")
                .iter()
                .map(str_of)
                .collect::<Vec<_>>(),
            theirs["command"]
                .as_array()
                .expect("command")
                .iter()
                .map(|v| v.as_str().expect("word").to_owned())
                .collect::<Vec<_>>(),
            "{}",
            say("command")
        );
        assert_eq!(
            str_of(&ours["directory"]),
            theirs["directory"],
            "{}",
            say("directory")
        );
        let env: BTreeMap<String, String> = ours
            .get("environment")
            .and_then(toml::Value::as_table)
            .map(|t| t.iter().map(|(k, v)| (k.clone(), str_of(v))).collect())
            .unwrap_or_default();
        let their_env: BTreeMap<String, String> =
            serde_json::from_value(theirs["environment"].clone()).expect("environment");
        assert_eq!(env, their_env, "{}", say("environment"));
        assert_eq!(
            Some(u64::from(user.uid)),
            theirs["uid"].as_u64(),
            "{}",
            say("user")
        );
        assert_eq!(str_of(&ours["user"]), user.name, "{}", say("user"));
        assert_eq!(
            ours["autostart"].as_bool(),
            theirs["autostart"].as_bool(),
            "{}",
            say("autostart")
        );
        let restart = ours["restart"].as_table().expect("[restart]");
        assert_eq!(
            str_of(&restart["policy"]),
            theirs["autorestart"],
            "{}",
            say("policy")
        );
        assert_eq!(
            str_of(&restart["start_secs"]),
            format!("{}s", theirs["startsecs"]),
            "{}",
            say("start_secs")
        );
        assert_eq!(
            restart["max_retries"].as_integer(),
            theirs["startretries"].as_i64().map(|n| n + 1),
            "{}",
            say("startretries N is N + 1 failed starts")
        );
        let stop = ours["stop"].as_table().expect("[stop]");
        assert_eq!(
            str_of(&stop["signal"]),
            theirs["stopsignal"],
            "{}",
            say("signal")
        );
        assert_eq!(
            str_of(&stop["timeout"]),
            format!("{}s", theirs["stopwaitsecs"]),
            "{}",
            say("stop timeout")
        );
        if let Some(umask) = theirs["umask"].as_u64() {
            assert_eq!(
                ours.get("umask").map(str_of),
                Some(format!("{umask:04o}")),
                "{}",
                say("umask")
            );
        }
        let logs = ours["logs"].as_table().expect("[logs]");
        let max_size = str_of(&logs["max_size"]);
        let mib = theirs["maxbytes"].as_u64().expect("maxbytes") >> 20;
        assert_eq!(max_size, format!("{mib}MiB"), "{}", say("max_size"));
        assert_eq!(
            logs["keep"].as_integer(),
            theirs["backups"].as_i64(),
            "{}",
            say("keep")
        );
    }

    // The imported files validate, and run as supervisord ran them.
    for name in ["shop", "cron"] {
        std::fs::copy(imported.join(format!("{name}.toml")), prefix.app_file(name))
            .expect("copying into apps.d");
    }
    let daemon = Daemon::start(&prefix, DaemonOptions::default());
    let out = Command::new(bins::appctl())
        .arg("check")
        .arg("--config")
        .arg(prefix.config_path())
        .output()
        .expect("running appctl check");
    assert_eq!(out.status.code(), Some(0), "{}", describe_output(&out));
    let shop = daemon.wait_for_state("shop", State::Running, Duration::from_secs(20));
    let proc = ProcStatus::read(shop.pid.expect("pid")).expect("the app's process");
    assert_eq!(proc.uid, [user.uid; 4]);
    daemon.wait_until(Duration::from_secs(10), "the app's greeting", || {
        daemon
            .app_logs("shop", 5, false)
            .contains("hello, world ['shop', 'two words']")
    });
    assert_eq!(
        daemon.app("cron").state,
        State::Stopped,
        "autostart = false"
    );
}

#[test]
fn import_says_what_it_could_not_import_and_exits_2() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let conf = tmp.path().join("supervisord.conf");
    std::fs::write(&conf, "[program:web]\ncommand=/bin/true\n").expect("writing the config");
    let out = Command::new(bins::appctl())
        .arg("import-supervisord")
        .arg(&conf)
        .output()
        .expect("running appctl");
    assert_eq!(out.status.code(), Some(2), "{}", describe_output(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "appctl: {}:1 [program:web]: no user (or root): supervisord would run it as root, \
             which appvisor never does; add user = NAME to the section and import again\n",
            conf.display()
        )
    );
    assert!(out.stdout.is_empty());
}
