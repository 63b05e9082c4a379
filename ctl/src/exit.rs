//! The exit codes of `appctl`, all in one table (DESIGN.md, "appctl"), and
//! the mapping from errors to them.
//!
//! Owns the numbers and the mapping only; it never prints. Errors are
//! classified by their type and [`ErrorCode`], never by their text.

use appvisor_protocol::client::ClientError;
use appvisor_protocol::ErrorCode;

/// What `appctl` tells its caller through its exit status.
///
/// Ordered from best to worst, which is also numeric order: a command over
/// several apps ends with the worst (highest) of their outcomes, so a daemon
/// that stopped answering (5) or a refusal (4) is never hidden behind one
/// app's failed start (1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Exit {
    /// 0: done.
    Done = 0,
    /// 1: the action failed (the app did not become ready or did not stop),
    /// or the daemon failed in a way that is not the caller's fault.
    Failed = 1,
    /// 2: usage error, or invalid configuration (clap also exits 2 on
    /// usage errors).
    Usage = 2,
    /// 3: `status` found an app that is not running.
    NotRunning = 3,
    /// 4: the daemon refused the caller.
    PermissionDenied = 4,
    /// 5: the daemon could not be reached.
    Unreachable = 5,
}

impl Exit {
    /// The numeric status.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The exit code for an error from the control client.
    pub fn for_client_error(err: &ClientError) -> Exit {
        match err {
            ClientError::Connect { .. }
            | ClientError::Http { .. }
            | ClientError::Timeout { .. } => Exit::Unreachable,
            ClientError::Api { error, .. } => Exit::for_error_code(error.code),
            ClientError::Decode { .. } => Exit::Failed,
        }
    }

    /// The exit code for an error code the daemon answered with.
    pub fn for_error_code(code: ErrorCode) -> Exit {
        match code {
            ErrorCode::Forbidden => Exit::PermissionDenied,
            ErrorCode::BadRequest
            | ErrorCode::NotFound
            | ErrorCode::MethodNotAllowed
            | ErrorCode::Conflict
            | ErrorCode::PayloadTooLarge
            | ErrorCode::InvalidConfig => Exit::Usage,
            // Shutting down or overloaded: the daemon cannot serve us now.
            ErrorCode::Unavailable => Exit::Unreachable,
            ErrorCode::Internal => Exit::Failed,
        }
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(exit: Exit) -> Self {
        std::process::ExitCode::from(exit.code())
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::path::PathBuf;

    use appvisor_protocol::ApiError;

    use super::*;

    #[test]
    fn codes_match_design() {
        let table = [
            (Exit::Done, 0),
            (Exit::Failed, 1),
            (Exit::Usage, 2),
            (Exit::NotRunning, 3),
            (Exit::PermissionDenied, 4),
            (Exit::Unreachable, 5),
        ];
        for (exit, code) in table {
            assert_eq!(exit.code(), code, "{exit:?}");
        }
    }

    #[test]
    fn error_codes_map_by_type() {
        let table = [
            (ErrorCode::BadRequest, Exit::Usage),
            (ErrorCode::Forbidden, Exit::PermissionDenied),
            (ErrorCode::NotFound, Exit::Usage),
            (ErrorCode::MethodNotAllowed, Exit::Usage),
            (ErrorCode::Conflict, Exit::Usage),
            (ErrorCode::PayloadTooLarge, Exit::Usage),
            (ErrorCode::InvalidConfig, Exit::Usage),
            (ErrorCode::Unavailable, Exit::Unreachable),
            (ErrorCode::Internal, Exit::Failed),
        ];
        for (code, exit) in table {
            let err = ClientError::Api {
                status: code.http_status(),
                error: ApiError::new(code, "whatever the daemon says"),
            };
            assert_eq!(Exit::for_client_error(&err), exit, "{code}");
        }
    }

    #[test]
    fn a_daemon_that_does_not_answer_is_unreachable() {
        let err = ClientError::Timeout {
            socket: PathBuf::from("/run/appvisor/ctl.sock"),
            waited: std::time::Duration::from_secs(30),
        };
        assert_eq!(Exit::for_client_error(&err), Exit::Unreachable);
    }

    #[test]
    fn a_missing_socket_is_unreachable() {
        let err = ClientError::Connect {
            socket: PathBuf::from("/nonexistent"),
            source: io::Error::from(io::ErrorKind::NotFound),
        };
        assert_eq!(Exit::for_client_error(&err), Exit::Unreachable);
    }
}
