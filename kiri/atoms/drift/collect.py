"""`python -m kiri.atoms.drift.collect …` is `kiri drift collect …`."""

from kiri.atoms.entry import run_as_kiri

if __name__ == "__main__":
    run_as_kiri("drift", "collect")
