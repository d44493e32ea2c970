//! Request bodies → validated entries, all or nothing.
//!
//! A body is parsed once into a borrowed tree ([`parse_tree`]); each value and metadata
//! subtree is then written in canonical form ([`Node::to_json`]) without parsing again. Every
//! entry is checked before any is returned, so a handler applies all of them or none.
//!
//! Shape: `{"registers":{"<name>":{"value":<json>,"metadata":{…}|null,"ttl":"<duration>"}}}`.
//! Unknown keys are ignored (Go's decoder ignores them). A `null` `ttl` is the same as none,
//! as Go decodes `null` into a string field as "unset".

use std::time::Duration;

use crate::duration::parse_go_duration;
use crate::json::{parse_tree, Json, Node};
use crate::server::config::ServerConfig;
use crate::server::error::{Quoted, ServerError};
use crate::server::query::check_name;

/// One validated register write (`PUT /provider`) or change request (`PUT /consumer`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) name: String,
    pub(crate) value: Json,
    /// `None` when absent or `null`; `{}` is left for the registry to normalize.
    pub(crate) metadata: Option<Json>,
    /// `None` for the default TTL: absent, `null`, `"0"`, zero or negative.
    pub(crate) ttl: Option<Duration>,
}

/// Parses and validates a `{"registers":{…}}` body. The entries come sorted by name.
pub(crate) fn parse_entries(body: &[u8], config: &ServerConfig) -> Result<Vec<Entry>, ServerError> {
    let root = parse_tree(body).map_err(ServerError::InvalidJson)?;
    let Node::Object(_) = root else {
        return Err(ServerError::InvalidBody(format!(
            "request body must be a json object, not {}",
            root.kind()
        )));
    };
    let members = match root.get("registers") {
        Some(Node::Object(members)) => members,
        None => return Err(ServerError::InvalidBody("registers is required".to_owned())),
        Some(other) => {
            return Err(ServerError::InvalidBody(format!(
                "registers must be an object, not {}",
                other.kind()
            )))
        }
    };
    if members.len() > config.max_names {
        return Err(ServerError::TooManyNames {
            limit: config.max_names,
        });
    }
    let mut entries = Vec::with_capacity(members.len());
    for (key, entry) in members {
        let name = key.decoded();
        check_name(&name, config)?;
        entries.push(parse_entry(&name, entry)?);
    }
    Ok(entries)
}

fn parse_entry(name: &str, entry: &Node<'_>) -> Result<Entry, ServerError> {
    if !matches!(entry, Node::Object(_)) {
        return Err(ServerError::entry(
            name,
            format!("entry must be an object, not {}", entry.kind()),
        ));
    }
    let value = entry
        .get("value")
        .ok_or_else(|| ServerError::entry(name, "value is required"))?
        .to_json();
    let metadata = match entry.get("metadata") {
        None | Some(Node::Null) => None,
        Some(metadata @ Node::Object(_)) => Some(metadata.to_json()),
        Some(other) => {
            return Err(ServerError::entry(
                name,
                format!("metadata must be an object, not {}", other.kind()),
            ))
        }
    };
    let ttl = match entry.get("ttl") {
        None | Some(Node::Null) => None,
        Some(Node::String(text)) => {
            let text = text.decoded();
            let nanos = parse_go_duration(&text)
                .map_err(|_| ServerError::entry(name, format!("invalid ttl: {}", Quoted(&text))))?;
            u64::try_from(nanos)
                .ok()
                .filter(|&n| n > 0)
                .map(Duration::from_nanos)
        }
        Some(other) => {
            return Err(ServerError::entry(
                name,
                format!("ttl must be a duration string, not {}", other.kind()),
            ))
        }
    };
    Ok(Entry {
        name: name.to_owned(),
        value,
        metadata,
        ttl,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<Vec<Entry>, String> {
        parse_entries(body.as_bytes(), &ServerConfig::default()).map_err(|e| e.to_string())
    }

    #[test]
    fn valid_body() {
        let entries = parse(
            r#"{"registers":{"b":{"value":{"y":2,"x":1},"metadata":{"unit":"C"},"ttl":"1.5s"},
                "a":{"value":null,"metadata":null,"ttl":"0"},"c":{"value":1.0,"ttl":"-1s","x":1}}}"#,
        )
        .unwrap_or_default();
        assert_eq!(entries.len(), 3);
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(entries[0].value.as_str(), "null");
        assert_eq!(entries[0].ttl, None);
        assert_eq!(entries[1].value.as_str(), r#"{"x":1,"y":2}"#);
        assert_eq!(
            entries[1].metadata.as_ref().map(Json::as_str),
            Some(r#"{"unit":"C"}"#)
        );
        assert_eq!(entries[1].ttl, Some(Duration::from_millis(1500)));
        assert_eq!(entries[2].value.as_str(), "1.0");
        assert_eq!(entries[2].ttl, None);
    }

    #[test]
    fn invalid_bodies_are_named() {
        let cases = [
            ("", "invalid json at byte 0"),
            ("[1]", "request body must be a json object, not array"),
            ("{}", "registers is required"),
            (
                r#"{"registers":null}"#,
                "registers must be an object, not null",
            ),
            (
                r#"{"registers":{"t":1}}"#,
                r#"register "t": entry must be an object, not number"#,
            ),
            (
                r#"{"registers":{"t":{}}}"#,
                r#"register "t": value is required"#,
            ),
            (
                r#"{"registers":{"t":{"value":1,"ttl":"abc"}}}"#,
                r#"register "t": invalid ttl: "abc""#,
            ),
            (
                r#"{"registers":{"t":{"value":1,"ttl":5}}}"#,
                r#"register "t": ttl must be a duration string, not number"#,
            ),
            (
                r#"{"registers":{"t":{"value":1,"metadata":[1]}}}"#,
                r#"register "t": metadata must be an object, not array"#,
            ),
        ];
        for (body, want) in cases {
            let got = parse(body).err().unwrap_or_default();
            assert!(got.starts_with(want), "{body}: got {got:?}, want {want:?}");
        }
    }
}
