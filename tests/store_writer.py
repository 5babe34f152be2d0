"""A writer process for the concurrency test in test_store.py.

    python tests/store_writer.py DB ATOM N

Opens DB, prints "ready", waits for a line on stdin (so both writers start together
without any sleeping), then adds N observations of ATOM, one transaction each.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from kiri.store import Store  # noqa: E402


def main():
    path, atom, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with Store(path) as store:
        print("ready", flush=True)
        sys.stdin.readline()
        for i in range(n):
            store.add_observation(atom, {"i": i, "pid": os.getpid()}, ts=1000.0 + i,
                                  source="test")


if __name__ == "__main__":
    main()
