"""Training: Adam, the linear learning-rate decay, and the loop that ties them together.

Engine-agnostic: an engine gives `loss_and_grad(batch)`, `flat_params()` and
`set_flat_params(flat)`; this module decides what to feed it and how to step.
"""

import json
import sys
import time
from dataclasses import dataclass, field

LEARNING_RATE = 0.01
BETA1, BETA2, EPS = 0.85, 0.99, 1e-8


class Adam:
    """Adam over one flat list of parameters (microgpt's constants)."""

    def __init__(self, n_params, beta1=BETA1, beta2=BETA2, eps=EPS):
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self.m = [0.0] * n_params
        self.v = [0.0] * n_params
        self.t = 0

    def step(self, params, grads, lr):
        """Return the updated parameters; one pass over flat lists."""
        b1, b2, eps = self.beta1, self.beta2, self.eps
        # 1 - b once, not per parameter: the same floats in a third less time. (g ** 2 and ** 0.5
        # stay: g * g and math.sqrt are faster but differ from them in the last bit now and then.)
        a1, a2 = 1 - b1, 1 - b2
        self.t += 1
        c1, c2 = 1 - b1 ** self.t, 1 - b2 ** self.t
        self.m = m = [b1 * mi + a1 * g for mi, g in zip(self.m, grads)]
        self.v = v = [b2 * vi + a2 * g ** 2 for vi, g in zip(self.v, grads)]
        return [p - lr * (mi / c1) / ((vi / c2) ** 0.5 + eps) for p, mi, vi in zip(params, m, v)]


def lr_at(step, num_steps, lr=LEARNING_RATE):
    """Linear decay from `lr` at step 0 towards 0 at `num_steps`."""
    return lr * (1 - step / num_steps)


@dataclass
class TrainResult:
    losses: list = field(default_factory=list)
    seconds: float = 0.0

    def mean_loss(self, last=100):
        tail = self.losses[-last:]
        return sum(tail) / len(tail) if tail else float("nan")


def train(engine, sequences, steps, rng, batch=1, lr=LEARNING_RATE,
          progress=None, metrics=None, clock=time.monotonic, adam=None):
    """Train `engine` for `steps` steps on token-id `sequences`; returns a TrainResult.

    As in microgpt the documents are shuffled once by `rng` and taken in turn, one per
    step (or `batch` per step, their gradients averaged); each is cut to block_size
    predictions. `progress(step, steps, loss, elapsed)` is called after every step and
    `metrics` (a text file) receives one JSON line per step. `adam` goes on from an earlier
    call's Adam (its moments carry over); by default the optimizer starts afresh.
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    sequences = [s for s in sequences if len(s) >= 2]
    if not sequences:
        raise ValueError("no training sequences (each needs at least two tokens)")
    order = list(sequences)
    rng.shuffle(order)
    window = engine.config.block_size + 1
    adam = Adam(len(engine.flat_params())) if adam is None else adam
    result = TrainResult()
    start = clock()
    for step in range(steps):
        docs = [order[(step * batch + j) % len(order)][:window] for j in range(batch)]
        loss, grads = engine.loss_and_grad(docs)
        lr_t = lr_at(step, steps, lr)
        engine.set_flat_params(adam.step(engine.flat_params(), grads, lr_t))
        elapsed = clock() - start
        result.losses.append(loss)
        if metrics is not None:
            metrics.write(json.dumps({"step": step + 1, "loss": loss, "lr": lr_t, "seconds": round(elapsed, 6)}) + "\n")
        if progress is not None:
            progress(step + 1, steps, loss, elapsed)
    result.seconds = clock() - start
    return result


class Progress:
    """Step, loss, rate and ETA: one rewritten line on a TTY, a plain line now and then otherwise."""

    def __init__(self, stream=None, label="train", every=None):
        self.stream = stream if stream is not None else sys.stderr
        self.label = label
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.every = every

    def __call__(self, step, steps, loss, elapsed):
        rate = step / elapsed if elapsed > 0 else float("inf")
        eta = (steps - step) / rate if rate > 0 else 0.0
        line = f"{self.label} step {step}/{steps} | loss {loss:.4f} | {rate:.1f} steps/s | ETA {eta:.0f}s"
        if self.tty:
            self.stream.write("\r" + line + ("\n" if step == steps else ""))
            self.stream.flush()
        else:
            every = self.every or max(1, steps // 10)
            if step % every == 0 or step == steps or step == 1:
                self.stream.write(line + "\n")
                self.stream.flush()
