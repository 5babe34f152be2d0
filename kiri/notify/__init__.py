"""Where alerts go: the sinks this installation has, behind kiri.outbox's Sink interface."""

from ..alerts import Alert
from ..daemon import setup_logging
from ..errors import KiriError
from ..outbox import LogSink, SinkError
from . import alertmanager, telegram

TEST_ALERT = "KIRI test alert: if you can read this, alerts reach you."


def sinks_from_settings(settings):
    """The log always; Telegram when its token and chat are set; Alertmanager when alertmanager_url is."""
    configured = (telegram.from_settings(settings), alertmanager.from_settings(settings))
    return [LogSink()] + [sink for sink in configured if sink is not None]


def send_test_alert(settings, store, report):
    """`kiri alerts test` (and `kiri setup`): a test alert with buttons through every configured sink.

    It is stored first, so `kiri alerts` lists it and a button press on it is an answer like
    any other; then each sink gets it, one line per sink to `report`. A sink that does not
    deliver is a KiriError naming it. Returns the alert's id."""
    sinks = sinks_from_settings(settings)
    alert_id = store.add_alert("nerve", TEST_ALERT, situation="test")
    report(f"test alert {alert_id} written to the store (`kiri alerts` lists it)")
    setup_logging(settings)
    alert = Alert(alert_id, f"{TEST_ALERT} The buttons record an answer to this test alert.", host=settings.host)
    for sink in sinks:
        try:
            message_id = sink.send(alert)
        except SinkError as e:
            raise KiriError(f"{sink.name}: the test alert did not arrive: {e}") from None
        report(f"{sink.name}: delivered" + (f" (message {message_id})" if message_id is not None else
                                            f" to {settings.log_path}" if sink.name == "log" else ""))
    if not any(sink.name == "telegram" for sink in sinks):
        report("telegram: not configured (set KIRI_TELEGRAM_TOKEN and KIRI_TELEGRAM_CHAT_ID)")
    return alert_id
