"""Inference: load a model file, apply its own preprocessing, return labelled top-k (and Grad-CAM).

Imports only ``config``, ``models`` and ``data`` (its one decoder and one evaluation preprocessing): a user
who only predicts never imports training code.
"""

from .annotate import draw_label
from .batch import predict_inputs
from .cam import colormap, grad_cam, overlay
from ..data.classes import read_class_names
from .images import ImageLoadError, expand_inputs, load_image, load_pixels
from .predictor import GradCam, Prediction, Predictor, label_predictions, load_predictor
from .report import FORMATS, format_predictions
from .transforms import eval_transform

__all__ = [
    "FORMATS", "GradCam", "ImageLoadError", "Prediction", "Predictor", "colormap", "draw_label", "eval_transform",
    "expand_inputs", "format_predictions", "grad_cam", "label_predictions", "load_image", "load_pixels", "load_predictor",
    "overlay", "predict_inputs", "read_class_names",
]

