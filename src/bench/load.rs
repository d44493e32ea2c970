//! The load engine: N keep-alive connections sending requests open-loop at a target rate (or
//! closed-loop as fast as the server answers), latencies into an HdrHistogram.
//!
//! **Coordinated omission.** In open-loop mode request `k` is *due* at `start + k / rate`,
//! whatever happened before; its latency is measured from when it was due, not from when a
//! busy connection got round to sending it. A server that stalls for a second therefore shows
//! a second of latency for every request that should have gone out meanwhile — which is what
//! users would have seen — instead of one slow sample (Gil Tene's correction, as in wrk2).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::time::Instant;

use crate::bench::http::{source_ip, Conn, Peer};

/// Latencies are recorded in microseconds, from 1 µs to 5 minutes, 3 significant digits.
pub(crate) const HIST_MAX_US: u64 = 300_000_000;

/// A histogram of microseconds.
pub(crate) fn histogram() -> Histogram<u64> {
    // Constant bounds that satisfy hdrhistogram's rules (low >= 1, high >= 2 * low,
    // sigfig <= 5): this cannot fail.
    Histogram::new_with_bounds(1, HIST_MAX_US, 3).expect("constant histogram bounds are valid")
}

/// Records `elapsed` (saturating at the histogram's top).
pub(crate) fn record(histogram: &mut Histogram<u64>, elapsed: Duration) {
    let us = u64::try_from(elapsed.as_micros())
        .unwrap_or(u64::MAX)
        .clamp(1, HIST_MAX_US);
    histogram.saturating_record(us);
}

/// What to run.
#[derive(Debug, Clone)]
pub(crate) struct Load {
    /// The servers to load (a cluster's nodes): connection `n` goes to `targets[n % len]`.
    pub(crate) targets: Vec<Peer>,
    pub(crate) connections: usize,
    /// Requests per second over all connections; `None`: closed loop, as fast as answered.
    pub(crate) rate: Option<f64>,
    /// Run this long before measuring (connections warm, caches hot).
    pub(crate) warmup: Duration,
    /// Measure this long.
    pub(crate) duration: Duration,
}

impl Load {
    /// Where connection `n` goes.
    fn target(&self, n: usize) -> &Peer {
        &self.targets[n % self.targets.len().max(1)]
    }
}

/// The requests to send, cycled: request `k` is `requests[k % len]`.
pub(crate) type Requests = Arc<Vec<Vec<u8>>>;

/// What a load run measured.
#[derive(Debug, Clone)]
pub(crate) struct LoadResult {
    /// Requests answered 2xx within the measured window.
    pub(crate) ok: u64,
    /// Requests answered with another status.
    pub(crate) bad_status: u64,
    /// Connection or protocol errors.
    pub(crate) errors: u64,
    /// The measured window.
    pub(crate) elapsed: Duration,
    /// Latency of the measured requests, µs.
    pub(crate) latency: Histogram<u64>,
    /// Requests answered 2xx in each `interval` of the measured window, by when they were
    /// answered: throughput over time.
    pub(crate) timeline: Vec<u64>,
    /// The width of a `timeline` slot.
    pub(crate) interval: Duration,
}

impl LoadResult {
    /// Successful requests per second.
    pub(crate) fn throughput(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    /// Throughput over time: requests/s in each `interval`.
    pub(crate) fn rates(&self) -> Vec<f64> {
        let seconds = self.interval.as_secs_f64().max(f64::EPSILON);
        self.timeline.iter().map(|&n| n as f64 / seconds).collect()
    }
}

/// The `timeline` slot width for a measured window: a quarter of a second, or 1/200 of the
/// window when that is longer (at most 200 points).
pub(crate) fn interval_for(duration: Duration) -> Duration {
    (duration / 200).max(Duration::from_millis(250))
}

/// Slots of `interval` that cover `duration` (the last may be partial).
fn slots(duration: Duration, interval: Duration) -> usize {
    let n = duration.as_nanos().div_ceil(interval.as_nanos().max(1));
    usize::try_from(n).unwrap_or(usize::MAX).clamp(1, 100_000)
}

#[derive(Debug, Default)]
struct Counters {
    ok: AtomicU64,
    bad_status: AtomicU64,
    errors: AtomicU64,
}

/// Runs the load and returns what it measured.
pub(crate) async fn run(load: &Load, requests: Requests) -> std::io::Result<LoadResult> {
    if requests.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "no requests to send",
        ));
    }
    // Connect everything first, so connection set-up is not measured.
    let mut conns = Vec::with_capacity(load.connections);
    for n in 0..load.connections.max(1) {
        let target = load.target(n);
        conns.push(Conn::connect(target, source_ip(target.addr, n)).await?);
    }
    let start = Instant::now();
    let measure_from = start + load.warmup;
    let end = measure_from + load.duration;
    let next = Arc::new(AtomicU64::new(0));
    let counters = Arc::new(Counters::default());
    let mut tasks = Vec::with_capacity(conns.len());
    for (n, conn) in conns.into_iter().enumerate() {
        let requests = Arc::clone(&requests);
        let next = Arc::clone(&next);
        let counters = Arc::clone(&counters);
        let load = load.clone();
        tasks.push(tokio::spawn(async move {
            connection(
                n,
                conn,
                &load,
                &requests,
                &next,
                &counters,
                start,
                measure_from,
                end,
            )
            .await
        }));
    }
    let interval = interval_for(load.duration);
    let mut latency = histogram();
    let mut timeline = vec![0; slots(load.duration, interval)];
    for task in tasks {
        if let Ok((h, answered)) = task.await {
            let _ = latency.add(&h);
            for (total, n) in timeline.iter_mut().zip(answered) {
                *total += n;
            }
        }
    }
    Ok(LoadResult {
        ok: counters.ok.load(Ordering::Relaxed),
        bad_status: counters.bad_status.load(Ordering::Relaxed),
        errors: counters.errors.load(Ordering::Relaxed),
        elapsed: load.duration,
        latency,
        timeline,
        interval,
    })
}

#[allow(clippy::too_many_arguments)]
async fn connection(
    n: usize,
    mut conn: Conn,
    load: &Load,
    requests: &[Vec<u8>],
    next: &AtomicU64,
    counters: &Counters,
    start: Instant,
    measure_from: Instant,
    end: Instant,
) -> (Histogram<u64>, Vec<u64>) {
    let mut latency = histogram();
    let interval = interval_for(load.duration);
    let mut answered = vec![0u64; slots(load.duration, interval)];
    let len = requests.len() as u64;
    loop {
        // Ordering: Relaxed: a ticket counter; tickets only need to be unique.
        let ticket = next.fetch_add(1, Ordering::Relaxed);
        let due = match load.rate {
            Some(rate) => start + Duration::from_secs_f64(ticket as f64 / rate),
            None => Instant::now(),
        };
        if due >= end {
            break;
        }
        if load.rate.is_some() {
            tokio::time::sleep_until(due).await;
        }
        // Ticket `k` uses request `k % len`.
        let index = usize::try_from(ticket % len).unwrap_or(0);
        let Some(request) = requests.get(index) else {
            break;
        };
        let measured = due >= measure_from;
        match conn.send(request).await {
            Ok(response) => {
                if measured {
                    if (200..300).contains(&response.status) {
                        counters.ok.fetch_add(1, Ordering::Relaxed);
                        // By when it was answered; one answered after the window (its
                        // request was due inside it) counts in the last slot.
                        let at = measure_from.elapsed().as_nanos() / interval.as_nanos().max(1);
                        let last = answered.len().saturating_sub(1);
                        let slot = usize::try_from(at).unwrap_or(usize::MAX).min(last);
                        if let Some(n) = answered.get_mut(slot) {
                            *n += 1;
                        }
                    } else {
                        counters.bad_status.fetch_add(1, Ordering::Relaxed);
                    }
                    record(&mut latency, due.elapsed());
                }
            }
            Err(_) => {
                counters.errors.fetch_add(1, Ordering::Relaxed);
                let target = load.target(n);
                match Conn::connect(target, source_ip(target.addr, n)).await {
                    Ok(fresh) => conn = fresh,
                    Err(_) => break,
                }
            }
        }
    }
    (latency, answered)
}
