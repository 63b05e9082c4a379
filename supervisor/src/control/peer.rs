//! Who is calling: SO_PEERCRED's uid and pid, names from the user database.
//!
//! The user database may be NSS over the network (LDAP, sssd), where a
//! lookup can block for seconds, and any local user can open connections:
//! so lookups run on the blocking pool, never on the runtime's workers, at
//! most [`LOOKUPS`] at a time (a hung one keeps its thread, and must not
//! take them all), each within [`LOOKUP_TIMEOUT`].

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::acl::Peer;
use crate::config::UserDb;
use crate::locks;
use crate::ratelimit::{Limit, Verdict, Window};

/// Lookups of callers in the user database at once.
const LOOKUPS: usize = 4;
/// Time a caller's lookup may take, the wait for a free lookup included.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);
/// What is logged about lookups that time out.
const TIMEOUT_NOISE: Limit = Limit {
    burst: 5,
    per: Duration::from_secs(60),
};

/// Why a caller could not be identified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    #[error("the user database did not answer within {}s (looking up uid {uid})", timeout.as_secs())]
    Timeout { uid: u32, timeout: Duration },
}

/// Looks callers up in a user database, off the runtime.
#[derive(Clone)]
pub struct Peers {
    db: Arc<dyn UserDb>,
    lookups: Arc<Semaphore>,
    timeout: Duration,
    noise: Arc<Mutex<Window>>,
}

impl std::fmt::Debug for Peers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peers")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Peers {
    pub fn new(db: Arc<dyn UserDb>) -> Peers {
        Peers::with_timeout(db, LOOKUP_TIMEOUT)
    }

    fn with_timeout(db: Arc<dyn UserDb>, timeout: Duration) -> Peers {
        Peers {
            db,
            lookups: Arc::new(Semaphore::new(LOOKUPS)),
            timeout,
            noise: Arc::default(),
        }
    }

    /// The caller with `uid` (and `pid`), or why it could not be told.
    pub async fn lookup(&self, uid: u32, pid: Option<u32>) -> Result<Peer, PeerError> {
        let work = async {
            let permit = self
                .lookups
                .clone()
                .acquire_owned()
                .await
                .expect("the lookup semaphore is never closed");
            let db = self.db.clone();
            // The permit goes with the thread: a lookup that outlives its
            // deadline still counts against LOOKUPS until it returns.
            tokio::task::spawn_blocking(move || {
                let _permit = permit;
                lookup(&*db, uid, pid)
            })
            .await
        };
        match tokio::time::timeout(self.timeout, work).await {
            Ok(Ok(peer)) => Ok(peer),
            // The lookup panicked: nothing is known of the caller.
            Ok(Err(_)) => Ok(unknown(uid, pid)),
            Err(_) => {
                let err = PeerError::Timeout {
                    uid,
                    timeout: self.timeout,
                };
                let verdict = locks::lock(&self.noise).check(TIMEOUT_NOISE, Instant::now());
                if let Verdict::Log { suppressed } = verdict {
                    tracing::warn!(error = %err, suppressed, "control connection refused");
                }
                Err(err)
            }
        }
    }
}

/// Looks the caller up in `db`. A uid without a passwd entry is `#UID`
/// with no groups: it can still be root (uid 0) but can match no name in a
/// rule. A failed lookup counts as no entry: it grants nothing.
pub fn lookup(db: &dyn UserDb, uid: u32, pid: Option<u32>) -> Peer {
    let Some(user) = db.user_by_uid(uid).ok().flatten() else {
        return unknown(uid, pid);
    };
    let gids = db
        .supplementary_groups(&user.name, user.gid)
        .unwrap_or_else(|_| vec![user.gid]);
    let groups = gids
        .into_iter()
        .filter_map(|gid| db.group_name(gid).ok().flatten())
        .collect();
    Peer {
        uid,
        pid,
        user: user.name,
        groups,
    }
}

fn unknown(uid: u32, pid: Option<u32>) -> Peer {
    Peer {
        uid,
        pid,
        user: format!("#{uid}"),
        groups: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::resolve::{FakeUserDb, UserDbError, UserRecord};

    fn db() -> FakeUserDb {
        FakeUserDb::new()
            .with_user("alice", 1002, 1002)
            .with_group("alice", 1002, &[])
            .with_group("shop-devs", 3000, &["alice"])
            .with_group("other", 3001, &["bob"])
    }

    #[test]
    fn a_caller_has_its_name_and_every_group() {
        assert_eq!(
            lookup(&db(), 1002, Some(7)),
            Peer {
                uid: 1002,
                pid: Some(7),
                user: "alice".into(),
                groups: vec!["alice".into(), "shop-devs".into()],
            }
        );
    }

    #[test]
    fn a_uid_without_an_entry_is_a_number_with_no_groups() {
        assert_eq!(
            lookup(&db(), 4242, None),
            Peer {
                uid: 4242,
                pid: None,
                user: "#4242".into(),
                groups: Vec::new(),
            }
        );
    }

    /// A user database that answers after `delay`, blocking its thread.
    struct Slow {
        delay: Duration,
    }

    impl UserDb for Slow {
        fn user_by_name(&self, _: &str) -> Result<Option<UserRecord>, UserDbError> {
            Ok(None)
        }

        fn user_by_uid(&self, _: u32) -> Result<Option<UserRecord>, UserDbError> {
            std::thread::sleep(self.delay);
            Ok(None)
        }

        fn group_by_name(&self, _: &str) -> Result<Option<u32>, UserDbError> {
            Ok(None)
        }

        fn group_name(&self, _: u32) -> Result<Option<String>, UserDbError> {
            Ok(None)
        }

        fn supplementary_groups(&self, _: &str, gid: u32) -> Result<Vec<u32>, UserDbError> {
            Ok(vec![gid])
        }
    }

    /// On a one-thread runtime a lookup on the worker would stall every
    /// other task until it returned.
    #[tokio::test(flavor = "current_thread")]
    async fn a_hung_user_database_times_out_without_stalling_the_runtime() {
        let peers = Peers::with_timeout(
            Arc::new(Slow {
                delay: Duration::from_secs(1),
            }),
            Duration::from_millis(300),
        );
        let started = Instant::now();
        let ticker = tokio::spawn(async {
            let mut ticks = 0;
            while ticks < 5 {
                tokio::time::sleep(Duration::from_millis(20)).await;
                ticks += 1;
            }
            Instant::now()
        });
        let result = peers.lookup(1002, None).await;
        assert_eq!(
            result,
            Err(PeerError::Timeout {
                uid: 1002,
                timeout: Duration::from_millis(300)
            })
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the lookup waited {:?}, past its deadline",
            started.elapsed()
        );
        let ticked = ticker.await.unwrap();
        assert!(
            ticked.duration_since(started) < Duration::from_millis(290),
            "other tasks waited for the lookup: {:?}",
            ticked.duration_since(started)
        );
    }
}
