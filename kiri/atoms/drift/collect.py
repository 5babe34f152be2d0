"""`python -m kiri.atoms.drift.collect …` is `kiri drift collect …`: the same function, the same flags."""

from kiri.cli import run_atom_verb

if __name__ == "__main__":
    run_atom_verb("drift", "collect")
