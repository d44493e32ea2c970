//! Everything the server parses from a request — query strings, durations, bodies, service
//! instances under `svc/` — never
//! panics, and whatever is accepted round-trips: written back out in the wire format and
//! parsed again, it gives the same result.
#![no_main]

use std::fmt::Write as _;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use reg::server::fuzzing::{parse_body, parse_query};
use reg::discovery;
use reg::{format_go_duration, parse_go_duration, Json};

/// Percent-encodes everything but unreserved characters.
fn encode(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

fn duration(d: Duration) -> String {
    format_go_duration(d)
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    match kind % 4 {
        0 => {
            let Ok(text) = std::str::from_utf8(rest) else {
                return;
            };
            if let Ok(query) = parse_query(text) {
                let mut again = String::new();
                for name in &query.names {
                    let _ = write!(again, "name={}&", encode(name));
                }
                if let Some(wait) = query.wait {
                    let _ = write!(again, "wait={}&", encode(&duration(wait)));
                }
                if let Some(index) = query.index {
                    let _ = write!(again, "index={index}&");
                }
                if query.detail {
                    again.push_str("detail=true");
                }
                let reparsed = parse_query(&again).expect("a written-back query parses");
                assert_eq!(reparsed, query, "query round trip: {again:?}");
            }
        }
        1 => {
            if let Ok(entries) = parse_body(rest) {
                let mut body = String::from("{\"registers\":{");
                for (i, entry) in entries.iter().enumerate() {
                    if i > 0 {
                        body.push(',');
                    }
                    let name = serde_json::to_string(&entry.name).expect("a string serializes");
                    let _ = write!(body, "{name}:{{\"value\":{}", entry.value.as_str());
                    if let Some(metadata) = &entry.metadata {
                        let _ = write!(body, ",\"metadata\":{}", metadata.as_str());
                    }
                    if let Some(ttl) = entry.ttl {
                        let _ = write!(body, ",\"ttl\":\"{}\"", duration(ttl));
                    }
                    body.push('}');
                }
                body.push_str("}}");
                let reparsed = parse_body(body.as_bytes()).expect("a written-back body parses");
                assert_eq!(reparsed, entries, "body round trip: {body}");
            }
        }
        3 => {
            // A service instance: the register name, a NUL, the value.
            let Some(split) = rest.iter().position(|&b| b == 0) else {
                return;
            };
            let (Ok(name), Ok(value)) = (std::str::from_utf8(&rest[..split]), Json::parse(&rest[split + 1..])) else {
                return;
            };
            if let Ok(instance) = discovery::parse(name, &value) {
                instance.validate().expect("a parsed instance is valid");
                assert_eq!(instance.register_name(), name, "the name round trip");
                let again = discovery::parse(name, &instance.to_json()).expect("its own value parses");
                assert_eq!(again, instance, "instance round trip");
            }
        }
        _ => {
            let Ok(text) = std::str::from_utf8(rest) else {
                return;
            };
            if let Ok(nanos) = parse_go_duration(text) {
                if let Ok(nanos) = u64::try_from(nanos) {
                    let written = format_go_duration(Duration::from_nanos(nanos));
                    assert_eq!(parse_go_duration(&written), Ok(nanos as i64), "{written}");
                }
            }
        }
    }
});
