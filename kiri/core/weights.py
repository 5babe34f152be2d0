"""Weights files: one JSON document, written atomically, validated on load.

    {"format": "kiri-weights/1", "config": {...}, "language": {...},
     "params": {name: [[...], ...]}, "step": N, "threshold": {...}, "trained_on": {...}}

A save is atomic (ground.atomic_write), so a crash never leaves a half-written model;
the file it replaces is first copied, atomically too, to `<name>.prev.json`, so the
daemon can fall back to the last good weights.
"""

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from .. import faults
from ..errors import KiriError
from ..ground import atomic_write, is_finite_number
from .language import language_from_dict
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
    """Write `weights` to `path` atomically, keeping the file it replaces as .prev.json.
    What load would refuse is never written."""
    path = Path(path)
    check(weights, path)
    text = json.dumps(weights.to_json(), allow_nan=False, separators=(",", ":"))
    if path.exists():
        atomic_write(previous_path(path), path.read_bytes())
    atomic_write(path, text)
    faults.point("weights", path.name)   # the kill tests die here (kiri/faults.py)


# A pulse model is about 0.5 MB; a file a hundred times larger is not one of KIRI's.
MAX_BYTES = 64 * 2 ** 20


def load(path):
    """Read and validate a weights file: every part of it must make sense (check); any
    problem is a WeightsError naming the file, in one line."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise WeightsError(f"{path}: no such weights file") from None
    except OSError as e:
        raise WeightsError(f"{path}: cannot read weights file: {e.strerror}") from None
    if len(data) > MAX_BYTES:
        raise WeightsError(f"{path}: larger than {MAX_BYTES // 2 ** 20} MB, not a KIRI weights file")
    try:
        doc = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as e:   # not UTF-8, not JSON, or nested past the parser's depth
        raise WeightsError(f"{path}: not valid JSON (truncated or corrupted?): {str(e)[:100]}") from None
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
    weights = Weights(config, doc["language"], doc["params"], doc.get("step", 0),
                      doc.get("threshold") or {}, doc.get("trained_on") or {})
    check(weights, path)
    return weights


def load_with_fallback(path):
    """Load `path`, or its .prev.json if `path` is unusable; returns (weights, path_used, error)."""
    try:
        return load(path), Path(path), None
    except WeightsError as error:
        prev = previous_path(path)
        if not prev.exists():
            raise
        return load(prev), prev, error


# What the dicts saved beside the model may hold (atoms/atom.py writes them), each checked
# when present: status, scoring and the retrain rules compute with these values.
THRESHOLD_NUMBERS = ("score", "quantile", "q99", "floor", "held_out_mean")
THRESHOLD_COUNTS = ("held_out", "scored", "real_scored")
TRAINED_ON_TIMES = ("trained_at", "from_ts", "to_ts")
TRAINED_ON_COUNTS = ("observations", "real", "synthetic", "held_out", "docs")


def check(weights, path):
    """Whether a Weights makes sense, all of it: a language of the model's vocabulary whose
    reading fits the model's block, parameters of the config's shapes, a whole step count, a
    threshold that is a finite number above 0 (at 0 or below every reading would be an
    anomaly), and the counts and times beside them. A WeightsError names `path` and the problem."""
    try:
        language = language_from_dict(weights.language)
    except ValueError as e:
        raise WeightsError(f"{path}: bad language: {e}") from None
    config = weights.config
    if language.vocab_size != config.vocab_size:
        raise WeightsError(f"{path}: the language has {language.vocab_size} tokens, the model {config.vocab_size}")
    fields = getattr(language, "fields", None)   # a state language's; a character language has none
    if fields is not None and config.block_size < len(fields) + 1:
        raise WeightsError(f"{path}: a block of {config.block_size} tokens cannot hold one reading of "
                           f"{len(fields)} fields")
    check_params(config, weights.params, path)
    if isinstance(weights.step, bool) or not isinstance(weights.step, int) or weights.step < 0:
        raise WeightsError(f"{path}: bad step {weights.step!r}")
    threshold = check_record(path, "threshold", weights.threshold, THRESHOLD_NUMBERS, THRESHOLD_COUNTS)
    if "score" in threshold and threshold["score"] <= 0:
        raise WeightsError(f"{path}: threshold score must be above 0, got {threshold['score']!r}")
    rate = threshold.get("false_alarm_rate")
    if rate is not None and not (is_finite_number(rate) and 0 <= rate <= 1):
        raise WeightsError(f"{path}: threshold false_alarm_rate must be a share from 0 to 1, got {rate!r}")
    given = threshold.get("given", [])
    if not isinstance(given, list) or any(f not in (fields or ()) for f in given) or len(set(given)) != len(given) \
            or (fields is not None and len(given) >= len(fields)):
        raise WeightsError(f"{path}: threshold given must name some of the language's fields, not all, got {given!r}")
    check_record(path, "trained_on", weights.trained_on, TRAINED_ON_TIMES, TRAINED_ON_COUNTS, may_be_null=True)


def check_record(path, name, record, numbers, counts, may_be_null=False):
    """A dict saved beside the model: each of its `numbers` finite, each of its `counts` a whole
    number >= 0, when present (or null, with may_be_null); returns it."""
    if not isinstance(record, dict):
        raise WeightsError(f"{path}: {name} must be a JSON object, got {type(record).__name__}")
    for key, ok, wanted in [(k, is_finite_number, "a finite number") for k in numbers] + \
                           [(k, is_count, "a whole number of at least 0") for k in counts]:
        if key in record and not ok(record[key]) and not (may_be_null and record[key] is None):
            raise WeightsError(f"{path}: {name} {key} must be {wanted}, got {repr(record[key])[:40]}")
    return record


def is_count(x):
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def check_params(config, params, path):
    """Names, shapes and finiteness of every parameter against the config."""
    if config.n_layer > len(params):   # each layer has matrices of its own; and param_shapes makes one entry per layer
        raise WeightsError(f"{path}: parameters do not match the config ({config.n_layer} layers, "
                           f"{len(params)} matrices in all)")
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
            if not _usable_numbers(row):
                for x in row:
                    if not is_finite_number(x):
                        raise WeightsError(f"{path}: parameter {name!r} holds a non-finite or non-numeric value {x!r}")
                x = max(row, key=abs)
                raise WeightsError(f"{path}: parameter {name!r} holds {x!r}, beyond ±{PARAM_LIMIT:g}: "
                                   "no training makes such a value")


# No parameter training makes comes near this: Adam moves one by about the learning rate (0.01)
# a step at most. Within it, a score's arithmetic stays far from float's limits; beyond it
# (a value of 1e308 in a hand-edited file), a score can be inf or NaN, which no threshold compares with.
PARAM_LIMIT = 1e6
NUMBER_TYPES = {float, int}


def _usable_numbers(row):
    """Whether every value of `row` is a finite number (is_finite_number) within ±PARAM_LIMIT,
    quickly: a pulse model has 29,000 of them, and every score and status loads them. Types are
    looked at in C (bool is no int here), then one sum (finite only if each value is) and the
    largest magnitude."""
    if not set(map(type, row)) <= NUMBER_TYPES:
        return False
    try:
        return math.isfinite(sum(row)) and max(map(abs, row), default=0) <= PARAM_LIMIT
    except OverflowError:   # ints too large for a float, or their sum
        return False
