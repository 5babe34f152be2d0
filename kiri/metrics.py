"""GET /metrics: what KIRI knows, in Prometheus' text exposition format 0.0.4.

    text = render(settings, store)     # served with CONTENT_TYPE

A scrape reads what `kiri status` reads (status.collect_atoms_status) plus two small
counts, so it costs about what one `kiri status` costs: tens of milliseconds for months
of readings. A long-lived `kiri serve` reads an atom's weights file only when it has
changed (status.model_status): a model is most of that cost, 10 ms an atom. Every family
carries `host` (for an atom, the machine it watches: settings.host_of), so one Prometheus
can scrape many KIRIs.

The counts of stored rows (readings, alerts, answers) are gauges, not counters: retention
deletes old readings and unanswered alerts, and an answer moves an alert from open to
approved, so they go down as well as up. A counter that went down would read as a restart
to Prometheus, and rate() would show the whole count at once.
"""

import math
import sqlite3
import time

from .status import collect_atoms_status
from .store import VERDICTS

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

PHASES = ("cold", "learning", "watching")
READING_KINDS = ("real", "synthetic", "injected")   # the keys of store.count_observations
ALERT_STATES = ("open", "approved", "dismissed")
DAEMON_STATES = ("running", "stopped", "stale", "never", "unknown")   # lock.daemon_status, status.daemon_state

# Every family KIRI exposes, in the order they are written: name -> (type, help).
FAMILIES = {
    "kiri_atom_phase": ("gauge", "1 for the atom's current phase (cold: collecting; learning: trains at the next "
                                 "cycle; watching: a model scores every reading), 0 for the others."),
    "kiri_atom_readings": ("gauge", "Readings of the atom in the store now, by kind (real, synthetic, injected); "
                                    "retention deletes old ones."),
    "kiri_atom_threshold": ("gauge", "The current model's threshold: a reading whose score is above it is an anomaly "
                                     "(nats)."),
    "kiri_atom_heldout_false_alarm_ratio": ("gauge", "Share of the held-out readings the current model's threshold "
                                                     "called anomalies when it was trained (0-1)."),
    "kiri_atom_last_training_timestamp_seconds": ("gauge", "When the current model was trained (Unix time)."),
    "kiri_atom_score": ("gauge", "The latest reading's score: its mean surprise per token (nats)."),
    "kiri_atom_score_ratio": ("gauge", "The latest reading's score divided by the threshold it was judged by."),
    "kiri_atom_anomaly": ("gauge", "1 when the latest reading's score is above the threshold it was judged by, "
                                   "else 0."),
    "kiri_atom_likelihood": ("gauge", "How unusual the atom's recent readings are together (0-1); it is unusual "
                                      "above likelihood_alert."),
    "kiri_atom_score_timestamp_seconds": ("gauge", "The latest score's time (Unix time): its reading's, or when "
                                                   "`kiri <atom> score` made it."),
    "kiri_atom_token_surprise": ("gauge", "The latest reading's surprise in one field: -log p of its token (nats)."),
    "kiri_alerts": ("gauge", "Alerts in the store now, by state (open: waiting for an answer); retention deletes "
                             "old unanswered ones."),
    "kiri_feedback_answers": ("gauge", "Answers to alerts in the store, by verdict (a second answer to an alert "
                                       "replaces its first)."),
    "kiri_daemon_state": ("gauge", "1 for the daemon's state (running, stopped, stale: killed without recording "
                                   "its stop, never, unknown), 0 for the others."),
    "kiri_last_cycle_timestamp_seconds": ("gauge", "When the daemon's last finished cycle started (Unix time)."),
    "kiri_last_cycle_errors": ("gauge", "Errors in the daemon's last finished cycle (kiri status names them)."),
    "kiri_outbox_pending": ("gauge", "Messages waiting to be sent to a sink."),
    "kiri_database_readable": ("gauge", "1 when the store could be read for this scrape, 0 when reading it failed "
                                        "(kiri check says why)."),
    "kiri_database_size_bytes": ("gauge", "Size of kiri.db and its write-ahead log."),
}


def render(settings, store, now=None):
    """The whole exposition text, one scrape."""
    now = time.time() if now is None else now
    try:
        # `kiri status`' reads. Per atom: its weights file, its newest score (one step down the
        # (atom, ts) index) and its counts, a walk of its readings along that index: the one cost
        # that grows with history, bounded by retain_days (~10 ms for 90 days of 5-minute readings).
        # Not status.collect_status: its quick_check reads every page of the file, every scrape.
        status = collect_atoms_status(settings, store, now)
        samples = (list(atoms_samples(settings, status["atoms"])) + list(alert_samples(settings, store, status["atoms"]))
                   + list(loop_samples(settings, store, status)))
        readable = 1
    except sqlite3.DatabaseError:   # a damaged file: say so, rather than fail the scrape or print half-read numbers
        samples, readable = [], 0
    here = {"host": settings.host}
    samples += [("kiri_database_readable", here, readable), ("kiri_database_size_bytes", here, store.size_bytes())]
    return exposition(samples)


# -- samples: (family name, labels, value) -------------------------------------------

def atoms_samples(settings, atoms):
    for name, entry in atoms.items():
        labels = {"host": settings.host_of(name), "atom": name}
        yield from atom_samples(labels, entry)
        if "last_score" in entry:
            yield from score_samples(labels, entry["last_score"])


def atom_samples(labels, entry):
    """What an atom is: its phase, its readings, its model (when it has one)."""
    for phase in PHASES:
        yield "kiri_atom_phase", dict(labels, phase=phase), int(entry["phase"] == phase)
    for kind in READING_KINDS:
        yield "kiri_atom_readings", dict(labels, kind=kind), entry["observations"][kind]
    model = {"kiri_atom_threshold": entry.get("threshold"),
             "kiri_atom_heldout_false_alarm_ratio": entry.get("false_alarm_rate"),
             "kiri_atom_last_training_timestamp_seconds": entry.get("trained_at")}
    yield from ((family, labels, value) for family, value in model.items() if value is not None)


def score_samples(labels, score):
    """The latest reading's score (status' last_score: Score.to_json with the row's ts)."""
    threshold = score["threshold"]   # None when the model has no finite threshold
    yield "kiri_atom_score", labels, score["score"]
    yield "kiri_atom_anomaly", labels, int(threshold is not None and score["score"] > threshold)
    if threshold is not None and score["ratio"] is not None:
        yield "kiri_atom_score_ratio", labels, score["ratio"]
    if score["likelihood"] is not None:
        yield "kiri_atom_likelihood", labels, score["likelihood"]
    yield "kiri_atom_score_timestamp_seconds", labels, score["ts"]
    for field, surprise in field_surprises(score["tokens"]).items():
        yield "kiri_atom_token_surprise", dict(labels, field=field), surprise


def field_surprises(tokens):
    """{field: surprise} of a score's tokens. A reading has one token per field; should one ever
    have two, the higher surprise stands, as a label set may appear only once."""
    found = {}
    for t in tokens:
        if t.get("field") is not None and t.get("surprise") is not None:
            found[t["field"]] = max(t["surprise"], found.get(t["field"], -math.inf))
    return found


def alert_samples(settings, store, atoms):
    """Alerts by atom and state; every atom this installation runs has all three states, 0 or not,
    so `kiri_alerts{state="open"} > 0` never meets a missing series."""
    counts = dict.fromkeys(((atom, state) for atom in atoms for state in ALERT_STATES), 0)
    counts.update(store.alert_counts())
    for (atom, state), n in sorted(counts.items()):
        yield "kiri_alerts", {"host": settings.host_of(atom), "atom": atom, "state": state}, n


def loop_samples(settings, store, status):
    """The loop around the atoms: the daemon, its last cycle, answers, the outbox."""
    here = {"host": settings.host}
    for state in DAEMON_STATES:
        yield "kiri_daemon_state", dict(here, state=state), int(status["daemon"]["state"] == state)
    cycle = status["last_cycle"]
    if isinstance(cycle, dict) and cycle.get("ts") is not None:   # none before the daemon's first cycle
        yield "kiri_last_cycle_timestamp_seconds", here, cycle["ts"]
        yield "kiri_last_cycle_errors", here, len(cycle.get("errors") or [])
    answers = dict.fromkeys(VERDICTS, 0)
    answers.update(store.answer_counts())
    for verdict, n in sorted(answers.items()):
        yield "kiri_feedback_answers", dict(here, verdict=verdict), n
    yield "kiri_outbox_pending", here, status["outbox_pending"]


# -- the two counts the store has no method for (see Store.alerts, Store.add_feedback) --------

# -- the text format ------------------------------------------------------------------

def exposition(samples):
    """The text of (family, labels, value) samples: each family once, in FAMILIES' order, its
    # HELP and # TYPE first; a family with no samples is left out. Ends with a newline."""
    by_family = {name: [] for name in FAMILIES}
    for family, labels, value in samples:
        by_family[family].append(f"{family}{label_text(labels)} {number(value)}")
    lines = []
    for name, found in by_family.items():
        if found:
            kind, text = FAMILIES[name]
            lines += [f"# HELP {name} {escape_help(text)}", f"# TYPE {name} {kind}"] + found
    return "\n".join(lines) + "\n"


def label_text(labels):
    return "{" + ",".join(f'{key}="{escape_label(value)}"' for key, value in labels.items()) + "}"


def escape_label(value):
    """A label value as the format quotes it. Host names come from users; a name the environment
    brought in as bytes that are not UTF-8 (surrogates) cannot be sent, so it becomes '?'."""
    text = str(value).encode("utf-8", "replace").decode("utf-8")
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text):
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def number(x):
    """A sample value as Go's ParseFloat reads it: NaN, +Inf and -Inf by those names."""
    if isinstance(x, int):   # bool too: True is 1
        return str(int(x))
    x = float(x)
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    return repr(x)
