"""The seeds' head regularisation (a hidden Dense(256, relu) layer, dropout, L2 on the head alone), the step
schedule with one multiplier per milestone, and the Keras CIFAR example as the `keras-cifar10` recipe."""

from __future__ import annotations

import pytest
import torch

from resnetkit import create_model
from resnetkit.config import TrainConfig, load_train_config
from resnetkit.models import load_model, save_model
from resnetkit.train.loop import Trainer
from resnetkit.train.schedules import lr_factor, schedule_from_config
from test_train_loop import TensorLoader, _toy_data


def test_a_hidden_head_layer_sits_between_the_pooled_features_and_the_classifier(tmp_path):
    model = create_model("resnet20", head_hidden=256, drop_rate=0.5)
    assert model.pre_logits[0].in_features == 64 and model.fc.in_features == 256 and model.num_features == 64
    assert model.forward_head(model.forward_features(torch.randn(2, 3, 32, 32)), pre_logits=True).shape == (2, 256)
    plain_head = create_model("resnet20")
    params = sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in plain_head.parameters())
    assert params == 64 * 256 + 256 + (256 * 10 + 10) - (64 * 10 + 10)
    model.reset_classifier(5)  # fine-tuning keeps the hidden layer, replaces the classifier
    assert model.fc.in_features == 256 and model.fc.out_features == 5 and model.config.head_hidden == 256
    path = save_model(model.eval(), tmp_path / "m.safetensors")
    loaded, info = load_model(path)
    x = torch.randn(2, 3, 32, 32)
    assert info.model.head_hidden == 256 and torch.equal(model(x), loaded(x))
    with pytest.raises(ValueError, match="head_hidden=-1"):
        create_model("resnet20", head_hidden=-1)


def _fit(tmp_path, images_used=None, **overrides):
    images, labels = (t[:images_used] for t in _toy_data())
    config = TrainConfig.from_flat(dict(model="resnet20", epochs=1, batch_size=16, lr=0.05, amp="none",
                                        channels_last=False, out_dir=str(tmp_path), progress=False,
                                        weight_decay=0.0, head_hidden=32, **overrides))
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=3, head_hidden=32)
    trainer = Trainer(model, config, TensorLoader(images, labels, 16), None, num_classes=3,
                      device=torch.device("cpu"))
    return trainer, trainer.fit()


def test_head_l2_adds_the_keras_penalty_to_the_loss_on_the_head_weights_alone(tmp_path):
    trainer, plain = _fit(tmp_path / "plain")
    assert trainer.head_weights == []
    penalised, result = _fit(tmp_path / "l2", head_l2=0.01)
    named = {id(p): n for n, p in penalised.model.named_parameters()}
    assert sorted(named[id(w)] for w in penalised.head_weights) == ["fc.weight", "pre_logits.0.weight"]
    # The same data and seed: the reported loss carries the penalty, 0.01 * sum(w ** 2) of the head's kernels.
    assert result.history[0]["train_loss"] > plain.history[0]["train_loss"] + 0.01 * 0.5 * sum(
        float(w.detach().pow(2).sum()) for w in penalised.head_weights)
    # The penalty pulls the head's weights in ...
    assert penalised.model.fc.weight.norm() < trainer.model.fc.weight.norm()


def test_head_l2_changes_the_head_kernels_and_nothing_else(tmp_path):
    # One optimizer step (16 images, one batch) from the same weights on the same batch, with and without the
    # penalty: every other parameter and buffer ends bit for bit the same, the head's two kernels do not.
    plain, _ = _fit(tmp_path / "plain", images_used=16)
    penalised, _ = _fit(tmp_path / "l2", images_used=16, head_l2=0.01)
    assert plain.step == penalised.step == 1
    head = {"fc.weight", "pre_logits.0.weight"}
    after, after_l2 = plain.model.state_dict(), penalised.model.state_dict()
    for name in after:
        assert torch.equal(after[name], after_l2[name]) == (name not in head), name


def test_step_schedule_with_one_multiplier_per_milestone_is_the_keras_examples():
    spec = schedule_from_config(kind="step", milestones=(80, 120, 160, 180), gamma=0.1, warmup=0, warmup_lr=0,
                                base_lr=1e-3, total_steps=200, steps_per_unit=1, gammas=(0.1, 0.1, 0.1, 0.5))
    lrs = [1e-3 * lr_factor(spec, epoch) for epoch in (0, 79, 80, 120, 160, 180, 199)]
    # Keras' lr_schedule(epoch): 1e-3, x1e-1 after 80, x1e-2 after 120, x1e-3 after 160, x0.5e-3 after 180.
    assert lrs == pytest.approx([1e-3, 1e-3, 1e-4, 1e-5, 1e-6, 5e-7, 5e-7])
    with pytest.raises(ValueError, match="one multiplier per milestone"):
        schedule_from_config(kind="step", milestones=(80, 120), gamma=0.1, warmup=0, warmup_lr=0, base_lr=1e-3,
                             total_steps=200, steps_per_unit=1, gammas=(0.1,))


def test_the_keras_cifar10_recipe():
    config = load_train_config("keras-cifar10")
    assert (config.model.arch, config.optim.optimizer, config.optim.lr, config.optim.batch_size) == \
        ("keras_cifar_resnet20v1", "adam", 1e-3, 32)
    assert config.schedule.milestones == (80, 120, 160, 180) and config.schedule.epochs == 200
    assert config.schedule.milestone_gammas == (0.1, 0.1, 0.1, 0.5)
    assert (config.augment.policy, config.augment.width_shift, config.augment.height_shift) == ("flip", 0.1, 0.1)
    create_model(config.model.arch)  # the recipe's network is registered
