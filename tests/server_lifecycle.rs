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
