//! Reconnect with backoff: the one schedule every reconnecting loop of the
//! workspace follows (a lease to the service, an rpc endpoint's
//! registration, a bridge pull, a NATS connector).
//!
//! The first wait is `min`; each failed attempt doubles it up to `max`; a
//! success ([`Backoff::reset`]) starts over at `min`.

use std::time::Duration;

/// A doubling wait between reconnection attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// The schedule of the service's clients: 20 ms doubling to 500 ms.
    pub const SERVICE: Backoff =
        Backoff::new(Duration::from_millis(20), Duration::from_millis(500));

    /// Starts at `min`, doubles up to `max` (`max` below `min` is taken as
    /// `min`).
    pub const fn new(min: Duration, max: Duration) -> Backoff {
        let max = if max.as_nanos() < min.as_nanos() {
            min
        } else {
            max
        };
        Backoff {
            min,
            max,
            next: min,
        }
    }

    /// The wait before the next attempt; the one after is twice as long,
    /// up to the maximum.
    pub fn next_wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        wait
    }

    /// The wait before attempt `n` (0, 1, ...) of a schedule that started
    /// over at attempt 0: `min` doubled `n` times, up to `max`. For a
    /// client library that asks for the wait by attempt number.
    pub fn wait_before(&self, n: usize) -> Duration {
        let doublings = u32::try_from(n.min(32)).unwrap_or(32);
        self.min
            .saturating_mul(1u32 << doublings.min(31))
            .min(self.max)
    }

    /// After a success: the next wait is the shortest again.
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_and_starts_over() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(20), ms(100));
        let waits: Vec<_> = (0..5).map(|_| b.next_wait()).collect();
        assert_eq!(waits, [ms(20), ms(40), ms(80), ms(100), ms(100)]);
        b.reset();
        assert_eq!(b.next_wait(), ms(20));
        assert_eq!(Backoff::new(ms(50), ms(10)).next_wait(), ms(50));
        let b = Backoff::new(ms(50), ms(2000));
        let by_n: Vec<_> = [0, 1, 5, 6, 1000]
            .iter()
            .map(|&n| b.wait_before(n))
            .collect();
        assert_eq!(by_n, [ms(50), ms(100), ms(1600), ms(2000), ms(2000)]);
    }
}
