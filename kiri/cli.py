"""The `kiri` command line: parses flags and delegates to library calls; nothing else.

A mistake a user can make (bad flag, missing file, unusable weights) prints one line
on stderr and exits non-zero, and so does trouble in the user's environment: a file that
cannot be read or written, a full disk, a database SQLite cannot use (main); anything
else is a bug and keeps its traceback.
"""

import argparse
import contextlib
import json
import os
import sqlite3
import sys
import time

from . import __version__
from .core.engines import ENGINES
from .core.sample import DEFAULT_TEMPERATURE
from .core.train import Progress
from .atoms import BUILTIN
from .atoms.custom import STEPS_MAX
from .atoms.drift.schema import EVENTS as DRIFT_EVENTS
from .bench import FUZZ_CASES_MAX, FUZZ_EDGES
from .errors import KiriError
from .ground import atomic_file, printable

EXIT_USER_ERROR = 1
EXIT_BAD_USAGE = 2
EXIT_NOT_RUNNING = 3   # `kiri daemon status`: stopped, stale or never run (as `systemctl is-active`)
EXIT_CYCLE_ERRORS = 4  # `kiri daemon --once`: the cycle ran, and something in it failed


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line, not a usage dump plus a line."""

    def error(self, message):
        self.exit(EXIT_BAD_USAGE, f"{self.prog}: error: {printable(message)}\n")


def positive_int(text):
    return _number(text, int, lambda v: v >= 1, "an integer of at least 1")


SQLITE_INT_MAX = 2 ** 63 - 1   # the largest integer SQLite keeps: an id or a LIMIT beyond it is no number to it


def bounded_int(most):
    """An integer from 1 to `most`: an id or a LIMIT SQLite can keep (SQLITE_INT_MAX), or a count
    whose work (or memory) grows with it, where no use needs more and a typo of a few digits
    would run out of memory instead of being refused."""
    return lambda text: _number(text, int, lambda v: 1 <= v <= most, f"an integer from 1 to {most}")


def task_count(text):
    """Drift's counts of one period: any number above its top bucket (10) reads the same, and one
    beyond a float (a 400-digit typo) is no reading the store keeps."""
    return _number(text, int, lambda v: 0 <= v <= 1_000_000, "an integer from 0 to 1000000")


def atom_name(text):
    """An atom's name as the store keeps one (a name of bytes that are not UTF-8 cannot be one)."""
    from .store import ATOM_NAME
    if not ATOM_NAME.match(text):
        raise argparse.ArgumentTypeError(f"expected an atom's name (letters, digits and _), got {text!r}")
    return text


def wait_seconds(text):
    return _number(text, float, lambda v: 1 <= v <= 600, "a number of seconds from 1 to 600")


def nonnegative_int(text):
    return _number(text, int, lambda v: v >= 0, "an integer of at least 0")


def positive_float(text):
    return _number(text, float, lambda v: v > 0 and v != float("inf"), "a number greater than 0")


def bench_steps(text):
    return _number(text, int, lambda v: 1 <= v <= 1000, "an integer from 1 to 1000")


def reading_counts(text):
    """'10000,100000' -> [10000, 100000]: `bench train`'s sizes, each 20..5,000,000 (at least
    the readings training needs, at most what a temporary home can hold in reasonable time)."""
    return [_number(part.strip(), int, lambda v: 20 <= v <= 5_000_000, "counts from 20 to 5000000, e.g. 10000,100000")
            for part in text.split(",")]


def fuzz_cases(text):
    return _number(text, int, lambda v: 1 <= v <= FUZZ_CASES_MAX, f"a whole number of cases from 1 to {FUZZ_CASES_MAX}")


def fuzz_timeout(text):
    return _number(text, float, lambda v: 0.1 <= v <= 600, "a number of seconds from 0.1 to 600")


def month_days(text):
    return _number(text, int, lambda v: 1 <= v <= 60, "a whole number of days from 1 to 60")


def resample_factor(text):
    """`bench nab-resample --every` and `--up`: 1 would be a copy, and beyond 100 a 4,000-row file
    is 40 rows, or 400,000."""
    return _number(text, int, lambda v: 2 <= v <= 100, "an integer from 2 to 100")


def _number(text, kind, ok, wanted):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}")
    return value


def add_training_flags(p, steps, seed=42):
    p.add_argument("--steps", type=bounded_int(STEPS_MAX), default=steps,
                   help="training steps, 1..%d (default %s)" % (STEPS_MAX, steps or "the atom's: 2000 for the built-in ones"))
    p.add_argument("--seed", type=nonnegative_int, default=seed, help=f"random seed (default {seed})")
    p.add_argument("--batch", type=bounded_int(10_000), default=1,
                   help="sequences per step, gradients averaged, 1..10000 (default 1)")
    p.add_argument("--metrics", metavar="FILE", help="write one JSON line per step (step, loss, lr, seconds)")
    add_engine_flag(p)


def add_engine_flag(p):
    p.add_argument("--engine", choices=ENGINES,
                   help="fast (default), value (scalar autograd reference) or torch (optional)")


def required_subcommands(parser, dest, metavar):
    """A level of subcommands one of which must be given (`kiri pulse` alone is a usage error)."""
    sub = parser.add_subparsers(dest=dest, metavar=metavar, parser_class=Parser)
    sub.required = True
    return sub


def add_home_and_run(p, run, **defaults):
    """The end of a command that works in a KIRI home: --home (listed last), and what runs it."""
    p.add_argument("--home", metavar="DIR", help="KIRI home directory (default $KIRI_HOME or ~/.kiri)")
    p.set_defaults(run=run, **defaults)


def add_atom_verbs(group, atom):
    """collect, train, score: the same for every atom but for a few collect flags.
    `atom` None: the name comes from the command line (a declared atom)."""
    atom_default = {} if atom is None else {"atom": atom}
    verbs = required_subcommands(group, "verb", "VERB")

    p = verbs.add_parser("collect", help="take readings and store them (one, or every --interval for --duration)")
    if atom == "drift":
        p.add_argument("--added", type=task_count, help="tasks added in this period (0..1000000)")
        p.add_argument("--completed", type=task_count, help="tasks completed in this period (0..1000000)")
        p.add_argument("--switched", type=task_count, help="project switches in this period (0..1000000)")
    else:
        p.add_argument("--interval", type=positive_float, help="seconds between readings")
        p.add_argument("--duration", type=positive_float, help="seconds to keep collecting")
    p.add_argument("--synthetic", "--dry-run", dest="synthetic", type=bounded_int(1_000_000), metavar="N",
                   help="instead, write N synthetic observations with daily/weekly patterns, ending now (1..1000000)")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="seed of the synthetic history (default 0)")
    add_home_and_run(p, run_collect, **atom_default)

    p = verbs.add_parser("train", help="train on the stored history, calibrate the threshold, save weights")
    add_training_flags(p, steps=None)
    p.add_argument("--warm-start", action="store_true",
                   help="also learn from the stored synthetic history (collect --synthetic N); real readings replace it")
    p.add_argument("--days", type=positive_float, help="only the last N days of history")
    add_home_and_run(p, run_train, **atom_default)

    p = verbs.add_parser("score", help="score an observation (or the latest stored one) and explain it")
    p.add_argument("--obs", metavar="TEXT", help="values ('C=95 M=90 …') or tokens ('C9 M9 …'); default: the latest stored")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_engine_flag(p)
    add_home_and_run(p, run_score, **atom_default)


def add_unit_kind(q, print_help):
    """--launchd | --systemd | --cron (one is required), and --print."""
    kind = q.add_mutually_exclusive_group(required=True)
    for name in ("launchd", "systemd", "cron"):
        kind.add_argument(f"--{name}", dest="kind", action="store_const", const=name)
    q.add_argument("--print", action="store_true", help=print_help)


def add_loop_commands(commands):
    """daemon, status, alerts, feedback, nerve, init: the feedback loop's commands."""
    p = commands.add_parser("daemon", help="run the monitor: collect, score, decide, act, learn (install: as a service)")
    p.add_argument("--once", action="store_true", help="run one full cycle and exit (for cron and tests)")
    p.add_argument("--inject", nargs=2, metavar=("ATOM", "OBS"), action="append",
                   help="with --once: use this reading instead of collecting one, e.g. pulse \"C=95 M=90 …\"")
    p.add_argument("--serve", nargs="?", const="", metavar="HOST:PORT",
                   help="while it runs, also serve the dashboard and /metrics (default web_bind), as `kiri serve`")
    add_home_and_run(p, run_daemon)
    sub = p.add_subparsers(dest="daemon_verb", metavar="{status,stop,install,uninstall}", parser_class=Parser)
    q = sub.add_parser("status", help="running, stopped, or stale (killed?); exit 0 only when running")
    q.add_argument("--json", action="store_true", help="print one JSON object")
    add_home_and_run(q, run_daemon_status)
    q = sub.add_parser("stop", help="SIGTERM to the daemon holding this home, then wait until it has stopped")
    q.add_argument("--wait", type=wait_seconds, default=30.0, metavar="SECONDS",
                   help="how long to wait for it to stop, 1 to 600 (default 30)")
    add_home_and_run(q, run_daemon_stop)
    q = sub.add_parser("install", help="write a launchd agent, a systemd user unit, or print a cron line")
    add_unit_kind(q, "show the file instead of writing it")
    add_home_and_run(q, run_daemon_install)
    q = sub.add_parser("uninstall", help="remove what install wrote and print what stops the service")
    add_unit_kind(q, "check and show what would be removed; remove nothing")
    q.set_defaults(run=run_daemon_uninstall)

    p = commands.add_parser("status", help="each atom (trained? when? threshold), the last cycle, pending alerts")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_home_and_run(p, run_status)

    p = commands.add_parser("alerts", help="list alerts with ids, state and feedback; `alerts test` sends a test alert")
    p.add_argument("--json", action="store_true", help="print one JSON array")
    p.add_argument("--limit", type=bounded_int(SQLITE_INT_MAX), default=50, help="how many, newest first (default 50)")
    add_home_and_run(p, run_alerts)
    sub = p.add_subparsers(dest="alerts_verb", metavar="test", parser_class=Parser)
    q = sub.add_parser("test", help="send a test alert with buttons through every configured sink")
    add_home_and_run(q, run_alerts_test)

    p = commands.add_parser("feedback", help="answer an alert: approve (it mattered) or dismiss (it did not)")
    p.add_argument("alert_id", type=bounded_int(SQLITE_INT_MAX), metavar="ALERT-ID")
    p.add_argument("verdict", choices=("approve", "dismiss"))
    add_home_and_run(p, run_feedback)

    p = commands.add_parser("nerve", help="the meta-atom: train it on the stored decisions and answers")
    verbs = required_subcommands(p, "verb", "VERB")
    q = verbs.add_parser("train", help="train Nerve on every stored decision (answers override the rule)")
    add_engine_flag(q)
    add_home_and_run(q, run_nerve_train)

    p = commands.add_parser("init", help="create KIRI_HOME with a commented config.ini (mode 0600)")
    add_home_and_run(p, run_init)

    p = commands.add_parser("setup", help="set this machine up: config, a check of each source, Telegram, the service")
    p.add_argument("--host-name", metavar="NAME", help="this machine's name in alerts (default: its short hostname)")
    p.add_argument("--pulse-source", choices=("system", "mikrotik", "node_exporter"),
                   help="Pulse reads this machine, a MikroTik router or a node_exporter")
    p.add_argument("--mikrotik-url", metavar="URL", help="the router's address, e.g. https://192.168.88.1")
    p.add_argument("--mikrotik-user", metavar="USER", help="a RouterOS user (a read-only one is enough)")
    p.add_argument("--mikrotik-password-file", metavar="FILE", help="a file (chmod 600) holding its password")
    p.add_argument("--node-exporter-url", metavar="URL",
                   help="a node_exporter's metrics address, e.g. http://nas.local:9100/metrics")
    p.add_argument("--telegram-token-file", metavar="FILE", help="a file (chmod 600) holding the bot's token")
    p.add_argument("--telegram-chat-id", metavar="ID", help="the chat alerts go to")
    p.add_argument("--telegram-token", "--mikrotik-password", nargs="?", action=RefuseSecret, help=argparse.SUPPRESS)
    service = p.add_mutually_exclusive_group()
    service.add_argument("--no-service", action="store_true", help="install no service (run kiri daemon yourself)")
    service.add_argument("--start", action="store_true", help="start the service now (systemctl / launchctl)")
    p.add_argument("--no-verify", action="store_true", help="with --start: do not wait for the first reading")
    p.add_argument("--wait", type=wait_seconds, default=60.0, metavar="SECONDS",
                   help="how long to wait for the service's first reading, 1 to 600 (default 60)")
    add_home_and_run(p, run_setup)


class RefuseSecret(argparse.Action):
    """A secret given on the command line, where `ps` and the shell's history show it: a usage error."""

    def __call__(self, parser, namespace, values, option_string=None):
        what, flag = ("token", "--telegram-token-file") if "telegram" in option_string else \
            ("password", "--mikrotik-password-file")
        parser.error(f"a {what} on the command line is seen by every user (ps) and kept in your shell's "
                     f"history; write it to a file, chmod 600 it, and give {flag} FILE")


def build_parser():
    parser = Parser(prog="kiri", description="KIRI: tiny GPTs that learn what is normal for this machine.")
    parser.add_argument("--version", action="version", version=f"kiri {__version__}")
    commands = required_subcommands(parser, "command", "COMMAND")

    names = commands.add_parser("names", help="the microgpt names demo: train, sample")
    names_verbs = required_subcommands(names, "verb", "VERB")
    p = names_verbs.add_parser("train", help="train the 4,192-parameter names model")
    add_training_flags(p, steps=1000)
    p.add_argument("--data", metavar="FILE", help="names file, one per line (default: the shipped data/names.txt)")
    p.add_argument("--out", metavar="FILE", help="weights file to write (default KIRI_HOME/weights/names.json)")
    p.set_defaults(run=run_names_train)
    p = names_verbs.add_parser("sample", help="print generated names from saved weights")
    p.add_argument("-n", type=bounded_int(100_000), default=20, help="how many names, 1..100000 (default 20)")
    p.add_argument("--temperature", type=positive_float, default=DEFAULT_TEMPERATURE,
                   help=f"sampling temperature > 0 (default {DEFAULT_TEMPERATURE})")
    p.add_argument("--seed", type=nonnegative_int, default=None, help="random seed (default: random)")
    p.add_argument("--weights", metavar="FILE",
                   help="weights file (default KIRI_HOME/weights/names.json if trained, else the shipped one)")
    add_engine_flag(p)
    p.set_defaults(run=run_names_sample)

    # `kiri <atom> VERB` for each built-in atom, `kiri atom NAME VERB` for one declared in config.ini.
    for atom in BUILTIN:
        group = commands.add_parser(atom, help=f"the {atom} atom: collect, train, score")
        add_atom_verbs(group, atom)
    group = commands.add_parser("atom", help="your own atom, declared in config.ini: collect, train, score")
    group.add_argument("atom", metavar="NAME", help="the name in its [atom:NAME] section")
    add_atom_verbs(group, None)

    p = commands.add_parser("task", help="log one task event for Drift: add, done or switch")
    p.add_argument("kind", choices=tuple(DRIFT_EVENTS), help="a task added, completed, or a project switch")
    p.add_argument("project", nargs="?", default="", help="project name (optional)")
    add_home_and_run(p, run_task)

    p = commands.add_parser("export", help="write stored observations as JSON lines")
    p.add_argument("--atom", type=atom_name, help="only this atom's observations")
    p.add_argument("--format", choices=("jsonl",), default="jsonl", help="output format (jsonl)")
    p.add_argument("--out", metavar="FILE", help="write here instead of standard output")
    add_home_and_run(p, run_export)

    p = commands.add_parser("import", help="read observations from a JSON-lines file (bad lines are reported and skipped)")
    p.add_argument("file", metavar="FILE.jsonl")
    add_home_and_run(p, run_import)
    add_store_commands(commands)

    add_loop_commands(commands)

    p = commands.add_parser("serve", help="the web dashboard: each atom's surprise over time, alerts to answer, /metrics")
    p.add_argument("--bind", metavar="HOST:PORT", help="where to listen (default web_bind, 127.0.0.1:9788); "
                   "any address but loopback needs web_token")
    p.add_argument("--read-only", action="store_true", help="show everything, take no answers (default web_read_only)")
    p.add_argument("--screenshot", metavar="FILE.png", help="save a picture of the overview (headless Chromium) and exit")
    add_home_and_run(p, run_serve)

    p = commands.add_parser("demo", help="the monitor end to end: collect, synthetic history, train Pulse, score, explain")
    p.add_argument("--seconds", type=positive_int, default=20, help="seconds of real readings (default 20)")
    p.add_argument("--steps", type=bounded_int(STEPS_MAX), default=400, help=f"training steps, 1..{STEPS_MAX} (default 400)")
    p.add_argument("--home", metavar="DIR", help="a new or empty folder for the demo (default: a new temporary folder)")
    p.set_defaults(run=run_demo)

    bench = commands.add_parser("bench", help="benchmarks: speed, train, month, nab, nab-resample, nab-score, fuzz, "
                                "fleet")
    bench_kinds = required_subcommands(bench, "kind", "BENCH")
    p = bench_kinds.add_parser("speed", help="reference vs fast engine: training step, scoring, memory")
    p.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    p.add_argument("--ref-steps", type=positive_int, default=3, help="reference-engine training steps (default 3)")
    p.add_argument("--fast-steps", type=positive_int, default=50, help="fast-engine training steps (default 50)")
    p.set_defaults(run=run_bench_speed)
    p = bench_kinds.add_parser("train", help="time and memory of training Pulse on 10k / 100k / 500k stored readings")
    p.add_argument("--sizes", type=reading_counts, default="10000,100000,500000",
                   help="stored readings per run, comma-separated, each 20..5000000 (default 10000,100000,500000)")
    p.add_argument("--steps", type=bench_steps, default=5, help="training steps per run, 1..1000 (default 5)")
    p.set_defaults(run=run_bench_train)
    p = bench_kinds.add_parser("month", help="the real daemon through a simulated month: incidents, faults, answers")
    p.add_argument("--days", type=month_days, default=30, help="simulated days, 1..60 (default 30)")
    p.add_argument("--seed", type=nonnegative_int, default=1, help="seed of the simulated machine (default 1)")
    p.add_argument("--kill", action="store_true", help="the daemon in a child process, SIGKILLed at random moments "
                   "(seeded) and restarted on the same home")
    p.set_defaults(run=run_bench_month)
    p = bench_kinds.add_parser("nab", help="run KIRI's streaming detector over a NAB corpus, write NAB results")
    p.add_argument("--data", required=True, metavar="DIR", help="NAB root: CSVs under DIR/data/<category>/")
    p.add_argument("--out", required=True, metavar="RESULTS", help="results root (RESULTS/kiri/<category>/…)")
    p.add_argument("--files", metavar="GLOB", help='only these, e.g. "realAWSCloudwatch/*.csv"')
    p.add_argument("--jobs", type=bounded_int(256), default=1, help="files in parallel processes, 1..256 (default 1)")
    p.add_argument("--windows", metavar="FILE", help="windows file, used only to fill the label column "
                   "(default: DIR/dev_windows.json or DIR/labels/combined_windows.json if present)")
    p.set_defaults(run=run_bench_nab)
    p = bench_kinds.add_parser("nab-resample", help="a copy of a NAB corpus at another rate: each N rows become one, "
                               "their mean (--every), or each row N, interpolated (--up)")
    p.add_argument("--data", required=True, metavar="DIR", help="NAB root: CSVs under DIR/data/<category>/")
    rate = p.add_mutually_exclusive_group(required=True)
    rate.add_argument("--every", type=resample_factor, metavar="N",
                      help="1/N of the rate, 2..100: each N rows become one, the first timestamp and the mean value")
    rate.add_argument("--up", type=resample_factor, metavar="N",
                      help="N times the rate, 2..100: N - 1 rows between each two, on the line between them in time "
                      "and value")
    p.add_argument("--out", required=True, metavar="OUT", help="the new corpus's root (OUT/data/<category>/…), "
                   "with the windows files copied")
    p.add_argument("--files", metavar="GLOB", help='only these, e.g. "realAWSCloudwatch/*.csv"')
    p.set_defaults(run=run_bench_nab_resample)
    p = bench_kinds.add_parser("nab-score", help="score NAB results with NAB's rules: three profiles, optimised threshold")
    p.add_argument("--data", metavar="DIR", required=True, help="NAB corpus directory (holds data/<category>/<file>.csv)")
    p.add_argument("--windows", metavar="FILE", help="anomaly windows JSON file "
                   "(default: DIR/dev_windows.json or DIR/labels/combined_windows.json, as in `bench nab`)")
    p.add_argument("--results", metavar="DIR", required=True, help="results directory (holds <detector>/<category>/…)")
    p.add_argument("--detector", default="kiri", help="detector name, letters and digits (default kiri)")
    # --files, as in `bench nab`; --pattern is its old name, still read.
    p.add_argument("--files", "--pattern", dest="files", metavar="GLOB",
                   help='only data files whose <category>/<file>.csv matches, e.g. "realAWSCloudwatch/*.csv"')
    p.set_defaults(run=run_bench_nab_score)
    p = bench_kinds.add_parser("fuzz", help="seeded hostile inputs into every edge: refusals, tracebacks, hangs, memory")
    p.add_argument("--cases", type=fuzz_cases, default=2400,
                   help="cases in all, shared evenly by the edges run, 1..10000000 (default 2400)")
    p.add_argument("--seed", type=nonnegative_int, default=1, help="seed of the generators (default 1)")
    p.add_argument("--edge", action="append", choices=FUZZ_EDGES,
                   help="only this edge (repeat for more; default: every edge)")
    p.add_argument("--timeout", type=fuzz_timeout, default=10.0,
                   help="seconds a case may take before it counts as a hang, 0.1..600 (default 10)")
    p.set_defaults(run=run_bench_fuzz)
    p = bench_kinds.add_parser("fleet", help="one KIRI watching many hosts through fake node_exporters: CPU, memory, "
                               "a new host joining")
    p.add_argument("--hosts", type=bounded_int(1000), default=100, help="watched hosts, 1..1000 (default 100)")
    p.add_argument("--cycles", type=bounded_int(1000), default=10, help="steady cycles measured, 1..1000 (default 10)")
    p.add_argument("--steps", type=bounded_int(STEPS_MAX), default=300,
                   help=f"training steps of the fleet's model and the new host's, 1..{STEPS_MAX} (default 300)")
    p.add_argument("--seed", type=nonnegative_int, default=1, help="seed of the fake machines (default 1)")
    p.set_defaults(run=run_bench_fleet)
    return parser


def metrics_file(settings, path):
    """The --metrics file to write, atomically (it appears whole when training ends), or (when
    not asked for) a context that gives None."""
    if not path:
        return contextlib.nullcontext()
    return atomic_file(settings.output_path(path, "--metrics"), text=True)


def settings_for(args):
    from .config import load_settings
    return load_settings(home=getattr(args, "home", None), engine=getattr(args, "engine", None))


def run_names_train(args):
    from . import names
    settings = settings_for(args)
    default = names.trained_weights(settings.home)
    out = settings.output_path(args.out, "--out", allowed=default) if args.out else default
    with metrics_file(settings, args.metrics) as metrics:
        names.train_names(out, steps=args.steps, seed=args.seed,
                          data=args.data, engine=settings.engine, batch=args.batch,
                          progress=Progress(label="names"), metrics=metrics)


def run_names_sample(args):
    from . import names
    settings = settings_for(args)
    weights = args.weights or names.weights_to_sample(settings.home)
    for name in names.sample_names(weights, n=args.n, temperature=args.temperature, seed=args.seed,
                                   engine=settings.engine):
        print(name)


@contextlib.contextmanager
def opened_store(settings):
    """The store of settings.home; an error of the database while it is used (read-only, full
    disk, damaged) becomes one line naming kiri.db."""
    from .store import StoreError, open_store
    try:
        store = open_store(settings.home)
    except StoreError as e:
        raise KiriError(str(e)) from None
    with store:
        try:
            yield store
        except sqlite3.DatabaseError as e:
            if not from_environment(e):
                raise
            raise KiriError(f"{store.path}: {e}") from None


def from_environment(error):
    """Whether an sqlite3 error comes from where the database lives (a read-only file or disk,
    a full disk, a damaged file: OperationalError, DatabaseError) rather than from KIRI's own
    use of it (a broken constraint, a misused API: its other subclasses), which is a bug."""
    return type(error) in (sqlite3.OperationalError, sqlite3.DatabaseError)


def run_collect(args):
    from .atoms import verbs
    settings = settings_for(args)
    module = verbs.atom_module(args.atom, settings)
    with opened_store(settings) as store:
        if args.synthetic:
            n = verbs.add_synthetic(module, store, args.synthetic, seed=args.seed)
            print(f"{args.atom}: wrote {n} synthetic observations (marked synthetic)")
        elif args.atom == "drift" and any(v is not None for v in (args.added, args.completed, args.switched)):
            values = {"A": args.added or 0, "C": args.completed or 0, "S": args.switched or 0}
            store.add_observation("drift", values, source="cli")
            print(f"drift: logged {verbs.describe_values(module.SPEC, values)}")
        else:
            verbs.collect(module, settings, store, interval=getattr(args, "interval", None),
                          duration=getattr(args, "duration", None), report=print_flush)


def print_flush(line):
    print(line, flush=True)


def run_train(args):
    from .atoms import verbs
    settings = settings_for(args)
    module = verbs.atom_module(args.atom, settings)
    with opened_store(settings) as store, metrics_file(settings, args.metrics) as metrics:
        report = verbs.train(module, settings, store, steps=args.steps, seed=args.seed, batch=args.batch,
                             warm_start=args.warm_start, days=args.days, progress=Progress(label=args.atom),
                             metrics=metrics)
    print(f"{args.atom}: trained {report.steps} steps on {report.sequences} sequences "
          f"({report.real} real, {report.synthetic} synthetic observations) in {report.seconds:.1f}s; "
          f"loss {report.first_loss:.3f} -> {report.last_loss:.3f}")
    print(f"{args.atom}: threshold {report.threshold:.3f} ({report.threshold_reason()}); "
          f"saved {settings.weights_path(args.atom)}")


def run_score(args):
    from .atoms import verbs
    settings = settings_for(args)
    module = verbs.atom_module(args.atom, settings)
    with opened_store(settings) as store:
        result = verbs.score(module, settings, store, obs=args.obs, warn=warn)
    print(json.dumps(result.to_json()) if args.json else result.explain())


def warn(line):
    print(f"kiri: warning: {line}", file=sys.stderr)


def run_task(args):
    from .atoms.drift import schema as drift
    with opened_store(settings_for(args)) as store:
        try:
            drift.log_event(store, args.kind, args.project)
        except ValueError as e:
            raise KiriError(f"task: {e}") from None
    print(f"drift: logged task {args.kind}" + (f" ({args.project})" if args.project else ""))


def run_export(args):
    from .atoms import verbs
    settings = settings_for(args)
    hosts = {name: settings.host_of(name) for name in verbs.all_atoms(settings)}
    out = args.out and settings.output_path(args.out, "--out")
    with opened_store(settings) as store:
        if out:
            # Atomic: an export stopped half-way (a kill, a full disk) leaves no half file.
            with atomic_file(out, text=True) as f:
                n = store.export_jsonl(f, atom=args.atom, hosts=hosts)
            print(f"exported {n} observations to {out}", file=sys.stderr)
        else:
            store.export_jsonl(sys.stdout, atom=args.atom, hosts=hosts)


def run_import(args):
    from .check import specs_of
    settings = settings_for(args)
    try:
        f = open(args.file, "rb")   # bytes: a line that is not UTF-8 is one bad line, not a failed import
    except OSError as e:
        raise KiriError(f"cannot read {args.file}: {e.strerror}") from None
    with f, opened_store(settings) as store:
        report = store.import_jsonl(f, specs=specs_of(settings))
    for line, reason in report.skipped:
        print(f"{args.file}:{line}: skipped: {reason}", file=sys.stderr)
    if report.skipped_count > len(report.skipped):
        print(f"{args.file}: … and {report.skipped_count - len(report.skipped)} more bad lines skipped", file=sys.stderr)
    print(f"imported {report.imported} observations, skipped {report.skipped_count} bad lines, "
          f"{report.duplicates} already stored")
    if report.skipped_count:
        return EXIT_USER_ERROR


def add_store_commands(commands):
    """check, forget: is what KIRI keeps sound, and removing readings (kiri/check.py)."""
    p = commands.add_parser("check", help="verify the database and the weights: one line per problem, with its fix")
    add_home_and_run(p, run_check)

    p = commands.add_parser("forget", help="remove an atom's stored readings (a bad import, an old schema's history)")
    p.add_argument("atom", metavar="ATOM", help="the atom whose readings go (also one no longer declared)")
    p.add_argument("--since", type=moment, metavar="WHEN",
                   help="only readings at or after WHEN: seconds since 1970, or local time 2024-05-01[T14:30]")
    p.add_argument("--until", type=moment, metavar="WHEN", help="only readings before WHEN")
    p.add_argument("--source", metavar="NAME", help="only readings of this source: import, synthetic, linux, command, …")
    p.add_argument("--bad", action="store_true",
                   help="only the readings `kiri check` reports: not fitting the schema, from the future")
    p.add_argument("--all", dest="everything", action="store_true", help="every reading of ATOM, without a filter")
    p.add_argument("--dry-run", action="store_true", help="count what would go; remove nothing")
    add_home_and_run(p, run_forget)


def moment(text):
    """A time for --since / --until: seconds since 1970, or ISO 8601 (local time unless it has a zone)."""
    import datetime
    import math
    try:
        value = float(text)
    except ValueError:
        try:
            value = datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
        except (ValueError, OverflowError, OSError):
            value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"expected seconds since 1970 or a time like 2024-05-01 or "
                                         f"2024-05-01T14:30, got {text!r}")
    return value


def run_check(args):
    from . import check
    report = check.check(settings_for(args))
    for problem in report.problems:
        print(problem)
    if report.problems:
        return EXIT_USER_ERROR
    print("ok: " + "; ".join(report.checked))


def run_forget(args):
    from . import check
    settings = settings_for(args)
    with opened_store(settings) as store:
        n = check.forget(store, check.specs_of(settings), args.atom, since=args.since, until=args.until,
                         source=args.source, bad=args.bad, everything=args.everything, dry_run=args.dry_run)
    readings = f"{check.readings(n)} of {args.atom} (with their scores)"
    print(f"would forget {readings}; run it again without --dry-run to forget them" if args.dry_run
          else f"forgot {readings}")


def run_daemon(args):
    from . import daemon, lock, notify
    from .atoms import verbs
    settings = settings_for(args).check()
    if args.inject and not args.once:
        raise KiriError("--inject goes with --once")
    if args.serve is not None and args.once:
        raise KiriError("--serve goes with a running daemon, not --once (or run `kiri serve` beside it)")
    mode = "once" if args.once else "forever"
    # Taken before anything is stored, held to the end: two daemons on one home would
    # store every reading twice and send every alert twice.
    with lock.DaemonLock(settings.home, mode), opened_store(settings) as store:
        inject = {}
        for atom, text in args.inject or []:
            if atom in inject:
                raise KiriError(f"--inject {atom} given twice")
            if not text.split():
                raise KiriError(f"--inject {atom}: the reading is empty; give values like C=95 M=90 …")
            module = verbs.atom_module(atom, settings)
            values = verbs.parse_observation(module.SPEC, text)
            if values is None:
                raise KiriError(f"--inject {atom}: give values (C=95 M=90 …), not tokens")
            inject[atom] = values
        daemon.setup_logging(settings)
        daemon.rotate_unit_output(settings.home)
        d = daemon.Daemon(settings, store, sinks=notify.sinks_from_settings(settings), mode=mode)
        if args.once:
            result = d.cycle(inject=inject)
            print(daemon.describe_cycle(result))
            if result.errors:   # cron and scripts see it; the cycle's lines above say what
                print(f"kiri daemon --once: the cycle had {len(result.errors)} error(s); more in {settings.log_path}",
                      file=sys.stderr)
                return EXIT_CYCLE_ERRORS
        else:
            dashboard = serve_beside(settings, args.serve)
            d.install_signal_handlers()
            print(f"kiri daemon: running (log {settings.log_path}); Ctrl-C or SIGTERM stops it", flush=True)
            try:
                d.run_forever()
            finally:
                if dashboard is not None:
                    dashboard.shutdown()
                    dashboard.server_close()


def serve_beside(settings, bind):
    """`daemon --serve`: the dashboard in a thread of the daemon's process, or None without the flag.
    It listens before the first cycle, so a port in use is one line at start, not a dead thread."""
    if bind is None:
        return None
    from . import web
    server = web.make_server(settings, web.bind_address(settings, bind or None))
    web.serve_in_thread(server)
    print(f"kiri daemon: dashboard and /metrics at {server.url}", flush=True)
    return server


def run_daemon_install(args):
    from . import units
    # Settings from the shell reach the service too; units.install leaves secrets out and says so.
    env = {k: v for k, v in os.environ.items() if k.startswith("KIRI_") and k != "KIRI_HOME"}
    installed = units.install(args.kind, print_only=args.print, home=settings_for(args).home, env=env)
    # stdout holds the unit alone, so `--print > com.kiri.daemon.plist` is a valid file;
    # what to do with it goes to stderr.
    if args.print or installed.path is None:
        print(installed.text, end="" if installed.text.endswith("\n") else "\n")
    if installed.path is not None:
        print(f"wrote {installed.path}", file=sys.stderr)
    if installed.next_command:
        print(f"next: {installed.next_command}", file=sys.stderr)


def run_daemon_status(args):
    from . import lock, status
    settings = settings_for(args)
    with opened_store(settings) as store:
        info = lock.daemon_status(settings.home, store)
    if args.json:
        print(json.dumps(info))
    else:
        print("kiri daemon: " + status.describe_daemon(info))
        for pipe, stage, error in info["last_cycle_errors"]:
            print(f"  last cycle: {pipe} {stage}: {error}")
    return 0 if info["state"] == "running" else EXIT_NOT_RUNNING


def run_daemon_stop(args):
    from . import lock, units
    home = settings_for(args).home
    stopped = lock.stop(home, wait=args.wait)
    if stopped is None:   # already what was asked for: not an error (as `systemctl stop`)
        print(f"kiri daemon is not running (home {home})")
        return
    print(f"stopped (PID {stopped.pid})")
    for kind, path in units.installed_units():
        print(f"note: {path} is installed, so {kind} will start the daemon again; to keep it stopped: "
              f"{units.stop_command(kind)}")


def run_daemon_uninstall(args):
    from . import units
    removed = units.uninstall(args.kind, print_only=args.print)
    if removed.path is not None:
        print(f"{'would remove' if args.print else 'removed'} {removed.path}")
    print(f"next: {removed.next_command}")


def run_status(args):
    from . import status
    settings = settings_for(args)
    with opened_store(settings) as store:
        info = status.collect_status(settings, store)
    print(json.dumps(info) if args.json else status.format_status(info))


def run_alerts(args):
    from .atoms.score import Score
    with opened_store(settings_for(args)) as store:
        alerts = store.alerts(limit=args.limit)
    if args.json:
        for a in alerts:  # one Score form, also for alerts stored by an older KIRI
            a["details"]["scores"] = [Score.from_json(s).to_json() for s in a["details"].get("scores") or []]
        print(json.dumps(alerts))
        return
    if not alerts:
        print("no alerts")
    for a in alerts:
        fb = a["feedback"]["verdict"] if a["feedback"] else "no answer"
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(a["ts"]))
        print(f"#{a['id']}  {when}  {a['atom']:<8} {a['state']:<10} {fb:<10} {a['message'].splitlines()[0]}")


def run_alerts_test(args):
    from . import notify
    settings = settings_for(args)
    with opened_store(settings) as store:
        notify.send_test_alert(settings, store, report=print_flush)


def run_feedback(args):
    with opened_store(settings_for(args)) as store:
        try:
            replaced = store.add_feedback(args.alert_id, args.verdict)
        except KeyError:
            raise KiriError(f"alert {args.alert_id} does not exist (`kiri alerts` lists them)") from None
    print(f"alert {args.alert_id}: {args.verdict}" + (" (replaced your earlier answer)" if replaced else ""))


def run_serve(args):
    from . import web
    settings = settings_for(args).check()
    if args.screenshot:
        from .web.browser import screenshot
        print(f"wrote {screenshot(settings, settings.output_path(args.screenshot, '--screenshot'))}")
        return
    web.serve(settings, bind=args.bind, read_only=True if args.read_only else None, report=print_flush)


def run_nerve_train(args):
    from .atoms import nerve, verbs
    settings = settings_for(args)
    with opened_store(settings) as store:
        labelled = store.labelled_decisions()
        nerve.train(list(verbs.all_atoms(settings)), labelled, settings.weights_path("nerve"), engine=settings.engine)
    answers = sum(1 for d in labelled if d["verdict"])
    print(f"nerve: trained on {len(labelled)} decisions ({answers} answered); saved {settings.weights_path('nerve')}")


def run_init(args):
    from .config import write_default_config
    path = write_default_config(settings_for(args).home)
    print(f"created {path} (mode 0600): edit it if you like, then start the monitor: `kiri daemon` "
          "(or as a service: `kiri daemon install --systemd` / `--launchd`). Each atom learns by itself "
          "from its own readings; `kiri status` shows how many it still needs.")


def run_setup(args):
    from . import setup
    given = {"host_name": args.host_name, "pulse_source": args.pulse_source, "mikrotik_url": args.mikrotik_url,
             "mikrotik_user": args.mikrotik_user, "node_exporter_url": args.node_exporter_url,
             "telegram_chat_id": args.telegram_chat_id}
    secret_files = {"telegram_token": args.telegram_token_file, "mikrotik_password": args.mikrotik_password_file}
    setup.run(home=args.home, given=given, secret_files=secret_files, service=not args.no_service, start=args.start,
              verify=not args.no_verify, wait=args.wait, interactive=sys.stdin.isatty(), report=print_flush)


def run_demo(args):
    from . import demo
    demo.run(home=args.home, seconds=args.seconds, steps=args.steps, report=print_flush,
             progress=Progress(label="pulse"))


def run_bench_speed(args):
    from .bench import speed
    speed.main(as_json=args.json, ref_steps=args.ref_steps, fast_steps=args.fast_steps)


def run_bench_train(args):
    from .bench import train
    train.main(sizes=args.sizes, steps=args.steps)


def run_bench_month(args):
    from .bench import month, month_kill
    (month_kill if args.kill else month).run(days=args.days, seed=args.seed, report=print_flush)


def run_bench_fleet(args):
    from .bench import fleet
    fleet.run(hosts=args.hosts, cycles=args.cycles, steps=args.steps, seed=args.seed, report=print_flush)


def run_bench_fuzz(args):
    from .bench import fuzz
    return fuzz.main(cases=args.cases, seed=args.seed, edges=args.edge, timeout=args.timeout, report=print_flush)


def run_bench_nab(args):
    from .bench import nab
    settings_for(args).output_path(args.out, "--out", folder=True)
    nab.run(args.data, args.out, pattern=args.files, jobs=args.jobs, windows_file=args.windows, report=print_flush)


def run_bench_nab_resample(args):
    from .bench import nab_resample
    settings_for(args).output_path(args.out, "--out", folder=True)
    nab_resample.resample(args.data, args.out, every=args.every, up=args.up, pattern=args.files, report=print_flush)


def run_bench_nab_score(args):
    from .bench import nab_score
    report = nab_score.score(args.data, args.windows, args.results, detector=args.detector, pattern=args.files)
    print(nab_score.format_report(report))


def main(argv=None):
    # An argument of bytes that are not UTF-8 (a file or folder so named) reaches Python as lone
    # surrogates; printed back it is those same bytes, as `ls` prints such a name, not a crash.
    if getattr(sys.stdout, "errors", None) == "strict" and hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="surrogateescape")
    args = build_parser().parse_args(argv)
    try:
        code = args.run(args)
        sys.stdout.flush()   # here, so a full disk under stdout is one line below, not Python's at exit
    except KiriError as e:
        return fail(str(e))
    except BrokenPipeError:
        # The reader went away (`kiri export | head`): stop quietly, as other Unix tools do.
        silence_stdout()
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("kiri: interrupted", file=sys.stderr)
        return 130
    # The user's environment, wherever it is met: one line, no traceback.
    except OSError as e:   # a file that cannot be read or written, a full disk (stdout on /dev/full)
        return fail(f"{e.filename}: {e.strerror}" if e.filename and e.strerror else e.strerror or str(e))
    except UnicodeDecodeError as e:   # a file given to read that is not text
        return fail(f"a file given is not UTF-8 text: {e}")
    except sqlite3.DatabaseError as e:   # the store outside opened_store (which names kiri.db)
        if not from_environment(e):
            raise
        return fail(f"the database: {e}")
    return code or 0


def fail(message):
    """Print `message` as the one error line; what this command printed before it is kept, and
    if stdout cannot take it (a full disk), stdout is let go so that exit does not try again."""
    try:
        sys.stdout.flush()
    except OSError:
        silence_stdout()
    print(f"kiri: error: {printable(message, 2000)}", file=sys.stderr)
    return EXIT_USER_ERROR


def silence_stdout():
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def main_exit():
    """Entry point of the `kiri` console script."""
    sys.exit(main())
