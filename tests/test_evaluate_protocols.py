"""Evaluation protocols: the views each one takes, and that the accuracy averages the softmax over them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from resnetkit.config import Preprocess
from resnetkit.data import eval_transform, eval_views, to_model_input
from resnetkit.data.preprocess import default_scales
from resnetkit.evaluate.protocols import evaluate_samples

PRE = Preprocess(input_size=32, resize_size=36, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


class LeftRight(nn.Module):
    """Two classes: 'the left half is brighter' (0) or 'the right half is' (1); mirror-sensitive on purpose."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        left, right = x[..., :half].mean((1, 2, 3)), x[..., half:].mean((1, 2, 3))
        return torch.stack([left - right, right - left], dim=1) * 10


def _image(left: int, right: int, size: int = 40) -> torch.Tensor:
    image = torch.full((3, size, size), left, dtype=torch.uint8)
    image[..., size // 2:] = right
    return image


def test_views_of_each_protocol():
    image = torch.randint(0, 256, (3, 48, 60), dtype=torch.uint8)
    center, mirror = eval_views(image, PRE, protocol="flip")
    assert center.shape == mirror.shape == (3, 32, 32)
    assert torch.equal(mirror, center.flip(-1))
    crops = eval_views(image, PRE, protocol="10crop")
    assert len(crops) == 10 and all(c.shape == (3, 32, 32) for c in crops)
    assert torch.equal(crops[5], crops[1].flip(-1))  # the mirror's top-left corner is the top-right one, mirrored
    # Where the crops come from, computed with PIL: the shorter side to resize_size (48x60 -> 36x45), then
    # the corners (top-left, top-right, bottom-left, bottom-right) and the centre of 32x32.
    pil = Image.fromarray(image.permute(1, 2, 0).numpy()).resize((45, 36), Image.Resampling.BILINEAR)
    resized = torch.from_numpy(np.array(pil)).permute(2, 0, 1)
    corners = [resized[:, :32, :32], resized[:, :32, -32:], resized[:, -32:, :32], resized[:, -32:, -32:],
               resized[:, 2:34, 6:38]]
    for crop, expected in zip(crops[:5], corners):
        assert torch.equal(crop, expected)
    views = eval_views(image, PRE, protocol="multiscale", scales=(32, 64))
    assert [min(v.shape[-2:]) for v in views] == [32, 32, 64, 64]


def test_center_protocol_is_the_evaluation_transform():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    images = [torch.randint(0, 256, (3, 40, 50), dtype=torch.uint8) for _ in range(3)]
    metrics = evaluate_samples(model, [(im, 0) for im in images], preprocess=PRE, num_classes=4, protocol="center")
    with torch.no_grad():
        expected = model(torch.stack([eval_transform(PRE)(im) for im in images])).log_softmax(1)
    assert metrics.count == 3
    assert metrics.loss == pytest.approx(-expected[:, 0].mean().item(), abs=1e-4)


def test_flip_protocol_averages_the_mirror():
    samples = [(_image(200, 50), 0), (_image(50, 200), 1)]
    center = evaluate_samples(LeftRight(), samples, preprocess=PRE, num_classes=2, protocol="center")
    flip = evaluate_samples(LeftRight(), samples, preprocess=PRE, num_classes=2, protocol="flip")
    assert center.top1 == 1.0
    # The mirror says the opposite with the same confidence: the average is undecided, the loss is log 2.
    assert flip.loss == pytest.approx(torch.log(torch.tensor(2.0)).item(), abs=1e-4)
    assert center.loss < 0.01


def test_unknown_protocol_is_a_clear_error():
    with pytest.raises(ValueError, match="protocol='5crop'"):
        evaluate_samples(LeftRight(), [], preprocess=PRE, num_classes=2, protocol="5crop")


def _model_and_folder(tmp_path):
    """A saved two-class ResNet-20 and a test/ folder of images of mixed sizes, plus one corrupt file."""
    from PIL import Image

    from resnetkit import create_model, save_model
    from resnetkit.config import ModelInfo

    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=2).eval()
    save_model(model, tmp_path / "m.safetensors", info=ModelInfo(model=model.config, class_names=["a", "b"],
                                                                 preprocess=PRE))
    files = []
    for label, (name, sizes) in enumerate((("a", [(40, 60), (90, 36)]), ("b", [(33, 33), (50, 120)]))):
        folder = tmp_path / "data" / "test" / name
        folder.mkdir(parents=True)
        for i, (w, h) in enumerate(sizes):
            Image.fromarray(torch.randint(0, 256, (h, w, 3), dtype=torch.uint8).numpy()).save(folder / f"{i}.png")
            files.append((folder / f"{i}.png", label))
    (tmp_path / "data" / "test" / "b" / "broken.png").write_bytes(b"not a png")
    return model, files


def test_eval_reads_each_image_at_its_own_size_and_skips_a_corrupt_file(tmp_path):
    """Images of different sizes and shapes are resized and cropped once, by the protocol (no squeeze to
    a common size first); a corrupt file is reported and left out, the rest is measured."""
    from resnetkit.data import decode_rgb
    from resnetkit.config import EvalConfig
    from resnetkit.evaluate.run import run_evaluation

    model, files = _model_and_folder(tmp_path)
    metrics = run_evaluation(EvalConfig(model=str(tmp_path / "m.safetensors"), data=str(tmp_path / "data"),
                                        out_dir=str(tmp_path / "ev"), device="cpu", workers=0))
    with torch.no_grad():
        logp = [model(eval_transform(PRE)(decode_rgb(path.read_bytes()))[None]).log_softmax(1)[0, label]
                for path, label in files]
    assert metrics.count == 4
    assert metrics.loss == pytest.approx(-torch.stack(logp).mean().item(), abs=1e-4)


@pytest.mark.parametrize("protocol", ["10crop", "multiscale"])
def test_eval_cli_averages_the_softmax_over_each_protocols_views(tmp_path, capsys, protocol):
    """``resnetkit eval --protocol 10crop|multiscale`` end to end: its loss is that of the softmax averaged over
    the protocol's views (10 crops; every scale and its mirror, each view whole: fully convolutional)."""
    import json

    from resnetkit.cli import main
    from resnetkit.data import decode_rgb

    model, files = _model_and_folder(tmp_path)
    scales = (32, 48)
    argv = ["eval", str(tmp_path / "m.safetensors"), str(tmp_path / "data"), "--protocol", protocol,
            "--out-dir", str(tmp_path / "ev"), "--device", "cpu", "--workers", "0"]
    assert main(argv + (["--scales", *map(str, scales)] if protocol == "multiscale" else [])) == 0
    assert f"{protocol}: top-1" in capsys.readouterr().out
    report = json.loads((tmp_path / "ev" / "report.json").read_text())
    with torch.no_grad():
        losses = []
        for path, label in files:
            image = decode_rgb(path.read_bytes())
            views = eval_views(image, PRE, protocol=protocol, scales=scales)
            probs = torch.stack([model(to_model_input(v, PRE)[None]).softmax(1)[0] for v in views]).mean(0)
            losses.append(-probs[label].log())
    assert report["images"] == 4 and report["config"]["protocol"] == protocol
    assert report["config"]["scales"] == (list(scales) if protocol == "multiscale" else None)
    if protocol == "multiscale":  # the scales used are recorded when they were the model's defaults, too
        assert main(argv + ["--out-dir", str(tmp_path / "ev-default")]) == 0
        recorded = json.loads((tmp_path / "ev-default" / "report.json").read_text())["config"]["scales"]
        assert recorded == list(default_scales(PRE)) and all(isinstance(s, int) for s in recorded)
    assert len(report["per_class"]) == 2 and sum(map(sum, report["confusion"])) == 4
    assert report["loss"] == pytest.approx(torch.stack(losses).mean().item(), abs=1e-4)
    assert (tmp_path / "ev" / "report.md").exists() and (tmp_path / "ev" / "confusion.png").exists()
