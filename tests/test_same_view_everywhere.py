"""Black-box: for a folder of awkward image files, the tensor the model sees is the same, bit for bit, in
training's evaluation path, ``resnetkit eval``, ``resnetkit predict``, the files uploaded to ``serve``'s app
and export's calibration reader, and ``eval`` and ``predict`` pick the same top-1 class for every file."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from awkward_images import write_awkward_images

from resnetkit import create_model, save_model
from resnetkit.cli import main
from resnetkit.config import ModelInfo, TrainConfig
from resnetkit.data import ImageFileDataset
from resnetkit.train.data import build_train_data
from resnetkit.train.distributed import DistInfo

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")]
pytest.importorskip("fastapi")  # the [test] extra installs it; serve's path is one of the four
pytest.importorskip("httpx")


class Recorder:
    """A forward pre-hook keeping every batch the model is given, and a hook keeping its top-1 answers."""

    def __init__(self) -> None:
        self.inputs: list[torch.Tensor] = []
        self.top1: list[torch.Tensor] = []

    def attach(self, model: torch.nn.Module) -> torch.nn.Module:
        model.register_forward_pre_hook(lambda _, args: self.inputs.append(args[0].detach().clone()))
        model.register_forward_hook(lambda _, __, out: self.top1.append(out.argmax(1)))
        return model

    def seen(self) -> torch.Tensor:
        return torch.cat(self.inputs).contiguous()


def _recording(monkeypatch, module: str, recorder: Recorder) -> None:
    """Make ``module``'s ``load_model`` hand out a model whose inputs ``recorder`` keeps."""
    from resnetkit.models import load_model

    def recording_load_model(*args, **kwargs):
        model, info = load_model(*args, **kwargs)
        return recorder.attach(model), info

    monkeypatch.setattr(f"{module}.load_model", recording_load_model)


@pytest.mark.parametrize("augment", ["pad-crop-flip", "rrc"], ids=["in-memory", "file-by-file"])
def test_the_model_sees_one_tensor_per_file_in_train_eval_predict_and_serve(tmp_path, monkeypatch, augment):
    data = tmp_path / "data"
    for split in ("train", "test"):
        files = write_awkward_images(data / split)
    monkeypatch.setenv("RESNETKIT_CACHE", str(tmp_path / "cache"))

    # Training's evaluation path: the validation loader of the very data training builds (the test split here).
    config = TrainConfig.from_flat(dict(data=str(data), augment=augment, image_size=32, workers=0))
    train_data = build_train_data(config, dist=DistInfo(), device=torch.device("cpu"))
    in_training = torch.cat([images for images, _ in train_data.val]).contiguous()
    labels = torch.cat([labels for _, labels in train_data.val]).tolist()

    # The model file training would write: its class names and preprocessing.
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=2).eval()
    model_file = tmp_path / "model.safetensors"
    save_model(model, model_file, info=ModelInfo(model=model.config, class_names=train_data.class_names,
                                                 preprocess=train_data.preprocess))
    order = [Path(p).relative_to(data / "test").as_posix() for p in ImageFileDataset(data, split="test").tree.paths]
    assert order == [f.relative_to(data / "test").as_posix() for f in files]  # one order for all below

    evaluated, predicted, served = Recorder(), Recorder(), Recorder()
    _recording(monkeypatch, "resnetkit.evaluate.run", evaluated)
    assert main(["eval", str(model_file), str(data), "--device", "cpu", "--workers", "0",
                 "--out-dir", str(tmp_path / "eval")]) == 0
    _recording(monkeypatch, "resnetkit.infer.predictor", predicted)
    assert main(["predict", str(model_file), *map(str, files), "--device", "cpu", "--format", "json",
                 "--top-k", "1"]) == 0

    # serve: the files uploaded to the real app, through its decoding threads, batcher and runner.
    from fastapi.testclient import TestClient

    from resnetkit.infer import Predictor
    from resnetkit.serve import create_app

    _recording(monkeypatch, "resnetkit.infer.predictor", served)
    app = create_app(Predictor.from_file(model_file, device="cpu"), runtime="torch", max_wait_ms=0,
                     max_files=len(files))
    with TestClient(app) as client:
        deadline = time.monotonic() + 60
        while client.get("/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.02)
        served.inputs.clear()  # warm-up batches of zeros
        response = client.post("/v1/predict?top_k=1", files=[("files", (f.name, f.read_bytes())) for f in files])
    assert response.status_code == 200, response.text
    served_top1 = [p["indices"][0] for p in response.json()["predictions"]]

    assert in_training.shape == (len(files), 3, 32, 32)
    assert torch.equal(evaluated.seen(), in_training)
    assert torch.equal(predicted.seen(), in_training)
    assert torch.equal(served.seen(), in_training)
    # Export calibration and accuracy reports read the folder class by class in turn (round-robin).
    from resnetkit.export.data import load_image_folder

    per_class = [[i for i, label in enumerate(labels) if label == k] for k in range(2)]
    round_robin = [files[i] for i in range(max(map(len, per_class))) for files in per_class if i < len(files)]
    exported = load_image_folder(data, train_data.preprocess, class_names=train_data.class_names)
    assert torch.equal(exported.images, in_training[round_robin])
    eval_top1 = torch.cat(evaluated.top1).tolist()
    assert eval_top1 == torch.cat(predicted.top1).tolist() == served_top1

