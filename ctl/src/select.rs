//! Which apps a command line names: app names, `group:NAME`, glob patterns
//! (`'celery-*'`) and `all`, expanded to app names.
//!
//! Expansion happens here, in appctl, against `GET /v1/apps`: the daemon
//! answers that list with only the apps the caller may see, so a pattern
//! can select nothing the caller could not have named, and one that
//! matches only invisible apps says exactly what one that matches nothing
//! says. Each selected app is then acted on through its own route, so the
//! daemon authorizes, audits and answers every app as if it had been named.
//!
//! Pure: the list comes in as an argument.

use std::fmt;

use appvisor_protocol::AppStatus;

/// One command-line word that selects apps.
#[derive(Debug, Clone, PartialEq)]
pub enum Selector {
    /// An app's name, passed to the daemon as it is: the daemon says when
    /// there is no such app the caller may see.
    Name(String),
    /// `group:NAME`: the apps whose `app_groups` include NAME.
    Group(String),
    /// A word with `*`, `?` or `[`, which no app name has: the apps whose
    /// names it matches, like a shell glob.
    Pattern(glob::Pattern),
    /// `all`: every app the caller may see.
    All,
}

/// A selector that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectError {
    #[error("{word:?} is not a valid pattern: {reason}")]
    BadPattern { word: String, reason: String },
    #[error("{word:?}: group names look like app names ([a-z0-9][a-z0-9_-]{{0,63}})")]
    BadGroup { word: String },
    /// Says the same whether nothing matched or only apps the caller may
    /// not see did: the latter must not be told apart.
    #[error("no app you may see matches {word:?}")]
    NoMatch { word: String },
}

impl Selector {
    /// Reads one word of the command line.
    pub fn parse(word: &str) -> Result<Selector, SelectError> {
        if word == "all" {
            return Ok(Selector::All);
        }
        if let Some(group) = word.strip_prefix("group:") {
            return appvisor_config::AppName::new(group)
                .map(|name| Selector::Group(name.as_str().to_owned()))
                .ok_or_else(|| SelectError::BadGroup {
                    word: word.to_owned(),
                });
        }
        if word.contains(['*', '?', '[']) {
            return glob::Pattern::new(word)
                .map(Selector::Pattern)
                .map_err(|e| SelectError::BadPattern {
                    word: word.to_owned(),
                    reason: e.msg.to_owned(),
                });
        }
        Ok(Selector::Name(word.to_owned()))
    }

    /// Whether expanding it needs the list of apps.
    pub fn needs_list(&self) -> bool {
        !matches!(self, Selector::Name(_))
    }

    fn matches(&self, app: &AppStatus) -> bool {
        match self {
            Selector::Name(name) => app.name == *name,
            Selector::Group(group) => app.app_groups.iter().any(|g| g == group),
            Selector::Pattern(pattern) => pattern.matches(&app.name),
            Selector::All => true,
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::Name(name) => f.write_str(name),
            Selector::Group(group) => write!(f, "group:{group}"),
            Selector::Pattern(pattern) => f.write_str(pattern.as_str()),
            Selector::All => f.write_str("all"),
        }
    }
}

/// Reads every word; the first bad one is the error.
pub fn parse_all(words: &[String]) -> Result<Vec<Selector>, SelectError> {
    words.iter().map(|w| Selector::parse(w)).collect()
}

/// The app names `selectors` stand for, in the order given (a selector's
/// matches in the list's order), each once. `visible` is `GET /v1/apps`;
/// it is only read for selectors other than names. A group, pattern or
/// `all` that matches no visible app is an error.
pub fn expand(selectors: &[Selector], visible: &[AppStatus]) -> Result<Vec<String>, SelectError> {
    let mut names: Vec<String> = Vec::new();
    for selector in selectors {
        let matched: Vec<&str> = match selector {
            Selector::Name(name) => vec![name.as_str()],
            other => visible
                .iter()
                .filter(|app| other.matches(app))
                .map(|app| app.name.as_str())
                .collect(),
        };
        if matched.is_empty() {
            return Err(SelectError::NoMatch {
                word: selector.to_string(),
            });
        }
        for name in matched {
            if !names.iter().any(|n| n == name) {
                names.push(name.to_owned());
            }
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use appvisor_protocol::State;

    use super::*;

    fn app(name: &str, groups: &[&str]) -> AppStatus {
        AppStatus {
            app_groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            user: name.to_owned(),
            directory: "/".to_owned(),
            autostart: true,
            ..AppStatus::bare(name, State::Running, String::new())
        }
    }

    fn words(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| (*w).to_owned()).collect()
    }

    #[test]
    fn words_become_selectors() {
        assert_eq!(Selector::parse("all").unwrap(), Selector::All);
        assert_eq!(
            Selector::parse("group:celery").unwrap(),
            Selector::Group("celery".into())
        );
        assert_eq!(
            Selector::parse("shop").unwrap(),
            Selector::Name("shop".into())
        );
        assert!(matches!(
            Selector::parse("celery-*").unwrap(),
            Selector::Pattern(_)
        ));
        assert_eq!(
            Selector::parse("group:Celery").unwrap_err().to_string(),
            "\"group:Celery\": group names look like app names ([a-z0-9][a-z0-9_-]{0,63})"
        );
        assert!(matches!(
            Selector::parse("web[").unwrap_err(),
            SelectError::BadPattern { .. }
        ));
    }

    #[test]
    fn selectors_expand_against_the_visible_apps_in_order_once_each() {
        let visible = [
            app("blog", &[]),
            app("celery-beat", &["celery"]),
            app("celery-w-00", &["celery", "workers"]),
            app("celery-w-01", &["celery", "workers"]),
            app("shop", &["web"]),
        ];
        let table: &[(&[&str], &[&str])] = &[
            (&["shop"], &["shop"]),
            (
                &["group:workers", "celery-*"],
                &["celery-w-00", "celery-w-01", "celery-beat"],
            ),
            (
                &["celery-w-0?", "shop"],
                &["celery-w-00", "celery-w-01", "shop"],
            ),
            (&["[bs]*"], &["blog", "shop"]),
            (
                &["shop", "all"],
                &["shop", "blog", "celery-beat", "celery-w-00", "celery-w-01"],
            ),
            // A name is the daemon's to judge, seen or not.
            (&["nosuch"], &["nosuch"]),
        ];
        for (given, want) in table {
            let selectors = parse_all(&words(given)).unwrap();
            assert_eq!(expand(&selectors, &visible).unwrap(), *want, "{given:?}");
        }
    }

    #[test]
    fn a_selector_matching_no_visible_app_says_only_that() {
        // The daemon lists only what the caller may see: "invisible" is
        // absent from the list, and matching it must read like no match.
        let visible = [app("shop", &["web"])];
        for word in ["group:celery", "invisible*", "nothing-?"] {
            let selectors = parse_all(&words(&[word])).unwrap();
            assert_eq!(
                expand(&selectors, &visible).unwrap_err().to_string(),
                format!("no app you may see matches {word:?}")
            );
        }
        let all = parse_all(&words(&["all"])).unwrap();
        assert_eq!(
            expand(&all, &[]).unwrap_err().to_string(),
            "no app you may see matches \"all\""
        );
    }
}
