"""Reports of a run or an evaluation: Markdown + JSON, and as PNG the training curves, the confusion matrix, the
reliability diagram and the highest-loss images (fastai's ``plot_top_losses``).

Plots need matplotlib (``pip install 'resnetkit[plots]'``); without it the report says so and the
numbers are still written.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..files import save_figure_atomic, write_text_atomic
from .metrics import CALIBRATION_BINS, ClassificationMetrics, Sample

TOP_LOSSES_SHOWN = 36  # images in the top-losses figure (6 x 6); the table lists all of them
THUMBNAIL_SIDE = 160  # pixels, the longer side of each image in that figure


@dataclass(frozen=True)
class WorstImage:
    """A high-loss sample as the report shows it: its file (or ``#index``), the numbers, and a thumbnail if shown."""

    name: str
    sample: Sample
    thumbnail: torch.Tensor | None = None  # (3, H, W) uint8


def pyplot_or_none():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def plot_curves(history: list[dict[str, Any]], path: Path) -> Path | None:
    plt = pyplot_or_none()
    if plt is None or not history:
        return None
    epochs = [row["epoch"] for row in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [row["train_loss"] for row in history], color="C0", label="train")
    ax_acc.plot(epochs, [100 * (1 - row["train_acc"]) for row in history], color="C0", label="train")
    val = [(row["epoch"], row) for row in history if "val_loss" in row]
    if val:
        ax_loss.plot([e for e, _ in val], [r["val_loss"] for _, r in val], color="C1", label="validation")
        ax_acc.plot([e for e, _ in val], [100 * (1 - r["val_top1"]) for _, r in val], color="C1", label="validation")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="error (%)", title="top-1 error")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    save_figure_atomic(fig, path, dpi=100)
    plt.close(fig)
    return path


def plot_confusion(metrics: ClassificationMetrics, class_names: list[str], path: Path) -> Path | None:
    plt = pyplot_or_none()
    if plt is None:
        return None
    n = metrics.num_classes
    size = min(4 + 0.4 * n, 20)
    fig, ax = plt.subplots(figsize=(size, size))
    matrix = metrics.confusion.float()
    normalised = matrix / matrix.sum(1, keepdim=True).clamp(min=1)
    ax.imshow(normalised.numpy(), cmap="Blues", vmin=0, vmax=1)
    if n <= 30:
        ax.set_xticks(range(n), class_names, rotation=90)
        ax.set_yticks(range(n), class_names)
        for i in range(n):
            for j in range(n):
                if matrix[i, j] > 0:
                    ax.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if normalised[i, j] > 0.5 else "black")
    ax.set(xlabel="predicted", ylabel="true", title=f"confusion matrix (top-1 {100 * metrics.top1:.2f}%)")
    fig.tight_layout()
    save_figure_atomic(fig, path, dpi=100)
    plt.close(fig)
    return path


def plot_calibration(metrics: ClassificationMetrics, path: Path) -> Path | None:
    """The reliability diagram (Guo et al. 2017): accuracy per confidence bin against the diagonal of a model that
    is as often right as it is confident, and how many images each bin holds."""
    plt = pyplot_or_none()
    rows = metrics.calibration()
    if plt is None or not rows:
        return None
    width = 1 / CALIBRATION_BINS
    fig, (ax, ax_count) = plt.subplots(2, 1, figsize=(5, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.bar([r["low"] for r in rows], [r["accuracy"] for r in rows], width=width, align="edge", edgecolor="C0",
           alpha=0.7, label="accuracy")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="calibrated")
    ax.plot([r["low"] + width / 2 for r in rows], [r["confidence"] for r in rows], "_", color="C3", ms=12, mew=2,
            label="mean confidence in the bin")  # its distance to the bar's top is the bin's miscalibration
    ax.set(ylabel="accuracy", xlim=(0, 1), ylim=(0, 1),
           title=f"reliability (ECE {100 * metrics.expected_calibration_error:.2f}%, {CALIBRATION_BINS} bins)")
    ax.legend(loc="upper left")
    ax_count.bar([r["low"] for r in rows], [r["images"] for r in rows], width=width, align="edge", color="C2")
    ax_count.set(xlabel="confidence (top-1 probability)", ylabel="images")
    for axis in (ax, ax_count):
        axis.grid(alpha=0.3)
    fig.tight_layout()
    save_figure_atomic(fig, path, dpi=100)
    plt.close(fig)
    return path


def plot_top_losses(worst: list[WorstImage], class_names: list[str], path: Path) -> Path | None:
    """The highest-loss images with predicted / actual / loss / probability of the actual class above each, as
    fastai's ``plot_top_losses``."""
    plt = pyplot_or_none()
    shown = [w for w in worst[:TOP_LOSSES_SHOWN] if w.thumbnail is not None]
    if plt is None or not shown:
        return None
    columns = min(len(shown), math.ceil(math.sqrt(len(shown))))
    rows = math.ceil(len(shown) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.4 * columns, 2.6 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, w in zip(axes.flat, shown):
        s = w.sample
        ax.imshow(w.thumbnail.permute(1, 2, 0).numpy())
        ax.set_title(f"{class_names[s.predicted]} / {class_names[s.label]}\n{s.loss:.2f} / {s.prob_label:.2g}",
                     fontsize=8)
    fig.suptitle("predicted / actual, loss / probability of actual", fontsize=10)
    fig.tight_layout()
    save_figure_atomic(fig, path, dpi=100)
    plt.close(fig)
    return path


def _table_cell(text: str) -> str:
    """A file name inside a Markdown table's code span: a pipe would end the cell, a backtick the span."""
    return text.replace("|", "\\|").replace("`", "'")


def _percent(value: float) -> str:
    return "n/a (no finite outputs)" if math.isnan(value) else f"{100 * value:.2f}%"


def write_report(out_dir: Path, *, title: str, metrics: ClassificationMetrics, class_names: list[str],
                 config: dict[str, Any], history: list[dict[str, Any]] | None = None,
                 extra: dict[str, Any] | None = None, worst: list[WorstImage] | None = None) -> dict[str, Path]:
    """Write ``report.json``, ``report.md`` and the plots into ``out_dir``; returns the paths written. ``worst``:
    the highest-loss images (an evaluation's; ``run.worst_images``), listed and shown."""
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = metrics.summary(class_names)
    worst = worst or []
    top_losses = [{"image": w.name, "actual": class_names[w.sample.label],
                   "predicted": class_names[w.sample.predicted], "prob_predicted": w.sample.prob_predicted,
                   "prob_actual": w.sample.prob_label, "loss": w.sample.loss} for w in worst]
    data = {"title": title, **summary, **({"top_losses": top_losses} if worst else {}), "config": config,
            "history": history or [], **(extra or {})}
    paths = {"json": out_dir / "report.json", "markdown": out_dir / "report.md"}
    write_text_atomic(paths["json"], json.dumps(data, indent=2))
    figures = {"curves": plot_curves(history or [], out_dir / "curves.png"),
               "confusion": plot_confusion(metrics, class_names, out_dir / "confusion.png"),
               "reliability": plot_calibration(metrics, out_dir / "reliability.png"),
               "top_losses": plot_top_losses(worst, class_names, out_dir / "top_losses.png")}
    lines = [f"# {title}", "", f"- top-1 accuracy: **{100 * metrics.top1:.2f}%** on {metrics.count} images",
             f"- top-5 accuracy: {100 * metrics.top5:.2f}%", f"- loss: {metrics.loss:.4f}",
             f"- macro F1: {100 * metrics.macro_f1:.2f}%", f"- expected calibration error (ECE, {CALIBRATION_BINS} "
             f"bins): {_percent(metrics.expected_calibration_error)}"]
    non_finite = int(metrics.unanswered.sum())
    if non_finite:
        lines.append(f"- images whose outputs were not finite (NaN or infinity; counted wrong): **{non_finite}**")
    for key, value in (extra or {}).items():
        lines.append(f"- {key.replace('_', ' ')}: {value}")
    lines += ["", "## Per class", "", "Recall is the class's accuracy: the share of its images predicted as it; "
              "precision, the share of the images predicted as it that are it.", "",
              "| class | recall (accuracy) | precision | F1 | images |", "|---|---:|---:|---:|---:|"]
    totals = metrics.images_per_class().tolist()
    for name, acc, precision, f1, total in zip(class_names, metrics.per_class_accuracy(), metrics.precision(),
                                               metrics.f1(), totals):
        lines.append(f"| {name} | {100 * acc:.2f}% | {100 * precision:.2f}% | {100 * f1:.2f}% | {total} |")
    confused = metrics.confused_pairs()
    if confused:
        lines += ["", "## Most confused", "", "| actual | predicted as | images | share of actual |",
                  "|---|---|---:|---:|"]
        lines += [f"| {class_names[a]} | {class_names[p]} | {n} | {100 * n / max(1, totals[a]):.2f}% |"
                  for a, p, n in confused]
    if worst:
        lines += ["", f"## Top losses ({len(worst)} highest-loss images, worst first)", "",
                  "| # | image | actual | predicted | p(predicted) | p(actual) | loss |",
                  "|---:|---|---|---|---:|---:|---:|"]
        lines += [f"| {k} | `{_table_cell(r['image'])}` | {r['actual']} | {r['predicted']} | "
                  f"{r['prob_predicted']:.3f} | {r['prob_actual']:.3g} | {r['loss']:.3f} |"
                  for k, r in enumerate(top_losses, 1)]
    if history:
        lines += ["", "## Epochs", "", "| epoch | lr | train loss | train acc | val top-1 | images/s |",
                  "|---:|---:|---:|---:|---:|---:|"]
        for row in history:
            val = f"{100 * row['val_top1']:.2f}%" if "val_top1" in row else "-"
            lines.append(f"| {row['epoch']} | {row['lr']:.4g} | {row['train_loss']:.4f} | "
                         f"{100 * row['train_acc']:.2f}% | {val} | {row['images_per_s']:.0f} |")
    for name, path in figures.items():
        if path is not None:
            lines += ["", f"![{name}]({path.name})"]
            paths[name] = path
        else:  # not drawn this time: an earlier report's figure in the same folder would look current
            (out_dir / f"{name}.png").unlink(missing_ok=True)
    if not any(figures.values()):
        lines += ["", "(plots skipped: install matplotlib, `pip install 'resnetkit[plots]'`)"]
    lines += ["", "## Configuration", "", "```json", json.dumps(config, indent=2), "```", ""]
    write_text_atomic(paths["markdown"], "\n".join(lines))
    return paths
