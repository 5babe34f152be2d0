"""Shipped files are found in a clone and in every pip install layout: fake prefixes in a temp
dir, and (when pip can build here) a real `pip install --user` run from outside the clone."""

import os
import shutil
import site
import subprocess
import sys
import sysconfig
import tempfile
import unittest
from pathlib import Path

from kiri.errors import KiriError
from kiri.paths import install_roots, shipped
from tests.helpers import REPO


def put(path, text="x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


class Shipped(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.tmp = Path(self.dir.name)
        self.checkout = self.tmp / "clone"     # a checkout without the file: pip installed it elsewhere
        self.checkout.mkdir()

    def tearDown(self):
        self.dir.cleanup()

    def test_the_checkout_comes_first(self):
        mine = put(self.checkout / "weights" / "names.json")
        put(self.tmp / "venv" / "share" / "kiri" / "weights" / "names.json")
        self.assertEqual(shipped("weights", "names.json", checkout=self.checkout, roots=[self.tmp / "venv"]), mine)

    def test_found_under_any_install_root(self):
        # --user puts it under the user base, a venv under its prefix: the first root that has it wins.
        user_base, venv = self.tmp / "userbase", self.tmp / "venv"
        wanted = put(user_base / "share" / "kiri" / "data" / "names.txt")
        put(self.tmp / "later" / "share" / "kiri" / "data" / "names.txt")
        found = shipped("data", "names.txt", checkout=self.checkout, roots=[venv, user_base, self.tmp / "later"])
        self.assertEqual(found, wanted)

    def test_missing_everywhere_is_one_clear_line(self):
        with self.assertRaises(KiriError) as caught:
            shipped("weights", "names.json", checkout=self.checkout, roots=[self.tmp / "venv", self.tmp / "ub"])
        message = str(caught.exception)
        self.assertEqual(len(message.splitlines()), 1)
        for part in ("weights/names.json", str(self.tmp / "venv"), str(self.tmp / "ub"), "reinstall kiri"):
            self.assertIn(part, message)

    def test_a_directory_of_that_name_is_not_the_file(self):
        (self.checkout / "weights" / "names.json").mkdir(parents=True)
        with self.assertRaises(KiriError):
            shipped("weights", "names.json", checkout=self.checkout, roots=[])


class InstallRoots(unittest.TestCase):
    def test_every_data_directory_pip_uses_here(self):
        roots = install_roots()
        for root in (sysconfig.get_paths()["data"], site.getuserbase(), sys.prefix, sys.base_prefix):
            self.assertIn(str(root), roots)
        self.assertEqual(len(roots), len(set(roots)))

    def test_the_prefix_the_package_sits_in_comes_first(self):
        site_dir = Path("/opt/somewhere/lib/python3.11/site-packages")   # pip install --prefix /opt/somewhere
        self.assertEqual(install_roots(site_dir)[0], str(Path("/opt/somewhere")))


# The files a build needs: the package, its data, and what pyproject.toml names.
SOURCES = ("kiri", "data", "weights", "pyproject.toml", "README.md", "LICENSE")


class RealUserInstall(unittest.TestCase):
    """`pip install --user` into a private user base, then `kiri names …` from outside the clone."""

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.TemporaryDirectory()
        tmp = Path(cls.dir.name)
        source = tmp / "src"   # a copy: the build leaves build/ and *.egg-info where it runs
        source.mkdir()
        for name in SOURCES:
            if (REPO / name).is_dir():
                shutil.copytree(str(REPO / name), str(source / name), ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(str(REPO / name), str(source / name))
        cls.user_base, cls.home = tmp / "userbase", tmp / "home"
        # Nothing may come from the clone (PYTHONPATH) or turn the user scheme off (PYTHONNOUSERSITE).
        cls.env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONNOUSERSITE", "KIRI_HOME")}
        cls.env.update(PYTHONUSERBASE=str(cls.user_base), KIRI_HOME=str(cls.home))
        try:
            proc = subprocess.run([sys.executable, "-m", "pip", "install", "--user", "--no-deps", "--no-cache-dir",
                                   "-q", "--no-warn-script-location", str(source)],
                                  cwd=str(tmp), env=cls.env, capture_output=True, text=True, timeout=120)
        except subprocess.TimeoutExpired:
            cls.skip = "pip install took over 2 minutes (no offline build backend here?)"
            return
        lines = (proc.stderr.strip() or "no output").splitlines()
        cls.skip = None if proc.returncode == 0 else f"pip cannot build kiri here: {lines[-1]}"

    @classmethod
    def tearDownClass(cls):
        cls.dir.cleanup()

    def setUp(self):
        if self.skip:
            self.skipTest(self.skip)

    def kiri(self, *args):
        """The installed console script, run in the temp dir so nothing can come from the clone."""
        script = self.user_base / "bin" / "kiri"
        return subprocess.run([str(script)] + [str(a) for a in args], cwd=self.dir.name, env=self.env,
                              capture_output=True, text=True, timeout=120)

    def test_sample_with_the_shipped_weights(self):
        proc = self.kiri("names", "sample", "-n", 3, "--seed", 1)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(len(proc.stdout.splitlines()), 3)

    def test_training_writes_into_kiri_home_not_the_install(self):
        shipped_weights = self.user_base / "share" / "kiri" / "weights" / "names.json"
        before = shipped_weights.read_bytes()
        proc = self.kiri("names", "train", "--steps", 2)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertTrue((self.home / "weights" / "names.json").is_file())
        self.assertEqual(shipped_weights.read_bytes(), before)
        self.assertEqual(sorted(p.name for p in shipped_weights.parent.iterdir()), ["names.json"])   # no .prev.json


if __name__ == "__main__":
    unittest.main()
