"""The `kiri` command line: parses flags and delegates to library calls; nothing else.

A mistake a user can make (bad flag, missing file, unusable weights) prints one line
on stderr and exits non-zero; anything else is a bug and keeps its traceback.
"""

import argparse
import contextlib
import sys

from . import __version__
from .core.engines import ENGINES
from .core.sample import DEFAULT_TEMPERATURE
from .core.train import Progress
from .errors import KiriError

EXIT_USER_ERROR = 1
EXIT_BAD_USAGE = 2


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line, not a usage dump plus a line."""

    def error(self, message):
        self.exit(EXIT_BAD_USAGE, f"{self.prog}: error: {message}\n")


def positive_int(text):
    return _number(text, int, lambda v: v >= 1, "an integer of at least 1")


def nonnegative_int(text):
    return _number(text, int, lambda v: v >= 0, "an integer of at least 0")


def positive_float(text):
    return _number(text, float, lambda v: v > 0 and v != float("inf"), "a number greater than 0")


def _number(text, kind, ok, wanted):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}")
    return value


def add_training_flags(p, steps, seed=42):
    p.add_argument("--steps", type=positive_int, default=steps, help=f"training steps (default {steps})")
    p.add_argument("--seed", type=nonnegative_int, default=seed, help=f"random seed (default {seed})")
    p.add_argument("--batch", type=positive_int, default=1, help="sequences per step, gradients averaged (default 1)")
    p.add_argument("--metrics", metavar="FILE", help="write one JSON line per step (step, loss, lr, seconds)")
    add_engine_flag(p)


def add_engine_flag(p):
    p.add_argument("--engine", choices=ENGINES, default=None,
                   help="fast (default), value (scalar autograd reference) or torch (optional)")


def build_parser():
    parser = Parser(prog="kiri", description="KIRI: tiny GPTs that learn what is normal for this machine.")
    parser.add_argument("--version", action="version", version=f"kiri {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    commands.required = True

    names = commands.add_parser("names", help="the microgpt names demo: train, sample")
    names_verbs = names.add_subparsers(dest="verb", metavar="VERB", parser_class=Parser)
    names_verbs.required = True
    p = names_verbs.add_parser("train", help="train the 4,192-parameter names model")
    add_training_flags(p, steps=1000)
    p.add_argument("--data", metavar="FILE", help="names file, one per line (default data/names.txt)")
    p.add_argument("--out", metavar="FILE", help="weights file to write (default weights/names.json)")
    p.set_defaults(run=run_names_train)
    p = names_verbs.add_parser("sample", help="print generated names from saved weights")
    p.add_argument("-n", type=positive_int, default=20, help="how many names (default 20)")
    p.add_argument("--temperature", type=positive_float, default=DEFAULT_TEMPERATURE,
                   help=f"sampling temperature > 0 (default {DEFAULT_TEMPERATURE})")
    p.add_argument("--seed", type=nonnegative_int, default=None, help="random seed (default: random)")
    p.add_argument("--weights", metavar="FILE", help="weights file (default weights/names.json)")
    add_engine_flag(p)
    p.set_defaults(run=run_names_sample)

    bench = commands.add_parser("bench", help="benchmarks: speed")
    bench_kinds = bench.add_subparsers(dest="kind", metavar="BENCH", parser_class=Parser)
    bench_kinds.required = True
    p = bench_kinds.add_parser("speed", help="reference vs fast engine: training step, scoring, memory")
    p.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    p.add_argument("--ref-steps", type=positive_int, default=3, help="reference-engine training steps (default 3)")
    p.add_argument("--fast-steps", type=positive_int, default=50, help="fast-engine training steps (default 50)")
    p.set_defaults(run=run_bench_speed)
    return parser


@contextlib.contextmanager
def metrics_file(path):
    """The --metrics file opened for writing, or None when not asked for."""
    if not path:
        yield None
        return
    try:
        f = open(path, "w", encoding="utf-8")
    except OSError as e:
        raise KiriError(f"cannot write metrics file {path}: {e.strerror}") from None
    with f:
        yield f


def settings_for(args):
    from .config import load_settings
    return load_settings(home=getattr(args, "home", None), engine=getattr(args, "engine", None))


def run_names_train(args):
    from . import names
    settings = settings_for(args)
    with metrics_file(args.metrics) as metrics:
        names.train_names(steps=args.steps, seed=args.seed, data=args.data or names.DATA,
                          out=args.out or names.WEIGHTS, engine=settings.engine, batch=args.batch,
                          progress=Progress(label="names"), metrics=metrics)


def run_names_sample(args):
    from . import names
    settings = settings_for(args)
    for name in names.sample_names(n=args.n, temperature=args.temperature, weights=args.weights or names.WEIGHTS,
                                   seed=args.seed, engine=settings.engine):
        print(name)


def run_bench_speed(args):
    from .bench import speed
    speed.main(as_json=args.json, ref_steps=args.ref_steps, fast_steps=args.fast_steps)


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except KiriError as e:
        print(f"kiri: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("kiri: interrupted", file=sys.stderr)
        return 130
    return 0


def main_exit():
    """Entry point of the `kiri` console script."""
    sys.exit(main())
