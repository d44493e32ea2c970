//! `GET /healthz`, `GET /version`, `GET /metrics`.

use bytes::Bytes;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};

use crate::server::error::ServerError;
use crate::server::metrics::Route;
use crate::server::routes::{self, ResBody};
use crate::server::Shared;
use crate::store::ReplicaStatus;

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
        Route::Healthz => Ok(match shared.registry.replica_status() {
            None => routes::json(StatusCode::OK, Bytes::from_static(br#"{"status":"ok"}"#)),
            Some(cluster) => cluster_health(&cluster),
        }),
        Route::Version => Ok(routes::json(
            StatusCode::OK,
            Bytes::from_static(
                concat!(r#"{"version":""#, env!("CARGO_PKG_VERSION"), r#""}"#).as_bytes(),
            ),
        )),
        Route::Metrics => {
            let mut text = shared.metrics.render(
                &shared.registry,
                shared.service_polls(),
                shared.audit.as_deref(),
                query != Some("registers=false"),
            );
            if let Some(cluster) = shared.registry.replica_status() {
                cluster_metrics(&mut text, &cluster);
            }
            let mut response = Response::new(ResBody::Full(Some(Bytes::from(text))));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(PROMETHEUS_TEXT));
            Ok(response)
        }
        _ => Err(ServerError::NotFound(String::new())),
    }
}

/// A cluster node's health: 200 once it has caught up with the cluster's log and while it is
/// connected to it; 503 (with where it stands) before and otherwise, so a load balancer sends
/// it nothing it would answer from a stale replica.
fn cluster_health(cluster: &ReplicaStatus) -> Response<ResBody> {
    let (code, status) = match (cluster.stopped, cluster.ready, cluster.connected) {
        (true, _, _) => (StatusCode::SERVICE_UNAVAILABLE, "stopped"),
        (false, true, true) => (StatusCode::OK, "ok"),
        (false, false, _) => (StatusCode::SERVICE_UNAVAILABLE, "catching up"),
        (false, true, false) => (StatusCode::SERVICE_UNAVAILABLE, "disconnected"),
    };
    let body = serde_json::json!({
        "status": status,
        "cluster": {
            "name": cluster.cluster,
            "connected": cluster.connected,
            "ready": cluster.ready,
            "applied": cluster.applied,
            "last": cluster.last,
            "lag": cluster.lag(),
            "snapshot": cluster.snapshot,
            "error": cluster.error,
        },
    });
    routes::json(code, Bytes::from(body.to_string()))
}

/// The cluster's gauges, appended to `/metrics`.
fn cluster_metrics(text: &mut String, cluster: &ReplicaStatus) {
    use std::fmt::Write as _;
    let gauges: [(&str, &str, u64); 6] = [
        (
            "reg_cluster_connected",
            "1 while connected to the cluster's NATS servers",
            u64::from(cluster.connected),
        ),
        (
            "reg_cluster_ready",
            "1 once caught up with the cluster's log",
            u64::from(cluster.ready),
        ),
        (
            "reg_cluster_applied_sequence",
            "The stream sequence applied last",
            cluster.applied,
        ),
        (
            "reg_cluster_last_sequence",
            "The last stream sequence known",
            cluster.last,
        ),
        (
            "reg_cluster_lag",
            "Stream entries known but not applied yet",
            cluster.lag(),
        ),
        (
            "reg_cluster_snapshot_sequence",
            "The stream sequence the newest snapshot holds the state after (0: none)",
            cluster.snapshot,
        ),
    ];
    for (name, help, value) in gauges {
        let _ = writeln!(
            text,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
        );
    }
}
