"""Drift's own rule for task events: which kind counts under which field, and periods."""

import tempfile
import unittest
from pathlib import Path

from kiri.atoms.drift import schema as drift
from kiri.store import Store


def total(counts):
    """Every stored reading: real, synthetic and injected."""
    return sum(counts.values())


class DriftEvents(unittest.TestCase):
    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.store = Store(Path(tmp.name) / "kiri.db", clock=lambda: 5000.0)
        self.addCleanup(self.store.close)

    def collect(self, now):
        """Close the period ending at now; returns its stored values."""
        obs_id = drift.collect_once(drift.SPEC, None, self.store, now)
        return self.store.observation(obs_id)["values"]

    def test_each_kind_counts_under_its_field(self):
        self.assertEqual(drift.EVENTS, {"add": "A", "done": "C", "switch": "S"})
        for ts, kind in [(1, "add"), (2, "add"), (3, "switch"), (4, "add"), (5, "done"), (6, "switch")]:
            drift.log_event(self.store, kind, project="kiri", ts=ts)
        self.assertEqual(self.collect(10), {"A": 3, "C": 1, "S": 2})
        self.assertEqual(self.store.latest_observation("drift")["source"], "events")

    def test_kinds_it_does_not_know_are_ignored(self):
        self.assertEqual(drift.counts_to_values({"add": 2, "nap": 5}), {"A": 2, "C": 0, "S": 0})
        self.assertEqual(drift.counts_to_values({}), {"A": 0, "C": 0, "S": 0})

    def test_an_unknown_kind_is_refused_and_nothing_is_stored(self):
        for bad in ("finish", "ADD", "", None, ["add"]):
            with self.subTest(kind=bad):
                with self.assertRaisesRegex(ValueError, r"^kind: must be one of 'add', 'done', 'switch'"):
                    drift.log_event(self.store, bad, ts=1)
        self.assertEqual(self.store.pending_events("drift"), [])
        event = drift.log_event(self.store, "done", "kiri")  # at the store's clock
        self.assertEqual(self.store.pending_events("drift"), [
            {"id": event, "atom": "drift", "ts": 5000.0, "kind": "done", "project": "kiri", "period_id": None}])

    def test_a_period_without_events_is_stored_as_zeros(self):
        self.assertEqual(self.collect(10), {"A": 0, "C": 0, "S": 0})
        drift.log_event(self.store, "add", ts=20)  # after the period: it waits for the next
        self.assertEqual(self.collect(15), {"A": 0, "C": 0, "S": 0})
        self.assertEqual(total(self.store.count_observations("drift")), 2)

    def test_events_are_never_counted_twice(self):
        drift.log_event(self.store, "add", ts=1)
        drift.log_event(self.store, "switch", ts=2)
        self.assertEqual(self.collect(10), {"A": 1, "C": 0, "S": 1})
        drift.log_event(self.store, "done", ts=11)
        self.assertEqual(self.collect(20), {"A": 0, "C": 1, "S": 0})
        self.assertEqual(self.collect(30), {"A": 0, "C": 0, "S": 0})
        self.assertEqual(self.store.pending_events("drift"), [])
        self.assertEqual([o["values"] for o in self.store.observations("drift")],
                         [{"A": 1, "C": 0, "S": 1}, {"A": 0, "C": 1, "S": 0}, {"A": 0, "C": 0, "S": 0}])


if __name__ == "__main__":
    unittest.main()
