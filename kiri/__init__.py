"""KIRI: a self-hosted monitor built from microgpt atoms that learn what is normal."""

__version__ = "0.1.0"

import logging as _logging

# A library stays quiet unless the application (the daemon) configures logging.
_logging.getLogger("kiri").addHandler(_logging.NullHandler())
