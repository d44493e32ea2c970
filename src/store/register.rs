//! A register: its immutable snapshot ([`Register`]) and the mutable cell that holds it
//! ([`Entry`]).
//!
//! # Invariants
//!
//! * `Entry::snapshot` is replaced only under the registry's commit lock (see `store/mod.rs`),
//!   so snapshots of one register are published in revision order. Readers load it without any
//!   lock and always see one whole snapshot.
//! * `Entry::deadline` is the register's expiry time in clock milliseconds, or [`DEAD`] once
//!   the register has been removed (expired or deleted). It moves to `DEAD` exactly once, by a
//!   compare-exchange under the commit lock, and never leaves `DEAD`. A refresh extends it with
//!   a compare-exchange *without* the commit lock and fails if it finds `DEAD`; the refresher then
//!   takes the slow path and re-creates the register. So a refresh is either ordered before an
//!   expiry (which then sees the later deadline and reschedules) or after it (and re-creates):
//!   a refreshed register is never lost.
//! * `Entry::timer_gen` names the one wheel timer that is current for this entry; timers carrying
//!   an older generation are stale and dropped when they fire (moka's scheme). It is bumped only
//!   when a deadline moves *earlier* than the current timer, the rare case a lazy reschedule
//!   cannot serve.

use crate::json::Json;
use crate::sync::{Arc, AtomicU64, Ordering, SnapshotCell};

/// A position in the registry's history: every change (create, value or metadata change,
/// removal, expiry) takes the next revision of one registry-wide counter. Revision 0 is "before
/// anything happened".
pub type Revision = u64;

/// `Entry::deadline` of a removed register.
pub(crate) const DEAD: u64 = u64::MAX;

/// The largest deadline a live register can have (one below [`DEAD`]).
pub(crate) const MAX_DEADLINE: u64 = u64::MAX - 1;

/// An immutable snapshot of one register, as of its last change.
///
/// Values and metadata are [`Json`] in canonical form, so comparing them is a byte compare and
/// writing them out never re-serializes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Register {
    pub(crate) name: Arc<str>,
    pub(crate) value: Json,
    /// `None` when the metadata is empty: omitted, `null` and `{}` are the same.
    pub(crate) metadata: Option<Json>,
    /// The revision of this register's last change.
    pub(crate) revision: Revision,
    /// The revision at which this register was created.
    pub(crate) created: Revision,
}

impl Register {
    /// The register's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The name as a shared string (no allocation to keep it).
    pub fn name_arc(&self) -> &Arc<str> {
        &self.name
    }

    /// The value (any JSON, `null` included).
    pub fn value(&self) -> &Json {
        &self.value
    }

    /// The metadata object, or `None` when it is empty.
    pub fn metadata(&self) -> Option<&Json> {
        self.metadata.as_ref()
    }

    /// The revision of the register's last change.
    pub fn revision(&self) -> Revision {
        self.revision
    }

    /// The revision at which the register was created.
    pub fn created(&self) -> Revision {
        self.created
    }

    /// Whether `value` and `metadata` equal this register's (a byte compare).
    pub(crate) fn same_content(&self, value: &Json, metadata: &Option<Json>) -> bool {
        self.value == *value && self.metadata == *metadata
    }
}

/// The live cell behind one name in the registry map.
#[derive(Debug)]
pub(crate) struct Entry {
    /// The current snapshot; replaced (under the commit lock) on every change.
    pub(crate) snapshot: SnapshotCell<Register>,
    /// Expiry time in clock milliseconds, or [`DEAD`]. See the module invariants.
    pub(crate) deadline: AtomicU64,
    /// Generation of the wheel timer that is current for this entry.
    pub(crate) timer_gen: AtomicU64,
    /// The TTL of the latest write, in milliseconds (what a snapshot of the registry keeps, so
    /// a restored register gets its own TTL back).
    ttl_ms: AtomicU64,
}

/// What [`Entry::extend`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Extend {
    /// The deadline was moved; it was `previous` before.
    Moved { previous: u64 },
    /// The entry is dead (removed); the caller must re-create the register.
    Dead,
}

impl Entry {
    pub(crate) fn new(register: Arc<Register>, deadline: u64, ttl_ms: u64) -> Self {
        Self {
            snapshot: SnapshotCell::new(register),
            deadline: AtomicU64::new(deadline.min(MAX_DEADLINE)),
            timer_gen: AtomicU64::new(0),
            ttl_ms: AtomicU64::new(ttl_ms),
        }
    }

    /// The TTL of the latest write, in milliseconds.
    pub(crate) fn ttl_ms(&self) -> u64 {
        // Ordering: Relaxed: a figure for snapshots; it guards no other memory.
        self.ttl_ms.load(Ordering::Relaxed)
    }

    /// Records the TTL of a write (a refresh may change it).
    pub(crate) fn set_ttl_ms(&self, ttl_ms: u64) {
        // Ordering: Relaxed: see `ttl_ms`. Skipped when unchanged, so hot refreshes of one
        // register do not contend on its cache line.
        if self.ttl_ms.load(Ordering::Relaxed) != ttl_ms {
            self.ttl_ms.store(ttl_ms, Ordering::Relaxed);
        }
    }

    pub(crate) fn name(&self) -> Arc<str> {
        self.snapshot.peek(|r| Arc::clone(&r.name))
    }

    /// Sets the deadline unless the entry is dead. Lock-free; used by refreshes.
    pub(crate) fn extend(&self, deadline: u64) -> Extend {
        let deadline = deadline.min(MAX_DEADLINE);
        // Ordering: Acquire pairs with the AcqRel compare-exchange to DEAD in `kill`, so a
        // refresher that sees DEAD also sees the removal that went with it.
        let mut current = self.deadline.load(Ordering::Acquire);
        loop {
            if current == DEAD {
                return Extend::Dead;
            }
            // Ordering: AcqRel: Release publishes the new deadline to the expiry thread's
            // Acquire load in `kill`/`expire`; Acquire as above.
            match self.deadline.compare_exchange_weak(
                current,
                deadline,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Extend::Moved { previous: current },
                Err(actual) => current = actual,
            }
        }
    }

    /// Marks the entry dead if its deadline is still `observed`. Called under the commit lock.
    /// Fails (returning the deadline found) when a refresh moved it in the meantime.
    pub(crate) fn kill_if(&self, observed: u64) -> Result<(), u64> {
        // Ordering: AcqRel pairs with the compare-exchange in `extend`: exactly one of a racing
        // refresh and this expiry wins, and each sees the other's write if it loses.
        self.deadline
            .compare_exchange(observed, DEAD, Ordering::AcqRel, Ordering::Acquire)
            .map(|_| ())
    }

    /// Marks the entry dead unconditionally (a delete). Called under the commit lock.
    pub(crate) fn kill(&self) {
        // Ordering: Release pairs with the Acquire loads in `extend`.
        self.deadline.store(DEAD, Ordering::Release);
    }

    pub(crate) fn deadline(&self) -> u64 {
        // Ordering: Acquire pairs with the Release half of `extend`'s compare-exchange.
        self.deadline.load(Ordering::Acquire)
    }

    /// The generation of the current timer.
    pub(crate) fn timer_gen(&self) -> u64 {
        // Ordering: Acquire pairs with the AcqRel increment in `next_timer_gen`.
        self.timer_gen.load(Ordering::Acquire)
    }

    /// Starts a new timer generation, making every older timer stale.
    pub(crate) fn next_timer_gen(&self) -> u64 {
        // Ordering: AcqRel: a stale-timer check (Acquire in `timer_gen`) that sees this
        // increment drops the older timer.
        self.timer_gen.fetch_add(1, Ordering::AcqRel) + 1
    }
}

/// A wheel timer for one entry: when it fires, the expiry pass checks the entry's deadline.
#[derive(Debug, Clone)]
pub(crate) struct Timer {
    pub(crate) entry: Arc<Entry>,
    /// The entry's timer generation when this timer was made.
    pub(crate) gen: u64,
    /// When the timer fires, in clock milliseconds.
    pub(crate) at: u64,
}
