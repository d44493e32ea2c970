//! The commit path: the one place where a change to the registers becomes a revision.
//!
//! Every change — a set that creates or changes a register, a delete, an expiry — is made
//! inside a [`Commit`], begun with [`Shared::begin`]. Whatever else is told of changes (the
//! feed today; a log, an audit trail or a replica tomorrow) is a [`Sink`] on this path, so a
//! new consumer of the change stream is one more sink, never a fourth copy of the sequence
//! below in `set`, `remove` and the expiry pass.
//!
//! # Invariants
//!
//! * **One sequence.** Under the commit lock a change takes the next revision
//!   ([`Commit::next_revision`]), is applied to the map by the caller, and is then committed
//!   with [`Commit::set`] or [`Commit::removed`]: the removal is recorded in the history, the
//!   change handed to every sink, and the event sent to the feed — in that order, one change
//!   at a time. The commit ends (drop or [`Commit::finish`]) by telling the sinks the revision
//!   it reached and then storing the revision counter (the Release store that readers' Acquire
//!   loads pair with), still under the lock. So the feed and every sink see every change
//!   exactly once, in revision order, with no gaps, and a revision is published only after
//!   everything it covers is.
//! * **Sinks only buffer.** A sink runs under the commit lock, which every writer meets: it
//!   may copy what it needs into a buffer of its own and signal a thread, never do I/O, block
//!   or wait. What it does with the buffer happens elsewhere, after the lock is released.
//! * **Waking is the caller's,** after the commit is finished: it knows which names changed
//!   (the expiry pass wakes a whole batch at once).
//! * A commit that changed nothing publishes nothing and tells the sinks nothing.

// Without the `persist` feature no sink is ever added (the path stays, at the cost of one
// empty-vector check per commit), so what only sinks read is unread.
#![cfg_attr(not(feature = "persist"), allow(dead_code))]

use std::fmt;

use crate::store::feed::{Event, EventKind};
use crate::store::history::History;
use crate::store::origin::Origin;
use crate::store::register::{Register, Revision};
use crate::store::{CommitState, Shared};
use crate::sync::{Arc, MutexGuard, Ordering};

/// A change as committed, as each [`Sink`] is handed it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Committed<'a> {
    /// A register created or changed (a refresh that changes nothing is not a commit). Its
    /// revision is `register.revision()`.
    Set {
        register: &'a Arc<Register>,
        /// The TTL the write gave (or the default), in milliseconds.
        ttl_ms: u64,
        /// When it expires unless refreshed, in the clock's milliseconds (see [`Now`]).
        deadline_ms: u64,
        /// Who made it, when the writer said ([`Registry::set_as`](crate::Registry::set_as)).
        origin: Option<&'a Origin>,
    },
    /// A register deleted ([`EventKind::Delete`]) or expired ([`EventKind::Expire`]).
    Removed {
        name: &'a Arc<str>,
        revision: Revision,
        kind: EventKind,
        /// Who deleted it, when the writer said; `None` for an expiry.
        origin: Option<&'a Origin>,
    },
}

/// The clock's two times at the start of a commit, so a sink can turn a deadline in clock
/// milliseconds into wall time: `wall_ms + (deadline_ms - mono_ms)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Now {
    pub(crate) mono_ms: u64,
    pub(crate) wall_ms: u64,
}

/// Something told of every committed change, under the commit lock (see the invariants).
pub(crate) trait Sink: Send + fmt::Debug + 'static {
    /// One change, in revision order. Buffer it; do not block.
    fn record(&mut self, change: Committed<'_>, now: Now);

    /// The commit that recorded changes up to `through` is about to publish it: the moment to
    /// hand the buffer on (signal a writer thread). Still under the lock.
    fn committed(&mut self, through: Revision);

    /// What to run once the commit lock is released, if anything: waking waiters of a view
    /// (see `views.rs`), which must not happen under the lock. Called right after
    /// [`committed`](Self::committed).
    fn after_release(&mut self) -> Option<Deferred> {
        None
    }
}

/// Work a sink hands back to run after the commit lock is released.
pub(crate) type Deferred = Box<dyn FnOnce() + Send>;

/// Runs the deferred work when dropped: declared after the guard in [`Commit`], so it drops
/// (and runs) after the lock is released.
#[derive(Default)]
struct AfterRelease(Vec<Deferred>);

impl Drop for AfterRelease {
    fn drop(&mut self) {
        for work in self.0.drain(..) {
            work();
        }
    }
}

/// What makes committed changes durable (the log, see `persist/`), as the store sees it.
pub(crate) trait Durability: Send + Sync + fmt::Debug + 'static {
    /// Whether changes can be accepted now: an error says why not (the disk is full), and
    /// writes are refused with it until it clears.
    fn writable(&self) -> Result<(), Arc<str>>;

    /// Resolves when every change up to `revision` is as durable as the policy promises
    /// (at once unless the policy waits for the disk).
    fn durable(
        &self,
        revision: Revision,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), Arc<str>>> + Send + 'static>>;

    /// Resolves when everything written so far — changes and change requests — is as durable
    /// as the policy promises.
    fn durable_all(
        &self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), Arc<str>>> + Send + 'static>>;

    /// Writes out what is pending and stops (the last registry handle is gone).
    fn close(&self);
}

/// An open commit: holds the commit lock until dropped.
pub(crate) struct Commit<'a> {
    shared: &'a Shared,
    state: MutexGuard<'a, CommitState>,
    /// The latest revision this commit took, or the published one if it took none.
    last: Revision,
    changed: bool,
    /// Read once, on the first change, and only when there are sinks to tell.
    now: Option<Now>,
    /// Who this commit's changes are made for, handed to the sinks with each.
    origin: Option<&'a Origin>,
    /// Sinks' work for after the lock. Must stay declared after `state`: fields drop in
    /// declaration order, so this runs once the guard has released the lock.
    after: AfterRelease,
}

impl fmt::Debug for Commit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Commit")
            .field("last", &self.last)
            .field("changed", &self.changed)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// Takes the commit lock and opens a commit.
    pub(crate) fn begin(&self) -> Commit<'_> {
        let state = self.commit.lock();
        // Ordering: Relaxed: the counter is only written under the commit lock, which we hold.
        let last = self.revision.load(Ordering::Relaxed);
        Commit {
            shared: self,
            state,
            last,
            changed: false,
            now: None,
            origin: None,
            after: AfterRelease::default(),
        }
    }

    /// Makes this registry durable: `sink` is told of every change from now on, and writes
    /// consult `durability`. Once, before the registry serves anyone.
    #[cfg(feature = "persist")]
    pub(crate) fn attach(
        &self,
        sink: Box<dyn Sink>,
        durability: Arc<dyn Durability>,
        requests: Arc<dyn crate::store::RequestLog>,
    ) {
        self.add_sink(sink);
        self.requests.attach(requests);
        let _already = self.durability.set(durability);
    }

    /// Whether writes that commit changes are accepted now.
    pub(crate) fn writable(&self) -> Result<(), crate::store::StoreError> {
        match self.durability.get() {
            Some(durability) => {
                durability
                    .writable()
                    .map_err(|reason| crate::store::StoreError::Unavailable {
                        reason: reason.to_string(),
                    })
            }
            None => Ok(()),
        }
    }

    /// Adds a sink: it is told of every change committed from now on. Returns the revision it
    /// starts after (every change up to it is already published).
    pub(crate) fn add_sink(&self, sink: Box<dyn Sink>) -> Revision {
        let mut commit = self.begin();
        commit.push_sink(sink);
        commit.last
    }
}

impl<'a> Commit<'a> {
    /// Makes this commit's changes on behalf of `origin` (sinks are told who).
    pub(crate) fn by(mut self, origin: Option<&'a Origin>) -> Self {
        self.origin = origin;
        self
    }

    /// Adds a sink under this commit's lock: it is told of every change after this commit.
    pub(crate) fn push_sink(&mut self, sink: Box<dyn Sink>) {
        self.state.sinks.push(sink);
    }
}

impl Commit<'_> {
    /// The revision the next change in this commit takes.
    pub(crate) fn next_revision(&self) -> Revision {
        self.last + 1
    }

    fn now(&mut self) -> Now {
        let clock = &self.shared.clock;
        *self.now.get_or_insert_with(|| Now {
            mono_ms: clock.now_ms(),
            wall_ms: clock.wall_ms(),
        })
    }

    /// The removal history (the commit lock protects it).
    pub(crate) fn history_ref(&self) -> &History {
        &self.state.history
    }

    /// The removal history, to change (restoring).
    pub(crate) fn history_mut(&mut self) -> &mut History {
        &mut self.state.history
    }

    /// The published revision, when this commit has changed nothing.
    pub(crate) fn published(&self) -> Revision {
        self.last
    }

    /// Restoring: publishes `revision` as the latest (state restored up to it is in the map).
    pub(crate) fn publish_restored(mut self, revision: Revision) {
        if revision > self.last {
            self.last = revision;
            self.changed = true;
        }
    }

    /// Commits a register the caller has just created or changed in the map, at
    /// [`next_revision`](Self::next_revision) (which `register.revision()` must be).
    pub(crate) fn set(&mut self, register: Arc<Register>, ttl_ms: u64, deadline_ms: u64) {
        let revision = register.revision;
        debug_assert_eq!(
            revision,
            self.next_revision(),
            "a set out of revision order"
        );
        self.last = revision;
        self.changed = true;
        if !self.state.sinks.is_empty() {
            let now = self.now();
            let change = Committed::Set {
                register: &register,
                ttl_ms,
                deadline_ms,
                origin: self.origin,
            };
            for sink in &mut self.state.sinks {
                sink.record(change, now);
            }
        }
        let _no_subscribers = self.shared.feed.send(Event {
            kind: EventKind::Set,
            name: Arc::clone(&register.name),
            revision,
            register: Some(register),
        });
    }

    /// Commits the removal of `name`, which the caller has just taken out of the map:
    /// `kind` is [`EventKind::Delete`] or [`EventKind::Expire`]. Returns its revision.
    pub(crate) fn removed(&mut self, name: &Arc<str>, kind: EventKind) -> Revision {
        debug_assert!(kind != EventKind::Set, "a set is not a removal");
        let revision = self.next_revision();
        self.last = revision;
        self.changed = true;
        self.state.history.record(Arc::clone(name), revision, kind);
        if !self.state.sinks.is_empty() {
            let now = self.now();
            let change = Committed::Removed {
                name,
                revision,
                kind,
                origin: self.origin,
            };
            for sink in &mut self.state.sinks {
                sink.record(change, now);
            }
        }
        let _no_subscribers = self.shared.feed.send(Event {
            kind,
            name: Arc::clone(name),
            revision,
            register: None,
        });
        revision
    }

    /// Ends the commit: publishes what it changed and releases the lock. Returns the last
    /// revision it took, if it took any.
    pub(crate) fn finish(self) -> Option<Revision> {
        let last = self.changed.then_some(self.last);
        drop(self);
        last
    }
}

impl Drop for Commit<'_> {
    fn drop(&mut self) {
        if !self.changed {
            return;
        }
        for sink in &mut self.state.sinks {
            sink.committed(self.last);
            if let Some(work) = sink.after_release() {
                self.after.0.push(work);
            }
        }
        // Ordering: Release pairs with the Acquire load in `Shared::current_revision`: every
        // change up to `last` is visible to a reader that loads it. The guard is released
        // after this body.
        self.shared.revision.store(self.last, Ordering::Release);
    }
}

#[cfg(all(test, not(reg_loom)))]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::ManualClock;
    use crate::{Json, Registry};

    /// Writes down what it is told, as text.
    #[derive(Debug)]
    struct Recorder(Arc<parking_lot::Mutex<Vec<String>>>);

    impl Sink for Recorder {
        fn record(&mut self, change: Committed<'_>, now: Now) {
            let line = match change {
                Committed::Set {
                    register,
                    ttl_ms,
                    deadline_ms,
                    ..
                } => format!(
                    "set {} {} ttl {ttl_ms} in {} wall {}",
                    register.name(),
                    register.revision(),
                    deadline_ms - now.mono_ms,
                    now.wall_ms - crate::store::clock::MANUAL_EPOCH_MS,
                ),
                Committed::Removed {
                    name,
                    revision,
                    kind,
                    ..
                } => format!("{kind} {name} {revision}"),
            };
            self.0.lock().push(line);
        }

        fn committed(&mut self, through: Revision) {
            self.0.lock().push(format!("through {through}"));
        }
    }

    #[test]
    fn sinks_see_every_change_once_in_revision_order() {
        let clock = ManualClock::new();
        let registry = Registry::builder()
            .clock(clock.clone())
            .manual_expiry()
            .build();
        registry
            .set("before", Json::from(0_i64), None, None)
            .unwrap();
        let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let after = registry
            .shared()
            .add_sink(Box::new(Recorder(Arc::clone(&seen))));
        assert_eq!(after, 1, "starts after what is already published");

        clock.advance(Duration::from_millis(5));
        let ttl = Some(Duration::from_secs(2));
        registry.set("a", Json::from(1_i64), None, ttl).unwrap();
        registry.set("a", Json::from(1_i64), None, ttl).unwrap(); // a refresh: not a commit
        registry.set("b", Json::from(2_i64), None, ttl).unwrap();
        registry.set("a", Json::from(3_i64), None, ttl).unwrap();
        assert_eq!(registry.remove("b"), Some(5));
        assert_eq!(registry.remove("b"), None, "nothing to remove: no commit");
        clock.advance(Duration::from_millis(2001));
        assert_eq!(registry.expire_due(), 1, "a");
        clock.advance(Duration::from_secs(8));
        assert_eq!(registry.expire_due(), 1, "`before`, with the default TTL");
        let seen = seen.lock().clone();
        assert_eq!(
            seen,
            [
                "set a 2 ttl 2000 in 2000 wall 5",
                "through 2",
                "set b 3 ttl 2000 in 2000 wall 5",
                "through 3",
                "set a 4 ttl 2000 in 2000 wall 5",
                "through 4",
                "delete b 5",
                "through 5",
                "expire a 6",
                "through 6",
                "expire before 7",
                "through 7",
            ]
            .map(String::from),
            "{seen:#?}"
        );
        assert_eq!(registry.revision(), 7);
    }
}
