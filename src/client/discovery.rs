//! Discovery in the client: [`Client::register`] keeps an instance alive (it is a
//! [`Provider`] of `svc/<service>/<id>`, refreshed at TTL/2, removed on drop) with an optional
//! health check; [`Client::discover`] gives a live, cached [`ServiceView`] of a service.
//!
//! # Invariants
//!
//! * **One poll per service per client.** Every view of a service made from one client shares
//!   one task, the only writer of the view's `watch` channel: `GET /v1/services/<name>` with
//!   `index`/`wait` (remote), or the catalog's wait (embedded). The task ends when the last
//!   view (or event stream) of the service is dropped.
//! * **Stale, not empty.** When the server cannot be reached the view keeps the last instances
//!   it had, says it is stale (and why), and the task reconnects with backoff; the first answer
//!   after that clears the flag.
//! * **Picking reads the cache only**: a `watch` borrow and a pass over the instances, no I/O.
//! * Events are the difference between the last state a stream saw and the latest one: a
//!   stream never misses the final state of an instance; intermediate states may be coalesced.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Weak};
use std::time::Duration;

use hyper::Method;
use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::AbortHandle;

use crate::client::backend::Backend;
use crate::client::backoff::Backoff;
use crate::client::error::ClientError;
use crate::client::highlevel::{Client, Options};
use crate::client::provider::Provider;
use crate::client::url::Query;
use crate::client::wire::{expect_success, WireClient};
use crate::discovery::{
    Candidates, Discovery, Filter, Instance, InstanceEntry, Pick, ServiceInstances, ServiceSummary,
    Services, Status,
};
use crate::duration::format_go_duration;
use crate::json::{parse_tree, Node};
use crate::store::Revision;

impl WireClient {
    /// `GET /v1/services/<service>`: the service's instances that `filter` lists, optionally
    /// blocking until the service changes after `index` (for up to `wait`).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a read changes nothing.
    pub async fn service(
        &self,
        service: &str,
        filter: &Filter,
        index: Option<Revision>,
        wait: Option<Duration>,
    ) -> Result<ServiceInstances, ClientError> {
        Instance::new(service, "x")
            .validate()
            .map_err(|e| ClientError::InvalidArgument(format!("service name {e}")))?;
        let mut query = Query::default();
        if let Some(version) = &filter.version {
            query.push("version", version);
        }
        for tag in &filter.tags {
            query.push("tag", tag);
        }
        for (key, value) in &filter.meta {
            query.push("meta", &format!("{key}={value}"));
        }
        if let Some(status) = filter.status {
            query.push("status", status.as_str());
        }
        if filter.passing {
            query.push("passing", "true");
        }
        if let Some(wait) = wait {
            query.push("wait", &format_go_duration(wait));
            if let Some(index) = index {
                query.push("index", &index.to_string());
            }
        }
        let path = format!("/v1/services/{service}");
        let response = self
            .exchange(Method::GET, &path, &query, None, wait)
            .await?;
        expect_success(&response)?;
        parse_instances(response.body())
    }

    /// `GET /v1/services`: the services with at least one instance.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a read changes nothing.
    pub async fn services(&self) -> Result<Services, ClientError> {
        let response = self
            .exchange(Method::GET, "/v1/services", &Query::default(), None, None)
            .await?;
        expect_success(&response)?;
        let invalid = |what: &str| ClientError::InvalidResponse(format!("services: {what}"));
        let value: Value =
            serde_json::from_slice(response.body()).map_err(|e| invalid(&e.to_string()))?;
        let list = value
            .get("services")
            .and_then(Value::as_array)
            .ok_or_else(|| invalid("no services array"))?;
        let strings = |v: &Value, key: &str| -> Vec<String> {
            v.get(key)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        let count = |v: &Value, key: &str| {
            v.get(key)
                .and_then(Value::as_u64)
                .and_then(|n| usize::try_from(n).ok())
                .unwrap_or(0)
        };
        let services = list
            .iter()
            .map(|s| {
                Ok(ServiceSummary {
                    name: s
                        .get("name")
                        .and_then(Value::as_str)
                        .ok_or_else(|| invalid("a service without a name"))?
                        .to_owned(),
                    instances: count(s, "instances"),
                    passing: count(s, "passing"),
                    tags: strings(s, "tags"),
                    versions: strings(s, "versions"),
                    index: s.get("index").and_then(Value::as_u64).unwrap_or(0),
                })
            })
            .collect::<Result<_, ClientError>>()?;
        Ok(Services {
            index: value.get("index").and_then(Value::as_u64).unwrap_or(0),
            services,
        })
    }
}

/// Parses `{"index": …, "instances": [ … ]}`, instances exactly as the server wrote them.
fn parse_instances(body: &[u8]) -> Result<ServiceInstances, ClientError> {
    let invalid = |what: &str| ClientError::InvalidResponse(format!("service instances: {what}"));
    let tree = parse_tree(body).map_err(|e| invalid(&e.to_string()))?;
    let Node::Object(members) = &tree else {
        return Err(invalid("not an object"));
    };
    let member = |key: &str| {
        members
            .iter()
            .find(|(k, _)| k.decoded() == key)
            .map(|(_, v)| v)
    };
    let index = match member("index") {
        Some(Node::Number(n)) => n.parse::<u64>().map_err(|_| invalid("a bad index"))?,
        _ => return Err(invalid("no index")),
    };
    let Some(Node::Array(list)) = member("instances") else {
        return Err(invalid("no instances array"));
    };
    let instances = list
        .iter()
        .map(|item| {
            crate::discovery::parse_listed(item)
                .map(Arc::new)
                .ok_or_else(|| invalid("an entry that is not an instance"))
        })
        .collect::<Result<_, _>>()?;
    Ok(ServiceInstances { index, instances })
}

/// An instance kept alive by this client: refreshed at TTL/2, removed when dropped (or with
/// [`deregister`](Self::deregister)). With [`health_check`](Self::health_check), a check run
/// at an interval sets its status.
#[derive(Debug)]
pub struct Registration {
    /// Shared with the health check's task; taken by `deregister`.
    provider: Option<Arc<Provider>>,
    instance: Arc<Mutex<Instance>>,
    health: Option<tokio::task::JoinHandle<()>>,
}

impl Client {
    /// Registers `instance` and keeps it alive until the returned handle is dropped: the
    /// register `svc/<service>/<id>` with `ttl` (`None`: the registry's default), refreshed at
    /// half of it. If this process dies the instance expires after its TTL and every watcher
    /// is told.
    ///
    /// # Errors
    ///
    /// [`ClientError::InvalidArgument`] for an invalid service name or id; the first write's
    /// error; [`ClientError::AlreadyProvided`] if this client already registers it.
    ///
    /// # Cancel safety
    ///
    /// As [`Client::provide`].
    pub async fn register(
        &self,
        instance: &Instance,
        ttl: Option<Duration>,
    ) -> Result<Registration, ClientError> {
        instance
            .validate()
            .map_err(|e| ClientError::InvalidArgument(format!("instance {e}")))?;
        let provider = self
            .provide(&instance.register_name(), instance.to_json(), None, ttl)
            .await?;
        Ok(Registration {
            provider: Some(Arc::new(provider)),
            instance: Arc::new(Mutex::new(instance.clone())),
            health: None,
        })
    }

    /// A live view of `service`'s instances, kept current by one shared poll per service (see
    /// the module's invariants). The view starts empty and fills with the first answer
    /// ([`ServiceView::ready`] waits for it).
    pub fn discover(&self, service: &str) -> ServiceView {
        let views = self.views();
        let mut map = views.lock();
        if let Some(shared) = map.get(service).and_then(Weak::upgrade) {
            return ServiceView { shared };
        }
        map.retain(|_, view| view.strong_count() > 0);
        let (tx, rx) = watch::channel(Arc::new(ViewState::default()));
        let source = match self.backend() {
            Backend::Remote(wire) => Source::Remote(wire.clone()),
            Backend::Embedded(registry) => Source::Embedded(Discovery::new(registry)),
        };
        let task = tokio::spawn(follow(source, service.to_owned(), tx, self.options()));
        let shared = Arc::new(ViewShared {
            service: service.to_owned(),
            state: rx,
            turn: AtomicUsize::new(0),
            task: task.abort_handle(),
        });
        map.insert(service.to_owned(), Arc::downgrade(&shared));
        ServiceView { shared }
    }
}

impl Registration {
    /// The instance as last written.
    pub fn instance(&self) -> Instance {
        self.instance.lock().clone()
    }

    /// Sets the status (a change: watchers are told).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: once queued, the write happens even if the future is dropped.
    pub async fn set_status(&self, status: Status) -> Result<(), ClientError> {
        set_status(self.provider()?, &self.instance, status).await
    }

    fn provider(&self) -> Result<&Arc<Provider>, ClientError> {
        self.provider.as_ref().ok_or(ClientError::Closed)
    }

    /// Replaces the instance's fields (same service and id).
    ///
    /// # Errors
    ///
    /// [`ClientError::InvalidArgument`] for another service or id.
    pub async fn update(&self, instance: Instance) -> Result<(), ClientError> {
        {
            let current = self.instance.lock();
            if current.service != instance.service || current.id != instance.id {
                return Err(ClientError::InvalidArgument(format!(
                    "an update keeps the service and id ({}/{}), not {}/{}",
                    current.service, current.id, instance.service, instance.id
                )));
            }
        }
        let value = instance.to_json();
        *self.instance.lock() = instance;
        self.provider()?.update(value).await
    }

    /// Runs `check` every `interval` and sets the status it returns (writing only when it
    /// changes). Replaces an earlier check.
    pub fn health_check<F, Fut>(mut self, interval: Duration, mut check: F) -> Self
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = Status> + Send + 'static,
    {
        if let Some(old) = self.health.take() {
            old.abort();
        }
        let Some(provider) = self.provider.clone() else {
            return self;
        };
        let instance = Arc::clone(&self.instance);
        let interval = interval.max(Duration::from_millis(1));
        let task = tokio::spawn(async move {
            loop {
                let status = check().await;
                if instance.lock().status != status
                    && set_status(&provider, &instance, status).await.is_err()
                {
                    // The provider's task keeps retrying the value; the next check tries again.
                    tracing::debug!("health status write failed");
                }
                tokio::time::sleep(interval).await;
            }
        });
        self.health = Some(task);
        self
    }

    /// Removes the instance now and waits until it is removed (or the removal failed: it
    /// then expires by its TTL).
    pub async fn deregister(mut self) {
        if let Some(health) = self.health.take() {
            health.abort();
            // Wait until the aborted task let go of its provider handle.
            let _ = health.await;
        }
        let Some(provider) = self.provider.take() else {
            return;
        };
        match Arc::try_unwrap(provider) {
            Ok(provider) => provider.remove().await,
            // The aborted check's task still holds it for a moment; its drop removes it.
            Err(shared) => drop(shared),
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(health) = self.health.take() {
            health.abort();
        }
    }
}

async fn set_status(
    provider: &Provider,
    instance: &Mutex<Instance>,
    status: Status,
) -> Result<(), ClientError> {
    let value = {
        let mut instance = instance.lock();
        instance.status = status;
        instance.to_json()
    };
    provider.update(value).await
}

/// The views of one client, by service.
pub(crate) type Views = Mutex<HashMap<String, Weak<ViewShared>>>;

/// What a view shows.
#[derive(Debug, Clone, Default)]
pub struct ViewState {
    /// The instances, sorted by id, ready to pick from.
    pub candidates: Candidates,
    /// The service index they are at (`None` before the first answer).
    pub index: Option<Revision>,
    /// The last poll failed: these are the last instances known, not the current ones.
    pub stale: bool,
    /// Why, when stale.
    pub error: Option<String>,
}

#[derive(Debug)]
pub(crate) struct ViewShared {
    service: String,
    state: watch::Receiver<Arc<ViewState>>,
    /// The round-robin counter of [`ServiceView::pick`].
    turn: AtomicUsize,
    task: AbortHandle,
}

impl Drop for ViewShared {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A live, cached view of one service's instances; see [`Client::discover`]. Cheap to clone:
/// clones share the cache and the round-robin counter.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use reg::client::Client;
/// use reg::discovery::{Instance, Pick};
/// use reg::Registry;
///
/// // `Client::remote("http://localhost:8080")?` for a server: the rest is the same.
/// let client = Client::embedded(Registry::new());
/// let _web1 = client.register(&Instance::new("web", "web-1").port(8081), None).await.unwrap();
/// let _web2 = client.register(&Instance::new("web", "web-2").port(8082), None).await.unwrap();
///
/// let web = client.discover("web");
/// web.ready().await;
/// let first = web.pick(&Pick::default()).unwrap();
/// let second = web.pick(&Pick::default()).unwrap();
/// assert_ne!(first.instance.id, second.instance.id); // round robin
/// assert!(!web.is_stale());
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct ServiceView {
    shared: Arc<ViewShared>,
}

impl ServiceView {
    /// The service's name.
    pub fn service(&self) -> &str {
        &self.shared.service
    }

    /// The cached instances.
    pub fn instances(&self) -> Vec<Arc<InstanceEntry>> {
        self.shared.state.borrow().candidates.all().to_vec()
    }

    /// The whole cached state (instances, index, staleness).
    pub fn state(&self) -> Arc<ViewState> {
        Arc::clone(&self.shared.state.borrow())
    }

    /// Whether the cache is stale: the server could not be reached at the last poll.
    pub fn is_stale(&self) -> bool {
        self.shared.state.borrow().stale
    }

    /// Picks an instance from the cache (no I/O); `None` when none matches.
    /// [`Pick::default`] is round robin over passing instances.
    pub fn pick(&self, pick: &Pick) -> Option<Arc<InstanceEntry>> {
        let state = self.shared.state.borrow();
        state.candidates.pick(pick, &self.shared.turn).cloned()
    }

    /// Waits for the first answer (or the first failure, which leaves the view empty and
    /// stale).
    pub async fn ready(&self) {
        let mut state = self.shared.state.clone();
        let _ = state.wait_for(|s| s.index.is_some() || s.stale).await;
    }

    /// Waits until the cache changes.
    pub async fn changed(&self) {
        let mut state = self.shared.state.clone();
        state.mark_unchanged();
        let _ = state.changed().await;
    }

    /// A stream of what changes: [`ServiceEvent`]s from the empty state, so the instances
    /// already known come first as `Added`.
    pub fn events(&self) -> ServiceEvents {
        let mut state = self.shared.state.clone();
        state.mark_changed();
        ServiceEvents {
            _view: self.clone(),
            state,
            seen: BTreeMap::new(),
            stale: false,
            pending: Vec::new(),
        }
    }
}

/// A change to a service, as [`ServiceEvents`] tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceEvent {
    /// An instance appeared.
    Added(Arc<InstanceEntry>),
    /// An instance changed (address, status, …).
    Changed(Arc<InstanceEntry>),
    /// An instance went away: deregistered or expired.
    Removed(Arc<InstanceEntry>),
    /// The view went stale (the server is unreachable; the instances are the last known) or
    /// fresh again.
    Stale(bool),
}

/// The events of a [`ServiceView`]; see [`ServiceView::events`].
#[derive(Debug)]
pub struct ServiceEvents {
    _view: ServiceView,
    state: watch::Receiver<Arc<ViewState>>,
    seen: BTreeMap<String, Arc<InstanceEntry>>,
    /// The staleness last told.
    stale: bool,
    pending: Vec<ServiceEvent>,
}

impl ServiceEvents {
    /// The next event; `None` only if the view's poll ended.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: events are computed when a change is seen and kept until returned.
    pub async fn next(&mut self) -> Option<ServiceEvent> {
        loop {
            if let Some(event) = self.pending.pop() {
                return Some(event);
            }
            self.state.changed().await.ok()?;
            let state = Arc::clone(&self.state.borrow_and_update());
            let mut events = Vec::new();
            let mut now = BTreeMap::new();
            for entry in state.candidates.all() {
                let id = entry.instance.id.clone();
                match self.seen.get(&id) {
                    None => events.push(ServiceEvent::Added(Arc::clone(entry))),
                    Some(old)
                        if old.revision != entry.revision || old.instance != entry.instance =>
                    {
                        events.push(ServiceEvent::Changed(Arc::clone(entry)));
                    }
                    Some(_) => {}
                }
                now.insert(id, Arc::clone(entry));
            }
            for (id, old) in &self.seen {
                if !now.contains_key(id) {
                    events.push(ServiceEvent::Removed(Arc::clone(old)));
                }
            }
            if state.stale != self.stale {
                self.stale = state.stale;
                events.push(ServiceEvent::Stale(state.stale));
            }
            self.seen = now;
            // Oldest first out of `pop`.
            events.reverse();
            self.pending = events;
        }
    }
}

/// The same instances at the same revisions.
fn same_instances(a: &[Arc<InstanceEntry>], b: &[Arc<InstanceEntry>]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.revision == y.revision
                && x.instance.service == y.instance.service
                && x.instance.id == y.instance.id
        })
}

/// Where a view's task reads from.
enum Source {
    Remote(WireClient),
    Embedded(Discovery),
}

impl Source {
    async fn poll(
        &self,
        service: &str,
        index: Option<Revision>,
        wait: Duration,
    ) -> Result<ServiceInstances, ClientError> {
        match self {
            Source::Remote(wire) => {
                let wait = index.map(|_| wait);
                wire.service(service, &Filter::new(), index, wait).await
            }
            Source::Embedded(discovery) => {
                if discovery.registry().is_shut_down() {
                    return Err(ClientError::Closed);
                }
                if let Some(after) = index {
                    let _ = tokio::time::timeout(wait, discovery.wait(service, after)).await;
                }
                Ok(discovery.instances(service, &Filter::new()))
            }
        }
    }
}

/// A view's task: polls the service and publishes each new state (see the invariants).
async fn follow(
    source: Source,
    service: String,
    tx: watch::Sender<Arc<ViewState>>,
    options: Options,
) {
    let mut backoff = Backoff::new(options.backoff_min, options.backoff_max);
    let mut index: Option<Revision> = None;
    let mut failed = false;
    loop {
        // After a failure, ask without waiting: the first answer clears the stale flag at once
        // rather than after a long poll with no change.
        let ask = if failed { None } else { index };
        match source.poll(&service, ask, options.poll_wait).await {
            Ok(listed) => {
                backoff.reset();
                failed = false;
                // Publish a new state only when it differs: the index of a service with no
                // instances is the catalog's, which moves with every other service.
                let changed = {
                    let current = tx.borrow();
                    current.stale
                        || current.index.is_none()
                        || !same_instances(current.candidates.all(), &listed.instances)
                };
                if changed {
                    tx.send_replace(Arc::new(ViewState {
                        candidates: Candidates::new(listed.instances),
                        index: Some(listed.index),
                        stale: false,
                        error: None,
                    }));
                }
                index = Some(listed.index);
            }
            Err(ClientError::Closed) => return,
            Err(error) => {
                failed = true;
                let message = error.to_string();
                tx.send_modify(|state| {
                    let mut next = ViewState::clone(state);
                    next.stale = true;
                    next.error = Some(message);
                    *state = Arc::new(next);
                });
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}
