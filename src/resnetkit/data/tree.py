"""Index image-folder trees and tar archives of them: ``root/<class>/<image>``, read in place.

A tree is a folder or a tar archive (``.tar``, ``.tar.gz`` ...) whose images sit under one folder per
class, at any depth below it. Class names are the sorted folder names, as in torchvision's
``ImageFolder``. A common leading folder (a tar holding ``train/<class>/...``) is stripped; a tree whose
top level has split folders (``train/``, ``val/``, ``test/``) is read one split at a time.

Nothing is extracted to disk: folder images are read by path and tar members by their byte offset
(uncompressed tars, random access) or in one sequential pass (compressed tars).
"""

from __future__ import annotations

import logging
import lzma
import os
import posixpath
import tarfile
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

from ..files import walk_files
from .classes import relabelling
from .image import ImageLoadError, check_file_size, read_image_file

logger = logging.getLogger(__name__)

# The one list of image file extensions (tree indexing, predict's folder search, export's labelled folders):
# what torchvision or PIL decode.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".jfif", ".png", ".webp", ".avif", ".bmp", ".gif", ".tif", ".tiff", ".ppm",
                    ".pgm", ".pbm", ".pnm")
SPLIT_FOLDERS = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test", "val", "valid",
                                                                                      "validation")}
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


def is_tar_path(path: str | os.PathLike[str]) -> bool:
    return str(path).lower().endswith(TAR_SUFFIXES)


@dataclass
class ImageTree:
    """The images of one split of a tree: where each is, its label, and what was skipped.

    ``paths[i]`` is the file path (folders) or member name (tars) of sample ``i``; ``labels[i]``
    indexes ``class_names``; for uncompressed tars ``spans[i]`` is ``(byte offset, size)`` of the
    member's data. ``skipped`` lists ``(path, reason)`` of files left out at indexing time.
    """

    source: str
    paths: list[str]
    labels: list[int]
    class_names: list[str]
    is_tar: bool = False
    spans: list[tuple[int, int]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)

    def with_class_names(self, names: list[str], *, where: str) -> ImageTree:
        """This split labelled by ``names`` (a superset of its classes: the training split's)."""
        index = relabelling(self.class_names, names, where=where)
        return replace(self, labels=[index[label] for label in self.labels], class_names=list(names))

    def read_bytes(self, index: int) -> bytes:
        """The encoded bytes of sample ``index`` (random access; tars must be uncompressed).

        Raises ``ImageLoadError`` for a file that cannot be an image (too large, empty, unknown header).
        """
        if not self.is_tar:
            return read_image_file(self.paths[index])
        if not self.spans:
            raise ValueError(f"{self.source} is a compressed tar: random access would decompress it again for every "
                             "image; decompress it once (e.g. `gunzip` to a .tar)")
        offset, size = self.spans[index]
        check_file_size(size)
        with open(self.source, "rb") as handle:
            handle.seek(offset)
            return handle.read(size)

    def iter_bytes(self) -> Iterator[tuple[int, bytes | ImageLoadError]]:
        """``(index, bytes)`` for every sample, in one sequential pass over the folder or archive; for a file
        that cannot be read or cannot be an image (too large ...), ``(index, the ImageLoadError saying why)``."""
        if not self.is_tar:
            for index, path in enumerate(self.paths):
                try:
                    yield index, read_image_file(path)
                except ImageLoadError as error:
                    yield index, error
            return
        if self.spans:
            with open(self.source, "rb") as handle:
                for index in sorted(range(len(self.spans)), key=lambda i: self.spans[i][0]):
                    offset, size = self.spans[index]
                    try:
                        check_file_size(size)
                    except ImageLoadError as error:
                        yield index, error
                        continue
                    handle.seek(offset)
                    yield index, handle.read(size)
            return
        position = {name: i for i, name in enumerate(self.paths)}
        with open_tar(self.source) as archive:
            for member in archive:
                index = position.pop(member.name, None)  # a name given twice: its first member, as listed
                if index is None:
                    continue
                try:
                    check_file_size(member.size)
                except ImageLoadError as error:
                    yield index, error
                    continue
                handle = archive.extractfile(member)
                yield index, handle.read() if handle is not None else b""


def _list_files(source: Path) -> tuple[list[tuple[str, str]], list[tuple[int, int]] | None, list[tuple[str, str]]]:
    """``(relative posix path, full path or member name)`` of every regular file, tar data spans, and ``(relative
    path, reason)`` of the tar members left out (links, devices, absolute or ``..`` names, a name given twice)."""
    if source.is_dir():
        found = [(PurePosixPath(Path(full).relative_to(source)).as_posix(), full)
                 for full in walk_files(source, hidden_folders=False)]
        return [(rel, full) for rel, full in found if not is_macos_metadata(rel)], None, []
    if not is_tar_path(source):
        raise ValueError(f"{source} is neither a folder nor a tar archive ({', '.join(TAR_SUFFIXES)})")
    found, spans, skipped, seen = [], [], [], set()
    with open_tar(source) as archive:
        for member in archive:
            if member.isdir():
                continue
            name = member.name[2:] if member.name.startswith("./") else member.name
            # Hidden folders (.git/, .ipynb_checkpoints/) are passed over, as a folder's listing passes over them.
            if is_macos_metadata(name) or any(part.startswith(".") and part not in (".", "..")
                                              for part in name.split("/")[:-1]):
                continue
            reason = (None if member.isfile() else
                      "a link in the archive, not a file (store the image itself)" if member.issym() or member.islnk()
                      else "not a file (a device or pipe entry)")
            if reason is None and (name.startswith("/") or ".." in name.split("/")):
                reason = "an absolute path or '..' in its name: not a <class>/<image> member"
            spelled = posixpath.normpath(name)  # ./a/1.png, a//1.png and a/1.png are one file
            if reason is None and spelled in seen:
                reason = "a second member of the same name (the first one is used)"
            if reason is not None:
                skipped.append((name, reason))
                continue
            seen.add(spelled)
            found.append((name, member.name))
            spans.append((member.offset_data, member.size))
    # Byte offsets index the file itself only when the tar is not compressed.
    return found, None if is_compressed(source) else spans, skipped


def is_class_folder(name: str) -> bool:
    """A sub-folder that can be a class: not hidden (``.ipynb_checkpoints``, ``.git``) nor macOS's ``__MACOSX``, which
    listings pass over."""
    return not name.startswith(".") and name != "__MACOSX"


def is_macos_metadata(relative: str) -> bool:
    """Files macOS adds beside the images: ``__MACOSX/`` (its zips) and ``._NAME`` (AppleDouble resource forks on
    other file systems). Neither is a class nor an image: passed over without a word, as hidden folders are."""
    parts = relative.split("/")
    return "__MACOSX" in parts[:-1] or parts[-1].startswith("._")


@contextmanager
def open_tar(path: str | os.PathLike[str]) -> Iterator[tarfile.TarFile]:
    """``tarfile.open(path)`` for reading (any compression), with errors that name the file: a damaged or
    truncated archive, or one that is not a tar at all, raises ``ValueError`` instead of tarfile's bare message."""
    try:
        with tarfile.open(path, "r:*") as archive:
            yield archive
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError) as error:
        if isinstance(error, (FileNotFoundError, PermissionError)):
            raise
        detail = (str(error).strip().splitlines() or [type(error).__name__])[0].rstrip(":")  # tarfile's first line
        raise ValueError(f"{path}: not a readable tar archive ({detail}); check the file is a whole "
                         f".tar / .tar.gz / .tar.bz2 / .tar.xz (e.g. `tar -tf {path}`)") from None


def is_compressed(path: Path) -> bool:
    with open(path, "rb") as handle:
        magic = handle.read(6)
    return magic[:2] == b"\x1f\x8b" or magic[:3] == b"BZh" or magic == b"\xfd7zXZ\x00"


_WARNED_MIXED: set[tuple[str, ...]] = set()  # trees warned about once (the split is chosen several times per run)


def is_split_folder(name: str) -> bool:
    """``train``, ``val``, ``test`` (and ``valid``, ``validation``), in any case."""
    return name.lower() in {split for names in SPLIT_FOLDERS.values() for split in names}


def _choose_split(relative: list[str], split: str) -> str | None:
    """The folder prefix (``"train/"``) holding ``split``, ``""`` for the whole tree, or None if absent."""
    tops = {p.split("/", 1)[0] for p in relative if "/" in p}
    split_tops = {top for top in tops if is_split_folder(top)}  # Train/ and VAL/ too
    if split_tops and split_tops == tops:
        for name in SPLIT_FOLDERS.get(split, (split,)):
            for top in sorted(split_tops):
                # A test/ or val/ of loose images (Kaggle's unlabelled test set) has no labels: no such split.
                if top.lower() == name and (split == "train" or any("/" in p[len(top) + 1:] for p in relative
                                                                     if p.startswith(top + "/"))):
                    return top + "/"
        return None
    if split_tops and tuple(sorted(tops)) not in _WARNED_MIXED:
        _WARNED_MIXED.add(tuple(sorted(tops)))
        logger.warning("split folders (%s) beside other folders (%s): all are read as classes; if %s are the "
                       "splits, move the others out of the tree", ", ".join(sorted(split_tops)),
                       ", ".join(sorted(tops - split_tops)[:5]), "/ ".join(sorted(split_tops)) + "/")
    if len(tops) == 1 and all(p.count("/") >= 2 for p in relative if p.lower().endswith(IMAGE_EXTENSIONS)):
        # One common leading folder that is not a split name: look inside it.
        (top,) = tops
        inner = _choose_split([p[len(top) + 1:] for p in relative if p.startswith(top + "/")], split)
        return None if inner is None else top + "/" + inner
    return "" if split == "train" else None


def tree_splits(source: str | os.PathLike[str], *, all_names: bool = False) -> tuple[str, ...]:
    """Which of ``("train", "test")`` ``index_tree`` finds in a tree (a tree without split folders is all "train");
    ``all_names`` asks about every split name ``index_tree`` takes (``"val"`` too)."""
    from .labels_csv import csv_splits, is_labels_csv

    names = tuple(SPLIT_FOLDERS) if all_names else ("train", "test")
    if is_labels_csv(source):  # its test rows are the val split too, as a tree's val/ folder
        found = csv_splits(source)
        return tuple(split for split in names if (split if split == "train" else "test") in found)
    relative = [rel for rel, _ in _list_files(Path(source))[0]]
    return tuple(split for split in names if _choose_split(relative, split) is not None)


def index_tree(source: str | os.PathLike[str], *, split: str = "train") -> ImageTree | None:
    """Index one split of an image tree (folder or tar) or of a labels CSV (``data/labels_csv.py``); None when the
    tree has no such split.

    Files without an image extension, and images not inside a class folder, are left out and listed
    in ``skipped`` (and logged). Decoding problems are found later, when images are decoded.
    """
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"image tree {path} does not exist; give the folder or .tar of your images "
                                "(root/<class>/<image>, optionally with train/ and val/ or test/ splits), e.g. "
                                "--data /data/imagenet")
    from .labels_csv import index_csv, is_labels_csv

    if is_labels_csv(path):  # images listed with their labels instead of in class folders
        return index_csv(path, split=split)
    files, spans, left_out = _list_files(path)
    prefix = _choose_split([rel for rel, _ in files], split)
    if prefix is None:
        return None
    skipped = [(f"{path}:{rel}", reason) for rel, reason in left_out if rel.startswith(prefix)]  # this split's
    chosen = [(i, rel[len(prefix):], where) for i, (rel, where) in enumerate(files) if rel.startswith(prefix)]
    images = []
    for i, rel, where in chosen:
        label = f"{path}:{where}" if path.is_file() else where
        if not rel.lower().endswith(IMAGE_EXTENSIONS):
            skipped.append((label, "not an image file (extension)"))
        elif "/" not in rel:
            skipped.append((label, "not inside a class folder"))
        else:
            images.append((i, rel.split("/", 1)[0], where))
    class_names = sorted({cls for _, cls, _ in images})
    class_index = {name: k for k, name in enumerate(class_names)}
    loose = [label for label, reason in skipped if reason == "not inside a class folder"]
    if loose:  # images the user may have meant to include: said, not logged where nobody looks
        logger.warning("%s: left out %d image(s) not inside a class folder (e.g. %s); a class's images go in "
                       "<root>/<class>/", path, len(loose), loose[0])
    if len(skipped) > len(loose):
        logger.info("%s: left out %d non-image file(s), e.g. %s", path, len(skipped) - len(loose),
                    next(label for label, reason in skipped if reason != "not inside a class folder"))
    if not images:
        raise ValueError(f"no images found in {path} (split {split!r}); expected <class>/<image> with one of "
                         f"{', '.join(IMAGE_EXTENSIONS)}")
    return ImageTree(
        source=str(path),
        paths=[where for _, _, where in images],
        labels=[class_index[cls] for _, cls, _ in images],
        class_names=distinct_shown_names(class_names, source=path),
        is_tar=path.is_file(),
        spans=[spans[i] for i, _, _ in images] if spans is not None else [],
        skipped=skipped,
    )


def shown_class_name(folder: str) -> str:
    """A class folder's name as text: bytes that are not UTF-8 (kept by Python as surrogates, which no file or plot
    can hold) and control characters (a newline) become U+FFFD."""
    text = folder.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return "".join(c if c.isprintable() else "\ufffd" for c in text)


def distinct_shown_names(folders: list[str], *, source: object, what: str = "class folders") -> list[str]:
    """``shown_class_name`` of each class folder; two folders shown alike (``caf\\xe9`` and ``caf\\xe8`` in a file system
    that is not UTF-8 both become ``caf\ufffd``) are refused: one class's images would be scored as the other's. ``what``
    names them in the error (a labels CSV's ``labels``)."""
    shown = [shown_class_name(name) for name in folders]
    first: dict[str, str] = {}
    for folder, name in zip(folders, shown):
        if name in first:
            raise ValueError(f"{source}: {what} {first[name]!r} and {folder!r} have the same name as text "
                             f"({name!r}: bytes that are not UTF-8, or control characters); rename one of them")
        first[name] = folder
    return shown


def report_skipped(skipped: list[tuple[str, str]], *, source: str, what: str = "file(s)", limit: int = 10) -> None:
    """Warn once, listing up to ``limit`` skipped paths with the reason; the rest are logged at DEBUG level (the
    CLI's ``--debug``): a dataset with an annotation file beside every image would otherwise print millions."""
    if not skipped:
        return
    shown = "\n".join(f"  {path}: {reason}" for path, reason in skipped[:limit])
    more = (f"\n  ... and {len(skipped) - limit} more (listed with --debug)" if len(skipped) > limit else "")
    for path, reason in skipped[limit:]:
        logger.debug("skipped %s: %s", path, reason)
    warnings.warn(f"{source}: skipped {len(skipped)} {what}:\n{shown}{more}", stacklevel=3)
