"""`amp: auto`: bf16 where it is faster, measured on the machine, since bf16 autocast can be many times slower
than fp32 on a CPU (13x for ResNet-20's step on an AVX2 AMD EPYC)."""

from __future__ import annotations

import pytest
import torch

from resnetkit import device as device_module
from resnetkit.config import TrainConfig, load_train_config
from resnetkit.device import cpu_bf16_is_faster, resolve_amp
from resnetkit.train.loop import amp_dtype_for

CPU = torch.device("cpu")


@pytest.fixture
def probe(monkeypatch):
    """Replace the measured residual block step with given times: {bf16: seconds}."""
    times: dict[bool, float] = {}
    monkeypatch.setattr(device_module, "_block_step_seconds", lambda bf16, steps=2: times[bf16])
    cpu_bf16_is_faster.cache_clear()
    yield times
    cpu_bf16_is_faster.cache_clear()


@pytest.mark.parametrize("fp32_s, bf16_s, expected", [(0.010, 0.130, "none"),  # AVX2: bf16 13x slower
                                                      (0.010, 0.020, "none"),  # avx512_bf16 Xeon: 2x slower
                                                      (0.010, 0.0095, "none"),  # within the margin: fp32
                                                      (0.010, 0.005, "bf16")])  # bf16 clearly faster
def test_auto_on_a_cpu_takes_the_measured_faster_precision(probe, fp32_s, bf16_s, expected):
    probe.update({False: fp32_s, True: bf16_s})
    assert resolve_amp("auto", CPU) == expected
    assert amp_dtype_for("auto", CPU) == (torch.bfloat16 if expected == "bf16" else None)


def test_named_precisions_are_kept_as_given(probe):
    probe.update({False: 0.01, True: 1.0})  # bf16 slow, but asked for: given
    assert [resolve_amp(a, CPU) for a in ("bf16", "none", "fp16")] == ["bf16", "none", "fp16"]


def test_the_probe_runs_once_per_process_and_really_measures():
    cpu_bf16_is_faster.cache_clear()
    torch.manual_seed(0)
    before = torch.get_rng_state()
    first = cpu_bf16_is_faster()
    # Only a process's first run measures: its random layers must leave the global RNG (augmentation, stochastic
    # depth) where it was, or that run draws other numbers than a second or a resumed one.
    assert torch.equal(torch.get_rng_state(), before)
    assert cpu_bf16_is_faster() is first and cpu_bf16_is_faster.cache_info().hits >= 1
    assert 0 < device_module._block_step_seconds(False, steps=1) < 10


def test_recipes_that_used_bf16_now_say_auto_and_the_default_is_auto():
    for recipe in ("demo", "cifar10-fast", "finetune", "keras-cifar10"):
        assert load_train_config(recipe).run.amp == "auto", recipe
    assert TrainConfig().run.amp == "auto"
    assert load_train_config("cifar10-paper").run.amp == "none"  # the paper trained in fp32
