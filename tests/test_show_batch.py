"""``resnetkit show-batch`` (fastai's show_batch): the first batch of a run, drawn as the network gets it."""

from __future__ import annotations

import pytest
import torch

from resnetkit.config import ShowBatchOptions, load_train_config


def test_the_shown_batch_is_the_one_the_first_training_step_gets(tmp_path, monkeypatch):
    """Same data, crops, automatic policy and CutMix as `resnetkit train`: the images the network's first forward
    pass receives, normalised, are show-batch's pixels normalised the same way."""
    from resnetkit.train import run as run_module
    from resnetkit.train.data import build_train_data  # the run's own normalisation
    from resnetkit.train.distributed import DistInfo
    from resnetkit.train.run import run_training
    from resnetkit.train.show_batch import first_batch

    seen: list[torch.Tensor] = []
    build = run_module.build_model_for

    def recording(config, num_classes, class_names=None):
        model = build(config, num_classes, class_names)
        model.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().float().clone()))
        return model

    monkeypatch.setattr(run_module, "build_model_for", recording)
    config = load_train_config("demo", iterations=1, auto_augment="trivialaugment", cutmix_alpha=1.0, amp="none",
                               out_dir=str(tmp_path / "run"), progress=False)
    run_training(config)
    pixels, targets, names = first_batch(config, ShowBatchOptions(count=64))
    first = seen[0]  # the training step's (evaluation comes after it)
    assert pixels.shape[0] == first.shape[0] == 64 and targets.shape == (64, 10)  # CutMix: weights over 10 classes
    pre = build_train_data(config, dist=DistInfo(), device=torch.device("cpu")).preprocess
    mean, std = torch.tensor(pre.mean).view(1, -1, 1, 1), torch.tensor(pre.std).view(1, -1, 1, 1)
    assert torch.allclose((pixels[:, :first.shape[1]] - mean) / std, first, atol=1e-4)
    assert names == [str(i) for i in range(10)]
    assert (targets.max(1).values < 1).any()  # mixed: the check above compares mixed images, not plain ones


def test_show_batch_cli_writes_the_figure_and_refuses_a_missing_validation_split(tmp_path, capsys):
    from PIL import Image

    from resnetkit.cli import main

    pytest.importorskip("matplotlib")
    assert main(["show-batch", "--recipe", "demo", "--count", "4", "--out-dir", str(tmp_path / "a")]) == 0
    assert (tmp_path / "a" / "batch.png").stat().st_size > 0 and "batch.png" in capsys.readouterr().out
    for name in ("x", "y"):  # a folder without a val/ split, and no --val-split
        folder = tmp_path / "data" / name
        folder.mkdir(parents=True)
        for i in range(2):
            Image.fromarray(torch.randint(0, 256, (8, 8, 3), dtype=torch.uint8).numpy()).save(folder / f"{i}.png")
    assert main(["show-batch", "--data", str(tmp_path / "data"), "--split", "val", "--out-dir",
                 str(tmp_path / "b")]) == 2
    assert "no validation images to show" in capsys.readouterr().err
    assert not (tmp_path / "b" / "val_batch.png").exists()


@pytest.mark.parametrize("count", [0, 65])
def test_a_count_outside_1_to_64_is_refused(count):
    with pytest.raises(ValueError, match="count"):
        ShowBatchOptions(count=count)


def test_fewer_images_than_asked_are_drawn_with_a_warning_and_no_batch_at_all_is_an_error(tmp_path, capsys):
    from resnetkit.cli import main

    pytest.importorskip("matplotlib")
    assert main(["show-batch", "--recipe", "demo", "--count", "16", "--batch-size", "4", "--out-dir",
                 str(tmp_path / "a")]) == 0
    assert "drew 4 of the 16 images" in capsys.readouterr().err
    assert main(["show-batch", "--recipe", "demo", "--batch-size", "100000", "--out-dir", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "use a smaller --batch-size" in err and "StopIteration" not in err
