"""Fault injection for the kill tests: die right after a named commit, nowhere else.

`point(name, detail)` sits right after each commit a daemon cycle makes (store.py,
outbox.py, core/weights.py). It does nothing unless the environment variable KIRI_FAULT,
read once when this module is first imported, names that point; then it SIGKILLs its own
process at once, as a power cut or the OOM killer would: no `finally`, no flush, no atexit.
Only tests set it (tests/test_kill_points.py); unset, a point costs one comparison.

    KIRI_FAULT=alert                 the first point named alert
    KIRI_FAULT=kv                    the first kv point, whatever its key
    KIRI_FAULT=kv:telegram.offset    the kv point of that key
    KIRI_FAULT=5                     the fifth point this process reaches, whatever it is

Before dying it writes one line to stderr: `kiri: fault: killed at <name> (point <n>)`.
"""

import os
import signal

ENV = "KIRI_FAULT"

_target = os.environ.get(ENV) or None
_reached = 0


def point(name, detail=None):
    """A commit point: `name` (e.g. "score"), `detail` what it was about (e.g. "pulse")."""
    if _target is None:
        return
    _reach(name if detail is None else f"{name}:{detail}")


def _reach(full):
    global _reached
    _reached += 1
    if _target in (full, str(_reached)) or full.startswith(_target + ":"):
        os.write(2, f"kiri: fault: killed at {full} (point {_reached})\n".encode())
        kill = getattr(signal, "SIGKILL", None)
        if kill is None:   # Windows: no SIGKILL, and os._exit skips as much
            os._exit(137)
        os.kill(os.getpid(), kill)
