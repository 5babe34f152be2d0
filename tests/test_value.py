"""Every Value op against central finite differences."""

import math
import random
import sys
import unittest

from kiri.core.value import Value

H = 1e-6


def numeric_grads(f, xs):
    grads = []
    for i in range(len(xs)):
        up = list(xs); up[i] += H
        down = list(xs); down[i] -= H
        grads.append((f(*up) - f(*down)) / (2 * H))
    return grads


class ValueGradients(unittest.TestCase):
    def check(self, f, xs, tol=1e-6):
        vals = [Value(x) for x in xs]
        out = f(*vals)
        out.backward()
        expected = numeric_grads(lambda *a: f(*[Value(x) for x in a]).data, xs)
        for v, g in zip(vals, expected):
            self.assertAlmostEqual(v.grad, g, delta=tol * max(1.0, abs(g)))

    def test_each_op_on_random_inputs(self):
        rng = random.Random(0)
        ops = {
            "add": lambda a, b: a + b,
            "sub": lambda a, b: a - b,
            "mul": lambda a, b: a * b,
            "div": lambda a, b: a / b,
            "pow": lambda a, b: a ** 3 + b ** -1.5,
            "exp": lambda a, b: a.exp() * b,
            "log": lambda a, b: a.log() + b,
            "relu": lambda a, b: a.relu() * b + (-a).relu(),
            "neg": lambda a, b: -a * b,
            "reflected": lambda a, b: 2.0 + a - 1.0 / b,
        }
        for name, f in ops.items():
            for _ in range(20):
                xs = [rng.uniform(0.2, 3.0), rng.uniform(0.2, 3.0)]
                with self.subTest(op=name, xs=xs):
                    self.check(f, xs)

    def test_reflected_forms(self):
        rng = random.Random(1)
        for f in (lambda a: 3.0 + a, lambda a: 3.0 - a, lambda a: 3.0 * a, lambda a: 3.0 / a):
            self.check(f, [rng.uniform(0.5, 2.0)])

    def test_relu_negative_side_has_zero_gradient(self):
        a = Value(-1.5)
        a.relu().backward()
        self.assertEqual(a.grad, 0.0)

    def test_composite_expression_with_reused_node(self):
        def f(a, b, c):
            d = a * b + c
            e = d * d + d.exp() / (c + 4.0)  # d is used three times
            return (e.log() - a ** 2) * b + (d - c).relu()
        rng = random.Random(2)
        for _ in range(20):
            self.check(f, [rng.uniform(0.1, 1.0), rng.uniform(0.1, 1.0), rng.uniform(0.1, 1.0)])

    def test_softmax_cross_entropy_shape_expression(self):
        def f(a, b, c):
            logits = [a, b, c]
            exps = [(v - max(x.data for x in logits)).exp() for v in logits]
            total = sum(exps)
            return -(exps[1] / total).log()
        self.check(f, [0.3, -1.2, 2.0])

    def test_backward_is_iterative_on_a_deep_graph(self):
        x = Value(1.0)
        y = x
        depth = sys.getrecursionlimit() * 20
        for _ in range(depth):
            y = y * 1.0 + 0.0
        y.backward()
        self.assertEqual(x.grad, 1.0)

    def test_values_are_plain_math(self):
        self.assertAlmostEqual((Value(2.0) ** 0.5).data, math.sqrt(2.0))
        self.assertAlmostEqual(Value(1.0).exp().data, math.e)


if __name__ == "__main__":
    unittest.main()
