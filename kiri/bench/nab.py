"""`kiri bench nab`: run KIRI's streaming detector over a NAB corpus and write NAB results.

For every CSV under DATA/data/<category>/ it writes RESULTS/kiri/<category>/kiri_<file>.csv
(`timestamp,value,anomaly_score,label`, the data file's rows in order). The detector never
reads the windows or labels; `label` is filled from a windows file (the one given, or the
corpus's own: nab_io.corpus_windows) so that NAB's own tools can read the results. One configuration for every file.
"""

import contextlib
import multiprocessing
import time
from datetime import datetime

from ..stream import StreamDetector
from . import nab_io
from .nab_score import probation_rows   # the rows NAB never scores: the detector's to learn from

DETECTOR = "kiri"


EPOCH = datetime(1970, 1, 1)


def seconds_of(timestamp):
    """'1970-01-02 14:30:00' → 138600.0: seconds on the data's own clock (NAB timestamps have no zone)."""
    return (nab_io.parse_timestamp(timestamp) - EPOCH).total_seconds()


def detect(timestamps, values, seed=0):
    """Anomaly scores for one series, streaming: row i sees rows 0..i only."""
    detector = StreamDetector(max(probation_rows(len(values)), 20), seed=seed)
    return [detector.update(seconds_of(ts), v) for ts, v in zip(timestamps, values)]


def run_file(job):
    """One data file → its results file; returns (category, name, rows, seconds)."""
    category, path, results_dir, windows = job
    start = time.monotonic()
    timestamps, values = nab_io.read_series(path)
    scores = detect(timestamps, values)
    key = f"{category}/{path.name}"
    out = nab_io.results_path(results_dir, DETECTOR, category, path.name)
    nab_io.write_results(out, timestamps, values, scores, (windows or {}).get(key, []))
    return category, path.name, len(values), time.monotonic() - start


def run(data_dir, results_dir, pattern=None, jobs=1, windows_file=None, report=print):
    """Run the detector over every data file (in `jobs` processes); returns the per-file results.
    windows_file (default: the corpus's own) only fills the results' label column."""
    files = nab_io.data_files(data_dir, pattern)
    windows_file = windows_file or nab_io.corpus_windows(data_dir)
    windows = nab_io.read_windows(windows_file) if windows_file else None
    job_list = [(category, path, results_dir, windows) for category, path in files]
    done = []
    start = time.monotonic()
    with contextlib.ExitStack() as stack:
        if jobs > 1:
            results = stack.enter_context(multiprocessing.Pool(jobs)).imap_unordered(run_file, job_list)
        else:
            results = map(run_file, job_list)
        for category, name, rows, seconds in results:
            done.append((category, name, rows, seconds))
            report(f"{len(done)}/{len(job_list)} {category}/{name}: {rows} rows in {seconds:.1f}s")
    rows = sum(r[2] for r in done)
    report(f"{len(done)} files, {rows} rows in {time.monotonic() - start:.1f}s with {jobs} job(s)")
    return done
