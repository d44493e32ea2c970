//! Query strings: register names (`name` repeated, `names` comma-separated, merged), `wait`,
//! `index` and `detail`, percent-decoded as Go's `url.ParseQuery` does (`+` is a space).
//!
//! Unknown parameters are ignored, as reg's Go server ignores them. When a parameter other
//! than a name repeats, the first value counts (Go's `Query().Get`).
//!
//! An empty name is a name, as in reg's Go server: `name=` asks for the register `""`, and
//! `names=a,,b` for `a`, `""` and `b` (Go splits on commas and keeps the empty pieces). "No
//! names" — every register, or every pending request — means no `name` or `names` parameter
//! at all, so `GET /provider?name=` can never take every pending request.

use std::borrow::Cow;
use std::time::Duration;

use crate::duration::parse_go_duration;
use crate::server::config::ServerConfig;
use crate::server::error::ServerError;
use crate::store::{Revision, Selector};

/// A parsed query.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Query {
    /// The names asked for, in the order given (duplicates kept; [`Selector::names`] sorts
    /// and dedups).
    pub(crate) names: Vec<String>,
    /// How long to long-poll, clamped to the configured maximum; `None` for no wait (absent,
    /// empty, zero or negative).
    pub(crate) wait: Option<Duration>,
    /// The revision the client has seen (`index`).
    pub(crate) index: Option<Revision>,
    /// Whether `detail=true` was asked for.
    pub(crate) detail: bool,
}

impl Query {
    /// Parses the query part of a URI (without the `?`).
    pub(crate) fn parse(raw: Option<&str>, config: &ServerConfig) -> Result<Query, ServerError> {
        let mut query = Query::default();
        let (mut wait, mut index, mut detail) = (None, None, None);
        for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let key = decode(key)?;
            match &*key {
                "name" => query.push_name(decode(value)?, config)?,
                "names" => {
                    for name in decode(value)?.split(',') {
                        query.push_name(Cow::Borrowed(name), config)?;
                    }
                }
                "wait" if wait.is_none() => wait = Some(decode(value)?),
                "index" if index.is_none() => index = Some(decode(value)?),
                "detail" if detail.is_none() => detail = Some(decode(value)?),
                _ => {}
            }
        }
        if let Some(wait) = wait {
            query.wait = parse_wait(&wait, config)?;
        }
        if let Some(index) = index {
            query.index = Some(parse_index(&index, "index parameter")?);
        }
        if let Some(detail) = detail {
            query.detail = parse_bool(&detail)
                .ok_or_else(|| ServerError::parameter("detail parameter", &detail))?;
        }
        Ok(query)
    }

    /// The names as a selector: no names means every register (or request).
    pub(crate) fn selector(&self) -> Selector {
        Selector::names(&self.names)
    }

    fn push_name(&mut self, name: Cow<'_, str>, config: &ServerConfig) -> Result<(), ServerError> {
        if self.names.len() >= config.max_names {
            return Err(ServerError::TooManyNames {
                limit: config.max_names,
            });
        }
        check_name(&name, config)?;
        self.names.push(name.into_owned());
        Ok(())
    }
}

/// A `wait` parameter: a Go duration, clamped to the configured maximum; `None` for no wait
/// (empty, zero or negative).
pub(crate) fn parse_wait(
    wait: &str,
    config: &ServerConfig,
) -> Result<Option<Duration>, ServerError> {
    if wait.is_empty() {
        return Ok(None);
    }
    let nanos =
        parse_go_duration(wait).map_err(|_| ServerError::parameter("wait parameter", wait))?;
    Ok(u64::try_from(nanos)
        .ok()
        .filter(|&n| n > 0)
        .map(|n| Duration::from_nanos(n).min(config.max_wait)))
}

/// A query's pairs, percent-decoded, in order (a key without `=` has the value `""`).
pub(crate) fn pairs(raw: Option<&str>) -> Result<Vec<(String, String)>, ServerError> {
    raw.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((decode(key)?.into_owned(), decode(value)?.into_owned()))
        })
        .collect()
}

/// A boolean query flag as Consul reads one: present without a value, or Go's `ParseBool`.
pub(crate) fn flag(value: &str) -> Option<bool> {
    if value.is_empty() {
        Some(true)
    } else {
        parse_bool(value)
    }
}

/// Percent-decodes one path segment (no `+` rule: that is the query's).
pub(crate) fn decode_segment(raw: &str) -> Result<String, ServerError> {
    if !raw.contains('%') {
        return Ok(raw.to_owned());
    }
    decode(&raw.replace('+', "%2B")).map(Cow::into_owned)
}

/// Checks a register name against the length limit.
pub(crate) fn check_name(name: &str, config: &ServerConfig) -> Result<(), ServerError> {
    if name.len() > config.max_name_len {
        return Err(ServerError::NameTooLong {
            name: name.chars().take(65).collect(),
            len: name.len(),
            limit: config.max_name_len,
        });
    }
    Ok(())
}

/// An unsigned decimal revision: digits only (no sign, no spaces), within `u64`.
pub(crate) fn parse_index(value: &str, what: &'static str) -> Result<Revision, ServerError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ServerError::parameter(what, value));
    }
    value
        .parse()
        .map_err(|_| ServerError::parameter(what, value))
}

/// Go's `strconv.ParseBool`, plus the empty string as false.
fn parse_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "" | "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// Percent-decodes one query component (`+` is a space). Borrowed when nothing is encoded.
fn decode(raw: &str) -> Result<Cow<'_, str>, ServerError> {
    if !raw.bytes().any(|b| b == b'%' || b == b'+') {
        return Ok(Cow::Borrowed(raw));
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let hex = |at: usize| bytes.get(at).and_then(|&h| (h as char).to_digit(16));
                match (hex(i + 1), hex(i + 2)) {
                    // Two hex digits make one byte: the narrowing cannot lose anything.
                    (Some(hi), Some(lo)) => out.push((hi * 16 + lo) as u8),
                    _ => {
                        let bad: String = raw.chars().skip(i).take(3).collect();
                        return Err(ServerError::InvalidQuery(format!(
                            "invalid percent-encoding {}",
                            crate::server::error::Quoted(&bad)
                        )));
                    }
                }
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out)
        .map(Cow::Owned)
        .map_err(|_| ServerError::InvalidQuery("percent-decoded text is not utf-8".to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> Result<Query, ServerError> {
        Query::parse(Some(raw), &ServerConfig::default())
    }

    #[test]
    fn names_merge_and_decode() {
        let q = parse("name=a&names=b,c&name=d%2Ce&name=f+g&names=&name=").unwrap_or_default();
        assert_eq!(q.names, ["a", "b", "c", "d,e", "f g", "", ""]);
        assert_eq!(
            q.selector(),
            Selector::names(["a", "b", "c", "d,e", "f g", ""])
        );
        assert_eq!(parse("").unwrap_or_default().selector(), Selector::All);
        assert_eq!(
            parse("wait=1s").unwrap_or_default().selector(),
            Selector::All
        );
    }

    #[test]
    fn an_empty_name_is_a_name_not_every_register() {
        for raw in ["name=", "names=", "names=,,,", "name=&names=,"] {
            let q = parse(raw).unwrap_or_default();
            assert_eq!(q.selector(), Selector::names([""]), "{raw}");
        }
    }

    #[test]
    fn wait_index_detail() {
        let q = parse("wait=1.5s&index=42&detail=true").unwrap_or_default();
        assert_eq!(q.wait, Some(Duration::from_millis(1500)));
        assert_eq!(q.index, Some(42));
        assert!(q.detail);
        assert_eq!(parse("wait=0").unwrap_or_default().wait, None);
        assert_eq!(parse("wait=-5s").unwrap_or_default().wait, None);
        assert_eq!(parse("wait=").unwrap_or_default().wait, None);
        assert_eq!(
            parse("wait=100h").unwrap_or_default().wait,
            Some(Duration::from_secs(600))
        );
    }

    #[test]
    fn invalid_values_are_named() {
        let message = |raw: &str| parse(raw).err().map(|e| e.to_string()).unwrap_or_default();
        assert_eq!(message("wait=5x"), r#"invalid wait parameter: "5x""#);
        assert_eq!(message("index=-1"), r#"invalid index parameter: "-1""#);
        assert_eq!(message("index=%2B1"), r#"invalid index parameter: "+1""#);
        assert_eq!(message("index="), r#"invalid index parameter: """#);
        assert_eq!(
            message("index=99999999999999999999"),
            r#"invalid index parameter: "99999999999999999999""#
        );
        assert_eq!(
            message("detail=maybe"),
            r#"invalid detail parameter: "maybe""#
        );
        assert!(message("name=%zz").starts_with("invalid query string"));
        assert!(message("name=%ff").starts_with("invalid query string"));
        assert!(message("name=%f").starts_with("invalid query string"));
    }

    #[test]
    fn limits() {
        let config = ServerConfig {
            max_names: 2,
            max_name_len: 3,
            ..ServerConfig::default()
        };
        assert!(matches!(
            Query::parse(Some("names=a,b,c"), &config),
            Err(ServerError::TooManyNames { .. })
        ));
        assert!(matches!(
            Query::parse(Some("name=abcd"), &config),
            Err(ServerError::NameTooLong { .. })
        ));
        assert!(Query::parse(Some("names=a,b&name=abc"), &config).is_err());
        assert!(Query::parse(Some("names=a,abc"), &config).is_ok());
    }
}
