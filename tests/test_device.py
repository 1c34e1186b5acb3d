"""``--device``: one rule for every command; a device that is not there is named, not a crash in torch."""

from __future__ import annotations

import pytest
import torch

from resnetkit.device import resolve_device


def test_auto_and_cpu_resolve_and_devices_that_cannot_run_are_named():
    assert resolve_device("auto") == resolve_device(None) == (
        torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu"))
    assert resolve_device("cpu") == torch.device("cpu")
    for name, message in (("tpu", "not a device name"), ("meta", "resnetkit runs on cpu or cuda"),
                          ("cpu:99", "one CPU device .* use cpu"), ("nope", "not a device name")):
        with pytest.raises(ValueError, match=f"device='{name}' \\(--device\\).*{message}"):
            resolve_device(name)
    if not torch.backends.mps.is_available():
        with pytest.raises(ValueError, match="no mps device on this machine; use auto or cpu"):
            resolve_device("mps")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device is available; use --device cpu"):
            resolve_device("cuda:1")


def test_predict_names_the_device_flag_in_one_line(capsys, tmp_path):
    from resnetkit.cli import main

    image = tmp_path / "x.png"
    from PIL import Image

    Image.new("RGB", (32, 32)).save(image)
    assert main(["predict", "resnet20_cifar10", str(image), "--device", "meta"]) == 2
    err = capsys.readouterr().err.strip()
    assert "device='meta' (--device)" in err and "\n" not in err
