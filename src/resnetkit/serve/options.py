"""What a server is allowed to do: ``ServeOptions`` (in config/tasks.py, with the other typed configs) and the API key.
"""

from __future__ import annotations

import os

from ..config import API_KEY_ENV, MIB, SERVE_RUNTIMES, ServeOptions

RUNTIMES = SERVE_RUNTIMES
__all__ = ["API_KEY_ENV", "MIB", "RUNTIMES", "ServeOptions", "api_key_from_env"]


def api_key_from_env(given: str | None) -> str | None:
    """The key from ``--api-key``, else from ``RESNETKIT_API_KEY``, else None (no authentication)."""
    return given if given is not None else (os.environ.get(API_KEY_ENV) or None)
