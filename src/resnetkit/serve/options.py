"""What a server is allowed to do: one typed record of every limit and knob, filled in by the CLI flags."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from typing import Any

MIB = 1024 * 1024
RUNTIMES = ("auto", "torch", "onnx", "openvino-int8")
API_KEY_ENV = "RESNETKIT_API_KEY"


@dataclass(frozen=True)
class ServeOptions:
    """Limits and batching for ``create_app``; every field is a ``resnetkit serve`` flag."""

    top_k: int = 5  # the default top-k for requests that do not ask
    # auto: openvino-int8 when an INT8 ONNX file is given or sits beside the model file (as
    # `resnetkit export --int8` writes it) and OpenVINO is installed, else onnx, else torch.
    runtime: str = "auto"
    onnx_file: str | None = None  # an exported (fp32 or INT8) ONNX file of the model for onnx / openvino-int8
    # Dynamic batching: the worker takes what is queued, up to max_batch images, waiting at most
    # max_wait_ms after the first for more to arrive. max_batch=1 turns batching off.
    max_batch: int = 32
    max_wait_ms: float = 2.0
    max_queue: int = 256  # images waiting for the model; beyond it requests get 503 + Retry-After
    preprocess_threads: int = 2  # decoding and resizing, off the event loop
    max_upload_bytes: int = 20 * MIB  # one image
    max_request_bytes: int = 32 * MIB  # one request body, all its images together
    max_files: int = 64  # images in one request
    max_pixels: int = 50_000_000  # width x height of one image, read from its header before decoding
    # None: no authentication (the server binds to 127.0.0.1 by default). Kept out of repr and logs.
    api_key: str | None = field(default=None, repr=False)
    graceful_timeout_s: float = 30.0  # on SIGTERM, how long in-flight requests may take to finish

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIMES:
            raise ValueError(f"runtime {self.runtime!r} is not one of {', '.join(RUNTIMES)}")
        for name in ("top_k", "max_batch", "max_queue", "preprocess_threads", "max_upload_bytes",
                     "max_request_bytes", "max_files", "max_pixels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if self.max_wait_ms < 0:
            raise ValueError(f"max_wait_ms={self.max_wait_ms} must be >= 0")
        if self.api_key is not None and not self.api_key.strip():
            raise ValueError(f"the API key is empty; unset {API_KEY_ENV} or give a real key")

    def with_overrides(self, **overrides: Any) -> ServeOptions:
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TypeError(f"unknown serve option(s) {unknown}; choose from {sorted(known)}")
        return replace(self, **overrides)


def api_key_from_env(given: str | None) -> str | None:
    """The key from ``--api-key``, else from ``RESNETKIT_API_KEY``, else None (no authentication)."""
    return given if given is not None else (os.environ.get(API_KEY_ENV) or None)
