"""The ground layer: small helpers every part of KIRI shares (standard library only).

- atomic_write: a file is always either the old one or the whole new one;
- is_finite_number: the one test for "a real measurement";
- platform_name / PLATFORM: 'linux', 'macos', or the raw sys.platform;
- default_home: where KIRI keeps its data;
- connection_problem: the words for a network call that failed.
"""

import math
import os
import sys
import tempfile
from pathlib import Path


def atomic_write(path, data, mode=0o600):
    """Write `data` (bytes, or str as UTF-8) to `path`, creating its directory; returns the Path.

    The data goes to a temp file in the same directory, is fsynced, and os.replace()s the
    old file, so a crash never leaves half a file. On any failure the temp file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)  # mkstemp always makes 0600
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    # fsync the directory so the rename itself survives a crash; not every platform
    # lets a directory be opened, and the file is already in place, so this is best effort.
    try:
        dir_fd = os.open(str(path.parent), os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass
    return path


def is_finite_number(x):
    """True for an int or float that is finite; False for anything else (bools too). Never raises."""
    # bool is an int subclass, but True is not a measurement.
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return False
    try:
        return math.isfinite(x)
    except OverflowError:  # an int too large for a float (10**400) cannot be stored as one
        return False


def platform_name(platform=sys.platform):
    """'linux', 'macos', or the raw sys.platform value for anything else."""
    if platform.startswith("linux"):
        return "linux"
    return "macos" if platform == "darwin" else platform


PLATFORM = platform_name()


def default_home(env=None):
    """The KIRI home: $KIRI_HOME if set and not empty, else ~/.kiri (with ~ expanded)."""
    env = os.environ if env is None else env
    return Path(env.get("KIRI_HOME") or "~/.kiri").expanduser()


def connection_problem(reason, host, timeout):
    """Why a connection to `host` failed, in words; `reason` is the exception urllib gave.

    The reason's own text appears only in the last case; a caller whose URLs hold a
    secret scrubs the returned text.
    """
    # Imported here: they are needed only after a failure, and ssl is slow to import.
    import socket
    import ssl

    if isinstance(reason, (socket.timeout, TimeoutError)):
        return f"no answer from {host} within {timeout} s"
    if isinstance(reason, ConnectionRefusedError):
        return f"connection refused by {host}"
    if isinstance(reason, ssl.SSLCertVerificationError):
        return f"certificate of {host} is not trusted ({reason.verify_message})"
    if isinstance(reason, socket.gaierror):
        return f"cannot resolve the address of {host}"
    return f"cannot reach {host}: {reason}"
