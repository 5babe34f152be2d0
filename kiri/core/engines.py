"""Choosing an engine by name: fast (default), value (the reference), torch (optional)."""

import shlex
import sys

from ..errors import KiriError
from .fast import FastEngine
from .model import ValueEngine

ENGINES = ("fast", "value", "torch")
DEFAULT_ENGINE = "fast"


class EngineUnavailable(KiriError):
    """The engine asked for cannot run here; the message says what to do."""


def torch_hint(python=None):
    """What to run when torch is missing. Into this very interpreter: a bare `pip` may belong to
    another Python, and `kiri[torch]` on the package index is an unrelated project."""
    return f"torch is not installed; install it with: {shlex.quote(python or sys.executable)} -m pip install torch"


def make_engine(name, config, params):
    """An engine of kind `name` holding a copy of `params` ({name: [[float]]})."""
    if name == "fast":
        return FastEngine(config, params)
    if name == "value":
        return ValueEngine(config, params)
    if name == "torch":
        try:
            from . import torch_backend
        except ImportError:
            raise EngineUnavailable(torch_hint()) from None
        return torch_backend.TorchEngine(config, params)
    raise EngineUnavailable(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")
