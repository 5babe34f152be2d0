"""`python -m kiri.atoms.rhythm.train …` is `kiri rhythm train …`."""

from kiri.atoms.entry import run_as_kiri

if __name__ == "__main__":
    run_as_kiri("rhythm", "train")
