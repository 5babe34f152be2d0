"""`python -m kiri.atoms.pulse.train …` is `kiri pulse train …`."""

from kiri.atoms.entry import run_as_kiri

if __name__ == "__main__":
    run_as_kiri("pulse", "train")
