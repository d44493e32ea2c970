//! The catalog: services and their instances, kept current by a sink on the registry's
//! commit path, with one wait slot per service.
//!
//! # Invariants
//!
//! * **Current when a write returns.** The sink updates the catalog under the commit lock,
//!   before the revision is published, so a caller that wrote an instance reads it back at
//!   once (Consul clients register, then read the catalog).
//! * **Index = revision.** A service's index is the registry revision of the last change to
//!   its instances (create, change, delete, expire); the catalog's index is the last change to
//!   any. Both only grow, so `index` blocking queries never miss a change.
//! * **A change wakes only its service's waiters** (and the catalog-wide ones), once per
//!   commit, after the commit lock is released (the sink's `after_release`), as the store
//!   wakes its own waiters. A waiter arms its `Notify` before it re-checks the index, so no
//!   wake is lost.
//! * An empty service is dropped from the map once no waiter holds its slot (waiters count
//!   themselves in under the read lock; dropping needs the write lock).
//! * Parsing an instance's value happens in the sink, under the commit lock: only writes to
//!   `svc/` names that change something pay it (a refresh is not a commit).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::RwLock;
use tokio::sync::Notify;

use crate::discovery::instance::{self, Instance, Status, PREFIX};
use crate::discovery::select::Filter;
use crate::json::Json;
use crate::store::commit::{Committed, Now, Sink};
use crate::store::views::Start;
use crate::store::{Registry, Revision};

/// One instance as the catalog holds it.
#[derive(Debug, Clone)]
pub struct InstanceEntry {
    /// The instance.
    pub instance: Instance,
    /// The revision of its last change.
    pub revision: Revision,
    /// The revision it was created at.
    pub created: Revision,
    /// Its canonical JSON, made on first use and kept: every answer listing the instance
    /// writes these bytes.
    value: OnceLock<Json>,
}

impl InstanceEntry {
    /// An entry for `instance` at `revision`, created at `created`.
    pub fn new(instance: Instance, revision: Revision, created: Revision) -> Self {
        InstanceEntry {
            instance,
            revision,
            created,
            value: OnceLock::new(),
        }
    }

    /// The instance as canonical JSON ([`Instance::to_json`]), computed once.
    pub fn value(&self) -> &Json {
        self.value.get_or_init(|| self.instance.to_json())
    }
}

impl PartialEq for InstanceEntry {
    fn eq(&self, other: &Self) -> bool {
        self.instance == other.instance
            && self.revision == other.revision
            && self.created == other.created
    }
}

impl Eq for InstanceEntry {}

/// One service in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSummary {
    /// The service's name.
    pub name: String,
    /// Its instances.
    pub instances: usize,
    /// How many of them are passing.
    pub passing: usize,
    /// The union of its instances' tags, sorted.
    pub tags: Vec<String>,
    /// The versions its instances run, sorted (empty ones left out).
    pub versions: Vec<String>,
    /// The revision of its last change.
    pub index: Revision,
}

/// The services, with the catalog index they are at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Services {
    /// The catalog index: the revision of the last change to any instance.
    pub index: Revision,
    /// Services with at least one instance, sorted by name.
    pub services: Vec<ServiceSummary>,
}

/// A service's instances (those a filter lists), with the service's index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceInstances {
    /// The service index (the catalog's, for a service with no instances).
    pub index: Revision,
    /// Its instances, sorted by id.
    pub instances: Vec<Arc<InstanceEntry>>,
}

#[derive(Debug, Default)]
struct Service {
    /// id → entry.
    instances: BTreeMap<Arc<str>, Arc<InstanceEntry>>,
    index: Revision,
    notify: Arc<Notify>,
    /// Waiters holding the slot (see [`Hold`]).
    waiters: AtomicUsize,
    /// The listing's summary, kept as instances come and go, so that listing the services
    /// holds the lock for a pass over the services, not over every instance: how many
    /// instances carry each tag and run each version, and how many are passing.
    tags: BTreeMap<String, usize>,
    versions: BTreeMap<String, usize>,
    passing: usize,
}

impl Service {
    /// Adds (`add`) or takes away an instance's share of the summary.
    fn count(&mut self, instance: &Instance, add: bool) {
        fn bump(counts: &mut BTreeMap<String, usize>, key: &str, add: bool) {
            if add {
                *counts.entry(key.to_owned()).or_default() += 1;
            } else if let Some(n) = counts.get_mut(key) {
                *n -= 1;
                if *n == 0 {
                    counts.remove(key);
                }
            }
        }
        let mut seen: Vec<&str> = Vec::with_capacity(instance.tags.len());
        for tag in &instance.tags {
            // A tag given twice counts once.
            if !seen.contains(&tag.as_str()) {
                seen.push(tag);
                bump(&mut self.tags, tag, add);
            }
        }
        if !instance.version.is_empty() {
            bump(&mut self.versions, &instance.version, add);
        }
        if instance.status == Status::Passing {
            if add {
                self.passing += 1;
            } else {
                self.passing -= 1;
            }
        }
    }

    /// Empty, and nobody waits on it: can be dropped. Called under the write lock.
    fn idle(&self) -> bool {
        self.instances.is_empty() && self.waiters.load(Ordering::Relaxed) == 0
    }
}

#[derive(Debug)]
struct State {
    services: BTreeMap<Arc<str>, Service>,
    index: Revision,
}

/// The catalog of one registry (shared by every [`Discovery`](crate::discovery::Discovery)
/// on it).
#[derive(Debug)]
pub(crate) struct Catalog {
    state: RwLock<State>,
    /// Catalog-wide waiters (the service list, and waits on a service not there yet).
    any: Notify,
    /// How many wait on `any` now (a gauge).
    any_waiters: AtomicUsize,
}

/// The sink that keeps a [`Catalog`] current.
#[derive(Debug)]
struct CatalogSink {
    catalog: Arc<Catalog>,
    /// Slots of services changed in this commit, woken in `committed`.
    touched: Vec<Arc<Notify>>,
}

impl Catalog {
    /// The catalog of `registry`, attached on first use.
    pub(crate) fn of(registry: &Registry) -> Arc<Catalog> {
        registry.view(PREFIX, |start: Start| {
            let catalog = Arc::new(Catalog {
                state: RwLock::new(State {
                    services: BTreeMap::new(),
                    index: start.revision,
                }),
                any: Notify::new(),
                any_waiters: AtomicUsize::new(0),
            });
            {
                let mut state = catalog.state.write();
                for register in &start.registers {
                    if let Ok(instance) = instance::parse(register.name(), register.value()) {
                        state.upsert(
                            InstanceEntry::new(instance, register.revision(), register.created()),
                            None,
                        );
                    }
                }
                state.index = start.revision;
            }
            let sink = CatalogSink {
                catalog: Arc::clone(&catalog),
                touched: Vec::new(),
            };
            (catalog, Box::new(sink))
        })
    }

    /// The services with at least one instance.
    pub(crate) fn services(&self) -> Services {
        let state = self.state.read();
        let services = state
            .services
            .iter()
            .filter(|(_, service)| !service.instances.is_empty())
            .map(|(name, service)| ServiceSummary {
                name: name.to_string(),
                instances: service.instances.len(),
                passing: service.passing,
                tags: service.tags.keys().cloned().collect(),
                versions: service.versions.keys().cloned().collect(),
                index: service.index,
            })
            .collect();
        Services {
            index: state.index,
            services,
        }
    }

    /// The instances of `service` that `filter` lists.
    pub(crate) fn instances(&self, service: &str, filter: &Filter) -> ServiceInstances {
        let state = self.state.read();
        match state.services.get(service) {
            Some(entry) => ServiceInstances {
                index: entry.index,
                instances: entry
                    .instances
                    .values()
                    .filter(|e| filter.matches(&e.instance))
                    .cloned()
                    .collect(),
            },
            None => ServiceInstances {
                index: state.index,
                instances: Vec::new(),
            },
        }
    }

    /// One instance.
    pub(crate) fn instance(&self, service: &str, id: &str) -> Option<Arc<InstanceEntry>> {
        let state = self.state.read();
        state.services.get(service)?.instances.get(id).cloned()
    }

    /// Every instance with this id, in any service (Consul addresses instances by id alone).
    pub(crate) fn by_id(&self, id: &str) -> Vec<Arc<InstanceEntry>> {
        let state = self.state.read();
        state
            .services
            .values()
            .filter_map(|service| service.instances.get(id).cloned())
            .collect()
    }

    /// Every instance, sorted by service then id.
    pub(crate) fn all(&self) -> Vec<Arc<InstanceEntry>> {
        let state = self.state.read();
        state
            .services
            .values()
            .flat_map(|service| service.instances.values().cloned())
            .collect()
    }

    /// Waits parked now: on a service, or on any change.
    pub(crate) fn parked(&self) -> usize {
        let state = self.state.read();
        // Ordering: Relaxed: gauges.
        state
            .services
            .values()
            .map(|s| s.waiters.load(Ordering::Relaxed))
            .sum::<usize>()
            + self.any_waiters.load(Ordering::Relaxed)
    }

    /// The catalog index.
    pub(crate) fn index(&self) -> Revision {
        self.state.read().index
    }

    /// Resolves once `service` has changed after `after` (at once if it already has). Cancel
    /// safe. A service the catalog does not hold is answered at once if the catalog changed
    /// after `after` (it may have been emptied since), else waits until it appears.
    pub(crate) async fn wait_service(&self, service: &str, after: Revision) {
        let mut first = true;
        loop {
            let held = {
                let state = self.state.read();
                match state.services.get(service) {
                    Some(entry) if entry.index > after => return,
                    Some(entry) => {
                        // Ordering: Relaxed: pruning reads it under the write lock, which
                        // excludes this read-locked increment.
                        entry.waiters.fetch_add(1, Ordering::Relaxed);
                        Some(Arc::clone(&entry.notify))
                    }
                    None if first && state.index > after => return,
                    None => None,
                }
            };
            first = false;
            match held {
                Some(notify) => {
                    let _hold = Hold {
                        catalog: self,
                        service,
                    };
                    let notified = notify.notified();
                    tokio::pin!(notified);
                    notified.as_mut().enable();
                    // A held slot stays in the map. It is only ever notified of a change to
                    // its service, which bumps its index past `after`.
                    let changed = self
                        .state
                        .read()
                        .services
                        .get(service)
                        .is_none_or(|entry| entry.index > after);
                    if !changed {
                        notified.await;
                    }
                    return;
                }
                None => {
                    let _counted = Counted::new(&self.any_waiters);
                    let notified = self.any.notified();
                    tokio::pin!(notified);
                    notified.as_mut().enable();
                    if !self.state.read().services.contains_key(service) {
                        notified.await;
                    }
                }
            }
        }
    }

    /// Resolves once any instance has changed after `after` (at once if one has). Cancel safe.
    pub(crate) async fn wait_any(&self, after: Revision) {
        let _counted = Counted::new(&self.any_waiters);
        loop {
            let notified = self.any.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.state.read().index > after {
                return;
            }
            notified.await;
        }
    }
}

/// Counts a waiter in a gauge while it lives.
struct Counted<'a>(&'a AtomicUsize);

impl<'a> Counted<'a> {
    fn new(gauge: &'a AtomicUsize) -> Self {
        // Ordering: Relaxed: a gauge.
        gauge.fetch_add(1, Ordering::Relaxed);
        Counted(gauge)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A waiter's hold on a service's slot: the slot stays in the map while held; the last
/// hold on an empty service drops it.
struct Hold<'a> {
    catalog: &'a Catalog,
    service: &'a str,
}

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        let last_on_empty = {
            let state = self.catalog.state.read();
            state.services.get(self.service).is_some_and(|entry| {
                entry.waiters.fetch_sub(1, Ordering::Relaxed) == 1 && entry.instances.is_empty()
            })
        };
        if last_on_empty {
            let mut state = self.catalog.state.write();
            if state.services.get(self.service).is_some_and(Service::idle) {
                state.services.remove(self.service);
            }
        }
    }
}

impl State {
    /// Inserts or replaces an instance; returns its service's slot.
    fn upsert(&mut self, entry: InstanceEntry, _: Option<()>) -> Arc<Notify> {
        let revision = entry.revision;
        let service = match self.services.get_mut(entry.instance.service.as_str()) {
            Some(service) => service,
            None => self
                .services
                .entry(Arc::from(entry.instance.service.as_str()))
                .or_default(),
        };
        service.index = service.index.max(revision);
        service.count(&entry.instance, true);
        let id = Arc::from(entry.instance.id.as_str());
        if let Some(old) = service.instances.insert(id, Arc::new(entry)) {
            service.count(&old.instance, false);
        }
        self.index = self.index.max(revision);
        Arc::clone(&service.notify)
    }

    /// Removes an instance, if there; returns its service's slot.
    fn remove(&mut self, service: &str, id: &str, revision: Revision) -> Option<Arc<Notify>> {
        let entry = self.services.get_mut(service)?;
        let old = entry.instances.remove(id)?;
        entry.count(&old.instance, false);
        entry.index = revision;
        self.index = self.index.max(revision);
        let notify = Arc::clone(&entry.notify);
        if entry.idle() {
            self.services.remove(service);
        }
        Some(notify)
    }
}

impl Sink for CatalogSink {
    fn record(&mut self, change: Committed<'_>, _now: Now) {
        match change {
            Committed::Set { register, .. } => {
                let Some((service, id)) = instance::split_name(register.name()) else {
                    return;
                };
                let mut state = self.catalog.state.write();
                let notify = match instance::parse(register.name(), register.value()) {
                    Ok(instance) => Some(state.upsert(
                        InstanceEntry::new(instance, register.revision(), register.created()),
                        None,
                    )),
                    // Written past the server's check (an embedded `Registry::set`): not an
                    // instance, so not in the catalog — and no longer the instance it was.
                    Err(error) => {
                        tracing::debug!(name = ?register.name(), %error, "not an instance");
                        state.remove(service, id, register.revision())
                    }
                };
                drop(state);
                self.touched.extend(notify);
            }
            Committed::Removed { name, revision, .. } => {
                let Some((service, id)) = instance::split_name(name) else {
                    return;
                };
                let notify = self.catalog.state.write().remove(service, id, revision);
                self.touched.extend(notify);
            }
        }
    }

    fn committed(&mut self, _through: Revision) {}

    /// Wakes the changed services' waiters once the commit lock is released.
    fn after_release(&mut self) -> Option<crate::store::commit::Deferred> {
        if self.touched.is_empty() {
            return None;
        }
        let touched = std::mem::take(&mut self.touched);
        let catalog = Arc::clone(&self.catalog);
        Some(Box::new(move || {
            for notify in touched {
                notify.notify_waiters();
            }
            catalog.any.notify_waiters();
        }))
    }
}
