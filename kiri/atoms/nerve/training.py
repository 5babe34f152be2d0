"""Nerve learns from the owner: every decision is stored with its state, and the answers
relabel them — a dismissed alert becomes `suppress`, an approved one `alert` — so the
pattern a user keeps dismissing is suppressed after the next retrain.
"""

from ...errors import KiriError
from ..atom import MIN_OBSERVATIONS, Atom
from .schema import spec

ANSWER_WEIGHT = 5                            # an answer counts as this many rule-labelled decisions
# The decisions Nerve's model makes: whether to alert about what the rule flagged. A cycle
# with nothing flagged is `ok` whatever the model thinks (decision.decide), so those rows
# teach it nothing it uses: thousands of them a week drowned the few answers.
FLAGGED = ("alert", "suppress")


def training_history(labelled):
    """Nerve's training rows from stored decisions: answers override the decided action.

    Only flagged decisions (alert or suppress) are rows: the model chooses between the two.
    A dismissed alert becomes `suppress` (reward −1), an approved one `alert` (+1), and so
    do the repeats that merged into it; answered rows are repeated ANSWER_WEIGHT times
    so a few answers outweigh the rule.
    Decisions the model made, or typed in by hand (source 'inject'), count only when answered.
    """
    rows = []
    for d in labelled:
        action = {"dismiss": "suppress", "approve": "alert"}.get(d["verdict"], d["action"])
        # Unanswered, only the rule's own decisions are labels: the model's would teach it
        # its own guesses (a suppress learned from a suppress), and injected ones are made up.
        if action not in FLAGGED or (d["source"] != "rule" and d["verdict"] is None):
            continue
        row = {"ts": d["ts"], "values": dict(d["state"], act=action), "synthetic": False}
        # A repeat merged into an answered alert takes its answer, once: the owner answered
        # the alert, not each of its repeats, and a day-long incident must not outweigh the rest.
        rows += [row] * (ANSWER_WEIGHT if d["verdict"] and not d.get("repeat_of") else 1)
    return rows


def train(atoms, labelled, path, engine="fast", seed=42, steps=None, progress=None):
    """Train Nerve on the labelled decisions; returns the trained Atom."""
    if not labelled:
        raise KiriError("nerve: no decisions stored yet; let the daemon run a few cycles first")
    history = training_history(labelled)
    if len(history) < MIN_OBSERVATIONS:
        answers = sum(1 for d in labelled if d["verdict"])
        raise KiriError(f"nerve: {len(labelled)} decisions ({answers} answered) give {len(history)} training rows; "
                        f"need at least {MIN_OBSERVATIONS} (an answer counts {ANSWER_WEIGHT}x, an injected "
                        f"decision only once answered)")
    nerve = Atom(spec(atoms), engine=engine)
    # No hold-out: Nerve has no threshold to calibrate, and the newest rows are the
    # user's latest answers — exactly what it must learn from. A decision stored before
    # an atom was declared (or before U) reads it as absent: its fields are optional.
    nerve.train(history, path, steps=steps, seed=seed, progress=progress, holdout=0)
    return nerve
