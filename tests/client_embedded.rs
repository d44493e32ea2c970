//! The high-level client over an in-process registry: deterministic, on tokio's paused clock.
//! The registry's own clock reads the same paused time, so TTLs and refreshes line up.
#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::time::Duration;

use reg::client::{Client, ClientError, Update};
use reg::{Clock, Json, Registry};
use tokio::time::Instant;

/// The registry's clock on tokio's (paused) time.
#[derive(Debug)]
struct TokioClock(Instant);

impl Clock for TokioClock {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.0.elapsed().as_millis()).unwrap()
    }
}

/// A registry whose TTLs run on tokio's clock and expire only when the test says so.
fn registry() -> Registry {
    Registry::builder()
        .clock(TokioClock(Instant::now()))
        .manual_expiry()
        .build()
}

fn json(text: &str) -> Json {
    Json::parse(text.as_bytes()).unwrap()
}

/// The future's output, or a failure after 5 s of (virtual) time.
async fn within<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(5), future)
        .await
        .expect("timed out")
}

/// Waits (in virtual time, bounded) until `condition` holds.
async fn eventually(mut condition: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("condition not reached");
}

fn set(name: &str, value: &str, revision: Option<u64>) -> Update {
    Update::Set {
        name: name.into(),
        value: json(value),
        metadata: None,
        revision,
    }
}

#[tokio::test(start_paused = true)]
async fn a_consumer_sees_the_value_then_changes_then_the_removal() {
    let registry = registry();
    let first = registry
        .set(
            "t",
            json("12345678901234567890.10"),
            Some(json(r#"{"unit":"C"}"#)),
            None,
        )
        .unwrap();
    let client = Client::embedded(registry.clone());
    let mut consumer = client.consume("t");
    assert_eq!(consumer.name(), "t");

    let update = within(consumer.next()).await.unwrap();
    assert_eq!(
        update,
        Update::Set {
            name: "t".into(),
            value: json("12345678901234567890.10"),
            metadata: Some(json(r#"{"unit":"C"}"#)),
            revision: Some(first.revision),
        }
    );

    let second = registry.set("t", json("1.0"), None, None).unwrap();
    assert_eq!(
        within(consumer.next()).await.unwrap(),
        set("t", "1.0", Some(second.revision))
    );

    let removed = registry.remove("t").unwrap();
    let update = within(consumer.next()).await.unwrap();
    assert!(update.is_removed());
    assert!(update.revision().unwrap() >= removed);
}

#[tokio::test(start_paused = true)]
async fn a_register_that_does_not_exist_yet_arrives_when_created() {
    let registry = registry();
    let client = Client::embedded(registry.clone());
    let mut consumer = client.consume("later");
    // Nothing to report while it does not exist (a removal of nothing is not an update).
    assert!(
        tokio::time::timeout(Duration::from_secs(1), consumer.next())
            .await
            .is_err()
    );
    registry.set("later", Json::null(), None, None).unwrap();
    assert_eq!(
        within(consumer.next()).await.unwrap().value(),
        Some(&Json::null())
    );
}

#[tokio::test(start_paused = true)]
async fn a_slow_consumer_skips_to_the_latest_and_never_blocks_a_fast_one() {
    let registry = registry();
    registry.set("s", json("1"), None, None).unwrap();
    let client = Client::embedded(registry.clone());
    let mut fast = client.consume("s");
    let mut slow = client.consume("s");
    assert_eq!(within(fast.next()).await.unwrap().value(), Some(&json("1")));
    assert_eq!(within(slow.next()).await.unwrap().value(), Some(&json("1")));

    for value in 2..=5 {
        registry
            .set("s", Json::from(value as i64), None, None)
            .unwrap();
        let update = within(fast.next()).await.unwrap();
        assert_eq!(update.value(), Some(&Json::from(value as i64)));
    }
    // The slow one gets the latest value, not a backlog.
    assert_eq!(within(slow.next()).await.unwrap().value(), Some(&json("5")));
    assert!(tokio::time::timeout(Duration::from_secs(1), slow.next())
        .await
        .is_err());
}

#[tokio::test(start_paused = true)]
async fn all_consumers_share_one_long_poll_and_new_names_reissue_it_at_once() {
    let registry = registry();
    registry.set("a", json("1"), None, None).unwrap();
    registry.set("b", json("2"), None, None).unwrap();
    let client = Client::builder()
        .poll_wait(Duration::from_secs(60))
        .embedded(registry.clone());
    let mut a = client.consume("a");
    let mut a2 = client.consume("a");
    assert_eq!(within(a.next()).await.unwrap().value(), Some(&json("1")));
    assert_eq!(within(a2.next()).await.unwrap().value(), Some(&json("1")));
    eventually(|| registry.stats().parked_waits == 1).await;

    // A new name while the poll is parked: the poll is re-issued at once, not after its wait.
    let started = Instant::now();
    let mut b = client.consume("b");
    assert_eq!(within(b.next()).await.unwrap().value(), Some(&json("2")));
    assert!(started.elapsed() < Duration::from_secs(60));

    // Still one poll, now over both names; a change to either reaches its consumers.
    eventually(|| registry.stats().parked_waits == 1).await;
    registry.set("b", json("3"), None, None).unwrap();
    assert_eq!(within(b.next()).await.unwrap().value(), Some(&json("3")));
    registry.set("a", json("4"), None, None).unwrap();
    assert_eq!(within(a.next()).await.unwrap().value(), Some(&json("4")));
    assert_eq!(within(a2.next()).await.unwrap().value(), Some(&json("4")));
    assert_eq!(registry.stats().parked_waits, 1);
}

#[tokio::test(start_paused = true)]
async fn no_change_is_missed_between_polls() {
    let registry = registry();
    registry.set("n", json("0"), None, None).unwrap();
    let client = Client::embedded(registry.clone());
    let mut consumer = client.consume("n");
    assert_eq!(
        within(consumer.next()).await.unwrap().value(),
        Some(&json("0"))
    );
    // Changes that land while no poll is parked (the task has not run yet) are still seen:
    // the next poll passes the last index.
    for round in 1..=20i64 {
        registry.set("n", Json::from(round), None, None).unwrap();
        if round % 3 == 0 {
            registry.remove("n");
            let update = within(consumer.next()).await.unwrap();
            assert!(update.is_removed(), "round {round}: {update:?}");
        } else {
            let update = within(consumer.next()).await.unwrap();
            assert_eq!(update.value(), Some(&Json::from(round)), "round {round}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn consume_all_reports_every_register_then_changes_and_removals() {
    let registry = registry();
    registry.set("b", json("2"), None, None).unwrap();
    registry.set("a", json("1"), None, None).unwrap();
    let client = Client::embedded(registry.clone());
    let mut all = client.consume_all();
    let mut a = client.consume("a");

    let first = within(all.next()).await.unwrap();
    let second = within(all.next()).await.unwrap();
    assert_eq!((first.name(), second.name()), ("a", "b"));
    assert_eq!(second.value(), Some(&json("2")));
    assert_eq!(within(a.next()).await.unwrap().value(), Some(&json("1")));

    registry.remove("a");
    let update = within(all.next()).await.unwrap();
    assert_eq!(update.name(), "a");
    assert!(update.is_removed());
    assert!(within(a.next()).await.unwrap().is_removed());

    registry
        .set("c", json(r#"{"on":true}"#), None, None)
        .unwrap();
    let update = within(all.next()).await.unwrap();
    assert_eq!(update.name(), "c");
    assert_eq!(update.value(), Some(&json(r#"{"on":true}"#)));

    // One poll (every register) serves both kinds of consumer.
    eventually(|| registry.stats().parked_waits == 1).await;
}

#[tokio::test(start_paused = true)]
async fn a_provider_gets_the_requests_addressed_to_it_latest_first() {
    let registry = registry();
    let client = Client::embedded(registry.clone());
    let mut lamp = client
        .provide("lamp", Json::from(false), None, None)
        .await
        .unwrap();
    let mut fan = client
        .provide("fan", Json::from(0i64), None, None)
        .await
        .unwrap();
    assert_eq!(lamp.name(), "lamp");
    assert_eq!(registry.get("lamp").unwrap().value(), &Json::from(false));

    let consumer = client.consume("lamp");
    consumer.request(Json::from(true)).await.unwrap();
    assert_eq!(within(lamp.next_request()).await, Some(Json::from(true)));
    // Not for the fan.
    assert!(
        tokio::time::timeout(Duration::from_secs(1), fan.next_request())
            .await
            .is_err()
    );

    // Latest wins: two requests before the provider looks give the latest.
    client.request("fan", Json::from(1i64)).await.unwrap();
    client.request("fan", Json::from(2i64)).await.unwrap();
    assert_eq!(within(fan.next_request()).await, Some(Json::from(2i64)));
    assert!(
        tokio::time::timeout(Duration::from_secs(1), fan.next_request())
            .await
            .is_err()
    );

    // The same value asked twice is asked twice.
    client.request("fan", Json::from(2i64)).await.unwrap();
    assert_eq!(within(fan.next_request()).await, Some(Json::from(2i64)));

    // One request poll for both providers.
    eventually(|| registry.stats().parked_takes == 1).await;
}

#[tokio::test(start_paused = true)]
async fn a_provider_updates_its_value_and_consumers_see_it() {
    let registry = registry();
    let client = Client::embedded(registry.clone());
    let provider = client
        .provide("v", json("1"), Some(json(r#"{"k":1}"#)), None)
        .await
        .unwrap();
    let mut consumer = client.consume("v");
    assert_eq!(
        within(consumer.next()).await.unwrap().value(),
        Some(&json("1"))
    );

    provider.update(json("2")).await.unwrap();
    let Some(Update::Set {
        value, metadata, ..
    }) = within(consumer.next()).await
    else {
        panic!("expected a set")
    };
    assert_eq!((value, metadata), (json("2"), Some(json(r#"{"k":1}"#))));

    provider
        .update_with_metadata(json("3"), None)
        .await
        .unwrap();
    let Some(Update::Set {
        value, metadata, ..
    }) = within(consumer.next()).await
    else {
        panic!("expected a set")
    };
    assert_eq!((value, metadata), (json("3"), None));
}

#[tokio::test(start_paused = true)]
async fn a_provider_refreshes_at_half_its_ttl_and_dropping_it_removes_the_register() {
    let registry = registry();
    let client = Client::embedded(registry.clone());
    let ttl = Duration::from_secs(1);
    let provider = client
        .provide("alive", json("1"), None, Some(ttl))
        .await
        .unwrap();
    // The control: the same TTL without a provider.
    registry.set("control", json("1"), None, Some(ttl)).unwrap();

    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        registry.expire_due();
    }
    assert!(registry.get("control").is_none(), "the control expired");
    assert!(registry.get("alive").is_some(), "refreshed for 10 TTLs");

    let mut consumer = client.consume("alive");
    assert!(within(consumer.next()).await.unwrap().value().is_some());
    drop(provider);
    // Removed at once, not by expiry (which this registry only runs when told).
    assert!(within(consumer.next()).await.unwrap().is_removed());
    assert!(registry.get("alive").is_none());
}

#[tokio::test(start_paused = true)]
async fn providing_twice_or_badly_is_an_error_that_leaves_nothing_behind() {
    let registry = registry();
    let client = Client::embedded(registry.clone());
    let first = client.provide("p", json("1"), None, None).await.unwrap();
    let error = client
        .provide("p", json("2"), None, None)
        .await
        .unwrap_err();
    assert!(matches!(error, ClientError::AlreadyProvided(_)), "{error}");
    assert!(error.is_rejected());
    assert_eq!(registry.get("p").unwrap().value(), &json("1"));
    drop(first);

    // Metadata must be an object: refused by the registry, and the name is free again.
    let error = client
        .provide("q", json("1"), Some(json("5")), None)
        .await
        .unwrap_err();
    assert!(error.is_rejected());
    assert!(error.message().unwrap().contains("metadata"), "{error}");
    assert!(registry.get("q").is_none());
    let _q = client.provide("q", json("1"), None, None).await.unwrap();
    assert!(registry.get("q").is_some());
}

#[tokio::test(start_paused = true)]
async fn providing_again_right_after_a_drop_keeps_the_new_register() {
    let registry = registry();
    let client = Client::embedded(registry.clone());
    let old = client.provide("r", json("1"), None, None).await.unwrap();
    // The old provider's task has not removed its register yet when the new one starts:
    // the new one waits for that removal, so the removal cannot delete the new register.
    drop(old);
    let _new = client.provide("r", json("2"), None, None).await.unwrap();
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        registry.get("r").map(|r| r.value().clone()),
        Some(json("2"))
    );
}

#[tokio::test(start_paused = true)]
async fn next_is_cancel_safe() {
    let registry = registry();
    let client = Client::embedded(registry.clone());
    let mut consumer = client.consume("c");
    let mut provider = client.provide("c", json("1"), None, None).await.unwrap();
    assert_eq!(
        within(consumer.next()).await.unwrap().value(),
        Some(&json("1"))
    );

    // Cancelled while waiting: nothing is lost.
    assert!(
        tokio::time::timeout(Duration::from_millis(10), consumer.next())
            .await
            .is_err()
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(10), provider.next_request())
            .await
            .is_err()
    );
    registry.set("c", json("2"), None, None).unwrap();
    client.request("c", json("3")).await.unwrap();
    assert_eq!(
        within(consumer.next()).await.unwrap().value(),
        Some(&json("2"))
    );
    assert_eq!(within(provider.next_request()).await, Some(json("3")));
}

#[tokio::test(start_paused = true)]
async fn background_polls_stop_when_the_client_and_its_handles_are_gone() {
    let registry = registry();
    let client = Client::embedded(registry.clone());
    let mut consumer = client.consume("x");
    let provider = client.provide("y", json("1"), None, None).await.unwrap();
    client.request("x", json("1")).await.unwrap();
    eventually(|| {
        let stats = registry.stats();
        stats.parked_waits == 1 && stats.parked_takes == 1
    })
    .await;

    // The handles keep the client's tasks alive...
    drop(client);
    drop(provider);
    eventually(|| registry.stats().parked_takes == 0).await;
    registry.set("x", json("2"), None, None).unwrap();
    assert_eq!(
        within(consumer.next()).await.unwrap().value(),
        Some(&json("2"))
    );
    assert_eq!(registry.stats().parked_waits, 1);

    // ...and the last one stops them.
    drop(consumer);
    eventually(|| registry.stats().parked_waits == 0).await;
    assert_eq!(registry.watch_slots(), 0);
    assert!(
        registry.get("y").is_none(),
        "the dropped provider removed its register"
    );
}

#[tokio::test(start_paused = true)]
async fn a_registry_shutdown_ends_every_stream() {
    let registry = registry();
    let client = Client::embedded(registry.clone());
    let mut consumer = client.consume("z");
    let mut all = client.consume_all();
    let mut provider = client.provide("z", json("1"), None, None).await.unwrap();
    assert!(within(consumer.next()).await.is_some());
    assert!(within(all.next()).await.is_some());
    registry.shutdown();
    assert_eq!(within(consumer.next()).await, None);
    assert_eq!(within(all.next()).await, None);
    assert_eq!(within(provider.next_request()).await, None);
    // Later subscriptions end at once too.
    assert_eq!(within(client.consume("w").next()).await, None);
}

#[tokio::test(start_paused = true)]
async fn one_shot_reads_and_the_same_api_for_both_backends() {
    let registry = registry();
    registry
        .set("k", json("[1,2.50]"), Some(json(r#"{"b":1,"a":2}"#)), None)
        .unwrap();
    let client = Client::embedded(registry.clone());
    assert!(client.wire().is_none());
    let got = client.get("k").await.unwrap().unwrap();
    assert_eq!(got.value, json("[1,2.50]"));
    assert_eq!(got.metadata, Some(json(r#"{"a":2,"b":1}"#)));
    assert!(got.revision.is_some());
    assert_eq!(client.get("missing").await.unwrap(), None);
    let list = client.list().await.unwrap();
    assert_eq!(list.len(), 1);

    // A remote client is built the same way; the URL is checked at construction.
    assert!(Client::remote("http://127.0.0.1:1")
        .unwrap()
        .wire()
        .is_some());
    let error = Client::remote("127.0.0.1:8080").unwrap_err();
    assert!(error.is_invalid_url());
    assert!(error.to_string().contains("missing scheme"), "{error}");
}
