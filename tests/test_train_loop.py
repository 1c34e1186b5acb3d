"""The training loop: it learns, resumes exactly, stops cleanly on a non-finite loss, schedules lr as the paper."""

from __future__ import annotations

import pytest
import torch

from resnetkit import create_model
from resnetkit.config import TrainConfig
from resnetkit.train.checkpoint import load_checkpoint
from resnetkit.train.loop import NonFiniteLossError, Trainer
from resnetkit.train.schedules import lr_factor, plateau_drops, schedule_from_config


class TensorLoader:
    """A minimal seeded loader: shuffles and flips by epoch, like the real in-memory loader."""

    def __init__(self, images, labels, batch_size, seed=0):
        self.images, self.labels, self.batch_size, self.seed, self.epoch = images, labels, batch_size, seed, 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return len(self.images) // self.batch_size

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1000 + self.epoch)
        order = torch.randperm(len(self.images), generator=g)
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            x = self.images[idx]
            flip = torch.rand(len(idx), generator=g) < 0.5
            yield torch.where(flip[:, None, None, None], x.flip(-1), x), self.labels[idx]


def _toy_data(n=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    images = torch.randn(n, 3, 8, 8, generator=g) * 0.3
    images[:, 0] += labels[:, None, None].float() - 1  # the class shows in the first channel
    return images, labels


def _trainer(tmp_path, **overrides):
    images, labels = _toy_data()
    options = dict(model="resnet20", epochs=3, batch_size=16, lr=0.05, amp="none", channels_last=False,
                   out_dir=str(tmp_path), progress=False, drop_rate=0.1)
    cfg = TrainConfig.from_flat({**options, **overrides})
    torch.manual_seed(cfg.run.seed)
    model = create_model("resnet20", num_classes=3, drop_rate=cfg.model.drop_rate)
    return Trainer(model, cfg, TensorLoader(images, labels, 16), TensorLoader(images, labels, 32),
                   num_classes=3, device=torch.device("cpu"))


def test_training_learns_and_writes_logs_and_checkpoint(tmp_path):
    result = _trainer(tmp_path, epochs=4).fit()
    assert result.final_metrics.top1 > 0.9
    assert len(result.history) == 4 and result.history[-1]["val_top1"] == result.final_metrics.top1
    assert (tmp_path / "metrics.csv").read_text().count("\n") == 5
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 4
    assert load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 3


def test_metrics_reach_tensorboard(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _trainer(tmp_path, epochs=2).fit()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    loss = events.Scalars("train_loss")
    assert [e.step for e in loss] == [1, 2] and all(e.value > 0 for e in loss)
    assert {"val_top1", "lr", "images_per_s"} <= set(events.Tags()["scalars"])


@pytest.mark.parametrize("schedule, epochs, killed_in", [("step", 3, 1), ("plateau", 5, 4)])
def test_resume_continues_exactly_like_an_uninterrupted_run(tmp_path, schedule, epochs, killed_in):
    options = {"schedule": schedule, "patience": 0, "epochs": epochs}
    full = _trainer(tmp_path / "full", **options).fit()
    # Kill the run in the middle of an epoch, then resume it.
    killed = _trainer(tmp_path / "resumed", **options)

    class KilledLoader(TensorLoader):
        def __iter__(self):
            for i, batch in enumerate(super().__iter__()):
                if self.epoch == killed_in and i == 2:
                    raise KeyboardInterrupt
                yield batch

    killed.train_loader = KilledLoader(killed.train_loader.images, killed.train_loader.labels, 16)
    with pytest.raises(KeyboardInterrupt):
        killed.fit()
    saved = load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")
    assert saved["epoch"] == killed_in - 1
    if schedule == "plateau":  # the lr had dropped before the kill: resuming must not undo it
        drops = plateau_drops([r["val_top1"] for r in saved["history"]], patience=0)
        assert drops >= 1
        again = _trainer(tmp_path / "resumed", resume=True, **options)
        assert again.resume() and again.lr_drops == drops
        assert again.optimizer.param_groups[0]["lr"] == pytest.approx(0.05 * 0.1 ** drops)
    resumed = _trainer(tmp_path / "resumed", resume=True, **options).fit()
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert [r["train_loss"] for r in full.history] == [r["train_loss"] for r in resumed.history]


def test_plateau_schedule_divides_the_lr_when_val_top1_stalls(tmp_path):
    assert plateau_drops([0.5, 0.6, 0.6, 0.6, 0.6005, 0.7, 0.7, 0.7], patience=1) == 2
    assert plateau_drops([0.5, 0.4, 0.3, 0.2], patience=3) == 0
    result = _trainer(tmp_path, epochs=6, schedule="plateau", patience=0, lr=0.05, gamma=0.1).fit()
    tops = [row["val_top1"] for row in result.history]
    for epoch in range(1, 6):  # the lr an epoch starts with already counts the plateaus seen before it
        assert result.history[epoch]["lr"] == pytest.approx(0.05 * 0.1 ** plateau_drops(tops[:epoch], patience=0))
    assert plateau_drops(tops[:5], patience=0) >= 1  # the toy data is learnt perfectly: top-1 stalls at 100%
    with pytest.raises(ValueError, match="plateau.*needs a validation set"):
        _trainer(tmp_path / "noval", schedule="plateau", eval_every=0)


def test_a_checkpoint_from_before_a_new_config_field_still_resumes(tmp_path):
    _trainer(tmp_path, epochs=1).fit()
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    del state["config"]["schedule"]["patience"]  # as written before the field existed
    torch.save(state, tmp_path / "checkpoint.pt")
    assert [r["epoch"] for r in _trainer(tmp_path, epochs=2, resume=True).fit().history] == [1, 2]
    # A checkpoint written before TrainConfig had sections: flat, "" / 0 for the architecture's defaults.
    flat = TrainConfig.from_dict(state["config"]).to_flat()
    state["config"] = {**flat, "variant": "", "shortcut": "", "width": 0.0, "image_size": 0, "epochs": 2}
    torch.save(state, tmp_path / "checkpoint.pt")
    assert [r["epoch"] for r in _trainer(tmp_path, epochs=3, resume=True).fit().history] == [1, 2, 3]
    state["config"]["lr"] = 0.5  # a different run is still refused
    torch.save(state, tmp_path / "checkpoint.pt")
    with pytest.raises(ValueError, match="different configuration.*lr"):
        _trainer(tmp_path, epochs=3, resume=True).fit()


def test_resume_accepts_the_same_data_and_start_model_spelled_another_way(tmp_path, monkeypatch):
    """Before: resuming from another folder (data 'good' -> '../good') or with an absolute --out-dir (a fine-tune's
    stage-2 start model inside it) was refused as 'a different configuration'."""
    from resnetkit.train.resume import check_resumable

    (tmp_path / "data").mkdir()
    (tmp_path / "run" / "stage1").mkdir(parents=True)
    (tmp_path / "run" / "stage1" / "model.safetensors").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    saved = TrainConfig.from_flat(dict(data="data", pretrained="run/stage1/model.safetensors")).to_dict()
    moved = TrainConfig.from_flat(dict(data=str(tmp_path / "run" / ".." / "data"),
                                       pretrained=str(tmp_path / "run" / "stage1" / "model.safetensors")))
    assert check_resumable(moved, saved, path=tmp_path / "checkpoint.pt") == {}
    other = TrainConfig.from_flat(dict(data=str(tmp_path / "run"), pretrained="run/stage1/model.safetensors"))
    with pytest.raises(ValueError, match=r"different configuration \(data: 'data' -> "):
        check_resumable(other, saved, path=tmp_path / "checkpoint.pt")
    named = TrainConfig.from_flat(dict(data="cifar10", pretrained="run/stage1/model.safetensors"))
    with pytest.raises(ValueError, match=r"data: 'data' -> 'cifar10'"):  # a name, not a path here: compared as text
        check_resumable(named, saved, path=tmp_path / "checkpoint.pt")


def test_a_run_resumed_longer_takes_the_stretched_schedules_lr_from_its_first_step(tmp_path):
    """Before: the first resumed step ran at the old schedule's last lr (0.0 after a finished one-cycle)."""
    _trainer(tmp_path, epochs=1, schedule="onecycle").fit()
    longer = _trainer(tmp_path, epochs=2, schedule="onecycle", resume=True)
    assert longer.resume()
    expected = [base * fn(longer.scheduler.last_epoch)
                for base, fn in zip(longer.scheduler.base_lrs, longer.scheduler.lr_lambdas)]
    assert [g["lr"] for g in longer.optimizer.param_groups] == expected and min(expected) > 0.01


def test_resume_without_a_checkpoint_starts_fresh(tmp_path):
    assert _trainer(tmp_path, epochs=1, resume=True).fit().history[0]["epoch"] == 1


def test_non_finite_loss_stops_with_a_clear_message_and_keeps_the_checkpoint(tmp_path):
    trainer = _trainer(tmp_path, epochs=1)
    trainer.fit()
    before = (tmp_path / "checkpoint.pt").read_bytes()
    bad = _trainer(tmp_path, epochs=2, resume=True)
    bad.train_loader.images = bad.train_loader.images * float("nan")
    with pytest.raises(NonFiniteLossError, match="checkpoint.pt.*intact"):
        bad.fit()
    assert (tmp_path / "checkpoint.pt").read_bytes() == before


def test_options_mixup_ema_clip_accumulate_nesterov_bf16_run(tmp_path):
    trainer = _trainer(tmp_path, epochs=1, mixup_alpha=0.2, cutmix_alpha=1.0, ema_decay=0.9, grad_clip=1.0,
                       accumulate=2, nesterov=True, label_smoothing=0.1, decay_norm_and_bias=False, amp="bf16",
                       channels_last=True, schedule="onecycle")
    result = trainer.fit()
    assert result.final_metrics is not None and torch.isfinite(torch.tensor(result.history[0]["train_loss"]))
    assert trainer.step == len(trainer.train_loader) // 2 == 3  # 96 images, batches of 16, two per optimizer step
    assert all(group["nesterov"] for group in trainer.optimizer.param_groups)
    # The result is the EMA average, not the last weights (which it trails after 3 steps at decay 0.9).
    assert result.model is trainer.ema.module
    assert not torch.equal(result.model.conv1.weight, trainer.model.conv1.weight)
    # Norm and bias parameters are kept out of weight decay.
    groups = trainer.optimizer.param_groups
    assert all(g["weight_decay"] == 0 for g in groups for p in g["params"] if p.ndim <= 1)
    assert all(g["weight_decay"] > 0 for g in groups for p in g["params"] if p.ndim > 1)


def test_paper_cifar_schedule_in_iterations():
    # Section 4.2: lr 0.1, divided by 10 at 32k and 48k, stop at 64k; ResNet-110 warms up at 0.01 for 400 its.
    spec = schedule_from_config(kind="step", milestones=(32000, 48000), gamma=0.1, warmup=400, warmup_lr=0.01,
                                base_lr=0.1, total_steps=64000, steps_per_unit=1)
    lrs = {s: 0.1 * lr_factor(spec, s) for s in (0, 399, 400, 31999, 32000, 47999, 48000, 63999)}
    assert lrs[0] == pytest.approx(0.01) and lrs[399] == pytest.approx(0.01)
    assert lrs[400] == pytest.approx(0.1) and lrs[31999] == pytest.approx(0.1)
    assert lrs[32000] == pytest.approx(0.01) and lrs[48000] == pytest.approx(0.001)


def test_iteration_budget_stops_mid_epoch(tmp_path):
    trainer = _trainer(tmp_path, iterations=8)  # 6 steps per epoch
    result = trainer.fit()
    assert trainer.step == 8 and len(result.history) == 2


def test_cosine_and_warmup_shapes():
    spec = schedule_from_config(kind="cosine", milestones=(), gamma=0.1, warmup=2, warmup_lr=0, base_lr=0.1,
                                total_steps=100, steps_per_unit=10)
    assert lr_factor(spec, 0) == pytest.approx(1 / 20) and lr_factor(spec, 19) == pytest.approx(1.0)
    assert lr_factor(spec, 99) < 0.01
    with pytest.raises(ValueError, match="schedule='linear'"):
        schedule_from_config(kind="linear", milestones=(), gamma=0.1, warmup=0, warmup_lr=0, base_lr=0.1,
                             total_steps=10, steps_per_unit=1)
