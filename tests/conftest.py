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


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors gain nothing from threads, and on a busy shared CPU two threads run many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def resnet20_file(tmp_path) -> Path:
    """A randomly initialised CIFAR ResNet-20 model file with ten named classes."""
    from resnetkit import create_model, save_model

    path = tmp_path / "resnet20.safetensors"
    save_model(create_model("resnet20").eval(), path, class_names=[f"class{i}" for i in range(10)])
    return path
