"""What INT8, bf16 and pruning cost in top-1, on a labelled folder: the accuracy half of the runtime choice.

    PYTHONPATH=src python bench/bench_export_accuracy.py --model resnet20.safetensors --val VAL_FOLDER
    PYTHONPATH=src python bench/bench_export_accuracy.py --train TRAIN_FOLDER --val VAL_FOLDER --epochs 8

With ``--model`` it measures a trained model file; otherwise it first trains a CIFAR ResNet-20 briefly on
``--train`` (a smoke-sized stand-in until the training pipeline delivers real checkpoints: its top-1 is
far from the paper's, but the *change* each variant causes is still measured on real images).
Folders are root/<class>/<image>.
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings

import torch

from resnetkit import create_model, load_model
from resnetkit.config import CIFAR_PREPROCESS, ModelInfo
from resnetkit.export import compare_variants, fine_tune_on_tensors, load_image_folder, prune_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="a resnetkit .safetensors file (else train one briefly)")
    parser.add_argument("--train", default=None, help="labelled folder to train on (and calibrate INT8 with)")
    parser.add_argument("--val", required=True, help="labelled folder to measure top-1 on")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--prune", type=float, default=0.5, help="target MAC ratio for the pruning row")
    args = parser.parse_args()
    logging.getLogger().setLevel(logging.ERROR)
    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    torch.set_num_threads(2)
    started = time.time()

    if args.model:
        model, info = load_model(args.model)
    else:
        model = create_model("resnet20")
        info = ModelInfo(model=model.config, preprocess=CIFAR_PREPROCESS)
    val = load_image_folder(args.val, info.preprocess, class_names=info.class_names or None)
    info.class_names = val.class_names
    train = load_image_folder(args.train, info.preprocess, class_names=val.class_names) if args.train else None
    if not args.model:
        if train is None:
            raise SystemExit("give --model, or --train to train a stand-in model")
        for epoch in range(args.epochs):
            lr = 0.1 * 0.5 * (1 + torch.cos(torch.tensor(epoch / args.epochs * torch.pi)).item())
            flipped = torch.where(torch.rand(len(train), 1, 1, 1) < 0.5, train.images.flip(-1), train.images)
            fine_tune_on_tensors(model, flipped, train.labels, epochs=1, lr=lr, batch_size=64)
        print(f"trained resnet20 for {args.epochs} epochs on {len(train)} images ({time.time() - started:.0f} s)")
    model.eval()
    calibration = (train.images if train is not None else val.images)[torch.randperm(len(train or val))[:128]]
    report = compare_variants(model, val, variants=("torch", "torch-bf16", "torch-fp16", "onnx", "onnx-int8",
                                                    "openvino-int8"), calibration=calibration, info=info)
    print(f"calibration: 128 images from {'--train' if train is not None else '--val'}")
    print(report.table())
    if train is not None:
        _, prune_report = prune_model(model, target_ratio=args.prune, eval_data=(val.images, val.labels),
                                      fine_tune=lambda m: fine_tune_on_tensors(m, train.images, train.labels,
                                                                               epochs=2, lr=0.01))
        print(f"pruning to {args.prune:.0%} of the MACs, 2 fine-tune epochs: {prune_report.summary()}")
    print(f"({time.time() - started:.0f} s)")


if __name__ == "__main__":
    main()
