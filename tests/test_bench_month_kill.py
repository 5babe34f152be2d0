"""The month with kills, shortened: the daemon in a child process through one simulated day,
SIGKILLed every second or two and restarted on the same home, with one planted incident, a
Telegram outage, 429s and the clock stepping back. `kiri bench month --kill` runs the month."""

import dataclasses
import unittest

from kiri.bench import month, month_kill

HOUR = 3600.0


class ShortMonthWithKillsTest(unittest.TestCase):
    def test_one_day_of_kills_loses_duplicates_and_sticks_nothing(self):
        runaway = next(i for i in month.incidents() if i.name == "CPU runaway at night")
        planted = [dataclasses.replace(runaway, start=14 * HOUR, end=15 * HOUR)]
        faults = [(10 * HOUR, "Telegram down", month.telegram_down), (12 * HOUR, "Telegram back", month.telegram_back),
                  (16 * HOUR, "the clock steps back an hour", month.clock_back),
                  (18 * HOUR, "Telegram answers 429 three times", month.too_many_requests)]
        lines = []
        figures = month_kill.run(days=1, planted=planted, faults=faults, report=lines.append, steps=30,
                                 kill_every=(1.0, 2.0),
                                 settings_env={"KIRI_LEARN_AFTER": "96", "KIRI_NERVE_RETRAIN_ANSWERS": "1000"})
        self.assertGreaterEqual(len(figures["kills"]), 3, lines)
        self.assertEqual(lines[-1].split()[:3], ["month", "incidents", "1/1"], lines)
        # Not asserted: `unscored` and `undecided`, what a kill between storing a reading and
        # deciding on it leaves undone unless the restarted daemon takes it up (printed).
        self.assertEqual({k: figures[k] for k in ("lost", "lost_alerts", "stuck")},
                         dict(lost=0, lost_alerts=0, stuck=0), lines)
        # Delivery is at-least-once (outbox.py): a kill after Telegram took a message and
        # before the outbox marked it sent sends it again. Only a kill while delivering can.
        self.assertLessEqual(figures["duplicated"], figures["kills"].count("delivering"), lines)
        self.assertEqual(figures["cycles"], 24 * 12 + 12 + 1, "every cycle counted once, the hour stepped back again")


class WhereKillsLand(unittest.TestCase):
    def test_the_innermost_known_function_names_the_stage(self):
        stack = ('Current thread 0x00007f (most recent call first):\n'
                 '  File "/x/kiri/core/fast.py", line 246 in step\n'
                 '  File "/x/kiri/atoms/atom.py", line 330 in score\n'
                 '  File "/x/kiri/daemon.py", line 227 in score_reading\n'
                 '  File "/x/kiri/daemon.py", line 216 in score\n'
                 '  File "/x/kiri/compose.py", line 45 in run\n'
                 '  File "/x/kiri/daemon.py", line 150 in cycle\n')
        self.assertEqual(month_kill.stage_of(stack), "scoring")
        self.assertEqual(month_kill.stage_of('  File "/x/kiri/store.py", line 9 in __init__\n'), "starting")

    def test_the_child_knows_only_the_months_own_incidents_and_faults(self):
        made_up = month.Incident("made up", "pulse", 0, HOUR, lambda v, p: v)
        with self.assertRaises(ValueError):
            month_kill.describe([made_up], [])
        with self.assertRaises(ValueError):
            month_kill.describe([], [(HOUR, "made up", lambda fake, clock, home: None)])
        planted, faults = month_kill.rebuild(month_kill.describe(month.incidents()[:1], month.FAULTS[:1]))
        self.assertEqual((planted[0].name, faults[0][2]), (month.incidents()[0].name, month.FAULTS[0][2]))


if __name__ == "__main__":
    unittest.main()
