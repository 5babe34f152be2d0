"""What you can do with any atom — collect, add synthetic history, train, score — as library calls.

`kiri <atom> <verb>` and `python -m kiri.atoms.<atom>.<verb>` are thin wrappers over
these functions; the daemon calls them too. An atom module (`kiri.atoms.pulse.schema`
and its siblings) gives its SPEC, a `read(spec, settings, store)` that returns one reading
(or a `collect_once(spec, settings, store, now)` that stores one itself) and `synthetic(rng, ts)`.
"""

import dataclasses
import importlib
import math
import random
import time
from types import SimpleNamespace

from ..core.surprise import AnomalyLikelihood
from ..errors import KiriError
from ..ground import one_line
from . import BUILTIN, hosts
from .atom import MIN_OBSERVATIONS, TRAIN_WINDOW, Atom, command_for
from .fit import clock_fields
from .sources import CollectorError


def atom_module(name, settings=None):
    """A built-in atom, or one declared in the config file ([atom:NAME]), with its interval
    resolved from the settings: the one interval the schedule, the gap rule and the
    atom's own windows (Rhythm's commits) all read, from `module.SPEC.interval`."""
    if name in BUILTIN:
        module = importlib.import_module(f"kiri.atoms.{name}.schema")
        if settings is None:
            return module
        spec = dataclasses.replace(module.SPEC, interval=settings.number(f"{name}_interval"))
        return SimpleNamespace(**{k: getattr(module, k) for k in ("read", "collect_once", "synthetic")
                                  if hasattr(module, k)}, SPEC=spec)
    if settings is not None and name in settings.atoms:
        from .custom import make_module
        return make_module(name, settings.atoms[name])
    watched = hosts.atoms_of(settings.hosts) if settings is not None else {}
    if name in watched:
        host = watched[name]
        return hosts.make_module(host, settings.hosts[host], settings.number("pulse_interval"))
    declared = sorted(settings.atoms) + sorted(watched) if settings is not None else []
    raise KiriError(f"unknown atom {name!r}; choose one of {', '.join(list(BUILTIN) + declared)}")


def all_atoms(settings):
    """Every atom this installation runs: the built-ins, the declared ones, then the watched
    hosts' ([host:NAME]), each by name."""
    names = list(BUILTIN) + sorted(settings.atoms) + sorted(hosts.atoms_of(settings.hosts))
    return {name: atom_module(name, settings) for name in names}


def load_atom(module, settings):
    """The atom with its saved weights under KIRI_HOME (untrained if there are none yet)."""
    return Atom.load(module.SPEC, settings.weights_path(module.SPEC.name), engine=settings.engine)


# --- collect ------------------------------------------------------------------------

def collect_once(module, settings, store, now=None, reading=None):
    """Take one reading now (or the (values, source) `reading` read already) and store it;
    returns the stored observation."""
    now = time.time() if now is None else now
    if reading is None and hasattr(module, "collect_once"):
        obs_id = module.collect_once(module.SPEC, settings, store, now)
    else:
        values, source = reading or module.read(module.SPEC, settings, store)
        obs_id = store.add_observation(module.SPEC.name, values, ts=now, source=source)
    return store.observation(obs_id)


def collect(module, settings, store, interval=None, duration=None, report=None,
            clock=time.time, sleep=time.sleep):
    """Readings every `interval` seconds for `duration` seconds (one if neither is given).

    Samples are taken on a fixed grid (start + k·interval), so a slow reading does not
    make the series drift. A reading that fails is reported and skipped; the loop goes on.
    Returns the stored observations; none at all is an error.
    """
    interval = interval or module.SPEC.interval
    total = 1 if not duration else max(1, int(duration / interval + 1e-9))  # 1 s / 0.2 s is 5, not 4.999…
    report = report or (lambda line: None)
    stored, start = [], clock()
    last_error = None
    for k in range(total):
        wait = start + k * interval - clock()
        if wait > 0:
            sleep(wait)
        try:
            obs = collect_once(module, settings, store, now=clock())
        except CollectorError as e:
            last_error = e
            if total > 1:
                report(f"{k + 1}/{total} | skipped: {e}")
            continue
        stored.append(obs)
        report(f"{k + 1}/{total} | {describe_values(module.SPEC, obs['values'])}")
    if not stored:
        raise KiriError(str(last_error))
    return stored


def describe_values(spec, values):
    """'C=15% M=74% D=41% …' for a progress line."""
    parts = []
    for prefix in spec.schema:
        unit = spec.labels.get(prefix, ("", ""))[1]
        value = values.get(prefix)
        if value is None:   # a clock field the reading does not carry (its time does)
            continue
        text = f"{value:.0f}" if unit == "%" else f"{value:g}" if isinstance(value, int) else f"{value:.2f}"
        parts.append(f"{prefix}={text}{unit}")
    return " ".join(parts)


def add_synthetic(module, store, n, seed=0, end=None, interval=None):
    """Write n synthetic observations ending at `end` (default now), one per interval.

    They are marked synthetic, so they never replace real rows and training can leave them out.
    """
    if n < 1:
        raise KiriError(f"--synthetic needs a count of at least 1, got {n}")
    rng = random.Random(seed)
    interval = interval or module.SPEC.interval
    end = time.time() if end is None else end
    rows = []
    for i in range(n):
        ts = end - (n - i) * interval
        rows.append({"atom": module.SPEC.name, "ts": ts, "values": module.synthetic(rng, ts),
                     "source": "synthetic", "synthetic": True})
    return store.add_observations(rows)


# --- train --------------------------------------------------------------------------

def history_for(module, store, real_only=False, days=None, now=None, window=TRAIN_WINDOW, settings=None):
    """The stored observations an atom trains on, oldest first: the newest `window` of them
    (of the last `days`, when given). Read with a LIMIT, so a long history is never loaded;
    made-up readings (`daemon --inject`) are not history and are left out in the query.

    With settings, the readings of incidents are left out too: those the owner approved an
    alert about (incident_spans). Learned as normal, an incident would be normal — and its
    end, the machine's usual state, a surprise: in the simulated month Drift retrained on a
    day of scope creep and then alerted four times about an ordinary weekend. The gap they
    leave breaks the context (Atom.context_of), so no reading is read after the incident.
    """
    since = None
    if days is not None:
        since = (time.time() if now is None else now) - days * 86400
    rows = store.observations(module.SPEC.name, since=since, real_only=real_only, limit=window, injected=False)
    if settings is None or not rows:
        return rows
    spans = incident_spans(module, settings, store, since=rows[0]["ts"])
    return [r for r in rows if not any(first <= r["ts"] <= last for first, last in spans)]


def incident_spans(module, settings, store, since):
    """(first, last) times of the alerts about this atom that the owner approved (last seen
    at `since` or later), from the first of the `alert_after` readings that raised each."""
    lead = settings.count("alert_after") * module.SPEC.interval
    return [(first - lead, last) for first, last in store.approved_spans(module.SPEC.name, since)]


def train(module, settings, store, steps=None, seed=42, batch=1, warm_start=False, days=None,
          progress=None, metrics=None, now=None, path=None):
    """Train an atom on its real readings (and, with warm_start, the stored synthetic history)
    and save its weights atomically to `path` (default KIRI_HOME/weights/<atom>.json);
    returns a TrainReport. Synthetic history is never mixed in unless asked for."""
    history = history_for(module, store, real_only=not warm_start, days=days, now=now, settings=settings)
    name = module.SPEC.name
    if not warm_start and len(history) < MIN_OBSERVATIONS:
        synthetic = store.count_observations(name)["synthetic"]
        if synthetic:
            raise KiriError(f"{name}: only {len(history)} real readings stored; need at least {MIN_OBSERVATIONS} "
                            f"(or learn from the {synthetic} synthetic ones too: `{command_for(name)} train --warm-start`)")
    atom = Atom(module.SPEC, engine=settings.engine)
    return atom.train(history, path or settings.weights_path(name), steps=steps, seed=seed, batch=batch,
                      progress=progress, metrics=metrics,
                      trained_on={"warm_start": warm_start, "days": days,
                                  "trained_at": time.time() if now is None else now})


# --- score --------------------------------------------------------------------------

def parse_observation(spec, text):
    """'C=95 M=90 …' → values dict; 'C9 M9 …' → None (tokens, scored as typed). An atom
    with a clock reads them now unless the hour and weekday are given too (H=3 W=6)."""
    words = text.split()
    if not words or not all("=" in w for w in words):
        if any("=" in w for w in words):
            raise KiriError(f"{spec.name}: mix of values and tokens in {text!r}; use C=95 M=90 … or C9 M9 …")
        return None
    values = {}
    for word in words:
        key, _, raw = word.partition("=")
        if key not in spec.schema:
            raise KiriError(f"{spec.name}: unknown field {key!r}; fields are {' '.join(spec.schema)}")
        if key in values:
            raise KiriError(f"{spec.name}: field {key} given twice in {text!r}")
        try:
            values[key] = float(raw)
        except ValueError:
            raise KiriError(f"{spec.name}: field {key} must be a number, got {one_line(repr(raw), 40)}") from None
        if not math.isfinite(values[key]):
            raise KiriError(f"{spec.name}: field {key} must be a finite number, got {one_line(repr(raw), 40)}")
    # An atom's clock (its hour and weekday) may be given, else it is now's.
    missing = [k for k in spec.schema if k not in values and k not in clock_fields(spec)]
    if missing:
        raise KiriError(f"{spec.name}: field {missing[0]} is missing from {text!r}")
    return values


def score(module, settings, store, obs=None, record=True, warn=None):
    """Score `obs` (text: values or tokens, read on its own) or else the latest stored observation.

    The latest stored observation is read after the one before it, as in training. The
    score is recorded in the store unless record=False. warn(line) hears when the atom's
    weights were unusable and it scores with the previous ones.
    """
    atom = load_atom(module, settings)
    if atom.weights_note and warn:
        warn(f"{module.SPEC.name}: {atom.weights_note}")
    try:
        if obs is not None:
            values = parse_observation(module.SPEC, obs)
            result = atom.score_tokens(obs) if values is None else atom.score(values)
            observation_id = None
        else:
            latest = store.observations(module.SPEC.name, limit=module.SPEC.context + 1)
            if not latest:
                raise KiriError(f"{module.SPEC.name}: no stored observation to score; run `{command_for(module.SPEC.name)} collect`")
            i = len(latest) - 1
            result = atom.score(latest[i]["values"], atom.context_of(latest, i), ts=latest[i]["ts"])
            observation_id = latest[i]["id"]
    except ValueError as e:
        raise KiriError(str(e)) from None
    if observation_id is not None:
        add_likelihood(result, settings, store, observation_id, latest[-1]["ts"])
    if record:
        record_score(store, result, observation_id)
    return result


LIKELIHOOD_WARMUP = 30   # readings past the window before the likelihood says anything
HISTORY_SPAN = 7 * 86400  # ... and, until its history is full, the time it must span


def add_likelihood(result, settings, store, observation_id, ts):
    """Fill in how unusual this atom's recent readings are, together (core/surprise.py).

    The mean score/threshold of the last `likelihood_window` collected readings (this one
    included) is compared with the `likelihood_history` readings before them; above
    `likelihood_alert` the verdict is 'unusual' even when no single reading is over the
    threshold — a slow climb, a level that stays a little off.

    It says nothing until that history is full or spans a week (HISTORY_SPAN): a history
    of a weekend alone makes every Monday morning "unusual together". In the simulated
    month, Drift's first Monday after it learned on a Thursday gave ten false alerts.
    """
    window, history = settings.count("likelihood_window"), settings.count("likelihood_history")
    level = settings.fraction("likelihood_alert")   # read first: a bad setting is an error, with or without history
    if not 0 < result.threshold < math.inf:
        return result
    ratios = store.reading_ratios(result.atom, window + history - 1, exclude_observation=observation_id)
    if len(ratios) + 1 < window + LIKELIHOOD_WARMUP:
        return result   # too little history to say what is usual: no likelihood rather than a 0
    span = min(HISTORY_SPAN, settings.number("retain_days") * 86400)   # pruning keeps no more than that
    if len(ratios) + 1 < window + history and (store.scored_since(result.atom) or ts) > ts - span:
        return result   # a history of part of the week: the rest of it would look unusual
    likelihood = AnomalyLikelihood(short=window, long=history, warmup=LIKELIHOOD_WARMUP)
    result.likelihood = likelihood.replay(ratios + [result.ratio])
    result.unusual_at = level
    return result


def record_score(store, result, observation_id, ts=None):
    """Store a Score (with its per-token detail and likelihood); returns the score's id. An
    infinite threshold (weights saved without one: nothing is over it) is stored as none."""
    threshold = result.threshold if math.isfinite(result.threshold) else None
    return store.add_score(result.atom, result.score, threshold=threshold, verdict=result.verdict,
                           tokens=result.to_json()["tokens"], observation_id=observation_id, ts=ts,
                           likelihood=result.likelihood)
