//! Test certificates made with the `openssl` command line: a CA, a server certificate for
//! `localhost` and 127.0.0.1, and client certificates on demand, all signed by the CA.
//!
//! X.509 v3 throughout (webpki, under rustls, refuses v1, which `openssl x509 -req` makes
//! without an extension file), EC P-256 keys in PKCS#8 PEM. Made fresh in a temporary
//! directory per test rather than checked in, so none can expire under the suite.

use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

/// Days the certificates are valid: long enough for any test run.
const DAYS: &str = "3650";

/// A CA and the certificates it signed, in a temporary directory removed on drop.
#[derive(Debug)]
pub struct Pki {
    dir: TempDir,
}

impl Pki {
    /// Writes `ca.pem`/`ca.key` and `server.pem`/`server.key` (for `localhost` and
    /// 127.0.0.1). Panics if `openssl` is missing or fails: the test cannot run without it.
    pub fn new() -> Pki {
        let pki = Pki {
            dir: tempfile::tempdir().unwrap(),
        };
        pki.write(
            "ca.ext",
            "[req]\ndistinguished_name = dn\n[dn]\n[v3_ca]\n\
             basicConstraints = critical, CA:TRUE\n\
             keyUsage = critical, keyCertSign, cRLSign\n\
             subjectKeyIdentifier = hash\n",
        );
        pki.key("ca.key");
        // A name of its own per CA: of two CAs with one name, either would be taken for the
        // other's certificates' issuer (failing on the signature, not as an unknown issuer).
        let dir_name = pki.dir.path().file_name().unwrap().to_string_lossy();
        pki.openssl(
            "req -x509 -new -sha256 -config ca.ext -extensions v3_ca -key ca.key -out ca.pem",
            &[
                "-days",
                DAYS,
                "-subj",
                &format!("/CN=reg test CA {dir_name}"),
            ],
        );
        pki.sign(
            "server",
            "localhost",
            "extendedKeyUsage = serverAuth\nsubjectAltName = DNS:localhost, IP:127.0.0.1\n",
        );
        pki
    }

    /// The directory holding the files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The CA certificate (PEM): what a client or server trusts.
    pub fn ca(&self) -> PathBuf {
        self.path("ca.pem")
    }

    /// The CA's private key (PKCS#8 PEM).
    pub fn ca_key(&self) -> PathBuf {
        self.path("ca.key")
    }

    /// The server certificate (PEM) for `localhost` and 127.0.0.1.
    pub fn server_cert(&self) -> PathBuf {
        self.path("server.pem")
    }

    /// The server certificate's private key (PKCS#8 PEM).
    pub fn server_key(&self) -> PathBuf {
        self.path("server.key")
    }

    /// Makes `client-<cn>.pem` and `client-<cn>.key`: a client certificate with common name
    /// `cn` (letters, digits, `-`, `_`, `.`), signed by the CA. Returns (certificate, key).
    pub fn client(&self, cn: &str) -> (PathBuf, PathBuf) {
        assert!(
            cn.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')),
            "client CN {cn:?}: keep it to a file-name-safe word"
        );
        let name = format!("client-{cn}");
        self.sign(&name, cn, "extendedKeyUsage = clientAuth\n");
        (
            self.path(&format!("{name}.pem")),
            self.path(&format!("{name}.key")),
        )
    }

    /// Makes `<name>.key` and `<name>.pem` with subject `CN=<cn>`, an end-entity certificate
    /// signed by the CA with `extensions` beside the usual ones.
    fn sign(&self, name: &str, cn: &str, extensions: &str) {
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        let ext = format!("{name}.ext");
        let pem = format!("{name}.pem");
        self.key(&key);
        self.openssl(
            "req -new -sha256 -config ca.ext",
            &["-key", &key, "-subj", &format!("/CN={cn}"), "-out", &csr],
        );
        self.write(
            &ext,
            &format!(
                "basicConstraints = critical, CA:FALSE\n\
                 keyUsage = critical, digitalSignature\n\
                 subjectKeyIdentifier = hash\n\
                 authorityKeyIdentifier = keyid\n\
                 {extensions}"
            ),
        );
        self.openssl(
            "x509 -req -sha256 -CA ca.pem -CAkey ca.key -CAcreateserial -CAserial ca.srl",
            &["-days", DAYS, "-in", &csr, "-extfile", &ext, "-out", &pem],
        );
    }

    /// An EC P-256 private key in PKCS#8 PEM (`genpkey`'s format).
    fn key(&self, file: &str) {
        self.openssl(
            "genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256",
            &["-out", file],
        );
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    fn write(&self, file: &str, text: &str) {
        std::fs::write(self.path(file), text).unwrap();
    }

    /// Runs `openssl <command> <args>` in the directory (`command` split on spaces);
    /// panics with its stderr if it fails.
    fn openssl(&self, command: &str, args: &[&str]) {
        let output = Command::new("openssl")
            .args(command.split_whitespace())
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap_or_else(|e| panic!("cannot run openssl (is it installed?): {e}"));
        assert!(
            output.status.success(),
            "openssl {command} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Default for Pki {
    fn default() -> Self {
        Pki::new()
    }
}
