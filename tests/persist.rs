//! Durability: what a persistent registry restores after a restart, and what it does with a
//! damaged data directory. Each test restarts in-process (drop, reopen) on a fresh temporary
//! directory, with a manual clock shared across incarnations.
#![cfg(feature = "persist")]
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use reg::persist::{Persist, PersistError, SyncPolicy};
use reg::{Json, ManualClock, Registry, Selector};

fn json(text: &str) -> Json {
    Json::parse(text.as_bytes()).unwrap()
}

fn open(dir: &Path, clock: &ManualClock) -> Registry {
    open_with(Persist::new(dir).sync(SyncPolicy::Always), clock).unwrap()
}

fn open_with(persist: Persist, clock: &ManualClock) -> Result<Registry, PersistError> {
    Registry::builder()
        .clock(clock.clone())
        .manual_expiry()
        .open(persist)
}

const HOUR: Option<Duration> = Some(Duration::from_secs(3600));

fn segments(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("log-"))
        .collect();
    found.sort();
    found
}

#[test]
fn registers_revisions_and_removals_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let before = {
        let registry = open(dir.path(), &clock);
        registry
            .set(
                "kitchen.temp",
                json(r#"{"c":21.5}"#),
                Some(json(r#"{"unit":"C"}"#)),
                HOUR,
            )
            .unwrap();
        registry.set("door", json("\"open\""), None, HOUR).unwrap();
        registry.set("door", json("\"shut\""), None, HOUR).unwrap();
        registry.set("gone", json("1"), None, HOUR).unwrap();
        assert_eq!(registry.remove("gone"), Some(5));
        registry.revision()
    };
    let registry = open(dir.path(), &clock);
    assert_eq!(
        registry.revision(),
        before,
        "the revision counter continues"
    );
    let kitchen = registry.get("kitchen.temp").unwrap();
    assert_eq!(kitchen.value().as_str(), r#"{"c":21.5}"#);
    assert_eq!(kitchen.metadata().unwrap().as_str(), r#"{"unit":"C"}"#);
    assert_eq!((kitchen.revision(), kitchen.created()), (1, 1));
    let door = registry.get("door").unwrap();
    assert_eq!(
        (door.value().as_str(), door.revision(), door.created()),
        ("\"shut\"", 3, 2)
    );
    assert!(registry.get("gone").is_none());
    // A client that read at revision 4 (before the delete) and waits from there is told.
    let gone = Selector::names(["gone"]);
    assert!(registry.changed_since(&gone, 4));
    assert!(!registry.changed_since(&gone, 5));
    let replay = registry.replay(&Selector::All, 3);
    assert!(replay.complete);
    assert_eq!(replay.removed.len(), 1);
    assert_eq!(replay.removed[0].1, 5);
    // New changes continue from the restored revision.
    let next = registry.set("door", json("\"ajar\""), None, HOUR).unwrap();
    assert_eq!(next.revision, before + 1);
}

#[test]
fn a_restored_register_gets_its_ttl_again_unless_a_grace_says_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    {
        let registry = open(dir.path(), &clock);
        registry
            .set("sensor", json("1"), None, Some(Duration::from_secs(10)))
            .unwrap();
        clock.advance(Duration::from_secs(8)); // 2 s left
    }
    {
        let registry = open(dir.path(), &clock);
        let left = registry.expires_in("sensor").unwrap();
        assert_eq!(left, Duration::from_secs(10), "max(2 s left, its 10 s TTL)");
    }
    let persist = Persist::new(dir.path()).restore_grace(Duration::ZERO);
    let registry = open_with(persist, &clock).unwrap();
    let left = registry.expires_in("sensor").unwrap();
    assert_eq!(
        left,
        Duration::from_secs(2),
        "grace 0: the time it had left when saved"
    );
    clock.advance(Duration::from_secs(3));
    assert_eq!(registry.expire_due(), 1);
    drop(registry);
    // The expiry was logged: it stays gone.
    let registry = open(dir.path(), &clock);
    assert!(registry.get("sensor").is_none());
    assert!(registry.changed_since(&Selector::names(["sensor"]), 1));
}

#[test]
fn refreshes_are_not_logged() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let registry = open(dir.path(), &clock);
    registry.set("r", json("1"), None, HOUR).unwrap();
    drop(registry);
    let size = |dir: &Path| -> u64 {
        segments(dir)
            .iter()
            .map(|p| p.metadata().unwrap().len())
            .sum()
    };
    let logged = size(dir.path());
    let registry = open(dir.path(), &clock);
    for _ in 0..1000 {
        registry.set("r", json("1"), None, HOUR).unwrap();
    }
    drop(registry);
    assert_eq!(
        size(dir.path()),
        logged,
        "a thousand refreshes wrote nothing"
    );
}

#[test]
fn one_registry_per_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let _first = open(dir.path(), &clock);
    let error = open_with(Persist::new(dir.path()), &clock).unwrap_err();
    assert!(matches!(error, PersistError::Locked { .. }), "{error}");
    let message = error.to_string();
    assert!(
        message.contains("in use by another reg process")
            && message.contains(&std::process::id().to_string()),
        "{message}"
    );
}

/// The registers as (name, value, revision), and the revision.
fn listed(registry: &Registry) -> (Vec<(String, String, u64)>, u64) {
    let registers = registry
        .list()
        .registers
        .iter()
        .map(|r| {
            (
                r.name().to_string(),
                r.value().as_str().to_string(),
                r.revision(),
            )
        })
        .collect();
    (registers, registry.revision())
}

/// Snapshots are taken in the background: waits (bounded) until one has replaced `segment`.
fn wait_for_snapshot(segment: &Path) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while segment.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "no snapshot was taken"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Writes `n` registers in one session and returns the newest segment's path.
fn write_some(dir: &Path, clock: &ManualClock, n: usize) -> std::path::PathBuf {
    let registry = open(dir, clock);
    for i in 0..n {
        registry
            .set(&format!("r{i}"), json(&i.to_string()), None, HOUR)
            .unwrap();
    }
    drop(registry);
    segments(dir).pop().unwrap()
}

#[test]
fn a_torn_tail_is_dropped_and_the_rest_kept() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let segment = write_some(dir.path(), &clock, 3);
    let whole = std::fs::read(&segment).unwrap();

    // The last record half-written.
    std::fs::write(&segment, &whole[..whole.len() - 5]).unwrap();
    let registry = open(dir.path(), &clock);
    assert!(registry.get("r1").is_some() && registry.get("r2").is_none());
    assert_eq!(registry.revision(), 2);
    // The torn bytes are gone from the file, and new writes follow the good ones.
    registry.set("r2", json("2"), None, HOUR).unwrap();
    drop(registry);

    // Random bytes appended after good records.
    let mut longer = std::fs::read(&segment).unwrap();
    longer.extend_from_slice(&[0xA7, 0x3C, 0x99, 0x5E, 0x01, 0xF0, 0x2B, 0x66, 0xD4]);
    std::fs::write(&segment, &longer).unwrap();
    let registry = open(dir.path(), &clock);
    assert_eq!(registry.len(), 3);
    assert_eq!(registry.revision(), 3);

    // A file cut to nothing after its header.
    drop(registry);
    std::fs::write(&segment, &whole[..8]).unwrap();
    let registry = open(dir.path(), &clock);
    assert_eq!(registry.len(), 0);
}

#[test]
fn corruption_in_the_middle_refuses_to_start_unless_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let segment = write_some(dir.path(), &clock, 5);
    let mut bytes = std::fs::read(&segment).unwrap();
    // Inside the second record's payload (header 8 bytes, each record ~45 bytes).
    let second = 8 + (bytes.len() - 8) / 5;
    bytes[second + 20] ^= 0x01;
    std::fs::write(&segment, &bytes).unwrap();

    let error = open_with(Persist::new(dir.path()), &clock).unwrap_err();
    match &error {
        PersistError::Corrupt { path, offset, .. } => {
            assert_eq!(path, &segment);
            assert_eq!(*offset, second as u64);
        }
        other => panic!("{other}"),
    }
    let message = error.to_string();
    assert!(
        message.contains("--repair") && message.contains("checksum"),
        "{message}"
    );
    // Refusing changed nothing on disk.
    assert_eq!(std::fs::read(&segment).unwrap(), bytes);

    let registry = open_with(Persist::new(dir.path()).repair(true), &clock).unwrap();
    assert_eq!(registry.len(), 1, "everything before the damage");
    assert!(registry.get("r0").is_some());
    assert_eq!(registry.revision(), 1);
    registry.set("after", json("1"), None, HOUR).unwrap();
    drop(registry);
    let registry = open(dir.path(), &clock);
    assert_eq!(registry.len(), 2, "repaired for good");
}

#[test]
fn snapshots_bound_the_log_and_restore_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let persist = || {
        Persist::new(dir.path())
            .sync(SyncPolicy::Always)
            .snapshot_after_bytes(2_000)
    };
    let expected = {
        let registry = open_with(persist(), &clock).unwrap();
        for round in 0..20 {
            for i in 0..20 {
                registry
                    .set(&format!("r{i}"), json(&round.to_string()), None, HOUR)
                    .unwrap();
            }
            registry.remove(&format!("r{}", round % 20));
        }
        wait_for_snapshot(&dir.path().join("log-00000000000000000001.reg"));
        listed(&registry)
    };
    let files: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(files.iter().any(|f| f.starts_with("snap-")), "{files:?}");
    let logs = files.iter().filter(|f| f.starts_with("log-")).count();
    assert!(logs <= 2, "old segments are deleted: {files:?}");
    let registry = open_with(persist(), &clock).unwrap();
    assert_eq!(listed(&registry), expected);
}

#[tokio::test]
async fn always_answers_once_the_change_is_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let registry = open(dir.path(), &clock);
    let outcome = registry.set("a", json("1"), None, HOUR).unwrap();
    registry.durable(outcome.revision).await.unwrap();
    // On disk now, while the registry is still open: a copy of the directory restores it.
    let copy = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() != "LOCK" {
            std::fs::copy(entry.path(), copy.path().join(entry.file_name())).unwrap();
        }
    }
    let restored = open(copy.path(), &clock);
    assert_eq!(restored.get("a").unwrap().revision(), outcome.revision);
}

#[test]
fn pending_change_requests_survive_a_restart_once_each_with_their_age() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let open = |snapshot_bytes: u64| {
        Registry::builder()
            .clock(clock.clone())
            .manual_expiry()
            .request_max_age(Duration::from_secs(10))
            .open(
                Persist::new(dir.path())
                    .sync(SyncPolicy::Always)
                    .snapshot_after_bytes(snapshot_bytes),
            )
            .unwrap()
    };
    {
        let registry = open(u64::MAX);
        registry.request("pump", json("\"on\"")).unwrap();
        registry.request("pump", json("\"off\"")).unwrap(); // latest wins
        registry.request("valve", json("1")).unwrap();
        registry.request("taken", json("1")).unwrap();
        let taken = registry.try_take_requests(&Selector::names(["taken"]));
        assert_eq!(taken.len(), 1);
        clock.advance(Duration::from_secs(8));
        registry.request("late", json("2")).unwrap();
    }
    {
        let registry = open(u64::MAX);
        assert_eq!(registry.stats().pending_requests, 3);
        let pump = registry.try_take_requests(&Selector::names(["pump"]));
        assert_eq!(pump.len(), 1);
        assert_eq!(pump[0].value.as_str(), "\"off\"");
        assert!(
            registry
                .try_take_requests(&Selector::names(["taken"]))
                .is_empty(),
            "delivered before the restart: never again"
        );
        // Taking is logged too: pump is not delivered a second time after another restart.
    }
    let registry = open(u64::MAX);
    assert!(registry
        .try_take_requests(&Selector::names(["pump"]))
        .is_empty());
    // valve is 8 s old: 3 s more and it is past the 10 s age limit; late is 3 s old.
    clock.advance(Duration::from_secs(3));
    let left = registry.try_take_requests(&Selector::All);
    let names: Vec<&str> = left.iter().map(|r| &*r.name).collect();
    assert_eq!(names, ["late"], "valve aged out across the restart");
    drop(registry);

    // In a snapshot, too.
    let registry = open(1);
    registry.request("snap", json("3")).unwrap();
    for i in 0..50 {
        registry
            .set(&format!("r{i}"), json("1"), None, HOUR)
            .unwrap();
    }
    wait_for_snapshot(&segments(dir.path()).remove(0));
    drop(registry);
    let registry = open(u64::MAX);
    let snap = registry.try_take_requests(&Selector::names(["snap"]));
    assert_eq!(snap.len(), 1);
}

#[test]
fn a_register_due_at_restore_expires_after_it_at_a_new_revision() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    {
        let registry = open(dir.path(), &clock);
        registry
            .set("short", json("1"), None, Some(Duration::from_secs(1)))
            .unwrap();
        registry.set("long", json("2"), None, HOUR).unwrap();
        clock.advance(Duration::from_secs(5)); // `short` is due; nobody ran expiry
    }
    // Background expiry this time, and no grace: `short` is due the moment it is restored.
    let registry = Registry::builder()
        .clock(clock.clone())
        .open(Persist::new(dir.path()).restore_grace(Duration::ZERO))
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while registry.get("short").is_some() {
        assert!(std::time::Instant::now() < deadline, "never expired");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        registry.revision(),
        3,
        "the expiry comes after the restored revisions"
    );
    assert!(registry.changed_since(&Selector::names(["short"]), 2));
    assert!(registry.get("long").is_some());
}

#[test]
fn every_policy_restores_what_a_clean_stop_wrote() {
    for policy in [
        SyncPolicy::Always,
        SyncPolicy::Batch(Duration::from_millis(10)),
        SyncPolicy::None(Duration::from_millis(10)),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new();
        let persist = || Persist::new(dir.path()).sync(policy);
        let registry = open_with(persist(), &clock).unwrap();
        for i in 0..100 {
            registry
                .set(&format!("r{i}"), json(&i.to_string()), None, HOUR)
                .unwrap();
        }
        registry.request("cmd", json("1")).unwrap();
        drop(registry); // a clean stop writes out what is pending, whatever the policy
        let registry = open_with(persist(), &clock).unwrap();
        assert_eq!(
            (registry.len(), registry.revision()),
            (100, 100),
            "{policy:?}"
        );
        assert_eq!(registry.stats().pending_requests, 1, "{policy:?}");
    }
}

#[test]
fn a_pending_request_keeps_who_asked_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let asker = reg::Origin::new("dashboard", "ui-88", None);
    {
        let registry = open(dir.path(), &clock);
        registry
            .request_many_as(&asker, [("lamp", json("true"))])
            .unwrap();
        registry.request("fan", json("1")).unwrap();
    }
    // From the log.
    {
        let registry = open(dir.path(), &clock);
        let lamp = registry.try_take_requests(&Selector::names(["lamp"]));
        let origin = lamp[0].origin.as_ref().unwrap();
        assert_eq!(
            (origin.identity(), origin.request_id()),
            ("dashboard", "ui-88")
        );
        registry
            .request_many_as(&asker, [("lamp", json("false"))])
            .unwrap();
    }
    // From a snapshot.
    let registry = open_with(
        Persist::new(dir.path())
            .sync(SyncPolicy::Always)
            .snapshot_after_bytes(1),
        &clock,
    )
    .unwrap();
    for i in 0..20 {
        registry
            .set("filler", json(&i.to_string()), None, HOUR)
            .unwrap();
    }
    drop(registry);
    let registry = open(dir.path(), &clock);
    let taken = registry.try_take_requests(&Selector::All);
    let by: Vec<(&str, Option<&str>)> = taken
        .iter()
        .map(|r| (&*r.name, r.origin.as_ref().map(reg::Origin::identity)))
        .collect();
    assert_eq!(by, [("fan", None), ("lamp", Some("dashboard"))]);
}
