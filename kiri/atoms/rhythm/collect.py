"""`python -m kiri.atoms.rhythm.collect …` is `kiri rhythm collect …`: the same function, the same flags."""

from kiri.cli import run_atom_verb

if __name__ == "__main__":
    run_atom_verb("rhythm", "collect")
