//! Removal history: which names were removed at which revision, so that a wait that starts from
//! an old revision still sees that a register it watches was removed after it.
//!
//! Bounded: it keeps the latest `capacity` removals. Older ones are forgotten, and `horizon`
//! remembers the newest forgotten revision: a question about a revision older than that cannot
//! be answered "no", so it is answered "changed" (a spurious wake, never a missed one).
//!
//! Lives inside the commit lock's state: it is written only by changes.

use std::collections::{HashMap, VecDeque};

use crate::store::register::Revision;
use crate::sync::Arc;

#[derive(Debug)]
pub(crate) struct History {
    /// Latest removal revision per name.
    tombstones: HashMap<Arc<str>, Revision, foldhash::fast::RandomState>,
    /// Removals in revision order, for eviction.
    order: VecDeque<(Revision, Arc<str>)>,
    /// How many removals to keep.
    capacity: usize,
    /// Revisions at or below this may have had removals that were forgotten.
    horizon: Revision,
}

impl History {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            tombstones: HashMap::default(),
            order: VecDeque::new(),
            capacity,
            horizon: 0,
        }
    }

    /// Records that `name` was removed at `revision` (revisions arrive in increasing order).
    pub(crate) fn record(&mut self, name: Arc<str>, revision: Revision) {
        if self.capacity == 0 {
            self.horizon = revision;
            return;
        }
        self.tombstones.insert(Arc::clone(&name), revision);
        self.order.push_back((revision, name));
        while self.order.len() > self.capacity {
            let Some((evicted, name)) = self.order.pop_front() else {
                break;
            };
            if self.tombstones.get(&name) == Some(&evicted) {
                self.tombstones.remove(&name);
            }
            self.horizon = evicted;
        }
    }

    /// Whether `name` (absent now) may have been removed after revision `after`: true when a
    /// removal after `after` is on record, or when `after` is older than the history kept.
    pub(crate) fn removed_after(&self, name: &str, after: Revision) -> bool {
        match self.tombstones.get(name) {
            Some(&removed) => removed > after,
            None => after < self.horizon,
        }
    }

    /// Removals after `after`, as (name, revision), or `None` when `after` is older than the
    /// history kept.
    pub(crate) fn removals_after(&self, after: Revision) -> Option<Vec<(Arc<str>, Revision)>> {
        if after < self.horizon {
            return None;
        }
        let start = self
            .order
            .partition_point(|(revision, _)| *revision <= after);
        Some(
            self.order
                .range(start..)
                .filter(|(revision, name)| self.tombstones.get(name) == Some(revision))
                .map(|(revision, name)| (Arc::clone(name), *revision))
                .collect(),
        )
    }

    /// The newest revision whose removals may have been forgotten.
    #[cfg(test)]
    pub(crate) fn horizon(&self) -> Revision {
        self.horizon
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_removals_and_forgets_the_oldest() {
        let mut history = History::new(2);
        history.record(Arc::from("a"), 5);
        history.record(Arc::from("b"), 7);
        assert!(history.removed_after("a", 4));
        assert!(!history.removed_after("a", 5));
        assert!(!history.removed_after("c", 0), "nothing forgotten yet");
        history.record(Arc::from("c"), 9);
        assert_eq!(history.horizon(), 5);
        assert!(history.removed_after("a", 4), "forgotten: cannot say no");
        assert!(!history.removed_after("a", 5));
        assert_eq!(
            history.removals_after(6),
            Some(vec![(Arc::from("b"), 7), (Arc::from("c"), 9)])
        );
        assert_eq!(history.removals_after(4), None);
    }

    #[test]
    fn a_name_removed_twice_keeps_its_latest_removal() {
        let mut history = History::new(3);
        history.record(Arc::from("a"), 2);
        history.record(Arc::from("a"), 4);
        assert!(history.removed_after("a", 3));
        assert_eq!(history.removals_after(0), Some(vec![(Arc::from("a"), 4)]));
    }
}
