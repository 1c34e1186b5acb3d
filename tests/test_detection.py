"""A resnetkit ResNet-50 is a detection backbone: with torchvision's FPN inside torchvision's Faster R-CNN it
trains (the loss falls on synthetic boxes) and predicts in torchvision's format."""

from __future__ import annotations

import pytest
import torch
from torchvision.models.detection import FasterRCNN

from resnetkit import create_model
from resnetkit.models.features import FeaturePyramidBackbone

SIZE = 128


def _synthetic_scene(generator: torch.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Noise with one bright rectangle, and its box (xyxy) labelled 1."""
    image = torch.rand(3, SIZE, SIZE, generator=generator) * 0.3
    x0, y0 = torch.randint(8, 56, (2,), generator=generator).tolist()
    w, h = torch.randint(32, 64, (2,), generator=generator).tolist()
    image[:, y0:y0 + h, x0:x0 + w] = torch.tensor([0.9, 0.2, 0.2]).view(3, 1, 1)
    return image, {"boxes": torch.tensor([[x0, y0, x0 + w, y0 + h]], dtype=torch.float32),
                   "labels": torch.tensor([1])}


def test_resnet50_fpn_backbone_trains_faster_rcnn(one_thread):
    body = create_model("resnet50", features_only=True, out_indices=(1, 2, 3, 4))
    assert body.channels == [256, 512, 1024, 2048] and body.reductions == [4, 8, 16, 32]
    # A body without trained weights: its BatchNorm and every stage train (torchvision's choice without weights).
    backbone = FeaturePyramidBackbone(body)
    assert all(p.requires_grad for p in backbone.parameters())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in backbone.modules())
    detector = FasterRCNN(backbone, num_classes=2, min_size=SIZE, max_size=SIZE,
                          rpn_batch_size_per_image=64, box_batch_size_per_image=32, box_detections_per_img=10)
    generator = torch.Generator().manual_seed(0)
    images, targets = zip(*(_synthetic_scene(generator) for _ in range(2)))
    detector.train()
    optimizer = torch.optim.SGD([p for p in detector.parameters() if p.requires_grad], lr=0.005, momentum=0.9)
    losses = []
    for _ in range(15):
        loss_parts = detector(list(images), list(targets))
        assert set(loss_parts) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
        loss = sum(loss_parts.values())
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(detector.parameters(), 10.0)  # random heads: keep the first steps sane
        optimizer.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3, losses  # fell 29% on an AVX2 EPYC, more on Intel

    detector.eval()
    with torch.no_grad():
        predictions = detector([images[0]])
    assert isinstance(predictions, list) and len(predictions) == 1
    boxes, labels, scores = predictions[0]["boxes"], predictions[0]["labels"], predictions[0]["scores"]
    assert boxes.ndim == 2 and boxes.shape[1] == 4 and boxes.shape[0] == labels.shape[0] == scores.shape[0] <= 10
    assert boxes.dtype == torch.float32 and labels.dtype == torch.int64
    assert ((boxes >= 0) & (boxes <= SIZE)).all()


def test_the_fpn_backbone_freezes_as_torchvisions_and_loads_its_detection_checkpoints(one_thread):
    """torchvision's ResNet-FPN keeps trained BatchNorm statistics (FrozenBatchNorm2d) and trains layer2-4 only; the
    backbone kept live BatchNorm, which a detector's batches of two images overwrote, and its checkpoints' keys
    (backbone.body.layer1...) did not load."""
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
    from torchvision.ops.misc import FrozenBatchNorm2d

    torch.manual_seed(0)
    theirs = FasterRCNN(resnet_fpn_backbone(backbone_name="resnet50", weights=None, norm_layer=FrozenBatchNorm2d,
                                            trainable_layers=3), num_classes=3)
    with torch.no_grad():  # statistics unlike a fresh network's, so a load that skips buffers shows
        for module in theirs.modules():
            if isinstance(module, FrozenBatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
    # Built before the checkpoint is loaded: torchvision's choices for trained weights are asked for by name.
    ours = FasterRCNN(FeaturePyramidBackbone(create_model("resnet50", features_only=True, out_indices=(1, 2, 3, 4)),
                                             frozen_bn=True, trainable_layers=3), num_classes=3)
    ours.load_state_dict(theirs.state_dict())  # strict: every key of torchvision's checkpoint, and only those
    trainable = sorted(n for n, p in ours.backbone.named_parameters() if p.requires_grad)
    expected = sorted(n.replace("body.", "body.body.", 1) if n.startswith("body.") else n
                      for n, p in theirs.backbone.named_parameters() if p.requires_grad)
    assert trainable == expected and not any(n.startswith(("body.body.layer1", "body.body.conv1")) for n in trainable)
    x = torch.rand(1, 3, 96, 96)
    ours.backbone.train(), theirs.backbone.train()  # train mode: the statistics stay the trained ones
    with torch.no_grad():
        mine, reference = ours.backbone(x), theirs.backbone(x)
    assert mine.keys() == reference.keys() == {"0", "1", "2", "3", "pool"}
    assert all(torch.allclose(mine[k], reference[k], atol=1e-5) for k in mine)


def test_a_backbone_holds_only_what_its_maps_use():
    """Stages after the last map (and a pre-activation net's final norm, a hidden head layer) were kept: every one
    of their parameters got no gradient, which DDP refuses, and ResNet-50 to layer2 counted 23.5M parameters."""
    backbone = create_model("resnet50", features_only=True, out_indices=(1, 2))
    assert sum(p.numel() for p in backbone.parameters()) == 1_444_928  # timm's features_only, out_indices=(1, 2)
    sum(m.sum() for m in backbone(torch.rand(1, 3, 64, 64))).backward()
    assert all(p.grad is not None for p in backbone.parameters())
    for options in ({"variant": "v2"}, {"head_hidden": 32}):
        backbone = create_model("resnet20", features_only=True, out_indices=(1, 2), **options)
        sum(m.sum() for m in backbone(torch.rand(1, 3, 32, 32))).backward()
        assert all(p.grad is not None for p in backbone.parameters()), options
    stem = create_model("resnet20", features_only=True, out_indices=(0,))  # every stage emptied
    stem.set_grad_checkpointing(True)
    assert [tuple(m.shape) for m in stem(torch.rand(2, 3, 32, 32))] == [(2, 16, 32, 32)]  # was ZeroDivisionError
    info = create_model("resnet50", features_only=True).feature_info  # timm's FeatureInfo accessors too
    assert info.channels() == [256, 512, 1024, 2048] and info.reduction() == [4, 8, 16, 32]
    assert info.module_name(0) == "layer1" and info.get_dicts(keys=["num_chs"], idx=[3]) == [{"num_chs": 2048}]


def test_the_fpn_backbone_decides_as_torchvision_by_whether_the_body_holds_trained_weights():
    """Trained statistics: frozen BatchNorm and the 3 deepest stages; a 3-stage CIFAR body counts its own stages
    (trainable_layers=3 once trained only layer2 and layer3; 1 trained nothing)."""
    from torchvision.ops.misc import FrozenBatchNorm2d

    body = create_model("resnet20", pretrained="cifar10", features_only=True)
    backbone = FeaturePyramidBackbone(body)
    trained = {n.split(".")[1] for n, p in backbone.body.named_parameters() if p.requires_grad}
    assert trained == {"layer1", "layer2", "layer3"}  # all three stages, not the stem
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in backbone.modules())
    assert any(isinstance(m, FrozenBatchNorm2d) for m in backbone.modules())
    one = FeaturePyramidBackbone(create_model("resnet20", pretrained="cifar10", features_only=True), trainable_layers=1)
    assert {n.split(".")[1] for n, p in one.body.named_parameters() if p.requires_grad} == {"layer3"}
    with pytest.raises(ValueError, match=r"trainable_layers=5: give 0 \(a frozen body\) to 4"):
        FeaturePyramidBackbone(create_model("resnet20", features_only=True), trainable_layers=5)
