"""`python -m kiri.atoms.drift.train …` is `kiri drift train …`: the same function, the same flags."""

from kiri.cli import run_atom_verb

if __name__ == "__main__":
    run_atom_verb("drift", "train")
