"""Keras Applications ResNets load into resnetkit with identical logits: Keras itself is the reference.

Keras 3 runs on the PyTorch backend, so the test builds ``keras.applications.ResNet50`` (random weights,
made non-trivial: biases, BN statistics and scales all random so the bias folding and epsilon are tested),
saves it both ways, loads the files into resnetkit and compares logits on the same images, each side with
its own preprocessing (Keras' ``preprocess_input`` on 0..255 RGB, ours from the model file's ``Preprocess``).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")
pytest.importorskip("h5py")
if keras.backend.backend() != "torch":
    pytest.skip("these tests run Keras on its PyTorch backend (KERAS_BACKEND=torch)", allow_module_level=True)

from resnetkit import load_model, save_model  # noqa: E402
from resnetkit.models.keras import load_keras_model  # noqa: E402
from resnetkit.models.sources import open_model  # noqa: E402
from resnetkit.models.state_dict import WeightFileError  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Keras on NumPy 2
SIZE = 64  # these networks run at any size >= 32; small keeps the test fast


def _randomise(model, seed: int = 0, *, offset_std: float = 0.1) -> None:
    """Random biases and BatchNorm parameters and statistics, so a wrong mapping or epsilon cannot pass."""
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        shape, name = tuple(weight.shape), weight.path
        if name.endswith(("moving_variance", "gamma")):
            value = rng.uniform(0.5, 1.5, shape)
        elif name.endswith(("bias", "beta", "moving_mean")):
            value = rng.normal(0.0, offset_std, shape)
        else:
            continue  # kernels keep Keras' own initialisation (random, scaled)
        weight.assign(value.astype("float32"))


def _keras_logits(model, module, images: torch.Tensor) -> np.ndarray:
    batch = module.preprocess_input(images.permute(0, 2, 3, 1).numpy() * 255.0)
    return np.asarray(model(batch).detach().cpu())


def _our_logits(path, images: torch.Tensor, **kwargs) -> np.ndarray:
    net, info = load_keras_model(path, **kwargs)
    mean = torch.tensor(info.preprocess.mean).view(1, 3, 1, 1)
    std = torch.tensor(info.preprocess.std).view(1, 3, 1, 1)
    with torch.no_grad():
        return net((images - mean) / std).numpy()


def _check(keras_model, module, paths, *, arch: str) -> None:
    images = torch.rand(2, 3, SIZE, SIZE)
    expected = _keras_logits(keras_model, module, images)
    for path in paths:
        got = _our_logits(path, images)
        assert got.shape == expected.shape == (2, 1000)
        scale = max(1.0, float(np.abs(expected).max()))
        assert np.abs(got - expected).max() <= 1e-4 * scale, path
        assert load_keras_model(path)[0].config.arch == arch


@pytest.fixture(scope="module")
def resnet50_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keras")
    model = keras.applications.ResNet50(weights=None, input_shape=(SIZE, SIZE, 3), classifier_activation=None)
    _randomise(model)
    model.save_weights(folder / "r50.weights.h5")
    model.save(folder / "r50.h5")
    model.save(folder / "r50.keras")  # the Keras 3 archive: model.weights.h5 inside a zip
    return model, folder


def test_keras_resnet50_weights_give_keras_logits(resnet50_files):
    from keras.applications import resnet

    model, folder = resnet50_files
    _check(model, resnet, [folder / "r50.weights.h5", folder / "r50.h5", folder / "r50.keras"], arch="resnet50")


def test_keras_resnet50v2_weights_give_keras_logits(tmp_path):
    from keras.applications import resnet_v2

    model = keras.applications.ResNet50V2(weights=None, input_shape=(SIZE, SIZE, 3), classifier_activation=None)
    _randomise(model, seed=1)
    model.save_weights(tmp_path / "r50v2.weights.h5")
    _check(model, resnet_v2, [tmp_path / "r50v2.weights.h5"], arch="keras_resnet50v2")


def test_keras_model_file_keeps_the_keras_preprocessing(resnet50_files, tmp_path):
    _, folder = resnet50_files
    net, info = open_model(str(folder / "r50.weights.h5"))
    assert info.preprocess.std == pytest.approx((1 / 255,) * 3)  # caffe: x*255 - mean, in our 0..1 convention
    assert info.preprocess.mean == pytest.approx((123.68 / 255, 116.779 / 255, 103.939 / 255))
    saved = save_model(net, tmp_path / "keras50.safetensors", info=info)
    again, again_info = load_model(saved)
    assert again_info.preprocess == info.preprocess
    x = torch.rand(1, 3, SIZE, SIZE)
    with torch.no_grad():
        assert torch.equal(again(x), net(x))
    # By architecture name too (ARCH --weights FILE), which must agree with the file.
    assert open_model("resnet50", weights=str(folder / "r50.h5"))[0].config.variant == "v1"
    with pytest.raises(WeightFileError, match="not keras_resnet50v2"):
        open_model("keras_resnet50v2", weights=str(folder / "r50.h5"))


def test_keras_headless_file_gives_a_network_without_classifier(tmp_path):
    from keras.applications import resnet_v2

    model = keras.applications.ResNet50V2(weights=None, include_top=False, input_shape=(SIZE, SIZE, 3))
    _randomise(model, seed=2)
    model.save_weights(tmp_path / "notop.weights.h5")
    net, info = load_keras_model(tmp_path / "notop.weights.h5")
    assert net.num_classes == 0
    images = torch.rand(2, 3, SIZE, SIZE)
    expected = _keras_logits(model, resnet_v2, images)  # the NHWC feature map, each side with its preprocessing
    assert expected.shape == (2, SIZE // 32, SIZE // 32, 2048)
    assert np.abs(expected).max() > 0.1  # a real signal: a wrong mapping cannot match it by chance
    mean = torch.tensor(info.preprocess.mean).view(1, 3, 1, 1)
    std = torch.tensor(info.preprocess.std).view(1, 3, 1, 1)
    with torch.no_grad():
        got = net.forward_features((images - mean) / std).permute(0, 2, 3, 1).numpy()
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= 1e-4 * max(1.0, float(np.abs(expected).max()))


def test_bad_keras_files_get_one_line_errors(tmp_path, resnet50_files):
    _, folder = resnet50_files
    truncated = tmp_path / "cut.weights.h5"
    truncated.write_bytes((folder / "r50.weights.h5").read_bytes()[:5000])
    with pytest.raises(WeightFileError, match="not a readable Keras weight file"):
        load_keras_model(truncated)
    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="predictions")])
    other.save_weights(tmp_path / "dense.weights.h5")
    with pytest.raises(WeightFileError, match="not a Keras Applications ResNet"):
        load_keras_model(tmp_path / "dense.weights.h5")
    # A crafted file: the right layer names, one array of the wrong shape. Refused before anything is read.
    import h5py

    crafted = tmp_path / "crafted.h5"
    with h5py.File(folder / "r50.h5") as src, h5py.File(crafted, "w") as dst:
        src.copy(src["model_weights"], dst, "model_weights")
        del dst["model_weights/conv1_conv/conv1_conv/kernel"]
        dst["model_weights/conv1_conv/conv1_conv/kernel"] = np.zeros((3, 3, 3, 64), "float32")
    with pytest.raises(WeightFileError, match=r"conv1_conv.*\(3, 3, 3, 64\)"):
        load_keras_model(crafted)
    # A head declared for a million classes (8 GB) but never written: refused before the network is allocated.
    bomb = tmp_path / "bomb.h5"
    with h5py.File(folder / "r50.h5") as src, h5py.File(bomb, "w") as dst:
        src.copy(src["model_weights"], dst, "model_weights")
        head = dst["model_weights/predictions/predictions"]
        del head["kernel"], head["bias"]
        head.create_dataset("kernel", shape=(2048, 1_000_000), dtype="float32")
        head.create_dataset("bias", shape=(1_000_000,), dtype="float32")
    assert bomb.stat().st_size < 200_000_000
    with pytest.raises(WeightFileError, match=r"bomb.h5: layer 'predictions' declares 8,192,000,000 bytes of weights"):
        load_keras_model(bomb)
    empty = tmp_path / "empty.h5"
    h5py.File(empty, "w").close()
    with pytest.raises(WeightFileError, match="empty.h5: no Keras layer list"):
        load_keras_model(empty)


@pytest.mark.slow
@pytest.mark.parametrize("name, arch", [("ResNet101", "resnet101"), ("ResNet152", "resnet152"),
                                        ("ResNet101V2", "keras_resnet101v2"), ("ResNet152V2", "keras_resnet152v2")])
def test_deeper_keras_resnets_give_keras_logits(tmp_path, name, arch):
    from keras.applications import resnet, resnet_v2

    model = getattr(keras.applications, name)(weights=None, input_shape=(SIZE, SIZE, 3), classifier_activation=None)
    _randomise(model)
    model.save_weights(tmp_path / "w.weights.h5")
    _check(model, resnet_v2 if name.endswith("V2") else resnet, [tmp_path / "w.weights.h5"], arch=arch)
