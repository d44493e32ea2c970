//! The client's one error type.

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use hyper::StatusCode;

use crate::store::StoreError;

/// A boxed error from the transport layer (hyper, hyper-util, I/O).
pub(crate) type BoxError = Box<dyn StdError + Send + Sync>;

/// Everything a client call can fail with, remote or embedded.
///
/// Check what happened with the `is_*` methods rather than by matching: the enum is
/// `#[non_exhaustive]` and its variants may grow fields.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The registry URL cannot be used (not `http[s]://host[:port][/prefix]`).
    #[error("invalid registry url {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A call's arguments were refused before anything was sent (e.g. removing no names).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The TLS set-up for an `https://` registry cannot be used: a CA, certificate or key
    /// file that cannot be read or holds nothing usable (the message names the file), or no
    /// CA to trust at all.
    #[error("tls: {0}")]
    Tls(String),
    /// No connection to the registry could be made.
    #[error("cannot connect to {url}: {}", Chain(&**source))]
    Connect {
        /// The registry URL.
        url: String,
        /// The underlying error.
        source: BoxError,
    },
    /// The registry did not answer in time.
    #[error("no answer from the registry within {0:?}")]
    Timeout(Duration),
    /// The connection failed after it was made: reset, closed early, or not HTTP/1.1.
    #[error("http error talking to {url}: {}", Chain(&**source))]
    Transport {
        /// The registry URL.
        url: String,
        /// The underlying error.
        source: BoxError,
    },
    /// The registry answered with an error status.
    #[error("registry answered {status}{}", match message { Some(m) => format!(": {m}"), None => String::new() })]
    Status {
        /// The HTTP status.
        status: StatusCode,
        /// The server's `{"error": …}` message, if it sent one.
        message: Option<String>,
    },
    /// The registry answered something that is not the wire contract.
    #[error("invalid response from the registry: {0}")]
    InvalidResponse(String),
    /// The in-process registry refused the operation.
    #[error("the registry refused: {0}")]
    Store(#[from] StoreError),
    /// This client already provides the register.
    #[error("register {0:?} is already provided by this client")]
    AlreadyProvided(String),
    /// The in-process registry was shut down, or the client's background task is gone.
    #[error("the registry is closed")]
    Closed,
}

impl ClientError {
    /// No connection could be made (refused, unreachable, DNS, connect timeout).
    pub fn is_connect(&self) -> bool {
        matches!(self, ClientError::Connect { .. })
    }

    /// The registry did not answer within the call's time limit.
    pub fn is_timeout(&self) -> bool {
        matches!(self, ClientError::Timeout(_))
    }

    /// The registry answered with an error status; see [`status`](Self::status).
    pub fn is_status(&self) -> bool {
        matches!(self, ClientError::Status { .. })
    }

    /// The HTTP status of an error answer.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The server's error message (`{"error": "…"}`), or the store's refusal for an
    /// in-process registry.
    pub fn message(&self) -> Option<String> {
        match self {
            ClientError::Status { message, .. } => message.clone(),
            ClientError::Store(error) => Some(error.to_string()),
            _ => None,
        }
    }

    /// The registry refused the caller: 401 (no token or client certificate, or one it does
    /// not know) or 403 (known, but not allowed this call). The server's reason is in
    /// [`message`](Self::message). Retrying with the same credentials will not help.
    pub fn is_denied(&self) -> bool {
        matches!(
            self.status(),
            Some(StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN)
        )
    }

    /// The TLS set-up cannot be used (a CA, certificate or key file, or no CA to trust).
    /// A server certificate that does not verify is a [connect](Self::is_connect) error.
    pub fn is_tls(&self) -> bool {
        matches!(self, ClientError::Tls(_))
    }

    /// The request was refused as invalid: a 4xx answer, an in-process refusal, or bad
    /// arguments. Retrying it unchanged will not help.
    pub fn is_rejected(&self) -> bool {
        match self {
            ClientError::Status { status, .. } => status.is_client_error(),
            ClientError::Store(_)
            | ClientError::InvalidArgument(_)
            | ClientError::AlreadyProvided(_) => true,
            _ => false,
        }
    }

    /// The server does not have this endpoint or method (404 or 405): an older server
    /// without the REST API's Part B.
    pub fn is_unsupported(&self) -> bool {
        matches!(
            self.status(),
            Some(StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED)
        )
    }

    /// The registry URL is unusable.
    pub fn is_invalid_url(&self) -> bool {
        matches!(self, ClientError::InvalidUrl { .. })
    }

    /// The connection broke after it was made.
    pub fn is_transport(&self) -> bool {
        matches!(self, ClientError::Transport { .. })
    }

    /// The answer did not follow the wire contract.
    pub fn is_invalid_response(&self) -> bool {
        matches!(self, ClientError::InvalidResponse(_))
    }

    /// The in-process registry is shut down (or the client is going away).
    pub fn is_closed(&self) -> bool {
        matches!(self, ClientError::Closed)
    }
}

/// Displays an error and its sources, `outer: inner: root`, so a message names the root cause
/// (hyper's own `Display` says only "client error (Connect)").
struct Chain<'a>(&'a (dyn StdError + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(error) = source {
            write!(f, ": {error}")?;
            source = error.source();
        }
        Ok(())
    }
}
