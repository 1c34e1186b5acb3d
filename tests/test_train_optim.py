"""Optimizers: SGD, Adam, AdamW and RMSprop train under every schedule; bad settings fail clearly."""

from __future__ import annotations

import pytest
import torch

from resnetkit import create_model
from resnetkit.config import TrainConfig, load_train_config
from resnetkit.train.loop import Trainer
from resnetkit.train.optim import OPTIMIZERS, build_optimizer, optimizer_from_config
from resnetkit.train.schedules import SCHEDULES

pytestmark = pytest.mark.usefixtures("one_thread")


class ToyLoader:
    def __init__(self, images, labels, batch_size):
        self.images, self.labels, self.batch_size, self.epoch = images, labels, batch_size, 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return len(self.images) // self.batch_size

    def __iter__(self):
        order = torch.randperm(len(self.images), generator=torch.Generator().manual_seed(self.epoch))
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            yield self.images[idx], self.labels[idx]


def _toy(n=96):
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % 3
    images = torch.randn(n, 3, 8, 8, generator=g) * 0.3
    images[:, 0] += labels[:, None, None].float() - 1  # the class shows in the first channel
    return images, labels


def _trainer(tmp_path, **overrides):
    images, labels = _toy()
    options = dict(model="resnet20", epochs=3, batch_size=16, lr=0.05, amp="none", channels_last=False,
                   out_dir=str(tmp_path), progress=False)
    config = TrainConfig.from_flat({**options, **overrides})
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=3)
    return Trainer(model, config, ToyLoader(images, labels, 16), ToyLoader(images, labels, 32), num_classes=3,
                   device=torch.device("cpu"))


@pytest.mark.parametrize(("optimizer", "lr"), [("adam", 3e-3), ("adamw", 3e-3), ("rmsprop", 1e-3)])
def test_adaptive_optimizers_learn(tmp_path, optimizer, lr):
    trainer = _trainer(tmp_path, optimizer=optimizer, lr=lr, momentum=0.0, weight_decay=1e-4)
    assert type(trainer.optimizer).__name__.lower() == optimizer
    assert trainer.fit().final_metrics.top1 > 0.9


# The lr multiplier at each of the 12 steps (2 epochs of 6 batches), written out from each schedule's definition:
# a linear warm-up over half an epoch (3 steps: 1/3, 2/3, 1), then over the 9 steps that remain:
# step: x0.1 at the milestones 0.5 and 0.75 of the run (steps 6 and 9); cosine: 0.5 * (1 + cos(pi * (s - 3) / 9));
# onecycle: the warm-up is the way up, then linear down to 0 at step 12; exponential: x0.9 every 3 steps from the
# end of the warm-up (staircase); constant and plateau (no evaluation yet): 1.
WARMUP = [1 / 3, 2 / 3, 1.0]
EXPECTED_FACTORS = {
    "step": WARMUP + [1.0, 1.0, 1.0, 0.1, 0.1, 0.1, 0.01, 0.01, 0.01],
    "cosine": WARMUP + [1.0, 0.96984631, 0.88302222, 0.75, 0.58682409, 0.41317591, 0.25, 0.11697778, 0.03015369],
    "onecycle": WARMUP + [1.0, 8 / 9, 7 / 9, 6 / 9, 5 / 9, 4 / 9, 3 / 9, 2 / 9, 1 / 9],
    "constant": WARMUP + [1.0] * 9,
    "plateau": WARMUP + [1.0] * 9,
    "exponential": WARMUP + [1.0, 1.0, 1.0, 0.9, 0.9, 0.9, 0.81, 0.81, 0.81],
}


def test_expected_lr_table_covers_every_schedule():
    assert set(EXPECTED_FACTORS) == set(SCHEDULES) and {len(v) for v in EXPECTED_FACTORS.values()} == {12}


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("schedule", SCHEDULES)
def test_every_schedule_drives_every_optimizer_lr(tmp_path, optimizer, schedule):
    trainer = _trainer(tmp_path, optimizer=optimizer, schedule=schedule, epochs=2, lr=1e-3, momentum=0.0,
                       warmup=0.5, **({"decay_steps": 3, "staircase": True} if schedule == "exponential" else {}))
    assert trainer.total_steps == 12
    seen = []
    for _ in range(trainer.total_steps):
        seen.append(trainer.optimizer.param_groups[0]["lr"])
        trainer.optimizer.step()  # no gradients yet: a no-op that keeps torch's call-order check quiet
        trainer.scheduler.step()
    assert seen == pytest.approx([1e-3 * f for f in EXPECTED_FACTORS[schedule]], rel=1e-6)
    assert seen[0] < seen[1] < seen[2] == pytest.approx(1e-3)  # the linear warm-up reached the optimizer...
    assert max(seen) == pytest.approx(1e-3)  # ...and peaks at the base lr
    if schedule not in ("constant", "plateau"):
        assert seen[-1] < 0.95e-3  # the decaying schedules end below the peak


def test_onecycle_without_warmup_peaks_at_a_quarter_of_the_run(tmp_path):
    # 12 steps: up linearly from 0.1x to the peak at step 3 (25%), then linearly down towards 0 at step 12.
    trainer = _trainer(tmp_path, schedule="onecycle", epochs=2, lr=1e-3, warmup=0)
    seen = []
    for _ in range(trainer.total_steps):
        seen.append(trainer.optimizer.param_groups[0]["lr"])
        trainer.optimizer.step()
        trainer.scheduler.step()
    expected = [0.1, 0.4, 0.7, 1.0, 8 / 9, 7 / 9, 6 / 9, 5 / 9, 4 / 9, 3 / 9, 2 / 9, 1 / 9]
    assert seen == pytest.approx([1e-3 * f for f in expected], rel=1e-6)


def test_adamw_decays_weights_decoupled_and_adam_through_the_gradient():
    # With a zero gradient, AdamW still shrinks the weight by lr * wd; Adam's L2 term goes through the
    # normalised update instead (a step of ~lr whatever the decay), so the two must differ.
    results = {}
    for name in ("adam", "adamw"):
        weight = torch.nn.Parameter(torch.ones(4))
        opt = build_optimizer([{"params": [weight], "weight_decay": 0.1}], name=name, lr=0.01)
        weight.grad = torch.zeros(4)
        opt.step()
        results[name] = weight.detach().clone()
    assert results["adamw"] == pytest.approx(torch.full((4,), 1 - 0.01 * 0.1))
    assert results["adam"] == pytest.approx(torch.full((4,), 1 - 0.01), rel=1e-4)


def test_bad_optimizer_settings_are_clear_errors():
    params = [{"params": [torch.nn.Parameter(torch.ones(1))], "weight_decay": 0.0}]
    with pytest.raises(ValueError, match="optimizer='lamb' is not one of"):
        build_optimizer(params, name="lamb", lr=0.1)
    with pytest.raises(ValueError, match="nesterov=True applies to optimizer='sgd' only.*pass --no-nesterov"):
        build_optimizer(params, name="adam", lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="betas=.* must be two numbers"):
        build_optimizer(params, name="adamw", lr=0.1, betas=(0.9,))


def test_cli_flags_reach_the_optimizer():
    from resnetkit.cli import build_parser
    from resnetkit.cli.commands import _overrides

    args = build_parser().parse_args(["train", "--optimizer", "adam", "--betas", "0.8", "0.99", "--eps", "1e-7"])
    config = load_train_config(None, **_overrides(args, exclude=("recipe",)))
    assert (config.optim.optimizer, config.optim.betas, config.optim.eps) == ("adam", (0.8, 0.99), 1e-7)


def test_a_recipe_with_nesterov_trains_with_adamw_given_no_nesterov():
    """docs/training-options.md's command: cifar10-fast sets Nesterov, which AdamW refuses unless it is turned off."""
    from resnetkit.cli import build_parser
    from resnetkit.cli.commands import _overrides

    line = ["train", "--recipe", "cifar10-fast", "--optimizer", "adamw", "--lr", "2e-3", "--weight-decay", "0.05"]
    params = [{"params": [torch.nn.Parameter(torch.ones(1))], "weight_decay": 0.05}]
    for extra, works in (([], False), (["--no-nesterov"], True)):
        args = build_parser().parse_args(line + extra)
        config = load_train_config(args.recipe, **_overrides(args, exclude=("recipe",)))
        if works:
            assert isinstance(optimizer_from_config(params, config), torch.optim.AdamW)
        else:
            with pytest.raises(ValueError, match="--no-nesterov"):
                optimizer_from_config(params, config)
