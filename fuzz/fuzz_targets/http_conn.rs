//! Arbitrary bytes, split into arbitrary chunks, into one served HTTP connection (hyper over
//! an in-memory pipe, the real routes and limits): the server never panics, never hangs (it
//! closes once the client has sent everything and closed its side, unless it is streaming a
//! watch), and
//! every answer it writes is an HTTP response; each 4xx or 5xx that reg wrote has a JSON
//! `{"error": …}` body, and the ones hyper writes itself (broken framing) are 400, 414 or 431
//! with an empty body, as the README documents.
//!
//! Input: the first byte is how many of the next bytes are chunk sizes (at most 8); the rest
//! is what the client sends, cut at those sizes in turn.
#![no_main]

use libfuzzer_sys::fuzz_target;
use reg::server::fuzzing::serve_chunks;

fn chunks(data: &[u8]) -> Vec<&[u8]> {
    let Some((&count, rest)) = data.split_first() else {
        return Vec::new();
    };
    let count = usize::from(count % 9).min(rest.len());
    let (sizes, mut bytes) = rest.split_at(count);
    let mut out = Vec::new();
    let mut turn = 0;
    while !bytes.is_empty() {
        let size = match sizes.get(turn % sizes.len().max(1)) {
            Some(&s) => usize::from(s).max(1),
            None => bytes.len(),
        };
        let (chunk, tail) = bytes.split_at(size.min(bytes.len()));
        out.push(chunk);
        bytes = tail;
        turn += 1;
    }
    out
}

/// Checks the responses in `output`, in order, up to the first streamed (chunked) one.
fn check(output: &[u8]) {
    let mut rest = output;
    while !rest.is_empty() {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        let head_len = match response.parse(rest) {
            Ok(httparse::Status::Complete(len)) => len,
            // The server stopped mid-response: it closed the connection (a timeout or the
            // client going away). What was written so far must still be a valid start.
            Ok(httparse::Status::Partial) => return,
            Err(error) => panic!("not an http response ({error}): {:?}", String::from_utf8_lossy(rest)),
        };
        let status = response.code.unwrap_or(0);
        assert!((100..600).contains(&status), "status {status}");
        let header = |name: &str| {
            response
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).into_owned())
        };
        if header("transfer-encoding").is_some() {
            return; // a watch stream: it runs until the connection closes
        }
        let length: usize = header("content-length")
            .and_then(|l| l.parse().ok())
            .unwrap_or(0);
        let after = &rest[head_len..];
        // A HEAD answer has a length but no body: the next response follows at once.
        let body_len = if after.starts_with(b"HTTP/1.") { 0 } else { length.min(after.len()) };
        let body = &after[..body_len];
        if status >= 400 {
            if header("content-type").as_deref() == Some("application/json") {
                // Written by reg. (A HEAD answer carries no body to check.)
                if body_len > 0 {
                    let value: serde_json::Value = serde_json::from_slice(body)
                        .unwrap_or_else(|e| panic!("{status} body is not json ({e}): {body:?}"));
                    assert!(value["error"].is_string(), "{status} body: {value}");
                }
            } else {
                // Written by hyper itself, for input it could not parse as HTTP.
                assert!(
                    matches!(status, 400 | 414 | 431) && length == 0,
                    "{status} without a json body"
                );
            }
        }
        rest = &after[body_len..];
    }
}

fuzz_target!(|data: &[u8]| {
    let served = serve_chunks(&chunks(data));
    // Only a watch stream may outlive the client's half-close (see `Served::closed`).
    let streaming = served
        .output
        .windows(17)
        .any(|w| w.eq_ignore_ascii_case(b"text/event-stream"));
    assert!(
        served.closed || streaming,
        "the server did not close the connection after the client did"
    );
    check(&served.output);
});
