"""`resnetkit lr-find`: the lr range test on the run's own training loop, and fastai's three suggestions."""

from __future__ import annotations

import json
import math

import pytest
import torch

from resnetkit.cli import main
from resnetkit.config import LRFindOptions
from resnetkit.train.lr_find import LRFindResult


def test_the_suggestions_read_the_curve_as_fastai_does():
    lrs = [10 ** (-6 + 0.1 * i) for i in range(61)]  # 1e-6 .. 1
    # Flat, then falling (fastest around 1e-3), lowest at 1e-2, then rising: the usual shape.
    losses = [2.3 - 1.5 / (1 + math.exp(-4 * (math.log10(lr) + 3))) + (0.5 * (math.log10(lr) + 2) ** 2 if lr > 1e-2
                                                                         else 0.0) for lr in lrs]
    result = LRFindResult(planned_steps=len(lrs), lrs=lrs, losses=losses, raw_losses=losses)
    found = result.suggestions()
    lowest = lrs[losses.index(min(losses))]
    assert found["minimum"] == pytest.approx(lowest / 10)
    assert found["steep"] == pytest.approx(1e-3, rel=0.3)  # the steepest fall per decade
    assert 1e-6 < found["valley"] < lowest  # inside the longest fall, before the bottom
    assert LRFindResult(lrs=[1e-3, 1e-2], losses=[1.0, 0.5]).suggestions() == {}  # too few points: no guess
    nan_tail = LRFindResult(lrs=lrs[:10] + [1.0], losses=losses[:10] + [math.nan])
    assert set(nan_tail.suggestions()) == {"valley", "steep", "minimum"}  # a non-finite last loss is left out
    # fastai reads the curve without its first tenth and its last 5 points: a dip there is no suggestion
    edges = LRFindResult(planned_steps=61, lrs=lrs, losses=[0.0] + losses[1:-1] + [0.0])
    assert edges.suggestions()["minimum"] == pytest.approx(lowest / 10)


def test_the_longest_fall_is_found_in_n_log_n_on_long_curves():
    from resnetkit.train.lr_find import _longest_fall

    assert _longest_fall([5, 1, 4, 3, 6, 2, 1]) in ((0, 6), (2, 6))  # 5 4 3 2 1 or 4 3 2 1 ... : length 5
    falling = [5, 4, 3, 2, 1]
    start, end = _longest_fall([9, 0] + falling)
    assert (start, end) == (0, 6)  # 9 5 4 3 2 1
    noisy = [math.sin(i / 7) - i / 1000 for i in range(100_000)]
    start, end = _longest_fall(noisy)  # quadratic would take minutes here
    assert 0 <= start < end < len(noisy)


def test_a_fine_tune_is_tested_at_the_stage_it_starts_with(resnet20_file, tmp_path):
    from resnetkit.config import load_train_config
    from resnetkit.train.finetune import first_stage

    plain, stage = first_stage(load_train_config("demo"), tmp_path)
    assert stage == "training" and plain == load_train_config("demo")
    two_stage = load_train_config("finetune", pretrained=str(resnet20_file), freeze_epochs=1, lr_mult=10.0)
    tested, stage = first_stage(two_stage, tmp_path)
    assert "head-only" in stage and tested.finetune.freeze_backbone and tested.finetune.freeze_bn
    assert tested.finetune.lr_mult == 1.0 and tested.data.mean == (0.4914, 0.4822, 0.4465)  # the start model's
    whole = load_train_config("finetune", pretrained=str(resnet20_file), freeze_epochs=0, lr_mult=10.0)
    tested, stage = first_stage(whole, tmp_path)
    assert stage == "the fine-tune of every layer" and tested.finetune.lr_mult == 10.0


def test_lr_find_on_the_digits_rises_exponentially_stops_when_the_loss_blows_up_and_writes_its_files(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["lr-find", "--recipe", "demo", "--out-dir", str(out), "--no-progress", "--start-lr", "1e-4",
                 "--end-lr", "1e4", "--steps", "40", "--amp", "none", "--accumulate", "2"]) == 0
    printed = capsys.readouterr().out
    assert "valley: lr" in printed and "steep: lr" in printed and "minimum: lr" in printed
    record = json.loads((out / "lr_find.json").read_text())
    lrs = record["lrs"]
    assert lrs[0] == pytest.approx(1e-4)
    ratio = (1e4 / 1e-4) ** (1 / 39)
    assert all(b / a == pytest.approx(ratio, rel=1e-6) for a, b in zip(lrs, lrs[1:]))  # exponential, step by step
    assert record["diverged"] and len(lrs) < 40  # an lr of 1e4 blows any network up: the test stops early
    assert all(1e-4 <= lr <= lrs[-1] for lr in record["suggestions"].values())
    assert record["suggestions"]["valley"] < lrs[-1]
    # The test trains nothing that stays: only its own files, no checkpoint, model file or logs.
    assert {p.name for p in out.iterdir()} <= {"lr_find.json", "lr_find.png"}


@pytest.mark.parametrize("settings, message", [
    ({"start_lr": 1.0, "end_lr": 0.1}, "end_lr=0.1 must be above start_lr=1"),
    ({"steps": 7}, "steps=7 must be a whole number from 10"),
    ({"start_lr": math.nan}, "start_lr=nan must be a finite number"),
    ({"end_lr": math.inf}, "end_lr=inf must be a finite number"),
])
def test_a_range_that_cannot_be_tested_is_refused_by_name(settings, message):
    with pytest.raises(ValueError, match=message):
        LRFindOptions(**settings)


def test_the_command_line_refuses_a_bad_range_in_one_line(tmp_path, capsys):
    assert main(["lr-find", "--recipe", "demo", "--out-dir", str(tmp_path), "--start-lr", "1", "--end-lr",
                 "0.5"]) == 2
    assert "end_lr=0.5 must be above start_lr=1" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_the_range_test_starts_as_the_training_run_does(tmp_path, monkeypatch):
    """The same seed, initial weights, augmentation policy (augment: auto) and first batch as `resnetkit train` of
    the same recipe: the curve's first point is the run's own first step."""
    from resnetkit.config import LRFindOptions, load_train_config
    from resnetkit.train import run as run_module
    from resnetkit.train.lr_find import find_lr
    from resnetkit.train.run import run_training

    starts: list[tuple[torch.Tensor, torch.Tensor]] = []
    build = run_module.build_model_for

    def recording(config, num_classes, class_names=None):
        model = build(config, num_classes, class_names)
        weights = model.conv1.weight.detach().clone()

        def first_step(module, args) -> None:
            starts.append((weights, args[0].detach().clone()))
            hook.remove()

        hook = model.register_forward_pre_hook(first_step)
        return model

    monkeypatch.setattr(run_module, "build_model_for", recording)
    config = load_train_config("demo", iterations=1, amp="none", out_dir=str(tmp_path / "run"), progress=False,
                               seed=7)
    run_training(config)
    find_lr(config.with_flat(out_dir=str(tmp_path / "lr")), LRFindOptions(steps=10))
    (trained_weights, trained_batch), (tested_weights, tested_batch) = starts
    assert torch.equal(trained_weights, tested_weights) and torch.equal(trained_batch, tested_batch)


def test_an_out_dir_that_is_a_file_is_said_before_the_test_or_the_batch_runs(tmp_path, capsys):
    from resnetkit.cli import main

    (tmp_path / "afile").write_text("keep")
    for command in (["lr-find", "--steps", "10"], ["show-batch"]):
        assert main([*command, "--data", "digits", "--out-dir", str(tmp_path / "afile")]) == 2
        assert "--out-dir" in capsys.readouterr().err and (tmp_path / "afile").read_text() == "keep"
