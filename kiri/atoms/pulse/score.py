"""`python -m kiri.atoms.pulse.score …` is `kiri pulse score …`."""

from kiri.atoms.entry import run_as_kiri

if __name__ == "__main__":
    run_as_kiri("pulse", "score")
