"""The edges `kiri bench fuzz` drives (kiri/bench/fuzz.py), each through the library call its input meets.

    obs        `kiri <atom> score --obs TEXT`: verbs.score with the text, on trained atoms
    import     `kiri import FILE`: Store.import_jsonl, then what was let in is scored,
               exported and imported again (as duplicates)
    config     config.ini: load_settings, then every setting used as the loop uses it
    weights    a weights file (Pulse's, a declared atom's): `kiri <atom> score` (verbs.score),
               `kiri status`, `kiri check`
    telegram   the Bot API's answers and updates, from a loopback fake (or raw bytes from a
               loopback socket): send_alert, poll; the settings a bot is made from
    mikrotik   RouterOS REST bodies from a loopback server (or raw bytes), the router's
               address and credentials: the MikroTik Pulse source
    flags      every command's flags: kiri.cli.main(argv) in this process, a sample of
               them as `python -m kiri …` too, whose exit and stderr must be the same
    nab        a NAB data file: nab_io.read_series, then what it let in through the
               streaming detector (`bench nab`'s, its training cut short)

An edge makes one case from its generator (`case(rng, i)` → (the input shown, the call))
and judges what the call returned; fuzz.classify runs it. Nothing here reaches beyond
127.0.0.1: the servers are its own, and an address a case makes names 127.0.0.1 (or is
refused before any connection).
"""

import argparse
import contextlib
import io
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

from ..atoms import BUILTIN, verbs
from ..atoms.fit import misfit
from ..errors import KiriError
from ..ground import http_url_problem
from .fuzz import (EDGE_NAMES, Defect, argv_text, as_argv, dumps, hostile_json, hostile_number, hostile_text,
                   mutate_bytes, mutate_json, mutated_json_text)

GAUGE = "gauge"
CONFIG = f"""[kiri]
host_name = fuzzbox

[atom:{GAUGE}]
schema = T=20:100:8 U=0:100:5 Q=learn:6
command = true
interval = 300
"""
TOKEN, CHAT = "123:FUZZ", 4242
DAY = 86400.0


def open_home(home):
    from ..config import load_settings
    from ..store import open_store
    settings = load_settings(home=home, env={})
    return settings, open_store(home)


def score_is_a_number(result):
    """What every score of an accepted reading must be: a number a threshold can be compared with."""
    if not (isinstance(result.score, float) and math.isfinite(result.score) and result.score >= 0):
        raise Defect(f"score {result.score!r} is not a finite number >= 0")
    result.explain()
    json.dumps(result.to_json(), allow_nan=False)


class Fixture:
    """A home built once per run: a config declaring the atom `gauge` (a learned field too),
    Pulse, Drift and gauge trained for two steps on 40 readings, three alerts. Edges copy it."""

    def __init__(self, path):
        self.path = Path(path)
        self.home = self.path / "home"

    def __enter__(self):
        import random
        self.home.mkdir(parents=True)
        config = self.home / "config.ini"
        config.write_text(CONFIG, encoding="utf-8")
        os.chmod(str(config), 0o600)
        settings, store = open_home(self.home)
        now = time.time()
        with store:
            for name in ("pulse", "drift"):
                module = verbs.atom_module(name, settings)
                verbs.add_synthetic(module, store, 40, seed=1, end=now)
                verbs.train(module, settings, store, steps=2, warm_start=True)
            rng = random.Random(1)
            store.add_observations([{"atom": GAUGE, "ts": now - (40 - i) * 300, "source": "command",
                                     "values": {"T": rng.uniform(20, 100), "U": rng.uniform(0, 100),
                                                "Q": rng.gauss(5, 2)}} for i in range(40)])
            verbs.train(verbs.atom_module(GAUGE, settings), settings, store, steps=2)
            self.alerts = [store.add_alert("pulse", f"fuzzbox: CPU 9{k} % (usually 10–20 %)", situation=f"s{k}")
                           for k in range(3)]
        self.weights = {name: settings.weights_path(name).read_bytes() for name in ("pulse", "drift", GAUGE)}
        return self

    def __exit__(self, *exc):
        shutil.rmtree(self.path, ignore_errors=True)

    def copy(self, dest):
        shutil.copytree(str(self.home), str(dest))
        return Path(dest)


class Edge:
    name = ""
    refusals = (KiriError,)

    def __init__(self, workdir, fixture, timeout):
        self.root, self.fixture, self.timeout = Path(workdir), fixture, timeout
        self.generation = 0
        self.workdir = self.root / "0"
        self.workdir.mkdir()

    def setup(self):
        pass

    def close(self, final=True):
        """Let go of what setup took; `final` False: only to set up again (reset)."""

    def reset(self):
        """After a hang: start again in a new folder (the hung call may still use the old one).
        Runs on a new worker thread: what the old one opened may refuse to close here."""
        with contextlib.suppress(Exception):
            self.close(final=False)
        self.generation += 1
        self.workdir = self.root / str(self.generation)
        self.workdir.mkdir()
        self.setup()

    def case(self, rng, i):
        raise NotImplementedError


# --- obs ------------------------------------------------------------------------------

def plausible(rng, kind):
    """A value that fits a schema field (or lies a little beyond its range), as text."""
    if isinstance(kind, dict):
        return "%g" % rng.gauss(5, 3)
    lo, hi = kind[0], kind[1]
    return rng.choice(("%g" % rng.uniform(lo, hi), str(round(rng.uniform(lo - 2, hi + 2))), "%.2f" % rng.uniform(lo, hi)))


def token_words(rng, spec, language):
    """Token words of a reading: a real token of each field mostly, else a near miss."""
    words = []
    for field in language.fields:
        tokens = [language.tokens[t] for t in language.field_tokens(field)]
        roll = rng.random()
        if roll < 0.95:
            words.append(rng.choice(tokens))
        elif roll < 0.98:
            words.append(field + rng.choice(("-1", str(len(tokens)), str(len(tokens) + 1), "_", "<", ">", "", "00",
                                             "1.0", "１", hostile_number(rng))))
        else:
            words.append(hostile_text(rng))
    return words


def observation_text(rng, spec, language):
    """`--obs` text: values (C=95 …), tokens (C9 …), a mix, or a valid one mutated as bytes."""
    fields = list(spec.schema)
    if spec.clock and rng.random() < 0.5:
        fields = [f for f in fields if f not in ("H", "W")]
    roll = rng.random()
    if roll < 0.5:
        # Values: each plausible (or a little out of range), one of them hostile in half the cases.
        hostile = rng.choice(fields) if rng.random() < 0.5 else None
        words = []
        for field in fields:
            value = hostile_number(rng) if field == hostile else plausible(rng, spec.schema[field])
            words.append(f"{field}={value}" if rng.random() < 0.97 else
                         rng.choice((f"{field} = {value}", f"{field}=={value}", f"={value}", f"{field}=",
                                     f"{field.lower()}={value}")))
        if rng.random() < 0.1 and words:
            del words[rng.randrange(len(words))]
        if rng.random() < 0.05:
            words.append(rng.choice(words) if words else "C=1")
        if rng.random() < 0.05:
            words.insert(rng.randint(0, len(words)), f"{hostile_text(rng)}={hostile_number(rng)}")
        if rng.random() < 0.2:
            rng.shuffle(words)
    elif roll < 0.85:
        words = token_words(rng, spec, language)
        if spec.clock and rng.random() < 0.5:
            words = words[2:]
        if rng.random() < 0.1 and words:
            del words[rng.randrange(len(words))]
        if rng.random() < 0.05:
            words.insert(rng.randint(0, len(words)), rng.choice(("C=5", "<BOS>", "")))
    else:
        valid = " ".join(f"{f}={plausible(rng, spec.schema[f])}" for f in fields)
        return argv_text(rng, mutate_bytes(rng, valid.encode("utf-8")).decode("utf-8", "surrogateescape"))
    separator = rng.choice((" ",) * 12 + ("\t", "  ", "\n", "\u3000", "\u00a0", ",", ""))
    return argv_text(rng, separator.join(words))


class ObsEdge(Edge):
    """`kiri <atom> score --obs TEXT` on trained Pulse, Drift and gauge, and an untrained Rhythm."""
    name = "obs"

    def setup(self):
        self.settings, self.store = open_home(self.fixture.copy(self.workdir / "home"))
        self.modules = verbs.all_atoms(self.settings)
        self.languages = {name: verbs.load_atom(m, self.settings).language for name, m in self.modules.items()}

    def close(self, final=True):
        self.store.close()

    def case(self, rng, i):
        atom = rng.choice(("pulse",) * 4 + ("drift", GAUGE, "rhythm"))
        module = self.modules[atom]
        text = observation_text(rng, module.SPEC, self.languages[atom])
        record = rng.random() < 0.3   # the command records each score; most cases leave the store as it is

        def call():
            score_is_a_number(verbs.score(module, self.settings, self.store, obs=text, record=record))
        return f"kiri {atom} score --obs {text!r}", call


# --- import ---------------------------------------------------------------------------

def reading(rng, atom, now):
    """A line of `kiri export`, as a dict."""
    values = {"pulse": lambda: {"C": rng.uniform(0, 100), "M": rng.uniform(0, 100), "D": rng.uniform(0, 100),
                                "S": rng.uniform(0, 100), "L": rng.uniform(0, 8), "N": rng.choice((0, 1))},
              "drift": lambda: {"A": rng.randint(0, 9), "C": rng.randint(0, 9), "S": rng.randint(0, 9)},
              GAUGE: lambda: {"T": rng.uniform(20, 100), "U": rng.uniform(0, 100), "Q": rng.gauss(5, 2)},
              "rhythm": lambda: {"H": rng.uniform(0, 24), "W": rng.randint(0, 6), "I": rng.uniform(0, 60),
                                 "A": rng.uniform(0, 100), "F": rng.uniform(0, 180), "G": rng.randint(0, 9)}}[atom]()
    if atom in ("pulse", "drift") and rng.random() < 0.3:
        values.update(H=rng.uniform(0, 24), W=rng.randint(0, 6))
    line = {"atom": atom, "ts": now - rng.uniform(0, 30 * DAY), "values": values,
            "source": rng.choice(("linux", "import", "mikrotik", "command", "cli")), "synthetic": rng.random() < 0.2}
    if rng.random() < 0.5:
        line["host"] = "fuzzbox"
    return line


def import_file(rng, now):
    """1..4 lines of an export, each valid, mutated, made up, or junk; joined as a file would be."""
    lines = []
    for _ in range(rng.randint(1, 4)):
        base = reading(rng, rng.choice(("pulse", "pulse", "drift", GAUGE, "rhythm")), now)
        roll = rng.random()
        if roll < 0.2:
            lines.append(dumps(base).encode("utf-8"))
        elif roll < 0.75:
            lines.append(mutated_json_text(rng, base))
        elif roll < 0.9:
            made = {k: (hostile_json(rng) if rng.random() < 0.4 else v) for k, v in base.items()}
            lines.append(dumps(made if rng.random() < 0.8 else hostile_json(rng)).encode("utf-8", "surrogatepass"))
        else:
            lines.append(mutate_bytes(rng, hostile_text(rng).encode("utf-8", "surrogatepass"), edits=2))
    data = rng.choice((b"\n", b"\n", b"\r\n", b"\n\n")).join(lines)
    if rng.random() < 0.1:
        data = b"\xef\xbb\xbf" + data
    return data + (b"\n" if rng.random() < 0.8 else b"")


class ImportEdge(Edge):
    """`kiri import FILE`: each file into an emptied store; what it let in must score, export
    and import again as duplicates (a row import takes is a row the rest can read)."""
    name = "import"

    def setup(self):
        from ..check import specs_of
        self.settings, self.store = open_home(self.fixture.copy(self.workdir / "home"))
        self.specs = specs_of(self.settings)
        self.modules = verbs.all_atoms(self.settings)

    def close(self, final=True):
        self.store.close()

    def case(self, rng, i):
        data = import_file(rng, time.time())

        def call():
            store = self.store
            for atom in store.atoms():
                store.forget_observations(atom)
            report = store.import_jsonl(io.BytesIO(data), specs=self.specs)
            for number, reason in report.skipped:
                if len(reason.splitlines()) != 1:
                    raise Defect(f"line {number} is skipped with a reason of {len(reason.splitlines())} lines: {reason!r}")
            if report.imported:
                for atom in store.atoms():
                    if atom in ("pulse", "drift", GAUGE):
                        try:
                            score_is_a_number(verbs.score(self.modules[atom], self.settings, store, record=False))
                        except KiriError as e:
                            raise Defect(f"a reading import let in cannot be scored: {e}") from None
                exported = io.StringIO()
                store.export_jsonl(exported)
                again = store.import_jsonl(io.BytesIO(exported.getvalue().encode("utf-8")), specs=self.specs)
                if again.imported or again.skipped_count:
                    raise Defect(f"its export imported again as {again.imported} new rows and "
                                 f"{again.skipped_count} bad lines, not as duplicates: {again.skipped}")
            return "refused" if report.skipped_count else "accepted"
        return f"kiri import {data!r}", call


# --- config ---------------------------------------------------------------------------

ATOM_NAMES = ["gpu", "disk", "Gauge", "x", "ab", "é", "ß", "ss", "ﬁ", "pulse", "Nerve", "a1", "", " gpu ", "ab" * 40, "U", "H"]
SCHEMA_ENTRIES = ["T=20:100:8", "U=0:100:5", "Q=learn:6", "T=0:1e400:3", "T=5:5:1", "T=0:100:1000000", "Q=learn:²",
                  "Q=learn:0", "Q=learn:1001", "Q=learn:99999999", "T=0:100:-1", "=1:2:3", "TT=nan:1:2", "é=0:1:2",
                  "T=0:100", "T=0:100:5:6", "T=-inf:0:2", "T=1e308:1.7e308:3", "T=0:100:1000", "T=0:100:1001",
                  "T=0:100:٣", "T=0:100:３", "T=0x1:2:3", "Q=learn:6:7", "T=0:100:8 T=0:1:2", "ß=0:1:2", "T=0:1e-320:2"]


def config_value(rng, key):
    from ..config import NUMBERS
    if rng.random() < 0.1:
        return hostile_text(rng)
    if key in NUMBERS:
        return hostile_number(rng) if rng.random() < 0.3 else str(rng.choice((1, 2, 30, 300, 3600, 0.5, 7, 0.1)))
    return rng.choice({
        "engine": ("fast", "value", "torch", "FAST", "numpy"),
        "pulse_source": ("system", "mikrotik", "snmp"),
        "mikrotik_url": ("https://192.168.88.1", "http://[::1", "https://x:99999", "https://u:p@host", "ftp://h"),
        "mikrotik_verify": ("yes", "no", "on", "0", "maybe"),
        "telegram_chat_id": ("4242", "-1001234567890", "@channel", "@", "9" * 30, "-0", "@chan nel"),
        "telegram_token": ("123:ABC", "12 3", "a/b", "123:" + "x" * 500),
        "telegram_api": ("https://api.telegram.org", "http://127.0.0.1:1", "api.telegram.org", "https://[::1"),
        "rhythm_repos": ("/tmp/a:/tmp/b", "~/x,~/y", "::", ","),
    }.get(key, ("box1", "", "/tmp", "~")))


def atom_section(rng):
    name = rng.choice(ATOM_NAMES) if rng.random() < 0.9 else hostile_text(rng)
    lines = [f"[atom:{name}]"]
    fields = rng.sample("TUVQXYZ", rng.choice((1, 2, 3, 3, 5)))
    entries = [rng.choice(SCHEMA_ENTRIES) if rng.random() < 0.3 else
               f"{f}={hostile_number(rng)}:{hostile_number(rng)}:{hostile_number(rng)}" if rng.random() < 0.1 else
               f"{f}=learn:{rng.randint(1, 12)}" if rng.random() < 0.3 else
               f"{f}={rng.randint(-10, 10)}:{rng.randint(11, 1000)}:{rng.randint(1, 12)}" for f in fields]
    if rng.random() < 0.05:
        entries *= 6   # more fields than a block holds
    keys = ["schema", "command"] + [k for k in ("interval", "steps") if rng.random() < 0.5]
    if rng.random() < 0.1:
        keys.remove(rng.choice(keys))
    if rng.random() < 0.05:
        keys.append("nope")
    for key in keys:
        value = {"schema": " ".join(entries), "command": rng.choice(("true",) * 5 + ("sh -c 'x", "/bin/echo {}", "")),
                 "interval": rng.choice(("300", "60", "0.5", "0", "nan", "1e400", "604801", hostile_number(rng))),
                 "steps": rng.choice(("500", "20", "0", "100001", "1e3", hostile_number(rng))),
                 "nope": "1"}[key]
        lines.append(f"{key} = {value if rng.random() < 0.95 else hostile_text(rng)}")
    return lines


def config_text(rng):
    """config.ini text: [kiri] keys with good and hostile values, declared atoms, junk, as bytes."""
    from ..config import KEYS
    lines = ["[kiri]"] if rng.random() < 0.95 else []
    for key in rng.sample(list(KEYS), rng.randint(0, 8)):
        roll = rng.random()
        if roll < 0.88:
            form = "{} = {}" if rng.random() < 0.9 else rng.choice(("{}: {}", "{}={}", "  {} = {}", "{}"))   # "{}": no value
            lines.append(form.format(key, config_value(rng, key)))
        elif roll < 0.91:
            lines.append(f"{hostile_text(rng)} = {hostile_text(rng)}")
        elif roll < 0.93:
            lines.append(rng.choice(("[kiri]", "[other]", "[atom:]", "[", "[kiri", "[ATOM:gpu]", "[atom:gpu")))
        elif roll < 0.96:
            lines.append(rng.choice(("# a comment", "; a comment", "", "    continued", "%(home)s", "=")))
        else:
            lines.append(rng.choice(lines or ["[kiri]"]))   # a key or section given twice
    if rng.random() < 0.4:
        lines += atom_section(rng)
    if rng.random() < 0.1:
        lines += atom_section(rng)
    text = rng.choice(("\n",) * 6 + ("\r\n", "\r")).join(lines).encode("utf-8", "surrogatepass")
    if rng.random() < 0.2:
        text = mutate_bytes(rng, text)
    if rng.random() < 0.05:
        text = b"\xef\xbb\xbf" + text
    if rng.random() < 0.003:
        text += b"# " + b"x" * 1_000_100   # over the size a config may have
    return text


class ConfigEdge(Edge):
    """config.ini → load_settings, then each setting as the loop reads it: every number, the
    flags and paths, Telegram's settings, every atom's language, Nerve's."""
    name = "config"

    def case(self, rng, i):
        text = config_text(rng)
        mode = 0o600 if rng.random() < 0.9 else 0o644
        env = {}
        if rng.random() < 0.1:
            from ..config import KEYS
            key = rng.choice(list(KEYS))
            env["KIRI_" + key.upper()] = argv_text(rng, config_value(rng, key))

        def call():
            from ..config import load_settings
            home = self.workdir / f"h{i}"
            home.mkdir()
            try:
                fd = os.open(str(home / "config.ini"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
                with os.fdopen(fd, "wb") as f:
                    f.write(text)
                use_settings(load_settings(home=home, env=env))
            finally:
                shutil.rmtree(str(home), ignore_errors=True)
        return f"config.ini {text[:2000]!r}" + (f" with {env!r}" if env else ""), call


def use_settings(settings):
    """What the daemon and the commands read of the settings, read."""
    from ..atoms.nerve import schema as nerve
    from ..config import NUMBERS
    from ..notify import telegram
    for key in NUMBERS:
        if key != "spawn_after" or settings.get(key).strip():
            settings.number(key)
    settings.learn_after, settings.fraction("likelihood_alert"), settings.count("likelihood_window")
    settings.flag("mikrotik_verify")
    settings.paths("rhythm_repos")
    settings.host, settings.host_of("pulse")
    atoms = verbs.all_atoms(settings)
    for name, module in atoms.items():
        atom = verbs.load_atom(module, settings)
        module.SPEC.config(atom.language.vocab_size)
    nerve_spec = nerve.spec(list(atoms))
    nerve_spec.config(nerve_spec.language().vocab_size)
    telegram.from_settings(settings)


# --- weights --------------------------------------------------------------------------

PARTS = ("config", "language", "params", "params", "params", "threshold", "trained_on", "step", "format", "top")


def weights_document(rng, good_doc, good_bytes):
    """The bytes of a weights file: the good one mutated as a document or as bytes, or something else."""
    roll = rng.random()
    if roll < 0.6:
        part = rng.choice(PARTS)
        if part == "top":
            return mutated_json_text(rng, {k: v for k, v in good_doc.items() if k != "params"} if rng.random() < 0.5 else
                                     good_doc)
        if part == "params":
            params = dict(good_doc["params"])
            name = rng.choice(sorted(params))
            roll = rng.random()
            if roll < 0.2:   # every value of a matrix extreme, but finite
                factor = rng.choice((1e3, 1e5, 1e30, 1e150, 1e300, -1e300, 1e-300, 0.0))
                params[name] = [[x * factor for x in row] for row in params[name]]
            elif roll < 0.4:   # a few values at float's edge
                matrix = [list(row) for row in params[name]]
                for _ in range(rng.randint(1, 4)):
                    row = rng.choice(matrix)
                    row[rng.randrange(len(row))] = rng.choice((1.7976931348623157e308, -1e308, 1e200, 1e6, 1e6 + 1, 9e15,
                                                               5e-324, 2 ** 70, -(2 ** 53)))
                params[name] = matrix
            else:
                params[name] = mutate_json(rng, params[name])
            doc = dict(good_doc, params=params)
        else:
            doc = dict(good_doc, **{part: mutate_json(rng, good_doc.get(part))})
        return dumps(doc).encode("utf-8", "surrogatepass")
    if roll < 0.9:
        return mutate_bytes(rng, good_bytes)
    return rng.choice((b"", b"{}", b"null", b"[]", b'{"format": "kiri-weights/1"}', good_bytes[:len(good_bytes) // 2],
                       b"\xff" * 100, ("[" * 100_000 + "]" * 100_000).encode()))


class WeightsEdge(Edge):
    """A weights file, and its .prev.json for the fallback: Pulse's (ranges and a clock) mostly,
    else gauge's (a learned field: edges, below- and above-range tokens). `kiri <atom> score`, in
    half the cases `kiri status`, in one in ten `kiri check`."""
    name = "weights"
    OBS = {"pulse": "C=50 M=50 D=40 S=1 L=1 N=1", GAUGE: "T=50 U=5 Q=5"}

    def setup(self):
        self.settings, self.store = open_home(self.fixture.copy(self.workdir / "home"))
        for name in ("drift", GAUGE):   # status reads only the weights under test
            self.settings.weights_path(name).unlink()
        self.modules = {name: verbs.atom_module(name, self.settings) for name in self.OBS}
        self.good = {name: (json.loads(self.fixture.weights[name]), self.fixture.weights[name]) for name in self.OBS}

    def close(self, final=True):
        self.store.close()

    def case(self, rng, i):
        from ..core.weights import previous_path
        atom = "pulse" if rng.random() < 0.7 else GAUGE
        good_doc, good_bytes = self.good[atom]
        data = weights_document(rng, good_doc, good_bytes)
        roll = rng.random()
        prev = None if roll < 0.75 else good_bytes if roll < 0.85 else weights_document(rng, good_doc, good_bytes)
        main_missing = prev is not None and rng.random() < 0.2
        show_status, check = rng.random() < 0.5, rng.random() < 0.1   # each loads the weights again
        path = self.settings.weights_path(atom)
        others = [self.settings.weights_path(a) for a in self.OBS if a != atom]

        def call():
            from .. import check as checks, status
            for p in others + [previous_path(p) for p in others]:
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
            for p, content in ((path, None if main_missing else data), (previous_path(path), prev)):
                if content is None:
                    with contextlib.suppress(FileNotFoundError):
                        p.unlink()
                else:
                    p.write_bytes(content)
            refused = False
            try:
                score_is_a_number(verbs.score(self.modules[atom], self.settings, self.store, obs=self.OBS[atom],
                                              warn=lambda line: None))
            except KiriError:
                refused = True
            if show_status:
                info = status.collect_status(self.settings, self.store)
                status.format_status(info)
                json.dumps(info)
            if check:
                checks.check(self.settings)
            return "refused" if refused else "accepted"
        shown = f"{atom}.json {data[:1500]!r}" + (" (missing)" if main_missing else "") + \
            (f", {atom}.prev.json {prev[:300]!r}" if prev is not None else "")
        return shown, call


# --- loopback servers -----------------------------------------------------------------

class RawServer:
    """A TCP server on 127.0.0.1 that reads each request and answers it with `self.answer`
    (whatever bytes, HTTP or not), then closes the connection."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.answer = b""
        self.closing = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.sock.getsockname()[1]

    def _serve(self):
        while not self.closing:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with conn:
                try:
                    conn.settimeout(0.5)
                    request = b""
                    while b"\r\n\r\n" not in request and len(request) < 65536:
                        chunk = conn.recv(4096)
                        if not chunk:
                            break
                        request += chunk
                    conn.sendall(self.answer)
                    conn.shutdown(socket.SHUT_WR)
                except OSError:
                    pass

    def close(self):
        self.closing = True
        self.thread.join(timeout=2)
        self.sock.close()


STATUS_LINES = [b"HTTP/1.1 200 OK", b"HTTP/1.1 999 X", b"HTTP/1.1 abc", b"HTTP/2 200", b"HTTP/1.1 200", b"ICY 200 OK",
                b"", b"HTTP/1.1 -1 no", b"HTTP/1.1 204 No Content", b"HTTP/1.0 500 Oops", b"HTTP/1.1 401 Unauthorized",
                b"HTTP/1.1 429 Too Many", b"HTTP/1.1 100 Continue", b"HTTP/1.1 2000 OK", b"HTTP/0.9 200 OK"]
HEADER_LINES = [b"Content-Length: -1", b"Content-Length: 99999999999999999999", b"Content-Length: abc",
                b"Content-Length: 5", b"Content-Length: 1000000", b"Transfer-Encoding: chunked", b"Retry-After: nan",
                b"Retry-After: 1e400", b"Content-Type: text/html", b"Content-Encoding: gzip", b"X: " + b"y" * 70000,
                b"no colon here", b": empty", b"Content-Length: 1\r\nContent-Length: 2"]


def raw_answer(rng, body):
    """An HTTP answer carrying `body`, its status line, headers or framing broken."""
    status = rng.choice(STATUS_LINES) if rng.random() < 0.5 else b"HTTP/1.1 200 OK"
    headers = [b"Content-Type: application/json", b"Content-Length: %d" % len(body), b"Connection: close"]
    for _ in range(rng.randint(0, 2)):
        headers.insert(rng.randint(0, len(headers)), rng.choice(HEADER_LINES))
    if rng.random() < 0.3:
        del headers[rng.randrange(len(headers))]
    if b"Transfer-Encoding: chunked" in headers and rng.random() < 0.7:
        body = b"%x\r\n%s\r\n%s" % (len(body) + rng.randint(-3, 3), body, rng.choice((b"0\r\n\r\n", b"", b"zz\r\n")))
    answer = status + b"\r\n" + b"\r\n".join(headers) + b"\r\n\r\n" + body
    if rng.random() < 0.3:
        answer = mutate_bytes(rng, answer)
    return answer if rng.random() < 0.95 else rng.choice((b"", b"\x00" * 10, b"HTTP/1.1", answer[:rng.randint(0, 40)]))


# --- telegram -------------------------------------------------------------------------

def press_update(rng, update_id, alert_ids):
    alert_id = rng.choice(alert_ids + [0, 99999, 2 ** 63 - 1])
    return {"update_id": update_id,
            "callback_query": {"id": "q%d" % update_id, "chat_instance": "-53128",
                               "from": {"id": CHAT, "is_bot": False, "first_name": "Ada"},
                               "data": rng.choice(("fb:%d:approve", "fb:%d:dismiss")) % alert_id,
                               "message": {"message_id": rng.randint(1, 2000), "date": 1795574400,
                                           "chat": {"id": rng.choice((CHAT, CHAT, "@fuzz", 1)), "type": "private"},
                                           "text": "fuzzbox: CPU 97 %"}}}


def api_answer(rng, result):
    """(status, body bytes) of a Bot API answer: mostly 200 with the envelope, mutated or not."""
    if rng.random() < 0.8:
        status, envelope = 200, {"ok": True, "result": result}
    else:
        status = rng.choice((400, 401, 403, 404, 409, 429, 500, 502))
        envelope = {"ok": False, "error_code": status, "description": "Too Many Requests: retry after 5",
                    "parameters": {"retry_after": 5}}
    if rng.random() < 0.6:
        return status, mutated_json_text(rng, envelope)
    return status, dumps(envelope).encode("utf-8")


class TelegramEdge(Edge):
    """The Bot API's answers to sendMessage, getUpdates (button presses: their data, chats,
    ids), answerCallbackQuery and editMessageText, from the loopback fake or a raw server;
    and the settings a bot is made from."""
    name = "telegram"

    def setup(self):
        import urllib.request
        from ..notify.telegram import TelegramBot
        from .fake_telegram import FakeTelegram
        self.fake = FakeTelegram(token=TOKEN, chat_id=CHAT, max_wait=0.1).__enter__()
        self.raw = RawServer()
        self.settings, self.store = open_home(self.fixture.copy(self.workdir / "home"))
        self.alert_ids = list(self.fixture.alerts)
        no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))   # 127.0.0.1 directly, always
        self.bot = TelegramBot(TOKEN, CHAT, api=self.fake.url, timeout=1.0, opener=no_proxy)
        self.raw_bot = TelegramBot(TOKEN, CHAT, api=self.raw.url, timeout=1.0, opener=no_proxy)

    def close(self, final=True):
        self.store.close()
        self.raw.close()
        self.fake.__exit__(None, None, None)

    def case(self, rng, i):
        from ..notify import telegram
        self.fake.forget_scripts()
        roll = rng.random()
        if roll < 0.25:
            status, body = api_answer(rng, {"message_id": rng.randint(1, 10 ** 6), "date": 1795574400,
                                            "chat": {"id": CHAT}, "text": "x"})
            self.fake.fail_next("sendMessage", status=status, raw=body)
            alert_id = rng.choice(self.alert_ids + [None])

            def call():
                message_id = self.bot.send_alert("fuzzbox: CPU 97 %", alert_id)
                if isinstance(message_id, bool) or not isinstance(message_id, int):
                    raise Defect(f"send_alert returned {message_id!r}, not a message id")
            return f"sendMessage answer {status} {body!r}", call
        if roll < 0.75:
            updates = [press_update(rng, 900000 + i * 4 + k, self.alert_ids) for k in range(rng.randint(1, 3))]
            status, body = api_answer(rng, updates)
            self.fake.fail_next("getUpdates", status=status, raw=body)
            shown = f"getUpdates answer {status} {body!r}"
            for method in ("answerCallbackQuery", "editMessageText"):
                if rng.random() < 0.3:
                    status, answer = api_answer(rng, True)
                    self.fake.fail_next(method, count=3, status=status, raw=answer)
                    shown += f", {method} answer {status} {answer!r}"
            offset = rng.choice((None,) * 8 + (-5, "x", 2 ** 70, "9" * 30))

            def call():
                if offset is not None:
                    self.store.set_kv(telegram.OFFSET_KEY, offset)
                for alert_id, verdict, replaced in telegram.poll(self.store, self.bot):
                    if alert_id not in self.alert_ids or verdict not in ("approve", "dismiss"):
                        raise Defect(f"poll answered alert {alert_id!r} {verdict!r}")
            return shown, call
        if roll < 0.9:
            body = json.dumps({"ok": True, "result": [press_update(rng, 5, self.alert_ids)]}).encode()
            self.raw.answer = raw_answer(rng, body)
            send = rng.random() < 0.5

            def call():
                if send:
                    self.raw_bot.send_alert("fuzzbox: CPU 97 %", 1)
                else:
                    self.raw_bot.get_updates()
            return f"raw answer to {'sendMessage' if send else 'getUpdates'}: {self.raw.answer!r}", call
        values = {"telegram_token": rng.choice(("123:ABC", TOKEN)) if rng.random() < 0.5 else hostile_text(rng),
                  "telegram_chat_id": rng.choice(("4242", "-100123", "@chan")) if rng.random() < 0.5 else hostile_text(rng),
                  "telegram_api": rng.choice(("https://api.telegram.org", "")) if rng.random() < 0.5 else hostile_text(rng)}

        def call():
            from ..config import Settings
            telegram.from_settings(Settings(home=self.workdir, values=values))   # made, never called
        return f"telegram settings {values!r}", call


# --- mikrotik -------------------------------------------------------------------------

RESOURCE = {"architecture-name": "arm64", "board-name": "hAP ax^2", "cpu": "ARM64", "cpu-count": "4", "cpu-frequency": "864",
            "cpu-load": "7", "free-hdd-space": "92979200", "free-memory": "705699840", "platform": "MikroTik",
            "total-hdd-space": "134217728", "total-memory": "1073741824", "uptime": "1h12m40s", "version": "7.20.5 (stable)"}
INTERFACES = [{".id": "*2", "name": "ether1", "type": "ether", "running": "true", "disabled": "false"},
              {".id": "*7", "name": "lo1", "type": "bridge", "running": "true", "disabled": "false"}]
USER, PASSWORD = "monitoring", "s3cret"


def router_answer(rng, good):
    """(status, body bytes) for one of RouterOS's two answers."""
    roll = rng.random()
    if roll < 0.85:
        return 200, (mutated_json_text(rng, good) if rng.random() < 0.8 else dumps(good).encode())
    status = rng.choice((400, 401, 404, 500, 503))
    error = {"error": status, "message": "Bad Request", "detail": "no such command"}
    return status, (mutated_json_text(rng, error) if rng.random() < 0.5 else dumps(error).encode())


def router_url(rng, base):
    """The router's address: the loopback one, with a hostile path, query, port, scheme or user."""
    roll = rng.random()
    if roll < 0.6:
        return base
    port = base.rsplit(":", 1)[1]
    suffix = rng.choice(("/", "/rest", "/rest/", "?a=b", "#x", "/%00", "/\u00e9", "/ /", "/" + "a" * 5000, ""))
    if rng.random() < 0.4:
        suffix += hostile_text(rng)
    return rng.choice((base + suffix, "https://127.0.0.1:" + port, "HTTP://127.0.0.1:" + port, "ftp://127.0.0.1:" + port,
                       "http://u:p@127.0.0.1:" + port, "http://127.0.0.1:" + port + "0", "http://127.0.0.1:0",
                       "http://[::1]:" + port, "http:/127.0.0.1:" + port, "http://127.0.0.1:" + port + "\n",
                       "", "127.0.0.1:" + port, "http://[127.0.0.1:" + port))


def loopback_or_refused(url):
    """Whether `url` either names 127.0.0.1 (or ::1) or is refused before any connection."""
    if http_url_problem(url) is not None:
        return True
    try:
        return urllib.parse.urlsplit(url).hostname in ("127.0.0.1", "::1")
    except ValueError:
        return True


class MikrotikEdge(Edge):
    """RouterOS's answers to /rest/system/resource and /rest/interface (JSON mutated, or raw
    HTTP broken) and the router's address and credentials: the MikroTik source's collect."""
    name = "mikrotik"

    def setup(self):
        from .loopback import JsonHandler, QuietServer

        class Router(JsonHandler):
            def do_GET(self):
                route = urllib.parse.urlsplit(self.path).path
                status, body = self.server.script.get(route, (404, b'{"error":404,"message":"Not Found"}'))
                self.answer(status, body)

        self.server = QuietServer(("127.0.0.1", 0), Router)
        self.server.script = {}
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        self.raw = RawServer()
        self.text_file = self.workdir / "ca.txt"
        self.text_file.write_text("not a certificate\n")

    def close(self, final=True):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=2)
        self.raw.close()

    def case(self, rng, i):
        from ..atoms.pulse import mikrotik
        from ..atoms.pulse.schema import SPEC
        raw = rng.random() < 0.2
        resource, interfaces = router_answer(rng, RESOURCE), router_answer(rng, INTERFACES)
        url = router_url(rng, self.raw.url if raw else self.url)
        if not loopback_or_refused(url):
            url = self.url
        user = USER if rng.random() < 0.9 else argv_text(rng, hostile_text(rng))
        password = PASSWORD if rng.random() < 0.9 else argv_text(rng, hostile_text(rng))
        verify = rng.random() < 0.8
        cafile = rng.choice((None,) * 6 + (str(self.text_file), str(self.workdir), "/nonexistent/ca.pem", "a\x00b", ""))
        if cafile and not verify:
            cafile = None
        if raw:
            self.raw.answer = raw_answer(rng, dumps(RESOURCE).encode())
        else:
            self.server.script = {"/rest/system/resource": resource, "/rest/interface": interfaces}

        def call():
            values = mikrotik.collect(url, user, password, cafile=cafile, verify=verify, timeout=1.0)
            problem = misfit(SPEC, values)
            if problem:
                raise Defect(f"the reading {values!r} does not fit Pulse: {problem}")
        shown = f"url {url!r} user {user!r} cafile {cafile!r} verify {verify}: " + \
            (f"raw {self.raw.answer!r}" if raw else f"resource {resource!r}, interface {interfaces!r}")
        return shown, call


# --- flags ----------------------------------------------------------------------------

# The commands run for real in this process (with their flags' values): quick, and they touch
# nothing but the case's home. Every other command is parsed only: its flags' values meet their
# types (that is where a value is refused), and running it would train, collect this machine's
# readings, sleep, start a daemon, install a service or reach a network. `setup --no-service`
# runs with its two steps that do (a reading of each source, a Telegram test) left out.
RUN = {("status",), ("alerts",), ("feedback",), ("export",), ("import",), ("check",), ("forget",), ("task",),
       ("init",), ("daemon", "status"), ("names", "sample"), ("bench", "nab-score"), ("drift", "collect"),
       ("setup",)} | \
      {(atom, "score") for atom in BUILTIN} | {("atom", "score")} | {(atom, "collect") for atom in BUILTIN + ("atom",)}
# Run as `python -m kiri …` too (the sample): they change nothing the next run would see differently.
SAME_TWICE = {("status",), ("alerts",), ("export",), ("check",), ("daemon", "status"), ("names", "sample"),
              ("bench", "nab-score")} | {(atom, "score") for atom in BUILTIN}
SAMPLE_EVERY = 64
# Flags and arguments whose value is a path: chosen from the edge's pools (see FlagsEdge.value).
PATH_FLAGS = {"home", "out", "metrics", "file", "data", "weights", "windows", "results", "telegram_token_file",
              "mikrotik_password_file"}
NAMES_MAX, SYNTHETIC_MAX = 200, 2000   # larger runs are parsed only: they take long, by design


def relative(text):
    """A hostile text as a path inside the current folder (the run's): no leading / or ~, no .., no NUL;
    as a command line delivers it."""
    return as_argv("./" + text.replace("..", "_."))


def commands(parser, path=()):
    """[(command path, [the parser of each level])] for every parser under `parser`."""
    found = [(path, [parser])]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found += [(p, [parser] + chain) for p, chain in commands(child, path + (name,))]
    return found


def command_path(args):
    path = (args.command,) + tuple(getattr(args, k) for k in ("verb", "kind", "daemon_verb", "alerts_verb")
                                   if getattr(args, k, None))
    return path


def runs_here(args):
    """Whether the parsed command is one this edge runs (RUN, within the sizes it runs quickly)."""
    path = command_path(args)
    # The reference engine is slow by design (a score takes seconds), and torch's import alone can take 10 s.
    if path not in RUN or getattr(args, "engine", None) in ("value", "torch"):
        return False
    if path == ("names", "sample"):
        return args.n <= NAMES_MAX
    if path == ("setup",):
        return args.no_service
    if path[-1] == "collect":   # synthetic history, or Drift's counts: nothing of this machine read
        return (args.synthetic is not None and args.synthetic <= SYNTHETIC_MAX) or \
            (path == ("drift", "collect") and args.synthetic is None)
    return True


class FlagsEdge(Edge):
    """Every command's flags and arguments, with good and hostile values: kiri.cli.main(argv),
    in this process (stdout a strict UTF-8 stream, as on a terminal), and one case in
    SAMPLE_EVERY of those safe to run twice as `python -m kiri …` too."""
    name = "flags"
    refusals = ()

    def setup(self):
        from ..cli import build_parser
        self.home = self.fixture.copy(self.workdir / "home")
        self.user = self.workdir / "user"
        self.user.mkdir()
        self.paths()
        self.commands = [c for c in commands(build_parser()) if c[0]]
        self.running = [c for c in self.commands if c[0] in RUN]
        self.saved_env = {k: os.environ.get(k) for k in list(os.environ) if k.startswith("KIRI_")}
        self.saved_env.update(HOME=os.environ.get("HOME"))
        self.saved_cwd = os.getcwd()
        for key in list(os.environ):
            if key.startswith("KIRI_"):
                del os.environ[key]
        os.environ.update(KIRI_HOME=str(self.home), HOME=str(self.user))
        os.chdir(str(self.workdir))   # a relative path a case gives lands here
        install_streams()
        self.saved_stdin, sys.stdin = sys.stdin, io.StringIO("")   # no terminal: setup asks nothing

    def close(self, final=True):
        if final and not self.generation:   # after a hang, kept: the hung call writes on into its own buffer
            remove_streams()
        sys.stdin = self.saved_stdin
        os.chdir(self.saved_cwd)
        for key, value in self.saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    def paths(self):
        w = self.workdir
        (w / "good.jsonl").write_text(json.dumps({"atom": "pulse", "ts": time.time() - 600, "values":
                                                  {"C": 5, "M": 50, "D": 40, "S": 1, "L": 0.5, "N": 1}}) + "\n")
        (w / "text.txt").write_text("hello\nworld\n")
        (w / "binary.bin").write_bytes(bytes(range(256)) * 8)
        (w / "long.txt").write_bytes(b"x" * 200_000)
        (w / "dir").mkdir()
        (w / "weights.json").write_bytes(self.fixture.weights["pulse"])
        (w / "secret").write_text("123:ABC\n")
        os.chmod(str(w / "secret"), 0o600)
        # A name in bytes that are not UTF-8, as Python hands it over (surrogateescape).
        not_utf8 = os.fsdecode(os.fsencode(str(w)) + b"/n\xffm")
        self.read_paths = [str(w / n) for n in ("good.jsonl", "text.txt", "binary.bin", "long.txt", "dir", "missing",
                                               "weights.json", "secret", "text.txt/sub")] + \
            ["/dev/null", "", ".", "rel.jsonl", not_utf8]
        self.write_paths = [str(w / n) for n in ("out.jsonl", "dir", "text.txt/sub", "nodir/out", "secret")] + \
            ["/dev/null", "/dev/full", "", "rel-out", str(self.home / "kiri.db"), str(self.home / "config.ini"), not_utf8]
        self.homes = [str(self.home)] * 6 + [str(w / n) for n in ("fresh", "text.txt", "text.txt/sub")] + \
            ["/dev/null", "", "~", "rel-home", not_utf8]

    def value(self, rng, action):
        """(a good value for `action` mostly, else a hostile one; whether it is a path). A path is one
        of the pools (all in the run's folder, or /dev/null, /dev/full) or a hostile text made
        relative ("./…", in the run's folder): a case never writes anywhere else."""
        dest = action.dest
        path = dest in PATH_FLAGS
        if rng.random() < 0.3:
            text = hostile_number(rng) if rng.random() < 0.4 else hostile_text(rng)
            return (relative(text) if path else text), path
        if dest == "home":
            return rng.choice(self.homes), True
        if dest in ("out", "metrics"):
            return rng.choice(self.write_paths), True
        if path:
            return rng.choice(self.read_paths), True
        return self.word(rng, action), False

    def word(self, rng, action):
        dest = action.dest
        if action.choices:
            return rng.choice(list(action.choices))
        good = {"obs": ("C=95 M=90 D=40 S=1 L=1 N=1", "C9 M9 D4 S1 L1 N1", "H1 W1 C9 M9 D4 S4 L4 N1", "T=50 U=5 Q=5"),
                "atom": ("pulse", "drift", GAUGE, "rhythm", "nope"), "alert_id": ("1", "2", "3", "4"),
                "project": ("kiri", ""), "since": ("2024-05-01", "1700000000", "2024-05-01T14:30Z"),
                "until": ("2030-01-01", "1900000000"), "source": ("import", "synthetic", "linux"),
                "n": ("3", "1", "500"), "temperature": ("0.5", "1", "0.01"), "synthetic": ("30", "100", "5000"),
                "host_name": ("box1",), "mikrotik_url": ("https://192.168.88.1",), "telegram_chat_id": ("4242",),
                "detector": ("kiri",), "files": ("*/*.csv",), "pattern": ("*/*.csv",)}.get(dest)
        if good:
            return rng.choice(good)
        return str(rng.choice((0, 1, 2, 5, 30, 100)))

    def argv(self, rng):
        # Most cases a command that runs here (their values go further than the parser); each of the others too.
        path, chain = rng.choice(self.running if rng.random() < 0.6 else self.commands)
        argv = []
        for level, parser in enumerate(chain):
            if level:
                argv.append((path[level - 1], False))
            words, positionals = [], []   # (word, whether it is a path)
            for action in parser._actions:
                if isinstance(action, (argparse._SubParsersAction, argparse._HelpAction, argparse._VersionAction)):
                    continue
                if not action.option_strings:
                    positionals.append(self.value(rng, action))
                    continue
                if action.dest == "home" and rng.random() < 0.9:
                    words += [("--home", False), (rng.choice(self.homes), True)]
                    continue
                chance = {"no_service": 0.8, "start": 0.05}.get(action.dest, 0.5 if action.required else 0.35)
                if action.help == argparse.SUPPRESS:   # a flag only there to be refused (a secret's value)
                    chance = 0.05
                if rng.random() > chance:
                    continue
                flag = (rng.choice(action.option_strings), False)
                if action.nargs == 0:
                    words.append(flag)
                elif action.nargs == 2:
                    words += [flag, (rng.choice(("pulse", "drift", "nope")), False),
                              (rng.choice(("C=95 M=90 D=40 S=1 L=1 N=1", "", "C9")) if rng.random() < 0.7
                               else hostile_text(rng), False)]
                elif action.nargs == "?":
                    words += [flag] + ([self.value(rng, action)] if rng.random() < 0.5 else [])
                else:
                    words += [flag, self.value(rng, action)]
            if level == len(chain) - 1:
                roll = rng.random()
                if roll < 0.05:
                    words.append((rng.choice(("--nope", "-x", "--", "--home", "-h", "--help", "--version")), False))
                elif roll < 0.1 and words:
                    words.insert(rng.randint(0, len(words)), rng.choice(words))
                elif roll < 0.15:
                    positionals.append((relative(hostile_text(rng)), True))   # it may be taken for a file
            argv += words + positionals if rng.random() < 0.8 else positionals + words
        # Bytes that are not UTF-8 are spliced into words now and then, never into a path: it would
        # name a place outside the run's folder ("/tm\xffp/…"). The pools hold such a name of their own.
        return [word if is_path else argv_text(rng, word) for word, is_path in argv]

    def case(self, rng, i):
        argv = self.argv(rng)
        sampled = i % SAMPLE_EVERY == SAMPLE_EVERY // 2

        def call():
            from ..cli import build_parser
            args, code, out, err = None, None, None, None
            with captured() as (out, err):
                try:
                    args = build_parser().parse_args(argv)
                except SystemExit as e:
                    code = e.code
            if args is not None and runs_here(args):
                with captured() as (out, err):
                    code = in_process(argv)
            stderr = err.getvalue()
            if "Traceback" in stderr:
                raise Defect(f"a traceback on stderr: {stderr[-300:]!r}")
            if code and "error:" in stderr and not stderr.rstrip("\n").splitlines()[-1].lstrip().startswith(("kiri", "usage")):
                raise Defect(f"lines after the error line: {stderr[-300:]!r}")
            if sampled and (args is None or (runs_here(args) and command_path(args) in SAME_TWICE)):
                child = self.child(argv)
                if (child.returncode, child.stderr.strip()) != (code or 0, stderr.strip()):
                    raise Defect(f"python -m kiri exits {child.returncode} with {child.stderr[-300:]!r}; "
                                 f"kiri.cli.main {code or 0} with {stderr[-300:]!r}")
            return "refused" if code else "accepted"
        return "kiri " + " ".join(repr(a) if not a or any(c.isspace() for c in a) else a for a in argv), call

    def child(self, argv):
        env = {k: v for k, v in os.environ.items() if not k.startswith("KIRI_")}
        repo = str(Path(__file__).resolve().parent.parent.parent)
        env.update(KIRI_HOME=str(self.home), HOME=str(self.user), PYTHONIOENCODING="utf-8:strict",
                   PYTHONPATH=repo + os.pathsep + env.get("PYTHONPATH", ""))
        return subprocess.run([sys.executable, "-m", "kiri"] + argv, cwd=str(self.workdir), env=env,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="backslashreplace",
                              timeout=self.timeout)


class ThreadStream:
    """sys.stdout or sys.stderr while the flags edge runs: a thread that has a buffer of its own
    (captured) writes there, any other thread (the report) to the real stream. Per thread, so a
    call that hangs and goes on writing never takes another's output, nor the report's."""

    def __init__(self, real):
        self.real = real
        self.local = threading.local()

    def __getattr__(self, name):
        return getattr(getattr(self.local, "buffer", None) or self.real, name)


def install_streams():
    if not isinstance(sys.stdout, ThreadStream):
        sys.stdout, sys.stderr = ThreadStream(sys.stdout), ThreadStream(sys.stderr)


def remove_streams():
    while isinstance(sys.stdout, ThreadStream):
        sys.stdout = sys.stdout.real
    while isinstance(sys.stderr, ThreadStream):
        sys.stderr = sys.stderr.real


@contextlib.contextmanager
def captured():
    """This thread's stdout and stderr as a terminal's: UTF-8, strict for stdout, backslashreplace
    for stderr (as Python sets them), each its own buffer; read with .getvalue(). Needs
    install_streams() (the flags edge's setup)."""
    out, err = Buffer("strict"), Buffer("backslashreplace")
    sys.stdout.local.buffer, sys.stderr.local.buffer = out, err
    try:
        yield out, err
    finally:
        sys.stdout.local.buffer = sys.stderr.local.buffer = None


class Buffer(io.TextIOWrapper):
    def __init__(self, errors):
        super().__init__(io.BytesIO(), encoding="utf-8", errors=errors, write_through=True)

    def getvalue(self):
        self.flush()
        return self.buffer.getvalue().decode("utf-8", "backslashreplace")


def in_process(argv):
    from unittest import mock
    from .. import cli, setup
    # setup's steps that read this machine's sources and send a Telegram test (to the network) are left out.
    with mock.patch.object(setup, "check_sources", lambda settings, store: []), \
            mock.patch.object(setup, "test_telegram", lambda settings, store, report: None):
        try:
            return cli.main(argv)
        except SystemExit as e:
            return e.code


# --- nab ------------------------------------------------------------------------------

EXTREME_VALUES = ("1e15", "-1e15", "1.0000001e15", "9e15", "1e308", "-1.7976931348623157e308", "1e-300", "5e-324",
                  "-0", "0")
ODD_TIMESTAMPS = ("0001-01-01 00:00:00", "9999-12-31 23:59:59", "2020-02-29 12:00:00", "2021-02-29 12:00:00",
                  "2020-01-01T00:00:00", "2020-01-01 00:00:00+02:00", "2020-01-01 24:00:00", "2020-01-01",
                  "2020-01-01 00:00:00.123456", "1970-01-01 00:00:00")


def nab_file(rng):
    """A NAB data file's bytes: a wave with noise, every 5 minutes (or every minute or hour,
    with gaps, the same time again, going backwards), then now and then a value or a
    timestamp made hostile, a row repeated or given a third field, the header changed, or
    the whole text mutated as bytes."""
    start, step = rng.choice((1577836800, 0, 1e9)), rng.choice((300, 300, 3600, 60, 0, -300))
    rows = []
    for i in range(rng.randint(0, 70)):
        when = start + i * step + (rng.choice((86400 * 3, -600)) if rng.random() < 0.05 else 0)
        rows.append([time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(max(0, when))),
                     "%g" % (50 + 10 * math.sin(i / 40) + rng.gauss(0, 2))])
    for _ in range(rng.choice((0, 0, 1, 3, 30))):
        if rows:
            row = rng.choice(rows)
            roll = rng.random()
            if roll < 0.5:
                row[1] = rng.choice(EXTREME_VALUES) if rng.random() < 0.5 else hostile_number(rng)
            elif roll < 0.75:
                row[0] = rng.choice(ODD_TIMESTAMPS) if rng.random() < 0.6 else hostile_text(rng)
            elif roll < 0.9:
                rows.insert(rng.randrange(len(rows)), list(row))
            else:
                row.append(hostile_text(rng))
    header = "timestamp,value" if rng.random() < 0.95 else \
        rng.choice(("value,timestamp", "Timestamp, Value", "", "timestamp"))
    text = "\n".join([header] + [",".join(row) for row in rows]) + rng.choice(("\n", "", "\r\n", "\n\n"))
    data = text.encode("utf-8", "surrogatepass")
    return mutate_bytes(rng, data) if rng.random() < 0.15 else data


class NabEdge(Edge):
    """A NAB data file → nab_io.read_series; what it let in goes row by row through the
    streaming detector `bench nab` runs (the same code, its training cut short so that a case
    takes hundredths of a second: a probation of 20 rows, 3 steps, then 1 every 10 rows),
    whose every score must be a number in [0, 1]."""
    name = "nab"

    def case(self, rng, i):
        from ..stream import StreamDetector
        from . import nab, nab_io
        data = nab_file(rng)

        def call():
            path = self.workdir / f"f{i}.csv"
            path.write_bytes(data)
            try:
                timestamps, values = nab_io.read_series(path)
            finally:
                path.unlink()
            detector = StreamDetector(probation=20, train_steps=3, online_every=10, online_steps=1, seed=i)
            for stamp, value in zip(timestamps, values):
                score = detector.update(nab.seconds_of(stamp), value)
                if not (isinstance(score, float) and 0.0 <= score <= 1.0):
                    raise Defect(f"score {score!r} for the row {stamp},{value!r} is not a number in [0, 1]")
            return "accepted"
        return f"nab file {data[:2000]!r}", call


EDGES = [ObsEdge, ImportEdge, ConfigEdge, WeightsEdge, TelegramEdge, MikrotikEdge, FlagsEdge, NabEdge]
assert tuple(e.name for e in EDGES) == EDGE_NAMES
