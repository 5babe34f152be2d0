"""The Atom: a StateLanguage + a tiny GPT + its weights + a calibrated threshold.

Every atom (Pulse, Rhythm, Drift, Nerve, your own) is this class with a different
AtomSpec; nothing about sequences, training or scoring is written twice.

Sequences. An observation is [BOS, one token per field]. The model also learns what
follows what: each observation is put after up to `spec.context` previous observations
that came at most `max_gap` seconds before it (concatenated, each with its own BOS).
The first half of such a sequence is a lone observation, so the model learns both
shapes: an observation in context and one on its own (after a gap, or typed by hand).
Scoring builds exactly the same shape and reads the surprise of the last observation.
"""

import math
import random
import time
from dataclasses import dataclass, field

from ..core.engines import make_engine
from ..core.language import StateLanguage, language_from_dict, quantile_edges
from ..core.model import GPTConfig, init_params
from ..core.surprise import mean_surprise, token_surprises
from ..core.train import train
from ..core.weights import Weights, WeightsError, load_with_fallback, previous_path, save
from ..errors import KiriError
from . import RESERVED
from .score import SURPRISING, Score


def command_for(name):
    """The CLI command of an atom: `kiri pulse`, or `kiri atom gauge` for a declared one."""
    return f"kiri {name}" if name in RESERVED else f"kiri atom {name}"


THRESHOLD_QUANTILE = 0.99
HOLDOUT_FRACTION = 0.2
HOLDOUT_BLOCK = 12        # readings held out together (an hour at 5 minutes): neighbours stay together
MIN_OBSERVATIONS = 20
# The newest readings an atom learns from (and cuts its learned fields' buckets at): a
# week at one reading a minute — the 7 days a scheduled retrain asks for — and five weeks
# at Pulse's five minutes. Training sees one sequence a step (2,000 by default), so more
# would teach nothing; the window only has to hold whole weeks of the machine's routine.
# A bound, so training costs the same after five months as after a week (`bench train`),
# and the rows fit in memory: ~1 KB each as dicts.
TRAIN_WINDOW = 10_080
# Held-out readings scored to calibrate the threshold, evenly spaced. Scoring one costs
# 10–20 ms with the fast engine, so 1,000 take about as long as 500 training steps; why
# their 99th percentile serves as well as that of 40,000: README, Threshold.
CALIBRATION_SAMPLE = 1_000


CLOCK = ("H", "W")   # the hour of day and the weekday (0 = Monday) a reading was taken at


def clock_of(ts):
    """The clock fields of a reading taken at ts, local time: {"H": 15.5, "W": 1}."""
    try:
        t = time.localtime(ts)
    except (OverflowError, OSError, ValueError):
        raise ValueError(f"a reading's time {ts!r} is beyond what this system's clock can read") from None
    return {"H": t.tm_hour + t.tm_min / 60, "W": t.tm_wday}


@dataclass(frozen=True)
class AtomSpec:
    name: str
    schema: dict                  # prefix -> (lo, hi, buckets) or {"learn": buckets}, in token order
    labels: dict = field(default_factory=dict)   # prefix -> (readable name, unit) for explanations
    n_embd: int = 32
    n_layer: int = 2
    n_head: int = 4
    block_size: int = 16
    context: int = 1              # previous observations each one is conditioned on
    interval: float = 300.0       # seconds between observations when collected on a schedule
    steps: int = 500              # default training steps
    # The reading's hour and weekday (CLOCK, first in the schema) are its context: the
    # model reads them, predicts the rest given them, and they are never judged — a
    # Tuesday is not an anomaly, CPU at 95 % at 3 a.m. may be. Filled in from each
    # reading's time where the reading does not carry them itself.
    clock: bool = False

    @property
    def max_gap(self):
        """Observations further apart than this are not treated as consecutive."""
        return 3 * self.interval

    def language(self, history=()):
        """The atom's StateLanguage. A field declared {"learn": n} gets n buckets cut at the
        quantiles of its values in `history` (the rows it is trained on), with explicit
        below / above-range tokens — for a metric with no natural range. Before training
        (no history) such a field has one placeholder bucket."""
        schema = {}
        for prefix, spec in self.schema.items():
            if isinstance(spec, dict) and "learn" in spec:
                values = [row["values"][prefix] for row in history
                          if isinstance(row["values"].get(prefix), (int, float))]
                spec = {"edges": quantile_edges(values, spec["learn"]) if values else [0.0, 1.0]}
            schema[prefix] = spec
        return StateLanguage(self.name, schema)

    def config(self, vocab_size):
        return GPTConfig(vocab_size=vocab_size, n_embd=self.n_embd, n_layer=self.n_layer,
                         n_head=self.n_head, block_size=self.block_size)


@dataclass
class TrainReport:
    steps: int
    sequences: int
    held_out: int
    real: int
    synthetic: int
    threshold: float
    first_loss: float
    last_loss: float
    seconds: float
    calibration: dict = field(default_factory=dict)   # the weights' threshold dict (threshold_of)

    def threshold_reason(self):
        """Which rule set the threshold: 'floor: one unlikely token; q99 of 60 held-out scores was 0.001'."""
        c = self.calibration
        if not c:
            return "no held-out readings"
        scores = f"{c['scored']} held-out scores" if c["scored"] == c["held_out"] else \
            f"{c['scored']} of {c['held_out']} held-out scores"
        if c["set_by"] == "floor":
            return f"floor: one unlikely token; q99 of {scores} was {c['q99']:.3f}"
        return f"q99 of {scores}; floor {c['floor']:.3f}"


def quantile(values, q):
    """Nearest-rank quantile of a non-empty list."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def evenly_spaced(items, k):
    """At most k of items, evenly spaced from the first on: the same ones every time."""
    if len(items) <= k:
        return list(items)
    return [items[i * len(items) // k] for i in range(k)]


def threshold_floor(judged):
    """The least a threshold can be: the mean surprise of a reading in which one token is
    genuinely unlikely (SURPRISING, p ≈ 0.14) and every other token is exactly as expected.

    On a steady machine every held-out reading scores ~0, so their 99th percentile says
    nothing about what a person would care about; without a floor the first reading that
    differs at all is "thousands of times its threshold". Below this, an anomaly would not
    need even one token the model found unlikely.
    """
    return SURPRISING / judged


def threshold_of(scores, real, floor):
    """The threshold dict saved with the weights, from the held-out `scores` (non-empty) and
    whether each is a real reading: the threshold is the larger of their 99th percentile
    (nearest rank) and the floor, and `false_alarm_rate` is the share of the real ones
    over it — how often this model would alert on readings like its newest real ones
    (None when none of them was real)."""
    q99 = quantile(scores, THRESHOLD_QUANTILE)
    threshold = max(q99, floor)
    real_scores = [s for s, is_real in zip(scores, real) if is_real]
    return {"score": threshold, "quantile": THRESHOLD_QUANTILE, "q99": q99, "floor": floor,
            "set_by": "floor" if floor > q99 else "q99", "held_out_mean": sum(scores) / len(scores),
            "scored": len(scores), "real_scored": len(real_scores),
            "false_alarm_rate": sum(s > threshold for s in real_scores) / len(real_scores) if real_scores else None}


def held_out_indices(history, fraction):
    """About `fraction` of the real rows and, separately, of the synthetic rows: every
    (1/fraction)-th block of consecutive rows, counted back from the newest block.

    Blocks spread over the whole history, not its newest fifth: a machine's week has
    quiet nights and busy weekdays, and a threshold calibrated on the last day and a half
    alone (a weekend, say) flags every ordinary Tuesday. The newest block is always held
    out, so the newest readings stay unseen for the retrain gate. Each kind in proportion
    keeps a handful of real readings from setting the threshold of a model that mostly
    knows synthetic history (and vice versa).
    """
    every = max(2, round(1 / fraction))
    held = []
    for synthetic in (False, True):
        kind = [i for i, row in enumerate(history) if bool(row.get("synthetic")) == synthetic]
        if not kind:
            continue
        block = max(1, min(HOLDOUT_BLOCK, len(kind) // (5 * every)))   # at least five held-out blocks
        last = (len(kind) - 1) // block
        held += [i for n, i in enumerate(kind) if (last - n // block) % every == 0]
    return sorted(held)


class Atom:
    def __init__(self, spec, weights=None, engine="fast", weights_note=None):
        self.spec = spec
        self.engine_name = engine
        self.weights = weights
        self.weights_note = weights_note  # e.g. "fell back to the previous weights: …"
        if weights is None:
            self.language = spec.language()
            self.model = None
        else:
            self.language = language_from_dict(weights.language)
            self.model = make_engine(engine, weights.config, weights.params)
        self.given = self.given_fields()

    def given_fields(self):
        """The fields this atom reads as context and does not judge (AtomSpec.clock). Weights
        saved before KIRI knew of them judged every field, and do until retrained."""
        if self.weights is not None:
            return tuple(self.weights.threshold.get("given", ()))
        return tuple(f for f in CLOCK if self.spec.clock and f in self.language.fields)

    @classmethod
    def load(cls, spec, path, engine="fast"):
        """The atom with its saved weights (or the previous good ones), or untrained if none exist."""
        if not path.exists() and not previous_path(path).exists():
            return cls(spec, None, engine)
        weights, used, error = load_with_fallback(path)
        if weights.language.get("kind") != "state":
            raise WeightsError(f"{used}: not an atom's weights (language {weights.language.get('kind')!r})")
        note = f"{error}; using {used.name}" if error else None
        return cls(spec, weights, engine, note)

    def with_clock(self, values, ts):
        """A reading's values with its clock fields, from `ts` where it does not carry them."""
        return {**clock_of(ts), **values} if self.spec.clock and ts is not None else values

    @property
    def trained(self):
        return self.model is not None

    @property
    def threshold(self):
        return self.weights.threshold.get("score", math.inf) if self.weights else math.inf

    # --- sequences ---------------------------------------------------------------

    def context_of(self, history, i):
        """The observations (values dicts) that observation i is read after: close enough in time."""
        ctx = []
        ts = history[i]["ts"]
        for j in range(i - 1, max(-1, i - 1 - self.spec.context), -1):
            if ts - history[j]["ts"] > self.spec.max_gap or history[j]["ts"] > ts:
                break
            ctx.insert(0, self.with_clock(history[j]["values"], history[j]["ts"]))
            ts = history[j]["ts"]
        return ctx

    def sequence(self, values, context=()):
        """Token ids of an observation after its context, and where the observation starts."""
        ids = []
        for obs in context:
            ids += self.language.encode(obs)
        start = len(ids)
        ids += self.language.encode(values)
        return ids, start

    def sequences(self, history):
        """(ids, start) for every observation of a time-ordered history."""
        return [self.sequence(self.with_clock(row["values"], row["ts"]), self.context_of(history, i))
                for i, row in enumerate(history)]

    # --- training ----------------------------------------------------------------

    def train(self, history, path, steps=None, seed=42, batch=1, progress=None, metrics=None,
              holdout=HOLDOUT_FRACTION, trained_on=None):
        """Train on the older part of `history`, calibrate the threshold on the newest part, save.

        `history` is a time-ordered list of {"ts", "values", "synthetic"}. The weights file
        at `path` is replaced atomically only after training succeeded.
        """
        steps = self.spec.steps if steps is None else steps
        if steps < 1:
            raise KiriError(f"{self.spec.name}: --steps must be at least 1, got {steps}")
        if len(history) < MIN_OBSERVATIONS:
            raise KiriError(f"{self.spec.name}: only {len(history)} observations stored; need at least "
                            f"{MIN_OBSERVATIONS} to train (collect more, or add --synthetic history)")
        try:
            language = self.spec.language(history)
            self.language, self.weights = language, None
            self.given = self.given_fields()
            seqs = self.sequences(history)
        except ValueError as e:
            raise KiriError(f"{self.spec.name}: stored history does not fit the schema: {e}") from None
        held_idx = held_out_indices(history, holdout) if holdout > 0 else []
        held = set(held_idx)
        fit = [seq for i, seq in enumerate(seqs) if i not in held]
        config = self.spec.config(language.vocab_size)
        longest = max(len(ids) for ids, _ in seqs)
        if longest > config.block_size + 1:
            raise KiriError(f"{self.spec.name}: sequences of {longest} tokens do not fit block_size {config.block_size}")
        rng = random.Random(seed)
        self.model = make_engine(self.engine_name, config, init_params(config, rng))
        result = train(self.model, [ids for ids, _ in fit], steps, rng, batch=batch, progress=progress, metrics=metrics)
        calibration = self.calibrate(history, seqs, held_idx, threshold_floor(len(language.fields) - len(self.given)))
        calibration["given"] = list(self.given)
        synthetic = sum(1 for row in history if row.get("synthetic"))
        info = {"observations": len(history), "real": len(history) - synthetic, "synthetic": synthetic,
                "held_out": len(held_idx), "seed": seed, "engine": self.engine_name,
                "from_ts": history[0]["ts"], "to_ts": history[-1]["ts"]}
        info.update(trained_on or {})
        self.weights = Weights(config, language.to_dict(), self.model.params(), step=steps,
                               threshold=calibration, trained_on=info)
        save(path, self.weights)
        return TrainReport(steps, len(fit), len(held_idx), len(history) - synthetic, synthetic,
                           calibration.get("score", math.inf), result.losses[0], result.mean_loss(min(50, steps)),
                           result.seconds, calibration)

    def calibrate(self, history, seqs, held_idx, floor):
        """The threshold dict (threshold_of) from at most CALIBRATION_SAMPLE of the held-out
        readings, evenly spaced: scoring every one of them made calibration cost grow with
        the history. {} when nothing was held out (the threshold is then infinite)."""
        sample = evenly_spaced(held_idx, CALIBRATION_SAMPLE)
        if not sample:
            return {}
        scores = [mean_surprise(self._read(*seqs[i])[0]) for i in sample]
        calibration = threshold_of(scores, [not history[i].get("synthetic") for i in sample], floor)
        calibration["held_out"] = len(held_idx)
        return calibration

    # --- scoring -----------------------------------------------------------------

    def _surprises(self, ids, start):
        """The surprise of each judged token of the observation that starts at `start` (its
        BOS): the given fields (its clock) shape what is expected and are not judged."""
        def same_field(pos):
            return self.language.field_tokens(self.language.field_of(ids[pos]))
        surprises = token_surprises(self.model, ids, start=start + 1, allowed=same_field)
        return [s for s in surprises if self.language.field_of(s.token) not in self.given]

    def _read(self, ids, start):
        """(surprises, read after its context?) of the observation at `start`, read after its
        context and on its own — whichever surprises more.

        After its context a reading is judged as a change (the machine jumps at 3 a.m.); on
        its own, as a state. Both are needed: once a runaway or a night of activity has
        begun, each reading follows the one before it as expected, and only the reading
        on its own still says that this is no state for 3 a.m. The model learns both
        shapes (module docstring) and the threshold is calibrated on this same reading.
        """
        after = self._surprises(ids, start)
        if start == 0:
            return after, False
        alone = self._surprises(ids[start:], 0)
        return (after, True) if mean_surprise(after) >= mean_surprise(alone) else (alone, False)

    def score(self, values, context=(), ts=None):
        """How surprising `values`, read at `ts` (now if None), is after `context` (previous
        values dicts, oldest first, with their clock fields when the atom has them)."""
        self._require_trained()
        ts = time.time() if ts is None else ts
        values = self.with_clock(values, ts)
        context = list(context)[-self.spec.context:] if self.spec.context else []
        # Context typed without its clock was read an interval apart, up to this reading.
        context = [self.with_clock(c, ts - (len(context) - i) * self.spec.interval) for i, c in enumerate(context)]
        clamped = self.language.encode_report(values)[1]
        ids, start = self.sequence(values, context)
        return self._score(ids, start, values, clamped, len(context))

    def score_tokens(self, text, ts=None):
        """Score an observation typed as tokens, e.g. 'C9 M9 D4 S4 L4 N1' (read on its own).
        An atom with a clock reads it at `ts` (now if None) unless the text starts with
        the clock's tokens: 'H1 W2 C9 M9 D4 S4 L4 N1' is 2–4 a.m. on a Wednesday."""
        self._require_trained()
        words = text.split()
        if self.given and len(words) == len(self.language.fields) - len(self.given):
            clock = clock_of(time.time() if ts is None else ts)
            words = [self.language.token_name(self.language.token_for(f, clock[f])[0]) for f in self.given] + words
        return self._score(self.language.parse_tokens(" ".join(words)), 0, {}, [], 0)

    def _require_trained(self):
        if not self.trained:
            raise KiriError(f"{self.spec.name}: no trained weights yet; run `{command_for(self.spec.name)} train`")

    def _score(self, ids, start, values, clamped, context):
        surprises, after_context = self._read(ids, start)
        context = context if after_context else 0
        language = self.language
        tokens = [{"token": language.token_name(s.token), "field": language.field_of(s.token),
                   "value": values.get(language.field_of(s.token)), "surprise": s.surprise, "p": s.p,
                   "expected": language.token_name(s.expected), "p_expected": s.p_expected,
                   "expected_range": language.bucket_range(s.expected)} for s in surprises]
        return Score(self.spec.name, mean_surprise(surprises), self.threshold, tokens, clamped, context)
