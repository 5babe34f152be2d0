"""A Score: how surprising one reading was to an atom, token by token.

One shape with one JSON form, used by every face (`score --json`, `alerts --json`,
`status --json`), the store and the daemon. A token is

    {"token": "C9", "field": "C", "value": 95.0, "surprise": 10.3, "p": 0.00003,
     "expected": "C1", "p_expected": 0.48, "expected_range": [10.0, 20.0]}

`p` is the probability of the token that came, `p_expected` that of the token the model
expected most, `expected_range` the values that token stands for (null for a token
that names no range). The one rule for "surprising" lives here too, so the table a
person reads, the alert's words and the key that merges repeats name the same tokens.
"""

import math
from dataclasses import dataclass, field

SURPRISING = 2.0   # nats: a token is named as unexpected only above this (and above the threshold)


def verdict_of(score, threshold, likelihood=None, unusual_at=None):
    """'anomaly' (this reading is over the threshold), 'unusual' (the recent readings, together,
    are more surprising than this atom usually is: likelihood over its alert level) or 'normal'."""
    if score > threshold:
        return "anomaly"
    if likelihood is not None and unusual_at is not None and likelihood > unusual_at:
        return "unusual"
    return "normal"


@dataclass
class Score:
    atom: str
    score: float
    threshold: float
    tokens: list                  # token dicts, as in the module docstring
    clamped: list = field(default_factory=list)
    context: int = 0              # how many previous observations it was read after
    likelihood: float = None      # how unusual the recent surprise is for this atom, in [0, 1) (daemon)
    unusual_at: float = None      # the likelihood above which the recent readings are flagged

    @property
    def ratio(self):
        return self.score / self.threshold if self.threshold > 0 else math.inf

    @property
    def verdict(self):
        return verdict_of(self.score, self.threshold, self.likelihood, self.unusual_at)

    def is_surprising(self, token):
        bar = self.threshold if self.threshold is not None and math.isfinite(self.threshold) else 0.0
        return (token.get("surprise") or 0.0) > max(SURPRISING, bar)

    def surprising(self):
        """The tokens a person is told about: over max(SURPRISING, the threshold)."""
        return [t for t in self.tokens if self.is_surprising(t)]

    def explain(self):
        """The score, the verdict and the per-token table a person reads."""
        lines = [f"{self.atom}: score {self.score:.3f}  threshold {self.threshold:.3f}  "
                 f"ratio {self.ratio:.2f}  {self.verdict.upper()}"]
        if self.likelihood is not None:
            lines.append(f"  recent surprise: likelihood {self.likelihood:.3f} (flagged above {self.unusual_at:.3f})")
        lines.append(f"  {'token':<7}{'surprise':>9}  {'expected':<9}{'p':>6}")
        for t in self.tokens:
            mark = "  <-- unexpected" if self.is_surprising(t) else ""
            lines.append(f"  {t['token']:<7}{t['surprise']:>9.2f}  {t['expected']:<9}{t['p_expected']:>6.2f}{mark}")
        if self.clamped:
            lines.append(f"  clamped to the edge bucket: {', '.join(self.clamped)}")
        return "\n".join(lines)

    def to_json(self):
        threshold = self.threshold if math.isfinite(self.threshold) else None
        return {"atom": self.atom, "score": self.score, "threshold": threshold,
                "ratio": self.ratio if math.isfinite(self.ratio) else None, "verdict": self.verdict,
                "context": self.context, "clamped": list(self.clamped), "likelihood": self.likelihood,
                "unusual_at": self.unusual_at, "tokens": [dict(t) for t in self.tokens]}

    @classmethod
    def from_json(cls, d):
        """A Score from its JSON form, or from a stored score row (which has the same keys)."""
        threshold = d.get("threshold")
        return cls(d["atom"], d["score"], math.inf if threshold is None else threshold,
                   [upgraded_token(t) for t in d.get("tokens") or []], list(d.get("clamped") or []),
                   d.get("context") or 0, d.get("likelihood"), d.get("unusual_at"))


def upgraded_token(t):
    """A token dict in today's form. Scores stored before it named the expected token's
    probability `p` and the actual one's `p_token`."""
    t = dict(t)
    if "p_token" in t:
        t["p_expected"], t["p"] = t.get("p"), t.pop("p_token")
    for key in ("field", "value", "p", "expected", "p_expected", "expected_range"):
        t.setdefault(key, None)
    return t
