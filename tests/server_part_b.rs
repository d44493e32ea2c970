//! Part B of the REST contract: revisions and `index`, DELETE, detail, the watch stream,
//! operations endpoints and limits — and a barrage of bad input that loses nothing.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use reg::server::ServerConfig;
use reg::Registry;
use tokio::io::AsyncWriteExt;

const SILENCE: Duration = Duration::from_millis(150);

#[tokio::test]
async fn every_read_carries_the_revision() {
    let server = start(Registry::new()).await;
    let addr = server.local_addr();
    assert_eq!(get(addr, "/consumer").await.index(), 0);
    put(
        addr,
        "/provider",
        r#"{"registers":{"a":{"value":1},"b":{"value":1}}}"#,
    )
    .await;
    assert_eq!(get(addr, "/consumer?name=a").await.index(), 2);
    // A refresh takes no revision; a change does.
    put(addr, "/provider", r#"{"registers":{"a":{"value":1}}}"#).await;
    assert_eq!(get(addr, "/consumer").await.index(), 2);
    put(addr, "/provider", r#"{"registers":{"a":{"value":2}}}"#).await;
    let response = get(addr, "/consumer?name=b&wait=10ms").await;
    assert_eq!(response.index(), 3);
}

#[tokio::test]
async fn index_never_misses_a_change() {
    let registry = Registry::new();
    let server = start(registry.clone()).await;
    let addr = server.local_addr();
    put(
        addr,
        "/provider",
        r#"{"registers":{"a":{"value":1},"b":{"value":1}}}"#,
    )
    .await;
    let seen = get(addr, "/consumer?name=a").await.index();

    // The change lands while the client is away (between its polls).
    put(addr, "/provider", r#"{"registers":{"a":{"value":2}}}"#).await;

    // Without index the poll would park and miss it...
    let mut blind = Conn::open(addr).await;
    blind.send("GET", "/consumer?name=a&wait=60s", None).await;
    assert!(blind.is_silent_for(SILENCE).await);
    drop(blind);
    // ...with the index it answers at once.
    let response = get(addr, &format!("/consumer?name=a&wait=60s&index={seen}")).await;
    assert_eq!(response.json(), json(r#"{"registers":{"a":{"value":2}}}"#));
    let seen = response.index();

    // A removal after the index counts too (any-register poll included).
    registry.remove("b");
    let response = get(addr, &format!("/consumer?name=b&wait=60s&index={seen}")).await;
    assert_eq!(response.text(), r#"{"registers":{}}"#);
    let response = get(addr, &format!("/consumer?wait=60s&index={seen}")).await;
    assert_eq!(response.json(), json(r#"{"registers":{"a":{"value":2}}}"#));

    // Up to date: it parks, and the next change wakes it.
    let seen = response.index();
    let mut poll = Conn::open(addr).await;
    poll.send(
        "GET",
        &format!("/consumer?name=a&wait=60s&index={seen}"),
        None,
    )
    .await;
    until("poll parked", || parked(&registry) == 1).await;
    put(addr, "/provider", r#"{"registers":{"a":{"value":3}}}"#).await;
    let response = within("poll", poll.read_response()).await.unwrap();
    assert_eq!(response.json(), json(r#"{"registers":{"a":{"value":3}}}"#));
    assert!(response.index() > seen);

    // An index from the future (the server restarted, revisions count from 0 again): at once.
    let response = get(addr, "/consumer?name=a&wait=60s&index=999999").await;
    assert_eq!(response.json(), json(r#"{"registers":{"a":{"value":3}}}"#));

    for bad in ["abc", "-1", "1.5", "%2B1", "", "18446744073709551616"] {
        let response = get(addr, &format!("/consumer?name=a&index={bad}")).await;
        assert_eq!(response.status, 400, "index={bad}");
        assert_eq!(
            response.error(),
            format!("invalid index parameter: \"{}\"", bad.replace("%2B", "+"))
        );
    }
}

#[tokio::test]
async fn an_index_older_than_the_history_answers_at_once() {
    let registry = Registry::builder().removal_history(1).build();
    let server = start(registry.clone()).await;
    let addr = server.local_addr();
    put(
        addr,
        "/provider",
        r#"{"registers":{"x":{"value":1},"y":{"value":1}}}"#,
    )
    .await;
    let seen = get(addr, "/consumer").await.index();
    registry.remove("x");
    registry.remove("y");
    // x's removal was forgotten: the server cannot tell, so it answers rather than risk a miss.
    let response = get(addr, &format!("/consumer?name=x&wait=60s&index={seen}")).await;
    assert_eq!(response.text(), r#"{"registers":{}}"#);
}

#[tokio::test]
async fn delete_removes_and_wakes() {
    let registry = Registry::new();
    let server = start(registry.clone()).await;
    let addr = server.local_addr();
    put(
        addr,
        "/provider",
        r#"{"registers":{"a":{"value":1},"b":{"value":2},"c":{"value":3}}}"#,
    )
    .await;
    let mut poll = Conn::open(addr).await;
    poll.send("GET", "/consumer?name=a&wait=60s", None).await;
    until("poll parked", || parked(&registry) == 1).await;
    let before = get(addr, "/consumer").await.index();
    let response = request(addr, "DELETE", "/provider?name=a&names=b,missing", None).await;
    assert_eq!(response.status, 204);
    assert!(response.body.is_empty());
    let response = within("poll", poll.read_response()).await.unwrap();
    assert_eq!(response.text(), r#"{"registers":{}}"#);
    let read = get(addr, "/consumer").await;
    assert_eq!(read.text(), r#"{"registers":{"c":{"value":3}}}"#);
    assert_eq!(read.index(), before + 2, "each removal takes a revision");
    // Removing what does not exist is fine; no names is not.
    assert_eq!(
        request(addr, "DELETE", "/provider?name=a", None)
            .await
            .status,
        204
    );
    let response = request(addr, "DELETE", "/provider", None).await;
    assert_eq!(response.status, 400);
    assert_eq!(response.error(), "at least one name is required");
}

#[tokio::test]
async fn detail_adds_revisions_and_remaining_ttl() {
    let (registry, clock) = manual_registry();
    let server = start(registry.clone()).await;
    let addr = server.local_addr();
    put(
        addr,
        "/provider",
        r#"{"registers":{"a":{"value":1,"ttl":"30s"}}}"#,
    )
    .await;
    put(
        addr,
        "/provider",
        r#"{"registers":{"b":{"value":1,"metadata":{"m":true}}}}"#,
    )
    .await;
    put(
        addr,
        "/provider",
        r#"{"registers":{"a":{"value":2,"ttl":"30s"}}}"#,
    )
    .await;
    clock.advance(Duration::from_millis(10_500));
    let response = get(addr, "/consumer?detail=true").await;
    assert_eq!(
        response.json(),
        json(
            r#"{"registers":{
                "a":{"value":2,"revision":3,"created":1,"expires_in":"19.5s"},
                "b":{"value":1,"metadata":{"m":true},"revision":2,"created":2,"expires_in":"0s"}}}"#
        )
    );
    // Off by default and with detail=false.
    let plain = r#"{"registers":{"a":{"value":2}}}"#;
    assert_eq!(get(addr, "/consumer?name=a").await.text(), plain);
    assert_eq!(
        get(addr, "/consumer?name=a&detail=false").await.text(),
        plain
    );
    let response = get(addr, "/consumer?detail=yes").await;
    assert_eq!(response.error(), r#"invalid detail parameter: "yes""#);
}

#[tokio::test]
async fn watch_replays_then_follows() {
    let (registry, clock) = manual_registry();
    let server = start(registry.clone()).await;
    let addr = server.local_addr();
    put(
        addr,
        "/provider",
        r#"{"registers":{"a":{"value":1},"gone":{"value":0}}}"#,
    )
    .await; // 1, 2
    put(
        addr,
        "/provider",
        r#"{"registers":{"b":{"value":{"k":"v"},"metadata":{"m":1}}}}"#,
    )
    .await; // 3
    put(
        addr,
        "/provider",
        r#"{"registers":{"a":{"value":10,"ttl":"5s"}}}"#,
    )
    .await; // 4
    registry.remove("gone"); // 5

    // Replay after 1: current state of what changed since, in revision order.
    let mut events = Events::open(addr, "/v1/watch?index=1", &[]).await;
    let replay = events.take(3).await;
    let summary: Vec<(&str, &str)> = replay
        .iter()
        .map(|e| (e.event.as_str(), e.id.as_str()))
        .collect();
    assert_eq!(summary, [("set", "3"), ("set", "4"), ("delete", "5")]);
    assert_eq!(
        replay[0].data,
        json(r#"{"name":"b","value":{"k":"v"},"metadata":{"m":1},"revision":3}"#)
    );
    assert_eq!(
        replay[1].data,
        json(r#"{"name":"a","value":10,"revision":4}"#)
    );
    assert_eq!(replay[2].data, json(r#"{"name":"gone","revision":5}"#));

    // Live: a change, a refresh (no event), an expiry, a delete.
    put(addr, "/provider", r#"{"registers":{"b":{"value":2}}}"#).await; // 6
    put(addr, "/provider", r#"{"registers":{"b":{"value":2}}}"#).await;
    clock.advance(Duration::from_secs(6));
    registry.expire_due(); // 7: a expires (b was refreshed by the last write)
    request(addr, "DELETE", "/provider?name=b", None).await; // 8
    let live = events.take(3).await;
    assert_eq!(live[0].event, "set");
    assert_eq!(live[0].data, json(r#"{"name":"b","value":2,"revision":6}"#));
    assert_eq!(
        (live[1].event.as_str(), live[1].id.as_str()),
        ("expire", "7")
    );
    assert_eq!(live[1].data, json(r#"{"name":"a","revision":7}"#));
    assert_eq!(
        (live[2].event.as_str(), live[2].id.as_str()),
        ("delete", "8")
    );

    // Resume with Last-Event-ID (it wins over index) and a name filter.
    put(
        addr,
        "/provider",
        r#"{"registers":{"x":{"value":"x"},"y":{"value":"y"}}}"#,
    )
    .await; // 9, 10
    let mut resumed = Events::open(
        addr,
        "/v1/watch?names=x,b&index=0",
        &[("Last-Event-ID", "6")],
    )
    .await;
    let replay = resumed.take(2).await;
    assert_eq!(
        (replay[0].event.as_str(), replay[0].id.as_str()),
        ("delete", "8")
    );
    assert_eq!(replay[0].data, json(r#"{"name":"b","revision":8}"#));
    assert_eq!(
        replay[1].data,
        json(r#"{"name":"x","value":"x","revision":9}"#)
    );
    put(
        addr,
        "/provider",
        r#"{"registers":{"y":{"value":"y2"},"x":{"value":"x2"}}}"#,
    )
    .await; // x: 11, y: 12
    let next = resumed.next().await.unwrap();
    assert_eq!(
        next.data,
        json(r#"{"name":"x","value":"x2","revision":11}"#)
    );

    // Without index: live only.
    let mut live_only = Events::open(addr, "/v1/watch?name=z", &[]).await;
    put(addr, "/provider", r#"{"registers":{"z":{"value":null}}}"#).await; // 13
    let next = live_only.next().await.unwrap();
    assert_eq!(next.id, "13");
    assert_eq!(
        next.data,
        json(r#"{"name":"z","value":null,"revision":13}"#)
    );

    // An index from the future replays from 0: the current state.
    let mut future = Events::open(addr, "/v1/watch?name=z&index=999", &[]).await;
    assert_eq!(future.next().await.unwrap().id, "13");

    let mut conn = Conn::open(addr).await;
    let response = conn.request("GET", "/v1/watch?index=x", None).await;
    assert_eq!(response.error(), r#"invalid index parameter: "x""#);
    conn.send_with("GET", "/v1/watch", &[("Last-Event-ID", "nope")], None)
        .await;
    let response = conn.read_response().await.unwrap();
    assert_eq!(response.error(), r#"invalid last-event-id header: "nope""#);
}

/// A replay says why each register went, as the live stream did: `expire` for a TTL that ran
/// out, `delete` for DELETE /provider (it used to say `delete` for both).
#[tokio::test]
async fn watch_replay_tells_an_expiry_from_a_delete() {
    let (registry, clock) = manual_registry();
    let server = start(registry.clone()).await;
    let addr = server.local_addr();
    put(
        addr,
        "/provider",
        r#"{"registers":{"brief":{"value":1,"ttl":"1s"},"kept":{"value":2}}}"#,
    )
    .await; // 1, 2
    let before = get(addr, "/consumer").await.index();
    assert_eq!(before, 2);
    clock.advance(Duration::from_secs(1));
    assert_eq!(registry.expire_due(), 1); // 3: brief expires; kept has the default 10 s
    request(addr, "DELETE", "/provider?name=kept", None).await; // 4

    let mut events = Events::open(addr, &format!("/v1/watch?index={before}"), &[]).await;
    let replay = events.take(2).await;
    let summary: Vec<(&str, &str)> = replay
        .iter()
        .map(|e| (e.event.as_str(), e.id.as_str()))
        .collect();
    assert_eq!(summary, [("expire", "3"), ("delete", "4")]);
    assert_eq!(replay[0].data, json(r#"{"name":"brief","revision":3}"#));
    assert_eq!(replay[1].data, json(r#"{"name":"kept","revision":4}"#));

    // A reconnect (Last-Event-ID) with a name filter replays the same way.
    let mut resumed = Events::open(addr, "/v1/watch?name=brief", &[("Last-Event-ID", "1")]).await;
    let next = resumed.next().await.unwrap();
    assert_eq!((next.event.as_str(), next.id.as_str()), ("expire", "3"));
}

/// A stream resynced after falling behind replays expiries as `expire` and deletes as
/// `delete`, like a reconnect.
#[tokio::test]
async fn a_resync_replay_tells_an_expiry_from_a_delete() {
    let clock = reg::ManualClock::new();
    let registry = Registry::builder()
        .clock(clock.clone())
        .manual_expiry()
        .feed_capacity(4)
        .build();
    let server = start(registry.clone()).await;
    let addr = server.local_addr();
    let mut events = Events::open(addr, "/v1/watch", &[]).await;
    // Wait until the stream's task follows the feed, then overflow it: this test runs on one
    // thread, so nothing below is read by the task before the next await.
    let value = || reg::Json::from(0i64);
    registry.set("first", value(), None, None).unwrap();
    let first = events.next().await.unwrap();
    assert_eq!(first.data["name"], "first");
    let brief = Some(Duration::from_millis(10));
    registry.set("expiring", value(), None, brief).unwrap();
    registry.set("deleted", value(), None, None).unwrap();
    for i in 0..8 {
        registry
            .set(&format!("pad{i}"), value(), None, None)
            .unwrap();
    }
    clock.advance(Duration::from_millis(10));
    assert_eq!(registry.expire_due(), 1);
    registry.remove("deleted");

    let mut resynced = false;
    let mut removals = Vec::new();
    while removals.len() < 2 {
        let event = events.next().await.unwrap();
        match event.event.as_str() {
            "resync" => resynced = true,
            "set" => {}
            kind => removals.push((kind.to_owned(), event.data["name"].clone())),
        }
    }
    assert!(resynced, "the stream never fell behind");
    assert_eq!(
        removals,
        [
            ("expire".to_owned(), serde_json::json!("expiring")),
            ("delete".to_owned(), serde_json::json!("deleted")),
        ]
    );
}

/// A stream that falls behind the feed is resynced from the last revision it sent: nothing
/// is skipped.
#[tokio::test]
async fn a_lagging_watch_stream_resyncs() {
    let registry = Registry::builder().feed_capacity(4).build();
    let server = start(registry.clone()).await;
    let addr = server.local_addr();
    let mut events = Events::open(addr, "/v1/watch", &[]).await;
    // Wait until the stream's task is following the feed, then overflow it: this test runs
    // on one thread, so the loop below finishes before the task reads anything.
    registry
        .set("first", reg::Json::from(0i64), None, None)
        .unwrap();
    let first = events.next().await.unwrap();
    assert_eq!(first.data["name"], "first");
    const N: i64 = 100;
    for i in 0..N {
        registry
            .set(&format!("r{i:03}"), reg::Json::from(i), None, None)
            .unwrap();
    }
    let mut seen = std::collections::BTreeMap::new();
    let mut last_id: u64 = first.id.parse().unwrap();
    let mut resyncs = 0;
    while seen.len() < N as usize {
        let event = events.next().await.unwrap();
        if event.event == "resync" {
            // The notice carries the last revision sent, and no id of its own.
            assert_eq!(event.id, "");
            assert_eq!(event.data["revision"], serde_json::json!(last_id));
            resyncs += 1;
            continue;
        }
        let id: u64 = event.id.parse().unwrap();
        assert!(id > last_id, "ids must increase: {id} after {last_id}");
        last_id = id;
        seen.insert(
            event.data["name"].as_str().unwrap().to_owned(),
            event.data["value"].clone(),
        );
    }
    for i in 0..N {
        assert_eq!(seen[&format!("r{i:03}")], serde_json::json!(i));
    }
    assert!(resyncs > 0, "the stream never fell behind");
}

#[tokio::test(start_paused = true)]
async fn watch_sends_keep_alive_comments() {
    let server = start(Registry::new()).await;
    let addr = server.local_addr();
    let mut events = Events::open(addr, "/v1/watch", &[]).await;
    tokio::time::advance(Duration::from_secs(16)).await;
    let chunk = within("keep-alive", events.conn.read_chunk())
        .await
        .unwrap();
    assert_eq!(chunk, b": keep-alive\n\n");
}

#[tokio::test]
async fn operations_endpoints() {
    let registry = Registry::new();
    let server = start(registry.clone()).await;
    let addr = server.local_addr();
    let response = get(addr, "/healthz").await;
    assert_eq!(
        (response.status, response.text()),
        (200, r#"{"status":"ok"}"#)
    );
    assert_eq!(response.header("content-type"), Some("application/json"));
    let response = get(addr, "/version").await;
    assert_eq!(
        response.json(),
        serde_json::json!({ "version": env!("CARGO_PKG_VERSION") })
    );

    put(
        addr,
        "/provider",
        r#"{"registers":{"kitchen.temp":{"value":21.5},"door":{"value":true},
            "off":{"value":false},"label":{"value":"x"},"obj":{"value":{"a":1}}}}"#,
    )
    .await;
    put(
        addr,
        "/consumer",
        r#"{"registers":{"door":{"value":false}}}"#,
    )
    .await;
    get(addr, "/nope").await;
    let mut poll = Conn::open(addr).await;
    poll.send("GET", "/provider?name=q&wait=60s", None).await;
    until("parked", || parked(&registry) == 1).await;

    let response = get(addr, "/metrics").await;
    assert_eq!(response.status, 200);
    assert!(response
        .header("content-type")
        .unwrap()
        .starts_with("text/plain"));
    let text = response.text();
    for line in [
        "reg_http_requests_total{route=\"/provider\",method=\"PUT\",status=\"204\"} 1",
        "reg_http_requests_total{route=\"/consumer\",method=\"PUT\",status=\"202\"} 1",
        "reg_http_requests_total{route=\"other\",method=\"GET\",status=\"404\"} 1",
        "reg_http_requests_total{route=\"/healthz\",method=\"GET\",status=\"200\"} 1",
        "reg_parked_provider_polls 1",
        "reg_parked_consumer_polls 0",
        "reg_registers 5",
        "reg_pending_change_requests 1",
        "reg_expirations_total 0",
        "reg_register_value{name=\"kitchen.temp\"} 21.5",
        "reg_register_value{name=\"door\"} 1",
        "reg_register_value{name=\"off\"} 0",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    assert!(text.lines().any(|l| l.starts_with("reg_connections_open ")));
    assert!(!text.contains("name=\"label\""));
    assert!(!text.contains("name=\"obj\""));
    drop(poll);
}

#[tokio::test]
async fn limits_are_clear_client_errors() {
    let registry = Registry::builder().max_pending_requests(2).build();
    let config = ServerConfig {
        max_names: 3,
        max_name_len: 8,
        max_wait: Duration::from_millis(100),
        ..ServerConfig::default()
    };
    let server = start_with(registry.clone(), config).await;
    let addr = server.local_addr();

    let response = get(addr, "/consumer?names=a,b,c&name=d").await;
    assert_eq!(response.status, 400);
    assert_eq!(response.error(), "too many names: more than the limit of 3");
    let response = put(
        addr,
        "/provider",
        r#"{"registers":{"a":{"value":1},"b":{"value":1},"c":{"value":1},"d":{"value":1}}}"#,
    )
    .await;
    assert_eq!(response.status, 400);
    let response = get(addr, "/consumer?name=123456789").await;
    assert_eq!(response.status, 400);
    assert_eq!(
        response.error(),
        r#"register name "123456789" is 9 bytes, over the limit of 8"#
    );
    let response = put(
        addr,
        "/provider",
        r#"{"registers":{"123456789":{"value":1}}}"#,
    )
    .await;
    assert_eq!(response.status, 400);
    assert_eq!(get(addr, "/consumer").await.text(), r#"{"registers":{}}"#);

    // A wait over the maximum is clamped, not refused.
    let response = get(addr, "/consumer?name=a&wait=1h").await;
    assert_eq!(response.status, 200);

    // The pending-request cap: 503 with a JSON error; replacing a pending one is fine.
    put(
        addr,
        "/consumer",
        r#"{"registers":{"a":{"value":1},"b":{"value":1}}}"#,
    )
    .await;
    let response = put(addr, "/consumer", r#"{"registers":{"c":{"value":1}}}"#).await;
    assert_eq!(response.status, 503);
    assert_eq!(
        response.error(),
        "too many pending change requests (limit 2)"
    );
    let response = put(addr, "/consumer", r#"{"registers":{"a":{"value":2}}}"#).await;
    assert_eq!(response.status, 202);
    // All or nothing: a batch that would pass the cap stores none of its requests, not even
    // the replacement of a pending one.
    let response = put(
        addr,
        "/consumer",
        r#"{"registers":{"a":{"value":3},"z":{"value":1}}}"#,
    )
    .await;
    assert_eq!(response.status, 503);
    assert_eq!(
        get(addr, "/provider?name=a").await.text(),
        r#"{"registers":{"a":{"value":2}}}"#
    );
}

/// Malformed input of every kind: each gets a 4xx (or a closed connection), no register is
/// lost, and the server keeps serving.
#[tokio::test]
async fn bad_input_barrage_loses_nothing() {
    let registry = Registry::new();
    let server = start(registry.clone()).await;
    let addr = server.local_addr();
    let good = r#"{"registers":{"keep":{"value":{"n":12345678901234567890},"metadata":{"m":1},"ttl":"1h"}}}"#;
    assert_eq!(put(addr, "/provider", good).await.status, 204);
    let before = get(addr, "/consumer").await;

    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let bodies: Vec<String> = vec![
        String::new(),
        "null".into(),
        "\u{0}\u{1}".into(),
        deep.clone(),
        format!(r#"{{"registers":{{"keep":{{"value":{deep}}}}}}}"#),
        r#"{"registers":{"keep":{"value":1,"ttl":"1y"}}}"#.into(),
        r#"{"registers":{"keep":{"value":1,"metadata":7}}}"#.into(),
        r#"{"registers":{"keep":{"value":1}},"registers":{"keep":{"value":2,"ttl":[]}}}"#.into(),
        r#"{"registers":{"keep":{"value":"\ud800"},"x":{}}}"#.into(),
        r#"{"registers":{"keep":{"value":1e}}}"#.into(),
        r#"{"registers":{"keep":{"value":01}}}"#.into(),
        r#"{"registers":{"keep":{"value":"a"}}"#.into(),
        r#"{"registers":{"keep":{"value":"a"}}}trailing"#.into(),
        "{\"registers\":{\"keep\":{\"value\":\"\u{7}\"}}}".into(),
        r#"{"registers":{"keep":{"value":1,"ttl":"9999999999999999999h"}}}"#.into(),
    ];
    for body in &bodies {
        for path in ["/provider", "/consumer"] {
            let response = put(addr, path, body).await;
            assert_eq!(response.status, 400, "PUT {path} {:.80}", body);
            response.error();
        }
    }
    // Invalid UTF-8 in a body.
    let mut conn = Conn::open(addr).await;
    let response = conn
        .request(
            "PUT",
            "/provider",
            Some(b"{\"registers\":{\"\xff\":{\"value\":1}}}"),
        )
        .await;
    assert_eq!(response.status, 400);

    let queries = [
        "/consumer?wait=%",
        "/consumer?name=%ff%fe",
        "/consumer?wait=1s1",
        "/consumer?wait=9999999999h",
        "/consumer?index=1e3",
        "/consumer?detail=2",
        "/provider?wait=--1s",
        "/v1/watch?index=%",
    ];
    for query in queries {
        let response = get(addr, query).await;
        assert_eq!(response.status, 400, "{query}");
        response.error();
    }
    // Broken HTTP: the connection is closed or answered 4xx, never a crash.
    let garbage: [&[u8]; 5] = [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
        b"GET /consumer HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        b"PUT /provider HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n{}{}{}",
        b"GET /consumer?name=\x00 HTTP/1.1\r\n\r\n",
    ];
    for bytes in garbage {
        let mut conn = Conn::open(addr).await;
        conn.write(bytes).await;
        if let Some(response) = within("garbage", conn.read_response()).await {
            assert!((400..500).contains(&response.status), "{response:?}");
        }
    }
    // A head far over hyper's buffer limit (about 400 KiB).
    let mut conn = Conn::open(addr).await;
    let huge = format!(
        "GET /consumer HTTP/1.1\r\nX: {}\r\n\r\n",
        "h".repeat(1_000_000)
    );
    let _ = conn.reader.get_mut().write_all(huge.as_bytes()).await;
    if let Some(response) = within("huge head", conn.read_response()).await {
        assert!((400..500).contains(&response.status), "{response:?}");
    }
    // A client that vanishes mid-body.
    let mut conn = Conn::open(addr).await;
    conn.write(b"PUT /provider HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"registers\":{\"keep\":")
        .await;
    drop(conn);

    let after = get(addr, "/consumer").await;
    assert_eq!(
        after.text(),
        before.text(),
        "a register was lost or changed"
    );
    assert_eq!(after.index(), before.index());
    assert_eq!(registry.stats().pending_requests, 0);
    assert_eq!(get(addr, "/healthz").await.status, 200);
}
