"""Images listed in a CSV file with their labels: ``--data labels.csv`` (fastai's ``ImageDataLoaders.from_csv``,
Keras' ``flow_from_dataframe``), for data whose classes are not folders (a Kaggle download: ``images/`` and
``train.csv``).

The file starts with a header row. The image column is the one named ``image``, ``file``, ``filename``, ``fname``,
``path`` or ``filepath`` (else the first column), the label column the one named ``label``, ``class``,
``category`` or ``target`` (else the second). Image paths are relative to the CSV's folder, or absolute; a name
without an image extension (Kaggle's ids) is the one image file of that name (``_with_found_ids``). An optional
``split`` column (``train``; ``test``, ``val``, ``valid`` or ``validation``) or fastai's ``is_valid`` column
(``true``/``false``, ``1``/``0``) puts a row in the test split; without one every row is training data. Classes
are the sorted labels of every usable row, as folder names are; the listing becomes an ``ImageTree``, so training,
evaluation, caching, feature extraction and export read it as they read a folder.
"""

from __future__ import annotations

import csv
import functools
import os
import unicodedata
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .tree import ImageTree

IMAGE_COLUMNS = ("image", "file", "filename", "fname", "path", "filepath")
LABEL_COLUMNS = ("label", "class", "category", "target")
TEST_SPLIT_NAMES = ("test", "val", "valid", "validation")
TRUE_WORDS, FALSE_WORDS = ("true", "1", "yes"), ("false", "0", "no")
MAX_LINE_CHARS = 1 << 20  # a row of paths and labels; a longer line is not a labels CSV and is not read whole
MAX_FIELD_CHARS = 4096  # a path or a label; csv's own limit (131,072) would let one row hold a 128 kB "label"


def is_labels_csv(path: str | os.PathLike[str]) -> bool:
    return str(path).lower().endswith(".csv") and Path(path).is_file()


@dataclass(frozen=True)
class Row:
    line: int  # in the file, counting the header as line 1
    image: str  # as written in the file
    path: str  # where it is read from
    label: str
    split: str  # "train" or "test"
    problem: str = ""  # why the row's image cannot be found, when its name leaves that open (an id)


def read_rows(path: str | os.PathLike[str]) -> list[Row]:
    """Every row of a labels CSV, in file order; ``ValueError`` naming the file and line for what cannot be read.
    Read once per version of the file (a run asks for its splits, its cache key and each split's images)."""
    path = Path(path)
    stat = path.stat()
    rows = _read_rows(str(path), (stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns))
    return list(_with_found_ids(rows, str(path.parent)))  # not cached: the folders' images may change


def _delimiter(header_line: str) -> str:
    """The header's delimiter: the one of comma, semicolon and tab it holds most of, outside quotes (csv.Sniffer
    guesses the whole dialect from one line and prefers a comma among equals: `image;label;note, misc`)."""
    unquoted = header_line.split('"')[::2]
    counts = {d: sum(part.count(d) for part in unquoted) for d in (",", ";", "\t")}
    best = max(counts, key=lambda d: counts[d])  # the first of equals: a comma
    return best if counts[best] else ","


@functools.lru_cache(maxsize=4)
def _read_rows(path_text: str, version: tuple[int, ...]) -> tuple[Row, ...]:
    del version  # the cache key: any write to the file changes it
    path = Path(path_text)
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:  # -sig: the byte-order mark Excel writes
            delimiter = _delimiter(next(_bounded_lines(path, handle), ""))
            handle.seek(0)  # utf-8-sig skips the byte-order mark again
            # the rest of the dialect is RFC 4180's ("" in quotes)
            reader = csv.reader(_bounded_lines(path, handle), delimiter=delimiter)
            header = next(reader, None)
            if not header or not any(cell.strip() for cell in header):
                raise ValueError(f"{path}: no header row; a labels CSV starts with a header row such as `image,label`")
            columns = _columns(path, [cell.strip().lower() for cell in header])
            folder = str(path.parent)
            _check_not_an_image_row(path, folder, header, columns)
            rows = tuple(_row(path, folder, reader.line_num, cells, columns) for cells in reader
                         if any(c.strip() for c in cells))
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start}); save the CSV as UTF-8") \
            from None
    except csv.Error as error:
        raise ValueError(f"{path}: not a readable CSV ({error}); give a header row and one image,label row per "
                         "image") from None
    if not rows:
        raise ValueError(f"{path}: a header and no rows; list one image and its label per row")
    return rows


def _bounded_lines(path: Path, handle: Any) -> Iterator[str]:
    """The file's lines, refusing one of ``MAX_LINE_CHARS`` or more before it is read whole (a file of one 800 MB
    line would otherwise sit in memory before any check)."""
    while line := handle.readline(MAX_LINE_CHARS):
        if len(line) >= MAX_LINE_CHARS and not line.endswith(("\n", "\r")):
            raise ValueError(f"{path}: a line of {MAX_LINE_CHARS:,} characters or more: not a labels CSV; give one "
                             "image,label row per line")
        yield line


def _check_not_an_image_row(path: Path, folder: str, header: list[str], columns: dict[str, int]) -> None:
    """Refuse a first row that is data, not a header: its image cell names an image file (``0a1b2c,collie`` with
    ``train/0a1b2c.jpg`` beside the CSV), which would otherwise be read as the column names and lost."""
    if header[columns["image"]].strip().lower() in IMAGE_COLUMNS:  # a column name, even beside an image.png
        return
    try:
        first = _row(path, folder, 1, header, columns)
    except ValueError:
        return
    if first.image and os.path.isfile(_with_found_ids((first,), folder)[0].path):
        raise ValueError(f"{path}: the first row {header[:3]} names an image: a labels CSV starts with a header row "
                         "such as `image,label`; add one")


def _with_found_ids(rows: tuple[Row, ...], folder: str) -> tuple[Row, ...]:
    """Rows naming an image without its extension (Kaggle's ids: ``0a1b2c``, with ``train/0a1b2c.jpg`` beside the
    CSV) get the one image file of that name in its folder (for a bare id: the CSV's folder or a folder in it);
    fastai asks for ``folder=`` and ``suffix=`` instead. None or several such files: the row keeps its name and is
    skipped, saying so."""
    from .tree import IMAGE_EXTENSIONS

    ids = [row for row in rows if not row.image.lower().endswith(IMAGE_EXTENSIONS)]
    if not ids:
        return rows
    found: dict[str, dict[str, list[str]]] = {}  # folder searched -> name without extension -> image files

    def images_in(directory: str) -> dict[str, list[str]]:
        if directory not in found:
            by_stem: dict[str, list[str]] = {}
            bare = directory == folder
            places = [directory] + ([e.path for e in _entries(directory) if _is(e, "dir")] if bare else [])
            for place in places:
                for entry in _entries(place):
                    if entry.name.lower().endswith(IMAGE_EXTENSIONS) and _is(entry, "file"):
                        by_stem.setdefault(os.path.splitext(entry.name)[0], []).append(entry.path)
            found[directory] = by_stem
        return found[directory]

    resolved: dict[int, Row] = {}
    for row in ids:
        parent, name = os.path.split(row.path)
        matches = images_in(parent if os.path.normpath(parent) != os.path.normpath(folder) else folder).get(name, [])
        resolved[row.line] = (
            replace(row, path=matches[0]) if len(matches) == 1 else
            replace(row, problem=f"several image files of that name ({', '.join(sorted(matches)[:3])}): give the file "
                                 "name with its extension") if matches else
            replace(row, problem="not an image file (extension)") if _file_extension(name) else
            replace(row, problem="no image file of that name (with an image extension) in its folder or the CSV's "
                                 "folders"))
    return tuple(resolved.get(row.line, row) for row in rows)


def _file_extension(name: str) -> bool:
    """Whether ``name`` ends in what reads as a file type (``.txt``, ``.dcm``), not part of an id (``1.2.840.1136``)."""
    suffix = os.path.splitext(name)[1][1:]
    return 0 < len(suffix) <= 5 and suffix.isalpha()


def _is(entry: os.DirEntry[str], kind: str) -> bool:
    """``entry.is_dir()`` / ``is_file()``, False for an entry that cannot be followed (a link loop, no permission)."""
    try:
        return entry.is_dir() if kind == "dir" else entry.is_file()
    except OSError:
        return False


def _entries(directory: str) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(directory) as entries:
            return list(entries)
    except OSError:
        return []


def _columns(path: Path, header: list[str]) -> dict[str, int]:
    from .tree import IMAGE_EXTENSIONS

    if any(cell.endswith(IMAGE_EXTENSIONS) for cell in header):
        raise ValueError(f"{path}: the first row {header[:3]} names an image: a labels CSV starts with a header row "
                         "such as `image,label`; add one")
    # pandas' df.to_csv() writes its index first, under an empty name: not the image column.
    first = 1 if header[0] in ("", "unnamed: 0") else 0

    def find(names: tuple[str, ...], fallback: int) -> int | None:
        named = next((header.index(name) for name in names if name in header), None)
        return named if named is not None else (fallback if fallback < len(header) else None)

    image, label = find(IMAGE_COLUMNS, first), find(LABEL_COLUMNS, first + 1)
    if image is None or label is None or image == label:
        raise ValueError(f"{path}: the header {header[:6]} names no image and label columns; give a header such as "
                         f"`image,label` (image: one of {', '.join(IMAGE_COLUMNS)}; label: one of "
                         f"{', '.join(LABEL_COLUMNS)}; else the first two columns)")
    columns = {"image": image, "label": label}
    for name in ("split", "is_valid"):
        if name in header:
            columns[name] = header.index(name)
    return columns


def _row(path: Path, folder: str, line: int, cells: list[str], columns: dict[str, int]) -> Row:
    if len(cells) <= max(columns.values()):
        raise ValueError(f"{path}, line {line}: {len(cells)} column(s) where the header has at least "
                         f"{max(columns.values()) + 1}; every row needs its image and label")
    if any(len(cell) > MAX_FIELD_CHARS for cell in cells):
        raise ValueError(f"{path}, line {line}: a field over {MAX_FIELD_CHARS} characters: not a path or a label")
    image, label = cells[columns["image"]].strip(), cells[columns["label"]].strip()  # shown as text by index_csv
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
    where = os.path.join(folder, image)  # an absolute image path stays as it is
    if "\\" in image and os.sep == "/" and not os.path.exists(where):  # written on Windows: images\0001.jpg
        where = os.path.join(folder, image.replace("\\", "/"))
    return Row(line, image, where, label, split)


def csv_splits(path: str | os.PathLike[str]) -> tuple[str, ...]:
    """``("train",)`` or ``("train", "test")``: the splits the rows name (``"test"`` standing for val too)."""
    splits = {row.split for row in read_rows(path)}
    return tuple(split for split in ("train", "test") if split in splits)


def index_csv(path: str | os.PathLike[str], *, split: str = "train") -> ImageTree | None:
    """One split of a labels CSV as an ``ImageTree`` (None when no row is in it): rows whose file is missing, not an
    image by its extension, or without a label are left out and listed in ``skipped``. The classes are every usable
    row's label, whichever its split, so both splits index one list (a rare class may have no validation rows).
    ``split`` "val" reads the test rows, as a tree's ``val/`` folder stands for its test split."""
    wanted = "train" if split == "train" else "test"
    usable, skipped = _usable_rows(path)
    images = [row for row in usable if row.split == wanted]
    skipped = [(where, why) for where, why, row in skipped if row.split == wanted]
    if not images:
        if not skipped:
            return None
        raise ValueError(f"{path}: none of the {len(skipped)} {wanted} row(s) names a readable image (first: "
                         f"{skipped[0][0]}: {skipped[0][1]}); paths are relative to the CSV's folder")
    labels = sorted({row.label for row in usable})
    index = {label: k for k, label in enumerate(labels)}
    from .tree import ImageTree, distinct_shown_names

    # A label is a class name as a folder's name is one: control characters (a tab) become U+FFFD, and two labels
    # shown alike (`a<tab>b`, `a<newline>b`) are refused rather than merged into one class.
    return ImageTree(source=str(path), paths=[row.path for row in images], labels=[index[row.label] for row in images],
                     class_names=distinct_shown_names(labels, source=path, what="labels"), skipped=skipped)


def _usable_rows(path: str | os.PathLike[str]) -> tuple[list[Row], list[tuple[str, str, Row]]]:
    """The rows whose image exists with an image extension and a label, and ``(where, why, row)`` of the others;
    warns once about rows that disagree (an image under two labels or in both splits, labels equal but for case)."""
    from .tree import IMAGE_EXTENSIONS

    usable, skipped, lines = [], [], {}
    for row in read_rows(path):
        reason = ("no label" if not row.label else row.problem or
                  ("not an image file (extension)" if not row.path.lower().endswith(IMAGE_EXTENSIONS) else
                   "no such file" if not os.path.isfile(row.path) else None))
        # A row given twice would weigh its image twice, and a held-out copy would validate on a training image.
        key = (os.path.normpath(row.path), row.label, row.split)
        if reason is None and key in lines:
            reason = f"the same image, label and split as line {lines[key]}: used once"
        lines.setdefault(key, row.line)
        if reason:
            skipped.append((f"{row.path} ({Path(path).name}, line {row.line})", reason, row))
        else:
            usable.append(row)
    _warn_disagreements(path, usable)
    return usable, skipped


def _warn_disagreements(path: str | os.PathLike[str], rows: list[Row]) -> None:
    first: dict[str, Row] = {}
    problems = []
    for row in rows:
        seen = first.setdefault(os.path.normpath(row.path), row)
        if seen is not row and seen.label != row.label:
            problems.append(f"{row.image} is labelled {seen.label!r} (line {seen.line}) and {row.label!r} "
                            f"(line {row.line})")
        elif seen is not row and seen.split != row.split:
            problems.append(f"{row.image} is in both splits (lines {seen.line} and {row.line}): the validation "
                            "measures an image the network trained on")
    by_case: dict[str, set[str]] = {}  # NFC: an accent typed on macOS (decomposed) and elsewhere look the same
    for row in rows:
        by_case.setdefault(unicodedata.normalize("NFC", row.label).casefold(), set()).add(row.label)
    problems += [f"labels {', '.join(ascii(label) for label in sorted(labels))} differ only in case or in how "
                 f"their accents are encoded (Unicode NFC/NFD): they are {len(labels)} classes"
                 for labels in by_case.values() if len(labels) > 1]
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        warnings.warn(f"{path}: {'; '.join(problems[:3])}{more}", stacklevel=4)


def csv_fingerprint(path: str | os.PathLike[str]) -> list[Any]:
    """What identifies a labels CSV's content for the decoded-image cache: the rows and each listed file's size and
    modification time (an image replaced under the same name makes a new cache entry)."""
    entries: list[Any] = []
    for row in read_rows(path):
        try:
            stat = os.stat(row.path)
            entries.append([row.image, row.label, row.split, stat.st_size, stat.st_mtime_ns])
        except OSError:
            entries.append([row.image, row.label, row.split, None, None])
    return entries
