//! Exponential backoff with jitter, for reconnecting.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// Delays that double from `min` up to `max`, each drawn uniformly from the upper half of the
/// current step ("equal jitter"): never zero, so a down server is not hammered, and spread out,
/// so many clients that lost the same server do not come back in lock-step.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    /// The current step: the longest the next delay can be.
    step: Duration,
    /// xorshift64 state; never zero.
    rng: u64,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        let min = min.max(Duration::from_millis(1));
        // A per-process random seed without a dependency: std's hasher keys are random.
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u64(0x5eed);
        Self {
            min,
            max: max.max(min),
            step: min,
            rng: hasher.finish() | 1,
        }
    }

    /// The next delay; the one after it is up to twice as long.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let step = self.step;
        self.step = (self.step * 2).min(self.max);
        let half = step / 2;
        // A uniform fraction in [0, 1) from the top 53 bits.
        let fraction = (self.next_random() >> 11) as f64 / (1u64 << 53) as f64;
        half + half.mul_f64(fraction)
    }

    /// Back to the shortest delay, after a success.
    pub(crate) fn reset(&mut self) {
        self.step = self.min;
    }

    fn next_random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_with_jitter_and_reset() {
        let min = Duration::from_millis(100);
        let max = Duration::from_secs(2);
        let mut backoff = Backoff::new(min, max);
        let mut step = min;
        for _ in 0..10 {
            let delay = backoff.next_delay();
            assert!(
                delay >= step / 2 && delay <= step,
                "{delay:?} for step {step:?}"
            );
            step = (step * 2).min(max);
        }
        backoff.reset();
        assert!(backoff.next_delay() <= min);
    }
}
