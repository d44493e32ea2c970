//! Request bodies the client writes and response bodies it reads.
//!
//! Responses are walked with [`parse_tree`], so every value and metadata subtree becomes a
//! [`Json`] with its numbers' exact text: what the server stored is what the caller gets.

use std::time::Duration;

use crate::client::error::ClientError;
use crate::client::wire::{RegisterValue, RegisterWrite};
use crate::duration::{format_go_duration, parse_go_duration};
use crate::json::{parse_tree, Json, Node};
use crate::store::{ChangeRequest, Revision};
use crate::sync::Arc;

/// `{"registers":{"<name>":{"value":…,"metadata":…,"ttl":"…"},…}}` for `PUT /provider`.
pub(crate) fn set_body(writes: &[RegisterWrite]) -> String {
    let mut out = String::from(r#"{"registers":{"#);
    for (i, write) in writes.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(Json::from(write.name.as_ref()).as_str());
        out.push_str(r#":{"value":"#);
        out.push_str(write.value.as_str());
        if let Some(metadata) = &write.metadata {
            out.push_str(r#","metadata":"#);
            out.push_str(metadata.as_str());
        }
        if let Some(ttl) = write.ttl {
            out.push_str(r#","ttl":"#);
            out.push_str(Json::from(format_go_duration(ttl)).as_str());
        }
        out.push('}');
    }
    out.push_str("}}");
    out
}

/// `{"registers":{"<name>":{"value":…},…}}` for `PUT /consumer`.
pub(crate) fn request_body<S: AsRef<str>>(requests: &[(S, Json)]) -> String {
    let mut out = String::from(r#"{"registers":{"#);
    for (i, (name, value)) in requests.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(Json::from(name.as_ref()).as_str());
        out.push_str(r#":{"value":"#);
        out.push_str(value.as_str());
        out.push('}');
    }
    out.push_str("}}");
    out
}

fn invalid(what: impl Into<String>) -> ClientError {
    ClientError::InvalidResponse(what.into())
}

/// The members of the top-level `"registers"` object of a response body.
fn registers<'a>(
    tree: &'a Node<'a>,
) -> Result<&'a [(crate::json::Str<'a>, Node<'a>)], ClientError> {
    match tree.get("registers") {
        Some(Node::Object(members)) => Ok(members),
        // Lenient: a server that writes `null` for "none" still means none.
        Some(Node::Null) => Ok(&[]),
        Some(other) => Err(invalid(format!(
            "\"registers\" is {}, not an object",
            other.kind()
        ))),
        None => Err(invalid("the body has no \"registers\" object")),
    }
}

fn parse(body: &[u8]) -> Result<Node<'_>, ClientError> {
    parse_tree(body).map_err(|error| invalid(format!("the body is not json: {error}")))
}

/// A revision field: an unsigned integer.
fn revision(node: Option<&Node<'_>>, what: &str) -> Result<Option<Revision>, ClientError> {
    match node {
        None | Some(Node::Null) => Ok(None),
        Some(Node::Number(text)) => text
            .parse()
            .map(Some)
            .map_err(|_| invalid(format!("{what} {text:?} is not an unsigned integer"))),
        Some(other) => Err(invalid(format!("{what} is {}, not a number", other.kind()))),
    }
}

/// Metadata: absent, `null` and `{}` all mean none, as in the store.
fn metadata(node: Option<&Node<'_>>) -> Option<Json> {
    let json = node?.to_json();
    (!json.is_null() && !json.is_empty_object()).then_some(json)
}

/// Parses a `GET /consumer` body into registers, sorted by name.
pub(crate) fn parse_registers(body: &[u8]) -> Result<Vec<RegisterValue>, ClientError> {
    let tree = parse(body)?;
    let members = registers(&tree)?;
    let mut out = Vec::with_capacity(members.len());
    for (key, entry) in members {
        let name: Arc<str> = Arc::from(key.decoded().as_ref());
        if !matches!(entry, Node::Object(_)) {
            return Err(invalid(format!("register {name:?} is not an object")));
        }
        let value = entry
            .get("value")
            .map(Node::to_json)
            .ok_or_else(|| invalid(format!("register {name:?} has no value")))?;
        let expires_in = match entry.get("expires_in") {
            None | Some(Node::Null) => None,
            Some(Node::String(text)) => {
                let nanos = parse_go_duration(&text.decoded())
                    .map_err(|error| invalid(format!("register {name:?}: expires_in: {error}")))?;
                Some(Duration::from_nanos(u64::try_from(nanos).unwrap_or(0)))
            }
            Some(other) => {
                return Err(invalid(format!(
                    "register {name:?}: expires_in is {}, not a string",
                    other.kind()
                )))
            }
        };
        out.push(RegisterValue {
            revision: revision(entry.get("revision"), "revision")?,
            created: revision(entry.get("created"), "created")?,
            metadata: metadata(entry.get("metadata")),
            expires_in,
            value,
            name,
        });
    }
    Ok(out)
}

/// Parses a `GET /provider` body into change requests, sorted by name.
pub(crate) fn parse_requests(body: &[u8]) -> Result<Vec<ChangeRequest>, ClientError> {
    let tree = parse(body)?;
    let members = registers(&tree)?;
    let mut out = Vec::with_capacity(members.len());
    for (key, entry) in members {
        let name: Arc<str> = Arc::from(key.decoded().as_ref());
        let value = entry
            .get("value")
            .map(Node::to_json)
            .ok_or_else(|| invalid(format!("change request {name:?} has no value")))?;
        // `GET /provider?detail=true` from a server with `--auth`: who asked.
        let text = |field: &str| match entry.get(field) {
            Some(Node::String(text)) => Some(text.decoded().into_owned()),
            _ => None,
        };
        let origin = text("requester").map(|requester| {
            crate::store::Origin::new(&requester, &text("request_id").unwrap_or_default(), None)
        });
        out.push(ChangeRequest {
            name,
            value,
            origin,
        });
    }
    Ok(out)
}

/// The string field `key` of a top-level object (`/version`'s `"version"`).
pub(crate) fn string_field(body: &[u8], key: &str) -> Result<String, ClientError> {
    match parse(body)?.get(key) {
        Some(Node::String(text)) => Ok(text.decoded().into_owned()),
        _ => Err(invalid(format!("the body has no string {key:?}"))),
    }
}

/// The message of an error body `{"error":"…"}`; for a body that is not that shape, its text
/// cut short (a proxy's HTML error page still says something).
pub(crate) fn error_message(body: &[u8]) -> Option<String> {
    /// Characters of a non-JSON error body worth quoting.
    const SNIPPET_CHARS: usize = 200;
    if let Ok(tree) = parse_tree(body) {
        if let Some(Node::String(message)) = tree.get("error") {
            return Some(message.decoded().into_owned());
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    (!text.is_empty()).then(|| text.chars().take(SNIPPET_CHARS).collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn json(text: &str) -> Json {
        Json::parse(text.as_bytes()).unwrap()
    }

    #[test]
    fn set_body_escapes_names_and_formats_ttl() {
        let writes = [
            RegisterWrite::new("a\"b", json("12345678901234567890.0"))
                .metadata(json(r#"{"unit":"C"}"#))
                .ttl(Duration::from_millis(1500)),
            RegisterWrite::new("n", Json::null()),
        ];
        assert_eq!(
            set_body(&writes),
            r#"{"registers":{"a\"b":{"value":12345678901234567890.0,"metadata":{"unit":"C"},"ttl":"1.5s"},"n":{"value":null}}}"#
        );
    }

    #[test]
    fn registers_keep_exact_numbers_and_detail() {
        let body =
            br#"{"registers":{"b":{"value":1.0},"a":{"value":{"y":2,"x":10000000000000000000001},
            "metadata":{},"revision":7,"created":3,"expires_in":"1.5s"}}}"#;
        let registers = parse_registers(body).unwrap();
        assert_eq!(registers.len(), 2);
        assert_eq!(&*registers[0].name, "a");
        assert_eq!(
            registers[0].value.as_str(),
            r#"{"x":10000000000000000000001,"y":2}"#
        );
        assert_eq!(registers[0].metadata, None);
        assert_eq!(registers[0].revision, Some(7));
        assert_eq!(registers[0].created, Some(3));
        assert_eq!(registers[0].expires_in, Some(Duration::from_millis(1500)));
        assert_eq!(registers[1].value.as_str(), "1.0");
        assert_eq!(registers[1].revision, None);
    }

    #[test]
    fn malformed_bodies_are_invalid_responses() {
        for body in [
            &b"not json"[..],
            br#"{"nope":{}}"#,
            br#"{"registers":[]}"#,
            br#"{"registers":{"a":{}}}"#,
            br#"{"registers":{"a":{"value":1,"revision":-1}}}"#,
        ] {
            let error = parse_registers(body).unwrap_err();
            assert!(error.is_invalid_response(), "{error}");
        }
        assert!(parse_registers(br#"{"registers":null}"#)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn error_messages_come_from_the_body() {
        assert_eq!(
            error_message(br#"{"error":"invalid wait parameter: \"5x\""}"#).as_deref(),
            Some(r#"invalid wait parameter: "5x""#)
        );
        assert_eq!(
            error_message(b"  Bad Gateway\n").as_deref(),
            Some("Bad Gateway")
        );
        assert_eq!(error_message(b""), None);
    }
}
