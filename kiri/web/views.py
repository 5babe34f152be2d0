"""What each page of the dashboard shows, read from the store: plain dicts, no HTML.

Every read is bounded: a window of time (the last day or week) read newest first with a
LIMIT the window implies, or the newest N rows. However long the history, a page never
loads more than ROWS_MOST readings per atom.
"""

from .. import status
from ..atoms import nerve, verbs
from ..atoms.atom import CLOCK
from ..atoms.score import Score
from ..core.weights import WeightsError

WINDOWS = {"day": 86400, "week": 7 * 86400}
ROWS_MOST = 20000    # readings (or scores) of one atom one page may read: a week at 30 s
ALERTS_SHOWN = 200
DECISIONS_SHOWN = 100


def window(name):
    """('day', seconds) or ('week', seconds); anything else is the day."""
    return (name, WINDOWS[name]) if name in WINDOWS else ("day", WINDOWS["day"])


def rows_for(span, interval):
    """The LIMIT that holds `span` seconds of an atom's rows: two per interval (the daemon's
    score of a reading and `kiri score`'s again), and some slack."""
    return min(ROWS_MOST, int(2 * span / interval) + 50)


def scores_since(store, atom, interval, since, span):
    """The atom's scores with ts >= since, oldest first."""
    return store.latest_scores(atom, limit=rows_for(span, interval), since=since)[::-1]


def surprise_series(scores):
    """[(ts, score ÷ threshold)] and [(ts, likelihood)] of stored scores (none where it has no value)."""
    ratios = [(s["ts"], s["score"] / s["threshold"]) for s in scores if s["threshold"]]
    likelihoods = [(s["ts"], s["likelihood"]) for s in scores if s["likelihood"] is not None]
    return ratios, likelihoods


def alert_atoms(alert):
    """The atoms an alert flagged: every atom among its scores, else the one it is filed under."""
    return [s.get("atom", "?") for s in alert["details"].get("scores") or []] or [alert["atom"]]


def overview(settings, store, now, span):
    """The host, the daemon, each atom's phase and latest verdict with its surprise over
    the window, and the alerts of the window."""
    info = status.collect_status(settings, store, now)
    since = now - span
    view = {"status": info, "atoms": {}, "alerts": [], "nerve": None, "since": since, "now": now,
            "likelihood_alert": settings.fraction("likelihood_alert")}
    if info.get("database_damage"):   # what it holds cannot be trusted: say that, and only that
        return view
    view.update(alerts=store.alerts(active_since=since, limit=ALERTS_SHOWN), nerve=nerve_counts(settings, store))
    for name, module in verbs.all_atoms(settings).items():
        ratios, likelihoods = surprise_series(scores_since(store, name, module.SPEC.interval, since, span))
        view["atoms"][name] = dict(info["atoms"][name], ratios=ratios, likelihoods=likelihoods,
                                   max_gap=module.SPEC.max_gap,
                                   alerts=[a for a in view["alerts"] if name in alert_atoms(a)])
    return view


def atom_page(settings, store, name, now, span, at=None):
    """One atom: its fields over the window with the anomalous readings, the chosen reading's
    (`at`, a time within the window; else the latest) explanation, and its model. None for
    an atom this installation does not run."""
    modules = verbs.all_atoms(settings)
    if name not in modules:
        return None
    spec = modules[name].SPEC
    since = now - span
    limit = rows_for(span, spec.interval)
    observations = store.observations(name, since=since, limit=limit)
    scores = scores_since(store, name, spec.interval, since, span)
    ratios, likelihoods = surprise_series(scores)
    return {"name": name, "spec": spec, "since": since, "now": now, "observations": observations,
            "fields": [f for f in spec.schema if not (spec.clock and f in CLOCK)],
            "anomalies": [Score.from_json(s) for s in scores if s["verdict"] == "anomaly"],
            "anomaly_ts": [s["ts"] for s in scores if s["verdict"] == "anomaly"],
            "ratios": ratios, "likelihoods": likelihoods, "max_gap": spec.max_gap,
            "reading": chosen_reading(store, name, scores, at),
            "alerts": [a for a in store.alerts(active_since=since, limit=ALERTS_SHOWN) if name in alert_atoms(a)],
            "model": model_facts(settings, store, modules[name], now),
            "likelihood_alert": settings.fraction("likelihood_alert")}


def chosen_reading(store, name, scores, at):
    """(ts, Score) of the score nearest `at` among `scores`; without `at`, the atom's latest."""
    if at is not None and scores:
        row = min(scores, key=lambda s: abs(s["ts"] - at))
    else:
        latest = store.latest_scores(name, limit=1)
        if not latest:
            return None
        row = latest[0]
    return {"ts": row["ts"], "score": Score.from_json(row), "latest": at is None}


def model_facts(settings, store, module, now):
    """What `kiri status` says of the atom, and the span of readings its model learned from."""
    name = module.SPEC.name
    entry = status.collect_atoms_status(settings, store, now)["atoms"][name]
    try:
        atom = verbs.load_atom(module, settings)
    except WeightsError:
        return entry
    if atom.trained:
        trained_on = atom.weights.trained_on
        entry.update(from_ts=trained_on.get("from_ts"), to_ts=trained_on.get("to_ts"),
                     threshold_info=dict(atom.weights.threshold))
    return entry


def alerts_page(store):
    return {"alerts": store.alerts(limit=ALERTS_SHOWN)}


def alert_page(settings, store, alert_id):
    """One alert with its Scores, or None."""
    alert = store.alert(alert_id)
    if alert is None:
        return None
    scores = [Score.from_json(s) for s in alert["details"].get("scores") or []]
    return {"alert": alert, "scores": scores, "labels": field_labels(settings)}


def field_labels(settings):
    """{atom: {field: (name, unit[, states])}} of every atom this installation runs."""
    return {name: module.SPEC.labels for name, module in verbs.all_atoms(settings).items()}


def nerve_counts(settings, store):
    decisions, answered = store.decision_counts()
    return {"trained": settings.weights_path("nerve").exists(), "decisions": decisions, "answered": answered,
            "ready": nerve.ready(decisions, answered), "need_decisions": nerve.MIN_DECISIONS,
            "need_answers": nerve.MIN_ANSWERS}


def nerve_page(settings, store):
    """Nerve's readiness, its newest decisions, the answers it learns from, and the
    situations it may keep quiet about: those of the alerts you dismissed."""
    decisions = store.decisions(limit=DECISIONS_SHOWN)[::-1]
    dismissed = store.alerts(state="dismissed", limit=ALERTS_SHOWN)
    approved = store.alerts(state="approved", limit=ALERTS_SHOWN)
    answers = sorted(dismissed + approved, key=lambda a: a["feedback"]["ts"], reverse=True)
    quiet = {}
    for alert in dismissed:   # newest first, so each situation keeps its newest alert
        entry = quiet.setdefault(alert["situation"], {"situation": alert["situation"], "count": 0, "alert": alert})
        entry["count"] += 1
    prefixes = {nerve.prefix_of(name): name for name in verbs.all_atoms(settings)}
    if nerve.HOSTS in prefixes:   # one field for every watched host: the highest of them
        prefixes[nerve.HOSTS] = "watched hosts"
    return {"counts": nerve_counts(settings, store), "decisions": decisions, "answers": answers,
            "quiet": list(quiet.values()), "suppressed": [d for d in decisions if d["action"] == "suppress"],
            "prefixes": prefixes, "labels": field_labels(settings),
            "confidence": nerve.SUPPRESS_CONFIDENCE}
