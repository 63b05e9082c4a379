//! Configuration changes: `appctl update`, SIGHUP and start-up's first
//! load of `apps.d`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use appvisor_protocol::{ApplyReport, IgnoredFile, InvalidApp};
use tokio::sync::oneshot;

use crate::acl::Peer;
use crate::app::Cause;
use crate::audit::unix_now;
use crate::config::change::{self, Change};
use crate::config::resolve::ResolvedApp;
use crate::control::ApplyError;
use crate::locks;
use crate::logs::AppLogs;
use crate::supervise::{self, Command, Handle};

use super::diff::{diff, Verdict};
use super::{fds, plural, Daemon, Entry, TAIL_LINES};

/// Which files of `apps_dir` an apply judges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Judging {
    /// Those changed since they last validated, and those that did not.
    Changed,
    /// Every one.
    Every,
}

impl Daemon {
    /// Starts the task of `entry`'s valid app if the open-file budget has
    /// room for it, else records why not.
    pub(super) fn admit_and_start(&self, name: &str, entry: &mut Entry, log_dir: &Path) {
        let Some(app) = entry.app.clone() else {
            return;
        };
        if let Err(refusal) = self.fds().admit(name, fds::app_cost(&app.spec)) {
            entry.refused = Some(format!("not started: {refusal}"));
            return;
        }
        entry.refused = None;
        entry.handle = Some(self.start_app(name, app, log_dir));
    }

    /// Re-reads `appvisor.toml`'s defaults and admin rules and `apps.d`, and
    /// applies the difference: new apps start, removed apps stop, changed
    /// apps restart, or adopt the new settings in place when no new
    /// process needs them (`config::change`), unchanged apps are not
    /// touched, and a file that does not validate leaves its app's last
    /// valid version running. Files unchanged since the last time they
    /// validated are not judged again (`judge::JudgeCache`).
    pub async fn apply_config(
        &self,
        dry_run: bool,
        peer: Option<&Peer>,
    ) -> Result<ApplyReport, ApplyError> {
        self.apply(dry_run, peer, Judging::Changed).await
    }

    /// [`Daemon::apply_config`], judging every file again with
    /// `Judging::Every` (SIGHUP): users and groups of a directory service
    /// change no file the cache could notice.
    pub(super) async fn apply(
        &self,
        dry_run: bool,
        peer: Option<&Peer>,
        judging: Judging,
    ) -> Result<ApplyReport, ApplyError> {
        let _guard = self.apply_lock.lock().await;
        if judging == Judging::Every {
            self.judged.clear();
        }
        let daemon_config =
            crate::judge::daemon_config(&self.options.config, self.options.config_explicit).await?;
        // An unreadable apps_dir must not look like "no apps": that would
        // stop every app.
        let scan = crate::judge::scan(&daemon_config, &self.judged).await;
        // Not awaited: it only gives memory back.
        drop(tokio::task::spawn_blocking(release_freed_memory));
        let crate::judge::Scan {
            candidates,
            ignored,
        } = scan?;
        let ignored = ignored
            .into_iter()
            .map(|err| IgnoredFile {
                file: err.file.display().to_string(),
                reason: match &err.hint {
                    Some(hint) => format!("{} ({hint})", err.message),
                    None => err.message.clone(),
                },
            })
            .collect();
        let mut report = ApplyReport {
            dry_run,
            ignored,
            ..ApplyReport::default()
        };
        let current: BTreeMap<String, Option<Arc<ResolvedApp>>> = locks::read(&self.apps)
            .iter()
            .map(|(name, entry)| (name.clone(), entry.app.clone()))
            .collect();
        let read = candidates
            .iter()
            .map(|(name, candidate)| (name.as_str(), candidate.app.as_ref().ok()));
        // A file kept from the last judgement is the very version the
        // registry holds: no need to compare every setting.
        let judge_change = |old: &Arc<ResolvedApp>, new: &Arc<ResolvedApp>| {
            if Arc::ptr_eq(old, new) {
                None
            } else {
                change::resolved_change(old, new)
            }
        };
        for (name, verdict) in diff(&current, read, judge_change) {
            match verdict {
                Verdict::Add => report.added.push(name),
                Verdict::Unchanged => report.unchanged.push(name),
                Verdict::Restart => report.changed.push(name),
                Verdict::InPlace => report.changed_in_place.push(name),
                Verdict::Remove => report.removed.push(name),
                Verdict::Invalid { kept_running } => {
                    let candidate = &candidates[&name];
                    let errors = candidate.app.as_ref().err();
                    report.invalid.push(InvalidApp {
                        file: candidate.file.display().to_string(),
                        errors: errors
                            .into_iter()
                            .flat_map(|errors| errors.iter().map(ToString::to_string))
                            .collect(),
                        kept_running,
                        name,
                    });
                }
            }
        }
        if dry_run {
            return Ok(report);
        }
        self.save_pending_intent().await;
        let who = peer.map(|p| p.user.as_str()).unwrap_or("the daemon");
        tracing::info!(
            by = who,
            added = ?report.added,
            changed = ?report.changed,
            changed_in_place = ?report.changed_in_place,
            removed = ?report.removed,
            invalid = report.invalid.len(),
            "applying configuration"
        );
        for invalid in &report.invalid {
            tracing::warn!(app = %invalid.name, errors = %invalid.errors.join("; "), "app file does not validate");
        }
        for ignored in &report.ignored {
            tracing::warn!(file = %ignored.file, reason = %ignored.reason, "ignoring a file in apps.d");
        }
        report.ignored.clone_into(&mut locks::write(&self.ignored));
        let log_dir = daemon_config.spec.log_dir.clone();
        *locks::write(&self.config) = daemon_config;

        let mut removed = Vec::new();
        {
            let mut apps = locks::write(&self.apps);
            for name in &report.removed {
                if let Some(entry) = apps.remove(name) {
                    removed.push(entry);
                }
            }
        }
        let mut replies = Vec::new();
        for (name, candidate) in candidates {
            let mut apps = locks::write(&self.apps);
            let entry = apps.entry(name.clone()).or_insert_with(|| Entry {
                file: candidate.file.clone(),
                app: None,
                error: None,
                handle: None,
                refused: None,
                since: unix_now(),
            });
            entry.file = candidate.file;
            match candidate.app {
                Err(errors) => entry.error = Some(errors.to_string()),
                Ok(app) => {
                    entry.error = None;
                    let change = match &entry.app {
                        // Unchanged and running: nothing to do. Unchanged
                        // but refused for want of open files: tried again.
                        Some(old)
                            if (Arc::ptr_eq(old, &app) || **old == *app)
                                && entry.handle.is_some() =>
                        {
                            continue
                        }
                        // What differs derives from the settings (the
                        // exposure checks): adopted, nothing else to do.
                        Some(old) => change::resolved_change(old, &app).unwrap_or(Change {
                            keys: Vec::new(),
                            restart: false,
                            start: false,
                        }),
                        None => Change {
                            keys: Vec::new(),
                            restart: true,
                            start: app.spec.autostart,
                        },
                    };
                    match &entry.handle {
                        Some(handle) => {
                            // The running version keeps what it holds when
                            // the new one needs more than there is.
                            if let Err(refusal) = self.fds().admit(&name, fds::app_cost(&app.spec))
                            {
                                entry.error = Some(format!("not applied: {refusal}"));
                                continue;
                            }
                            entry.app = Some(app.clone());
                            let (reply, done) = oneshot::channel();
                            let replace = Command::Replace { app, change, reply };
                            if handle.commands.send(replace).is_ok() {
                                replies.push(done);
                            }
                        }
                        None => {
                            entry.app = Some(app);
                            self.admit_and_start(&name, entry, &log_dir);
                            if entry.refused.is_some() {
                                report.not_started.push(name.clone());
                            }
                        }
                    }
                }
            }
        }
        if !report.not_started.is_empty() {
            tracing::error!(
                limit = self.fds().limit(),
                apps = ?report.not_started,
                "no room in the open-file limit: {} not started (raise LimitNOFILE and restart appvisord)",
                plural(report.not_started.len(), "app")
            );
        }
        for reply in replies {
            let _ = reply.await;
        }
        stop_all(removed.into_iter().filter_map(|e| e.handle), Cause::Config).await;
        for name in &report.removed {
            self.fds().release(name);
        }
        Ok(report)
    }

    /// Starts app `name`'s task. Log files that cannot be opened do not
    /// stop it: they are retried while the app runs, and show in its status.
    fn start_app(&self, name: &str, app: Arc<ResolvedApp>, log_dir: &Path) -> Handle {
        // The files are opened by the app's task, off the runtime, before
        // it spawns anything: at start-up that is a thousand directories
        // and files that must not hold up the registration of the others.
        let logs = AppLogs::unopened(log_dir, name, &app.spec.logs, app.gid, TAIL_LINES);
        let stopped_by = self.intents.get(name);
        let autostart = app.spec.autostart && stopped_by.is_none();
        supervise::start(app, logs, self.shared.clone(), autostart, stopped_by)
    }
}

/// Parsing and validating app files (every one at start-up, or a huge
/// hostile one at an update) leaves freed heap that glibc keeps mapped; a
/// daemon that then idles for months should give it back. (musl's
/// allocator returns free memory by itself.)
fn release_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory at the top of glibc's
    // heaps back to the kernel; it touches no memory in use and is safe to
    // call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Stops apps in parallel and waits until each task has ended.
pub(super) async fn stop_all(handles: impl Iterator<Item = Handle>, cause: Cause) {
    let tasks: Vec<_> = handles
        .map(|handle| {
            let _ = handle.commands.send(Command::Shutdown {
                cause: cause.clone(),
            });
            handle.task
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
}
