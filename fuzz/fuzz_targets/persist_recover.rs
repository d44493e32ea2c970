//! Arbitrary bytes as a data directory's log segment (after a valid header or not), recovered.
//!
//! ```text
//! cargo +nightly fuzz run persist_recover -- -max_total_time=60
//! ```
//!
//! Checks, for every input: recovery never panics or hangs; it either restores (what decoded
//! before any damage) or refuses with `PersistError::Corrupt`; with `repair` it always starts;
//! a registry that started takes a write and restores it, with its revision, after a restart.
#![no_main]

use libfuzzer_sys::fuzz_target;
use reg::persist::{Persist, PersistError, SyncPolicy};
use reg::{Json, Registry};

fn open(dir: &std::path::Path, repair: bool) -> Result<Registry, PersistError> {
    Registry::builder()
        .manual_expiry()
        .open(Persist::new(dir).sync(SyncPolicy::Always).repair(repair))
}

fuzz_target!(|input: (bool, Vec<u8>)| {
    let (with_header, bytes) = input;
    let dir = tempfile::tempdir().unwrap();
    let mut file = if with_header { b"REGLOG\0\x01".to_vec() } else { Vec::new() };
    file.extend_from_slice(&bytes);
    std::fs::write(dir.path().join("log-00000000000000000001.reg"), &file).unwrap();
    match open(dir.path(), false) {
        Ok(registry) => drop(registry),
        Err(PersistError::Corrupt { .. }) => {}
        Err(other) => panic!("not a corruption: {other}"),
    }
    let registry = open(dir.path(), true).expect("repair always starts");
    let set = registry
        .set("fuzz.after", Json::parse(b"1").unwrap(), None, None)
        .unwrap();
    drop(registry);
    let registry = open(dir.path(), false).expect("a repaired directory starts");
    assert_eq!(registry.get("fuzz.after").unwrap().revision(), set.revision);
});
