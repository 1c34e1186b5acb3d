"""``resnetkit <command>``: parse arguments, call one library function, print.

Each command builds its arguments and calls one library function (``commands``; the parser: ``parser``); errors
end in one line (``--debug`` shows the traceback).
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from ..files import created_folders_mark, remove_created_folders
from .parser import build_parser

__all__ = ["build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(format="resnetkit: %(message)s")
    logging.getLogger("resnetkit.reproduce").setLevel(logging.INFO)  # one line per study run: started, skipped, done
    package_log = logging.getLogger("resnetkit")
    level_before = package_log.level
    if args.debug:  # every detail: tracebacks, and the log's debug lines (each skipped file, ...)
        package_log.setLevel(logging.DEBUG)
    shown_before, warnings.showwarning = warnings.showwarning, _warning_line(args.command)
    mark = created_folders_mark()
    try:
        return args.func(args)
    except BrokenPipeError:  # `resnetkit predict ... | head`: the reader has had enough; no error to report
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's flush at exit would fail again
        return 141  # 128 + SIGPIPE, as a shell tool ends
    except Exception as e:  # every error ends in one line; --debug shows where it came from
        remove_created_folders(mark)  # a refused command leaves no empty folder behind
        if args.debug:
            raise
        print(f"resnetkit {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: one line and the shell's status for it, not a traceback
        if args.debug:
            raise
        resumable = " (a training run continues from its last checkpoint with --resume)" if args.command in (
            "train", "finetune", "prune") else ""
        print(f"resnetkit {args.command}: interrupted{resumable}", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = shown_before  # main() called from Python leaves warnings and logging as it found them
        package_log.setLevel(level_before)


def _warning_line(command: str) -> Callable[..., None]:
    """Warnings as the CLI's other messages: ``resnetkit COMMAND: warning: ...``, without Python's file, line and
    source text (the message itself names the file or value it is about)."""
    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int, file: Any = None,
             line: str | None = None) -> None:
        kind = "" if category is UserWarning else f"{category.__name__}: "
        print(f"resnetkit {command}: warning: {kind}{message}", file=sys.stderr if file is None else file)

    return show


def _one_line(error: BaseException) -> str:
    """The message a user can act on. An error raised by resnetkit's own code says what was wrong and what to
    do; one raised inside a library (torch, PIL ...) is named by its type, with a pointer to --debug."""
    import traceback
    from pathlib import Path

    text = " ".join(str(error).split()) or type(error).__name__
    frames = traceback.extract_tb(error.__traceback__)
    package = Path(__file__).resolve().parent.parent  # resnetkit/, not only resnetkit/cli/
    ours = bool(frames) and Path(frames[-1].filename).resolve().is_relative_to(package)
    if ours or isinstance(error, FileNotFoundError):
        return text
    if isinstance(error, MemoryError) or "can't allocate memory" in text or "out of memory" in text.lower():
        return (f"out of memory ({type(error).__name__}: {text}); use a smaller --batch-size, a smaller "
                "--image-size / --input-size, or a machine with more memory")
    return f"{type(error).__name__}: {text} (run with --debug for the traceback)"
