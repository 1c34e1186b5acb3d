"""How far each study run folder is, for study/carry.sh and study/resume.sh: ``inf`` when finished (its analysis.json
exists), else the epoch of its checkpoint (counted from 0), else -1 (nothing resumable). Usage:
    python study/progress.py RUN_DIR...      one number per line
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch


def progress(run: Path) -> float:
    if (run / "analysis.json").exists():
        return float("inf")
    if (run / "checkpoint.pt").exists():
        return torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True, mmap=True)["epoch"]
    return -1


if __name__ == "__main__":
    for folder in sys.argv[1:]:
        print(progress(Path(folder)))
