//! `reg serve --data-dir` end to end: a SIGKILL under write load, a restart, the directory
//! lock. Real processes on 127.0.0.1:0 with bounded waits.
#![cfg(feature = "persist")]
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Starts `reg serve` on an ephemeral port with `dir` as its data directory.
fn serve(dir: &Path, extra: &[&str]) -> (Child, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_reg"))
        .args([
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--log-level",
            "warn",
            "--data-dir",
        ])
        .arg(dir)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .unwrap();
    (child, addr)
}

/// One HTTP/1.1 exchange on a keep-alive connection: the status and body, or `None` when the
/// connection broke.
fn exchange(
    stream: &mut TcpStream,
    method: &str,
    target: &str,
    body: &str,
) -> Option<(u16, String)> {
    let request = format!(
        "{method} {target} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).ok()?;
    let status = status_line.split_whitespace().nth(1)?.parse().ok()?;
    let mut length = 0;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).ok()? == 0 {
            return None;
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().ok()?;
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}

#[test]
fn sigkill_under_write_load_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, addr) = serve(dir.path(), &["--sync", "always"]);
    let acked: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let acked = Arc::clone(&acked);
            std::thread::spawn(move || {
                let Ok(mut stream) = TcpStream::connect(addr) else {
                    return;
                };
                for n in 0u64.. {
                    let name = format!("w{w}.r{}", n % 50);
                    let body =
                        format!(r#"{{"registers":{{"{name}":{{"value":{n},"ttl":"1h"}}}}}}"#);
                    match exchange(&mut stream, "PUT", "/provider", &body) {
                        Some((204, _)) => acked.lock().unwrap().push((name, n)),
                        Some((status, body)) => panic!("{status}: {body}"),
                        None => return, // the server is gone
                    }
                }
            })
        })
        .collect();
    // Kill it in the middle of the load, once a good number of writes are acknowledged.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < 2_000 {
        assert!(std::time::Instant::now() < deadline, "writes too slow");
        std::thread::sleep(Duration::from_millis(5));
    }
    server.kill().unwrap(); // SIGKILL
    server.wait().unwrap();
    for writer in writers {
        writer.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();

    let (mut server, addr) = serve(dir.path(), &["--sync", "always"]);
    let mut stream = TcpStream::connect(addr).unwrap();
    // The newest acknowledged value of each register: a later unacknowledged write may have
    // landed too (it was on disk, just not answered), never an older one.
    let mut newest = std::collections::BTreeMap::new();
    for (name, n) in &acked {
        newest.insert(name.clone(), *n);
    }
    let (status, body) = exchange(&mut stream, "GET", "/consumer", "").unwrap();
    assert_eq!(status, 200);
    let all: serde_json::Value = serde_json::from_str(&body).unwrap();
    for (name, n) in &newest {
        let value = all["registers"][name]["value"].as_u64();
        assert!(
            value.is_some_and(|v| v >= *n),
            "{name}: acknowledged {n}, restored {value:?}"
        );
    }
    server.kill().unwrap();
    server.wait().unwrap();
}

#[test]
fn a_second_server_on_the_same_data_directory_exits_1_naming_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let (mut first, _) = serve(dir.path(), &[]);
    let output = Command::new(env!("CARGO_BIN_EXE_reg"))
        .args(["serve", "--addr", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("is in use by another reg process")
            && stderr.contains(&format!("pid {}", first.id())),
        "{stderr}"
    );
    first.kill().unwrap();
    first.wait().unwrap();
}

#[test]
fn revisions_continue_across_a_restart_so_an_old_index_misses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, addr) = serve(dir.path(), &[]);
    let mut stream = TcpStream::connect(addr).unwrap();
    let put = |stream: &mut TcpStream, body: &str| {
        assert_eq!(exchange(stream, "PUT", "/provider", body).unwrap().0, 204);
    };
    put(
        &mut stream,
        r#"{"registers":{"a":{"value":1,"ttl":"1h"},"b":{"value":2,"ttl":"1h"}}}"#,
    );
    // SIGTERM: a clean stop writes out the batch.
    let _ = Command::new("kill").arg(server.id().to_string()).status();
    server.wait().unwrap();

    let (mut server, addr) = serve(dir.path(), &[]);
    let mut stream = TcpStream::connect(addr).unwrap();
    assert_eq!(
        exchange(&mut stream, "DELETE", "/provider?name=a", "")
            .unwrap()
            .0,
        204
    );
    // A consumer that read at revision 2 before the restart is told that `a` went.
    let (status, body) = exchange(
        &mut stream,
        "GET",
        "/consumer?names=a,b&wait=1s&index=2",
        "",
    )
    .unwrap();
    assert_eq!(status, 200);
    assert_eq!(body, r#"{"registers":{"b":{"value":2}}}"#);
    // The counter went on from 2: the delete took 3, the next change takes 4.
    put(&mut stream, r#"{"registers":{"c":{"value":3,"ttl":"1h"}}}"#);
    let (_, body) = exchange(&mut stream, "GET", "/consumer?names=b,c&detail=true", "").unwrap();
    let detail: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(detail["registers"]["b"]["revision"], 2, "{body}");
    assert_eq!(detail["registers"]["c"]["revision"], 4, "{body}");
    server.kill().unwrap();
    server.wait().unwrap();
}

/// A full disk, played by the file-size limit (`prlimit --fsize`): writes answer 503 with a
/// JSON error, reads go on, and writes are accepted again once the limit is lifted.
#[test]
fn a_full_disk_refuses_writes_keeps_reads_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new("prlimit")
        .arg("--fsize=65536:unlimited")
        .arg(env!("CARGO_BIN_EXE_reg"))
        .args([
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--log-level",
            "error",
            "--sync",
            "always",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr: SocketAddr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .parse()
        .unwrap();
    let mut stream = TcpStream::connect(addr).unwrap();
    let value = "x".repeat(1000);
    let put = |stream: &mut TcpStream, n: usize| {
        let body = format!(r#"{{"registers":{{"r{n}":{{"value":"{value}","ttl":"1h"}}}}}}"#);
        exchange(stream, "PUT", "/provider", &body).unwrap()
    };
    let mut accepted = 0;
    let refusal = loop {
        assert!(accepted < 1000, "64 KiB never filled");
        match put(&mut stream, accepted) {
            (204, _) => accepted += 1,
            (status, body) => break (status, body),
        }
    };
    assert_eq!(refusal.0, 503, "{}", refusal.1);
    let error: serde_json::Value = serde_json::from_str(&refusal.1).unwrap();
    assert!(
        error["error"].as_str().unwrap().contains("cannot be saved"),
        "{error}"
    );
    // Further writes are refused at once; every acknowledged one is still readable.
    assert_eq!(put(&mut stream, 5000).0, 503);
    let (status, body) = exchange(&mut stream, "GET", "/consumer", "").unwrap();
    assert_eq!(status, 200);
    let all: serde_json::Value = serde_json::from_str(&body).unwrap();
    for n in 0..accepted {
        assert!(all["registers"][format!("r{n}")].is_object(), "r{n} lost");
    }

    // Space returns: the writer retries within a second and writes are accepted again.
    let lifted = Command::new("prlimit")
        .arg(format!("--pid={}", child.id()))
        .arg("--fsize=unlimited:unlimited")
        .status()
        .unwrap();
    assert!(lifted.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match put(&mut stream, 6000) {
            (204, _) => break,
            (503, _) => {
                assert!(std::time::Instant::now() < deadline, "never recovered");
                std::thread::sleep(Duration::from_millis(50));
            }
            (status, body) => panic!("{status}: {body}"),
        }
    }
    // And what was written before, during and after the refusal survives a restart.
    child.kill().unwrap();
    child.wait().unwrap();
    let (mut server, addr) = serve(dir.path(), &[]);
    let mut stream = TcpStream::connect(addr).unwrap();
    let (_, body) = exchange(&mut stream, "GET", "/consumer", "").unwrap();
    let all: serde_json::Value = serde_json::from_str(&body).unwrap();
    for n in (0..accepted).chain([6000]) {
        assert!(all["registers"][format!("r{n}")].is_object(), "r{n} lost");
    }
    server.kill().unwrap();
    server.wait().unwrap();
}
