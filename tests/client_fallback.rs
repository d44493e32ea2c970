//! The high-level client against a minimal fake server written here: raw HTTP/1.1 over
//! `tokio::net::TcpListener`, registers and requests in an in-test map.
//!
//! In Part-A mode the fake is the original reg API only: no `X-Reg-Index`, `index` and
//! `detail` ignored, 405 on `DELETE /provider`. That proves the client's fallback. In Part-B
//! mode it sends `X-Reg-Index`, honours `index` and removes on `DELETE`, and the tests check
//! at the protocol level that the client passes the index back.
//!
//! Real time with bounded waits: these tests talk over sockets.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reg::client::{Client, Update};
use reg::json::{parse_tree, Node};
use reg::{parse_go_duration, Json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;

// ---------------------------------------------------------------------------------------------
// The fake server
// ---------------------------------------------------------------------------------------------

/// One request the fake answered.
#[derive(Debug, Clone)]
struct Logged {
    method: String,
    path: String,
    query: Vec<(String, String)>,
    status: u16,
    /// The `X-Reg-Index` answered, in Part-B mode.
    index: Option<u64>,
}

impl Logged {
    fn param(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Default)]
struct State {
    registers: BTreeMap<String, (Json, Option<Json>)>,
    requests: BTreeMap<String, Json>,
    /// Bumped by every change (Part B's revision).
    revision: u64,
    log: Vec<Logged>,
    /// The names of each `GET /consumer` poll parked now.
    parked: Vec<Vec<String>>,
}

/// Counts a poll as parked while it lives.
struct Parked<'a> {
    fake: &'a Fake,
    names: Vec<String>,
}

impl<'a> Parked<'a> {
    fn new(fake: &'a Fake, names: &[String]) -> Self {
        fake.state.lock().unwrap().parked.push(names.to_vec());
        Self {
            fake,
            names: names.to_vec(),
        }
    }
}

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        let mut state = self.fake.state.lock().unwrap();
        if let Some(i) = state.parked.iter().position(|n| *n == self.names) {
            state.parked.remove(i);
        }
    }
}

#[derive(Debug)]
struct Fake {
    part_b: bool,
    state: Mutex<State>,
    /// Sent the new revision after every change, to wake parked polls.
    changed: watch::Sender<u64>,
    url: String,
}

impl Fake {
    async fn start(part_b: bool) -> Arc<Fake> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let fake = Arc::new(Fake {
            part_b,
            state: Mutex::new(State::default()),
            changed: watch::Sender::new(0),
            url: format!("http://{}", listener.local_addr().unwrap()),
        });
        let server = Arc::clone(&fake);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(Arc::clone(&server).connection(stream));
            }
        });
        fake
    }

    /// Changes state and wakes parked polls.
    fn change<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let mut state = self.state.lock().unwrap();
        let result = f(&mut state);
        state.revision += 1;
        let revision = state.revision;
        drop(state);
        self.changed.send_replace(revision);
        result
    }

    fn set(&self, name: &str, value: &str) {
        let value = Json::parse(value.as_bytes()).unwrap();
        self.change(|s| s.registers.insert(name.to_owned(), (value, None)));
    }

    fn remove(&self, name: &str) {
        self.change(|s| s.registers.remove(name));
    }

    fn value(&self, name: &str) -> Option<Json> {
        let state = self.state.lock().unwrap();
        state.registers.get(name).map(|(v, _)| v.clone())
    }

    /// Whether a consumer poll for exactly `names` is parked, so a change now wakes it (without
    /// Part B, a change just before a poll arrives is only seen when the poll's wait ends).
    fn parked(&self, names: &[&str]) -> bool {
        let state = self.state.lock().unwrap();
        state.parked.iter().any(|parked| parked == names)
    }

    fn log(&self) -> Vec<Logged> {
        self.state.lock().unwrap().log.clone()
    }

    fn count(&self, method: &str, path: &str) -> usize {
        let log = self.log();
        log.iter()
            .filter(|l| l.method == method && l.path == path)
            .count()
    }

    /// Serves one keep-alive connection.
    async fn connection(self: Arc<Self>, mut stream: TcpStream) {
        let mut buf = Vec::new();
        loop {
            let Some((method, target, body)) = read_request(&mut stream, &mut buf).await else {
                return;
            };
            let (path, query) = split_target(&target);
            let Some((status, body, index)) = self
                .answer(&method, &path, &query, &body, &mut stream)
                .await
            else {
                // The client went away while its poll was parked: take nothing.
                return;
            };
            self.state.lock().unwrap().log.push(Logged {
                method,
                path,
                query,
                status,
                index,
            });
            let mut head = format!(
                "HTTP/1.1 {status} X\r\ncontent-length: {}\r\ncontent-type: application/json\r\n",
                body.len()
            );
            if let Some(index) = index {
                head.push_str(&format!("x-reg-index: {index}\r\n"));
            }
            head.push_str("\r\n");
            if stream.write_all(head.as_bytes()).await.is_err()
                || stream.write_all(body.as_bytes()).await.is_err()
            {
                return;
            }
        }
    }

    /// Status, body and `X-Reg-Index`; `None` when the client went away while parked.
    async fn answer(
        &self,
        method: &str,
        path: &str,
        query: &[(String, String)],
        body: &[u8],
        stream: &mut TcpStream,
    ) -> Option<(u16, String, Option<u64>)> {
        let names = names(query);
        let wait = query
            .iter()
            .find(|(k, _)| k == "wait")
            .map(|(_, v)| Duration::from_nanos(parse_go_duration(v).unwrap().max(0) as u64));
        let index: Option<u64> = query
            .iter()
            .find(|(k, _)| k == "index")
            .filter(|_| self.part_b)
            .map(|(_, v)| v.parse().unwrap());
        match (method, path) {
            ("GET", "/consumer") => {
                let mut changes = self.changed.subscribe();
                let (mut answer, revision) = self.read(&names);
                let answered_at_once = index.is_some_and(|index| revision > index);
                if let (Some(wait), false) = (wait, answered_at_once) {
                    let deadline = Instant::now() + wait;
                    let first = answer.clone();
                    let _parked = Parked::new(self, &names);
                    while answer == first {
                        tokio::select! {
                            _ = changes.changed() => answer = self.read(&names).0,
                            () = tokio::time::sleep_until(deadline) => break,
                            gone = client_gone(stream) => if gone { return None },
                        }
                    }
                }
                let revision = self.read(&names).1;
                Some((200, answer, self.part_b.then_some(revision)))
            }
            ("GET", "/provider") => {
                let mut changes = self.changed.subscribe();
                let deadline = wait.map(|wait| Instant::now() + wait);
                loop {
                    let taken = self.take(&names);
                    if taken != r#"{"registers":{}}"# {
                        return Some((200, taken, None));
                    }
                    let Some(deadline) = deadline else {
                        return Some((200, taken, None));
                    };
                    tokio::select! {
                        _ = changes.changed() => {}
                        () = tokio::time::sleep_until(deadline) => return Some((200, taken, None)),
                        gone = client_gone(stream) => if gone { return None },
                    }
                }
            }
            ("PUT", "/provider") => {
                let entries = entries(body);
                self.change(|s| {
                    for (name, value, metadata) in entries {
                        s.registers.insert(name, (value, metadata));
                    }
                });
                Some((204, String::new(), None))
            }
            ("PUT", "/consumer") => {
                let entries = entries(body);
                self.change(|s| {
                    for (name, value, _) in entries {
                        s.requests.insert(name, value);
                    }
                });
                Some((202, String::new(), None))
            }
            ("DELETE", "/provider") if self.part_b => {
                self.change(|s| {
                    for name in &names {
                        s.registers.remove(name);
                    }
                });
                Some((204, String::new(), None))
            }
            ("DELETE", "/provider") => {
                Some((405, r#"{"error":"method not allowed"}"#.to_owned(), None))
            }
            _ => Some((404, r#"{"error":"not found"}"#.to_owned(), None)),
        }
    }

    /// The `GET /consumer` body for `names` (all with none) and the current revision.
    fn read(&self, names: &[String]) -> (String, u64) {
        let state = self.state.lock().unwrap();
        let mut out = String::from(r#"{"registers":{"#);
        let mut first = true;
        for (name, (value, metadata)) in &state.registers {
            if !names.is_empty() && !names.contains(name) {
                continue;
            }
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str(&format!(
                r#"{}:{{"value":{value}"#,
                Json::from(name.as_str())
            ));
            if let Some(metadata) = metadata {
                out.push_str(&format!(r#","metadata":{metadata}"#));
            }
            out.push('}');
        }
        out.push_str("}}");
        (out, state.revision)
    }

    /// Takes the pending requests for `names` (all with none); the `GET /provider` body.
    fn take(&self, names: &[String]) -> String {
        let mut state = self.state.lock().unwrap();
        let wanted: Vec<String> = state
            .requests
            .keys()
            .filter(|name| names.is_empty() || names.contains(name))
            .cloned()
            .collect();
        let parts: Vec<String> = wanted
            .iter()
            .filter_map(|name| {
                let value = state.requests.remove(name)?;
                Some(format!(
                    r#"{}:{{"value":{value}}}"#,
                    Json::from(name.as_str())
                ))
            })
            .collect();
        format!(r#"{{"registers":{{{}}}}}"#, parts.join(","))
    }
}

/// Resolves `true` when the client closed the connection (EOF or error); never otherwise.
async fn client_gone(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    match stream.peek(&mut byte).await {
        Ok(0) | Err(_) => true,
        Ok(_) => std::future::pending().await,
    }
}

/// Reads one request: method, target and body. `None` at EOF.
async fn read_request(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> Option<(String, String, Vec<u8>)> {
    let head_end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).ok()?;
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let method = request_line.next()?.to_owned();
    let target = request_line.next()?.to_owned();
    let length: usize = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .map_or(0, |(_, v)| v.trim().parse().unwrap());
    let body_start = head_end + 4;
    while buf.len() < body_start + length {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = buf[body_start..body_start + length].to_vec();
    buf.drain(..body_start + length);
    Some((method, target, body))
}

fn split_target(target: &str) -> (String, Vec<(String, String)>) {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let query = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect();
    (path.to_owned(), query)
}

/// Percent-decoding as Go's `url.ParseQuery` does (`+` is a space).
fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                out.push(u8::from_str_radix(&text[i + 1..i + 3], 16).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

fn names(query: &[(String, String)]) -> Vec<String> {
    let mut names = Vec::new();
    for (key, value) in query {
        match key.as_str() {
            "name" => names.push(value.clone()),
            "names" => names.extend(value.split(',').map(str::to_owned)),
            _ => {}
        }
    }
    names
}

/// The `registers` entries of a PUT body: name, value, metadata.
fn entries(body: &[u8]) -> Vec<(String, Json, Option<Json>)> {
    let tree = parse_tree(body).unwrap();
    let Some(Node::Object(members)) = tree.get("registers") else {
        panic!("registers is not an object");
    };
    members
        .iter()
        .map(|(name, entry)| {
            (
                name.decoded().into_owned(),
                entry.get("value").unwrap().to_json(),
                entry.get("metadata").map(Node::to_json),
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

fn json(text: &str) -> Json {
    Json::parse(text.as_bytes()).unwrap()
}

async fn within<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(10), future)
        .await
        .expect("timed out")
}

/// Waits (bounded) until `condition` holds, checking every 10 ms.
async fn eventually(mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "condition not reached");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn client(fake: &Fake) -> Client {
    Client::builder()
        .poll_wait(Duration::from_secs(30))
        .fallback_poll_wait(Duration::from_secs(30))
        .backoff(Duration::from_millis(10), Duration::from_millis(200))
        .remote(&fake.url)
        .unwrap()
}

#[tokio::test]
async fn without_part_b_a_consumer_still_sees_values_changes_and_removals() {
    let fake = Fake::start(false).await;
    fake.set("t", "12345678901234567890.10");
    let client = client(&fake);
    let mut consumer = client.consume("t");

    let update = within(consumer.next()).await.unwrap();
    assert_eq!(update.value(), Some(&json("12345678901234567890.10")));
    assert_eq!(update.revision(), None, "no revisions without Part B");

    eventually(|| fake.parked(&["t"])).await;
    fake.set("t", r#"{"b":1,"a":2}"#);
    let update = within(consumer.next()).await.unwrap();
    assert_eq!(update.value(), Some(&json(r#"{"a":2,"b":1}"#)));

    eventually(|| fake.parked(&["t"])).await;
    fake.remove("t");
    let update = within(consumer.next()).await.unwrap();
    assert_eq!(
        update,
        Update::Removed {
            name: "t".into(),
            revision: None
        }
    );

    // The client noticed there is no X-Reg-Index and never sent an index.
    let polls: Vec<Logged> = fake
        .log()
        .into_iter()
        .filter(|l| l.path == "/consumer")
        .collect();
    assert!(polls.len() >= 3);
    assert!(
        polls.iter().all(|l| l.param("index").is_none()),
        "{polls:?}"
    );
    assert!(polls.iter().skip(1).all(|l| l.param("wait").is_some()));
}

#[tokio::test]
async fn without_part_b_a_new_name_reissues_the_parked_poll() {
    let fake = Fake::start(false).await;
    fake.set("a", "1");
    fake.set("b", "2");
    let client = client(&fake);
    let mut a = client.consume("a");
    assert_eq!(within(a.next()).await.unwrap().value(), Some(&json("1")));
    // Let the poll park (its wait is 30 s).
    eventually(|| fake.parked(&["a"])).await;

    let started = Instant::now();
    let mut b = client.consume("b");
    assert_eq!(within(b.next()).await.unwrap().value(), Some(&json("2")));
    assert!(started.elapsed() < Duration::from_secs(10));

    // Both names are in the new poll: a change to either arrives.
    eventually(|| fake.parked(&["a", "b"])).await;
    fake.set("a", "3");
    assert_eq!(within(a.next()).await.unwrap().value(), Some(&json("3")));
    let last = fake
        .log()
        .into_iter()
        .rfind(|l| l.path == "/consumer")
        .unwrap();
    let names: Vec<&str> = last
        .query
        .iter()
        .filter(|(k, _)| k == "name")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(names, ["a", "b"]);
}

#[tokio::test]
async fn without_part_b_a_provider_refreshes_takes_requests_and_lets_the_register_expire() {
    let fake = Fake::start(false).await;
    let client = client(&fake);
    let mut provider = client
        .provide(
            "p",
            json("1"),
            Some(json(r#"{"unit":"W"}"#)),
            Some(Duration::from_millis(400)),
        )
        .await
        .unwrap();
    assert_eq!(fake.value("p"), Some(json("1")));

    // Refreshed at TTL/2 (200 ms): a few more writes arrive.
    eventually(|| fake.count("PUT", "/provider") >= 3).await;

    // Change requests reach it through the shared request poll.
    let consumer = client.consume("p");
    consumer.request(json("2")).await.unwrap();
    assert_eq!(within(provider.next_request()).await, Some(json("2")));
    provider.update(json("2")).await.unwrap();
    assert_eq!(fake.value("p"), Some(json("2")));

    // Dropping it tries DELETE, gets 405, and leaves the register to its TTL.
    drop(provider);
    eventually(|| fake.count("DELETE", "/provider") == 1).await;
    let delete = fake
        .log()
        .into_iter()
        .find(|l| l.method == "DELETE")
        .unwrap();
    assert_eq!((delete.status, delete.param("name")), (405, Some("p")));
    assert_eq!(fake.value("p"), Some(json("2")));
}

#[tokio::test]
async fn with_part_b_the_client_passes_the_index_back_and_removes_on_drop() {
    let fake = Fake::start(true).await;
    fake.set("a", "1");
    let client = client(&fake);
    let mut a = client.consume("a");
    assert_eq!(within(a.next()).await.unwrap().value(), Some(&json("1")));
    fake.set("a", "2");
    assert_eq!(within(a.next()).await.unwrap().value(), Some(&json("2")));
    fake.set("unwatched", "0");
    fake.set("a", "3");
    assert_eq!(within(a.next()).await.unwrap().value(), Some(&json("3")));

    // Every long poll carried the X-Reg-Index of the answer before it.
    let polls: Vec<Logged> = fake
        .log()
        .into_iter()
        .filter(|l| l.path == "/consumer")
        .collect();
    assert!(polls.len() >= 3, "{polls:?}");
    assert_eq!(
        polls[0].param("index"),
        None,
        "the first read takes no index"
    );
    for pair in polls.windows(2) {
        let sent: u64 = pair[1].param("index").unwrap().parse().unwrap();
        assert_eq!(Some(sent), pair[0].index, "{pair:?}");
    }

    // DELETE works here: the register goes at once.
    let provider = client.provide("p", json("1"), None, None).await.unwrap();
    assert!(fake.value("p").is_some());
    drop(provider);
    eventually(|| fake.value("p").is_none()).await;
}
