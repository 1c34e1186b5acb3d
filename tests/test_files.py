"""Atomic writes: a reader or a killed writer never sees half a file, and files get the usual permissions."""

from __future__ import annotations

import os

import pytest
import torch

from resnetkit import create_model, save_model
from resnetkit.files import atomic_path, write_text_atomic
from resnetkit.train.checkpoint import load_checkpoint, save_checkpoint


def test_a_failed_write_keeps_the_old_file_and_leaves_nothing_behind(tmp_path):
    path = write_text_atomic(tmp_path / "report.json", "old")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed half-way")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["report.json"]


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_model_files_and_checkpoints_get_the_permissions_of_plain_files(tmp_path, umask):
    before = os.umask(umask)
    try:
        model = save_model(create_model("resnet20"), tmp_path / "model.safetensors")
        checkpoint = save_checkpoint({"step": 3, "weights": torch.ones(2)}, tmp_path / "checkpoint.pt")
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
    finally:
        os.umask(before)
    # mkstemp alone would leave 0600: a model file another user (a server) cannot read.
    assert plain.stat().st_mode & 0o777 == 0o666 & ~umask
    assert model.stat().st_mode & 0o777 == checkpoint.stat().st_mode & 0o777 == 0o666 & ~umask
    assert load_checkpoint(checkpoint)["step"] == 3
