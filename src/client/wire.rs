//! The wire-level client: one typed call per endpoint of the REST API.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderValue, ACCEPT, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::client::body;
use crate::client::error::ClientError;
use crate::client::sse::WatchStream;
use crate::client::url::{BaseUrl, Query};
use crate::duration::format_go_duration;
use crate::json::Json;
use crate::store::{ChangeRequest, Revision, Selector};
use crate::sync::Arc;

/// Time limit of a call that is not a long poll: 30 s.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Time limit for making a TCP connection: 10 s.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A long poll may take its `wait` plus this long: the server answers when `wait` runs out, so
/// 10 s covers a slow network and a busy server.
const POLL_GRACE: Duration = Duration::from_secs(10);
/// The server clamps `wait` to 10 minutes (REST spec, "Limits"); the client's time limit uses
/// the same bound.
const MAX_WAIT: Duration = Duration::from_secs(600);
/// Idle pooled connections are closed after 90 s (hyper-util's usual default).
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Largest response body read: 256 MiB. Reading every register of a large registry is big,
/// but an endless body is a broken server.
const MAX_RESPONSE_BYTES: usize = 256 << 20;

/// The header that carries the revision a `GET /consumer` answer is consistent with (Part B).
const INDEX_HEADER: &str = "x-reg-index";

type HttpClient = hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>>;

/// A register write for `PUT /provider`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RegisterWrite {
    /// The register.
    pub name: Arc<str>,
    /// Its value (`null` allowed).
    pub value: Json,
    /// Its metadata: an object; `None` for none.
    pub metadata: Option<Json>,
    /// Its TTL; `None` for the server's default (10 s).
    pub ttl: Option<Duration>,
}

impl RegisterWrite {
    /// A write of `value` with no metadata and the default TTL.
    pub fn new(name: &str, value: Json) -> Self {
        Self {
            name: Arc::from(name),
            value,
            metadata: None,
            ttl: None,
        }
    }

    /// Sets the metadata (an object).
    pub fn metadata(mut self, metadata: Json) -> Self {
        self.metadata = Some(metadata);
        self
    }

    /// Sets the TTL.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }
}

/// What to read with `GET /consumer`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadQuery {
    /// Sorted names; empty for every register.
    names: Vec<Arc<str>>,
    wait: Option<Duration>,
    index: Option<Revision>,
    detail: bool,
}

impl ReadQuery {
    /// Every register.
    pub fn all() -> Self {
        Self::default()
    }

    /// These registers. No names at all means every register, as in the REST API.
    pub fn names<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self::from_selector(&Selector::names(names))
    }

    pub(crate) fn from_selector(selector: &Selector) -> Self {
        Self {
            names: match selector {
                Selector::All => Vec::new(),
                Selector::Names(names) => names.to_vec(),
            },
            ..Self::default()
        }
    }

    /// Long-poll: answer when a selected register changes, or after `wait`.
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = Some(wait);
        self
    }

    /// With [`wait`](Self::wait): answer at once if a selected register changed after this
    /// revision (Part B; an older server ignores it).
    pub fn index(mut self, index: Revision) -> Self {
        self.index = Some(index);
        self
    }

    /// Ask for each register's revision, creation revision and remaining TTL (Part B).
    pub fn detail(mut self, detail: bool) -> Self {
        self.detail = detail;
        self
    }

    fn query(&self) -> Query {
        let mut query = Query::default();
        query.push_names(&self.names);
        if let Some(wait) = self.wait {
            query.push("wait", &format_go_duration(wait));
        }
        if let Some(index) = self.index {
            query.push("index", &index.to_string());
        }
        if self.detail {
            query.push("detail", "true");
        }
        query
    }
}

/// One register as read from the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RegisterValue {
    /// The register's name.
    pub name: Arc<str>,
    /// Its value, with numbers exactly as stored.
    pub value: Json,
    /// Its metadata (none when empty).
    pub metadata: Option<Json>,
    /// Its last change (with `detail`, Part B; always for an in-process registry).
    pub revision: Option<Revision>,
    /// The revision it was created at (with `detail`).
    pub created: Option<Revision>,
    /// Its remaining TTL (with `detail`).
    pub expires_in: Option<Duration>,
}

/// The answer of `GET /consumer`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReadResponse {
    /// The revision the answer is consistent with (`X-Reg-Index`): pass it back as
    /// [`ReadQuery::index`] to miss no change. `None` from a server without Part B.
    pub index: Option<Revision>,
    /// The registers that exist, sorted by name.
    pub registers: Vec<RegisterValue>,
}

/// The answer of `GET /healthz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Health {
    /// 200: serving.
    Serving,
    /// 503: shutting down.
    ShuttingDown,
}

/// Configures a [`WireClient`].
#[derive(Debug, Clone)]
pub struct WireClientBuilder {
    url: String,
    timeout: Duration,
    connect_timeout: Duration,
}

impl WireClientBuilder {
    /// Time limit of calls that are not long polls (default 30 s). A long poll gets its `wait`
    /// plus 10 s.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Time limit for making a connection (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Checks the URL and builds the client. No connection is made until the first call.
    ///
    /// # Errors
    ///
    /// [`ClientError::InvalidUrl`] unless the URL is `http://host[:port][/prefix]`.
    pub fn build(self) -> Result<WireClient, ClientError> {
        let base = BaseUrl::parse(&self.url)?;
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(self.connect_timeout));
        connector.set_nodelay(true);
        let http = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build(connector);
        Ok(WireClient {
            inner: Arc::new(WireInner {
                base,
                http,
                timeout: self.timeout,
            }),
        })
    }
}

/// A client for reg's REST API: one typed call per endpoint, over pooled HTTP/1.1
/// connections (hyper-util's client). Cheap to clone; clones share the pool.
///
/// ```no_run
/// # async fn example() -> Result<(), reg::client::ClientError> {
/// use reg::client::{ReadQuery, RegisterWrite, WireClient};
/// use reg::Json;
/// use std::time::Duration;
///
/// let wire = WireClient::new("http://localhost:8080")?;
/// wire.set(&[RegisterWrite::new("door", Json::from("open")).ttl(Duration::from_secs(5))])
///     .await?;
/// let read = wire.read(&ReadQuery::names(["door"]).detail(true)).await?;
/// assert_eq!(read.registers[0].value.as_str(), r#""open""#);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct WireClient {
    inner: Arc<WireInner>,
}

struct WireInner {
    base: BaseUrl,
    http: HttpClient,
    timeout: Duration,
}

impl fmt::Debug for WireClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WireClient")
            .field("url", &self.inner.base.display())
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

impl WireClient {
    /// A client for the registry at `url` (`http://host[:port][/prefix]`) with the default
    /// time limits. No connection is made until the first call.
    ///
    /// # Errors
    ///
    /// [`ClientError::InvalidUrl`] for any other URL, with the reason.
    pub fn new(url: &str) -> Result<Self, ClientError> {
        Self::builder(url).build()
    }

    /// A builder, to change the time limits.
    pub fn builder(url: &str) -> WireClientBuilder {
        WireClientBuilder {
            url: url.to_owned(),
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }

    /// The registry's URL.
    pub fn url(&self) -> String {
        self.inner.base.display()
    }

    /// `PUT /provider`: creates, changes or refreshes registers, all or none.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: once the request is sent, the server may apply it even if the future
    /// is dropped.
    pub async fn set(&self, writes: &[RegisterWrite]) -> Result<(), ClientError> {
        let body = body::set_body(writes);
        let response = self
            .exchange(
                Method::PUT,
                "/provider",
                &Query::default(),
                Some(body),
                None,
            )
            .await?;
        expect_success(&response)
    }

    /// `GET /consumer`: reads registers, optionally long-polling.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a read changes nothing.
    pub async fn read(&self, query: &ReadQuery) -> Result<ReadResponse, ClientError> {
        let response = self
            .exchange(Method::GET, "/consumer", &query.query(), None, query.wait)
            .await?;
        expect_success(&response)?;
        let index = match response.headers().get(INDEX_HEADER) {
            None => None,
            Some(value) => Some(
                value
                    .to_str()
                    .ok()
                    .and_then(|v| v.trim().parse().ok())
                    .ok_or_else(|| {
                        ClientError::InvalidResponse(format!(
                            "X-Reg-Index {value:?} is not an unsigned integer"
                        ))
                    })?,
            ),
        };
        Ok(ReadResponse {
            index,
            registers: body::parse_registers(response.body())?,
        })
    }

    /// `PUT /consumer`: sends change requests (latest wins per name), all or none.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: once sent, the requests may be stored even if the future is dropped.
    pub async fn request<S: AsRef<str> + Sync>(
        &self,
        requests: &[(S, Json)],
    ) -> Result<(), ClientError> {
        let body = body::request_body(requests);
        let response = self
            .exchange(
                Method::PUT,
                "/consumer",
                &Query::default(),
                Some(body),
                None,
            )
            .await?;
        expect_success(&response)
    }

    /// `GET /provider`: takes the pending change requests for `names` (every pending request
    /// with no names), long-polling for `wait` if none is pending.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe while waiting: the server takes nothing for a poll whose client went away.
    /// Requests the server already sent when the future is dropped are lost.
    pub async fn take_requests<S: AsRef<str> + Sync>(
        &self,
        names: &[S],
        wait: Option<Duration>,
    ) -> Result<Vec<ChangeRequest>, ClientError> {
        let mut query = Query::default();
        query.push_names(names);
        if let Some(wait) = wait {
            query.push("wait", &format_go_duration(wait));
        }
        let response = self
            .exchange(Method::GET, "/provider", &query, None, wait)
            .await?;
        expect_success(&response)?;
        body::parse_requests(response.body())
    }

    /// `DELETE /provider` (Part B): removes registers at once. A server without Part B
    /// answers 405 ([`ClientError::is_unsupported`]).
    ///
    /// # Errors
    ///
    /// [`ClientError::InvalidArgument`] for no names (the server would answer 400).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: once sent, the removal may happen even if the future is dropped.
    pub async fn remove<S: AsRef<str> + Sync>(&self, names: &[S]) -> Result<(), ClientError> {
        if names.is_empty() {
            return Err(ClientError::InvalidArgument(
                "remove needs at least one name".to_owned(),
            ));
        }
        let mut query = Query::default();
        query.push_names(names);
        let response = self
            .exchange(Method::DELETE, "/provider", &query, None, None)
            .await?;
        expect_success(&response)
    }

    /// `GET /v1/watch` (Part B): a stream of every change to `names` (every register with no
    /// names). With `index`, the stream first replays what changed after that revision.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: nothing is consumed until the stream is returned.
    pub async fn watch<S: AsRef<str> + Sync>(
        &self,
        names: &[S],
        index: Option<Revision>,
    ) -> Result<WatchStream, ClientError> {
        let mut query = Query::default();
        query.push_names(names);
        if let Some(index) = index {
            query.push("index", &index.to_string());
        }
        let mut request = self.build_request(Method::GET, "/v1/watch", &query, None)?;
        request
            .headers_mut()
            .insert(ACCEPT, HeaderValue::from_static("text/event-stream"));
        let timeout = self.inner.timeout;
        let response = tokio::time::timeout(timeout, self.inner.http.request(request))
            .await
            .map_err(|_| ClientError::Timeout(timeout))?
            .map_err(|error| self.send_error(error))?;
        if response.status() != StatusCode::OK {
            let (parts, incoming) = response.into_parts();
            let body = tokio::time::timeout(timeout, collect(incoming))
                .await
                .map_err(|_| ClientError::Timeout(timeout))??;
            return Err(status_error(parts.status, &body));
        }
        Ok(WatchStream::new(response.into_body()))
    }

    /// `GET /healthz` (Part B).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: changes nothing.
    pub async fn health(&self) -> Result<Health, ClientError> {
        let response = self
            .exchange(Method::GET, "/healthz", &Query::default(), None, None)
            .await?;
        match response.status() {
            StatusCode::OK => Ok(Health::Serving),
            StatusCode::SERVICE_UNAVAILABLE => Ok(Health::ShuttingDown),
            status => Err(status_error(status, response.body())),
        }
    }

    /// `GET /version` (Part B): the server's version.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: changes nothing.
    pub async fn version(&self) -> Result<String, ClientError> {
        let response = self
            .exchange(Method::GET, "/version", &Query::default(), None, None)
            .await?;
        expect_success(&response)?;
        body::string_field(response.body(), "version")
    }

    /// `GET /metrics` (Part B): the Prometheus text exposition.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: changes nothing.
    pub async fn metrics(&self) -> Result<String, ClientError> {
        let response = self
            .exchange(Method::GET, "/metrics", &Query::default(), None, None)
            .await?;
        expect_success(&response)?;
        String::from_utf8(response.into_body().to_vec())
            .map_err(|_| ClientError::InvalidResponse("metrics are not utf-8".to_owned()))
    }

    fn build_request(
        &self,
        method: Method,
        path: &str,
        query: &Query,
        body: Option<String>,
    ) -> Result<Request<Full<Bytes>>, ClientError> {
        let url = self.inner.base.endpoint(path, query);
        let mut builder = Request::builder().method(method).uri(&url);
        if body.is_some() {
            builder = builder.header(CONTENT_TYPE, "application/json");
        }
        builder
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|error| ClientError::InvalidUrl {
                url,
                reason: error.to_string(),
            })
    }

    /// Sends a request and reads the whole answer, within the call's time limit (a long poll's
    /// `wait` plus a grace period).
    pub(crate) async fn exchange(
        &self,
        method: Method,
        path: &str,
        query: &Query,
        body: Option<String>,
        wait: Option<Duration>,
    ) -> Result<Response<Bytes>, ClientError> {
        let request = self.build_request(method, path, query, body)?;
        let timeout = match wait {
            Some(wait) => wait.min(MAX_WAIT) + POLL_GRACE,
            None => self.inner.timeout,
        };
        let exchange = async {
            let response = self
                .inner
                .http
                .request(request)
                .await
                .map_err(|error| self.send_error(error))?;
            let (parts, incoming) = response.into_parts();
            let body = collect(incoming).await?;
            Ok(Response::from_parts(parts, body))
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| ClientError::Timeout(timeout))?
    }

    fn send_error(&self, error: hyper_util::client::legacy::Error) -> ClientError {
        let url = self.inner.base.display();
        if error.is_connect() {
            ClientError::Connect {
                url,
                source: Box::new(error),
            }
        } else {
            ClientError::Transport {
                url,
                source: Box::new(error),
            }
        }
    }
}

/// Reads a whole body, up to [`MAX_RESPONSE_BYTES`].
async fn collect(incoming: hyper::body::Incoming) -> Result<Bytes, ClientError> {
    Limited::new(incoming, MAX_RESPONSE_BYTES)
        .collect()
        .await
        .map(|collected| collected.to_bytes())
        .map_err(|error| {
            ClientError::InvalidResponse(format!("reading the response body failed: {error}"))
        })
}

/// `Ok` for a 2xx answer; otherwise the error answer. Each endpoint has its own success
/// status (200, 202, 204), but any 2xx (a proxy answering 200 for 204) still means it worked.
pub(crate) fn expect_success(response: &Response<Bytes>) -> Result<(), ClientError> {
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(status_error(status, response.body()))
    }
}

fn status_error(status: StatusCode, body: &[u8]) -> ClientError {
    ClientError::Status {
        status,
        message: body::error_message(body),
    }
}
