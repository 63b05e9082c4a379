//! The registry of apps: what the control and status servers read of it.

use std::sync::{Arc, MutexGuard};

use appvisor_protocol::{AppStatus, State};

use crate::acl::{self, AdminRules, Operation, Peer};
use crate::audit::Events;
use crate::config::AccessSpec;
use crate::control::ActError;
use crate::logs::AppLogs;
use crate::supervise;

use super::{fds, plural, AppChannels, Daemon, Entry};

impl Daemon {
    pub fn events(&self) -> &Events {
        &self.shared.events
    }

    pub fn admin_rules(&self) -> AdminRules {
        let config = self.config.read().unwrap_or_else(|e| e.into_inner());
        AdminRules {
            users: config.spec.control.admin_users.clone(),
            groups: config.spec.control.admin_groups.clone(),
        }
    }

    /// The `[access]` of app `name`, if it exists (an app known only as an
    /// invalid file has none, so only admins see it).
    pub fn access(&self, name: &str) -> Option<AccessSpec> {
        let apps = self.apps.read().unwrap_or_else(|e| e.into_inner());
        let entry = apps.get(name)?;
        Some(
            entry
                .app
                .as_ref()
                .map(|a| a.spec.access.clone())
                .unwrap_or_default(),
        )
    }

    /// Names of the apps `peer` may operate.
    pub fn visible_apps(&self, peer: &Peer) -> Vec<String> {
        let rules = self.admin_rules();
        let apps = self.apps.read().unwrap_or_else(|e| e.into_inner());
        apps.iter()
            .filter(|(_, entry)| may_view(peer, &rules, entry))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Status of every app `peer` may see, from one look at the registry.
    pub fn statuses(&self, peer: &Peer) -> Vec<AppStatus> {
        let rules = self.admin_rules();
        let apps = self.apps.read().unwrap_or_else(|e| e.into_inner());
        apps.iter()
            .filter(|(_, entry)| may_view(peer, &rules, entry))
            .map(|(name, entry)| entry_status(name, entry))
            .collect()
    }

    /// Status of one app, whoever asks (the caller checks access).
    pub fn status(&self, name: &str) -> Option<AppStatus> {
        let apps = self.apps.read().unwrap_or_else(|e| e.into_inner());
        let entry = apps.get(name)?;
        Some(entry_status(name, entry))
    }

    /// What confines app `name`, whoever asks (the caller checks access).
    pub fn security(&self, name: &str) -> Option<appvisor_protocol::AppSecurity> {
        let apps = self.apps.read().unwrap_or_else(|e| e.into_inner());
        let handle = apps.get(name)?.handle.as_ref()?;
        let snapshot = handle.snapshot.borrow();
        Some(crate::supervise::security(&snapshot, &self.shared))
    }

    pub fn logs(&self, name: &str) -> Option<Arc<AppLogs>> {
        let apps = self.apps.read().unwrap_or_else(|e| e.into_inner());
        apps.get(name)?.handle.as_ref().map(|h| h.logs.clone())
    }

    /// The channels to app `name`'s task, or why there is none.
    pub(super) fn channels(&self, name: &str) -> Result<AppChannels, ActError> {
        let apps = self.apps.read().unwrap_or_else(|e| e.into_inner());
        let entry = apps.get(name).ok_or_else(|| ActError::NoSuchApp {
            app: name.to_owned(),
        })?;
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

    /// What an admin should know about the daemon (`AppList::notices`).
    pub fn notices(&self, peer: &Peer) -> Vec<String> {
        if !acl::is_admin(peer, &self.admin_rules()) {
            return Vec::new();
        }
        let ignored = self.ignored.read().unwrap_or_else(|e| e.into_inner());
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
        let apps = self.apps.read().unwrap_or_else(|e| e.into_inner());
        apps.iter()
            .filter(|(_, entry)| entry.handle.is_none() && entry.refused.is_some())
            .map(|(name, _)| name.clone())
            .collect()
    }

    pub(super) fn fds(&self) -> MutexGuard<'_, fds::FdBudget> {
        self.fds.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl crate::status::StatusSource for Daemon {
    fn apps(&self) -> Vec<crate::status::AppSample> {
        let apps = self.apps.read().unwrap_or_else(|e| e.into_inner());
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

/// Whether `peer` may see the app of `entry` (an app known only as an
/// invalid file has no `[access]`, so only admins see it).
fn may_view(peer: &Peer, rules: &AdminRules, entry: &Entry) -> bool {
    static NO_ACCESS: std::sync::LazyLock<AccessSpec> =
        std::sync::LazyLock::new(AccessSpec::default);
    let access = entry.app.as_ref().map_or(&*NO_ACCESS, |a| &a.spec.access);
    acl::decide(peer, rules, Operation::View, Some(access)) == acl::Decision::Allow
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
