"""Security and bad input: API keys, limits checked before a body is read, clear 4xx, never a 500.

Every bad request is followed by a good one that must still be answered: the server keeps serving.
"""

from __future__ import annotations

import base64
import builtins
import io
import os
import struct
import tempfile
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from resnetkit import create_model, save_model
from resnetkit.infer import Predictor

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
pytest.importorskip("prometheus_client")
from fastapi.testclient import TestClient  # noqa: E402

from resnetkit.serve import create_app  # noqa: E402
from resnetkit.serve.options import api_key_from_env  # noqa: E402

NAMES = [f"class{i}" for i in range(10)]
KEY = "s3cret-key"


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: one torch thread for these tiny tensors


@pytest.fixture(scope="module")
def predictor(tmp_path_factory) -> Predictor:
    path = tmp_path_factory.mktemp("model") / "resnet20.safetensors"
    save_model(create_model("resnet20"), path, class_names=NAMES)
    return Predictor.from_file(path, device="cpu")


def _ready(app) -> TestClient:
    client = TestClient(app)
    client.__enter__()
    deadline = time.monotonic() + 60
    while not app.state.resnetkit.ready:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    return client


@pytest.fixture(scope="module")
def client(predictor):
    test_client = _ready(create_app(predictor, runtime="torch", top_k=3, max_upload_bytes=50_000, max_files=4,
                                    max_request_bytes=400_000, max_pixels=1_000_000))
    yield test_client
    test_client.__exit__(None, None, None)


@pytest.fixture(scope="module")
def locked(predictor):
    test_client = _ready(create_app(predictor, runtime="torch", api_key=KEY))
    yield test_client
    test_client.__exit__(None, None, None)


def _png(size=(40, 30), seed=0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height: a decompression bomb's calling card, in 57 bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def still_serves(client: TestClient, **headers: str) -> None:
    response = client.post("/v1/predict", files={"files": ("ok.png", _png(), "image/png")}, headers=headers)
    assert response.status_code == 200 and response.json()["predictions"][0]["labels"], response.text


def refused(response, status: int, *fragments: str) -> None:
    assert response.status_code == status, response.text
    assert "Traceback" not in response.text
    for fragment in fragments:
        assert fragment in response.json()["detail"], response.json()["detail"]


# --- authentication -----------------------------------------------------------------------------------------

def test_api_key_is_required_except_on_the_probes(locked):
    refused(locked.post("/v1/predict", files={"files": ("a.png", _png(), "image/png")}), 401, "missing API key")
    response = locked.get("/v1/model", headers={"Authorization": "Bearer wrong"})
    refused(response, 401, "wrong API key")
    assert 'Bearer realm="resnetkit"' in response.headers.get_list("WWW-Authenticate")
    for path in ("/", "/metrics", "/docs", "/openapi.json", "/predict"):
        assert locked.get(path).status_code == 401, path
    assert locked.get("/healthz").status_code == 200 and locked.get("/readyz").status_code == 200
    still_serves(locked, Authorization=f"Bearer {KEY}")
    still_serves(locked, **{"X-API-Key": KEY})


def test_http_basic_with_the_key_as_password_lets_a_browser_in(locked):
    good = base64.b64encode(f"anyone:{KEY}".encode()).decode()
    assert locked.get("/", headers={"Authorization": f"Basic {good}"}).status_code == 200
    bad = base64.b64encode(b"anyone:guess").decode()
    refused(locked.get("/v1/model", headers={"Authorization": f"Basic {bad}"}), 401, "wrong API key")
    refused(locked.get("/v1/model", headers={"Authorization": "Basic %%%"}), 401)
    still_serves(locked, Authorization=f"Basic {good}")


def test_the_key_is_compared_in_constant_time(monkeypatch, locked):
    """Digests of equal length go through hmac.compare_digest, whatever the length of the guess."""
    import hmac

    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: calls.append((len(a), len(b))) or real(a, b))
    for guess in ("x", "s3cret-ke", KEY + "-and-more"):
        assert locked.get("/v1/model", headers={"X-API-Key": guess}).status_code == 401
    locked.get("/v1/model")  # no key at all
    assert calls == [(32, 32)] * 4


def test_api_key_from_the_environment(monkeypatch):
    monkeypatch.setenv("RESNETKIT_API_KEY", "from-env")
    assert api_key_from_env(None) == "from-env" and api_key_from_env("flag") == "flag"
    monkeypatch.setenv("RESNETKIT_API_KEY", "")
    assert api_key_from_env(None) is None


# --- bad uploads ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "data", "message"), [
    ("notes.txt", b"hello", "notes.txt: not an image file"),
    ("empty.jpg", b"", "empty.jpg: empty"),
    ("cut.png", _png(size=(64, 64))[:80], "cut.png: damaged image data"),
    # an icon: PIL would decode its PNG while reading the header (a small file past --max-pixels, held in memory)
    ("icon.ico", struct.pack("<3H4B2H2I", 0, 1, 1, 0, 0, 0, 0, 1, 32, len(_png(size=(64, 64))), 22) +
     _png(size=(64, 64)),
     "icon.ico: not an image file resnetkit reads"),
])
def test_bad_upload_is_400_naming_the_file(client, name, data, message):
    response = client.post("/predict", files={"file": (name, data, "image/png")})
    assert response.status_code == 400
    assert message in response.json()["detail"]
    still_serves(client)


def test_limits_and_missing_upload(client):
    response = client.post("/predict", files={"file": ("big.png", b"\0" * 60_000, "image/png")})
    assert response.status_code == 413 and "big.png: larger than" in response.json()["detail"]
    too_many = [("files", (f"{i}.png", _png(seed=i), "image/png")) for i in range(5)]
    assert client.post("/predict", files=too_many).status_code == 413
    response = client.post("/predict", data={"nothing": "here"})
    assert response.status_code == 422 and "no image uploaded" in response.json()["detail"]
    response = client.post("/predict?top_k=11", files={"file": ("a.png", _png(), "image/png")})
    assert response.status_code == 422  # more than the model's 10 classes
    still_serves(client)


def test_non_image_content_types_are_415(client):
    refused(client.post("/v1/predict", files={"files": ("a.txt", b"hello", "text/plain")}), 415,
            "a.txt: not an image (declared Content-Type text/plain)")
    still_serves(client)
    refused(client.post("/v1/predict", content=b'{"image": 1}', headers={"Content-Type": "application/json"}), 415,
            "Content-Type 'application/json' is not accepted")
    still_serves(client)


def test_too_many_pixels_is_413_before_decoding(client):
    # 1,200 x 1,000 pixels of one colour (a small file) against this server's --max-pixels 1,000,000
    flat = io.BytesIO()
    Image.new("RGB", (1200, 1000), (30, 60, 90)).save(flat, "PNG")
    refused(client.post("/v1/predict", files={"files": ("wide.png", flat.getvalue(), "image/png")}), 413,
            "wide.png: 1200x1000 = 1,200,000 pixels is over the limit of 1,000,000")
    still_serves(client)
    # A 57-byte file claiming 100,000 x 100,000 pixels: refused from its header, nothing allocated.
    refused(client.post("/v1/predict", files={"files": ("bomb.png", _png_header(100_000, 100_000), "image/png")}),
            413, "bomb.png")
    still_serves(client)


def test_wrong_field_and_malformed_bodies(client):
    refused(client.post("/v1/predict", files={"image": ("a.png", _png(), "image/png")}), 422,
            "no image uploaded", "got field(s) 'image'")
    still_serves(client)
    refused(client.post("/v1/predict", files=[("files", ("a.png", _png(), "image/png")),
                                              ("files", ("b.png", _png(), "image/png"))], data={"topk": "3"}),
            422, "unexpected form field(s) 'topk'")
    still_serves(client)
    many = {f"{i:04d}" + "x" * 1000: "v" for i in range(300)}  # 300 long field names: a short message still
    response = client.post("/v1/predict", files={"files": ("a.png", _png(), "image/png")}, data=many)
    refused(response, 422, "unexpected form field(s) '0000xxx", "...', ", "and 295 more")
    assert len(response.content) < 1000
    still_serves(client)
    refused(client.post("/v1/predict", content=b"garbage", headers={"Content-Type": "multipart/form-data"}), 400,
            "without a boundary")
    still_serves(client)
    refused(client.post("/v1/predict", content=b"--xx\r\nnot a header line\r\n\r\n",
                        headers={"Content-Type": "multipart/form-data; boundary=xx"}), 400, "malformed multipart")
    still_serves(client)
    refused(client.post("/v1/predict", content=b"", headers={"Content-Type": "image/png"}), 400, "body: empty (0 bytes)")
    still_serves(client)
    assert client.post("/v1/predict?top_k=abc", files={"files": ("a.png", _png(), "image/png")}).status_code == 422
    still_serves(client)


def test_every_upload_bad_gives_the_first_ones_status_and_all_messages(client):
    files = [("files", ("x.gif", b"GIF89a-broken", "image/gif")), ("files", ("y.txt", b"text", "text/plain"))]
    refused(client.post("/v1/predict", files=files), 400, "x.gif:", "y.txt: not an image")
    still_serves(client)


# --- limits enforced before the body is read -----------------------------------------------------------------

def _asgi_post(client: TestClient, headers: list[tuple[bytes, bytes]], chunks: list[bytes], *,
               hang_up: bool = False, method: str = "POST") -> tuple[int, int]:
    """POST straight into the ASGI app; returns the status and how many body chunks it pulled.

    ``hang_up``: the client disconnects after the last chunk instead of ending the body.
    """
    pulled = 0
    status: list[int] = []

    async def receive() -> dict:
        nonlocal pulled
        if pulled < len(chunks):
            pulled += 1
            return {"type": "http.request", "body": chunks[pulled - 1], "more_body": hang_up or pulled < len(chunks)}
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    scope = {"type": "http", "method": method, "path": "/v1/predict", "raw_path": b"/v1/predict",
             "query_string": b"", "headers": headers, "http_version": "1.1", "scheme": "http",
             "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 1234), "root_path": ""}
    client.portal.call(client.app, scope, receive, send)
    return status[0], pulled


def test_content_length_over_the_limit_is_refused_before_any_body_is_read(client):
    status, pulled = _asgi_post(client, [(b"content-type", b"image/png"), (b"content-length", b"10000000000")],
                                [b"\0" * 65536] * 10)
    assert (status, pulled) == (413, 0)
    still_serves(client)


def test_a_body_without_content_length_is_cut_off_at_the_limit(client):
    boundary = b"b0undary"
    head = (b"--" + boundary + b'\r\nContent-Disposition: form-data; name="files"; filename="huge.png"\r\n'
            b"Content-Type: image/png\r\n\r\n")
    chunks = [head] + [b"\0" * 16384] * 100  # 1.6 MB, sent chunked
    status, pulled = _asgi_post(client, [(b"content-type", b"multipart/form-data; boundary=" + boundary)], chunks)
    assert status == 413 and pulled <= 5  # 50,000 bytes per image: stopped within the fourth chunk
    raw = [b"\0" * 16384] * 100
    status, pulled = _asgi_post(client, [(b"content-type", b"image/png")], raw)
    assert status == 413 and pulled <= 5
    still_serves(client)


def _count(client: TestClient, fragment: str) -> float:
    """The sum of the /metrics samples whose line contains ``fragment``."""
    lines = client.get("/metrics").text.splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if fragment in line and not line.startswith("#"))


def test_a_client_that_hangs_up_mid_body_is_a_client_error_not_a_500(client):
    before = _count(client, 'status="500"')
    status, pulled = _asgi_post(client, [(b"content-type", b"image/png"), (b"content-length", b"100000")],
                                [b"\x89PNG" + b"\0" * 500], hang_up=True)
    assert (status, pulled) == (400, 1)
    head = (b'--bb\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\n'
            b"Content-Type: image/png\r\n\r\n")
    status, _ = _asgi_post(client, [(b"content-type", b"multipart/form-data; boundary=bb")], [head, b"\0" * 100],
                           hang_up=True)
    assert status == 400
    assert _count(client, 'status="500"') == before
    still_serves(client)


def test_an_over_long_multipart_boundary_is_a_400(client):
    boundary = "B" * 257  # python-multipart refuses boundaries over 256 bytes when its parser is built
    body = (f"--{boundary}\r\n" 'Content-Disposition: form-data; name="files"; filename="a.png"\r\n'
            "Content-Type: image/png\r\n\r\n").encode() + _png() + f"\r\n--{boundary}--\r\n".encode()
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    refused(client.post("/v1/predict", content=body, headers=headers), 400, "malformed multipart")
    still_serves(client)


def test_made_up_methods_share_one_metrics_label(client):
    for i in range(5):
        _asgi_post(client, [], [b""], method=f"M{i:08d}")
    assert _count(client, 'method="other"') >= 5
    assert "M00000001" not in client.get("/metrics").text
    still_serves(client)


def test_uploads_held_at_once_are_budgeted_across_requests(predictor):
    app = create_app(predictor, runtime="torch", max_request_bytes=100_000, max_inflight_bytes=100_000)
    test_client = _ready(app)
    try:
        budget = app.state.resnetkit.body_budget
        with budget.hold() as other_request:  # another request in flight holds most of the budget
            other_request.take(99_000)  # leaves 1,000 bytes: less than the PNG below
            response = test_client.post("/v1/predict", files={"files": ("ok.png", _png(), "image/png")})
            refused(response, 503, "--max-inflight-mb")
            assert response.headers["Retry-After"] == "1"
        assert budget.held == 0  # the refused request gave back what it took
        still_serves(test_client)
        assert budget.held == 0  # and so did the answered one
    finally:
        test_client.__exit__(None, None, None)


def test_get_routes_answer_head(client):
    for path in ("/", "/healthz", "/readyz", "/metrics", "/v1/model"):
        response = client.head(path)
        assert response.status_code == 200 and response.content == b"", path


# --- nothing from a request reaches the filesystem -----------------------------------------------------------

def test_nothing_from_a_request_reaches_the_filesystem(predictor, monkeypatch, tmp_path):
    """A 2 MB upload (Starlette would spool it to a temporary file) with a hostile file name."""
    client = _ready(create_app(predictor, runtime="torch"))
    try:
        still_serves(client)  # every lazy import done (Grad-CAM's too: matplotlib reads its rc file once)
        assert client.post("/v1/cam", files={"files": ("warm.png", _png(), "image/png")}).status_code == 200
        opened: list[str] = []
        real_open, real_os_open = builtins.open, os.open

        def spy_open(file, *args, **kwargs):
            opened.append(str(file))
            return real_open(file, *args, **kwargs)

        def spy_os_open(path, *args, **kwargs):
            opened.append(str(path))
            return real_os_open(path, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", spy_open)
        monkeypatch.setattr(os, "open", spy_os_open)
        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # anything spooled would land here
        big = _png(size=(900, 800), seed=1)
        assert len(big) > 2_000_000
        name = "../../../tmp/evil.png"
        response = client.post("/v1/predict", files={"files": (name, big, "image/png")})
        assert response.status_code == 200 and response.json()["predictions"][0]["source"] == name
        response = client.post("/v1/cam", files={"files": (name, _png(), "image/png")})
        assert response.status_code == 200
        monkeypatch.undo()
        assert opened == [] and list(tmp_path.iterdir()) == []
    finally:
        client.__exit__(None, None, None)


def test_a_model_whose_output_overflows_is_a_500_that_says_why_not_nan_percent(tmp_path):
    import torch

    model = create_model("resnet20")
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.fill_(1e30)  # finite in the file, infinite after a few layers: as `predict` refuses it
    path = save_model(model, tmp_path / "overflow.safetensors", class_names=NAMES)
    client = _ready(create_app(Predictor.from_file(path, device="cpu"), runtime="torch"))
    try:
        response = client.post("/v1/predict", files={"file": ("a.png", _png(), "image/png")})
        assert response.status_code == 500
        assert "a.png: the model's output is NaN or infinite" in response.json()["detail"]
        assert client.get("/healthz").status_code == 200  # the server itself goes on
    finally:
        client.__exit__(None, None, None)
