//! Shared helpers for the models.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use reg::{Json, ManualClock, Registry};

/// Runs `f` under loom with `bound` preemptions (unless `LOOM_MAX_PREEMPTIONS` says otherwise).
pub(crate) fn check(bound: usize, f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(bound);
    }
    builder.check(f);
}

/// A registry on a manual clock (at time 0) with manual expiry, and the clock.
pub(crate) fn registry() -> (Registry, ManualClock) {
    registry_with(|b| b)
}

/// As [`registry`], with extra builder settings.
pub(crate) fn registry_with(
    configure: impl FnOnce(reg::RegistryBuilder) -> reg::RegistryBuilder,
) -> (Registry, ManualClock) {
    let clock = ManualClock::new();
    let registry = configure(Registry::builder().clock(clock.clone()).manual_expiry()).build();
    (registry, clock)
}

/// Polls `future` once with a waker that does nothing.
pub(crate) fn poll_once<F: Future + Unpin>(future: &mut F) -> Poll<F::Output> {
    let mut cx = Context::from_waker(Waker::noop());
    Pin::new(future).poll(&mut cx)
}

pub(crate) fn json(text: &str) -> Json {
    Json::parse(text.as_bytes()).unwrap()
}

pub(crate) fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}
