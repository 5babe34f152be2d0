"""Telegram: alerts with Approve / Dismiss buttons, and the user's answers back (urllib only).

    bot = from_settings(settings)              # None when Telegram is not configured
    deliver(store, bot, now=time.time())       # send what the outbox holds
    poll(store, bot)                           # read button presses into store.feedback

Sending goes through the store's outbox: a message is enqueued once (its dedup key),
and deliver() keeps trying until Telegram has it. The outbox table is the whole
state, so a restarted process just calls deliver() again.

The bot's token is a password: it is part of every request URL, and urllib puts the
URL into its errors. No exception, repr or log line made here contains it.
"""

import http.client
import json
import logging
import re
import socket
import urllib.error
import urllib.parse
import urllib.request

from kiri.errors import KiriError

log = logging.getLogger("kiri.telegram")

DEFAULT_API = "https://api.telegram.org"
OFFSET_KEY = "telegram.offset"          # store kv: the next update_id getUpdates should return
CALLBACK_DATA_MAX = 64                  # bytes, UTF-8 (Bot API: callback_data is 1-64 bytes)
TEXT_MAX = 4096                         # sendMessage / editMessageText text limit
FIRST_BACKOFF = 30.0                    # seconds before the first retry of a failed send
MAX_BACKOFF = 3600.0                    # the backoff doubles per failure up to this
PERMANENT_RETRY = 6 * 3600.0            # a refused message (bad chat, blocked bot) is retried this late
VERDICTS = {"approve": "approved", "dismiss": "dismissed"}
CALLBACK = re.compile(r"fb:([0-9]{1,19}):(approve|dismiss)\Z")
# HTTP statuses worth retrying soon: flood control, request timeout, another poller (409).
TRANSIENT_STATUSES = (408, 409, 429)


class TelegramError(KiriError):
    """A Bot API call that failed; the message never contains the bot's token."""

    def __init__(self, message, retry_after=None, method=None, error_code=None, description=None):
        super().__init__(message)
        self.retry_after = retry_after    # seconds Telegram asked us to wait (429), else None
        self.method = method
        self.error_code = error_code      # Telegram's error_code / the HTTP status, if there was one
        self.description = description   # Telegram's own words, e.g. "Bad Request: chat not found"


class TransientError(TelegramError):
    """Worth retrying: no connection, a timeout, 5xx, 429 (see retry_after), malformed answers."""


class PermanentError(TelegramError):
    """Telegram refused the request (400, 401, 403, 404, ...): retrying as is will not help soon."""


class TelegramBot:
    """A client of the Bot API for one bot (token) talking to one chat (chat_id).

    opener: anything with urllib's OpenerDirector.open(request, timeout=...); the default
    is urllib.request.build_opener() (which honours the usual *_proxy variables).
    """

    def __init__(self, token, chat_id, api=DEFAULT_API, timeout=10, opener=None):
        if not token or not isinstance(token, str) or any(c.isspace() or c == "/" for c in token):
            raise KiriError("telegram: the bot token must be one word like 123456:ABC-DEF...")
        parts = urllib.parse.urlsplit(api)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise KiriError("telegram: the API address must start with https:// (or http://) and name a host")
        if "@" in parts.netloc:
            raise KiriError("telegram: the API address must not hold a user or password")
        self._token = token
        self.chat_id = chat_id
        self.api = api.rstrip("/")
        self.timeout = timeout
        self.opener = opener if opener is not None else urllib.request.build_opener()
        self._host = parts.netloc

    def __repr__(self):
        return "TelegramBot(api=%r, chat_id=%r, token=<hidden>)" % (self.api, self.chat_id)

    def _scrub(self, text):
        """text with every spelling of the token replaced by <token>."""
        text = str(text)
        for spelling in {self._token, urllib.parse.quote(self._token, safe=""),
                         urllib.parse.quote(self._token)}:
            text = text.replace(spelling, "<token>")
        return text

    # -- the one HTTP call ---------------------------------------------------

    def call(self, method, **params):
        """POST params as JSON to {api}/bot<token>/{method}; return the envelope's result.

        Raises TransientError or PermanentError (both TelegramError). A getUpdates
        `timeout` (long polling) is added to the socket timeout, so the wait is not
        mistaken for a dead connection.
        """
        wait = params.get("timeout")
        socket_timeout = self.timeout + (wait if isinstance(wait, (int, float)) and wait > 0 else 0)
        url = "%s/bot%s/%s" % (self.api, urllib.parse.quote(self._token, safe=":"), method)
        data = json.dumps(params, ensure_ascii=False).encode("utf-8")
        request = urllib.request.Request(url, data=data, method="POST", headers={
            "Content-Type": "application/json; charset=utf-8", "Accept": "application/json"})
        # The exception is built inside the handlers but raised after them, so it has no
        # __context__ pointing at urllib's error (which holds the URL, and so the token).
        status, body, header_retry, failure, refused = None, b"", None, None, None
        try:
            with self.opener.open(request, timeout=socket_timeout) as response:
                status = response.status
                body = response.read()
        except urllib.error.HTTPError as error:
            with error:  # it holds the open connection
                status = error.code
                header_retry = error.headers.get("Retry-After") if error.headers else None
                try:
                    body = error.read()
                except (OSError, http.client.HTTPException):
                    body = b""
        except urllib.error.URLError as error:
            failure = self._connection_message(error.reason, socket_timeout)
        except (OSError, http.client.HTTPException) as error:
            # Failures after the connection was made (a timeout or reset while reading).
            failure = self._connection_message(error, socket_timeout)
        except ValueError as error:
            # A URL urllib cannot use (http.client.InvalidURL); its message may quote the URL.
            refused = "telegram: %s: cannot make the request: %s" % (method, self._scrub(error))
        if failure is not None:
            raise TransientError("telegram: %s: %s" % (method, failure), method=method)
        if refused is not None:
            raise PermanentError(refused, method=method)
        return self._result(method, status, body, header_retry)

    def _connection_message(self, reason, timeout):
        if isinstance(reason, (socket.timeout, TimeoutError)):
            return "no answer from %s within %s s" % (self._host, timeout)
        if isinstance(reason, ConnectionRefusedError):
            return "connection refused by %s" % self._host
        if isinstance(reason, socket.gaierror):
            return "cannot resolve the address of %s" % self._host
        return "cannot reach %s: %s" % (self._host, self._scrub(reason))

    def _result(self, method, status, body, header_retry):
        try:
            envelope = json.loads(body.decode("utf-8"))
            if not isinstance(envelope, dict) or "ok" not in envelope:
                raise ValueError("not a Bot API envelope")
        except ValueError:  # includes UnicodeDecodeError and json.JSONDecodeError
            envelope = None
        if envelope is not None and envelope["ok"] is True:
            if "result" not in envelope:
                raise TransientError("telegram: %s: answer without a result" % method, method=method)
            return envelope["result"]
        if envelope is None and status is not None and status < 400:
            raise TransientError("telegram: %s: malformed answer from %s (HTTP %s)"
                                 % (method, self._host, status), method=method)

        envelope = envelope or {}
        code = envelope.get("error_code")
        if isinstance(code, bool) or not isinstance(code, int):
            code = status if status is not None and status >= 400 else None
        description = self._scrub(envelope.get("description") or "no description")
        parameters = envelope.get("parameters")
        retry_after = _retry_after(parameters.get("retry_after") if isinstance(parameters, dict) else None,
                                   description, header_retry) if code == 429 else None
        message = "telegram: %s: %s %s" % (method, "HTTP %s:" % code if code else "error:", description)
        kind = TransientError if code is None or code >= 500 or code in TRANSIENT_STATUSES else PermanentError
        raise kind(message, retry_after=retry_after, method=method, error_code=code, description=description)

    # -- the calls KIRI makes --------------------------------------------------

    def send_alert(self, text, alert_id=None):
        """Send text to the chat with Approve / Dismiss buttons for alert_id; return the message_id.

        Plain text (no parse_mode), so nothing needs escaping. With alert_id None the
        message has no buttons.
        """
        params = {"chat_id": self.chat_id, "text": _fit(text),
                  "link_preview_options": {"is_disabled": True}}
        if alert_id is not None:
            params["reply_markup"] = {"inline_keyboard": [[
                {"text": "Approve", "callback_data": callback_data(alert_id, "approve")},
                {"text": "Dismiss", "callback_data": callback_data(alert_id, "dismiss")},
            ]]}
        message = self.call("sendMessage", **params)
        message_id = message.get("message_id") if isinstance(message, dict) else None
        if isinstance(message_id, bool) or not isinstance(message_id, int):
            raise TransientError("telegram: sendMessage: answer without a message_id", method="sendMessage")
        return message_id

    def answer_callback(self, callback_query_id, text=""):
        """Answer a button press (the toast the user sees); every press must be answered."""
        return self.call("answerCallbackQuery", callback_query_id=callback_query_id, text=text[:200])

    def mark_answered(self, message_id, text):
        """Replace the message's text with `text` (the alert plus the answer) and drop its buttons.

        editMessageText without a reply_markup removes the inline keyboard, so the chat
        keeps a record of the answer and cannot be answered twice by accident. Editing
        to the same text ("message is not modified") counts as success.
        """
        try:
            return self.call("editMessageText", chat_id=self.chat_id, message_id=message_id,
                             text=_fit(text), link_preview_options={"is_disabled": True})
        except PermanentError as error:
            if "message is not modified" in (error.description or ""):
                return None
            raise

    def get_updates(self, offset=None, timeout=0, limit=100):
        """Updates (button presses only) from offset on; timeout > 0 long-polls that many seconds."""
        params = {"timeout": timeout, "limit": limit, "allowed_updates": ["callback_query"]}
        if offset is not None:
            params["offset"] = offset
        updates = self.call("getUpdates", **params)
        if not isinstance(updates, list):
            raise TransientError("telegram: getUpdates: result is not a list", method="getUpdates")
        return updates


def _retry_after(value, description, header):
    """Seconds to wait after a 429: parameters.retry_after, else the description, else the header."""
    candidates = [value]
    match = re.search(r"retry after (\d+)", description or "", re.IGNORECASE)
    candidates.append(match.group(1) if match else None)
    candidates.append(header)
    for candidate in candidates:
        try:
            seconds = float(candidate)
        except (TypeError, ValueError):
            continue
        if seconds >= 0 and seconds == seconds and seconds != float("inf"):
            return seconds
    return None


def _utf16_length(text):
    return len(text.encode("utf-16-le")) // 2


def _fit(text):
    """text cut to Telegram's limit (counted in UTF-16 units, as an emoji counts twice), ending in …"""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("telegram: message text must be a non-empty string")
    if _utf16_length(text) <= TEXT_MAX:
        return text
    cut = text[:TEXT_MAX - 1]
    while _utf16_length(cut) > TEXT_MAX - 1:
        cut = cut[:len(cut) - (_utf16_length(cut) - (TEXT_MAX - 1))]  # a character is 1 or 2 units
    return cut + "…"


def callback_data(alert_id, verdict):
    """The button payload 'fb:<alert_id>:<verdict>'; checked against Telegram's 64-byte limit."""
    if isinstance(alert_id, bool) or not isinstance(alert_id, int) or alert_id < 0:
        raise ValueError("telegram: alert_id must be a non-negative integer, got %r" % (alert_id,))
    if verdict not in VERDICTS:
        raise ValueError("telegram: verdict must be approve or dismiss, got %r" % (verdict,))
    data = "fb:%d:%s" % (alert_id, verdict)
    if len(data.encode("utf-8")) > CALLBACK_DATA_MAX:
        raise ValueError("telegram: callback data %r is longer than %d bytes" % (data, CALLBACK_DATA_MAX))
    return data


def parse_callback_data(data):
    """(alert_id, verdict) from 'fb:<id>:approve|dismiss', else None."""
    match = CALLBACK.match(data) if isinstance(data, str) else None
    return (int(match.group(1)), match.group(2)) if match else None


def from_settings(settings):
    """A TelegramBot from telegram_token / telegram_chat_id / telegram_api, or None if unset."""
    token = settings.get("telegram_token").strip()
    chat = settings.get("telegram_chat_id").strip()
    if not token or not chat:
        return None
    chat_id = int(chat) if re.match(r"-?[0-9]+\Z", chat) else chat  # else @channelusername
    return TelegramBot(token, chat_id, api=settings.get("telegram_api").strip() or DEFAULT_API)


# ----------------------------------------------------------------------------
# The outbox: at-least-once delivery that survives restarts

def backoff(attempts, retry_after=None):
    """Seconds until the next try after a transient failure.

    attempts: how many tries had failed before this one. 30 s, 60 s, 120 s, ... up to
    an hour; Telegram's retry_after (flood control), when given, wins.
    """
    if retry_after is not None:
        return float(retry_after)
    return min(MAX_BACKOFF, FIRST_BACKOFF * 2 ** min(max(int(attempts), 0), 20))


def deliver(store, bot, now, sink="telegram"):
    """Send every due outbox row of sink; return (sent, failed).

    Each row's payload is {"text": ..., "alert_id": ...}. Sent rows are marked sent with
    their message id right after Telegram answers, before anything else happens. A
    transient failure retries later (backoff()), and ends this round: the remaining rows
    wait for the next call instead of each timing out on a dead network or piling into
    flood control. A refused message is kept and retried after PERMANENT_RETRY, with
    the error recorded, so nothing is ever dropped. If Telegram received a message but
    its answer was lost, the row is retried and the message arrives twice: delivery is
    at-least-once, never at-most-once. Run one deliverer per sink (the daemon).
    """
    sent = failed = 0
    for row in store.outbox_due(sink, now):
        payload = row.get("payload") if isinstance(row.get("payload"), dict) else {}
        alert_id = payload.get("alert_id", row.get("alert_id"))
        try:
            if not isinstance(payload.get("text"), str) or not payload["text"].strip():
                raise PermanentError("telegram: outbox row %s has no text to send" % row["id"])
            try:
                message_id = bot.send_alert(payload["text"], alert_id)
            except ValueError as error:  # a payload send_alert cannot form (bad alert_id)
                raise PermanentError("telegram: outbox row %s: %s" % (row["id"], error)) from None
        except TransientError as error:
            store.outbox_failed(row["id"], str(error), now + backoff(row.get("attempts", 0), error.retry_after))
            log.warning("outbox row %s not sent, will retry: %s", row["id"], error)
            return sent, failed + 1
        except PermanentError as error:
            store.outbox_failed(row["id"], str(error), now + PERMANENT_RETRY)
            log.error("outbox row %s refused, kept and retried in %d h: %s",
                      row["id"], PERMANENT_RETRY // 3600, error)
            failed += 1
            continue
        try:
            store.outbox_sent(row["id"], message_id=message_id, ts=now)
        except Exception:
            log.error("outbox row %s was sent as message %s but could not be marked sent;"
                      " it may be sent again", row["id"], message_id)
            raise
        sent += 1
    return sent, failed


# ----------------------------------------------------------------------------
# Button presses back into feedback

def poll(store, bot, timeout=0, sink="telegram"):
    """Read button presses since the saved offset into feedback; return [(alert_id, verdict, replaced)].

    Presses from another chat, unknown button data and unknown alerts are logged and
    skipped; nothing in an update can make this raise. Only a failing getUpdates raises
    (TelegramError). The offset is saved after each update, so none is processed twice.
    timeout > 0 long-polls that many seconds (the daemon's loop); 0 returns at once.
    """
    offset = store.get_kv(OFFSET_KEY)
    updates = bot.get_updates(offset, timeout)
    answers = []
    for update in updates:
        update_id = update.get("update_id") if isinstance(update, dict) else None
        if isinstance(update_id, bool) or not isinstance(update_id, int):
            log.warning("ignored an update without an update_id")
            continue
        answer = _handle(store, bot, update, sink)
        if answer is not None:
            answers.append(answer)
        if offset is None or update_id + 1 > offset:
            offset = update_id + 1
            store.set_kv(OFFSET_KEY, offset)
    return answers


def _same_chat(chat, configured):
    if not isinstance(chat, dict):
        return False
    if str(chat.get("id")) == str(configured):
        return True
    username = chat.get("username")
    return isinstance(configured, str) and bool(username) and configured.lower() == "@" + username.lower()


def _handle(store, bot, update, sink):
    query = update.get("callback_query")
    if not isinstance(query, dict):
        log.info("ignored update %s: not a button press", update["update_id"])
        return None
    message = query.get("message") if isinstance(query.get("message"), dict) else {}
    # Only the configured chat may answer: the buttons were sent there, and nobody else.
    if not _same_chat(message.get("chat"), bot.chat_id):
        chat = message.get("chat") if isinstance(message.get("chat"), dict) else {}
        log.warning("ignored a button press from chat %r (not the configured chat)", chat.get("id"))
        return None
    query_id = query.get("id")
    parsed = parse_callback_data(query.get("data"))
    if parsed is None:
        log.warning("ignored a button press with unknown data %r", str(query.get("data"))[:80])
        _answer_quietly(bot, query_id, "KIRI does not know this button")
        return None
    alert_id, verdict = parsed
    message_id = message.get("message_id")
    sent_for = store.message_alert(sink, message_id) if message_id is not None else None
    if sent_for is not None and sent_for != alert_id:
        log.warning("ignored a %s for alert %s under message %s, which carried alert %s",
                    verdict, alert_id, message_id, sent_for)
        _answer_quietly(bot, query_id, "This button does not belong to this message")
        return None
    try:
        replaced = store.add_feedback(alert_id, verdict)
    except KeyError:
        log.warning("ignored a %s for unknown alert %s", verdict, alert_id)
        _answer_quietly(bot, query_id, "KIRI does not know alert %d" % alert_id)
        return None
    answer = (alert_id, verdict, replaced)
    past = VERDICTS[verdict]
    tail = "replaced your earlier answer" if replaced else "KIRI will learn from it"
    _answer_quietly(bot, query_id, "Thanks — %s; %s" % (past, tail))

    if isinstance(message_id, int) and not isinstance(message_id, bool):
        original = message.get("text")
        if not isinstance(original, str) or not original:
            alert = store.alert(alert_id)
            original = (alert or {}).get("message") or "KIRI alert %d" % alert_id
        suffix = "\n\nAnswered: %s." % past
        try:
            bot.mark_answered(message_id, original[:TEXT_MAX - 2 * len(suffix)] + suffix)
        except TelegramError as error:  # the feedback is stored; only the buttons stay
            log.warning("could not mark message %s answered: %s", message_id, error)
    return answer


def _answer_quietly(bot, query_id, text):
    if not isinstance(query_id, str) or not query_id:
        return
    try:
        bot.answer_callback(query_id, text)
    except TelegramError as error:
        # Commonly "query is too old" when a press waited too long: the toast is lost, nothing else.
        log.warning("could not answer button press: %s", error)


# ----------------------------------------------------------------------------
# The words of an alert

MAX_LINES = 10  # surprising readings listed per atom; the rest are counted


def _number(x):
    x = float(x)
    if x == int(x) and abs(x) < 1e15:
        return "%d" % x
    digits = 0 if abs(x) >= 100 else 1 if abs(x) >= 10 else 2
    return ("%.*f" % (digits, x)).rstrip("0").rstrip(".")


def _with_unit(value, unit):
    if not unit:
        return value
    # "95%", "20°C" stick to the number; words get a space: "12 GB", "3 commits".
    return value + unit if not unit[0].isalnum() else value + " " + unit


def _token_line(token, labels):
    field = token.get("field")
    name, unit = labels.get(field, (field or "", "")) if field is not None else ("", "")
    parts = []
    if name:
        parts.append(name)
    value = token.get("value")
    if value is not None:
        try:
            parts.append(_with_unit(_number(value), unit))
        except (TypeError, ValueError, OverflowError):
            parts.append(str(value))
    expected = token.get("expected")
    code = str(token.get("token", "?"))
    why = "%s, expected %s" % (code, expected) if expected not in (None, "", code) else code
    return "%s (%s)" % (" ".join(parts), why) if parts else why


def format_alert(scores, labels=None, host=None):
    """An alert in words, plain text, from atoms' score dicts.

    scores: [{"atom": "pulse", "score": 7.9, "threshold": 2.0, "tokens": [{"token": "C9",
    "surprise": 10.2, "expected": "C1", "field": "C", "value": 95.0}, ...]}, ...].
    labels: {"C": ("CPU", "%"), ...} for every atom, or {"pulse": {"C": ("CPU", "%")}, ...}
    per atom. Only the surprising readings (surprise > max(2, threshold)) are listed; a
    score dict's "likelihood" over its "unusual_at" adds a line that the recent readings,
    together, are unusual.
    """
    if isinstance(scores, dict):
        scores = [scores]
    if not scores:
        raise ValueError("format_alert: no scores to describe")
    labels = labels or {}
    blocks = []
    for i, score in enumerate(scores):
        atom = score.get("atom", "?")
        per_atom = labels.get(atom)
        field_labels = per_atom if isinstance(per_atom, dict) else labels
        value, threshold = score.get("score"), score.get("threshold")
        numbers = []
        if value is not None:
            numbers.append("score %.1f" % value)
            if threshold:
                numbers.append("%.1f× its threshold" % (value / threshold))
        head = "%s is unusual%s" % (atom, " (%s)" % ", ".join(numbers) if numbers else "")
        if i == 0:
            head = "KIRI alert%s: %s" % (" on %s" % host if host else "", head)
        bar = max(2.0, threshold or 0.0)
        surprising = [t for t in score.get("tokens") or []
                      if isinstance(t, dict) and (t.get("surprise") or 0) > bar]
        lines = [head] + [_token_line(t, field_labels) for t in surprising[:MAX_LINES]]
        if len(surprising) > MAX_LINES:
            lines.append("…and %d more unusual readings" % (len(surprising) - MAX_LINES))
        likelihood, unusual_at = score.get("likelihood"), score.get("unusual_at")
        if likelihood is not None and unusual_at and likelihood > unusual_at:
            lines.append("its recent readings are more surprising than usual, together "
                         "(likelihood %.2f, flagged above %.2f)" % (likelihood, unusual_at))
        elif not surprising:
            lines.append("no single reading stands out; together they are unusual")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
