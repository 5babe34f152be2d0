"""`kiri bench nab-resample`: a NAB corpus written again at 1/N or N times its rate, through the real command line."""

import itertools
import json
import tempfile
import unittest
from datetime import datetime, timedelta
from pathlib import Path

from kiri.bench import nab_io
from tests.helpers import CommandLineAssertions, run_kiri


def stamp(minutes):
    """Minutes after 2020-01-01 00:00 as a NAB timestamp."""
    return f"2020-01-{1 + minutes // 1440:02d} {minutes % 1440 // 60:02d}:{minutes % 60:02d}:00"


def second_stamp(seconds):
    """Seconds after 2020-01-01 00:00 as a NAB timestamp."""
    return (datetime(2020, 1, 1) + timedelta(seconds=seconds)).isoformat(sep=" ")


class NabResample(CommandLineAssertions, unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.root = Path(self.tmp.name)
        self.corpus, self.out = self.root / "corpus", self.root / "out"
        # Values a half apart: the mean of two is exact, so it can be compared as written.
        self.write("cats/a.csv", [(stamp(5 * i), f"{i / 2}") for i in range(41)])   # 20 blocks, 1 row dropped
        self.write("dogs/b.csv", [(stamp(5 * i), f"{100 - i}.25") for i in range(30)])
        self.windows = {"cats/a.csv": [[stamp(150) + ".000000", stamp(170) + ".000000"]], "dogs/b.csv": []}
        (self.corpus / "dev_windows.json").write_text(json.dumps(self.windows, indent=1))

    def tearDown(self):
        self.tmp.cleanup()

    def write(self, name, rows):
        path = self.corpus / "data" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("timestamp,value\n" + "".join(f"{ts},{v}\n" for ts, v in rows))

    def resample(self, *flags):
        return run_kiri("bench", "nab-resample", "--data", self.corpus, "--out", self.out, *flags, home=self.root / "home")

    def written(self):
        return sorted(p.relative_to(self.out).as_posix() for p in self.out.rglob("*") if p.is_file()) \
            if self.out.exists() else []

    def assertReported(self, proc, files, total):
        """Exit 0, a line for each file (`files`), then one line of totals holding `total`."""
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(proc.stdout.splitlines()[:-1], files)
        self.assertIn(total, proc.stdout.splitlines()[-1])

    def test_each_block_of_n_rows_becomes_its_first_timestamp_and_its_mean(self):
        self.assertReported(self.resample("--every", 2), ["cats/a.csv: 41 rows -> 20", "dogs/b.csv: 30 rows -> 15"],
                            "2 files, 71 rows -> 35 (means of 2)")

        timestamps, values = nab_io.read_series(self.out / "data" / "cats" / "a.csv")
        self.assertEqual(timestamps, [stamp(10 * k) for k in range(20)])
        self.assertEqual(values, [k + 0.25 for k in range(20)])   # (k + (k + 0.5)) / 2
        lines = (self.out / "data" / "dogs" / "b.csv").read_text().splitlines()
        self.assertEqual(lines[:3], ["timestamp,value", f"{stamp(0)},99.75", f"{stamp(10)},97.75"])
        self.assertEqual(len(lines), 16)

        # The windows file is copied byte for byte, and the new corpus reads as the old one did.
        self.assertEqual((self.out / "dev_windows.json").read_bytes(), (self.corpus / "dev_windows.json").read_bytes())
        self.assertEqual([(c, p.name) for c, p in nab_io.data_files(self.out)], [("cats", "a.csv"), ("dogs", "b.csv")])
        self.assertEqual(list(nab_io.read_windows(self.out / "dev_windows.json")), ["cats/a.csv", "dogs/b.csv"])

    def test_up_n_puts_n_minus_1_rows_on_the_line_between_each_two(self):
        self.assertReported(self.resample("--up", 4), ["cats/a.csv: 41 rows -> 161", "dogs/b.csv: 30 rows -> 117"],
                            "2 files, 71 rows -> 278 (4 times the rate, interpolated)")

        # Steps of 0.5 and -1 over 4, and 5 minutes over 4 (75 s): every row is exact, the last one included.
        timestamps, values = nab_io.read_series(self.out / "data" / "cats" / "a.csv")
        self.assertEqual(timestamps, [second_stamp(75 * j) for j in range(161)])
        self.assertEqual(values, [j / 8 for j in range(161)])
        lines = (self.out / "data" / "dogs" / "b.csv").read_text().splitlines()
        self.assertEqual(lines[:4], ["timestamp,value", f"{stamp(0)},100.25", "2020-01-01 00:01:15,100.0",
                                     "2020-01-01 00:02:30,99.75"])
        self.assertEqual(lines[-2:], ["2020-01-01 02:23:45,71.5", f"{stamp(145)},71.25"])
        self.assertEqual(len(lines), 118)
        self.assertEqual((self.out / "dev_windows.json").read_bytes(), (self.corpus / "dev_windows.json").read_bytes())

    def test_an_interpolated_time_between_seconds_is_written_as_the_second_below(self):
        self.write("cats/fine.csv", [(second_stamp(0), "0"), (second_stamp(10), "3"), (second_stamp(20), "9")])
        self.assertEqual(self.resample("--up", 3, "--files", "cats/fine.csv").returncode, 0)
        timestamps, values = nab_io.read_series(self.out / "data" / "cats" / "fine.csv")
        self.assertEqual(timestamps, [second_stamp(s) for s in (0, 3, 6, 10, 13, 16, 20)])   # 3.33 s, 6.67 s…
        self.assertEqual(values, [0, 1, 2, 3, 5, 7, 9])

    def test_bench_nab_score_reads_the_new_corpus(self):
        for flags in (("--every", 2), ("--up", 4)):
            with self.subTest(flags=flags):
                self.out = self.root / f"out{flags[0]}"
                self.assert_nab_score_reads_the_new_corpus(flags)

    def assert_nab_score_reads_the_new_corpus(self, flags):
        self.assertEqual(self.resample(*flags).returncode, 0)
        results = self.root / f"results{flags[0]}"
        windows = nab_io.read_windows(self.out / "dev_windows.json")
        for category, path in nab_io.data_files(self.out):
            timestamps, values = nab_io.read_series(path)
            key = f"{category}/{path.name}"
            scores = [1.0 if ts == stamp(160) else 0.0 for ts in timestamps]   # a hit inside the window
            nab_io.write_results(nab_io.results_path(results, "kiri", category, path.name), timestamps, values,
                                 scores, windows.get(key, []))
        proc = run_kiri("bench", "nab-score", "--data", self.out, "--windows", self.out / "dev_windows.json",
                        "--results", results, home=self.root / "home")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertIn("standard", proc.stdout.splitlines()[-1])

    def test_files_picks_only_the_files_matching(self):
        proc = self.resample("--every", 3, "--files", "dogs/*")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(proc.stdout.splitlines()[0], "dogs/b.csv: 30 rows -> 10")
        self.assertEqual(self.written(), ["data/dogs/b.csv", "dev_windows.json"])

    def test_the_nab_layout_s_windows_file_is_copied_too(self):
        (self.corpus / "dev_windows.json").unlink()
        (self.corpus / "labels").mkdir()
        (self.corpus / "labels" / "combined_windows.json").write_text(json.dumps(self.windows))
        self.assertEqual(self.resample("--every", 4).returncode, 0)
        self.assertEqual(self.written(), ["data/cats/a.csv", "data/dogs/b.csv", "labels/combined_windows.json"])

    def test_every_and_up_are_integers_from_2_to_100(self):
        for flag, n in itertools.product(("--every", "--up"), ("1", "101", "abc", "2.5", "")):
            with self.subTest(flag=flag, n=n):
                self.assertUserError(self.resample(flag, n), f"{flag}: expected an integer from 2 to 100", code=2)
                self.assertEqual(self.written(), [])
        self.assertEqual(self.resample("--every", 100).returncode, 1, "taken, then no file has 100 rows")
        self.assertEqual(self.written(), [])
        self.assertEqual(self.resample("--up", 100).stdout.splitlines()[0], "cats/a.csv: 41 rows -> 4001")

    def test_exactly_one_of_every_and_up(self):
        self.assertUserError(self.resample("--every", 2, "--up", 2), "not allowed with argument", code=2)
        self.assertUserError(self.resample(), "one of the arguments --every --up is required", code=2)
        self.assertEqual(self.written(), [])

    def test_the_corpus_itself_is_refused_as_out(self):
        for out in (self.corpus, f"{self.corpus}/./"):
            with self.subTest(out=out):
                proc = run_kiri("bench", "nab-resample", "--data", self.corpus, "--every", 2, "--out", out,
                                home=self.root / "home")
                self.assertUserError(proc, f"would write over the corpus {self.corpus} itself", code=1)
        self.assertEqual(sorted(p.name for p in (self.corpus / "data").rglob("*.csv")), ["a.csv", "b.csv"])
        self.assertEqual(len((self.corpus / "data" / "cats" / "a.csv").read_text().splitlines()), 42)

    def test_a_bad_value_names_file_and_line_and_nothing_is_written(self):
        rows = [(stamp(5 * i), "1.0") for i in range(10)]
        rows[7] = (stamp(35), "oops")
        self.write("zebras/bad.csv", rows)   # read last: the good files before it are not written either
        proc = self.resample("--every", 2)
        self.assertUserError(proc, "bad.csv:9: value 'oops' is not a number", code=1)
        self.assertEqual(proc.stdout, "")
        self.assertEqual(self.written(), [])

    def test_a_value_beyond_any_measurement_is_refused(self):
        # 1.5e308 is finite, but two of them sum past the float limit: ±1e15 is the limit of
        # every reading KIRI reads, so that no block's sum can overflow.
        self.write("zebras/huge.csv", [(stamp(5 * i), "1.5e308") for i in range(4)])
        proc = self.resample("--every", 2)
        self.assertUserError(proc, "huge.csv:2: value '1.5e308' is beyond ±1e+15", code=1)
        self.assertEqual(self.written(), [])

    def test_a_file_shorter_than_one_block_is_refused(self):
        self.write("cats/short.csv", [(stamp(0), "1.0"), (stamp(5), "2.0")])
        self.assertUserError(self.resample("--every", 3), "short.csv: 2 rows, fewer than one block of 3", code=1)
        self.assertEqual(self.written(), [])

    def test_a_single_row_cannot_be_interpolated(self):
        self.write("cats/one.csv", [(stamp(0), "1.0")])   # read after cats/a.csv, which is not written either
        self.assertUserError(self.resample("--up", 2), "one.csv: 1 row, fewer than the 2 that interpolation needs",
                             code=1)
        self.assertEqual(self.written(), [])

    def test_a_repeated_timestamp_is_joined_as_the_file_has_it(self):
        # As in NAB's own files, where a clock that went forward left a run of 03:00:00 rows.
        self.write("cats/a.csv", [(stamp(0), "0.0"), (stamp(0), "3.0"), (stamp(5), "6.0")])
        self.resample("--up", 3, "--files", "cats/a.csv")
        rows = (self.out / "data" / "cats" / "a.csv").read_text().splitlines()[1:]
        self.assertEqual(rows, [f"{stamp(0)},0.0", f"{stamp(0)},1.0", f"{stamp(0)},2.0",
                                f"{stamp(0)},3.0", "2020-01-01 00:01:40,4.0", "2020-01-01 00:03:20,5.0",
                                f"{stamp(5)},6.0"])


if __name__ == "__main__":
    unittest.main()
