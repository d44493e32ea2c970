//! The client against our server (`reg::server`) on 127.0.0.1:0: every wire call, the error
//! kinds, the high-level client over HTTP, and reconnecting after a restart.
//!
//! Real time with bounded waits: these tests talk over sockets. Where a test needs a poll to
//! be parked before it changes something, it waits for the server registry's gauge.
#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use reg::client::{Client, ClientError, Health, ReadQuery, RegisterWrite, Update, WireClient};
use reg::server::{RunningServer, Server};
use reg::{EventKind, Json, Registry};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::Instant;

fn json(text: &str) -> Json {
    Json::parse(text.as_bytes()).unwrap()
}

async fn serve_on(registry: Registry, addr: &str) -> RunningServer {
    Server::builder()
        .registry(registry)
        .bind(addr)
        .await
        .unwrap()
}

async fn serve(registry: Registry) -> (RunningServer, String) {
    let server = serve_on(registry, "127.0.0.1:0").await;
    let url = format!("http://{}", server.local_addr());
    (server, url)
}

async fn within<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(10), future)
        .await
        .expect("timed out")
}

/// Waits (bounded) until `condition` holds, checking every 5 ms.
async fn eventually(mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "condition not reached");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn client(url: &str) -> Client {
    Client::builder()
        .backoff(Duration::from_millis(10), Duration::from_millis(200))
        .remote(url)
        .unwrap()
}

#[tokio::test]
async fn set_and_read_with_detail_index_and_exact_numbers() {
    let (server, url) = serve(Registry::new()).await;
    let wire = WireClient::new(&url).unwrap();
    assert_eq!(wire.url(), url);

    wire.set(&[
        RegisterWrite::new("a", json("12345678901234567890.10"))
            .metadata(json(r#"{"unit":"C"}"#))
            .ttl(Duration::from_secs(30)),
        RegisterWrite::new("b, with comma", Json::null()),
    ])
    .await
    .unwrap();

    let read = wire
        .read(&ReadQuery::names(["a", "b, with comma", "missing"]).detail(true))
        .await
        .unwrap();
    assert_eq!(read.index, Some(server.registry().revision()));
    assert_eq!(read.registers.len(), 2);
    let a = &read.registers[0];
    assert_eq!(&*a.name, "a");
    assert_eq!(a.value, json("12345678901234567890.10"));
    assert_eq!(a.metadata, Some(json(r#"{"unit":"C"}"#)));
    assert_eq!(a.revision, server.registry().get("a").map(|r| r.revision()));
    assert_eq!(a.created, a.revision);
    let expires_in = a.expires_in.unwrap();
    assert!(expires_in <= Duration::from_secs(30) && expires_in > Duration::from_secs(20));
    assert_eq!(&*read.registers[1].name, "b, with comma");
    assert_eq!(read.registers[1].value, Json::null());

    // Without detail: no revision fields; every register with no names.
    let all = wire.read(&ReadQuery::all()).await.unwrap();
    assert_eq!(all.registers.len(), 2);
    assert_eq!(all.registers[0].revision, None);
}

#[tokio::test]
async fn a_long_poll_with_index_answers_on_a_change() {
    let registry = Registry::new();
    let (_server, url) = serve(registry.clone()).await;
    let wire = WireClient::new(&url).unwrap();
    wire.set(&[RegisterWrite::new("w", json("1"))])
        .await
        .unwrap();
    let first = wire.read(&ReadQuery::names(["w"])).await.unwrap();
    let index = first.index.unwrap();

    // A change before the poll, after the read: answered at once thanks to the index.
    registry.set("w", json("2"), None, None).unwrap();
    let started = Instant::now();
    let read = wire
        .read(
            &ReadQuery::names(["w"])
                .wait(Duration::from_secs(30))
                .index(index),
        )
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(read.registers[0].value, json("2"));
    let index = read.index.unwrap();

    // A change while the poll is parked wakes it.
    let poll = tokio::spawn({
        let wire = wire.clone();
        async move {
            wire.read(
                &ReadQuery::names(["w"])
                    .wait(Duration::from_secs(30))
                    .index(index),
            )
            .await
        }
    });
    eventually(|| registry.stats().parked_waits == 1).await;
    registry.set("w", json("3"), None, None).unwrap();
    let read = within(poll).await.unwrap().unwrap();
    assert_eq!(read.registers[0].value, json("3"));
    assert!(read.index.unwrap() > index);
}

#[tokio::test]
async fn change_requests_are_sent_taken_once_and_removal_works() {
    let (_server, url) = serve(Registry::new()).await;
    let wire = WireClient::new(&url).unwrap();
    wire.request(&[("lamp", json("true")), ("fan", json("3"))])
        .await
        .unwrap();
    let taken = wire
        .take_requests(&["lamp"], Some(Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!((&*taken[0].name, &taken[0].value), ("lamp", &json("true")));
    let rest = wire.take_requests::<&str>(&[], None).await.unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(&*rest[0].name, "fan");
    assert!(wire
        .take_requests(&["lamp"], None)
        .await
        .unwrap()
        .is_empty());

    wire.set(&[RegisterWrite::new("gone", json("1"))])
        .await
        .unwrap();
    wire.remove(&["gone", "never-existed"]).await.unwrap();
    assert!(wire
        .read(&ReadQuery::names(["gone"]))
        .await
        .unwrap()
        .registers
        .is_empty());
    let error = wire.remove::<&str>(&[]).await.unwrap_err();
    assert!(matches!(error, ClientError::InvalidArgument(_)), "{error}");
}

#[tokio::test]
async fn server_errors_carry_their_status_and_message() {
    let (_server, url) = serve(Registry::new()).await;
    let wire = WireClient::new(&url).unwrap();
    let error = wire
        .set(&[RegisterWrite::new("m", json("1")).metadata(json("5"))])
        .await
        .unwrap_err();
    assert!(error.is_status() && error.is_rejected(), "{error}");
    assert_eq!(error.status().map(|s| s.as_u16()), Some(400));
    let message = error.message().unwrap();
    assert!(message.contains("metadata"), "{message}");
    assert!(error.to_string().contains(&message));

    // An unknown endpoint on a client pointed at a prefix the server does not serve.
    let prefixed = WireClient::new(&format!("{url}/nothing-here/")).unwrap();
    let error = prefixed.version().await.unwrap_err();
    assert!(error.is_unsupported(), "{error}");
}

#[tokio::test]
async fn operations_endpoints() {
    let (server, url) = serve(Registry::new()).await;
    let wire = WireClient::new(&url).unwrap();
    wire.set(&[RegisterWrite::new("temp", json("21.5"))])
        .await
        .unwrap();
    assert_eq!(wire.health().await.unwrap(), Health::Serving);
    assert_eq!(wire.version().await.unwrap(), env!("CARGO_PKG_VERSION"));
    let metrics = wire.metrics().await.unwrap();
    assert!(metrics.contains("reg_registers"), "{metrics}");
    assert!(
        metrics.contains("21.5"),
        "numeric registers are gauges: {metrics}"
    );
    drop(server);
}

#[tokio::test]
async fn the_watch_stream_follows_and_replays_changes() {
    let registry = Registry::new();
    let (_server, url) = serve(registry.clone()).await;
    let wire = WireClient::new(&url).unwrap();
    let before = registry.revision();

    let mut stream = wire.watch(&["w"], None).await.unwrap();
    registry.set("other", json("0"), None, None).unwrap();
    let set = registry
        .set(
            "w",
            json(r#"{"y":1.50,"x":null}"#),
            Some(json(r#"{"k":"v"}"#)),
            None,
        )
        .unwrap();
    let removed = registry.remove("w").unwrap();

    let event = within(stream.next()).await.unwrap().unwrap();
    assert_eq!(event.kind, EventKind::Set);
    assert_eq!(&*event.name, "w");
    assert_eq!(event.value, Some(json(r#"{"x":null,"y":1.50}"#)));
    assert_eq!(event.metadata, Some(json(r#"{"k":"v"}"#)));
    assert_eq!(event.revision, Some(set.revision));
    let event = within(stream.next()).await.unwrap().unwrap();
    assert_eq!(
        (event.kind, event.revision),
        (EventKind::Delete, Some(removed))
    );
    assert_eq!(event.value, None);
    assert_eq!(stream.last_revision(), Some(removed));

    // From an index: what changed after it is replayed first (as current state).
    registry.set("w", json("7"), None, None).unwrap();
    let mut replay = wire.watch(&["w"], Some(before)).await.unwrap();
    let event = within(replay.next()).await.unwrap().unwrap();
    assert_eq!((event.kind, event.value), (EventKind::Set, Some(json("7"))));
}

#[tokio::test]
async fn a_url_list_moves_on_from_a_node_that_cannot_be_reached() {
    let dead: SocketAddr = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let registry = Registry::new();
    let (server, live) = serve(registry.clone()).await;
    let wire = WireClient::new(&format!("http://{dead},{live}")).unwrap();

    // The first node refuses the connection: the call goes on to the next, and so do later
    // calls, the watch stream's included.
    wire.set(&[RegisterWrite::new("temp", json("21"))])
        .await
        .unwrap();
    assert_eq!(registry.get("temp").unwrap().value(), &json("21"));
    let mut stream = wire.watch(&["temp"], None).await.unwrap();
    registry.set("temp", json("22"), None, None).unwrap();
    let event = within(stream.next()).await.unwrap().unwrap();
    assert_eq!(event.value, Some(json("22")));
    drop(server);
}

#[tokio::test]
async fn connect_timeout_and_transport_errors_are_told_apart() {
    // Nothing listens on a port we just freed.
    let free: SocketAddr = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let wire = WireClient::new(&format!("http://{free}")).unwrap();
    let error = wire.version().await.unwrap_err();
    assert!(error.is_connect(), "{error:?}");
    assert!(error.to_string().contains(&free.to_string()), "{error}");

    // A server that accepts and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    let wire = WireClient::builder(&format!("http://{silent_addr}"))
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let error = wire.version().await.unwrap_err();
    assert!(error.is_timeout(), "{error:?}");
    hold.abort();

    // A server that answers something that is not HTTP.
    let rude = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let rude_addr = rude.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = rude.accept().await {
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf).await;
            let _ = stream.write_all(b"SSH-2.0-OpenSSH\r\n").await;
        }
    });
    let error = WireClient::new(&format!("http://{rude_addr}"))
        .unwrap()
        .version()
        .await
        .unwrap_err();
    assert!(error.is_transport(), "{error:?}");
}

#[tokio::test]
async fn a_provide_cancelled_during_its_first_write_frees_the_name() {
    // A server that accepts and never answers: the first write hangs.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    let client = client(&format!("http://{addr}"));
    for _ in 0..2 {
        // Not `AlreadyProvided` the second time: the cancelled call released the name.
        let attempt = tokio::time::timeout(
            Duration::from_millis(200),
            client.provide("x", json("1"), None, None),
        )
        .await;
        assert!(attempt.is_err(), "{attempt:?}");
    }
    hold.abort();
}

#[tokio::test]
async fn provide_consume_request_and_remove_over_http() {
    let registry = Registry::new();
    let (_server, url) = serve(registry.clone()).await;
    let client = client(&url);
    let mut lamp = client
        .provide(
            "lamp",
            Json::from(false),
            Some(json(r#"{"room":"hall"}"#)),
            None,
        )
        .await
        .unwrap();
    let mut watcher = client.consume("lamp");
    let update = within(watcher.next()).await.unwrap();
    assert_eq!(
        update,
        Update::Set {
            name: "lamp".into(),
            value: Json::from(false),
            metadata: Some(json(r#"{"room":"hall"}"#)),
            revision: registry.get("lamp").map(|r| r.revision()),
        }
    );

    watcher.request(Json::from(true)).await.unwrap();
    let asked = within(lamp.next_request()).await.unwrap();
    assert_eq!(asked, Json::from(true));
    lamp.update(asked).await.unwrap();
    let update = within(watcher.next()).await.unwrap();
    assert_eq!(update.value(), Some(&Json::from(true)));
    assert!(update.revision().is_some());

    // Dropping the provider removes the register at once (DELETE), long before its TTL.
    let started = Instant::now();
    drop(lamp);
    assert!(within(watcher.next()).await.unwrap().is_removed());
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(registry.get("lamp").is_none());
}

#[tokio::test]
async fn one_long_poll_per_direction_however_many_handles() {
    let registry = Registry::new();
    let (_server, url) = serve(registry.clone()).await;
    for name in ["a", "b", "c"] {
        registry.set(name, json("1"), None, None).unwrap();
    }
    let client = client(&url);
    let mut consumers: Vec<_> = ["a", "b", "c", "a"]
        .into_iter()
        .map(|name| client.consume(name))
        .collect();
    let mut all = client.consume_all();
    for consumer in &mut consumers {
        assert!(within(consumer.next()).await.is_some());
    }
    for _ in 0..3 {
        assert!(within(all.next()).await.is_some());
    }
    let _p = client.provide("p", json("1"), None, None).await.unwrap();
    let _q = client.provide("q", json("1"), None, None).await.unwrap();
    eventually(|| {
        let stats = registry.stats();
        stats.parked_waits == 1 && stats.parked_takes == 1
    })
    .await;

    // A change reaches the consumers of that name through the one poll.
    registry.set("b", json("2"), None, None).unwrap();
    assert_eq!(
        within(consumers[1].next()).await.unwrap().value(),
        Some(&json("2"))
    );
    let update = within(all.next()).await.unwrap();
    assert_eq!((update.name(), update.value()), ("b", Some(&json("2"))));

    // Everything dropped: the server sees the polls go.
    drop((consumers, all, _p, _q, client));
    eventually(|| {
        let stats = registry.stats();
        stats.parked_waits == 0 && stats.parked_takes == 0
    })
    .await;
}

#[tokio::test]
async fn an_expired_register_is_a_removal() {
    let registry = Registry::new();
    let (_server, url) = serve(registry.clone()).await;
    let client = client(&url);
    let wire = client.wire().unwrap().clone();
    wire.set(&[RegisterWrite::new("short", json("1")).ttl(Duration::from_millis(100))])
        .await
        .unwrap();
    let mut consumer = client.consume("short");
    assert!(within(consumer.next()).await.unwrap().value().is_some());
    assert!(within(consumer.next()).await.unwrap().is_removed());
}

#[tokio::test]
async fn consumers_and_providers_survive_a_server_restart() {
    let registry = Registry::new();
    registry.set("x", json(r#""first""#), None, None).unwrap();
    let server = serve_on(registry, "127.0.0.1:0").await;
    let addr = server.local_addr();
    let client = client(&format!("http://{addr}"));
    let mut consumer = client.consume("x");
    let _provider = client
        .provide("p", json("1"), None, Some(Duration::from_millis(400)))
        .await
        .unwrap();
    assert_eq!(
        within(consumer.next()).await.unwrap().value(),
        Some(&json(r#""first""#))
    );

    within(server.shutdown_and_wait()).await.unwrap();
    // A new server, same address, new state: the client reconnects (with backoff) and the
    // provider's refresh re-creates its register there.
    let registry = Registry::new();
    registry.set("x", json(r#""second""#), None, None).unwrap();
    let _server = serve_on(registry.clone(), &addr.to_string()).await;
    loop {
        let update = within(consumer.next()).await.unwrap();
        if update.value() == Some(&json(r#""second""#)) {
            break;
        }
    }
    eventually(|| registry.get("p").is_some()).await;
}
