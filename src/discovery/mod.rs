//! Service discovery on registers: an instance of a service is the register
//! `svc/<service>/<id>`, whose value says where it is and how it is doing, and which lives
//! while its provider keeps it alive. So expiry, revisions, watches and durability apply to
//! instances as to any register. The convention, the JSON shape and the REST routes are in
//! `docs/discovery.md`.
//!
//! [`Discovery`] is the embedded API: register and deregister instances, list services,
//! list a service's instances with a [`Filter`], wait for a service to change. The catalog
//! behind it is kept by a sink on the registry's commit path (`catalog.rs`), so it is current
//! the moment a write returns, and a change wakes only the waiters of its own service.
//!
//! ```
//! use reg::discovery::{Discovery, Filter, Instance, Status};
//! use reg::Registry;
//! use std::time::Duration;
//!
//! let registry = Registry::new();
//! let discovery = Discovery::new(&registry);
//! let web1 = Instance::new("web", "web-1").address("10.0.0.5").port(8080).tag("v2");
//! discovery.register(&web1, Some(Duration::from_secs(10))).unwrap();
//! discovery
//!     .register(&Instance::new("web", "web-2").status(Status::Critical), None)
//!     .unwrap();
//!
//! // It is a register like any other…
//! assert!(registry.get("svc/web/web-1").is_some());
//! // …and the catalog knows the service.
//! let passing = discovery.instances("web", &Filter::new().passing());
//! assert_eq!(passing.instances.len(), 1);
//! assert_eq!(passing.instances[0].instance.port, 8080);
//! assert_eq!(discovery.services().services[0].instances, 2);
//! ```
//!
//! # Layout
//!
//! `instance.rs` (naming, the value's shape and its validation), `catalog.rs` (the index
//! and its waits), `select.rs` (filters and picking). The REST routes are the server's
//! (`server/services.rs`, `server/consul.rs`); the caching client is the client's
//! (`client/discovery.rs`).

mod catalog;
mod instance;
mod select;

use std::sync::Arc;
use std::time::Duration;

pub use catalog::{InstanceEntry, ServiceInstances, ServiceSummary, Services};
pub use instance::{
    is_reserved, parse, parse_listed, register_name, split_name, Instance, InvalidInstance, Status,
    MAX_PART_LEN, PREFIX,
};
pub use select::{Candidates, Filter, Pick, Predicate};

use crate::store::{Registry, Revision, SetOutcome, StoreError};
use catalog::Catalog;

/// Why a discovery write failed.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The instance is not valid: names the field.
    #[error("invalid instance: {0}")]
    Invalid(#[from] InvalidInstance),
    /// The registry refused the write.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Service discovery over one [`Registry`]. Cheap to clone; every `Discovery` on a registry
/// shares its catalog.
#[derive(Debug, Clone)]
pub struct Discovery {
    registry: Registry,
    catalog: Arc<Catalog>,
    /// Who this handle's writes are made for (see [`on_behalf_of`](Self::on_behalf_of)).
    origin: Option<crate::store::Origin>,
}

impl Discovery {
    /// Discovery over `registry` (its catalog is built on first use from the registers
    /// already under `svc/`).
    pub fn new(registry: &Registry) -> Self {
        Discovery {
            registry: registry.clone(),
            catalog: Catalog::of(registry),
            origin: None,
        }
    }

    /// A handle whose writes (register, deregister) are made on behalf of `origin`, so the
    /// commit path (an audit trail) knows who made them.
    pub fn on_behalf_of(&self, origin: crate::store::Origin) -> Self {
        Discovery {
            origin: Some(origin),
            ..self.clone()
        }
    }

    /// The registry underneath.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Registers (or updates, or refreshes) an instance with a TTL (`None`: the registry's
    /// default). It lives until the TTL runs out unless registered again before: that is the
    /// heartbeat. Writing the same instance again only restarts the TTL.
    pub fn register(
        &self,
        instance: &Instance,
        ttl: Option<Duration>,
    ) -> Result<SetOutcome, DiscoveryError> {
        instance.validate()?;
        let (name, value) = (instance.register_name(), instance.to_json());
        Ok(match &self.origin {
            Some(origin) => self.registry.set_as(origin, &name, value, None, ttl)?,
            None => self.registry.set(&name, value, None, ttl)?,
        })
    }

    /// Removes an instance at once. The revision, or `None` if it was not there.
    pub fn deregister(&self, service: &str, id: &str) -> Result<Option<Revision>, StoreError> {
        let name = register_name(service, id);
        match &self.origin {
            Some(origin) => self.registry.try_remove_as(origin, &name),
            None => self.registry.try_remove(&name),
        }
    }

    /// [`register`](Self::register), resolving once the write is as safe as the registry
    /// promises (on its disk, or in its cluster's log: see [`Registry::submit_set`]). The
    /// write a server makes; the one that works on a cluster's replica.
    pub async fn submit_register(
        &self,
        instance: &Instance,
        ttl: Option<Duration>,
    ) -> Result<SetOutcome, DiscoveryError> {
        instance.validate()?;
        let (name, value) = (instance.register_name(), instance.to_json());
        Ok(self
            .registry
            .submit_set(self.origin.as_ref(), &name, value, None, ttl)
            .await?)
    }

    /// [`deregister`](Self::deregister), resolving as [`submit_register`](Self::submit_register)
    /// does.
    pub async fn submit_deregister(
        &self,
        service: &str,
        id: &str,
    ) -> Result<Option<Revision>, StoreError> {
        let name = register_name(service, id);
        self.registry
            .submit_remove(self.origin.as_ref(), &[name.as_str()])
            .await
    }

    /// The services with at least one instance.
    pub fn services(&self) -> Services {
        self.catalog.services()
    }

    /// The instances of `service` that `filter` lists, sorted by id.
    pub fn instances(&self, service: &str, filter: &Filter) -> ServiceInstances {
        self.catalog.instances(service, filter)
    }

    /// One instance.
    pub fn instance(&self, service: &str, id: &str) -> Option<Arc<InstanceEntry>> {
        self.catalog.instance(service, id)
    }

    /// Every instance with id `id`, in any service.
    pub fn by_id(&self, id: &str) -> Vec<Arc<InstanceEntry>> {
        self.catalog.by_id(id)
    }

    /// Every instance, sorted by service, then id.
    pub fn all(&self) -> Vec<Arc<InstanceEntry>> {
        self.catalog.all()
    }

    /// The catalog index: the revision of the last change to any instance.
    pub fn index(&self) -> Revision {
        self.catalog.index()
    }

    /// The time left before an instance expires unless refreshed.
    pub fn expires_in(&self, service: &str, id: &str) -> Option<Duration> {
        self.registry.expires_in(&register_name(service, id))
    }

    /// Waits parked now (on a service or on any change): a gauge.
    pub fn parked(&self) -> usize {
        self.catalog.parked()
    }

    /// Resolves once `service` changed after index `after` (at once if it already has): an
    /// instance added, changed or removed — or the registry shut down. Cancel safe; bound it
    /// with a timeout.
    pub async fn wait(&self, service: &str, after: Revision) {
        tokio::select! {
            () = self.catalog.wait_service(service, after) => {}
            _ = self.registry.closed() => {}
        }
    }

    /// Resolves once any instance changed after catalog index `after`, or the registry shut
    /// down. Cancel safe.
    pub async fn wait_any(&self, after: Revision) {
        tokio::select! {
            () = self.catalog.wait_any(after) => {}
            _ = self.registry.closed() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::Json;
    use crate::store::ManualClock;

    #[test]
    fn the_catalog_starts_from_existing_registers_and_follows_every_change() {
        let clock = ManualClock::new();
        let registry = Registry::builder()
            .clock(clock.clone())
            .manual_expiry()
            .build();
        let before = Instance::new("api", "a1").port(1);
        registry
            .set(&before.register_name(), before.to_json(), None, None)
            .expect("set");
        registry
            .set("other", Json::from(1i64), None, None)
            .expect("set");
        let discovery = Discovery::new(&registry);
        assert_eq!(discovery.services().services.len(), 1);

        let web = Instance::new("web", "w1").port(80);
        let created = discovery
            .register(&web, Some(Duration::from_secs(5)))
            .expect("register");
        let listed = discovery.instances("web", &Filter::new());
        assert_eq!(listed.index, created.revision);
        assert_eq!(listed.instances.len(), 1);

        // A status change is a change; the filter follows it.
        discovery
            .register(
                &web.clone().status(Status::Warning),
                Some(Duration::from_secs(5)),
            )
            .expect("update");
        assert!(discovery
            .instances("web", &Filter::new().passing())
            .instances
            .is_empty());

        // Expiry removes it, and the service with it.
        clock.advance(Duration::from_secs(6));
        registry.expire_due();
        assert!(discovery
            .instances("web", &Filter::new())
            .instances
            .is_empty());
        let names: Vec<_> = discovery
            .services()
            .services
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names, ["api"]);
        // A second Discovery shares the catalog.
        assert_eq!(Discovery::new(&registry).index(), discovery.index());
    }

    #[test]
    fn a_value_that_is_not_an_instance_is_not_in_the_catalog() {
        let registry = Registry::new();
        let discovery = Discovery::new(&registry);
        let good = Instance::new("web", "w1");
        discovery.register(&good, None).expect("register");
        // Embedded writes bypass the server's check; the catalog drops what is not valid.
        registry
            .set("svc/web/w1", Json::from("nope"), None, None)
            .expect("set");
        assert!(discovery
            .instances("web", &Filter::new())
            .instances
            .is_empty());
        let bad = Instance::new("web", "a/b");
        assert!(matches!(
            discovery.register(&bad, None),
            Err(DiscoveryError::Invalid(_))
        ));
    }

    #[tokio::test]
    async fn a_wait_wakes_on_its_own_service_only() {
        let registry = Registry::new();
        let discovery = Discovery::new(&registry);
        discovery
            .register(&Instance::new("web", "w1"), None)
            .expect("register");
        discovery
            .register(&Instance::new("db", "d1"), None)
            .expect("register");
        let index = discovery.instances("web", &Filter::new()).index;
        let waiter = {
            let discovery = discovery.clone();
            tokio::spawn(async move { discovery.wait("web", index).await })
        };
        tokio::task::yield_now().await;
        discovery
            .register(&Instance::new("db", "d2"), None)
            .expect("register");
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "woken by another service");
        discovery.deregister("web", "w1").expect("deregister");
        tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("woken")
            .expect("task");
        // The emptied service is gone once nobody waits on it; a wait on it from an old index
        // answers at once.
        assert!(discovery
            .services()
            .services
            .iter()
            .all(|s| s.name != "web"));
        tokio::time::timeout(Duration::from_secs(10), discovery.wait("web", index))
            .await
            .expect("answered at once");
    }

    #[tokio::test]
    async fn a_wait_on_a_service_not_there_yet_wakes_when_it_appears() {
        let registry = Registry::new();
        let discovery = Discovery::new(&registry);
        let index = discovery.index();
        let waiter = {
            let discovery = discovery.clone();
            tokio::spawn(async move { discovery.wait("late", index).await })
        };
        tokio::task::yield_now().await;
        discovery
            .register(&Instance::new("other", "o1"), None)
            .expect("register");
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "woken before the service appeared");
        discovery
            .register(&Instance::new("late", "l1"), None)
            .expect("register");
        tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("woken")
            .expect("task");
    }
}
