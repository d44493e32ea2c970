//! The accept loop and the life of one connection.
//!
//! # Invariants
//!
//! * **Connection cap.** The accept loop acquires a semaphore permit *before* it accepts; the
//!   permit lives as long as the connection's task. So at most `max_connections` connections
//!   are served, and beyond that new ones wait in the kernel's listen backlog instead of being
//!   accepted and served half-way.
//! * **Per-address cap** ([`Peers`]): after the accept (the peer is known only then) a
//!   connection whose IP address already has [`ServerConfig::connections_per_ip`]
//!   (super::ServerConfig::connections_per_ip) open is answered 503 and closed, giving its
//!   global permit back at once, as nginx's `limit_conn` does. The count is taken under one
//!   short mutex per accept and per close; a [`PeerSlot`] gives it back on drop.
//! * **Timeouts** are one watchdog per connection, polled in the connection's own task:
//!   - *idle*: no request in flight and no request bytes arriving for `idle_timeout` — also a
//!     new connection that never sends a byte, and an idle HTTP/2 connection;
//!   - *header read* (HTTP/1): a request head that started arriving but is not complete
//!     within `header_read_timeout`.
//!
//!   hyper 1.x has only `http1::Builder::header_read_timeout` (with `TokioTimer`). In the
//!   hyper locked here (1.12) that one timer starts whenever the connection waits for a head,
//!   so it also runs while a keep-alive connection sits idle between requests and cannot give
//!   an idle timeout longer than the header timeout (hyper PR #3828); and hyper-util's
//!   `auto` builder applies no timer at all while it reads the first bytes to choose HTTP/1
//!   or HTTP/2, so a connection that never sends anything would be held forever. The
//!   watchdog covers both, with hyper's timer off.
//! * **Activity bookkeeping** ([`Activity`]): the service marks a request in flight when hyper
//!   calls it (the head is complete) and clears the mark when its future — or, for a watch
//!   stream, its body — is dropped; the I/O wrapper notes the first byte read while nothing is
//!   in flight, and wakes the watchdog ([`Activity::rearm`]) so that it moves from the idle
//!   deadline to the (earlier) header deadline. A connection that is busy is never timed out: a long poll is bounded by
//!   `max_wait`, a vanished peer by TCP keep-alive.
//! * **TLS** (`tls.rs`): the handshake runs in the connection's task, bounded by the
//!   header-read timeout (else the idle timeout); the watchdog starts once it is done, on the
//!   decrypted stream. A connection over an address's cap is closed without an answer (a
//!   plaintext 503 would be a protocol error to a TLS client).
//! * **Graceful shutdown**: on the drain signal the accept loop stops and drops the listener,
//!   every connection gets hyper's `graceful_shutdown` (idle ones close at once, busy ones
//!   after their response), and connections still open after `drain_timeout` are aborted.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use socket2::{Domain, Protocol, SockRef, Socket, TcpKeepalive, Type};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::server::error::ServerError;
use crate::server::{routes, Shared};

/// Pause after an accept error such as running out of file descriptors, so the loop does not
/// spin while the condition lasts: 100 ms, short enough to go unnoticed once it clears.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// How often the watchdog looks at a connection that has a request in flight (or whose
/// deadline is further away): a minute, rare enough to cost nothing.
const RECHECK_BUSY: Duration = Duration::from_secs(60);

/// Resolves `addr` (see [`ServerBuilder::bind`](super::ServerBuilder::bind)) and binds the
/// first address that works.
pub(crate) async fn bind(addr: &str, backlog: u32) -> Result<TcpListener, ServerError> {
    let invalid = |reason: String| ServerError::InvalidAddress {
        addr: addr.to_owned(),
        reason,
    };
    let candidates: Vec<SocketAddr> = if let Some(port) = addr.strip_prefix(':') {
        let port: u16 = port
            .parse()
            .map_err(|_| invalid(format!("invalid port {port:?}")))?;
        // Every interface: dual-stack IPv6 where the host has it, else IPv4.
        vec![
            SocketAddr::from(([0u16; 8], port)),
            SocketAddr::from(([0u8; 4], port)),
        ]
    } else if let Ok(socket_addr) = addr.parse::<SocketAddr>() {
        vec![socket_addr]
    } else {
        tokio::net::lookup_host(addr)
            .await
            .map_err(|e| invalid(e.to_string()))?
            .collect()
    };
    let mut last_error = None;
    for candidate in candidates {
        match listen(candidate, backlog) {
            Ok(listener) => return Ok(TcpListener::from_std(listener)?),
            Err(error) => last_error = Some(error),
        }
    }
    Err(ServerError::Bind {
        addr: addr.to_owned(),
        error: last_error
            .unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address resolved")),
    })
}

fn listen(addr: SocketAddr, backlog: u32) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        socket.set_only_v6(false)?;
    }
    // A restarted server can bind while old connections sit in TIME_WAIT.
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    Ok(socket.into())
}

/// Accepts connections until the drain signal, then drains them.
pub(crate) async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    let permits = Arc::new(Semaphore::new(shared.config.max_connections.max(1)));
    let mut drain = shared.drain.subscribe();
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            biased;
            _ = drain.wait_for(|draining| *draining) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = accept(&listener, &permits) => accepted,
        };
        match accepted {
            Ok((stream, peer, permit)) => match shared.peers.admit(peer.ip(), &shared) {
                Some(slot) => {
                    connections.spawn(serve(Arc::clone(&shared), stream, peer, (permit, slot)));
                }
                None => {
                    drop(permit);
                    // Ordering: Relaxed: a counter for metrics.
                    shared
                        .metrics
                        .refused_per_ip
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%peer, "refused: too many connections from this address");
                    // Over TLS a plaintext 503 would read as a protocol error: just close.
                    if !shared.is_tls() {
                        connections.spawn(refuse(stream, shared.config.connections_per_ip()));
                    }
                }
            },
            Err(error) if is_per_connection(&error) => {
                tracing::debug!(%error, "accept failed");
            }
            Err(error) => {
                tracing::warn!(%error, "accept failed; pausing");
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
            }
        }
    }
    drop(listener);
    tracing::debug!(open = connections.len(), "stopped accepting; draining");
    let drained = tokio::time::timeout(shared.config.drain_timeout, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = connections.len(),
            "drain timeout: closing the connections still open"
        );
        connections.shutdown().await;
    }
    tracing::info!("server stopped");
}

/// A permit, then a connection: the cap is enforced before the accept.
async fn accept(
    listener: &TcpListener,
    permits: &Arc<Semaphore>,
) -> io::Result<(TcpStream, SocketAddr, OwnedSemaphorePermit)> {
    let permit = Arc::clone(permits)
        .acquire_owned()
        .await
        .map_err(|_| io::Error::other("connection semaphore closed"))?;
    let (stream, peer) = listener.accept().await?;
    Ok((stream, peer, permit))
}

/// Errors that concern one connection only (the peer reset it before we accepted it).
fn is_per_connection(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    )
}

/// How long a refused connection is given to read its 503 before it is closed: 1 s.
const REFUSE_TIME: Duration = Duration::from_secs(1);

/// Answers a connection over its address's cap with a JSON 503 and closes it. The request is
/// not read: the answer goes out at once, then what the client sends is read and dropped
/// until it closes or [`REFUSE_TIME`] passes, so that closing does not reset the connection
/// before the client read the answer.
async fn refuse(mut stream: TcpStream, limit: usize) {
    let error = ServerError::TooManyConnections { limit };
    let body = crate::server::response::error(&error.to_string());
    let mut answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\nretry-after: 1\r\n\r\n",
        body.len()
    )
    .into_bytes();
    answer.extend_from_slice(&body);
    let _ = tokio::time::timeout(REFUSE_TIME, async {
        stream.write_all(&answer).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 1024];
        while stream.read(&mut sink).await? > 0 {}
        io::Result::Ok(())
    })
    .await;
}

/// What a served connection holds until it closes: its global permit and its address's slot.
type Admission = (OwnedSemaphorePermit, PeerSlot);

/// Serves one TCP connection until it closes, times out, or is drained.
async fn serve(shared: Arc<Shared>, stream: TcpStream, peer: SocketAddr, _admission: Admission) {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%peer, %error, "cannot set TCP_NODELAY");
    }
    if let Some(time) = shared.config.tcp_keepalive {
        let keepalive = TcpKeepalive::new().with_time(time);
        if let Err(error) = SockRef::from(&stream).set_tcp_keepalive(&keepalive) {
            tracing::debug!(%peer, %error, "cannot set TCP keep-alive");
        }
    }
    #[cfg(feature = "tls")]
    if let Some(tls) = shared.tls.as_ref().map(|tls| tls.acceptor()) {
        let limit = handshake_timeout(&shared.config);
        let stream = match tokio::time::timeout(limit, tls.accept(stream)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => {
                // Ordering: Relaxed: a counter for metrics.
                shared.metrics.tls_failures.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%peer, %error, "TLS handshake failed");
                return;
            }
            Err(_) => {
                shared.metrics.tls_failures.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%peer, "TLS handshake timed out");
                return;
            }
        };
        let identity = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|certs| certs.first())
            .and_then(crate::server::tls::identity);
        serve_io(
            shared,
            stream,
            Peer {
                addr: peer,
                identity,
            },
        )
        .await;
        return;
    }
    serve_io(shared, stream, Peer::plain(peer)).await;
}

/// How long a TLS handshake may take: the header-read time (a client that connects and
/// stalls is dropped like one that stalls in its head), else the idle time, else the default
/// header-read time: never unbounded, since the watchdog only starts after it.
#[cfg(feature = "tls")]
fn handshake_timeout(config: &crate::server::ServerConfig) -> Duration {
    [config.header_read_timeout, config.idle_timeout]
        .into_iter()
        .find(|t| !t.is_zero())
        .unwrap_or(crate::server::DEFAULT_HEADER_READ_TIMEOUT)
}

/// Who is on the other end of a connection.
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    /// The client's address.
    pub(crate) addr: SocketAddr,
    /// The identity in its verified client certificate (mTLS), if it sent one.
    pub(crate) identity: Option<Arc<str>>,
}

impl Peer {
    /// A client over plain TCP.
    pub(crate) fn plain(addr: SocketAddr) -> Self {
        Self {
            addr,
            identity: None,
        }
    }
}

/// Serves one connection over any byte stream (a TCP socket, a TLS stream; an in-memory pipe
/// in the fuzz target) until it closes, times out, or is drained.
pub(crate) async fn serve_io<I>(shared: Arc<Shared>, stream: I, peer: Peer)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = Arc::new(peer);
    let _open = OpenConnection::new(&shared);
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(WatchedIo {
        inner: stream,
        activity: Arc::clone(&activity),
        first_read: true,
    });
    let service = {
        let shared = Arc::clone(&shared);
        let activity = Arc::clone(&activity);
        let peer = Arc::clone(&peer);
        service_fn(move |request| {
            // Called when the request head is complete: the request is in flight from here.
            let busy = Busy::new(&activity);
            let shared = Arc::clone(&shared);
            let peer = Arc::clone(&peer);
            async move {
                Ok::<_, std::convert::Infallible>(
                    routes::handle(&shared, request, busy, &peer).await,
                )
            }
        })
    };
    let connection = shared.builder.serve_connection(io, service);
    tokio::pin!(connection);
    let watchdog = watchdog(&activity, &shared);
    tokio::pin!(watchdog);
    let mut drain = shared.drain.subscribe();
    let mut draining = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(peer = %peer.addr, %error, "connection ended with an error");
                }
                break;
            }
            reason = &mut watchdog => {
                tracing::debug!(peer = %peer.addr, reason, "closing connection");
                break;
            }
            _ = drain.wait_for(|draining| *draining), if !draining => {
                draining = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Counts an open connection in the metrics for as long as it lives.
struct OpenConnection<'a>(&'a Shared);

impl<'a> OpenConnection<'a> {
    fn new(shared: &'a Shared) -> Self {
        // Ordering: Relaxed: gauges and counters, read for metrics only.
        shared.metrics.connections.fetch_add(1, Ordering::Relaxed);
        shared.metrics.accepted.fetch_add(1, Ordering::Relaxed);
        Self(shared)
    }
}

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        // Ordering: Relaxed: a gauge.
        self.0.metrics.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Resolves with the reason when the connection has timed out (see the module invariants).
/// Sleeps until the next deadline, or until a request head starts arriving, which brings the
/// deadline forward.
async fn watchdog(activity: &Activity, shared: &Shared) -> &'static str {
    let config = &shared.config;
    loop {
        match activity.check(
            Instant::now(),
            config.idle_timeout,
            config.header_read_timeout,
        ) {
            Ok(next) => {
                tokio::select! {
                    () = tokio::time::sleep_until(next) => {}
                    () = activity.rearm.notified() => {}
                }
            }
            Err(reason) => return reason,
        }
    }
}

/// Open connections per client IP address, for the per-address cap.
#[derive(Debug, Default)]
pub(crate) struct Peers {
    /// Addresses with at least one connection open; an address leaves at zero, so the map
    /// holds no more entries than there are connections.
    open: parking_lot::Mutex<HashMap<IpAddr, usize, foldhash::fast::RandomState>>,
}

impl Peers {
    /// A slot for one more connection from `ip`, or `None` when it is at its cap.
    fn admit(&self, ip: IpAddr, shared: &Arc<Shared>) -> Option<PeerSlot> {
        let limit = shared.config.connections_per_ip();
        let mut open = self.open.lock();
        let count = open.entry(ip).or_insert(0);
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(PeerSlot {
            shared: Arc::clone(shared),
            ip,
        })
    }

    fn release(&self, ip: IpAddr) {
        let mut open = self.open.lock();
        if let Some(count) = open.get_mut(&ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&ip);
            }
        }
    }
}

/// One connection counted against its address; dropping it gives the slot back.
#[derive(Debug)]
pub(crate) struct PeerSlot {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        self.shared.peers.release(self.ip);
    }
}

/// What the watchdog needs to know about a connection. Times are milliseconds since `base`.
#[derive(Debug)]
pub(crate) struct Activity {
    base: Instant,
    /// Requests whose handler (or watch stream) is running.
    in_flight: AtomicUsize,
    /// When `in_flight` last fell to zero (or the connection was accepted).
    idle_since: AtomicU64,
    /// One more than the time the first byte arrived while nothing was in flight (the start
    /// of a request head); 0 when no head is arriving.
    head_started: AtomicU64,
    /// The connection speaks HTTP/2 (it opened with the preface), which has no request heads
    /// to time.
    http2: AtomicBool,
    /// Wakes the watchdog when a request head starts arriving: its deadline moved from the
    /// idle timeout to the header timeout, which is usually earlier.
    rearm: Notify,
}

impl Activity {
    fn new() -> Self {
        Self {
            base: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            head_started: AtomicU64::new(0),
            http2: AtomicBool::new(false),
            rearm: Notify::new(),
        }
    }

    fn ms(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base).as_millis()).unwrap_or(u64::MAX)
    }

    /// `Ok(when to look again)` or `Err(why the connection timed out)`. A zero timeout is
    /// off.
    fn check(
        &self,
        now: Instant,
        idle_timeout: Duration,
        header_timeout: Duration,
    ) -> Result<Instant, &'static str> {
        // Ordering: Acquire pairs with the Release decrement in `Busy::drop`: seeing the
        // connection idle, we see when it became idle.
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return Ok(now + RECHECK_BUSY);
        }
        let now_ms = self.ms(now);
        let ms = |d: Duration| match u64::try_from(d.as_millis()) {
            Ok(0) | Err(_) => u64::MAX,
            Ok(ms) => ms,
        };
        // Ordering: Relaxed: both are only written on this connection's task for HTTP/1 (the
        // watchdog runs there too); for HTTP/2 `idle_since` is ordered by `in_flight` above.
        let head_started = self.head_started.load(Ordering::Relaxed);
        let (deadline, reason) = if head_started > 0 && !self.http2.load(Ordering::Relaxed) {
            (
                (head_started - 1).saturating_add(ms(header_timeout)),
                "request head not received within the header read timeout",
            )
        } else {
            (
                self.idle_since
                    .load(Ordering::Relaxed)
                    .saturating_add(ms(idle_timeout)),
                "idle timeout",
            )
        };
        if now_ms >= deadline {
            Err(reason)
        } else {
            // Capped, so that an effectively infinite deadline cannot overflow an `Instant`.
            let wait = Duration::from_millis(deadline - now_ms).min(RECHECK_BUSY);
            Ok(now + wait)
        }
    }

    fn bytes_read(&self, first: &[u8], first_read: bool) {
        if first_read && first.starts_with(b"PRI") {
            // Ordering: Relaxed: written once, before any request on this connection.
            self.http2.store(true, Ordering::Relaxed);
        }
        // Ordering: Relaxed: see `check`.
        if self.in_flight.load(Ordering::Relaxed) == 0
            && self.head_started.load(Ordering::Relaxed) == 0
        {
            let now = self.ms(Instant::now()).saturating_add(1);
            self.head_started.store(now, Ordering::Relaxed);
            // A permit is stored if the watchdog is not waiting yet: it then re-checks at once.
            self.rearm.notify_one();
        }
    }
}

/// Marks a request in flight on its connection; dropping it marks the end.
#[derive(Debug)]
pub(crate) struct Busy(Arc<Activity>);

impl Busy {
    fn new(activity: &Arc<Activity>) -> Self {
        // Ordering: Relaxed: see `Activity::check`; the head is complete, so no head is
        // arriving any more.
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        activity.head_started.store(0, Ordering::Relaxed);
        Self(Arc::clone(activity))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let activity = &self.0;
        let now = activity.ms(Instant::now());
        // Ordering: Relaxed store, published by the Release decrement below.
        activity.idle_since.store(now, Ordering::Relaxed);
        activity.in_flight.fetch_sub(1, Ordering::Release);
    }
}

/// The connection's byte stream, noting for the watchdog when request bytes arrive.
struct WatchedIo<I> {
    inner: I,
    activity: Arc<Activity>,
    /// No read has returned bytes yet (to recognise the HTTP/2 preface).
    first_read: bool,
}

impl<I: AsyncRead + Unpin> AsyncRead for WatchedIo<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = result {
            let read = buf.filled().get(before..).unwrap_or_default();
            if !read.is_empty() {
                this.activity.bytes_read(read, this.first_read);
                this.first_read = false;
            }
        }
        result
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for WatchedIo<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: Duration = Duration::from_secs(60);
    const HEAD: Duration = Duration::from_secs(10);

    #[tokio::test(start_paused = true)]
    async fn idle_then_header_then_busy() {
        let activity = Arc::new(Activity::new());
        let start = activity.base;
        // A new connection that sends nothing times out after the idle timeout.
        assert_eq!(activity.check(start, IDLE, HEAD), Ok(start + IDLE));
        assert!(activity.check(start + IDLE, IDLE, HEAD).is_err());
        // Bytes arrive at 5 s: the header timeout runs from then.
        tokio::time::advance(Duration::from_secs(5)).await;
        activity.bytes_read(b"GET", true);
        let at = start + Duration::from_secs(5) + HEAD;
        assert_eq!(
            activity.check(start + Duration::from_secs(6), IDLE, HEAD),
            Ok(at)
        );
        assert!(activity.check(at, IDLE, HEAD).is_err());
        // The head completes: busy, never timed out.
        let busy = Busy::new(&activity);
        assert!(activity.check(start + IDLE * 10, IDLE, HEAD).is_ok());
        // Done at 7 s: idle from then.
        tokio::time::advance(Duration::from_secs(2)).await;
        drop(busy);
        let idle_at = start + Duration::from_secs(7) + IDLE;
        assert_eq!(
            activity.check(start + Duration::from_secs(8), IDLE, HEAD),
            Ok(idle_at)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn http2_has_no_header_timeout() {
        let activity = Arc::new(Activity::new());
        activity.bytes_read(b"PRI * HTTP/2.0", true);
        let start = activity.base;
        assert_eq!(activity.check(start + HEAD, IDLE, HEAD), Ok(start + IDLE));
    }

    #[tokio::test(start_paused = true)]
    async fn zero_timeouts_are_off() {
        let activity = Arc::new(Activity::new());
        let start = activity.base;
        let later = start + Duration::from_secs(1_000_000);
        assert_eq!(
            activity.check(later, Duration::ZERO, Duration::ZERO),
            Ok(later + RECHECK_BUSY)
        );
        activity.bytes_read(b"GET", true);
        assert!(activity
            .check(later, Duration::ZERO, Duration::ZERO)
            .is_ok());
    }
}
