//! The registry core's semantics through its public API, driven by a manual clock.
#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use reg::{
    Change, EventKind, FeedError, Json, ManualClock, Registry, Selector, StoreError, WaitOutcome,
};

fn registry() -> (Registry, ManualClock) {
    let clock = ManualClock::new();
    let registry = Registry::builder()
        .clock(clock.clone())
        .manual_expiry()
        .build();
    (registry, clock)
}

fn json(text: &str) -> Json {
    Json::parse(text.as_bytes()).unwrap()
}

/// Polls a future once with a no-op waker.
fn poll_once<F: Future + Unpin>(future: &mut F) -> Poll<F::Output> {
    let mut cx = Context::from_waker(Waker::noop());
    std::pin::Pin::new(future).poll(&mut cx)
}

const SECOND: Duration = Duration::from_secs(1);

#[test]
fn set_creates_changes_and_refreshes() {
    let (registry, _) = registry();
    let created = registry.set("a", json("1"), None, None).unwrap();
    assert_eq!(created.change, Change::Created);
    assert_eq!(created.revision, 1);

    let refreshed = registry.set("a", json("1"), None, None).unwrap();
    assert_eq!(refreshed.change, Change::Refreshed);
    assert_eq!(refreshed.revision, 1, "a refresh takes no revision");
    assert_eq!(registry.revision(), 1);

    let changed = registry.set("a", json("1.0"), None, None).unwrap();
    assert_eq!(
        changed.change,
        Change::Changed,
        "1 and 1.0 are different values"
    );
    assert_eq!(changed.revision, 2);

    let register = registry.get("a").unwrap();
    assert_eq!(register.value().as_str(), "1.0");
    assert_eq!(register.revision(), 2);
    assert_eq!(register.created(), 1);
}

#[test]
fn object_key_order_does_not_make_a_change() {
    let (registry, _) = registry();
    registry
        .set("a", json(r#"{"x":1,"y":2}"#), None, None)
        .unwrap();
    let again = registry
        .set("a", json(r#"{"y":2,"x":1}"#), None, None)
        .unwrap();
    assert_eq!(again.change, Change::Refreshed);
}

#[test]
fn metadata_is_replaced_and_empty_forms_are_equal() {
    let (registry, _) = registry();
    registry
        .set("a", json("1"), Some(json(r#"{"unit":"C"}"#)), None)
        .unwrap();
    let changed = registry.set("a", json("1"), None, None).unwrap();
    assert_eq!(
        changed.change,
        Change::Changed,
        "dropping metadata is a change"
    );
    assert!(registry.get("a").unwrap().metadata().is_none());

    for empty in ["{}", "null"] {
        let outcome = registry
            .set("a", json("1"), Some(json(empty)), None)
            .unwrap();
        assert_eq!(outcome.change, Change::Refreshed, "{empty} is no metadata");
    }
    let error = registry
        .set("a", json("1"), Some(json("[1]")), None)
        .unwrap_err();
    assert_eq!(error, StoreError::MetadataNotObject { kind: "array" });
    assert_eq!(
        registry.get("a").unwrap().revision(),
        2,
        "a refused write changes nothing"
    );
}

#[test]
fn null_value_creates_a_register() {
    let (registry, _) = registry();
    let outcome = registry.set("a", Json::null(), None, None).unwrap();
    assert_eq!(outcome.change, Change::Created);
    assert!(registry.get("a").unwrap().value().is_null());
}

#[test]
fn names_over_the_limit_are_refused() {
    let registry = Registry::builder().manual_expiry().max_name_len(4).build();
    assert!(registry.set("abcd", json("1"), None, None).is_ok());
    assert_eq!(
        registry.set("abcde", json("1"), None, None).unwrap_err(),
        StoreError::NameTooLong { len: 5, limit: 4 }
    );
    assert!(registry.request("abcde", json("1")).is_err());
}

#[test]
fn ttl_expires_registers_and_refresh_restarts_it() {
    let (registry, clock) = registry();
    registry
        .set("short", json("1"), None, Some(2 * SECOND))
        .unwrap();
    registry.set("default", json("1"), None, None).unwrap();
    registry
        .set("zero", json("1"), None, Some(Duration::ZERO))
        .unwrap();
    assert_eq!(registry.expires_in("default"), Some(10 * SECOND));
    assert_eq!(
        registry.expires_in("zero"),
        Some(10 * SECOND),
        "zero ttl means default"
    );

    clock.advance(SECOND);
    // A refresh at t=1s moves the deadline to t=3s.
    assert_eq!(
        registry
            .set("short", json("1"), None, Some(2 * SECOND))
            .unwrap()
            .change,
        Change::Refreshed
    );
    clock.advance(SECOND + Duration::from_millis(500));
    assert_eq!(registry.expire_due(), 0, "refreshed: not due before t=3s");
    assert!(registry.get("short").is_some());

    clock.advance(Duration::from_millis(500));
    let before = registry.revision();
    assert_eq!(registry.expire_due(), 1);
    assert!(registry.get("short").is_none());
    assert_eq!(
        registry.revision(),
        before + 1,
        "an expiry takes a revision"
    );

    clock.advance(7 * SECOND);
    assert_eq!(registry.expire_due(), 2);
    assert!(registry.is_empty());
    assert_eq!(registry.stats().expired, 3);
}

#[test]
fn a_refresh_with_a_shorter_ttl_expires_earlier() {
    let (registry, clock) = registry();
    registry
        .set("a", json("1"), None, Some(60 * SECOND))
        .unwrap();
    registry.set("a", json("1"), None, Some(SECOND)).unwrap();
    clock.advance(SECOND);
    assert_eq!(registry.expire_due(), 1);
    assert!(registry.get("a").is_none());
}

#[test]
fn a_change_restarts_the_ttl() {
    let (registry, clock) = registry();
    registry
        .set("a", json("1"), None, Some(2 * SECOND))
        .unwrap();
    clock.advance(SECOND);
    registry
        .set("a", json("2"), None, Some(2 * SECOND))
        .unwrap();
    clock.advance(SECOND);
    assert_eq!(registry.expire_due(), 0);
    clock.advance(SECOND);
    assert_eq!(registry.expire_due(), 1);
}

#[test]
fn expired_then_set_again_is_a_new_register() {
    let (registry, clock) = registry();
    registry.set("a", json("1"), None, Some(SECOND)).unwrap();
    clock.advance(SECOND);
    registry.expire_due();
    let outcome = registry.set("a", json("1"), None, Some(SECOND)).unwrap();
    assert_eq!(outcome.change, Change::Created);
    assert_eq!(registry.get("a").unwrap().created(), outcome.revision);
}

#[test]
fn remove_takes_a_revision_and_missing_is_not_an_error() {
    let (registry, _) = registry();
    registry.set("a", json("1"), None, None).unwrap();
    assert_eq!(registry.remove("a"), Some(2));
    assert_eq!(registry.remove("a"), None);
    assert!(registry.get("a").is_none());
}

#[test]
fn read_returns_existing_registers_sorted_with_a_revision() {
    let (registry, _) = registry();
    for name in ["c", "a", "b"] {
        registry.set(name, json("1"), None, None).unwrap();
    }
    let read = registry.read(&Selector::names(["c", "missing", "a"]));
    let names: Vec<&str> = read.registers.iter().map(|r| r.name()).collect();
    assert_eq!(names, ["a", "c"]);
    assert_eq!(read.revision, 3);
    let all = registry.list();
    let names: Vec<&str> = all.registers.iter().map(|r| r.name()).collect();
    assert_eq!(names, ["a", "b", "c"]);
}

#[test]
fn changed_since_follows_changes_and_removals() {
    let (registry, _) = registry();
    let a = Selector::name("a");
    registry.set("a", json("1"), None, None).unwrap(); // r1
    assert!(registry.changed_since(&a, 0));
    assert!(!registry.changed_since(&a, 1));
    registry.set("b", json("1"), None, None).unwrap(); // r2
    assert!(
        !registry.changed_since(&a, 1),
        "another register is not a change of a"
    );
    assert!(registry.changed_since(&Selector::All, 1));
    registry.remove("a"); // r3
    assert!(registry.changed_since(&a, 2), "a removal is a change");
    assert!(!registry.changed_since(&a, 3));
    assert!(!registry.changed_since(&Selector::name("never"), 0));
}

#[test]
fn removals_older_than_the_history_answer_changed() {
    let registry = Registry::builder()
        .manual_expiry()
        .removal_history(1)
        .build();
    registry.set("a", json("1"), None, None).unwrap(); // r1
    registry.set("b", json("1"), None, None).unwrap(); // r2
    registry.remove("a"); // r3
    registry.remove("b"); // r4: forgets a's removal
    assert!(
        registry.changed_since(&Selector::name("a"), 2),
        "cannot tell: changed"
    );
    assert!(registry.changed_since(&Selector::name("b"), 3));
    assert!(!registry.changed_since(&Selector::name("b"), 4));
    assert!(
        !registry.changed_since(&Selector::name("never"), 3),
        "3 is within the kept history"
    );
    assert!(
        registry.changed_since(&Selector::name("never"), 2),
        "2 is not"
    );
}

#[tokio::test]
async fn a_change_wakes_only_its_own_waiters() {
    let (registry, _) = registry();
    let start = registry.revision();
    let mut on_a = registry.wait(&Selector::name("a"), start);
    let mut on_b = registry.wait(&Selector::name("b"), start);
    let mut on_any = registry.wait(&Selector::All, start);
    assert!(poll_once(&mut on_a).is_pending());
    assert!(poll_once(&mut on_b).is_pending());
    assert!(poll_once(&mut on_any).is_pending());
    assert_eq!(registry.stats().parked_waits, 3);

    registry.set("a", json("1"), None, None).unwrap();
    assert_eq!(poll_once(&mut on_a), Poll::Ready(WaitOutcome::Changed));
    assert_eq!(poll_once(&mut on_any), Poll::Ready(WaitOutcome::Changed));
    assert!(poll_once(&mut on_b).is_pending(), "b did not change");
}

#[tokio::test]
async fn an_equal_write_wakes_nobody() {
    let (registry, _) = registry();
    registry.set("a", json("1"), None, None).unwrap();
    let mut wait = registry.wait(&Selector::name("a"), registry.revision());
    let mut any = registry.wait(&Selector::All, registry.revision());
    registry.set("a", json("1"), None, None).unwrap();
    assert!(poll_once(&mut wait).is_pending());
    assert!(poll_once(&mut any).is_pending());
}

#[tokio::test]
async fn expiry_and_removal_wake_waiters() {
    let (registry, clock) = registry();
    registry.set("a", json("1"), None, Some(SECOND)).unwrap();
    registry.set("b", json("1"), None, None).unwrap();
    let mut on_a = registry.wait(&Selector::name("a"), registry.revision());
    let mut on_b = registry.wait(&Selector::name("b"), registry.revision());
    assert!(poll_once(&mut on_a).is_pending());
    clock.advance(SECOND);
    registry.expire_due();
    assert_eq!(poll_once(&mut on_a), Poll::Ready(WaitOutcome::Changed));
    assert!(poll_once(&mut on_b).is_pending());
    registry.remove("b");
    assert_eq!(poll_once(&mut on_b), Poll::Ready(WaitOutcome::Changed));
}

#[tokio::test]
async fn a_wait_from_an_old_revision_answers_at_once() {
    let (registry, _) = registry();
    registry.set("a", json("1"), None, None).unwrap(); // r1
    registry.remove("a"); // r2
    let mut wait = registry.wait(&Selector::name("a"), 1);
    assert_eq!(poll_once(&mut wait), Poll::Ready(WaitOutcome::Changed));
    let mut wait = registry.wait(&Selector::name("a"), 2);
    assert!(poll_once(&mut wait).is_pending());
}

#[tokio::test]
async fn a_wait_from_a_revision_this_registry_never_had_answers_at_once() {
    // An index from a restarted server's earlier life: waiting for it could take forever.
    let (registry, _) = registry();
    registry.set("a", json("1"), None, None).unwrap(); // r1
    let mut wait = registry.wait(&Selector::name("a"), 5);
    assert_eq!(poll_once(&mut wait), Poll::Ready(WaitOutcome::Changed));
    let mut any = registry.wait(&Selector::All, 5);
    assert_eq!(poll_once(&mut any), Poll::Ready(WaitOutcome::Changed));
}

#[tokio::test]
async fn dropped_waits_leak_no_slots() {
    let (registry, _) = registry();
    let waits: Vec<_> = (0..100)
        .map(|i| {
            registry.wait(
                &Selector::names([format!("n{}", i % 10), "shared".into()]),
                0,
            )
        })
        .collect();
    let takes: Vec<_> = (0..10)
        .map(|i| registry.take_requests(Selector::name(&format!("n{i}"))))
        .collect();
    assert_eq!(registry.stats().parked_waits, 100);
    assert_eq!(registry.stats().parked_takes, 10);
    assert_eq!(registry.watch_slots(), 11 + 10);
    drop(waits);
    drop(takes);
    assert_eq!(registry.stats().parked_waits, 0);
    assert_eq!(registry.stats().parked_takes, 0);
    assert_eq!(registry.watch_slots(), 0);
}

#[tokio::test]
async fn many_waiters_of_one_register_all_wake() {
    let (registry, _) = registry();
    let start = registry.revision();
    let tasks: Vec<_> = (0..1000)
        .map(|_| tokio::spawn(registry.wait(&Selector::name("hot"), start)))
        .collect();
    registry.set("hot", json("1"), None, None).unwrap();
    for task in tasks {
        assert_eq!(task.await.unwrap(), WaitOutcome::Changed);
    }
}

#[tokio::test]
async fn shutdown_ends_every_wait_and_take() {
    let (registry, _) = registry();
    registry.set("a", json("1"), None, None).unwrap();
    let wait = tokio::spawn(registry.wait(&Selector::name("a"), registry.revision()));
    let any = tokio::spawn(registry.wait(&Selector::All, registry.revision()));
    let take = tokio::spawn(registry.take_requests(Selector::All));
    let closed = tokio::spawn(registry.closed());
    tokio::task::yield_now().await;
    registry.shutdown();
    assert_eq!(wait.await.unwrap(), WaitOutcome::Shutdown);
    assert_eq!(any.await.unwrap(), WaitOutcome::Shutdown);
    assert_eq!(take.await.unwrap(), vec![]);
    assert_eq!(closed.await.unwrap(), WaitOutcome::Shutdown);
    // Later waits end at once; registers are kept.
    assert_eq!(
        registry.wait(&Selector::name("a"), 99).await,
        WaitOutcome::Shutdown
    );
    assert!(registry.get("a").is_some());
}

#[tokio::test(start_paused = true)]
async fn a_wait_with_a_deadline_times_out() {
    let (registry, _) = registry();
    let wait = registry.wait(&Selector::name("a"), registry.revision());
    let result = tokio::time::timeout(Duration::from_secs(30), wait).await;
    assert!(
        result.is_err(),
        "nothing changed: the deadline ends the wait"
    );
    assert_eq!(
        registry.stats().parked_waits,
        0,
        "the timed-out wait unregistered"
    );
}

#[test]
fn requests_latest_wins_and_are_taken_once() {
    let (registry, _) = registry();
    registry.request("lamp", json("1")).unwrap();
    registry.request("lamp", json("2")).unwrap();
    registry.request("fan", json("true")).unwrap();
    assert_eq!(registry.stats().pending_requests, 2);
    let taken = registry.try_take_requests(&Selector::name("lamp"));
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].value.as_str(), "2", "latest wins");
    assert!(registry
        .try_take_requests(&Selector::name("lamp"))
        .is_empty());
    let rest = registry.try_take_requests(&Selector::All);
    assert_eq!(rest.len(), 1);
    assert_eq!(&*rest[0].name, "fan");
    assert_eq!(registry.stats().pending_requests, 0);
}

#[tokio::test]
async fn a_pending_request_is_answered_at_once_and_a_new_one_wakes_a_take() {
    let (registry, _) = registry();
    registry.request("lamp", json("1")).unwrap();
    let taken = registry.take_requests(Selector::name("lamp")).await;
    assert_eq!(taken.len(), 1);

    let mut take = registry.take_requests(Selector::name("lamp"));
    assert!(poll_once(&mut take).is_pending());
    registry.request("other", json("1")).unwrap();
    assert!(
        poll_once(&mut take).is_pending(),
        "another name does not wake it"
    );
    registry.request("lamp", json("2")).unwrap();
    match poll_once(&mut take) {
        Poll::Ready(taken) => assert_eq!(taken[0].value.as_str(), "2"),
        Poll::Pending => panic!("the request should wake the take"),
    }
}

#[tokio::test]
async fn a_cancelled_take_consumes_nothing() {
    let (registry, _) = registry();
    let mut take = registry.take_requests(Selector::name("lamp"));
    assert!(poll_once(&mut take).is_pending());
    drop(take);
    registry.request("lamp", json("1")).unwrap();
    assert_eq!(registry.try_take_requests(&Selector::All).len(), 1);
}

#[tokio::test]
async fn two_takers_share_requests_without_duplicates() {
    let (registry, _) = registry();
    let mut first = pin!(registry.take_requests(Selector::name("lamp")));
    let mut second = pin!(registry.take_requests(Selector::All));
    let mut cx = Context::from_waker(Waker::noop());
    assert!(first.as_mut().poll(&mut cx).is_pending());
    assert!(second.as_mut().poll(&mut cx).is_pending());
    registry.request("lamp", json("1")).unwrap();
    let a = first.as_mut().poll(&mut cx);
    let b = second.as_mut().poll(&mut cx);
    let delivered = [a, b]
        .into_iter()
        .filter_map(|p| match p {
            Poll::Ready(taken) => Some(taken.len()),
            Poll::Pending => None,
        })
        .sum::<usize>();
    assert_eq!(delivered, 1, "delivered to exactly one taker");
}

#[test]
fn pending_requests_are_bounded_by_count_and_age() {
    let clock = ManualClock::new();
    let registry = Registry::builder()
        .clock(clock.clone())
        .manual_expiry()
        .max_pending_requests(2)
        .request_max_age(Duration::from_secs(60))
        .build();
    registry.request("a", json("1")).unwrap();
    registry.request("b", json("1")).unwrap();
    assert_eq!(
        registry.request("c", json("1")).unwrap_err(),
        StoreError::TooManyRequests { limit: 2 }
    );
    registry.request("a", json("2")).unwrap(); // replacing is allowed at the cap
    clock.advance(Duration::from_secs(61));
    registry.expire_due();
    assert_eq!(registry.stats().pending_requests, 0, "aged out");
    registry.request("c", json("1")).unwrap();
    clock.advance(Duration::from_secs(61));
    assert!(
        registry.try_take_requests(&Selector::All).is_empty(),
        "a take skips requests past their age even before the sweep"
    );
}

#[test]
fn a_batch_of_requests_is_stored_all_or_none() {
    let registry = Registry::builder()
        .manual_expiry()
        .max_pending_requests(3)
        .build();
    registry.request("a", json("1")).unwrap();
    let over = registry.request_many([
        ("a", json("2")),
        ("b", json("1")),
        ("c", json("1")),
        ("d", json("1")),
    ]);
    assert_eq!(over.unwrap_err(), StoreError::TooManyRequests { limit: 3 });
    assert_eq!(
        registry.stats().pending_requests,
        1,
        "nothing of the batch was stored"
    );
    registry
        .request_many([("a", json("2")), ("b", json("1")), ("c", json("1"))])
        .unwrap();
    let taken = registry.try_take_requests(&Selector::All);
    let values: Vec<(&str, &str)> = taken.iter().map(|r| (&*r.name, r.value.as_str())).collect();
    assert_eq!(values, [("a", "2"), ("b", "1"), ("c", "1")]);
}

#[tokio::test]
async fn the_feed_carries_every_change_in_revision_order() {
    let (registry, clock) = registry();
    let mut feed = registry.subscribe();
    registry.set("a", json("1"), None, Some(SECOND)).unwrap();
    registry.set("a", json("1"), None, Some(SECOND)).unwrap(); // refresh: no event
    registry.set("b", json("1"), None, None).unwrap();
    registry.remove("b");
    clock.advance(SECOND);
    registry.expire_due();
    let mut events = Vec::new();
    while let Some(event) = feed.try_recv().unwrap() {
        events.push((event.kind, event.name.to_string(), event.revision));
    }
    assert_eq!(
        events,
        [
            (EventKind::Set, "a".into(), 1),
            (EventKind::Set, "b".into(), 2),
            (EventKind::Delete, "b".into(), 3),
            (EventKind::Expire, "a".into(), 4),
        ]
    );
}

#[test]
fn a_slow_subscriber_is_told_to_resync() {
    let registry = Registry::builder().manual_expiry().feed_capacity(4).build();
    let mut feed = registry.subscribe();
    for i in 0..10 {
        registry
            .set("a", Json::from(i64::from(i)), None, None)
            .unwrap();
    }
    assert_eq!(feed.try_recv(), Err(FeedError::Lagged { missed: 6 }));
    let next = feed.try_recv().unwrap().unwrap();
    assert_eq!(next.revision, 7, "it continues with the oldest kept event");
}

#[test]
fn replay_reports_current_state_of_what_changed() {
    let (registry, clock) = registry();
    registry.set("a", json("1"), None, None).unwrap(); // r1
    registry.set("b", json("1"), None, None).unwrap(); // r2
    registry.set("c", json("1"), None, None).unwrap(); // r3
    registry.remove("b"); // r4
    registry.set("a", json("2"), None, None).unwrap(); // r5
    registry.remove("c"); // r6
    registry.set("c", json("3"), None, None).unwrap(); // r7: back again
    let brief = Some(Duration::from_millis(10));
    registry.set("d", json("1"), None, brief).unwrap(); // r8
    clock.advance(Duration::from_millis(10));
    assert_eq!(registry.expire_due(), 1); // r9: d expires

    let replay = registry.replay(&Selector::All, 2);
    assert!(replay.complete);
    assert_eq!(replay.revision, 9);
    let set: Vec<(&str, u64)> = replay
        .set
        .iter()
        .map(|r| (r.name(), r.revision()))
        .collect();
    assert_eq!(set, [("a", 5), ("c", 7)]);
    // Each removal says why, as its feed event did.
    assert_eq!(
        replay.removed,
        vec![
            ("b".into(), 4, EventKind::Delete),
            ("d".into(), 9, EventKind::Expire)
        ]
    );

    let only_b = registry.replay(&Selector::name("b"), 0);
    assert!(only_b.set.is_empty());
    assert_eq!(only_b.removed.len(), 1);
}

#[test]
fn the_background_thread_expires_registers() {
    // Real time, but the assertion does not depend on timing: we wait (bounded) for the
    // outcome rather than sleeping a fixed amount and hoping.
    let registry = Registry::builder().build();
    registry
        .set("a", json("1"), None, Some(Duration::from_millis(1)))
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let start = registry.revision();
    let outcome = runtime.block_on(async {
        tokio::time::timeout(
            Duration::from_secs(10),
            registry.wait(&Selector::name("a"), start),
        )
        .await
    });
    assert_eq!(outcome, Ok(WaitOutcome::Changed));
    assert!(registry.get("a").is_none());
}
