"""Slow, stalled and many clients cannot shut others out; a server stopped at any moment exits cleanly; what a server
is given at startup is checked then (a foreign ONNX file, settings no request could meet).

The connection guards live in uvicorn's protocol, so these drive a real ``resnetkit serve`` process over sockets.
"""

from __future__ import annotations

import http.client
import io
import json
import signal
import socket
import threading
import time

import pytest
import torch
from PIL import Image

from resnetkit import create_model, save_model
from resnetkit.infer import Predictor

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("httpx")
pytest.importorskip("prometheus_client")
from fastapi.testclient import TestClient  # noqa: E402

from resnetkit.serve import ServeOptions, create_app  # noqa: E402

from serve_process import running_server  # noqa: E402

NAMES = [f"class{i}" for i in range(10)]
READ_TIMEOUT = 2.0


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(buffer, "PNG")
    return buffer.getvalue()


def _get(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", path)
    response = connection.getresponse()
    answer = response.status, dict(response.getheaders()), response.read()
    connection.close()
    return answer


def _post_png(port: int) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("POST", "/v1/predict", body=_png(), headers={"Content-Type": "image/png"})
    status = connection.getresponse().status
    connection.close()
    return status


def _closed_by_server(sock: socket.socket, within: float) -> bool:
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("slow")
    with running_server(folder, "--read-timeout", str(READ_TIMEOUT), "--max-connections", "3", "--max-request-mb",
                        "1", "--max-upload-mb", "1", "--max-inflight-mb", "1", "--graceful-timeout", "1"
                        ) as (process, port):
        yield process, port, folder


def test_past_max_connections_the_answer_is_the_apps_kind_of_503_and_counted(server):
    _, port, _ = server
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]  # open, nothing sent
    try:
        time.sleep(0.2)
        status, headers, body = _get(port, "/healthz")
        assert status == 503 and headers.get("retry-after") == "1"
        assert "--max-connections" in json.loads(body)["detail"]
    finally:
        for sock in idle:
            sock.close()
    time.sleep(0.2)
    assert _get(port, "/healthz")[0] == 200
    metrics = _get(port, "/metrics")[2].decode()
    assert 'resnetkit_connections_closed_total{reason="max_connections"} 1.0' in metrics


def test_connections_that_never_finish_their_headers_are_closed_and_others_get_in(server):
    """Sockets sending half a request line held their connections for good: three held every one (--max-connections
    3). Two here, so that a connection of the test before, still being closed by a busy server, is not a third."""
    _, port, _ = server
    slow = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
    for sock in slow:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # the blank line that ends the headers never comes
    assert all(_closed_by_server(sock, READ_TIMEOUT + 5) for sock in slow)
    assert _get(port, "/healthz")[0] == 200
    for sock in slow:
        sock.close()
    metrics = _get(port, "/metrics")[2].decode()
    assert 'resnetkit_connections_closed_total{reason="read_timeout"} 2.0' in metrics


def test_a_stalled_upload_gets_408_and_gives_back_its_share_of_the_upload_budget(server):
    """A body that stops part-way held its bytes of --max-inflight-mb forever: every other upload got 503."""
    _, port, _ = server
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                 b"Content-Length: 1048576\r\n\r\n" + b"\0" * (1048576 - 20))  # all the budget but 20 bytes
    time.sleep(0.5)
    assert _post_png(port) == 503  # the budget is held while the body may still come
    response = http.client.HTTPResponse(sock)
    response.begin()
    detail = json.loads(response.read())["detail"]
    assert response.status == 408 and "sent nothing for 2 s" in detail and "--read-timeout" in detail
    sock.close()
    assert _post_png(port) == 200


def test_a_client_answered_before_its_body_is_read_still_gets_the_answer(server):
    """A 413 sent as soon as Content-Length was over the limit, to a client (http.client, requests) that sends its
    whole body before it reads: a steady 3 MB over 3 s outlasted --read-timeout 2, and the connection was reset
    under it (a broken pipe instead of the 413)."""
    _, port, _ = server

    def steady():
        for _ in range(30):
            time.sleep(0.1)
            yield b"\0" * 100_000

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("POST", "/v1/predict", body=steady(), headers={"Content-Type": "image/png",
                                                                       "Content-Length": "3000000"})
    response = connection.getresponse()
    assert response.status == 413 and "--max-request-mb" in json.loads(response.read())["detail"]
    connection.close()


def test_sigterm_past_the_graceful_timeout_answers_503_without_a_traceback_and_exits_0(server):
    """The last test of the module: it ends the server."""
    process, port, folder = server
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                 b"Content-Length: 5000\r\n\r\n" + b"\0" * 100)
    time.sleep(0.3)
    process.send_signal(signal.SIGTERM)  # --graceful-timeout 1 ends before --read-timeout 2 would
    response = http.client.HTTPResponse(sock)
    response.begin()
    assert response.status == 503 and response.getheader("retry-after") == "5"
    assert "shutting down" in json.loads(response.read())["detail"]
    sock.close()
    assert process.wait(60) == 0
    log = (folder / "server.log").read_text()
    assert "Traceback" not in log and "Exception in ASGI application" not in log


@pytest.fixture(scope="module")
def predictor(tmp_path_factory) -> Predictor:
    path = tmp_path_factory.mktemp("model") / "resnet20.safetensors"
    save_model(create_model("resnet20"), path, class_names=NAMES)
    return Predictor.from_file(path, device="cpu")


def test_one_requests_images_are_decoded_a_few_at_a_time_so_other_clients_get_their_turn(predictor, monkeypatch):
    """Eight 49-megapixel images in one request, all queued on the two decoding threads at once, made a request of
    one small image sent a second later wait 33 s."""
    from resnetkit.serve import app as app_module

    running, most = 0, 0
    lock = threading.Lock()
    decode = app_module.decode

    def counting(*args):
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        try:
            time.sleep(0.05)
            return decode(*args)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(app_module, "decode", counting)
    with TestClient(create_app(predictor, runtime="torch", preprocess_threads=2)) as client:
        while not client.app.state.resnetkit.ready:
            time.sleep(0.02)
        files = [("files", (f"{i}.png", _png(), "image/png")) for i in range(6)]
        response = client.post("/v1/predict", files=files)
    assert response.status_code == 200 and len(response.json()["predictions"]) == 6
    assert most == 1  # one of the two threads at a time: the other is free for the next request's images


def test_stop_waits_for_a_model_still_loading(predictor):
    """SIGTERM during warm-up: the interpreter exited under the loading thread (inside torch) and aborted."""
    from resnetkit.serve.app import ServerState
    from resnetkit.serve.metrics import Metrics

    release = threading.Event()

    def slow_source() -> Predictor:
        release.wait(10)
        return predictor

    state = ServerState(slow_source, ServeOptions(runtime="torch"), Metrics(), model_file=None, on_load_failed=None)
    state.start()
    stopped = threading.Event()
    stopper = threading.Thread(target=lambda: (state.stop(), stopped.set()))
    stopper.start()
    assert not stopped.wait(0.5)  # still loading: stop waits
    release.set()
    assert stopped.wait(30) and not state.loader.is_alive()


def test_settings_no_client_could_meet_are_refused_at_startup(predictor, monkeypatch):
    with pytest.raises(ValueError, match="starts or ends with whitespace"):
        ServeOptions(api_key="k3y ")
    with pytest.raises(ValueError, match=r"max_pixels=200,000,000 is over the 89,478,485 pixels the decoder accepts"):
        create_app(predictor, max_pixels=200_000_000)
    with pytest.raises(ValueError, match="read_timeout_s=0"):
        ServeOptions(read_timeout_s=0)
    # A program that lowered Pillow's limit still gets a server with the default options, at its limit.
    import PIL.Image

    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 20_000_000)
    assert create_app(predictor).state.resnetkit.options.max_pixels == 20_000_000


@pytest.mark.filterwarnings("ignore")  # the exporter's own deprecation and constant-folding notes
def test_an_onnx_file_of_another_class_count_is_refused_at_warm_up(predictor, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from resnetkit.serve.engine import build_engine

    foreign = create_model("resnet20", num_classes=100).eval()
    torch.onnx.export(foreign, torch.zeros(1, 3, 32, 32), str(tmp_path / "foreign.onnx"), input_names=["input"],
                      output_names=["logits"], dynamic_axes={"input": {0: "n"}, "logits": {0: "n"}}, dynamo=False)
    engine = build_engine(predictor, runtime="onnx", onnx_file=str(tmp_path / "foreign.onnx"), max_batch=4)
    with pytest.raises(ValueError, match=r"output for 1 image\(s\) has shape \(1, 100\), not \(1, 10\)"):
        engine.warm_up(4)


def test_v1_model_reports_the_digest_of_a_catalog_networks_file():
    from resnetkit.files import file_sha256
    from resnetkit.infer import load_predictor
    from resnetkit.models.pretrained import get_weights
    from resnetkit.serve.engine import build_engine

    engine = build_engine(load_predictor("resnet20_cifar10"), runtime="torch", model_file="resnet20_cifar10")
    assert engine.describe()["sha256"] == file_sha256(get_weights("resnet20_cifar10").local_path())
