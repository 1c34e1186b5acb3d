"""The study's report: Table 6 side by side with the paper, Figures 6 and 7, gradient flow, a verdict.

Reads every finished run's ``analysis.json`` under the study folder and writes ``report.md``,
``report.json`` and the PNG figures (with matplotlib; without it the numbers are still written).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from ..config import StudyConfig, load_train_config
from ..device import describe_machine
from ..evaluate.report import pyplot_or_none
from ..files import save_figure_atomic
from .analysis import ANALYSIS_FILE, write_text_atomic

# Table 6 of He et al. 2015: CIFAR-10 test error (%) of the ResNets (option A), one number each as the paper
# reports it, except ResNet-110: best of 5 runs 6.43, mean 6.61 +- 0.16. The paper gives no numbers for the plain
# nets, only Figure 6.
PAPER_TABLE6 = {20: 8.75, 32: 7.51, 44: 7.17, 56: 6.97, 110: 6.43, 1202: 7.93}


def load_results(out_dir: Path) -> list[dict[str, Any]]:
    results = []
    for path in sorted(out_dir.glob(f"*/{ANALYSIS_FILE}")):
        results.append(json.loads(path.read_text()))
    return sorted(results, key=lambda r: (r["family"] != "plain", r["depth"], r["seed"]))


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def _mean_spread(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per network: errors as mean and spread over its seeds."""
    rows = []
    for key in sorted({(r["family"], r["depth"]) for r in results}, key=lambda k: (k[0] != "plain", k[1])):
        runs = [r for r in results if (r["family"], r["depth"]) == key]
        row: dict[str, Any] = {"network": f"{key[0]}-{key[1]}", "family": key[0], "depth": key[1],
                               "seeds": len(runs), "params": runs[0]["params"], "epochs": runs[0]["epochs"],
                               "iterations": runs[0]["iterations"],
                               "train_time_s": round(statistics.fmean(r["train_time_s"] for r in runs), 1),
                               "paper_error": PAPER_TABLE6.get(key[1]) if key[0] == "resnet" else None}
        for field in ("train_error", "val_error", "test_error"):
            values = [r[field] for r in runs if r[field] is not None]
            if values:
                row[field], row[field + "_std"] = _mean_spread(values)
        rows.append(row)
    return rows


def verdicts(rows: list[dict[str, Any]]) -> list[str]:
    """What the table shows about depth, in words: the paper's two claims, checked on our numbers."""
    lines = []
    for family in ("plain", "resnet"):
        nets = sorted((r for r in rows if r["family"] == family and "val_error" in r), key=lambda r: r["depth"])
        if len(nets) < 2:
            continue
        shallow, deep = nets[0], nets[-1]
        worse_train = deep["train_error"] > shallow["train_error"]
        worse_val = deep["val_error"] > shallow["val_error"]
        numbers = (f"{deep['network']} {_pct(deep['train_error'])}% train / {_pct(deep['val_error'])}% validation "
                   f"error vs {shallow['network']} {_pct(shallow['train_error'])}% / {_pct(shallow['val_error'])}%")
        if family == "plain":
            shown = "**shown**" if worse_train and worse_val else "**not shown** at this schedule"
            lines.append(f"- Degradation (the deeper plain net has higher training *and* validation error): {shown}: "
                         f"{numbers}.")
        else:
            shown = "**shown**" if not worse_val else "**not shown** at this schedule"
            lines.append(f"- Depth helps the residual nets (the deeper one has lower validation error): {shown}: "
                         f"{numbers}.")
    return lines


def _figure6(results: list[dict[str, Any]], path: Path) -> Path | None:
    plt = pyplot_or_none()
    if plt is None:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, family, title in ((axes[0], "plain", "plain networks"), (axes[1], "resnet", "ResNets")):
        runs = [r for r in results if r["family"] == family and r["seed"] == 0]
        for i, r in enumerate(runs):
            epochs = [c["epoch"] for c in r["curve"]]
            colour = f"C{i}"
            ax.plot(epochs, [100 * c["train_error"] for c in r["curve"]], "--", lw=1, color=colour)
            val = [(c["epoch"], c["val_error"]) for c in r["curve"] if c["val_error"] is not None]
            ax.plot([e for e, _ in val], [100 * v for _, v in val], "-", lw=2.2, color=colour,
                    label=f"{family}-{r['depth']}")
        ax.set(title=title, xlabel="epoch")
        ax.grid(alpha=0.3)
        if runs:
            ax.legend()
    axes[0].set_ylabel("error (%): dashed training, bold validation")
    # The paper's scale (0-20%) zooms in on converged nets; keep every run's final errors in view, whatever
    # the schedule (a shortened one can end far higher: plain-56 at 66% after 3,200 iterations).
    finals = [100 * max(r["curve"][-1]["train_error"], r["curve"][-1]["val_error"] or 0)
              for r in results if r["curve"]]
    axes[0].set_ylim(0, min(100, max([40.0, *(f + 10 for f in finals)])))
    fig.tight_layout()
    save_figure_atomic(fig, path, dpi=100)
    plt.close(fig)
    return path


def _per_layer(results: list[dict[str, Any]], path: Path, panels: list[tuple[str, str, bool]], ylabel: str,
               log: bool) -> Path | None:
    """One panel per (analysis field, title, sort descending) with a line per network (seed 0)."""
    plt = pyplot_or_none()
    if plt is None:
        return None
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 3.6 * len(panels)))
    for ax, (field, title, sort) in zip(axes, panels):
        for r in (r for r in results if r["seed"] == 0):
            values = sorted(r[field], reverse=True) if sort else r[field]
            ax.plot(range(1, len(values) + 1), values, "--" if r["family"] == "plain" else "-",
                    label=f"{r['family']}-{r['depth']}")
        ax.set(title=title, ylabel=ylabel, xlabel="layer index (sorted by magnitude)" if sort else "layer index")
        if log:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure_atomic(fig, path, dpi=100)
    plt.close(fig)
    return path


def _machines(results: list[dict[str, Any]]) -> list[str]:
    """Where the runs trained (a study may move between a CPU and a GPU machine), and where this report was made."""
    where: dict[str, list[str]] = {}
    for r in results:
        where.setdefault(r.get("machine") or "not recorded", []).append(r["name"])
    return ([f"- trained on: {machine} ({', '.join(names)})" for machine, names in where.items()]
            + [f"- report written on: {describe_machine()}"])


def write_study_report(out_dir: Path, study: StudyConfig) -> Path:
    """Write ``report.md``, ``report.json`` and the figures from every finished run; returns report.md."""
    results = load_results(out_dir)
    rows = summarise(results)
    figures = {
        "figure6": _figure6(results, out_dir / "figure6.png"),
        "figure7": _per_layer(results, out_dir / "figure7.png",
                              [("response_std", "Figure 7 (top): std of 3x3 layer responses", False),
                               ("response_std", "Figure 7 (bottom): sorted by magnitude", True)], "std", log=False),
        "gradients": _per_layer(results, out_dir / "gradient_flow.png",
                                [("grad_norm_init", "gradient norm per conv layer at initialisation", False),
                                 ("grad_norm_trained", "gradient norm per conv layer after training", False)],
                                "||dL/dW||", log=True),
    }
    paper_iterations = load_train_config(study.recipe).schedule.iterations
    scale = f"{study.schedule} schedule, " + (f"{study.epochs} epochs" if study.epochs else f"x {study.epochs_scale:g}")
    length = (f"{study.epochs} epochs per run" if study.epochs else f"every length x {study.epochs_scale:g}"
              + (f" ({round(paper_iterations * study.epochs_scale):,} of the paper's {paper_iterations:,} iterations)"
                 if study.schedule == "paper" else ""))
    lines = [f"# CIFAR-10 study (He et al. 2015, section 4.2): {scale}", "",
             f"- data: `{study.data}`, {study.val_split} training images held out for validation",
             f"- schedule: {study.schedule} (recipe `{study.recipe}`), {length}"
             + (f", precision {study.amp}" if study.amp else ""),
             *_machines(results), f"- finished runs: {len(results)}", ""]
    lines += ["## Table 6, side by side", "",
              "Error in %. The paper's is CIFAR-10 *test* error on lossless images with the full schedule, as "
              "reported (ResNet-110: best of 5 runs, mean 6.61 +- 0.16); ours is on the held-out training images "
              "(and the test split when the data has one), mean +- spread over seeds.", "",
              "| network | params | paper error | our val error | our test error | our train error | seeds | "
              "epochs | iterations | train time |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        def cell(field: str, row: dict[str, Any] = r) -> str:
            if field not in row:
                return "-"
            spread = f" +- {100 * row[field + '_std']:.2f}" if row["seeds"] > 1 else ""
            return f"{_pct(row[field])}{spread}"
        paper = f"{r['paper_error']:.2f}" if r["paper_error"] is not None else "-"
        lines.append(f"| {r['network']} | {r['params'] / 1e6:.2f}M | {paper} | {cell('val_error')} | "
                     f"{cell('test_error')} | {cell('train_error')} | {r['seeds']} | {r['epochs']} | "
                     f"{r['iterations']} | {r['train_time_s'] / 60:.1f} min |")
    lines += ["", "## What it shows", ""] + (verdicts(rows) or ["- (needs two depths of a family)"])
    respond = [r for r in results if r["seed"] == 0]
    if respond:
        lines += ["", "Mean std of the 3x3 layer responses (Figure 7; the paper finds the residual nets' smaller): "
                  + ", ".join(f"{r['family']}-{r['depth']} {statistics.fmean(r['response_std']):.3f}"
                              for r in respond) + "."]
    for name, path in figures.items():
        if path is not None:
            lines += ["", f"![{name}]({path.name})"]
    if not any(figures.values()):
        lines += ["", "(figures skipped: install matplotlib, `pip install 'resnetkit[plots]'`)"]
    lines += ["", "Figure 6: dashed lines are training error (on augmented batches, as the paper's), bold lines "
              "validation error. Figure 7: responses after BN, before the addition and ReLU, on held-out images. "
              "Gradient flow: norm of the loss gradient at each convolution's weights for one batch of held-out "
              "images.", ""]
    write_text_atomic(out_dir / "report.json", json.dumps({"study": study.to_dict(), "machine": describe_machine(), "rows": rows,
                                                     "verdicts": verdicts(rows), "runs": results}, indent=1))
    report = out_dir / "report.md"
    write_text_atomic(report, "\n".join(lines))
    return report
