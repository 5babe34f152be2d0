"""The ground layer: small helpers every part of KIRI shares (standard library only).

- atomic_write, atomic_file: a file is always either the old one or the whole new one;
- remove_stale_temp_files: what a killed atomic write left behind;
- is_finite_number: the one test for "a real measurement";
- platform_name / PLATFORM: 'linux', 'macos', or the raw sys.platform;
- default_home: where KIRI keeps its data;
- connection_problem: the words for a network call that failed;
- http_url_problem, read_capped, one_line: a server's address checked, its answer read
  within a size cap and a deadline, its words made one short line;
- printable: what a user gave, quoted in one line as a terminal shows it.
"""

import contextlib
import math
import os
import re
import sys
import tempfile
import time
from pathlib import Path

from .errors import KiriError

try:
    import fcntl
except ImportError:   # Windows: no flock; a temp file's age alone tells whether it was abandoned
    fcntl = None


def atomic_write(path, data, mode=0o600):
    """Write `data` (bytes, or str as UTF-8) to `path`, creating its directory; returns the Path.

    The data goes to a temp file in the same directory, is fsynced, and os.replace()s the
    old file, so a crash never leaves half a file. On any failure the temp file is removed.
    """
    with atomic_file(path, mode) as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)
    return Path(path)


@contextlib.contextmanager
def atomic_file(path, mode=0o600, text=False):
    """A file object to write `path` through, atomically: what the `with` block writes goes to
    a temp file beside `path` (`.<name>.XXXXXXXX.tmp`, TEMP_FILE), which replaces `path` only
    when the block ends without an error; on any failure the temp file is removed and `path`
    is untouched. An OSError names `path`, not the temp file, whose name means nothing to a user.

    A symbolic link is written through (its target is replaced; the link stays). A device or
    a pipe (/dev/stdout, a FIFO) is written in place: replacing it would put a plain file
    where the device was.
    """
    how = {"mode": "w", "encoding": "utf-8"} if text else {"mode": "wb"}
    if os.path.exists(path) and not os.path.isfile(path) and not os.path.isdir(path):
        try:
            with open(path, **how) as f:
                yield f
        except OSError as e:
            raise _naming(e, path) if e.filename is None else e from None
        return
    path = Path(os.path.realpath(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    except OSError as e:
        raise _naming(e, path) from None
    held = _hold(fd)
    try:
        with os.fdopen(fd, **how) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)  # mkstemp always makes 0600
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError) and e.filename in (None, tmp):   # not an error of the caller's own
            raise _naming(e, path) from None
        raise
    finally:
        _release(held)
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


def _hold(fd):
    """Lock a temp file while it is written (a second descriptor, so the lock outlasts the file
    object until the rename), so that remove_stale_temp_files leaves it alone however long the
    write takes (an export, a training's metrics); returns what _release needs, None without flock."""
    if fcntl is None:
        return None
    held = os.dup(fd)
    fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)   # a new file: nobody else holds it
    return held


def _release(held):
    if held is not None:
        os.close(held)


def _abandoned(path):
    """Whether no process is writing the temp file at `path` (the lock of a killed writer is gone)."""
    if fcntl is None:
        return True
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:   # held: a writer is at work
        return False
    finally:
        os.close(fd)


def _naming(error, path):
    """The same OSError (same subclass, same errno) with `path` as its filename."""
    if error.errno is None:
        return error
    return OSError(error.errno, error.strerror, str(path))


# The temp files atomic_file makes: `.<name>.` + mkstemp's 8 random characters + `.tmp`.
TEMP_FILE = re.compile(r"\..+\.[A-Za-z0-9_]{8}\.tmp\Z")
STALE_TEMP_SECONDS = 60   # older than any write in progress takes; a younger one may be another process's


def remove_stale_temp_files(folder, now=None, age=STALE_TEMP_SECONDS):
    """Remove the temp files of atomic writes in `folder` that a kill left behind; returns their
    names. A write in progress in another process keeps its file: it holds the file's lock, and
    one younger than `age` seconds is left alone too (where there is no flock, only that counts).
    Best effort: a folder or file that cannot be read or removed is left as it is."""
    now = time.time() if now is None else now
    removed = []
    try:
        entries = list(os.scandir(str(folder)))
    except OSError:
        return removed
    for entry in entries:
        try:
            if TEMP_FILE.match(entry.name) and entry.is_file(follow_symlinks=False) \
                    and now - entry.stat(follow_symlinks=False).st_mtime > age and _abandoned(entry.path):
                os.unlink(entry.path)
                removed.append(entry.name)
        except OSError:
            continue
    return removed


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
    return expand_user(env.get("KIRI_HOME") or "~/.kiri", "KIRI_HOME" if env.get("KIRI_HOME") else "the default home")


def expand_user(path, what):
    """`path` with a leading ~ or ~name made that user's home folder, as a Path; a ~name of no
    user this system has (or a ~ when it knows no home folder) is a KiriError naming `what`."""
    try:
        return Path(path).expanduser()
    except RuntimeError:   # pathlib: "Could not determine home directory."
        raise KiriError(f"{what} {one_line(repr(str(path)), 80)}: no home folder for "
                        f"{str(path).split('/')[0]!r} on this system") from None


def connection_problem(reason, host, timeout):
    """Why a connection to `host` failed, in words; `reason` is the exception urllib gave.

    The reason's own text appears only in the last two cases; a caller whose URLs hold a
    secret scrubs the returned text, and then makes it one line (one_line).
    """
    # Imported here: they are needed only after a failure, and ssl is slow to import.
    import http.client
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
    if isinstance(reason, AnswerTooLarge):
        return f"{host} sent {reason}"
    if isinstance(reason, http.client.IncompleteRead):
        return f"the answer from {host} was cut short"
    if isinstance(reason, http.client.HTTPException):   # a status line or header that is no HTTP
        return f"malformed answer from {host}: {reason}"
    return f"cannot reach {host}: {reason}"


def http_url_problem(url):
    """What makes `url` unusable as the address of an HTTP(S) server, in words; None if nothing.

    The words never quote the address: it may hold a password.
    """
    import urllib.parse   # here, as ssl in connection_problem: only network sources need it

    try:
        parts = urllib.parse.urlsplit(url)
        host, _ = parts.hostname, parts.port   # .port raises on letters or a number out of range
    except ValueError:   # an unclosed [ of an IPv6 address, a port that is no port
        return "is not a valid address (like https://host or https://host:port)"
    if "@" in parts.netloc:
        return "must not hold a user or password"
    if parts.scheme not in ("https", "http") or not host:
        return "must start with https:// (or http://) and name a host"
    if not url.isprintable() or any(c.isspace() for c in url):
        return "must not contain spaces or control characters"
    return None


class AnswerTooLarge(OSError):
    """A server's answer over the reader's size cap: an OSError, as every other failed read is."""


def read_capped(response, limit, deadline):
    """The body of an HTTP response (urllib's, or an HTTPError), read by `deadline` (a
    time.monotonic() value) and at most `limit` bytes long.

    Past the deadline it raises TimeoutError, beyond the cap AnswerTooLarge: both OSErrors, so
    the caller's handler of failed connections words them (connection_problem), as it does
    http.client's IncompleteRead for an answer shorter than its Content-Length. The deadline
    is checked between reads and each read waits at most the socket's timeout, so a server
    that trickles bytes holds the reader no longer than the deadline and one timeout.
    """
    # read1 returns what has arrived; read(n) would wait for all n bytes of a trickle.
    read = getattr(response, "read1", None) or response.read
    body = bytearray()
    while True:
        if time.monotonic() > deadline:
            raise TimeoutError("the answer took longer than its deadline")
        chunk = read(min(65536, limit + 1 - len(body)))   # one byte past the cap tells "too large"
        if not chunk:
            owed = getattr(response, "length", None)   # what http.client still expects of a Content-Length
            if owed:   # read() would say so, read1 only stops: a cut answer must not pass as whole
                import http.client
                raise http.client.IncompleteRead(bytes(body), owed)
            return bytes(body)
        body += chunk
        if len(body) > limit:
            raise AnswerTooLarge(f"an answer larger than {limit / 2 ** 20:g} MB")


def printable(text, limit=500):
    """`text` as one line a terminal shows as it is: what is not printable (a newline, a carriage
    return, a line separator, an escape) written as its escape, as repr() would; cut at `limit`
    characters. For words that quote what a user gave, which can hold anything."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))
    return text if len(text) <= limit else text[:limit - 1] + "…"


def one_line(text, limit=200):
    """`text` (a server's words, say) as one line of at most `limit` characters, for a message or log."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"
