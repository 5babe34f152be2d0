"""macOS pulse source: parsers on recorded command outputs, read() with a fake `run`."""
import unittest

from kiri.atoms.pulse import macos
from kiri.atoms.sources import CollectorError

# Apple M4 Mac mini, 16 GiB, macOS 26.5.1 (shared/reference/macos-commands.md).
VM_STAT_M4 = """\
Mach Virtual Memory Statistics: (page size of 16384 bytes)
Pages free:                                    24141.
Pages active:                                 383318.
Pages inactive:                               388196.
Pages speculative:                              1272.
Pages throttled:                                   0.
Pages wired down:                             106741.
Pages purgeable:                                4133.
"Translation faults":                     1896659814.
Pages copy-on-write:                       157695573.
Pages zero filled:                        1177536752.
Pages reactivated:                          16332485.
Pages purged:                               35288602.
File-backed pages:                            409145.
Anonymous pages:                              363641.
Pages stored in compressor:                   478454.
Pages occupied by compressor:                 110063.
Decompressions:                             15197681.
Compressions:                               17826870.
Pageins:                                    42255403.
Pageouts:                                     775402.
Swapins:                                      187488.
Swapouts:                                     332213.
"""
MEMSIZE_16_GIB = "17179869184\n"

# Intel Mac, 4096-byte pages (recorded output, truncated after the compressor lines).
VM_STAT_INTEL = """\
Mach Virtual Memory Statistics: (page size of 4096 bytes)
Pages free:                               83542.
Pages active:                            371110.
Pages inactive:                          240731.
Pages speculative:                         7053.
Pages throttled:                              0.
Pages wired down:                        229107.
Pages purgeable:                          31460.
"Translation faults":                1615966019.
Pages copy-on-write:                   84209900.
Pages zero filled:                    623745642.
Pages reactivated:                    244719687.
Pages purged:                         116565311.
File-backed pages:                       103234.
Anonymous pages:                         515660.
Pages stored in compressor:             1144231.
Pages occupied by compressor:            116378.
"""

SWAPUSAGE_UNDER_LOAD = "vm.swapusage: total = 13312.00M  used = 11625.69M  free = 1686.31M  (encrypted)\n"
SWAPUSAGE_HALF = "total = 2048.00M  used = 1017.50M  free = 1030.50M  (encrypted)\n"

LOADAVG = "{ 1.28 1.18 1.13 }\n"
LOADAVG_COMMA_LOCALE = "vm.loadavg: { 1,38 1,45 2,16 }\n"

# The recorded `top` sample (Apple Silicon); note the trailing spaces.
TOP_SAMPLE = (
    "Processes: 554 total, 5 running, 549 sleeping, 4213 threads \n"
    "2026/05/28 03:43:04\n"
    "Load Avg: 6.27, 6.87, 5.71 \n"
    "CPU usage: 18.60% user, 15.61% sys, 65.78% idle \n"
    "SharedLibs: 478M resident, 109M data, 66M linkedit.\n"
    "MemRegions: 640132 total, 3362M resident, 202M private, 1852M shared.\n"
    "PhysMem: 15G used (2497M wired, 7090M compressor), 103M unused.\n"
    "VM: 268T vsize, 5702M framework vsize, 470789(0) swapins, 929703(0) swapouts.\n"
    "Networks: packets: 38863766/46G in, 29586460/31G out.\n"
    "Disks: 6924457/149G read, 5210424/189G written.\n"
)
# `top -l 2` prints two such samples. The first is not a current reading (openjdk
# PR 16915 reports all zeros); this one is built from the recorded sample to show that.
TOP_FIRST_SAMPLE = TOP_SAMPLE.replace("18.60% user, 15.61% sys, 65.78% idle", "0.0% user, 0.0% sys, 100.0% idle")
TOP_TWO_SAMPLES = TOP_FIRST_SAMPLE + "\n" + TOP_SAMPLE

# Older HFS+ Mac, `df -k /` (1024-blocks, inode columns).
DF_HFS = """\
Filesystem   1024-blocks     Used Available Capacity iused      ifree %iused  Mounted on
/dev/disk0s2   244277768 94454848 149566920    39%  997820 4293969459    0%   /
"""
# APFS, `df` (512-blocks): `/` is the sealed system snapshot, hence the tiny 4%.
DF_APFS = """\
Filesystem     512-blocks      Used Available Capacity iused      ifree %iused  Mounted on
/dev/disk3s1s1  965595304  25348232 714783480     4%  348619 3573917400    0%   /
devfs                 404       404         0   100%     702          0  100%   /dev
/dev/disk3s6    965595304        40 714783480     1%       0 3573917400    0%   /System/Volumes/VM
/dev/disk3s2    965595304  18685552 714783480     3%    1063 3573917400    0%   /System/Volumes/Preboot
"""

# `ifconfig -a` in the shape of public macOS captures (the reference documents only
# the flags and status lines; addresses here are made up). awdl0 is "active" with
# only a link-local address, which must not count as being on a network.
IFCONFIG_ONLINE = """\
lo0: flags=8049<UP,LOOPBACK,RUNNING,MULTICAST> mtu 16384
\toptions=1203<RXCSUM,TXCSUM,TXSTATUS,SW_TIMESTAMP>
\tinet 127.0.0.1 netmask 0xff000000
\tinet6 ::1 prefixlen 128
\tinet6 fe80::1%lo0 prefixlen 64 scopeid 0x1
\tnd6 options=201<PERFORMNUD,DAD>
gif0: flags=8010<POINTOPOINT,MULTICAST> mtu 1280
stf0: flags=0<> mtu 1280
en0: flags=8863<UP,BROADCAST,SMART,RUNNING,SIMPLEX,MULTICAST> mtu 1500
\tether 8c:85:90:00:00:01
\tinet6 fe80::c06:6700:3785:61d%en0 prefixlen 64 secured scopeid 0x6
\tinet 192.168.1.23 netmask 0xffffff00 broadcast 192.168.1.255
\tnd6 options=201<PERFORMNUD,DAD>
\tmedia: autoselect
\tstatus: active
p2p0: flags=8843<UP,BROADCAST,RUNNING,SIMPLEX,MULTICAST> mtu 2304
\tether 0e:85:90:00:00:01
\tmedia: autoselect
\tstatus: inactive
awdl0: flags=8943<UP,BROADCAST,RUNNING,PROMISC,SIMPLEX,MULTICAST> mtu 1484
\tether da:81:6c:00:00:01
\tinet6 fe80::d881:6cff:fe3a:5e3b%awdl0 prefixlen 64 scopeid 0x8
\tnd6 options=201<PERFORMNUD,DAD>
\tmedia: autoselect
\tstatus: active
en1: flags=8963<UP,BROADCAST,SMART,RUNNING,PROMISC,SIMPLEX,MULTICAST> mtu 1500
\toptions=60<TSO4,TSO6>
\tether 9a:00:dc:00:00:01
\tmedia: autoselect <full-duplex>
\tstatus: inactive
utun0: flags=8051<UP,POINTOPOINT,RUNNING,MULTICAST> mtu 2000
\tinet6 fe80::1718:cddc:a53c:d8ce%utun0 prefixlen 64 scopeid 0xc
\tnd6 options=201<PERFORMNUD,DAD>
"""
# The same Mac with its cable pulled: en0 loses link and its address.
IFCONFIG_OFFLINE = IFCONFIG_ONLINE.replace(
    "\tinet 192.168.1.23 netmask 0xffffff00 broadcast 192.168.1.255\n", "").replace(
    "\tmedia: autoselect\n\tstatus: active\np2p0", "\tmedia: autoselect\n\tstatus: inactive\np2p0")


class VmStatTest(unittest.TestCase):
    def test_page_size_comes_from_the_header(self):
        self.assertEqual(macos.parse_vm_stat(VM_STAT_M4)[0], 16384)
        self.assertEqual(macos.parse_vm_stat(VM_STAT_INTEL)[0], 4096)

    def test_labels_and_values(self):
        _, pages = macos.parse_vm_stat(VM_STAT_M4)
        self.assertEqual(pages["Pages free"], 24141)
        self.assertEqual(pages["Translation faults"], 1896659814)  # the quoted label
        self.assertEqual(pages["Swapouts"], 332213)

    def test_memory_m4(self):
        # App 363641 - 4133 = 359508, + wired 106741 + compressor 110063 = 576312 pages;
        # 16 GiB / 16384 = 1048576 pages; 576312 / 1048576 = 54.96 % (the reference's 55.0 %).
        self.assertAlmostEqual(macos.memory_percent(VM_STAT_M4, 17179869184), 54.961395, places=5)

    def test_memory_intel(self):
        # App 515660 - 31460 = 484200, + 229107 + 116378 = 829685 pages of 4 KiB.
        # The capture does not give hw.memsize; 4 GiB (1048576 pages) fits its page counts.
        self.assertAlmostEqual(macos.memory_percent(VM_STAT_INTEL, 4 * 1024 ** 3), 79.124928, places=5)

    def test_unknown_labels_of_newer_macos_are_ignored(self):
        newer = VM_STAT_M4 + "Pages tagged:                                   1234.\nPages tag-storage:       56.\n"
        self.assertAlmostEqual(macos.memory_percent(newer, 17179869184), 54.961395, places=5)

    def test_missing_header(self):
        with self.assertRaisesRegex(CollectorError, "page size"):
            macos.parse_vm_stat(VM_STAT_M4.split("\n", 1)[1])

    def test_truncated(self):
        truncated = VM_STAT_M4[:VM_STAT_M4.index("File-backed")]
        with self.assertRaisesRegex(CollectorError, "lacks 'Anonymous pages'.*'Pages occupied by compressor'"):
            macos.memory_percent(truncated, 17179869184)

    def test_memsize(self):
        self.assertEqual(macos.parse_memsize(MEMSIZE_16_GIB), 17179869184)
        self.assertEqual(macos.parse_memsize("hw.memsize: 34359738368\n"), 34359738368)
        for text in ("", "sysctl: unknown oid 'hw.memsize'", "0"):
            with self.assertRaisesRegex(CollectorError, "hw.memsize"):
                macos.parse_memsize(text)


class SysctlTest(unittest.TestCase):
    def test_swap_under_load(self):
        # 11625.69 / 13312.00
        self.assertAlmostEqual(macos.parse_swapusage(SWAPUSAGE_UNDER_LOAD), 87.332407, places=5)

    def test_swap_half(self):
        # 1017.50 / 2048.00, with `sysctl -n` (no prefix)
        self.assertAlmostEqual(macos.parse_swapusage(SWAPUSAGE_HALF), 49.682617, places=5)

    def test_swap_comma_locale_and_no_encrypted(self):
        self.assertAlmostEqual(macos.parse_swapusage("total = 2048,00M  used = 1017,50M  free = 1030,50M"),
                               49.682617, places=5)

    def test_swap_mixed_units(self):
        self.assertAlmostEqual(macos.parse_swapusage("total = 1.00G  used = 256.00M  free = 768.00M"), 25.0)

    def test_no_swap_yet(self):
        self.assertEqual(macos.parse_swapusage("vm.swapusage: total = 0.00M  used = 0.00M  free = 0.00M"), 0.0)

    def test_swap_garbled(self):
        with self.assertRaisesRegex(CollectorError, "vm.swapusage"):
            macos.parse_swapusage("vm.swapusage: total = ")

    def test_loadavg(self):
        self.assertEqual(macos.parse_loadavg(LOADAVG), 1.28)
        self.assertEqual(macos.parse_loadavg(LOADAVG_COMMA_LOCALE), 1.38)

    def test_loadavg_garbled(self):
        for text in ("", "{ }", "1.28 1.18"):
            with self.assertRaisesRegex(CollectorError, "vm.loadavg"):
                macos.parse_loadavg(text)


class TopTest(unittest.TestCase):
    def test_last_sample_is_used(self):
        # 100 - 65.78 idle; the first sample's 100 % idle is ignored.
        self.assertAlmostEqual(macos.parse_top_cpu(TOP_TWO_SAMPLES), 34.22)

    def test_a_single_sample_is_refused(self):
        with self.assertRaisesRegex(CollectorError, "need 2"):
            macos.parse_top_cpu(TOP_SAMPLE)

    def test_comma_locale(self):
        text = TOP_FIRST_SAMPLE + TOP_SAMPLE.replace("65.78% idle", "65,78% idle")
        self.assertAlmostEqual(macos.parse_top_cpu(text), 34.22)

    def test_garbled_cpu_line(self):
        text = TOP_FIRST_SAMPLE + TOP_SAMPLE.replace("65.78% idle", "65.78% id")
        with self.assertRaisesRegex(CollectorError, "no idle"):
            macos.parse_top_cpu(text)


class DfTest(unittest.TestCase):
    def test_hfs_1024_blocks(self):
        # 94454848 / (94454848 + 149566920); df rounds up to 39%.
        self.assertAlmostEqual(macos.parse_df(DF_HFS), 38.707550, places=5)

    def test_apfs_512_blocks_first_line(self):
        # 25348232 / (25348232 + 714783480): the system snapshot, which is why read() asks for the data volume.
        self.assertAlmostEqual(macos.parse_df(DF_APFS), 3.424827, places=5)

    def test_posix_format_and_device_with_space(self):
        text = ("Filesystem 1024-blocks Used Available Capacity Mounted on\n"
                "my disk 1000 250 750 25% /Volumes/my disk\n")
        self.assertAlmostEqual(macos.parse_df(text), 25.0)

    def test_empty_filesystem(self):
        text = ("Filesystem    1024-blocks Used Available Capacity  Mounted on\n"
                "map auto_home           0    0         0   100%    /System/Volumes/Data/home\n")
        with self.assertRaisesRegex(CollectorError, "empty filesystem"):
            macos.parse_df(text)

    def test_garbled(self):
        for text in ("", "df: /nope: No such file or directory\n", DF_HFS.splitlines()[0] + "\n/dev/disk0s2 abc\n"):
            with self.assertRaises(CollectorError):
                macos.parse_df(text)


class NetworkTest(unittest.TestCase):
    def test_online(self):
        self.assertEqual(macos.network_up(IFCONFIG_ONLINE), 1)

    def test_offline_even_though_awdl0_is_active(self):
        self.assertEqual(macos.network_up(IFCONFIG_OFFLINE), 0)

    def test_ipv6_only_network_counts(self):
        ipv6_only = IFCONFIG_ONLINE.replace("\tinet 192.168.1.23 netmask 0xffffff00 broadcast 192.168.1.255\n",
                                            "\tinet6 2001:db8::23 prefixlen 64 autoconf secured\n")
        self.assertEqual(macos.network_up(ipv6_only), 1)

    def test_self_assigned_address_only_is_offline(self):
        # en0 has link but DHCP went unanswered: macOS gives it a 169.254.x.x address.
        self_assigned = IFCONFIG_ONLINE.replace(
            "\tinet 192.168.1.23 netmask 0xffffff00 broadcast 192.168.1.255\n",
            "\tinet 169.254.77.12 netmask 0xffff0000 broadcast 169.254.255.255\n")
        self.assertEqual(macos.network_up(self_assigned), 0)

    def test_routable_address(self):
        self.assertTrue(macos.routable_address("inet 192.168.1.23 netmask 0xffffff00"))
        self.assertTrue(macos.routable_address("inet6 2001:db8::23 prefixlen 64"))
        for line in ("inet 169.254.77.12 netmask 0xffff0000", "inet6 fe80::1%en0 prefixlen 64",
                     "inet6 FE80::1%en0", "inet", "ether 8c:85:90:00:00:01", "status: active"):
            self.assertFalse(macos.routable_address(line), line)

    def test_not_ifconfig_output(self):
        with self.assertRaisesRegex(CollectorError, "no interfaces"):
            macos.network_up("ifconfig: interface en0 does not exist\n")


class ReadTest(unittest.TestCase):
    """read() with a fake `run` that answers each command with a recorded output."""

    OUTPUTS = {
        "/usr/bin/top": TOP_TWO_SAMPLES,
        "/usr/bin/vm_stat": VM_STAT_M4,
        "/bin/df": DF_HFS,
        "/sbin/ifconfig": IFCONFIG_ONLINE,
    }
    SYSCTL = {
        "hw.memsize": MEMSIZE_16_GIB,
        "vm.swapusage": SWAPUSAGE_UNDER_LOAD,
        "vm.loadavg": LOADAVG,
    }

    def setUp(self):
        self.calls = []

    def run_fake(self, argv):
        self.calls.append(list(argv))
        if argv[0] == "/usr/sbin/sysctl":
            return self.SYSCTL[argv[-1]]
        return self.OUTPUTS[argv[0]]

    def test_read(self):
        reading = macos.read(run=self.run_fake, disk_path="/System/Volumes/Data")
        self.assertEqual(reading["C"], 100 - 65.78)
        self.assertAlmostEqual(reading["M"], 54.961395, places=5)
        self.assertAlmostEqual(reading["D"], 38.707550, places=5)
        self.assertAlmostEqual(reading["S"], 87.332407, places=5)
        self.assertEqual(reading["L"], 1.28)
        self.assertEqual(reading["N"], 1)
        self.assertEqual(sorted(reading), ["C", "D", "L", "M", "N", "S"])

    def test_commands_by_absolute_path(self):
        macos.read(run=self.run_fake, disk_path="/System/Volumes/Data")
        for argv in self.calls:
            self.assertTrue(argv[0].startswith("/"), argv)
        self.assertIn(["/usr/bin/top", "-l", "2", "-n", "0", "-s", "1"], self.calls)
        self.assertIn(["/bin/df", "-P", "-k", "/System/Volumes/Data"], self.calls)

    def test_a_failing_command_stops_the_reading(self):
        def run(argv):
            if argv[0] == "/usr/bin/vm_stat":
                raise CollectorError("pulse: command not found: /usr/bin/vm_stat")
            return self.run_fake(argv)

        with self.assertRaisesRegex(CollectorError, "/usr/bin/vm_stat"):
            macos.read(run=run, disk_path="/")


class RunCommandTest(unittest.TestCase):
    """The default `run` is the shared runner (tests/test_sources.py), its messages saying "pulse:"."""

    def test_missing_command_names_it(self):
        with self.assertRaisesRegex(CollectorError, "^pulse: command not found: /nonexistent/vm_stat$"):
            macos.run_command(["/nonexistent/vm_stat"])

    def test_timeout_is_passed_on(self):
        with self.assertRaisesRegex(CollectorError, "^pulse: .* did not finish within 0.2 s$"):
            macos.run_command(["/bin/sh", "-c", "exec sleep 5"], timeout=0.2)


if __name__ == "__main__":
    unittest.main()
