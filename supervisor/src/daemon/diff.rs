//! What a new reading of `apps.d` asks of the running apps: which to add,
//! remove, restart or update in place, and which files do not validate.
//! Pure: a function of the apps the registry holds, the apps read, and
//! `config::change`'s judgement of one app's old and new settings.

use std::collections::BTreeMap;

use crate::config::change::Change;

/// What one app, by name, is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A file the registry does not know: a new app.
    Add,
    /// The same settings: nothing to do.
    Unchanged,
    /// A change a new process needs, or a first valid version of an app
    /// known until now only as an invalid file.
    Restart,
    /// A change the running app adopts without a new process.
    InPlace,
    /// The file does not validate; the last valid version, if there is
    /// one, keeps running.
    Invalid { kept_running: bool },
    /// The file is gone: the app stops and leaves the registry.
    Remove,
}

/// The verdict of every app in `read` (in its order: `Some` the valid
/// settings, `None` a file that does not validate), then of every app of
/// `running` no longer read (in `running`'s order). `running` maps each
/// app the registry holds to its last valid settings, if it had any.
pub fn diff<'a, A: 'a>(
    running: &BTreeMap<String, Option<A>>,
    read: impl IntoIterator<Item = (&'a str, Option<&'a A>)>,
    change: impl Fn(&A, &A) -> Option<Change>,
) -> Vec<(String, Verdict)> {
    let mut verdicts = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (name, new) in read {
        seen.insert(name);
        let verdict = match (new, running.get(name)) {
            (Some(_), None) => Verdict::Add,
            (Some(new), Some(Some(old))) => match change(old, new) {
                None => Verdict::Unchanged,
                Some(change) if change.restart => Verdict::Restart,
                Some(_) => Verdict::InPlace,
            },
            (Some(_), Some(None)) => Verdict::Restart,
            (None, existing) => Verdict::Invalid {
                kept_running: matches!(existing, Some(Some(_))),
            },
        };
        verdicts.push((name.to_owned(), verdict));
    }
    verdicts.extend(
        running
            .keys()
            .filter(|name| !seen.contains(name.as_str()))
            .map(|name| (name.clone(), Verdict::Remove)),
    );
    verdicts
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An app's settings, reduced to what the verdict depends on: the
    /// settings a new process needs, and those adopted in place.
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Settings {
        process: &'static str,
        in_place: &'static str,
    }

    fn change(old: &Settings, new: &Settings) -> Option<Change> {
        (old != new).then(|| Change {
            keys: Vec::new(),
            restart: old.process != new.process,
            start: false,
        })
    }

    const V1: Settings = Settings {
        process: "gunicorn app:v1",
        in_place: "alice",
    };
    const V2: Settings = Settings {
        process: "gunicorn app:v2",
        in_place: "alice",
    };
    const V1_BOB: Settings = Settings {
        process: "gunicorn app:v1",
        in_place: "bob",
    };

    #[test]
    fn each_app_gets_the_verdict_its_old_and_new_settings_ask() {
        // (registry holds: None = no such app, Some(None) = only an invalid
        // file; read: None = not in apps.d, Some(None) = does not validate;
        // verdict)
        type Case = (Option<Option<Settings>>, Option<Option<Settings>>, Verdict);
        let cases: [Case; 9] = [
            (None, Some(Some(V1)), Verdict::Add),
            (Some(Some(V1)), Some(Some(V1)), Verdict::Unchanged),
            (Some(Some(V1)), Some(Some(V2)), Verdict::Restart),
            (Some(Some(V1)), Some(Some(V1_BOB)), Verdict::InPlace),
            (Some(None), Some(Some(V1)), Verdict::Restart),
            (
                Some(Some(V1)),
                Some(None),
                Verdict::Invalid { kept_running: true },
            ),
            (
                Some(None),
                Some(None),
                Verdict::Invalid {
                    kept_running: false,
                },
            ),
            (
                None,
                Some(None),
                Verdict::Invalid {
                    kept_running: false,
                },
            ),
            (Some(Some(V1)), None, Verdict::Remove),
        ];
        for (held, read, want) in cases {
            let running: BTreeMap<String, Option<Settings>> = held
                .clone()
                .map(|s| ("shop".to_owned(), s))
                .into_iter()
                .collect();
            let read_apps: Vec<(&str, Option<&Settings>)> = read
                .as_ref()
                .map(|s| ("shop", s.as_ref()))
                .into_iter()
                .collect();
            let got = diff(&running, read_apps, change);
            assert_eq!(
                got,
                vec![("shop".to_owned(), want)],
                "held {held:?}, read {read:?}"
            );
        }
    }

    #[test]
    fn apps_read_come_in_their_order_then_the_removed_ones() {
        let running: BTreeMap<String, Option<Settings>> = [
            ("api".to_owned(), Some(V1)),
            ("gone".to_owned(), Some(V1)),
            ("shop".to_owned(), Some(V1)),
            ("zzz-old".to_owned(), None),
        ]
        .into_iter()
        .collect();
        let read = [("api", Some(&V2)), ("new", Some(&V1)), ("shop", Some(&V1))];
        assert_eq!(
            diff(&running, read, change),
            vec![
                ("api".to_owned(), Verdict::Restart),
                ("new".to_owned(), Verdict::Add),
                ("shop".to_owned(), Verdict::Unchanged),
                ("gone".to_owned(), Verdict::Remove),
                ("zzz-old".to_owned(), Verdict::Remove),
            ]
        );
    }
}
