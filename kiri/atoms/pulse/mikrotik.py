"""Pulse from a MikroTik router, read over the RouterOS v7 REST API (urllib only).

Two GETs, HTTP Basic auth on every request (RouterOS keeps no session):
    <base>/rest/system/resource   CPU, memory, flash
    <base>/rest/interface         link state of each port
RouterOS sends every value as a JSON string ("7", "true"), so each field is
converted here, and a word where a number belongs, or a number out of its range
("nan", a CPU load of 150 %), is an error naming the field. An answer is read
within a total deadline and up to BODY_MAX bytes.
"""
import base64
import http.client
import json
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request

from kiri.atoms.sources import CollectorError
from kiri.ground import connection_problem, http_url_problem, one_line, read_capped

# Both answers are a few KB (the interface list is cut to four fields by .proplist): 1 MB
# is room for a router with thousands of ports, and bounds what a wrong server can make us hold.
BODY_MAX = 2 ** 20
BYTES_MAX = 2 ** 64          # memory and flash sizes: RouterOS counts them in a 64-bit number
CPUS_MAX = 4096


def ssl_context(cafile=None, verify=True):
    """TLS settings for the router: trust `cafile`, else the system CAs; verify=False trusts anything."""
    if not verify:
        if cafile:
            raise CollectorError("mikrotik: cafile= and verify=False contradict each other; choose one")
        # Asked for explicitly: still encrypted, but anyone on the path could pose as the router.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    try:
        # A router's certificate is usually self-signed: cafile is its exported CA.
        return ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError, ValueError) as error:   # ValueError: a name with a NUL in it
        raise CollectorError(f"mikrotik: cannot load CA file {cafile}: {error}") from None


# ----------------------------------------------------------------------------
# From RouterOS JSON to the pulse dict

def _number(record, name, where, low, high, whole=False):
    """The field `name` as a number from low to high (a whole one if `whole`), else a CollectorError."""
    if name not in record:
        raise CollectorError(f"mikrotik: {where} has no field {name!r}")
    value = record[name]
    shown = one_line(repr(value), 40)   # a router's value may be anything, of any length
    try:
        # RouterOS sends text; a number is taken too, a bool (JSON true) is no count.
        number = float(value) if isinstance(value, (str, int, float)) and not isinstance(value, bool) else None
    except (ValueError, OverflowError):   # a word, or an integer too large for a float
        number = None
    if number is None:
        raise CollectorError(f"mikrotik: {where} field {name!r} is {shown}, not a number")
    if not low <= number <= high or (whole and not number.is_integer()):   # NaN is in no range
        kind = "a whole number" if whole else "a number"
        raise CollectorError(f"mikrotik: {where} field {name!r} is {shown}, not {kind} from {low} to {high:.15g}")
    return number


def _used_percent(record, total_name, free_name, where):
    total = _number(record, total_name, where, 1, BYTES_MAX, whole=True)
    free = _number(record, free_name, where, 0, total, whole=True)
    return 100.0 * (1.0 - free / total)


def network_up(interfaces):
    """1 if any enabled ethernet port is running (has link), else 0."""
    for interface in interfaces:
        if (isinstance(interface, dict)
                and interface.get("type") == "ether"
                and interface.get("running") == "true"
                # `disabled` may be left out instead of being "false".
                and interface.get("disabled") != "true"):
            return 1
    return 0


def pulse_from(resource, interfaces):
    """The pulse dict from the JSON of /rest/system/resource and /rest/interface."""
    where = "/rest/system/resource"
    # Current v7 answers a bare object; the 7.1beta4 docs show it wrapped in a list.
    if isinstance(resource, list) and resource:
        resource = resource[0]
    if not isinstance(resource, dict):
        raise CollectorError(f"mikrotik: {where} is not a JSON object")
    if not isinstance(interfaces, list):
        raise CollectorError("mikrotik: /rest/interface is not a JSON list")

    cpu = _number(resource, "cpu-load", where, 0, 100)
    cpu_count = _number(resource, "cpu-count", where, 1, CPUS_MAX, whole=True)
    return {
        "C": cpu,
        "M": _used_percent(resource, "total-memory", "free-memory", where),
        "D": _used_percent(resource, "total-hdd-space", "free-hdd-space", where),
        # RouterOS has no swap (it runs from RAM, flash holds only files): always 0 %.
        "S": 0.0,
        # RouterOS reports no load average. Busy cores (cpu-load x cpu-count) are in the same
        # unit as a 1-minute load, only instantaneous and never above cpu-count.
        "L": cpu / 100.0 * cpu_count,
        "N": network_up(interfaces),
    }


# ----------------------------------------------------------------------------
# HTTP

def _error_detail(error, deadline):
    """RouterOS's own words from an HTTP error body: 'Bad Request (no such command ...)'."""
    try:
        body = json.loads(read_capped(error, BODY_MAX, deadline).decode("utf-8"))
        detail = body.get("detail")
        words = f"{body['message']} ({detail})" if detail else body["message"]
    except Exception:  # an error body is a courtesy; a broken one must not hide the status
        words = error.reason
    return one_line(words)


def _connection_message(reason, host, timeout):
    message = "mikrotik: " + one_line(connection_problem(reason, host, timeout))
    if isinstance(reason, ssl.SSLCertVerificationError):
        message += "; give cafile= with the router's CA, or verify=False"
    return message


def _get_json(url, authorization, context, timeout, host):
    where = host + urllib.parse.urlsplit(url).path  # names the request in messages, without the query
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    # Unredirected: urllib would otherwise send the credentials on to wherever a redirect points.
    request.add_unredirected_header("Authorization", authorization)
    deadline = time.monotonic() + timeout   # for the whole request, however slowly the answer comes
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            body = read_capped(response, BODY_MAX, deadline)
    except urllib.error.HTTPError as error:
        with error:  # it holds the open connection
            if error.code == 401:
                raise CollectorError(f"mikrotik: authentication failed (HTTP 401) at {host}") from None
            raise CollectorError(f"mikrotik: HTTP {error.code} from {where}: {_error_detail(error, deadline)}") from None
    except urllib.error.URLError as error:
        raise CollectorError(_connection_message(error.reason, host, timeout)) from None
    except (OSError, http.client.HTTPException) as error:
        # Failures after the connection was made (a timeout or reset while reading, the
        # deadline passed, an answer over BODY_MAX) are not wrapped.
        raise CollectorError(_connection_message(error, host, timeout)) from None
    except ValueError as error:   # an address urllib cannot use after all, e.g. a host name too long
        raise CollectorError(f"mikrotik: cannot make a request to {host}: {one_line(error)}") from None
    try:
        return json.loads(body.decode("utf-8"))
    except (ValueError, RecursionError):   # not UTF-8, not JSON, or nested too deep to parse
        raise CollectorError(f"mikrotik: malformed JSON from {where}") from None


def collect(url, user, password, cafile=None, verify=True, timeout=10):
    """One pulse reading of the router at `url` (e.g. "https://192.168.88.1").

    The password goes into the Authorization header and nowhere else: no error
    message, log line or repr built here contains it.
    """
    problem = http_url_problem(url) if isinstance(url, str) else "must be text"
    if problem:
        # Never echo the URL: it may hold the password.
        raise CollectorError("mikrotik: the router URL (mikrotik_url) " + problem)
    parts = urllib.parse.urlsplit(url)
    host = parts.netloc
    base = url.rstrip("/")
    if not base.endswith("/rest"):
        base += "/rest"

    context = ssl_context(cafile, verify) if parts.scheme == "https" else None
    try:
        credentials = base64.b64encode(f"{user}:{password}".encode("utf-8")).decode("ascii")
    except UnicodeEncodeError:   # bytes that were not UTF-8 (an argument, a variable): not echoed, a secret
        raise CollectorError("mikrotik: the user (mikrotik_user) or password holds bytes that are not UTF-8 text") from None
    authorization = "Basic " + credentials

    resource = _get_json(base + "/system/resource", authorization, context, timeout, host)
    # .proplist keeps the answer small: a router can have hundreds of interfaces.
    interfaces = _get_json(base + "/interface?.proplist=name,type,running,disabled",
                           authorization, context, timeout, host)
    try:
        return pulse_from(resource, interfaces)
    except CollectorError as error:
        raise CollectorError(f"{error} at {host}") from None
