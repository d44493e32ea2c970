"""A small DevTools-protocol client for headless Chromium (Debian's `chromium`), on
websocket-client (Debian's `python3-websocket`): launch, navigate, evaluate, wait, screenshot.
Used by drive.py (the browser test) and measure.py (the 100,000-register measurement)."""

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request

import websocket

STEP_SECONDS = 15


class Browser:
    def __init__(self, width=1400, height=760):
        binary = shutil.which("chromium") or shutil.which("chromium-browser")
        assert binary, "no chromium on PATH"
        self.profile = tempfile.mkdtemp(prefix="reg-ui-")
        self.process = subprocess.Popen(
            [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-extensions", "--hide-scrollbars", "--window-size=%d,%d" % (width, height),
             "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
             "--user-data-dir=" + self.profile, "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = os.path.join(self.profile, "DevToolsActivePort")
        deadline = time.monotonic() + 30
        while not (os.path.exists(port_file) and open(port_file).read().strip()):
            assert time.monotonic() < deadline, "chromium did not start"
            assert self.process.poll() is None, "chromium exited"
            time.sleep(0.05)
        port = open(port_file).read().split()[0]
        with urllib.request.urlopen("http://127.0.0.1:%s/json/list" % port, timeout=10) as r:
            pages = [t for t in json.load(r) if t["type"] == "page"]
        self.ws = websocket.create_connection(pages[0]["webSocketDebuggerUrl"], timeout=STEP_SECONDS)
        self.next_id = 0
        # Uncaught exceptions, console.error and Content-Security-Policy violations the page
        # had, for the caller to assert there were none (network 401s are the API's answers,
        # not the page's errors).
        self.page_errors = []
        self.call("Page.enable")
        self.call("Runtime.enable")
        self.call("Log.enable")

    def call(self, method, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                assert "error" not in message, message
                return message.get("result", {})
            self.note(message)

    def note(self, message):
        method, params = message.get("method"), message.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            self.page_errors.append(details.get("exception", {}).get("description") or details.get("text"))
        elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            self.page_errors.append(" ".join(str(a.get("value", a.get("description"))) for a in params.get("args", [])))
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            if entry.get("level") == "error" and entry.get("source") in ("javascript", "security"):
                self.page_errors.append(entry.get("text"))

    def eval(self, expression):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                           awaitPromise=True)
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def wait_for(self, expression, what, seconds=STEP_SECONDS):
        """Polls `expression` until it is truthy; an exception (the page still loading)
        counts as not yet."""
        deadline = time.monotonic() + seconds
        while True:
            result = self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                               awaitPromise=True)
            value = None if "exceptionDetails" in result else result["result"].get("value")
            if value:
                return value
            assert time.monotonic() < deadline, "timed out waiting for: " + what
            time.sleep(0.05)

    def open(self, url):
        self.call("Page.navigate", url=url)

    def screenshot(self, path):
        data = self.call("Page.captureScreenshot", format="png")["data"]
        with open(path, "wb") as out:
            out.write(base64.b64decode(data))

    def close(self):
        try:
            self.ws.close()
        finally:
            self.process.kill()
            self.process.wait()
            shutil.rmtree(self.profile, ignore_errors=True)


