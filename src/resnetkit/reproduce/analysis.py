"""What the study measures on each trained network besides its error: Figure 7 and gradient flow.

- **Layer responses** (the paper's Figure 7): the standard deviation of every 3x3 layer's output after
  its BatchNorm and before the addition and the ReLU, over held-out images, in eval mode.
- **Gradient flow**: the norm of the loss gradient at every convolution's weight, for one batch, at
  initialisation (same seed as the run) and after training.

Both are measured on the same ``PROBE_IMAGES`` held-out images for every network of a study: a seeded random draw
(the held-out indices come in file order, class by class, so the first 500 were one class until session 22).
``analyse_run`` writes them with the run's errors, size and time to ``analysis.json``, the file whose
presence marks a study run as finished; one written by an older ``ANALYSIS_VERSION`` is measured again (the
trained model is kept: nothing is retrained).
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import TrainConfig
from ..data import InMemoryLoader, load_data
from ..evaluate.metrics import evaluate_batches
from ..files import write_text_atomic
from ..models import count_params, create_model, load_model
from ..train.checkpoint import load_checkpoint
from ..train.loop import CHECKPOINT_NAME
from ..train.run import MODEL_FILE

ANALYSIS_FILE = "analysis.json"
ANALYSIS_VERSION = 2  # 2: the probe is a random draw of the held-out images (1: the first 500, a single class)
PROBE_IMAGES = 500  # held-out images for the responses and the gradient batch
PROBE_SEED = 0  # the same draw for every network of a study (each run's held-out split follows its own seed)


def probe_indices(count: int, size: int = PROBE_IMAGES) -> torch.Tensor:
    """``size`` of ``count`` held-out images, a seeded random draw (sorted, to read them in order)."""
    generator = torch.Generator().manual_seed(PROBE_SEED)
    return torch.randperm(count, generator=generator)[:size].sort().values


def current_analysis(path: Path) -> bool:
    """Whether ``path`` is an analysis written by this ``ANALYSIS_VERSION`` (an older one is measured again)."""
    try:
        return json.loads(path.read_text()).get("version") == ANALYSIS_VERSION
    except (OSError, ValueError, AttributeError):
        return False


def _iterations(run_dir: Path) -> int:
    """The run's optimizer steps: its checkpoint's count, or, where the checkpoint was not kept (a carried finished
    run), the count its earlier analysis recorded."""
    if (run_dir / CHECKPOINT_NAME).exists():
        return int(load_checkpoint(run_dir / CHECKPOINT_NAME)["step"])
    try:
        return int(json.loads((run_dir / ANALYSIS_FILE).read_text())["iterations"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{run_dir}: neither {CHECKPOINT_NAME} nor an earlier {ANALYSIS_FILE} says how many steps "
                         f"it trained ({type(e).__name__}); restore one of them") from None


def response_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every 3x3 layer's response point, input to output: the BatchNorm after it (post-activation nets),
    or the convolution itself where no BatchNorm follows it directly (pre-activation nets)."""
    modules = dict(model.named_modules())
    points = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and module.kernel_size == (3, 3):
            prefix, _, conv = name.rpartition(".")
            if conv.isdigit():  # in a deep stem (conv1.0 ...): the next module, or after the last, the stem's bn1
                owner, _, sequence = prefix.rpartition(".")
                bn_name = f"{prefix}.{int(conv) + 1}" if f"{prefix}.{int(conv) + 1}" in modules else \
                    (owner + "." if owner else "") + sequence.replace("conv", "bn")
            else:
                bn_name = (prefix + "." if prefix else "") + conv.replace("conv", "bn")
            bn = modules.get(bn_name)
            after_bn = isinstance(bn, nn.BatchNorm2d) and bn.num_features == module.out_channels and \
                getattr(model, "config", None) is not None and model.config.variant != "v2"
            points.append((bn_name, bn) if after_bn else (name, module))
    return points


@torch.no_grad()
def layer_response_std(model: nn.Module, images: torch.Tensor) -> list[float]:
    """Standard deviation of each 3x3 layer's response over ``images`` (eval mode), input to output."""
    stds: list[float] = []
    hooks = [module.register_forward_hook(lambda _m, _i, out: stds.append(float(out.float().std())))
             for _, module in response_layers(model)]
    try:
        model.eval()(images)
    finally:
        for hook in hooks:
            hook.remove()
    return stds


def gradient_norms(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> list[float]:
    """The gradient norm at every convolution's weight (input to output) for one batch, in train mode
    as in a training step; ``model`` itself is left untouched (its BatchNorm statistics too)."""
    probe = copy.deepcopy(model).train()
    probe.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(probe(images), labels).backward()
    return [float(m.weight.grad.norm()) for m in probe.modules()
            if isinstance(m, nn.Conv2d) and m.weight.grad is not None]


def _trained_on(run_dir: Path) -> str | None:
    """The machine the run's own report names (where it finished training), if it names one."""
    try:
        return json.loads((run_dir / "report.json").read_text()).get("machine")
    except (OSError, ValueError):
        return None


def analyse_run(config: TrainConfig, family: str, depth: int) -> dict[str, Any]:
    """Measure a finished run (errors, Figure 7, gradient flow) and write ``analysis.json`` beside it."""
    run_dir = Path(config.run.out_dir)
    model, info = load_model(run_dir / MODEL_FILE)
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    splits = load_data(dataclasses.replace(config.data, download=False))  # the run's own split
    mean, std = info.preprocess.mean, info.preprocess.std
    held_out = splits.val if splits.val is not None else splits.test
    probe = next(iter(InMemoryLoader(held_out.subset(probe_indices(len(held_out))),
                                     batch_size=PROBE_IMAGES, shuffle=False, mean=mean, std=std)))
    images, labels = probe

    torch.manual_seed(config.run.seed)
    initial = create_model(config.model.arch, num_classes=model.num_classes)

    def error_on(dataset) -> float | None:
        if dataset is None:
            return None
        loader = InMemoryLoader(dataset, batch_size=256, shuffle=False, mean=mean, std=std)
        metrics = evaluate_batches(model, loader, num_classes=model.num_classes, device=torch.device("cpu"))
        return 1 - metrics.top1

    last = history[-1]
    result = {
        "version": ANALYSIS_VERSION, "name": run_dir.name, "family": family, "depth": depth, "seed": config.run.seed,
        "arch": config.model.arch,
        "params": count_params(model), "epochs": len(history),
        "iterations": _iterations(run_dir),
        "train_time_s": round(sum(row.get("epoch_time_s", 0.0) for row in history), 1),
        "machine": _trained_on(run_dir),
        "train_error": 1 - last["train_acc"],
        "val_error": error_on(splits.val),
        "test_error": error_on(splits.test),
        "curve": [{"epoch": row["epoch"], "train_error": 1 - row["train_acc"],
                   "val_error": 1 - row["val_top1"] if "val_top1" in row else None} for row in history],
        "response_std": layer_response_std(model, images),
        "grad_norm_init": gradient_norms(initial, images, labels),
        "grad_norm_trained": gradient_norms(model, images, labels),
        "config": config.to_dict(),
    }
    write_text_atomic(run_dir / ANALYSIS_FILE, json.dumps(result, indent=1))
    return result
