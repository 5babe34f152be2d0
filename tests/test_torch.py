"""The optional torch engine: same weights, same losses; a clear line when torch is missing."""

import importlib.util
import random
import sys
import tempfile
import unittest
from pathlib import Path

from kiri.core.engines import make_engine, torch_hint
from kiri.core.model import NAMES_CONFIG, GPTConfig, init_params
from kiri.core.train import train
from tests.helpers import run_kiri

HAVE_TORCH = importlib.util.find_spec("torch") is not None


@unittest.skipUnless(HAVE_TORCH, "torch is not installed")
class TorchEngineAgrees(unittest.TestCase):
    def test_twenty_steps_within_1e_5_of_fast(self):
        config = GPTConfig(vocab_size=10, n_embd=16, n_layer=2, n_head=4, block_size=8)
        data_rng = random.Random(3)
        seqs = [[9] + [data_rng.randrange(9) for _ in range(data_rng.randint(2, 8))] + [9] for _ in range(25)]
        losses = {}
        for name in ("fast", "torch"):
            rng = random.Random(42)
            engine = make_engine(name, config, init_params(config, rng))
            losses[name] = train(engine, seqs, 20, rng).losses
        for a, b in zip(losses["fast"], losses["torch"]):
            self.assertLess(abs(a - b), 1e-5)

    def test_same_weights_same_logits(self):
        params = init_params(NAMES_CONFIG, random.Random(1))
        fast, torch_engine = make_engine("fast", NAMES_CONFIG, params), make_engine("torch", NAMES_CONFIG, params)
        self.assertEqual(torch_engine.params(), fast.params())
        df, dt = fast.decoder(), torch_engine.decoder()
        for token in (26, 0, 4, 11):
            for a, b in zip(df.step(token), dt.step(token)):
                self.assertAlmostEqual(a, b, delta=1e-6)


class TorchMissing(unittest.TestCase):
    def test_clear_line_when_torch_cannot_be_imported(self):
        with tempfile.TemporaryDirectory() as tmp:
            fake = Path(tmp) / "torch"
            fake.mkdir()
            (fake / "__init__.py").write_text("raise ImportError('No module named torch')\n")
            proc = run_kiri("names", "sample", "-n", 1, "--engine", "torch", home=tmp, env={"PYTHONPATH": tmp + ":."})
        self.assertNotEqual(proc.returncode, 0)
        self.assertEqual(proc.stderr.strip(), f"kiri: error: {torch_hint(sys.executable)}")
        self.assertIn(" -m pip install torch", proc.stderr)
        self.assertNotIn("kiri[", proc.stderr)   # `kiri` on the package index is another project


if __name__ == "__main__":
    unittest.main()
