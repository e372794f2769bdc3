//! How often a page thread looks at a journal: the writer's preparer
//! (`prepare.rs`) and the readers' [`PageHelper`](crate::PageHelper)
//! (`exchange.rs`) are polled, never woken (a page switch on the hot path
//! makes no system call to wake them), so each looks every eighth of the
//! time since its journal last turned a page: a journal that fills a page
//! in 8 ms is looked at every millisecond, one that is idle at the longest
//! wait the caller allows.

use std::time::{Duration, Instant};

/// When the journal a page thread serves last turned a page.
#[derive(Debug)]
pub(crate) struct Pace {
    page: u64,
    since: Instant,
}

impl Pace {
    /// At page `page` since `now`.
    pub(crate) fn new(page: u64, now: Instant) -> Self {
        Pace { page, since: now }
    }

    /// Notes that the journal is at `page` at `now` (the clock restarts
    /// when that is a new page) and returns how long to wait before the
    /// next look: an eighth of the time since the page was turned, no less
    /// than `shortest` and, unless that is longer, no more than `longest`.
    #[inline]
    pub(crate) fn wait(
        &mut self,
        page: u64,
        now: Instant,
        shortest: Duration,
        longest: Duration,
    ) -> Duration {
        if page != self.page {
            (self.page, self.since) = (page, now);
        }
        (now.saturating_duration_since(self.since) / 8)
            .min(longest)
            .max(shortest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_eighth_of_the_time_since_the_page_turned() {
        let ms = Duration::from_millis;
        let t0 = Instant::now();
        let mut p = Pace::new(1, t0);
        assert_eq!(p.wait(1, t0 + ms(80), ms(1), ms(20)), ms(10));
        assert_eq!(p.wait(1, t0 + ms(800), ms(1), ms(20)), ms(20));
        // A new page restarts the clock.
        assert_eq!(p.wait(2, t0 + ms(800), ms(1), ms(20)), ms(1));
        assert_eq!(p.wait(2, t0 + ms(840), ms(1), ms(20)), ms(5));
    }
}
