"""Training: Adam lowers the loss, the run is reproducible, progress and metrics report it."""

import io
import json
import random
import unittest

from kiri.core.language import CharLanguage
from kiri.core.model import GPTConfig, init_params
from kiri.core.engines import make_engine
from kiri.core.sample import probabilities, sample
from kiri.core.train import Adam, Progress, lr_at, train

DOCS = ["anna", "bob", "abba", "nan", "bab", "ana", "obo", "anon"] * 4


def run(engine="value", steps=30, seed=5, metrics=None, progress=None):
    lang = CharLanguage.from_docs(DOCS)
    cfg = GPTConfig(vocab_size=lang.vocab_size, n_embd=8, n_layer=1, n_head=2, block_size=8)
    rng = random.Random(seed)
    model = make_engine(engine, cfg, init_params(cfg, rng))
    result = train(model, [lang.encode(d) for d in DOCS], steps, rng, metrics=metrics, progress=progress)
    return result, model, lang


class Training(unittest.TestCase):
    def test_loss_goes_down(self):
        result, _, _ = run(steps=40)
        first, last = sum(result.losses[:5]) / 5, sum(result.losses[-5:]) / 5
        self.assertLess(last, first - 0.3)

    def test_same_seed_same_run(self):
        a, _, _ = run(steps=10, seed=9)
        b, _, _ = run(steps=10, seed=9)
        c, _, _ = run(steps=10, seed=10)
        self.assertEqual(a.losses, b.losses)
        self.assertNotEqual(a.losses, c.losses)

    def test_lr_decays_linearly_to_zero(self):
        self.assertEqual(lr_at(0, 100), 0.01)
        self.assertAlmostEqual(lr_at(50, 100), 0.005)
        self.assertAlmostEqual(lr_at(99, 100), 0.0001)

    def test_adam_first_step_moves_by_lr(self):
        # With bias correction, the first step is lr * g/|g| (up to eps) for every parameter.
        adam = Adam(2)
        new = adam.step([1.0, 1.0], [0.5, -2.0], 0.01)
        self.assertAlmostEqual(new[0], 0.99, places=6)
        self.assertAlmostEqual(new[1], 1.01, places=6)

    def test_training_can_go_on_with_the_same_adam(self):
        # Online learning in bursts: the moments carry over, so a burst's first step is
        # sized by the gradients seen before it, not lr * g/|g| for every parameter.
        lang = CharLanguage.from_docs(DOCS)
        cfg = GPTConfig(vocab_size=lang.vocab_size, n_embd=8, n_layer=1, n_head=2, block_size=8)
        docs = [lang.encode(d) for d in DOCS]

        def burst_after_training(adam_goes_on):
            rng = random.Random(5)
            model = make_engine("fast", cfg, init_params(cfg, rng))
            adam = Adam(len(model.flat_params()))
            train(model, docs, 40, rng, adam=adam)
            self.assertEqual(adam.t, 40)
            before = model.flat_params()
            train(model, docs[:1], 1, rng, lr=0.003, adam=adam if adam_goes_on else None)
            self.assertEqual(adam.t, 41 if adam_goes_on else 40)
            return [abs(a - b) for a, b in zip(model.flat_params(), before)]

        def median(xs):
            return sorted(xs)[len(xs) // 2]
        fresh, going_on = burst_after_training(False), burst_after_training(True)
        self.assertGreater(min(d for d in fresh if d > 0), 0.0029, "a fresh Adam moves every parameter it can by lr")
        self.assertLess(median(going_on), median(fresh) / 2, "one that goes on moves most of them far less")

    def test_metrics_file_has_one_json_line_per_step(self):
        buf = io.StringIO()
        run(engine="fast", steps=7, metrics=buf)
        lines = [json.loads(line) for line in buf.getvalue().splitlines()]
        self.assertEqual([m["step"] for m in lines], list(range(1, 8)))
        self.assertEqual(set(lines[0]), {"step", "loss", "lr", "seconds"})
        self.assertEqual(lines[0]["lr"], 0.01)

    def test_progress_plain_lines_when_piped(self):
        buf = io.StringIO()
        run(engine="fast", steps=20, progress=Progress(buf, label="t"))
        lines = buf.getvalue().splitlines()
        self.assertTrue(lines[-1].startswith("t step 20/20 | loss "), lines[-1])
        self.assertIn("steps/s", lines[-1])
        self.assertIn("ETA", lines[-1])
        self.assertLessEqual(len(lines), 12)

    def test_progress_rewrites_one_line_on_a_tty(self):
        class Tty(io.StringIO):
            def isatty(self):
                return True
        buf = Tty()
        progress = Progress(buf, label="t")
        for step in range(1, 4):
            progress(step, 3, 2.5, step * 0.1)
        self.assertEqual(buf.getvalue().count("\r"), 3)
        self.assertTrue(buf.getvalue().endswith("\n"))

    def test_bad_arguments(self):
        with self.assertRaisesRegex(ValueError, "steps"):
            run(steps=0)


class Sampling(unittest.TestCase):
    def test_temperature(self):
        self.assertAlmostEqual(sum(probabilities([1.0, 2.0, 3.0], 0.5)), 1.0)
        cold = probabilities([1.0, 2.0], 0.1)
        warm = probabilities([1.0, 2.0], 10.0)
        self.assertGreater(cold[1], warm[1])
        with self.assertRaisesRegex(ValueError, "temperature"):
            probabilities([1.0], 0)

    def test_samples_stop_at_bos_or_block_size(self):
        _, model, lang = run(engine="fast", steps=30)
        names = sample(model, lang, random.Random(0), n=30, temperature=1.0)
        self.assertEqual(len(names), 30)
        for name in names:
            self.assertLessEqual(len(name), model.config.block_size)
            self.assertTrue(set(name) <= set(lang.chars))


if __name__ == "__main__":
    unittest.main()
