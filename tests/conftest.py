from __future__ import annotations

from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CIFAR_JPEG_TAR = SHARED / "datasets" / "cifar10-train-jpeg.tar"


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


@pytest.fixture
def cifar_jpeg_tar() -> Path:
    if not CIFAR_JPEG_TAR.exists():
        pytest.skip(f"{CIFAR_JPEG_TAR} is not present")
    return CIFAR_JPEG_TAR
