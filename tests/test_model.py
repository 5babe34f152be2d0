"""The microgpt GPT: parameter counts, shapes, the tokenizer, gradients vs finite differences."""

import random
import unittest

from kiri.core.language import CharLanguage
from kiri.core.model import (NAMES_CONFIG, PULSE_CONFIG, GPTConfig, ValueEngine, flatten, init_params,
                             param_count, param_shapes, unflatten)


def small_config():
    return GPTConfig(vocab_size=6, n_embd=8, n_layer=2, n_head=2, block_size=5)


class ModelShapes(unittest.TestCase):
    def test_parameter_counts(self):
        self.assertEqual(param_count(NAMES_CONFIG), 4192)
        self.assertEqual(param_count(PULSE_CONFIG), 27840)

    def test_parameter_names_and_order(self):
        names = list(param_shapes(PULSE_CONFIG))
        self.assertEqual(names[:3], ["wte", "wpe", "lm_head"])
        self.assertIn("layer1.attn_wo", names)
        self.assertIn("layer0.mlp_fc2", names)
        self.assertEqual(param_shapes(PULSE_CONFIG)["layer0.mlp_fc1"], (128, 32))

    def test_init_is_seeded_and_gaussian(self):
        a = init_params(NAMES_CONFIG, random.Random(7))
        b = init_params(NAMES_CONFIG, random.Random(7))
        self.assertEqual(a, b)
        flat = flatten(a)
        std = (sum(x * x for x in flat) / len(flat)) ** 0.5
        self.assertAlmostEqual(std, 0.08, delta=0.005)
        self.assertEqual(unflatten(flat, NAMES_CONFIG), a)

    def test_output_shape(self):
        cfg = small_config()
        engine = ValueEngine(cfg, init_params(cfg, random.Random(0)))
        decoder = engine.decoder()
        for token in [5, 1, 2]:
            logits = decoder.step(token)
            self.assertEqual(len(logits), cfg.vocab_size)

    def test_bad_config_is_an_error(self):
        with self.assertRaisesRegex(ValueError, "n_head"):
            GPTConfig(vocab_size=5, n_embd=10, n_head=4)
        with self.assertRaisesRegex(ValueError, "vocab_size"):
            GPTConfig(vocab_size=0)


class Tokenizer(unittest.TestCase):
    def test_bos_wraps_each_document(self):
        lang = CharLanguage.from_docs(["emma", "ava", "zoe"])
        self.assertEqual(lang.chars, sorted(set("emmaavazoe")))
        self.assertEqual(lang.bos, len(lang.chars))
        ids = lang.encode("ava")
        self.assertEqual(ids[0], lang.bos)
        self.assertEqual(ids[-1], lang.bos)
        self.assertEqual(lang.decode(ids), "ava")

    def test_names_vocabulary_is_27(self):
        lang = CharLanguage("abcdefghijklmnopqrstuvwxyz")
        self.assertEqual(lang.vocab_size, 27)

    def test_unknown_character_is_named(self):
        with self.assertRaisesRegex(ValueError, "'!'"):
            CharLanguage("ab").encode("a!")


class GradientVsFiniteDifferences(unittest.TestCase):
    def test_sampled_parameters(self):
        cfg = small_config()
        rng = random.Random(3)
        params = init_params(cfg, rng)
        tokens = [5, 0, 3, 2, 4, 1]
        engine = ValueEngine(cfg, params)
        _, grads = engine.loss_and_grad([tokens])
        flat = engine.flat_params()
        h = 1e-6
        for i in rng.sample(range(len(flat)), 40):
            def loss_at(x):
                probe = list(flat); probe[i] = x
                e = ValueEngine(cfg, unflatten(probe, cfg))
                return e.loss_and_grad([tokens])[0]
            numeric = (loss_at(flat[i] + h) - loss_at(flat[i] - h)) / (2 * h)
            self.assertAlmostEqual(grads[i], numeric, delta=1e-6 + 1e-4 * abs(numeric), msg=f"parameter {i}")


if __name__ == "__main__":
    unittest.main()
