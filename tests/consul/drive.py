#!/usr/bin/env python3
"""Drives reg's Consul-compatible subset with a real Consul client library.

Usage: drive.py PORT

Uses python-consul (Debian's python3-consul, 0.7.1) exactly as an application would:
register a service with a TTL check, heartbeat it, list it through the catalog, health
and agent endpoints, block on changes, and deregister it. Every step prints one line;
a failed assertion exits non-zero. Run by tests/consul_python.rs against a server it
starts on 127.0.0.1:PORT.
"""

import sys
import threading
import time

import consul
import consul.base

if not __debug__:
    sys.exit("drive.py checks with assert: run it without -O")

HOST = "127.0.0.1"
PORT = int(sys.argv[1])


def step(text):
    print("ok:", text, flush=True)


def client():
    return consul.Consul(host=HOST, port=PORT)


c = client()


def raw(method, path):
    """The server's raw answer to METHOD PATH, through the library's own HTTP client:
    for exact status codes the library's callbacks do not expose."""
    send = c.http.get if method == "GET" else c.http.put
    return send(lambda response: response, path)


def answer(method, path):
    response = raw(method, path)
    return "%s %s answered %d %s" % (method, path, response.code, response.body[:200])


def health(name, **kw):
    index, entries = c.health.service(name, **kw)
    return int(index), entries


def ids(entries):
    return sorted(entry["Service"]["ID"] for entry in entries)


def service_check(entry):
    """The service's own check in a health entry (Consul also lists the node's checks)."""
    sid = entry["Service"]["ID"]
    found = [k for k in entry["Checks"] if k.get("ServiceID") == sid]
    assert len(found) == 1, "one check for %s, got %r" % (sid, entry["Checks"])
    return found[0]


def status_of(name, sid):
    _, entries = health(name)
    found = [e for e in entries if e["Service"]["ID"] == sid]
    assert len(found) == 1, "%s listed once by health.service(%r), got %r" % (sid, name, entries)
    return service_check(found[0])["Status"]


def heartbeat(verb, check_id):
    """agent.check.ttl_<verb>: python-consul 0.7.1 sends GET /v1/agent/check/<verb>/<id>."""
    call = {
        "pass": c.agent.check.ttl_pass,
        "warn": c.agent.check.ttl_warn,
        "fail": c.agent.check.ttl_fail,
    }[verb]
    path = "/v1/agent/check/%s/%s" % (verb, check_id)
    try:
        ok = call(check_id)
    except consul.ConsulException as e:
        raise AssertionError(
            "agent.check.ttl_%s(%r) raised %r (python-consul 0.7.1 sends GET %s)"
            % (verb, check_id, e, path)
        )
    assert ok is True, "agent.check.ttl_%s(%r) returned %r: %s" % (verb, check_id, ok, answer("GET", path))


def deregister(sid):
    """agent.service.deregister: python-consul 0.7.1 sends GET /v1/agent/service/deregister/<id>."""
    path = "/v1/agent/service/deregister/%s" % sid
    try:
        return c.agent.service.deregister(sid)
    except consul.ConsulException as e:
        raise AssertionError(
            "agent.service.deregister(%r) raised %r (python-consul 0.7.1 sends GET %s)" % (sid, e, path)
        )


# --- register, critical until the first heartbeat ---------------------------------------

ok = c.agent.service.register(
    "web",
    service_id="web-1",
    address="10.0.0.5",
    port=8080,
    tags=["v1", "x"],
    check=consul.Check.ttl("30s"),
)
assert ok is True, "agent.service.register(web-1) returned %r" % ok
step("registered web-1 with a TTL check (python-consul 0.7.1 cannot send Meta)")

index, entries = health("web", passing=True)
assert entries == [], "a TTL check starts critical: health.service(passing) should be empty, got %r" % entries
index, entries = health("web")
assert ids(entries) == ["web-1"], "health.service(web) lists web-1, got %r" % entries
check = service_check(entries[0])
assert check["Status"] == "critical", "a new TTL check is critical, got %r" % check
assert check["CheckID"] == "service:web-1", "the service's check id, got %r" % check
assert index > 0, "X-Consul-Index is positive, got %r" % index
step("web-1 starts critical: not passing, listed unfiltered with Status critical")

# --- the first heartbeat makes it passing --------------------------------------------------

heartbeat("pass", "service:web-1")
_, entries = health("web", passing=True)
assert ids(entries) == ["web-1"], "after ttl_pass health.service(passing) lists web-1, got %r" % entries
entry = entries[0]
service = entry["Service"]
assert service["ID"] == "web-1", service
assert service["Service"] == "web", service
assert service["Address"] == "10.0.0.5", service
assert service["Port"] == 8080, service
assert sorted(service["Tags"]) == ["v1", "x"], service
assert service["Meta"] in ({}, None), "no Meta was sent, got %r" % service["Meta"]
assert isinstance(entry["Node"], dict) and entry["Node"].get("Node"), "a Node, got %r" % entry["Node"]
assert entry["Node"].get("Datacenter") == "dc1", entry["Node"]
assert service_check(entry)["Status"] == "passing", entry["Checks"]
step("ttl_pass: health.service(passing) lists web-1 with its address, port, tags and node")

# --- catalog and agent listings ------------------------------------------------------------

index, services = c.catalog.services()
assert int(index) > 0, "catalog.services() index is positive, got %r" % index
assert set(services) == {"web"}, "catalog.services() has only web, got %r" % services
assert sorted(services["web"]) == ["v1", "x"], "web's tags, got %r" % services
step("catalog.services() = (%s, %r)" % (index, services))

index, nodes = c.catalog.service("web")
assert int(index) > 0, index
assert len(nodes) == 1, "catalog.service(web) lists one instance, got %r" % nodes
node = nodes[0]
assert node["ServiceID"] == "web-1", node
assert node["ServiceName"] == "web", node
assert node["ServiceAddress"] == "10.0.0.5", node
assert node["ServicePort"] == 8080, node
assert sorted(node["ServiceTags"]) == ["v1", "x"], node
assert node.get("Node"), "catalog entries name a node, got %r" % node
step("catalog.service(web) lists web-1 at 10.0.0.5:8080")

_, nodes = c.catalog.service("web", tag="x")
assert [n["ServiceID"] for n in nodes] == ["web-1"], "tag=x keeps web-1, got %r" % nodes
_, nodes = c.catalog.service("web", tag="nope")
assert nodes == [], "tag=nope lists nothing, got %r" % nodes
_, nodes = c.catalog.service("nothing")
assert nodes == [], "an unknown service has no instances, got %r" % nodes
step("catalog.service(web, tag=...) filters by tag")

agent_services = c.agent.services()
assert set(agent_services) == {"web-1"}, "agent.services() has web-1, got %r" % agent_services
mine = agent_services["web-1"]
assert mine["ID"] == "web-1" and mine["Service"] == "web", mine
assert mine["Address"] == "10.0.0.5" and mine["Port"] == 8080, mine
assert sorted(mine["Tags"]) == ["v1", "x"], mine
checks = c.agent.checks()
assert checks["service:web-1"]["Status"] == "passing", "agent.checks(), got %r" % checks
step("agent.services() and agent.checks() have web-1")

# --- blocking queries ----------------------------------------------------------------------

idx, entries = health("web")
assert ids(entries) == ["web-1"], entries
blocked = {}


def block():
    try:
        started = time.monotonic()
        index, entries = client().health.service("web", index=str(idx), wait="30s")
        blocked["answer"] = (int(index), entries)
        blocked["elapsed"] = time.monotonic() - started
    except BaseException as e:  # reported by the main thread
        blocked["error"] = e


waiter = threading.Thread(target=block, daemon=True)
waiter.start()
time.sleep(0.3)
assert waiter.is_alive(), "health.service(index=%d, wait=30s) answered at once: %r" % (idx, blocked)
ok = c.agent.service.register(
    "web", service_id="web-2", address="10.0.0.6", port=8081, tags=["v2"], check=consul.Check.ttl("30s")
)
assert ok is True, "agent.service.register(web-2) returned %r" % ok
waiter.join(10)
assert not waiter.is_alive(), "the blocking query did not wake within 10 s of registering web-2"
assert "error" not in blocked, "the blocking query raised %r" % blocked.get("error")
woke_index, woke_entries = blocked["answer"]
assert woke_index > idx, "woke with index %d, not above %d" % (woke_index, idx)
assert ids(woke_entries) == ["web-1", "web-2"], "woke seeing both instances, got %r" % woke_entries
assert blocked["elapsed"] < 10, blocked["elapsed"]
step(
    "health.service(index=%d, wait=30s) woke after %.2f s on registering web-2, index %d"
    % (idx, blocked["elapsed"], woke_index)
)

idx, _ = health("web")
started = time.monotonic()
same, entries = health("web", index=str(idx), wait="1s")
elapsed = time.monotonic() - started
assert same == idx, "no change: the index stays %d, got %d" % (idx, same)
assert 0.9 <= elapsed < 10, "wait=1s without a change answers after about 1 s, took %.2f s" % elapsed
assert ids(entries) == ["web-1", "web-2"], entries
step("health.service(index=%d, wait=1s) without a change answered after %.2f s, same index" % (idx, elapsed))

cidx, _ = c.catalog.services()
started = time.monotonic()
csame, services = c.catalog.services(index=cidx, wait="1s")
elapsed = time.monotonic() - started
assert int(csame) == int(cidx), "no change: catalog index stays %s, got %s" % (cidx, csame)
assert 0.9 <= elapsed < 10, "catalog.services(wait=1s) took %.2f s" % elapsed
assert sorted(services["web"]) == ["v1", "v2", "x"], services
step("catalog.services(index=%s, wait=1s) without a change answered after %.2f s" % (cidx, elapsed))

_, nodes = c.catalog.service("web", tag="x")
assert [n["ServiceID"] for n in nodes] == ["web-1"], "tag=x keeps only web-1, got %r" % nodes
_, nodes = c.catalog.service("web", tag="v2")
assert [n["ServiceID"] for n in nodes] == ["web-2"], "tag=v2 keeps only web-2, got %r" % nodes
_, entries = health("web", tag="v2")
assert ids(entries) == ["web-2"], "health.service(tag=v2), got %r" % entries
step("with two instances, tag filters keep the right one")

# --- warning, critical, passing again ------------------------------------------------------

heartbeat("pass", "service:web-2")
heartbeat("warn", "service:web-1")
assert status_of("web", "web-1") == "warning"
_, entries = health("web", passing=True)
assert ids(entries) == ["web-2"], "a warning instance is not passing, got %r" % entries
step("ttl_warn: web-1 is warning and dropped by passing")

heartbeat("fail", "service:web-1")
assert status_of("web", "web-1") == "critical"
_, entries = health("web", passing=True)
assert ids(entries) == ["web-2"], "a critical instance is not passing, got %r" % entries
step("ttl_fail: web-1 is critical and dropped by passing")

heartbeat("pass", "service:web-1")
assert status_of("web", "web-1") == "passing"
_, entries = health("web", passing=True)
assert ids(entries) == ["web-1", "web-2"], entries
step("ttl_pass again: web-1 is passing")

ok = c.agent.check.ttl_pass("service:no-such")
assert ok is False, "ttl_pass on an unknown check is refused, got %r" % ok
response = raw("GET", "/v1/agent/check/pass/service:no-such")
assert response.code == 404, answer("GET", "/v1/agent/check/pass/service:no-such")
step("ttl_pass on an unknown check: 404")

# --- deregister ----------------------------------------------------------------------------

ok = deregister("web-2")
assert ok is True, "agent.service.deregister(web-2) returned %r: %s" % (
    ok,
    answer("GET", "/v1/agent/service/deregister/web-2"),
)
_, entries = health("web")
assert ids(entries) == ["web-1"], "web-2 is gone from health.service, got %r" % entries
assert set(c.agent.services()) == {"web-1"}, c.agent.services()
_, nodes = c.catalog.service("web")
assert [n["ServiceID"] for n in nodes] == ["web-1"], nodes
step("agent.service.deregister(web-2) removed it")

# python-consul's CB.bool returns False on 404 instead of raising: check the code itself.
ok = deregister("no-such")
assert ok is False, "deregistering an unknown id is refused, got %r" % ok
response = raw("GET", "/v1/agent/service/deregister/no-such")
assert response.code == 404, answer("GET", "/v1/agent/service/deregister/no-such")
step("agent.service.deregister(no-such): 404")

# --- status and agent ----------------------------------------------------------------------

leader = c.status.leader()
assert isinstance(leader, str) and leader, "status.leader() is a non-empty string, got %r" % leader
peers = c.status.peers()
assert isinstance(peers, list) and leader in peers, "status.peers() has the leader, got %r" % peers
me = c.agent.self()
assert me["Config"]["Datacenter"] == "dc1", "agent.self() Config, got %r" % me.get("Config")
assert c.catalog.datacenters() == ["dc1"], c.catalog.datacenters()
step("status.leader() = %r, agent.self() in dc1" % leader)

# --- what reg does not implement is refused, never answered wrongly ------------------------

for what, call in [
    ("kv.get('x')", lambda: c.kv.get("x")),
    ("kv.put('x', 'y')", lambda: c.kv.put("x", "y")),
    ("session.list()", lambda: c.session.list()),
]:
    try:
        got = call()
    except consul.ConsulException as e:
        assert str(e).startswith("501 "), "%s: 501 Not Implemented, got %r" % (what, e)
    else:
        raise AssertionError("%s should raise (501), returned %r" % (what, got))
step("kv and session endpoints raise ConsulException (501)")

for what, check in [
    ("HTTP", consul.Check.http("http://127.0.0.1:9/health", "10s")),
    ("TCP", consul.Check.tcp("127.0.0.1", 9, "10s")),
]:
    try:
        got = c.agent.service.register("api", service_id="api-1", port=9000, check=check)
    except consul.base.BadRequest as e:
        assert str(e).startswith("400 "), e
    else:
        raise AssertionError("registering with a %s check should raise (400), returned %r" % (what, got))
_, services = c.catalog.services()
assert set(services) == {"web"}, "nothing was registered, got %r" % services
assert set(c.agent.services()) == {"web-1"}, c.agent.services()
_, entries = health("api")
assert entries == [], entries
step("registering with an HTTP or TCP check raises BadRequest (400) and registers nothing")

ok = deregister("web-1")
assert ok is True, ok
_, services = c.catalog.services()
assert services == {}, services
step("deregistered web-1: the catalog is empty")
print("all steps passed", flush=True)
