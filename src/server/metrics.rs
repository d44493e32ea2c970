//! Server metrics and their Prometheus text rendering (`GET /metrics`).
//!
//! Request counts live in a fixed table of relaxed atomic counters indexed by route, method
//! and status, so counting a request takes no lock and no allocation. Gauges that the
//! registry already keeps (registers, parked polls, pending requests, expirations) are read
//! from [`Registry::stats`] when scraped.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use hyper::{Method, StatusCode};

use crate::store::Registry;

/// The routes requests are counted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    Consumer,
    Provider,
    Watch,
    Healthz,
    Version,
    Metrics,
    /// `/v1/services` and below (discovery).
    Services,
    /// Consul's paths (`server/consul.rs`).
    Consul,
    /// `/ui` and below: the dashboard's files (`server/ui/`).
    Ui,
    /// Any unknown path (404s), one label so that scanners cannot grow the table.
    Other,
}

impl Route {
    const ALL: [Route; 10] = [
        Route::Consumer,
        Route::Provider,
        Route::Watch,
        Route::Healthz,
        Route::Version,
        Route::Metrics,
        Route::Services,
        Route::Consul,
        Route::Ui,
        Route::Other,
    ];

    pub(crate) fn of(path: &str) -> Route {
        match path {
            "/consumer" => Route::Consumer,
            "/provider" => Route::Provider,
            "/v1/watch" => Route::Watch,
            "/healthz" => Route::Healthz,
            "/version" => Route::Version,
            "/metrics" => Route::Metrics,
            "/v1/services" => Route::Services,
            _ if path.starts_with("/v1/services/") => Route::Services,
            "/ui" => Route::Ui,
            _ if path.starts_with("/ui/") => Route::Ui,
            _ if crate::server::consul::is_consul_path(path) => Route::Consul,
            _ => Route::Other,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Route::Consumer => "/consumer",
            Route::Provider => "/provider",
            Route::Watch => "/v1/watch",
            Route::Healthz => "/healthz",
            Route::Version => "/version",
            Route::Metrics => "/metrics",
            Route::Services => "/v1/services",
            Route::Consul => "consul",
            Route::Ui => "/ui",
            Route::Other => "other",
        }
    }
}

const METHODS: [&str; 4] = ["GET", "PUT", "DELETE", "other"];
const STATUSES: [u16; 16] = [
    200, 202, 204, 400, 401, 403, 404, 405, 408, 413, 414, 431, 500, 501, 503, 0,
];

fn method_index(method: &Method) -> usize {
    match *method {
        Method::GET => 0,
        Method::PUT => 1,
        Method::DELETE => 2,
        _ => 3,
    }
}

fn status_index(status: StatusCode) -> usize {
    let code = status.as_u16();
    STATUSES
        .iter()
        .position(|&s| s == code)
        .unwrap_or(STATUSES.len() - 1)
}

const CELLS: usize = Route::ALL.len() * METHODS.len() * STATUSES.len();

/// The server's own counters and gauges.
#[derive(Debug)]
pub(crate) struct Metrics {
    /// Requests by route × method × status.
    requests: Box<[AtomicU64]>,
    /// Connections open now.
    pub(crate) connections: AtomicUsize,
    /// Connections accepted since start.
    pub(crate) accepted: AtomicU64,
    /// Connections refused because their address was at its connection cap.
    pub(crate) refused_per_ip: AtomicU64,
    /// TLS handshakes that failed or timed out (a bad or missing client certificate).
    pub(crate) tls_failures: AtomicU64,
    /// SSE streams open now.
    pub(crate) streams: AtomicUsize,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        Self {
            requests: (0..CELLS).map(|_| AtomicU64::new(0)).collect(),
            connections: AtomicUsize::new(0),
            accepted: AtomicU64::new(0),
            refused_per_ip: AtomicU64::new(0),
            tls_failures: AtomicU64::new(0),
            streams: AtomicUsize::new(0),
        }
    }

    /// Counts one answered request.
    pub(crate) fn request(&self, route: Route, method: &Method, status: StatusCode) {
        let route = Route::ALL.iter().position(|&r| r == route).unwrap_or(0);
        let cell =
            (route * METHODS.len() + method_index(method)) * STATUSES.len() + status_index(status);
        if let Some(counter) = self.requests.get(cell) {
            // Ordering: Relaxed: a counter; nothing is published through it.
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The Prometheus text exposition of the server and registry metrics, and of every
    /// register whose value is a number or a boolean.
    pub(crate) fn render(
        &self,
        registry: &Registry,
        service_polls: usize,
        audit: Option<&crate::server::audit::AuditLog>,
        registers: bool,
    ) -> String {
        let stats = registry.stats();
        let mut out = String::with_capacity(4096);
        out.push_str(
            "# HELP reg_http_requests_total HTTP requests answered, by route, method and status.\n\
             # TYPE reg_http_requests_total counter\n",
        );
        for (r, route) in Route::ALL.iter().enumerate() {
            for (m, method) in METHODS.iter().enumerate() {
                for (s, status) in STATUSES.iter().enumerate() {
                    let cell = (r * METHODS.len() + m) * STATUSES.len() + s;
                    // Ordering: Relaxed: see `request`.
                    let count = self
                        .requests
                        .get(cell)
                        .map_or(0, |c| c.load(Ordering::Relaxed));
                    if count > 0 {
                        let status = if *status == 0 {
                            "other".to_owned()
                        } else {
                            status.to_string()
                        };
                        let _ = writeln!(
                            out,
                            "reg_http_requests_total{{route=\"{}\",method=\"{method}\",status=\"{status}\"}} {count}",
                            route.label()
                        );
                    }
                }
            }
        }
        // Ordering: Relaxed loads below: gauges and counters, read for display only.
        let gauges: [(&str, &str, &str, u64); 13] = [
            (
                "reg_tls_handshake_failures_total",
                "counter",
                "TLS handshakes that failed or timed out (a missing or untrusted client certificate).",
                self.tls_failures.load(Ordering::Relaxed),
            ),
            (
                "reg_audit_lines_total",
                "counter",
                "Lines written to the audit log (--audit-log).",
                audit.map_or(0, crate::server::audit::AuditLog::written),
            ),
            (
                "reg_audit_dropped_total",
                "counter",
                "Audit lines dropped because the audit writer fell behind (each loss is also \
                 written to the audit log as an audit_overflow line).",
                audit.map_or(0, crate::server::audit::AuditLog::dropped),
            ),
            (
                "reg_connections_open",
                "gauge",
                "HTTP connections open now.",
                self.connections.load(Ordering::Relaxed) as u64,
            ),
            (
                "reg_connections_accepted_total",
                "counter",
                "HTTP connections accepted since start.",
                self.accepted.load(Ordering::Relaxed),
            ),
            (
                "reg_connections_refused_per_ip_total",
                "counter",
                "HTTP connections refused (503) because their address had too many open.",
                self.refused_per_ip.load(Ordering::Relaxed),
            ),
            (
                "reg_watch_streams_open",
                "gauge",
                "Server-sent event streams (/v1/watch) open now.",
                self.streams.load(Ordering::Relaxed) as u64,
            ),
            (
                "reg_parked_consumer_polls",
                "gauge",
                "Consumer long polls (GET /consumer with wait) parked now.",
                stats.parked_waits as u64,
            ),
            (
                "reg_parked_provider_polls",
                "gauge",
                "Provider long polls (GET /provider with wait) parked now.",
                stats.parked_takes as u64,
            ),
            (
                "reg_parked_service_polls",
                "gauge",
                "Discovery blocking queries (/v1/services, Consul catalog and health) and \
                 service watch streams parked now.",
                service_polls as u64,
            ),
            (
                "reg_registers",
                "gauge",
                "Registers that exist now.",
                stats.registers as u64,
            ),
            (
                "reg_pending_change_requests",
                "gauge",
                "Change requests waiting for a provider.",
                stats.pending_requests as u64,
            ),
            (
                "reg_expirations_total",
                "counter",
                "Registers expired since start.",
                stats.expired,
            ),
        ];
        for (name, kind, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        if let Some(rss) = resident_memory_bytes() {
            let _ = writeln!(
                out,
                "# HELP process_resident_memory_bytes Resident memory size in bytes.\n\
                 # TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {rss}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP reg_revision The registry's current revision.\n# TYPE reg_revision gauge\nreg_revision {}",
            stats.revision
        );
        if !registers {
            return out;
        }
        out.push_str(
            "# HELP reg_register_value Registers whose value is a number or a boolean (1/0).\n\
             # TYPE reg_register_value gauge\n",
        );
        for register in registry.list().registers {
            let value = register.value();
            let number = match value.as_bool() {
                Some(b) => f64::from(u8::from(b)),
                None => match value.as_f64() {
                    Some(n) if n.is_finite() => n,
                    _ => continue,
                },
            };
            out.push_str("reg_register_value{name=\"");
            push_label_value(&mut out, register.name());
            let _ = writeln!(out, "\"}} {number}");
        }
        out
    }
}

/// Appends a Prometheus label value: any UTF-8, with `\`, `"` and newline escaped.
fn push_label_value(out: &mut String, value: &str) {
    for ch in value.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            _ => out.push(ch),
        }
    }
}

/// This process's resident memory (Prometheus' standard `process_resident_memory_bytes`),
/// from `/proc/self/statm`; `None` where there is no procfs.
fn resident_memory_bytes() -> Option<u64> {
    /// The page size on the Linux targets reg runs on (x86-64 and aarch64 with 4 KiB pages).
    const PAGE_BYTES: u64 = 4096;
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * PAGE_BYTES)
}

/// How often the server logs a summary of what changed: every 60 s (only when something
/// did). Per-register events are debug lines; this is the info-level view of the churn.
pub(crate) const SUMMARY_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// Logs one info line per [`SUMMARY_INTERVAL`] with the registry's activity since the last
/// one, until the server drains.
pub(crate) async fn log_summaries(shared: std::sync::Arc<crate::server::Shared>) {
    let mut drain = shared.drain.subscribe();
    let mut last = shared.registry.stats();
    let mut ticks = tokio::time::interval(SUMMARY_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        tokio::select! {
            _ = drain.wait_for(|draining| *draining) => return,
            _ = ticks.tick() => {}
        }
        let now = shared.registry.stats();
        if now.revision != last.revision || now.registers != last.registers {
            tracing::info!(
                registers = now.registers,
                changes = now.revision.saturating_sub(last.revision),
                expired = now.expired.saturating_sub(last.expired),
                pending_requests = now.pending_requests,
                parked_polls = now.parked_waits + now.parked_takes,
                "activity in the last {}s",
                SUMMARY_INTERVAL.as_secs()
            );
        }
        last = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::Json;

    #[test]
    fn renders_requests_and_register_gauges() {
        let registry = Registry::new();
        let set = |name: &str, text: &str| {
            let value = Json::parse(text.as_bytes()).unwrap_or_else(|_| Json::null());
            registry.set(name, value, None, None).is_ok()
        };
        assert!(set("kitchen.temp", "21.5"));
        assert!(set("door \"open\"", "true"));
        assert!(set("name", r#""text""#));
        let metrics = Metrics::new();
        metrics.request(Route::Consumer, &Method::GET, StatusCode::OK);
        metrics.request(Route::Consumer, &Method::GET, StatusCode::OK);
        metrics.request(Route::Other, &Method::POST, StatusCode::IM_A_TEAPOT);
        let text = metrics.render(&registry, 0, None, true);
        assert!(text.contains(
            "reg_http_requests_total{route=\"/consumer\",method=\"GET\",status=\"200\"} 2\n"
        ));
        assert!(text.contains(
            "reg_http_requests_total{route=\"other\",method=\"other\",status=\"other\"} 1\n"
        ));
        assert!(text.contains("reg_register_value{name=\"kitchen.temp\"} 21.5\n"));
        assert!(text.contains("reg_register_value{name=\"door \\\"open\\\"\"} 1\n"));
        let lean = metrics.render(&registry, 0, None, false);
        assert!(lean.contains("reg_registers "), "{lean}");
        assert!(!lean.contains("reg_register_value"), "{lean}");
        let lean = metrics.render(&registry, 0, None, false);
        assert!(lean.contains("reg_registers "), "{lean}");
        assert!(!lean.contains("reg_register_value"), "{lean}");
        assert!(!text.contains("name=\"name\""));
        assert!(text.contains("reg_registers 3\n"));
    }
}
