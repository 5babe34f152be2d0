"""Alerts: the one shape an alert has, what it is about, when a repeat is the same thing
again, and the words a person reads — the same for every sink.

    alert = Alert(id, message=format_alert(scores, labels, host), situation=situation_of(scores), …)

An alert's *situation* names the flagged atoms and, for each, the fields its surprising
tokens are in and which way they are off ('pulse:C>+M>,rhythm:I<'); while an alert's
situation goes on (a repeat within the cooldown of the last one), the same thing again
(same_situation) merges into it instead of making another.
Which tokens are surprising is the Score's rule (atoms/score.py), so the key, the
words and the table in `kiri <atom> score` always name the same tokens.
"""

import math
from dataclasses import dataclass, field

from .atoms.score import Score

MAX_LINES = 10   # surprising readings listed per atom; the rest are counted
ANSWERS = ("Approve if it mattered; Dismiss if not, and KIRI learns to keep quiet about "
           "ones like it.")


@dataclass
class Alert:
    id: int
    message: str
    atom: str = "nerve"                          # the first flagged atom
    host: str = ""
    ts: float = 0.0
    situation: str = ""
    scores: list = field(default_factory=list)   # Score objects of the flagged atoms

    def to_json(self):
        return {"id": self.id, "ts": self.ts, "host": self.host, "atom": self.atom, "message": self.message,
                "situation": self.situation, "scores": [s.to_json() for s in self.scores]}

    @classmethod
    def from_json(cls, d):
        """An Alert from to_json(), a stored alert row (scores under "details"), or an outbox
        payload of an older KIRI ({"text", "alert_id"})."""
        details = d.get("details") or {}
        scores = d.get("scores", details.get("scores")) or []
        return cls(d.get("id", d.get("alert_id")), d.get("message", d.get("text")), d.get("atom") or "nerve",
                   d.get("host", details.get("host")) or "", d.get("ts") or 0.0, d.get("situation") or "",
                   [Score.from_json(s) for s in scores])


# -- the situation ---------------------------------------------------------------------

def situation_of(scores):
    """What an alert is about: which atoms, and for each which fields are off and which way
    ('pulse:C>+M>,rhythm:I<': CPU and memory above what was expected, idle below).

    Fields and directions, not tokens: a disk filling over a day moves from D6 to D7 to D9
    and is one thing happening; memory falling instead of rising is another.
    """
    parts = []
    for s in sorted(scores, key=lambda s: s.atom):
        off = sorted(set(_field_direction(t) for t in _causes(s)))
        parts.append(s.atom + (":" + "+".join(off) if off else ""))
    return ",".join(parts) or "unknown"


def _causes(score):
    """The surprising tokens that make a reading over its threshold: those at least half as
    surprising as its most surprising one; no tokens for an atom flagged by its likelihood alone.

    A token far less surprising than the top one is a neighbouring field's expectation
    shifting around it — memory leaking all morning made CPU read lower than the model
    expected at ten and higher at half past eleven, 2 nats against the memory's 20 — not a
    second thing happening. And when the reading itself is under the threshold, what is
    unusual is the recent readings together (the likelihood, often an incident its window
    still holds), not whichever of this reading's tokens is a little surprising.
    """
    if score.score <= score.threshold:
        return []
    surprising = score.surprising()
    top = max((t.get("surprise") or 0.0 for t in surprising), default=0.0)
    return [t for t in surprising if (t.get("surprise") or 0.0) >= top / 2]


def _field_direction(token):
    """'C>' for C9 where C1 was expected, 'C<' for C0 where C5 was, 'W!' for a label."""
    field = token.get("field") or str(token.get("token", "?"))[:1]
    came, expected = _bucket(token.get("token"), field), _bucket(token.get("expected"), field)
    if came is None or expected is None or came == expected:
        return field + "!"
    return field + (">" if came > expected else "<")


def _bucket(name, field):
    """A bucket token's place in its field (C9 → 9, Q< → -1, Q> → inf); None for a label."""
    rest = str(name or "")[len(field):] if str(name or "").startswith(field) else None
    if rest == "<":
        return -1
    if rest == ">":
        return math.inf
    return int(rest) if rest and rest.isdigit() else None


def same_situation(earlier, new):
    """Whether a new situation is the earlier one happening again: the same atoms, and for
    each atom at least half of its off fields in common (Jaccard >= 0.5) — or, for an atom
    the new one flags by its likelihood alone (no surprising token), nothing more.

    Not equality: two readings of one incident differ in which fields just cross the
    surprising line, so an exact key sent a second alert for the same CPU-and-memory spike.
    And the likelihood averages the last readings, so it still flags an incident its window
    holds after the incident's own readings are back to normal: an aftershock, not news.
    """
    earlier, new = _situation_tokens(earlier), _situation_tokens(new)
    if earlier.keys() != new.keys():
        return False
    for atom, tokens in new.items():
        union = earlier[atom] | tokens
        if tokens and 2 * len(earlier[atom] & tokens) < len(union):
            return False
    return True


def covered_parts(active, situation):
    """{atom: the alert among `active` (rows, newest first) whose situation has that atom's
    part of `situation` (same_situation), or None where that part is news}.

    Atom by atom, because atoms cross their lines independently: a load storm that goes
    on while task flow is flagged too is still the load storm, and the task flow may
    already have its own alert — or, if it has none, is news about itself alone.
    """
    found = {}
    for atom, part in _situation_tokens(situation).items():
        one = f"{atom}:{'+'.join(sorted(part))}" if part else atom
        found[atom] = next((a for a in active if any(same_situation(p, one) for p in _parts(a["situation"]))), None)
    return found


def _parts(situation):
    """'pulse:C>+M>,rhythm' → ['pulse:C>+M>', 'rhythm']."""
    return situation.split(",")


def like_dismissed(dismissed, flagged):
    """Whether what is flagged now (Scores) is like what the owner dismissed (alert rows or
    to_json()s): the same situation as at least one of them, and each surprising token no
    further from what was expected than a token of those alerts in the same field, the
    same way. That is what KIRI keeps quiet about.

    The situation alone is too coarse to silence by: the nightly backup's CPU at 70 %
    and a runaway's 97 % are both "CPU above what was expected", and dismissing the
    first must not hide the second. Equal tokens would be too fine: a noisy field moves
    a bucket or two from one dismissed alert to the next. Each field's reach is the
    furthest any dismissed alert of the situation went in it: a focus block two buckets
    long with a break one bucket short, and then one bucket long with a break two short,
    both dismissed, have taught that either field this far off is not worth a message.
    """
    situation = situation_of(flagged)
    same = [d for d in dismissed if same_situation(d["situation"], situation)]
    if not same:
        return False
    reach = {}   # (atom, field, direction) -> the furthest a dismissed alert of this situation went
    for alert in same:
        for s in Alert.from_json(alert).scores:
            for t in s.surprising():
                key = (s.atom, _field_direction(t))
                reach[key] = max(reach.get(key, -1), _distance(t))
    return all(_distance(t) <= reach.get((s.atom, _field_direction(t)), -1)
               for s in flagged for t in s.surprising())


def _distance(token):
    """How many buckets a token is from the expected one (inf beyond the learned range; 0
    for a label, whose field and direction say everything)."""
    field = token.get("field") or str(token.get("token", "?"))[:1]
    came, expected = _bucket(token.get("token"), field), _bucket(token.get("expected"), field)
    if came is None or expected is None:
        return 0
    return abs(came - expected)


def _situation_tokens(situation):
    """'pulse:C9+M9,rhythm' → {'pulse': {'C9', 'M9'}, 'rhythm': set()}."""
    atoms = {}
    for part in situation.split(","):
        atom, _, tokens = part.partition(":")
        atoms[atom] = set(tokens.split("+")) - {""}
    return atoms


# -- the words -------------------------------------------------------------------------

def format_alert(scores, labels=None, host=None):
    """An alert in words, plain text, from the flagged atoms' Scores.

    labels: {"C": ("CPU", "%"), …} for every atom, or {"pulse": {"C": ("CPU", "%")}, …} per
    atom; a third element names the states of a field that has few, e.g. ("network", "",
    {0: "down", 1: "up"}). Each surprising reading is one line, "CPU 95% (usually 10–20%)";
    a likelihood over its level adds that the recent readings, together, are unusual.
    The last line says what Approve and Dismiss do.
    """
    if not scores:
        raise ValueError("format_alert: no scores to describe")
    labels = labels or {}
    blocks = []
    for i, score in enumerate(scores):
        per_atom = labels.get(score.atom)
        field_labels = per_atom if isinstance(per_atom, dict) else labels
        numbers = [f"score {score.score:.1f}"]
        if 0 < score.threshold < math.inf:
            numbers.append(f"{score.ratio:.1f}× its threshold")
        head = f"{score.atom} is unusual ({', '.join(numbers)})"
        if i == 0:
            head = f"KIRI alert{' on ' + host if host else ''}: {head}"
        surprising = score.surprising()
        lines = [head] + [token_line(t, field_labels) for t in surprising[:MAX_LINES]]
        if len(surprising) > MAX_LINES:
            lines.append(f"…and {len(surprising) - MAX_LINES} more unusual readings")
        if score.likelihood is not None and score.unusual_at and score.likelihood > score.unusual_at:
            lines.append("its recent readings are more surprising than usual, together "
                         f"(likelihood {score.likelihood:.2f}, flagged above {score.unusual_at:.2f})")
        elif not surprising:
            lines.append("no single reading stands out; together they are unusual")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n\n" + ANSWERS


def token_line(token, labels):
    """'CPU 95% (usually 10–20%)', 'network down (usually up)', or without a value or the
    expected range, 'CPU (C9, expected C1)'."""
    label = labels.get(token.get("field")) or (token.get("field") or "", "")
    name, unit, states = (tuple(label) + ({},))[:3]
    said = _value_words(token.get("value"), unit, states)
    usual = _range_words(token["expected_range"], unit, states) if token.get("expected_range") else None
    words = " ".join(p for p in (name, said) if p)
    if said is not None and usual is not None:
        return f"{words} (usually {usual})"
    code, expected = str(token.get("token", "?")), token.get("expected")
    why = f"{code}, expected {expected}" if expected not in (None, "", code) else code
    return f"{words} ({why})" if words else why


def _value_words(value, unit, states):
    if value is None:
        return None
    try:
        if float(value) in states:
            return states[float(value)]
        return _with_unit(_number(value), unit)
    except (TypeError, ValueError, OverflowError):
        return str(value)


def _range_words(expected_range, unit, states):
    lo, hi = expected_range
    if states:
        return states.get(math.ceil(lo))   # the whole number a state's bucket holds: [0.5, 1] is 1
    return _with_unit(f"{_number(lo)}–{_number(hi)}", unit)


def _number(x):
    x = float(x)
    if x == int(x) and abs(x) < 1e15:
        return "%d" % x
    digits = 0 if abs(x) >= 100 else 1 if abs(x) >= 10 else 2
    return ("%.*f" % (digits, x)).rstrip("0").rstrip(".")


def _with_unit(value, unit):
    if not unit:
        return value
    # "95%", "20°C" stick to the number; words get a space: "12 GB", "3 commits".
    return value + unit if not unit[0].isalnum() else value + " " + unit
