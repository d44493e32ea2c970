//! Removal history: which names were removed at which revision, and why (a delete or an
//! expiry), so that a wait that starts from an old revision still sees that a register it
//! watches was removed after it, and a replay can say `delete` or `expire` as the feed did.
//!
//! Bounded: it keeps the latest `capacity` removals. Older ones are forgotten, and `horizon`
//! remembers the newest forgotten revision: a question about a revision older than that cannot
//! be answered "no", so it is answered "changed" (a spurious wake, never a missed one).
//!
//! # Invariants
//!
//! * Lives inside the commit lock's state: it is written only by changes, and read by
//!   `changed_since` and `replay`, all under that lock. Removals arrive in increasing revision
//!   order.
//! * Outside a deferral, `kept` and `horizon` are exactly what recording every removal one by
//!   one (evicting the oldest beyond `capacity`) leaves.
//! * Every removal kept carries its cause, packed with its revision in one [`Stamp`]: the cause
//!   travels wherever the revision does (record, deferral tail, fold, eviction), so no step can
//!   lose it or pair it with another removal, and it costs no memory.
//! * **Deferral** (a mass expiry). A pass with more due timers than `capacity` would record
//!   removals that the same pass then evicts again: a million expiries at the default capacity
//!   insert and evict 900,000 tombstones, about 40% of the pass. So such a pass calls
//!   [`History::defer`] first. From then on every removal (the pass's and any other writer's)
//!   goes to `Deferred::tail`, a ring of the latest `capacity` removals, and the pass ends with
//!   [`History::fold`] steps that move the tail into `kept`. Folding is exact: the state after
//!   the last step is what recording every removal one by one would have left (tombstones,
//!   order with its causes, horizon), because only the latest `capacity` removals survive either way and the
//!   newest removal that fell out of the ring is the horizon recording one by one would reach.
//! * While deferred, answers stay safe: [`removed_after`] answers "maybe" for a name the
//!   deferral may have removed (a hash filter of its names, which can say yes wrongly but never
//!   no wrongly) when the question is older than the deferral's latest removal; otherwise the
//!   record answers exactly. [`removals_after`] answers what the fold will leave.
//!
//! [`removed_after`]: History::removed_after
//! [`removals_after`]: History::removals_after

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::BuildHasher;

use crate::store::feed::EventKind;
use crate::store::register::Revision;
use crate::sync::Arc;

type Hasher = foldhash::fast::RandomState;

/// Bits of the deferral's name filter per removal expected: 16, so a name the deferral did not
/// remove is wrongly reported "maybe removed" about 6% of the time (1 - e^(-1/16)), for 2 bytes
/// a due timer (2 MB for a million), freed when the fold ends.
const FILTER_BITS_PER_NAME: usize = 16;

#[derive(Debug)]
pub(crate) struct History {
    /// The removals on record, and their index by name.
    kept: Kept,
    /// How many removals to keep.
    capacity: usize,
    /// Revisions at or below this may have had removals that were forgotten.
    horizon: Revision,
    /// Removals recorded since [`History::defer`], not yet folded into `kept`.
    deferred: Option<Deferred>,
}

/// A removal's revision and cause in one word: the revision in the low 63 bits, [`EXPIRED`]
/// set for an expiry (clear for a delete).
///
/// Packed so that remembering the cause costs nothing: an order entry stays 24 bytes (a
/// separate flag would pad it to 32, 0.8 MB more at the default capacity). Revisions never
/// reach bit 63: the counter moves by one per change, and 2^63 changes take 292 years at a
/// billion a second.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Stamp(u64);

/// The bit of a [`Stamp`] that marks an expiry.
const EXPIRED: u64 = 1 << 63;

impl Stamp {
    /// `revision` removed by `kind`: [`EventKind::Expire`] is an expiry; anything else (only
    /// [`EventKind::Delete`] is ever recorded) a delete.
    fn new(revision: Revision, kind: EventKind) -> Self {
        debug_assert!(revision & EXPIRED == 0, "revision {revision} past 2^63");
        debug_assert!(kind != EventKind::Set, "a set is not a removal");
        let cause = if kind == EventKind::Expire {
            EXPIRED
        } else {
            0
        };
        Self((revision & !EXPIRED) | cause)
    }

    fn revision(self) -> Revision {
        self.0 & !EXPIRED
    }

    /// [`EventKind::Expire`] or [`EventKind::Delete`].
    fn kind(self) -> EventKind {
        if self.0 & EXPIRED == 0 {
            EventKind::Delete
        } else {
            EventKind::Expire
        }
    }
}

impl std::fmt::Debug for Stamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.revision(), self.kind())
    }
}

/// The removals on record.
///
/// Memory per removal kept: an `order` entry (24 bytes: a [`Stamp`] and the name's pointer),
/// a `tombstones` bucket (24 bytes and a control byte, in a power-of-two table at most 7/8
/// full: 131,072 buckets for the default 100,000, 33 bytes a removal), so about 57 bytes,
/// plus the name's own allocation, which the removed register leaves behind. The cause is in
/// the stamp and adds nothing.
#[derive(Debug, Default)]
pub(crate) struct Kept {
    /// Latest removal revision per name (the cause is in `order`: only a replay asks for it,
    /// and it walks `order`).
    tombstones: HashMap<Arc<str>, Revision, Hasher>,
    /// Removals in revision order, with their causes, for eviction and replay (entries a later
    /// removal of the same name superseded stay until evicted; `tombstones` tells them apart).
    order: VecDeque<(Stamp, Arc<str>)>,
}

// The packing above is what keeps an order entry at 24 bytes; say so if it ever stops.
const _: () = assert!(std::mem::size_of::<(Stamp, Arc<str>)>() == 24);

/// Removals recorded during a deferral.
#[derive(Debug)]
struct Deferred {
    /// The latest `capacity` removals recorded since the deferral began and not yet folded, in
    /// revision order, with their causes.
    tail: VecDeque<(Stamp, Arc<str>)>,
    /// The newest revision that fell out of the full `tail` unfolded: recording one by one,
    /// the removals in `tail` would have evicted it and everything before it.
    dropped: Option<Revision>,
    /// The newest revision recorded since the deferral began (0: none yet).
    latest: Revision,
    /// Every name recorded since the deferral began (folded or not), as hash bits.
    names: NameFilter,
}

/// A removal as [`History::removals_after`] answers it: name, revision, and
/// [`EventKind::Delete`] or [`EventKind::Expire`].
pub(crate) type Removed = (Arc<str>, Revision, EventKind);

/// A kept removal as answered.
fn removed((stamp, name): &(Stamp, Arc<str>)) -> Removed {
    (Arc::clone(name), stamp.revision(), stamp.kind())
}

/// What a fold step leaves for the caller to drop after releasing the commit lock (a hundred
/// thousand names take milliseconds to free).
#[derive(Debug, Default)]
#[must_use = "drop it after releasing the commit lock"]
pub(crate) struct Garbage {
    kept: Option<Kept>,
    deferred: Option<Deferred>,
}

impl Kept {
    /// Room for `capacity` removals, allocated before taking the commit lock.
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        Self {
            tombstones: HashMap::with_capacity_and_hasher(capacity, Hasher::default()),
            order: VecDeque::with_capacity(capacity),
        }
    }

    /// Records one removal, evicting the oldest beyond `capacity` (at least 1) and moving
    /// `horizon` to the newest evicted.
    fn record(&mut self, name: Arc<str>, stamp: Stamp, capacity: usize, horizon: &mut Revision) {
        // Evict before adding (the same end state as adding first), so that a full record
        // never needs room for `capacity + 1`.
        while self.order.len() >= capacity {
            let Some((evicted, name)) = self.order.pop_front() else {
                break;
            };
            let evicted = evicted.revision();
            if self.tombstones.get(&name) == Some(&evicted) {
                self.tombstones.remove(&name);
            }
            *horizon = evicted;
        }
        if self.order.len() == self.order.capacity() {
            // Doubling, but never past `capacity` (100,000 by default: 2.4 MB, not 3.1).
            let room = (self.order.len() * 2).max(16).min(capacity);
            self.order.reserve_exact(room - self.order.len());
        }
        self.tombstones.insert(Arc::clone(&name), stamp.revision());
        self.order.push_back((stamp, name));
    }

    /// Whether `stamp` is `name`'s latest removal on record (not superseded by a later one).
    fn is_latest(&self, stamp: Stamp, name: &str) -> bool {
        self.tombstones.get(name) == Some(&stamp.revision())
    }
}

impl History {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            kept: Kept::default(),
            capacity,
            horizon: 0,
            deferred: None,
        }
    }

    /// How many removals are kept.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Starts a deferral if a pass that may record `removals` removals would evict some of its
    /// own (more than the capacity). Returns whether a deferral is in progress; if so, the
    /// caller must run [`fold`](Self::fold) to completion when the pass ends.
    pub(crate) fn defer(&mut self, removals: usize) -> bool {
        if self.deferred.is_none() && self.capacity > 0 && removals > self.capacity {
            self.deferred = Some(Deferred {
                tail: VecDeque::with_capacity(self.capacity),
                dropped: None,
                latest: 0,
                names: NameFilter::new(removals),
            });
        }
        self.deferred.is_some()
    }

    /// Records that `name` was removed at `revision` by `kind`: [`EventKind::Delete`] or
    /// [`EventKind::Expire`], the kind of the removal's feed event (revisions arrive in
    /// increasing order).
    pub(crate) fn record(&mut self, name: Arc<str>, revision: Revision, kind: EventKind) {
        if self.capacity == 0 {
            self.horizon = revision;
            return;
        }
        let stamp = Stamp::new(revision, kind);
        match &mut self.deferred {
            None => self
                .kept
                .record(name, stamp, self.capacity, &mut self.horizon),
            Some(deferred) => {
                deferred.names.insert(&name);
                deferred.latest = revision;
                if deferred.tail.len() >= self.capacity {
                    if let Some((dropped, _)) = deferred.tail.pop_front() {
                        deferred.dropped = Some(dropped.revision());
                    }
                }
                deferred.tail.push_back((stamp, name));
            }
        }
    }

    /// Moves up to `limit` deferred removals into the record. `spare`, allocated before the
    /// commit lock was taken, replaces the record when the deferral outgrew the capacity (see
    /// [`needs_spare`](Self::needs_spare)); without one an empty record is used, which grows
    /// under the lock. Returns whether the deferral is over, and what to drop once the commit
    /// lock is released.
    pub(crate) fn fold(&mut self, limit: usize, spare: &mut Option<Kept>) -> (bool, Garbage) {
        let mut garbage = Garbage::default();
        let Some(deferred) = self.deferred.as_mut() else {
            return (true, garbage);
        };
        if let Some(dropped) = deferred.dropped.take() {
            // The tail is full: recording one by one, its removals alone would be on record,
            // and the last one they evicted is the one that fell out of the ring last.
            let fresh = spare.take().unwrap_or_default();
            garbage.kept = Some(std::mem::replace(&mut self.kept, fresh));
            self.horizon = dropped;
        }
        for _ in 0..limit {
            let Some((stamp, name)) = deferred.tail.pop_front() else {
                break;
            };
            self.kept
                .record(name, stamp, self.capacity, &mut self.horizon);
        }
        let done = deferred.tail.is_empty();
        if done {
            garbage.deferred = self.deferred.take();
        }
        (done, garbage)
    }

    /// Whether the next [`fold`](Self::fold) step replaces the record (so a spare is worth
    /// allocating): more removals were deferred than are kept.
    pub(crate) fn needs_spare(&self) -> bool {
        self.deferred
            .as_ref()
            .is_some_and(|deferred| deferred.dropped.is_some())
    }

    /// Whether `name` (absent now) may have been removed after revision `after`: true when a
    /// removal after `after` is on record, or when `after` is older than the history kept.
    /// During a deferral also when `after` is older than the latest deferred removal and `name`
    /// may be among the deferred ones.
    pub(crate) fn removed_after(&self, name: &str, after: Revision) -> bool {
        if let Some(deferred) = &self.deferred {
            if after < deferred.latest && deferred.names.may_contain(name) {
                return true;
            }
        }
        // Not removed during the deferral: the record (as it was when the deferral began, or
        // what the fold has rebuilt so far) answers exactly.
        match self.kept.tombstones.get(name) {
            Some(&removed) => removed > after,
            None => after < self.horizon,
        }
    }

    /// Removals after `after`, as (name, revision, kind) with kind [`EventKind::Delete`] or
    /// [`EventKind::Expire`], each name's latest only, in revision order; or `None` when
    /// `after` is older than the history kept. During a deferral, what recording every
    /// deferred removal would answer.
    pub(crate) fn removals_after(&self, after: Revision) -> Option<Vec<Removed>> {
        let Some(deferred) = &self.deferred else {
            if after < self.horizon {
                return None;
            }
            let start = self
                .kept
                .order
                .partition_point(|(stamp, _)| stamp.revision() <= after);
            return Some(
                self.kept
                    .order
                    .range(start..)
                    .filter(|(stamp, name)| self.kept.is_latest(*stamp, name))
                    .map(removed)
                    .collect(),
            );
        };
        // Recording the tail would evict the first `evicted` kept removals (all of them if
        // removals fell out of the tail) and move the horizon to the last one evicted.
        let kept = &self.kept.order;
        let (evicted, horizon) = match deferred.dropped {
            Some(dropped) => (kept.len(), dropped),
            None => {
                let evicted = (kept.len() + deferred.tail.len()).saturating_sub(self.capacity);
                let horizon = match evicted.checked_sub(1).and_then(|last| kept.get(last)) {
                    Some(&(stamp, _)) => stamp.revision(),
                    None => self.horizon,
                };
                (evicted, horizon)
            }
        };
        if after < horizon {
            return None;
        }
        let start = kept
            .partition_point(|(stamp, _)| stamp.revision() <= after)
            .max(evicted);
        let tail_start = deferred
            .tail
            .partition_point(|(stamp, _)| stamp.revision() <= after);
        // Each name's latest removal only: walk newest first, keep a name the first time.
        let mut seen = HashSet::with_hasher(Hasher::default());
        let mut removals: Vec<Removed> = deferred
            .tail
            .range(tail_start..)
            .rev()
            .chain(kept.range(start..).rev())
            .filter(|(_, name)| seen.insert(&**name))
            .map(removed)
            .collect();
        removals.reverse();
        Some(removals)
    }

    /// The newest revision whose removals may have been forgotten.
    #[cfg(any(test, feature = "persist"))]
    pub(crate) fn horizon(&self) -> Revision {
        self.horizon
    }

    /// Forgets every removal at or before `revision` as if evicted: a restored registry whose
    /// saved history began after `revision` cannot say what was removed before it. Only
    /// before anything later is recorded.
    #[cfg(feature = "persist")]
    pub(crate) fn forget_through(&mut self, revision: Revision) {
        debug_assert!(self.deferred.is_none(), "not during a deferral");
        self.horizon = self.horizon.max(revision);
    }
}

/// A set of names as hash bits: `may_contain` is true for every inserted name and for a few
/// others (a one-hash Bloom filter).
#[derive(Debug)]
struct NameFilter {
    /// The bits; their count is a power of two.
    words: Vec<u64>,
    /// Bit count minus one.
    mask: u64,
    hasher: Hasher,
}

impl NameFilter {
    /// A filter for about `names` names.
    fn new(names: usize) -> Self {
        let bits = names
            .saturating_mul(FILTER_BITS_PER_NAME)
            .clamp(64, 1 << 40)
            .next_power_of_two();
        Self {
            // Zeroed pages from the allocator: only the bits touched cost memory.
            words: vec![0; bits / 64],
            mask: bits as u64 - 1,
            hasher: Hasher::default(),
        }
    }

    /// Where `name`'s bit is: (word, bit in word).
    fn position(&self, name: &str) -> (usize, u64) {
        let bit = self.hasher.hash_one(name) & self.mask;
        ((bit >> 6) as usize, 1 << (bit & 63))
    }

    fn insert(&mut self, name: &str) {
        let (word, bit) = self.position(name);
        if let Some(word) = self.words.get_mut(word) {
            *word |= bit;
        }
    }

    fn may_contain(&self, name: &str) -> bool {
        let (word, bit) = self.position(name);
        // A word out of range cannot happen (`mask` < bit count); answer "maybe" if it did.
        self.words.get(word).is_none_or(|word| word & bit != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DELETE: EventKind = EventKind::Delete;
    const EXPIRE: EventKind = EventKind::Expire;

    #[test]
    fn remembers_removals_and_forgets_the_oldest() {
        let mut history = History::new(2);
        history.record(Arc::from("a"), 5, DELETE);
        history.record(Arc::from("b"), 7, DELETE);
        assert!(history.removed_after("a", 4));
        assert!(!history.removed_after("a", 5));
        assert!(!history.removed_after("c", 0), "nothing forgotten yet");
        history.record(Arc::from("c"), 9, DELETE);
        assert_eq!(history.horizon(), 5);
        assert!(history.removed_after("a", 4), "forgotten: cannot say no");
        assert!(!history.removed_after("a", 5));
        assert_eq!(
            history.removals_after(6),
            Some(vec![
                (Arc::from("b"), 7, DELETE),
                (Arc::from("c"), 9, DELETE)
            ])
        );
        assert_eq!(history.removals_after(4), None);
    }

    #[test]
    fn a_name_removed_twice_keeps_its_latest_removal() {
        let mut history = History::new(3);
        history.record(Arc::from("a"), 2, DELETE);
        history.record(Arc::from("a"), 4, DELETE);
        assert!(history.removed_after("a", 3));
        assert_eq!(
            history.removals_after(0),
            Some(vec![(Arc::from("a"), 4, DELETE)])
        );
    }

    /// Each removal keeps its own cause, through eviction and a name removed again by the
    /// other cause; the packing leaves the revision whole.
    #[test]
    fn remembers_whether_a_removal_was_a_delete_or_an_expiry() {
        let mut history = History::new(3);
        history.record(Arc::from("a"), 1, EXPIRE);
        history.record(Arc::from("b"), 2, DELETE);
        history.record(Arc::from("c"), 3, EXPIRE);
        assert_eq!(
            history.removals_after(0),
            Some(vec![
                (Arc::from("a"), 1, EXPIRE),
                (Arc::from("b"), 2, DELETE),
                (Arc::from("c"), 3, EXPIRE),
            ])
        );
        // `a` again, deleted this time: its latest cause wins; evicts `a`'s expiry at 1.
        history.record(Arc::from("a"), 4, DELETE);
        assert_eq!(history.horizon(), 1);
        assert!(history.removed_after("c", 2));
        assert!(!history.removed_after("c", 3));
        assert_eq!(
            history.removals_after(1),
            Some(vec![
                (Arc::from("b"), 2, DELETE),
                (Arc::from("c"), 3, EXPIRE),
                (Arc::from("a"), 4, DELETE),
            ])
        );
        for (revision, kind) in [(0, DELETE), (7, EXPIRE), (EXPIRED - 1, EXPIRE)] {
            let stamp = Stamp::new(revision, kind);
            assert_eq!((stamp.revision(), stamp.kind()), (revision, kind));
        }
    }

    /// A small deterministic generator (xorshift), so the cases below need no dependency.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    /// Everything a caller can observe: every question about every name and revision, plus the
    /// internal state (tombstones, order, horizon).
    fn observe(history: &History, names: &[Arc<str>], up_to: Revision) -> String {
        let mut out = String::new();
        for after in 0..=up_to {
            out.push_str(&format!("{after}: {:?}\n", history.removals_after(after)));
            for name in names {
                out.push_str(&format!(" {}", history.removed_after(name, after)));
            }
            out.push('\n');
        }
        out
    }

    fn state(history: &History) -> String {
        let mut tombstones: Vec<_> = history.kept.tombstones.iter().collect();
        tombstones.sort();
        format!(
            "tombstones {tombstones:?}\norder {:?}\nhorizon {}\ndeferred {}",
            history.kept.order,
            history.horizon,
            history.deferred.is_some()
        )
    }

    /// Folds in steps of `step`, checking after each that every answer is safe.
    fn fold_all(history: &mut History, step: usize, spare: bool) {
        let mut spare = (spare && history.needs_spare()).then(|| Kept::with_capacity(8));
        loop {
            let (done, garbage) = history.fold(step, &mut spare);
            drop(garbage);
            if done {
                break;
            }
        }
    }

    /// The same removals recorded one by one (`exact`) and with a deferral (`deferred`), and
    /// the truth.
    struct Twin {
        exact: History,
        deferred: History,
        revision: Revision,
        removed: Vec<(Revision, Arc<str>)>,
    }

    impl Twin {
        fn remove(&mut self, name: &Arc<str>, kind: EventKind) {
            self.revision += 1;
            self.exact.record(Arc::clone(name), self.revision, kind);
            self.deferred.record(Arc::clone(name), self.revision, kind);
            self.removed.push((self.revision, Arc::clone(name)));
        }
    }

    /// A deferred pass (with duplicate names, other removals interleaved, fewer removals than
    /// due, and prior history, deletes and expiries mixed) folds into exactly the state
    /// recording one by one leaves, causes included, and while deferred it never answers "not
    /// removed" for a name removed after the question.
    #[test]
    fn a_deferred_pass_folds_into_what_recording_one_by_one_leaves() {
        let names: Vec<Arc<str>> = (0..12).map(|i| Arc::from(format!("n{i}"))).collect();
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for case in 0..400 {
            let capacity = 1 + rng.below(6) as usize;
            let mut twin = Twin {
                exact: History::new(capacity),
                deferred: History::new(capacity),
                revision: 0,
                removed: Vec::new(),
            };
            let pick = |rng: &mut Rng| Arc::clone(&names[rng.below(12) as usize]);
            let cause = |rng: &mut Rng| [DELETE, EXPIRE][rng.below(2) as usize];
            for _ in 0..rng.below(10) {
                twin.remove(&pick(&mut rng), cause(&mut rng));
            }
            // Due timers: sometimes fewer expire than are due (refreshed in the meantime).
            let due = capacity + 1 + rng.below(10) as usize;
            let expiring = rng.below(due as u64 + 1) as usize;
            assert!(twin.deferred.defer(due));
            for _ in 0..expiring {
                // The pass's expiries, and now and then another writer's delete between its
                // batches.
                let kind = if rng.below(4) == 0 { DELETE } else { EXPIRE };
                twin.remove(&pick(&mut rng), kind);
                // Safe while deferred: a name removed after `after` is never "not removed".
                for after in 0..=twin.revision {
                    for (_, name) in twin.removed.iter().filter(|(r, _)| *r > after) {
                        assert!(twin.deferred.removed_after(name, after), "case {case}");
                    }
                }
            }
            // The answers while deferred are the ones the fold will reach.
            for after in 0..=twin.revision {
                assert_eq!(
                    twin.deferred.removals_after(after),
                    twin.exact.removals_after(after),
                    "case {case}, after {after}"
                );
            }
            // Another writer's removal between fold steps.
            let step = 1 + rng.below(4) as usize;
            let (done, garbage) = twin.deferred.fold(step, &mut None);
            drop(garbage);
            if !done && rng.below(2) == 0 {
                twin.remove(&pick(&mut rng), cause(&mut rng));
            }
            fold_all(&mut twin.deferred, step, case % 2 == 0);
            assert_eq!(state(&twin.deferred), state(&twin.exact), "case {case}");
            let up_to = twin.revision + 1;
            assert_eq!(
                observe(&twin.deferred, &names, up_to),
                observe(&twin.exact, &names, up_to),
                "case {case}"
            );
        }
    }

    #[test]
    fn a_pass_within_the_capacity_is_not_deferred() {
        let mut history = History::new(3);
        assert!(!history.defer(3));
        assert!(!History::new(0).defer(10));
        assert!(history.defer(4));
    }
}
