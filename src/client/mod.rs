//! The Rust client for reg's REST API (`docs/rest-api.md`), and the same high-level
//! API over an in-process [`Registry`](crate::Registry).
//!
//! Two layers:
//!
//! * [`WireClient`]: one typed call per endpoint — `PUT`/`GET /provider`, `GET`/`PUT
//!   /consumer`, `DELETE /provider`, the `/v1/watch` event stream, `/healthz`, `/version`,
//!   `/metrics` — over pooled HTTP/1.1 connections (hyper-util's client), plain or TLS. Values come back as
//!   [`Json`](crate::Json) with numbers exactly as stored.
//! * [`Client`]: subscriptions ([`Client::consume`], [`Client::consume_all`]) and providers
//!   ([`Client::provide`]) that share one long poll per direction, never miss a change (the
//!   `index` of Part B), reconnect with backoff, and fall back by themselves against a server
//!   without Part B. [`Client::remote`] and [`Client::embedded`] give the same API.
//!
//! # Layout
//!
//! `wire.rs` (endpoints, the bearer token) with `url.rs` (URL and query encoding), `body.rs`
//! (request and response bodies), `sse.rs` (the watch stream) and `tls.rs` (CA, client
//! certificate; with the `tls` feature); `highlevel.rs` (the [`Client`]) over
//! `backend.rs` (remote or embedded), `consumer.rs` (the consumer poll and handles),
//! `provider.rs` (keep-alive, removal, the request poll); `backoff.rs`; `error.rs` (the one
//! error type).
//!
//! # Concurrency model
//!
//! A [`Client`] owns at most two background tasks, one per direction, started with the first
//! consumer or provider and aborted when the client and all its handles are dropped. Each task
//! is the only writer of its direction's `tokio::sync::watch` channels (one per name), so a
//! slow reader never blocks the task or other readers and always reads the latest state. Each
//! [`Provider`] has one more task, the only writer of its register, which removes the register
//! and ends when the provider is dropped. No lock is held across an `.await`. See
//! `consumer.rs` and `provider.rs` for the invariants.

mod backend;
mod backoff;
mod body;
mod consumer;
mod discovery;
mod error;
mod highlevel;
mod hub;
mod provider;
mod sse;
#[cfg(feature = "tls")]
pub(crate) mod tls;
mod url;
mod wire;

pub use consumer::{AllConsumer, Consumer, Update};
pub use discovery::{Registration, ServiceEvent, ServiceEvents, ServiceView, ViewState};
pub use error::ClientError;
pub use highlevel::{
    Client, ClientBuilder, DEFAULT_BACKOFF_MAX, DEFAULT_BACKOFF_MIN, DEFAULT_FALLBACK_POLL_WAIT,
    DEFAULT_POLL_WAIT,
};
pub use provider::Provider;
pub use sse::{WatchEvent, WatchStream};
pub use wire::{
    Health, ReadQuery, ReadResponse, RegisterValue, RegisterWrite, WireClient, WireClientBuilder,
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_TIMEOUT,
};
