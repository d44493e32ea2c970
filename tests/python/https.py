#!/usr/bin/env python3
"""Python clients against reg over HTTPS with --auth.

Usage: https.py PORT CA_FILE TOKEN

1. A reg client as the original Python client talks to reg — `requests`, plain JSON bodies,
   no knowledge of TLS settings or tokens — trusting the test CA only through the standard
   REQUESTS_CA_BUNDLE variable (set by the caller): provide, read, long-poll with index,
   request a change and take it, as the anonymous caller the --auth file lets do that.
2. Debian's python-consul (0.7.1) with scheme="https", verify=CA and an ACL token (it sends
   the token as ?token=): register with a TTL check, pass it, read it back healthy.
3. The same library with a wrong token: refused, and nothing is registered.

Every step prints one line; a failed assertion exits non-zero.
"""

import json
import sys

import requests

if not __debug__:
    sys.exit("https.py checks with assert: run it without -O")

PORT = int(sys.argv[1])
CA = sys.argv[2]
TOKEN = sys.argv[3]
BASE = "https://localhost:%d" % PORT


def step(text):
    print("ok:", text, flush=True)


# 1. The reg client's calls.
session = requests.Session()
r = session.put(BASE + "/provider", data=json.dumps(
    {"registers": {"lamp": {"value": False, "ttl": "30s"}}}))
assert r.status_code == 204, (r.status_code, r.text)
step("provide over https")
r = session.get(BASE + "/consumer", params={"name": "lamp"})
assert r.status_code == 200, r.text
assert r.json() == {"registers": {"lamp": {"value": False}}}, r.text
index = int(r.headers["X-Reg-Index"])
step("read over https")
r = session.put(BASE + "/consumer", data=json.dumps({"registers": {"lamp": {"value": True}}}))
assert r.status_code == 202, (r.status_code, r.text)
r = session.get(BASE + "/provider", params={"name": "lamp", "wait": "5s"})
assert r.json() == {"registers": {"lamp": {"value": True}}}, r.text
step("change request and take over https")
session.put(BASE + "/provider", data=json.dumps({"registers": {"lamp": {"value": True}}}))
r = session.get(BASE + "/consumer", params={"name": "lamp", "wait": "5s", "index": index})
assert r.json() == {"registers": {"lamp": {"value": True}}}, r.text
step("long poll with index over https")
r = session.get(BASE + "/consumer", params={"name": "secret.key"})
assert r.status_code == 200 and r.json() == {"registers": {}}, r.text
step("a register the anonymous caller may not read is not there")
r = session.put(BASE + "/provider", data=json.dumps({"registers": {"secret.key": {"value": 1}}}))
assert r.status_code == 401, (r.status_code, r.text)
assert "error" in r.json()
step("a write without the right is 401 with a JSON error")

# 2. python-consul over https with a token.
import consul  # noqa: E402
import consul.base  # noqa: E402

c = consul.Consul(host="localhost", port=PORT, scheme="https", verify=CA, token=TOKEN)
# python-consul 0.7.1 leaves the token off some calls (check.ttl_pass among them), with a
# real Consul too; its users set Consul's header on the library's session for those.
c.http.session.headers["X-Consul-Token"] = TOKEN
assert c.agent.service.register(
    "web", service_id="web-1", address="10.0.0.1", port=80, check=consul.Check.ttl("30s"))
assert c.agent.check.ttl_pass("service:web-1")
index, nodes = c.health.service("web", passing=True)
assert [n["Service"]["ID"] for n in nodes] == ["web-1"], nodes
step("python-consul over https with an ACL token: register, pass, health")

# The token as python-consul sends it by itself (?token=), no header: accepted.
by_param = consul.Consul(host="localhost", port=PORT, scheme="https", verify=CA, token=TOKEN)
assert by_param.agent.service.register("api", service_id="api-1", port=81)
step("the token as a ?token= parameter")

# 3. A wrong token.
wrong = consul.Consul(host="localhost", port=PORT, scheme="https", verify=CA, token="wrong")
try:
    wrong.agent.service.register("db", service_id="db-1", port=5432)
    raise AssertionError("a wrong token registered a service")
except consul.base.ConsulException as error:
    step("a wrong token is refused: %s" % str(error)[:60])
index, nodes = c.health.service("db")
assert nodes == [], nodes
step("nothing was registered")
