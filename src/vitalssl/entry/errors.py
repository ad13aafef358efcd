"""How the command lines and stage scripts end on a known error: one line on stderr, exit code 2.

An interrupt (Ctrl-C) ends with ``error: interrupted`` and exit code 130. Set
``VITALSSL_DEBUG=1`` to get the full traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
from functools import wraps

# Errors whose message already names the file, key, flag or case; anything else is a bug and keeps its traceback.
# OSError covers missing files, permissions and full disks; its message names the path.
KNOWN_ERRORS = (ValueError, OSError, RuntimeError, FloatingPointError)


def one_line_errors(fn):
    """Run ``fn``; a known error prints ``error: <message>`` on one line and exits with status 2."""
    @wraps(fn)
    def run(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except KNOWN_ERRORS as e:
            if os.environ.get("VITALSSL_DEBUG"):
                raise
            msg = " ".join(str(e).split()) or type(e).__name__
            print(f"error: {msg}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            if os.environ.get("VITALSSL_DEBUG"):
                raise
            print("error: interrupted", file=sys.stderr)
            sys.exit(130)
    return run


class ArgumentParser(argparse.ArgumentParser):
    """``argparse`` that reports a bad flag in the same one line (not the whole usage), exit status 2."""

    def error(self, message: str):
        print(f"error: {self.prog}: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)
