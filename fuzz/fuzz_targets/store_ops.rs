//! Arbitrary operation sequences against the registry and a plain-map model (the same model
//! and harness as the proptests, `proptests/model.rs`): any divergence panics.
//!
//! ```text
//! cargo +nightly fuzz run store_ops -- -max_total_time=60
//! ```
#![no_main]

use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

#[path = "../../proptests/model.rs"]
mod model;

use model::{Harness, Op, Ttl};

/// Longest sequence tried per input: long enough for clocks to wrap wheel levels and the
/// removal history to overflow, short enough to keep executions fast.
const MAX_OPS: usize = 256;

fn ttl(u: &mut Unstructured<'_>) -> Result<Ttl> {
    Ok(match u.choose_index(4)? {
        0 => Ttl::Default,
        1 => Ttl::Zero,
        2 => Ttl::Millis(u.arbitrary()?),
        _ => Ttl::Micros(u.arbitrary()?),
    })
}

fn op(u: &mut Unstructured<'_>) -> Result<Op> {
    Ok(match u.choose_index(11)? {
        0 => Op::Set {
            name: u.arbitrary()?,
            value: u.arbitrary()?,
            variant: u.arbitrary()?,
            metadata: u.arbitrary()?,
            ttl: ttl(u)?,
        },
        1 => Op::Refresh {
            name: u.arbitrary()?,
            variant: u.arbitrary()?,
            ttl: ttl(u)?,
        },
        2 => Op::Remove {
            name: u.arbitrary()?,
        },
        3 => Op::Request {
            name: u.arbitrary()?,
            value: u.arbitrary()?,
        },
        4 => Op::Take {
            names: u.arbitrary()?,
        },
        5 => Op::ParkTake {
            names: u.arbitrary()?,
        },
        6 => Op::DropTake {
            index: u.arbitrary()?,
        },
        7 => Op::Wait {
            names: u.arbitrary()?,
            back: u.arbitrary()?,
        },
        8 => Op::DropWait {
            index: u.arbitrary()?,
        },
        9 => Op::Advance {
            // Mostly small steps (the TTLs are tens of ms), sometimes a jump of up to a minute.
            ms: if u.ratio(1, 8)? {
                u.arbitrary()?
            } else {
                u.int_in_range(0..=120)?
            },
        },
        _ => Op::Check {
            names: u.arbitrary()?,
            back: u.arbitrary()?,
        },
    })
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let mut ops = Vec::new();
    while !u.is_empty() && ops.len() < MAX_OPS {
        match op(&mut u) {
            Ok(op) => ops.push(op),
            Err(_) => break,
        }
    }
    Harness::run(&ops);
});
