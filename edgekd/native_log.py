"""Native libraries' console output (TFLite Micro's allocation log, LiteRT's delegate banner).

They print to the C-level stderr, which Python's redirections do not reach: read it where it carries a
measurement, keep it off the user's terminal where it only means something to the library's authors.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator


@contextlib.contextmanager
def captured_stderr() -> Iterator[list[str]]:
    """Capture C-level stderr (fd 2), where TFLite Micro prints; the text is appended on exit.

    Swaps the process-wide fd 2, so it must not run concurrently with other threads that print.
    """
    sink: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield sink
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            sink.append(tmp.read().decode(errors="replace"))
