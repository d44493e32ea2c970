//! The change feed: every change, in revision order, for streaming watch (and replication).
//!
//! Built on `tokio::sync::broadcast`: a bounded ring shared by all subscribers. A slow
//! subscriber never slows writers and never grows memory: when it falls more than the feed's
//! capacity behind, it loses the oldest events and its next `recv` says so with
//! [`FeedError::Lagged`]. That is the resync signal: the subscriber re-reads the state it cares
//! about with [`Registry::read`](crate::Registry::read) and goes on receiving, skipping events
//! whose revision is not above the revision of that read.

use std::fmt;

use tokio::sync::broadcast;

use crate::store::register::{Register, Revision};
use crate::sync::Arc;

/// What a change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// Created, or its value or metadata changed.
    Set,
    /// Removed by a delete.
    Delete,
    /// Removed because its TTL ran out.
    Expire,
}

impl EventKind {
    /// `set`, `delete` or `expire`: the SSE event names.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Set => "set",
            EventKind::Delete => "delete",
            EventKind::Expire => "expire",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// The register's name.
    pub name: Arc<str>,
    /// The revision the change took.
    pub revision: Revision,
    /// The register after the change (`None` for a removal).
    pub register: Option<Arc<Register>>,
}

/// Why a subscription could not deliver the next event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FeedError {
    /// The subscriber fell behind and `missed` events were dropped: resync (see the module
    /// docs) and keep receiving.
    #[error("subscriber fell behind and missed {missed} events; resync")]
    Lagged {
        /// How many events were dropped.
        missed: u64,
    },
    /// The registry is gone.
    #[error("the registry is closed")]
    Closed,
}

/// A subscription to the change feed; made by
/// [`Registry::subscribe`](crate::Registry::subscribe).
#[derive(Debug)]
pub struct Subscription {
    pub(crate) rx: broadcast::Receiver<Event>,
}

impl Subscription {
    /// The next event.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: an event is consumed only when `recv` returns it.
    pub async fn recv(&mut self) -> Result<Event, FeedError> {
        self.rx.recv().await.map_err(|error| match error {
            broadcast::error::RecvError::Lagged(missed) => FeedError::Lagged { missed },
            broadcast::error::RecvError::Closed => FeedError::Closed,
        })
    }

    /// The next event if one is ready.
    pub fn try_recv(&mut self) -> Result<Option<Event>, FeedError> {
        match self.rx.try_recv() {
            Ok(event) => Ok(Some(event)),
            Err(broadcast::error::TryRecvError::Empty) => Ok(None),
            Err(broadcast::error::TryRecvError::Lagged(missed)) => {
                Err(FeedError::Lagged { missed })
            }
            Err(broadcast::error::TryRecvError::Closed) => Err(FeedError::Closed),
        }
    }
}
