//! Connection caps of a server: a total, and on the control socket one per
//! uid so that a single local user cannot take every slot and lock everyone
//! else out.
//!
//! Owns counting only: it never reads or writes a connection. root is held
//! to the total alone (it can stop the daemon anyway), and so is a
//! connection without a uid (TCP).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::locks;

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Every slot is taken.
    Full,
    /// This uid holds its share of the slots already.
    UidFull,
}

/// Open connections, in total and by uid.
#[derive(Debug)]
pub struct ConnectionLimits {
    total: usize,
    /// `None`: no cap per uid.
    per_uid: Option<usize>,
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    by_uid: HashMap<u32, usize>,
}

/// One admitted connection; dropping it frees the slot.
#[derive(Debug)]
pub struct Slot {
    limits: Arc<ConnectionLimits>,
    /// The uid counted, if any.
    uid: Option<u32>,
}

impl ConnectionLimits {
    pub fn new(total: usize, per_uid: Option<usize>) -> Arc<ConnectionLimits> {
        Arc::new(ConnectionLimits {
            total,
            per_uid,
            open: Mutex::new(Open::default()),
        })
    }

    /// Takes a slot for a connection from `uid` (if known), or says why not.
    pub fn admit(self: &Arc<Self>, uid: Option<u32>) -> Result<Slot, Refusal> {
        let mut open = locks::lock(&self.open);
        if open.total >= self.total {
            return Err(Refusal::Full);
        }
        if let (Some(uid), Some(per_uid)) = (uid, self.per_uid) {
            let mine = open.by_uid.entry(uid).or_default();
            if uid != 0 && *mine >= per_uid {
                return Err(Refusal::UidFull);
            }
            *mine += 1;
        }
        open.total += 1;
        Ok(Slot {
            limits: self.clone(),
            uid: uid.filter(|_| self.per_uid.is_some()),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = locks::lock(&self.limits.open);
        open.total -= 1;
        let Some(uid) = self.uid else {
            return;
        };
        if let Some(mine) = open.by_uid.get_mut(&uid) {
            *mine -= 1;
            if *mine == 0 {
                open.by_uid.remove(&uid);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_uid_cannot_take_every_slot() {
        let limits = ConnectionLimits::new(5, Some(2));
        let eve: Vec<Result<Slot, Refusal>> = (0..3).map(|_| limits.admit(Some(1004))).collect();
        let outcomes: Vec<Option<Refusal>> =
            eve.iter().map(|r| r.as_ref().err().copied()).collect();
        assert_eq!(outcomes, [None, None, Some(Refusal::UidFull)]);
        assert!(
            limits.admit(Some(1002)).is_ok(),
            "another user still gets in"
        );
    }

    #[test]
    fn root_is_held_to_the_total_only() {
        let limits = ConnectionLimits::new(3, Some(1));
        let slots: Vec<Slot> = (0..3).map(|_| limits.admit(Some(0)).unwrap()).collect();
        assert_eq!(limits.admit(Some(0)).unwrap_err(), Refusal::Full);
        assert_eq!(limits.admit(Some(1000)).unwrap_err(), Refusal::Full);
        drop(slots);
        assert!(limits.admit(Some(1000)).is_ok());
    }

    #[test]
    fn dropping_a_slot_frees_it() {
        let limits = ConnectionLimits::new(10, Some(1));
        let first = limits.admit(Some(1000)).unwrap();
        assert_eq!(limits.admit(Some(1000)).unwrap_err(), Refusal::UidFull);
        drop(first);
        let _again = limits.admit(Some(1000)).unwrap();
        assert_eq!(limits.open.lock().unwrap().total, 1);
    }

    #[test]
    fn without_a_uid_only_the_total_counts() {
        let limits = ConnectionLimits::new(2, None);
        let first = limits.admit(None).unwrap();
        let _second = limits.admit(Some(1000)).unwrap();
        assert_eq!(limits.admit(None).unwrap_err(), Refusal::Full);
        drop(first);
        assert!(limits.admit(None).is_ok());
        assert!(limits.open.lock().unwrap().by_uid.is_empty());
    }
}
