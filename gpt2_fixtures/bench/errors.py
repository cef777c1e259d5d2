"""One line from an exception: what the one-line errors of the suite quote from a library."""

from __future__ import annotations


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first non-empty line of ``str(exc)``, at most ``limit`` characters; the exception's
    type name when its message is empty."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:limit]
