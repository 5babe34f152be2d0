"""kiri.bench.nab_score and nab_io: NAB's scoring rules on tiny hand-made corpora.

Every corpus lives in a temporary directory (never /work/shared). Unless a test says
otherwise a file has N = 300 rows, 5 minutes apart, so probation P = min(floor(45.0), 750) = 45
rows (0..44), and one window covering rows 100..129 (L = 100, R = 129, W = 30).

σ(y) = 2/(1+e^(5y)) − 1 = −tanh(2.5·y), so σ(−1) = tanh(2.5) ≈ 0.986614. With one window,
null = −A_FN and perfect = A_TP, so the standard score is 100·(raw + 1)/2.
"""

import json
import math
import random
import tempfile
import time
import unittest
from datetime import datetime, timedelta
from pathlib import Path

from kiri.bench import nab_io, nab_score
from kiri.errors import KiriError
from tests.helpers import CommandLineAssertions, run_kiri

START = datetime(2020, 1, 1)
N = 300
WINDOW = (100, 129)


def stamp(i):
    return (START + timedelta(minutes=5 * i)).strftime("%Y-%m-%d %H:%M:%S")


def window_text(i):
    return stamp(i) + ".000000"


def sigma(y):
    return -1.0 if y > 3 else 2.0 / (1.0 + math.exp(5.0 * y)) - 1.0


def in_window(i, left, right):
    """A_TP = 1 value of a detection at row i of window left..right, straight from the README."""
    return sigma(-(right - i + 1) / (right - left + 1)) / sigma(-1.0)


class Corpus:
    """A NAB-shaped corpus in a temporary directory: data/, windows.json, results/kiri/."""

    def __init__(self, root):
        self.root = Path(root)
        self.windows = {}

    def add(self, key, scores, spans=(WINDOW,), detector="kiri"):
        """A data file `key` ("cat/name.csv") of len(scores) rows, windows given as row spans."""
        n = len(scores)
        category, name = key.split("/")
        path = self.root / "data" / category / name
        path.parent.mkdir(parents=True, exist_ok=True)
        timestamps = [stamp(i) for i in range(n)]
        values = [float(i % 7) for i in range(n)]
        path.write_text("timestamp,value\n" + "".join(f"{t},{v}\n" for t, v in zip(timestamps, values)))
        self.windows[key] = [[window_text(a), window_text(b)] for a, b in spans]
        out = nab_io.results_path(self.root / "results", detector, category, name)
        nab_io.write_results(out, timestamps, values, scores, [(stamp(a), stamp(b)) for a, b in spans])
        return path

    def paths(self):
        """(data dir, windows file, results dir), the windows file written now."""
        windows_file = self.root / "windows.json"
        windows_file.write_text(json.dumps(self.windows))
        return self.root, windows_file, self.root / "results"

    def score(self, detector="kiri"):
        return nab_score.score(*self.paths(), detector=detector)


def scores_with(hits, n=N):
    """Anomaly score 0 everywhere but {row: score}."""
    scores = [0.0] * n
    for row, s in hits.items():
        scores[row] = s
    return scores


class TempCase(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.tmp = Path(self.dir.name)
        self.corpus = Corpus(self.tmp)

    def tearDown(self):
        self.dir.cleanup()

    def standard(self, hits, spans=(WINDOW,), n=N):
        self.corpus.add("cat/a.csv", scores_with(hits, n), spans)
        return self.corpus.score()["profiles"]["standard"]


class Rules(TempCase):
    def test_probation_and_sigmoid(self):
        self.assertEqual(nab_score.probation_rows(300), 45)
        self.assertEqual(nab_score.probation_rows(1243), 186)     # floor(186.45)
        self.assertEqual(nab_score.probation_rows(4032), 604)     # floor(604.8)
        self.assertEqual(nab_score.probation_rows(5000), 750)
        self.assertEqual(nab_score.probation_rows(100000), 750)
        self.assertEqual(nab_score.scaled_sigmoid(0.0), 0.0)
        self.assertAlmostEqual(nab_score.scaled_sigmoid(-1.0), math.tanh(2.5), places=15)
        self.assertAlmostEqual(nab_score.scaled_sigmoid(3.0), -math.tanh(7.5), places=15)  # y ≤ 3: the formula
        self.assertEqual(nab_score.scaled_sigmoid(3.0001), -1.0)

    def test_perfect_detector_scores_100(self):
        # 1.0 at the window's first row: value σ(−30/30)/σ(−1) = 1 exactly, no false positive;
        # raw = 1 = perfect → 100 in every profile.
        self.corpus.add("cat/a.csv", scores_with({100: 1.0}))
        report = self.corpus.score()
        for name, p in report["profiles"].items():
            self.assertEqual(p["score"], 100.0, name)
            self.assertEqual(p["threshold"], 1.0, name)
        row = report["table"][0]
        self.assertEqual((row["rows"], row["windows"], row["hit"], row["detections"], row["false_positives"]),
                         (300, 1, 1, 1, 0))

    def test_null_detector_scores_0(self):
        # All 0: candidates 1.1 (raw −1) and 0 (every scored row: +1 for the window, but the 55
        # rows 45..99 alone cost 55·0.11 = 6.05) → 1.1 wins, raw = null → 0.
        self.corpus.add("cat/a.csv", [0.0] * N)
        report = self.corpus.score()
        for name, p in report["profiles"].items():
            self.assertEqual(p["score"], 0.0, name)
            self.assertEqual(p["threshold"], 1.1, name)
        self.assertEqual(report["table"][0]["detections"], 0)

    def test_early_detection_beats_late(self):
        # row 101: σ(−29/30)/σ(−1) = tanh(2.41667)/tanh(2.5) ≈ 0.997559 → 99.878
        # row 115: σ(−15/30)/σ(−1) = tanh(1.25)/tanh(2.5)    ≈ 0.859793 → 92.990
        # row 129: σ(−1/30)/σ(−1)  = tanh(1/12)/tanh(2.5)    ≈ 0.084269 → 54.213
        got = {}
        for row in (101, 115, 129):
            corpus = Corpus(self.tmp / str(row))
            corpus.add("cat/a.csv", scores_with({row: 1.0}))
            got[row] = corpus.score()["profiles"]["standard"]
            expected = math.tanh(2.5 * (129 - row + 1) / 30) / math.tanh(2.5)
            self.assertAlmostEqual(got[row]["raw"], expected, places=12)
            self.assertAlmostEqual(got[row]["score"], 100 * (expected + 1) / 2, places=10)
        self.assertAlmostEqual(got[101]["score"], 99.8779, places=4)
        self.assertAlmostEqual(got[115]["score"], 92.9896, places=4)
        self.assertAlmostEqual(got[129]["score"], 54.2134, places=4)
        self.assertGreater(got[101]["score"], got[115]["score"])
        self.assertGreater(got[115]["score"], got[129]["score"])

    def test_only_the_earliest_detection_in_a_window_counts(self):
        # rows 100, 105, 120 all detected: the window is worth 1 (row 100), the others add nothing.
        p = self.standard({100: 1.0, 105: 1.0, 120: 1.0})
        self.assertEqual(p["raw"], 1.0)
        self.assertEqual(p["score"], 100.0)

    def test_false_positive_before_any_window_costs_a_fp(self):
        # hit at 100 (+1), FP at row 60 before any window ended: −0.11 → raw 0.89 → 94.5
        p = self.standard({100: 1.0, 60: 1.0})
        self.assertAlmostEqual(p["raw"], 0.89, places=12)
        self.assertAlmostEqual(p["score"], 94.5, places=10)

    def test_false_positive_just_after_a_window_costs_about_nothing(self):
        # FP at row 130: 0.11·σ((130−129)/29) = −0.11·tanh(2.5/29) ≈ −0.0094593 → 99.527
        p = self.standard({100: 1.0, 130: 1.0})
        cost = 0.11 * sigma(1 / 29)
        self.assertAlmostEqual(cost, -0.0094593, places=7)
        self.assertAlmostEqual(p["raw"], 1 + cost, places=12)
        self.assertAlmostEqual(p["score"], 99.5270, places=4)

    def test_false_positive_3_widths_after_a_window_costs_a_fp(self):
        # 3(W−1) = 87 rows after R = 129: row 216, y = 3 → the formula, σ(3) = −tanh(7.5) ≈ −0.9999994;
        # row 217, y = 88/29 > 3 → exactly −1: −0.11 → raw 0.89 → 94.5
        p = self.standard({100: 1.0, 216: 1.0})
        self.assertAlmostEqual(p["raw"], 1 - 0.11 * math.tanh(7.5), places=12)
        p = self.standard({100: 1.0, 217: 1.0})
        self.assertAlmostEqual(p["raw"], 0.89, places=12)
        self.assertAlmostEqual(p["score"], 94.5, places=10)

    def test_false_positive_between_windows_uses_the_last_window_that_ended(self):
        # windows 100..129 and 200..209, both hit at their first row (+2); FP at row 150:
        # after the first window, 0.11·σ(21/29). null −2, perfect 2 → score 100·(raw + 2)/4.
        p = self.standard({100: 1.0, 200: 1.0, 150: 1.0}, spans=((100, 129), (200, 209)))
        raw = 2 + 0.11 * sigma(21 / 29)
        self.assertAlmostEqual(p["raw"], raw, places=12)
        self.assertAlmostEqual(p["score"], 100 * (raw + 2) / 4, places=10)

    def test_one_row_window(self):
        # W = 1: the hit at 100 is worth σ(−1)/σ(−1) = 1; the FP at 101 would divide by W−1 = 0:
        # the limit, −A_FP, is used → raw 0.89.
        p = self.standard({100: 1.0, 101: 1.0}, spans=((100, 100),))
        self.assertAlmostEqual(p["raw"], 0.89, places=12)

    def test_probation_rows_never_count(self):
        # row 44 is the last probation row: its detection is no false positive → 100.
        self.corpus.add("cat/a.csv", scores_with({100: 1.0, 44: 1.0}))
        report = self.corpus.score()
        self.assertEqual(report["profiles"]["standard"]["score"], 100.0)
        self.assertEqual((report["table"][0]["detections"], report["table"][0]["false_positives"]), (1, 0))
        self.assertEqual(report["scored_rows"], N - 45)
        # row 45 is the first scored row: −0.11 → 94.5
        self.assertAlmostEqual(self.standard({100: 1.0, 45: 1.0})["score"], 94.5, places=10)

    def test_window_inside_probation_is_not_scored(self):
        # window 10..20 lies in probation: not a window to catch (Nw = 1), not a miss; a detection
        # at row 15 is not a detection at all.
        self.corpus.add("cat/a.csv", scores_with({100: 1.0, 15: 1.0}), spans=((10, 20), WINDOW))
        report = self.corpus.score()
        self.assertEqual(report["windows"], 1)
        self.assertEqual(report["profiles"]["standard"]["score"], 100.0)

    def test_window_straddling_probation_counts_with_its_full_width(self):
        # window 40..60 (W = 21), rows 40..44 in probation: the earliest possible hit is row 45,
        # worth σ(−(60−45+1)/21)/σ(−1) ≈ 0.969622 → 98.481.
        p = self.standard({45: 1.0}, spans=((40, 60),))
        self.assertAlmostEqual(p["raw"], in_window(45, 40, 60), places=12)
        self.assertAlmostEqual(p["score"], 98.4811, places=4)

    def test_ties_go_to_the_higher_threshold(self):
        # 0.9 at row 100 (+1), 0.5 at row 110 (same window, later: adds nothing): T = 0.9 and
        # T = 0.5 both give raw 1 → 0.9.
        p = self.standard({100: 0.9, 110: 0.5})
        self.assertEqual(p["threshold"], 0.9)
        self.assertEqual(p["raw"], 1.0)
        # Swapped: 0.9 at row 110 (≈ 0.696) then 0.5 at row 100 (1, replaces it) → 0.5.
        p = self.standard({110: 0.9, 100: 0.5})
        self.assertEqual(p["threshold"], 0.5)
        self.assertEqual(p["raw"], 1.0)

    def test_the_three_profiles(self):
        # 0.8 at row 100 (hit) and at ten rows 50..59 before the window (ten FPs); 0 elsewhere.
        #   standard      (1, 1, 0.11): T=0.8 → 1 − 1.1 = −0.1 > −1 (T=1.1) → 100·0.9/2  = 45
        #   low FP rate   (1, 1, 0.22): T=0.8 → 1 − 2.2 = −1.2 < −1       → T=1.1, score 0
        #   low FN rate   (1, 2, 0.11): T=0.8 → −0.1 > −2;  null −2, perfect 1 → 100·1.9/3 = 63.33
        hits = {100: 0.8}
        hits.update({row: 0.8 for row in range(50, 60)})
        self.corpus.add("cat/a.csv", scores_with(hits))
        report = self.corpus.score()
        p = report["profiles"]
        self.assertEqual((p["standard"]["threshold"], p["reward_low_FP_rate"]["threshold"],
                          p["reward_low_FN_rate"]["threshold"]), (0.8, 1.1, 0.8))
        self.assertAlmostEqual(p["standard"]["score"], 45.0, places=10)
        self.assertEqual(p["reward_low_FP_rate"]["score"], 0.0)
        self.assertAlmostEqual(p["reward_low_FN_rate"]["score"], 190 / 3, places=10)
        self.assertEqual((p["reward_low_FN_rate"]["null"], p["reward_low_FN_rate"]["perfect"]), (-2.0, 1.0))
        self.assertEqual(report["table"][0]["false_positives"], 10)

    def test_one_threshold_for_all_files(self):
        # a: 0.9 at row 100 (hit), 0.4 at twenty rows 50..69 (FPs); b: 0.4 at row 100 (hit).
        # T=0.9 → a hit, b missed: 1 − 1 = 0; T=0.4 → 2 − 20·0.11 = −0.2; T=1.1 → −2.
        # So T = 0.9 and b's window is missed, though b alone would take 0.4: 100·(0 + 2)/4 = 50.
        hits = {100: 0.9}
        hits.update({row: 0.4 for row in range(50, 70)})
        self.corpus.add("cat/a.csv", scores_with(hits))
        self.corpus.add("cat/b.csv", scores_with({100: 0.4}))
        report = self.corpus.score()
        std = report["profiles"]["standard"]
        self.assertEqual(std["threshold"], 0.9)
        self.assertAlmostEqual(std["score"], 50.0, places=10)
        self.assertEqual([(r["file"], r["hit"], r["detections"]) for r in report["table"]],
                         [("cat/a.csv", 1, 1), ("cat/b.csv", 0, 0)])

    def test_sweep_matches_brute_force(self):
        # Random scores rounded to 2 decimals (many ties), three files, windows in and out of
        # probation, a one-row window: the incremental sweep must pick what a scan of every
        # candidate picks. (These seeds give interior thresholds that differ between profiles.)
        files = {"x/a.csv": (200, ((20, 25), (80, 99), (150, 150))),
                 "x/b.csv": (150, ((60, 89),)),
                 "y/c.csv": (120, ())}
        for seed in (0, 2, 6, 7):
            rng = random.Random(seed)
            corpus = Corpus(self.tmp / str(seed))
            data = {}
            for key, (n, spans) in files.items():
                scores = [min(1.0, round(0.9 * rng.random() ** 2 + (0.1 + 0.2 * rng.random() if any(
                    a <= i <= b for a, b in spans) and rng.random() < 0.3 else 0), 2)) for i in range(n)]
                corpus.add(key, scores, spans)
                data[key] = (scores, spans)
            report = corpus.score()
            for profile in nab_score.PROFILES:
                threshold, raw = brute_force(data, profile.tp, profile.fn, profile.fp)
                got = report["profiles"][profile.name]
                with self.subTest(seed=seed, profile=profile.name):
                    self.assertEqual(got["threshold"], threshold)
                    self.assertLess(threshold, 1.0)
                    self.assertAlmostEqual(got["raw"], raw, places=9)

    def test_many_distinct_scores_are_fast(self):
        # 60,000 rows with distinct scores: one sort and one pass per profile, not rows × candidates.
        rng = random.Random(0)
        n = 60000
        self.corpus.add("cat/a.csv", [rng.random() for _ in range(n)], spans=((30000, 30999),))
        start = time.perf_counter()
        report = self.corpus.score()
        self.assertLess(time.perf_counter() - start, 20)
        self.assertEqual(report["scored_rows"], n - 750)


def brute_force(data, tp, fn, fp):
    """Every candidate threshold, every row, the README's rules written out directly."""
    rows = []  # (score, value, window name or None)
    for key, (scores, spans) in data.items():
        n = len(scores)
        for i in range(min(n * 15 // 100, 750), n):
            inside = [(a, b) for a, b in spans if a <= i <= b]
            ended = [(a, b) for a, b in spans if b < i]
            if inside:
                a, b = inside[0]
                rows.append((scores[i], tp * in_window(i, a, b), f"{key}|{a}"))
            elif not ended:
                rows.append((scores[i], -fp, None))
            else:
                a, b = ended[-1]
                rows.append((scores[i], -fp if b == a else fp * sigma((i - b) / (b - a)), None))
    windows = {w for _, _, w in rows if w}
    best = None
    for t in [1.1] + sorted({s for s, _, _ in rows}, reverse=True):
        caught = {}
        total = 0.0
        for s, v, w in rows:
            if s >= t:
                if w is None:
                    total += v
                else:
                    caught[w] = max(caught.get(w, v), v)
        total += sum(caught.values()) - fn * (len(windows) - len(caught))
        if best is None or total > best[1] + 1e-9:
            best = (t, total)
    return best


class Files(TempCase):
    def write(self, text, name="bad.csv"):
        path = self.tmp / name
        path.write_text(text)
        return path

    def test_read_series(self):
        path = self.write("timestamp,value\n2020-01-01 00:00:00,1.5\n2020-01-01 00:05:00,-2\n")
        self.assertEqual(nab_io.read_series(path), (["2020-01-01 00:00:00", "2020-01-01 00:05:00"], [1.5, -2.0]))

    def test_bad_values_name_file_and_line(self):
        for bad in ("", "abc", "NaN", "nan", "inf", "-Infinity", "1e308", "-1.000001e15"):
            path = self.write(f"timestamp,value\n2020-01-01 00:00:00,1\n2020-01-01 00:05:00,{bad}\n")
            with self.assertRaises(KiriError) as cm:
                nab_io.read_series(path)
            self.assertIn("bad.csv:3", str(cm.exception), bad)
        # ±1e15 is the limit of every reading KIRI reads, and the limit itself is a value.
        path = self.write("timestamp,value\n2020-01-01 00:00:00,1e15\n2020-01-01 00:05:00,-1e15\n")
        self.assertEqual(nab_io.read_series(path)[1], [1e15, -1e15])
        for row in ("2020-01-01 00:05:00,1,2", "2020-01-01 00:05:00", "yesterday,1", "2020-13-01 00:00:00,1"):
            path = self.write(f"timestamp,value\n2020-01-01 00:00:00,1\n{row}\n")
            with self.assertRaises(KiriError) as cm:
                nab_io.read_series(path)
            self.assertIn("bad.csv:3", str(cm.exception), row)
        for text in ("", "time,value\n2020-01-01 00:00:00,1\n", "timestamp,value\n"):
            with self.assertRaises(KiriError):
                nab_io.read_series(self.write(text))

    def test_bad_value_in_the_corpus_stops_scoring(self):
        path = self.corpus.add("cat/a.csv", scores_with({100: 1.0}))
        lines = path.read_text().splitlines()
        lines[6] = lines[6].split(",")[0] + ",NaN"     # line 7 of the file
        path.write_text("\n".join(lines) + "\n")
        with self.assertRaises(KiriError) as cm:
            self.corpus.score()
        self.assertIn("a.csv:7", str(cm.exception))

    def test_data_files_and_results_path(self):
        for key in ("b/z.csv", "b/a.csv", "a/m.csv", "c/x.csv"):
            self.corpus.add(key, scores_with({}, n=40), spans=())
        (self.tmp / "data" / "b" / "notes.txt").write_text("not data")
        found = [(c, p.name) for c, p in nab_io.data_files(self.tmp)]
        self.assertEqual(found, [("a", "m.csv"), ("b", "a.csv"), ("b", "z.csv"), ("c", "x.csv")])
        self.assertEqual([(c, p.name) for c, p in nab_io.data_files(self.tmp, "b/*")], [("b", "a.csv"), ("b", "z.csv")])
        with self.assertRaises(KiriError):
            nab_io.data_files(self.tmp, "nothing/*")
        with self.assertRaises(KiriError):
            nab_io.data_files(self.tmp / "missing")
        self.assertEqual(nab_io.results_path("R", "kiri", "b", "z.csv"), Path("R/kiri/b/kiri_z.csv"))
        with self.assertRaises(KiriError):
            nab_io.results_path("R", "../x", "b", "z.csv")

    def test_write_and_read_results(self):
        out = self.tmp / "r" / "kiri" / "cat" / "kiri_a.csv"
        stamps = [stamp(i) for i in range(5)]
        nab_io.write_results(out, stamps, [1.0, 2.0, 3.0, 4.0, 5.0], [0.0, 0.25, 1.0, 0.5, 0.125],
                             [(datetime.fromisoformat(window_text(1)), datetime.fromisoformat(window_text(2)))])
        lines = out.read_text().splitlines()
        self.assertEqual(lines[0], "timestamp,value,anomaly_score,label")
        self.assertEqual([line.rsplit(",", 1)[1] for line in lines[1:]], ["0", "1", "1", "0", "0"])
        self.assertEqual(nab_io.read_results(out), (stamps, [0.0, 0.25, 1.0, 0.5, 0.125]))
        for bad in (float("nan"), 1.5, -0.1, float("inf")):
            with self.assertRaises(ValueError):
                nab_io.write_results(out, stamps, [1.0] * 5, [0.0, bad, 0.0, 0.0, 0.0], [])
        with self.assertRaises(ValueError):
            nab_io.write_results(out, stamps, [1.0] * 5, [0.0] * 4, [])
        self.assertEqual(sorted(p.name for p in out.parent.iterdir()), ["kiri_a.csv"])   # no temp files left
        self.assertEqual(nab_io.read_results(out)[1], [0.0, 0.25, 1.0, 0.5, 0.125])      # untouched

    def test_read_windows(self):
        path = self.write('{"c/a.csv": [["2020-01-01 00:10:00.000000", "2020-01-01 00:20:00.000000"]], "c/b.csv": []}',
                          "w.json")
        self.assertEqual(nab_io.read_windows(path), {"c/a.csv": [(datetime(2020, 1, 1, 0, 10), datetime(2020, 1, 1, 0, 20))],
                                                     "c/b.csv": []})
        for text in ("not json", "[]", '{"c/a.csv": [["2020-01-01 00:10:00"]]}', '{"c/a.csv": [["x", "y"]]}'):
            with self.assertRaises(KiriError):
                nab_io.read_windows(self.write(text, "w.json"))

    def test_results_problems(self):
        self.corpus.add("cat/a.csv", scores_with({100: 1.0}))
        data, windows, results = self.corpus.paths()
        result = results / "kiri" / "cat" / "kiri_a.csv"
        lines = result.read_text().splitlines()
        result.write_text("\n".join(lines[:-1]) + "\n")                    # one row short
        with self.assertRaises(KiriError) as cm:
            nab_score.score(data, windows, results)
        self.assertIn("kiri_a.csv", str(cm.exception))
        lines[5] = lines[5].replace(",0.0,", ",1.5,")                       # score out of range
        result.write_text("\n".join(lines) + "\n")
        with self.assertRaises(KiriError) as cm:
            nab_score.score(data, windows, results)
        self.assertIn("kiri_a.csv:6", str(cm.exception))
        result.unlink()
        with self.assertRaises(KiriError) as cm:
            nab_score.score(data, windows, results)
        self.assertIn("kiri_a.csv", str(cm.exception))
        with self.assertRaises(KiriError):
            nab_score.score(data, windows, results, detector="other")

    def test_windows_problems(self):
        self.corpus.add("cat/a.csv", scores_with({100: 1.0}))
        self.corpus.windows = {}                                           # no entry for the file
        with self.assertRaises(KiriError) as cm:
            self.corpus.score()
        self.assertIn("cat/a.csv", str(cm.exception))
        self.corpus.windows = {"cat/a.csv": [["2030-01-01 00:00:00.000000", "2030-01-02 00:00:00.000000"]]}
        with self.assertRaises(KiriError):                                 # a window with no row
            self.corpus.score()
        self.corpus.windows = {"cat/a.csv": []}
        with self.assertRaises(KiriError):                                 # no window: score undefined
            self.corpus.score()


class CommandLine(CommandLineAssertions, TempCase):
    def test_last_line_is_the_standard_score(self):
        self.corpus.add("cat/a.csv", scores_with({100: 1.0}))
        self.corpus.add("cat/b.csv", scores_with({101: 1.0, 60: 0.5}))
        data, windows, results = self.corpus.paths()
        proc = run_kiri("bench", "nab-score", "--data", data, "--windows", windows, "--results", results,
                        home=self.tmp)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        report = nab_score.score(data, windows, results)
        self.assertEqual(proc.stdout.strip().splitlines()[-1], f"standard {report['profiles']['standard']['score']:.2f}")
        self.assertEqual(proc.stdout.strip(), nab_score.format_report(report))
        self.assertIn("reward_low_FP_rate", proc.stdout)
        self.assertIn("cat/b.csv", proc.stdout)

    def test_files_picks_files_as_in_bench_nab_and_pattern_is_its_old_name(self):
        self.corpus.add("cat/a.csv", scores_with({100: 1.0}))
        self.corpus.add("dog/b.csv", scores_with({101: 1.0, 60: 0.5}))
        data, windows, results = self.corpus.paths()
        for flag in ("--files", "--pattern"):
            proc = run_kiri("bench", "nab-score", "--data", data, "--windows", windows, "--results", results,
                            flag, "dog/*.csv", home=self.tmp)
            self.assertEqual(proc.returncode, 0, proc.stderr)
            self.assertIn("dog/b.csv", proc.stdout)
            self.assertNotIn("cat/a.csv", proc.stdout)
        proc = run_kiri("bench", "nab-score", "--data", data, "--windows", windows, "--results", results,
                        "--files", "bird/*.csv", home=self.tmp)
        self.assertUserError(proc, "kiri: error:", code=1)

    def test_the_corpus_own_windows_file_is_read_without_windows(self):
        self.corpus.add("cat/a.csv", scores_with({100: 1.0}))
        self.corpus.add("cat/b.csv", scores_with({101: 1.0, 60: 0.5}))
        data, windows, results = self.corpus.paths()
        with_flag = run_kiri("bench", "nab-score", "--data", data, "--windows", windows, "--results", results,
                             home=self.tmp)
        for name in ("dev_windows.json", "labels/combined_windows.json"):   # the two layouts, as bench nab reads them
            (data / name).parent.mkdir(exist_ok=True)
            windows.rename(data / name)
            proc = run_kiri("bench", "nab-score", "--data", data, "--results", results, home=self.tmp)
            self.assertEqual(proc.returncode, 0, proc.stderr)
            self.assertEqual(proc.stdout, with_flag.stdout)
            windows = data / name

    def test_no_windows_file_anywhere_is_one_line(self):
        self.corpus.add("cat/a.csv", scores_with({100: 1.0}))
        data, windows, results = self.corpus.paths()
        windows.unlink()
        proc = run_kiri("bench", "nab-score", "--data", data, "--results", results, home=self.tmp)
        self.assertUserError(proc, "kiri: error:", code=1)
        self.assertIn("no windows file (dev_windows.json or labels/combined_windows.json); give one with --windows FILE",
                      proc.stderr)

    def test_bad_paths_are_one_line_errors(self):
        self.corpus.add("cat/a.csv", scores_with({100: 1.0}))
        data, windows, results = self.corpus.paths()
        for args in (("--data", self.tmp / "nope", "--windows", windows, "--results", results),
                     ("--data", data, "--windows", self.tmp / "nope.json", "--results", results),
                     ("--data", data, "--windows", windows, "--results", self.tmp / "nope")):
            proc = run_kiri("bench", "nab-score", *args, home=self.tmp)
            self.assertUserError(proc, "kiri: error:", code=1)


if __name__ == "__main__":
    unittest.main()
