//! `GET /v1/watch?name=…&index=N`: the change feed as Server-Sent Events.
//!
//! Each change to a watched register (every register with no names) is one event:
//!
//! ```text
//! event: set
//! id: 42
//! data: {"name":"kitchen.temp","value":21.5,"metadata":{"unit":"C"},"revision":42}
//! ```
//!
//! `event` is `set`, `delete` or `expire`; `id` is the change's revision. In `set` data,
//! `metadata` is left out when empty (as in `GET /consumer`); `delete` and `expire` data carry
//! only `name` and `revision` — the register is gone, so there is no value to send.
//!
//! With `index=N` (or a `Last-Event-ID` header, which wins: it is where a reconnecting
//! client left off) the stream first replays what changed after N as the current state — a
//! `set` for each selected register changed since, and for each selected register removed
//! since (and absent now) the event its removal had live: `delete` if it was deleted,
//! `expire` if its TTL ran out — in revision order, then follows live. Without either it
//! starts live. An N above the current revision (a client of a server that restarted) replays
//! from 0. When N is older than the removal history the server keeps, a comment line says
//! removals may be missing. A keep-alive comment goes out every `sse_keep_alive` (15 s).
//!
//! # A client that reads slowly, or not at all
//! What one stream can pin is bounded: events go to the connection in chunks of at most
//! [`CHUNK_BYTES`] through a queue of [`CHANNEL_CHUNKS`] chunks (256 KiB in all), and hyper
//! buffers at most its buffer bound (the head limit plus 8 KiB) beyond that. When the queue is
//! full the stream's task lets go of its feed subscription — writers never wait for a stream,
//! and a stuck stream pins none of the feed's shared ring of events — and waits for room. A
//! stream that reads, but more slowly than the feed moves, falls behind it the same way
//! (`FeedError::Lagged`). Once the client reads again, the stream sends
//!
//! ```text
//! event: resync
//! data: {"revision":41}
//! ```
//!
//! (`revision`: the last one it was sent) and then replays what changed after it as the
//! current state, exactly like a reconnect with `Last-Event-ID: 41`: every change is
//! accounted for, intermediate values of a register are skipped. It never skips a change
//! silently. A replay is sent in chunks as the client reads, so a large one costs the
//! registers it names (shared, not copied), not its text. Concurrent streams are capped
//! ([`ServerConfig::max_watch_streams`](super::ServerConfig::max_watch_streams), 503 beyond).
//! The stream ends on shutdown or when the client goes away.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Request, Response};
use tokio::sync::mpsc;

use crate::server::auth::{Caller, NameFilter, Right};
use crate::server::conn::Busy;
use crate::server::error::ServerError;
use crate::server::query::{parse_index, Query};
use crate::server::response::{push_u64, write_str};
use crate::server::routes::ResBody;
use crate::server::Shared;
use crate::store::{
    Event, EventKind, FeedError, Register, Registry, Replay, Revision, Selector, Subscription,
};

/// How long a watch from an index a cluster's replica has not reached yet waits for it before
/// it replays everything instead.
const REPLICA_CATCH_UP: Duration = Duration::from_secs(5);

/// Chunks buffered between the feed task and the connection: a slow client holds at most this
/// many chunks (each at most [`CHUNK_BYTES`]) before the task waits: 256 KiB in all.
const CHANNEL_CHUNKS: usize = 16;
/// Largest chunk sent to the connection: 16 KiB. Events are coalesced up to it; a larger event
/// (a large value) goes out in pieces of this size.
const CHUNK_BYTES: usize = 16 * 1024;
/// The keep-alive interval when keep-alives are off (a zero interval): a day.
const KEEP_ALIVE_OFF: Duration = Duration::from_secs(24 * 60 * 60);

/// Keeps the connection marked busy and the stream counted while the response body lives.
#[derive(Debug)]
pub(crate) struct StreamGuard {
    _busy: Busy,
    shared: Arc<Shared>,
}

impl StreamGuard {
    /// Counts one more stream, or refuses it when [`ServerConfig::max_watch_streams`]
    /// (super::ServerConfig::max_watch_streams) are open.
    pub(crate) fn admit(shared: &Arc<Shared>, busy: Busy) -> Result<StreamGuard, ServerError> {
        let limit = shared.config.max_watch_streams;
        // Ordering: Relaxed: the count is its own only datum; the increment is undone when
        // over the limit, so the gauge never stays above it.
        if shared.metrics.streams.fetch_add(1, Ordering::Relaxed) >= limit {
            shared.metrics.streams.fetch_sub(1, Ordering::Relaxed);
            return Err(ServerError::TooManyStreams { limit });
        }
        Ok(StreamGuard {
            _busy: busy,
            shared: Arc::clone(shared),
        })
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        // Ordering: Relaxed: a gauge.
        self.shared.metrics.streams.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Starts a watch stream.
pub(crate) fn stream(
    shared: &Arc<Shared>,
    request: &Request<Incoming>,
    busy: Busy,
    caller: &Caller,
) -> Result<Response<ResBody>, ServerError> {
    let query = Query::parse(request.uri().query(), &shared.config)?;
    // A caller without `read` everywhere is sent only the events of registers it may read.
    let visible = caller.scope(Right::Read)?;
    let last_event_id = match request.headers().get("last-event-id") {
        Some(value) => {
            let text = value.to_str().unwrap_or("\u{fffd}");
            Some(parse_index(text.trim(), "last-event-id header")?)
        }
        None => None,
    };
    let from = last_event_id.or(query.index);
    let guard = StreamGuard::admit(shared, busy)?;
    let registry = shared.registry.clone();
    // Subscribe before replaying, so nothing between the replay and the feed is lost.
    let subscription = registry.subscribe();
    let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
    let feed = Feed {
        registry,
        selector: query.selector(),
        visible,
        subscription: Some(subscription),
        tx,
        sent: 0,
    };
    tokio::spawn(feed.run(from, shared.config.sse_keep_alive));
    Ok(event_stream(rx, guard))
}

/// The response of a Server-Sent Events stream fed by `chunks`.
pub(crate) fn event_stream(chunks: mpsc::Receiver<Bytes>, guard: StreamGuard) -> Response<ResBody> {
    let mut response = Response::new(ResBody::Stream {
        chunks,
        _guard: guard,
    });
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Tell reverse proxies (nginx) not to buffer the stream.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// The task that turns the change feed into SSE chunks for one stream.
struct Feed {
    registry: Registry,
    selector: Selector,
    /// Which selected registers the caller may see (`None`: all).
    visible: Option<NameFilter>,
    /// The feed, while the client keeps up. Let go of while the client's queue is full, so
    /// that a client that stopped reading pins no events of the feed's shared ring (up to
    /// the feed's capacity of register snapshots, whatever their size); taken again, with a
    /// resync, once the client reads.
    subscription: Option<Subscription>,
    tx: mpsc::Sender<Bytes>,
    /// The highest revision the client has been sent (or told of by the starting point):
    /// feed events at or below it are skipped.
    sent: Revision,
}

impl Feed {
    async fn run(mut self, from: Option<Revision>, keep_alive: Duration) {
        let ok = match from {
            Some(after) => {
                // An index this server has not made: a cluster's replica waits (a while) to
                // catch up to it; otherwise it is another server's, or this one's before a
                // restart: replay everything rather than skip what the client never saw.
                let after = if self.registry.reached(after, REPLICA_CATCH_UP).await {
                    after
                } else {
                    0
                };
                self.sent = after;
                let replay = self.registry.replay(&self.selector, after);
                self.send_replay(replay).await
            }
            None => {
                self.sent = self.registry.revision();
                true
            }
        };
        if ok {
            self.follow(keep_alive).await;
        }
    }

    /// Follows the feed until shutdown, the client going away, or the registry closing.
    async fn follow(mut self, keep_alive: Duration) {
        // Zero is off: one tick a day is as good as none.
        let keep_alive = Some(keep_alive)
            .filter(|k| !k.is_zero())
            .unwrap_or(KEEP_ALIVE_OFF);
        let closed = self.registry.closed();
        tokio::pin!(closed);
        let mut ticks =
            tokio::time::interval_at(tokio::time::Instant::now() + keep_alive, keep_alive);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let Some(subscription) = self.subscription.as_mut() else {
                // The client's queue was full and the feed let go of: it reads again now.
                tracing::debug!("watch stream's client caught up; resyncing");
                if !self.resync().await {
                    return;
                }
                continue;
            };
            let received = tokio::select! {
                biased;
                _ = &mut closed => return,
                _ = self.tx.closed() => return,
                received = subscription.recv() => received,
                _ = ticks.tick() => {
                    if !self.send(b": keep-alive\n\n".to_vec()).await {
                        return;
                    }
                    continue;
                }
            };
            let sent = match received {
                Ok(event) => {
                    let mut chunk = Vec::new();
                    self.push_event(&mut chunk, &event);
                    // Coalesce what else is ready into the same chunk.
                    let mut lagged = false;
                    while let Some(subscription) = self.subscription.as_mut() {
                        if chunk.len() >= CHUNK_BYTES {
                            break;
                        }
                        match subscription.try_recv() {
                            Ok(Some(event)) => self.push_event(&mut chunk, &event),
                            Ok(None) => break,
                            Err(FeedError::Lagged { .. }) => {
                                lagged = true;
                                break;
                            }
                            Err(_) => return,
                        }
                    }
                    let mut ok = self.send(chunk).await;
                    if ok && lagged {
                        ok = self.resync().await;
                    }
                    ok
                }
                Err(FeedError::Lagged { missed }) => {
                    tracing::debug!(missed, "watch stream fell behind the feed; resyncing");
                    self.resync().await
                }
                Err(_) => return,
            };
            if !sent {
                return;
            }
            ticks.reset();
        }
    }

    /// Tells the client it fell behind, then replays everything after the last revision
    /// sent. Subscribes first (again), so nothing between the replay and the feed is lost.
    async fn resync(&mut self) -> bool {
        self.subscription = Some(self.registry.subscribe());
        let mut notice = b"event: resync\ndata: {\"revision\":".to_vec();
        push_u64(&mut notice, self.sent);
        notice.extend_from_slice(b"}\n\n");
        if !self.send(notice).await {
            return false;
        }
        let replay = self.registry.replay(&self.selector, self.sent);
        self.send_replay(replay).await
    }

    /// Sends `chunk` in pieces of at most [`CHUNK_BYTES`]. When the queue is full the client
    /// is not reading: the feed is let go of (see [`Feed::subscription`]) and the piece waits
    /// for room. False when the client is gone.
    async fn send(&mut self, chunk: Vec<u8>) -> bool {
        let mut bytes = Bytes::from(chunk);
        while !bytes.is_empty() {
            let piece = bytes.split_to(bytes.len().min(CHUNK_BYTES));
            match self.tx.try_send(piece) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Closed(_)) => return false,
                Err(mpsc::error::TrySendError::Full(piece)) => {
                    self.subscription = None;
                    if self.tx.send(piece).await.is_err() {
                        return false;
                    }
                }
            }
        }
        true
    }

    /// Sends a replay as `set`, `delete` and `expire` events in revision order (a removal
    /// with the kind its live event had).
    async fn send_replay(&mut self, replay: Replay) -> bool {
        let mut chunk = Vec::new();
        if !replay.complete {
            chunk.extend_from_slice(b": removals at or before revision ");
            push_u64(&mut chunk, self.sent);
            chunk.extend_from_slice(
                b" are older than the history kept; delete and expire events may be missing\n\n",
            );
        }
        let mut sets = replay.set.iter().peekable();
        let mut removals = replay.removed.iter().peekable();
        loop {
            let set_first = match (sets.peek(), removals.peek()) {
                (Some(set), Some((_, removed, _))) => set.revision() < *removed,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            if chunk.len() >= CHUNK_BYTES && !self.send(std::mem::take(&mut chunk)).await {
                return false;
            }
            if set_first {
                if let Some(register) = sets.next() {
                    if self.sees(register.name()) {
                        push_set(&mut chunk, register);
                    }
                    self.sent = self.sent.max(register.revision());
                }
            } else if let Some((name, removed, kind)) = removals.next() {
                if self.sees(name) {
                    push_removal(&mut chunk, *kind, name, *removed);
                }
                self.sent = self.sent.max(*removed);
            }
        }
        self.sent = self.sent.max(replay.revision);
        self.send(chunk).await
    }

    /// Whether the caller may see `name`.
    fn sees(&self, name: &str) -> bool {
        self.visible.as_ref().is_none_or(|visible| visible(name))
    }

    /// Appends a live event if it is selected, visible and newer than what was sent.
    fn push_event(&mut self, chunk: &mut Vec<u8>, event: &Event) {
        if event.revision <= self.sent
            || !self.selector.contains(&event.name)
            || !self.sees(&event.name)
        {
            return;
        }
        self.sent = event.revision;
        match (&event.register, event.kind) {
            (Some(register), EventKind::Set) => push_set(chunk, register),
            (_, kind) => push_removal(chunk, kind, &event.name, event.revision),
        }
    }
}

/// Appends a `set` event for `register`.
fn push_set(out: &mut Vec<u8>, register: &Register) {
    out.extend_from_slice(b"event: set\nid: ");
    push_u64(out, register.revision());
    out.extend_from_slice(b"\ndata: {\"name\":");
    write_str(out, register.name());
    out.extend_from_slice(b",\"value\":");
    out.extend_from_slice(register.value().as_bytes());
    if let Some(metadata) = register.metadata() {
        out.extend_from_slice(b",\"metadata\":");
        out.extend_from_slice(metadata.as_bytes());
    }
    out.extend_from_slice(b",\"revision\":");
    push_u64(out, register.revision());
    out.extend_from_slice(b"}\n\n");
}

/// Appends a `delete` or `expire` event.
fn push_removal(out: &mut Vec<u8>, kind: EventKind, name: &str, revision: Revision) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(kind.as_str().as_bytes());
    out.extend_from_slice(b"\nid: ");
    push_u64(out, revision);
    out.extend_from_slice(b"\ndata: {\"name\":");
    write_str(out, name);
    out.extend_from_slice(b",\"revision\":");
    push_u64(out, revision);
    out.extend_from_slice(b"}\n\n");
}
