"""Bad input to `resnetkit train`: a clear one-line error that names the file or value, and nothing lost."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from resnetkit.cli import main
from resnetkit.config import load_train_config
from resnetkit.train.checkpoint import CheckpointError, load_training_checkpoint

QUICK = ["train", "--recipe", "demo", "--iterations", "2", "--no-progress"]


def test_a_finished_run_without_a_checkpoint_is_not_overwritten(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.safetensors").write_bytes(b"the earlier run's model")
    (run / "config.json").write_text("{}")
    assert main(QUICK + ["--out-dir", str(run)]) == 2
    err = capsys.readouterr().err
    assert f"{run} already holds a run's results (model.safetensors)" in err and "another --out-dir" in err
    # --resume has no checkpoint to continue here, nor in a mistyped folder: said, not a new run from the start.
    for folder in (run, tmp_path / "runn"):
        assert main(QUICK + ["--out-dir", str(folder), "--resume"]) == 2
        assert f"--resume: {folder / 'checkpoint.pt'} does not exist, so there is no run to continue" in \
            capsys.readouterr().err
    assert not (tmp_path / "runn").exists()
    assert (run / "model.safetensors").read_bytes() == b"the earlier run's model"
    assert (run / "config.json").read_text() == "{}"


@pytest.mark.parametrize("flags, shown", [(["--epochs", "0"], "epochs=0"), (["--epochs", "-3"], "epochs=-3"),
                                          (["--iterations", "-1"], "iterations=-1"),
                                          (["--batch-size", "0"], "batch_size=0"), (["--workers", "-1"], "workers=-1")])
def test_nonsense_lengths_and_sizes_are_refused_before_anything_is_written(tmp_path, capsys, flags, shown):
    assert main(["train", "--recipe", "demo", "--out-dir", str(tmp_path / "run"), "--no-progress", *flags]) == 2
    assert shown in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_refused_resume_leaves_the_runs_config_as_it_was(tmp_path, capsys):
    assert main(QUICK + ["--out-dir", str(tmp_path)]) == 0
    before = (tmp_path / "config.json").read_text()
    capsys.readouterr()
    assert main(QUICK + ["--out-dir", str(tmp_path), "--resume", "--lr", "0.5"]) == 2
    assert "lr: 0.1 -> 0.5" in capsys.readouterr().err
    assert (tmp_path / "config.json").read_text() == before
    assert json.loads(before)["optim"]["lr"] == 0.1


@pytest.mark.parametrize("kind", ["text", "pickle", "state dict"])
def test_a_checkpoint_resnetkit_did_not_write_is_refused_without_torchs_advice(tmp_path, capsys, kind):
    checkpoint = tmp_path / "checkpoint.pt"
    if kind == "text":
        checkpoint.write_text("not a checkpoint\n")
    elif kind == "pickle":  # would run os.system on an unsafe load
        import os

        class Evil:
            def __reduce__(self):
                return os.system, ("echo pwned",)

        torch.save({"x": Evil()}, checkpoint)
    else:
        torch.save(torch.nn.Linear(2, 2).state_dict(), checkpoint)
    assert main(QUICK + ["--out-dir", str(tmp_path), "--resume"]) == 2
    err = capsys.readouterr().err
    assert f"{checkpoint} is not a resnetkit checkpoint" in err and "another --out-dir" in err
    assert "weights_only" not in err and "\x1b" not in err and "Error:" not in err
    with pytest.raises(CheckpointError):
        load_training_checkpoint(checkpoint)
    assert not (tmp_path / "config.json").exists()


def _tamper_model(state):
    state["model"] = {k: v[:1] if v.dim() else v for k, v in state["model"].items()}  # another network's shapes


def _tamper_optimizer(state):
    state["optimizer"]["param_groups"] = []


def _tamper_rng(state):
    state["rng"] = {"torch": torch.zeros(3)}


def _tamper_step(state):
    state["step"] = "many"


ONE_EPOCH = ["train", "--recipe", "demo", "--epochs", "1", "--no-progress"]


@pytest.fixture(scope="module")
def one_epoch_run(tmp_path_factory):
    """A finished one-epoch run with its checkpoint, which a two-epoch run with --resume continues."""
    run = tmp_path_factory.mktemp("one-epoch") / "run"
    assert main(ONE_EPOCH + ["--out-dir", str(run)]) == 0
    return run


def _tamper_history(state):
    state["history"] = [{"step": 10}]  # rows without their epoch and losses: once "error: 'epoch'" at the report


def _tamper_history_values(state):
    state["history"][0]["train_loss"] = "low"  # once: an epoch trained, the model replaced, then a TypeError


def _tamper_hyperparameter(state):
    state["optimizer"]["param_groups"][0]["momentum"] = "fast"  # once: a TypeError at the first optimizer step


@pytest.mark.parametrize("tamper", [_tamper_model, _tamper_optimizer, _tamper_rng, _tamper_step, _tamper_history,
                                    _tamper_history_values, _tamper_hyperparameter],
                         ids=["model", "optimizer", "rng", "step", "history", "history-values", "hyperparameter"])
def test_a_checkpoint_with_crafted_parts_is_refused_naming_it_and_is_kept(tmp_path, capsys, one_epoch_run, tamper):
    """A file torch's safe loader accepts whose parts do not fit the run: one line naming it, the file untouched."""
    run = tmp_path / "run"
    shutil.copytree(one_epoch_run, run)
    checkpoint = run / "checkpoint.pt"
    state = torch.load(checkpoint, weights_only=True)
    tamper(state)
    torch.save(state, checkpoint)
    crafted = checkpoint.read_bytes()
    capsys.readouterr()
    assert main(ONE_EPOCH[:4] + ["2", "--no-progress", "--out-dir", str(run), "--resume"]) == 2
    err = capsys.readouterr().err
    assert str(checkpoint) in err and "another --out-dir" in err and "Traceback" not in err
    assert checkpoint.read_bytes() == crafted
    assert (run / "model.safetensors").read_bytes() == (one_epoch_run / "model.safetensors").read_bytes()


def test_a_checkpoint_cut_short_anywhere_is_named_as_such_and_kept(tmp_path, capsys, one_epoch_run):
    """A copy stopped part-way: some lengths made torch's mmap raise EINVAL, once a bare 'OSError: [Errno 22]'."""
    full = (one_epoch_run / "checkpoint.pt").read_bytes()
    for length in sorted({0, 100, 38_000, 50_000, len(full) // 2, len(full) - 1000}):
        run = tmp_path / f"cut{length}"
        shutil.copytree(one_epoch_run, run)
        (run / "checkpoint.pt").write_bytes(full[:length])
        capsys.readouterr()
        assert main(ONE_EPOCH[:4] + ["2", "--no-progress", "--out-dir", str(run), "--resume"]) == 2
        err = capsys.readouterr().err
        assert str(run / "checkpoint.pt") in err and "another --out-dir" in err and "Errno" not in err, (length, err)
        assert (run / "checkpoint.pt").read_bytes() == full[:length]


def test_a_folder_in_the_checkpoints_place_is_named(tmp_path, capsys):
    (tmp_path / "checkpoint.pt").mkdir()
    assert main(QUICK + ["--out-dir", str(tmp_path), "--resume"]) == 2
    assert f"{tmp_path / 'checkpoint.pt'} is not a file (a folder, pipe or device)" in capsys.readouterr().err


@pytest.mark.parametrize("text, expected", [("optim: [\n", r"bad\.yaml is not valid YAML \(.* at line 2, column 1\)"),
                                            ("- lr\n- 0.1\n", r"bad\.yaml holds a list, not a mapping of settings")])
def test_a_malformed_recipe_names_the_file(tmp_path, capsys, resnet20_file, text, expected):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(text)
    with pytest.raises(ValueError, match=expected):
        load_train_config(str(recipe))
    for command in (["train", "--recipe", str(recipe), "--out-dir", str(tmp_path / "run")],
                    ["prune", str(resnet20_file), "digits", "--method", "l1", "--recipe", str(recipe),
                     "--out-dir", str(tmp_path / "p")]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert str(recipe) in err and "--debug" not in err


def test_demo_run_again_writes_beside_the_first_run(tmp_path, monkeypatch, capsys):
    """The README's demo command, run twice, keeps the first run and writes the second to runs/demo-2."""
    from resnetkit.cli import main

    monkeypatch.chdir(tmp_path)
    for expected in ("runs/demo", "runs/demo-2"):
        assert main(["demo", "--iterations", "2", "--no-progress"]) == 0
        assert f"writing {expected}/" in capsys.readouterr().out
    assert (tmp_path / "runs" / "demo" / "model.safetensors").exists()
    assert (tmp_path / "runs" / "demo-2" / "model.safetensors").exists()


def test_training_refuses_one_class_an_emptied_class_and_an_out_dir_inside_the_data(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    from resnetkit.cli import main

    def folder(root, counts):
        for name, n in counts.items():
            (root / name).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(np.full((8, 8, 3), 30 * i, np.uint8)).save(root / name / f"{i}.png")
        return root

    common = ["--epochs", "1", "--batch-size", "2", "--amp", "none", "--no-progress", "--workers", "0"]
    one = folder(tmp_path / "one", {"cat": 6})
    assert main(["train", "--data", str(one), "--out-dir", str(tmp_path / "r1"), *common]) == 2
    assert "1 class(es) (cat); a classifier needs at least 2" in capsys.readouterr().err
    uneven = folder(tmp_path / "uneven", {"a": 5, "b": 1})  # 4 held out: 3.33 from a, 0.67 rounded up from b
    assert main(["train", "--data", str(uneven), "--val-split", "4", "--out-dir", str(tmp_path / "r2"), *common]) == 2
    assert "would leave class #1 (with 1 image(s)) nothing to train on" in capsys.readouterr().err
    assert main(["train", "--data", str(uneven), "--val-split", "5", "--out-dir", str(tmp_path / "r2"), *common]) == 2
    assert "choose 0 (no validation split) to at most 4, which leaves each of the 2 classes" in capsys.readouterr().err
    two = folder(tmp_path / "two", {"a": 4, "b": 4})
    assert main(["train", "--data", str(two), "--out-dir", str(two / "a" / "run"), *common]) == 2
    assert "is inside the data folder" in capsys.readouterr().err and not (two / "a" / "run").exists()
    # A class folder added after the run started: its resume names the changed classes, not a damaged checkpoint.
    assert main(["train", "--data", str(two), "--out-dir", str(tmp_path / "r3"), *common]) == 0
    folder(two, {"c": 4})
    capsys.readouterr()
    assert main(["train", "--data", str(two), "--out-dir", str(tmp_path / "r3"), "--resume", *common[:1], "2",
                 *common[2:]]) == 2
    err = capsys.readouterr().err
    assert "the run's classifier does not fit this run's data" in err and "data's classes changed" in err


def test_an_epoch_that_read_no_image_stops_the_run_before_a_model_is_written(tmp_path, capsys):
    for name in ("a", "b"):
        (tmp_path / "bad" / name).mkdir(parents=True)
        for i in range(4):
            (tmp_path / "bad" / name / f"{i}.png").write_bytes(b"\x89PNG not really")
    out = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path / "bad"), "--augment", "rrc", "--image-size", "16", "--epochs", "1",
                 "--batch-size", "2", "--amp", "none", "--no-progress", "--workers", "0", "--out-dir", str(out)]) == 2
    assert "trained on no images" in capsys.readouterr().err
    assert not (out / "model.safetensors").exists()


def test_a_checkpoint_with_nan_weights_is_refused_on_resume_and_no_model_file_is_written(tmp_path, capsys):
    """Before: resuming one at its last epoch exited 0 with 'loss nan' and wrote a model file predict refuses."""
    assert main(QUICK + ["--out-dir", str(tmp_path)]) == 0
    (tmp_path / "model.safetensors").unlink()
    state = load_training_checkpoint(tmp_path / "checkpoint.pt")
    state["model"]["conv1.weight"][0, 0, 0, 0] = float("nan")
    torch.save(state, tmp_path / "checkpoint.pt")
    capsys.readouterr()
    assert main(QUICK + ["--out-dir", str(tmp_path), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "checkpoint.pt holds NaN or infinite weights (1 tensor(s), e.g. conv1.weight)" in err
    assert not (tmp_path / "model.safetensors").exists()


def test_a_checkpoint_from_a_machine_with_more_gpus_restores_the_devices_there_are(monkeypatch):
    """Saved with 4 GPUs visible, resumed with 1: torch.cuda.set_rng_state_all raised IndexError, reported as a
    damaged checkpoint. (No GPU here: torch.cuda is stood in for.)"""
    from resnetkit.train.checkpoint import rng_state, set_rng_state

    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [torch.zeros(8, dtype=torch.uint8)] * 4)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device: restored.append(device))
    set_rng_state(rng_state())
    assert restored == [0]


@pytest.mark.parametrize("command", [
    ["train", "--recipe", "cifar10-fast", "--data", "digits", "--val-split", "0", "--optimizer", "adamw",
     "--epochs", "1"],  # refused while the optimizer is built: config.json was written already
    ["train", "--recipe", "demo", "--model", "plain20", "--drop-path-rate", "0.1"],  # refused building the model
    ["show-batch", "--recipe", "demo", "--data", "missing.csv"],
])
def test_a_refused_command_leaves_no_folder_behind(tmp_path, capsys, monkeypatch, command):
    """docs/bad-input.md: nothing half-done is left behind; each of these left its (nested) --out-dir."""
    monkeypatch.chdir(tmp_path)
    assert main([*command, "--out-dir", str(tmp_path / "new" / "run")]) == 2
    assert "error" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
    (tmp_path / "kept").mkdir()  # a folder that was there before stays, empty or not, however it is spelled
    assert main([*command, "--out-dir", str(tmp_path / "kept")]) == 2
    assert main([*command, "--out-dir", str(tmp_path / "absent" / ".." / "kept")]) == 2
    assert (tmp_path / "kept").is_dir()
    assert main(command) == 2  # the default folder (runs/demo ...) too
    assert not (tmp_path / "runs").exists()


def test_resuming_with_more_iterations_trains_to_the_new_count_and_with_fewer_epochs_is_refused(tmp_path, capsys):
    """A run of 10 iterations (stopped inside its first epoch) resumed with 40 ended at 32, its lr not annealed;
    a run resumed with fewer epochs than it had trained rewrote its records with nothing trained."""
    common = ["train", "--recipe", "demo", "--amp", "none", "--no-progress"]
    assert main([*common, "--iterations", "10", "--out-dir", str(tmp_path / "i")]) == 0
    assert main([*common, "--iterations", "40", "--out-dir", str(tmp_path / "i"), "--resume"]) == 0
    state = load_training_checkpoint(tmp_path / "i" / "checkpoint.pt")
    assert state["step"] == 40
    assert main([*common, "--iterations", "20", "--out-dir", str(tmp_path / "i"), "--resume"]) == 2
    assert "--iterations 20, but 40 steps are trained already" in capsys.readouterr().err
    assert main([*common, "--epochs", "2", "--out-dir", str(tmp_path / "e")]) == 0
    config = (tmp_path / "e" / "config.json").read_text()
    assert main([*common, "--epochs", "1", "--out-dir", str(tmp_path / "e"), "--resume"]) == 2
    assert "--epochs 1, but 2 epochs are trained already" in capsys.readouterr().err
    assert (tmp_path / "e" / "config.json").read_text() == config


def test_a_run_whose_weights_diverge_in_its_last_steps_stops_instead_of_writing_nan(tmp_path, capsys):
    """The training loss was finite, the validation loss NaN: the run exited 0 with a model and a report.json of
    NaN (not JSON)."""
    out = tmp_path / "run"
    assert main(["train", "--recipe", "demo", "--amp", "none", "--no-progress", "--iterations", "2", "--schedule",
                 "step", "--gamma", "1e30", "--out-dir", str(out)]) == 1
    assert "the validation loss is NaN or infinite after epoch 1" in capsys.readouterr().err
    assert not (out / "model.safetensors").exists() and not (out / "report.json").exists()


def test_a_staged_finetune_under_torchrun_is_refused_before_anything_is_written(tmp_path, capsys, monkeypatch,
                                                                                  resnet20_file):
    """Each rank wrote start.safetensors and refused the other's; resumed, the second stage hung re-joining the
    process group."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["finetune", str(resnet20_file), "digits", "--out-dir", str(tmp_path / "ft")]) == 2
    assert "runs in one process: start it with resnetkit, not torchrun" in capsys.readouterr().err
    assert not (tmp_path / "ft").exists()


def test_the_logged_lr_is_the_runs_lr_not_the_stems_with_discriminative_lrs(tmp_path, resnet20_file):
    """metrics.csv, the report and the progress bar showed the first parameter group's lr: the stem's, lr / lr_mult."""
    out = tmp_path / "run"
    assert main(["train", "--recipe", "demo", "--pretrained", str(resnet20_file), "--lr-mult", "100", "--epochs", "1",
                 "--schedule", "step", "--lr", "0.05", "--amp", "none", "--no-progress", "--out-dir", str(out)]) == 0
    import csv

    [row] = list(csv.DictReader((out / "metrics.csv").open()))
    assert float(row["lr"]) == 0.05


@pytest.mark.parametrize("flags, words", [
    (["--schedule", "onecycle", "--milestone-gammas", "0.1", "0.1"], "only the step schedule uses them"),
    (["--staircase"], "only the exponential schedule uses them"),
    (["--warmup-lr", "0.01"], "there is no warm-up"),
    (["--randaugment-ops", "5"], "the auto_augment policy is 'none'"),
])
def test_a_setting_that_cannot_take_effect_is_named_in_a_warning(tmp_path, capsys, flags, words):
    """Each of these trained exactly as without it, silently (a recipe may set them for a schedule a flag replaces,
    so a warning rather than a refusal)."""
    assert main(["train", "--recipe", "demo", "--iterations", "1", "--amp", "none", "--no-progress", *flags,
                 "--out-dir", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    assert "resnetkit train: warning:" in err and words in err and "has no effect in this run" in err
