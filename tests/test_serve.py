"""The HTTP app: uploads in, labelled top-k out, batched; readiness, metrics, Grad-CAM, the page, the confidence
threshold (runtimes: test_serve_runtimes.py; the command and its options: test_serve_cli.py)."""

from __future__ import annotations

import io
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

from resnetkit import create_model, save_model
from resnetkit.infer import Predictor

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
pytest.importorskip("prometheus_client")
from fastapi.testclient import TestClient  # noqa: E402

from resnetkit.serve import ServeOptions, create_app  # noqa: E402

NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: one torch thread for these tiny tensors


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "resnet20.safetensors"
    torch.manual_seed(0)
    save_model(create_model("resnet20"), path, class_names=NAMES)
    return path


@pytest.fixture(scope="module")
def predictor(model_file) -> Predictor:
    return Predictor.from_file(model_file, device="cpu")


def wait_ready(client: TestClient, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, client.get("/readyz").json()
        time.sleep(0.02)


@pytest.fixture(scope="module")
def client(predictor, model_file):
    app = create_app(predictor, runtime="torch", model_file=str(model_file), top_k=3, max_upload_bytes=50_000,
                     max_files=4)
    with TestClient(app) as test_client:
        wait_ready(test_client)
        yield test_client


def _png(size=(40, 30), seed=0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def test_health_and_model_info(client, model_file):
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json()["status"] == "ready"
    info = client.get("/model").json()
    assert info["arch"] == "resnet20" and info["class_names"] == NAMES and info["num_classes"] == 10
    assert info["preprocess"]["input_size"] == 32 and info["config"]["shortcut"] == "A"
    v1 = client.get("/v1/model").json()
    import hashlib

    assert v1["sha256"] == hashlib.sha256(model_file.read_bytes()).hexdigest()
    assert v1["parameters"] == 269_722 and v1["runtime"] == "torch"  # the paper's 0.27M for ResNet-20


def test_predict_one_upload_matches_the_predictor(client, predictor):
    data = _png()
    for path in ("/v1/predict", "/predict"):  # the first version's route still answers
        response = client.post(path, files={"file": ("cat.png", data, "image/png")})
        assert response.status_code == 200
        body = response.json()
        [result] = body["predictions"]
        [expected] = predictor.predict(data, top_k=3)
        assert body["model"] == "resnet20" and result["source"] == "cat.png" and body["server_ms"] > 0
        assert result["indices"] == expected.indices and len(result["labels"]) == 3  # the app's default top-k
        assert np.allclose(result["probabilities"], expected.probabilities, atol=1e-6)


def test_raw_image_body(client, predictor):
    data = _png(seed=4)
    response = client.post("/v1/predict?top_k=2", content=data, headers={"Content-Type": "image/png"})
    assert response.status_code == 200
    [result] = response.json()["predictions"]
    assert result["indices"] == predictor.predict(data, top_k=2)[0].indices and result["source"] == "body"


def test_default_top_k_is_capped_by_the_number_of_classes(tmp_path):
    path = tmp_path / "three.safetensors"
    save_model(create_model("resnet20", num_classes=3), path, class_names=["a", "b", "c"])
    with TestClient(create_app(Predictor.from_file(path, device="cpu"), runtime="torch")) as client:  # top_k 5
        wait_ready(client)
        response = client.post("/v1/predict", files={"files": ("x.png", _png(), "image/png")})
        assert response.status_code == 200 and sorted(response.json()["predictions"][0]["labels"]) == ["a", "b", "c"]
        response = client.post("/v1/predict?top_k=4", files={"files": ("x.png", _png(), "image/png")})
        assert response.status_code == 422 and "more than the model's 3 classes" in response.json()["detail"]


def test_predict_several_uploads_with_one_bad_answers_the_rest(client):
    files = [("files", ("a.png", _png(seed=1), "image/png")), ("files", ("notes.txt", b"hello", "text/plain")),
             ("files", ("b.png", _png(seed=2), "image/png"))]
    response = client.post("/v1/predict?top_k=5", files=files)
    assert response.status_code == 200
    results = response.json()["predictions"]
    assert [r["source"] for r in results] == ["a.png", "notes.txt", "b.png"]
    assert results[1]["error"].startswith("notes.txt: not an image") and not results[1]["labels"]
    assert len(results[0]["labels"]) == 5 and results[2]["error"] is None


def test_concurrent_requests_share_a_batch_and_each_gets_its_own_answer(predictor):
    """Eight requests arrive while the model is busy: the seven queued ones run as one batch of 7."""
    app = create_app(predictor, runtime="torch", max_wait_ms=0)
    images = [_png(seed=10 + i) for i in range(8)]
    with TestClient(app) as client:
        wait_ready(client)
        batcher = app.state.resnetkit.batcher
        release, sizes, forward = threading.Event(), [], batcher.forward

        def held_forward(batch):
            sizes.append(len(batch))
            release.wait(30)
            return forward(batch)

        batcher.forward = held_forward
        responses: dict[int, object] = {}

        def send(i: int) -> None:
            responses[i] = client.post("/v1/predict", files={"files": (f"{i}.png", images[i], "image/png")})

        first = threading.Thread(target=send, args=(0,))
        first.start()
        while not sizes:  # the worker holds the first image
            time.sleep(0.005)
        others = [threading.Thread(target=send, args=(i,)) for i in range(1, 8)]
        for thread in others:
            thread.start()
        deadline = time.monotonic() + 30
        while batcher.depth < 7:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        release.set()
        for thread in [first, *others]:
            thread.join(30)
        assert sizes == [1, 7]
        for i, image in enumerate(images):
            [result] = responses[i].json()["predictions"]
            [expected] = predictor.predict(image, top_k=5)
            assert result["source"] == f"{i}.png" and result["indices"] == expected.indices
            assert np.allclose(result["probabilities"], expected.probabilities, atol=1e-5)
        metrics = client.get("/metrics").text
        assert "resnetkit_batch_size_bucket{le=\"8.0\"} 2.0" in metrics  # batches of 1 and 7 (and none larger)


def test_full_queue_answers_503_with_retry_after(predictor):
    app = create_app(predictor, runtime="torch", max_wait_ms=0, max_queue=1, max_files=1)
    with TestClient(app) as client:
        wait_ready(client)
        batcher = app.state.resnetkit.batcher
        release, started, forward = threading.Event(), threading.Event(), batcher.forward

        def held_forward(batch):
            started.set()
            release.wait(30)
            return forward(batch)

        batcher.forward = held_forward
        codes: list[int] = []
        send = lambda: codes.append(client.post("/v1/predict", files={"files": ("a.png", _png(), "image/png")}).status_code)  # noqa: E731
        running = threading.Thread(target=send)
        running.start()
        assert started.wait(30)
        queued = threading.Thread(target=send)
        queued.start()
        while batcher.depth < 1:
            time.sleep(0.005)
        refused = client.post("/v1/predict", files={"files": ("b.png", _png(), "image/png")})
        assert refused.status_code == 503 and int(refused.headers["Retry-After"]) >= 1
        assert "queue is full" in refused.json()["detail"]
        release.set()
        running.join(30)
        queued.join(30)
        assert codes == [200, 200]
        assert client.post("/v1/predict", files={"files": ("c.png", _png(), "image/png")}).status_code == 200


def test_readyz_is_503_until_the_model_is_loaded(predictor):
    loaded = threading.Event()

    def slow_loader() -> Predictor:
        loaded.wait(30)
        return predictor

    with TestClient(create_app(slow_loader, runtime="torch")) as client:
        assert client.get("/healthz").status_code == 200  # alive while loading
        response = client.get("/readyz")
        assert response.status_code == 503 and response.json()["status"] == "loading"
        response = client.post("/v1/predict", files={"files": ("a.png", _png(), "image/png")})
        assert response.status_code == 503 and response.headers["Retry-After"] == "1"
        loaded.set()
        wait_ready(client)
        assert client.post("/v1/predict", files={"files": ("a.png", _png(), "image/png")}).status_code == 200


def test_a_model_that_fails_to_load_is_reported(predictor):
    failures: list[str] = []

    def broken() -> Predictor:
        raise FileNotFoundError("model.safetensors: gone")

    with TestClient(create_app(broken, on_load_failed=failures.append)) as client:
        deadline = time.monotonic() + 30
        while not failures:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        response = client.get("/readyz")
        assert response.status_code == 503 and response.json()["status"] == "failed"
        assert "model.safetensors: gone" in response.json()["detail"]
        assert "could not be loaded" in client.get("/v1/model").json()["detail"]


def test_metrics(client):
    client.post("/v1/predict", files={"files": ("a.png", _png(), "image/png")})
    client.post("/v1/predict", files={"files": ("a.txt", b"x", "text/plain")})
    client.get("/no/such/page")
    text = client.get("/metrics").text
    assert 'resnetkit_http_requests_total{method="POST",route="/v1/predict",status="200"}' in text
    assert 'resnetkit_http_requests_total{method="POST",route="/v1/predict",status="415"}' in text
    assert 'route="unmatched",status="404"' in text  # raw paths never become labels
    assert 'resnetkit_http_request_duration_seconds_bucket{le="0.001",route="/v1/predict"}' in text
    for name in ("resnetkit_batch_size_count", "resnetkit_queue_depth 0.0", "resnetkit_images_predicted_total",
                 "resnetkit_ready 1.0", 'resnetkit_image_errors_total{status="415"}'):
        assert name in text
    # What the model answered, for drift: each answer's top-1 confidence and a count for its class.
    def counts(text: str, index: int, label: str) -> tuple[float, float, float]:
        values = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                  if line.startswith("resnetkit_pred")}
        return (values["resnetkit_prediction_confidence_count"],
                values['resnetkit_prediction_confidence_bucket{le="0.5"}'],
                values[f'resnetkit_predicted_class_total{{index="{index}",label="{label}"}}'])

    # Every class of the model is a series from the start, predicted or not.
    assert all(f'resnetkit_predicted_class_total{{index="{i}",label="{name}"}}' in text for i, name in enumerate(NAMES))
    answer = client.post("/v1/predict", files={"files": ("b.png", _png(), "image/png")}).json()["predictions"][0]
    before = counts(text, answer["indices"][0], answer["labels"][0])
    after = counts(client.get("/metrics").text, answer["indices"][0], answer["labels"][0])
    low = answer["probabilities"][0] <= 0.5
    assert [b - a for a, b in zip(before, after)] == [1.0, 1.0 if low else 0.0, 1.0]


def test_openapi_describes_the_v1_api(client):
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/v1/predict"]["post"]["requestBody"]["content"]
    assert body["multipart/form-data"]["schema"]["properties"]["files"]["type"] == "array" and "image/*" in body
    assert {"/v1/model", "/v1/cam", "/healthz", "/readyz"} <= set(spec["paths"])
    assert "/predict" not in spec["paths"]  # kept working, not advertised
    assert client.get("/docs").status_code == 200


def test_grad_cam_endpoint_returns_an_overlay_png(client, predictor):
    data = _png(size=(40, 30))
    response = client.post("/v1/cam?target=cat", files={"files": ("a.png", data, "image/png")})
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    [expected] = predictor.predict(data, top_k=10)  # the probability the model gives "cat" for this image
    cat = expected.probabilities[expected.indices.index(NAMES.index("cat"))]
    assert response.headers["X-Class"] == "cat"
    assert float(response.headers["X-Probability"]) == pytest.approx(cat, abs=1e-4)
    assert Image.open(io.BytesIO(response.content)).size == (40, 30)  # the image's own size
    assert client.post("/v1/cam?target=unicorn", files={"files": ("a.png", _png(), "image/png")}).status_code == 422
    response = client.post("/v1/cam", files={"files": ("bad.png", b"not an image", "image/png")})
    assert response.status_code == 400 and "bad.png" in response.json()["detail"]


def test_index_page_posts_to_v1_predict(client):
    response = client.get("/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    # Was 'fetch("predict"': the page now calls the versioned API.
    assert 'fetch("v1/predict' in response.text and 'type="file"' in response.text
    assert "image-rendering: pixelated" in response.text and 'fetch("v1/cam"' in response.text


@pytest.mark.parametrize("above", [True, False])
def test_the_server_marks_answers_below_min_confidence_as_predict_does(model_file, above):
    """Just above the answer's top-1 probability the threshold marks it uncertain, just below it does not; a
    predictor's own threshold is the server's when the server sets none; Grad-CAM of the predicted class says it
    too (X-Uncertain); an unreadable upload is never marked."""
    data = _png(size=(32, 32), seed=3)
    top = Predictor.from_file(model_file, device="cpu").predict(data, top_k=1)[0].probability
    threshold = top + 1e-4 if above else top - 1e-4
    app = create_app(Predictor.from_file(model_file, device="cpu", min_confidence=threshold), runtime="torch",
                     model_file=str(model_file))
    with TestClient(app) as client:
        wait_ready(client)
        assert client.get("/v1/model").json()["min_confidence"] == pytest.approx(threshold)
        result, unreadable = client.post("/v1/predict", files=[("files", ("x.png", data, "image/png")),
                                                               ("files", ("y.png", b"not a png", "image/png"))]
                                         ).json()["predictions"]
        cam = client.post("/v1/cam", files={"files": ("x.png", data, "image/png")})
    assert result["uncertain"] is above and result["probabilities"][0] == pytest.approx(top, abs=1e-4)
    assert unreadable["uncertain"] is False and unreadable["error"]
    assert cam.headers["X-Uncertain"] == str(above).lower()
    with pytest.raises(ValueError, match="min_confidence"):
        ServeOptions(min_confidence=-0.1)


def test_a_class_name_outside_ascii_reaches_the_cam_header_percent_encoded(tmp_path):
    """HTTP header values are ASCII: `X-Class` carries other names as encodeURIComponent writes them (the page
    decodes them); a name with a control character is refused when the model file loads."""
    from urllib.parse import unquote

    names = ["café", "猫", "50%", *NAMES[3:]]
    path = tmp_path / "unicode.safetensors"
    torch.manual_seed(0)
    save_model(create_model("resnet20"), path, class_names=names)
    app = create_app(Predictor.from_file(path, device="cpu"), runtime="torch", model_file=str(path))
    with TestClient(app) as unicode_client:
        wait_ready(unicode_client)
        for target, name in enumerate(names[:3]):
            response = unicode_client.post(f"/v1/cam?target={target}", files={"files": ("a.png", _png(), "image/png")})
            assert response.status_code == 200 and unquote(response.headers["X-Class"]) == name
            assert response.headers["X-Class"].isascii()
    save_model(create_model("resnet20"), tmp_path / "crlf.safetensors", class_names=["air\r\nX-Injected: 1", *names[1:]])
    with pytest.raises(ValueError, match=r"class 0 'air\\r\\nX-Injected: 1' holds a control character"):
        Predictor.from_file(tmp_path / "crlf.safetensors", device="cpu")
