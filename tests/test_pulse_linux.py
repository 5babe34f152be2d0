"""Linux pulse source: parsers on recorded /proc outputs, read() on a fake tree and on this machine."""
import os
import sys
import tempfile
import unittest
from unittest import mock

from kiri.atoms.pulse import linux, system
from kiri.atoms.sources import CollectorError

# Recorded on a Debian 12 machine, kernel 6.18, 2 vCPU, 24 GiB (shared/reference/linux-proc.md).
PROC_STAT = """\
cpu  8926 0 2117 53000 210 0 61 24 0 0
cpu0 4034 0 1032 27008 42 0 24 8 0 0
cpu1 4891 0 1085 25991 167 0 37 15 0 0
intr 147047 0 0 0 ...
ctxt 327823
btime 1795574177
processes 5644
procs_running 1
procs_blocked 0
"""

# Two reads 2 s apart on a busy machine (other jobs saturated both vCPUs).
PROC_STAT_BUSY_BEFORE = "cpu  47956 0 3848 55714 276 0 82 137 0 0\n"
PROC_STAT_BUSY_AFTER = "cpu  48340 0 3860 55714 276 0 83 141 0 0\n"

MEMINFO = """\
MemTotal:       24683656 kB
MemFree:        23387632 kB
MemAvailable:   23805536 kB
Buffers:            3656 kB
Cached:           607656 kB
SwapCached:            0 kB
SwapTotal:             0 kB
SwapFree:              0 kB
"""

LOADAVG = "1.03 0.35 0.12 1/83 5645\n"

# os.statvfs("/") on the same machine; `df -k /` there said Used 23447648, Available 82943264, 23%.
STATVFS = os.statvfs_result((4096, 4096, 66053021, 60191109, 20735816, 16777216, 16363483, 16363483, 4096, 255))

# /sys/class/net/*/operstate on the same machine.
OPERSTATES = {"eth0": "up", "ifb0": "down", "lo": "unknown"}


class ProcStatTest(unittest.TestCase):
    def test_aggregate_cpu_line(self):
        self.assertEqual(linux.parse_proc_stat(PROC_STAT), [8926, 0, 2117, 53000, 210, 0, 61, 24, 0, 0])

    def test_busy_pair_is_100_percent(self):
        # total 108013 -> 108414 (delta 401), idle + iowait unchanged at 55990.
        before = linux.parse_proc_stat(PROC_STAT_BUSY_BEFORE)
        after = linux.parse_proc_stat(PROC_STAT_BUSY_AFTER)
        self.assertEqual(linux.cpu_percent(before, after), 100.0)

    def test_partly_idle(self):
        # +50 user, +10 system, +130 idle, +10 iowait: total +200, idle +140 -> 30 % busy.
        before = linux.parse_proc_stat(PROC_STAT)
        after = linux.parse_proc_stat("cpu  8976 0 2127 53130 220 0 61 24 0 0\n")
        self.assertAlmostEqual(linux.cpu_percent(before, after), 30.0)

    def test_guest_time_is_not_counted_twice(self):
        # The kernel adds guest time to user as well; counting it again would dilute idle.
        before = [100, 0, 0, 100, 0, 0, 0, 0, 0, 0]
        after = [150, 0, 0, 150, 0, 0, 0, 0, 50, 0]
        self.assertAlmostEqual(linux.cpu_percent(before, after), 50.0)

    def test_old_kernel_with_four_columns(self):
        before = linux.parse_proc_stat("cpu  100 0 100 800\n")
        after = linux.parse_proc_stat("cpu  125 0 125 850\n")
        self.assertAlmostEqual(linux.cpu_percent(before, after), 50.0)

    def test_same_tick_is_an_error_not_a_division_by_zero(self):
        counters = linux.parse_proc_stat(PROC_STAT)
        with self.assertRaisesRegex(CollectorError, "did not advance"):
            linux.cpu_percent(counters, counters)

    def test_counters_going_back_is_an_error(self):
        with self.assertRaisesRegex(CollectorError, "did not advance"):
            linux.cpu_percent(linux.parse_proc_stat(PROC_STAT_BUSY_AFTER),
                              linux.parse_proc_stat(PROC_STAT_BUSY_BEFORE))

    def test_truncated(self):
        with self.assertRaisesRegex(CollectorError, "at least 4"):
            linux.parse_proc_stat("cpu  8926 0 21")

    def test_garbled(self):
        with self.assertRaisesRegex(CollectorError, "not numbers"):
            linux.parse_proc_stat("cpu  8926 0 2117 53x00 210\n")

    def test_no_cpu_line(self):
        with self.assertRaisesRegex(CollectorError, "no 'cpu' line"):
            linux.parse_proc_stat("cpu0 4034 0 1032 27008\nintr 1\n")


class MeminfoTest(unittest.TestCase):
    def test_recorded_sample(self):
        memory, swap = linux.parse_meminfo(MEMINFO)
        # (24683656 - 23805536) / 24683656 = 878120 / 24683656
        self.assertAlmostEqual(memory, 3.557496, places=5)
        self.assertEqual(swap, 0.0)  # SwapTotal 0: no swap, not an error

    def test_without_memavailable_falls_back_to_free_buffers_cached(self):
        old_kernel = "\n".join(line for line in MEMINFO.splitlines() if not line.startswith("MemAvailable"))
        memory, _ = linux.parse_meminfo(old_kernel)
        # available = 23387632 + 3656 + 607656 = 23998944; used = 684712 / 24683656
        self.assertAlmostEqual(memory, 2.773949, places=5)

    def test_swap_in_use(self):
        memory, swap = linux.parse_meminfo(MEMINFO.replace(
            "SwapTotal:             0 kB\nSwapFree:              0 kB",
            "SwapTotal:       2097152 kB\nSwapFree:        1572864 kB"))
        self.assertAlmostEqual(swap, 25.0)

    def test_keys_without_unit_are_fine(self):
        memory, _ = linux.parse_meminfo(MEMINFO + "HugePages_Total:       0\n")
        self.assertAlmostEqual(memory, 3.557496, places=5)

    def test_truncated(self):
        with self.assertRaisesRegex(CollectorError, "MemTotal"):
            linux.parse_meminfo("MemTo")

    def test_neither_available_nor_fallback(self):
        with self.assertRaisesRegex(CollectorError, "MemAvailable"):
            linux.parse_meminfo("MemTotal:       24683656 kB\nMemFree:        23387632 kB\n")


class LoadavgTest(unittest.TestCase):
    def test_recorded_sample(self):
        self.assertEqual(linux.parse_loadavg(LOADAVG), 1.03)

    def test_garbled(self):
        for text in ("", "abc 0.35 0.12"):
            with self.assertRaisesRegex(CollectorError, "/proc/loadavg"):
                linux.parse_loadavg(text)


class DiskTest(unittest.TestCase):
    def test_recorded_statvfs_matches_df(self):
        # used = 66053021 - 60191109 = 5861912 blocks; 5861912 / (5861912 + 20735816);
        # df rounds that up to its 23%.
        self.assertAlmostEqual(linux.disk_percent(STATVFS), 22.039146, places=5)

    def test_pseudo_filesystem(self):
        empty = os.statvfs_result((4096, 4096, 0, 0, 0, 0, 0, 0, 0, 255))
        with self.assertRaisesRegex(CollectorError, "no blocks"):
            linux.disk_percent(empty)


class NetworkTest(unittest.TestCase):
    def test_recorded_interfaces(self):
        self.assertEqual(linux.network_up(OPERSTATES), 1)

    def test_only_loopback_and_down(self):
        self.assertEqual(linux.network_up({"ifb0": "down", "lo": "unknown"}), 0)
        self.assertEqual(linux.network_up({"lo": "up"}), 0)
        self.assertEqual(linux.network_up({}), 0)

    def test_other_states_are_not_up(self):
        for state in ("down", "unknown", "notpresent", "lowerlayerdown", "testing", "dormant"):
            self.assertEqual(linux.network_up({"eth0": state}), 0, state)


class FakeTreeReadTest(unittest.TestCase):
    """read() end to end on a fake /proc and /sys/class/net; `sleep` advances the CPU counters."""

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.proc = os.path.join(self.tmp.name, "proc")
        self.net = os.path.join(self.tmp.name, "net")
        os.makedirs(self.proc)
        self.write("proc/stat", PROC_STAT_BUSY_BEFORE)
        self.write("proc/meminfo", MEMINFO)
        self.write("proc/loadavg", LOADAVG)
        for name, state in OPERSTATES.items():
            self.write(f"net/{name}/operstate", state + "\n")

    def tearDown(self):
        self.tmp.cleanup()

    def write(self, relative_path, text):
        path = os.path.join(self.tmp.name, relative_path)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)

    def test_read(self):
        slept = []

        def sleep(seconds):
            slept.append(seconds)
            self.write("proc/stat", PROC_STAT_BUSY_AFTER)

        reading = linux.read(disk_path=self.tmp.name, interval=0.2, sleep=sleep,
                             proc_dir=self.proc, net_dir=self.net)
        self.assertEqual(slept, [0.2])
        self.assertEqual(sorted(reading), ["C", "D", "L", "M", "N", "S"])
        self.assertEqual(reading["C"], 100.0)
        self.assertAlmostEqual(reading["M"], 3.557496, places=5)
        self.assertEqual(reading["S"], 0.0)
        self.assertEqual(reading["L"], 1.03)
        self.assertEqual(reading["N"], 1)
        self.assertTrue(0.0 <= reading["D"] <= 100.0)

    def test_missing_proc_file_is_a_clear_error(self):
        os.remove(os.path.join(self.proc, "meminfo"))
        with self.assertRaisesRegex(CollectorError, "cannot read .*meminfo"):
            linux.read(disk_path=self.tmp.name, sleep=lambda s: self.write("proc/stat", PROC_STAT_BUSY_AFTER),
                       proc_dir=self.proc, net_dir=self.net)

    def test_missing_disk_path_is_a_clear_error(self):
        missing = os.path.join(self.tmp.name, "no-such-mount")
        with self.assertRaisesRegex(CollectorError, "disk usage of .*no-such-mount"):
            linux.read(disk_path=missing, sleep=lambda s: self.write("proc/stat", PROC_STAT_BUSY_AFTER),
                       proc_dir=self.proc, net_dir=self.net)


@unittest.skipUnless(sys.platform.startswith("linux"), "reads this machine's /proc")
class ThisMachineTest(unittest.TestCase):
    def test_read_returns_six_values_in_range(self):
        # A 20 ms interval keeps the test fast; on an idle machine both reads could
        # fall in one clock tick, which is then reported, so retry a few times.
        for _ in range(20):
            try:
                reading = linux.read(interval=0.02)
                break
            except CollectorError as error:
                if "did not advance" not in str(error):
                    raise
        else:
            self.fail("CPU counters never advanced")
        self.assertEqual(sorted(reading), ["C", "D", "L", "M", "N", "S"])
        for key in "CMDS":
            self.assertTrue(0.0 <= reading[key] <= 100.0, (key, reading[key]))
        self.assertGreaterEqual(reading["L"], 0.0)
        self.assertIn(reading["N"], (0, 1))


class SystemTest(unittest.TestCase):
    def test_source_for_platform(self):
        self.assertIs(system.source_for("linux"), linux.read)
        self.assertIsNotNone(system.source_for("darwin"))
        self.assertIsNone(system.source_for("win32"))

    def test_unknown_platform_is_a_clear_error(self):
        with mock.patch.object(system, "_read", None), mock.patch.object(sys, "platform", "plan9"):
            with self.assertRaisesRegex(CollectorError, "^pulse: no system source for platform plan9$"):
                system.collect()


if __name__ == "__main__":
    unittest.main()
