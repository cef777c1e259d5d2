"""Fail fast when the Hugging Face hub cannot be reached.

Without this, a hub id on a machine with no network makes the hub client retry for about 23 s
before it gives up. A one-second TCP probe decides instead; when the hub is unreachable the
loaders look in the local cache only (``local_files_only``), which answers at once.
"""

from __future__ import annotations

import functools
import os
import socket
from urllib.parse import urlparse

from gpt2_fixtures.bench.errors import first_line
from gpt2_fixtures.config import PRESETS

OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
MODEL_HINT = (
    "use a preset (with --gpt2-weights random, offline), a local directory written by "
    "save_pretrained, or a hub id that is in the cache"
)
HINTS = {
    "dataset": "use --gpt2-dataset embedded or a local text file or folder of *.txt files",
    "tokenizer": "use --gpt2-tokenizer embedded or a local directory with tokenizer files",
}


class HubUnavailableError(RuntimeError):
    """The hub was needed and could not be used; the message is one line with a hint."""


def offline_by_env() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes") for v in OFFLINE_VARS)


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout_s: float = 1.5) -> bool:
    """True when a TCP connection to the hub endpoint opens within ``timeout_s``."""
    if offline_by_env():
        return False
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((endpoint.hostname or "", port), timeout=timeout_s):
            return True
    except OSError:
        return False


def local_files_only() -> bool:
    """What to pass to ``from_pretrained(local_files_only=...)`` for a hub id."""
    return not hub_reachable()


def explain(what: str, source: str, exc: BaseException) -> HubUnavailableError:
    """One line for a hub load that failed; for a model it names the other sources it is not."""
    offline = not hub_reachable()
    state = "offline" if offline else "online"
    if what == "model":
        where = "in the local hub cache" if offline else "a model on the hub"
        return HubUnavailableError(
            f"cannot load model {source!r}: {source!r} is neither a preset "
            f"({', '.join(PRESETS)}) nor a local directory nor {where} (hub {state}: "
            f"{first_line(exc)}); {MODEL_HINT}"
        )
    where = "not in the local cache" if offline else "not found"
    return HubUnavailableError(
        f"cannot load {what} {source!r} (hub {state}, {where}: {first_line(exc)}); "
        f"{HINTS.get(what, MODEL_HINT)}"
    )


def datasets_offline_if_unreachable() -> None:
    """Make ``datasets`` answer from its cache at once when the hub cannot be reached.

    ``datasets`` has no ``local_files_only``; its offline switch is read from the environment at
    import time, so it is set on the loaded modules too (huggingface_hub reads it at call time).
    """
    if hub_reachable():
        return
    import datasets
    import huggingface_hub.constants

    datasets.config.HF_HUB_OFFLINE = True
    huggingface_hub.constants.HF_HUB_OFFLINE = True
