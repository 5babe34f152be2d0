"""Alertmanager: KIRI's alerts in Prometheus' Alertmanager, and its silences back as Dismiss (urllib only).

    sink = from_settings(settings)     # an Alertmanager, or None when alertmanager_url is not set
    sink.send(alert)                   # POST /api/v2/alerts: the new alert, firing (the outbox calls this)
    sink.answers(store)                # every cycle: re-post what goes on, resolve what ended,
                                       # and a new silence over an open alert is its Dismiss

What Alertmanager gets, one postableAlert per KIRI alert:

    labels       alertname=KiriAnomaly, host, atom, alert_id, severity, situation
    annotations  summary: the alert's first line; description: the rest, field by field
    startsAt     when the alert was raised; endsAt: see below
    generatorURL {web_url}/alerts/{id}

The labels are the alert's identity in Alertmanager; alert_id keeps two alerts about the
same situation (one dismissed, one an hour later) from merging there. severity is
"critical" when an atom's score is at least CRITICAL_RATIO times its threshold, else
"warning" (so is Nerve's own alert, which has no score).

Alertmanager resolves an alert by itself once its endsAt passes. So while an alert goes
on (its last repeat within alert_cooldown, as the daemon merges repeats) answers() posts
it again each cycle with endsAt `ahead` seconds on; once it is over, it posts endsAt =
the last time the situation was seen, for `ahead` seconds more (repeats are harmless).
The whole state is in the store: a post that fails costs nothing but the precision of
the end, as Alertmanager ends the alert at the endsAt it has.

A silence is the owner's answer from Alertmanager: an active one, set (updatedAt) at or
after an open alert began, whose matchers hold for the alert's labels as Alertmanager
decides (covers), is that alert's Dismiss, once. An alert already answered elsewhere keeps
its answer, and a silence that was there before the alert (a maintenance window) is no
answer to it.

The first send goes through the outbox like any sink's; the re-posts cover only alerts
it has delivered here. Alertmanager answers a posted alert with no id, so send() returns
the alert's own id as the message id: store.message_alert(sink, id) then says whether
the alert reached Alertmanager.

Every answer is read within the call's timeout and up to BODY_MAX bytes, and whatever
fails on the way is an AlertmanagerError (a SinkError) in one line.
"""

import datetime
import http.client
import json
import logging
import re
import time
import urllib.error
import urllib.parse
import urllib.request

from ..alerts import ANSWERS, Alert
from ..errors import KiriError
from ..ground import connection_problem, http_url_problem, is_finite_number, one_line, read_capped
from ..outbox import RefusedError, Sink, SinkError

log = logging.getLogger("kiri.alertmanager")

ALERTNAME = "KiriAnomaly"
CRITICAL_RATIO = 3.0                    # an atom's score at least this many times its threshold
ENDS_AHEAD = 600                        # seconds a firing alert's endsAt is ahead (at least 4 ticks)
BODY_MAX = 4 * 2 ** 20                  # bytes of one answer (the silences list); more is refused, not read
TRANSIENT_STATUSES = (408, 429)         # besides 5xx: a timeout, flood control
SILENCE_ANSWERS = "Silencing this alert in Alertmanager tells KIRI: Dismiss (keep quiet about ones like it)."


class AlertmanagerError(SinkError):
    """A call that failed and is worth retrying: no connection, a timeout, 5xx, 429, a malformed answer."""


class AlertmanagerRefused(AlertmanagerError, RefusedError):
    """Alertmanager refused the request (400, 404, a redirect): retrying it as is will not help soon."""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an error: urllib would turn the POST into a GET that 'succeeds', and the alert
    would be lost without a word."""

    def redirect_request(self, *args, **kwargs):
        return None


class Alertmanager(Sink):
    """The Alertmanager Sink: one Alertmanager at `url`, alerts linking to the dashboard at `web_url`.

    host_of: atom -> the host label (settings.host_of); cooldown: alert_cooldown, seconds an
    alert goes on after its last repeat; ahead: seconds a firing alert's endsAt is ahead;
    clock: the wall time (time.time); opener: like urllib's OpenerDirector (tests).
    """
    name = "alertmanager"

    def __init__(self, url, web_url, host_of, cooldown, ahead=ENDS_AHEAD, timeout=10, clock=time.time, opener=None):
        for what, address in (("alertmanager_url", url), ("web_url", web_url)):
            problem = http_url_problem(address) if isinstance(address, str) else "must be text"
            if problem:
                raise KiriError(f"alertmanager: the address ({what}) {problem}")
        self.url, self.web_url = url.rstrip("/"), web_url.rstrip("/")
        self.host_of, self.cooldown, self.ahead = host_of, cooldown, ahead
        self.timeout, self.clock = timeout, clock
        self.opener = opener if opener is not None else urllib.request.build_opener(_NoRedirect)
        self.host = urllib.parse.urlsplit(url).netloc

    def __repr__(self):
        return f"Alertmanager(url={self.url!r})"

    # -- the Sink -----------------------------------------------------------------

    def send(self, alert):
        now = self.clock()
        self.post([self.postable(alert, now + self.ahead)])
        return alert.id

    def answers(self, store):
        """Re-post the alerts that go on, resolve the ones that ended, and record a new silence over
        an open alert as its Dismiss; return [(alert_id, "dismiss", replaced)].

        Called every cycle by the daemon, after delivering. A failure raises (one line in the
        log) and loses nothing: the next call posts from the store again."""
        now = self.clock()
        posted = self.posted_alerts(store, since=now - self.cooldown - self.ahead)
        if not posted:
            return []
        self.post([self.postable(Alert.from_json(a), self.ends_at(a, now)) for a in posted])
        return self.dismiss_silenced(store, [a for a in posted if a["state"] == "open"])

    def posted_alerts(self, store, since):
        """Alert rows last seen at or after `since` that the outbox has delivered here."""
        return [a for a in store.alerts(active_since=since, limit=None)
                if store.message_alert(self.name, a["id"]) == a["id"]]

    def ends_at(self, alert, now):
        """A going-on alert ends `ahead` from now unless posted again; one that is over, when last seen."""
        going_on = alert["last_ts"] >= now - self.cooldown
        return now + self.ahead if going_on else alert["last_ts"]

    # -- what is sent ---------------------------------------------------------------

    def labels(self, alert):
        labels = {"alertname": ALERTNAME, "host": self.host_of(alert.atom), "atom": alert.atom,
                  "alert_id": str(alert.id), "severity": severity(alert.scores)}
        if alert.situation:   # an empty label is no label to Alertmanager
            labels["situation"] = alert.situation
        return labels

    def postable(self, alert, ends_at):
        """One postableAlert (Alertmanager's API v2) for an Alert, ending at ends_at."""
        started = alert.ts or self.clock()   # `kiri alerts test` makes its Alert without a time
        # endsAt before startsAt is a 400; a wall clock stepped back an hour must not make it one.
        return {"labels": self.labels(alert), "annotations": annotations(alert.message),
                "startsAt": rfc3339(started), "endsAt": rfc3339(max(ends_at, started)),
                "generatorURL": f"{self.web_url}/alerts/{alert.id}"}

    # -- silences -------------------------------------------------------------------

    def dismiss_silenced(self, store, alerts):
        """Dismiss each open alert an active silence covers that was set after the alert began."""
        if not alerts:
            return []
        silences = [s for s in self.silences() if s["state"] == "active"]
        answers = []
        for alert in alerts:
            labels = self.labels(Alert.from_json(alert))
            silence = next((s for s in silences if s["set_at"] >= alert["ts"] and covers(s["matchers"], labels)), None)
            if silence is None:
                continue
            if (store.alert(alert["id"]) or {}).get("state") != "open":
                continue   # answered elsewhere since it was read: the owner's own answer stands
            replaced = store.add_feedback(alert["id"], "dismiss")
            log.info("alert %s is silenced in Alertmanager (silence %s by %s): dismiss",
                     alert["id"], silence["id"], silence["by"])
            answers.append((alert["id"], "dismiss", replaced))
        return answers

    def silences(self):
        """Every silence Alertmanager holds, each {id, state, set_at, by, matchers}."""
        what = "GET /api/v2/silences"
        answer = self.call("GET", "/api/v2/silences")
        if not isinstance(answer, list):
            raise AlertmanagerError(f"alertmanager: {what}: the answer is not a list of silences")
        return [_silence(s, i, what) for i, s in enumerate(answer)]

    # -- HTTP -------------------------------------------------------------------------

    def post(self, alerts):
        self.call("POST", "/api/v2/alerts", alerts)

    def call(self, method, path, body=None):
        """`method` url+path with `body` as JSON; the decoded JSON answer (None when empty), or an AlertmanagerError."""
        what = f"{method} {path}"
        data = None if body is None else json.dumps(body, ensure_ascii=False).encode("utf-8")
        request = urllib.request.Request(self.url + path, data=data, method=method, headers={
            "Content-Type": "application/json; charset=utf-8", "Accept": "application/json"})
        status, answer, headers = self._exchange(request, what)
        if not 200 <= status < 300:
            raise _failure(what, status, answer, headers)
        try:
            return json.loads(answer.decode("utf-8")) if answer.strip() else None
        except (ValueError, RecursionError):   # not UTF-8, not JSON, or nested too deep to parse
            raise AlertmanagerError(f"alertmanager: {what}: malformed JSON from {self.host}") from None

    def _exchange(self, request, what):
        """(status, body, headers) of one request, its body read by the deadline and within BODY_MAX."""
        deadline = time.monotonic() + self.timeout   # for the whole call, however slowly the answer comes
        try:
            with self.opener.open(request, timeout=self.timeout) as response:
                return response.status, read_capped(response, BODY_MAX, deadline), response.headers
        except urllib.error.HTTPError as error:
            with error:   # it holds the open connection
                try:
                    body = read_capped(error, BODY_MAX, deadline)
                except (OSError, http.client.HTTPException):
                    body = b""   # an error's words are a courtesy; its status says what happened
                return error.code, body, error.headers or {}
        except (OSError, http.client.HTTPException) as error:
            # No connection (a URLError, with the cause in .reason), a timeout or reset while
            # reading, the deadline passed or the answer over BODY_MAX (read_capped).
            reason = error.reason if isinstance(error, urllib.error.URLError) else error
            problem = connection_problem(reason, self.host, self.timeout)
            raise AlertmanagerError(f"alertmanager: {what}: {one_line(problem)}") from None
        except ValueError as error:   # an address urllib cannot use after all
            raise AlertmanagerRefused(f"alertmanager: {what}: cannot make the request: {one_line(error)}") from None


def _failure(what, status, body, headers):
    """The error for an answer with HTTP `status`: retried soon for 5xx, 408 and 429 (after its
    Retry-After), kept and retried much later for the rest: a refusal, or a redirect."""
    if 300 <= status < 400:
        where = one_line(headers.get("Location") or "?", 100)
        return AlertmanagerRefused(f"alertmanager: {what}: HTTP {status}, redirected to {where};"
                                   " set alertmanager_url to the address it names")
    words = _words(body)
    message = f"alertmanager: {what}: HTTP {status}" + (f": {words}" if words else "")
    if status >= 500 or status in TRANSIENT_STATUSES:
        retry_after = _seconds(headers.get("Retry-After")) if status == 429 else None
        return AlertmanagerError(message, retry_after=retry_after)
    return AlertmanagerRefused(message)


def _words(body):
    """Alertmanager's own words in an error answer: a JSON string, {"message": …}, or plain text."""
    try:
        answer = json.loads(body.decode("utf-8"))
    except (ValueError, RecursionError):
        answer = body.decode("utf-8", "replace")
    if isinstance(answer, dict):
        answer = answer.get("message", "")
    return one_line(answer) if isinstance(answer, str) else ""


def _seconds(header):
    """A Retry-After of seconds as a float, else None (the outbox checks the number)."""
    try:
        return float(header)
    except (TypeError, ValueError):
        return None


# -- the words and the numbers ---------------------------------------------------------

def annotations(message):
    """summary: the alert's first line, as every sink words it; description: the rest, field by
    field, ending with what a silence does (Telegram's Approve / Dismiss line has no buttons here)."""
    text = message[:-len(ANSWERS)] if message.endswith(ANSWERS) else message
    summary, _, rest = text.strip().partition("\n")
    return {"summary": summary, "description": (rest.strip() + "\n\n" + SILENCE_ANSWERS).strip()}


def severity(scores):
    """'critical' when an atom's score is at least CRITICAL_RATIO times its threshold, else 'warning'."""
    ratios = [s.ratio for s in scores if is_finite_number(s.ratio)]
    return "critical" if ratios and max(ratios) >= CRITICAL_RATIO else "warning"


def rfc3339(ts):
    """A Unix time as RFC 3339 in UTC, to the millisecond: '2024-01-08T13:00:00.000Z'."""
    moment = datetime.datetime.fromtimestamp(ts, datetime.timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


RFC3339 = re.compile(r"(\d{4}-\d\d-\d\d)[Tt ](\d\d:\d\d:\d\d)(\.\d+)?([Zz]|[+-]\d\d:\d\d)\Z")


def parse_rfc3339(text):
    """The Unix time of an RFC 3339 time as Alertmanager writes it (nanoseconds, Z), else None."""
    match = RFC3339.match(text) if isinstance(text, str) else None
    if match is None:
        return None
    day, clock, fraction, zone = match.groups()
    zone = "+00:00" if zone in "Zz" else zone
    try:
        moment = datetime.datetime.strptime(f"{day}T{clock}{zone.replace(':', '')}", "%Y-%m-%dT%H:%M:%S%z")
    except ValueError:   # a month 13, a day 31 of June
        return None
    return moment.timestamp() + float(fraction or 0)


# -- silences --------------------------------------------------------------------------

def _silence(silence, index, what):
    """A silence from Alertmanager's answer, checked: {id, state, set_at, by, matchers}.

    set_at is updatedAt, when it was created or last changed (the API has no creation time;
    Alertmanager moves a startsAt in the past to the time it was set)."""
    def malformed(why):
        return AlertmanagerError(f"alertmanager: {what}: malformed silence {index}: {why}")

    if not isinstance(silence, dict):
        raise malformed("not an object")
    status = silence.get("status")
    state = status.get("state") if isinstance(status, dict) else None
    set_at = parse_rfc3339(silence.get("updatedAt"))
    matchers = silence.get("matchers")
    if not isinstance(state, str):
        raise malformed("no status.state")
    if set_at is None:
        raise malformed("no updatedAt time")
    if not isinstance(matchers, list) or not matchers:
        raise malformed("no matchers")
    return {"id": one_line(silence.get("id", "?"), 40), "state": state, "set_at": set_at,
            "by": one_line(silence.get("createdBy", "?"), 40), "matchers": [_matcher(m, malformed) for m in matchers]}


def _matcher(matcher, malformed):
    """{name, value, isRegex, isEqual} checked, with the regex compiled (None when Python cannot read it)."""
    if not isinstance(matcher, dict) or not isinstance(matcher.get("name"), str) \
            or not isinstance(matcher.get("value"), str) or not isinstance(matcher.get("isRegex"), bool) \
            or not isinstance(matcher.get("isEqual", True), bool):
        raise malformed("a matcher is not {name, value, isRegex, isEqual}")
    pattern = None
    if matcher["isRegex"]:
        try:
            pattern = re.compile(matcher["value"])
        except (re.error, RecursionError, OverflowError):
            pattern = None   # RE2 syntax Python lacks: the silence covers nothing KIRI can tell
    return dict(matcher, isEqual=matcher.get("isEqual", True), pattern=pattern)


def covers(matchers, labels):
    """Whether a silence's matchers all hold for `labels`, as Alertmanager decides: a missing label
    is the empty string, a regex must match the whole value, isEqual false negates."""
    return all(_holds(m, labels) for m in matchers)


def _holds(matcher, labels):
    value = labels.get(matcher["name"], "")
    if matcher["isRegex"]:
        if matcher["pattern"] is None:
            return False   # unreadable, so even its negation is not known to hold
        found = matcher["pattern"].fullmatch(value) is not None
    else:
        found = value == matcher["value"]
    return found == matcher["isEqual"]


# -- setup -------------------------------------------------------------------------------

def from_settings(settings, clock=time.time):
    """An Alertmanager sink from alertmanager_url (None when it is not set), linking to web_url
    (or http://web_bind); a firing alert's endsAt is ENDS_AHEAD on, or 4 ticks if that is longer."""
    url = settings.http_url("alertmanager_url")
    if not url:
        return None
    ahead = max(ENDS_AHEAD, 4 * settings.number("tick"))
    return Alertmanager(url, settings.web_url, settings.host_of, settings.number("alert_cooldown"), ahead=ahead, clock=clock)
