"""The data edges: an import file and a weights file, which anyone can write.

Each bad input is refused on its own, in one line that says what is wrong, and nothing
already stored is lost: a bad line of an import is skipped (the others go in), a weights
file that parses but does not make sense is refused as a whole (and the previous weights
are used). The import runs through the real command line, as a user meets it.
"""

import io
import json
import math
import random
import shutil
import tempfile
import time
import unittest
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

from kiri.atoms.atom import Atom
from kiri.atoms.fit import misfit
from kiri.atoms.verbs import record_score
from kiri.atoms.pulse.schema import SPEC as PULSE
from kiri.core.language import StateLanguage
from kiri.core.model import GPTConfig, init_params
from kiri.core.weights import Weights, WeightsError, load, load_with_fallback, save
from kiri.store import FUTURE_SLACK, IMPORT_LINE_BYTES, SKIP_EXAMPLES, Store
from tests.helpers import CommandLineAssertions, run_kiri

NOW = 1_800_000_000.0
GOOD = {"C": 12.0, "M": 50.0, "D": 40.0, "S": 1.0, "L": 0.5, "N": 1}


def line(ts=NOW - 600, values=GOOD, atom="pulse", **extra):
    return json.dumps(dict({"atom": atom, "ts": ts, "values": values}, **extra)).encode()


# (what, the bad line, words its reason must hold): every way one line can be wrong.
BAD_LINES = [
    ("invalid UTF-8", b'{"atom": "pulse", "ts": 1000, "values": {"C": "\xff"}}', "not UTF-8"),
    ("a 400-digit number", line(values=dict(GOOD, C=int("9" * 400))), "must be finite"),
    ("a 400-digit ts", b'{"atom": "pulse", "ts": 1' + b"0" * 400 + b', "values": {"C": 1}}', "ts"),
    ("a 5000-digit number", b'{"atom": "pulse", "ts": 1000, "values": {"C": ' + b"7" * 5000 + b"}}", ""),
    ("a number beyond float", line(values=dict(GOOD, C=1e308)).replace(b"1e+308", b"1e999"), "finite"),
    ("NaN", line().replace(b"12.0", b"NaN"), "finite"),
    ("10,000 nested [", b"[" * 10_000, "nested deeper"),
    ("100,000 nested [ (longer than a line may be)", b"[" * 100_000, "longer than"),
    ("nesting inside a value", line(values={"C": [[[[[[[[[[1]]]]]]]]]]}), "nested deeper"),
    ("a line of a megabyte", b"x" * 1_000_000, "longer than"),
    ("values not of the schema", line(values={"Q": 1}), "field C is missing"),
    ("a value out of all bounds", line(values=dict(GOOD, C=1e300)), "beyond"),
    ("a text value", line(values=dict(GOOD, C="high")), "values['C']"),
    ("from the far future", line(ts=1e18), "future"),
    ("a day from now", line(ts=NOW + 86400), "future"),
    ("before 1970", line(ts=-5), "before 1970"),
    ("an atom not run here", line(atom="gpu"), "not an atom this installation runs"),
    ("not an object", b"[1, 2]", "not a JSON object"),
    ("not JSON", b"{", "not JSON"),
    # Found by `kiri bench fuzz`: valid JSON, text SQLite (UTF-8) cannot keep: the import's insert raised.
    ("a lone surrogate in the source", line(source="\ud800"), "source: must be UTF-8 text"),
]


class ImportLines(unittest.TestCase):
    """Store.import_jsonl with the atoms' specs, as `kiri import` calls it."""

    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.store = Store(Path(tmp.name) / "kiri.db", clock=lambda: NOW)
        self.addCleanup(self.store.close)

    def import_lines(self, lines):
        return self.store.import_jsonl(io.BytesIO(b"\n".join(lines) + b"\n"), specs={"pulse": PULSE})

    def test_each_bad_line_is_skipped_with_its_reason_and_the_rest_imported(self):
        for k, (what, bad, reason) in enumerate(BAD_LINES):
            with self.subTest(what):
                # Each subtest's own times: a random fraction made two subtests' lines the same now and then.
                good = [line(ts=NOW - 60 * i - (k + 1) / 100) for i in range(100)]
                report = self.import_lines(good[:50] + [bad] + good[50:])
                self.assertEqual((report.imported, report.skipped_count), (100, 1))
                number, why = report.skipped[0]
                self.assertEqual(number, 51)
                self.assertIn(reason, why)
                self.assertLess(len(why), 300)   # a reason, not the line

    def test_a_reading_a_little_ahead_is_taken(self):
        # Two machines' clocks differ a little: an export from one a minute ahead still imports.
        report = self.import_lines([line(ts=NOW + FUTURE_SLACK / 2)])
        self.assertEqual((report.imported, report.skipped_count), (1, 0))

    def test_a_reading_may_leave_out_its_clock_and_keep_other_fields(self):
        report = self.import_lines([line(values=dict(GOOD, H=3, W=6)), line(ts=NOW - 700, values=dict(GOOD, X=1))])
        self.assertEqual(report.imported, 2)

    def test_a_thousand_bad_lines_are_counted_and_a_handful_named(self):
        report = self.import_lines([b"not json"] * 1000 + [line()])
        self.assertEqual((report.imported, report.skipped_count), (1, 1000))
        self.assertEqual([n for n, _ in report.skipped], list(range(1, SKIP_EXAMPLES + 1)))

    def test_nothing_stored_is_lost_or_changed_by_a_bad_file(self):
        self.store.add_observation("pulse", GOOD, ts=NOW - 3600, source="linux")
        before = self.store.observations("pulse")
        report = self.import_lines([bad for _, bad, _ in BAD_LINES])
        self.assertEqual((report.imported, report.skipped_count), (0, len(BAD_LINES)))
        self.assertEqual(self.store.observations("pulse"), before)

    def test_a_long_line_is_never_held_whole(self):
        # The reader takes at most IMPORT_LINE_BYTES + 1 bytes of a line at a time.
        sizes = []
        data = io.BytesIO(b"y" * (10 * IMPORT_LINE_BYTES) + b"\n" + line() + b"\n")
        real_readline = data.readline

        def readline(limit=-1):
            sizes.append(limit)
            return real_readline(limit)

        data.readline = readline
        report = self.store.import_jsonl(data, specs={"pulse": PULSE})
        self.assertEqual((report.imported, report.skipped_count), (1, 1))
        self.assertTrue(all(0 < n <= IMPORT_LINE_BYTES + 1 for n in sizes), sizes)

    def test_a_bracket_inside_text_is_no_nesting(self):
        source = "[" * 100 + "{" * 100
        report = self.import_lines([line(source=source)])
        self.assertEqual((report.imported, report.skipped_count), (1, 0))
        self.assertEqual(self.store.observations("pulse")[0]["source"], source)


class SchemaFit(unittest.TestCase):
    def test_what_fits_and_what_does_not(self):
        self.assertIsNone(misfit(PULSE, GOOD))
        self.assertIsNone(misfit(PULSE, dict(GOOD, C=140, H=25)))   # clamped to the edge bucket: fits
        self.assertIn("field C is missing", misfit(PULSE, {"Q": 1}))
        self.assertIn("field N must be a finite number", misfit(PULSE, dict(GOOD, N=None)))
        self.assertIn("field M must be a finite number", misfit(PULSE, dict(GOOD, M=True)))
        self.assertIn("beyond", misfit(PULSE, dict(GOOD, L=-1e16)))
        self.assertIn("values must be a dict", misfit(PULSE, "C=1"))


class ImportCommand(CommandLineAssertions, unittest.TestCase):
    """`kiri import` in a real process: one bad line in 101 leaves 100 imported, no traceback."""

    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.tmp = Path(tmp.name)
        self.home = self.tmp / "home"

    def test_one_bad_line_in_101(self):
        now = time.time()
        good = [line(ts=now - 300 * (i + 1)) for i in range(100)]
        for what, bad in (("not UTF-8", b'{"atom": "pulse", "ts": 1000, "values": {"C": "\xff"}}'),
                          ("must be finite", line(ts=now - 10, values=dict(GOOD, C=int("9" * 400)))),
                          ("nested deeper", b"[" * 30_000),
                          ("field C is missing", line(ts=now - 10, values={"Q": 1})),
                          ("from the future", line(ts=1e18))):
            with self.subTest(what):
                path = self.tmp / "rows.jsonl"
                path.write_bytes(b"\n".join(good[:7] + [bad] + good[7:]) + b"\n")
                shutil.rmtree(self.home, ignore_errors=True)
                proc = run_kiri("import", path, home=self.home, timeout=60)
                self.assertUserError(proc, what, code=1)
                self.assertTrue(proc.stderr.startswith(f"{path}:8: skipped: "), proc.stderr)
                self.assertEqual(proc.stdout.strip(), "imported 100 observations, skipped 1 bad lines, 0 already stored")

    def test_many_bad_lines_are_a_handful_of_examples_and_a_count(self):
        path = self.tmp / "rows.jsonl"
        path.write_bytes(b"garbage\n" * 5000)
        proc = run_kiri("import", path, home=self.home, timeout=60)
        self.assertEqual(proc.returncode, 1)
        errors = proc.stderr.strip().splitlines()
        self.assertEqual(len(errors), SKIP_EXAMPLES + 1, proc.stderr)
        self.assertEqual(errors[-1], f"{path}: … and {5000 - SKIP_EXAMPLES} more bad lines skipped")
        self.assertIn("skipped 5000 bad lines", proc.stdout)


CFG = GPTConfig(vocab_size=5, n_embd=4, n_layer=1, n_head=2, block_size=6)
LANGUAGE = StateLanguage("gauge", {"A": (0, 10, 2), "B": (0, 1, 2)}).to_dict()


def weights_doc(seed=0):
    w = Weights(CFG, LANGUAGE, init_params(CFG, random.Random(seed)), step=5,
                threshold={"score": 1.5, "q99": 1.2, "floor": 1.0, "false_alarm_rate": 0.01, "scored": 40,
                           "given": ["A"]},
                trained_on={"real": 30, "synthetic": 0, "trained_at": NOW, "days": None})
    return json.loads(json.dumps(w.to_json()))   # a copy of its own: each case edits it


def edit(change):
    def edited(doc):
        change(doc)
        return doc
    return edited


def set_in(*keys_and_value):
    *keys, last, value = keys_and_value

    def change(doc):
        for key in keys:
            doc = doc[key]
        doc[last] = value
    return edit(change)


# (what, how the document is changed, words the one-line error must hold)
BAD_WEIGHTS = [
    ("a language without a name", edit(lambda d: d["language"].pop("name")), "needs a name"),
    ("lo > hi", set_in("language", "schema", 0, 1, 20), "lo < hi"),
    ("buckets as text", set_in("language", "schema", 0, 3, "10"), "buckets"),
    ("no buckets", set_in("language", "schema", 0, 3, 0), "buckets"),
    ("a billion buckets", set_in("language", "schema", 0, 3, 10 ** 9), "buckets"),
    ("a short field list", edit(lambda d: d["language"]["schema"].pop()), "the language has 3 tokens, the model 5"),
    ("a short field entry", edit(lambda d: d["language"]["schema"][0].pop()), "needs (lo, hi, buckets)"),
    ("a field named twice", edit(lambda d: d["language"]["schema"].append(d["language"]["schema"][0])), "twice"),
    ("a schema of text", set_in("language", "schema", "abc"), "list of [field"),
    ("an unknown language", set_in("language", "kind", "words"), "unknown language kind"),
    ("threshold NaN", set_in("threshold", "score", float("nan")), "threshold score must be a finite number"),
    ("threshold inf", set_in("threshold", "score", float("inf")), "threshold score must be a finite number"),
    ("threshold text", set_in("threshold", "score", "abc"), "threshold score must be a finite number"),
    ("threshold [1]", set_in("threshold", "score", [1]), "threshold score must be a finite number"),
    ("threshold 0", set_in("threshold", "score", 0), "threshold score must be above 0"),
    ("threshold -1", set_in("threshold", "score", -1), "threshold score must be above 0"),
    ("threshold not a dict", set_in("threshold", [1]), "threshold must be a JSON object"),
    ("false alarms as text", set_in("threshold", "false_alarm_rate", "abc"), "false_alarm_rate"),
    ("false alarms over 1", set_in("threshold", "false_alarm_rate", 3), "false_alarm_rate"),
    ("a count as text", set_in("threshold", "scored", "40"), "scored must be a whole number"),
    ("given a number", set_in("threshold", "given", 5), "given"),
    ("given every field", set_in("threshold", "given", ["A", "B"]), "given"),
    ("given an unknown field", set_in("threshold", "given", ["Z"]), "given"),
    ("trained_on synthetic as text", set_in("trained_on", "synthetic", "abc"), "trained_on synthetic"),
    ("trained_at as text", set_in("trained_on", "trained_at", "yesterday"), "trained_on trained_at"),
    ("a block too short for a reading", edit(lambda d: (d["config"].update(block_size=2),
                                                        d["params"].update(wpe=d["params"]["wpe"][:2]))),
     "cannot hold one reading"),
    ("a step as text", set_in("step", "5"), "bad step"),
    # Found by `kiri bench fuzz`: no bucket of it has a range that is a pair of numbers.
    ("a parameter at float's edge", set_in("params", "lm_head", 0, 1, 1.7e308), "holds 1.7e+308, beyond ±1e+06"),
    ("a parameter of null", set_in("params", "lm_head", 0, 1, None), "non-numeric value None"),
    # Found by `kiri bench fuzz`: listing the shapes of 10^90 layers took all the memory there was.
    ("a model of 10^90 layers", set_in("config", "n_layer", 10 ** 90), "(10" + "0" * 89 + " layers, 9 matrices in all)"),
    ("a range wider than a float holds", edit(lambda d: d["language"]["schema"][0].__setitem__(slice(1, 3), [-1e308, 1e308])),
     "less than 1.8e308 apart"),
]


class WeightsThatDoNotMakeSense(unittest.TestCase):
    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.path = Path(tmp.name) / "gauge.json"

    def write(self, doc):
        self.path.write_text(json.dumps(doc))

    def test_the_good_document_loads(self):
        self.write(weights_doc())
        self.assertEqual(load(self.path).threshold["score"], 1.5)
        self.write(set_in("trained_on", "trained_at", None)(weights_doc()))   # unknown: null is fine
        load(self.path)

    def test_each_is_refused_in_one_line(self):
        for what, change, words in BAD_WEIGHTS:
            with self.subTest(what):
                self.write(change(weights_doc()))
                with self.assertRaises(WeightsError) as caught:
                    load(self.path)
                message = str(caught.exception)
                self.assertIn(words, message)
                self.assertTrue(message.startswith(str(self.path)), message)
                self.assertEqual(len(message.splitlines()), 1)

    def test_json_nested_200000_deep(self):
        self.path.write_text("[" * 200_000)
        with self.assertRaisesRegex(WeightsError, "not valid JSON"):
            load(self.path)

    def test_a_file_too_large_is_not_read(self):
        self.write(weights_doc())
        with mock.patch("kiri.core.weights.MAX_BYTES", 100), self.assertRaisesRegex(WeightsError, "larger than"):
            load(self.path)

    def test_the_previous_weights_are_used_instead(self):
        save(self.path, load_doc(weights_doc(1)))
        save(self.path, load_doc(weights_doc(2)))
        self.write(set_in("threshold", "score", 0)(weights_doc(2)))
        weights, used, error = load_with_fallback(self.path)
        self.assertEqual(used.name, "gauge.prev.json")
        self.assertEqual(weights.params, weights_doc(1)["params"])
        self.assertIn("threshold score must be above 0", str(error))

    def test_nonsense_is_never_saved(self):
        w = load_doc(weights_doc())
        w.threshold["score"] = -1
        with self.assertRaisesRegex(WeightsError, "above 0"):
            save(self.path, w)
        self.assertFalse(self.path.exists())


class WeightsThatDoMakeSense(unittest.TestCase):
    """Found by `kiri bench fuzz`: weights a load accepts are weights a score can use, and record."""

    def test_a_narrow_range_scores_a_reading_far_outside_it(self):
        doc = set_in("language", "schema", 0, 2, 1e-320)(set_in("threshold", "given", [])(weights_doc()))   # A: 0..1e-320
        atom = Atom(SimpleNamespace(name="gauge", clock=False, context=0, interval=300), load_doc(doc))
        for value, token in ((5.0, "A1"), (-5.0, "A0"), (1e308, "A1"), (5e-321, "A1")):
            with self.subTest(value=value):
                self.assertEqual(atom.score({"A": value, "B": 0.5}).tokens[0]["token"], token)

    def test_parameters_at_their_limit_still_score_a_number(self):
        # Beyond the limit (1e308 in lm_head) the score was NaN or inf, and `kiri pulse score` crashed recording it.
        rng = random.Random(1)
        doc = weights_doc()
        doc["params"] = {name: [[rng.choice((1e6, -1e6)) for _ in row] for row in matrix]
                         for name, matrix in doc["params"].items()}
        atom = Atom(SimpleNamespace(name="gauge", clock=False, context=0, interval=300), load(self.write(doc)))
        for values in ({"A": 5.0, "B": 0.5}, {"A": 0.0, "B": 1.0}):
            self.assertTrue(math.isfinite(atom.score(values).score))

    def write(self, doc):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        path = Path(tmp.name) / "gauge.json"
        path.write_text(json.dumps(doc))
        return path

    def test_weights_without_a_threshold_score_and_record(self):
        doc = edit(lambda d: d["threshold"].pop("score"))(weights_doc())   # nothing is over it: an infinite threshold
        atom = Atom(SimpleNamespace(name="gauge", clock=False, context=0, interval=300), load_doc(doc))
        result = atom.score({"A": 5.0, "B": 0.5})
        with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "kiri.db") as store:
            score_id = record_score(store, result, None)
            self.assertEqual(store.latest_scores("gauge")[0]["id"], score_id)
            self.assertIsNone(store.latest_scores("gauge")[0]["threshold"])


def load_doc(doc):
    return Weights(GPTConfig.from_dict(doc["config"]), doc["language"], doc["params"], doc["step"],
                   doc["threshold"], doc["trained_on"])


if __name__ == "__main__":
    unittest.main()
