//! HTTPS: `reg serve --tls-cert FILE --tls-key FILE [--tls-client-ca FILE]`.
//!
//! rustls with the `ring` provider (it builds in about half the time of aws-lc-rs on two
//! cores and needs no cmake; both are constant-time and maintained). With a client CA, every
//! client must present a certificate that CA signed (mTLS), and the certificate's identity —
//! the subject's common name, or its first subject alternative name when it has no CN — is the
//! caller's identity for `--auth`'s `cert = "…"` principals.
//!
//! # Reload
//! [`Tls::reload`] reads the files again (`reg serve` calls it on SIGHUP) and swaps the
//! configuration new connections are accepted with; open connections keep the one they were
//! accepted with and are not dropped. A reload that fails keeps the old configuration.

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::CertificateDer;
use tokio_rustls::TlsAcceptor;

use crate::server::error::ServerError;

/// The PEM files a TLS server is configured from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server's certificate chain (leaf first).
    pub cert: PathBuf,
    /// The server's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// When set, clients must present a certificate signed by one of these CAs (mTLS).
    pub client_ca: Option<PathBuf>,
}

/// A server's TLS configuration, reloadable while serving.
pub struct Tls {
    files: TlsFiles,
    acceptor: ArcSwap<TlsAcceptor>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Reads the files and builds the configuration.
    ///
    /// # Errors
    /// [`ServerError::Tls`] naming the file and what is wrong with it.
    pub fn load(files: TlsFiles) -> Result<Arc<Tls>, ServerError> {
        let acceptor = acceptor(&files)?;
        Ok(Arc::new(Tls {
            files,
            acceptor: ArcSwap::from_pointee(acceptor),
        }))
    }

    /// Reads the files again; new connections use them. On error the old configuration
    /// stays.
    ///
    /// # Errors
    /// As [`load`](Self::load).
    pub fn reload(&self) -> Result<(), ServerError> {
        let acceptor = acceptor(&self.files)?;
        self.acceptor.store(Arc::new(acceptor));
        Ok(())
    }

    /// Whether clients must present a certificate.
    pub fn requires_client_cert(&self) -> bool {
        self.files.client_ca.is_some()
    }

    /// The acceptor for a new connection.
    pub(crate) fn acceptor(&self) -> Arc<TlsAcceptor> {
        self.acceptor.load_full()
    }
}

fn acceptor(files: &TlsFiles) -> Result<TlsAcceptor, ServerError> {
    let certs =
        crate::tls::certificates(&files.cert, "certificate file").map_err(ServerError::Tls)?;
    let key = crate::tls::private_key(&files.key, "key file").map_err(ServerError::Tls)?;
    let provider = crate::tls::provider();
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| ServerError::Tls(e.to_string()))?;
    let builder = match &files.client_ca {
        Some(path) => {
            let roots = crate::tls::roots(path, "client CA file").map_err(ServerError::Tls)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| {
                    ServerError::Tls(format!("the client CA file {}: {e}", path.display()))
                })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| {
        ServerError::Tls(format!(
            "the certificate {} does not go with the key {}: {e}",
            files.cert.display(),
            files.key.display()
        ))
    })?;
    // HTTP/1.1 only over TLS (reg's clients speak it; h2 over TLS is not negotiated).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The identity in a verified client certificate: its subject's common name, or its first
/// subject alternative name (DNS name, email, URI or IP) when it has no CN.
pub(crate) fn identity(cert: &CertificateDer<'_>) -> Option<Arc<str>> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (_, parsed) = X509Certificate::from_der(cert.as_ref()).ok()?;
    if let Some(cn) = parsed
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
    {
        return Some(Arc::from(cn));
    }
    let san = parsed.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|name| match name {
        GeneralName::DNSName(text) | GeneralName::RFC822Name(text) | GeneralName::URI(text) => {
            Some(Arc::from(*text))
        }
        GeneralName::IPAddress(bytes) => match bytes.len() {
            4 => <[u8; 4]>::try_from(*bytes)
                .ok()
                .map(|b| Arc::from(std::net::IpAddr::from(b).to_string())),
            16 => <[u8; 16]>::try_from(*bytes)
                .ok()
                .map(|b| Arc::from(std::net::IpAddr::from(b).to_string())),
            _ => None,
        },
        _ => None,
    })
}
