"""One-line errors: the first line of a library's exception, and finite numbers from options."""

from __future__ import annotations

import argparse
import math


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first non-empty line of ``str(exc)``, at most ``limit`` characters; the exception's
    type name when its message is empty."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:limit]


def parse_finite(text: str, example: str = "") -> float:
    """A finite number from an option's text, or ``argparse.ArgumentTypeError`` (one line);
    ``example`` ends the message, e.g. "; expected the device's peak in TFLOP/s, e.g. 989.5"."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number{example}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number{example}")
    return value
