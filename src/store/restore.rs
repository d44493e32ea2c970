//! Restoring a registry's state saved elsewhere (a snapshot and a log, see `persist/`), and
//! reading it out for a snapshot.
//!
//! # Invariants
//!
//! * Restoring happens before the registry serves anyone: nothing waits, nothing subscribes,
//!   so restored changes send no feed events and wake nobody. Expiry passes are paused until
//!   it ends (`Shared::restoring`): an expiry meanwhile would commit at a revision before the
//!   restored ones are published. Each restored change still
//!   takes the commit lock (map membership changes only under it), and the revision counter
//!   is stored once, by [`Restore::finish`], with the Release store readers pair with.
//! * **Idempotent, by revision.** A saved change at revision `r` for a name applies only if
//!   what the registry holds for that name is older than `r`: a set replaces an older
//!   register (or creates it), a removal removes an older one. So replaying a log from any
//!   point before a snapshot's changes, in order, over that snapshot — even one taken while
//!   writes went on, whose registers are each at a revision of their own — ends in the state
//!   the log ends in.
//! * Removals are recorded in the history in revision order; one at or before the latest
//!   recorded (a snapshot's history and the log after it overlap) is not recorded twice.

use std::time::Duration;

use crate::json::Json;
use crate::store::feed::EventKind;
use crate::store::register::{Entry, Register, Revision, Timer, MAX_DEADLINE};
use crate::store::{Registry, Shared};
use crate::sync::Arc;

/// A register as saved: what a snapshot or a log record holds.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Saved {
    pub(crate) name: Arc<str>,
    pub(crate) value: Json,
    pub(crate) metadata: Option<Json>,
    pub(crate) revision: Revision,
    pub(crate) created: Revision,
    /// Its TTL in milliseconds.
    pub(crate) ttl_ms: u64,
}

/// Restores saved state into a registry that has served no one yet.
#[derive(Debug)]
pub(crate) struct Restore<'a> {
    shared: &'a Shared,
    /// The newest revision restored so far.
    revision: Revision,
    /// The newest removal recorded in the history.
    recorded: Revision,
}

impl Registry {
    /// Makes this registry durable (see `commit.rs`): once, after restoring, before serving.
    pub(crate) fn attach(
        &self,
        sink: Box<dyn crate::store::commit::Sink>,
        durability: Arc<dyn crate::store::commit::Durability>,
        requests: Arc<dyn crate::store::RequestLog>,
    ) {
        self.shared().attach(sink, durability, requests);
    }

    /// Starts restoring saved state into this registry (which must not have served anyone).
    pub(crate) fn restore(&self) -> Restore<'_> {
        let shared = self.shared();
        // Under the expiry lock: a pass that began before sees no restored entry; every later
        // one sees the flag. Ordering: Relaxed: the lock orders it.
        let pass = shared.expiry.lock();
        shared
            .restoring
            .store(true, std::sync::atomic::Ordering::Relaxed);
        drop(pass);
        let revision = shared.current_revision();
        Restore {
            shared,
            revision,
            recorded: 0,
        }
    }
}

impl Shared {
    /// Every register with its TTL and its deadline in wall time (milliseconds since the
    /// Unix epoch), for a snapshot: read one by one while writes go on (each at a revision of
    /// its own; see the invariants for why that is enough).
    pub(crate) fn saved_registers(&self) -> Vec<(Arc<Register>, u64, u64)> {
        let now = self.clock.now_ms();
        let wall = self.clock.wall_ms();
        let mut out = Vec::with_capacity(self.registers.len());
        self.registers.for_each(|_, entry| {
            let deadline = entry.deadline();
            if deadline != crate::store::register::DEAD {
                let wall_deadline = wall.saturating_add(deadline.saturating_sub(now));
                out.push((entry.snapshot.load(), entry.ttl_ms(), wall_deadline));
            }
        });
        out
    }

    /// The removal history as kept: its horizon (removals at or before it are forgotten) and
    /// each name's latest removal after it, in revision order.
    pub(crate) fn saved_history(&self) -> (Revision, Vec<(Arc<str>, Revision, EventKind)>) {
        let commit = self.begin();
        let horizon = commit.history_ref().horizon();
        let removals = commit
            .history_ref()
            .removals_after(horizon)
            .unwrap_or_default();
        (horizon, removals)
    }

    /// Every pending change request, for a snapshot.
    pub(crate) fn saved_requests(&self) -> Vec<crate::store::SavedRequest> {
        self.requests.saved()
    }

    /// Runs `f` with the published revision under the commit lock: no change commits while it
    /// runs, so it sees a boundary between commits (where the log starts a new segment).
    pub(crate) fn at_commit_boundary<T>(&self, f: impl FnOnce(Revision) -> T) -> T {
        let commit = self.begin();
        f(commit.published())
    }
}

impl Restore<'_> {
    /// Restores a register saved at `saved.revision`, expiring at clock time `deadline_ms`
    /// (the caller decides how a saved deadline maps onto this run's clock).
    pub(crate) fn set(&mut self, saved: Saved, deadline_ms: u64) {
        self.revision = self.revision.max(saved.revision);
        let shared = self.shared;
        let _commit = shared.begin();
        let newer = shared
            .registers
            .with(&*saved.name, |entry| {
                entry.snapshot.peek(|r| r.revision) >= saved.revision
            })
            .unwrap_or(false);
        if newer {
            return;
        }
        let deadline = deadline_ms.min(MAX_DEADLINE);
        let register = Arc::new(Register {
            name: Arc::clone(&saved.name),
            value: saved.value,
            metadata: saved.metadata,
            revision: saved.revision,
            created: saved.created,
        });
        let entry = Arc::new(Entry::new(register, deadline, saved.ttl_ms));
        if let Some(old) = shared.registers.insert(saved.name, Arc::clone(&entry)) {
            old.kill();
        }
        shared.inbox.push(Timer {
            entry,
            gen: 0,
            at: deadline,
        });
    }

    /// Restores the removal of `name` at `revision` (a delete or an expiry): removes an older
    /// register of that name and records the removal in the history.
    pub(crate) fn removed(&mut self, name: Arc<str>, revision: Revision, kind: EventKind) {
        self.revision = self.revision.max(revision);
        let shared = self.shared;
        let mut commit = shared.begin();
        let older = shared
            .registers
            .with(&*name, |entry| {
                entry.snapshot.peek(|r| r.revision) < revision
            })
            .unwrap_or(false);
        if older {
            if let Some((_, entry)) = shared.registers.remove(&*name) {
                entry.kill();
            }
        }
        if revision > self.recorded {
            self.recorded = revision;
            commit.history_mut().record(name, revision, kind);
        }
    }

    /// The saved history forgot removals at or before `horizon` (it was full).
    pub(crate) fn forget_through(&mut self, horizon: Revision) {
        self.revision = self.revision.max(horizon);
        self.shared.begin().history_mut().forget_through(horizon);
    }

    /// Some change at `revision` was saved (a snapshot taken at it): the counter goes at least
    /// that far.
    pub(crate) fn saw(&mut self, revision: Revision) {
        self.revision = self.revision.max(revision);
    }

    /// Restores a pending change request (the caller has decided it applies).
    pub(crate) fn request(&mut self, saved: crate::store::SavedRequest) {
        self.shared.requests.restore(saved);
    }

    /// Request ids on record went up to `id`.
    pub(crate) fn request_ids_through(&mut self, id: u64) {
        self.shared.requests.restore_seq(id);
    }

    /// This run's clock: (monotonic ms, wall ms), to place saved deadlines on.
    pub(crate) fn clock_now(&self) -> (u64, u64) {
        (self.shared.clock.now_ms(), self.shared.clock.wall_ms())
    }

    /// Ends the restore: the registry's revision counter continues from the newest revision
    /// restored. Returns it.
    pub(crate) fn finish(self) -> Revision {
        let commit = self.shared.begin();
        commit.publish_restored(self.revision);
        // Ordering: Release pairs with the Acquire load in `expire_due`.
        self.shared
            .restoring
            .store(false, std::sync::atomic::Ordering::Release);
        self.revision
    }
}

/// A saved deadline (wall time) on this run's clock: the time it had left, but at least
/// `grace` (by default its own TTL) from now, so providers that are alive get a TTL to
/// refresh in after a restart (etcd extends leases after a leader change the same way).
pub(crate) fn restored_deadline(
    shared_now_ms: u64,
    wall_now_ms: u64,
    wall_deadline_ms: u64,
    ttl_ms: u64,
    grace: Option<Duration>,
) -> u64 {
    let left = wall_deadline_ms.saturating_sub(wall_now_ms);
    let grace_ms = grace.map_or(ttl_ms, |g| u64::try_from(g.as_millis()).unwrap_or(u64::MAX));
    shared_now_ms
        .saturating_add(left.max(grace_ms))
        .min(MAX_DEADLINE)
}
