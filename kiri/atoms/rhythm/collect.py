"""`python -m kiri.atoms.rhythm.collect …` is `kiri rhythm collect …`."""

from kiri.atoms.entry import run_as_kiri

if __name__ == "__main__":
    run_as_kiri("rhythm", "collect")
