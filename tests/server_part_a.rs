//! Part A of the REST contract: the API existing reg clients speak, rule by rule.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use reg::server::ServerConfig;
use reg::Registry;

/// Long enough to catch a wrong answer that was going to come, short enough for the suite.
const SILENCE: Duration = Duration::from_millis(150);

#[tokio::test]
async fn set_then_read() {
    let server = start(Registry::new()).await;
    let addr = server.local_addr();
    let response = put(
        addr,
        "/provider",
        r#"{"registers":{
            "obj":{"value":{"y":2,"x":1},"metadata":{"unit":"C","b":[1,2]},"ttl":"30s"},
            "big":{"value":12345678901234567890123},
            "float":{"value":1.0},
            "nil":{"value":null,"metadata":{}},
            "str":{"value":"a\"b\u00e9","metadata":null}}}"#,
    )
    .await;
    assert_eq!(response.status, 204);
    assert!(response.body.is_empty());

    let response = get(addr, "/consumer").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert!(response.index() >= 5);
    // Exact bytes: canonical values, numbers as written, empty metadata left out.
    assert_eq!(
        response.text(),
        r#"{"registers":{"big":{"value":12345678901234567890123},"float":{"value":1.0},"nil":{"value":null},"obj":{"value":{"x":1,"y":2},"metadata":{"b":[1,2],"unit":"C"}},"str":{"value":"a\"bé"}}}"#
    );
}

#[tokio::test]
async fn names_repeat_merge_and_missing_ones_are_left_out() {
    let server = start(Registry::new()).await;
    let addr = server.local_addr();
    put(
        addr,
        "/provider",
        r#"{"registers":{"a":{"value":1},"b":{"value":2},"c":{"value":3},"d e":{"value":4}}}"#,
    )
    .await;
    let response = get(addr, "/consumer?name=a&names=c,zz&name=d+e&names=a").await;
    assert_eq!(
        response.json(),
        json(r#"{"registers":{"a":{"value":1},"c":{"value":3},"d e":{"value":4}}}"#)
    );
    let response = get(addr, "/consumer?name=nothing").await;
    assert_eq!(response.text(), r#"{"registers":{}}"#);
    let response = get(addr, "/consumer").await;
    assert_eq!(response.json()["registers"].as_object().unwrap().len(), 4);
}

#[tokio::test]
async fn every_bad_request_is_a_400_with_a_json_error() {
    let server = start(Registry::new()).await;
    let addr = server.local_addr();
    let bodies = [
        ("not json", "invalid json at byte 0"),
        ("{\"registers\":", "invalid json"),
        ("[]", "request body must be a json object, not array"),
        ("{}", "registers is required"),
        (
            r#"{"registers":null}"#,
            "registers must be an object, not null",
        ),
        (
            r#"{"registers":[]}"#,
            "registers must be an object, not array",
        ),
        (
            r#"{"registers":{"t":1}}"#,
            r#"register "t": entry must be an object, not number"#,
        ),
        (
            r#"{"registers":{"t":{}}}"#,
            r#"register "t": value is required"#,
        ),
        (
            r#"{"registers":{"t":{"metadata":{}}}}"#,
            r#"register "t": value is required"#,
        ),
        (
            r#"{"registers":{"t":{"value":1,"ttl":"abc"}}}"#,
            r#"register "t": invalid ttl: "abc""#,
        ),
        (
            r#"{"registers":{"t":{"value":1,"ttl":"5"}}}"#,
            r#"register "t": invalid ttl: "5""#,
        ),
        (
            r#"{"registers":{"t":{"value":1,"ttl":10}}}"#,
            r#"register "t": ttl must be a duration string, not number"#,
        ),
        (
            r#"{"registers":{"t":{"value":1,"metadata":[1]}}}"#,
            r#"register "t": metadata must be an object, not array"#,
        ),
        (
            r#"{"registers":{"t":{"value":1,"metadata":"x"}}}"#,
            r#"register "t": metadata must be an object, not string"#,
        ),
    ];
    for path in ["/provider", "/consumer"] {
        for (body, message) in bodies {
            let response = put(addr, path, body).await;
            assert_eq!(response.status, 400, "PUT {path} {body}");
            let error = response.error();
            assert!(
                error.starts_with(message),
                "PUT {path} {body}: {error:?} does not start with {message:?}"
            );
        }
    }
    for path in ["/consumer", "/provider"] {
        for wait in ["5x", "1", "s", "1h-5m", "%20"] {
            let response = get(addr, &format!("{path}?name=a&wait={wait}")).await;
            assert_eq!(response.status, 400, "{path} wait={wait}");
            assert!(response.error().starts_with("invalid wait parameter: "));
        }
    }
    let response = get(addr, "/consumer?wait=5x").await;
    assert_eq!(response.error(), r#"invalid wait parameter: "5x""#);
    // Nothing was applied by any of it.
    assert_eq!(get(addr, "/consumer").await.text(), r#"{"registers":{}}"#);
    assert_eq!(get(addr, "/provider").await.text(), r#"{"registers":{}}"#);
}

#[tokio::test]
async fn validation_is_all_or_nothing() {
    let registry = Registry::new();
    let server = start(registry.clone()).await;
    let addr = server.local_addr();
    put(addr, "/provider", r#"{"registers":{"a":{"value":1}}}"#).await;
    // "b" sorts after "a" and "z" after both: whichever entry is checked first, none lands.
    let body = r#"{"registers":{"a":{"value":2},"b":{"value":1,"ttl":"bad"},"z":{"value":3}}}"#;
    assert_eq!(put(addr, "/provider", body).await.status, 400);
    assert_eq!(
        get(addr, "/consumer").await.json(),
        json(r#"{"registers":{"a":{"value":1}}}"#)
    );
    assert_eq!(put(addr, "/consumer", body).await.status, 400);
    assert_eq!(registry.stats().pending_requests, 0);
}

#[tokio::test]
async fn metadata_is_replaced_and_empty_equals_omitted() {
    let (registry, _clock) = manual_registry();
    let server = start(registry.clone()).await;
    let addr = server.local_addr();
    put(
        addr,
        "/provider",
        r#"{"registers":{"a":{"value":1,"metadata":{"x":1,"y":2}}}}"#,
    )
    .await;
    put(
        addr,
        "/provider",
        r#"{"registers":{"a":{"value":1,"metadata":{"z":3}}}}"#,
    )
    .await;
    assert_eq!(
        get(addr, "/consumer?name=a").await.json(),
        json(r#"{"registers":{"a":{"value":1,"metadata":{"z":3}}}}"#)
    );
    put(addr, "/provider", r#"{"registers":{"a":{"value":1}}}"#).await;
    let read = get(addr, "/consumer?name=a").await;
    assert_eq!(read.text(), r#"{"registers":{"a":{"value":1}}}"#);
    // `{}` and `null` metadata are the same as none: no change, no new revision.
    put(
        addr,
        "/provider",
        r#"{"registers":{"a":{"value":1,"metadata":{}}}}"#,
    )
    .await;
    put(
        addr,
        "/provider",
        r#"{"registers":{"a":{"value":1,"metadata":null}}}"#,
    )
    .await;
    assert_eq!(get(addr, "/consumer?name=a").await.index(), read.index());
}

#[tokio::test]
async fn ttl_default_and_expiry() {
    let (registry, clock) = manual_registry();
    let server = start(registry.clone()).await;
    let addr = server.local_addr();
    put(
        addr,
        "/provider",
        r#"{"registers":{"default":{"value":1},"zero":{"value":1,"ttl":"0"},
            "negative":{"value":1,"ttl":"-5s"},"short":{"value":1,"ttl":"1.5s"},
            "long":{"value":1,"ttl":"1h30m"}}}"#,
    )
    .await;
    let names = |response: Response| {
        let json = response.json();
        json["registers"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect::<Vec<_>>()
    };
    clock.advance(Duration::from_millis(1500));
    registry.expire_due();
    assert_eq!(
        names(get(addr, "/consumer").await),
        ["default", "long", "negative", "zero"]
    );
    clock.advance(Duration::from_millis(8400));
    registry.expire_due();
    assert_eq!(names(get(addr, "/consumer").await).len(), 4);
    clock.advance(Duration::from_millis(100));
    registry.expire_due();
    assert_eq!(names(get(addr, "/consumer").await), ["long"]);
    // A write restarts the TTL, even when nothing changed.
    clock.advance(Duration::from_secs(5000));
    put(
        addr,
        "/provider",
        r#"{"registers":{"long":{"value":1,"ttl":"1s"}}}"#,
    )
    .await;
    clock.advance(Duration::from_millis(900));
    registry.expire_due();
    assert_eq!(names(get(addr, "/consumer").await), ["long"]);
}

#[tokio::test]
async fn change_requests_latest_wins_and_are_consumed_once() {
    let server = start(Registry::new()).await;
    let addr = server.local_addr();
    // No provider holds these names: accepted anyway.
    assert_eq!(
        put(
            addr,
            "/consumer",
            r#"{"registers":{"a":{"value":1},"b":{"value":"x"}}}"#
        )
        .await
        .status,
        202
    );
    let response = put(
        addr,
        "/consumer",
        r#"{"registers":{"a":{"value":{"v":2}}}}"#,
    )
    .await;
    assert_eq!(response.status, 202);
    assert!(response.body.is_empty());
    let response = get(addr, "/provider?name=a").await;
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_eq!(response.text(), r#"{"registers":{"a":{"value":{"v":2}}}}"#);
    assert_eq!(
        get(addr, "/provider?name=a").await.text(),
        r#"{"registers":{}}"#
    );
    // No names: every pending request.
    assert_eq!(
        get(addr, "/provider").await.text(),
        r#"{"registers":{"b":{"value":"x"}}}"#
    );
    assert_eq!(get(addr, "/provider").await.text(), r#"{"registers":{}}"#);
}

#[tokio::test]
async fn provider_polls_answer_pending_at_once_and_wake_on_their_names() {
    let registry = Registry::new();
    let server = start(registry.clone()).await;
    let addr = server.local_addr();
    put(addr, "/consumer", r#"{"registers":{"a":{"value":1}}}"#).await;
    // Pending: answered at once even with a long wait.
    let response = get(addr, "/provider?name=a&wait=60s").await;
    assert_eq!(response.json(), json(r#"{"registers":{"a":{"value":1}}}"#));

    let mut poll = Conn::open(addr).await;
    poll.send("GET", "/provider?names=a,b&wait=60s", None).await;
    until("provider poll parked", || parked(&registry) == 1).await;
    put(addr, "/consumer", r#"{"registers":{"other":{"value":1}}}"#).await;
    assert!(poll.is_silent_for(SILENCE).await, "woken by another name");
    put(addr, "/consumer", r#"{"registers":{"b":{"value":2}}}"#).await;
    let response = within("provider poll", poll.read_response()).await.unwrap();
    assert_eq!(response.json(), json(r#"{"registers":{"b":{"value":2}}}"#));
    // The other request is still there.
    assert_eq!(
        get(addr, "/provider").await.json(),
        json(r#"{"registers":{"other":{"value":1}}}"#)
    );
    // An any-name provider poll wakes on any request.
    let mut poll = Conn::open(addr).await;
    poll.send("GET", "/provider?wait=60s", None).await;
    until("any poll parked", || parked(&registry) == 1).await;
    put(addr, "/consumer", r#"{"registers":{"z":{"value":true}}}"#).await;
    let response = within("any poll", poll.read_response()).await.unwrap();
    assert_eq!(
        response.json(),
        json(r#"{"registers":{"z":{"value":true}}}"#)
    );
    // A poll whose wait runs out answers {}.
    let response = get(addr, "/provider?name=q&wait=50ms").await;
    assert_eq!(response.text(), r#"{"registers":{}}"#);
}

/// Starts a consumer long poll and waits until it is parked.
async fn park(addr: std::net::SocketAddr, registry: &Registry, target: &str) -> Conn {
    let before = parked(registry);
    let mut conn = Conn::open(addr).await;
    conn.send("GET", target, None).await;
    until("consumer poll parked", || parked(registry) == before + 1).await;
    conn
}

#[tokio::test]
async fn consumer_polls_wake_on_changes_only() {
    let registry = Registry::new();
    let server = start(registry.clone()).await;
    let addr = server.local_addr();
    put(
        addr,
        "/provider",
        r#"{"registers":{"a":{"value":{"x":1,"y":2}},"b":{"value":1}}}"#,
    )
    .await;

    let mut poll = park(addr, &registry, "/consumer?name=a&wait=60s").await;
    // An equal value (other key order) and a change to another register: no wake.
    put(
        addr,
        "/provider",
        r#"{"registers":{"a":{"value":{"y":2,"x":1}}}}"#,
    )
    .await;
    put(addr, "/provider", r#"{"registers":{"b":{"value":2}}}"#).await;
    assert!(poll.is_silent_for(SILENCE).await, "woken without a change");
    // A value change wakes, with the current value.
    put(
        addr,
        "/provider",
        r#"{"registers":{"a":{"value":{"x":1,"y":3}}}}"#,
    )
    .await;
    let response = within("poll", poll.read_response()).await.unwrap();
    assert_eq!(
        response.json(),
        json(r#"{"registers":{"a":{"value":{"x":1,"y":3}}}}"#)
    );

    // A metadata change wakes.
    let mut poll = park(addr, &registry, "/consumer?name=a&wait=60s").await;
    put(
        addr,
        "/provider",
        r#"{"registers":{"a":{"value":{"x":1,"y":3},"metadata":{"m":1}}}}"#,
    )
    .await;
    let response = within("poll", poll.read_response()).await.unwrap();
    assert_eq!(
        response.json()["registers"]["a"]["metadata"],
        json(r#"{"m":1}"#)
    );

    // `1` and `1.0` differ: a change.
    let mut poll = park(addr, &registry, "/consumer?name=b&wait=60s").await;
    put(addr, "/provider", r#"{"registers":{"b":{"value":2.0}}}"#).await;
    let response = within("poll", poll.read_response()).await.unwrap();
    assert_eq!(response.text(), r#"{"registers":{"b":{"value":2.0}}}"#);

    // Creation wakes, even with a null value; the answer covers every requested name.
    let mut poll = park(addr, &registry, "/consumer?names=new,b&wait=60s").await;
    put(addr, "/provider", r#"{"registers":{"new":{"value":null}}}"#).await;
    let response = within("poll", poll.read_response()).await.unwrap();
    assert_eq!(
        response.text(),
        r#"{"registers":{"b":{"value":2.0},"new":{"value":null}}}"#
    );

    // No names: any change wakes.
    let mut poll = park(addr, &registry, "/consumer?wait=60s").await;
    put(addr, "/provider", r#"{"registers":{"b":{"value":2.0}}}"#).await;
    assert!(poll.is_silent_for(SILENCE).await, "woken by a refresh");
    put(addr, "/provider", r#"{"registers":{"zz":{"value":0}}}"#).await;
    let response = within("poll", poll.read_response()).await.unwrap();
    assert_eq!(response.json()["registers"]["zz"]["value"], json("0"));

    // Without wait (or zero, or negative): at once.
    for wait in ["", "&wait=0", "&wait=-1s", "&wait=0s"] {
        let response = get(addr, &format!("/consumer?name=b{wait}")).await;
        assert_eq!(response.text(), r#"{"registers":{"b":{"value":2.0}}}"#);
    }
    // A wait that runs out answers the current values.
    let response = get(addr, "/consumer?name=b&wait=50ms").await;
    assert_eq!(response.text(), r#"{"registers":{"b":{"value":2.0}}}"#);
}

#[tokio::test]
async fn expiry_wakes_consumer_polls() {
    let (registry, clock) = manual_registry();
    let server = start(registry.clone()).await;
    let addr = server.local_addr();
    put(
        addr,
        "/provider",
        r#"{"registers":{"a":{"value":1,"ttl":"1s"},"b":{"value":2,"ttl":"1h"}}}"#,
    )
    .await;
    let mut poll = park(addr, &registry, "/consumer?names=a,b&wait=60s").await;
    clock.advance(Duration::from_secs(2));
    assert_eq!(registry.expire_due(), 1);
    let response = within("poll", poll.read_response()).await.unwrap();
    assert_eq!(response.text(), r#"{"registers":{"b":{"value":2}}}"#);
}

#[tokio::test]
async fn wrong_methods_unknown_paths_and_big_bodies() {
    let config = ServerConfig {
        max_body_bytes: 1000,
        ..ServerConfig::default()
    };
    let server = start_with(Registry::new(), config).await;
    let addr = server.local_addr();
    for (method, path, allow) in [
        ("POST", "/consumer", "GET, PUT"),
        ("DELETE", "/consumer", "GET, PUT"),
        ("PATCH", "/consumer", "GET, PUT"),
        ("POST", "/provider", "GET, PUT, DELETE"),
        ("HEAD", "/provider", "GET, PUT, DELETE"),
        ("PUT", "/v1/watch", "GET"),
        ("POST", "/healthz", "GET, HEAD"),
    ] {
        let response = request(addr, method, path, Some("{}")).await;
        assert_eq!(response.status, 405, "{method} {path}");
        assert_eq!(response.header("allow"), Some(allow));
        if method != "HEAD" {
            assert!(response.error().contains("not allowed"));
        }
    }
    for path in [
        "/",
        "/consumers",
        "/consumer/",
        "/v1/consumer",
        "/provider/x",
    ] {
        let response = get(addr, path).await;
        assert_eq!(response.status, 404, "{path}");
        assert!(response.error().starts_with("not found"));
    }
    let big = format!(
        r#"{{"registers":{{"a":{{"value":"{}"}}}}}}"#,
        "x".repeat(1000)
    );
    for path in ["/provider", "/consumer"] {
        let response = put(addr, path, &big).await;
        assert_eq!(response.status, 413);
        assert_eq!(
            response.error(),
            "request body is over the limit of 1000 bytes"
        );
    }
    // Chunked, no declared length: refused once the limit is crossed.
    let mut conn = Conn::open(addr).await;
    conn.write(b"PUT /provider HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await;
    let chunk = "y".repeat(600);
    for _ in 0..2 {
        conn.write(format!("{:x}\r\n{chunk}\r\n", chunk.len()).as_bytes())
            .await;
    }
    conn.write(b"0\r\n\r\n").await;
    let response = within("413", conn.read_response()).await.unwrap();
    assert_eq!(response.status, 413);
    assert_eq!(get(addr, "/consumer").await.text(), r#"{"registers":{}}"#);
}
