//! `reg serve`'s security flags end to end, with the real binary: the warning when it is open
//! to the network, SIGHUP reloading the certificates, and the client commands over https with
//! a CA and a token.
#![allow(clippy::unwrap_used)]

mod cli_support;
mod common;

use std::path::Path;
use std::sync::Arc;

use cli_support::{reg_at, run, Running};
use common::certs::Pki;
use reg::server::auth::hash_token;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

/// `reg serve` with `args`, and the address it announced.
fn serve(args: &[&str]) -> (Running, String) {
    let mut command = reg_at("http://unused.invalid", &["serve"]);
    command.args(args).env("REG_LOG_LEVEL", "info");
    let mut server = Running::start(command);
    let line = server.line_where("listening", |l| l.starts_with("listening on "));
    let addr = line.trim_start_matches("listening on ").to_owned();
    (server, addr)
}

fn port(addr: &str) -> &str {
    addr.rsplit(':').next().unwrap()
}

#[test]
fn serve_warns_when_it_is_open_to_the_network() {
    let (mut open, _) = serve(&["--addr", "0.0.0.0:0"]);
    open.wait_stderr("no --auth: anyone who can reach this address");
    open.signal("TERM");
    assert!(open.wait().success());

    let (mut local, _) = serve(&["--addr", "127.0.0.1:0"]);
    local.signal("TERM");
    assert!(local.wait().success());
    assert!(
        !local.stderr_text().contains("no --auth"),
        "{}",
        local.stderr_text()
    );
}

/// The certificate a TLS client is shown at `addr`, trusting `cas`.
fn served_certificate(addr: &str, cas: &[&Path]) -> CertificateDer<'static> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in cas {
        for cert in CertificateDer::pem_file_iter(ca).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
    }
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        stream.get_ref().1.peer_certificates().unwrap()[0].clone()
    })
}

fn first_certificate(path: &Path) -> CertificateDer<'static> {
    CertificateDer::pem_file_iter(path)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
}

#[test]
fn sighup_reloads_the_certificates() {
    let (first, second) = (Pki::new(), Pki::new());
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::copy(first.server_cert(), &cert).unwrap();
    std::fs::copy(first.server_key(), &key).unwrap();
    let (mut server, addr) = serve(&[
        "--addr",
        "127.0.0.1:0",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let cas = [first.ca(), second.ca()];
    let cas: Vec<&Path> = cas.iter().map(|p| p.as_path()).collect();
    assert_eq!(
        served_certificate(&addr, &cas),
        first_certificate(&first.server_cert())
    );
    std::fs::copy(second.server_cert(), &cert).unwrap();
    std::fs::copy(second.server_key(), &key).unwrap();
    server.signal("HUP");
    server.wait_stderr("TLS certificates reloaded");
    assert_eq!(
        served_certificate(&addr, &cas),
        first_certificate(&second.server_cert())
    );
    assert!(server.is_running(), "SIGHUP must not stop the server");
    server.signal("TERM");
    assert!(server.wait().success());
}

#[test]
fn client_commands_speak_https_with_a_ca_and_a_token() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let auth = dir.path().join("auth.toml");
    std::fs::write(
        &auth,
        format!(
            "[[principal]]\nname = \"ops\"\ntoken = \"{}\"\nrules = [{{ names = \"*\", rights = [\"admin\"] }}]\n",
            hash_token("ops-secret")
        ),
    )
    .unwrap();
    let (mut server, addr) = serve(&[
        "--addr",
        "127.0.0.1:0",
        "--tls-cert",
        pki.server_cert().to_str().unwrap(),
        "--tls-key",
        pki.server_key().to_str().unwrap(),
        "--auth",
        auth.to_str().unwrap(),
    ]);
    let url = format!("https://localhost:{}", port(&addr));
    let ca = pki.ca();
    let with = |args: &[&str], token: Option<&str>| {
        let mut command = reg_at(&url, args);
        command.env("REG_CA", &ca).env_remove("REG_TOKEN");
        if let Some(token) = token {
            command.env("REG_TOKEN", token);
        }
        run(command)
    };
    let refused = with(&["list"], None);
    assert_eq!(refused.code(), Some(1), "{}", refused.stderr);
    assert!(refused.stderr.contains("401"), "{}", refused.stderr);
    let wrong = with(&["list"], Some("guess"));
    assert!(wrong.stderr.contains("unknown token"), "{}", wrong.stderr);

    let mut provider = Running::start({
        let mut command = reg_at(&url, &["provide", "door", "\"closed\"", "--ttl", "30s"]);
        command.env("REG_CA", &ca).env("REG_TOKEN", "ops-secret");
        command
    });
    cli_support::eventually("door is provided", || {
        with(&["get", "door"], Some("ops-secret")).stdout.trim() == "\"closed\""
    });
    let listed = with(&["list"], Some("ops-secret"));
    assert_eq!(listed.code(), Some(0), "{}", listed.stderr);
    assert_eq!(listed.stdout.trim(), "door=\"closed\"");

    // SIGHUP reads the --auth file again: a new token works, the old one no longer does.
    std::fs::write(
        &auth,
        format!(
            "[[principal]]\nname = \"ops\"\ntoken = \"{}\"\nrules = [{{ names = \"*\", rights = [\"admin\"] }}]\n",
            hash_token("rotated-secret")
        ),
    )
    .unwrap();
    server.signal("HUP");
    server.wait_stderr("access rules reloaded");
    let old = with(&["list"], Some("ops-secret"));
    assert!(old.stderr.contains("unknown token"), "{}", old.stderr);
    let new = with(&["list"], Some("rotated-secret"));
    assert_eq!(new.code(), Some(0), "{}", new.stderr);
    provider.signal("INT");
    provider.wait();
    server.signal("TERM");
    assert!(server.wait().success());
}
