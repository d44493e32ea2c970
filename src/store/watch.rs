//! Watch slots: how a change wakes exactly the waiters of the register it changed.
//!
//! # Invariants
//!
//! * A waiter owns one [`Signal`]: a monotonic "highest revision fired" counter plus the task's
//!   waker. It registers the same signal in the slot of every name it watches (or in the
//!   any-register slot), then re-checks the registry state, then awaits the signal.
//! * A writer publishes its change (snapshot + revision, under the commit lock), releases the
//!   commit lock, and only then fires the slot of the name it changed and the any-register slot.
//! * No lost wake-up: a waiter's registration and a writer's slot lookup are ordered by the
//!   map's per-key lock (and the slot's mutex). If the registration comes first, the writer finds
//!   the waiter and fires it; if the writer's lookup comes first, the writer had already
//!   published its change, so the waiter's re-check (which follows its registration) sees it.
//! * Lock order: map shard lock → slot mutex → signal waker mutex. A writer never holds the
//!   map's shard lock while firing (it clones the slot's `Arc` out first).
//! * A slot is removed from the map, under the map's write lock, only when its last waiter
//!   unregisters; registration happens under the same lock, so nobody can register into a slot
//!   that is no longer in the map.
//! * A dropped waiter unregisters from every slot it joined; nothing leaks.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use slab::Slab;

use crate::sync::{Arc, AtomicU64, AtomicUsize, Map, Mutex, Ordering};

/// Up to this many waiters, a slot fires them under its mutex (cheaper than a snapshot).
const FIRE_UNDER_LOCK: usize = 16;

/// The value a signal is fired with on shutdown: above every revision.
pub(crate) const SHUTDOWN: u64 = u64::MAX;

/// One waiter's wake-up cell: the highest value it was fired with and the waker to call.
#[derive(Debug, Default)]
pub(crate) struct Signal {
    /// Highest value fired so far (a revision, a request sequence, or [`SHUTDOWN`]); 0 = none.
    fired: AtomicU64,
    /// The waker of the task polling this signal, if it is parked.
    waker: Mutex<Option<Waker>>,
}

impl Signal {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Records `value` and wakes the waiting task unless a value at least as high was fired
    /// before (that firing already woke it).
    pub(crate) fn fire(&self, value: u64) {
        // Ordering: AcqRel. Release pairs with the Acquire loads in `poll_above`: a poller that
        // sees `value` also sees the writer's published change. Acquire orders the early-return
        // check after an earlier fire's update.
        let previous = self.fired.fetch_max(value, Ordering::AcqRel);
        if previous >= value {
            return;
        }
        let waker = self.waker.lock().take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// The highest value fired so far.
    pub(crate) fn fired(&self) -> u64 {
        // Ordering: Acquire pairs with the Release half of `fire`'s fetch_max.
        self.fired.load(Ordering::Acquire)
    }

    /// Ready with the fired value once it is above `threshold`; otherwise parks the waker.
    ///
    /// The waker is stored *before* the second check, under the same mutex `fire` takes after
    /// raising the value: either `fire` finds the waker, or this check finds the value.
    pub(crate) fn poll_above(&self, cx: &mut Context<'_>, threshold: u64) -> Poll<u64> {
        let fired = self.fired();
        if fired > threshold {
            return Poll::Ready(fired);
        }
        {
            let mut slot = self.waker.lock();
            match slot.as_ref() {
                Some(waker) if waker.will_wake(cx.waker()) => {}
                _ => *slot = Some(cx.waker().clone()),
            }
        }
        let fired = self.fired();
        if fired > threshold {
            Poll::Ready(fired)
        } else {
            Poll::Pending
        }
    }
}

/// The waiters of one register name (or of "any register").
#[derive(Debug, Default)]
pub(crate) struct Slot {
    waiters: Mutex<Slab<Arc<Signal>>>,
}

impl Slot {
    pub(crate) fn insert(&self, signal: &Arc<Signal>) -> usize {
        self.waiters.lock().insert(Arc::clone(signal))
    }

    /// Removes waiter `key`; returns whether the slot is now empty.
    pub(crate) fn remove(&self, key: usize) -> bool {
        let mut waiters = self.waiters.lock();
        waiters.try_remove(key);
        waiters.is_empty()
    }

    /// Fires every waiter of this slot with `value`.
    ///
    /// Many waiters are fired outside the slot's mutex, from a snapshot: waking 10,000 tasks
    /// takes milliseconds, and the woken tasks unregister through this mutex while holding a map
    /// shard's write lock, which would stall every reader of that shard meanwhile. Firing from a
    /// snapshot is safe: a waiter that registers after it re-checks the (already published)
    /// change itself, and firing a waiter that has just unregistered is a no-op.
    pub(crate) fn fire_all(&self, value: u64) {
        let waiters = self.waiters.lock();
        if waiters.len() <= FIRE_UNDER_LOCK {
            for (_, signal) in waiters.iter() {
                signal.fire(value);
            }
            return;
        }
        let snapshot: Vec<Arc<Signal>> = waiters.iter().map(|(_, s)| Arc::clone(s)).collect();
        drop(waiters);
        for signal in snapshot {
            signal.fire(value);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.waiters.lock().len()
    }
}

/// Per-name watch slots plus the any-name slot. Used twice: for register changes (woken with
/// revisions) and for change requests (woken with request sequence numbers).
#[derive(Debug)]
pub(crate) struct WatchSlots {
    by_name: Map<Arc<str>, Arc<Slot>>,
    any: Slot,
    /// Waiters currently registered (one per waiter, however many names it watches): the
    /// parked-polls gauge.
    parked: AtomicUsize,
}

/// Where a waiter registered, so that it can unregister.
#[derive(Debug, Default)]
pub(crate) struct Registration {
    names: Vec<(Arc<str>, usize)>,
    any: Option<usize>,
}

impl WatchSlots {
    pub(crate) fn new() -> Self {
        Self {
            by_name: Map::new(),
            any: Slot::default(),
            parked: AtomicUsize::new(0),
        }
    }

    /// Registers `signal` in the slots the selector names.
    pub(crate) fn register(&self, selector: &Selector, signal: &Arc<Signal>) -> Registration {
        let mut registration = Registration::default();
        match selector {
            Selector::All => registration.any = Some(self.any.insert(signal)),
            Selector::Names(names) => {
                registration.names.reserve(names.len());
                for name in names.iter() {
                    // Fast path under the shard's read lock: `remove_if` needs the write lock, so
                    // the slot cannot leave the map while we insert into it.
                    let key = match self.by_name.with(&**name, |slot| slot.insert(signal)) {
                        Some(key) => key,
                        None => self.by_name.upsert_with(
                            Arc::clone(name),
                            || Arc::new(Slot::default()),
                            |slot| slot.insert(signal),
                        ),
                    };
                    registration.names.push((Arc::clone(name), key));
                }
            }
        }
        // Ordering: Relaxed: a gauge, read for metrics only.
        self.parked.fetch_add(1, Ordering::Relaxed);
        registration
    }

    /// Undoes a registration, removing slots that become empty.
    pub(crate) fn unregister(&self, registration: &mut Registration) {
        if let Some(key) = registration.any.take() {
            self.any.remove(key);
        }
        for (name, key) in registration.names.drain(..) {
            self.by_name.remove_if(&*name, |_, slot| slot.remove(key));
        }
        // Ordering: Relaxed: a gauge, read for metrics only.
        self.parked.fetch_sub(1, Ordering::Relaxed);
    }

    /// Wakes the waiters of `name` and the any-name waiters with `value`.
    pub(crate) fn wake(&self, name: &str, value: u64) {
        if let Some(slot) = self.by_name.get(name) {
            slot.fire_all(value);
        }
        self.any.fire_all(value);
    }

    /// Wakes the waiters of each name with its value, and the any-name waiters once, with
    /// `last`, the highest of the values (waking them with each would end in the same state:
    /// a signal keeps the highest value fired, and every value is published before this runs).
    pub(crate) fn wake_each(&self, names: impl Iterator<Item = (Arc<str>, u64)>, last: u64) {
        for (name, value) in names {
            if let Some(slot) = self.by_name.get(&*name) {
                slot.fire_all(value);
            }
        }
        self.any.fire_all(last);
    }

    /// Gives back the room of slots removed since the map was largest (see `expiry.rs`).
    pub(crate) fn shrink_if_sparse(&self) {
        crate::store::expiry::shrink_if_sparse(&self.by_name);
    }

    /// Wakes every waiter with `value` (shutdown).
    pub(crate) fn wake_all(&self, value: u64) {
        let mut slots = Vec::new();
        self.by_name
            .for_each(|_, slot| slots.push(Arc::clone(slot)));
        for slot in slots {
            slot.fire_all(value);
        }
        self.any.fire_all(value);
    }

    /// Waiters currently parked.
    pub(crate) fn parked(&self) -> usize {
        // Ordering: Relaxed: a gauge.
        self.parked.load(Ordering::Relaxed)
    }

    /// Number of names that have at least one waiter (for tests: slots must not leak).
    pub(crate) fn slot_count(&self) -> usize {
        self.by_name.len() + usize::from(self.any.len() > 0)
    }
}

/// Which registers (or change requests) an operation is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// Every register (every pending change request).
    All,
    /// These names (sorted, without duplicates).
    Names(Arc<[Arc<str>]>),
}

impl Selector {
    /// A selector for the given names. No names at all means [`Selector::All`], as in the REST
    /// API.
    pub fn names<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut names: Vec<Arc<str>> = names.into_iter().map(|n| Arc::from(n.as_ref())).collect();
        if names.is_empty() {
            return Selector::All;
        }
        names.sort_unstable();
        names.dedup();
        Selector::Names(names.into())
    }

    /// A selector for one name.
    pub fn name(name: &str) -> Self {
        Selector::Names(Arc::from([Arc::from(name)]))
    }

    /// Whether `name` is selected.
    pub fn contains(&self, name: &str) -> bool {
        match self {
            Selector::All => true,
            Selector::Names(names) => names.binary_search_by(|n| (**n).cmp(name)).is_ok(),
        }
    }
}

/// How a [`Wait`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitOutcome {
    /// A watched register changed after the revision the wait started from.
    Changed,
    /// The registry is shutting down.
    Shutdown,
}

/// A wait for a change to some registers after a revision; made by
/// [`Registry::wait`](crate::Registry::wait).
///
/// # Cancel safety
///
/// Cancel safe: it consumes nothing. Dropping it unregisters it from every watch slot.
#[must_use = "a Wait does nothing unless awaited"]
#[derive(Debug)]
pub struct Wait {
    slots: Arc<WatchSlots>,
    signal: Arc<Signal>,
    registration: Registration,
    /// Fire values above this one end the wait.
    threshold: u64,
    /// Decided when the wait was made (the re-check after registering).
    ready: Option<WaitOutcome>,
}

impl Wait {
    /// Registers in `slots` first; then calls `check` (the re-check) to see whether the wait is
    /// already over.
    pub(crate) fn new(
        slots: Arc<WatchSlots>,
        selector: &Selector,
        threshold: u64,
        check: impl FnOnce() -> Option<WaitOutcome>,
    ) -> Self {
        let signal = Signal::new();
        let registration = slots.register(selector, &signal);
        let ready = check();
        Self {
            slots,
            signal,
            registration,
            threshold,
            ready,
        }
    }
}

impl Future for Wait {
    type Output = WaitOutcome;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<WaitOutcome> {
        let this = self.get_mut();
        if let Some(outcome) = this.ready {
            return Poll::Ready(outcome);
        }
        match this.signal.poll_above(cx, this.threshold) {
            Poll::Ready(SHUTDOWN) => {
                this.ready = Some(WaitOutcome::Shutdown);
                Poll::Ready(WaitOutcome::Shutdown)
            }
            Poll::Ready(_) => {
                this.ready = Some(WaitOutcome::Changed);
                Poll::Ready(WaitOutcome::Changed)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for Wait {
    fn drop(&mut self) {
        self.slots.unregister(&mut self.registration);
    }
}
