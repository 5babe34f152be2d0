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
from dataclasses import dataclass, field

from ..core.engines import make_engine
from ..core.language import StateLanguage, language_from_dict, quantile_edges
from ..core.model import GPTConfig, init_params
from ..core.surprise import mean_surprise, token_surprises
from ..core.train import train
from ..core.weights import Weights, WeightsError, load_with_fallback, previous_path, save
from ..errors import KiriError
from . import RESERVED
from .score import Score


def command_for(name):
    """The CLI command of an atom: `kiri pulse`, or `kiri atom gauge` for a declared one."""
    return f"kiri {name}" if name in RESERVED else f"kiri atom {name}"


THRESHOLD_QUANTILE = 0.99
HOLDOUT_FRACTION = 0.2
MIN_OBSERVATIONS = 20


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


def quantile(values, q):
    """Nearest-rank quantile of a non-empty list."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def held_out_indices(history, fraction):
    """The newest `fraction` of the real rows and, separately, of the synthetic rows.

    Holding out each kind in proportion keeps a handful of real readings from setting
    the threshold of a model that mostly knows synthetic history (and vice versa).
    """
    held = []
    for synthetic in (False, True):
        kind = [i for i, row in enumerate(history) if bool(row.get("synthetic")) == synthetic]
        if kind:
            held += kind[-max(1, int(len(kind) * fraction)):]
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
            ctx.insert(0, history[j]["values"])
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
        return [self.sequence(row["values"], self.context_of(history, i)) for i, row in enumerate(history)]

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
            self.language = language
            seqs = self.sequences(history)
        except ValueError as e:
            raise KiriError(f"{self.spec.name}: stored history does not fit the schema: {e}") from None
        held_idx = set(held_out_indices(history, holdout)) if holdout > 0 else set()
        fit = [seq for i, seq in enumerate(seqs) if i not in held_idx]
        held = [seq for i, seq in enumerate(seqs) if i in held_idx]
        config = self.spec.config(language.vocab_size)
        longest = max(len(ids) for ids, _ in seqs)
        if longest > config.block_size + 1:
            raise KiriError(f"{self.spec.name}: sequences of {longest} tokens do not fit block_size {config.block_size}")
        rng = random.Random(seed)
        self.model = make_engine(self.engine_name, config, init_params(config, rng))
        result = train(self.model, [ids for ids, _ in fit], steps, rng, batch=batch, progress=progress, metrics=metrics)
        held_scores = [mean_surprise(self._surprises(ids, start)) for ids, start in held]
        threshold = quantile(held_scores, THRESHOLD_QUANTILE) if held_scores else math.inf
        synthetic = sum(1 for row in history if row.get("synthetic"))
        info = {"observations": len(history), "real": len(history) - synthetic, "synthetic": synthetic,
                "held_out": len(held), "seed": seed, "engine": self.engine_name,
                "from_ts": history[0]["ts"], "to_ts": history[-1]["ts"]}
        info.update(trained_on or {})
        self.weights = Weights(config, language.to_dict(), self.model.params(), step=steps,
                               threshold={"score": threshold, "quantile": THRESHOLD_QUANTILE,
                                          "held_out_mean": sum(held_scores) / len(held_scores)}
                               if held_scores else {},
                               trained_on=info)
        save(path, self.weights)
        return TrainReport(steps, len(fit), len(held), len(history) - synthetic, synthetic, threshold,
                           result.losses[0], result.mean_loss(min(50, steps)), result.seconds)

    # --- scoring -----------------------------------------------------------------

    def _surprises(self, ids, start):
        def same_field(pos):
            return self.language.field_tokens(self.language.field_of(ids[pos]))
        # Score the observation's field tokens: after its BOS, i.e. from start + 1.
        return token_surprises(self.model, ids, start=start + 1, allowed=same_field)

    def score(self, values, context=()):
        """How surprising `values` is after `context` (previous values dicts, oldest first)."""
        self._require_trained()
        context = list(context)[-self.spec.context:] if self.spec.context else []
        clamped = self.language.encode_report(values)[1]
        ids, start = self.sequence(values, context)
        return self._score(ids, start, values, clamped, len(context))

    def score_tokens(self, text):
        """Score an observation typed as tokens, e.g. 'C9 M9 D4 S4 L4 N1' (read on its own)."""
        self._require_trained()
        return self._score(self.language.parse_tokens(text), 0, {}, [], 0)

    def _require_trained(self):
        if not self.trained:
            raise KiriError(f"{self.spec.name}: no trained weights yet; run `{command_for(self.spec.name)} train`")

    def _score(self, ids, start, values, clamped, context):
        surprises = self._surprises(ids, start)
        language = self.language
        tokens = [{"token": language.token_name(s.token), "field": language.field_of(s.token),
                   "value": values.get(language.field_of(s.token)), "surprise": s.surprise, "p": s.p,
                   "expected": language.token_name(s.expected), "p_expected": s.p_expected,
                   "expected_range": language.bucket_range(s.expected)} for s in surprises]
        return Score(self.spec.name, mean_surprise(surprises), self.threshold, tokens, clamped, context)
