"""KIRI: a self-hosted monitor built from microgpt atoms that learn what is normal."""

__version__ = "0.1.0"
