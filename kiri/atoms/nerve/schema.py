"""Nerve: the meta-atom that reads the other atoms' scores and picks what to do.

Nerve's language: one token per atom for its score relative to its own threshold
(`P3` = pulse at 1.5–2× its threshold; `P_` = pulse not available or not trained, which
must never read as "perfectly normal"), one token `U` for the most unusual atom's
likelihood relative to its alert level (recent readings unusual together, see
verbs.add_likelihood; `U_` until an atom has enough history), the hour and weekday,
then the action token:

    [BOS, P3, R0, D_, U1, H1, W6, suppress]

The decision is the most probable action token after the state tokens. Until Nerve has
enough labelled history, a plain rule decides (alert when any atom is over its
threshold, or U is over 1); every decision is stored with its state, and the user's answers relabel
them — a dismissed alert becomes `suppress`, an approved one `alert` — so the pattern
a user keeps dismissing is suppressed after the next retrain.
"""

import math
import time

from ..atom import Atom, AtomSpec

BUILTIN_PREFIX = {"pulse": "P", "rhythm": "R", "drift": "D"}
OWN_FIELDS = ("U", "H", "W", "act")          # Nerve's fields that are not an atom's
RATIO_SPEC = (0, 3, 6, "optional")          # score / threshold in 0.5-wide buckets; ≥ 3 is the top one
DECIDING_ACTIONS = ("ok", "alert", "suppress")
MIN_DECISIONS = 30                           # labelled history before the model may decide…
MIN_ANSWERS = 3                              # … and at least this many answers from the user
SUPPRESS_CONFIDENCE = 0.7                    # how sure the model must be to silence an alert
ANSWER_WEIGHT = 5                            # an answer counts as this many rule-labelled decisions


def prefix_of(atom):
    """Nerve's token prefix for an atom: P, R, D for the built-ins, the name in capitals otherwise."""
    return BUILTIN_PREFIX.get(atom) or atom.upper()


def actions(atoms):
    return list(DECIDING_ACTIONS) + [f"retrain:{a}:7d" for a in atoms] + [f"spawn:{a}" for a in atoms]


def spec(atoms):
    """Nerve's AtomSpec for a set of atom names (built-in and user-declared)."""
    schema = {prefix_of(a): RATIO_SPEC for a in atoms}
    schema.update({"U": RATIO_SPEC, "H": (0, 24, 8), "W": (0, 7, 7), "act": {"labels": actions(atoms)}})
    return AtomSpec(name="nerve", schema=schema, n_embd=16, n_layer=1, n_head=4, block_size=16,
                    context=0, steps=300)


def state_of(scores, atoms, ts):
    """Nerve's state: each atom's score / threshold (None when it has no score), the highest
    likelihood / alert level (None when no atom has one yet), hour, weekday."""
    t = time.localtime(ts)
    state = {prefix_of(a): None for a in atoms}
    unusual = []
    for s in scores:
        if s.atom in atoms and math.isfinite(s.threshold) and s.threshold > 0:
            state[prefix_of(s.atom)] = s.score / s.threshold
            if s.likelihood is not None and s.unusual_at:
                unusual.append(s.likelihood / s.unusual_at)
    state.update({"U": max(unusual) if unusual else None, "H": t.tm_hour + t.tm_min / 60, "W": t.tm_wday})
    return state


def rule(state):
    """Cold start: alert when any atom is over its threshold or the recent readings are unusual."""
    over = [v for k, v in state.items() if k not in ("H", "W") and v is not None and v > 1.0]
    return "alert" if over else "ok"


def decide(nerve, state):
    """(action, probability, source) for one cycle.

    The rule says whether anything is over its threshold. When it is and Nerve's model
    is trained, the model chooses between `alert` and `suppress` — the most probable
    of the two after the state tokens, but `suppress` only when it is at least
    SUPPRESS_CONFIDENCE sure: silencing a real incident costs more than one extra
    message. Nerve never turns a reading nobody flagged into an alert, nor an
    over-threshold one into a silent `ok`: what it learns is which alerts you do not want.
    """
    flagged = rule(state)
    if flagged == "ok" or nerve is None or not nerve.trained:
        return flagged, 1.0, "rule"
    language = nerve.language
    ids = language.encode(dict(state, act="ok"))[:-1]  # the state tokens, without an action
    decoder = nerve.model.decoder()
    for token in ids:
        logits = decoder.step(token)
    alert, suppress = logits[language.index["alert"]], logits[language.index["suppress"]]
    p_suppress = 1 / (1 + math.exp(alert - suppress))
    if p_suppress >= SUPPRESS_CONFIDENCE:
        return "suppress", p_suppress, "model"
    return "alert", 1 - p_suppress, "model"


def training_history(labelled):
    """Nerve's training rows from stored decisions: answers override the decided action.

    A dismissed alert becomes `suppress` (reward −1), an approved one `alert` (+1);
    answered rows are repeated ANSWER_WEIGHT times so a few answers outweigh the rule.
    Decisions typed in by hand (source 'inject') count only when answered.
    """
    rows = []
    for d in labelled:
        action = {"dismiss": "suppress", "approve": "alert"}.get(d["verdict"], d["action"])
        if action not in DECIDING_ACTIONS or (d["source"] == "inject" and d["verdict"] is None):
            continue
        row = {"ts": d["ts"], "values": dict(d["state"], act=action), "synthetic": False}
        rows += [row] * (ANSWER_WEIGHT if d["verdict"] else 1)
    return rows


def ready(decisions, answers):
    """Enough labelled history (decisions stored, of them answered) for the model to take over."""
    return decisions >= MIN_DECISIONS and answers >= MIN_ANSWERS


def train(atoms, labelled, path, engine="fast", seed=42, steps=None, progress=None):
    """Train Nerve on the labelled decisions; returns the trained Atom."""
    nerve = Atom(spec(atoms), engine=engine)
    # No hold-out: Nerve has no threshold to calibrate, and the newest rows are the
    # user's latest answers — exactly what it must learn from. A decision stored before
    # an atom was declared (or before U) reads it as absent: its fields are optional.
    nerve.train(training_history(labelled), path, steps=steps, seed=seed, progress=progress, holdout=0)
    return nerve
