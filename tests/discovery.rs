//! Discovery end to end on a server at 127.0.0.1:0: instances registered four ways (the Rust
//! client, plain `PUT /provider`, the Consul agent API, the embedded API) and discovered from
//! each side (the Rust client's cached view, `/v1/services`, Consul's catalog and health);
//! a dead provider's instance expires and every watcher is told; health reaches filters; a
//! view goes stale, not empty, when its server goes away.
//!
//! Time is a manual clock where TTLs matter; elsewhere bounded waits on real sockets.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{get, json, manual_registry, put, start, within, Events};
use reg::client::{Client, ServiceEvent};
use reg::discovery::{Discovery, Filter, Instance, Pick, Status};
use reg::Registry;

fn ids(value: &serde_json::Value, list: &str, field: &str) -> Vec<String> {
    let items = if list.is_empty() {
        value.as_array().unwrap().clone()
    } else {
        value[list].as_array().unwrap().clone()
    };
    let mut ids: Vec<String> = items
        .iter()
        .map(|item| {
            field
                .split('.')
                .fold(item, |v, key| &v[key])
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    ids.sort();
    ids
}

/// A server on a fresh registry, its address, and a remote client for it.
async fn served() -> (
    Registry,
    reg::server::RunningServer,
    std::net::SocketAddr,
    Client,
) {
    let registry = Registry::new();
    let server = start(registry.clone()).await;
    let addr = server.local_addr();
    let client = Client::remote(&format!("http://{addr}")).unwrap();
    (registry, server, addr, client)
}

#[tokio::test]
async fn every_way_in_is_seen_by_every_way_out() {
    let (registry, _server, addr, client) = served().await;

    // 1. The Rust client.
    let _a = client
        .register(
            &Instance::new("web", "rust-1")
                .address("10.0.0.1")
                .port(81)
                .tag("rust"),
            Some(Duration::from_secs(30)),
        )
        .await
        .unwrap();
    // 2. Plain PUT /provider, the documented convention.
    let put_body = r#"{"registers":{"svc/web/plain-1":{"value":{"address":"10.0.0.2","port":82,"tags":["plain"]},"ttl":"30s"}}}"#;
    assert_eq!(put(addr, "/provider", put_body).await.status, 204);
    // 3. The Consul agent API (Go's decoder ignores case; Python's client sends lowercase).
    let consul_body = r#"{"name":"web","id":"consul-1","address":"10.0.0.3","port":83,"tags":["consul"],"check":{"ttl":"30s","status":"passing"}}"#;
    assert_eq!(
        put(addr, "/v1/agent/service/register", consul_body)
            .await
            .status,
        200
    );
    // 4. Embedded, on the server's own registry.
    Discovery::new(&registry)
        .register(
            &Instance::new("web", "embedded-1").port(84),
            Some(Duration::from_secs(30)),
        )
        .unwrap();
    let all = ["consul-1", "embedded-1", "plain-1", "rust-1"];

    // Out: reg-native.
    let native = get(addr, "/v1/services/web").await;
    assert_eq!(native.status, 200);
    assert_eq!(ids(&native.json(), "instances", "id"), all);
    assert_eq!(native.index(), native.json()["index"].as_u64().unwrap());
    let services = get(addr, "/v1/services").await.json();
    assert_eq!(services["services"][0]["name"], "web");
    assert_eq!(services["services"][0]["instances"], 4);
    // Out: Consul catalog and health.
    let catalog = get(addr, "/v1/catalog/service/web").await;
    assert_eq!(ids(&catalog.json(), "", "ServiceID"), all);
    assert!(catalog.header("x-consul-index").is_some());
    let health = get(addr, "/v1/health/service/web?passing").await.json();
    assert_eq!(ids(&health, "", "Service.ID"), all);
    let tagged = get(addr, "/v1/health/service/web?tag=consul").await.json();
    assert_eq!(ids(&tagged, "", "Service.ID"), ["consul-1"]);
    assert_eq!(
        get(addr, "/v1/catalog/services").await.json(),
        json(r#"{"web":["consul","plain","rust"]}"#)
    );
    // Out: the Rust client's view, remote and embedded.
    let view = client.discover("web");
    within("remote view", view.ready()).await;
    let seen: Vec<String> = view
        .instances()
        .iter()
        .map(|e| e.instance.id.clone())
        .collect();
    assert_eq!(seen, all);
    let embedded = Client::embedded(registry.clone()).discover("web");
    within("embedded view", embedded.ready()).await;
    assert_eq!(embedded.instances().len(), 4);
    let picked = view.pick(&Pick::default().tag("plain")).unwrap();
    assert_eq!(picked.instance.address, "10.0.0.2");
}

#[tokio::test]
async fn a_dead_provider_expires_and_every_watcher_is_told() {
    let (registry, clock) = manual_registry();
    let server = start(registry.clone()).await;
    let addr = server.local_addr();
    let body = r#"{"registers":{"svc/api/a1":{"value":{"port":1},"ttl":"5s"},"svc/api/a2":{"value":{"port":2},"ttl":"60s"}}}"#;
    assert_eq!(put(addr, "/provider", body).await.status, 204);

    let client = Client::remote(&format!("http://{addr}")).unwrap();
    let view = client.discover("api");
    within("view", view.ready()).await;
    let mut events = view.events();
    let first = [
        within("event", events.next()).await.unwrap(),
        within("event", events.next()).await.unwrap(),
    ];
    assert!(first.iter().all(|e| matches!(e, ServiceEvent::Added(_))));
    let mut sse = Events::open(addr, "/v1/services/api/watch", &[]).await;
    let added = sse.take(2).await;
    assert!(added.iter().all(|e| e.event == "added"));
    let index = get(addr, "/v1/health/service/api")
        .await
        .header("x-consul-index")
        .unwrap()
        .to_owned();

    // The provider of a1 stops refreshing: its TTL runs out.
    clock.advance(Duration::from_secs(6));
    registry.expire_due();

    let removed = within("sse removed", sse.next()).await.unwrap();
    assert_eq!(
        (removed.event.as_str(), removed.data["id"].as_str()),
        ("removed", Some("a1"))
    );
    match within("client event", events.next()).await.unwrap() {
        ServiceEvent::Removed(entry) => assert_eq!(entry.instance.id, "a1"),
        other => panic!("expected a1 removed, got {other:?}"),
    }
    assert_eq!(view.instances().len(), 1);
    // A Consul blocking query from before the expiry answers at once with the change.
    let blocked = within(
        "blocking query",
        get(
            addr,
            &format!("/v1/health/service/api?index={index}&wait=30s"),
        ),
    )
    .await;
    assert!(
        blocked
            .header("x-consul-index")
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > index.parse().unwrap()
    );
    assert_eq!(ids(&blocked.json(), "", "Service.ID"), ["a2"]);
}

#[tokio::test]
async fn health_reaches_filters_and_blocking_queries_wake_on_it() {
    let (_registry, _server, addr, client) = served().await;
    let registration = client
        .register(
            &Instance::new("db", "d1").version("2"),
            Some(Duration::from_secs(30)),
        )
        .await
        .unwrap();
    let listed = get(addr, "/v1/services/db?passing").await;
    assert_eq!(ids(&listed.json(), "instances", "id"), ["d1"]);
    let index = listed.index();

    // A blocking query parked on the service wakes when the status changes.
    let waiter = tokio::spawn(async move {
        get(
            addr,
            &format!("/v1/services/db?passing=true&index={index}&wait=30s"),
        )
        .await
    });
    registration.set_status(Status::Critical).await.unwrap();
    let woke = within("woken", waiter).await.unwrap();
    assert!(woke.index() > index);
    assert!(woke.json()["instances"].as_array().unwrap().is_empty());
    let critical = get(addr, "/v1/services/db?status=critical&version=2")
        .await
        .json();
    assert_eq!(ids(&critical, "instances", "id"), ["d1"]);
    assert!(get(addr, "/v1/health/service/db?passing")
        .await
        .json()
        .as_array()
        .unwrap()
        .is_empty());

    // The Consul TTL check: pass brings it back.
    assert_eq!(
        put(addr, "/v1/agent/check/pass/service:d1", "")
            .await
            .status,
        200
    );
    let health = get(addr, "/v1/health/service/db").await.json();
    assert_eq!(health[0]["Checks"][0]["Status"], "passing");

    // A health check callback sets the status by itself.
    let registration =
        registration.health_check(Duration::from_millis(5), || async { Status::Warning });
    let view = client.discover("db");
    within("warning seen", async {
        loop {
            view.changed().await;
            if view
                .instances()
                .first()
                .is_some_and(|e| e.instance.status == Status::Warning)
            {
                break;
            }
        }
    })
    .await;
    assert!(
        view.pick(&Pick::default()).is_none(),
        "a warning instance is not passing"
    );
    assert!(view.pick(&Pick::round_robin()).is_some());
    // Deregistering removes it at once.
    registration.deregister().await;
    assert!(get(addr, "/v1/services/db").await.json()["instances"]
        .as_array()
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn bad_instances_are_refused_naming_the_field_and_nothing_is_lost() {
    let registry = Registry::new();
    let server = start(registry.clone()).await;
    let addr = server.local_addr();
    let good = r#"{"registers":{"svc/web/w1":{"value":{"port":80}}}}"#;
    assert_eq!(put(addr, "/provider", good).await.status, 204);
    for (body, field) in [
        (
            r#"{"registers":{"svc/web/w2":{"value":{"port":"80"}}}}"#,
            "port",
        ),
        (
            r#"{"registers":{"svc/web/w2":{"value":{"status":"fine"}}}}"#,
            "status",
        ),
        (
            r#"{"registers":{"svc/web/w2":{"value":{"colour":"red"}}}}"#,
            "colour",
        ),
        (r#"{"registers":{"svc/web":{"value":{}}}}"#, "name"),
        // All or nothing: the good entry beside a bad one is not written either.
        (
            r#"{"registers":{"svc/web/w3":{"value":{}},"svc/web/w2":{"value":[1]}}}"#,
            "value",
        ),
    ] {
        let answer = put(addr, "/provider", body).await;
        assert_eq!(answer.status, 400, "{body}");
        assert!(
            answer.error().contains(&format!("{field}:")),
            "{}",
            answer.error()
        );
    }
    let listed = get(addr, "/v1/services/web").await.json();
    assert_eq!(ids(&listed, "instances", "id"), ["w1"]);
    for (method_path, body, status) in [
        (
            "/v1/agent/service/register",
            r#"{"Name":"x","Check":{"HTTP":"http://x","Interval":"10s"}}"#,
            400,
        ),
        ("/v1/agent/service/register", r#"{"ID":"no-name"}"#, 400),
        ("/v1/agent/service/register", "not json", 400),
        ("/v1/agent/service/deregister/nope", "", 404),
        ("/v1/agent/check/pass/service:nope", "", 404),
    ] {
        assert_eq!(
            put(addr, method_path, body).await.status,
            status,
            "{method_path} {body}"
        );
    }
    for (path, status) in [
        ("/v1/kv/key", 501),
        ("/v1/catalog/service/web?filter=Service==web", 400),
        ("/v1/catalog/service/web?dc=elsewhere", 400),
        ("/v1/services/web?tags=x", 400),
        ("/v1/services/web/nope", 404),
    ] {
        let answer = get(addr, path).await;
        assert_eq!(answer.status, status, "{path}");
        assert!(!answer.error().is_empty(), "{path}: a JSON error");
    }
    assert_eq!(get(addr, "/v1/services/web").await.status, 200);
    assert_eq!(
        Discovery::new(&registry)
            .instances("web", &Filter::new())
            .instances
            .len(),
        1
    );
}

#[tokio::test]
async fn a_view_goes_stale_not_empty_when_the_server_goes_away() {
    let registry = Registry::new();
    let server = start(registry.clone()).await;
    let addr = server.local_addr();
    Discovery::new(&registry)
        .register(&Instance::new("web", "w1").port(80), None)
        .unwrap();
    let client = Client::builder()
        .poll_wait(Duration::from_millis(200))
        .backoff(Duration::from_millis(5), Duration::from_millis(20))
        .remote(&format!("http://{addr}"))
        .unwrap();
    let view = client.discover("web");
    within("view", view.ready()).await;
    assert!(!view.is_stale());
    server.shutdown_and_wait().await.unwrap();
    within("stale", async {
        while !view.is_stale() {
            view.changed().await;
        }
    })
    .await;
    assert_eq!(view.instances().len(), 1, "the last known instances stay");
    assert!(view.pick(&Pick::default()).is_some());
    assert!(view.state().error.is_some());
}

#[tokio::test]
async fn consul_agent_reads_and_status() {
    let server = start(Registry::new()).await;
    let addr = server.local_addr();
    let body =
        r#"{"Name":"cache","ID":"c1","Port":6379,"Meta":{"role":"primary"},"Check":{"TTL":"10s"}}"#;
    assert_eq!(
        put(addr, "/v1/agent/service/register", body).await.status,
        200
    );
    let services = get(addr, "/v1/agent/services").await.json();
    assert_eq!(services["c1"]["Service"], "cache");
    assert_eq!(services["c1"]["Meta"]["role"], "primary");
    // A TTL check starts critical, as in Consul.
    let checks = get(addr, "/v1/agent/checks").await.json();
    assert_eq!(checks["service:c1"]["Status"], "critical");
    assert!(get(addr, "/v1/health/service/cache?passing")
        .await
        .json()
        .as_array()
        .unwrap()
        .is_empty());
    assert_eq!(
        put(
            addr,
            "/v1/agent/check/update/service:c1",
            r#"{"Status":"warning"}"#
        )
        .await
        .status,
        200
    );
    assert_eq!(
        get(addr, "/v1/agent/checks").await.json()["service:c1"]["Status"],
        "warning"
    );
    assert_eq!(
        get(addr, "/v1/agent/self").await.json()["Config"]["Datacenter"],
        "dc1"
    );
    assert!(get(addr, "/v1/status/leader")
        .await
        .json()
        .as_str()
        .is_some_and(|l| !l.is_empty()));
    assert_eq!(get(addr, "/v1/agent/service/c1").await.json()["Port"], 6379);
    // Re-registering the ID under another name moves it.
    let moved = r#"{"Name":"kv","ID":"c1","Port":6380}"#;
    assert_eq!(
        put(addr, "/v1/agent/service/register", moved).await.status,
        200
    );
    assert_eq!(
        get(addr, "/v1/catalog/services").await.json(),
        json(r#"{"kv":[]}"#)
    );
    assert_eq!(
        put(addr, "/v1/agent/service/deregister/c1", "")
            .await
            .status,
        200
    );
    assert_eq!(get(addr, "/v1/catalog/services").await.json(), json("{}"));
}

#[tokio::test]
async fn shutdown_answers_parked_discovery_queries_at_once() {
    let registry = Registry::new();
    let server = start(registry.clone()).await;
    let addr = server.local_addr();
    Discovery::new(&registry)
        .register(&Instance::new("web", "w1"), None)
        .unwrap();
    let native = get(addr, "/v1/services/web").await.index();
    let consul = get(addr, "/v1/health/service/web").await;
    let consul = consul.header("x-consul-index").unwrap().to_owned();
    let parked = [
        format!("/v1/services/web?index={native}&wait=10m"),
        format!("/v1/health/service/web?index={consul}&wait=10m"),
        format!("/v1/catalog/services?index={consul}&wait=10m"),
    ];
    let polls: Vec<_> = parked
        .iter()
        .map(|path| {
            let path = path.clone();
            tokio::spawn(async move { get(addr, &path).await })
        })
        .collect();
    common::until("the three are parked", || {
        Discovery::new(&registry).parked() == 3
    })
    .await;
    // Well inside the drain timeout (10 s): the shutdown answers them, not the drain.
    let started = tokio::time::Instant::now();
    server.shutdown();
    for poll in polls {
        assert_eq!(
            within("answered at shutdown", poll).await.unwrap().status,
            200
        );
    }
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_fresh_servers_first_consul_index_blocks_until_the_first_change() {
    let server = start(Registry::new()).await;
    let addr = server.local_addr();
    let first = get(addr, "/v1/catalog/services").await;
    assert_eq!(first.header("x-consul-index"), Some("1"), "never 0");
    let waiter =
        tokio::spawn(async move { get(addr, "/v1/catalog/services?index=1&wait=30s").await });
    let body = r#"{"Name":"web","Check":{"TTL":"10s"}}"#;
    assert_eq!(
        put(addr, "/v1/agent/service/register", body).await.status,
        200
    );
    let woke = within("the first change wakes it", waiter).await.unwrap();
    assert_eq!(woke.header("x-consul-index"), Some("2"));
    assert_eq!(woke.json(), json(r#"{"web":[]}"#));
}

#[tokio::test]
async fn deregister_with_a_health_check_removes_at_once_on_one_thread() {
    let registry = Registry::new();
    let client = Client::embedded(registry.clone());
    let instance = Instance::new("web", "w1");
    let registration = client
        .register(&instance, Some(Duration::from_secs(30)))
        .await
        .unwrap()
        .health_check(Duration::from_millis(1), || async { Status::Passing });
    tokio::task::yield_now().await;
    registration.deregister().await;
    assert!(
        registry.get("svc/web/w1").is_none(),
        "removed when deregister returns"
    );
    // The name is free again at once.
    let again = client.register(&instance, None).await.unwrap();
    drop(again);
}

mod cli_support;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_view_is_fresh_again_with_the_first_answer_not_after_a_long_poll() {
    let registry = Registry::new();
    let server = start(registry.clone()).await;
    Discovery::new(&registry)
        .register(&Instance::new("web", "w1"), None)
        .unwrap();
    let proxy = cli_support::Proxy::start(server.local_addr());
    // Polls wait a minute: a fresh flag that waited for one would time this test out.
    let client = Client::builder()
        .poll_wait(Duration::from_secs(60))
        .backoff(Duration::from_millis(5), Duration::from_millis(20))
        .remote(&proxy.url)
        .unwrap();
    let view = client.discover("web");
    within("view", view.ready()).await;
    let mut events = view.events();
    assert!(matches!(
        within("added", events.next()).await,
        Some(ServiceEvent::Added(_))
    ));
    proxy.cut();
    assert_eq!(
        within("stale", events.next()).await,
        Some(ServiceEvent::Stale(true))
    );
    proxy.resume();
    assert_eq!(
        within("fresh", events.next()).await,
        Some(ServiceEvent::Stale(false))
    );
    assert_eq!(view.instances().len(), 1);
}

#[cfg(feature = "persist")]
#[test]
fn instances_survive_a_restart_with_their_revisions_and_the_catalog_is_rebuilt() {
    use reg::persist::SyncPolicy;
    let dir = tempfile::tempdir().unwrap();
    let open = || {
        Registry::builder()
            .persist(dir.path(), SyncPolicy::Always)
            .unwrap()
    };
    let (kept, index) = {
        let registry = open();
        let discovery = Discovery::new(&registry);
        let web1 = Instance::new("web", "w1").port(80).status(Status::Warning);
        discovery
            .register(&web1, Some(Duration::from_secs(600)))
            .unwrap();
        discovery
            .register(&Instance::new("web", "w2"), Some(Duration::from_secs(600)))
            .unwrap();
        discovery.deregister("web", "w2").unwrap();
        let listed = discovery.instances("web", &Filter::new());
        (listed.instances, listed.index)
    };
    let registry = open();
    let discovery = Discovery::new(&registry);
    let listed = discovery.instances("web", &Filter::new());
    assert_eq!(listed.instances, kept, "same instances, same revisions");
    assert_eq!(listed.instances[0].instance.status, Status::Warning);
    // The index after the restart is the last change's, not 0: old blocking queries stay exact.
    assert!(listed.index >= kept[0].revision);
    assert!(index >= listed.instances[0].revision);
}

#[tokio::test]
async fn endpoints_come_back_exactly_as_written() {
    let server = start(Registry::new()).await;
    let addr = server.local_addr();
    // Canonical (keys sorted, as every stored value is), numbers exactly as written.
    let endpoints =
        r#"[{"big":12345678901234567890123,"f":8.888888888888891e+58,"name":"Get","weight":1.0}]"#;
    let body = format!(
        r#"{{"registers":{{"svc/web/w1":{{"value":{{"port":80,"endpoints":{endpoints}}}}}}}}}"#
    );
    assert_eq!(put(addr, "/provider", &body).await.status, 204);
    let listed = get(addr, "/v1/services/web").await;
    assert!(listed.text().contains(endpoints), "{}", listed.text());
    let client = Client::remote(&format!("http://{addr}")).unwrap();
    let view = client.discover("web");
    within("view", view.ready()).await;
    let seen = view.instances()[0].instance.endpoints.clone().unwrap();
    assert_eq!(seen.as_str(), endpoints);
}
