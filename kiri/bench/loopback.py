"""What the loopback fakes (Telegram, RouterOS) share: a quiet threaded server and JSON answers.

Bound to 127.0.0.1 by the tests that start them; daemon threads, so a test that fails
mid-request never hangs the run.
"""

import http.server
import json


class QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # a client that timed out and hung up is expected here


class JsonHandler(http.server.BaseHTTPRequestHandler):
    def answer(self, status, body):
        """Send `body` (bytes as they are, text already in JSON, or a JSON-able object) with `status`."""
        data = body if isinstance(body, bytes) else (body if isinstance(body, str) else json.dumps(body)).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass  # keep test output clean (and secrets out of it)
