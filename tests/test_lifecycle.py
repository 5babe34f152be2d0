"""Each atom's lifecycle through the real Daemon: cold → learning → watching from an empty
home, a warm start replaced by real readings, and a worse retrain kept aside."""

import dataclasses
import random
import tempfile
import time
import unittest
from pathlib import Path
from types import SimpleNamespace

from kiri import lifecycle
from kiri.atoms import verbs
from kiri.config import load_settings
from kiri.errors import KiriError
from kiri.daemon import Daemon
from kiri.status import collect_status, format_status
from kiri.store import open_store

START = time.mktime((2024, 3, 4, 9, 0, 0, 0, 0, -1))   # a Monday morning
INTERVAL = 300.0


def pulse_source(steps=30, seed=0):
    """Pulse read from a seeded working-hours generator instead of this machine."""
    real = verbs.atom_module("pulse")
    rng = random.Random(seed)
    spec = dataclasses.replace(real.SPEC, steps=steps)
    return SimpleNamespace(SPEC=spec, read=lambda spec, settings, store, now=None: (real.synthetic(rng, CLOCK[0]), "sim"),
                           synthetic=real.synthetic)


CLOCK = [START]


class LifecycleTest(unittest.TestCase):
    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.home = Path(tmp.name)
        CLOCK[0] = START

    def daemon(self, steps=30, **env):
        settings = load_settings(home=self.home, env=dict({"KIRI_LEARN_AFTER": "40"}, **env))
        store = open_store(self.home)
        self.addCleanup(store.close)
        d = Daemon(settings, store, clock=lambda: CLOCK[0])
        d.modules = {"pulse": pulse_source(steps)}   # Pulse alone, fed by the generator
        return d

    def run_cycles(self, d, n):
        results = []
        for _ in range(n):
            results.append(d.cycle())
            CLOCK[0] += INTERVAL
        return results

    def status_of(self, d):
        return collect_status(d.settings, d.store, now=CLOCK[0])["atoms"]["pulse"]

    def test_an_empty_home_learns_by_itself_then_watches(self):
        d = self.daemon(KIRI_RETRAIN_DAYS="0.1")
        results = self.run_cycles(d, 39)
        self.assertTrue(all(r.absent.get("pulse") == "no weights yet" and not r.meta for r in results))
        status = self.status_of(d)
        self.assertEqual((status["phase"], status["readings_to_go"]), ("cold", 1))
        self.assertIn("cold: collecting, 1 readings to go", format_status(collect_status(d.settings, d.store, CLOCK[0]),
                                                                          now=CLOCK[0]))

        [learned] = self.run_cycles(d, 1)
        self.assertEqual(learned.meta, ["spawn:pulse"])
        self.assertEqual(d.store.decisions()[-1]["action"], "spawn:pulse")
        status = self.status_of(d)
        self.assertEqual(status["phase"], "watching")
        self.assertEqual(status["learned_from"], {"real": 40, "synthetic": 0})
        [watching] = self.run_cycles(d, 1)
        self.assertEqual([s.atom for s in watching.scores], ["pulse"])
        self.assertEqual(watching.meta, [])

        # Every retrain_days (0.1 d here: 2.4 h) it retrains on its last 0.1 days, on schedule.
        metas = [r.meta for r in self.run_cycles(d, 30) if r.meta]
        self.assertEqual(metas, [["retrain:pulse:0.1d"]], "retrained once, swapped in or kept aside")
        self.assertRegex(d.store.get_kv("atom.pulse.retrain")["outcome"],
                         r"^pulse: (retrained on its last 0.1 days|retrained model kept aside)")

    def test_a_warm_start_is_replaced_by_real_readings(self):
        d = self.daemon()
        verbs.add_synthetic(d.modules["pulse"], d.store, 200, end=START)
        verbs.train(d.modules["pulse"], d.settings, d.store, warm_start=True, now=START)
        self.assertEqual(self.status_of(d)["learned_from"]["synthetic"], 200)
        results = self.run_cycles(d, 40)
        self.assertEqual([r.meta for r in results if r.meta], [["retrain:pulse:7d"]])
        self.assertEqual(self.status_of(d)["learned_from"], {"real": 40, "synthetic": 0})

    def test_a_retrained_model_that_does_worse_is_kept_aside(self):
        d = self.daemon(steps=100)
        # A day and a night of real readings, stored as the daemon's cycles store them (the
        # cycles themselves are the other tests' business; here they would only add time).
        rng, pulse = random.Random(0), verbs.atom_module("pulse")
        d.store.add_observations([{"atom": "pulse", "ts": START + i * INTERVAL, "source": "sim",
                                   "values": pulse.synthetic(rng, START + i * INTERVAL)} for i in range(300)])
        CLOCK[0] = START + 300 * INTERVAL
        # The current model: trained well on the whole of its readings.
        self.assertIn("retrained on", lifecycle.run("retrain:pulse:7d", d.settings, d.store, d.modules, CLOCK[0]))
        path = d.settings.weights_path("pulse")
        before = path.read_bytes()
        # A candidate trained for a single step knows the machine far worse than the current model.
        d.modules["pulse"] = pulse_source(steps=1)
        outcome = lifecycle.run("retrain:pulse:7d", d.settings, d.store, d.modules, now=CLOCK[0])
        self.assertIn("retrained model kept aside (pulse.candidate.json)", outcome)
        self.assertEqual(path.read_bytes(), before, "the current model keeps serving")
        self.assertTrue(path.with_name("pulse.candidate.json").exists())
        self.assertIn("kept aside", format_status(collect_status(d.settings, d.store, CLOCK[0]), now=CLOCK[0]))

    def test_bad_learn_after_is_refused_at_start(self):
        for bad in ("0", "2.5", "many", "-3"):
            with self.subTest(bad=bad):
                with self.assertRaisesRegex(KiriError, "learn_after"):
                    load_settings(home=self.home, env={"KIRI_LEARN_AFTER": bad})


if __name__ == "__main__":
    unittest.main()
