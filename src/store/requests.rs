//! Change requests: what consumers ask providers to do, one slot per name, latest wins.
//!
//! # Invariants
//!
//! * `pending` holds at most one request per name; a newer request replaces the older one.
//! * Delivery is at most once: a request leaves `pending` by one atomic map removal, and only the
//!   taker whose removal succeeded returns it.
//! * A request is never lost to a racing take: [`TakeRequests`] registers its signal before it
//!   first looks at `pending`, and a requester inserts into `pending` before it fires the slots,
//!   so either the take's look finds the request or the firing wakes the take (the same argument
//!   as in `watch.rs`, with request sequence numbers in place of revisions).
//! * A cancelled take consumes nothing: removal happens inside `poll`, and a poll that removes
//!   anything returns it in the same call.
//! * Bounded: `count` tracks `pending.len()` (raised under the entry lock of the insert that
//!   adds a name, so a racing take's decrement always follows it and `count` never wraps); a
//!   request for a new name is refused once the cap is reached (the cap may be overshot by at
//!   most the number of concurrent requesters), and a request older than the age limit is
//!   dropped, by the expiry sweep or when a take finds it.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::json::Json;
use crate::store::watch::{Registration, Selector, Signal, WatchSlots, SHUTDOWN};
use crate::store::{Clock, Origin, Shared, StoreError};
use crate::sync::{Arc, AtomicU64, AtomicUsize, Map, Ordering};

/// A change request as stored.
#[derive(Debug, Clone)]
pub(crate) struct Pending {
    value: Json,
    /// When it was made, in clock milliseconds (for the age limit).
    at: u64,
    /// Its sequence number: unique, increasing, what its takers are fired with, and how a
    /// log tells this request from an older or newer one for the same name.
    id: u64,
    /// Who asked, when the requester said (kept in memory only: a restored request has none).
    origin: Option<Origin>,
}

/// Where pending requests are logged (a persistent registry's log, see `persist/`). Called
/// outside any registry lock, after the map change it records; the log orders records by
/// `id`, not by arrival.
pub(crate) trait RequestLog: Send + Sync + std::fmt::Debug + 'static {
    /// `name`'s request `id` for `value`, made at wall time `at_wall_ms` by `origin`.
    fn requested(
        &self,
        name: &str,
        id: u64,
        value: &Json,
        at_wall_ms: u64,
        origin: Option<&Origin>,
    );
    /// `name`'s request `id` left the pending set (taken, or dropped for its age).
    fn taken(&self, name: &str, id: u64);
}

/// A pending change request as a snapshot saves it and a restart restores it.
#[cfg(feature = "persist")]
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SavedRequest {
    pub(crate) name: Arc<str>,
    pub(crate) value: Json,
    pub(crate) id: u64,
    /// When it was made, in wall milliseconds.
    pub(crate) at_wall_ms: u64,
    /// Who asked (identity and request id; the address is not kept).
    pub(crate) origin: Option<Origin>,
}

/// A change request handed to a provider: the register name and the value asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChangeRequest {
    /// The register the request is for.
    pub name: Arc<str>,
    /// The value the consumer asked for.
    pub value: Json,
    /// Who asked, when the requester said ([`Registry::request_many_as`]
    /// (crate::Registry::request_many_as)): a device can log who commanded it.
    pub origin: Option<Origin>,
}

/// Which names a take may take beyond its selector (a caller's `take` right); `None`: any.
pub(crate) type TakeFilter = Option<Arc<dyn Fn(&str) -> bool + Send + Sync>>;

/// The pending change requests of a registry.
#[derive(Debug)]
pub(crate) struct Requests {
    pending: Map<Arc<str>, Pending>,
    /// `pending.len()`, kept separately so the cap check is one atomic load.
    count: AtomicUsize,
    /// The sequence number of the latest request: what request waiters are fired with.
    seq: AtomicU64,
    pub(crate) watchers: Arc<WatchSlots>,
    max_pending: usize,
    /// Age limit in clock milliseconds.
    max_age_ms: u64,
    /// Set once, before serving, when the registry persists.
    log: std::sync::OnceLock<Arc<dyn RequestLog>>,
    clock: Arc<dyn Clock>,
}

impl Requests {
    pub(crate) fn new(max_pending: usize, max_age_ms: u64, clock: Arc<dyn Clock>) -> Self {
        Self {
            pending: Map::new(),
            count: AtomicUsize::new(0),
            seq: AtomicU64::new(0),
            watchers: Arc::new(WatchSlots::new()),
            max_pending,
            max_age_ms,
            log: std::sync::OnceLock::new(),
            clock,
        }
    }

    /// Logs every request from now on to `log`.
    #[cfg(feature = "persist")]
    pub(crate) fn attach(&self, log: Arc<dyn RequestLog>) {
        let _already = self.log.set(log);
    }

    /// Restores a saved request (before serving: nothing waits, nothing is logged).
    #[cfg(feature = "persist")]
    pub(crate) fn restore(&self, saved: SavedRequest) {
        let SavedRequest {
            name,
            value,
            id,
            at_wall_ms,
            origin,
        } = saved;
        let age = self.clock.wall_ms().saturating_sub(at_wall_ms);
        let at = self.clock.now_ms().saturating_sub(age);
        if self
            .pending
            .insert(
                name,
                Pending {
                    value,
                    at,
                    id,
                    origin,
                },
            )
            .is_none()
        {
            // Ordering: Relaxed: see `request`.
            self.count.fetch_add(1, Ordering::Relaxed);
        }
        // Ordering: Relaxed: before serving; nobody else is looking.
        self.seq.fetch_max(id, Ordering::Relaxed);
    }

    /// Request ids on record went up to `id`: new requests take later ones (a take of an
    /// older request must not be mistaken for a take of a new one).
    #[cfg(feature = "persist")]
    pub(crate) fn restore_seq(&self, id: u64) {
        // Ordering: Relaxed: before serving; nobody else is looking.
        self.seq.fetch_max(id, Ordering::Relaxed);
    }

    /// The latest request id handed out: a cluster's snapshot keeps it, so a replica restored
    /// from it numbers the requests after it as every other replica does.
    #[cfg(feature = "cluster")]
    pub(crate) fn last_id(&self) -> u64 {
        // Ordering: Acquire pairs with the AcqRel increment; the applier (the only writer on
        // a replica) is the caller anyway.
        self.seq.load(Ordering::Acquire)
    }

    /// Every pending request, for a snapshot.
    #[cfg(feature = "persist")]
    pub(crate) fn saved(&self) -> Vec<SavedRequest> {
        let (now, wall) = (self.clock.now_ms(), self.clock.wall_ms());
        let mut out = Vec::with_capacity(self.len());
        self.pending.for_each(|name, pending| {
            out.push(SavedRequest {
                name: Arc::clone(name),
                value: pending.value.clone(),
                id: pending.id,
                at_wall_ms: wall.saturating_sub(now.saturating_sub(pending.at)),
                origin: pending.origin.clone(),
            });
        });
        out
    }

    fn log_taken(&self, name: &str, pending: &Pending) {
        if let Some(log) = self.log.get() {
            log.taken(name, pending.id);
        }
    }

    /// Stores a request (replacing an older one for the same name) and wakes its takers.
    pub(crate) fn request(
        &self,
        name: &str,
        value: Json,
        now: u64,
        origin: Option<&Origin>,
    ) -> Result<(), StoreError> {
        // Replacing an existing request never grows the map, so it is allowed at the cap.
        // Ordering: Relaxed: `count` is a bound, not a synchronization point.
        if self.count.load(Ordering::Relaxed) >= self.max_pending
            && self.pending.with(name, |_| ()).is_none()
        {
            return Err(StoreError::TooManyRequests {
                limit: self.max_pending,
            });
        }
        self.insert(name, value, now, origin);
        Ok(())
    }

    /// Stores (or replaces) one request and wakes its takers. No cap check.
    fn insert(&self, name: &str, value: Json, now: u64, origin: Option<&Origin>) {
        // `count` is raised under the entry's lock, by the same critical section that inserts a
        // new name: a take can only remove (and decrement for) an entry after that, so `count`
        // never drops below the true size, let alone wraps. (Raising it after the insert let a
        // racing take decrement first: `count` wrapped to `usize::MAX` and refused every new
        // name as over the cap; found by the loom model `concurrent_take_never_trips_the_cap`.)
        // Ordering: AcqRel: sequence numbers only need to be unique and increasing; the fire
        // (AcqRel fetch_max on the signal) carries the happens-before to the taker.
        let seq = self.seq.fetch_add(1, Ordering::AcqRel) + 1;
        let request = Pending {
            value,
            at: now,
            id: seq,
            origin: origin.cloned(),
        };
        self.pending.upsert_with(
            Arc::from(name),
            || {
                // Ordering: Relaxed: see above; the entry lock orders it before any decrement.
                self.count.fetch_add(1, Ordering::Relaxed);
                request.clone()
            },
            |pending| *pending = request.clone(),
        );
        if let Some(log) = self.log.get() {
            log.requested(
                name,
                seq,
                &request.value,
                self.clock.wall_ms(),
                request.origin.as_ref(),
            );
        }
        self.watchers.wake(name, seq);
    }

    /// Stores a batch of requests if the cap allows all of them; otherwise stores none.
    pub(crate) fn request_many<'a>(
        &self,
        requests: impl Iterator<Item = (&'a str, Json)> + Clone,
        now: u64,
        origin: Option<&Origin>,
    ) -> Result<(), StoreError> {
        let new_names = requests
            .clone()
            .filter(|(name, _)| self.pending.with(*name, |_| ()).is_none())
            .count();
        // Ordering: Relaxed: see `request`.
        if self.count.load(Ordering::Relaxed).saturating_add(new_names) > self.max_pending {
            return Err(StoreError::TooManyRequests {
                limit: self.max_pending,
            });
        }
        for (name, value) in requests {
            self.insert(name, value, now, origin);
        }
        Ok(())
    }

    /// Takes (removes and returns) the fresh pending requests the selector names that the
    /// filter allows, sorted by name.
    pub(crate) fn take(
        &self,
        selector: &Selector,
        now: u64,
        filter: &TakeFilter,
    ) -> Vec<ChangeRequest> {
        let allowed = |name: &str| filter.as_ref().is_none_or(|allow| allow(name));
        let mut out = Vec::new();
        match selector {
            Selector::Names(names) => {
                for name in names.iter().filter(|name| allowed(name)) {
                    if let Some((name, pending)) = self.pending.remove(&**name) {
                        self.count.fetch_sub(1, Ordering::Relaxed);
                        self.log_taken(&name, &pending);
                        if self.is_fresh(&pending, now) {
                            out.push(ChangeRequest {
                                name,
                                value: pending.value,
                                origin: pending.origin,
                            });
                        }
                    }
                }
            }
            Selector::All => {
                let mut removed = 0;
                self.pending.retain(|name, pending| {
                    if !allowed(name) {
                        return true;
                    }
                    removed += 1;
                    self.log_taken(name, pending);
                    if self.is_fresh(pending, now) {
                        out.push(ChangeRequest {
                            name: Arc::clone(name),
                            value: pending.value.clone(),
                            origin: pending.origin.clone(),
                        });
                    }
                    false
                });
                // Ordering: Relaxed: see `request`.
                self.count.fetch_sub(removed, Ordering::Relaxed);
                out.sort_unstable_by(|a, b| a.name.cmp(&b.name));
            }
        }
        out
    }

    /// The names and ids of the fresh pending requests the selector names that the filter
    /// allows, sorted by name; takes nothing.
    pub(crate) fn peek(
        &self,
        selector: &Selector,
        now: u64,
        filter: &TakeFilter,
    ) -> Vec<(Arc<str>, u64)> {
        let allowed = |name: &str| filter.as_ref().is_none_or(|allow| allow(name));
        let mut out = Vec::new();
        match selector {
            Selector::Names(names) => {
                for name in names.iter().filter(|name| allowed(name)) {
                    if let Some(Some(id)) = self
                        .pending
                        .with(&**name, |p| self.is_fresh(p, now).then_some(p.id))
                    {
                        out.push((Arc::clone(name), id));
                    }
                }
            }
            Selector::All => {
                self.pending.for_each(|name, pending| {
                    if allowed(name) && self.is_fresh(pending, now) {
                        out.push((Arc::clone(name), pending.id));
                    }
                });
                out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            }
        }
        out
    }

    /// Takes `name`'s pending request if it is the one with `id` (a replica applying a take,
    /// see `replica.rs`): age is not looked at, so every replica decides alike.
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    pub(crate) fn take_exact(&self, name: &str, id: u64) -> Option<ChangeRequest> {
        let (name, pending) = self.pending.remove_if(name, |_, p| p.id == id)?;
        // Ordering: Relaxed: see `request`.
        self.count.fetch_sub(1, Ordering::Relaxed);
        self.log_taken(&name, &pending);
        Some(ChangeRequest {
            name,
            value: pending.value,
            origin: pending.origin,
        })
    }

    /// Drops requests older than the age limit; returns how many.
    pub(crate) fn sweep(&self, now: u64) -> usize {
        let mut dropped = 0;
        self.pending.retain(|name, pending| {
            let keep = self.is_fresh(pending, now);
            if !keep {
                dropped += 1;
                self.log_taken(name, pending);
            }
            keep
        });
        // Ordering: Relaxed: see `request`.
        self.count.fetch_sub(dropped, Ordering::Relaxed);
        dropped
    }

    /// Gives back the map room of requests taken or swept, and of their watch slots (see
    /// `expiry.rs`).
    pub(crate) fn shrink_if_sparse(&self) {
        crate::store::expiry::shrink_if_sparse(&self.pending);
        self.watchers.shrink_if_sparse();
    }

    fn is_fresh(&self, pending: &Pending, now: u64) -> bool {
        now.saturating_sub(pending.at) < self.max_age_ms
    }

    pub(crate) fn len(&self) -> usize {
        // Ordering: Relaxed: a gauge.
        self.count.load(Ordering::Relaxed)
    }
}

/// A wait for change requests; made by
/// [`Registry::take_requests`](crate::Registry::take_requests).
///
/// Resolves at once with the pending requests it names, or, when none is pending, with the
/// first ones that arrive. Resolves with an empty list on shutdown.
///
/// # Cancel safety
///
/// Cancel safe: requests are removed only inside the `poll` that returns them, so a take that is
/// dropped before it completes has taken nothing.
#[must_use = "TakeRequests does nothing unless awaited"]
#[derive(Debug)]
pub struct TakeRequests {
    wait: RequestWait,
}

impl TakeRequests {
    pub(crate) fn new(shared: Arc<Shared>, selector: Selector, filter: TakeFilter) -> Self {
        Self {
            wait: RequestWait::new(shared, selector, filter),
        }
    }
}

impl Future for TakeRequests {
    type Output = Vec<ChangeRequest>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.get_mut()
            .wait
            .poll_with(cx, |requests, selector, now, filter| {
                requests.take(selector, now, filter)
            })
    }
}

/// A wait for change requests that takes none: resolves with the names and ids of the pending
/// ones (a replica's take proposes them to its cluster, see `replica.rs`). Cancel safe.
#[derive(Debug)]
pub(crate) struct PeekRequests {
    wait: RequestWait,
}

impl PeekRequests {
    pub(crate) fn new(shared: Arc<Shared>, selector: Selector, filter: TakeFilter) -> Self {
        Self {
            wait: RequestWait::new(shared, selector, filter),
        }
    }
}

impl Future for PeekRequests {
    type Output = Vec<(Arc<str>, u64)>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.get_mut()
            .wait
            .poll_with(cx, |requests, selector, now, filter| {
                requests.peek(selector, now, filter)
            })
    }
}

/// What a wait for change requests keeps: its signal, registered before the first look (see
/// the invariants), and how far it has looked.
struct RequestWait {
    shared: Arc<Shared>,
    selector: Selector,
    /// Which of the selected names this wait may take (see [`TakeFilter`]).
    filter: TakeFilter,
    signal: Arc<Signal>,
    registration: Registration,
    /// The highest request sequence this wait has already looked past.
    seen: u64,
}

impl std::fmt::Debug for RequestWait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestWait")
            .field("selector", &self.selector)
            .field("filtered", &self.filter.is_some())
            .field("seen", &self.seen)
            .finish_non_exhaustive()
    }
}

impl RequestWait {
    fn new(shared: Arc<Shared>, selector: Selector, filter: TakeFilter) -> Self {
        let signal = Signal::new();
        let registration = shared.requests.watchers.register(&selector, &signal);
        Self {
            shared,
            selector,
            filter,
            signal,
            registration,
            seen: 0,
        }
    }

    /// Looks with `look` until it finds something, the signal has nothing new, or shutdown.
    fn poll_with<T>(
        &mut self,
        cx: &mut Context<'_>,
        look: impl Fn(&Requests, &Selector, u64, &TakeFilter) -> Vec<T>,
    ) -> Poll<Vec<T>> {
        loop {
            let found = look(
                &self.shared.requests,
                &self.selector,
                self.shared.now_ms(),
                &self.filter,
            );
            if !found.is_empty() {
                return Poll::Ready(found);
            }
            if self.shared.is_shut_down() || self.seen == SHUTDOWN {
                return Poll::Ready(Vec::new());
            }
            match self.signal.poll_above(cx, self.seen) {
                // Something arrived (or shutdown): look again.
                Poll::Ready(fired) => self.seen = fired,
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl Drop for RequestWait {
    fn drop(&mut self) {
        self.shared
            .requests
            .watchers
            .unregister(&mut self.registration);
    }
}
