"""Value checks and error text shared by `regzoo.zoo`, `regzoo.datamodules` and `regzoo.studies`.

One finite-number check, one integer check and one exception-to-line helper for the whole package:
a user's mistake is reported the same way wherever it is caught.
"""

from __future__ import annotations

import math
from typing import Any


class UserError(ValueError):
    """A user's mistake (a config, a storage URL, a study name, a flag): shown as one line,
    without a traceback; the `regzoo` command exits with code 2. Each layer subclasses it."""


def is_number(value: Any) -> bool:
    """A finite int or float, not a bool (`True` is an int to Python, never a number here)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def is_int(value: Any, low: int | None = None, high: int | None = None) -> bool:
    """An int (not a bool) in [low, high]; a missing bound is open."""
    if not isinstance(value, int) or isinstance(value, bool):
        return False
    return (low is None or value >= low) and (high is None or value <= high)


def one_line(exc: BaseException, *, lines: int | None = None) -> str:
    """An exception as one line of printable text, or its type's name when it has no text.

    With `lines`, only its first `lines` non-empty lines, joined by spaces (torch's messages run
    to many). Control characters are escaped, a newline included, so a value quoted in the
    message (a config key may hold one) can neither break the line nor move the cursor.
    """
    text = str(exc).strip()
    if lines is not None:
        text = " ".join([s.strip() for s in text.splitlines() if s.strip()][:lines])
    text = text or type(exc).__name__
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)
