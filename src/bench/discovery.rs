//! `reg bench discovery`: I instances over S services with W watching clients.
//!
//! * **register → watcher**: each change to an instance (a status or version flip, a `PUT
//!   /provider` of its register) against the time every watcher of its service answers —
//!   watchers block on `GET /v1/services/<service>?index=…&wait=5m`, W/S per service.
//!   Beside it, in the same run, the **baseline**: the same watchers, the same changes, as
//!   plain register long polls (`GET /consumer?names=<the service's instance registers>`).
//! * **pick()**: `Pick::default()` (round robin over passing instances) and a filtered pick
//!   on a service's cached instances, in ns, beside a plain `slice[i % n]` clone in the same
//!   loop.
//! * **memory**: the server's RSS delta per instance, beside the delta per plain register
//!   holding the same value (the catalog's cost).
//!
//! Writes `svc/bench.s<S>/i<I>` and `bench.disc.<I>` registers (deleted at the end against a
//! URL, see [`written`]).

use std::fmt::Write as _;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::bench::http::{request, Conn};
use crate::bench::load::{histogram, record};
use crate::bench::report::{Latency, Row};
use crate::bench::scenarios::{
    common_params, connect, expect, param, put_provider, Outcome, Progress,
};
use crate::bench::{BenchError, Common, Under};
use crate::discovery::{Candidates, Instance, InstanceEntry, Pick};

/// Options of `discovery`.
#[derive(Debug, Clone)]
pub struct DiscoveryOptions {
    /// Instances, spread evenly over the services.
    pub instances: usize,
    /// Services.
    pub services: usize,
    /// Watching clients, spread evenly over the services (one connection each).
    pub watchers: usize,
    /// Changes measured (each wakes the watchers of one service).
    pub changes: usize,
}

impl Default for DiscoveryOptions {
    fn default() -> Self {
        DiscoveryOptions {
            instances: 10_000,
            services: 100,
            watchers: 1_000,
            changes: 200,
        }
    }
}

/// Picks timed per measurement.
const PICKS: u32 = 1_000_000;

fn service_name(s: usize) -> String {
    format!("bench.s{s:03}")
}

fn instance_register(options: &DiscoveryOptions, i: usize) -> String {
    format!("svc/{}/i{i:05}", service_name(i % options.services.max(1)))
}

fn plain_register(i: usize) -> String {
    format!("bench.disc.{i}")
}

/// The registers a run writes.
pub(crate) fn written(options: &DiscoveryOptions) -> Vec<String> {
    (0..options.instances.max(1))
        .map(|i| instance_register(options, i))
        .chain((0..options.instances.max(1)).map(plain_register))
        .collect()
}

fn instance_value(i: usize, version: usize) -> String {
    format!(
        r#"{{"address":"10.{}.{}.{}","port":8080,"version":"{version}","tags":["bench","t{}"],"status":"passing"}}"#,
        (i >> 16) & 0xff,
        (i >> 8) & 0xff,
        i & 0xff,
        i % 4
    )
}

/// Writes registers 1,000 per request.
async fn write_all(
    conn: &mut Conn,
    under: &Under,
    registers: &[(String, String)],
    ttl: &str,
) -> Result<(), BenchError> {
    for chunk in registers.chunks(1000) {
        expect(
            conn,
            &put_provider(&under.peer, chunk, ttl),
            "writing registers",
        )
        .await?;
    }
    Ok(())
}

/// Discovery waits parked on the server, if it tells.
async fn service_polls(under: &Under) -> Option<u64> {
    if let Some(server) = &under.server {
        return Some(crate::discovery::Discovery::new(server.registry()).parked() as u64);
    }
    let mut conn = Conn::connect(&under.peer, None).await.ok()?;
    let response = conn
        .send(&request("GET", "/metrics", &under.peer, None))
        .await
        .ok()?;
    let text = String::from_utf8_lossy(&response.body);
    text.lines()
        .find_map(|l| l.strip_prefix("reg_parked_service_polls "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}

/// Waits until `n` more waits than `base` are parked (by `count`), up to 60 s.
async fn until_parked<F, Fut>(count: F, n: u64) -> bool
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<u64>>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match count().await {
            Some(parked) if parked >= n => return true,
            Some(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Some(_) => return true,
            None => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                return false;
            }
        }
    }
}

/// Where watchers poll: discovery, or the baseline's plain register polls.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Route {
    Discovery,
    Plain,
}

fn poll_path(route: Route, options: &DiscoveryOptions, service: usize, index: u64) -> String {
    match route {
        Route::Discovery => {
            format!(
                "/v1/services/{}?index={index}&wait=5m",
                service_name(service)
            )
        }
        Route::Plain => {
            let mut path = String::from("/consumer?names=");
            let mut first = true;
            for i in (service..options.instances).step_by(options.services.max(1)) {
                if !first {
                    path.push(',');
                }
                first = false;
                path.push_str(&plain_register(i));
            }
            let _ = write!(path, "&index={index}&wait=5m");
            path
        }
    }
}

/// One measurement: watchers parked per service, `changes` changes, each timed to every
/// answer of its service's watchers. Returns the latency histogram and failed answers.
async fn measure(
    under: &Under,
    options: &DiscoveryOptions,
    route: Route,
    ttl: &str,
    round: usize,
) -> Result<(hdrhistogram::Histogram<u64>, u64, bool), BenchError> {
    let services = options.services.max(1);
    let mut control = connect(&under.peer, 0).await?;
    let index_path = match route {
        Route::Discovery => "/v1/services".to_string(),
        Route::Plain => format!("/consumer?name={}", plain_register(0)),
    };
    let first = expect(
        &mut control,
        &request("GET", &index_path, &under.peer, None),
        "reading",
    )
    .await?;
    let mut index = first.index.unwrap_or(0);
    // watchers[s] = the connections watching service s.
    let mut watchers: Vec<Vec<Conn>> = (0..services).map(|_| Vec::new()).collect();
    for w in 0..options.watchers {
        let s = w % services;
        let mut conn = connect(&under.peer, w + 1).await?;
        conn.write(&request(
            "GET",
            &poll_path(route, options, s, index),
            &under.peer,
            None,
        ))
        .await
        .map_err(BenchError::io("parking a watcher"))?;
        watchers[s].push(conn);
    }
    let counted = match route {
        Route::Discovery => until_parked(|| service_polls(under), options.watchers as u64).await,
        Route::Plain => until_parked(|| under.parked(), options.watchers as u64).await,
    };
    let mut latency = histogram();
    let mut failed = 0u64;
    for k in 0..options.changes {
        let s = k % services;
        // The k-th instance of service s (instances are dealt round robin over services).
        let i = s + services * ((k / services) % (options.instances / services).max(1));
        let value = instance_value(i, round * options.changes + k + 1);
        let name = match route {
            Route::Discovery => instance_register(options, i),
            Route::Plain => plain_register(i),
        };
        let conns = std::mem::take(&mut watchers[s]);
        let mut readers = Vec::with_capacity(conns.len());
        for mut conn in conns {
            readers.push(tokio::spawn(async move {
                let answer = conn.read_response().await.ok();
                (answer, Instant::now(), conn)
            }));
        }
        tokio::task::yield_now().await;
        let put_at = Instant::now();
        let put = expect(
            &mut control,
            &put_provider(&under.peer, &[(name, value)], ttl),
            "the change",
        )
        .await?;
        let _ = put;
        for reader in readers {
            match reader.await {
                Ok((Some(answer), at, mut conn)) if answer.status == 200 => {
                    record(&mut latency, at.saturating_duration_since(put_at));
                    index = index.max(answer.index.unwrap_or(index));
                    let path = poll_path(route, options, s, answer.index.unwrap_or(index));
                    if conn
                        .write(&request("GET", &path, &under.peer, None))
                        .await
                        .is_ok()
                    {
                        watchers[s].push(conn);
                    } else {
                        failed += 1;
                    }
                }
                _ => failed += 1,
            }
        }
    }
    Ok((latency, failed, counted))
}

/// Times `PICKS` picks from a client's cache of `instances`; returns ns per pick.
fn time_picks(instances: &[Arc<InstanceEntry>], pick: Option<&Pick>) -> f64 {
    let candidates = Candidates::new(instances.to_vec());
    let turn = AtomicUsize::new(0);
    let start = std::time::Instant::now();
    let mut found = 0usize;
    for _ in 0..PICKS {
        let chosen = match pick {
            Some(pick) => candidates.pick(pick, &turn).cloned(),
            None => {
                // Ordering: Relaxed, as `Pick` uses.
                let i = turn.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                instances.get(i % instances.len().max(1)).cloned()
            }
        };
        found += usize::from(std::hint::black_box(chosen).is_some());
    }
    std::hint::black_box(found);
    start.elapsed().as_nanos() as f64 / f64::from(PICKS)
}

/// A service's instances as the server lists them.
async fn fetch_instances(
    under: &Under,
    service: &str,
) -> Result<Vec<Arc<InstanceEntry>>, BenchError> {
    let mut conn = connect(&under.peer, 0).await?;
    let response = expect(
        &mut conn,
        &request("GET", &format!("/v1/services/{service}"), &under.peer, None),
        "reading a service",
    )
    .await?;
    let value: serde_json::Value = serde_json::from_slice(&response.body)
        .map_err(|e| BenchError::Protocol(format!("service listing: {e}")))?;
    let list = value["instances"]
        .as_array()
        .ok_or_else(|| BenchError::Protocol("service listing without instances".into()))?;
    list.iter()
        .map(|item| {
            let instance: Instance = serde_json::from_value(item.clone())
                .map_err(|e| BenchError::Protocol(format!("an instance: {e}")))?;
            let revision = item["revision"].as_u64().unwrap_or(0);
            Ok(Arc::new(InstanceEntry::new(instance, revision, revision)))
        })
        .collect()
}

/// `discovery`.
pub(crate) async fn discovery(
    under: &Under,
    common: &Common,
    options: &DiscoveryOptions,
    bar: &Progress,
) -> Outcome {
    if options.services == 0 || options.instances < options.services {
        return Err(BenchError::InvalidParameter(
            "discovery needs at least one service and one instance per service".into(),
        ));
    }
    let ttl = crate::format_go_duration(common.ttl());
    let mut notes = Vec::new();
    let mut control = connect(&under.peer, 0).await?;
    // The catalog attaches on the first discovery request: before the RSS baseline.
    let probe = control
        .send(&request("GET", "/v1/services", &under.peer, None))
        .await
        .map_err(BenchError::io("reading /v1/services"))?;
    if probe.status != 200 {
        return Err(BenchError::Protocol(format!(
            "GET /v1/services answered {}: the server has no discovery routes",
            probe.status
        )));
    }
    // A second run (or a run after one that died) finds its instances there already: writing
    // them again grows nothing, so memory is only measured from a clean start.
    let fresh = !String::from_utf8_lossy(&probe.body).contains(&format!("\"{}\"", service_name(0)));

    bar.phase(format!(
        "registering {} instances over {} services",
        options.instances, options.services
    ));
    let rss_0 = under.rss().await;
    let instances: Vec<(String, String)> = (0..options.instances)
        .map(|i| (instance_register(options, i), instance_value(i, 0)))
        .collect();
    let registered_at = Instant::now();
    write_all(&mut control, under, &instances, &ttl).await?;
    let register_time = registered_at.elapsed();
    let rss_1 = under.rss().await;
    bar.phase(format!(
        "writing {} plain registers (the baseline)",
        options.instances
    ));
    let plain: Vec<(String, String)> = (0..options.instances)
        .map(|i| (plain_register(i), instance_value(i, 0)))
        .collect();
    let plain_at = Instant::now();
    write_all(&mut control, under, &plain, &ttl).await?;
    let plain_time = plain_at.elapsed();
    let rss_2 = under.rss().await;

    // The baseline and discovery alternate which goes first with --runs.
    let order = if common.ceiling_first {
        [Route::Plain, Route::Discovery]
    } else {
        [Route::Discovery, Route::Plain]
    };
    let mut discovery_figures = None;
    let mut plain_figures = None;
    for (round, route) in order.into_iter().enumerate() {
        bar.phase(match route {
            Route::Discovery => format!(
                "{} watchers on /v1/services/<service>: change → every watcher",
                options.watchers
            ),
            Route::Plain => format!(
                "{} watchers on GET /consumer (baseline): change → every watcher",
                options.watchers
            ),
        });
        let measured = measure(under, options, route, &ttl, round).await?;
        if !measured.2 {
            notes.push(
                "the server reports no parked-poll gauges: waited 1 s for the watchers".into(),
            );
        }
        match route {
            Route::Discovery => discovery_figures = Some(measured),
            Route::Plain => plain_figures = Some(measured),
        }
    }
    let (latency, failed, _) =
        discovery_figures.ok_or_else(|| BenchError::Protocol("no run".into()))?;
    let (plain_latency, plain_failed, _) =
        plain_figures.ok_or_else(|| BenchError::Protocol("no run".into()))?;

    bar.phase("pick() on the cached instances");
    let cached = fetch_instances(under, &service_name(0)).await?;
    let baseline_ns = time_picks(&cached, None);
    let default_ns = time_picks(&cached, Some(&Pick::default()));
    // A filter that matches: the tag and host of one of the service's own instances.
    let sample = cached.get(1).or(cached.first());
    let tag = sample
        .and_then(|e| e.instance.tags.iter().find(|t| t.as_str() != "bench"))
        .map_or("t0", String::as_str);
    let host = sample.map_or("", |e| e.instance.host());
    let filtered = Pick::default().tag(tag).prefer_host(host);
    if Candidates::new(cached.clone())
        .pick(&filtered, &AtomicUsize::new(0))
        .is_none()
    {
        return Err(BenchError::Protocol(
            "the filtered pick matched nothing".into(),
        ));
    }
    let filtered_ns = time_picks(&cached, Some(&filtered));

    let ratio = |a: Option<Latency>, b: Option<Latency>, q: fn(&Latency) -> f64| match (a, b) {
        (Some(a), Some(b)) if q(&b) > 0.0 => Some(q(&a) / q(&b)),
        _ => None,
    };
    let discovery_latency = Latency::from_histogram(&latency);
    let plain = Latency::from_histogram(&plain_latency);
    let mut watch = Row {
        latency: discovery_latency.clone(),
        errors: failed,
        ..Row::named(format!(
            "change → each of {} watchers of its service (/v1/services)",
            options.watchers / options.services
        ))
    };
    if let Some(r) = ratio(discovery_latency.clone(), plain.clone(), |l| l.p50_ms) {
        watch = watch.figure("p50 vs. baseline", r * 100.0, "%");
    }
    if let Some(r) = ratio(discovery_latency, plain.clone(), |l| l.p99_ms) {
        watch = watch.figure("p99 vs. baseline", r * 100.0, "%");
    }
    let baseline = Row {
        latency: plain,
        errors: plain_failed,
        ..Row::named("baseline: the same watchers as GET /consumer long polls")
    };
    let mut memory = Row::named(format!("{} instances registered", options.instances))
        .figure("registered in", register_time.as_secs_f64() * 1000.0, "ms")
        .figure(
            "plain registers written in",
            plain_time.as_secs_f64() * 1000.0,
            "ms",
        );
    if !fresh {
        notes.push(
            "memory per instance: not measured in this run (the bench's instances were already \
             there, from an earlier run); the first run measures it"
                .into(),
        );
    }
    if let (true, Some(r0), Some(r1), Some(r2)) = (fresh, rss_0, rss_1, rss_2) {
        let per_instance = r1.saturating_sub(r0) as f64 / options.instances as f64;
        let per_plain = r2.saturating_sub(r1) as f64 / options.instances as f64;
        memory = memory
            .figure(
                "server memory per instance",
                per_instance,
                "bytes (RSS delta)",
            )
            .figure(
                "per plain register, same value",
                per_plain,
                "bytes (RSS delta)",
            );
        memory = memory.figure("server RSS after both", r2 as f64 / 1_048_576.0, "MiB");
        if under.server.is_some() {
            notes.push(
                "in-process: RSS deltas include the bench's own buffers; pass --url to measure \
                 a separate `reg serve`"
                    .into(),
            );
        }
    }
    let picks = Row::named(format!(
        "pick() from a cached service of {} instances",
        cached.len()
    ))
    .figure("round robin, passing (Pick::default)", default_ns, "ns")
    .figure("tag + same host filter", filtered_ns, "ns")
    .figure("baseline: slice[i % n] clone", baseline_ns, "ns")
    .figure(
        "Pick::default vs. baseline",
        default_ns / baseline_ns.max(f64::EPSILON) * 100.0,
        "%",
    );

    let mut params = common_params(common);
    params.retain(|(k, _)| k != "duration" && k != "warmup");
    params.push(param("instances", options.instances));
    params.push(param("services", options.services));
    params.push(param("watchers", options.watchers));
    params.push(param("changes", options.changes));
    notes.push(
        "latency: from the PUT that changes an instance to each answer of the watchers of its \
         service; the baseline is the same watchers and changes on plain registers"
            .into(),
    );
    Ok((params, vec![watch, baseline, memory, picks], notes))
}
