//! Server limits and timeouts: every number the contract bounds, with its default.

use std::time::Duration;

/// Default request body limit: 1 MiB (the REST contract, Part B "Limits").
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
/// Default limit on names in one request (query names or body registers): 10,000 (the
/// contract).
pub const DEFAULT_MAX_NAMES: usize = 10_000;
/// Default longest register name: 1,024 bytes (the contract; the registry's default too).
pub const DEFAULT_MAX_NAME_LEN: usize = crate::store::DEFAULT_MAX_NAME_LEN;
/// Default longest long poll: 10 minutes; a longer `wait` is clamped to it (the contract).
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(600);
/// Default cap on open connections: 16,384, enough for the 10,000 parked polls the
/// benchmarks hold, well under a typical `ulimit -n` of 65,536 once raised.
pub const DEFAULT_MAX_CONNECTIONS: usize = 16_384;
/// Default limit on reading a request head (and a request body) once its first byte arrived:
/// 10 s, the slow-client bound Go servers commonly use for `ReadHeaderTimeout`.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default limit on a connection with no request in flight and no bytes arriving: 60 s, a
/// little over the 30–60 s most HTTP client pools keep idle connections.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default longest graceful drain on shutdown: 10 s (the contract's server lifecycle).
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Default interval between SSE keep-alive comments: 15 s (the contract).
pub const DEFAULT_SSE_KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Default listen backlog: 1,024 connections waiting beyond the connection cap (Linux clamps
/// it to `net.core.somaxconn`).
pub const DEFAULT_BACKLOG: u32 = 1024;
/// Default longest request target (path and query): 60 KiB. Under hyper's own URI limit
/// (65,534 bytes, where it answers a bare 414) so that reg answers first, with a JSON 414; GET
/// names are bounded by it (10,000 names fit when they average under 6 bytes: bodies carry
/// the full 10,000 of any length).
pub const DEFAULT_MAX_URI_BYTES: usize = 60 * 1024;
/// Default longest request head (request line and headers): 64 KiB, the most any reg client
/// sends by far, and the same order as nginx's `large_client_header_buffers` (4 × 8 KiB) and
/// Go's `DefaultMaxHeaderBytes` (1 MiB) bracket. Over it: a JSON 431.
pub const DEFAULT_MAX_HEAD_BYTES: usize = 64 * 1024;
/// Default cap on concurrent watch streams (`GET /v1/watch`): 1,024. A stream whose client
/// stopped reading holds at most about 260 KiB (see `watch.rs`), so the cap bounds what
/// stuck watchers can pin to about 260 MiB. Beyond it: 503 with a JSON error.
pub const DEFAULT_MAX_WATCH_STREAMS: usize = 1024;
/// Default TCP keep-alive idle time: 60 s, so a peer that vanished without a FIN (half-open)
/// is found while its poll is parked.
pub const DEFAULT_TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// Limits and timeouts of a [`Server`](super::Server). Build it from [`Default`] and override
/// fields:
///
/// ```
/// use reg::server::ServerConfig;
/// use std::time::Duration;
///
/// let config = ServerConfig {
///     max_wait: Duration::from_secs(60),
///     ..ServerConfig::default()
/// };
/// assert_eq!(config.max_body_bytes, 1024 * 1024);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Largest request body in bytes; a larger one is answered 413.
    pub max_body_bytes: usize,
    /// Most names in one request (query names, or registers in a body); more is 400.
    pub max_names: usize,
    /// Longest register name in bytes; longer is 400. Keep the registry's own limit at least
    /// this high, or a write the server accepted can fail in the registry.
    pub max_name_len: usize,
    /// Longest `wait`; a longer one is clamped to this.
    pub max_wait: Duration,
    /// Most connections served at once; beyond it, new connections wait in the listen
    /// backlog and are accepted as others close.
    pub max_connections: usize,
    /// Most connections from one IP address at once (like nginx's `limit_conn`); beyond it a
    /// new connection from that address is answered 503 and closed, so one client cannot take
    /// every slot of [`max_connections`](Self::max_connections). `None`: a quarter of
    /// `max_connections` (at least 1).
    pub max_connections_per_ip: Option<usize>,
    /// Longest request target (path and query) in bytes; longer is a JSON 414.
    pub max_uri_bytes: usize,
    /// Longest request head (request line and headers) in bytes; longer is a JSON 431. hyper
    /// buffers at most this plus 8 KiB of a head; a head longer still gets hyper's own bare 431.
    pub max_head_bytes: usize,
    /// Most concurrent watch streams; beyond it `GET /v1/watch` is 503.
    pub max_watch_streams: usize,
    /// Longest time to read a request head once its first byte arrived, and a request body
    /// once its head was read (HTTP/1). A slow client is disconnected (head) or answered 408
    /// (body). Zero is off.
    pub header_read_timeout: Duration,
    /// Longest time a connection may sit with no request in flight and no bytes arriving,
    /// including a new connection that never sends anything. Zero is off.
    pub idle_timeout: Duration,
    /// Longest graceful drain on shutdown; connections still open after it are closed.
    pub drain_timeout: Duration,
    /// Interval between SSE keep-alive comments on `/v1/watch`. Zero is off.
    pub sse_keep_alive: Duration,
    /// Listen backlog passed to `listen(2)`.
    pub backlog: u32,
    /// TCP keep-alive idle time on accepted sockets (`None`: off).
    pub tcp_keepalive: Option<Duration>,
    /// Also serve HTTP/2 over cleartext (prior knowledge), detected per connection. Off by
    /// default: reg's clients speak HTTP/1.1, and the detection costs memory where reg needs it
    /// most — measured with 10,000 parked long polls, 18.0 KB of RSS per parked poll with
    /// detection against 14.1 KB without (`reg serve` vs `reg serve --http2`, see the README).
    pub http2: bool,
    /// Serve the dashboard at `/ui/` (on by default; `reg serve --no-ui` turns it off). It
    /// holds no data: its requests go through the API, with the caller's token.
    pub ui: bool,
}

impl ServerConfig {
    /// The per-address connection cap in force: [`max_connections_per_ip`]
    /// (Self::max_connections_per_ip), or a quarter of the global cap.
    pub fn connections_per_ip(&self) -> usize {
        self.max_connections_per_ip
            .unwrap_or(self.max_connections / 4)
            .max(1)
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_names: DEFAULT_MAX_NAMES,
            max_name_len: DEFAULT_MAX_NAME_LEN,
            max_wait: DEFAULT_MAX_WAIT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_ip: None,
            max_uri_bytes: DEFAULT_MAX_URI_BYTES,
            max_head_bytes: DEFAULT_MAX_HEAD_BYTES,
            max_watch_streams: DEFAULT_MAX_WATCH_STREAMS,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            sse_keep_alive: DEFAULT_SSE_KEEP_ALIVE,
            backlog: DEFAULT_BACKLOG,
            tcp_keepalive: Some(DEFAULT_TCP_KEEPALIVE),
            http2: false,
            ui: true,
        }
    }
}
