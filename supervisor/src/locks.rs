//! Taking a lock whatever panicked while it was held.
//!
//! std poisons a lock whose holder panicked, and `lock().unwrap()` then
//! panics in every later holder: one panic in an app's task or in one
//! request would spread to every task and request that shares the state.
//! The daemon outlives such a panic (it fails the one task or request), so
//! where the data under a lock is consistent at every step of every
//! critical section (a value replaced whole, a counter bumped, an entry
//! inserted or removed), it takes the lock anyway, through these three
//! functions: the choice is written once, and `grep locks::` finds every
//! place that makes it. A critical section that could leave its data half
//! changed must not use them.

use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// `mutex.lock()`, ignoring poisoning (module docs).
pub fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `lock.read()`, ignoring poisoning (module docs).
pub fn read<T: ?Sized>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

/// `lock.write()`, ignoring poisoning (module docs).
pub fn write<T: ?Sized>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lock poisoned by a panicking holder is still taken, with the
    /// value the holder left.
    #[test]
    fn a_poisoned_lock_is_taken_with_what_its_holder_left() {
        let mutex = Mutex::new(1);
        let rwlock = RwLock::new(1);
        let _ = std::panic::catch_unwind(|| {
            let mut held = mutex.lock().unwrap();
            let mut written = rwlock.write().unwrap();
            (*held, *written) = (2, 2);
            panic!("a holder panics");
        });
        assert!(mutex.is_poisoned() && rwlock.is_poisoned());
        assert_eq!(*lock(&mutex), 2);
        assert_eq!(*read(&rwlock), 2);
        *write(&rwlock) = 3;
        assert_eq!(*read(&rwlock), 3);
    }
}
