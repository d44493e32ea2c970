//! # reg — a register registry
//!
//! A **register** is a named JSON value with optional metadata and a TTL. Providers publish
//! registers and refresh them before the TTL runs out; when a provider dies its registers expire
//! and everyone watching is told. Consumers read registers, wait for changes, and send change
//! requests that providers wait for.
//!
//! [`Registry`] is the embeddable core: no HTTP, no configuration, cheap to clone.
//!
//! ```
//! use reg::{Json, Registry, Selector};
//! use std::time::Duration;
//!
//! let registry = Registry::new();
//! registry.set("sensor.1", Json::from(21.5), None, Some(Duration::from_secs(5))).unwrap();
//! let read = registry.read(&Selector::names(["sensor.1", "sensor.2"]));
//! assert_eq!(read.registers.len(), 1);
//! assert_eq!(read.registers[0].value().as_str(), "21.5");
//! ```
//!
//! # Layout
//!
//! * `store/` — the registry core, which knows nothing of HTTP: `register.rs` (the snapshot and
//!   its cell: where a register is written), `watch.rs` (watch slots: where waiters are woken),
//!   `expiry.rs` + `wheel.rs` (where registers expire), `requests.rs` (change requests),
//!   `history.rs` (removal history for `index` waits), `feed.rs` (the change feed),
//!   `clock.rs` (injected time).
//! * `discovery/` — service discovery over registers: instances are `svc/<service>/<id>`,
//!   a catalog kept by a sink on the commit path, filters and picks (`docs/discovery.md`).
//! * `json.rs` — JSON validated into canonical form, so equality is a byte compare.
//! * `duration.rs` — Go's duration grammar, which reg's REST API speaks.
//! * `sync.rs` — the one module that owns synchronization primitives (swapped under loom).
//!
//! # Concurrency model
//!
//! Registers live in a sharded concurrent map (dashmap); each holds an immutable snapshot in an
//! arc-swap cell. Reads and refreshes (writes that change nothing) take no registry-wide lock.
//! Changes — create, value or metadata change, delete, expire — are serialized by one short
//! commit lock that assigns the next revision of a registry-wide counter, so revisions are
//! totally ordered and a reader that loads the counter first can never miss a change.
//! Each name has its own watch slot: a change wakes only that name's waiters and the
//! any-register waiters. TTLs live in a hierarchical timing wheel driven by one expiry thread;
//! a refresh never touches the wheel. See each module's `# Invariants`.

#[cfg(feature = "bench")]
pub mod bench;
#[cfg(feature = "client")]
pub mod client;
#[cfg(feature = "cluster")]
pub mod cluster;
pub mod discovery;
mod duration;
pub mod json;
#[cfg(feature = "persist")]
pub mod persist;
#[cfg(feature = "server")]
pub mod server;
mod store;
mod sync;
#[cfg(feature = "tls")]
mod tls;

pub use duration::{format_go_duration, parse_go_duration, DurationError};
pub use json::{Json, JsonError};
pub use store::{
    Change, ChangeRequest, Clock, Event, EventKind, FeedError, ManualClock, Origin, Register,
    Registers, Registry, RegistryBuilder, Replay, ReplicaStatus, Revision, Selector, SetOutcome,
    Stats, StoreError, Subscription, SystemClock, TakeRequests, Wait, WaitOutcome, Write,
    DEFAULT_FEED_CAPACITY, DEFAULT_MAX_NAME_LEN, DEFAULT_MAX_PENDING_REQUESTS,
    DEFAULT_REMOVAL_HISTORY, DEFAULT_REQUEST_MAX_AGE, DEFAULT_TTL,
};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// `docs/discovery.md`'s examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../docs/discovery.md")]
struct DiscoveryDoctests;
