"""Torch Hub: ``torch.hub.load(checkout, NAME, ...)`` builds what ``create_model`` builds, pretrained=True included;
``list_models(pretrained=True)`` names the trained weights (timm's spelling)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from resnetkit import create_model, list_models
from resnetkit.models.pretrained import default_weights

REPO = str(Path(__file__).resolve().parents[1])


def test_every_registered_network_is_an_entry_point_and_nothing_else(monkeypatch):
    # list() and help() take a GitHub repository only: the download is replaced by this checkout (no internet).
    monkeypatch.setattr(torch.hub, "_get_cache_or_reload", lambda *args, **kwargs: REPO)
    assert sorted(torch.hub.list("OWNER/resnetkit")) == sorted(list_models())
    assert "pretrained" in torch.hub.help("OWNER/resnetkit", "resnet56")


def test_hub_load_gives_the_shipped_network_and_create_models_options():
    hub = torch.hub.load(REPO, "resnet20", source="local", pretrained=True).eval()
    shipped = create_model("resnet20", pretrained="cifar10").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(hub(x), shipped(x))
    model = torch.hub.load(REPO, "resnet50", source="local", variant="v1", num_classes=10)
    assert model.num_classes == 10 and model.config.variant == "v1"
    assert sum(p.numel() for p in model.parameters()) == sum(
        p.numel() for p in create_model("resnet50", variant="v1", num_classes=10).parameters())


def test_pretrained_true_takes_the_most_accurate_weights_and_names_an_arch_without_any():
    assert default_weights("resnet50").name == "resnet50_imagenet1k_v2"  # torchvision's DEFAULT, 80.86 > 76.13
    assert default_weights("resnet20").name == "resnet20_cifar10"
    with pytest.raises(ValueError, match=r"no pretrained weights for resnet1202 .*models --pretrained"):
        create_model("resnet1202", pretrained=True)
    assert create_model("resnet20", pretrained=False).fc.weight.std() != create_model(
        "resnet20", pretrained=True).fc.weight.std()  # False: random weights, not the shipped ones


def test_a_catalog_name_means_its_weights_and_refuses_other_ones():
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(create_model("resnet20_cifar10", pretrained=True).eval()(x),
                           create_model("resnet20_cifar10").eval()(x))
    for other in (False, "imagenet1k_v1"):
        with pytest.raises(ValueError, match=r"resnet20_cifar10 names trained weights of resnet20: .*'resnet20'"):
            create_model("resnet20_cifar10", pretrained=other)


def test_list_models_pretrained_names_what_create_model_takes():
    from resnetkit.models.pretrained import WEIGHTS_DIR

    shipped = sorted(p.stem for p in WEIGHTS_DIR.glob("*_cifar10.json"))
    assert list_models("*cifar10", pretrained=True) == shipped and "resnet20_cifar10" in shipped
    assert {"resnet50_imagenet1k_v1", "resnet50_imagenet1k_v2"} <= set(list_models("resnet50", pretrained=True))
    assert "resnet101_imagenet1k_v2" not in list_models("resnet50", pretrained=True)
    assert list_models("resnet20", pretrained=False) == ["resnet20"]
