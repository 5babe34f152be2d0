"""`kiri status`: what a person checks first — is each atom trained, is the daemon alive, what happened last."""

import math
import sqlite3
import time

from .atoms import verbs
from .atoms.score import Score
from .core.weights import WeightsError, previous_path
from . import lifecycle
from . import lock
from .daemon import HEARTBEAT_KEY, LAST_CYCLE_KEY
from .errors import KiriError


def collect_status(settings, store, now=None):
    """Everything `kiri status` shows, as one JSON-able dict. A damaged database file shows as
    that alone (database_damage): counts read from it could be silently wrong."""
    now = time.time() if now is None else now
    damage = store.damage(quick=True, limit=1)
    if not damage:
        try:
            return dict(collect_atoms_status(settings, store, now), database_damage=None)
        except sqlite3.DatabaseError as e:   # damage that came after the check, or that it missed
            damage = [str(e)]
    return {"host": settings.host, "home": str(settings.home), "database_damage": damage[0],
            "daemon": daemon_state(settings, store, now), "db_bytes": store.size_bytes()}


def daemon_state(settings, store, now):
    try:
        return lock.daemon_status(settings.home, store, now)
    except KiriError as e:   # no flock here, or an unreadable lock: the rest of the status still holds
        return {"state": "unknown", "why": str(e)}
    except sqlite3.DatabaseError as e:
        return {"state": "unknown", "why": f"its heartbeat is in the damaged database: {e}"}


def collect_atoms_status(settings, store, now):
    atoms = {}
    for name, module in verbs.all_atoms(settings).items():
        counts = store.count_observations(name)
        model = model_status(module, settings)
        entry = {"observations": counts, "trained": False, "phase": "cold", "host": settings.host_of(name),
                 "readings_to_go": max(0, settings.learn_after - counts["real"])}
        entry.update(model)
        if "weights_error" not in model:
            entry["phase"] = lifecycle.phase(model["trained"], counts, settings.learn_after)
        retrain = store.get_kv(lifecycle.RETRAIN_KEY.format(name))
        if retrain:
            entry["last_retrain"] = retrain
        source_error = store.get_kv(f"atom.{name}.source")
        if source_error:
            entry["source"] = source_error
        latest = store.latest_scores(name, limit=1)
        if latest:
            entry["last_score"] = dict(Score.from_json(latest[0]).to_json(), ts=latest[0]["ts"],
                                       verdict=latest[0]["verdict"])
        atoms[name] = entry
    heartbeat = lock.parse_heartbeat(store.get_kv(HEARTBEAT_KEY))
    daemon = daemon_state(settings, store, now)
    return {
        "host": settings.host,
        "home": str(settings.home),
        "atoms": atoms,
        "nerve_trained": settings.weights_path("nerve").exists(),
        "heartbeat_age": None if heartbeat is None else now - heartbeat["ts"],
        "daemon": daemon,
        "last_cycle": store.get_kv(LAST_CYCLE_KEY),
        "pending_alerts": [a for a in store.alerts(state="open", limit=20)],
        "outbox_pending": store.outbox_pending(),
        "db_bytes": store.size_bytes(),
    }


# A scrape every 15 s would parse every atom's weights each time: about 10 ms an atom, a
# second of CPU a scrape for 100 watched hosts. What status shows of a model is a function
# of its files, so it is kept, per process, until either file changes (weights are written
# by rename: a new model is a new file, whatever its size and time).
_models = {}


def model_status(module, settings):
    """What status shows of an atom's saved model: {"trained": False}, the trained model's
    threshold, steps, training time and counts, or {"weights_error": why}. Read from its
    weights file (or the .prev.json it falls back to) only when one of them has changed."""
    path = settings.weights_path(module.SPEC.name)
    stamp = (_file_identity(path), _file_identity(previous_path(path)))
    known = _models.get(str(path))
    if known is not None and known[0] == stamp and None not in stamp:
        return dict(known[1])
    try:
        atom = verbs.load_atom(module, settings)
    except WeightsError as e:
        model = {"weights_error": str(e)}
    else:
        model = {"trained": atom.trained}
        if atom.trained:
            trained_on = atom.weights.trained_on
            model.update(trained_at=trained_on.get("trained_at") or (path.stat().st_mtime if path.exists() else None),
                         threshold=atom.threshold if math.isfinite(atom.threshold) else None,
                         steps=atom.weights.step, note=atom.weights_note,
                         learned_from={k: trained_on.get(k, 0) for k in ("real", "synthetic")},
                         false_alarm_rate=atom.weights.threshold.get("false_alarm_rate"))
    _models[str(path)] = (stamp, model)
    return dict(model)


def _file_identity(path):
    """(inode, modification time, size), "absent", or None when it cannot be read (never cached)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return "absent"
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


SHOWN_ERRORS = 5   # of the last cycle's errors, in the plain status; --json has them all


def ago(seconds):
    return "never" if seconds is None else duration(seconds) + " ago"


def duration(seconds):
    """'40 s', '3 min', '2 h', '5 d'."""
    seconds = max(0.0, seconds)   # a clock stepped back never shows a negative age
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"


def describe_daemon(d, now=None):
    """The daemon in a few words, from lock.daemon_status: 'running (PID 1234, 2 h, last cycle 12 s ago)'."""
    now = time.time() if now is None else now
    if d["state"] == "running":
        mode = " --once" if d["mode"] == "once" else ""
        uptime = "" if d["uptime"] is None else f", {duration(d['uptime'])}"
        cycle = "no cycle finished yet" if d["last_cycle_age"] is None else f"last cycle {ago(d['last_cycle_age'])}"
        return f"running{mode} (PID {d['pid'] or '?'}{uptime}, {cycle})"
    if d["state"] == "stopped":
        return f"stopped {ago(now - d['stopped_at'])}" + (" (after one daemon --once cycle)" if d["mode"] == "once" else "")
    if d["state"] == "stale":
        return f"stale — last heartbeat {ago(d['last_cycle_age'])}, no stop recorded (killed?)"
    if d["state"] == "never":
        return "never run"
    return f"unknown ({d['why']})"


def format_status(info, now=None):
    now = time.time() if now is None else now
    lines = [f"KIRI on {info['host']}, home {info['home']}",
             "daemon: " + describe_daemon(info["daemon"], now)]
    if info.get("database_damage"):
        return "\n".join(lines + [f"database DAMAGED: {info['database_damage']}; what it holds cannot be trusted: "
                                  "`kiri check` says how to recover it"])
    for name, a in info["atoms"].items():
        obs = a["observations"]
        count = f"{obs['real']} real + {obs['synthetic']} synthetic readings"
        if obs.get("injected"):
            count += f" (and {obs['injected']} injected)"
        if a.get("weights_error"):
            state = f"weights unusable: {a['weights_error']}"
        elif a["trained"]:
            threshold = "none" if a["threshold"] is None else f"{a['threshold']:.3f}"
            learned = a["learned_from"]
            state = (f"watching: model trained {ago(now - a['trained_at']) if a.get('trained_at') else ''} on "
                     f"{learned['real']} real" + (f" + {learned['synthetic']} synthetic" if learned["synthetic"] else "")
                     + f" readings, threshold {threshold}")
            if a.get("false_alarm_rate") is not None:
                state += f", {100 * a['false_alarm_rate']:.1f} % false alarms on held-out readings"
        elif a["phase"] == "learning":
            state = "learning: enough readings, the daemon trains it at its next cycle"
        else:
            state = f"cold: collecting, {a['readings_to_go']} readings to go before it learns"
        elsewhere = f" (on {a['host']})" if a.get("host") not in (None, info["host"]) else ""
        line = f"  {name:<8}{elsewhere} {state}; {count}"
        if a.get("source"):
            line += f"; source unavailable: {a['source']}"
        if a.get("last_score"):
            s = a["last_score"]
            likelihood = "" if s.get("likelihood") is None else f", likelihood {s['likelihood']:.2f}"
            line += f"; last score {s['score']:.3f} ({s['verdict']}{likelihood}, {ago(now - s['ts'])})"
        lines.append(line)
        if a.get("note"):   # weights unusable, the previous ones used instead
            lines.append(f"           weights: {a['note']}")
        if a.get("last_retrain"):
            lines.append(f"           last retrain {ago(now - a['last_retrain']['ts'])}: {a['last_retrain']['outcome']}")
    lines.append(f"  nerve    {'trained' if info['nerve_trained'] else 'rule (not enough answers yet)'}")
    cycle = info["last_cycle"]
    if cycle:
        decision = cycle.get("decision") or {}
        lines.append(f"last cycle {ago(now - cycle['ts'])}: decision {decision.get('action', 'none')}"
                     + (f" ({decision['source']})" if decision else ""))
        errors = cycle.get("errors") or []
        lines += [f"  error: {pipe} {stage}: {error}" for pipe, stage, error in errors[:SHOWN_ERRORS]]
        if len(errors) > SHOWN_ERRORS:
            lines.append(f"  … and {len(errors) - SHOWN_ERRORS} more errors (kiri status --json lists them)")
    pending = info["pending_alerts"]
    lines.append(f"pending alerts: {len(pending)}" + (" — " + ", ".join(f"#{a['id']}" for a in pending) if pending else ""))
    if info["outbox_pending"]:
        lines.append(f"messages waiting to be sent: {info['outbox_pending']}")
    lines.append(f"database {info['db_bytes'] / 1e6:.1f} MB")
    return "\n".join(lines)
