"""Pruning through Torch-Pruning's dependency graph: MAC target, group ranking, the model file still loads."""

from __future__ import annotations

import pytest
import torch

from resnetkit import create_model, load_model
from resnetkit.config import CIFAR_PREPROCESS, ModelInfo
from resnetkit.export import prune_model, save_pruned_model
from resnetkit.models import count_macs
from resnetkit.models.widths import inner_chains

pytest.importorskip("torch_pruning")
from resnetkit.export.pruning_tp import prune_to_macs_tp, prune_with_ratio  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(("name", "options"), [("resnet20", {}), ("resnet50", {"num_classes": 10}),
                                               ("resnet20", {"variant": "v2", "shortcut": "B"})])
def test_meets_the_mac_target_and_keeps_the_residual_stream(name, options):
    model = create_model(name, **options).eval()
    before = count_macs(model, 32)
    pruned, kept = prune_to_macs_tp(model, 0.5, input_size=32)
    assert 0.45 * before < count_macs(pruned, 32) <= 0.5 * before and 0 < kept < 1
    widths = [[getattr(b, c[0]).out_channels for _, b, c in inner_chains(m)] for m in (model, pruned)]
    assert kept == sum(widths[1]) / sum(widths[0])  # as counted (1 - ratio said 50.0% for 47.3% kept)
    original = dict(model.named_modules())
    for module_name, module in pruned.named_modules():  # the stem, shortcuts and classifier are untouched
        if module_name in ("conv1", "fc") or "downsample" in module_name or "shortcut" in module_name:
            assert [p.shape for p in module.parameters()] == [p.shape for p in original[module_name].parameters()]
    assert pruned(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_the_weakest_channel_groups_go_first():
    model = create_model("resnet20").eval()
    with torch.no_grad():  # channels 0-3 of layer1.0's inner dimension: weak in conv1, bn1 and conv2 alike
        model.layer1[0].conv1.weight[:4] *= 1e-3
        model.layer1[0].bn1.weight[:4] *= 1e-3
        model.layer1[0].bn1.bias[:4] *= 1e-3
        model.layer1[0].conv2.weight[:, :4] *= 1e-3
        kept_before = model.layer1[0].conv1.weight[4:].clone()
    pruned = prune_with_ratio(model, 0.25, input_size=32)  # 16 -> 12 channels
    assert pruned.layer1[0].conv1.weight.shape[0] == 12
    torch.testing.assert_close(pruned.layer1[0].conv1.weight, kept_before)


def test_pruned_file_round_trips_and_the_default_method_is_torch_pruning(tmp_path):
    model = create_model("resnet20").eval()
    images, labels = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    pruned, report = prune_model(model, target_ratio=0.5, eval_data=(images, labels))
    by_hand, _ = prune_to_macs_tp(model, 0.5, input_size=32)
    assert report.macs_after == count_macs(by_hand, 32) <= 0.5 * report.macs_before
    path = tmp_path / "pruned.safetensors"
    save_pruned_model(pruned, path, ModelInfo(model=pruned.config, preprocess=CIFAR_PREPROCESS))
    loaded, _ = load_model(path)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), pruned(x))
    with pytest.raises(ValueError, match="method='magic' is not one of"):
        prune_model(model, target_ratio=0.5, method="magic")
