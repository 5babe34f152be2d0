"""`kiri bench speed`: the reference engine against the fast one, in one process and one run.

Figures are ratios measured side by side on the same machine at the same time, so a
shared, noisy machine moves both; absolute times are printed for context only.
"""

import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..core.engines import make_engine
from ..core.language import StateLanguage
from ..core.model import NAMES_CONFIG, PULSE_CONFIG, init_params
from ..core.surprise import mean_surprise, token_surprises
from ..core.weights import Weights, save
from ..ground import PLATFORM

PULSE_SEQUENCE = 17       # 16 predictions: a full block
OBSERVATION = 7           # BOS + the six pulse tokens
PROJECTED_STEPS = 500


def seconds_per_call(fn, calls):
    """Median wall time of `calls` calls of fn()."""
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def training_step_seconds(engine_name, config, sequence, steps):
    model = make_engine(engine_name, config, init_params(config, random.Random(0)))
    model.loss_and_grad([sequence])  # warm-up: first-call costs are not per-step costs
    return seconds_per_call(lambda: model.loss_and_grad([sequence]), steps)


def scoring_seconds(engine_name, tokens, calls):
    model = make_engine(engine_name, PULSE_CONFIG, init_params(PULSE_CONFIG, random.Random(0)))
    return seconds_per_call(lambda: mean_surprise(token_surprises(model, tokens)), calls)


# The seed's Pulse language (43 tokens): PULSE_CONFIG's vocabulary, without the clock.
SEED_LANGUAGE = StateLanguage("pulse", {"C": (0, 100, 10), "M": (0, 100, 10), "D": (0, 100, 10),
                                        "S": (0, 100, 5), "L": (0, 20, 5), "N": (0, 1, 2)})


def scoring_peak_rss_mb(tokens, calls=200):
    """Peak resident memory of a fresh process that loads pulse weights and scores."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pulse.json"
        params = init_params(PULSE_CONFIG, random.Random(0))
        save(path, Weights(PULSE_CONFIG, SEED_LANGUAGE.to_dict(), params))
        code = (
            "from kiri.bench.speed import score_from_file, peak_rss_mb\n"
            f"score_from_file({str(path)!r}, {tokens!r}, {calls})\n"
            "print(peak_rss_mb())\n"
        )
        root = str(Path(__file__).resolve().parent.parent.parent)
        out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
        return float(out.stdout.strip())


def peak_rss_mb():
    """This process's peak resident set size in MB."""
    # Linux: VmHWM belongs to the current program image, whereas ru_maxrss survives
    # exec and would report the parent's size at fork time.
    return _proc_status_mb("VmHWM") or _max_rss_mb()


def resident_mb():
    """This process's resident set size now, in MB (where /proc tells it; else its peak)."""
    return _proc_status_mb("VmRSS") or peak_rss_mb()


def _proc_status_mb(key):
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _max_rss_mb():
    import resource
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024 / 1024 if PLATFORM == "macos" else rss / 1024  # macOS counts bytes, Linux KiB


def score_from_file(path, tokens, calls):
    """What a scoring process does: load weights, build the fast engine, score."""
    from ..core.weights import load
    w = load(path)
    model = make_engine("fast", w.config, w.params)
    for _ in range(calls):
        mean_surprise(token_surprises(model, tokens))


def run(ref_steps=3, fast_steps=50, ref_score_calls=20, fast_score_calls=200, report=None):
    """Measure everything; returns a dict of figures. `report(line)` hears about progress."""
    report = report or (lambda line: None)
    rng = random.Random(1)
    pulse_seq = [rng.randrange(PULSE_CONFIG.vocab_size) for _ in range(PULSE_SEQUENCE)]
    names_seq = [26] + [rng.randrange(26) for _ in range(6)] + [26]  # a typical 6-letter name
    obs = [PULSE_CONFIG.vocab_size - 1] + [rng.randrange(PULSE_CONFIG.vocab_size - 1) for _ in range(OBSERVATION - 1)]
    figures = {}
    for label, config, seq in (("pulse", PULSE_CONFIG, pulse_seq), ("names", NAMES_CONFIG, names_seq)):
        report(f"{label}: reference engine, {ref_steps} steps …")
        ref = training_step_seconds("value", config, seq, ref_steps)
        report(f"{label}: fast engine, {fast_steps} steps …")
        fast = training_step_seconds("fast", config, seq, fast_steps)
        figures[label] = {"tokens": len(seq) - 1, "value_step_s": ref, "fast_step_s": fast, "speedup": ref / fast,
                          "value_500_steps_s": ref * PROJECTED_STEPS, "fast_500_steps_s": fast * PROJECTED_STEPS}
    report("scoring one pulse observation …")
    ref_score = scoring_seconds("value", obs, ref_score_calls)
    fast_score = scoring_seconds("fast", obs, fast_score_calls)
    figures["score"] = {"tokens": OBSERVATION, "value_ms": ref_score * 1000, "fast_ms": fast_score * 1000,
                        "speedup": ref_score / fast_score, "peak_rss_mb": scoring_peak_rss_mb(obs)}
    figures["speedup"] = figures["pulse"]["speedup"]
    return figures


def format_figures(f):
    lines = []
    for label in ("pulse", "names"):
        g = f[label]
        lines.append(f"{label} train ({g['tokens']} tokens/step): value {g['value_step_s'] * 1000:.1f} ms/step, "
                     f"fast {g['fast_step_s'] * 1000:.2f} ms/step, ratio {g['speedup']:.1f}x")
        lines.append(f"{label} 500 steps projected: value {g['value_500_steps_s']:.0f} s, fast {g['fast_500_steps_s']:.1f} s")
    s = f["score"]
    lines.append(f"score one {s['tokens']}-token pulse observation: value {s['value_ms']:.2f} ms, "
                 f"fast {s['fast_ms']:.3f} ms, ratio {s['speedup']:.1f}x")
    lines.append(f"scoring process peak RSS {s['peak_rss_mb']:.1f} MB")
    lines.append(f"speedup {f['speedup']:.1f}")
    return "\n".join(lines)


def main(as_json=False, **kwargs):
    figures = run(report=lambda line: print(line, file=sys.stderr), **kwargs)
    print(json.dumps(figures) if as_json else format_figures(figures))
    return figures
