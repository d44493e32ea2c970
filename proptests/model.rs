//! A reference model of the registry (plain maps and a manual clock) and a harness that applies
//! the same operations to a real [`Registry`] and the model, asserting after every step that
//! they agree. Shared by the proptests (`proptests/main.rs`) and the `store_ops` fuzz target
//! (`fuzz/fuzz_targets/store_ops.rs`, which includes this file by path), so it depends on
//! nothing but `reg` and `std`.
//!
//! What the harness checks after every operation:
//! * visible state: `get`, `read`, `list`, `len`, `expires_in` (values, metadata, revisions,
//!   creation revisions, remaining TTL) equal the model's;
//! * revisions: every change takes exactly the next revision; `set` reports
//!   `Created`/`Changed`/`Refreshed` as the model says; a refresh takes none;
//! * expiry: after the clock moves and `expire_due` runs, exactly the registers whose deadline
//!   (computed by the model at 1 ms resolution) has passed are gone, each with the next
//!   revision;
//! * the change feed carries exactly the model's events, in revision order;
//! * `changed_since` and `replay` agree with the model's history (including the removal
//!   history's horizon, and whether each removal replayed was a delete or an expiry);
//! * waits made before a step were woken (a counting waker) exactly when a register they watch
//!   changed, are then ready, and otherwise stay pending and unwoken; parked change-request
//!   takes are woken by a matching request and deliver what the model says;
//! * change requests: latest wins, each is delivered once, stale ones are never delivered, the
//!   cap refuses exactly when the model says, and a cancelled take consumed nothing;
//! * no leaks: parked-wait gauges match the live waits, and once every wait is dropped no watch
//!   slot is left.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use reg::{
    Change, ChangeRequest, Event, EventKind, Json, ManualClock, Registry, Selector, StoreError,
    Subscription, TakeRequests, Wait, WaitOutcome,
};

/// Register names. The last is over the configured name limit ([`MAX_NAME_LEN`]).
pub(crate) const NAMES: [&str; 5] = ["a", "b", "c", "d", "name-too-long"];
/// The configured name limit, in bytes.
pub(crate) const MAX_NAME_LEN: usize = 8;

/// Values, in classes of texts that canonicalize to the same JSON; the first text of each class
/// is its canonical form. A small domain, so equal writes (refreshes) are common.
pub(crate) const VALUES: &[&[&str]] = &[
    &["1"],
    &["1.0", " 1.0"],
    &[r#""x""#, r#" "x" "#],
    &[
        r#"{"a":1,"b":[true,null]}"#,
        r#"{ "b" : [ true , null ], "a" : 1 }"#,
    ],
    &["[]", "[ ]"],
    &["null"],
];

/// Metadata texts and their class: `0` is "none" (omitted, `null` and `{}` are the same),
/// `None` is invalid (not an object).
pub(crate) const METADATA: &[(Option<&str>, Option<usize>)] = &[
    (None, Some(0)),
    (Some("null"), Some(0)),
    (Some("{}"), Some(0)),
    (Some(r#"{"m":1}"#), Some(1)),
    (Some(r#"{ "m" : 1 }"#), Some(1)),
    (Some(r#"{"m":2}"#), Some(2)),
    (Some("[1]"), None),
    (Some("3"), None),
];

/// Canonical text of each valid metadata class (class 0 is "none").
const METADATA_CLASSES: [Option<&str>; 3] = [None, Some(r#"{"m":1}"#), Some(r#"{"m":2}"#)];

/// The registry's configuration under test, in ms where a time.
pub(crate) const DEFAULT_TTL_MS: u64 = 50;
pub(crate) const REQUEST_MAX_AGE_MS: u64 = 40;
pub(crate) const MAX_PENDING_REQUESTS: usize = 3;
pub(crate) const REMOVAL_HISTORY: usize = 3;

/// A TTL as given to `set`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ttl {
    /// No TTL: the default.
    Default,
    /// Zero: also the default.
    Zero,
    /// Whole milliseconds.
    Millis(u16),
    /// Microseconds: rounded up to whole milliseconds.
    Micros(u32),
}

/// One operation. Indices are taken modulo the size of their domain, so any value is valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    /// `set` of value class `value` (text variant `variant`) with metadata `metadata`.
    Set {
        name: u8,
        value: u8,
        variant: u8,
        metadata: u8,
        ttl: Ttl,
    },
    /// `set` of the register's current value and metadata (a refresh; text variant `variant`),
    /// or a create if absent.
    Refresh {
        name: u8,
        variant: u8,
        ttl: Ttl,
    },
    Remove {
        name: u8,
    },
    /// A change request.
    Request {
        name: u8,
        value: u8,
    },
    /// `try_take_requests`. `names` is a bit set over [`NAMES`]; empty means all.
    Take {
        names: u8,
    },
    /// `take_requests`, polled once; if pending it stays parked.
    ParkTake {
        names: u8,
    },
    /// Drops (cancels) the `index`-th parked take.
    DropTake {
        index: u8,
    },
    /// `wait(names, revision - back)`, polled once; if pending it stays parked.
    Wait {
        names: u8,
        back: u8,
    },
    /// Drops the `index`-th parked wait.
    DropWait {
        index: u8,
    },
    /// Moves the clock forward by `ms` and runs `expire_due`.
    Advance {
        ms: u16,
    },
    /// `changed_since` and `replay` at `revision - back`.
    Check {
        names: u8,
        back: u8,
    },
}

/// A waker that counts its wakes.
#[derive(Debug, Default)]
struct CountingWaker(AtomicUsize);

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A future under test with its own counting waker.
#[derive(Debug)]
struct Parked<F> {
    future: F,
    counter: Arc<CountingWaker>,
    waker: Waker,
    /// The counter's value at the last poll.
    seen_wakes: usize,
}

impl<F: Future + Unpin> Parked<F> {
    fn new(future: F) -> Self {
        let counter = Arc::new(CountingWaker::default());
        let waker = Waker::from(Arc::clone(&counter));
        Self {
            future,
            counter,
            waker,
            seen_wakes: 0,
        }
    }

    /// Whether the waker was called since the last poll.
    fn woken(&self) -> bool {
        self.counter.0.load(Ordering::SeqCst) != self.seen_wakes
    }

    fn poll(&mut self) -> Poll<F::Output> {
        self.seen_wakes = self.counter.0.load(Ordering::SeqCst);
        let mut cx = Context::from_waker(&self.waker);
        Pin::new(&mut self.future).poll(&mut cx)
    }
}

/// A parked register wait and what the model needs to judge it.
#[derive(Debug)]
struct ParkedWait {
    parked: Parked<Wait>,
    names: Option<BTreeSet<usize>>,
    /// The model's revision when the wait was made: a change to a watched register after this
    /// must fire it.
    made_at: u64,
}

/// A parked change-request take.
#[derive(Debug)]
struct ParkedTake {
    parked: Parked<TakeRequests>,
    names: Option<BTreeSet<usize>>,
    /// A matching request arrived since the last poll: it must have been woken.
    must_wake: bool,
}

/// The model's register.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ModelRegister {
    value: usize,
    metadata: usize,
    revision: u64,
    created: u64,
    deadline: u64,
}

/// The model: plain maps.
#[derive(Debug, Default)]
struct Model {
    now: u64,
    revision: u64,
    registers: BTreeMap<usize, ModelRegister>,
    /// Revision of each name's latest change (create, change, removal, expiry).
    last_change: BTreeMap<usize, u64>,
    /// Revision and cause (`Delete` or `Expire`) of each name's latest removal.
    last_removal: BTreeMap<usize, (u64, EventKind)>,
    /// Every removal revision, in order (for the removal history's horizon).
    removals: Vec<u64>,
    /// name → (value class, time made). Includes stale requests the registry may not have swept.
    requests: BTreeMap<usize, (usize, u64)>,
    expired: u64,
}

impl Model {
    /// Revisions at or below this may have had removals the registry forgot.
    fn horizon(&self) -> u64 {
        match self.removals.len().checked_sub(REMOVAL_HISTORY + 1) {
            Some(evicted) => self.removals[evicted],
            None => 0,
        }
    }

    fn selected(names: &Option<BTreeSet<usize>>, name: usize) -> bool {
        names.as_ref().is_none_or(|names| names.contains(&name))
    }

    /// Whether a selected register changed after `after`, exactly (no history limit).
    fn changed_after(&self, names: &Option<BTreeSet<usize>>, after: u64) -> bool {
        match names {
            None => self.revision > after,
            Some(names) => names
                .iter()
                .any(|n| self.last_change.get(n).is_some_and(|&r| r > after)),
        }
    }

    /// `changed_since` as documented: exact, except that an absent name whose removal the
    /// history may have forgotten counts as changed.
    fn changed_since(&self, names: &Option<BTreeSet<usize>>, after: u64) -> bool {
        match names {
            None => self.revision > after,
            Some(names) => names.iter().any(|n| match self.registers.get(n) {
                Some(register) => register.revision > after,
                None => match self.last_removal.get(n) {
                    Some(&(removed, _)) if removed > self.horizon() => removed > after,
                    _ => after < self.horizon(),
                },
            }),
        }
    }

    fn is_fresh(&self, at: u64) -> bool {
        is_fresh(self.now, at)
    }

    /// A take: removes every selected request, returns the fresh ones sorted by name.
    fn take(&mut self, names: &Option<BTreeSet<usize>>) -> Vec<(usize, usize)> {
        let taken: Vec<usize> = self
            .requests
            .keys()
            .copied()
            .filter(|&n| Self::selected(names, n))
            .collect();
        let mut out = Vec::new();
        for name in taken {
            if let Some((value, at)) = self.requests.remove(&name) {
                if self.is_fresh(at) {
                    out.push((name, value));
                }
            }
        }
        out
    }

    fn has_fresh_request(&self, names: &Option<BTreeSet<usize>>) -> bool {
        self.requests
            .iter()
            .any(|(&n, &(_, at))| Self::selected(names, n) && self.is_fresh(at))
    }
}

/// Whether a request made at `at` may still be delivered at `now`: younger than the age limit.
fn is_fresh(now: u64, at: u64) -> bool {
    now.saturating_sub(at) < REQUEST_MAX_AGE_MS
}

/// The registry under test, the model, and the futures parked on both.
#[derive(Debug)]
pub(crate) struct Harness {
    registry: Registry,
    clock: ManualClock,
    feed: Subscription,
    model: Model,
    waits: Vec<ParkedWait>,
    takes: Vec<ParkedTake>,
    /// Events the current step must have sent to the feed.
    expected_events: Vec<(EventKind, usize, u64)>,
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

fn json(text: &str) -> Json {
    match Json::parse(text.as_bytes()) {
        Ok(json) => json,
        Err(error) => panic!("test value {text:?} does not parse: {error}"),
    }
}

fn value_json(class: usize, variant: usize) -> Json {
    let texts = VALUES[class];
    json(texts[variant % texts.len()])
}

fn ttl_duration(ttl: Ttl) -> Option<Duration> {
    match ttl {
        Ttl::Default => None,
        Ttl::Zero => Some(Duration::ZERO),
        Ttl::Millis(ms) => Some(Duration::from_millis(ms.into())),
        Ttl::Micros(us) => Some(Duration::from_micros(us.into())),
    }
}

/// The model's TTL in ms: the default for none or zero, else rounded up to whole ms.
fn ttl_ms(ttl: Ttl) -> u64 {
    match ttl {
        Ttl::Default | Ttl::Zero => DEFAULT_TTL_MS,
        Ttl::Millis(0) => DEFAULT_TTL_MS,
        Ttl::Millis(ms) => ms.into(),
        Ttl::Micros(0) => DEFAULT_TTL_MS,
        Ttl::Micros(us) => u64::from(us).div_ceil(1000),
    }
}

/// The names a bit set selects (`None`: all), and the registry selector for it.
fn selection(bits: u8) -> (Option<BTreeSet<usize>>, Selector) {
    let names: BTreeSet<usize> = (0..NAMES.len()).filter(|i| bits & (1 << i) != 0).collect();
    if names.is_empty() {
        (None, Selector::All)
    } else {
        let selector = Selector::names(names.iter().map(|&i| NAMES[i]));
        (Some(names), selector)
    }
}

fn name_index(name: &str) -> usize {
    match NAMES.iter().position(|n| *n == name) {
        Some(index) => index,
        None => panic!("unknown name {name:?}"),
    }
}

impl Harness {
    pub(crate) fn new() -> Self {
        let clock = ManualClock::new();
        let registry = Registry::builder()
            .clock(clock.clone())
            .manual_expiry()
            .default_ttl(Duration::from_millis(DEFAULT_TTL_MS))
            .request_max_age(Duration::from_millis(REQUEST_MAX_AGE_MS))
            .max_pending_requests(MAX_PENDING_REQUESTS)
            .removal_history(REMOVAL_HISTORY)
            .max_name_len(MAX_NAME_LEN)
            // The harness drains the feed after every step (a step sends at most one event per
            // name), so a small ring suffices; the default 65,536 slots would dominate the cost
            // of a fuzz execution.
            .feed_capacity(64)
            .build();
        let feed = registry.subscribe();
        Self {
            registry,
            clock,
            feed,
            model: Model::default(),
            waits: Vec::new(),
            takes: Vec::new(),
            expected_events: Vec::new(),
        }
    }

    /// Applies `ops` one by one, checking after each, then shuts down and checks that every
    /// parked future ends and nothing leaks.
    pub(crate) fn run(ops: &[Op]) {
        let mut harness = Self::new();
        for op in ops {
            harness.apply(op);
            harness.check();
        }
        harness.finish();
    }

    pub(crate) fn apply(&mut self, op: &Op) {
        match *op {
            Op::Set {
                name,
                value,
                variant,
                metadata,
                ttl,
            } => {
                let value = usize::from(value) % VALUES.len();
                let metadata = usize::from(metadata) % METADATA.len();
                self.set(
                    usize::from(name) % NAMES.len(),
                    value,
                    variant.into(),
                    metadata,
                    ttl,
                );
            }
            Op::Refresh { name, variant, ttl } => {
                let name = usize::from(name) % NAMES.len();
                let (value, metadata) = match self.model.registers.get(&name) {
                    Some(register) => (register.value, register.metadata),
                    None => (0, 0),
                };
                // Metadata class 0..=2 has the same index in METADATA at 0, 3, 5.
                let metadata = [0, 3, 5][metadata];
                self.set(name, value, variant.into(), metadata, ttl);
            }
            Op::Remove { name } => self.remove(usize::from(name) % NAMES.len()),
            Op::Request { name, value } => self.request(
                usize::from(name) % NAMES.len(),
                usize::from(value) % VALUES.len(),
            ),
            Op::Take { names } => {
                let (names, selector) = selection(names);
                let taken = self.registry.try_take_requests(&selector);
                let expected = self.model.take(&names);
                assert_requests(&taken, &expected, "try_take_requests");
            }
            Op::ParkTake { names } => {
                let (names, selector) = selection(names);
                let mut parked = Parked::new(self.registry.take_requests(selector));
                let expected = self.model.take(&names);
                match parked.poll() {
                    Poll::Ready(taken) => {
                        assert!(!expected.is_empty(), "take ready with nothing pending");
                        assert_requests(&taken, &expected, "take_requests");
                    }
                    Poll::Pending => {
                        assert!(expected.is_empty(), "take pending, model has {expected:?}");
                        self.takes.push(ParkedTake {
                            parked,
                            names,
                            must_wake: false,
                        });
                    }
                }
            }
            Op::DropTake { index } => {
                if !self.takes.is_empty() {
                    let index = usize::from(index) % self.takes.len();
                    // Cancelled: consumes nothing (the model does nothing).
                    drop(self.takes.remove(index));
                }
            }
            Op::Wait { names, back } => {
                let (names, selector) = selection(names);
                let after = self.model.revision.saturating_sub(back.into());
                let mut parked = Parked::new(self.registry.wait(&selector, after));
                let expected = self.model.changed_since(&names, after);
                match parked.poll() {
                    Poll::Ready(outcome) => {
                        assert!(expected, "wait after {after} ready, model says unchanged");
                        assert_eq!(outcome, WaitOutcome::Changed);
                    }
                    Poll::Pending => {
                        assert!(!expected, "wait after {after} pending, model says changed");
                        self.waits.push(ParkedWait {
                            parked,
                            names,
                            made_at: self.model.revision,
                        });
                    }
                }
            }
            Op::DropWait { index } => {
                if !self.waits.is_empty() {
                    let index = usize::from(index) % self.waits.len();
                    drop(self.waits.remove(index));
                }
            }
            Op::Advance { ms } => self.advance(ms.into()),
            Op::Check { names, back } => {
                let (names, selector) = selection(names);
                let after = self.model.revision.saturating_sub(back.into());
                assert_eq!(
                    self.registry.changed_since(&selector, after),
                    self.model.changed_since(&names, after),
                    "changed_since({names:?}, {after})"
                );
                self.check_replay(&names, &selector, after);
            }
        }
    }

    fn set(&mut self, name: usize, value: usize, variant: usize, metadata: usize, ttl: Ttl) {
        let (metadata_text, metadata_class) = METADATA[metadata];
        let result = self.registry.set(
            NAMES[name],
            value_json(value, variant),
            metadata_text.map(json),
            ttl_duration(ttl),
        );
        if NAMES[name].len() > MAX_NAME_LEN {
            assert!(
                matches!(result, Err(StoreError::NameTooLong { .. })),
                "{result:?}"
            );
            return;
        }
        let Some(metadata) = metadata_class else {
            assert!(
                matches!(result, Err(StoreError::MetadataNotObject { .. })),
                "{result:?}"
            );
            return;
        };
        let outcome = match result {
            Ok(outcome) => outcome,
            Err(error) => panic!("set {} failed: {error}", NAMES[name]),
        };
        let model = &mut self.model;
        let deadline = model.now + ttl_ms(ttl);
        match model.registers.get_mut(&name) {
            Some(register) if register.value == value && register.metadata == metadata => {
                register.deadline = deadline;
                assert_eq!(outcome.change, Change::Refreshed);
                assert_eq!(outcome.revision, register.revision);
            }
            Some(register) => {
                model.revision += 1;
                register.value = value;
                register.metadata = metadata;
                register.revision = model.revision;
                register.deadline = deadline;
                model.last_change.insert(name, model.revision);
                assert_eq!(outcome.change, Change::Changed);
                assert_eq!(outcome.revision, model.revision);
                self.changed(EventKind::Set, name);
            }
            None => {
                model.revision += 1;
                model.registers.insert(
                    name,
                    ModelRegister {
                        value,
                        metadata,
                        revision: model.revision,
                        created: model.revision,
                        deadline,
                    },
                );
                model.last_change.insert(name, model.revision);
                assert_eq!(outcome.change, Change::Created);
                assert_eq!(outcome.revision, model.revision);
                self.changed(EventKind::Set, name);
            }
        }
    }

    fn remove(&mut self, name: usize) {
        let removed = self.registry.remove(NAMES[name]);
        if self.model.registers.remove(&name).is_some() {
            self.model.revision += 1;
            assert_eq!(removed, Some(self.model.revision));
            self.removed(EventKind::Delete, name);
        } else {
            assert_eq!(removed, None, "removed {} that does not exist", NAMES[name]);
        }
    }

    /// Records a removal at the model's current revision.
    fn removed(&mut self, kind: EventKind, name: usize) {
        let revision = self.model.revision;
        self.model.last_change.insert(name, revision);
        self.model.last_removal.insert(name, (revision, kind));
        self.model.removals.push(revision);
        self.changed(kind, name);
    }

    /// A change to `name` at the model's current revision: expect its feed event.
    fn changed(&mut self, kind: EventKind, name: usize) {
        self.expected_events.push((kind, name, self.model.revision));
    }

    fn request(&mut self, name: usize, value: usize) {
        let result = self.registry.request(NAMES[name], value_json(value, 0));
        if NAMES[name].len() > MAX_NAME_LEN {
            assert!(
                matches!(result, Err(StoreError::NameTooLong { .. })),
                "{result:?}"
            );
            return;
        }
        let model = &mut self.model;
        if model.requests.len() >= MAX_PENDING_REQUESTS && !model.requests.contains_key(&name) {
            assert_eq!(
                result,
                Err(StoreError::TooManyRequests {
                    limit: MAX_PENDING_REQUESTS
                })
            );
            return;
        }
        assert_eq!(result, Ok(()), "request {} refused", NAMES[name]);
        model.requests.insert(name, (value, model.now));
        for take in &mut self.takes {
            if Model::selected(&take.names, name) {
                take.must_wake = true;
            }
        }
    }

    fn advance(&mut self, ms: u64) {
        self.clock.advance(Duration::from_millis(ms));
        self.model.now += ms;
        let expired = self.registry.expire_due();
        let now = self.model.now;
        let due: BTreeSet<usize> = self
            .model
            .registers
            .iter()
            .filter(|(_, r)| r.deadline <= now)
            .map(|(&n, _)| n)
            .collect();
        assert_eq!(
            expired,
            due.len(),
            "expire_due at {now}: model expects {due:?}"
        );
        // The pass takes one revision per expired register, in an order the model does not
        // predict: learn it from the feed, after checking it is exactly the due set.
        let mut events = Vec::new();
        for _ in 0..due.len() {
            events.push(self.next_event());
        }
        let mut names = BTreeSet::new();
        for event in &events {
            assert_eq!(event.kind, EventKind::Expire, "{event:?}");
            assert!(event.register.is_none());
            self.model.revision += 1;
            assert_eq!(event.revision, self.model.revision, "{event:?}");
            let name = name_index(&event.name);
            assert!(due.contains(&name), "expired {} early", event.name);
            assert!(names.insert(name), "expired {} twice", event.name);
            self.model.registers.remove(&name);
            self.model.expired += 1;
            self.removed(EventKind::Expire, name);
        }
        // The feed events were consumed above.
        self.expected_events.clear();

        // The pass may also have swept stale change requests: either all of them or none.
        let total = self.model.requests.len();
        let fresh = self
            .model
            .requests
            .values()
            .filter(|&&(_, at)| self.model.is_fresh(at))
            .count();
        let pending = self.registry.stats().pending_requests;
        if pending == fresh && fresh != total {
            let now = self.model.now;
            self.model
                .requests
                .retain(|_, &mut (_, at)| is_fresh(now, at));
        } else {
            assert_eq!(pending, total, "pending requests after a sweep");
        }
    }

    fn next_event(&mut self) -> Event {
        match self.feed.try_recv() {
            Ok(Some(event)) => event,
            Ok(None) => panic!("feed: an expected event is missing"),
            Err(error) => panic!("feed: {error}"),
        }
    }

    fn check_replay(&self, names: &Option<BTreeSet<usize>>, selector: &Selector, after: u64) {
        let replay = self.registry.replay(selector, after);
        let model = &self.model;
        assert_eq!(replay.revision, model.revision);
        let complete = after >= model.horizon();
        assert_eq!(replay.complete, complete, "replay after {after}");
        let mut set: Vec<(u64, usize)> = model
            .registers
            .iter()
            .filter(|(&n, r)| Model::selected(names, n) && r.revision > after)
            .map(|(&n, r)| (r.revision, n))
            .collect();
        set.sort_unstable();
        let got: Vec<(u64, usize)> = replay
            .set
            .iter()
            .map(|r| (r.revision(), name_index(r.name())))
            .collect();
        assert_eq!(got, set, "replay({names:?}, {after}).set");
        if complete {
            // Each with its cause: what the feed said when it was removed.
            let mut removed: Vec<(u64, usize, EventKind)> = model
                .last_removal
                .iter()
                .filter(|(&n, &(r, _))| {
                    Model::selected(names, n) && r > after && !model.registers.contains_key(&n)
                })
                .map(|(&n, &(r, kind))| (r, n, kind))
                .collect();
            removed.sort_unstable_by_key(|&(r, _, _)| r);
            let got: Vec<(u64, usize, EventKind)> = replay
                .removed
                .iter()
                .map(|(name, r, kind)| (*r, name_index(name), *kind))
                .collect();
            assert_eq!(got, removed, "replay({names:?}, {after}).removed");
        }
    }

    /// Everything the registry shows must equal the model.
    pub(crate) fn check(&mut self) {
        self.check_feed();
        self.check_registers();
        self.check_waits();
        self.check_takes();
        let stats = self.registry.stats();
        assert_eq!(stats.revision, self.model.revision);
        assert_eq!(stats.registers, self.model.registers.len());
        assert_eq!(stats.pending_requests, self.model.requests.len());
        assert_eq!(stats.parked_waits, self.waits.len());
        assert_eq!(stats.parked_takes, self.takes.len());
        assert_eq!(stats.expired, self.model.expired);
    }

    fn check_feed(&mut self) {
        for (kind, name, revision) in std::mem::take(&mut self.expected_events) {
            let event = self.next_event();
            assert_eq!(
                (event.kind, &*event.name, event.revision),
                (kind, NAMES[name], revision)
            );
            match (&event.register, self.model.registers.get(&name)) {
                (Some(register), Some(model)) if kind == EventKind::Set => {
                    assert_eq!(register.revision(), revision);
                    assert_eq!(register.value(), &value_json(model.value, 0));
                    assert_eq!(
                        register.metadata().map(Json::as_str),
                        METADATA_CLASSES[model.metadata]
                    );
                }
                (None, _) if kind != EventKind::Set => {}
                (register, _) => panic!("{kind} event with register {register:?}"),
            }
        }
        match self.feed.try_recv() {
            Ok(None) => {}
            other => panic!("unexpected feed item {other:?}"),
        }
    }

    fn check_registers(&self) {
        let model = &self.model;
        assert_eq!(self.registry.revision(), model.revision);
        assert_eq!(self.registry.len(), model.registers.len());
        assert_eq!(self.registry.is_empty(), model.registers.is_empty());
        for (index, name) in NAMES.iter().enumerate() {
            let got = self.registry.get(name);
            let expected = model.registers.get(&index);
            match (&got, expected) {
                (None, None) => assert_eq!(self.registry.expires_in(name), None),
                (Some(got), Some(expected)) => {
                    assert_eq!(got.name(), *name);
                    assert_eq!(got.value(), &value_json(expected.value, 0));
                    assert_eq!(got.value().as_str(), VALUES[expected.value][0]);
                    assert_eq!(
                        got.metadata().map(Json::as_str),
                        METADATA_CLASSES[expected.metadata],
                    );
                    assert_eq!(got.revision(), expected.revision, "revision of {name}");
                    assert_eq!(got.created(), expected.created, "created of {name}");
                    assert_eq!(
                        self.registry.expires_in(name),
                        Some(Duration::from_millis(expected.deadline - model.now)),
                        "expires_in({name})"
                    );
                }
                _ => panic!("{name}: registry {got:?}, model {expected:?}"),
            }
        }
        let list = self.registry.list();
        assert_eq!(list.revision, model.revision);
        let listed: Vec<(&str, u64)> = list
            .registers
            .iter()
            .map(|r| (r.name(), r.revision()))
            .collect();
        let expected: Vec<(&str, u64)> = model
            .registers
            .iter()
            .map(|(&n, r)| (NAMES[n], r.revision))
            .collect();
        assert_eq!(listed, expected, "list");
        let read = self.registry.read(&Selector::names(["d", "a", "zz"]));
        let read: Vec<&str> = read.registers.iter().map(|r| r.name()).collect();
        let expected: Vec<&str> = [0, 3]
            .into_iter()
            .filter(|n| model.registers.contains_key(n))
            .map(|n| NAMES[n])
            .collect();
        assert_eq!(read, expected, "read(d, a, zz)");
    }

    /// Each parked wait was woken iff a watched register changed since it was made; then it is
    /// ready, and it is dropped.
    fn check_waits(&mut self) {
        let model = &self.model;
        self.waits.retain_mut(|wait| {
            let changed = model.changed_after(&wait.names, wait.made_at);
            assert_eq!(
                wait.parked.woken(),
                changed,
                "wait on {:?} made at {}: woken != changed",
                wait.names,
                wait.made_at
            );
            match wait.parked.poll() {
                Poll::Ready(outcome) => {
                    assert!(changed, "wait ready with nothing changed");
                    assert_eq!(outcome, WaitOutcome::Changed);
                    false
                }
                Poll::Pending => {
                    assert!(!changed, "woken wait still pending");
                    true
                }
            }
        });
    }

    /// Each parked take was woken iff a matching request arrived since its last poll; a woken
    /// take is polled and delivers what the model's take says.
    fn check_takes(&mut self) {
        let mut index = 0;
        while index < self.takes.len() {
            let take = &mut self.takes[index];
            assert_eq!(
                take.parked.woken(),
                take.must_wake,
                "take on {:?}: woken != a matching request arrived",
                take.names
            );
            if !take.must_wake {
                assert!(
                    !self.model.has_fresh_request(&take.names),
                    "a parked take was not woken for a pending request"
                );
                index += 1;
                continue;
            }
            take.must_wake = false;
            let expected = self.model.take(&take.names);
            let take = &mut self.takes[index];
            match take.parked.poll() {
                Poll::Ready(taken) => {
                    assert_requests(&taken, &expected, "parked take");
                    assert!(!expected.is_empty(), "parked take ready with nothing");
                    self.takes.remove(index);
                }
                Poll::Pending => {
                    assert!(
                        expected.is_empty(),
                        "parked take pending, model has {expected:?}"
                    );
                    index += 1;
                }
            }
        }
    }

    /// Shuts down: every parked future ends, and once all are dropped nothing is left parked.
    pub(crate) fn finish(mut self) {
        self.registry.shutdown();
        assert!(self.registry.is_shut_down());
        for mut wait in std::mem::take(&mut self.waits) {
            assert!(wait.parked.woken(), "shutdown did not wake a wait");
            assert_eq!(wait.parked.poll(), Poll::Ready(WaitOutcome::Shutdown));
        }
        for mut take in std::mem::take(&mut self.takes) {
            assert!(take.parked.woken(), "shutdown did not wake a take");
            let expected = self.model.take(&take.names);
            match take.parked.poll() {
                Poll::Ready(taken) => assert_requests(&taken, &expected, "take at shutdown"),
                Poll::Pending => panic!("take pending after shutdown"),
            }
        }
        let mut late = Parked::new(self.registry.wait(&Selector::All, self.model.revision));
        assert_eq!(late.poll(), Poll::Ready(WaitOutcome::Shutdown));
        drop(late);
        // Requests are kept through shutdown: a final take gets what is left.
        let rest = self.registry.try_take_requests(&Selector::All);
        let expected = self.model.take(&None);
        assert_requests(&rest, &expected, "final take");
        let stats = self.registry.stats();
        assert_eq!((stats.parked_waits, stats.parked_takes), (0, 0));
        assert_eq!(self.registry.watch_slots(), 0, "watch slots leaked");
    }
}

fn assert_requests(taken: &[ChangeRequest], expected: &[(usize, usize)], what: &str) {
    let got: Vec<(usize, Json)> = taken
        .iter()
        .map(|r| (name_index(&r.name), r.value.clone()))
        .collect();
    let expected: Vec<(usize, Json)> = expected
        .iter()
        .map(|&(n, v)| (n, value_json(v, 0)))
        .collect();
    assert_eq!(got, expected, "{what}");
}
