"""`python -m kiri.atoms.drift.score …` is `kiri drift score …`: the same function, the same flags."""

from kiri.cli import run_atom_verb

if __name__ == "__main__":
    run_atom_verb("drift", "score")
