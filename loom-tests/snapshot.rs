//! Snapshot publish vs. read: a concurrent read sees a register's old or new snapshot whole
//! (value, metadata, revision and creation revision from the same write), never a mix, and the
//! revision a read answers with is never newer than the data it returns.

use loom::thread;
use reg::{Json, Register, Selector};

use crate::util::{check, json, registry};

/// The (value, metadata, revision, created) of a register, for comparing whole snapshots.
fn whole(register: &Register) -> (Json, Option<Json>, u64, u64) {
    (
        register.value().clone(),
        register.metadata().cloned(),
        register.revision(),
        register.created(),
    )
}

#[test]
fn get_sees_old_or_new_register_whole() {
    check(3, || {
        let (registry, _clock) = registry();
        registry
            .set("a", json("1"), Some(json(r#"{"v":1}"#)), None)
            .unwrap();
        let old = (json("1"), Some(json(r#"{"v":1}"#)), 1, 1);
        let new = (json(r#"[2]"#), Some(json(r#"{"v":2}"#)), 2, 1);

        let writer = {
            let registry = registry.clone();
            thread::spawn(move || {
                registry
                    .set("a", json("[2]"), Some(json(r#"{"v":2}"#)), None)
                    .unwrap()
            })
        };
        let seen = whole(&registry.get("a").unwrap());
        assert!(seen == old || seen == new, "torn read: {seen:?}");
        let outcome = writer.join().unwrap();
        assert_eq!(outcome.change, reg::Change::Changed);
        assert_eq!(outcome.revision, 2);
        assert_eq!(whole(&registry.get("a").unwrap()), new);
    });
}

/// A writer changes `a` (revision 2) and then creates `b` (revision 3) while a reader reads both.
/// Each register is seen whole, and everything up to the read's revision is in the data: a
/// reader whose revision says 3 must see both writes.
#[test]
fn read_revision_never_newer_than_its_data() {
    check(3, || {
        let (registry, _clock) = registry();
        registry.set("a", json("1"), None, None).unwrap();

        let writer = {
            let registry = registry.clone();
            thread::spawn(move || {
                registry.set("a", json("2"), None, None).unwrap();
                registry.set("b", json("3"), None, None).unwrap();
            })
        };
        for selector in [Selector::names(["a", "b"]), Selector::All] {
            let read = registry.read(&selector);
            assert!(read.revision <= 3);
            let a = read.registers.iter().find(|r| r.name() == "a").unwrap();
            let a = (a.value().as_str(), a.revision());
            assert!(a == ("1", 1) || a == ("2", 2), "torn `a`: {a:?}");
            if read.revision >= 2 {
                assert_eq!(a, ("2", 2), "revision {} but `a` is old", read.revision);
            }
            let b = read.registers.iter().find(|r| r.name() == "b");
            if read.revision >= 3 {
                let b = b.expect("revision 3 but `b` is missing");
                assert_eq!((b.value().as_str(), b.revision(), b.created()), ("3", 3, 3));
            }
            // Sorted by name, as documented.
            assert!(read.registers.windows(2).all(|w| w[0].name() < w[1].name()));
        }
        writer.join().unwrap();
    });
}
