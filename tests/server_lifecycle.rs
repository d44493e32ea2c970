//! The server's life: clients that go away, shutdown, connection limits and timeouts, and the
//! `reg serve` binary (signals, bind failure).
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use reg::server::ServerConfig;
use reg::Registry;

/// 1,000 parked polls (consumer and provider) whose sockets close are released within a
/// second, and a provider poll that ended that way took nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_sockets_release_their_parked_polls() {
    let registry = Registry::new();
    let server = start(registry.clone()).await;
    let addr = server.local_addr();
    const POLLS: usize = 1000;
    let mut conns = Vec::with_capacity(POLLS);
    for i in 0..POLLS {
        let mut conn = Conn::open(addr).await;
        let target = if i % 2 == 0 {
            format!("/consumer?name=c{i}&wait=60s")
        } else {
            "/provider?name=p&wait=60s".to_owned()
        };
        conn.send("GET", &target, None).await;
        conns.push(conn);
    }
    until("all polls parked", || parked(&registry) == POLLS).await;
    assert_eq!(registry.stats().parked_takes, POLLS / 2);

    let closed_at = Instant::now();
    drop(conns);
    until("all polls released", || parked(&registry) == 0).await;
    let released_in = closed_at.elapsed();
    assert!(
        released_in < Duration::from_secs(1),
        "released in {released_in:?}"
    );
    assert_eq!(registry.watch_slots(), 0, "watch slots leaked");

    // The dead provider polls took nothing: a request made now is there for the next one.
    let response = put(addr, "/consumer", r#"{"registers":{"p":{"value":1}}}"#).await;
    assert_eq!(response.status, 202);
    let response = get(addr, "/provider?name=p").await;
    assert_eq!(response.json(), json(r#"{"registers":{"p":{"value":1}}}"#));
}

/// Shutdown answers every parked poll at once — consumers with current values, providers
/// with `{}` — loses no pending request, ends watch streams, and drains.
#[tokio::test]
async fn shutdown_answers_parked_polls_and_drains() {
    let registry = Registry::new();
    let server = start(registry.clone()).await;
    let addr = server.local_addr();
    assert_eq!(
        put(addr, "/provider", r#"{"registers":{"a":{"value":1}}}"#)
            .await
            .status,
        204
    );
    assert_eq!(
        put(addr, "/consumer", r#"{"registers":{"q":{"value":"x"}}}"#)
            .await
            .status,
        202
    );
    let mut consumer = Conn::open(addr).await;
    consumer
        .send("GET", "/consumer?name=a&wait=60s", None)
        .await;
    let mut provider = Conn::open(addr).await;
    provider
        .send("GET", "/provider?name=p&wait=60s", None)
        .await;
    let mut events = Events::open(addr, "/v1/watch", &[]).await;
    until("polls parked", || parked(&registry) == 2).await;

    server.shutdown();
    let answer = within("consumer answered", consumer.read_response())
        .await
        .unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json(), json(r#"{"registers":{"a":{"value":1}}}"#));
    let answer = within("provider answered", provider.read_response())
        .await
        .unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json(), json(r#"{"registers":{}}"#));
    assert_eq!(within("stream ends", events.next()).await, None);
    within("drained", server.wait()).await.unwrap();
    assert_eq!(
        registry.stats().pending_requests,
        1,
        "a pending request was lost"
    );
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

/// Beyond the connection cap, a new connection waits in the backlog and is served when
/// another closes.
#[tokio::test]
async fn connections_beyond_the_cap_wait_in_the_backlog() {
    let registry = Registry::new();
    let config = ServerConfig {
        max_connections: 2,
        // The per-address cap would otherwise be a quarter of that; this test is about the
        // global cap.
        max_connections_per_ip: Some(2),
        ..ServerConfig::default()
    };
    let server = start_with(registry.clone(), config).await;
    let addr = server.local_addr();
    let mut first = Conn::open(addr).await;
    first.send("GET", "/consumer?name=a&wait=60s", None).await;
    let mut second = Conn::open(addr).await;
    second.send("GET", "/consumer?name=b&wait=60s", None).await;
    until("polls parked", || parked(&registry) == 2).await;

    let mut third = Conn::open(addr).await;
    third.send("GET", "/healthz", None).await;
    assert!(third.is_silent_for(Duration::from_millis(200)).await);
    drop(first);
    let answer = within("third served", third.read_response()).await.unwrap();
    assert_eq!(answer.status, 200);
    drop(second);
}

/// A connection that sends nothing, or stops half-way through a request head, is closed; a
/// body that stops half-way is answered 408; a parked poll outlives the idle timeout.
#[tokio::test]
async fn idle_and_slow_connections_time_out() {
    let config = ServerConfig {
        idle_timeout: Duration::from_millis(300),
        header_read_timeout: Duration::from_millis(300),
        ..ServerConfig::default()
    };
    let server = start_with(Registry::new(), config).await;
    let addr = server.local_addr();

    let mut silent = Conn::open(addr).await;
    assert!(silent.is_closed_by_server().await);

    let mut slow_head = Conn::open(addr).await;
    slow_head
        .write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await;
    assert!(slow_head.is_closed_by_server().await);

    let mut slow_body = Conn::open(addr).await;
    slow_body
        .write(b"PUT /provider HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"reg")
        .await;
    let answer = within("408", slow_body.read_response()).await.unwrap();
    assert_eq!(answer.status, 408);

    // Idle after a response: closed too.
    let mut keep_alive = Conn::open(addr).await;
    assert_eq!(
        keep_alive.request("GET", "/healthz", None).await.status,
        200
    );
    assert!(keep_alive.is_closed_by_server().await);

    // Busy with a long poll longer than the idle timeout: not closed.
    let mut poll = Conn::open(addr).await;
    let answer = within(
        "poll answered",
        poll.request("GET", "/consumer?name=x&wait=700ms", None),
    )
    .await;
    assert_eq!(answer.status, 200);
}

/// Starts `reg serve` on an ephemeral port; returns the child and its address.
fn spawn_binary(extra: &[&str]) -> (std::process::Child, std::net::SocketAddr) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_reg"))
        .args(["serve", "--addr", "127.0.0.1:0", "--log-level", "warn"])
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .unwrap();
    (child, addr)
}

/// `reg serve` answers parked polls on SIGTERM and exits 0.
#[tokio::test]
async fn binary_exits_zero_on_sigterm_after_answering_polls() {
    let (mut child, addr) = spawn_binary(&[]);
    assert_eq!(
        put(addr, "/provider", r#"{"registers":{"a":{"value":"v"}}}"#)
            .await
            .status,
        204
    );
    let mut poll = Conn::open(addr).await;
    poll.send("GET", "/consumer?name=a&wait=60s", None).await;
    // The poll is parked once the server has read it; a request on another connection
    // that gets its answer proves the server is up, and the metrics show the parked poll.
    until_async("poll parked", || async {
        get(addr, "/metrics")
            .await
            .text()
            .contains("reg_parked_consumer_polls 1\n")
    })
    .await;
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let answer = within("poll answered", poll.read_response()).await.unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json(), json(r#"{"registers":{"a":{"value":"v"}}}"#));
    let exit = within("exit", async {
        loop {
            if let Some(exit) = child.try_wait().unwrap() {
                break exit;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(exit.code(), Some(0));
}

/// `reg serve` on an address in use fails at once with a clear message and status 1.
#[test]
fn binary_bind_failure_exits_one() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let started = Instant::now();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_reg"))
        .args(["serve", "--addr", &addr])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "stderr: {stderr}"
    );
    assert!(started.elapsed() < STEP);
    drop(taken);
}

#[test]
fn binary_version() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_reg"))
        .arg("version")
        .output()
        .unwrap();
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        format!("reg {}", env!("CARGO_PKG_VERSION"))
    );
}
