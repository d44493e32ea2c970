//! One node of a cluster: its NATS connection, the proposer, the applier and the background
//! tasks that pass on refreshes and propose expiries (see `mod.rs`).
//!
//! # Invariants
//!
//! * **One applier.** Log entries are applied by one task, in stream sequence order, each
//!   once (an entry at or below `applied` is skipped: an ordered consumer that was recreated
//!   starts after it). What it applies depends only on the registry and on `touches`, which
//!   only it changes: every replica decides alike.
//! * **A waiter before its entry.** A proposal's waiter is registered before the entry is
//!   published, so the applier always finds it; one that timed out is removed by its
//!   proposer, and an entry whose waiter is gone is applied all the same.
//! * The write path only buffers: `refreshed` and `due` push into a set or a vector under a
//!   short lock and return; the tasks publish.

use std::collections::hash_map::Entry as Slot;
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, message::PublishMessage, stream};
use futures_util::StreamExt;
use parking_lot::Mutex;
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::cluster::op::{self, Body, Expiry, SnapshotHead};
use crate::cluster::snapshot::{self, Touches};
use crate::cluster::{ClusterConfig, ClusterError, TAKEOVER};
use crate::store::replica::{Applied, BoxFuture, Proposal, Replicator};
use crate::store::{Origin, Registry, ReplicaStatus, Revision, StoreError};
use crate::sync::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

/// Most names in one touch or expire entry (JetStream's default message limit is 1 MiB).
const BATCH_BYTES: usize = 256 << 10;

/// How often the applier checks that its consumer is not stuck behind the stream.
const STALL_CHECK: Duration = Duration::from_millis(250);

/// How long a consumer behind the stream may go without delivering before it is made again
/// (its server went away: async-nats would notice only after two 15 s heartbeats).
const STALL_AFTER: Duration = Duration::from_secs(1);

/// How often a node asks for the stream's last sequence (to know it is behind).
const INFO_EVERY: Duration = Duration::from_secs(1);

/// How long a node keeps trying to reach JetStream when it joins (a NATS cluster that has
/// just started elects its JetStream leader first).
const JOIN_TIMEOUT: Duration = Duration::from_secs(30);

/// A node's state, shared by its tasks and its registry (as the registry's [`Replicator`]).
pub(crate) struct Node {
    /// Itself, for the futures `propose` returns.
    me: Weak<Node>,
    id: u64,
    config: ClusterConfig,
    client: async_nats::Client,
    js: jetstream::Context,
    /// The log's subject, and the snapshots' (`snapshot.rs`).
    subject: String,
    snap_data: String,
    snap_head: String,
    stream: String,
    next_op: AtomicU64,
    waiting: Mutex<HashMap<u64, oneshot::Sender<Applied>>>,
    /// Registers refreshed here since the last touch entry.
    touched: Mutex<HashSet<Arc<str>>>,
    /// Registers the expiry pass found past their deadline, for the expirer task.
    due: Mutex<Vec<(Arc<str>, Revision)>>,
    due_signal: Notify,
    /// Each live register's last set-or-touch entry and the node that proposed it. The
    /// applier's alone (see the invariants).
    touches: Touches,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    applied: u64,
    last: u64,
    /// The stream's last log entry when this node joined: ready once applied.
    joined_at: u64,
    ready: bool,
    error: Option<String>,
    /// The entry the newest snapshot in the log holds the state after.
    snapshot_at: u64,
    /// The entry that claimed the next snapshot for the node that proposed it (log state:
    /// the same on every replica; see `snapshot.rs`).
    claim: Option<(u64, u64)>,
    /// This node is storing a snapshot.
    writing: bool,
    /// This node fell behind the trimmed stream and stopped applying.
    stopped: bool,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &format_args!("{:016x}", self.id))
            .field("stream", &self.stream)
            .field("state", &*self.state.lock())
            .finish_non_exhaustive()
    }
}

/// A node's membership in its cluster: dropping it stops the node's tasks (its registry
/// keeps what it applied, and refuses writes).
#[derive(Debug)]
pub struct Cluster {
    node: Arc<Node>,
    tasks: Vec<JoinHandle<()>>,
}

impl Cluster {
    /// Where this node stands.
    pub fn status(&self) -> ReplicaStatus {
        self.node.status()
    }

    /// Waits until this node has caught up with the log as it was when it joined.
    pub async fn ready(&self) {
        loop {
            if self.node.state.lock().ready {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Resolves if this node stops applying the log: it fell behind what the stream still
    /// holds (see [`ReplicaStatus::stopped`]) and must be restarted.
    pub async fn stopped(&self) {
        loop {
            if self.node.state.lock().stopped {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// This node's id in the log (random, new at each start).
    pub fn node_id(&self) -> u64 {
        self.node.id
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn nats<E: std::fmt::Display>(error: E) -> ClusterError {
    ClusterError::Nats(error.to_string())
}

fn random_id() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    if let Ok(since) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        hasher.write_u128(since.as_nanos());
    }
    hasher.finish()
}

/// Connects, makes sure the stream exists, makes `registry` a replica and starts the tasks.
pub(crate) async fn start(
    registry: &Registry,
    config: ClusterConfig,
) -> Result<Cluster, ClusterError> {
    let mut addrs = Vec::with_capacity(config.urls.len());
    for url in &config.urls {
        addrs.push(
            url.parse::<async_nats::ServerAddr>()
                .map_err(|e| ClusterError::Config(format!("NATS URL {url:?}: {e}")))?,
        );
    }
    let client = async_nats::ConnectOptions::new()
        .name(format!("reg {}", config.name))
        .connection_timeout(Duration::from_secs(5))
        .connect(addrs)
        .await
        .map_err(nats)?;
    // One attempt's limit: `publish` retries within the write's own limit.
    let js = jetstream::ContextBuilder::new()
        .timeout(config.publish_timeout.min(Duration::from_secs(1)))
        .build(client.clone());
    let stream_name = format!("REG_{}", config.name);
    let subject = format!("reg.{}.log", config.name);
    let snap_data = format!("reg.{}.snap.data", config.name);
    let snap_head = format!("reg.{}.snap.head", config.name);
    let stream_config = stream::Config {
        name: stream_name.clone(),
        subjects: vec![subject.clone(), snap_data.clone(), snap_head.clone()],
        num_replicas: config.replicas,
        storage: stream::StorageType::File,
        duplicate_window: Duration::from_secs(120),
        // Snapshot chunks are read with direct gets (raw bytes, from any replica).
        allow_direct: true,
        ..Default::default()
    };
    let deadline = Instant::now() + JOIN_TIMEOUT;
    let mut stream = loop {
        match js.get_or_create_stream(stream_config.clone()).await {
            Ok(stream) => break stream,
            Err(error) if Instant::now() < deadline => {
                tracing::debug!(%error, "JetStream not ready yet");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(error) => {
                return Err(ClusterError::Nats(format!(
                    "cannot create or open stream {stream_name} ({} replicas): {error}",
                    config.replicas
                )))
            }
        }
    };
    // A stream made by an earlier reg has neither the snapshot subjects nor direct gets.
    let made = stream.cached_info().config.clone();
    let missing = stream_config
        .subjects
        .iter()
        .any(|subject| !made.subjects.contains(subject));
    if missing || !made.allow_direct {
        let mut subjects = made.subjects.clone();
        for subject in &stream_config.subjects {
            if !subjects.contains(subject) {
                subjects.push(subject.clone());
            }
        }
        let updated = stream::Config {
            subjects,
            allow_direct: true,
            ..made
        };
        js.update_stream(&updated).await.map_err(|e| {
            ClusterError::Nats(format!(
                "cannot add the snapshot subjects to stream {stream_name}: {e}"
            ))
        })?;
        stream = js.get_stream(&stream_name).await.map_err(nats)?;
    }
    // The newest snapshot first (retried: a newer one may trim the chunks of the one being
    // read), then the entries after it.
    let touches = Touches::new();
    let loaded = loop {
        match load_snapshot(&stream, &snap_head, registry, &touches).await {
            Ok(at) => break at,
            Err(error) if Instant::now() < deadline => {
                tracing::warn!(%error, "loading the cluster's snapshot; retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(error) => {
                return Err(ClusterError::Nats(format!(
                    "cannot load the snapshot of {stream_name}: {error}"
                )))
            }
        }
    };
    let joined_at = loop {
        match last_sequence(&stream, &subject).await {
            Ok(last) => break last,
            Err(error) if Instant::now() < deadline => {
                tracing::debug!(%error, "reading the log's last entry; retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(error) => return Err(ClusterError::Nats(error)),
        }
    };
    let node = Arc::new_cyclic(|me| Node {
        me: me.clone(),
        id: random_id(),
        config,
        client,
        js,
        subject,
        snap_data,
        snap_head,
        stream: stream_name,
        next_op: AtomicU64::new(0),
        waiting: Mutex::new(HashMap::new()),
        touched: Mutex::new(HashSet::new()),
        due: Mutex::new(Vec::new()),
        due_signal: Notify::new(),
        touches,
        state: Mutex::new(State {
            joined_at,
            ready: joined_at <= loaded,
            applied: loaded,
            last: joined_at.max(loaded),
            snapshot_at: loaded,
            ..State::default()
        }),
    });
    // Before the first entry applies: from now on the expiry pass proposes, never commits.
    registry.attach_replicator(Arc::clone(&node) as Arc<dyn Replicator>);
    tracing::info!(
        node = format_args!("{:016x}", node.id),
        stream = %node.stream,
        entries = joined_at,
        snapshot = loaded,
        "joined the cluster; catching up"
    );
    let tasks = vec![
        tokio::spawn(apply_loop(Arc::clone(&node), registry.clone())),
        tokio::spawn(touch_loop(Arc::clone(&node))),
        tokio::spawn(info_loop(Arc::clone(&node))),
        tokio::spawn(expire_loop(Arc::clone(&node), registry.clone())),
    ];
    Ok(Cluster { node, tasks })
}

impl Node {
    /// Publishes one entry and waits for JetStream to store it: its sequence.
    async fn publish(&self, op: u64, origin: Option<&Origin>, body: &Body) -> Result<u64, String> {
        let bytes = bytes::Bytes::from(op::encode(self.id, op, origin, body));
        let id = format!("{:016x}-{op}", self.id);
        let sequence = self.publish_to(&self.subject, &id, bytes).await?;
        self.seen(sequence);
        Ok(sequence)
    }

    /// Publishes `bytes` on `subject` under the message id `id` and waits for JetStream to
    /// store it: its sequence.
    async fn publish_to(
        &self,
        subject: &str,
        id: &str,
        bytes: bytes::Bytes,
    ) -> Result<u64, String> {
        // Retried until JetStream confirms or the time is up: the message id makes a retry of
        // a publish that was stored (its answer lost with a server) a duplicate JetStream
        // drops, so a write is never stored twice.
        let mut last_error = String::from("no answer");
        let stored = async {
            loop {
                let message = PublishMessage::build()
                    .payload(bytes.clone())
                    .message_id(id);
                let attempt = async {
                    let ack = self
                        .js
                        .send_publish(subject.to_owned(), message)
                        .await
                        .map_err(|e| e.to_string())?;
                    ack.await.map_err(|e| e.to_string())
                };
                match attempt.await {
                    Ok(ack) => return ack.sequence,
                    Err(error) => {
                        tracing::debug!(%error, "publishing to the cluster's stream; retrying");
                        last_error = error;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        };
        match tokio::time::timeout(self.config.publish_timeout, stored).await {
            Ok(sequence) => Ok(sequence),
            Err(_) => Err(format!(
                "JetStream did not confirm the write within {:?} ({last_error})",
                self.config.publish_timeout
            )),
        }
    }

    /// The stream holds at least `sequence` entries.
    fn seen(&self, sequence: u64) {
        let mut state = self.state.lock();
        state.last = state.last.max(sequence);
    }

    fn next_op(&self) -> u64 {
        // Ordering: Relaxed: a counter; uniqueness is all it gives.
        self.next_op.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn note_error(&self, error: &str) {
        self.state.lock().error = Some(error.to_owned());
    }

    /// Applies the entry at `sequence` (see the invariants); the node that proposed it.
    fn apply(&self, registry: &Registry, sequence: u64, payload: &[u8]) -> Option<u64> {
        let entry = match op::decode(payload) {
            Ok(entry) => entry,
            Err(error) => {
                // Every node skips it alike; it changes nothing.
                tracing::error!(sequence, %error, "a cluster log entry that does not decode; skipped");
                return None;
            }
        };
        let proposer = entry.node;
        let origin = entry.origin.as_ref();
        let applied = match entry.body {
            Body::Proposal(Proposal::Set { writes }) => {
                let mut outcomes = Vec::with_capacity(writes.len());
                for write in writes {
                    let outcome = registry.apply_set(
                        origin,
                        &write.name,
                        write.value,
                        write.metadata,
                        write.ttl_ms,
                    );
                    if outcome.is_ok() {
                        self.touches.insert(write.name, (sequence, entry.node));
                    }
                    outcomes.push(outcome);
                }
                Applied::Set(outcomes)
            }
            Body::Proposal(Proposal::Remove { names }) => {
                let removed = registry.apply_remove(origin, &names);
                for name in &names {
                    self.touches.remove(&**name);
                }
                Applied::Removed(removed)
            }
            Body::Proposal(Proposal::Requests { requests }) => {
                Applied::Requested(registry.apply_requests(origin, &requests))
            }
            Body::Proposal(Proposal::Take { requests }) => {
                Applied::Taken(registry.apply_take(&requests))
            }
            Body::Touch(names) => {
                if entry.node != self.id {
                    registry.apply_touch(names.iter().map(|name| &**name));
                }
                for name in names {
                    if registry.get(&name).is_some() {
                        self.touches.insert(name, (sequence, entry.node));
                    }
                }
                return Some(proposer);
            }
            Body::Snapshot(head) => {
                // A late head (its writer was slow) moves nothing back, and clears only the
                // claim it answers, not a newer one.
                let mut state = self.state.lock();
                state.snapshot_at = state.snapshot_at.max(head.at);
                if state.claim.is_some_and(|(at, _)| at <= head.at) {
                    state.claim = None;
                }
                return Some(proposer);
            }
            Body::Expire(expiries) => {
                for Expiry {
                    name,
                    revision,
                    touched,
                } in expiries
                {
                    let last = self.touches.with(&*name, |t| t.0);
                    if last == Some(touched) && registry.apply_expire(&name, revision).is_some() {
                        self.touches.remove(&*name);
                    }
                }
                return Some(proposer);
            }
        };
        if entry.node == self.id {
            if let Some(waiter) = self.waiting.lock().remove(&entry.op) {
                let _gone = waiter.send(applied);
            }
        }
        Some(proposer)
    }

    /// After entry `sequence`, proposed by `proposer`, applied: claims the next snapshot if it
    /// is due (see `snapshot.rs`), and takes and stores it if the claim is this node's.
    fn snapshot_if_due(&self, registry: &Registry, sequence: u64, proposer: u64) {
        let every = self.config.snapshot_every;
        if every == 0 {
            return;
        }
        let previous = {
            let mut state = self.state.lock();
            if sequence < state.snapshot_at.saturating_add(every) {
                return;
            }
            let stale = state
                .claim
                .is_none_or(|(at, _)| sequence >= at.saturating_add(every));
            if !stale {
                return;
            }
            state.claim = Some((sequence, proposer));
            if proposer != self.id || state.writing {
                return;
            }
            state.writing = true;
            state.snapshot_at
        };
        let Some(node) = self.me.upgrade() else {
            return;
        };
        // On the applier, between two entries: the state after this one, exactly (read out
        // as the registers' Arcs; encoded off the applier).
        let began = Instant::now();
        let taken = snapshot::take(registry, sequence, &self.touches);
        let held = began.elapsed();
        tokio::spawn(async move {
            let bytes = match tokio::task::spawn_blocking(move || taken.encode()).await {
                Ok(bytes) => bytes,
                Err(error) => {
                    node.note_error(&format!("encoding a cluster snapshot: {error}"));
                    node.state.lock().writing = false;
                    return;
                }
            };
            match node.store_snapshot(bytes, sequence, previous).await {
                Ok(size) => tracing::info!(
                    at = sequence,
                    bytes = size,
                    applier_held_ms = held.as_millis() as u64,
                    stored_ms = began.elapsed().as_millis() as u64,
                    "cluster snapshot stored"
                ),
                Err(error) => {
                    tracing::warn!(at = sequence, %error, "storing a cluster snapshot failed");
                    node.note_error(&error);
                }
            }
            node.state.lock().writing = false;
        });
    }

    /// Stores the snapshot after entry `at` in chunks, then its head, then trims the stream
    /// before the `previous` snapshot. Returns its size.
    async fn store_snapshot(
        &self,
        bytes: Vec<u8>,
        at: u64,
        previous: u64,
    ) -> Result<usize, String> {
        let prefix = format!("{:016x}-snap-{at}", self.id);
        let mut chunks = Vec::with_capacity(bytes.len() / snapshot::CHUNK + 1);
        for (i, chunk) in bytes.chunks(snapshot::CHUNK).enumerate() {
            let chunk = bytes::Bytes::copy_from_slice(chunk);
            chunks.push(
                self.publish_to(&self.snap_data, &format!("{prefix}-{i}"), chunk)
                    .await?,
            );
        }
        if self.state.lock().snapshot_at >= at {
            return Err(format!(
                "a snapshot at or after entry {at} was stored meanwhile; this one is dropped"
            ));
        }
        let head = Body::Snapshot(SnapshotHead {
            at,
            len: bytes.len() as u64,
            crc: snapshot::checksum(&bytes),
            chunks,
        });
        let op = self.next_op();
        let entry = bytes::Bytes::from(op::encode(self.id, op, None, &head));
        self.publish_to(&self.snap_head, &format!("{prefix}-head"), entry)
            .await?;
        self.publish(op, None, &head).await?;
        if previous > 0 {
            let stream = self
                .js
                .get_stream(&self.stream)
                .await
                .map_err(|e| e.to_string())?;
            stream
                .purge()
                .sequence(previous + 1)
                .await
                .map_err(|e| format!("trimming the stream before entry {previous}: {e}"))?;
        }
        Ok(bytes.len())
    }

    fn applied(&self, sequence: u64, pending: u64) {
        let mut state = self.state.lock();
        state.applied = sequence;
        state.last = state.last.max(sequence.saturating_add(pending));
        state.error = None;
        if !state.ready && sequence >= state.joined_at {
            state.ready = true;
            tracing::info!(sequence, "caught up with the cluster's log");
        }
    }
}

impl Replicator for Node {
    fn propose(
        &self,
        proposal: Proposal,
        origin: Option<Origin>,
    ) -> BoxFuture<Result<Applied, StoreError>> {
        if self.state.lock().stopped {
            return Box::pin(async {
                Err(StoreError::Unavailable {
                    reason: "this node stopped following the cluster's log (it fell behind \
                             what the stream keeps); restart it"
                        .into(),
                })
            });
        }
        let op = self.next_op();
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().insert(op, tx);
        let body = Body::Proposal(proposal);
        let Some(node) = self.me.upgrade() else {
            return Box::pin(async {
                Err(StoreError::Unavailable {
                    reason: "the node has stopped".into(),
                })
            });
        };
        Box::pin(async move {
            let unavailable = |reason: String| StoreError::Unavailable { reason };
            if let Err(error) = node.publish(op, origin.as_ref(), &body).await {
                node.waiting.lock().remove(&op);
                node.note_error(&error);
                return Err(unavailable(format!(
                    "the cluster's log did not take the write: {error}"
                )));
            }
            match tokio::time::timeout(node.config.publish_timeout, rx).await {
                Ok(Ok(applied)) => Ok(applied),
                _ => {
                    node.waiting.lock().remove(&op);
                    Err(unavailable(
                        "the cluster's log took the write but this node has not applied it yet \
                         (it is behind); it will apply"
                            .into(),
                    ))
                }
            }
        })
    }

    fn refreshed(&self, name: &str) {
        let mut touched = self.touched.lock();
        if !touched.contains(name) {
            touched.insert(Arc::from(name));
        }
    }

    fn due(&self, name: Arc<str>, revision: Revision) {
        self.due.lock().push((name, revision));
        self.due_signal.notify_one();
    }

    fn status(&self) -> ReplicaStatus {
        let state = self.state.lock();
        ReplicaStatus {
            connected: self.client.connection_state() == async_nats::connection::State::Connected,
            ready: state.ready,
            applied: state.applied,
            last: state.last.max(state.applied),
            cluster: self.config.name.clone(),
            error: state.error.clone(),
            snapshot: state.snapshot_at,
            stopped: state.stopped,
        }
    }
}

/// Follows the stream from the first entry not applied yet, forever; a broken consumer is
/// recreated after the last entry applied.
async fn apply_loop(node: Arc<Node>, registry: Registry) {
    loop {
        let start = node.state.lock().applied + 1;
        match follow(&node, &registry, start).await {
            Err(Stop::Retry(error)) => {
                tracing::warn!(%error, "following the cluster's log; retrying");
                node.note_error(&error);
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(Stop::Behind(error)) => {
                tracing::error!(%error, "this node cannot catch up with the cluster's log; restart it");
                let mut state = node.state.lock();
                state.stopped = true;
                state.ready = false;
                state.error = Some(error);
                return;
            }
            Ok(()) => {}
        }
    }
}

/// The stream's first sequence now.
async fn stream_first(node: &Node) -> Result<u64, Stop> {
    let stream = node
        .js
        .get_stream(&node.stream)
        .await
        .map_err(|e| Stop::Retry(e.to_string()))?;
    Ok(stream.cached_info().state.first_sequence)
}

/// The stream starts at `first`, past `next`, the entry this node needs next.
fn behind(first: u64, next: u64) -> Stop {
    Stop::Behind(format!(
        "the stream was trimmed to sequence {first} while this node needed entry {next} \
         (it fell more than a snapshot interval behind); restart it to load the newest snapshot"
    ))
}

/// Why following the log stopped.
enum Stop {
    /// Try again (from the first entry not applied).
    Retry(String),
    /// The entries this node needs next were trimmed: it cannot go on.
    Behind(String),
}

impl From<String> for Stop {
    fn from(error: String) -> Self {
        Stop::Retry(error)
    }
}

async fn follow(node: &Node, registry: &Registry, start: u64) -> Result<(), Stop> {
    let stream = node
        .js
        .get_stream(&node.stream)
        .await
        .map_err(|e| e.to_string())?;
    // Trimmed only before a snapshot's entry: a first sequence past the next entry this node
    // needs means that entry (a log entry) is gone.
    let first = stream.cached_info().state.first_sequence;
    if first > start {
        return Err(behind(first, start));
    }
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: start,
            },
            filter_subject: node.subject.clone(),
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
    let mut check = tokio::time::interval(STALL_CHECK);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut progress = Instant::now();
    loop {
        let message = tokio::select! {
            message = messages.next() => match message {
                Some(message) => message.map_err(|e| e.to_string())?,
                None => break,
            },
            _ = check.tick() => {
                // Quiet: fine if there is nothing to read; a consumer that went quiet behind
                // the stream (its server went away) is made again.
                let state = node.state.lock();
                if state.last > state.applied && progress.elapsed() >= STALL_AFTER {
                    return Err(Stop::Retry(format!(
                        "the consumer stalled at {} of {}",
                        state.applied, state.last
                    )));
                }
                if state.last <= state.applied {
                    progress = Instant::now();
                }
                continue;
            }
        };
        progress = Instant::now();
        let (sequence, pending) = {
            let info = message.info().map_err(|e| e.to_string())?;
            (info.stream_sequence, info.pending)
        };
        let next = node.state.lock().applied + 1;
        if sequence < next {
            continue;
        }
        if sequence > next {
            // A gap: snapshot messages (other subjects) — or log entries trimmed before this
            // node read them, which the consumer skips without a word. Trims end just after a
            // log entry, so a first sequence past the next one needed means entries are gone.
            let first = stream_first(node).await?;
            if first > next {
                return Err(behind(first, next));
            }
        }
        let proposer = node.apply(registry, sequence, &message.payload);
        node.applied(sequence, pending);
        if let Some(proposer) = proposer {
            node.snapshot_if_due(registry, sequence, proposer);
            // Reading a large registry out takes a while; that is not the consumer stalling.
            progress = Instant::now();
        }
    }
    Err(Stop::Retry("the consumer ended".into()))
}

/// Splits names into entries of at most [`BATCH_BYTES`].
fn batches<T>(items: Vec<T>, size: impl Fn(&T) -> usize) -> Vec<Vec<T>> {
    let mut out = Vec::new();
    let (mut batch, mut bytes) = (Vec::new(), 0);
    for item in items {
        let len = size(&item) + 16;
        if bytes + len > BATCH_BYTES && !batch.is_empty() {
            out.push(std::mem::take(&mut batch));
            bytes = 0;
        }
        bytes += len;
        batch.push(item);
    }
    if !batch.is_empty() {
        out.push(batch);
    }
    out
}

/// Every touch interval: passes on the refreshes taken here.
async fn touch_loop(node: Arc<Node>) {
    let mut tick = tokio::time::interval(node.config.touch_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let names: Vec<Arc<str>> = node.touched.lock().drain().collect();
        for batch in batches(names, |name| name.len()) {
            let op = node.next_op();
            if let Err(error) = node.publish(op, None, &Body::Touch(batch.clone())).await {
                node.note_error(&error);
                // Passed on at the next tick instead.
                node.touched.lock().extend(batch);
            }
        }
    }
}

/// The sequence of the last message on `subject` in `stream` (0: none).
async fn last_sequence(stream: &stream::Stream, subject: &str) -> Result<u64, String> {
    match stream.get_last_raw_message_by_subject(subject).await {
        Ok(message) => Ok(message.sequence),
        Err(error) if error.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(0),
        Err(error) => Err(error.to_string()),
    }
}

/// Loads the newest snapshot in `stream` (its head is the last message on `head_subject`)
/// into `registry` and `touches`: the entry it holds the state after (0: none).
async fn load_snapshot(
    stream: &stream::Stream,
    head_subject: &str,
    registry: &Registry,
    touches: &Touches,
) -> Result<u64, String> {
    let message = match stream.get_last_raw_message_by_subject(head_subject).await {
        Ok(message) => message,
        Err(error) if error.kind() == stream::LastRawMessageErrorKind::NoMessageFound => {
            return Ok(0)
        }
        Err(error) => return Err(error.to_string()),
    };
    let head = match op::decode(&message.payload).map(|entry| entry.body) {
        Ok(Body::Snapshot(head)) => head,
        Ok(_) => return Err("a snapshot head that is not one".into()),
        Err(error) => return Err(format!("a snapshot head that does not decode: {error}")),
    };
    let bytes = snapshot::fetch(stream, &head).await?;
    snapshot::restore(registry, touches, &bytes, head.at)?;
    tracing::info!(
        at = head.at,
        bytes = bytes.len(),
        "loaded the cluster's snapshot"
    );
    Ok(head.at)
}

/// Every second: the stream's last sequence, so that the applier knows when it is behind
/// (on its own task: a publish that waits out an election must not hold it up).
async fn info_loop(node: Arc<Node>) {
    let mut tick = tokio::time::interval(INFO_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Ok(stream) = node.js.get_stream(&node.stream).await {
            if let Ok(last) = last_sequence(&stream, &node.subject).await {
                node.seen(last);
            }
        }
    }
}

/// Proposes the expiry of registers past their deadline here, after the grace their owner
/// gets (see `mod.rs`): two queues in time order, one per grace.
async fn expire_loop(node: Arc<Node>, registry: Registry) {
    let owner_grace = node.config.touch_interval * 2;
    let takeover_grace = owner_grace + TAKEOVER;
    let mut queues: [VecDeque<(Instant, Expiry)>; 2] = [VecDeque::new(), VecDeque::new()];
    let mut queued: HashMap<Arc<str>, (Revision, u64)> = HashMap::new();
    loop {
        let next = queues
            .iter()
            .filter_map(|q| q.front().map(|(at, _)| *at))
            .min();
        tokio::select! {
            () = node.due_signal.notified() => {}
            () = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {}
        }
        let now = Instant::now();
        for (name, revision) in std::mem::take(&mut *node.due.lock()) {
            let Some((touched, owner)) = node.touches.get(&*name) else {
                continue;
            };
            match queued.entry(Arc::clone(&name)) {
                Slot::Occupied(slot) if *slot.get() == (revision, touched) => continue,
                Slot::Occupied(mut slot) => {
                    slot.insert((revision, touched));
                }
                Slot::Vacant(slot) => {
                    slot.insert((revision, touched));
                }
            }
            let (queue, grace) = if owner == node.id {
                (0, owner_grace)
            } else {
                (1, takeover_grace)
            };
            queues[queue].push_back((
                now + grace,
                Expiry {
                    name,
                    revision,
                    touched,
                },
            ));
        }
        let mut expiries = Vec::new();
        for queue in &mut queues {
            while queue.front().is_some_and(|(at, _)| *at <= now) {
                let Some((_, expiry)) = queue.pop_front() else {
                    break;
                };
                if queued.get(&expiry.name) == Some(&(expiry.revision, expiry.touched)) {
                    queued.remove(&expiry.name);
                }
                // Still as it was, and still past its deadline here.
                let current = node.touches.with(&*expiry.name, |t| t.0) == Some(expiry.touched)
                    && registry.get(&expiry.name).map(|r| r.revision()) == Some(expiry.revision)
                    && registry.expires_in(&expiry.name) == Some(Duration::ZERO);
                if current {
                    expiries.push(expiry);
                }
            }
        }
        for batch in batches(expiries, |e| e.name.len()) {
            let op = node.next_op();
            if let Err(error) = node.publish(op, None, &Body::Expire(batch)).await {
                // The expiry pass offers them again.
                node.note_error(&error);
            }
        }
    }
}
