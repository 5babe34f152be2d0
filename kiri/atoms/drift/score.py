"""`python -m kiri.atoms.drift.score …` is `kiri drift score …`."""

from kiri.atoms.entry import run_as_kiri

if __name__ == "__main__":
    run_as_kiri("drift", "score")
