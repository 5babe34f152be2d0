"""StateLanguage: schema → tokens, clamping, errors that name the field."""

import math
import unittest

from kiri.core.language import BOS_TOKEN, StateLanguage, language_from_dict
from kiri.core.model import PULSE_CONFIG, param_count

# The seed's Pulse schema: CPU, memory, disk, swap, load, network (the atom adds its clock).
SEED = {"C": (0, 100, 10), "M": (0, 100, 10), "D": (0, 100, 10), "S": (0, 100, 5), "L": (0, 20, 5), "N": (0, 1, 2)}


class SeedLanguage(unittest.TestCase):
    def setUp(self):
        self.lang = StateLanguage("pulse", SEED)

    def test_seed_schema_gives_43_tokens_and_27840_parameters(self):
        self.assertEqual(self.lang.vocab_size, 43)
        self.assertEqual(self.lang.token_name(self.lang.bos), BOS_TOKEN)
        self.assertEqual(PULSE_CONFIG.vocab_size, 43)
        self.assertEqual(param_count(PULSE_CONFIG), 27840)

    def test_encode_in_schema_order(self):
        ids = self.lang.encode({"N": 1, "L": 5.5, "S": 30, "D": 44, "M": 55, "C": 52})
        self.assertEqual(ids[0], self.lang.bos)
        self.assertEqual(self.lang.decode(ids), "C5 M5 D4 S1 L1 N1")

    def test_bucket_edges(self):
        self.assertEqual(self.lang.decode(self.lang.encode({"C": 0, "M": 100, "D": 9.999, "S": 20, "L": 20, "N": 0})),
                         "C0 M9 D0 S1 L4 N0")

    def test_out_of_range_clamps_and_is_reported(self):
        ids, clamped = self.lang.encode_report({"C": 140, "M": -3, "D": 50, "S": 0, "L": 35, "N": 1})
        self.assertEqual(self.lang.decode(ids), "C9 M0 D5 S0 L4 N1")
        self.assertEqual(clamped, ["C", "M", "L"])

    def test_bad_values_name_the_field(self):
        good = {"C": 1, "M": 1, "D": 1, "S": 1, "L": 1, "N": 1}
        for field, bad in (("C", math.nan), ("M", None), ("D", True), ("S", "high"), ("L", math.inf)):
            with self.subTest(field=field, bad=bad):
                obs = dict(good, **{field: bad})
                with self.assertRaisesRegex(ValueError, f"field {field} must be a finite number, got {bad!r}"):
                    self.lang.encode(obs)
        obs = dict(good)
        del obs["N"]
        with self.assertRaisesRegex(ValueError, "field N is missing"):
            self.lang.encode(obs)

    def test_an_optional_field_missing_or_none_is_absent(self):
        lang = StateLanguage("s", {"P": (0, 3, 6, "optional"), "H": (0, 24, 8)})
        self.assertEqual(lang.decode(lang.encode({"H": 14})), "P_ H4")
        self.assertEqual(lang.decode(lang.encode({"P": None, "H": 14})), "P_ H4")
        self.assertEqual(lang.decode(lang.encode({"P": 0.0, "H": 14})), "P0 H4")
        with self.assertRaisesRegex(ValueError, "field H is missing"):
            lang.encode({"P": 1.0})

    def test_parse_tokens(self):
        ids = self.lang.parse_tokens("C9 M9 D4 S4 L4 N1")
        self.assertEqual(self.lang.decode(ids), "C9 M9 D4 S4 L4 N1")
        for bad in ("C9 M9 D4", "C9 M9 D4 S4 L4 N7", "M9 C9 D4 S4 L4 N1", "C10 M9 D4 S4 L4 N1"):
            with self.subTest(bad=bad), self.assertRaises(ValueError):
                self.lang.parse_tokens(bad)

    def test_token_helpers(self):
        c9 = self.lang.index["C9"]
        self.assertEqual(self.lang.field_of(c9), "C")
        self.assertEqual(self.lang.bucket_range(c9), (90.0, 100.0))
        self.assertEqual([self.lang.tokens[i] for i in self.lang.field_tokens("N")], ["N0", "N1"])

    def test_saved_with_the_weights(self):
        back = language_from_dict(self.lang.to_dict())
        self.assertEqual(back.tokens, self.lang.tokens)
        self.assertEqual(back.schema, self.lang.schema)

    def test_a_saved_language_of_any_wrong_shape_is_a_value_error(self):
        # What a weights file holds, anyone can edit: never a KeyError, TypeError or a hang.
        saved = self.lang.to_dict()
        first = saved["schema"][0]
        for what, d in (("not a dict", ["state"]), ("no kind", {}), ("unknown kind", dict(saved, kind="words")),
                        ("no name", {k: v for k, v in saved.items() if k != "name"}), ("name a number", dict(saved, name=5)),
                        ("schema text", dict(saved, schema="C M")), ("entry text", dict(saved, schema=["C"])),
                        ("entry unhashable", dict(saved, schema=[[[1], 0, 1, 2]])), ("entry short", dict(saved, schema=[first[:3]])),
                        ("field twice", dict(saved, schema=[first, first])), ("lo > hi", dict(saved, schema=[["C", 9, 1, 2]])),
                        ("lo text", dict(saved, schema=[["C", "0", 1, 2]])), ("lo huge", dict(saved, schema=[["C", 10 ** 400, 1, 2]])),
                        ("buckets text", dict(saved, schema=[["C", 0, 1, "10"]])), ("buckets 0", dict(saved, schema=[["C", 0, 1, 0]])),
                        ("a billion buckets", dict(saved, schema=[["C", 0, 1, 10 ** 9]])),
                        ("a fifth part", dict(saved, schema=[["C", 0, 1, 2, "sometimes"]])),
                        ("edges text", dict(saved, schema=[["C", {"edges": "0 1"}]])),
                        ("edges unordered", dict(saved, schema=[["C", {"edges": [2, 1]}]])),
                        ("labels text", dict(saved, schema=[["a", {"labels": "ok"}]])),
                        ("chars a number", {"kind": "char", "chars": 5})):
            with self.subTest(what), self.assertRaises(ValueError):
                language_from_dict(d)

    def test_bad_schema(self):
        for schema in ({}, {"C": (5, 5, 10)}, {"C": (0, 1, 0)}, {"C1": (0, 1, 2)}, {"C": (0, 1)}):
            with self.subTest(schema=schema), self.assertRaises(ValueError):
                StateLanguage("x", schema)


if __name__ == "__main__":
    unittest.main()
