//! Durability's core figures, each beside an in-memory baseline measured in the same run:
//! writing N registers (256-byte values) to an in-memory registry and to a persistent one
//! (`batch`), the disk a register takes against the memory it takes, and how long
//! recovering them takes.
//!
//! ```text
//! cargo run --release --example recovery -- --registers 1000000
//! ```
//!
//! Writes through the library (no HTTP: `reg bench write --url` measures the server), one
//! writer thread per core, into a temporary directory under `$TMPDIR` that it removes.
//! Memory is the process's resident set before and after the in-memory load (Linux).

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use reg::persist::{Persist, SyncPolicy};
use reg::{Json, Registry};

fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn disk(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

/// Writes `n` registers from `threads` threads; returns the rate.
fn load(registry: &Registry, n: usize, threads: usize, value: &Json) -> f64 {
    let started = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..threads {
            let registry = registry.clone();
            let value = value.clone();
            scope.spawn(move || {
                for i in (t..n).step_by(threads) {
                    let name = format!("fleet.device.{i:07}.reading");
                    registry
                        .set(&name, value.clone(), None, Some(Duration::from_secs(3600)))
                        .unwrap();
                }
            });
        }
    });
    n as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let mut registers = 1_000_000usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--registers" => registers = args.next().and_then(|v| v.parse().ok()).unwrap(),
            other => panic!("unknown option {other}; use --registers N"),
        }
    }
    let threads = std::thread::available_parallelism().map_or(2, usize::from);
    let value = Json::parse(format!("\"{}\"", "x".repeat(254)).as_bytes()).unwrap();
    println!("{registers} registers, 256-byte values, {threads} writer threads");

    let before = rss();
    let memory = Registry::builder().manual_expiry().build();
    let in_memory = load(&memory, registers, threads, &value);
    let per_register_memory = rss().saturating_sub(before) as f64 / registers as f64;
    drop(memory);
    println!(
        "in memory:         {in_memory:>10.0} sets/s; {per_register_memory:.0} B of RSS a register"
    );

    let root = tempfile::tempdir().unwrap();
    // `always` makes a server wait for the disk before it answers: `reg bench write --url`
    // against `reg serve --sync always` measures that. Through the library a set does not wait.
    let label = "batch (100 ms)";
    let policy = SyncPolicy::default();
    let dir = root.path().join("batch");
    let registry = Registry::builder()
        .manual_expiry()
        .open(Persist::new(&dir).sync(policy))
        .unwrap();
    let rate = load(&registry, registers, threads, &value);
    drop(registry); // writes out what is pending
    let bytes = disk(&dir);
    println!(
        "persistent, {label:<14} {rate:>10.0} sets/s = {:.2}x in memory; disk {:.0} B a register = {:.2}x its memory",
        rate / in_memory,
        bytes as f64 / registers as f64,
        bytes as f64 / registers as f64 / per_register_memory
    );
    let started = Instant::now();
    let restored = Registry::builder()
        .manual_expiry()
        .open(Persist::new(&dir).sync(policy))
        .unwrap();
    let took = started.elapsed();
    assert_eq!(restored.len(), registers);
    println!(
        "  recovery: {:.2} s to serving {} registers ({:.1}x the in-memory load's {:.2} s)",
        took.as_secs_f64(),
        restored.len(),
        took.as_secs_f64() / (registers as f64 / in_memory),
        registers as f64 / in_memory
    );
}
