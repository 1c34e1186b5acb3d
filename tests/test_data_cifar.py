"""CIFAR-10/100 in the official python and binary formats, as folders and archives, by path or name."""

from __future__ import annotations

import io
import pickle
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from resnetkit.data import DataConfig, load_cifar, load_data, load_image_dataset, read_cifar
from resnetkit.data import cifar as cifar_module

N_PER_BATCH = 6


def _pixels(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 3072), dtype=np.uint8)


def _write_cifar(root: Path, dataset: str, kind: str) -> tuple[Path, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """A tiny CIFAR in the official layout; returns its folder and the (pixels, labels) of each split."""
    fmt = next(f for f in cifar_module.FORMATS if f.dataset == dataset and f.kind == kind)
    folder = root / fmt.folder
    folder.mkdir(parents=True)
    classes = 10 if dataset == "cifar10" else 100
    truth: dict[str, list] = {"train": [], "test": []}
    for split, names in (("train", fmt.train_files), ("test", fmt.test_files)):
        for k, name in enumerate(names):
            pixels = _pixels(N_PER_BATCH, seed=hash((split, k)) % 1000)
            fine = (np.arange(N_PER_BATCH) * 7 + k) % classes
            coarse = fine // 5
            truth[split].append((pixels, fine))
            if kind == "python":
                batch = {b"batch_label": b"x", b"data": pixels, b"filenames": [b"a.png"] * N_PER_BATCH}
                if dataset == "cifar10":
                    batch[b"labels"] = fine.tolist()
                else:
                    batch[b"fine_labels"], batch[b"coarse_labels"] = fine.tolist(), coarse.tolist()
                (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
            else:
                labels = fine[:, None] if dataset == "cifar10" else np.stack([coarse, fine], axis=1)
                (folder / name).write_bytes(np.concatenate([labels.astype(np.uint8), pixels], axis=1).tobytes())
    names10 = [f"class{i}" for i in range(10)]
    fine_names, coarse_names = [f"fine{i}" for i in range(100)], [f"coarse{i}" for i in range(20)]
    if kind == "python":
        meta = ({b"label_names": [n.encode() for n in names10]} if dataset == "cifar10" else
                {b"fine_label_names": [n.encode() for n in fine_names],
                 b"coarse_label_names": [n.encode() for n in coarse_names]})
        (folder / fmt.meta_files[0]).write_bytes(pickle.dumps(meta, protocol=2))
    elif dataset == "cifar10":
        (folder / "batches.meta.txt").write_text("\n".join(names10) + "\n\n")
    else:
        (folder / "fine_label_names.txt").write_text("\n".join(fine_names) + "\n")
        (folder / "coarse_label_names.txt").write_text("\n".join(coarse_names) + "\n")
    joined = {s: (np.concatenate([p for p, _ in v]), np.concatenate([l for _, l in v])) for s, v in truth.items()}
    return folder, joined


def _tar_gz(folder: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return archive


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
@pytest.mark.parametrize("kind", ["python", "binary"])
def test_official_folders_and_archives_read_pixels_labels_and_names_exactly(tmp_path, dataset, kind):
    folder, truth = _write_cifar(tmp_path / "src", dataset, kind)
    archive = _tar_gz(folder, tmp_path / "my-copy.tar.gz")  # not the official name: no MD5 check
    for source in (folder, folder.parent, archive):
        splits = read_cifar(source)
        for split in ("train", "test"):
            pixels, labels = truth[split]
            data = splits[split]
            assert data.images.shape == (len(labels), 3, 32, 32)
            # 1024 red, then green, then blue bytes, row-major.
            assert torch.equal(data.images, torch.from_numpy(pixels.reshape(-1, 3, 32, 32)))
            assert data.images[0, 1, 0, 1] == pixels[0, 1024 + 1]
            assert torch.equal(data.labels, torch.from_numpy(labels.astype(np.int64)))
        assert splits["train"].class_names[:2] == (["class0", "class1"] if dataset == "cifar10" else ["fine0", "fine1"])
    if dataset == "cifar100":
        coarse = read_cifar(folder, labels="coarse")["train"]
        assert coarse.num_classes == 20 and torch.equal(coarse.labels, torch.from_numpy(truth["train"][1] // 5))


def test_archive_with_the_official_name_is_checked_against_the_official_md5(tmp_path):
    folder, _ = _write_cifar(tmp_path / "src", "cifar10", "python")
    archive = _tar_gz(folder, tmp_path / "cifar-10-python.tar.gz")
    with pytest.raises(ValueError, match="c58f30108f718f92721af3b95e74349a.*download it again from https://www.cs"):
        read_cifar(archive)
    assert len(read_cifar(archive, check_md5=False)["train"]) == 5 * N_PER_BATCH


def test_official_md5s_match_the_published_table():
    md5 = {f.archive: f.md5 for f in cifar_module.FORMATS}
    assert md5 == {"cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a",
                   "cifar-10-binary.tar.gz": "c32a1d4ab5d03f1284b67883e8d87530",
                   "cifar-100-python.tar.gz": "eb9058c3a382ffc7106e4002c42a8d85",
                   "cifar-100-binary.tar.gz": "03b5dce01913d631647c71ecec9e9cb8"}


def test_pickles_that_would_run_code_are_refused(tmp_path):
    folder, _ = _write_cifar(tmp_path, "cifar10", "python")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (folder / "data_batch_1").write_bytes(pickle.dumps({b"data": Evil()}))
    with pytest.raises(ValueError, match="refusing to load builtins.print"):
        read_cifar(folder)


def test_truncated_binary_batch_is_explained(tmp_path):
    folder, _ = _write_cifar(tmp_path, "cifar10", "binary")
    data = (folder / "data_batch_2.bin").read_bytes()
    (folder / "data_batch_2.bin").write_bytes(data[:-100])
    with pytest.raises(ValueError, match="data_batch_2.bin .* not a whole number of 3073-byte"):
        read_cifar(folder)


@pytest.mark.parametrize("edit, expected", [
    (lambda b: [b], r"data_batch_3 is not a CIFAR batch: it lacks 'data' or 'labels'"),
    (lambda b: {**b, b"data": b[b"data"][:, :100]}, r"data_batch_3 holds uint8 pixels of shape \(6, 100\)"),
    (lambda b: {**b, b"data": b[b"data"].astype(np.float64)}, r"data_batch_3 holds float64 pixels"),
    (lambda b: {**b, b"labels": b[b"labels"][:2]}, r"data_batch_3 has \(2,\) labels .* for 6 images"),
    (lambda b: {**b, b"labels": [0.5] * 6}, r"data_batch_3 has \(6,\) labels of type float64"),
    (lambda b: {**b, b"labels": [0, 1, 2, 3, 4, 99]}, r"data_batch_3 has labels from 0 to 99, but the meta file "
                                                      r"names 10 classes"),
    # A few kB of pickle that repeats one inner list: gigabytes as an array (refused before it is built).
    (lambda b: {**b, b"data": [[[1] * 3072] * 1000] * 1000}, r"data_batch_3 is not a CIFAR batch: its 'data' is a "
                                                              r"list and its 'labels' a list"),
    (lambda b: {**b, b"labels": [[0] * 1000] * 1000}, r"its 'labels' a list, where a CIFAR batch holds"),
], ids=["list", "short-rows", "floats", "too-few-labels", "float-labels", "label-out-of-range", "nested-list-bomb",
        "nested-labels"])
def test_an_edited_pickle_batch_is_refused_naming_the_dataset_and_the_file(tmp_path, edit, expected):
    folder, _ = _write_cifar(tmp_path, "cifar10", "python")
    batch = pickle.loads((folder / "data_batch_3").read_bytes())
    (folder / "data_batch_3").write_bytes(pickle.dumps(edit(batch), protocol=2))
    with pytest.raises(ValueError, match=expected) as caught:
        read_cifar(folder)
    assert str(caught.value).startswith(f"{folder}: ") and "Download the official archive again" in str(caught.value)


@pytest.mark.parametrize("kind", ["python", "binary"])
def test_a_meta_file_without_class_names_is_refused(tmp_path, kind):
    folder, _ = _write_cifar(tmp_path, "cifar10", kind)
    meta = folder / ("batches.meta" if kind == "python" else "batches.meta.txt")
    meta.write_bytes(pickle.dumps({b"label_names": []}) if kind == "python" else b"\n\n")
    with pytest.raises(ValueError, match=r"batches\.meta(\.txt)? (is not a CIFAR meta file|lists 0 class names)"):
        read_cifar(folder)


def test_a_binary_label_past_the_class_names_is_refused(tmp_path):
    folder, _ = _write_cifar(tmp_path, "cifar10", "binary")
    data = bytearray((folder / "test_batch.bin").read_bytes())
    data[0] = 200  # the first record's label byte
    (folder / "test_batch.bin").write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"test_batch\.bin has labels from \d+ to 200"):
        read_cifar(folder)


def test_named_dataset_is_found_under_root_and_split_for_validation(tmp_path):
    _write_cifar(tmp_path, "cifar100", "binary")
    test = load_cifar("cifar100", "test", root=tmp_path)
    assert len(test) == N_PER_BATCH and test.num_classes == 100
    splits = load_data(DataConfig(source="cifar100", root=str(tmp_path), val_split=0, seed=3))
    assert (len(splits.train), splits.val, len(splits.test)) == (N_PER_BATCH, None, N_PER_BATCH)
    # Here each class has one training image: any held-out image would leave its class nothing to train on.
    with pytest.raises(ValueError, match=r"cannot hold out 2 of the 6 training images; choose 0 .* to at most 0"):
        load_data(DataConfig(source="cifar100", root=str(tmp_path), val_split=2, seed=3))
    assert len(load_image_dataset(str(tmp_path / "cifar-100-binary"), split="test")) == N_PER_BATCH


def test_missing_dataset_offline_says_where_it_looked_and_what_to_do(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match=r"cifar10 was not found in .*download=True.*cifar-10-python.tar.gz"):
        load_cifar("cifar10", root=tmp_path)

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr("torchvision.datasets.utils.download_url", offline)
    with pytest.raises(RuntimeError, match=r"could not download https://www.cs.toronto.edu/~kriz/cifar-10-python"
                                           r".tar.gz .*copy it into"):
        load_cifar("cifar10", root=tmp_path, download=True)


def test_download_places_the_archive_and_reads_it(tmp_path, monkeypatch):
    folder, truth = _write_cifar(tmp_path / "elsewhere", "cifar10", "python")
    payload = io.BytesIO()
    with tarfile.open(fileobj=payload, mode="w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    calls = []

    def fake_download(url, root, filename=None, md5=None):
        calls.append((url, md5))
        Path(root, filename).write_bytes(payload.getvalue())

    monkeypatch.setattr("torchvision.datasets.utils.download_url", fake_download)
    monkeypatch.setattr(cifar_module, "md5sum", lambda path: "c58f30108f718f92721af3b95e74349a")
    data = load_cifar("cifar10", "test", root=tmp_path / "root", download=True)
    assert calls == [("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a")]
    assert torch.equal(data.labels, torch.from_numpy(truth["test"][1].astype(np.int64)))


def test_a_broken_download_leaves_no_partial_archive(tmp_path, monkeypatch):
    def half_then_fail(url, root, filename=None, md5=None):
        Path(root, filename).write_bytes(b"\x1f\x8b half an archive")
        raise RuntimeError("File not found or corrupted.")

    monkeypatch.setattr("torchvision.datasets.utils.download_url", half_then_fail)
    with pytest.raises(RuntimeError, match="could not download"):
        load_cifar("cifar10", root=tmp_path, download=True)
    assert list(tmp_path.iterdir()) == []  # neither the partial archive nor the temporary folder is left
    with pytest.raises(FileNotFoundError, match="cifar10 was not found"):
        load_cifar("cifar10", root=tmp_path)


def test_train_on_cifar100_superclasses(tmp_path):
    from resnetkit.cli import main
    from resnetkit.models import load_model

    folder, _ = _write_cifar(tmp_path, "cifar100", "binary")
    assert main(["train", "--recipe", "demo", "--data", str(folder), "--cifar100-labels", "coarse", "--epochs", "1",
                 "--batch-size", "2", "--out-dir", str(tmp_path / "run"), "--no-progress"]) == 0
    _, info = load_model(tmp_path / "run" / "model.safetensors")
    assert info.class_names == [f"coarse{i}" for i in range(20)]
    assert main(["eval", str(tmp_path / "run" / "model.safetensors"), str(folder), "--cifar100-labels", "coarse",
                 "--out-dir", str(tmp_path / "eval")]) == 0
    assert main(["eval", str(tmp_path / "run" / "model.safetensors"), str(folder),
                 "--out-dir", str(tmp_path / "eval")]) == 2  # fine labels: classes the model does not know
    # The option means nothing for other data: an error, not a silent no-op.
    with pytest.raises(ValueError, match="not CIFAR-100"):
        load_image_dataset("digits", cifar100_labels="coarse")
