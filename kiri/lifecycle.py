"""Each atom's life, with no help from anyone: cold → learning → watching.

    cold      collecting: fewer than `learn_after` real readings and no model yet
    learning  enough real readings: the daemon trains it in this cycle's housekeeping
    watching  a model scores every reading; every `retrain_days` it retrains on its last
              `retrain_days` of real readings (and when Nerve says retrain:<atom>:<days>d)

A model that learned from synthetic history (`train --warm-start`) is replaced by one
trained on real readings as soon as there are `learn_after` of them. A retrained model
is swapped in only if it does no worse than the current one on the newest real
readings — the ones it held out, and which the current model never saw. "Worse" is a
higher mean surprise there (more than GATE_MARGIN above the current model's): surprise
is a proper score of how well a model knows those readings, while a false-alarm rate
would judge the candidate on the very readings that set its threshold. A worse model
is kept aside as `<atom>.candidate.json`; the log and `kiri status` say so.
"""

import logging
import math

from .atoms import verbs
from .atoms.atom import HOLDOUT_FRACTION, Atom, held_out_indices
from .core.weights import save
from .errors import KiriError
from .ground import is_finite_number

log = logging.getLogger("kiri.lifecycle")

GATE_READINGS = 300   # the newest held-out real readings both models are judged on (a bounded cost)
GATE_MARGIN = 1.05    # a candidate this much more surprised than the current model is worse
RETRAIN_KEY = "atom.{}.retrain"   # store kv: when the last retrain ran, and how it went
RETRAIN_CLOCK_KEY = "atom.{}.retrain_clock"   # store kv: when a retrain stamp from the future was first seen


def phase(trained, counts, learn_after):
    """'cold', 'learning' or 'watching' for an atom (trained: whether it has a model) and its
    store.count_observations()."""
    if trained:
        return "watching"
    return "learning" if counts["real"] >= learn_after else "cold"


def due(name, atom, real_readings, settings, store, now):
    """The meta-action this atom needs now, or None: spawn:<atom> (its first model),
    retrain:<atom>:<days>d (the schedule, or real readings to replace a warm start).
    `real_readings()` counts the atom's real readings (up to learn_after is enough): asked
    only when it matters, as a count every cycle would read a whole history every cycle.
    Stores when it first saw a retrain stamped in the future (age_since)."""
    learn_after, days = settings.learn_after, settings.number("retrain_days")
    if not atom.trained:
        return f"spawn:{name}" if real_readings() >= learn_after else None
    trained_on = atom.weights.trained_on
    warm_started = trained_on.get("synthetic", 0) > 0
    if warm_started and real_readings() >= learn_after:
        return f"retrain:{name}:{days:g}d"
    # A retrain that was kept aside counts as done: the schedule moves on either way.
    tried_at = (store.get_kv(RETRAIN_KEY.format(name)) or {}).get("ts") or 0
    trained_at = max(trained_on.get("trained_at") or trained_on.get("to_ts") or 0, tried_at)
    age = age_since(store, RETRAIN_CLOCK_KEY.format(name), trained_at, now)
    return f"retrain:{name}:{days:g}d" if age > days * 86400 else None


def age_since(store, key, last, now):
    """Seconds from `last` (a wall time kept in the store or the weights) to `now`: never negative.

    Only wall time survives a restart, and the wall clock can step back. A `last` in the
    future (the clock has stepped back since, or the weights were stamped by another
    clock) says nothing of its age. Waiting until the clock passes it again would stop the
    schedule for as long as the clock had been wrong — for good, to a box whose clock once
    ran a year ahead — and retraining at once would retrain after every small step back.
    Such a stamp ages from when it was first seen instead, kept under `key` in the store
    (with the stamp it stands for) so a restart does not start it again: a step back delays
    the schedule by the step at most, and by one period at most.
    """
    if last <= now:
        return now - last
    seen = store.get_kv(key)
    if not (isinstance(seen, dict) and seen.get("for") == last and is_finite_number(seen.get("ts"))
            and seen["ts"] <= now):
        seen = {"for": last, "ts": now}
        store.set_kv(key, seen)
    return now - seen["ts"]


def run(action, settings, store, modules, now):
    """Run `spawn:<atom>` or `retrain:<atom>:<days>d` for real; returns a one-line outcome."""
    parts = action.split(":")
    name = parts[1] if len(parts) in (2, 3) else None
    if parts[0] == "spawn" and len(parts) == 2 and name in modules:
        report = verbs.train(modules[name], settings, store, now=now)
        return f"{name}: learned from {report.real} real readings; watching"
    if parts[0] == "retrain" and len(parts) == 3 and name in modules and parts[2].endswith("d"):
        try:
            days = float(parts[2][:-1])
        except ValueError:
            days = None
        if days is not None and days > 0:
            return retrain(modules[name], settings, store, days, now)
    raise KiriError(f"unknown meta-action {action!r}")


def retrain(module, settings, store, days, now):
    """Train a candidate on the last `days` of real readings and swap it in unless it does worse."""
    name = module.SPEC.name
    path = settings.weights_path(name)
    current = Atom.load(module.SPEC, path, engine=settings.engine)
    candidate_path = path.with_name(f"{name}.candidate.json")
    verbs.train(module, settings, store, days=days, now=now, path=candidate_path)
    candidate = Atom.load(module.SPEC, candidate_path, engine=settings.engine)
    judged = newest_held_out(module, settings, store, days, now)
    new, old = judge(candidate, judged), judge(current, judged)
    on = f"on the newest {len(judged)} real readings"
    warm_started = current.trained and current.weights.trained_on.get("synthetic", 0) > 0
    if current.trained and not warm_started and new[0] > GATE_MARGIN * old[0]:
        outcome = (f"{name}: retrained model kept aside ({candidate_path.name}): mean surprise {new[0]:.3f} {on}, "
                   f"the current model {old[0]:.3f}")
        log.warning("%s", outcome)
    else:
        save(path, candidate.weights)   # the old file becomes <name>.prev.json
        candidate_path.unlink()
        before = f"; before: {old[0]:.3f}, {old[1]} false alarms" if current.trained else ""
        outcome = (f"{name}: retrained on its last {days:g} days (mean surprise {new[0]:.3f}, {new[1]} false alarms "
                   f"{on}{before})")
    store.set_kv(RETRAIN_KEY.format(name), {"ts": now, "outcome": outcome})
    return outcome


def newest_held_out(module, settings, store, days, now):
    """(values, context, ts) of the newest real readings a retrain held out, at most GATE_READINGS."""
    history = verbs.history_for(module, store, real_only=True, days=days, now=now, settings=settings)
    held = held_out_indices(history, HOLDOUT_FRACTION)[-GATE_READINGS:]
    reader = Atom(module.SPEC)
    return [(history[i]["values"], reader.context_of(history, i), history[i]["ts"]) for i in held]


def judge(atom, readings):
    """(mean surprise, false alarms) of an atom on `readings`; (inf, 0) when it cannot say."""
    if not atom.trained:
        return math.inf, 0
    scores = []
    for values, context, ts in readings:
        try:
            scores.append(atom.score(values, context, ts).score)
        except ValueError:   # a reading the model's language cannot read: not this gate's business
            continue
    if not scores:
        return math.inf, 0
    return sum(scores) / len(scores), sum(1 for x in scores if x > atom.threshold)
