"""CIFAR-10 and CIFAR-100 in their official formats: python pickles and binary records.

Accepted as the extracted folders (``cifar-10-batches-py``, ``cifar-10-batches-bin``,
``cifar-100-python``, ``cifar-100-binary``), as the official ``.tar.gz`` archives (read in place and
checked against the MD5 published on https://www.cs.toronto.edu/~kriz/cifar.html), or by name
(``"cifar10"``) from a data root where they are looked for and, if asked, downloaded.

Pickles are read with an unpickler that only accepts plain containers and numpy arrays, so a
tampered file cannot run code. Pixels are stored as 3072 bytes per image: 1024 red, 1024 green,
1024 blue, each row-major 32x32, which is exactly a (3, 32, 32) uint8 tensor.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import pickle
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .memory import InMemoryImageDataset
from .tree import open_tar

logger = logging.getLogger(__name__)

CIFAR_URL = "https://www.cs.toronto.edu/~kriz/"
PIXELS = 3 * 32 * 32


@dataclass(frozen=True)
class CifarFormat:
    """One official distribution: archive name and MD5, the folder inside, and its file names."""

    dataset: str  # "cifar10" or "cifar100"
    kind: str  # "python" or "binary"
    archive: str
    md5: str
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_files: tuple[str, ...]

    @property
    def url(self) -> str:
        return CIFAR_URL + self.archive


FORMATS = (
    CifarFormat("cifar10", "python", "cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a",
                "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",),
                ("batches.meta",)),
    CifarFormat("cifar10", "binary", "cifar-10-binary.tar.gz", "c32a1d4ab5d03f1284b67883e8d87530",
                "cifar-10-batches-bin", tuple(f"data_batch_{i}.bin" for i in range(1, 6)), ("test_batch.bin",),
                ("batches.meta.txt",)),
    CifarFormat("cifar100", "python", "cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85",
                "cifar-100-python", ("train",), ("test",), ("meta",)),
    CifarFormat("cifar100", "binary", "cifar-100-binary.tar.gz", "03b5dce01913d631647c71ecec9e9cb8",
                "cifar-100-binary", ("train.bin",), ("test.bin",), ("fine_label_names.txt", "coarse_label_names.txt")),
)
CIFAR_NAMES = ("cifar10", "cifar100")


class _SafeUnpickler(pickle.Unpickler):
    """Rebuilds dicts, lists, bytes and numpy arrays; refuses anything else (no code execution)."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):  # type: ignore[no-untyped-def]
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR pickle")


def _unpickle(data: bytes, name: str) -> dict[bytes, object]:
    try:
        return _SafeUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as error:  # noqa: BLE001
        raise ValueError(f"{name} is not a readable CIFAR pickle batch: {error}") from error


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def detect_format(path: Path) -> CifarFormat | None:
    """The official format a folder or archive holds, by its file names; None if it is not CIFAR."""
    if path.is_dir():
        return next((fmt for fmt in FORMATS if all((path / name).is_file() for name in fmt.train_files)), None)
    for fmt in FORMATS:
        if path.name == fmt.archive:
            return fmt
    if str(path).endswith((".tar.gz", ".tgz", ".tar")):
        # Renamed official archives start with their folder; reading one header is enough to tell.
        with open_tar(path) as archive:
            first = archive.next()
        top = first.name.removeprefix("./").split("/", 1)[0] if first is not None else ""
        return next((fmt for fmt in FORMATS if fmt.folder == top), None)
    return None


def _read_files(path: Path, fmt: CifarFormat) -> dict[str, bytes]:
    """The format's files by name, from the folder or in one pass over the archive."""
    wanted = set(fmt.train_files + fmt.test_files + fmt.meta_files)
    if path.is_dir():
        return {name: (path / name).read_bytes() for name in wanted if (path / name).exists()}
    found: dict[str, bytes] = {}
    with open_tar(path) as archive:
        for member in archive:
            name = Path(member.name).name
            if member.isfile() and name in wanted:
                handle = archive.extractfile(member)
                found[name] = handle.read() if handle is not None else b""
    return found


def _class_names(fmt: CifarFormat, files: dict[str, bytes], labels: str) -> list[str]:
    if fmt.kind == "python":
        name = fmt.meta_files[0]
        meta = _unpickle(files[name], name)
        key = b"label_names" if fmt.dataset == "cifar10" else f"{labels}_label_names".encode()
        found = meta.get(key) if isinstance(meta, dict) else None
        if not isinstance(found, list) or not found or not all(isinstance(n, (bytes, str)) for n in found):
            raise ValueError(f"{name} is not a CIFAR meta file: it lacks {key.decode()!r}, a list of class names")
        names = [n.decode(errors="replace") if isinstance(n, bytes) else n for n in found]
    else:
        name = fmt.meta_files[0] if fmt.dataset == "cifar10" else f"{labels}_label_names.txt"
        names = [line.strip() for line in files[name].decode(errors="replace").splitlines() if line.strip()]
    if not names or len(names) > 256:
        raise ValueError(f"{name} lists {len(names)} class names; a CIFAR meta file lists 1 to 256")
    return names


def _decode_batch(fmt: CifarFormat, name: str, data: bytes, labels: str) -> tuple[np.ndarray, np.ndarray]:
    if fmt.kind == "python":
        batch = _unpickle(data, name)
        key = b"labels" if fmt.dataset == "cifar10" else f"{labels}_labels".encode()
        if not isinstance(batch, dict) or b"data" not in batch or key not in batch:
            raise ValueError(f"{name} is not a CIFAR batch: it lacks 'data' or {key.decode()!r}")
        pixels, targets = batch[b"data"], batch[key]
        # The pixels are an array and the labels an array or a flat list of numbers: a pickle of nested lists
        # that repeat one inner list is a few kB and becomes gigabytes as an array.
        if not isinstance(pixels, np.ndarray) or not (isinstance(targets, np.ndarray) or (
                isinstance(targets, list) and all(type(t) in (int, float) for t in targets))):
            raise ValueError(f"{name} is not a CIFAR batch: its 'data' is a {type(pixels).__name__} and its "
                             f"{key.decode()!r} a {type(targets).__name__}, where a CIFAR batch holds a uint8 array "
                             "and a list of whole numbers (a damaged or edited batch)")
        targets = np.asarray(targets)
        if pixels.dtype != np.uint8 or pixels.ndim != 2 or pixels.shape[1] != PIXELS:
            raise ValueError(f"{name} holds {pixels.dtype} pixels of shape {pixels.shape}, not CIFAR's uint8 rows of "
                             f"{PIXELS} values (a damaged or edited batch)")
        if targets.ndim != 1 or len(targets) != len(pixels) or targets.dtype.kind not in "iu":
            raise ValueError(f"{name} has {targets.shape} labels of type {targets.dtype} for {len(pixels)} images: "
                             "a CIFAR batch has one whole-number label per image")
        return pixels.reshape(-1, 3, 32, 32), targets.astype(np.int64)
    label_bytes = 1 if fmt.dataset == "cifar10" else 2
    record = label_bytes + PIXELS
    if len(data) % record:
        raise ValueError(f"{name} has {len(data)} bytes, not a whole number of {record}-byte CIFAR records "
                         "(truncated download?)")
    rows = np.frombuffer(data, dtype=np.uint8).reshape(-1, record)
    # CIFAR-100 records start with the coarse label, then the fine one.
    label_column = 0 if fmt.dataset == "cifar10" or labels == "coarse" else 1
    return rows[:, label_bytes:].reshape(-1, 3, 32, 32), rows[:, label_column].astype(np.int64)


def read_cifar(path: str | os.PathLike[str], *, labels: str = "fine",
               check_md5: bool | None = None) -> dict[str, InMemoryImageDataset]:
    """Both splits (``{"train": ..., "test": ...}``) of a CIFAR folder or archive, in one pass.

    ``labels`` picks CIFAR-100's ``"fine"`` (100 classes) or ``"coarse"`` (20 superclasses).
    ``check_md5``: None checks archives that carry an official file name, True always, False never.
    """
    if labels not in ("fine", "coarse"):
        raise ValueError(f"labels={labels!r} must be 'fine' or 'coarse'")
    source = Path(path)
    if source.is_dir() and detect_format(source) is None:
        inner = [source / f.folder for f in FORMATS if (source / f.folder).is_dir()]
        source = inner[0] if inner else source
    fmt = detect_format(source)
    if fmt is None:
        raise ValueError(f"{path} is not a CIFAR-10/100 folder or archive in an official format "
                         f"({', '.join(f.folder for f in FORMATS)} or their .tar.gz)")
    if source.is_file() and (check_md5 or (check_md5 is None and source.name == fmt.archive)):
        actual = md5sum(source)
        if actual != fmt.md5:
            raise ValueError(f"{source} has MD5 {actual}, but the official {fmt.archive} has {fmt.md5}: the file is "
                             f"corrupt or incomplete. Delete it and download it again from {fmt.url}")
    files = _read_files(source, fmt)
    missing = sorted(set(fmt.train_files + fmt.test_files + fmt.meta_files) - set(files))
    if fmt.dataset == "cifar100" and fmt.kind == "binary":
        unused = "coarse_label_names.txt" if labels == "fine" else "fine_label_names.txt"
        missing = [m for m in missing if m != unused]
    if missing:
        raise ValueError(f"{source} lacks {', '.join(missing)} of the official {fmt.folder} layout")
    try:
        class_names = _class_names(fmt, files, labels)
        splits = {split: _read_split(fmt, files, names, labels, class_names)
                  for split, names in (("train", fmt.train_files), ("test", fmt.test_files))}
    except ValueError as error:  # the message names the file inside; this names the dataset it is in
        raise ValueError(f"{source}: {error}. Download the official archive again ({fmt.url})") from error
    return {split: InMemoryImageDataset(images, targets, class_names, source=f"{source}:{split}")
            for split, (images, targets) in splits.items()}


def _read_split(fmt: CifarFormat, files: dict[str, bytes], names: tuple[str, ...], labels: str,
                class_names: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """One split's images and labels, every label checked to name one of ``class_names``."""
    parts = [_decode_batch(fmt, name, files[name], labels) for name in names]
    for name, (_, targets) in zip(names, parts):
        if len(targets) and not 0 <= targets.min() <= targets.max() < len(class_names):
            raise ValueError(f"{name} has labels from {targets.min()} to {targets.max()}, but the meta file names "
                             f"{len(class_names)} classes (a damaged or edited batch)")
    return (torch.from_numpy(np.concatenate([p[0] for p in parts])),
            torch.from_numpy(np.concatenate([p[1] for p in parts])))


def find_cifar(name: str, root: str | os.PathLike[str]) -> Path | None:
    """An extracted folder or official archive of ``name`` under ``root`` (python format preferred)."""
    root = Path(root)
    for fmt in (f for f in FORMATS if f.dataset == name):
        for candidate in (root / fmt.folder, root / fmt.archive):
            if candidate.exists():
                return candidate
    return None


def download_cifar(name: str, root: str | os.PathLike[str], *, kind: str = "python") -> Path:
    """Download the official archive of ``name`` into ``root`` (checked against its MD5); returns its path."""
    fmt = next((f for f in FORMATS if f.dataset == name and f.kind == kind), None)
    if fmt is None:
        raise ValueError(f"no official {kind!r} archive for {name!r}; datasets: {CIFAR_NAMES}, kinds: python, binary")
    from torchvision.datasets.utils import download_url

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    # Into a temporary folder beside the target, then renamed: a killed or corrupt download never leaves a
    # partial archive where the next run would look for the dataset.
    with tempfile.TemporaryDirectory(dir=root, prefix=".download-") as partial:
        try:
            download_url(fmt.url, partial, filename=fmt.archive, md5=fmt.md5)
        except (OSError, RuntimeError) as error:  # URLError is an OSError; torchvision raises RuntimeError on MD5
            raise RuntimeError(
                f"could not download {fmt.url} ({error}). On a machine without internet access, download "
                f"{fmt.archive} (MD5 {fmt.md5}) elsewhere and copy it into {root}, or pass its path as the source"
            ) from error
        os.replace(Path(partial) / fmt.archive, root / fmt.archive)
    return root / fmt.archive


def load_cifar(name: str, split: str = "train", *, root: str | os.PathLike[str], download: bool = False,
               labels: str = "fine") -> InMemoryImageDataset:
    """The ``"train"`` (50,000) or ``"test"`` (10,000) split of ``"cifar10"`` or ``"cifar100"`` found under ``root``."""
    if name not in CIFAR_NAMES:
        raise ValueError(f"unknown CIFAR dataset {name!r}; choose one of {CIFAR_NAMES}")
    if split not in ("train", "test"):
        raise ValueError(f"CIFAR split {split!r} must be 'train' or 'test'")
    return read_cifar(locate_cifar(name, root=root, download=download), labels=labels)[split]


def locate_cifar(name: str, *, root: str | os.PathLike[str], download: bool = False) -> Path:
    """Where ``name`` is under ``root``; downloads it there if absent and ``download`` is set."""
    found = find_cifar(name, root)
    if found is not None:
        return found
    if download:
        return download_cifar(name, root)
    fmt = next(f for f in FORMATS if f.dataset == name and f.kind == "python")
    raise FileNotFoundError(
        f"{name} was not found in {root} (looked for {fmt.folder}/ and {fmt.archive}). Pass download=True "
        f"(`resnetkit train` does) to fetch {fmt.url}, or, offline, download it elsewhere and copy it into {root} "
        "(or point $RESNETKIT_DATA at the folder that holds it)"
    )
