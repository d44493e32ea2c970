//! The Consul-compatible subset (`src/server/consul.rs`) driven end to end by a real Consul
//! client library: Debian's `python3-consul` (python-consul 0.7.1), through
//! `tests/consul/drive.py`. The script registers, heartbeats, lists, blocks and deregisters
//! with the library's own calls and asserts what it gets back; this test starts the server
//! in-process and checks that the script succeeds.
//!
//! Without python-consul the test is skipped (a line on stderr), except under CI (`CI` set),
//! where a missing library fails it: `apt-get install python3-consul`.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

use reg::Registry;

/// Environment variables python-consul or requests read that would send the script
/// elsewhere than the server under test (another address, TLS, a token, a proxy).
const FOREIGN_ENV: [&str; 10] = [
    "CONSUL_HTTP_ADDR",
    "CONSUL_HTTP_SSL",
    "CONSUL_HTTP_SSL_VERIFY",
    "CONSUL_HTTP_TOKEN",
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// A Python 3 that can `import consul`: `python3` on the PATH, else the system's (a PATH
/// `python3` from pyenv or a virtualenv does not see Debian's `dist-packages`).
fn python_with_consul() -> Option<&'static str> {
    ["python3", "/usr/bin/python3"].into_iter().find(|python| {
        Command::new(python)
            .args(["-c", "import consul"])
            .output()
            .is_ok_and(|output| output.status.success())
    })
}

fn show(output: &Output) -> String {
    format!(
        "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_consul_drives_the_consul_subset() {
    let Some(python) = tokio::task::spawn_blocking(python_with_consul)
        .await
        .unwrap()
    else {
        if std::env::var_os("CI").is_some() {
            panic!(
                "python3-consul is missing: neither `python3` nor `/usr/bin/python3` can \
                 `import consul` (apt-get install python3-consul)"
            );
        }
        eprintln!(
            "SKIPPED consul_python: python3-consul is not installed (no `python3` can \
             `import consul`; apt-get install python3-consul)"
        );
        return;
    };

    let server = common::start(Registry::new()).await;
    let port = server.local_addr().port();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/consul/drive.py");

    let output = tokio::task::spawn_blocking(move || {
        let mut command = Command::new(python);
        command.arg(&script).arg(port.to_string());
        for name in FOREIGN_ENV {
            command.env_remove(name);
        }
        command
            .env("NO_PROXY", "*")
            .env("PYTHONUNBUFFERED", "1")
            .output()
            .unwrap_or_else(|e| panic!("cannot run {python} {}: {e}", script.display()))
    })
    .await
    .unwrap();

    assert!(
        output.status.success(),
        "tests/consul/drive.py failed against the server on port {port}\n{}",
        show(&output)
    );
    println!("{}", String::from_utf8_lossy(&output.stdout));
    server.shutdown_and_wait().await.unwrap();
}
