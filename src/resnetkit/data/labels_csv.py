"""Images listed in a CSV file with their labels: ``--data labels.csv`` (fastai's ``ImageDataLoaders.from_csv``,
Keras' ``flow_from_dataframe``), for data whose classes are not folders (a Kaggle download: ``images/`` and
``train.csv``).

The file starts with a header row. The image column is the one named ``image``, ``file``, ``filename``, ``fname``,
``path`` or ``filepath`` (else the first column), the label column the one named ``label``, ``class``,
``category`` or ``target`` (else the second). Image paths are relative to the CSV's folder, or absolute, with
their extension. An optional ``split`` column (``train``; ``test``, ``val``, ``valid`` or ``validation``) or
fastai's ``is_valid`` column (``true``/``false``, ``1``/``0``) puts a row in the test split; without one every
row is training data. Classes are the sorted labels, as folder names are; the listing becomes an ``ImageTree``,
so training, evaluation, caching and feature extraction read it as they read a folder.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .tree import ImageTree

IMAGE_COLUMNS = ("image", "file", "filename", "fname", "path", "filepath")
LABEL_COLUMNS = ("label", "class", "category", "target")
TEST_SPLIT_NAMES = ("test", "val", "valid", "validation")
TRUE_WORDS, FALSE_WORDS = ("true", "1", "yes"), ("false", "0", "no")
MAX_FIELD_CHARS = 4096  # a path or a label; csv's own limit (131,072) would let one row hold a 128 kB "label"


def is_labels_csv(path: str | os.PathLike[str]) -> bool:
    return str(path).lower().endswith(".csv") and Path(path).is_file()


@dataclass(frozen=True)
class Row:
    line: int  # in the file, counting the header as line 1
    image: str  # as written in the file
    path: Path  # where it is read from
    label: str
    split: str  # "train" or "test"


def read_rows(path: str | os.PathLike[str]) -> list[Row]:
    """Every row of a labels CSV, in file order; ``ValueError`` naming the file and line for what cannot be read."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:  # -sig: the byte-order mark Excel writes
            sample = handle.read(4096)
            handle.seek(0)
            try:
                dialect: Any = csv.Sniffer().sniff(sample.splitlines()[0] if sample else "", delimiters=",;\t")
            except csv.Error:
                dialect = csv.excel  # one column, or nothing to tell by: commas
            reader = csv.reader(handle, dialect)
            header = next(reader, None)
            if not header or not any(cell.strip() for cell in header):
                raise ValueError(f"{path}: empty; a labels CSV starts with a header row such as `image,label`")
            columns = _columns(path, [cell.strip().lower() for cell in header])
            rows = [_row(path, reader.line_num, cells, columns) for cells in reader if any(c.strip() for c in cells)]
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start}); save the CSV as UTF-8") \
            from None
    except csv.Error as error:
        raise ValueError(f"{path}: not a readable CSV ({error}); give a header row and one image,label row per "
                         "image") from None
    if not rows:
        raise ValueError(f"{path}: a header and no rows; list one image and its label per row")
    return rows


def _columns(path: Path, header: list[str]) -> dict[str, int]:
    def find(names: tuple[str, ...], fallback: int) -> int | None:
        named = next((header.index(name) for name in names if name in header), None)
        return named if named is not None else (fallback if fallback < len(header) else None)

    image, label = find(IMAGE_COLUMNS, 0), find(LABEL_COLUMNS, 1)
    if image is None or label is None or image == label:
        raise ValueError(f"{path}: the header {header[:6]} names no image and label columns; give a header such as "
                         f"`image,label` (image: one of {', '.join(IMAGE_COLUMNS)}; label: one of "
                         f"{', '.join(LABEL_COLUMNS)}; else the first two columns)")
    columns = {"image": image, "label": label}
    for name in ("split", "is_valid"):
        if name in header:
            columns[name] = header.index(name)
    return columns


def _row(path: Path, line: int, cells: list[str], columns: dict[str, int]) -> Row:
    if len(cells) <= max(columns.values()):
        raise ValueError(f"{path}, line {line}: {len(cells)} column(s) where the header has at least "
                         f"{max(columns.values()) + 1}; every row needs its image and label")
    if any(len(cell) > MAX_FIELD_CHARS for cell in cells):
        raise ValueError(f"{path}, line {line}: a field over {MAX_FIELD_CHARS} characters: not a path or a label")
    image, label = cells[columns["image"]].strip(), cells[columns["label"]].strip()
    split = "train"
    if "split" in columns:
        value = cells[columns["split"]].strip().lower()
        if value not in ("train", *TEST_SPLIT_NAMES):
            raise ValueError(f"{path}, line {line}: split {value!r} is not train, test, val, valid or validation")
        split = "train" if value == "train" else "test"
    elif "is_valid" in columns:
        value = cells[columns["is_valid"]].strip().lower()
        if value not in (*TRUE_WORDS, *FALSE_WORDS):
            raise ValueError(f"{path}, line {line}: is_valid {value!r} is not true/false, 1/0 or yes/no")
        split = "test" if value in TRUE_WORDS else "train"
    return Row(line, image, path.parent / image, label, split)  # an absolute image path stays as it is


def csv_splits(path: str | os.PathLike[str]) -> tuple[str, ...]:
    """``("train",)`` or ``("train", "test")``: the splits the rows name (``"test"`` standing for val too)."""
    splits = {row.split for row in read_rows(path)}
    return tuple(split for split in ("train", "test") if split in splits)


def index_csv(path: str | os.PathLike[str], *, split: str = "train") -> ImageTree | None:
    """One split of a labels CSV as an ``ImageTree`` (None when no row is in it): rows whose file is missing, not an
    image by its extension, or without a label are left out and listed in ``skipped``. ``split`` "val" reads the
    test rows, as a tree's ``val/`` folder stands for its test split."""
    from .tree import IMAGE_EXTENSIONS, ImageTree

    wanted = "train" if split == "train" else "test"
    images, skipped = [], []
    for row in read_rows(path):
        if row.split != wanted:
            continue
        reason = ("no label" if not row.label else
                  "not an image file (extension; give the file name with its extension)"
                  if not row.image.lower().endswith(IMAGE_EXTENSIONS) else
                  "no such file" if not row.path.is_file() else None)
        if reason:
            skipped.append((f"{row.path} ({Path(path).name}, line {row.line})", reason))
        else:
            images.append(row)
    if not images:
        if not skipped:
            return None
        raise ValueError(f"{path}: none of the {len(skipped)} {wanted} row(s) names a readable image (first: "
                         f"{skipped[0][0]}: {skipped[0][1]}); paths are relative to the CSV's folder")
    class_names = sorted({row.label for row in images})
    index = {name: k for k, name in enumerate(class_names)}
    return ImageTree(source=str(path), paths=[str(row.path) for row in images],
                     labels=[index[row.label] for row in images], class_names=class_names, skipped=skipped)


def csv_fingerprint(path: str | os.PathLike[str]) -> list[Any]:
    """What identifies a labels CSV's content for the decoded-image cache: the rows and each listed file's size and
    modification time (an image replaced under the same name makes a new cache entry)."""
    entries: list[Any] = []
    for row in read_rows(path):
        try:
            stat = row.path.stat()
            entries.append([row.image, row.label, row.split, stat.st_size, stat.st_mtime_ns])
        except OSError:
            entries.append([row.image, row.label, row.split, None, None])
    return entries
