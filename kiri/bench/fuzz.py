"""`kiri bench fuzz`: seeded hostile inputs at every edge where the outside reaches KIRI, and what each did.

    python -m kiri bench fuzz --cases 2400 --seed 1 [--edge obs] [--timeout 10]

An edge is where someone else's text or bytes enter (kiri/bench/fuzz_edges.py): `--obs`
readings, `kiri import` lines, config files, weights files, Telegram's answers and
updates, a MikroTik router's REST bodies, and the value of every command-line flag. Each
case is one input from a seeded random.Random — a valid input mutated (bits flipped,
bytes inserted, deleted, duplicated or cut, a number swapped for a huge, negative, NaN,
infinite or 400-digit one, deep nesting, invalid UTF-8, very long, empty, unicode) or one
made from the edge's grammar — driven through the same library call the user's input
meets. Its outcome is one of

    accepted    the call succeeded, and what it returned keeps the edge's promises
    refused     a clean refusal: the edge's one error (KiriError; for flags, a non-zero exit
                without a traceback), its message one line
    traceback   any other exception, a refusal of more than one line, or a broken promise
                (a score that is not a number, a reading that does not fit): a bug
    hang        no outcome within --timeout seconds

`--cases N` is the total over the edges run, shared evenly (the first edges take the
remainder); each edge has its own generator, seeded from --seed and its name, so an edge's
cases are the same whether it runs alone (--edge) or with the others. One line per edge,
then the tracebacks found (each distinct one once, with its input), and last
`tracebacks N hangs N`; the exit status is 1 when either is above 0.
"""

import contextlib
import json
import os
import queue
import random
import re
import shutil
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

from . import FUZZ_CASES_MAX as CASES_MAX, FUZZ_EDGES as EDGE_NAMES
from ..errors import KiriError
from ..ground import one_line, printable

EXAMPLES = 5          # distinct tracebacks shown per edge (each is counted in full)
SHOWN_INPUT = 300     # characters of an input shown with its traceback


class Defect(Exception):
    """A call that returned, or refused, but broke a promise of its edge: counted as a traceback."""


# --- hostile material ---------------------------------------------------------------

HOSTILE_NUMBERS = [
    "0", "-0", "-1", "1", "0.5", "-0.0", "1e400", "-1e400", "1e-400", "nan", "NaN", "-nan", "inf", "-inf",
    "Infinity", "-Infinity", "9" * 400, "-" + "9" * 400, "1" + "0" * 5000, "1e308", "1.7976931348623157e308",
    "2e308", "4.9e-324", "0x10", "0b1", "0o7", "1_000", "1__0", "１２", "٣", "²", "⑤", "1e", "e5", ".", "-", "+",
    "1.2.3", "9223372036854775807", "9223372036854775808", "-9223372036854775809", "18446744073709551616",
    " 5 ", "5\x00", "1,5", "1e+09", "1E5", "+7", "--1", "0" * 50 + "1", "1" * 19, "1" * 20, "3.14e-5",
    "100", "101", "1e15", "1e16", "-1e15", "2147483648", "4294967296",
]
HOSTILE_TEXT = [
    "", " ", "\t", "\n", "\r\n", "\r", "\x00", "\x1b[2J", "\x7f", "\u2028", "\u00a0", "\u3000", "\ufeff", "\u200b",
    "é", "日本語", "🙂", "\U0010ffff", "'", '"', "\\", "%", "%(x)s", "${HOME}", "$(id)", "`id`", "[", "]", "{", "}",
    "=", ":", ";", "#", ",", "../../x", "-", "--", "-h", "--help", "null", "true", "None", "a" * 300,
    "x" * 5000, "C9", "<BOS>", "fb:1:approve",
    "\ud800", "\udfff", "a\udcffb", "\udced\udca0\udc80",   # lone surrogates: what a name of bytes that are not UTF-8 becomes
]
# Bytes no UTF-8 decoder takes: a lone continuation, a cut sequence, an overlong form, a surrogate.
INVALID_UTF8 = [b"\xff", b"\xfe", b"\x80", b"\xc3", b"\xe2\x82", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80"]


def hostile_number(rng):
    """A number as text: one of HOSTILE_NUMBERS, or a random one in one of many spellings."""
    if rng.random() < 0.6:
        return rng.choice(HOSTILE_NUMBERS)
    digits = rng.randint(0, rng.choice((3, 20, 400)))
    value = rng.randint(-10 ** digits, 10 ** digits)
    if digits > 300:   # no float holds it
        return str(value)
    return rng.choice((str(value), repr(value / (1 + rng.random())), "%e" % (value * rng.random()),
                       str(rng.uniform(-200, 200))))


def hostile_text(rng):
    """A short text that breaks things: control characters, unicode, quotes, very long, empty."""
    roll = rng.random()
    if roll < 0.5:
        return rng.choice(HOSTILE_TEXT)
    if roll < 0.7:
        return hostile_number(rng)
    if roll < 0.85:
        return "".join(chr(rng.choice((rng.randint(0, 127), rng.randint(128, 0x2fff), rng.randint(0xe000, 0x10ffff))))
                       for _ in range(rng.randint(1, 12)))
    return rng.choice(HOSTILE_TEXT) * rng.randint(2, 50)


def argv_text(rng, text):
    """`text` as a command line delivers it (as_argv), now and then with bytes that are not UTF-8
    spliced in."""
    data = argv_bytes(text)
    if rng.random() < 0.03:
        at = rng.randint(0, len(data))
        data = data[:at] + rng.choice(INVALID_UTF8) + data[at:]
    return os.fsdecode(data)


def as_argv(text):
    """`text` as a command line delivers it: bytes from the OS, decoded as Python decodes argv
    (UTF-8, surrogateescape), so no lone surrogate appears that a real argv could not hold."""
    return os.fsdecode(argv_bytes(text))


def argv_bytes(text):
    escaped = all(0xdc80 <= ord(c) <= 0xdcff for c in text if 0xd800 <= ord(c) <= 0xdfff)   # from bytes already
    return text.encode("utf-8", "surrogateescape" if escaped else "surrogatepass").replace(b"\x00", b"")   # no NUL in argv


NUMBER = re.compile(rb"-?[0-9][0-9.eE+-]*")


def mutate_bytes(rng, data, edits=None):
    """`data` with 1..3 random edits: a bit flipped, bytes inserted, deleted, duplicated, cut,
    a number swapped for a hostile one, invalid UTF-8 or hostile text spliced in."""
    data = bytearray(data)
    for _ in range(edits or rng.randint(1, 3)):
        at = rng.randint(0, len(data))
        roll = rng.random()
        if roll < 0.15 and data:
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
        elif roll < 0.3:
            data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 4)))
        elif roll < 0.45 and data:
            del data[at:at + rng.randint(1, 16)]
        elif roll < 0.55 and data:
            start = rng.randrange(len(data))
            chunk = data[start:start + rng.randint(1, 64)]
            data[at:at] = chunk * rng.randint(1, 8)
        elif roll < 0.62:
            del data[at:]
        elif roll < 0.8:
            number = NUMBER.search(data, at) or NUMBER.search(data)
            if number:
                data[number.start():number.end()] = hostile_number(rng).encode("utf-8")
        elif roll < 0.9:
            data[at:at] = rng.choice(INVALID_UTF8)
        else:
            data[at:at] = hostile_text(rng).encode("utf-8", "surrogatepass")
    return bytes(data)


class Raw:
    """JSON text put as it is into what dumps() writes: NaN, 1e999, a 400-digit number,
    a lone surrogate escape, nesting deeper than any parser allows."""

    def __init__(self, text):
        self.text = text


RAW_JSON = ["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1" + "0" * 400, "-" + "9" * 5000, "1.5e-400",
            '"\\ud800"', '"\\udfff\\ud800"', '"\\u0000"', '"\\n"', "-0", "0.0", "1E400", "[]", "{}", '""',
            "true", "false", "null", "9223372036854775808", "-9223372036854775809"]


def hostile_json(rng, depth=0):
    """A JSON value meant to break whoever reads it (a Raw, or a plain value)."""
    roll = rng.random()
    if roll < 0.3:
        return Raw(rng.choice(RAW_JSON))
    if roll < 0.4:
        levels = rng.choice((20, 100, 1000, 100_000))
        return Raw("[" * levels + "]" * levels if rng.random() < 0.5 else '{"a":' * levels + "1" + "}" * levels)
    if roll < 0.55:
        return hostile_text(rng)
    if roll < 0.7:
        number = hostile_number(rng)
        try:
            return float(number) if rng.random() < 0.5 else int(number)
        except (ValueError, OverflowError):
            return number
    if roll < 0.8 and depth < 3:
        return [hostile_json(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    if roll < 0.9 and depth < 3:
        return {hostile_text(rng): hostile_json(rng, depth + 1) for _ in range(rng.randint(0, 3))}
    return rng.choice((None, True, False, 0, 1, -1, 2 ** 63, 2 ** 64, "", [], {}))


def mutate_json(rng, value, edits=None):
    """A copy of a JSON value (dicts and lists copied only along the path changed) with
    1..3 structural edits: a node replaced by a hostile one, a key dropped or added, a
    node wrapped in a list, a string for a number or the reverse."""
    for _ in range(edits or rng.randint(1, 3)):
        value = _mutate_node(rng, value)
    return value


def _mutate_node(rng, node):
    children = list(node.items()) if isinstance(node, dict) else list(enumerate(node)) if isinstance(node, list) else []
    if children and rng.random() < 0.75:   # go down: most edits land deep, where the details are
        key, child = rng.choice(children)
        copy = dict(node) if isinstance(node, dict) else list(node)
        copy[key] = _mutate_node(rng, child)
        return copy
    roll = rng.random()
    if isinstance(node, dict) and roll < 0.25 and node:
        copy = dict(node)
        del copy[rng.choice(list(copy))]
        return copy
    if isinstance(node, dict) and roll < 0.4:
        return dict(node, **{rng.choice((hostile_text(rng), rng.choice(list(node) or ["x"]))): hostile_json(rng)})
    if isinstance(node, list) and roll < 0.3:
        copy = list(node)
        if copy and rng.random() < 0.5:
            del copy[rng.randrange(len(copy))]
        else:
            copy.insert(rng.randint(0, len(copy)), hostile_json(rng) if rng.random() < 0.5 or not copy else rng.choice(copy))
        return copy
    if roll < 0.5:
        return [node]
    if roll < 0.6 and isinstance(node, (int, float)) and not isinstance(node, bool):
        return str(node)
    if roll < 0.7 and isinstance(node, str):
        try:
            return float(node)
        except ValueError:
            return node + hostile_text(rng)
    return hostile_json(rng)


def dumps(value, ensure_ascii=False):
    """JSON text of `value`, each Raw part written as it is."""
    raws = []

    def placeholder(obj):
        if isinstance(obj, Raw):
            raws.append(obj.text)
            return "\x00RAW%d\x00" % (len(raws) - 1)
        raise TypeError(type(obj).__name__)

    text = json.dumps(value, ensure_ascii=ensure_ascii, default=placeholder)
    for i, raw in enumerate(raws):
        text = text.replace('"\\u0000RAW%d\\u0000"' % i, raw, 1)
    return text


def mutated_json_text(rng, value):
    """JSON text from `value`: structurally mutated (mostly), or mutated as bytes afterwards too."""
    # ensure_ascii half the time: "\\ud800" is valid JSON for a lone surrogate, which the raw form cannot carry.
    text = dumps(mutate_json(rng, value) if rng.random() < 0.8 else value,
                 ensure_ascii=rng.random() < 0.5).encode("utf-8", "surrogatepass")
    return mutate_bytes(rng, text) if rng.random() < 0.3 else text


# --- classifying one case -------------------------------------------------------------

class Outcome:
    __slots__ = ("kind", "error", "where", "details")

    def __init__(self, kind, error=None, where=None, details=None):
        self.kind, self.error, self.where, self.details = kind, error, where, details


class Worker:
    """The one thread that runs an edge's calls, in turn (SQLite lets a connection be used only
    in the thread that made it). A call that hangs keeps its worker: the edge takes a new one."""

    def __init__(self):
        self.jobs = queue.Queue()
        threading.Thread(target=self._loop, daemon=True, name="fuzz-worker").start()

    def _loop(self):
        while True:
            job = self.jobs.get()
            if job is None:
                return
            call, box, done = job
            try:
                box["result"] = call()
            except BaseException as error:   # SystemExit too: every way out of a call is an outcome
                box["error"] = error
                box["trace"] = traceback.format_exc()
            finally:
                done.set()

    def run(self, call, timeout):
        """{"result": …} or {"error": …, "trace": …} of call(), or None when it took more than `timeout` s."""
        box, done = {}, threading.Event()
        self.jobs.put((call, box, done))
        return box if done.wait(timeout) else None

    def stop(self):
        self.jobs.put(None)


def classify(call, timeout, refusals=(KiriError,), worker=None):
    """Run call() on `worker` (a new one if None), at most `timeout` seconds: 'accepted' (it
    returned; a return of "refused" is a refusal it judged itself), 'refused' (it raised one of
    `refusals`, in one line), 'traceback' (anything else, or Defect) or 'hang'."""
    own = worker is None
    worker = worker or Worker()
    try:
        box = worker.run(call, timeout)
    finally:
        if own:
            worker.stop()
    if box is None:
        return Outcome("hang", where=f"no outcome within {timeout:g} s")
    error = box.get("error")
    if error is None:
        return Outcome("refused" if box.get("result") == "refused" else "accepted")
    if isinstance(error, refusals) and not isinstance(error, Defect):
        lines = str(error).splitlines()
        if len(lines) <= 1:
            return Outcome("refused")
        return Outcome("traceback", error=f"{type(error).__name__} in {len(lines)} lines: {one_line(str(error), 160)}",
                       where="a refusal of more than one line", details=box["trace"])
    return Outcome("traceback", error=f"{type(error).__name__}: {one_line(str(error), 200)}",
                   where=innermost_kiri_frame(error), details=box["trace"])


def innermost_kiri_frame(error):
    """'kiri/store.py:1130 in _import_row': the deepest frame of KIRI's own code (not the fuzzer's)."""
    where = None
    for frame in traceback.extract_tb(error.__traceback__):
        path = frame.filename.replace(os.sep, "/")
        if "/kiri/" in path and "/kiri/bench/fuzz" not in path:
            where = "kiri/" + path.rsplit("/kiri/", 1)[1] + f":{frame.lineno} in {frame.name}"
    return where or "the fuzzer's own check"


# --- running ----------------------------------------------------------------------------

class EdgeResult:
    def __init__(self, name):
        self.name = name
        self.counts = {"accepted": 0, "refused": 0, "traceback": 0, "hang": 0}
        self.examples = {}     # (error type, where) -> [count, input shown, error, details]
        self.seconds = 0.0
        self.peak_rss_mb = 0.0

    @property
    def cases(self):
        return sum(self.counts.values())

    def add(self, outcome, shown):
        self.counts[outcome.kind] += 1
        if outcome.kind in ("traceback", "hang"):
            key = (outcome.kind, (outcome.error or "").split(":")[0], outcome.where)
            if key in self.examples:
                self.examples[key][0] += 1
            elif len(self.examples) < EXAMPLES:
                self.examples[key] = [1, shown, outcome.error or "hang", outcome.details]

    def line(self):
        c = self.counts
        return (f"edge {self.name:<9} cases {self.cases} refused {c['refused']} accepted {c['accepted']} "
                f"tracebacks {c['traceback']} hangs {c['hang']} peak_rss {self.peak_rss_mb:.0f} MB "
                f"seconds {self.seconds:.1f}")

    def example_lines(self, details=False):
        lines = []
        for (kind, _, where), (count, shown, error, trace) in self.examples.items():
            # printable: an input, and the words of an error about it, may hold anything (a lone surrogate too)
            lines.append(f"  {kind} x{count} at {where}: {printable(error, 400)}")
            lines.append(f"    input: {printable(shown, 2 * SHOWN_INPUT)}")
            if details and trace:
                lines += ["    " + t for t in trace.rstrip().splitlines()[-6:]]
        return lines


def peak_rss_mb():
    """The most memory this process, or any child it waited for, has held (MB)."""
    import resource   # here: `kiri` imports this module for its edges' names, and resource is Unix's alone
    unit = 1 if sys.platform == "darwin" else 1024   # ru_maxrss: bytes on macOS, KB on Linux
    peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    return peak * unit / 2 ** 20


def shares(total, n):
    """`total` cases over n edges, evenly; the first ones take the remainder."""
    return [total // n + (1 if i < total % n else 0) for i in range(n)]


SETUP_SECONDS = 300   # an edge's setup (a home copied, servers started) on a loaded machine


def run_edge(edge_class, cases, seed, timeout, workdir, fixture, progress=None):
    """`cases` cases of one edge; returns its EdgeResult."""
    result = EdgeResult(edge_class.name)
    rng = random.Random(f"{seed}/{edge_class.name}")   # a str seed is hashed with SHA-512: the same every run
    started = time.monotonic()
    edge = edge_class(Path(tempfile.mkdtemp(prefix=f"{edge_class.name}-", dir=str(workdir))), fixture, timeout)
    worker = Worker()
    in_worker(worker, edge.setup)
    try:
        for i in range(cases):
            shown, call = edge.case(rng, i)   # made here, run there: a case's input never depends on the last outcome
            outcome = classify(call, timeout, edge.refusals, worker)
            result.add(outcome, one_line(shown, SHOWN_INPUT))
            if outcome.kind == "hang":   # the worker is still in that call: a new one, and the edge anew
                worker = Worker()
                in_worker(worker, edge.reset)
            if progress:
                progress(i + 1, cases, result)
    finally:
        in_worker(worker, edge.close)
        worker.stop()
    result.seconds = time.monotonic() - started
    result.peak_rss_mb = peak_rss_mb()
    return result


def in_worker(worker, call):
    """call() on the worker; its failure is the fuzzer's own (a setup that cannot run), raised here."""
    box = worker.run(call, SETUP_SECONDS)
    if box is None:
        raise RuntimeError(f"{call.__qualname__} did not finish within {SETUP_SECONDS} s")
    if "error" in box:
        raise RuntimeError(f"{call.__qualname__} failed:\n{box['trace']}")


def run(cases=2400, seed=1, edges=None, timeout=10.0, report=print, details=False, workdir=None):
    """Fuzz every edge (or those named in `edges`) with `cases` cases in all; report one line
    per edge, the tracebacks found, and `tracebacks N hangs N` last. Returns the EdgeResults."""
    from .fuzz_edges import EDGES, Fixture

    chosen = [e for e in EDGES if edges is None or e.name in edges]
    own = workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="kiri-fuzz-")) if own else Path(workdir)
    results = []
    try:
        with memory_limit(MEMORY_LIMIT), Fixture(workdir / "fixture") as fixture:
            for edge_class, n in zip(chosen, shares(cases, len(chosen))):
                result = run_edge(edge_class, n, seed, timeout, workdir, fixture, progress=tty_progress())
                results.append(result)
                report(result.line())
                for line in result.example_lines(details):
                    report(line)
    finally:
        if own:
            shutil.rmtree(workdir, ignore_errors=True)
    tracebacks = sum(r.counts["traceback"] for r in results)
    hangs = sum(r.counts["hang"] for r in results)
    report(f"tracebacks {tracebacks} hangs {hangs}")
    return results


# The address space a run may take (it needs about 100 MB): a case that wants more fails with a
# MemoryError, counted and shown with its input, instead of taking the machine's memory and the run with it.
MEMORY_LIMIT = 4 * 2 ** 30


@contextlib.contextmanager
def memory_limit(limit):
    """RLIMIT_AS at most `limit` bytes while the block runs (where the system enforces it; macOS
    does not), then as it was."""
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        lower = limit if hard == resource.RLIM_INFINITY else min(limit, hard)
        if soft != resource.RLIM_INFINITY and soft <= lower:
            lower = None   # already as low: nothing to do, nothing to restore
        else:
            resource.setrlimit(resource.RLIMIT_AS, (lower, hard))
    except (ImportError, ValueError, OSError):
        lower = None
    try:
        yield
    finally:
        if lower is not None:
            resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def tty_progress():
    """A progress line on a terminal (stderr), nothing when piped."""
    if not sys.stderr.isatty():
        return None
    started = time.monotonic()

    def show(done, total, result):
        if done % 50 and done != total:
            return
        rate = done / max(time.monotonic() - started, 1e-9)
        eta = (total - done) / rate if rate else 0
        end = "\n" if done == total else ""
        sys.stderr.write(f"\r{result.name}: {done}/{total} cases, {rate:.0f}/s, ETA {eta:.0f} s   {end}")
        sys.stderr.flush()
    return show


def main(cases, seed, edges=None, timeout=10.0, report=print):
    """The command: returns 1 when any edge had a traceback or a hang."""
    results = run(cases=cases, seed=seed, edges=edges, timeout=timeout, report=report)
    return 1 if any(r.counts["traceback"] or r.counts["hang"] for r in results) else 0
