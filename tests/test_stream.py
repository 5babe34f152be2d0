"""The streaming detector and what it added to the shared parts: learned buckets, likelihood."""

import json
import math
import random
import tempfile
import unittest
from pathlib import Path

from kiri.core.language import StateLanguage, beyond_band, language_from_dict, quantile_edges
from kiri.core.surprise import AnomalyLikelihood
from kiri.stream import StreamDetector
from tests.helpers import CommandLineAssertions, run_kiri

SPIKE, SHIFT = 900, 1250


def series(n=1500, seed=0):
    """A daily wave with noise, one spike at SPIKE and a level shift from SHIFT on: (seconds, value)
    every 5 minutes."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        hour = (i * 5 / 60) % 24
        value = 50 + 10 * math.sin(2 * math.pi * hour / 24) + rng.gauss(0, 1.5)
        if i == SPIKE:
            value += 60
        if i >= SHIFT:
            value += 35
        rows.append((i * 300, value))
    return rows


class LearnedBuckets(unittest.TestCase):
    def test_quantile_edges(self):
        self.assertEqual(quantile_edges(range(1, 11), 4, margin=0), [1, 3, 5, 8, 10])
        self.assertEqual(quantile_edges([3, 3, 3], 5, margin=0), [2.5, 3.5])  # a flat line still gets a bucket
        # By default the outer edges reach 10 % of the range further: the sample's own
        # extremes are not the edge of normal.
        self.assertEqual([round(e, 9) for e in quantile_edges(range(1, 11), 4)], [0.1, 3, 5, 8, 10.9])

    def test_a_repeated_value_keeps_one_bucket_and_gives_the_rest_away(self):
        # Zero nine rows in ten: every quantile but the top is 0, which alone would leave one
        # bucket for everything. The zeros keep [0, 0.5); the bursts share the other three.
        mostly_zero = [0] * 90 + list(range(1, 11))
        edges = quantile_edges(mostly_zero, 4, margin=0)
        self.assertEqual(edges, [0, 0.5, 2.5, 5.5, 10])
        lang = StateLanguage("s", {"V": {"edges": edges}})
        self.assertEqual([lang.decode(lang.encode({"V": v})) for v in (0, 1, 3, 10)], ["V0", "V1", "V2", "V3"])
        # Two levels (a square wave) are two buckets, cut halfway between them.
        self.assertEqual(quantile_edges([0] * 95 + [5] * 5, 4, margin=0), [0, 2.5, 5])
        # Fewer distinct values than buckets: one bucket each, no more.
        self.assertEqual(quantile_edges([1, 1, 2, 2, 7], 10, margin=0), [1, 2, 4.5, 7])

    def test_how_far_beyond_the_edges_is_graded_in_bands(self):
        # The learned range is 0..20: one range beyond it is band 1, then (1, 2], (2, 4], further.
        lang = StateLanguage("s", {"V": {"edges": [0, 10, 20], "beyond": 4}})
        self.assertEqual(lang.tokens, ["V<4", "V<3", "V<2", "V<", "V0", "V1", "V>", "V>2", "V>3", "V>4"])
        for value, token in ((21, "V>"), (40, "V>"), (41, "V>2"), (60, "V>2"), (61, "V>3"), (100, "V>3"),
                             (101, "V>4"), (1e308, "V>4"), (-1, "V<"), (-21, "V<2"), (-1e308, "V<4")):
            self.assertEqual(lang.decode(lang.encode({"V": value})), token, value)
        self.assertEqual([beyond_band(d, 3) for d in (0.5, 1, 1.5, 2, 2.5, 1e9, math.inf)], [1, 1, 2, 2, 3, 3, 3])
        # The bands are part of the language a weights file keeps; one band is written as before.
        self.assertEqual(language_from_dict(lang.to_dict()).tokens, lang.tokens)
        self.assertNotIn("beyond", StateLanguage("s", {"V": {"edges": [0, 1]}}).to_dict()["schema"][0][1])
        self.assertEqual(lang.bucket_range(lang.index["V1"]), (10, 20))
        self.assertIsNone(lang.bucket_range(lang.index["V>2"]))
        for bad in (0, 17, 2.0, True, "4"):
            with self.assertRaisesRegex(ValueError, "bands beyond its edges"):
                StateLanguage("s", {"V": {"edges": [0, 1], "beyond": bad}})

    def test_below_and_above_range_tokens(self):
        lang = StateLanguage("s", {"V": {"edges": [0, 10, 20]}})
        self.assertEqual(lang.tokens, ["V<", "V0", "V1", "V>"])
        for value, token in ((-1, "V<"), (0, "V0"), (9.9, "V0"), (10, "V1"), (20, "V1"), (20.1, "V>")):
            self.assertEqual(lang.decode(lang.encode({"V": value})), token, value)
        self.assertEqual(language_from_dict(lang.to_dict()).tokens, lang.tokens)
        with self.assertRaisesRegex(ValueError, "field V must be a finite number"):
            lang.encode({"V": float("nan")})
        with self.assertRaisesRegex(ValueError, "increasing"):
            StateLanguage("s", {"V": {"edges": [3, 1]}})


class Likelihood(unittest.TestCase):
    def test_unusual_recent_surprise_scores_higher_than_anything_usual(self):
        rng = random.Random(1)
        likelihood = AnomalyLikelihood(short=5, long=500, warmup=50)
        quiet = [likelihood.update(rng.gauss(1.0, 0.2)) for _ in range(400)]
        self.assertEqual(quiet[0], 0.0)                      # warming up
        spike = likelihood.update(6.0)
        self.assertGreater(spike, 1.5 * max(quiet))
        self.assertTrue(all(0.0 <= x < 1.0 for x in quiet + [spike]))

    def test_a_record_spike_counts_on_its_own(self):
        def run(spike):
            rng = random.Random(2)
            likelihood = AnomalyLikelihood(short=50, long=500, warmup=30, spike=spike)
            scores = [likelihood.update(rng.gauss(2.0, 0.5)) for _ in range(400)]
            return scores, likelihood.update(12.0), likelihood.update(12.5)
        quiet, diluted, _ = run(None)
        quiet_too, alone, not_a_record = run(10)
        self.assertEqual(quiet, quiet_too, "no record: the spike option changes nothing")
        self.assertLess(diluted, 0.05, "a 50-value mean dilutes one extreme value")
        self.assertGreater(alone, 0.1)
        self.assertLess(not_a_record, alone, "12.5 is not 10 % above the 12.0 just seen")

    def test_a_record_counts_only_after_enough_history(self):
        def spike_after(records_after):
            rng = random.Random(2)
            likelihood = AnomalyLikelihood(short=50, long=500, warmup=30, spike=10, records_after=records_after)
            for _ in range(400):
                likelihood.update(rng.gauss(2.0, 0.5))
            return likelihood.update(12.0)   # then 351 values are past the 50-value short window
        self.assertGreater(spike_after(351), 0.1)
        self.assertLess(spike_after(352), 0.05, "a record among too few values is no rare thing")

    def test_never_saturates(self):
        def after(value):
            likelihood = AnomalyLikelihood(short=1, long=100, warmup=10)
            for i in range(100):
                likelihood.update(1.0 + 0.01 * (i % 3))
            return likelihood.update(value)
        self.assertLess(after(50.0), after(5000.0))
        self.assertLess(after(5000.0), 1.0)


    def test_a_surprise_at_the_same_time_every_day_is_the_days_rhythm(self):
        # 5-minute surprises, a little higher from 10:00 to 11:00 every day; on day 5 also
        # from 16:00 to 17:00. Judged against the whole history, 10:00 is unusual every
        # day; judged also against the same hour on the two days before, only 16:00 is.
        def run(days):
            rng = random.Random(4)
            likelihood = AnomalyLikelihood(short=12, long=2000, warmup=30, days=days)
            scores = {}
            for i in range(5 * 288):
                when = 3 * 86400 + i * 300
                hour = i % 288 / 12
                bumped = 10 <= hour < 11 or (i >= 4 * 288 and 16 <= hour < 17)
                scores[(i // 288, hour)] = likelihood.update(rng.gauss(1.0, 0.1) + (0.5 if bumped else 0.0), when)
            return scores
        plain, rhythm = run(0), run(2)
        end_of = lambda scores, day, hour: scores[(day, hour + 11 / 12)]   # the hour's last row: 12 in the window
        for day in (1, 2, 3, 4):
            self.assertGreater(end_of(plain, day, 10), 0.2, f"day {day}, 10:00, without days")
            # What is left is noise: a 12-value mean against the lower of two others.
            self.assertLess(end_of(rhythm, day, 10), end_of(plain, day, 10) / 3, f"day {day}, 10:00, as the days before")
        self.assertEqual(end_of(rhythm, 0, 10), end_of(plain, 0, 10), "no day before yet: judged as without")
        self.assertGreater(end_of(rhythm, 4, 16), 0.2, "16:00 was not surprising on the days before")
        self.assertEqual(end_of(rhythm, 4, 16), end_of(plain, 4, 16))

    def test_a_surprise_at_the_same_time_every_week_is_the_weeks_rhythm(self):
        # 5-minute surprises over four weeks from a Monday, higher from 06:00 to 07:00 on
        # Mondays only (the week starts); in the fourth week also on Monday from 15:00 to
        # 16:00. The days before a Monday are a Sunday and a Saturday, so the daily rhythm
        # cannot explain 06:00; the two Mondays before can, once both are there.
        def run(weeks):
            rng = random.Random(5)
            likelihood = AnomalyLikelihood(short=12, long=2000, warmup=30, days=2, weeks=weeks)
            scores = {}
            for i in range(4 * 7 * 288):
                day, hour = i // 288, i % 288 / 12
                monday = day % 7 == 0
                bumped = monday and (6 <= hour < 7 or (day == 21 and 15 <= hour < 16))
                scores[(day, hour)] = likelihood.update(rng.gauss(1.0, 0.1) + (0.5 if bumped else 0.0),
                                                        4 * 86400 + i * 300)   # day 4 of 1970: a Monday
            return scores
        daily, weekly = run(0), run(2)
        end_of = lambda scores, day, hour: scores[(day, hour + 11 / 12)]   # the hour's last row
        for monday in (7, 14, 21):
            self.assertGreater(end_of(daily, monday, 6), 0.2, f"day {monday}, 06:00, the days before only")
        for monday in (14, 21):
            self.assertLess(end_of(weekly, monday, 6), end_of(daily, monday, 6) / 3, f"day {monday}, 06:00, weeks")
        for monday in (0, 7):
            self.assertEqual(end_of(weekly, monday, 6), end_of(daily, monday, 6), f"day {monday}: not two weeks yet")
        self.assertGreater(end_of(weekly, 21, 15), 0.2, "15:00 was not surprising on the Mondays before")
        # A second baseline can only hide: no score is higher with it than without.
        self.assertTrue(all(weekly[key] <= daily[key] + 1e-12 for key in daily))

    def test_a_value_out_of_time_order_has_no_same_time_baseline(self):
        likelihood = AnomalyLikelihood(short=3, long=100, warmup=5, days=1)
        for i in range(400):
            likelihood.update(1.0 + 0.1 * (i % 2), i * 300)
        later = likelihood.same_time.whens[-1]
        likelihood.update(2.0, later - 600)           # a clock that went back: scored, not dated
        likelihood.update(2.0)                        # no time at all: the same
        self.assertEqual(likelihood.same_time.whens[-1], later)
        self.assertGreater(likelihood.update(2.0, later + 300), 0.1)

    def test_a_replay_in_one_pass_ends_where_one_value_at_a_time_does(self):
        rng = random.Random(3)
        for n in (0, 1, 41, 42, 43, 100, 2011, 5000):
            values = [abs(rng.gauss(0.3, 0.1)) * (3 if i > n - 5 else 1) for i in range(n)]
            one_by_one = AnomalyLikelihood(short=12, long=2000, warmup=30)
            expected = 0.0
            for value in values:
                expected = one_by_one.update(value)
            replayed = AnomalyLikelihood(short=12, long=2000, warmup=30)
            self.assertAlmostEqual(replayed.replay(values), expected, places=9, msg=f"{n} values")
            self.assertAlmostEqual(replayed.update(0.9), one_by_one.update(0.9), places=9,
                                   msg=f"{n} values: it goes on from the same windows")


class Detector(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.detector = StreamDetector(probation=225)
        cls.scores = [cls.detector.update(when, value) for when, value in series()]

    def test_flags_the_level_shift(self):
        detect = StreamDetector(probation=225).detect
        self.assertGreaterEqual(max(self.scores[SHIFT:SHIFT + 10]), detect)

    def test_flags_the_spike(self):
        detect = StreamDetector(probation=225).detect
        self.assertGreaterEqual(max(self.scores[SPIKE:SPIKE + 5]), detect)

    def test_quiet_elsewhere(self):
        detect = StreamDetector(probation=225).detect
        detections = [i for i, s in enumerate(self.scores) if s >= detect]
        # The level stays shifted to the end: each quiet period that ends finds it again.
        # The likelihood's window here is 22 rows (a tenth of the probation), the model
        # trains every 18 (a twelfth) with the Adam that trained it in probation, and the
        # level is 0.06: it finds the shift 3 rows after it, with 1 detection elsewhere in
        # 1,275 rows (a fresh Adam for every burst: 4 rows, 2 elsewhere; training every 50
        # rows and level 0.05: 5, 3; with a fixed 50-row window as well: 13, 2).
        elsewhere = [i for i in detections if not (SPIKE <= i <= SPIKE + 5 or SHIFT <= i)]
        self.assertLessEqual(len(elsewhere), 2, elsewhere)

    def test_values_beyond_the_learned_range_are_graded(self):
        # The shift (+35) lands within one learned range above the probation's values: `V>`.
        # Twice as far out would be a new token, so a level that goes on leaving the range
        # is still read (see test_how_far_beyond_the_edges_is_graded_in_bands).
        language = self.detector.language
        self.assertEqual(language.beyond, {"V": 4, "D": 4})
        self.assertEqual(language.decode(self.detector.ids[-1]).split()[1], "V>")
        edges = language.edges["V"]
        far = edges[-1] + 3 * (edges[-1] - edges[0])
        self.assertEqual(language.decode(language.encode({"H": 0, "V": far, "D": 0})).split()[1], "V>3")

    def test_probation_is_not_scored_and_scores_are_in_range(self):
        self.assertEqual(set(self.scores[:225]), {0.0})
        self.assertTrue(all(0.0 <= s <= 1.0 and not math.isnan(s) for s in self.scores))

    def test_rows_after_probation_are_dated_for_the_same_time_baseline(self):
        # The held-out probation rows warm the likelihood up undated: a baseline is a day
        # of rows scored as every later row is, by the model after its probation.
        same_time = self.detector.likelihood.same_time
        self.assertEqual((same_time.days, same_time.weeks), (2, 2))
        self.assertEqual(same_time.whens, [when for when, _ in series()[225:]])

    def test_the_likelihood_waits_for_a_third_of_the_probation(self):
        # 75 values of history for a probation of 225: the held-out warm-up gives 65 (rows
        # 40-59, 100-119, 160-179 and 220-224), 22 of them are the recent window, so the
        # first 32 rows after probation score 0 — their recent mean would still be partly
        # warm-up values.
        self.assertEqual(self.detector.likelihood.warmup, 75)
        self.assertEqual(set(self.scores[225:225 + 32]), {0.0})
        self.assertGreater(max(self.scores[225 + 32:SPIKE]), 0.0)
        self.assertEqual(StreamDetector(probation=60).likelihood.warmup, 30, "never less than 30")

    def test_the_likelihood_window_is_a_share_of_the_probation(self):
        # A tenth of it: 60 rows of a 4,000-row file of 5-minute rows, 24 of a 1,600-row
        # hourly one — the same share of the series, as NAB's windows are.
        self.assertEqual(StreamDetector(probation=600).likelihood.short, 60)
        self.assertEqual(StreamDetector(probation=240).likelihood.short, 24)
        self.assertEqual(StreamDetector(probation=240, short=7).likelihood.short, 7)

    def test_online_training_is_a_share_of_the_probation(self):
        # A twelfth of it: every 50 rows of a 4,000-row file, every 12 of a 1,000-row one.
        self.assertEqual(StreamDetector(probation=604).online_every, 50)
        self.assertEqual(StreamDetector(probation=151).online_every, 12)
        self.assertEqual(StreamDetector(probation=20).online_every, 1)
        self.assertEqual(StreamDetector(probation=240, online_every=7).online_every, 7)

    def test_online_training_goes_on_with_the_probation_adam(self):
        # 600 steps on probation, 200 after the held-out blocks are read, then 10 steps
        # every 18 rows for the 1,275 rows after it: one Adam, its moments carried over.
        self.assertEqual(self.detector.adam.t, 600 + 200 + 10 * (1275 // 18))

    def test_a_row_beyond_what_it_can_read_is_refused_and_not_kept(self):
        # 1e308 and -1e308 are finite, but their difference is not, and neither would be
        # learned edges reaching 10 % beyond them: the limit is an atom reading's, ±1e15.
        detector = StreamDetector(probation=40)
        detector.update(0, 1.0)
        for when, value in ((300, 1e308), (300, -1e16), (300, float("nan")), (float("inf"), 1.0), (None, 1.0)):
            with self.assertRaisesRegex(ValueError, "within ±1e\\+15"):
                detector.update(when, value)
        self.assertEqual(detector.rows, [(0.0, 1.0)])
        detector.update(300, -1e15)
        self.assertEqual(detector.rows[-1], (300 / 3600, -1e15))
        self.assertEqual(detector._change(1), -1e15 - 1.0)

    def test_rows_closer_than_five_minutes_are_read_apart(self):
        # The stride comes from the probation's median step: 5-minute and hourly rows are
        # read one after another, 100-second rows every third, 1-minute rows every fifth;
        # a stride never makes a window longer than the probation can train on.
        def stride(step, probation=60, **kw):
            detector = StreamDetector(probation=probation, train_steps=3, **kw)
            for i in range(probation):
                detector.update(i * step, float(i % 7))
            return detector.stride
        self.assertEqual([stride(step) for step in (300, 3600, 100, 60)], [1, 1, 3, 5])
        self.assertEqual(stride(1, probation=30), 4, "(30 - 11) // 4: a window and ten more")
        self.assertEqual(stride(0), 1, "repeated timestamps: no step to go by")
        self.assertEqual(stride(60, min_step=60), 1)
        self.assertEqual(stride(60, window=1), 5, "a window of one row still reads its change over 5")

    def test_a_window_reads_every_stride_th_row_and_its_change(self):
        detector = StreamDetector(probation=60, train_steps=3, online_every=1000)
        rows = [(i * 100, float(i * i % 11)) for i in range(80)]
        for when, value in rows:
            detector.update(when, value)
        self.assertEqual(detector.stride, 3)
        self.assertEqual([detector._change(i) for i in range(80)],
                         [0.0] * 3 + [rows[i][1] - rows[i - 3][1] for i in range(3, 80)])
        last = len(detector.ids) - 1
        expected = [detector.language.bos]
        for i in range(last - 12, last + 1, 3):
            expected += detector.ids[i]
        self.assertEqual(detector._sequence(last), expected)

    def test_min_step_must_be_a_positive_number_of_seconds(self):
        for bad in (0, -300, float("nan"), float("inf"), "300", None):
            with self.assertRaisesRegex(ValueError, "min_step"):
                StreamDetector(probation=60, min_step=bad)

    def test_deterministic(self):
        # The same seed, the same scores — on a small detector: determinism is the seed's,
        # not the size's, and a second full run would double this class's time.
        def run():
            detector = StreamDetector(probation=40, train_steps=30, online_every=10)
            return [detector.update(when, value) for when, value in series(160)]
        first = run()
        self.assertEqual(run(), first)
        self.assertGreater(len(set(first)), 20, "the scores vary: the test compares something")


class BenchCommand(CommandLineAssertions, unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.root = Path(self.tmp.name)
        (self.root / "data" / "mine").mkdir(parents=True)

    def tearDown(self):
        self.tmp.cleanup()

    def write(self, name, rows):
        text = "timestamp,value\n" + "".join(f"{ts},{v}\n" for ts, v in rows)
        (self.root / "data" / "mine" / name).write_text(text)

    def test_results_have_exactly_the_data_rows(self):
        rows = [(f"2020-01-{1 + i // 288:02d} {(i % 288) * 5 // 60:02d}:{(i % 288) * 5 % 60:02d}:00", f"{v:.3f}")
                for i, (_, v) in enumerate(series(400))]
        self.write("one.csv", rows)
        # The corpus's own windows file (as in ../shared/nab) fills the label column, and
        # nothing else: the detector never reads it. --jobs 2 takes the worker-pool path.
        (self.root / "dev_windows.json").write_text(
            json.dumps({"mine/one.csv": [[rows[300][0] + ".000000", rows[309][0] + ".000000"]]}))
        proc = run_kiri("bench", "nab", "--data", self.root, "--out", self.root / "results", "--jobs", 2,
                        home=self.root)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertIn("mine/one.csv: 400 rows", proc.stdout)
        lines = (self.root / "results" / "kiri" / "mine" / "kiri_one.csv").read_text().splitlines()
        self.assertEqual(lines[0], "timestamp,value,anomaly_score,label")
        self.assertEqual([line.split(",")[0] for line in lines[1:]], [ts for ts, _ in rows])
        self.assertEqual([float(line.split(",")[1]) for line in lines[1:]], [float(v) for _, v in rows])
        self.assertEqual([line.split(",")[3] for line in lines[1:]], ["1" if 300 <= i <= 309 else "0" for i in range(400)])

    def test_the_clock_is_the_datas_own(self):
        from kiri.bench.nab import seconds_of
        self.assertEqual(seconds_of("1970-01-02 14:30:00"), 86400 + 14.5 * 3600)
        self.assertEqual(seconds_of("2014-02-14 14:30:00.000000") % 86400 / 3600, 14.5)

    def test_bad_value_names_the_file_and_line(self):
        # 1e308 is a finite float, but beyond ±1e15, the limit of every reading KIRI reads.
        for bad, error in (("oops", "bad.csv:9"), ("1e308", "bad.csv:9: value '1e308' is beyond ±1e+15")):
            rows = [(f"2020-01-01 00:{i:02d}:00", "1.0") for i in range(50)]
            rows[7] = ("2020-01-01 00:07:00", bad)
            self.write("bad.csv", rows)
            proc = run_kiri("bench", "nab", "--data", self.root, "--out", self.root / "results", home=self.root)
            self.assertUserError(proc, error)
            self.assertFalse((self.root / "results" / "kiri" / "mine" / "kiri_bad.csv").exists(), bad)


if __name__ == "__main__":
    unittest.main()
