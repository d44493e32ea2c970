//! `--auth` and `--audit-log` end to end over real sockets: every route refuses a caller
//! without the right and changes nothing; reads and watches show only what the caller may
//! read; the audit file holds exactly the scripted session.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{json, within, Conn, Events, Response};
use reg::server::audit::AuditLog;
use reg::server::auth::{hash_token, Auth};
use reg::server::{RunningServer, Server};
use reg::{Json, Registry};

/// The principals every test here uses. Tokens are their names with `-token`.
fn auth_file() -> String {
    let token = |name: &str| hash_token(&format!("{name}-token"));
    format!(
        r#"
[anonymous]
rules = [{{ names = "public.*", rights = ["read"] }}]

[[principal]]
name = "reader"
token = "{reader}"
rules = [{{ names = "*", rights = ["read"] }}]

[[principal]]
name = "sensor"
token = "{sensor}"
rules = [
  {{ prefix = "sensors.1.", rights = ["provide", "take"] }},
  {{ names = "svc/web/*", rights = ["provide"] }},
]

[[principal]]
name = "commander"
token = "{commander}"
rules = [{{ names = "sensors.*", rights = ["request", "read"] }}]

[[principal]]
name = "ops"
token = "{ops}"
rules = [{{ names = "*", rights = ["admin"] }}]
"#,
        reader = token("reader"),
        sensor = token("sensor"),
        commander = token("commander"),
        ops = token("ops"),
    )
}

async fn serve(registry: &Registry, audit: Option<Arc<AuditLog>>) -> RunningServer {
    let mut builder = Server::builder()
        .registry(registry.clone())
        .auth(Auth::from_toml(&auth_file()).unwrap());
    if let Some(audit) = audit {
        builder = builder.audit(audit);
    }
    builder.bind("127.0.0.1:0").await.unwrap()
}

/// One request as `who` (`None`: no credentials).
async fn call(
    server: &RunningServer,
    who: Option<&str>,
    method: &str,
    target: &str,
    body: Option<&str>,
) -> Response {
    let token = who.map(|who| format!("Bearer {who}-token"));
    let mut headers = Vec::new();
    if let Some(token) = &token {
        headers.push(("Authorization", token.as_str()));
    }
    call_with(server, &headers, method, target, body).await
}

async fn call_with(
    server: &RunningServer,
    headers: &[(&str, &str)],
    method: &str,
    target: &str,
    body: Option<&str>,
) -> Response {
    let mut conn = Conn::open(server.local_addr()).await;
    conn.send_with(method, target, headers, body.map(str::as_bytes))
        .await;
    within(target, conn.read_response()).await.unwrap()
}

/// Everything a registry holds that a refused request could change.
fn state(registry: &Registry) -> String {
    let registers: Vec<String> = registry
        .list()
        .registers
        .iter()
        .map(|r| format!("{}={}@{}", r.name(), r.value(), r.revision()))
        .collect();
    format!(
        "rev {} registers {registers:?} pending {}",
        registry.revision(),
        registry.stats().pending_requests
    )
}

fn seed(registry: &Registry) {
    let ttl = Some(Duration::from_secs(600));
    for (name, value) in [
        ("sensors.1.temp", "21"),
        ("sensors.2.temp", "19"),
        ("public.motd", "\"hello\""),
        ("private.key", "\"s3cret\""),
    ] {
        registry
            .set(name, Json::parse(value.as_bytes()).unwrap(), None, ttl)
            .unwrap();
    }
    let instance = r#"{"service":"web","id":"w1","address":"10.0.0.1","port":80}"#;
    registry
        .set(
            "svc/web/w1",
            Json::parse(instance.as_bytes()).unwrap(),
            None,
            ttl,
        )
        .unwrap();
    registry
        .request("sensors.2.temp", Json::parse(b"25").unwrap())
        .unwrap();
}

#[tokio::test]
async fn every_route_refuses_without_the_right_and_changes_nothing() {
    let registry = Registry::new();
    seed(&registry);
    let server = serve(&registry, None).await;
    let before = state(&registry);
    let put = r#"{"registers":{"sensors.1.new":{"value":1},"sensors.2.temp":{"value":2}}}"#;
    let consul = r#"{"Name":"db","ID":"d1","Address":"10.0.0.2","Port":5432}"#;
    // (who, method, target, body, status, the name the error must give)
    type Case<'a> = (
        Option<&'a str>,
        &'a str,
        &'a str,
        Option<&'a str>,
        u16,
        &'a str,
    );
    let refused: &[Case<'_>] = &[
        (None, "PUT", "/provider", Some(put), 401, "provide"),
        (
            Some("reader"),
            "PUT",
            "/provider",
            Some(put),
            403,
            "provide",
        ),
        // All or nothing: sensors.1.new is allowed, sensors.2.temp is not.
        (
            Some("sensor"),
            "PUT",
            "/provider",
            Some(put),
            403,
            "sensors.2.temp",
        ),
        (
            None,
            "DELETE",
            "/provider?name=public.motd",
            None,
            401,
            "public.motd",
        ),
        (
            Some("sensor"),
            "DELETE",
            "/provider?name=sensors.2.temp",
            None,
            403,
            "sensors.2.temp",
        ),
        (
            Some("reader"),
            "PUT",
            "/consumer",
            Some(put),
            403,
            "request",
        ),
        (None, "PUT", "/consumer", Some(put), 401, "request"),
        (
            Some("sensor"),
            "GET",
            "/provider?name=sensors.2.temp",
            None,
            403,
            "sensors.2.temp",
        ),
        (Some("reader"), "GET", "/provider", None, 403, "take"),
        (None, "GET", "/provider?name=public.motd", None, 401, "take"),
        (Some("sensor"), "GET", "/consumer", None, 403, "read"),
        (Some("sensor"), "GET", "/v1/watch", None, 403, "read"),
        (Some("sensor"), "GET", "/v1/services", None, 403, "read"),
        (None, "GET", "/metrics", None, 401, "admin"),
        (Some("reader"), "GET", "/metrics", None, 403, "admin"),
        (
            Some("unknown"),
            "GET",
            "/consumer",
            None,
            401,
            "unknown token",
        ),
        (
            Some("reader"),
            "PUT",
            "/v1/agent/service/register",
            Some(consul),
            403,
            "svc/db/d1",
        ),
        // An id the caller may neither read nor provide is unknown to it, as a missing one.
        (
            None,
            "PUT",
            "/v1/agent/service/deregister/w1",
            None,
            404,
            "unknown service ID",
        ),
        (
            None,
            "PUT",
            "/v1/agent/service/deregister/nope",
            None,
            404,
            "unknown service ID",
        ),
        (
            Some("reader"),
            "PUT",
            "/v1/agent/service/deregister/w1",
            None,
            403,
            "svc/web/w1",
        ),
        (
            Some("reader"),
            "PUT",
            "/v1/agent/check/fail/service:w1",
            None,
            403,
            "svc/web/w1",
        ),
    ];
    for (who, method, target, body, status, names) in refused {
        let response = call(&server, *who, method, target, *body).await;
        let what = format!("{who:?} {method} {target}");
        assert_eq!(response.status, *status, "{what}: {}", response.text());
        assert!(
            response.error().contains(names),
            "{what}: {}",
            response.error()
        );
        if *status == 401 {
            assert_eq!(
                response.header("www-authenticate"),
                Some("Bearer realm=\"reg\""),
                "{what}"
            );
        }
        assert_eq!(state(&registry), before, "{what} changed something");
    }
    // A malformed Authorization header is refused, not taken as anonymous.
    let response = call_with(
        &server,
        &[("Authorization", "Basic b3BzOg==")],
        "GET",
        "/consumer?name=public.motd",
        None,
    )
    .await;
    assert_eq!(response.status, 401, "{}", response.text());
    // The same requests with the right succeed.
    assert_eq!(
        call(&server, Some("ops"), "GET", "/metrics", None)
            .await
            .status,
        200
    );
    assert_eq!(
        call(&server, Some("ops"), "PUT", "/provider", Some(put))
            .await
            .status,
        204
    );
    assert_eq!(
        registry.get("sensors.2.temp").unwrap().value().as_str(),
        "2"
    );
    server.shutdown_and_wait().await.unwrap();
}

#[tokio::test]
async fn reads_and_watches_show_only_what_the_caller_may_read() {
    let registry = Registry::new();
    seed(&registry);
    let server = serve(&registry, None).await;
    let names = |response: &Response| -> Vec<String> {
        let body = response.json();
        body["registers"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    };
    // Anonymous sees public.* only, whether it asks for everything or names the rest.
    let all = call(&server, None, "GET", "/consumer", None).await;
    assert_eq!(all.status, 200);
    assert_eq!(names(&all), ["public.motd"]);
    let named = call(
        &server,
        None,
        "GET",
        "/consumer?name=private.key&name=public.motd",
        None,
    )
    .await;
    assert_eq!(names(&named), ["public.motd"], "no existence leak");
    let hidden = call(&server, None, "GET", "/consumer?name=private.key", None).await;
    assert_eq!(hidden.status, 200);
    assert_eq!(hidden.json(), json(r#"{"registers":{}}"#));
    // A principal with read everywhere sees everything.
    let reader = call(&server, Some("reader"), "GET", "/consumer", None).await;
    assert_eq!(names(&reader).len(), 5);
    // The commander reads sensors.* only.
    let commander = call(&server, Some("commander"), "GET", "/consumer", None).await;
    assert_eq!(names(&commander), ["sensors.1.temp", "sensors.2.temp"]);

    // A watch replays and follows only visible registers.
    let mut events = Events::open(server.local_addr(), "/v1/watch?index=0", &[]).await;
    let first = events.next().await.unwrap();
    assert_eq!(first.data["name"], "public.motd");
    registry
        .set("private.other", Json::from(1_i64), None, None)
        .unwrap();
    registry
        .set("public.news", Json::from(2_i64), None, None)
        .unwrap();
    let next = events.next().await.unwrap();
    assert_eq!(
        (next.event.as_str(), &next.data["name"]),
        ("set", &json("\"public.news\""))
    );

    // Discovery: the reader sees the web service; anonymous (no read on svc/) sees none.
    let services = call(&server, Some("reader"), "GET", "/v1/services", None).await;
    assert_eq!(services.json()["services"][0]["name"], "web");
    let services = call(&server, None, "GET", "/v1/services", None).await;
    assert_eq!(services.json()["services"], json("[]"));
    let consul = call(&server, None, "GET", "/v1/catalog/service/web", None).await;
    assert_eq!(consul.json(), json("[]"));
    let consul = call(
        &server,
        Some("reader"),
        "GET",
        "/v1/health/service/web",
        None,
    )
    .await;
    assert_eq!(consul.json()[0]["Service"]["ID"], "w1");
    server.shutdown_and_wait().await.unwrap();
}

#[tokio::test]
async fn a_take_without_names_takes_only_what_the_caller_may_take() {
    let registry = Registry::new();
    let server = serve(&registry, None).await;
    let body = r#"{"registers":{"sensors.1.fan":{"value":true},"sensors.2.fan":{"value":false}}}"#;
    let asked = call_with(
        &server,
        &[
            ("Authorization", "Bearer commander-token"),
            ("X-Request-Id", "cmd-42"),
        ],
        "PUT",
        "/consumer",
        Some(body),
    )
    .await;
    assert_eq!(asked.status, 202, "{}", asked.text());
    assert_eq!(asked.header("x-request-id"), Some("cmd-42"));
    let taken = call(
        &server,
        Some("sensor"),
        "GET",
        "/provider?detail=true",
        None,
    )
    .await;
    assert_eq!(
        taken.json(),
        json(
            r#"{"registers":{"sensors.1.fan":{"value":true,"requester":"commander","request_id":"cmd-42"}}}"#
        )
    );
    assert_eq!(
        registry.stats().pending_requests,
        1,
        "sensors.2.fan stays for its provider"
    );
    let rest = registry.try_take_requests(&reg::Selector::All);
    assert_eq!(&*rest[0].name, "sensors.2.fan");
    server.shutdown_and_wait().await.unwrap();
}

#[tokio::test]
async fn the_audit_log_holds_exactly_the_session() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let audit = AuditLog::open(&path, 1 << 20, 2).unwrap();
    let (registry, clock) = common::manual_registry();
    let server = serve(&registry, Some(Arc::clone(&audit))).await;
    let provide = |value: &str| {
        format!(r#"{{"registers":{{"sensors.1.t":{{"value":{value},"ttl":"5s"}}}}}}"#)
    };
    let as_sensor = [
        ("Authorization", "Bearer sensor-token"),
        ("X-Request-Id", "s-1"),
    ];
    assert_eq!(
        call_with(&server, &as_sensor, "PUT", "/provider", Some(&provide("1")))
            .await
            .status,
        204
    );
    assert_eq!(
        call(
            &server,
            Some("sensor"),
            "PUT",
            "/provider",
            Some(&provide("2"))
        )
        .await
        .status,
        204
    );
    // A refresh changes nothing: no line.
    assert_eq!(
        call(
            &server,
            Some("sensor"),
            "PUT",
            "/provider",
            Some(&provide("2"))
        )
        .await
        .status,
        204
    );
    let request = r#"{"registers":{"sensors.1.t":{"value":3}}}"#;
    let as_commander = [
        ("Authorization", "Bearer commander-token"),
        ("X-Request-Id", "c-7"),
    ];
    assert_eq!(
        call_with(&server, &as_commander, "PUT", "/consumer", Some(request))
            .await
            .status,
        202
    );
    assert_eq!(
        call(&server, Some("sensor"), "GET", "/provider", None)
            .await
            .status,
        200
    );
    assert_eq!(
        call(
            &server,
            Some("reader"),
            "DELETE",
            "/provider?name=sensors.1.t",
            None
        )
        .await
        .status,
        403
    );
    assert_eq!(
        call(
            &server,
            Some("sensor"),
            "PUT",
            "/provider",
            Some(r#"{"registers":{"sensors.1.u":{"value":0,"ttl":"1s"}}}"#)
        )
        .await
        .status,
        204
    );
    assert_eq!(
        call(
            &server,
            Some("sensor"),
            "DELETE",
            "/provider?name=sensors.1.t",
            None
        )
        .await
        .status,
        204
    );
    clock.advance(Duration::from_secs(2));
    assert_eq!(registry.expire_due(), 1);
    server.shutdown_and_wait().await.unwrap();
    audit.flush();
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let summary: Vec<String> = lines
        .iter()
        .map(|line| {
            let field = |key: &str| match &line[key] {
                serde_json::Value::String(text) => text.clone(),
                serde_json::Value::Null => "-".into(),
                other => other.to_string(),
            };
            format!(
                "{} {} {} rev={} req={} by={}",
                field("event"),
                field("identity"),
                field("name"),
                field("revision"),
                // Generated ids differ per run: only the ones the test chose are compared.
                match field("request_id").as_str() {
                    id @ ("s-1" | "c-7") => id.to_owned(),
                    "-" => "-".to_owned(),
                    _ => "gen".to_owned(),
                },
                field("requested_by"),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            "create sensor sensors.1.t rev=1 req=s-1 by=-",
            "change sensor sensors.1.t rev=2 req=gen by=-",
            "request commander sensors.1.t rev=- req=c-7 by=-",
            "take sensor sensors.1.t rev=- req=gen by=commander",
            "denied reader sensors.1.t rev=- req=gen by=-",
            "create sensor sensors.1.u rev=3 req=gen by=-",
            "delete sensor sensors.1.t rev=4 req=gen by=-",
            "expire reg sensors.1.u rev=5 req=- by=-",
        ],
        "{lines:#?}"
    );
    for line in &lines {
        assert!(line["time"].as_str().unwrap().ends_with('Z'));
        if line["identity"] != "reg" {
            assert!(line["remote"].as_str().unwrap().starts_with("127.0.0.1:"));
            assert!(!line["request_id"].as_str().unwrap().is_empty());
        }
    }
    assert_eq!(lines[4]["status"], 403);
    assert_eq!(lines[3]["requested_in"], "c-7");
    assert_eq!(audit.dropped(), 0);
}

#[tokio::test]
async fn an_open_server_reads_no_credentials() {
    let registry = Registry::new();
    seed(&registry);
    let server = common::start(registry.clone()).await;
    for header in ["Basic b3BzOg==", "Bearer unknown-token", "Bearer"] {
        let response = call_with(
            &server,
            &[("Authorization", header)],
            "GET",
            "/consumer?name=private.key",
            None,
        )
        .await;
        assert_eq!(response.status, 200, "{header}: {}", response.text());
        assert_eq!(
            response.json()["registers"]["private.key"]["value"],
            "s3cret"
        );
    }
    server.shutdown_and_wait().await.unwrap();
}

#[tokio::test]
async fn a_write_without_the_right_is_refused_before_its_body() {
    let registry = Registry::new();
    let server = serve(&registry, None).await;
    // `Expect: 100-continue` and no body: the refusal comes instead of `100 Continue`.
    let mut conn = Conn::open(server.local_addr()).await;
    conn.write(
        b"PUT /provider HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 40\r\n\r\n",
    )
    .await;
    let response = within("refusal", conn.read_response()).await.unwrap();
    assert_eq!(response.status, 401, "{}", response.text());
    let mut conn = Conn::open(server.local_addr()).await;
    conn.write(
        b"PUT /consumer HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer reader-token\r\nExpect: 100-continue\r\nContent-Length: 40\r\n\r\n",
    )
    .await;
    let response = within("refusal", conn.read_response()).await.unwrap();
    assert_eq!(response.status, 403, "{}", response.text());
    server.shutdown_and_wait().await.unwrap();
}

#[tokio::test]
async fn discovery_indexes_say_nothing_of_services_a_caller_may_not_see() {
    let registry = Registry::new();
    seed(&registry);
    // A later change elsewhere in the catalog: web's own index is now below the catalog's.
    let db = r#"{"service":"db","id":"d1","address":"10.0.0.2","port":5432}"#;
    registry
        .set("svc/db/d1", Json::parse(db.as_bytes()).unwrap(), None, None)
        .unwrap();
    let server = serve(&registry, None).await;
    // `commander` reads sensors.* only: the service web (and one that does not exist) look
    // the same to it, index included.
    let index = |response: &Response| response.header("x-reg-index").unwrap().to_owned();
    let web = call(&server, Some("commander"), "GET", "/v1/services/web", None).await;
    let none = call(&server, Some("commander"), "GET", "/v1/services/none", None).await;
    assert_eq!(web.status, 200);
    assert_eq!(web.json()["instances"], json("[]"));
    assert_eq!(index(&web), index(&none));
    assert_eq!(web.json()["index"], none.json()["index"]);
    let consul_web = call(
        &server,
        Some("commander"),
        "GET",
        "/v1/health/service/web",
        None,
    )
    .await;
    let consul_none = call(
        &server,
        Some("commander"),
        "GET",
        "/v1/health/service/none",
        None,
    )
    .await;
    assert_eq!(
        consul_web.header("x-consul-index"),
        consul_none.header("x-consul-index")
    );
    // The reader sees the service's own index.
    let reader = call(&server, Some("reader"), "GET", "/v1/services/web", None).await;
    assert_eq!(reader.json()["instances"][0]["id"], "w1");
    assert_ne!(
        index(&reader),
        index(&none),
        "the test must tell the two apart"
    );
    server.shutdown_and_wait().await.unwrap();
}
