"""The atoms on synthetic history: the seed's showcases, and the Atom machinery they share."""

import random
import tempfile
import time
import unittest
from pathlib import Path
from unittest import mock

from kiri.atoms import verbs
from kiri.atoms.atom import (MIN_OBSERVATIONS, TRAIN_WINDOW, Atom, AtomSpec, clock_of, evenly_spaced, held_out_indices,
                             threshold_of)
from kiri.atoms.score import SURPRISING
from kiri.atoms.drift.schema import SPEC as DRIFT, synthetic as drift_synthetic
from kiri.atoms.pulse.schema import SPEC as PULSE, synthetic as pulse_synthetic
from kiri.atoms.rhythm.schema import SPEC as RHYTHM, synthetic as rhythm_synthetic
from kiri.core.weights import previous_path
from kiri.config import load_settings
from kiri.errors import KiriError
from kiri.store import open_store

END = 1_790_000_000.0  # a fixed "now": tests never depend on the clock


def history(generate, n, interval, seed=0):
    rng = random.Random(seed)
    return [{"ts": END - (n - i) * interval, "values": generate(rng, END - (n - i) * interval), "synthetic": True}
            for i in range(n)]


def trained(spec, generate, n, steps, tmp):
    """An atom trained on n synthetic readings, its threshold calibrated on 100 held-out ones
    (the product's sample is larger; the showcases' readings sit far from the threshold —
    Pulse's afternoon 0.16 and night 2.15 against 1.27, the same from 120 as from 300 —
    and calibration is a large part of a test training's time)."""
    atom = Atom(spec)
    with mock.patch("kiri.atoms.atom.CALIBRATION_SAMPLE", 100):
        atom.train(history(generate, n, spec.interval), Path(tmp) / f"{spec.name}.json", steps=steps)
    return atom


_pulse = []


def two_weeks_of_pulse():
    """Pulse trained on two synthetic weeks (weekdays 9–18 busy), 400 steps: built once, for
    the showcase and the clock test alike (each training is most of a minute)."""
    if not _pulse:
        with tempfile.TemporaryDirectory() as tmp:
            _pulse.append(trained(PULSE, pulse_synthetic, 14 * 24 * 12, 250, tmp))
    return _pulse[0]


class Showcases(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_pulse_flags_overload_and_names_the_tokens(self):
        atom = two_weeks_of_pulse()
        # Read at a weekday's 3 p.m., not now: run at 1 a.m. on a Saturday, a busy "normal"
        # reading is itself unusual (scored 1.33 there, and the overload only 4.9 times that).
        at_3pm = time.mktime((2025, 3, 4, 15, 0, 0, 0, 0, -1))
        normal = atom.score_tokens("C5 M5 D4 S1 L1 N1", ts=at_3pm)
        overload = atom.score_tokens("C9 M9 D4 S4 L4 N1", ts=at_3pm)
        self.assertGreaterEqual(overload.score, 5 * normal.score, (overload.score, normal.score))
        self.assertEqual(overload.verdict, "anomaly")
        self.assertEqual(normal.verdict, "normal")
        surprise = {t["token"]: t["surprise"] for t in overload.tokens}
        quiet = max(t["surprise"] for t in normal.tokens)
        for token in ("C9", "M9", "S4"):
            self.assertGreater(surprise[token], max(2.0, quiet), token)
        self.assertLess(surprise["D4"], 1.0)
        expected = {t["token"]: t["expected"] for t in overload.tokens}
        self.assertEqual(expected["M9"][0], "M")  # the explanation names a token of the same field

    def test_rhythm_flags_3am_sunday_activity(self):
        atom = trained(RHYTHM, rhythm_synthetic, 14 * 24 * 12, 250, self.tmp.name)
        sunday_night = {"I": 60.0, "A": 0.0, "H": 2.9, "W": 6, "F": 0.0, "G": 0}
        sunday_3am_work = {"I": 0.2, "A": 96.0, "H": 3.0, "W": 6, "F": 25.0, "G": 1}
        tuesday = {"I": 0.5, "A": 90.0, "H": 14.0, "W": 1, "F": 40.0, "G": 0}
        tuesday_next = {"I": 0.3, "A": 94.0, "H": 14.1, "W": 1, "F": 45.0, "G": 1}
        odd = atom.score(sunday_3am_work, [sunday_night])
        usual = atom.score(tuesday_next, [tuesday])
        self.assertEqual(odd.verdict, "anomaly", odd.score)
        self.assertEqual(usual.verdict, "normal", usual.score)
        self.assertGreater(odd.score, 2 * usual.score)
        most = max(odd.tokens, key=lambda t: t["surprise"])
        self.assertEqual((most["token"], most["expected"]), ("I0", "I5"))  # "active, expected idle"

    def test_drift_flags_a_burst_of_new_work(self):
        atom = trained(DRIFT, drift_synthetic, 28 * 24, 250, self.tmp.name)
        burst = atom.score_tokens("H7 W1 A8 C0 S5")    # a Tuesday, 14–16 h
        normal = atom.score_tokens("H7 W1 A2 C2 S1")
        self.assertGreaterEqual(burst.score, 5 * normal.score, (burst.score, normal.score))
        self.assertEqual(burst.verdict, "anomaly")


class Clock(unittest.TestCase):
    """Pulse reads each reading at its hour and weekday: the same reading can be normal on a
    working afternoon and an anomaly at 3 a.m."""

    def test_a_busy_machine_is_normal_at_3_pm_on_a_weekday_and_flagged_at_3_am(self):
        atom = two_weeks_of_pulse()
        tuesday = time.mktime((2025, 3, 4, 0, 0, 0, 0, 0, -1))
        busy = {"C": 55.0, "M": 55.0, "D": 44.0, "S": 30.0, "L": 5.5, "N": 1}
        idle = {"C": 12.0, "M": 47.0, "D": 44.0, "S": 24.0, "L": 1.2, "N": 1}
        afternoon = atom.score(busy, [busy], ts=tuesday + 15 * 3600)
        night = atom.score(busy, [idle], ts=tuesday + 3 * 3600)        # the machine turns busy at 3 a.m.
        morning = atom.score(busy, [idle], ts=tuesday + 9.1 * 3600)    # the same jump as work starts
        self.assertEqual(afternoon.verdict, "normal", afternoon.explain())
        self.assertEqual(night.verdict, "anomaly", night.explain())
        self.assertGreater(night.score, morning.score)
        self.assertNotIn("H", [t["field"] for t in night.tokens])   # the hour is read, never blamed
        self.assertIn("C", [t["field"] for t in night.surprising()])

    def test_a_time_the_clock_cannot_read_is_a_clear_error(self):
        with self.assertRaisesRegex(ValueError, "beyond what this system's clock can read"):
            clock_of(1e18)

    def test_typed_tokens_may_name_the_hour_or_are_read_now(self):
        hist = history(pulse_synthetic, 200, PULSE.interval)
        with tempfile.TemporaryDirectory() as tmp:
            atom = Atom(PULSE)
            atom.train(hist, Path(tmp) / "pulse.json", steps=5)
        at_3am = time.mktime((2025, 3, 4, 3, 0, 0, 0, 0, -1))
        self.assertEqual(atom.score_tokens("C9 M9 D4 S4 L4 N1", ts=at_3am).score,
                         atom.score_tokens("H1 W1 C9 M9 D4 S4 L4 N1").score)
        with self.assertRaisesRegex(ValueError, "expected 8 tokens"):
            atom.score_tokens("H1 C9 M9 D4 S4 L4 N1")


class AtomMachinery(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.path = Path(self.tmp.name) / "pulse.json"

    def tearDown(self):
        self.tmp.cleanup()

    def test_training_and_scoring_see_the_same_sequences(self):
        hist = history(pulse_synthetic, 40, PULSE.interval)
        atom = Atom(PULSE)
        atom.train(hist, self.path, steps=3)
        ids, start = atom.sequences(hist)[-1]
        self.assertEqual(start, 9)                        # after one previous observation: BOS, clock, 6 fields
        self.assertEqual(len(ids), 18)
        direct = atom.score(hist[-1]["values"], [hist[-2]["values"]], ts=hist[-1]["ts"])
        self.assertEqual(direct.context, 1)
        surprises = atom._surprises(ids, start)
        self.assertEqual([t["field"] for t in direct.tokens], list("CMDSLN"))   # the clock is not judged
        self.assertAlmostEqual(direct.score, sum(s.surprise for s in surprises) / 6, places=12)

    def test_a_gap_breaks_the_context(self):
        hist = history(pulse_synthetic, 3, PULSE.interval)
        hist[2]["ts"] += 10 * PULSE.interval
        atom = Atom(PULSE)
        self.assertEqual(atom.context_of(hist, 1), [atom.with_clock(hist[0]["values"], hist[0]["ts"])])
        self.assertEqual(atom.context_of(hist, 2), [])

    def test_threshold_is_saved_and_reloaded(self):
        atom = Atom(PULSE)
        report = atom.train(history(pulse_synthetic, 60, PULSE.interval), self.path, steps=5)
        again = Atom.load(PULSE, self.path)
        self.assertEqual(again.threshold, report.threshold)
        self.assertEqual(again.score_tokens("C5 M5 D4 S1 L1 N1", ts=END).score,
                         atom.score_tokens("C5 M5 D4 S1 L1 N1", ts=END).score)
        self.assertEqual(again.weights.trained_on["synthetic"], 60)

    def test_too_little_data_leaves_weights_untouched(self):
        Atom(PULSE).train(history(pulse_synthetic, 30, PULSE.interval), self.path, steps=2)
        before = self.path.read_bytes()
        with self.assertRaisesRegex(KiriError, f"need at least {MIN_OBSERVATIONS}"):
            Atom(PULSE).train(history(pulse_synthetic, 5, PULSE.interval), self.path, steps=2)
        self.assertEqual(self.path.read_bytes(), before)

    def test_untrained_atom_says_so(self):
        atom = Atom.load(PULSE, self.path)
        self.assertFalse(atom.trained)
        with self.assertRaisesRegex(KiriError, "no trained weights yet"):
            atom.score_tokens("C5 M5 D4 S1 L1 N1")

    def test_broken_weights_fall_back_to_previous(self):
        Atom(PULSE).train(history(pulse_synthetic, 30, PULSE.interval), self.path, steps=2)
        Atom(PULSE).train(history(pulse_synthetic, 30, PULSE.interval, seed=1), self.path, steps=2)
        self.path.write_text("{oops")
        atom = Atom.load(PULSE, self.path)
        self.assertTrue(atom.trained)
        self.assertIn("not valid JSON", atom.weights_note)
        self.assertTrue(previous_path(self.path).exists())

    def test_held_out_each_kind_in_proportion_in_blocks_over_the_whole_history(self):
        rows = [{"synthetic": True}] * 100 + [{"synthetic": False}] * 10
        held = held_out_indices(rows, 0.2)
        # 100 synthetic rows: blocks of 4, every fifth counted back from the newest;
        # 10 real rows: every fifth row, the newest included.
        self.assertEqual(held, [i for i in range(100) if (24 - i // 4) % 5 == 0] + [104, 109])
        self.assertEqual(len(held), 22)
        week = [{"synthetic": False}] * 2016
        held = held_out_indices(week, 0.2)
        self.assertEqual(held[-12:], list(range(2004, 2016)), "the newest hour is held out")
        self.assertLess(held[0], 12 * 5, "so is an hour near the start of the week")
        self.assertAlmostEqual(len(held) / len(week), 0.2, delta=0.01)


if __name__ == "__main__":
    unittest.main()


class LearnedFields(unittest.TestCase):
    """A field declared {"learn": n} is cut where the atom's own history falls."""

    def test_buckets_come_from_the_history_and_the_unseen_is_above_range(self):
        spec = AtomSpec(name="queue", schema={"Q": {"learn": 4}, "T": (0, 100, 5)}, n_embd=16, n_layer=1,
                        context=0, interval=60.0)
        self.assertEqual(Atom(spec).language.tokens[:3], ["Q<", "Q0", "Q>"], "untrained: one placeholder bucket")

        def generate(rng, ts):
            return {"Q": rng.choice((1200, 1300, 1400, 1500, 1600)), "T": 40}
        with tempfile.TemporaryDirectory() as tmp:
            atom = trained(spec, generate, 200, 150, tmp)
            # Quantiles of the history, the outer ones 10 % of its range further out.
            self.assertEqual(atom.language.edges["Q"], [1160, 1300, 1400, 1500, 1640])
            self.assertEqual(Atom.load(spec, Path(tmp) / "queue.json").language.edges["Q"],
                             [1160, 1300, 1400, 1500, 1640], "the learned edges are saved with the weights")
        usual, unseen = atom.score({"Q": 1350, "T": 40}), atom.score({"Q": 90000, "T": 40})
        self.assertEqual(unseen.tokens[0]["token"], "Q>")
        self.assertGreater(unseen.score, 3 * usual.score)
        self.assertEqual(unseen.verdict, "anomaly")

    def test_a_declared_atom_can_learn_a_field(self):
        from kiri.atoms.custom import parse_schema
        self.assertEqual(parse_schema("gpu", "T=0:100:10 Q=learn:6"), {"T": (0.0, 100.0, 10), "Q": {"learn": 6}})
        for bad in ("Q=learn", "Q=learn:0", "Q=learn:six", "Q=learn:6 Q=learn:2"):
            with self.assertRaisesRegex(KiriError, "must look like Q=learn:6", msg=bad):
                parse_schema("gpu", bad)


class Threshold(unittest.TestCase):
    """The threshold is the held-out scores' 99th percentile, but never below one unlikely token."""

    def test_a_steady_history_gets_the_floor(self):
        steady = {"C": 4.0, "M": 42.0, "D": 44.0, "S": 0.0, "L": 0.3, "N": 1}
        rng = random.Random(0)
        hist = [{"ts": END - (300 - i) * 60, "synthetic": False,   # jitter inside the same buckets
                 "values": dict(steady, C=3 + 4 * rng.random(), L=0.2 + 0.5 * rng.random())} for i in range(300)]
        with tempfile.TemporaryDirectory() as tmp:
            atom = Atom(PULSE)
            report = atom.train(hist, Path(tmp) / "pulse.json", steps=30)
        floor = SURPRISING / 6
        saved = atom.weights.threshold
        self.assertEqual((report.threshold, saved["score"], saved["floor"], saved["set_by"]),
                         (floor, floor, floor, "floor"))
        self.assertLess(saved["q99"], 0.01, "every held-out reading is ~0: the 99th percentile collapses")
        self.assertEqual(report.threshold_reason(),
                         f"floor: one unlikely token; q99 of 60 held-out scores was {saved['q99']:.3f}")
        self.assertEqual(saved["false_alarm_rate"], 0.0)

        self.assertEqual(atom.score(dict(steady, C=6.5), [steady], ts=END).verdict, "normal")
        two_far = atom.score(dict(steady, C=95.0, M=95.0), [steady], ts=END)
        self.assertEqual(two_far.verdict, "anomaly")
        # One bucket off in one field is a bucket this history never visited, as new to the
        # model as one far away (README, Limits): the floor cannot make it normal, but it is
        # now tens of times the threshold, where the collapsed q99 made it thousands.
        one_off = atom.score(dict(steady, C=15.0), [steady], ts=END)
        self.assertLess(one_off.ratio, 100)

    def test_threshold_of_and_the_false_alarm_rate(self):
        scores = [0.1] * 98 + [5.0, 6.0]
        t = threshold_of(scores, [True] * 100, floor=0.3)
        self.assertEqual((t["score"], t["q99"], t["set_by"], t["scored"], t["real_scored"]), (5.0, 5.0, "q99", 100, 100))
        self.assertEqual(t["false_alarm_rate"], 0.01, "one real reading of 100 over the line")
        only_last_ten = threshold_of(scores, [False] * 90 + [True] * 10, floor=0.3)
        self.assertEqual((only_last_ten["false_alarm_rate"], only_last_ten["real_scored"]), (0.1, 10))
        self.assertIsNone(threshold_of(scores, [False] * 100, floor=0.3)["false_alarm_rate"], "no real readings")
        floored = threshold_of(scores, [True] * 100, floor=7.0)
        self.assertEqual((floored["score"], floored["set_by"], floored["false_alarm_rate"]), (7.0, "floor", 0.0))

    def test_calibration_scores_an_evenly_spaced_sample(self):
        self.assertEqual(evenly_spaced(list(range(10)), 4), [0, 2, 5, 7])
        self.assertEqual(evenly_spaced([3, 4], 4), [3, 4])
        hist = history(pulse_synthetic, 100, PULSE.interval)
        with tempfile.TemporaryDirectory() as tmp, mock.patch("kiri.atoms.atom.CALIBRATION_SAMPLE", 7):
            report = Atom(PULSE).train(hist, Path(tmp) / "pulse.json", steps=2)
        c = report.calibration
        self.assertEqual((c["held_out"], c["scored"], c["real_scored"]), (20, 7, 0))
        self.assertIsNone(c["false_alarm_rate"], "synthetic history only: no real readings to judge")
        self.assertEqual(report.threshold_reason(), "q99 of 7 of 20 held-out scores; floor 0.333")


class TrainingWindow(unittest.TestCase):
    """Training reads only the newest readings, in SQL, whatever the history's length."""

    def test_history_is_the_newest_window_without_injected_rows(self):
        with tempfile.TemporaryDirectory() as tmp, open_store(tmp) as store:
            store.add_observations([{"atom": "pulse", "ts": END + i, "values": {"C": float(i)}} for i in range(30)])
            store.add_observation("pulse", {"C": 99.0}, ts=END + 100, source="inject")
            module = verbs.atom_module("pulse")
            rows = verbs.history_for(module, store, window=5)
            self.assertEqual([r["values"]["C"] for r in rows], [25.0, 26.0, 27.0, 28.0, 29.0],
                             "the newest five, oldest first; the injected reading is not history")
            rows = verbs.history_for(module, store, days=10 / 86400, now=END + 30, window=5)
            self.assertEqual(len(rows), 5)
            self.assertEqual(len(verbs.history_for(module, store, days=3 / 86400, now=END + 30, window=5)), 3,
                             "--days narrows the window")
            self.assertEqual(len(verbs.history_for(module, store)), 30)
            self.assertGreaterEqual(TRAIN_WINDOW, 7 * 24 * 60, "a week at one reading a minute fits in the window")

    def test_readings_of_an_approved_incident_are_not_learned_as_normal(self):
        with tempfile.TemporaryDirectory() as tmp, open_store(tmp) as store:
            step = PULSE.interval
            store.add_observations([{"atom": "pulse", "ts": END + i * step, "values": {"C": float(i)}}
                                    for i in range(40)])
            incident = store.add_alert("pulse", "pulse is unusual", ts=END + 20 * step)
            store.alert_seen(incident, END + 24 * step)
            store.add_feedback(incident, "approve")
            about_drift = store.add_alert("drift", "drift is unusual", ts=END + 5 * step,
                                          details={"scores": [{"atom": "drift"}]})
            store.add_feedback(about_drift, "approve")
            dismissed = store.add_alert("pulse", "pulse is unusual", ts=END + 30 * step)
            store.add_feedback(dismissed, "dismiss")
            store.add_alert("rhythm", "rhythm and pulse", ts=END + 35 * step,
                            details={"scores": [{"atom": "rhythm"}, {"atom": "pulse"}]})   # not answered yet
            settings = load_settings(home=tmp, env={"KIRI_ALERT_AFTER": "2"})
            module = verbs.atom_module("pulse")
            learned = [r["values"]["C"] for r in verbs.history_for(module, store, settings=settings)]
            self.assertEqual(learned, [float(i) for i in range(40) if not 18 <= i <= 24],
                             "the two readings that raised the approved alert, and all it went on for, are left out")
            self.assertEqual(len(verbs.history_for(module, store)), 40, "without settings: every reading")
            self.assertEqual(store.approved_spans("drift"), [(END + 5 * step, END + 5 * step)])
            self.assertEqual(store.approved_spans("pulse", since=END + 25 * step), [],
                             "an incident over before the window is not looked at")
