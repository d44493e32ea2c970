//! A hierarchical timing wheel: the registry's schedule of register expiries.
//!
//! # Structure
//!
//! [`Wheel`] keeps items in [`LEVELS`] levels of [`SLOTS`] slots each. Level `L` covers
//! [`SLOT_BITS`] bits of a deadline, bits `6L..6L+6`: each of its slots spans `64^L` ms and the
//! whole level spans `64^(L+1)` ms:
//!
//! | level | slot span  | level span           |
//! | ----- | ---------- | -------------------- |
//! | 0     | 1 ms       | 64 ms                |
//! | 1     | 64 ms      | 4.1 s                |
//! | 2     | 4.1 s      | 4.4 min              |
//! | 3     | 4.4 min    | 4.7 h                |
//! | 4     | 4.7 h      | 12.4 days            |
//! | 5     | 12.4 days  | 2^36 ms ≈ 2.18 years |
//!
//! An item with deadline `d` scheduled when the wheel's time is `now < d` goes to the level of
//! the highest 6-bit group in which `d` and `now` differ, `level = msb((now ^ d) | 63) / 6`, in
//! slot `(d >> 6·level) & 63`. So `d` and `now` agree on every bit above that level, and the
//! item's slot is strictly after `now`'s slot on that level. Each level has a `u64` occupancy
//! bitmap, so the next occupied slot is one `rotate_right` + `trailing_zeros` away, and the
//! earliest occupied slot of the whole wheel is on the lowest non-empty level: finding it costs
//! O(levels) no matter how many items are scheduled.
//!
//! When time reaches the start of a slot on level `L > 0`, the slot is *cascaded*: every item
//! in it is either due (`deadline <= now`) or re-placed, which puts it on a level below `L`
//! because it now differs from the wheel's time only below bit `6L`. A level-0 slot holds one
//! millisecond, so everything in it is due when it is reached. Each item is therefore touched at
//! most once per level on its way down, and an [`advance`](Wheel::advance) costs O(levels) plus
//! the items it cascades or fires, however many milliseconds it skips.
//!
//! Deadlines that differ from `now` at bit 36 or above, i.e. in a later 2^36 ms-aligned *epoch*
//! (everything more than ~2.2 years ahead, and nearer ones across an epoch boundary), go to an
//! *overflow* list. When the wheel's time reaches the start of the earliest overflow deadline's
//! epoch (the levels are empty by then, as everything on them is in the current epoch), the
//! whole list is re-examined: items in the new epoch move onto the levels, later ones stay.
//! That costs the list's length at most once per epoch the wheel enters, i.e. once per ~2.2
//! years of wheel time.
//! Deadlines up to `u64::MAX` are therefore exact; nothing is clamped, lost, or fired early.
//!
//! # Units
//!
//! Every time is a `u64` count of milliseconds on the registry's clock; the resolution is 1 ms.
//!
//! # Why time is an argument
//!
//! The wheel never reads a clock: the expiry thread passes `now` to
//! [`advance`](Wheel::advance). That keeps the wheel a plain deterministic data structure that
//! tests drive with any time sequence (including jumps of years) without sleeping, and leaves
//! the one decision about which clock the registry uses to its owner (as moka's `TimerWheel`
//! and tokio's driver do). It is owned by a single thread, hence `&mut self` and no locks.

use std::fmt;

/// Bits of a deadline (in ms) that one level covers: 64 slots, so one `u64` bitmap holds a
/// level's occupancy. Tokio's `LEVEL_MULT` (64) is the same choice.
const SLOT_BITS: u32 = 6;

/// Slots per level: `2^SLOT_BITS`.
const SLOTS: usize = 1 << SLOT_BITS;

/// Masks a value to a slot index; every `x & SLOT_MASK` is `< SLOTS`, which is what makes the
/// slot indexing in this module panic-free.
const SLOT_MASK: u64 = SLOTS as u64 - 1;

/// Levels in the wheel: 6 levels × 6 bits = 36 bits of ms, so deadlines up to 2^36 ms
/// (≈ 2.18 years) ahead are placed directly; tokio uses the same 6 levels. Later ones wait in
/// the overflow list.
const LEVELS: usize = 6;

/// Span of the whole wheel in ms, 2^36 ms ≈ 2.18 years: the size of an *epoch*. Items whose
/// deadline is in a later epoch than the wheel's time wait in the overflow list.
const WHEEL_SPAN_MS: u64 = 1 << (SLOT_BITS * LEVELS as u32);

/// Largest slot buffer (in entries) kept for reuse after its slot is cascaded. Reuse spares an
/// allocation per busy slot per rotation under steady load; the cap keeps one burst (say
/// 1,000,000 registers expiring together) from pinning its memory for good.
const RETAINED_SLOT_CAPACITY: usize = 1024;

/// A slot's (or the overflow list's) contents: `(deadline in ms, item)` pairs. The deadline is
/// kept so a cascade can fire or re-place each item exactly.
type Entries<T> = Vec<(u64, T)>;

/// A hierarchical timing wheel of items of type `T`, keyed by deadline in ms (see the
/// [module docs](self)).
pub(crate) struct Wheel<T> {
    /// The wheel's time in ms. Every item on `levels` or in `overflow` has a later deadline;
    /// it only moves forward.
    elapsed: u64,
    /// The levels, lowest (1 ms slots) first; boxed so the ~9 KiB of slot headers don't sit
    /// inline in the owner.
    levels: Box<[Level<T>; LEVELS]>,
    /// Items whose deadline is in a later epoch ([`WHEEL_SPAN_MS`]) than `elapsed`, so beyond
    /// what the levels can place; re-examined when the wheel reaches the earliest one's epoch.
    overflow: Entries<T>,
    /// The earliest deadline in `overflow` (ms), `u64::MAX` when it is empty; kept so
    /// `next_deadline` and `advance` need not scan the list.
    overflow_min: u64,
    /// Items inserted with a deadline at or before `elapsed`: due at the next `advance`.
    expired: Vec<T>,
    /// The earliest deadline in `expired` (ms), `u64::MAX` when it is empty, so
    /// `next_deadline` never reports a time later than a due item's deadline.
    expired_min: u64,
    /// Number of scheduled items (levels, overflow and expired), so `len` is O(1).
    len: usize,
}

/// One level of the wheel.
struct Level<T> {
    /// `6 × level`: a deadline's slot on this level is `(deadline >> shift) & SLOT_MASK`.
    shift: u32,
    /// Bit `s` is set iff `slots[s]` is non-empty, so the next occupied slot is found with bit
    /// operations instead of a scan.
    occupied: u64,
    /// The slots' items; slot `s` holds deadlines whose bits `shift..shift + 6` equal `s`.
    slots: [Entries<T>; SLOTS],
}

/// A slot (or the overflow list) taken out of the wheel because time reached its start.
enum Origin {
    /// Slot `slot` of level `level`.
    Slot { level: usize, slot: usize },
    /// The overflow list.
    Overflow,
}

impl<T> Level<T> {
    fn new(level: usize) -> Self {
        Self {
            // `level < LEVELS = 6`, so this is at most 30.
            shift: SLOT_BITS * level as u32,
            occupied: 0,
            slots: std::array::from_fn(|_| Vec::new()),
        }
    }

    /// The first occupied slot at or after `elapsed`'s slot on this level (wrapping around),
    /// with its start time in ms, or `None` when the level is empty.
    ///
    /// Items on a level are always in slots strictly after `elapsed`'s (see the module docs),
    /// so the start is `> elapsed`. Should that ever not hold, the wrapped slot's start is
    /// `<= elapsed`, which makes `advance` cascade it at once: items are re-placed, never lost.
    fn next_occupied(&self, elapsed: u64) -> Option<(usize, u64)> {
        if self.occupied == 0 {
            return None;
        }
        let current = (elapsed >> self.shift) & SLOT_MASK;
        // `current < 64`, so the cast is lossless; the rotation puts `current` at bit 0.
        let ahead = u64::from(self.occupied.rotate_right(current as u32).trailing_zeros());
        let slot = (current + ahead) & SLOT_MASK;
        // The bits this level and those below cover; `shift + SLOT_BITS <= 36`.
        let level_mask = (1u64 << (self.shift + SLOT_BITS)) - 1;
        let start = (elapsed & !level_mask) | (slot << self.shift);
        Some((slot as usize, start))
    }

    fn push(&mut self, deadline: u64, item: T) {
        let slot = ((deadline >> self.shift) & SLOT_MASK) as usize;
        // Indexing: `slot <= SLOT_MASK < SLOTS`.
        self.slots[slot].push((deadline, item));
        self.occupied |= 1 << slot;
    }

    fn take(&mut self, slot: usize) -> Entries<T> {
        let slot = slot & (SLOTS - 1);
        self.occupied &= !(1 << slot);
        // Indexing: masked to `< SLOTS` above.
        std::mem::take(&mut self.slots[slot])
    }

    /// Gives a drained slot buffer back to the (still empty) slot it came from, for reuse on
    /// the slot's next rotation, unless it is too large to keep.
    fn restore(&mut self, slot: usize, buffer: Entries<T>) {
        // Indexing: masked to `< SLOTS`.
        let target = &mut self.slots[slot & (SLOTS - 1)];
        if buffer.capacity() <= RETAINED_SLOT_CAPACITY
            && target.capacity() == 0
            && buffer.is_empty()
        {
            *target = buffer;
        }
    }
}

/// The level on which an item due at `deadline` goes when the wheel's time is
/// `elapsed < deadline`: the highest 6-bit group in which the two differ. `LEVELS` or more
/// means beyond the wheel (overflow).
fn level_for(elapsed: u64, deadline: u64) -> usize {
    // `| SLOT_MASK` makes differences only in the lowest 6 bits land on level 0.
    let masked = (elapsed ^ deadline) | SLOT_MASK;
    let significant = 63 - masked.leading_zeros();
    (significant / SLOT_BITS) as usize
}

impl<T> Wheel<T> {
    /// A wheel whose time starts at `now` (ms).
    pub(crate) fn new(now: u64) -> Self {
        Self {
            elapsed: now,
            levels: Box::new(std::array::from_fn(Level::new)),
            overflow: Vec::new(),
            overflow_min: u64::MAX,
            expired: Vec::new(),
            expired_min: u64::MAX,
            len: 0,
        }
    }

    /// Schedules `item` to fire at `deadline` (ms). A deadline at or before the wheel's current
    /// time fires on the next `advance`.
    pub(crate) fn insert(&mut self, deadline: u64, item: T) {
        // Cannot overflow: each item takes memory, so there are fewer than `usize::MAX`.
        self.len += 1;
        self.schedule(deadline, item);
    }

    /// Moves the wheel's time forward to `now` (a `now` earlier than the wheel's time is
    /// ignored) and appends to `due` every item whose deadline is <= now, in no particular
    /// order.
    ///
    /// Costs O(levels) plus the items that fire or cascade, however far `now` jumps.
    pub(crate) fn advance(&mut self, now: u64, due: &mut Vec<T>) {
        self.len = self.len.saturating_sub(self.expired.len());
        due.append(&mut self.expired);
        self.expired_min = u64::MAX;
        if self.expired.capacity() > RETAINED_SLOT_CAPACITY {
            self.expired = Vec::new();
        }
        if now <= self.elapsed {
            return;
        }
        // Slots are taken earliest first, so the wheel's time only moves forward and every
        // item left in place stays correctly placed (the module docs' invariant).
        while let Some((start, origin, mut entries)) = self.pop_reached(now) {
            self.elapsed = self.elapsed.max(start);
            if let Origin::Slot { level, .. } = origin {
                // The slot's last ms: if it is reached, every entry is due.
                let span_mask = (1u64 << (SLOT_BITS * level as u32)) - 1;
                if (start | span_mask) <= now {
                    due.reserve(entries.len());
                }
            }
            let mut fired = 0;
            for (deadline, item) in entries.drain(..) {
                if deadline <= now {
                    due.push(item);
                    fired += 1;
                } else {
                    // `deadline > now >= elapsed`: lands on a lower level (or back in overflow),
                    // never in the slot just taken.
                    self.schedule(deadline, item);
                }
            }
            self.len = self.len.saturating_sub(fired);
            if let Origin::Slot { level, slot } = origin {
                if let Some(level) = self.levels.get_mut(level) {
                    level.restore(slot, entries);
                }
            }
        }
        self.elapsed = now;
    }

    /// The earliest deadline of any scheduled item (ms), or `None` when empty.
    ///
    /// O(levels). May be earlier than the true earliest deadline (the start of the slot that
    /// holds it, as tokio does), never later: advancing to it either fires items or cascades
    /// them to finer slots, after which this is more precise.
    // Part of the wheel's API; the expiry pass ticks at a fixed rate and does not need it.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn next_deadline(&self) -> Option<u64> {
        let expired = (!self.expired.is_empty()).then_some(self.expired_min);
        // The lowest non-empty level holds the earliest slot: everything on higher levels is
        // in a later slot of theirs, so after all of the lower level's span.
        let scheduled = self
            .levels
            .iter()
            .find_map(|level| level.next_occupied(self.elapsed))
            .map(|(_, start)| start)
            .or_else(|| (!self.overflow.is_empty()).then_some(self.overflow_min));
        match (expired, scheduled) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The wheel's current time (ms).
    // Part of the wheel's API; the expiry pass ticks at a fixed rate and does not need it.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn now(&self) -> u64 {
        self.elapsed
    }

    /// Number of scheduled items, due or not.
    // Part of the wheel's API; the expiry pass ticks at a fixed rate and does not need it.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    // Part of the wheel's API; the expiry pass ticks at a fixed rate and does not need it.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Places an item relative to the wheel's time without counting it in `len`.
    fn schedule(&mut self, deadline: u64, item: T) {
        if deadline <= self.elapsed {
            self.expired_min = self.expired_min.min(deadline);
            self.expired.push(item);
            return;
        }
        match self.levels.get_mut(level_for(self.elapsed, deadline)) {
            Some(level) => level.push(deadline, item),
            None => {
                self.overflow_min = self.overflow_min.min(deadline);
                self.overflow.push((deadline, item));
            }
        }
    }

    /// Takes out the earliest slot, or the overflow list, whose start is `<= now`, with that
    /// start (ms) and where it came from.
    fn pop_reached(&mut self, now: u64) -> Option<(u64, Origin, Entries<T>)> {
        let elapsed = self.elapsed;
        // Only the lowest non-empty level matters: its earliest slot precedes every slot of a
        // higher level and the overflow list's epoch.
        for (index, level) in self.levels.iter_mut().enumerate() {
            if let Some((slot, start)) = level.next_occupied(elapsed) {
                if start > now {
                    return None;
                }
                let origin = Origin::Slot { level: index, slot };
                return Some((start, origin, level.take(slot)));
            }
        }
        if self.overflow.is_empty() {
            return None;
        }
        // The epoch of the earliest overflow item, when the levels can first place it.
        let start = self.overflow_min & !(WHEEL_SPAN_MS - 1);
        if start > now {
            return None;
        }
        self.overflow_min = u64::MAX;
        Some((start, Origin::Overflow, std::mem::take(&mut self.overflow)))
    }
}

impl<T> fmt::Debug for Wheel<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wheel")
            .field("now", &self.elapsed)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// ms in a (365-day) year.
    const YEAR_MS: u64 = 365 * 24 * 3600 * 1000;

    /// Advances `wheel` to `now` and returns the due items, sorted.
    fn fire(wheel: &mut Wheel<u32>, now: u64) -> Vec<u32> {
        let mut due = Vec::new();
        wheel.advance(now, &mut due);
        due.sort_unstable();
        due
    }

    #[test]
    fn empty_wheel() {
        let mut wheel = Wheel::<u32>::new(5);
        assert_eq!(wheel.now(), 5);
        assert!(wheel.is_empty());
        assert_eq!(wheel.next_deadline(), None);
        assert_eq!(fire(&mut wheel, 1_000), Vec::<u32>::new());
        assert_eq!(wheel.now(), 1_000);
        assert_eq!(wheel.len(), 0);
    }

    #[test]
    fn deadline_at_now_fires_on_next_advance_even_without_moving() {
        let mut wheel = Wheel::new(100);
        wheel.insert(100, 1);
        assert_eq!(wheel.len(), 1);
        assert_eq!(wheel.next_deadline(), Some(100));
        assert_eq!(fire(&mut wheel, 100), vec![1]);
        assert!(wheel.is_empty());
        assert_eq!(wheel.next_deadline(), None);
    }

    #[test]
    fn past_deadline_fires_on_next_advance_even_backwards() {
        let mut wheel = Wheel::new(100);
        wheel.insert(3, 1);
        wheel.insert(7, 2);
        assert_eq!(wheel.next_deadline(), Some(3));
        // An earlier `now` is ignored but still collects what is due.
        assert_eq!(fire(&mut wheel, 50), vec![1, 2]);
        assert_eq!(wheel.now(), 100);
        assert!(wheel.is_empty());
    }

    #[test]
    fn backwards_advance_is_ignored() {
        let mut wheel = Wheel::new(1_000);
        wheel.insert(1_010, 1);
        assert_eq!(fire(&mut wheel, 10), Vec::<u32>::new());
        assert_eq!(wheel.now(), 1_000);
        assert_eq!(fire(&mut wheel, 1_009), Vec::<u32>::new());
        assert_eq!(fire(&mut wheel, 1_010), vec![1]);
    }

    const BOUNDARY_OFFSETS_MS: [u64; 18] = [
        1,
        63,
        64,
        65,
        4_095,
        4_096,
        4_097,
        262_143,
        262_144,
        262_145,
        1 << 24,
        (1 << 24) + 1,
        1 << 30,
        (1 << 30) + 1,
        WHEEL_SPAN_MS - 1,
        WHEEL_SPAN_MS,
        WHEEL_SPAN_MS + 1,
        3 * WHEEL_SPAN_MS + 17,
    ];

    const STARTS_MS: [u64; 6] = [
        0,
        1,
        12_345,
        WHEEL_SPAN_MS - 3,
        (1 << 40) + 7,
        1_700_000_000_000,
    ];

    #[test]
    fn fires_exactly_at_level_boundaries() {
        for start in STARTS_MS {
            for offset in BOUNDARY_OFFSETS_MS {
                let deadline = start + offset;
                let mut wheel = Wheel::new(start);
                wheel.insert(deadline, 7);
                assert_eq!(fire(&mut wheel, deadline - 1), Vec::<u32>::new());
                assert!(matches!(wheel.next_deadline(), Some(next) if next <= deadline));
                assert_eq!(fire(&mut wheel, deadline), vec![7], "{start} + {offset}");
                assert!(wheel.is_empty());
            }
        }
    }

    #[test]
    fn following_next_deadline_reaches_the_item_in_few_steps() {
        for start in STARTS_MS {
            for offset in BOUNDARY_OFFSETS_MS {
                let deadline = start + offset;
                let mut wheel = Wheel::new(start);
                wheel.insert(deadline, 7);
                let mut steps = 0;
                while let Some(next) = wheel.next_deadline() {
                    assert!(next <= deadline);
                    steps += 1;
                    let due = fire(&mut wheel, next);
                    assert_eq!(due.is_empty(), next < deadline);
                }
                // One step per level on the way down, plus the overflow.
                assert!(steps <= LEVELS + 2, "{start} + {offset}: {steps} steps");
            }
        }
    }

    #[test]
    fn huge_deadlines() {
        for deadline in [u64::MAX / 2, u64::MAX - 1, u64::MAX] {
            for start in [0, deadline - WHEEL_SPAN_MS - 1, deadline - 70] {
                let mut wheel = Wheel::new(start);
                wheel.insert(deadline, 1);
                let mut now = start;
                for _ in 0..3 {
                    now = now.saturating_add(YEAR_MS).min(deadline - 1);
                    assert_eq!(fire(&mut wheel, now), Vec::<u32>::new());
                    assert!(matches!(wheel.next_deadline(), Some(next) if next <= deadline));
                }
                assert_eq!(fire(&mut wheel, deadline - 1), Vec::<u32>::new());
                assert_eq!(fire(&mut wheel, deadline), vec![1]);
                assert!(wheel.is_empty());
            }
        }
        let mut wheel = Wheel::new(u64::MAX);
        wheel.insert(u64::MAX, 2);
        assert_eq!(fire(&mut wheel, u64::MAX), vec![2]);
    }

    #[test]
    fn jumps_by_years() {
        let start = 1_700_000_000_000;
        let mut wheel = Wheel::new(start);
        let mut deadlines = Vec::new();
        // A fixed LCG spreads deadlines over 3.5 years.
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for id in 0..2_000u32 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let deadline = start + (x >> 11) % (YEAR_MS * 7 / 2);
            wheel.insert(deadline, id);
            deadlines.push(deadline);
        }
        let mut previous = start;
        for year in 1..=4 {
            let now = start + year * YEAR_MS;
            let mut expected: Vec<u32> = (0..2_000u32)
                .zip(&deadlines)
                .filter(|&(_, &d)| d > previous && d <= now)
                .map(|(id, _)| id)
                .collect();
            expected.sort_unstable();
            assert_eq!(fire(&mut wheel, now), expected);
            previous = now;
        }
        assert!(wheel.is_empty());
    }

    #[test]
    fn millisecond_steps_fire_each_item_exactly_on_time() {
        let start = 4_000;
        let mut wheel = Wheel::new(start);
        let deadlines: Vec<u64> = (0..300).map(|i| start + (i * 37) % 9_000).collect();
        for (id, &deadline) in (0u32..).zip(&deadlines) {
            wheel.insert(deadline, id);
        }
        for now in start..start + 9_001 {
            let mut expected: Vec<u32> = (0u32..)
                .zip(&deadlines)
                .filter(|&(_, &d)| d == now)
                .map(|(id, _)| id)
                .collect();
            expected.sort_unstable();
            assert_eq!(fire(&mut wheel, now), expected, "at {now}");
        }
        assert!(wheel.is_empty());
    }

    #[test]
    fn million_items_at_one_deadline_fire_in_one_advance() {
        const COUNT: u32 = 1_000_000;
        let start = 10_000;
        let deadline = start + 100_000;
        let mut wheel = Wheel::new(start);
        for id in 0..COUNT {
            wheel.insert(deadline, id);
        }
        assert_eq!(wheel.len(), COUNT as usize);
        // Ticks with nothing due leave everything in place.
        let mut due = Vec::new();
        for now in start..start + 1_000 {
            wheel.advance(now, &mut due);
        }
        wheel.advance(deadline - 1, &mut due);
        assert!(due.is_empty());
        wheel.advance(deadline, &mut due);
        assert_eq!(due.len(), COUNT as usize);
        let mut seen = vec![false; COUNT as usize];
        for id in due {
            if let Some(slot) = seen.get_mut(id as usize) {
                assert!(!*slot, "{id} fired twice");
                *slot = true;
            }
        }
        assert!(seen.iter().all(|&s| s));
        assert!(wheel.is_empty());
        assert_eq!(wheel.next_deadline(), None);
    }

    #[test]
    fn debug_does_not_need_item_debug() {
        struct Opaque;
        let mut wheel = Wheel::new(5);
        wheel.insert(9, Opaque);
        let text = format!("{wheel:?}");
        assert!(text.contains("now: 5"), "{text}");
        assert!(text.contains("len: 1"), "{text}");
    }

    #[test]
    fn level_for_matches_level_spans() {
        assert_eq!(level_for(0, 1), 0);
        assert_eq!(level_for(0, 63), 0);
        assert_eq!(level_for(0, 64), 1);
        assert_eq!(level_for(63, 64), 1);
        assert_eq!(level_for(0, 4_095), 1);
        assert_eq!(level_for(0, 4_096), 2);
        assert_eq!(level_for(0, 262_144), 3);
        assert_eq!(level_for(0, WHEEL_SPAN_MS - 1), LEVELS - 1);
        assert_eq!(level_for(0, WHEEL_SPAN_MS), LEVELS);
        assert_eq!(level_for(WHEEL_SPAN_MS - 1, WHEEL_SPAN_MS), LEVELS);
        assert_eq!(level_for(0, u64::MAX), 10);
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// Insert at `now + delta`.
        InsertAhead(u64),
        /// Insert at `now - delta` (saturating).
        InsertPast(u64),
        /// Advance to `now + delta`.
        Advance(u64),
        /// Advance to `now - delta`: ignored, but collects what is due.
        AdvanceBack(u64),
        /// Advance to `next_deadline()`, as the expiry thread does.
        AdvanceToNext,
    }

    fn ahead_delta() -> impl Strategy<Value = u64> {
        prop_oneof![
            0..64u64,
            64..4_096u64,
            4_096..262_144u64,
            262_144..(1u64 << 24),
            (1u64 << 24)..(1u64 << 30),
            (1u64 << 30)..WHEEL_SPAN_MS,
            WHEEL_SPAN_MS..(1u64 << 40),
            prop::sample::select(BOUNDARY_OFFSETS_MS.to_vec()),
        ]
    }

    fn advance_delta() -> impl Strategy<Value = u64> {
        prop_oneof![
            0..4u64,
            0..64u64,
            0..5_000u64,
            0..300_000u64,
            0..(1u64 << 31),
            WHEEL_SPAN_MS..(1u64 << 38),
            prop::sample::select(BOUNDARY_OFFSETS_MS.to_vec()),
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => ahead_delta().prop_map(Op::InsertAhead),
            1 => (0..300u64).prop_map(Op::InsertPast),
            3 => advance_delta().prop_map(Op::Advance),
            1 => (0..100u64).prop_map(Op::AdvanceBack),
            2 => Just(Op::AdvanceToNext),
        ]
    }

    fn start() -> impl Strategy<Value = u64> {
        prop_oneof![
            Just(0u64),
            0..(1u64 << 41),
            (WHEEL_SPAN_MS - 300)..WHEEL_SPAN_MS,
            Just(1_700_000_000_000u64),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn matches_btreemap_model(start in start(), ops in prop::collection::vec(op(), 1..80)) {
            let mut wheel = Wheel::new(start);
            let mut model: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
            let mut now = start;
            let mut next_id = 0u32;
            let mut due = Vec::new();
            for op in ops {
                let target = match op {
                    Op::InsertAhead(delta) | Op::InsertPast(delta) => {
                        let deadline = match op {
                            Op::InsertAhead(_) => now.saturating_add(delta),
                            _ => now.saturating_sub(delta),
                        };
                        wheel.insert(deadline, next_id);
                        model.entry(deadline).or_default().push(next_id);
                        next_id += 1;
                        None
                    }
                    Op::Advance(delta) => Some(now.saturating_add(delta)),
                    Op::AdvanceBack(delta) => Some(now.saturating_sub(delta)),
                    Op::AdvanceToNext => Some(wheel.next_deadline().unwrap_or(now)),
                };
                if let Some(target) = target {
                    due.clear();
                    wheel.advance(target, &mut due);
                    now = now.max(target);
                    let rest = match now.checked_add(1) {
                        Some(after) => model.split_off(&after),
                        None => BTreeMap::new(),
                    };
                    let mut expected: Vec<u32> =
                        std::mem::replace(&mut model, rest).into_values().flatten().collect();
                    expected.sort_unstable();
                    due.sort_unstable();
                    prop_assert_eq!(&due, &expected, "advance to {}", target);
                    prop_assert_eq!(wheel.now(), now);
                }
                let remaining: usize = model.values().map(Vec::len).sum();
                prop_assert_eq!(wheel.len(), remaining);
                prop_assert_eq!(wheel.is_empty(), remaining == 0);
                let earliest = model.keys().next().copied();
                match (wheel.next_deadline(), earliest) {
                    (None, None) => {}
                    (Some(next), Some(earliest)) => prop_assert!(
                        next <= earliest,
                        "next_deadline {} after earliest {}", next, earliest
                    ),
                    (next, earliest) => prop_assert!(
                        false, "next_deadline {:?} but earliest {:?}", next, earliest
                    ),
                }
            }
        }
    }
}
