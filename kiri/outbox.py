"""Sinks and the outbox: every alert reaches every sink at least once, across restarts.

A sink is where alerts go and answers come from (the log, Telegram, Alertmanager):

    class Sink:
        name = "telegram"
        def send(self, alert): …      # deliver one Alert; return the sink's id for it (or None)
        def answers(self, store): …   # record the owner's answers as feedback; return [(alert_id, verdict, replaced)]

The daemon stores an alert together with one outbox row per sink (one transaction), and
deliver() sends what is due. The outbox table is the whole state, so a restarted
process just calls deliver() again. A failure the sink calls transient (no connection,
5xx, flood control) is retried with backoff; one it calls permanent (a refused chat)
is kept and retried hours later, with the error recorded: nothing is ever dropped. If
a sink received a message but its answer was lost, the row is retried and the message
arrives twice: delivery is at-least-once. Run one deliverer per sink (the daemon).
"""

import logging

from . import faults
from .alerts import Alert
from .errors import KiriError
from .ground import is_finite_number

log = logging.getLogger("kiri.outbox")

FIRST_BACKOFF = 30.0                    # seconds before the first retry of a failed send
MAX_BACKOFF = 3600.0                    # the backoff doubles per failure up to this
MIN_RETRY_AFTER = 1.0                   # a sink's own wait is held to MIN_RETRY_AFTER..MAX_BACKOFF
PERMANENT_RETRY = 6 * 3600.0            # a refused message (bad chat, blocked bot) is retried this late


class SinkError(KiriError):
    """A send that failed. `transient`: worth retrying soon; `retry_after`: seconds the sink asked for."""
    transient = True

    def __init__(self, message, retry_after=None):
        super().__init__(message)
        self.retry_after = retry_after


class RefusedError(SinkError):
    """The sink refused the message (a bad chat, a blocked bot): retrying soon will not help."""
    transient = False


class Sink:
    """Where alerts go. Subclasses set `name` and implement send(); answers() is optional."""
    name = "sink"

    def send(self, alert):
        raise NotImplementedError

    def answers(self, store):
        return []


class LogSink(Sink):
    """Every alert as one line in kiri.log: always there, even with no other sink set up."""
    name = "log"

    def send(self, alert):
        log.warning("ALERT %s: %s", alert.id, alert.message.replace("\n", " | "))


def backoff(attempts, retry_after=None):
    """Seconds until the next try after a transient failure.

    attempts: how many tries had failed before this one. 30 s, 60 s, 120 s, ... up to
    an hour; the sink's retry_after (flood control), when given, wins, held to 1 s .. an hour:
    it comes from the network, and a wait of 1e300 s would be a message never sent; trying
    before a longer wait is over costs only another "retry after". Anything but a finite
    number of seconds, at least 0 (NaN, -5, text): the usual backoff.
    """
    if is_finite_number(retry_after) and retry_after >= 0:
        return min(MAX_BACKOFF, max(MIN_RETRY_AFTER, float(retry_after)))
    return min(MAX_BACKOFF, FIRST_BACKOFF * 2 ** min(max(int(attempts), 0), 20))


def deliver(store, sink, now):
    """Send every due outbox row of sink; return (sent, failed).

    Sent rows are marked sent with the sink's id right after it answers, before anything
    else happens. A transient failure retries later and ends this round: the remaining
    rows wait for the next call instead of each timing out on a dead network.
    """
    sent = failed = 0
    for row in store.outbox_due(sink.name, now):
        payload = row.get("payload") if isinstance(row.get("payload"), dict) else {}
        try:
            alert = Alert.from_json(dict(payload, alert_id=payload.get("alert_id", row.get("alert_id"))))
            if not isinstance(alert.message, str) or not alert.message.strip():
                raise RefusedError(f"{sink.name}: outbox row {row['id']} has no text to send")
            try:
                message_id = sink.send(alert)
            except ValueError as error:  # a payload the sink cannot form (a bad alert id)
                raise RefusedError(f"{sink.name}: outbox row {row['id']}: {error}") from None
        except SinkError as error:
            if error.transient:
                store.outbox_failed(row["id"], str(error), now + backoff(row.get("attempts", 0), error.retry_after))
                log.warning("outbox row %s not sent, will retry: %s", row["id"], error)
                return sent, failed + 1
            store.outbox_failed(row["id"], str(error), now + PERMANENT_RETRY)
            log.error("outbox row %s refused, kept and retried in %d h: %s",
                      row["id"], PERMANENT_RETRY // 3600, error)
            failed += 1
            continue
        faults.point("sent_unmarked", sink.name)   # sent, not yet marked: a kill here sends it again
        try:
            store.outbox_sent(row["id"], message_id=message_id, ts=now)
        except Exception:
            log.error("outbox row %s was sent as message %s but could not be marked sent;"
                      " it may be sent again", row["id"], message_id)
            raise
        sent += 1
    return sent, failed
