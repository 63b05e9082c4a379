//! What a new version of an app's file asks of the running app: nothing,
//! settings it adopts in place, or a new process. Pure: a function of the
//! old and the new settings.
//!
//! In place (the daemon reads them while the app runs, and no process was
//! started with them): `description`, `app_groups` (appctl's selection),
//! `autostart` (read when the app is loaded), `[access]` (every control
//! request), `[logs]` (the next write rotates by the new size and keeps
//! the new count), `[restart]` (the next exit's decision and the next
//! restart's strategy), `[stop]` (the next stop or reload, the running
//! instance included) and `readiness.timeout` (the next start). The file's
//! path names it in messages only. Everything else went into the running
//! process (its command, environment, identity, sockets, sandbox, limits,
//! readiness protocol) and needs a new one.

use super::resolve::ResolvedApp;
use super::spec::{AppSpec, ReadinessSpec};

/// How an app's settings changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The settings that differ, by key, in the order of DESIGN.md's
    /// example file.
    pub keys: Vec<&'static str>,
    /// A new process is needed: an app that is up restarts.
    pub restart: bool,
    /// An app that is not up should start (unless someone stopped it by
    /// hand): the new file has `autostart`, and either the change needs a
    /// new process anyway (as a new file would start) or it turned
    /// `autostart` on.
    pub start: bool,
}

/// What `new` asks of an app running `old`; `None` when nothing differs.
pub fn change(old: &AppSpec, new: &AppSpec) -> Option<Change> {
    // Every field named, so a new one cannot be left undecided.
    let AppSpec {
        name: _,
        file: old_file,
        description,
        app_groups,
        user,
        group,
        command,
        directory,
        venv,
        environment,
        env_files,
        umask,
        autostart,
        listen,
        readiness,
        restart,
        stop,
        logs,
        access,
        sandbox,
        limits,
    } = old;
    let ReadinessSpec {
        kind,
        timeout,
        probe,
    } = readiness;
    let in_place = [
        ("file", *old_file != new.file),
        ("description", *description != new.description),
        ("app_groups", *app_groups != new.app_groups),
        ("autostart", *autostart != new.autostart),
        ("readiness.timeout", *timeout != new.readiness.timeout),
        ("restart", *restart != new.restart),
        ("stop", *stop != new.stop),
        ("logs", *logs != new.logs),
        ("access", *access != new.access),
    ];
    let new_process = [
        ("user", *user != new.user),
        ("group", *group != new.group),
        ("command", *command != new.command),
        ("directory", *directory != new.directory),
        ("venv", *venv != new.venv),
        ("environment", *environment != new.environment),
        ("env_files", *env_files != new.env_files),
        ("umask", *umask != new.umask),
        ("listen", *listen != new.listen),
        ("readiness.kind", *kind != new.readiness.kind),
        ("readiness.probe", *probe != new.readiness.probe),
        ("sandbox", *sandbox != new.sandbox),
        ("limits", *limits != new.limits),
    ];
    let restart = new_process.iter().any(|(_, differs)| *differs);
    let mut keys: Vec<&'static str> = new_process
        .into_iter()
        .chain(in_place)
        .filter(|(_, differs)| *differs)
        .map(|(key, _)| key)
        .collect();
    if keys.is_empty() {
        return None;
    }
    keys.sort_by_key(|key| ORDER.iter().position(|k| k == key));
    Some(Change {
        keys,
        restart,
        start: new.autostart && (restart || !autostart),
    })
}

/// [`change`], and a new process when the user's identity in the user
/// database changed (uid, groups, home or shell), which the running
/// process was started with.
pub fn resolved_change(old: &ResolvedApp, new: &ResolvedApp) -> Option<Change> {
    let identity = (old.uid, old.gid, &old.groups, &old.home, &old.shell)
        != (new.uid, new.gid, &new.groups, &new.home, &new.shell);
    match (change(&old.spec, &new.spec), identity) {
        (change, false) => change,
        (Some(mut change), true) => {
            if !change.keys.contains(&"user") {
                change.keys.push("user");
                change
                    .keys
                    .sort_by_key(|key| ORDER.iter().position(|k| k == key));
            }
            change.start = new.spec.autostart;
            change.restart = true;
            Some(change)
        }
        (None, true) => Some(Change {
            keys: vec!["user"],
            restart: true,
            start: new.spec.autostart,
        }),
    }
}

/// DESIGN.md's order of an app file's keys, for messages.
const ORDER: [&str; 22] = [
    "file",
    "description",
    "app_groups",
    "user",
    "group",
    "command",
    "directory",
    "venv",
    "environment",
    "env_files",
    "umask",
    "autostart",
    "listen",
    "readiness.kind",
    "readiness.probe",
    "readiness.timeout",
    "restart",
    "stop",
    "logs",
    "access",
    "sandbox",
    "limits",
];

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;
    use crate::test_spec::app_spec;
    use crate::{
        ListenAddress, ListenSpec, Probe, ReadinessKind, RestartPolicy, RestartStrategy, Signal,
    };

    fn shop() -> AppSpec {
        app_spec("shop", &["/srv/shop/venv/bin/gunicorn", "shop.wsgi"])
    }

    fn edit(f: impl FnOnce(&mut AppSpec)) -> AppSpec {
        let mut spec = shop();
        f(&mut spec);
        spec
    }

    #[test]
    fn what_needs_a_new_process_and_what_is_adopted_in_place() {
        let sigquit = Signal(nix::sys::signal::Signal::SIGQUIT);
        // (the edit, keys, restart)
        let cases: Vec<(AppSpec, &[&str], bool)> = vec![
            (
                edit(|s| s.description = "Shop".into()),
                &["description"],
                false,
            ),
            (
                edit(|s| s.app_groups = vec!["web".into()]),
                &["app_groups"],
                false,
            ),
            (
                edit(|s| s.access.users = vec!["alice".into()]),
                &["access"],
                false,
            ),
            (
                edit(|s| s.access.groups = vec!["shop-devs".into()]),
                &["access"],
                false,
            ),
            (edit(|s| s.logs.keep = 2), &["logs"], false),
            (edit(|s| s.logs.max_size = 1 << 20), &["logs"], false),
            (
                edit(|s| s.restart.policy = RestartPolicy::Always),
                &["restart"],
                false,
            ),
            (edit(|s| s.restart.max_retries = 5), &["restart"], false),
            (
                edit(|s| s.restart.strategy = RestartStrategy::StartStop),
                &["restart"],
                false,
            ),
            (edit(|s| s.stop.signal = sigquit), &["stop"], false),
            (
                edit(|s| s.stop.timeout = Duration::from_secs(5)),
                &["stop"],
                false,
            ),
            (
                edit(|s| s.readiness.timeout = Duration::from_secs(5)),
                &["readiness.timeout"],
                false,
            ),
            (edit(|s| s.autostart = false), &["autostart"], false),
            (
                edit(|s| s.file = PathBuf::from("/srv/apps.d/shop.toml")),
                &["file"],
                false,
            ),
            (
                edit(|s| s.command.push("--preload".into())),
                &["command"],
                true,
            ),
            (edit(|s| s.user = "shop2".into()), &["user"], true),
            (edit(|s| s.group = Some("web".into())), &["group"], true),
            (
                edit(|s| s.directory = "/srv/shop/releases/2".into()),
                &["directory"],
                true,
            ),
            (
                edit(|s| s.venv = Some("/srv/shop/venv".into())),
                &["venv"],
                true,
            ),
            (
                edit(|s| {
                    s.environment.insert("A".into(), "1".into());
                }),
                &["environment"],
                true,
            ),
            (
                edit(|s| s.env_files = vec!["/etc/shop.env".into()]),
                &["env_files"],
                true,
            ),
            (edit(|s| s.umask = 0o077), &["umask"], true),
            (
                edit(|s| {
                    s.listen = vec![ListenSpec {
                        address: ListenAddress::Tcp("127.0.0.1:8001".parse().unwrap()),
                        name: "shop".into(),
                    }]
                }),
                &["listen"],
                true,
            ),
            (
                edit(|s| s.readiness.kind = ReadinessKind::Notify),
                &["readiness.kind"],
                true,
            ),
            (
                edit(|s| s.readiness.probe = Some(Probe::Tcp("127.0.0.1:8001".parse().unwrap()))),
                &["readiness.probe"],
                true,
            ),
            (
                edit(|s| s.sandbox.read_write = vec!["/srv/shop/media".into()]),
                &["sandbox"],
                true,
            ),
            (edit(|s| s.limits.memory = Some(1 << 30)), &["limits"], true),
            // Several at once: a new process if any needs one; keys in file order.
            (
                edit(|s| {
                    s.access.users = vec!["alice".into()];
                    s.description = "Shop".into();
                    s.logs.keep = 2;
                }),
                &["description", "logs", "access"],
                false,
            ),
            (
                edit(|s| {
                    s.access.users = vec!["alice".into()];
                    s.command.push("--preload".into());
                }),
                &["command", "access"],
                true,
            ),
        ];
        for (new, keys, restart) in cases {
            let got = change(&shop(), &new).expect("a change");
            assert_eq!(
                (got.keys.as_slice(), got.restart),
                (keys, restart),
                "{keys:?}"
            );
        }
        assert_eq!(change(&shop(), &shop()), None);
    }

    #[test]
    fn what_starts_an_app_that_is_not_up() {
        let manual = edit(|s| s.autostart = false);
        // (old, new, start)
        let cases = [
            // A new process anyway: start it as a new file would be started.
            (shop(), edit(|s| s.command.push("-w4".into())), true),
            (
                manual.clone(),
                edit(|s| {
                    s.autostart = false;
                    s.command.push("-w4".into());
                }),
                false,
            ),
            // In place: only turning autostart on starts it.
            (manual.clone(), shop(), true),
            (shop(), manual.clone(), false),
            (shop(), edit(|s| s.description = "Shop".into()), false),
        ];
        for (i, (old, new, start)) in cases.into_iter().enumerate() {
            assert_eq!(
                change(&old, &new).expect("a change").start,
                start,
                "case {i}"
            );
        }
    }

    #[test]
    fn a_changed_identity_needs_a_new_process() {
        let resolved = |uid: u32, groups: Vec<u32>, spec: AppSpec| ResolvedApp {
            spec,
            uid,
            gid: 1001,
            groups: groups.into(),
            user_name: "shop".into(),
            home: std::path::Path::new("/srv/shop").into(),
            shell: std::path::Path::new("/bin/sh").into(),
            weaknesses: Box::default(),
        };
        let old = resolved(1001, vec![1001], shop());
        assert_eq!(resolved_change(&old, &old.clone()), None);
        let joined = resolved(1001, vec![1001, 27], shop());
        assert_eq!(
            resolved_change(&old, &joined),
            Some(Change {
                keys: vec!["user"],
                restart: true,
                start: true
            })
        );
        let both = resolved(1002, vec![1001], edit(|s| s.description = "Shop".into()));
        assert_eq!(
            resolved_change(&old, &both),
            Some(Change {
                keys: vec!["description", "user"],
                restart: true,
                start: true
            })
        );
        // What only derives from the settings (the exposure checks) is no
        // change of its own.
        let mut weaker = old.clone();
        weaker.weaknesses = crate::security::spec_weaknesses(&edit(|s| s.umask = 0)).into();
        assert_eq!(resolved_change(&old, &weaker), None);
    }
}
