"""Nerve's language: the meta-atom reads the other atoms' scores and picks what to do.

One token per atom for its score relative to its own threshold (`P3` = pulse at
1.5–2× its threshold; `P_` = pulse not available or not trained, which must never
read as "perfectly normal"), one token `U` for the most unusual atom's likelihood
relative to its alert level (recent readings unusual together, see
verbs.add_likelihood; `U_` until an atom has enough history), the hour and weekday,
then the action token:

    [BOS, P3, R0, D_, U1, H1, W6, suppress]

How it decides is in decision.py; how it learns from the owner's answers in training.py.
"""

import math
import time

from ..atom import AtomSpec
from .. import is_host_atom

BUILTIN_PREFIX = {"pulse": "P", "rhythm": "R", "drift": "D"}
OWN_FIELDS = ("U", "H", "W", "act")          # Nerve's fields that are not an atom's
HOSTS = "HOSTS"                              # the field of the watched hosts (atoms/hosts.py), all of them
RATIO_SPEC = (0, 3, 6, "optional")          # score / threshold in 0.5-wide buckets; ≥ 3 is the top one
DECIDING_ACTIONS = ("ok", "alert", "suppress")


def prefix_of(atom):
    """Nerve's token prefix for an atom: P, R, D for the built-ins, HOSTS for every watched
    host's Pulse (one token for them all, however many: the highest of their ratios), the
    name in capitals otherwise."""
    if is_host_atom(atom):
        return HOSTS
    return BUILTIN_PREFIX.get(atom) or atom.upper()


def actions(atoms):
    """Nerve's actions. A watched host's lifecycle runs on the schedule alone: a hundred
    hosts would be two hundred actions that no owner's answer ever teaches."""
    mine = [a for a in atoms if not is_host_atom(a)]
    return list(DECIDING_ACTIONS) + [f"retrain:{a}:7d" for a in mine] + [f"spawn:{a}" for a in mine]


def spec(atoms):
    """Nerve's AtomSpec for a set of atom names (built-in and user-declared)."""
    schema = {prefix_of(a): RATIO_SPEC for a in atoms}
    schema.update({"U": RATIO_SPEC, "H": (0, 24, 8), "W": (0, 7, 7), "act": {"labels": actions(atoms)}})
    return AtomSpec(name="nerve", schema=schema, n_embd=16, n_layer=1, n_head=4, block_size=16,
                    context=0, steps=600)


def state_of(scores, atoms, ts):
    """Nerve's state: each atom's score / threshold (None when it has no score), the highest
    likelihood / alert level (None when no atom has one yet), hour, weekday."""
    t = time.localtime(ts)
    state = {prefix_of(a): None for a in atoms}
    unusual = []
    for s in scores:
        if s.atom in atoms and math.isfinite(s.threshold) and s.threshold > 0:
            key = prefix_of(s.atom)
            state[key] = max(s.score / s.threshold, -math.inf if state[key] is None else state[key])
            if s.likelihood is not None and s.unusual_at:
                unusual.append(s.likelihood / s.unusual_at)
    state.update({"U": max(unusual) if unusual else None, "H": t.tm_hour + t.tm_min / 60, "W": t.tm_wday})
    return state
