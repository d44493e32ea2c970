//! `GET /consumer` (read, long-poll) and `PUT /consumer` (change requests).

use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Request, Response, StatusCode};

use crate::server::body::parse_entries;
use crate::server::error::ServerError;
use crate::server::query::Query;
use crate::server::routes::{self, ResBody};
use crate::server::{response, Shared};

/// The header that carries the revision an answer is consistent with.
pub(crate) const X_REG_INDEX: &str = "x-reg-index";

/// `GET /consumer?name=…&wait=…&index=…&detail=…` → 200 with the current values.
///
/// With `wait`, first waits until a watched register changes after `index` (without `index`:
/// after the revision at the start of the request), `wait` runs out, or shutdown. An `index`
/// above the current revision is answered at once.
///
/// Takes the parsed query, not the request: the caller drops the request before parking, see
/// [`routes::handle`].
pub(crate) async fn get(shared: &Shared, query: Query) -> Result<Response<ResBody>, ServerError> {
    let selector = query.selector();
    let registry = &shared.registry;
    if let Some(wait) = query.wait {
        let current = registry.revision();
        match query.index {
            // An index from the future comes from another server (or one that restarted and
            // counts from 0 again): waiting for it would ignore changes until the counter
            // caught up. The server cannot tell what the client saw, so it answers at once.
            Some(index) if index > current => {}
            index => {
                let after = index.unwrap_or(current);
                // Timing out is a normal end of a long poll: answer with the current values.
                let _ = tokio::time::timeout(wait, registry.wait(&selector, after)).await;
            }
        }
    }
    let read = registry.read(&selector);
    let body = response::registers(&read.registers, query.detail.then_some(registry));
    let mut response = routes::json(StatusCode::OK, body);
    response
        .headers_mut()
        .insert(X_REG_INDEX, HeaderValue::from(read.revision));
    Ok(response)
}

/// `PUT /consumer` → 202: stores one change request per register, latest wins. All entries
/// are validated before any is stored.
pub(crate) async fn put(
    shared: &Shared,
    request: Request<Incoming>,
) -> Result<Response<ResBody>, ServerError> {
    let body = routes::read_body(shared, request).await?;
    let entries = parse_entries(&body, &shared.config)?;
    // All or nothing, the pending-requests cap included.
    shared.registry.request_many(
        entries
            .iter()
            .map(|entry| (entry.name.as_str(), entry.value.clone())),
    )?;
    tracing::debug!(count = entries.len(), "change requests stored");
    shared.registry.durable_all().await?;
    Ok(routes::empty(StatusCode::ACCEPTED))
}
