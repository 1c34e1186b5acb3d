"""Image folders and tars: indexing, decoding once into memory, the disk cache, bad files, large-image loaders."""

from __future__ import annotations

import io
import logging
import os
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from resnetkit.config import IMAGENET_PREPROCESS, Preprocess
from resnetkit.data import (DataConfig, ImageFileDataset, build_file_loader, eval_transform, index_tree, load_data,
                            load_image_dataset, load_tree_in_memory, paper_train_transform,
                            random_resized_crop_transform, stratified_split)
from resnetkit.data.cache import cache_path
from resnetkit.data.tree import tree_splits

# The library silences torchvision 0.29's per-call decoder deprecation notice; pytest resets filters per test.
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RESNETKIT_CACHE", str(tmp_path / "cache"))


def _image(seed: int, size=(12, 12), mode="RGB") -> Image.Image:
    array = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    return Image.fromarray(array).convert(mode)


def _encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    return buffer.getvalue()


def _tree(root: Path, *, bad: bool = True) -> dict[str, bytes]:
    """cat/ and dog/ with PNG, JPEG, WebP, grey and RGBA images; plus a corrupt JPEG and a text file named .jpg."""
    files = {
        "cat/0.png": _encoded(_image(0), "PNG"),
        "cat/1.jpg": _encoded(_image(1), "JPEG"),
        "cat/sub/2.webp": _encoded(_image(2), "WEBP"),
        "dog/0.png": _encoded(_image(3, mode="L"), "PNG"),
        "dog/1.PNG": _encoded(Image.fromarray(np.random.default_rng(4).integers(0, 256, (12, 12, 4), dtype=np.uint8),
                                              "RGBA"), "PNG"),  # every level of transparency
        "dog/notes.txt": b"not an image",
        "stray.png": _encoded(_image(5), "PNG"),
    }
    if bad:
        files["dog/truncated.jpg"] = _encoded(_image(6), "JPEG")[:200]
        files["cat/text.jpg"] = b"this is a text file, not a JPEG\n"
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def _tar(root: Path, archive: Path, arcname: str = "") -> Path:
    with tarfile.open(archive, "w:gz" if archive.name.endswith("gz") else "w") as tar:
        tar.add(root, arcname=arcname or ".")
    return archive


def test_folder_is_indexed_by_class_and_non_images_are_listed(tmp_path, caplog):
    _tree(tmp_path / "tree")
    with caplog.at_level(logging.INFO, logger="resnetkit"):
        tree = index_tree(tmp_path / "tree")
    # An image beside the class folders is one the user may have meant: a warning; a text file, a detail.
    said = {r.levelno: r.getMessage() for r in caplog.records}
    assert "left out 1 image(s) not inside a class folder (e.g. " in said[logging.WARNING]
    assert "left out 1 non-image file(s)" in said[logging.INFO]
    assert tree.class_names == ["cat", "dog"]
    names = sorted(Path(p).relative_to(tmp_path / "tree").as_posix() for p in tree.paths)
    assert names == ["cat/0.png", "cat/1.jpg", "cat/sub/2.webp", "cat/text.jpg", "dog/0.png", "dog/1.PNG",
                     "dog/truncated.jpg"]
    reasons = {Path(p).name: r for p, r in tree.skipped}
    assert reasons == {"notes.txt": "not an image file (extension)", "stray.png": "not inside a class folder"}


@pytest.mark.parametrize("container", ["folder", "tar", "tar.gz"])
def test_bad_files_are_reported_by_path_and_skipped_never_crash(tmp_path, container):
    files = _tree(tmp_path / "tree")
    source = tmp_path / "tree"
    if container != "folder":
        source = _tar(tmp_path / "tree", tmp_path / f"t.{container}", "train")
    with pytest.warns(UserWarning) as caught:
        data = load_image_dataset(str(source), image_size=12)
    message = "\n".join(str(w.message) for w in caught)
    assert "truncated.jpg" in message and "text.jpg" in message and "notes.txt" in message
    assert data.images.shape == (5, 3, 12, 12) and data.labels.tolist() == [0, 0, 0, 1, 1]
    skipped = {Path(p.split(":")[-1]).name for p, _ in data.skipped}
    assert {"truncated.jpg", "text.jpg", "notes.txt", "stray.png"} <= skipped
    # Pixels are the originals (PNG/WebP lossless), grey replicated to RGB, transparent pixels composited on
    # white (the one rule of predict and serve too; this test used to assert that alpha was dropped).
    cat_png = np.array(Image.open(io.BytesIO(files["cat/0.png"])).convert("RGB"))
    assert torch.equal(data.images[0], torch.from_numpy(cat_png).permute(2, 0, 1))
    grey = np.array(Image.open(io.BytesIO(files["dog/0.png"])))
    assert torch.equal(data.images[3, 1], torch.from_numpy(grey))
    rgba = np.array(Image.open(io.BytesIO(files["dog/1.PNG"]))).astype(int)
    on_white = (rgba[..., :3] * rgba[..., 3:] + 255 * (255 - rgba[..., 3:]) + 127) // 255
    assert torch.equal(data.images[4], torch.from_numpy(on_white.astype(np.uint8)).permute(2, 0, 1))


def test_a_class_whose_every_file_is_unreadable_is_refused_by_name(tmp_path):
    """Before: a 'broken' folder of two unreadable files counted as the second class, and a model that learnt
    nothing was reported at 100% top-1 on the one real class."""
    for i in range(4):
        (tmp_path / "tree" / "cat").mkdir(parents=True, exist_ok=True)
        _image(i).save(tmp_path / "tree" / "cat" / f"{i}.png")
    (tmp_path / "tree" / "broken").mkdir()
    for name in ("a.png", "b.jpg"):
        (tmp_path / "tree" / "broken" / name).write_bytes(b"not an image")
    with pytest.warns(UserWarning), pytest.raises(ValueError, match=r"tree: 1 class folder\(s\) \('broken'\) have no "
                                                                  r"readable training images"):
        load_data(DataConfig(source=str(tmp_path / "tree")))


def test_val_split_holds_out_the_same_files_decoded_in_memory_or_read_one_by_one(tmp_path):
    # Training on small images decodes the tree first (bad files drop out there); training on large images
    # and `resnetkit eval --val-split` read files one by one (a bad file shows only when read). Both must
    # hold out the same files, or eval would measure images the model trained on.
    _tree(tmp_path / "tree")
    in_files = ImageFileDataset(tmp_path / "tree")
    bad_fell_in_held = bad_fell_in_kept = False
    for seed in range(8):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            splits = load_data(DataConfig(source=str(tmp_path / "tree"), val_split=3, seed=seed, cache=seed > 0))
            keep, held = stratified_split(torch.tensor(in_files.tree.labels), 3, seed=seed)
            read = {name: [in_files[i] for i in index.tolist()] for name, index in (("train", keep), ("val", held))}
        for name, memory in (("train", splits.train), ("val", splits.val)):
            decoded = [sample for sample in read[name] if sample is not None]
            assert len(decoded) == len(memory)
            for (image, label), row in zip(decoded, range(len(memory))):
                assert torch.equal(image, memory.images[row]) and label == int(memory.labels[row])
        bad_fell_in_held |= None in read["val"]
        bad_fell_in_kept |= None in read["train"]
    assert bad_fell_in_held and bad_fell_in_kept  # both cases were exercised


def test_tar_with_split_folders_reads_each_split(tmp_path):
    _tree(tmp_path / "all" / "train", bad=False)
    _tree(tmp_path / "all" / "test", bad=False)
    archive = _tar(tmp_path / "all", tmp_path / "splits.tar")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        splits = load_data(DataConfig(source=str(archive), val_split=2, seed=0, image_size=8))
    assert (len(splits.train), len(splits.val), len(splits.test)) == (3, 2, 5)
    assert splits.class_names == ["cat", "dog"] and splits.val.class_counts().tolist() == [1, 1]
    assert splits.train.image_size == (8, 8)
    assert index_tree(archive, split="test").paths[0].startswith("./test/")
    assert index_tree(tmp_path / "all" / "train", split="test") is None


def test_mixed_sizes_are_resized_to_the_most_common_size_not_the_first_images(tmp_path):
    for i, size in enumerate([(10, 10), (20, 30), (10, 10)]):
        (tmp_path / "tree" / "a").mkdir(parents=True, exist_ok=True)
        _image(i, size).save(tmp_path / "tree" / "a" / f"{i}.png")
    data = load_tree_in_memory(tmp_path / "tree", cache=False)
    assert data.images.shape == (3, 3, 10, 10)
    as_chw = lambda image: torch.from_numpy(np.array(image)).permute(2, 0, 1)  # noqa: E731
    assert torch.equal(data.images[0], as_chw(_image(0, (10, 10))))  # the first size: kept as it is
    assert torch.equal(data.images[2], as_chw(_image(2, (10, 10))))
    # 20x30 (H x W): the shorter side to 10 with PIL's bilinear (10x15), then the centre 10x10.
    resized = as_chw(_image(1, (20, 30)).resize((15, 10), Image.Resampling.BILINEAR))
    assert torch.equal(data.images[1], resized[:, :, 2:12])
    # One odd image first (a 1x64 strip, named to sort first) no longer sets the size of all the others.
    _image(9, (64, 1)).save(tmp_path / "tree" / "a" / "!strip.png")
    assert load_tree_in_memory(tmp_path / "tree", cache=False).images.shape == (4, 3, 10, 10)


def test_decoded_tree_is_cached_by_content_and_a_corrupt_cache_is_rebuilt(tmp_path):
    _tree(tmp_path / "tree", bad=False)
    archive = _tar(tmp_path / "tree", tmp_path / "t.tar")
    with pytest.warns(UserWarning, match="notes.txt"):  # skipped files are reported on every load
        first = load_tree_in_memory(archive, image_size=12)
        path = cache_path(archive, {"split": "train", "image_size": 12})
        assert path.exists() and str(path).startswith(os.environ["RESNETKIT_CACHE"])
        assert not list(path.parent.glob(".*.tmp*"))
        again = load_tree_in_memory(archive, image_size=12)
    assert torch.equal(first.images, again.images) and again.class_names == first.class_names

    path.write_bytes(b"garbage, as left by a crash or a full disk")
    with pytest.warns(UserWarning) as caught:
        rebuilt = load_tree_in_memory(archive, image_size=12)
    assert any("ignoring unreadable cache file" in str(w.message) for w in caught)
    assert torch.equal(rebuilt.images, first.images)
    with pytest.warns(UserWarning, match="skipped 2 file") as caught:
        assert load_tree_in_memory(archive, image_size=12) is not None  # the rewritten cache reads back
    assert not [w for w in caught if "unreadable cache" in str(w.message)]

    # The key follows the archive's bytes: a copy elsewhere finds the cache, while one changed byte (with size
    # and modification time kept as they were) gets a new key.
    copy = tmp_path / "elsewhere" / "t.tar"
    copy.parent.mkdir()
    copy.write_bytes(archive.read_bytes())
    assert cache_path(copy, {"split": "train", "image_size": 12}) == path
    stat = archive.stat()
    content = bytearray(archive.read_bytes())
    content[-1] ^= 1
    archive.write_bytes(bytes(content))
    os.utime(archive, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert archive.stat().st_size == stat.st_size
    assert cache_path(archive, {"split": "train", "image_size": 12}) != path


def test_image_file_dataset_decodes_per_sample_and_the_loader_drops_bad_files(tmp_path):
    _tree(tmp_path / "tree")
    archive = _tar(tmp_path / "tree", tmp_path / "t.tar")
    small = Preprocess(input_size=8, resize_size=10)
    with pytest.warns(UserWarning, match="notes.txt"):
        dataset = ImageFileDataset(archive, transform=eval_transform(small))
    assert len(dataset) == 7 and dataset.class_names == ["cat", "dog"]
    loader = build_file_loader(dataset, batch_size=8, num_workers=0, shuffle=True, seed=0)
    images, labels = next(iter(loader))
    assert images.shape == (5, 3, 8, 8) and images.dtype == torch.float32 and len(labels) == 5
    with pytest.raises(ValueError, match="compressed tar"):
        ImageFileDataset(_tar(tmp_path / "tree", tmp_path / "t.tar.gz"))


def test_large_image_transforms_follow_the_paper_and_preprocess():
    image = torch.randint(0, 256, (3, 300, 400), dtype=torch.uint8)
    for transform in (paper_train_transform(), random_resized_crop_transform(), eval_transform()):
        assert transform(image).shape == (3, 224, 224)
    evaluated = eval_transform(IMAGENET_PREPROCESS)(image)
    # The classic torchvision pipeline on a PIL image: shorter side to 256 (PIL bilinear), centre crop 224,
    # to [0, 1], ImageNet mean and std.
    from torchvision import transforms
    classic = transforms.Compose([transforms.Resize(256, interpolation=transforms.InterpolationMode.BILINEAR),
                                  transforms.CenterCrop(224), transforms.ToTensor(),
                                  transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    expected = classic(Image.fromarray(image.permute(1, 2, 0).numpy()))
    assert expected.shape == (3, 224, 224)
    torch.testing.assert_close(evaluated, expected)
    with pytest.raises(ValueError, match="min_size"):
        paper_train_transform(min_size=100)
    # Section 3.4: the shorter side is resized to a length drawn from [256, 480].
    assert paper_train_transform().transforms[1].min_size == list(range(256, 481))


def test_pca_lighting_shifts_each_image_along_imagenets_colour_components():
    from resnetkit.data.transforms import IMAGENET_PCA_EIGVAL, IMAGENET_PCA_EIGVEC, PCALighting

    torch.manual_seed(0)
    image = torch.rand(3, 6, 6)
    assert torch.equal(PCALighting(0.0)(image), image)
    eigvec, eigval = torch.tensor(IMAGENET_PCA_EIGVEC), torch.tensor(IMAGENET_PCA_EIGVAL)
    alphas = []
    for _ in range(2000):
        offset = PCALighting(0.1)(image) - image
        assert torch.allclose(offset, offset[:, :1, :1].expand_as(offset), atol=1e-6)  # one colour shift per image
        alphas.append(torch.linalg.solve(eigvec, offset[:, 0, 0]) / eigval)
    alphas = torch.stack(alphas)
    assert alphas.std(0).sub(0.1).abs().max() < 0.01 and alphas.mean(0).abs().max() < 0.01
    # The paper's recipe puts it after the crop and flip, before normalising.
    names = [type(t).__name__ for t in paper_train_transform(lighting=0.1).transforms]
    assert names[-3:] == ["ToDtype", "PCALighting", "Normalize"]


@pytest.mark.slow
def test_shared_cifar10_jpeg_tar_decodes_to_50000_images(cifar_jpeg_tar):
    data = load_image_dataset(str(cifar_jpeg_tar), cache=False)
    assert data.images.shape == (50000, 3, 32, 32) and data.class_counts().tolist() == [5000] * 10
    assert data.class_names[0] == "airplane" and not data.skipped


def test_training_decodes_exif_rotated_photos_upright_as_predict_does(tmp_path):
    """A JPEG stored on its side with an EXIF orientation tag is decoded upright for training and
    evaluation, exactly as ``resnetkit predict`` shows it to the model."""
    from PIL import Image

    from resnetkit.data import decode_rgb
    from resnetkit.infer.images import load_image

    stored = Image.new("RGB", (40, 20), (255, 255, 255))
    stored.paste((255, 0, 0), (0, 0, 20, 20))  # left half red; orientation 6: rotate 90 degrees clockwise to view
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(tmp_path / "side.jpg", exif=exif.tobytes(), quality=95)
    decoded = decode_rgb((tmp_path / "side.jpg").read_bytes())
    assert decoded.shape == (3, 40, 20)  # upright: taller than wide
    assert decoded[1, 5, 10] < 80 and decoded[1, 35, 10] > 200  # the red half is now at the top
    shown = torch.from_numpy(np.asarray(load_image(tmp_path / "side.jpg"))).permute(2, 0, 1)
    assert (decoded.float() - shown.float()).abs().mean() < 3  # the same picture, up to JPEG decoder rounding


def test_a_link_loop_in_an_image_folder_is_listed_once_and_ends(tmp_path):
    import os

    from resnetkit.data.cache import source_fingerprint
    from resnetkit.data.tree import index_tree

    for name in ("cat", "dog"):
        (tmp_path / "tree" / name).mkdir(parents=True)
        Image.new("RGB", (8, 8), (9, 9, 9)).save(tmp_path / "tree" / name / "a.png")
    os.symlink("..", tmp_path / "tree" / "cat" / "loop")  # back to the root: a cycle
    os.symlink("../cat", tmp_path / "tree" / "dog" / "cats")  # a second way into cat
    index = index_tree(tmp_path / "tree")
    assert len(index.paths) == 2 and index.class_names == ["cat", "dog"]
    assert len(source_fingerprint(tmp_path / "tree")) == 1 + 2


@pytest.mark.parametrize("compression", ["", "gz"])
def test_tar_members_that_are_not_class_images_are_left_out_with_a_reason(tmp_path, compression):
    """Links, devices, absolute and '..' names, and a name given twice: each left out and listed, never made a class
    ('' or '..') or read in place of another member."""
    png = _encoded(_image(0), "PNG")
    archive = tmp_path / f"odd.tar{'.' + compression if compression else ''}"
    with tarfile.open(archive, f"w:{compression}") as tar:
        def add(name: str, data: bytes = png, **kind) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data) if not kind else 0
            for key, value in kind.items():
                setattr(info, key, value)
            tar.addfile(info, io.BytesIO(data) if not kind else None)

        for i in range(2):
            add(f"cat/{i}.png")
            add(f"dog/{i}.png")
        add("dog/0.png", b"a second member of the same name")
        add("./cat//0.png", b"the same name spelled another way")
        for hidden in (".git/HEAD", ".ipynb_checkpoints/0.png", "cat/.thumbs/0.png"):  # as a folder's listing: passed
            add(hidden)  # over (they were a class '.ipynb_checkpoints', or a split folder beside train/)
        add("/abs/cat/abs.png")
        add("../evil/dot.png")
        add("cat/soft.png", type=tarfile.SYMTYPE, linkname="cat/0.png")
        add("cat/hard.png", type=tarfile.LNKTYPE, linkname="cat/0.png")
        add("cat/fifo.png", type=tarfile.FIFOTYPE)
    tree = index_tree(archive)
    assert tree.class_names == ["cat", "dog"] and len(tree.paths) == 4
    reasons = {label.split(":", 1)[1]: reason for label, reason in tree.skipped}
    assert reasons == {"dog/0.png": "a second member of the same name (the first one is used)",
                       "cat//0.png": "a second member of the same name (the first one is used)",
                       "/abs/cat/abs.png": "an absolute path or '..' in its name: not a <class>/<image> member",
                       "../evil/dot.png": "an absolute path or '..' in its name: not a <class>/<image> member",
                       "cat/soft.png": "a link in the archive, not a file (store the image itself)",
                       "cat/hard.png": "a link in the archive, not a file (store the image itself)",
                       "cat/fifo.png": "not a file (a device or pipe entry)"}
    with pytest.warns(UserWarning, match="skipped 7 file"):
        data = load_image_dataset(str(archive), image_size=12)
    assert data.labels.tolist() == [0, 1, 0, 1]  # in the archive's order; the first dog/0.png decoded


def test_class_folders_named_in_other_encodings_or_with_control_characters_give_printable_names(tmp_path):
    """Before: a Latin-1 folder name became a class 'caf\\udce9' that no report or plot could write."""
    root = tmp_path / "tree"
    for folder in (os.fsdecode(b"caf\xe9"), "two\nlines", "plain"):
        (root / folder).mkdir(parents=True)
        _image(0).save(root / folder / "0.png")
    tree = index_tree(root)
    assert tree.class_names == ["caf\ufffd", "plain", "two\ufffdlines"]
    assert all(name.encode("utf-8") for name in tree.class_names)  # each one writable as UTF-8 text


def test_a_long_skipped_list_is_one_warning_and_the_rest_is_debug_detail(caplog):
    from resnetkit.data.tree import report_skipped

    skipped = [(f"img/{i}.xml", "not an image file (extension)") for i in range(25)]
    with caplog.at_level(logging.DEBUG, logger="resnetkit"), pytest.warns(UserWarning) as caught:
        report_skipped(skipped, source="img")
    assert len(caught) == 1 and "img/9.xml" in str(caught[0].message) and "img/10.xml" not in str(caught[0].message)
    assert "... and 15 more (listed with --debug)" in str(caught[0].message)
    assert [r.levelno for r in caplog.records] == [logging.DEBUG] * 15  # nothing more on a terminal by default


def test_a_validation_folder_without_a_rare_class_takes_the_training_labels(tmp_path):
    """Labels index each split's own sorted folder names: val/{a,c} beside train/{a,b,c} is relabelled by name
    (c stays class 2, not 1), in memory and file by file; a class training lacks is refused naming it."""
    for split, classes in (("train", "abc"), ("val", "ac")):
        for k, name in enumerate(classes):
            for i in range(2):
                (tmp_path / "d" / split / name).mkdir(parents=True, exist_ok=True)
                _image(10 * k + i).save(tmp_path / "d" / split / name / f"{i}.png")
    splits = load_data(DataConfig(source=str(tmp_path / "d")))
    assert splits.test.class_names == splits.train.class_names == ["a", "b", "c"]
    assert splits.test.labels.tolist() == [0, 0, 2, 2]
    files = ImageFileDataset(tmp_path / "d", split="test").with_class_names(["a", "b", "c"], where="val")
    assert files.class_names == ["a", "b", "c"] and [files[i][1] for i in range(len(files))] == [0, 0, 2, 2]
    (tmp_path / "d" / "val" / "zebra").mkdir()
    _image(99).save(tmp_path / "d" / "val" / "zebra" / "0.png")
    with pytest.raises(ValueError, match=r"its test \(or val\) split has class\(es\) the training split lacks: "
                                         r"\['zebra'\]"):
        load_data(DataConfig(source=str(tmp_path / "d")))


def test_macos_leftovers_are_neither_classes_nor_images(tmp_path):
    """A folder unzipped on macOS holds __MACOSX/ (a would-be class) and ._NAME AppleDouble files beside the images."""
    root = tmp_path / "photos"
    for name in ("cat", "dog", "__MACOSX/cat"):
        (root / name).mkdir(parents=True)
    for k, name in enumerate(("cat", "dog")):
        _image(k).save(root / name / "0.png")
        (root / name / "._0.png").write_bytes(b"\x00\x05\x16\x07AppleDouble")
    (root / "__MACOSX" / "cat" / "._0.png").write_bytes(b"\x00\x05\x16\x07")
    for source in (root, _tar(root, tmp_path / "photos.tar")):
        tree = index_tree(source)
        assert tree.class_names == ["cat", "dog"] and len(tree.paths) == 2 and tree.skipped == []


def test_class_folders_whose_names_read_alike_as_text_are_refused(tmp_path):
    """caf\\xe9 and caf\\xe8 (Latin-1 names) both read as 'caf\\ufffd': eval mapped both classes to one index and scored
    one class's images as the other's, silently."""
    import os

    from PIL import Image

    root = os.fsencode(tmp_path / "latin1")
    for folder in (b"caf\xe9", b"caf\xe8"):
        os.makedirs(root + b"/" + folder)
        Image.new("RGB", (8, 8)).save(os.fsdecode(root + b"/" + folder + b"/a.png"))
    with pytest.raises(ValueError, match=r"have the same name as text \('caf\ufffd'"):
        index_tree(tmp_path / "latin1")


def test_split_folders_in_any_case_a_kaggle_test_folder_and_splits_beside_other_folders(tmp_path, caplog):
    """Train/ and Val/ became two classes 'Train' and 'Val'; train/<class>/ beside Kaggle's unlabelled test/ refused
    to train ("no images found (split 'test')"); train/ val/ beside samples/ were three classes without a word."""
    from PIL import Image

    def image(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8)).save(path)

    for split in ("Train", "Val"):
        for cls in ("cat", "dog"):
            image(tmp_path / "caps" / split / cls / "0.png")
    assert index_tree(tmp_path / "caps").class_names == ["cat", "dog"]
    assert len(index_tree(tmp_path / "caps", split="val")) == 2
    for cls in ("cat", "dog"):
        image(tmp_path / "kaggle" / "train" / cls / "0.png")
    image(tmp_path / "kaggle" / "test" / "1.png")
    assert tree_splits(tmp_path / "kaggle") == ("train",)
    assert index_tree(tmp_path / "kaggle").class_names == ["cat", "dog"]
    for folder in ("train/cat", "val/cat", "samples"):
        image(tmp_path / "mixed" / folder / "0.png")
    with caplog.at_level(logging.WARNING, logger="resnetkit"):
        assert index_tree(tmp_path / "mixed").class_names == ["samples", "train", "val"]
    assert "split folders (train, val) beside other folders (samples)" in caplog.text
