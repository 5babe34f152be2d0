"""Surprise: how unexpected each token was, −log p(token | previous tokens).

The mean surprise over a sequence is an atom's anomaly score; per token, the model's
most expected token and its probability are the explanation a user reads
("M9, expected M5 (p 0.61)").
"""

import bisect
import collections
import math
from dataclasses import dataclass

DAY = 86400   # seconds


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

    Real series have a daily rhythm, and so has their surprise: a model that reads the
    morning ramp less well than the night is more surprised every morning. Against the
    whole history such an hour looks unusual every day. With `days` set and a time given
    to `update`, the recent mean is also judged against the mean surprise over the same
    span of time on each of the `days` days before (SameTimeBefore), and the lesser of the
    two z-scores counts: a surprise that came at this time of day on each of those days is
    the day's rhythm, not news. The lowest of the days is the baseline, so one bad day at
    this hour does not hide the next. Real series have a weekly rhythm too: a Monday
    morning after a quiet weekend is unlike Sunday's and Saturday's mornings, but like
    last Monday's. With `weeks` set, the same span on each of the `weeks` weeks before is
    a second baseline (the lowest of them, once all of them are in the history), and the
    higher of the two counts: a surprise that came at this time on each of the days
    before, or on each of the weeks before, is the rhythm. All the weeks, because the
    first week of a stream is the model's least trained: against it alone, what is news
    a week later can look like the week's rhythm.
    """

    def __init__(self, short=50, long=2000, warmup=30, scale=10.0, spike=None, record=1.1, records_after=0, days=0,
                 weeks=0):
        self.short, self.long, self.warmup, self.scale = short, long, warmup, scale
        self.spike, self.record, self.records_after = spike, record, records_after
        self.same_time = SameTimeBefore(days, short, weeks) if days or weeks else None
        self.recent = collections.deque()
        self.past = collections.deque()
        self.past_sum = self.past_sq = 0.0
        self.top = -math.inf          # the highest surprise seen so far

    def update(self, surprise, when=None):
        """The score after adding `surprise`, which came at `when` (seconds; optional: a
        value without a time is never a same-time baseline, nor judged against one)."""
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
        baseline = None
        if self.same_time and when is not None:
            baseline = self.same_time.add(when, surprise)
        return self._score(surprise, record, baseline)

    def _score(self, latest, record, baseline=None):
        n = len(self.past)
        if n < self.warmup:
            return 0.0
        mean = self.past_sum / n
        std = max(math.sqrt(max(self.past_sq / n - mean * mean, 0.0)), 1e-3)
        recent = sum(self.recent) / len(self.recent)
        z = (recent - mean) / std
        if baseline is not None:
            z = min(z, (recent - baseline) / std)
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


class SameTimeBefore:
    """The mean surprise over the same span of time as the last `short` values, on each of
    the `days` days before whose span lies inside the dated history, and on each of the
    `weeks` weeks before once all of them do. The baseline is the lowest of the days' means
    or the lowest of the weeks', whichever is higher (None while there is neither).

    Keeps (time, running total) of each dated value, so a span's mean is two bisections."""

    def __init__(self, days, short, weeks=0):
        self.days, self.short, self.weeks = days, short, weeks
        self.whens, self.totals_before = [], []
        self.total = 0.0

    def add(self, when, surprise):
        """Date `surprise` at `when` and return the baseline for the span ending now."""
        if self.whens and when < self.whens[-1]:
            return None    # out of order: keep the history sorted; this one has no baseline
        self.whens.append(when)
        self.totals_before.append(self.total)
        self.total += surprise
        start = self.whens[-min(self.short, len(self.whens))]
        self._forget(before=start - (max(self.days, 7 * self.weeks) + 1) * DAY)   # a day to spare
        if len(self.whens) < self.short:
            return None
        daily = self._lowest(start, when, range(1, self.days + 1))
        weekly = self._lowest(start, when, range(7, 7 * self.weeks + 1, 7), every=True)
        known = [b for b in (daily, weekly) if b is not None]
        return max(known) if known else None

    def _lowest(self, start, end, days_back, every=False):
        """The lowest mean over [start, end] moved back by each of `days_back` days; None when
        none of them is known, or with `every` when one of them is not."""
        means = [self._mean(start - d * DAY, end - d * DAY) for d in days_back]
        if every and None in means:
            return None
        means = [m for m in means if m is not None]
        return min(means) if means else None

    def _mean(self, lo, hi):
        """Mean of the values dated in [lo, hi]; None when the history does not reach back to lo."""
        if not self.whens or self.whens[0] > lo:
            return None
        i, j = bisect.bisect_left(self.whens, lo), bisect.bisect_right(self.whens, hi)
        if j <= i:
            return None
        total_to_j = self.totals_before[j] if j < len(self.whens) else self.total
        return (total_to_j - self.totals_before[i]) / (j - i)

    def _forget(self, before):
        """Drop values dated before `before`, a thousand at a time (lists shift on every del)."""
        stale = bisect.bisect_left(self.whens, before)
        if stale >= 1000:
            del self.whens[:stale], self.totals_before[:stale]
