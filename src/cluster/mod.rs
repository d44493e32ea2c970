//! A reg cluster on NATS JetStream: every node serves the whole API from its own in-memory
//! replica; one JetStream stream is the cluster's log (`reg serve --nats …`).
//!
//! # How it works
//!
//! * **The log.** One stream, `REG_<cluster>`, subject `reg.<cluster>.log`, replicated by
//!   JetStream (R3 on a three-server NATS cluster). A write on any node is proposed to it
//!   (`op.rs` says what an entry holds); JetStream's sequence orders every write in the
//!   cluster. A write is answered once JetStream has stored it (a quorum of its servers) *and*
//!   the node has applied it, so a client reads its own writes on the node it wrote to.
//! * **Replicas.** Every node loads the newest snapshot and follows the stream from the entry
//!   after it with an ordered consumer and applies each entry in sequence through the registry's commit path
//!   (`store/replica.rs`). The same entries in the same order make the same revisions, so an
//!   `X-Reg-Index` from one node is valid on every other, and long polls, SSE watches and
//!   discovery watchers on every node wake for a write made on any.
//! * **Refreshes** that change nothing stay local and are passed on in one `touch` entry per
//!   node every [`ClusterConfig::touch_interval`] (a fleet's 20,000 refreshes a second are a
//!   handful of entries).
//! * **Expiry** is decided once, by the log: a node whose replica sees a register past its
//!   deadline proposes its expiry naming the revision and the last set-or-touch entry it saw;
//!   the expiry applies only if neither moved, so a refresh anywhere that reached the log first
//!   wins. The node that set or touched it last proposes after `2 × touch_interval`; any
//!   other after [`TAKEOVER`] more (its owner may be gone).
//! * **Change requests** are entries; a take names the request ids its node saw and takes only
//!   those still pending when it applies: whichever take the log orders first gets a request,
//!   exactly once cluster-wide.
//!
//! # What it guarantees, and what not
//!
//! * A write answered 2xx is in the stream on a quorum of NATS servers, and applied on the
//!   node that answered. A write JetStream did not confirm is answered 503; it may still have
//!   been stored (a timeout after the store), as with any replicated log.
//! * Reads and long polls are served from the node's replica: another node may be behind by
//!   its lag (`/metrics` `reg_cluster_lag`); an index from a node ahead makes a poll wait until
//!   this node has caught up to it. Nothing is missed in between.
//! * A register expires no sooner than its TTL after the last refresh that reached any node,
//!   and at most `2 × touch_interval` + the log's latency later on the node that refreshed it
//!   last ([`TAKEOVER`] more if that node is gone).
//! * Change requests older than the age limit are dropped by each node on its own clock.
//! * **Snapshots** (`snapshot.rs`): every [`ClusterConfig::snapshot_every`] entries one node
//!   stores the state in the stream and trims the entries before the previous snapshot; a
//!   starting node loads the newest snapshot and replays the entries after it. A node that
//!   falls further behind than a snapshot interval stops applying, says so (`/healthz`), and
//!   must be restarted.

mod node;
pub(crate) mod op;
mod snapshot;

use std::time::Duration;

use crate::store::Registry;

pub use node::Cluster;

/// How much longer than its owner a node waits before proposing an expiry (the owner — the
/// node that set or refreshed the register last — may be gone).
pub const TAKEOVER: Duration = Duration::from_secs(2);

/// How to join a cluster.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClusterConfig {
    /// NATS server URLs (`nats://127.0.0.1:4222`); the client fails over between them.
    pub urls: Vec<String>,
    /// The cluster's name: nodes with the same name (on the same NATS) share one registry.
    /// Letters, digits, `-` and `_`.
    pub name: String,
    /// JetStream replicas of the stream (1 to 5; 3 on a three-server NATS cluster).
    pub replicas: usize,
    /// How often a node passes on the refreshes it took (and so how late an expiry can be).
    pub touch_interval: Duration,
    /// How long a write waits for JetStream to confirm it before it is answered 503.
    pub publish_timeout: Duration,
    /// Stream sequences between snapshots (0: none; the stream then keeps every entry). The
    /// snapshots' own chunk messages count too (a 90 MB snapshot is some 370 of them). Give
    /// every node the same value: which node takes a snapshot is decided from it.
    pub snapshot_every: u64,
}

impl ClusterConfig {
    /// A cluster named `name` on the NATS servers `urls`, with the stream replicated to as
    /// many servers as are named (at most 3).
    pub fn new(urls: Vec<String>, name: &str) -> Self {
        let replicas = urls.len().clamp(1, 3);
        Self {
            urls,
            name: name.to_owned(),
            replicas,
            touch_interval: Duration::from_millis(250),
            publish_timeout: Duration::from_secs(5),
            snapshot_every: 10_000,
        }
    }

    /// Sets how many log entries go by between snapshots (0: none).
    pub fn snapshot_every(mut self, entries: u64) -> Self {
        self.snapshot_every = entries;
        self
    }

    /// Sets the stream's replica count.
    pub fn replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas;
        self
    }

    /// Sets the touch interval.
    pub fn touch_interval(mut self, interval: Duration) -> Self {
        self.touch_interval = interval;
        self
    }

    /// Sets how long a write waits for JetStream.
    pub fn publish_timeout(mut self, timeout: Duration) -> Self {
        self.publish_timeout = timeout;
        self
    }

    fn check(&self) -> Result<(), ClusterError> {
        if self.urls.is_empty() {
            return Err(ClusterError::Config("no NATS server URL given".into()));
        }
        if self.name.is_empty()
            || !self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(ClusterError::Config(format!(
                "cluster name {:?}: use letters, digits, '-' and '_'",
                self.name
            )));
        }
        if !(1..=5).contains(&self.replicas) {
            return Err(ClusterError::Config(format!(
                "{} stream replicas: JetStream takes 1 to 5",
                self.replicas
            )));
        }
        if self.touch_interval.is_zero() {
            return Err(ClusterError::Config(
                "the touch interval must be above zero".into(),
            ));
        }
        Ok(())
    }
}

/// Why a node could not join its cluster.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// The configuration is wrong.
    #[error("cluster configuration: {0}")]
    Config(String),
    /// NATS or JetStream refused or did not answer.
    #[error("NATS: {0}")]
    Nats(String),
}

/// Joins `registry` (new: it must have served no one and hold nothing) to the cluster: it
/// becomes a replica of the cluster's log, catching up in the background. Its
/// [`replica_status`](Registry::replica_status) says when it is ready (what `/healthz`
/// answers); [`Cluster::ready`] waits for it.
///
/// Writes must then go through the `submit_*` writes (the server's routes do); the
/// synchronous ones are refused.
pub async fn join(registry: &Registry, config: ClusterConfig) -> Result<Cluster, ClusterError> {
    config.check()?;
    node::start(registry, config).await
}
