"""The config at the edges (issue 13): every number has a type and bounds, checked when the
settings are loaded, so a value accepted at start can no longer be fatal hours later (a tick
of inf stopped the daemon); a config file that is there but cannot be read, or a KIRI_CONFIG
naming nothing, is one line and a non-zero exit, never silently "no settings".
"""

import math
import os
import tempfile
import unittest
from pathlib import Path

from kiri.atoms import verbs
from kiri.config import NUMBERS, load_settings
from kiri.errors import KiriError
from tests.test_edges_files import EdgeCommandLine


class EveryNumber(unittest.TestCase):
    """In process, key by key: the class of mistake, not the few values the issue found."""

    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.home = Path(tmp.name)

    def refused(self, key, text, said):
        name = "KIRI_" + key.upper()
        with self.assertRaises(KiriError) as caught:
            load_settings(home=self.home, env={name: text})
        message = str(caught.exception)
        self.assertTrue(message.startswith(f"{name}: setting {key} "), message)
        self.assertIn(said, message)
        self.assertEqual(len(message.splitlines()), 1)

    def test_each_number_is_bounded_when_the_settings_are_loaded(self):
        for key, (unit, most, whole) in NUMBERS.items():
            with self.subTest(key=key):
                for text, said in [("inf", "at most"), ("1e30", "at most"), ("-inf", "greater than 0"),
                                   ("nan", "must be a number"), ("0", "greater than 0"), ("-1", "greater than 0"),
                                   ("ten", "must be a number"), ("0x10", "must be a number")]:
                    if key == "likelihood_alert" and said == "at most":
                        said = "below 1"
                    self.refused(key, text, said)
                if whole:
                    self.refused(key, "2.5", f"whole number of {unit}")
                highest = load_settings(home=self.home, env={"KIRI_" + key.upper(): str(most if key != "likelihood_alert" else 0.99)})
                self.assertTrue(math.isfinite(highest.number(key)))

    def test_a_value_from_the_file_names_the_file(self):
        for line, said in [("tick = 1e10", "setting tick must be at most"),
                           ("tick =", "setting tick must be a number, got ''")]:
            (self.home / "config.ini").write_text(f"[kiri]\n{line}\n", encoding="utf-8")
            with self.assertRaisesRegex(KiriError, rf"^config file {self.home / 'config.ini'}: {said}"):
                load_settings(home=self.home, env={})


    def test_a_byte_order_mark_is_not_part_of_the_file(self):
        (self.home / "config.ini").write_bytes("\ufeff[kiri]\ntick = 60\n".encode("utf-8"))
        self.assertEqual(load_settings(home=self.home, env={}).number("tick"), 60)

    def test_addresses_are_checked_when_the_settings_are_loaded(self):
        for text in ("localhost", "localhost:0", "localhost:65536", ":9788", "[::1]:x", "host:-1"):
            self.refused("web_bind", text, "must be HOST:PORT")
        for key in ("alertmanager_url", "web_url", "node_exporter_url"):
            for text, said in (("ftp://h", "must start with https://"), ("http://", "must start with https://"),
                               ("127.0.0.1:9093", "must start with https://"), ("http://h:port", "not a valid address"),
                               ("http://u:secret@h:9093", "must not hold a user or password")):
                self.refused(key, text, said)
            with self.assertRaises(KiriError) as caught:
                load_settings(home=self.home, env={"KIRI_" + key.upper(): "http://u:secret@h:9093"})
            self.assertNotIn("secret", str(caught.exception), "an address may hold a password: never quoted")
        settings = load_settings(home=self.home, env={"KIRI_WEB_BIND": "[::1]:9000",
                                                       "KIRI_ALERTMANAGER_URL": "http://127.0.0.1:9093/"})
        self.assertEqual(settings.web_bind, ("::1", 9000))
        self.assertEqual(settings.http_url("alertmanager_url"), "http://127.0.0.1:9093")
        self.assertEqual(settings.http_url("web_url"), "", "not set")
        self.assertEqual(settings.web_url, "http://[::1]:9000", "not set: the address it listens on")
        self.assertEqual(load_settings(home=self.home, env={"KIRI_WEB_URL": "https://kiri.example/"}).web_url,
                         "https://kiri.example")


class DeclaredSchemas(unittest.TestCase):
    """Found by `kiri bench fuzz`: a declared atom's schema is checked by the language's own rules
    when the settings are loaded, not when a score or `kiri status` first builds its language."""

    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.home = Path(tmp.name)

    def settings(self, schema):
        (self.home / "config.ini").write_text(f"[atom:gpu]\nschema = {schema}\ncommand = true\n", encoding="utf-8")
        return load_settings(home=self.home, env={})

    def test_each_bad_schema_is_one_line_when_loaded(self):
        for schema, said in [("Q=learn:²", "1 to 1000 buckets"), ("Q=learn:99999999", "1 to 1000 buckets"),
                             ("Q=learn:0", "1 to 1000 buckets"), ("T=0:100:1000000", "buckets from 1 to 1000"),
                             ("T=-1e308:1e308:3", "less than 1.8e308 apart")]:
            with self.subTest(schema=schema), self.assertRaises(KiriError) as caught:
                self.settings(schema)
            self.assertIn(said, str(caught.exception))
            self.assertEqual(len(str(caught.exception).splitlines()), 1)

    def test_a_name_the_store_would_refuse_is_refused_when_loaded(self):
        # Found by `kiri bench fuzz`: a 300-letter name made a weights file name too long for the
        # file system, and "é" passed as letters, yet the store keeps neither as an atom's name.
        for name in ("x" * 300, "é", "日本"):
            (self.home / "config.ini").write_text(f"[atom:{name}]\nschema = T=0:1:2\ncommand = true\n", encoding="utf-8")
            with self.subTest(name=name[:10]), self.assertRaisesRegex(KiriError, "must be 1 to 64 letters a-z or A-Z"):
                load_settings(home=self.home, env={})
        (self.home / "config.ini").write_text(f"[atom:{'x' * 64}]\nschema = T=0:1:2\ncommand = true\n", encoding="utf-8")
        self.assertIn("x" * 64, load_settings(home=self.home, env={}).atoms)

    def test_what_the_language_takes_is_taken(self):
        self.assertEqual(self.settings("Q=learn:٣").atoms["gpu"]["schema"], "Q=learn:٣")   # a decimal digit, as int() reads it
        spec = verbs.atom_module("gpu", self.settings("T=0:1e-320:2")).SPEC
        self.assertEqual(spec.language().encode_report({"T": 5.0}), ([2, 1], ["T"]))   # far above a narrow range

    def test_a_section_named_with_a_line_separator_is_one_line(self):
        (self.home / "config.ini").write_text("[kiri\u2028]\n", encoding="utf-8")
        with self.assertRaises(KiriError) as caught:
            load_settings(home=self.home, env={})
        self.assertTrue(str(caught.exception).endswith(r"unknown section [kiri\u2028] (expected [kiri], [atom:NAME] or [host:NAME])"))
        self.assertEqual(len(str(caught.exception).splitlines()), 1)

    def test_a_nul_character_is_refused_wherever_it_is(self):
        path = self.home / "config.ini"
        path.write_bytes(b"[kiri]\nmikrotik_cafile = /etc/ca\x00.pem\n")
        with self.assertRaisesRegex(KiriError, r"^config file .*config.ini holds a NUL character \(line 2\): not a text file$"):
            load_settings(home=self.home, env={})


class ConfigFile(EdgeCommandLine):
    def write_config(self, text):
        self.home.mkdir(exist_ok=True)
        path = self.home / "config.ini"
        path.write_text(text, encoding="utf-8")
        return path

    def test_numbers_that_were_fatal_later_are_refused_by_every_command(self):
        for line, said in [("tick = inf", "setting tick must be at most 3,600 seconds, got 'inf'"),
                           ("tick = 1e10", "setting tick must be at most"),
                           ("likelihood_window = 1e30", "setting likelihood_window must be at most"),
                           ("pulse_interval = nan", "setting pulse_interval must be a number, got 'nan'")]:
            path = self.write_config(f"[kiri]\n{line}\n")
            for args in (("status",), ("daemon", "--once"), ("pulse", "score")):
                with self.subTest(line=line, args=args):
                    self.assertUserError(self.kiri(*args), f"config file {path}: {said}")
        path.unlink()
        self.assertUserError(self.kiri("status", env={"KIRI_TICK": "inf"}), "KIRI_TICK: setting tick must be at most")

    def test_a_declared_atoms_settings_are_checked_when_loaded(self):
        atom = "[kiri]\n[atom:gpu]\nschema = T=0:100:5\n"
        for lines, said in [("command = 'unterminated\n", "atom gpu: command \"'unterminated\" cannot be split"),
                            ("command = echo\ninterval = nan\n", "atom gpu: interval must be greater than 0"),
                            ("command = echo\ninterval = inf\n", "atom gpu: interval must be greater than 0"),
                            ("command = echo\nsteps = 10000000000\n", "atom gpu: steps must be from 1 to")]:
            path = self.write_config(atom + lines)
            for args in (("status",), ("daemon", "--once")):
                with self.subTest(lines=lines, args=args):
                    self.assertUserError(self.kiri(*args), f"config file {path}: {said}")

    def test_a_config_that_cannot_be_read_is_not_ignored(self):
        path = self.write_config("[kiri]\ntelegram_token = 1:x\ntelegram_chat_id = 5\n")
        path.chmod(0)
        self.assertUserError(self.restricted("alerts", "test"), f"cannot read config file {path}: Permission denied")
        path.chmod(0o600)
        path.write_bytes(b"[kiri]\n\xff\n")
        self.assertUserError(self.kiri("status"), "is not UTF-8 text")
        path.unlink()
        os.symlink(str(self.tmp / "nothing"), str(path))
        self.assertUserError(self.kiri("status"), "is a link to a file that does not exist")

    def test_kiri_config_naming_nothing_usable_is_one_line(self):
        self.home.mkdir()
        for target, said in [(self.tmp / "missing.ini", "which does not exist"), (self.tmp, "is a folder"),
                             (Path(os.devnull), "is not a regular file")]:
            with self.subTest(target=target):
                self.assertUserError(self.kiri("alerts", "test", env={"KIRI_CONFIG": str(target)}), said)


if __name__ == "__main__":
    unittest.main()
