//! Python clients over HTTPS with `--auth` (`tests/python/https.py`): a reg client written
//! with `requests` as the original Python client is, trusting the CA through
//! `REQUESTS_CA_BUNDLE` only, and Debian's python-consul with `scheme="https"`, a CA and an
//! ACL token. The server runs in-process with TLS and an auth file.
//!
//! Needs `/usr/bin/python3` with `requests` and `consul` (Debian's python3-consul brings
//! both). Skipped with a line on stderr when missing, except under CI (`CI` set).
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::certs::Pki;
use reg::server::auth::{hash_token, Auth};
use reg::server::tls::{Tls, TlsFiles};
use reg::server::Server;
use reg::Registry;

fn python() -> Option<&'static str> {
    ["/usr/bin/python3", "python3"].into_iter().find(|python| {
        Command::new(python)
            .args(["-c", "import consul, requests"])
            .output()
            .is_ok_and(|output| output.status.success())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_clients_speak_https_with_a_trusted_ca_and_tokens() {
    let Some(python) = tokio::task::spawn_blocking(python).await.unwrap() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "python3 with requests and consul is required under CI: apt-get install python3-consul"
        );
        eprintln!("skipped: no python3 with requests and consul (apt-get install python3-consul)");
        return;
    };
    let pki = Pki::new();
    let auth = Auth::from_toml(&format!(
        r#"
[anonymous]
rules = [{{ names = "lamp*", rights = ["read", "provide", "request", "take"] }}]

[[principal]]
name = "discovery"
token = "{}"
rules = [{{ names = "svc/*", rights = ["read", "provide"] }}]
"#,
        hash_token("consul-secret")
    ))
    .unwrap();
    let tls = Tls::load(TlsFiles {
        cert: pki.server_cert(),
        key: pki.server_key(),
        client_ca: None,
    })
    .unwrap();
    let registry = Registry::new();
    let server = Server::builder()
        .registry(registry.clone())
        .auth(auth)
        .tls(tls)
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/https.py");
    let port = server.local_addr().port().to_string();
    let ca = pki.ca();
    let output = tokio::task::spawn_blocking(move || {
        let mut command = Command::new(python);
        command
            .arg(script)
            .arg(port)
            .arg(&ca)
            .arg("consul-secret")
            .env("REQUESTS_CA_BUNDLE", &ca);
        for name in [
            "CONSUL_HTTP_TOKEN",
            "CONSUL_HTTP_ADDR",
            "HTTPS_PROXY",
            "https_proxy",
            "ALL_PROXY",
            "all_proxy",
            "CURL_CA_BUNDLE",
        ] {
            command.env_remove(name);
        }
        command.output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "https.py failed: {}\n--- stdout ---\n{stdout}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("ok:")).count(),
        10,
        "{stdout}"
    );
    assert!(registry.get("svc/web/web-1").is_some());
    assert!(registry.get("svc/api/api-1").is_some());
    assert!(registry.get("svc/db/db-1").is_none());
    server.shutdown_and_wait().await.unwrap();
}
