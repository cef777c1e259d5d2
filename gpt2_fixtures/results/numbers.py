"""Reading a number from a result file and writing a change as text: one implementation each,
for the gate, the report, the history, the PR comment and the file checks."""

from __future__ import annotations

import math
from typing import Any


def finite(value: Any) -> float | None:
    """A finite float, or None: a bool, a string, NaN, an infinity or an int too large for a
    float (10**400) is None, not an error."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:  # an integer beyond a float's range overflows here
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def is_finite(value: Any) -> bool:
    return finite(value) is not None


def signed_percent(fraction: float | None, missing: str = "-") -> str:
    """A relative change as ``+12.3%``; ``+inf``/``-inf`` past a float's range."""
    if fraction is None:
        return missing
    if not math.isfinite(fraction):
        return "+inf" if fraction > 0 else "-inf"
    return f"{fraction * 100:+.1f}%"
