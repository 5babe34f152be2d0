"""`kiri bench nab-resample`: a copy of a NAB corpus at a lower rate, for `bench nab` and `bench nab-score`.

This project's own development files are all 5-minute series of about 4,000 rows, so a
setting that is really a count of rows looks right on them whatever the rate it was meant
for. Resampling them to a half, a third, a quarter of the rate (`--every 2`, 3, 4) is how
the detector's settings were checked for rate robustness.

Each DIR/data/<category>/<file>.csv becomes OUT/data/<category>/<file>.csv with one row per
block of `every` consecutive rows: the block's first timestamp, as written, and the mean of
its values; a last incomplete block is dropped. The corpus's windows files are copied
unchanged: windows are timestamp ranges, so they hold at any rate.
"""

import csv
import io
import os
from pathlib import Path

from ..errors import KiriError
from ..ground import atomic_write
from . import nab_io

def block_means(timestamps, values, every):
    """(first timestamp, mean value) of each whole block of `every` rows, in order. (read_series
    keeps values within ±1e15, so no sum of a block overflows.)"""
    return [(timestamps[start], sum(values[start:start + every]) / every)
            for start in range(0, len(values) - every + 1, every)]


def series_text(rows):
    text = io.StringIO(newline="")
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(nab_io.DATA_HEADER)
    for timestamp, value in rows:
        writer.writerow((timestamp, repr(float(value))))
    return text.getvalue()


def check_apart(data_dir, out_dir):
    """Writing into the corpus itself would replace its files with their resampled copies."""
    for a, b in ((data_dir, out_dir), (Path(data_dir) / "data", Path(out_dir) / "data")):
        if os.path.realpath(a) == os.path.realpath(b):
            raise KiriError(f"--out {out_dir} would write over the corpus {data_dir} itself: give another folder")


def resampled(category, path, every):
    """One data file read and resampled: (category, name, rows read, the rows to write)."""
    timestamps, values = nab_io.read_series(path)
    rows = block_means(timestamps, values, every)
    if not rows:   # an empty file would be no NAB data file: `bench nab` could not read it
        raise KiriError(f"{path}: {len(values)} rows, fewer than one block of {every}")
    return category, path.name, len(values), rows


def resample(data_dir, out_dir, every, pattern=None, report=print):
    """Write the corpus under DATA_DIR (its files matching `pattern`) at 1/`every` of its rate
    under OUT_DIR; returns [(category, name, rows in, rows out)]. Every file is read before
    one is written, so a bad file (KiriError naming it) leaves nothing written."""
    if every < 2:
        raise ValueError(f"every {every!r}: a block is at least 2 rows")
    check_apart(data_dir, out_dir)
    files = [resampled(category, path, every) for category, path in nab_io.data_files(data_dir, pattern)]
    windows = [(name, Path(data_dir, name).read_bytes()) for name in nab_io.WINDOWS_FILES  # each one present
               if Path(data_dir, name).is_file()]
    done = []
    for category, name, rows_in, rows in files:
        atomic_write(Path(out_dir) / "data" / category / name, series_text(rows))
        done.append((category, name, rows_in, len(rows)))
        report(f"{category}/{name}: {rows_in} rows -> {len(rows)}")
    for name, data in windows:
        atomic_write(Path(out_dir) / name, data)
    copied = ", ".join(str(name) for name, _ in windows) or "no windows file"
    report(f"{len(done)} files, {sum(d[2] for d in done)} rows -> {sum(d[3] for d in done)} "
           f"(means of {every}) in {out_dir}; copied {copied}")
    return done
