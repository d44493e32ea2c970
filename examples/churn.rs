//! Memory after churn: the resident set of a running `reg serve` before, at the peak of, and
//! after 1,000,000 unique registers with a 1 s TTL have come and expired.
//!
//! ```text
//! cargo build --release
//! cargo run --release --example churn -- target/release/reg
//! ```
//!
//! Starts the given `reg` binary on `127.0.0.1:0` (a port of its choosing, read from its
//! "listening on" line), writes the registers with `PUT /provider` bodies of 1,000 registers
//! each over two keep-alive connections, waits until `reg_registers` in `/metrics` is 0 (the
//! last expiry), and then samples `VmRSS` from `/proc/<pid>/status` for 30 s. Linux only; talks
//! to 127.0.0.1 only. Options: `--registers N`, `--batch N`, `--connections N`, `--settle S`.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Options, with the issue's figures as defaults.
struct Options {
    reg: String,
    registers: usize,
    batch: usize,
    connections: usize,
    settle: Duration,
}

fn options() -> Options {
    let mut args = std::env::args().skip(1);
    let mut options = Options {
        reg: String::from("target/release/reg"),
        registers: 1_000_000,
        batch: 1_000,
        connections: 2,
        settle: Duration::from_secs(30),
    };
    while let Some(arg) = args.next() {
        let mut number = || -> usize { args.next().and_then(|v| v.parse().ok()).unwrap() };
        match arg.as_str() {
            "--registers" => options.registers = number(),
            "--batch" => options.batch = number().max(1),
            "--connections" => options.connections = number().max(1),
            "--settle" => options.settle = Duration::from_secs(number() as u64),
            _ => options.reg = arg,
        }
    }
    options
}

/// The child's resident set in MiB.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib / 1024.0
}

/// Starts `reg serve` on a port of its choosing.
fn start(reg: &str) -> Child {
    Command::new(reg)
        .args(["serve", "--addr", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start {reg}: {error}"))
}

/// The address `reg serve` listens on, from its "listening on" line.
fn listening(child: &mut Child) -> SocketAddr {
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "reg exited");
        if let Some(addr) = line.trim().strip_prefix("listening on ") {
            let addr = addr.parse().unwrap();
            // Keep draining its stdout so that it never blocks on a full pipe.
            std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
            return addr;
        }
    }
}

/// One HTTP/1.1 request on a keep-alive connection; returns the status and the body.
fn request(
    conn: &mut BufReader<TcpStream>,
    method: &str,
    path: &str,
    body: &[u8],
) -> (u16, Vec<u8>) {
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    let stream = conn.get_mut();
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut line = String::new();
    conn.read_line(&mut line).unwrap();
    let status: u16 = line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap();
    let mut length = 0;
    loop {
        line.clear();
        conn.read_line(&mut line).unwrap();
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap();
            }
        }
    }
    let mut body = vec![0; length];
    conn.read_exact(&mut body).unwrap();
    (status, body)
}

fn connect(addr: SocketAddr) -> BufReader<TcpStream> {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_nodelay(true).unwrap();
    BufReader::new(stream)
}

/// `reg_registers` from `/metrics`.
fn registers(addr: SocketAddr) -> u64 {
    let (status, body) = request(&mut connect(addr), "GET", "/metrics", b"");
    assert_eq!(status, 200);
    String::from_utf8(body)
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix("reg_registers "))
        .and_then(|value| value.trim().parse().ok())
        .unwrap()
}

/// Writes registers `from..to` in bodies of `batch`.
fn load(addr: SocketAddr, from: usize, to: usize, batch: usize) {
    let mut conn = connect(addr);
    let mut body = String::new();
    let mut start = from;
    while start < to {
        let end = (start + batch).min(to);
        body.clear();
        body.push_str(r#"{"registers":{"#);
        for i in start..end {
            if i > start {
                body.push(',');
            }
            body.push_str(&format!(r#""churn.{i:07}":{{"value":1,"ttl":"1s"}}"#));
        }
        body.push_str("}}");
        let (status, _) = request(&mut conn, "PUT", "/provider", body.as_bytes());
        assert!((200..300).contains(&status), "PUT /provider: {status}");
        start = end;
    }
}

fn main() {
    let options = options();
    let mut child = start(&options.reg);
    let addr = listening(&mut child);
    let pid = child.id();
    // Let it settle (runtime threads started, first expiry ticks run).
    std::thread::sleep(Duration::from_secs(2));
    let _ = request(&mut connect(addr), "GET", "/healthz", b"");
    let before = rss_mib(pid);
    println!("before:           {before:6.1} MiB");

    let started = Instant::now();
    let per = options.registers.div_ceil(options.connections);
    let mut peak = before;
    std::thread::scope(|scope| {
        let loaders: Vec<_> = (0..options.connections)
            .map(|c| {
                let (from, to) = (c * per, ((c + 1) * per).min(options.registers));
                scope.spawn(move || load(addr, from, to, options.batch))
            })
            .collect();
        while !loaders.iter().all(|loader| loader.is_finished()) {
            peak = peak.max(rss_mib(pid));
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    peak = peak.max(rss_mib(pid));
    println!(
        "loaded {} registers (ttl 1s) in {:.1} s; peak {peak:6.1} MiB",
        options.registers,
        started.elapsed().as_secs_f64()
    );

    // The last register expires about 1 s after its write.
    std::thread::sleep(Duration::from_millis(1_500));
    while registers(addr) > 0 {
        std::thread::sleep(Duration::from_millis(200));
    }
    let expired = Instant::now();
    println!("all expired:      {:6.1} MiB", rss_mib(pid));
    let mut after = 0.0;
    let mut last_print = Duration::ZERO;
    while expired.elapsed() < options.settle {
        std::thread::sleep(Duration::from_millis(250));
        after = rss_mib(pid);
        let elapsed = expired.elapsed();
        if elapsed - last_print >= Duration::from_secs(5) {
            last_print = elapsed;
            println!("+{:>2} s:            {after:6.1} MiB", elapsed.as_secs());
        }
    }
    println!(
        "after {} s: {after:.1} MiB = {:.2} x before ({before:.1} MiB); peak {peak:.1} MiB",
        options.settle.as_secs(),
        after / before
    );
    child.kill().unwrap();
    child.wait().unwrap();
}
