//! The one module that owns reg's synchronization primitives.
//!
//! Everything else in the crate imports `Arc`, atomics, locks, the concurrent map, the snapshot
//! cell and the queue from here, so that the loom models (`RUSTFLAGS="--cfg reg_loom"`) can swap
//! them for loom's instrumented types, the way tokio's `src/loom/` shim does.
//!
//! loom cannot see inside dashmap, arc-swap or crossbeam. Under `reg_loom` each of them is
//! replaced by a stand-in built from loom's `Mutex`: the stand-ins give the *same* guarantees the
//! real types document (a map operation on one key is atomic; a snapshot load returns a whole
//! value that was stored, never a mix; a queue pop returns each pushed item once) and no more, so
//! the models check *our* protocol on top of those guarantees.
//!
//! We use the custom cfg `reg_loom`, never the bare `loom` cfg: tokio reads `loom` and removes
//! `tokio::net` under it.
//!
//! `Arc` is `std::sync::Arc` in both builds: our protocols never rely on reference-count
//! ordering, and `loom::sync::Arc` cannot hold unsized values such as `Arc<str>`.

pub(crate) use std::sync::Arc;

#[cfg(not(reg_loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

#[cfg(reg_loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use std::borrow::Borrow;
use std::hash::Hash;

// ---------------------------------------------------------------------------------------------
// Mutex: parking_lot's (no poisoning, `lock()` returns the guard), or loom's.
// ---------------------------------------------------------------------------------------------

#[cfg(not(reg_loom))]
pub(crate) use parking_lot::{Mutex, MutexGuard};

/// loom's guard under parking_lot's name.
#[cfg(reg_loom)]
pub(crate) type MutexGuard<'a, T> = loom::sync::MutexGuard<'a, T>;

/// loom's mutex behind parking_lot's API (`lock()` returns the guard).
#[cfg(reg_loom)]
#[derive(Debug, Default)]
pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

#[cfg(reg_loom)]
impl<T> Mutex<T> {
    pub(crate) fn new(value: T) -> Self {
        Self(loom::sync::Mutex::new(value))
    }

    pub(crate) fn lock(&self) -> loom::sync::MutexGuard<'_, T> {
        // A poisoned lock means a model thread panicked: the model has already failed.
        match self.0.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Map: a concurrent hash map. dashmap (sharded `RwLock`s) or a loom mutex around a `HashMap`.
//
// The API is deliberately small and never hands out a guard: values are cloned out (they are
// `Arc`s), and closures that must run under the entry's lock are passed in. Each method is
// atomic with respect to the key it touches.
// ---------------------------------------------------------------------------------------------

/// The maps' hasher: foldhash, seeded at random per map (hashbrown's default). Names come from
/// the network, so the seed matters; SipHash (std's default) showed up in every profile of the
/// write path and the expiry pass, and foldhash measured faster on both (see the README).
#[cfg(not(reg_loom))]
pub(crate) type Hasher = foldhash::fast::RandomState;

/// A concurrent map; every operation on one key is atomic.
#[cfg(not(reg_loom))]
#[derive(Debug)]
pub(crate) struct Map<K: Eq + Hash, V> {
    inner: dashmap::DashMap<K, V, Hasher>,
}

/// A concurrent map; every operation on one key is atomic.
#[cfg(reg_loom)]
#[derive(Debug)]
pub(crate) struct Map<K: Eq + Hash, V> {
    inner: Mutex<std::collections::HashMap<K, V>>,
}

#[cfg(not(reg_loom))]
impl<K: Eq + Hash + Clone, V: Clone> Map<K, V> {
    pub(crate) fn new() -> Self {
        Self {
            inner: dashmap::DashMap::with_hasher(Hasher::default()),
        }
    }

    /// A clone of the value under `key`.
    pub(crate) fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.inner.get(key).map(|v| v.value().clone())
    }

    /// Runs `f` on the value under `key` while holding the entry's read lock.
    pub(crate) fn with<Q, R>(&self, key: &Q, f: impl FnOnce(&V) -> R) -> Option<R>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.inner.get(key).map(|v| f(v.value()))
    }

    pub(crate) fn insert(&self, key: K, value: V) -> Option<V> {
        self.inner.insert(key, value)
    }

    pub(crate) fn remove<Q>(&self, key: &Q) -> Option<(K, V)>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.inner.remove(key)
    }

    /// Removes the entry if `pred` (run under the entry's write lock) says so.
    pub(crate) fn remove_if<Q>(&self, key: &Q, pred: impl FnOnce(&K, &V) -> bool) -> Option<(K, V)>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.inner.remove_if(key, pred)
    }

    /// Gets or inserts the value under `key` and runs `f` on it while still holding the entry's
    /// write lock, so no `remove_if` on the same key can run in between.
    pub(crate) fn upsert_with<R>(
        &self,
        key: K,
        make: impl FnOnce() -> V,
        f: impl FnOnce(&mut V) -> R,
    ) -> R {
        let mut entry = self.inner.entry(key).or_insert_with(make);
        f(entry.value_mut())
    }

    /// Keeps the entries for which `keep` says so; runs shard by shard.
    pub(crate) fn retain(&self, keep: impl FnMut(&K, &mut V) -> bool) {
        self.inner.retain(keep)
    }

    /// Calls `f` on every entry, shard by shard (a shard's read lock is held during its calls).
    pub(crate) fn for_each(&self, mut f: impl FnMut(&K, &V)) {
        for entry in self.inner.iter() {
            f(entry.key(), entry.value());
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.inner.len()
    }

    /// Entries the map has room for without growing (all shards).
    pub(crate) fn capacity(&self) -> usize {
        self.inner.capacity()
    }

    /// Gives back the room of removed entries, shard by shard (each shard's write lock is held
    /// while it is rebuilt).
    pub(crate) fn shrink_to_fit(&self) {
        self.inner.shrink_to_fit()
    }
}

#[cfg(reg_loom)]
impl<K: Eq + Hash + Clone, V: Clone> Map<K, V> {
    pub(crate) fn new() -> Self {
        Self {
            inner: Mutex::new(std::collections::HashMap::new()),
        }
    }

    pub(crate) fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.inner.lock().get(key).cloned()
    }

    pub(crate) fn with<Q, R>(&self, key: &Q, f: impl FnOnce(&V) -> R) -> Option<R>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.inner.lock().get(key).map(f)
    }

    pub(crate) fn insert(&self, key: K, value: V) -> Option<V> {
        self.inner.lock().insert(key, value)
    }

    pub(crate) fn remove<Q>(&self, key: &Q) -> Option<(K, V)>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.inner.lock().remove_entry(key)
    }

    pub(crate) fn remove_if<Q>(&self, key: &Q, pred: impl FnOnce(&K, &V) -> bool) -> Option<(K, V)>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut map = self.inner.lock();
        let remove = match map.get_key_value(key) {
            Some((k, v)) => pred(k, v),
            None => false,
        };
        if remove {
            map.remove_entry(key)
        } else {
            None
        }
    }

    pub(crate) fn upsert_with<R>(
        &self,
        key: K,
        make: impl FnOnce() -> V,
        f: impl FnOnce(&mut V) -> R,
    ) -> R {
        let mut map = self.inner.lock();
        f(map.entry(key).or_insert_with(make))
    }

    pub(crate) fn retain(&self, keep: impl FnMut(&K, &mut V) -> bool) {
        self.inner.lock().retain(keep)
    }

    pub(crate) fn for_each(&self, mut f: impl FnMut(&K, &V)) {
        for (k, v) in self.inner.lock().iter() {
            f(k, v);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.inner.lock().len()
    }

    pub(crate) fn capacity(&self) -> usize {
        self.inner.lock().capacity()
    }

    pub(crate) fn shrink_to_fit(&self) {
        self.inner.lock().shrink_to_fit()
    }
}

// ---------------------------------------------------------------------------------------------
// SnapshotCell: an atomically replaceable `Arc<T>` (arc-swap, or a loom mutex around an `Arc`).
// A load returns one whole stored value, never a mix of two.
// ---------------------------------------------------------------------------------------------

/// An atomically replaceable `Arc<T>`: readers never block writers and never see a torn value.
#[derive(Debug)]
pub(crate) struct SnapshotCell<T> {
    #[cfg(not(reg_loom))]
    inner: arc_swap::ArcSwap<T>,
    #[cfg(reg_loom)]
    inner: Mutex<Arc<T>>,
}

impl<T> SnapshotCell<T> {
    pub(crate) fn new(value: Arc<T>) -> Self {
        Self {
            #[cfg(not(reg_loom))]
            inner: arc_swap::ArcSwap::new(value),
            #[cfg(reg_loom)]
            inner: Mutex::new(value),
        }
    }

    /// The current value. Never held across `.await`: it is an owned `Arc`.
    pub(crate) fn load(&self) -> Arc<T> {
        #[cfg(not(reg_loom))]
        {
            self.inner.load_full()
        }
        #[cfg(reg_loom)]
        {
            Arc::clone(&self.inner.lock())
        }
    }

    /// Runs `f` on the current value without touching its reference count (arc-swap's
    /// debt-list fast path). `f` must not block or await.
    pub(crate) fn peek<R>(&self, f: impl FnOnce(&T) -> R) -> R {
        #[cfg(not(reg_loom))]
        {
            f(&self.inner.load())
        }
        #[cfg(reg_loom)]
        {
            f(&self.inner.lock())
        }
    }

    pub(crate) fn store(&self, value: Arc<T>) {
        #[cfg(not(reg_loom))]
        {
            self.inner.store(value)
        }
        #[cfg(reg_loom)]
        {
            *self.inner.lock() = value;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Queue: an unbounded multi-producer queue (crossbeam's `SegQueue`, or a loom mutex around a
// `VecDeque`). Each pushed item is popped once.
// ---------------------------------------------------------------------------------------------

/// An unbounded lock-free MPMC queue.
#[derive(Debug)]
pub(crate) struct Queue<T> {
    #[cfg(not(reg_loom))]
    inner: crossbeam_queue::SegQueue<T>,
    #[cfg(reg_loom)]
    inner: Mutex<std::collections::VecDeque<T>>,
}

impl<T> Queue<T> {
    pub(crate) fn new() -> Self {
        Self {
            #[cfg(not(reg_loom))]
            inner: crossbeam_queue::SegQueue::new(),
            #[cfg(reg_loom)]
            inner: Mutex::new(std::collections::VecDeque::new()),
        }
    }

    pub(crate) fn push(&self, item: T) {
        #[cfg(not(reg_loom))]
        self.inner.push(item);
        #[cfg(reg_loom)]
        self.inner.lock().push_back(item);
    }

    pub(crate) fn pop(&self) -> Option<T> {
        #[cfg(not(reg_loom))]
        {
            self.inner.pop()
        }
        #[cfg(reg_loom)]
        {
            self.inner.lock().pop_front()
        }
    }
}
