"""`kiri bench nab-resample`: a copy of a NAB corpus at another rate, for `bench nab` and `bench nab-score`.

This project's own development files are all 5-minute series of about 4,000 rows, so a
setting that is really a count of rows looks right on them whatever the rate it was meant
for. Resampling them to a half, a third, a quarter of the rate (`--every 2`, 3, 4) is how
the detector's settings were checked for rate robustness. The other way (`--up N`) gives a
corpus at a finer rate than theirs, in files long enough that NAB's probation (15 % of a
file, at most 750 rows) is a small share of each: how the stream detector's reading of
fine-rate series is checked.

Each DIR/data/<category>/<file>.csv becomes OUT/data/<category>/<file>.csv with, for `every`,
one row per block of `every` consecutive rows: the block's first timestamp, as written, and
the mean of its values; a last incomplete block is dropped. For `up`, each row and the next
one are joined by up - 1 rows on the straight line between them, in time and in value (a
time between whole seconds written as the second below); the last row stays, so R rows
become (R - 1) * up + 1. The corpus's windows files are copied
unchanged: windows are timestamp ranges, so they hold at any rate.
"""

import csv
import io
import os
from functools import partial
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


def interpolated(times, values, up):
    """(timestamp, value) rows at `up` times the rate: between each row and the next, up - 1
    more at even steps on the line from one to the other; the last row as it is. Timestamps are
    written YYYY-MM-DD HH:MM:SS, a time between whole seconds as the whole second below (5-minute
    rows at up=3 are 100 s apart, exact). (read_series keeps values within ±1e15: no overflow.)"""
    rows = []
    for (t0, v0), (t1, v1) in zip(zip(times, values), zip(times[1:], values[1:])):
        rows += [(t0 + (t1 - t0) * k // up, v0 + k * (v1 - v0) / up) for k in range(up)]   # timedelta // floors
    rows.append((times[-1], values[-1]))
    return [(t.isoformat(sep=" ", timespec="seconds"), v) for t, v in rows]   # isoformat truncates


def block_rows(path, every):
    """One data file's rows as means of `every`: (rows read, the rows to write)."""
    timestamps, values = nab_io.read_series(path)
    rows = block_means(timestamps, values, every)
    if not rows:   # an empty file would be no NAB data file: `bench nab` could not read it
        raise KiriError(f"{path}: {len(values)} rows, fewer than one block of {every}")
    return len(values), rows


def interpolated_rows(path, up):
    """One data file's rows at `up` times its rate: (rows read, the rows to write). Times are
    joined as the file has them: a repeated timestamp (NAB's own files repeat 03:00:00 where a
    clock went forward) is repeated, as `bench nab` reads it in the original."""
    timestamps, values = nab_io.read_series(path)
    if len(values) < 2:
        raise KiriError(f"{path}: 1 row, fewer than the 2 that interpolation needs")
    return len(values), interpolated([nab_io.parse_timestamp(t) for t in timestamps], values, up)


def resample(data_dir, out_dir, every=None, up=None, pattern=None, report=print):
    """Write the corpus under DATA_DIR (its files matching `pattern`) under OUT_DIR at 1/`every`
    of its rate or at `up` times it (exactly one of the two); returns [(category, name, rows in,
    rows out)]. Every file is read before one is written, so a bad file (KiriError naming it)
    leaves nothing written."""
    if (every is None) == (up is None):
        raise ValueError(f"every {every!r}, up {up!r}: give exactly one")
    factor = every if up is None else up
    if factor < 2:
        raise ValueError(f"every {every!r}, up {up!r}: at least 2 (1 would be a copy)")
    check_apart(data_dir, out_dir)
    read = partial(block_rows, every=every) if up is None else partial(interpolated_rows, up=up)
    files = [(category, path.name, *read(path)) for category, path in nab_io.data_files(data_dir, pattern)]
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
    how = f"means of {every}" if up is None else f"{up} times the rate, interpolated"
    report(f"{len(done)} files, {sum(d[2] for d in done)} rows -> {sum(d[3] for d in done)} "
           f"({how}) in {out_dir}; copied {copied}")
    return done
