"""DDP on CPU: two torchrun processes on the same global batch agree with one process."""

from __future__ import annotations

import csv
import subprocess
import sys

import torch
from safetensors.torch import load_file

from resnetkit import create_model


def _train(out_dir, nproc: int, *extra: str) -> dict[str, torch.Tensor]:
    # Frozen BN, no augmentation, fp32: the only difference left is how the gradient sum is reduced.
    # One optimizer step on one global batch: over many steps rounding differences in the gradient sum grow
    # chaotically (frozen BN leaves activations unnormalised), so longer runs agree only loosely.
    args = ["-m", "resnetkit.cli", "train", "--recipe", "demo", "--iterations", "1", "--augment", "none", "--freeze-bn",
            "--amp", "none", "--no-channels-last", "--batch-size", "64", "--no-progress", "--out-dir", str(out_dir),
            *extra]
    if nproc == 1:
        command = [sys.executable, *args]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return load_file(str(out_dir / "model.safetensors"))


def test_two_cpu_processes_agree_with_one_on_the_same_global_batch(tmp_path):
    single = _train(tmp_path / "single", 1)
    double = _train(tmp_path / "ddp", 2)
    assert single.keys() == double.keys()
    # The epoch's training loss and accuracy are over every rank's images (they were rank 0's half alone).
    rows = [next(csv.DictReader((tmp_path / run / "metrics.csv").open())) for run in ("single", "ddp")]
    assert abs(float(rows[0]["train_loss"]) - float(rows[1]["train_loss"])) < 1e-4
    assert rows[0]["train_acc"] == rows[1]["train_acc"]
    for key in single:
        assert torch.allclose(single[key], double[key], rtol=0, atol=1e-6), key
    # Training did move the weights: the runs agree on real steps, not on an untouched initialisation.
    torch.manual_seed(0)
    initial = create_model("resnet20", num_classes=10).state_dict()
    moved = max((single[k] - initial[k]).abs().max().item() for k in single if single[k].is_floating_point())
    assert moved > 1e-3


def test_gradient_accumulation_over_two_processes_equals_one_big_batch(tmp_path):
    # 2 processes x 2 accumulated micro-batches of 32 (the first all-reduce skipped) = one batch of 128.
    single = _train(tmp_path / "single", 1, "--batch-size", "128")
    double = _train(tmp_path / "ddp", 2, "--accumulate", "2")
    for key in single:
        assert torch.allclose(single[key], double[key], rtol=0, atol=1e-6), key


def test_sync_bn_on_cpu_is_a_clear_error(tmp_path, capsys):
    from resnetkit.cli import main

    assert main(["train", "--recipe", "demo", "--epochs", "1", "--sync-bn", "--device", "cpu",
                 "--out-dir", str(tmp_path), "--no-progress"]) == 2
    assert "sync_bn needs CUDA" in capsys.readouterr().err


_DRAWS = """
import json, os, sys
import torch
from resnetkit.cli import main
from resnetkit.train import loop

draws = []
def record(self, epoch, _epoch=loop.Trainer.train_one_epoch):
    self.step_callback = lambda lr, loss: draws.append(torch.rand(()).item())  # the global RNG after each step
    return _epoch(self, epoch)
loop.Trainer.train_one_epoch = record
status = main(sys.argv[1:])
rank = os.environ.get("RANK", "0")
with open(os.path.join(os.environ["DRAWS_DIR"], f"rank{rank}.json"), "w") as f:
    json.dump(draws, f)
sys.exit(status)
"""


def test_each_ddp_rank_draws_its_own_global_random_numbers_and_the_same_ones_again(tmp_path):
    """Dropout, stochastic depth, MixUp and the augmentation policies use the global RNG, seeded per epoch and rank:
    under torchrun the two ranks draw different numbers (identical masks on every rank would waste half the
    batch's randomness), and the same run again draws the same ones."""
    import json
    import os

    script = tmp_path / "draws.py"
    script.write_text(_DRAWS)
    runs = []
    for attempt in range(2):
        out = tmp_path / f"run{attempt}"
        out.mkdir()
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", str(script),
                   "train", "--recipe", "demo", "--iterations", "4", "--batch-size", "32",
                   "--amp", "none", "--no-progress", "--out-dir", str(out / "run")]
        result = subprocess.run(command, capture_output=True, text=True, timeout=600,
                                env={**os.environ, "DRAWS_DIR": str(out)})
        assert result.returncode == 0, result.stderr[-3000:]
        runs.append([json.loads((out / f"rank{r}.json").read_text()) for r in range(2)])
    (rank0, rank1), again = runs
    assert len(rank0) == len(rank1) == 4  # one draw after each of the 4 steps, on both ranks
    assert all(a != b for a, b in zip(rank0, rank1))
    assert again == runs[0]
