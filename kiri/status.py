"""`kiri status`: what a person checks first — is each atom trained, is the daemon alive, what happened last."""

import math
import time

from .atoms import verbs
from .atoms.score import Score
from .core.weights import WeightsError
from .daemon import HEARTBEAT_KEY, LAST_CYCLE_KEY


def collect_status(settings, store, now=None):
    """Everything `kiri status` shows, as one JSON-able dict."""
    now = time.time() if now is None else now
    atoms = {}
    for name, module in verbs.all_atoms(settings).items():
        entry = {"observations": store.count_observations(name), "trained": False}
        try:
            atom = verbs.load_atom(module, settings)
        except WeightsError as e:
            entry["weights_error"] = str(e)
            atom = None
        if atom is not None and atom.trained:
            path = settings.weights_path(name)
            entry.update(trained=True, trained_at=path.stat().st_mtime if path.exists() else None,
                         threshold=atom.threshold if math.isfinite(atom.threshold) else None,
                         steps=atom.weights.step, note=atom.weights_note)
        source_error = store.get_kv(f"atom.{name}.source")
        if source_error:
            entry["source"] = source_error
        latest = store.latest_scores(name, limit=1)
        if latest:
            entry["last_score"] = dict(Score.from_json(latest[0]).to_json(), ts=latest[0]["ts"],
                                       verdict=latest[0]["verdict"])
        atoms[name] = entry
    heartbeat = store.get_kv(HEARTBEAT_KEY)
    return {
        "host": settings.host,
        "home": str(settings.home),
        "atoms": atoms,
        "nerve_trained": settings.weights_path("nerve").exists(),
        "heartbeat_age": None if heartbeat is None else now - heartbeat,
        "last_cycle": store.get_kv(LAST_CYCLE_KEY),
        "pending_alerts": [a for a in store.alerts(state="open", limit=20)],
        "outbox_pending": store.outbox_pending(),
    }


def ago(seconds):
    if seconds is None:
        return "never"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit} ago"
    return f"{seconds:.0f} s ago"


def format_status(info, now=None):
    now = time.time() if now is None else now
    lines = [f"KIRI on {info['host']}, home {info['home']}",
             f"daemon heartbeat: {ago(info['heartbeat_age'])}"]
    for name, a in info["atoms"].items():
        obs = a["observations"]
        count = f"{obs['real']} real + {obs['synthetic']} synthetic readings"
        if obs.get("injected"):
            count += f" (and {obs['injected']} injected)"
        if a.get("weights_error"):
            state = f"weights unusable: {a['weights_error']}"
        elif a["trained"]:
            threshold = "none" if a["threshold"] is None else f"{a['threshold']:.3f}"
            state = f"trained {ago(now - a['trained_at']) if a.get('trained_at') else ''}, threshold {threshold}"
        else:
            state = "no weights yet"
        line = f"  {name:<8} {state}; {count}"
        if a.get("source"):
            line += f"; source unavailable: {a['source']}"
        if a.get("last_score"):
            s = a["last_score"]
            likelihood = "" if s.get("likelihood") is None else f", likelihood {s['likelihood']:.2f}"
            line += f"; last score {s['score']:.3f} ({s['verdict']}{likelihood}, {ago(now - s['ts'])})"
        lines.append(line)
    lines.append(f"  nerve    {'trained' if info['nerve_trained'] else 'rule (not enough answers yet)'}")
    cycle = info["last_cycle"]
    if cycle:
        decision = cycle.get("decision") or {}
        lines.append(f"last cycle {ago(now - cycle['ts'])}: decision {decision.get('action', 'none')}"
                     + (f" ({decision['source']})" if decision else ""))
    pending = info["pending_alerts"]
    lines.append(f"pending alerts: {len(pending)}" + (" — " + ", ".join(f"#{a['id']}" for a in pending) if pending else ""))
    if info["outbox_pending"]:
        lines.append(f"messages waiting to be sent: {info['outbox_pending']}")
    return "\n".join(lines)
