"""Load benchmark of ``resnetkit serve``: requests/s and latency under concurrent clients, side by side.

Three servers of the same CIFAR ResNet-20 model file, each its own uvicorn process on 127.0.0.1:

  (a) ``resnetkit serve MODEL`` with its defaults (runtime auto, dynamic batching)
  (b) the same runtime with batching off (``--no-batching``): batching's own share
  (c) the design ``resnetkit serve`` had before: eager PyTorch, one request one forward pass behind a
      lock, FastAPI's form parsing, uvicorn's defaults (``bench/serve_legacy.py``, a faithful copy of it)

They are measured in interleaved rounds (a, b, c, a, b, c, ...), so load from other jobs on a shared
machine falls on all three alike. Every request uploads one CIFAR training image (a 32x32 JPEG) as
multipart; any non-200 answer or connection error is counted as an error. Then ResNet-50 at 224x224
on the INT8 runtime (OpenVINO on the file ``quantize_onnx_int8`` writes) under the same load.

    PYTHONPATH=src python bench/bench_serve.py                 # the recorded run (docs/serve.md)
    PYTHONPATH=src python bench/bench_serve.py --requests 400 --resnet50-requests 100   # a quick look

The load generator is bounded (a fixed number of requests, a timeout on each) and only talks to
127.0.0.1. Its clients are threads with one keep-alive ``http.client`` connection each: the lightest
client the standard library has, so the generator takes as little as possible of the CPU it shares
with the server.
"""

from __future__ import annotations

import argparse
import http.client
import io
import os
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HOST = "127.0.0.1"  # the generator refuses any other address
CIFAR_TAR = "shared/datasets/cifar10-train-jpeg.tar"  # looked for in the folders above this checkout
CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
REQUEST_TIMEOUT_S = 60.0


# --- the load generator ---------------------------------------------------------------------------------

@dataclass
class LoadResult:
    latencies_s: list[float]
    errors: list[str]
    wall_s: float
    batches: tuple[float, float] | None = None  # forward passes and images, from the server's /metrics

    @property
    def requests(self) -> int:
        return len(self.latencies_s) + len(self.errors)

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies_s, q) * 1e3) if self.latencies_s else float("nan")

    @property
    def per_s(self) -> float:
        return len(self.latencies_s) / self.wall_s


def multipart_body(image: bytes, name: str) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{name}\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode() + image + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def generate_load(port: int, path: str, image: bytes, *, requests: int, clients: int) -> LoadResult:
    """``requests`` POSTs of ``image`` from ``clients`` threads, each on its own keep-alive connection."""
    body, content_type = multipart_body(image, "image.jpg")
    headers = {"Content-Type": content_type, "Content-Length": str(len(body))}
    counter = iter(range(requests))
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[str] = []

    def client() -> None:
        connection = http.client.HTTPConnection(HOST, port, timeout=REQUEST_TIMEOUT_S)
        while True:
            with lock:
                if next(counter, None) is None:
                    break
            start = time.perf_counter()
            try:
                connection.request("POST", path, body=body, headers=headers)
                response = connection.getresponse()
                payload = response.read()
                elapsed = time.perf_counter() - start
                with lock:
                    if response.status == 200 and b'"labels"' in payload:
                        latencies.append(elapsed)
                    else:
                        errors.append(f"HTTP {response.status}: {payload[:200]!r}")
            except (OSError, http.client.HTTPException) as e:
                with lock:
                    errors.append(f"{type(e).__name__}: {e}")
                connection.close()
                connection = http.client.HTTPConnection(HOST, port, timeout=REQUEST_TIMEOUT_S)
        connection.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return LoadResult(latencies, errors, time.perf_counter() - start)


def batch_counters(port: int) -> tuple[float, float] | None:
    """(forward passes, images) so far, from ``resnetkit_batch_size``; None for a server without /metrics."""
    connection = http.client.HTTPConnection(HOST, port, timeout=REQUEST_TIMEOUT_S)
    connection.request("GET", "/metrics")
    response = connection.getresponse()
    text = response.read().decode()
    if response.status != 200:
        return None
    values = dict(line.rsplit(" ", 1) for line in text.splitlines() if line.startswith("resnetkit_batch_size_"))
    return float(values["resnetkit_batch_size_count"]), float(values["resnetkit_batch_size_sum"])


def measured_load(port: int, path: str, image: bytes, *, requests: int, clients: int) -> LoadResult:
    """``generate_load`` plus how the server batched those requests (mean images per forward pass)."""
    before = batch_counters(port)
    result = generate_load(port, path, image, requests=requests, clients=clients)
    after = batch_counters(port)
    if before is not None and after is not None:
        result.batches = (after[0] - before[0], after[1] - before[1])
    return result


# --- servers ----------------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@dataclass
class Server:
    label: str
    process: subprocess.Popen
    port: int
    path: str  # the predict route
    log: Path


def start_server(label: str, command: list[str], *, port: int, path: str, ready: str, workdir: Path) -> Server:
    log = workdir / f"server-{label.split()[0]}.log"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, *command], stdout=out, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{label} exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            connection = http.client.HTTPConnection(HOST, port, timeout=5)
            connection.request("GET", ready)
            if connection.getresponse().status == 200:
                return Server(label, process, port, path, log)
        except OSError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"{label} was not ready within 600 s")


def stop_server(server: Server) -> int:
    server.process.send_signal(signal.SIGTERM)
    try:
        return server.process.wait(60)
    except subprocess.TimeoutExpired:
        server.process.kill()
        return -9


# --- models and images ------------------------------------------------------------------------------------

def cifar_jpeg() -> tuple[bytes, str]:
    """A real CIFAR-10 training image (32x32 JPEG), or a synthetic one when the dataset is absent."""
    tar_path = next((p / CIFAR_TAR for p in Path(__file__).resolve().parents if (p / CIFAR_TAR).exists()), None)
    if tar_path is not None:
        with tarfile.open(tar_path) as tar:
            for member in tar:
                if member.isfile() and member.name.lower().endswith(".jpg"):
                    return tar.extractfile(member).read(), member.name  # type: ignore[union-attr]
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return buffer.getvalue(), "synthetic 32x32 JPEG"


def photo_jpeg(width: int = 320, height: int = 240) -> bytes:
    """A smooth synthetic photo-sized JPEG for the 224x224 model (resized to 256, centre-cropped)."""
    from PIL import Image

    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([(x * 255 / width), (y * 255 / height), ((x + y) % 64) * 4], axis=-1).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def make_models(workdir: Path, *, resnet50: bool) -> tuple[Path, Path | None]:
    """A CIFAR ResNet-20 model file; a ResNet-50 one with its INT8 ONNX file beside it (random weights).

    Speed does not depend on the weights' values; ``realistic_random_weights`` gives the BatchNorms
    trained-looking statistics so the INT8 graph is the one a trained model gets.
    """
    import torch

    from resnetkit import create_model, save_model
    from resnetkit.export import quantize_onnx_int8
    from resnetkit.export.bench import realistic_random_weights
    from resnetkit.export.formats import write_artifact
    from resnetkit.models import load_model

    torch.manual_seed(0)
    r20 = workdir / "cifar10-resnet20.safetensors"
    save_model(realistic_random_weights(create_model("resnet20").eval()), r20, class_names=CIFAR_NAMES)
    if not resnet50:
        return r20, None
    r50 = workdir / "resnet50.safetensors"
    save_model(realistic_random_weights(create_model("resnet50").eval()), r50,
               class_names=[f"class {i}" for i in range(1000)])
    model, info = load_model(r50)
    fp32 = write_artifact(model, info, workdir / "resnet50.onnx", "onnx")
    calibration = torch.randn(16, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    quantize_onnx_int8(fp32, workdir / "resnet50.int8.onnx", calibration)  # where `export --int8` puts it
    return r20, r50


# --- the run ------------------------------------------------------------------------------------------------

HEADER = ("| server | requests | errors | requests/s | p50 ms | p90 ms | p99 ms | images per forward pass |\n"
          "|---|---:|---:|---:|---:|---:|---:|---:|")


def row(label: str, result: LoadResult) -> str:
    batch = f"{result.batches[1] / result.batches[0]:.1f}" if result.batches and result.batches[0] else "-"
    return (f"| {label} | {result.requests} | {len(result.errors)} | {result.per_s:.1f} | "
            f"{result.percentile_ms(50):.1f} | {result.percentile_ms(90):.1f} | {result.percentile_ms(99):.1f} | "
            f"{batch} |")


def merge(results: list[LoadResult]) -> LoadResult:
    batches = [r.batches for r in results if r.batches]
    return LoadResult([x for r in results for x in r.latencies_s], [x for r in results for x in r.errors],
                      sum(r.wall_s for r in results),
                      (sum(b[0] for b in batches), sum(b[1] for b in batches)) if batches else None)


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2400, help="requests per ResNet-20 server (default: 2400)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds the requests are split into")
    parser.add_argument("--resnet50-requests", type=int, default=2000, help="0 skips the ResNet-50 INT8 part")
    parser.add_argument("--warmup", type=int, default=100, help="requests sent to each server before timing")
    args = parser.parse_args()

    import onnxruntime
    import openvino

    from resnetkit.device import describe_machine

    print(f"{describe_machine()}, onnxruntime {onnxruntime.__version__}, openvino {openvino.__version__}")
    print(f"start: {uptime()}")
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        workdir = Path(tmp)
        r20, r50 = make_models(workdir, resnet50=args.resnet50_requests > 0)
        image, source = cifar_jpeg()
        print(f"ResNet-20 request: one {len(image)}-byte JPEG ({source}) as multipart 'files'; "
              f"{args.requests} requests per server from {args.clients} clients in {args.rounds} interleaved rounds")
        cli = ["-m", "resnetkit.cli", "serve", str(r20), "--host", HOST]
        specs = [
            ("(a) new, defaults", [*cli], "/v1/predict", "/readyz"),
            ("(b) new, batching off", [*cli, "--no-batching"], "/v1/predict", "/readyz"),
            ("(c) before: torch, lock", [str(Path(__file__).with_name("serve_legacy.py")), str(r20)], "/predict",
             "/health"),
        ]
        servers: list[Server] = []
        try:
            for label, command, path, ready in specs:
                port = free_port()
                servers.append(start_server(label, [*command, "--port", str(port)], port=port, path=path, ready=ready,
                                            workdir=workdir))
            # (b) runs (a)'s runtime: the only difference is batching.
            for server in servers:
                generate_load(server.port, server.path, image, requests=args.warmup, clients=args.clients)
            per_round = args.requests // args.rounds
            results: dict[str, list[LoadResult]] = {s.label: [] for s in servers}
            for _ in range(args.rounds):
                for server in servers:
                    results[server.label].append(measured_load(server.port, server.path, image, requests=per_round,
                                                               clients=args.clients))
            merged = {label: merge(r) for label, r in results.items()}
            codes = [stop_server(s) for s in servers]
        finally:
            for server in servers:
                if server.process.poll() is None:
                    server.process.kill()
        runtime = next((line.split(" on ")[-1].split()[0] for line in servers[0].log.read_text().splitlines()
                        if " ready on " in line), "?")
        print(f"(a) and (b) serve with the {runtime} runtime; exit codes after SIGTERM: {codes}")
        print()
        print(HEADER)
        for label, result in merged.items():
            print(row(label, result))
        a, b, c = (merged[s.label] for s in servers)
        print()
        if c.per_s == 0 or b.per_s == 0:
            print("a server answered no request: see the errors below")
        else:
            verdict = "MET" if a.per_s >= 2 * c.per_s else "NOT MET"
            print(f"(a) / (c) = {a.per_s / c.per_s:.2f}x requests/s (target >= 2x: {verdict}); "
                  f"batching's own share (a) / (b) = {a.per_s / b.per_s:.2f}x")
        for label, result in merged.items():
            for error in result.errors[:3]:
                print(f"  {label} error: {error}")

        if r50 is not None:
            port = free_port()
            command = ["-m", "resnetkit.cli", "serve", str(r50), "--host", HOST, "--port", str(port),
                       "--runtime", "openvino-int8"]
            server = start_server("resnet50 openvino-int8", command, port=port, path="/v1/predict", ready="/readyz",
                                  workdir=workdir)
            try:
                photo = photo_jpeg()
                generate_load(port, server.path, photo, requests=args.warmup, clients=args.clients)
                result = measured_load(port, server.path, photo, requests=args.resnet50_requests, clients=args.clients)
                code = stop_server(server)
            finally:
                if server.process.poll() is None:
                    server.process.kill()
            print()
            print(f"ResNet-50 at 224x224, --runtime openvino-int8 (defaults otherwise), one {len(photo)}-byte "
                  f"320x240 JPEG per request, {args.clients} clients; exit code after SIGTERM: {code}")
            print()
            print(HEADER)
            print(row("resnet50 openvino-int8", result))
            for error in result.errors[:3]:
                print(f"  error: {error}")
    print()
    print(f"end: {uptime()}  ({time.time() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
