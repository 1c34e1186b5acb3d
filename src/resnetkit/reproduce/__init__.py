"""The paper's experiments as commands: ``run_study(StudyConfig(...))`` is ``resnetkit reproduce cifar10``."""

from .analysis import gradient_norms, layer_response_std, response_layers
from .report import write_study_report
from .study import StudyRun, plan_runs, run_study, train_config_for

__all__ = ["StudyRun", "gradient_norms", "layer_response_std", "plan_runs", "response_layers", "run_study",
           "train_config_for", "write_study_report"]
