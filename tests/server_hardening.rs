//! The bad-input contract at the HTTP layer: timeouts that hold against trickling clients,
//! bounded heads and streams, the per-address connection cap, JSON for every error reg
//! writes, lingering close after a 413, Go reg's empty-name rules, RFC 9112's `Host`, and
//! logs that client input cannot forge. Real servers on 127.0.0.1:0, raw sockets.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use reg::server::ServerConfig;
use reg::{Json, Registry};
use tokio::net::TcpSocket;

/// A plain non-blocking socket: the test reads and writes it with direct system calls, so
/// under paused time nothing waits on the runtime's I/O driver.
fn raw_connect(addr: SocketAddr) -> std::net::TcpStream {
    let stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_nonblocking(true).unwrap();
    stream
}

/// Whether the server closed `stream` (EOF or reset), without waiting.
fn is_closed(stream: &mut std::net::TcpStream) -> bool {
    let mut buf = [0u8; 256];
    match stream.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => panic!("the server answered a request it never completed"),
        Err(e) if e.kind() == ErrorKind::WouldBlock => false,
        Err(_) => true,
    }
}

/// Lets the server's tasks run (accept, read what arrived) without moving paused time.
async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

/// 200 connections that each send one byte of a request head every 3 s are all closed at
/// the 10 s header timeout, not at the 60 s idle timeout: the first byte re-arms the watchdog.
#[tokio::test(start_paused = true)]
async fn a_trickled_head_is_cut_at_the_header_timeout() {
    let server = start(Registry::new()).await;
    let addr = server.local_addr();
    let head = b"GET /healthz HTTP/1.1\r\nHost: x\r\n";
    let mut conns: Vec<_> = (0..200).map(|_| raw_connect(addr)).collect();
    settle().await;
    let start = tokio::time::Instant::now();
    for (step, byte) in head.iter().take(4).enumerate() {
        tokio::time::sleep_until(start + Duration::from_secs(3 * step as u64)).await;
        for conn in &mut conns {
            assert!(!is_closed(conn), "closed before the header timeout");
            let _ = conn.write(std::slice::from_ref(byte));
        }
        settle().await;
    }
    tokio::time::sleep_until(start + Duration::from_millis(9_500)).await;
    settle().await;
    assert!(conns.iter_mut().all(|c| !is_closed(c)), "closed early");
    tokio::time::sleep_until(start + Duration::from_secs(11)).await;
    settle().await;
    let open = conns
        .iter_mut()
        .map(is_closed)
        .filter(|closed| !closed)
        .count();
    assert_eq!(open, 0, "connections still open at 11 s");
}

/// One address cannot take every slot: past its cap it is answered 503 (JSON) while another
/// address is still served.
#[tokio::test]
async fn connections_per_address_are_capped() {
    let registry = Registry::new();
    let config = ServerConfig {
        max_connections_per_ip: Some(3),
        ..ServerConfig::default()
    };
    let server = start_with(registry.clone(), config).await;
    let addr = server.local_addr();
    let mut held = Vec::new();
    for i in 0..3 {
        let mut conn = Conn::open(addr).await;
        conn.send("GET", &format!("/consumer?name=p{i}&wait=60s"), None)
            .await;
        held.push(conn);
    }
    until("polls parked", || parked(&registry) == 3).await;

    let refused = get(addr, "/healthz").await;
    assert_eq!(refused.status, 503);
    assert_eq!(
        refused.error(),
        "too many connections from this address: the limit is 3"
    );

    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let stream = within("connect from 127.0.0.2", socket.connect(addr))
        .await
        .unwrap();
    let mut other = Conn::from_stream(stream);
    let answer = within("healthz", other.request("GET", "/healthz", None)).await;
    assert_eq!(answer.status, 200);

    // A slot comes back when its connection closes.
    held.pop();
    until_async("a slot is free again", || async {
        get(addr, "/healthz").await.status == 200
    })
    .await;
    let metrics = get(addr, "/metrics").await;
    assert!(metrics
        .text()
        .lines()
        .any(|l| l.starts_with("reg_connections_refused_per_ip_total ") && !l.ends_with(" 0")));
}

/// Sends `GET /healthz` with `count` headers of 8,000 bytes each.
async fn send_big_head(conn: &mut Conn, count: usize) {
    let big = "v".repeat(8_000);
    let names: Vec<String> = (0..count).map(|i| format!("x-big-{i}")).collect();
    let headers: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), big.as_str())).collect();
    conn.send_with("GET", "/healthz", &headers, None).await;
}

/// Heads over reg's limits are answered by reg, with JSON; a head past hyper's buffer gets
/// hyper's bare 431 and the connection is closed; nothing is lost.
#[tokio::test]
async fn oversized_heads_are_json_errors() {
    let registry = Registry::new();
    registry
        .set("kept", Json::parse(b"1").unwrap(), None, None)
        .unwrap();
    let server = start(registry.clone()).await;
    let addr = server.local_addr();

    let long_target = format!("/consumer?names={}", "a,".repeat(31_000));
    let answer = get(addr, &long_target).await;
    assert_eq!(answer.status, 414);
    assert!(
        answer.error().starts_with("request target is 62"),
        "{}",
        answer.error()
    );

    let mut conn = Conn::open(addr).await;
    send_big_head(&mut conn, 9).await;
    let answer = within("431", conn.read_response()).await.unwrap();
    assert_eq!(answer.status, 431);
    assert_eq!(
        answer.error(),
        "request head is over the limit of 65536 bytes"
    );

    // Far past hyper's own buffer bound (the head limit plus 8 KiB; hyper checks it between
    // reads, so a little more may arrive): hyper answers, without a body.
    let mut conn = Conn::open(addr).await;
    send_big_head(&mut conn, 40).await;
    // hyper closes with the rest of the head unread, which may reset the connection before
    // the answer is read; when it is read, it is hyper's.
    if let Some(answer) = within("bare 431", conn.read_response()).await {
        assert_eq!(answer.status, 431);
        assert!(answer.body.is_empty(), "{answer:?}");
    }

    assert_eq!(get(addr, "/healthz").await.status, 200);
    assert!(registry.get("kept").is_some());
}

/// RFC 9112 §3.2: an HTTP/1.1 request has exactly one `Host`; HTTP/1.0 needs none.
#[tokio::test]
async fn http11_needs_exactly_one_host() {
    let server = start(Registry::new()).await;
    let addr = server.local_addr();
    for head in [
        "GET /healthz HTTP/1.1\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    ] {
        let mut conn = Conn::open(addr).await;
        conn.write(head.as_bytes()).await;
        let answer = within("400", conn.read_response()).await.unwrap();
        assert_eq!(answer.status, 400, "{head:?}");
        assert!(answer
            .error()
            .starts_with("an http/1.1 request needs exactly one host header"));
    }
    let mut conn = Conn::open(addr).await;
    conn.write(b"GET /healthz HTTP/1.0\r\n\r\n").await;
    let answer = within("1.0", conn.read_response()).await.unwrap();
    assert_eq!(answer.status, 200);
}

/// A client that writes its whole 2 MiB body before reading (Python's urllib) still reads the
/// 413: the server reads and drops the rest of the body after answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_413_reaches_a_client_that_writes_everything_first() {
    let server = start(Registry::new()).await;
    let addr = server.local_addr();
    let answer = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(STEP)).unwrap();
        let body = vec![b' '; 2 * 1024 * 1024];
        let head = format!(
            "PUT /provider HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream
            .write_all(&body)
            .expect("the server closed before the body was sent");
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&answer).contains("}") {
            let n = stream.read(&mut buf).unwrap();
            assert!(n > 0, "closed without an answer");
            answer.extend_from_slice(&buf[..n]);
        }
        // The body was drained: the connection still serves.
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut again = Vec::new();
        while !String::from_utf8_lossy(&again).contains("\"ok\"") {
            let n = stream.read(&mut buf).unwrap();
            assert!(n > 0, "closed after the 413");
            again.extend_from_slice(&buf[..n]);
        }
        String::from_utf8(answer).unwrap()
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("content-type: application/json"));
    assert!(answer.ends_with(r#"{"error":"request body is over the limit of 1048576 bytes"}"#));
}

/// Go reg: `name=` and `names=,,,` name the register `""`, never every register; the same
/// for change requests.
#[tokio::test]
async fn an_empty_name_is_not_every_register() {
    let registry = Registry::new();
    registry
        .set("a", Json::parse(b"1").unwrap(), None, None)
        .unwrap();
    registry.request("a", Json::parse(b"2").unwrap()).unwrap();
    let server = start(registry.clone()).await;
    let addr = server.local_addr();
    for target in ["/consumer?name=", "/consumer?names=,,,", "/consumer?names="] {
        let answer = get(addr, target).await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.json(), json(r#"{"registers":{}}"#), "{target}");
    }
    let answer = get(addr, "/provider?name=").await;
    assert_eq!(answer.json(), json(r#"{"registers":{}}"#));
    // The request for `a` is still pending: no parameter at all takes it.
    let answer = get(addr, "/provider").await;
    assert_eq!(answer.json(), json(r#"{"registers":{"a":{"value":2}}}"#));
    assert_eq!(
        get(addr, "/consumer").await.json(),
        json(r#"{"registers":{"a":{"value":1}}}"#)
    );
}

/// `"ttl": null` is the default TTL (documented), like an absent `ttl`.
#[tokio::test]
async fn a_null_ttl_is_the_default() {
    let registry = Registry::new();
    let server = start(registry.clone()).await;
    let addr = server.local_addr();
    let answer = put(
        addr,
        "/provider",
        r#"{"registers":{"n":{"value":1,"ttl":null}}}"#,
    )
    .await;
    assert_eq!(answer.status, 204);
    let left = registry.expires_in("n").unwrap();
    assert!(
        left <= registry.default_ttl() && left > Duration::from_secs(5),
        "{left:?}"
    );
}

/// Beyond `max_watch_streams`, a new stream is refused with a JSON 503.
#[tokio::test]
async fn watch_streams_are_capped() {
    let config = ServerConfig {
        max_watch_streams: 2,
        ..ServerConfig::default()
    };
    let server = start_with(Registry::new(), config).await;
    let addr = server.local_addr();
    let _one = Events::open(addr, "/v1/watch", &[]).await;
    let two = Events::open(addr, "/v1/watch", &[]).await;
    let refused = get(addr, "/v1/watch").await;
    assert_eq!(refused.status, 503);
    assert_eq!(
        refused.error(),
        "too many watch streams: the limit of 2 are open"
    );
    drop(two);
    until_async("a stream slot is free", || async {
        let mut conn = Conn::open(addr).await;
        conn.send("GET", "/v1/watch", None).await;
        matches!(conn.read_head().await, Some((200, _)))
    })
    .await;
}

/// A watcher that stops reading does not make the server queue every event for it: the
/// stream stops reading the feed, falls behind, and when the client reads again it gets
/// `event: resync` and the current state — the last value — not every write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_watcher_is_resynced_not_buffered() {
    let registry = Registry::builder().feed_capacity(64).build();
    let server = start(registry.clone()).await;
    let addr = server.local_addr();
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let mut watcher = Conn::from_stream(stream);
    watcher.send("GET", "/v1/watch?name=big", None).await;
    let (status, _) = within("watch head", watcher.read_head()).await.unwrap();
    assert_eq!(status, 200);

    // 2,000 writes of 8 KB: 16 MB of events, far beyond what the stream may queue.
    let value = format!("\"{}\"", "x".repeat(8_000));
    let writes = 2_000;
    for i in 0..writes {
        let json = Json::parse(format!("[{i},{value}]").as_bytes()).unwrap();
        registry.set("big", json, None, None).unwrap();
    }
    let last = registry.revision();

    // Now read everything: a resync notice, and the stream ends up at the last write.
    let mut events = Events::from_conn(watcher);
    let mut seen = 0;
    let mut resynced = false;
    loop {
        let raw = within("next event", events.next()).await.unwrap();
        if raw.event == "resync" {
            resynced = true;
            continue;
        }
        seen += 1;
        if raw.id == last.to_string() {
            assert_eq!(raw.data["value"][0], serde_json::json!(writes - 1));
            break;
        }
    }
    assert!(resynced, "no resync event");
    assert!(
        seen < writes,
        "every one of {writes} events was queued ({seen} seen)"
    );
}

/// Register names are client input: in log lines they are escaped, so a name cannot forge a
/// line or send terminal escapes to the operator's terminal.
#[tokio::test]
async fn names_cannot_forge_log_lines() {
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);
    impl Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let server = start(Registry::new()).await;
    let addr = server.local_addr();
    let forged = r#"x\nINFO forged line\u001b[31m\u001b]0;title\u0007"#;
    let body = format!(r#"{{"registers":{{"{forged}":{{"value":1}}}}}}"#);
    assert_eq!(put(addr, "/provider", &body).await.status, 204);
    let bad = format!(r#"{{"registers":{{"{forged}":{{"value":1,"ttl":"x\n"}}}}}}"#);
    assert_eq!(put(addr, "/provider", &bad).await.status, 400);
    let delete = "/provider?name=x%0AINFO%20forged%20line%1B%5B31m";
    assert_eq!(request(addr, "DELETE", delete, None).await.status, 204);

    let log = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(log.contains("register created"), "{log}");
    assert!(!log.contains('\u{1b}'), "raw escape in the log: {log:?}");
    assert!(!log.contains('\u{7}'), "raw BEL in the log: {log:?}");
    for line in log.lines() {
        assert!(!line.starts_with("INFO forged"), "forged line: {log}");
    }
}
