//! TLS for an `https://` registry: which server certificates to trust, and the client's own
//! certificate for mutual TLS. Also used by `reg bench` for its hand-rolled connections.
//!
//! There is no crate for the platform's root store among our dependencies, so without a CA
//! file the client trusts the system's PEM bundle ([`SYSTEM_CA_BUNDLES`]); a registry with a
//! private CA, the usual case, is given its CA file.

use std::path::{Path, PathBuf};

use rustls::{ClientConfig, RootCertStore};

use crate::client::error::ClientError;
use crate::tls::provider;

fn certificates(
    path: &Path,
    what: &str,
) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>, ClientError> {
    crate::tls::certificates(path, what).map_err(ClientError::Tls)
}

fn ca_roots(path: &Path) -> Result<RootCertStore, ClientError> {
    crate::tls::roots(path, "CA file").map_err(ClientError::Tls)
}

fn private_key(path: &Path) -> Result<rustls_pki_types::PrivateKeyDer<'static>, ClientError> {
    crate::tls::private_key(path, "client key file").map_err(ClientError::Tls)
}

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
