//! The registry's base URL and the query strings the client sends.

use std::fmt::Write as _;

use hyper::Uri;

use crate::client::error::ClientError;

/// A validated `http[s]://host[:port][/prefix]` URL: where every endpoint path is appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BaseUrl {
    /// `http://host:port` or `https://host:port`, as given (no trailing slash).
    origin: String,
    /// A path prefix without a trailing slash (`""` for none), for a registry behind a
    /// reverse proxy at `http://host/reg/`.
    prefix: String,
    /// Whether the scheme is `https`: the client then needs its TLS set-up.
    https: bool,
}

impl BaseUrl {
    /// Parses and checks a registry URL: `http`, or `https` when the crate is built with the
    /// `tls` feature (without it there is no TLS to speak).
    pub(crate) fn parse(url: &str) -> Result<BaseUrl, ClientError> {
        let invalid = |reason: &str| ClientError::InvalidUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: Uri = url
            .trim()
            .parse()
            .map_err(
                |error: hyper::http::uri::InvalidUri| ClientError::InvalidUrl {
                    url: url.to_owned(),
                    reason: error.to_string(),
                },
            )?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") if cfg!(feature = "tls") => true,
            Some("https") => {
                return Err(invalid(
                    "https needs reg built with the `tls` feature; use http:// (or a \
                     TLS-terminating proxy)",
                ))
            }
            Some(_) => return Err(invalid("unsupported scheme; expected http(s)://host:port")),
            None => return Err(invalid("missing scheme; expected http(s)://host:port")),
        };
        let Some(authority) = uri.authority() else {
            return Err(invalid("missing host; expected http(s)://host:port"));
        };
        if authority.host().is_empty() {
            return Err(invalid("missing host; expected http(s)://host:port"));
        }
        if authority.as_str().contains('@') {
            return Err(invalid("user information in the url is not supported"));
        }
        if uri.query().is_some() {
            return Err(invalid("a query string is not allowed in the registry url"));
        }
        let scheme = if https { "https" } else { "http" };
        Ok(BaseUrl {
            origin: format!("{scheme}://{authority}"),
            prefix: uri.path().trim_end_matches('/').to_owned(),
            https,
        })
    }

    /// Whether the registry is reached over TLS.
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    pub(crate) fn is_https(&self) -> bool {
        self.https
    }

    /// The URL for `path` (which starts with `/`) with an optional query string.
    pub(crate) fn endpoint(&self, path: &str, query: &Query) -> String {
        let mut url = String::with_capacity(
            self.origin.len() + self.prefix.len() + path.len() + query.0.len() + 1,
        );
        url.push_str(&self.origin);
        url.push_str(&self.prefix);
        url.push_str(path);
        if !query.0.is_empty() {
            url.push('?');
            url.push_str(&query.0);
        }
        url
    }

    /// The URL as the user would recognise it, for error messages.
    pub(crate) fn display(&self) -> String {
        format!("{}{}", self.origin, self.prefix)
    }
}

/// A percent-encoded query string, built one parameter at a time.
#[derive(Debug, Default, Clone)]
pub(crate) struct Query(String);

impl Query {
    /// Appends `key=value`, percent-encoding the value.
    pub(crate) fn push(&mut self, key: &str, value: &str) {
        if !self.0.is_empty() {
            self.0.push('&');
        }
        self.0.push_str(key);
        self.0.push('=');
        encode_into(&mut self.0, value);
    }

    /// Appends one `name=` parameter per name. Repeated `name` rather than `names=a,b`:
    /// a register name may contain a comma.
    pub(crate) fn push_names<S: AsRef<str>>(&mut self, names: &[S]) {
        for name in names {
            self.push("name", name.as_ref());
        }
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters, so the server's
/// `url.ParseQuery`-style decoding (where `+` is a space) gives back exactly `value`.
fn encode_into(out: &mut String, value: &str) {
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{byte:02X}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(url: &str) -> Result<BaseUrl, ClientError> {
        BaseUrl::parse(url)
    }

    #[test]
    fn accepts_http_urls_with_and_without_a_prefix() {
        let plain = base("http://localhost:8080").ok();
        assert_eq!(
            plain.map(|b| b.endpoint("/consumer", &Query::default())),
            Some("http://localhost:8080/consumer".to_owned())
        );
        let prefixed = base("http://10.0.0.1/reg/").ok();
        let mut query = Query::default();
        query.push("wait", "1s");
        assert_eq!(
            prefixed.map(|b| b.endpoint("/provider", &query)),
            Some("http://10.0.0.1/reg/provider?wait=1s".to_owned())
        );
    }

    #[cfg(feature = "tls")]
    #[test]
    fn accepts_https_urls() {
        let secure = base("https://reg.example.com:8443/reg/").ok();
        assert_eq!(secure.as_ref().map(BaseUrl::is_https), Some(true));
        assert_eq!(
            secure.map(|b| b.endpoint("/consumer", &Query::default())),
            Some("https://reg.example.com:8443/reg/consumer".to_owned())
        );
        assert_eq!(
            base("http://localhost:8080").ok().map(|b| b.is_https()),
            Some(false)
        );
    }

    #[test]
    fn refuses_unusable_urls_with_a_reason() {
        for (url, reason) in [
            ("localhost:8080", "missing scheme"),
            #[cfg(not(feature = "tls"))]
            (
                "https://example.com",
                "needs reg built with the `tls` feature",
            ),
            ("ftp://example.com", "unsupported scheme"),
            ("http://", "invalid"),
            ("http://host/?x=1", "query string"),
            ("not a url", "invalid"),
        ] {
            match base(url) {
                Err(error) => {
                    assert!(error.is_invalid_url());
                    let text = error.to_string();
                    assert!(text.contains(reason), "{url}: {text}");
                }
                Ok(parsed) => panic!("{url} accepted as {parsed:?}"),
            }
        }
    }

    #[test]
    fn names_are_percent_encoded_one_parameter_each() {
        let mut query = Query::default();
        query.push_names(&["a,b", "x y+z", "ü/?&="]);
        assert_eq!(query.0, "name=a%2Cb&name=x%20y%2Bz&name=%C3%BC%2F%3F%26%3D");
    }
}
