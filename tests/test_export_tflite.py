"""TFLite / LiteRT export: fp32 matches PyTorch in the LiteRT interpreter, int8 agrees on top-1; clear errors."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from resnetkit import create_model
from resnetkit.config import CIFAR_PREPROCESS, ModelInfo
from resnetkit.models import save_model

HAVE_LITERT = all(importlib.util.find_spec(m) for m in ("litert_torch", "ai_edge_litert", "ai_edge_quantizer"))


def _trained_looking_model_file(tmp_path):
    torch.manual_seed(0)
    model = create_model("resnet20").eval()
    path = tmp_path / "model.safetensors"
    save_model(model, path, info=ModelInfo(model=model.config, preprocess=CIFAR_PREPROCESS))
    return model, path


@pytest.mark.skipif(HAVE_LITERT, reason="checks the message shown when the tflite extra is missing")
def test_without_the_extra_the_error_says_what_to_install(tmp_path, capsys):
    from resnetkit.cli import main

    _, path = _trained_looking_model_file(tmp_path)
    assert main(["export", str(path), "--format", "tflite"]) == 2
    assert "pip install 'resnetkit[tflite]'" in capsys.readouterr().err


@pytest.mark.slow  # two conversions, about a minute each on 2 CPU cores
@pytest.mark.skipif(not HAVE_LITERT, reason="needs the tflite extra (litert-torch, ai-edge-litert, ai-edge-quantizer)")
def test_fp32_and_int8_tflite_pass_the_parity_check_in_litert(tmp_path):
    from resnetkit.export.tflite import export_tflite, tflite_runner

    model, path = _trained_looking_model_file(tmp_path)
    info = ModelInfo(model=model.config, preprocess=CIFAR_PREPROCESS)
    fp32 = export_tflite(model, info, tmp_path / "model.tflite")
    assert fp32.parity.relative_diff <= 1e-4 and fp32.parity.top1_agreement == 1.0
    assert (tmp_path / "model.tflite.json").exists()
    calibration = torch.randn(32, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    int8 = export_tflite(model, info, tmp_path / "model.int8.tflite", calibration=calibration,
                         min_top1_agreement=0.5)  # random weights: near-tied logits
    assert int8.format == "tflite-int8" and int8.path.stat().st_size < 0.5 * fp32.path.stat().st_size
    assert not (tmp_path / "model.int8.tflite.fp32.tflite").exists()
    logits = tflite_runner(int8.path)(calibration[:3])
    assert logits.shape == (3, 10)
