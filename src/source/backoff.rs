//! Capped exponential backoff for retrying transient fetch errors: `base`,
//! `2·base`, `4·base`, … up to `max`, each spread by up to ±10% so that many
//! hosts behind one remote do not retry in lockstep. Pure: it only counts and
//! computes; the caller sleeps.

use std::time::Duration;

/// Retry delays after consecutive failures.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    failures: u32,
    /// xorshift state; `None` when jitter is off.
    jitter: Option<u64>,
}

impl Backoff {
    /// Starts at `base`, doubles per failure, never exceeds `max`.
    pub fn new(base: Duration, max: Duration) -> Backoff {
        use std::hash::{BuildHasher, Hasher};
        // RandomState is seeded per process: enough to decorrelate hosts.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(0x5eed);
        Backoff {
            base,
            max: max.max(base),
            failures: 0,
            jitter: Some(h.finish() | 1),
        }
    }

    /// The same delays without jitter (for tests and predictable logs).
    pub fn without_jitter(mut self) -> Backoff {
        self.jitter = None;
        self
    }

    /// Records a failure and returns how long to wait before the next try:
    /// `base·2^(n-1)` for the n-th consecutive failure, capped at `max`, then
    /// spread by up to ±10% (still never above `max`).
    pub fn fail(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let exp = (self.failures - 1).min(31);
        let delay = self
            .base
            .checked_mul(1u32 << exp)
            .unwrap_or(self.max)
            .min(self.max);
        match &mut self.jitter {
            None => delay,
            Some(state) => {
                // xorshift64
                let mut x = *state;
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *state = x;
                // A factor in [0.9, 1.1].
                let unit = (x >> 11) as f64 / (1u64 << 53) as f64;
                delay.mul_f64(0.9 + 0.2 * unit).min(self.max)
            }
        }
    }

    /// Records a success: the next failure starts again at `base`.
    pub fn succeed(&mut self) {
        self.failures = 0;
    }

    /// Consecutive failures since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn doubles_up_to_the_cap() {
        let mut b = Backoff::new(S(5), S(60)).without_jitter();
        let got: Vec<_> = (0..6).map(|_| b.fail()).collect();
        assert_eq!(got, [S(5), S(10), S(20), S(40), S(60), S(60)]);
        assert_eq!(b.failures(), 6);
    }

    #[test]
    fn success_resets() {
        let mut b = Backoff::new(S(1), S(10)).without_jitter();
        b.fail();
        b.fail();
        b.succeed();
        assert_eq!(b.failures(), 0);
        assert_eq!(b.fail(), S(1));
    }

    #[test]
    fn many_failures_do_not_overflow() {
        let mut b = Backoff::new(S(1), S(300)).without_jitter();
        for _ in 0..100 {
            assert!(b.fail() <= S(300));
        }
        let mut b = Backoff::new(S(u64::MAX / 2 + 1), Duration::MAX).without_jitter();
        b.fail();
        // 2·base overflows: the cap applies.
        assert_eq!(b.fail(), Duration::MAX);
    }

    #[test]
    fn jitter_stays_within_ten_percent_and_under_the_cap() {
        let mut b = Backoff::new(S(10), S(1000));
        let first = b.fail();
        assert!(first >= S(9) && first <= S(11), "{first:?}");
        let mut b = Backoff::new(S(100), S(100));
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..50 {
            let d = b.fail();
            assert!(d >= S(90) && d <= S(100), "{d:?}");
            seen.insert(d);
        }
        assert!(seen.len() > 1, "jitter should vary the delay");
    }

    #[test]
    fn max_below_base_is_raised_to_base() {
        let mut b = Backoff::new(S(10), S(1)).without_jitter();
        assert_eq!(b.fail(), S(10));
    }
}
