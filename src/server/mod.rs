//! `reg serve`: reg's REST API over HTTP/1.1 (and HTTP/2 cleartext) on hyper.
//!
//! The wire contract is `docs/rest-api.md`: Part A exactly, Part B in full. This module
//! only translates HTTP to [`Registry`] calls and back; every rule about registers, waits and
//! change requests lives in the registry.
//!
//! ```no_run
//! # async fn run() -> Result<(), reg::server::ServerError> {
//! use reg::server::{Server, ServerConfig};
//! use reg::Registry;
//!
//! let server = Server::builder()
//!     .registry(Registry::new())
//!     .config(ServerConfig::default())
//!     .bind("127.0.0.1:0")
//!     .await?;
//! println!("listening on {}", server.local_addr());
//! let handle = server.shutdown_handle();
//! tokio::spawn(async move {
//!     let _ = tokio::signal::ctrl_c().await;
//!     handle.shutdown();
//! });
//! server.wait().await
//! # }
//! ```
//!
//! # Layout
//! * `mod.rs` — the builder, the running server and its shutdown.
//! * `conn.rs` — the accept loop and one connection: the connection cap, `TCP_NODELAY`, the
//!   header-read and idle timeouts, graceful close.
//! * `routes.rs` — path and method → handler, error → response, request metrics.
//! * `consumer.rs`, `provider.rs`, `watch.rs` (SSE), `ops.rs` (`/healthz`, `/version`,
//!   `/metrics`) — the handlers.
//! * `query.rs`, `body.rs` — request input → validated values; `response.rs` — JSON out,
//!   straight from the stored canonical bytes.
//! * `error.rs` — [`ServerError`] and its one status mapping; `config.rs` — the limits;
//!   `metrics.rs` — counters and the Prometheus text.
//!
//! # Lifecycle
//! [`RunningServer::shutdown`] (or a [`ShutdownHandle`]) stops accepting, makes `/healthz`
//! answer 503, shuts the registry down — which answers every parked long poll at once
//! (consumers get current values, providers get `{}` and lose nothing) and ends every watch
//! stream — and asks every connection to close after its current response. Connections still
//! open after [`ServerConfig::drain_timeout`] are closed. [`RunningServer::wait`] resolves
//! when all of that is done.
//!
//! # A client that goes away
//! hyper's HTTP/1 dispatcher keeps reading the socket while a response is pending (it looks
//! for EOF on a busy connection: `Conn::poll_read_keep_alive` → `mid_message_detect_eof`, as
//! long as half-close is off, its default). When the peer closes, the read returns EOF, the
//! connection future fails and is dropped, and with it the handler's future: a parked
//! [`Wait`](crate::Wait) unregisters from its watch slots and a parked
//! [`TakeRequests`](crate::TakeRequests) is dropped having taken nothing (both are cancel safe).
//! `tests/server_lifecycle.rs` proves it with 1,000 parked polls whose sockets close. A peer
//! that vanishes without a FIN is found by TCP keep-alive ([`ServerConfig::tcp_keepalive`]),
//! and every poll ends within [`ServerConfig::max_wait`] anyway. (HTTP/2: a reset stream or a
//! closed connection drops the stream's future the same way.)

pub mod audit;
pub mod auth;
mod body;
mod config;
mod conn;
pub mod consul;
mod consumer;
mod error;
mod metrics;
mod ops;
mod provider;
mod query;
mod response;
mod routes;
mod services;
#[cfg(feature = "tls")]
pub mod tls;
mod ui;
mod watch;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch as signal;
use tokio::task::JoinHandle;

pub use config::{
    ServerConfig, DEFAULT_BACKLOG, DEFAULT_DRAIN_TIMEOUT, DEFAULT_HEADER_READ_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_HEAD_BYTES,
    DEFAULT_MAX_NAMES, DEFAULT_MAX_NAME_LEN, DEFAULT_MAX_URI_BYTES, DEFAULT_MAX_WAIT,
    DEFAULT_MAX_WATCH_STREAMS, DEFAULT_SSE_KEEP_ALIVE, DEFAULT_TCP_KEEPALIVE,
};
pub use error::ServerError;

use crate::store::Registry;
use metrics::Metrics;

/// The HTTP server. Start one with [`Server::builder`].
#[derive(Debug)]
pub struct Server {
    _private: (),
}

impl Server {
    /// A builder: give it a registry and a config, then bind.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }
}

/// Configures and starts a [`Server`].
#[derive(Debug, Default)]
pub struct ServerBuilder {
    registry: Option<Registry>,
    config: ServerConfig,
    auth: auth::Auth,
    audit: Option<Arc<audit::AuditLog>>,
    #[cfg(feature = "tls")]
    tls: Option<Arc<tls::Tls>>,
}

impl ServerBuilder {
    /// The registry to serve (default: a new [`Registry`]).
    pub fn registry(mut self, registry: Registry) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Limits and timeouts (default: [`ServerConfig::default`]).
    pub fn config(mut self, config: ServerConfig) -> Self {
        self.config = config;
        self
    }

    /// Who may do what (default: [`Auth::open`](auth::Auth::open), everyone everything).
    pub fn auth(mut self, auth: auth::Auth) -> Self {
        self.auth = auth;
        self
    }

    /// Records every change, change request, take and refusal in `audit`.
    pub fn audit(mut self, audit: Arc<audit::AuditLog>) -> Self {
        self.audit = Some(audit);
        self
    }

    /// Serves HTTPS with `tls` (keep the `Arc` to [`reload`](tls::Tls::reload) it).
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: Arc<tls::Tls>) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Binds `addr` and starts serving. `addr` is `host:port`, `ip:port`, `[ipv6]:port`, or
    /// `:port` for every interface (IPv6 and IPv4 where the host has both). Port 0 picks a
    /// free port: see [`RunningServer::local_addr`].
    ///
    /// # Errors
    /// [`ServerError::InvalidAddress`] when `addr` does not parse or resolve,
    /// [`ServerError::Bind`] when it cannot be bound.
    pub async fn bind(self, addr: &str) -> Result<RunningServer, ServerError> {
        let listener = conn::bind(addr, self.config.backlog).await?;
        self.serve(listener)
    }

    /// Starts serving on a listener bound elsewhere. Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// [`ServerError::Io`] when the listener's address cannot be read.
    pub fn serve(self, listener: TcpListener) -> Result<RunningServer, ServerError> {
        let local_addr = listener.local_addr()?;
        let registry = self.registry.unwrap_or_default();
        if let Some(audit) = &self.audit {
            let _after = registry.shared_ref().add_sink(audit.sink());
        }
        let mut shared = Shared::new(registry, self.config);
        shared.auth = arc_swap::ArcSwap::from_pointee(self.auth);
        shared.audit = self.audit;
        #[cfg(feature = "tls")]
        {
            shared.tls = self.tls;
        }
        let shared = Arc::new(shared);
        let task = tokio::spawn(conn::accept_loop(Arc::clone(&shared), listener));
        tokio::spawn(metrics::log_summaries(Arc::clone(&shared)));
        tracing::info!(addr = %local_addr, "listening");
        Ok(RunningServer {
            local_addr,
            handle: ShutdownHandle { shared },
            task: Some(task),
        })
    }
}

/// What every connection and handler shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) registry: Registry,
    pub(crate) config: ServerConfig,
    pub(crate) metrics: Metrics,
    /// Set once shutdown began: `/healthz` answers 503.
    pub(crate) draining: AtomicBool,
    /// Flips to `true` on shutdown: the accept loop stops and connections close gracefully.
    pub(crate) drain: signal::Sender<bool>,
    /// hyper's connection builder, configured once.
    pub(crate) builder: auto::Builder<TokioExecutor>,
    /// Open connections per client address, for the per-address cap.
    pub(crate) peers: conn::Peers,
    /// Discovery's catalog, attached on the first discovery request.
    discovery: std::sync::OnceLock<crate::discovery::Discovery>,
    /// Who may do what; replaced whole by [`ShutdownHandle::set_auth`] (SIGHUP).
    pub(crate) auth: arc_swap::ArcSwap<auth::Auth>,
    /// Where requests, takes and refusals are recorded (changes come through its sink).
    pub(crate) audit: Option<Arc<audit::AuditLog>>,
    /// HTTPS, when configured.
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<Arc<tls::Tls>>,
    /// Correlation ids for requests that bring none: `<boot>-<n>`.
    pub(crate) request_ids: routes::RequestIds,
}

impl Shared {
    fn new(registry: Registry, config: ServerConfig) -> Self {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // Timeouts are the connection watchdog's (see `conn.rs` for why not hyper's timer).
        // hyper's read (and write) buffer is bounded a little above reg's own head limit, so
        // that a head over reg's limit still parses and is answered by reg with a JSON 431,
        // while a connection can never pin more than this for an unfinished head.
        builder
            .http1()
            .keep_alive(true)
            .half_close(false)
            .header_read_timeout(None)
            .max_buf_size(hyper_buffer(&config));
        if !config.http2 {
            builder = builder.http1_only();
        }
        Shared {
            registry,
            metrics: Metrics::new(),
            draining: AtomicBool::new(false),
            drain: signal::channel(false).0,
            builder,
            peers: conn::Peers::default(),
            discovery: std::sync::OnceLock::new(),
            auth: arc_swap::ArcSwap::from_pointee(auth::Auth::open()),
            audit: None,
            #[cfg(feature = "tls")]
            tls: None,
            request_ids: routes::RequestIds::new(),
            config,
        }
    }

    /// Discovery over this server's registry (its catalog attached on first use).
    pub(crate) fn discovery(&self) -> crate::discovery::Discovery {
        self.discovery
            .get_or_init(|| crate::discovery::Discovery::new(&self.registry))
            .clone()
    }

    /// Discovery waits parked now (0 before the catalog is attached).
    pub(crate) fn service_polls(&self) -> usize {
        self.discovery
            .get()
            .map_or(0, crate::discovery::Discovery::parked)
    }

    /// Whether connections speak TLS.
    pub(crate) fn is_tls(&self) -> bool {
        #[cfg(feature = "tls")]
        {
            self.tls.is_some()
        }
        #[cfg(not(feature = "tls"))]
        {
            false
        }
    }

    pub(crate) fn is_draining(&self) -> bool {
        // Ordering: Acquire pairs with the Release store in `ShutdownHandle::shutdown`.
        self.draining.load(Ordering::Acquire)
    }
}

/// Slack hyper may buffer beyond [`ServerConfig::max_head_bytes`]: 8 KiB, hyper's own
/// initial read size, so that one read past the limit still completes a head.
const HEAD_SLACK: usize = 8 * 1024;

/// hyper's buffer bound for `config`: the head limit plus slack, never under hyper's minimum
/// (8 KiB) or the URI limit.
fn hyper_buffer(config: &ServerConfig) -> usize {
    config
        .max_head_bytes
        .max(config.max_uri_bytes)
        .saturating_add(HEAD_SLACK)
        .max(8 * 1024)
}

/// A server that is running. Dropping it shuts the server down (as [`shutdown`]
/// (Self::shutdown) does) without waiting for the drain.
#[derive(Debug)]
pub struct RunningServer {
    local_addr: SocketAddr,
    handle: ShutdownHandle,
    /// The accept loop; it ends once shutdown has drained every connection.
    task: Option<JoinHandle<()>>,
}

impl RunningServer {
    /// The address the server listens on (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The registry served.
    pub fn registry(&self) -> &Registry {
        &self.handle.shared.registry
    }

    /// A cloneable handle that can start the shutdown from elsewhere (a signal handler).
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.handle.clone()
    }

    /// Starts a graceful shutdown; see the [module docs](self#lifecycle). Idempotent.
    pub fn shutdown(&self) {
        self.handle.shutdown();
    }

    /// Resolves when the server has stopped: after a shutdown, once every connection closed
    /// or the drain timeout closed it. Without a shutdown it runs until one comes.
    ///
    /// # Errors
    /// [`ServerError::Task`] if the server task panicked.
    pub async fn wait(mut self) -> Result<(), ServerError> {
        let Some(task) = self.task.take() else {
            return Ok(());
        };
        task.await.map_err(|e| ServerError::Task(e.to_string()))
    }

    /// [`shutdown`](Self::shutdown), then [`wait`](Self::wait).
    ///
    /// # Errors
    /// As [`wait`](Self::wait).
    pub async fn shutdown_and_wait(self) -> Result<(), ServerError> {
        self.shutdown();
        self.wait().await
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if self.task.is_some() {
            self.handle.shutdown();
        }
    }
}

/// Entry points for fuzz targets: the parsers of request input, with the default limits.
#[doc(hidden)]
pub mod fuzzing {
    use std::time::Duration;

    use super::{body, query, ServerConfig, ServerError};
    use crate::json::Json;
    use crate::store::Revision;

    /// One validated body entry.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Entry {
        /// The register name.
        pub name: String,
        /// The value, canonical.
        pub value: Json,
        /// The metadata, canonical; `None` when absent or null.
        pub metadata: Option<Json>,
        /// The TTL; `None` for the default.
        pub ttl: Option<Duration>,
    }

    /// A parsed query string.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Query {
        /// Names, in the order given.
        pub names: Vec<String>,
        /// The clamped wait; `None` for none.
        pub wait: Option<Duration>,
        /// `index`.
        pub index: Option<Revision>,
        /// `detail`.
        pub detail: bool,
    }

    /// Parses a `PUT /provider` or `PUT /consumer` body.
    pub fn parse_body(bytes: &[u8]) -> Result<Vec<Entry>, ServerError> {
        let entries = body::parse_entries(bytes, &ServerConfig::default())?;
        Ok(entries
            .into_iter()
            .map(|e| Entry {
                name: e.name,
                value: e.value,
                metadata: e.metadata,
                ttl: e.ttl,
            })
            .collect())
    }

    /// What [`serve_chunks`] saw.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Served {
        /// Every byte the server wrote, in order.
        pub output: Vec<u8>,
        /// The server closed the connection within the time allowed (1 s). A watch stream is
        /// the one answer that legitimately outlives the client's half-close: hyper stops
        /// reading once a pipelined request waits behind the stream, and the client may still
        /// be reading.
        pub closed: bool,
    }

    /// Serves one HTTP connection, with the real routes and the default limits (the longest
    /// `wait` cut to 1 ms), over an in-memory pipe: the client writes `chunks` one by one,
    /// then closes its sending side; returns what the server wrote until it closed, or until
    /// 1 s passed.
    pub fn serve_chunks(chunks: &[&[u8]]) -> Served {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
        else {
            return Served {
                output: Vec::new(),
                closed: false,
            };
        };
        runtime.block_on(async {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let registry = crate::store::Registry::builder().manual_expiry().build();
            let config = ServerConfig {
                max_wait: Duration::from_millis(1),
                ..ServerConfig::default()
            };
            let shared = super::Arc::new(super::Shared::new(registry, config));
            let (mut client, server) = tokio::io::duplex(64 * 1024);
            let peer = std::net::SocketAddr::from(([127, 0, 0, 1], 1));
            let task = tokio::spawn(super::conn::serve_io(
                shared,
                server,
                super::conn::Peer::plain(peer),
            ));
            let (mut reader, mut writer) = tokio::io::split(&mut client);
            let write = async {
                for chunk in chunks {
                    if writer.write_all(chunk).await.is_err() {
                        break;
                    }
                    tokio::task::yield_now().await;
                }
                let _ = writer.shutdown().await;
            };
            let mut output = Vec::new();
            let read = async {
                let _ = reader.read_to_end(&mut output).await;
            };
            let closed = tokio::time::timeout(Duration::from_secs(1), async {
                tokio::join!(write, read);
            })
            .await
            .is_ok();
            task.abort();
            Served { output, closed }
        })
    }

    /// Parses a query string (without the `?`).
    pub fn parse_query(raw: &str) -> Result<Query, ServerError> {
        let q = query::Query::parse(Some(raw), &ServerConfig::default())?;
        Ok(Query {
            names: q.names,
            wait: q.wait,
            index: q.index,
            detail: q.detail,
        })
    }
}

/// Starts a server's graceful shutdown; cheap to clone.
#[derive(Debug, Clone)]
pub struct ShutdownHandle {
    shared: Arc<Shared>,
}

impl ShutdownHandle {
    /// Starts a graceful shutdown; see the [module docs](self#lifecycle). Idempotent.
    pub fn shutdown(&self) {
        let shared = &self.shared;
        // Ordering: Release pairs with the Acquire load in `Shared::is_draining`.
        if shared.draining.swap(true, Ordering::AcqRel) {
            return;
        }
        tracing::info!("shutting down: answering parked polls, draining connections");
        shared.registry.shutdown();
        shared.drain.send_replace(true);
    }

    /// Puts new access rules in force (`reg serve` reads its `--auth` file again on SIGHUP):
    /// requests that arrive from now on are checked against them; those already admitted
    /// finish under the old ones.
    pub fn set_auth(&self, auth: auth::Auth) {
        self.shared.auth.store(Arc::new(auth));
    }

    /// Whether shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.shared.is_draining()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::metrics::Route;

    #[test]
    fn healthz_is_503_while_shutting_down() {
        let shared = Arc::new(Shared::new(Registry::new(), ServerConfig::default()));
        let status = |shared: &Shared| match ops::handle(shared, Route::Healthz, None) {
            Ok(response) => response.status(),
            Err(error) => error.status(),
        };
        assert_eq!(status(&shared), hyper::StatusCode::OK);
        ShutdownHandle {
            shared: Arc::clone(&shared),
        }
        .shutdown();
        assert_eq!(status(&shared), hyper::StatusCode::SERVICE_UNAVAILABLE);
        assert!(shared.registry.is_shut_down());
    }
}
