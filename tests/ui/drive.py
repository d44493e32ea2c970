#!/usr/bin/env python3
"""Drives reg's dashboard (/ui/) in headless Chromium over the DevTools protocol.

Usage: drive.py BASE AUTH_BASE TOKEN SCREENSHOT

BASE is an open `reg serve` (http://127.0.0.1:PORT), AUTH_BASE one with --auth where TOKEN
reads everything and `secret.x` exists. Uses Debian's chromium and python3-websocket
(websocket-client) for the protocol: launch, navigate, evaluate, screenshot. The page is
driven as a person would: it must show a register a provider sets, follow a change made on
the server, send a change request the provider then takes, show services, chart a number,
let an expired register go, and under --auth ask for a token before it shows anything.
Every step prints one line; a failure exits non-zero.
"""

import json
import os
import sys
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cdp import Browser  # noqa: E402

BASE, AUTH_BASE, TOKEN, SHOT = sys.argv[1:5]
STEP_SECONDS = 15


def step(text):
    print("ok:", text, flush=True)


def http(method, url, body=None, headers=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=STEP_SECONDS) as response:
            text = response.read().decode()
            return response.status, (json.loads(text) if text else None)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read().decode() or "null")


def provide(name, value, ttl="60s"):
    status, _ = http("PUT", BASE + "/provider", {"registers": {name: {"value": value, "ttl": ttl}}})
    assert status == 204, status


def row(name):
    return 'document.querySelector(%s)' % json.dumps('.row[data-name="%s"]' % name)


def exists(name):
    return "!!" + row(name)


def cell(name, kind):
    return '(%s?.querySelector(".%s")?.textContent ?? null)' % (row(name), kind)


browser = Browser()
try:
    # --- an open registry ---
    provide("ui.temp", 21)
    provide("ui.lamp", False)
    instance = {"service": "web", "id": "w1", "address": "10.0.0.5", "port": 8080,
                "version": "1.4.2", "tags": ["blue"]}
    provide("svc/web/w1", instance)
    browser.open(BASE + "/ui/")
    browser.wait_for("window.__reg && window.__reg.loaded", "the page loads the registers")
    browser.eval("window.__sameDocument = true")
    browser.wait_for("%s === '21'" % cell("ui.temp", "value"), "ui.temp shows 21")
    step("the page shows a register a provider set")

    provide("ui.temp", 22)
    browser.wait_for("%s === '22'" % cell("ui.temp", "value"), "ui.temp follows to 22")
    # Numbers as reg keeps them: exact text, beyond double precision too.
    body = b'{"registers":{"ui.big":{"value":{"n":12345678901234567890,"f":1.0},"ttl":"60s"}}}'
    request = urllib.request.Request(BASE + "/provider", data=body, method="PUT")
    with urllib.request.urlopen(request, timeout=STEP_SECONDS) as response:
        assert response.status == 204
    browser.wait_for("%s === '{\"f\":1.0,\"n\":12345678901234567890}'" % cell("ui.big", "value"),
                     "ui.big shows its numbers exactly")
    browser.wait_for("document.getElementById('status-text').textContent === 'live'", "live")
    assert browser.eval("window.__sameDocument === true"), "the page was reloaded"
    step("a change on the server reaches the page without a reload")

    browser.eval("%s.click()" % row("ui.lamp"))
    browser.wait_for("document.getElementById('d-name').textContent === 'ui.lamp'", "detail")
    invalid = browser.eval("""(() => { const e = document.getElementById('editor');
        e.value = '{not json'; e.dispatchEvent(new Event('input'));
        return [document.getElementById('send').disabled,
                document.getElementById('editor-check').textContent]; })()""")
    assert invalid[0] is True and invalid[1].startswith("not JSON"), invalid
    step("the value editor refuses text that is not JSON")
    browser.eval("""(() => { const e = document.getElementById('editor');
        e.value = 'true'; e.dispatchEvent(new Event('input'));
        document.getElementById('send').click(); })()""")
    browser.wait_for("window.__reg.sent.includes('ui.lamp')", "the request is sent")
    status, taken = http("GET", BASE + "/provider?name=ui.lamp&wait=10s")
    assert status == 200 and taken == {"registers": {"ui.lamp": {"value": True}}}, taken
    step("a change request sent from the page reaches the provider")

    for value in (23, 21.5, 24):
        provide("ui.temp", value)
    browser.wait_for("%s === '24'" % cell("ui.temp", "value"), "ui.temp 24")
    browser.eval("%s.click()" % row("ui.temp"))
    points = browser.wait_for(
        "!document.getElementById('chart-box').hidden && "
        "document.querySelector('#chart polyline')?.getAttribute('points').split(' ').length",
        "a chart of ui.temp")
    assert points >= 4, points
    step("a numeric register is charted (%d values)" % points)

    browser.eval("document.getElementById('filter').value = 'lamp';"
                 "document.getElementById('filter').dispatchEvent(new Event('input'))")
    browser.wait_for("%s && !%s" % (exists("ui.lamp"), exists("ui.temp")), "the filter")
    browser.eval("document.getElementById('filter').value = '';"
                 "document.getElementById('filter').dispatchEvent(new Event('input'))")
    browser.wait_for(exists("ui.temp"), "the filter cleared")
    step("the filter box narrows the list")
    browser.wait_for("!!document.querySelector('#tree li[data-prefix=\"svc/\"]')", "the prefix tree")
    browser.eval("document.querySelector('#tree li[data-prefix=\"svc/\"]').click()")
    browser.wait_for("%s && !%s" % (exists("svc/web/w1"), exists("ui.temp")), "the prefix svc/")
    browser.eval("document.querySelector('#tree li[data-prefix=\"svc/\"]').click()")
    browser.wait_for(exists("ui.temp"), "the prefix cleared")
    step("the prefix tree narrows the list")

    # Polled every 2 s: wait for the count of the four registers set above.
    browser.wait_for("document.getElementById('stat-registers').textContent === '4'",
                     "the stats count 4 registers")
    step("the stats show the registry's count")

    provide("ui.doomed", 1)
    browser.wait_for(exists("ui.doomed"), "ui.doomed appears")
    status, _ = http("DELETE", BASE + "/provider?name=ui.doomed")
    assert status == 204, status
    browser.wait_for("%s?.classList.contains('gone') && %s === 'delete'" % (row("ui.doomed"), cell("ui.doomed", "ttl")),
                     "ui.doomed struck through as deleted")
    browser.wait_for("!" + exists("ui.doomed"), "ui.doomed leaves the list")
    step("a deleted register is struck through, then leaves")

    provide("ui.gone", "soon", ttl="1s")
    browser.wait_for(exists("ui.gone"), "ui.gone appears")
    browser.wait_for("window.__reg.removed.some(r => r.name === 'ui.gone' && r.kind === 'expire')",
                     "ui.gone expires", seconds=20)
    browser.wait_for("!" + exists("ui.gone"), "ui.gone leaves the list")
    step("an expired register is marked, then leaves")

    browser.eval("document.getElementById('tab-services').click()")
    status_text = browser.wait_for(
        "document.querySelector('.service[data-service=\"web\"] tr[data-instance=\"w1\"] .status')?.textContent",
        "the services view lists web/w1")
    assert status_text == "passing", status_text
    step("the services view shows instances and their health")

    browser.eval("document.getElementById('tab-registers').click()")
    browser.eval("%s.click()" % row("ui.temp"))
    browser.wait_for("document.getElementById('d-name').textContent === 'ui.temp'", "detail")
    browser.screenshot(SHOT)
    step("screenshot " + SHOT)

    # --- a registry with --auth ---
    status, body = http("GET", AUTH_BASE + "/consumer")
    assert status == 401, (status, body)
    browser.open(AUTH_BASE + "/ui/")
    browser.wait_for("!document.getElementById('login').hidden", "the page asks for a token")
    assert browser.eval("document.querySelectorAll('#rows .row').length") == 0
    step("under --auth the page shows nothing and asks for a token")
    browser.eval("document.getElementById('token').value = 'wrong';"
                 "document.getElementById('login-form').requestSubmit()")
    browser.wait_for("!document.getElementById('login').hidden && "
                     "document.getElementById('login-reason').textContent.includes('unknown token')",
                     "a wrong token is refused")
    step("a wrong token is refused and the page asks again")
    browser.eval("document.getElementById('token').value = %s;"
                 "document.getElementById('login-form').requestSubmit()" % json.dumps(TOKEN))
    browser.wait_for(exists("secret.x"), "the registers after signing in")
    bearer = {"Authorization": "Bearer " + TOKEN}
    status, _ = http("PUT", AUTH_BASE + "/provider",
                     {"registers": {"secret.x": {"value": 2, "ttl": "60s"}}}, bearer)
    assert status == 204, status
    browser.wait_for("%s === '2'" % cell("secret.x", "value"), "secret.x follows to 2 (the watch carries the token)")
    step("with the token the page shows the registers and follows them")
    assert browser.page_errors == [], browser.page_errors
    step("no script error or policy violation on the page")
finally:
    browser.close()
