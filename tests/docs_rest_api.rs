//! The REST reference's examples, run: every `sh` block of `docs/rest-api.md` goes, line by
//! line, to a fresh server, and what each `curl` prints must be what the `# ` lines after it
//! say (the reference's conventions are at its top). So the reference cannot drift from the
//! server.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;

use common::{manual_registry, start, within, Conn, STEP};

const REFERENCE: &str = include_str!("../docs/rest-api.md");
const HOST: &str = "localhost:8080";

/// One `curl` line and the output the reference gives for it.
#[derive(Debug)]
struct Example {
    /// Line number in the reference, for failures.
    line: usize,
    curl: Curl,
    expected: Vec<String>,
}

/// The parts of a curl command line the reference uses.
#[derive(Debug, Default)]
struct Curl {
    method: Option<String>,
    target: String,
    body: Option<String>,
    headers: Vec<(String, String)>,
    /// `-i`: the status line and headers are printed too.
    include: bool,
    /// `-N`: a stream, read until the expected output has arrived.
    stream: bool,
}

/// The reference's `sh` blocks, each a list of examples.
fn blocks() -> Vec<Vec<Example>> {
    let mut blocks = Vec::new();
    let mut current: Option<Vec<Example>> = None;
    for (index, line) in REFERENCE.lines().enumerate() {
        let number = index + 1;
        match (&mut current, line) {
            (None, "```sh") => current = Some(Vec::new()),
            (Some(_), "```") => blocks.push(current.take().unwrap()),
            (Some(examples), line) if line.starts_with("curl ") => examples.push(Example {
                line: number,
                curl: parse_curl(line, number),
                expected: Vec::new(),
            }),
            (Some(examples), line) if line == "#" || line.starts_with("# ") => {
                let example = examples
                    .last_mut()
                    .unwrap_or_else(|| panic!("line {number}: output before any curl line"));
                example
                    .expected
                    .push(line.strip_prefix("# ").unwrap_or("").to_owned());
            }
            (Some(_), line) => panic!("line {number}: not a curl line or its output: {line:?}"),
            (None, _) => {}
        }
    }
    assert!(current.is_none(), "an sh block is not closed");
    blocks
}

/// Splits a shell line into words: plain words and single-quoted strings (what the
/// reference uses; no double quotes, no escapes).
fn words(line: &str, number: usize) -> Vec<String> {
    let mut words = Vec::new();
    let mut chars = line.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c == ' ' {
            chars.next();
            continue;
        }
        let mut word = String::new();
        while let Some(&c) = chars.peek() {
            match c {
                ' ' => break,
                '\'' => {
                    chars.next();
                    loop {
                        match chars.next() {
                            Some('\'') => break,
                            Some(c) => word.push(c),
                            None => panic!("line {number}: unclosed quote"),
                        }
                    }
                }
                '"' | '\\' | '|' | '>' | '&' | ';' => {
                    panic!("line {number}: keep examples to plain words and '…' strings")
                }
                c => {
                    word.push(c);
                    chars.next();
                }
            }
        }
        words.push(word);
    }
    words
}

fn parse_curl(line: &str, number: usize) -> Curl {
    let mut curl = Curl::default();
    let mut words = words(line, number).into_iter().skip(1);
    while let Some(word) = words.next() {
        let mut value = || {
            words
                .next()
                .unwrap_or_else(|| panic!("line {number}: {word} needs a value"))
        };
        match word.as_str() {
            "-i" => curl.include = true,
            "-N" => curl.stream = true,
            "-s" => {}
            "-X" => curl.method = Some(value()),
            "-d" => curl.body = Some(value()),
            "-H" => {
                let header = value();
                let (name, value) = header
                    .split_once(": ")
                    .unwrap_or_else(|| panic!("line {number}: bad header {header:?}"));
                curl.headers.push((name.to_owned(), value.to_owned()));
            }
            url => {
                let target = url
                    .strip_prefix(HOST)
                    .unwrap_or_else(|| panic!("line {number}: the URL must be on {HOST}: {url}"));
                curl.target = if target.is_empty() { "/" } else { target }.to_owned();
            }
        }
    }
    assert!(!curl.target.is_empty(), "line {number}: no URL");
    curl
}

/// `text` matches `pattern`, where `…` in the pattern stands for any text.
fn matches(pattern: &str, text: &str) -> bool {
    let pieces: Vec<&str> = pattern.split('…').collect();
    if pieces.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (pieces[0], pieces[pieces.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    if !text.ends_with(last) {
        return false;
    }
    for piece in &pieces[1..pieces.len() - 1] {
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    true
}

/// Sends one example and checks what curl would print against the reference.
async fn run(addr: SocketAddr, example: &Example) {
    let curl = &example.curl;
    let at = format!("docs/rest-api.md line {}", example.line);
    let method = curl
        .method
        .clone()
        .unwrap_or_else(|| if curl.body.is_some() { "POST" } else { "GET" }.to_owned());
    let headers: Vec<(&str, &str)> = curl
        .headers
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    let mut conn = Conn::open(addr).await;
    conn.send_with(
        &method,
        &curl.target,
        &headers,
        curl.body.as_ref().map(String::as_bytes),
    )
    .await;

    if curl.stream {
        let (status, _) = within(&at, conn.read_head()).await.unwrap();
        assert_eq!(status, 200, "{at}");
        let expected = example.expected.join("\n");
        let mut received = String::new();
        let deadline = tokio::time::Instant::now() + STEP;
        while !matches(&expected, received.trim_end()) {
            let chunk = tokio::time::timeout_at(deadline, conn.read_chunk())
                .await
                .unwrap_or_else(|_| panic!("{at}: the stream said {received:?}, not {expected:?}"))
                .unwrap_or_else(|| panic!("{at}: the stream ended after {received:?}"));
            received.push_str(std::str::from_utf8(&chunk).unwrap());
        }
        return;
    }

    let response = within(&at, conn.read_response()).await.unwrap();
    let body = response.text().trim_end_matches('\n').to_owned();
    let mut expected = example.expected.iter();
    if curl.include {
        let status = expected
            .next()
            .unwrap_or_else(|| panic!("{at}: -i needs a status line"));
        let reason = hyper::StatusCode::from_u16(response.status)
            .unwrap()
            .canonical_reason()
            .unwrap_or("");
        assert_eq!(
            status,
            &format!("HTTP/1.1 {} {reason}", response.status),
            "{at}: {}",
            response.text()
        );
        for line in expected.by_ref() {
            if line.is_empty() {
                break;
            }
            let (name, value) = line
                .split_once(": ")
                .unwrap_or_else(|| panic!("{at}: not a header: {line:?}"));
            let got = response
                .header(name)
                .unwrap_or_else(|| panic!("{at}: no {name} header in {:?}", response.headers));
            assert!(matches(value, got), "{at}: {name}: {got:?}, not {value:?}");
        }
    } else {
        // Without -i a failure shows only as its body: a step the reference shows no output
        // for must have succeeded.
        if example.expected.is_empty() {
            assert!(response.status < 400, "{at}: {} {body}", response.status);
        }
    }
    let expected_body = expected.cloned().collect::<Vec<_>>().join("\n");
    assert!(
        matches(&expected_body, &body),
        "{at}: the body is\n{body}\nnot\n{expected_body}"
    );
}

#[tokio::test]
async fn every_example_in_the_reference_does_what_it_says() {
    let blocks = blocks();
    let examples: usize = blocks.iter().map(Vec::len).sum();
    // The reference has an example for every route: a parser that finds none checks nothing.
    assert!(
        blocks.len() >= 10 && examples >= 30,
        "{} blocks, {examples} examples",
        blocks.len()
    );
    for block in &blocks {
        // A fresh server per block, on a manual clock: nothing expires, TTLs stay put.
        let (registry, _clock) = manual_registry();
        let server = start(registry).await;
        for example in block {
            run(server.local_addr(), example).await;
        }
        server.shutdown_and_wait().await.unwrap();
    }
}

#[test]
fn the_wildcard_matches_what_it_should() {
    assert!(matches("abc", "abc"));
    assert!(!matches("abc", "abcd"));
    assert!(matches("a…d", "abcd"));
    assert!(matches("…", "anything\nat all"));
    assert!(matches(r#"{"error":…}"#, r#"{"error":"x"}"#));
    assert!(!matches("a…d", "abc"));
    assert!(matches("a…c…e", "abcde"));
    assert!(!matches("a…c…e", "aebcd"));
    assert!(!matches("ab…ba", "aba"));
}
