"""The training loop: read it top to bottom.

``Trainer.fit`` runs epochs of ``train_one_epoch``, evaluates, logs, and writes an atomic checkpoint
after every epoch, so ``resume=True`` continues a killed run exactly where the last epoch ended.
Batches come from any loader with ``__iter__``, ``__len__`` and ``set_epoch(epoch)`` that yields
``(images, labels)``; augmentation happens there, seeded by the epoch, so a resumed run sees the
same data as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ..config import AMP_MODES, TrainConfig
from ..data.loader import derive_seed
from ..device import resolve_amp
from ..evaluate.metrics import ClassificationMetrics, evaluate_batches
from ..models.resnet import HEAD_MODULES
from .checkpoint import checkpoint_error, load_training_checkpoint, rng_state, save_checkpoint, set_rng_state
from .distill import distillation_loss
from .distributed import DistInfo
from .groups import discriminative_param_groups
from .logging import MetricsLogger, progress
from .optim import optimizer_from_config
from .resume import check_not_shorter, check_resumable
from .schedules import build_scheduler, plateau_drops, schedule_from_config

CHECKPOINT_NAME = "checkpoint.pt"
HEAD_PREFIXES = tuple(f"{name}." for name in HEAD_MODULES)  # parameter names of the head
log = logging.getLogger(__name__)


class BatchLoader(Protocol):
    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...
    def __len__(self) -> int: ...
    def set_epoch(self, epoch: int) -> None: ...


SYNC_EVERY = 20  # training steps between reads of the running loss/accuracy from the device


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is left as it was."""


@dataclass
class FitResult:
    model: nn.Module  # the weights to use: the EMA average when ``ema_decay`` > 0
    history: list[dict[str, Any]] = field(default_factory=list)
    final_metrics: ClassificationMetrics | None = None
    out_dir: Path = Path(".")


def amp_dtype_for(amp: str, device: torch.device) -> torch.dtype | None:
    amp = resolve_amp(amp, device)
    if amp == "none":
        return None
    if amp == "bf16":
        return torch.bfloat16
    if amp == "fp16":
        if device.type != "cuda":
            raise ValueError("amp='fp16' needs a CUDA device; use amp='bf16' on CPU")
        return torch.float16
    raise ValueError(f"amp={amp!r} is not one of {AMP_MODES}")


def param_groups(model: nn.Module, weight_decay: float, decay_norm_and_bias: bool, *, lr: float = 0.0,
                 lr_mult: float = 1.0) -> list[dict[str, Any]]:
    """Two groups when BN parameters and biases (all 1-d tensors) are spared weight decay; with
    ``lr_mult`` > 1, groups per layer group with discriminative learning rates (train/groups.py)."""
    if lr_mult != 1.0:
        return discriminative_param_groups(model, lr=lr, lr_mult=lr_mult, weight_decay=weight_decay,
                                           decay_norm_and_bias=decay_norm_and_bias)
    params = [p for p in model.parameters() if p.requires_grad]
    if decay_norm_and_bias:
        return [{"params": params, "weight_decay": weight_decay}]
    return [{"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]


def mix_transform(config: TrainConfig, num_classes: int):
    """Batch-level MixUp / CutMix from torchvision (soft targets), or None."""
    from torchvision.transforms import v2

    choices = []
    if config.augment.mixup_alpha > 0:
        choices.append(v2.MixUp(alpha=config.augment.mixup_alpha, num_classes=num_classes))
    if config.augment.cutmix_alpha > 0:
        choices.append(v2.CutMix(alpha=config.augment.cutmix_alpha, num_classes=num_classes))
    if not choices:
        return None
    return choices[0] if len(choices) == 1 else v2.RandomChoice(choices)


GLOBAL_RNG_STREAM = 2  # the last part of the global RNG's derive_seed, apart from the loaders' (crops: 1)


def begin_epoch(loader: BatchLoader, *, seed: int, epoch: int, rank: int) -> None:
    """Set up one epoch's randomness for one rank: the loader's crops and order (``set_epoch``), then the global RNG,
    which draws dropout, stochastic depth, MixUp/CutMix and the automatic augmentation policies, so DDP ranks draw
    differently and a resumed epoch draws as the uninterrupted one."""
    loader.set_epoch(epoch)
    torch.manual_seed(derive_seed(seed, epoch, rank, GLOBAL_RNG_STREAM))


class Trainer:
    def __init__(self, model: nn.Module, config: TrainConfig, train_loader: BatchLoader,
                 val_loader: Iterable[tuple[torch.Tensor, torch.Tensor]] | None, *, num_classes: int,
                 device: torch.device, dist: DistInfo | None = None, class_names: list[str] | None = None,
                 teacher: nn.Module | None = None) -> None:
        self.config = config
        self.device = device
        self.dist = dist or DistInfo()
        self.num_classes = num_classes
        self.class_names = class_names
        self.train_loader, self.val_loader = train_loader, val_loader
        self.out_dir = Path(config.run.out_dir)
        # "auto" made concrete (what the report records); rank 0's choice, so every process trains alike.
        self.precision = self.dist.broadcast(resolve_amp(config.run.amp, device))
        self.amp_dtype = amp_dtype_for(self.precision, device)

        model = model.to(device)
        if config.run.grad_checkpointing:
            if not hasattr(model, "set_grad_checkpointing"):
                raise ValueError(f"grad_checkpointing: {type(model).__name__} is not a resnetkit ResNet; drop "
                                 "--grad-checkpointing")
            model.set_grad_checkpointing(True)
        if config.run.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if config.run.sync_bn and device.type != "cuda":
            raise ValueError("sync_bn needs CUDA devices (PyTorch's SyncBatchNorm is GPU-only); drop --sync-bn on CPU")
        if self.dist.enabled and config.run.sync_bn:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model = model  # the bare module: saved, evaluated, averaged
        self.teacher = None  # knowledge distillation: frozen, in eval mode, on the same device and layout
        if teacher is not None:  # (alpha and temperature are checked by OptimConfig)
            self.teacher = teacher.to(device).eval().requires_grad_(False)
            if config.run.channels_last:
                self.teacher = self.teacher.to(memory_format=torch.channels_last)
        self.train_model: nn.Module = self.dist.wrap(model, device)
        self.ddp = self.train_model if isinstance(self.train_model, nn.parallel.DistributedDataParallel) else None
        if config.run.compile:
            self.train_model = torch.compile(self.train_model)

        optim, sched = config.optim, config.schedule
        if len(train_loader) < optim.accumulate:
            raise ValueError(f"the training data gives {len(train_loader)} batch(es) of {optim.batch_size} per epoch, "
                             f"fewer than accumulate={optim.accumulate}: use a smaller --batch-size or more images")
        self.steps_per_epoch = len(train_loader) // optim.accumulate
        if sched.iterations > 0:
            self.total_steps = sched.iterations
            self.epochs = math.ceil(sched.iterations / self.steps_per_epoch)
        else:
            self.total_steps = sched.epochs * self.steps_per_epoch
            self.epochs = sched.epochs
        self.optimizer = optimizer_from_config(param_groups(model, optim.weight_decay, optim.decay_norm_and_bias,
                                                            lr=optim.lr, lr_mult=config.finetune.lr_mult), config)
        spec = schedule_from_config(kind=sched.name, milestones=tuple(sched.milestones), gamma=sched.gamma,
                                    warmup=sched.warmup, warmup_lr=sched.warmup_lr, base_lr=optim.lr,
                                    total_steps=self.total_steps,
                                    steps_per_unit=1 if sched.iterations > 0 else self.steps_per_epoch,
                                    decay_steps=sched.decay_steps, decay_rate=sched.decay_rate,
                                    staircase=sched.staircase, gammas=sched.milestone_gammas)
        if config.schedule.name == "plateau" and (val_loader is None or not config.run.eval_every):
            raise ValueError("schedule='plateau' lowers the lr when the validation top-1 stalls: it needs a validation "
                             "set (--val-split N, or a test/ or val/ split) and --eval-every >= 1")
        self.lr_drops = 0  # "plateau": times the lr was multiplied by gamma so far (from the history)
        self.scheduler = build_scheduler(self.optimizer, spec, drops=lambda: self.lr_drops)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp_dtype == torch.float16)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=config.optim.label_smoothing)
        # Keras' kernel_regularizer=l2(x) on the head: x * sum(w ** 2) added to the loss (weights, not biases).
        self.head_weights = [p for name, p in model.named_parameters() if p.ndim > 1 and p.requires_grad
                             and name.startswith(HEAD_PREFIXES)] if config.optim.head_l2 > 0 else []
        self.mix = mix_transform(config, num_classes)
        self.ema = (AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.optim.ema_decay), use_buffers=True)
                    if config.optim.ema_decay > 0 else None)
        self.step = 0
        self.start_epoch = 0
        # Called after every optimizer step with its lr and loss (the lr range test records them; it may raise to
        # end the run).
        self.step_callback: Callable[[float, torch.Tensor], None] | None = None
        self.history: list[dict[str, Any]] = []
        self.logger = MetricsLogger(self.out_dir, enabled=self.dist.is_main)

    # -- checkpoints -------------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / CHECKPOINT_NAME

    def state_dict(self, epoch: int) -> dict[str, Any]:
        return {
            "epoch": epoch, "step": self.step, "config": self.config.to_dict(), "history": self.history,
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else {}, "rng": rng_state(),
        }

    def resume(self) -> bool:
        """Load the last checkpoint in ``out_dir``, if any; True when the run continues from it."""
        if not self.checkpoint_path.exists():
            return False
        state = load_training_checkpoint(self.checkpoint_path)
        self._check_resumable(state["config"])
        broken = [k for k, v in state["model"].items() if isinstance(v, torch.Tensor) and v.is_floating_point()
                  and not bool(torch.isfinite(v).all())] if isinstance(state["model"], dict) else []
        if broken:  # a model file written from it would be refused by every command that loads it
            raise checkpoint_error(self.checkpoint_path, f"holds NaN or infinite weights ({len(broken)} tensor(s), "
                                   f"e.g. {broken[0]}): the run diverged (try a lower --lr) or the file was damaged")
        try:  # the file passed torch's safe loader; its parts must still fit this run's model and optimizer
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            if state["scaler"]:  # empty when the run that wrote it did not use fp16
                self.scaler.load_state_dict(state["scaler"])
            if self.ema is not None and state["ema"]:
                self.ema.load_state_dict(state["ema"])
            set_rng_state(state["rng"])
        except (KeyError, ValueError, TypeError, RuntimeError, IndexError, AttributeError) as e:
            lines = str(e).splitlines()
            head = [line.strip() for line in lines if "size mismatch for" in line and ".fc." in f".{line.split()[3]}"]
            if head:  # torch: "size mismatch for fc.weight: copying a param with shape torch.Size([2, 64]) ..."
                raise ValueError(
                    f"{self.checkpoint_path}: the run's classifier does not fit this run's data ({head[0]}): the "
                    "data's classes changed since the run started (a class folder added or removed, another "
                    "--classes); resume with the data it started with, or start a new run in another --out-dir"
                ) from e
            detail = next((line.strip() for line in lines if "size mismatch for" in line), lines[0] if lines else "")
            raise checkpoint_error(self.checkpoint_path, f"does not fit this run ({type(e).__name__}: "
                                   f"{detail or 'no detail'}); it is damaged or another run's") from e
        self.step, self.start_epoch, self.history = state["step"], state["epoch"] + 1, list(state["history"])
        check_not_shorter(self.config, epochs_done=self.start_epoch, steps_done=self.step, path=self.checkpoint_path)
        done = self.step >= self.total_steps or self.start_epoch >= self.epochs
        if self.config.schedule.iterations > 0 and not done:  # a run stopped inside an epoch resumes at the next one
            self.epochs = self.start_epoch + math.ceil((self.total_steps - self.step) / self.steps_per_epoch)
        self.logger.rewrite(self.history)
        # The optimizer holds the lr of the old schedule's last step; a run resumed with another length takes the
        # stretched schedule's from its first step (the same value when the length is unchanged).
        self._set_lr()
        self._update_plateau()
        return True

    @property
    def nominal_lr(self) -> float:
        """The lr the run is given (the head's): with discriminative lrs the first group is the stem's, lr / lr_mult."""
        return max(group["lr"] for group in self.optimizer.param_groups)

    def _set_lr(self) -> None:
        for group, base, fn in zip(self.optimizer.param_groups, self.scheduler.base_lrs, self.scheduler.lr_lambdas):
            group["lr"] = base * fn(self.scheduler.last_epoch)

    def _update_plateau(self) -> None:
        """Recount the "plateau" lr drops from the validation history (rank 0 evaluates; every rank follows)."""
        if self.config.schedule.name != "plateau":
            return
        seen = [row["val_top1"] for row in self.history if "val_top1" in row]
        drops = self.dist.broadcast(plateau_drops(seen, patience=self.config.schedule.patience))
        if drops != self.lr_drops:  # from the next step on, not one step late
            self.lr_drops = drops
            self._set_lr()

    def _check_resumable(self, saved: dict[str, Any]) -> None:
        for key, (was, now) in check_resumable(self.config, saved, path=self.checkpoint_path).items():
            log.warning("resuming with %s=%s (was %s): the learning-rate schedule is stretched to the new length",
                        key, now, was)

    # -- one epoch ---------------------------------------------------------------------------------
    def train_one_epoch(self, epoch: int) -> dict[str, Any]:
        cfg = self.config
        self.train_model.train()
        if cfg.finetune.freeze_bn:
            for module in self.model.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        begin_epoch(self.train_loader, seed=cfg.run.seed, epoch=epoch, rank=self.dist.rank)
        # Running sums stay on the device and are read every SYNC_EVERY steps: reading them each step
        # would make a GPU wait for the host after every batch (on a CPU it changes nothing).
        seen, first_step, started = 0, self.step, time.perf_counter()
        sums = torch.zeros(3, device=self.device, dtype=torch.float64)  # loss sum, correct, non-finite count
        bar = progress(self.train_loader, desc=f"epoch {epoch + 1}/{self.epochs}",
                       enabled=cfg.run.progress and self.dist.is_main)
        self.optimizer.zero_grad(set_to_none=True)
        step_loss = torch.zeros((), device=self.device)  # the micro-batches' mean loss, for step_callback
        for i, (images, labels) in enumerate(bar):
            if self.step >= self.total_steps:
                break
            images = images.to(self.device, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True)
            if cfg.run.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            targets = labels
            if self.mix is not None:
                images, targets = self.mix(images, labels)
            steps_now = (i + 1) % cfg.optim.accumulate == 0
            # Under DDP, a micro-batch that does not end an accumulation keeps its gradient local (no all-reduce).
            with contextlib.nullcontext() if steps_now or self.ddp is None else self.ddp.no_sync():
                with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                                    enabled=self.amp_dtype is not None):
                    logits = self.train_model(images)
                    loss = self.criterion(logits, targets)
                    if self.teacher is not None:
                        with torch.no_grad():
                            teacher_logits = self.teacher(images)
                        loss = distillation_loss(loss, logits, teacher_logits, alpha=cfg.optim.distill_alpha,
                                                 temperature=cfg.optim.distill_temperature)
                    if self.head_weights:
                        loss = loss + self.config.optim.head_l2 * sum(w.float().pow(2).sum() for w in self.head_weights)
                self.scaler.scale(loss / cfg.optim.accumulate).backward()
            if self.step_callback is not None:
                step_loss += loss.detach().float() / cfg.optim.accumulate
            if steps_now:
                lr = self.nominal_lr
                self._optimizer_step()
                if self.step_callback is not None:
                    self.step_callback(lr, step_loss)
                    step_loss = torch.zeros((), device=self.device)
            seen += labels.numel()
            sums += torch.stack([loss.detach().double() * labels.numel(), (logits.argmax(1) == labels).sum().double(),
                                 (~torch.isfinite(loss.detach())).double()])
            if (i + 1) % SYNC_EVERY == 0:
                self._read_sums(sums, bar, seen, started, epoch, first_step)
        loss_sum, correct = self._read_sums(sums, bar, seen, started, epoch, first_step)
        # The epoch's figures over every rank's images, as one process would report them (not rank 0's shard).
        loss_sum, correct, seen_all = self.dist.sum([loss_sum, correct, float(seen)])
        if not seen_all:  # every image unreadable (the loader skips them): an untrained model must not be written
            raise ValueError(f"epoch {epoch + 1} trained on no images: every training image was unreadable (see the "
                             "warnings naming them) or there are fewer than one batch; check the data")
        elapsed = time.perf_counter() - started
        return {"train_loss": loss_sum / max(1.0, seen_all), "train_acc": correct / max(1.0, seen_all),
                "images_per_s": seen_all / max(elapsed, 1e-9), "epoch_time_s": elapsed}

    def _read_sums(self, sums: torch.Tensor, bar: Any, seen: int, started: float, epoch: int,
                   first_step: int) -> tuple[float, float]:
        """Copy the running sums to the host, stop on a non-finite loss, refresh the progress bar."""
        loss_sum, correct, bad = sums.tolist()
        bad = self.dist.any(bad > 0)  # all ranks stop together: one rank alone would leave the others waiting
        if bad:
            raise NonFiniteLossError(
                f"the loss became NaN or infinite in epoch {epoch + 1} (between iterations {first_step} and "
                f"{self.step}); {self._what_is_kept()}. Start a new run (another --out-dir) with a lower --lr or with "
                "--grad-clip, or check the data")
        if hasattr(bar, "set_postfix") and seen:
            elapsed = time.perf_counter() - started
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}",
                            lr=f"{self.nominal_lr:.4f}",
                            img_s=f"{seen * self.dist.world_size / max(elapsed, 1e-9):.0f}", refresh=False)
        return loss_sum, correct

    def _what_is_kept(self) -> str:
        """For a run that stops on a NaN: whether an earlier, good checkpoint is there to start again from."""
        return (f"the last good checkpoint ({self.checkpoint_path}) is intact" if self.checkpoint_path.exists()
                else "no checkpoint had been written yet")

    def _check_finite_validation(self, diverged: bool, epoch: int) -> None:
        """The weights diverged in the epoch's last steps (its training loss was still finite): stop as a training
        NaN does, before this epoch's checkpoint, model or report is written (JSON has no NaN)."""
        if diverged:
            raise NonFiniteLossError(f"the validation loss is NaN or infinite after epoch {epoch + 1}: the weights "
                                     f"diverged; {self._what_is_kept()}. Start a new run (another --out-dir) with a lower --lr or "
                                     "with --grad-clip")

    def _optimizer_step(self) -> None:
        if self.config.optim.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.optim.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.step += 1
        if self.ema is not None:
            self.ema.update_parameters(self.model)

    @property
    def eval_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model

    def evaluate(self, *, flip: bool = False) -> ClassificationMetrics | None:
        if self.val_loader is None:
            return None
        return evaluate_batches(self.eval_model, self.val_loader, num_classes=self.num_classes, device=self.device,
                                amp_dtype=self.amp_dtype, channels_last=self.config.run.channels_last, flip=flip)

    # -- the run -----------------------------------------------------------------------------------
    def fit(self) -> FitResult:
        cfg = self.config
        if not (cfg.run.resume and self.resume()):
            self.logger.rewrite([])  # a fresh run starts fresh logs, never appends to an older run's
        metrics = None
        for epoch in range(self.start_epoch, self.epochs):
            lr = self.nominal_lr
            row: dict[str, Any] = {"epoch": epoch + 1, "step": self.step, "lr": lr, **self.train_one_epoch(epoch)}
            last = epoch == self.epochs - 1 or self.step >= self.total_steps
            if self.dist.is_main and (last or (cfg.run.eval_every and (epoch + 1) % cfg.run.eval_every == 0)):
                metrics = self.evaluate()
                if metrics is not None:
                    row.update(val_loss=metrics.loss, val_top1=metrics.top1, val_top5=metrics.top5)
            # every rank asks (rank 0 evaluates), so that all stop together
            self._check_finite_validation(self.dist.any(metrics is not None and not math.isfinite(metrics.loss)),
                                          epoch)
            self.history.append(row)
            self._update_plateau()
            if self.dist.is_main:
                self.logger.log(row)
                save_checkpoint(self.state_dict(epoch), self.checkpoint_path)
            self.dist.barrier()
            if self.step >= self.total_steps:
                break
        self.logger.close()
        if metrics is None and self.dist.is_main:
            metrics = self.evaluate()
        return FitResult(model=self.eval_model, history=self.history, final_metrics=metrics, out_dir=self.out_dir)
