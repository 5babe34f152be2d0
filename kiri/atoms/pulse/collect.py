"""`python -m kiri.atoms.pulse.collect …` is `kiri pulse collect …`."""

from kiri.atoms.entry import run_as_kiri

if __name__ == "__main__":
    run_as_kiri("pulse", "collect")
