//! `reg serve`: the REST server, in memory, with a flag for every limit.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::Context;
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
    #[arg(long, default_value_t = server::DEFAULT_MAX_BODY_BYTES)]
    max_body_bytes: usize,

    /// Most names in one request (more: 400).
    #[arg(long, default_value_t = server::DEFAULT_MAX_NAMES)]
    max_names: usize,

    /// Longest register name in bytes (longer: 400).
    #[arg(long, default_value_t = server::DEFAULT_MAX_NAME_LEN)]
    max_name_len: usize,

    /// Longest long poll; a longer `wait` is clamped to it (Go duration).
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    max_wait: Duration,

    /// Most connections served at once; more wait in the listen backlog.
    #[arg(long, default_value_t = server::DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,

    /// Most connections from one IP address (more: 503 and closed). Default: a quarter of
    /// --max-connections.
    #[arg(long)]
    max_connections_per_ip: Option<usize>,

    /// Longest request target, path and query, in bytes (longer: 414). GET names are bounded
    /// by it; request bodies carry up to --max-names names of any length.
    #[arg(long, default_value_t = server::DEFAULT_MAX_URI_BYTES)]
    max_uri_bytes: usize,

    /// Longest request head, request line and headers, in bytes (longer: 431).
    #[arg(long, default_value_t = server::DEFAULT_MAX_HEAD_BYTES)]
    max_head_bytes: usize,

    /// Most /v1/watch streams open at once (more: 503).
    #[arg(long, default_value_t = server::DEFAULT_MAX_WATCH_STREAMS)]
    max_watch_streams: usize,

    /// Listen backlog (connections waiting to be accepted).
    #[arg(long, default_value_t = server::DEFAULT_BACKLOG)]
    backlog: u32,

    /// Longest time to receive a request head (and body) once it started (Go duration).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    header_read_timeout: Duration,

    /// Close connections idle this long: no request in flight, no bytes (Go duration).
    #[arg(long, default_value = "1m", value_parser = parse_duration)]
    idle_timeout: Duration,

    /// Longest graceful drain on SIGINT/SIGTERM (Go duration).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    drain_timeout: Duration,

    /// Interval between keep-alive comments on /v1/watch streams (Go duration).
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    sse_keep_alive: Duration,

    /// Most pending change requests (more: 503).
    #[arg(long, default_value_t = reg::DEFAULT_MAX_PENDING_REQUESTS)]
    max_pending_requests: usize,

    /// Drop a change request no provider took within this long (Go duration).
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    request_max_age: Duration,

    /// Also serve HTTP/2 over cleartext (prior knowledge). Off by default: HTTP/1.1 only costs
    /// less memory per parked long poll.
    #[arg(long)]
    http2: bool,

    /// Log filter: a level (`info`, `debug`, …) or tracing directives. Default: `RUST_LOG`,
    /// else `info`.
    #[arg(long, env = "REG_LOG_LEVEL")]
    log_level: Option<String>,
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

pub(crate) fn run(args: ServeArgs) -> anyhow::Result<()> {
    init_logging(args.log_level.as_deref())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(serve(args))
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let registry = Registry::builder()
        .max_name_len(args.max_name_len)
        .max_pending_requests(args.max_pending_requests)
        .request_max_age(args.request_max_age)
        .build();
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
        ..ServerConfig::default()
    };

    let server = Server::builder()
        .registry(registry)
        .config(config)
        .bind(&args.addr)
        .await?;

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

    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on {}", server.local_addr())?;
    stdout.flush()?;
    drop(stdout);

    server.wait().await?;
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
