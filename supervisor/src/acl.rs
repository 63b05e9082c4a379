//! Who may do what to which app: pure decisions, no I/O.
//!
//! Three roles, as DESIGN.md's Control API lists them: admins (root,
//! `admin_users`, members of `admin_groups`) may do everything; an app's
//! operators (its `[access]` users and groups) may see it and act on it;
//! everyone else may only ask `whoami`. An app the caller may not operate is
//! answered as *not found*, so that app names do not leak.

use crate::config::AccessSpec;

/// The caller on the other end of the control socket, from SO_PEERCRED and
/// the user database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub pid: Option<u32>,
    /// The user name, or `#UID` when the uid has no passwd entry.
    pub user: String,
    /// Names of the primary and supplementary groups.
    pub groups: Vec<String>,
}

/// The daemon-wide admin rules of `[control]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AdminRules {
    pub users: Vec<String>,
    pub groups: Vec<String>,
}

/// What a request wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// `GET /v1/whoami`.
    WhoAmI,
    /// See one app (status, logs) or list it.
    View,
    /// start, stop, restart, reload, signal.
    Act,
    /// `GET /v1/events`.
    Events,
    /// `POST /v1/config/apply`.
    ApplyConfig,
}

/// The answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// The app is not the caller's to see: answer as if it did not exist.
    Hide,
    /// A daemon-wide operation reserved to admins.
    Forbid,
}

pub fn is_admin(peer: &Peer, rules: &AdminRules) -> bool {
    peer.uid == 0
        || rules.users.contains(&peer.user)
        || peer.groups.iter().any(|g| rules.groups.contains(g))
}

/// Whether `peer` is named in an app's `[access]` (directly or through a group).
pub fn is_operator(peer: &Peer, access: &AccessSpec) -> bool {
    access.users.contains(&peer.user) || peer.groups.iter().any(|g| access.groups.contains(g))
}

/// Decides one request. `access` is the target app's `[access]` for
/// app-scoped operations, `None` for daemon-wide ones or a missing app.
pub fn decide(
    peer: &Peer,
    rules: &AdminRules,
    operation: Operation,
    access: Option<&AccessSpec>,
) -> Decision {
    let admin = is_admin(peer, rules);
    match operation {
        Operation::WhoAmI => Decision::Allow,
        Operation::Events | Operation::ApplyConfig => {
            if admin {
                Decision::Allow
            } else {
                Decision::Forbid
            }
        }
        Operation::View | Operation::Act => match access {
            _ if admin => Decision::Allow,
            Some(access) if is_operator(peer, access) => Decision::Allow,
            _ => Decision::Hide,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(uid: u32, user: &str, groups: &[&str]) -> Peer {
        Peer {
            uid,
            pid: Some(1),
            user: user.to_owned(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    #[test]
    fn decisions_for_every_role() {
        let rules = AdminRules {
            users: vec!["ops".into()],
            groups: vec!["appvisor-admin".into()],
        };
        let shop = AccessSpec {
            users: vec!["alice".into()],
            groups: vec!["shop-devs".into()],
        };
        let root = peer(0, "root", &["root"]);
        let ops = peer(1000, "ops", &["ops"]);
        let admin_member = peer(1001, "carol", &["carol", "appvisor-admin"]);
        let alice = peer(1002, "alice", &["alice"]);
        let dev = peer(1003, "bob", &["bob", "shop-devs"]);
        let stranger = peer(1004, "mallory", &["mallory"]);

        use Decision::*;
        use Operation::*;
        let table: &[(&Peer, Operation, Option<&AccessSpec>, Decision)] = &[
            (&root, Act, Some(&shop), Allow),
            (&root, ApplyConfig, None, Allow),
            (&root, Act, None, Allow),
            (&ops, Events, None, Allow),
            (&admin_member, Act, Some(&shop), Allow),
            (&admin_member, ApplyConfig, None, Allow),
            (&alice, View, Some(&shop), Allow),
            (&alice, Act, Some(&shop), Allow),
            (&alice, Events, None, Forbid),
            (&alice, ApplyConfig, None, Forbid),
            (&alice, Act, None, Hide),
            (&dev, Act, Some(&shop), Allow),
            (&dev, ApplyConfig, None, Forbid),
            (&stranger, WhoAmI, None, Allow),
            (&stranger, View, Some(&shop), Hide),
            (&stranger, Act, Some(&shop), Hide),
            (&stranger, View, None, Hide),
            (&stranger, Events, None, Forbid),
        ];
        for (peer, op, access, want) in table {
            assert_eq!(
                decide(peer, &rules, *op, *access),
                *want,
                "{} {op:?}",
                peer.user
            );
        }
    }

    #[test]
    fn a_missing_app_and_a_hidden_app_look_the_same_to_a_stranger() {
        let rules = AdminRules::default();
        let stranger = peer(1004, "mallory", &[]);
        let other = AccessSpec {
            users: vec!["alice".into()],
            groups: vec![],
        };
        assert_eq!(
            decide(&stranger, &rules, Operation::Act, Some(&other)),
            decide(&stranger, &rules, Operation::Act, None)
        );
    }
}
