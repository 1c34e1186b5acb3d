"""resnetkit: deep residual networks for image recognition (He et al., 2015) and their successors."""

from .config import ModelConfig, ModelInfo, Preprocess
from .models import create_model, list_models, load_model, save_model

__version__ = "0.1.0"
__all__ = ["ModelConfig", "ModelInfo", "Preprocess", "create_model", "list_models", "load_model", "save_model"]
