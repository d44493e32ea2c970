//! Hostile clients against a running `reg serve`, and what they cost it: the figures of the
//! README's "Hardening" section.
//!
//! ```text
//! reg serve --addr 127.0.0.1:18080 &
//! cargo run --release --example hostile -- 127.0.0.1:18080 slow-heads 2000
//! cargo run --release --example hostile -- 127.0.0.1:18080 stuck-watchers 200
//! ```
//!
//! * `slow-heads N`: N connections each send 60 KB of an unfinished request head (under the
//!   64 KiB head limit) and hold it; the server's RSS is read (from `/metrics`) before, while
//!   they are open, and 5 s and 30 s after they closed.
//! * `stuck-watchers N`: a writer PUTs 2 KB values as fast as it can for 5 s, first with no
//!   watcher (the baseline), then with N `/v1/watch` streams open that never read; reports
//!   both write rates and the RSS with the stuck watchers.
//!
//! Client sockets are spread over 127.0.0.2–127.0.0.250 so that they stay under the
//! per-address connection cap. Traffic goes to the given address only, bounded in count and
//! time.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, scenario, count] = args.as_slice() else {
        return Err("usage: hostile <addr> slow-heads|stuck-watchers <count>".into());
    };
    let addr: SocketAddr = addr.parse()?;
    let count: usize = count.parse()?;
    match scenario.as_str() {
        "slow-heads" => slow_heads(addr, count).await,
        "stuck-watchers" => stuck_watchers(addr, count).await,
        other => Err(format!("unknown scenario {other:?}").into()),
    }
}

/// Connects from 127.0.0.(2 + i % 249), with a small receive buffer when `small` is set.
async fn connect(addr: SocketAddr, i: usize, small: bool) -> Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    let source = format!("127.0.0.{}:0", 2 + i % 249);
    socket.bind(source.parse()?)?;
    if small {
        socket.set_recv_buffer_size(4096)?;
    }
    Ok(socket.connect(addr).await?)
}

/// One request on a fresh connection; the whole response as text.
async fn request(addr: SocketAddr, head: &str, body: &[u8]) -> Result<String> {
    let mut stream = TcpStream::connect(addr).await?;
    let mut bytes = head.as_bytes().to_vec();
    bytes.extend_from_slice(body);
    stream.write_all(&bytes).await?;
    let mut out = Vec::new();
    stream.read_to_end(&mut out).await?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// The server's RSS in MB, from its `/metrics`.
async fn rss_mb(addr: SocketAddr) -> Result<f64> {
    let text = request(
        addr,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"",
    )
    .await?;
    let line = text
        .lines()
        .find(|l| l.starts_with("process_resident_memory_bytes "))
        .ok_or("no process_resident_memory_bytes in /metrics")?;
    let bytes: f64 = line.rsplit(' ').next().unwrap_or("0").parse()?;
    Ok(bytes / 1e6)
}

async fn slow_heads(addr: SocketAddr, count: usize) -> Result<()> {
    let before = rss_mb(addr).await?;
    let mut head = b"GET /consumer?name=x HTTP/1.1\r\nHost: x\r\nX-Pad: ".to_vec();
    head.resize(60_000, b'a');
    let mut conns = Vec::with_capacity(count);
    let started = Instant::now();
    for i in 0..count {
        let mut stream = connect(addr, i, false).await?;
        stream.write_all(&head).await?;
        conns.push(stream);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let open = rss_mb(addr).await?;
    println!(
        "slow-heads: {count} connections with 60 KB unfinished heads opened in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    drop(conns);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = rss_mb(addr).await?;
    tokio::time::sleep(Duration::from_secs(25)).await;
    let later = rss_mb(addr).await?;
    println!(
        "server RSS: {before:.1} MB before, {open:.1} MB while open (+{:.1} MB, {:.1} KB per \
         connection); after they closed: {after:.1} MB at 5 s, {later:.1} MB at 30 s \
         ({:+.0} % of before)",
        open - before,
        (open - before) * 1e3 / count as f64,
        (later - before) / before * 100.0
    );
    Ok(())
}

/// PUTs 2 KB values to 100 registers on one keep-alive connection for `time`; returns PUT/s.
async fn write_rate(addr: SocketAddr, time: Duration) -> Result<f64> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let pad = "x".repeat(2_000);
    let started = Instant::now();
    let mut done = 0u64;
    let mut buf = vec![0u8; 4096];
    while started.elapsed() < time {
        let body = format!(
            r#"{{"registers":{{"w{}":{{"value":[{done},"{pad}"],"ttl":"1m"}}}}}}"#,
            done % 100
        );
        let head = format!(
            "PUT /provider HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        // A 204 has no body: read until the end of its head.
        let mut got = Vec::new();
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                return Err("server closed the writer's connection".into());
            }
            got.extend_from_slice(&buf[..n]);
        }
        if !got.starts_with(b"HTTP/1.1 204") {
            return Err(format!("PUT answered {:?}", String::from_utf8_lossy(&got)).into());
        }
        done += 1;
    }
    Ok(done as f64 / started.elapsed().as_secs_f64())
}

async fn stuck_watchers(addr: SocketAddr, count: usize) -> Result<()> {
    let time = Duration::from_secs(5);
    let before = rss_mb(addr).await?;
    let baseline = write_rate(addr, time).await?;
    let mut watchers = Vec::with_capacity(count);
    for i in 0..count {
        let mut stream = connect(addr, i, true).await?;
        stream
            .write_all(b"GET /v1/watch HTTP/1.1\r\nHost: x\r\n\r\n")
            .await?;
        watchers.push(stream);
    }
    // First the streams' queues and socket buffers fill, then they are stuck: both phases.
    let filling = write_rate(addr, time).await?;
    let with = write_rate(addr, time).await?;
    let stuck = rss_mb(addr).await?;
    println!(
        "stuck-watchers: {count} streams that never read; writer {with:.0} PUT/s vs {baseline:.0} \
         PUT/s with none ({:.0} %); {filling:.0} PUT/s ({:.0} %) in the first {} s, while their \
         buffers filled",
        with / baseline * 100.0,
        filling / baseline * 100.0,
        time.as_secs()
    );
    println!(
        "server RSS: {before:.1} MB before, {stuck:.1} MB with the stuck watchers (+{:.1} MB, \
         {:.0} KB per stream)",
        stuck - before,
        (stuck - before) * 1e3 / count as f64
    );
    drop(watchers);
    Ok(())
}
