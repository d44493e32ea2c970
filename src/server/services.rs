//! Discovery's reg-native routes (`docs/discovery.md`):
//!
//! * `GET /v1/services` — the services, with `index`/`wait` blocking on any change;
//! * `GET /v1/services/<name>` — a service's instances, filtered by `version`, `tag`, `meta`
//!   (`key=value` or `key:value`), `status`, `passing`, blocking on that service with
//!   `index`/`wait`;
//! * `GET /v1/services/<name>/watch` — an SSE stream of `added`, `changed` and `removed`
//!   events for one service (the current instances first, as `added`).
//!
//! Writes are plain `PUT`/`DELETE /provider` on `svc/<service>/<id>` (checked by
//! [`check_entry`]). Every answer carries the index in `X-Reg-Index`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::discovery::{self, Discovery, Filter, InstanceEntry, Status};
use crate::discovery::{ServiceSummary, Services};
use crate::format_go_duration;
use crate::json::Json;
use crate::server::auth::{Caller, Right};
use crate::server::conn::Busy;
use crate::server::consumer::X_REG_INDEX;
use crate::server::error::ServerError;
use crate::server::query::{self, flag, pairs, parse_index, parse_wait};
use crate::server::routes::{self, ResBody};
use crate::server::watch::StreamGuard;
use crate::server::{response, Shared};
use crate::store::Revision;

/// Refuses a write under `svc/` whose value is not an instance (400 naming the field).
pub(crate) fn check_entry(name: &str, value: &Json) -> Result<(), ServerError> {
    if discovery::is_reserved(name) {
        discovery::parse(name, value)
            .map_err(|error| ServerError::entry(name, error.to_string()))?;
    }
    Ok(())
}

/// What of the catalog a caller may see: the instances whose registers (`svc/<service>/<id>`)
/// it may read — the same rule as `GET /consumer`, so a caller sees an instance through
/// discovery exactly when it could read its register.
#[derive(Clone)]
pub(crate) struct Visible(Option<crate::server::auth::NameFilter>);

impl Visible {
    /// For `caller`; refuses a caller that may read nothing at all.
    pub(crate) fn of(caller: &Caller) -> Result<Visible, ServerError> {
        Ok(Visible(caller.scope(Right::Read)?))
    }

    /// Whether the caller may see this instance.
    pub(crate) fn sees(&self, entry: &InstanceEntry) -> bool {
        match &self.0 {
            None => true,
            Some(filter) => filter(&discovery::register_name(
                &entry.instance.service,
                &entry.instance.id,
            )),
        }
    }

    /// The index a caller is given for a service whose own index is `index`: the catalog's
    /// for a restricted caller, whose answers must not depend on what it may not see (a
    /// service's index moves with instances it may not read, and a service that does not
    /// exist has the catalog's).
    pub(crate) fn index(&self, discovery: &Discovery, index: Revision) -> Revision {
        if self.0.is_some() {
            discovery.index()
        } else {
            index
        }
    }

    /// Keeps the instances the caller may see.
    pub(crate) fn instances(
        &self,
        mut entries: Vec<Arc<InstanceEntry>>,
    ) -> Vec<Arc<InstanceEntry>> {
        if self.0.is_some() {
            entries.retain(|entry| self.sees(entry));
        }
        entries
    }

    /// The services the caller may see some instance of, each summarized from those
    /// instances alone (no counts of what it may not see).
    pub(crate) fn services(&self, discovery: &Discovery, services: Services) -> Services {
        if self.0.is_none() {
            return services;
        }
        let mut out = Vec::new();
        for summary in services.services {
            let entries =
                self.instances(discovery.instances(&summary.name, &Filter::new()).instances);
            if entries.is_empty() {
                continue;
            }
            let mut tags: Vec<String> = entries
                .iter()
                .flat_map(|e| e.instance.tags.clone())
                .collect();
            tags.sort_unstable();
            tags.dedup();
            let mut versions: Vec<String> = entries
                .iter()
                .map(|e| e.instance.version.clone())
                .filter(|v| !v.is_empty())
                .collect();
            versions.sort_unstable();
            versions.dedup();
            out.push(ServiceSummary {
                name: summary.name,
                instances: entries.len(),
                passing: entries
                    .iter()
                    .filter(|e| e.instance.status == Status::Passing)
                    .count(),
                tags,
                versions,
                // A service's own index would tell a caller that something it may not see
                // changed (or exists): restricted callers get the catalog's.
                index: services.index,
            });
        }
        Services {
            index: services.index,
            services: out,
        }
    }
}

/// Answers a request under `/v1/services`.
pub(crate) async fn handle(
    shared: &Arc<Shared>,
    request: Request<Incoming>,
    busy: Busy,
    caller: &Caller,
) -> Result<Response<ResBody>, ServerError> {
    let visible = Visible::of(caller)?;
    if request.method() != Method::GET {
        return Err(ServerError::MethodNotAllowed {
            method: request.method().as_str().chars().take(16).collect(),
            path: request.uri().path().chars().take(64).collect(),
            allowed: "GET",
        });
    }
    let path = request.uri().path().to_owned();
    let raw_query = request.uri().query().map(str::to_owned);
    // Dropped before parking (see `routes::parse_and_drop`).
    drop(request);
    let params = pairs(raw_query.as_deref())?;
    let rest = path.strip_prefix("/v1/services").unwrap_or("");
    let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
    match parts.as_slice() {
        [] => list(shared, &params, &visible).await,
        [service] => instances(shared, &query::decode_segment(service)?, &params, &visible).await,
        [service, "watch"] => {
            let service = query::decode_segment(service)?;
            watch(shared, service, &params, busy, visible)
        }
        _ => Err(ServerError::NotFound(path.chars().take(64).collect())),
    }
}

/// `index` and `wait`, from pairs already checked for unknown keys.
struct Blocking {
    index: Option<Revision>,
    wait: Option<Duration>,
}

fn blocking(params: &[(String, String)], shared: &Shared) -> Result<Blocking, ServerError> {
    let mut out = Blocking {
        index: None,
        wait: None,
    };
    for (key, value) in params {
        match key.as_str() {
            "index" => out.index = Some(parse_index(value, "index parameter")?),
            "wait" => out.wait = parse_wait(value, &shared.config)?,
            _ => {}
        }
    }
    // An index from the future comes from another server, or this one before a restart
    // without a data dir: answer at once, as `GET /consumer` does.
    if out.index > Some(shared.registry.revision()) {
        out.wait = None;
    }
    Ok(out)
}

fn unknown(key: &str, known: &str) -> ServerError {
    ServerError::InvalidQuery(format!(
        "unknown parameter {:?} (this route takes {known})",
        key.chars().take(64).collect::<String>()
    ))
}

async fn list(
    shared: &Arc<Shared>,
    params: &[(String, String)],
    visible: &Visible,
) -> Result<Response<ResBody>, ServerError> {
    for (key, _) in params {
        if !matches!(key.as_str(), "index" | "wait") {
            return Err(unknown(key, "index and wait"));
        }
    }
    let blocking = blocking(params, shared)?;
    let discovery = shared.discovery();
    if let Some(wait) = blocking.wait {
        let after = blocking.index.unwrap_or_else(|| discovery.index());
        let _ = tokio::time::timeout(wait, discovery.wait_any(after)).await;
    }
    let services = visible.services(&discovery, discovery.services());
    let body = json!({
        "index": services.index,
        "services": services.services.iter().map(|s| json!({
            "name": s.name,
            "instances": s.instances,
            "passing": s.passing,
            "tags": s.tags,
            "versions": s.versions,
            "index": s.index,
        })).collect::<Vec<_>>(),
    });
    Ok(with_index(
        routes::json(StatusCode::OK, to_bytes(&body)),
        services.index,
    ))
}

/// Parses a service's filter parameters; `index` and `wait` are left to [`blocking`].
pub(crate) fn filter(params: &[(String, String)]) -> Result<Filter, ServerError> {
    let mut filter = Filter::new();
    for (key, value) in params {
        match key.as_str() {
            "version" => filter.version = Some(value.clone()),
            "tag" => filter.tags.push(value.clone()),
            "meta" => {
                let (k, v) = value
                    .split_once('=')
                    .or_else(|| value.split_once(':'))
                    .ok_or_else(|| ServerError::parameter("meta parameter (key=value)", value))?;
                filter.meta.push((k.to_owned(), v.to_owned()));
            }
            "status" => {
                filter.status = Some(
                    Status::parse(value)
                        .ok_or_else(|| ServerError::parameter("status parameter", value))?,
                );
            }
            "passing" => {
                filter.passing = flag(value)
                    .ok_or_else(|| ServerError::parameter("passing parameter", value))?;
            }
            "index" | "wait" => {}
            other => {
                return Err(unknown(
                    other,
                    "version, tag, meta, status, passing, index and wait",
                ))
            }
        }
    }
    Ok(filter)
}

async fn instances(
    shared: &Arc<Shared>,
    service: &str,
    params: &[(String, String)],
    visible: &Visible,
) -> Result<Response<ResBody>, ServerError> {
    let filter = filter(params)?;
    let blocking = blocking(params, shared)?;
    let discovery = shared.discovery();
    if let Some(wait) = blocking.wait {
        let after = blocking
            .index
            .unwrap_or_else(|| discovery.instances(service, &Filter::new()).index);
        let _ = tokio::time::timeout(wait, discovery.wait(service, after)).await;
    }
    let mut listed = discovery.instances(service, &filter);
    listed.instances = visible.instances(listed.instances);
    listed.index = visible.index(&discovery, listed.index);
    // Written directly (no `Value` tree): a change answers every watcher of the service, each
    // with the whole list.
    let mut out = Vec::with_capacity(64 + listed.instances.len() * 256);
    out.extend_from_slice(b"{\"service\":");
    response::write_str(&mut out, service);
    out.extend_from_slice(b",\"index\":");
    response::push_u64(&mut out, listed.index);
    out.extend_from_slice(b",\"instances\":[");
    for (i, entry) in listed.instances.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_entry(&mut out, &discovery, entry);
    }
    out.extend_from_slice(b"]}");
    Ok(with_index(
        routes::json(StatusCode::OK, Bytes::from(out)),
        listed.index,
    ))
}

/// Appends an instance as the reg-native routes give it: its fields (its canonical JSON,
/// kept by the catalog) plus `revision`, `created` and `expires_in`.
fn write_entry(out: &mut Vec<u8>, discovery: &Discovery, entry: &InstanceEntry) {
    let value = entry.value().as_bytes();
    // An instance's JSON always holds `service`, `id` and `status`: never `{}`.
    out.extend_from_slice(value.strip_suffix(b"}").unwrap_or(value));
    out.extend_from_slice(b",\"revision\":");
    response::push_u64(out, entry.revision);
    out.extend_from_slice(b",\"created\":");
    response::push_u64(out, entry.created);
    out.extend_from_slice(b",\"expires_in\":");
    let left = discovery
        .expires_in(&entry.instance.service, &entry.instance.id)
        .unwrap_or_default();
    response::write_str(out, &format_go_duration(left));
    out.push(b'}');
}

fn to_bytes(value: &Value) -> Bytes {
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

fn with_index(mut response: Response<ResBody>, index: Revision) -> Response<ResBody> {
    response
        .headers_mut()
        .insert(X_REG_INDEX, HeaderValue::from(index));
    response
}

/// `GET /v1/services/<name>/watch`: the instances as `added` events, then every change as
/// `added`, `changed` or `removed` (each with `id: <index>`), with keep-alive comments. Changes
/// that land together are sent as the difference between the two states: the stream always
/// converges on the catalog, and intermediate states of one instance may be coalesced.
fn watch(
    shared: &Arc<Shared>,
    service: String,
    params: &[(String, String)],
    busy: Busy,
    visible: Visible,
) -> Result<Response<ResBody>, ServerError> {
    let filter = filter(params)?;
    let guard = StreamGuard::admit(shared, busy)?;
    let (tx, rx) = mpsc::channel(16);
    let discovery = shared.discovery();
    let keep_alive = Some(shared.config.sse_keep_alive)
        .filter(|k| !k.is_zero())
        .unwrap_or(Duration::from_secs(24 * 60 * 60));
    let closed = shared.registry.closed();
    tokio::spawn(async move {
        let mut sent: BTreeMap<String, Revision> = BTreeMap::new();
        tokio::pin!(closed);
        loop {
            let mut listed = discovery.instances(&service, &filter);
            listed.instances = visible.instances(listed.instances);
            let waited = listed.index;
            listed.index = visible.index(&discovery, listed.index);
            let mut chunk = Vec::new();
            let mut now: BTreeMap<String, Revision> = BTreeMap::new();
            for entry in &listed.instances {
                let id = entry.instance.id.clone();
                let kind = match sent.get(&id) {
                    None => Some("added"),
                    Some(&revision) if revision != entry.revision => Some("changed"),
                    Some(_) => None,
                };
                if let Some(kind) = kind {
                    let mut data = Vec::new();
                    write_entry(&mut data, &discovery, entry);
                    push_event(&mut chunk, kind, listed.index, &data);
                }
                now.insert(id, entry.revision);
            }
            for id in sent.keys().filter(|id| !now.contains_key(*id)) {
                let data = json!({ "service": service, "id": id });
                push_event(&mut chunk, "removed", listed.index, &to_bytes(&data));
            }
            sent = now;
            if !chunk.is_empty() && tx.send(Bytes::from(chunk)).await.is_err() {
                return;
            }
            loop {
                tokio::select! {
                    biased;
                    _ = &mut closed => return,
                    _ = tx.closed() => return,
                    _ = discovery.wait(&service, waited) => break,
                    _ = tokio::time::sleep(keep_alive) => {
                        if tx.send(Bytes::from_static(b": keep-alive\n\n")).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    });
    Ok(crate::server::watch::event_stream(rx, guard))
}

fn push_event(out: &mut Vec<u8>, kind: &str, index: Revision, data: &[u8]) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\nid: ");
    out.extend_from_slice(index.to_string().as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\n\n");
}
