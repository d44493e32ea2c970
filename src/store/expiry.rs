//! TTL expiry: the timing wheel and the pass that drives it.
//!
//! # Invariants
//!
//! * The wheel is touched only by the expiry pass (`Shared::expire_due`), under the `expiry`
//!   mutex, which in the background mode only the expiry thread takes. Writers never touch the
//!   wheel: new timers reach it through the lock-free `inbox`.
//! * Every live entry has at least one current-generation timer scheduled at or before its
//!   deadline. A refresh that *extends* the deadline leaves the timer alone (O(1), no wheel
//!   search): when the timer fires, the pass finds the later deadline and reschedules ("lazy
//!   reschedule"). A deadline moved *earlier* pushes a new timer with a new generation; the old
//!   one is then stale and dropped when it fires.
//! * Removal is decided under the commit lock by `Entry::kill_if(observed)`, a compare-exchange
//!   from the deadline the pass saw to `DEAD`: a refresh that moved the deadline first makes it
//!   fail (and the pass reschedules); a refresh that comes after finds `DEAD` and re-creates the
//!   register. A refreshed register is never expired.
//! * Expiries are committed in batches of [`BATCH`] under one hold of the commit lock, so a
//!   million registers due in one tick neither take the lock a million times nor hold it
//!   against writers for the whole pass.
//! * A pass with more due timers than the removal history keeps defers its removals in the
//!   history (see `history.rs`) and folds them in before it returns, in steps of [`FOLD_BATCH`]
//!   under separate holds of the commit lock, so that recording a million removals costs only
//!   the ones that stay on record.
//! * After mass removal the maps give their room back: every [`SHRINK_INTERVAL_MS`] the pass
//!   checks the register map, the watch-slot maps and the change-request map, and rebuilds one
//!   that is less than a quarter full ([`shrink_if_sparse`]). It does so without the commit
//!   lock (membership does not change); each shard's write lock is held while that shard is
//!   rebuilt, O(its live entries).
//! * Lock order: expiry → commit → map shard → watch slot.

use std::hash::Hash;
use std::time::Duration;

use crate::store::feed::EventKind;
use crate::store::history::Kept;
use crate::store::register::{Revision, Timer, DEAD};
use crate::store::replica::RECHECK_MS;
use crate::store::wheel::Wheel;
use crate::store::Shared;
use crate::sync::{Arc, Map, Ordering};

/// How often the background thread runs an expiry pass: every 10 ms, so a register outlives its
/// TTL by at most about 10 ms. Idle cost: 100 wake-ups a second, each a few microseconds.
pub(crate) const TICK: Duration = Duration::from_millis(10);

/// Expiries committed per hold of the commit lock (about 100 µs of work at ~200 ns each), so
/// writers wait at most that long behind a mass expiry.
const BATCH: usize = 512;

/// Deferred removals folded into the removal history per hold of the commit lock: a tombstone
/// insert each (estimated at ~50 ns), so a hold lasts about as long as an expiry batch's.
const FOLD_BATCH: usize = 2048;

/// Timers whose buffer space a pass keeps for the next one (24 bytes each: 1.5 MB); a larger
/// burst's buffer is given back.
const RETAINED_DUE: usize = 65_536;

/// How often untaken change requests are checked against their age limit, in clock ms.
const SWEEP_INTERVAL_MS: u64 = 1_000;

/// How often the maps are checked for room to give back, in clock ms. A check costs a read
/// lock per shard; a shrink is rare (once after each mass removal).
const SHRINK_INTERVAL_MS: u64 = 1_000;

/// A map is rebuilt smaller when its live entries fill less than 1/`SPARSE` of its room: after
/// a shrink it is more than half full, so it takes a 4x drop to shrink again (no flapping).
const SPARSE: usize = 4;

/// Maps with room for fewer entries than this are never shrunk: at about 32 bytes an entry
/// that is 128 KiB, not worth rebuilding for.
const SHRINK_MIN_CAPACITY: usize = 4096;

/// The expiry pass's state.
#[derive(Debug)]
pub(crate) struct ExpiryState {
    wheel: Wheel<Timer>,
    /// Timers that fired in this pass (kept to reuse its allocation).
    due: Vec<Timer>,
    /// Names expired in the current batch, with their revisions, to wake after the commit lock
    /// is released.
    woken: Vec<(Arc<str>, Revision)>,
    /// When change requests were last swept, in clock ms.
    last_sweep: u64,
    /// When the maps were last checked for room to give back, in clock ms.
    last_shrink: u64,
    /// The removal history's capacity (fixed at build): a pass with more due timers defers its
    /// removals.
    history_capacity: usize,
}

impl ExpiryState {
    pub(crate) fn new(now: u64, history_capacity: usize) -> Self {
        Self {
            wheel: Wheel::new(now),
            due: Vec::new(),
            woken: Vec::new(),
            last_sweep: now,
            last_shrink: now,
            history_capacity,
        }
    }
}

impl Shared {
    /// One expiry pass at the clock's current time. Returns the number of registers expired.
    pub(crate) fn expire_due(&self) -> usize {
        let now = self.now_ms();
        let mut state = self.expiry.lock();
        // Checked under the expiry lock, which a restore takes to set it (see `restore.rs`).
        // Ordering: Acquire pairs with the Release store that ends a restore: a pass that sees
        // it cleared sees the restored entries and the published revision.
        if self.restoring.load(std::sync::atomic::Ordering::Acquire) {
            return 0;
        }
        let state = &mut *state;
        while let Some(timer) = self.inbox.pop() {
            state.wheel.insert(timer.at, timer);
        }
        state.wheel.advance(now, &mut state.due);

        let mut due = std::mem::take(&mut state.due);
        let deferred =
            due.len() > state.history_capacity && self.commit.lock().history.defer(due.len());
        let mut expired = 0;
        for batch in due.chunks(BATCH) {
            expired += self.expire_batch(state, batch, now);
        }
        if deferred {
            self.fold_history();
        }
        due.clear();
        // A burst (a million registers due at once) must not pin its 24 MB for good. Dropped
        // rather than shrunk: shrinking copies into a new block, which costs more than growing
        // one again.
        if due.capacity() > RETAINED_DUE {
            due = Vec::new();
        }
        state.due = due;

        if now.saturating_sub(state.last_sweep) >= SWEEP_INTERVAL_MS {
            state.last_sweep = now;
            self.requests.sweep(now);
        }
        if now.saturating_sub(state.last_shrink) >= SHRINK_INTERVAL_MS {
            state.last_shrink = now;
            shrink_if_sparse(&self.registers);
            self.watchers.shrink_if_sparse();
            self.requests.shrink_if_sparse();
        }
        if expired > 0 {
            // Ordering: Relaxed: a counter for metrics.
            self.expired.fetch_add(expired as u64, Ordering::Relaxed);
        }
        expired
    }

    /// Commits the expiry of every timer in `batch` whose register is still due; reschedules the
    /// ones that were refreshed. Returns how many expired.
    fn expire_batch(&self, state: &mut ExpiryState, batch: &[Timer], now: u64) -> usize {
        let mut commit = self.begin();
        for timer in batch {
            if timer.gen != timer.entry.timer_gen() {
                continue; // stale: a newer timer serves this entry
            }
            let mut observed = timer.entry.deadline();
            loop {
                if observed == DEAD {
                    break; // already removed
                }
                if observed > now {
                    // Refreshed since the timer was set: lazy reschedule.
                    state.wheel.insert(
                        observed,
                        Timer {
                            at: observed,
                            ..timer.clone()
                        },
                    );
                    break;
                }
                if let Some(replica) = self.replica.get() {
                    // A replica proposes the expiry to its cluster's log, which removes it on
                    // every replica (see `replica.rs`); until then it is looked at again.
                    replica.due(
                        timer.entry.name(),
                        timer.entry.snapshot.peek(|r| r.revision),
                    );
                    let again = now.saturating_add(RECHECK_MS);
                    state.wheel.insert(
                        again,
                        Timer {
                            at: again,
                            ..timer.clone()
                        },
                    );
                    break;
                }
                match timer.entry.kill_if(observed) {
                    Ok(()) => {
                        let name = timer.entry.name();
                        self.registers
                            .remove_if(&*name, |_, entry| Arc::ptr_eq(entry, &timer.entry));
                        let revision = commit.removed(&name, EventKind::Expire);
                        state.woken.push((name, revision));
                        break;
                    }
                    // A refresh moved the deadline (or a delete killed it): look again.
                    Err(actual) => observed = actual,
                }
            }
        }
        let expired = state.woken.len();
        if let Some(revision) = commit.finish() {
            self.watchers.wake_each(state.woken.drain(..), revision);
        }
        expired
    }

    /// Ends a deferral of the removal history (begun by a pass with more due timers than it
    /// keeps): folds the deferred removals in, [`FOLD_BATCH`] per hold of the commit lock.
    /// Allocation and freeing happen outside the lock.
    fn fold_history(&self) {
        let mut spare = None;
        loop {
            let mut commit = self.commit.lock();
            if spare.is_none() && commit.history.needs_spare() {
                let capacity = commit.history.capacity();
                drop(commit);
                spare = Some(Kept::with_capacity(capacity));
                continue;
            }
            let (done, garbage) = commit.history.fold(FOLD_BATCH, &mut spare);
            drop(commit);
            drop(garbage);
            if done {
                break;
            }
        }
    }
}

/// Rebuilds `map` smaller if its live entries fill less than 1/[`SPARSE`] of its room (and it
/// has room for at least [`SHRINK_MIN_CAPACITY`]).
pub(crate) fn shrink_if_sparse<K: Eq + Hash + Clone, V: Clone>(map: &Map<K, V>) {
    let capacity = map.capacity();
    if capacity >= SHRINK_MIN_CAPACITY && map.len().saturating_mul(SPARSE) < capacity {
        map.shrink_to_fit();
    }
}

/// Starts the background expiry thread. It runs a pass every [`TICK`] until [`stop`] is called.
pub(crate) fn spawn(shared: Arc<Shared>) -> Option<std::thread::Thread> {
    let spawned = std::thread::Builder::new()
        .name("reg-expiry".into())
        .spawn(move || loop {
            if shared.stop_expiry() {
                break;
            }
            shared.expire_due();
            std::thread::park_timeout(TICK);
        });
    match spawned {
        Ok(handle) => Some(handle.thread().clone()),
        Err(error) => {
            tracing::error!(%error, "cannot start the expiry thread; registers will not expire");
            None
        }
    }
}

/// Tells the expiry thread to stop and wakes it.
pub(crate) fn stop(shared: &Shared, thread: &std::thread::Thread) {
    shared.request_stop_expiry();
    thread.unpark();
}
