//! `reg bench`: the capacity-planning benchmark suite.
//!
//! Each scenario drives a reg-compatible server over real HTTP — ours, started in-process, or
//! any server at a URL — and reports throughput and latency **beside the same load against a
//! bare hyper server** (the *ceiling*, see `ceiling.rs`) measured in the same run, so every
//! figure comes with this machine's limit next to it.
//!
//! Scenarios:
//! * `fleet` — D devices each providing R registers with TTL T (refresh at T/2), C consumers
//!   long-polling subsets: sustained refreshes/s, update→consumer latency, server memory.
//! * `read` / `write` — GET /consumer and PUT /provider throughput and latency.
//! * `fanout` — N parked long polls on one register, and on N different registers.
//! * `commands` — change-request round trip.
//! * `discovery` — I instances over S services with W watchers: change → every watcher of
//!   the service beside the same watchers as plain register polls, `pick()` cost, memory per
//!   instance (`discovery.rs`).
//! * `ceiling` — the bare server alone: this machine's HTTP limit.
//!
//! **What a run leaves behind.** A run against a server at a URL writes registers named
//! `bench.…` only, each with a TTL a little longer than the run ([`Common::ttl`]), and deletes
//! them (`DELETE /provider`) when it ends; a server without that route (Go reg) lets them
//! expire. The bench never picks a target by itself: without a URL it starts reg in-process.
//!
//! **Repeated runs.** `runs` > 1 runs the scenario that many times, reg and the ceiling
//! alternating which goes first, and reports the median run with every run's figures beside
//! it and warnings where the machine was too noisy to trust (see `report.rs`).
//!
//! **HTTPS.** A `https://` target is measured over TLS (with [`Common::access`]'s CA file,
//! client certificate and token); the ceiling stays plain HTTP, and the report says so.
//!
//! Load is open-loop at a target rate with coordinated-omission-corrected latency (see
//! `load.rs`), or closed-loop (as fast as answered) when no rate is given. Client connections
//! are spread over 127.0.0.x source addresses.

mod ceiling;
mod discovery;
mod http;
mod load;
mod report;
mod scenarios;

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

pub use ceiling::serve_ceiling;
pub use discovery::DiscoveryOptions;
pub use report::{Latency, Machine, Report, Row, RunFigures, Timeline, NOISY};
pub use scenarios::{CommandsOptions, FanoutOptions, FleetOptions, ThroughputOptions};

use crate::bench::http::Peer;
use crate::server::{RunningServer, Server, ServerConfig};
use crate::Registry;

/// What a benchmark failed on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// The target URL is not `http[s]://host:port`.
    #[error("invalid target url {url:?}: {reason}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A parameter is out of range.
    #[error("invalid parameter: {0}")]
    InvalidParameter(String),
    /// The TLS set-up for an `https` target cannot be used (the message names the file).
    #[error("tls: {0}")]
    Tls(String),
    /// Starting the in-process server failed.
    #[error("cannot start the in-process server: {0}")]
    Server(String),
    /// A network error that ended the run.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: std::io::Error,
    },
    /// The server did something a reg server must not.
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
}

impl BenchError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BenchError {
        let context = context.into();
        move |source| BenchError::Io { context, source }
    }
}

/// Which server a run measures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Start reg's server in this process on 127.0.0.1 (any port).
    InProcess,
    /// A running reg-compatible server at `http://host:port` or `https://host:port`.
    Url(String),
}

/// What a run presents to a server at a URL beyond its address: which CAs to trust and which
/// client certificate to show for `https`, and the bearer token every request carries. Not
/// used for the in-process server (plain HTTP, no authentication).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Access {
    /// PEM file of the CA certificate(s) to trust for `https`; `None`: the system bundle
    /// (`/etc/ssl/certs/ca-certificates.crt`).
    pub ca_file: Option<PathBuf>,
    /// Client certificate and private key (PEM) for a server that requires mutual TLS.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Sent as `Authorization: Bearer <token>` with every request.
    pub token: Option<String>,
}

impl fmt::Debug for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Access")
            .field("ca_file", &self.ca_file)
            .field("client_cert", &self.client_cert)
            // The token is a secret: say whether there is one, never what it is.
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Options every scenario takes.
#[derive(Debug, Clone)]
pub struct Common {
    /// The server to measure.
    pub target: Target,
    /// How long to measure (each measured phase).
    pub duration: Duration,
    /// How long to run before measuring.
    pub warmup: Duration,
    /// How many times to run the scenario (at least 1).
    pub runs: usize,
    /// Measure the ceiling before reg in scenarios that measure both (`runs` alternates it).
    pub ceiling_first: bool,
    /// TLS files and token for a [`Target::Url`].
    pub access: Access,
}

impl Default for Common {
    fn default() -> Self {
        Common {
            target: Target::InProcess,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(2),
            runs: 1,
            ceiling_first: false,
            access: Access::default(),
        }
    }
}

impl Common {
    /// The TTL of the registers a run writes (other than the fleet's, which has its own): long
    /// enough that none expires while the run still reads it (a scenario measures at most four
    /// phases of warmup + duration, each re-writing what it reads), short enough that a run
    /// that dies before it deletes them leaves nothing behind for long.
    pub fn ttl(&self) -> Duration {
        (self.warmup + self.duration) * 5 + Duration::from_secs(60)
    }
}

/// A scenario with its options.
#[derive(Debug, Clone)]
pub enum Scenario {
    /// See the module docs.
    Fleet(FleetOptions),
    /// GET /consumer throughput and latency.
    Read(ThroughputOptions),
    /// PUT /provider throughput and latency.
    Write(ThroughputOptions),
    /// Parked long polls answered by one PUT.
    Fanout(FanoutOptions),
    /// Change-request round trip.
    Commands(CommandsOptions),
    /// Service discovery: change → watchers, pick() cost, memory per instance.
    Discovery(DiscoveryOptions),
    /// The bare server alone.
    Ceiling(ThroughputOptions),
}

impl Scenario {
    /// The scenario's name.
    pub fn name(&self) -> &'static str {
        match self {
            Scenario::Fleet(_) => "fleet",
            Scenario::Read(_) => "read",
            Scenario::Write(_) => "write",
            Scenario::Fanout(_) => "fanout",
            Scenario::Commands(_) => "commands",
            Scenario::Discovery(_) => "discovery",
            Scenario::Ceiling(_) => "ceiling",
        }
    }
}

/// The server under test: how to reach it, and the in-process server if we started it.
#[derive(Debug)]
pub(crate) struct Under {
    /// The server, or a cluster's first node: where writes go.
    pub(crate) peer: Peer,
    /// Every node given (`peer` first): loads spread over them, and long polls park on the
    /// nodes after the first, so a write on one node wakes polls on the others.
    pub(crate) peers: Vec<Peer>,
    pub(crate) server: Option<RunningServer>,
}

impl Under {
    async fn start(target: &Target, access: &Access) -> Result<Under, BenchError> {
        match target {
            Target::InProcess => {
                let registry = Registry::new();
                let config = ServerConfig {
                    // The fanout scenario parks thousands of polls on one node.
                    max_connections: 100_000,
                    ..ServerConfig::default()
                };
                let server = Server::builder()
                    .registry(registry)
                    .config(config)
                    .bind("127.0.0.1:0")
                    .await
                    .map_err(|e| BenchError::Server(e.to_string()))?;
                let peer = Peer::plain(server.local_addr());
                Ok(Under {
                    peers: vec![peer.clone()],
                    peer,
                    server: Some(server),
                })
            }
            Target::Url(urls) => {
                let peers = urls
                    .split(',')
                    .map(|url| peer(url.trim(), access))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Under {
                    peer: peers[0].clone(),
                    peers,
                    server: None,
                })
            }
        }
    }

    fn describe(&self, target: &Target) -> String {
        match target {
            Target::InProcess => format!("in-process reg {}", env!("CARGO_PKG_VERSION")),
            Target::Url(url) => url.clone(),
        }
    }

    /// Where long poll `i` parks: on a node after the first when there are several.
    pub(crate) fn poll_peer(&self, i: usize) -> &Peer {
        match self.peers.len() {
            0 | 1 => &self.peer,
            n => &self.peers[1 + i % (n - 1)],
        }
    }

    /// Parked long polls (consumer + provider) on the server (every node), if it tells.
    pub(crate) async fn parked(&self) -> Option<u64> {
        if let Some(server) = &self.server {
            let stats = server.registry().stats();
            return Some((stats.parked_waits + stats.parked_takes) as u64);
        }
        let mut sum = 0;
        for peer in &self.peers {
            let metrics = metrics(peer).await?;
            sum += ["reg_parked_consumer_polls", "reg_parked_provider_polls"]
                .iter()
                .filter_map(|name| metric(&metrics, name))
                .map(|v| v as u64)
                .sum::<u64>();
        }
        Some(sum)
    }

    /// The server's resident memory in bytes, if it can be known.
    pub(crate) async fn rss(&self) -> Option<u64> {
        if self.server.is_some() {
            return process_rss();
        }
        let metrics = metrics(&self.peer).await?;
        metric(&metrics, "process_resident_memory_bytes").map(|v| v as u64)
    }

    async fn stop(self) {
        if let Some(server) = self.server {
            let _ = server.shutdown_and_wait().await;
        }
    }
}

/// A server's `/metrics`, if it answers them.
async fn metrics(peer: &Peer) -> Option<String> {
    let mut conn = http::Conn::connect(peer, None).await.ok()?;
    let response = conn
        .send(&http::request("GET", "/metrics", peer, None))
        .await
        .ok()?;
    (response.status == 200).then(|| String::from_utf8_lossy(&response.body).into_owned())
}

/// The value of an unlabelled metric in Prometheus text.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (key, value) = l.split_once(' ')?;
        (key == name).then(|| value.trim().parse().ok()).flatten()
    })
}

/// This process's resident set size, from /proc/self/statm.
pub(crate) fn process_rss() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// A target URL and its access → how to reach it.
fn peer(url: &str, access: &Access) -> Result<Peer, BenchError> {
    let (https, host, addr) = resolve(url)?;
    let mut peer = Peer::plain(addr);
    if let Some(token) = &access.token {
        // It goes into the request bytes as is: nothing that could end the header line.
        if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(BenchError::InvalidParameter(
                "the token must be printable ASCII without spaces".into(),
            ));
        }
        peer = peer.with_token(token);
    }
    if https {
        peer = with_tls(peer, &host, access)?;
    }
    Ok(peer)
}

#[cfg(all(feature = "tls", feature = "client"))]
fn with_tls(peer: Peer, host: &str, access: &Access) -> Result<Peer, BenchError> {
    let files = crate::client::tls::TlsFiles {
        ca_file: access.ca_file.clone(),
        client_cert: access.client_cert.clone(),
    };
    let config =
        crate::client::tls::client_config(&files).map_err(|e| BenchError::Tls(e.to_string()))?;
    let name = rustls_pki_types::ServerName::try_from(host.to_owned()).map_err(|e| {
        BenchError::InvalidUrl {
            url: host.to_owned(),
            reason: format!("not a host name for TLS: {e}"),
        }
    })?;
    Ok(peer.with_tls(http::Tls {
        connector: tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)),
        name,
    }))
}

#[cfg(not(all(feature = "tls", feature = "client")))]
fn with_tls(_peer: Peer, host: &str, _access: &Access) -> Result<Peer, BenchError> {
    Err(BenchError::InvalidUrl {
        url: format!("https://{host}"),
        reason: "https needs reg built with the `tls` and `client` features".into(),
    })
}

/// `http[s]://host[:port][/]` → (https, the host as written, a socket address). The port
/// defaults to 80 or 443.
fn resolve(url: &str) -> Result<(bool, String, SocketAddr), BenchError> {
    let invalid = |reason: &str| BenchError::InvalidUrl {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let (https, rest) = if let Some(rest) = url.strip_prefix("http://") {
        (false, rest)
    } else if let Some(rest) = url.strip_prefix("https://") {
        (true, rest)
    } else {
        return Err(invalid("only http:// and https:// are supported"));
    };
    let authority = rest.split('/').next().unwrap_or("");
    if authority.is_empty() {
        return Err(invalid("no host"));
    }
    let (host, with_port) = match authority.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() && !host.ends_with(':') => {
            (host, authority.to_string())
        }
        _ => (
            authority,
            format!("{authority}:{}", if https { 443 } else { 80 }),
        ),
    };
    // `[::1]` → `::1` for the certificate's name.
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let addr = with_port
        .to_socket_addrs()
        .map_err(|e| invalid(&e.to_string()))?
        .next()
        .ok_or_else(|| invalid("host did not resolve"))?;
    Ok((https, host, addr))
}

/// Runs a scenario and returns its report. `progress` shows a progress bar on stderr.
pub async fn run(
    scenario: &Scenario,
    common: &Common,
    progress: bool,
) -> Result<Report, BenchError> {
    if common.duration.is_zero() {
        return Err(BenchError::InvalidParameter(
            "duration must be above zero".into(),
        ));
    }
    if common.runs == 0 {
        return Err(BenchError::InvalidParameter(
            "runs must be at least 1".into(),
        ));
    }
    let under = Under::start(&common.target, &common.access).await?;
    let bar = scenarios::Progress::new(progress, scenario, common);
    let mut runs = Vec::with_capacity(common.runs);
    let mut outcome = Ok((Vec::new(), Vec::new()));
    for run in 0..common.runs {
        bar.run(run, common.runs);
        let common = Common {
            ceiling_first: common.ceiling_first != (run % 2 == 1),
            ..common.clone()
        };
        match once(scenario, &under, &common, &bar).await {
            Ok((parameters, rows, notes)) => {
                runs.push(rows);
                outcome = Ok((parameters, notes));
            }
            Err(error) => {
                outcome = Err(error);
                break;
            }
        }
    }
    bar.phase("removing the registers the bench wrote");
    let cleaned = scenarios::clean_up(&under, scenario).await;
    bar.finish();
    let target = under.describe(&common.target);
    let tls = under.peer.is_tls();
    under.stop().await;
    let (mut parameters, mut notes) = outcome?;
    if common.runs > 1 {
        parameters.push(("runs".into(), common.runs.to_string()));
    } else {
        notes.push("one run: pass --runs 3 (or more) to see how much the figures vary".into());
    }
    notes.extend(cleaned);
    if tls {
        notes.push(
            "https: the ceiling is served over plain HTTP, so the ratio includes TLS's cost".into(),
        );
    }
    let rows = report::merge(runs);
    let warnings = report::warnings(&rows);
    Ok(Report {
        scenario: scenario.name().to_string(),
        target,
        machine: Machine::detect(),
        parameters,
        rows,
        notes,
        runs: common.runs,
        warnings,
    })
}

/// One run of `scenario` against `under`.
async fn once(
    scenario: &Scenario,
    under: &Under,
    common: &Common,
    bar: &scenarios::Progress,
) -> Result<(Vec<(String, String)>, Vec<Row>, Vec<String>), BenchError> {
    match scenario {
        Scenario::Fleet(options) => scenarios::fleet(under, common, options, bar).await,
        Scenario::Read(options) => scenarios::read(under, common, options, bar).await,
        Scenario::Write(options) => scenarios::write(under, common, options, bar).await,
        Scenario::Fanout(options) => scenarios::fanout(under, common, options, bar).await,
        Scenario::Commands(options) => scenarios::commands(under, common, options, bar).await,
        Scenario::Discovery(options) => discovery::discovery(under, common, options, bar).await,
        Scenario::Ceiling(options) => scenarios::ceiling(common, options, bar).await,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn urls_resolve_or_say_why_not() {
        let addr = |url| resolve(url).map(|(_, _, addr)| addr).unwrap();
        assert_eq!(
            addr("http://127.0.0.1:8080"),
            "127.0.0.1:8080".parse().unwrap()
        );
        assert_eq!(addr("http://127.0.0.1/"), "127.0.0.1:80".parse().unwrap());
        assert_eq!(addr("https://127.0.0.1/"), "127.0.0.1:443".parse().unwrap());
        let (https, host, _) = resolve("https://localhost:8443").unwrap();
        assert!(https);
        assert_eq!(host, "localhost");
        assert!(matches!(
            resolve("ftp://x:1"),
            Err(BenchError::InvalidUrl { .. })
        ));
        assert!(matches!(
            resolve("http://"),
            Err(BenchError::InvalidUrl { .. })
        ));
    }

    #[test]
    fn reads_unlabelled_metrics() {
        let text = "# HELP x\nreg_parked_consumer_polls 12\nreg_parked_provider_polls{a=\"b\"} 3\n";
        assert_eq!(metric(text, "reg_parked_consumer_polls"), Some(12.0));
        assert_eq!(metric(text, "reg_parked_provider_polls"), None);
    }
}
