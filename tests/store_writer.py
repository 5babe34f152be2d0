"""A writer process for the concurrency tests in test_store.py.

    python tests/store_writer.py DB ATOM N             add N observations of ATOM
    python tests/store_writer.py DB ATOM N events K    add N events of ATOM, folding them
                                                       after each (K: this writer's number)

Opens DB, prints "ready", waits for a line on stdin (so both writers start together
without any sleeping), then writes, one transaction per call.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from kiri.store import Store  # noqa: E402


def add_observations(store, atom, n):
    for i in range(n):
        store.add_observation(atom, {"i": i, "pid": os.getpid()}, ts=1000.0 + i, source="test")


def add_and_fold_events(store, atom, n, k):
    # Both writers use the same event timestamps and periods, so each fold races the
    # other writer's for the same pending events. The observation ts is offset by K
    # because two periods ending at the same `until` may both hold one event of the
    # same kind, and identical observations are refused. The fold is dict: each
    # observation's values are its events' counts per kind, as the test checks.
    kinds = ("add", "done", "switch")
    for i in range(n):
        store.add_event(atom, kinds[(i + k) % len(kinds)], project="w%d" % k, ts=1000.0 + i)
        store.fold_events(atom, dict, until=1000.5 + i, ts=1000.5 + i + 0.25 * k,
                          source="writer%d" % k)


def main():
    path, atom, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with Store(path) as store:
        print("ready", flush=True)
        sys.stdin.readline()
        if sys.argv[4:5] == ["events"]:
            add_and_fold_events(store, atom, n, int(sys.argv[5]))
        else:
            add_observations(store, atom, n)


if __name__ == "__main__":
    main()
