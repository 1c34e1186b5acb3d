"""``resnetkit calibrate``: temperature scaling, fitted on some held-out images, measured on the others, written
into the model's classifier so every consumer of the file gets calibrated probabilities."""

from __future__ import annotations

import math

import pytest
import torch

from resnetkit.evaluate.calibrate import apply_temperature, fit_temperature, nll

from test_evaluate_protocols import _model_and_folder


def _overconfident(true_temperature: float, n: int = 20000, classes: int = 5):
    """Logits whose softmax is calibrated by construction (labels drawn from it), then sharpened by 1/T."""
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(n, classes, generator=g) * 2
    labels = torch.multinomial(logits.softmax(1), 1, generator=g)[:, 0]
    return logits * true_temperature, labels


@pytest.mark.parametrize("true_temperature", [0.5, 1.0, 2.5])
def test_the_fitted_temperature_undoes_a_known_miscalibration(true_temperature):
    logits, labels = _overconfident(true_temperature)
    fitted = fit_temperature(logits, labels)
    assert fitted == pytest.approx(true_temperature, rel=0.05)
    best = nll(logits, labels, fitted)
    assert best <= nll(logits, labels, fitted * 1.02) and best <= nll(logits, labels, fitted / 1.02)
    # log-softmax outputs (the protocols' answers) give the same T: a constant per row changes nothing
    assert fit_temperature(logits.log_softmax(1), labels) == pytest.approx(fitted, rel=1e-6)


def test_applying_the_temperature_divides_the_logits_and_keeps_every_prediction():
    from resnetkit import create_model

    model = create_model("resnet20", num_classes=10).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
        apply_temperature(model, 2.0)
        after = model(x)
    assert torch.allclose(after, before / 2.0, atol=1e-5)
    assert torch.equal(after.argmax(1), before.argmax(1))


def test_calibrate_cli_writes_a_model_whose_logits_are_divided_by_the_reported_temperature(tmp_path, capsys):
    from resnetkit import load_model
    from resnetkit.cli import main

    model, files = _model_and_folder(tmp_path)
    out = tmp_path / "cal.safetensors"
    argv = ["calibrate", str(tmp_path / "m.safetensors"), str(tmp_path / "data"), "--out", str(out), "--device", "cpu",
            "--workers", "0", "--check-fraction", "0.5"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "fitted on 2 images" in printed and "on the 2 other images" in printed
    calibrated, info = load_model(out)
    temperature = info.extra["temperature"]
    assert f"temperature {temperature:.4f}" in printed and info.extra["calibration"]["fit_images"] == 2
    assert info.class_names == ["a", "b"] and math.isfinite(temperature) and temperature > 0
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(calibrated(x), model(x) / temperature, atol=1e-4)
    # Calibrated again: the card keeps the product of both temperatures, which its weights now carry.
    assert main(argv[:1] + [str(out)] + argv[2:4] + [str(tmp_path / "twice.safetensors")] + argv[5:]) == 0
    again = load_model(tmp_path / "twice.safetensors")[1].extra
    assert again["temperature"] == pytest.approx(temperature * again["calibration"]["temperature"])


def test_calibrate_refuses_to_write_over_its_model_and_names_bad_settings(tmp_path, capsys, monkeypatch):
    from resnetkit.cli import main
    from resnetkit.config import CalibrateConfig

    _model_and_folder(tmp_path)
    model = tmp_path / "m.safetensors"
    size = model.stat().st_size
    assert main(["calibrate", str(model), str(tmp_path / "data"), "--out", str(model), "--workers", "0"]) == 2
    assert "is the model being calibrated" in capsys.readouterr().err and model.stat().st_size == size
    # Any other existing file (an image of the data, notes) is never replaced; a name without .safetensors refused.
    image = next((tmp_path / "data").rglob("*.png"))
    kept = image.read_bytes()
    for out, said in ((image, "the calibrated model is a .safetensors model file"),
                      (tmp_path / "notes.safetensors", "exists and is not a resnetkit model file")):
        (tmp_path / "notes.safetensors").write_text("notes")
        assert main(["calibrate", str(model), str(tmp_path / "data"), "--out", str(out), "--workers", "0"]) == 2
        assert said in capsys.readouterr().err
    assert image.read_bytes() == kept and (tmp_path / "notes.safetensors").read_text() == "notes"
    # The shipped network's own file, named by its path while the model is given by name.
    from resnetkit.models.pretrained import get_weights

    shipped = get_weights("resnet20_cifar10").local_path()
    assert main(["calibrate", "resnet20_cifar10", "digits", "--out", str(shipped)]) == 2
    assert "is the model being calibrated" in capsys.readouterr().err
    # A downloaded catalog network's cached copy, named by its path while the model is given by name.
    from resnetkit.models import pretrained as catalog
    from resnetkit.models.weights import resolve_weight_path

    monkeypatch.setenv("RESNETKIT_CACHE", str(tmp_path / "cache"))
    entry = catalog.WeightEntry("resnet20_mine", "resnet20", "mine", model.as_uri(), catalog.file_sha256(model), {},
                                None, "")
    monkeypatch.setattr(catalog, "_BUILTIN", [*catalog._BUILTIN, entry])
    cached = resolve_weight_path("resnet20_mine")
    assert cached.parent.parent == tmp_path / "cache" and cached.read_bytes() == model.read_bytes()
    assert main(["calibrate", "resnet20_mine", "digits", "--out", str(cached)]) == 2
    assert "is the model being calibrated" in capsys.readouterr().err and cached.read_bytes() == model.read_bytes()
    with pytest.raises(ValueError, match="--out"):
        CalibrateConfig(model="m", data="d")
    with pytest.raises(ValueError, match="check_fraction"):
        CalibrateConfig(model="m", data="d", out="o", check_fraction=0.95)
    # the shipped model records 5,000 held-out images, more than the digits have: the message says where it came from
    assert main(["calibrate", "resnet20_cifar10", "digits", "--out", str(tmp_path / "c.safetensors")]) == 2
    assert "the 5000 is recorded in resnet20_cifar10" in capsys.readouterr().err


def test_no_temperature_fits_images_that_are_all_right_with_a_margin():
    """The likelihood keeps rising as T goes to 0: refused, instead of a T at the end of the search range."""
    logits = torch.tensor([[3.0, 0.0], [0.0, 2.0], [4.0, 1.0]])
    with pytest.raises(ValueError, match="no temperature fits these 3 images"):
        fit_temperature(logits, torch.tensor([0, 1, 0]))


def test_outputs_that_are_not_finite_are_left_out_and_reported(tmp_path, capsys, monkeypatch):
    """One NaN row among the outputs: T is fitted on the others (a NaN would have sent the search to the end of its
    range), and the command says how many it left out."""
    from resnetkit.cli import main
    from resnetkit.evaluate import calibrate

    _model_and_folder(tmp_path)
    logits, labels = _overconfident(2.0, n=2000, classes=2)
    logits[7] = float("nan")
    monkeypatch.setattr(calibrate, "protocol_log_probs", lambda *a, **k: iter([(logits, labels)]))
    out = tmp_path / "cal.safetensors"
    assert main(["calibrate", str(tmp_path / "m.safetensors"), str(tmp_path / "data"), "--out", str(out),
                 "--device", "cpu", "--workers", "0", "--check-fraction", "0"]) == 0
    captured = capsys.readouterr()
    assert "fitted on 1999 images" in captured.out and "1 image(s) gave NaN or infinite outputs" in captured.err
    from resnetkit import load_model

    assert load_model(out)[1].extra["temperature"] == pytest.approx(2.0, rel=0.1)


def test_a_model_without_a_classifier_is_refused_before_any_image_is_run(tmp_path, capsys, monkeypatch):
    from resnetkit import create_model, save_model
    from resnetkit.cli import main
    from resnetkit.config import ModelInfo
    from resnetkit.evaluate import calibrate

    _model_and_folder(tmp_path)
    headless = create_model("resnet20", num_classes=0)
    save_model(headless, tmp_path / "features.safetensors")
    monkeypatch.setattr(calibrate, "protocol_log_probs", lambda *a, **k: pytest.fail("images were run"))
    assert main(["calibrate", str(tmp_path / "features.safetensors"), str(tmp_path / "data"), "--out",
                 str(tmp_path / "o.safetensors"), "--workers", "0"]) == 2
    assert "no classifier (fc) to calibrate" in capsys.readouterr().err
    for recorded in ("x", [1], float("nan"), True):  # a crafted or damaged card: named, not float()'s own error
        model = create_model("resnet20", num_classes=2)
        save_model(model, tmp_path / "odd.safetensors", info=ModelInfo(
            model=model.config, class_names=["a", "b"], extra={"temperature": recorded}))
        assert main(["calibrate", str(tmp_path / "odd.safetensors"), str(tmp_path / "data"), "--out",
                     str(tmp_path / "o.safetensors"), "--workers", "0"]) == 2
        assert "odd.safetensors: its card records temperature" in capsys.readouterr().err


def test_a_check_share_too_small_for_the_classes_is_refused_with_what_to_do(tmp_path, capsys):
    from resnetkit.cli import main

    _model_and_folder(tmp_path)
    assert main(["calibrate", str(tmp_path / "m.safetensors"), str(tmp_path / "data"), "--out",
                 str(tmp_path / "o.safetensors"), "--workers", "0", "--device", "cpu", "--check-fraction", "0.1"]) == 2
    err = capsys.readouterr().err
    assert "--check-fraction 0.1 of 4 images" in err and "--check-fraction 0" in err
