"""The dashboard in a real browser: headless Chromium, driven over the DevTools protocol
(kiri/web/browser.py, a WebSocket client of the standard library), against the server on
loopback and a real home (tests/test_web.py's). The charts are drawn (SVG with a size),
the page's own policy blocks nothing of its own, a mouse click on Dismiss records the
answer in the store, and `kiri serve --screenshot` writes a picture of the overview.
Without a Chromium on PATH every test here is skipped, saying so.
"""

import struct
import tempfile
import time
import unittest
from pathlib import Path

from kiri.store import open_store
from kiri.web.browser import Browser, find_chromium
from kiri.web.server import make_server, serve_in_thread
from tests.helpers import run_kiri
from tests.test_web import build_home, home_settings

# Installed before any page script could run (DevTools' scripts are above the page's policy):
# counts what the Content-Security-Policy blocked, which would be the page's own styles.
COUNT_VIOLATIONS = ("window.violations = [];"
                    "document.addEventListener('securitypolicyviolation', e => window.violations.push(e.violatedDirective));")


def png_size(data):
    """(width, height) from a PNG's IHDR."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise AssertionError("not a PNG")
    return struct.unpack(">II", data[16:24])


class InChromium(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.executable = find_chromium()
        if cls.executable is None:
            raise unittest.SkipTest("no Chromium or Chrome on PATH (apt install chromium): the dashboard "
                                    "was not tried in a browser")
        cls.tmp = tempfile.TemporaryDirectory(prefix="kiri-web-browser-")
        cls.home = Path(cls.tmp.name) / "home"
        cls.made = build_home(cls.home, time.time())
        cls.server = make_server(home_settings(cls.home), ("127.0.0.1", 0))
        serve_in_thread(cls.server)
        cls.browser = Browser(cls.executable)
        cls.browser.call("Page.addScriptToEvaluateOnNewDocument", source=COUNT_VIOLATIONS)

    @classmethod
    def tearDownClass(cls):
        cls.browser.close()
        cls.server.shutdown()
        cls.server.server_close()
        cls.tmp.cleanup()

    def open(self, path):
        self.browser.navigate(self.server.url.rstrip("/") + path)
        self.assertEqual(self.browser.evaluate("window.violations"), [])

    def test_the_overview_draws_its_charts(self):
        self.open("/")
        charts = self.browser.evaluate(
            "Array.from(document.querySelectorAll('svg.chart'))"
            ".map(svg => { const r = svg.getBoundingClientRect(); return [r.width, r.height]; })")
        self.assertGreaterEqual(len(charts), 1)
        for width, height in charts:
            self.assertGreater(width, 600)
            self.assertGreater(height, 100)
        line = self.browser.evaluate("(() => { const b = document.querySelector('svg.chart path.line.ratio').getBBox();"
                                     " return [b.width, b.height]; })()")
        self.assertGreater(line[0], 100)   # the scored hours, across the chart
        self.assertGreater(line[1], 5)
        marks = self.browser.evaluate("document.querySelectorAll('svg.chart .alert-mark').length")
        self.assertEqual(marks, len(self.made["all"]))
        # The stylesheet applied (the policy lets the page's own <style> in): cards are cards.
        self.assertEqual(self.browser.evaluate("getComputedStyle(document.querySelector('.card')).borderTopLeftRadius"),
                         "10px")

    def test_an_atom_page_draws_a_panel_per_field(self):
        self.open("/atoms/pulse")
        panels = self.browser.evaluate("Array.from(document.querySelectorAll('svg.chart path.line.field'))"
                                       ".map(p => p.getBBox().width)")
        self.assertEqual(len(panels), 6)
        self.assertTrue(all(width > 100 for width in panels), panels)

    def test_a_click_on_dismiss_records_the_answer(self):
        target = self.made["alerts"][0]
        self.open("/alerts")
        self.browser.expect()
        self.browser.click(f'form[action="/alerts/{target}/feedback"] button.dismiss')
        self.browser.wait_for("Page.loadEventFired")   # the answer's redirect, back to the list
        self.assertEqual(self.browser.evaluate("location.pathname"), "/alerts")
        with open_store(self.home) as store:
            alert = store.alert(target)
        self.assertEqual(alert["feedback"]["verdict"], "dismiss")
        row = self.browser.evaluate(f"document.querySelector('a[href=\"/alerts/{target}\"]').closest('tr').innerText")
        self.assertIn("dismissed", row)

    def test_kiri_serve_screenshot_writes_a_picture_of_the_overview(self):
        out = Path(self.tmp.name) / "overview.png"
        proc = run_kiri("serve", "--screenshot", out, home=self.home, env={"KIRI_HOST_NAME": "box"}, timeout=120)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(proc.stdout.strip(), f"wrote {out}")
        width, height = png_size(out.read_bytes())
        self.assertEqual(width, 1280)
        self.assertGreater(height, 600)   # the whole page, not the first screen of it


if __name__ == "__main__":
    unittest.main()
