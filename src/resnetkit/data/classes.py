"""Class-name files: one name per line, a JSON list, or a JSON object of index -> name."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..config import check_class_names


EXPECTED = ("give a UTF-8 text file with one class name per line, a JSON list of names, or a JSON object of "
            "index -> name")
MAX_BYTES = 64 * 1024 * 1024  # ImageNet-21k's 21,843 names take under 1 MB


def read_class_names(path: str | os.PathLike[str]) -> list[str]:
    """Class names in index order.

    Accepts a text file with one name per line (blank lines ignored), a JSON list of names, or a JSON
    object mapping indices to names or to ``[id, name]`` pairs (the ``imagenet_class_index.json`` layout).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such class-name file")
    if not path.is_file():
        raise ValueError(f"{path}: {'a folder' if path.is_dir() else 'not a regular file'}, not a class-name file; "
                         f"{EXPECTED}")
    if path.stat().st_size > MAX_BYTES:
        raise ValueError(f"{path}: {path.stat().st_size / 2**20:,.1f} MiB is too large for a class-name file; "
                         f"{EXPECTED}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not a class-name file (not UTF-8 text: byte {error.start}); {EXPECTED}") from None
    if text.lstrip().startswith(("[", "{")):
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as e:  # RecursionError: thousands of nested brackets
            raise ValueError(f"{path}: looks like JSON but does not parse ({type(e).__name__}); {EXPECTED}") from None
        return check_class_names(_names_from_json(data, path), str(path))
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise ValueError(f"{path}: no class names in the file; write one name per line")
    return check_class_names(names, str(path))


def _names_from_json(data: object, path: Path) -> list[str]:
    if isinstance(data, list) and all(isinstance(name, str) for name in data):
        return list(data)
    if isinstance(data, dict):
        try:
            by_index = {int(k): v for k, v in data.items()}
        except ValueError:
            raise ValueError(f"{path}: a JSON object must map class indices (0, 1, ...) to names") from None
        if sorted(by_index) != list(range(len(by_index))):
            raise ValueError(f"{path}: class indices must run 0..{len(by_index) - 1} without gaps")
        names = [by_index[i][-1] if isinstance(by_index[i], list) and by_index[i] else by_index[i]
                 for i in range(len(by_index))]  # [id, name] pairs: the name is the last
        if all(isinstance(name, str) for name in names):
            return names
    raise ValueError(f"{path}: expected a JSON list of names or an object of index -> name")


def resolve_class(target: int | str, class_names: list[str], num_classes: int) -> int:
    """A class index from a name or an index (given as int or digits), with an error that lists choices."""
    if isinstance(target, str) and target in class_names:
        # Names may repeat (ImageNet has two "crane" and two "maillot" classes): a repeated one is ambiguous.
        indices = [i for i, name in enumerate(class_names) if name == target]
        if len(indices) > 1:
            raise ValueError(f"class {target!r} names {len(indices)} classes (indices "
                             f"{', '.join(map(str, indices))}); give the index instead")
        return indices[0]
    if isinstance(target, int) or (isinstance(target, str) and target.strip().isascii() and target.strip().isdigit()):
        index = int(target)
        if 0 <= index < num_classes:
            return index
        raise ValueError(f"class index {index} is out of range; the model has {num_classes} classes "
                         f"(0..{num_classes - 1})")
    shown = ", ".join(class_names[:20]) + (" ..." if len(class_names) > 20 else "")
    raise ValueError(f"unknown class {target!r}; give a class index or one of: {shown or '(the model has no names)'}")


def relabelling(names: list[str], target: list[str], *, where: str) -> list[int]:
    """Index in ``target`` of each of ``names``: a split whose classes are some of the training classes (a small
    validation folder without a rare class) takes the training split's labels; a class training lacks is refused."""
    index = {name: i for i, name in enumerate(target)}
    unknown = [name for name in names if name not in index]
    if unknown:
        raise ValueError(f"{where} has class(es) the training split lacks: {unknown[:5]}"
                         f"{' ...' if len(unknown) > 5 else ''} (training: {', '.join(target[:5])}"
                         f"{' ...' if len(target) > 5 else ''}); give it only classes that have training images")
    return [index[name] for name in names]
