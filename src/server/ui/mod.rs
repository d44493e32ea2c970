//! `GET /ui/`: the dashboard, a small page served from the binary (`index.html`, `app.js`,
//! `app.css` beside this file, plain HTML/JS/CSS, no build step, ~32 KB).
//!
//! The page holds no data: it reads everything through the REST API with the caller's
//! token (`/consumer?detail=true`, `/v1/watch`, `/v1/services`, `/metrics`, `PUT /consumer`),
//! so `--auth` protects it as it protects any client — the page asks for a token when the
//! API answers 401. The assets themselves are served to anyone (they are the same in every
//! reg). `--no-ui` ([`ServerConfig::ui`](super::ServerConfig::ui)) turns the route off.

use bytes::Bytes;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, LOCATION};
use hyper::{Method, Response, StatusCode};

use crate::server::error::ServerError;
use crate::server::routes::{self, ResBody};

const INDEX: &str = include_str!("index.html");
const SCRIPT: &str = include_str!("app.js");
const STYLE: &str = include_str!("app.css");

/// Only the page's own files: no inline script or style, no other origin, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self' data:; base-uri 'none'; form-action 'none'; \
                   frame-ancestors 'none'";

/// Answers `method path` under `/ui`.
pub(crate) fn handle(method: &Method, path: &str) -> Result<Response<ResBody>, ServerError> {
    if method != Method::GET && method != Method::HEAD {
        return Err(ServerError::MethodNotAllowed {
            method: method.as_str().chars().take(16).collect(),
            path: path.chars().take(64).collect(),
            allowed: "GET, HEAD",
        });
    }
    let (body, kind) = match path {
        // Relative asset paths resolve under `/ui/`, so the page lives there.
        "/ui" => {
            let mut response = routes::empty(StatusCode::PERMANENT_REDIRECT);
            response
                .headers_mut()
                .insert(LOCATION, HeaderValue::from_static("/ui/"));
            return Ok(response);
        }
        "/ui/" | "/ui/index.html" => (INDEX, "text/html; charset=utf-8"),
        "/ui/app.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        "/ui/app.css" => (STYLE, "text/css; charset=utf-8"),
        _ => return Err(ServerError::NotFound(path.chars().take(64).collect())),
    };
    let mut response = Response::new(ResBody::Full(Some(Bytes::from_static(body.as_bytes()))));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(kind));
    // Small and served from memory: always revalidated, so an upgraded reg serves its page.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("content-security-policy", HeaderValue::from_static(CSP));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    Ok(response)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn serves_the_page_and_its_assets_only() {
        let page = handle(&Method::GET, "/ui/").unwrap();
        assert_eq!(page.status(), StatusCode::OK);
        assert!(page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("script-src 'self'"));
        assert_eq!(
            handle(&Method::GET, "/ui/app.js").unwrap().headers()[CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        let redirect = handle(&Method::GET, "/ui").unwrap();
        assert_eq!(redirect.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(redirect.headers()[LOCATION], "/ui/");
        assert_eq!(
            handle(&Method::GET, "/ui/../consumer")
                .unwrap_err()
                .status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            handle(&Method::PUT, "/ui/").unwrap_err().status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
        // The page loads only its own files.
        assert!(INDEX.contains(r#"src="app.js""#) && INDEX.contains(r#"href="app.css""#));
        assert!(!INDEX.contains("<script>") && !INDEX.contains("style="));
    }
}
