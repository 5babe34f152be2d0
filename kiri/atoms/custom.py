"""Your own atoms, declared in the config file: a name, a schema, a command, an interval.

    [atom:gpu]
    schema = T=20:100:8 U=0:100:5 Q=learn:6 # field=lo:hi:buckets, or field=learn:buckets
                                            # (cut where your own readings fall), in token order
    command = /usr/local/bin/gpu-stats      # prints one JSON object: {"T": 61, "U": 37}
    interval = 300                          # seconds between readings (default 300)
    steps = 2000                            # training steps (default 2000)

The daemon collects it like a built-in atom; `spawn:<name>` trains it once it has
enough readings, and Nerve reads its score like the others'. The command runs without
a shell (wrap it in `sh -c '…'` for pipes) with a 30-second timeout.
"""

import json
import re
import shlex
from types import SimpleNamespace

from ..core.language import MAX_BUCKETS, StateLanguage
from ..errors import KiriError
from ..ground import is_finite_number, one_line
from . import RESERVED
from .atom import AtomSpec
from .nerve import schema as nerve
from .sources import CollectorError, run_command

# The bounds of a declared atom's numbers; INTERVAL_MAX bounds the built-in atoms' intervals
# too (config.NUMBERS): a reading at most weekly, training at most 100,000 steps.
NAME = re.compile(r"[A-Za-z]{1,64}\Z")
INTERVAL_MAX = 7 * 86400
STEPS_MAX = 100_000


def parse_schema(name, text):
    """'T=20:100:8 Q=learn:6' → {"T": (20.0, 100.0, 8), "Q": {"learn": 6}}."""
    schema = {}
    for word in text.split():
        field, _, spec = word.partition("=")
        parts = spec.split(":")
        if parts[0] == "learn":
            # isdecimal, not isdigit: '²' is a digit that int() refuses.
            if len(parts) != 2 or not parts[1].isdecimal() or not 1 <= int(parts[1]) <= MAX_BUCKETS \
                    or not field.isalpha() or field in schema:
                raise KiriError(f"atom {name}: schema entry {word!r} must look like Q=learn:6 "
                                f"(a new field name of letters, 1 to {MAX_BUCKETS} buckets)")
            schema[field] = {"learn": int(parts[1])}
            continue
        try:
            lo, hi, buckets = float(parts[0]), float(parts[1]), int(parts[2])
        except (ValueError, IndexError):
            raise KiriError(f"atom {name}: schema entry {word!r} must look like T=0:100:10") from None
        if len(parts) != 3 or not field.isalpha() or field in schema:
            raise KiriError(f"atom {name}: schema entry {word!r} must look like T=0:100:10 (a new field name of letters)")
        try:   # the language's own rules (lo < hi, finite and apart, 1..MAX_BUCKETS), now rather than at the first score
            StateLanguage(name, {field: (lo, hi, buckets)})
        except ValueError as e:
            raise KiriError(f"atom {name}: schema entry {word!r}: {e}") from None
        schema[field] = (lo, hi, buckets)
    if not schema:
        raise KiriError(f"atom {name}: schema is empty")
    return schema


def make_module(name, section):
    """An atom module (SPEC, read, synthetic) for one [atom:NAME] section."""
    # ASCII letters, at most 64: the store keeps no other atom name (a reading of "é" or of a
    # 300-letter name would be refused every time), and its weights file must have a name.
    if not NAME.match(name) or name.lower() in RESERVED:
        raise KiriError(f"atom name {name!r} must be 1 to 64 letters a-z or A-Z, and not one of {', '.join(RESERVED)}")
    if nerve.prefix_of(name) in set(nerve.BUILTIN_PREFIX.values()) | set(nerve.OWN_FIELDS) | {nerve.HOSTS}:
        raise KiriError(f"atom name {name!r} would share Nerve's token {nerve.prefix_of(name)!r}; choose a longer name")
    unknown = sorted(set(section) - {"schema", "command", "interval", "steps"})
    if unknown:
        raise KiriError(f"atom {name}: unknown key {unknown[0]!r}")
    if not section.get("command", "").strip():
        raise KiriError(f"atom {name}: command is missing")
    schema = parse_schema(name, section.get("schema", ""))
    try:
        interval, steps = float(section.get("interval", 300)), int(section.get("steps", 2000))
    except ValueError:
        raise KiriError(f"atom {name}: interval and steps must be numbers") from None
    if not 0 < interval <= INTERVAL_MAX:   # nan too: it compares false, and would be due every tick
        raise KiriError(f"atom {name}: interval must be greater than 0 and at most {INTERVAL_MAX} seconds, "
                        f"got {section.get('interval')!r}")
    if not 1 <= steps <= STEPS_MAX:
        raise KiriError(f"atom {name}: steps must be from 1 to {STEPS_MAX}, got {section.get('steps')!r}")
    # One previous reading as context, when two readings still fit the 16-token block.
    context = 1 if 2 * (len(schema) + 1) <= 17 else 0
    if len(schema) + 1 > 17:
        raise KiriError(f"atom {name}: at most 16 fields fit a 16-token block")
    spec = AtomSpec(name=name, schema=schema, labels={f: (f, "") for f in schema},
                    context=context, interval=interval, steps=steps)
    try:
        argv = shlex.split(section["command"])
    except ValueError as e:   # an unclosed quote: "No closing quotation"
        raise KiriError(f"atom {name}: command {section['command']!r} cannot be split into words: {e}") from None

    def read(spec, settings, store):
        text = run_command(argv, source=name)
        try:
            values = json.loads(text)
        except ValueError:
            raise CollectorError(f"{name}: the command did not print one JSON object: {one_line(repr(text.strip()), 80)}") from None
        if not isinstance(values, dict):
            raise CollectorError(f"{name}: the command printed {type(values).__name__}, not a JSON object")
        missing = [f for f in schema if f not in values]
        if missing:
            raise CollectorError(f"{name}: the command's JSON has no field {missing[0]!r}")
        for f in schema:
            v = values[f]
            if not is_finite_number(v):
                raise CollectorError(f"{name}: field {f} must be a finite number, got {one_line(repr(v), 80)}")
        return {f: values[f] for f in schema}, "command"

    def synthetic(rng, ts):
        raise KiriError(f"{name}: a declared atom has no synthetic history; collect real readings")

    return SimpleNamespace(SPEC=spec, read=read, synthetic=synthetic)
