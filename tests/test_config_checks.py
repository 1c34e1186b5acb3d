"""Config-level checks: the Python API and every command refuse nonsense numbers before any work, naming them."""

from __future__ import annotations

import math

import pytest

from resnetkit.config import (MAX_IMAGE_SIDE, EvalConfig, ExportConfig, ModelInfo, Preprocess, PruneConfig,
                              TrainConfig)


@pytest.mark.parametrize("settings, shown", [
    ({"epochs": 0}, "epochs=0"), ({"epochs": math.nan}, "epochs=nan"), ({"epochs": math.inf}, "epochs=inf"),
    ({"epochs": -2}, "epochs=-2"), ({"iterations": -1}, "iterations=-1"), ({"batch_size": 0}, "batch_size=0"),
    ({"accumulate": 0}, "accumulate=0"), ({"workers": -1}, "workers=-1"), ({"lr": math.nan}, "lr=nan"),
    ({"image_size": MAX_IMAGE_SIDE + 1}, f"image_size={MAX_IMAGE_SIDE + 1}"),
    ({"mean": (math.nan,) * 3, "std": (1.0,) * 3}, "mean=[nan, nan, nan]"),
])
def test_train_config_refuses_nonsense_numbers(settings, shown):
    with pytest.raises(ValueError, match=f"^{shown.replace('[', '.')}"):
        TrainConfig.from_flat(settings)


def test_zero_iterations_still_means_the_length_is_in_epochs():
    assert TrainConfig.from_flat({"iterations": 0, "epochs": 3}).schedule.epochs == 3


@pytest.mark.parametrize("make, shown", [
    (lambda: EvalConfig(batch_size=0), "batch_size=0"), (lambda: EvalConfig(workers=-1), "workers=-1"),
    (lambda: EvalConfig(protocol="multiscale", scales=(224, 0)), "scales=0"),
    (lambda: EvalConfig(protocol="multiscale", scales=(-5,)), "scales=-5"),
    (lambda: ExportConfig(limit=0), "limit=0"),
    (lambda: PruneConfig(fine_tune_epochs=math.nan), "fine_tune_epochs=nan"),
    (lambda: PruneConfig(fine_tune_epochs=math.inf), "fine_tune_epochs=inf"),
    (lambda: PruneConfig(fine_tune_epochs=-1), "fine_tune_epochs=-1"),
])
def test_task_configs_refuse_nonsense_numbers(make, shown):
    with pytest.raises(ValueError, match=f"^{shown}"):
        make()


@pytest.mark.parametrize("fields, shown", [
    ({"std": (0.0, 0.0, 0.0)}, r"std=\[0, 0, 0\]"), ({"std": (-1.0, 1.0, 1.0)}, r"std=\[-1, 1, 1\]"),
    ({"mean": (math.nan,) * 3}, r"mean=\[nan, nan, nan\]"), ({"std": (math.inf,) * 3}, r"std=\[inf, inf, inf\]"),
    ({"mean": "abc"}, "mean='abc'"), ({"input_size": 0}, "input_size=0"), ({"resize_size": 20000}, "resize_size=20000"),
    ({"input_size": 32.5}, "input_size=32.5"),
])
def test_preprocess_refuses_what_would_give_nan_predictions_or_exhaust_memory(fields, shown):
    with pytest.raises(ValueError, match=shown):
        Preprocess(**fields)
    # A model file's metadata goes through the same check (the loader adds the file's name).
    data = {"model": {"arch": "resnet20"}, "preprocess": {**Preprocess().to_dict(), **fields}}
    with pytest.raises(ValueError, match=shown):
        ModelInfo.from_dict(data)


def test_the_image_side_cap_admits_every_real_size():
    assert Preprocess(input_size=MAX_IMAGE_SIDE, resize_size=MAX_IMAGE_SIDE).input_size == MAX_IMAGE_SIDE
    assert Preprocess(input_size=16, resize_size=16, mean=(0.5,) * 3, std=(1.0,) * 3).std == (1.0,) * 3
