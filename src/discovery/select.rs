//! Choosing instances: [`Filter`] (which instances a query lists) and [`Pick`] (which one a
//! caller gets: round robin, random, same host first, with filters and a custom predicate).
//! Both work on a slice of instances, the server's catalog or a client's cache alike, and
//! picking allocates nothing.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::discovery::catalog::InstanceEntry;
use crate::discovery::instance::{Instance, Status};

/// Which instances a query lists: all conditions must hold. The default lists every instance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only this version.
    pub version: Option<String>,
    /// Only instances with every one of these tags.
    pub tags: Vec<String>,
    /// Only instances whose metadata has every one of these key = value pairs.
    pub meta: Vec<(String, String)>,
    /// Only instances with this status.
    pub status: Option<Status>,
    /// Only passing instances (Consul's `?passing`).
    pub passing: bool,
}

impl Filter {
    /// Lists every instance.
    pub fn new() -> Self {
        Filter::default()
    }

    /// Only passing instances.
    pub fn passing(mut self) -> Self {
        self.passing = true;
        self
    }

    /// Only instances with `tag` (with several, all of them).
    pub fn tag(mut self, tag: &str) -> Self {
        self.tags.push(tag.to_owned());
        self
    }

    /// Only `version`.
    pub fn version(mut self, version: &str) -> Self {
        self.version = Some(version.to_owned());
        self
    }

    /// Only instances whose metadata has `key` = `value`.
    pub fn meta(mut self, key: &str, value: &str) -> Self {
        self.meta.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Only instances with `status`.
    pub fn status(mut self, status: Status) -> Self {
        self.status = Some(status);
        self
    }

    /// Whether `instance` is listed.
    pub fn matches(&self, instance: &Instance) -> bool {
        (!self.passing || instance.status == Status::Passing)
            && self.status.is_none_or(|status| instance.status == status)
            && self
                .version
                .as_deref()
                .is_none_or(|version| instance.version == version)
            && self.tags.iter().all(|tag| instance.tags.contains(tag))
            && self
                .meta
                .iter()
                .all(|(key, value)| instance.meta.get(key) == Some(value))
    }
}

/// How [`Pick`] chooses among the instances that match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Strategy {
    RoundRobin,
    Random,
}

/// A predicate over instances, for [`Pick::matching`].
pub type Predicate = Arc<dyn Fn(&Instance) -> bool + Send + Sync>;

/// How to pick one instance: a filter, an optional predicate, "prefer this host", and round
/// robin or random among what is left.
///
/// ```
/// use reg::discovery::Pick;
///
/// // Passing v2 instances, on this host when there is one, taken in turn.
/// let pick = Pick::round_robin().passing().version("2").prefer_host("10.0.0.5");
/// # let _ = pick;
/// ```
#[derive(Clone)]
pub struct Pick {
    filter: Filter,
    strategy: Strategy,
    prefer_host: Option<String>,
    predicate: Option<Predicate>,
}

impl fmt::Debug for Pick {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pick")
            .field("filter", &self.filter)
            .field("strategy", &self.strategy)
            .field("prefer_host", &self.prefer_host)
            .field("predicate", &self.predicate.is_some())
            .finish()
    }
}

impl Default for Pick {
    /// Round robin over passing instances.
    fn default() -> Self {
        Pick::round_robin().passing()
    }
}

impl Pick {
    /// Each matching instance in turn (over every instance: add [`passing`](Self::passing)).
    pub fn round_robin() -> Self {
        Pick {
            filter: Filter::default(),
            strategy: Strategy::RoundRobin,
            prefer_host: None,
            predicate: None,
        }
    }

    /// A matching instance at random.
    pub fn random() -> Self {
        Pick {
            strategy: Strategy::Random,
            ..Pick::round_robin()
        }
    }

    /// Only passing instances.
    pub fn passing(mut self) -> Self {
        self.filter.passing = true;
        self
    }

    /// Only instances with `tag`.
    pub fn tag(mut self, tag: &str) -> Self {
        self.filter.tags.push(tag.to_owned());
        self
    }

    /// Only `version`.
    pub fn version(mut self, version: &str) -> Self {
        self.filter.version = Some(version.to_owned());
        self
    }

    /// Only instances whose metadata has `key` = `value`.
    pub fn meta(mut self, key: &str, value: &str) -> Self {
        self.filter.meta.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Only instances that `filter` lists.
    pub fn filter(mut self, filter: Filter) -> Self {
        self.filter = filter;
        self
    }

    /// Instances on `host` (their [`Instance::host`]) first: others only when none there
    /// matches. eddieraa/registry's "localhost first".
    pub fn prefer_host(mut self, host: &str) -> Self {
        self.prefer_host = Some(host.to_owned());
        self
    }

    /// Only instances for which `predicate` is true.
    pub fn matching(
        mut self,
        predicate: impl Fn(&Instance) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.predicate = Some(Arc::new(predicate));
        self
    }

    /// No filter, predicate or host preference: every instance is a candidate.
    fn takes_any(&self) -> bool {
        self.filter == Filter::default() && self.predicate.is_none() && self.prefer_host.is_none()
    }

    /// Only the passing filter: [`Candidates`] keeps those apart.
    fn takes_passing(&self) -> bool {
        self.filter == Filter::default().passing()
            && self.predicate.is_none()
            && self.prefer_host.is_none()
    }

    /// The k-th of `count` candidates, by the strategy.
    fn turn(&self, count: usize, turn: &AtomicUsize) -> usize {
        match self.strategy {
            // Ordering: Relaxed: the counter only spreads picks; no data hangs on it.
            Strategy::RoundRobin => turn.fetch_add(1, Ordering::Relaxed) % count,
            Strategy::Random => (random() % count as u64) as usize,
        }
    }

    fn admits(&self, instance: &Instance) -> bool {
        self.filter.matches(instance) && self.predicate.as_ref().is_none_or(|p| p(instance))
    }

    /// Picks from `instances`; `turn` is the round-robin counter (one per view). `None` when
    /// nothing matches. Allocates nothing: two passes over the slice.
    pub fn choose<'a>(
        &self,
        instances: &'a [Arc<InstanceEntry>],
        turn: &AtomicUsize,
    ) -> Option<&'a Arc<InstanceEntry>> {
        if self.takes_any() {
            return match instances.len() {
                0 => None,
                n => instances.get(self.turn(n, turn)),
            };
        }
        let on_host = |entry: &InstanceEntry| {
            self.prefer_host
                .as_deref()
                .is_some_and(|host| entry.instance.host() == host)
        };
        let mut matching = 0usize;
        let mut local = 0usize;
        for entry in instances {
            if self.admits(&entry.instance) {
                matching += 1;
                local += usize::from(on_host(entry));
            }
        }
        if matching == 0 {
            return None;
        }
        let only_local = local > 0;
        let count = if only_local { local } else { matching };
        let k = self.turn(count, turn);
        instances
            .iter()
            .filter(|entry| self.admits(&entry.instance) && (!only_local || on_host(entry)))
            .nth(k)
    }
}

/// Instances ready to pick from, with the passing ones kept apart, so the usual pick —
/// [`Pick::default`], round robin over passing instances — is one index, not a scan. What a
/// client's cached view holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Candidates {
    all: Vec<Arc<InstanceEntry>>,
    passing: Vec<Arc<InstanceEntry>>,
}

impl Candidates {
    /// Candidates from a service's instances.
    pub fn new(instances: Vec<Arc<InstanceEntry>>) -> Self {
        let passing = instances
            .iter()
            .filter(|e| e.instance.status == Status::Passing)
            .cloned()
            .collect();
        Candidates {
            all: instances,
            passing,
        }
    }

    /// Every instance.
    pub fn all(&self) -> &[Arc<InstanceEntry>] {
        &self.all
    }

    /// Picks one; `turn` is the round-robin counter.
    pub fn pick(&self, pick: &Pick, turn: &AtomicUsize) -> Option<&Arc<InstanceEntry>> {
        if pick.takes_passing() {
            return match self.passing.len() {
                0 => None,
                n => self.passing.get(pick.turn(n, turn)),
            };
        }
        pick.choose(&self.all, turn)
    }
}

/// A fast, non-cryptographic random number (splitmix64 over a process-wide counter seeded
/// from std's hash keys): spreading load needs no more.
fn random() -> u64 {
    static STATE: AtomicU64 = AtomicU64::new(0);
    let mut seed = STATE.load(Ordering::Relaxed);
    if seed == 0 {
        use std::hash::{BuildHasher, Hasher};
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(0x5eed);
        seed = hasher.finish() | 1;
        let _ = STATE.compare_exchange(0, seed, Ordering::Relaxed, Ordering::Relaxed);
    }
    // Ordering: Relaxed: any interleaving of increments gives distinct, well-mixed outputs.
    let mut z = STATE
        .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
        .wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(list: &[Instance]) -> Vec<Arc<InstanceEntry>> {
        list.iter()
            .enumerate()
            .map(|(i, instance)| {
                Arc::new(InstanceEntry::new(
                    instance.clone(),
                    i as u64 + 1,
                    i as u64 + 1,
                ))
            })
            .collect()
    }

    fn fleet() -> Vec<Arc<InstanceEntry>> {
        entries(&[
            Instance::new("web", "a").address("h1").version("1"),
            Instance::new("web", "b")
                .address("h2")
                .version("2")
                .tag("x"),
            Instance::new("web", "c")
                .address("h1")
                .version("2")
                .status(Status::Critical),
            Instance::new("web", "d")
                .node("h3")
                .address("h9")
                .meta("zone", "z1"),
        ])
    }

    fn ids(pick: &Pick, instances: &[Arc<InstanceEntry>], times: usize) -> Vec<String> {
        let turn = AtomicUsize::new(0);
        (0..times)
            .map(|_| {
                pick.choose(instances, &turn)
                    .map_or("-".into(), |e| e.instance.id.clone())
            })
            .collect()
    }

    #[test]
    fn round_robin_takes_each_passing_instance_in_turn() {
        let all = fleet();
        assert_eq!(ids(&Pick::default(), &all, 4), ["a", "b", "d", "a"]);
        assert_eq!(ids(&Pick::round_robin(), &all, 4), ["a", "b", "c", "d"]);
        // The candidates' fast paths pick exactly as the scan does.
        let candidates = Candidates::new(all.clone());
        for pick in [
            Pick::default(),
            Pick::round_robin(),
            Pick::default().tag("x"),
        ] {
            let turn = AtomicUsize::new(0);
            let fast: Vec<String> = (0..5)
                .map(|_| {
                    candidates
                        .pick(&pick, &turn)
                        .map_or("-".into(), |e| e.instance.id.clone())
                })
                .collect();
            assert_eq!(fast, ids(&pick, &all, 5), "{pick:?}");
        }
        assert!(Candidates::default()
            .pick(&Pick::default(), &AtomicUsize::new(0))
            .is_none());
    }

    #[test]
    fn filters_narrow_and_nothing_matching_is_none() {
        let all = fleet();
        assert_eq!(ids(&Pick::default().version("2"), &all, 2), ["b", "b"]);
        assert_eq!(ids(&Pick::default().tag("x"), &all, 1), ["b"]);
        assert_eq!(ids(&Pick::default().meta("zone", "z1"), &all, 1), ["d"]);
        assert_eq!(ids(&Pick::default().tag("nope"), &all, 1), ["-"]);
        let custom = Pick::round_robin().matching(|i| i.id.as_str() > "b");
        assert_eq!(ids(&custom, &all, 3), ["c", "d", "c"]);
        let critical = Filter::new().status(Status::Critical);
        assert_eq!(ids(&Pick::round_robin().filter(critical), &all, 1), ["c"]);
    }

    #[test]
    fn the_same_host_comes_first_and_others_only_without_it() {
        let all = fleet();
        assert_eq!(ids(&Pick::default().prefer_host("h1"), &all, 2), ["a", "a"]);
        assert_eq!(ids(&Pick::default().prefer_host("h3"), &all, 1), ["d"]);
        assert_eq!(
            ids(&Pick::default().prefer_host("elsewhere"), &all, 3),
            ["a", "b", "d"]
        );
    }

    #[test]
    fn random_picks_only_matching_instances_and_reaches_each() {
        let all = fleet();
        let picked = ids(&Pick::random().passing(), &all, 300);
        assert!(picked.iter().all(|id| id != "c"));
        for id in ["a", "b", "d"] {
            assert!(picked.iter().any(|p| p == id), "{id} never picked");
        }
    }
}
