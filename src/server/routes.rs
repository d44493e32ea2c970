//! Path and method → handler; errors → JSON error responses; request metrics.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE, EXPECT, HOST};
use hyper::{Method, Request, Response, StatusCode, Version};
use tokio::sync::mpsc;

use crate::server::audit::Field;
use crate::server::auth::{Caller, Right};
use crate::server::conn::{Busy, Peer};
use crate::server::error::{LogSafe, ServerError};
use crate::server::metrics::Route;
use crate::server::query::Query;
use crate::server::{consul, consumer, ops, provider, response, services, ui, watch, Shared};

/// `Content-Type` of JSON bodies.
const JSON: &str = "application/json";

/// A response body: a whole buffer, or a stream of chunks (a watch stream).
#[derive(Debug)]
pub(crate) enum ResBody {
    /// The whole body; `None` once sent (or for an empty body).
    Full(Option<Bytes>),
    /// Chunks from a producer task; ends when the producer drops its sender.
    Stream {
        chunks: mpsc::Receiver<Bytes>,
        /// Keeps the connection marked busy (no idle timeout) and counted as a stream.
        _guard: watch::StreamGuard,
    },
}

impl ResBody {
    pub(crate) fn empty() -> Self {
        ResBody::Full(None)
    }
}

impl Body for ResBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            ResBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            ResBody::Stream { chunks, .. } => chunks
                .poll_recv(cx)
                .map(|chunk| chunk.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, ResBody::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResBody::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            ResBody::Stream { .. } => SizeHint::default(),
        }
    }
}

/// A JSON response with `status`.
pub(crate) fn json(status: StatusCode, body: Bytes) -> Response<ResBody> {
    let mut response = Response::new(ResBody::Full(Some(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(JSON));
    response
}

/// A response with `status` and no body.
pub(crate) fn empty(status: StatusCode) -> Response<ResBody> {
    let mut response = Response::new(ResBody::empty());
    *response.status_mut() = status;
    response
}

/// The correlation-id header: taken from the caller when it sends a usable one, made up
/// otherwise, and echoed in every response.
pub(crate) const X_REQUEST_ID: &str = "x-request-id";
/// Longest caller-given request id kept: 128 bytes (longer ones are replaced).
const MAX_REQUEST_ID: usize = 128;

/// Correlation ids for requests that bring none: `<boot>-<n>`, where `<boot>` differs
/// between runs of the server (so ids from two runs do not collide in one audit trail).
#[derive(Debug)]
pub(crate) struct RequestIds {
    boot: u32,
    next: std::sync::atomic::AtomicU64,
}

impl RequestIds {
    pub(crate) fn new() -> Self {
        use std::hash::{BuildHasher, Hasher};
        let mut hasher = foldhash::fast::RandomState::default().build_hasher();
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        Self {
            boot: hasher.finish() as u32,
            next: std::sync::atomic::AtomicU64::new(1),
        }
    }

    fn next(&self) -> String {
        // Ordering: Relaxed: ids only need to be unique.
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("{:08x}-{n}", self.boot)
    }
}

/// The request's correlation id: the caller's `X-Request-Id` when it is 1 to 128 visible
/// ASCII characters, else a new one.
fn request_id(shared: &Shared, request: &Request<Incoming>) -> String {
    request
        .headers()
        .get(X_REQUEST_ID)
        .map(HeaderValue::as_bytes)
        .filter(|id| {
            !id.is_empty() && id.len() <= MAX_REQUEST_ID && id.iter().all(u8::is_ascii_graphic)
        })
        .and_then(|id| std::str::from_utf8(id).ok())
        .map_or_else(|| shared.request_ids.next(), str::to_owned)
}

/// The bearer token a request carries: `Authorization: Bearer <token>`; on Consul's paths
/// also `X-Consul-Token` or the `token` query parameter, as Consul takes them (python-consul
/// sends the parameter).
fn bearer(request: &Request<Incoming>, route: Route) -> Result<Option<String>, ServerError> {
    if let Some(value) = request.headers().get(hyper::header::AUTHORIZATION) {
        let text = value.to_str().unwrap_or("");
        let token = text
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .filter(|token| !token.is_empty());
        return match token {
            Some(token) => Ok(Some(token.to_owned())),
            None => Err(ServerError::unauthorized(
                "the Authorization header must be `Bearer <token>`",
            )),
        };
    }
    if route != Route::Consul {
        return Ok(None);
    }
    if let Some(token) = request
        .headers()
        .get("x-consul-token")
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|token| !token.is_empty())
    {
        return Ok(Some(token.to_owned()));
    }
    Ok(crate::server::query::pairs(request.uri().query())?
        .into_iter()
        .find(|(key, value)| key == "token" && !value.is_empty())
        .map(|(_, token)| token))
}

/// Answers one request. Never fails: errors become JSON error responses.
pub(crate) async fn handle(
    shared: &Arc<Shared>,
    request: Request<Incoming>,
    busy: Busy,
    peer: &Peer,
) -> Response<ResBody> {
    let route = Route::of(request.uri().path());
    let method = request.method().clone();
    let request_id = request_id(shared, &request);
    let mut audit_path = None;
    let mut caller = None;
    let result = match check_head(&request, &shared.config) {
        Ok(()) => {
            // An open server (no --auth) reads no credentials: a header a proxy added, or a
            // client's token for another registry, changes nothing.
            // The rules in force now (replaced whole on a reload; the guard is let go of
            // before anything awaits).
            let auth = shared.auth.load();
            let principal = if auth.is_open() {
                auth.authenticate(None, None)
            } else {
                bearer(&request, route)
                    .and_then(|token| auth.authenticate(token.as_deref(), peer.identity.as_deref()))
            };
            drop(auth);
            match principal {
                Ok(principal) => {
                    let who =
                        Caller::new(principal, &request_id, peer.addr, peer.identity.as_deref());
                    if shared.audit.is_some() {
                        audit_path = Some(path_for_message(&request));
                    }
                    caller = Some(who.clone());
                    route_request(shared, route, &method, request, busy, &who).await
                }
                Err(error) => {
                    audit_path = Some(path_for_message(&request));
                    Err(error)
                }
            }
        }
        Err(error) => Err(error),
    };
    let mut response = match result {
        Ok(response) => response,
        Err(error) => {
            if let (Some(audit), true) = (
                &shared.audit,
                matches!(
                    error,
                    ServerError::Unauthorized { .. } | ServerError::Forbidden { .. }
                ),
            ) {
                let origin = match &caller {
                    Some(caller) => caller.origin().clone(),
                    None => crate::store::Origin::new(
                        peer.identity.as_deref().unwrap_or("unknown"),
                        &request_id,
                        Some(peer.addr),
                    ),
                };
                let status = u64::from(error.status().as_u16());
                let message = error.to_string();
                let path = audit_path.as_deref().unwrap_or("");
                let mut fields = vec![
                    ("status", Field::Num(status)),
                    ("method", Field::Str(method.as_str())),
                    ("path", Field::Str(path)),
                    ("error", Field::Str(&message)),
                ];
                if let Some(name) = error.refused_name() {
                    fields.push(("name", Field::Str(name)));
                }
                audit.event("denied", &origin, &fields);
            }
            error_response(&error)
        }
    };
    if let Ok(id) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(X_REQUEST_ID, id);
    }
    shared.metrics.request(route, &method, response.status());
    response
}

/// The checks every request head passes before it is routed: the target and head limits
/// (answered here, as JSON, rather than by hyper with an empty body) and RFC 9112's one
/// `Host` header for HTTP/1.1.
fn check_head(
    request: &Request<Incoming>,
    config: &crate::server::ServerConfig,
) -> Result<(), ServerError> {
    let uri = request.uri();
    let target = uri.path_and_query().map_or(0, |p| p.as_str().len())
        + uri.authority().map_or(0, |a| a.as_str().len());
    if target > config.max_uri_bytes {
        return Err(ServerError::UriTooLong {
            len: target,
            limit: config.max_uri_bytes,
        });
    }
    // The head as sent: `METHOD SP target SP HTTP/1.1 CRLF`, `name: value CRLF` per header,
    // and the closing CRLF.
    let head = request.method().as_str().len()
        + target
        + 12
        + request
            .headers()
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 4)
            .sum::<usize>()
        + 2;
    if head > config.max_head_bytes {
        return Err(ServerError::HeadTooLarge {
            limit: config.max_head_bytes,
        });
    }
    if request.version() == Version::HTTP_11 {
        let hosts = request.headers().get_all(HOST).iter().count();
        if hosts != 1 {
            return Err(ServerError::BadHost(hosts));
        }
    }
    Ok(())
}

/// Routes a request whose head passed [`check_head`] to its handler.
async fn route_request(
    shared: &Arc<Shared>,
    route: Route,
    method: &Method,
    request: Request<Incoming>,
    busy: Busy,
    caller: &Caller,
) -> Result<Response<ResBody>, ServerError> {
    match (route, method) {
        (Route::Consumer, &Method::GET) => match parse_and_drop(shared, request) {
            Ok(query) => consumer::get(shared, query, caller).await,
            Err(error) => Err(error),
        },
        (Route::Consumer, &Method::PUT) => consumer::put(shared, request, caller).await,
        (Route::Consumer, _) => not_allowed(&request, "GET, PUT"),
        (Route::Provider, &Method::GET) => match parse_and_drop(shared, request) {
            Ok(query) => provider::get(shared, query, caller).await,
            Err(error) => Err(error),
        },
        (Route::Provider, &Method::PUT) => provider::put(shared, request, caller).await,
        (Route::Provider, &Method::DELETE) => provider::delete(shared, &request, caller).await,
        (Route::Provider, _) => not_allowed(&request, "GET, PUT, DELETE"),
        (Route::Watch, &Method::GET) => watch::stream(shared, &request, busy, caller),
        (Route::Watch, _) => not_allowed(&request, "GET"),
        (Route::Metrics, &Method::GET | &Method::HEAD) => {
            // Every register's number is a gauge there: the whole registry, to admins.
            caller.require_everywhere(Right::Admin)?;
            ops::handle(shared, route, request.uri().query())
        }
        (Route::Healthz | Route::Version, &Method::GET | &Method::HEAD) => {
            ops::handle(shared, route, None)
        }
        (Route::Healthz | Route::Version | Route::Metrics, _) => not_allowed(&request, "GET, HEAD"),
        (Route::Services, _) => services::handle(shared, request, busy, caller).await,
        (Route::Consul, _) => consul::handle(shared, request, caller).await,
        (Route::Ui, _) if shared.config.ui => ui::handle(method, request.uri().path()),
        (Route::Ui, _) => Err(ServerError::NotFound(path_for_message(&request))),
        (Route::Other, _) => Err(ServerError::NotFound(path_for_message(&request))),
    }
}

/// Parses a long poll's query into owned data and drops the request before the handler parks.
///
/// Why: hyper's parsed URI and header values are slices of the connection's 8 KiB read buffer.
/// Holding the request while parked pins that buffer, and hyper — which keeps reading to notice
/// a client that goes away — then allocates a second one: 16 KiB per parked poll instead of 8.
fn parse_and_drop(shared: &Shared, request: Request<Incoming>) -> Result<Query, ServerError> {
    let query = Query::parse(request.uri().query(), &shared.config);
    drop(request);
    query
}

fn not_allowed(
    request: &Request<Incoming>,
    allowed: &'static str,
) -> Result<Response<ResBody>, ServerError> {
    Err(ServerError::MethodNotAllowed {
        method: request.method().as_str().chars().take(16).collect(),
        path: path_for_message(request),
        allowed,
    })
}

/// The request path, cut short for an error message.
fn path_for_message(request: &Request<Incoming>) -> String {
    request.uri().path().chars().take(64).collect()
}

/// The JSON error response for `error`.
pub(crate) fn error_response(error: &ServerError) -> Response<ResBody> {
    let status = error.status();
    let message = error.to_string();
    if status.is_server_error() {
        tracing::warn!(%status, error = %LogSafe(&message), "request failed");
    } else {
        tracing::debug!(%status, error = %LogSafe(&message), "request refused");
    }
    let mut response = json(status, response::error(&message));
    match error {
        ServerError::MethodNotAllowed { allowed, .. } => {
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static(allowed));
        }
        ServerError::Unauthorized { .. } => {
            response.headers_mut().insert(
                hyper::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"reg\""),
            );
        }
        _ => {}
    }
    response
}

/// Most bytes of a refused body (413) read and thrown away after the answer: 4 MiB.
const LINGER_BYTES: usize = 4 * 1024 * 1024;
/// Longest time spent reading a refused body after the answer: 5 s (nginx's
/// `lingering_timeout`).
const LINGER_TIME: Duration = Duration::from_secs(5);

/// Reads a request body within the size limit and the body timeout.
///
/// A body over the limit is answered 413 at once, and the rest of it is then read and thrown
/// away in the background (up to [`LINGER_BYTES`] for up to [`LINGER_TIME`]) as Go's
/// net/http and nginx do ("lingering close"): a client that writes its whole body before it
/// reads (Python's urllib) then sees the 413 instead of a broken pipe. A request that sent
/// `Expect: 100-continue` never sent its body, so nothing is read for it.
pub(crate) async fn read_body(
    shared: &Shared,
    request: Request<Incoming>,
) -> Result<Bytes, ServerError> {
    let limit = shared.config.max_body_bytes;
    let too_large = ServerError::BodyTooLarge { limit };
    let lingers = !request.headers().contains_key(EXPECT);
    let mut body = request.into_body();
    // A declared length over the limit is refused before reading anything.
    if body.size_hint().lower() > limit as u64 {
        if lingers {
            linger(body);
        }
        return Err(too_large);
    }
    // Zero is off: `Duration::MAX` makes tokio wait forever.
    let timeout = Some(shared.config.header_read_timeout)
        .filter(|t| !t.is_zero())
        .unwrap_or(Duration::MAX);
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut total = 0usize;
    let read = tokio::time::timeout(timeout, async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|error| ServerError::BodyRead(error.to_string()))?;
            if let Ok(data) = frame.into_data() {
                total = total.saturating_add(data.len());
                if total > limit {
                    return Ok(false);
                }
                chunks.push(data);
            }
        }
        Ok(true)
    })
    .await;
    match read {
        Err(_) => Err(ServerError::BodyTimeout(timeout)),
        Ok(Err(error)) => Err(error),
        Ok(Ok(false)) => {
            if lingers {
                linger(body);
            }
            Err(too_large)
        }
        Ok(Ok(true)) => Ok(match chunks.len() {
            0 => Bytes::new(),
            1 => chunks.pop().unwrap_or_default(),
            _ => Bytes::from(chunks.concat()),
        }),
    }
}

/// Reads and drops the rest of a refused body in the background; see [`read_body`].
fn linger(mut body: Incoming) {
    tokio::spawn(async move {
        let _ = tokio::time::timeout(LINGER_TIME, async {
            let mut read = 0usize;
            while let Some(Ok(frame)) = body.frame().await {
                read = read.saturating_add(frame.data_ref().map_or(0, Bytes::len));
                if read > LINGER_BYTES {
                    break;
                }
            }
        })
        .await;
    });
}
