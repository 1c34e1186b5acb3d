"""Rotation, shifts, brightness/contrast, cutout and random erasing: batch-wise on uint8, as the libraries do."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from resnetkit.config import AUTO_AUGMENTS, TrainConfig
from resnetkit.data.augment_extra import (BatchPipeline, ExtraAugment, affine_batch, brightness_contrast_batch,
                                          random_cutout, random_erase, with_worker_transforms)


def _batch(n=8, size=16, seed=0):
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_a_quarter_turn_and_whole_pixel_shifts_are_exact():
    x = _batch(2)
    zero = torch.zeros(2)
    turned = affine_batch(x, angle=torch.tensor([90.0, -90.0]), shift_x=zero, shift_y=zero)
    assert torch.equal(turned[0], torch.rot90(x[0], 1, (1, 2))) and torch.equal(turned[1], torch.rot90(x[1], -1, (1, 2)))
    shifted = affine_batch(x, angle=zero, shift_x=torch.tensor([3.0, 0.0]), shift_y=torch.tensor([0.0, -2.0]))
    assert torch.equal(shifted[0, :, :, 3:], x[0, :, :, :-3])  # moved right by 3
    assert torch.equal(shifted[0, :, :, :3], x[0, :, :, :1].expand(-1, -1, 3))  # border replicated, as Keras' "nearest"
    assert torch.equal(shifted[1, :, :-2], x[1, :, 2:])  # moved up by 2


def test_brightness_and_contrast_match_torchvision():
    x = torch.randint(60, 190, (4, 3, 16, 16), dtype=torch.uint8)  # no clipping between the two steps
    b, c = torch.tensor([0.8, 1.0, 1.2, 0.9]), torch.tensor([1.0, 0.7, 1.1, 1.3])
    ours = brightness_contrast_batch(x, brightness=b, contrast=c)
    for i in range(4):
        reference = TF.adjust_brightness(TF.adjust_contrast(x[i], c[i].item()), b[i].item())
        # torchvision rounds to uint8 after each step (and its grey mean from a uint8 grey image); we round once
        difference = (ours[i].int() - reference.int()).abs()
        assert difference.max() <= 2 and difference.float().mean() < 1


def test_cutout_makes_one_clipped_square_hole_of_the_fill_colour():
    x = torch.full((64, 3, 16, 16), 200, dtype=torch.uint8)
    fill = torch.tensor([10, 20, 30], dtype=torch.uint8)
    out = random_cutout(x, side=6, fill=fill, generator=torch.Generator().manual_seed(0))
    holes = (out != x).all(1)  # pixels where every channel changed
    assert torch.equal(out.permute(0, 2, 3, 1)[holes], fill.expand(int(holes.sum()), 3))
    sizes = holes.sum((1, 2))
    assert sizes.max() == 36 and (sizes > 0).all()  # full squares inside, clipped ones at the border
    rows, cols = holes.any(2), holes.any(1)
    assert torch.equal(sizes, rows.sum(1) * cols.sum(1))  # each hole is one rectangle


def test_random_erasing_probability_and_area():
    x = torch.full((400, 3, 32, 32), 200, dtype=torch.uint8)
    fill = torch.zeros(3, dtype=torch.uint8)
    out = random_erase(x, probability=0.5, scale=(0.02, 0.33), fill=fill, generator=torch.Generator().manual_seed(1))
    erased = (out != x).all(1).sum((1, 2)).float() / (32 * 32)
    assert 0.4 < (erased > 0).float().mean() < 0.6
    hit = erased[erased > 0]
    assert hit.min() >= 0.015 and hit.max() <= 0.36  # the area range, give or take the rounding of the sides
    assert torch.equal(random_erase(x, probability=0.0, scale=(0.02, 0.33), fill=fill), x)


def test_pipeline_is_seeded_keeps_uint8_and_off_is_identity():
    options = ExtraAugment(rotation=15, width_shift=0.1, height_shift=0.1, brightness=0.2, contrast=0.2, cutout=8,
                           random_erasing=0.5)
    pipeline = BatchPipeline(options, fill=(125.0, 123.0, 114.0))
    x = _batch(16, 32)
    first = pipeline(x, torch.Generator().manual_seed(3))
    assert first.dtype == torch.uint8 and first.shape == x.shape
    assert torch.equal(first, pipeline(x, torch.Generator().manual_seed(3)))
    assert not torch.equal(first, pipeline(x, torch.Generator().manual_seed(4)))
    assert not ExtraAugment().enabled and torch.equal(BatchPipeline(ExtraAugment())(x, None), x)


def test_train_config_flags_build_the_pipeline_and_bad_ranges_are_clear():
    from resnetkit.train.data import _batch_augment

    config = TrainConfig.from_flat(dict(augment="pad-crop-flip", rotation=10, cutout=16, random_erasing=0.25))
    augment = _batch_augment(config, (0.5, 0.5, 0.5))
    assert isinstance(augment, BatchPipeline) and augment.base is not None and augment.options.cutout == 16
    assert augment.fill.tolist() == [128, 128, 128]
    with pytest.raises(ValueError, match=r"width_shift=1.5 must be in \[0, 1\]"):
        ExtraAugment.from_config(TrainConfig.from_flat({"width_shift": 1.5}))
    with pytest.raises(ValueError, match="erasing_scale=.* must be two area fractions"):
        ExtraAugment.from_config(TrainConfig.from_flat({"erasing_scale": (0.5, 0.1)}))


def test_large_images_get_the_torchvision_equivalents_in_the_workers():
    from resnetkit.config import IMAGENET_PREPROCESS
    from resnetkit.data import random_resized_crop_transform

    options = ExtraAugment(rotation=20, width_shift=0.1, brightness=0.3, contrast=0.3, cutout=64, random_erasing=1.0)
    transform = with_worker_transforms(options, random_resized_crop_transform(IMAGENET_PREPROCESS), input_size=224)
    names = [type(t).__name__ for t in transform.transforms]
    assert names == ["ToImage", "RandomAffine", "ColorJitter", "Compose", "RandomErasing", "RandomErasing"]
    out = transform(torch.randint(0, 256, (3, 300, 260), dtype=torch.uint8))
    assert out.shape == (3, 224, 224) and out.dtype == torch.float32
    assert (out == 0).all(0).sum() >= 64 * 64  # the cutout square holds the mean colour (0 once normalised)


@pytest.mark.parametrize("name", [n for n in AUTO_AUGMENTS if n != "none"])
def test_each_automatic_policy_is_torchvisions_drawn_for_each_image_on_its_own(name):
    from torchvision.transforms import v2

    pipeline = BatchPipeline(ExtraAugment(auto_augment=name))
    assert isinstance(pipeline.policy, (v2.TrivialAugmentWide, v2.RandAugment, v2.AutoAugment, v2.AugMix))
    same = _batch(1, 32).expand(64, -1, -1, -1).contiguous()  # one image 64 times
    torch.manual_seed(0)
    out = pipeline(same, None)
    assert out.dtype == torch.uint8 and out.shape == same.shape
    assert len({tuple(o.flatten().tolist()) for o in out}) > 8  # a policy given the batch would draw one op for all
    torch.manual_seed(0)
    assert torch.equal(out, pipeline(same, None))  # the global RNG, which a checkpoint restores, decides
    grey = pipeline(_batch(4, 32)[:, :1], None)  # one-channel images (the digits) too
    assert grey.shape == (4, 1, 32, 32)


def test_automatic_policy_settings_are_checked_and_reach_torchvision():
    from torchvision.transforms import v2

    from resnetkit.data.augment_extra import POLICIES

    assert set(POLICIES) == set(AUTO_AUGMENTS) - {"none"}  # the flag's choices are the policies built

    config = TrainConfig.from_flat(dict(augment="pad-crop-flip", auto_augment="randaugment", randaugment_ops=3,
                                        randaugment_magnitude=14))
    policy = ExtraAugment.from_config(config).policy()
    assert isinstance(policy, v2.RandAugment) and policy.num_ops == 3 and policy.magnitude == 14
    assert ExtraAugment().policy() is None and not ExtraAugment().enabled
    for bad, match in (({"auto_augment": "randaug"}, "auto_augment='randaug' is not one of none, trivialaugment"),
                       ({"randaugment_magnitude": 31}, "randaugment_magnitude=31 must be a whole number from 0 to 30"),
                       ({"randaugment_ops": 0}, "randaugment_ops=0 must be a whole number from 1")):
        with pytest.raises(ValueError, match=match):
            ExtraAugment.from_config(TrainConfig.from_flat(bad))


def test_large_images_get_the_automatic_policy_after_their_crop_and_flip():
    from torchvision.transforms import v2

    from resnetkit.config import IMAGENET_PREPROCESS
    from resnetkit.data import random_resized_crop_transform

    transform = with_worker_transforms(ExtraAugment(auto_augment="trivialaugment"),
                                       random_resized_crop_transform(IMAGENET_PREPROCESS), input_size=224)
    inner = [type(t).__name__ for t in transform.transforms[1].transforms]
    assert inner == ["ToImage", "RandomResizedCrop", "RandomHorizontalFlip", "TrivialAugmentWide", "ToDtype",
                     "Normalize"]
    out = transform(torch.randint(0, 256, (3, 300, 260), dtype=torch.uint8))
    assert out.shape == (3, 224, 224) and out.dtype == torch.float32
    assert isinstance(transform.transforms[1].transforms[3], v2.TrivialAugmentWide)
