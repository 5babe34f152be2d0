"""Nerve's decision: the rule at cold start, the model once it has learned from answers.

Until Nerve has enough labelled history, a plain rule decides (alert when any atom is
over its threshold, or U is over 1). After that the model chooses between alert and
suppress for what the rule flags: what it learns is which alerts the owner does not want.
"""

import math

MIN_DECISIONS = 30                           # labelled history before the model may decide…
MIN_ANSWERS = 3                              # … and at least this many answers from the user
SUPPRESS_CONFIDENCE = 0.7                    # how sure the model must be to silence an alert


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


def ready(decisions, answers):
    """Enough labelled history (decisions stored, of them answered) for the model to take over."""
    return decisions >= MIN_DECISIONS and answers >= MIN_ANSWERS
