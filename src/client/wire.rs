//! The wire-level client: one typed call per endpoint of the REST API.

use std::fmt;
#[cfg(feature = "tls")]
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::client::body;
use crate::client::error::ClientError;
use crate::client::sse::WatchStream;
#[cfg(feature = "tls")]
use crate::client::tls::{self, TlsFiles};
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

/// With `tls`, one connector for both schemes: a client only ever talks to its one registry,
/// so a plain-`http` client's TLS half is never used.
#[cfg(feature = "tls")]
type Connector = hyper_rustls::HttpsConnector<HttpConnector>;
#[cfg(not(feature = "tls"))]
type Connector = HttpConnector;

type HttpClient = hyper_util::client::legacy::Client<Connector, Full<Bytes>>;

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

/// What a client presents to a registry beyond its URL: the bearer token, and for `https`
/// which CAs to trust and its own certificate. Shared by [`WireClientBuilder`] and the
/// high-level client's builder.
#[derive(Clone, Default)]
pub(crate) struct Access {
    /// Sent as `Authorization: Bearer <token>` with every request.
    token: Option<String>,
    #[cfg(feature = "tls")]
    tls: TlsFiles,
}

impl fmt::Debug for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("Access");
        // The token is a secret: say whether there is one, never what it is.
        debug.field("token", &self.token.as_ref().map(|_| "<redacted>"));
        #[cfg(feature = "tls")]
        debug.field("tls", &self.tls);
        debug.finish()
    }
}

impl Access {
    pub(crate) fn token(&mut self, token: &str) {
        self.token = Some(token.to_owned());
    }

    #[cfg(feature = "tls")]
    pub(crate) fn ca_file(&mut self, path: PathBuf) {
        self.tls.ca_file = Some(path);
    }

    #[cfg(feature = "tls")]
    pub(crate) fn client_cert(&mut self, cert: PathBuf, key: PathBuf) {
        self.tls.client_cert = Some((cert, key));
    }

    /// The `Authorization` header, checked once here rather than failing every request.
    fn authorization(&self) -> Result<Option<HeaderValue>, ClientError> {
        let Some(token) = &self.token else {
            return Ok(None);
        };
        let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            // Not the token itself in the message: it is a secret.
            ClientError::InvalidArgument(
                "the token must be printable ASCII without line breaks".to_owned(),
            )
        })?;
        // Keeps it out of hyper's debug output and HPACK tables.
        value.set_sensitive(true);
        Ok(Some(value))
    }

    /// The connector for `base`: TLS files are read only for an `https` registry.
    fn connector(&self, base: &BaseUrl, http: HttpConnector) -> Result<Connector, ClientError> {
        #[cfg(feature = "tls")]
        {
            let config = if base.is_https() {
                tls::client_config(&self.tls)?
            } else {
                tls::plain_config()?
            };
            let mut http = http;
            // The HTTPS connector hands `https://` URIs down to the TCP connector.
            http.enforce_http(false);
            Ok(hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(config)
                .https_or_http()
                .enable_http1()
                .wrap_connector(http))
        }
        #[cfg(not(feature = "tls"))]
        {
            let _ = base;
            Ok(http)
        }
    }
}

/// Configures a [`WireClient`].
#[derive(Debug, Clone)]
pub struct WireClientBuilder {
    url: String,
    timeout: Duration,
    connect_timeout: Duration,
    access: Access,
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

    /// Sends `Authorization: Bearer <token>` with every request, for a registry that
    /// authenticates callers by token (`reg token new` makes one). Without TLS the token
    /// crosses the network in the clear: use it with `https://` outside a trusted network.
    pub fn token(mut self, token: &str) -> Self {
        self.access.token(token);
        self
    }

    /// Trusts the CA certificate(s) in this PEM file for an `https://` registry, in place of
    /// the system bundle (`/etc/ssl/certs/ca-certificates.crt`): for a registry whose
    /// certificate comes from a private CA. Ignored for `http://`.
    #[cfg(feature = "tls")]
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.access.ca_file(path.into());
        self
    }

    /// Presents this client certificate (PEM, leaf first, chain after) with its private key
    /// (PEM: PKCS#8, PKCS#1 or SEC1), for a registry that requires mutual TLS and knows
    /// callers by certificate. Ignored for `http://`.
    #[cfg(feature = "tls")]
    pub fn client_cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.access.client_cert(cert.into(), key.into());
        self
    }

    pub(crate) fn access(mut self, access: Access) -> Self {
        self.access = access;
        self
    }

    /// Checks the URL, reads the TLS files (for `https://`) and builds the client. No
    /// connection is made until the first call.
    ///
    /// # Errors
    ///
    /// [`ClientError::InvalidUrl`] unless the URL is `http[s]://host[:port][/prefix]`;
    /// [`ClientError::Tls`] for a CA, certificate or key file that cannot be read or used,
    /// or an `https://` URL with no CA file and no system bundle;
    /// [`ClientError::InvalidArgument`] for a token that cannot be sent in a header.
    pub fn build(self) -> Result<WireClient, ClientError> {
        let bases = self
            .url
            .split(',')
            .map(|url| BaseUrl::parse(url.trim()))
            .collect::<Result<Vec<_>, _>>()?;
        let base = &bases[0];
        if bases.iter().any(|b| b.is_https() != base.is_https()) {
            return Err(ClientError::InvalidUrl {
                url: self.url.clone(),
                reason: "a list of URLs must be all http or all https".into(),
            });
        }
        let authorization = self.access.authorization()?;
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(self.connect_timeout));
        http.set_nodelay(true);
        let connector = self.access.connector(base, http)?;
        let http = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build(connector);
        Ok(WireClient {
            inner: Arc::new(WireInner {
                bases,
                current: std::sync::atomic::AtomicUsize::new(0),
                http,
                timeout: self.timeout,
                authorization,
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
    /// The registry's URLs: one, or a cluster's nodes (`url1,url2,…`), tried in turn.
    bases: Vec<BaseUrl>,
    /// Which of `bases` calls go to now: the next one after a node cannot be reached.
    current: std::sync::atomic::AtomicUsize,
    http: HttpClient,
    timeout: Duration,
    /// `Bearer <token>`, sent with every request; `None` without a token.
    authorization: Option<HeaderValue>,
}

impl fmt::Debug for WireClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WireClient")
            .field("url", &self.url())
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

impl WireClient {
    /// A client for the registry at `url` (`http[s]://host[:port][/prefix]`) with the default
    /// time limits, no token, and for `https` the system's CA bundle. No connection is made
    /// until the first call.
    ///
    /// `url` may list a cluster's nodes, comma-separated (`http://a:8080,http://b:8080`):
    /// calls go to one node, and move on to the next when it cannot be reached (a call that
    /// never reached a node is retried on the next; one that failed on the way is not).
    ///
    /// # Errors
    ///
    /// [`ClientError::InvalidUrl`] for any other URL, with the reason; see
    /// [`WireClientBuilder::build`].
    pub fn new(url: &str) -> Result<Self, ClientError> {
        Self::builder(url).build()
    }

    /// A builder, to change the time limits or set a token, a CA file or a client
    /// certificate.
    pub fn builder(url: &str) -> WireClientBuilder {
        WireClientBuilder {
            url: url.to_owned(),
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            access: Access::default(),
        }
    }

    /// The registry's URL.
    pub fn url(&self) -> String {
        self.inner.base().display()
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
        // The caller's reconnect after a connect error goes to the next node.
        let deadline = Deadline::after(self.inner.timeout);
        let response = deadline.within(self.send(request)).await?;
        if response.status() != StatusCode::OK {
            let (parts, incoming) = response.into_parts();
            let body = deadline.within(collect(incoming)).await?;
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
        let url = self.inner.base().endpoint(path, query);
        let mut builder = Request::builder().method(method).uri(&url);
        if body.is_some() {
            builder = builder.header(CONTENT_TYPE, "application/json");
        }
        if let Some(authorization) = &self.inner.authorization {
            builder = builder.header(AUTHORIZATION, authorization.clone());
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
        // A node that cannot be reached has seen nothing of the request: the next one is
        // tried, and later calls go to it (a cluster's nodes serve the same registry).
        let mut tries = self.inner.bases.len();
        loop {
            let result = self
                .exchange_once(method.clone(), path, query, body.clone(), wait)
                .await;
            match result {
                // `send` moved later calls on to the next URL.
                Err(error) if error.is_connect() && tries > 1 => tries -= 1,
                other => return other,
            }
        }
    }

    async fn exchange_once(
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
        let deadline = Deadline::after(timeout);
        let response = deadline.within(self.send(request)).await?;
        let (parts, incoming) = response.into_parts();
        let body = deadline.within(collect(incoming)).await?;
        Ok(Response::from_parts(parts, body))
    }

    /// Sends a request and waits for the answer's head. A node that cannot be reached has
    /// seen nothing of the request: with more than one URL, later calls go to the next.
    async fn send(
        &self,
        request: Request<Full<Bytes>>,
    ) -> Result<Response<hyper::body::Incoming>, ClientError> {
        self.inner.http.request(request).await.map_err(|error| {
            let error = self.send_error(error);
            if error.is_connect() && self.inner.bases.len() > 1 {
                self.inner.fail_over();
            }
            error
        })
    }

    fn send_error(&self, error: hyper_util::client::legacy::Error) -> ClientError {
        let url = self.inner.base().display();
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

/// A call's time limit: everything the call waits for ends by the same instant.
#[derive(Debug, Clone, Copy)]
struct Deadline {
    at: tokio::time::Instant,
    limit: Duration,
}

impl Deadline {
    fn after(limit: Duration) -> Self {
        Deadline {
            at: tokio::time::Instant::now() + limit,
            limit,
        }
    }

    async fn within<T>(
        self,
        work: impl std::future::Future<Output = Result<T, ClientError>>,
    ) -> Result<T, ClientError> {
        tokio::time::timeout_at(self.at, work)
            .await
            .map_err(|_| ClientError::Timeout(self.limit))?
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

impl WireInner {
    /// The URL calls go to now.
    fn base(&self) -> &BaseUrl {
        // Ordering: Relaxed: which node to call is a hint; any is correct.
        let at = self.current.load(std::sync::atomic::Ordering::Relaxed);
        &self.bases[at % self.bases.len()]
    }

    /// Moves calls on to the next URL.
    fn fail_over(&self) {
        // Ordering: Relaxed: see `base`.
        let at = self
            .current
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        tracing::info!(url = %self.bases[at % self.bases.len()].display(), "failing over to the next registry URL");
    }
}
