"""Guards that keep a run's results intact and its errors short.

Plain functions, called from the plugin: an interrupt handler that lets pytest finish (and so
pytest-benchmark write what was measured) on SIGTERM, and a check of ``-m`` expressions.
"""

from __future__ import annotations

import re
import signal
import threading
from types import FrameType

_WORDS = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPERATORS = {"and", "or", "not", "True", "False"}


def unknown_markers(expression: str, known: set[str]) -> list[str]:
    """Names in a ``-m`` expression that are not registered markers (typos of a phase)."""
    if not expression:
        return []
    # Keyword arguments such as m(x=1) are not marker names: drop parenthesised parts.
    names = _WORDS.findall(re.sub(r"\([^)]*\)", "", expression))
    return sorted({n for n in names if n not in _OPERATORS and n not in known})


def registered_markers(lines: list[str]) -> set[str]:
    """Marker names from the ``markers`` ini lines (``name(args): help`` or ``name: help``)."""
    return {re.split(r"[(:]", line, maxsplit=1)[0].strip() for line in lines if line.strip()}


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def sigterm_as_interrupt() -> bool:
    """Turn SIGTERM (CI cancel, ``timeout``, a job scheduler) into KeyboardInterrupt.

    Python's default SIGTERM action kills the process at once, so pytest never reaches its
    session end and pytest-benchmark never writes the cases already measured. As an interrupt,
    pytest stops after the current case and the results of the finished cases are saved.
    """
    if threading.current_thread() is not threading.main_thread():
        return False
    if signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None):
        return False  # someone (torchrun, a test harness) installed a handler: leave it
    signal.signal(signal.SIGTERM, _raise_interrupt)
    return True
