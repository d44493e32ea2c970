//! Who is calling and what they may do: `reg serve --auth FILE`.
//!
//! A caller is a **principal** named in the file, found by its bearer token
//! (`Authorization: Bearer …`, or `X-Consul-Token` as Consul's clients send it) or by the
//! identity of its client certificate (mTLS: the subject's CN, or its first SAN). A caller
//! with neither is `anonymous`, whose rules the file's `[anonymous]` table gives (none when
//! absent). Without `--auth` the server is open, as reg always was: `anonymous` holds every
//! right on every name.
//!
//! ```toml
//! [anonymous]                          # callers without credentials
//! rules = [{ names = "public.*", rights = ["read"] }]
//!
//! [[principal]]
//! name = "dashboard"
//! token = "sha256:…"                   # `reg token hash` prints it
//! rules = [{ names = "*", rights = ["read", "request"] }]
//!
//! [[principal]]
//! name = "sensor-17"
//! cert = "sensor-17.fleet"             # its client certificate's CN or first SAN
//! rules = [{ prefix = "sensors.17.", rights = ["provide", "take"] }]
//!
//! [[principal]]
//! name = "ops"
//! token = "sha256:…"
//! rules = [{ names = "*", rights = ["admin"] }]
//! ```
//!
//! Rights (see [`Right`]): `read`, `provide`, `request`, `take`, and `admin` (all of them on the
//! names it covers; on `*` also `/metrics`). A rule covers names by `names` (a glob: `*` any
//! run of characters, `?` one) or `prefix`. Discovery's instances are the registers
//! `svc/<service>/<id>`, so `svc/web/*` covers the service `web`.
//!
//! Tokens are stored as SHA-256 hashes, not with a slow password hash: they are random
//! secrets of 128 bits or more (`reg token new` makes 256), which no dictionary can guess, so
//! a fast hash loses nothing and costs nothing per request (as GitHub and npm store theirs).

mod rules;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use rules::{Pattern, Rule, Rules};
pub use rules::{Right, Rights};

use crate::server::error::ServerError;
use crate::store::Origin;
use crate::sync::Arc;

/// The principal name of callers without credentials.
pub const ANONYMOUS: &str = "anonymous";

/// The hash of `token` as the `--auth` file stores it: `sha256:<64 lowercase hex digits>`.
pub fn hash_token(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for byte in digest {
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Why an `--auth` file was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The file could not be read.
    #[error("cannot read {path}: {error}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        error: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape.
    #[error("{0}")]
    Parse(String),
    /// A principal or rule is invalid.
    #[error("{0}")]
    Invalid(String),
}

/// One caller the file names (or `anonymous`), with its rules.
#[derive(Debug)]
pub struct Principal {
    name: Arc<str>,
    rules: Rules,
}

impl Principal {
    /// The principal's name (`anonymous` for callers without credentials).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether this is the `anonymous` principal.
    pub fn is_anonymous(&self) -> bool {
        &*self.name == ANONYMOUS
    }

    /// Whether it holds `right` on `name`.
    pub fn can(&self, right: Right, name: &str) -> bool {
        self.rules.grants(right, name)
    }
}

/// The principals of an `--auth` file, or the open registry without one.
#[derive(Debug)]
pub struct Auth {
    open: bool,
    anonymous: Arc<Principal>,
    by_token: HashMap<[u8; 32], Arc<Principal>>,
    by_cert: HashMap<Box<str>, Arc<Principal>>,
}

impl Default for Auth {
    fn default() -> Self {
        Self::open()
    }
}

impl Auth {
    /// No `--auth`: every caller may do everything.
    pub fn open() -> Auth {
        Auth {
            open: true,
            anonymous: Arc::new(Principal {
                name: Arc::from(ANONYMOUS),
                rules: Rules::new(vec![Rule {
                    pattern: Pattern::Any,
                    rights: Rights::ALL,
                }]),
            }),
            by_token: HashMap::new(),
            by_cert: HashMap::new(),
        }
    }

    /// Whether this is the open registry (no `--auth`).
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Reads an `--auth` file.
    ///
    /// # Errors
    /// [`AuthError`] naming the file and what is wrong in it.
    pub fn load(path: &Path) -> Result<Auth, AuthError> {
        let text = std::fs::read_to_string(path).map_err(|error| AuthError::Read {
            path: path.display().to_string(),
            error,
        })?;
        Self::from_toml(&text).map_err(|error| match error {
            AuthError::Parse(message) | AuthError::Invalid(message) => {
                AuthError::Invalid(format!("{}: {message}", path.display()))
            }
            other => other,
        })
    }

    /// Parses the text of an `--auth` file (see the [module docs](self)).
    ///
    /// # Errors
    /// [`AuthError::Parse`] for bad TOML or unknown keys, [`AuthError::Invalid`] for a bad
    /// token hash, right or a credential two principals share.
    pub fn from_toml(text: &str) -> Result<Auth, AuthError> {
        let file: File = toml::from_str(text).map_err(|e| AuthError::Parse(e.to_string()))?;
        let anonymous = Arc::new(Principal {
            name: Arc::from(ANONYMOUS),
            rules: rules(
                ANONYMOUS,
                file.anonymous.map(|a| a.rules).unwrap_or_default(),
            )?,
        });
        let mut auth = Auth {
            open: false,
            anonymous,
            by_token: HashMap::new(),
            by_cert: HashMap::new(),
        };
        let mut names = std::collections::HashSet::new();
        for entry in file.principals {
            let invalid =
                |what: String| AuthError::Invalid(format!("principal {:?}: {what}", entry.name));
            if entry.name.is_empty() || entry.name == ANONYMOUS {
                return Err(invalid(
                    "a principal needs a name other than \"anonymous\"".into(),
                ));
            }
            if !names.insert(entry.name.clone()) {
                return Err(invalid("named twice".into()));
            }
            if entry.token.is_none() && entry.cert.is_none() {
                return Err(invalid("needs a token or a cert (or both)".into()));
            }
            let principal = Arc::new(Principal {
                name: Arc::from(entry.name.as_str()),
                rules: rules(&entry.name, entry.rules)?,
            });
            if let Some(token) = &entry.token {
                let hash = parse_hash(token).ok_or_else(|| {
                    invalid(format!(
                        "token must be a hash, sha256:<64 hex digits> (`reg token hash` prints it), not {:?}",
                        token.chars().take(12).collect::<String>()
                    ))
                })?;
                if auth.by_token.insert(hash, Arc::clone(&principal)).is_some() {
                    return Err(invalid("its token is another principal's too".into()));
                }
            }
            if let Some(cert) = &entry.cert {
                if auth
                    .by_cert
                    .insert(cert.as_str().into(), Arc::clone(&principal))
                    .is_some()
                {
                    return Err(invalid(format!("cert {cert:?} is another principal's too")));
                }
            }
        }
        Ok(auth)
    }

    /// The `anonymous` principal: what callers without credentials may do.
    pub fn anonymous(&self) -> &Principal {
        &self.anonymous
    }

    /// Whether some principal is named by a certificate identity (`cert = …`): such a
    /// principal can only call over mTLS.
    pub fn has_cert_principals(&self) -> bool {
        !self.by_cert.is_empty()
    }

    /// The principals the file names (without `anonymous`).
    pub fn principals(&self) -> usize {
        let mut seen: Vec<*const Principal> = self
            .by_token
            .values()
            .chain(self.by_cert.values())
            .map(Arc::as_ptr)
            .collect();
        seen.sort_unstable();
        seen.dedup();
        seen.len()
    }

    /// Who is calling: the principal of the bearer token when one is sent (an unknown token
    /// is refused, never taken as anonymous), else of the client certificate's identity, else
    /// `anonymous`.
    pub(crate) fn authenticate(
        &self,
        token: Option<&str>,
        cert: Option<&str>,
    ) -> Result<Arc<Principal>, ServerError> {
        if let Some(token) = token {
            let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
            return match self.by_token.get(&digest) {
                Some(principal) => Ok(Arc::clone(principal)),
                None if self.open => Ok(Arc::clone(&self.anonymous)),
                None => Err(ServerError::unauthorized("unknown token")),
            };
        }
        if let Some(principal) = cert.and_then(|cert| self.by_cert.get(cert)) {
            return Ok(Arc::clone(principal));
        }
        Ok(Arc::clone(&self.anonymous))
    }
}

/// `sha256:<hex>` → the digest.
fn parse_hash(text: &str) -> Option<[u8; 32]> {
    let hex = text.strip_prefix("sha256:")?.as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        *byte = (digit(pair[0])? << 4) | digit(pair[1])?;
    }
    Some(out)
}

fn rules(principal: &str, entries: Vec<FileRule>) -> Result<Rules, AuthError> {
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        let invalid = |what: String| AuthError::Invalid(format!("principal {principal:?}: {what}"));
        let pattern = match (entry.names, entry.prefix) {
            (Some(names), None) => Pattern::new(&names),
            (None, Some(prefix)) if prefix.contains(['*', '?']) => {
                return Err(invalid(format!(
                    "prefix {prefix:?} holds a wildcard: use names = \"{prefix}\" for a glob"
                )))
            }
            (None, Some(prefix)) => Pattern::new(&format!("{prefix}*")),
            _ => {
                return Err(invalid(
                    "each rule needs exactly one of names or prefix".into(),
                ))
            }
        };
        if entry.rights.is_empty() {
            return Err(invalid("a rule with no rights".into()));
        }
        let mut rights = Rights::default();
        for text in &entry.rights {
            let right = Right::parse(text).ok_or_else(|| {
                invalid(format!(
                    "unknown right {text:?} (rights: read, provide, request, take, admin)"
                ))
            })?;
            rights = rights.with(right);
        }
        out.push(Rule { pattern, rights });
    }
    Ok(Rules::new(out))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    anonymous: Option<FileAnonymous>,
    #[serde(default, rename = "principal")]
    principals: Vec<FilePrincipal>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAnonymous {
    #[serde(default)]
    rules: Vec<FileRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePrincipal {
    name: String,
    token: Option<String>,
    cert: Option<String>,
    #[serde(default)]
    rules: Vec<FileRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRule {
    names: Option<String>,
    prefix: Option<String>,
    #[serde(default)]
    rights: Vec<String>,
}

/// A name check: which names of a request the caller may touch with one right.
pub(crate) type NameFilter = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// One request's caller: its principal and the origin its changes are made for.
#[derive(Clone)]
pub(crate) struct Caller {
    principal: Arc<Principal>,
    origin: Origin,
}

impl fmt::Debug for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Caller")
            .field("principal", &self.principal.name)
            .field("origin", &self.origin)
            .finish()
    }
}

impl Caller {
    /// `cert`: the identity of the connection's client certificate, if any. A certificate no
    /// principal claims has the rights of `anonymous`; the audit then names it as
    /// `anonymous (cert <identity>)`.
    pub(crate) fn new(
        principal: Arc<Principal>,
        request_id: &str,
        peer: SocketAddr,
        cert: Option<&str>,
    ) -> Self {
        let origin = match cert.filter(|_| principal.is_anonymous()) {
            Some(cert) => Origin::new(
                &format!("{ANONYMOUS} (cert {cert})"),
                request_id,
                Some(peer),
            ),
            None => Origin::new(&principal.name, request_id, Some(peer)),
        };
        Self { principal, origin }
    }

    /// Who this caller is, for the registry's commit path and the audit.
    pub(crate) fn origin(&self) -> &Origin {
        &self.origin
    }

    pub(crate) fn can(&self, right: Right, name: &str) -> bool {
        self.principal.rules.grants(right, name)
    }

    /// Whether `right` holds on every name (no filtering needed).
    pub(crate) fn everywhere(&self, right: Right) -> bool {
        self.principal.rules.grants_everywhere(right)
    }

    /// `None` when `right` holds everywhere; else the check for one name.
    pub(crate) fn filter(&self, right: Right) -> Option<NameFilter> {
        if self.everywhere(right) {
            return None;
        }
        let principal = Arc::clone(&self.principal);
        Some(Arc::new(move |name: &str| {
            principal.rules.grants(right, name)
        }))
    }

    /// The refusal for `right` on `name` (`None`: a right needed on every name, `/metrics`):
    /// 401 for an anonymous caller (credentials would help), 403 for a principal.
    pub(crate) fn refusal(&self, right: Right, name: Option<&str>) -> ServerError {
        if self.principal.is_anonymous() {
            ServerError::Unauthorized {
                message: match name {
                    Some(name) => format!(
                        "credentials required: {right} on register {}",
                        crate::server::error::quote(name)
                    ),
                    None => format!("credentials required: {right}"),
                },
                name: name.map(str::to_owned),
            }
        } else {
            ServerError::Forbidden {
                principal: self.principal.name.to_string(),
                right,
                name: name.map(str::to_owned),
            }
        }
    }

    /// Every name must be allowed `right`: else the refusal naming the first that is not.
    pub(crate) fn require<'a>(
        &self,
        right: Right,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), ServerError> {
        if self.everywhere(right) {
            return Ok(());
        }
        match names.into_iter().find(|name| !self.can(right, name)) {
            Some(name) => Err(self.refusal(right, Some(name))),
            None => Ok(()),
        }
    }

    /// `right` on every name (`/metrics`).
    pub(crate) fn require_everywhere(&self, right: Right) -> Result<(), ServerError> {
        if self.everywhere(right) {
            Ok(())
        } else {
            Err(self.refusal(right, None))
        }
    }

    /// `right` on some name at least (a read of "everything I may see"): a caller with none
    /// is refused rather than shown an empty registry it might take for the truth.
    pub(crate) fn require_somewhere(&self, right: Right) -> Result<(), ServerError> {
        if self.principal.rules.grants_somewhere(right) {
            Ok(())
        } else {
            Err(self.refusal(right, None))
        }
    }

    /// What a caller with `right` on some names may touch: `None` when it holds `right`
    /// everywhere, else the check for one name; refused when it holds it nowhere.
    pub(crate) fn scope(&self, right: Right) -> Result<Option<NameFilter>, ServerError> {
        let filter = self.filter(right);
        if filter.is_some() {
            self.require_somewhere(right)?;
        }
        Ok(filter)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const FILE: &str = r#"
[anonymous]
rules = [{ names = "public.*", rights = ["read"] }]

[[principal]]
name = "dashboard"
token = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
rules = [{ names = "*", rights = ["read", "request"] }]

[[principal]]
name = "sensor-17"
cert = "sensor-17.fleet"
rules = [{ prefix = "sensors.17.", rights = ["provide", "take"] }]
"#;

    #[test]
    fn hash_is_sha256_hex() {
        assert_eq!(
            hash_token("hello"),
            "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
    }

    #[test]
    fn authenticates_by_token_then_cert_then_anonymous() {
        let auth = Auth::from_toml(FILE).unwrap();
        assert!(!auth.is_open());
        assert_eq!(auth.principals(), 2);
        let by_token = auth
            .authenticate(Some("hello"), Some("sensor-17.fleet"))
            .unwrap();
        assert_eq!(by_token.name(), "dashboard");
        let by_cert = auth.authenticate(None, Some("sensor-17.fleet")).unwrap();
        assert_eq!(by_cert.name(), "sensor-17");
        assert!(by_cert.can(Right::Provide, "sensors.17.temp"));
        assert!(!by_cert.can(Right::Provide, "sensors.18.temp"));
        assert!(!by_cert.can(Right::Read, "sensors.17.temp"));
        let nobody = auth.authenticate(None, Some("stranger")).unwrap();
        assert!(nobody.is_anonymous());
        assert!(nobody.can(Right::Read, "public.x"));
        assert!(!nobody.can(Right::Read, "private"));
        let wrong = auth.authenticate(Some("guess"), None).unwrap_err();
        assert_eq!(wrong.status(), hyper::StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn open_grants_everything() {
        let auth = Auth::open();
        let caller = auth.authenticate(Some("whatever"), None).unwrap();
        for right in Right::ALL {
            assert!(caller.can(right, "x"));
        }
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        let cases = [
            ("[[principal]]\nname = \"a\"\ntoken = \"plain\"", "token must be a hash"),
            ("[[principal]]\nname = \"a\"", "needs a token or a cert"),
            (
                "[[principal]]\nname = \"a\"\ncert = \"x\"\nrules = [{ names = \"*\", rights = [\"write\"] }]",
                "unknown right \"write\"",
            ),
            (
                "[[principal]]\nname = \"a\"\ncert = \"x\"\n[[principal]]\nname = \"b\"\ncert = \"x\"",
                "another principal's",
            ),
            ("[[principal]]\nname = \"anonymous\"\ncert = \"x\"", "other than"),
            ("[anonymous]\nrule = []", "unknown field"),
            (
                "[[principal]]\nname = \"a\"\ncert = \"x\"\nrules = [{ rights = [\"read\"] }]",
                "exactly one of names or prefix",
            ),
            (
                "[[principal]]\nname = \"a\"\ncert = \"x\"\nrules = [{ prefix = \"a*\", rights = [\"read\"] }]",
                "holds a wildcard",
            ),
        ];
        for (text, expected) in cases {
            let error = Auth::from_toml(text).unwrap_err().to_string();
            assert!(error.contains(expected), "{text:?}: {error}");
        }
    }

    #[test]
    fn refusals_are_401_for_anonymous_and_403_for_principals() {
        let auth = Auth::from_toml(FILE).unwrap();
        let peer = SocketAddr::from(([127, 0, 0, 1], 1));
        let anonymous = Caller::new(auth.authenticate(None, None).unwrap(), "r1", peer, None);
        let sensor = Caller::new(
            auth.authenticate(None, Some("sensor-17.fleet")).unwrap(),
            "r2",
            peer,
            Some("sensor-17.fleet"),
        );
        assert_eq!(sensor.origin().identity(), "sensor-17");
        let stranger = Caller::new(
            auth.authenticate(None, Some("stranger")).unwrap(),
            "r3",
            peer,
            Some("stranger"),
        );
        assert_eq!(stranger.origin().identity(), "anonymous (cert stranger)");
        let error = anonymous.require(Right::Provide, ["public.x"]).unwrap_err();
        assert_eq!(error.status(), hyper::StatusCode::UNAUTHORIZED);
        let error = sensor
            .require(Right::Provide, ["sensors.17.a", "sensors.18.a", "z"])
            .unwrap_err();
        assert_eq!(error.status(), hyper::StatusCode::FORBIDDEN);
        assert!(error.to_string().contains("sensors.18.a"), "{error}");
        assert!(sensor.require(Right::Provide, ["sensors.17.a"]).is_ok());
        assert!(sensor.require_somewhere(Right::Read).is_err());
        assert!(anonymous.require_somewhere(Right::Read).is_ok());
        let filter = anonymous.filter(Right::Read).unwrap();
        assert!(filter("public.a") && !filter("sensors.17.a"));
    }
}
