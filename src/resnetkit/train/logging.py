"""Per-epoch metrics to CSV, JSONL and (when installed) TensorBoard; a tqdm progress bar."""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def progress(iterable: Iterable, *, desc: str, enabled: bool) -> Iterable:
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, leave=False, dynamic_ncols=True)


class MetricsLogger:
    """Appends one row per epoch; ``rewrite`` restores the files from a checkpoint's history on resume."""

    def __init__(self, out_dir: Path, *, enabled: bool = True) -> None:
        self.out_dir, self.enabled = out_dir, enabled
        self.csv_path, self.jsonl_path = out_dir / "metrics.csv", out_dir / "metrics.jsonl"
        self._tb = None
        if enabled:
            out_dir.mkdir(parents=True, exist_ok=True)
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional: say so once, CSV and JSONL are written regardless
                log.warning("TensorBoard logs are not written: the tensorboard package is not installed "
                            "(pip install tensorboard, or resnetkit[tensorboard]); metrics.csv and metrics.jsonl "
                            "are written as usual")
            else:
                self._tb = SummaryWriter(str(out_dir / "tensorboard"))

    def rewrite(self, history: list[dict[str, Any]]) -> None:
        if not self.enabled:
            return
        for path in (self.csv_path, self.jsonl_path):
            path.unlink(missing_ok=True)
        for row in history:
            self._append(row)

    def log(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self._append(row)
        if self._tb is not None:
            for key, value in row.items():
                if key not in ("epoch", "step") and isinstance(value, (int, float)):
                    self._tb.add_scalar(key, value, row["epoch"])
            self._tb.flush()

    def _append(self, row: dict[str, Any]) -> None:
        with self.jsonl_path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        rows = [json.loads(line) for line in self.jsonl_path.read_text().splitlines()]
        columns = list(dict.fromkeys(k for r in rows for k in r))  # later epochs may add val columns
        with self.csv_path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
