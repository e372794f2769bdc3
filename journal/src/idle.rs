//! The wait strategy of a polling loop: how a reader, the bridge, an rpc
//! responder or `tape tail` waits after finding nothing new.

/// An idle strategy for a polling loop: spin, then yield, then park (sleep
/// with a growing timeout), so that more pollers than cores never starve
/// the writer. Call [`Idle::idle`] after an empty poll and [`Idle::reset`]
/// after a frame.
///
/// ```
/// let mut idle = tape_journal::Idle::new();
/// for _ in 0..10 { idle.idle(); }
/// idle.reset();
/// ```
#[derive(Debug, Clone)]
pub struct Idle {
    n: u32,
    spins: u32,
    yields: u32,
    max_park: std::time::Duration,
}

impl Default for Idle {
    fn default() -> Self {
        Idle::new()
    }
}

impl Idle {
    /// 1000 spins, then 100 yields, then parks growing from 50 µs to 1 ms.
    pub fn new() -> Idle {
        Idle::with(1000, 100, std::time::Duration::from_millis(1))
    }

    /// A strategy with the given number of spins and yields before parking,
    /// and the longest park.
    pub fn with(spins: u32, yields: u32, max_park: std::time::Duration) -> Idle {
        Idle {
            n: 0,
            spins,
            yields,
            max_park,
        }
    }

    /// Waits a little, longer the longer nothing came.
    #[inline]
    pub fn idle(&mut self) {
        self.n = self.n.saturating_add(1);
        if self.n <= self.spins {
            std::hint::spin_loop();
        } else if self.n <= self.spins + self.yields {
            std::thread::yield_now();
        } else {
            let k = (self.n - self.spins - self.yields).min(20);
            let park = std::time::Duration::from_micros(50 * k as u64).min(self.max_park);
            std::thread::sleep(park);
        }
    }

    /// Whether the strategy has reached parking (the caller may flush
    /// output or do housekeeping then).
    pub fn is_parking(&self) -> bool {
        self.n > self.spins + self.yields
    }

    /// Back to spinning, after a frame came.
    #[inline]
    pub fn reset(&mut self) {
        self.n = 0;
    }
}
