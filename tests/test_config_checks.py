"""Config-level checks: the Python API and every command refuse nonsense numbers before any work, naming them."""

from __future__ import annotations

import math
import re

import pytest

from resnetkit.config import (MAX_IMAGE_SIDE, EvalConfig, ExportConfig, ModelInfo, Preprocess, PruneConfig,
                              TrainConfig)


@pytest.mark.parametrize("settings, shown", [
    ({"epochs": 0}, "epochs=0"), ({"epochs": math.nan}, "epochs=nan"), ({"epochs": math.inf}, "epochs=inf"),
    ({"epochs": -2}, "epochs=-2"), ({"iterations": -1}, "iterations=-1"), ({"batch_size": 0}, "batch_size=0"),
    ({"accumulate": 0}, "accumulate=0"), ({"workers": -1}, "workers=-1"), ({"lr": math.nan}, "lr=nan"),
    ({"image_size": MAX_IMAGE_SIDE + 1}, f"image_size={MAX_IMAGE_SIDE + 1}"),
    ({"mean": (math.nan,) * 3, "std": (1.0,) * 3}, "mean=[nan, nan, nan]"),
    ({"momentum": "fast"}, "momentum='fast'"), ({"momentum": math.nan}, "momentum=nan"),
    ({"weight_decay": math.nan}, "weight_decay=nan"), ({"gamma": -1}, "gamma=-1"), ({"warmup": -5}, "warmup=-5"),
    ({"warmup": math.nan}, "warmup=nan"), ({"milestones": 0.5}, "milestones=0.5"),
    ({"milestones": (math.nan,)}, "milestones=nan"), ({"grad_clip": -1}, "grad_clip=-1"),
    ({"label_smoothing": math.nan}, "label_smoothing=nan"), ({"eps": 0}, "eps=0"), ({"seed": -1}, "seed=-1"),
    ({"seed": 10**23}, "seed=1"), ({"channels_last": "false"}, "channels_last='false'"),
    ({"lr_mult": math.nan}, "lr_mult=nan"), ({"decay_rate": 0}, "decay_rate=0"),
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
    ({"input_size": 32.5}, "input_size=32.5"), ({"std": (1e-300,) * 3}, r"std=\[1e-300, 1e-300, 1e-300\].*>= 0.001"),
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


def test_a_recipe_of_nested_aliases_is_refused_before_it_expands(tmp_path):
    from resnetkit.config import load_train_config

    bomb = tmp_path / "bomb.yaml"
    levels = ["a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    levels += [f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 10) + "]" for i in range(8)]
    bomb.write_text("\n".join(levels) + "\nmilestones: *i\n")  # 10^9 numbers once expanded, 400 bytes on disk
    with pytest.raises(ValueError, match="setting 'a' is not a value or a flat list|setting 'b' is not"):
        load_train_config(str(bomb))


@pytest.mark.parametrize("line, shown", [("data: [a, b]", "['a', 'b'] (YAML read a list)"),
                                         ("data: 2020-01-01", "datetime.date(2020, 1, 1) (YAML read a date)"),
                                         ("amp: no", "False (YAML read a bool)")])
def test_a_recipe_text_setting_that_yaml_reads_as_something_else_is_named(tmp_path, line, shown):
    """Before: 'expected str, bytes or os.PathLike object, not tuple', naming neither the file nor the setting."""
    from resnetkit.config import load_train_config

    (tmp_path / "r.yaml").write_text(line + "\n")
    with pytest.raises(ValueError, match=rf"r\.yaml: setting '{line.split(':')[0]}' is {re.escape(shown)}; it takes "
                                         "text: quote it"):
        load_train_config(str(tmp_path / "r.yaml"))


def test_a_pipe_given_as_recipe_or_data_is_refused_instead_of_blocking(tmp_path, monkeypatch):
    import os

    from resnetkit.config.train import recipe_path
    from resnetkit.data.source import resolve_source

    os.mkfifo(tmp_path / "r.yaml")
    os.mkfifo(tmp_path / "d.tar")
    with pytest.raises(ValueError, match="r.yaml is not a regular file"):
        recipe_path(str(tmp_path / "r.yaml"))
    # A folder named as a bundled recipe in the working folder (an earlier --out-dir demo) does not hide it.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "finetune").mkdir()
    (tmp_path / "demo").write_text("a file named demo")
    assert recipe_path("finetune").parent.name == "recipes" and recipe_path("demo").name == "demo.yaml"
    with pytest.raises(ValueError, match="finetune is not a regular file"):
        recipe_path("./finetune")
    with pytest.raises(ValueError, match="d.tar' is not a regular file or folder"):
        resolve_source(tmp_path / "d.tar")
