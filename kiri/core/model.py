"""The GPT of microgpt: configuration, parameters, and the forward pass over Values.

Token + position embedding -> RMSNorm -> n_layer x [RMSNorm -> causal multi-head
attention -> residual; RMSNorm -> fc1 (4x) -> ReLU -> fc2 -> residual] -> lm_head.
RMSNorm has no learned weights. The forward pass takes one token at a time and keeps
the keys and values of earlier positions in a cache, exactly as microgpt does.

Parameters are plain nested lists of floats (`{name: [[float, ...], ...]}`); each
engine wraps them in whatever it computes with. That keeps the weights file, the
initialisation and the parameter order the same for every engine.
"""

from dataclasses import asdict, dataclass

from .value import Value

INIT_STD = 0.08
RMS_EPS = 1e-5


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int
    n_embd: int = 16
    n_layer: int = 1
    n_head: int = 4
    block_size: int = 16

    def __post_init__(self):
        for field in ("vocab_size", "n_embd", "n_layer", "n_head", "block_size"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"model config: {field} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"model config: n_embd {self.n_embd} is not divisible by n_head {self.n_head}")

    @property
    def head_dim(self):
        return self.n_embd // self.n_head

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        return cls(**{k: d[k] for k in ("vocab_size", "n_embd", "n_layer", "n_head", "block_size")})


NAMES_CONFIG = GPTConfig(vocab_size=27, n_embd=16, n_layer=1, n_head=4, block_size=16)
PULSE_CONFIG = GPTConfig(vocab_size=43, n_embd=32, n_layer=2, n_head=4, block_size=16)


def param_shapes(config):
    """Parameter names and (rows, cols) in microgpt's order, which is also the init order."""
    e = config.n_embd
    shapes = {
        "wte": (config.vocab_size, e),
        "wpe": (config.block_size, e),
        "lm_head": (config.vocab_size, e),
    }
    for i in range(config.n_layer):
        shapes[f"layer{i}.attn_wq"] = (e, e)
        shapes[f"layer{i}.attn_wk"] = (e, e)
        shapes[f"layer{i}.attn_wv"] = (e, e)
        shapes[f"layer{i}.attn_wo"] = (e, e)
        shapes[f"layer{i}.mlp_fc1"] = (4 * e, e)
        shapes[f"layer{i}.mlp_fc2"] = (e, 4 * e)
    return shapes


def param_count(config):
    return sum(rows * cols for rows, cols in param_shapes(config).values())


def init_params(config, rng):
    """Gaussian(0, 0.08) weights drawn from `rng` (a random.Random) in a fixed order."""
    return {
        name: [[rng.gauss(0, INIT_STD) for _ in range(cols)] for _ in range(rows)]
        for name, (rows, cols) in param_shapes(config).items()
    }


def flatten(params):
    """All parameters as one flat list, in param_shapes order."""
    return [x for matrix in params.values() for row in matrix for x in row]


def unflatten(flat, config):
    params, i = {}, 0
    for name, (rows, cols) in param_shapes(config).items():
        params[name] = [flat[i + r * cols:i + (r + 1) * cols] for r in range(rows)]
        i += rows * cols
    return params


# --- the forward pass over Values (the reference engine) ---------------------------

def linear(x, w):
    return [sum(wi * xi for wi, xi in zip(row, x)) for row in w]


def softmax(logits):
    max_val = max(val.data for val in logits)  # shift for stability; a constant, no gradient
    exps = [(val - max_val).exp() for val in logits]
    total = sum(exps)
    return [e / total for e in exps]


def rmsnorm(x):
    ms = sum(xi * xi for xi in x) / len(x)
    scale = (ms + RMS_EPS) ** -0.5
    return [xi * scale for xi in x]


def gpt(state, config, token_id, pos_id, keys, values):
    """Logits for the token after `token_id` at `pos_id`; appends to the KV cache."""
    head_dim = config.head_dim
    x = [t + p for t, p in zip(state["wte"][token_id], state["wpe"][pos_id])]
    x = rmsnorm(x)
    for li in range(config.n_layer):
        # 1) multi-head causal self-attention
        x_residual = x
        x = rmsnorm(x)
        q = linear(x, state[f"layer{li}.attn_wq"])
        k = linear(x, state[f"layer{li}.attn_wk"])
        v = linear(x, state[f"layer{li}.attn_wv"])
        keys[li].append(k)
        values[li].append(v)
        x_attn = []
        for h in range(config.n_head):
            hs = h * head_dim
            q_h = q[hs:hs + head_dim]
            k_h = [ki[hs:hs + head_dim] for ki in keys[li]]
            v_h = [vi[hs:hs + head_dim] for vi in values[li]]
            attn_logits = [sum(q_h[j] * k_t[j] for j in range(head_dim)) / head_dim ** 0.5 for k_t in k_h]
            attn_weights = softmax(attn_logits)
            x_attn.extend(sum(attn_weights[t] * v_h[t][j] for t in range(len(v_h))) for j in range(head_dim))
        x = linear(x_attn, state[f"layer{li}.attn_wo"])
        x = [a + b for a, b in zip(x, x_residual)]
        # 2) MLP
        x_residual = x
        x = rmsnorm(x)
        x = linear(x, state[f"layer{li}.mlp_fc1"])
        x = [xi.relu() for xi in x]
        x = linear(x, state[f"layer{li}.mlp_fc2"])
        x = [a + b for a, b in zip(x, x_residual)]
    return linear(x, state["lm_head"])


class ValueEngine:
    """The reference engine: every scalar a Value, backward() is all of backpropagation."""

    name = "value"

    def __init__(self, config, params):
        self.config = config
        self.load(params)

    def load(self, params):
        self.state = {name: [[Value(x) for x in row] for row in m] for name, m in params.items()}
        self._flat = [p for m in self.state.values() for row in m for p in row]

    def params(self):
        return {name: [[p.data for p in row] for row in m] for name, m in self.state.items()}

    def flat_params(self):
        return [p.data for p in self._flat]

    def set_flat_params(self, flat):
        for p, x in zip(self._flat, flat):
            p.data = x

    def _sequence_loss(self, tokens):
        n = len(tokens) - 1
        keys = [[] for _ in range(self.config.n_layer)]
        values = [[] for _ in range(self.config.n_layer)]
        losses = []
        for pos in range(n):
            probs = softmax(gpt(self.state, self.config, tokens[pos], pos, keys, values))
            losses.append(-probs[tokens[pos + 1]].log())
        return (1 / n) * sum(losses)

    def loss_and_grad(self, batch):
        """Mean cross-entropy over each sequence, averaged over the batch; flat gradient."""
        for p in self._flat:
            p.grad = 0.0
        loss = (1 / len(batch)) * sum(self._sequence_loss(tokens) for tokens in batch)
        loss.backward()
        return loss.data, [p.grad for p in self._flat]

    def decoder(self):
        return ValueDecoder(self.state, self.config)


class ValueDecoder:
    """Feeds tokens one at a time; each step returns the next-token logits as floats."""

    def __init__(self, state, config):
        self.state, self.config, self.pos = state, config, 0
        self.keys = [[] for _ in range(config.n_layer)]
        self.values = [[] for _ in range(config.n_layer)]

    def step(self, token):
        logits = gpt(self.state, self.config, token, self.pos, self.keys, self.values)
        self.pos += 1
        return [logit.data for logit in logits]
