"""Residual networks: the registry, blocks, families, weight files and summaries."""

from .registry import (build_model, create_model, default_config, default_info, default_preprocess, get_spec,
                       list_models, resolve_config)
from .pretrained import WeightEntry, find_weights, identify_weights, list_weights, register_weights
from .resnet import ArchSpec, ResNet
from .summary import count_macs, count_params, summarize, summary_table
from .state_dict import WeightFileError, load_state_dict_file, load_weights
from .weights import load_model, load_pretrained, read_model_info, save_model

__all__ = [
    "ArchSpec", "ResNet", "WeightFileError", "build_model", "count_macs", "count_params", "create_model",
    "default_config", "default_info", "default_preprocess", "get_spec", "list_models", "load_model", "load_pretrained",
    "resolve_config", "load_state_dict_file", "load_weights", "read_model_info", "save_model", "summarize",
    "summary_table",
    "WeightEntry", "find_weights", "identify_weights", "list_weights", "register_weights",
]
