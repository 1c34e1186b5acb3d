"""`resnetkit prune`: a trained model to half its MACs, fine-tuned by the training loop, measured and saved."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

pytest.importorskip("torch_pruning")

from resnetkit.cli import main  # noqa: E402
from resnetkit.models import count_macs, load_model  # noqa: E402
from resnetkit.train.checkpoint import load_checkpoint  # noqa: E402


@pytest.fixture(scope="module")
def digits_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits-run")
    assert main(["train", "--recipe", "demo", "--epochs", "6", "--amp", "none", "--out-dir", str(out),
                 "--no-progress"]) == 0
    return out / "model.safetensors", json.loads((out / "report.json").read_text())["top1"]


def test_prune_halves_the_macs_and_the_fine_tune_recovers_the_accuracy(digits_model, tmp_path, capsys):
    model_file, trained_top1 = digits_model
    out = tmp_path / "pruned"
    # No --val-split: the model file records that its training held nothing out, so the test split is measured.
    assert main(["prune", str(model_file), "digits", "--ratio", "0.5", "--recipe", "demo", "--fine-tune-epochs", "2",
                 "--lr", "0.05", "--amp", "none", "--distill", "0.5", "--out-dir", str(out), "--no-progress"]) == 0
    report = json.loads((out / "report.json").read_text())
    # Measured by eval's own code on the digits' test split: the same figure training reported.
    assert report["top1_before"] == pytest.approx(trained_top1, abs=0.003)
    assert report["macs_after"] <= 0.5 * report["macs_before"] and report["params_after"] < report["params_before"]
    assert report["top1_fine_tuned"] >= report["top1_before"] - 0.03  # the fine-tune recovers the accuracy
    # The pruned file is an ordinary model file: it loads, keeps its classes, and has the pruned MACs.
    pruned, info = load_model(out / "model.safetensors")
    original, original_info = load_model(model_file)
    assert info.class_names == original_info.class_names
    size = info.preprocess.input_size
    assert count_macs(pruned, size) == report["macs_after"] < count_macs(original, size)
    capsys.readouterr()
    assert main(["eval", str(out / "model.safetensors"), "digits", "--out-dir", str(tmp_path / "eval")]) == 0
    assert f"top-1 {100 * report['top1_fine_tuned']:.2f}%" in capsys.readouterr().out
    assert "pruned + fine-tune" in (out / "report.md").read_text()
    assert "top-1 on digits (test), single centre view" in (out / "report.md").read_text()
    tuned = load_checkpoint(out / "fine-tune" / "checkpoint.pt")["config"]  # the recipe's run, with what was given
    assert (tuned["run"]["amp"], tuned["optim"]["lr"], tuned["finetune"]["freeze_epochs"]) == ("none", 0.05, 0)
    assert (tuned["optim"]["teacher"], tuned["optim"]["distill_alpha"]) == (str(model_file), 0.5)  # it taught

    # A second run into the same folder would overwrite the pruned model: refused, with what to do.
    assert main(["prune", str(model_file), "digits", "--val-split", "0", "--out-dir", str(out),
                 "--fine-tune-epochs", "0"]) == 2
    assert "already holds a run's results (model.safetensors" in capsys.readouterr().err


def test_prune_refuses_what_cannot_work_before_measuring_anything(digits_model, tmp_path, capsys):
    model_file, _ = digits_model
    assert main(["prune", str(model_file), "digits", "--ratio", "1.5", "--out-dir", str(tmp_path / "a")]) == 2
    assert "ratio=1.5" in capsys.readouterr().err
    # A schedule in the recipe's own epochs cannot be stretched over a short fine-tune.
    assert main(["prune", str(model_file), "digits", "--recipe", "keras-cifar10", "--out-dir", str(tmp_path / "k"),
                 "--no-progress"]) == 2
    assert "milestones [80, 120, 160, 180]" in capsys.readouterr().err
    # Data with some of the model's classes: eval alone would accept it, the fine-tune would train other labels.
    other = tmp_path / "other"
    for name in ("0", "1"):
        (other / "train" / name).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (16, 16), (40 * i, 90, 200)).save(other / "train" / name / f"{i}.png")
    assert main(["prune", str(model_file), str(other), "--out-dir", str(tmp_path / "b"), "--val-split", "0",
                 "--no-progress"]) == 2
    assert "the model was trained on" in capsys.readouterr().err
    # A network whose blocks cannot be pruned (Keras' blocks, ResNeXt's grouped convolutions): said before the
    # unpruned evaluation, which ran first (minutes, hours on ImageNet) and left its folder.
    from resnetkit import create_model, save_model

    for arch in ("keras_cifar_resnet20v1",):
        other_file = save_model(create_model(arch, num_classes=10), tmp_path / f"{arch}.safetensors")
        assert main(["prune", str(other_file), "digits", "--out-dir", str(tmp_path / arch), "--val-split", "100",
                     "--no-progress"]) == 2
        assert "cannot prune" in capsys.readouterr().err
        assert not (tmp_path / arch).exists()
    for folder in ("a", "k", "b"):  # refused before the first evaluation: nothing written
        assert not (tmp_path / folder).exists()


def test_prune_refuses_bad_fine_tune_lengths_too_few_images_and_a_used_folder_before_any_work(digits_model, tmp_path,
                                                                                              capsys):
    model_file, _ = digits_model
    for epochs in ("nan", "inf", "-1"):  # nan trained nothing, inf failed after the pruning
        assert main(["prune", str(model_file), "digits", f"--fine-tune-epochs={epochs}",
                     "--out-dir", str(tmp_path / "e")]) == 2
        assert f"fine_tune_epochs={float(epochs)}" in capsys.readouterr().err
    # Fewer images than one of the recipe's batches: prune has no --batch-size, so the message names the recipe.
    few = tmp_path / "few"
    for name in map(str, range(10)):
        (few / name).mkdir(parents=True)
        Image.new("RGB", (16, 16), (20 * int(name), 90, 200)).save(few / name / "0.png")
    assert main(["prune", str(model_file), str(few), "--recipe", "demo", "--val-split", "0", "--no-progress",
                 "--out-dir", str(tmp_path / "f")]) == 2
    err = capsys.readouterr().err
    assert "recipe demo takes batches of 64 images" in err and "--batch-size" not in err
    # A killed earlier prune's fine-tune is kept: a new run is refused and told about --resume.
    (tmp_path / "used" / "fine-tune").mkdir(parents=True)
    (tmp_path / "used" / "fine-tune" / "checkpoint.pt").write_bytes(b"earlier")
    assert main(["prune", str(model_file), "digits", "--out-dir", str(tmp_path / "used")]) == 2
    assert "stopped before it finished (fine-tune/checkpoint.pt, no report.json): pass --resume" in \
        capsys.readouterr().err
    assert (tmp_path / "used" / "fine-tune" / "checkpoint.pt").read_bytes() == b"earlier"
    for folder in ("e", "f"):  # refused before the first evaluation: nothing written
        assert not (tmp_path / folder).exists()


def test_a_prune_stopped_in_its_fine_tune_resumes_to_the_same_model_and_refuses_other_settings(digits_model, tmp_path,
                                                                                                monkeypatch, capsys):
    from safetensors.torch import load_file

    from resnetkit.data.loader import InMemoryLoader

    model_file, _ = digits_model
    common = ["prune", str(model_file), "digits", "--recipe", "demo", "--fine-tune-epochs", "2", "--lr", "0.05",
              "--amp", "none", "--no-progress"]
    assert main(common + ["--out-dir", str(tmp_path / "full")]) == 0
    real_iter = InMemoryLoader.__iter__

    def killed_in_the_second_epoch(self):
        for i, batch in enumerate(real_iter(self)):
            if self.epoch == 2 and i == 2 and self.augment is not None:
                raise KeyboardInterrupt
            yield batch

    monkeypatch.setattr(InMemoryLoader, "__iter__", killed_in_the_second_epoch)
    assert main(common + ["--out-dir", str(tmp_path / "cut")]) == 130  # Ctrl-C: one line and status 130, the checkpoint kept
    checkpoint = tmp_path / "cut" / "fine-tune" / "checkpoint.pt"
    assert load_checkpoint(checkpoint)["epoch"] == 0  # the first epoch was kept
    kept = checkpoint.read_bytes()
    capsys.readouterr()
    # Other widths, another length or another lr: refused before anything is measured, the stopped fine-tune kept.
    for flags, said in ((["--ratio", "0.4"], "pruned with other settings (ratio: 0.5 -> 0.4)"),
                        (["--fine-tune-epochs", "3"], "pruned with other settings (fine_tune_epochs: 2.0 -> 3.0)"),
                        (["--lr", "0.1"], "was written by a different configuration (lr: 0.05 -> 0.1)"),
                        (["--fine-tune-epochs", "0"], "--fine-tune-epochs 0 would drop it")):
        assert main(common + ["--out-dir", str(tmp_path / "cut"), "--resume"] + flags) == 2
        assert said in capsys.readouterr().err
        assert checkpoint.read_bytes() == kept and not (tmp_path / "cut" / "report.json").exists()
    epochs_trained = []

    def recorded(self):
        if self.augment is not None:
            epochs_trained.append(self.epoch)
        yield from real_iter(self)

    monkeypatch.setattr(InMemoryLoader, "__iter__", recorded)
    assert main(common + ["--out-dir", str(tmp_path / "cut"), "--resume"]) == 0
    monkeypatch.setattr(InMemoryLoader, "__iter__", real_iter)
    assert epochs_trained == [1]  # (counted from 0) the second epoch alone was trained, not the first again
    full, cut = (load_file(tmp_path / d / "model.safetensors") for d in ("full", "cut"))
    assert full.keys() == cut.keys() and all(torch.equal(full[k], cut[k]) for k in full)
    reports = [json.loads((tmp_path / d / "report.json").read_text()) for d in ("full", "cut")]
    assert reports[0]["top1_fine_tuned"] == reports[1]["top1_fine_tuned"]
    # Finished: nothing left to resume.
    assert main(common + ["--out-dir", str(tmp_path / "cut"), "--resume"]) == 2
    assert "holds a finished pruning (report.json); nothing to resume" in capsys.readouterr().err
    assert main(common + ["--out-dir", str(tmp_path / "none"), "--resume"]) == 2
    assert "there is no fine-tune to continue" in capsys.readouterr().err
