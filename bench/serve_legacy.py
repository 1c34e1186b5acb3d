"""The serving path ``resnetkit serve`` had before dynamic batching (commit 19c3786), kept to measure against.

``bench/bench_serve.py`` runs it as server (c): eager PyTorch, a sync FastAPI route (thread pool),
FastAPI's ``UploadFile`` form parsing, one request one forward pass behind a lock, and
``uvicorn.run(app, host, port, log_level="info")`` as the old ``resnetkit.serve.serve`` called it.
The route is the old ``build_app``'s ``/predict`` line for line (the page and /model are left out;
they take no part in the load). No ``from __future__ import annotations`` here: FastAPI must see the
real types of the route's parameters.

    PYTHONPATH=src python bench/serve_legacy.py MODEL --port 8000
"""

import argparse
import threading
from typing import Optional

from fastapi import FastAPI, File, HTTPException, Query, UploadFile
from pydantic import BaseModel

from resnetkit.infer import Predictor


class PredictionOut(BaseModel):
    source: str
    labels: list[str]
    indices: list[int]
    probabilities: list[float]
    error: Optional[str] = None


class PredictResponse(BaseModel):
    model: str
    predictions: list[PredictionOut]


def legacy_app(predictor: Predictor, *, top_k: int = 5, max_upload_bytes: int = 20 * 1024 * 1024,
               max_files: int = 64) -> FastAPI:
    app = FastAPI(title="resnetkit")
    num_classes = len(predictor.class_names)
    default_k = min(top_k, num_classes)
    lock = threading.Lock()

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

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
        return PredictResponse(model=predictor.info.model.arch,
                               predictions=[PredictionOut(**p.to_dict()) for p in predictions])

    return app


if __name__ == "__main__":
    import uvicorn

    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    uvicorn.run(legacy_app(Predictor.from_file(args.model)), host=args.host, port=args.port, log_level="info")
