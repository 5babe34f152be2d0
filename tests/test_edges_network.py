"""Every network read is bounded and every failure of one is a line, not a traceback.

kiri.ground.read_capped reads an answer within a total deadline and up to a size cap;
http_url_problem checks a server's address before any request. Telegram and MikroTik use
both, and turn whatever goes wrong on the wire into their own one-line error (a SinkError,
a CollectorError). The servers here are real ones on 127.0.0.1 that answer too much, too
slowly, or not as HTTP at all: the bytes they send, at their pace, are each test.
"""

import http.client
import logging
import resource
import socket
import struct
import sys
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

from kiri.atoms.pulse import mikrotik
from kiri.atoms.sources import CollectorError
from kiri.config import load_settings
from kiri.daemon import Daemon
from kiri.ground import AnswerTooLarge, http_url_problem, one_line, read_capped
from kiri.notify.telegram import TelegramBot
from kiri.outbox import LogSink, SinkError
from kiri.store import Store

TOKEN = "123:SECRET"
MB = 2 ** 20
WAIT = 0.5     # the clients' timeout here: every test ends within a few of these


def headers(length=None, status="200 OK", chunked=False):
    lines = ["HTTP/1.1 " + status, "Content-Type: application/json", "Connection: close"]
    lines.append("Transfer-Encoding: chunked" if chunked else "Content-Length: %d" % length)
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class RawServer:
    """A server on 127.0.0.1: it reads each request, then `answer(server, connection)` sends what
    the test needs, at its own pace, through send(); `sent` counts the bytes that left."""

    def __init__(self, answer):
        self.answer = answer
        self.stop = threading.Event()
        self.sent = 0
        self.done = threading.Event()   # an answer has ended (finished, or the client hung up)
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(8)
        self._listener.settimeout(0.05)  # so the accepting thread sees `stop`
        self.host = "127.0.0.1:%d" % self._listener.getsockname()[1]
        self.url = "http://" + self.host
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self):
        self.stop.set()

    def send(self, connection, data):
        connection.sendall(data)
        self.sent += len(data)

    def _accept(self):
        with self._listener:
            while not self.stop.is_set():
                try:
                    connection, _ = self._listener.accept()
                except socket.timeout:
                    continue
                threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection):
        try:
            with connection:
                connection.settimeout(10)
                request = b""
                while b"\r\n\r\n" not in request:
                    request += connection.recv(65536) or b"\r\n\r\n"
                head, _, body = request.partition(b"\r\n\r\n")
                length = [int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:")]
                while length and len(body) < length[0]:
                    body += connection.recv(65536) or b" " * length[0]
                self.answer(self, connection)
        except OSError:   # the client hung up: what the cap and the deadline are there for
            pass
        finally:
            self.done.set()


def serving(test, answer):
    server = RawServer(answer)
    test.addCleanup(server.close)
    return server


# What a server may do. Each is answer(server, connection).

def endless(server, connection):
    """Announces 300 MB and sends them as fast as the client takes them."""
    server.send(connection, headers(300 * MB))
    chunk = b"0" * 65536
    while server.sent < 300 * MB and not server.stop.is_set():
        server.send(connection, chunk)


def trickle(server, connection):
    """A byte every 50 ms: each read gets something, the whole never comes."""
    server.send(connection, headers(100000))
    while not server.stop.wait(0.05):
        server.send(connection, b" ")


def silent(server, connection):
    server.stop.wait(10)


def reset(server, connection):
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def not_http(server, connection):
    server.send(connection, b"garbage\r\nmore garbage\r\n\r\n")


def cut_short(server, connection):
    server.send(connection, headers(1000) + b"{}")


def deep_json(server, connection):
    body = b"[" * 200000
    server.send(connection, headers(len(body)) + body)


def sized(n, status="200 OK", chunked=False):
    def answer(server, connection):
        if chunked:
            server.send(connection, headers(chunked=True) + b"%x\r\n%s\r\n0\r\n\r\n" % (n, b"x" * n))
        else:
            server.send(connection, headers(n, status) + b"x" * n)
    return answer


def refused_url():
    with socket.socket() as probe:   # a port that was free a moment ago
        probe.bind(("127.0.0.1", 0))
        return "http://127.0.0.1:%d" % probe.getsockname()[1]


# ----------------------------------------------------------------------------

class ReadCappedTest(unittest.TestCase):
    def read(self, answer, limit, wait=WAIT):
        server = serving(self, answer)
        with urllib.request.urlopen(server.url, timeout=wait) as response:
            return read_capped(response, limit, time.monotonic() + wait)

    def test_the_cap_itself_is_read_one_byte_more_is_refused(self):
        self.assertEqual(self.read(sized(1000), 1000), b"x" * 1000)
        self.assertEqual(self.read(sized(0), 1000), b"")
        with self.assertRaises(AnswerTooLarge) as caught:
            self.read(sized(1001), 1000)
        self.assertIsInstance(caught.exception, OSError)   # every failed-read handler catches it

    def test_an_answer_without_a_length_is_capped_too(self):
        self.assertEqual(len(self.read(sized(1000, chunked=True), 1000)), 1000)
        with self.assertRaises(AnswerTooLarge):
            self.read(sized(1001, chunked=True), 1000)

    def test_an_answer_cut_short_is_no_answer(self):
        with self.assertRaises(http.client.IncompleteRead):   # as read() would say; read1 alone would not
            self.read(cut_short, MB)

    def test_an_error_answer_is_capped(self):
        server = serving(self, sized(2 * MB, status="500 Internal Server Error"))
        with self.assertRaises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(server.url, timeout=WAIT)
        with caught.exception as error, self.assertRaises(AnswerTooLarge):
            read_capped(error, MB, time.monotonic() + WAIT)

    def test_an_endless_answer_stops_at_the_cap(self):
        server = serving(self, endless)
        with self.assertRaises(AnswerTooLarge):
            with urllib.request.urlopen(server.url, timeout=WAIT) as response:
                read_capped(response, MB, time.monotonic() + 10)
        self.assertTrue(server.done.wait(5))
        self.assertLess(server.sent, 64 * MB)   # the cap and the socket buffers, not 300 MB

    def test_a_trickle_ends_at_the_deadline(self):
        started = time.monotonic()
        with self.assertRaises(TimeoutError):
            self.read(trickle, MB)
        self.assertLess(time.monotonic() - started, 2 * WAIT + 1)   # the deadline and one read's wait


class AddressTest(unittest.TestCase):
    def test_what_is_wrong_with_an_address(self):
        for url in ("https://api.telegram.org", "http://127.0.0.1:8081/", "https://[::1]:443/rest", "http://router"):
            self.assertIsNone(http_url_problem(url), url)
        cases = {"http://[::1": "not a valid address", "http://host:99999": "not a valid address",
                 "http://host:port": "not a valid address", "ftp://host": "must start with https://",
                 "192.168.88.1": "must start with https://", "https://": "must start with https://",
                 "https://admin:pw@router": "must not hold a user or password",
                 "http://rou ter": "must not contain spaces", "http://router/\x00": "must not contain spaces"}
        for url, words in cases.items():
            with self.subTest(url=url):
                self.assertIn(words, http_url_problem(url))
        self.assertNotIn("pw", http_url_problem("https://admin:pw@[::1"))   # never quotes the address

    def test_one_line(self):
        self.assertEqual(one_line("Bad Request:\n  chat\tnot found\r\n"), "Bad Request: chat not found")
        self.assertEqual(one_line(ValueError("x" * 500), 10), "x" * 9 + "…")


class TelegramTransportTest(unittest.TestCase):
    """Whatever the Bot API's server does, the sink raises its own error (a SinkError), in one
    line without the token, within its deadline; the daemon logs it as one line."""

    FAILURES = {   # what the server does -> the words that say so
        "refused": (None, "connection refused by"),
        "silent": (silent, "no answer from"),
        "trickle": (trickle, "no answer from"),
        "endless": (endless, "sent an answer larger than 4 MB"),
        "reset": (reset, "cannot reach"),
        "cut short": (cut_short, "was cut short"),
        "not HTTP": (not_http, "malformed answer from"),
        "too deep": (deep_json, "malformed answer"),
    }

    def bot(self, answer):
        url = refused_url() if answer is None else serving(self, answer).url
        return TelegramBot(TOKEN, 4242, api=url, timeout=WAIT)

    def test_every_transport_failure_is_a_sink_error(self):
        for name, (answer, words) in self.FAILURES.items():
            for call in ("send_alert", "get_updates"):
                with self.subTest(failure=name, call=call):
                    bot = self.bot(answer)
                    started = time.monotonic()
                    with self.assertRaises(SinkError) as caught:
                        bot.send_alert("hello", 1) if call == "send_alert" else bot.get_updates()
                    self.assertLess(time.monotonic() - started, 2 * WAIT + 1)
                    message = str(caught.exception)
                    self.assertIn(words, message)
                    self.assertEqual(len(message.splitlines()), 1, message)
                    self.assertNotIn("SECRET", message)

    def test_the_daemon_logs_one_line_for_it(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        settings = load_settings(home=Path(tmp.name), env={})
        store = Store(Path(tmp.name) / "kiri.db", clock=lambda: 1000.0)
        self.addCleanup(store.close)
        lines = LogLines(self)
        for name, (answer, words) in self.FAILURES.items():
            with self.subTest(failure=name):
                del lines[:]
                result = SimpleNamespace(errors=[])
                Daemon(settings, store, clock=lambda: 1000.0,
                       sinks=[LogSink(), self.bot(answer)]).deliver_and_poll(1000.0, result)
                self.assertEqual(len(lines), 1, lines)
                self.assertIn(words, lines[0])
                self.assertNotIn("Traceback", lines[0])
                self.assertNotIn("deliver_and_poll", lines[0])
                self.assertEqual([e[0] for e in result.errors], ["telegram"])


class LogLines(list):
    """Every line KIRI logs while the test runs, formatted as kiri.log has them (tracebacks too)."""

    def __init__(self, test):
        super().__init__()
        handler = logging.Handler(logging.DEBUG)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
        handler.emit = lambda record: self.extend(handler.format(record).splitlines())
        logger = logging.getLogger("kiri")
        logger.addHandler(handler)
        test.addCleanup(logger.removeHandler, handler)


class MikrotikTransportTest(unittest.TestCase):
    def collect(self, answer):
        server = serving(self, answer)
        started = time.monotonic()
        with self.assertRaises(CollectorError) as caught:
            mikrotik.collect(server.url, "monitoring", "s3cret", timeout=WAIT)
        self.assertLess(time.monotonic() - started, 2 * WAIT + 1)
        self.assertEqual(len(str(caught.exception).splitlines()), 1)
        return str(caught.exception), server

    def test_a_300_mb_answer_is_refused_at_1_mb(self):
        unit = 1 if sys.platform == "darwin" else 1024   # ru_maxrss: bytes on macOS, KB on Linux
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * unit
        message, server = self.collect(endless)
        self.assertEqual(message, "mikrotik: %s sent an answer larger than 1 MB" % server.host)
        self.assertLess(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * unit - peak, 100 * MB)

    def test_a_trickle_or_silence_ends_at_the_deadline(self):
        for answer in (trickle, silent):
            with self.subTest(answer=answer.__name__):
                message, server = self.collect(answer)
                self.assertEqual(message, "mikrotik: no answer from %s within %s s" % (server.host, WAIT))

    def test_a_ca_file_no_file_can_be_is_one_line(self):
        # Found by `kiri bench fuzz`: a name with a NUL in it made ssl raise a ValueError.
        with self.assertRaisesRegex(CollectorError, "^mikrotik: cannot load CA file a\x00b: embedded null byte$"):
            mikrotik.ssl_context(cafile="a\x00b")

    def test_a_user_of_bytes_that_are_not_utf8_is_one_line_without_it(self):
        # Found by `kiri bench fuzz`: its Basic header could not be made (a UnicodeEncodeError).
        with self.assertRaises(CollectorError) as caught:
            mikrotik.collect("http://127.0.0.1:9", "admin\udcff", "pa\udcffss", timeout=WAIT)
        self.assertEqual(str(caught.exception),
                         "mikrotik: the user (mikrotik_user) or password holds bytes that are not UTF-8 text")

    def test_not_http_reset_or_cut_short_is_one_line_in_words(self):
        for answer, words in ((not_http, "malformed answer from {}: "), (reset, "cannot reach {}: "),
                              (cut_short, "the answer from {} was cut short")):
            with self.subTest(answer=answer.__name__):
                message, server = self.collect(answer)
                self.assertTrue(message.startswith("mikrotik: " + words.format(server.host)), message)


if __name__ == "__main__":
    unittest.main()
