"""Choosing an engine by name: fast (default), value (the reference), torch (optional)."""

from ..errors import KiriError
from .fast import FastEngine
from .model import ValueEngine

ENGINES = ("fast", "value", "torch")
DEFAULT_ENGINE = "fast"


class EngineUnavailable(KiriError):
    """The engine asked for cannot run here; the message says what to do."""


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
            raise EngineUnavailable("torch is not installed; pip install 'kiri[torch]'") from None
        return torch_backend.TorchEngine(config, params)
    raise EngineUnavailable(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")
