"""A streaming detector made of KIRI's own parts: StateLanguage, the fast engine, surprise.

It reads one (timestamp, value) at a time and answers an anomaly score in [0, 1] that
uses only what it has seen so far:

1. probation — the first rows are only collected; at its end the value and change
   buckets are learned from them (quantile edges, widened by 10 % of the range; a value
   that would be several quantiles keeps one bucket, the rest go to the other values;
   below / above-range tokens graded in `beyond` bands by how far beyond: up to one
   learned range, then two, four, further), and the model is trained on windows of
   consecutive rows; every third block of rows is held out at first, so the likelihood
   is warmed up on surprise the model has not trained on, as every later row will be;
2. each row is `H V D`: hour of day (from the row's time, on the series' own clock),
   value bucket, change bucket; a window is the last `window` rows (15 tokens), so a
   jump, a flat line or a missing daily peak is surprising, not only a rare value. Rows
   closer than `min_step` (5 minutes, the finest rate the defaults were chosen at) are
   read `stride` rows apart, the stride from the probation's median step: a window of
   1-minute rows is then every fifth row of the last 21, and a change is over 5 rows.
   Five rows one after another would be 5 minutes, and a missing daily peak, a change
   over hours, would read as the continuation of the rows before it;
3. the raw score of a row is the mean surprise of its V and D tokens given the window
   before them; AnomalyLikelihood turns it into "how unusual is the recent surprise for
   this series" in [0, 1], over the last `short` rows — by default a tenth of the
   probation, 60 rows in a 4,000-row file, so that it spans the same share of the series
   at any rate — and over the latest row alone when its surprise beats every earlier one
   by 10 % (an isolated spike), once the history behind it is as long as the probation
   (earlier, a record is no rare thing). The recent surprise is also judged against the
   same hours on the two days before (the lower of the two): a model is more surprised
   at some hours of every day than at others, and that is the day's rhythm, not news;
   and against the same hours on the two weeks before (once both are there, the lower of
   the two; the higher of the day's and the week's baseline counts): a Monday morning
   after a quiet weekend is the week's rhythm. The likelihood says nothing until its
   history holds a third of the probation's worth of surprise: the held-out warm-up is
   about that much, so the first `short` or so rows after probation are silent, while
   the recent mean still holds warm-up values (with a history of 30 values, the first
   tenth of the scored rows held a sixth of all false detections on NAB's files);
4. it keeps learning: every `online_every` rows — by default a twelfth of the probation,
   50 rows in a 4,000-row file, 12 in a 1,000-row one, so that a short series is learned
   as often per share of it as a long one — a few training steps on recent windows, with
   the Adam that trained it in probation: its moments carry over, so a burst's steps are
   sized by the gradients the model has been seeing. (A fresh Adam's first steps move
   every parameter by about the learning rate, however small its gradient: burst after
   burst that was noise: on NAB's noiseless daily wave at half its rate, a day's mean
   surprise crept up from 0.07 to 0.27 in two weeks, with a false detection on most days;
   with the moments carried over it stays between 0.10 and 0.13);
5. after a detection (score ≥ `detect`, i.e. the recent surprise is about two thirds of a
   standard deviation above its usual level) the next `quiet` rows report just under
   `detect`, so one incident is one alert; by default `quiet` is a sixth of the
   probation, so it scales with the series as the probation does (a fixed 100 rows was
   most of an incident in a short file and little of one in a long file).

The window's tenth, the training's twelfth, the quiet period's sixth, the warm-up's third
and detect 0.06 were chosen on the 28-file NAB development subset and on the same files
at a half, a third and a quarter of their rate, each scored as the mean of three model
seeds — see README, "Detection quality", for what that means and how the splits were made.
"""

import random

from .atoms.fit import VALUE_LIMIT
from .core.engines import make_engine
from .core.language import StateLanguage, quantile_edges
from .core.model import GPTConfig, init_params
from .core.surprise import DAY, AnomalyLikelihood, log_softmax
from .core.train import Adam, train
from .ground import is_finite_number

HOUR_BUCKETS = 8


class StreamDetector:
    def __init__(self, probation, window=5, value_buckets=10, change_buckets=6, train_steps=600,
                 online_every=None, online_steps=10, online_lr=0.003, recent=1000, detect=0.06, quiet=None,
                 short=None, beyond=4, min_step=300, seed=0, engine="fast"):
        if probation < window + 10:
            raise ValueError(f"probation of {probation} rows is too short")
        if not (is_finite_number(min_step) and min_step > 0):
            raise ValueError(f"min_step must be a positive number of seconds, got {min_step!r}")
        self.probation, self.window = probation, window
        self.value_buckets, self.change_buckets, self.beyond = value_buckets, change_buckets, beyond
        self.train_steps, self.online_steps = train_steps, online_steps
        self.online_every = max(1, probation // 12) if online_every is None else online_every
        self.online_lr, self.recent, self.detect = online_lr, recent, detect
        self.quiet = max(1, probation // 6) if quiet is None else quiet
        self.rng = random.Random(seed)
        self.engine_name = engine
        self.min_step = min_step
        self.stride = 1               # a window reads every stride-th row; set at the end of probation
        self.times = []               # the probation's timestamps, for its median step
        self.rows = []                # (hour, value) of every row seen
        self.ids = []                 # the tokens of each row once the language exists
        short = max(1, probation // 10) if short is None else short
        self.likelihood = AnomalyLikelihood(short=short, long=2000, warmup=max(30, probation // 3), spike=10,
                                            record=1.1, records_after=probation, days=2, weeks=2)
        self.language = self.model = None
        self.quiet_left = 0

    def update(self, when, value):
        """The anomaly score of the row (`when` in seconds, `value`), given every row before it.
        `when` is the series' own clock: its hour of day is when % 86400 / 3600. A value beyond
        ±VALUE_LIMIT (as a reading of an atom) is a ValueError: beyond it, the learned buckets
        and the change from one row to the next would be infinite."""
        if not (is_finite_number(when) and is_finite_number(value) and abs(value) <= VALUE_LIMIT):
            raise ValueError(f"a row needs a finite time and a value within ±{VALUE_LIMIT:g}, got {when!r}, {value!r}")
        self.rows.append((when % DAY / 3600, value))
        n = len(self.rows)
        if n <= self.probation:
            self.times.append(when)
        if n < self.probation:
            return 0.0
        if n == self.probation:
            self._learn_probation()
            return 0.0
        self.ids.append(self._row_ids(n - 1))
        score = self.likelihood.update(self._raw_surprise(len(self.ids) - 1), when)
        if (n - self.probation) % self.online_every == 0:
            self._train(self._windows(max(self.window, len(self.ids) - self.recent), len(self.ids)),
                        self.online_steps, self.online_lr)
        return self._quieted(score)

    # --- the language and the model ---------------------------------------------------

    def _learn_probation(self):
        self.stride = self._stride()
        values = [v for _, v in self.rows]
        changes = [self._change(i) for i in range(self.stride, len(self.rows))]
        self.language = StateLanguage("stream", {
            "H": (0, 24, HOUR_BUCKETS),
            "V": {"edges": quantile_edges(values, self.value_buckets), "beyond": self.beyond},
            "D": {"edges": quantile_edges(changes, self.change_buckets), "beyond": self.beyond},
        })
        config = GPTConfig(vocab_size=self.language.vocab_size, n_embd=16, n_layer=1, n_head=2,
                           block_size=3 * self.window)
        self.model = make_engine(self.engine_name, config, init_params(config, self.rng))
        self.adam = Adam(len(self.model.flat_params()))
        self.ids = [self._row_ids(i) for i in range(len(self.rows))]
        # Warm the likelihood up on surprise the model has not trained on, like every row
        # to come: every third block of rows is held out, the model trains on the windows
        # that do not touch them, reads them, and then trains on the rest. Blocks spread
        # over the whole probation (not its last third) so that the held-out rows are
        # hours of the day the model has seen, as later rows will be.
        block = 4 * self.window * self.stride
        held_out = [(i // block) % 3 == 2 for i in range(len(self.ids))]
        ends = range(self._reach(), len(self.ids))
        touches = {i: any(held_out[i - self._reach():i + 1:self.stride]) for i in ends}
        self._train([self._sequence(i) for i in ends if not touches[i]], self.train_steps, 0.01)
        for i in ends:
            if held_out[i]:
                self.likelihood.update(self._raw_surprise(i))
        self._train([self._sequence(i) for i in ends if touches[i]], self.train_steps // 3, 0.005)

    def _stride(self):
        """Rows closer than `min_step` seconds are read `stride` apart, so that the rows a window
        reads are about `min_step` apart: on finer data, five rows one after another are a few
        minutes, and a change that takes hours reads as the continuation of the last one."""
        steps = sorted(b - a for a, b in zip(self.times, self.times[1:]))
        step = steps[len(steps) // 2]
        wanted = max(1, round(self.min_step / step)) if step > 0 else 1
        return min(wanted, (self.probation - 11) // max(1, self.window - 1))   # a window and ten more in probation

    def _reach(self):
        """How many rows back the first row of a window is."""
        return (self.window - 1) * self.stride

    def _change(self, i):
        """Row i's value less the value `stride` rows before it (0 for the first rows)."""
        return self.rows[i][1] - self.rows[i - self.stride][1] if i >= self.stride else 0.0

    def _row_ids(self, i):
        hour, value = self.rows[i]
        return self.language.encode({"H": hour, "V": value, "D": self._change(i)})[1:]  # without BOS

    def _sequence(self, end):
        """[BOS] + the tokens of the `window` rows ending at row `end` (inclusive)."""
        seq = [self.language.bos]
        for ids in self.ids[end - self._reach():end + 1:self.stride]:
            seq += ids
        return seq

    def _windows(self, start, stop):
        return [self._sequence(i) for i in range(max(start, self._reach()), stop)]

    def _train(self, sequences, steps, lr):
        if sequences:
            train(self.model, sequences, steps, self.rng, lr=lr, adam=self.adam)

    def _raw_surprise(self, i):
        """Mean surprise of row i's value and change tokens, given the rows before it."""
        seq = self._sequence(i)
        logits = self.model.sequence_logits(seq[:-1], last=2)
        # Row i's tokens are the last three: H, V, D; V is predicted by the logits before it, D by the last.
        return -(log_softmax(logits[0])[seq[-2]] + log_softmax(logits[1])[seq[-1]]) / 2

    def _quieted(self, score):
        if self.quiet_left > 0:
            self.quiet_left -= 1
            return min(score, self.detect * 0.999)
        if score >= self.detect and self.quiet:
            self.quiet_left = self.quiet
        return score
