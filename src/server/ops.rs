//! `GET /healthz`, `GET /version`, `GET /metrics`.

use bytes::Bytes;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};

use crate::server::error::ServerError;
use crate::server::metrics::Route;
use crate::server::routes::{self, ResBody};
use crate::server::Shared;

/// Content type of the Prometheus text exposition format.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `query`: `/metrics?registers=false` leaves out the per-register gauges (the dashboard's
/// stats: a few lines, whatever the registry's size).
pub(crate) fn handle(
    shared: &Shared,
    route: Route,
    query: Option<&str>,
) -> Result<Response<ResBody>, ServerError> {
    match route {
        Route::Healthz if shared.is_draining() => Err(ServerError::ShuttingDown),
        Route::Healthz => Ok(routes::json(
            StatusCode::OK,
            Bytes::from_static(br#"{"status":"ok"}"#),
        )),
        Route::Version => Ok(routes::json(
            StatusCode::OK,
            Bytes::from_static(
                concat!(r#"{"version":""#, env!("CARGO_PKG_VERSION"), r#""}"#).as_bytes(),
            ),
        )),
        Route::Metrics => {
            let text = shared.metrics.render(
                &shared.registry,
                shared.service_polls(),
                shared.audit.as_deref(),
                query != Some("registers=false"),
            );
            let mut response = Response::new(ResBody::Full(Some(Bytes::from(text))));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(PROMETHEUS_TEXT));
            Ok(response)
        }
        _ => Err(ServerError::NotFound(String::new())),
    }
}
