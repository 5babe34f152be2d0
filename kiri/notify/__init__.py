"""Where alerts go: the sinks this installation has, behind kiri.outbox's Sink interface."""

from ..outbox import LogSink
from . import telegram


def sinks_from_settings(settings):
    """The log always; Telegram when its token and chat are set."""
    bot = telegram.from_settings(settings)
    return [LogSink()] + ([bot] if bot is not None else [])
