"""`kiri bench nab`: run KIRI's streaming detector over a NAB corpus and write NAB results.

For every CSV under DATA/data/<category>/ it writes RESULTS/kiri/<category>/kiri_<file>.csv
(`timestamp,value,anomaly_score,label`, the data file's rows in order). The detector never
reads the windows or labels; `label` is filled from the windows file only if one is given,
so that NAB's own tools can read the results. One configuration for every file.
"""

import multiprocessing
import time

from ..stream import StreamDetector
from . import nab_io

DETECTOR = "kiri"


def probation_rows(n):
    """NAB's probation: the first min(floor(0.15·N), 750) rows are never scored."""
    return min(int(0.15 * n), 750)


def hour_of(timestamp):
    """'2014-02-14 14:30:00' → 14.5 (the data's own clock; NAB timestamps have no zone)."""
    return int(timestamp[11:13]) + int(timestamp[14:16]) / 60


def detect(timestamps, values, seed=0):
    """Anomaly scores for one series, streaming: row i sees rows 0..i only."""
    detector = StreamDetector(max(probation_rows(len(values)), 20), seed=seed)
    return [detector.update(hour_of(ts), v) for ts, v in zip(timestamps, values)]


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
    """Run the detector over every data file (in `jobs` processes); returns the per-file results."""
    files = nab_io.data_files(data_dir, pattern)
    windows = nab_io.read_windows(windows_file) if windows_file else None
    job_list = [(category, path, results_dir, windows) for category, path in files]
    done = []
    start = time.monotonic()
    if jobs > 1:
        with multiprocessing.Pool(jobs) as pool:
            for result in pool.imap_unordered(run_file, job_list):
                done.append(result)
                report(f"{len(done)}/{len(job_list)} {result[0]}/{result[1]}: {result[2]} rows in {result[3]:.1f}s")
    else:
        for job in job_list:
            result = run_file(job)
            done.append(result)
            report(f"{len(done)}/{len(job_list)} {result[0]}/{result[1]}: {result[2]} rows in {result[3]:.1f}s")
    rows = sum(r[2] for r in done)
    report(f"{len(done)} files, {rows} rows in {time.monotonic() - start:.1f}s with {jobs} job(s)")
    return done
