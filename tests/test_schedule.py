"""The daemon's schedule runs on a monotonic clock: a wall clock stepping back or forward an
hour neither stops nor doubles collection, a cycle starts `tick` after the previous one
started, and a retrain stamped in the future never stops the lifecycle's schedule.

Every test runs the real Daemon with two injected clocks, the wall clock (`clock`, what rows
are stamped with) and the monotonic one (`monotonic`, what the schedule runs on), and a
stand-in Pulse source that counts its readings (no weights: nothing is scored).
"""

import random
import tempfile
import time
import unittest
from pathlib import Path
from types import SimpleNamespace

from kiri import lifecycle
from kiri.atoms import verbs
from kiri.config import load_settings
from kiri.daemon import Daemon
from kiri.store import open_store

START = time.mktime((2024, 3, 4, 9, 0, 0, 0, 0, -1))   # a Monday morning
HOUR = 3600.0
TICK = 30.0
INTERVAL = 300.0   # Pulse's


class Clocks:
    """A wall clock that can step, and a monotonic one that never does; both advance together."""

    def __init__(self):
        self.wall, self.mono = START, 1000.0

    def advance(self, seconds):
        self.wall += seconds
        self.mono += seconds


class ScheduleCase(unittest.TestCase):
    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.home = Path(tmp.name)
        self.clocks = Clocks()
        self.reads = []          # (monotonic, wall) of every reading the source took
        self.read_takes = 0.0    # seconds one reading takes (advances both clocks)

    def daemon(self, store=None):
        settings = load_settings(home=self.home, env={"KIRI_TICK": str(TICK)})
        if store is None:
            store = open_store(self.home)
            self.addCleanup(store.close)
        d = Daemon(settings, store, clock=lambda: self.clocks.wall, monotonic=lambda: self.clocks.mono)
        real = verbs.atom_module("pulse", settings)
        rng = random.Random(0)

        def read(spec, settings, store):
            self.reads.append((self.clocks.mono, self.clocks.wall))
            self.clocks.advance(self.read_takes)
            return real.synthetic(rng, self.clocks.wall), "sim"

        d.modules = {"pulse": SimpleNamespace(SPEC=real.SPEC, read=read, synthetic=real.synthetic)}
        return d

    def gaps(self):
        """Monotonic seconds between consecutive readings."""
        return [b[0] - a[0] for a, b in zip(self.reads, self.reads[1:])]


class WallClockSteps(ScheduleCase):
    def run_forever_until(self, d, seconds, steps=()):
        """run_forever, its sleeps advancing both clocks, for `seconds` of monotonic time;
        `steps`: (monotonic offset, seconds) at which the wall clock alone steps."""
        start, pending = self.clocks.mono, sorted(steps)

        def sleep(wait):
            self.clocks.advance(wait)
            while pending and self.clocks.mono - start >= pending[0][0]:
                self.clocks.wall += pending.pop(0)[1]
            if self.clocks.mono - start >= seconds:
                d.stop_event.set()

        d.run_forever(sleep=sleep)

    def test_a_step_back_and_forward_of_an_hour_neither_stops_nor_doubles_collection(self):
        d = self.daemon()
        # Three hours; the wall clock steps back an hour (plus 7 s) after 40 min, forward after 100.
        self.run_forever_until(d, 3 * HOUR, steps=[(40 * 60, -(HOUR + 7)), (100 * 60, HOUR + 7)])
        gaps = self.gaps()
        # A reading each time the interval has passed, on the tick's grid: 300 s apart,
        # before, during and after both steps.
        self.assertEqual(set(gaps), {300.0}, gaps)
        self.assertEqual(len(self.reads), len(range(0, int(3 * HOUR), 300)))   # 36: none lost, none doubled
        self.assertEqual(d.store.count_observations("pulse")["real"], len(self.reads))
        # The readings carry the wall clock's time as it was: an hour earlier during the step.
        walls = [wall for _, wall in self.reads]
        self.assertTrue(any(b < a for a, b in zip(walls, walls[1:])), "the step back shows in the readings' times")

    def test_before_the_monotonic_schedule_a_stored_reading_from_the_future_never_blocks(self):
        # The wall clock ran an hour ahead when the last reading was stored, then was put right.
        with open_store(self.home) as store:
            store.add_observation("pulse", {"C": 10, "M": 40, "D": 40, "S": 0, "L": 1, "N": 1},
                                  ts=self.clocks.wall + HOUR, source="sim")
        d = self.daemon()
        first = d.cycle()
        self.assertNotIn("pulse", first.waiting)
        self.assertEqual(len(self.reads), 1)
        for _ in range(9):   # 270 s: the stored reading from the future is newest by time, yet nothing doubles
            self.clocks.advance(TICK)
            self.assertIn("pulse", d.cycle().waiting)
        self.clocks.advance(TICK)
        d.cycle()
        self.assertEqual(self.gaps(), [300.0])


class FirstCycle(ScheduleCase):
    def test_a_new_process_ages_the_stored_reading_by_the_wall_clock_once(self):
        with open_store(self.home) as store:
            store.add_observation("pulse", {"C": 10, "M": 40, "D": 40, "S": 0, "L": 1, "N": 1},
                                  ts=self.clocks.wall - 100, source="sim")
        d = self.daemon()
        self.assertEqual(d.cycle().waiting["pulse"], "not due yet (last reading 100 s ago, every 300 s)")
        # From then on the monotonic clock: a step back of the wall clock changes nothing.
        self.clocks.wall -= HOUR
        self.clocks.advance(150)
        self.assertEqual(d.cycle().waiting["pulse"], "not due yet (last reading 250 s ago, every 300 s)")
        self.clocks.advance(TICK)
        self.assertEqual(d.cycle().waiting["pulse"], "not due yet (last reading 280 s ago, every 300 s)")
        self.clocks.advance(TICK)   # 310 s: the tick nearest the interval
        self.assertNotIn("pulse", d.cycle().waiting)
        self.assertEqual(len(self.reads), 1)

    def test_a_reading_another_command_stored_is_counted(self):
        d = self.daemon()
        d.cycle()
        self.clocks.advance(200)   # `kiri pulse collect` by hand, 200 s after the daemon's reading
        d.store.add_observation("pulse", {"C": 10, "M": 40, "D": 40, "S": 0, "L": 1, "N": 1},
                                ts=self.clocks.wall, source="linux")
        self.clocks.advance(TICK * 3)
        self.assertEqual(d.cycle().waiting["pulse"], "not due yet (last reading 90 s ago, every 300 s)")


class Tick(ScheduleCase):
    def test_the_tick_is_measured_from_start_to_start(self):
        d = self.daemon()
        starts, sleeps, lengths = [], [], iter([10.0, 10.0, 45.0, 10.0, 10.0])
        cycle = d.cycle

        def timed_cycle(*args, **kwargs):
            starts.append(self.clocks.mono)
            result = cycle(*args, **kwargs)
            self.clocks.advance(next(lengths))   # how long this cycle took
            return result

        def sleep(wait):
            sleeps.append(wait)
            self.clocks.advance(wait)
            if len(starts) == 5:
                d.stop_event.set()

        d.cycle = timed_cycle
        d.run_forever(sleep=sleep)
        t0 = starts[0]
        # 10 s cycles: 20 s sleeps. The 45 s one is followed at once, by one cycle (no catch-up burst).
        self.assertEqual(sleeps, [20.0, 20.0, 0.0, 20.0, 20.0])
        self.assertEqual([s - t0 for s in starts], [0.0, 30.0, 60.0, 105.0, 135.0])

    def test_an_injected_clock_drives_the_schedule_when_no_monotonic_is_given(self):
        settings = load_settings(home=self.home, env={})
        with open_store(self.home) as store:
            self.assertIs(Daemon(settings, store, clock=lambda: 5.0).monotonic(), 5.0)
            self.assertIs(Daemon(settings, store).monotonic, time.monotonic)


class LifecycleSchedule(unittest.TestCase):
    """The retrain schedule lives in wall time (only it survives a restart): a stamp from the
    future ages from when it was first seen, so a step back can neither stop it nor show a
    negative age, nor retrain at once after every small step."""

    WEEK = 7 * 86400.0

    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.settings = load_settings(home=Path(tmp.name), env={})
        self.store = open_store(self.settings.home)
        self.addCleanup(self.store.close)

    def due(self, trained_at, now):
        atom = SimpleNamespace(trained=True, weights=SimpleNamespace(trained_on={"trained_at": trained_at}))
        return lifecycle.due("pulse", atom, lambda: 1000, self.settings, self.store, now)

    def test_a_retrain_stamped_in_the_past_is_due_after_its_period(self):
        self.assertIsNone(self.due(START, START + self.WEEK - 1))
        self.assertEqual(self.due(START, START + self.WEEK + 1), "retrain:pulse:7d")

    def test_a_retrain_stamped_a_year_ahead_is_due_a_period_after_it_was_first_seen(self):
        # The clock ran a year fast when it was stamped, and has been put right since.
        ahead = START + 365 * 86400
        self.assertIsNone(self.due(ahead, START))
        self.assertIsNone(self.due(ahead, START + self.WEEK - 1))   # a restart in between changes nothing
        self.assertEqual(self.due(ahead, START + self.WEEK + 1), "retrain:pulse:7d")
        key = lifecycle.RETRAIN_CLOCK_KEY.format("pulse")
        self.assertEqual(lifecycle.age_since(self.store, key, ahead, START + 10), 10.0)   # never negative

    def test_a_step_back_of_an_hour_right_after_a_retrain_delays_it_by_the_hour(self):
        trained = START
        stepped = trained + 60 - HOUR   # a minute after the retrain the clock steps back an hour
        self.assertIsNone(self.due(trained, stepped))
        # Once the clock has passed the stamp again, it ages from the stamp: due a week later
        # by the clock, a week and an hour of real time.
        self.assertIsNone(self.due(trained, trained + self.WEEK - 1))
        self.assertEqual(self.due(trained, trained + self.WEEK + 1), "retrain:pulse:7d")
        # A second step back while the stamp is still ahead starts its age again from there.
        self.assertEqual(lifecycle.age_since(self.store, "k", trained, stepped), 0.0)
        self.assertEqual(lifecycle.age_since(self.store, "k", trained, stepped - HOUR), 0.0)
        self.assertEqual(lifecycle.age_since(self.store, "k", trained, stepped - HOUR + 5), 5.0)


if __name__ == "__main__":
    unittest.main()
