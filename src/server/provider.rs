//! `PUT /provider` (set), `GET /provider` (take change requests), `DELETE /provider`.

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use crate::server::audit::Field;
use crate::server::auth::{Caller, Right};
use crate::server::body::parse_entries;
use crate::server::error::ServerError;
use crate::server::query::Query;
use crate::server::routes::{self, ResBody};
use crate::server::{response, services, Shared};
use crate::store::Change;
use std::sync::Arc;

/// `PUT /provider` → 204: creates, changes or refreshes registers. All entries are validated
/// before any is written. A persistent registry answers once the changes are as durable as
/// its sync policy promises (`always`: on disk), or 503 when its disk refuses them.
pub(crate) async fn put(
    shared: &Shared,
    request: Request<Incoming>,
    caller: &Caller,
) -> Result<Response<ResBody>, ServerError> {
    // Refused before the body is read (and before `100 Continue`) when it could hold nothing
    // the caller may provide.
    caller.require_somewhere(Right::Provide)?;
    let body = routes::read_body(shared, request).await?;
    let entries = parse_entries(&body, &shared.config)?;
    caller.require(Right::Provide, entries.iter().map(|e| e.name.as_str()))?;
    for entry in &entries {
        services::check_entry(&entry.name, &entry.value)?;
    }
    let writes = entries
        .into_iter()
        .map(|e| (Arc::from(e.name), e.value, e.metadata, e.ttl))
        .collect::<Vec<_>>();
    let names: Vec<Arc<str>> = writes.iter().map(|w| Arc::clone(&w.0)).collect();
    let outcomes = shared
        .registry
        .submit_sets(Some(caller.origin()), writes)
        .await?;
    for (name, outcome) in names.iter().zip(&outcomes) {
        let revision = outcome.revision;
        // Per-register events are debug (a fleet's churn would flood an info log; the
        // periodic summary counts them). Names are client input: `?` escapes them, so a name
        // cannot forge log lines or send terminal escapes.
        match outcome.change {
            Change::Created => tracing::debug!(?name, revision, "register created"),
            Change::Changed => tracing::debug!(?name, revision, "register changed"),
            Change::Refreshed => tracing::trace!(?name, "register refreshed"),
        }
    }
    Ok(routes::empty(StatusCode::NO_CONTENT))
}

/// `GET /provider?name=…&wait=…` → 200 with the change requests taken (each delivered once).
///
/// Pending requests are answered at once; otherwise, with `wait`, the poll parks until a
/// request for a watched name arrives, `wait` runs out, or shutdown. If the client goes away
/// the take is dropped, and a dropped take has taken nothing.
///
/// Takes the parsed query, not the request: the caller drops the request before parking, see
/// [`routes::handle`].
pub(crate) async fn get(
    shared: &Shared,
    query: Query,
    caller: &Caller,
) -> Result<Response<ResBody>, ServerError> {
    // Named requests need `take` on each name; without names the caller takes only the
    // requests it may take, and the others stay pending for their providers.
    caller.require(Right::Take, query.names.iter().map(String::as_str))?;
    let allowed = caller.scope(Right::Take)?;
    let selector = query.selector();
    let taken = shared
        .registry
        .submit_take(selector, allowed, query.wait)
        .await;
    if let Some(audit) = &shared.audit {
        for request in &taken {
            let mut fields = vec![("name", Field::Str(&request.name))];
            if let Some(origin) = &request.origin {
                fields.push(("requested_by", Field::Str(origin.identity())));
                fields.push(("requested_in", Field::Str(origin.request_id())));
            }
            audit.event("take", caller.origin(), &fields);
        }
    }
    Ok(routes::json(
        StatusCode::OK,
        response::requests(&taken, query.detail),
    ))
}

/// `DELETE /provider?name=…` → 204: removes the named registers (at least one name).
pub(crate) async fn delete(
    shared: &Shared,
    request: &Request<Incoming>,
    caller: &Caller,
) -> Result<Response<ResBody>, ServerError> {
    let query = Query::parse(request.uri().query(), &shared.config)?;
    if query.names.is_empty() {
        return Err(ServerError::NamesRequired);
    }
    let mut names = query.names;
    names.sort_unstable();
    names.dedup();
    caller.require(Right::Provide, names.iter().map(String::as_str))?;
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    if let Some(revision) = shared
        .registry
        .submit_remove(Some(caller.origin()), &names)
        .await?
    {
        tracing::debug!(?names, revision, "registers removed");
    }
    Ok(routes::empty(StatusCode::NO_CONTENT))
}
