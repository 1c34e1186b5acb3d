"""Bad input to predict and features is refused up front, by name, and never costs the user a file."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from resnetkit import create_model, save_model
from resnetkit.cli import main
from resnetkit.infer import Predictor, read_class_names
from resnetkit.infer.features import check_features_out, extract_features

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "resnet20.safetensors"
    save_model(create_model("resnet20").eval(), path, class_names=[f"class{i}" for i in range(10)])
    return path


@pytest.fixture(scope="module")
def predictor(model_file) -> Predictor:
    return Predictor.from_file(model_file, device="cpu")


def _save(path, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)
    return path.read_bytes()


def test_annotating_into_the_folder_of_the_inputs_is_refused_and_the_images_kept(model_file, tmp_path, capsys):
    photos = tmp_path / "photos"
    png, jpg = _save(photos / "photo.png", 0), _save(photos / "photo.jpg", 1)
    # The folder itself, and one image of it whose output (photo.png) would replace its neighbour.
    for inputs in ([str(photos)], [str(photos / "photo.jpg")]):
        assert main(["predict", str(model_file), *inputs, "--annotate", str(photos)]) == 2
        out, err = capsys.readouterr()
        assert "--annotate" in err and str(photos) in err and "separate output folder" in err
        assert out == ""  # refused before predicting
    # The same image named by a file:// URL (its annotated copy replaced it).
    assert main(["predict", str(model_file), (photos / "photo.png").as_uri(), "--annotate", str(photos)]) == 2
    assert "separate output folder" in capsys.readouterr().err
    assert (photos / "photo.png").read_bytes() == png and (photos / "photo.jpg").read_bytes() == jpg
    assert sorted(p.name for p in photos.iterdir()) == ["photo.jpg", "photo.png"]


def test_an_output_that_links_to_an_input_is_refused(model_file, tmp_path, capsys):
    original = _save(tmp_path / "in" / "photo.png")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "photo.png").symlink_to(tmp_path / "in" / "photo.png")
    assert main(["predict", str(model_file), str(tmp_path / "in" / "photo.png"), "--cam", str(tmp_path / "out")]) == 2
    assert "--cam" in capsys.readouterr().err
    assert (tmp_path / "in" / "photo.png").read_bytes() == original


def test_annotate_and_cam_in_one_folder_is_refused(model_file, tmp_path, capsys):
    _save(tmp_path / "in" / "a.png")
    code = main(["predict", str(model_file), str(tmp_path / "in"), "--annotate", str(tmp_path / "out"),
                 "--cam", str(tmp_path / "out") + "/"])
    assert code == 2
    assert "--annotate and --cam both name" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_inputs_sharing_a_name_get_their_own_outputs_and_a_warning(model_file, tmp_path, capsys):
    _save(tmp_path / "a" / "x.png", 0)
    _save(tmp_path / "b" / "x.png", 1)
    assert main(["predict", str(model_file), str(tmp_path / "a"), str(tmp_path / "b"),
                 "--annotate", str(tmp_path / "out")]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["x-2.png", "x.png"]
    err = capsys.readouterr().err
    assert "resnetkit predict: warning: 1 input(s) share a file name" in err
    assert "x-2.png" in err and str(tmp_path / "b" / "x.png") in err


@pytest.mark.parametrize("flag", ["--annotate", "--cam"])
def test_an_output_folder_that_is_a_file_or_cannot_be_made_is_refused_before_predicting(model_file, tmp_path,
                                                                                        capsys, flag):
    _save(tmp_path / "in" / "a.png")
    taken = tmp_path / "taken.png"
    taken.write_bytes(b"keep me")
    for folder, why in ((taken, "exists and is not a folder"), (taken / "sub", "cannot create this folder")):
        assert main(["predict", str(model_file), str(tmp_path / "in"), flag, str(folder)]) == 2
        out, err = capsys.readouterr()
        assert out == "" and f"{flag} {folder}: {why}" in err
    assert taken.read_bytes() == b"keep me"


@pytest.mark.parametrize("size", [0, -1])
def test_a_batch_size_below_one_is_refused(predictor, model_file, tmp_path, capsys, size):
    image = tmp_path / "a.png"
    _save(image)
    with pytest.raises(ValueError, match=f"batch_size={size}"):
        predictor.predict([str(image)], batch_size=size)
    assert main(["predict", str(model_file), str(image), "--batch-size", str(size)]) == 2
    assert "--batch-size" in capsys.readouterr().err


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_pixels_are_refused_not_read_as_black(predictor, bad):
    image = torch.rand(3, 32, 32)
    image[0, 3, 4] = bad
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # before: numpy's "invalid value encountered in cast"
        (result,) = predictor.predict([image])
    assert not result.ok and "NaN or infinity" in result.error and "<tensor #0>" in result.error


def test_class_name_file_that_is_binary_or_a_folder_is_named(tmp_path):
    binary = tmp_path / "ok.jpg"
    _save(binary)
    with pytest.raises(ValueError, match=r"ok\.jpg: not a class-name file \(not UTF-8 text.*one class name per line"):
        read_class_names(binary)
    with pytest.raises(ValueError, match="a folder, not a class-name file"):
        read_class_names(tmp_path)
    for name, text, message in (("pairs.json", '{"0": [], "1": "b"}', "expected a JSON list of names"),
                                ("deep.json", "[" * 100_000 + "]" * 100_000, "does not parse \\(RecursionError\\)"),
                                ("crlf.json", '["air\\r\\nX-Injected: 1", "b"]', "class 0 .* holds a control character"),
                                ("nul.txt", "a\nb\x00c\n", "class 1 'b\\\\x00c' holds a control character")):
        (tmp_path / name).write_text(text)
        with pytest.raises(ValueError, match=f"{name}: .*{message}"):
            read_class_names(tmp_path / name)


def test_a_float_image_with_nan_pixels_is_refused_by_name(predictor, tmp_path):
    values = np.full((20, 20), np.nan, dtype=np.float32)
    Image.fromarray(values, mode="F").save(tmp_path / "nan.tiff")
    (result,) = predictor.predict([tmp_path / "nan.tiff"])
    assert not result.ok and result.error.startswith(f"{tmp_path / 'nan.tiff'}: a floating-point image whose pixels")


def test_features_refuses_an_unknown_split_naming_the_ones_there(predictor, tmp_path):
    for split in ("train", "val"):
        _save(tmp_path / "tree" / split / "cat" / "1.png")
    with pytest.raises(ValueError, match=r"--split nosuch: .*tree has no such split \(it has: train, val, test"):
        extract_features(predictor, str(tmp_path / "tree"), split="nosuch")
    assert len(extract_features(predictor, str(tmp_path / "tree"), split="val").files) == 1


def test_features_output_is_checked_before_any_image_is_read(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match=r"--out .*f3\.txt: the output must end in \.npy or \.safetensors"):
        check_features_out(tmp_path / "f3.txt")
    with pytest.raises(ValueError, match="folder of --out .*file: exists and is not a folder"):
        check_features_out(tmp_path / "file" / "f.npy")
    (tmp_path / "dir.npy").mkdir()
    with pytest.raises(ValueError, match="is a folder"):
        check_features_out(tmp_path / "dir.npy")
    assert check_features_out(tmp_path / "new" / "f.npy") == tmp_path / "new" / "f.npy"
    assert (tmp_path / "new").is_dir()


def test_features_never_replace_a_model_file(model_file, tmp_path, capsys):
    before = model_file.read_bytes()
    _save(tmp_path / "images" / "a.png")
    assert main(["features", str(model_file), str(tmp_path / "images"), "--out", str(model_file)]) == 2
    assert "is a resnetkit model file, which the features would replace" in capsys.readouterr().err
    assert model_file.read_bytes() == before
    # A bare state dict (the --weights of the same command), someone's array, a JSON the .npy's sidecar would
    # replace: kept. A features file written earlier is replaced, as a rerun expects.
    from safetensors.torch import save_file

    weights = tmp_path / "w.safetensors"
    save_file({"conv1.weight": torch.ones(2, 3)}, str(weights))
    (tmp_path / "array.npy").write_bytes(b"\x93NUMPY someone's array")
    (tmp_path / "config.json").write_text('{"run": 1}')
    kept = {p: p.read_bytes() for p in (weights, tmp_path / "array.npy", tmp_path / "config.json")}
    for out in (weights, tmp_path / "array.npy", tmp_path / "config.npy"):
        assert main(["features", str(model_file), str(tmp_path / "images"), "--out", str(out)]) == 2
        assert "exists and is not a features file written by resnetkit features" in capsys.readouterr().err
    assert all(p.read_bytes() == b for p, b in kept.items())
    for out in ("f.safetensors", "f.npy"):
        for _ in range(2):
            assert main(["features", str(model_file), str(tmp_path / "images"), "--out", str(tmp_path / out)]) == 0


def test_eval_never_replaces_a_training_runs_report(model_file, tmp_path, capsys):
    import json

    run = tmp_path / "run"
    run.mkdir()
    report = json.dumps({"title": "training", "top1": 0.9, "history": [{"epoch": 1}, {"epoch": 2}]})
    (run / "report.json").write_text(report)
    _save(tmp_path / "data" / "cat" / "a.png")
    assert main(["eval", str(model_file), str(tmp_path / "data"), "--out-dir", str(run)]) == 2
    assert "holds a training run's report (2 epochs" in capsys.readouterr().err
    assert (run / "report.json").read_text() == report
    # A pruning's report (no history) and one that is not JSON are kept too; an evaluation's own is replaced.
    for other in (json.dumps({"config": {"method": "l1"}, "pruned_top1": 0.8}), "not json"):
        (run / "report.json").write_text(other)
        assert main(["eval", str(model_file), str(tmp_path / "data"), "--out-dir", str(run)]) == 2
        assert "holds a report.json that is not an evaluation's" in capsys.readouterr().err
        assert (run / "report.json").read_text() == other
    _save(tmp_path / "data0" / "class0" / "a.png")
    for _ in range(2):
        assert main(["eval", str(model_file), str(tmp_path / "data0"), "--out-dir", str(tmp_path / "eval")]) == 0


def test_a_pipe_named_by_a_file_url_is_refused_not_waited_on(model_file, tmp_path, capsys):
    import os

    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)  # opening it for reading would wait for a writer forever
    good = tmp_path / "good.png"
    _save(good)
    assert main(["predict", str(model_file), pipe.as_uri(), str(good), "--format", "json"]) == 0
    assert "not a regular file" in capsys.readouterr().err
    assert main(["predict", pipe.as_uri(), str(good)]) == 2
    assert f"{pipe.as_uri()}: not a regular file" in capsys.readouterr().err


def test_a_malformed_url_is_that_inputs_error_and_the_others_are_predicted(predictor, tmp_path):
    good = tmp_path / "good.png"
    _save(good)
    bad, ok = predictor.predict(["http://[::1", good])
    assert not bad.ok and bad.error.startswith("http://[::1: download failed") and ok.ok


def test_a_folder_is_searched_as_training_searches_it_links_followed_loops_ended(tmp_path):
    from resnetkit.infer import expand_inputs

    _save(tmp_path / "shots" / "top" / "a.png")
    _save(tmp_path / "elsewhere" / "b.png")
    (tmp_path / "shots" / "top" / "linked").symlink_to(tmp_path / "elsewhere")  # rglob skipped this folder
    (tmp_path / "shots" / "top" / "loop").symlink_to(tmp_path / "shots")  # and this must not repeat forever
    found = expand_inputs([str(tmp_path / "shots")])
    assert found == [str(tmp_path / "shots/top/a.png"), str(tmp_path / "shots/top/linked/b.png")]


def test_a_folder_lists_entries_it_cannot_read_and_an_imageless_input_is_said(tmp_path, capsys, model_file):
    """A pipe or a dangling link named as an image inside a folder gets an error row instead of vanishing; an empty
    folder beside other inputs is warned about; a file name with a newline stays one row of the table."""
    import os

    from resnetkit.cli import main

    _save(tmp_path / "imgs" / "ok.png")
    _save(tmp_path / "imgs" / "new\nline.png", seed=1)
    os.mkfifo(tmp_path / "imgs" / "pipe.png")
    (tmp_path / "imgs" / "dangling.jpg").symlink_to(tmp_path / "nowhere.jpg")
    (tmp_path / "empty").mkdir()
    assert main(["predict", str(model_file), str(tmp_path / "empty"), str(tmp_path / "imgs"), "--top-k", "1"]) == 0
    out, err = capsys.readouterr()
    rows = out.strip().splitlines()
    assert len(rows) == 6 and rows[-1] == "2 of 4 image(s) predicted, 2 failed"
    assert any("pipe.png" in row and "not a regular file" in row for row in rows)
    assert any("dangling.jpg" in row and "error:" in row for row in rows)
    assert any("new\\nline.png" in row for row in rows)
    assert f"no images found in {tmp_path / 'empty'}; the other inputs are predicted" in err


def test_eval_of_unreadable_images_or_too_many_classes_is_an_error_not_a_report(model_file, tmp_path, capsys):
    for name in ("class0", "class1"):
        (tmp_path / "broken" / name).mkdir(parents=True)
        (tmp_path / "broken" / name / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    assert main(["eval", str(model_file), str(tmp_path / "broken"), "--out-dir", str(tmp_path / "e1")]) == 2
    assert "none of its 2 image(s) could be read" in capsys.readouterr().err
    assert not (tmp_path / "e1" / "report.json").exists()
    # A model without class names and 3 outputs, on data of 4 classes: said, not an IndexError (eval, calibrate).
    nameless = tmp_path / "nameless.safetensors"
    save_model(create_model("resnet20", num_classes=3).eval(), nameless)
    for i in range(4):
        _save(tmp_path / "four" / f"c{i}" / "a.png", seed=i)
    assert main(["eval", str(nameless), str(tmp_path / "four"), "--out-dir", str(tmp_path / "e2")]) == 2
    assert "has 4 classes but the model" in capsys.readouterr().err
    assert main(["calibrate", str(nameless), str(tmp_path / "four"), "--out", str(tmp_path / "c.safetensors"),
                 "--check-fraction", "0"]) == 2
    assert "has 4 classes but the model" in capsys.readouterr().err
