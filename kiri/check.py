"""`kiri check` and `kiri forget`: is what KIRI keeps sound, and removing the readings that are not.

check() looks at the database (SQLite's own integrity check; each atom's readings against
its schema, readings from the future, readings of an atom no longer run) and at every
atom's weights (each file loads and makes sense, and reads the fields its atom reads). It
returns one Problem per thing wrong: what is wrong and the command that fixes it.

forget() removes readings: by time, by source, or the bad ones `check` finds, with their
scores. Nothing else removes a reading younger than `retain_days`, so a row a bad import let
in, or the history of a declared atom whose schema changed, would otherwise stay for good.
"""

import sqlite3
import time
from typing import List, NamedTuple

from .atoms import verbs
from .atoms.atom import command_for
from .atoms.fit import clock_fields, misfit
from .core.language import language_from_dict
from .core.weights import WeightsError, load, previous_path
from .errors import KiriError
from .store import StoreError, from_the_future, open_store


class Problem(NamedTuple):
    what: str     # what is wrong, in one line
    fix: str      # the command (or step) that fixes it

    def __str__(self):
        return f"{self.what} — fix: {self.fix}"


class CheckReport(NamedTuple):
    problems: List[Problem]
    checked: List[str]    # what was looked at, for the line that says all is well


def check(settings, now=None):
    """Check the database and the weights of the home in `settings`; returns a CheckReport."""
    now = time.time() if now is None else now
    specs = specs_of(settings)
    problems, checked = [], []
    try:
        store = open_store(settings.home)
    except (StoreError, OSError) as e:
        problems.append(Problem(f"database: {e}", recover_command(settings.home / "kiri.db")))
    else:
        with store:
            problems += check_store(store, specs, now, checked)
    problems += check_weights(settings, specs, checked)
    return CheckReport(problems, checked)


def specs_of(settings):
    """{atom: AtomSpec} of every atom this installation runs."""
    return {name: module.SPEC for name, module in verbs.all_atoms(settings).items()}


def recover_command(path):
    # SQLite's own tool copies out every row it can still read; KIRI then starts on the copy.
    return (f"stop the daemon (kiri daemon stop), then `sqlite3 {path} .recover | sqlite3 {path}.recovered` "
            f"and move {path}.recovered to {path} (or move {path} aside to start afresh)")


def check_store(store, specs, now, checked):
    """Problems of the database file and of the readings in it."""
    damage = store.damage()
    if damage:
        more = " (and more)" if len(damage) > 1 else ""
        return [Problem(f"database {store.path} is damaged: {damage[0]}{more}", recover_command(store.path))]
    problems, total = [], 0
    try:
        for atom in store.atoms():
            found, n = check_readings(store, atom, specs.get(atom), now)
            problems += found
            total += n
    except sqlite3.DatabaseError as e:   # damage integrity_check did not see (or that came since)
        return problems + [Problem(f"database {store.path} is damaged: {e}", recover_command(store.path))]
    checked.append(f"database sound, {readings(total)}")
    return problems


def check_readings(store, atom, spec, now):
    """([Problem], readings looked at) for one atom's stored readings."""
    if spec is None:
        n = sum(store.count_observations(atom).values())
        return [Problem(f"{atom}: {readings(n)} of an atom this installation does not run",
                        f"kiri forget {atom} --all (or declare [atom:{atom}] in config.ini again)")], n
    first, counts, n = {}, {}, 0
    for obs in store.each_observation(atom):
        n += 1
        why = why_bad(obs, spec, now)
        if why:
            kind, reason = why
            counts[kind] = counts.get(kind, 0) + 1
            first.setdefault(kind, f"at {when(obs['ts'])}: {reason}")
    words = {"unfit": "not fitting its schema", "future": "from the future"}
    return [Problem(f"{atom}: {readings(counts[kind])} {words[kind]} (the first {first[kind]})",
                    f"kiri forget {atom} --bad") for kind in words if kind in counts], n


def readings(n):
    return f"{n} reading{'' if n == 1 else 's'}"


def why_bad(obs, spec, now):
    """(kind, reason) of a stored reading that training and scoring cannot use, else None:
    ("unfit", what does not fit the atom's schema) or ("future", how far ahead it is)."""
    problem = misfit(spec, obs["values"])
    if problem:
        return "unfit", problem
    ahead = from_the_future(obs["ts"], now)
    return ("future", ahead) if ahead else None


def when(ts):
    """A reading's time as a person reads it; a ts no calendar holds as the number."""
    try:
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))
    except (OverflowError, OSError, ValueError):
        return f"ts {ts:g}"


def check_weights(settings, specs, checked):
    """Problems of each atom's weights (and Nerve's): the file and the previous one it falls back to."""
    problems, good = [], []
    for name in list(specs) + ["nerve"]:
        path = settings.weights_path(name)
        train = "kiri nerve train" if name == "nerve" else f"{command_for(name)} train"
        prev = previous_path(path)
        try:
            fallback = load(prev) if prev.exists() else None
        except WeightsError as e:
            fallback = None
            problems.append(Problem(f"{name}: the previous weights, kept to fall back to, are unusable: {e}",
                                    f"rm {prev} (training keeps a new one)"))
        if not path.exists():
            continue
        try:
            weights = load(path)
        except WeightsError as e:
            meanwhile = f"; it uses {prev.name} meanwhile" if fallback else "; it scores nothing until retrained"
            problems.append(Problem(f"{name}: weights unusable: {e}{meanwhile}", train))
            continue
        if name in specs:
            problems += fields_problem(name, specs[name], weights, train)
        good.append(name)
    if good:
        checked.append("weights of " + ", ".join(good) + " load")
    return problems


def fields_problem(name, spec, weights, train):
    """[Problem] when the weights read other fields than the atom (a declared atom's schema changed)."""
    fields = language_from_dict(weights.language).fields
    extra = [f for f in fields if f not in spec.schema]
    missing = [f for f in spec.schema if f not in fields and f not in clock_fields(spec)]
    if not extra and not missing:
        return []
    return [Problem(f"{name}: its weights were trained on the fields {' '.join(fields)}; the atom now reads "
                    f"{' '.join(spec.schema)}", train)]


def forget(store, specs, atom, since=None, until=None, source=None, bad=False, everything=False,
           dry_run=False, now=None):
    """Remove atom's readings with since <= ts < until, of `source`, and (bad) only those that
    check calls bad — all of an atom this installation no longer runs — each with its
    scores; returns how many went (with dry_run: would go; nothing is removed). One of the
    filters, or `everything`, must be given: no slip of the keyboard forgets a whole history."""
    if not (everything or bad or source is not None or since is not None or until is not None):
        raise KiriError("forget: say which readings: --since, --until, --source, --bad, or --all for every one")
    now = time.time() if now is None else now
    among = None
    try:   # a name or a source the store refuses (not a name, not UTF-8) is the user's, with --bad too
        if bad:
            spec = specs.get(atom)
            among = [obs["id"] for obs in store.each_observation(atom) if spec is None or why_bad(obs, spec, now)]
        return store.forget_observations(atom, since, until, source, among=among, dry_run=dry_run)
    except ValueError as e:
        raise KiriError(f"forget: {e}") from None
