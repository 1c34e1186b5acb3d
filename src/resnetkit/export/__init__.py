"""Deployment: ONNX / TorchScript / ExportedProgram artifacts, INT8 and fp16/bf16, pruning, benchmarks.

Every artifact is checked numerically against eager PyTorch when it is written (``export_model``);
every quantized or pruned variant reports its size, speed and top-1 change (``compare_variants``,
``prune_model``). ONNX Runtime and OpenVINO are optional and imported only when used.
"""

from .data import LabelledImages, load_image_folder, preprocess_image
from .evaluate import VariantReport, compare_variants, top1_accuracy
from .exporter import ExportResult, export_from_file, export_int8, export_model
from .formats import FORMATS, artifact_runner, read_onnx_info
from .parity import ParityError, ParityReport, check_parity
from .pruning import (PruneReport, fine_tune_on_tensors, prune_model, prune_to_macs,
                      save_pruned_model)
from .quantize import quantize_onnx_int8
from .runtimes import Runner, onnx_runner, openvino_runner, torch_runner

__all__ = [
    "FORMATS", "ExportResult", "LabelledImages", "ParityError", "ParityReport", "PruneReport", "Runner",
    "VariantReport", "artifact_runner", "check_parity", "compare_variants", "export_from_file", "export_int8",
    "export_model", "fine_tune_on_tensors", "load_image_folder", "onnx_runner",
    "openvino_runner", "preprocess_image", "prune_model", "prune_to_macs", "quantize_onnx_int8",
    "read_onnx_info", "save_pruned_model", "top1_accuracy", "torch_runner",
]
