//! Model-based property tests: random sequences of set / refresh / remove / request / take /
//! wait / advance-clock against a plain-map model with a manual clock (see `model.rs` for what
//! is checked after every step).
//!
//! ```text
//! cargo test --test proptests
//! ```
//!
//! Bounded: 256 cases of up to 64 operations each (a few seconds in debug). Set
//! `PROPTEST_CASES` for a longer run.
#![allow(clippy::unwrap_used)]

#[cfg(feature = "server")]
mod auth;
mod discovery;
mod model;
#[cfg(feature = "persist")]
mod persist;

use model::{Harness, Op, Ttl, NAMES};
use proptest::prelude::*;

/// Indices over a slightly larger domain than `NAMES`, so that both ordinary names and the
/// over-long one come up.
fn name() -> impl Strategy<Value = u8> {
    0..NAMES.len() as u8
}

/// A bit set of names, biased towards small selections; 0 selects every register.
fn names() -> impl Strategy<Value = u8> {
    prop_oneof![
        1 => Just(0u8),
        3 => (0..4u8).prop_map(|i| 1 << i),
        2 => 1..32u8,
    ]
}

fn ttl() -> impl Strategy<Value = Ttl> {
    prop_oneof![
        1 => Just(Ttl::Default),
        1 => Just(Ttl::Zero),
        4 => (1..80u16).prop_map(Ttl::Millis),
        1 => (0..5_000u32).prop_map(Ttl::Micros),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (name(), 0..8u8, any::<u8>(), 0..8u8, ttl()).prop_map(
            |(name, value, variant, metadata, ttl)| Op::Set { name, value, variant, metadata, ttl }
        ),
        4 => (name(), any::<u8>(), ttl())
            .prop_map(|(name, variant, ttl)| Op::Refresh { name, variant, ttl }),
        2 => name().prop_map(|name| Op::Remove { name }),
        3 => (name(), 0..8u8).prop_map(|(name, value)| Op::Request { name, value }),
        1 => names().prop_map(|names| Op::Take { names }),
        2 => names().prop_map(|names| Op::ParkTake { names }),
        1 => any::<u8>().prop_map(|index| Op::DropTake { index }),
        3 => (names(), prop_oneof![3 => Just(0u8), 1 => 0..8u8])
            .prop_map(|(names, back)| Op::Wait { names, back }),
        1 => any::<u8>().prop_map(|index| Op::DropWait { index }),
        5 => prop_oneof![
            6 => 0..30u16,
            4 => 30..120u16,
            // The request age limit and the default TTL, exactly.
            1 => Just(model::REQUEST_MAX_AGE_MS as u16),
            1 => Just(model::DEFAULT_TTL_MS as u16),
            2 => 900..1_100u16,
        ]
        .prop_map(|ms| Op::Advance { ms }),
        2 => (names(), 0..10u8).prop_map(|(names, back)| Op::Check { names, back }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    })]

    #[test]
    fn registry_matches_model(ops in prop::collection::vec(op(), 1..64)) {
        Harness::run(&ops);
    }
}

/// A fixed sequence through the interesting corners, so a regression shows up without luck.
#[test]
fn scripted_corners() {
    let set = |name, value, metadata, ttl| Op::Set {
        name,
        value,
        variant: 1,
        metadata,
        ttl,
    };
    Harness::run(&[
        Op::Wait {
            names: 0b1,
            back: 0,
        },
        Op::Wait {
            names: 0b10,
            back: 0,
        },
        Op::Wait { names: 0, back: 0 },
        set(0, 3, 4, Ttl::Millis(10)),
        Op::Refresh {
            name: 0,
            variant: 0,
            ttl: Ttl::Millis(30),
        },
        set(0, 3, 3, Ttl::Micros(1_500)),
        set(0, 3, 5, Ttl::Default),
        set(0, 3, 6, Ttl::Default),
        set(4, 0, 0, Ttl::Default),
        Op::ParkTake { names: 0b11 },
        Op::ParkTake { names: 0 },
        Op::Request { name: 1, value: 2 },
        Op::Request { name: 2, value: 2 },
        Op::Request { name: 3, value: 2 },
        Op::Request { name: 0, value: 2 },
        Op::Request { name: 1, value: 3 },
        Op::Advance { ms: 49 },
        Op::Advance { ms: 1 },
        Op::Remove { name: 0 },
        Op::Check {
            names: 0b1,
            back: 3,
        },
        Op::Advance { ms: 1_000 },
        Op::Take { names: 0 },
    ]);
}

/// Change requests at the edge of the age limit: one younger than it is delivered, one exactly
/// as old is dropped, and the cap counts stale requests until they are swept or taken.
#[test]
fn request_age_and_cap() {
    Harness::run(&[
        Op::Request { name: 0, value: 0 },
        Op::Advance { ms: 39 },
        Op::Take { names: 0b1 },
        Op::Request { name: 0, value: 1 },
        Op::Advance { ms: 40 },
        Op::Take { names: 0b1 },
        Op::Request { name: 0, value: 1 },
        Op::Request { name: 1, value: 1 },
        Op::Request { name: 2, value: 1 },
        Op::Advance { ms: 40 },
        // Stale but not swept: still counted against the cap.
        Op::Request { name: 3, value: 1 },
        Op::Request { name: 2, value: 2 },
        Op::Advance { ms: 1_000 },
        // Swept now (or not: the harness accepts either, from the pending count).
        Op::Request { name: 3, value: 1 },
        Op::ParkTake { names: 0b1000 },
        Op::Take { names: 0 },
    ]);
}

/// More registers due in one pass than the removal history keeps (4 > 3): the pass defers its
/// removals and folds them in, and the history must then answer exactly as if each had been
/// recorded (the model's horizon is exact), for every revision asked about — and a replay
/// still tells the folded expiries from a later delete.
#[test]
fn mass_expiry_folds_the_history_exactly() {
    let set = |name| Op::Set {
        name,
        value: 0,
        variant: 0,
        metadata: 0,
        ttl: Ttl::Default,
    };
    let mut ops = vec![
        Op::Refresh {
            name: 1,
            variant: 0,
            ttl: Ttl::Default,
        },
        set(0),
        set(2),
        set(3),
        Op::Remove { name: 2 },
        set(2),
        Op::Advance {
            ms: model::DEFAULT_TTL_MS as u16,
        },
        set(1),
        set(2),
        set(0),
        // A delete after the fold: replays show it as a delete, `d`'s removal as an expiry.
        Op::Remove { name: 1 },
    ];
    for back in 0..10 {
        ops.push(Op::Check { names: 0, back });
        ops.push(Op::Check { names: 0b1, back });
        ops.push(Op::Check {
            names: 0b1010,
            back,
        });
    }
    Harness::run(&ops);
}

#[cfg(feature = "persist")]
proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        ..ProptestConfig::default()
    })]

    #[test]
    fn a_restart_is_invisible(ops in prop::collection::vec(persist::op(), 1..40)) {
        persist::run(&ops);
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_catalog_is_the_registers_under_svc(ops in prop::collection::vec(discovery::op(), 1..48)) {
        discovery::run(&ops);
    }
}
