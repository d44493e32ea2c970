//! A tiny HTTP/1.1 client over raw `TcpStream`s for the server tests: a request writer and a
//! response parser (content-length, chunked, or until EOF), plus server start-up helpers.
//! Raw sockets let tests hold many connections, pipeline, and close sockets abruptly.
//! `certs.rs` makes test certificates (a CA, a server, clients) with `openssl`.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

pub mod certs;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use reg::server::{RunningServer, Server, ServerConfig};
use reg::{ManualClock, Registry};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// How long any single step may take before a test fails instead of hanging.
pub const STEP: Duration = Duration::from_secs(10);

/// Fails the test if `future` takes longer than [`STEP`].
pub async fn within<F: Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(STEP, future).await {
        Ok(output) => output,
        Err(_) => panic!("timed out: {what}"),
    }
}

/// A server on 127.0.0.1:0 serving `registry`.
pub async fn start(registry: Registry) -> RunningServer {
    start_with(registry, ServerConfig::default()).await
}

pub async fn start_with(registry: Registry, config: ServerConfig) -> RunningServer {
    Server::builder()
        .registry(registry)
        .config(config)
        .bind("127.0.0.1:0")
        .await
        .unwrap()
}

/// A registry on a manual clock with manual expiry.
pub fn manual_registry() -> (Registry, ManualClock) {
    let clock = ManualClock::new();
    let registry = Registry::builder()
        .clock(clock.clone())
        .manual_expiry()
        .build();
    (registry, clock)
}

/// An HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not json ({e}): {:?}", self.text()))
    }

    /// `X-Reg-Index` as a number.
    pub fn index(&self) -> u64 {
        self.header("x-reg-index").unwrap().parse().unwrap()
    }

    /// The `error` message of a JSON error body.
    pub fn error(&self) -> String {
        assert_eq!(self.header("content-type"), Some("application/json"));
        self.json()["error"].as_str().unwrap().to_owned()
    }
}

/// One HTTP/1.1 connection.
pub struct Conn {
    pub reader: BufReader<TcpStream>,
    /// The last request sent was a HEAD: its response has no body.
    head: bool,
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        Conn::from_stream(stream)
    }

    /// A connection made elsewhere (bound to another source address, small buffers).
    pub fn from_stream(stream: TcpStream) -> Conn {
        Conn {
            reader: BufReader::new(stream),
            head: false,
        }
    }

    /// Writes raw bytes.
    pub async fn write(&mut self, bytes: &[u8]) {
        self.reader.get_mut().write_all(bytes).await.unwrap();
    }

    /// Sends a request (keep-alive) without waiting for the answer.
    pub async fn send(&mut self, method: &str, target: &str, body: Option<&[u8]>) {
        self.send_with(method, target, &[], body).await;
    }

    pub async fn send_with(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) {
        self.head = method == "HEAD";
        let mut request = format!("{method} {target} HTTP/1.1\r\nHost: test\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        if let Some(body) = body {
            request.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        request.push_str("\r\n");
        let mut bytes = request.into_bytes();
        bytes.extend_from_slice(body.unwrap_or_default());
        self.write(&bytes).await;
    }

    /// Reads the response head: status and headers. `None` at EOF.
    pub async fn read_head(&mut self) -> Option<(u16, Vec<(String, String)>)> {
        let mut line = String::new();
        if self.reader.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        let status = line.split(' ').nth(1)?.parse().ok()?;
        let mut headers = Vec::new();
        loop {
            line.clear();
            self.reader.read_line(&mut line).await.ok()?;
            let trimmed = line.trim_end();
            if trimmed.is_empty() {
                break;
            }
            let (name, value) = trimmed.split_once(':')?;
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
        Some((status, headers))
    }

    /// Reads one whole response. `None` if the server closed the connection first.
    pub async fn read_response(&mut self) -> Option<Response> {
        let (status, headers) = self.read_head().await?;
        let find = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        let mut body = Vec::new();
        if self.head {
            // No body after a HEAD.
        } else if let Some(length) = find("content-length") {
            body.resize(length.parse().unwrap(), 0);
            self.reader.read_exact(&mut body).await.ok()?;
        } else if find("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
            while let Some(chunk) = self.read_chunk().await {
                if chunk.is_empty() {
                    break;
                }
                body.extend_from_slice(&chunk);
            }
        } else if !matches!(status, 204 | 304) && !(100..200).contains(&status) {
            self.reader.read_to_end(&mut body).await.ok()?;
        }
        Some(Response {
            status,
            headers,
            body,
        })
    }

    /// Reads one chunk of a chunked body (empty: the last chunk). `None` at EOF.
    pub async fn read_chunk(&mut self) -> Option<Vec<u8>> {
        let mut line = String::new();
        if self.reader.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        let size = usize::from_str_radix(line.trim(), 16).ok()?;
        let mut chunk = vec![0; size + 2];
        self.reader.read_exact(&mut chunk).await.ok()?;
        chunk.truncate(size);
        Some(chunk)
    }

    pub async fn request(&mut self, method: &str, target: &str, body: Option<&[u8]>) -> Response {
        self.send(method, target, body).await;
        self.read_response().await.unwrap()
    }

    /// Whether the server has sent nothing (and not closed) within `window`.
    pub async fn is_silent_for(&mut self, window: Duration) -> bool {
        tokio::time::timeout(window, self.reader.fill_buf())
            .await
            .is_err()
    }

    /// Whether the server closed the connection (EOF) within [`STEP`].
    pub async fn is_closed_by_server(&mut self) -> bool {
        let mut rest = Vec::new();
        matches!(
            tokio::time::timeout(STEP, self.reader.read_to_end(&mut rest)).await,
            Ok(Ok(_)) | Ok(Err(_))
        )
    }
}

/// One request on a fresh connection.
pub async fn request(addr: SocketAddr, method: &str, target: &str, body: Option<&str>) -> Response {
    let mut conn = Conn::open(addr).await;
    within(
        &format!("{method} {target}"),
        conn.request(method, target, body.map(str::as_bytes)),
    )
    .await
}

pub async fn get(addr: SocketAddr, target: &str) -> Response {
    request(addr, "GET", target, None).await
}

pub async fn put(addr: SocketAddr, target: &str, body: &str) -> Response {
    request(addr, "PUT", target, Some(body)).await
}

/// Waits until `condition` holds, checking every millisecond, failing after [`STEP`].
pub async fn until(what: &str, mut condition: impl FnMut() -> bool) {
    within(what, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
}

/// Parked long polls (consumer + provider).
pub fn parked(registry: &Registry) -> usize {
    let stats = registry.stats();
    stats.parked_waits + stats.parked_takes
}

/// Parses a JSON text for comparisons.
pub fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap()
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub event: String,
    pub id: String,
    pub data: serde_json::Value,
}

/// Reads SSE from a streaming response, chunk by chunk, skipping comments.
pub struct Events {
    pub conn: Conn,
    buffer: String,
}

impl Events {
    /// Opens `target` and reads the response head, which must be a 200 event stream.
    pub async fn open(addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> Events {
        let mut conn = Conn::open(addr).await;
        conn.send_with("GET", target, headers, None).await;
        let (status, headers) = within("watch head", conn.read_head()).await.unwrap();
        assert_eq!(status, 200);
        assert!(headers
            .iter()
            .any(|(n, v)| n == "content-type" && v == "text/event-stream"));
        Events {
            conn,
            buffer: String::new(),
        }
    }

    /// Events of a stream whose response head `conn` has already read.
    pub fn from_conn(conn: Conn) -> Events {
        Events {
            conn,
            buffer: String::new(),
        }
    }

    /// The next event (`None` when the stream ended).
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                if block.starts_with(':') {
                    continue;
                }
                let mut event = Event {
                    event: String::new(),
                    id: String::new(),
                    data: serde_json::Value::Null,
                };
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event: ") {
                        event.event = v.to_owned();
                    } else if let Some(v) = line.strip_prefix("id: ") {
                        event.id = v.to_owned();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        event.data = serde_json::from_str(v).unwrap();
                    }
                }
                return Some(event);
            }
            let chunk = within("next event", self.conn.read_chunk()).await?;
            if chunk.is_empty() {
                return None;
            }
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    /// The next `n` events.
    pub async fn take(&mut self, n: usize) -> Vec<Event> {
        let mut events = Vec::with_capacity(n);
        for _ in 0..n {
            events.push(self.next().await.expect("stream ended early"));
        }
        events
    }
}

/// Waits until the async `condition` holds, checking every 5 ms, failing after [`STEP`].
pub async fn until_async<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    within(what, async {
        while !condition().await {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}
