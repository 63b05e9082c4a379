//! The one place where what went wrong becomes a wire error: the daemon's
//! errors ([`ActError`], [`ApplyError`]) and the server's own refusals
//! (hidden apps, admin-only routes) get their [`ErrorCode`] and message
//! here, and nowhere else.

use appvisor_protocol::{ApiError, ErrorCode};

use super::target::{ActError, ApplyError, ReexecError};
use crate::acl::Peer;

impl From<ActError> for ApiError {
    fn from(err: ActError) -> ApiError {
        let code = match &err {
            ActError::Changed { .. }
            | ActError::NotStarted { .. }
            | ActError::Invalid { .. }
            | ActError::Refused { .. }
            | ActError::Signal { .. } => ErrorCode::Conflict,
            ActError::UnknownSignal { .. } => ErrorCode::BadRequest,
            ActError::Gone { .. } | ActError::HandingOver => ErrorCode::Unavailable,
        };
        ApiError::new(code, err.to_string())
    }
}

impl From<ReexecError> for ApiError {
    fn from(err: ReexecError) -> ApiError {
        let code = match &err {
            ReexecError::Refused(_) => ErrorCode::Conflict,
            ReexecError::Stopping => ErrorCode::Unavailable,
        };
        ApiError::new(code, err.to_string())
    }
}

impl From<ApplyError> for ApiError {
    fn from(err: ApplyError) -> ApiError {
        let code = match &err {
            ApplyError::Config(_) => ErrorCode::InvalidConfig,
        };
        ApiError::new(code, err.to_string())
    }
}

/// The answer for an app that does not exist or that the caller may not
/// operate: the same in both cases, so names do not leak.
pub fn hidden(peer: &Peer, name: &str, verb: &str) -> ApiError {
    let message = if peer.uid == 0 {
        format!("no app named {name}")
    } else {
        format!(
            "no app named {name} that {} may {verb} (if it exists, ask an admin to add you to [access] in apps.d/{name}.toml)",
            peer.user
        )
    };
    ApiError::new(ErrorCode::NotFound, message)
}

/// The answer to a non-admin asking for a daemon-wide operation.
pub fn admin_only(peer: &Peer, what: &str) -> ApiError {
    ApiError::new(
        ErrorCode::Forbidden,
        format!(
            "permission denied: {} may not {what} (only admins may: root, [control] admin_users or admin_groups)",
            peer.user
        ),
    )
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use appvisor_protocol::Action;

    use super::*;
    use crate::supervise::SignalError;

    #[test]
    fn each_daemon_error_has_its_wire_code_and_message() {
        let app = || "shop".to_owned();
        let cases = [
            (
                ActError::Changed { app: app() },
                ErrorCode::Conflict,
                "shop changed while the request was checked: nothing was done, try again",
            ),
            (
                ActError::Invalid {
                    app: app(),
                    errors: "line 3: unknown key".into(),
                    file: PathBuf::from("/etc/appvisor/apps.d/shop.toml"),
                },
                ErrorCode::Conflict,
                "shop has no valid configuration: line 3: unknown key (fix /etc/appvisor/apps.d/shop.toml and run appctl update)",
            ),
            (
                ActError::Refused {
                    app: app(),
                    action: Action::Signal,
                    why: "it is not running".into(),
                },
                ErrorCode::Conflict,
                "cannot signal shop: it is not running",
            ),
            (
                ActError::Signal {
                    app: app(),
                    source: SignalError::NoProcess { app: app() },
                },
                ErrorCode::Conflict,
                "cannot signal shop: shop has no running process",
            ),
            (
                ActError::Signal {
                    app: app(),
                    source: SignalError::Kill(nix::errno::Errno::EPERM),
                },
                ErrorCode::Conflict,
                "cannot signal shop: Operation not permitted",
            ),
            (
                ActError::UnknownSignal {
                    signal: "BOOM".into(),
                },
                ErrorCode::BadRequest,
                "unknown signal \"BOOM\" (use a name such as HUP, USR1 or TERM)",
            ),
            (
                ActError::Gone { app: app() },
                ErrorCode::Unavailable,
                "shop is being removed or the daemon is stopping",
            ),
        ];
        for (err, code, message) in cases {
            assert_eq!(ApiError::from(err), ApiError::new(code, message));
        }
    }

    #[test]
    fn hidden_apps_give_the_same_answer_whether_they_exist_or_not() {
        let alice = Peer {
            uid: 1000,
            pid: None,
            user: "alice".into(),
            groups: vec![],
        };
        let err = hidden(&alice, "blog", "restart");
        assert_eq!(err.code, ErrorCode::NotFound);
        assert_eq!(
            err.message,
            "no app named blog that alice may restart (if it exists, ask an admin to add you to [access] in apps.d/blog.toml)"
        );
    }
}
