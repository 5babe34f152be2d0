"""Telegram notifier: the Bot API client, outbox delivery and button presses, against a
fake Bot API on 127.0.0.1 (kiri/bench/fake_telegram.py). No test waits on a real clock."""

import json
import logging
import os
import socket
import sqlite3
import tempfile
import time
import traceback
import unittest
from pathlib import Path

from kiri.config import load_settings
from kiri.errors import KiriError
from kiri.notify import telegram
from kiri.notify.telegram import (PermanentError, TelegramBot, TelegramError, TransientError,
                                  callback_data, from_settings, parse_callback_data, poll)
from kiri.outbox import backoff, deliver
from kiri.store import Store

from kiri.bench.fake_telegram import FakeTelegram

TOKEN = "123:SECRET"
CHAT = 4242
NOW = 1000.0


class LogCapture(logging.Handler):
    """Every line logged under kiri.telegram and kiri.outbox while installed, formatted as a log file would be."""

    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.lines = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))

    def emit(self, record):
        self.lines.append(self.format(record))


class FakeTestCase(unittest.TestCase):
    def setUp(self):
        self.fake = FakeTelegram(token=TOKEN, chat_id=CHAT)
        self.fake.__enter__()
        self.addCleanup(self.fake.__exit__, None, None, None)
        self.bot = TelegramBot(TOKEN, CHAT, api=self.fake.url, timeout=5)
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)
        self.db = Path(self.tmp.name) / "kiri.db"
        self.store = self.open_store()
        self.log = LogCapture()
        for name in ("kiri.telegram", "kiri.outbox"):   # the transport, and the delivery around it
            logger = logging.getLogger(name)
            logger.addHandler(self.log)
            self.addCleanup(logger.removeHandler, self.log)
            self.addCleanup(logger.setLevel, logger.level)
            logger.setLevel(logging.DEBUG)

    def open_store(self):
        store = Store(self.db, clock=lambda: NOW)
        self.addCleanup(store.close)
        return store

    def alert(self, message="KIRI alert: pulse is unusual"):
        return self.store.add_alert("pulse", message, ts=NOW)

    def enqueue(self, alert_id, text=None, key=None):
        return self.store.enqueue("telegram", {"text": text or "alert %d" % alert_id, "alert_id": alert_id},
                                  key or "alert:%d" % alert_id, alert_id=alert_id, ts=NOW)


class FailingFeedbackStore(Store):
    """A real store whose next add_feedback raises `failure` (once): a fault no update can cause."""
    failure = None

    def add_feedback(self, *args, **kwargs):
        failure, self.failure = self.failure, None
        if failure is not None:
            raise failure
        return super().add_feedback(*args, **kwargs)


def closed_port():
    """A loopback port nobody listens on: connecting to it is refused at once."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def full_text(error):
    """Everything a user or a log could see of an exception, traceback included."""
    return "\n".join([str(error), repr(error), repr(error.args),
                      "".join(traceback.format_exception(type(error), error, error.__traceback__))])


# ----------------------------------------------------------------------------

class ClientTest(FakeTestCase):
    def test_send_alert_has_approve_and_dismiss_buttons(self):
        message_id = self.bot.send_alert("KIRI alert: pulse is unusual", 17)
        sent = self.fake.sent()
        self.assertEqual(len(sent), 1)
        self.assertEqual(self.fake.messages[message_id]["text"], "KIRI alert: pulse is unusual")
        self.assertEqual(sent[0]["chat_id"], CHAT)
        self.assertNotIn("parse_mode", sent[0])  # plain text: nothing to escape
        self.assertEqual(sent[0]["reply_markup"], {"inline_keyboard": [[
            {"text": "Approve", "callback_data": "fb:17:approve"},
            {"text": "Dismiss", "callback_data": "fb:17:dismiss"}]]})
        for button in sent[0]["reply_markup"]["inline_keyboard"][0]:
            self.assertLessEqual(len(button["callback_data"].encode("utf-8")), 64)

    def test_callback_data_stays_within_64_bytes(self):
        longest = callback_data(2 ** 63 - 1, "dismiss")  # the largest SQLite rowid
        self.assertLessEqual(len(longest.encode("utf-8")), 64)
        self.assertEqual(parse_callback_data(longest), (2 ** 63 - 1, "dismiss"))
        with self.assertRaisesRegex(ValueError, "longer than 64 bytes"):
            callback_data(10 ** 70, "approve")
        for bad in (-1, True, "7", None):
            with self.assertRaises(ValueError):
                callback_data(bad, "approve")
        with self.assertRaises(ValueError):
            callback_data(1, "maybe")

    def test_no_alert_id_means_no_buttons(self):
        self.bot.send_alert("just words", None)
        self.assertNotIn("reply_markup", self.fake.sent()[0])

    def test_too_long_text_is_cut_to_fit(self):
        self.bot.send_alert("x" * 5000, 1)
        self.bot.send_alert("😀" * 3000, 2)  # 6000 UTF-16 units: Telegram counts those
        for params in self.fake.sent():
            self.assertLessEqual(len(params["text"].encode("utf-16-le")) // 2, 4096)
            self.assertTrue(params["text"].endswith("…"))

    def test_errors_are_transient_or_permanent(self):
        cases = [(500, None, TransientError), (502, None, TransientError), (429, 35, TransientError),
                 (409, None, TransientError), (400, None, PermanentError), (401, None, PermanentError),
                 (403, None, PermanentError), (404, None, PermanentError)]
        for status, retry_after, kind in cases:
            with self.subTest(status=status):
                self.fake.fail_next("sendMessage", 1, status=status, retry_after=retry_after)
                with self.assertRaises(kind) as caught:
                    self.bot.send_alert("hello", 1)
                self.assertEqual(caught.exception.error_code, status)
                self.assertEqual(caught.exception.retry_after, retry_after)
                self.assertIn("HTTP %d" % status, str(caught.exception))
                self.assertIsInstance(caught.exception, KiriError)

    def test_telegram_words_are_in_the_message(self):
        other = TelegramBot(TOKEN, 999, api=self.fake.url)
        with self.assertRaises(PermanentError) as caught:
            other.send_alert("hello", 1)
        self.assertEqual(str(caught.exception), "telegram: sendMessage: HTTP 400: Bad Request: chat not found")

    def test_retry_after_from_the_description_when_parameters_lack_it(self):
        self.fake.fail_next("sendMessage", 1, status=429, raw='{"ok":false,"error_code":429,'
                            '"description":"Too Many Requests: retry after 12"}')
        with self.assertRaises(TransientError) as caught:
            self.bot.send_alert("hello", 1)
        self.assertEqual(caught.exception.retry_after, 12)

    def test_malformed_answers_are_transient(self):
        for raw, status in (("<html>bad gateway</html>", 200), ("", 200), ('{"result": 1}', 200),
                            ("<html>oops</html>", 502)):
            with self.subTest(raw=raw, status=status):
                self.fake.fail_next("getMe", 1, status=status, raw=raw)
                with self.assertRaises(TransientError):
                    self.bot.call("getMe")
        self.assertEqual(self.bot.call("getMe")["username"], "kiri_bot")

    def test_unknown_method_is_permanent(self):
        with self.assertRaises(PermanentError) as caught:
            self.bot.call("launchRocket")
        self.assertEqual(caught.exception.error_code, 404)

    def test_get_updates_returns_queued_updates_without_waiting(self):
        update_id = self.fake.add_update(message={"text": "hi"})
        started = time.monotonic()
        updates = self.bot.get_updates(None, timeout=30)  # long poll, but an update is there
        self.assertLess(time.monotonic() - started, 5)
        self.assertEqual([u["update_id"] for u in updates], [update_id])
        self.assertEqual(self.fake.calls_to("getUpdates")[0]["allowed_updates"], ["callback_query"])
        self.assertEqual(self.bot.get_updates(update_id + 1, timeout=0), [])

    def test_mark_answered_drops_the_buttons_and_tolerates_repeats(self):
        message_id = self.bot.send_alert("alert", 3)
        self.bot.mark_answered(message_id, "alert\n\nAnswered: approved.")
        self.assertEqual(self.fake.messages[message_id],
                         {"chat_id": CHAT, "text": "alert\n\nAnswered: approved.", "reply_markup": None})
        self.assertIsNone(self.bot.mark_answered(message_id, "alert\n\nAnswered: approved."))  # not modified

    def test_bad_construction(self):
        for token in ("", "12 3:x", "1/2"):
            with self.assertRaises(KiriError):
                TelegramBot(token, CHAT)
        with self.assertRaises(KiriError):
            TelegramBot(TOKEN, CHAT, api="ftp://example")
        with self.assertRaises(KiriError) as caught:
            TelegramBot(TOKEN, CHAT, api="https://u:SECRET@example")
        self.assertNotIn("SECRET", str(caught.exception))

    def test_a_malformed_api_address_is_one_line_when_the_bot_is_made(self):
        for api in ("http://[::1", "http://127.0.0.1:99999", "http://host:port", "http://exa mple.org", None):
            with self.subTest(api=api):
                with self.assertRaises(KiriError) as caught:
                    TelegramBot(TOKEN, CHAT, api=api)
                self.assertRegex(str(caught.exception), r"^telegram: the API address \(telegram_api\) [^\n]+$")

    def test_answers_too_large_or_too_deep_are_transient(self):
        deep = "[" * 200000   # json.loads gives up with a RecursionError, not a ValueError
        for raw, words in ((deep, "malformed answer"), ('{"ok": true, "result": %s}' % deep, "malformed answer"),
                           ("x" * (telegram.BODY_MAX + 1), "sent an answer larger than 4 MB")):
            with self.subTest(words=words, size=len(raw)):
                self.fake.fail_next("getMe", 1, status=200, raw=raw)
                with self.assertRaises(TransientError) as caught:
                    self.bot.call("getMe")
                self.assertIn(words, str(caught.exception))
        self.assertEqual(self.bot.call("getMe")["username"], "kiri_bot")   # the next call is fine

    def test_telegrams_words_become_one_short_line_without_the_token(self):
        self.fake.fail_next("sendMessage", 1, status=400,
                            description="Bad Request:\n" + "very long words " * 1000 + TOKEN)
        with self.assertRaises(PermanentError) as caught:
            self.bot.send_alert("hello", 1)
        message = str(caught.exception)
        self.assertNotIn("\n", message)
        self.assertLess(len(message), 300)
        self.assertNotIn("SECRET", message)

    def test_numbers_in_answers_are_checked(self):
        for message_id in (0, -3, 2 ** 63, True, "7", 1.5):
            with self.subTest(message_id=message_id):
                self.fake.fail_next("sendMessage", 1, status=200,
                                    raw='{"ok": true, "result": {"message_id": %s}}' % json.dumps(message_id))
                with self.assertRaisesRegex(TransientError, "without a message_id"):
                    self.bot.send_alert("hello", 1)
        self.fake.fail_next("getMe", 1, status=500, raw='{"ok": false, "error_code": 1e400, "description": "x"}')
        with self.assertRaises(TransientError) as caught:
            self.bot.call("getMe")
        self.assertEqual(caught.exception.error_code, 500)   # not a status: the HTTP one


class TokenSecrecyTest(FakeTestCase):
    def assert_secret_kept(self, error):
        self.assertIsNone(error.__cause__)
        self.assertIsNone(error.__context__)  # urllib's error (with the URL) is not chained
        self.assertNotIn("SECRET", full_text(error))

    def test_connection_refused(self):
        bot = TelegramBot(TOKEN, CHAT, api="http://127.0.0.1:%d" % closed_port(), timeout=5)
        with self.assertRaises(TransientError) as caught:
            bot.send_alert("hello", 1)
        self.assertIn("connection refused by 127.0.0.1", str(caught.exception))
        self.assert_secret_kept(caught.exception)

    def test_wrong_token(self):
        with FakeTelegram(token="999:OTHER", chat_id=CHAT) as other:
            bot = TelegramBot(TOKEN, CHAT, api=other.url)
            with self.assertRaises(PermanentError) as caught:
                bot.send_alert("hello", 1)
        self.assertEqual(caught.exception.error_code, 401)
        self.assert_secret_kept(caught.exception)

    def test_a_description_that_echoes_the_token_is_scrubbed(self):
        self.fake.fail_next("sendMessage", 1, status=400, description="Bad Request: token 123:SECRET is odd")
        with self.assertRaises(PermanentError) as caught:
            self.bot.send_alert("hello", 1)
        self.assertIn("<token>", str(caught.exception))
        self.assert_secret_kept(caught.exception)

    def test_a_url_urllib_refuses(self):
        with self.assertRaises(TelegramError) as caught:
            self.bot.call("get\nMe")
        self.assert_secret_kept(caught.exception)

    def test_repr(self):
        self.assertNotIn("SECRET", repr(self.bot))
        self.assertNotIn("SECRET", str(self.bot))

    def test_logs(self):
        bot = TelegramBot(TOKEN, CHAT, api="http://127.0.0.1:%d" % closed_port())
        self.enqueue(self.alert())
        self.assertEqual(deliver(self.store, bot, NOW), (0, 1))
        self.assertEqual(deliver(self.store, bot, NOW + 30), (0, 1))
        self.assertTrue(self.log.lines)
        self.assertFalse([line for line in self.log.lines if "SECRET" in line])
        self.assertNotIn("SECRET", self.store.outbox_row(1)["last_error"])


# ----------------------------------------------------------------------------

class DeliverTest(FakeTestCase):
    def test_backoff(self):
        self.assertEqual([backoff(n) for n in range(9)], [30, 60, 120, 240, 480, 960, 1920, 3600, 3600])
        self.assertEqual(backoff(10 ** 6), 3600)
        self.assertEqual(backoff(5, retry_after=7), 7)
        # Telegram's wait wins, held to 1 s .. an hour; what is no wait at all gets the usual backoff.
        self.assertEqual(backoff(0, retry_after=7200), 3600)
        self.assertEqual(backoff(0, retry_after=1e300), 3600)
        self.assertEqual(backoff(0, retry_after=0), 1)
        for nonsense in (float("nan"), float("inf"), -5, "7", True, 10 ** 400):
            with self.subTest(retry_after=nonsense):
                self.assertEqual(backoff(2, retry_after=nonsense), 120)

    def test_fails_twice_then_arrives_exactly_once(self):
        outbox_id = self.enqueue(self.alert())
        self.fake.fail_next("sendMessage", 2, status=500)
        self.assertEqual(deliver(self.store, self.bot, NOW), (0, 1))
        row = self.store.outbox_row(outbox_id)
        self.assertEqual((row["attempts"], row["next_try"]), (1, NOW + 30))
        self.assertIn("HTTP 500", row["last_error"])
        self.assertEqual(deliver(self.store, self.bot, NOW + 29), (0, 0))  # not due yet
        self.assertEqual(deliver(self.store, self.bot, NOW + 30), (0, 1))
        self.assertEqual(self.store.outbox_row(outbox_id)["next_try"], NOW + 30 + 60)
        self.assertEqual(deliver(self.store, self.bot, NOW + 90), (1, 0))
        self.assertEqual(deliver(self.store, self.bot, NOW + 10 ** 6), (0, 0))

        self.assertEqual(len(self.fake.sent()), 1)
        self.assertEqual(len(self.fake.calls_to("sendMessage")), 3)
        row = self.store.outbox_row(outbox_id)
        self.assertEqual(row["attempts"], 2)
        self.assertEqual(row["sent_ts"], NOW + 90)
        message_id = max(self.fake.messages)
        self.assertEqual(row["message_id"], str(message_id))
        self.assertEqual(self.store.message_alert("telegram", message_id), row["alert_id"])
        self.assertEqual(self.store.outbox_pending("telegram"), 0)

    def test_429_retry_after_is_respected_and_ends_the_round(self):
        first = self.enqueue(self.alert())
        second = self.enqueue(self.alert())
        self.fake.fail_next("sendMessage", 1, status=429, retry_after=120)
        self.assertEqual(deliver(self.store, self.bot, NOW), (0, 1))
        self.assertEqual(self.store.outbox_row(first)["next_try"], NOW + 120)
        self.assertEqual(self.store.outbox_row(second)["attempts"], 0)  # not tried into flood control
        self.assertEqual(len(self.fake.calls_to("sendMessage")), 1)
        self.assertEqual(deliver(self.store, self.bot, NOW + 60), (1, 0))  # the second, not the first
        self.assertEqual(deliver(self.store, self.bot, NOW + 119), (0, 0))
        self.assertEqual(deliver(self.store, self.bot, NOW + 120), (1, 0))
        self.assertEqual([p["text"] for p in self.fake.sent()], ["alert 2", "alert 1"])

    def test_a_retry_after_from_far_away_is_held_to_an_hour(self):
        outbox_id = self.enqueue(self.alert())
        self.fake.fail_next("sendMessage", 1, status=429, raw='{"ok": false, "error_code": 429,'
                            ' "description": "Too Many Requests", "parameters": {"retry_after": 1e300}}')
        self.assertEqual(deliver(self.store, self.bot, NOW), (0, 1))
        self.assertEqual(self.store.outbox_row(outbox_id)["next_try"], NOW + 3600)
        self.assertEqual(deliver(self.store, self.bot, NOW + 3600), (1, 0))   # retried, and it arrives

    def test_refused_messages_are_kept_and_retried_much_later(self):
        outbox_id = self.enqueue(self.alert())
        wrong_chat = TelegramBot(TOKEN, 999, api=self.fake.url)
        self.assertEqual(deliver(self.store, wrong_chat, NOW), (0, 1))
        row = self.store.outbox_row(outbox_id)
        self.assertEqual(row["next_try"], NOW + 6 * 3600)
        self.assertIn("chat not found", row["last_error"])
        self.assertEqual(self.store.outbox_pending(), 1)
        self.assertEqual(deliver(self.store, self.bot, NOW + 6 * 3600), (1, 0))  # fixed config: it goes

    def test_a_refused_row_does_not_block_the_next(self):
        bad = self.store.enqueue("telegram", {"text": ""}, "empty", ts=NOW)
        good = self.enqueue(self.alert())
        self.assertEqual(deliver(self.store, self.bot, NOW), (1, 1))
        self.assertIn("no text", self.store.outbox_row(bad)["last_error"])
        self.assertIsNotNone(self.store.outbox_row(good)["sent_ts"])

    def test_restart_resumes_the_outbox(self):
        ids = [self.enqueue(self.alert()) for _ in range(3)]
        self.fake.fail_next("sendMessage", 1, status=503)
        self.assertEqual(deliver(self.store, self.bot, NOW), (0, 1))
        self.store.close()
        # A new process: a new client and a new connection to the same database.
        store = self.open_store()
        bot = TelegramBot(TOKEN, CHAT, api=self.fake.url)
        self.assertEqual(deliver(store, bot, NOW + 30), (3, 0))
        self.assertEqual(sorted(p["text"] for p in self.fake.sent()), ["alert 1", "alert 2", "alert 3"])
        self.assertEqual([store.outbox_row(i)["sent_ts"] for i in ids], [NOW + 30] * 3)
        self.assertEqual(deliver(store, bot, NOW + 10 ** 6), (0, 0))

    def test_dedup_key_sends_once(self):
        alert_id = self.alert()
        self.assertIsNotNone(self.enqueue(alert_id, key="pulse:cpu:1000"))
        self.assertIsNone(self.enqueue(alert_id, key="pulse:cpu:1000"))
        self.assertEqual(deliver(self.store, self.bot, NOW), (1, 0))
        self.assertEqual(deliver(self.store, self.bot, NOW + 3600), (0, 0))
        self.assertEqual(len(self.fake.sent()), 1)

    def test_other_sinks_are_left_alone(self):
        self.store.enqueue("email", {"text": "hi"}, "e1", ts=NOW)
        self.assertEqual(deliver(self.store, self.bot, NOW), (0, 0))
        self.assertEqual(self.fake.calls_to("sendMessage"), [])


# ----------------------------------------------------------------------------

class PollTest(FakeTestCase):
    def sent_alert(self, message="KIRI alert: pulse is unusual"):
        """An alert delivered to the fake chat: (alert_id, message_id)."""
        alert_id = self.alert(message)
        self.enqueue(alert_id, text=message)
        self.assertEqual(deliver(self.store, self.bot, NOW), (1, 0))
        return alert_id, max(self.fake.messages)

    def test_dismiss_is_stored_answered_and_not_processed_twice(self):
        alert_id, message_id = self.sent_alert()
        update_id = self.fake.press("fb:%d:dismiss" % alert_id, message_id=message_id)

        self.assertEqual(poll(self.store, self.bot), [(alert_id, "dismiss", False)])
        alert = self.store.alert(alert_id)
        self.assertEqual((alert["state"], alert["feedback"]["verdict"]), ("dismissed", "dismiss"))
        answers = self.fake.calls_to("answerCallbackQuery", ok=True)
        self.assertEqual(len(answers), 1)
        self.assertEqual(answers[0]["text"], "Thanks — dismissed; KIRI will learn from it")
        self.assertEqual(self.fake.messages[message_id]["text"],
                         "KIRI alert: pulse is unusual\n\nAnswered: dismissed.")
        self.assertIsNone(self.fake.messages[message_id]["reply_markup"])  # buttons gone
        self.assertEqual(self.store.get_kv("telegram.offset"), update_id + 1)

        self.assertEqual(poll(self.store, self.bot), [])  # the same update is not read again
        self.assertEqual(self.fake.calls_to("getUpdates")[-1]["offset"], update_id + 1)
        self.assertEqual(len(self.fake.calls_to("answerCallbackQuery")), 1)
        self.assertEqual(self.store.alert(alert_id)["feedback"]["verdict"], "dismiss")

    def test_offset_survives_a_restart(self):
        alert_id, message_id = self.sent_alert()
        self.fake.press("fb:%d:approve" % alert_id, message_id=message_id)
        poll(self.store, self.bot)
        self.store.close()
        store = self.open_store()
        self.assertEqual(poll(store, TelegramBot(TOKEN, CHAT, api=self.fake.url)), [])

    def test_a_second_answer_replaces_the_first(self):
        alert_id, message_id = self.sent_alert()
        self.fake.press("fb:%d:approve" % alert_id, message_id=message_id)
        self.fake.press("fb:%d:dismiss" % alert_id, message_id=message_id)  # a quick second tap
        self.assertEqual(poll(self.store, self.bot),
                         [(alert_id, "approve", False), (alert_id, "dismiss", True)])
        self.assertEqual([a["text"] for a in self.fake.calls_to("answerCallbackQuery")],
                         ["Thanks — approved; KIRI will learn from it",
                          "Thanks — dismissed; replaced your earlier answer"])
        self.assertEqual(self.store.alert(alert_id)["state"], "dismissed")

    def test_a_press_from_another_chat_is_ignored(self):
        alert_id, message_id = self.sent_alert()
        update_id = self.fake.press("fb:%d:dismiss" % alert_id, chat_id=666, message_id=message_id)
        self.assertEqual(poll(self.store, self.bot), [])
        self.assertIsNone(self.store.alert(alert_id)["feedback"])
        self.assertEqual(self.fake.calls_to("answerCallbackQuery"), [])
        self.assertEqual(self.fake.calls_to("editMessageText"), [])
        self.assertEqual(self.store.get_kv("telegram.offset"), update_id + 1)
        self.assertTrue(any("666" in line and "not the configured chat" in line for line in self.log.lines))

    def test_garbage_is_ignored_and_never_crashes(self):
        alert_id, message_id = self.sent_alert()
        self.fake.press("hello", message_id=message_id)
        self.fake.press("fb:abc:approve", message_id=message_id)
        self.fake.press("fb:%d:maybe" % alert_id, message_id=message_id)
        self.fake.press("fb:%d:dismiss:extra" % alert_id, message_id=message_id)
        self.fake.press("fb:999999:dismiss", message_id=5555)  # an alert KIRI never had
        self.fake.press("fb:%d:dismiss" % alert_id, message=False)  # inline message: no chat
        self.fake.add_update(message={"message_id": 1, "text": "/start", "chat": {"id": CHAT}})
        self.fake.add_update(callback_query="not an object")
        last = self.fake.add_update(callback_query={"id": "x", "data": None, "message": {"chat": {"id": CHAT}}})

        self.assertEqual(poll(self.store, self.bot), [])
        self.assertIsNone(self.store.alert(alert_id)["feedback"])
        self.assertEqual(self.store.get_kv("telegram.offset"), last + 1)
        self.assertTrue(any("unknown alert 999999" in line for line in self.log.lines))
        # Presses in the configured chat still get an answer, so the client stops spinning.
        self.assertEqual(len(self.fake.calls_to("answerCallbackQuery", ok=True)), 5)

    def test_an_alert_id_too_large_for_the_store_does_not_block_later_presses(self):
        alert_id, message_id = self.sent_alert()
        # 19 digits, more than SQLite holds, under a message KIRI has no record of (an older bot's, say)
        self.fake.press("fb:9999999999999999999:approve", message_id=5555)
        last = self.fake.press("fb:%d:dismiss" % alert_id, message_id=message_id)
        self.assertEqual(poll(self.store, self.bot), [(alert_id, "dismiss", False)])
        self.assertEqual(self.store.get_kv("telegram.offset"), last + 1)
        self.assertEqual(self.store.alert(alert_id)["state"], "dismissed")
        self.assertEqual(len([line for line in self.log.lines if "unknown data" in line]), 1)
        self.assertEqual(poll(self.store, self.bot), [])   # nothing is read twice

    def test_ids_are_bounded(self):
        self.assertEqual(parse_callback_data("fb:9223372036854775807:approve"), (2 ** 63 - 1, "approve"))
        for data in ("fb:9223372036854775808:approve", "fb:0:approve", "fb:00:dismiss"):
            self.assertIsNone(parse_callback_data(data))
        alert_id, message_id = self.sent_alert()
        for bad in (-1, 2 ** 63 - 1, 10 ** 30, 1.5, "7", None):   # offset = update_id + 1 must fit
            self.fake.updates.append({"update_id": bad, "callback_query": {"data": "fb:1:approve"}})
        last = self.fake.press("fb:%d:approve" % alert_id, message_id=message_id)
        self.fake.updates[-1]["callback_query"]["message"]["message_id"] = 2 ** 64   # no message: no edit
        self.assertEqual(poll(self.store, self.bot), [(alert_id, "approve", False)])
        self.assertEqual(self.store.get_kv("telegram.offset"), last + 1)
        self.assertEqual(self.fake.calls_to("editMessageText"), [])
        self.assertEqual(len([line for line in self.log.lines if "without a valid update_id" in line]), 6)

    def test_a_damaged_offset_starts_again(self):
        self.store.set_kv("telegram.offset", "abc")
        alert_id, message_id = self.sent_alert()
        last = self.fake.press("fb:%d:approve" % alert_id, message_id=message_id)
        self.assertEqual(len(poll(self.store, self.bot)), 1)
        self.assertEqual(self.store.get_kv("telegram.offset"), last + 1)

    def test_an_update_that_cannot_be_handled_is_skipped_and_a_failing_store_is_not(self):
        alert_id, message_id = self.sent_alert()
        first = self.fake.press("fb:%d:approve" % alert_id, message_id=message_id)
        last = self.fake.press("fb:%d:dismiss" % alert_id, message_id=message_id)
        store = FailingFeedbackStore(self.db, clock=lambda: NOW)
        self.addCleanup(store.close)
        store.failure = sqlite3.OperationalError("database or disk is full")
        with self.assertRaises(sqlite3.OperationalError):   # not the update's fault: it is read again
            poll(store, self.bot)
        self.assertIsNone(store.get_kv("telegram.offset"))
        store.failure = TypeError("something nobody foresaw")   # once: the press after it goes through
        self.assertEqual(poll(store, self.bot), [(alert_id, "dismiss", False)])
        self.assertEqual(store.get_kv("telegram.offset"), last + 1)
        skipped = [line for line in self.log.lines if "skipped update" in line]
        self.assertEqual(skipped, ["WARNING kiri.telegram skipped update %d, which could not be handled:"
                                   " TypeError: something nobody foresaw" % first])

    def test_a_button_under_another_alerts_message_is_ignored(self):
        first, first_message = self.sent_alert("first")
        second, _ = self.sent_alert("second")
        self.fake.press("fb:%d:dismiss" % second, message_id=first_message)
        self.assertEqual(poll(self.store, self.bot), [])
        self.assertIsNone(self.store.alert(second)["feedback"])
        self.assertIsNone(self.store.alert(first)["feedback"])

    def test_failing_answer_or_edit_keeps_the_feedback(self):
        alert_id, message_id = self.sent_alert()
        self.fake.fail_next("answerCallbackQuery", 1, status=400, description="Bad Request: query is too old")
        self.fake.fail_next("editMessageText", 1, status=502)
        self.fake.press("fb:%d:approve" % alert_id, message_id=message_id)
        self.assertEqual(poll(self.store, self.bot), [(alert_id, "approve", False)])
        self.assertEqual(self.store.alert(alert_id)["state"], "approved")
        self.assertTrue(any("query is too old" in line for line in self.log.lines))

    def test_failing_get_updates_raises_and_keeps_the_offset(self):
        alert_id, message_id = self.sent_alert()
        self.store.set_kv("telegram.offset", 5)
        self.fake.fail_next("getUpdates", 1, status=409)
        with self.assertRaises(TransientError):
            poll(self.store, self.bot)
        self.assertEqual(self.store.get_kv("telegram.offset"), 5)

    def test_old_message_without_text_uses_the_stored_alert(self):
        alert_id, message_id = self.sent_alert("KIRI alert: drift is unusual")
        self.fake.messages[message_id]["text"] = "KIRI alert: drift is unusual"
        update_id = self.fake.press("fb:%d:approve" % alert_id, message_id=message_id)
        del self.fake.updates[-1]["callback_query"]["message"]["text"]
        self.assertEqual(len(poll(self.store, self.bot)), 1)
        self.assertEqual(self.fake.messages[message_id]["text"],
                         "KIRI alert: drift is unusual\n\nAnswered: approved.")
        self.assertEqual(self.store.get_kv("telegram.offset"), update_id + 1)


class FromSettingsTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)
        self.home = Path(self.tmp.name)

    def test_not_configured(self):
        self.assertIsNone(from_settings(load_settings(home=self.home, env={})))
        self.assertIsNone(from_settings(load_settings(home=self.home, env={"KIRI_TELEGRAM_TOKEN": TOKEN})))
        self.assertIsNone(from_settings(load_settings(home=self.home, env={"KIRI_TELEGRAM_CHAT_ID": "1"})))

    def test_from_the_environment(self):
        bot = from_settings(load_settings(home=self.home, env={
            "KIRI_TELEGRAM_TOKEN": TOKEN, "KIRI_TELEGRAM_CHAT_ID": "-1001234567890",
            "KIRI_TELEGRAM_API": "http://127.0.0.1:9"}))
        self.assertEqual((bot.chat_id, bot.api), (-1001234567890, "http://127.0.0.1:9"))
        self.assertNotIn("SECRET", repr(bot))
        channel = from_settings(load_settings(home=self.home, env={
            "KIRI_TELEGRAM_TOKEN": TOKEN, "KIRI_TELEGRAM_CHAT_ID": "@kiri_alerts"}))
        self.assertEqual((channel.chat_id, channel.api), ("@kiri_alerts", "https://api.telegram.org"))

    def test_bad_addresses_and_chat_ids_are_one_line_at_start(self):
        for key, value in (("KIRI_TELEGRAM_API", "http://[::1"), ("KIRI_TELEGRAM_CHAT_ID", "9" * 5000),
                           ("KIRI_TELEGRAM_CHAT_ID", "9223372036854775808"), ("KIRI_TELEGRAM_CHAT_ID", "kiri alerts")):
            with self.subTest(key=key, value=value[:30]):
                env = dict({"KIRI_TELEGRAM_TOKEN": TOKEN, "KIRI_TELEGRAM_CHAT_ID": "42"}, **{key: value})
                with self.assertRaises(KiriError) as caught:
                    from_settings(load_settings(home=self.home, env=env))
                self.assertEqual(len(str(caught.exception).splitlines()), 1)
                self.assertNotIn("SECRET", str(caught.exception))
        bot = from_settings(load_settings(home=self.home, env={
            "KIRI_TELEGRAM_TOKEN": TOKEN, "KIRI_TELEGRAM_CHAT_ID": "-9223372036854775807"}))
        self.assertEqual(bot.chat_id, -(2 ** 63 - 1))

    def test_a_config_file_with_the_token_must_be_private(self):
        path = self.home / "config.ini"
        path.write_text("[kiri]\ntelegram_token = %s\ntelegram_chat_id = 42\n" % TOKEN)
        os.chmod(str(path), 0o644)
        with self.assertRaises(KiriError) as caught:
            load_settings(home=self.home, env={})
        self.assertNotIn("SECRET", str(caught.exception))
        os.chmod(str(path), 0o600)
        self.assertEqual(from_settings(load_settings(home=self.home, env={})).chat_id, 42)


if __name__ == "__main__":
    unittest.main()
