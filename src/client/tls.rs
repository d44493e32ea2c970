//! TLS for an `https://` registry: which server certificates to trust, and the client's own
//! certificate for mutual TLS. Also used by `reg bench` for its hand-rolled connections.
//!
//! There is no crate for the platform's root store among our dependencies, so without a CA
//! file the client trusts the system's PEM bundle ([`SYSTEM_CA_BUNDLES`]); a registry with a
//! private CA, the usual case, is given its CA file.

use std::path::{Path, PathBuf};

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::client::error::ClientError;

/// Where Linux distributions keep the system's trusted CAs as one PEM bundle, tried in order
/// when no CA file is given: Debian, Ubuntu, Alpine and Arch; then Fedora, RHEL and CentOS.
pub(crate) const SYSTEM_CA_BUNDLES: [&str; 2] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
];

/// The files behind a TLS client set-up. Paths, not loaded contents, so a builder stays cheap
/// to clone and a file's errors are reported when the client is built.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TlsFiles {
    /// PEM file of the CA certificate(s) to trust; `None`: the system bundle.
    pub(crate) ca_file: Option<PathBuf>,
    /// PEM client certificate (chain) and its private key, for mutual TLS.
    pub(crate) client_cert: Option<(PathBuf, PathBuf)>,
}

/// The ring provider, named explicitly rather than installed process-wide, so the client
/// neither depends on nor changes what the rest of the process chose.
///
/// rustls 0.23.48 deprecates it for lacking post-quantum key exchange (only aws-lc-rs has it);
/// the `tls` feature picks ring on purpose (Cargo.toml: half the build time, no cmake).
#[allow(deprecated)]
fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    // std's Arc, not crate::sync's: rustls's API takes it.
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}

/// A rustls client configuration from `files`: HTTP/1.1 only (no ALPN), TLS 1.2 and 1.3.
pub(crate) fn client_config(files: &TlsFiles) -> Result<ClientConfig, ClientError> {
    let roots = match &files.ca_file {
        Some(path) => ca_roots(path)?,
        None => system_roots()?,
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|error| ClientError::Tls(format!("cannot set up TLS: {error}")))?
        .with_root_certificates(roots);
    match &files.client_cert {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let chain = certificates(cert, "client certificate file")?;
            let private_key = private_key(key)?;
            builder
                .with_client_auth_cert(chain, private_key)
                .map_err(|error| {
                    ClientError::Tls(format!(
                        "cannot use the client certificate {} with the key {}: {error}",
                        cert.display(),
                        key.display()
                    ))
                })
        }
    }
}

/// A configuration for a client that never speaks TLS (an `http://` registry): hyper-rustls's
/// connector needs one, and building it reads no file.
pub(crate) fn plain_config() -> Result<ClientConfig, ClientError> {
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|error| ClientError::Tls(format!("cannot set up TLS: {error}")))?
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth())
}

/// Every certificate in the CA file, each of which must parse: a user's CA file with a broken
/// certificate is a mistake worth reporting, not skipping.
fn ca_roots(path: &Path) -> Result<RootCertStore, ClientError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(path, "CA file")? {
        roots.add(cert).map_err(|error| {
            ClientError::Tls(format!(
                "the CA file {} holds a certificate that cannot be used: {error}",
                path.display()
            ))
        })?;
    }
    Ok(roots)
}

/// The first system bundle that exists; certificates rustls cannot use are skipped there, as
/// a system bundle is not ours to fix.
fn system_roots() -> Result<RootCertStore, ClientError> {
    let Some(path) = SYSTEM_CA_BUNDLES
        .iter()
        .map(Path::new)
        .find(|path| path.is_file())
    else {
        return Err(ClientError::Tls(format!(
            "no CA to trust for https: give a CA file (--ca, REG_CA); no system bundle at {}",
            SYSTEM_CA_BUNDLES.join(" or ")
        )));
    };
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certificates(path, "CA bundle")?);
    if added == 0 {
        return Err(ClientError::Tls(format!(
            "the system CA bundle {} holds no usable certificate; give a CA file (--ca, REG_CA)",
            path.display()
        )));
    }
    Ok(roots)
}

/// The PEM certificates in `path`, at least one. `what` names the file's role in errors.
fn certificates(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let pem = read(path, what)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| {
            ClientError::Tls(format!(
                "the {what} {} is not valid PEM: {error}",
                path.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(ClientError::Tls(format!(
            "the {what} {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        )));
    }
    Ok(certs)
}

/// The first private key in `path`: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, ClientError> {
    let what = "client key file";
    let pem = read(path, what)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|error| {
        let reason = match error {
            rustls_pki_types::pem::Error::NoItemsFound => {
                "holds no PEM private key (-----BEGIN PRIVATE KEY-----)".to_owned()
            }
            error => format!("is not a valid PEM private key: {error}"),
        };
        ClientError::Tls(format!("the {what} {} {reason}", path.display()))
    })
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|error| {
        ClientError::Tls(format!(
            "cannot read the {what} {}: {error}",
            path.display()
        ))
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn message(result: Result<ClientConfig, ClientError>) -> String {
        match result {
            Ok(_) => panic!("accepted"),
            Err(error) => {
                assert!(error.is_tls(), "{error:?}");
                error.to_string()
            }
        }
    }

    #[test]
    fn file_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not pem at all\n").unwrap();

        let text = message(client_config(&TlsFiles {
            ca_file: Some(missing.clone()),
            client_cert: None,
        }));
        assert!(
            text.contains("cannot read the CA file") && text.contains("missing.pem"),
            "{text}"
        );
        let text = message(client_config(&TlsFiles {
            ca_file: Some(empty.clone()),
            client_cert: None,
        }));
        assert!(
            text.contains("empty.pem") && text.contains("no PEM certificate"),
            "{text}"
        );
    }

    #[test]
    fn a_plain_config_reads_nothing() {
        assert!(plain_config().is_ok());
    }
}
