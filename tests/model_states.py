"""State dicts for the weight-file tests: statistics a fresh network lacks, and an exact comparison."""

from __future__ import annotations

import torch


def with_statistics(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with BatchNorm statistics unlike a fresh network's, so a load that skips buffers shows."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.num_batches_tracked.fill_(7)
    return model


def assert_same_state(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert got.keys() == expected.keys()
    different = [k for k in expected if not torch.equal(got[k], expected[k])]
    assert different == []
