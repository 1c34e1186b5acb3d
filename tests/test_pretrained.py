"""Named weights: one catalog resolves shipped files, downloads and known foreign files, with their preprocessing."""

from __future__ import annotations

import json
import logging
import math
import re
import warnings

import pytest
import torch
from PIL import Image

from resnetkit import create_model, save_model
from resnetkit.cli import main
from resnetkit.config import Preprocess
from resnetkit.infer import load_predictor
from resnetkit.models import WeightFileError, load_model
from resnetkit.models import pretrained as catalog

CIFAR10 = list(catalog.CIFAR10_CLASSES)


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """A package weights folder holding one tiny trained-looking network, resnet20_cifar10, with its card."""
    folder = tmp_path / "weights"
    folder.mkdir()
    model = create_model("resnet20").eval()
    path = save_model(model, folder / "resnet20_cifar10.safetensors", class_names=CIFAR10)
    entry = {"arch": "resnet20", "tag": "cifar10", "sha256": catalog.file_sha256(path),
             "card": {"top1": 91.25, "evaluated_on": "CIFAR-10 45k/5k validation (5,000 images)"}}
    (folder / "resnet20_cifar10.json").write_text(json.dumps(entry))
    monkeypatch.setattr(catalog, "WEIGHTS_DIR", folder)
    return model, path


@pytest.fixture
def images(tmp_path):
    root = tmp_path / "images"
    for name, colour in (("cat", (200, 30, 30)), ("dog", (30, 200, 30))):
        (root / name).mkdir(parents=True)
        Image.new("RGB", (40, 36), colour).save(root / name / f"{name}.png")
    return root


def test_shipped_network_resolves_by_name_and_by_pretrained_tag(shipped):
    model, path = shipped
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
        assert torch.equal(create_model("resnet20", pretrained="cifar10").eval()(x), expected)
        assert torch.equal(create_model("resnet20_cifar10").eval()(x), expected)
    loaded, info = load_model("resnet20_cifar10")
    assert info.class_names == CIFAR10 and info.extra["weights"] == "resnet20_cifar10"
    head = create_model("resnet20", pretrained="cifar10", num_classes=3)
    assert head.num_classes == 3
    with pytest.raises(ValueError, match="weights fix the architecture"):
        create_model("resnet20", pretrained="cifar10", width=2.0)


def test_missing_or_damaged_shipped_file_is_not_offered_or_refused(shipped):
    _, path = shipped
    assert "resnet20_cifar10" in [e.name for e in catalog.list_weights()]
    path.write_bytes(path.read_bytes()[:-1] + b"\x00")
    with pytest.raises(WeightFileError, match="SHA-256 does not match"):
        load_model("resnet20_cifar10")
    path.unlink()
    assert "resnet20_cifar10" not in [e.name for e in catalog.list_weights()]
    with pytest.raises(ValueError, match="no pretrained weights 'cifar10' for resnet20"):
        create_model("resnet20", pretrained="cifar10")
    with pytest.raises(ValueError, match="unknown model 'resnet19'"):
        create_model("resnet19", pretrained="cifar10")


def test_a_damaged_shipped_file_is_marked_and_hides_nothing_else(shipped, capsys):
    _, path = shipped
    path.write_bytes(b"\xff" * 64)  # not a safetensors header
    assert main(["models", "--pretrained"]) == 0
    out = capsys.readouterr().out
    assert "DAMAGED" in next(row for row in out.splitlines() if row.startswith("resnet20_cifar10"))
    assert any(row.startswith("resnet50_imagenet1k_v2") for row in out.splitlines())


def test_models_pretrained_lists_the_card_accuracy(shipped, capsys):
    assert main(["models", "--pretrained"]) == 0
    out = capsys.readouterr().out
    line = next(row for row in out.splitlines() if row.startswith("resnet20_cifar10"))
    assert "91.25" in line and "shipped" in line
    tv = next(row for row in out.splitlines() if row.startswith("resnet50_imagenet1k_v2"))
    assert "80.86" in tv and "232" in tv and "download: https://download.pytorch.org/" in tv


def test_predict_eval_and_export_take_a_pretrained_name(shipped, images, tmp_path, capsys):
    assert main(["predict", "resnet20_cifar10", str(images), "--format", "json"]) == 0
    by_name = json.loads(capsys.readouterr().out)
    assert len(by_name) == 2 and all(p["labels"][0] in CIFAR10 for p in by_name)
    assert main(["predict", "resnet20", "--pretrained", "cifar10", str(images), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == by_name
    assert main(["eval", "resnet20_cifar10", str(images), "--out-dir", str(tmp_path / "eval"), "--workers", "0"]) == 0
    assert "on 2 images" in capsys.readouterr().out
    out = tmp_path / "r20.pt"
    assert main(["export", "resnet20_cifar10", "--format", "torchscript", "--output", str(out)]) == 0
    assert out.exists()


def test_known_foreign_file_brings_its_preprocessing_and_unknown_one_can_be_overridden(tmp_path, monkeypatch,
                                                                                          caplog):
    weights = tmp_path / "resnet18-download.pth"
    torch.save(create_model("resnet18", num_classes=10).state_dict(), weights)
    special = Preprocess(input_size=48, resize_size=54, interpolation="bicubic")
    entry = catalog.WeightEntry("resnet18_test", "resnet18", "test", weights.as_uri(), catalog.file_sha256(weights),
                                {"top1": 50.0}, special, "cifar10")
    monkeypatch.setattr(catalog, "_BUILTIN", [*catalog._BUILTIN, entry])
    known = load_predictor("resnet18", weights=str(weights))  # matched by SHA-256
    assert known.preprocess == special and known.class_names == CIFAR10
    monkeypatch.setenv("RESNETKIT_CACHE", str(tmp_path / "cache"))
    by_name = load_predictor("resnet18", weights="resnet18_test")  # matched by name: a real download (file://)
    assert by_name.preprocess == special
    assert len(list((tmp_path / "cache").rglob("*resnet18-download.pth"))) == 1

    other = tmp_path / "mine.pth"
    torch.save(create_model("resnet18", num_classes=10).state_dict(), other)
    with caplog.at_level(logging.WARNING):
        unknown = load_predictor("resnet18", weights=str(other))
    assert unknown.preprocess == Preprocess() and "does not know" in caplog.text
    overridden = load_predictor("resnet18", weights=str(other), preprocess={"resize_size": 232, "interpolation": "bicubic"})
    assert overridden.preprocess == Preprocess(resize_size=232, interpolation="bicubic")


def test_url_entry_downloads_once_and_checks_its_digest(tmp_path, monkeypatch):
    monkeypatch.setenv("RESNETKIT_CACHE", str(tmp_path / "cache"))
    weights = tmp_path / "resnet18-abc.pth"
    torch.save(create_model("resnet18", num_classes=10).state_dict(), weights)
    good = catalog.WeightEntry("resnet18_good", "resnet18", "good", weights.as_uri(), catalog.file_sha256(weights)[:8],
                               {}, Preprocess(), "cifar10")
    model, info = catalog.load_entry(good)
    assert model.num_classes == 10 and info.extra["weights"] == "resnet18_good"
    assert len(list((tmp_path / "cache").rglob("*.pth"))) == 1
    tampered = tmp_path / "resnet18-def.pth"
    tampered.write_bytes(weights.read_bytes())
    bad = catalog.WeightEntry("resnet18_bad", "resnet18", "bad", tampered.as_uri(), "00000000", {}, Preprocess(),
                              "cifar10")
    with pytest.raises(WeightFileError, match="SHA-256 is not the expected 00000000"):
        catalog.load_entry(bad)
    assert len(list((tmp_path / "cache").rglob("*.pth"))) == 1  # the refused download is not kept


def test_timm_entries_use_timms_own_eval_preprocessing():
    timm = pytest.importorskip("timm")
    checked = []
    for entry in catalog.list_weights():
        if entry.card.get("source") != "timm":
            continue
        checked.append(entry.name)
        cfg = timm.models.get_pretrained_cfg(f"{entry.arch}.{entry.tag}")
        assert entry.preprocess.input_size == cfg.input_size[-1]
        assert entry.preprocess.resize_size == math.floor(cfg.input_size[-1] / cfg.crop_pct)
        assert entry.preprocess.interpolation == cfg.interpolation
        assert entry.preprocess.mean == cfg.mean and entry.preprocess.std == cfg.std
        assert entry.source.endswith(cfg.url.rsplit("/", 1)[-1])
    assert checked, "no catalog entry has card source 'timm': nothing was checked"


def test_a_trained_file_ships_in_fp16_and_gives_the_same_predictions(tmp_path, monkeypatch):
    """ship_weights: half the bytes, the same class names and preprocessing, and top-1 unchanged."""
    torch.manual_seed(0)
    model = create_model("resnet20").eval()
    trained = save_model(model, tmp_path / "run" / "model.safetensors", class_names=CIFAR10)
    folder = tmp_path / "weights"
    folder.mkdir()
    card = {"top1": 50.0, "recipe": "cifar10-fast", "command": "resnetkit train ..."}
    path = catalog.ship_weights(trained, tag="cifar10", card=card, directory=folder)
    assert path.name == "resnet20_cifar10.safetensors" and path.stat().st_size < 0.55 * trained.stat().st_size
    monkeypatch.setattr(catalog, "WEIGHTS_DIR", folder)
    shipped, info = load_model("resnet20_cifar10")
    assert info.class_names == CIFAR10 and catalog.get_weights("resnet20_cifar10").card == card
    x = torch.randn(64, 3, 32, 32)
    with torch.no_grad():
        assert next(shipped.parameters()).dtype == torch.float32
        assert torch.equal(shipped(x).argmax(1), model(x).argmax(1))
        assert torch.allclose(shipped(x), model(x), atol=1e-2, rtol=1e-2)


def test_a_damaged_model_card_is_named_and_the_other_models_still_load(shipped, capsys):
    model, path = shipped
    (path.parent / "resnet56_cifar10.json").write_text('{"arch": "resnet56", "tag": ')  # cut short
    with pytest.warns(UserWarning, match=r"resnet56_cifar10\.json: a damaged model card .*reinstall resnetkit"):
        predictor = load_predictor("resnet20_cifar10", device="cpu")
    assert predictor.class_names == CIFAR10
    (path.parent / "resnet56_cifar10.json").write_text('{"arch": "resnet56"}')  # no tag
    with pytest.warns(UserWarning, match=r"KeyError: 'tag'"):
        assert [e.name for e in catalog.list_weights() if e.shipped] == ["resnet20_cifar10"]
    # Valid JSON of the wrong types: the listing crashed on them (format code 'f' for a str, list.get, int.lower).
    good = {"arch": "resnet56", "tag": "cifar10", "sha256": "a" * 64, "card": {"top1": 90.0}}
    for damage, said in (({"card": {"top1": "93"}}, "card.top1 is '93'"), ({"card": []}, "card is a list"),
                         ({"arch": ["resnet56"]}, "arch is a list"), ({"sha256": 7}, "sha256 is a int"),
                         ({"sha256": "abc"}, "sha256 is not 64 hex digits")):
        (path.parent / "resnet56_cifar10.json").write_text(json.dumps({**good, **damage}))
        with pytest.warns(UserWarning, match=re.escape(said)):
            assert [e.name for e in catalog.list_weights() if e.shipped] == ["resnet20_cifar10"]
        capsys.readouterr()
        assert main(["models", "--pretrained"]) == 0
        shown = capsys.readouterr()
        assert "resnet20_cifar10" in shown.out and "damaged model card" in shown.err
    (path.parent / "resnet56_cifar10.json").unlink()
    (path.parent / ".resnet56_cifar10.json.0a1b2c.tmp.json").write_text('{"arch": ')  # a card being written
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not read as a damaged card
        assert [e.name for e in catalog.list_weights() if e.shipped] == ["resnet20_cifar10"]


def test_an_input_size_given_alone_scales_the_resize_keeping_the_crop_fraction(shipped):
    """Before: --input-size 64 on a 32-px CIFAR model centre-cropped 64 px out of a 32-px image, three quarters
    of the input black padding."""
    assert load_predictor("resnet20_cifar10", preprocess={"input_size": 64}).preprocess.resize_size == 64
    from resnetkit.config import ModelInfo, Preprocess
    from resnetkit.models.pretrained import with_preprocess

    info = ModelInfo(model=create_model("resnet18").config, preprocess=Preprocess(input_size=224, resize_size=256))
    assert with_preprocess(info, {"input_size": 448}).preprocess.resize_size == 512
    assert with_preprocess(info, {"input_size": 448, "resize_size": 448}).preprocess.resize_size == 448  # as given
