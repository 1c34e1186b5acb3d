"""Checks on where predict and features write, made before any image is processed: a bad output path is
then refused in a second, not after an hour of work whose results have nowhere to go."""

from __future__ import annotations

import os
from pathlib import Path


def prepare_output_dir(folder: str | os.PathLike[str], *, flag: str) -> Path:
    """``folder``, created if missing; ``ValueError`` naming ``flag`` when it is a file or cannot be created."""
    path = Path(folder)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {path}: exists and is not a folder; give a folder for the output files "
                         "(it is created if missing)")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"{flag} {path}: cannot create this folder ({error.strerror or error}); give a folder "
                         "you can write to") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {path}: the folder is not writable; give a folder you can write to")
    return path
