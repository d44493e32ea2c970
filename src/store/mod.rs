//! The registry core: registers, revisions, watches, change requests and TTL expiry. Knows
//! nothing of HTTP; every protocol shares these semantics.
//!
//! # Invariants
//!
//! * **Reads take no registry lock.** A read is a map lookup (a shard read lock inside dashmap)
//!   and an arc-swap load of the register's immutable snapshot.
//! * **Refreshes take no registry lock.** A write whose value and metadata equal the stored ones
//!   only moves the entry's deadline with a compare-exchange (see `register.rs`).
//! * **Changes are serialized by the commit lock** (`Shared::commit`), the one point where
//!   writers meet, and go through the one commit path (`commit.rs`). Under it a change takes
//!   the next revision, publishes the new snapshot (or removes the entry), records a removal in
//!   the history, hands the change to the sinks, sends the event to the feed, and then stores
//!   the revision counter. Its critical section is O(1) and does not allocate beyond
//!   the snapshot itself; firing waiters happens after it is released.
//!   This is what makes revisions mean something: every revision up to the counter's value is
//!   published, so a reader that loads the counter *before* reading registers answers with a
//!   revision its data is at least as new as (a client that passes it back as `index` can never
//!   miss a change), and the feed is in revision order.
//! * **Map membership changes only under the commit lock.** So under it, an entry in the map is
//!   live (its deadline is not `DEAD`).
//! * **Wake protocol:** see `watch.rs`. Writers fire the changed name's slot and the any-name
//!   slot with the new revision after the commit; waiters register, re-check, then await.
//! * **Expiry:** see `expiry.rs`. Lock order: expiry state → commit → map shard → watch slot.

mod clock;
pub(crate) mod commit;
mod expiry;
mod feed;
mod history;
mod origin;
mod register;
pub(crate) mod replica;
mod requests;
#[cfg(feature = "persist")]
pub(crate) mod restore;
pub(crate) mod views;
mod watch;
pub(crate) mod wheel;

use std::fmt;
use std::time::Duration;

use tokio::sync::broadcast;

pub use clock::{Clock, ManualClock, SystemClock};
pub use feed::{Event, EventKind, FeedError, Subscription};
pub use origin::Origin;
pub use register::{Register, Revision};
pub use replica::{ReplicaStatus, Write};
pub use requests::{ChangeRequest, TakeRequests};
#[cfg(feature = "persist")]
pub(crate) use requests::{RequestLog, SavedRequest};
pub use watch::{Selector, Wait, WaitOutcome};

use crate::json::Json;
use crate::sync::{Arc, AtomicBool, AtomicU64, Map, Mutex, Ordering, Queue};
use expiry::ExpiryState;
use history::History;
use register::{Entry, Extend, Timer, MAX_DEADLINE};
use requests::Requests;
use watch::{WatchSlots, SHUTDOWN};

/// Default TTL when a write gives none (or zero): 10 s, as in reg's REST API.
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);
/// Default longest register name: 1,024 bytes (the REST API's limit).
pub const DEFAULT_MAX_NAME_LEN: usize = 1024;
/// Default cap on pending change requests: 100,000 (about 20 MB of small requests).
pub const DEFAULT_MAX_PENDING_REQUESTS: usize = 100_000;
/// Default age after which an untaken change request is dropped: 10 minutes (the REST API's).
pub const DEFAULT_REQUEST_MAX_AGE: Duration = Duration::from_secs(600);
/// Default number of removals remembered for `index` waits: 100,000 (about 6 MB).
pub const DEFAULT_REMOVAL_HISTORY: usize = 100_000;
/// Default change-feed capacity: 65,536 events a subscriber may fall behind before it must
/// resync.
pub const DEFAULT_FEED_CAPACITY: usize = 65_536;

/// Why the registry refused an operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The register name is longer than the configured limit.
    #[error("register name is {len} bytes, over the limit of {limit}")]
    NameTooLong {
        /// The name's length in bytes.
        len: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// Metadata must be a JSON object (or null, meaning none).
    #[error("metadata must be an object, not {kind}")]
    MetadataNotObject {
        /// The JSON type that was given.
        kind: &'static str,
    },
    /// The cap on pending change requests is reached.
    #[error("too many pending change requests (limit {limit})")]
    TooManyRequests {
        /// The cap.
        limit: usize,
    },
    /// Changes cannot be made durable now (a persistent registry whose disk is full or
    /// read-only): the write was not applied. Reads go on; writes are accepted again when the
    /// disk is.
    #[error("changes cannot be saved now: {reason}")]
    Unavailable {
        /// Why.
        reason: String,
    },
}

/// What a [`Registry::set`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Change {
    /// The register did not exist and was created.
    Created,
    /// Its value or metadata changed.
    Changed,
    /// Value and metadata were equal: only the TTL restarted; nobody was woken.
    Refreshed,
}

/// The result of a [`Registry::set`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SetOutcome {
    /// What happened.
    pub change: Change,
    /// The register's revision after the write (unchanged by a refresh).
    pub revision: Revision,
}

/// Registers read at one revision; see [`Registry::read`].
#[derive(Debug, Clone, Default)]
pub struct Registers {
    /// A revision the data is at least as new as: pass it to [`Registry::wait`] to be told of
    /// anything that changes after this read.
    pub revision: Revision,
    /// The registers that exist, sorted by name.
    pub registers: Vec<Arc<Register>>,
}

/// What changed after a revision, as current state; see [`Registry::replay`].
///
/// `set` and `removed` together are what the feed would have said after the revision, with
/// each register's intermediate changes left out: merged by revision, they replay as
/// [`Event`]s would (`set` as [`EventKind::Set`], `removed` with its own kind).
#[derive(Debug, Clone, Default)]
pub struct Replay {
    /// The revision this replay is consistent with: follow the feed from here.
    pub revision: Revision,
    /// Selected registers that exist and changed after the revision, in revision order.
    pub set: Vec<Arc<Register>>,
    /// Selected names removed after the revision that do not exist now, in revision order:
    /// (name, removal revision, why). Why is the kind of the removal's feed event:
    /// [`EventKind::Delete`] for [`Registry::remove`] (`DELETE /provider`),
    /// [`EventKind::Expire`] for a TTL that ran out; never [`EventKind::Set`]. A name removed
    /// more than once appears once, with its latest removal.
    pub removed: Vec<(Arc<str>, Revision, EventKind)>,
    /// False when the revision is older than the removal history: removals may be missing
    /// from `removed`.
    pub complete: bool,
}

/// Counters and gauges, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// The current revision.
    pub revision: Revision,
    /// Registers that exist.
    pub registers: usize,
    /// Pending change requests.
    pub pending_requests: usize,
    /// Parked register waits (long polls).
    pub parked_waits: usize,
    /// Parked change-request takes (provider long polls).
    pub parked_takes: usize,
    /// Registers expired since start.
    pub expired: u64,
}

/// How the TTL wheel is driven.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ExpiryMode {
    /// A background thread reads the clock and expires registers every tick.
    Background,
    /// The caller calls [`Registry::expire_due`] (tests with a [`ManualClock`]).
    Manual,
}

/// Configures and builds a [`Registry`].
#[derive(Debug, Clone)]
pub struct RegistryBuilder {
    default_ttl: Duration,
    clock: Option<Arc<dyn Clock>>,
    expiry: ExpiryMode,
    max_name_len: usize,
    max_pending_requests: usize,
    request_max_age: Duration,
    removal_history: usize,
    feed_capacity: usize,
}

impl Default for RegistryBuilder {
    fn default() -> Self {
        Self {
            default_ttl: DEFAULT_TTL,
            clock: None,
            expiry: ExpiryMode::Background,
            max_name_len: DEFAULT_MAX_NAME_LEN,
            max_pending_requests: DEFAULT_MAX_PENDING_REQUESTS,
            request_max_age: DEFAULT_REQUEST_MAX_AGE,
            removal_history: DEFAULT_REMOVAL_HISTORY,
            feed_capacity: DEFAULT_FEED_CAPACITY,
        }
    }
}

impl RegistryBuilder {
    /// TTL for writes that give none or zero (default 10 s).
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        if !ttl.is_zero() {
            self.default_ttl = ttl;
        }
        self
    }

    /// The clock TTLs and request ages are measured on (default: [`SystemClock`]).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// Expire only when [`Registry::expire_due`] is called, instead of on a background thread.
    /// For deterministic tests with a [`ManualClock`].
    pub fn manual_expiry(mut self) -> Self {
        self.expiry = ExpiryMode::Manual;
        self
    }

    /// Longest register name in bytes (default 1,024).
    pub fn max_name_len(mut self, bytes: usize) -> Self {
        self.max_name_len = bytes;
        self
    }

    /// Cap on pending change requests (default 100,000).
    pub fn max_pending_requests(mut self, count: usize) -> Self {
        self.max_pending_requests = count;
        self
    }

    /// Age after which an untaken change request is dropped (default 10 minutes).
    pub fn request_max_age(mut self, age: Duration) -> Self {
        self.request_max_age = age;
        self
    }

    /// Number of removals remembered so `index` waits see them (default 100,000).
    pub fn removal_history(mut self, count: usize) -> Self {
        self.removal_history = count;
        self
    }

    /// Events a feed subscriber may fall behind before it must resync (default 65,536).
    pub fn feed_capacity(mut self, events: usize) -> Self {
        self.feed_capacity = events.max(1);
        self
    }

    /// Builds the registry. With background expiry (the default) this starts the expiry thread,
    /// which stops when the last handle is dropped.
    pub fn build(self) -> Registry {
        let clock: Arc<dyn Clock> = self.clock.unwrap_or_else(|| Arc::new(SystemClock::new()));
        let now = clock.now_ms();
        let (feed, _) = broadcast::channel(self.feed_capacity);
        let shared = Arc::new(Shared {
            registers: Map::new(),
            commit: Mutex::new(CommitState {
                history: History::new(self.removal_history),
                sinks: Vec::new(),
            }),
            revision: AtomicU64::new(0),
            watchers: Arc::new(WatchSlots::new()),
            requests: Requests::new(
                self.max_pending_requests,
                duration_ms(self.request_max_age),
                Arc::clone(&clock),
            ),
            closed: Arc::new(WatchSlots::new()),
            inbox: Queue::new(),
            expiry: Mutex::new(ExpiryState::new(now, self.removal_history)),
            feed,
            clock,
            default_ttl_ms: duration_ms(self.default_ttl).max(1),
            max_name_len: self.max_name_len,
            shut_down: AtomicBool::new(false),
            expired: AtomicU64::new(0),
            stop_expiry: std::sync::atomic::AtomicBool::new(false),
            restoring: std::sync::atomic::AtomicBool::new(false),
            durability: std::sync::OnceLock::new(),
            views: views::Views::default(),
            replica: std::sync::OnceLock::new(),
        });
        // loom models drive expiry by hand: a real thread cannot run inside a model.
        let expiry_thread = if self.expiry == ExpiryMode::Background && !cfg!(reg_loom) {
            expiry::spawn(Arc::clone(&shared))
        } else {
            None
        };
        Registry {
            handle: Arc::new(Handle {
                shared,
                expiry_thread,
            }),
        }
    }
}

/// What the commit lock protects besides the ordering of changes (see `commit.rs`).
#[derive(Debug)]
pub(crate) struct CommitState {
    history: History,
    /// Told of every committed change, in revision order.
    sinks: Vec<Box<dyn commit::Sink>>,
}

/// The state every handle, wait and the expiry thread share.
pub(crate) struct Shared {
    /// name → live entry. Membership changes only under `commit`.
    registers: Map<Arc<str>, Arc<Entry>>,
    /// The commit lock: serializes changes (see the module invariants).
    commit: Mutex<CommitState>,
    /// The latest published revision. Written only under `commit`, after the change is
    /// published.
    revision: AtomicU64,
    /// Waiters for register changes.
    watchers: Arc<WatchSlots>,
    /// Pending change requests and their waiters.
    pub(crate) requests: Requests,
    /// Waiters for shutdown only.
    closed: Arc<WatchSlots>,
    /// New timers on their way to the wheel (the wheel is the expiry pass's alone).
    inbox: Queue<Timer>,
    /// The timing wheel and the expiry pass's scratch space.
    expiry: Mutex<ExpiryState>,
    /// The change feed.
    feed: broadcast::Sender<Event>,
    clock: Arc<dyn Clock>,
    /// TTL for writes that give none, in clock milliseconds (at least 1).
    default_ttl_ms: u64,
    max_name_len: usize,
    /// Set once by `shutdown`.
    shut_down: AtomicBool,
    /// Registers expired since start (a counter for metrics).
    expired: AtomicU64,
    /// Tells the expiry thread to exit. std's atomic even under loom: no model runs the thread.
    stop_expiry: std::sync::atomic::AtomicBool,
    /// Set while saved state is being restored (`restore.rs`): expiry passes wait, so that no
    /// expiry commits at a revision the restore has not published yet.
    restoring: std::sync::atomic::AtomicBool,
    /// Set once, before serving, when the registry persists (see `commit.rs`).
    durability: std::sync::OnceLock<Arc<dyn commit::Durability>>,
    /// Views kept current by sinks (`views.rs`).
    views: views::Views,
    /// Set once, before serving, when the registry is a cluster's replica (`replica.rs`).
    replica: std::sync::OnceLock<Arc<dyn replica::Replicator>>,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("registers", &self.registers.len())
            .field("revision", &self.current_revision())
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

/// Owns the expiry thread: when the last [`Registry`] handle drops, the thread is told to stop.
#[derive(Debug)]
struct Handle {
    shared: Arc<Shared>,
    expiry_thread: Option<std::thread::Thread>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        if let Some(thread) = self.expiry_thread.take() {
            expiry::stop(&self.shared, &thread);
        }
        if let Some(durability) = self.shared.durability.get() {
            durability.close();
        }
    }
}

/// An embeddable register registry. Cheap to clone: clones share one registry.
///
/// ```
/// use reg::{Json, Registry, Selector, Change};
/// use std::time::Duration;
///
/// let registry = Registry::new();
/// let value = Json::parse(br#"{"celsius": 21.5}"#).unwrap();
/// let outcome = registry.set("kitchen.temperature", value.clone(), None, Some(Duration::from_secs(5))).unwrap();
/// assert_eq!(outcome.change, Change::Created);
///
/// // The same value again only restarts the TTL.
/// let again = registry.set("kitchen.temperature", value, None, Some(Duration::from_secs(5))).unwrap();
/// assert_eq!(again.change, Change::Refreshed);
/// assert_eq!(again.revision, outcome.revision);
///
/// let register = registry.get("kitchen.temperature").unwrap();
/// assert_eq!(register.value().as_str(), r#"{"celsius":21.5}"#);
/// ```
#[derive(Debug, Clone)]
pub struct Registry {
    handle: Arc<Handle>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    /// A registry with the default configuration (system clock, background expiry).
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// A builder to configure a registry.
    pub fn builder() -> RegistryBuilder {
        RegistryBuilder::default()
    }

    /// The shared state, weakly: what a background thread of a layer above (the log's
    /// snapshots) holds so it does not keep the registry alive.
    #[cfg(feature = "persist")]
    pub(crate) fn shared_weak(&self) -> std::sync::Weak<Shared> {
        Arc::downgrade(self.shared())
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.handle.shared
    }

    pub(crate) fn shared_ref(&self) -> &Shared {
        &self.handle.shared
    }

    /// Creates, changes or refreshes a register, restarting its TTL (`None` or zero: the default
    /// TTL). Metadata `None`, `null` and `{}` all mean "no metadata"; metadata replaces, never
    /// merges.
    ///
    /// A write whose value and metadata equal the stored ones only restarts the TTL: it takes no
    /// revision, wakes nobody and takes no lock.
    pub fn set(
        &self,
        name: &str,
        value: Json,
        metadata: Option<Json>,
        ttl: Option<Duration>,
    ) -> Result<SetOutcome, StoreError> {
        self.shared().local_writes()?;
        self.shared().set(name, value, metadata, ttl, None)
    }

    /// [`set`](Self::set) on behalf of `origin`: the commit path (an audit trail) is told who
    /// made the change.
    pub fn set_as(
        &self,
        origin: &Origin,
        name: &str,
        value: Json,
        metadata: Option<Json>,
        ttl: Option<Duration>,
    ) -> Result<SetOutcome, StoreError> {
        self.shared().local_writes()?;
        self.shared().set(name, value, metadata, ttl, Some(origin))
    }

    /// Removes a register at once. A removal is a change: it takes a revision and wakes
    /// watchers. Returns the revision, or `None` if the register did not exist.
    pub fn remove(&self, name: &str) -> Option<Revision> {
        // A replica's removals go through its cluster's log (`submit_remove`).
        self.shared().local_writes().ok()?;
        self.shared().remove(name, None)
    }

    /// [`remove`](Self::remove), refused with [`StoreError::Unavailable`] when a persistent
    /// registry cannot save changes now (its disk is full): what a server answers 503 to.
    pub fn try_remove(&self, name: &str) -> Result<Option<Revision>, StoreError> {
        self.shared().local_writes()?;
        self.shared().writable()?;
        Ok(self.shared().remove(name, None))
    }

    /// [`try_remove`](Self::try_remove) on behalf of `origin` (see [`set_as`](Self::set_as)).
    pub fn try_remove_as(
        &self,
        origin: &Origin,
        name: &str,
    ) -> Result<Option<Revision>, StoreError> {
        self.shared().local_writes()?;
        self.shared().writable()?;
        Ok(self.shared().remove(name, Some(origin)))
    }

    /// Resolves when everything written so far — changes and change requests — is as durable
    /// as the registry's sync policy promises (see [`durable`](Self::durable)).
    pub fn durable_all(
        &self,
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send + 'static {
        let wait = self
            .shared()
            .durability
            .get()
            .map(|durability| durability.durable_all());
        async move {
            match wait {
                Some(wait) => wait.await.map_err(|reason| StoreError::Unavailable {
                    reason: reason.to_string(),
                }),
                None => Ok(()),
            }
        }
    }

    /// Resolves when every change up to `revision` is as durable as the registry's sync
    /// policy promises: at once for an in-memory registry and for the `batch` and `none`
    /// policies; for `always`, when the log is synced to disk (many writers share one sync).
    /// An error means the disk refused the change: it is applied in memory but may be lost in
    /// a crash; answer the client with an error so it retries.
    pub fn durable(
        &self,
        revision: Revision,
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send + 'static {
        let wait = self
            .shared()
            .durability
            .get()
            .map(|durability| durability.durable(revision));
        async move {
            match wait {
                Some(wait) => wait.await.map_err(|reason| StoreError::Unavailable {
                    reason: reason.to_string(),
                }),
                None => Ok(()),
            }
        }
    }

    /// The current snapshot of one register.
    pub fn get(&self, name: &str) -> Option<Arc<Register>> {
        self.shared().get(name)
    }

    /// The selected registers that exist, with a revision the data is at least as new as.
    pub fn read(&self, selector: &Selector) -> Registers {
        self.shared().read(selector)
    }

    /// All registers, sorted by name.
    pub fn list(&self) -> Registers {
        self.read(&Selector::All)
    }

    /// Remaining TTL of a register.
    pub fn expires_in(&self, name: &str) -> Option<Duration> {
        self.shared().expires_in(name)
    }

    /// The TTL a register's last write gave it (what a refresh restarts).
    pub fn ttl(&self, name: &str) -> Option<Duration> {
        self.shared()
            .registers
            .with(name, |entry| Duration::from_millis(entry.ttl_ms()))
    }

    /// The latest revision.
    pub fn revision(&self) -> Revision {
        self.shared().current_revision()
    }

    /// The number of registers.
    pub fn len(&self) -> usize {
        self.shared().registers.len()
    }

    /// Whether there are no registers.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether any selected register changed (was created, changed, or removed) after revision
    /// `after`. Also true when `after` is older than the removal history and a selected
    /// register is absent: the registry can no longer tell, so it answers "changed" rather than
    /// risk a miss. Likewise when `after` is above the current revision: such an index comes
    /// from another incarnation of the registry (a restarted server).
    pub fn changed_since(&self, selector: &Selector, after: Revision) -> bool {
        self.shared().changed_since(selector, after)
    }

    /// Waits until a selected register changes after revision `after` (at once if one already
    /// has), or the registry shuts down. Wrap it in `tokio::time::timeout` for a deadline.
    ///
    /// A change wakes only the waiters of the register it changed (and the any-register
    /// waiters). A write that changes nothing wakes nobody.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use reg::{Json, Registry, Selector, WaitOutcome};
    ///
    /// let registry = Registry::new();
    /// let seen = registry.revision();
    /// let wait = registry.wait(&Selector::name("door"), seen);
    /// registry.set("door", Json::from("open"), None, None).unwrap();
    /// assert_eq!(wait.await, WaitOutcome::Changed);
    /// # });
    /// ```
    pub fn wait(&self, selector: &Selector, after: Revision) -> Wait {
        let shared = Arc::clone(self.shared());
        Wait::new(Arc::clone(&shared.watchers), selector, after, || {
            if shared.is_shut_down() {
                Some(WaitOutcome::Shutdown)
            } else if shared.changed_since(selector, after) {
                Some(WaitOutcome::Changed)
            } else {
                None
            }
        })
    }

    /// Resolves when the registry shuts down.
    pub fn closed(&self) -> Wait {
        let shared = Arc::clone(self.shared());
        Wait::new(
            Arc::clone(&shared.closed),
            &Selector::All,
            SHUTDOWN - 1,
            || shared.is_shut_down().then_some(WaitOutcome::Shutdown),
        )
    }

    /// Stores a change request for `name`, replacing an older one (latest wins), and wakes the
    /// providers waiting for it. Requests for names no provider holds are accepted.
    pub fn request(&self, name: &str, value: Json) -> Result<(), StoreError> {
        let shared = self.shared();
        shared.check_name(name)?;
        shared.local_writes()?;
        shared.writable()?;
        shared.requests.request(name, value, shared.now_ms(), None)
    }

    /// Stores several change requests, all or none: if storing them would take the pending
    /// requests over the cap, none is stored. (The check and the inserts are not one atomic
    /// step: concurrent requesters can overshoot the cap by their own batches.)
    pub fn request_many<'a, I>(&self, requests: I) -> Result<(), StoreError>
    where
        I: IntoIterator<Item = (&'a str, Json)>,
        I::IntoIter: Clone,
    {
        self.request_many_from(requests, None)
    }

    /// [`request_many`](Self::request_many) on behalf of `origin`: the provider that takes a
    /// request sees who asked ([`ChangeRequest::origin`]).
    pub fn request_many_as<'a, I>(&self, origin: &Origin, requests: I) -> Result<(), StoreError>
    where
        I: IntoIterator<Item = (&'a str, Json)>,
        I::IntoIter: Clone,
    {
        self.request_many_from(requests, Some(origin))
    }

    fn request_many_from<'a, I>(
        &self,
        requests: I,
        origin: Option<&Origin>,
    ) -> Result<(), StoreError>
    where
        I: IntoIterator<Item = (&'a str, Json)>,
        I::IntoIter: Clone,
    {
        let shared = self.shared();
        let requests = requests.into_iter();
        for (name, _) in requests.clone() {
            shared.check_name(name)?;
        }
        shared.local_writes()?;
        shared.writable()?;
        shared
            .requests
            .request_many(requests, shared.now_ms(), origin)
    }

    /// Takes the pending change requests the selector names, waiting for one if none is
    /// pending. Each request is delivered to one taker only. See [`TakeRequests`].
    pub fn take_requests(&self, selector: Selector) -> TakeRequests {
        TakeRequests::new(Arc::clone(self.shared()), selector, None)
    }

    /// [`take_requests`](Self::take_requests), taking only the names `allow` accepts (a
    /// caller's rights): the others stay pending for a taker that may take them.
    pub fn take_requests_where(
        &self,
        selector: Selector,
        allow: Arc<dyn Fn(&str) -> bool + Send + Sync>,
    ) -> TakeRequests {
        TakeRequests::new(Arc::clone(self.shared()), selector, Some(allow))
    }

    /// Takes the pending change requests the selector names, without waiting.
    pub fn try_take_requests(&self, selector: &Selector) -> Vec<ChangeRequest> {
        let shared = self.shared();
        shared.requests.take(selector, shared.now_ms(), &None)
    }

    /// [`try_take_requests`](Self::try_take_requests), taking only the names `allow` accepts.
    pub fn try_take_requests_where(
        &self,
        selector: &Selector,
        allow: Arc<dyn Fn(&str) -> bool + Send + Sync>,
    ) -> Vec<ChangeRequest> {
        let shared = self.shared();
        shared
            .requests
            .take(selector, shared.now_ms(), &Some(allow))
    }

    /// Subscribes to the change feed. See [`Subscription`] for what a slow subscriber gets.
    pub fn subscribe(&self) -> Subscription {
        // Under the commit lock: a change sends its event and publishes its revision in one
        // hold of that lock, so every event this receiver misses has its revision published
        // before `subscribe` returns, and a `replay` that follows sees it.
        let _commit = self.shared().commit.lock();
        Subscription {
            rx: self.shared().feed.subscribe(),
        }
    }

    /// What changed after `after`, as current state: the selected registers whose revision is
    /// above it and the selected names removed since, each with whether it was deleted or
    /// expired (see [`Replay::removed`]). Subscribe to the feed *before* calling
    /// this, then skip feed events whose revision is not above `Replay::revision`.
    pub fn replay(&self, selector: &Selector, after: Revision) -> Replay {
        self.shared().replay(selector, after)
    }

    /// Expires every register whose TTL has run out by the clock's current time, and drops
    /// change requests past their age limit. The background thread calls this every tick; with
    /// [`RegistryBuilder::manual_expiry`], tests call it after moving a [`ManualClock`].
    /// Returns the number of registers expired.
    pub fn expire_due(&self) -> usize {
        self.shared().expire_due()
    }

    /// Wakes every waiter (waits end with [`WaitOutcome::Shutdown`], takes with no requests);
    /// later waits end at once. Registers and pending requests are kept.
    pub fn shutdown(&self) {
        self.shared().shutdown()
    }

    /// Whether [`shutdown`](Self::shutdown) was called.
    pub fn is_shut_down(&self) -> bool {
        self.shared().is_shut_down()
    }

    /// Counters and gauges.
    pub fn stats(&self) -> Stats {
        let shared = self.shared();
        Stats {
            revision: shared.current_revision(),
            registers: shared.registers.len(),
            pending_requests: shared.requests.len(),
            parked_waits: shared.watchers.parked(),
            parked_takes: shared.requests.watchers.parked(),
            // Ordering: Relaxed: a counter.
            expired: shared.expired.load(Ordering::Relaxed),
        }
    }

    /// The TTL used when a write gives none.
    pub fn default_ttl(&self) -> Duration {
        Duration::from_millis(self.shared().default_ttl_ms)
    }

    /// Number of names with at least one parked waiter (watch slots in use). For leak tests.
    #[doc(hidden)]
    pub fn watch_slots(&self) -> usize {
        self.shared().watchers.slot_count() + self.shared().requests.watchers.slot_count()
    }
}

impl Shared {
    pub(crate) fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    #[cfg(feature = "persist")]
    pub(crate) fn wall_ms(&self) -> u64 {
        self.clock.wall_ms()
    }

    pub(crate) fn is_shut_down(&self) -> bool {
        // Ordering: Acquire pairs with the Release store in `shutdown`.
        self.shut_down.load(Ordering::Acquire)
    }

    fn stop_expiry(&self) -> bool {
        // Ordering: Relaxed: the flag carries no data; the thread only needs to see it
        // eventually (it is unparked right after the store).
        self.stop_expiry.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn request_stop_expiry(&self) {
        // Ordering: Relaxed: see `stop_expiry`.
        self.stop_expiry
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    fn current_revision(&self) -> Revision {
        // Ordering: Acquire pairs with the Release store that ends every commit: every change
        // up to the loaded revision is visible to the reads that follow.
        self.revision.load(Ordering::Acquire)
    }

    fn check_name(&self, name: &str) -> Result<(), StoreError> {
        if name.len() > self.max_name_len {
            return Err(StoreError::NameTooLong {
                len: name.len(),
                limit: self.max_name_len,
            });
        }
        Ok(())
    }

    /// A write's TTL in milliseconds: the one given, or the default for none or zero.
    fn ttl_ms(&self, ttl: Option<Duration>) -> u64 {
        match ttl {
            Some(ttl) if !ttl.is_zero() => duration_ms(ttl).max(1),
            _ => self.default_ttl_ms,
        }
    }

    /// The write fast path: if `name` holds this value and metadata, only moves its deadline
    /// to `ttl_ms` from now, lock-free (`with` borrows the entry under the shard's read lock:
    /// no reference-count traffic on hot registers); its revision. On a replica a new TTL is
    /// a change the log must carry, so only a write with the same TTL is refreshed here.
    pub(crate) fn refresh_unchanged(
        &self,
        name: &str,
        value: &Json,
        metadata: &Option<Json>,
        ttl_ms: u64,
    ) -> Option<Revision> {
        let replica = self.replica.get().is_some();
        let deadline = self.now_ms().saturating_add(ttl_ms).min(MAX_DEADLINE);
        self.registers
            .with(name, |entry| {
                if replica && entry.ttl_ms() != ttl_ms {
                    return None;
                }
                let revision = entry
                    .snapshot
                    .peek(|r| r.same_content(value, metadata).then_some(r.revision))?;
                match entry.extend(deadline) {
                    Extend::Moved { previous } => {
                        self.rescheduled(entry, previous, deadline);
                        entry.set_ttl_ms(ttl_ms);
                        Some(revision)
                    }
                    // Removed since we looked: the slow path re-creates it.
                    Extend::Dead => None,
                }
            })
            .flatten()
    }

    fn set(
        &self,
        name: &str,
        value: Json,
        metadata: Option<Json>,
        ttl: Option<Duration>,
        origin: Option<&Origin>,
    ) -> Result<SetOutcome, StoreError> {
        self.check_name(name)?;
        let metadata = normalize_metadata(metadata)?;
        let ttl_ms = self.ttl_ms(ttl);
        if let Some(revision) = self.refresh_unchanged(name, &value, &metadata, ttl_ms) {
            return Ok(SetOutcome {
                change: Change::Refreshed,
                revision,
            });
        }
        let deadline = self.now_ms().saturating_add(ttl_ms).min(MAX_DEADLINE);

        self.writable()?;
        let mut commit = self.begin().by(origin);
        let revision = commit.next_revision();
        let (change, register) = match self.registers.get(name) {
            // In the map under the commit lock: live.
            Some(entry) => {
                let current = entry.snapshot.load();
                let outcome = if current.same_content(&value, &metadata) {
                    None
                } else {
                    let register = Arc::new(Register {
                        name: Arc::clone(&current.name),
                        value,
                        metadata,
                        revision,
                        created: current.created,
                    });
                    entry.snapshot.store(Arc::clone(&register));
                    Some(register)
                };
                if let Extend::Moved { previous } = entry.extend(deadline) {
                    self.rescheduled(&entry, previous, deadline);
                }
                entry.set_ttl_ms(ttl_ms);
                match outcome {
                    Some(register) => (Change::Changed, register),
                    None => {
                        return Ok(SetOutcome {
                            change: Change::Refreshed,
                            revision: current.revision,
                        })
                    }
                }
            }
            None => {
                let name: Arc<str> = Arc::from(name);
                let register = Arc::new(Register {
                    name: Arc::clone(&name),
                    value,
                    metadata,
                    revision,
                    created: revision,
                });
                let entry = Arc::new(Entry::new(Arc::clone(&register), deadline, ttl_ms));
                self.registers.insert(name, Arc::clone(&entry));
                self.inbox.push(Timer {
                    entry,
                    gen: 0,
                    at: deadline,
                });
                (Change::Created, register)
            }
        };
        let name = Arc::clone(&register.name);
        commit.set(register, ttl_ms, deadline);
        commit.finish();
        self.watchers.wake(&name, revision);
        Ok(SetOutcome { change, revision })
    }

    /// After a deadline moved from `previous` to `deadline`: a later deadline is served lazily
    /// by the existing timer (it reschedules when it fires); an earlier one needs a new timer.
    fn rescheduled(&self, entry: &Arc<Entry>, previous: u64, deadline: u64) {
        if deadline < previous {
            let gen = entry.next_timer_gen();
            self.inbox.push(Timer {
                entry: Arc::clone(entry),
                gen,
                at: deadline,
            });
        }
    }

    fn remove(&self, name: &str, origin: Option<&Origin>) -> Option<Revision> {
        let mut commit = self.begin().by(origin);
        let (name, entry) = self.registers.remove(name)?;
        entry.kill();
        let revision = commit.removed(&name, EventKind::Delete);
        commit.finish();
        self.watchers.wake(&name, revision);
        Some(revision)
    }

    fn get(&self, name: &str) -> Option<Arc<Register>> {
        self.registers.with(name, |entry| entry.snapshot.load())
    }

    fn read(&self, selector: &Selector) -> Registers {
        let revision = self.current_revision();
        let mut registers = Vec::new();
        match selector {
            Selector::All => {
                registers.reserve(self.registers.len());
                self.registers
                    .for_each(|_, entry| registers.push(entry.snapshot.load()));
                registers.sort_unstable_by(|a: &Arc<Register>, b| a.name.cmp(&b.name));
            }
            // Selector names are sorted, so the output is too.
            Selector::Names(names) => {
                registers.extend(names.iter().filter_map(|name| self.get(name)));
            }
        }
        Registers {
            revision,
            registers,
        }
    }

    fn expires_in(&self, name: &str) -> Option<Duration> {
        let deadline = self.registers.with(name, |entry| entry.deadline())?;
        (deadline != register::DEAD)
            .then(|| Duration::from_millis(deadline.saturating_sub(self.now_ms())))
    }

    fn changed_since(&self, selector: &Selector, after: Revision) -> bool {
        if after > self.current_revision() {
            // A revision this registry never had. A cluster's replica will have it once it
            // catches up (the index came from a node ahead of it): wait. Otherwise the
            // caller's index comes from an earlier incarnation (a restarted server); waiting
            // for it could take forever: answer.
            return self.replica.get().is_none();
        }
        match selector {
            Selector::All => self.current_revision() > after,
            Selector::Names(names) => {
                let mut absent = Vec::new();
                for name in names.iter() {
                    match self
                        .registers
                        .with(&**name, |e| e.snapshot.peek(|r| r.revision))
                    {
                        Some(revision) if revision > after => return true,
                        Some(_) => {}
                        None => absent.push(name),
                    }
                }
                if absent.is_empty() {
                    return false;
                }
                let commit = self.commit.lock();
                absent
                    .iter()
                    .any(|name| commit.history.removed_after(name, after))
            }
        }
    }

    fn replay(&self, selector: &Selector, after: Revision) -> Replay {
        let revision = self.current_revision();
        let mut set: Vec<Arc<Register>> = self
            .read(selector)
            .registers
            .into_iter()
            .filter(|r| r.revision > after)
            .collect();
        set.sort_unstable_by_key(|r| r.revision);
        let removals = self.commit.lock().history.removals_after(after);
        let complete = removals.is_some();
        let removed = removals
            .unwrap_or_default()
            .into_iter()
            .filter(|(name, removed, _)| {
                *removed <= revision && selector.contains(name) && self.get(name).is_none()
            })
            .collect();
        Replay {
            revision,
            set,
            removed,
            complete,
        }
    }

    fn shutdown(&self) {
        // Ordering: Release pairs with the Acquire load in `is_shut_down`: a waiter that
        // registers after the fires below sees the flag in its re-check.
        self.shut_down.store(true, Ordering::Release);
        self.watchers.wake_all(SHUTDOWN);
        self.requests.watchers.wake_all(SHUTDOWN);
        self.closed.wake_all(SHUTDOWN);
    }
}

/// `None`, `null` and `{}` are "no metadata"; anything else must be an object.
fn normalize_metadata(metadata: Option<Json>) -> Result<Option<Json>, StoreError> {
    match metadata {
        None => Ok(None),
        Some(m) if m.is_null() || m.is_empty_object() => Ok(None),
        Some(m) if m.is_object() => Ok(Some(m)),
        Some(m) => Err(StoreError::MetadataNotObject {
            kind: json_kind(&m),
        }),
    }
}

/// The JSON type of a canonical value, from its first byte.
fn json_kind(json: &Json) -> &'static str {
    match json.as_bytes().first() {
        Some(b'{') => "object",
        Some(b'[') => "array",
        Some(b'"') => "string",
        Some(b't' | b'f') => "boolean",
        Some(b'n') => "null",
        _ => "number",
    }
}

/// A duration in whole milliseconds, rounded up so that a positive TTL never becomes zero.
fn duration_ms(duration: Duration) -> u64 {
    let ms = duration.as_nanos().div_ceil(1_000_000);
    u64::try_from(ms).unwrap_or(u64::MAX)
}
