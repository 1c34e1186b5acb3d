"""A resnetkit ResNet-50 is a detection backbone: with torchvision's FPN inside torchvision's Faster R-CNN it
trains (the loss falls on synthetic boxes) and predicts in torchvision's format."""

from __future__ import annotations

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
    detector = FasterRCNN(FeaturePyramidBackbone(body), num_classes=2, min_size=SIZE, max_size=SIZE,
                          rpn_batch_size_per_image=64, box_batch_size_per_image=32, box_detections_per_img=10)
    generator = torch.Generator().manual_seed(0)
    images, targets = zip(*(_synthetic_scene(generator) for _ in range(2)))
    # Random weights, so BatchNorm normalises with batch statistics (a pretrained backbone would keep its own).
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
