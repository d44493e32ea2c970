//! The server's one error type and the one function that maps it to an HTTP status.

use std::fmt;
use std::io;
use std::time::Duration;

use hyper::StatusCode;

use crate::json::JsonError;
use crate::store::StoreError;

/// Longest piece of client input an error message quotes, in characters: enough to
/// recognise it, without echoing an attacker-sized string.
const QUOTE_CHARS: usize = 64;

/// Everything the server can refuse or fail at. Request errors become a JSON error body with
/// the status [`ServerError::status`] gives; the others come from starting the server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The request body is not JSON.
    #[error("{0}")]
    InvalidJson(JsonError),
    /// The request body is JSON but not the shape the endpoint takes.
    #[error("{0}")]
    InvalidBody(String),
    /// One register entry of a body is invalid.
    #[error("register {}: {reason}", Quoted(name))]
    InvalidEntry {
        /// The register's name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A query parameter (`wait`, `index`, `detail`, a name) or a header is invalid.
    #[error("invalid {what}: {}", Quoted(value))]
    InvalidParameter {
        /// What it is: `wait parameter`, `index parameter`, `last-event-id header`, …
        what: &'static str,
        /// The value given.
        value: String,
    },
    /// The query string is not valid percent-encoded UTF-8.
    #[error("invalid query string: {0}")]
    InvalidQuery(String),
    /// A register name is over the length limit.
    #[error(
        "register name {} is {len} bytes, over the limit of {limit}",
        Quoted(name)
    )]
    NameTooLong {
        /// The name (quoted cut short in the message).
        name: String,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// Too many names in one request.
    #[error("too many names: more than the limit of {limit}")]
    TooManyNames {
        /// The limit.
        limit: usize,
    },
    /// A request that needs names got none.
    #[error("at least one name is required")]
    NamesRequired,
    /// The request body is larger than the limit.
    #[error("request body is over the limit of {limit} bytes")]
    BodyTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The request body did not arrive within the timeout.
    #[error("request body not received within {}", crate::format_go_duration(*.0))]
    BodyTimeout(Duration),
    /// The request body could not be read.
    #[error("cannot read request body: {0}")]
    BodyRead(String),
    /// The request target (path and query) is over the limit.
    #[error("request target is {len} bytes, over the limit of {limit}")]
    UriTooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The request head (request line and headers) is over the limit.
    #[error("request head is over the limit of {limit} bytes")]
    HeadTooLarge {
        /// The limit.
        limit: usize,
    },
    /// An HTTP/1.1 request without exactly one `Host` header (RFC 9112 §3.2).
    #[error("an http/1.1 request needs exactly one host header, not {0}")]
    BadHost(usize),
    /// Too many watch streams are open.
    #[error("too many watch streams: the limit of {limit} are open")]
    TooManyStreams {
        /// The limit.
        limit: usize,
    },
    /// Too many connections from this client's address.
    #[error("too many connections from this address: the limit is {limit}")]
    TooManyConnections {
        /// The limit.
        limit: usize,
    },
    /// No such endpoint.
    #[error("not found: {0}")]
    NotFound(String),
    /// A Consul endpoint reg does not implement (501).
    #[error("{0}")]
    NotImplemented(String),
    /// A TLS certificate, key or CA file is unusable (starting or reloading).
    #[error("tls: {0}")]
    Tls(String),
    /// No credentials, or unknown ones, where the anonymous caller lacks the right (401).
    #[error("{message}")]
    Unauthorized {
        /// What is missing.
        message: String,
        /// The first register refused, when one was.
        name: Option<String>,
    },
    /// The caller's principal lacks a right (403); nothing of the request was applied.
    #[error(
        "principal {} may not {right}{}",
        Quoted(principal),
        match name { Some(name) => format!(" register {}", Quoted(name)), None => String::new() }
    )]
    Forbidden {
        /// The caller.
        principal: String,
        /// The right it lacks.
        right: crate::server::auth::Right,
        /// The first register it lacks it on (`None`: a right needed on every name).
        name: Option<String>,
    },
    /// The endpoint exists but not with this method.
    #[error("method {method} not allowed on {path}; allowed: {allowed}")]
    MethodNotAllowed {
        /// The method used.
        method: String,
        /// The path.
        path: String,
        /// The methods the path takes, for the `Allow` header.
        allowed: &'static str,
    },
    /// The registry refused the operation (pending-request cap, or a limit the server did
    /// not check first).
    #[error("{0}")]
    Store(#[from] StoreError),
    /// The server is shutting down.
    #[error("server is shutting down")]
    ShuttingDown,
    /// The listen address is invalid or cannot be resolved.
    #[error("invalid listen address {addr:?}: {reason}")]
    InvalidAddress {
        /// The address given.
        addr: String,
        /// Why it is invalid.
        reason: String,
    },
    /// The listen address cannot be bound. (The OS error is part of the message, so it is
    /// not also reported as the error's source.)
    #[error("cannot listen on {addr}: {error}")]
    Bind {
        /// The address.
        addr: String,
        /// The OS error.
        error: io::Error,
    },
    /// Another I/O failure of the listener.
    #[error("listener i/o error: {0}")]
    Io(#[from] io::Error),
    /// The server task failed (panicked or was cancelled).
    #[error("server task failed: {0}")]
    Task(String),
}

impl ServerError {
    /// The HTTP status a request that failed with this error is answered with. The one place
    /// errors meet status codes.
    pub fn status(&self) -> StatusCode {
        match self {
            ServerError::InvalidJson(_)
            | ServerError::InvalidBody(_)
            | ServerError::InvalidEntry { .. }
            | ServerError::InvalidParameter { .. }
            | ServerError::InvalidQuery(_)
            | ServerError::NameTooLong { .. }
            | ServerError::TooManyNames { .. }
            | ServerError::NamesRequired
            | ServerError::BadHost(_)
            | ServerError::BodyRead(_) => StatusCode::BAD_REQUEST,
            ServerError::UriTooLong { .. } => StatusCode::URI_TOO_LONG,
            ServerError::HeadTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ServerError::TooManyStreams { .. } | ServerError::TooManyConnections { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ServerError::NotFound(_) => StatusCode::NOT_FOUND,
            ServerError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            ServerError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ServerError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ServerError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ServerError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ServerError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ServerError::Store(StoreError::TooManyRequests { .. })
            | ServerError::Store(StoreError::Unavailable { .. })
            | ServerError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            ServerError::Store(StoreError::NameTooLong { .. })
            | ServerError::Store(StoreError::MetadataNotObject { .. }) => StatusCode::BAD_REQUEST,
            ServerError::InvalidAddress { .. }
            | ServerError::Bind { .. }
            | ServerError::Io(_)
            | ServerError::Task(_)
            | ServerError::Tls(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Whether the client sent something the server refuses (a 4xx).
    pub fn is_client_error(&self) -> bool {
        self.status().is_client_error()
    }

    /// Whether this is a failure to bind the listen address.
    pub fn is_bind(&self) -> bool {
        matches!(self, ServerError::Bind { .. })
    }

    /// An entry error for register `name`.
    pub(crate) fn entry(name: &str, reason: impl Into<String>) -> Self {
        ServerError::InvalidEntry {
            name: name.to_owned(),
            reason: reason.into(),
        }
    }

    /// A 401 that names no register.
    pub(crate) fn unauthorized(message: impl Into<String>) -> Self {
        ServerError::Unauthorized {
            message: message.into(),
            name: None,
        }
    }

    /// The register a 401 or 403 refused, if it named one.
    pub(crate) fn refused_name(&self) -> Option<&str> {
        match self {
            ServerError::Unauthorized { name, .. } | ServerError::Forbidden { name, .. } => {
                name.as_deref()
            }
            _ => None,
        }
    }

    /// A parameter error; keeps at most a bounded prefix of `value`.
    pub(crate) fn parameter(what: &'static str, value: &str) -> Self {
        ServerError::InvalidParameter {
            what,
            value: value.chars().take(QUOTE_CHARS + 1).collect(),
        }
    }
}

/// Formats client input in double quotes, escaped as Rust's `escape_debug` does (`"`, `\`,
/// control characters) and cut to [`QUOTE_CHARS`] characters with `…` when longer.
pub(crate) struct Quoted<'a>(pub(crate) &'a str);

/// `text` quoted and cut short for a message (see [`Quoted`]).
pub(crate) fn quote(text: &str) -> String {
    Quoted(text).to_string()
}

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        let mut chars = self.0.chars();
        for ch in chars.by_ref().take(QUOTE_CHARS) {
            write!(f, "{}", ch.escape_debug())?;
        }
        if chars.next().is_some() {
            f.write_str("…")?;
        }
        f.write_str("\"")
    }
}

/// Client text made safe for a log line: control characters (newlines that would forge a
/// line, ESC that starts a terminal escape sequence) and the invisible bidirectional and
/// zero-width formatting characters are written escaped (`\n`, `\u{1b}`); the rest as is.
pub(crate) struct LogSafe<'a>(pub(crate) &'a str);

impl fmt::Display for LogSafe<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for ch in self.0.chars() {
            let invisible = matches!(
                ch,
                '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
            );
            if ch.is_control() || invisible {
                write!(f, "{}", ch.escape_default())?;
            } else {
                fmt::Write::write_char(f, ch)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_safe_escapes_what_could_forge_a_line_or_reach_a_terminal() {
        let text = "a\nINFO forged\r\u{1b}[31m\u{202e}ok \"é\"";
        assert_eq!(
            LogSafe(text).to_string(),
            r#"a\nINFO forged\r\u{1b}[31m\u{202e}ok "é""#
        );
    }

    #[test]
    fn messages_name_what_was_wrong() {
        assert_eq!(
            ServerError::parameter("wait parameter", "5x").to_string(),
            r#"invalid wait parameter: "5x""#
        );
        assert_eq!(
            ServerError::entry("t", "value is required").to_string(),
            r#"register "t": value is required"#
        );
        let long = "x".repeat(100);
        let message = ServerError::entry(&long, "value is required").to_string();
        assert!(message.contains('…'), "{message}");
        assert!(message.len() < 100, "{message}");
    }

    #[test]
    fn statuses() {
        assert_eq!(
            ServerError::BodyTooLarge { limit: 1 }.status(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(
            ServerError::Store(StoreError::TooManyRequests { limit: 1 }).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            ServerError::NotFound("/x".into()).status(),
            StatusCode::NOT_FOUND
        );
    }
}
