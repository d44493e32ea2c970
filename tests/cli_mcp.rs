//! `reg mcp` end to end: a JSON-RPC 2.0 session over the binary's stdio that initializes,
//! lists the tools and calls each, against our server on 127.0.0.1:0.
#![allow(clippy::unwrap_used)]

mod cli_support;

use cli_support::{eventually, Running, TestServer};
use serde_json::{json, Value};

/// An MCP client session over a running `reg mcp`.
struct Session {
    mcp: Running,
    next_id: u64,
}

impl Session {
    fn start(server: &TestServer) -> Self {
        Self {
            mcp: Running::start(server.reg(&["mcp"])),
            next_id: 1,
        }
    }

    fn send(&mut self, message: &Value) {
        self.mcp.write(&format!("{message}\n"));
    }

    /// Sends a request and returns its answer (answers to other ids are not expected: the
    /// session sends one request at a time).
    fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params }));
        let line = self.mcp.next_line();
        let answer: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(answer["jsonrpc"], "2.0", "{line}");
        assert_eq!(answer["id"], id, "{line}");
        answer
    }

    /// Calls a tool; returns its text and whether it is an error.
    fn call(&mut self, tool: &str, arguments: Value) -> (String, bool) {
        let answer = self.request(
            "tools/call",
            json!({ "name": tool, "arguments": arguments }),
        );
        let result = &answer["result"];
        assert_eq!(result["content"][0]["type"], "text", "{answer}");
        (
            result["content"][0]["text"].as_str().unwrap().to_owned(),
            result["isError"].as_bool().unwrap(),
        )
    }
}

#[test]
fn an_mcp_session_initializes_lists_and_calls_every_tool() {
    let server = TestServer::start();
    let mut session = Session::start(&server);

    let init = session.request(
        "initialize",
        json!({
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": { "name": "test", "version": "1" }
        }),
    );
    let result = &init["result"];
    assert_eq!(result["protocolVersion"], "2025-06-18");
    assert_eq!(result["serverInfo"]["name"], "reg");
    assert!(result["capabilities"]["tools"].is_object(), "{init}");
    session.send(&json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }));
    assert_eq!(session.request("ping", json!({}))["result"], json!({}));

    let list = session.request("tools/list", json!({}));
    let tools = list["result"]["tools"].as_array().unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "get_register",
            "list_registers",
            "request_change",
            "set_register"
        ]
    );
    for tool in tools {
        assert_eq!(tool["inputSchema"]["type"], "object", "{tool}");
        assert!(tool["description"].as_str().unwrap().len() > 20, "{tool}");
    }

    // set_register: PUT /provider, with a TTL; a big number stays exact. The line is written
    // by hand: serde_json would round the number.
    session.mcp.write(
        r#"{"jsonrpc":"2.0","id":100,"method":"tools/call","params":{"name":"set_register","arguments":{"name":"room.big","value":12345678901234567890123,"metadata":{"unit":"mm"},"ttl":"1m"}}}"#,
    );
    session.mcp.write("\n");
    let answer: Value = serde_json::from_str(&session.mcp.next_line()).unwrap();
    assert_eq!(answer["id"], 100);
    assert_eq!(answer["result"]["isError"], false, "{answer}");
    assert_eq!(
        server.value("room.big").as_deref(),
        Some("12345678901234567890123")
    );
    assert!(server.registry.expires_in("room.big").unwrap().as_secs() > 50);

    // get_register: value, metadata, revision, expiry.
    let (text, error) = session.call("get_register", json!({ "name": "room.big" }));
    assert!(!error, "{text}");
    assert!(
        text.starts_with(r#"{"name":"room.big","value":12345678901234567890123,"metadata":{"unit":"mm"},"revision":"#),
        "{text}"
    );
    assert!(text.contains(r#""expires_in":""#), "{text}");
    let (text, error) = session.call("get_register", json!({ "name": "nope" }));
    assert!(error);
    assert!(text.contains(r#"register "nope" does not exist"#), "{text}");

    // list_registers, with and without a prefix.
    server.set("hall.light", "false");
    let (text, error) = session.call("list_registers", json!({}));
    assert!(!error, "{text}");
    assert_eq!(
        text,
        r#"{"hall.light":{"value":false,"metadata":{}},"room.big":{"value":12345678901234567890123,"metadata":{"unit":"mm"}}}"#
    );
    let (text, _) = session.call("list_registers", json!({ "prefix": "hall." }));
    assert_eq!(text, r#"{"hall.light":{"value":false,"metadata":{}}}"#);

    // request_change: confirmed by a provider that applies it …
    let mut provider = Running::start(server.reg(&["provide", "lamp", "false"]));
    eventually("the provider is up", || server.value("lamp").is_some());
    let (text, error) = session.call(
        "request_change",
        json!({ "name": "lamp", "value": true, "timeout": "5s" }),
    );
    assert!(!error, "{text}");
    assert_eq!(text, r#"{"name":"lamp","value":true,"confirmed":true}"#);
    assert_eq!(provider.next_line(), r#"{"name":"lamp","value":true}"#);
    assert_eq!(server.value("lamp").as_deref(), Some("true"));
    // … and an error naming the cause when nobody confirms.
    let (text, error) = session.call(
        "request_change",
        json!({ "name": "hall.light", "value": true, "timeout": "100ms" }),
    );
    assert!(error);
    assert!(text.contains("did not confirm true within 100ms"), "{text}");
    assert!(text.contains("its value is still false"), "{text}");

    // Bad arguments are tool errors the model can read; an unknown tool is a protocol error.
    let (text, error) = session.call("set_register", json!({ "name": "x" }));
    assert!(error);
    assert!(text.contains(r#"argument "value" is required"#), "{text}");
    let (text, error) = session.call(
        "set_register",
        json!({ "name": "x", "value": 1, "ttl": "soon" }),
    );
    assert!(error);
    assert!(text.contains("ttl"), "{text}");
    let unknown = session.request("tools/call", json!({ "name": "rm_rf", "arguments": {} }));
    assert_eq!(unknown["error"]["code"], -32602, "{unknown}");
    let unknown = session.request("resources/list", json!({}));
    assert_eq!(unknown["error"]["code"], -32601, "{unknown}");

    // A line that is not JSON gets a parse error and the session goes on.
    session.mcp.write("{not json\n");
    let answer: Value = serde_json::from_str(&session.mcp.next_line()).unwrap();
    assert_eq!(answer["error"]["code"], -32700, "{answer}");
    assert_eq!(answer["id"], Value::Null);
    assert_eq!(session.request("ping", json!({}))["result"], json!({}));

    // The end of stdin ends the server cleanly.
    drop(session.mcp.stdin.take());
    assert!(
        session.mcp.wait().success(),
        "{}",
        session.mcp.stderr_text()
    );
}
