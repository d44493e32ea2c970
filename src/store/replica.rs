//! A registry that is one replica of a replicated log (a reg cluster, see `cluster/`).
//!
//! A replicated registry does not commit its own writes: it proposes them to the log (a
//! [`Replicator`]), and every replica — this one included — applies the log's entries in the
//! log's order through the ordinary commit path (`apply_*` below). Every replica applies the
//! same changes in the same order to the same state, so each commits the same revisions: an
//! index read on one replica is valid on every other, and the sinks (the discovery catalog,
//! an audit trail) see the same stream everywhere.
//!
//! # Invariants
//!
//! * **Only the log commits.** Once a replicator is attached, the public synchronous writes
//!   ([`Registry::set`], [`Registry::try_remove`], [`Registry::request_many`] …) are refused
//!   with [`StoreError::Unavailable`]; the `submit_*` writes propose to the log, and the
//!   `apply_*` functions, called by the replicator in log order, are the only ones that commit.
//! * **Apply is deterministic.** What an applied entry does depends only on the registry's
//!   state (which the log determines), never on this replica's clock: a conditional expiry
//!   names the revision it saw; a take names the request ids it saw.
//! * **Refreshes stay local.** A write that changes nothing (same value, metadata and TTL)
//!   moves this replica's deadline at once, lock-free, and is handed to the replicator to be
//!   passed on in a batch ([`Replicator::refreshed`]); it takes no revision anywhere.
//! * **Expiry is proposed, not committed.** The expiry pass hands a register past its deadline
//!   to the replicator ([`Replicator::due`]) and looks at it again every [`RECHECK_MS`] until
//!   the log removes it or a refresh moves its deadline.

// Without the `cluster` feature nothing replicates: the proposals and the apply side are unused.
#![cfg_attr(not(feature = "cluster"), allow(dead_code))]

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::json::Json;
use crate::store::feed::EventKind;
use crate::store::register::{Extend, Revision};
use crate::store::requests::{PeekRequests, TakeFilter};
use crate::store::{
    normalize_metadata, Change, ChangeRequest, Origin, Registry, Selector, SetOutcome, Shared,
    StoreError, WaitOutcome,
};
use crate::sync::{Arc, Ordering};

/// How often a register past its deadline is handed to the replicator again while the log has
/// not removed it (the first proposal was lost, or the log was unreachable), in clock ms.
pub(crate) const RECHECK_MS: u64 = 1_000;

/// One register's write for [`Registry::submit_sets`]: its name, value, metadata and TTL
/// (`None`: the default), as [`Registry::set`] takes them.
pub type Write = (Arc<str>, Json, Option<Json>, Option<Duration>);

/// A boxed future, as the replicator returns them.
pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A write proposed to the log.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Proposal {
    /// Create, change or re-time registers.
    Set { writes: Vec<SetWrite> },
    /// Delete registers.
    Remove { names: Vec<Arc<str>> },
    /// Store change requests, all or none.
    Requests { requests: Vec<(Arc<str>, Json)> },
    /// Take the named requests if each is still the one with that id.
    Take { requests: Vec<(Arc<str>, u64)> },
}

/// One register's write in a [`Proposal::Set`]: checked, its metadata normalized.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SetWrite {
    pub(crate) name: Arc<str>,
    pub(crate) value: Json,
    pub(crate) metadata: Option<Json>,
    pub(crate) ttl_ms: u64,
}

/// What an applied proposal did, handed back to the replica that proposed it.
#[derive(Debug, Clone)]
pub(crate) enum Applied {
    Set(Vec<Result<SetOutcome, StoreError>>),
    /// The latest revision of the removals, if any register was there.
    Removed(Option<Revision>),
    Requested(Result<(), StoreError>),
    Taken(Vec<ChangeRequest>),
}

/// The log a replicated registry proposes its writes to (see the module docs).
pub(crate) trait Replicator: Send + Sync + std::fmt::Debug + 'static {
    /// Appends `proposal` to the log; resolves once this replica has applied it, with what it
    /// did — or with [`StoreError::Unavailable`] if the log did not take it.
    fn propose(
        &self,
        proposal: Proposal,
        origin: Option<Origin>,
    ) -> BoxFuture<Result<Applied, StoreError>>;

    /// `name` was refreshed here without a change: pass it on to the other replicas.
    /// Called on the write path: buffer it, do not block.
    fn refreshed(&self, name: &str);

    /// `name`, at `revision`, is past its deadline here: propose its expiry. Called from the
    /// expiry pass, under its lock: buffer it, do not block.
    fn due(&self, name: Arc<str>, revision: Revision);

    /// Where this replica stands.
    fn status(&self) -> ReplicaStatus;
}

/// Where a replica stands in its log: what `/healthz` and `/metrics` report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplicaStatus {
    /// Connected to the log now.
    pub connected: bool,
    /// Caught up: applied everything the log held when this replica joined (and ready to
    /// serve).
    pub ready: bool,
    /// The log position (its sequence number) applied last.
    pub applied: u64,
    /// The last position the log is known to hold.
    pub last: u64,
    /// The cluster's name.
    pub cluster: String,
    /// The last error talking to the log, if any since the last success.
    pub error: Option<String>,
    /// The log position the newest snapshot holds the state after (0: none).
    pub snapshot: u64,
    /// The replica stopped applying: it fell behind what the log still holds and must be
    /// restarted (`error` says more).
    pub stopped: bool,
}

impl ReplicaStatus {
    /// Log entries known but not applied yet.
    pub fn lag(&self) -> u64 {
        self.last.saturating_sub(self.applied)
    }
}

fn replicated_error() -> StoreError {
    StoreError::Unavailable {
        reason: "this registry is a cluster replica: its writes go through the cluster's log \
                 (use the submit_* writes)"
            .into(),
    }
}

impl Shared {
    /// Refuses the synchronous writes of a replica (see the invariants).
    pub(crate) fn local_writes(&self) -> Result<(), StoreError> {
        match self.replica.get() {
            Some(_) => Err(replicated_error()),
            None => Ok(()),
        }
    }

    /// Moves `name`'s deadline to a TTL from now, with no revision; its revision, or `None`
    /// if it is not there.
    fn touch(&self, name: &str) -> Option<Revision> {
        let now = self.now_ms();
        self.registers
            .with(name, |entry| {
                let deadline = now.saturating_add(entry.ttl_ms());
                match entry.extend(deadline) {
                    Extend::Moved { previous } => {
                        self.rescheduled(entry, previous, deadline);
                        Some(entry.snapshot.peek(|r| r.revision))
                    }
                    Extend::Dead => None,
                }
            })
            .flatten()
    }
}

impl Registry {
    /// Makes this registry a replica of `replicator`'s log: once, before serving.
    pub(crate) fn attach_replicator(&self, replicator: Arc<dyn Replicator>) {
        let _already = self.shared_ref().replica.set(replicator);
    }

    /// Whether this registry is a cluster's replica (see [`replica_status`](Self::replica_status)).
    pub fn is_replica(&self) -> bool {
        self.shared_ref().replica.get().is_some()
    }

    /// Waits, at most `limit`, until this registry has made revision `index`: whether it has.
    /// A replica behind the node that gave the index catches up to it; a registry of its own
    /// that has not made it never will (the index comes from another server, or from this one
    /// before a restart) and answers `false` at once.
    pub async fn reached(&self, index: Revision, limit: Duration) -> bool {
        if index <= self.revision() {
            return true;
        }
        if !self.is_replica() {
            return false;
        }
        let caught_up = async {
            while index > self.revision() {
                if self.wait(&Selector::All, self.revision()).await == WaitOutcome::Shutdown {
                    return false;
                }
            }
            true
        };
        tokio::time::timeout(limit, caught_up)
            .await
            .unwrap_or(false)
    }

    /// Where this registry stands in its cluster's log; `None` for a registry of its own.
    pub fn replica_status(&self) -> Option<ReplicaStatus> {
        self.shared_ref().replica.get().map(|r| r.status())
    }

    /// [`set`](Self::set) (on behalf of `origin`, if given), resolving once the change is as
    /// safe as this registry promises: written to its log under `--sync always`, applied
    /// from the cluster's log on a replica. The write a server makes.
    pub async fn submit_set(
        &self,
        origin: Option<&Origin>,
        name: &str,
        value: Json,
        metadata: Option<Json>,
        ttl: Option<Duration>,
    ) -> Result<SetOutcome, StoreError> {
        let mut outcomes = self
            .submit_sets(origin, vec![(Arc::from(name), value, metadata, ttl)])
            .await?;
        outcomes
            .pop()
            .ok_or_else(|| unexpected(&Applied::Set(Vec::new())))
    }

    /// [`submit_set`](Self::submit_set) of several registers at once (one proposal to a
    /// cluster's log, one wait for the disk): their outcomes, in order. All are checked
    /// before any is applied.
    pub async fn submit_sets(
        &self,
        origin: Option<&Origin>,
        writes: Vec<Write>,
    ) -> Result<Vec<SetOutcome>, StoreError> {
        let shared = self.shared_ref();
        let mut checked = Vec::with_capacity(writes.len());
        for (name, value, metadata, ttl) in writes {
            shared.check_name(&name)?;
            checked.push((
                name,
                value,
                normalize_metadata(metadata)?,
                shared.ttl_ms(ttl),
            ));
        }
        let Some(replica) = shared.replica.get() else {
            let mut outcomes = Vec::with_capacity(checked.len());
            let mut changed = None;
            for (name, value, metadata, ttl_ms) in checked {
                let ttl = Some(Duration::from_millis(ttl_ms));
                let outcome = shared.set(&name, value, metadata, ttl, origin)?;
                if outcome.change != Change::Refreshed {
                    changed = changed.max(Some(outcome.revision));
                }
                outcomes.push(outcome);
            }
            if let Some(revision) = changed {
                self.durable(revision).await?;
            }
            return Ok(outcomes);
        };
        // Unchanged writes are refreshed here and passed on in a batch; the rest are proposed.
        let mut outcomes: Vec<Option<SetOutcome>> = Vec::with_capacity(checked.len());
        let mut proposed = Vec::new();
        for (name, value, metadata, ttl_ms) in checked {
            if let Some(revision) = shared.refresh_unchanged(&name, &value, &metadata, ttl_ms) {
                replica.refreshed(&name);
                outcomes.push(Some(SetOutcome {
                    change: Change::Refreshed,
                    revision,
                }));
                continue;
            }
            outcomes.push(None);
            proposed.push(SetWrite {
                name,
                value,
                metadata,
                ttl_ms,
            });
        }
        if !proposed.is_empty() {
            let applied = match replica
                .propose(Proposal::Set { writes: proposed }, origin.cloned())
                .await?
            {
                Applied::Set(applied) => applied,
                other => return Err(unexpected(&other)),
            };
            let mut applied = applied.into_iter();
            for slot in outcomes.iter_mut().filter(|o| o.is_none()) {
                *slot = Some(
                    applied
                        .next()
                        .ok_or_else(|| unexpected(&Applied::Set(Vec::new())))??,
                );
            }
        }
        Ok(outcomes.into_iter().flatten().collect())
    }

    /// [`try_remove`](Self::try_remove) of each name (on behalf of `origin`), resolving as
    /// [`submit_set`](Self::submit_set) does: the latest removal's revision, or `None` if no
    /// register was there.
    pub async fn submit_remove(
        &self,
        origin: Option<&Origin>,
        names: &[&str],
    ) -> Result<Option<Revision>, StoreError> {
        let shared = self.shared_ref();
        let Some(replica) = shared.replica.get() else {
            shared.writable()?;
            let mut removed = None;
            for name in names {
                removed = removed.max(shared.remove(name, origin));
            }
            if let Some(revision) = removed {
                self.durable(revision).await?;
            }
            return Ok(removed);
        };
        let names: Vec<Arc<str>> = names.iter().map(|name| Arc::from(*name)).collect();
        match replica
            .propose(Proposal::Remove { names }, origin.cloned())
            .await?
        {
            Applied::Removed(revision) => Ok(revision),
            other => Err(unexpected(&other)),
        }
    }

    /// [`request_many`](Self::request_many) (on behalf of `origin`), resolving once the
    /// requests are as safe as this registry promises.
    pub async fn submit_requests(
        &self,
        origin: Option<&Origin>,
        requests: Vec<(Arc<str>, Json)>,
    ) -> Result<(), StoreError> {
        let shared = self.shared_ref();
        for (name, _) in &requests {
            shared.check_name(name)?;
        }
        let Some(replica) = shared.replica.get() else {
            shared.writable()?;
            // What a replica applies, here at once.
            self.apply_requests(origin, &requests)?;
            return self.durable_all().await;
        };
        match replica
            .propose(Proposal::Requests { requests }, origin.cloned())
            .await?
        {
            Applied::Requested(result) => result,
            other => Err(unexpected(&other)),
        }
    }

    /// Takes the pending change requests the selector names that `allow` accepts (all, for
    /// `None`), waiting up to `wait` for one if none is pending (not at all for `None`).
    ///
    /// On a replica a take is proposed to the cluster's log naming the requests it saw, and
    /// the log's order decides which of several takers gets each: one does, the others look
    /// again. A take cancelled after its proposal went out may still take what it named.
    pub async fn submit_take(
        &self,
        selector: Selector,
        allow: TakeFilter,
        wait: Option<Duration>,
    ) -> Vec<ChangeRequest> {
        let shared = self.shared_ref();
        let Some(replica) = shared.replica.get() else {
            return match (wait, allow) {
                (Some(wait), None) => tokio::time::timeout(wait, self.take_requests(selector))
                    .await
                    .unwrap_or_default(),
                (Some(wait), Some(allow)) => {
                    tokio::time::timeout(wait, self.take_requests_where(selector, allow))
                        .await
                        .unwrap_or_default()
                }
                (None, allow) => shared.requests.take(&selector, shared.now_ms(), &allow),
            };
        };
        let deadline = wait.map(|wait| tokio::time::Instant::now() + wait);
        loop {
            let seen = match deadline {
                Some(deadline) => {
                    let peek = PeekRequests::new(
                        Arc::clone(self.shared()),
                        selector.clone(),
                        allow.clone(),
                    );
                    tokio::time::timeout_at(deadline, peek)
                        .await
                        .unwrap_or_default()
                }
                None => shared.requests.peek(&selector, shared.now_ms(), &allow),
            };
            if seen.is_empty() {
                return Vec::new();
            }
            match replica
                .propose(Proposal::Take { requests: seen }, None)
                .await
            {
                Ok(Applied::Taken(taken)) if !taken.is_empty() => return taken,
                // Another replica's take came first: look again (what it took is gone here
                // now, since this take applied after it).
                Ok(_) if deadline.is_some_and(|d| d > tokio::time::Instant::now()) => {}
                _ => return Vec::new(),
            }
        }
    }

    // What the replicator applies, in log order (see the invariants).

    /// Applies a proposed set.
    pub(crate) fn apply_set(
        &self,
        origin: Option<&Origin>,
        name: &str,
        value: Json,
        metadata: Option<Json>,
        ttl_ms: u64,
    ) -> Result<SetOutcome, StoreError> {
        self.shared_ref().set(
            name,
            value,
            metadata,
            Some(Duration::from_millis(ttl_ms.max(1))),
            origin,
        )
    }

    /// Applies a proposed removal of `names`: the latest revision, if any was there.
    pub(crate) fn apply_remove(
        &self,
        origin: Option<&Origin>,
        names: &[Arc<str>],
    ) -> Option<Revision> {
        let shared = self.shared_ref();
        names
            .iter()
            .filter_map(|name| shared.remove(name, origin))
            .max()
    }

    /// Applies an expiry proposed for `name` at `revision`: removes it if it is still at that
    /// revision. The removal's revision, if it did.
    pub(crate) fn apply_expire(&self, name: &str, revision: Revision) -> Option<Revision> {
        let shared = self.shared_ref();
        let mut commit = shared.begin();
        let entry = shared.registers.get(name)?;
        if entry.snapshot.peek(|r| r.revision) != revision {
            return None;
        }
        let (name, entry) = shared.registers.remove(name)?;
        entry.kill();
        let removed = commit.removed(&name, EventKind::Expire);
        commit.finish();
        shared.watchers.wake(&name, removed);
        // Ordering: Relaxed: a counter for metrics.
        shared.expired.fetch_add(1, Ordering::Relaxed);
        Some(removed)
    }

    /// Applies another replica's refreshes: each named register's deadline moves to a TTL
    /// from now on this replica's clock.
    pub(crate) fn apply_touch<'a>(&self, names: impl IntoIterator<Item = &'a str>) {
        let shared = self.shared_ref();
        for name in names {
            shared.touch(name);
        }
    }

    /// Applies proposed change requests (all or none).
    pub(crate) fn apply_requests(
        &self,
        origin: Option<&Origin>,
        requests: &[(Arc<str>, Json)],
    ) -> Result<(), StoreError> {
        let shared = self.shared_ref();
        shared.requests.request_many(
            requests
                .iter()
                .map(|(name, value)| (&**name, value.clone())),
            shared.now_ms(),
            origin,
        )
    }

    /// Applies a proposed take: each named request that is still the one with that id.
    pub(crate) fn apply_take(&self, requests: &[(Arc<str>, u64)]) -> Vec<ChangeRequest> {
        let shared = self.shared_ref();
        requests
            .iter()
            .filter_map(|(name, id)| shared.requests.take_exact(name, *id))
            .collect()
    }
}

fn unexpected(applied: &Applied) -> StoreError {
    StoreError::Unavailable {
        reason: format!("the cluster answered a write with {applied:?}"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    //! The replica path without a cluster: a log in memory that applies each proposal when
    //! it is made, as a cluster node applies its own entries.

    use std::sync::OnceLock;

    use parking_lot::Mutex;

    use super::*;

    #[derive(Debug, Default)]
    struct Loopback {
        registry: OnceLock<Registry>,
        proposals: Mutex<Vec<Proposal>>,
        refreshed: Mutex<Vec<String>>,
    }

    impl Replicator for Loopback {
        fn propose(
            &self,
            proposal: Proposal,
            origin: Option<Origin>,
        ) -> BoxFuture<Result<Applied, StoreError>> {
            self.proposals.lock().push(proposal.clone());
            let registry = self.registry.get().unwrap();
            let applied = match proposal {
                Proposal::Set { writes } => Applied::Set(
                    writes
                        .into_iter()
                        .map(|w| {
                            registry.apply_set(
                                origin.as_ref(),
                                &w.name,
                                w.value,
                                w.metadata,
                                w.ttl_ms,
                            )
                        })
                        .collect(),
                ),
                Proposal::Remove { names } => {
                    Applied::Removed(registry.apply_remove(origin.as_ref(), &names))
                }
                Proposal::Requests { requests } => {
                    Applied::Requested(registry.apply_requests(origin.as_ref(), &requests))
                }
                Proposal::Take { requests } => Applied::Taken(registry.apply_take(&requests)),
            };
            Box::pin(async move { Ok(applied) })
        }

        fn refreshed(&self, name: &str) {
            self.refreshed.lock().push(name.to_owned());
        }

        fn due(&self, _name: Arc<str>, _revision: Revision) {}

        fn status(&self) -> ReplicaStatus {
            ReplicaStatus::default()
        }
    }

    fn replica() -> (Registry, Arc<Loopback>) {
        let registry = Registry::builder().manual_expiry().build();
        let log = Arc::new(Loopback::default());
        log.registry.set(registry.clone()).unwrap();
        registry.attach_replicator(Arc::clone(&log) as Arc<dyn Replicator>);
        (registry, log)
    }

    fn write(name: &str, value: i64, ttl_s: u64) -> Write {
        (
            Arc::from(name),
            Json::from(value),
            None,
            Some(Duration::from_secs(ttl_s)),
        )
    }

    #[tokio::test]
    async fn a_replica_refreshes_unchanged_writes_here_and_proposes_the_rest() {
        let (registry, log) = replica();
        let created = registry
            .submit_sets(None, vec![write("a", 1, 10)])
            .await
            .unwrap();
        assert_eq!(created[0].change, Change::Created);
        assert_eq!(log.proposals.lock().len(), 1);

        // Same content, same TTL: refreshed here, passed on, nothing proposed.
        let again = registry
            .submit_sets(None, vec![write("a", 1, 10), write("b", 2, 10)])
            .await
            .unwrap();
        assert_eq!(again[0].change, Change::Refreshed);
        assert_eq!(again[0].revision, created[0].revision);
        assert_eq!(again[1].change, Change::Created);
        assert_eq!(*log.refreshed.lock(), vec!["a".to_owned()]);
        let proposals = log.proposals.lock().clone();
        assert_eq!(proposals.len(), 2);
        assert!(
            matches!(&proposals[1], Proposal::Set { writes } if writes.len() == 1 && &*writes[0].name == "b")
        );

        // A new TTL is a change the log carries, with no new revision.
        registry
            .submit_sets(None, vec![write("a", 1, 20)])
            .await
            .unwrap();
        assert_eq!(log.proposals.lock().len(), 3);
        assert!(registry.expires_in("a").unwrap() > Duration::from_secs(10));
    }

    #[tokio::test]
    async fn a_replica_refuses_writes_that_go_around_its_log() {
        let (registry, log) = replica();
        assert!(matches!(
            registry.set("a", Json::from(1i64), None, None),
            Err(StoreError::Unavailable { .. })
        ));
        assert!(matches!(
            registry.request("a", Json::from(1i64)),
            Err(StoreError::Unavailable { .. })
        ));
        assert!(log.proposals.lock().is_empty());
        assert_eq!(registry.revision(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_index_a_replica_has_not_made_is_waited_for_and_one_of_its_own_is_not() {
        let own = Registry::new();
        own.set("a", Json::from(1i64), None, None).unwrap();
        assert!(own.reached(1, Duration::from_secs(3600)).await);
        // Another server's index (or this one's before a restart): at once, no waiting.
        let asked = tokio::time::Instant::now();
        assert!(!own.reached(5, Duration::from_secs(3600)).await);
        assert_eq!(asked.elapsed(), Duration::ZERO);

        let (replica, _log) = replica();
        let waiting = {
            let replica = replica.clone();
            tokio::spawn(async move { replica.reached(2, Duration::from_secs(60)).await })
        };
        replica
            .submit_sets(None, vec![write("a", 1, 10)])
            .await
            .unwrap();
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "answered before the replica made 2");
        replica
            .submit_sets(None, vec![write("a", 2, 10)])
            .await
            .unwrap();
        assert!(waiting.await.unwrap());
        // Never made within the limit: false once it has passed.
        let asked = tokio::time::Instant::now();
        assert!(!replica.reached(9, Duration::from_secs(5)).await);
        assert_eq!(asked.elapsed(), Duration::from_secs(5));
    }
}
