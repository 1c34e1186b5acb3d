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


@pytest.fixture
def tiny_disk(tmp_path):
    """A 1 MiB file system (tmpfs), where root may mount one; skipped elsewhere."""
    import subprocess

    mount = tmp_path / "tiny"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a tiny tmpfs needs root and mount(8)")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def _report(folder, **config):
    from resnetkit.evaluate.metrics import ClassificationMetrics
    from resnetkit.evaluate.report import write_report

    metrics = ClassificationMetrics(num_classes=2)
    metrics.update(torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1]))
    return write_report(folder, title="t", metrics=metrics, class_names=["a", "b"], **config)


def test_a_full_disk_names_the_file_and_keeps_the_earlier_one(tiny_disk):
    """On a real full disk each writer fails in its own words (torch: "unexpected pos", safetensors: "os error 28");
    the error names the file, and an earlier file of that name is kept."""
    earlier = write_text_atomic(tiny_disk / "checkpoint.pt", "the earlier checkpoint")
    writers = {"model.safetensors": lambda p: save_model(create_model("resnet20"), p),  # 1.1 MB
               "checkpoint.pt": lambda p: save_checkpoint({"w": torch.zeros(1_000_000)}, p),
               "report.json": lambda p: _report(p.parent, config={"notes": "x" * 2_000_000})}  # the real writer
    for name, write in writers.items():
        with pytest.raises(OSError, match=f"cannot write {tiny_disk / name} \\(the disk is full\\)"):
            write(tiny_disk / name)
    assert earlier.read_text() == "the earlier checkpoint"
    assert sorted(os.listdir(tiny_disk)) == ["checkpoint.pt"]


def test_a_writer_reporting_a_full_disk_in_its_own_words_is_named(tmp_path, monkeypatch):
    """Where no tiny disk can be mounted: safetensors' message for a full disk, and torch's, with the disk seen full."""
    with pytest.raises(OSError, match=r"cannot write .*model\.safetensors \(the disk is full\); nothing was written"):
        with atomic_path(tmp_path / "model.safetensors"):
            raise RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)")
    monkeypatch.setattr("resnetkit.files._disk_full", lambda folder: True)
    with pytest.raises(OSError, match=r"cannot write .*checkpoint\.pt \(the disk is full\)"):
        with atomic_path(tmp_path / "checkpoint.pt"):
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
    assert os.listdir(tmp_path) == []


def test_a_temporary_file_left_by_a_killed_writer_is_removed_and_a_live_ones_kept(tmp_path):
    """SIGKILL mid-write runs no `finally`: each kill left a checkpoint-sized hidden file beside checkpoint.pt."""
    import subprocess
    import sys

    from resnetkit.files import remove_stale_temporaries

    target = tmp_path / "checkpoint.pt"
    script = ("import os, signal, sys; from resnetkit.files import atomic_path\n"
              "with atomic_path(sys.argv[1]) as tmp:\n"
              "    tmp.write_bytes(b'x' * 1000)\n"
              "    os.kill(os.getpid(), signal.SIGKILL)\n")
    assert subprocess.run([sys.executable, "-c", script, str(target)]).returncode == -9
    [left] = [p for p in tmp_path.iterdir() if p.name.startswith(".checkpoint.pt.")]
    with atomic_path(tmp_path / "other.pt") as live:  # this process's own write in progress: kept
        assert remove_stale_temporaries(tmp_path) == [left]
        assert live.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.pt"]
    (tmp_path / "notes.tmp").write_text("someone's")  # not one of ours: kept
    assert remove_stale_temporaries(tmp_path) == [] and (tmp_path / "notes.tmp").exists()
