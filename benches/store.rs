//! Criterion benches for the registry core, each beside a baseline measured in the same run.
//!
//! The machine these run on is shared and noisy, so the figure that means something is the
//! *ratio* between a benchmark and its baseline (same group, same run). Times are measured as
//! [`Unqueued`] time: wall time minus the time the thread waited in the run queue for a CPU
//! that another process held, which removes most of the neighbours' effect on the absolute
//! figures (not their cache pollution).
//!
//! Baselines are what one would write without reg: a `std::collections::HashMap<Arc<str>, _>`
//! with reg's hasher (foldhash)
//! (bare for one thread, behind a `parking_lot::RwLock` for the same work shared between
//! threads) holding `Arc` snapshots of the same shape as reg's `Register`, with the same
//! `Json` values (so equality is the same byte compare) and the same clock reads. They do the
//! map work and nothing else: no revisions visible to readers, no watchers, no change feed, no
//! TTL wheel. The gap is the price of those.
//!
//! | group                  | what one iteration is                                           |
//! | ---------------------- | --------------------------------------------------------------- |
//! | `get`                  | one lookup of a random name among 100,000 registers             |
//! | `set_changed`          | one write of a small value that differs from the stored one     |
//! | `refresh`              | one write of the stored value (only the TTL restarts)           |
//! | `mix_90_10_2_threads`  | one operation on each of 2 threads, 9 reads to 1 changed write  |
//! | `wake_10k_waiters`     | one write, until 10,000 parked waiter tasks have all completed  |
//! | `wheel_1m_not_due`     | one 1 ms tick of the expiry pass with 1,000,000 timers not due  |
//! | `expire_1m_same_tick`  | one expiry pass removing 1,000,000 registers due in that tick   |
//! | `json_parse`           | one parse of a ~256 B or ~4 KiB object                          |
//!
//! `get`, `set_changed` and `refresh` run twice: over all 100,000 registers (`random_100k`:
//! the working set is far larger than the caches, so every operation, the baseline's too, pays
//! several DRAM misses) and over a fixed 1,000 of them (`hot_1k`: the code path's own cost).
//!
//! Run: `cargo bench --bench store` (all, about 4 minutes on 2 cores), or some groups with
//! `cargo bench --bench store -- 'get|refresh'`.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};
use std::future::{poll_fn, Future};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::task::{Context, Wake, Waker};
use std::time::{Duration, Instant};

use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, SamplingMode,
    Throughput,
};
use parking_lot::RwLock;
use reg::{Change, Json, ManualClock, Registry, Selector, WaitOutcome};

/// Registers in the map for the single-register-operation groups (the issue's figure).
const REGISTERS: usize = 100_000;
/// Random lookups drawn in advance; a power of two so the index wraps with a mask.
const LOOKUPS: usize = 1 << 20;
/// TTL of the registers in the operation groups: long enough that nothing expires mid-bench.
const LONG_TTL: Duration = Duration::from_secs(3600);
/// Waiters woken by one write in `wake_10k_waiters` (the issue's figure).
const WAITERS: usize = 10_000;
/// Registers scheduled in `wheel_1m_not_due` and expired in `expire_1m_same_tick`.
const MILLION: usize = 1_000_000;

/// A group with the short timings that keep the whole run under five minutes.
fn group<'a>(c: &'a mut Criterion<Unqueued>, name: &str) -> BenchmarkGroup<'a, Unqueued> {
    let mut group = c.benchmark_group(name);
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    group
}

// ---------------------------------------------------------------------------------------------
// Measurement: wall time minus run-queue wait
// ---------------------------------------------------------------------------------------------

/// Wall time minus the time the measuring thread sat runnable in the kernel's run queue waiting
/// for a CPU (`run_delay`, the second field of `/proc/thread-self/schedstat`).
///
/// The bench machine has 2 cores shared with other engineers' compilers (load average 3 to 5),
/// so plain wall time charges a benchmark for every time slice another process took: a
/// single-thread loop measured 35.8 ms of wall time for 15.7 ms on a CPU. The kernel updates
/// `run_delay` each time the thread is scheduled in, so while it runs the value is exact, and
/// the difference is the time it would have taken on an idle machine (cache pollution from the
/// neighbours remains). Time the thread spends blocked (a contended lock, a parked runtime) is
/// kept: that is part of the work. Falls back to wall time where schedstat is unavailable.
struct Unqueued;

/// `run_delay` of the calling thread in ns, or 0 when the kernel does not expose it.
fn run_delay_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|stat| stat.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// Where an [`Unqueued`] measurement started.
struct UnqueuedStart {
    wall: Instant,
    run_delay_ns: u64,
}

impl Unqueued {
    fn now() -> UnqueuedStart {
        // Read the (slow) schedstat file before the clock, and after it in `since`, so its
        // cost is outside the interval.
        let run_delay_ns = run_delay_ns();
        UnqueuedStart {
            wall: Instant::now(),
            run_delay_ns,
        }
    }

    fn since(start: UnqueuedStart) -> Duration {
        let wall = start.wall.elapsed();
        let queued = run_delay_ns().saturating_sub(start.run_delay_ns);
        wall.saturating_sub(Duration::from_nanos(queued))
    }
}

impl Measurement for Unqueued {
    type Intermediate = UnqueuedStart;
    type Value = Duration;

    fn start(&self) -> UnqueuedStart {
        Self::now()
    }
    fn end(&self, start: UnqueuedStart) -> Duration {
        Self::since(start)
    }
    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, value: &Duration) -> f64 {
        value.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &NanosFormatter
    }
}

/// Formats nanoseconds as criterion's wall-time formatter does.
struct NanosFormatter;

impl ValueFormatter for NanosFormatter {
    fn scale_values(&self, typical_ns: f64, values: &mut [f64]) -> &'static str {
        let (factor, unit) = match typical_ns {
            t if t < 1e3 => (1.0, "ns"),
            t if t < 1e6 => (1e-3, "µs"),
            t if t < 1e9 => (1e-6, "ms"),
            _ => (1e-9, "s"),
        };
        values.iter_mut().for_each(|v| *v *= factor);
        unit
    }

    fn scale_throughputs(
        &self,
        typical_ns: f64,
        throughput: &Throughput,
        values: &mut [f64],
    ) -> &'static str {
        let (per_iteration, units) = match *throughput {
            Throughput::Bytes(n) | Throughput::BytesDecimal(n) => {
                (n as f64, ["B/s", "KiB/s", "MiB/s", "GiB/s"])
            }
            Throughput::Elements(n) => (n as f64, ["elem/s", "Kelem/s", "Melem/s", "Gelem/s"]),
        };
        let typical = per_iteration * 1e9 / typical_ns;
        let (divisor, unit) = match typical {
            t if t < 1e3 => (1.0, units[0]),
            t if t < 1e6 => (1e3, units[1]),
            t if t < 1e9 => (1e6, units[2]),
            _ => (1e9, units[3]),
        };
        values
            .iter_mut()
            .for_each(|v| *v = per_iteration * 1e9 / *v / divisor);
        unit
    }

    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}

// ---------------------------------------------------------------------------------------------
// Inputs
// ---------------------------------------------------------------------------------------------

/// xorshift64*: deterministic inputs without a `rand` dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform enough in `0..n` for picking names (`n` is far below 2^32).
    fn below(&mut self, n: usize) -> usize {
        (((self.next() >> 32) * n as u64) >> 32) as usize
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

/// `n` distinct register names of a realistic shape (~30 bytes).
fn names(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("site-{:02}.rack-{:03}.sensor-{i:07}", i % 17, i % 251))
        .collect()
}

/// `LOOKUPS` random indices into a list of `n` names.
fn random_indices(n: usize, seed: u64) -> Vec<u32> {
    let mut rng = Rng::new(seed);
    (0..LOOKUPS).map(|_| rng.below(n) as u32).collect()
}

/// Names laid out back to back in the order a benchmark uses them, so that fetching the next
/// name is a sequential read the prefetcher hides, not a cache miss charged to the map under
/// test (a server finds the name in the request it just read).
struct NameSeq {
    text: String,
    /// End offset of each name in `text`.
    ends: Vec<usize>,
}

impl NameSeq {
    fn new(names: &[String], order: impl IntoIterator<Item = usize>) -> Self {
        let mut seq = Self {
            text: String::new(),
            ends: Vec::new(),
        };
        for i in order {
            seq.text.push_str(&names[i]);
            seq.ends.push(seq.text.len());
        }
        seq
    }

    /// `LOOKUPS` names drawn at random from `subset`.
    fn random(names: &[String], subset: &[usize], seed: u64) -> Self {
        let picks = random_indices(subset.len(), seed);
        Self::new(names, picks.into_iter().map(|i| subset[i as usize]))
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    #[inline]
    fn get(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.text[start..self.ends[i]]
    }
}

/// A cursor over a `LOOKUPS`-long [`NameSeq`] that wraps around.
struct Lookups {
    seq: NameSeq,
    pos: usize,
}

impl Lookups {
    fn new(names: &[String], subset: &[usize], seed: u64) -> Self {
        Self {
            seq: NameSeq::random(names, subset, seed),
            pos: 0,
        }
    }

    #[inline]
    fn next(&mut self) -> &str {
        self.pos = (self.pos + 1) & (LOOKUPS - 1);
        self.seq.get(self.pos)
    }
}

/// Walks a shuffled permutation of names, flipping a parity bit after each full pass: writing
/// `values[parity]` to the name returned therefore always changes it (every name was last
/// written with the other value, one pass earlier).
struct Cycle {
    seq: NameSeq,
    pos: usize,
    parity: usize,
}

impl Cycle {
    fn new(names: &[String], indices: impl IntoIterator<Item = usize>, seed: u64) -> Self {
        let mut order: Vec<usize> = indices.into_iter().collect();
        Rng::new(seed).shuffle(&mut order);
        Self {
            seq: NameSeq::new(names, order),
            pos: 0,
            // Registers start with `values[1]`, so the first pass writes `values[0]`.
            parity: 0,
        }
    }

    #[inline]
    fn next(&mut self) -> (&str, usize) {
        if self.pos == self.seq.len() {
            self.pos = 0;
            self.parity ^= 1;
        }
        self.pos += 1;
        (self.seq.get(self.pos - 1), self.parity)
    }

    /// Walks on (untimed) to the end of a pass that leaves every name at `values[1]`.
    fn finish(&mut self, mut write: impl FnMut(&str, usize)) {
        while self.pos != self.seq.len() || self.parity == 0 {
            let (name, parity) = self.next();
            write(name, parity);
        }
    }
}

/// Two small values that differ, so alternating between them makes every write a change.
fn two_values() -> [Json; 2] {
    [
        Json::parse(br#"{"celsius":21.5,"ok":true}"#).unwrap(),
        Json::parse(br#"{"celsius":22.5,"ok":true}"#).unwrap(),
    ]
}

// ---------------------------------------------------------------------------------------------
// The baseline map
// ---------------------------------------------------------------------------------------------

/// The baseline's snapshot: what reg's `Register` holds, minus the creation revision.
#[allow(dead_code)] // fields are written so the work is the same, and read only through `Arc`
struct BaseRegister {
    name: Arc<str>,
    value: Json,
    revision: u64,
}

/// The baseline's map value: the snapshot a read clones out, and the TTL deadline in ms.
struct BaseEntry {
    register: Arc<BaseRegister>,
    deadline: u64,
}

/// The baseline state: the map plus the revision counter a change bumps.
struct BaseMap {
    map: HashMap<Arc<str>, BaseEntry, foldhash::fast::RandomState>,
    revision: u64,
    origin: Instant,
}

impl BaseMap {
    fn new(names: &[String], value: &Json) -> Self {
        let mut map = HashMap::with_capacity_and_hasher(names.len(), Default::default());
        for (i, name) in names.iter().enumerate() {
            let name: Arc<str> = Arc::from(name.as_str());
            let register = Arc::new(BaseRegister {
                name: Arc::clone(&name),
                value: value.clone(),
                revision: i as u64 + 1,
            });
            map.insert(
                name,
                BaseEntry {
                    register,
                    deadline: u64::MAX,
                },
            );
        }
        Self {
            map,
            revision: names.len() as u64,
            origin: Instant::now(),
        }
    }

    /// The same clock read reg's `SystemClock` does.
    fn deadline(&self, ttl: Duration) -> u64 {
        self.origin.elapsed().as_millis() as u64 + ttl.as_millis() as u64
    }

    fn get(&self, name: &str) -> Option<Arc<BaseRegister>> {
        self.map.get(name).map(|entry| Arc::clone(&entry.register))
    }

    /// reg's `set` minus the feed, the wake-up and the wheel: compare, replace the snapshot
    /// on a change (taking a revision), restart the TTL. Returns whether it changed.
    fn set(&mut self, name: &str, value: &Json, ttl: Duration) -> bool {
        let deadline = self.deadline(ttl);
        let entry = self.map.get_mut(name).unwrap();
        entry.deadline = deadline;
        if entry.register.value == *value {
            return false;
        }
        self.revision += 1;
        entry.register = Arc::new(BaseRegister {
            name: Arc::clone(&entry.register.name),
            value: value.clone(),
            revision: self.revision,
        });
        true
    }
}

/// A registry (system clock, background expiry: the production configuration) holding `names`,
/// all with `value` and a long TTL.
fn populated_registry(names: &[String], value: &Json) -> Registry {
    let registry = Registry::new();
    for name in names {
        registry
            .set(name, value.clone(), None, Some(LONG_TTL))
            .unwrap();
    }
    registry
}

// ---------------------------------------------------------------------------------------------
// get / set (changed) / refresh
// ---------------------------------------------------------------------------------------------

/// Which names the single-thread operations touch, out of the `REGISTERS` in the map.
struct Pattern {
    /// `random_100k`: any of them (the issue's case: the working set, ~60 MB, is far larger
    /// than the caches, so each operation pays several DRAM misses, baseline included);
    /// `hot_1k`: a fixed random 1,000 of them (fits in L2: the code path's own cost).
    label: &'static str,
    /// The names' indices.
    subset: Vec<usize>,
}

/// Names in the hot working set.
const HOT: usize = 1_000;

fn patterns() -> [Pattern; 2] {
    let mut all: Vec<usize> = (0..REGISTERS).collect();
    Rng::new(10).shuffle(&mut all);
    [
        Pattern {
            label: "random_100k",
            subset: (0..REGISTERS).collect(),
        },
        Pattern {
            label: "hot_1k",
            subset: all[..HOT].to_vec(),
        },
    ]
}

fn bench_get(c: &mut Criterion<Unqueued>) {
    let names = names(REGISTERS);
    let [value, _] = two_values();
    let registry = populated_registry(&names, &value);
    let base = BaseMap::new(&names, &value);
    let locked = RwLock::new(BaseMap::new(&names, &value));

    let mut group = group(c, "get");
    group.throughput(Throughput::Elements(1));
    for pattern in patterns() {
        let mut lookups = Lookups::new(&names, &pattern.subset, 1);
        group.bench_function(BenchmarkId::new("reg", pattern.label), |b| {
            b.iter(|| black_box(registry.get(lookups.next())))
        });
        group.bench_function(BenchmarkId::new("baseline_hashmap", pattern.label), |b| {
            b.iter(|| black_box(base.get(lookups.next())))
        });
        group.bench_function(
            BenchmarkId::new("baseline_rwlock_hashmap", pattern.label),
            |b| b.iter(|| black_box(locked.read().get(lookups.next()))),
        );
    }
    group.finish();
}

fn bench_set_changed(c: &mut Criterion<Unqueued>) {
    let names = names(REGISTERS);
    let values = two_values();
    let registry = populated_registry(&names, &values[1]);
    let mut base = BaseMap::new(&names, &values[1]);
    let locked = RwLock::new(BaseMap::new(&names, &values[1]));

    // Every write must be a change, not a refresh: check the scheme over two passes (which
    // leave every register at `values[1]` again).
    let mut check = Cycle::new(&names, 0..REGISTERS, 2);
    for _ in 0..2 * REGISTERS {
        let (name, parity) = check.next();
        let outcome = registry
            .set(name, values[parity].clone(), None, Some(LONG_TTL))
            .unwrap();
        assert_eq!(outcome.change, Change::Changed);
    }
    drop(check);

    let mut group = group(c, "set_changed");
    group.throughput(Throughput::Elements(1));
    // Each variant starts from every register holding `values[1]` and, after it is measured,
    // finishes its pass untimed so that this holds again for the next one.
    for pattern in patterns() {
        let mut cycle = Cycle::new(&names, pattern.subset.iter().copied(), 3);
        group.bench_function(BenchmarkId::new("reg", pattern.label), |b| {
            b.iter(|| {
                let (name, parity) = cycle.next();
                black_box(registry.set(name, values[parity].clone(), None, Some(LONG_TTL)))
            })
        });
        cycle.finish(|name, parity| {
            registry
                .set(name, values[parity].clone(), None, Some(LONG_TTL))
                .unwrap();
        });
        let mut cycle = Cycle::new(&names, pattern.subset.iter().copied(), 3);
        group.bench_function(BenchmarkId::new("baseline_hashmap", pattern.label), |b| {
            b.iter(|| {
                let (name, parity) = cycle.next();
                black_box(base.set(name, &values[parity], LONG_TTL))
            })
        });
        cycle.finish(|name, parity| {
            base.set(name, &values[parity], LONG_TTL);
        });
        let mut cycle = Cycle::new(&names, pattern.subset.iter().copied(), 3);
        group.bench_function(
            BenchmarkId::new("baseline_rwlock_hashmap", pattern.label),
            |b| {
                b.iter(|| {
                    let (name, parity) = cycle.next();
                    black_box(locked.write().set(name, &values[parity], LONG_TTL))
                })
            },
        );
        cycle.finish(|name, parity| {
            locked.write().set(name, &values[parity], LONG_TTL);
        });
    }
    group.finish();
}

fn bench_refresh(c: &mut Criterion<Unqueued>) {
    let names = names(REGISTERS);
    let [value, _] = two_values();
    let registry = populated_registry(&names, &value);
    let mut base = BaseMap::new(&names, &value);
    let locked = RwLock::new(BaseMap::new(&names, &value));
    let outcome = registry
        .set(&names[0], value.clone(), None, Some(LONG_TTL))
        .unwrap();
    assert_eq!(outcome.change, Change::Refreshed);

    let mut group = group(c, "refresh");
    group.throughput(Throughput::Elements(1));
    for pattern in patterns() {
        let mut lookups = Lookups::new(&names, &pattern.subset, 4);
        group.bench_function(BenchmarkId::new("reg", pattern.label), |b| {
            b.iter(|| black_box(registry.set(lookups.next(), value.clone(), None, Some(LONG_TTL))))
        });
        group.bench_function(BenchmarkId::new("baseline_hashmap", pattern.label), |b| {
            b.iter(|| black_box(base.set(lookups.next(), &value, LONG_TTL)))
        });
        group.bench_function(
            BenchmarkId::new("baseline_rwlock_hashmap", pattern.label),
            |b| b.iter(|| black_box(locked.write().set(lookups.next(), &value, LONG_TTL))),
        );
    }
    group.finish();
}

// ---------------------------------------------------------------------------------------------
// 90/10 read/write mix on 2 threads
// ---------------------------------------------------------------------------------------------

/// Threads in the mix (the machine's core count).
const MIX_THREADS: usize = 2;

/// Runs `op(state, i)` for `i in 0..iters` on one thread per state, all started together.
/// Returns the longest of the threads' [`Unqueued`] times (what the run takes on an idle
/// machine with a core per thread) and the states, so cursors carry on into the next sample.
fn run_threads<S: Send>(
    iters: u64,
    states: Vec<S>,
    op: impl Fn(&mut S, u64) + Sync,
) -> (Duration, Vec<S>) {
    let barrier = Barrier::new(states.len());
    std::thread::scope(|scope| {
        let handles: Vec<_> = states
            .into_iter()
            .map(|mut state| {
                let (barrier, op) = (&barrier, &op);
                scope.spawn(move || {
                    barrier.wait();
                    let start = Unqueued::now();
                    for i in 0..iters {
                        op(&mut state, i);
                    }
                    (Unqueued::since(start), state)
                })
            })
            .collect();
        let mut longest = Duration::ZERO;
        let mut states = Vec::new();
        for handle in handles {
            let (elapsed, state) = handle.join().unwrap();
            longest = longest.max(elapsed);
            states.push(state);
        }
        (longest, states)
    })
}

/// One mix thread's inputs: random names to read, and its own half of the names to write (so
/// the two threads' alternating values never cancel into a refresh).
struct MixThread {
    reads: Lookups,
    writes: Cycle,
}

fn mix_threads(names: &[String]) -> Vec<MixThread> {
    let all: Vec<usize> = (0..REGISTERS).collect();
    (0..MIX_THREADS)
        .map(|t| MixThread {
            reads: Lookups::new(names, &all, 5 + t as u64),
            writes: Cycle::new(names, (t..REGISTERS).step_by(MIX_THREADS), 7 + t as u64),
        })
        .collect()
}

fn bench_mix(c: &mut Criterion<Unqueued>) {
    let names = names(REGISTERS);
    let values = two_values();
    let registry = populated_registry(&names, &values[1]);
    let locked = RwLock::new(BaseMap::new(&names, &values[1]));

    let mut group = group(c, "mix_90_10_2_threads");
    // One iteration is one operation on each thread.
    group.throughput(Throughput::Elements(MIX_THREADS as u64));
    // Each thread keeps its place in its inputs across samples, so writes keep alternating.
    let mut reg_threads = mix_threads(&names);
    group.bench_function("reg", |b| {
        b.iter_custom(|iters| {
            let states = std::mem::take(&mut reg_threads);
            let (elapsed, states) = run_threads(iters, states, |state, i| {
                if i % 10 == 9 {
                    let (name, parity) = state.writes.next();
                    let outcome = registry.set(name, values[parity].clone(), None, Some(LONG_TTL));
                    debug_assert_eq!(outcome.as_ref().map(|o| o.change), Ok(Change::Changed));
                    black_box(outcome).unwrap();
                } else {
                    black_box(registry.get(state.reads.next()));
                }
            });
            reg_threads = states;
            elapsed
        })
    });
    let mut base_threads = mix_threads(&names);
    group.bench_function("baseline_rwlock_hashmap", |b| {
        b.iter_custom(|iters| {
            let states = std::mem::take(&mut base_threads);
            let (elapsed, states) = run_threads(iters, states, |state, i| {
                if i % 10 == 9 {
                    let (name, parity) = state.writes.next();
                    let changed = locked.write().set(name, &values[parity], LONG_TTL);
                    debug_assert!(changed);
                    black_box(changed);
                } else {
                    black_box(locked.read().get(state.reads.next()));
                }
            });
            base_threads = states;
            elapsed
        })
    });
    group.finish();
}

// ---------------------------------------------------------------------------------------------
// Waking 10,000 waiters of one register
// ---------------------------------------------------------------------------------------------

/// Awaits `future`, counting its first poll in `polled` (so the bench knows it is parked).
async fn counting_first_poll<F: Future>(future: F, polled: &AtomicUsize) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut first = true;
    poll_fn(|cx| {
        let poll = future.as_mut().poll(cx);
        if first {
            first = false;
            polled.fetch_add(1, Ordering::Relaxed);
        }
        poll
    })
    .await
}

/// What the waiter tasks share with the bench: how many polled once, how many are left, and
/// the notification the last one sends.
struct WaitProgress {
    polled: AtomicUsize,
    remaining: AtomicUsize,
    all_done: tokio::sync::Notify,
}

impl WaitProgress {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            polled: AtomicUsize::new(0),
            remaining: AtomicUsize::new(WAITERS),
            all_done: tokio::sync::Notify::new(),
        })
    }

    fn finished_one(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.all_done.notify_one();
        }
    }

    /// Returns once every waiter task has been polled once (and so is parked).
    async fn all_parked(&self) {
        while self.polled.load(Ordering::Relaxed) < WAITERS {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// Spawns `WAITERS` tasks awaiting `make_wait()`, waits until all are parked, then times
/// `fire()` until the last task completed. Setup and teardown are not timed.
async fn time_wake<W, F>(
    mut make_wait: impl FnMut() -> W,
    fire: F,
    parked: impl Fn() -> bool,
) -> Duration
where
    W: Future + Send + 'static,
    F: FnOnce(),
{
    let progress = WaitProgress::new();
    for _ in 0..WAITERS {
        let wait = make_wait();
        let progress = Arc::clone(&progress);
        tokio::spawn(async move {
            counting_first_poll(wait, &progress.polled).await;
            progress.finished_one();
        });
    }
    progress.all_parked().await;
    assert!(parked());
    let start = Unqueued::now();
    fire();
    progress.all_done.notified().await;
    Unqueued::since(start)
}

/// Builds the runtime a wake bench runs on.
type MakeRuntime = fn() -> tokio::runtime::Runtime;

fn bench_wake(c: &mut Criterion<Unqueued>) {
    let mut group = group(c, "wake_10k_waiters");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Elements(WAITERS as u64));

    let runtimes: [(&str, MakeRuntime); 2] = [
        ("current_thread", || {
            tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap()
        }),
        ("2_workers", || {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_time()
                .build()
                .unwrap()
        }),
    ];
    for (flavor, make_runtime) in runtimes {
        let runtime = make_runtime();
        let registry = Registry::new();
        let values = two_values();
        registry
            .set("door", values[1].clone(), None, Some(LONG_TTL))
            .unwrap();
        let selector = Selector::name("door");
        let mut parity = 0;
        group.bench_function(BenchmarkId::new("reg", flavor), |b| {
            b.iter_custom(|iters| {
                runtime.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let after = registry.revision();
                        let value = values[parity].clone();
                        parity ^= 1;
                        total += time_wake(
                            || {
                                let (registry, selector) = (registry.clone(), selector.clone());
                                async move {
                                    let outcome = registry.wait(&selector, after).await;
                                    assert_eq!(outcome, WaitOutcome::Changed);
                                }
                            },
                            || {
                                let outcome =
                                    registry.set("door", value, None, Some(LONG_TTL)).unwrap();
                                assert_eq!(outcome.change, Change::Changed);
                            },
                            || registry.stats().parked_waits == WAITERS,
                        )
                        .await;
                    }
                    total
                })
            })
        });
        assert_eq!(registry.stats().parked_waits, 0);

        let (tx, rx) = tokio::sync::watch::channel(0_u64);
        group.bench_function(BenchmarkId::new("baseline_tokio_watch", flavor), |b| {
            b.iter_custom(|iters| {
                runtime.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total += time_wake(
                            || {
                                let mut rx = rx.clone();
                                rx.borrow_and_update();
                                async move { rx.changed().await.unwrap() }
                            },
                            || tx.send_modify(|v| *v += 1),
                            || tx.receiver_count() == WAITERS + 1,
                        )
                        .await;
                    }
                    total
                })
            })
        });

        let notify = Arc::new(tokio::sync::Notify::new());
        group.bench_function(BenchmarkId::new("baseline_tokio_notify", flavor), |b| {
            b.iter_custom(|iters| {
                runtime.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total += time_wake(
                            || {
                                let notify = Arc::clone(&notify);
                                async move { notify.notified().await }
                            },
                            || notify.notify_waiters(),
                            || true,
                        )
                        .await;
                    }
                    total
                })
            })
        });
    }
    group.finish();
}

// ---------------------------------------------------------------------------------------------
// The expiry wheel
// ---------------------------------------------------------------------------------------------

/// A registry on a manual clock with manual expiry, as the wheel benches need.
fn manual_registry() -> (Registry, ManualClock) {
    let clock = ManualClock::new();
    let registry = Registry::builder()
        .clock(clock.clone())
        .manual_expiry()
        .build();
    (registry, clock)
}

fn bench_wheel_not_due(c: &mut Criterion<Unqueued>) {
    // 1M registers with TTLs spread over 30..60 days: far beyond the few hours of clock time
    // the bench's 1 ms ticks add up to, so no timer is due or cascaded while measuring.
    let (registry, clock) = manual_registry();
    let value = Json::parse(b"1").unwrap();
    let mut rng = Rng::new(7);
    let day_ms = 24 * 3600 * 1000;
    for name in names(MILLION) {
        let ttl = Duration::from_millis(30 * day_ms + rng.below(30 * day_ms as usize) as u64);
        registry.set(&name, value.clone(), None, Some(ttl)).unwrap();
    }
    // The first pass moves the 1M new timers from the inbox onto the wheel.
    clock.advance(Duration::from_millis(1));
    assert_eq!(registry.expire_due(), 0);
    let (empty, empty_clock) = manual_registry();

    let mut group = group(c, "wheel_1m_not_due");
    group.throughput(Throughput::Elements(1));
    let tick = Duration::from_millis(1);
    group.bench_function("reg_1m_scheduled", |b| {
        b.iter(|| {
            clock.advance(tick);
            black_box(registry.expire_due())
        })
    });
    group.bench_function("baseline_reg_empty", |b| {
        b.iter(|| {
            empty_clock.advance(tick);
            black_box(empty.expire_due())
        })
    });
    group.finish();
    assert_eq!(registry.len(), MILLION);
}

/// Counts wake-ups (a waker for a hand-polled future).
#[derive(Default)]
struct CountingWaker(AtomicUsize);

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// The same-tick expiry baseline: the locked map plus its deadlines in a `BTreeMap` of
/// buckets (deadline in ms → names due then).
struct BaseExpiry {
    map: RwLock<BaseMap>,
    deadlines: BTreeMap<u64, Vec<Arc<str>>>,
}

impl BaseExpiry {
    fn new(names: &[String], value: &Json, deadline: u64) -> Self {
        let map = BaseMap::new(names, value);
        let due: Vec<Arc<str>> = names
            .iter()
            .map(|name| Arc::clone(map.map.get_key_value(name.as_str()).unwrap().0))
            .collect();
        Self {
            map: RwLock::new(map),
            deadlines: BTreeMap::from([(deadline, due)]),
        }
    }

    /// Removes every entry due at `now`, each taking a revision; returns the (name, revision)
    /// pairs a registry would wake watchers with.
    fn expire(&mut self, now: u64) -> Vec<(Arc<str>, u64)> {
        let mut map = self.map.write();
        let mut woken = Vec::new();
        while let Some(entry) = self.deadlines.first_entry() {
            if *entry.key() > now {
                break;
            }
            for name in entry.remove() {
                if map.map.remove(&name).is_some() {
                    map.revision += 1;
                    let revision = map.revision;
                    woken.push((name, revision));
                }
            }
        }
        woken
    }
}

fn bench_expire_same_tick(c: &mut Criterion<Unqueued>) {
    let names = names(MILLION);
    let value = Json::parse(b"1").unwrap();
    let ttl = Duration::from_secs(10);

    let mut group = group(c, "expire_1m_same_tick");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(100))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Elements(MILLION as u64));
    group.bench_function("reg", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let (registry, clock) = manual_registry();
                for name in &names {
                    registry.set(name, value.clone(), None, Some(ttl)).unwrap();
                }
                // The expiry thread drains new timers into the wheel every tick, long before
                // they are due; do that here, untimed.
                assert_eq!(registry.expire_due(), 0);
                // One any-register watcher, woken by the expiries.
                let revision = registry.revision();
                let mut wait = Box::pin(registry.wait(&Selector::All, revision));
                let waker = Arc::new(CountingWaker::default());
                let poll = wait
                    .as_mut()
                    .poll(&mut Context::from_waker(&Waker::from(Arc::clone(&waker))));
                assert!(poll.is_pending());
                clock.advance(ttl);

                let start = Unqueued::now();
                let expired = registry.expire_due();
                total += Unqueued::since(start);

                assert_eq!(expired, MILLION);
                assert_eq!(registry.revision(), revision + MILLION as u64);
                assert!(registry.is_empty());
                assert_eq!(waker.0.load(Ordering::Relaxed), 1);
                // Freeing the registry is not timed.
                drop(wait);
                drop(registry);
            }
            total
        })
    });
    group.bench_function("baseline_rwlock_hashmap_btreemap", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mut base = BaseExpiry::new(&names, &value, 10_000);
                let start = Unqueued::now();
                let woken = base.expire(10_000);
                total += Unqueued::since(start);
                assert_eq!(woken.len(), MILLION);
                drop((base, woken));
            }
            total
        })
    });
    group.finish();
}

// ---------------------------------------------------------------------------------------------
// JSON
// ---------------------------------------------------------------------------------------------

/// A JSON object of at least `target` bytes with unsorted keys, nested objects and arrays,
/// integers, decimals, exponents, escapes and non-ASCII text: what the canonicalizer must sort,
/// compact and pass through exactly.
fn json_object(target: usize) -> Vec<u8> {
    let mut out = String::from("{");
    let mut i = 0;
    while out.len() + 2 < target {
        if i > 0 {
            out.push_str(", ");
        }
        let field = match i % 6 {
            0 => format!(r#""zone_{i}": "k\u00fcche \"{i}\"\n""#),
            1 => format!(r#""celsius_{i}": {}.{:02}"#, 15 + i % 10, i * 7 % 100),
            2 => format!(r#""count_{i}": {}"#, 1000 + i * 37),
            3 => format!(r#""nested_{i}": {{"b": true, "a": null, "c": [1, 2.50, -3e2]}}"#),
            4 => format!(r#""tags_{i}": ["north", "west", "élan"]"#),
            _ => format!(r#""exp_{i}": 6.02e23"#),
        };
        out.push_str(&field);
        i += 1;
    }
    out.push('}');
    out.into_bytes()
}

fn bench_json(c: &mut Criterion<Unqueued>) {
    let mut group = group(c, "json_parse");
    for (label, target) in [("256B", 256), ("4KiB", 4096)] {
        let input = json_object(target);
        assert!(serde_json::from_slice::<serde_json::Value>(&input).is_ok());
        assert!(Json::parse(&input).is_ok());
        group.throughput(Throughput::Bytes(input.len() as u64));
        group.bench_with_input(
            BenchmarkId::new("reg_json_parse", label),
            &input,
            |b, input| b.iter(|| black_box(Json::parse(black_box(input)).unwrap())),
        );
        let mut scratch = input.clone();
        group.bench_with_input(
            BenchmarkId::new("simd_json_to_borrowed_value", label),
            &input,
            |b, input| {
                b.iter(|| {
                    // simd-json parses in place: restore the input first (a memcpy).
                    scratch.copy_from_slice(black_box(input));
                    black_box(simd_json::to_borrowed_value(&mut scratch).is_ok())
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("serde_json_value", label),
            &input,
            |b, input| {
                b.iter(|| {
                    black_box(
                        serde_json::from_slice::<serde_json::Value>(black_box(input)).unwrap(),
                    )
                })
            },
        );
        // The same output as reg's (sorted keys, compact), the obvious way; unlike reg it
        // rounds numbers to f64.
        group.bench_with_input(
            BenchmarkId::new("serde_json_value_to_string", label),
            &input,
            |b, input| {
                b.iter(|| {
                    let value: serde_json::Value =
                        serde_json::from_slice(black_box(input)).unwrap();
                    black_box(value.to_string())
                })
            },
        );
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(Unqueued);
    targets = bench_get,
        bench_set_changed,
        bench_refresh,
        bench_mix,
        bench_wake,
        bench_wheel_not_due,
        bench_expire_same_tick,
        bench_json
}
criterion_main!(benches);
