//! The scenarios. Each returns (parameters, rows, notes) for the report.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::time::Instant;

use crate::bench::ceiling::Ceiling;
use crate::bench::http::{request, source_ip, Conn, Peer, Response};
use crate::bench::load::{self, histogram, record, Load, LoadResult};
use crate::bench::report::{Latency, Row, Timeline};
use crate::bench::{BenchError, Common, Scenario, Under};
use crate::json::{parse_tree, Node};

pub(crate) type Outcome = Result<(Vec<(String, String)>, Vec<Row>, Vec<String>), BenchError>;

/// A spinner with the current phase on stderr (hidden when not asked for).
#[derive(Debug)]
pub(crate) struct Progress {
    bar: ProgressBar,
}

impl Progress {
    pub(crate) fn new(enabled: bool, scenario: &Scenario, _common: &Common) -> Progress {
        let bar = if enabled {
            ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
        } else {
            ProgressBar::hidden()
        };
        if let Ok(style) =
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {prefix}: {msg}")
        {
            bar.set_style(style);
        }
        bar.set_prefix(format!("reg bench {}", scenario.name()));
        bar.enable_steady_tick(Duration::from_millis(120));
        Progress { bar }
    }

    pub(crate) fn phase(&self, message: impl Into<String>) {
        self.bar.set_message(message.into());
    }

    /// Run `run` (from 0) of `runs` begins.
    pub(crate) fn run(&self, run: usize, runs: usize) {
        if runs > 1 {
            let prefix = self.bar.prefix();
            let scenario = prefix
                .split(" (run ")
                .next()
                .unwrap_or_default()
                .to_string();
            self.bar
                .set_prefix(format!("{scenario} (run {}/{runs})", run + 1));
        }
    }

    pub(crate) fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// Options of `read`, `write` and `ceiling`.
#[derive(Debug, Clone)]
pub struct ThroughputOptions {
    /// Client connections.
    pub connections: usize,
    /// Target rate in requests/s (open loop); `None`: as fast as answered (closed loop).
    pub rate: Option<f64>,
    /// Distinct registers the requests cycle over.
    pub registers: usize,
    /// Size of each register's value in bytes (a JSON string).
    pub value_bytes: usize,
}

impl Default for ThroughputOptions {
    fn default() -> Self {
        ThroughputOptions {
            connections: 32,
            rate: None,
            registers: 1000,
            value_bytes: 64,
        }
    }
}

/// Options of `fanout`.
#[derive(Debug, Clone)]
pub struct FanoutOptions {
    /// Parked long polls.
    pub polls: usize,
    /// Client connections of the steady PUT load in the different-registers phase.
    pub connections: usize,
    /// A `reg` binary to run the parking ceiling server in a child process
    /// (`reg bench ceiling-server --park`); `None`: in this process. A child is needed when
    /// the polls' client and server sockets together would pass this process's open-file
    /// limit.
    pub ceiling_command: Option<std::path::PathBuf>,
}

impl Default for FanoutOptions {
    fn default() -> Self {
        FanoutOptions {
            // In-process, client and server sockets share this process's open-file limit.
            polls: 5_000,
            connections: 16,
            ceiling_command: None,
        }
    }
}

/// The parking ceiling server, in this process or in a child process.
enum FanCeiling {
    Here(Ceiling),
    Child(std::process::Child, std::net::SocketAddr),
}

impl FanCeiling {
    async fn start(
        command: Option<&std::path::Path>,
        body: Vec<u8>,
    ) -> Result<FanCeiling, BenchError> {
        let Some(command) = command else {
            return Ceiling::start_parking(body)
                .await
                .map(FanCeiling::Here)
                .map_err(BenchError::io("starting the ceiling server"));
        };
        let mut child = std::process::Command::new(command)
            .args(["bench", "ceiling-server", "--park", "--body"])
            .arg(String::from_utf8_lossy(&body).into_owned())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .map_err(BenchError::io(format!("starting {}", command.display())))?;
        let mut line = String::new();
        if let Some(stdout) = child.stdout.take() {
            let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line);
        }
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| BenchError::Protocol(format!("ceiling server said {line:?}")))?;
        Ok(FanCeiling::Child(child, addr))
    }

    fn peer(&self) -> Peer {
        match self {
            FanCeiling::Here(ceiling) => ceiling.peer(),
            FanCeiling::Child(_, addr) => Peer::plain(*addr),
        }
    }

    async fn parked(&self) -> u64 {
        match self {
            FanCeiling::Here(ceiling) => ceiling.parked(),
            FanCeiling::Child(_, addr) => {
                let peer = Peer::plain(*addr);
                let Ok(mut conn) = Conn::connect(&peer, None).await else {
                    return 0;
                };
                let get = request("GET", crate::bench::ceiling::PARKED_PATH, &peer, None);
                match conn.send(&get).await {
                    Ok(response) => String::from_utf8_lossy(&response.body)
                        .trim()
                        .parse()
                        .unwrap_or(0),
                    Err(_) => 0,
                }
            }
        }
    }
}

impl Drop for FanCeiling {
    fn drop(&mut self) {
        if let FanCeiling::Child(child, _) = self {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Options of `commands`.
#[derive(Debug, Clone)]
pub struct CommandsOptions {
    /// Providers, each holding one register and long-polling for its change requests.
    pub providers: usize,
    /// Consumers sending change requests concurrently, each waiting for the round trip.
    pub drivers: usize,
}

impl Default for CommandsOptions {
    fn default() -> Self {
        CommandsOptions {
            providers: 100,
            drivers: 8,
        }
    }
}

/// Options of `fleet`.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// Devices.
    pub devices: usize,
    /// Registers each device provides.
    pub registers_per_device: usize,
    /// Register TTL; devices refresh at TTL/2.
    pub ttl: Duration,
    /// Consumers, each long-polling the readings of devices/consumers devices.
    pub consumers: usize,
    /// Connections the devices' refreshes share.
    pub device_connections: usize,
    /// Fraction of refreshes that change the device's reading (the rest only refresh).
    pub change_ratio: f64,
}

impl Default for FleetOptions {
    fn default() -> Self {
        FleetOptions {
            devices: 20_000,
            registers_per_device: 5,
            ttl: Duration::from_secs(10),
            consumers: 100,
            device_connections: 32,
            change_ratio: 0.1,
        }
    }
}

pub(crate) fn param(name: &str, value: impl ToString) -> (String, String) {
    (name.to_string(), value.to_string())
}

pub(crate) fn common_params(common: &Common) -> Vec<(String, String)> {
    vec![
        param("duration", format!("{}s", common.duration.as_secs_f64())),
        param("warmup", format!("{}s", common.warmup.as_secs_f64())),
    ]
}

/// A JSON string value of exactly `bytes` bytes of payload: `"xxxx…N"`.
fn value_text(bytes: usize, variant: usize) -> String {
    let tag = variant.to_string();
    let fill = bytes.saturating_sub(tag.len());
    format!("\"{}{}\"", "x".repeat(fill), tag)
}

/// `PUT /provider` with the given (name, value JSON) pairs and TTL.
pub(crate) fn put_provider(under: &Peer, registers: &[(String, String)], ttl: &str) -> Vec<u8> {
    let mut body = String::from("{\"registers\":{");
    for (i, (name, value)) in registers.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        let _ = write!(body, "\"{name}\":{{\"value\":{value},\"ttl\":\"{ttl}\"}}");
    }
    body.push_str("}}");
    request("PUT", "/provider", under, Some(body.as_bytes()))
}

pub(crate) async fn connect(under: &Peer, n: usize) -> Result<Conn, BenchError> {
    Conn::connect(under, source_ip(under.addr, n))
        .await
        .map_err(BenchError::io(format!("connecting to {}", under.addr)))
}

pub(crate) async fn expect(
    conn: &mut Conn,
    bytes: &[u8],
    what: &str,
) -> Result<Response, BenchError> {
    let response = conn
        .send(bytes)
        .await
        .map_err(BenchError::io(what.to_string()))?;
    if !(200..300).contains(&response.status) {
        return Err(BenchError::Protocol(format!(
            "{what}: status {} ({})",
            response.status,
            String::from_utf8_lossy(&response.body)
        )));
    }
    Ok(response)
}

/// Creates `names` with `value`, 1,000 per request.
async fn populate(
    under: &Under,
    names: &[String],
    value: &str,
    ttl: &str,
) -> Result<(), BenchError> {
    let mut conn = connect(&under.peer, 0).await?;
    for chunk in names.chunks(1000) {
        let registers: Vec<(String, String)> = chunk
            .iter()
            .map(|n| (n.clone(), value.to_string()))
            .collect();
        expect(
            &mut conn,
            &put_provider(&under.peer, &registers, ttl),
            "populating registers",
        )
        .await?;
    }
    Ok(())
}

/// The order of a run's two measurements: `true` is the ceiling's turn.
fn ceiling_order(common: &Common) -> [bool; 2] {
    [common.ceiling_first, !common.ceiling_first]
}

/// The TTL of the registers a run writes, as a Go duration (see [`Common::ttl`]).
fn ttl(common: &Common) -> String {
    crate::format_go_duration(common.ttl())
}

fn row_from(name: &str, reg: &LoadResult, ceiling: Option<&LoadResult>) -> Row {
    Row {
        throughput: Some(reg.throughput()),
        timeline: Some(Timeline {
            interval_s: reg.interval.as_secs_f64(),
            reg: reg.rates(),
            ceiling: ceiling.map(LoadResult::rates).unwrap_or_default(),
        }),
        latency: Latency::from_histogram(&reg.latency),
        ceiling_throughput: ceiling.map(LoadResult::throughput),
        ceiling_latency: ceiling.and_then(|c| Latency::from_histogram(&c.latency)),
        errors: reg.errors + reg.bad_status,
        ..Row::named(name)
    }
}

fn load_for(peers: &[Peer], common: &Common, connections: usize, rate: Option<f64>) -> Load {
    Load {
        targets: peers.to_vec(),
        connections,
        rate,
        warmup: common.warmup,
        duration: common.duration,
    }
}

async fn run_load(load: &Load, requests: Vec<Vec<u8>>) -> Result<LoadResult, BenchError> {
    load::run(load, Arc::new(requests))
        .await
        .map_err(BenchError::io("running the load"))
}

fn throughput_params(common: &Common, options: &ThroughputOptions) -> Vec<(String, String)> {
    let mut params = common_params(common);
    params.push(param("connections", options.connections));
    params.push(param(
        "rate",
        options
            .rate
            .map_or_else(|| "max (closed loop)".into(), |r| format!("{r}/s")),
    ));
    params.push(param("registers", options.registers));
    params.push(param("value_bytes", options.value_bytes));
    params
}

/// `read`: GET /consumer of one register, cycling over `registers`.
pub(crate) async fn read(
    under: &Under,
    common: &Common,
    options: &ThroughputOptions,
    bar: &Progress,
) -> Outcome {
    let ttl = ttl(common);
    let names: Vec<String> = (0..options.registers.max(1))
        .map(|i| format!("bench.read.{i}"))
        .collect();
    bar.phase("populating");
    populate(under, &names, &value_text(options.value_bytes, 0), &ttl).await?;
    let requests: Vec<Vec<u8>> = names
        .iter()
        .map(|n| request("GET", &format!("/consumer?name={n}"), &under.peer, None))
        .collect();
    let mut sample_conn = connect(&under.peer, 0).await?;
    let sample = expect(&mut sample_conn, &requests[0], "sampling a response").await?;
    drop(sample_conn);

    let ceiling = Ceiling::start(200, sample.body.clone())
        .await
        .map_err(BenchError::io("starting the ceiling server"))?;
    let reg_load = load_for(&under.peers, common, options.connections, options.rate);
    let top_load = load_for(&[ceiling.peer()], common, options.connections, options.rate);
    let mut reg = None;
    let mut top = None;
    for ceiling_turn in ceiling_order(common) {
        if ceiling_turn {
            bar.phase("the same load against the ceiling server");
            top = Some(run_load(&top_load, requests.clone()).await?);
        } else {
            bar.phase("GET /consumer against reg");
            reg = Some(run_load(&reg_load, requests.clone()).await?);
        }
    }
    let (Some(reg), Some(top)) = (reg, top) else {
        return Err(BenchError::Protocol("a load did not run".into()));
    };
    let row = row_from(
        &format!("GET /consumer, 1 name ({} B answer)", sample.body.len()),
        &reg,
        Some(&top),
    );
    Ok((throughput_params(common, options), vec![row], vec![]))
}

/// `write`: PUT /provider of one register per request; each write a change, then each a
/// refresh.
pub(crate) async fn write(
    under: &Under,
    common: &Common,
    options: &ThroughputOptions,
    bar: &Progress,
) -> Outcome {
    let ttl = ttl(common);
    let count = options.registers.max(1);
    // Request j writes register j % count with value variant (j / count) % 2: consecutive
    // writes to one register always differ.
    let changes: Vec<Vec<u8>> = (0..2 * count)
        .map(|j| {
            let name = format!("bench.write.{}", j % count);
            put_provider(
                &under.peer,
                &[(name, value_text(options.value_bytes, (j / count) % 2))],
                &ttl,
            )
        })
        .collect();
    let refresh_names: Vec<String> = (0..count).map(|i| format!("bench.refresh.{i}")).collect();
    let value = value_text(options.value_bytes, 0);
    populate(under, &refresh_names, &value, &ttl).await?;
    let refreshes: Vec<Vec<u8>> = refresh_names
        .iter()
        .map(|n| put_provider(&under.peer, &[(n.clone(), value.clone())], &ttl))
        .collect();

    let load = load_for(&under.peers, common, options.connections, options.rate);
    let ceiling = Ceiling::start(204, Vec::new())
        .await
        .map_err(BenchError::io("starting the ceiling server"))?;
    let top_load = load_for(&[ceiling.peer()], common, options.connections, options.rate);

    let mut reg = None;
    let mut top = None;
    for ceiling_turn in ceiling_order(common) {
        if ceiling_turn {
            bar.phase("the same load against the ceiling server");
            top = Some(run_load(&top_load, changes.clone()).await?);
        } else {
            bar.phase("PUT /provider (every write a change) against reg");
            let changed = run_load(&load, changes.clone()).await?;
            bar.phase("PUT /provider (every write a refresh) against reg");
            reg = Some((changed, run_load(&load, refreshes.clone()).await?));
        }
    }
    let (Some((reg_changes, reg_refreshes)), Some(top)) = (reg, top) else {
        return Err(BenchError::Protocol("a load did not run".into()));
    };
    let rows = vec![
        row_from(
            "PUT /provider, 1 register, a change",
            &reg_changes,
            Some(&top),
        ),
        row_from(
            "PUT /provider, 1 register, a refresh",
            &reg_refreshes,
            Some(&top),
        ),
    ];
    Ok((throughput_params(common, options), rows, vec![]))
}

/// `ceiling`: the bare server alone.
pub(crate) async fn ceiling(
    common: &Common,
    options: &ThroughputOptions,
    bar: &Progress,
) -> Outcome {
    let body = format!(
        "{{\"registers\":{{\"bench.read.0\":{{\"value\":{}}}}}}}",
        value_text(options.value_bytes, 0)
    )
    .into_bytes();
    let server = Ceiling::start(200, body.clone())
        .await
        .map_err(BenchError::io("starting the ceiling server"))?;
    let request = request("GET", "/consumer?name=bench.read.0", &server.peer(), None);
    bar.phase("GET against the bare hyper server");
    let result = run_load(
        &load_for(&[server.peer()], common, options.connections, options.rate),
        vec![request],
    )
    .await?;
    let row = Row {
        ceiling_throughput: Some(result.throughput()),
        ceiling_latency: Latency::from_histogram(&result.latency),
        errors: result.errors + result.bad_status,
        ..Row::named(format!("bare hyper GET ({} B answer)", body.len()))
    };
    Ok((throughput_params(common, options), vec![row], vec![
        "the ceiling scenario measures no reg server: its figures are this machine's HTTP limit".into(),
    ]))
}

/// The register values in a `{"registers":{…}}` answer, as (name, value text).
fn registers_in(body: &[u8]) -> Vec<(String, String)> {
    let Ok(tree) = parse_tree(body) else {
        return Vec::new();
    };
    match tree.get("registers") {
        Some(Node::Object(members)) => members
            .iter()
            .filter_map(|(name, register)| {
                let value = register.get("value")?;
                Some((
                    name.decoded().into_owned(),
                    value.to_json().as_str().to_string(),
                ))
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Waits until the server reports at least `n` parked polls (bounded); returns whether it
/// could tell.
async fn until_parked(under: &Under, n: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match under.parked().await {
            Some(parked) if parked >= n => return true,
            Some(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Some(_) => return true,
            None => {
                // A server without metrics: give the polls a moment to arrive.
                tokio::time::sleep(Duration::from_secs(2)).await;
                return false;
            }
        }
    }
}

/// Opens `n` connections and parks a long poll on each, on `name_of(i)`.
async fn park(
    under: &Under,
    n: usize,
    name_of: impl Fn(usize) -> String,
    index: Option<u64>,
) -> Result<Vec<Conn>, BenchError> {
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        let peer = under.poll_peer(i);
        let mut conn = connect(peer, i + 1).await?;
        let mut path = format!("/consumer?name={}&wait=5m", name_of(i));
        if let Some(index) = index {
            let _ = write!(path, "&index={index}");
        }
        conn.write(&request("GET", &path, peer, None))
            .await
            .map_err(BenchError::io("parking a long poll"))?;
        conns.push(conn);
    }
    Ok(conns)
}

/// Sends `put` on `control` while a reader waits on each parked connection; returns the time
/// from the PUT to each answer, and how many connections failed instead.
async fn release(
    conns: Vec<Conn>,
    control: &mut Conn,
    put: &[u8],
) -> Result<(hdrhistogram::Histogram<u64>, u64), BenchError> {
    let mut readers = Vec::with_capacity(conns.len());
    for mut conn in conns {
        readers.push(tokio::spawn(async move {
            let status = conn.read_response().await.map(|r| r.status).ok();
            (status, Instant::now(), conn)
        }));
    }
    // Let every reader reach its first read before the clock starts.
    tokio::task::yield_now().await;
    let put_at = Instant::now();
    expect(control, put, "the fanout PUT").await?;
    let mut latency = histogram();
    let mut failed = 0;
    let mut kept = Vec::with_capacity(readers.len());
    for reader in readers {
        match reader.await {
            Ok((Some(200), at, conn)) => {
                record(&mut latency, at.saturating_duration_since(put_at));
                kept.push(conn);
            }
            _ => failed += 1,
        }
    }
    Ok((latency, failed))
}

/// `fanout`.
pub(crate) async fn fanout(
    under: &Under,
    common: &Common,
    options: &FanoutOptions,
    bar: &Progress,
) -> Outcome {
    let ttl = ttl(common);
    let n = options.polls.max(1);
    let mut notes = Vec::new();
    let mut control = connect(&under.peer, 0).await?;
    let hot = "bench.fanout.hot".to_string();
    expect(
        &mut control,
        &put_provider(&under.peer, &[(hot.clone(), "0".into())], &ttl),
        "creating the register",
    )
    .await?;
    let read = expect(
        &mut control,
        &request("GET", &format!("/consumer?name={hot}"), &under.peer, None),
        "reading",
    )
    .await?;

    // Phase 1: n polls on one register, answered by one PUT.
    bar.phase(format!("parking {n} long polls on one register"));
    let rss_before = under.rss().await;
    let conns = park(under, n, |_| hot.clone(), read.index).await?;
    if !until_parked(under, n as u64).await {
        notes.push(
            "the server reports no parked-poll gauge: waited 2 s for the polls to park".into(),
        );
    }
    let rss_parked = under.rss().await;
    bar.phase("PUT → every parked poll answered");
    let put = put_provider(&under.peer, &[(hot.clone(), "1".into())], &ttl);
    let (latency, failed) = release(conns, &mut control, &put).await?;

    bar.phase(format!(
        "the same {n} polls against the parking ceiling server"
    ));
    let ceiling = FanCeiling::start(options.ceiling_command.as_deref(), read.body.clone()).await?;
    let mut top_control = connect(&ceiling.peer(), 0).await?;
    let top_under = Under {
        peer: ceiling.peer(),
        peers: vec![ceiling.peer()],
        server: None,
    };
    let top_conns = park(&top_under, n, |_| hot.clone(), None).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while ceiling.parked().await < n as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let top_put = put_provider(&ceiling.peer(), &[(hot.clone(), "1".into())], &ttl);
    let (top_latency, _) = release(top_conns, &mut top_control, &top_put).await?;
    drop(ceiling);

    let mut one = Row {
        latency: Latency::from_histogram(&latency),
        ceiling_latency: Latency::from_histogram(&top_latency),
        errors: failed,
        ..Row::named(format!("{n} polls on one register: PUT → answer"))
    };
    if let (Some(before), Some(parked)) = (rss_before, rss_parked) {
        one = one.figure(
            "memory per parked poll",
            parked.saturating_sub(before) as f64 / n as f64,
            "bytes (RSS delta)",
        );
        if under.server.is_some() {
            notes.push(
                "in-process: the RSS delta per parked poll includes the client side of each \
                 connection; run `reg serve` separately and pass --url for the server alone"
                    .into(),
            );
        }
    }

    // Phase 2: PUT throughput with no parked polls vs. n polls parked on n other registers.
    let load_names: Vec<String> = (0..FANOUT_LOAD_REGISTERS)
        .map(|i| format!("bench.fanout.load.{i}"))
        .collect();
    let changes: Vec<Vec<u8>> = (0..2 * FANOUT_LOAD_REGISTERS)
        .map(|j| {
            put_provider(
                &under.peer,
                &[(
                    load_names[j % FANOUT_LOAD_REGISTERS].clone(),
                    (j / FANOUT_LOAD_REGISTERS).to_string(),
                )],
                &ttl,
            )
        })
        .collect();
    let load = load_for(&under.peers, common, options.connections, None);
    bar.phase("PUT load, no parked polls");
    let alone = run_load(&load, changes.clone()).await?;
    let read = expect(
        &mut control,
        &request("GET", "/consumer?name=bench.fanout.d.0", &under.peer, None),
        "reading",
    )
    .await?;
    bar.phase(format!("parking {n} long polls on {n} different registers"));
    let parked = park(under, n, |i| format!("bench.fanout.d.{i}"), read.index).await?;
    until_parked(under, n as u64).await;
    bar.phase(format!("PUT load, {n} polls parked on other registers"));
    let crowded = run_load(&load, changes).await?;
    drop(parked);
    let ratio = crowded.throughput() / alone.throughput().max(f64::EPSILON);
    let rows = vec![
        one,
        row_from("PUT /provider, no parked polls", &alone, None),
        row_from(
            &format!("PUT /provider, {n} polls parked on {n} other registers"),
            &crowded,
            None,
        )
        .figure("throughput vs. no parked polls", ratio * 100.0, "%"),
    ];
    let mut params = common_params(common);
    params.push(param("polls", n));
    params.push(param("connections", options.connections));
    Ok((params, rows, notes))
}

/// `commands`: consumer PUT /consumer → provider's poll answered → provider applies the value
/// → the consumer's long poll sees it.
pub(crate) async fn commands(
    under: &Under,
    common: &Common,
    options: &CommandsOptions,
    bar: &Progress,
) -> Outcome {
    let ttl = ttl(common);
    let providers = options.providers.max(1);
    let drivers = options.drivers.clamp(1, providers);
    let names: Vec<String> = (0..providers).map(|p| format!("bench.cmd.{p}")).collect();
    populate(under, &names, "0", &ttl).await?;
    let addr = under.peer.clone();
    let stop = Instant::now() + common.warmup + common.duration;

    bar.phase(format!(
        "{providers} providers long-polling for change requests"
    ));
    let mut provider_tasks = Vec::with_capacity(providers);
    for (p, name) in names.iter().cloned().enumerate() {
        let mut poll = connect(&addr, 2 * p + 1).await?;
        let mut apply = connect(&addr, 2 * p + 2).await?;
        let ttl = ttl.clone();
        let addr = addr.clone();
        provider_tasks.push(tokio::spawn(async move {
            let take = request(
                "GET",
                &format!("/provider?name={name}&wait=5s"),
                &addr,
                None,
            );
            while Instant::now() < stop {
                let Ok(response) = poll.send(&take).await else {
                    break;
                };
                for (_, value) in registers_in(&response.body) {
                    let put = put_provider(&addr, &[(name.clone(), value)], &ttl);
                    if apply.send(&put).await.is_err() {
                        return;
                    }
                }
            }
        }));
    }
    until_parked(under, providers as u64).await;

    bar.phase("change requests, each waiting for its round trip");
    let measure_from = Instant::now() + common.warmup;
    let sequence = Arc::new(AtomicU64::new(1));
    let mut driver_tasks = Vec::with_capacity(drivers);
    for d in 0..drivers {
        let mine: Vec<String> = names.iter().skip(d).step_by(drivers).cloned().collect();
        let sequence = Arc::clone(&sequence);
        let mut conn = connect(&addr, 2 * providers + d + 1).await?;
        let addr = addr.clone();
        driver_tasks.push(tokio::spawn(async move {
            let mut latency = histogram();
            let mut done = 0u64;
            let mut errors = 0u64;
            let mut k = 0usize;
            while Instant::now() < stop {
                let Some(name) = mine.get(k % mine.len().max(1)) else {
                    break;
                };
                k += 1;
                let seq = sequence.fetch_add(1, Ordering::Relaxed);
                let Ok(read) = conn
                    .send(&request(
                        "GET",
                        &format!("/consumer?name={name}"),
                        &addr,
                        None,
                    ))
                    .await
                else {
                    errors += 1;
                    break;
                };
                let started = Instant::now();
                let body = format!("{{\"registers\":{{\"{name}\":{{\"value\":{seq}}}}}}}");
                if conn
                    .send(&request("PUT", "/consumer", &addr, Some(body.as_bytes())))
                    .await
                    .is_err()
                {
                    errors += 1;
                    break;
                }
                let mut index = read.index;
                // Some(true): confirmed; Some(false): failed; None: the run ended first (a
                // round trip still in flight at the end is neither a success nor an error).
                let confirmed = loop {
                    let mut path = format!("/consumer?name={name}&wait=5s");
                    if let Some(i) = index {
                        let _ = write!(path, "&index={i}");
                    }
                    let Ok(answer) = conn.send(&request("GET", &path, &addr, None)).await else {
                        break Some(false);
                    };
                    index = answer.index;
                    let want = seq.to_string();
                    if registers_in(&answer.body).iter().any(|(_, v)| *v == want) {
                        break Some(true);
                    }
                    if Instant::now() >= stop {
                        break None;
                    }
                };
                match confirmed {
                    Some(true) if started >= measure_from => {
                        record(&mut latency, started.elapsed());
                        done += 1;
                    }
                    Some(false) => errors += 1,
                    _ => {}
                }
            }
            (latency, done, errors)
        }));
    }
    let mut latency = histogram();
    let mut done = 0;
    let mut errors = 0;
    for task in driver_tasks {
        if let Ok((h, d, e)) = task.await {
            let _ = latency.add(&h);
            done += d;
            errors += e;
        }
    }
    for task in provider_tasks {
        task.abort();
    }
    let row = Row {
        throughput: Some(done as f64 / common.duration.as_secs_f64()),
        latency: Latency::from_histogram(&latency),
        errors,
        ..Row::named("change request round trip (3 HTTP exchanges + 2 long polls)")
    };
    let mut params = common_params(common);
    params.push(param("providers", providers));
    params.push(param("drivers", drivers));
    Ok((params, vec![row], vec![]))
}

/// `fleet`.
pub(crate) async fn fleet(
    under: &Under,
    common: &Common,
    options: &FleetOptions,
    bar: &Progress,
) -> Outcome {
    let devices = options.devices.max(1);
    let per_device = options.registers_per_device.max(1);
    let consumers = options.consumers.clamp(1, devices);
    let half_ttl = (options.ttl / 2).max(Duration::from_millis(1));
    let ttl = crate::format_go_duration(options.ttl);
    let rate = devices as f64 / half_ttl.as_secs_f64();
    let change_every = if options.change_ratio > 0.0 {
        (1.0 / options.change_ratio.min(1.0)).round().max(1.0) as u64
    } else {
        u64::MAX
    };
    let addr = under.peer.clone();
    let origin = Instant::now();
    // Warm up over one full refresh cycle, so every register exists before measuring.
    let warmup = common.warmup.max(half_ttl);
    let measure_from = origin + warmup;
    let stop = measure_from + common.duration;
    let now_us = move || u64::try_from(origin.elapsed().as_micros()).unwrap_or(u64::MAX);

    bar.phase(format!(
        "{devices} devices × {per_device} registers, refresh every {}",
        crate::format_go_duration(half_ttl)
    ));
    let readings: Arc<Vec<AtomicU64>> = Arc::new((0..devices).map(|_| AtomicU64::new(0)).collect());
    let tickets = Arc::new(AtomicU64::new(0));
    let mut device_tasks = Vec::new();
    for c in 0..options.device_connections.max(1) {
        let mut conn = connect(&addr, c).await?;
        let tickets = Arc::clone(&tickets);
        let readings = Arc::clone(&readings);
        let ttl = ttl.clone();
        let addr = addr.clone();
        device_tasks.push(tokio::spawn(async move {
            let mut latency = histogram();
            let (mut ok, mut errors) = (0u64, 0u64);
            loop {
                let ticket = tickets.fetch_add(1, Ordering::Relaxed);
                let due = origin + Duration::from_secs_f64(ticket as f64 / rate);
                if due >= stop {
                    break;
                }
                tokio::time::sleep_until(due).await;
                let device = usize::try_from(ticket % devices as u64).unwrap_or(0);
                let round = ticket / devices as u64;
                let reading = &readings[device];
                // Staggered: each device changes every `change_every`-th refresh, devices out
                // of step, so about `change_ratio` of every round's refreshes are changes.
                if (round + device as u64) % change_every == 0 {
                    reading.store(now_us(), Ordering::Relaxed);
                }
                let mut registers: Vec<(String, String)> = (1..per_device)
                    .map(|r| (format!("bench.dev.{device}.{r}"), format!("{{\"n\":{r}}}")))
                    .collect();
                registers.push((
                    format!("bench.dev.{device}.reading"),
                    reading.load(Ordering::Relaxed).to_string(),
                ));
                match conn.send(&put_provider(&addr, &registers, &ttl)).await {
                    Ok(response) if response.status == 204 => {
                        if due >= measure_from {
                            ok += 1;
                            record(&mut latency, due.elapsed());
                        }
                    }
                    _ => errors += 1,
                }
            }
            (latency, ok, errors)
        }));
    }

    bar.phase(format!(
        "{consumers} consumers long-polling device readings"
    ));
    let mut consumer_tasks = Vec::new();
    for c in 0..consumers {
        let names: Vec<String> = (c..devices)
            .step_by(consumers)
            .map(|d| format!("bench.dev.{d}.reading"))
            .collect();
        let mut conn = connect(&addr, options.device_connections + c).await?;
        let addr = addr.clone();
        consumer_tasks.push(tokio::spawn(async move {
            let mut latency = histogram();
            let mut seen: HashMap<String, String> = HashMap::new();
            let query = format!("/consumer?names={}&wait=5s", names.join(","));
            let mut index: Option<u64> = None;
            while Instant::now() < stop {
                let path = match index {
                    Some(i) => format!("{query}&index={i}"),
                    None => query.clone(),
                };
                let Ok(answer) = conn.send(&request("GET", &path, &addr, None)).await else {
                    break;
                };
                let now = now_us();
                let measuring = Instant::now() >= measure_from;
                index = answer.index;
                for (name, value) in registers_in(&answer.body) {
                    if seen.get(&name) == Some(&value) {
                        continue;
                    }
                    if measuring {
                        if let Ok(sent) = value.parse::<u64>() {
                            if sent > 0 {
                                record(
                                    &mut latency,
                                    Duration::from_micros(now.saturating_sub(sent)),
                                );
                            }
                        }
                    }
                    seen.insert(name, value);
                }
            }
            latency
        }));
    }

    // Server memory and state in the middle of the measured window.
    tokio::time::sleep_until(measure_from + common.duration / 2).await;
    let rss = under.rss().await;
    let parked = under.parked().await;

    let mut refresh_latency = histogram();
    let (mut ok, mut errors) = (0, 0);
    for task in device_tasks {
        if let Ok((h, o, e)) = task.await {
            let _ = refresh_latency.add(&h);
            ok += o;
            errors += e;
        }
    }
    let mut update_latency = histogram();
    for task in consumer_tasks {
        if let Ok(h) = task.await {
            let _ = update_latency.add(&h);
        }
    }
    let puts = ok as f64 / common.duration.as_secs_f64();

    bar.phase("the same PUTs, closed loop, against the ceiling server");
    let ceiling = Ceiling::start(204, Vec::new())
        .await
        .map_err(BenchError::io("starting the ceiling server"))?;
    let sample: Vec<(String, String)> = (0..per_device)
        .map(|r| (format!("bench.dev.0.{r}"), "1".into()))
        .collect();
    let top = run_load(
        &Load {
            targets: vec![ceiling.peer()],
            connections: options.device_connections.max(1),
            rate: None,
            warmup: Duration::from_millis(500),
            duration: (common.duration / 4).max(Duration::from_secs(1)),
        },
        vec![put_provider(&ceiling.peer(), &sample, &ttl)],
    )
    .await?;

    let mut refresh = Row {
        throughput: Some(puts),
        ceiling_throughput: Some(top.throughput()),
        latency: Latency::from_histogram(&refresh_latency),
        errors,
        ..Row::named(format!(
            "device PUT /provider ({per_device} registers each)"
        ))
    }
    .figure("offered rate", rate, "PUT/s")
    .figure(
        "registers refreshed",
        puts * per_device as f64,
        "per second",
    );
    if let Some(rss) = rss {
        refresh = refresh.figure("server memory (RSS)", rss as f64 / (1 << 20) as f64, "MiB");
    }
    if let Some(parked) = parked {
        refresh = refresh.figure("parked long polls", parked as f64, "");
    }
    let update = Row {
        latency: Latency::from_histogram(&update_latency),
        ..Row::named("reading changed → consumer's long poll answered")
    };
    let mut params = common_params(common);
    params.push(param("devices", devices));
    params.push(param("registers_per_device", per_device));
    params.push(param("ttl", &ttl));
    params.push(param("consumers", consumers));
    params.push(param("device_connections", options.device_connections));
    params.push(param("change_ratio", options.change_ratio));
    let mut notes = vec![format!(
        "the ceiling here is the closed-loop limit for the same PUTs; the fleet runs open loop at \
         {rate:.0} PUT/s, so `ratio` is the share of this machine's HTTP capacity the fleet uses"
    )];
    if under.server.is_some() {
        notes.push("in-process: server memory includes the load generator".into());
    }
    Ok((params, vec![refresh, update], notes))
}

/// Registers the fanout scenario's PUT load cycles over.
const FANOUT_LOAD_REGISTERS: usize = 1000;

/// Every name a run of `scenario` writes: the formats the scenarios above use, all under
/// `bench.`.
fn written(scenario: &Scenario) -> Vec<String> {
    let numbered = |prefix: &'static str, n: usize| (0..n).map(move |i| format!("{prefix}.{i}"));
    match scenario {
        Scenario::Read(o) => numbered("bench.read", o.registers.max(1)).collect(),
        Scenario::Write(o) => numbered("bench.write", o.registers.max(1))
            .chain(numbered("bench.refresh", o.registers.max(1)))
            .collect(),
        Scenario::Fanout(_) => std::iter::once("bench.fanout.hot".to_string())
            .chain(numbered("bench.fanout.load", FANOUT_LOAD_REGISTERS))
            .collect(),
        Scenario::Commands(o) => numbered("bench.cmd", o.providers.max(1)).collect(),
        Scenario::Fleet(o) => (0..o.devices.max(1))
            .flat_map(|d| {
                (1..o.registers_per_device.max(1))
                    .map(move |r| format!("bench.dev.{d}.{r}"))
                    .chain(std::iter::once(format!("bench.dev.{d}.reading")))
            })
            .collect(),
        Scenario::Discovery(o) => crate::bench::discovery::written(o),
        Scenario::Ceiling(_) => Vec::new(),
    }
}

/// A `DELETE /provider` target holds at most this many bytes of names (well inside reg's
/// 60 KiB target limit, and Go's and most proxies' 8 KiB-plus heads) …
const DELETE_TARGET_BYTES: usize = 6 * 1024;
/// … and at most this many names (reg's `--max-names` default is 10,000).
const DELETE_NAMES: usize = 1000;

/// Deletes what a run of `scenario` wrote on a server at a URL (an in-process server goes
/// away with the run). Returns notes for the report: nothing when every batch was deleted.
pub(crate) async fn clean_up(under: &Under, scenario: &Scenario) -> Vec<String> {
    if under.server.is_some() {
        return Vec::new();
    }
    let names = written(scenario);
    if names.is_empty() {
        return Vec::new();
    }
    let left = |why: String| {
        vec![format!(
            "{why}: the {} registers this run wrote (named bench.*) expire by themselves within \
             their TTL",
            names.len()
        )]
    };
    let mut conn = match connect(&under.peer, 0).await {
        Ok(conn) => conn,
        Err(error) => return left(format!("cannot delete what the bench wrote ({error})")),
    };
    let mut batch = String::new();
    let mut in_batch = 0;
    for (i, name) in names.iter().enumerate() {
        if !batch.is_empty() {
            batch.push(',');
        }
        batch.push_str(name);
        in_batch += 1;
        let next_fits = names
            .get(i + 1)
            .is_some_and(|n| batch.len() + 1 + n.len() <= DELETE_TARGET_BYTES);
        if next_fits && in_batch < DELETE_NAMES {
            continue;
        }
        let target = format!("/provider?names={batch}");
        match conn
            .send(&request("DELETE", &target, &under.peer, None))
            .await
        {
            Ok(response) if (200..300).contains(&response.status) => {}
            Ok(response) if matches!(response.status, 404 | 405) => {
                return left(format!(
                    "the server has no DELETE /provider (status {})",
                    response.status
                ));
            }
            Ok(response) => {
                return left(format!(
                    "deleting what the bench wrote failed: status {} ({})",
                    response.status,
                    String::from_utf8_lossy(&response.body)
                ));
            }
            Err(error) => return left(format!("deleting what the bench wrote failed ({error})")),
        }
        batch.clear();
        in_batch = 0;
    }
    Vec::new()
}
