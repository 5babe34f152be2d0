"""The import direction of the package, read from the source (parsed with `ast`, never imported).

Every module of kiri/ sits in one layer, and a layer may import only itself and the layers
before it. The graph is the data below: changing it is a visible decision, not a side effect.
"""

import ast
import unittest
from pathlib import Path

from tests.helpers import REPO

LAYERS = [   # each layer may import itself and the layers listed before it, never one after it
    ("ground", ["kiri", "kiri.errors", "kiri.faults", "kiri.ground", "kiri.paths"]),
    ("core",   ["kiri.core"]),
    ("atoms",  ["kiri.atoms", "kiri.stream"]),
    ("loop",   ["kiri.config", "kiri.store", "kiri.alerts", "kiri.outbox", "kiri.daemon", "kiri.lifecycle", "kiri.compose",
                "kiri.status", "kiri.lock", "kiri.check"]),
    ("faces",  ["kiri.cli", "kiri.__main__", "kiri.notify", "kiri.web", "kiri.metrics", "kiri.bench", "kiri.units",
                "kiri.demo", "kiri.names", "kiri.setup"]),
]
RANK = {layer: rank for rank, (layer, _) in enumerate(LAYERS)}

# Paths outside the repository that no docstring or comment may send a reader to.
OUTSIDE_PATHS = ("../shared", "/work/")


def covers(prefix, name):
    """Whether `prefix` covers the module `name` (dotted boundaries; bare "kiri" is the package itself)."""
    return name == prefix or (prefix != "kiri" and name.startswith(prefix + "."))


def layer_of(name):
    """The layer of the longest prefix covering `name`, or None."""
    matches = [(len(prefix), layer) for layer, prefixes in LAYERS for prefix in prefixes if covers(prefix, name)]
    return max(matches)[1] if matches else None


def module_of(path):
    """"kiri/core/fast.py" -> ("kiri.core.fast", False); "kiri/atoms/__init__.py" -> ("kiri.atoms", True)."""
    parts = list(Path(path).with_suffix("").parts)
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def package_sources(root=REPO):
    """{"kiri/x.py": source text} for every .py file under kiri/."""
    return {path.relative_to(root).as_posix(): path.read_text(encoding="utf-8")
            for path in sorted((root / "kiri").rglob("*.py"))}


def dynamic_target(node):
    """The module named by `importlib.import_module("…")` / `__import__("…")`, or None. Of an
    f-string only the literal dotted prefix is known: f"kiri.atoms.{name}.schema" -> "kiri.atoms"."""
    func = node.func
    called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    if called not in ("import_module", "__import__") or not node.args:
        return None
    arg = node.args[0]
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return arg.value
    if isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant):
        return arg.values[0].value.rpartition(".")[0] or None
    return None


def imports_in(source, module, is_package, modules, filename="<source>"):
    """[(line, absolute module name)] of every import in `source` (at any depth), relative ones
    resolved against `module`; `from P import name` counts as P.name when that is one of `modules`."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                up = node.level - 1
                if up >= len(package):
                    continue  # above the top of the package: not a kiri module
                base = ".".join(package[:len(package) - up] + ([node.module] if node.module else []))
            else:
                base = node.module
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append((node.lineno, sub if sub in modules else base))
        elif isinstance(node, ast.Call):
            target = dynamic_target(node)
            if target:
                found.append((node.lineno, target))
    return sorted(found)


def upward_imports(sources):
    """One message per import of a later layer (or of no layer) in `sources` ({"kiri/x.py": text}),
    as "kiri/x.py:LINE imports kiri.y (layer A → layer B)"."""
    modules = {module_of(path)[0] for path in sources}
    messages = []
    for path, source in sorted(sources.items()):
        module, is_package = module_of(path)
        here = layer_of(module)
        for line, target in imports_in(source, module, is_package, modules, path):
            if here is None or (target != "kiri" and not target.startswith("kiri.")):
                continue  # a module in no layer is reported by test_every_module_has_a_layer
            there = layer_of(target)
            if there is None or RANK[there] > RANK[here]:
                message = f"{path}:{line} imports {target} (layer {here} → {'layer ' + there if there else 'no layer'})"
                if message not in messages:
                    messages.append(message)
    return messages


class ImportDirection(unittest.TestCase):
    def test_no_layer_imports_a_later_one(self):
        violations = upward_imports(package_sources())
        if violations:
            self.fail(f"{len(violations)} upward import(s):\n" + "\n".join(violations))

    def test_every_module_has_a_layer(self):
        unplaced = [path for path in package_sources() if layer_of(module_of(path)[0]) is None]
        if unplaced:
            self.fail("modules in no layer (place them in LAYERS on purpose):\n" + "\n".join(unplaced))

    def test_no_text_names_a_path_outside_the_repository(self):
        found = [f"{path}:{number}: {line.strip()}"
                 for path, source in package_sources().items()
                 for number, line in enumerate(source.splitlines(), start=1)
                 if any(outside in line for outside in OUTSIDE_PATHS)]
        if found:
            self.fail("paths outside the repository:\n" + "\n".join(found))


class TheCheckerItself(unittest.TestCase):
    """The checker catches what it must, so the tests above cannot pass by seeing nothing."""

    SOURCES = {
        "kiri/__init__.py": "",
        "kiri/cli.py": "from .core import fast\nfrom kiri.atoms import verbs\n",
        "kiri/daemon.py": "from . import store\nimport kiri.core.fast as fast\n",
        "kiri/store.py": "",
        "kiri/notify/__init__.py": "",
        "kiri/core/__init__.py": "",
        "kiri/core/fast.py": "import os\n\n\ndef run():\n    from kiri.cli import main\n    return main\n",
        "kiri/atoms/__init__.py": "",
        "kiri/atoms/verbs.py": ("import importlib\nfrom ..daemon import loop\nfrom .. import notify\n"
                                "from . import missing\nimportlib.import_module('kiri.web.app')\n"),
        "kiri/stray.py": "from .errors import KiriError\n",
        "kiri/paths.py": "def home():\n    from .elsewhere import where\n",
    }

    def test_upward_imports_are_reported(self):
        self.assertEqual(upward_imports(self.SOURCES), [
            "kiri/atoms/verbs.py:2 imports kiri.daemon (layer atoms → layer loop)",
            "kiri/atoms/verbs.py:3 imports kiri.notify (layer atoms → layer faces)",
            "kiri/atoms/verbs.py:5 imports kiri.web.app (layer atoms → layer faces)",
            "kiri/core/fast.py:5 imports kiri.cli (layer core → layer faces)",
            "kiri/paths.py:2 imports kiri.elsewhere (layer ground → no layer)",
        ])

    def test_relative_imports_resolve_to_absolute_names(self):
        modules = {module_of(path)[0] for path in self.SOURCES}
        self.assertEqual(imports_in(self.SOURCES["kiri/atoms/verbs.py"], "kiri.atoms.verbs", False, modules),
                         [(1, "importlib"), (2, "kiri.daemon"), (3, "kiri.notify"), (4, "kiri.atoms"),
                          (5, "kiri.web.app")])
        self.assertEqual(imports_in("from . import verbs\nfrom ..core.fast import f\n", "kiri.atoms", True, modules),
                         [(1, "kiri.atoms.verbs"), (2, "kiri.core.fast")])
        self.assertEqual(imports_in("importlib.import_module(f'kiri.atoms.{n}.schema')\n", "kiri.x", False, ()),
                         [(1, "kiri.atoms")])

    def test_layers_match_on_dotted_boundaries(self):
        for name, layer in (("kiri", "ground"), ("kiri.core", "core"), ("kiri.core.fast", "core"),
                            ("kiri.coreish", None), ("kiri.alerts", "loop"), ("kiri.alerts.telegram", "loop"),
                            ("kiri.atoms.pulse.collect", "atoms"), ("kiri.__main__", "faces"), ("kiri.other", None)):
            with self.subTest(name=name):
                self.assertEqual(layer_of(name), layer)
        self.assertEqual(module_of("kiri/alerts/__init__.py"), ("kiri.alerts", True))
        self.assertEqual(module_of("kiri/alerts.py"), ("kiri.alerts", False))


if __name__ == "__main__":
    unittest.main()
