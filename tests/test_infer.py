"""Predictor: the model's own preprocessing, torchvision weights, class-name files, URLs, output formats."""

from __future__ import annotations

import csv
import functools
import http.server
import io
import json
import shutil
import threading
import time

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torchvision import transforms

from resnetkit import Preprocess, create_model, save_model
from resnetkit.config import ModelInfo
from resnetkit.data.classes import resolve_class
from resnetkit.infer import Predictor, format_predictions, load_predictor, read_class_names

NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
# Deliberately unlike the defaults, so a predictor that ignored the stored preprocessing would differ.
ODD_PREPROCESS = Preprocess(input_size=24, resize_size=28, mean=(0.3, 0.4, 0.5), std=(0.2, 0.25, 0.3),
                            interpolation="bicubic")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "resnet20.safetensors"
    torch.manual_seed(0)
    model = create_model("resnet20")
    save_model(model, path, info=ModelInfo(model=model.config, class_names=NAMES, preprocess=ODD_PREPROCESS))
    return path


@pytest.fixture(scope="module")
def predictor(model_file) -> Predictor:
    return Predictor.from_file(model_file, device="cpu")


@pytest.fixture
def photo(tmp_path):
    pixels = np.random.default_rng(1).integers(0, 256, (45, 61, 3), dtype=np.uint8)
    path = tmp_path / "photo.png"
    Image.fromarray(pixels).save(path)
    return path


def _classic_eval(preprocess: Preprocess, interpolation=transforms.InterpolationMode.BICUBIC):
    return transforms.Compose([transforms.Resize(preprocess.resize_size, interpolation=interpolation),
                               transforms.CenterCrop(preprocess.input_size), transforms.ToTensor(),
                               transforms.Normalize(preprocess.mean, preprocess.std)])


def test_predictions_equal_the_classic_evaluation_pipeline_with_the_stored_preprocessing(predictor, photo):
    [result] = predictor.predict(photo, top_k=10)
    x = _classic_eval(ODD_PREPROCESS)(Image.open(photo).convert("RGB"))
    assert x.shape == (3, 24, 24)
    with torch.no_grad():
        expected = predictor.model(x[None]).softmax(1)[0]
    order = expected.argsort(descending=True).tolist()
    assert result.indices == order
    assert np.allclose(result.probabilities, expected[order].numpy(), atol=1e-6)
    assert result.labels == [NAMES[i] for i in order]
    assert result.label == NAMES[order[0]] and result.probability == pytest.approx(float(expected.max()))


def test_model_file_round_trip_keeps_names_and_preprocessing(predictor):
    assert predictor.class_names == NAMES
    assert predictor.preprocess == ODD_PREPROCESS
    assert predictor.info.model.arch == "resnet20"
    assert not predictor.model.training


def test_top_k_is_clipped_to_the_classes_and_must_be_positive(predictor, photo):
    [result] = predictor.predict([photo], top_k=50)
    assert len(result.indices) == 10 and sum(result.probabilities) == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match="top_k"):
        predictor.predict(photo, top_k=0)


def test_batch_size_does_not_change_predictions(predictor, photo):
    images = [np.full((20, 20, 3), v, np.uint8) for v in range(0, 250, 25)] + [photo]
    one = predictor.predict(images, batch_size=1)
    many = predictor.predict(images, batch_size=4)
    for a, b in zip(one, many):
        assert a.indices == b.indices and np.allclose(a.probabilities, b.probabilities, atol=1e-5)


def test_torchvision_state_dict_with_class_file_gives_torchvision_predictions(tmp_path, photo):
    torch.manual_seed(0)
    reference = torchvision.models.resnet18(num_classes=5).eval()
    torch.save(reference.state_dict(), tmp_path / "resnet18.pth")
    (tmp_path / "classes.txt").write_text("tench\ngoldfish\n\nshark\nhen\nostrich\n")
    predictor = Predictor.from_name("resnet18", weights=tmp_path / "resnet18.pth",
                                    class_names=tmp_path / "classes.txt", device="cpu")
    assert predictor.model.num_classes == 5  # read from the weights' classifier
    [result] = predictor.predict(photo, top_k=5)
    x = _classic_eval(Preprocess(), transforms.InterpolationMode.BILINEAR)(Image.open(photo).convert("RGB"))
    with torch.no_grad():
        expected = reference(x[None]).softmax(1)[0]
    assert result.indices == expected.argsort(descending=True).tolist()
    assert np.allclose(result.probabilities, expected[result.indices].numpy(), atol=1e-5)
    assert result.labels[0] == ["tench", "goldfish", "shark", "hen", "ostrich"][result.indices[0]]


def test_class_name_files(tmp_path):
    (tmp_path / "list.json").write_text(json.dumps(["a", "b"]))
    (tmp_path / "index.json").write_text(json.dumps({"1": ["n02", "goldfish"], "0": ["n01", "tench"]}))
    (tmp_path / "lines.txt").write_text("\ufeffcat\r\ndog\r\n")
    assert read_class_names(tmp_path / "list.json") == ["a", "b"]
    assert read_class_names(tmp_path / "index.json") == ["tench", "goldfish"]
    assert read_class_names(tmp_path / "lines.txt") == ["cat", "dog"]
    (tmp_path / "gap.json").write_text(json.dumps({"0": "a", "2": "c"}))
    with pytest.raises(ValueError, match="gap.json.*without gaps"):
        read_class_names(tmp_path / "gap.json")
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        read_class_names(tmp_path / "nope.txt")


def test_a_class_named_twice_is_kept_but_asking_for_it_by_name_says_which_indices():
    # ImageNet's own list names "crane" (the bird, 134) and "crane" (the machine, 517): both are loaded.
    names = ["tench", "crane", "goldfish", "crane"]
    assert resolve_class("goldfish", names, 4) == 2
    assert resolve_class("3", names, 4) == 3
    with pytest.raises(ValueError, match=r"'crane' names 2 classes \(indices 1, 3\); give the index"):
        resolve_class("crane", names, 4)


def test_wrong_number_of_class_names_is_an_error_naming_both_counts(tmp_path):
    torch.save(create_model("resnet20").state_dict(), tmp_path / "w.pth")
    (tmp_path / "three.txt").write_text("a\nb\nc\n")
    with pytest.raises(ValueError, match=r"3 class names \(from .*three.txt\) for weights with 10 classes"):
        Predictor.from_name("resnet20", weights=tmp_path / "w.pth", class_names=tmp_path / "three.txt")


def test_load_predictor_explains_what_model_means(tmp_path, model_file):
    with pytest.raises(ValueError, match="--weights"):
        load_predictor("resnet20")
    with pytest.raises(ValueError, match="already holds its weights"):
        load_predictor(str(model_file), weights="x.pth")
    with pytest.raises(FileNotFoundError, match=r"neither a model file nor a registered architecture.*\)$"):
        load_predictor(str(tmp_path / "nothing.safetensors"))  # a missing file: no names suggested
    with pytest.raises(FileNotFoundError, match=r"did you mean resnet20_cifar10\b"):
        load_predictor("resnet20_cifar")  # a mistyped pretrained name
    with pytest.raises(FileNotFoundError, match=r"did you mean resnet50\b"):
        load_predictor("resnt50")
    assert load_predictor(str(model_file), device="cpu").class_names == NAMES


@pytest.fixture
def http_root(tmp_path):
    """A loopback HTTP server over ``tmp_path``; yields its base URL."""
    handler = functools.partial(QuietHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_urls_over_http_and_file_scheme(predictor, photo, http_root):
    results = predictor.predict([photo, photo.as_uri(), f"{http_root}/photo.png", f"{http_root}/missing.png"])
    assert [r.ok for r in results] == [True, True, True, False]
    assert results[1].indices == results[0].indices == results[2].indices
    assert results[2].source == f"{http_root}/photo.png"
    assert f"{http_root}/missing.png: download failed" in results[3].error and "404" in results[3].error


def test_model_file_from_a_url(model_file, tmp_path, monkeypatch, photo, http_root):
    monkeypatch.setenv("RESNETKIT_CACHE", str(tmp_path / "cache"))
    shutil.copy(model_file, tmp_path / "served.safetensors")  # http_root serves tmp_path
    expected = Predictor.from_file(model_file, device="cpu").predict(photo)[0]
    for url in (model_file.as_uri(), f"{http_root}/served.safetensors"):
        predictor = Predictor.from_file(url, device="cpu")
        assert predictor.class_names == NAMES
        got = predictor.predict(photo)[0]
        assert got.ok and got.indices == expected.indices and got.probabilities == expected.probabilities


def test_output_formats(predictor, photo, tmp_path):
    (tmp_path / "bad.jpg").write_text("x")
    results = predictor.predict([photo, tmp_path / "bad.jpg"], top_k=2)
    table = format_predictions(results, "table")
    header, first = table.splitlines()[:2]
    assert header.split() == ["image", "rank", "label", "prob"]
    assert first.split()[:3] == [str(photo), "1", results[0].labels[0]]
    assert "error: not an image file" in table and table.endswith("1 of 2 image(s) predicted, 1 failed")
    data = json.loads(format_predictions(results, "json"))
    assert data[0]["labels"] == results[0].labels and data[1]["error"].startswith(str(tmp_path / "bad.jpg"))
    rows = list(csv.DictReader(io.StringIO(format_predictions(results, "csv"))))
    assert [r["rank"] for r in rows] == ["1", "2", ""]
    assert float(rows[0]["probability"]) == pytest.approx(results[0].probabilities[0], abs=1e-6)
    with pytest.raises(ValueError, match="unknown format"):
        format_predictions(results, "xml")


@pytest.mark.slow
def test_imagenet_resnet50_on_a_large_exif_rotated_photo_matches_torchvision(tmp_path):
    """ImageNet-sized end to end: a 3000x2000 camera JPEG stored sideways, torchvision's resnet50."""
    torch.manual_seed(0)
    reference = torchvision.models.resnet50().eval()
    torch.save(reference.state_dict(), tmp_path / "resnet50.pth")
    stored = Image.fromarray(np.random.default_rng(3).integers(0, 256, (2000, 3000, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 8  # rotate 90 degrees counter-clockwise to view
    stored.save(tmp_path / "photo.jpg", exif=exif.tobytes(), quality=90)
    predictor = Predictor.from_name("resnet50", weights=tmp_path / "resnet50.pth", device="cpu")
    [result] = predictor.predict(tmp_path / "photo.jpg", top_k=5)
    upright = Image.open(tmp_path / "photo.jpg").convert("RGB").transpose(Image.Transpose.ROTATE_90)
    assert upright.size == (2000, 3000)
    x = _classic_eval(Preprocess(), transforms.InterpolationMode.BILINEAR)(upright)
    with torch.no_grad():
        expected = reference(x[None]).softmax(1)[0]
    assert result.indices == expected.argsort(descending=True)[:5].tolist()
    assert np.allclose(result.probabilities, expected[result.indices].numpy(), atol=1e-5)
    [cam] = predictor.grad_cam(tmp_path / "photo.jpg")
    assert cam.heatmap.shape == (3000, 2000) and cam.index == result.indices[0]


def test_flip_tta_averages_each_images_softmax_with_its_mirrors(tmp_path, capsys):
    from resnetkit.cli import main

    torch.manual_seed(0)
    predictor = load_predictor("resnet20_cifar10", device="cpu")
    flipping = load_predictor("resnet20_cifar10", device="cpu", tta="flip")
    pixels = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)  # CIFAR-sized: no resize
    image, mirror = Image.fromarray(pixels), Image.fromarray(pixels[:, ::-1].copy())

    def by_class(prediction):
        return dict(zip(prediction.labels, prediction.probabilities))

    alone, mirrored = (by_class(predictor.predict(x, top_k=10)[0]) for x in (image, mirror))
    averaged = by_class(flipping.predict(image, top_k=10)[0])
    assert averaged == pytest.approx({c: (alone[c] + mirrored[c]) / 2 for c in alone}, abs=1e-5)
    assert averaged != pytest.approx(alone, abs=1e-3)  # an asymmetric image: the mirror changes the answer
    with pytest.raises(ValueError, match="tta='mirror' is not one of none, flip"):
        load_predictor("resnet20_cifar10", tta="mirror")
    image.save(tmp_path / "x.png")
    assert main(["predict", "resnet20_cifar10", str(tmp_path / "x.png"), "--tta", "flip", "--format", "json",
                 "--top-k", "1", "--device", "cpu"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown[0]["probabilities"][0] == pytest.approx(max(averaged.values()), abs=1e-4)


def test_answers_below_min_confidence_are_marked_uncertain_in_every_format(tmp_path, capsys):
    """The threshold sits on each image's top-1 probability: just above it an answer stands, just below it the same
    labels come marked uncertain (JSON and CSV fields, the table's label)."""
    from resnetkit.cli import main

    pixels = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "x.png")
    top = load_predictor("resnet20_cifar10", device="cpu").predict(tmp_path / "x.png", top_k=1)[0].probability
    for threshold, uncertain in ((top - 1e-4, False), (top + 1e-4, True)):
        answer = load_predictor("resnet20_cifar10", device="cpu", min_confidence=threshold).predict(
            tmp_path / "x.png", top_k=2)[0]
        assert answer.uncertain is uncertain and answer.probability == pytest.approx(top, abs=1e-6)
    argv = ["predict", "resnet20_cifar10", str(tmp_path / "x.png"), "--top-k", "1", "--device", "cpu",
            "--min-confidence", f"{top + 1e-4:.6f}"]
    assert main(argv + ["--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["uncertain"] is True
    assert main(argv + ["--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines()[1].endswith(",true")
    assert main(argv) == 0
    assert "(uncertain)" in capsys.readouterr().out
    assert main(argv[:-1] + ["1.5"]) == 2
    assert "min_confidence=1.5 must be a number in [0, 1]" in capsys.readouterr().err


def test_a_download_that_trickles_ends_at_the_timeout_for_the_whole_file():
    """A server that sends a byte every 0.2 s: urlopen's timeout bounds each read, so the download never ended."""
    from resnetkit.infer.images import ImageLoadError, download

    class Trickle(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            try:
                for _ in range(1000):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.2)
            except OSError:  # the client gave up
                pass

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Trickle)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        started = time.monotonic()
        with pytest.raises(ImageLoadError, match=r"download failed \(not finished after 1 s\)"):
            download(f"http://127.0.0.1:{server.server_address[1]}/slow.png", timeout=1.0)
        assert time.monotonic() - started < 5
    finally:
        server.shutdown()
        server.server_close()
