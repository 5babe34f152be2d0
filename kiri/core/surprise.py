"""Surprise: how unexpected each token was, −log p(token | previous tokens).

The mean surprise over a sequence is an atom's anomaly score; per token, the model's
most expected token and its probability are the explanation a user reads
("M9, expected M5 (p 0.61)").
"""

import collections
import math
from dataclasses import dataclass


@dataclass(frozen=True)
class TokenSurprise:
    token: int          # the token that actually came
    surprise: float     # −log p(token | previous)
    p: float            # p(token | previous)
    expected: int       # the model's most probable token at this position
    p_expected: float   # its probability


def log_softmax(logits):
    top = max(logits)
    log_total = top + math.log(sum(math.exp(z - top) for z in logits))
    return [z - log_total for z in logits]


def token_surprises(engine, tokens, start=1, allowed=None):
    """Surprise of tokens[start:], each given all the tokens before it (KV-cache path).

    `allowed(position)` may return the token ids that can stand at a position (e.g. only
    the C-buckets where the language puts the CPU); the expected token is chosen among
    them. The surprise itself is always the model's full −log p.
    """
    if not 1 <= start < len(tokens):
        raise ValueError(f"need at least one token to score after position {start}, got {len(tokens)} tokens")
    decoder = engine.decoder()
    out = []
    for pos in range(len(tokens) - 1):
        logits = decoder.step(tokens[pos])
        if pos + 1 < start:
            continue
        logp = log_softmax(logits)
        actual = tokens[pos + 1]
        candidates = allowed(pos + 1) if allowed else range(len(logp))
        expected = max(candidates, key=lambda i: logp[i])
        out.append(TokenSurprise(actual, -logp[actual], math.exp(logp[actual]), expected, math.exp(logp[expected])))
    return out


def mean_surprise(surprises):
    return sum(s.surprise for s in surprises) / len(surprises)


class AnomalyLikelihood:
    """From raw surprise to a calibrated score in [0, 1), one value at a time.

    Raw surprise depends on the series: a noisy metric is always somewhat surprising. So
    the question is not "is this surprising?" but "is the recent surprise unusual for
    this series?": the mean of the last `short` surprises is compared with the mean and
    spread of the `long` ones before them, as a z-score, and the score is z / (z + scale)
    (0 when z ≤ 0). Unlike a normal CDF it never saturates at 1, so very unusual stays
    distinguishable from extremely unusual. Until `warmup` values have passed out of
    the short window it answers 0.

    Averaged over `short` values, one extreme value is diluted. With `spike` set, the
    latest value alone also counts — its own z-score divided by `spike` — but only when
    it is a record: more than `record` times every surprise seen before it. Real series
    are full of single surprising values; one that beats everything so far by a margin
    is the isolated spike a person wants to hear about — once there are `records_after`
    values behind it: among n values the next one is a record by chance one time in n+1,
    so early in a stream records are cheap (on NAB's files they were a false detection in
    17 of 28).
    """

    def __init__(self, short=50, long=2000, warmup=30, scale=10.0, spike=None, record=1.1, records_after=0):
        self.short, self.long, self.warmup, self.scale = short, long, warmup, scale
        self.spike, self.record, self.records_after = spike, record, records_after
        self.recent = collections.deque()
        self.past = collections.deque()
        self.past_sum = self.past_sq = 0.0
        self.top = -math.inf          # the highest surprise seen so far

    def update(self, surprise):
        """The score after adding `surprise`."""
        record = surprise > self.record * self.top
        self.top = max(self.top, surprise)
        self.recent.append(surprise)
        if len(self.recent) > self.short:
            moved = self.recent.popleft()
            self.past.append(moved)
            self.past_sum += moved
            self.past_sq += moved * moved
            if len(self.past) > self.long:
                old = self.past.popleft()
                self.past_sum -= old
                self.past_sq -= old * old
        return self._score(surprise, record)

    def _score(self, latest, record):
        n = len(self.past)
        if n < self.warmup:
            return 0.0
        mean = self.past_sum / n
        std = max(math.sqrt(max(self.past_sq / n - mean * mean, 0.0)), 1e-3)
        z = (sum(self.recent) / len(self.recent) - mean) / std
        if self.spike and record and n >= self.records_after:
            z = max(z, (latest - mean) / std / self.spike)
        return z / (z + self.scale) if z > 0 else 0.0

    def replay(self, surprises):
        """The score after adding each of `surprises` in turn (0.0 for none).

        A new one without the spike rule ends where the windows alone say: its last `short`
        values and the `long` ones before them. So it takes them in one pass instead of value
        by value — the daemon replays two thousand values for every reading of every atom."""
        surprises = list(surprises)
        if self.spike or self.recent or self.past or not surprises:
            score = 0.0
            for surprise in surprises:
                score = self.update(surprise)
            return score
        cut = max(0, len(surprises) - self.short)
        self.recent = collections.deque(surprises[cut:])
        self.past = collections.deque(surprises[max(0, cut - self.long):cut])
        self.past_sum, self.past_sq = sum(self.past), sum(x * x for x in self.past)
        self.top = max(surprises)
        return self._score(surprises[-1], record=False)
