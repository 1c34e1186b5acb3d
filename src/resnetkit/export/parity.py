"""The numerical check every export runs: the artifact against eager PyTorch on the same inputs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .runtimes import Runner


class ParityError(RuntimeError):
    """An exported or quantized model whose outputs disagree with eager PyTorch beyond the tolerance."""


@dataclass(frozen=True)
class ParityReport:
    """How closely ``candidate`` reproduces eager PyTorch on ``samples`` inputs, per batch size tried."""

    candidate: str
    samples: int
    batch_sizes: tuple[int, ...]
    max_abs_diff: float
    max_abs_logit: float
    top1_agreement: float

    @property
    def relative_diff(self) -> float:
        return self.max_abs_diff / max(1.0, self.max_abs_logit)

    def summary(self) -> str:
        return (f"parity {self.candidate} vs eager PyTorch on {self.samples} inputs (batches "
                f"{', '.join(map(str, self.batch_sizes))}): max |diff| {self.max_abs_diff:.3g} "
                f"(logits up to {self.max_abs_logit:.3g}), top-1 agreement {self.top1_agreement:.1%}")


def check_parity(model: nn.Module, candidate: Runner, inputs: torch.Tensor, *, batch_sizes: tuple[int, ...] = (1, 7),
                 rtol: float = 1e-4, min_top1_agreement: float = 1.0) -> ParityReport:
    """Run ``inputs`` through both in chunks of each batch size; raise ``ParityError`` if they disagree.

    The default tolerances suit fp32 artifacts (the diff is relative to the largest logit, so it does
    not depend on the logit scale); quantized models pass looser ones. Batches 1 and 7 are the
    defaults because an accidentally fixed batch dimension is the classic ONNX export failure.
    """
    model = model.eval()
    inputs = inputs.float()
    with torch.no_grad():
        reference = model(inputs).numpy()
    diffs, agree = [], []
    for batch in batch_sizes:
        outputs = []
        for start in range(0, len(inputs), batch):
            chunk = inputs[start:start + batch]
            try:
                out = candidate(chunk)
            except Exception as e:  # a runtime that rejects a batch size raises its own exception type
                raise ParityError(f"{candidate.name}: running a batch of {len(chunk)} failed ({type(e).__name__}: "
                                  f"{str(e)[:300]}); is the batch dimension fixed in the export?") from e
            if out.shape != (len(chunk), *reference.shape[1:]):
                raise ParityError(f"{candidate.name}: batch of {len(chunk)} gave output shape {out.shape}, "
                                  f"expected {(len(chunk), *reference.shape[1:])}")
            outputs.append(out)
        got = np.concatenate(outputs)
        diffs.append(float(np.abs(got.astype(np.float64) - reference).max()))
        agree.append(float((got.argmax(1) == reference.argmax(1)).mean()))
    used = tuple(dict.fromkeys(min(batch, len(inputs)) for batch in batch_sizes))  # 3 inputs: batches 1 and 3
    report = ParityReport(candidate.name, len(inputs), used, max(diffs),
                          float(np.abs(reference).max()), min(agree))
    if report.relative_diff > rtol or report.top1_agreement < min_top1_agreement:
        raise ParityError(f"{report.summary()}; allowed: relative diff <= {rtol:g}, top-1 agreement >= "
                          f"{min_top1_agreement:.0%}. The artifact does not compute what the model computes: "
                          "do not ship it; report the model file and format as a bug")
    return report
