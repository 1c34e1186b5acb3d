"""Channel pruning reaches the MAC target, keeps the strongest filters, and survives save/load/export."""

from __future__ import annotations

import copy

import pytest
import torch

from resnetkit import create_model, load_model
from resnetkit.config import CIFAR_PREPROCESS, ModelInfo
from resnetkit.models import count_macs
from resnetkit.export import (fine_tune_on_tensors, prune_model, prune_to_macs,
                              save_pruned_model)
from resnetkit.export.pruning import prune_with_fraction

# Basic (option A and B shortcuts), post-activation bottleneck, pre-activation basic and bottleneck.
CASES = [("resnet20", {}), ("resnet18", {"num_classes": 10}), ("resnet50", {"num_classes": 10}),
         ("resnet20", {"variant": "v2", "shortcut": "B"}),
         pytest.param("resnet164", {}, marks=pytest.mark.slow)]


@pytest.mark.parametrize(("name", "options"), CASES)
def test_pruned_model_meets_the_mac_target_and_still_runs(name, options):
    model = create_model(name, **options).eval()
    before = count_macs(model, 32)
    pruned, fraction = prune_to_macs(model, 0.6, input_size=32)
    after = count_macs(pruned, 32)
    assert 0.55 * before < after <= 0.6 * before
    assert 0 < fraction < 1
    assert not any(m.training for m in pruned.modules())
    assert pruned(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_keeping_everything_changes_nothing_and_weak_filters_go_first():
    model = create_model("resnet20").eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(prune_with_fraction(model, 1.0)(x), model(x))
        model.layer1[0].conv1.weight[:4] *= 1e-3  # the four weakest filters of this conv
    pruned = prune_with_fraction(model, 0.75)  # 16 -> 12 filters
    kept = pruned.layer1[0].conv1.weight
    assert kept.shape[0] == 12
    assert kept.abs().sum(dim=(1, 2, 3)).min() > 1e-2  # none of the weakened ones survived


def test_unreachable_target_says_what_is_reachable():
    with pytest.raises(ValueError, match="below what inner-channel pruning can reach"):
        prune_to_macs(create_model("resnet20"), 0.01)


def test_prune_report_with_fine_tune_and_pruned_file_round_trip(tmp_path):
    pytest.importorskip("onnxruntime")
    from resnetkit.export import export_model

    model = create_model("resnet20").eval()
    images, labels = torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,))
    calls, as_pruned = [], []

    def fine_tune(m):
        calls.append(m)
        as_pruned.append(copy.deepcopy(m).eval())  # the pruned network before any training step
        fine_tune_on_tensors(m, images, labels, epochs=1, batch_size=16)

    def top1(m):  # the fraction of the 32 labels each network's argmax gets right, counted here
        with torch.no_grad():
            return (m.eval()(images).argmax(dim=1) == labels).sum().item() / 32

    expected_before = top1(model)
    pruned, report = prune_model(model, target_ratio=0.5, fine_tune=fine_tune, eval_data=(images, labels))
    assert calls == [pruned]
    assert report.macs_after <= 0.5 * report.macs_before and report.params_after < report.params_before
    # Random labels on random images: fine-tuning need not raise accuracy, so each figure is checked against
    # the network it describes (before pruning, right after it, after the fine-tune) rather than by order.
    figures = (report.top1_before, report.top1_pruned, report.top1_fine_tuned)
    assert all(isinstance(f, float) and 0.0 <= f <= 1.0 for f in figures), figures
    assert figures == pytest.approx((expected_before, top1(as_pruned[0]), top1(pruned)), abs=1e-9)
    assert not all(torch.equal(a, b) for a, b in zip(as_pruned[0].parameters(), pruned.parameters()))  # it trained
    assert "MACs" in report.summary()

    path = tmp_path / "pruned.safetensors"
    save_pruned_model(pruned, path, ModelInfo(model=pruned.config, preprocess=CIFAR_PREPROCESS))
    loaded, _ = load_model(path)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), pruned(x))
    result = export_model(path, fmt="onnx", output=tmp_path / "pruned.onnx")
    assert result.parity.top1_agreement == 1.0
