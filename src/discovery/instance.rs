//! What an instance is: its register name (`svc/<service>/<id>`), its value's shape, and the
//! validation that names the field a bad value got wrong.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::json::{Json, Node};

/// The reserved prefix of instance registers: an instance of service `web` with id `web-1`
/// is the register `svc/web/web-1`.
pub const PREFIX: &str = "svc/";

/// Longest service name or instance id, in bytes.
pub const MAX_PART_LEN: usize = 128;

/// An instance's health, as Consul and eddieraa/registry say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Healthy: picked, and listed by `passing` queries.
    #[default]
    Passing,
    /// Degraded: listed, but not by `passing` queries.
    Warning,
    /// Failing: listed, but not by `passing` queries.
    Critical,
}

impl Status {
    /// `passing`, `warning` or `critical`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Passing => "passing",
            Status::Warning => "warning",
            Status::Critical => "critical",
        }
    }

    /// Parses `passing`, `warning` or `critical`.
    pub fn parse(text: &str) -> Option<Status> {
        match text {
            "passing" => Some(Status::Passing),
            "warning" => Some(Status::Warning),
            "critical" => Some(Status::Critical),
            _ => None,
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One instance of a service: where it is and how it is doing. Stored as the value of the
/// register `svc/<service>/<id>`; see `docs/discovery.md` for the JSON shape.
///
/// ```
/// use reg::discovery::{Instance, Status};
///
/// let instance = Instance::new("web", "web-1")
///     .address("10.0.0.5")
///     .port(8080)
///     .version("1.4.2")
///     .tag("primary")
///     .meta("zone", "eu-1");
/// assert_eq!(instance.register_name(), "svc/web/web-1");
/// assert_eq!(instance.status, Status::Passing);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// The service's name (`[A-Za-z0-9._-]`, at most 128 bytes).
    pub service: String,
    /// The instance's id, unique within its service (`[A-Za-z0-9._:@+=~-]`, at most 128 bytes).
    pub id: String,
    /// The version it runs (free text; empty for none).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
    /// The address it serves on: a host name or IP address (empty for none).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub address: String,
    /// The port it serves on (0 for none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub port: u16,
    /// Tags, in the order given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Metadata: string keys to string values (Consul's `Meta`, go-micro's `Metadata`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, String>,
    /// Endpoints it serves: opaque JSON that reg stores and returns exactly as given
    /// (go-micro's `Endpoints`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Json>,
    /// Its health.
    #[serde(default)]
    pub status: Status,
    /// The host it runs on, for "prefer the same host" (empty: compare by address).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node: String,
}

fn is_zero(port: &u16) -> bool {
    *port == 0
}

impl Instance {
    /// An instance of `service` with id `id`, passing, with nothing else set.
    pub fn new(service: &str, id: &str) -> Self {
        Instance {
            service: service.to_owned(),
            id: id.to_owned(),
            version: String::new(),
            address: String::new(),
            port: 0,
            tags: Vec::new(),
            meta: BTreeMap::new(),
            endpoints: None,
            status: Status::Passing,
            node: String::new(),
        }
    }

    /// Sets the address.
    pub fn address(mut self, address: &str) -> Self {
        address.clone_into(&mut self.address);
        self
    }

    /// Sets the port.
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Sets the version.
    pub fn version(mut self, version: &str) -> Self {
        version.clone_into(&mut self.version);
        self
    }

    /// Adds a tag.
    pub fn tag(mut self, tag: &str) -> Self {
        self.tags.push(tag.to_owned());
        self
    }

    /// Sets one metadata key.
    pub fn meta(mut self, key: &str, value: &str) -> Self {
        self.meta.insert(key.to_owned(), value.to_owned());
        self
    }

    /// Sets the host it runs on.
    pub fn node(mut self, node: &str) -> Self {
        node.clone_into(&mut self.node);
        self
    }

    /// Sets the status.
    pub fn status(mut self, status: Status) -> Self {
        self.status = status;
        self
    }

    /// Sets the endpoints (opaque JSON).
    pub fn endpoints(mut self, endpoints: Json) -> Self {
        self.endpoints = Some(endpoints);
        self
    }

    /// The register this instance is stored as: `svc/<service>/<id>`.
    pub fn register_name(&self) -> String {
        register_name(&self.service, &self.id)
    }

    /// The register value: this instance as canonical JSON, `endpoints` exactly as given
    /// (serde's path would round their numbers through `f64`).
    pub fn to_json(&self) -> Json {
        let Ok(Value::Object(mut fields)) = serde_json::to_value(self) else {
            return Json::null();
        };
        fields.remove("endpoints");
        let mut text = Value::Object(fields).to_string();
        if let Some(endpoints) = &self.endpoints {
            // `service`, `id` and `status` are always there: the object is never empty.
            text.pop();
            text.push_str(",\"endpoints\":");
            text.push_str(endpoints.as_str());
            text.push('}');
        }
        Json::parse(text.as_bytes()).unwrap_or_else(|_| Json::null())
    }

    /// Checks the service name and id (the value's fields are checked by [`parse`]).
    pub fn validate(&self) -> Result<(), InvalidInstance> {
        check_part("service", &self.service, is_service_char)?;
        check_part("id", &self.id, is_id_char)?;
        if self.meta.keys().any(String::is_empty) {
            return Err(InvalidInstance::field("meta", "keys must not be empty"));
        }
        Ok(())
    }

    /// The host to compare for "prefer the same host": the node, else the address.
    pub fn host(&self) -> &str {
        if self.node.is_empty() {
            &self.address
        } else {
            &self.node
        }
    }
}

/// The register name of an instance.
pub fn register_name(service: &str, id: &str) -> String {
    let mut name = String::with_capacity(PREFIX.len() + service.len() + 1 + id.len());
    name.push_str(PREFIX);
    name.push_str(service);
    name.push('/');
    name.push_str(id);
    name
}

/// Whether `name` is under the reserved prefix (so its value must be an instance).
pub fn is_reserved(name: &str) -> bool {
    name.starts_with(PREFIX)
}

/// Splits an instance register's name into service and id (`None`: not under the prefix, or
/// not two parts).
pub fn split_name(name: &str) -> Option<(&str, &str)> {
    let rest = name.strip_prefix(PREFIX)?;
    let (service, id) = rest.split_once('/')?;
    (!service.is_empty() && !id.is_empty() && !id.contains('/')).then_some((service, id))
}

/// Why a value under the reserved prefix is not an instance: names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct InvalidInstance {
    /// The field (`name` for the register name itself).
    pub field: String,
    /// What is wrong with it.
    pub problem: String,
}

impl InvalidInstance {
    pub(crate) fn field(field: &str, problem: impl Into<String>) -> Self {
        InvalidInstance {
            field: field.to_owned(),
            problem: problem.into(),
        }
    }
}

fn is_service_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '@' | '+' | '=' | '~')
}

fn check_part(field: &str, part: &str, allowed: fn(char) -> bool) -> Result<(), InvalidInstance> {
    if part.is_empty() {
        return Err(InvalidInstance::field(field, "must not be empty"));
    }
    if part.len() > MAX_PART_LEN {
        return Err(InvalidInstance::field(
            field,
            format!("is {} bytes, over the limit of {MAX_PART_LEN}", part.len()),
        ));
    }
    if let Some(bad) = part.chars().find(|&c| !allowed(c)) {
        let allowed = if field == "service" {
            "letters, digits, '.', '_' and '-'"
        } else {
            "letters, digits and . _ - : @ + = ~"
        };
        return Err(InvalidInstance::field(
            field,
            format!("{bad:?} is not allowed (only {allowed})"),
        ));
    }
    Ok(())
}

/// Parses and checks the value of the register `name` (which must be under [`PREFIX`]):
/// the instance it describes, or the first field that is wrong.
///
/// `service` and `id` may be left out of the value (the name says them); when given they
/// must match the name. Unknown fields are refused, so a misspelt `stauts` is an error
/// rather than an instance that silently stays passing.
pub fn parse(name: &str, value: &Json) -> Result<Instance, InvalidInstance> {
    let rest = name.strip_prefix(PREFIX).ok_or_else(|| {
        InvalidInstance::field("name", format!("instance names start with {PREFIX:?}"))
    })?;
    let (service, id) = rest
        .split_once('/')
        .ok_or_else(|| InvalidInstance::field("name", "must be svc/<service>/<id>".to_owned()))?;
    check_part("service", service, is_service_char)
        .map_err(|e| InvalidInstance::field("name", format!("service {}", e.problem)))?;
    check_part("id", id, is_id_char)
        .map_err(|e| InvalidInstance::field("name", format!("instance id {}", e.problem)))?;
    let parsed: Value = serde_json::from_str(value.as_str())
        .map_err(|e| InvalidInstance::field("value", format!("is not JSON: {e}")))?;
    let Value::Object(fields) = parsed else {
        return Err(InvalidInstance::field(
            "value",
            format!("must be an object, not {}", kind(&parsed)),
        ));
    };
    let mut instance = Instance::new(service, id);
    for (key, field) in fields {
        apply(&mut instance, &key, field, service, id)?;
    }
    if instance.endpoints.is_some() {
        // Exactly as written, not as serde_json's `f64`s would give it back.
        instance.endpoints = member(value, "endpoints");
    }
    Ok(instance)
}

/// The exact canonical text of one member of an object value.
fn member(value: &Json, key: &str) -> Option<Json> {
    match crate::json::parse_tree(value.as_bytes()).ok()? {
        Node::Object(members) => members
            .iter()
            .find(|(k, _)| k.decoded() == key)
            .map(|(_, v)| v.to_json()),
        _ => None,
    }
}

/// The fields of an instance's value, as [`parse`] takes them.
pub(crate) const FIELDS: [&str; 10] = [
    "service",
    "id",
    "version",
    "address",
    "port",
    "tags",
    "meta",
    "endpoints",
    "status",
    "node",
];

/// An instance as a listing gives it (`GET /v1/services/<name>`): its fields, which are
/// parsed as [`parse`] does, beside `revision` and `created`; anything else is left out, so
/// a newer server's extra fields do not break an older client. `None` if it is not one.
pub fn parse_listed(node: &Node<'_>) -> Option<crate::discovery::InstanceEntry> {
    let Node::Object(members) = node else {
        return None;
    };
    let text = |key: &str| {
        members
            .iter()
            .find(|(k, _)| k.decoded() == key)
            .map(|(_, v)| v)
    };
    let number = |key: &str| match text(key) {
        Some(Node::Number(n)) => n.parse::<u64>().ok(),
        _ => None,
    };
    let string = |key: &str| match text(key) {
        Some(Node::String(s)) => Some(s.decoded().into_owned()),
        _ => None,
    };
    let (service, id) = (string("service")?, string("id")?);
    let kept: Vec<_> = members
        .iter()
        .filter(|(k, _)| FIELDS.contains(&&*k.decoded()))
        .cloned()
        .collect();
    let instance = parse(&register_name(&service, &id), &Node::Object(kept).to_json()).ok()?;
    let revision = number("revision").unwrap_or(0);
    Some(crate::discovery::InstanceEntry::new(
        instance,
        revision,
        number("created").unwrap_or(revision),
    ))
}

fn apply(
    instance: &mut Instance,
    key: &str,
    field: Value,
    service: &str,
    id: &str,
) -> Result<(), InvalidInstance> {
    match key {
        "service" => {
            let text = string(key, field)?;
            if text != service {
                return Err(InvalidInstance::field(
                    key,
                    format!("is {} but the name says {service:?}", clip(&text)),
                ));
            }
        }
        "id" => {
            let text = string(key, field)?;
            if text != id {
                return Err(InvalidInstance::field(
                    key,
                    format!("is {} but the name says {id:?}", clip(&text)),
                ));
            }
        }
        "version" => instance.version = string(key, field)?,
        "address" => instance.address = string(key, field)?,
        "node" => instance.node = string(key, field)?,
        "port" => {
            instance.port = field
                .as_u64()
                .and_then(|port| u16::try_from(port).ok())
                .ok_or_else(|| {
                    InvalidInstance::field(
                        key,
                        format!(
                            "must be an integer 0–65535, not {}",
                            clip(&field.to_string())
                        ),
                    )
                })?;
        }
        "tags" => {
            let Value::Array(items) = field else {
                return Err(InvalidInstance::field(
                    key,
                    format!("must be an array of strings, not {}", kind(&field)),
                ));
            };
            instance.tags = items
                .into_iter()
                .map(|item| match item {
                    Value::String(tag) => Ok(tag),
                    other => Err(InvalidInstance::field(
                        key,
                        format!("must hold strings, not {}", kind(&other)),
                    )),
                })
                .collect::<Result<_, _>>()?;
        }
        "meta" => instance.meta = string_map(key, field)?,
        // A placeholder: `parse` puts in the exact text.
        "endpoints" => instance.endpoints = (!field.is_null()).then(Json::null),
        "status" => {
            let text = string(key, field)?;
            instance.status = Status::parse(&text).ok_or_else(|| {
                InvalidInstance::field(
                    key,
                    format!("must be passing, warning or critical, not {}", clip(&text)),
                )
            })?;
        }
        other => {
            return Err(InvalidInstance::field(
                &other.chars().take(64).collect::<String>(),
                "is not a field of an instance (service, id, version, address, port, tags, \
                 meta, endpoints, status, node)",
            ))
        }
    }
    Ok(())
}

fn string(key: &str, field: Value) -> Result<String, InvalidInstance> {
    match field {
        Value::String(text) => Ok(text),
        other => Err(InvalidInstance::field(
            key,
            format!("must be a string, not {}", kind(&other)),
        )),
    }
}

fn string_map(key: &str, field: Value) -> Result<BTreeMap<String, String>, InvalidInstance> {
    let Value::Object(entries) = field else {
        return Err(InvalidInstance::field(
            key,
            format!("must be an object of strings, not {}", kind(&field)),
        ));
    };
    entries
        .into_iter()
        .map(|(k, v)| match v {
            Value::String(text) if !k.is_empty() => Ok((k, text)),
            Value::String(_) => Err(InvalidInstance::field(key, "keys must not be empty")),
            other => Err(InvalidInstance::field(
                &format!("{key}.{}", k.chars().take(64).collect::<String>()),
                format!("must be a string, not {}", kind(&other)),
            )),
        })
        .collect()
}

/// Client input in an error message: quoted, escaped, at most 64 characters.
fn clip(text: &str) -> String {
    let mut out: String = format!("{:?}", text.chars().take(64).collect::<String>());
    if text.chars().nth(64).is_some() {
        out.push('…');
    }
    out
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(text: &str) -> Json {
        Json::parse(text.as_bytes()).expect("test JSON")
    }

    #[test]
    fn a_full_value_parses_and_round_trips() {
        let value = json(
            r#"{"service":"web","id":"w1","version":"2","address":"10.0.0.1","port":80,
                "tags":["a","b"],"meta":{"zone":"x"},"endpoints":[{"name":"Get"}],
                "status":"warning","node":"h1"}"#,
        );
        let instance = parse("svc/web/w1", &value).expect("valid");
        assert_eq!(instance.status, Status::Warning);
        assert_eq!(instance.tags, ["a", "b"]);
        assert_eq!(instance.host(), "h1");
        let again = parse("svc/web/w1", &instance.to_json()).expect("round trip");
        assert_eq!(again, instance);
    }

    #[test]
    fn the_name_gives_service_and_id() {
        let instance = parse("svc/web/w1", &json("{}")).expect("valid");
        assert_eq!(
            (instance.service.as_str(), instance.id.as_str()),
            ("web", "w1")
        );
        assert_eq!(instance.status, Status::Passing);
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("svc/web/w1", r#"{"port":70000}"#, "port"),
            ("svc/web/w1", r#"{"port":"80"}"#, "port"),
            ("svc/web/w1", r#"{"status":"ok"}"#, "status"),
            ("svc/web/w1", r#"{"stauts":"passing"}"#, "stauts"),
            ("svc/web/w1", r#"{"tags":"a"}"#, "tags"),
            ("svc/web/w1", r#"{"tags":[1]}"#, "tags"),
            ("svc/web/w1", r#"{"meta":{"k":1}}"#, "meta.k"),
            ("svc/web/w1", r#"{"service":"api"}"#, "service"),
            ("svc/web/w1", r#"{"id":"w2"}"#, "id"),
            ("svc/web/w1", r#""text""#, "value"),
            ("svc/web", "{}", "name"),
            ("svc/web/w1/x", "{}", "name"),
            ("svc//w1", "{}", "name"),
            ("svc/we b/w1", "{}", "name"),
        ];
        for (name, value, field) in cases {
            let error = parse(name, &json(value)).expect_err(value);
            assert_eq!(error.field, field, "{name} {value}: {error}");
        }
    }

    #[test]
    fn names_split_only_in_two() {
        assert_eq!(split_name("svc/web/w1"), Some(("web", "w1")));
        assert_eq!(split_name("svc/web"), None);
        assert_eq!(split_name("svc/web/w1/x"), None);
        assert_eq!(split_name("other/web/w1"), None);
    }
}
