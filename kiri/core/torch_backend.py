"""Optional PyTorch engine: the same GPT, the same parameter names and weights files.

Imported only when `--engine torch` is asked for; KIRI never needs it. It computes in
float64 on the CPU (float32 on Apple's GPU, which has no float64) and exchanges
parameters and gradients with the shared training loop as flat float lists, so Adam,
the schedule and the weights format stay exactly those of the other engines.
"""

import torch

from .model import RMS_EPS, param_shapes


def pick_device():
    if torch.cuda.is_available():
        return torch.device("cuda"), torch.float64
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps"), torch.float32
    return torch.device("cpu"), torch.float64


def rmsnorm(x):
    return x * (x.pow(2).mean(dim=-1, keepdim=True) + RMS_EPS).rsqrt()


class TorchEngine:
    name = "torch"

    def __init__(self, config, params, device=None):
        self.config = config
        self.shapes = param_shapes(config)
        self.device, self.dtype = device or pick_device()
        self.load(params)

    def load(self, params):
        self.p = {name: torch.tensor(params[name], dtype=self.dtype, device=self.device, requires_grad=True)
                  for name in self.shapes}

    def params(self):
        return {name: t.detach().cpu().tolist() for name, t in self.p.items()}

    def flat_params(self):
        return torch.cat([t.detach().reshape(-1) for t in self.p.values()]).cpu().tolist()

    def set_flat_params(self, flat):
        flat = torch.tensor(flat, dtype=self.dtype, device=self.device)
        i = 0
        with torch.no_grad():
            for name, (rows, cols) in self.shapes.items():
                self.p[name].copy_(flat[i:i + rows * cols].view(rows, cols))
                i += rows * cols

    def forward(self, tokens):
        """Logits at every position of `tokens` (a whole sequence, causal attention)."""
        cfg, p = self.config, self.p
        T, H, D = len(tokens), cfg.n_head, cfg.head_dim
        idx = torch.tensor(tokens, device=self.device)
        x = rmsnorm(p["wte"][idx] + p["wpe"][:T])
        causal = torch.ones(T, T, dtype=torch.bool, device=self.device).tril()
        for li in range(cfg.n_layer):
            pre = f"layer{li}."
            xn = rmsnorm(x)
            q, k, v = (xn @ p[pre + w].T for w in ("attn_wq", "attn_wk", "attn_wv"))
            q, k, v = (t.view(T, H, D).transpose(0, 1) for t in (q, k, v))
            logits = (q @ k.transpose(1, 2)) * (D ** 0.5) ** -1
            weights = logits.masked_fill(~causal, float("-inf")).softmax(dim=-1)
            att = (weights @ v).transpose(0, 1).reshape(T, cfg.n_embd)
            x = x + att @ p[pre + "attn_wo"].T
            h = (rmsnorm(x) @ p[pre + "mlp_fc1"].T).relu()
            x = x + h @ p[pre + "mlp_fc2"].T
        return x @ p["lm_head"].T

    def loss_and_grad(self, batch):
        for t in self.p.values():
            t.grad = None
        loss = sum(torch.nn.functional.cross_entropy(self.forward(s[:-1]), torch.tensor(s[1:], device=self.device))
                   for s in batch) / len(batch)
        loss.backward()
        grads = torch.cat([t.grad.reshape(-1) for t in self.p.values()])
        return loss.item(), grads.cpu().tolist()

    def decoder(self):
        return TorchDecoder(self)


class TorchDecoder:
    """Sampling and scoring one token at a time; recomputes the short prefix each step."""

    def __init__(self, engine):
        self.engine, self.tokens = engine, []

    def step(self, token):
        self.tokens.append(token)
        with torch.no_grad():
            return self.engine.forward(self.tokens)[-1].cpu().tolist()
