"""The HTTP app: uploads in, labelled top-k out; bad uploads get 4xx naming the file."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from resnetkit import create_model, save_model
from resnetkit.infer import Predictor

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from resnetkit.serve import MissingDependencyError, create_app  # noqa: E402

NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny tensors gain nothing from threads, and on a busy shared CPU two threads run many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def predictor(tmp_path_factory) -> Predictor:
    path = tmp_path_factory.mktemp("model") / "resnet20.safetensors"
    torch.manual_seed(0)
    save_model(create_model("resnet20"), path, class_names=NAMES)
    return Predictor.from_file(path, device="cpu")


@pytest.fixture(scope="module")
def client(predictor) -> TestClient:
    return TestClient(create_app(predictor, top_k=3, max_upload_bytes=50_000, max_files=4))


def _png(size=(40, 30), seed=0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def test_health_and_model_info(client):
    assert client.get("/health").json() == {"status": "ok"}
    info = client.get("/model").json()
    assert info["arch"] == "resnet20" and info["class_names"] == NAMES and info["num_classes"] == 10
    assert info["preprocess"]["input_size"] == 32 and info["config"]["shortcut"] == "A"


def test_predict_one_upload_matches_the_predictor(client, predictor):
    data = _png()
    response = client.post("/predict", files={"file": ("cat.png", data, "image/png")})
    assert response.status_code == 200
    body = response.json()
    [result] = body["predictions"]
    [expected] = predictor.predict(data, top_k=3)
    assert body["model"] == "resnet20" and result["source"] == "cat.png"
    assert result["indices"] == expected.indices and len(result["labels"]) == 3  # the app's default top-k
    assert np.allclose(result["probabilities"], expected.probabilities, atol=1e-6)


def test_predict_several_uploads_with_one_bad_answers_the_rest(client):
    files = [("files", ("a.png", _png(seed=1), "image/png")), ("files", ("notes.txt", b"hello", "text/plain")),
             ("files", ("b.png", _png(seed=2), "image/png"))]
    response = client.post("/predict?top_k=5", files=files)
    assert response.status_code == 200
    results = response.json()["predictions"]
    assert [r["source"] for r in results] == ["a.png", "notes.txt", "b.png"]
    assert results[1]["error"].startswith("notes.txt: not an image") and not results[1]["labels"]
    assert len(results[0]["labels"]) == 5 and results[2]["error"] is None


@pytest.mark.parametrize(("name", "data", "message"), [
    ("notes.txt", b"hello", "notes.txt: not an image file"),
    ("empty.jpg", b"", "empty.jpg: empty"),
    ("cut.png", _png(size=(64, 64))[:80], "cut.png: damaged image data"),
])
def test_bad_upload_is_400_naming_the_file(client, name, data, message):
    response = client.post("/predict", files={"file": (name, data, "image/png")})
    assert response.status_code == 400
    assert message in response.json()["detail"]


def test_limits_and_missing_upload(client):
    response = client.post("/predict", files={"file": ("big.png", b"\0" * 60_000, "image/png")})
    assert response.status_code == 413 and "big.png: larger than" in response.json()["detail"]
    too_many = [("files", (f"{i}.png", _png(seed=i), "image/png")) for i in range(5)]
    assert client.post("/predict", files=too_many).status_code == 413
    response = client.post("/predict", data={"nothing": "here"})
    assert response.status_code == 422 and "no image uploaded" in response.json()["detail"]
    response = client.post("/predict?top_k=11", files={"file": ("a.png", _png(), "image/png")})
    assert response.status_code == 422  # more than the model's 10 classes


def test_index_page_posts_to_predict(client):
    response = client.get("/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert 'fetch("predict"' in response.text and 'type="file"' in response.text


def test_missing_fastapi_gives_a_clear_error(predictor, monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "fastapi" else real_find_spec(name, *a))
    with pytest.raises(MissingDependencyError, match=r"needs fastapi: pip install 'resnetkit\[serve\]'"):
        create_app(predictor)


def test_serve_command_reports_missing_dependency(monkeypatch, capsys, tmp_path):
    import importlib.util

    from resnetkit.cli import main

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "uvicorn" else real_find_spec(name, *a))
    assert main(["serve", str(tmp_path / "model.safetensors")]) == 2
    assert "needs uvicorn" in capsys.readouterr().err
