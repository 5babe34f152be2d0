"""The one base class for errors a user can cause; the CLI prints them as one line."""


class KiriError(Exception):
    """A user-facing problem (bad input, missing file, unavailable source); message is one line."""
