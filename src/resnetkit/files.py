"""Writing files so that a reader, or a run killed half-way, never sees half a file: one rule for model files,
checkpoints, caches and reports; output folders checked before the work whose results they will hold; and
which inputs are addresses (URLs) rather than paths."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import secrets
import socket
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _host() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _owner() -> str:
    """This process, as the temporary files it writes are named: its host (hashed) and process id."""
    return f"h{_host()}p{os.getpid()}"


_TEMP_NAME = re.compile(r"^\..+\.h([0-9a-f]{8})p(\d+)-[0-9a-f]{12}\.tmp")


def _create_beside(path: Path) -> Path:
    """A new, empty file in ``path``'s folder, created with mode 0666 so the process's umask applies, as it
    does to a plain ``open()`` (``tempfile.mkstemp`` would make it 0600, unreadable to other users). Its name says
    which process writes it, so that one killed mid-write can be cleaned up later (``remove_stale_temporaries``)."""
    for _ in range(100):
        # ends in the target's own suffix: writers that check it (torch.export wants .pt2) see the name they expect
        tmp = path.with_name(f".{path.name}.{_owner()}-{secrets.token_hex(6)}.tmp{path.suffix}")
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file beside {path}")


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary files atomic writes left in ``folder`` when their process was killed mid-write (SIGKILL,
    a power cut: no ``finally`` ran), each as large as the file it was to become (a checkpoint with its optimizer
    state); only files of this host whose process is gone. Returns what was removed."""
    host, removed = _host(), []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        found = _TEMP_NAME.match(name)
        if found is None or found.group(1) != host or _alive(int(found.group(2))):
            continue
        try:
            os.unlink(os.path.join(folder, name))
            removed.append(Path(folder) / name)
        except OSError:
            pass
    return removed


_CLAIM = re.compile(r"h([0-9a-f]{8})p(\d+)")
CLAIM_STARTING_S = 10  # an empty claim file younger than this is a process that is still writing its name in it


@contextmanager
def claim(path: str | os.PathLike[str]) -> Iterator[str | None]:
    """Claim ``path`` (a lock file) for this process while the block runs: yields None when claimed (the file is
    removed afterwards), else the live process of this host that holds it (``pid 1234``). A claim whose process is
    gone (killed: no ``finally`` ran), or of another host, is taken over."""
    path = Path(path)
    for _ in range(5):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            holder = _claim_holder(path)
            if holder is not None:
                yield holder
                return
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            continue
        with os.fdopen(fd, "w") as f:
            f.write(_owner())
        try:
            yield None
        finally:
            with contextlib.suppress(OSError):
                if path.read_text() == _owner():
                    path.unlink()
        return
    raise FileExistsError(f"{path}: could not be claimed (other processes keep claiming it)")


def _claim_holder(path: Path) -> str | None:
    """The live process of this host that holds the claim ``path``, or None for a stale claim."""
    try:
        text, age = path.read_text(), time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return None
    except OSError:
        return "a process that cannot be named"
    if not text:
        return "a process that is starting" if age < CLAIM_STARTING_S else None
    found = _CLAIM.fullmatch(text.strip())
    if found and found.group(1) == _host() and _alive(int(found.group(2))):
        return f"pid {found.group(2)}"
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # (a number no process can have)
        return False
    except PermissionError:  # another user's process: alive
        pass
    return True


FULL_DISK_BYTES = 1 << 20  # a write that failed with less than this left on its disk is taken for a full disk


def _disk_full(folder: Path) -> bool:
    try:
        stats = os.statvfs(folder)
    except (OSError, AttributeError):  # no statvfs (Windows), or the folder went away: not known to be full
        return False
    return stats.f_bavail * stats.f_frsize < FULL_DISK_BYTES


def _rust_errno(error: Exception) -> int | None:
    """The OS error number a Rust writer (safetensors) puts at the end of its message: "... (os error 28)"."""
    found = re.search(r"\(os error (\d+)\)", str(error))
    return int(found.group(1)) if found else None


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary file beside ``path`` to write; when the block ends it is synced to disk and renamed over
    ``path`` (an atomic replace), or removed if the block raised, leaving any earlier ``path`` as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_beside(path)
    mode = tmp.stat().st_mode & 0o777  # what the umask made of 0666
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        if tmp.stat().st_mode & 0o777 != mode:  # a writer that recreated the file (safetensors makes it 0600)
            try:
                os.chmod(tmp, mode)
            except OSError:  # a file system without modes: the file is still whole
                pass
        os.replace(tmp, path)
    except Exception as error:
        # A full disk reaches writers in their own words ("No space left on device" without the file, torch's
        # "unexpected pos 704 vs 598", safetensors' "I/O error"): this names the file and says what happened,
        # looking at the disk while the partial file still fills it.
        code = error.errno if isinstance(error, OSError) else _rust_errno(error)  # safetensors: "(os error 28)"
        full = code in (errno.ENOSPC, errno.EDQUOT) or _disk_full(path.parent)
        if not (full or isinstance(error, OSError)):
            raise
        kept = "the earlier file is kept as it was" if path.exists() else "nothing was written"
        reason = "the disk is full" if full else (error.strerror or str(error))  # (an OSError here)
        raise OSError(errno.ENOSPC if full else code,
                      f"cannot write {path} ({reason}); {kept}: free space or write somewhere else, then run the "
                      "command again") from error
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """``path.write_text(text)``, atomically (``atomic_path``)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def save_figure_atomic(figure: Any, path: str | os.PathLike[str], **options: Any) -> Path:
    """A matplotlib figure's ``savefig`` to ``path`` (format from its suffix), atomically (``atomic_path``)."""
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format=Path(path).suffix.lstrip(".") or None, **options)
    return Path(path)


_CREATED: list[Path] = []  # the folders prepare_output_dir made in this process, parents first


def prepare_output_dir(folder: str | os.PathLike[str], *, flag: str) -> Path:
    """``folder``, created if missing; ``ValueError`` naming ``flag`` when it is a file or cannot be created. The
    folders it creates are recorded, so that a command refused afterwards can remove them again while they are
    empty (``remove_created_folders``)."""
    path = Path(folder)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {path}: exists and is not a folder; give a folder for the output files "
                         "(it is created if missing)")
    new, missing = [], Path(os.path.abspath(path))
    while not os.path.lexists(missing) and missing != missing.parent:
        new.append(missing)
        missing = missing.parent
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"{flag} {path}: cannot create this folder ({error.strerror or error}); give a folder "
                         "you can write to") from None
    _CREATED.extend(reversed(new))
    if not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {path}: the folder is not writable; give a folder you can write to")
    return path


def created_folders_mark() -> int:
    """Where the record of created folders stands now: give it to ``remove_created_folders``."""
    return len(_CREATED)


def remove_created_folders(mark: int) -> None:
    """Remove the folders ``prepare_output_dir`` created since ``mark`` that are still empty, deepest first: a refused
    command leaves no empty folder behind (a folder it wrote into, or one that was there before, stays)."""
    for folder in reversed(_CREATED[mark:]):
        try:
            folder.rmdir()
        except OSError:
            pass  # not empty, or already gone
    del _CREATED[mark:]


def walk_files(root: str | os.PathLike[str], *, hidden_folders: bool = True) -> Iterator[str]:
    """The full path of every file under ``root``, folder by folder in sorted order.

    Links to folders are followed, but each real folder is entered once: a link loop (``cat/loop -> ..``)
    ends instead of listing the tree again and again or never finishing. ``hidden_folders=False`` skips
    folders whose name starts with a dot.
    """
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        try:
            info = os.stat(dirpath)
        except OSError:
            dirnames[:] = []
            continue
        if (info.st_dev, info.st_ino) in seen:
            dirnames[:] = []
            continue
        seen.add((info.st_dev, info.st_ino))
        dirnames[:] = sorted(d for d in dirnames if hidden_folders or not d.startswith("."))
        for name in sorted(filenames):
            yield os.path.join(dirpath, name)


URL_SCHEMES = ("http", "https", "file")


def is_url(text: str) -> bool:
    """Whether an input names an address (http, https, file) rather than a path; a malformed address
    (``http://[::1``) is one too, so that its download fails naming it."""
    try:
        return urllib.parse.urlparse(text).scheme in URL_SCHEMES
    except ValueError:
        return text.split("://", 1)[0].lower() in URL_SCHEMES


def file_url_path(url: str) -> str | None:
    """The local path a ``file://`` URL names, or None for any other address."""
    try:
        parsed = urllib.parse.urlparse(url)
    except ValueError:
        return None
    return urllib.request.url2pathname(parsed.path) if parsed.scheme == "file" else None


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file's bytes (hex), read in 1 MiB blocks: the one digest of weights and data caches."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
