//! Response bodies, assembled from the registry's canonical bytes: values and metadata are
//! copied as stored, never re-serialized; only names are escaped here.

use std::sync::Arc;

use bytes::Bytes;

use crate::duration::format_go_duration;
use crate::store::{ChangeRequest, Register, Registry};

/// Appends `s` as a JSON string in the registry's canonical encoding: `"`, `\` and control
/// characters escaped (the short forms where JSON has them, else `\u00xx`), everything else
/// raw UTF-8.
pub(crate) fn write_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short = match b {
            b'"' => b'"',
            b'\\' => b'\\',
            b'\n' => b'n',
            b'\r' => b'r',
            b'\t' => b't',
            0x08 => b'b',
            0x0c => b'f',
            0x00..=0x1f => 0,
            _ => continue,
        };
        out.extend_from_slice(bytes.get(start..i).unwrap_or_default());
        if short == 0 {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.push(b'\\');
            out.push(short);
        }
        start = i + 1;
    }
    out.extend_from_slice(bytes.get(start..).unwrap_or_default());
    out.push(b'"');
}

/// Appends `n` in decimal.
pub(crate) fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        // `n % 10` is below 10: the narrowing cannot lose anything.
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(digits.get(at..).unwrap_or_default());
}

/// `{"registers":{"<name>":{"value":…,"metadata":…}}}` for a consumer read. With a registry
/// (`detail=true`) each register also gets `revision`, `created` and `expires_in`.
pub(crate) fn registers(registers: &[Arc<Register>], detail: Option<&Registry>) -> Bytes {
    let estimate: usize = registers
        .iter()
        .map(|r| {
            r.name().len()
                + r.value().as_bytes().len()
                + r.metadata().map_or(0, |m| m.as_bytes().len())
                + 80
        })
        .sum();
    let mut out = Vec::with_capacity(16 + estimate);
    out.extend_from_slice(b"{\"registers\":{");
    for (i, register) in registers.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(&mut out, register.name());
        out.extend_from_slice(b":{\"value\":");
        out.extend_from_slice(register.value().as_bytes());
        if let Some(metadata) = register.metadata() {
            out.extend_from_slice(b",\"metadata\":");
            out.extend_from_slice(metadata.as_bytes());
        }
        if let Some(registry) = detail {
            out.extend_from_slice(b",\"revision\":");
            push_u64(&mut out, register.revision());
            out.extend_from_slice(b",\"created\":");
            push_u64(&mut out, register.created());
            out.extend_from_slice(b",\"expires_in\":");
            let expires_in = registry.expires_in(register.name()).unwrap_or_default();
            write_str(&mut out, &format_go_duration(expires_in));
        }
        out.push(b'}');
    }
    out.extend_from_slice(b"}}");
    Bytes::from(out)
}

/// `{"registers":{"<name>":{"value":…}}}` for the change requests a provider took.
/// With `detail`, each request also says who asked (`requester`, `request_id`) when known.
pub(crate) fn requests(requests: &[ChangeRequest], detail: bool) -> Bytes {
    let estimate: usize = requests
        .iter()
        .map(|r| r.name.len() + r.value.as_bytes().len() + 16)
        .sum();
    let mut out = Vec::with_capacity(16 + estimate);
    out.extend_from_slice(b"{\"registers\":{");
    for (i, request) in requests.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(&mut out, &request.name);
        out.extend_from_slice(b":{\"value\":");
        out.extend_from_slice(request.value.as_bytes());
        if let Some(origin) = request.origin.as_ref().filter(|_| detail) {
            out.extend_from_slice(b",\"requester\":");
            write_str(&mut out, origin.identity());
            out.extend_from_slice(b",\"request_id\":");
            write_str(&mut out, origin.request_id());
        }
        out.push(b'}');
    }
    out.extend_from_slice(b"}}");
    Bytes::from(out)
}

/// `{"error":"<message>"}`.
pub(crate) fn error(message: &str) -> Bytes {
    let mut out = Vec::with_capacity(message.len() + 16);
    out.extend_from_slice(b"{\"error\":");
    write_str(&mut out, message);
    out.push(b'}');
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(s: &str) -> String {
        let mut out = Vec::new();
        write_str(&mut out, s);
        String::from_utf8(out).unwrap_or_default()
    }

    #[test]
    fn names_are_escaped_canonically() {
        assert_eq!(escaped("plain"), r#""plain""#);
        assert_eq!(escaped("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(escaped("\n\t\u{1}\u{1f}é/"), "\"\\n\\t\\u0001\\u001fé/\"");
        // The same bytes the JSON module writes for a decoded string.
        for s in ["x\u{8}\u{c}\r", "ünïcode ✓", "\u{7f}"] {
            let json = crate::json::Json::from(s);
            assert_eq!(escaped(s), json.as_str());
        }
    }

    #[test]
    fn error_body() {
        assert_eq!(&error("bad \"x\"")[..], br#"{"error":"bad \"x\""}"#);
    }
}
