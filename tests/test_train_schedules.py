"""The exponential decay schedule matches Keras' ExponentialDecay, continuous and staircase."""

from __future__ import annotations

import pytest

from resnetkit.config import load_train_config
from resnetkit.train.schedules import lr_factor, schedule_from_config


def _exponential(**options):
    values = dict(kind="exponential", milestones=(), gamma=0.1, warmup=0, warmup_lr=0, base_lr=0.01,
                  total_steps=40000, steps_per_unit=1, decay_steps=10000, decay_rate=0.9)
    return schedule_from_config(**{**values, **options})


def test_the_seeds_staircase_decay():
    # ExponentialDecay(0.01, decay_steps=10000, decay_rate=0.9, staircase=True)
    spec = _exponential(staircase=True)
    lrs = {s: 0.01 * lr_factor(spec, s) for s in (0, 9999, 10000, 19999, 25000)}
    assert lrs == pytest.approx({0: 0.01, 9999: 0.01, 10000: 0.009, 19999: 0.009, 25000: 0.0081})


def test_continuous_decay_and_warm_up_first():
    spec = _exponential()
    assert 0.01 * lr_factor(spec, 5000) == pytest.approx(0.01 * 0.9 ** 0.5)
    assert 0.01 * lr_factor(spec, 30000) == pytest.approx(0.01 * 0.9 ** 3)
    warm = _exponential(warmup=100)  # linear warm-up, then the decay counts from its end
    assert lr_factor(warm, 49) == pytest.approx(0.5) and lr_factor(warm, 100) == pytest.approx(1.0)
    assert lr_factor(warm, 10100) == pytest.approx(0.9)


def test_missing_or_bad_decay_settings_are_clear_errors():
    with pytest.raises(ValueError, match="needs decay_steps >= 1"):
        _exponential(decay_steps=0)
    with pytest.raises(ValueError, match=r"decay_rate=1.5 must be in \(0, 1\]"):
        _exponential(decay_rate=1.5)


def test_a_recipe_file_sets_the_decay_and_a_runs_saved_config_keeps_it(tmp_path):
    """Written as a user writes a recipe (flat YAML keys), the decay reaches the schedule section, survives the
    config a run saves (to_dict -> from_dict, what --resume compares), and a flag still overrides the file."""
    (tmp_path / "mine.yaml").write_text("schedule: exponential\ndecay_steps: 10000\ndecay_rate: 0.9\nstaircase: true\n")
    config = load_train_config(str(tmp_path / "mine.yaml"))
    assert (config.schedule.name, config.schedule.decay_steps, config.schedule.decay_rate,
            config.schedule.staircase) == ("exponential", 10000, 0.9, True)
    assert type(config).from_dict(config.to_dict()) == config
    assert load_train_config(str(tmp_path / "mine.yaml"), decay_rate=0.5).schedule.decay_rate == 0.5


def test_recipe_numbers_in_exponent_form_empty_settings_and_unreachable_milestones(tmp_path):
    """PyYAML reads `lr: 1e-3` as text: read as the number the flag --lr 1e-3 would be (it was refused as text, or
    failed later comparing a string); `data:` with nothing is named; 1e308 epochs and lr 0 under a warm-up lr are
    said, not OverflowError and ZeroDivisionError."""
    from resnetkit.config import load_train_config
    from resnetkit.train.schedules import schedule_from_config

    recipe = tmp_path / "r.yaml"
    recipe.write_text("lr: 1e-3\nmixup_alpha: 2e-1\nrotation: 1e1\nepochs: 5e0\nmilestones: [1e1, 2e1]\n")
    config = load_train_config(str(recipe), data="digits")
    assert (config.optim.lr, config.augment.mixup_alpha, config.augment.rotation) == (0.001, 0.2, 10.0)
    assert config.schedule.epochs == 5 and isinstance(config.schedule.epochs, int)
    assert config.schedule.milestones == (10.0, 20.0)
    recipe.write_text("data:\nlr: 0.1\n")
    with pytest.raises(ValueError, match="setting 'data' has no value"):
        load_train_config(str(recipe))
    for alpha in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="cutmix_alpha=.* must be a finite number >= 0"):
            load_train_config("demo", cutmix_alpha=alpha)
    spec = schedule_from_config(kind="step", milestones=(0.5, 1e308), gamma=0.1, warmup=0, warmup_lr=0, base_lr=0.1,
                                total_steps=100, steps_per_unit=10)
    assert spec.milestones == (50, 101)  # past the end: never reached
    with pytest.raises(ValueError, match="warmup_lr=0.01 warms up towards lr=0"):
        schedule_from_config(kind="step", milestones=(0.5,), gamma=0.1, warmup=1, warmup_lr=0.01, base_lr=0.0,
                             total_steps=100, steps_per_unit=10)
