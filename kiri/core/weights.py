"""Weights files: one JSON document, written atomically, validated on load.

    {"format": "kiri-weights/1", "config": {...}, "language": {...},
     "params": {name: [[...], ...]}, "step": N, "threshold": {...}, "trained_on": {...}}

A save is atomic (ground.atomic_write), so a crash never leaves a half-written model;
the file it replaces is first copied, atomically too, to `<name>.prev.json`, so the
daemon can fall back to the last good weights.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import KiriError
from ..ground import atomic_write, is_finite_number
from .model import GPTConfig, param_shapes

FORMAT = "kiri-weights/1"


class WeightsError(KiriError):
    """A weights file is missing or unusable; the message names the file and the problem."""


@dataclass
class Weights:
    config: GPTConfig
    language: dict
    params: dict
    step: int = 0
    threshold: dict = field(default_factory=dict)
    trained_on: dict = field(default_factory=dict)

    def to_json(self):
        return {
            "format": FORMAT,
            "config": self.config.to_dict(),
            "language": self.language,
            "params": self.params,
            "step": self.step,
            "threshold": self.threshold,
            "trained_on": self.trained_on,
        }


def previous_path(path):
    path = Path(path)
    return path.with_name(path.name[:-len(".json")] + ".prev.json" if path.name.endswith(".json")
                          else path.name + ".prev.json")


def save(path, weights):
    """Write `weights` to `path` atomically, keeping the file it replaces as .prev.json."""
    path = Path(path)
    check_params(weights.config, weights.params, path)
    text = json.dumps(weights.to_json(), allow_nan=False, separators=(",", ":"))
    if path.exists():
        atomic_write(previous_path(path), path.read_bytes())
    atomic_write(path, text)


def load(path):
    """Read and validate a weights file; any problem is a WeightsError naming the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise WeightsError(f"{path}: no such weights file") from None
    except OSError as e:
        raise WeightsError(f"{path}: cannot read weights file: {e.strerror}") from None
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise WeightsError(f"{path}: not valid JSON (truncated or corrupted?): {e}") from None
    if not isinstance(doc, dict):
        raise WeightsError(f"{path}: not a weights document (expected a JSON object)")
    if doc.get("format") != FORMAT:
        raise WeightsError(f"{path}: unknown format {doc.get('format')!r}, expected {FORMAT!r}")
    for key in ("config", "language", "params"):
        if not isinstance(doc.get(key), dict):
            raise WeightsError(f"{path}: missing or malformed {key!r}")
    try:
        config = GPTConfig.from_dict(doc["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise WeightsError(f"{path}: bad model config: {e}") from None
    check_params(config, doc["params"], path)
    step = doc.get("step", 0)
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise WeightsError(f"{path}: bad step {step!r}")
    return Weights(config, doc["language"], doc["params"], step,
                   doc.get("threshold") or {}, doc.get("trained_on") or {})


def load_with_fallback(path):
    """Load `path`, or its .prev.json if `path` is unusable; returns (weights, path_used, error)."""
    try:
        return load(path), Path(path), None
    except WeightsError as error:
        prev = previous_path(path)
        if not prev.exists():
            raise
        return load(prev), prev, error


def check_params(config, params, path):
    """Names, shapes and finiteness of every parameter against the config."""
    shapes = param_shapes(config)
    missing = [name for name in shapes if name not in params]
    extra = [name for name in params if name not in shapes]
    if missing or extra:
        raise WeightsError(f"{path}: parameters do not match the config (missing {missing}, unexpected {extra})")
    for name, (rows, cols) in shapes.items():
        matrix = params[name]
        if not isinstance(matrix, list) or len(matrix) != rows or \
                any(not isinstance(row, list) or len(row) != cols for row in matrix):
            raise WeightsError(f"{path}: parameter {name!r} does not have shape {rows}x{cols}")
        for row in matrix:
            for x in row:
                if not is_finite_number(x):
                    raise WeightsError(f"{path}: parameter {name!r} holds a non-finite or non-numeric value {x!r}")
