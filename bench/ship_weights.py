"""Ship a trained run as one of the package's pretrained networks (src/resnetkit/weights/<arch>_<tag>.*).

Reads the run's model file, report and config; stores the weights in fp16 (``ship_weights``) and keeps them
only if top-1 on the run's held-out images is unchanged, measured here on both files with ``resnetkit eval``'s
own code; else stores them in fp32. Writes the model card: top-1 on the held-out images, recipe, epochs,
wall time, machine and the command that reproduces the run.

    PYTHONPATH=src python bench/ship_weights.py /work/study/full/resnet20-s0 --tag cifar10 \\
        --data ../shared/datasets/cifar10-train-jpeg.tar --command "resnetkit reproduce cifar10 ..."
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from resnetkit.config import DataConfig, EvalConfig, TrainConfig
from resnetkit.data import load_data, normalize
from resnetkit.device import describe_machine
from resnetkit.evaluate.run import run_evaluation
from resnetkit.models import load_model
from resnetkit.models.pretrained import WEIGHTS_DIR, ship_weights


def top1(model: str, data: str, config: TrainConfig, out: Path) -> float:
    return run_evaluation(EvalConfig(model=model, data=data, val_split=config.data.val_split, seed=config.data.seed,
                                     out_dir=str(out), device="cpu")).top1


def predictions(model_file: str | Path, images: torch.Tensor) -> torch.Tensor:
    """The class each held-out image gets (uint8 images, normalised with the file's own preprocessing)."""
    model, info = load_model(model_file)
    inputs = normalize(images, info.preprocess.mean, info.preprocess.std)
    with torch.no_grad():
        return torch.cat([model.eval()(batch).argmax(1) for batch in inputs.split(256)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a finished run folder (model.safetensors, report.json, config.json)")
    parser.add_argument("--tag", default="cifar10", help="the weights' tag: NAME is <arch>_<tag>")
    parser.add_argument("--data", required=True, help="the data the run trained on (its held-out split is measured)")
    parser.add_argument("--command", required=True, help="the command that reproduces the run, for the card")
    parser.add_argument("--machine", default=None,
                        help="where the run trained, for the card (default: the machine its report names, "
                             "else this one)")
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR)
    args = parser.parse_args()

    config = TrainConfig.from_dict(json.loads((args.run / "config.json").read_text()))
    report = json.loads((args.run / "report.json").read_text())
    model_file = str(args.run / "model.safetensors")
    with tempfile.TemporaryDirectory() as scratch:
        before = top1(model_file, args.data, config, Path(scratch) / "fp32")
        card = {"top1": round(100 * before, 2),
                "evaluated_on": f"{config.data.val_split} images held out of {Path(args.data).name} "
                                f"(stratified, seed {config.data.seed}), single centre view",
                # The settings, with this machine's paths reduced to names (the command says what they were).
                "recipe": {**config.to_flat(), "data": Path(config.data.source).name,
                           "out_dir": Path(config.run.out_dir).name},
                "epochs": len(report.get("history", [])),
                # Summed over the epochs: the report of a resumed run times only its last stretch.
                "wall_time_s": round(sum(row.get("epoch_time_s", 0.0) for row in report.get("history", [])), 1),
                "machine": args.machine or report.get("machine") or describe_machine(), "command": args.command}
        path = ship_weights(model_file, tag=args.tag, card=card, directory=args.out)
        held_out = load_data(DataConfig(source=args.data, val_split=config.data.val_split, seed=config.data.seed)).val
        changed = int((predictions(model_file, held_out.images) != predictions(path, held_out.images)).sum())
        if changed:  # fp16 storage changed a prediction (even if top-1 stayed): ship the fp32 tensors instead
            after = top1(str(path), args.data, config, Path(scratch) / "shipped")
            print(f"fp16 storage changes {changed} of {len(held_out.images)} predictions (top-1 {100 * before:.2f}% "
                  f"-> {100 * after:.2f}%): shipping fp32")
            path = ship_weights(model_file, tag=args.tag, card=card, directory=args.out, half=False)
    print(f"{path} ({path.stat().st_size / 1e6:.2f} MB): top-1 {100 * before:.2f}% on the held-out images, "
          f"{'fp32 kept' if changed else 'fp16, every prediction unchanged'}")


if __name__ == "__main__":
    main()
