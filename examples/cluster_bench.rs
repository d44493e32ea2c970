//! Cluster figures beside a single node's, measured in the same run:
//!
//! * wake: a write on node A, a long poll parked on node B answered (p50/p99), against the
//!   same write-then-wake on one stand-alone node;
//! * write throughput: `WRITERS` concurrent writers, each changing its own register, through
//!   the cluster (spread over its nodes) against the stand-alone node.
//!
//! ```sh
//! cargo run --release --example cluster_bench -- http://A,http://B,http://C http://SINGLE
//! ```
//!
//! (`.ci/run` does not run it; `docs/benchmarks.md#cluster` says how the figures were made.)
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use reg::client::{ReadQuery, RegisterWrite, WireClient};
use reg::Json;

const WAKES: usize = 300;
const WRITERS: usize = 32;
const WRITE_FOR: Duration = Duration::from_secs(5);

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at]
}

/// Writes on `writer`, each answered by a poll parked on `watcher`: the latencies.
async fn wakes(writer: &WireClient, watcher: &WireClient, name: &str) -> Vec<Duration> {
    let mut out = Vec::with_capacity(WAKES);
    writer
        .set(&[RegisterWrite::new(name, Json::from(0i64)).ttl(Duration::from_secs(3600))])
        .await
        .unwrap();
    // The watcher's replica has the register before the first round.
    loop {
        let read = watcher.read(&ReadQuery::names([name])).await.unwrap();
        if !read.registers.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for i in 1..=WAKES {
        let index = watcher
            .read(&ReadQuery::names([name]))
            .await
            .unwrap()
            .index
            .unwrap_or(0);
        let watcher = watcher.clone();
        let poll_name = name.to_owned();
        let poll = tokio::spawn(async move {
            let read = watcher
                .read(
                    &ReadQuery::names([poll_name.as_str()])
                        .index(index)
                        .wait(Duration::from_secs(10)),
                )
                .await
                .unwrap();
            (Instant::now(), read.index.unwrap_or(0))
        });
        // Let the poll park (it answers either way; a poll that was not parked yet would
        // only make the figure smaller, never larger).
        tokio::time::sleep(Duration::from_millis(5)).await;
        let start = Instant::now();
        writer
            .set(&[RegisterWrite::new(name, Json::from(i as i64)).ttl(Duration::from_secs(3600))])
            .await
            .unwrap();
        let (woken, seen) = poll.await.unwrap();
        assert!(seen > index);
        out.push(woken.saturating_duration_since(start));
    }
    out.sort();
    out
}

/// Changes per second through `clients` (writers spread over them).
async fn throughput(clients: &[WireClient], tag: &str) -> f64 {
    let deadline = Instant::now() + WRITE_FOR;
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let client = clients[w % clients.len()].clone();
        let name = format!("bench/{tag}/{w}");
        tasks.push(tokio::spawn(async move {
            let mut count = 0u64;
            while Instant::now() < deadline {
                client
                    .set(&[RegisterWrite::new(&name, Json::from(count as i64))
                        .ttl(Duration::from_secs(3600))])
                    .await
                    .unwrap();
                count += 1;
            }
            count
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await.unwrap();
    }
    total as f64 / WRITE_FOR.as_secs_f64()
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let cluster: Vec<WireClient> = args
        .next()
        .expect("usage: cluster_bench http://A,http://B[,…] http://SINGLE")
        .split(',')
        .map(|url| WireClient::new(url).unwrap())
        .collect();
    let single = WireClient::new(&args.next().expect("the stand-alone node's URL")).unwrap();
    assert!(cluster.len() >= 2, "give at least two cluster nodes");

    let across = wakes(&cluster[0], &cluster[1], "bench/wake/cluster").await;
    let alone = wakes(&single, &single, "bench/wake/single").await;
    println!("wake: write on one node -> poll answered ({WAKES} writes each)");
    println!("| | p50 | p99 |");
    println!("| --- | --- | --- |");
    println!(
        "| cluster, write on A, poll on B | {} | {} |",
        ms(percentile(&across, 0.5)),
        ms(percentile(&across, 0.99))
    );
    println!(
        "| one node, write and poll on it | {} | {} |",
        ms(percentile(&alone, 0.5)),
        ms(percentile(&alone, 0.99))
    );
    println!(
        "| ratio | {:.1}x | {:.1}x |",
        percentile(&across, 0.5).as_secs_f64() / percentile(&alone, 0.5).as_secs_f64(),
        percentile(&across, 0.99).as_secs_f64() / percentile(&alone, 0.99).as_secs_f64()
    );

    let one = throughput(std::slice::from_ref(&single), "single").await;
    let many = throughput(&cluster, "cluster").await;
    println!();
    println!("writes that change a register, {WRITERS} writers, {WRITE_FOR:?} each");
    println!("| one node | {one:.0}/s |");
    println!("| cluster ({} nodes) | {many:.0}/s |", cluster.len());
    println!("| ratio | {:.2}x |", many / one);
}
