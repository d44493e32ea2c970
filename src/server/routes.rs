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

use crate::server::conn::Busy;
use crate::server::error::{LogSafe, ServerError};
use crate::server::metrics::Route;
use crate::server::query::Query;
use crate::server::{consul, consumer, ops, provider, response, services, watch, Shared};

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

/// Answers one request. Never fails: errors become JSON error responses.
pub(crate) async fn handle(
    shared: &Arc<Shared>,
    request: Request<Incoming>,
    busy: Busy,
) -> Response<ResBody> {
    let route = Route::of(request.uri().path());
    let method = request.method().clone();
    let result = match check_head(&request, &shared.config) {
        Ok(()) => route_request(shared, route, &method, request, busy).await,
        Err(error) => Err(error),
    };
    let response = result.unwrap_or_else(|error| error_response(&error));
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
) -> Result<Response<ResBody>, ServerError> {
    match (route, method) {
        (Route::Consumer, &Method::GET) => match parse_and_drop(shared, request) {
            Ok(query) => consumer::get(shared, query).await,
            Err(error) => Err(error),
        },
        (Route::Consumer, &Method::PUT) => consumer::put(shared, request).await,
        (Route::Consumer, _) => not_allowed(&request, "GET, PUT"),
        (Route::Provider, &Method::GET) => match parse_and_drop(shared, request) {
            Ok(query) => provider::get(shared, query).await,
            Err(error) => Err(error),
        },
        (Route::Provider, &Method::PUT) => provider::put(shared, request).await,
        (Route::Provider, &Method::DELETE) => provider::delete(shared, &request).await,
        (Route::Provider, _) => not_allowed(&request, "GET, PUT, DELETE"),
        (Route::Watch, &Method::GET) => watch::stream(shared, &request, busy),
        (Route::Watch, _) => not_allowed(&request, "GET"),
        (Route::Healthz | Route::Version | Route::Metrics, &Method::GET | &Method::HEAD) => {
            ops::handle(shared, route)
        }
        (Route::Healthz | Route::Version | Route::Metrics, _) => not_allowed(&request, "GET, HEAD"),
        (Route::Services, _) => services::handle(shared, request, busy).await,
        (Route::Consul, _) => consul::handle(shared, request).await,
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
    if let ServerError::MethodNotAllowed { allowed, .. } = error {
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static(allowed));
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
