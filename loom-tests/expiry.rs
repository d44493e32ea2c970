//! Refresh racing expiry: with the clock at a register's deadline, one thread refreshes it (same
//! value) while another runs the expiry pass. Either the refresh's compare-exchange on the
//! deadline wins (the pass sees the later deadline and reschedules) or the expiry's does (the
//! refresh finds the entry dead and re-creates the register). Either way the register exists
//! afterwards, revisions and wakes agree with which side won, and the rescheduled timer still
//! expires it on time.

use loom::future::block_on;
use loom::thread;
use reg::{Change, EventKind, Registry, Selector, WaitOutcome};

use crate::util::{check, json, ms, poll_once, registry};

/// Expires everything due after moving the clock to `to` (absolute ms).
fn expire_at(registry: &Registry, clock: &reg::ManualClock, to: u64) -> usize {
    let now = u64::try_from(clock.now().as_millis()).unwrap();
    clock.advance(ms(to - now));
    registry.expire_due()
}

#[test]
fn refresh_racing_expiry() {
    check(3, || {
        let (registry, clock) = registry();
        // Created at t=0 with a 10 ms TTL: deadline 10.
        registry.set("a", json("1"), None, Some(ms(10))).unwrap();
        clock.advance(ms(10));
        let mut wait = registry.wait(&Selector::name("a"), 1);
        assert!(poll_once(&mut wait).is_pending());

        let refresher = {
            let registry = registry.clone();
            // Deadline 10 + 10 = 20.
            thread::spawn(move || registry.set("a", json("1"), None, Some(ms(10))).unwrap())
        };
        let expired = registry.expire_due();
        let refresh = refresher.join().unwrap();

        let register = registry.get("a").expect("a refreshed register was lost");
        assert_eq!(registry.expires_in("a"), Some(ms(10)));
        match refresh.change {
            Change::Refreshed => {
                // The refresh came first: nothing expired, no revision taken, nobody woken.
                assert_eq!(expired, 0);
                assert_eq!(refresh.revision, 1);
                assert_eq!((register.revision(), register.created()), (1, 1));
                assert_eq!(registry.revision(), 1);
                assert!(poll_once(&mut wait).is_pending(), "a refresh woke a waiter");
            }
            Change::Created => {
                // The expiry came first (revision 2); the refresh re-created it (revision 3).
                assert_eq!(expired, 1);
                assert_eq!(refresh.revision, 3);
                assert_eq!((register.revision(), register.created()), (3, 3));
                assert_eq!(registry.revision(), 3);
                assert!(!registry.changed_since(&Selector::name("a"), 3));
                assert_eq!(block_on(&mut wait), WaitOutcome::Changed);
            }
            Change::Changed => panic!("an equal value reported as changed"),
        }
        // The surviving register expires exactly at its new deadline, 20.
        assert_eq!(expire_at(&registry, &clock, 19), 0);
        assert!(registry.get("a").is_some());
        assert_eq!(expire_at(&registry, &clock, 20), 1);
        assert!(registry.get("a").is_none());
    });
}

/// A refresh that moves the deadline *earlier* than the pending timer (a new timer generation)
/// racing the pass that finds the old timer due and reschedules it lazily: exactly one timer
/// stays current, and it expires the register at the new deadline.
#[test]
fn earlier_refresh_racing_lazy_reschedule() {
    check(3, || {
        let (registry, clock) = registry();
        // Timer at 10; a refresh at t=0 moves the deadline to 100 without touching the wheel.
        registry.set("a", json("1"), None, Some(ms(10))).unwrap();
        let refresh = registry.set("a", json("1"), None, Some(ms(100))).unwrap();
        assert_eq!(refresh.change, Change::Refreshed);
        clock.advance(ms(10));

        let refresher = {
            let registry = registry.clone();
            // Deadline 10 + 5 = 15, earlier than 100.
            thread::spawn(move || registry.set("a", json("1"), None, Some(ms(5))).unwrap())
        };
        assert_eq!(registry.expire_due(), 0, "expired before its deadline");
        let refresh = refresher.join().unwrap();
        assert_eq!((refresh.change, refresh.revision), (Change::Refreshed, 1));

        assert_eq!(expire_at(&registry, &clock, 14), 0);
        assert_eq!(
            expire_at(&registry, &clock, 15),
            1,
            "the earlier deadline was lost"
        );
        assert_eq!(registry.revision(), 2);
        assert_eq!(expire_at(&registry, &clock, 100), 0, "expired twice");
        assert_eq!(registry.revision(), 2);
    });
}

/// A delete racing the expiry pass of the same due register: exactly one of them removes it and
/// takes a revision.
#[test]
fn remove_racing_expiry() {
    check(3, || {
        let (registry, clock) = registry();
        registry.set("a", json("1"), None, Some(ms(10))).unwrap();
        clock.advance(ms(10));
        let remover = {
            let registry = registry.clone();
            thread::spawn(move || registry.remove("a"))
        };
        let expired = registry.expire_due();
        let removed = remover.join().unwrap();
        assert_eq!(usize::from(removed.is_some()) + expired, 1);
        assert_eq!(registry.revision(), 2);
        assert!(registry.get("a").is_none());
        assert_eq!(registry.stats().expired, expired as u64);
    });
}

/// A mass expiry (more due than the removal history keeps) defers its removals in the history
/// and folds them in after its batches. A wait that starts from a revision before the expiry,
/// at any point of the pass (before the deferral, while removals are deferred, mid-fold,
/// after), must still see that its register was removed.
#[test]
fn wait_racing_deferred_mass_expiry() {
    check(3, || {
        let (registry, clock) = crate::util::registry_with(|b| b.removal_history(1));
        registry.set("a", json("1"), None, Some(ms(5))).unwrap();
        registry.set("b", json("1"), None, Some(ms(5))).unwrap();
        let seen = registry.revision();
        clock.advance(ms(5));
        let expirer = {
            let registry = registry.clone();
            thread::spawn(move || registry.expire_due())
        };
        let mut wait = registry.wait(&Selector::name("a"), seen);
        let expired = expirer.join().unwrap();
        assert_eq!(expired, 2);
        // Must end; a missed removal deadlocks here and loom reports it.
        assert_eq!(block_on(&mut wait), WaitOutcome::Changed);
        assert!(registry.changed_since(&Selector::name("a"), seen));
        assert!(registry.changed_since(&Selector::name("b"), seen));
        // Folded exactly: one removal kept, the other forgotten (the horizon), and the kept one
        // is still an expiry.
        assert!(!registry.replay(&Selector::All, seen).complete);
        let replay = registry.replay(&Selector::All, seen + 1);
        assert!(replay.complete);
        let kinds: Vec<_> = replay
            .removed
            .iter()
            .map(|(_, r, kind)| (*r, *kind))
            .collect();
        assert_eq!(kinds, [(seen + 2, EventKind::Expire)]);
    });
}
