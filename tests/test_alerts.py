"""An alert's words: one line per surprising reading, in words a person reads."""

import unittest

from kiri.alerts import ANSWERS, MAX_LINES, Alert, format_alert
from kiri.atoms.pulse.schema import SPEC as PULSE
from kiri.atoms.score import Score

PULSE_LABELS = PULSE.labels


def token(name, surprise, expected, value, expected_range=None, field=None):
    return {"token": name, "surprise": surprise, "p": 0.01, "expected": expected, "p_expected": 0.48,
            "field": field or name[0], "value": value, "expected_range": expected_range}


def pulse(score, threshold, *tokens, **kw):
    return Score("pulse", score, threshold, list(tokens), **kw)


class FormatAlertTest(unittest.TestCase):
    def test_the_surprising_readings_in_words(self):
        score = pulse(7.9, 2.0, token("C9", 10.2, "C1", 95.0, (10.0, 20.0)), token("M9", 8.1, "M5", 90.0, (50.0, 60.0)),
                      token("D4", 0.3, "D4", 41.0, (40.0, 50.0)), token("S1", 1.9, "S0", 3.0, (0.0, 20.0)),
                      token("L3", 2.5, "L1", 2.75, (4.0, 8.0)), token("N0", 6.0, "N1", 0.0, (0.5, 1.0)))
        self.assertEqual(format_alert([score], PULSE_LABELS, host="mac-mini"),
                         "KIRI alert on mac-mini: pulse is unusual (score 7.9, 4.0× its threshold)\n"
                         "CPU 95% (usually 10–20%)\n"
                         "memory 90% (usually 50–60%)\n"
                         "load 2.75 (usually 4–8)\n"
                         "network down (usually up)\n\n" + ANSWERS)

    def test_threshold_raises_the_bar(self):
        score = pulse(9.0, 3.0, token("C9", 2.5, "C1", 95.0, (10.0, 20.0)), token("M9", 3.5, "M5", 90.0, (50.0, 60.0)))
        self.assertEqual(format_alert([score], PULSE_LABELS).splitlines()[1:2], ["memory 90% (usually 50–60%)"])

    def test_without_a_value_or_a_range_it_names_the_tokens(self):
        scores = [pulse(5.0, float("inf"), token("C9", 6.0, "C1", None, (10.0, 20.0))),
                  Score("rhythm", 4.2, 2.1, [token("K7", 5.5, "K0", 12.0)])]
        text = format_alert(scores, {"pulse": PULSE_LABELS, "rhythm": {"K": ("commits", "commits")}})
        self.assertEqual(text, "KIRI alert: pulse is unusual (score 5.0)\n"
                               "CPU (C9, expected C1)\n\n"
                               "rhythm is unusual (score 4.2, 2.0× its threshold)\n"
                               "commits 12 commits (K7, expected K0)\n\n" + ANSWERS)

    def test_no_single_reading_stands_out(self):
        score = pulse(2.5, 2.0, token("C5", 1.0, "C5", 50.0))
        self.assertEqual(format_alert([score], PULSE_LABELS).splitlines()[1],
                         "no single reading stands out; together they are unusual")

    def test_recent_readings_unusual_together(self):
        score = pulse(1.5, 2.0, token("C5", 1.0, "C5", 50.0), likelihood=0.234, unusual_at=0.1)
        self.assertEqual(format_alert([score], PULSE_LABELS).splitlines()[1],
                         "its recent readings are more surprising than usual, together "
                         "(likelihood 0.23, flagged above 0.10)")
        score.likelihood = 0.05   # under its level: not mentioned
        self.assertNotIn("likelihood", format_alert([score], PULSE_LABELS))

    def test_unlabelled_fields_and_long_lists(self):
        tokens = [token("X%d" % i, 9.0, "X0", 1.5) for i in range(1, 13)]
        lines = format_alert([pulse(9.0, 2.0, *tokens)]).splitlines()
        self.assertEqual(lines[1], "X 1.5 (X1, expected X0)")
        self.assertEqual(lines[1 + MAX_LINES], "…and 2 more unusual readings")

    def test_nothing_to_describe(self):
        with self.assertRaises(ValueError):
            format_alert([])


class AlertShapeTest(unittest.TestCase):
    def test_json_round_trip_and_older_payloads(self):
        alert = Alert(7, "KIRI alert: …", atom="pulse", host="nas", ts=5.0, situation="pulse:C9",
                      scores=[pulse(7.9, 2.0, token("C9", 10.2, "C1", 95.0, [10.0, 20.0]))])
        again = Alert.from_json(alert.to_json())
        self.assertEqual(again.to_json(), alert.to_json())
        old = Alert.from_json({"text": "hello", "alert_id": 3})   # an outbox row of an older KIRI
        self.assertEqual((old.id, old.message, old.scores), (3, "hello", []))

    def test_a_stored_token_of_an_older_kiri_is_upgraded(self):
        # Before one Score form, stored tokens named the expected token's probability `p`.
        score = Score.from_json({"atom": "pulse", "score": 3.0, "threshold": 2.0,
                                 "tokens": [{"token": "C9", "surprise": 5.0, "expected": "C1", "p": 0.5,
                                             "p_token": 0.01}]})
        [t] = score.to_json()["tokens"]
        self.assertEqual((t["p"], t["p_expected"], t["field"]), (0.01, 0.5, None))


if __name__ == "__main__":
    unittest.main()
