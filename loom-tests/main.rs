//! loom models of the registry's concurrency protocols.
//!
//! ```text
//! RUSTFLAGS="--cfg reg_loom" cargo test --release --test loom --target-dir target/loom
//! ```
//!
//! Under `--cfg reg_loom`, `src/sync.rs` swaps the registry's atomics and locks for loom's, and
//! dashmap, arc-swap and crossbeam's queue for loom-mutex stand-ins that give exactly the
//! guarantees the real types document. The models therefore check *our* protocols on top of
//! those guarantees: the wake protocol (`watch.rs`), snapshot publication and the revision
//! counter (`store/mod.rs`, `register.rs`), the refresh/expiry compare-exchange race
//! (`expiry.rs`), and change-request delivery (`requests.rs`).
//!
//! Every model builds its own registry *inside* the model (loom objects must not outlive one
//! execution), with a [`ManualClock`](reg::ManualClock) and manual expiry (no background thread),
//! and uses only the public API. Each has 2–3 threads and a preemption bound of 2–3 (override
//! with `LOOM_MAX_PREEMPTIONS`), so the whole run takes well under a few minutes on 2 cores.
//!
//! A lost wake-up shows up as a loom deadlock: every wait that must complete is driven by
//! `loom::future::block_on`, which parks the loom thread until its waker fires.
#![cfg(reg_loom)]
#![allow(clippy::unwrap_used)]

mod expiry;
mod index;
mod requests;
mod snapshot;
mod util;
mod wake;
