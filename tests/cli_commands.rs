//! The `reg` binary end to end against our server on 127.0.0.1:0: provide, get, set, list,
//! watch, stdin handling, signals and exit statuses.
//!
//! Real processes and sockets with bounded waits: a test waits for an outcome (a line on
//! stdout, a value in the server's registry, a parked poll) with a deadline, never for a
//! fixed time.
#![allow(clippy::unwrap_used)]

mod cli_support;

use std::time::Duration;

use cli_support::{eventually, json, reg_at, run, run_with_input, Proxy, Running, TestServer};
use reg::Selector;

/// Starts `reg provide` and waits until the register exists.
fn provide(server: &TestServer, args: &[&str]) -> Running {
    let mut all = vec!["provide"];
    all.extend_from_slice(args);
    let mut provider = Running::start(server.reg(&all));
    let name = args[0];
    eventually(&format!("provider of {name} is up"), || {
        assert!(
            provider.is_running(),
            "provide exited: {}",
            provider.stderr_text()
        );
        server.value(name).is_some()
    });
    provider
}

#[test]
fn provide_get_set_the_provider_applies_it_get_sees_it() {
    let server = TestServer::start();
    let mut provider = provide(
        &server,
        &["lamp", "false", r#"{"room":"kitchen"}"#, "--ttl", "5s"],
    );

    let get = run(server.reg(&["get", "lamp"]));
    assert_eq!(
        (get.code(), get.stdout.as_str()),
        (Some(0), "false\n"),
        "{}",
        get.stderr
    );
    let get = run(server.reg(&["get", "lamp", "--metadata"]));
    assert_eq!(
        get.stdout,
        "{\"value\":false,\"metadata\":{\"room\":\"kitchen\"}}\n"
    );

    let set = run(server.reg(&["set", "lamp", "true", "--timeout", "5s"]));
    assert_eq!(set.code(), Some(0), "{}", set.stderr);
    assert_eq!(set.stdout, "");
    assert_eq!(provider.next_line(), r#"{"name":"lamp","value":true}"#);

    let get = run(server.reg(&["get", "lamp"]));
    assert_eq!(get.stdout, "true\n");
    assert_eq!(server.value("lamp").as_deref(), Some("true"));
}

#[test]
fn get_several_names_is_an_object_and_waits_for_a_missing_one() {
    let server = TestServer::start();
    server.set("a", "1");
    let mut get = Running::start(server.reg(&["get", "b", "a", "--timeout", "10s"]));
    // Create `b` only once `get` is parked waiting for it.
    eventually("get waits for b", || {
        server.registry.stats().parked_waits > 0
    });
    server.set("b", r#"{"x":[1.50,12345678901234567890]}"#);
    assert_eq!(
        get.next_line(),
        r#"{"b":{"x":[1.50,12345678901234567890]},"a":1}"#
    );
    assert!(get.wait().success());
}

#[test]
fn get_of_a_missing_register_exits_3_after_the_timeout() {
    let server = TestServer::start();
    server.set("here", "1");
    let get = run(server.reg(&["get", "here", "nope", "--timeout", "200ms"]));
    assert_eq!(get.code(), Some(3), "{}", get.stderr);
    assert_eq!(get.stdout, "");
    assert!(
        get.stderr
            .contains(r#"register "nope" not found within 200ms"#),
        "{}",
        get.stderr
    );
}

#[test]
fn get_stay_prints_every_update() {
    let server = TestServer::start();
    server.set("g", "1");
    let mut get = Running::start(server.reg(&["get", "g", "--stay"]));
    assert_eq!(get.next_line(), "1");
    server.set("g", "2");
    assert_eq!(get.next_line(), "2");
    server.set("g", r#""three""#);
    assert_eq!(get.next_line(), r#""three""#);
}

#[test]
fn set_without_a_provider_exits_4_with_a_clear_message() {
    let server = TestServer::start();
    let set = run(server.reg(&["set", "nobody", "1", "--timeout", "200ms"]));
    assert_eq!(set.code(), Some(4), "{}", set.stderr);
    assert!(
        set.stderr
            .contains(r#"the provider of "nobody" did not confirm 1 within 200ms"#),
        "{}",
        set.stderr
    );
    assert!(set.stderr.contains("does not exist"), "{}", set.stderr);
    // The request itself was sent and waits for a provider.
    let pending = server
        .registry
        .try_take_requests(&Selector::names(["nobody"]));
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].value, json("1"));
}

#[test]
fn a_read_only_provider_prints_requests_but_does_not_apply_them() {
    let server = TestServer::start();
    let mut provider = provide(&server, &["ro", "1", "--read-only"]);
    let set = run(server.reg(&["set", "ro", "2", "--timeout", "300ms"]));
    assert_eq!(set.code(), Some(4), "{}", set.stderr);
    assert!(
        set.stderr.contains("its value is still 1"),
        "{}",
        set.stderr
    );
    assert_eq!(provider.next_line(), r#"{"name":"ro","value":2}"#);
    assert_eq!(server.value("ro").as_deref(), Some("1"));
}

#[test]
fn set_reads_its_value_from_stdin_and_stays() {
    let server = TestServer::start();
    let _provider = provide(&server, &["mode", r#""off""#]);
    let set = run_with_input(server.reg(&["set", "mode"]), "\"on\"\n");
    assert_eq!(set.code(), Some(0), "{}", set.stderr);
    assert_eq!(server.value("mode").as_deref(), Some(r#""on""#));

    let bad = run_with_input(server.reg(&["set", "mode"]), "on\n");
    assert_eq!(bad.code(), Some(1));
    assert!(
        bad.stderr.contains("value on stdin is not valid JSON"),
        "{}",
        bad.stderr
    );

    let mut stay = Running::start(server.reg(&["set", "mode", r#""auto""#, "--stay"]));
    assert_eq!(stay.next_line(), r#""auto""#);
    server.set("mode", r#""manual""#);
    assert_eq!(stay.next_line(), r#""manual""#);
}

#[test]
fn provide_takes_values_from_stdin_reports_bad_lines_and_sigterm_removes_it() {
    let server = TestServer::start();
    let mut provider = provide(&server, &["s", "0", "--ttl", "5s"]);
    provider.write("1\nnot json\n\n{\"x\": 2}\n");
    eventually("the last stdin value is stored", || {
        server.value("s").as_deref() == Some(r#"{"x":2}"#)
    });
    let stderr = provider.wait_stderr("stdin line 2: not valid JSON");
    assert!(stderr.contains("skipped"), "{stderr}");
    assert!(
        !stderr.contains("line 3"),
        "a blank line is no error: {stderr}"
    );

    // The end of stdin does not stop the provider.
    drop(provider.stdin.take());
    let set = run(server.reg(&["set", "s", "7", "--timeout", "5s"]));
    assert_eq!(set.code(), Some(0), "{}", set.stderr);
    assert!(provider.is_running());

    provider.signal("TERM");
    let status = provider.wait();
    assert_eq!(status.code(), Some(0), "{}", provider.stderr_text());
    // Removed before the process exited, not left to expire.
    assert_eq!(server.value("s"), None);
}

#[test]
fn provide_sigint_removes_the_register_and_exits_0() {
    let server = TestServer::start();
    let mut provider = provide(&server, &["i", "true", "--ttl", "1m"]);
    provider.signal("INT");
    assert_eq!(
        provider.wait().code(),
        Some(0),
        "{}",
        provider.stderr_text()
    );
    assert_eq!(server.value("i"), None);
}

#[test]
fn provide_refuses_bad_arguments() {
    let server = TestServer::start();
    let out = run(server.reg(&["provide", "x", "on"]));
    assert_eq!(out.code(), Some(1));
    assert!(
        out.stderr.contains(r#"value "on" is not valid JSON"#),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(r#"'"on"'"#),
        "a hint to quote: {}",
        out.stderr
    );
    let out = run(server.reg(&["provide", "x", "1", "[1]"]));
    assert_eq!(out.code(), Some(1));
    assert!(
        out.stderr.contains("metadata must be a JSON object"),
        "{}",
        out.stderr
    );
    let out = run(server.reg(&["provide", "x", "1", "--ttl", "5x"]));
    assert_eq!(out.code(), Some(2), "{}", out.stderr);
    assert_eq!(server.value("x"), None);
}

#[test]
fn list_is_sorted_by_name_with_optional_metadata() {
    let server = TestServer::start();
    let empty = run(server.reg(&["list"]));
    assert_eq!(empty.code(), Some(0), "{}", empty.stderr);
    assert_eq!(empty.stdout, "");
    assert_eq!(run(server.reg(&["list", "--json"])).stdout, "{}\n");
    server.set("b", "2");
    server
        .registry
        .set("a", json("1"), Some(json(r#"{"unit":"m"}"#)), None)
        .unwrap();
    server.set("a.z", "3");
    server.set("line\nbreak", "4");
    let list = run(server.reg(&["list"]));
    assert_eq!(list.code(), Some(0), "{}", list.stderr);
    assert_eq!(list.stdout, "a=1\na.z=3\nb=2\n\"line\\nbreak\"=4\n");
    server.registry.remove("line\nbreak");
    let list = run(server.reg(&["list", "--metadata"]));
    assert_eq!(
        list.stdout,
        "{\"name\":\"a\",\"value\":1,\"metadata\":{\"unit\":\"m\"}}\n\
         {\"name\":\"a.z\",\"value\":3,\"metadata\":{}}\n\
         {\"name\":\"b\",\"value\":2,\"metadata\":{}}\n"
    );
    let list = run(server.reg(&["list", "--json"]));
    assert_eq!(list.stdout, "{\"a\":1,\"a.z\":3,\"b\":2}\n");
    let list = run(server.reg(&["list", "--json", "--metadata"]));
    assert_eq!(
        list.stdout,
        "{\"a\":{\"value\":1,\"metadata\":{\"unit\":\"m\"}},\"a.z\":{\"value\":3,\"metadata\":{}},\"b\":{\"value\":2,\"metadata\":{}}}\n"
    );
}

#[test]
fn list_stay_prints_a_line_per_change() {
    let server = TestServer::start();
    server.set("b", "2");
    server.set("a", "1");
    let mut list = Running::start(server.reg(&["list", "--stay"]));
    let first = list.next_line();
    let second = list.next_line();
    assert!(
        first.starts_with(r#"{"event":"set","name":"a","value":1,"revision":"#),
        "{first}"
    );
    assert!(
        second.starts_with(r#"{"event":"set","name":"b","value":2,"#),
        "{second}"
    );
    server.set("c", "3");
    let line = list.next_line();
    assert!(
        line.starts_with(r#"{"event":"set","name":"c","value":3,"#),
        "{line}"
    );
    // Removals say how, as `reg watch` does.
    server.registry.remove("a");
    let line = list.next_line();
    assert!(
        line.starts_with(r#"{"event":"delete","name":"a","revision":"#),
        "{line}"
    );
    server
        .registry
        .set("b", json("2"), None, Some(Duration::from_millis(50)))
        .unwrap();
    let line = list.line_where("expiry of b", |l| l.contains(r#""expire""#));
    assert!(
        line.starts_with(r#"{"event":"expire","name":"b","revision":"#),
        "{line}"
    );
}

#[test]
fn get_stay_says_how_a_register_went_and_reconnects_in_one_line() {
    let server = TestServer::start();
    // Through a proxy, to cut the connection while the server keeps its state.
    let proxy = Proxy::start(server.addr);
    server.set("x", "1");
    server.set("y", "2");
    let mut get = Running::start(reg_at(&proxy.url, &["get", "x", "y", "--stay"]));
    assert_eq!(get.next_line(), r#"{"x":1,"y":2}"#);
    server.registry.remove("x");
    assert_eq!(get.next_line(), r#"{"y":2}"#);
    get.wait_stderr(r#"reg: register "x" was deleted"#);
    server
        .registry
        .set("y", json("2"), None, Some(Duration::from_millis(50)))
        .unwrap();
    assert_eq!(get.next_line(), "{}");
    get.wait_stderr(r#"reg: register "y" expired"#);

    // A change made while the connection is down arrives after the reconnect, which is one
    // plain line on stderr, not a log record.
    proxy.cut();
    server.set("x", "3");
    proxy.resume();
    assert_eq!(get.next_line(), r#"{"x":3}"#);
    let stderr = get.wait_stderr("reconnecting in");
    assert!(
        stderr.lines().all(|line| line.starts_with("reg: ")),
        "{stderr}"
    );
}

#[test]
fn watch_prints_events_and_resumes_after_a_reconnect() {
    let server = TestServer::start();
    // Through a proxy, to cut the connection while the server keeps its state.
    let proxy = Proxy::start(server.addr);
    let mut watch = Running::start(reg_at(&proxy.url, &["watch", "w.a", "w.b"]));
    // The stream only carries changes made after it connected: change `w.a` until one shows.
    let mut n = 0;
    let first = loop {
        n += 1;
        server.set("w.a", &n.to_string());
        std::thread::sleep(Duration::from_millis(20));
        if let Some(line) = watch.try_line() {
            break line;
        }
        assert!(
            n < 500,
            "watch printed nothing; stderr: {}",
            watch.stderr_text()
        );
    };
    assert!(
        first.starts_with(r#"{"event":"set","name":"w.a","value":"#),
        "{first}"
    );
    server.set("unwatched", "1");
    server
        .registry
        .set("w.b", json("true"), Some(json(r#"{"k":"v"}"#)), None)
        .unwrap();
    let line = watch.line_where("for w.b", |l| l.contains(r#""w.b""#));
    let revision = server.registry.revision();
    assert_eq!(
        line,
        format!(
            r#"{{"event":"set","name":"w.b","value":true,"metadata":{{"k":"v"}},"revision":{revision}}}"#
        )
    );
    server.registry.remove("w.b");
    let line = watch.line_where("delete of w.b", |l| l.contains("delete"));
    assert!(
        line.starts_with(r#"{"event":"delete","name":"w.b","revision":"#),
        "{line}"
    );

    // A change made while the connection is down is replayed from the last revision seen.
    proxy.cut();
    server.set("w.b", r#""while away""#);
    proxy.resume();
    let line = watch.line_where("replayed w.b", |l| l.contains("while away"));
    assert!(
        line.starts_with(r#"{"event":"set","name":"w.b","value":"while away""#),
        "{line}"
    );
    watch.wait_stderr("reconnecting");

    // Expiry is its own event.
    server
        .registry
        .set("w.a", json("0"), None, Some(Duration::from_millis(50)))
        .unwrap();
    let line = watch.line_where("expiry of w.a", |l| l.contains("expire"));
    assert!(
        line.starts_with(r#"{"event":"expire","name":"w.a","revision":"#),
        "{line}"
    );
}

#[test]
fn a_bad_registry_url_is_a_clear_error() {
    for (url, reason) in [
        ("foo", r#"invalid registry url "foo": missing scheme"#),
        ("ftp://example.com", "unsupported scheme"),
        ("http://h:8080/?q=1", "query string"),
    ] {
        let out = run(reg_at(url, &["get", "x"]));
        assert_eq!(out.code(), Some(1), "{url}: {}", out.stderr);
        assert!(out.stderr.contains(reason), "{url}: {}", out.stderr);
        assert!(
            out.stderr.contains("--registry or REGISTRY"),
            "{}",
            out.stderr
        );
    }
    // --registry wins over REGISTRY, before or after the subcommand.
    let server = TestServer::start();
    server.set("x", "1");
    let out = run(reg_at("foo", &["--registry", &server.url, "get", "x"]));
    assert_eq!(out.stdout, "1\n", "{}", out.stderr);
    let out = run(reg_at("foo", &["list", "--registry", &server.url]));
    assert_eq!(out.stdout, "x=1\n", "{}", out.stderr);
    // Where it means nothing, it is a usage error rather than silently ignored.
    let out = run(reg_at("foo", &["--registry", &server.url, "serve"]));
    assert_eq!(out.code(), Some(2), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("--registry does not apply to `reg serve`"),
        "{}",
        out.stderr
    );
    let out = run(reg_at("foo", &["serve", "--registry", &server.url]));
    assert_eq!(out.code(), Some(2), "{}", out.stderr);
    let help = run(reg_at("foo", &["serve", "--help"]));
    assert!(!help.stdout.contains("--registry"), "{}", help.stdout);
}

#[test]
fn an_unreachable_registry_is_exit_1_naming_it() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let out = run(reg_at(&url, &["get", "x"]));
    assert_eq!(out.code(), Some(1));
    assert!(
        out.stderr.contains(&format!("cannot connect to {url}")),
        "{}",
        out.stderr
    );
    assert_eq!(
        out.stderr.matches("Connection refused").count(),
        1,
        "{}",
        out.stderr
    );
}

#[test]
fn usage_errors_exit_2_and_help_documents_the_exit_statuses() {
    let out = run(reg_at("http://127.0.0.1:1", &["get"]));
    assert_eq!(out.code(), Some(2), "{}", out.stderr);
    let out = run(reg_at(
        "http://127.0.0.1:1",
        &["get", "x", "--timeout", "soon"],
    ));
    assert_eq!(out.code(), Some(2), "{}", out.stderr);
    let help = run(reg_at("http://127.0.0.1:1", &["--help"]));
    assert_eq!(help.code(), Some(0));
    for expected in [
        "Exit status:",
        "3  get: a register did not exist",
        "4  set: the provider did not confirm",
        "REGISTRY",
        "provide",
        "browse",
        "mcp",
        "watch",
    ] {
        assert!(
            help.stdout.contains(expected),
            "{expected}: {}",
            help.stdout
        );
    }
}

#[test]
fn browse_and_mcp_refuse_what_they_cannot_use() {
    // Not a terminal: a clear error rather than a garbled pipe.
    let out = run(reg_at("http://127.0.0.1:1", &["browse"]));
    assert_eq!(out.code(), Some(1));
    assert!(
        out.stderr.contains("browse needs a terminal"),
        "{}",
        out.stderr
    );
    let out = run(reg_at("nope", &["mcp"]));
    assert_eq!(out.code(), Some(1));
    assert!(
        out.stderr.contains("invalid registry url"),
        "{}",
        out.stderr
    );
}

#[test]
fn version_prints_the_crate_version() {
    let out = run(reg_at("http://127.0.0.1:1", &["version"]));
    assert_eq!(out.stdout, format!("reg {}\n", env!("CARGO_PKG_VERSION")));
}

#[test]
fn bench_never_loads_the_registry_in_the_environment() {
    // REGISTRY names a real server: the bench must measure its own in-process server and
    // leave this one untouched, and say which it measured.
    const BRIEF: [&str; 9] = [
        "--duration",
        "200ms",
        "--warmup",
        "0s",
        "--connections",
        "2",
        "--registers",
        "5",
        "--quiet",
    ];
    let server = TestServer::start();
    let out = run(server.reg(&[&["bench", "read"][..], &BRIEF].concat()));
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("measuring a reg server started in this process")
            && out
                .stderr
                .contains("$REGISTRY is set, but reg bench never reads it"),
        "{}",
        out.stderr
    );
    assert!(out.stdout.contains("in-process reg"), "{}", out.stdout);
    assert_eq!(server.registry.len(), 0, "the bench wrote to $REGISTRY");
    assert_eq!(server.registry.stats().revision, 0);

    // Named with --url, it says so first, and cleans up after itself.
    let url = ["bench", "read", "--url", &server.url];
    let out = run(reg_at("http://127.0.0.1:1", &[&url[..], &BRIEF].concat()));
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert!(
        out.stderr
            .contains(&format!("loading the server at {}", server.url))
            && out.stderr.contains("deletes them when done"),
        "{}",
        out.stderr
    );
    assert!(
        server.registry.stats().revision > 0,
        "it did load that server"
    );
    assert_eq!(server.registry.len(), 0, "what it wrote is deleted");
}

#[test]
fn service_register_list_show_watch_and_deregister_on_ctrl_c() {
    let server = TestServer::start();
    let mut watch = Running::start(server.reg(&["service", "watch", "web"]));
    let mut registered = Running::start(server.reg(&[
        "service",
        "register",
        "web",
        "w1",
        "--address",
        "10.0.0.1",
        "--port",
        "80",
        "--tag",
        "blue",
        "--meta",
        "zone=eu",
        "--version",
        "2",
        "--ttl",
        "5s",
    ]));
    eventually("the instance is registered", || {
        assert!(registered.is_running(), "{}", registered.stderr_text());
        server.value("svc/web/w1").is_some()
    });
    let added = watch.next_line();
    assert!(
        added.starts_with(r#"{"event":"added","instance":{"#),
        "{added}"
    );
    assert!(added.contains(r#""address":"10.0.0.1""#), "{added}");

    let list = run(server.reg(&["service", "list"]));
    assert_eq!(
        list.stdout,
        "web  1 instance (1 passing)  tags: blue  versions: 2\n"
    );
    let show = run(server.reg(&[
        "service", "show", "web", "--tag", "blue", "--meta", "zone=eu",
    ]));
    assert!(show.stdout.contains(r#""id":"w1""#), "{}", show.stdout);
    let none = run(server.reg(&["service", "show", "web", "--version", "3"]));
    assert_eq!((none.code(), none.stdout.as_str()), (Some(0), ""));

    // Ctrl-C deregisters it, and the watcher is told.
    registered.signal("INT");
    assert!(registered.wait().success());
    assert!(server.value("svc/web/w1").is_none());
    let removed = watch.next_line();
    assert!(removed.starts_with(r#"{"event":"removed""#), "{removed}");

    // A bad id is a CLI error naming the problem, and nothing is written.
    let bad = run(server.reg(&["service", "register", "web", "a/b"]));
    assert_eq!(bad.code(), Some(1));
    assert!(bad.stderr.contains("instance id"), "{}", bad.stderr);
    let bad = run(server.reg(&["service", "register", "web", "w2", "--status", "fine"]));
    assert_eq!(bad.code(), Some(2), "clap's usage error");
    assert!(
        bad.stderr.contains("passing, warning or critical"),
        "{}",
        bad.stderr
    );
    assert_eq!(run(server.reg(&["service", "list"])).stdout, "");
}
