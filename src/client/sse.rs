//! `GET /v1/watch`: a Server-Sent Events stream, parsed incrementally.
//!
//! The parser follows the HTML standard's event-stream interpretation: lines end with `\n`,
//! `\r\n` or `\r`; `field: value` (one optional space after the colon); lines starting with
//! `:` are comments (the server's keep-alives); a blank line dispatches the event; `data`
//! lines accumulate, joined by `\n`; an event without data is dropped.

use std::time::Duration;

use bytes::{Buf, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::client::error::ClientError;
use crate::json::{parse_tree, Json, Node};
use crate::store::{EventKind, Revision};
use crate::sync::Arc;

/// Longest line (or event) the parser buffers: 64 MiB. A register value is bounded by the
/// server's 1 MiB body limit; far beyond that, the stream is broken, not busy.
const MAX_EVENT_BYTES: usize = 64 << 20;

/// The server sends a keep-alive comment every 15 s (REST spec, "Streaming watch"): three
/// missed in a row mean the connection is dead even if TCP has not noticed.
pub(crate) const WATCH_IDLE_TIMEOUT: Duration = Duration::from_secs(45);

/// One raw event of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SseEvent {
    /// `event:`; `message` when absent, as the standard says.
    pub(crate) event: String,
    /// The `data:` lines joined by `\n`.
    pub(crate) data: String,
    /// The last `id:` seen (it persists across events).
    pub(crate) id: Option<String>,
}

/// An incremental event-stream parser: push bytes as they arrive, pull whole events.
#[derive(Debug, Default)]
pub(crate) struct SseParser {
    /// Received bytes not yet split into lines.
    buf: BytesMut,
    /// The event being built.
    event: Option<String>,
    data: String,
    /// Whether any `data:` line arrived for the event being built.
    has_data: bool,
    /// The last event id, which persists across events.
    last_id: Option<String>,
}

impl SseParser {
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes buffered but not yet parsed into a whole event.
    pub(crate) fn pending(&self) -> usize {
        self.buf.len() + self.data.len()
    }

    /// The next complete event, if the buffered bytes hold one. `eof`: no more bytes will
    /// come, so a trailing `\r` is a line end.
    pub(crate) fn next_event(&mut self, eof: bool) -> Option<SseEvent> {
        loop {
            let end = self.buf.iter().position(|&b| b == b'\n' || b == b'\r')?;
            let terminator = match self.buf.get(end) {
                Some(b'\r') => match self.buf.get(end + 1) {
                    Some(b'\n') => 2,
                    Some(_) => 1,
                    // A `\r` at the end of what we have: `\n` may follow in the next chunk.
                    None if eof => 1,
                    None => return None,
                },
                _ => 1,
            };
            let line = self.buf.split_to(end);
            self.buf.advance(terminator);
            if let Some(event) = self.line(&String::from_utf8_lossy(&line)) {
                return Some(event);
            }
        }
    }

    /// Processes one line; a blank line may complete an event.
    fn line(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            let event = self.event.take();
            if !std::mem::take(&mut self.has_data) {
                return None;
            }
            let mut data = std::mem::take(&mut self.data);
            if data.ends_with('\n') {
                data.pop();
            }
            return Some(SseEvent {
                event: event.unwrap_or_else(|| "message".to_owned()),
                data,
                id: self.last_id.clone(),
            });
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = Some(value.to_owned()),
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
                self.has_data = true;
            }
            "id" if !value.contains('\0') => self.last_id = Some(value.to_owned()),
            // `retry` and unknown fields are ignored, as the standard says.
            _ => {}
        }
        None
    }
}

/// One change from the watch stream.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WatchEvent {
    /// What happened: set, delete or expire.
    pub kind: EventKind,
    /// The register.
    pub name: Arc<str>,
    /// The revision the change took.
    pub revision: Option<Revision>,
    /// The value after a `set`; `None` for a removal.
    pub value: Option<Json>,
    /// The metadata after a `set` (none when empty).
    pub metadata: Option<Json>,
}

impl WatchEvent {
    /// Builds an event from a raw one; `Ok(None)` for event types this client does not know
    /// (skipped, so a newer server can add some).
    pub(crate) fn from_sse(event: &SseEvent) -> Result<Option<WatchEvent>, ClientError> {
        let kind = match event.event.as_str() {
            "set" => EventKind::Set,
            "delete" => EventKind::Delete,
            "expire" => EventKind::Expire,
            _ => return Ok(None),
        };
        let invalid = |what: String| ClientError::InvalidResponse(format!("watch event: {what}"));
        let tree = parse_tree(event.data.as_bytes())
            .map_err(|error| invalid(format!("data is not json: {error}")))?;
        let name = match tree.get("name") {
            Some(Node::String(name)) => Arc::from(name.decoded().as_ref()),
            _ => return Err(invalid("data has no string \"name\"".to_owned())),
        };
        let revision = match tree.get("revision") {
            Some(Node::Number(text)) => text.parse().ok(),
            _ => None,
        }
        .or_else(|| event.id.as_deref().and_then(|id| id.parse().ok()));
        let (value, metadata) = match kind {
            EventKind::Set => (
                Some(tree.get("value").map_or_else(Json::null, Node::to_json)),
                tree.get("metadata")
                    .map(Node::to_json)
                    .filter(|m| !m.is_null() && !m.is_empty_object()),
            ),
            _ => (None, None),
        };
        Ok(Some(WatchEvent {
            kind,
            name,
            revision,
            value,
            metadata,
        }))
    }
}

/// The event stream of `GET /v1/watch`; made by
/// [`WireClient::watch`](crate::client::WireClient::watch).
#[derive(Debug)]
pub struct WatchStream {
    body: Incoming,
    parser: SseParser,
    /// Set once the body ended or failed: later calls return `Ok(None)`.
    done: bool,
    idle_timeout: Duration,
}

impl WatchStream {
    pub(crate) fn new(body: Incoming) -> Self {
        Self {
            body,
            parser: SseParser::default(),
            done: false,
            idle_timeout: WATCH_IDLE_TIMEOUT,
        }
    }

    /// The next event; `Ok(None)` when the server ended the stream.
    ///
    /// An error ends the stream: reconnect with [`last_revision`](Self::last_revision) as the
    /// `index` to replay what was missed. A stream silent for 45 s (three missed keep-alives)
    /// fails with a timeout.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: bytes read from the connection are buffered in the stream before the
    /// future can be dropped, so no event is lost.
    pub async fn next(&mut self) -> Result<Option<WatchEvent>, ClientError> {
        loop {
            while let Some(event) = self.parser.next_event(self.done) {
                if let Some(event) = WatchEvent::from_sse(&event)? {
                    return Ok(Some(event));
                }
            }
            if self.done {
                return Ok(None);
            }
            let frame = tokio::time::timeout(self.idle_timeout, self.body.frame()).await;
            match frame {
                Err(_) => {
                    self.done = true;
                    return Err(ClientError::Timeout(self.idle_timeout));
                }
                Ok(None) => self.done = true,
                Ok(Some(Err(error))) => {
                    self.done = true;
                    return Err(ClientError::InvalidResponse(format!(
                        "watch stream broke: {error}"
                    )));
                }
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        self.parser.push(&data);
                        if self.parser.pending() > MAX_EVENT_BYTES {
                            self.done = true;
                            return Err(ClientError::InvalidResponse(
                                "watch event over 64 MiB".to_owned(),
                            ));
                        }
                    }
                }
            }
        }
    }

    /// The revision of the last event id received: pass it as `index` when reconnecting.
    pub fn last_revision(&self) -> Option<Revision> {
        self.parser.last_id.as_deref()?.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn events(parser: &mut SseParser, eof: bool) -> Vec<SseEvent> {
        std::iter::from_fn(|| parser.next_event(eof)).collect()
    }

    #[test]
    fn parses_events_split_anywhere() {
        let stream = b": keep-alive\n\nevent: set\r\nid: 7\r\ndata: {\"name\":\"a\",\r\ndata:\"value\":1}\r\n\r\nevent: delete\rid: 8\rdata: {\"name\":\"a\"}\r\r";
        // Every split point gives the same events.
        for split in 0..stream.len() {
            let mut parser = SseParser::default();
            parser.push(&stream[..split]);
            let mut got = events(&mut parser, false);
            parser.push(&stream[split..]);
            got.extend(events(&mut parser, true));
            assert_eq!(got.len(), 2, "split at {split}");
            assert_eq!(got[0].event, "set");
            assert_eq!(got[0].id.as_deref(), Some("7"));
            assert_eq!(got[0].data, "{\"name\":\"a\",\n\"value\":1}");
            assert_eq!(got[1].event, "delete");
            assert_eq!(got[1].id.as_deref(), Some("8"));
        }
    }

    #[test]
    fn an_event_without_data_is_dropped_and_ids_persist() {
        let mut parser = SseParser::default();
        parser.push(b"id: 3\nevent: set\n\ndata: x\n\n");
        let got = events(&mut parser, false);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].event, "message");
        assert_eq!(got[0].id.as_deref(), Some("3"));
    }

    #[test]
    fn watch_events_carry_exact_values() {
        let raw = SseEvent {
            event: "set".to_owned(),
            data: r#"{"name":"t","value":1.50,"metadata":{},"revision":9}"#.to_owned(),
            id: Some("9".to_owned()),
        };
        let event = WatchEvent::from_sse(&raw).unwrap().unwrap();
        assert_eq!(event.kind, EventKind::Set);
        assert_eq!(&*event.name, "t");
        assert_eq!(event.value.unwrap().as_str(), "1.50");
        assert_eq!(event.metadata, None);
        assert_eq!(event.revision, Some(9));

        let raw = SseEvent {
            event: "expire".to_owned(),
            data: r#"{"name":"t"}"#.to_owned(),
            id: Some("10".to_owned()),
        };
        let event = WatchEvent::from_sse(&raw).unwrap().unwrap();
        assert_eq!(
            (event.kind, event.revision, event.value),
            (EventKind::Expire, Some(10), None)
        );

        let raw = SseEvent {
            event: "message".to_owned(),
            data: "{}".to_owned(),
            id: None,
        };
        assert_eq!(WatchEvent::from_sse(&raw).unwrap(), None);
    }
}
