//! What the server's and the client's TLS share: the crypto provider and reading PEM files,
//! with errors that name the file and its role (`CA file`, `client key file`, …).

use std::path::Path;

use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The ring provider, named explicitly rather than installed process-wide, so reg neither
/// depends on nor changes what the rest of the process chose.
///
/// rustls 0.23.48 deprecates it for lacking post-quantum key exchange (only aws-lc-rs has it);
/// the `tls` feature picks ring on purpose (Cargo.toml: half the build time, no cmake), and
/// classic ECDHE is what reg's Python, Go and JS clients negotiate.
#[allow(deprecated)]
pub(crate) fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    // std's Arc, not crate::sync's: rustls's API takes it.
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}

/// The PEM certificates in `path`, at least one. `what` names the file's role in errors.
pub(crate) fn certificates(
    path: &Path,
    what: &str,
) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read(path, what)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| format!("the {what} {} is not valid PEM: {error}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "the {what} {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(certs)
}

/// Every certificate in a CA file, each of which must be usable: a CA file with a broken
/// certificate is a mistake worth reporting, not skipping.
pub(crate) fn roots(path: &Path, what: &str) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(path, what)? {
        roots.add(cert).map_err(|error| {
            format!(
                "the {what} {} holds a certificate that cannot be used: {error}",
                path.display()
            )
        })?;
    }
    Ok(roots)
}

/// The first private key in `path`: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
pub(crate) fn private_key(path: &Path, what: &str) -> Result<PrivateKeyDer<'static>, String> {
    let pem = read(path, what)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|error| {
        let reason = match error {
            rustls_pki_types::pem::Error::NoItemsFound => {
                "holds no PEM private key (-----BEGIN PRIVATE KEY-----)".to_owned()
            }
            error => format!("is not a valid PEM private key: {error}"),
        };
        format!("the {what} {} {reason}", path.display())
    })
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path)
        .map_err(|error| format!("cannot read the {what} {}: {error}", path.display()))
}
