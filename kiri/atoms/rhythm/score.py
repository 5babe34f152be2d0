"""`python -m kiri.atoms.rhythm.score …` is `kiri rhythm score …`."""

from kiri.atoms.entry import run_as_kiri

if __name__ == "__main__":
    run_as_kiri("rhythm", "score")
