"""The trained networks shipped inside the package: complete cards, intact files, and the accuracy they claim."""

from __future__ import annotations

import json

import pytest
import torch

from resnetkit import create_model
from resnetkit.config import EvalConfig
from resnetkit.evaluate.run import run_evaluation
from resnetkit.models import load_model
from resnetkit.models import pretrained as catalog

ENTRIES = sorted(catalog.WEIGHTS_DIR.glob("*.json"))
CARD_FIELDS = {"top1", "evaluated_on", "recipe", "epochs", "wall_time_s", "machine", "command"}


@pytest.mark.parametrize("entry_file", ENTRIES, ids=[p.stem for p in ENTRIES])
def test_shipped_network_is_complete_and_loads_offline_with_its_classes(entry_file):
    entry = json.loads(entry_file.read_text())
    assert entry_file.stem == f"{entry['arch']}_{entry['tag']}"
    assert CARD_FIELDS <= set(entry["card"]), f"card lacks {CARD_FIELDS - set(entry['card'])}"
    model, info = load_model(entry_file.stem)  # checks the SHA-256 the entry records
    assert info.model.arch == entry["arch"]
    if entry["tag"] in catalog.CLASS_LISTS:  # the tag names the class list the network must carry
        assert info.class_names == catalog.CLASS_LISTS[entry["tag"]]()
    assert info.class_names and len(info.class_names) == model.num_classes
    with torch.no_grad():
        same = create_model(entry["arch"], pretrained=entry["tag"]).eval()
        size = info.preprocess.input_size
        x = torch.randn(2, 3, size, size)
        assert torch.equal(same(x), model.eval()(x))


def test_every_deeper_shipped_resnet_is_ahead_of_every_shallower_one():
    cards = [json.loads(p.read_text()) for p in ENTRIES]
    resnets = sorted((int(c["arch"].removeprefix("resnet")), c["card"]["top1"]) for c in cards
                     if c["arch"].removeprefix("resnet").isdigit() and c["tag"] == "cifar10")
    if len(resnets) < 2:
        pytest.skip(f"{len(resnets)} CIFAR-10 ResNet(s) shipped: nothing to order yet")
    assert [top1 for _, top1 in resnets] == sorted(top1 for _, top1 in resnets), resnets


@pytest.mark.parametrize("entry_file", ENTRIES, ids=[p.stem for p in ENTRIES])
def test_shipped_network_measures_what_its_card_says(entry_file, cifar_jpeg_tar, tmp_path):
    entry = json.loads(entry_file.read_text())
    if entry["tag"] != "cifar10":
        pytest.skip(f"{entry_file.stem}: measured on other data than the CIFAR-10 JPEG copy")
    _, info = load_model(entry_file.stem)
    # The held-out split the training recorded in the file (val_split and the split's own seed).
    top1 = run_evaluation(EvalConfig(model=entry_file.stem, data=str(cifar_jpeg_tar), val_split=info.extra["val_split"],
                                     seed=info.extra["split_seed"], out_dir=str(tmp_path), device="cpu")).top1
    assert 100 * top1 == pytest.approx(entry["card"]["top1"], abs=0.005)
