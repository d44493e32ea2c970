#!/usr/bin/env python3
"""The dashboard with many registers: load time, render cost per frame under a stream of
changes, scrolling, and the page's heap. Not a test (it asserts nothing about time); the
figures go in docs/benchmarks.md#dashboard.

Usage: measure.py BASE [REGISTERS] [CHANGES_PER_SECOND] [SECONDS]

Against a running `reg serve` at BASE: writes REGISTERS registers `m.<group>.<n>` (1,000 per
PUT), opens /ui/, then changes random ones at the given rate for SECONDS while the page
follows, and prints what the page measured (window.__reg) as JSON.
"""

import json
import os
import random
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cdp import Browser  # noqa: E402

BASE = sys.argv[1]
REGISTERS = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000
RATE = int(sys.argv[3]) if len(sys.argv) > 3 else 500
SECONDS = int(sys.argv[4]) if len(sys.argv) > 4 else 10


def put(registers):
    body = json.dumps({"registers": registers}).encode()
    request = urllib.request.Request(BASE + "/provider", data=body, method="PUT")
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 204


def name(n):
    return "m.g%03d.r%06d" % (n % 1000, n)


for start in range(0, REGISTERS, 1000):
    put({name(n): {"value": n, "ttl": "30m"} for n in range(start, min(start + 1000, REGISTERS))})

browser = Browser()
try:
    started = time.monotonic()
    browser.open(BASE + "/ui/")
    browser.wait_for("window.__reg && window.__reg.loaded && document.querySelectorAll('#rows .row').length > 0",
                     "the page loads", seconds=120)
    wall_load = time.monotonic() - started
    load = browser.eval("({loadMs: window.__reg.loadMs, registers: document.getElementById('count').textContent})")
    browser.eval("window.__reg.renderMs = []; window.__reg.events = 0")
    # A stream of changes, batched 50 per PUT.
    sent = 0
    deadline = time.monotonic() + SECONDS
    rng = random.Random(7)
    while time.monotonic() < deadline:
        tick = time.monotonic()
        put({name(rng.randrange(REGISTERS)): {"value": rng.randrange(10**6), "ttl": "30m"} for _ in range(50)})
        sent += 50
        time.sleep(max(0, 50 / RATE - (time.monotonic() - tick)))
    browser.wait_for("window.__reg.events >= %d * 0.95" % sent, "the page catches up", seconds=30)
    follow = browser.eval("""(() => { const r = [...window.__reg.renderMs].sort((a, b) => a - b);
        const q = (p) => r[Math.min(r.length - 1, Math.floor(p * r.length))];
        return {events: window.__reg.events, renders: r.length, p50: q(0.5), p99: q(0.99), max: r[r.length - 1]}; })()""")
    # Scrolling to the middle and to a filter.
    browser.eval("window.__reg.renderMs = []")
    for fraction in (0.25, 0.5, 0.75, 1.0):
        browser.eval("document.getElementById('list').scrollTop = document.getElementById('spacer').offsetHeight * %f" % fraction)
        browser.wait_for("window.__reg.renderMs.length > 0", "a render after scrolling")
        browser.eval("window.__reg.renderMs = []")
    started = time.monotonic()
    browser.eval("document.getElementById('filter').value = 'g500.';"
                 "document.getElementById('filter').dispatchEvent(new Event('input'))")
    browser.wait_for("document.getElementById('count').textContent.startsWith('%d of')" % (REGISTERS // 1000),
                     "the filter applies")
    filter_ms = (time.monotonic() - started) * 1000
    heap = browser.call("Performance.enable") and None
    metrics = {m["name"]: m["value"] for m in browser.call("Performance.getMetrics")["metrics"]}
    print(json.dumps({
        "registers": REGISTERS, "load_ms_in_page": round(load["loadMs"]), "load_s_wall": round(wall_load, 2),
        "count": load["registers"], "changes_sent": sent, "changes_per_s": RATE, "follow": follow,
        "filter_ms_wall": round(filter_ms), "js_heap_mb": round(metrics.get("JSHeapUsedSize", 0) / 2**20, 1),
        "nodes": metrics.get("Nodes"),
    }, indent=1))
finally:
    browser.close()
