"""Headless Chromium, driven over the DevTools protocol through a WebSocket client of the
standard library: a picture of the dashboard for a person (`kiri serve --screenshot`),
and the hands of the browser test (load, evaluate, click, screenshot).

    with Browser(find_chromium()) as browser:
        browser.navigate("http://127.0.0.1:9788/")
        png = browser.screenshot()
"""

import base64
import hashlib
import json
import math
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request

from ..errors import KiriError
from ..ground import atomic_file
from .server import make_server, serve_in_thread

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable",
              "/Applications/Google Chrome.app/Contents/MacOS/Google Chrome",
              "/Applications/Chromium.app/Contents/MacOS/Chromium")
FLAGS = ("--headless", "--disable-gpu", "--disable-quic", "--no-first-run", "--no-default-browser-check",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-proxy-server", "--hide-scrollbars", "--disable-breakpad", "--disable-crash-reporter",
         "--remote-debugging-port=0")
START_SECONDS = 30
STEP_SECONDS = 30
TALLEST = 16000   # pixels of a screenshot: a page longer than this is cut


class BrowserError(KiriError):
    pass


def find_chromium():
    """The path of a Chromium or Chrome on this machine, or None."""
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


class WebSocket:
    """The client side of RFC 6455, as much as DevTools needs: text messages, ping, close."""

    GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

    def __init__(self, url, timeout):
        parts = urllib.parse.urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self._recv()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        accept = base64.b64encode(hashlib.sha1((key + self.GUID).encode()).digest())
        if not head.startswith(b"HTTP/1.1 101") or accept not in head:
            raise BrowserError(f"DevTools refused the WebSocket: {head.splitlines()[0].decode(errors='replace')}")

    def _recv(self):
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise BrowserError("the browser closed its DevTools connection")
        return chunk

    def _read(self, n):
        while len(self.buffer) < n:
            self.buffer += self._recv()
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def send(self, text, opcode=0x1):
        payload = text.encode() if isinstance(text, str) else text
        n = len(payload)
        length = bytes([0x80 | n]) if n < 126 else struct.pack("!BH", 0x80 | 126, n) if n < 1 << 16 else \
            struct.pack("!BQ", 0x80 | 127, n)
        mask = os.urandom(4)   # a client masks every frame (RFC 6455 5.3)
        masked = (int.from_bytes(payload, "big") ^ int.from_bytes((mask * (n // 4 + 1))[:n], "big")).to_bytes(n, "big")
        self.sock.sendall(bytes([0x80 | opcode]) + length + mask + masked)

    def receive(self):
        """The next whole text message (fragments joined; pings answered)."""
        message = b""
        while True:
            first, second = self._read(2)
            opcode, n = first & 0x0F, second & 0x7F
            if n == 126:
                n = struct.unpack("!H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self._read(8))[0]
            payload = self._read(n)   # a server never masks
            if opcode == 0x8:
                raise BrowserError("the browser closed its DevTools connection")
            if opcode == 0x9:
                self.send(payload, opcode=0xA)
                continue
            if opcode in (0x0, 0x1, 0x2):
                message += payload
                if first & 0x80:
                    return message.decode()

    def close(self):
        self.sock.close()


class Browser:
    """A headless Chromium of its own (a fresh profile, deleted at close) and one page of it."""

    def __init__(self, executable, width=1280, height=900):
        self.profile = tempfile.TemporaryDirectory(prefix="kiri-chromium-")
        sandbox = ("--no-sandbox",) if hasattr(os, "geteuid") and os.geteuid() == 0 else ()  # root has no sandbox
        self.width = width
        self.process = subprocess.Popen([executable, *FLAGS, *sandbox, f"--user-data-dir={self.profile.name}",
                                         f"--window-size={width},{height}", "about:blank"],
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.next_id, self.events = 0, []
        try:
            self.socket = WebSocket(self.page_socket_url(), STEP_SECONDS)
            self.call("Page.enable")
            self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
        except BaseException:
            self.close()
            raise

    def page_socket_url(self):
        """The WebSocket of the browser's first page, once DevTools listens (it writes its port
        into the profile's DevToolsActivePort)."""
        port_file = os.path.join(self.profile.name, "DevToolsActivePort")
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BrowserError(f"the browser exited at start (status {self.process.returncode})")
            try:
                with open(port_file) as f:
                    port = int(f.readline())
                opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
                with opener.open(f"http://127.0.0.1:{port}/json/list", timeout=5) as answer:
                    pages = [t for t in json.load(answer) if t.get("type") == "page"]
                if pages:
                    return pages[0]["webSocketDebuggerUrl"]
            except (OSError, ValueError):
                pass   # not written, not whole, or not listening yet
            time.sleep(0.05)
        raise BrowserError(f"the browser did not open DevTools within {START_SECONDS} s")

    def call(self, method, **params):
        """Send one DevTools command and return its result; events met meanwhile are kept."""
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.receive())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error'].get('message')}")
                return message.get("result", {})
            if "method" in message:
                self.events.append(message)

    def wait_for(self, event, timeout=STEP_SECONDS):
        """The first `event` (e.g. Page.loadEventFired) since the last call of expect()."""
        deadline = time.monotonic() + timeout
        while True:
            for message in self.events:
                if message["method"] == event:
                    self.events.remove(message)
                    return message.get("params", {})
            if time.monotonic() > deadline:
                raise BrowserError(f"no {event} within {timeout} s")
            self.events.append(json.loads(self.socket.receive()))

    def expect(self):
        """Forget the events so far: a wait_for after this waits for a new one."""
        self.events.clear()

    def navigate(self, url):
        self.expect()
        result = self.call("Page.navigate", url=url)
        if result.get("errorText"):
            raise BrowserError(f"could not open {url}: {result['errorText']}")
        self.wait_for("Page.loadEventFired")

    def evaluate(self, expression):
        """The value of a JavaScript expression in the page (JSON-able values only)."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise BrowserError(f"script failed: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def click(self, selector):
        """A real mouse click (press and release) at the middle of the element `selector` picks."""
        where = self.evaluate("(() => { const e = document.querySelector(%s); if (!e) return null;"
                              " e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect();"
                              " return [r.x + r.width / 2, r.y + r.height / 2]; })()" % json.dumps(selector))
        if where is None:
            raise BrowserError(f"nothing on the page matches {selector}")
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=where[0], y=where[1], button="left", clickCount=1)

    def screenshot(self):
        """The whole page as PNG bytes, as tall as its content (up to TALLEST pixels)."""
        size = self.call("Page.getLayoutMetrics")
        content = size.get("cssContentSize") or size["contentSize"]
        height = min(TALLEST, max(1, math.ceil(content["height"])))
        self.call("Emulation.setDeviceMetricsOverride", width=self.width, height=height, deviceScaleFactor=1, mobile=False)
        return base64.b64decode(self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"])

    def close(self):
        """Ask the browser to quit (it then reaps its own helper processes), else end it."""
        if getattr(self, "socket", None) is not None:
            try:
                self.call("Browser.close")
            except (BrowserError, OSError):
                pass   # it closed the connection on its way out, or was gone already
            self.socket.close()
        for end in (None, self.process.terminate, self.process.kill):
            if end is not None:
                end()
            try:
                self.process.wait(timeout=10)
                break
            except subprocess.TimeoutExpired:
                continue
        self.profile.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def screenshot(settings, path, page="/"):
    """A PNG of the dashboard's `page` (the overview) of settings' home, written to `path`
    atomically: the dashboard served in this process on a free loopback port, opened in
    headless Chromium. Returns path."""
    executable = find_chromium()
    if executable is None:
        raise KiriError("kiri serve --screenshot needs Chromium or Chrome, and none is on PATH "
                        "(e.g. apt install chromium)")
    server = make_server(settings, ("127.0.0.1", 0))
    serve_in_thread(server)
    try:
        with Browser(executable) as browser:
            if server.token:
                browser.call("Network.enable")
                browser.call("Network.setExtraHTTPHeaders", headers={"Authorization": f"Bearer {server.token}"})
            browser.navigate(server.url.rstrip("/") + page)
            png = browser.screenshot()
    finally:
        server.shutdown()
        server.server_close()
    with atomic_file(path) as f:
        f.write(png)
    return path
