"""End to end: `resnetkit demo`, `resnetkit train` with recipe overrides, `resnetkit eval` on the result."""

from __future__ import annotations

import json
import os
import re

import pytest
import torch

from resnetkit.cli import main
from resnetkit.config import load_train_config
from resnetkit.device import cpu_bf16_is_faster, describe_machine
from resnetkit.models import load_model


def test_demo_reaches_97_percent_and_writes_model_curves_and_report(tmp_path, capsys):
    assert main(["demo", "--out-dir", str(tmp_path), "--no-progress"]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["top1"] >= 0.97 and report["images"] == 360
    assert "top1_with_flip_tta" not in report  # digits are not trained mirrored: a mirror is no fair view
    assert report["machine"] == describe_machine() and f"{os.cpu_count()} cores" in report["machine"]
    # The recipe says "auto": the report records what it became on this machine, the measured faster one.
    assert report["precision"] == ("bf16" if cpu_bf16_is_faster() else "none")
    assert {"report.md", "model.safetensors", "metrics.csv", "curves.png", "confusion.png"} <= {
        p.name for p in tmp_path.iterdir()}
    model, info = load_model(tmp_path / "model.safetensors")
    assert info.class_names == [str(d) for d in range(10)] and info.preprocess.input_size == 16
    # The model file's own preprocessing reproduces the accuracy the run measured.
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "model.safetensors"), "digits", "--out-dir", str(tmp_path / "eval")]) == 0
    assert f"top-1 {100 * report['top1']:.2f}%" in capsys.readouterr().out


def test_train_recipe_with_overrides_and_resume(tmp_path):
    args = ["train", "--recipe", "demo", "--out-dir", str(tmp_path), "--no-progress",
            "--model", "resnet20", "--shortcut", "B", "--milestones", "0.5", "--schedule", "step"]
    assert main(args + ["--epochs", "2"]) == 0
    config = json.loads((tmp_path / "config.json").read_text())
    # The run records its config in sections (schedule, model ...), with the flags' values.
    assert config["schedule"]["epochs"] == 2 and config["model"]["shortcut"] == "B"
    assert config["schedule"]["milestones"] == [0.5]
    assert main(args + ["--epochs", "3", "--resume"]) == 0
    rows = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in rows] == [1, 2, 3]


def test_a_killed_cli_run_resumed_ends_with_the_same_weights_as_an_uninterrupted_one(tmp_path, monkeypatch):
    # The real path: in-memory data, batch-wise augmentation, bf16, channels_last, EMA, one-cycle, eval every epoch;
    # torchvision's TrivialAugment and stochastic depth draw from the global RNG, which the checkpoint restores.
    from safetensors.torch import load_file

    from resnetkit.data.loader import InMemoryLoader

    common = ["train", "--recipe", "demo", "--no-progress", "--ema-decay", "0.9", "--epochs", "3",
              "--auto-augment", "trivialaugment", "--drop-path-rate", "0.1"]
    assert main(common + ["--out-dir", str(tmp_path / "full")]) == 0
    real_iter = InMemoryLoader.__iter__

    def killed_in_the_second_epoch(self):
        for i, batch in enumerate(real_iter(self)):
            if self.epoch == 2 and i == 3 and self.augment is not None:  # ``epoch`` has advanced already
                raise KeyboardInterrupt
            yield batch

    monkeypatch.setattr(InMemoryLoader, "__iter__", killed_in_the_second_epoch)
    assert main(common + ["--out-dir", str(tmp_path / "cut")]) == 130  # Ctrl-C: one line and status 130, the checkpoint kept
    monkeypatch.setattr(InMemoryLoader, "__iter__", real_iter)
    assert main(common + ["--out-dir", str(tmp_path / "cut"), "--resume"]) == 0
    assert [json.loads(r)["epoch"] for r in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    full, cut = (load_file(tmp_path / d / "model.safetensors") for d in ("full", "cut"))
    assert full.keys() == cut.keys() and all(torch.equal(full[k], cut[k]) for k in full)


def test_recipes_load_and_unknown_fields_fail_clearly():
    paper = load_train_config("cifar10-paper")
    assert paper.schedule.iterations == 64000 and paper.schedule.milestones == (32000, 48000)
    assert paper.optim.weight_decay == 1e-4
    assert load_train_config("cifar10-fast", epochs=3).schedule.epochs == 3
    for name in ("imagenet-paper", "finetune", "demo"):
        load_train_config(name)
    imagenet = load_train_config("imagenet-paper")  # section 3.4
    assert (imagenet.schedule.iterations, imagenet.optim.batch_size, imagenet.optim.lr, imagenet.optim.weight_decay) \
        == (600000, 256, 0.1, 1e-4)
    assert (imagenet.augment.policy, imagenet.augment.lighting, imagenet.schedule.name, imagenet.schedule.gamma) == \
        ("scale", 0.1, "plateau", 0.1)
    with pytest.raises(ValueError, match="unknown train config field.*'epoch'"):
        load_train_config("demo", epoch=3)
    with pytest.raises(ValueError, match="unknown recipe 'cifar11'"):
        load_train_config("cifar11")


def test_a_new_run_never_overwrites_an_earlier_one(tmp_path, capsys):
    args = ["train", "--recipe", "demo", "--epochs", "1", "--out-dir", str(tmp_path), "--no-progress"]
    assert main(args) == 0
    before = (tmp_path / "checkpoint.pt").read_bytes()
    capsys.readouterr()
    assert main(args) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (tmp_path / "checkpoint.pt").read_bytes() == before
    # Resuming with a different recipe is refused too; only the length of the run may change.
    assert main(args + ["--resume", "--lr", "0.5"]) == 2
    assert "lr: 0.1 -> 0.5" in capsys.readouterr().err
    assert (tmp_path / "checkpoint.pt").read_bytes() == before


def test_a_diverging_run_stops_with_a_message_not_a_traceback(tmp_path, capsys):
    # (that the last good checkpoint survives is tested on the Trainer, test_train_loop.py)
    args = ["train", "--recipe", "demo", "--out-dir", str(tmp_path), "--no-progress", "--epochs", "1"]
    assert main(args + ["--lr", "1e30"]) == 1
    assert "the loss became NaN or infinite in epoch 1" in capsys.readouterr().err


def test_settings_that_would_be_silently_ignored_or_peek_at_the_test_set_are_refused(tmp_path, capsys):
    args = ["train", "--recipe", "demo", "--out-dir", str(tmp_path), "--no-progress", "--epochs", "1"]
    assert main(args + ["--lighting", "0.1"]) == 2
    assert "lighting=0.1" in capsys.readouterr().err  # PCA lighting is for the large-image augments only
    assert main(args + ["--schedule", "plateau"]) == 2  # the demo has no --val-split: val would be the test split
    assert "add --val-split N" in capsys.readouterr().err
    assert main(args + ["--schedule", "plateau", "--val-split", "200"]) == 0


def test_too_little_data_for_one_step_is_a_clear_error(tmp_path, capsys):
    assert main(["train", "--recipe", "demo", "--batch-size", "1024", "--accumulate", "2",
                 "--out-dir", str(tmp_path), "--no-progress"]) == 2
    assert "fewer than accumulate=2" in capsys.readouterr().err


def test_eval_uses_the_test_split_of_a_tree(tmp_path, capsys):
    from PIL import Image

    from resnetkit import create_model, save_model

    names = ["dark", "light"]
    for split, count in (("train", 3), ("test", 2)):
        for label, name in enumerate(names):
            folder = tmp_path / "data" / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (16, 16), (255 * label,) * 3).save(folder / f"{i}.png")
    save_model(create_model("resnet20", num_classes=2), tmp_path / "m.safetensors", class_names=names)
    assert main(["eval", str(tmp_path / "m.safetensors"), str(tmp_path / "data"),
                 "--out-dir", str(tmp_path / "eval")]) == 0
    assert "on 4 images" in capsys.readouterr().out  # the 4 test images, not the 6 training ones
    assert json.loads((tmp_path / "eval" / "report.json").read_text())["config"]["split"] == "test"


def _large_image_tree(root, splits):
    """Images of mixed sizes (larger than the 32-pixel input) under root/<split>/<class>/."""
    from PIL import Image

    for split, classes in splits.items():
        for label, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(6):
                Image.new("RGB", (48 + 8 * i, 40), (200 * label, 60, 255 - 200 * label)).save(folder / f"{i}.jpg")


def test_large_image_training_reads_files_with_workers_and_measures_the_val_folder(tmp_path, capsys):
    _large_image_tree(tmp_path / "data", {"train": ["blue", "red"], "val": ["blue", "red"]})
    args = ["train", "--recipe", "finetune", "--data", str(tmp_path / "data"), "--model", "resnet20",
            "--pretrained", "", "--augment", "rrc", "--image-size", "32", "--epochs", "1", "--batch-size", "4",
            "--workers", "1", "--out-dir", str(tmp_path / "run"), "--no-progress"]
    assert main(args) == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["images"] == 12  # the 12 validation-folder images
    _, info = load_model(tmp_path / "run" / "model.safetensors")
    assert info.class_names == ["blue", "red"] and info.preprocess.input_size == 32


def test_imagenet_paper_recipe_trains_end_to_end_with_scale_augmentation_lighting_and_plateau(tmp_path, capsys):
    # Section 3.4's recipe on a tiny tree, scaled down: 32-pixel crops (shorter side in [37, 69]), a CIFAR net.
    _large_image_tree(tmp_path / "data", {"train": ["blue", "red"], "val": ["blue", "red"]})
    args = ["train", "--recipe", "imagenet-paper", "--data", str(tmp_path / "data"), "--model", "resnet20",
            "--image-size", "32", "--iterations", "6", "--batch-size", "4", "--workers", "1",
            "--out-dir", str(tmp_path / "run"), "--no-progress"]
    assert main(args) == 0, capsys.readouterr().err
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (config["augment"]["policy"], config["augment"]["lighting"], config["schedule"]["name"]) == \
        ("scale", 0.1, "plateau")
    rows = [json.loads(r) for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] + 3 == 6 and all("val_top1" in r for r in rows)  # 3 steps an epoch, evaluated each
    assert json.loads((tmp_path / "run" / "report.json").read_text())["images"] == 12


def test_auto_augment_keeps_small_images_in_memory_and_reads_photos_with_workers(tmp_path):
    from PIL import Image

    from resnetkit.config import TrainConfig
    from resnetkit.train.data import resolve_augment

    for label, name in enumerate(["blue", "red"]):
        for folder, size in (("icons", (32, 32)), ("photos", (96, 72))):  # 64 pixels a side is the line
            (tmp_path / folder / name).mkdir(parents=True)
            for i in range(4):
                Image.new("RGB", size, (200 * label, 60, 20 * i)).save(tmp_path / folder / name / f"{i}.jpg")
    picked = {data: resolve_augment(TrainConfig.from_flat({"data": data})) for data in
              ("digits", "cifar10", str(tmp_path / "icons"), str(tmp_path / "photos"))}
    assert list(picked.values()) == ["pad-crop", "pad-crop-flip", "pad-crop-flip", "rrc"]
    assert resolve_augment(TrainConfig.from_flat({"data": str(tmp_path / "photos"), "augment": "scale"})) == "scale"
    # A fine-tune on a folder of photos goes the large-image way and records what "auto" chose.
    assert main(["train", "--recipe", "finetune", "--data", str(tmp_path / "photos"), "--image-size", "32",
                 "--epochs", "1", "--batch-size", "4", "--workers", "0", "--out-dir", str(tmp_path / "run"),
                 "--no-progress"]) == 0
    assert json.loads((tmp_path / "run" / "config.json").read_text())["augment"]["policy"] == "rrc"
    _, info = load_model(tmp_path / "run" / "model.safetensors")
    assert info.preprocess.input_size == 32 and info.preprocess.resize_size == round(32 * 256 / 224)


def test_large_image_val_folder_with_a_class_training_lacks_is_a_clear_error(tmp_path, capsys):
    _large_image_tree(tmp_path / "data", {"train": ["blue", "red"], "val": ["blue", "green"]})
    assert main(["train", "--recipe", "finetune", "--data", str(tmp_path / "data"), "--model", "resnet20",
                 "--pretrained", "", "--augment", "rrc", "--image-size", "32", "--epochs", "1",
                 "--workers", "0", "--out-dir", str(tmp_path / "run"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "its validation folder has class(es) the training split lacks: ['green'] (training: blue, red)" in err
    # a validation folder that lacks a training class (red) is relabelled by name: it trains
    _large_image_tree(tmp_path / "subset", {"train": ["blue", "red"], "val": ["blue"]})
    assert main(["train", "--recipe", "finetune", "--data", str(tmp_path / "subset"), "--model", "resnet20",
                 "--pretrained", "", "--augment", "rrc", "--image-size", "32", "--epochs", "1", "--batch-size", "4",
                 "--workers", "0", "--out-dir", str(tmp_path / "run2"), "--no-progress"]) == 0
    assert json.loads((tmp_path / "run2" / "report.json").read_text())["images"] == 6  # the blue validation images


def test_train_config_keeps_the_architectures_defaults_unless_told():
    from resnetkit.config import TrainConfig
    from resnetkit.train.run import build_model_for

    wide = build_model_for(TrainConfig.from_flat({"model": "wide_resnet28_10"}), num_classes=10).config
    assert (wide.width, wide.variant) == (10.0, "v2")
    narrow = build_model_for(TrainConfig.from_flat({"model": "wide_resnet28_10", "width": 2.0}), num_classes=100).config
    assert (narrow.width, narrow.num_classes) == (2.0, 100)
    r20 = build_model_for(TrainConfig.from_flat({"model": "resnet20", "shortcut": "B"}), num_classes=10).config
    assert (r20.width, r20.shortcut, r20.variant) == (1.0, "B", "v1")


def test_eval_val_split_measures_exactly_the_images_training_held_out(tmp_path, capsys):
    import torch
    from PIL import Image

    torch.manual_seed(0)
    for label, name in enumerate(["dark", "light"]):
        folder = tmp_path / "data" / name
        folder.mkdir(parents=True)
        for i in range(12):
            pixels = (torch.rand(32, 32, 3) * 120 + 120 * label).to(torch.uint8).numpy()
            Image.fromarray(pixels).save(folder / f"{i}.png")
    assert main(["train", "--recipe", "cifar10-fast", "--data", str(tmp_path / "data"), "--val-split", "6",
                 "--seed", "3", "--epochs", "1", "--batch-size", "6", "--amp", "none", "--eval-every", "1",
                 "--out-dir", str(tmp_path / "run"), "--no-progress"]) == 0
    trained = json.loads((tmp_path / "run" / "report.json").read_text())
    assert main(["eval", str(tmp_path / "run" / "model.safetensors"), str(tmp_path / "data"), "--val-split", "6",
                 "--seed", "3", "--workers", "0", "--out-dir", str(tmp_path / "eval")]) == 0
    measured = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert measured["images"] == trained["images"] == 6
    assert measured["top1"] == trained["top1"]
    assert measured["loss"] == pytest.approx(trained["loss"], abs=1e-4)
    assert "--val-split 6, seed 3" in measured["config"]["split"]
    # Without --seed, the seed the model file records (eval took 0, another split: mostly training images).
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "run" / "model.safetensors"), str(tmp_path / "data"), "--val-split", "6",
                 "--workers", "0", "--out-dir", str(tmp_path / "recorded")]) == 0
    recorded = json.loads((tmp_path / "recorded" / "report.json").read_text())
    assert "--val-split 6, seed 3" in recorded["config"]["split"] and recorded["top1"] == trained["top1"]
    assert "holds out other images" not in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "run" / "model.safetensors"), str(tmp_path / "data"), "--val-split", "6",
                 "--seed", "0", "--workers", "0", "--out-dir", str(tmp_path / "other")]) == 0
    assert re.search(r"--val-split 6 --seed 0 holds out other images.*give --val-split 6 --seed 3",
                     capsys.readouterr().err)
    # The training report also gives the flip-TTA figure (the recipe mirrors images), equal to eval's.
    assert main(["eval", str(tmp_path / "run" / "model.safetensors"), str(tmp_path / "data"), "--val-split", "6",
                 "--seed", "3", "--workers", "0", "--protocol", "flip", "--out-dir", str(tmp_path / "flip")]) == 0
    flipped = json.loads((tmp_path / "flip" / "report.json").read_text())
    assert trained["top1_with_flip_tta"] == round(flipped["top1"], 4)


def test_resume_compares_the_built_network_not_how_its_width_was_spelled(tmp_path, capsys):
    args = ["train", "--recipe", "demo", "--out-dir", str(tmp_path), "--no-progress"]
    assert main(args + ["--epochs", "1", "--width", "1"]) == 0  # as runs recorded width before it defaulted to 0
    assert main(args + ["--epochs", "2", "--resume"]) == 0  # the default width of resnet20 is 1: the same run
    assert main(args + ["--epochs", "3", "--resume", "--width", "2"]) == 2
    assert "width: 1.0 -> 2.0" in capsys.readouterr().err


def test_train_config_sections_round_trip_and_read_configs_written_before_them():
    """TrainConfig nests one ModelConfig and one DataConfig (no repeated fields, no ""/0 sentinels); runs and
    checkpoints written with the old flat form still load, and mean the same run."""
    from resnetkit.config import DataConfig, ModelConfig, TrainConfig
    from resnetkit.models import resolve_config

    config = load_train_config("cifar10-paper", model="resnet56", seed=3, val_split=5000)
    assert isinstance(config.model, ModelConfig) and isinstance(config.data, DataConfig)
    assert config.model.variant is None and resolve_config(config.model).variant == "v1"  # the architecture's
    assert config.data.seed == config.run.seed == 3  # the held-out split follows the run's seed
    nested = json.loads(json.dumps(config.to_dict()))
    assert set(nested) == {"data", "model", "augment", "optim", "schedule", "finetune", "run"}
    assert TrainConfig.from_dict(nested) == config
    flat_before_sections = {**config.to_flat(), "variant": "", "shortcut": "", "width": 0.0, "image_size": 0}
    assert TrainConfig.from_dict(flat_before_sections) == config
    assert config.with_flat(lr=0.05).optim.lr == 0.05 and config.optim.lr == 0.1  # frozen: a new config
    with pytest.raises(ValueError, match="unknown train config field.*'learning_rate'"):
        config.with_flat(learning_rate=0.05)


def test_ctrl_c_is_one_line_and_status_130(monkeypatch, capsys):
    import resnetkit.cli as cli

    def interrupted(args):
        raise KeyboardInterrupt

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    parser._subparsers._group_actions[0].choices["train"].set_defaults(func=interrupted)
    assert cli.main(["train"]) == 130
    err = capsys.readouterr().err
    assert err.strip() == ("resnetkit train: interrupted (a training run continues from its last checkpoint with "
                           "--resume)")
