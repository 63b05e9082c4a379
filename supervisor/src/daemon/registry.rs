//! The registry of apps: who may reach an app, decided under one look at
//! it ([`authorize`], which returns the version decided on), everything
//! done to an app after that only while it still holds that version
//! ([`with_current`]), and what the control and status servers read.

use std::collections::BTreeMap;
use std::sync::{Arc, MutexGuard, RwLock};
use std::time::Instant;

use appvisor_protocol::status_json::StatusNow;
use appvisor_protocol::{AppStatus, State};

use crate::acl::{self, AdminRules, Operation, Peer};
use crate::audit::Events;
use crate::config::resolve::ResolvedApp;
use crate::config::AccessSpec;
use crate::control::{ActError, Denied};
use crate::locks;
use crate::logs::AppLogs;
use crate::supervise;

use super::{fds, plural, AppChannels, Daemon, Entry};

/// Every app of `apps.d` the daemon knows, by name.
pub(super) type Apps = BTreeMap<String, Entry>;

impl Daemon {
    pub fn events(&self) -> &Events {
        &self.shared.events
    }

    pub fn admin_rules(&self) -> AdminRules {
        let config = locks::read(&self.config);
        AdminRules {
            users: config.spec.control.admin_users.clone(),
            groups: config.spec.control.admin_groups.clone(),
        }
    }

    /// Whether `peer` may do `op` to app `name`; if so, the version of
    /// the app that allowed it ([`authorize`]).
    pub fn authorize(&self, peer: &Peer, name: &str, op: Operation) -> Result<AppRef, Denied> {
        authorize(&self.apps, peer, &self.admin_rules(), name, op)
    }

    /// Names of the apps `peer` may operate.
    pub fn visible_apps(&self, peer: &Peer) -> Vec<String> {
        let rules = self.admin_rules();
        let apps = locks::read(&self.apps);
        apps.iter()
            .filter(|(_, entry)| may_view(peer, &rules, entry))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Status of every app `peer` may see, from one look at the registry,
    /// appended to `out` as the JSON array of `GET /v1/apps`: each app's
    /// status as its task rendered it when it changed, with the uptime and
    /// what the registry and the logs hold filled in.
    pub fn write_statuses(&self, peer: &Peer, out: &mut Vec<u8>) {
        let rules = self.admin_rules();
        let apps = locks::read(&self.apps);
        let visible: Vec<_> = apps
            .iter()
            .filter(|(_, entry)| may_view(peer, &rules, entry))
            .collect();
        // About 330 bytes a status, more with a long reason or errors:
        // one allocation for most answers.
        out.reserve(2 + visible.len() * STATUS_JSON_ESTIMATE);
        out.push(b'[');
        let now = Instant::now();
        for (i, (name, entry)) in visible.into_iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_entry_status(name, entry, now, out);
        }
        out.push(b']');
    }

    /// Status of an authorized app, if it is still the version authorized.
    pub fn status(&self, app: &AppRef) -> Option<AppStatus> {
        with_current(&self.apps, app, |entry| entry_status(&app.name, entry)).ok()
    }

    /// What confines an authorized app, if it is still the version
    /// authorized and has a task.
    pub fn security(&self, app: &AppRef) -> Option<appvisor_protocol::AppSecurity> {
        with_current(&self.apps, app, |entry| {
            let handle = entry.handle.as_ref()?;
            let snapshot = handle.snapshot.borrow();
            Some(crate::supervise::security(&snapshot, &self.shared))
        })
        .ok()
        .flatten()
    }

    /// An authorized app's output, if it is still the version authorized
    /// and has a task.
    pub fn logs(&self, app: &AppRef) -> Option<Arc<AppLogs>> {
        with_current(&self.apps, app, |entry| {
            entry.handle.as_ref().map(|h| h.logs.clone())
        })
        .ok()
        .flatten()
    }

    /// The channels to an authorized app's task, or why there is none.
    pub(super) fn channels(&self, app: &AppRef) -> Result<AppChannels, ActError> {
        with_current(&self.apps, app, |entry| channels(&app.name, entry))?
    }

    /// What an admin should know about the daemon (`AppList::notices`).
    pub fn notices(&self, peer: &Peer) -> Vec<String> {
        if !acl::is_admin(peer, &self.admin_rules()) {
            return Vec::new();
        }
        let ignored = locks::read(&self.ignored);
        let refused = self.refused_apps();
        let refused = (!refused.is_empty()).then(|| {
            format!(
                "{} not started for want of open files (appvisord's limit is {}): {}",
                plural(refused.len(), "app"),
                self.fds().limit(),
                refused.join(", ")
            )
        });
        self.intents
            .notices()
            .into_iter()
            .chain(
                ignored
                    .iter()
                    .map(|i| format!("{} is ignored: {}", i.file, i.reason)),
            )
            .chain(refused)
            .collect()
    }

    /// Valid apps without a task: no room in the open-file limit.
    fn refused_apps(&self) -> Vec<String> {
        let apps = locks::read(&self.apps);
        apps.iter()
            .filter(|(_, entry)| entry.handle.is_none() && entry.refused.is_some())
            .map(|(name, _)| name.clone())
            .collect()
    }

    pub(super) fn fds(&self) -> MutexGuard<'_, fds::FdBudget> {
        locks::lock(&self.fds)
    }
}

impl crate::status::StatusSource for Daemon {
    fn apps(&self) -> Vec<crate::status::AppSample> {
        let apps = locks::read(&self.apps);
        apps.iter()
            .map(|(name, entry)| crate::status::AppSample {
                status: entry_status(name, entry),
                readiness_failures: entry
                    .handle
                    .as_ref()
                    .map_or(0, |h| h.snapshot.borrow().readiness_failures),
                start_time: entry
                    .handle
                    .as_ref()
                    .and_then(|h| h.snapshot.borrow().start_time()),
                memory_limit: entry.app.as_ref().and_then(|a| a.spec.limits.memory),
                cgroup: self
                    .shared
                    .cgroups
                    .as_ref()
                    .map(|root| root.dir().join(name)),
                exposure: entry
                    .handle
                    .as_ref()
                    .map(|h| h.snapshot.borrow().exposure(&self.shared)),
            })
            .collect()
    }

    fn control_requests(&self) -> Vec<(crate::audit::RequestKey, u64)> {
        self.events().control_requests()
    }
}

/// An app a request was let reach: its name and the version whose
/// `[access]` allowed the request (`None`: an app known only as an invalid
/// file, which only admins reach).
#[derive(Debug, Clone)]
pub struct AppRef {
    name: String,
    version: Option<Arc<ResolvedApp>>,
}

impl AppRef {
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Decides, under one look at `apps`, whether `peer` may do `op` to app
/// `name`, and returns the version of the app that decided it. An app
/// that does not exist is hidden, from admins too.
pub(super) fn authorize(
    apps: &RwLock<Apps>,
    peer: &Peer,
    rules: &AdminRules,
    name: &str,
    op: Operation,
) -> Result<AppRef, Denied> {
    let apps = locks::read(apps);
    let entry = apps.get(name).ok_or(Denied::Hidden)?;
    Denied::check(acl::decide(peer, rules, op, Some(access(entry))))?;
    Ok(AppRef {
        name: name.to_owned(),
        version: entry.app.clone(),
    })
}

/// `f` of `app`'s entry, under the registry's lock, if the entry still
/// holds the version access was decided on (the same settings, `[access]`
/// included); else the app changed or went away since the check, and
/// nothing is done.
pub(super) fn with_current<R>(
    apps: &RwLock<Apps>,
    app: &AppRef,
    f: impl FnOnce(&Entry) -> R,
) -> Result<R, ActError> {
    let apps = locks::read(apps);
    match apps.get(&app.name) {
        Some(entry) if same_version(&entry.app, &app.version) => Ok(f(entry)),
        _ => Err(ActError::Changed {
            app: app.name.clone(),
        }),
    }
}

/// [`with_current`] with the entry to change.
pub(super) fn with_current_mut<R>(
    apps: &RwLock<Apps>,
    app: &AppRef,
    f: impl FnOnce(&mut Entry) -> R,
) -> Result<R, ActError> {
    let mut apps = locks::write(apps);
    match apps.get_mut(&app.name) {
        Some(entry) if same_version(&entry.app, &app.version) => Ok(f(entry)),
        _ => Err(ActError::Changed {
            app: app.name.clone(),
        }),
    }
}

fn same_version(now: &Option<Arc<ResolvedApp>>, decided: &Option<Arc<ResolvedApp>>) -> bool {
    match (now, decided) {
        (Some(now), Some(decided)) => Arc::ptr_eq(now, decided) || now == decided,
        (None, None) => true,
        _ => false,
    }
}

/// The channels to `entry`'s task, or why there is none.
fn channels(name: &str, entry: &Entry) -> Result<AppChannels, ActError> {
    match &entry.handle {
        Some(h) => Ok(AppChannels {
            commands: h.commands.clone(),
            snapshot: h.snapshot.clone(),
            logs: h.logs.clone(),
        }),
        None if entry.refused.is_some() => Err(ActError::NotStarted {
            app: name.to_owned(),
            why: entry
                .refused
                .clone()
                .unwrap_or_else(|| "not started".to_owned()),
        }),
        None => Err(ActError::Invalid {
            app: name.to_owned(),
            errors: entry
                .error
                .as_deref()
                .unwrap_or("invalid")
                .replace('\n', "; "),
            file: entry.file.clone(),
        }),
    }
}

/// The `[access]` of `entry`'s app (an app known only as an invalid file
/// has none, so only admins reach it).
fn access(entry: &Entry) -> &AccessSpec {
    static NO_ACCESS: std::sync::LazyLock<AccessSpec> =
        std::sync::LazyLock::new(AccessSpec::default);
    entry.app.as_ref().map_or(&*NO_ACCESS, |a| &a.spec.access)
}

/// Whether `peer` may see the app of `entry`.
fn may_view(peer: &Peer, rules: &AdminRules, entry: &Entry) -> bool {
    acl::decide(peer, rules, Operation::View, Some(access(entry))) == acl::Decision::Allow
}

/// Bytes reserved for each status of `GET /v1/apps`.
const STATUS_JSON_ESTIMATE: usize = 512;

/// [`entry_status`] as of `now` as JSON, appended to `out`: from the
/// rendering its task keeps, where it has a task.
fn write_entry_status(name: &str, entry: &Entry, now: Instant, out: &mut Vec<u8>) {
    match &entry.handle {
        Some(handle) => {
            let logs = handle.logs.health();
            let snapshot = handle.snapshot.borrow();
            snapshot.json().write(
                out,
                StatusNow {
                    uptime_secs: snapshot.uptime_secs_at(now),
                    config_error: entry.error.as_deref(),
                    log_error: logs.error.as_deref(),
                    log_dropped_bytes: logs.dropped_bytes,
                },
            );
        }
        None => serde_json::to_writer(out, &entry_status(name, entry))
            .expect("protocol types serialize"),
    }
}

fn entry_status(name: &str, entry: &Entry) -> AppStatus {
    match &entry.handle {
        Some(handle) => {
            let mut status = handle.snapshot.borrow().status_now();
            status.config_error = entry.error.clone();
            let logs = handle.logs.health();
            status.log_error = logs.error;
            status.log_dropped_bytes = logs.dropped_bytes;
            status
        }
        None if entry.refused.is_some() => {
            let app = entry.app.as_ref().map(|app| (&app.spec, &app.user_name));
            AppStatus {
                since: entry.since,
                description: app.map(|(s, _)| s.description.clone()).unwrap_or_default(),
                user: app.map(|(_, u)| (*u).clone()).unwrap_or_default(),
                directory: app
                    .map(|(s, _)| s.directory.display().to_string())
                    .unwrap_or_default(),
                config_error: entry.error.clone(),
                // A manual start tries again, as for any fatal app.
                ..supervise::bare_status(
                    name,
                    State::Fatal,
                    entry.refused.clone().unwrap_or_default(),
                )
            }
        }
        None => AppStatus {
            since: entry.since,
            // The reason says it all: there is no last valid version.
            ..supervise::bare_status(
                name,
                State::Invalid,
                entry
                    .error
                    .clone()
                    .unwrap_or_else(|| "invalid".to_owned())
                    .replace('\n', "; "),
            )
        },
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::config::test_spec::{app_spec, resolved_app};

    /// Version `command` of app `shop`, operated by `operator`.
    fn shop(command: &str, operator: &str) -> Arc<ResolvedApp> {
        let mut spec = app_spec("shop", &["/srv/shop/venv/bin/gunicorn", command]);
        spec.access.users = vec![operator.to_owned()];
        Arc::new(resolved_app(spec))
    }

    /// `app` as the registry holds it: valid, without a task (no room in
    /// the open-file limit), so no runtime is needed.
    fn entry(app: Option<Arc<ResolvedApp>>) -> Entry {
        Entry {
            file: PathBuf::from("/etc/appvisor/apps.d/shop.toml"),
            refused: app.as_ref().map(|_| "not started: no room".to_owned()),
            error: app.is_none().then(|| "line 1: broken".to_owned()),
            app,
            handle: None,
            since: 0,
        }
    }

    fn registry(app: Option<Arc<ResolvedApp>>) -> RwLock<Apps> {
        RwLock::new(BTreeMap::from([("shop".to_owned(), entry(app))]))
    }

    fn peer(uid: u32, user: &str) -> Peer {
        Peer {
            uid,
            pid: None,
            user: user.to_owned(),
            groups: Vec::new(),
        }
    }

    fn replace(apps: &RwLock<Apps>, app: Option<Arc<ResolvedApp>>) {
        apps.write().unwrap().get_mut("shop").unwrap().app = app;
    }

    #[test]
    fn an_app_replaced_after_the_check_is_not_reached_on_the_strength_of_it() {
        let apps = registry(Some(shop("shop.wsgi", "alice")));
        let rules = AdminRules::default();
        let alice = peer(1002, "alice");
        let checked = authorize(&apps, &alice, &rules, "shop", Operation::Act).unwrap();
        // An update gives shop to bob between the check and the act.
        replace(&apps, Some(shop("shop.wsgi", "bob")));
        let changed = Err(ActError::Changed { app: "shop".into() });
        assert_eq!(with_current(&apps, &checked, |_| ()), changed);
        assert_eq!(with_current_mut(&apps, &checked, |_| ()), changed);
        // Asked again, alice is refused.
        assert_eq!(
            authorize(&apps, &alice, &rules, "shop", Operation::Act).unwrap_err(),
            Denied::Hidden
        );
    }

    #[test]
    fn an_app_removed_or_turned_invalid_after_the_check_is_not_reached() {
        let rules = AdminRules::default();
        let alice = peer(1002, "alice");
        let changed = Err(ActError::Changed { app: "shop".into() });

        let apps = registry(Some(shop("shop.wsgi", "alice")));
        let checked = authorize(&apps, &alice, &rules, "shop", Operation::Act).unwrap();
        apps.write().unwrap().remove("shop");
        assert_eq!(with_current(&apps, &checked, |_| ()), changed);

        // Removed and added again by another file, invalid this time.
        apps.write().unwrap().insert("shop".to_owned(), entry(None));
        assert_eq!(with_current(&apps, &checked, |_| ()), changed);
    }

    #[test]
    fn the_same_settings_read_again_are_the_version_checked() {
        let apps = registry(Some(shop("shop.wsgi", "alice")));
        let checked = authorize(
            &apps,
            &peer(1002, "alice"),
            &AdminRules::default(),
            "shop",
            Operation::Act,
        )
        .unwrap();
        // An update that read the same file again: a new Arc, equal.
        replace(&apps, Some(shop("shop.wsgi", "alice")));
        assert_eq!(
            with_current(&apps, &checked, |e| e.refused.is_some()),
            Ok(true)
        );
        // A change a new process needs is another version.
        replace(&apps, Some(shop("shop.wsgi:app", "alice")));
        assert!(with_current(&apps, &checked, |_| ()).is_err());
    }

    #[test]
    fn who_may_reach_an_app_and_an_invalid_file() {
        let rules = AdminRules::default();
        let root = peer(0, "root");
        let alice = peer(1002, "alice");
        let mallory = peer(1004, "mallory");
        let valid = registry(Some(shop("shop.wsgi", "alice")));
        let invalid = registry(None);
        // (registry, peer, operation, allowed)
        let cases = [
            (&valid, &root, Operation::Act, true),
            (&valid, &alice, Operation::Act, true),
            (&valid, &alice, Operation::View, true),
            (&valid, &mallory, Operation::View, false),
            (&invalid, &root, Operation::View, true),
            (&invalid, &alice, Operation::View, false),
        ];
        for (apps, peer, op, allowed) in cases {
            let got = authorize(apps, peer, &rules, "shop", op);
            assert_eq!(got.is_ok(), allowed, "{} {op:?}", peer.user);
            if !allowed {
                assert_eq!(got.unwrap_err(), Denied::Hidden);
            }
        }
        // No such app: hidden from admins too.
        assert_eq!(
            authorize(&valid, &root, &rules, "blog", Operation::View).unwrap_err(),
            Denied::Hidden
        );
    }
}
