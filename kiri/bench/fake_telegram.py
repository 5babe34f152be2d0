"""A fake Telegram Bot API on 127.0.0.1, for tests and benchmarks. Nothing here touches the network.

    with FakeTelegram(token="123:SECRET", chat_id=4242) as fake:
        bot = TelegramBot("123:SECRET", 4242, api=fake.url)
        fake.fail_next("sendMessage", 2, status=500)     # script failures
        bot.send_alert("hello", 7)                       # -> 500, 500, then a message id
        fake.press("fb:7:dismiss")                       # a button press, for getUpdates

It answers like the real API (the {"ok": ..., "result" | "error_code", "description"}
envelope, HTTP status = error_code), checks the token in the path, records every
call, and serves each request on a daemon thread; __exit__ shuts it down. Long
polling waits at most `max_wait` seconds, however long the client asks for.
"""

import json
import threading

from .loopback import JsonHandler, QuietServer

BOT_ID = 7000000001


class FakeTelegram:
    def __init__(self, token="123:SECRET", chat_id=4242, max_wait=0.5):
        self.token = token
        self.chat_id = chat_id
        self.max_wait = max_wait
        self.calls = []            # every request: {"method", "params", "status"}
        self.messages = {}         # message_id -> {"chat_id", "text", "reply_markup"}
        self.updates = []          # updates not yet confirmed by a higher offset
        self._failures = {}        # method (lower case) -> [(status, envelope or raw text), ...]
        self._next_message_id = 1000
        self._next_update_id = 900000
        self._next_query = 1
        self._queries = set()      # callback_query ids that may be answered
        self._condition = threading.Condition()
        self._closing = False
        self.down = False          # True: every call answers 502 (an outage)
        self._server = None
        self._thread = None

    # -- lifecycle --------------------------------------------------------------

    def __enter__(self):
        self._server = QuietServer(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        with self._condition:
            self._closing = True
            self._condition.notify_all()  # release any long poll at once
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=2)

    @property
    def url(self):
        """The API base to give TelegramBot(api=...)."""
        return "http://127.0.0.1:%d" % self._server.server_address[1]

    # -- scripting --------------------------------------------------------------

    def fail_next(self, method="sendMessage", count=1, status=500, retry_after=None,
                  description=None, raw=None):
        """Make the next `count` calls of method fail with status (raw: this body, not JSON)."""
        if raw is None:
            envelope = {"ok": False, "error_code": status,
                        "description": description or _DESCRIPTIONS.get(status, "Error")}
            if retry_after is not None:
                envelope["parameters"] = {"retry_after": retry_after}
                if description is None:
                    envelope["description"] = "Too Many Requests: retry after %d" % retry_after
            body = envelope
        else:
            body = raw
        with self._condition:
            self._failures.setdefault(method.lower(), []).extend([(status, body)] * count)

    def forget_scripts(self):
        """Drop the failures scripted with fail_next that no call has used yet."""
        with self._condition:
            self._failures.clear()

    def add_update(self, **fields):
        """Queue an update for getUpdates (e.g. message={...}); returns its update_id."""
        with self._condition:
            update_id = self._next_update_id
            self._next_update_id += 1
            self.updates.append(dict(fields, update_id=update_id))
            self._condition.notify_all()
        return update_id

    def press(self, data, chat_id=None, message_id=None, from_id=None, message=True):
        """Queue a button press with callback data under message_id (default: the last message sent).

        chat_id defaults to the configured chat; message=False leaves the message out,
        as for an inline-mode message. Returns the update_id.
        """
        chat_id = self.chat_id if chat_id is None else chat_id
        with self._condition:
            if message_id is None:
                message_id = max(self.messages) if self.messages else 1
            query_id = "q%d" % self._next_query
            self._next_query += 1
            self._queries.add(query_id)
            text = self.messages.get(message_id, {}).get("text", "an old message")
        query = {"id": query_id, "chat_instance": "-5312876455921341321",
                 "from": {"id": from_id if from_id is not None else chat_id, "is_bot": False,
                          "first_name": "Ada"},
                 "data": data}
        if message:
            query["message"] = {"message_id": message_id, "date": 1795574400,
                                "from": {"id": BOT_ID, "is_bot": True, "first_name": "KIRI"},
                                "chat": {"id": chat_id, "type": "private", "first_name": "Ada"},
                                "text": text}
        return self.add_update(callback_query=query)

    # -- what happened ----------------------------------------------------------

    def calls_to(self, method, ok=None):
        """Recorded params of the calls to method (ok=True: only those that succeeded)."""
        with self._condition:
            return [c["params"] for c in self.calls
                    if c["method"].lower() == method.lower() and (ok is None or (c["status"] == 200) == ok)]

    def sent(self):
        """The params of every sendMessage that succeeded."""
        return self.calls_to("sendMessage", ok=True)

    # -- the API ----------------------------------------------------------------

    def handle(self, path, body):
        """(status, envelope or raw text) for a POST to path with JSON body; records the call."""
        prefix = "/bot%s/" % self.token
        if not path.startswith(prefix):
            # Telegram: a well-formed but wrong token is 401, anything else 404.
            status = 401 if path.startswith("/bot") else 404
            return self._record("?", {}, status, _error(status))
        method = path[len(prefix):].split("?")[0]
        try:
            params = json.loads(body.decode("utf-8")) if body else {}
            if not isinstance(params, dict):
                raise ValueError
        except ValueError:
            return self._record(method, {}, 400, _error(400, "Bad Request: invalid JSON body"))
        if self.down:   # an outage: every call fails until it is over
            return self._record(method, {}, 502, _error(502))
        with self._condition:
            queued = self._failures.get(method.lower())
            if queued:
                status, answer = queued.pop(0)
                return self._record(method, params, status, answer)
        handler = getattr(self, "_api_" + method.lower(), None)
        if handler is None:
            return self._record(method, params, 404, _error(404))
        status, answer = handler(params)
        return self._record(method, params, status, answer)

    def _record(self, method, params, status, answer):
        with self._condition:
            self.calls.append({"method": method, "params": params, "status": status})
        return status, answer

    def _api_getme(self, params):
        return _ok({"id": BOT_ID, "is_bot": True, "first_name": "KIRI", "username": "kiri_bot"})

    def _api_sendmessage(self, params):
        if str(params.get("chat_id")) != str(self.chat_id):
            return 400, _error(400, "Bad Request: chat not found")
        text = params.get("text")
        if not isinstance(text, str) or not text.strip():
            return 400, _error(400, "Bad Request: message text is empty")
        if len(text.encode("utf-16-le")) // 2 > 4096:
            return 400, _error(400, "Bad Request: message is too long")
        if not _markup_ok(params.get("reply_markup")):
            return 400, _error(400, "Bad Request: BUTTON_DATA_INVALID")
        with self._condition:
            message_id = self._next_message_id
            self._next_message_id += 1
            self.messages[message_id] = {"chat_id": params["chat_id"], "text": text,
                                         "reply_markup": params.get("reply_markup")}
        return _ok(self._message(message_id))

    def _message(self, message_id):
        stored = self.messages[message_id]
        message = {"message_id": message_id, "date": 1795574400,
                   "from": {"id": BOT_ID, "is_bot": True, "first_name": "KIRI"},
                   "chat": {"id": stored["chat_id"], "type": "private", "first_name": "Ada"},
                   "text": stored["text"]}
        if stored["reply_markup"]:
            message["reply_markup"] = stored["reply_markup"]
        return message

    def _api_getupdates(self, params):
        offset = params.get("offset")
        limit = params.get("limit", 100)
        wait = min(float(params.get("timeout") or 0), self.max_wait)
        with self._condition:
            if isinstance(offset, int):
                # Calling with an offset confirms every earlier update: Telegram forgets them.
                self.updates = [u for u in self.updates if u["update_id"] >= offset]
            if not self.updates and wait > 0 and not self._closing:
                self._condition.wait(wait)
            return _ok([dict(u) for u in self.updates[:limit]])

    def _api_answercallbackquery(self, params):
        with self._condition:
            known = params.get("callback_query_id") in self._queries
        if not known:
            return 400, _error(400, "Bad Request: query is too old and response timeout expired"
                                    " or query ID is invalid")
        return _ok(True)

    def _edit(self, params, text=None):
        with self._condition:
            stored = self.messages.get(params.get("message_id"))
            if stored is None or str(params.get("chat_id")) != str(stored["chat_id"]):
                return 400, _error(400, "Bad Request: message to edit not found")
            new_text = stored["text"] if text is None else text
            markup = params.get("reply_markup")
            if new_text == stored["text"] and markup == stored["reply_markup"]:
                return 400, _error(400, "Bad Request: message is not modified: specified new message"
                                        " content and reply markup are exactly the same as a current"
                                        " content and reply markup of the message")
            # Editing without a reply_markup removes the inline keyboard, as Telegram does.
            stored["text"], stored["reply_markup"] = new_text, markup
            return _ok(self._message(params["message_id"]))

    def _api_editmessagetext(self, params):
        text = params.get("text")
        if not isinstance(text, str) or not text.strip():
            return 400, _error(400, "Bad Request: message text is empty")
        return self._edit(params, text)

    def _api_editmessagereplymarkup(self, params):
        return self._edit(params)


_DESCRIPTIONS = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden: bot was blocked by the user",
                 404: "Not Found", 409: "Conflict: terminated by other getUpdates request",
                 429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway"}


def _ok(result):
    return 200, {"ok": True, "result": result}


def _error(status, description=None):
    return {"ok": False, "error_code": status, "description": description or _DESCRIPTIONS.get(status, "Error")}


def _markup_ok(markup):
    if markup is None:
        return True
    rows = markup.get("inline_keyboard") if isinstance(markup, dict) else None
    if not isinstance(rows, list):
        return False
    for row in rows:
        for button in row:
            data = button.get("callback_data")
            if data is not None and not 1 <= len(data.encode("utf-8")) <= 64:
                return False
            if not button.get("text"):
                return False
    return True


class _Handler(JsonHandler):
    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.answer(*self.server.fake.handle(self.path, body))
