//! Revision-index consistency: a client that reads (`read()`), then waits for changes after the
//! read's revision, is never left waiting while a change it did not see has happened. The
//! wait ends exactly when the register's last change is newer than the read's revision, and a
//! read that missed a change always answers with a revision older than that change.

use loom::future::block_on;
use loom::thread;
use reg::{Registry, Revision, Selector, WaitOutcome};

use crate::util::{check, json, ms, poll_once, registry};

/// `change` runs on another thread and returns the revision it took; the main thread reads
/// `a` (with `selector`) and waits after the read's revision.
fn read_then_wait(
    prepare: impl Fn(&Registry, &reg::ManualClock) + Sync + Send + 'static,
    change: impl Fn(&Registry) -> Revision + Sync + Send + 'static,
    selector: Selector,
) {
    let change = std::sync::Arc::new(change);
    check(3, move || {
        let (registry, clock) = registry();
        prepare(&registry, &clock);
        let writer = {
            let registry = registry.clone();
            let change = std::sync::Arc::clone(&change);
            thread::spawn(move || change(&registry))
        };
        let read = registry.read(&selector);
        let mut wait = registry.wait(&selector, read.revision);
        let changed_at = writer.join().unwrap();

        let seen = read.registers.iter().find(|r| r.name() == "a").cloned();
        let now = registry.get("a");
        let saw_change = seen == now;
        if !saw_change {
            assert!(
                read.revision < changed_at,
                "read at revision {} missed the change at {changed_at}",
                read.revision
            );
        }
        if changed_at > read.revision {
            // Must end; a lost wake-up deadlocks here and loom reports it.
            assert_eq!(block_on(&mut wait), WaitOutcome::Changed);
        } else {
            assert!(poll_once(&mut wait).is_pending(), "spurious wake-up");
        }
    });
}

#[test]
fn read_then_wait_vs_change() {
    read_then_wait(
        |r, _| {
            r.set("a", json("1"), None, None).unwrap();
        },
        |r| r.set("a", json("2"), None, None).unwrap().revision,
        Selector::name("a"),
    );
}

#[test]
fn read_then_wait_vs_create() {
    read_then_wait(
        |_, _| {},
        |r| r.set("a", json("2"), None, None).unwrap().revision,
        Selector::name("a"),
    );
}

#[test]
fn read_then_wait_vs_remove() {
    read_then_wait(
        |r, _| {
            r.set("a", json("1"), None, None).unwrap();
        },
        |r| r.remove("a").unwrap(),
        Selector::name("a"),
    );
}

#[test]
fn read_all_then_wait_vs_expiry() {
    read_then_wait(
        |r, clock| {
            r.set("a", json("1"), None, Some(ms(5))).unwrap();
            clock.advance(ms(5));
        },
        |r| {
            assert_eq!(r.expire_due(), 1);
            r.revision()
        },
        Selector::All,
    );
}
