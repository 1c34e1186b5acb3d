"""How a config dataclass is filled in: from JSON (``from_dict``) and from command-line flags (``_opt``,
``config_flags``); where resnetkit keeps its cache."""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
MIB = 1024 * 1024  # bytes in a MiB: sizes are MiB on the command line, bytes in the configs


def _from_dict(cls: type[T], data: dict[str, Any], *, what: str) -> T:
    """Build dataclass ``cls`` from ``data``, naming unknown keys instead of failing on them late."""
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {what} field(s) {unknown}; known fields are {sorted(known)}")
    values = dict(data)
    for f in fields(cls):  # type: ignore[arg-type]
        # JSON has no tuples: turn lists back into the tuples the dataclass declares.
        if isinstance(values.get(f.name), list) and "tuple" in str(f.type):
            values[f.name] = tuple(values[f.name])
    return cls(**values)


class JsonConfig:
    """``to_dict`` / ``from_dict`` for a config dataclass: plain JSON both ways, unknown keys named on the way in.
    ``_what`` names the config in that error ("unknown model config field(s) ...")."""

    _what = "config"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        return _from_dict(cls, data, what=cls._what)  # type: ignore[attr-defined]


def _opt(default: Any, help: str, *, flag: str = "", type: Callable[[str], Any] | None = None,
         choices: tuple[str, ...] = (), positional: bool = False, metavar: str = "", unit: int = 1) -> Any:
    """A field a user sets from the command line: its help text (units, meaning) lives beside its default, and
    the CLI builds its ``--flag`` from both. ``flag`` renames the flag (``TrainConfig.model.arch`` is
    ``--model``); ``type`` is the flag's type where the default (None) does not tell it (for a tuple: of its
    items); ``positional``: an argument without ``--`` (the model of ``resnetkit eval MODEL DATA``); ``metavar``:
    the unit shown in the help (PIXELS, IMAGES); ``unit``: the flag counts in units of this many of the field's
    (``--max-upload-mb`` sets ``max_upload_bytes``: unit ``MIB``)."""
    metadata: dict[str, Any] = {"help": help, "flag": flag, "type": type, "choices": choices, "positional": positional,
                                "metavar": metavar, "unit": unit}
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class Flag:
    """One command-line setting: ``--name`` (or a positional ``name``) sets ``field`` (of ``section``)."""

    name: str
    section: str
    field: str
    default: Any
    help: str
    type: type
    choices: tuple[str, ...] = ()
    positional: bool = False
    many: bool = False  # a tuple field: the flag takes one or more values
    metavar: str = ""
    unit: int = 1  # the flag's value times this is the field's (MiB given, bytes kept)

    def field_value(self, given: Any) -> Any:
        """The field's value for what was given on the command line (a list for a tuple field)."""
        if isinstance(given, list):
            return tuple(given)
        return round(given * self.unit) if self.unit != 1 and given is not None else given


def config_flags(cls: type, *, section: str = "") -> dict[str, Flag]:
    """The command-line settings of a config dataclass: its fields that carry help (``_opt``), by flag name."""
    found: dict[str, Flag] = {}
    for f in fields(cls):
        if "help" not in f.metadata:
            continue  # set by the program (num_classes from the data), not by the user
        meta = f.metadata
        kind = meta["type"] or (float if isinstance(f.default, tuple) else type(f.default))
        name, unit = meta["flag"] or f.name, meta.get("unit", 1)
        default = f.default / unit if unit != 1 and f.default is not None else f.default
        found[name] = Flag(name, section, f.name, default, meta["help"], kind, meta["choices"], meta["positional"],
                           many="tuple" in str(f.type), metavar=meta["metavar"] or kind.__name__.upper(), unit=unit)
    return found


def cache_dir() -> Path:
    """Where resnetkit keeps downloads and derived data between runs: ``$RESNETKIT_CACHE``, or
    ``~/.cache/resnetkit``."""
    return Path(os.environ.get("RESNETKIT_CACHE") or Path.home() / ".cache" / "resnetkit").expanduser()


def check_count(name: str, value: Any, *, minimum: int, maximum: int | None = None, meaning: str = "") -> None:
    """``value`` must be a whole number in [minimum, maximum] (a batch size, a number of epochs, classes or pixels);
    NaN, infinity, fractions and booleans are refused too. The error names ``name``, the value and what it counts."""
    if (isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum
            or (maximum is not None and value > maximum)):
        bounds = f">= {minimum}" if maximum is None else f"from {minimum} to {maximum:,}"
        raise ValueError(f"{name}={value!r} must be a whole number {bounds}" + (f" ({meaning})" if meaning else ""))


def check_in_range(name: str, value: Any, low: float, high: float, *, high_included: bool = False,
                   meaning: str = "") -> None:
    """``value`` must be a real number in [low, high) (or [low, high] with ``high_included``); NaN is refused."""
    inside = (not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)
              and low <= value and (value <= high if high_included else value < high))
    if not inside:
        raise ValueError(f"{name}={value!r} must be a number in [{low:g}, {high:g}{']' if high_included else ')'}"
                         + (f" ({meaning})" if meaning else ""))


def check_flag(name: str, value: Any) -> None:
    """``value`` must be true or false (a recipe's ``channels_last: "false"`` is a string, which would count as on)."""
    if not isinstance(value, bool):
        raise ValueError(f"{name}={value!r} must be true or false")


def mebibytes(text: str) -> float:
    """A size in MiB as typed on the command line: a finite number of at least one byte (NaN would pass every
    comparison)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value * MIB < 1:
        raise ValueError(f"{text!r} is not a size in MiB above 0 (e.g. 0.5, 8, 256)")
    return value


def check_finite(name: str, value: Any, *, minimum: float = 0.0) -> None:
    """``value`` must be a finite number >= ``minimum`` (a learning rate, a length in epochs)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < minimum:
        raise ValueError(f"{name}={value!r} must be a finite number >= {minimum:g}")
