//! Memory per register: the RSS delta over 1,000,000 registers with a 64-byte name and a
//! 256-byte value, beside the same data in a `HashMap<String, String>`.
//!
//! Run in release: `cargo run --release --example memory` (Linux: reads `/proc/self/status`).
//!
//! Each store is measured in a fresh child process (this binary re-run with `reg` or
//! `hashmap`), so memory the allocator kept from one measurement cannot flatter the other.
//! The registry is measured as it runs: every register's timer is on the TTL wheel (one expiry
//! pass after the writes moves them there, as the background thread would within 10 ms), and
//! the values are distinct allocations, as they are when they arrive over the network.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use reg::{Json, ManualClock, Registry};

/// Registers stored (the figure).
const REGISTERS: usize = 1_000_000;
/// Bytes in each register name.
const NAME_LEN: usize = 64;
/// Bytes in each value, in its canonical (stored) form: a JSON string, quotes included.
const VALUE_LEN: usize = 256;
/// The target.
const TARGET_BYTES: f64 = 1024.0;

/// The resident set size of this process in bytes, from `/proc/self/status`.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

/// Register `i`'s name: exactly `NAME_LEN` bytes.
fn name(i: usize) -> String {
    // "site-NN.rack-NNN.sensor." is 24 bytes; the index pads the rest.
    let name = format!(
        "site-{:02}.rack-{:03}.sensor.{i:0>width$}",
        i % 17,
        i % 251,
        width = NAME_LEN - 24
    );
    assert_eq!(name.len(), NAME_LEN);
    name
}

/// Register `i`'s value as JSON text: a string of exactly `VALUE_LEN` bytes, quotes included.
fn value_text(i: usize) -> String {
    format!("\"{i:0>width$}\"", width = VALUE_LEN - 2)
}

/// Stores the registers in a registry and prints the RSS delta in bytes.
fn measure_registry() -> u64 {
    let clock = ManualClock::new();
    let registry = Registry::builder()
        .clock(clock.clone())
        .manual_expiry()
        .build();
    let ttl = Some(Duration::from_secs(3600));
    let before = rss_bytes();
    for i in 0..REGISTERS {
        let value = Json::parse(value_text(i).as_bytes()).unwrap();
        assert_eq!(value.as_bytes().len(), VALUE_LEN);
        registry.set(&name(i), value, None, ttl).unwrap();
    }
    clock.advance(Duration::from_millis(10));
    assert_eq!(registry.expire_due(), 0);
    let after = rss_bytes();
    assert_eq!(registry.len(), REGISTERS);
    after.saturating_sub(before)
}

/// Stores the same data in a `HashMap<String, String>` and prints the RSS delta in bytes.
fn measure_hashmap() -> u64 {
    let mut map = HashMap::new();
    let before = rss_bytes();
    for i in 0..REGISTERS {
        map.insert(name(i), value_text(i));
    }
    let after = rss_bytes();
    assert_eq!(map.len(), REGISTERS);
    after.saturating_sub(before)
}

/// Runs this binary again with `which` and returns the RSS delta it measured.
fn in_child(which: &str) -> u64 {
    let output = Command::new(std::env::current_exe().unwrap())
        .arg(which)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "child `{which}` failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn main() {
    match std::env::args().nth(1).as_deref() {
        Some("reg") => println!("{}", measure_registry()),
        Some("hashmap") => println!("{}", measure_hashmap()),
        _ => {
            let reg = in_child("reg") as f64 / REGISTERS as f64;
            let map = in_child("hashmap") as f64 / REGISTERS as f64;
            let payload = (NAME_LEN + VALUE_LEN) as f64;
            println!(
                "{REGISTERS} registers, {NAME_LEN}-byte name + {VALUE_LEN}-byte value \
                 ({payload} bytes of payload each); RSS delta per register:"
            );
            println!(
                "  reg::Registry               {reg:7.1} B  (overhead {:5.1} B; target <= {TARGET_BYTES} B: {})",
                reg - payload,
                if reg <= TARGET_BYTES { "met" } else { "NOT met" }
            );
            println!(
                "  HashMap<String, String>     {map:7.1} B  (overhead {:5.1} B)",
                map - payload
            );
            println!("  ratio reg / HashMap         {:7.2}", reg / map);
        }
    }
}
