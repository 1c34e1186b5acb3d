"""Typed configuration for resnetkit.

Every dataclass here round-trips through plain JSON (``to_dict`` / ``from_dict``), so a model file,
a training report or a checkpoint records exactly what produced it. YAML recipes and CLI flags only
fill these in. This package imports nothing else from resnetkit.

- ``fields``: filling a dataclass from JSON and from command-line flags (each field's help beside its default)
- ``model``: the architecture, the preprocessing stored with the weights, what a model file carries
- ``train``: one training run in sections, and the YAML recipes
- ``tasks``: eval, export, prune, serve and the paper's study
"""

from __future__ import annotations

from .fields import Flag, cache_dir, config_flags
from .model import (CIFAR10_MEAN, CIFAR10_STD, CIFAR_PREPROCESS, IMAGENET_MEAN, IMAGENET_PREPROCESS, IMAGENET_STD,
                    INTERPOLATIONS, MAX_IMAGE_SIDE, SHORTCUTS, VARIANTS, ModelConfig, ModelInfo, Preprocess,
                    check_class_names)
from .tasks import (API_KEY_ENV, BENCH_RUNTIMES, BODY_TIMEOUTS, EXPORT_FORMATS, MIB, PROTOCOLS, PRUNE_METHODS,
                    SERVE_RUNTIMES, STUDY_SCHEDULES, TTA_MODES, CalibrateConfig, EvalConfig, ExportConfig, LRFindOptions, PruneConfig,
                    ServeOptions, ShowBatchOptions, StudyConfig)
from .train import (AMP_MODES, AUTO_AUGMENTS, AugmentConfig, DataConfig, FinetuneConfig, OptimConfig, RunConfig,
                    ScheduleConfig, TrainConfig, load_train_config, recipe_path)

__all__ = [
    "AMP_MODES", "API_KEY_ENV", "AUTO_AUGMENTS", "BENCH_RUNTIMES", "BODY_TIMEOUTS", "CIFAR10_MEAN", "CIFAR10_STD",
    "CIFAR_PREPROCESS", "EXPORT_FORMATS", "IMAGENET_MEAN", "IMAGENET_PREPROCESS", "IMAGENET_STD", "INTERPOLATIONS",
    "MAX_IMAGE_SIDE", "MIB", "PROTOCOLS", "PRUNE_METHODS", "SERVE_RUNTIMES", "SHORTCUTS", "STUDY_SCHEDULES",
    "TTA_MODES", "VARIANTS", "AugmentConfig", "CalibrateConfig", "DataConfig", "EvalConfig", "ExportConfig",
    "FinetuneConfig", "Flag", "LRFindOptions", "ModelConfig", "ModelInfo", "OptimConfig", "Preprocess",
    "PruneConfig", "RunConfig", "ScheduleConfig", "ServeOptions", "ShowBatchOptions", "StudyConfig", "TrainConfig",
    "cache_dir", "check_class_names", "config_flags", "load_train_config", "recipe_path",
]
