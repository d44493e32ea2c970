//! `reg serve`: the REST server, in memory or persistent (`--data-dir`), with a flag for every
//! limit.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use reg::persist::{Persist, SyncPolicy};
use reg::server::{self, Server, ServerConfig};
use reg::Registry;
use tracing_subscriber::EnvFilter;

/// Serve reg's REST API.
#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on: `host:port`, `ip:port`, or `:port` for every interface.
    #[arg(
        long,
        short = 'r',
        visible_alias = "rest",
        default_value = ":8080",
        env = "REG_ADDR"
    )]
    addr: String,

    /// Largest request body in bytes (larger: 413).
    #[arg(long, env = "REG_MAX_BODY_BYTES", default_value_t = server::DEFAULT_MAX_BODY_BYTES)]
    max_body_bytes: usize,

    /// Most names in one request (more: 400).
    #[arg(long, env = "REG_MAX_NAMES", default_value_t = server::DEFAULT_MAX_NAMES)]
    max_names: usize,

    /// Longest register name in bytes (longer: 400).
    #[arg(long, env = "REG_MAX_NAME_LEN", default_value_t = server::DEFAULT_MAX_NAME_LEN)]
    max_name_len: usize,

    /// Longest long poll; a longer `wait` is clamped to it (Go duration).
    #[arg(long, env = "REG_MAX_WAIT", default_value = "10m", value_parser = parse_duration)]
    max_wait: Duration,

    /// Most connections served at once; more wait in the listen backlog.
    #[arg(long, env = "REG_MAX_CONNECTIONS", default_value_t = server::DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,

    /// Most connections from one IP address (more: 503 and closed). Default: a quarter of
    /// --max-connections.
    #[arg(long, env = "REG_MAX_CONNECTIONS_PER_IP")]
    max_connections_per_ip: Option<usize>,

    /// Longest request target, path and query, in bytes (longer: 414). GET names are bounded
    /// by it; request bodies carry up to --max-names names of any length.
    #[arg(long, env = "REG_MAX_URI_BYTES", default_value_t = server::DEFAULT_MAX_URI_BYTES)]
    max_uri_bytes: usize,

    /// Longest request head, request line and headers, in bytes (longer: 431).
    #[arg(long, env = "REG_MAX_HEAD_BYTES", default_value_t = server::DEFAULT_MAX_HEAD_BYTES)]
    max_head_bytes: usize,

    /// Most /v1/watch streams open at once (more: 503).
    #[arg(long, env = "REG_MAX_WATCH_STREAMS", default_value_t = server::DEFAULT_MAX_WATCH_STREAMS)]
    max_watch_streams: usize,

    /// Listen backlog (connections waiting to be accepted).
    #[arg(long, env = "REG_BACKLOG", default_value_t = server::DEFAULT_BACKLOG)]
    backlog: u32,

    /// Longest time to receive a request head (and body) once it started (Go duration).
    #[arg(long, env = "REG_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    header_read_timeout: Duration,

    /// Close connections idle this long: no request in flight, no bytes (Go duration).
    #[arg(long, env = "REG_IDLE_TIMEOUT", default_value = "1m", value_parser = parse_duration)]
    idle_timeout: Duration,

    /// Longest graceful drain on SIGINT/SIGTERM (Go duration).
    #[arg(long, env = "REG_DRAIN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    drain_timeout: Duration,

    /// Interval between keep-alive comments on /v1/watch streams (Go duration).
    #[arg(long, env = "REG_SSE_KEEP_ALIVE", default_value = "15s", value_parser = parse_duration)]
    sse_keep_alive: Duration,

    /// Most pending change requests (more: 503).
    #[arg(long, env = "REG_MAX_PENDING_REQUESTS", default_value_t = reg::DEFAULT_MAX_PENDING_REQUESTS)]
    max_pending_requests: usize,

    /// Drop a change request no provider took within this long (Go duration).
    #[arg(long, env = "REG_REQUEST_MAX_AGE", default_value = "10m", value_parser = parse_duration)]
    request_max_age: Duration,

    /// Also serve HTTP/2 over cleartext (prior knowledge). Off by default: HTTP/1.1 only costs
    /// less memory per parked long poll.
    #[arg(long, env = "REG_HTTP2")]
    http2: bool,

    /// Do not serve the dashboard at /ui/.
    #[arg(long, env = "REG_NO_UI")]
    no_ui: bool,

    /// Log filter: a level (`info`, `debug`, …) or tracing directives. Default: `RUST_LOG`,
    /// else `info`.
    #[arg(long, env = "REG_LOG_LEVEL")]
    log_level: Option<String>,

    /// Join a reg cluster on these NATS JetStream servers (comma-separated URLs,
    /// `nats://127.0.0.1:4222,…`): every node serves the whole API from its own replica, and
    /// the cluster's log (one JetStream stream) keeps what a lost node had. Not with
    /// --data-dir: the stream is the cluster's durable log.
    #[cfg(feature = "cluster")]
    #[arg(
        long,
        env = "REG_NATS",
        value_name = "URLS",
        value_delimiter = ',',
        conflicts_with = "data_dir"
    )]
    nats: Vec<String>,

    /// With --nats: the cluster's name (nodes with one name share one registry; its stream is
    /// REG_<name>).
    #[cfg(feature = "cluster")]
    #[arg(long, env = "REG_CLUSTER_NAME", default_value = "reg")]
    cluster_name: String,

    /// With --nats: JetStream replicas of the cluster's stream (default: one per URL given, at
    /// most 3).
    #[cfg(feature = "cluster")]
    #[arg(long, env = "REG_CLUSTER_REPLICAS")]
    cluster_replicas: Option<usize>,

    /// With --nats: how often a node passes on the refreshes it took (Go duration); an expiry
    /// can come up to twice this late.
    #[cfg(feature = "cluster")]
    #[arg(long, env = "REG_CLUSTER_TOUCH", default_value = "250ms", value_parser = parse_duration)]
    cluster_touch: Duration,

    /// With --nats: log entries between snapshots of the cluster's state (0: none). A node
    /// starts from the newest snapshot; the stream keeps the entries since the one before.
    #[cfg(feature = "cluster")]
    #[arg(long, env = "REG_CLUSTER_SNAPSHOT_EVERY", default_value_t = 10_000)]
    cluster_snapshot_every: u64,

    /// Persist registers and revisions in this directory (created if missing; one server per
    /// directory). Without it, reg keeps everything in memory and a restart loses it.
    #[arg(long, env = "REG_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// With --data-dir: when a change reaches the disk. `always`: before its write is answered
    /// (concurrent writes share one sync); `batch`: every --sync-interval (a crash loses at
    /// most that); `none`: when the OS decides.
    #[arg(long, env = "REG_SYNC", value_enum, default_value_t = Sync::Batch)]
    sync: Sync,

    /// With --sync batch or none: how often the log is written (and, for batch, synced).
    #[arg(long, env = "REG_SYNC_INTERVAL", default_value = "100ms", value_parser = parse_duration)]
    sync_interval: Duration,

    /// With --data-dir: the least time a restored register has left after a restart (Go
    /// duration). Default: each register's own TTL, so providers have one TTL to refresh in.
    #[arg(long, env = "REG_RESTORE_GRACE", value_parser = parse_duration)]
    restore_grace: Option<Duration>,

    /// With --data-dir: start even if a log file is corrupt in the middle, keeping everything
    /// before the damage and dropping the rest (a torn last record is always dropped).
    #[arg(long, env = "REG_REPAIR")]
    repair: bool,

    /// Serve HTTPS with this certificate chain (PEM, leaf first); needs --tls-key. Reloaded
    /// with the key and client CA on SIGHUP, without dropping connections.
    #[arg(long, env = "REG_TLS_CERT", value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "REG_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,

    /// Require client certificates signed by this CA (PEM) — mTLS. A certificate's CN (or
    /// first SAN) is the caller's identity for `cert = "…"` principals in --auth.
    #[arg(
        long,
        env = "REG_TLS_CLIENT_CA",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    tls_client_ca: Option<PathBuf>,

    /// Principals (bearer tokens, certificate identities) and their rights by register name
    /// (TOML; see the README's Security section), read again on SIGHUP. Without it everyone
    /// may do everything.
    #[arg(long, env = "REG_AUTH", value_name = "FILE")]
    auth: Option<PathBuf>,

    /// Write every change, change request, take and refused request to this file, one JSON
    /// line each.
    #[arg(long, env = "REG_AUDIT_LOG", value_name = "FILE")]
    audit_log: Option<PathBuf>,

    /// Rotate the audit log when it passes this size (bytes; K, M, G suffixes).
    #[arg(long, env = "REG_AUDIT_MAX_SIZE", default_value = "100M", value_parser = parse_size)]
    audit_max_size: u64,

    /// Rotated audit logs kept (FILE.1 … FILE.N).
    #[arg(long, env = "REG_AUDIT_KEEP", default_value_t = server::audit::DEFAULT_KEEP)]
    audit_keep: usize,
}

/// A size flag: bytes, or with a K, M or G suffix (powers of 1024).
fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (number, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((at, _)) => text.split_at(at),
        None => (text, ""),
    };
    let scale: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        _ => {
            return Err(format!(
                "invalid size {text:?}: use bytes or a K, M or G suffix"
            ))
        }
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("invalid size {text:?}: use bytes or a K, M or G suffix"))
}

/// A write past the process's file-size limit (`ulimit -f`) raises SIGXFSZ, whose default is
/// to kill the process. With a handler installed the write fails with EFBIG instead, and the
/// log reports it like a full disk: writes are refused (503) until it can write again.
fn survive_file_size_limit() -> anyhow::Result<()> {
    /// SIGXFSZ on Linux.
    const SIGXFSZ: i32 = 25;
    let signal = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(SIGXFSZ))
        .context("cannot handle SIGXFSZ")?;
    // The handler stays installed for the life of the process; nothing needs to read it.
    drop(signal);
    Ok(())
}

/// `--sync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Sync {
    Always,
    Batch,
    None,
}

/// A Go duration flag (`10s`, `1m30s`); negative is refused.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let nanos = reg::parse_go_duration(text).map_err(|e| e.to_string())?;
    u64::try_from(nanos)
        .map(Duration::from_nanos)
        .map_err(|_| format!("duration must not be negative: {text:?}"))
}

fn init_logging(level: Option<&str>) -> anyhow::Result<()> {
    let filter = match level {
        Some(level) => {
            EnvFilter::try_new(level).with_context(|| format!("invalid --log-level {level:?}"))?
        }
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))
}

/// File descriptors the server needs beside its connections: the listener, the runtime's
/// event fds, logging, a margin.
const SPARE_FILES: u64 = 64;

/// Warns, as nginx does, when the process's open-file limit is below what `--max-connections`
/// needs: past the limit accepts fail (EMFILE) and are retried after a pause, so connections
/// wait instead of being served. (Linux: read from /proc/self/limits; elsewhere nothing.)
fn warn_if_few_files(max_connections: usize) {
    let Some(limit) = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| open_file_limit(&limits))
    else {
        return;
    };
    let needed = max_connections as u64 + SPARE_FILES;
    if limit < needed {
        tracing::warn!(
            "the open-file limit is {limit}, below the {needed} that --max-connections \
             {max_connections} needs: beyond about {} connections accepts fail and wait; \
             raise it (`ulimit -n {needed}`, systemd `LimitNOFILE={needed}`) or lower \
             --max-connections",
            limit.saturating_sub(SPARE_FILES)
        );
    }
}

/// The soft limit from /proc/self/limits' `Max open files  <soft>  <hard>  files` line.
fn open_file_limit(limits: &str) -> Option<u64> {
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    let soft = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .next()?;
    if soft == "unlimited" {
        return Some(u64::MAX);
    }
    soft.parse().ok()
}

pub(crate) fn run(args: ServeArgs) -> anyhow::Result<()> {
    init_logging(args.log_level.as_deref())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(serve(args))
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let builder = Registry::builder()
        .max_name_len(args.max_name_len)
        .max_pending_requests(args.max_pending_requests)
        .request_max_age(args.request_max_age);
    if args.sync_interval.is_zero() {
        anyhow::bail!("--sync-interval must be above zero");
    }
    if args.data_dir.is_some() {
        survive_file_size_limit()?;
    }
    let registry = match &args.data_dir {
        None => builder.build(),
        Some(dir) => {
            let policy = match args.sync {
                Sync::Always => SyncPolicy::Always,
                Sync::Batch => SyncPolicy::Batch(args.sync_interval),
                Sync::None => SyncPolicy::None(args.sync_interval),
            };
            let mut persist = Persist::new(dir).sync(policy).repair(args.repair);
            if let Some(grace) = args.restore_grace {
                persist = persist.restore_grace(grace);
            }
            tokio::task::block_in_place(|| builder.open(persist))?
        }
    };
    #[cfg(feature = "cluster")]
    let cluster = if args.nats.is_empty() {
        None
    } else {
        let mut config = reg::cluster::ClusterConfig::new(args.nats.clone(), &args.cluster_name)
            .touch_interval(args.cluster_touch)
            .snapshot_every(args.cluster_snapshot_every);
        if let Some(replicas) = args.cluster_replicas {
            config = config.replicas(replicas);
        }
        // Serves at once; `/healthz` answers 503 until the node has caught up.
        Some(std::sync::Arc::new(
            reg::cluster::join(&registry, config)
                .await
                .context("cannot join the cluster")?,
        ))
    };
    let config = ServerConfig {
        max_body_bytes: args.max_body_bytes,
        max_names: args.max_names,
        max_name_len: args.max_name_len,
        max_wait: args.max_wait,
        max_connections: args.max_connections,
        max_connections_per_ip: args.max_connections_per_ip,
        max_uri_bytes: args.max_uri_bytes,
        max_head_bytes: args.max_head_bytes,
        max_watch_streams: args.max_watch_streams,
        backlog: args.backlog,
        header_read_timeout: args.header_read_timeout,
        idle_timeout: args.idle_timeout,
        drain_timeout: args.drain_timeout,
        sse_keep_alive: args.sse_keep_alive,
        http2: args.http2,
        ui: !args.no_ui,
        ..ServerConfig::default()
    };

    let mut builder = Server::builder().registry(registry).config(config);
    let open = args.auth.is_none();
    if let Some(path) = &args.auth {
        let auth = server::auth::Auth::load(path)?;
        if auth.has_cert_principals() && args.tls_client_ca.is_none() {
            tracing::warn!(
                "{} names principals by certificate (cert = …) but there is no \
                 --tls-client-ca: no client presents a certificate, so they can never call",
                path.display()
            );
        }
        tracing::info!(principals = auth.principals(), file = %path.display(), "access rules loaded");
        builder = builder.auth(auth);
    }
    let audit = match &args.audit_log {
        Some(path) => {
            let audit = server::audit::AuditLog::open(path, args.audit_max_size, args.audit_keep)
                .with_context(|| format!("cannot open the audit log {}", path.display()))?;
            builder = builder.audit(std::sync::Arc::clone(&audit));
            Some(audit)
        }
        None => None,
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let tls = server::tls::Tls::load(server::tls::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: args.tls_client_ca.clone(),
            })?;
            builder = builder.tls(std::sync::Arc::clone(&tls));
            Some(tls)
        }
        _ => None,
    };
    let server = builder.bind(&args.addr).await?;
    let exposed = !server.local_addr().ip().is_loopback();
    if open && exposed {
        tracing::warn!(
            addr = %server.local_addr(),
            "no --auth: anyone who can reach this address can read, change and delete every \
             register and take every change request; bind to 127.0.0.1 or give --auth"
        );
    } else if !open && exposed && args.tls_cert.is_none() {
        tracing::warn!(
            addr = %server.local_addr(),
            "--auth without TLS: bearer tokens cross the network in clear text; give \
             --tls-cert and --tls-key"
        );
    }
    if tls.is_some() || args.auth.is_some() {
        reload_on_hangup(tls, args.auth.clone(), server.shutdown_handle())?;
    }

    // Signal handlers go in before the address is announced: a supervisor that read the
    // announcement may signal at once.
    let signals = Signals::new().context("cannot install signal handlers")?;
    let handle = server.shutdown_handle();
    tokio::spawn(async move {
        let mut signals = signals;
        let name = signals.next().await;
        tracing::info!(signal = name, "shutting down");
        handle.shutdown();
        let name = signals.next().await;
        eprintln!("reg: second {name}: exiting without draining");
        std::process::exit(1);
    });

    // A node that can no longer follow the cluster's log stops serving, so its supervisor
    // restarts it (from the newest snapshot).
    #[cfg(feature = "cluster")]
    let behind = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    #[cfg(feature = "cluster")]
    if let Some(cluster) = &cluster {
        let (cluster, behind, handle) = (
            std::sync::Arc::clone(cluster),
            std::sync::Arc::clone(&behind),
            server.shutdown_handle(),
        );
        tokio::spawn(async move {
            cluster.stopped().await;
            behind.store(true, std::sync::atomic::Ordering::SeqCst);
            handle.shutdown();
        });
    }

    warn_if_few_files(args.max_connections);
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on {}", server.local_addr())?;
    stdout.flush()?;
    drop(stdout);

    server.wait().await?;
    if let Some(audit) = audit {
        // Blocks until the writer thread caught up: off the runtime's workers.
        let _ = tokio::task::spawn_blocking(move || audit.flush()).await;
    }
    #[cfg(feature = "cluster")]
    if behind.load(std::sync::atomic::Ordering::SeqCst) {
        let error = cluster
            .and_then(|cluster| cluster.status().error)
            .unwrap_or_default();
        anyhow::bail!("this node stopped following the cluster's log: {error}");
    }
    Ok(())
}

/// On SIGHUP (as nginx does) reads the TLS certificate, key and client CA and the `--auth`
/// file again; a reload that fails keeps serving with what was in force and says why.
fn reload_on_hangup(
    tls: Option<std::sync::Arc<server::tls::Tls>>,
    auth: Option<PathBuf>,
    server: server::ShutdownHandle,
) -> anyhow::Result<()> {
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("cannot handle SIGHUP")?;
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            if let Some(tls) = &tls {
                match tls.reload() {
                    Ok(()) => tracing::info!("SIGHUP: TLS certificates reloaded"),
                    Err(error) => tracing::error!(
                        %error,
                        "SIGHUP: TLS reload failed; keeping the old certificates"
                    ),
                }
            }
            if let Some(path) = &auth {
                match server::auth::Auth::load(path) {
                    Ok(rules) => {
                        tracing::info!(principals = rules.principals(), file = %path.display(), "SIGHUP: access rules reloaded");
                        server.set_auth(rules);
                    }
                    Err(error) => tracing::error!(
                        %error,
                        "SIGHUP: the --auth file was not reloaded; keeping the old rules"
                    ),
                }
            }
        }
    });
    Ok(())
}

/// SIGINT and SIGTERM (SIGINT only where there is no SIGTERM).
struct Signals {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        Ok(Self {
            #[cfg(unix)]
            terminate: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?,
        })
    }

    /// Waits for the next signal; returns its name.
    async fn next(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => "SIGINT",
                _ = self.terminate.recv() => "SIGTERM",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "SIGINT"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{open_file_limit, parse_size};

    #[test]
    fn sizes() {
        assert_eq!(parse_size("100"), Ok(100));
        assert_eq!(parse_size("4K"), Ok(4096));
        assert_eq!(parse_size("100M"), Ok(100 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert!(parse_size("0").is_err());
        assert!(parse_size("12X").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn reads_the_soft_open_file_limit() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max cpu time              unlimited            unlimited            seconds\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(open_file_limit(limits), Some(1024));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(open_file_limit(unlimited), Some(u64::MAX));
        assert_eq!(open_file_limit("nothing here"), None);
    }
}
