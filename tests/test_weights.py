"""Weights files: round trip, validation with clear errors, atomic saves, fallback."""

import json
import os
import random
import tempfile
import unittest
from pathlib import Path
from unittest import mock

from kiri.core.language import CharLanguage
from kiri.core.model import GPTConfig, init_params
from kiri.core.weights import Weights, WeightsError, load, load_with_fallback, previous_path, save

CFG = GPTConfig(vocab_size=4, n_embd=4, n_layer=1, n_head=2, block_size=3)


def weights(seed=0):
    return Weights(CFG, CharLanguage("abc").to_dict(), init_params(CFG, random.Random(seed)), step=5,
                   threshold={"score": 1.5}, trained_on={"docs": 3})


class WeightsFiles(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.path = Path(self.dir.name) / "m.json"

    def tearDown(self):
        self.dir.cleanup()

    def write_doc(self, mutate):
        doc = weights().to_json()
        mutate(doc)
        self.path.write_text(json.dumps(doc))

    def test_round_trip_is_exact(self):
        w = weights()
        save(self.path, w)
        back = load(self.path)
        self.assertEqual(back.params, w.params)
        self.assertEqual(back.config, CFG)
        self.assertEqual(back.language, w.language)
        self.assertEqual((back.step, back.threshold, back.trained_on), (5, {"score": 1.5}, {"docs": 3}))
        self.assertEqual(json.loads(self.path.read_text())["format"], "kiri-weights/1")

    def test_previous_file_is_kept(self):
        save(self.path, weights(1))
        save(self.path, weights(2))
        self.assertEqual(previous_path(self.path).name, "m.prev.json")
        self.assertEqual(load(previous_path(self.path)).params, weights(1).params)
        self.assertEqual(load(self.path).params, weights(2).params)

    def test_missing_file(self):
        with self.assertRaisesRegex(WeightsError, "m.json: no such weights file"):
            load(self.path)

    def test_truncated_file(self):
        save(self.path, weights())
        text = self.path.read_text()
        self.path.write_text(text[: len(text) // 2])
        with self.assertRaisesRegex(WeightsError, r"m\.json: not valid JSON"):
            load(self.path)

    def test_wrong_shapes(self):
        self.write_doc(lambda d: d["params"]["wte"].pop())
        with self.assertRaisesRegex(WeightsError, "'wte' does not have shape 4x4"):
            load(self.path)

    def test_missing_parameter(self):
        self.write_doc(lambda d: d["params"].pop("lm_head"))
        with self.assertRaisesRegex(WeightsError, "missing \\['lm_head'\\]"):
            load(self.path)

    def test_nan(self):
        def poison(d):
            d["params"]["wpe"][1][2] = float("nan")
        self.write_doc(poison)
        with self.assertRaisesRegex(WeightsError, "'wpe' holds a non-finite"):
            load(self.path)

    def test_wrong_format_tag(self):
        self.write_doc(lambda d: d.update(format="kiri-weights/99"))
        with self.assertRaisesRegex(WeightsError, "unknown format 'kiri-weights/99'"):
            load(self.path)

    def test_bad_config(self):
        self.write_doc(lambda d: d["config"].update(n_head=3))
        with self.assertRaisesRegex(WeightsError, "bad model config"):
            load(self.path)

    def test_refuses_to_save_nan(self):
        w = weights()
        w.params["wte"][0][0] = float("inf")
        with self.assertRaises(WeightsError):
            save(self.path, w)
        self.assertFalse(self.path.exists())

    def test_crash_before_rename_leaves_old_file_intact(self):
        save(self.path, weights(1))
        before = self.path.read_bytes()
        real_replace = os.replace

        def crash_on_final_rename(src, dst):
            if Path(dst) == self.path:
                raise OSError("power cut")
            real_replace(src, dst)

        with mock.patch("kiri.ground.os.replace", side_effect=crash_on_final_rename):
            with self.assertRaisesRegex(OSError, "power cut"):
                save(self.path, weights(2))
        self.assertEqual(self.path.read_bytes(), before)
        self.assertEqual(load(self.path).params, weights(1).params)
        self.assertEqual(sorted(os.listdir(self.dir.name)), ["m.json", "m.prev.json"])  # no temp left

    def test_fallback_to_previous_good_weights(self):
        save(self.path, weights(1))
        save(self.path, weights(2))
        self.path.write_text("{broken")
        w, used, error = load_with_fallback(self.path)
        self.assertEqual(used.name, "m.prev.json")
        self.assertEqual(w.params, weights(1).params)
        self.assertIn("not valid JSON", str(error))


if __name__ == "__main__":
    unittest.main()
