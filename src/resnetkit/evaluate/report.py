"""Reports of a run or an evaluation: Markdown + JSON, training curves and a confusion matrix as PNG.

Plots need matplotlib (``pip install 'resnetkit[plots]'``); without it the report says so and the
numbers are still written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..files import save_figure_atomic, write_text_atomic
from .metrics import ClassificationMetrics


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


def write_report(out_dir: Path, *, title: str, metrics: ClassificationMetrics, class_names: list[str],
                 config: dict[str, Any], history: list[dict[str, Any]] | None = None,
                 extra: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write ``report.json``, ``report.md`` and the plots into ``out_dir``; returns the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = metrics.summary(class_names)
    data = {"title": title, **summary, "config": config, "history": history or [], **(extra or {})}
    paths = {"json": out_dir / "report.json", "markdown": out_dir / "report.md"}
    write_text_atomic(paths["json"], json.dumps(data, indent=2))
    figures = {"curves": plot_curves(history or [], out_dir / "curves.png"),
               "confusion": plot_confusion(metrics, class_names, out_dir / "confusion.png")}
    lines = [f"# {title}", "", f"- top-1 accuracy: **{100 * metrics.top1:.2f}%** on {metrics.count} images",
             f"- top-5 accuracy: {100 * metrics.top5:.2f}%", f"- loss: {metrics.loss:.4f}"]
    for key, value in (extra or {}).items():
        lines.append(f"- {key.replace('_', ' ')}: {value}")
    lines += ["", "## Per-class accuracy", "", "| class | accuracy | images |", "|---|---:|---:|"]
    totals = metrics.confusion.sum(1).tolist()
    for name, acc, total in zip(class_names, metrics.per_class_accuracy(), totals):
        lines.append(f"| {name} | {100 * acc:.2f}% | {total} |")
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
    if not any(figures.values()):
        lines += ["", "(plots skipped: install matplotlib, `pip install 'resnetkit[plots]'`)"]
    lines += ["", "## Configuration", "", "```json", json.dumps(config, indent=2), "```", ""]
    write_text_atomic(paths["markdown"], "\n".join(lines))
    return paths
