"""The atoms: Pulse, Rhythm, Drift (built in), the ones you declare, and Nerve.

BUILTIN are the atoms every home has; RESERVED adds Nerve. A declared atom may take
none of these names: each has its own `kiri <name>` command and its own weights file.
"""

BUILTIN = ("pulse", "rhythm", "drift")
RESERVED = BUILTIN + ("nerve",)
