"""``resnetkit reproduce cifar10``: the paper's CIFAR-10 study as one resumable command.

Every (family, depth, seed) is an ordinary training run in its own folder under ``out_dir``, made by the
same ``run_training`` as ``resnetkit train``. Running the command again continues: a finished run (its
``analysis.json`` exists) is skipped, a killed one resumes from its checkpoint. Separate processes or
machines can share the work with ``only``; each one rewrites the report from every finished run.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from ..files import claim, prepare_output_dir, write_text_atomic
from ..config import StudyConfig, TrainConfig, load_train_config
from ..data import resolve_source
from ..models.registry import CIFAR_BASIC_DEPTHS
from ..train.loop import CHECKPOINT_NAME
from ..train.resume import RESUME_MAY_CHANGE, same_setting
from ..train.run import MODEL_FILE, check_same_run, run_training
from .analysis import ANALYSIS_FILE, analyse_run, current_analysis
from .report import write_study_report

log = logging.getLogger(__name__)

DEEP_WARMUP_DEPTH = 110  # the paper warms ResNet-110 up at lr 0.01 for ~400 iterations (cifar10-paper.yaml's note)
# Differences between a finished run's config.json and today's plan that do not change what it measured: what
# a resumed run may change, except its length.
IGNORED_FIELDS = RESUME_MAY_CHANGE - {"epochs", "iterations"}


@dataclass(frozen=True)
class StudyRun:
    family: str  # "resnet" or "plain"
    depth: int
    seed: int

    @property
    def arch(self) -> str:
        return f"{self.family}{self.depth}"

    @property
    def name(self) -> str:
        return f"{self.arch}-s{self.seed}"


def plan_runs(study: StudyConfig) -> list[StudyRun]:
    """The runs the study needs, in the issue's order: depth by depth, ResNet before its plain twin."""
    bad = [d for d in study.depths if d not in CIFAR_BASIC_DEPTHS]
    if bad:
        raise ValueError(f"depths {bad} are not CIFAR ResNet depths of the paper; choose from {CIFAR_BASIC_DEPTHS}")
    families = ("resnet", "plain") if study.plain else ("resnet",)
    runs = [StudyRun(family, depth, seed) for seed in range(study.seeds) for depth in study.depths
            for family in families]
    if study.only:
        runs = [r for r in runs if any(fnmatch.fnmatch(r.name, p) or fnmatch.fnmatch(r.arch, p) for p in study.only)]
        if not runs:
            raise ValueError(f"--only {list(study.only)} matches none of the planned runs "
                             f"({', '.join(r.name for r in plan_runs(dataclasses.replace(study, only=())))})")
    return runs


def train_config_for(study: StudyConfig, run: StudyRun) -> TrainConfig:
    """The recipe (paper or fast) with every length scaled by ``epochs_scale`` (or the fast one ``epochs`` long)."""
    out_dir = Path(study.out_dir) / run.name
    overrides: dict[str, object] = dict(
        data=study.data, val_split=study.val_split, model=run.arch, seed=run.seed, out_dir=str(out_dir),
        device=study.device, progress=study.progress, compile=study.compile,
        eval_every=1,  # Figure 6 needs the error after every epoch
        resume=(out_dir / CHECKPOINT_NAME).exists())
    recipe = load_train_config(study.recipe).schedule  # the lengths to scale
    if study.schedule == "paper":
        overrides.update(iterations=max(1, round(recipe.iterations * study.epochs_scale)),
                         milestones=tuple(m if m <= 1 else max(1, round(m * study.epochs_scale))  # fractions scale
                                          for m in recipe.milestones))  # with the run itself
        if run.depth >= DEEP_WARMUP_DEPTH:  # not scaled: it guards the first steps, whatever the length
            overrides.update(warmup=400, warmup_lr=0.01)
    else:
        overrides.update(epochs=study.epochs or max(1, round(recipe.epochs * study.epochs_scale)))
    if study.amp:
        overrides.update(amp=study.amp)
    return load_train_config(study.recipe, **overrides)


def _check_same_plan(path: Path, planned: TrainConfig, *, finished: bool = True) -> None:
    """A run counts only if it is the run planned now (same data, schedule, scale, seed, length): a finished one is
    skipped, an unfinished one resumed (``resnetkit train --resume`` may lengthen a run; a study may not, so that
    one --out holds one study)."""
    # A field added to TrainConfig after the run had its default then; a data path may be spelled another way.
    try:
        done = TrainConfig.from_dict(json.loads(path.read_text())).to_flat()  # nested or flat (before sections)
    except (OSError, ValueError, TypeError, AttributeError) as e:  # missing, not JSON, not a config
        state = "finished" if finished else "unfinished"
        raise ValueError(f"{path}: the {state} run's settings cannot be read ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else 'no detail'}); restore the file, or delete "
                         f"the folder {path.parent} to train that run again") from None
    want = planned.to_flat()
    as_recorded = lambda value: json.loads(json.dumps(value))  # noqa: E731  # tuples as the JSON lists they were
    changed = sorted(k for k in want if k not in IGNORED_FIELDS
                     and not same_setting(k, as_recorded(done.get(k)), as_recorded(want[k])))
    if changed:
        shown = ", ".join(f"{k}: {done.get(k)!r} -> {want[k]!r}" for k in changed)
        raise ValueError(f"{path.parent} holds {'a finished' if finished else 'an unfinished'} run with other "
                         f"settings ({shown}); use another --out for a different study, or the same options to "
                         "continue this one")


def run_study(study: StudyConfig) -> Path:
    """Train (or resume, or skip) every planned run, analyse each, and write the report; returns its path."""
    out = Path(study.out_dir)
    runs = plan_runs(study)
    # Every run's settings, and the finished runs' agreement with them, are checked before study.json is written:
    # a refused command leaves the study's record as it was.
    resolve_source(study.data)  # a --data that is not there is said before the study's folder is touched
    configs = [train_config_for(study, run) for run in runs]
    check_not_another_commands(out)
    for config in configs:
        run_dir = Path(config.run.out_dir)
        if (run_dir / ANALYSIS_FILE).exists() or _finished(run_dir):  # (killed while analysing: trained all the same)
            _check_same_plan(run_dir / "config.json", config)
        else:
            check_same_run(config)  # a killed run resumes only with its own settings, and its own length:
            if (run_dir / "config.json").exists():
                _check_same_plan(run_dir / "config.json", config, finished=False)
    prepare_output_dir(out, flag="--out")
    write_text_atomic(out / "study.json", json.dumps(study.to_dict(), indent=2))
    for i, (run, config) in enumerate(zip(runs, configs), 1):
        run_dir = Path(config.run.out_dir)
        if current_analysis(run_dir / ANALYSIS_FILE):
            log.info("[%d/%d] %s: finished earlier, skipped", i, len(runs), run.name)
            continue
        # One process per run: two (overlapping --only patterns, a second queue) would write one folder at once.
        with claim(out / f"{run.name}.lock") as holder:
            if holder is not None:
                log.info("[%d/%d] %s: skipped, another process on this machine is on it (%s)", i, len(runs),
                         run.name, holder)
                continue
            if (run_dir / ANALYSIS_FILE).exists():
                log.info("[%d/%d] %s: finished earlier, measured again (its analysis is of an older version)", i,
                         len(runs), run.name)
            elif not _finished(run_dir):
                log.info("[%d/%d] %s: %s", i, len(runs), run.name, "resuming" if config.run.resume else "training")
                run_training(dataclasses.replace(config, run=dataclasses.replace(
                    config.run, resume=(run_dir / CHECKPOINT_NAME).exists())))  # (as found once claimed)
            analyse_run(config, run.family, run.depth)
        log.info("[%d/%d] %s: done", i, len(runs), run.name)
        write_study_report(out, study)  # after every run: a study stopped half-way still has its report
    return write_study_report(out, study)


def check_not_another_commands(out: Path) -> None:
    """Refuse an ``--out`` that holds another command's results, which the study's report would replace: a training
    run's model, checkpoint or report, or any report.json that is not a study's."""
    found = [name for name in (MODEL_FILE, CHECKPOINT_NAME) if (out / name).exists()]
    report = out / "report.json"
    if report.is_file():
        try:
            data = json.loads(report.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):
            data = None
        if not (isinstance(data, dict) and "study" in data):
            found.append("report.json")
    if found:
        raise ValueError(f"--out {out}: holds another command's results ({', '.join(found)}: a training run, an "
                         "evaluation ...), which the study's report would replace; give a new folder for the study")


def _finished(run_dir: Path) -> bool:
    """Whether a run wrote its model file after its last checkpoint (so training is complete)."""
    model, checkpoint = run_dir / MODEL_FILE, run_dir / CHECKPOINT_NAME
    return model.exists() and (not checkpoint.exists() or model.stat().st_mtime >= checkpoint.stat().st_mtime)
