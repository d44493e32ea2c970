//! The Rust client over `https://` against a tiny TLS server of the test's own (tokio-rustls
//! and a fixed HTTP answer), so the client's TLS is proven apart from reg's server: trusting a
//! CA file, refusing a server it does not trust, presenting a client certificate, sending the
//! bearer token, and naming the file when a TLS file is unusable.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::sync::Arc;

use common::certs::Pki;
use common::within;
use reg::client::{Client, ClientError, WireClient};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// What the tiny server saw of one request.
#[derive(Debug)]
struct Seen {
    /// The request line, e.g. `GET /version HTTP/1.1`.
    request: String,
    /// The `Authorization` header.
    authorization: Option<String>,
    /// The common name of the client's certificate, if it sent one.
    client_cn: Option<String>,
}

/// A TLS server on 127.0.0.1 answering every request `{"version":"tiny"}`, or 401 when it
/// wants a token and the request's is not it; it reports each request on `seen`.
struct TinyServer {
    port: u16,
    seen: mpsc::UnboundedReceiver<Seen>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TinyServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TinyServer {
    async fn next_seen(&mut self) -> Seen {
        within("the tiny server's report", self.seen.recv())
            .await
            .unwrap()
    }
}

#[allow(deprecated)] // ring on purpose, as in the crate (see src/client/tls.rs).
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// `require_client_cert`: only clients with a certificate from the test CA get through.
async fn tiny_server(pki: &Pki, require_client_cert: bool, token: Option<&str>) -> TinyServer {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = if require_client_cert {
        let mut roots = rustls::RootCertStore::empty();
        for cert in certs(&pki.ca()) {
            roots.add(cert).unwrap();
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider(),
        )
        .build()
        .unwrap();
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let config = builder
        .with_single_cert(
            certs(&pki.server_cert()),
            PrivateKeyDer::from_pem_file(pki.server_key()).unwrap(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, seen) = mpsc::unbounded_channel();
    let token = token.map(|t| format!("Bearer {t}"));
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, tx, token) = (acceptor.clone(), tx.clone(), token.clone());
            tokio::spawn(async move {
                // A client that does not trust us, or has no certificate, fails here.
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let client_cn = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .map(|cert| common_name(cert));
                let mut stream = BufReader::new(tls);
                loop {
                    let Some((request, authorization)) = read_head(&mut stream).await else {
                        return;
                    };
                    let allowed = token.is_none() || authorization == token;
                    let _ = tx.send(Seen {
                        request,
                        authorization,
                        client_cn: client_cn.clone(),
                    });
                    let (status, body) = if allowed {
                        ("200 OK", r#"{"version":"tiny"}"#)
                    } else {
                        ("401 Unauthorized", r#"{"error":"unknown token"}"#)
                    };
                    let answer = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\n\
                         Content-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if stream.write_all(answer.as_bytes()).await.is_err()
                        || stream.flush().await.is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    TinyServer { port, seen, task }
}

/// Reads a request head (the client sends no bodies here): its request line and
/// `Authorization` header; `None` at the end of the connection.
async fn read_head<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut BufReader<S>,
) -> Option<(String, Option<String>)> {
    let mut request = String::new();
    if stream.read_line(&mut request).await.ok()? == 0 {
        return None;
    }
    let mut authorization = None;
    loop {
        let mut line = String::new();
        if stream.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            return Some((request.trim_end().to_owned(), authorization));
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("authorization") {
                authorization = Some(value.trim().to_owned());
            }
        }
    }
}

fn common_name(cert: &CertificateDer<'_>) -> String {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).unwrap();
    let cn = parsed
        .subject()
        .iter_common_name()
        .next()
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned();
    cn
}

fn error_of<T: std::fmt::Debug>(result: Result<T, ClientError>) -> ClientError {
    match result {
        Ok(value) => panic!("succeeded: {value:?}"),
        Err(error) => error,
    }
}

#[tokio::test]
async fn https_with_the_ca_file_works_by_name_and_by_ip() {
    let pki = Pki::new();
    let mut server = tiny_server(&pki, false, None).await;
    for host in ["localhost", "127.0.0.1"] {
        let wire = WireClient::builder(&format!("https://{host}:{}", server.port))
            .ca_file(pki.ca())
            .build()
            .unwrap();
        assert_eq!(wire.url(), format!("https://{host}:{}", server.port));
        let version = within("version over https", wire.version()).await;
        assert_eq!(version.unwrap(), "tiny", "{host}");
        let seen = server.next_seen().await;
        assert_eq!(seen.request, "GET /version HTTP/1.1");
        assert_eq!(seen.authorization, None, "no token set, none sent");
        assert_eq!(seen.client_cn, None);
    }
}

#[tokio::test]
async fn a_server_signed_by_another_ca_is_refused_clearly() {
    let pki = Pki::new();
    let stranger = Pki::new();
    let server = tiny_server(&pki, false, None).await;
    let wire = WireClient::builder(&format!("https://localhost:{}", server.port))
        .ca_file(stranger.ca())
        .build()
        .unwrap();
    let error = error_of(within("version", wire.version()).await);
    assert!(error.is_connect(), "{error:?}");
    let text = error.to_string();
    assert!(
        text.contains("invalid peer certificate: UnknownIssuer"),
        "{text}"
    );
}

#[tokio::test]
async fn a_client_certificate_is_presented_to_a_server_that_requires_one() {
    let pki = Pki::new();
    let mut server = tiny_server(&pki, true, None).await;
    let url = format!("https://localhost:{}", server.port);
    let (cert, key) = pki.client("alice");
    let wire = WireClient::builder(&url)
        .ca_file(pki.ca())
        .client_cert(&cert, &key)
        .build()
        .unwrap();
    assert_eq!(within("version", wire.version()).await.unwrap(), "tiny");
    assert_eq!(server.next_seen().await.client_cn.as_deref(), Some("alice"));

    // Without one the server ends the handshake (with TLS 1.3 the client learns it when
    // it reads the answer, so either error is fine).
    let anonymous = WireClient::builder(&url).ca_file(pki.ca()).build().unwrap();
    let error = error_of(within("version", anonymous.version()).await);
    assert!(error.is_connect() || error.is_transport(), "{error:?}");
}

#[tokio::test]
async fn the_bearer_token_goes_with_every_request_and_a_refusal_keeps_its_message() {
    let pki = Pki::new();
    let mut server = tiny_server(&pki, false, Some("s3cret")).await;
    let url = format!("https://localhost:{}", server.port);

    // The high-level client's builder passes the same options down.
    let client = Client::builder()
        .ca_file(pki.ca())
        .token("s3cret")
        .remote(&url)
        .unwrap();
    let wire = client.wire().unwrap();
    for _ in 0..2 {
        assert_eq!(within("version", wire.version()).await.unwrap(), "tiny");
        let seen = server.next_seen().await;
        assert_eq!(seen.authorization.as_deref(), Some("Bearer s3cret"));
    }
    // The token never shows in debug output.
    assert!(!format!("{:?}", Client::builder().token("s3cret")).contains("s3cret"));

    let wrong = WireClient::builder(&url)
        .ca_file(pki.ca())
        .token("guess")
        .build()
        .unwrap();
    let error = error_of(within("version", wrong.version()).await);
    assert!(error.is_denied(), "{error:?}");
    assert_eq!(error.status().map(|s| s.as_u16()), Some(401));
    assert_eq!(error.message().as_deref(), Some("unknown token"));
    assert!(error.to_string().contains("unknown token"), "{error}");
    assert_eq!(
        server.next_seen().await.authorization.as_deref(),
        Some("Bearer guess")
    );
}

#[tokio::test]
async fn unusable_tls_files_are_errors_naming_the_file() {
    let pki = Pki::new();
    let url = "https://localhost:1";
    let missing = pki.dir().join("nowhere.pem");

    let error = error_of(WireClient::builder(url).ca_file(&missing).build());
    assert!(error.is_tls(), "{error:?}");
    assert!(error.to_string().contains("nowhere.pem"), "{error}");

    // A certificate where the key should be.
    let (cert, _key) = pki.client("bob");
    let error = error_of(
        WireClient::builder(url)
            .ca_file(pki.ca())
            .client_cert(&cert, &cert)
            .build(),
    );
    assert!(error.is_tls(), "{error:?}");
    let text = error.to_string();
    assert!(
        text.contains("client key file") && text.contains("client-bob.pem"),
        "{text}"
    );

    // A key that is not the certificate's.
    let error = error_of(
        WireClient::builder(url)
            .ca_file(pki.ca())
            .client_cert(&cert, pki.server_key())
            .build(),
    );
    assert!(error.is_tls(), "{error:?}");

    // An http URL reads no TLS file: a stale REG_CA does not break a plain registry.
    assert!(WireClient::builder("http://localhost:1")
        .ca_file(&missing)
        .build()
        .is_ok());

    // A token that cannot go in a header is refused without echoing it.
    let error = error_of(WireClient::builder(url).token("s3cret\nX-Evil: 1").build());
    assert!(!error.to_string().contains("s3cret"), "{error}");
}
