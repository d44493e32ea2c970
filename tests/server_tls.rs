//! `reg serve` over TLS: HTTPS, mTLS identities mapped to `--auth` rules, and a certificate
//! reload that keeps open connections. Certificates come from `openssl` (tests/common/certs.rs).
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::sync::Arc;

use common::certs::Pki;
use common::within;
use reg::server::auth::Auth;
use reg::server::tls::{Tls, TlsFiles};
use reg::server::{RunningServer, Server};
use reg::Registry;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

fn certs(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// A client trusting `cas`, presenting `identity` (certificate, key) when given.
fn connector(cas: &[&Path], identity: Option<(&Path, &Path)>) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for ca in cas {
        for cert in certs(ca) {
            roots.add(cert).unwrap();
        }
    }
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(certs(cert), PrivateKeyDer::from_pem_file(key).unwrap())
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    TlsConnector::from(Arc::new(config))
}

async fn connect(
    server: &RunningServer,
    connector: &TlsConnector,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(server.local_addr()).await?;
    connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

/// One keep-alive request on `stream`: (status, body). `None` if the connection failed.
async fn request(
    stream: &mut BufReader<TlsStream<TcpStream>>,
    method: &str,
    target: &str,
    body: &str,
) -> Option<(u16, String)> {
    let head = format!(
        "{method} {target} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.get_mut().write_all(head.as_bytes()).await.ok()?;
    let mut line = String::new();
    if stream.read_line(&mut line).await.ok()? == 0 {
        return None;
    }
    let status = line.split(' ').nth(1)?.parse().ok()?;
    let mut length = 0;
    loop {
        line.clear();
        stream.read_line(&mut line).await.ok()?;
        if line == "\r\n" {
            break;
        }
        if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = value.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; length];
    stream.read_exact(&mut body).await.ok()?;
    Some((status, String::from_utf8(body).ok()?))
}

const PROVIDE: &str = r#"{"registers":{"sensors.1.t":{"value":1}}}"#;

#[tokio::test]
async fn mtls_identities_map_to_rules() {
    let pki = Pki::new();
    let auth = Auth::from_toml(
        r#"
[[principal]]
name = "sensor one"
cert = "sensor-1"
rules = [{ prefix = "sensors.1.", rights = ["provide", "read"] }]
"#,
    )
    .unwrap();
    let tls = Tls::load(TlsFiles {
        cert: pki.server_cert(),
        key: pki.server_key(),
        client_ca: Some(pki.ca()),
    })
    .unwrap();
    assert!(tls.requires_client_cert());
    let registry = Registry::new();
    let server = Server::builder()
        .registry(registry.clone())
        .auth(auth)
        .tls(tls)
        .bind("127.0.0.1:0")
        .await
        .unwrap();

    let (cert, key) = pki.client("sensor-1");
    let sensor = connector(&[&pki.ca()], Some((&cert, &key)));
    let mut conn = BufReader::new(
        within("handshake", connect(&server, &sensor))
            .await
            .unwrap(),
    );
    let answer = within("put", request(&mut conn, "PUT", "/provider", PROVIDE)).await;
    assert_eq!(answer.map(|a| a.0), Some(204));
    let other = r#"{"registers":{"sensors.2.t":{"value":1}}}"#;
    let (status, body) = within("put", request(&mut conn, "PUT", "/provider", other))
        .await
        .unwrap();
    assert_eq!(status, 403);
    assert!(
        body.contains(r#"principal \"sensor one\" may not provide register \"sensors.2.t\""#),
        "{body}"
    );

    // A certificate the CA signed for an identity no principal has: anonymous, with no rights.
    let (cert, key) = pki.client("stranger");
    let stranger = connector(&[&pki.ca()], Some((&cert, &key)));
    let mut conn = BufReader::new(
        within("handshake", connect(&server, &stranger))
            .await
            .unwrap(),
    );
    let (status, _) = within("put", request(&mut conn, "PUT", "/provider", PROVIDE))
        .await
        .unwrap();
    assert_eq!(status, 401);

    // No certificate, or one from another CA: no request is ever answered.
    let other_pki = Pki::new();
    let (cert, key) = other_pki.client("sensor-1");
    for client in [
        connector(&[&pki.ca()], None),
        connector(&[&pki.ca()], Some((&cert, &key))),
    ] {
        let answered = match within("handshake", connect(&server, &client)).await {
            Err(_) => None,
            Ok(stream) => {
                let mut conn = BufReader::new(stream);
                within("put", request(&mut conn, "PUT", "/provider", PROVIDE)).await
            }
        };
        assert_eq!(answered, None);
    }
    assert_eq!(registry.get("sensors.1.t").unwrap().value().as_str(), "1");
    assert!(registry.get("sensors.2.t").is_none());
    server.shutdown_and_wait().await.unwrap();
}

#[tokio::test]
async fn a_reload_serves_new_certificates_and_keeps_open_connections() {
    let (first, second) = (Pki::new(), Pki::new());
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::copy(first.server_cert(), &cert).unwrap();
    std::fs::copy(first.server_key(), &key).unwrap();
    let tls = Tls::load(TlsFiles {
        cert: cert.clone(),
        key: key.clone(),
        client_ca: None,
    })
    .unwrap();
    let server = Server::builder()
        .tls(Arc::clone(&tls))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let client = connector(&[&first.ca(), &second.ca()], None);
    let served_cert =
        |stream: &TlsStream<TcpStream>| stream.get_ref().1.peer_certificates().unwrap()[0].clone();
    let stream = within("handshake", connect(&server, &client))
        .await
        .unwrap();
    assert_eq!(served_cert(&stream), certs(&first.server_cert())[0]);
    let mut open = BufReader::new(stream);
    let answer = within("get", request(&mut open, "GET", "/healthz", "")).await;
    assert_eq!(answer.map(|a| a.0), Some(200));

    // A bad file: the reload fails and the old certificate stays.
    std::fs::write(&cert, "not a certificate").unwrap();
    let error = tls.reload().unwrap_err().to_string();
    assert!(error.contains("cert.pem"), "{error}");
    let stream = within("handshake", connect(&server, &client))
        .await
        .unwrap();
    assert_eq!(served_cert(&stream), certs(&first.server_cert())[0]);

    std::fs::copy(second.server_cert(), &cert).unwrap();
    std::fs::copy(second.server_key(), &key).unwrap();
    tls.reload().unwrap();
    let stream = within("handshake", connect(&server, &client))
        .await
        .unwrap();
    assert_eq!(served_cert(&stream), certs(&second.server_cert())[0]);
    // The connection opened before the reload still serves.
    let answer = within("get", request(&mut open, "GET", "/healthz", "")).await;
    assert_eq!(answer.map(|a| a.0), Some(200));
    let mut rest = Vec::new();
    let _ = open.get_mut().shutdown().await;
    let _ = open.read_to_end(&mut rest).await;
    server.shutdown_and_wait().await.unwrap();
}
