"""Benchmarks: each prints its figures (README, Benchmarks). What the command line needs of
them to parse its flags lives here, so a `kiri` command does not import a benchmark to start."""

# fuzz_edges.EDGES, in order
FUZZ_EDGES = ("obs", "import", "config", "weights", "telegram", "mikrotik", "flags", "nab")
FUZZ_CASES_MAX = 10_000_000   # `bench fuzz --cases`, in all
