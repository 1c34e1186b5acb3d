"""In-memory data: batch augmentation, normalisation, the batch loader, splits and the digits demo."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from resnetkit.data import (BatchAugment, InMemoryImageDataset, InMemoryLoader, load_digits_dataset, normalize,
                            random_crop_flip, split_holdout, stratified_split)


def _toy(n: int = 50, classes: int = 5, size: int = 8) -> InMemoryImageDataset:
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    return InMemoryImageDataset(images, torch.arange(n) % classes, [f"c{i}" for i in range(classes)], source="toy")


def test_crop_flip_outputs_are_windows_of_the_padded_image_possibly_mirrored():
    images = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)
    out = random_crop_flip(images, padding=2, generator=torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.dtype == torch.uint8
    assert out.is_contiguous(memory_format=torch.channels_last)
    padded = F.pad(images, (2, 2, 2, 2))
    flips, shifts = 0, set()
    for n in range(64):
        windows = {(dy, dx, flip): (padded[n, :, dy:dy + 8, dx:dx + 8].flip(-1) if flip else
                                    padded[n, :, dy:dy + 8, dx:dx + 8])
                   for dy in range(5) for dx in range(5) for flip in (False, True)}
        match = [key for key, w in windows.items() if torch.equal(w, out[n])]
        assert match, f"sample {n} is not a padded crop"
        flips += match[0][2]
        shifts.add(match[0][:2])
    assert 10 < flips < 54 and len(shifts) > 10  # both flips and many offsets occur


def test_augmentation_is_seeded_and_identity_without_padding_or_flip():
    images = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8)
    a = BatchAugment()(images, torch.Generator().manual_seed(3))
    b = BatchAugment()(images, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert torch.equal(BatchAugment(padding=0, flip=False)(images), images)
    float_out = random_crop_flip(images.float() / 255, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(float_out * 255, a.float())


def test_normalize_matches_torchvision_and_honours_channels_last():
    from torchvision.transforms import v2
    images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    expected = v2.Normalize(mean, std)(images.float() / 255)
    out = normalize(images, mean, std, channels_last=True)
    assert out.is_contiguous(memory_format=torch.channels_last) and out.dtype == torch.float32
    torch.testing.assert_close(out, expected)
    assert normalize(images, mean, std, dtype=torch.bfloat16).dtype == torch.bfloat16


def test_loader_shuffles_per_epoch_reproducibly_and_covers_every_sample():
    data = _toy(50)
    loader = InMemoryLoader(data, batch_size=16, seed=7)
    assert len(loader) == 4
    epoch0 = torch.cat([y for _, y in loader])
    epoch1 = torch.cat([y for _, y in loader])
    assert len(epoch0) == 50 and not torch.equal(epoch0, epoch1)
    again = InMemoryLoader(data, batch_size=16, seed=7)
    again.set_epoch(1)
    assert torch.equal(torch.cat([y for _, y in again]), epoch1)  # resume at epoch 1 sees the same order
    assert sorted(loader.indices(0).tolist()) == list(range(50))


def test_loader_batches_are_the_dataset_images_normalised():
    data = _toy(10)
    loader = InMemoryLoader(data, batch_size=4, shuffle=False, mean=(0.5,) * 3, std=(0.25,) * 3, channels_last=True)
    images, labels = next(iter(loader))
    assert images.dtype == torch.float32 and images.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(images, (data.images[:4].float() / 255 - 0.5) / 0.25)
    assert torch.equal(labels, data.labels[:4])
    raw, _ = next(iter(InMemoryLoader(data, batch_size=4, shuffle=False)))
    assert raw.dtype == torch.uint8 and torch.equal(raw, data.images[:4])


def test_augmented_batches_are_reproducible_per_epoch_and_differ_between_epochs():
    data = _toy(32)
    def make() -> InMemoryLoader:
        return InMemoryLoader(data, batch_size=32, seed=5, shuffle=False, augment=BatchAugment(padding=2))

    loader = make()
    first, second = next(iter(loader))[0], next(iter(loader))[0]
    assert not torch.equal(first, second)
    assert torch.equal(next(iter(make()))[0], first)


@pytest.mark.parametrize("drop_last", [False, True])
def test_distributed_shards_are_disjoint_and_equal_sized(drop_last):
    data = _toy(53)
    shards = [InMemoryLoader(data, batch_size=8, seed=1, rank=r, world_size=4, drop_last=drop_last) for r in range(4)]
    seen = [s.indices(0) for s in shards]
    assert len({len(s) for s in shards}) == 1 and len({len(i) for i in seen}) == 1
    everything = torch.cat(seen)
    if drop_last:
        assert len(everything) == 52 and len(set(everything.tolist())) == 52
        assert all(len(s) == 1 for s in shards)  # 13 per rank -> one full batch of 8
    else:
        assert set(everything.tolist()) == set(range(53)) and len(everything) == 56
    # Different ranks draw different augmentations: with every sample the same image, only the augmentation
    # can tell two ranks' batches apart; the same rank and seed reproduce theirs exactly.
    same = InMemoryImageDataset(data.images[:1].expand(32, -1, -1, -1).clone(), torch.zeros(32), ["c0"])
    def augmented(rank: int) -> torch.Tensor:
        loader = InMemoryLoader(same, batch_size=16, seed=1, rank=rank, world_size=2, augment=BatchAugment())
        return torch.cat([images for images, _ in loader])

    batches = [augmented(r) for r in range(2)]
    assert all(b.shape == (16, 3, 8, 8) for b in batches)
    assert not torch.equal(batches[0], same.images[:16])  # the augmentation did run
    assert not torch.equal(batches[0], batches[1])
    assert sum(torch.equal(a, b) for a, b in zip(*batches)) < 8  # most samples differ, not just one
    assert torch.equal(augmented(0), batches[0]) and torch.equal(augmented(1), batches[1])


def test_stratified_split_is_exact_seeded_and_proportional():
    labels = torch.tensor([0] * 500 + [1] * 300 + [2] * 200)
    keep, held = stratified_split(labels, 100, seed=0)
    assert len(held) == 100 and len(keep) == 900 and not set(keep.tolist()) & set(held.tolist())
    assert torch.bincount(labels[held]).tolist() == [50, 30, 20]
    assert torch.equal(held, stratified_split(labels, 100, seed=0)[1])
    assert not torch.equal(held, stratified_split(labels, 100, seed=1)[1])
    train, val = split_holdout(_toy(50), 10, seed=0)
    assert len(train) == 40 and val.class_counts().tolist() == [2] * 5 and val.class_names == train.class_names
    with pytest.raises(ValueError, match=r"val_split=1000 \(--val-split\): cannot hold out 1000 of the 1000 training "
                                         r"images; choose 0 \(no validation split\) to at most 997, which leaves each of the "
                                         r"3 classes an image"):
        stratified_split(labels, 1000, seed=0)


def test_dataset_rejects_mismatched_labels_with_a_clear_message():
    with pytest.raises(ValueError, match="class names"):
        InMemoryImageDataset(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.tensor([0, 3]), ["a", "b"])
    with pytest.raises(ValueError, match="uint8"):
        InMemoryImageDataset(torch.zeros(2, 3, 4, 4), torch.tensor([0, 1]), ["a", "b"])


def test_digits_demo_has_a_fixed_stratified_split():
    train, test = load_digits_dataset("train"), load_digits_dataset("test")
    assert train.images.shape == (1437, 3, 16, 16) and test.images.shape == (360, 3, 16, 16)
    assert train.class_names == [str(d) for d in range(10)]
    assert test.class_counts().min() >= 35
    assert torch.equal(test.images, load_digits_dataset("test").images)
    assert load_digits_dataset("test", size=8).image_size == (8, 8)


def test_bundled_digits_are_scikit_learns_digits():
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    bunch = sklearn_datasets.load_digits()
    both = [load_digits_dataset(split, size=8) for split in ("train", "test")]
    images = torch.cat([d.images[:, 0] for d in both]).double()
    labels = torch.cat([d.labels for d in both])
    expected = torch.as_tensor(bunch.images) * (255.0 / 16.0)
    assert len(labels) == 1797 and torch.equal(labels.sort().values, torch.as_tensor(bunch.target).sort().values)
    # The same images with the same labels (the split reorders them): compare the sorted (pixels, label) lists.
    ours = sorted((bytes(image.numpy().astype("uint8")), int(label)) for image, label in zip(images, labels))
    theirs = sorted((bytes(image.round().astype("uint8")), int(label)) for image, label in
                    zip(expected.numpy(), bunch.target))
    assert ours == theirs


@pytest.mark.slow
def test_resnet20_reaches_97_percent_on_digits_in_a_few_epochs():
    from resnetkit import create_model
    train, test = load_digits_dataset("train"), load_digits_dataset("test")
    mean, std = train.mean_std()
    loader = InMemoryLoader(train, batch_size=64, drop_last=True, augment=BatchAugment(padding=2, flip=False),
                            mean=mean, std=std)
    model = create_model("resnet20")
    epochs = 12
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.2, total_steps=epochs * len(loader))
    for _ in range(epochs):
        model.train()
        for images, labels in loader:
            loss = F.cross_entropy(model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(normalize(test.images, mean, std)).argmax(1) == test.labels).float().mean().item()
    assert accuracy >= 0.97


def test_an_in_memory_dataset_larger_than_half_the_memory_is_refused_before_allocating():
    from resnetkit.config import DataConfig
    from resnetkit.data import load_data

    with pytest.raises(ValueError, match=r"digits: .* images of 8192x8192 held in memory need .* GiB.*--augment rrc"):
        load_data(DataConfig(source="digits", image_size=8192))
