//! Locks that outlive a panic.
//!
//! tape's threads (a page preparer, a page helper, a registration thread,
//! the service's workers) share small pieces of state behind a `Mutex`. A
//! panic on one of them must not take the others down with a poisoned
//! lock: the state they guard is always left consistent between two
//! statements (plain values, queues, flags), so the one policy is to take
//! the lock anyway. These are the only places the workspace says so.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// Locks `m`, taking it even if a thread panicked while holding it.
#[inline]
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Waits on `cv`, taking the lock back even if it was poisoned meanwhile.
#[inline]
pub fn wait<'a, T>(cv: &Condvar, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
    cv.wait(guard).unwrap_or_else(|e| e.into_inner())
}

/// Waits on `cv` for at most `timeout`, taking the lock back even if it was
/// poisoned meanwhile. Returns the guard and whether the wait timed out.
#[inline]
pub fn wait_timeout<'a, T>(
    cv: &Condvar,
    guard: MutexGuard<'a, T>,
    timeout: Duration,
) -> (MutexGuard<'a, T>, bool) {
    let (g, r) = cv
        .wait_timeout(guard, timeout)
        .unwrap_or_else(|e| e.into_inner());
    (g, r.timed_out())
}

/// Waits on `cv` while `condition` holds, for at most `timeout`, taking the
/// lock back even if it was poisoned meanwhile. Returns the guard and
/// whether the wait timed out.
#[inline]
pub fn wait_timeout_while<'a, T, F: FnMut(&mut T) -> bool>(
    cv: &Condvar,
    guard: MutexGuard<'a, T>,
    timeout: Duration,
    condition: F,
) -> (MutexGuard<'a, T>, bool) {
    let (g, r) = cv
        .wait_timeout_while(guard, timeout, condition)
        .unwrap_or_else(|e| e.into_inner());
    (g, r.timed_out())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_poisoned_lock_is_still_taken() {
        let m = Arc::new(Mutex::new(5));
        let m2 = Arc::clone(&m);
        let _ = std::thread::spawn(move || {
            let _g = m2.lock().unwrap();
            panic!("poison it");
        })
        .join();
        assert!(m.is_poisoned());
        *lock(&m) += 1;
        assert_eq!(*lock(&m), 6);
        let cv = Condvar::new();
        let (g, timed_out) = wait_timeout(&cv, lock(&m), Duration::from_millis(1));
        assert!(timed_out);
        assert_eq!(*g, 6);
    }
}
