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
//! * Lock order: expiry → commit → map shard → watch slot.

use std::time::Duration;

use crate::store::feed::{Event, EventKind};
use crate::store::register::{Revision, Timer, DEAD};
use crate::store::wheel::Wheel;
use crate::store::Shared;
use crate::sync::{Arc, Ordering};

/// How often the background thread runs an expiry pass: every 10 ms, so a register outlives its
/// TTL by at most about 10 ms. Idle cost: 100 wake-ups a second, each a few microseconds.
pub(crate) const TICK: Duration = Duration::from_millis(10);

/// Expiries committed per hold of the commit lock (about 100 µs of work at ~200 ns each), so
/// writers wait at most that long behind a mass expiry.
const BATCH: usize = 512;

/// Timers whose buffer space a pass keeps for the next one (24 bytes each: 1.5 MB); a larger
/// burst's buffer is given back.
const RETAINED_DUE: usize = 65_536;

/// How often untaken change requests are checked against their age limit, in clock ms.
const SWEEP_INTERVAL_MS: u64 = 1_000;

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
}

impl ExpiryState {
    pub(crate) fn new(now: u64) -> Self {
        Self {
            wheel: Wheel::new(now),
            due: Vec::new(),
            woken: Vec::new(),
            last_sweep: now,
        }
    }
}

impl Shared {
    /// One expiry pass at the clock's current time. Returns the number of registers expired.
    pub(crate) fn expire_due(&self) -> usize {
        let now = self.now_ms();
        let mut state = self.expiry.lock();
        let state = &mut *state;
        while let Some(timer) = self.inbox.pop() {
            state.wheel.insert(timer.at, timer);
        }
        state.wheel.advance(now, &mut state.due);

        let mut due = std::mem::take(&mut state.due);
        let mut expired = 0;
        for batch in due.chunks(BATCH) {
            expired += self.expire_batch(state, batch, now);
        }
        due.clear();
        // A burst (a million registers due at once) must not pin its 24 MB for good.
        due.shrink_to(RETAINED_DUE);
        state.due = due;

        if now.saturating_sub(state.last_sweep) >= SWEEP_INTERVAL_MS {
            state.last_sweep = now;
            self.requests.sweep(now);
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
        let mut commit = self.commit.lock();
        let mut revision = self.next_revision(&commit) - 1;
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
                match timer.entry.kill_if(observed) {
                    Ok(()) => {
                        let name = timer.entry.name();
                        self.registers
                            .remove_if(&*name, |_, entry| Arc::ptr_eq(entry, &timer.entry));
                        revision += 1;
                        commit.history.record(Arc::clone(&name), revision);
                        let _no_subscribers = self.feed.send(Event {
                            kind: EventKind::Expire,
                            name: Arc::clone(&name),
                            revision,
                            register: None,
                        });
                        state.woken.push((name, revision));
                        break;
                    }
                    // A refresh moved the deadline (or a delete killed it): look again.
                    Err(actual) => observed = actual,
                }
            }
        }
        let expired = state.woken.len();
        if expired > 0 {
            self.publish(&commit, revision);
        }
        drop(commit);
        for (name, revision) in state.woken.drain(..) {
            self.watchers.wake(&name, revision);
        }
        expired
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
