//! Arbitrary bytes into the JSON canonicalizer (`reg::Json::parse`).
//!
//! ```text
//! cargo +nightly fuzz run json_canon -- -max_total_time=60
//! ```
//!
//! Checks, for every input:
//! * parsing never panics, and the one-pass parser (`Json::parse`) and the tree parser
//!   (`json::parse_tree` + `Node::to_json`) accept the same inputs, report the same errors and
//!   give byte-identical output;
//! * an accepted input's canonical form is stable (`Json::parse(j.as_bytes()) == j`) and never
//!   longer than the input;
//! * agreement with serde_json: every input serde_json accepts is accepted, and its canonical
//!   form decodes (with serde_json) to the same value as the input. Inputs only reg accepts
//!   must fall under a documented difference: a `\u` escape of an unpaired surrogate (reg
//!   decodes it to U+FFFD, as Go does), a number beyond `f64`'s range (reg keeps number text),
//!   or nesting of exactly 128 levels (reg's limit is 128; serde_json stops at 127).
#![no_main]

use libfuzzer_sys::fuzz_target;
use reg::json::{parse_tree, MAX_DEPTH};
use reg::Json;

/// Whether serde_json's error is one of the documented differences where reg accepts more.
fn documented_difference(error: &serde_json::Error) -> bool {
    let message = error.to_string();
    [
        // Unpaired surrogates in `\u` escapes.
        "lone leading surrogate in hex escape",
        "unexpected end of hex escape",
        // Numbers beyond f64's range.
        "number out of range",
        // serde_json's recursion limit is one level below reg's MAX_DEPTH.
        "recursion limit exceeded",
    ]
    .iter()
    .any(|known| message.starts_with(known))
}

/// Nesting depth of a canonical text (brackets outside strings).
fn depth(canonical: &[u8]) -> usize {
    let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &byte in canonical {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

fuzz_target!(|data: &[u8]| {
    let parsed = Json::parse(data);

    // The two parsers agree.
    match (&parsed, parse_tree(data)) {
        (Ok(json), Ok(tree)) => assert_eq!(&tree.to_json(), json, "parse_tree output differs"),
        (Err(a), Err(b)) => assert_eq!(a, &b, "parse and parse_tree report different errors"),
        (a, b) => panic!("parse gave {a:?}, parse_tree gave {b:?}"),
    }

    if let Ok(json) = &parsed {
        // Canonical form is stable, and never longer than its input.
        assert_eq!(
            Json::parse(json.as_bytes()).as_ref(),
            Ok(json),
            "canonicalizing twice changed the text"
        );
        assert!(json.as_bytes().len() <= data.len(), "canonical form grew");
        assert!(depth(json.as_bytes()) <= MAX_DEPTH);
    }

    match (&parsed, serde_json::from_slice::<serde_json::Value>(data)) {
        (Ok(json), Ok(value)) => {
            let back: serde_json::Value = match serde_json::from_slice(json.as_bytes()) {
                Ok(back) => back,
                Err(error) => panic!("serde_json rejects the canonical form {json:?}: {error}"),
            };
            assert_eq!(back, value, "canonical form {json:?} is a different value");
        }
        (Err(error), Ok(value)) => {
            panic!("serde_json accepts {value:?} but reg rejects it: {error}")
        }
        (Ok(json), Err(error)) => assert!(
            documented_difference(&error),
            "reg accepts {json:?} but serde_json rejects it: {error}"
        ),
        (Err(_), Err(_)) => {}
    }
});
