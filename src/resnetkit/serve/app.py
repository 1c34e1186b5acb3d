"""The FastAPI routes. Each one is a few lines over ``Predictor``; imported only when fastapi is installed."""

from __future__ import annotations

import threading
from typing import Any, Optional

from fastapi import FastAPI, File, HTTPException, Query, UploadFile
from fastapi.responses import HTMLResponse
from pydantic import BaseModel

from .. import __version__
from ..infer import Predictor
from .page import INDEX_HTML


class PredictionOut(BaseModel):
    source: str
    labels: list[str]
    indices: list[int]
    probabilities: list[float]
    error: Optional[str] = None


class PredictResponse(BaseModel):
    model: str
    predictions: list[PredictionOut]


def model_description(predictor: Predictor) -> dict[str, Any]:
    """What ``GET /model`` answers: the architecture, classes and preprocessing stored with the weights."""
    info = predictor.info
    return {
        "arch": info.model.arch,
        "config": info.model.to_dict(),
        "num_classes": len(predictor.class_names),
        "class_names": predictor.class_names,
        "preprocess": info.preprocess.to_dict(),
        "device": str(predictor.device),
        "resnetkit_version": __version__,
    }


def build_app(predictor: Predictor, *, top_k: int, max_upload_bytes: int, max_files: int) -> FastAPI:
    app = FastAPI(title="resnetkit", version=__version__,
                  description=f"Image classification with {predictor.info.model.arch}")
    num_classes = len(predictor.class_names)
    default_k = min(top_k, num_classes)
    # One request at a time on the model: bounded memory, and torch already uses every core per batch.
    lock = threading.Lock()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> str:
        return INDEX_HTML

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/model")
    def model() -> dict[str, Any]:
        return model_description(predictor)

    # Plain ``def`` routes run in FastAPI's thread pool, so inference never blocks the event loop.
    @app.post("/predict", response_model=PredictResponse)
    def predict(files: Optional[list[UploadFile]] = File(None, description="one or more images"),
                file: Optional[UploadFile] = File(None, description="a single image (alternative to files)"),
                top_k: int = Query(default_k, ge=1, le=num_classes)) -> PredictResponse:
        uploads = list(files or []) + ([file] if file is not None else [])
        if not uploads:
            raise HTTPException(422, "no image uploaded: send multipart/form-data with field 'files' (or 'file')")
        if len(uploads) > max_files:
            raise HTTPException(413, f"{len(uploads)} files in one request; at most {max_files}")
        names, payloads = [], []
        for i, upload in enumerate(uploads):
            name = upload.filename or f"upload #{i + 1}"
            data = upload.file.read(max_upload_bytes + 1)
            if len(data) > max_upload_bytes:
                raise HTTPException(413, f"{name}: larger than {max_upload_bytes // (1024 * 1024)} MiB")
            names.append(name)
            payloads.append(data)
        with lock:
            predictions = predictor.predict(payloads, names=names, top_k=top_k)
        if not any(p.ok for p in predictions):
            raise HTTPException(400, "; ".join(p.error or "" for p in predictions))
        # With several uploads, the usable ones are answered and the others carry their error.
        return PredictResponse(model=predictor.info.model.arch,
                               predictions=[PredictionOut(**p.to_dict()) for p in predictions])

    return app
