"""MikroTik pulse source: mapping of recorded RouterOS JSON, and the REST client
against a fake RouterOS served on 127.0.0.1 (HTTP, and HTTPS when `openssl` exists)."""
import base64
import json
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import traceback
import unittest
import urllib.parse

from kiri.atoms.pulse import mikrotik
from kiri.atoms.sources import CollectorError
from kiri.bench.loopback import JsonHandler, QuietServer

# GET /rest/system/resource on a hAP ax^2, RouterOS 7.20.5 (shared/reference/mikrotik-rest.md).
RESOURCE_HAP = (
    '{"architecture-name":"arm64","bad-blocks":"0","board-name":"hAP ax^2","build-time":"2025-11-27 08:17:04",'
    '"cpu":"ARM64","cpu-count":"4","cpu-frequency":"864","cpu-load":"7","factory-software":"7.5",'
    '"free-hdd-space":"92979200","free-memory":"705699840","platform":"MikroTik","total-hdd-space":"134217728",'
    '"total-memory":"1073741824","uptime":"1h12m40s","version":"7.20.5 (stable)","write-sect-since-reboot":"23",'
    '"write-sect-total":"91274"}'
)
# The same on a CHR x86_64, RouterOS 7.19.4.
RESOURCE_CHR = (
    '{"architecture-name":"x86_64","board-name":"CHR","build-time":"2025-07-28 10:00:16","cpu":"Common",'
    '"cpu-count":"1","cpu-frequency":"2099","cpu-load":"0","factory-software":"7.1",'
    '"free-hdd-space":"17019092992","free-memory":"819691520","platform":"MikroTik",'
    '"total-hdd-space":"17040297984","total-memory":"1073741824","uptime":"7h17m52s","version":"7.19.4 (stable)",'
    '"write-sect-since-reboot":"15160","write-sect-total":"15160"}'
)
# GET /rest/interface on a CHR (two of seven entries; compact JSON as on the wire).
INTERFACES = (
    '[{".id":"*2","actual-mtu":"1500","default-name":"ether1","disabled":"false","fp-rx-byte":"0",'
    '"fp-rx-packet":"0","fp-tx-byte":"0","fp-tx-packet":"0","last-link-up-time":"2026-03-02 10:07:14",'
    '"link-downs":"0","mac-address":"0C:00:E6:1F:95:00","mtu":"1500","name":"ether1","running":"true",'
    '"rx-byte":"60987","rx-drop":"0","rx-error":"0","rx-packet":"887","tx-byte":"2781511","tx-drop":"0",'
    '"tx-error":"0","tx-packet":"10166","tx-queue-drop":"0","type":"ether"},'
    '{".id":"*7","actual-mtu":"1500","comment":"Loopback1","disabled":"false","dynamic":"false",'
    '"fp-rx-byte":"0","fp-rx-packet":"0","fp-tx-byte":"0","fp-tx-packet":"0","l2mtu":"65535",'
    '"last-link-up-time":"2026-03-02 10:07:21","link-downs":"0","mac-address":"22:33:25:1D:9C:FF",'
    '"mtu":"auto","name":"lo1","running":"true","rx-byte":"0","rx-drop":"0","rx-error":"0",'
    '"rx-packet":"0","tx-byte":"507285","tx-drop":"0","tx-error":"0","tx-packet":"2947",'
    '"tx-queue-drop":"0","type":"bridge"}]'
)
UNAUTHORIZED = '{"error":401,"message":"Unauthorized"}'
NO_SUCH_COMMAND = '{"detail":"no such command or directory (nonexistent)","error":400,"message":"Bad Request"}'

USER = "monitoring"
PASSWORD = "s3cret-Pa55word"


class PulseFromTest(unittest.TestCase):
    def test_hap_ax2(self):
        reading = mikrotik.pulse_from(json.loads(RESOURCE_HAP), json.loads(INTERFACES))
        self.assertEqual(reading["C"], 7.0)
        self.assertAlmostEqual(reading["M"], 34.276581, places=5)  # 1 - 705699840 / 1073741824
        self.assertAlmostEqual(reading["D"], 30.725098, places=5)  # 1 - 92979200 / 134217728
        self.assertEqual(reading["S"], 0.0)
        self.assertAlmostEqual(reading["L"], 0.28)  # 7 % of 4 cores = 0.28 busy cores
        self.assertEqual(reading["N"], 1)  # ether1 running
        self.assertEqual(sorted(reading), ["C", "D", "L", "M", "N", "S"])

    def test_chr(self):
        reading = mikrotik.pulse_from(json.loads(RESOURCE_CHR), json.loads(INTERFACES))
        self.assertEqual(reading["C"], 0.0)
        self.assertAlmostEqual(reading["M"], 23.660278, places=5)  # 1 - 819691520 / 1073741824
        self.assertAlmostEqual(reading["D"], 0.124440, places=5)  # 1 - 17019092992 / 17040297984
        self.assertEqual(reading["L"], 0.0)

    def test_resource_wrapped_in_a_list_as_in_the_7_1beta4_docs(self):
        wrapped = [json.loads(RESOURCE_HAP)]
        self.assertEqual(mikrotik.pulse_from(wrapped, [])["C"], 7.0)

    def test_missing_field(self):
        resource = json.loads(RESOURCE_HAP)
        del resource["free-memory"]
        with self.assertRaisesRegex(CollectorError, "^mikrotik: /rest/system/resource has no field 'free-memory'$"):
            mikrotik.pulse_from(resource, [])

    def test_word_where_a_number_belongs(self):
        resource = dict(json.loads(RESOURCE_HAP), **{"cpu-load": "auto"})
        with self.assertRaisesRegex(CollectorError, "'cpu-load' is 'auto', not a number"):
            mikrotik.pulse_from(resource, [])

    def test_every_number_is_finite_and_in_its_range(self):
        cases = [("cpu-load", "nan"), ("cpu-load", "inf"), ("cpu-load", "-1"), ("cpu-load", "150"),
                 ("cpu-load", ["7"]), ("cpu-load", "7" * 100000), ("cpu-count", "1e400"), ("cpu-count", "0"),
                 ("cpu-count", "2.5"), ("cpu-count", True), ("cpu-count", 10 ** 400), ("total-memory", "1e30"),
                 ("free-memory", "2147483648"), ("free-hdd-space", "-5"), ("total-hdd-space", "NaN")]
        for name, value in cases:
            with self.subTest(name=name, value=str(value)[:20]):
                resource = dict(json.loads(RESOURCE_HAP), **{name: value})
                with self.assertRaises(CollectorError) as caught:
                    mikrotik.pulse_from(resource, [])
                message = str(caught.exception)
                self.assertIn(repr(name), message)
                self.assertEqual(len(message.splitlines()), 1)
                self.assertLess(len(message), 200)
        edge = dict(json.loads(RESOURCE_HAP), **{"cpu-load": "100", "cpu-count": "1", "free-memory": "0"})
        self.assertEqual((mikrotik.pulse_from(edge, [])["C"], mikrotik.pulse_from(edge, [])["M"]), (100.0, 100.0))

    def test_zero_total(self):
        resource = dict(json.loads(RESOURCE_HAP), **{"total-memory": "0"})
        with self.assertRaisesRegex(CollectorError, "'total-memory' is '0'"):
            mikrotik.pulse_from(resource, [])

    def test_wrong_shapes(self):
        with self.assertRaisesRegex(CollectorError, "not a JSON object"):
            mikrotik.pulse_from("hello", [])
        with self.assertRaisesRegex(CollectorError, "not a JSON list"):
            mikrotik.pulse_from(json.loads(RESOURCE_HAP), {"name": "ether1"})

    def test_network(self):
        ether1, lo1 = json.loads(INTERFACES)
        self.assertEqual(mikrotik.network_up([lo1]), 0)  # a running bridge is not a link
        self.assertEqual(mikrotik.network_up([dict(ether1, running="false")]), 0)
        self.assertEqual(mikrotik.network_up([dict(ether1, disabled="true")]), 0)
        without_disabled = {k: v for k, v in ether1.items() if k != "disabled"}
        self.assertEqual(mikrotik.network_up([without_disabled]), 1)  # flags may be left out
        self.assertEqual(mikrotik.network_up([]), 0)


class SslContextTest(unittest.TestCase):
    def test_default_verifies(self):
        context = mikrotik.ssl_context()
        self.assertEqual(context.verify_mode, ssl.CERT_REQUIRED)
        self.assertTrue(context.check_hostname)

    def test_verify_false_is_explicit_and_total(self):
        context = mikrotik.ssl_context(verify=False)
        self.assertEqual(context.verify_mode, ssl.CERT_NONE)
        self.assertFalse(context.check_hostname)

    def test_cafile_with_verify_false_is_a_contradiction(self):
        with self.assertRaisesRegex(CollectorError, "contradict"):
            mikrotik.ssl_context(cafile="/some/ca.pem", verify=False)

    def test_missing_cafile(self):
        with self.assertRaisesRegex(CollectorError, "cannot load CA file /nonexistent/ca.pem"):
            mikrotik.ssl_context(cafile="/nonexistent/ca.pem")


# ----------------------------------------------------------------------------
# A fake RouterOS on loopback

class FakeRouterOS(JsonHandler):
    """Answers like RouterOS: Basic auth on every request, JSON strings, JSON error bodies."""

    def do_GET(self):
        server = self.server
        server.requests.append(self.path)
        if self.headers.get("Authorization") != server.expected_authorization:
            return self.answer(401, UNAUTHORIZED)
        route = server.routes.get(urllib.parse.urlsplit(self.path).path)
        if route is None:
            return self.answer(400, NO_SUCH_COMMAND)
        status, body, delay = route
        if delay:
            server.release.wait(delay)  # bounded; tearDown releases it at once
        self.answer(status, body)


def authorization(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class FakeRouterTestCase(unittest.TestCase):
    scheme = "http"

    def setUp(self):
        self.server = QuietServer(("127.0.0.1", 0), FakeRouterOS)
        self.server.requests = []
        self.server.expected_authorization = authorization(USER, PASSWORD)
        self.server.release = threading.Event()
        self.server.routes = {
            "/rest/system/resource": (200, RESOURCE_HAP, 0),
            "/rest/interface": (200, INTERFACES, 0),
        }
        self.wrap_server_socket()
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05})
        self.thread.start()
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self.url = f"{self.scheme}://{self.host}"

    def wrap_server_socket(self):
        pass

    def tearDown(self):
        self.server.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=2)

    def assert_no_password(self, error):
        """The password (plain or inside the Basic header) is in no message, repr or traceback."""
        encoded = authorization(USER, PASSWORD).split()[1]
        texts = [str(error), repr(error), "".join(traceback.format_exception(type(error), error, error.__traceback__))]
        for text in texts:
            self.assertNotIn(PASSWORD, text)
            self.assertNotIn(encoded, text)


class HttpClientTest(FakeRouterTestCase):
    def test_normal_path(self):
        reading = mikrotik.collect(self.url, USER, PASSWORD, timeout=2)
        self.assertEqual(reading["C"], 7.0)
        self.assertAlmostEqual(reading["M"], 34.276581, places=5)
        self.assertAlmostEqual(reading["D"], 30.725098, places=5)
        self.assertEqual(reading["S"], 0.0)
        self.assertAlmostEqual(reading["L"], 0.28)
        self.assertEqual(reading["N"], 1)
        self.assertEqual(self.server.requests,
                         ["/rest/system/resource", "/rest/interface?.proplist=name,type,running,disabled"])

    def test_url_may_already_end_in_rest(self):
        reading = mikrotik.collect(self.url + "/rest/", USER, PASSWORD, timeout=2)
        self.assertEqual(reading["C"], 7.0)

    def test_wrong_password(self):
        with self.assertRaises(CollectorError) as caught:
            mikrotik.collect(self.url, USER, "wrong-" + PASSWORD, timeout=2)
        self.assertEqual(str(caught.exception), f"mikrotik: authentication failed (HTTP 401) at {self.host}")

    def test_right_password_is_not_in_the_401_message(self):
        self.server.expected_authorization = authorization(USER, "something-else")
        with self.assertRaises(CollectorError) as caught:
            mikrotik.collect(self.url, USER, PASSWORD, timeout=2)
        self.assertIn("HTTP 401", str(caught.exception))
        self.assert_no_password(caught.exception)

    def test_timeout(self):
        self.server.routes["/rest/system/resource"] = (200, RESOURCE_HAP, 5.0)
        started = time.monotonic()
        with self.assertRaises(CollectorError) as caught:
            mikrotik.collect(self.url, USER, PASSWORD, timeout=0.3)
        self.assertLess(time.monotonic() - started, 2.0)
        self.assertEqual(str(caught.exception), f"mikrotik: no answer from {self.host} within 0.3 s")
        self.assert_no_password(caught.exception)

    def test_malformed_json(self):
        self.server.routes["/rest/interface"] = (200, INTERFACES[:100], 0)
        with self.assertRaises(CollectorError) as caught:
            mikrotik.collect(self.url, USER, PASSWORD, timeout=2)
        self.assertEqual(str(caught.exception), f"mikrotik: malformed JSON from {self.host}/rest/interface")
        self.assert_no_password(caught.exception)

    def test_missing_field_names_field_and_host(self):
        resource = json.loads(RESOURCE_HAP)
        del resource["cpu-load"]
        self.server.routes["/rest/system/resource"] = (200, json.dumps(resource), 0)
        with self.assertRaises(CollectorError) as caught:
            mikrotik.collect(self.url, USER, PASSWORD, timeout=2)
        self.assertEqual(str(caught.exception),
                         f"mikrotik: /rest/system/resource has no field 'cpu-load' at {self.host}")

    def test_routeros_error_body_is_shown(self):
        del self.server.routes["/rest/interface"]
        with self.assertRaises(CollectorError) as caught:
            mikrotik.collect(self.url, USER, PASSWORD, timeout=2)
        self.assertEqual(str(caught.exception),
                         f"mikrotik: HTTP 400 from {self.host}/rest/interface: "
                         "Bad Request (no such command or directory (nonexistent))")
        self.assert_no_password(caught.exception)

    def test_connection_refused(self):
        with socket.socket() as probe:  # a port that was free a moment ago
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        with self.assertRaises(CollectorError) as caught:
            mikrotik.collect(f"http://127.0.0.1:{port}", USER, PASSWORD, timeout=2)
        self.assertEqual(str(caught.exception), f"mikrotik: connection refused by 127.0.0.1:{port}")
        self.assert_no_password(caught.exception)

    def test_credentials_inside_the_url_are_refused_without_echoing_them(self):
        url = f"http://{USER}:{PASSWORD}@{self.host}"
        with self.assertRaises(CollectorError) as caught:
            mikrotik.collect(url, USER, PASSWORD, timeout=2)
        self.assertIn("must not hold a user or password", str(caught.exception))
        self.assert_no_password(caught.exception)
        self.assertEqual(self.server.requests, [])

    def test_url_without_scheme(self):
        with self.assertRaisesRegex(CollectorError, "must start with https://"):
            mikrotik.collect("192.168.88.1", USER, PASSWORD)

    def test_malformed_urls_are_one_line(self):
        for url in ("http://[::1", "http://[::1]:99999", "https://router:https", "http://rou ter",
                    "http://" + "a" * 70 + ".lan"):   # the last: a name no resolver accepts
            with self.subTest(url=url):
                with self.assertRaisesRegex(CollectorError, r"^mikrotik: [^\n]+$"):
                    mikrotik.collect(url, USER, PASSWORD, timeout=2)

    def test_a_value_out_of_range_names_field_and_host(self):
        self.server.routes["/rest/system/resource"] = (200, RESOURCE_HAP.replace('"cpu-load":"7"', '"cpu-load":"nan"'), 0)
        with self.assertRaises(CollectorError) as caught:
            mikrotik.collect(self.url, USER, PASSWORD, timeout=2)
        self.assertEqual(str(caught.exception),
                         f"mikrotik: /rest/system/resource field 'cpu-load' is 'nan', not a number from 0 to 100 at {self.host}")

    def test_answers_too_large_or_too_deep_are_refused(self):
        huge = '{"padding": "%s"}' % ("x" * (mikrotik.BODY_MAX + 1))
        for body, words in ((huge, f"mikrotik: {self.host} sent an answer larger than 1 MB"),
                            ("[" * 200000, f"mikrotik: malformed JSON from {self.host}/rest/system/resource")):
            with self.subTest(words=words):
                self.server.routes["/rest/system/resource"] = (200, body, 0)
                with self.assertRaises(CollectorError) as caught:
                    mikrotik.collect(self.url, USER, PASSWORD, timeout=2)
                self.assertEqual(str(caught.exception), words)

    def test_routeros_error_words_become_one_short_line(self):
        words = json.dumps({"error": 400, "message": "Bad Request", "detail": "no such\ncommand " * 500})
        self.server.routes["/rest/interface"] = (400, words, 0)
        with self.assertRaises(CollectorError) as caught:
            mikrotik.collect(self.url, USER, PASSWORD, timeout=2)
        self.assertEqual(len(str(caught.exception).splitlines()), 1)
        self.assertLess(len(str(caught.exception)), 300)


def make_self_signed_certificate(directory):
    """(certificate, key) paths for CN/SAN 127.0.0.1, made by the openssl CLI; None if it cannot."""
    openssl = shutil.which("openssl")
    if not openssl:
        return None
    certificate, key = os.path.join(directory, "router.pem"), os.path.join(directory, "router.key")
    command = [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
               "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
               "-keyout", key, "-out", certificate]
    try:
        subprocess.run(command, check=True, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return certificate, key


class HttpsClientTest(FakeRouterTestCase):
    """The router's usual setup: HTTPS with a self-signed certificate."""

    scheme = "https"

    @classmethod
    def setUpClass(cls):
        cls.directory = tempfile.TemporaryDirectory()
        made = make_self_signed_certificate(cls.directory.name)
        if made is None:
            cls.directory.cleanup()
            raise unittest.SkipTest("the openssl CLI is needed to make a self-signed certificate")
        cls.certificate, cls.key = made

    @classmethod
    def tearDownClass(cls):
        cls.directory.cleanup()

    def wrap_server_socket(self):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.certificate, self.key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)

    def test_trusting_the_routers_ca_file(self):
        reading = mikrotik.collect(self.url, USER, PASSWORD, cafile=self.certificate, timeout=2)
        self.assertEqual(reading["C"], 7.0)

    def test_self_signed_is_refused_by_default(self):
        with self.assertRaises(CollectorError) as caught:
            mikrotik.collect(self.url, USER, PASSWORD, timeout=2)
        self.assertRegex(str(caught.exception),
                         f"^mikrotik: certificate of {self.host} is not trusted .*cafile= .*verify=False$")
        self.assert_no_password(caught.exception)
        self.assertEqual(self.server.requests, [])  # nothing, credentials included, was sent

    def test_verify_false_accepts_anything(self):
        reading = mikrotik.collect(self.url, USER, PASSWORD, verify=False, timeout=2)
        self.assertEqual(reading["N"], 1)

    def test_wrong_password_over_https(self):
        with self.assertRaises(CollectorError) as caught:
            mikrotik.collect(self.url, USER, "nope", cafile=self.certificate, timeout=2)
        self.assertEqual(str(caught.exception), f"mikrotik: authentication failed (HTTP 401) at {self.host}")


if __name__ == "__main__":
    unittest.main()
