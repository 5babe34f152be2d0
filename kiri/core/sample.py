"""Sampling: draw tokens one at a time from the model's temperature-scaled distribution."""

import math

DEFAULT_TEMPERATURE = 0.5


def probabilities(logits, temperature=1.0):
    """softmax(logits / temperature) on plain floats."""
    if not temperature > 0:
        raise ValueError(f"temperature must be greater than 0, got {temperature}")
    scaled = [logit / temperature for logit in logits]
    top = max(scaled)
    exps = [math.exp(s - top) for s in scaled]
    total = sum(exps)
    return [e / total for e in exps]


def sample_ids(engine, bos, rng, temperature=DEFAULT_TEMPERATURE):
    """One generated document as token ids: starts after BOS, stops at BOS or block_size."""
    decoder = engine.decoder()
    token, out = bos, []
    for _ in range(engine.config.block_size):
        probs = probabilities(decoder.step(token), temperature)
        token = rng.choices(range(len(probs)), weights=probs)[0]
        if token == bos:
            break
        out.append(token)
    return out


def sample(engine, language, rng, n=20, temperature=DEFAULT_TEMPERATURE):
    """`n` generated documents, decoded to text."""
    return [language.decode(sample_ids(engine, language.bos, rng, temperature)) for _ in range(n)]
