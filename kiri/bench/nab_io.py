"""NAB's files: data series, anomaly windows and results, read strictly and written atomically.

Layout (Numenta Anomaly Benchmark v1.1):
- DATA/data/<category>/<file>.csv — `timestamp,value`, timestamps `YYYY-MM-DD HH:MM:SS`;
- a windows file — JSON `{"<category>/<file>.csv": [[start, end], ...]}`, inclusive timestamps
  written `YYYY-MM-DD HH:MM:SS.ffffff`;
- RESULTS/<detector>/<category>/<detector>_<file>.csv — `timestamp,value,anomaly_score,label`.

A file a user hands over that is not usable raises KiriError naming the file (and the 1-based
line where there is one); a caller passing bad numbers to write_results gets ValueError.
"""

import csv
import fnmatch
import io
import json
import math
from datetime import datetime
from pathlib import Path

from ..atoms.fit import VALUE_LIMIT
from ..errors import KiriError
from ..ground import atomic_write

DATA_HEADER = ("timestamp", "value")
RESULTS_HEADER = ("timestamp", "value", "anomaly_score", "label")
# Where a corpus keeps its windows, relative to its root: the development subset this project
# was tuned on, and NAB's own layout.
WINDOWS_FILES = (Path("dev_windows.json"), Path("labels") / "combined_windows.json")


def corpus_windows(data_dir):
    """The windows file a corpus ships (the first of WINDOWS_FILES under DIR), or None."""
    for name in WINDOWS_FILES:
        if (Path(data_dir) / name).is_file():
            return Path(data_dir) / name
    return None


def parse_timestamp(text):
    """'2014-02-14 14:30:00' or '2014-02-14 14:30:00.000000' → a naive datetime; ValueError if not."""
    stamp = datetime.fromisoformat(text.strip())
    if stamp.tzinfo is not None:
        raise ValueError(f"timestamp {text!r} has a time zone; NAB timestamps have none")
    return stamp


def _rows(path):
    """(line number, fields) for every non-blank CSV row; the header is line 1."""
    try:
        f = open(path, newline="", encoding="utf-8")
    except OSError as e:
        raise KiriError(f"cannot read {path}: {e.strerror}") from None
    with f:
        reader = csv.reader(f)
        try:
            for fields in reader:
                if fields:
                    yield reader.line_num, fields
        except (csv.Error, UnicodeDecodeError) as e:
            raise KiriError(f"{path}:{reader.line_num}: not a CSV row: {e}") from None


def _number(path, line, name, text):
    try:
        value = float(text)
    except ValueError:
        raise KiriError(f"{path}:{line}: {name} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise KiriError(f"{path}:{line}: {name} {text!r} is not a finite number")
    return value


def _timestamp(path, line, text):
    try:
        parse_timestamp(text)
    except ValueError:
        raise KiriError(f"{path}:{line}: timestamp {text!r} is not YYYY-MM-DD HH:MM:SS") from None
    return text.strip()


def read_series(path):
    """A NAB data file → (timestamps as written, values as floats).

    Every row must be `timestamp,value` with a valid timestamp and a finite number no larger
    than VALUE_LIMIT either way (the limit of every reading KIRI reads); anything else (empty,
    text, NaN, inf, 1e308, a missing or extra field) raises KiriError naming file and line.
    """
    rows = _rows(path)
    header = next(rows, None)
    if header is None:
        raise KiriError(f"{path}: empty file (expected a header `timestamp,value`)")
    line, fields = header
    if tuple(f.strip().lower() for f in fields) != DATA_HEADER:
        raise KiriError(f"{path}:{line}: expected the header `timestamp,value`, got {','.join(fields)!r}")
    timestamps, values = [], []
    for line, fields in rows:
        if len(fields) != 2:
            raise KiriError(f"{path}:{line}: expected 2 fields (timestamp,value), got {len(fields)}")
        timestamps.append(_timestamp(path, line, fields[0]))
        value = _number(path, line, "value", fields[1])
        if abs(value) > VALUE_LIMIT:
            raise KiriError(f"{path}:{line}: value {fields[1].strip()!r} is beyond ±{VALUE_LIMIT:g}, "
                            "more than any measurement (a unit mistake?)")
        values.append(value)
    if not values:
        raise KiriError(f"{path}: no data rows")
    return timestamps, values


def data_files(data_dir, pattern=None):
    """Every CSV under DATA_DIR/data/<category>/, as sorted (category, path) pairs.

    `pattern` is a glob matched against "<category>/<file>.csv" (e.g. "realAWS*/*").
    """
    root = Path(data_dir) / "data"
    if not root.is_dir():
        raise KiriError(f"{root} is not a directory (expected DATA/data/<category>/<file>.csv)")
    files = []
    for category in sorted(p for p in root.iterdir() if p.is_dir()):
        for path in sorted(category.glob("*.csv")):
            if path.is_file() and (pattern is None or fnmatch.fnmatchcase(f"{category.name}/{path.name}", pattern)):
                files.append((category.name, path))
    if not files:
        raise KiriError(f"no data files under {root}" + (f" match {pattern!r}" if pattern else ""))
    return files


def check_detector(detector):
    if not (isinstance(detector, str) and detector.isascii() and detector.isalnum()):
        raise KiriError(f"detector name {detector!r}: use letters and digits only")
    return detector


def results_path(results_dir, detector, category, filename):
    """RESULTS/<detector>/<category>/<detector>_<file>.csv"""
    check_detector(detector)
    return Path(results_dir) / detector / category / f"{detector}_{Path(filename).name}"


def _as_datetime(stamp):
    return stamp if isinstance(stamp, datetime) else parse_timestamp(stamp)


def labels(timestamps, windows):
    """1 for every timestamp inside an inclusive [start, end] window, else 0."""
    bounds = [(_as_datetime(s), _as_datetime(e)) for s, e in windows]
    out = []
    for ts in timestamps:
        t = _as_datetime(ts)
        out.append(1 if any(s <= t <= e for s, e in bounds) else 0)
    return out


def write_results(path, timestamps, values, scores, windows):
    """Write one results file atomically: `timestamp,value,anomaly_score,label`.

    `windows` are (start, end) pairs (datetimes or timestamp strings), inclusive. Every score
    must be a finite number in [0, 1] (ValueError otherwise), one per timestamp.
    """
    if not len(timestamps) == len(values) == len(scores):
        raise ValueError(f"{len(timestamps)} timestamps, {len(values)} values, {len(scores)} scores")
    checked = []
    for i, s in enumerate(scores):
        s = float(s)
        if not (math.isfinite(s) and 0.0 <= s <= 1.0):
            raise ValueError(f"row {i}: anomaly score {s!r} is not a number in [0, 1]")
        checked.append(s)
    marks = labels(timestamps, windows)
    text = io.StringIO(newline="")
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(RESULTS_HEADER)
    for ts, v, s, label in zip(timestamps, values, checked, marks):
        writer.writerow((ts, repr(float(v)), repr(s), label))
    atomic_write(path, text.getvalue())


def read_windows(path):
    """The windows file → {"<category>/<file>.csv": [(start, end), ...]} with datetimes, sorted by start."""
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except OSError as e:
        raise KiriError(f"cannot read {path}: {e.strerror}") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise KiriError(f"{path}: not JSON: {e}") from None
    if not isinstance(raw, dict):
        raise KiriError(f"{path}: expected an object {{\"<category>/<file>.csv\": [[start, end], ...]}}")
    windows = {}
    for key, pairs in raw.items():
        if not isinstance(pairs, list):
            raise KiriError(f"{path}: {key}: expected a list of [start, end] pairs")
        out = []
        for pair in pairs:
            if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(t, str) for t in pair)):
                raise KiriError(f"{path}: {key}: expected [start, end] timestamps, got {pair!r}")
            try:
                start, end = parse_timestamp(pair[0]), parse_timestamp(pair[1])
            except ValueError:
                raise KiriError(f"{path}: {key}: bad timestamp in {pair!r}") from None
            if end < start:
                raise KiriError(f"{path}: {key}: window {pair!r} ends before it starts")
            out.append((start, end))
        windows[key] = sorted(out)
    return windows


def read_results(path):
    """A results file → (timestamps as written, anomaly scores as floats in [0, 1]).

    Columns are found by header name, so NAB's own results files (extra columns) read too.
    """
    rows = _rows(path)
    header = next(rows, None)
    if header is None:
        raise KiriError(f"{path}: empty file (expected a header with timestamp and anomaly_score)")
    line, fields = header
    names = [f.strip().lower() for f in fields]
    if "timestamp" not in names or "anomaly_score" not in names:
        raise KiriError(f"{path}:{line}: the header has no timestamp or no anomaly_score column")
    t_col, s_col = names.index("timestamp"), names.index("anomaly_score")
    width = max(t_col, s_col) + 1
    timestamps, scores = [], []
    for line, fields in rows:
        if len(fields) < width:
            raise KiriError(f"{path}:{line}: expected {len(names)} fields, got {len(fields)}")
        timestamps.append(_timestamp(path, line, fields[t_col]))
        score = _number(path, line, "anomaly_score", fields[s_col])
        if not 0.0 <= score <= 1.0:
            raise KiriError(f"{path}:{line}: anomaly_score {fields[s_col]!r} is outside [0, 1]")
        scores.append(score)
    return timestamps, scores
