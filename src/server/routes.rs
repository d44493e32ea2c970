//! Path and method → handler; errors → JSON error responses; request metrics.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use tokio::sync::mpsc;

use crate::server::conn::Busy;
use crate::server::error::ServerError;
use crate::server::metrics::Route;
use crate::server::query::Query;
use crate::server::{consumer, ops, provider, response, watch, Shared};

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
    let result = match (route, &method) {
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
        (Route::Provider, &Method::DELETE) => provider::delete(shared, &request),
        (Route::Provider, _) => not_allowed(&request, "GET, PUT, DELETE"),
        (Route::Watch, &Method::GET) => watch::stream(shared, &request, busy),
        (Route::Watch, _) => not_allowed(&request, "GET"),
        (Route::Healthz | Route::Version | Route::Metrics, &Method::GET | &Method::HEAD) => {
            ops::handle(shared, route)
        }
        (Route::Healthz | Route::Version | Route::Metrics, _) => not_allowed(&request, "GET, HEAD"),
        (Route::Other, _) => Err(ServerError::NotFound(path_for_message(&request))),
    };
    let response = result.unwrap_or_else(|error| error_response(&error));
    shared.metrics.request(route, &method, response.status());
    response
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
        tracing::warn!(%status, error = %message, "request failed");
    } else {
        tracing::debug!(%status, error = %message, "request refused");
    }
    let mut response = json(status, response::error(&message));
    if let ServerError::MethodNotAllowed { allowed, .. } = error {
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static(allowed));
    }
    response
}

/// Reads a request body within the size limit and the body timeout.
pub(crate) async fn read_body(
    shared: &Shared,
    request: Request<Incoming>,
) -> Result<Bytes, ServerError> {
    let limit = shared.config.max_body_bytes;
    let too_large = ServerError::BodyTooLarge { limit };
    // A declared length over the limit is refused before reading anything.
    if request.body().size_hint().lower() > limit as u64 {
        return Err(too_large);
    }
    // Zero is off: `Duration::MAX` makes tokio wait forever.
    let timeout = Some(shared.config.header_read_timeout)
        .filter(|t| !t.is_zero())
        .unwrap_or(Duration::MAX);
    let body = Limited::new(request.into_body(), limit);
    match tokio::time::timeout(timeout, body.collect()).await {
        Err(_) => Err(ServerError::BodyTimeout(timeout)),
        Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => Err(too_large),
        Ok(Err(error)) => Err(ServerError::BodyRead(error.to_string())),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}
