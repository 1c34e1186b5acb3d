"""An HTTP API and web page over ``resnetkit.infer.Predictor``: ``resnetkit serve MODEL``.

FastAPI, uvicorn, python-multipart and prometheus_client are an optional extra
(``pip install 'resnetkit[serve]'``); this module imports them only when an app is built, so the rest
of resnetkit works without them.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Union

from .options import API_KEY_ENV, RUNTIMES, ServeOptions, api_key_from_env

if TYPE_CHECKING:
    from fastapi import FastAPI

    from ..infer import Predictor

PACKAGES = {"python_multipart": "python-multipart", "prometheus_client": "prometheus-client"}


class MissingDependencyError(ImportError):
    """The ``serve`` extra is not installed; the message says what to install."""


def _require(*modules: str) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        names = " ".join(PACKAGES.get(m, m) for m in missing)
        raise MissingDependencyError(f"resnetkit serve needs {names}: pip install 'resnetkit[serve]' "
                                     f"(or pip install {names})")


def create_app(model: Union[Predictor, Callable[[], Predictor]], options: ServeOptions | None = None, *,
               model_file: str | None = None, on_load_failed: Callable[[str], None] | None = None,
               **overrides: Any) -> FastAPI:
    """The FastAPI app: ``POST /v1/predict``, ``/v1/cam``, ``/v1/model``, probes, metrics and the page at ``/``.

    ``model`` is a Predictor, or a function that returns one (called in the background at startup).
    ``options`` fields can also be given one by one (``create_app(predictor, max_batch=8)``).
    ``model_file`` is the ``.safetensors`` it came from: ``/v1/model`` reports its SHA-256, and
    ``runtime="auto"`` looks beside it for the INT8 ONNX file. The model is loaded, its runtime built
    and warmed up when the server starts (the ASGI lifespan); ``/readyz`` says when that is done.
    """
    _require("fastapi", "python_multipart", "prometheus_client")
    from .app import build_app

    return build_app(model, (options or ServeOptions()).with_overrides(**overrides), model_file=model_file,
                     on_load_failed=on_load_failed)


@contextlib.contextmanager
def _exit_zero_on_signals() -> Iterator[None]:
    """uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown, so the process would die of the signal.

    With these no-op handlers in place the re-raised signal is absorbed and ``serve`` returns: a clean
    stop exits 0, as process supervisors expect.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _bind(host: str, port: int) -> socket.socket:
    """The server's listening socket, bound here as uvicorn binds one (IPv6 for an address with a colon, else IPv4;
    ``localhost`` is 127.0.0.1) rather than by uvicorn: uvicorn binds after the app's startup has begun warming the
    model in a thread and then exits the process, which aborted in torch (SIGABRT) instead of saying that the port
    is taken."""
    listening = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: restart over TIME_WAIT
        listening.bind((host, port))
    except (OSError, UnicodeError) as error:
        listening.close()
        if isinstance(error, (socket.gaierror, UnicodeError)):
            raise ValueError(f"--host {host!r}: not an address to listen on ({error})") from None
        raise ValueError(f"--host {host} --port {port}: cannot listen there ({error.strerror or error}); choose "
                         "another --port, or stop what is using it") from None
    listening.set_inheritable(True)
    return listening


def serve(model: str, *, weights: str | None = None, class_names: str | None = None, device: str | None = None,
          host: str = "127.0.0.1", port: int = 8000, options: ServeOptions | None = None, access_log: bool = False,
          **overrides: Any) -> None:
    """Load MODEL (as ``resnetkit predict`` does) and serve it with uvicorn until SIGTERM or Ctrl-C.

    The model file is read here, so a wrong path fails at once; the runtime is built and warmed up in
    the background while ``/healthz`` already answers. On SIGTERM the server stops accepting
    connections, finishes the requests in flight (up to ``graceful_timeout_s``) and returns.
    """
    _require("fastapi", "python_multipart", "prometheus_client", "uvicorn")
    import uvicorn

    from ..infer import load_predictor
    from .engine import choose_runtime
    from .protocol import guarded_protocol

    options = (options or ServeOptions()).with_overrides(**overrides)
    predictor = load_predictor(model, weights=weights, class_names=class_names, device=device)
    model_file = model if weights is None else weights  # what /v1/model names and hashes
    choose_runtime(options.runtime, device=predictor.device, model_file=model_file, onnx_file=options.onnx_file)
    # Bound before the app exists: a busy port is one error line with nothing started (no warm-up thread, and
    # uvicorn's logging, which uvicorn.Config sets up on the stderr of the moment, not yet configured).
    with _bind(host, port) as listening:
        logging.getLogger("resnetkit.serve").setLevel(logging.INFO)
        failures: list[str] = []

        def load_failed(message: str) -> None:
            failures.append(message)
            server.should_exit = True

        app = create_app(predictor, options, model_file=model_file, on_load_failed=load_failed)
        closed = app.state.resnetkit.metrics.connections_closed
        protocol = guarded_protocol(read_timeout_s=options.read_timeout_s, max_connections=options.max_connections,
                                    on_closed=lambda reason: closed.labels(reason).inc())
        # The connection limit is the protocol's (uvicorn's limit_concurrency answers in plain text, uncounted).
        server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="info", access_log=access_log,
                                               http=protocol, timeout_graceful_shutdown=options.graceful_timeout_s))
        # uvicorn prints where it listens only for a socket it bound itself
        shown = f"[{host}]" if ":" in host else host
        logging.getLogger("uvicorn.error").info("Uvicorn running on http://%s:%d (Press CTRL+C to quit)", shown,
                                                listening.getsockname()[1])
        with _exit_zero_on_signals():
            server.run(sockets=[listening])
        loader = app.state.resnetkit.loader
        if loader is not None and loader.is_alive():  # stopped during a warm-up that outlasted --graceful-timeout
            logging.getLogger("resnetkit.serve").warning("the model was still loading %g s after the stop; exiting "
                                                         "without waiting for it", options.graceful_timeout_s)
            logging.shutdown()
            os._exit(1 if failures else 0)  # the interpreter would wait for the thread (or abort under it)
    if failures:
        raise ValueError(f"the model could not be served: {failures[0]}")


__all__ = ["API_KEY_ENV", "RUNTIMES", "MissingDependencyError", "ServeOptions", "api_key_from_env", "create_app",
           "serve"]
