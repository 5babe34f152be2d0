"""The fast engine agrees with the scalar-autograd reference: gradients, training, inference."""

import random
import unittest

from kiri.core.fast import FastEngine
from kiri.core.model import NAMES_CONFIG, PULSE_CONFIG, GPTConfig, ValueEngine, init_params
from kiri.core.surprise import token_surprises
from kiri.core.train import train

REL = 1e-9


class Agreement(unittest.TestCase):
    def assertClose(self, a, b, what):
        # Relative 1e-9, with a floor far below any gradient that matters (1e-15 absolute).
        self.assertLessEqual(abs(a - b), REL * max(abs(a), abs(b)) + 1e-15, f"{what}: {a} vs {b}")

    def assertGradsAgree(self, config, seq_len, seed, batch=1):
        rng = random.Random(seed)
        params = init_params(config, rng)
        seqs = [[rng.randrange(config.vocab_size) for _ in range(seq_len + 1)] for _ in range(batch)]
        loss_v, grad_v = ValueEngine(config, params).loss_and_grad(seqs)
        loss_f, grad_f = FastEngine(config, params).loss_and_grad(seqs)
        self.assertClose(loss_v, loss_f, f"loss {config} T={seq_len}")
        self.assertEqual(len(grad_v), len(grad_f))
        for i, (a, b) in enumerate(zip(grad_v, grad_f)):
            self.assertClose(a, b, f"grad[{i}] {config} T={seq_len}")

    def test_gradients_over_a_grid_of_models(self):
        rng = random.Random(0)
        cases = []
        for n_layer in (1, 2, 3):
            for n_head in (1, 2, 4):
                n_embd = rng.choice([d for d in (4, 8, 12, 16) if d % n_head == 0])
                block = rng.choice((3, 6, 8))
                cases.append((GPTConfig(vocab_size=rng.randrange(3, 12), n_embd=n_embd, n_layer=n_layer,
                                        n_head=n_head, block_size=block), rng.randint(1, block)))
        for config, seq_len in cases:
            with self.subTest(config=config, seq_len=seq_len):
                self.assertGradsAgree(config, seq_len, seed=seq_len)

    def test_every_sequence_length(self):
        config = GPTConfig(vocab_size=5, n_embd=8, n_layer=2, n_head=2, block_size=6)
        for seq_len in range(1, config.block_size + 1):
            with self.subTest(seq_len=seq_len):
                self.assertGradsAgree(config, seq_len, seed=100 + seq_len)

    def test_names_config(self):
        self.assertGradsAgree(NAMES_CONFIG, 16, seed=1)
        self.assertGradsAgree(NAMES_CONFIG, 5, seed=2)

    def test_pulse_config(self):
        self.assertGradsAgree(PULSE_CONFIG, 7, seed=3)

    def test_wide_model(self):
        self.assertGradsAgree(GPTConfig(vocab_size=9, n_embd=32, n_layer=1, n_head=4, block_size=4), 4, seed=4)

    def test_batches_average_gradients(self):
        self.assertGradsAgree(GPTConfig(vocab_size=6, n_embd=8, n_layer=1, n_head=2, block_size=5), 4, seed=5, batch=3)

    def test_repeated_tokens_accumulate_embedding_gradients(self):
        config = GPTConfig(vocab_size=3, n_embd=4, n_layer=1, n_head=1, block_size=6)
        params = init_params(config, random.Random(6))
        seq = [[0, 1, 0, 1, 0, 1, 2]]
        _, gv = ValueEngine(config, params).loss_and_grad(seq)
        _, gf = FastEngine(config, params).loss_and_grad(seq)
        for a, b in zip(gv, gf):
            self.assertClose(a, b, "grad")


class Trajectories(unittest.TestCase):
    def test_twenty_steps_match(self):
        config = GPTConfig(vocab_size=8, n_embd=8, n_layer=2, n_head=2, block_size=8)
        data_rng = random.Random(11)
        seqs = [[7] + [data_rng.randrange(7) for _ in range(data_rng.randint(2, 8))] + [7] for _ in range(30)]
        results = {}
        for engine_cls in (ValueEngine, FastEngine):
            rng = random.Random(42)
            engine = engine_cls(config, init_params(config, rng))
            results[engine_cls.name] = (train(engine, seqs, 20, rng).losses, engine.flat_params())
        (loss_v, w_v), (loss_f, w_f) = results["value"], results["fast"]
        for a, b in zip(loss_v, loss_f):
            self.assertLessEqual(abs(a - b), 1e-9 * abs(a))
        for a, b in zip(w_v, w_f):
            self.assertLessEqual(abs(a - b), 1e-9 * max(1.0, abs(a)))


class Inference(unittest.TestCase):
    def test_kv_cache_matches_whole_sequence(self):
        for config in (NAMES_CONFIG, PULSE_CONFIG, GPTConfig(vocab_size=5, n_embd=6, n_layer=3, n_head=3, block_size=7)):
            rng = random.Random(7)
            engine = FastEngine(config, init_params(config, rng))
            tokens = [rng.randrange(config.vocab_size) for _ in range(config.block_size)]
            whole = engine.sequence_logits(tokens)
            decoder = engine.decoder()
            for pos, token in enumerate(tokens):
                step = decoder.step(token)
                for a, b in zip(whole[pos], step):
                    self.assertAlmostEqual(a, b, delta=1e-12)

    def test_logits_of_the_last_positions_are_those_of_the_whole_sequence(self):
        for config in (PULSE_CONFIG, GPTConfig(vocab_size=5, n_embd=6, n_layer=3, n_head=3, block_size=7)):
            rng = random.Random(9)
            engine = FastEngine(config, init_params(config, rng))
            tokens = [rng.randrange(config.vocab_size) for _ in range(config.block_size)]
            whole = engine.sequence_logits(tokens)
            for last in (1, 2, len(tokens)):
                self.assertEqual(engine.sequence_logits(tokens, last=last), whole[-last:])   # the same floats

    def test_fast_and_reference_decoders_agree(self):
        config = GPTConfig(vocab_size=7, n_embd=8, n_layer=2, n_head=4, block_size=6)
        params = init_params(config, random.Random(8))
        dv, df = ValueEngine(config, params).decoder(), FastEngine(config, params).decoder()
        for token in (6, 1, 2, 3, 0):
            for a, b in zip(dv.step(token), df.step(token)):
                self.assertAlmostEqual(a, b, delta=1e-12)

    def test_surprises_agree_between_engines(self):
        config = PULSE_CONFIG
        params = init_params(config, random.Random(9))
        tokens = [42, 5, 15, 24, 30, 35, 40]
        sv = token_surprises(ValueEngine(config, params), tokens)
        sf = token_surprises(FastEngine(config, params), tokens)
        for a, b in zip(sv, sf):
            self.assertEqual((a.token, a.expected), (b.token, b.expected))
            self.assertAlmostEqual(a.surprise, b.surprise, delta=1e-12)


if __name__ == "__main__":
    unittest.main()
