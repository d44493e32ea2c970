//! The Consul-compatible subset (`docs/discovery.md#consul`): what Consul's client libraries,
//! Prometheus's `consul_sd_configs` and similar tools call to register and discover services,
//! answered from the discovery catalog with Consul's JSON field names and casing.
//!
//! * Agent: `PUT /v1/agent/service/register`, `PUT /v1/agent/service/deregister/:id`,
//!   `PUT /v1/agent/check/pass|warn|fail/:check_id`, `PUT /v1/agent/check/update/:check_id`,
//!   `GET /v1/agent/services`, `GET /v1/agent/service/:id`, `GET /v1/agent/checks`,
//!   `GET /v1/agent/self`.
//! * Catalog and health: `GET /v1/catalog/services`, `GET /v1/catalog/service/:name`,
//!   `GET /v1/health/service/:name` (`passing`, `tag`), `GET /v1/health/checks/:name`,
//!   `GET /v1/catalog/datacenters`; blocking queries with `index` and `wait` (default 5m,
//!   at most the server's `--max-wait`, 10m by default) and `X-Consul-Index`.
//! * Status: `GET /v1/status/leader`, `GET /v1/status/peers`.
//!
//! Everything else under Consul's paths answers 501 with a JSON error; a parameter that would
//! change the answer and is not supported (`filter`, `node-meta`, another `dc`) answers 400.
//! Never a wrong answer.
//!
//! Mapping: a service instance is the register `svc/<Name>/<ID>`. A TTL check's TTL is the
//! register's TTL, and its status the instance's status; `check/pass` refreshes the register.
//! Where Consul turns an instance whose TTL ran out critical (and removes it only after
//! `DeregisterCriticalServiceAfter`), reg removes it when the TTL runs out — an instance lives
//! while its provider keeps it alive. An instance registered without a check lives for
//! [`NO_CHECK_TTL`] unless registered again. Only TTL checks exist: reg runs no checks.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Map, Value};

use crate::discovery::{Discovery, Filter, Instance, InstanceEntry, Status};
use crate::parse_go_duration;
use crate::server::auth::{Caller, Right};
use crate::server::error::{Quoted, ServerError};
use crate::server::query::{decode_segment, flag, pairs, parse_index};
use crate::server::routes::{self, ResBody};
use crate::server::services::Visible;
use crate::server::Shared;
use crate::store::Revision;

/// The TTL of an instance registered through the agent API without a check: 72 hours.
pub const NO_CHECK_TTL: Duration = Duration::from_secs(72 * 60 * 60);
/// The datacenter reg answers for.
pub const DATACENTER: &str = "dc1";
/// A blocking query's wait when `index` is given without `wait`: 5 minutes, as Consul.
const DEFAULT_WAIT: Duration = Duration::from_secs(5 * 60);
/// The Consul version `agent/self` reports, for tools that check it.
const CONSUL_VERSION: &str = "1.17.0";

/// Whether `path` is one of Consul's API prefixes (routed here).
pub(crate) fn is_consul_path(path: &str) -> bool {
    const PREFIXES: [&str; 17] = [
        "/v1/agent/",
        "/v1/catalog/",
        "/v1/health/",
        "/v1/status/",
        "/v1/kv/",
        "/v1/acl/",
        "/v1/session/",
        "/v1/event/",
        "/v1/coordinate/",
        "/v1/operator/",
        "/v1/query",
        "/v1/txn",
        "/v1/connect/",
        "/v1/config",
        "/v1/internal/",
        "/v1/snapshot",
        "/v1/namespace",
    ];
    PREFIXES.iter().any(|prefix| path.starts_with(prefix))
}

/// Answers a request on one of Consul's paths.
///
/// Under `--auth` (tokens as `X-Consul-Token` too): registering, deregistering and checks
/// need `provide` on the instance's register `svc/<service>/<id>`; reads list only the
/// instances the caller may read (see `services::Visible`); `agent/self`, `status/*` and
/// `catalog/datacenters` say nothing of the registers and are open, like `/version`.
pub(crate) async fn handle(
    shared: &Arc<Shared>,
    request: Request<Incoming>,
    caller: &Caller,
) -> Result<Response<ResBody>, ServerError> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let params = pairs(request.uri().query())?;
    check_params(&params)?;
    let parts: Vec<String> = path
        .trim_start_matches("/v1/")
        .split('/')
        .map(decode_segment)
        .collect::<Result<_, _>>()?;
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    let discovery = shared.discovery().on_behalf_of(caller.origin().clone());
    let visible = || Visible::of(caller);
    match (&method, parts.as_slice()) {
        (&Method::PUT, ["agent", "service", "register"]) => {
            let body = routes::read_body(shared, request).await?;
            register(&discovery, &body, caller).await
        }
        // GET too, as Consul before 1.0 took it: Debian's python3-consul (0.7.1) sends GET.
        (&Method::PUT | &Method::GET, ["agent", "service", "deregister", id]) => {
            deregister(&discovery, id, caller).await
        }
        (
            &Method::PUT | &Method::GET,
            ["agent", "check", verb @ ("pass" | "warn" | "fail"), check],
        ) => {
            let status = match *verb {
                "pass" => Status::Passing,
                "warn" => Status::Warning,
                _ => Status::Critical,
            };
            set_check(&discovery, check, status, caller).await
        }
        (&Method::PUT, ["agent", "check", "update", check]) => {
            let check = (*check).to_owned();
            let body = routes::read_body(shared, request).await?;
            let status = update_status(&body)?;
            set_check(&discovery, &check, status, caller).await
        }
        (&Method::GET, ["agent", "services"]) => {
            let services: Map<String, Value> = visible()?
                .instances(discovery.all())
                .iter()
                .map(|e| (e.instance.id.clone(), agent_service(&e.instance)))
                .collect();
            Ok(ok_json(&Value::Object(services), None))
        }
        (&Method::GET, ["agent", "service", id]) if *id != "register" => {
            match visible()?.instances(discovery.by_id(id)).first() {
                Some(entry) => Ok(ok_json(
                    &agent_service(&entry.instance),
                    Some(entry.revision),
                )),
                None => Err(not_found(format!("unknown service ID {}", Quoted(id)))),
            }
        }
        (&Method::GET, ["agent", "checks"]) => {
            let checks: Map<String, Value> = visible()?
                .instances(discovery.all())
                .iter()
                .map(|e| (check_id(&e.instance), check_json(e)))
                .collect();
            Ok(ok_json(&Value::Object(checks), None))
        }
        (&Method::GET, ["agent", "self"]) => Ok(ok_json(&agent_self(), None)),
        (&Method::GET, ["status", "leader"]) => Ok(ok_json(&json!(leader()), None)),
        (&Method::GET, ["status", "peers"]) => Ok(ok_json(&json!([leader()]), None)),
        (&Method::GET, ["catalog", "datacenters"]) => Ok(ok_json(&json!([DATACENTER]), None)),
        (&Method::GET, ["catalog", "services"]) => {
            drop(request);
            let visible = visible()?;
            if let Some((after, wait)) = blocking(shared, &params, discovery.index())? {
                let _ = tokio::time::timeout(wait, discovery.wait_any(after)).await;
            }
            let services = visible.services(&discovery, discovery.services());
            let map: Map<String, Value> = services
                .services
                .iter()
                .map(|s| (s.name.clone(), json!(s.tags)))
                .collect();
            Ok(ok_json(&Value::Object(map), Some(services.index)))
        }
        (&Method::GET, [group @ ("catalog" | "health"), kind @ ("service" | "checks"), name])
            if (*group, *kind) != ("catalog", "checks") =>
        {
            let render: fn(&InstanceEntry) -> Value = match (*group, *kind) {
                ("catalog", _) => catalog_entry,
                (_, "service") => health_entry,
                _ => check_json,
            };
            let name = (*name).to_owned();
            drop(request);
            let visible = visible()?;
            let (index, entries) = service_query(shared, &discovery, &name, &params).await?;
            let index = visible.index(&discovery, index);
            let list: Vec<Value> = visible
                .instances(entries)
                .iter()
                .map(|e| render(e))
                .collect();
            Ok(ok_json(&Value::Array(list), Some(index)))
        }
        (_, parts) if allowed(parts).is_some() => Err(ServerError::MethodNotAllowed {
            method: method.as_str().chars().take(16).collect(),
            path: path.chars().take(64).collect(),
            allowed: allowed(parts).unwrap_or("GET"),
        }),
        _ => Err(ServerError::NotImplemented(format!(
            "reg does not implement the Consul endpoint {method} {} (it serves Consul's \
             service discovery subset; see docs/discovery.md)",
            path.chars().take(64).collect::<String>()
        ))),
    }
}

/// The methods a supported endpoint takes (for a 405 to a wrong one).
fn allowed(parts: &[&str]) -> Option<&'static str> {
    match parts {
        ["agent", "service", "register"] | ["agent", "check", "update", _] => Some("PUT"),
        ["agent", "service", "deregister", _] | ["agent", "check", "pass" | "warn" | "fail", _] => {
            Some("PUT, GET")
        }
        ["agent", "services" | "checks" | "self"]
        | ["agent", "service", _]
        | ["status", "leader" | "peers"]
        | ["catalog", "datacenters" | "services"]
        | ["catalog", "service", _]
        | ["health", "service" | "checks", _] => Some("GET"),
        _ => None,
    }
}

fn not_found(message: String) -> ServerError {
    ServerError::NotFound(message)
}

/// Refuses parameters that would change an answer in a way reg does not support.
fn check_params(params: &[(String, String)]) -> Result<(), ServerError> {
    for (key, value) in params {
        match key.as_str() {
            "dc" if !value.is_empty() && value != DATACENTER => {
                return Err(ServerError::InvalidQuery(format!(
                    "no path to datacenter {}: reg serves one datacenter, {DATACENTER:?}",
                    Quoted(value)
                )))
            }
            "ns" | "partition" if !value.is_empty() && value != "default" => {
                return Err(ServerError::InvalidQuery(format!(
                    "{key} {} is not supported: reg has only the default {key}",
                    Quoted(value)
                )))
            }
            "filter" | "node-meta" | "peer" | "sameness-group" | "merge-central-config" => {
                return Err(ServerError::InvalidQuery(format!(
                    "the {key} parameter is not supported by reg's Consul subset"
                )))
            }
            _ => {}
        }
    }
    Ok(())
}

/// A blocking query's start and wait: `None` without `index` (or with `index=0`), as Consul.
fn blocking(
    shared: &Shared,
    params: &[(String, String)],
    current: Revision,
) -> Result<Option<(Revision, Duration)>, ServerError> {
    let mut index = None;
    let mut wait = None;
    for (key, value) in params {
        match key.as_str() {
            "index" if index.is_none() => index = Some(parse_index(value, "index parameter")?),
            "wait" if wait.is_none() => {
                let nanos = parse_go_duration(value)
                    .map_err(|_| ServerError::parameter("wait parameter", value))?;
                wait = Some(Duration::from_nanos(u64::try_from(nanos).unwrap_or(0)));
            }
            _ => {}
        }
    }
    let Some(index) = index.filter(|&i| i > 0) else {
        return Ok(None);
    };
    let after = revision_of(index);
    // An index from the future comes from a server that restarted (revisions start over
    // without a data dir): answer at once, and the client sees the index go back and resets.
    if after > current.max(shared.registry.revision()) {
        return Ok(None);
    }
    let wait = wait
        .filter(|w| !w.is_zero())
        .unwrap_or(DEFAULT_WAIT)
        .min(shared.config.max_wait);
    Ok(Some((after, wait)))
}

/// A service's instances for `catalog/service`, `health/service` and `health/checks`, after
/// the blocking wait: filtered by `tag` (every one given) and `passing`.
async fn service_query(
    shared: &Shared,
    discovery: &Discovery,
    name: &str,
    params: &[(String, String)],
) -> Result<(Revision, Vec<Arc<InstanceEntry>>), ServerError> {
    let mut filter = Filter::new();
    for (key, value) in params {
        match key.as_str() {
            "tag" => filter.tags.push(value.clone()),
            "passing" => {
                filter.passing = flag(value)
                    .ok_or_else(|| ServerError::parameter("passing parameter", value))?;
            }
            _ => {}
        }
    }
    let current = discovery.instances(name, &Filter::new()).index;
    if let Some((after, wait)) = blocking(shared, params, current)? {
        let _ = tokio::time::timeout(wait, discovery.wait(name, after)).await;
    }
    let listed = discovery.instances(name, &filter);
    Ok((listed.index, listed.instances))
}

/// A revision as a Consul index: one more, so that it is never 0 (Consul's clients take 0 for
/// "do not block") and a fresh registry's revision 0 and its first change stay apart.
fn consul_index(revision: Revision) -> u64 {
    revision.saturating_add(1)
}

/// The revision a Consul index stands for (the inverse of [`consul_index`]; `index` > 0).
fn revision_of(index: u64) -> Revision {
    index.saturating_sub(1)
}

/// A JSON 200 with Consul's headers; `X-Consul-Index` when the answer has an index.
fn ok_json(value: &Value, index: Option<Revision>) -> Response<ResBody> {
    let body = Bytes::from(serde_json::to_vec(value).unwrap_or_default());
    let mut response = routes::json(StatusCode::OK, body);
    let headers = response.headers_mut();
    if let Some(index) = index {
        headers.insert("x-consul-index", HeaderValue::from(consul_index(index)));
    }
    headers.insert("x-consul-knownleader", HeaderValue::from_static("true"));
    headers.insert("x-consul-lastcontact", HeaderValue::from_static("0"));
    response
}

fn ok_empty() -> Response<ResBody> {
    ok_json(&Value::Null, None).map(|_| ResBody::empty())
}

/// This server's node name: the host name, else `reg`.
fn node_name() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|name| name.trim().to_owned())
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| "reg".to_owned())
    })
}

/// A stable node id in Consul's UUID form, from a node name.
fn node_id(name: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    let hash = |seed: u64| {
        let mut hasher = foldhash::fast::FixedState::with_seed(seed).build_hasher();
        hasher.write(name.as_bytes());
        hasher.finish()
    };
    let (a, b) = (hash(1), hash(2));
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

fn leader() -> &'static str {
    "127.0.0.1:8300"
}

fn agent_self() -> Value {
    let name = node_name();
    json!({
        "Config": {
            "Datacenter": DATACENTER,
            "PrimaryDatacenter": DATACENTER,
            "NodeName": name,
            "NodeID": node_id(name),
            "Server": true,
            "Revision": concat!("reg ", env!("CARGO_PKG_VERSION")),
            "Version": CONSUL_VERSION,
        },
        "Member": {
            "Name": name,
            "Addr": "127.0.0.1",
            "Port": 8301,
            "Tags": { "dc": DATACENTER, "role": "consul", "build": CONSUL_VERSION },
            "Status": 1,
        },
        "Meta": {},
    })
}

/// The Consul node an instance is on: its `node`, else this server's node.
fn node_of(instance: &Instance) -> (&str, &str) {
    if instance.node.is_empty() {
        (node_name(), "127.0.0.1")
    } else {
        let address = if instance.address.is_empty() {
            instance.node.as_str()
        } else {
            instance.address.as_str()
        };
        (instance.node.as_str(), address)
    }
}

fn weights() -> Value {
    json!({ "Passing": 1, "Warning": 1 })
}

fn agent_service(instance: &Instance) -> Value {
    json!({
        "Kind": "",
        "ID": instance.id,
        "Service": instance.service,
        "Tags": instance.tags,
        "Meta": instance.meta,
        "Port": instance.port,
        "Address": instance.address,
        "Weights": weights(),
        "EnableTagOverride": false,
        "Datacenter": DATACENTER,
    })
}

fn node_json(instance: &Instance, entry: &InstanceEntry) -> Value {
    let (node, address) = node_of(instance);
    json!({
        "ID": node_id(node),
        "Node": node,
        "Address": address,
        "Datacenter": DATACENTER,
        "TaggedAddresses": { "lan": address, "wan": address },
        "Meta": {},
        "CreateIndex": consul_index(entry.created),
        "ModifyIndex": consul_index(entry.revision),
    })
}

/// A `catalog/service` entry: the node's fields (`Meta` as `NodeMeta`) and the service's,
/// prefixed `Service`, flat, as Consul gives them.
fn catalog_entry(entry: &InstanceEntry) -> Value {
    let instance = &entry.instance;
    let mut fields = match node_json(instance, entry) {
        Value::Object(fields) => fields,
        _ => Map::new(),
    };
    if let Some(meta) = fields.remove("Meta") {
        fields.insert("NodeMeta".into(), meta);
    }
    let service = json!({
        "ServiceKind": "",
        "ServiceID": instance.id,
        "ServiceName": instance.service,
        "ServiceTags": instance.tags,
        "ServiceAddress": instance.address,
        "ServiceWeights": weights(),
        "ServiceMeta": instance.meta,
        "ServicePort": instance.port,
        "ServiceEnableTagOverride": false,
        "ServiceProxy": {},
        "ServiceConnect": {},
    });
    if let Value::Object(service) = service {
        fields.extend(service);
    }
    Value::Object(fields)
}

fn check_id(instance: &Instance) -> String {
    format!("service:{}", instance.id)
}

fn check_json(entry: &InstanceEntry) -> Value {
    let instance = &entry.instance;
    let (node, _) = node_of(instance);
    json!({
        "Node": node,
        "CheckID": check_id(instance),
        "Name": format!("Service '{}' check", instance.service),
        "Status": instance.status.as_str(),
        "Notes": "",
        "Output": "",
        "ServiceID": instance.id,
        "ServiceName": instance.service,
        "ServiceTags": instance.tags,
        "Type": "ttl",
        "Definition": {},
        "CreateIndex": consul_index(entry.created),
        "ModifyIndex": consul_index(entry.revision),
    })
}

fn health_entry(entry: &InstanceEntry) -> Value {
    let instance = &entry.instance;
    json!({
        "Node": node_json(instance, entry),
        "Service": {
            "Kind": "",
            "ID": instance.id,
            "Service": instance.service,
            "Tags": instance.tags,
            "Address": instance.address,
            "Meta": instance.meta,
            "Port": instance.port,
            "Weights": weights(),
            "EnableTagOverride": false,
            "Proxy": {},
            "Connect": {},
            "CreateIndex": consul_index(entry.created),
            "ModifyIndex": consul_index(entry.revision),
        },
        "Checks": [check_json(entry)],
    })
}

fn bad(message: impl Into<String>) -> ServerError {
    ServerError::InvalidBody(message.into())
}

fn text_field(object: &Map<String, Value>, name: &str) -> Result<Option<String>, ServerError> {
    match field_ci(object, name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(_) => Err(bad(format!("{name} must be a string"))),
    }
}

/// `PUT /v1/agent/service/register`: Consul's service definition (fields matched ignoring
/// case, as Consul's Go decoder does) → the instance register.
async fn register(
    discovery: &Discovery,
    body: &[u8],
    caller: &Caller,
) -> Result<Response<ResBody>, ServerError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| bad(format!("the service definition is not JSON: {e}")))?;
    let Value::Object(definition) = value else {
        return Err(bad("the service definition must be a JSON object"));
    };
    let name = text_field(&definition, "Name")?
        .filter(|n| !n.is_empty())
        .ok_or_else(|| bad("Name: missing service name"))?;
    let id = text_field(&definition, "ID")?
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| name.clone());
    let mut instance = Instance::new(&name, &id);
    if let Some(address) = text_field(&definition, "Address")? {
        instance.address = address;
    }
    match field_ci(&definition, "Port") {
        None | Some(Value::Null) => {}
        Some(port) => {
            instance.port = port
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .ok_or_else(|| {
                    bad(format!(
                        "Port must be an integer 0–65535, not {}",
                        Quoted(&port.to_string())
                    ))
                })?;
        }
    }
    match field_ci(&definition, "Tags") {
        None | Some(Value::Null) => {}
        Some(Value::Array(tags)) => {
            for tag in tags {
                let tag = tag.as_str().ok_or_else(|| bad("Tags must hold strings"))?;
                instance.tags.push(tag.to_owned());
            }
        }
        Some(_) => return Err(bad("Tags must be an array of strings")),
    }
    match field_ci(&definition, "Meta") {
        None | Some(Value::Null) => {}
        Some(Value::Object(meta)) => {
            for (key, value) in meta {
                let value = value
                    .as_str()
                    .ok_or_else(|| bad(format!("Meta.{} must be a string", Quoted(key))))?;
                instance.meta.insert(key.clone(), value.to_owned());
            }
        }
        Some(_) => return Err(bad("Meta must be an object of strings")),
    }
    if let Some(kind) = text_field(&definition, "Kind")?.filter(|k| !k.is_empty()) {
        return Err(bad(format!(
            "Kind {} is not supported: reg registers plain services only",
            Quoted(&kind)
        )));
    }
    let mut checks: Vec<&Map<String, Value>> = Vec::new();
    if let Some(check) = field_ci(&definition, "Check").filter(|c| !c.is_null()) {
        checks.push(
            check
                .as_object()
                .ok_or_else(|| bad("Check must be an object"))?,
        );
    }
    if let Some(list) = field_ci(&definition, "Checks").filter(|c| !c.is_null()) {
        let list = list
            .as_array()
            .ok_or_else(|| bad("Checks must be an array"))?;
        for check in list {
            checks.push(
                check
                    .as_object()
                    .ok_or_else(|| bad("Checks must hold objects"))?,
            );
        }
    }
    let ttl = match checks.as_slice() {
        [] => NO_CHECK_TTL,
        [check] => {
            let (ttl, status) = ttl_check(check, &id)?;
            instance.status = status;
            ttl
        }
        _ => {
            return Err(bad(
                "only one check per service is supported (a TTL check; reg runs no checks)",
            ))
        }
    };
    instance
        .validate()
        .map_err(|e| bad(format!("service {}", e)))?;
    // Consul addresses instances by ID alone: the same ID under another name moves it, so
    // the caller needs `provide` on both.
    // Instances in services the caller may not see are left alone and never named.
    let moved = known_to(caller, discovery.by_id(&id));
    let touched: Vec<String> = std::iter::once(instance.register_name())
        .chain(
            moved
                .iter()
                .filter(|other| other.instance.service != name)
                .map(|other| other.instance.register_name()),
        )
        .collect();
    caller.require(Right::Provide, touched.iter().map(String::as_str))?;
    for other in moved {
        if other.instance.service != name {
            discovery
                .submit_deregister(&other.instance.service, &id)
                .await?;
        }
    }
    discovery
        .submit_register(&instance, Some(ttl))
        .await
        .map_err(|e| match e {
            crate::discovery::DiscoveryError::Store(store) => ServerError::Store(store),
            other => bad(other.to_string()),
        })?;
    Ok(ok_empty())
}

/// A check definition's TTL and initial status (Consul starts a TTL check critical unless
/// `Status` says otherwise).
fn ttl_check(check: &Map<String, Value>, id: &str) -> Result<(Duration, Status), ServerError> {
    for kind in [
        "HTTP",
        "TCP",
        "Args",
        "Script",
        "GRPC",
        "DockerContainerID",
        "H2PING",
        "UDP",
        "OSService",
        "AliasService",
    ] {
        if field_ci(check, kind).is_some_and(|v| !v.is_null() && v != "" && v != &json!([])) {
            return Err(bad(format!(
                "{kind} checks are not supported: reg runs no checks, only TTL checks (the \
                 service reports its health with /v1/agent/check/pass)"
            )));
        }
    }
    let ttl = text_field(check, "TTL")?
        .ok_or_else(|| bad("Check: only TTL checks are supported, and this one has no TTL"))?;
    let ttl = parse_go_duration(&ttl)
        .ok()
        .and_then(|n| u64::try_from(n).ok())
        .filter(|&n| n > 0)
        .map(Duration::from_nanos)
        .ok_or_else(|| {
            bad(format!(
                "Check.TTL {} is not a positive duration",
                Quoted(&ttl)
            ))
        })?;
    if let Some(after) = text_field(check, "DeregisterCriticalServiceAfter")? {
        parse_go_duration(&after).map_err(|_| {
            bad(format!(
                "Check.DeregisterCriticalServiceAfter {} is not a duration",
                Quoted(&after)
            ))
        })?;
    }
    if let Some(check_id) = text_field(check, "CheckID")?.filter(|c| !c.is_empty()) {
        if check_id != format!("service:{id}") {
            return Err(bad(format!(
                "Check.CheckID {} is not supported: a service's check is \
                 service:<its ID>",
                Quoted(&check_id)
            )));
        }
    }
    let status = match text_field(check, "Status")? {
        None => Status::Critical,
        Some(text) => Status::parse(&text).ok_or_else(|| {
            bad(format!(
                "Check.Status {} is not passing, warning or critical",
                Quoted(&text)
            ))
        })?,
    };
    Ok((ttl, status))
}

/// The instances a caller may know of (read or provide them): an id it may do neither with
/// is unknown to it (404, as for an id that does not exist), so probing ids leaks nothing.
fn known_to(caller: &Caller, mut found: Vec<Arc<InstanceEntry>>) -> Vec<Arc<InstanceEntry>> {
    found.retain(|entry| {
        let name = entry.instance.register_name();
        caller.can(Right::Read, &name) || caller.can(Right::Provide, &name)
    });
    found
}

async fn deregister(
    discovery: &Discovery,
    id: &str,
    caller: &Caller,
) -> Result<Response<ResBody>, ServerError> {
    let found = known_to(caller, discovery.by_id(id));
    if found.is_empty() {
        return Err(not_found(format!("unknown service ID {}", Quoted(id))));
    }
    let names: Vec<String> = found.iter().map(|e| e.instance.register_name()).collect();
    caller.require(Right::Provide, names.iter().map(String::as_str))?;
    for entry in found {
        discovery
            .submit_deregister(&entry.instance.service, id)
            .await?;
    }
    Ok(ok_empty())
}

/// `PUT /v1/agent/check/update/:id` body: `{"Status": …, "Output": …}`.
fn update_status(body: &[u8]) -> Result<Status, ServerError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| bad(format!("the body is not JSON: {e}")))?;
    let object = value
        .as_object()
        .ok_or_else(|| bad("the body must be a JSON object"))?;
    let text = text_field(object, "Status")?.ok_or_else(|| bad("Status is required"))?;
    Status::parse(&text).ok_or_else(|| {
        bad(format!(
            "Status {} is not passing, warning or critical",
            Quoted(&text)
        ))
    })
}

/// A TTL check's heartbeat: sets the status and restarts the instance's TTL (a heartbeat that
/// changes nothing is a refresh: no revision, nobody woken).
async fn set_check(
    discovery: &Discovery,
    check: &str,
    status: Status,
    caller: &Caller,
) -> Result<Response<ResBody>, ServerError> {
    let id = check.strip_prefix("service:").ok_or_else(|| {
        not_found(format!(
            "unknown check ID {} (a service's check is \"service:<id>\")",
            Quoted(check)
        ))
    })?;
    let found = known_to(caller, discovery.by_id(id));
    if found.is_empty() {
        return Err(not_found(format!("unknown check ID {}", Quoted(check))));
    }
    let names: Vec<String> = found.iter().map(|e| e.instance.register_name()).collect();
    caller.require(Right::Provide, names.iter().map(String::as_str))?;
    for entry in found {
        heartbeat(discovery, &entry, status, check).await?;
    }
    Ok(ok_empty())
}

/// Sets one instance's status and restarts its TTL. The instance is read, changed and written
/// back; if it changed in between (a concurrent register), it is read again, so a heartbeat
/// does not put back an older address or tags. An instance that expired in between is not
/// brought back.
async fn heartbeat(
    discovery: &Discovery,
    entry: &InstanceEntry,
    status: Status,
    check: &str,
) -> Result<(), ServerError> {
    let registry = discovery.registry();
    let (service, id) = (&entry.instance.service, &entry.instance.id);
    let name = entry.instance.register_name();
    let gone = || not_found(format!("unknown check ID {}", Quoted(check)));
    for _ in 0..8 {
        let current = discovery.instance(service, id).ok_or_else(gone)?;
        let ttl = registry.ttl(&name).ok_or_else(gone)?;
        if registry.get(&name).map(|r| r.revision()) != Some(current.revision) {
            continue;
        }
        let instance = current.instance.clone().status(status);
        discovery
            .submit_register(&instance, Some(ttl))
            .await
            .map_err(|e| match e {
                crate::discovery::DiscoveryError::Store(store) => ServerError::Store(store),
                other => bad(other.to_string()),
            })?;
        return Ok(());
    }
    Err(ServerError::Store(crate::store::StoreError::Unavailable {
        reason: "the instance kept changing during the heartbeat; retry".into(),
    }))
}

/// An object's field looked up the way Go's `encoding/json` matches them — exact first, then
/// ignoring ASCII case — which is how Consul reads `"name"` as `Name`.
fn field_ci<'a>(object: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    object.get(name).or_else(|| {
        object
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value)
    })
}
