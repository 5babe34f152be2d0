"""What every data source raises when it cannot deliver a reading."""

from ..errors import KiriError


class CollectorError(KiriError):
    """A data source could not be read; the message is one line for the user."""
