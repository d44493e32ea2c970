//! Request vs. take: a change request is delivered at most once and never lost. Whatever no
//! take returned is still pending for a final take; a take that is cancelled (dropped after a
//! `Pending` poll) consumed nothing; a parked take is always woken by a matching request.

use loom::future::block_on;
use loom::thread;
use reg::{ChangeRequest, Selector};

use crate::util::{check, json, poll_once, registry, registry_with};

fn names(taken: &[ChangeRequest]) -> Vec<&str> {
    taken.iter().map(|r| &*r.name).collect()
}

/// Two non-blocking takers (one by name, one for everything) race a requester; a final take
/// collects what is left. Each request comes out exactly once.
#[test]
fn two_takers_deliver_each_request_once() {
    check(2, || {
        let (registry, _clock) = registry();
        let requester = {
            let registry = registry.clone();
            thread::spawn(move || {
                registry.request("a", json("1")).unwrap();
                registry.request("b", json("2")).unwrap();
            })
        };
        let by_name = {
            let registry = registry.clone();
            thread::spawn(move || registry.try_take_requests(&Selector::names(["a", "b"])))
        };
        let mut taken = registry.try_take_requests(&Selector::All);
        requester.join().unwrap();
        taken.extend(by_name.join().unwrap());
        taken.extend(registry.try_take_requests(&Selector::All));

        let mut delivered = names(&taken);
        delivered.sort_unstable();
        assert_eq!(delivered, ["a", "b"], "lost or duplicated: {taken:?}");
        for request in &taken {
            let expected = if &*request.name == "a" { "1" } else { "2" };
            assert_eq!(request.value.as_str(), expected);
        }
        assert_eq!(registry.stats().pending_requests, 0);
    });
}

/// A requester for one name while another name's request is being taken must never be refused
/// by the cap when the cap is not reached: the pending count never transiently overflows.
#[test]
fn concurrent_take_never_trips_the_cap() {
    check(2, || {
        let (registry, _clock) = registry_with(|b| b.max_pending_requests(2));
        let requester = {
            let registry = registry.clone();
            thread::spawn(move || registry.request("a", json("1")).unwrap())
        };
        let taker = {
            let registry = registry.clone();
            thread::spawn(move || registry.try_take_requests(&Selector::name("a")))
        };
        // At most `a` and `c` are ever pending: under the cap of 2.
        registry
            .request("c", json("3"))
            .expect("refused under the cap");
        requester.join().unwrap();
        let mut taken = taker.join().unwrap();
        taken.extend(registry.try_take_requests(&Selector::All));
        let mut delivered = names(&taken);
        delivered.sort_unstable();
        assert_eq!(delivered, ["a", "c"]);
        assert_eq!(registry.stats().pending_requests, 0);
    });
}

/// A blocking take (made before or concurrently with the request) always completes with it:
/// no lost wake-up.
#[test]
fn blocking_take_gets_concurrent_request() {
    check(3, || {
        let (registry, _clock) = registry();
        let requester = {
            let registry = registry.clone();
            thread::spawn(move || registry.request("a", json("1")).unwrap())
        };
        let taken = block_on(registry.take_requests(Selector::name("a")));
        assert_eq!(names(&taken), ["a"]);
        requester.join().unwrap();
        assert!(registry.try_take_requests(&Selector::All).is_empty());
    });
}

/// Two blocking takers for the same request; the requester then shuts the registry down so the
/// loser ends. The request comes out of exactly one take (or, if both ended on the shutdown
/// first, out of the final take).
#[test]
fn two_blocking_takers_and_shutdown() {
    check(2, || {
        let (registry, _clock) = registry();
        let taker = {
            let registry = registry.clone();
            thread::spawn(move || block_on(registry.take_requests(Selector::name("a"))))
        };
        let requester = {
            let registry = registry.clone();
            thread::spawn(move || {
                registry.request("a", json("1")).unwrap();
                registry.shutdown();
            })
        };
        let mut taken = block_on(registry.take_requests(Selector::All));
        requester.join().unwrap();
        taken.extend(taker.join().unwrap());
        taken.extend(registry.try_take_requests(&Selector::All));
        assert_eq!(names(&taken), ["a"], "lost or duplicated: {taken:?}");
    });
}

/// A take polled once and dropped while a request arrives: if its poll did not return the
/// request, the request is still pending.
#[test]
fn cancelled_take_consumes_nothing() {
    check(3, || {
        let (registry, _clock) = registry();
        let requester = {
            let registry = registry.clone();
            thread::spawn(move || registry.request("a", json("1")).unwrap())
        };
        let mut take = registry.take_requests(Selector::name("a"));
        let mut taken = match poll_once(&mut take) {
            std::task::Poll::Ready(taken) => taken,
            std::task::Poll::Pending => Vec::new(),
        };
        drop(take);
        requester.join().unwrap();
        taken.extend(registry.try_take_requests(&Selector::All));
        assert_eq!(names(&taken), ["a"], "lost or duplicated: {taken:?}");
        assert_eq!(registry.watch_slots(), 0, "a dropped take leaked its slot");
        assert_eq!(registry.stats().parked_takes, 0);
    });
}
