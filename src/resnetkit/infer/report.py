"""Predictions as a table, JSON or CSV."""

from __future__ import annotations

import csv
import io
import json

from .predictor import Prediction

FORMATS = ("table", "json", "csv")


def format_predictions(predictions: list[Prediction], fmt: str = "table") -> str:
    if fmt == "json":
        return json.dumps([p.to_dict() for p in predictions], indent=2)
    if fmt == "csv":
        return _csv(predictions)
    if fmt == "table":
        return _table(predictions)
    raise ValueError(f"unknown format {fmt!r}; use one of {FORMATS}")


def _csv(predictions: list[Prediction]) -> str:
    """One row per (image, rank); an unusable image is one row with ``error`` filled in; ``uncertain``: the
    image's top-1 probability is below the predictor's ``min_confidence``."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["source", "rank", "index", "label", "probability", "error", "uncertain"])
    for p in predictions:
        if not p.ok:
            writer.writerow([p.source, "", "", "", "", p.error, ""])
        for rank, (index, label, prob) in enumerate(zip(p.indices, p.labels, p.probabilities), start=1):
            writer.writerow([p.source, rank, index, label, f"{prob:.6f}", "", str(p.uncertain).lower()])
    return out.getvalue().rstrip("\n")


def _table(predictions: list[Prediction]) -> str:
    """The top-k of each image under its name, probabilities in percent; errors in place."""
    rows = [("image", "rank", "label", "prob")]
    for p in predictions:
        source = _one_line(p.source)
        if not p.ok:
            # The message names the file for use elsewhere; here the name is already in the first column.
            message = _one_line((p.error or "").removeprefix(f"{p.source}: "))
            rows.append((source, "-", f"error: {message}", ""))
        for rank, (label, prob) in enumerate(zip(p.labels, p.probabilities), start=1):
            marked = f"{label} (uncertain)" if rank == 1 and p.uncertain else label
            rows.append((source if rank == 1 else "", str(rank), marked, f"{100 * prob:.2f}%"))
    # Long error messages would stretch the label column for every row; they are left unpadded.
    width_source = max(len(r[0]) for r in rows)
    width_label = max(len(r[2]) for r in rows if not r[2].startswith("error:"))
    lines = []
    for source, rank, label, prob in rows:
        if label.startswith("error:"):
            lines.append(f"{source:<{width_source}}  {rank:>4}  {label}")
        else:
            lines.append(f"{source:<{width_source}}  {rank:>4}  {label:<{width_label}}  {prob:>7}")
    ok = sum(p.ok for p in predictions)
    lines.append(f"{ok} of {len(predictions)} image(s) predicted" + (f", {len(predictions) - ok} failed"
                                                                     if ok < len(predictions) else ""))
    return "\n".join(line.rstrip() for line in lines)


def _one_line(text: str) -> str:
    """``text`` with control characters written as escapes: a file named ``a\\nb.png`` stays one row of the table
    (JSON and CSV quote such names themselves)."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() or char == " " else repr(char)[1:-1] for char in text)
