"""The server's runtimes: ONNX Runtime and OpenVINO INT8 answer as PyTorch does, a damaged ONNX file is named before
the server starts, flip TTA is served under each runtime."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from resnetkit import create_model, save_model
from resnetkit.infer import Predictor
from resnetkit.infer.images import load_pixels

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
pytest.importorskip("prometheus_client")
from fastapi.testclient import TestClient  # noqa: E402

from resnetkit.serve import ServeOptions, create_app  # noqa: E402
from resnetkit.serve.engine import choose_runtime  # noqa: E402

from test_serve import _png, model_file, predictor, wait_ready  # noqa: E402,F401 (fixtures)

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: one torch thread for these tiny tensors


def test_onnx_runtime_matches_torch(predictor, model_file):
    pytest.importorskip("onnxruntime")
    app = create_app(predictor, runtime="auto", model_file=str(model_file))  # no INT8 file beside: onnx
    data = _png(seed=3)
    with TestClient(app) as client:
        wait_ready(client)
        body = client.post("/v1/predict", files={"files": ("a.png", data, "image/png")}).json()
    assert body["runtime"] == "onnx"
    [expected] = predictor.predict(data, top_k=5)
    assert body["predictions"][0]["indices"] == expected.indices
    assert np.allclose(body["predictions"][0]["probabilities"], expected.probabilities, atol=1e-4)


def test_openvino_int8_runtime_is_chosen_when_the_int8_file_is_beside_the_model(predictor, model_file):
    pytest.importorskip("openvino")
    pytest.importorskip("onnxruntime")
    from resnetkit.export import export_int8

    int8 = model_file.with_name("resnet20.int8.onnx")  # where `resnetkit export --int8` writes it
    export_int8(model_file, torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(0)), output=int8,
                min_top1_agreement=0.0)
    try:
        assert choose_runtime("auto", device=torch.device("cpu"), model_file=str(model_file), onnx_file=None) == (
            "openvino-int8", str(int8))
        with TestClient(create_app(predictor, model_file=str(model_file), max_batch=6)) as client:
            wait_ready(client)
            engine = client.app.state.resnetkit.engine
            assert engine.padded_sizes == (1, 2, 4, 6)  # shapes compiled during warm-up
            files = [("files", (f"{i}.png", _png(seed=i), "image/png")) for i in range(3)]
            body = client.post("/v1/predict?top_k=10", files=files).json()
        assert body["runtime"] == "openvino-int8"
        for result in body["predictions"]:
            assert sorted(result["indices"]) == list(range(10)) and abs(sum(result["probabilities"]) - 1) < 1e-3
        # The same INT8 file run by onnxruntime on the same preprocessed images gives about the same probabilities
        # (the two runtimes' INT8 kernels differ by CPU: the bound is a quarter of the probabilities' spread).
        import onnxruntime as ort

        session = ort.InferenceSession(str(int8), providers=["CPUExecutionProvider"])
        batch = torch.stack([predictor.transform(load_pixels(_png(seed=i))) for i in range(3)]).numpy()
        reference = torch.softmax(torch.from_numpy(session.run(None, {session.get_inputs()[0].name: batch})[0]), 1)
        for result, probs in zip(body["predictions"], reference):
            served = torch.zeros(10)
            served[result["indices"]] = torch.tensor(result["probabilities"])
            spread = float(probs.max() - probs.min())  # ~0.19 here, where the two differed by <= 0.005
            assert torch.allclose(served, probs, atol=0.25 * spread)
    finally:
        int8.unlink(missing_ok=True)
        int8.with_name(int8.name + ".json").unlink(missing_ok=True)


def test_openvino_int8_without_its_file_says_how_to_make_it(model_file):
    with pytest.raises(ValueError, match=r"resnetkit export MODEL --int8 --images"):
        choose_runtime("openvino-int8", device=torch.device("cpu"), model_file=str(model_file), onnx_file=None)


def test_a_damaged_onnx_file_is_named_before_the_server_starts(model_file, tmp_path):
    pytest.importorskip("onnx")
    damaged = tmp_path / "model.onnx"
    damaged.write_bytes(b"\x08\x07garbage that is not a protobuf model" * 3)
    for runtime in ("auto", "onnx"):
        with pytest.raises(ValueError, match=r"model.onnx: not a readable ONNX file .*resnetkit export MODEL"):
            choose_runtime(runtime, device=torch.device("cpu"), model_file=str(model_file), onnx_file=str(damaged))
    beside = tmp_path / "m.safetensors"
    beside.write_bytes(model_file.read_bytes())
    (tmp_path / "m.int8.onnx").write_bytes(b"\x08\x07not onnx")
    if importlib.util.find_spec("openvino") and importlib.util.find_spec("onnxruntime"):
        with pytest.raises(ValueError, match=r"m.int8.onnx: not a readable ONNX file"):
            choose_runtime("auto", device=torch.device("cpu"), model_file=str(beside), onnx_file=None)


@pytest.mark.parametrize("runtime", ["torch", "onnx"])
def test_flip_tta_serves_what_predict_tta_flip_answers(tmp_path, runtime):
    if runtime == "onnx" and importlib.util.find_spec("onnxruntime") is None:
        pytest.skip("onnxruntime is not installed")
    path = tmp_path / "r20.safetensors"
    torch.manual_seed(0)
    save_model(create_model("resnet20"), path, class_names=[f"c{i}" for i in range(10)])
    data = _png(size=(32, 32), seed=3)
    expected = Predictor.from_file(path, device="cpu", tta="flip").predict(data, top_k=3)[0]
    plain = Predictor.from_file(path, device="cpu").predict(data, top_k=3)[0]
    assert expected.probabilities != pytest.approx(plain.probabilities, abs=1e-4)  # the mirror counts here
    app = create_app(Predictor.from_file(path, device="cpu"), runtime=runtime, model_file=str(path), tta="flip")
    with TestClient(app) as client:
        wait_ready(client)
        assert client.get("/v1/model").json()["tta"] == "flip"
        [result] = client.post("/v1/predict?top_k=3", files={"files": ("x.png", data, "image/png")}).json()[
            "predictions"]
    assert result["indices"] == expected.indices
    assert result["probabilities"] == pytest.approx(expected.probabilities, abs=1e-4)
    with pytest.raises(ValueError, match="tta 'mirror' is not one of none, flip"):
        ServeOptions(tta="mirror")
