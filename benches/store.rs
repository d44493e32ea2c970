//! Criterion benches for the registry core, each beside a baseline measured in the same run.
//!
//! The machine these run on is shared and noisy, so only the *ratio* between a benchmark and
//! its baseline (same group, same run) means anything; absolute figures drift by tens of
//! percent between runs.
//!
//! Baselines are what one would write without reg: a `std::collections::HashMap<Arc<str>, _>`
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
//! Run: `cargo bench --bench store` (all, about 4 minutes on 2 cores), or a group with
//! `cargo bench --bench store -- get`.

#![allow(clippy::unwrap_used)]

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::future::{poll_fn, Future};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::task::{Context, Wake, Waker};
use std::time::{Duration, Instant};

use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
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
fn group<'a>(
    c: &'a mut Criterion,
    name: &str,
) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut group = c.benchmark_group(name);
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    group
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

/// Walks a shuffled permutation of names, flipping a parity bit after each full pass: writing
/// `values[parity]` to the name returned therefore always changes it (every name was last
/// written with the other value, one pass earlier).
struct Cycle {
    order: Vec<u32>,
    pos: usize,
    parity: usize,
}

impl Cycle {
    fn new(indices: impl IntoIterator<Item = usize>, seed: u64) -> Self {
        let mut order: Vec<u32> = indices.into_iter().map(|i| i as u32).collect();
        Rng::new(seed).shuffle(&mut order);
        Self {
            order,
            pos: 0,
            // Registers start with `values[1]`, so the first pass writes `values[0]`.
            parity: 0,
        }
    }

    #[inline]
    fn next(&mut self) -> (usize, usize) {
        if self.pos == self.order.len() {
            self.pos = 0;
            self.parity ^= 1;
        }
        let index = self.order[self.pos] as usize;
        self.pos += 1;
        (index, self.parity)
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
    map: HashMap<Arc<str>, BaseEntry>,
    revision: u64,
    origin: Instant,
}

impl BaseMap {
    fn new(names: &[String], value: &Json) -> Self {
        let mut map = HashMap::with_capacity(names.len());
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

impl Pattern {
    /// `LOOKUPS` random name indices drawn from the pattern's subset.
    fn lookups(&self, seed: u64) -> Vec<u32> {
        random_indices(self.subset.len(), seed)
            .into_iter()
            .map(|i| self.subset[i as usize] as u32)
            .collect()
    }
}

fn bench_get(c: &mut Criterion) {
    let names = names(REGISTERS);
    let [value, _] = two_values();
    let registry = populated_registry(&names, &value);
    let base = BaseMap::new(&names, &value);
    let locked = RwLock::new(BaseMap::new(&names, &value));
    let mask = LOOKUPS - 1;

    let mut group = group(c, "get");
    group.throughput(Throughput::Elements(1));
    for pattern in patterns() {
        let lookups = pattern.lookups(1);
        let mut i = 0;
        group.bench_function(BenchmarkId::new("reg", pattern.label), |b| {
            b.iter(|| {
                i = (i + 1) & mask;
                black_box(registry.get(&names[lookups[i] as usize]))
            })
        });
        group.bench_function(BenchmarkId::new("baseline_hashmap", pattern.label), |b| {
            b.iter(|| {
                i = (i + 1) & mask;
                black_box(base.get(&names[lookups[i] as usize]))
            })
        });
        group.bench_function(
            BenchmarkId::new("baseline_rwlock_hashmap", pattern.label),
            |b| {
                b.iter(|| {
                    i = (i + 1) & mask;
                    black_box(locked.read().get(&names[lookups[i] as usize]))
                })
            },
        );
    }
    group.finish();
}

fn bench_set_changed(c: &mut Criterion) {
    let names = names(REGISTERS);
    let values = two_values();
    let registry = populated_registry(&names, &values[1]);
    let mut base = BaseMap::new(&names, &values[1]);
    let locked = RwLock::new(BaseMap::new(&names, &values[1]));

    // Every write must be a change, not a refresh: check the scheme once, then restore.
    {
        let mut check = Cycle::new(0..REGISTERS, 2);
        for _ in 0..2 * REGISTERS {
            let (n, parity) = check.next();
            let outcome = registry
                .set(&names[n], values[parity].clone(), None, Some(LONG_TTL))
                .unwrap();
            assert_eq!(outcome.change, Change::Changed);
        }
        // Two passes: every register holds `values[1]` again.
    }

    let mut group = group(c, "set_changed");
    group.throughput(Throughput::Elements(1));
    for pattern in patterns() {
        // Each variant starts from every register holding `values[1]` and, after it is
        // measured, finishes its pass untimed so that this holds again for the next one.
        let mut cycle = Cycle::new(pattern.subset.iter().copied(), 3);
        group.bench_function(BenchmarkId::new("reg", pattern.label), |b| {
            b.iter(|| {
                let (n, parity) = cycle.next();
                black_box(registry.set(&names[n], values[parity].clone(), None, Some(LONG_TTL)))
            })
        });
        // Finish the pass so every register holds `values[1]` again for the next pattern.
        while cycle.pos != cycle.order.len() || cycle.parity == 0 {
            let (n, parity) = cycle.next();
            registry
                .set(&names[n], values[parity].clone(), None, Some(LONG_TTL))
                .unwrap();
        }
        let mut cycle = Cycle::new(pattern.subset.iter().copied(), 3);
        group.bench_function(BenchmarkId::new("baseline_hashmap", pattern.label), |b| {
            b.iter(|| {
                let (n, parity) = cycle.next();
                black_box(base.set(&names[n], &values[parity], LONG_TTL))
            })
        });
        while cycle.pos != cycle.order.len() || cycle.parity == 0 {
            let (n, parity) = cycle.next();
            base.set(&names[n], &values[parity], LONG_TTL);
        }
        let mut cycle = Cycle::new(pattern.subset.iter().copied(), 3);
        group.bench_function(
            BenchmarkId::new("baseline_rwlock_hashmap", pattern.label),
            |b| {
                b.iter(|| {
                    let (n, parity) = cycle.next();
                    black_box(locked.write().set(&names[n], &values[parity], LONG_TTL))
                })
            },
        );
        while cycle.pos != cycle.order.len() || cycle.parity == 0 {
            let (n, parity) = cycle.next();
            locked.write().set(&names[n], &values[parity], LONG_TTL);
        }
    }
    group.finish();
}

fn bench_refresh(c: &mut Criterion) {
    let names = names(REGISTERS);
    let [value, _] = two_values();
    let registry = populated_registry(&names, &value);
    let mut base = BaseMap::new(&names, &value);
    let locked = RwLock::new(BaseMap::new(&names, &value));
    let outcome = registry
        .set(&names[0], value.clone(), None, Some(LONG_TTL))
        .unwrap();
    assert_eq!(outcome.change, Change::Refreshed);

    let mask = LOOKUPS - 1;
    let mut group = group(c, "refresh");
    group.throughput(Throughput::Elements(1));
    for pattern in patterns() {
        let lookups = pattern.lookups(4);
        let mut i = 0;
        group.bench_function(BenchmarkId::new("reg", pattern.label), |b| {
            b.iter(|| {
                i = (i + 1) & mask;
                let name = &names[lookups[i] as usize];
                black_box(registry.set(name, value.clone(), None, Some(LONG_TTL)))
            })
        });
        group.bench_function(BenchmarkId::new("baseline_hashmap", pattern.label), |b| {
            b.iter(|| {
                i = (i + 1) & mask;
                black_box(base.set(&names[lookups[i] as usize], &value, LONG_TTL))
            })
        });
        group.bench_function(
            BenchmarkId::new("baseline_rwlock_hashmap", pattern.label),
            |b| {
                b.iter(|| {
                    i = (i + 1) & mask;
                    black_box(
                        locked
                            .write()
                            .set(&names[lookups[i] as usize], &value, LONG_TTL),
                    )
                })
            },
        );
    }
    group.finish();
}

// ---------------------------------------------------------------------------------------------
// 90/10 read/write mix on 2 threads
// ---------------------------------------------------------------------------------------------

/// Threads in the mix (the machine's core count).
const MIX_THREADS: usize = 2;

/// Runs `op(state, i)` for `i in 0..iters` on one thread per state, all started together;
/// returns the wall time from the start signal until the last thread finished, and the states
/// (so cursors carry on into the next sample).
fn run_threads<S: Send>(
    iters: u64,
    states: Vec<S>,
    op: impl Fn(&mut S, u64) + Sync,
) -> (Duration, Vec<S>) {
    let barrier = Barrier::new(states.len() + 1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = states
            .into_iter()
            .map(|mut state| {
                let (barrier, op) = (&barrier, &op);
                scope.spawn(move || {
                    barrier.wait();
                    for i in 0..iters {
                        op(&mut state, i);
                    }
                    state
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        let states = handles.into_iter().map(|h| h.join().unwrap()).collect();
        (start.elapsed(), states)
    })
}

/// One mix thread's inputs: random names to read, and its own half of the names to write (so
/// the two threads' alternating values never cancel into a refresh).
struct MixThread {
    reads: Arc<Vec<u32>>,
    read_pos: usize,
    writes: Cycle,
}

fn mix_threads() -> Vec<MixThread> {
    let reads = Arc::new(random_indices(REGISTERS, 5));
    (0..MIX_THREADS)
        .map(|t| MixThread {
            reads: Arc::clone(&reads),
            read_pos: t * LOOKUPS / MIX_THREADS,
            writes: Cycle::new((t..REGISTERS).step_by(MIX_THREADS), 6 + t as u64),
        })
        .collect()
}

fn bench_mix(c: &mut Criterion) {
    let names = names(REGISTERS);
    let values = two_values();
    let registry = populated_registry(&names, &values[1]);
    let locked = RwLock::new(BaseMap::new(&names, &values[1]));
    let mask = LOOKUPS - 1;

    let mut group = group(c, "mix_90_10_2_threads");
    // One iteration is one operation on each thread.
    group.throughput(Throughput::Elements(MIX_THREADS as u64));
    // Each thread keeps its place in its inputs across samples, so writes keep alternating.
    let mut reg_threads = mix_threads();
    group.bench_function("reg", |b| {
        b.iter_custom(|iters| {
            let states = std::mem::take(&mut reg_threads);
            let (elapsed, states) = run_threads(iters, states, |state, i| {
                if i % 10 == 9 {
                    let (n, parity) = state.writes.next();
                    let outcome =
                        registry.set(&names[n], values[parity].clone(), None, Some(LONG_TTL));
                    debug_assert_eq!(outcome.as_ref().map(|o| o.change), Ok(Change::Changed));
                    black_box(outcome).unwrap();
                } else {
                    state.read_pos = (state.read_pos + 1) & mask;
                    black_box(registry.get(&names[state.reads[state.read_pos] as usize]));
                }
            });
            reg_threads = states;
            elapsed
        })
    });
    let mut base_threads = mix_threads();
    group.bench_function("baseline_rwlock_hashmap", |b| {
        b.iter_custom(|iters| {
            let states = std::mem::take(&mut base_threads);
            let (elapsed, states) = run_threads(iters, states, |state, i| {
                if i % 10 == 9 {
                    let (n, parity) = state.writes.next();
                    let changed = locked.write().set(&names[n], &values[parity], LONG_TTL);
                    debug_assert!(changed);
                    black_box(changed);
                } else {
                    state.read_pos = (state.read_pos + 1) & mask;
                    black_box(
                        locked
                            .read()
                            .get(&names[state.reads[state.read_pos] as usize]),
                    );
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
    let start = Instant::now();
    fire();
    progress.all_done.notified().await;
    start.elapsed()
}

/// Builds the runtime a wake bench runs on.
type MakeRuntime = fn() -> tokio::runtime::Runtime;

fn bench_wake(c: &mut Criterion) {
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

fn bench_wheel_not_due(c: &mut Criterion) {
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

/// The same-tick expiry baseline: the map plus a binary heap of deadlines.
struct BaseExpiry {
    map: RwLock<BaseMap>,
    heap: BinaryHeap<Reverse<(u64, Arc<str>)>>,
}

impl BaseExpiry {
    fn new(names: &[String], value: &Json, deadline: u64) -> Self {
        let map = BaseMap::new(names, value);
        let heap = map
            .map
            .keys()
            .map(|name| Reverse((deadline, Arc::clone(name))))
            .collect();
        Self {
            map: RwLock::new(map),
            heap,
        }
    }

    /// Removes every entry due at `now`, each taking a revision; returns the (name, revision)
    /// pairs a real registry would wake watchers with.
    fn expire(&mut self, now: u64) -> Vec<(Arc<str>, u64)> {
        let mut map = self.map.write();
        let mut woken = Vec::new();
        while let Some(Reverse((deadline, _))) = self.heap.peek() {
            if *deadline > now {
                break;
            }
            let Some(Reverse((_, name))) = self.heap.pop() else {
                break;
            };
            if map.map.remove(&name).is_some() {
                map.revision += 1;
                woken.push((name, map.revision));
            }
        }
        woken
    }
}

fn bench_expire_same_tick(c: &mut Criterion) {
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

                let start = Instant::now();
                let expired = registry.expire_due();
                total += start.elapsed();

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
    group.bench_function("baseline_rwlock_hashmap_binary_heap", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mut base = BaseExpiry::new(&names, &value, 10_000);
                let start = Instant::now();
                let woken = base.expire(10_000);
                total += start.elapsed();
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

fn bench_json(c: &mut Criterion) {
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

criterion_group!(
    benches,
    bench_get,
    bench_set_changed,
    bench_refresh,
    bench_mix,
    bench_wake,
    bench_wheel_not_due,
    bench_expire_same_tick,
    bench_json
);
criterion_main!(benches);
