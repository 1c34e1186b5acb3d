"""An HTTP API and web page over ``resnetkit.infer.Predictor``: ``resnetkit serve MODEL``.

FastAPI and uvicorn are an optional extra (``pip install 'resnetkit[serve]'``); this module imports
them only when an app is built, so the rest of resnetkit works without them.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Any

from ..infer import Predictor, load_predictor

if TYPE_CHECKING:
    from fastapi import FastAPI

DEFAULT_MAX_UPLOAD_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_FILES = 64


class MissingDependencyError(ImportError):
    """The ``serve`` extra is not installed; the message says what to install."""


def _require(*modules: str) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        packages = {"multipart": "python-multipart"}
        names = " ".join(packages.get(m, m) for m in missing)
        raise MissingDependencyError(f"resnetkit serve needs {names}: pip install 'resnetkit[serve]' "
                                     f"(or pip install {names})")


def create_app(predictor: Predictor, *, top_k: int = 5, max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
               max_files: int = DEFAULT_MAX_FILES) -> FastAPI:
    """The FastAPI app: ``POST /predict``, ``GET /health``, ``GET /model`` and the upload page at ``/``."""
    _require("fastapi", "multipart")
    from .app import build_app

    return build_app(predictor, top_k=top_k, max_upload_bytes=max_upload_bytes, max_files=max_files)


def serve(model: str, *, weights: str | None = None, class_names: str | None = None, device: str | None = None,
          host: str = "127.0.0.1", port: int = 8000, top_k: int = 5, **app_options: Any) -> None:
    """Load MODEL (as ``resnetkit predict`` does) and serve it with uvicorn until interrupted."""
    _require("fastapi", "multipart", "uvicorn")
    import uvicorn

    predictor = load_predictor(model, weights=weights, class_names=class_names, device=device)
    app = create_app(predictor, top_k=top_k, **app_options)
    uvicorn.run(app, host=host, port=port, log_level="info")


__all__ = ["MissingDependencyError", "create_app", "serve"]
