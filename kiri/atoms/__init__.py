"""The atoms: Pulse, Rhythm, Drift (built in), the ones you declare, and Nerve.

BUILTIN are the atoms every home has; RESERVED adds Nerve. A declared atom may take
none of these names: each has its own `kiri <name>` command and its own weights file.
"""

BUILTIN = ("pulse", "rhythm", "drift")
RESERVED = BUILTIN + ("nerve",)
HOST_PREFIX = "pulse_"   # a watched host's Pulse is pulse_<host> (atoms/hosts.py)


def is_host_atom(name):
    """Declared atoms are letters only and the built-ins have no '_': only a host's atom does."""
    return name.startswith(HOST_PREFIX)
