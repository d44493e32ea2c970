//! Time, injected: the registry reads time only through a [`Clock`], so tests drive expiry with
//! a [`ManualClock`] instead of sleeping.

use std::fmt;
use std::sync::atomic::{AtomicU64 as StdAtomicU64, Ordering as StdOrdering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A source of monotonic time in milliseconds since an arbitrary origin, and of wall time.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Milliseconds since this clock's origin; never decreases.
    fn now_ms(&self) -> u64;

    /// Wall time, milliseconds since the Unix epoch: what a deadline is stored as when it must
    /// mean something after a restart (monotonic time starts again at every start). May jump.
    /// The default reads the system's real-time clock.
    fn wall_ms(&self) -> u64 {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
    }
}

/// The wall time a [`ManualClock`] reads at its time zero: 2026-01-01T00:00:00Z.
pub(crate) const MANUAL_EPOCH_MS: u64 = 1_767_225_600_000;

/// The real monotonic clock (`std::time::Instant`), counted from when it was made.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    /// A clock whose origin is now.
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// A clock that moves only when told to, wall time included (from 2026-01-01T00:00:00Z).
/// Clones share the same time.
///
/// ```
/// use reg::ManualClock;
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// clock.advance(Duration::from_secs(2));
/// assert_eq!(clock.now(), Duration::from_secs(2));
/// ```
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    // std's atomic even under loom: the clock is test input, not part of any protocol a model
    // checks.
    ms: Arc<StdAtomicU64>,
}

impl ManualClock {
    /// A clock at time zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock forward by `by` (rounded down to whole milliseconds).
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        // Ordering: Relaxed: the value is the only data; readers need no other memory.
        let _ = self
            .ms
            .fetch_update(StdOrdering::Relaxed, StdOrdering::Relaxed, |ms| {
                Some(ms.saturating_add(by))
            });
    }

    /// The current time since the clock's origin.
    pub fn now(&self) -> Duration {
        Duration::from_millis(self.now_ms())
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        // Ordering: Relaxed: see `advance`.
        self.ms.load(StdOrdering::Relaxed)
    }

    /// 2026-01-01T00:00:00Z plus the clock's time: wall time moves only when told to, too.
    fn wall_ms(&self) -> u64 {
        MANUAL_EPOCH_MS.saturating_add(self.now_ms())
    }
}
