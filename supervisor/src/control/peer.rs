//! Who is calling: SO_PEERCRED's uid and pid, names from the user database.

use nix::unistd::{Gid, Group, Uid, User};

use crate::acl::Peer;

/// Looks the caller up. A uid without a passwd entry is `#UID` with no
/// groups: it can still be root (uid 0) but can match no name in a rule.
pub fn lookup(uid: u32, pid: Option<u32>) -> Peer {
    let user = User::from_uid(Uid::from_raw(uid)).ok().flatten();
    let Some(user) = user else {
        return Peer {
            uid,
            pid,
            user: format!("#{uid}"),
            groups: Vec::new(),
        };
    };
    let gids = std::ffi::CString::new(user.name.as_bytes())
        .ok()
        .and_then(|name| nix::unistd::getgrouplist(&name, user.gid).ok())
        .unwrap_or_else(|| vec![user.gid]);
    let groups = gids
        .into_iter()
        .filter_map(|gid: Gid| Group::from_gid(gid).ok().flatten().map(|g| g.name))
        .collect();
    Peer {
        uid,
        pid,
        user: user.name,
        groups,
    }
}
