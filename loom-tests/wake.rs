//! Wake vs. wait registration: a wait made before or concurrently with a change to a register
//! it watches always completes (no lost wake-up), whichever of the waiter's
//! register → re-check and the writer's publish → fire comes first. A wait for another name is
//! not woken.

use loom::future::block_on;
use loom::thread;
use reg::{Registry, Selector, WaitOutcome};

use crate::util::{check, json, ms, poll_once, registry};

/// Runs `change` on one thread while another thread makes a wait for `a` (by name, and for any
/// register) at the revision it read before the change could have happened, and blocks on it.
/// `prepare` sets up the state before the threads start.
fn change_wakes_waiters(
    prepare: impl Fn(&Registry, &reg::ManualClock) + Sync + Send + 'static,
    change: impl Fn(&Registry) + Sync + Send + 'static,
    watch_all: bool,
) {
    let change = std::sync::Arc::new(change);
    check(3, move || {
        let (registry, clock) = registry();
        prepare(&registry, &clock);
        let before = registry.revision();
        // A wait on a name nobody changes, made before everything else.
        let mut bystander = registry.wait(&Selector::name("b"), before);

        let writer = {
            let registry = registry.clone();
            let change = std::sync::Arc::clone(&change);
            thread::spawn(move || change(&registry))
        };
        let selector = if watch_all {
            Selector::All
        } else {
            Selector::name("a")
        };
        let wait = registry.wait(&selector, before);
        assert_eq!(block_on(wait), WaitOutcome::Changed);
        writer.join().unwrap();

        assert!(registry.revision() > before);
        assert!(
            poll_once(&mut bystander).is_pending(),
            "a change to `a` woke a waiter of `b`"
        );
        drop(bystander);
        assert_eq!(registry.watch_slots(), 0, "a dropped wait leaked its slot");
        assert_eq!(registry.stats().parked_waits, 0);
    });
}

#[test]
fn create_wakes_name_waiter() {
    change_wakes_waiters(
        |_, _| {},
        |r| {
            r.set("a", json("1"), None, None).unwrap();
        },
        false,
    );
}

#[test]
fn create_wakes_any_waiter() {
    change_wakes_waiters(
        |_, _| {},
        |r| {
            r.set("a", json("1"), None, None).unwrap();
        },
        true,
    );
}

#[test]
fn change_wakes_name_waiter() {
    change_wakes_waiters(
        |r, _| {
            r.set("a", json("1"), None, None).unwrap();
        },
        |r| {
            r.set("a", json("2"), None, None).unwrap();
        },
        false,
    );
}

/// A removal publishes through the removal history (the re-check finds the name absent and asks
/// the history under the commit lock), a different path from a set.
#[test]
fn remove_wakes_name_waiter() {
    change_wakes_waiters(
        |r, _| {
            r.set("a", json("1"), None, None).unwrap();
        },
        |r| {
            assert!(r.remove("a").is_some());
        },
        false,
    );
}

#[test]
fn expiry_wakes_name_waiter() {
    change_wakes_waiters(
        |r, clock| {
            r.set("a", json("1"), None, Some(ms(5))).unwrap();
            clock.advance(ms(5));
        },
        |r| {
            assert_eq!(r.expire_due(), 1);
        },
        false,
    );
}

/// A waiter parked *before* the change (it has polled and returned `Pending`) is woken by the
/// writer's fire rather than found by a re-check.
#[test]
fn parked_waiter_is_woken() {
    check(3, || {
        let (registry, _clock) = registry();
        let mut wait = registry.wait(&Selector::names(["a", "b"]), 0);
        assert!(poll_once(&mut wait).is_pending());
        let waiter = thread::spawn(move || block_on(wait));
        registry.set("b", json("1"), None, None).unwrap();
        assert_eq!(waiter.join().unwrap(), WaitOutcome::Changed);
    });
}

/// Shutdown wakes every waiter, including one registering concurrently.
#[test]
fn shutdown_wakes_waiter() {
    check(3, || {
        let (registry, _clock) = registry();
        let closer = {
            let registry = registry.clone();
            thread::spawn(move || registry.shutdown())
        };
        let wait = registry.wait(&Selector::name("a"), 0);
        assert_eq!(block_on(wait), WaitOutcome::Shutdown);
        closer.join().unwrap();
    });
}

/// More waiters than a slot fires under its mutex (16): the slot fires them from a snapshot,
/// outside the mutex, while one of them is dropped and a new one registers. Every waiter
/// registered before the change is woken; the late one finds the change in its re-check; the
/// dropped one is neither fired into nor leaked.
#[test]
fn many_waiters_fired_from_snapshot() {
    check(3, || {
        let (registry, _clock) = registry();
        let mut waits: Vec<_> = (0..17)
            .map(|_| registry.wait(&Selector::name("a"), 0))
            .collect();
        for wait in &mut waits {
            assert!(poll_once(wait).is_pending());
        }
        let dropped = waits.pop().unwrap();
        let writer = {
            let registry = registry.clone();
            thread::spawn(move || {
                registry.set("a", json("1"), None, None).unwrap();
            })
        };
        drop(dropped);
        let late = registry.wait(&Selector::name("a"), 0);
        assert_eq!(block_on(late), WaitOutcome::Changed);
        writer.join().unwrap();
        for wait in waits {
            assert_eq!(block_on(wait), WaitOutcome::Changed);
        }
        assert_eq!(registry.watch_slots(), 0);
    });
}
