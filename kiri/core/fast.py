"""The fast engine: microgpt's GPT on plain lists of floats, with a hand-written backward.

Same parameters, same initialisation, same math as `model.py`, but instead of building
a graph of Value objects per scalar, each layer is computed for the whole sequence at
once and differentiated by hand. The inner loops are C-level builtins: a dot product is
`sum(map(mul, a, b))`, and the weight gradient of a linear layer is a table of dot
products between the transposed output gradients and the transposed inputs.

Shapes: a sequence of T positions is a list of T row vectors; `W` is (n_out, n_in) as in
microgpt, so `linear(W, x)[o] = sum_i W[o][i] * x[i]`.
"""

import math
from operator import mul

from .model import RMS_EPS, flatten, param_shapes


def transpose(rows):
    return [list(col) for col in zip(*rows)]


def linear(W, X):
    """W @ x for every row x of X."""
    return [[sum(map(mul, w, x)) for w in W] for x in X]


def linear_backward(W_T, X, dY):
    """Gradients of Y = linear(W, X): returns (dX, dW); W_T is W transposed."""
    dX = [[sum(map(mul, col, dy)) for col in W_T] for dy in dY]
    X_T = transpose(X)
    dW = [[sum(map(mul, dy_o, x_i)) for x_i in X_T] for dy_o in transpose(dY)]
    return dX, dW


def rmsnorm(X):
    """Each row scaled to unit root-mean-square; returns (Y, scales)."""
    Y, scales = [], []
    n = len(X[0])
    for x in X:
        s = (sum(map(mul, x, x)) / n + RMS_EPS) ** -0.5
        Y.append([xi * s for xi in x])
        scales.append(s)
    return Y, scales


def rmsnorm_backward(X, scales, dY):
    # y = x*s with s = (mean(x^2) + eps)^-1/2  =>  dx = s*dy - (s^3/n) * (dy . x) * x
    n = len(X[0])
    dX = []
    for x, s, dy in zip(X, scales, dY):
        c = s * s * s / n * sum(map(mul, dy, x))
        dX.append([s * g - c * xi for g, xi in zip(dy, x)])
    return dX


def softmax(z):
    top = max(z)
    exps = [math.exp(v - top) for v in z]
    total = sum(exps)
    return [e / total for e in exps]


def add(A, B):
    return [[a + b for a, b in zip(ra, rb)] for ra, rb in zip(A, B)]


def attention(Q, K, V, n_head, first=0):
    """Causal multi-head attention; returns (out, weights per head). Q's rows are the
    positions first, first+1, … of K and V's rows (all of them when first is 0)."""
    T, E = len(K), len(K[0])
    D = E // n_head
    scale = (D ** 0.5) ** -1
    out = [[] for _ in Q]
    weights = []
    for h in range(n_head):
        hs = slice(h * D, (h + 1) * D)
        q = [row[hs] for row in Q]
        k = [row[hs] for row in K]
        v_T = transpose([row[hs] for row in V])
        A = []
        for i, q_t in enumerate(q):
            t = first + i
            a = softmax([sum(map(mul, q_t, k[s])) * scale for s in range(t + 1)])
            out[i].extend([sum(map(mul, a, v_j)) for v_j in v_T])  # map stops at len(a): causal
            A.append(a + [0.0] * (T - 1 - t))
        weights.append(A)
    return out, weights


def attention_backward(Q, K, V, weights, dOut, n_head):
    T, E = len(Q), len(Q[0])
    D = E // n_head
    scale = (D ** 0.5) ** -1
    dQ = [[] for _ in range(T)]
    dK = [[] for _ in range(T)]
    dV = [[] for _ in range(T)]
    for h in range(n_head):
        hs = slice(h * D, (h + 1) * D)
        q = [row[hs] for row in Q]
        k = [row[hs] for row in K]
        v = [row[hs] for row in V]
        dO = [row[hs] for row in dOut]
        A = weights[h]
        dZ = []
        for t in range(T):
            a = A[t]
            da = [sum(map(mul, dO[t], v[s])) for s in range(t + 1)]
            mean = sum(map(mul, a, da))
            dZ.append([a_s * (da_s - mean) * scale for a_s, da_s in zip(a, da)] + [0.0] * (T - 1 - t))
        k_T, q_T, dO_T = transpose(k), transpose(q), transpose(dO)
        dZ_T, A_T = transpose(dZ), transpose(A)
        for t in range(T):
            dQ[t].extend([sum(map(mul, dZ[t], k_j)) for k_j in k_T])
            dK[t].extend([sum(map(mul, dZ_T[t], q_j)) for q_j in q_T])
            dV[t].extend([sum(map(mul, A_T[t], dO_j)) for dO_j in dO_T])
    return dQ, dK, dV


class FastEngine:
    """The production engine; same interface as model.ValueEngine."""

    name = "fast"

    def __init__(self, config, params):
        self.config = config
        self.shapes = param_shapes(config)
        self.load(params)

    def load(self, params):
        self.p = {name: [list(map(float, row)) for row in params[name]] for name in self.shapes}
        self._transposed = {}

    def params(self):
        return {name: [list(row) for row in m] for name, m in self.p.items()}

    def flat_params(self):
        return flatten(self.p)

    def set_flat_params(self, flat):
        i = 0
        for name, (rows, cols) in self.shapes.items():
            self.p[name] = [flat[j:j + cols] for j in range(i, i + rows * cols, cols)]
            i += rows * cols
        self._transposed = {}

    def T(self, name):
        """The transpose of a weight matrix, cached until the weights change."""
        if name not in self._transposed:
            self._transposed[name] = transpose(self.p[name])
        return self._transposed[name]

    # --- whole-sequence forward and backward --------------------------------------

    def forward(self, tokens, first=0):
        """Logits for every position of `tokens` from `first` on, and what backward needs to
        remember (backward needs every position: first 0). Earlier positions still give the
        last layer their keys and values, but nothing after that is computed for them."""
        p, cfg = self.p, self.config
        X0 = [[a + b for a, b in zip(p["wte"][tok], p["wpe"][t])] for t, tok in enumerate(tokens)]
        x, s0 = rmsnorm(X0)
        layers = []
        for li in range(cfg.n_layer):
            pre = f"layer{li}."
            c = {"x": x}
            c["xn"], c["s1"] = rmsnorm(x)
            rows = first if li == cfg.n_layer - 1 else 0
            c["q"] = linear(p[pre + "attn_wq"], c["xn"][rows:])
            c["k"] = linear(p[pre + "attn_wk"], c["xn"])
            c["v"] = linear(p[pre + "attn_wv"], c["xn"])
            c["att"], c["a"] = attention(c["q"], c["k"], c["v"], cfg.n_head, rows)
            x = add(linear(p[pre + "attn_wo"], c["att"]), x[rows:])
            c["x2"] = x
            c["xn2"], c["s2"] = rmsnorm(x)
            c["h"] = [[v if v > 0.0 else 0.0 for v in row] for row in linear(p[pre + "mlp_fc1"], c["xn2"])]
            x = add(linear(p[pre + "mlp_fc2"], c["h"]), x)
            layers.append(c)
        logits = linear(p["lm_head"], x)
        return logits, (tokens, X0, s0, layers, x)

    def backward(self, cache, dlogits):
        """Gradients of every parameter, given d(loss)/d(logits) for each position."""
        tokens, X0, s0, layers, x_final = cache
        grads = {}
        dx, grads["lm_head"] = linear_backward(self.T("lm_head"), x_final, dlogits)
        for li in reversed(range(self.config.n_layer)):
            pre, c = f"layer{li}.", layers[li]
            # MLP: x_out = x2 + fc2(relu(fc1(rmsnorm(x2))))
            dh, grads[pre + "mlp_fc2"] = linear_backward(self.T(pre + "mlp_fc2"), c["h"], dx)
            dh = [[g if hv > 0 else 0.0 for g, hv in zip(dg, hrow)] for dg, hrow in zip(dh, c["h"])]
            dxn2, grads[pre + "mlp_fc1"] = linear_backward(self.T(pre + "mlp_fc1"), c["xn2"], dh)
            dx = add(dx, rmsnorm_backward(c["x2"], c["s2"], dxn2))
            # attention: x2 = x + wo(attention(wq xn, wk xn, wv xn)), xn = rmsnorm(x)
            datt, grads[pre + "attn_wo"] = linear_backward(self.T(pre + "attn_wo"), c["att"], dx)
            dq, dk, dv = attention_backward(c["q"], c["k"], c["v"], c["a"], datt, self.config.n_head)
            dxn_q, grads[pre + "attn_wq"] = linear_backward(self.T(pre + "attn_wq"), c["xn"], dq)
            dxn_k, grads[pre + "attn_wk"] = linear_backward(self.T(pre + "attn_wk"), c["xn"], dk)
            dxn_v, grads[pre + "attn_wv"] = linear_backward(self.T(pre + "attn_wv"), c["xn"], dv)
            dxn = [[a + b + d for a, b, d in zip(ra, rb, rd)] for ra, rb, rd in zip(dxn_q, dxn_k, dxn_v)]
            dx = add(dx, rmsnorm_backward(c["x"], c["s1"], dxn))
        dX0 = rmsnorm_backward(X0, s0, dx)
        E = self.config.n_embd
        grads["wte"] = [[0.0] * E for _ in range(self.config.vocab_size)]
        grads["wpe"] = [[0.0] * E for _ in range(self.config.block_size)]
        for t, (tok, g) in enumerate(zip(tokens, dX0)):
            grads["wte"][tok] = [a + b for a, b in zip(grads["wte"][tok], g)]
            grads["wpe"][t] = g
        return grads

    def sequence_loss_grad(self, tokens, weight):
        """Mean cross-entropy of predicting tokens[1:] from tokens[:-1], times `weight`."""
        inputs, targets = tokens[:-1], tokens[1:]
        logits, cache = self.forward(inputs)
        n = len(inputs)
        loss, dlogits = 0.0, []
        for z, target in zip(logits, targets):
            probs = softmax(z)
            loss -= math.log(probs[target])
            probs[target] -= 1.0
            dlogits.append([pr * weight / n for pr in probs])
        return loss / n * weight, self.backward(cache, dlogits)

    def loss_and_grad(self, batch):
        """Mean loss over the batch and the flat gradient (same order as flat_params)."""
        weight = 1.0 / len(batch)
        total, flat = 0.0, None
        for tokens in batch:
            loss, grads = self.sequence_loss_grad(tokens, weight)
            total += loss
            g = flatten({name: grads[name] for name in self.shapes})
            flat = g if flat is None else [a + b for a, b in zip(flat, g)]
        return total, flat

    def sequence_logits(self, tokens, last=None):
        """Next-token logits at every position, computed for the whole sequence at once — or
        at the `last` positions only (the stream detector reads 2 of 15 per row)."""
        return self.forward(tokens, 0 if last is None else len(tokens) - last)[0]

    def decoder(self):
        return FastDecoder(self)


class FastDecoder:
    """Incremental forward with a KV cache: one token in, next-token logits out."""

    def __init__(self, engine):
        self.engine, self.pos = engine, 0
        n_layer = engine.config.n_layer
        self.keys = [[] for _ in range(n_layer)]
        self.values = [[] for _ in range(n_layer)]

    def step(self, token):
        p, cfg = self.engine.p, self.engine.config
        D = cfg.head_dim
        scale = (D ** 0.5) ** -1
        x = [a + b for a, b in zip(p["wte"][token], p["wpe"][self.pos])]
        x = rmsnorm([x])[0][0]
        for li in range(cfg.n_layer):
            pre = f"layer{li}."
            xn = rmsnorm([x])[0][0]
            q = [sum(map(mul, w, xn)) for w in p[pre + "attn_wq"]]
            self.keys[li].append([sum(map(mul, w, xn)) for w in p[pre + "attn_wk"]])
            self.values[li].append([sum(map(mul, w, xn)) for w in p[pre + "attn_wv"]])
            att = []
            for h in range(cfg.n_head):
                hs = slice(h * D, (h + 1) * D)
                a = softmax([sum(map(mul, q[hs], k[hs])) * scale for k in self.keys[li]])
                v_T = transpose([v[hs] for v in self.values[li]])
                att.extend([sum(map(mul, a, v_j)) for v_j in v_T])
            x = [sum(map(mul, w, att)) + r for w, r in zip(p[pre + "attn_wo"], x)]
            xn = rmsnorm([x])[0][0]
            h = [max(0.0, sum(map(mul, w, xn))) for w in p[pre + "mlp_fc1"]]
            x = [sum(map(mul, w, h)) + r for w, r in zip(p[pre + "mlp_fc2"], x)]
        self.pos += 1
        return [sum(map(mul, w, x)) for w in p["lm_head"]]
