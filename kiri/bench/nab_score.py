"""`kiri bench nab-score`: NAB's scoring rules (v1.1), over a data set, a windows file and results.

The rules, as the Numenta Anomaly Benchmark (NAB v1.1, MIT) defines them:
- probation: the first P = min(floor(0.15·N), 750) rows of a file are never scored;
- a row past probation is a detection when anomaly_score ≥ T; ONE threshold T per profile for
  all files, optimised over the candidates 1.1 (detect nothing) and every distinct score
  value: the best total raw score wins, ties go to the higher threshold;
- scaled sigmoid σ(y) = 2/(1+e^(5y)) − 1 for y ≤ 3, −1 for y > 3;
- value of a detection at row i: inside a window L..R (W = R−L+1) A_TP·σ(−(R−i+1)/W)/σ(−1);
  outside every window before any window ended −A_FP; after a window (the most recent one to
  end, right edge R, width W) A_FP·σ((i−R)/(W−1)), which is −A_FP when W = 1 (the limit; NAB's
  own code divides by zero there);
- raw score: the sum of the false positives' values, plus for each window its best (earliest)
  detection's value or −A_FN when it has none;
- normalised: 100·(raw − null)/(perfect − null), null = −A_FN·Nw, perfect = A_TP·Nw, where Nw
  counts the windows with at least one row past probation (as NAB: a window that lies wholly
  in probation is not scored, but its right edge still prices the false positives after it).

Windows map to rows by timestamp: a window is the rows whose timestamp lies in [start, end].

The threshold sweep sorts every scored row once by score, descending, and admits them group
by group (one group per distinct score), updating the raw score incrementally: a false
positive adds its fixed value; a row inside a window replaces the window's best value only if
it is earlier (higher) than the best so far. One pass per profile, O(rows) after the sort.
"""

import math

from ..errors import KiriError
from . import nab_io

NO_DETECTION = 1.1   # the threshold above every score: detect nothing
TIE = 1e-9           # raw scores closer than this are a tie (incremental sums carry rounding)


class Profile:
    def __init__(self, name, tp, fn, fp):
        self.name, self.tp, self.fn, self.fp = name, tp, fn, fp

    def weights(self):
        return {"A_TP": self.tp, "A_FN": self.fn, "A_FP": self.fp}


PROFILES = (Profile("standard", 1.0, 1.0, 0.11),
            Profile("reward_low_FP_rate", 1.0, 1.0, 0.22),
            Profile("reward_low_FN_rate", 1.0, 2.0, 0.11))


def probation_rows(n):
    """min(floor(0.15·N), 750), in integers (equal to the float floor for every N)."""
    return min(n * 15 // 100, 750)


def scaled_sigmoid(y):
    """σ(y) = 2/(1+e^(5y)) − 1 for y ≤ 3, −1 for y > 3."""
    if y > 3:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * y)) - 1.0


SIGMA_MINUS_ONE = scaled_sigmoid(-1.0)


def window_value(i, left, right):
    """A detection at row i of window left..right, per unit A_TP: σ(−(R−i+1)/W)/σ(−1)."""
    width = right - left + 1
    return scaled_sigmoid(-(right - i + 1) / width) / SIGMA_MINUS_ONE


def after_window_value(i, left, right):
    """A false positive at row i > right after window left..right, per unit A_FP: σ((i−R)/(W−1))."""
    width = right - left + 1
    if width == 1:
        return -1.0
    return scaled_sigmoid((i - right) / (width - 1))


def window_spans(name, stamps, windows):
    """[(start, end)] datetimes → [(L, R)] row indices, in time order; KiriError if one is unusable."""
    spans = []
    for start, end in sorted(windows):
        inside = [i for i, t in enumerate(stamps) if start <= t <= end]
        if not inside:
            raise KiriError(f"{name}: window {start} .. {end} contains no row of the data file")
        left, right = inside[0], inside[-1]
        if right - left + 1 != len(inside):
            raise KiriError(f"{name}: rows are not in time order around window {start} .. {end}")
        if spans and left <= spans[-1][1]:
            raise KiriError(f"{name}: window {start} .. {end} overlaps the one before it")
        spans.append((left, right))
    return spans


def row_values(n, spans):
    """Per row: (index of its window or -1, value per unit weight: A_TP inside, A_FP outside)."""
    window_of, unit = [-1] * n, [0.0] * n
    j = 0  # spans[j]: the first window that has not ended before row i
    for i in range(n):
        while j < len(spans) and spans[j][1] < i:
            j += 1
        if j < len(spans) and spans[j][0] <= i:
            window_of[i] = j
            unit[i] = window_value(i, *spans[j])
        elif j == 0:
            unit[i] = -1.0
        else:
            unit[i] = after_window_value(i, *spans[j - 1])
    return window_of, unit


class ScoredFile:
    """One data file's scored rows (past probation): scores, window ids (global), unit values."""

    def __init__(self, key, rows, probation, spans, scores, window_of, unit, first_window):
        self.key, self.rows, self.probation, self.spans = key, rows, probation, spans
        scored = range(probation, rows)
        # windows with a row past probation are scored: global ids first_window, first_window+1, …
        global_id = {}
        for k, (_, right) in enumerate(spans):
            if right >= probation:
                global_id[k] = first_window + len(global_id)
        self.windows = len(global_id)
        self.scores = [scores[i] for i in scored]
        self.window_ids = [global_id[window_of[i]] if window_of[i] >= 0 else -1 for i in scored]
        self.unit = [unit[i] for i in scored]


def load_file(category, path, windows_by_file, results_dir, detector, first_window):
    key = f"{category}/{path.name}"
    if key not in windows_by_file:
        raise KiriError(f"the windows file has no entry for {key}")
    timestamps, _ = nab_io.read_series(path)
    result = nab_io.results_path(results_dir, detector, category, path.name)
    if not result.is_file():
        raise KiriError(f"no results file for {key}: {result} is missing")
    result_stamps, scores = nab_io.read_results(result)
    if len(result_stamps) != len(timestamps):
        raise KiriError(f"{result}: {len(result_stamps)} rows, but {path} has {len(timestamps)}")
    stamps = [nab_io.parse_timestamp(t) for t in timestamps]
    for i, (t, r) in enumerate(zip(stamps, result_stamps)):
        if t != nab_io.parse_timestamp(r):
            raise KiriError(f"{result}:{i + 2}: timestamp {r} differs from the data file's {timestamps[i]}")
    spans = window_spans(key, stamps, windows_by_file[key])
    window_of, unit = row_values(len(stamps), spans)
    return ScoredFile(key, len(stamps), probation_rows(len(stamps)), spans, scores, window_of, unit, first_window)


def optimise_threshold(profile, order, scores, window_ids, unit, n_windows):
    """The candidate threshold with the best total raw score (ties → the higher threshold).

    `order` lists every scored row by descending score. Admitting rows in that order, a false
    positive adds its fixed value; a row in a window counts only if it beats the window's best
    so far (an earlier row). Raw is evaluated once per distinct score.
    """
    best_unit = [None] * n_windows
    fp_sum = 0.0
    window_sum = -profile.fn * n_windows
    best_threshold, best_raw = NO_DETECTION, window_sum
    k, n = 0, len(order)
    while k < n:
        threshold = scores[order[k]]
        while k < n and scores[order[k]] == threshold:
            i = order[k]
            w = window_ids[i]
            if w < 0:
                fp_sum += unit[i]
            else:
                old = best_unit[w]
                if old is None:
                    best_unit[w] = unit[i]
                    window_sum += profile.fn + profile.tp * unit[i]
                elif unit[i] > old:
                    best_unit[w] = unit[i]
                    window_sum += profile.tp * (unit[i] - old)
            k += 1
        raw = profile.fp * fp_sum + window_sum
        if raw > best_raw + TIE:
            best_threshold, best_raw = threshold, raw
    return best_threshold


def file_at_threshold(f, profile, threshold):
    """One file's counts and raw score at a threshold (summed exactly with fsum)."""
    best = {}
    fp_values = []
    detections = 0
    for s, w, u in zip(f.scores, f.window_ids, f.unit):
        if s >= threshold:
            detections += 1
            if w < 0:
                fp_values.append(profile.fp * u)
            elif w not in best or u > best[w]:
                best[w] = u
    hit = len(best)
    parts = fp_values + [profile.tp * u for u in best.values()] + [-profile.fn] * (f.windows - hit)
    return {"file": f.key, "rows": f.rows, "windows": f.windows, "hit": hit, "detections": detections,
            "false_positives": len(fp_values), "raw": math.fsum(parts)}


def score(data_dir, windows_file, results_dir, detector="kiri", pattern=None):
    """Score a detector's results on every data file (or those matching `pattern`); returns a report dict.
    windows_file None: the corpus's own (nab_io.WINDOWS_FILES), as `bench nab` reads it."""
    nab_io.check_detector(detector)
    files_found = nab_io.data_files(data_dir, pattern)
    if windows_file is None:
        windows_file = nab_io.corpus_windows(data_dir)
        if windows_file is None:
            raise KiriError(f"{data_dir}: no windows file ({' or '.join(map(str, nab_io.WINDOWS_FILES))}); "
                            "give one with --windows FILE")
    windows_by_file = nab_io.read_windows(windows_file)
    files = []
    n_windows = 0
    for category, path in files_found:
        f = load_file(category, path, windows_by_file, results_dir, detector, n_windows)
        n_windows += f.windows
        files.append(f)
    if n_windows == 0:
        raise KiriError("no anomaly window past probation in these files: the normalised score is undefined")
    scores = [s for f in files for s in f.scores]
    window_ids = [w for f in files for w in f.window_ids]
    unit = [u for f in files for u in f.unit]
    order = sorted(range(len(scores)), key=scores.__getitem__, reverse=True)
    profiles, table = {}, None
    for profile in PROFILES:
        threshold = optimise_threshold(profile, order, scores, window_ids, unit, n_windows)
        per_file = [file_at_threshold(f, profile, threshold) for f in files]
        raw = math.fsum(r["raw"] for r in per_file)
        null, perfect = -profile.fn * n_windows, profile.tp * n_windows
        profiles[profile.name] = {"weights": profile.weights(), "threshold": threshold, "raw": raw,
                                  "null": null, "perfect": perfect,
                                  "score": 100.0 * (raw - null) / (perfect - null)}
        if profile.name == "standard":
            table = per_file
    return {"detector": detector, "files": len(files), "rows": sum(f.rows for f in files),
            "scored_rows": len(scores), "windows": n_windows, "profiles": profiles, "table": table}


def format_report(report):
    """The standard profile's per-file table, the three profiles, and last `standard <score>`."""
    table = report["table"]
    std = report["profiles"]["standard"]
    width = max(len("total"), *(len(r["file"]) for r in table))
    head = f"{'file':<{width}}  {'rows':>7}  {'windows':>7}  {'hit':>4}  {'detections':>10}  {'FP':>6}  {'raw':>9}"
    lines = [f"{report['detector']}: standard profile at threshold {std['threshold']:.6g}, per file", head]
    for r in table:
        lines.append(f"{r['file']:<{width}}  {r['rows']:>7}  {r['windows']:>7}  {r['hit']:>4}  "
                     f"{r['detections']:>10}  {r['false_positives']:>6}  {r['raw']:>9.3f}")
    lines.append(f"{'total':<{width}}  {report['rows']:>7}  {report['windows']:>7}  "
                 f"{sum(r['hit'] for r in table):>4}  {sum(r['detections'] for r in table):>10}  "
                 f"{sum(r['false_positives'] for r in table):>6}  {std['raw']:>9.3f}")
    lines.append("")
    lines.append(f"{'profile':<20}  {'threshold':>10}  {'raw':>9}  {'null':>9}  {'perfect':>9}  {'score':>7}")
    for name, p in report["profiles"].items():
        lines.append(f"{name:<20}  {p['threshold']:>10.6g}  {p['raw']:>9.3f}  {p['null']:>9.3f}  "
                     f"{p['perfect']:>9.3f}  {p['score']:>7.2f}")
    lines.append(f"standard {std['score']:.2f}")
    return "\n".join(lines)
