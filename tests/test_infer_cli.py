"""``resnetkit predict``: inputs of every kind, output formats, annotated images, Grad-CAM, exit codes."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from resnetkit import create_model, save_model
from resnetkit.cli import main

NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "cifar-resnet20.safetensors"
    torch.manual_seed(0)
    save_model(create_model("resnet20"), path, class_names=NAMES)
    return path


@pytest.fixture
def images(tmp_path):
    """A folder tree with three images, a text file and a corrupt "image"."""
    rng = np.random.default_rng(0)
    (tmp_path / "pics" / "more").mkdir(parents=True)
    for name, size in (("pics/a.jpg", (40, 30)), ("pics/more/b.png", (32, 32)), ("c.png", (50, 64))):
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(tmp_path / name)
    (tmp_path / "pics" / "notes.txt").write_text("not an image, and not picked up from a folder")
    (tmp_path / "pics" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    return tmp_path


def test_predict_folders_globs_and_urls_as_json(model_file, images, capsys):
    code = main(["predict", str(model_file), str(images / "pics"), str(images / "*.png"),
                 (images / "c.png").as_uri(), "--top-k", "3", "--format", "json"])
    out, err = capsys.readouterr()
    assert code == 0
    results = json.loads(out)
    sources = [r["source"] for r in results]
    assert sources == [str(images / "pics/a.jpg"), str(images / "pics/broken.jpg"), str(images / "pics/more/b.png"),
                       str(images / "c.png"), (images / "c.png").as_uri()]
    assert [r["error"] is None for r in results] == [True, False, True, True, True]
    assert all(len(r["labels"]) == 3 and set(r["labels"]) <= set(NAMES) for r in results if not r["error"])
    assert results[3]["indices"] == results[4]["indices"]  # a file and its file:// URL agree
    assert f"resnetkit predict: {images / 'pics/broken.jpg'}: not an image file" in err


def test_predict_table_and_csv(model_file, images, capsys):
    assert main(["predict", str(model_file), str(images / "c.png"), "--top-k", "2"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["image", "rank", "label", "prob"] and table[-1] == "1 of 1 image(s) predicted"
    assert main(["predict", str(model_file), str(images / "c.png"), "--format", "csv", "--top-k", "2"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["rank"] for r in rows] == ["1", "2"] and rows[0]["label"] in NAMES


def test_exit_code_is_nonzero_only_when_nothing_was_predicted(model_file, images, capsys):
    assert main(["predict", str(model_file), str(images / "pics/broken.jpg"), str(images / "nope.jpg")]) == 1
    out = capsys.readouterr().out
    assert "nope.jpg" in out and "error: no such file" in out
    assert out.rstrip().endswith("0 of 2 image(s) predicted, 2 failed")
    assert main(["predict", str(model_file), str(images / "empty-folder-*")]) == 2
    assert "no images found" in capsys.readouterr().err


def test_annotate_and_cam_write_one_labelled_image_per_input(model_file, images, tmp_path, capsys, monkeypatch):
    annotated, cams = tmp_path / "annotated", tmp_path / "cam"
    code = main(["predict", str(model_file), str(images / "pics"), str(images / "c.png"), "--format", "json",
                 "--annotate", str(annotated), "--cam", str(cams), "--batch-size", "2"])
    results = json.loads(capsys.readouterr().out)
    assert code == 0
    assert sorted(p.name for p in annotated.iterdir()) == ["a.png", "b.png", "c.png"]
    assert sorted(p.name for p in cams.iterdir()) == ["a.png", "b.png", "c.png"]
    original, drawn = Image.open(images / "c.png"), Image.open(annotated / "c.png")
    assert drawn.size == (384, 300)  # 64x50 enlarged x6 so the label is readable; aspect kept
    assert drawn.size[0] / drawn.size[1] == pytest.approx(original.size[0] / original.size[1])
    heat = Image.open(cams / "a.png")
    assert heat.size == (270, 360)  # 30x40 enlarged x9 (256/30 rounded up)
    assert results[0]["labels"][0] in NAMES
    # A batch larger than the images held at once: every image still gets its overlay, for its own class, and no
    # more than OUTPUT_CHUNK full-size images are decoded and held at a time.
    from resnetkit.infer import batch
    from resnetkit.infer.batch import OUTPUT_CHUNK

    many = tmp_path / "many"
    many.mkdir()
    for i in range(OUTPUT_CHUNK + 2):
        Image.open(images / "c.png").save(many / f"{i}.png")
    held = []
    write = batch._write_outputs
    monkeypatch.setattr(batch, "_write_outputs", lambda p, b, *a: (held.append(len(b)), write(p, b, *a)))
    assert main(["predict", str(model_file), str(many), "--cam", str(tmp_path / "cams"), "--annotate",
                 str(tmp_path / "labels"), "--batch-size", "8"]) == 0
    assert sorted(p.name for p in (tmp_path / "cams").iterdir()) == sorted(f"{i}.png" for i in range(OUTPUT_CHUNK + 2))
    assert len(list((tmp_path / "labels").iterdir())) == OUTPUT_CHUNK + 2
    assert max(held) == OUTPUT_CHUNK and sum(held) == OUTPUT_CHUNK + 2


def test_cam_class_by_name_and_bad_name(model_file, images, tmp_path, capsys):
    def cam(folder, *cam_class):
        assert main(["predict", str(model_file), str(images / "c.png"), "--cam", str(tmp_path / folder),
                     "--format", "json", *cam_class]) == 0
        top = json.loads(capsys.readouterr().out)[0]["labels"][0]
        return top, np.asarray(Image.open(tmp_path / folder / "c.png"))

    top, default = cam("default")  # the top-1 class's map
    other = next(name for name in NAMES if name != top)
    assert np.array_equal(cam("top", "--cam-class", top)[1], default)  # naming the top-1 class changes nothing
    # Another class, another map: compared below the label band along the top (whose text names the class).
    half = default.shape[0] // 2
    assert not np.array_equal(cam("other", "--cam-class", other)[1][half:], default[half:])
    assert main(["predict", str(model_file), str(images / "c.png"), "--cam", str(tmp_path / "cam"),
                 "--cam-class", "unicorn"]) == 2
    assert "unknown class 'unicorn'" in capsys.readouterr().err


def test_architecture_name_with_weights_and_classes(images, tmp_path, capsys):
    model = create_model("resnet20", num_classes=3)
    torch.save({"state_dict": model.state_dict()}, tmp_path / "ckpt.pth")
    (tmp_path / "classes.json").write_text(json.dumps(["red", "green", "blue"]))
    code = main(["predict", "resnet20", str(images / "c.png"), "--weights", str(tmp_path / "ckpt.pth"),
                 "--classes", str(tmp_path / "classes.json"), "--format", "json"])
    assert code == 0
    [result] = json.loads(capsys.readouterr().out)
    assert sorted(result["labels"]) == ["blue", "green", "red"]
    assert main(["predict", "resnet20", str(images / "c.png")]) == 2
    assert "--weights" in capsys.readouterr().err


def test_progress_bar_goes_to_stderr(model_file, images, capsys):
    from resnetkit.infer import Predictor, predict_inputs

    predictor = Predictor.from_file(model_file, device="cpu")
    results = predict_inputs(predictor, [str(images)], batch_size=1, progress=True)
    out, err = capsys.readouterr()
    assert len(results) == 4 and out == ""
    assert "4/4" in err and "img" in err
