"""What every data source raises when it cannot deliver a reading, and how sources run commands."""

import os
import subprocess

from ..errors import KiriError
from ..ground import PLATFORM  # re-exported: the atoms import it from here


class CollectorError(KiriError):
    """A data source could not be read; the message is one line for the user."""


def run_command(argv, source, timeout=30):
    """Run a system command with LC_ALL=C and return its stdout; any failure is a CollectorError.

    `source` is the atom's name ("pulse", "rhythm"): every message starts with
    "<source>: ", so the user knows which atom could not read its data. Atoms bind
    it once, e.g. functools.partial(run_command, source="pulse").
    """
    # Under some locales numbers print with a decimal comma; C keeps them parseable.
    env = dict(os.environ, LC_ALL="C")
    try:
        done = subprocess.run(argv, capture_output=True, encoding="utf-8", errors="replace",
                              env=env, timeout=timeout)
    except FileNotFoundError:
        raise CollectorError(f"{source}: command not found: {argv[0]}") from None
    except subprocess.TimeoutExpired:
        raise CollectorError(f"{source}: {' '.join(argv)} did not finish within {timeout} s") from None
    except OSError as error:
        raise CollectorError(f"{source}: cannot run {argv[0]}: {error.strerror or error}") from None
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["no message"])[0]
        raise CollectorError(f"{source}: {' '.join(argv)} failed (exit {done.returncode}): {reason}")
    return done.stdout

