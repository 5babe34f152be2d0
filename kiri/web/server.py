"""`kiri serve`: the dashboard's HTTP server — who may come in, which page answers, and
nothing of a failure beyond one line in the log and a 500 page.

Safe by default:
- it listens on loopback; any other address needs `web_token`, or it does not start;
- with a token, every request carries it (Authorization: Bearer, or the cookie the login
  form sets: HttpOnly, SameSite=Strict), compared in constant time;
- without one, the Host header must name this machine (a loopback name or web_url's
  host), so a web page that rebinds its own name to 127.0.0.1 reads nothing;
- every POST carries the process's CSRF token and, when the browser sends one, an Origin
  (or Referer) of this very host; read-only refuses every answer;
- requests are small (MAX_BODY) and slow clients are cut off (TIMEOUT).
Each request opens the store and closes it: the daemon writes at the same time (WAL).
"""

import hashlib
import hmac
import http.cookies
import ipaddress
import re
import secrets
import socket
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from ..errors import KiriError
from ..ground import one_line
from ..store import open_store
from . import pages, views

MAX_BODY = 8192          # bytes of a POST: an answer or a login is a few dozen
TIMEOUT = 10             # seconds a client may stay silent mid-request before its socket is closed
COOKIE = "kiri_session"
COOKIE_DAYS = 30
LOOPBACK_NAMES = ("localhost", "localhost.")


class Dashboard(ThreadingHTTPServer):
    daemon_threads = True   # a client that hangs never holds the process open at exit

    def __init__(self, settings, address, read_only, clock=time.time, log=None):
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, Handler)
        self.settings, self.read_only, self.clock = settings, read_only, clock
        self.token = settings.get("web_token")
        self.csrf = secrets.token_urlsafe(32)   # per process: a restart invalidates forms, nothing else
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.known_hosts = {self.server_address[0], urllib.parse.urlsplit(settings.http_url("web_url")).hostname}

    @property
    def url(self):
        host, port = self.server_address[:2]
        return f"http://{'[' + host + ']' if ':' in host else host}:{port}/"

    def session(self):
        """The cookie's value: derived from the token, so the token itself never sits in a browser."""
        return hmac.new(self.token.encode(), b"kiri web session", hashlib.sha256).hexdigest()


def is_loopback(host):
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:   # a name: it may resolve anywhere
        return False


def bind_address(settings, bind=None):
    """(host, port) from `bind` ('HOST:PORT', checked by web_bind's own rule) or the setting."""
    if bind is None:
        return settings.web_bind
    given = replace(settings, values=dict(settings.values, web_bind=bind),
                    origins=dict(settings.origins, web_bind="--bind"))
    return given.web_bind


def make_server(settings, address, read_only=None, clock=time.time, log=None):
    """The dashboard listening on `address` (host, port; port 0: any free one), not yet serving.
    Refused (KiriError) beyond loopback without a web_token."""
    host = address[0]
    if not is_loopback(host) and not settings.get("web_token"):
        raise KiriError(f"the dashboard on {host} would let other machines in: set web_token first "
                        "(config.ini, chmod 600, or KIRI_WEB_TOKEN), or listen on 127.0.0.1")
    read_only = settings.flag("web_read_only") if read_only is None else read_only
    try:
        return Dashboard(settings, address, read_only, clock=clock, log=log)
    except OSError as e:
        raise KiriError(f"the dashboard cannot listen on {host}:{address[1]}: {e.strerror or e}") from None


def serve(settings, bind=None, read_only=None, report=print):
    """Serve the dashboard until interrupted. bind: 'HOST:PORT' (default: web_bind);
    read_only: None takes web_read_only."""
    server = make_server(settings, bind_address(settings, bind), read_only)
    mode = ", read-only" if server.read_only else ""
    access = ", token required" if server.token else ""
    report(f"kiri serve: {server.url} (home {settings.home}{mode}{access}); Ctrl-C stops it")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        report("kiri serve: stopped")
    finally:
        server.server_close()


# -- one request ---------------------------------------------------------------------------

SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    # No script at all; the pages' own <style> and the inline SVG are all there is.
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
}


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"
    headers: dict = field(default_factory=dict)


class Refused(Exception):
    """A request answered with an error page: (status, the one line it says)."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


class Request:
    """What a route sees: the path, the query, the form of a POST, and a store opened on
    first use (closed by the handler when the answer is sent)."""

    def __init__(self, handler, method):
        self.handler, self.method, self.server = handler, method, handler.server
        self.headers = handler.headers
        parts = urllib.parse.urlsplit(handler.path)
        self.path = parts.path
        self.query = first_values(parts.query)
        self.now = self.server.clock()
        self.authorized = not self.server.token or self.has_token()
        self._store = None

    @property
    def store(self):
        if self._store is None:
            self._store = open_store(self.server.settings.home)
        return self._store

    def close(self):
        if self._store is not None:
            self._store.close()

    def has_token(self):
        token = self.server.token.encode()
        given = self.headers.get("Authorization", "")
        if given[:7].lower() == "bearer ":
            return hmac.compare_digest(given[7:].strip().encode(), token)
        try:
            cookie = http.cookies.SimpleCookie(self.headers.get("Cookie", ""))
        except http.cookies.CookieError:
            return False
        return COOKIE in cookie and hmac.compare_digest(cookie[COOKIE].value.encode(), self.server.session().encode())

    def form(self):
        """The POST's urlencoded fields, first value of each; bounded by MAX_BODY."""
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            raise Refused(411, "a POST needs a Content-Length") from None
        if not 0 <= length <= MAX_BODY:
            raise Refused(413, f"a POST here is at most {MAX_BODY} bytes")
        body = self.handler.rfile.read(length)
        return first_values(body.decode("utf-8", "replace"))

    def site(self):
        """The frame of a page; a visitor without the token is not told which machine this is."""
        host = self.server.settings.host if self.authorized else ""
        return pages.Site(host=host, csrf=self.server.csrf, read_only=self.server.read_only)


def first_values(query):
    try:
        fields = urllib.parse.parse_qs(query, max_num_fields=20)
    except ValueError:
        raise Refused(400, "too many fields") from None
    return {key: values[0] for key, values in fields.items()}


def html(status, text, **headers):
    return Response(status, text.encode("utf-8"), headers=headers)


def plain(status, text, **headers):
    return Response(status, (text + "\n").encode("utf-8"), "text/plain; charset=utf-8", headers)


def error(request, status, message):
    return html(status, pages.error_page(request.site(), status, message))


def redirect(location, **headers):
    return Response(303, headers=dict(headers, Location=location))


def local_path(text, default):
    """`text` when it is a path on this site ('/alerts'), else `default`: a form's `next`
    must never send the browser elsewhere ('//evil.example', 'https://…')."""
    if text and text.startswith("/") and not text.startswith(("//", "/\\")) and text.isprintable() and len(text) < 512:
        return text
    return default


def known_host(request):
    """Whether the Host header names this machine: a loopback name, the address listened
    on, or web_url's host."""
    try:
        name = urllib.parse.urlsplit("//" + request.headers.get("Host", "")).hostname
    except ValueError:
        return False
    return name is not None and (is_loopback(name) or name in request.server.known_hosts)


def same_origin(request):
    """Whether the browser's Origin (or Referer) is this very host; a client that sends
    neither (curl) is left to the CSRF token."""
    origin = request.headers.get("Origin") or request.headers.get("Referer")
    if not origin:
        return True
    try:
        netloc = urllib.parse.urlsplit(origin).netloc
    except ValueError:
        return False
    return netloc.lower() == request.headers.get("Host", "").lower()


def check_post(request, form, changes_data):
    if changes_data and request.server.read_only:
        raise Refused(403, "this dashboard is read-only: it takes no answers (kiri feedback ID approve|dismiss does)")
    if not same_origin(request):
        raise Refused(403, "this form was sent from another site")
    if not hmac.compare_digest(form.get("csrf", "").encode(), request.server.csrf.encode()):
        raise Refused(403, "this form is out of date (the dashboard restarted?): reload the page and try again")


# -- the routes ----------------------------------------------------------------------------

def overview_route(request):
    span_name, span = views.window(request.query.get("range"))
    view = views.overview(request.server.settings, request.store, request.now, span)
    return html(200, pages.overview(request.site(), view, span_name))


def atom_route(request, quoted_name):
    name = urllib.parse.unquote(quoted_name)
    span_name, span = views.window(request.query.get("range"))
    view = views.atom_page(request.server.settings, request.store, name, request.now, span, at=moment(request.query.get("at")))
    if view is None:
        raise Refused(404, f"there is no atom {name!r} here")
    return html(200, pages.atom_page(request.site(), view, span_name))


def moment(text):
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if value == value and abs(value) < 1e11 else None   # not NaN, not beyond year 5000


def alerts_route(request):
    return html(200, pages.alerts_page(request.site(), views.alerts_page(request.store), request.now))


def alert_route(request, alert_id):
    view = views.alert_page(request.server.settings, request.store, int(alert_id))
    if view is None:
        raise Refused(404, f"there is no alert #{alert_id}")
    return html(200, pages.alert_page(request.site(), view, request.now))


def nerve_route(request):
    view = views.nerve_page(request.server.settings, request.store)
    return html(200, pages.nerve_page(request.site(), view, request.now))


def metrics_route(request):
    from .. import metrics   # the Prometheus text is metrics.py's; this only serves it
    body = metrics.render(request.server.settings, request.store, request.now)
    return Response(200, body.encode("utf-8"), metrics.CONTENT_TYPE)


def login_form_route(request):
    return html(200, pages.login_page(request.site(), local_path(request.query.get("next"), "/")))


def feedback_route(request, alert_id):
    form = request.form()
    check_post(request, form, changes_data=True)
    verdict = form.get("verdict")
    if verdict not in ("approve", "dismiss"):
        raise Refused(400, "an answer is approve or dismiss")
    try:
        request.store.add_feedback(int(alert_id), verdict)
    except KeyError:
        raise Refused(404, f"there is no alert #{alert_id}") from None
    return redirect(local_path(form.get("next"), f"/alerts/{alert_id}"))


def login_route(request):
    form = request.form()
    check_post(request, form, changes_data=False)
    back = local_path(form.get("next"), "/")
    if not request.server.token:
        return redirect(back)
    if not hmac.compare_digest(form.get("token", "").encode(), request.server.token.encode()):
        return html(401, pages.login_page(request.site(), back, wrong=True))
    secure = "; Secure" if request.server.settings.http_url("web_url").startswith("https:") else ""
    cookie = (f"{COOKIE}={request.server.session()}; Path=/; Max-Age={COOKIE_DAYS * 86400}; "
              f"HttpOnly; SameSite=Strict{secure}")
    return redirect(back, **{"Set-Cookie": cookie})


ROUTES = {
    "GET": [(r"/", overview_route), (r"/atoms/([^/]+)", atom_route), (r"/alerts", alerts_route),
            (r"/alerts/(\d{1,18})", alert_route), (r"/nerve", nerve_route), (r"/metrics", metrics_route),
            (r"/login", login_form_route)],
    "POST": [(r"/alerts/(\d{1,18})/feedback", feedback_route), (r"/login", login_route)],
}
ROUTES = {method: [(re.compile(pattern + r"\Z"), route) for pattern, route in routes] for method, routes in ROUTES.items()}
OPEN = (login_form_route, login_route)   # what a visitor without the token may reach


def respond(request):
    """The Response to a request: who may ask first, then which route answers."""
    if not request.server.token and not known_host(request):   # plain: not even the host's name to a stranger
        return plain(403, "this dashboard answers to this machine's own names only (the Host header)")
    for pattern, route in ROUTES[request.method]:
        found = pattern.match(request.path)
        if found:
            break
    else:
        route = found = None
    if not request.authorized and route not in OPEN:
        return unauthorized(request)
    if route is None:
        raise Refused(404, "there is no such page")
    return route(request, *found.groups())


def unauthorized(request):
    challenge = {"WWW-Authenticate": 'Bearer realm="kiri"'}
    if request.path == "/metrics" or request.method != "GET":
        return plain(401, "this dashboard needs its token: Authorization: Bearer <web_token>", **challenge)
    back = local_path(request.handler.path, "/")   # after signing in, the page that was asked for
    return html(401, pages.login_page(request.site(), back), **challenge)


class Handler(BaseHTTPRequestHandler):
    server_version = "kiri"
    sys_version = ""
    timeout = TIMEOUT   # the socket's: a client silent this long mid-request is cut off

    def do_GET(self):
        self.answer("GET")

    def do_POST(self):
        self.answer("POST")

    def answer(self, method):
        request = None
        try:
            request = Request(self, method)
            response = respond(request)
        except Refused as e:
            response = error(request, e.status, str(e)) if request else plain(e.status, str(e))
        except Exception as e:   # a bug or a database in trouble: one line here, no traceback there
            self.server.log(f"kiri serve: {method} {one_line(self.path, 200)}: {type(e).__name__}: {one_line(e)}")
            response = plain(500, "something went wrong here; the server's log says what")
        finally:
            if request is not None:
                request.close()
        self.send(response)

    def send(self, response):
        try:
            self.send_response(response.status)
            headers = dict(SECURITY_HEADERS, **{"Content-Type": response.content_type,
                                                "Content-Length": str(len(response.body))})
            headers.update(response.headers)
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(response.body)
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            pass   # the client went away: nobody is left to answer

    def log_message(self, format, *args):
        pass   # no access log: a dashboard that refreshes every minute would fill it; errors are logged above


def serve_in_thread(server):
    """Run `server` in a daemon thread (tests, the screenshot); returns the thread."""
    thread = threading.Thread(target=server.serve_forever, name="kiri-serve", daemon=True)
    thread.start()
    return thread
