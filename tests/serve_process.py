"""A real ``resnetkit serve`` process for tests: a ResNet-20 model file, a free port, ready when ``/readyz`` says so,
killed when the test module is done (a test that stops it itself checks its exit)."""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(folder: Path, *flags: str) -> Iterator[tuple[subprocess.Popen, int]]:
    """``resnetkit serve`` of an untrained CIFAR ResNet-20 with ``flags``, logging to ``folder/server.log``."""
    from resnetkit import create_model, save_model

    model = folder / "cifar10-resnet20.safetensors"
    save_model(create_model("resnet20"), model, class_names=NAMES)
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    with open(folder / "server.log", "w+") as log:
        process = subprocess.Popen([sys.executable, "-m", "resnetkit.cli", "serve", str(model), "--port", str(port),
                                    "--runtime", "torch", *flags], stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + 120
            while True:
                assert process.poll() is None, f"the server exited: {(folder / 'server.log').read_text()}"
                assert time.monotonic() < deadline, "the server was not ready within 120 s"
                try:
                    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                    connection.request("GET", "/readyz")
                    if connection.getresponse().status == 200:
                        break
                except OSError:
                    pass
                time.sleep(0.2)
            yield process, port
        finally:
            if process.poll() is None:
                process.kill()
