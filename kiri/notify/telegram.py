"""Telegram: alerts with Approve / Dismiss buttons, and the owner's answers back (urllib only).

    sink = from_settings(settings)     # a TelegramBot, or None when Telegram is not configured
    sink.send(alert)                   # one message with buttons (the outbox calls this)
    sink.answers(store)                # button presses since the last call, stored as feedback

This module is the Bot API's transport only: what an alert says is kiri.alerts, how it
is retried across restarts is kiri.outbox. Every answer is read within the call's timeout
and up to BODY_MAX bytes, and whatever fails on the way is a TelegramError (a SinkError).

The bot's token is a password: it is part of every request URL, and urllib puts the
URL into its errors. No exception, repr or log line made here contains it.
"""

import contextlib
import http.client
import json
import logging
import re
import sqlite3
import time
import urllib.error
import urllib.parse
import urllib.request

from ..errors import KiriError
from ..ground import connection_problem, http_url_problem, one_line, read_capped
from ..outbox import RefusedError, Sink, SinkError
from ..store import VERDICTS

log = logging.getLogger("kiri.telegram")

DEFAULT_API = "https://api.telegram.org"
OFFSET_KEY = "telegram.offset"          # store kv: the next update_id getUpdates should return
CALLBACK_DATA_MAX = 64                  # bytes, UTF-8 (Bot API: callback_data is 1-64 bytes)
TEXT_MAX = 4096                         # sendMessage / editMessageText text limit
CALLBACK = re.compile(r"fb:([0-9]{1,19}):(approve|dismiss)\Z")
ID_MAX = 2 ** 63 - 1                    # the largest id SQLite (and Telegram's int64) can hold
# One update carries one message (4096 characters, its buttons and entities: under 100 KB),
# so a getUpdates answer of UPDATES_LIMIT of them stays well below BODY_MAX.
UPDATES_LIMIT = 25
BODY_MAX = 4 * 2 ** 20                  # bytes of one Bot API answer; more is refused, not read
# HTTP statuses worth retrying soon: flood control, request timeout, another poller (409).
TRANSIENT_STATUSES = (408, 409, 429)


class TelegramError(SinkError):
    """A Bot API call that failed; the message never contains the bot's token."""

    def __init__(self, message, retry_after=None, method=None, error_code=None, description=None):
        super().__init__(message, retry_after)   # retry_after: seconds Telegram asked us to wait (429)
        self.method = method
        self.error_code = error_code      # Telegram's error_code / the HTTP status, if there was one
        self.description = description   # Telegram's own words, e.g. "Bad Request: chat not found"


class TransientError(TelegramError):
    """Worth retrying: no connection, a timeout, 5xx, 429 (see retry_after), malformed answers."""


class PermanentError(TelegramError, RefusedError):
    """Telegram refused the request (400, 401, 403, 404, ...): retrying as is will not help soon."""


class TelegramBot(Sink):
    """A client of the Bot API for one bot (token) talking to one chat (chat_id), and the Telegram Sink.

    opener: anything with urllib's OpenerDirector.open(request, timeout=...); the default
    is urllib.request.build_opener() (which honours the usual *_proxy variables).
    """
    name = "telegram"

    def __init__(self, token, chat_id, api=DEFAULT_API, timeout=10, opener=None):
        if not token or not isinstance(token, str) or any(c.isspace() or c == "/" for c in token):
            raise KiriError("telegram: the bot token must be one word like 123456:ABC-DEF...")
        problem = http_url_problem(api) if isinstance(api, str) else "must be text"
        if problem:
            raise KiriError("telegram: the API address (telegram_api) " + problem)
        self._token = token
        self.chat_id = chat_id
        self.api = api.rstrip("/")
        self.timeout = timeout
        self.opener = opener if opener is not None else urllib.request.build_opener()
        self._host = urllib.parse.urlsplit(api).netloc

    def send(self, alert):
        return self.send_alert(alert.message, alert.id)

    def answers(self, store):
        return poll(store, self)

    def __repr__(self):
        return "TelegramBot(api=%r, chat_id=%r, token=<hidden>)" % (self.api, self.chat_id)

    def _words(self, text):
        """text as one short line with every spelling of the token replaced by <token>
        (replaced first: a cut must not leave part of the token behind)."""
        text = str(text)
        for spelling in {self._token, urllib.parse.quote(self._token, safe=""), urllib.parse.quote(self._token)}:
            text = text.replace(spelling, "<token>")
        return one_line(text)

    def call(self, method, **params):
        """POST params as JSON to {api}/bot<token>/{method}; return the result, or raise a TelegramError."""
        # A getUpdates `timeout` (long polling) is added, so its wait is not taken for a dead connection.
        wait = params.get("timeout")
        socket_timeout = self.timeout + (wait if isinstance(wait, (int, float)) and wait > 0 else 0)
        deadline = time.monotonic() + socket_timeout   # for the whole call, however slowly the answer comes
        url = "%s/bot%s/%s" % (self.api, urllib.parse.quote(self._token, safe=":"), method)
        data = json.dumps(params, ensure_ascii=False).encode("utf-8")
        request = urllib.request.Request(url, data=data, method="POST", headers={
            "Content-Type": "application/json; charset=utf-8", "Accept": "application/json"})
        # The exception is built inside the handlers but raised after them, so it has no
        # __context__ pointing at urllib's error (which holds the URL, and so the token).
        status, body, header_retry, problem = None, b"", None, None
        try:
            with self.opener.open(request, timeout=socket_timeout) as response:
                status = response.status
                body = read_capped(response, BODY_MAX, deadline)
        except urllib.error.HTTPError as error:
            with error:  # it holds the open connection
                status = error.code
                header_retry = error.headers.get("Retry-After") if error.headers else None
                with contextlib.suppress(OSError, http.client.HTTPException):
                    body = read_capped(error, BODY_MAX, deadline)
        except (OSError, http.client.HTTPException) as error:
            # No connection (a URLError, with the cause in .reason), a timeout or reset while
            # reading, the deadline passed or the answer over BODY_MAX (read_capped).
            reason = error.reason if isinstance(error, urllib.error.URLError) else error
            words = self._words(connection_problem(reason, self._host, socket_timeout))
            problem = TransientError("telegram: %s: %s" % (method, words), method=method)
        except ValueError as error:
            # A URL urllib cannot use; its message may quote the URL.
            problem = PermanentError("telegram: %s: cannot make the request: %s" % (method, self._words(error)),
                                     method=method)
        if problem is not None:
            raise problem
        return self._result(method, status, body, header_retry)

    def _result(self, method, status, body, header_retry):
        try:
            envelope = json.loads(body.decode("utf-8"))
        except (ValueError, RecursionError):  # not UTF-8, not JSON, or nested too deep to parse
            envelope = None
        if not isinstance(envelope, dict) or "ok" not in envelope:
            if status is not None and status < 400:
                raise TransientError("telegram: %s: malformed answer from %s (HTTP %s)"
                                     % (method, self._host, status), method=method)
            envelope = {}  # an HTTP error without a Bot API answer: its status tells the error
        if envelope.get("ok") is True:
            if "result" not in envelope:
                raise TransientError("telegram: %s: answer without a result" % method, method=method)
            return envelope["result"]

        code = envelope.get("error_code")
        if isinstance(code, bool) or not isinstance(code, int) or not 100 <= code <= 999:   # an HTTP status
            code = status if status is not None and status >= 400 else None
        description = self._words(envelope.get("description") or "no description")
        parameters = envelope.get("parameters") if isinstance(envelope.get("parameters"), dict) else {}
        retry_after = _retry_after(parameters.get("retry_after"), description, header_retry) if code == 429 else None
        message = "telegram: %s: %s %s" % (method, "HTTP %s:" % code if code else "error:", description)
        kind = TransientError if code is None or code >= 500 or code in TRANSIENT_STATUSES else PermanentError
        raise kind(message, retry_after=retry_after, method=method, error_code=code, description=description)

    def send_alert(self, text, alert_id=None):
        """Send text to the chat with Approve / Dismiss buttons for alert_id (none if it is None);
        return the message_id. Plain text (no parse_mode), so nothing needs escaping."""
        params = {"chat_id": self.chat_id, "text": _fit(text), "link_preview_options": {"is_disabled": True}}
        if alert_id is not None:
            buttons = [{"text": verdict.capitalize(), "callback_data": callback_data(alert_id, verdict)}
                       for verdict in ("approve", "dismiss")]
            params["reply_markup"] = {"inline_keyboard": [buttons]}
        message = self.call("sendMessage", **params)
        message_id = _id(message.get("message_id")) if isinstance(message, dict) else None
        if message_id is None:
            raise TransientError("telegram: sendMessage: answer without a message_id", method="sendMessage")
        return message_id

    def answer_callback(self, callback_query_id, text=""):
        """Answer a button press with a toast; every press must be answered, and a failure is only logged."""
        if not isinstance(callback_query_id, str) or not callback_query_id:
            return
        try:
            self.call("answerCallbackQuery", callback_query_id=callback_query_id, text=text[:200])
        except TelegramError as error:
            # Commonly "query is too old" when a press waited too long: the toast is lost, nothing else.
            log.warning("could not answer button press: %s", error)

    def mark_answered(self, message_id, text):
        """Replace the message's text with `text` (the alert plus the answer) and drop its buttons:
        editMessageText without a reply_markup removes them, so the chat keeps a record of the
        answer and cannot answer twice by accident. A failure is only logged: the answer is stored."""
        try:
            self.call("editMessageText", chat_id=self.chat_id, message_id=message_id,
                      text=_fit(text), link_preview_options={"is_disabled": True})
        except TelegramError as error:
            # Editing to the same text again (a repeated press) is no failure.
            unchanged = isinstance(error, PermanentError) and "message is not modified" in (error.description or "")
            if not unchanged:
                log.warning("could not mark message %s answered: %s", message_id, error)

    def get_updates(self, offset=None, timeout=0, limit=UPDATES_LIMIT):
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
    match = re.search(r"retry after (\d+)", description or "", re.IGNORECASE)
    for candidate in (value, match.group(1) if match else None, header):
        try:
            seconds = float(candidate)
        except (TypeError, ValueError):
            continue
        if 0 <= seconds < float("inf"):  # NaN fails both comparisons
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
    """(alert_id, verdict) from 'fb:<id>:approve|dismiss' with an id of 1..ID_MAX, else None."""
    match = CALLBACK.match(data) if isinstance(data, str) else None
    alert_id = _id(int(match.group(1))) if match else None   # 19 digits may be more than SQLite holds
    return (alert_id, match.group(2)) if alert_id is not None else None


def _id(value, low=1, high=ID_MAX):
    """value if it is a whole number from low to high (an id that came from Telegram), else None."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        return None
    return value


def from_settings(settings):
    """A TelegramBot from telegram_token / telegram_chat_id / telegram_api, or None if unset."""
    token = settings.get("telegram_token").strip()
    chat = settings.get("telegram_chat_id").strip()
    if not token or not chat:
        return None
    if re.match(r"-?[0-9]{1,19}\Z", chat) and abs(int(chat)) <= ID_MAX:
        chat_id = int(chat)
    elif re.match(r"@\w+\Z", chat):
        chat_id = chat   # a channel's @username
    else:
        raise KiriError("telegram: telegram_chat_id must be a number (a group's is negative) or @channelname")
    return TelegramBot(token, chat_id, api=settings.get("telegram_api").strip() or DEFAULT_API)


def poll(store, bot, timeout=0, sink="telegram"):
    """Read button presses since the saved offset into feedback; return [(alert_id, verdict, replaced)].

    Presses from another chat, unknown button data and unknown alerts are logged and skipped,
    and so is an update that cannot be handled for any other reason: one update never holds
    back the ones after it. Only a failing getUpdates (TelegramError) or a failing store
    raises. The offset is saved after each update, so none is processed twice. timeout > 0
    long-polls.
    """
    offset = _id(store.get_kv(OFFSET_KEY))   # a damaged offset: start from what Telegram still holds
    answers = []
    for update in bot.get_updates(offset, timeout):
        # Its offset (update_id + 1) must fit where it is kept.
        update_id = _id(update.get("update_id") if isinstance(update, dict) else None, 0, ID_MAX - 1)
        if update_id is None:
            log.warning("ignored an update without a valid update_id")
            continue
        try:
            answer = _handle(store, bot, update, sink)
        except sqlite3.OperationalError:
            raise   # the store failed (full, locked, read-only), not the update: it is read again next time
        except Exception as error:   # checked as it is, an update may still surprise: skip it, not the rest
            log.warning("skipped update %s, which could not be handled: %s",
                        update_id, one_line("%s: %s" % (type(error).__name__, error)))
            answer = None
        if answer is not None:
            answers.append(answer)
        if offset is None or update_id + 1 > offset:
            offset = update_id + 1
            store.set_kv(OFFSET_KEY, offset)
    return answers


def _handle(store, bot, update, sink):
    """One update. A press in the configured chat is stored, answered, and marked on its message."""
    query = update.get("callback_query")
    if not isinstance(query, dict):
        log.info("ignored update %s: not a button press", update["update_id"])
        return None
    message = query.get("message") if isinstance(query.get("message"), dict) else {}
    chat = message.get("chat") if isinstance(message.get("chat"), dict) else {}
    # Only the configured chat may answer: the buttons were sent there, and nobody else.
    if not _same_chat(chat, bot.chat_id):
        log.warning("ignored a button press from chat %s (not the configured chat)", one_line(repr(chat.get("id")), 40))
        return None
    message_id = _id(message.get("message_id"))
    answer, toast = _record(store, query.get("data"), message_id, sink)
    bot.answer_callback(query.get("id"), toast)
    if answer is not None and message_id is not None:
        alert_id, verdict, _ = answer
        text = message.get("text")
        if not isinstance(text, str) or not text:  # an old message: the stored alert's words instead
            text = (store.alert(alert_id) or {}).get("message") or "KIRI alert %d" % alert_id
        suffix = "\n\nAnswered: %s." % VERDICTS[verdict][1]
        bot.mark_answered(message_id, text[:TEXT_MAX - 2 * len(suffix)] + suffix)
    return answer


def _same_chat(chat, configured):
    """chat is the configured one: the same id, or for a channel the same @username."""
    if chat and str(chat.get("id")) == str(configured):
        return True
    username = chat.get("username")
    return isinstance(configured, str) and isinstance(username, str) and bool(username) \
        and configured.lower() == "@" + username.lower()


def _record(store, data, message_id, sink):
    """The press's verdict stored as feedback: ((alert_id, verdict, replaced) or None, the toast)."""
    parsed = parse_callback_data(data)
    if parsed is None:
        log.warning("ignored a button press with unknown data %r", str(data)[:80])
        return None, "KIRI does not know this button"
    alert_id, verdict = parsed
    sent_for = store.message_alert(sink, message_id) if message_id is not None else None
    if sent_for is not None and sent_for != alert_id:
        log.warning("ignored a %s for alert %s under message %s, which carried alert %s",
                    verdict, alert_id, message_id, sent_for)
        return None, "This button does not belong to this message"
    try:
        replaced = store.add_feedback(alert_id, verdict)
    except KeyError:
        log.warning("ignored a %s for unknown alert %s", verdict, alert_id)
        return None, "KIRI does not know alert %d" % alert_id
    tail = "replaced your earlier answer" if replaced else "KIRI will learn from it"
    return (alert_id, verdict, replaced), "Thanks — %s; %s" % (VERDICTS[verdict][1], tail)

