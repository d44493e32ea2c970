//! A restart is invisible: random sets, refreshes, deletes, expiries and change requests on a
//! persistent registry with frequent (background, fuzzy) snapshots, restarted at random points;
//! after each restart the registers (value, metadata, revision, created), the revision counter,
//! the removal history's answers and the pending requests are what they were just before it,
//! and each register has its TTL again.

use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;
use reg::persist::{Persist, SyncPolicy};
use reg::{Json, ManualClock, Registry, Selector};

const NAMES: [&str; 5] = ["a", "b", "c.d", "c.e", "long.name.here"];

/// Each name's TTL is fixed, so a refresh never changes it (a refresh is not logged; the
/// restored TTL is the last logged or snapshotted one).
fn ttl(name: usize) -> Duration {
    Duration::from_millis(200 * (name as u64 + 1))
}

#[derive(Debug, Clone)]
pub(crate) enum Op {
    Set {
        name: usize,
        value: u8,
        metadata: bool,
    },
    Remove {
        name: usize,
    },
    Request {
        name: usize,
        value: u8,
    },
    Take {
        name: usize,
    },
    Advance {
        ms: u16,
    },
    Restart,
}

pub(crate) fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..NAMES.len(), 0..3u8, any::<bool>())
            .prop_map(|(name, value, metadata)| Op::Set { name, value, metadata }),
        2 => (0..NAMES.len()).prop_map(|name| Op::Remove { name }),
        2 => (0..NAMES.len(), 0..3u8).prop_map(|(name, value)| Op::Request { name, value }),
        2 => (0..NAMES.len()).prop_map(|name| Op::Take { name }),
        2 => (0..700u16).prop_map(|ms| Op::Advance { ms }),
        2 => Just(Op::Restart),
    ]
}

fn open(dir: &std::path::Path, clock: &ManualClock) -> Registry {
    Registry::builder()
        .clock(clock.clone())
        .manual_expiry()
        .request_max_age(Duration::from_secs(3600))
        .open(
            Persist::new(dir)
                .sync(SyncPolicy::Always)
                .snapshot_after_bytes(300),
        )
        .unwrap()
}

type State = (
    Vec<(String, String, Option<String>, u64, u64)>,
    u64,
    Vec<bool>,
);

/// What a restart must keep: every register, the revision, and whether each name changed
/// after each revision (the removal history included).
fn state(registry: &Registry) -> State {
    let registers = registry
        .list()
        .registers
        .iter()
        .map(|r| {
            (
                r.name().to_string(),
                r.value().as_str().to_string(),
                r.metadata().map(|m| m.as_str().to_string()),
                r.revision(),
                r.created(),
            )
        })
        .collect();
    let revision = registry.revision();
    let changed = NAMES
        .iter()
        .flat_map(|name| (0..=revision).map(move |after| (*name, after)))
        .map(|(name, after)| registry.changed_since(&Selector::names([name]), after))
        .collect();
    (registers, revision, changed)
}

pub(crate) fn run(ops: &[Op]) {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let mut registry = open(dir.path(), &clock);
    let mut requests: BTreeMap<usize, u8> = BTreeMap::new();
    for op in ops {
        match *op {
            Op::Set {
                name,
                value,
                metadata,
            } => {
                let metadata = metadata.then(|| Json::parse(br#"{"m":1}"#).unwrap());
                let value = Json::parse(value.to_string().as_bytes()).unwrap();
                registry
                    .set(NAMES[name], value, metadata, Some(ttl(name)))
                    .unwrap();
            }
            Op::Remove { name } => {
                registry.remove(NAMES[name]);
            }
            Op::Request { name, value } => {
                let json = Json::parse(value.to_string().as_bytes()).unwrap();
                registry.request(NAMES[name], json).unwrap();
                requests.insert(name, value);
            }
            Op::Take { name } => {
                let taken = registry.try_take_requests(&Selector::names([NAMES[name]]));
                let expected = requests.remove(&name);
                let got = taken.first().map(|r| r.value.as_str().to_string());
                assert_eq!(got, expected.map(|v| v.to_string()), "take {}", NAMES[name]);
            }
            Op::Advance { ms } => {
                clock.advance(Duration::from_millis(u64::from(ms)));
                registry.expire_due();
            }
            Op::Restart => {
                let before = state(&registry);
                let pending = registry.stats().pending_requests;
                drop(registry);
                registry = open(dir.path(), &clock);
                assert_eq!(state(&registry), before, "after a restart");
                assert_eq!(registry.stats().pending_requests, pending);
                for (i, name) in NAMES.iter().enumerate() {
                    if registry.get(name).is_some() {
                        assert_eq!(registry.expires_in(name), Some(ttl(i)), "{name}'s TTL");
                    }
                }
            }
        }
    }
}
