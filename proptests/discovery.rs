//! The catalog is a view: after every step of random instance writes (valid and not), status
//! changes, refreshes, deletes and expiries on a manual clock, `Discovery` lists exactly what
//! parsing the registers under `svc/` gives — every service, every instance, every filter —
//! each service's index is the revision of its last change, and a wait from an older index
//! answers at once while one from the current index does not.

use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;
use reg::discovery::{self, Discovery, Filter, Instance, Status};
use reg::{Json, ManualClock, Registry};

const SERVICES: [&str; 3] = ["web", "db", "cache"];
const IDS: [&str; 3] = ["a", "b", "c"];

#[derive(Debug, Clone)]
pub(crate) enum Op {
    /// Registers (or changes, or refreshes) an instance.
    Register {
        service: usize,
        id: usize,
        status: u8,
        tag: bool,
        ttl_ms: u16,
    },
    /// Writes something that is not an instance under `svc/` (as an embedded caller could).
    Garbage {
        service: usize,
        id: usize,
    },
    Deregister {
        service: usize,
        id: usize,
    },
    Advance {
        ms: u16,
    },
}

pub(crate) fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..3usize, 0..3usize, 0..3u8, any::<bool>(), 100..2000u16).prop_map(
            |(service, id, status, tag, ttl_ms)| Op::Register { service, id, status, tag, ttl_ms }
        ),
        1 => (0..3usize, 0..3usize).prop_map(|(service, id)| Op::Garbage { service, id }),
        2 => (0..3usize, 0..3usize).prop_map(|(service, id)| Op::Deregister { service, id }),
        2 => (0..1500u16).prop_map(|ms| Op::Advance { ms }),
    ]
}

fn status(n: u8) -> Status {
    [Status::Passing, Status::Warning, Status::Critical][usize::from(n % 3)]
}

/// What the catalog must say, from the registers alone: service → id → (instance, revision).
fn expected(registry: &Registry) -> BTreeMap<String, BTreeMap<String, (Instance, u64)>> {
    let mut services: BTreeMap<String, BTreeMap<String, (Instance, u64)>> = BTreeMap::new();
    for register in registry.list().registers {
        if let Ok(instance) = discovery::parse(register.name(), register.value()) {
            services
                .entry(instance.service.clone())
                .or_default()
                .insert(instance.id.clone(), (instance, register.revision()));
        }
    }
    services
}

fn check(discovery: &Discovery, registry: &Registry, last_change: &BTreeMap<String, u64>) {
    let expected = expected(registry);
    let listed = discovery.services();
    let names: Vec<&str> = listed.services.iter().map(|s| s.name.as_str()).collect();
    let want: Vec<&str> = expected.keys().map(String::as_str).collect();
    assert_eq!(names, want, "services");
    // Each summary is what its instances say (kept incrementally by the catalog).
    for summary in &listed.services {
        let instances: Vec<&Instance> = expected[&summary.name].values().map(|(i, _)| i).collect();
        let mut tags: Vec<String> = instances.iter().flat_map(|i| i.tags.clone()).collect();
        tags.sort();
        tags.dedup();
        let mut versions: Vec<String> = instances
            .iter()
            .map(|i| i.version.clone())
            .filter(|v| !v.is_empty())
            .collect();
        versions.sort();
        versions.dedup();
        let passing = instances
            .iter()
            .filter(|i| i.status == Status::Passing)
            .count();
        assert_eq!(
            summary.instances,
            instances.len(),
            "{}'s count",
            summary.name
        );
        assert_eq!(summary.passing, passing, "{}'s passing", summary.name);
        assert_eq!(summary.tags, tags, "{}'s tags", summary.name);
        assert_eq!(summary.versions, versions, "{}'s versions", summary.name);
    }
    for service in SERVICES {
        let all = discovery.instances(service, &Filter::new());
        let got: Vec<(Instance, u64)> = all
            .instances
            .iter()
            .map(|e| (e.instance.clone(), e.revision))
            .collect();
        let want: Vec<(Instance, u64)> = expected
            .get(service)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        assert_eq!(got, want, "{service}'s instances");
        if let Some(&index) = last_change.get(service) {
            assert_eq!(all.index, index, "{service}'s index is its last change");
        }
        for filter in [
            Filter::new().passing(),
            Filter::new().tag("t"),
            Filter::new().status(Status::Critical).tag("t"),
        ] {
            let got: Vec<String> = discovery
                .instances(service, &filter)
                .instances
                .iter()
                .map(|e| e.instance.id.clone())
                .collect();
            let want: Vec<String> = expected
                .get(service)
                .map(|m| {
                    m.values()
                        .filter(|(i, _)| filter.matches(i))
                        .map(|(i, _)| i.id.clone())
                        .collect()
                })
                .unwrap_or_default();
            assert_eq!(got, want, "{service} with {filter:?}");
        }
    }
}

/// Whether `wait(service, after)` is already answered.
fn answered(discovery: &Discovery, service: &str, after: u64) -> bool {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let wait = discovery.wait(service, after);
        tokio::pin!(wait);
        futures_poll_once(wait.as_mut()).await
    })
}

async fn futures_poll_once<F: std::future::Future>(mut future: std::pin::Pin<&mut F>) -> bool {
    std::future::poll_fn(|cx| std::task::Poll::Ready(future.as_mut().poll(cx).is_ready())).await
}

pub(crate) fn run(ops: &[Op]) {
    let clock = ManualClock::new();
    let registry = Registry::builder()
        .clock(clock.clone())
        .manual_expiry()
        .build();
    let discovery = Discovery::new(&registry);
    let mut last_change: BTreeMap<String, u64> = BTreeMap::new();
    for op in ops {
        let before = registry.revision();
        let was = expected(&registry);
        match *op {
            Op::Register {
                service,
                id,
                status: s,
                tag,
                ttl_ms,
            } => {
                let mut instance = Instance::new(SERVICES[service], IDS[id]).status(status(s));
                if tag {
                    // Twice: a tag given twice counts once.
                    instance = instance.tag("t").tag("t").version("2");
                } else if s == 1 {
                    instance = instance.tag("u").version("1");
                }
                discovery
                    .register(&instance, Some(Duration::from_millis(u64::from(ttl_ms))))
                    .unwrap();
            }
            Op::Garbage { service, id } => {
                let name = discovery::register_name(SERVICES[service], IDS[id]);
                registry
                    .set(&name, Json::from("not an instance"), None, None)
                    .unwrap();
            }
            Op::Deregister { service, id } => {
                discovery.deregister(SERVICES[service], IDS[id]).unwrap();
            }
            Op::Advance { ms } => {
                clock.advance(Duration::from_millis(u64::from(ms)));
                registry.expire_due();
            }
        }
        // A service changed when what parsing its registers gives changed.
        let now = expected(&registry);
        for name in SERVICES {
            if was.get(name) != now.get(name) {
                let index = discovery.instances(name, &Filter::new()).index;
                assert!(index > before, "{name} changed but its index did not move");
                assert!(
                    answered(&discovery, name, before),
                    "{name}: a wait from before the change"
                );
                if now.contains_key(name) {
                    last_change.insert(name.to_owned(), index);
                } else {
                    last_change.remove(name);
                }
            }
        }
        check(&discovery, &registry, &last_change);
        for service in SERVICES {
            let index = discovery.instances(service, &Filter::new()).index;
            if discovery
                .instances(service, &Filter::new())
                .instances
                .is_empty()
            {
                continue;
            }
            assert!(
                !answered(&discovery, service, index),
                "{service}: a wait from its own index"
            );
        }
    }
}
