"""The FastAPI app: routes over an ``Engine`` and a ``Batcher``; imported only when fastapi is installed."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, Optional, Union
from urllib.parse import quote

import numpy as np
import PIL.Image
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from .. import __version__
from ..infer import Predictor, overlay
from .auth import ApiKeyMiddleware
from .batcher import Batcher, BatcherStopped, QueueFull
from .engine import Engine, build_engine
from .metrics import Metrics, MetricsMiddleware
from .options import ServeOptions
from .page import INDEX_HTML
from .uploads import BodyBudget, BodyTicket, Upload, UploadError, check_upload, decode, read_uploads

logger = logging.getLogger("resnetkit.serve")
# X-Class: printable ASCII as it is, the rest (accents, other scripts, "%") percent-encoded UTF-8, as
# encodeURIComponent writes it (decodeURIComponent reads it back; a raw non-ASCII header value is not portable)
HEADER_SAFE = "".join(chr(code) for code in range(0x20, 0x7F) if chr(code) != "%")
CAM_MAX_SIDE = 512  # overlays of large photos are made and sent scaled down: the page shows them small anyway

ModelSource = Union[Predictor, Callable[[], Predictor]]


class PredictionOut(BaseModel):
    source: str
    labels: list[str]
    indices: list[int]
    probabilities: list[float]
    uncertain: bool  # the top-1 probability is below the server's --min-confidence
    error: Optional[str] = None


class PredictResponse(BaseModel):
    model: str
    runtime: str
    server_ms: float
    predictions: list[PredictionOut]


UPLOAD_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["files"], "properties": {
        "files": {"type": "array", "items": {"type": "string", "format": "binary"},
                  "description": "one or more images (JPEG, PNG, WebP, BMP, GIF, TIFF)"}}}},
    "image/*": {"schema": {"type": "string", "format": "binary"}, "description": "one image as the body"}}}}
ERRORS: dict[Union[int, str], dict[str, Any]] = {
    400: {"description": "no upload is a usable image (corrupt, truncated, empty), or a malformed body"},
    401: {"description": "missing or wrong API key"},
    413: {"description": "body, image bytes, image pixels or number of images over a limit"},
    415: {"description": "not an image (by Content-Type)"},
    422: {"description": "no image in the request, a wrong field, or top_k out of range"},
    500: {"description": "the model's output is NaN or infinite (damaged weights): no answer to give"},
    503: {"description": "model not ready, queue or upload budget full, or shutting down; see Retry-After"},
}


class ServerState:
    """The model and its worker, loaded and warmed up in a background thread so /healthz answers meanwhile."""

    def __init__(self, source: ModelSource, options: ServeOptions, metrics: Metrics, *, model_file: str | None,
                 on_load_failed: Callable[[str], None] | None) -> None:
        self.source, self.options, self.metrics = source, options, metrics
        self.model_file, self.on_load_failed = model_file, on_load_failed
        self.engine: Engine | None = None
        self.batcher: Batcher | None = None
        self.ready = False
        self.error: str | None = None
        self.executor: ThreadPoolExecutor | None = None
        self.loader: threading.Thread | None = None
        self.cam_lock = asyncio.Semaphore(1)  # Grad-CAM runs a backward pass: one at a time
        self.body_budget = BodyBudget(options.max_inflight_bytes)  # upload bytes held over all requests

    def start(self) -> None:
        self.executor = ThreadPoolExecutor(self.options.preprocess_threads, thread_name_prefix="resnetkit-decode")
        self.loader = threading.Thread(target=self._load, name="resnetkit-load")
        self.loader.start()

    def _load(self) -> None:
        options = self.options
        try:
            predictor = self.source() if callable(self.source) else self.source
            engine = build_engine(predictor, runtime=options.runtime, model_file=self.model_file,
                                  onnx_file=options.onnx_file, max_batch=options.max_batch, tta=options.tta,
                                  min_confidence=predictor.min_confidence if options.min_confidence is None
                                  else options.min_confidence)
            engine.warm_up(options.max_batch)
            batcher = Batcher(engine.forward, max_batch=options.max_batch, max_wait_ms=options.max_wait_ms,
                              max_queue=options.max_queue, on_batch=self.metrics.observe_batch)
            batcher.start()
        except Exception as e:  # reported by /readyz and the log; the CLI stops the server
            self.error = f"{type(e).__name__}: {e}"
            logger.error("could not load the model: %s", self.error)
            if self.on_load_failed is not None:
                self.on_load_failed(self.error)
            return
        self.engine, self.batcher = engine, batcher
        self.metrics.watch_queue(lambda: batcher.depth)
        self.metrics.expect_classes(engine.predictor.class_names)
        self.ready = True
        self.metrics.ready.set(1)
        logger.info("%s ready on %s (batches up to %d, waiting up to %g ms)",
                    predictor.info.model.arch, engine.runtime, options.max_batch, options.max_wait_ms)

    def stop(self) -> None:
        """After uvicorn finished the in-flight requests: end the loading (a SIGTERM during warm-up: the interpreter
        must not exit under a thread inside torch, which aborted the process), the worker and the decoding threads."""
        if self.loader is not None:  # a stuck warm-up (a wedged device) is left after --graceful-timeout: serve() exits
            self.loader.join(timeout=self.options.graceful_timeout_s)
        self.ready = False
        if self.batcher is not None:
            self.batcher.stop(timeout=self.options.graceful_timeout_s)
        if self.executor is not None:
            self.executor.shutdown(wait=True)

    def require_ready(self) -> tuple[Engine, Batcher]:
        if not self.ready or self.engine is None or self.batcher is None:
            detail = (f"the model could not be loaded: {self.error}" if self.error
                      else "the model is loading; retry shortly")
            raise HTTPException(503, detail, headers={"Retry-After": "1"})
        return self.engine, self.batcher


def build_app(source: ModelSource, options: ServeOptions, *, model_file: str | None = None,
              on_load_failed: Callable[[str], None] | None = None) -> FastAPI:
    decodable = PIL.Image.MAX_IMAGE_PIXELS  # the decoder's bomb guard: larger images are refused whatever the server
    if decodable and options.max_pixels > decodable and options.max_pixels == ServeOptions.max_pixels:
        options = dataclasses.replace(options, max_pixels=decodable)  # the default, under a program's lower limit
    if decodable and options.max_pixels > decodable:
        raise ValueError(f"max_pixels={options.max_pixels:,} is over the {decodable:,} pixels the decoder accepts "
                         "(PIL.Image.MAX_IMAGE_PIXELS, its decompression-bomb guard): give --max-pixels "
                         f"{decodable} or less, or raise PIL.Image.MAX_IMAGE_PIXELS first when serving from Python")
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.start()
        yield
        await asyncio.get_running_loop().run_in_executor(None, state.stop)

    app = FastAPI(title="resnetkit", version=__version__, lifespan=lifespan,
                  description="Image classification with a resnetkit model: dynamic batching, Prometheus "
                              "metrics, Grad-CAM. Send images to POST /v1/predict.")
    state = ServerState(source, options, metrics, model_file=model_file, on_load_failed=on_load_failed)
    app.state.resnetkit = state

    async def body_ticket() -> AsyncIterator[BodyTicket]:
        """The request's share of the upload budget, given back when the request is done (on the event loop)."""
        with state.body_budget.hold() as ticket:
            yield ticket

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Logged with its traceback by the server; the client gets one line, never the traceback.
        return JSONResponse({"detail": f"internal error ({type(exc).__name__}); see the server log"}, 500)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> str:
        return INDEX_HTML

    @app.get("/healthz", summary="liveness: the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="readiness: the model is loaded and warmed up (503 before)",
             responses={503: {"description": "loading, failed or shutting down"}})
    async def readyz() -> JSONResponse:
        if state.ready and state.engine is not None:
            return JSONResponse({"status": "ready", "runtime": state.engine.runtime})
        status = "failed" if state.error else "loading"
        return JSONResponse({"status": status, "detail": state.error}, 503, headers={"Retry-After": "1"})

    @app.get("/v1/model", summary="architecture, classes, preprocessing, parameters, the file's SHA-256")
    async def model() -> dict[str, Any]:
        engine, _ = state.require_ready()
        # The request limits too: the page sends many dropped images in requests that fit them.
        return {**engine.describe(), "limits": {"max_files": options.max_files,
                                                "max_request_bytes": options.max_request_bytes}}

    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def _decode_fairly(uploads: list[Upload], engine: Engine) -> list[Any]:
        """Each upload's model input or UploadError, decoded in the shared threads a few at a time: all of one
        request's images queued at once (8 photos of 49 megapixels) made every other client wait behind them."""
        share = asyncio.Semaphore(max(1, options.preprocess_threads // 2))
        loop = asyncio.get_running_loop()

        async def one(upload: Upload) -> Any:
            async with share:
                return await loop.run_in_executor(state.executor, decode, engine, upload, options)

        return await asyncio.gather(*(one(upload) for upload in uploads))

    async def _uploads(request: Request, ticket: BodyTicket) -> list[Upload]:
        try:
            return await read_uploads(request, options, ticket)
        except UploadError as e:
            metrics.image_errors.labels(str(e.status)).inc()
            headers = None if e.retry_after_s is None else {"Retry-After": str(e.retry_after_s)}
            raise HTTPException(e.status, e.detail, headers=headers) from None

    @app.post("/v1/predict", response_model=PredictResponse, responses=ERRORS, openapi_extra=UPLOAD_BODY,
              summary="top-k classes of one or more images")
    async def predict(request: Request, top_k: Optional[int] = Query(
            None, ge=1, description=f"classes per image (default: {options.top_k}, or all if the model has fewer)"),
            ticket: BodyTicket = Depends(body_ticket)) -> JSONResponse:
        start = time.perf_counter()
        engine, batcher = state.require_ready()
        classes = len(engine.predictor.class_names)
        if top_k is not None and top_k > classes:
            raise HTTPException(422, f"top_k={top_k} is more than the model's {classes} classes")
        top_k = top_k or min(options.top_k, classes)
        uploads = await _uploads(request, ticket)
        decoded = await _decode_fairly(uploads, engine)
        good = [i for i, d in enumerate(decoded) if isinstance(d, np.ndarray)]
        failures = [d for d in decoded if isinstance(d, UploadError)]
        for failure in failures:
            metrics.image_errors.labels(str(failure.status)).inc()
        if not good:
            raise HTTPException(failures[0].status, "; ".join(f.detail for f in failures))
        try:
            logits = await batcher.submit([decoded[i] for i in good])
        except QueueFull as e:
            raise HTTPException(503, str(e), headers={"Retry-After": str(e.retry_after_s)}) from None
        except BatcherStopped as e:
            raise HTTPException(503, str(e), headers={"Retry-After": "5"}) from None
        metrics.images.inc(len(good))
        answers = engine.label(logits, sources=[uploads[i].name for i in good], top_k=top_k)
        if not any(p.ok for p in answers):  # the model, not the request, is at fault: a 500 that says why
            raise HTTPException(500, answers[0].error)
        for answer in answers:
            if answer.ok:
                metrics.observe_answer(answer.indices[0], answer.labels[0], answer.probabilities[0])
        labelled = iter(answers)
        predictions = [next(labelled).to_dict() if isinstance(d, np.ndarray)
                       else {"source": u.name, "labels": [], "indices": [], "probabilities": [], "uncertain": False,
                             "error": d.detail}
                       for u, d in zip(uploads, decoded)]
        return JSONResponse({"model": engine.predictor.info.model.arch, "runtime": engine.runtime,
                             "server_ms": round(1e3 * (time.perf_counter() - start), 3), "predictions": predictions})

    @app.post("/v1/cam", responses={**ERRORS, 200: {"content": {"image/png": {}}, "description": "the overlay"}},
              response_class=Response, openapi_extra=UPLOAD_BODY,
              summary="Grad-CAM overlay (PNG) of one image, for the predicted class or ?target=NAME_OR_INDEX")
    async def cam(request: Request, target: Optional[str] = Query(None, max_length=200,
                                                                    description="class name or index"),
                  ticket: BodyTicket = Depends(body_ticket)) -> Response:
        engine, _ = state.require_ready()
        uploads = await _uploads(request, ticket)
        if len(uploads) != 1:
            raise HTTPException(422, f"Grad-CAM takes one image per request, got {len(uploads)}")
        [upload] = uploads
        if target is not None:
            try:
                engine.predictor.class_index(target)
            except ValueError as e:
                raise HTTPException(422, str(e)) from None
        async with state.cam_lock:
            result = await asyncio.get_running_loop().run_in_executor(state.executor, _cam_png, engine, upload,
                                                                      options, target)
        if isinstance(result, UploadError):
            metrics.image_errors.labels(str(result.status)).inc()
            raise HTTPException(result.status, result.detail)
        png, label, probability = result
        headers = {"X-Class": quote(label, safe=HEADER_SAFE), "X-Probability": f"{probability:.6f}"}
        if target is None and engine.tta == "none":  # the predicted class's probability: the answer's confidence
            # (with --tta flip the answer averages two views, Grad-CAM runs one: no header rather than a wrong one)
            headers["X-Uncertain"] = str(probability < engine.min_confidence).lower()
        return Response(png, media_type="image/png", headers=headers)

    # The first version's routes, kept working for existing clients (not in the API description).
    app.add_api_route("/predict", predict, methods=["POST"], include_in_schema=False)
    app.add_api_route("/health", healthz, methods=["GET"], include_in_schema=False)
    app.add_api_route("/model", model, methods=["GET"], include_in_schema=False)
    # Every GET route answers HEAD too, as HTTP asks (load-balancer probes use it); kept out of the API description.
    for route in [r for r in app.routes if "GET" in getattr(r, "methods", ()) and hasattr(r, "endpoint")]:
        if route.path not in ("/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"):
            app.add_api_route(route.path, route.endpoint, methods=["HEAD"], include_in_schema=False)

    # Outermost first: metrics see every request, the refused ones included.
    if options.api_key:
        app.add_middleware(ApiKeyMiddleware, api_key=options.api_key)
    app.add_middleware(MetricsMiddleware, metrics=metrics,
                       routes=frozenset(getattr(route, "path", "") for route in app.routes))
    return app


def _cam_png(engine: Engine, upload: Upload, options: ServeOptions,
             target: str | None) -> tuple[bytes, str, float] | UploadError:
    """The overlay PNG of one upload, or why it cannot be made (runs in a thread: a backward pass)."""
    from ..infer import ImageLoadError, load_image

    try:
        check_upload(upload, options)
        image = load_image(upload.data, name=upload.name)
        [result] = engine.predictor.grad_cam([image], target=target, names=[upload.name], max_side=CAM_MAX_SIDE)
    except UploadError as e:
        return e
    except ImageLoadError as e:
        return UploadError(400, str(e))
    blended = overlay(image, result.heatmap)  # at the heat-map's size: the image's, at most CAM_MAX_SIDE a side
    buffer = io.BytesIO()
    blended.save(buffer, "PNG")
    return buffer.getvalue(), result.label, result.probability


__all__ = ["PredictResponse", "ServerState", "build_app"]
