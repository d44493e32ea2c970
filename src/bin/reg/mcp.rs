//! `reg mcp`: a Model Context Protocol server on stdio, so an LLM agent can read registers and
//! drive devices through change requests.
//!
//! The transport is MCP's stdio transport: one JSON-RPC 2.0 message per line on stdin, one
//! per line on stdout, logs on stderr. We implement the part of the protocol a tools-only
//! server needs — `initialize`, `notifications/initialized`, `ping`, `tools/list`,
//! `tools/call` — by hand rather than with the `rmcp` SDK: that SDK needs a newer Rust than
//! our `rust-version`, and brings schemars, chrono, a proc-macro crate and more into a build
//! that CI compiles from scratch, for four tools.
//!
//! Messages are parsed with reg's own JSON parser, so a value an agent sends keeps its
//! numbers exactly (`12345678901234567890` is not rounded), as everywhere else in reg.
//! Tool calls run one at a time in the order they came; the other requests are answered at
//! once (a `request_change` waiting for its confirmation does not hold up a `ping`). Answers
//! go out whole, one line each.

use std::time::Duration;

use reg::client::{ClientError, ReadQuery, RegisterWrite, WireClient};
use reg::json::{parse_tree, Node};
use reg::Json;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::common::{self, Object, RegistryArg, StdinLine};

/// The protocol revisions we speak, newest first. A client asking for one of them gets it;
/// any other gets the newest, and may disconnect if it cannot speak that.
const PROTOCOL_VERSIONS: [&str; 4] = ["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];

/// How long `request_change` waits for the provider's confirmation unless told: 2 s, as
/// `reg set`.
const DEFAULT_CONFIRM_TIMEOUT: Duration = Duration::from_secs(2);

// JSON-RPC 2.0 error codes.
const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
const METHOD_NOT_FOUND: i64 = -32601;
const INVALID_PARAMS: i64 = -32602;

/// The arguments of `reg mcp` (its help is on `Command::Mcp` in `main.rs`).
#[derive(Debug, clap::Args)]
pub(crate) struct McpArgs {
    #[command(flatten)]
    pub(crate) registry: RegistryArg,
}

pub(crate) fn run(args: McpArgs) -> anyhow::Result<()> {
    let registry = &args.registry;
    let wire = registry.wire()?;
    common::init_logging();
    common::runtime()?.block_on(serve(wire))
}

async fn serve(wire: WireClient) -> anyhow::Result<()> {
    let mut lines = common::stdin_lines();
    let (answers, mut outbox) = mpsc::unbounded_channel::<String>();
    let writer = tokio::spawn(async move {
        while let Some(answer) = outbox.recv().await {
            common::emit(&answer)?;
        }
        anyhow::Ok(())
    });
    // Tool calls run one at a time, in the order they came: a client that sends a write and
    // then a read sees the write, as it would over one connection.
    let (calls, mut queue) = mpsc::unbounded_channel::<(Json, String, Json)>();
    let worker = {
        let answers = answers.clone();
        tokio::spawn(async move {
            while let Some((id, tool, arguments)) = queue.recv().await {
                let result = call_tool(&wire, &tool, &arguments).await;
                let _ = answers.send(success(&id, &result));
            }
        })
    };
    while let Some(line) = lines.recv().await {
        let bytes = match line {
            StdinLine::Line { bytes, .. } => bytes,
            StdinLine::TooLong { number } => {
                tracing::warn!(line = number, "mcp: message over 16 MiB skipped");
                continue;
            }
            StdinLine::Failed(error) => {
                tracing::warn!(%error, "mcp: reading stdin failed");
                break;
            }
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match dispatch(&bytes) {
            Dispatch::Answer(answer) => {
                let _ = answers.send(answer);
            }
            Dispatch::Call {
                id,
                tool,
                arguments,
            } => {
                let _ = calls.send((id, tool, arguments));
            }
            Dispatch::Nothing => {}
        }
    }
    // End of input: finish the queued calls, then flush their answers.
    drop(calls);
    worker.await?;
    drop(answers);
    writer.await??;
    Ok(())
}

/// What to do with one message.
#[derive(Debug)]
enum Dispatch {
    /// Answer at once.
    Answer(String),
    /// Run a tool, then answer.
    Call {
        id: Json,
        tool: String,
        arguments: Json,
    },
    /// A notification: no answer.
    Nothing,
}

fn dispatch(bytes: &[u8]) -> Dispatch {
    let message = match parse_tree(bytes) {
        Ok(message) => message,
        Err(error) => {
            return Dispatch::Answer(failure(
                &Json::null(),
                PARSE_ERROR,
                &format!("parse error: {error}"),
            ))
        }
    };
    if !matches!(message, Node::Object(_)) {
        return Dispatch::Answer(failure(
            &Json::null(),
            INVALID_REQUEST,
            "invalid request: expected a JSON-RPC 2.0 object (batches are not supported)",
        ));
    }
    let id = message.get("id").map(Node::to_json);
    let Some(Node::String(method)) = message.get("method") else {
        return match id {
            // A response to a request of ours: we send none, so there is nothing to match.
            Some(_) if message.get("result").is_some() || message.get("error").is_some() => {
                Dispatch::Nothing
            }
            _ => Dispatch::Answer(failure(
                &id.unwrap_or_else(Json::null),
                INVALID_REQUEST,
                "invalid request: \"method\" must be a string",
            )),
        };
    };
    let method = method.decoded();
    let Some(id) = id else {
        // Notifications (initialized, cancelled, …) need no answer.
        tracing::debug!(%method, "mcp: notification");
        return Dispatch::Nothing;
    };
    if !matches!(message.get("jsonrpc"), Some(Node::String(v)) if v.decoded() == "2.0") {
        return Dispatch::Answer(failure(
            &id,
            INVALID_REQUEST,
            "invalid request: \"jsonrpc\" must be \"2.0\"",
        ));
    }
    let params = message.get("params");
    match &*method {
        "initialize" => Dispatch::Answer(success(&id, &initialize(params))),
        "ping" => Dispatch::Answer(success(&id, &json!({}))),
        "tools/list" => Dispatch::Answer(success(&id, &json!({ "tools": tools() }))),
        "tools/call" => {
            let tool = match params.and_then(|p| p.get("name")) {
                Some(Node::String(name)) => name.decoded().into_owned(),
                _ => {
                    return Dispatch::Answer(failure(
                        &id,
                        INVALID_PARAMS,
                        "tools/call needs params.name, a string",
                    ))
                }
            };
            if !TOOL_NAMES.contains(&tool.as_str()) {
                return Dispatch::Answer(failure(
                    &id,
                    INVALID_PARAMS,
                    &format!(
                        "unknown tool {tool:?}; the tools are {}",
                        TOOL_NAMES.join(", ")
                    ),
                ));
            }
            // No arguments: `null`, taken as `{}`.
            let arguments = params
                .and_then(|p| p.get("arguments"))
                .map_or_else(Json::null, Node::to_json);
            Dispatch::Call {
                id,
                tool,
                arguments,
            }
        }
        other => Dispatch::Answer(failure(
            &id,
            METHOD_NOT_FOUND,
            &format!("method not found: {other}"),
        )),
    }
}

fn initialize(params: Option<&Node<'_>>) -> Value {
    let asked = match params.and_then(|p| p.get("protocolVersion")) {
        Some(Node::String(version)) => Some(version.decoded().into_owned()),
        _ => None,
    };
    let version = asked
        .as_deref()
        .and_then(|asked| PROTOCOL_VERSIONS.iter().find(|v| **v == asked))
        .unwrap_or(&PROTOCOL_VERSIONS[0]);
    json!({
        "protocolVersion": version,
        "capabilities": { "tools": { "listChanged": false } },
        "serverInfo": {
            "name": "reg",
            "title": "reg register registry",
            "version": env!("CARGO_PKG_VERSION"),
        },
        "instructions": "reg holds named JSON values (registers) that devices and services \
            publish and keep alive; a register disappears when its provider stops. Read with \
            get_register and list_registers. To change a device, use request_change: it asks \
            the register's provider for a new value and waits until the provider confirms. \
            set_register publishes a register yourself (it expires after its ttl).",
    })
}

const TOOL_NAMES: [&str; 4] = [
    "get_register",
    "list_registers",
    "request_change",
    "set_register",
];

fn tools() -> Value {
    json!([
        {
            "name": "get_register",
            "title": "Get a register",
            "description": "Read one register: its JSON value, metadata, revision and the time \
                left before it expires. Fails if the register does not exist.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "name": { "type": "string", "description": "The register's name, e.g. \"kitchen.lamp\"." }
                },
                "required": ["name"]
            },
            "annotations": { "readOnlyHint": true }
        },
        {
            "name": "list_registers",
            "title": "List registers",
            "description": "List registers sorted by name, as an object name -> {value, metadata}. \
                Names are often dotted paths (\"kitchen.lamp\"); pass a prefix to narrow the list.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "prefix": { "type": "string", "description": "Only names starting with this." }
                }
            },
            "annotations": { "readOnlyHint": true }
        },
        {
            "name": "request_change",
            "title": "Request a change",
            "description": "Ask the provider of a register (the device or service that publishes \
                it) to change its value, then wait until the provider confirms by publishing \
                that value. Fails if it does not confirm within the timeout; the request then \
                stays pending until a provider takes it.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "name": { "type": "string", "description": "The register's name." },
                    "value": { "description": "The value to ask for: any JSON value." },
                    "timeout": { "type": "string", "description": "How long to wait for the confirmation, as a Go duration (\"2s\", \"500ms\"); \"0\" does not wait. Default \"2s\"." }
                },
                "required": ["name", "value"]
            },
            "annotations": { "readOnlyHint": false, "destructiveHint": false }
        },
        {
            "name": "set_register",
            "title": "Set a register",
            "description": "Publish a register directly, as its provider: create it or replace its \
                value and metadata. It expires after ttl unless set again. To change a device's \
                state, prefer request_change: the device's own provider would overwrite this.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "name": { "type": "string", "description": "The register's name." },
                    "value": { "description": "Its value: any JSON value." },
                    "metadata": { "type": "object", "description": "Optional metadata (replaces the old metadata)." },
                    "ttl": { "type": "string", "description": "Time to live as a Go duration (\"30s\", \"5m\"). Default: the registry's, 10s." }
                },
                "required": ["name", "value"]
            },
            "annotations": { "readOnlyHint": false, "destructiveHint": true }
        }
    ])
}

/// A tool's outcome: its text, and whether it failed.
type ToolResult = Result<String, String>;

async fn call_tool(wire: &WireClient, tool: &str, arguments: &Json) -> Value {
    let result = match parse_tree(arguments.as_bytes()) {
        Ok(Node::Null) => run_tool(wire, tool, &Node::Object(Vec::new())).await,
        Ok(args @ Node::Object(_)) => run_tool(wire, tool, &args).await,
        Ok(other) => Err(format!("arguments must be an object, got {}", other.kind())),
        Err(error) => Err(format!("arguments are not valid JSON: {error}")),
    };
    let (text, is_error) = match result {
        Ok(text) => (text, false),
        Err(text) => (text, true),
    };
    json!({ "content": [{ "type": "text", "text": text }], "isError": is_error })
}

async fn run_tool(wire: &WireClient, tool: &str, args: &Node<'_>) -> ToolResult {
    match tool {
        "get_register" => get_register(wire, args).await,
        "list_registers" => list_registers(wire, args).await,
        "request_change" => request_change(wire, args).await,
        "set_register" => set_register(wire, args).await,
        other => Err(format!("unknown tool {other:?}")),
    }
}

fn string_arg(args: &Node<'_>, key: &str) -> Result<Option<String>, String> {
    match args.get(key) {
        None | Some(Node::Null) => Ok(None),
        Some(Node::String(s)) => Ok(Some(s.decoded().into_owned())),
        Some(other) => Err(format!(
            "argument {key:?} must be a string, got {}",
            other.kind()
        )),
    }
}

fn name_arg(args: &Node<'_>) -> Result<String, String> {
    string_arg(args, "name")?.ok_or_else(|| "argument \"name\" is required".to_owned())
}

fn value_arg(args: &Node<'_>) -> Result<Json, String> {
    args.get("value")
        .map(Node::to_json)
        .ok_or_else(|| "argument \"value\" is required (any JSON value)".to_owned())
}

fn duration_arg(args: &Node<'_>, key: &str) -> Result<Option<Duration>, String> {
    string_arg(args, key)?
        .map(|text| {
            crate::serve::parse_duration(&text)
                .map_err(|error| format!("argument {key:?}: {error}"))
        })
        .transpose()
}

fn client_error(error: &ClientError) -> String {
    format!("the registry failed: {error}")
}

async fn get_register(wire: &WireClient, args: &Node<'_>) -> ToolResult {
    let name = name_arg(args)?;
    let read = wire
        .read(&ReadQuery::names([&name]).detail(true))
        .await
        .map_err(|e| client_error(&e))?;
    let register = common::find(&read, &name)
        .ok_or_else(|| format!("register {name:?} does not exist (it may have expired)"))?;
    let mut object = Object::new()
        .member("name", &common::json_string(&name))
        .member("value", &register.value)
        .member(
            "metadata",
            &common::metadata_or_empty(register.metadata.as_ref()),
        );
    if let Some(revision) = register.revision {
        object = object.member("revision", &revision);
    }
    if let Some(expires_in) = register.expires_in {
        object = object.member(
            "expires_in",
            &common::json_string(&common::show_duration(expires_in)),
        );
    }
    Ok(object.finish())
}

async fn list_registers(wire: &WireClient, args: &Node<'_>) -> ToolResult {
    let prefix = string_arg(args, "prefix")?.unwrap_or_default();
    let read = wire
        .read(&ReadQuery::all())
        .await
        .map_err(|e| client_error(&e))?;
    let mut object = Object::new();
    for register in read
        .registers
        .iter()
        .filter(|r| r.name.starts_with(&prefix))
    {
        object = object.member(
            &register.name,
            &common::value_with_metadata(&register.value, register.metadata.as_ref()),
        );
    }
    Ok(object.finish())
}

async fn request_change(wire: &WireClient, args: &Node<'_>) -> ToolResult {
    let name = name_arg(args)?;
    let value = value_arg(args)?;
    let timeout = duration_arg(args, "timeout")?.unwrap_or(DEFAULT_CONFIRM_TIMEOUT);
    wire.request(&[(name.as_str(), value.clone())])
        .await
        .map_err(|e| client_error(&e))?;
    let names = [name.clone()];
    let (read, confirmed) = common::read_until(wire, &names, false, timeout, |read| {
        common::find(read, &name).is_some_and(|register| register.value == value)
    })
    .await
    .map_err(|e| client_error(&e))?;
    if confirmed {
        return Ok(Object::new()
            .member("name", &common::json_string(&name))
            .member("value", &value)
            .member("confirmed", &true)
            .finish());
    }
    let now = match common::find(&read, &name) {
        Some(register) => format!("its value is still {}", register.value),
        None => "the register does not exist: no provider holds it".to_owned(),
    };
    Err(format!(
        "the change request was sent, but the provider of {name:?} did not confirm {value} \
         within {} ({now}); the request stays pending until a provider takes it",
        common::show_duration(timeout)
    ))
}

async fn set_register(wire: &WireClient, args: &Node<'_>) -> ToolResult {
    let name = name_arg(args)?;
    let value = value_arg(args)?;
    let metadata = match args.get("metadata") {
        None | Some(Node::Null) => None,
        Some(metadata @ Node::Object(_)) => Some(metadata.to_json()),
        Some(other) => {
            return Err(format!(
                "argument \"metadata\" must be an object, got {}",
                other.kind()
            ))
        }
    };
    let ttl = duration_arg(args, "ttl")?;
    let mut write = RegisterWrite::new(&name, value.clone());
    if let Some(metadata) = metadata {
        write = write.metadata(metadata);
    }
    if let Some(ttl) = ttl {
        write = write.ttl(ttl);
    }
    wire.set(&[write]).await.map_err(|e| client_error(&e))?;
    let mut object = Object::new()
        .member("name", &common::json_string(&name))
        .member("value", &value);
    if let Some(ttl) = ttl {
        object = object.member("ttl", &common::json_string(&common::show_duration(ttl)));
    }
    Ok(object.finish())
}

/// A JSON-RPC success answer.
fn success(id: &Json, result: &Value) -> String {
    format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{result}}}"#)
}

/// A JSON-RPC error answer.
fn failure(id: &Json, code: i64, message: &str) -> String {
    let error = json!({ "code": code, "message": message });
    format!(r#"{{"jsonrpc":"2.0","id":{id},"error":{error}}}"#)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn answer(line: &str) -> Value {
        match dispatch(line.as_bytes()) {
            Dispatch::Answer(answer) => serde_json::from_str(&answer).unwrap(),
            other => panic!("no answer: {other:?}"),
        }
    }

    #[test]
    fn protocol_errors_have_the_json_rpc_codes() {
        assert_eq!(answer("{oops")["error"]["code"], PARSE_ERROR);
        assert_eq!(answer("[1]")["error"]["code"], INVALID_REQUEST);
        let unknown = answer(r#"{"jsonrpc":"2.0","id":7,"method":"nope"}"#);
        assert_eq!(unknown["id"], 7);
        assert_eq!(unknown["error"]["code"], METHOD_NOT_FOUND);
        let tool =
            answer(r#"{"jsonrpc":"2.0","id":"x","method":"tools/call","params":{"name":"rm"}}"#);
        assert_eq!(tool["id"], "x");
        assert_eq!(tool["error"]["code"], INVALID_PARAMS);
    }

    #[test]
    fn ids_come_back_exactly_and_notifications_get_no_answer() {
        let big = dispatch(br#"{"jsonrpc":"2.0","id":12345678901234567890123,"method":"ping"}"#);
        match big {
            Dispatch::Answer(text) => assert!(
                text.starts_with(r#"{"jsonrpc":"2.0","id":12345678901234567890123,"result":{}"#),
                "{text}"
            ),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            dispatch(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#),
            Dispatch::Nothing
        ));
    }

    #[test]
    fn initialize_agrees_on_a_version() {
        let known = answer(
            r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-03-26"}}"#,
        );
        assert_eq!(known["result"]["protocolVersion"], "2025-03-26");
        let unknown = answer(
            r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"1999-01-01"}}"#,
        );
        assert_eq!(unknown["result"]["protocolVersion"], PROTOCOL_VERSIONS[0]);
    }
}
