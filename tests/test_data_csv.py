"""Images listed with their labels in a CSV file (fastai's from_csv, Keras' flow_from_dataframe): `--data labels.csv`
reads as a folder of class folders does, for training, evaluation, the decoded-image cache and features."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from resnetkit.data import index_tree, resolve_source
from resnetkit.data.cache import source_fingerprint
from resnetkit.data.tree import tree_splits


def _images(root, count: int = 12, size: int = 12) -> list[str]:
    """``count`` small PNGs in root/images, brighter for the "light" class; returns their relative names."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(count):
        value = 200 if i % 2 else 40
        pixels = np.clip(np.random.default_rng(i).normal(value, 10, (size, size, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / "images" / f"{i}.png")
        names.append(f"images/{i}.png")
    return names


def _csv(root, text: str, name: str = "labels.csv"):
    (root / name).write_text(text)
    return root / name


def test_rows_become_a_tree_with_sorted_classes_splits_and_named_skips(tmp_path):
    names = _images(tmp_path)
    rows = [f"{n},{'light' if i % 2 else 'dark'},{'test' if i >= 10 else 'train'}" for i, n in enumerate(names)]
    rows += ["images/missing.png,dark,train", "images/0.txt,dark,train", "images/1.png,,train"]
    path = _csv(tmp_path, "filename,label,split\n" + "\n".join(rows) + "\n")
    source = resolve_source(str(path))
    assert source.kind == "image-csv" and source.file_by_file and source.evaluation_split == "test"
    train, test = index_tree(path, split="train"), index_tree(path, split="test")
    assert train.class_names == ["dark", "light"] and len(train) == 10 and len(test) == 2
    assert train.paths[1] == str(tmp_path / "images" / "1.png") and train.labels[:2] == [0, 1]
    reasons = {where.split(" (")[0].rsplit("/", 1)[-1]: why for where, why in train.skipped}
    assert reasons == {"missing.png": "no such file", "0.txt": reasons["0.txt"], "1.png": "no label"}
    assert "extension" in reasons["0.txt"] and "line 14" in train.skipped[0][0]
    assert tree_splits(path) == ("train", "test") and index_tree(path, split="val").paths == test.paths
    from resnetkit.infer.features import list_images

    sources, _, labels, classes = list_images(str(path), split="test")  # `resnetkit features` reads it too
    assert sources == test.paths and labels == test.labels and classes == ["dark", "light"]


def test_fastais_is_valid_column_named_columns_in_any_order_a_bom_and_semicolons(tmp_path):
    names = _images(tmp_path, count=4)
    body = "\n".join(f"{'TRUE' if i == 3 else 'false'};cls{i % 2};{n}" for i, n in enumerate(names))
    path = _csv(tmp_path, "\ufeffis_valid;Label;Image\n" + body + "\n")
    assert [len(index_tree(path, split=s)) for s in ("train", "test")] == [3, 1]
    only_train = _csv(tmp_path, "image,label\n" + "\n".join(f"{n},a" for n in names), "plain.csv")
    assert tree_splits(only_train) == ("train",) and index_tree(only_train, split="test") is None


@pytest.mark.parametrize("text, message", [
    ("", "no header row; a labels CSV starts with a header row"),
    ("images/0.png,a\nimages/1.png,b\n", "the first row .* names an image: .* add one"),
    ("image,label\n", "a header and no rows"),
    ("image\nimages/0.png\n", "names no image and label columns"),
    ("image,label,split\nimages/0.png,a,holdout\n", "line 2: split 'holdout' is not train"),
    ("image,label,is_valid\nimages/0.png,a,maybe\n", "line 2: is_valid 'maybe'"),
    ("image,label,split\nimages/0.png\n", "line 2: 1 column"),
    ("image,label\nimages/0.png," + "x" * 5000 + "\n", "over 4096 characters"),
])
def test_a_csv_that_cannot_be_read_is_refused_naming_the_file_and_line(tmp_path, text, message):
    _images(tmp_path, count=1)
    path = _csv(tmp_path, text)
    with pytest.raises(ValueError, match=message) as refused:
        index_tree(path)
    assert str(path) in str(refused.value)


def test_csvs_as_pandas_and_excel_write_them(tmp_path):
    """pandas' index column first (unnamed), doubled quotes inside quotes, a semicolon header with a comma inside a
    column name, Windows backslashes."""
    names = _images(tmp_path, count=4)
    pandas = _csv(tmp_path, ",file_name,species\n" + "".join(f'{i},{n},"big ""cat"""\n' if i % 2 else
                                                                f"{i},{n},dog\n" for i, n in enumerate(names)))
    tree = index_tree(pandas)
    assert tree.class_names == ['big "cat"', "dog"] and len(tree) == 4
    mixed = _csv(tmp_path, "image;label;note, misc\n" + "".join(f"{n};c{i % 2};x, y\n" for i, n in enumerate(names)),
                 "mixed.csv")
    assert index_tree(mixed).class_names == ["c0", "c1"]
    windows = _csv(tmp_path, "image,label\n" + "".join(f"{n.replace('/', chr(92))},c{i % 2}\n"
                                                         for i, n in enumerate(names)), "windows.csv")
    assert len(index_tree(windows)) == 4


def test_both_splits_index_one_class_list_and_disagreeing_rows_warn(tmp_path):
    """A class with no validation rows (a random split of rare classes) keeps its index in both splits; an image
    under two labels or in both splits, and labels equal but for case, are warned about."""
    names = _images(tmp_path, count=6)
    rows = [f"{names[0]},rare,train", f"{names[1]},cat,train", f"{names[2]},cat,val", f"{names[3]},dog,val",
            f"{names[4]},dog,train"]
    path = _csv(tmp_path, "image,label,split\n" + "\n".join(rows) + "\n")
    train, test = index_tree(path, split="train"), index_tree(path, split="test")
    assert train.class_names == test.class_names == ["cat", "dog", "rare"] and test.labels == [0, 1]
    clash = _csv(tmp_path, "image,label,split\n" + "\n".join(
        [f"{names[0]},cat,train", f"{names[0]},dog,train", f"{names[1]},cat,train", f"{names[1]},cat,val",
         f"{names[2]},Cat,train"]) + "\n", "clash.csv")
    with pytest.warns(UserWarning) as caught:
        index_tree(clash)
    message = str(caught[0].message)
    assert "labelled 'cat' (line 2) and 'dog' (line 3)" in message and "in both splits (lines 4 and 5)" in message
    assert "differ only in case" in message and "Unicode NFC/NFD" in message


def test_not_utf8_and_rows_naming_no_image_are_refused(tmp_path):
    _images(tmp_path, count=1)
    latin = tmp_path / "latin.csv"
    latin.write_bytes("image,label\nimages/0.png,caf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match="latin.csv: not UTF-8 text"):
        index_tree(latin)
    with pytest.raises(ValueError, match="none of the 1 train row"):
        index_tree(_csv(tmp_path, "image,label\nnowhere.png,a\n"))


def test_the_cache_key_follows_the_listed_images_not_only_the_csv(tmp_path):
    names = _images(tmp_path, count=2)
    path = _csv(tmp_path, "image,label\n" + "\n".join(f"{n},c{i}" for i, n in enumerate(names)) + "\n")
    before = source_fingerprint(path)
    Image.fromarray(np.zeros((30, 30, 3), np.uint8)).save(tmp_path / "images" / "0.png")  # same name, new image
    assert source_fingerprint(path) != before


def test_train_then_eval_on_a_csv(tmp_path):
    """`resnetkit train --data labels.csv` learns the rows' classes; `resnetkit eval` measures its test rows."""
    from resnetkit.cli import main

    names = _images(tmp_path, count=40)
    rows = [f"{n},{'light' if i % 2 else 'dark'},{'val' if i >= 32 else 'train'}" for i, n in enumerate(names)]
    path = _csv(tmp_path, "image,label,split\n" + "\n".join(rows) + "\n")
    out = tmp_path / "run"
    assert main(["train", "--recipe", "demo", "--data", str(path), "--model", "resnet20", "--epochs", "8",
                 "--batch-size", "8", "--out-dir", str(out), "--no-progress", "--amp", "none"]) == 0
    from resnetkit import load_model

    assert load_model(out / "model.safetensors")[1].class_names == ["dark", "light"]
    assert main(["eval", str(out / "model.safetensors"), str(path), "--out-dir", str(tmp_path / "ev"),
                 "--workers", "0", "--top-losses", "2"]) == 0
    report = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert report["images"] == 8 and report["top1"] == 1.0  # dark against light: learnt in eight epochs
    assert all(row["image"].startswith(str(tmp_path / "images")) for row in report["top_losses"])
    assert report["config"]["split"] == "test"  # the rows marked val


def test_kaggle_ids_without_an_extension_find_their_one_image(tmp_path):
    """Kaggle's dog-breed layout: labels.csv of `id,breed` beside train/<id>.jpg (and test/ of unlabelled images);
    an id two files answer to is skipped, saying so."""
    (tmp_path / "train").mkdir()
    (tmp_path / "test").mkdir()
    for i in range(4):
        Image.new("RGB", (8, 8), (50 * i, 0, 0)).save(tmp_path / "train" / f"id{i}.jpg")
    Image.new("RGB", (8, 8)).save(tmp_path / "test" / "id3.png")  # the same id in another folder
    (tmp_path / "loop").symlink_to(tmp_path / "loop")  # a link loop beside them is passed over, not followed
    path = _csv(tmp_path, "id,breed\n" + "".join(f"id{i},{'pug' if i % 2 else 'collie'}\n" for i in range(4)) +
                "nowhere,pug\n")
    tree = index_tree(path)
    assert tree.paths == [str(tmp_path / "train" / f"id{i}.jpg") for i in range(3)]
    assert tree.class_names == ["collie", "pug"] and tree.labels == [0, 1, 0]
    reasons = dict(tree.skipped)
    assert any("several image files" in why and "id3.jpg" in why for why in reasons.values())
    assert any(where.startswith(str(tmp_path / "nowhere")) and "no image file of that name" in why
               for where, why in reasons.items())


def test_an_id_with_dots_is_an_id_and_a_text_file_is_not_an_image(tmp_path):
    _images(tmp_path, count=1)
    (tmp_path / "notes.txt").write_text("x")
    path = _csv(tmp_path, "image,label\nimages/0.png,a\n1.2.840.113619,a\nnotes.txt,a\n")
    reasons = {where.split(" (")[0].rsplit("/", 1)[-1]: why for where, why in index_tree(path).skipped}
    assert reasons == {"1.2.840.113619": reasons["1.2.840.113619"], "notes.txt": "not an image file (extension)"}
    assert reasons["1.2.840.113619"].startswith("no image file of that name")


def test_a_first_row_of_ids_is_refused_and_ids_are_looked_up_again_when_images_arrive(tmp_path):
    """A CSV of bare ids without its header would lose its first row as column names; an id whose image is copied
    in later is found by the next read (the folders are not cached with the file)."""
    (tmp_path / "train").mkdir()
    for i in range(2):
        Image.new("RGB", (8, 8)).save(tmp_path / "train" / f"id{i}.jpg")
    with pytest.raises(ValueError, match="the first row .*'id0'.* names an image: .* add one"):
        index_tree(_csv(tmp_path, "id0,collie\nid1,pug\n", "noheader.csv"))
    path = _csv(tmp_path, "id,breed\nid0,collie\nid1,pug\nid2,pug\n")
    assert len(index_tree(path).paths) == 2
    Image.new("RGB", (8, 8)).save(tmp_path / "train" / "id2.jpg")
    assert index_tree(path).paths[-1] == str(tmp_path / "train" / "id2.jpg")


def test_a_huge_line_is_refused_before_it_is_read_whole_and_labels_are_unicode_normalised(tmp_path):
    from resnetkit.data import labels_csv

    names = _images(tmp_path, count=2)
    path = tmp_path / "huge.csv"
    path.write_text("image,label\n" + "a" * (labels_csv.MAX_LINE_CHARS + 10) + "\n")
    with pytest.raises(ValueError, match="huge.csv: a line of 1,048,576 characters or more"):
        index_tree(path)
    path.write_text("a" * (labels_csv.MAX_LINE_CHARS * 3))  # the header line too
    with pytest.raises(ValueError, match="huge.csv: a line of"):
        index_tree(path)
    composed, decomposed = "caf\u00e9", "cafe\u0301"  # the same label typed on two systems: two classes, as two
    with pytest.warns(UserWarning, match="differ only in case or in how their accents are encoded"):  # folders are
        tree = index_tree(_csv(tmp_path, f"image,label\n{names[0]},{composed}\n{names[1]},{decomposed}\n"))
    assert sorted(tree.class_names) == sorted([composed, decomposed])
    tabbed = index_tree(_csv(tmp_path, f'image,label\n{names[0]},"big\tdog"\n', "tab.csv"))
    assert tabbed.class_names == ["big\ufffddog"]  # a control character becomes U+FFFD, as in a folder's name
    # ... and two labels shown alike are refused, not merged into one class
    with pytest.raises(ValueError, match=r"clash.csv: labels 'big\\tdog' and 'big\\x0bdog' have the same name as text"):
        index_tree(_csv(tmp_path, f'image,label\n{names[0]},"big\tdog"\n{names[1]},"big\x0bdog"\n', "clash.csv"))
    Image.new("RGB", (8, 8)).save(tmp_path / "image.png")  # named like the column: the header stays a header
    assert len(index_tree(_csv(tmp_path, f"image,label\n{names[0]},a\n", "named.csv")).paths) == 1


def test_a_label_with_only_validation_rows_is_named_as_a_label(tmp_path):
    from resnetkit.data import DataConfig, load_data

    names = _images(tmp_path, count=5)
    rows = [f"{names[0]},cat,train", f"{names[1]},cat,train", f"{names[2]},dog,train", f"{names[3]},dog,train",
            f"{names[4]},zebra,val"]
    path = _csv(tmp_path, "image,label,split\n" + "\n".join(rows) + "\n")
    with pytest.raises(ValueError, match=r"1 label\(s\) \('zebra'\) have no usable training rows"):
        load_data(DataConfig(source=str(path)))


def test_a_row_given_twice_is_used_once(tmp_path):
    """Four copies of one row among eight: kept silently, they weighed the image four times and a held-out copy
    validated on an image the network trained on."""
    names = _images(tmp_path, count=8)
    rows = [f"{n},{'light' if i % 2 else 'dark'}" for i, n in enumerate(names)] + [f"{names[0]},dark"] * 3
    path = _csv(tmp_path, "filename,label\n" + "\n".join(rows) + "\n")
    tree = index_tree(path)
    assert len(tree) == 8 and len(set(tree.paths)) == 8
    assert sum("the same image, label and split as line 2: used once" in why for _, why in tree.skipped) == 3
