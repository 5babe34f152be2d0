"""`python -m kiri.atoms.drift.train …` is `kiri drift train …`."""

from kiri.atoms.entry import run_as_kiri

if __name__ == "__main__":
    run_as_kiri("drift", "train")
